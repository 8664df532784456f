//! Snapshot data: written as a stream, staged durably, committed atomically, read as a stream.
//!
//! The Raft core only ever sees [`SnapshotMeta`]; the bytes live here. The life of a snapshot:
//! 1. [`SnapshotStore::writer`] opens a [`SnapshotWriter`] (a temp file next to the committed ones,
//!    or a buffer for the in-memory store). The KV state machine writes a local snapshot into it, or
//!    the transport writes the chunks it receives from a leader.
//! 2. [`SnapshotWriter::finish`] appends a checksum trailer and fsyncs: the result is a
//!    [`StagedSnapshot`], durable but not yet part of the node's state. Dropping it deletes it.
//! 3. [`LogStorage::install_snapshot`](super::LogStorage::install_snapshot) commits it: rename to the
//!    final name, fsync the directory, record it in the log. Only then does it count; a crash before
//!    that leaves the old snapshot and log in force, and recovery deletes the leftover file.
//! 4. [`SnapshotStore::open`] gives a [`SnapshotReader`] over a committed snapshot (for the
//!    transport to send in chunks, or the state machine to restore from); it verifies the checksum
//!    when it reaches the end and fails the read if it does not match.
//!
//! The data's file format and the streams over it are `snapshot_stream.rs`; this file is the
//! store: where committed snapshots are, their names, and committing, listing, pruning and
//! recovering them. Committed files are named `{index:016x}-{term:016x}.snap`; the store keeps
//! the newest few (two by default) so that a transfer in progress can finish.

use std::collections::BTreeMap;
use std::fs;
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use raftkv_raft::{Index, SnapshotMeta, Term};

use crate::sync::lock;

use super::error::{Result, StorageError};
use super::fsutil;
use super::snapshot_stream::{
    HEADER_FIXED, SnapshotReader, SnapshotWriter, StagedData, StagedSnapshot,
};

const SUFFIX: &str = ".snap";
const TEMP_MARK: &str = ".snap.tmp-";

/// Numbers temp files so that two transfers of the same snapshot never share a file.
static TEMP_COUNTER: AtomicU64 = AtomicU64::new(0);
/// Where snapshot data lives. Cheap to clone and safe to share across threads: the transport holds
/// one to stream snapshots out and to receive them, while the storage thread owns the log.
#[derive(Clone, Debug)]
pub struct SnapshotStore {
    inner: StoreInner,
}

#[derive(Clone, Debug)]
enum StoreInner {
    Dir(Arc<PathBuf>),
    Memory(Arc<Mutex<MemSnapshots>>),
}

/// Committed in-memory snapshots by (index, term).
type MemSnapshots = BTreeMap<(Index, Term), (SnapshotMeta, Bytes)>;

impl SnapshotStore {
    /// A store that keeps snapshots in memory (for `MemStorage`, tests and the simulation).
    pub fn in_memory() -> Self {
        Self {
            inner: StoreInner::Memory(Arc::default()),
        }
    }

    /// A store of snapshot files in `dir` (which must exist).
    pub(crate) fn in_dir(dir: PathBuf) -> Self {
        Self {
            inner: StoreInner::Dir(Arc::new(dir)),
        }
    }

    /// Starts writing the data of the snapshot described by `meta`.
    pub fn writer(&self, meta: SnapshotMeta) -> Result<SnapshotWriter> {
        match &self.inner {
            StoreInner::Memory(_) => Ok(SnapshotWriter::in_memory(meta)),
            StoreInner::Dir(dir) => {
                let n = TEMP_COUNTER.fetch_add(1, Ordering::Relaxed);
                let name = format!(
                    "{}{TEMP_MARK}{}-{n}",
                    stem(meta.index, meta.term),
                    std::process::id()
                );
                SnapshotWriter::create_file(meta, dir.join(name), dir)
            }
        }
    }

    /// Opens the committed snapshot with `meta`'s index and term for reading.
    pub fn open(&self, meta: &SnapshotMeta) -> Result<SnapshotReader> {
        let not_found = || StorageError::SnapshotNotFound {
            index: meta.index,
            term: meta.term,
        };
        match &self.inner {
            StoreInner::Memory(map) => {
                let map = lock(map);
                let (meta, data) = map.get(&(meta.index, meta.term)).ok_or_else(not_found)?;
                Ok(SnapshotReader::memory(meta.clone(), data.clone()))
            }
            StoreInner::Dir(dir) => {
                let path = dir.join(format!("{}{SUFFIX}", stem(meta.index, meta.term)));
                if !path.exists() {
                    return Err(not_found());
                }
                let reader = SnapshotReader::open_file(&path)?;
                if reader.meta() != meta {
                    return Err(StorageError::corrupt(
                        &path,
                        HEADER_FIXED,
                        format!("header describes {:?}, expected {meta:?}", reader.meta()),
                    ));
                }
                Ok(reader)
            }
        }
    }

    /// The (index, term) of every committed snapshot, oldest first.
    pub fn list(&self) -> Result<Vec<(Index, Term)>> {
        match &self.inner {
            StoreInner::Memory(map) => Ok(lock(map).keys().copied().collect()),
            StoreInner::Dir(dir) => {
                let mut out: Vec<_> = list_dir(dir)?
                    .into_iter()
                    .filter_map(|f| match f {
                        DirFile::Committed { index, term, .. } => Some((index, term)),
                        DirFile::Temp(_) => None,
                    })
                    .collect();
                out.sort_unstable();
                Ok(out)
            }
        }
    }

    /// Makes a staged snapshot a committed one: atomically renamed into place and the directory
    /// fsynced (for files), or moved into the map (in memory).
    pub(crate) fn commit(&self, staged: StagedSnapshot) -> Result<()> {
        match (&self.inner, staged.data) {
            (StoreInner::Dir(dir), StagedData::File { temp, dir: from }) if from == **dir => {
                let target = dir.join(format!(
                    "{}{SUFFIX}",
                    stem(staged.meta.index, staged.meta.term)
                ));
                fs::rename(temp.path(), &target)
                    .map_err(StorageError::io("rename snapshot", temp.path()))?;
                temp.disarm();
                fsutil::sync_dir(dir)
            }
            (StoreInner::Dir(_), data) => {
                // Staged elsewhere (another directory, or memory): copy it into this store first.
                let staged = StagedSnapshot {
                    meta: staged.meta,
                    data,
                };
                let mut reader = staged.open_reader()?;
                let mut writer = self.writer(staged.meta.clone())?;
                io::copy(&mut reader, &mut writer)
                    .map_err(StorageError::io("copy snapshot", &staged_path(&staged)))?;
                self.commit(writer.finish()?)
            }
            (StoreInner::Memory(map), data) => {
                let staged = StagedSnapshot {
                    meta: staged.meta,
                    data,
                };
                let bytes = match &staged.data {
                    StagedData::Memory(b) => b.clone(),
                    StagedData::File { .. } => {
                        let mut v = Vec::new();
                        staged
                            .open_reader()?
                            .read_to_end(&mut v)
                            .map_err(StorageError::io("read snapshot", &staged_path(&staged)))?;
                        Bytes::from(v)
                    }
                };
                let key = (staged.meta.index, staged.meta.term);
                lock(map).insert(key, (staged.meta.clone(), bytes));
                Ok(())
            }
        }
    }

    /// Deletes committed snapshots other than `current` and the `keep - 1` newest others.
    pub(crate) fn prune(&self, keep: usize, current: (Index, Term)) -> Result<()> {
        let all = self.list()?;
        let doomed: Vec<_> = all
            .iter()
            .rev()
            .filter(|k| **k != current)
            .skip(keep.saturating_sub(1))
            .copied()
            .collect();
        match &self.inner {
            StoreInner::Memory(map) => {
                let mut map = lock(map);
                for k in doomed {
                    map.remove(&k);
                }
            }
            StoreInner::Dir(dir) => {
                // A reader that has the file open keeps reading it after the unlink.
                for (index, term) in doomed {
                    fsutil::remove_file(&dir.join(format!("{}{SUFFIX}", stem(index, term))))?;
                }
            }
        }
        Ok(())
    }

    /// Recovery of a snapshot directory after a restart, given the snapshot the log says is
    /// installed: deletes temp files and *orphans* (snapshots newer than the installed one, whose
    /// install did not reach the log before a crash), verifies the installed one end to end, and
    /// prunes old ones.
    pub(crate) fn recover(&self, current: &SnapshotMeta, keep: usize) -> Result<()> {
        let StoreInner::Dir(dir) = &self.inner else {
            return Ok(());
        };
        let mut removed = false;
        for f in list_dir(dir)? {
            match f {
                DirFile::Temp(path) => {
                    fsutil::remove_file(&path)?;
                    removed = true;
                }
                DirFile::Committed { index, term, path } => {
                    let orphan =
                        index > current.index || (index == current.index && term != current.term);
                    if orphan {
                        fsutil::remove_file(&path)?;
                        removed = true;
                    }
                }
            }
        }
        if removed {
            fsutil::sync_dir(dir)?;
        }
        if current.index > 0 {
            let mut reader = self.open(current)?;
            let path = dir.join(format!("{}{SUFFIX}", stem(current.index, current.term)));
            io::copy(&mut reader, &mut io::sink())
                .map_err(|e| StorageError::corrupt(&path, HEADER_FIXED, e.to_string()))?;
        }
        self.prune(keep, (current.index, current.term))
    }
}

fn stem(index: Index, term: Term) -> String {
    format!("{index:016x}-{term:016x}")
}

fn staged_path(s: &StagedSnapshot) -> PathBuf {
    match &s.data {
        StagedData::File { temp, .. } => temp.path().to_path_buf(),
        StagedData::Memory(_) => PathBuf::from("<memory>"),
    }
}

enum DirFile {
    Committed {
        index: Index,
        term: Term,
        path: PathBuf,
    },
    Temp(PathBuf),
}

/// The snapshot files in `dir`; other files are left alone.
fn list_dir(dir: &Path) -> Result<Vec<DirFile>> {
    let mut out = Vec::new();
    let entries = fs::read_dir(dir).map_err(StorageError::io("list", dir))?;
    for entry in entries {
        let entry = entry.map_err(StorageError::io("list", dir))?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if name.contains(TEMP_MARK) {
            out.push(DirFile::Temp(entry.path()));
        } else if let Some((index, term)) = parse_name(name) {
            out.push(DirFile::Committed {
                index,
                term,
                path: entry.path(),
            });
        }
    }
    Ok(out)
}

/// Parses `{index:016x}-{term:016x}.snap`.
fn parse_name(name: &str) -> Option<(Index, Term)> {
    let stem = name.strip_suffix(SUFFIX)?;
    let (index, term) = stem.split_once('-')?;
    if index.len() != 16 || term.len() != 16 {
        return None;
    }
    Some((
        u64::from_str_radix(index, 16).ok()?,
        u64::from_str_radix(term, 16).ok()?,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        let name = format!("{}{SUFFIX}", stem(0xabc, 7));
        assert_eq!(parse_name(&name), Some((0xabc, 7)));
        assert_eq!(
            parse_name("0000000000000abc-0000000000000007.snap.tmp-1-2"),
            None
        );
        assert_eq!(parse_name("abc-7.snap"), None);
    }
}
