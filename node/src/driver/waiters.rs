//! The rules for who waits for what, and how waiters fail (the waiters themselves are plain types
//! in `pending`).
//!
//! A write's reply waits under the entry's (index, term). When the entry at that index is
//! applied with another term, the write was lost (UNAVAILABLE; the client retries with the same
//! seq). When this node stops being leader, every write and read waiter fails the same way
//! ([`Failure::LeadershipLost`]), since its entry may never commit; a leader transfer keeps
//! waiting, as its target leading is what it waits for. When the loop stops, everyone fails
//! ([`Failure::Stopping`]). [`Driver::fail_all`] is the one place that fails waiters in bulk.

use std::time::Instant;

use raftkv_raft::{Error as RaftError, NodeId};
use tokio::sync::oneshot;

use super::pending::{Failure, TransferWait, Waiter, reply_err};
use super::state::Driver;
use crate::entry::EntryKind;
use crate::error::NodeError;

impl Driver {
    pub(super) fn propose(&mut self, kind: EntryKind, waiter: Waiter) {
        if self.proposals.len() >= self.cfg.max_pending {
            reply_err(
                waiter,
                NodeError::Overloaded("too many writes in flight".into()),
            );
            return;
        }
        match self.raw.propose(kind.encode()) {
            Ok(index) => {
                let term = self.raw.term();
                if matches!(waiter, Waiter::Write(_)) {
                    self.proposed_at.insert(index, Instant::now());
                }
                self.proposals.insert(index, (term, waiter));
            }
            Err(e) => {
                let err = self.raft_error(e);
                reply_err(waiter, err);
            }
        }
    }

    /// Fails the waiters that `why` ends; the only place that fails waiters in bulk.
    pub(super) fn fail_all(&mut self, why: Failure) {
        let (write_err, read_err) = match why {
            Failure::LeadershipLost => (
                NodeError::Unavailable(
                    "leadership lost before the write committed; retry with the same seq".into(),
                ),
                self.leader_error(),
            ),
            Failure::Stopping => (NodeError::Stopped, NodeError::Stopped),
        };
        self.proposed_at.clear();
        for (_, (_, w)) in std::mem::take(&mut self.proposals) {
            reply_err(w, write_err.clone());
        }
        for (_, read) in std::mem::take(&mut self.reads_by_ctx) {
            let _ = read.reply.send(Err(read_err.clone()));
        }
        for (_, read) in std::mem::take(&mut self.reads_waiting_apply) {
            let _ = read.reply.send(Err(read_err.clone()));
        }
        if why == Failure::Stopping {
            for t in std::mem::take(&mut self.transfers) {
                let _ = t.reply.send(Err(NodeError::Stopped));
            }
        }
    }

    /// Starts a leader transfer to `id`; the reply waits until `id` leads or time runs out.
    pub(super) fn on_transfer_leader(
        &mut self,
        id: NodeId,
        reply: oneshot::Sender<Result<NodeId, NodeError>>,
    ) {
        match self.raw.transfer_leader(id) {
            Ok(target) if target == self.id => {
                let _ = reply.send(Ok(self.id));
            }
            Ok(target) => {
                // The core refuses lease reads while the transfer runs (`ReadLease`).
                let deadline =
                    Instant::now() + self.cfg.tick * (2 * self.cfg.election_ticks) as u32;
                self.transfers.push(TransferWait {
                    target,
                    deadline,
                    reply,
                });
            }
            Err(e) => {
                let _ = reply.send(Err(self.raft_error(e)));
            }
        }
    }

    /// Fails the leader transfers whose deadline passed.
    pub(super) fn expire_transfers(&mut self, now: Instant) {
        for t in self.transfers.extract_if(.., |t| t.deadline <= now) {
            let _ = t.reply.send(Err(NodeError::Unavailable(format!(
                "leadership did not move to node {} in time",
                t.target
            ))));
        }
    }

    /// Answers the leader transfers whose target now leads.
    pub(super) fn complete_transfers(&mut self, leader_id: NodeId) {
        for t in self.transfers.extract_if(.., |t| t.target == leader_id) {
            let _ = t.reply.send(Ok(leader_id));
        }
    }

    pub(super) fn leader_error(&self) -> NodeError {
        let leader_id = self.raw.leader_id();
        NodeError::NotLeader {
            leader_id,
            leader_client_addr: self.client_addr(leader_id).filter(|_| leader_id != self.id),
        }
    }

    pub(super) fn raft_error(&self, e: RaftError) -> NodeError {
        match e {
            RaftError::NotLeader { .. } => self.leader_error(),
            RaftError::TransferInProgress => {
                NodeError::Unavailable("leader transfer in progress; retry".into())
            }
            RaftError::ConfChangeNotAllowed(why) => NodeError::Unavailable(why.to_string()),
            RaftError::InvalidConfChange(why) => NodeError::InvalidArgument(why),
            // Not answers to a proposal, a read or a membership change: if the core ever gave
            // one, the request fails without stopping the loop.
            other @ (RaftError::Compacted(_)
            | RaftError::Unavailable(_)
            | RaftError::InvalidConfig(_)
            | RaftError::InvalidState(_)) => NodeError::Internal(other.to_string()),
        }
    }
}
