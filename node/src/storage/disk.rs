//! `DiskStorage`: the Raft log, hard state and snapshots in a data directory, as a segmented
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
//! Segments are replayed in order. A bad frame in the last segment that has no valid frame anywhere
//! after it is a torn tail: it was never acknowledged, and the file is truncated there. Anything else
//! bad — a bad frame followed by valid ones, a bad frame in an older segment, a frame that verifies
//! but makes no sense — is corruption: `open` fails with [`StorageError::Corrupt`], which names the
//! file and the byte offset. Snapshot files newer than the last durable `Snapshot` record are
//! leftovers of an install cut short by a crash and are deleted; the installed one is verified.
//!
//! Unix only: it relies on positional I/O, directory fsync and `flock`.

use std::collections::hash_map::RandomState;
use std::fs::{self, File, OpenOptions};
use std::hash::{BuildHasher, Hasher};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use raftkv_raft::{Entry, EntryPayload, HardState, Index, SnapshotMeta, Term};

use super::codec::{self, Decoder};
use super::error::{Result, StorageError};
use super::fsutil;
use super::log::{Log, Termed};
use super::record::{self, MAX_BODY_LEN, ScanEnd};
use super::snapshot::{SnapshotStore, StagedSnapshot};
use super::{LogStorage, RecoveredState};

// Record types; all must be at most `record::MAX_KIND`.
const KIND_HEADER: u8 = 1;
const KIND_ENTRY: u8 = 2;
const KIND_HARD_STATE: u8 = 3;
const KIND_SNAPSHOT: u8 = 4;

const WAL_MAGIC: &[u8; 4] = b"RKVW";
const WAL_VERSION: u8 = 1;

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

/// Where an entry's frame is: enough to read it back, and its term for the log's rules.
#[derive(Clone, Copy, Debug)]
struct EntryLoc {
    term: Term,
    seq: u64,
    offset: u64,
    len: u32,
}

impl Termed for EntryLoc {
    fn term(&self) -> Term {
        self.term
    }
}

/// One WAL file.
#[derive(Debug)]
struct Segment {
    seq: u64,
    salt: u32,
    path: PathBuf,
    file: File,
    /// Bytes of valid frames (the file's length, after recovery truncated any torn tail).
    size: u64,
    /// Where the header frame ends: a segment this size holds nothing yet.
    header_end: u64,
    /// The highest entry index written in this segment (0 if none): compaction may delete the
    /// segment once a durable snapshot covers it.
    max_index: Index,
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
            codec::put_u64(b, last);
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
        let mut d = Decoder::new(frame.payload);
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

/// A segment file found on disk.
struct SegmentName {
    seq: u64,
    salt: u32,
    path: PathBuf,
}

/// The segment files in `dir`, in sequence order. Other files are ignored.
fn list_segments(dir: &Path) -> Result<Vec<SegmentName>> {
    let mut out = Vec::new();
    for entry in fs::read_dir(dir).map_err(StorageError::io("list", dir))? {
        let entry = entry.map_err(StorageError::io("list", dir))?;
        let name = entry.file_name();
        let Some(parsed) = name.to_str().and_then(parse_segment_name) else {
            continue;
        };
        out.push(SegmentName {
            seq: parsed.0,
            salt: parsed.1,
            path: entry.path(),
        });
    }
    out.sort_unstable_by_key(|s| s.seq);
    Ok(out)
}

fn segment_name(seq: u64, salt: u32) -> String {
    format!("{seq:016x}-{salt:08x}.wal")
}

fn parse_segment_name(name: &str) -> Option<(u64, u32)> {
    let (seq, salt) = name.strip_suffix(".wal")?.split_once('-')?;
    if seq.len() != 16 || salt.len() != 8 {
        return None;
    }
    Some((
        u64::from_str_radix(seq, 16).ok()?,
        u32::from_str_radix(salt, 16).ok()?,
    ))
}

/// A salt for a new segment's checksums. It need not be secret, only unpredictable to clients
/// and different between segments; `RandomState` is seeded by the OS.
fn random_salt() -> u32 {
    let mut h = RandomState::new().build_hasher();
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    h.write_u128(nanos);
    let v = h.finish();
    (v ^ (v >> 32)) as u32
}

/// Creates segment `seq` holding only its header, durably (file and directory fsynced).
fn create_segment(
    wal_dir: &Path,
    seq: u64,
    snapshot: &SnapshotMeta,
    hs: &HardState,
    last_index: Index,
) -> Result<Segment> {
    let salt = random_salt();
    let path = wal_dir.join(segment_name(seq, salt));
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .open(&path)
        .map_err(StorageError::io("create", &path))?;
    let mut buf = Vec::new();
    record::put_frame(&mut buf, salt, KIND_HEADER, |b| {
        b.extend_from_slice(WAL_MAGIC);
        b.push(WAL_VERSION);
        codec::put_u64(b, seq);
        codec::put_snapshot_meta(b, snapshot);
        codec::put_hard_state(b, hs);
        codec::put_u64(b, last_index);
    })
    .map_err(|len| StorageError::RecordTooLarge {
        len: len as u64,
        max: MAX_BODY_LEN as u64,
    })?;
    file.write_all_at(&buf, 0)
        .map_err(StorageError::io("write", &path))?;
    file.sync_all().map_err(StorageError::io("fsync", &path))?;
    fsutil::sync_dir(wal_dir)?;
    let size = buf.len() as u64;
    Ok(Segment {
        seq,
        salt,
        path,
        file,
        size,
        header_end: size,
        max_index: 0,
    })
}

/// An entry seen during replay: the entry (for the core) and where it is (for later reads).
struct Replayed {
    entry: Entry,
    loc: EntryLoc,
}

impl Termed for Replayed {
    fn term(&self) -> Term {
        self.entry.term
    }
}

/// The state rebuilt by replaying the segments in order.
///
/// Compaction deletes old segments, so replay starts from the header of the oldest one left and
/// may then meet entries that continue a log whose beginning is gone (their predecessors were in
/// deleted segments). Such a stretch is *unverified*; a later `Snapshot` record must cover the
/// missing part, or the log has a real hole and recovery fails.
#[derive(Default)]
struct Replay {
    started: bool,
    snapshot: SnapshotMeta,
    hard_state: HardState,
    log: Log<Replayed>,
    /// False while the log's start is a restart point after missing entries, not a snapshot.
    unverified_since: Option<(PathBuf, u64)>,
}

impl Replay {
    /// Replays one segment; returns it opened for appending, or `None` if it was the last one and
    /// held not even a complete header (a crash while creating it), in which case it is deleted.
    fn segment(
        &mut self,
        name: SegmentName,
        is_last: bool,
        wal_dir: &Path,
    ) -> Result<Option<Segment>> {
        let path = name.path;
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
            .map_err(StorageError::io("open", &path))?;
        let buf = fs::read(&path).map_err(StorageError::io("read", &path))?;
        let mut header_end = None;
        let mut max_index: Index = 0;
        let mut first = true;
        let end = record::scan(&buf, 0, name.salt, |frame| {
            let offset = frame.offset as u64;
            let mut d = Decoder::new(frame.payload);
            if std::mem::take(&mut first) {
                if frame.kind != KIND_HEADER {
                    return Err("segment does not start with a header record".into());
                }
                header_end = Some(offset + (record::HEADER_LEN + 1 + frame.payload.len()) as u64);
                return self.header(&mut d, name.seq, &path);
            }
            match frame.kind {
                KIND_ENTRY => {
                    let entry = codec::get_entry(&mut d).map_err(|e| e.to_string())?;
                    d.finish().map_err(|e| e.to_string())?;
                    max_index = max_index.max(entry.index);
                    let loc = EntryLoc {
                        term: entry.term,
                        seq: name.seq,
                        offset,
                        len: (record::HEADER_LEN + 1 + frame.payload.len()) as u32,
                    };
                    self.entry(entry, loc, &path)
                }
                KIND_HARD_STATE => {
                    self.hard_state = codec::get_hard_state(&mut d).map_err(|e| e.to_string())?;
                    d.finish().map_err(|e| e.to_string())
                }
                KIND_SNAPSHOT => {
                    let meta = codec::get_snapshot_meta(&mut d).map_err(|e| e.to_string())?;
                    let last = d.u64().map_err(|e| e.to_string())?;
                    d.finish().map_err(|e| e.to_string())?;
                    self.snapshot(meta, last)
                }
                KIND_HEADER => Err("a header record in the middle of a segment".into()),
                kind => Err(format!("unknown record type {kind}")),
            }
        });
        let size = match end {
            ScanEnd::Clean => buf.len() as u64,
            ScanEnd::Corrupt { offset, reason } => {
                return Err(StorageError::corrupt(&path, offset as u64, reason));
            }
            ScanEnd::Torn { offset } if !is_last => {
                return Err(StorageError::corrupt(
                    &path,
                    offset as u64,
                    "bad record at the end of a sealed segment (it was fsynced before the next \
                     segment was created, so this is not a torn write)",
                ));
            }
            ScanEnd::Torn { offset } => {
                // Never acknowledged: cut it off, durably, before anything is appended after it.
                file.set_len(offset as u64)
                    .and_then(|()| file.sync_all())
                    .map_err(StorageError::io("truncate torn tail", &path))?;
                offset as u64
            }
        };
        let Some(header_end) = header_end else {
            // Only possible for a last segment cut inside its header (anything else is Corrupt
            // above): it never held a record, so it can go.
            drop(file);
            fsutil::remove_file(&path)?;
            fsutil::sync_dir(wal_dir)?;
            return Ok(None);
        };
        Ok(Some(Segment {
            seq: name.seq,
            salt: name.salt,
            path,
            file,
            size,
            header_end,
            max_index,
        }))
    }

    fn header(&mut self, d: &mut Decoder<'_>, seq: u64, path: &Path) -> Result<(), String> {
        let mut magic = [0u8; 4];
        for b in &mut magic {
            *b = d.u8().map_err(|e| e.to_string())?;
        }
        if &magic != WAL_MAGIC {
            return Err("bad segment magic".into());
        }
        let version = d.u8().map_err(|e| e.to_string())?;
        if version != WAL_VERSION {
            return Err(format!("unsupported WAL format version {version}"));
        }
        let header_seq = d.u64().map_err(|e| e.to_string())?;
        if header_seq != seq {
            return Err(format!(
                "header says segment {header_seq}, file name says {seq}"
            ));
        }
        let snapshot = codec::get_snapshot_meta(d).map_err(|e| e.to_string())?;
        let hs = codec::get_hard_state(d).map_err(|e| e.to_string())?;
        let last = d.u64().map_err(|e| e.to_string())?;
        d.finish_ref().map_err(|e| e.to_string())?;
        if last < snapshot.index {
            return Err(format!(
                "header says the log ends at {last}, below its snapshot at {}",
                snapshot.index
            ));
        }
        if !self.started {
            // The oldest segment left: its header is where replay starts. Entries after the
            // snapshot up to `last` were in segments compaction deleted (or, for the very first
            // segment, there are none): unknown until a later snapshot record covers them.
            self.started = true;
            if last > snapshot.index {
                self.log = Log::empty(last, 0);
                self.unverified_since = Some((path.to_path_buf(), 0));
            } else {
                self.log = Log::empty(snapshot.index, snapshot.term);
            }
            self.snapshot = snapshot;
            self.hard_state = hs;
        } else if snapshot != self.snapshot
            || hs != self.hard_state
            || last != self.log.last_index()
        {
            return Err("header disagrees with the state replayed from earlier segments".into());
        }
        Ok(())
    }

    fn entry(&mut self, entry: Entry, loc: EntryLoc, path: &Path) -> Result<(), String> {
        let index = entry.index;
        if index <= self.snapshot.index {
            return Err(format!(
                "entry {index} is at or below the snapshot at {}",
                self.snapshot.index
            ));
        }
        let gap = index > self.log.last_index() + 1;
        let below_restart = self.unverified_since.is_some() && index <= self.log.base();
        if gap || below_restart {
            // The entries before this one were in compacted segments (see the type's docs).
            self.log.reset(index - 1, 0);
            self.unverified_since = Some((path.to_path_buf(), loc.offset));
        }
        self.log.push(index, Replayed { entry, loc });
        Ok(())
    }

    fn snapshot(&mut self, meta: SnapshotMeta, last: Index) -> Result<(), String> {
        if meta.index < self.snapshot.index {
            return Err(format!(
                "snapshot record at {} is older than the snapshot at {}",
                meta.index, self.snapshot.index
            ));
        }
        let keep = last > meta.index;
        if keep && self.log.last_index() != last {
            return Err(format!(
                "snapshot record keeps the log up to {last}, but the replayed log ends at {}",
                self.log.last_index()
            ));
        }
        if keep && self.log.base() > meta.index {
            // The entries between this snapshot and the restart point were in compacted segments:
            // an older snapshot record, superseded by a later one that covers them (compaction
            // only deletes what a durable snapshot covers). Until then the log stays unverified.
            if self.unverified_since.is_none() {
                return Err(format!(
                    "snapshot record at {} is below the log's start at {}",
                    meta.index,
                    self.log.first_index()
                ));
            }
            self.snapshot = meta;
            return Ok(());
        }
        self.log.rebase(meta.index, meta.term, keep);
        self.unverified_since = None;
        self.snapshot = meta;
        Ok(())
    }

    /// Final checks once every segment is replayed.
    fn finish(&self) -> Result<()> {
        match &self.unverified_since {
            None => Ok(()),
            Some((path, offset)) => Err(StorageError::corrupt(
                path,
                *offset,
                format!(
                    "entries before index {} are missing (a WAL segment was lost)",
                    self.log.first_index()
                ),
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segment_names_round_trip() {
        let name = segment_name(42, 0xdead_beef);
        assert_eq!(parse_segment_name(&name), Some((42, 0xdead_beef)));
        assert_eq!(parse_segment_name("42-deadbeef.wal"), None);
        assert_eq!(
            parse_segment_name("000000000000002a-deadbeef.wal.bak"),
            None
        );
    }

    #[test]
    fn salts_differ() {
        assert_ne!(random_salt(), random_salt());
    }
}
