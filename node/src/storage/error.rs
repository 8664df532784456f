//! What can go wrong in storage, as one typed error.
//!
//! The error is `Clone` because the storage thread answers every request of a group commit with the
//! result of the one shared fsync; I/O errors are therefore held in an `Arc`.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use raftkv_raft::{Index, Term};

use crate::codec::DecodeError;

/// A storage result.
pub type Result<T, E = StorageError> = std::result::Result<T, E>;

/// Why a storage operation failed.
///
/// Errors that name a file (`Io`, `Corrupt`) come from the disk; the others are refusals of a request
/// that would break the log's invariants, and leave the storage unchanged.
#[derive(Clone, Debug, thiserror::Error)]
pub enum StorageError {
    /// A system call failed. After a failed write or fsync the on-disk state is unknown (a failed
    /// fsync may have dropped dirty pages), so the storage refuses all later writes: see `Poisoned`.
    #[error("{op} {}: {source}", path.display())]
    Io {
        /// What we were doing (`"open"`, `"fsync"`, ...).
        op: &'static str,
        /// The file or directory involved.
        path: PathBuf,
        /// The operating system's error.
        #[source]
        source: Arc<io::Error>,
    },
    /// Data on disk is damaged and cannot be a torn tail: the node must not start on it.
    #[error("corrupt data in {} at byte offset {offset}: {reason}", file.display())]
    Corrupt {
        /// The damaged file.
        file: PathBuf,
        /// Byte offset of the first bad record (or field) in `file`.
        offset: u64,
        /// What is wrong there.
        reason: String,
    },
    /// Another process (or another `DiskStorage` in this one) holds the data directory.
    #[error("data directory {} is locked by another user", path.display())]
    Locked {
        /// The lock file.
        path: PathBuf,
    },
    /// The entries handed to `append` do not have consecutive indexes.
    #[error("entries to append are not consecutive: expected index {expected}, got {got}")]
    NonConsecutive {
        /// The index that should have come next.
        expected: Index,
        /// The index that came.
        got: Index,
    },
    /// `append` would leave a gap after the log or write at or below the snapshot.
    #[error(
        "cannot append at index {index}: appends must start in {first}..={next} \
         (after the snapshot, at most one past the last entry)"
    )]
    AppendOutOfRange {
        /// The first index of the rejected entries.
        index: Index,
        /// The first index that may be written (snapshot index + 1).
        first: Index,
        /// One past the last stored index.
        next: Index,
    },
    /// The requested index is at or below the snapshot: its entry is gone.
    #[error("index {0} is compacted")]
    Compacted(Index),
    /// The requested index is beyond the last stored entry.
    #[error("index {0} is unavailable")]
    Unavailable(Index),
    /// A snapshot not newer than the installed one (or at index 0) was offered.
    #[error("snapshot at index {offered} is not newer than the installed one at index {installed}")]
    StaleSnapshot {
        /// The installed snapshot's index.
        installed: Index,
        /// The offered snapshot's index.
        offered: Index,
    },
    /// Compaction may only discard what a durable snapshot covers.
    #[error("cannot compact up to index {upto}: the snapshot is at index {snapshot}")]
    CompactBeyondSnapshot {
        /// The requested compaction point.
        upto: Index,
        /// The installed snapshot's index.
        snapshot: Index,
    },
    /// No snapshot with this index and term is stored (it may have been pruned).
    #[error("snapshot at index {index}, term {term} not found")]
    SnapshotNotFound {
        /// The requested snapshot's index.
        index: Index,
        /// The requested snapshot's term.
        term: Term,
    },
    /// A single record would exceed the WAL's record size limit.
    #[error("a record of {len} bytes exceeds the limit of {max} bytes")]
    RecordTooLarge {
        /// The record's size.
        len: u64,
        /// The limit.
        max: u64,
    },
    /// An earlier write or fsync failed; the storage refuses further work until the node restarts
    /// and recovers from what is really on disk (retrying an fsync after a failure is unsafe).
    #[error("storage failed earlier and refuses further work: {0}")]
    Poisoned(#[source] Arc<StorageError>),
    /// The storage thread is gone (shut down, or it panicked).
    #[error("the storage thread has stopped")]
    Stopped,
}

impl StorageError {
    /// An `Io` error constructor for `map_err`.
    pub(crate) fn io(op: &'static str, path: &Path) -> impl FnOnce(io::Error) -> StorageError {
        let path = path.to_path_buf();
        move |source| StorageError::Io {
            op,
            path,
            source: Arc::new(source),
        }
    }

    /// A `Corrupt` error.
    pub(crate) fn corrupt(file: &Path, offset: u64, reason: impl Into<String>) -> StorageError {
        StorageError::Corrupt {
            file: file.to_path_buf(),
            offset,
            reason: reason.into(),
        }
    }
}

/// Why a WAL record whose checksum verified makes no sense where it is: corruption, not a torn
/// write (the bytes are exactly what was written). Recovery reports it as the `reason` of
/// [`StorageError::Corrupt`], with the file and offset of the record.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub(crate) enum BadRecord {
    /// A record's fields do not decode.
    #[error(transparent)]
    Decode(#[from] DecodeError),
    #[error("segment does not start with a header record")]
    NoHeader,
    #[error("a header record in the middle of a segment")]
    HeaderInTheMiddle,
    #[error("unknown record type {0}")]
    UnknownKind(u8),
    #[error("bad segment magic")]
    BadMagic,
    #[error("unsupported WAL format version {0}")]
    UnsupportedVersion(u8),
    #[error("header says segment {header}, file name says {name}")]
    SeqMismatch { header: u64, name: u64 },
    #[error("header says the log ends at {last}, below its snapshot at {snapshot}")]
    LogBelowSnapshot { last: Index, snapshot: Index },
    #[error("header disagrees with the state replayed from earlier segments")]
    HeaderDisagrees,
    #[error("entry {index} is at or below the snapshot at {snapshot}")]
    EntryBelowSnapshot { index: Index, snapshot: Index },
    #[error("snapshot record at {index} is older than the snapshot at {current}")]
    OlderSnapshot { index: Index, current: Index },
    #[error("snapshot record keeps the log up to {last}, but the replayed log ends at {log_last}")]
    KeptLogMismatch { last: Index, log_last: Index },
    #[error("snapshot record at {index} is below the log's start at {first}")]
    SnapshotBelowLogStart { index: Index, first: Index },
}
