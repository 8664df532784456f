//! A raftkv node: everything around the Raft core that makes a running member of a cluster.
//!
//! Modules, from the inside out (dependencies point inward):
//! - `codec`: the one binary codec every encoding of the node is built from (varints, a
//!   bounds-checked reader, FNV-1a), and why it is hand-written;
//! - [`kv`]: the replicated key-value state machine with client sessions for exactly-once writes;
//! - [`storage`]: the write-ahead log, hard state and snapshot files, behind a trait that also has
//!   an in-memory implementation, with group commit on a dedicated thread;
//! - [`discovery`]: static peers, or a StatefulSet's pods by DNS name;
//! - [`members`]: member addresses, their encoding, and the one rule for learning them from the
//!   log;
//! - [`entry`]: the framing of log entries (a KV command or a member's addresses) and of node
//!   snapshots (the address book, then the KV snapshot);
//! - [`transport`]: gRPC messaging between peers (`raftkv.v1.Raft`);
//! - [`api`]: the client-facing `Kv` and `Cluster` services. The key, value and gRPC message
//!   limits they enforce, and their checks, are shared with the client and the transport and live
//!   in `raftkv-proto` (`raftkv_proto::MAX_KEY_BYTES` and its siblings); `api/limits.rs` keeps
//!   only the session check;
//! - `driver`: the event loop that ties the core, storage, transport and state machine together,
//!   in rooms of its own (`driver/mod.rs` maps them: the loop, its state, waiters, reads,
//!   snapshots, membership, status, and the leaf types they share);
//! - [`metrics`]: Prometheus metrics (registered and encoded by `prometheus-client`) and their
//!   `/metrics` endpoint (hyper's HTTP/1 server) on the metrics port;
//! - `bootstrap`: the identity file, and bootstrap or join (with the catch-up barrier) for a node
//!   with an empty data directory;
//! - [`tls`]: TLS on both ports (mutual TLS between peers, bound to member identities), with
//!   certificates re-read when they are rotated;
//! - [`node`]: servers, start and stop; `config`: what a node starts with ([`NodeConfig`]) and
//!   why it could not start ([`StartError`]), apart so that `node` and `bootstrap` share them;
//! - `task`: spawning tasks inside the node's tracing span; `sync`: the one lock helper;
//! - `shutdown`: the signal that stops the node's tasks, and knowing that they all stopped;
//! - `health`: the gRPC health service (readiness) and the optional plain health port;
//! - [`handle`], [`error`]: how callers talk to a running node and what can go wrong;
//! - `planted` (feature `planted-bugs`): the deliberate bugs the fault-injection tests must catch.
//!
//! `kv`, `storage` and `members` know nothing of gRPC or tokio; only `driver`, `transport`, `api`,
//! `bootstrap` and `node` do. No module imports from a module that imports it
//! (`scripts/check-module-cycles.py` checks this in CI).

pub mod api;
mod bootstrap;
mod codec;
mod config;
pub mod discovery;
mod driver;
pub mod entry;
pub mod error;
pub mod handle;
mod health;
pub mod kv;
pub mod members;
pub mod metrics;
pub mod node;
#[cfg(feature = "planted-bugs")]
pub mod planted;
mod shutdown;
pub mod storage;
mod sync;
mod task;
pub mod tls;
pub mod transport;

pub use bootstrap::derive_cluster_id;
pub use driver::{DriverConfig, DriverError, Observed};
pub use error::NodeError;
pub use handle::NodeHandle;
pub use node::{NodeConfig, RunningNode, StartError, start, start_with_listeners};
