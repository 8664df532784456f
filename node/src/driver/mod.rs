//! The event loop of a node: it owns the Raft core and the KV state machine, feeds the core
//! ticks, peer messages and client requests, and carries out each `Ready`.
//!
//! One task, no locks. Between two `Ready`s the loop takes whatever has arrived (ticks, peer
//! messages, client requests); then it hands the `Ready`'s writes to the storage thread and awaits
//! the fsync. Messages that queue up meanwhile form the next batch — that is the group commit,
//! with no timer involved. The loop never holds anything across an await but its own state, and
//! never waits on the network: outbound messages go into per-peer queues (`transport`). It still
//! awaits, inline, each storage batch's fsync (under disk contention the 200 MB test saw batches
//! over 0.5 s, and gaps of seconds): a follower stalled this way does not tick either, so it does
//! not call an election, but it does not answer its leader meanwhile.
//!
//! The rooms of the driver, each stating the rules it enforces:
//! - this file: the loop, carrying out a `Ready` (send, persist, apply) and client requests;
//! - `state`: the [`Driver`] struct, what it is built from, and the one submit-and-wait on the
//!   storage thread (`storage_call`);
//! - `config`: the loop's tunables and the length of a read lease;
//! - `waiters`: the rules for who waits for what (writes, membership changes, leader
//!   transfers), and how they fail;
//! - `reads`: ReadIndex and lease reads;
//! - `snapshot`: local snapshots (take, install, compact) and snapshots received from a leader;
//! - `membership`: member addresses, membership requests, and publishing our own addresses;
//! - `status`: what the node shows (status, observed state, metrics of the loop);
//! - `error`: why the loop stops ([`DriverError`]), apart from what a client is told.
//!
//! And the leaves, plain types that import nothing from the driver but `error`, so that no room
//! imports from a room that imports it (`scripts/check-module-cycles.py` checks):
//! - `pending`: the waiters themselves (a write's or membership change's reply, a leader
//!   transfer, a read) and how one is answered with an error;
//! - `snapshot_jobs`: a snapshot being written, one being decoded, one received and decoded;
//! - `observed`: [`Observed`], what the loop publishes after every turn.
//!
//! `state` imports only leaves; the other rooms import `Driver` from `state` and `impl` it; this
//! file imports from all of them and is imported by none.

mod config;
mod error;
mod membership;
mod observed;
mod pending;
mod reads;
mod snapshot;
mod snapshot_jobs;
mod state;
mod status;
mod waiters;

use std::time::{Duration, Instant};

use raftkv_raft::{ConfChangeType, Entry, EntryPayload, Index, NodeId, Ready, Role};
use tokio::time::MissedTickBehavior;
use tracing::{info, warn};

pub use config::DriverConfig;
pub use error::DriverError;
pub use observed::Observed;
pub(crate) use state::{Driver, DriverParts};

use crate::entry::EntryKind;
use crate::error::NodeError;
use crate::handle::DriverRequest;
use crate::members::learn_from_log;
use crate::shutdown::Shutdown;
use crate::storage::WriteBatch;
use crate::transport::Inbound;
use pending::{Failure, PendingRead, Waiter, lost_write, reply_err};
use snapshot_jobs::{snapshot_decoded, snapshot_written};
use state::storage_call;

/// Most queued events handled before the next `Ready`: bounds the latency of one loop turn.
const MAX_EVENTS_PER_TURN: usize = 1024;

impl Driver {
    /// Runs until `shutdown` is triggered or storage fails.
    pub(crate) async fn run(mut self, mut shutdown: Shutdown) -> Result<(), DriverError> {
        self.sync_transport_peers();
        let mut ticker = tokio::time::interval(self.cfg.tick);
        // After a stall, do not fire a burst of ticks: a burst would make election timers run
        // faster than real time, and lease reads rely on them running no faster.
        ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = shutdown.recv() => break,
                _ = ticker.tick() => self.on_tick(),
                Some(inb) = self.inbound.recv() => {
                    self.on_inbound(inb);
                    for _ in 0..MAX_EVENTS_PER_TURN {
                        match self.inbound.try_recv() {
                            Ok(inb) => self.on_inbound(inb),
                            Err(_) => break,
                        }
                    }
                }
                (index, written) = snapshot_written(&mut self.snapshot_job) => {
                    self.snapshot_job = None;
                    self.finish_snapshot(index, written).await?;
                }
                decoded = snapshot_decoded(&mut self.decoding) => {
                    if let Some(job) = self.decoding.take() {
                        self.on_snapshot_decoded(job, decoded);
                    }
                }
                Some(req) = self.requests.recv() => {
                    self.on_request(req);
                    for _ in 0..MAX_EVENTS_PER_TURN {
                        match self.requests.try_recv() {
                            Ok(req) => self.on_request(req),
                            Err(_) => break,
                        }
                    }
                }
            }
            self.drain_ready().await?;
        }
        self.fail_all(Failure::Stopping);
        Ok(())
    }

    // ----- events ---------------------------------------------------------------------------

    fn on_tick(&mut self) {
        self.raw.tick();
        let now = Instant::now();
        self.expire_transfers(now);
        self.maybe_publish_self(now);
    }

    fn on_inbound(&mut self, inb: Inbound) {
        match inb {
            Inbound::Message(m) => {
                self.note_leader_message(&m);
                self.raw.step(m)
            }
            Inbound::Snapshot { msg, data } => {
                self.note_leader_message(&msg);
                let meta = data.meta().clone();
                let announced = match &msg.body {
                    raftkv_raft::MessageBody::InstallSnapshot { meta } => Some(meta),
                    _ => None,
                };
                if announced != Some(&meta) {
                    warn!(
                        from = msg.from,
                        index = meta.index,
                        "a snapshot stream whose data does not match its message; dropped"
                    );
                    return;
                }
                self.on_snapshot_received(msg, data);
            }
            Inbound::Unreachable(peer) => self.raw.report_unreachable(peer),
            Inbound::SnapshotStatus { peer, ok } => self.raw.report_snapshot(peer, ok),
        }
    }

    fn on_request(&mut self, req: DriverRequest) {
        match req {
            DriverRequest::Propose { cmd, reply } => {
                self.propose(EntryKind::Command(cmd), Waiter::Write(reply));
            }
            DriverRequest::Read {
                query,
                consistency,
                reply,
            } => self.on_read(PendingRead { query, reply }, consistency),
            DriverRequest::Status { reply } => {
                let _ = reply.send(self.status());
            }
            DriverRequest::AddMember {
                id,
                peer_addr,
                client_addr,
                reply,
            } => self.on_add_member(id, peer_addr, client_addr, reply),
            DriverRequest::RemoveMember { id, reply } => self.on_remove_member(id, reply),
            DriverRequest::TransferLeader { id, reply } => self.on_transfer_leader(id, reply),
        }
    }

    // ----- Ready ----------------------------------------------------------------------------

    async fn drain_ready(&mut self) -> Result<(), DriverError> {
        while self.raw.has_ready() {
            let mut rd = self.raw.ready();
            self.handle_ready(&mut rd).await?;
            self.raw.advance(&rd);
            self.maybe_snapshot()?;
        }
        self.publish_observed();
        Ok(())
    }

    /// Carries out `rd`. Its messages are moved out (`advance` does not look at them).
    async fn handle_ready(&mut self, rd: &mut Ready) -> Result<(), DriverError> {
        // 1. Messages that need nothing durable go out now, in parallel with our own fsync. A
        //    lease is timed from just before its heartbeats leave.
        let voters = self.raw.conf_state().voters.iter().copied();
        let lease = self.cfg.lease(self.guards.shortest(voters));
        self.metrics
            .set_read_lease(if self.raw.role() == Role::Leader {
                lease
            } else {
                Duration::ZERO
            });
        self.lease
            .on_ready(self.raw.term(), rd, Instant::now(), |sent| sent + lease);
        for m in std::mem::take(&mut rd.messages) {
            self.transport.send(m);
        }
        // Learn member addresses from configuration entries as soon as they are in the log.
        for e in &rd.entries {
            learn_from_log(&mut self.book, e);
        }

        // 2. Persist snapshot, entries and hard state with one fsync on the storage thread.
        // A received snapshot was decoded before the core heard of it, so restoring cannot fail
        // after it replaced our log on disk, and this loop does not wait for the decoding.
        let (staged, restore_from) = match &rd.snapshot {
            Some(meta) => {
                let r = self.take_received(meta)?;
                (Some(r.staged), Some(r.restored))
            }
            None => (None, None),
        };
        let batch = WriteBatch {
            snapshot: staged,
            entries: rd.entries.clone(),
            hard_state: rd.hard_state,
        };
        #[cfg(feature = "planted-bugs")]
        let batch = match &self.write_behind {
            Some(tx) if !batch.is_empty() => {
                let _ = tx.send((Instant::now(), batch));
                WriteBatch::default()
            }
            _ => batch,
        };
        if !batch.is_empty() {
            let started = Instant::now();
            let done = storage_call(|cb| self.storage.submit(batch, cb)).await;
            self.metrics.fsync_duration.observe(started.elapsed());
            done?;
        }
        if let (Some(meta), Some(loaded)) = (&rd.snapshot, restore_from) {
            self.restore_snapshot(meta, loaded);
        }

        // 3. Promises that depend on durable state.
        for m in std::mem::take(&mut rd.persisted_messages) {
            self.transport.send(m);
        }

        // 4. Apply, then serve what waited for it.
        for e in &rd.committed_entries {
            self.apply(e)?;
        }
        for rs in &rd.read_states {
            if let Some(read) = self.reads_by_ctx.remove(&rs.ctx) {
                self.reads_waiting_apply.push((rs.index, read));
            }
        }
        self.serve_applied_reads();
        if let Some(ss) = rd.soft_state {
            self.on_soft_state(ss.role, ss.leader_id);
        }
        Ok(())
    }

    fn apply(&mut self, e: &Entry) -> Result<(), DriverError> {
        let proposed_at = self.proposed_at.remove(&e.index);
        let waiter = match self.proposals.remove(&e.index) {
            Some((term, w)) if term == e.term => Some(w),
            Some((_, w)) => {
                // Another leader's entry took this index: ours is gone for good.
                reply_err(w, lost_write());
                None
            }
            None => None,
        };
        match &e.payload {
            EntryPayload::Normal(data) => {
                // A committed entry every replica must apply identically: skipping it would
                // diverge from the others, so stop instead.
                let kind =
                    EntryKind::decode(data).map_err(|source| DriverError::UndecodableEntry {
                        index: e.index,
                        source,
                    })?;
                match kind {
                    EntryKind::Command(cmd) => {
                        let result = self.kv.apply(e.index, &cmd)?;
                        if let Some(Waiter::Write(reply)) = waiter {
                            if let Some(at) = proposed_at {
                                self.metrics.proposal_duration.observe(at.elapsed());
                            }
                            let _ = reply.send(result.map_err(NodeError::Command));
                        }
                    }
                    EntryKind::MemberUpdate { id, addrs } => {
                        self.kv_noop(e.index)?;
                        if self.raw.conf_state().contains(id) {
                            self.book.insert(id, addrs);
                            self.sync_transport_peers();
                        }
                        if let Some(Waiter::Members(reply)) = waiter {
                            let _ = reply.send(Ok(self.members()));
                        }
                    }
                }
            }
            EntryPayload::Noop => self.kv_noop(e.index)?,
            EntryPayload::Config { change, .. } => {
                self.kv_noop(e.index)?;
                if let Some(cc) = change {
                    info!(index = e.index, change = ?cc.change_type, node = cc.node_id, "membership change applied");
                    if cc.change_type == ConfChangeType::RemoveNode && cc.node_id != self.id {
                        // A removed member gets no more messages, and its address is forgotten
                        // (on every replica alike: the book travels in snapshots). Re-adding it
                        // brings its addresses back with the AddLearner entry.
                        self.book.remove(&cc.node_id);
                        self.transport.remove_peer(cc.node_id);
                    }
                }
                self.sync_transport_peers();
                if let Some(Waiter::Members(reply)) = waiter {
                    let _ = reply.send(Ok(self.members()));
                }
            }
        }
        Ok(())
    }

    fn kv_noop(&mut self, index: Index) -> Result<(), DriverError> {
        Ok(self.kv.apply_noop(index)?)
    }

    fn on_soft_state(&mut self, role: Role, leader_id: NodeId) {
        info!(
            ?role,
            leader = leader_id,
            term = self.raw.term(),
            "role change"
        );
        if role != Role::Leader {
            self.fail_all(Failure::LeadershipLost);
        }
        self.complete_transfers(leader_id);
        self.published_at = None;
    }
}
