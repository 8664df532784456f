//! Snapshot data as byte streams: [`SnapshotWriter`] (into a temp file or memory),
//! [`StagedSnapshot`] (written and durable, not yet installed) and [`SnapshotReader`] (verifying
//! the checksum at the end). Where the files live and how they are committed is the store's
//! (`snapshot.rs`).
//!
//! File format: `"RKVSNAP1" | meta_len u32 | meta_crc u32 | meta | data | data_len u64 | data_crc u32
//! | "SNPE"` (integers little-endian).

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufReader, BufWriter, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use bytes::Bytes;
use raftkv_raft::SnapshotMeta;

use super::codec::{self, Reader};
use super::error::{Result, StorageError};

const MAGIC: &[u8; 8] = b"RKVSNAP1";
const END_MAGIC: &[u8; 4] = b"SNPE";
pub(super) const HEADER_FIXED: u64 = 16;
const TRAILER_LEN: u64 = 16;
/// Snapshot metadata is a few ids; anything larger is a corrupt length.
const MAX_META_LEN: u32 = 1 << 20;

/// Deletes its file when dropped, unless disarmed: a temp file never outlives its owner, even on
/// an early return or a panic. (A crash can still leave one; recovery deletes those.)
#[derive(Debug)]
pub(super) struct TempFile {
    path: Option<PathBuf>,
}

impl TempFile {
    fn new(path: PathBuf) -> Self {
        Self { path: Some(path) }
    }

    pub(super) fn path(&self) -> &Path {
        self.path.as_deref().unwrap_or(Path::new(""))
    }

    pub(super) fn disarm(mut self) {
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
    /// A writer that keeps the data in memory.
    pub(super) fn in_memory(meta: SnapshotMeta) -> Self {
        Self {
            meta,
            sink: Sink::Memory(Vec::new()),
        }
    }

    /// A writer into a new temporary file at `path` in the snapshot directory `dir`, starting
    /// with the header (magic, metadata and its checksum).
    pub(super) fn create_file(meta: SnapshotMeta, path: PathBuf, dir: &Path) -> Result<Self> {
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
        let sink = Sink::File {
            file,
            temp,
            dir: dir.to_path_buf(),
            hasher: crc32fast::Hasher::new(),
            len: 0,
        };
        Ok(Self { meta, sink })
    }

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
    pub(super) meta: SnapshotMeta,
    pub(super) data: StagedData,
}

#[derive(Debug)]
pub(super) enum StagedData {
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
    pub(super) fn memory(meta: SnapshotMeta, data: Bytes) -> Self {
        Self {
            meta,
            len: data.len() as u64,
            source: Source::Memory(io::Cursor::new(data)),
        }
    }

    /// Opens a snapshot file, checking its header and trailer.
    pub(super) fn open_file(path: &Path) -> Result<Self> {
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
        let mut d = Reader::new(&meta_buf);
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
