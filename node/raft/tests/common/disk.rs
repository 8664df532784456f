//! A node's simulated stable storage and its (volatile) state machine.
//!
//! [`Disk`] survives crashes; everything else of a node does not. It holds exactly what the
//! `Ready` contract says must be durable: the hard state, the latest snapshot (metadata plus the
//! harness's snapshot data) and the log entries after it. Next to each entry it keeps the entry's
//! *chain hash* — a hash of the whole log prefix up to and including it — which turns the Log
//! Matching property (§5.3) into a per-entry comparison.
//!
//! [`StateMachine`] is the application: it folds applied `Normal` entries into a running hash, so
//! two replicas that applied the same commands in the same order hold the same value. Its snapshot
//! image is that hash plus the applied index ([`SnapData`]).

use raftkv_raft::{Entry, EntryPayload, HardState, Index, InitialState, SnapshotMeta, Term};

use super::rng::{combine, stable_hash};

/// The harness's snapshot "data": what the transport streams next to an `InstallSnapshot`.
///
/// A real snapshot holds the KV state; ours holds a hash of it, plus the log's chain hash at the
/// snapshot index so that the receiver's log-matching bookkeeping can continue after it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SnapData {
    /// The last index the snapshot covers.
    pub index: Index,
    /// The term of the entry at `index`.
    pub term: Term,
    /// The state machine's hash after applying `index`.
    pub sm_hash: u64,
    /// The log's chain hash at `index`.
    pub chain: u64,
}

/// The hash of an entry's payload, as folded into chain hashes and compared by the checker.
pub fn payload_hash(payload: &EntryPayload) -> u64 {
    stable_hash(payload)
}

/// The chain hash of `entry` following a prefix whose chain hash is `prev`.
pub fn chain_next(prev: u64, entry: &Entry) -> u64 {
    combine(
        prev,
        &[entry.index, entry.term, payload_hash(&entry.payload)],
    )
}

/// One node's durable state. Survives [`crate::common::Cluster::crash`]; lost only when a node is
/// decommissioned.
#[derive(Clone, Debug, Default)]
pub struct Disk {
    /// Term, vote and commit index as last persisted.
    pub hard_state: HardState,
    /// The latest durable snapshot and its data.
    pub snapshot: Option<(SnapshotMeta, SnapData)>,
    /// Entries `snapshot_index() + 1 ..= last_index()`, contiguous.
    pub entries: Vec<Entry>,
    /// `chains[k]` is the chain hash of `entries[k]`.
    chains: Vec<u64>,
}

impl Disk {
    /// The index of the durable snapshot, 0 without one.
    pub fn snapshot_index(&self) -> Index {
        self.snapshot.as_ref().map_or(0, |(m, _)| m.index)
    }

    /// The chain hash at the snapshot index (the seed of the chain for `entries`).
    fn snapshot_chain(&self) -> u64 {
        self.snapshot.as_ref().map_or(0, |(_, d)| d.chain)
    }

    /// The index of the last durable entry (or of the snapshot when the log is empty).
    pub fn last_index(&self) -> Index {
        self.snapshot_index() + self.entries.len() as Index
    }

    /// The durable entry at `index`, if it is in the log (not compacted, not beyond the end).
    pub fn entry(&self, index: Index) -> Option<&Entry> {
        let first = self.snapshot_index() + 1;
        if index < first {
            return None;
        }
        self.entries.get((index - first) as usize)
    }

    /// The term at `index`: from the log, or from the snapshot at exactly that index.
    pub fn term_at(&self, index: Index) -> Option<Term> {
        if let Some((meta, _)) = &self.snapshot
            && meta.index == index
        {
            return Some(meta.term);
        }
        if index == 0 {
            return Some(0);
        }
        self.entry(index).map(|e| e.term)
    }

    /// The chain hash at `index`: from the log, or from the snapshot at exactly that index.
    pub fn chain_at(&self, index: Index) -> Option<u64> {
        let snap = self.snapshot_index();
        if index == snap {
            return Some(self.snapshot_chain());
        }
        if index < snap {
            return None;
        }
        self.chains.get((index - snap - 1) as usize).copied()
    }

    /// Appends entries as `Ready::entries` demands: an entry at an index at or below the last
    /// stored one replaces that entry and everything after it (§5.3 "delete the existing entry and
    /// all that follow it"). Returns `(index, term, chain hash)` of every entry written, for the
    /// log-matching check, or a description of why the batch breaks the `Ready` contract.
    pub fn append(&mut self, batch: &[Entry]) -> Result<Vec<(Index, Term, u64)>, String> {
        let Some(first) = batch.first() else {
            return Ok(Vec::new());
        };
        let snap = self.snapshot_index();
        if first.index <= snap {
            return Err(format!(
                "Ready.entries starts at index {} at or below the durable snapshot at {snap}",
                first.index
            ));
        }
        if first.index > self.last_index() + 1 {
            return Err(format!(
                "Ready.entries starts at index {} but the durable log ends at {} (a gap)",
                first.index,
                self.last_index()
            ));
        }
        let keep = (first.index - snap - 1) as usize;
        self.entries.truncate(keep);
        self.chains.truncate(keep);
        let mut written = Vec::with_capacity(batch.len());
        for e in batch {
            if e.index != self.last_index() + 1 {
                return Err(format!(
                    "Ready.entries is not contiguous: index {} after {}",
                    e.index,
                    self.last_index()
                ));
            }
            let prev = self.chain_at(e.index - 1).unwrap_or_default();
            let chain = chain_next(prev, e);
            self.entries.push(e.clone());
            self.chains.push(chain);
            written.push((e.index, e.term, chain));
        }
        Ok(written)
    }

    /// Installs a snapshot received from a leader: the log then starts after `meta.index`.
    pub fn install_snapshot(&mut self, meta: SnapshotMeta, data: SnapData) {
        self.entries.clear();
        self.chains.clear();
        self.snapshot = Some((meta, data));
    }

    /// Stores a snapshot this node took itself and drops the entries it covers. `meta.index` must
    /// be in the durable log (the caller checked).
    pub fn compact(&mut self, meta: SnapshotMeta, data: SnapData) {
        let drop = (meta.index - self.snapshot_index()) as usize;
        let drop = drop.min(self.entries.len());
        self.entries.drain(..drop);
        self.chains.drain(..drop);
        self.snapshot = Some((meta, data));
    }

    /// What a restarted node recovers. The state machine is volatile, so it restarts from the
    /// snapshot and the core replays committed entries after it (`applied` = snapshot index).
    pub fn initial_state(&self) -> InitialState {
        InitialState {
            hard_state: self.hard_state,
            snapshot: self.snapshot.as_ref().map(|(m, _)| m.clone()),
            entries: self.entries.clone(),
            applied: self.snapshot_index(),
        }
    }
}

/// The replicated application: a hash chain over applied commands.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StateMachine {
    /// The last applied index.
    pub applied: Index,
    /// Fold of every applied `Normal` entry so far (index, term and payload).
    pub hash: u64,
}

impl StateMachine {
    /// Restores from a snapshot image (or starts empty).
    pub fn restore(data: Option<&SnapData>) -> Self {
        data.map_or_else(Self::default, |d| Self {
            applied: d.index,
            hash: d.sm_hash,
        })
    }

    /// Applies one committed entry. Only application commands change the state; no-ops and
    /// configuration entries only move `applied`.
    pub fn apply(&mut self, e: &Entry) {
        if let EntryPayload::Normal(data) = &e.payload {
            self.hash = combine(self.hash, &[e.index, e.term, stable_hash(&data[..])]);
        }
        self.applied = e.index;
    }
}
