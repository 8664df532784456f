//! Recovery: replaying a data directory's WAL segments at `open`.
//!
//! Segments are replayed in order. A bad frame in the last segment that has no valid frame anywhere
//! after it is a torn tail: it was never acknowledged, and the file is truncated there. Anything else
//! bad — a bad frame followed by valid ones, a bad frame in an older segment, a frame that verifies
//! but makes no sense — is corruption: `open` fails with [`StorageError::Corrupt`], which names the
//! file and the byte offset. Snapshot files newer than the last durable `Snapshot` record are
//! leftovers of an install cut short by a crash and are deleted; the installed one is verified.
//!

use std::fs::{self, OpenOptions};
use std::path::{Path, PathBuf};

use raftkv_raft::{Entry, HardState, Index, SnapshotMeta, Term};

use super::codec::{self, Reader};
use super::error::{BadRecord, Result, StorageError};
use super::fsutil;
use super::log::{Log, Termed};
use super::record::{self, ScanEnd};
use super::segment::{
    EntryLoc, KIND_ENTRY, KIND_HARD_STATE, KIND_HEADER, KIND_SNAPSHOT, Segment, SegmentName,
    WAL_MAGIC, WAL_VERSION,
};

/// An entry seen during replay: the entry (for the core) and where it is (for later reads).
pub(super) struct Replayed {
    pub(super) entry: Entry,
    pub(super) loc: EntryLoc,
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
pub(super) struct Replay {
    started: bool,
    pub(super) snapshot: SnapshotMeta,
    pub(super) hard_state: HardState,
    pub(super) log: Log<Replayed>,
    /// False while the log's start is a restart point after missing entries, not a snapshot.
    unverified_since: Option<(PathBuf, u64)>,
}

impl Replay {
    /// Replays one segment; returns it opened for appending, or `None` if it was the last one and
    /// held not even a complete header (a crash while creating it), in which case it is deleted.
    pub(super) fn segment(
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
            let mut d = Reader::new(frame.payload);
            if std::mem::take(&mut first) {
                if frame.kind != KIND_HEADER {
                    return Err(BadRecord::NoHeader);
                }
                header_end = Some(offset + (record::HEADER_LEN + 1 + frame.payload.len()) as u64);
                return self.header(&mut d, name.seq, &path);
            }
            match frame.kind {
                KIND_ENTRY => {
                    let entry = codec::get_entry(&mut d)?;
                    d.finish()?;
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
                    self.hard_state = codec::get_hard_state(&mut d)?;
                    Ok(d.finish()?)
                }
                KIND_SNAPSHOT => {
                    let meta = codec::get_snapshot_meta(&mut d)?;
                    let last = d.varint("snapshot record last index")?;
                    d.finish()?;
                    self.snapshot(meta, last)
                }
                KIND_HEADER => Err(BadRecord::HeaderInTheMiddle),
                kind => Err(BadRecord::UnknownKind(kind)),
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

    fn header(&mut self, d: &mut Reader<'_>, seq: u64, path: &Path) -> Result<(), BadRecord> {
        let mut magic = [0u8; 4];
        for b in &mut magic {
            *b = d.u8("segment magic")?;
        }
        if &magic != WAL_MAGIC {
            return Err(BadRecord::BadMagic);
        }
        let version = d.u8("segment version")?;
        if version != WAL_VERSION {
            return Err(BadRecord::UnsupportedVersion(version));
        }
        let header_seq = d.varint("segment seq")?;
        if header_seq != seq {
            return Err(BadRecord::SeqMismatch {
                header: header_seq,
                name: seq,
            });
        }
        let snapshot = codec::get_snapshot_meta(d)?;
        let hs = codec::get_hard_state(d)?;
        let last = d.varint("segment last index")?;
        d.finish()?;
        if last < snapshot.index {
            return Err(BadRecord::LogBelowSnapshot {
                last,
                snapshot: snapshot.index,
            });
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
            return Err(BadRecord::HeaderDisagrees);
        }
        Ok(())
    }

    fn entry(&mut self, entry: Entry, loc: EntryLoc, path: &Path) -> Result<(), BadRecord> {
        let index = entry.index;
        if index <= self.snapshot.index {
            return Err(BadRecord::EntryBelowSnapshot {
                index,
                snapshot: self.snapshot.index,
            });
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

    fn snapshot(&mut self, meta: SnapshotMeta, last: Index) -> Result<(), BadRecord> {
        if meta.index < self.snapshot.index {
            return Err(BadRecord::OlderSnapshot {
                index: meta.index,
                current: self.snapshot.index,
            });
        }
        let keep = last > meta.index;
        if keep && self.log.last_index() != last {
            return Err(BadRecord::KeptLogMismatch {
                last,
                log_last: self.log.last_index(),
            });
        }
        if keep && self.log.base() > meta.index {
            // The entries between this snapshot and the restart point were in compacted segments:
            // an older snapshot record, superseded by a later one that covers them (compaction
            // only deletes what a durable snapshot covers). Until then the log stays unverified.
            if self.unverified_since.is_none() {
                return Err(BadRecord::SnapshotBelowLogStart {
                    index: meta.index,
                    first: self.log.first_index(),
                });
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
    pub(super) fn finish(&self) -> Result<()> {
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
