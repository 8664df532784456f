//! Durable storage for the Raft log, hard state and snapshots.
//!
//! The Raft core keeps the log above its last snapshot in memory; storage exists so that a node
//! that restarts comes back with everything it ever acknowledged. The driver persists each
//! `Ready` in the order its docs give — snapshot, then entries, then hard state — and calls
//! [`LogStorage::sync`] once; only then may it send `persisted_messages`.
//!
//! - [`LogStorage`]: the trait the driver (and the conformance tests) use;
//! - [`DiskStorage`]: a segmented write-ahead log and snapshot files in a data directory;
//! - [`MemStorage`]: the same contract in memory, with [`MemStorage::crash`] for the simulation;
//! - [`SnapshotStore`] (`snapshot`): where committed snapshots live, committed atomically;
//!   [`SnapshotWriter`], [`StagedSnapshot`], [`SnapshotReader`] (`snapshot_stream`): snapshot
//!   data as byte streams, and its file format;
//! - [`StorageThread`] / [`StorageHandle`]: group commit on a dedicated OS thread, so that an fsync
//!   never blocks an async worker (DESIGN.md §3);
//! - [`StorageError`]: every failure, typed.
//!
//! Internals: `codec` (binary encoding of the core's types), `record` (WAL framing and the
//! torn-tail/corruption scan), `segment` (WAL segment files and their header), `replay`
//! (recovery of a data directory at open), `log` (the log rules both implementations share),
//! `fsutil`.
//!
//! Nothing here depends on tokio: the thread answers through callbacks that an async driver can
//! turn into oneshot channels.
//!
//! # Persisting a `Ready`
//! ```no_run
//! # use raftkv_node::storage::*;
//! # use raftkv_raft::Ready;
//! # fn f(storage: &mut DiskStorage, ready: Ready, staged: Option<StagedSnapshot>) -> Result<()> {
//! if let Some(staged) = staged {
//!     // The data the transport received for `ready.snapshot`.
//!     storage.install_snapshot(staged)?;
//! }
//! storage.append(&ready.entries)?;
//! if let Some(hs) = ready.hard_state {
//!     storage.set_hard_state(hs)?;
//! }
//! storage.sync()?; // now `ready.persisted_messages` may go out
//! # Ok(()) }
//! ```

mod codec;
mod contract;
mod disk;
mod error;
mod fsutil;
mod log;
mod mem;
mod record;
mod replay;
mod segment;
mod snapshot;
mod snapshot_stream;
mod thread;

pub use contract::{LogStorage, RecoveredState};
pub use disk::{DiskOptions, DiskStats, DiskStorage};
pub use error::{Result, StorageError};
pub use mem::MemStorage;
pub use snapshot::SnapshotStore;
pub use snapshot_stream::{SnapshotReader, SnapshotWriter, StagedSnapshot};
pub use thread::{Callback, StorageHandle, StorageThread, WriteBatch};
