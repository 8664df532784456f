//! [`DiskStorage`]: the Raft log, hard state and snapshots in a data directory, as a segmented
//! write-ahead log plus snapshot files.
//!
//! # Layout
//! ```text
//! <dir>/LOCK                                   held (flock) while a DiskStorage has the directory
//! <dir>/wal/{seq:016x}-{salt:08x}.wal          WAL segments, replayed in sequence order
//! <dir>/snap/{index:016x}-{term:016x}.snap     committed snapshots (see `snapshot`)
//! ```
//!
//! # Records
//! Every segment is a sequence of frames (`record`): length, CRC-32 seeded with the segment's
//! salt, type, payload. The types:
//! - `Header` (always first): format magic and version, the segment's sequence number, and the
//!   snapshot metadata, hard state and last log index in force when the segment was created.
//!   Because every segment starts with that state, the segments before it can be deleted once a
//!   durable snapshot covers their entries.
//! - `Entry`: one log entry. An entry whose index is at or below the last one replaces it and
//!   everything after it — replay applies the same rule as `append` did, so truncating a conflicting
//!   suffix needs no rewrite of old data, and it becomes durable with the very fsync that makes the
//!   new entries durable (DESIGN.md §6b).
//! - `HardState`: term, vote and commit.
//! - `Snapshot`: a snapshot was installed; carries its metadata and the log's last index just
//!   after the install, so replay knows whether the entries after the snapshot were kept.
//!
//! # Why the hard state lives in the WAL, not in a file of its own
//! A `Ready` usually carries new entries *and* a new hard state (the commit index moves on almost
//! every one). As WAL records, both become durable with one fsync — the whole point of group commit.
//! A separately, atomically replaced file would cost a write, an fsync, a rename and a directory
//! fsync on every change. The price is that the latest hard state may sit in an old segment, which is
//! why each segment header repeats it.
//!
//! # Durability
//! - `sync` is one `fdatasync` of the active segment: everything written since the last sync.
//! - A segment is rolled when it reaches `segment_size`: the old one is fsynced first (so only the
//!   last segment can ever have a torn tail), the new one is created with its header, fsynced, and
//!   the directory is fsynced (DESIGN.md §6b).
//! - A snapshot install renames its file into place and fsyncs the directory before the `Snapshot`
//!   record is written; only once that record is durable may older snapshot files be deleted.
//! - Compaction deletes whole segments only, only below a durable snapshot, oldest first.
//!
//! # Recovery
//! Replaying the segments at `open` is `replay.rs`: a torn tail of the last segment is truncated,
//! anything else bad is [`StorageError::Corrupt`] naming the file and the byte offset.
//!
//! The segment files themselves (names, header, record kinds) are `segment.rs`.
//!
//! Unix only: it relies on positional I/O, directory fsync and `flock`.

use std::fs::{self, File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use raftkv_raft::{Entry, EntryPayload, HardState, Index, SnapshotMeta, Term};

use super::codec::{self, Reader};
use super::contract::{LogStorage, RecoveredState};
use super::error::{Result, StorageError};
use super::fsutil;
use super::log::Log;
use super::record::{self, MAX_BODY_LEN};
use super::replay::Replay;
use super::segment::{
    EntryLoc, KIND_ENTRY, KIND_HARD_STATE, KIND_SNAPSHOT, Segment, create_segment, list_segments,
};
use super::snapshot::SnapshotStore;
use super::snapshot_stream::StagedSnapshot;

/// Tunables of a [`DiskStorage`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DiskOptions {
    /// A segment is closed and a new one started once it holds at least this many bytes. Larger
    /// segments mean fewer files and rolls; smaller ones let compaction free space sooner.
    pub segment_size: u64,
    /// How many committed snapshots to keep (at least 1): the installed one and older ones that a
    /// transfer to a follower may still be reading.
    pub keep_snapshots: usize,
}

impl Default for DiskOptions {
    fn default() -> Self {
        Self {
            segment_size: 64 << 20,
            keep_snapshots: 2,
        }
    }
}

/// Counters since `open`, for metrics and the benchmark.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DiskStats {
    /// Fsyncs of WAL segments (by `sync`, and of a full segment before a roll).
    pub syncs: u64,
    /// Bytes written to WAL segments.
    pub bytes_written: u64,
    /// Segments created.
    pub segments_created: u64,
    /// Segments deleted by compaction.
    pub segments_deleted: u64,
}

/// The on-disk [`LogStorage`]: a segmented write-ahead log and snapshot files (see the module docs).
#[derive(Debug)]
pub struct DiskStorage {
    dir: PathBuf,
    wal_dir: PathBuf,
    opts: DiskOptions,
    /// Holds the directory's `flock` for as long as this value lives.
    _lock: File,
    /// Never empty; the last one is the one being written.
    segments: Vec<Segment>,
    log: Log<EntryLoc>,
    snapshot: SnapshotMeta,
    hard_state: HardState,
    store: SnapshotStore,
    /// Frames encoded for the active segment but not yet written.
    buf: Vec<u8>,
    /// Bytes were written to the active segment since its last fsync.
    dirty: bool,
    /// A snapshot was installed since the last sync: prune old snapshot files after the next one.
    prune_pending: bool,
    /// Set by the first failed write or fsync; every later call fails with it.
    poisoned: Option<Arc<StorageError>>,
    stats: DiskStats,
}

impl DiskStorage {
    /// Opens (creating if needed) the data directory `dir`, recovers what is in it, and returns
    /// the storage and the state to start the Raft core from.
    ///
    /// Fails with [`StorageError::Corrupt`] (naming file and offset) if the data is damaged
    /// beyond a torn tail, and with [`StorageError::Locked`] if the directory is in use.
    pub fn open(dir: impl AsRef<Path>, opts: DiskOptions) -> Result<(Self, RecoveredState)> {
        let dir = dir.as_ref().to_path_buf();
        let opts = DiskOptions {
            keep_snapshots: opts.keep_snapshots.max(1),
            segment_size: opts.segment_size.max(1),
        };
        fsutil::ensure_dir(&dir)?;
        let lock = lock_dir(&dir)?;
        let wal_dir = dir.join("wal");
        let snap_dir = dir.join("snap");
        fsutil::ensure_dir(&wal_dir)?;
        fsutil::ensure_dir(&snap_dir)?;

        let mut names = list_segments(&wal_dir)?;
        // Only the trailing run of consecutive sequence numbers is the log. Older files before a
        // gap are leftovers of a compaction that a crash interrupted after deleting later ones;
        // they are deleted below, but only once the run replayed without error: if a segment was
        // lost instead, replay fails and every file is left for a human to look at.
        let run_start = (1..names.len())
            .rev()
            .find(|&i| names[i - 1].seq + 1 != names[i].seq)
            .unwrap_or(0);
        let stale: Vec<_> = names.drain(..run_start).collect();

        let mut replay = Replay::default();
        let mut segments = Vec::with_capacity(names.len());
        let next_seq = names.last().map_or(1, |n| n.seq + 1);
        let count = names.len();
        for (i, name) in names.into_iter().enumerate() {
            let is_last = i + 1 == count;
            if let Some(segment) = replay.segment(name, is_last, &wal_dir)? {
                segments.push(segment);
            }
        }
        replay.finish()?;
        for s in &stale {
            fsutil::remove_file(&s.path)?;
        }
        if !stale.is_empty() {
            fsutil::sync_dir(&wal_dir)?;
        }

        let mut stats = DiskStats::default();
        if segments.is_empty() {
            let seg = create_segment(
                &wal_dir,
                next_seq,
                &replay.snapshot,
                &replay.hard_state,
                replay.log.last_index(),
            )?;
            stats.segments_created += 1;
            segments.push(seg);
        }

        let store = SnapshotStore::in_dir(snap_dir);
        store.recover(&replay.snapshot, opts.keep_snapshots)?;

        let entries: Vec<Entry> = replay.log.items().iter().map(|r| r.entry.clone()).collect();
        let recovered = RecoveredState {
            hard_state: replay.hard_state,
            snapshot: (replay.snapshot.index > 0).then(|| replay.snapshot.clone()),
            entries,
        };
        let storage = Self {
            dir,
            wal_dir,
            opts,
            _lock: lock,
            segments,
            log: replay.log.map(|r| r.loc),
            snapshot: replay.snapshot,
            hard_state: replay.hard_state,
            store,
            buf: Vec::new(),
            dirty: false,
            prune_pending: false,
            poisoned: None,
            stats,
        };
        Ok((storage, recovered))
    }

    /// The data directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The options in force (after clamping to sane minimums).
    pub fn options(&self) -> &DiskOptions {
        &self.opts
    }

    /// Counters since `open`.
    pub fn stats(&self) -> DiskStats {
        self.stats
    }

    /// The paths of the live WAL segments, oldest first.
    pub fn segment_paths(&self) -> Vec<PathBuf> {
        self.segments.iter().map(|s| s.path.clone()).collect()
    }

    fn check_poisoned(&self) -> Result<()> {
        match &self.poisoned {
            Some(e) => Err(StorageError::Poisoned(e.clone())),
            None => Ok(()),
        }
    }

    /// Records the first failure of a write path: after it, the on-disk state is unknown.
    fn poison_on_err<T>(&mut self, r: Result<T>) -> Result<T> {
        if let Err(e) = &r {
            self.poisoned.get_or_insert_with(|| Arc::new(e.clone()));
        }
        r
    }

    fn active(&self) -> &Segment {
        // `segments` is never empty: `open` creates one and compaction keeps the last.
        &self.segments[self.segments.len() - 1]
    }

    fn active_mut(&mut self) -> &mut Segment {
        let last = self.segments.len() - 1;
        &mut self.segments[last]
    }

    /// Encodes one frame for the active segment (rolling first if it is full), returning the
    /// frame's sequence number, offset and length.
    fn frame(&mut self, kind: u8, payload: impl FnOnce(&mut Vec<u8>)) -> Result<(u64, u64, u32)> {
        let pending = self.active().size + self.buf.len() as u64;
        if pending >= self.opts.segment_size && pending > self.active().header_end {
            self.flush()?;
            self.roll()?;
        }
        let seg = self.active();
        let (seq, salt) = (seg.seq, seg.salt);
        let offset = seg.size + self.buf.len() as u64;
        let len = record::put_frame(&mut self.buf, salt, kind, payload).map_err(|len| {
            StorageError::RecordTooLarge {
                len: len as u64,
                max: MAX_BODY_LEN as u64,
            }
        })?;
        // A frame is at most MAX_BODY_LEN plus a header, which fits in u32.
        Ok((seq, offset, len as u32))
    }

    /// Writes the encoded frames to the active segment (into the page cache; `sync` makes them
    /// durable). One positional write per call keeps the system call count per batch at one.
    fn flush(&mut self) -> Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let seg = self.active();
        seg.file
            .write_all_at(&self.buf, seg.size)
            .map_err(StorageError::io("write", &seg.path))?;
        let n = self.buf.len() as u64;
        self.active_mut().size += n;
        self.stats.bytes_written += n;
        self.buf.clear();
        self.dirty = true;
        Ok(())
    }

    /// Fsyncs the active segment if anything was written to it since the last fsync.
    fn sync_active(&mut self) -> Result<()> {
        if self.dirty {
            let seg = self.active();
            seg.file
                .sync_data()
                .map_err(StorageError::io("fsync", &seg.path))?;
            self.dirty = false;
            self.stats.syncs += 1;
        }
        Ok(())
    }

    /// Seals the active segment and starts the next one.
    fn roll(&mut self) -> Result<()> {
        // The full segment is made durable first, so that a torn write can only ever be in the
        // last segment: recovery treats a bad record in any other segment as corruption.
        self.sync_active()?;
        let seq = self.active().seq + 1;
        let last = self.log.last_index();
        let seg = create_segment(&self.wal_dir, seq, &self.snapshot, &self.hard_state, last)?;
        self.segments.push(seg);
        self.stats.segments_created += 1;
        Ok(())
    }

    fn append_inner(&mut self, entries: &[Entry]) -> Result<()> {
        for e in entries {
            let (seq, offset, len) = self.frame(KIND_ENTRY, |b| codec::put_entry(b, e))?;
            self.log.push(
                e.index,
                EntryLoc {
                    term: e.term,
                    seq,
                    offset,
                    len,
                },
            );
            let seg = self.active_mut();
            seg.max_index = seg.max_index.max(e.index);
        }
        self.flush()
    }

    fn install_inner(&mut self, staged: StagedSnapshot) -> Result<()> {
        let meta = staged.meta().clone();
        self.store.commit(staged)?;
        let keep = self.log.snapshot_keeps_suffix(meta.index, meta.term);
        let last = if keep {
            self.log.last_index()
        } else {
            meta.index
        };
        // Encode before changing the in-memory state: if this frame rolls the segment, the new
        // header must describe the state before the install, which the record then changes.
        self.frame(KIND_SNAPSHOT, |b| {
            codec::put_snapshot_meta(b, &meta);
            codec::put_varint(b, last);
        })?;
        self.flush()?;
        self.log.rebase(meta.index, meta.term, keep);
        self.snapshot = meta;
        self.prune_pending = true;
        Ok(())
    }

    fn sync_inner(&mut self) -> Result<()> {
        self.flush()?;
        self.sync_active()?;
        if self.prune_pending {
            // The `Snapshot` record is durable now; older snapshot files are no longer needed.
            self.store.prune(
                self.opts.keep_snapshots,
                (self.snapshot.index, self.snapshot.term),
            )?;
            self.prune_pending = false;
        }
        Ok(())
    }

    fn compact_inner(&mut self, upto: Index) -> Result<()> {
        // Deleting a segment is safe only once the snapshot that covers it is durable.
        self.sync_inner()?;
        let live = self.segments.len() - 1;
        let n = self.segments[..live]
            .iter()
            .take_while(|s| s.max_index <= upto)
            .count();
        if n == 0 {
            return Ok(());
        }
        // Oldest first, so that a crash halfway leaves a contiguous run (recovery drops any
        // older leftovers before a gap).
        for seg in self.segments.drain(..n) {
            fsutil::remove_file(&seg.path)?;
            self.stats.segments_deleted += 1;
        }
        fsutil::sync_dir(&self.wal_dir)
    }

    /// Reads one entry back from its frame.
    fn read_entry(&self, index: Index, loc: &EntryLoc) -> Result<Entry> {
        let Ok(i) = self.segments.binary_search_by_key(&loc.seq, |s| s.seq) else {
            return Err(StorageError::Compacted(index));
        };
        let seg = &self.segments[i];
        let mut buf = vec![0u8; loc.len as usize];
        seg.file
            .read_exact_at(&mut buf, loc.offset)
            .map_err(StorageError::io("read", &seg.path))?;
        let corrupt = |why: &str| StorageError::corrupt(&seg.path, loc.offset, why);
        let (frame, _) = record::parse_frame(&buf, 0, seg.salt).map_err(corrupt)?;
        if frame.kind != KIND_ENTRY {
            return Err(corrupt("expected an entry record"));
        }
        let mut d = Reader::new(frame.payload);
        let entry = codec::get_entry(&mut d)
            .and_then(|e| d.finish().map(|()| e))
            .map_err(|e| corrupt(&e.to_string()))?;
        if entry.index != index {
            return Err(corrupt(&format!(
                "expected entry {index}, found {}",
                entry.index
            )));
        }
        Ok(entry)
    }
}

/// A conservative bound on the encoded size of an entry, to refuse oversize entries before
/// anything is written (so that a refusal leaves the storage unchanged).
fn encoded_bound(e: &Entry) -> u64 {
    64 + match &e.payload {
        EntryPayload::Noop => 0,
        EntryPayload::Normal(data) => data.len() as u64,
        EntryPayload::Config { change, conf } => {
            change.as_ref().map_or(0, |c| 32 + c.context.len() as u64)
                + 10 * (conf.voters.len() + conf.learners.len()) as u64
        }
    }
}

impl LogStorage for DiskStorage {
    fn append(&mut self, entries: &[Entry]) -> Result<()> {
        self.check_poisoned()?;
        self.log.check_append(entries.iter().map(|e| e.index))?;
        if let Some(len) = entries
            .iter()
            .map(encoded_bound)
            .find(|&n| n > MAX_BODY_LEN as u64)
        {
            return Err(StorageError::RecordTooLarge {
                len,
                max: MAX_BODY_LEN as u64,
            });
        }
        let r = self.append_inner(entries);
        self.poison_on_err(r)
    }

    fn set_hard_state(&mut self, hs: HardState) -> Result<()> {
        self.check_poisoned()?;
        if hs == self.hard_state {
            return Ok(());
        }
        let r = self
            .frame(KIND_HARD_STATE, |b| codec::put_hard_state(b, &hs))
            .and_then(|_| self.flush());
        if r.is_ok() {
            self.hard_state = hs;
        }
        self.poison_on_err(r)
    }

    fn install_snapshot(&mut self, snapshot: StagedSnapshot) -> Result<()> {
        self.check_poisoned()?;
        let offered = snapshot.meta().index;
        if offered <= self.snapshot.index {
            return Err(StorageError::StaleSnapshot {
                installed: self.snapshot.index,
                offered,
            });
        }
        let r = self.install_inner(snapshot);
        self.poison_on_err(r)
    }

    fn compact(&mut self, upto: Index) -> Result<()> {
        self.check_poisoned()?;
        if upto > self.snapshot.index {
            return Err(StorageError::CompactBeyondSnapshot {
                upto,
                snapshot: self.snapshot.index,
            });
        }
        let r = self.compact_inner(upto);
        self.poison_on_err(r)
    }

    fn sync(&mut self) -> Result<()> {
        self.check_poisoned()?;
        let r = self.sync_inner();
        self.poison_on_err(r)
    }

    fn hard_state(&self) -> HardState {
        self.hard_state
    }

    fn snapshot_meta(&self) -> Option<SnapshotMeta> {
        (self.snapshot.index > 0).then(|| self.snapshot.clone())
    }

    fn first_index(&self) -> Index {
        self.log.first_index()
    }

    fn last_index(&self) -> Index {
        self.log.last_index()
    }

    fn term(&self, index: Index) -> Result<Term> {
        if index < self.log.base() {
            return Err(StorageError::Compacted(index));
        }
        self.log.term(index).ok_or(StorageError::Unavailable(index))
    }

    fn entries(&self, lo: Index, hi: Index) -> Result<Vec<Entry>> {
        let locs = self.log.slice(lo, hi)?;
        locs.iter()
            .zip(lo..)
            .map(|(loc, index)| self.read_entry(index, loc))
            .collect()
    }

    fn snapshot_store(&self) -> SnapshotStore {
        self.store.clone()
    }
}

/// Takes the directory's lock, so that two processes never write one log.
fn lock_dir(dir: &Path) -> Result<File> {
    let path = dir.join("LOCK");
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(StorageError::io("open", &path))?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(fs::TryLockError::WouldBlock) => Err(StorageError::Locked { path }),
        Err(fs::TryLockError::Error(e)) => Err(StorageError::io("lock", &path)(e)),
    }
}
