//! Starting and stopping a node: storage, identity, the two gRPC servers and the driver.
//!
//! Ports. The client port serves `Kv`, `Cluster` and the gRPC health service; the peer port serves
//! `Raft`, `Cluster` (so that peers can ask "which cluster is this?" and members can publish their
//! addresses) and health. Separate ports let a NetworkPolicy fence the peer port. Either may use
//! TLS (module `tls`); the optional health port (`listen_health`) is always plain, for probes.
//!
//! Start-up order. Storage is opened (the WAL read back) and the identity file read before the
//! ports open; from the moment they accept a connection, `Cluster.Status` tells the truth about
//! what is on disk: `MEMBER_STATE_LOADING` with the cluster id, term and last log position while
//! the snapshot is decoded, or `MEMBER_STATE_FRESH` for an empty data directory, which then
//! decides whether to bootstrap or to join (module `bootstrap`). Raft and Kv traffic is refused
//! as UNAVAILABLE until the driver runs.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use raftkv_proto::MAX_GRPC_MESSAGE_BYTES;
use raftkv_proto::http2::tune_server;
use raftkv_proto::v1 as pb;
use raftkv_raft::{Config, InitialState, NodeId, RawNode};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Server;
use tracing::info;

use crate::api::{ClusterService, KvService};
pub use crate::bootstrap::derive_cluster_id;
use crate::bootstrap::{
    Origin, bootstrap_or_join, has_state, read_identity, status_on_disk, write_bootstrap_state,
};
pub use crate::config::{NodeConfig, StartError};
use crate::driver::{Driver, DriverError, DriverParts, Observed};
use crate::entry::load_snapshot;
use crate::handle::NodeHandle;
use crate::kv::KvStateMachine;
use crate::members::{MemberAddrs, MemberBook, learn_from_log};
use crate::metrics::Metrics;
use crate::shutdown::ShutdownSignal;
use crate::storage::{DiskOptions, DiskStorage, LogStorage, StorageThread};
use crate::tls::NodeTls;
use crate::transport::{
    PeerDirectory, PeerGuards, PeerTls, RaftService, Transport, TransportConfig,
};

/// A node that is running. Dropping it does not stop it; call [`RunningNode::stop`].
#[derive(Debug)]
pub struct RunningNode {
    id: NodeId,
    handle: NodeHandle,
    client_addr: SocketAddr,
    peer_addr: SocketAddr,
    cluster_id: String,
    metrics_addr: Option<SocketAddr>,
    observed: watch::Receiver<Observed>,
    shutdown: ShutdownSignal,
    driver: JoinHandle<Result<(), DriverError>>,
    servers: Vec<JoinHandle<()>>,
}

impl RunningNode {
    /// This node's id.
    pub fn id(&self) -> NodeId {
        self.id
    }
    /// A handle to the driver, for in-process callers.
    pub fn handle(&self) -> NodeHandle {
        self.handle.clone()
    }
    /// Where the client port listens.
    pub fn client_addr(&self) -> SocketAddr {
        self.client_addr
    }
    /// Where the peer port listens.
    pub fn peer_addr(&self) -> SocketAddr {
        self.peer_addr
    }
    /// Where `/metrics` is served, if it is.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics_addr
    }
    /// The cluster this node belongs to.
    pub fn cluster_id(&self) -> &str {
        &self.cluster_id
    }
    /// Role, term, leader and indexes as they change.
    pub fn observe(&self) -> watch::Receiver<Observed> {
        self.observed.clone()
    }
    /// Whether the driver stopped on its own (a storage failure).
    pub fn is_finished(&self) -> bool {
        self.driver.is_finished()
    }

    /// Stops serving and waits for the driver to finish.
    pub async fn stop(self) -> Result<(), DriverError> {
        let Self {
            shutdown,
            driver,
            servers,
            ..
        } = self;
        shutdown.trigger();
        let result = driver.await.unwrap_or_else(|e| Err(e.into()));
        // Servers drain open connections gracefully, but a connection that never finishes its
        // HTTP/2 handshake would hold the drain forever: bound it, then drop what is left.
        if tokio::time::timeout(SERVER_DRAIN, shutdown.stopped())
            .await
            .is_err()
        {
            for s in servers {
                s.abort();
            }
        }
        result
    }

    /// Waits until the driver stops (after `stop`, or on a storage failure).
    pub async fn wait(&mut self) -> Result<(), DriverError> {
        (&mut self.driver).await.unwrap_or_else(|e| Err(e.into()))
    }

    /// Asks the node to stop without waiting.
    pub fn begin_stop(&self) {
        self.shutdown.trigger();
    }
}

/// How long `stop` lets the servers finish requests in flight before closing connections.
const SERVER_DRAIN: Duration = Duration::from_secs(3);

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> StartError + '_ {
    move |source| StartError::DataDir {
        path: path.to_path_buf(),
        source,
    }
}

/// Binds both ports and starts the node.
pub async fn start(
    cfg: NodeConfig,
    listen_client: SocketAddr,
    listen_peer: SocketAddr,
) -> Result<RunningNode, StartError> {
    let client = TcpListener::bind(listen_client)
        .await
        .map_err(|e| StartError::Listen(format!("client port {listen_client}: {e}")))?;
    let peer = TcpListener::bind(listen_peer)
        .await
        .map_err(|e| StartError::Listen(format!("peer port {listen_peer}: {e}")))?;
    start_with_listeners(cfg, client, peer).await
}

/// Starts the node on listeners the caller bound (tests bind port 0 first to learn the ports).
/// Everything the node does, in every task, logs inside a `node{id=..}` span.
pub async fn start_with_listeners(
    cfg: NodeConfig,
    client_listener: TcpListener,
    peer_listener: TcpListener,
) -> Result<RunningNode, StartError> {
    use tracing::Instrument as _;
    let span = tracing::info_span!("node", id = cfg.id);
    start_in_span(cfg, client_listener, peer_listener)
        .instrument(span)
        .await
}

async fn start_in_span(
    cfg: NodeConfig,
    client_listener: TcpListener,
    peer_listener: TcpListener,
) -> Result<RunningNode, StartError> {
    if cfg.id == 0 {
        return Err(StartError::Invalid("--id must be at least 1".into()));
    }
    let client_addr = client_listener
        .local_addr()
        .map_err(|e| StartError::Listen(e.to_string()))?;
    let peer_addr = peer_listener
        .local_addr()
        .map_err(|e| StartError::Listen(e.to_string()))?;
    if cfg.driver.snapshot_entries == 0 {
        return Err(StartError::Invalid(
            "--snapshot-entries must be at least 1".into(),
        ));
    }
    if cfg.driver.tick.is_zero() || cfg.driver.election_ticks < 2 {
        return Err(StartError::Invalid(
            "--tick must be positive and --election-ticks at least 2".into(),
        ));
    }
    if cfg.initial_cluster_size == 0 {
        return Err(StartError::Invalid(
            "--initial-cluster-size must be at least 1".into(),
        ));
    }
    std::fs::create_dir_all(&cfg.data_dir).map_err(io_err(&cfg.data_dir))?;
    let raft_dir = cfg.data_dir.join("raft");
    let (mut storage, mut recovered) = DiskStorage::open(&raft_dir, DiskOptions::default())?;
    let snapshots = storage.snapshot_store();
    let identity = read_identity(&cfg.data_dir)?;
    if has_state(&recovered) && identity.is_none() {
        return Err(StartError::Invalid(format!(
            "{} holds Raft state but no cluster id; refusing to guess",
            cfg.data_dir.display()
        )));
    }

    // Serve both ports before deciding which cluster we are in: peers that are deciding too must
    // be able to ask us (see the module docs). Until `started` is set, Raft and Kv traffic is
    // refused as UNAVAILABLE and Status says what is on disk.
    let started: Arc<OnceLock<String>> = Arc::default();
    let (req_tx, req_rx) = mpsc::channel(4096);
    let (in_tx, in_rx) = mpsc::channel(4096);
    let (obs_tx, obs_rx) = watch::channel(Observed::default());
    let shutdown = ShutdownSignal::new();
    let handle = NodeHandle::new(cfg.id, req_tx, started.clone());
    let before_start = status_on_disk(cfg.id, &recovered, identity.as_ref());
    #[cfg(feature = "planted-bugs")]
    let before_start = crate::planted::status_before_start(cfg.driver.planted_bug, before_start);
    handle.set_status_before_start(before_start);
    let metrics = Metrics::new();
    let guards = PeerGuards::default();
    let tls = NodeTls::load(&cfg.tls, &metrics)?;
    let peer_tls = tls.peer_connector().map(|connector| PeerTls {
        connector,
        directory: PeerDirectory::default(),
    });
    let spawned = spawn_servers(
        &cfg,
        &tls,
        peer_tls.as_ref().map(|t| t.directory.clone()),
        &handle,
        &metrics,
        &guards,
        started.clone(),
        in_tx.clone(),
        snapshots.clone(),
        obs_rx.clone(),
        &shutdown,
        client_listener,
        peer_listener,
    )
    .await;
    let (servers, metrics_addr) = match spawned {
        Ok(s) => s,
        Err(e) => {
            shutdown.trigger();
            return Err(e);
        }
    };
    let stop_servers = |e: StartError| {
        shutdown.trigger();
        e
    };

    #[cfg(feature = "planted-bugs")]
    if let Some(delay) = cfg.driver.slow_start
        && (identity.is_some() || has_state(&recovered))
    {
        // Test hook: a node whose state takes long to load (a large snapshot). A node with an
        // empty data directory has nothing to load: it decides at once, which is what lets a
        // test catch it asking its peers while they load.
        tokio::time::sleep(delay).await;
    }

    let identity = match identity {
        Some(identity) => {
            if let (false, Origin::Bootstrap { size }) = (has_state(&recovered), identity.origin) {
                // The node crashed after deciding to bootstrap and before its Raft state was
                // durable: the bootstrap writes are deterministic, so redo them.
                recovered = write_bootstrap_state(&mut storage, size).map_err(stop_servers)?;
                info!(cluster_id = %identity.cluster_id, size, "completed an interrupted bootstrap");
            }
            identity
        }
        None => {
            let (identity, state) = bootstrap_or_join(
                &cfg,
                &mut storage,
                &handle,
                peer_tls.as_ref().map(|t| t.connector.clone()),
            )
            .await
            .map_err(stop_servers)?;
            if let Some(state) = state {
                recovered = state;
            }
            identity
        }
    };
    let cluster_id = identity.cluster_id.clone();

    // The state machine: the snapshot's state, then the committed entries replayed by the core.
    let mut book: MemberBook = cfg
        .peers
        .iter()
        .map(|(id, peer)| {
            (
                *id,
                MemberAddrs {
                    peer: peer.clone(),
                    client: String::new(),
                },
            )
        })
        .collect();
    let mut kv = KvStateMachine::new();
    if let Some(meta) = &recovered.snapshot {
        let reader = snapshots.open(meta).map_err(|e| stop_servers(e.into()))?;
        let index = meta.index;
        let (snap_book, snap_kv) = tokio::task::spawn_blocking(move || load_snapshot(reader))
            .await
            .map_err(|e| StartError::Invalid(format!("loading snapshot {index}: {e}")))
            .and_then(|r| r.map_err(|e| StartError::Invalid(format!("snapshot {index}: {e}"))))
            .map_err(stop_servers)?;
        kv = snap_kv;
        book.extend(snap_book);
    }
    // The driver's rule for entries it appends (`members::learn_from_log`); the committed
    // `MemberUpdate`s are learned when the driver applies them again from the snapshot on.
    for e in &recovered.entries {
        learn_from_log(&mut book, e);
    }
    // Our own entry in the book is replicated state: the driver publishes it through the log
    // (so that everyone learns our client address), rather than assuming it here.
    let advertise = MemberAddrs {
        peer: cfg.advertise_peer.clone(),
        client: cfg.advertise_client.clone(),
    };

    let mut raft_cfg = Config::new(cfg.id);
    raft_cfg.election_tick = cfg.driver.election_ticks;
    raft_cfg.heartbeat_tick = 1;
    raft_cfg.seed = cfg.seed.unwrap_or_else(random_seed);
    if let Some(barrier) = identity.catch_up() {
        raft_cfg.catch_up_index = barrier.index;
        raft_cfg.catch_up_log_term = barrier.log_term;
        raft_cfg.catch_up_term = barrier.term;
    }
    // A single message must carry the largest entry (1 MiB value + key + session).
    raft_cfg.max_size_per_msg = 2 << 20;
    #[cfg(feature = "planted-bugs")]
    if let Some(crate::planted::PlantedBug::Core(bug)) = cfg.driver.planted_bug {
        raft_cfg.bug = Some(bug);
    }
    let applied = recovered.snapshot.as_ref().map_or(0, |s| s.index);
    let raw = RawNode::new(
        raft_cfg,
        InitialState {
            hard_state: recovered.hard_state,
            snapshot: recovered.snapshot.clone(),
            entries: recovered.entries,
            applied,
        },
    )
    .map_err(|e| StartError::Invalid(format!("recovered state: {e}")))
    .map_err(stop_servers)?;

    let storage_thread = StorageThread::spawn(storage).map_err(|e| stop_servers(e.into()))?;
    let storage_handle = storage_thread.handle();
    let transport = Transport::new(
        cluster_id.clone(),
        TransportConfig {
            lease_guard: cfg.driver.lease_guard(),
            tls: peer_tls,
            ..cfg.transport.clone()
        },
        in_tx.clone(),
        snapshots.clone(),
        metrics.clone(),
    );
    let driver = Driver::new(DriverParts {
        id: cfg.id,
        cluster_id: cluster_id.clone(),
        raw,
        kv,
        book,
        advertise,
        requests: req_rx,
        inbound: in_rx,
        transport,
        storage: storage_handle,
        snapshots: snapshots.clone(),
        cfg: cfg.driver.clone(),
        observed: obs_tx,
        metrics: metrics.clone(),
        guards,
    });
    let driver_stop = shutdown.subscribe();
    let driver_task = crate::task::spawn(async move {
        let result = driver.run(driver_stop).await;
        if let Err(e) = &result {
            tracing::error!(error = %e, "driver stopped");
        }
        // Dropping the thread handle stops it after the queued writes.
        drop(storage_thread);
        result
    });

    // From here on, the services accept traffic.
    let _ = started.set(cluster_id.clone());
    info!(id = cfg.id, %client_addr, %peer_addr, cluster_id = %cluster_id, metrics = ?metrics_addr, "node started");
    Ok(RunningNode {
        id: cfg.id,
        handle,
        client_addr,
        peer_addr,
        cluster_id,
        metrics_addr,
        observed: obs_rx,
        shutdown,
        driver: driver_task,
        servers,
    })
}

/// Starts the metrics endpoint, the health reporter and both gRPC servers.
#[allow(clippy::too_many_arguments)] // one call site; a struct would only rename the list
async fn spawn_servers(
    cfg: &NodeConfig,
    tls: &NodeTls,
    peer_directory: Option<PeerDirectory>,
    handle: &NodeHandle,
    metrics: &Arc<Metrics>,
    guards: &PeerGuards,
    started: Arc<OnceLock<String>>,
    in_tx: mpsc::Sender<crate::transport::Inbound>,
    snapshots: crate::storage::SnapshotStore,
    obs_rx: watch::Receiver<Observed>,
    shutdown: &ShutdownSignal,
    client_listener: TcpListener,
    peer_listener: TcpListener,
) -> Result<(Vec<JoinHandle<()>>, Option<SocketAddr>), StartError> {
    let mut servers = Vec::new();
    let metrics_addr = match cfg.listen_metrics {
        Some(addr) => {
            let (local, task) =
                crate::metrics::spawn(addr, metrics.clone(), cfg.id, shutdown.subscribe())
                    .await
                    .map_err(|e| StartError::Listen(format!("metrics port {addr}: {e}")))?;
            servers.push(task);
            Some(local)
        }
        None => None,
    };

    servers.extend(tls.spawn_reloader(metrics.clone(), shutdown.subscribe()));
    let (health_service, health_task) = crate::health::readiness(obs_rx, shutdown.subscribe());
    servers.push(health_task);
    if let Some(addr) = cfg.listen_health {
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|e| StartError::Listen(format!("health port {addr}: {e}")))?;
        let router = Server::builder().add_service(health_service.clone());
        let stop = shutdown.subscribe();
        servers.push(crate::tls::serve(
            router,
            listener,
            None,
            tls.log.clone(),
            stop,
            "health",
        ));
    }

    let kv_service =
        pb::kv_server::KvServer::new(KvService::new(handle.clone()).with_metrics(metrics.clone()))
            .max_decoding_message_size(MAX_GRPC_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_GRPC_MESSAGE_BYTES);
    let cluster_service = pb::cluster_server::ClusterServer::new(
        ClusterService::new(handle.clone()).with_metrics(metrics.clone()),
    );
    let mut raft_service = RaftService::new(cfg.id, started, in_tx, snapshots, guards.clone());
    if let Some(directory) = peer_directory {
        raft_service = raft_service.with_peer_auth(directory, tls.log.clone());
    }
    let raft_service = pb::raft_server::RaftServer::new(raft_service)
        .max_decoding_message_size(MAX_GRPC_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_GRPC_MESSAGE_BYTES);
    servers.push(crate::tls::serve(
        tune_server(Server::builder())
            // With --client-ca, every request must come with a certificate from it.
            .add_service(InterceptedService::new(kv_service, tls.client_auth()))
            .add_service(InterceptedService::new(
                cluster_service.clone(),
                tls.client_auth(),
            ))
            .add_service(InterceptedService::new(
                health_service.clone(),
                tls.client_auth(),
            )),
        client_listener,
        tls.client.clone(),
        tls.log.clone(),
        shutdown.subscribe(),
        "client",
    ));
    servers.push(crate::tls::serve(
        tune_server(Server::builder())
            .add_service(raft_service)
            .add_service(cluster_service)
            .add_service(health_service),
        peer_listener,
        tls.peer.clone(),
        tls.log.clone(),
        shutdown.subscribe(),
        "peer",
    ));
    Ok((servers, metrics_addr))
}

fn random_seed() -> u64 {
    // Election timeouts only need to differ between nodes and runs; the process id and the
    // clock are enough, and keep the core's randomness injectable.
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    nanos ^ (u64::from(std::process::id()) << 32)
}
