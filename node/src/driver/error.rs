//! Why the loop stops: [`DriverError`], kept apart from [`crate::NodeError`], the per-request
//! error a client is sent.
//!
//! The loop stops rather than skip a step every replica must take alike (a committed entry that
//! does not apply, a `Ready` whose writes cannot be made durable), so each cause is kept whole
//! with its source, for the log line and for the caller of [`crate::RunningNode::stop`].

use raftkv_raft::{Index, Term};

use crate::entry::{FrameError, SnapshotLoadError};
use crate::kv::OutOfOrder;
use crate::storage::StorageError;

/// Why the driver stopped serving.
#[derive(Debug, thiserror::Error)]
pub enum DriverError {
    /// The storage thread failed a write, an install or a compaction, or is gone.
    #[error("storage: {0}")]
    Storage(#[from] StorageError),
    /// The core refused a step the loop relies on (snapshot metadata, compaction).
    #[error("raft core: {0}")]
    Raft(#[from] raftkv_raft::Error),
    /// A committed entry does not decode: skipping it would diverge from the other replicas.
    #[error("committed entry {index} does not decode: {source}")]
    UndecodableEntry {
        /// The entry's index.
        index: Index,
        /// What is wrong with it.
        source: FrameError,
    },
    /// The state machine was handed an entry out of order.
    #[error("state machine: {0}")]
    Apply(#[from] OutOfOrder),
    /// Writing a local snapshot failed.
    #[error("writing a snapshot: {0}")]
    SnapshotWrite(#[from] std::io::Error),
    /// A snapshot (received, or read at start-up) does not decode.
    #[error("loading a snapshot: {0}")]
    SnapshotLoad(#[from] SnapshotLoadError),
    /// The core installs a snapshot whose data this node never received and decoded.
    #[error("the core installs snapshot {index}@{term} but its data was not received")]
    SnapshotNotReceived {
        /// The snapshot's last index.
        index: Index,
        /// The snapshot's last term.
        term: Term,
    },
    /// A task the loop waited for (snapshot writing or decoding) stopped without an answer.
    #[error("the {0} task stopped")]
    TaskStopped(&'static str),
    /// The driver task itself panicked or was cancelled.
    #[error("the driver task failed: {0}")]
    Join(#[from] tokio::task::JoinError),
}
