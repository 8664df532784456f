//! What every storage implementation promises the node: [`LogStorage`], and the
//! [`RecoveredState`] a node restarts from. Kept apart from `storage/mod.rs` so that the
//! implementations depend on it, not on the module that re-exports them.

use raftkv_raft::{Entry, HardState, Index, SnapshotMeta, Term};

use super::error::Result;
use super::snapshot::SnapshotStore;
use super::snapshot_stream::StagedSnapshot;

/// What a node restarts from: everything needed to build the Raft core's initial state.
///
/// The state machine is restored from the snapshot's data (if any), so the core's `applied` index
/// starts at `snapshot.index` (or 0); the core then re-applies committed entries after it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RecoveredState {
    /// The last durable term, vote and commit index. Its `commit` may be below the snapshot's index
    /// (the core should take the larger of the two).
    pub hard_state: HardState,
    /// The installed snapshot, if any; its data is at [`SnapshotStore::open`].
    pub snapshot: Option<SnapshotMeta>,
    /// Every entry after the snapshot, in index order.
    pub entries: Vec<Entry>,
}

/// Stable storage for one Raft node: the log after a snapshot, the hard state, and the snapshot.
///
/// Writes are buffered until [`LogStorage::sync`], which makes all of them durable at once (group
/// commit): nothing may be acknowledged before the `sync` that covers it returns. Reads see every
/// write, synced or not.
///
/// After any `Err` from a write or `sync` that is an I/O error, an implementation refuses all
/// further writes ([`StorageError::Poisoned`]): the node must restart and recover from what is
/// really on disk. Refusals of bad requests (`NonConsecutive`, `AppendOutOfRange`,
/// `StaleSnapshot`, `CompactBeyondSnapshot`, `RecordTooLarge`) leave the storage unchanged.
pub trait LogStorage {
    /// Appends consecutive entries. The first may be at or below the last stored index — then it
    /// replaces that entry and everything after it (a conflicting suffix, §5.3 of the Raft paper).
    /// It must be after the snapshot and at most one past the last entry.
    fn append(&mut self, entries: &[Entry]) -> Result<()>;

    /// Records the term, vote and commit index (a no-op if unchanged).
    fn set_hard_state(&mut self, hs: HardState) -> Result<()>;

    /// Installs a staged snapshot (a local one taken from the state machine, or one received from
    /// the leader). Afterwards the log starts after `meta.index`: entries at or below it are gone;
    /// the entries after it are kept only if the log held the snapshot's last entry with the same
    /// term (Raft paper §7), otherwise the log is empty. Older snapshots are pruned after the next
    /// `sync`. Fails with `StaleSnapshot` unless the snapshot is newer (by index) than the
    /// installed one: snapshots only move forward.
    fn install_snapshot(&mut self, snapshot: StagedSnapshot) -> Result<()>;

    /// Reclaims space held by entries at or below `upto`, which must not exceed the snapshot's
    /// index. It first makes every earlier write durable, as `sync` does (space may only be freed
    /// once the snapshot that covers it is durable). On disk it then deletes whole WAL segments;
    /// the logical state does not change.
    fn compact(&mut self, upto: Index) -> Result<()>;

    /// Makes every write so far durable, with one fsync.
    fn sync(&mut self) -> Result<()>;

    /// The hard state last written.
    fn hard_state(&self) -> HardState;

    /// The installed snapshot, if any.
    fn snapshot_meta(&self) -> Option<SnapshotMeta>;

    /// The first index that may hold an entry: the snapshot's index + 1.
    fn first_index(&self) -> Index;

    /// The last index in the log, or the snapshot's index if the log is empty.
    fn last_index(&self) -> Index;

    /// The term of the entry at `index`, for `first_index() - 1 ..= last_index()` (the snapshot's
    /// own index gives the snapshot's term; index 0 gives 0 before any snapshot).
    fn term(&self, index: Index) -> Result<Term>;

    /// The entries `[lo, hi)`; fails with `Compacted` or `Unavailable` if they are not all stored.
    fn entries(&self, lo: Index, hi: Index) -> Result<Vec<Entry>>;

    /// Where this storage's snapshot data lives; share it with the transport.
    fn snapshot_store(&self) -> SnapshotStore;

    /// The state as it stands: what a restart from this storage would see (if it were all synced).
    fn initial_state(&self) -> Result<RecoveredState> {
        Ok(RecoveredState {
            hard_state: self.hard_state(),
            snapshot: self.snapshot_meta(),
            entries: self.entries(self.first_index(), self.last_index() + 1)?,
        })
    }
}

impl<S: LogStorage + ?Sized> LogStorage for Box<S> {
    fn append(&mut self, entries: &[Entry]) -> Result<()> {
        (**self).append(entries)
    }
    fn set_hard_state(&mut self, hs: HardState) -> Result<()> {
        (**self).set_hard_state(hs)
    }
    fn install_snapshot(&mut self, snapshot: StagedSnapshot) -> Result<()> {
        (**self).install_snapshot(snapshot)
    }
    fn compact(&mut self, upto: Index) -> Result<()> {
        (**self).compact(upto)
    }
    fn sync(&mut self) -> Result<()> {
        (**self).sync()
    }
    fn hard_state(&self) -> HardState {
        (**self).hard_state()
    }
    fn snapshot_meta(&self) -> Option<SnapshotMeta> {
        (**self).snapshot_meta()
    }
    fn first_index(&self) -> Index {
        (**self).first_index()
    }
    fn last_index(&self) -> Index {
        (**self).last_index()
    }
    fn term(&self, index: Index) -> Result<Term> {
        (**self).term(index)
    }
    fn entries(&self, lo: Index, hi: Index) -> Result<Vec<Entry>> {
        (**self).entries(lo, hi)
    }
    fn snapshot_store(&self) -> SnapshotStore {
        (**self).snapshot_store()
    }
}
