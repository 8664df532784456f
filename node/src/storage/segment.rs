//! WAL segment files: their names (`{seq:016x}-{salt:08x}.wal`), the record kinds, the header
//! every segment starts with, and where an entry's frame lies in one.
//!
//! A segment's header repeats the snapshot metadata, hard state and last log index in force when
//! it was created, so the segments before it can be deleted once a durable snapshot covers their
//! entries (see `disk.rs`). Each segment has its own random salt, which seeds the CRC of every
//! frame in it: a frame left over from an older file at the same offset never verifies.

use std::collections::hash_map::RandomState;
use std::fs::{self, File, OpenOptions};
use std::hash::{BuildHasher, Hasher};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use raftkv_raft::{HardState, Index, SnapshotMeta, Term};

use super::codec;
use super::error::{Result, StorageError};
use super::fsutil;
use super::log::Termed;
use super::record::{self, MAX_BODY_LEN};

// Record types; all must be at most `record::MAX_KIND`.
pub(super) const KIND_HEADER: u8 = 1;
pub(super) const KIND_ENTRY: u8 = 2;
pub(super) const KIND_HARD_STATE: u8 = 3;
pub(super) const KIND_SNAPSHOT: u8 = 4;

pub(super) const WAL_MAGIC: &[u8; 4] = b"RKVW";
pub(super) const WAL_VERSION: u8 = 1;

/// Where an entry's frame is: enough to read it back, and its term for the log's rules.
#[derive(Clone, Copy, Debug)]
pub(super) struct EntryLoc {
    pub(super) term: Term,
    pub(super) seq: u64,
    pub(super) offset: u64,
    pub(super) len: u32,
}

impl Termed for EntryLoc {
    fn term(&self) -> Term {
        self.term
    }
}

/// One WAL file.
#[derive(Debug)]
pub(super) struct Segment {
    pub(super) seq: u64,
    pub(super) salt: u32,
    pub(super) path: PathBuf,
    pub(super) file: File,
    /// Bytes of valid frames (the file's length, after recovery truncated any torn tail).
    pub(super) size: u64,
    /// Where the header frame ends: a segment this size holds nothing yet.
    pub(super) header_end: u64,
    /// The highest entry index written in this segment (0 if none): compaction may delete the
    /// segment once a durable snapshot covers it.
    pub(super) max_index: Index,
}

/// A segment file found on disk.
pub(super) struct SegmentName {
    pub(super) seq: u64,
    pub(super) salt: u32,
    pub(super) path: PathBuf,
}

/// The segment files in `dir`, in sequence order. Other files are ignored.
pub(super) fn list_segments(dir: &Path) -> Result<Vec<SegmentName>> {
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
pub(super) fn create_segment(
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
        codec::put_varint(b, seq);
        codec::put_snapshot_meta(b, snapshot);
        codec::put_hard_state(b, hs);
        codec::put_varint(b, last_index);
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
