//! A raftkv node: everything around the Raft core that makes a running member of a cluster.
//!
//! Modules, from the inside out (dependencies point inward):
//! - [`kv`]: the replicated key-value state machine with client sessions for exactly-once writes;
//! - [`storage`]: the write-ahead log, hard state and snapshot files, behind a trait that also has
//!   an in-memory implementation, with group commit on a dedicated thread;
//! - [`discovery`]: static peers, or a StatefulSet's pods by DNS name;
//! - [`members`]: member addresses, and the framing of entries and snapshots that carries them;
//! - [`transport`]: gRPC messaging between peers (`raftkv.v1.Raft`);
//! - [`api`]: the client-facing `Kv` and `Cluster` services;
//! - `driver`: the event loop that ties the core, storage, transport and state machine together;
//! - [`metrics`]: Prometheus metrics and their `/metrics` endpoint;
//! - [`node`]: bootstrap or join, servers, start and stop;
//! - [`handle`], [`error`]: how callers talk to a running node and what can go wrong.
//!
//! `kv`, `storage` and `members` know nothing of gRPC or tokio; only `driver`, `transport`, `api`
//! and `node` do.

pub mod api;
pub mod discovery;
mod driver;
pub mod error;
pub mod handle;
pub mod kv;
pub mod members;
pub mod metrics;
pub mod node;
#[cfg(feature = "planted-bugs")]
pub mod planted;
pub mod storage;
pub mod transport;

pub use driver::{DriverConfig, Observed};
pub use error::NodeError;
pub use handle::NodeHandle;
pub use node::{NodeConfig, RunningNode, StartError, start, start_with_listeners};

/// Spawns a task that stays inside the caller's tracing span (`node{id=..}`), so that every log
/// line a node's tasks write names the node, even with several nodes in one process (tests).
pub(crate) fn spawn<F>(future: F) -> tokio::task::JoinHandle<F::Output>
where
    F: std::future::Future + Send + 'static,
    F::Output: Send + 'static,
{
    use tracing::Instrument as _;
    tokio::spawn(future.in_current_span())
}
