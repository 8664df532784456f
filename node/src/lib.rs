//! A raftkv node: everything around the Raft core that makes a running member of a cluster.
//!
//! Modules:
//! - [`storage`]: the write-ahead log, hard state and snapshot files on disk, behind a trait that
//!   also has an in-memory implementation;
//! - [`kv`]: the replicated key-value state machine with client sessions for exactly-once writes.
//!
//! Dependencies point inward: `kv` and `storage` know nothing of gRPC or tokio.

pub mod kv;
pub mod storage;
