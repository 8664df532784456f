//! `MemStorage`: the in-memory [`LogStorage`], for tests and the deterministic simulation.
//!
//! It keeps two copies of the state: what has been written, and what a `sync` made "durable".
//! [`MemStorage::crash`] throws away everything written since the last sync, the way a power cut
//! would, so a simulation that restarts nodes from their storage exercises the same promise the
//! disk makes: nothing that was not synced may have been acknowledged.

use raftkv_raft::{Entry, HardState, Index, SnapshotMeta, Term};

use super::contract::LogStorage;
use super::error::{Result, StorageError};
use super::log::Log;
use super::snapshot::SnapshotStore;
use super::snapshot_stream::StagedSnapshot;

/// One state of the storage: hard state, snapshot and the log after it.
#[derive(Clone, Debug, Default)]
struct MemState {
    hard_state: HardState,
    snapshot: SnapshotMeta,
    log: Log<Entry>,
}

impl MemState {
    /// Applies a write that was already validated against an identical state.
    fn apply(&mut self, op: &Op) {
        match op {
            Op::Append(entries) => {
                for e in entries {
                    self.log.push(e.index, e.clone());
                }
            }
            Op::HardState(hs) => self.hard_state = *hs,
            Op::Snapshot(meta) => {
                self.log.install_snapshot(meta.index, meta.term);
                self.snapshot = meta.clone();
            }
        }
    }
}

/// A write since the last sync, replayed onto the durable copy by `sync`.
#[derive(Clone, Debug)]
enum Op {
    Append(Vec<Entry>),
    HardState(HardState),
    Snapshot(SnapshotMeta),
}

/// An in-memory [`LogStorage`] whose `sync` is a commit point: see [`MemStorage::crash`].
#[derive(Debug)]
pub struct MemStorage {
    current: MemState,
    durable: MemState,
    pending: Vec<Op>,
    store: SnapshotStore,
    keep_snapshots: usize,
    syncs: u64,
}

impl Default for MemStorage {
    fn default() -> Self {
        Self::new()
    }
}

impl MemStorage {
    /// An empty storage that keeps the two newest snapshots.
    pub fn new() -> Self {
        Self {
            current: MemState::default(),
            durable: MemState::default(),
            pending: Vec::new(),
            store: SnapshotStore::in_memory(),
            keep_snapshots: 2,
            syncs: 0,
        }
    }

    /// Forgets everything written since the last `sync`, as a power cut would. Snapshot data that
    /// was staged or committed but not recorded durably may stay in the store, as orphan files may
    /// on disk; it is never referenced.
    pub fn crash(&mut self) {
        self.current = self.durable.clone();
        self.pending.clear();
    }

    /// How many times `sync` made something durable.
    pub fn sync_count(&self) -> u64 {
        self.syncs
    }

    fn write(&mut self, op: Op) {
        self.current.apply(&op);
        self.pending.push(op);
    }
}

impl LogStorage for MemStorage {
    fn append(&mut self, entries: &[Entry]) -> Result<()> {
        self.current
            .log
            .check_append(entries.iter().map(|e| e.index))?;
        if !entries.is_empty() {
            self.write(Op::Append(entries.to_vec()));
        }
        Ok(())
    }

    fn set_hard_state(&mut self, hs: HardState) -> Result<()> {
        if hs != self.current.hard_state {
            self.write(Op::HardState(hs));
        }
        Ok(())
    }

    fn install_snapshot(&mut self, snapshot: StagedSnapshot) -> Result<()> {
        let offered = snapshot.meta().index;
        let installed = self.current.snapshot.index;
        if offered <= installed {
            return Err(StorageError::StaleSnapshot { installed, offered });
        }
        let meta = snapshot.meta().clone();
        self.store.commit(snapshot)?;
        self.write(Op::Snapshot(meta));
        Ok(())
    }

    fn compact(&mut self, upto: Index) -> Result<()> {
        if upto > self.current.snapshot.index {
            return Err(StorageError::CompactBeyondSnapshot {
                upto,
                snapshot: self.current.snapshot.index,
            });
        }
        // Installing a snapshot already dropped the entries it covers and memory has no segments,
        // but the contract says compaction makes earlier writes durable, as on disk.
        self.sync()
    }

    fn sync(&mut self) -> Result<()> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let snapshot_changed = self.pending.iter().any(|op| matches!(op, Op::Snapshot(_)));
        for op in self.pending.drain(..) {
            self.durable.apply(&op);
        }
        self.syncs += 1;
        if snapshot_changed {
            let s = &self.durable.snapshot;
            self.store.prune(self.keep_snapshots, (s.index, s.term))?;
        }
        Ok(())
    }

    fn hard_state(&self) -> HardState {
        self.current.hard_state
    }

    fn snapshot_meta(&self) -> Option<SnapshotMeta> {
        let s = &self.current.snapshot;
        (s.index > 0).then(|| s.clone())
    }

    fn first_index(&self) -> Index {
        self.current.log.first_index()
    }

    fn last_index(&self) -> Index {
        self.current.log.last_index()
    }

    fn term(&self, index: Index) -> Result<Term> {
        if index < self.current.log.base() {
            return Err(StorageError::Compacted(index));
        }
        self.current
            .log
            .term(index)
            .ok_or(StorageError::Unavailable(index))
    }

    fn entries(&self, lo: Index, hi: Index) -> Result<Vec<Entry>> {
        Ok(self.current.log.slice(lo, hi)?.to_vec())
    }

    fn snapshot_store(&self) -> SnapshotStore {
        self.store.clone()
    }
}
