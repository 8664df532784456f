//! What a node is started with ([`NodeConfig`]) and why it could not start ([`StartError`]).
//!
//! A leaf of its own, so that `node` (which starts the node) and `bootstrap` (which `node` calls
//! for an empty data directory) both use these without importing from each other.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;

use raftkv_raft::NodeId;

use crate::driver::DriverConfig;
use crate::tls::TlsOptions;
use crate::transport::TransportConfig;

/// Everything a node needs to start.
#[derive(Clone, Debug)]
pub struct NodeConfig {
    /// This node's id (>= 1).
    pub id: NodeId,
    /// Address clients reach this node at (as other members and clients will dial it).
    pub advertise_client: String,
    /// Address peers reach this node at.
    pub advertise_peer: String,
    /// Peer addresses of the other members known at start (`--peers`).
    pub peers: BTreeMap<NodeId, String>,
    /// Where the WAL, snapshots and the cluster id live.
    pub data_dir: PathBuf,
    /// The initial configuration is `1..=initial_cluster_size`.
    pub initial_cluster_size: u64,
    /// Mixed into the cluster id, so that two clusters bootstrapped from the same flags differ.
    pub initial_cluster_token: String,
    /// Event-loop tunables.
    pub driver: DriverConfig,
    /// Peer connection tunables.
    pub transport: TransportConfig,
    /// Seed for election-timeout randomization; `None` draws one from the OS.
    pub seed: Option<u64>,
    /// Where to serve Prometheus `/metrics`; `None` = not served.
    pub listen_metrics: Option<SocketAddr>,
    /// Where to serve only the gRPC health service, plain TCP (probes); `None` = not served.
    pub listen_health: Option<SocketAddr>,
    /// TLS on the peer and client ports; the default is plain TCP on both.
    pub tls: TlsOptions,
}

/// Why a node could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The data directory cannot be used.
    #[error("data directory {path}: {source}")]
    DataDir {
        /// The path.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// Storage refused to open (corruption is reported with file and offset).
    #[error(transparent)]
    Storage(#[from] crate::storage::StorageError),
    /// The configuration or the state on disk does not make sense.
    #[error("{0}")]
    Invalid(String),
    /// A listener could not be set up.
    #[error("{0}")]
    Listen(String),
    /// A TLS file is missing or unusable (e.g. a key that does not match its certificate).
    #[error("TLS: {0}")]
    Tls(#[from] raftkv_proto::tls::TlsError),
}
