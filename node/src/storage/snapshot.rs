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
//! File format: `"RKVSNAP1" | meta_len u32 | meta_crc u32 | meta | data | data_len u64 | data_crc u32
//! | "SNPE"` (integers little-endian). Committed files are named `{index:016x}-{term:016x}.snap`; the
//! store keeps the newest few (two by default) so that a transfer in progress can finish.

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufReader, BufWriter, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use bytes::Bytes;
use raftkv_raft::{Index, SnapshotMeta, Term};

use super::codec::{self, Decoder};
use super::error::{Result, StorageError};
use super::fsutil;

const MAGIC: &[u8; 8] = b"RKVSNAP1";
const END_MAGIC: &[u8; 4] = b"SNPE";
const HEADER_FIXED: u64 = 16;
const TRAILER_LEN: u64 = 16;
/// Snapshot metadata is a few ids; anything larger is a corrupt length.
const MAX_META_LEN: u32 = 1 << 20;
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
        let sink = match &self.inner {
            StoreInner::Memory(_) => Sink::Memory(Vec::new()),
            StoreInner::Dir(dir) => {
                let n = TEMP_COUNTER.fetch_add(1, Ordering::Relaxed);
                let name = format!(
                    "{}{TEMP_MARK}{}-{n}",
                    stem(meta.index, meta.term),
                    std::process::id()
                );
                let path = dir.join(name);
                let file = OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .open(&path)
                    .map_err(StorageError::io("create snapshot", &path))?;
                // From here on, the guard deletes the file unless it is committed.
                let temp = TempFile::new(path);
                let mut file = BufWriter::with_capacity(256 << 10, file);
                let mut meta_buf = Vec::new();
                codec::put_snapshot_meta(&mut meta_buf, &meta);
                let mut header = Vec::with_capacity(meta_buf.len() + 16);
                header.extend_from_slice(MAGIC);
                header.extend_from_slice(&(meta_buf.len() as u32).to_le_bytes());
                header.extend_from_slice(&crc32fast::hash(&meta_buf).to_le_bytes());
                header.extend_from_slice(&meta_buf);
                file.write_all(&header)
                    .map_err(StorageError::io("write snapshot", temp.path()))?;
                Sink::File {
                    file,
                    temp,
                    dir: dir.to_path_buf(),
                    hasher: crc32fast::Hasher::new(),
                    len: 0,
                }
            }
        };
        Ok(SnapshotWriter { meta, sink })
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
                if reader.meta != *meta {
                    return Err(StorageError::corrupt(
                        &path,
                        HEADER_FIXED,
                        format!("header describes {:?}, expected {meta:?}", reader.meta),
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

/// Locks the in-memory map. A panic while holding this lock cannot leave the map half-updated
/// (each critical section is a single insert, remove or clone), so poisoning is ignored.
fn lock(map: &Mutex<MemSnapshots>) -> MutexGuard<'_, MemSnapshots> {
    map.lock().unwrap_or_else(|p| p.into_inner())
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

/// Deletes its file when dropped, unless disarmed: a temp file never outlives its owner, even on
/// an early return or a panic. (A crash can still leave one; recovery deletes those.)
#[derive(Debug)]
struct TempFile {
    path: Option<PathBuf>,
}

impl TempFile {
    fn new(path: PathBuf) -> Self {
        Self { path: Some(path) }
    }

    fn path(&self) -> &Path {
        self.path.as_deref().unwrap_or(Path::new(""))
    }

    fn disarm(mut self) {
        self.path = None;
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        if let Some(path) = self.path.take() {
            // Best effort: nothing can be done about a failure here, and recovery cleans up.
            let _ = fs::remove_file(path);
        }
    }
}

/// Receives the bytes of a snapshot. Write everything, then call [`SnapshotWriter::finish`];
/// dropping the writer instead discards what was written.
#[derive(Debug)]
pub struct SnapshotWriter {
    meta: SnapshotMeta,
    sink: Sink,
}

#[derive(Debug)]
enum Sink {
    Memory(Vec<u8>),
    File {
        file: BufWriter<File>,
        temp: TempFile,
        dir: PathBuf,
        hasher: crc32fast::Hasher,
        len: u64,
    },
}

impl SnapshotWriter {
    /// The snapshot being written.
    pub fn meta(&self) -> &SnapshotMeta {
        &self.meta
    }

    /// Bytes of data written so far.
    pub fn len(&self) -> u64 {
        match &self.sink {
            Sink::Memory(v) => v.len() as u64,
            Sink::File { len, .. } => *len,
        }
    }

    /// Whether no data was written yet.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Seals the data (checksum trailer) and makes it durable: fsynced, but not yet installed.
    pub fn finish(self) -> Result<StagedSnapshot> {
        let data = match self.sink {
            Sink::Memory(v) => StagedData::Memory(Bytes::from(v)),
            Sink::File {
                mut file,
                temp,
                dir,
                hasher,
                len,
            } => {
                let err = StorageError::io("write snapshot", temp.path());
                let mut trailer = Vec::with_capacity(TRAILER_LEN as usize);
                trailer.extend_from_slice(&len.to_le_bytes());
                trailer.extend_from_slice(&hasher.finalize().to_le_bytes());
                trailer.extend_from_slice(END_MAGIC);
                file.write_all(&trailer).map_err(err)?;
                let file = file
                    .into_inner()
                    .map_err(|e| StorageError::io("write snapshot", temp.path())(e.into_error()))?;
                file.sync_all()
                    .map_err(StorageError::io("fsync snapshot", temp.path()))?;
                StagedData::File { temp, dir }
            }
        };
        Ok(StagedSnapshot {
            meta: self.meta,
            data,
        })
    }
}

impl Write for SnapshotWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match &mut self.sink {
            Sink::Memory(v) => {
                v.extend_from_slice(buf);
                Ok(buf.len())
            }
            Sink::File {
                file, hasher, len, ..
            } => {
                let n = file.write(buf)?;
                hasher.update(&buf[..n]);
                *len += n as u64;
                Ok(n)
            }
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match &mut self.sink {
            Sink::Memory(_) => Ok(()),
            Sink::File { file, .. } => file.flush(),
        }
    }
}

/// A complete, durable snapshot that is not installed yet. Hand it to
/// [`LogStorage::install_snapshot`](super::LogStorage::install_snapshot); dropping it deletes it.
#[derive(Debug)]
pub struct StagedSnapshot {
    meta: SnapshotMeta,
    data: StagedData,
}

#[derive(Debug)]
enum StagedData {
    Memory(Bytes),
    File { temp: TempFile, dir: PathBuf },
}

impl StagedSnapshot {
    /// A staged snapshot from bytes in memory; any store can install it.
    pub fn from_bytes(meta: SnapshotMeta, data: Bytes) -> Self {
        Self {
            meta,
            data: StagedData::Memory(data),
        }
    }

    /// The snapshot this is.
    pub fn meta(&self) -> &SnapshotMeta {
        &self.meta
    }

    /// Reads the staged data (verifying its checksum), e.g. to restore the state machine.
    pub fn open_reader(&self) -> Result<SnapshotReader> {
        match &self.data {
            StagedData::Memory(b) => Ok(SnapshotReader::memory(self.meta.clone(), b.clone())),
            StagedData::File { temp, .. } => SnapshotReader::open_file(temp.path()),
        }
    }
}

/// Reads the data of a snapshot, front to back. For a file, the checksum is verified when the
/// last byte is read; a mismatch (or a short file) fails that read with `InvalidData`.
///
/// Reading a file blocks: from async code, use a blocking task.
#[derive(Debug)]
pub struct SnapshotReader {
    meta: SnapshotMeta,
    len: u64,
    source: Source,
}

#[derive(Debug)]
enum Source {
    Memory(io::Cursor<Bytes>),
    File {
        file: BufReader<File>,
        hasher: crc32fast::Hasher,
        remaining: u64,
        expected_crc: u32,
    },
}

impl SnapshotReader {
    fn memory(meta: SnapshotMeta, data: Bytes) -> Self {
        Self {
            meta,
            len: data.len() as u64,
            source: Source::Memory(io::Cursor::new(data)),
        }
    }

    /// Opens a snapshot file, checking its header and trailer.
    fn open_file(path: &Path) -> Result<Self> {
        let io_err = |op| StorageError::io(op, path);
        let corrupt = |offset, reason: &str| StorageError::corrupt(path, offset, reason);
        let mut file = File::open(path).map_err(io_err("open snapshot"))?;
        let file_len = file.metadata().map_err(io_err("stat snapshot"))?.len();
        if file_len < HEADER_FIXED + TRAILER_LEN {
            return Err(corrupt(0, "file too short for a snapshot"));
        }
        let mut fixed = [0u8; HEADER_FIXED as usize];
        file.read_exact(&mut fixed)
            .map_err(io_err("read snapshot"))?;
        if &fixed[..8] != MAGIC {
            return Err(corrupt(0, "bad magic"));
        }
        let meta_len = u32::from_le_bytes([fixed[8], fixed[9], fixed[10], fixed[11]]);
        let meta_crc = u32::from_le_bytes([fixed[12], fixed[13], fixed[14], fixed[15]]);
        let data_start = HEADER_FIXED + u64::from(meta_len);
        if meta_len > MAX_META_LEN || data_start + TRAILER_LEN > file_len {
            return Err(corrupt(8, "bad metadata length"));
        }
        let mut meta_buf = vec![0u8; meta_len as usize];
        file.read_exact(&mut meta_buf)
            .map_err(io_err("read snapshot"))?;
        if crc32fast::hash(&meta_buf) != meta_crc {
            return Err(corrupt(HEADER_FIXED, "metadata checksum mismatch"));
        }
        let mut d = Decoder::new(&meta_buf);
        let meta = codec::get_snapshot_meta(&mut d)
            .and_then(|m| d.finish().map(|()| m))
            .map_err(|e| corrupt(HEADER_FIXED, &e.to_string()))?;

        let trailer_at = file_len - TRAILER_LEN;
        let mut trailer = [0u8; TRAILER_LEN as usize];
        file.seek(SeekFrom::Start(trailer_at))
            .and_then(|_| file.read_exact(&mut trailer))
            .map_err(io_err("read snapshot"))?;
        let mut len8 = [0u8; 8];
        len8.copy_from_slice(&trailer[..8]);
        let data_len = u64::from_le_bytes(len8);
        let expected_crc = u32::from_le_bytes([trailer[8], trailer[9], trailer[10], trailer[11]]);
        if &trailer[12..] != END_MAGIC || data_len != trailer_at - data_start {
            return Err(corrupt(
                trailer_at,
                "bad trailer (file truncated or overwritten?)",
            ));
        }
        file.seek(SeekFrom::Start(data_start))
            .map_err(io_err("seek snapshot"))?;
        Ok(Self {
            meta,
            len: data_len,
            source: Source::File {
                file: BufReader::with_capacity(256 << 10, file),
                hasher: crc32fast::Hasher::new(),
                remaining: data_len,
                expected_crc,
            },
        })
    }

    /// The snapshot being read.
    pub fn meta(&self) -> &SnapshotMeta {
        &self.meta
    }

    /// The number of data bytes (for progress and chunking).
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Whether the snapshot has no data.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

impl Read for SnapshotReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match &mut self.source {
            Source::Memory(c) => c.read(buf),
            Source::File {
                file,
                hasher,
                remaining,
                expected_crc,
            } => {
                if *remaining == 0 || buf.is_empty() {
                    return Ok(0);
                }
                let max = buf
                    .len()
                    .min(usize::try_from(*remaining).unwrap_or(usize::MAX));
                let n = file.read(&mut buf[..max])?;
                if n == 0 {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "snapshot file ends before its data does",
                    ));
                }
                hasher.update(&buf[..n]);
                *remaining -= n as u64;
                if *remaining == 0 && hasher.clone().finalize() != *expected_crc {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        "snapshot data checksum mismatch",
                    ));
                }
                Ok(n)
            }
        }
    }
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
