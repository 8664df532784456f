//! `kvnode`: one raftkv node. Parses flags, sets up logging, runs until SIGINT/SIGTERM, and on
//! the way out hands leadership to another voter so clients see no election gap.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use raftkv_node::discovery::{Discovery, DiscoveryError};
use raftkv_node::tls::{TlsFiles, TlsOptions};
use raftkv_node::transport::TransportConfig;
use raftkv_node::{DriverConfig, NodeConfig};
use tracing::{error, info, warn};

/// A raftkv node: a member of a replicated key-value store (Raft over gRPC).
///
/// Example, three nodes on one machine (what `kvctl local up` runs):
///   kvnode --id 1 --listen-client 127.0.0.1:7001 --listen-peer 127.0.0.1:7101
///          --peers 1=127.0.0.1:7101,2=127.0.0.1:7102,3=127.0.0.1:7103
///          --initial-cluster-size 3 --data-dir ./raftkv-data/node-1
#[derive(Parser, Debug)]
#[command(name = "kvnode", version, about, long_about = None, verbatim_doc_comment)]
struct Args {
    /// This node's id, at least 1 and stable for the node's life. Initial members are
    /// 1..=--initial-cluster-size. With --discovery dns:... it defaults to the pod's
    /// StatefulSet ordinal + 1 (kv-2 -> 3).
    #[arg(long)]
    id: Option<u64>,

    /// How to find peers: `static` (use --peers) or `dns:<headless-service-fqdn>` for a
    /// StatefulSet: peers are <statefulset>-<ordinal>.<fqdn> on the peer port, names resolved
    /// again on every reconnect.
    #[arg(long, default_value = "static")]
    discovery: raftkv_node::discovery::Discovery,

    /// The pod's hostname for --discovery dns (default: $HOSTNAME, else the kernel's).
    #[arg(long)]
    hostname: Option<String>,

    /// Address the client port (Kv, Cluster and health services) listens on.
    #[arg(long, default_value = "127.0.0.1:7001")]
    listen_client: SocketAddr,

    /// Address the peer port (Raft traffic between members) listens on.
    #[arg(long, default_value = "127.0.0.1:7101")]
    listen_peer: SocketAddr,

    /// Address to serve Prometheus metrics on (GET /metrics); not served when unset.
    #[arg(long)]
    listen_metrics: Option<SocketAddr>,

    /// Client address other members and clients use to reach this node (host:port); defaults to
    /// --listen-client. Set it when listening on 0.0.0.0.
    #[arg(long)]
    advertise_client: Option<String>,

    /// Peer address other members use to reach this node (host:port); defaults to --listen-peer.
    #[arg(long)]
    advertise_peer: Option<String>,

    /// Peer addresses of the initial members: id=host:port,... (this node may be included).
    #[arg(long, value_delimiter = ',', value_parser = parse_peer)]
    peers: Vec<(u64, String)>,

    /// Directory for the write-ahead log, snapshots and the cluster id. Created if missing.
    #[arg(long, default_value = "./raftkv-data")]
    data_dir: PathBuf,

    /// Size N of the initial cluster: members 1..=N bootstrap it together on first start. A node
    /// with state on disk ignores this; a node with an empty data dir first asks its peers and
    /// joins a running cluster instead of bootstrapping a second one.
    #[arg(long, default_value_t = 1)]
    initial_cluster_size: u64,

    /// Mixed into the cluster id so that separately created clusters never accept each other's
    /// messages. Use a unique value per cluster.
    #[arg(long, default_value = "raftkv")]
    initial_cluster_token: String,

    /// Length of one Raft tick (heartbeat interval), e.g. 100ms; at least 1ms.
    #[arg(long, default_value = "100ms", value_parser = parse_tick)]
    tick: Duration,

    /// Minimum election timeout in ticks (at least 2); each timeout is random in [T, 2T).
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(2..))]
    election_ticks: u64,

    /// Take a snapshot and compact the log every this many applied entries (at least 1).
    #[arg(long, default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(1..))]
    snapshot_entries: u64,

    /// Entries kept below each snapshot when compacting (0: none), so that a follower behind by
    /// fewer catches up from the log instead of receiving the whole snapshot.
    #[arg(long, default_value_t = 5_000)]
    snapshot_trailing_entries: u64,

    /// How long a peer may stay silent: the deadline of a unary call to it, and of the answer to
    /// an HTTP/2 keepalive ping (sent after 1 s with nothing from the peer). A peer silent longer
    /// is given up and reported unreachable; its messages go out again on a new connection.
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    peer_timeout: Duration,

    /// How long to wait for leadership to move away on shutdown.
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    shutdown_timeout: Duration,

    /// Switch on a deliberate bug by name, to prove the fault-injection tests catch it.
    #[cfg(feature = "planted-bugs")]
    #[arg(long, hide = true)]
    planted_bug: Option<raftkv_node::planted::PlantedBug>,

    /// Test hook: with state on disk, hold start-up this long after the ports opened (as if loading a large
    /// snapshot took that long).
    #[cfg(feature = "planted-bugs")]
    #[arg(long, hide = true, value_parser = parse_duration)]
    test_slow_start: Option<Duration>,

    /// Address to serve only the gRPC health service on, always plain TCP: for the kubelet's
    /// gRPC probes, which cannot speak TLS, when the client port has TLS. Not served when unset.
    #[arg(long)]
    listen_health: Option<SocketAddr>,

    /// Mutual TLS on the peer port: this node's certificate (PEM), presented to peers both when
    /// serving and when dialing. It must be valid for the host of --advertise-peer.
    #[arg(long, value_name = "FILE", requires_all = ["peer_key", "peer_ca"])]
    peer_cert: Option<PathBuf>,

    /// The private key of --peer-cert (PEM).
    #[arg(long, value_name = "FILE", requires = "peer_cert")]
    peer_key: Option<PathBuf>,

    /// The CA (PEM) that peers' certificates must chain to.
    #[arg(long, value_name = "FILE", requires = "peer_cert")]
    peer_ca: Option<PathBuf>,

    /// TLS on the client port: this node's certificate (PEM).
    #[arg(long, value_name = "FILE", requires = "client_key")]
    client_cert: Option<PathBuf>,

    /// The private key of --client-cert (PEM).
    #[arg(long, value_name = "FILE", requires = "client_cert")]
    client_key: Option<PathBuf>,

    /// Require client certificates that chain to this CA (PEM) on the client port.
    #[arg(long, value_name = "FILE", requires = "client_cert")]
    client_ca: Option<PathBuf>,

    /// Log filter (tracing EnvFilter syntax), e.g. info or raftkv_node=debug.
    #[arg(long, default_value = "info")]
    log: String,

    /// Threads that run the node's tasks (gRPC, the Raft loop, peers); fsyncs have a thread of
    /// their own besides. Default: one per CPU the process may use (its cgroup's quota counts).
    /// 1 gives the lowest latency to a lone client (no idle thread to wake per request) and
    /// about 9% less throughput under load (docs/benchmarks.md, "What bounds it now").
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..=1024))]
    worker_threads: Option<u16>,
}

/// Why a flag's value, or the node's identity derived from the flags, is refused. clap prints it
/// after the flag's name and exits with code 2.
#[derive(Debug, thiserror::Error)]
enum FlagError {
    #[error("{0:?} is not id=host:port")]
    NotAPeer(String),
    #[error("{0:?} is not a node id")]
    NotANodeId(String),
    #[error("node id 0 is reserved")]
    ReservedNodeId,
    #[error("{0:?} is not host:port")]
    NotHostPort(String),
    #[error("{0:?}: a tick must be at least 1ms")]
    TickTooShort(String),
    #[error("{0:?} is not a duration")]
    NotADuration(String),
    #[error("{0:?}: use ms, s or m")]
    UnknownUnit(String),
    #[error("--id is required (or use --discovery dns:<headless-service>)")]
    MissingId,
    #[error("cannot tell this machine's hostname; pass --hostname")]
    NoHostname,
    #[error(transparent)]
    Discovery(#[from] DiscoveryError),
}

fn parse_peer(s: &str) -> Result<(u64, String), FlagError> {
    let (id, addr) = s
        .split_once('=')
        .ok_or_else(|| FlagError::NotAPeer(s.to_string()))?;
    let id: u64 = id
        .trim()
        .parse()
        .map_err(|_| FlagError::NotANodeId(id.to_string()))?;
    if id == 0 {
        return Err(FlagError::ReservedNodeId);
    }
    let addr = addr.trim();
    if addr
        .rsplit_once(':')
        .is_none_or(|(h, p)| h.is_empty() || p.parse::<u16>().is_err())
    {
        return Err(FlagError::NotHostPort(addr.to_string()));
    }
    Ok((id, addr.to_string()))
}

/// A tick: a duration of at least a millisecond (a zero tick would spin the event loop).
fn parse_tick(s: &str) -> Result<Duration, FlagError> {
    let d = parse_duration(s)?;
    if d < Duration::from_millis(1) {
        return Err(FlagError::TickTooShort(s.to_string()));
    }
    Ok(d)
}

fn parse_duration(s: &str) -> Result<Duration, FlagError> {
    let s = s.trim();
    let (num, unit) = s
        .find(|c: char| !c.is_ascii_digit())
        .map_or((s, "s"), |i| s.split_at(i));
    let n: u64 = num
        .parse()
        .map_err(|_| FlagError::NotADuration(s.to_string()))?;
    match unit {
        "ms" => Ok(Duration::from_millis(n)),
        "s" => Ok(Duration::from_secs(n)),
        "m" => Ok(Duration::from_secs(n * 60)),
        _ => Err(FlagError::UnknownUnit(s.to_string())),
    }
}

async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

fn main() -> ExitCode {
    let args = Args::parse();
    let filter = tracing_subscriber::EnvFilter::try_new(&args.log)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    if let Some(n) = args.worker_threads {
        builder.worker_threads(usize::from(n));
    }
    let runtime = match builder.enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("kvnode: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(run(args))
}

/// The node's id, peers and advertised addresses, from the flags and the discovery mode.
fn identity(args: &Args) -> Result<(u64, BTreeMap<u64, String>, String, String), FlagError> {
    let mut peers: BTreeMap<u64, String> = args.peers.iter().cloned().collect();
    match &args.discovery {
        Discovery::Static => {
            let id = args.id.ok_or(FlagError::MissingId)?;
            let advertise_client = args
                .advertise_client
                .clone()
                .unwrap_or_else(|| args.listen_client.to_string());
            let advertise_peer = args
                .advertise_peer
                .clone()
                .or_else(|| peers.get(&id).cloned())
                .unwrap_or_else(|| args.listen_peer.to_string());
            Ok((id, peers, advertise_client, advertise_peer))
        }
        Discovery::Dns { service } => {
            let hostname = args
                .hostname
                .clone()
                .or_else(raftkv_node::discovery::local_hostname)
                .ok_or(FlagError::NoHostname)?;
            let plan = raftkv_node::discovery::dns_plan(
                &hostname,
                service,
                args.listen_peer.port(),
                args.listen_client.port(),
                args.initial_cluster_size,
            )?;
            let id = args.id.unwrap_or(plan.id);
            for (pid, addr) in plan.peers {
                peers.entry(pid).or_insert(addr);
            }
            Ok((
                id,
                peers,
                args.advertise_client
                    .clone()
                    .unwrap_or(plan.advertise_client),
                args.advertise_peer.clone().unwrap_or(plan.advertise_peer),
            ))
        }
    }
}

async fn run(args: Args) -> ExitCode {
    info!(
        worker_threads = tokio::runtime::Handle::current().metrics().num_workers(),
        "kvnode {}",
        env!("CARGO_PKG_VERSION")
    );
    let (id, peers, advertise_client, advertise_peer) = match identity(&args) {
        Ok(x) => x,
        Err(e) => {
            error!("{e}");
            return ExitCode::from(2);
        }
    };
    let cfg = NodeConfig {
        id,
        advertise_client,
        advertise_peer,
        peers,
        data_dir: args.data_dir,
        initial_cluster_size: args.initial_cluster_size,
        initial_cluster_token: args.initial_cluster_token,
        driver: DriverConfig {
            tick: args.tick,
            election_ticks: args.election_ticks,
            snapshot_entries: args.snapshot_entries,
            snapshot_trailing_entries: args.snapshot_trailing_entries,
            #[cfg(feature = "planted-bugs")]
            planted_bug: args.planted_bug,
            #[cfg(feature = "planted-bugs")]
            slow_start: args.test_slow_start,
            ..DriverConfig::default()
        },
        transport: TransportConfig {
            rpc_timeout: args.peer_timeout,
            ..TransportConfig::default()
        },
        seed: None,
        listen_metrics: args.listen_metrics,
        listen_health: args.listen_health,
        tls: TlsOptions {
            peer: args.peer_cert.map(|cert| TlsFiles {
                cert,
                key: args.peer_key.unwrap_or_default(),
                ca: args.peer_ca,
            }),
            client: args.client_cert.map(|cert| TlsFiles {
                cert,
                key: args.client_key.unwrap_or_default(),
                ca: args.client_ca,
            }),
        },
    };
    let mut node = match raftkv_node::start(cfg, args.listen_client, args.listen_peer).await {
        Ok(n) => n,
        Err(e) => {
            error!("cannot start: {e}");
            return ExitCode::FAILURE;
        }
    };
    tokio::select! {
        _ = shutdown_signal() => {}
        r = node.wait() => {
            error!("node stopped: {:?}", r.err());
            return ExitCode::FAILURE;
        }
    }
    info!("shutting down");
    let handle = node.handle();
    let is_leader = node.observe().borrow().role == raftkv_raft::Role::Leader;
    if is_leader {
        match tokio::time::timeout(args.shutdown_timeout, handle.transfer_leader(0)).await {
            Ok(Ok(to)) => info!(to, "leadership handed over"),
            Ok(Err(e)) => info!("leadership not handed over: {e}"),
            Err(_) => warn!("leader transfer timed out"),
        }
    }
    match node.stop().await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            error!("stopped with an error: {e}");
            ExitCode::FAILURE
        }
    }
}
