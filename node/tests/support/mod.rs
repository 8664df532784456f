//! Support code for node's integration tests: clusters to run, faults to inject, histories to
//! check. Every test file is its own crate and takes the whole tree with `mod support;`.
//!
//! Map:
//! - [`inprocess`]: an in-process cluster ([`inprocess::TestCluster`]) on `127.0.0.1:0`
//!   listeners, for API and behaviour tests;
//! - [`cluster`]: real `kvnode` processes ([`cluster::Cluster`]), on loopback or each in its own
//!   network namespace, with the faults a test needs (kill -9, SIGSTOP, restart, partitions);
//! - [`ports`]: free ports for loopback clusters, never handed out twice;
//! - [`wait`]: [`wait::wait_for`], the one polling loop of process and container tests;
//! - [`workload`]: concurrent [`workload::Writers`] of unique keys and the
//!   [`workload::WriteHistory`] check of what the cluster holds;
//! - [`netns`]: network namespaces, one per node, and the links between them;
//! - [`history`]: the Jepsen-style history of operations and its linearizability checker;
//! - [`fault`]: the seeded fault-injection suite (clients, nemesis, final checks) over
//!   `cluster`, `netns` and `history`;
//! - [`docker`]: a cluster of node containers for the container end-to-end tests;
//! - [`tls`]: a CA and certificates per test, and TLS clients that use them.
//!
//! The small helpers below are shared by several of these modules.

// Each test crate uses only part of this tree (a storage test none of the clusters, an
// in-process test none of the processes), and rustc checks dead code per crate: unused items
// here are expected, not forgotten.
#![allow(dead_code)]

pub mod cluster;
pub mod docker;
pub mod fault;
pub mod history;
pub mod inprocess;
pub mod netns;
pub mod ports;
pub mod tls;
pub mod wait;
pub mod workload;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use raftkv_client::ClientOptions;

/// Client options for tests: a long call budget (a failover must not turn writes into unknown
/// outcomes needlessly) but short attempts, so that a hung (SIGSTOPped) node costs little.
pub fn test_client_options() -> ClientOptions {
    ClientOptions {
        timeout: Duration::from_secs(10),
        attempt_timeout: Duration::from_millis(1500),
        connect_timeout: Duration::from_millis(500),
        ..ClientOptions::default()
    }
}

/// A random number without a dependency: std's hasher keys are random per process.
pub fn random_u64() -> u64 {
    use std::hash::{BuildHasher, RandomState};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    RandomState::new().hash_one(COUNTER.fetch_add(1, Ordering::Relaxed))
}

/// Locks `mutex`, also after a panic in another test thread.
pub fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // A test that panicked while holding a lock left consistent data (single updates).
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}
