//! Snapshots: local ones (take, install, compact) and those received from a leader.
//!
//! A local snapshot is taken from a frozen view of the state machine
//! ([`KvStateMachine::freeze`]: O(1) for the keys, later writes go to an overlay until the view
//! is dropped; see `kv/data.rs`) and encoded, written and fsynced by a blocking task while the
//! loop goes on; when it is done the loop installs it and compacts the log (unless a newer
//! snapshot from the leader was installed meanwhile). Compaction keeps a trailing log of
//! [`DriverConfig::snapshot_trailing_entries`](super::DriverConfig::snapshot_trailing_entries)
//! entries below the snapshot in the core (and the WAL segments that hold them), so that a
//! follower a little behind is sent entries rather than the whole snapshot.
//!
//! A snapshot received from the leader is read, checked and decoded on the blocking pool *before
//! its message is stepped into the core*, so the loop goes on ticking and answering the leader
//! while a large snapshot decodes, and installing it cannot fail once it replaced the log on
//! disk. Followers measure the longest silence of their leader
//! (`raftkv_leader_silence_max_seconds`, see `status`); `node/tests/snapshot_200mb.rs` loads
//! 200 MB, checks that no election happens while snapshots are taken and installed, and prints
//! those gaps.

use std::collections::BTreeMap;
use std::time::Instant;

use raftkv_raft::{Index, SnapshotMeta, Term};
use tokio::sync::oneshot;
use tracing::{debug, info, warn};

use super::error::DriverError;
use super::pending::{lost_write, reply_err};
use super::snapshot_jobs::{Decoding, Received, Restored, SnapshotJob};
use super::state::{Driver, storage_call};
use crate::entry::snapshot_header;
use crate::storage::{StagedSnapshot, WriteBatch};

impl Driver {
    pub(super) fn take_received(&mut self, meta: &SnapshotMeta) -> Result<Received, DriverError> {
        self.received
            .remove(&(meta.index, meta.term))
            .ok_or(DriverError::SnapshotNotReceived {
                index: meta.index,
                term: meta.term,
            })
    }

    /// A snapshot stream from the leader arrived complete. It is decoded on the blocking pool
    /// (read, checksum, the address book, the state machine rebuilt) before its message is
    /// stepped into the core: decoding a large snapshot takes seconds, and this loop must go on
    /// ticking and answering the leader meanwhile. A stream from a stale leader is dropped (the
    /// core answers its heartbeats with our term anyway); one that arrives while another is
    /// decoded waits, and only the newest such waits.
    pub(super) fn on_snapshot_received(&mut self, msg: raftkv_raft::Message, data: StagedSnapshot) {
        if msg.term < self.raw.term() {
            return;
        }
        let index = data.meta().index;
        if let Some(job) = &self.decoding {
            // A leader whose probe this follower rejected while decoding sends the snapshot
            // again: the same one (or an older one) is not decoded twice.
            let newer = job.staged.meta().index < index
                && self
                    .next_to_decode
                    .as_ref()
                    .is_none_or(|(_, queued)| queued.meta().index < index);
            if newer {
                self.next_to_decode = Some((msg, data));
            }
            return;
        }
        let reader = match data.open_reader() {
            Ok(r) => r,
            Err(e) => {
                warn!(index, error = %e, "cannot read a received snapshot; dropped");
                return;
            }
        };
        let task = tokio::task::spawn_blocking(move || crate::entry::load_snapshot(reader));
        self.decoding = Some(Decoding {
            msg,
            staged: data,
            task,
        });
    }

    /// A received snapshot is decoded: the core hears of it now, and it is kept for the `Ready`
    /// that installs it. A snapshot that does not decode is dropped; the leader sends it again
    /// when the follower's next answer shows it still lacks the entries.
    pub(super) fn on_snapshot_decoded(
        &mut self,
        job: Decoding,
        decoded: Result<Restored, DriverError>,
    ) {
        let Decoding { msg, staged, .. } = job;
        match decoded {
            Ok(restored) => {
                let current_term = msg.term >= self.raw.term();
                self.raw.step(msg);
                let wanted = self.raw.pending_snapshot().map(|m| (m.index, m.term));
                let received = Received { staged, restored };
                keep_received(&mut self.received, current_term.then_some(received), wanted);
            }
            Err(e) => warn!(
                index = staged.meta().index,
                error = %e,
                "a received snapshot does not decode; dropped"
            ),
        }
        if let Some((msg, data)) = self.next_to_decode.take() {
            self.on_snapshot_received(msg, data);
        }
    }

    pub(super) fn restore_snapshot(&mut self, meta: &SnapshotMeta, (book, kv): Restored) {
        self.kv = kv;
        self.plant_bugs();
        self.book.extend(book);
        self.snapshot_index = meta.index;
        self.sync_transport_peers();
        // Waiters for entries the snapshot replaced can no longer be answered from the log.
        let covered: Vec<Index> = self
            .proposals
            .range(..=meta.index)
            .map(|(i, _)| *i)
            .collect();
        for index in covered {
            if let Some((_, w)) = self.proposals.remove(&index) {
                reply_err(w, lost_write());
            }
        }
        self.metrics.snapshot_installed();
        info!(
            index = meta.index,
            term = meta.term,
            "installed snapshot from the leader"
        );
    }

    /// Starts a local snapshot once `snapshot_entries` entries were applied since the last one.
    ///
    /// The state at this point is frozen (O(1): no copy of the map) and a blocking task encodes
    /// and writes it, fsyncs the file and hands it back through [`SnapshotJob`]; meanwhile the
    /// loop keeps ticking, heartbeating and applying. [`Driver::finish_snapshot`] installs it and
    /// compacts the log.
    pub(super) fn maybe_snapshot(&mut self) -> Result<(), DriverError> {
        let applied = self.kv.applied_index();
        if self.snapshot_job.is_some() || applied < self.snapshot_index + self.cfg.snapshot_entries
        {
            return Ok(());
        }
        let meta = self.raw.snapshot_meta(applied)?;
        let header = snapshot_header(&self.book);
        let started = Instant::now();
        let kv = self.kv.freeze();
        let frozen_in = started.elapsed();
        let snapshots = self.snapshots.clone();
        let (tx, done) = oneshot::channel();
        tokio::task::spawn_blocking(move || {
            let written = (|| -> Result<StagedSnapshot, DriverError> {
                use std::io::Write;
                let mut w = snapshots.writer(meta)?;
                w.write_all(&header)?;
                kv.write_snapshot(&mut w)?;
                let bytes = w.len();
                let staged = w.finish()?;
                info!(
                    index = applied,
                    bytes,
                    frozen_us = frozen_in.as_micros() as u64,
                    written_ms = started.elapsed().as_millis() as u64,
                    "snapshot written"
                );
                Ok(staged)
            })();
            // Release the frozen view before the loop hears of the result, so that its next
            // write folds the overlay back.
            drop(kv);
            let _ = tx.send(written);
        });
        self.snapshot_job = Some(SnapshotJob {
            index: applied,
            done,
        });
        Ok(())
    }

    /// Installs a snapshot written in the background and compacts the log up to
    /// `snapshot_trailing_entries` below it, unless a newer snapshot (one received from the
    /// leader) was installed meanwhile.
    pub(super) async fn finish_snapshot(
        &mut self,
        index: Index,
        written: Result<StagedSnapshot, DriverError>,
    ) -> Result<(), DriverError> {
        let staged = written?;
        if index <= self.snapshot_index {
            // Superseded; the staged file is deleted when dropped.
            return Ok(());
        }
        let install = WriteBatch {
            snapshot: Some(staged),
            ..Default::default()
        };
        storage_call(|cb| self.storage.submit(install, cb)).await?;
        // The core decides where the log now starts (never before its current start); the WAL
        // may free the segments below that.
        let start = self
            .raw
            .compact(index, self.cfg.snapshot_trailing_entries)?;
        storage_call(|cb| self.storage.compact(start, cb)).await?;
        self.snapshot_index = index;
        self.metrics.snapshot_taken();
        debug!(index, start, "snapshot taken, log compacted");
        Ok(())
    }
}

/// Files a snapshot received from a leader (`data`: `None` when its stream came from a stale
/// leader, whose message the core answers with our term), then keeps only the snapshot the core
/// wants to install (`wanted`) and the newest one. A stale or superseded transfer's file is
/// deleted when dropped; the one the core is installing is never evicted, or its `Ready` would
/// find no data.
fn keep_received<S: ReceivedSnapshot>(
    received: &mut BTreeMap<(Index, Term), S>,
    data: Option<S>,
    wanted: Option<(Index, Term)>,
) {
    if let Some(data) = data {
        received.insert(data.key(), data);
    }
    let newest = received.last_key_value().map(|(k, _)| *k);
    received.retain(|k, _| Some(*k) == wanted || Some(*k) == newest);
}

/// What [`keep_received`] needs of a received snapshot: where it ends.
trait ReceivedSnapshot {
    fn key(&self) -> (Index, Term);
}

impl ReceivedSnapshot for Received {
    fn key(&self) -> (Index, Term) {
        (self.staged.meta().index, self.staged.meta().term)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    impl ReceivedSnapshot for (Index, Term) {
        fn key(&self) -> (Index, Term) {
            *self
        }
    }

    #[test]
    fn a_stale_or_older_stream_never_evicts_the_snapshot_being_installed() {
        let mut received = BTreeMap::new();
        // The core accepted 100@3 and will install it in its next Ready.
        keep_received(&mut received, Some((100, 3)), Some((100, 3)));
        assert_eq!(received.keys().copied().collect::<Vec<_>>(), [(100, 3)]);
        // An older transfer of the same leader arrives late: dropped, 100@3 stays.
        keep_received(&mut received, Some((50, 3)), Some((100, 3)));
        assert_eq!(received.keys().copied().collect::<Vec<_>>(), [(100, 3)]);
        // A stream from a deposed leader (lower term) is not filed at all.
        keep_received(&mut received, None, Some((100, 3)));
        assert_eq!(received.keys().copied().collect::<Vec<_>>(), [(100, 3)]);
        // A newer one arrives while 100@3 is still wanted: both are kept.
        keep_received(&mut received, Some((200, 4)), Some((100, 3)));
        assert_eq!(
            received.keys().copied().collect::<Vec<_>>(),
            [(100, 3), (200, 4)]
        );
        // Once the core wants the newer one, the older goes.
        keep_received(&mut received, None, Some((200, 4)));
        assert_eq!(received.keys().copied().collect::<Vec<_>>(), [(200, 4)]);
        // Nothing wanted: only the newest is kept for a message still to come.
        keep_received(&mut received, Some((150, 4)), None);
        assert_eq!(received.keys().copied().collect::<Vec<_>>(), [(200, 4)]);
    }
}
