//! The in-memory log, with the commit, persist and apply points, and the history of
//! configurations (a configuration takes effect when its entry is appended, so truncating the log
//! must also roll the configuration back).
//!
//! The whole log stays in memory, as in etcd's `MemoryStorage`: the caller compacts after each
//! snapshot, which bounds it. That keeps every read of the core synchronous and free of I/O.
//!
//! # Snapshot and log start
//! Two points, `start <= snapshot.index`:
//! - `snapshot` is the latest durable snapshot (index S, its term and configuration): what a
//!   follower that needs compacted entries is sent, and the floor of `committed` and `applied`.
//! - `start` (index C and its term) is where the log begins: entries `C + 1 ..= last_index()` are
//!   held. The entries `C + 1 ..= S` form the *trailing log*: they are covered by the snapshot
//!   but kept, so that a follower a little behind is sent entries rather than the whole snapshot.
//!
//! Term lookups answer for `C ..= last_index()`; a follower whose next entry is at or below C is
//! sent the snapshot at S. Compaction ([`RaftLog::compact`]) records a new snapshot S' and moves
//! the start to `max(C, S' - trailing)`. Installing a leader's snapshot ([`RaftLog::restore`])
//! drops the whole log: C = S = the snapshot's index (when the log already holds the snapshot's
//! last entry, the caller commits instead and never restores). On recovery, entries may start
//! below the snapshot: they are kept as the trailing log if they reach the snapshot's index and
//! agree with its term; entries starting after `S + 1` leave a gap, which is an error.
//!
//! The configuration history starts at a base point B with `C <= B <= S` (the configuration in
//! force there), followed by every configuration entry after B. B = C after a restored snapshot
//! and after compaction; only after recovery with a trailing log is B = S (the configuration in
//! force at the first recovered entry is unknown), until a compaction moves C past it. Nothing
//! asks for a configuration below the snapshot (snapshots are only taken at applied indexes,
//! which are at or above it).

use std::collections::VecDeque;

use crate::error::Error;
use crate::types::{ConfState, Entry, EntryPayload, Index, SnapshotMeta, Term};

#[derive(Debug)]
pub(crate) struct RaftLog {
    /// The latest durable snapshot (taken here or installed from a leader).
    snapshot: SnapshotMeta,
    /// Where the log starts: index C and its term, `C <= snapshot.index`.
    start: (Index, Term),
    /// Entries `start.0 + 1 ..= last_index()`.
    entries: VecDeque<Entry>,
    /// Highest index known to be committed.
    pub committed: Index,
    /// Highest index the caller has applied (or will have applied once it finishes the current
    /// `Ready`).
    pub applied: Index,
    /// Highest index durable on this node's own storage.
    pub persisted: Index,
    /// A snapshot received from a leader, not yet handed out in a `Ready`.
    pub pending_snapshot: Option<SnapshotMeta>,
    /// Whether `pending_snapshot` has been handed out and awaits `advance`.
    snapshot_in_flight: bool,
    /// Configurations in log order: the first is the one in force at its index (between the log's
    /// start and the snapshot, see the module docs), each later one belongs to a configuration
    /// entry still in the log. The last one is in force.
    confs: Vec<(Index, ConfState)>,
    /// Planted bug `ack-unpersisted-after-snapshot`.
    #[cfg(feature = "planted-bugs")]
    pub(crate) plant_unstable_from_persisted: bool,
}

impl RaftLog {
    /// Rebuilds the log from what storage recovered.
    ///
    /// `entries` must be contiguous and start at or below `snapshot.index + 1`. Entries at or
    /// below the snapshot become the trailing log; they must then include the snapshot's last
    /// entry with the snapshot's term (they are committed, so they cannot disagree with it).
    pub(crate) fn recover(
        snapshot: Option<SnapshotMeta>,
        entries: Vec<Entry>,
        commit: Index,
        applied: Index,
    ) -> Result<Self, Error> {
        let snapshot = snapshot.unwrap_or_default();
        let mut entries = VecDeque::from(entries);
        // The log starts at the snapshot, or at the first recovered entry if that is not after
        // it: that entry's term is known, its predecessor's is not.
        let start = match entries.front() {
            Some(first) if first.index > snapshot.index + 1 => {
                return Err(Error::InvalidState(format!(
                    "recovered entries start at {}, leaving a gap after the snapshot at {}",
                    first.index, snapshot.index
                )));
            }
            Some(first) if first.index <= snapshot.index => {
                let start = (first.index, first.term);
                entries.pop_front();
                start
            }
            _ => (snapshot.index, snapshot.term),
        };
        let mut log = Self {
            confs: vec![(snapshot.index, snapshot.conf.clone())],
            start,
            entries: VecDeque::with_capacity(entries.len()),
            committed: snapshot.index,
            applied: snapshot.index,
            persisted: snapshot.index,
            pending_snapshot: None,
            snapshot_in_flight: false,
            snapshot,
            #[cfg(feature = "planted-bugs")]
            plant_unstable_from_persisted: false,
        };
        for entry in entries {
            if entry.index != log.last_index() + 1 {
                return Err(Error::InvalidState(format!(
                    "entry {} does not follow index {}",
                    entry.index,
                    log.last_index()
                )));
            }
            if entry.term < log.last_term() {
                return Err(Error::InvalidState(format!(
                    "entry {} has term {} below its predecessor's {}",
                    entry.index,
                    entry.term,
                    log.last_term()
                )));
            }
            log.push(entry);
        }
        if log.term(log.snapshot.index) != Some(log.snapshot.term) {
            return Err(Error::InvalidState(format!(
                "recovered entries from {} to {} disagree with the snapshot at {} of term {}",
                log.start.0,
                log.last_index(),
                log.snapshot.index,
                log.snapshot.term
            )));
        }
        log.persisted = log.last_index();
        // A persisted commit index beyond the log cannot be trusted; the leader will tell us again.
        log.committed = commit.clamp(log.snapshot.index, log.last_index());
        log.applied = applied.clamp(log.snapshot.index, log.committed);
        Ok(log)
    }

    fn push(&mut self, entry: Entry) {
        // Configuration entries at or below the base (recovered trailing entries) are history
        // already folded into the base.
        if let EntryPayload::Config { conf, .. } = &entry.payload
            && entry.index > self.confs[0].0
        {
            self.confs.push((entry.index, conf.clone()));
        }
        self.entries.push_back(entry);
    }

    pub(crate) fn snapshot(&self) -> &SnapshotMeta {
        &self.snapshot
    }

    /// The first index held in the log (the trailing log's first entry, if there is one).
    pub(crate) fn first_index(&self) -> Index {
        self.start.0 + 1
    }

    pub(crate) fn last_index(&self) -> Index {
        self.start.0 + self.entries.len() as u64
    }

    pub(crate) fn last_term(&self) -> Term {
        self.entries.back().map_or(self.start.1, |e| e.term)
    }

    /// The term of the entry at `index`; `None` if compacted or beyond the log.
    pub(crate) fn term(&self, index: Index) -> Option<Term> {
        if index == self.start.0 {
            return Some(self.start.1);
        }
        self.entry(index).map(|e| e.term)
    }

    fn entry(&self, index: Index) -> Option<&Entry> {
        let offset = index.checked_sub(self.first_index())?;
        self.entries.get(usize::try_from(offset).ok()?)
    }

    pub(crate) fn match_term(&self, index: Index, term: Term) -> bool {
        self.term(index) == Some(term)
    }

    /// §5.4.1: a candidate's log is at least as up-to-date as ours.
    pub(crate) fn is_up_to_date(&self, last_index: Index, last_term: Term) -> bool {
        (last_term, last_index) >= (self.last_term(), self.last_index())
    }

    /// The configuration in force.
    pub(crate) fn conf(&self) -> &ConfState {
        // `confs` always holds at least the snapshot's configuration.
        &self.confs[self.confs.len() - 1].1
    }

    /// The index of the latest configuration entry (or of the snapshot holding it).
    pub(crate) fn conf_index(&self) -> Index {
        self.confs[self.confs.len() - 1].0
    }

    /// The configuration in force at `index`; `None` below the history's base (see the module
    /// docs), which is never above the snapshot.
    pub(crate) fn conf_at(&self, index: Index) -> Option<ConfState> {
        self.confs
            .iter()
            .rev()
            .find(|(i, _)| *i <= index)
            .map(|(_, c)| c.clone())
    }

    /// Leader side: appends new entries of its own.
    pub(crate) fn append(&mut self, entries: impl IntoIterator<Item = Entry>) {
        for e in entries {
            debug_assert_eq!(e.index, self.last_index() + 1);
            self.push(e);
        }
    }

    /// Removes every entry at or after `index`, rolling back configurations that came with them.
    fn truncate_from(&mut self, index: Index) {
        let keep = index.saturating_sub(self.first_index());
        self.entries
            .truncate(usize::try_from(keep).unwrap_or(usize::MAX));
        while self.confs.len() > 1 && self.confs[self.confs.len() - 1].0 >= index {
            self.confs.pop();
        }
        self.persisted = self.persisted.min(index.saturating_sub(1));
    }

    /// The first entry of `entries` whose term differs from ours at its index (a conflict, or an
    /// entry we do not have yet); `None` if we already hold all of them.
    pub(crate) fn find_conflict(&self, entries: &[Entry]) -> Option<usize> {
        entries
            .iter()
            .position(|e| !self.match_term(e.index, e.term))
    }

    /// Follower side: stores `entries[from..]`, replacing a conflicting suffix. Returns false (and
    /// changes nothing) if that would remove a committed entry, which a correct leader never asks.
    pub(crate) fn store_from(&mut self, entries: &[Entry], from: usize) -> bool {
        let Some(first) = entries.get(from) else {
            return true;
        };
        if first.index <= self.committed || first.index < self.first_index() {
            return false;
        }
        if first.index <= self.last_index() {
            self.truncate_from(first.index);
        }
        if first.index != self.last_index() + 1 {
            return false;
        }
        for e in &entries[from..] {
            self.push(e.clone());
        }
        true
    }

    /// Fast back-off (etcd's `findConflictByTerm`): the largest index `<= index` whose term is at
    /// most `term`, with that term. Everything above it cannot match a log whose entry at `index`
    /// has `term`.
    pub(crate) fn find_conflict_by_term(&self, index: Index, term: Term) -> (Index, Term) {
        let mut i = index.min(self.last_index());
        loop {
            match self.term(i) {
                Some(t) if t > term => i -= 1,
                Some(t) => return (i, t),
                // Compacted: everything at or below the log's start is committed and matches.
                None => return (i, 0),
            }
        }
    }

    pub(crate) fn commit_to(&mut self, index: Index) -> bool {
        let index = index.min(self.last_index());
        if index > self.committed {
            self.committed = index;
            true
        } else {
            false
        }
    }

    /// Up to `max_bytes` of entries from `from` on (at least one if any).
    pub(crate) fn entries_from(&self, from: Index, max_bytes: u64) -> Vec<Entry> {
        let mut out = Vec::new();
        let mut size = 0;
        let mut index = from;
        while let Some(e) = self.entry(index) {
            size += e.size_hint();
            if !out.is_empty() && size > max_bytes {
                break;
            }
            out.push(e.clone());
            index += 1;
        }
        out
    }

    /// Entries not yet handed to the caller for persistence.
    ///
    /// They start after the persisted index or after the snapshot, whichever is later: after a
    /// snapshot from the leader is installed, `persisted` may still lie below it (the snapshot is
    /// durable only once its `Ready` is done), and entries appended behind the snapshot in the
    /// same `Ready` must go out with it. Starting at `persisted + 1` would find nothing there
    /// (compacted) and hand out no entries, while the acknowledgement of those entries still
    /// left after that `Ready`'s fsync: an acknowledged entry that is not on disk.
    pub(crate) fn unstable_entries(&self) -> Vec<Entry> {
        self.entries_from(self.unstable_from(), u64::MAX)
    }

    fn unstable_from(&self) -> Index {
        #[cfg(feature = "planted-bugs")]
        if self.plant_unstable_from_persisted {
            return self.persisted + 1;
        }
        self.persisted.max(self.snapshot.index) + 1
    }

    pub(crate) fn has_unstable(&self) -> bool {
        self.last_index() > self.persisted
    }

    /// Committed entries not yet handed out for applying.
    pub(crate) fn next_committed(&self) -> Vec<Entry> {
        if self.snapshot_in_flight || self.pending_snapshot.is_some() {
            return Vec::new();
        }
        let from = self.applied.max(self.snapshot.index) + 1;
        let to = self.committed.min(self.last_index());
        if from > to {
            return Vec::new();
        }
        self.entries_from(from, u64::MAX)
            .into_iter()
            .take_while(|e| e.index <= to)
            .collect()
    }

    pub(crate) fn has_next_committed(&self) -> bool {
        !self.snapshot_in_flight
            && self.pending_snapshot.is_none()
            && self.committed.min(self.last_index()) > self.applied.max(self.snapshot.index)
    }

    /// Takes a snapshot from the leader; the whole log is dropped and restarts after it.
    pub(crate) fn restore(&mut self, meta: SnapshotMeta) {
        self.entries.clear();
        self.start = (meta.index, meta.term);
        self.confs = vec![(meta.index, meta.conf.clone())];
        self.committed = meta.index;
        self.persisted = self.persisted.min(meta.index);
        self.snapshot = meta.clone();
        self.pending_snapshot = Some(meta);
    }

    /// Hands out the pending snapshot for persisting.
    pub(crate) fn take_pending_snapshot(&mut self) -> Option<SnapshotMeta> {
        let snap = self.pending_snapshot.take();
        if snap.is_some() {
            self.snapshot_in_flight = true;
        }
        snap
    }

    /// The caller finished a `Ready`: its snapshot and entries are durable, its committed entries
    /// applied.
    pub(crate) fn advance(
        &mut self,
        snapshot: Option<&SnapshotMeta>,
        last_stored: Option<(Index, Term)>,
        last_applied: Option<Index>,
    ) {
        if let Some(meta) = snapshot {
            self.snapshot_in_flight = false;
            if meta.index == self.snapshot.index {
                self.persisted = self.persisted.max(meta.index);
                self.applied = self.applied.max(meta.index);
            }
        }
        // Entries handed out may have been replaced meanwhile; only what still matches is durable.
        if let Some((index, term)) = last_stored
            && self.match_term(index, term)
            && index > self.persisted
        {
            self.persisted = index;
        }
        if let Some(index) = last_applied {
            self.applied = self.applied.max(index);
        }
    }

    /// Metadata for a snapshot of the state machine at `index`.
    pub(crate) fn snapshot_meta(&self, index: Index) -> Result<SnapshotMeta, Error> {
        if index > self.applied {
            return Err(Error::Unavailable(index));
        }
        let term = self.term(index).ok_or(Error::Compacted(index))?;
        let conf = self.conf_at(index).ok_or(Error::Compacted(index))?;
        Ok(SnapshotMeta { index, term, conf })
    }

    /// Records a durable snapshot at `index` and drops the entries up to `index - trailing`, but
    /// never moves the log's start back. Returns the new start: entries after it are kept.
    ///
    /// A snapshot at or below the current one changes nothing.
    pub(crate) fn compact(&mut self, index: Index, trailing: u64) -> Result<Index, Error> {
        if index <= self.snapshot.index {
            return Ok(self.start.0);
        }
        let meta = self.snapshot_meta(index)?;
        let start = index.saturating_sub(trailing).max(self.start.0);
        // `start` lies in `self.start.0 ..= index`, so its term is in the log.
        let start_term = self.term(start).ok_or(Error::Compacted(start))?;
        let drop = usize::try_from(start - self.start.0).unwrap_or(usize::MAX);
        self.entries.drain(..drop.min(self.entries.len()));
        self.start = (start, start_term);
        // The configuration in force at the new start becomes the base (unless the base already
        // lies above it), followed by the later ones.
        let base = start.max(self.confs[0].0);
        if let Some(conf) = self.conf_at(base) {
            let later = self.confs.iter().filter(|(i, _)| *i > base).cloned();
            self.confs = std::iter::once((base, conf)).chain(later).collect();
        }
        self.snapshot = meta;
        Ok(start)
    }
}
