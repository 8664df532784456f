//! Reads: ReadIndex and lease reads.
//!
//! LINEARIZABLE reads go through ReadIndex; the core batches them into one heartbeat round, and
//! each read waits until its read index is applied. LEASE reads skip the round while the leader
//! holds a lease, decided by the core crate's [`raftkv_raft::ReadLease`] (the same code the
//! simulation checks): the lease starts when a heartbeat round was *sent* (noted just before
//! sending, in the loop's `handle_ready`) and is extended when that round is acknowledged by a
//! quorum; it lasts [`DriverConfig::lease`](super::DriverConfig::lease), which is shorter than
//! the time a follower that acknowledged the round refuses to vote for anyone else, minus a drift
//! margin. It is checked against the monotonic clock when the read is served, so a leader that
//! was paused (SIGSTOP) finds its lease expired on waking. It is paused while a leader transfer
//! runs and ends for the rest of the term once `TimeoutNow` was sent. STALE reads are served from
//! this replica's state as it is.

use std::time::Instant;

use raftkv_raft::Index;
#[cfg(feature = "planted-bugs")]
use raftkv_raft::Role;

use super::pending::PendingRead;
use super::state::Driver;
use crate::error::NodeError;
use crate::handle::{Consistency, ReadQuery, ReadResult};

impl Driver {
    pub(super) fn on_read(&mut self, read: PendingRead, consistency: Consistency) {
        if self.reads_by_ctx.len() + self.reads_waiting_apply.len() >= self.cfg.max_pending {
            let _ = read.reply.send(Err(NodeError::Overloaded(
                "too many reads in flight".into(),
            )));
            return;
        }
        #[cfg(feature = "planted-bugs")]
        if self.bug(crate::planted::PlantedBug::StaleRead) && self.raw.role() == Role::Leader {
            let result = self.execute(&read.query);
            let _ = read.reply.send(Ok(result));
            return;
        }
        match consistency {
            Consistency::Stale => {
                let result = self.execute(&read.query);
                let _ = read.reply.send(Ok(result));
            }
            Consistency::Lease if self.lease_valid(Instant::now()) => {
                let index = self.raw.commit_index();
                self.reads_waiting_apply.push((index, read));
                self.serve_applied_reads();
            }
            // Without a valid lease a LEASE read falls back to ReadIndex.
            Consistency::Lease | Consistency::Linearizable => {
                let ctx = self.next_read_ctx;
                self.next_read_ctx += 1;
                match self.raw.read_index(ctx) {
                    Ok(()) => {
                        self.reads_by_ctx.insert(ctx, read);
                    }
                    Err(e) => {
                        let _ = read.reply.send(Err(self.raft_error(e)));
                    }
                }
            }
        }
    }

    fn lease_valid(&self, now: Instant) -> bool {
        self.lease.is_valid(&self.raw, now)
    }

    fn execute(&self, q: &ReadQuery) -> ReadResult {
        match q {
            ReadQuery::Get { key } => ReadResult::Get(self.kv.get(key)),
            ReadQuery::Scan { start, end, limit } => {
                ReadResult::Scan(self.kv.scan(start, end, *limit))
            }
        }
    }

    /// Serves the reads whose index is applied now.
    pub(super) fn serve_applied_reads(&mut self) {
        let applied = self.kv.applied_index();
        let ready: Vec<(Index, PendingRead)> = self
            .reads_waiting_apply
            .extract_if(.., |(index, _)| *index <= applied)
            .collect();
        for (_, read) in ready {
            let result = self.execute(&read.query);
            let _ = read.reply.send(Ok(result));
        }
    }
}
