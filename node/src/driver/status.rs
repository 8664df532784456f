//! What the node shows of itself: its status (the `Status` RPC), the state it publishes to
//! health checks and metrics after every turn, and how long its leader was silent.

use std::time::Instant;

use super::observed::Observed;
use super::state::Driver;
use crate::handle::{MemberState, NodeStatus};

impl Driver {
    /// Measures leader silence as a follower sees it: the time between two consecutive messages
    /// from the same leader in the same term (appends, heartbeats, snapshots), which is what the
    /// election timer races against. A stall of this loop counts too, as it should: a follower
    /// whose loop stalls misses heartbeats just the same.
    pub(super) fn note_leader_message(&mut self, m: &raftkv_raft::Message) {
        use raftkv_raft::MessageBody::{AppendEntries, Heartbeat, InstallSnapshot};
        if !matches!(
            m.body,
            AppendEntries { .. } | Heartbeat { .. } | InstallSnapshot { .. }
        ) || m.term < self.raw.term()
        {
            return;
        }
        let now = Instant::now();
        if let Some((term, leader, at)) = self.leader_heard
            && (term, leader) == (m.term, m.from)
        {
            self.metrics.leader_silence(now.duration_since(at));
        }
        self.leader_heard = Some((m.term, m.from, now));
    }

    fn member_state(&self) -> MemberState {
        let conf = self.raw.conf_state();
        if self.raw.catch_up_index() > 0 && conf.contains(self.id) {
            MemberState::CatchingUp
        } else if conf.voters.contains(&self.id) {
            MemberState::Voter
        } else if conf.contains(self.id) {
            MemberState::Learner
        } else if self.was_member {
            MemberState::Removed
        } else {
            MemberState::WaitingToBeAdded
        }
    }

    pub(super) fn status(&self) -> NodeStatus {
        let leader_id = self.raw.leader_id();
        let last_log_index = self.raw.last_index();
        NodeStatus {
            node_id: self.id,
            role: self.raw.role(),
            term: self.raw.term(),
            leader_id,
            leader_client_addr: self.client_addr(leader_id).unwrap_or_default(),
            commit_index: self.raw.commit_index(),
            applied_index: self.kv.applied_index(),
            cluster_id: self.cluster_id.clone(),
            members: self.members(),
            member_state: self.member_state(),
            last_log_index,
            last_log_term: self.raw.log_term(last_log_index).unwrap_or(0),
            catch_up_index: self.raw.catch_up_index(),
        }
    }

    pub(super) fn publish_observed(&mut self) {
        if self.raw.conf_state().contains(self.id) {
            self.was_member = true;
        }
        self.metrics.set_state(
            self.raw.term(),
            self.raw.role(),
            self.raw.leader_id(),
            self.raw.commit_index(),
            self.kv.applied_index(),
            self.raw.conf_state().contains(self.id),
        );
        let o = Observed {
            role: self.raw.role(),
            term: self.raw.term(),
            leader_id: self.raw.leader_id(),
            commit_index: self.raw.commit_index(),
            applied_index: self.kv.applied_index(),
            member: self.raw.conf_state().contains(self.id),
        };
        self.observed.send_if_modified(|cur| {
            if *cur != o {
                *cur = o;
                true
            } else {
                false
            }
        });
    }
}
