//! A harness for multi-process tests: real `kvnode` processes on 127.0.0.1 (DESIGN.md §8.3), or
//! each in its own network namespace with its own IP ([`Network::Netns`]).
//!
//! - [`Cluster`]: starts `n` nodes, each with its own ports, data dir and log file inside one
//!   temporary directory, and offers the faults a test needs: [`Cluster::kill9`],
//!   [`Cluster::sigstop`] / [`Cluster::sigcont`], [`Cluster::sigterm`] (waits for the exit
//!   status), [`Cluster::restart`] (same data dir, same ports), [`Cluster::add_node`] (a new, empty
//!   node that finds the cluster and waits to be added); and what it needs to look at the cluster:
//!   [`Cluster::status`] of one node, [`Cluster::leader`] (agreed by a quorum),
//!   [`Cluster::wait_voter`], [`Cluster::wait_caught_up`], [`Cluster::client`].
//!
//! The writes a test makes against a cluster are in `workload.rs`, its ports come from
//! `ports.rs`, and every wait goes through `wait.rs`.
//!
//! Networks ([`ClusterOptions::network`]):
//! - [`Network::Loopback`] (the default): every node on 127.0.0.1 with its own ports.
//! - [`Network::Netns`]: every node in its own namespace (see `netns.rs`), started as
//!   `ip netns exec <ns> kvnode ...`, listening on its own IP with the fixed ports
//!   [`NETNS_CLIENT_PORT`] and [`NETNS_PEER_PORT`] (no port races: the IP is its own). The test
//!   process reaches the nodes through a veth into the root namespace. This adds partitions
//!   ([`Cluster::isolate`], [`Cluster::cut_peers`], [`Cluster::heal`]) and, with
//!   [`ClusterOptions::dns_service`], StatefulSet-style discovery: nodes run with
//!   `--discovery dns:<service> --hostname kv-<id - 1>` and find each other through their
//!   namespaces' hosts files. A node's name is published there when it is launched (a pod's DNS
//!   record appears with the pod) and follows it when it moves ([`Cluster::move_node`]).
//!   Tests that use it call [`netns_or_skip`](super::netns::netns_or_skip) first.
//!
//! Hygiene, and why:
//! - Ports are picked at random *below* the kernel's ephemeral range and checked by binding: the
//!   ephemeral range is where `bind(:0)` in other tests and every outgoing connection take their
//!   ports, so a port picked there could be gone again by the time `kvnode` (re)binds it. A start
//!   that still loses a port race (the node exits with "Address already in use") is retried with
//!   fresh ports; a restart retries the same ports for a while.
//! - Every cluster gets a unique `--initial-cluster-token`, hence a unique cluster id, and a node
//!   counts as started only when it answers `Cluster.Status` with its id *and* that cluster id —
//!   so a test can never mistake another test's process for its own.
//! - Each node's stdout and stderr go to `node-<id>.log` in the temporary directory (appended
//!   across restarts, with a header line per start). When a test panics, [`Cluster`]'s `Drop`
//!   prints the tail of every log; set `RAFTKV_KEEP_TEST_DIR=1` to keep the directory, and
//!   e.g. `RAFTKV_TEST_LOG=raftkv_node=debug` (an EnvFilter; plain `debug` adds the h2 frames)
//!   for more detailed node logs.
//! - Children are killed (SIGKILL) and reaped in `Drop`, also while a test panics. If the test
//!   process itself is SIGKILLed (a CI timeout), `Drop` never runs; for that case every node has a
//!   tiny watchdog (`sh`) reading a pipe from the test process: when the pipe closes, it kills
//!   the node, so no orphaned `kvnode` keeps ports and CPU busy.
//!
//! ```ignore
//! let mut cluster = Cluster::start(3).await;
//! let leader = cluster.leader().await;
//! cluster.kill9(leader);
//! let new_leader = wait_for("a new leader", Duration::from_secs(15), async || {
//!     cluster.try_leader().await.filter(|&l| l != leader)
//! }).await;
//! cluster.restart(leader).await;
//! ```

// Each test file uses a different part of this harness.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::fs::{self, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, SocketAddrV4};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use raftkv_client::{Client, ClientOptions, Consistency, KeyValue};
use raftkv_proto::v1 as pb;
use tempfile::TempDir;
use tokio::task::JoinSet;
use tonic::transport::{Channel, Endpoint};

use super::netns::Net;
use super::ports::reserve_ports;
use super::tls::{CertFiles, TestPki};
use super::wait::{POLL_INTERVAL, wait_for};
use super::workload::{WriteHistory, assert_problems_empty};
use super::{random_u64, test_client_options};

/// The node binary under test, built by cargo for this package's integration tests.
pub const KVNODE: &str = env!("CARGO_BIN_EXE_kvnode");

/// How long one `Cluster.Status` call may take. A SIGSTOPped node never answers, and a poll
/// must not hang on it.
const STATUS_TIMEOUT: Duration = Duration::from_secs(1);
/// Lines of each node's log printed when a test fails.
const LOG_TAIL_LINES: usize = 60;
/// How many times a start that lost a port race is retried.
const PORT_RETRIES: u32 = 5;
/// The client port of every node in [`Network::Netns`] mode (each node has its own IP).
pub const NETNS_CLIENT_PORT: u16 = 7000;
/// The peer port of every node in [`Network::Netns`] mode.
pub const NETNS_PEER_PORT: u16 = 7100;

/// Where a [`Cluster`]'s nodes live. See the module docs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Network {
    /// All nodes on 127.0.0.1, each with its own ports.
    #[default]
    Loopback,
    /// Each node in its own network namespace with its own IP.
    Netns,
}

/// How the nodes of a [`Cluster`] run. [`Default`] is a fast but realistic configuration with
/// bounds generous enough for a loaded 2-core machine.
#[derive(Clone, Debug)]
pub struct ClusterOptions {
    /// `--tick`: one Raft tick (the heartbeat interval).
    pub tick: Duration,
    /// `--election-ticks`: the minimum election timeout in ticks.
    pub election_ticks: u64,
    /// `--snapshot-entries`: snapshot and compact the log every this many applied entries.
    pub snapshot_entries: u64,
    /// `--log`: the nodes' log filter. The environment variable `RAFTKV_TEST_LOG` overrides it.
    pub log_filter: String,
    /// More flags for every node, e.g. `["--peer-timeout", "1s"]`.
    pub extra_args: Vec<String>,
    /// How long a process may take to answer `Cluster.Status` after it was spawned.
    pub ready_timeout: Duration,
    /// How long [`Cluster::leader`] waits for a leader.
    pub leader_timeout: Duration,
    /// How long a node may take to exit after SIGTERM.
    pub stop_timeout: Duration,
    /// Where the nodes live.
    pub network: Network,
    /// With [`Network::Netns`]: run the nodes with `--discovery dns:<this>` and
    /// `--hostname kv-<id - 1>` instead of `--id` and `--peers`.
    pub dns_service: Option<String>,
    /// TLS on both ports (`--peer-*`, `--client-*`) with a CA made for the cluster. On loopback
    /// each node then gets its own address, 127.0.0.(id + 1), so that certificates (made for
    /// it) tell the members apart.
    pub tls: Option<TlsMode>,
}

/// How a [`Cluster`] with TLS runs its client port.
#[derive(Clone, Copy, Debug, Default)]
pub struct TlsMode {
    /// `--client-ca`: clients must present a certificate from the cluster's CA.
    pub client_ca: bool,
}

impl Default for ClusterOptions {
    fn default() -> Self {
        Self {
            // 50 ms x 10: elections after 0.5-1 s of silence. Fast enough that a failover test
            // takes seconds, slow enough that a busy 2-core machine rarely misses heartbeats.
            tick: Duration::from_millis(50),
            election_ticks: 10,
            snapshot_entries: 10_000,
            log_filter: "info".to_owned(),
            extra_args: Vec::new(),
            ready_timeout: Duration::from_secs(30),
            leader_timeout: Duration::from_secs(30),
            stop_timeout: Duration::from_secs(20),
            network: Network::Loopback,
            dns_service: None,
            tls: None,
        }
    }
}

/// A set of `kvnode` processes forming one cluster. See the module docs.
pub struct Cluster {
    /// `None` only while `Drop` decides whether to keep it.
    dir: Option<TempDir>,
    root: PathBuf,
    opts: ClusterOptions,
    initial_size: u64,
    token: String,
    cluster_id: String,
    created: Instant,
    nodes: BTreeMap<u64, Node>,
    /// The namespaces of [`Network::Netns`] mode. Dropped after `Drop` killed the nodes.
    net: Option<Net>,
    /// With [`ClusterOptions::tls`]: the cluster's CA, the client certificate of the test's
    /// clients, and the hosts each node's certificate was last issued for.
    pki: Option<ClusterPki>,
}

struct ClusterPki {
    pki: TestPki,
    client: CertFiles,
    issued: BTreeMap<u64, Vec<String>>,
}

/// One node: its fixed identity (ports, data dir, log) and its current process, if any.
struct Node {
    id: u64,
    client_addr: SocketAddr,
    peer_addr: SocketAddr,
    data_dir: PathBuf,
    log_path: PathBuf,
    /// `--peers` as given at the first start; restarts reuse it (the log knows the rest).
    peers: String,
    /// To the client port, for `Cluster.Status`. Reconnects by itself after a restart.
    channel: Channel,
    process: Option<Process>,
    /// SIGSTOPped and not yet continued: polls skip it instead of waiting for a timeout.
    stopped: bool,
    /// Removed from the configuration: no longer an endpoint or a leader candidate.
    retired: bool,
    starts: u32,
    /// Every exit status seen, in order.
    exits: Vec<ExitStatus>,
    /// Where the current start's output begins in the log, to read only its own lines.
    log_offset: u64,
}

/// A running `kvnode` and its watchdog.
struct Process {
    child: Child,
    watchdog: Option<Watchdog>,
}

/// `sh -c 'read; kill -KILL <pid>'` with its stdin a pipe from this process: if the test process
/// dies without running `Drop`, the pipe closes and the node is killed. Disarmed (killed) before
/// the node is reaped, so it can never signal a recycled pid.
struct Watchdog(Child);

impl Watchdog {
    fn spawn(pid: u32) -> Option<Self> {
        Command::new("sh")
            .arg("-c")
            .arg(r#"read -r _; kill -KILL "$1" 2>/dev/null"#)
            .arg("raftkv-test-watchdog")
            .arg(pid.to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .ok()
            .map(Watchdog)
    }

    fn disarm(mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Why a spawned process did not come up.
#[derive(Debug)]
enum StartFailure {
    /// It exited because a port was taken; worth retrying.
    PortInUse,
    /// It exited for another reason.
    Exited(ExitStatus),
    /// It neither exited nor answered in time.
    Timeout,
}

impl Cluster {
    /// Starts `n` nodes (ids `1..=n`) with [`ClusterOptions::default`] and waits for a leader.
    pub async fn start(n: u64) -> Cluster {
        Self::start_with(n, ClusterOptions::default()).await
    }

    /// Starts `n` nodes (ids `1..=n`, `--initial-cluster-size n`) and waits until every node
    /// answers and a quorum agrees on a leader. Panics (printing the logs) if that fails.
    pub async fn start_with(n: u64, opts: ClusterOptions) -> Cluster {
        if opts.network == Network::Netns {
            let mut cluster = Self::prepare(n, opts);
            let started = Instant::now();
            for id in 1..=n {
                cluster.launch(id);
            }
            for id in 1..=n {
                cluster.wait_node_started(id).await;
            }
            let leader = cluster.leader().await;
            eprintln!(
                "[harness] {n} nodes started in namespaces in {:.2?}, leader {leader}, dir {}",
                started.elapsed(),
                cluster.root.display()
            );
            return cluster;
        }
        let mut cluster = Self::empty(n, opts);
        let started = Instant::now();
        for attempt in 1..=PORT_RETRIES {
            let ports = reserve_ports(2 * n as usize);
            let peers = (1..=n)
                .map(|id| {
                    let ip = cluster.loopback_ip(id);
                    format!("{id}={ip}:{}", ports[(n + id - 1) as usize])
                })
                .collect::<Vec<_>>()
                .join(",");
            for id in 1..=n {
                let node = cluster.new_node(
                    id,
                    ports[(id - 1) as usize],
                    ports[(n + id - 1) as usize],
                    peers.clone(),
                );
                cluster.nodes.insert(id, node);
                cluster.spawn(id);
            }
            let mut port_race = false;
            for id in 1..=n {
                match cluster.wait_started(id).await {
                    Ok(()) => {}
                    Err(StartFailure::PortInUse) => {
                        // The others may wait for it in vain (bootstrap needs a quorum).
                        port_race = true;
                        break;
                    }
                    Err(other) => panic!("node {id} did not start: {other:?}"),
                }
            }
            if !port_race {
                break;
            }
            assert!(
                attempt < PORT_RETRIES,
                "lost a port race {PORT_RETRIES} times"
            );
            // Start over with fresh ports and empty data dirs: the peers lists name the ports.
            eprintln!("[harness] a port was taken; starting the cluster again with new ports");
            cluster.kill_all();
            for node in std::mem::take(&mut cluster.nodes).into_values() {
                let _ = fs::remove_dir_all(&node.data_dir);
            }
        }
        let leader = cluster.leader().await;
        eprintln!(
            "[harness] {n} nodes started in {:.2?}, leader {leader}, dir {}",
            started.elapsed(),
            cluster.root.display()
        );
        cluster
    }

    /// A cluster with no nodes yet: the temporary directory and the unique token.
    fn empty(n: u64, opts: ClusterOptions) -> Cluster {
        assert!(n >= 1, "a cluster needs at least one node");
        let dir = tempfile::Builder::new()
            .prefix("raftkv-proc-")
            .tempdir()
            .expect("create a temporary directory");
        let root = dir.path().to_path_buf();
        let token = format!("proc-test-{}-{:016x}", std::process::id(), random_u64());
        let cluster_id = raftkv_node::node::derive_cluster_id(&token, n);
        Cluster {
            dir: Some(dir),
            root,
            opts,
            initial_size: n,
            token,
            cluster_id,
            created: Instant::now(),
            nodes: BTreeMap::new(),
            net: None,
            pki: None,
        }
        .with_pki()
    }

    /// Makes the CA and the clients' certificate when the options ask for TLS.
    fn with_pki(mut self) -> Cluster {
        if self.opts.tls.is_some() {
            let pki = TestPki::new(&self.root.join("pki"), &self.token);
            let client = pki.issue_client("client");
            self.pki = Some(ClusterPki {
                pki,
                client,
                issued: BTreeMap::new(),
            });
        }
        self
    }

    /// The cluster's CA, with TLS.
    pub fn pki(&self) -> Option<&TestPki> {
        self.pki.as_ref().map(|p| &p.pki)
    }

    /// The certificate the test's clients present, with TLS.
    pub fn client_cert(&self) -> Option<&CertFiles> {
        self.pki.as_ref().map(|p| &p.client)
    }

    /// Node `id`'s certificate and key files (`node-<id>.crt`, `.key`) with TLS.
    pub fn node_cert(&self, id: u64) -> Option<CertFiles> {
        let dir = self.root.join("pki");
        self.pki.as_ref().map(|_| CertFiles {
            cert: dir.join(format!("node-{id}.crt")),
            key: dir.join(format!("node-{id}.key")),
        })
    }

    /// [`test_client_options`], with the cluster's TLS when it has TLS.
    pub fn client_options(&self) -> ClientOptions {
        ClientOptions {
            tls: self.pki.as_ref().map(|p| p.pki.client_tls(Some(&p.client))),
            ..test_client_options()
        }
    }

    /// The connector for the harness' own status calls, with TLS.
    fn status_connector(&self) -> Option<raftkv_proto::tls::Connector> {
        self.pki.as_ref().map(|p| p.pki.connector(Some(&p.client)))
    }

    /// With TLS: issues node `id` a certificate for its current hosts if it has none for them
    /// yet, and returns the flags that use it.
    fn tls_args(&mut self, id: u64) -> Vec<String> {
        let Some(mode) = self.opts.tls else {
            return Vec::new();
        };
        let mut hosts = vec![self.node(id).client_addr.ip().to_string()];
        hosts.extend(self.dns_name(id));
        let files = self.node_cert(id).expect("TLS clusters have a PKI");
        let pki = self.pki.as_mut().expect("TLS clusters have a PKI");
        if pki.issued.get(&id) != Some(&hosts) {
            pki.pki.issue_node(&format!("node-{id}"), &hosts, 30);
            pki.issued.insert(id, hosts);
        }
        let (cert, key, ca) = (
            files.cert.display().to_string(),
            files.key.display().to_string(),
            pki.pki.ca().display().to_string(),
        );
        let mut args = vec![
            "--peer-cert".into(),
            cert.clone(),
            "--peer-key".into(),
            key.clone(),
            "--peer-ca".into(),
            ca.clone(),
            "--client-cert".into(),
            cert,
            "--client-key".into(),
            key,
        ];
        if mode.client_ca {
            args.extend(["--client-ca".into(), ca]);
        }
        args
    }

    /// [`Network::Netns`] only: creates the namespaces and the nodes `1..=n` of a cluster but
    /// starts none of them, for tests that start nodes one by one ([`Cluster::launch`], then
    /// [`Cluster::wait_node_started`]). [`Cluster::start_with`] does all of it.
    pub fn prepare(n: u64, opts: ClusterOptions) -> Cluster {
        assert_eq!(
            opts.network,
            Network::Netns,
            "Cluster::prepare is for the netns network"
        );
        let mut cluster = Self::empty(n, opts);
        let mut net = Net::new();
        let addrs: BTreeMap<u64, Ipv4Addr> =
            (1..=n).map(|id| (id, net.add_host(&label(id)))).collect();
        let peers = addrs
            .iter()
            .map(|(id, ip)| format!("{id}={ip}:{NETNS_PEER_PORT}"))
            .collect::<Vec<_>>()
            .join(",");
        for (&id, &ip) in &addrs {
            let node = cluster.new_node_at(
                id,
                netns_addr(ip, true),
                netns_addr(ip, false),
                peers.clone(),
            );
            cluster.nodes.insert(id, node);
        }
        cluster.net = Some(net);
        cluster
    }

    /// The loopback address of node `id`: 127.0.0.1, or with TLS one of its own (see
    /// [`ClusterOptions::tls`]).
    pub fn loopback_ip(&self, id: u64) -> Ipv4Addr {
        match self.opts.tls {
            Some(_) => Ipv4Addr::new(127, 0, 0, u8::try_from(id + 1).expect("ids below 255")),
            None => Ipv4Addr::LOCALHOST,
        }
    }

    fn new_node(&self, id: u64, client_port: u16, peer_port: u16, peers: String) -> Node {
        let ip = self.loopback_ip(id);
        let client_addr = SocketAddr::V4(SocketAddrV4::new(ip, client_port));
        let peer_addr = SocketAddr::V4(SocketAddrV4::new(ip, peer_port));
        self.new_node_at(id, client_addr, peer_addr, peers)
    }

    fn new_node_at(
        &self,
        id: u64,
        client_addr: SocketAddr,
        peer_addr: SocketAddr,
        peers: String,
    ) -> Node {
        Node {
            id,
            client_addr,
            peer_addr,
            data_dir: self.root.join(format!("node-{id}")),
            log_path: self.root.join(format!("node-{id}.log")),
            peers,
            channel: status_channel(client_addr, self.status_connector()),
            process: None,
            stopped: false,
            retired: false,
            starts: 0,
            exits: Vec::new(),
            log_offset: 0,
        }
    }

    /// [`Network::Netns`]: publishes node `id`'s DNS name (in DNS mode) and spawns its process
    /// without waiting for it to answer; see [`Cluster::wait_node_started`].
    pub fn launch(&mut self, id: u64) {
        if let Some(name) = self.dns_name(id) {
            let ip = self.client_addr(id).ip();
            let IpAddr::V4(ip) = ip else {
                panic!("test hosts have IPv4 addresses, not {ip}")
            };
            self.net_mut().set_name(&name, Some(ip));
        }
        self.spawn(id);
    }

    /// Waits until node `id` answers `Cluster.Status` as a member of this cluster (it has
    /// bootstrapped or joined); panics if it exits or does not answer within
    /// [`ClusterOptions::ready_timeout`].
    pub async fn wait_node_started(&mut self, id: u64) {
        if let Err(e) = self.wait_started(id).await {
            panic!("node {id} did not start: {e:?}");
        }
    }

    /// Spawns node `id`'s process with its fixed flags. Does not wait for it.
    fn spawn(&mut self, id: u64) {
        let tls_args = self.tls_args(id);
        let elapsed = self.created.elapsed();
        let opts = self.opts.clone();
        let initial_size = self.initial_size;
        let token = self.token.clone();
        let prefix = self
            .net
            .as_ref()
            .map(|net| net.exec_prefix(&label(id)))
            .unwrap_or_default();
        let node = self.node_mut(id);
        assert!(node.process.is_none(), "node {id} is already running");
        let log_filter = std::env::var("RAFTKV_TEST_LOG").unwrap_or(opts.log_filter);
        let mut args: Vec<String> = match &opts.dns_service {
            // The id, the peers and the advertised names all follow from the hostname.
            Some(service) => vec![
                "--discovery".into(),
                format!("dns:{service}"),
                "--hostname".into(),
                format!("kv-{}", id - 1),
            ],
            None => vec![
                "--id".into(),
                id.to_string(),
                "--advertise-client".into(),
                node.client_addr.to_string(),
                "--advertise-peer".into(),
                node.peer_addr.to_string(),
                "--peers".into(),
                node.peers.clone(),
            ],
        };
        args.extend([
            "--listen-client".into(),
            node.client_addr.to_string(),
            "--listen-peer".into(),
            node.peer_addr.to_string(),
            "--data-dir".into(),
            node.data_dir.display().to_string(),
            "--initial-cluster-size".into(),
            initial_size.to_string(),
            "--initial-cluster-token".into(),
            token,
            "--tick".into(),
            format!("{}ms", opts.tick.as_millis()),
            "--election-ticks".into(),
            opts.election_ticks.to_string(),
            "--snapshot-entries".into(),
            opts.snapshot_entries.to_string(),
            "--log".into(),
            log_filter,
        ]);
        args.extend(tls_args);
        args.extend(opts.extra_args);
        node.starts += 1;
        let mut log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&node.log_path)
            .expect("open the node's log file");
        node.log_offset = log.metadata().map_or(0, |m| m.len());
        let _ = writeln!(
            log,
            "==== harness: start #{} of node {id} at +{elapsed:.3?}: {}{KVNODE} {}",
            node.starts,
            prefix.iter().map(|p| format!("{p} ")).collect::<String>(),
            args.join(" ")
        );
        let stderr = log.try_clone().expect("duplicate the log file handle");
        let mut command = match prefix.split_first() {
            Some((program, rest)) => {
                let mut c = Command::new(program);
                c.args(rest).arg(KVNODE);
                c
            }
            None => Command::new(KVNODE),
        };
        let child = command
            .args(&args)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(stderr)
            .env("RUST_BACKTRACE", "1")
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {KVNODE}: {e}"));
        let watchdog = Watchdog::spawn(child.id());
        node.process = Some(Process { child, watchdog });
        node.stopped = false;
    }

    /// Waits until node `id` answers `Cluster.Status` as itself in this cluster, or exits.
    async fn wait_started(&mut self, id: u64) -> Result<(), StartFailure> {
        let deadline = Instant::now() + self.opts.ready_timeout;
        loop {
            if let Some(status) = self.reap_if_exited(id) {
                return Err(if self.log_says_port_in_use(id) {
                    StartFailure::PortInUse
                } else {
                    StartFailure::Exited(status)
                });
            }
            if self.status(id).await.is_ok() {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(StartFailure::Timeout);
            }
            tokio::time::sleep(POLL_INTERVAL).await;
        }
    }

    fn log_says_port_in_use(&self, id: u64) -> bool {
        let node = self.node(id);
        read_log_from(&node.log_path, node.log_offset).contains("Address already in use")
    }

    // ----- identity ------------------------------------------------------------------------

    /// The ids of every node this cluster has started, retired ones included.
    pub fn ids(&self) -> Vec<u64> {
        self.nodes.keys().copied().collect()
    }

    /// The ids of the nodes that are still meant to be members (not [`Cluster::retire`]d).
    pub fn member_ids(&self) -> Vec<u64> {
        self.nodes
            .values()
            .filter(|n| !n.retired)
            .map(|n| n.id)
            .collect()
    }

    /// Node `id`'s client address.
    pub fn client_addr(&self, id: u64) -> SocketAddr {
        self.node(id).client_addr
    }

    /// Node `id`'s peer address.
    pub fn peer_addr(&self, id: u64) -> SocketAddr {
        self.node(id).peer_addr
    }

    /// Node `id`'s client address as the client library names it (`http://host:port`), e.g. to
    /// compare with [`Client::leader`].
    pub fn client_uri(&self, id: u64) -> String {
        format!("http://{}", self.node(id).client_addr)
    }

    /// The id of the node whose client URI is `uri` (see [`Cluster::client_uri`]).
    pub fn id_of_uri(&self, uri: &str) -> Option<u64> {
        self.nodes
            .values()
            .find(|n| format!("http://{}", n.client_addr) == uri)
            .map(|n| n.id)
    }

    /// Node `id`'s data directory.
    pub fn data_dir(&self, id: u64) -> &Path {
        &self.node(id).data_dir
    }

    /// Node `id`'s log file.
    pub fn log_path(&self, id: u64) -> &Path {
        &self.node(id).log_path
    }

    /// The cluster id every node must report.
    pub fn cluster_id(&self) -> &str {
        &self.cluster_id
    }

    /// Whether node `id` has a live process (running or SIGSTOPped). Reaps it if it exited.
    pub fn is_running(&mut self, id: u64) -> bool {
        let _ = self.reap_if_exited(id);
        self.node(id).process.is_some()
    }

    /// The process id of node `id`, if it is running.
    pub fn pid(&self, id: u64) -> Option<u32> {
        self.node(id).process.as_ref().map(|p| p.child.id())
    }

    /// Every exit status node `id` has had, in order.
    pub fn exits(&self, id: u64) -> &[ExitStatus] {
        &self.node(id).exits
    }

    /// The client addresses of the member nodes (running or not): what a client is configured
    /// with.
    pub fn endpoints(&self) -> Vec<String> {
        self.member_ids()
            .into_iter()
            .map(|id| self.client_addr(id).to_string())
            .collect()
    }

    /// A client for the member nodes, with [`test_client_options`].
    pub async fn client(&self) -> Client {
        Client::connect(self.endpoints(), self.client_options())
            .await
            .expect("client for the cluster")
    }

    /// A client that talks only to node `id` (e.g. for its STALE reads).
    pub async fn client_of(&self, id: u64) -> Client {
        Client::connect(
            vec![self.client_addr(id).to_string()],
            self.client_options(),
        )
        .await
        .expect("client for one node")
    }

    /// Marks node `id` as no longer a member (after `RemoveMember`): it stops being an endpoint
    /// of [`Cluster::client`] and a candidate of [`Cluster::leader`]. Its process is untouched.
    pub fn retire(&mut self, id: u64) {
        self.node_mut(id).retired = true;
    }

    // ----- faults --------------------------------------------------------------------------

    /// SIGKILL: the process dies at once, without any clean-up (what it wrote but did not fsync
    /// survives in the page cache; only a machine crash would lose that). Returns when it has
    /// been reaped.
    pub fn kill9(&mut self, id: u64) -> ExitStatus {
        let node = self.node_mut(id);
        let mut process = node
            .process
            .take()
            .unwrap_or_else(|| panic!("kill9: node {id} is not running"));
        if let Some(w) = process.watchdog.take() {
            w.disarm();
        }
        // SIGKILL works on a stopped process too.
        let _ = process.child.kill();
        let status = process.child.wait().expect("reap a killed node");
        node.stopped = false;
        node.exits.push(status);
        status
    }

    /// SIGKILL to every running node at once (a power cut), then reaps them.
    pub fn kill9_all(&mut self) {
        let running: Vec<u64> = self
            .nodes
            .values()
            .filter(|n| n.process.is_some())
            .map(|n| n.id)
            .collect();
        for &id in &running {
            if let Some(pid) = self.pid(id) {
                let _ = kill(Pid::from_raw(pid as i32), Signal::SIGKILL);
            }
        }
        for id in running {
            self.kill9(id);
        }
    }

    /// SIGSTOP: the process freezes (no ticks, no replies) but keeps its connections, like a
    /// long GC pause or a hung VM.
    pub fn sigstop(&mut self, id: u64) {
        self.signal(id, Signal::SIGSTOP);
        self.node_mut(id).stopped = true;
    }

    /// SIGCONT: a SIGSTOPped process resumes.
    pub fn sigcont(&mut self, id: u64) {
        self.signal(id, Signal::SIGCONT);
        self.node_mut(id).stopped = false;
    }

    /// SIGTERM, then waits (up to [`ClusterOptions::stop_timeout`]) for the process to exit and
    /// returns its status. A leader hands leadership over before it exits. Panics if the process
    /// does not exit in time (after killing it).
    pub async fn sigterm(&mut self, id: u64) -> ExitStatus {
        self.send_sigterm(id);
        self.wait_exit(id).await
    }

    /// SIGTERM to every running node at once, then waits for all of them. Returns each exit
    /// status.
    pub async fn sigterm_all(&mut self) -> BTreeMap<u64, ExitStatus> {
        let running: Vec<u64> = self
            .nodes
            .values()
            .filter(|n| n.process.is_some())
            .map(|n| n.id)
            .collect();
        for &id in &running {
            self.send_sigterm(id);
        }
        let mut out = BTreeMap::new();
        for id in running {
            out.insert(id, self.wait_exit(id).await);
        }
        out
    }

    fn send_sigterm(&mut self, id: u64) {
        self.signal(id, Signal::SIGTERM);
        // A stopped process would keep the SIGTERM pending for ever.
        if self.node(id).stopped {
            self.sigcont(id);
        }
    }

    async fn wait_exit(&mut self, id: u64) -> ExitStatus {
        let deadline = Instant::now() + self.opts.stop_timeout;
        loop {
            if let Some(status) = self.reap_if_exited(id) {
                return status;
            }
            if Instant::now() > deadline {
                self.kill9(id);
                panic!(
                    "node {id} did not exit within {:?} of SIGTERM",
                    self.opts.stop_timeout
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    fn signal(&self, id: u64, signal: Signal) {
        let pid = self
            .pid(id)
            .unwrap_or_else(|| panic!("{signal}: node {id} is not running"));
        kill(Pid::from_raw(pid as i32), signal)
            .unwrap_or_else(|e| panic!("{signal} to node {id} (pid {pid}): {e}"));
    }

    /// If node `id`'s process has exited, reaps it and returns its status.
    fn reap_if_exited(&mut self, id: u64) -> Option<ExitStatus> {
        let node = self.node_mut(id);
        let process = node.process.as_mut()?;
        let status = process.child.try_wait().ok()??;
        if let Some(mut p) = node.process.take()
            && let Some(w) = p.watchdog.take()
        {
            w.disarm();
        }
        node.stopped = false;
        node.exits.push(status);
        Some(status)
    }

    /// Starts node `id` again on its data dir and ports, and waits until it answers. Retries for
    /// a while if a port is still taken (a socket of the old process lingering).
    pub async fn restart(&mut self, id: u64) {
        assert!(
            !self.is_running(id),
            "restart: node {id} is still running; kill it first"
        );
        for attempt in 1..=PORT_RETRIES {
            self.spawn(id);
            match self.wait_started(id).await {
                Ok(()) => return,
                Err(StartFailure::PortInUse) if attempt < PORT_RETRIES => {
                    eprintln!("[harness] node {id}: a port is still taken; retrying");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
                Err(other) => panic!("node {id} did not restart: {other:?}"),
            }
        }
    }

    /// Deletes node `id`'s data dir, as if its volume were lost. The node must not be running;
    /// a [`Cluster::restart`] then starts it empty, and it must rejoin without bootstrapping.
    pub fn wipe(&mut self, id: u64) {
        assert!(
            !self.is_running(id),
            "wipe: node {id} is still running; kill it first"
        );
        let dir = self.data_dir(id).to_path_buf();
        match fs::remove_dir_all(&dir) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => panic!("wipe {}: {e}", dir.display()),
        }
    }

    /// Starts a new node `id` with an empty data dir and fresh ports; `--peers` lists the member
    /// nodes and itself. It finds the cluster and waits to be added: the test then calls
    /// `AddMember` (e.g. [`Client::add_member`] with [`Cluster::peer_addr`] and
    /// [`Cluster::client_addr`]). Returns once the process has found the cluster (it answers
    /// `Cluster.Status` with this cluster's id).
    pub async fn add_node(&mut self, id: u64) {
        assert!(
            !self.nodes.contains_key(&id),
            "node {id} exists already; pick a new id"
        );
        assert!(
            id > self.initial_size,
            "a joining node needs an id above --initial-cluster-size"
        );
        if self.net.is_some() {
            let ip = self.net_mut().add_host(&label(id));
            let peer_addr = netns_addr(ip, false);
            let mut peers: Vec<String> = self
                .member_ids()
                .into_iter()
                .map(|m| format!("{m}={}", self.peer_addr(m)))
                .collect();
            peers.push(format!("{id}={peer_addr}"));
            let node = self.new_node_at(id, netns_addr(ip, true), peer_addr, peers.join(","));
            self.nodes.insert(id, node);
            self.launch(id);
            self.wait_node_started(id).await;
            return;
        }
        for attempt in 1..=PORT_RETRIES {
            let ports = reserve_ports(2);
            let mut peers: Vec<String> = self
                .member_ids()
                .into_iter()
                .map(|m| format!("{m}={}", self.peer_addr(m)))
                .collect();
            peers.push(format!("{id}={}:{}", self.loopback_ip(id), ports[1]));
            let node = self.new_node(id, ports[0], ports[1], peers.join(","));
            self.nodes.insert(id, node);
            self.spawn(id);
            match self.wait_started(id).await {
                Ok(()) => return,
                Err(StartFailure::PortInUse) if attempt < PORT_RETRIES => {
                    if let Some(node) = self.nodes.remove(&id) {
                        let _ = fs::remove_dir_all(&node.data_dir);
                    }
                }
                Err(other) => panic!("new node {id} did not start: {other:?}"),
            }
        }
    }

    // ----- network namespaces --------------------------------------------------------------

    /// The namespaces of a [`Network::Netns`] cluster.
    pub fn net(&self) -> &Net {
        self.net
            .as_ref()
            .expect("this cluster does not run in network namespaces")
    }

    fn net_mut(&mut self) -> &mut Net {
        self.net
            .as_mut()
            .expect("this cluster does not run in network namespaces")
    }

    /// Node `id`'s hostname in DNS mode (`kv-<id - 1>`, a StatefulSet pod name).
    pub fn hostname(&self, id: u64) -> String {
        format!("kv-{}", id - 1)
    }

    /// Node `id`'s DNS name (`kv-<id - 1>.<service>`), in DNS mode.
    pub fn dns_name(&self, id: u64) -> Option<String> {
        self.opts
            .dns_service
            .as_ref()
            .map(|service| format!("{}.{service}", self.hostname(id)))
    }

    /// DNS mode, node stopped: moves node `id` to a new IP, like a pod rescheduled elsewhere.
    /// Its namespace gets the new address (the old one vanishes) and its DNS name points to it
    /// in every hosts file. Returns the new address; a [`Cluster::restart`] listens there.
    pub fn move_node(&mut self, id: u64) -> Ipv4Addr {
        assert!(
            !self.is_running(id),
            "move_node: node {id} is still running; kill it first"
        );
        let name = self
            .dns_name(id)
            .expect("move_node needs DNS mode: with --peers the address is fixed");
        let ip = self.net_mut().readdress(&label(id));
        self.net_mut().set_name(&name, Some(ip));
        let connector = self.status_connector();
        let node = self.node_mut(id);
        node.client_addr = netns_addr(ip, true);
        node.peer_addr = netns_addr(ip, false);
        node.channel = status_channel(node.client_addr, connector);
        ip
    }

    /// Cuts node `id` off the network (peers and clients alike) until [`Cluster::heal`].
    pub fn isolate(&mut self, id: u64) {
        self.net_mut().isolate(&label(id));
    }

    /// Drops all traffic between node `id` and the other nodes, while the test's clients still
    /// reach it. `false` if no firewall tool (nft, iptables) works here.
    pub fn cut_peers(&mut self, id: u64) -> bool {
        self.net_mut().cut_peers(&label(id))
    }

    /// Undoes [`Cluster::isolate`] and [`Cluster::cut_peers`] for node `id`.
    pub fn heal(&mut self, id: u64) {
        self.net_mut().heal(&label(id));
    }

    /// Heals every node.
    pub fn heal_all(&mut self) {
        self.net_mut().heal_all();
    }

    /// A client with the current leader as its first endpoint, so that it starts there. In DNS
    /// mode the nodes redirect clients to DNS names that only the namespaces can resolve, so a
    /// client in the test process must find the leader by itself.
    pub async fn leader_client(&self) -> Client {
        let leader = self.leader().await;
        let first = self.client_addr(leader).to_string();
        let mut endpoints = vec![first.clone()];
        endpoints.extend(self.endpoints().into_iter().filter(|e| *e != first));
        Client::connect(endpoints, self.client_options())
            .await
            .expect("client for the cluster")
    }

    /// What node `id` has logged since its current (or last) start.
    pub fn log_of_current_start(&self, id: u64) -> String {
        let node = self.node(id);
        read_log_from(&node.log_path, node.log_offset)
    }

    /// Node `id`'s whole log, across restarts.
    pub fn log(&self, id: u64) -> String {
        read_log_from(&self.node(id).log_path, 0)
    }

    // ----- observation ---------------------------------------------------------------------

    /// Node `id`'s own view (`Cluster.Status` on its client port). An error if it does not
    /// answer within a second, or answers as another node or another cluster.
    pub async fn status(&self, id: u64) -> Result<pb::StatusResponse, String> {
        let node = self.node(id);
        status_of(id, node.channel.clone(), self.cluster_id.clone()).await
    }

    /// The views of all running, not stopped, not retired nodes, asked concurrently.
    pub async fn statuses(&self) -> BTreeMap<u64, Result<pb::StatusResponse, String>> {
        let mut asks = JoinSet::new();
        for node in self.nodes.values() {
            let isolated = self
                .net
                .as_ref()
                .is_some_and(|net| net.is_isolated(&label(node.id)));
            // A stopped or isolated node cannot answer; asking would only cost a timeout.
            if node.process.is_some() && !node.stopped && !node.retired && !isolated {
                let (id, channel, cluster) =
                    (node.id, node.channel.clone(), self.cluster_id.clone());
                asks.spawn(async move { (id, status_of(id, channel, cluster).await) });
            }
        }
        let mut out = BTreeMap::new();
        while let Some(joined) = asks.join_next().await {
            if let Ok((id, status)) = joined {
                out.insert(id, status);
            }
        }
        out
    }

    /// The current leader if there is one right now: a node that says it leads in the highest
    /// term any node reports, confirmed by a majority of its voters (itself included) naming
    /// it in that term. A deposed leader that has not noticed yet (e.g. just SIGCONTed) is thus
    /// not taken for the leader.
    pub async fn try_leader(&self) -> Option<u64> {
        let views: Vec<pb::StatusResponse> =
            self.statuses().await.into_values().flatten().collect();
        agreed_leader(&views)
    }

    /// Waits (up to [`ClusterOptions::leader_timeout`]) for [`Cluster::try_leader`].
    pub async fn leader(&self) -> u64 {
        let timeout = self.opts.leader_timeout;
        wait_for("a leader agreed by a quorum", timeout, async || {
            self.try_leader().await
        })
        .await
    }

    /// Waits for a leader other than `old`; returns it.
    pub async fn leader_other_than(&self, old: u64) -> u64 {
        let timeout = self.opts.leader_timeout;
        wait_for(&format!("a leader other than {old}"), timeout, async || {
            self.try_leader().await.filter(|&l| l != old)
        })
        .await
    }

    /// The configuration as the current leader reports it.
    pub async fn members(&self) -> Vec<pb::Member> {
        let leader = self.leader().await;
        match self.status(leader).await {
            Ok(s) => s.members,
            Err(_) => Vec::new(),
        }
    }

    /// Waits until the leader reports node `id` as a voter (a learner is promoted automatically
    /// once caught up). Returns how long that took.
    pub async fn wait_voter(&self, id: u64, timeout: Duration) -> Duration {
        let started = Instant::now();
        wait_for(&format!("node {id} to be a voter"), timeout, async || {
            let leader = self.try_leader().await?;
            let status = self.status(leader).await.ok()?;
            status
                .members
                .iter()
                .any(|m| m.id == id && m.role() == pb::MemberRole::Voter)
                .then_some(())
        })
        .await;
        started.elapsed()
    }

    /// Waits until the leader's configuration no longer contains node `id`.
    pub async fn wait_not_member(&self, id: u64, timeout: Duration) -> Duration {
        let started = Instant::now();
        wait_for(
            &format!("node {id} to leave the configuration"),
            timeout,
            async || {
                let leader = self.try_leader().await.filter(|&l| l != id)?;
                let status = self.status(leader).await.ok()?;
                (!status.members.iter().any(|m| m.id == id)).then_some(())
            },
        )
        .await;
        started.elapsed()
    }

    /// Waits until node `id` has applied everything the leader had committed when this was
    /// called. Returns how long that took.
    pub async fn wait_caught_up(&self, id: u64, timeout: Duration) -> Duration {
        let started = Instant::now();
        let target = wait_for("the leader's commit index", timeout, async || {
            let leader = self.try_leader().await?;
            self.status(leader).await.ok().map(|s| s.commit_index)
        })
        .await;
        let left = timeout.saturating_sub(started.elapsed());
        wait_for(
            &format!("node {id} to apply up to index {target}"),
            left,
            async || {
                self.status(id)
                    .await
                    .ok()
                    .filter(|s| s.applied_index >= target)
            },
        )
        .await;
        started.elapsed()
    }

    /// Node `id`'s own copy of `[start, end)`, read with STALE consistency from that node only.
    pub async fn scan_local(&self, id: u64, start: &str, end: &str) -> Vec<KeyValue> {
        let client = self.client_of(id).await;
        client
            .scan_all(start.to_owned(), end.to_owned(), 0, Consistency::Stale)
            .await
            .unwrap_or_else(|e| panic!("stale scan on node {id}: {e}"))
    }

    /// Checks that node `id`, once caught up (within `within`), holds in its own copy (a STALE
    /// scan served by that node alone) exactly what `history` allows: replicas agree, not only
    /// the leader. Returns how long catching up took.
    pub async fn assert_replica_matches(
        &self,
        id: u64,
        history: &WriteHistory,
        within: Duration,
    ) -> Duration {
        let caught_up = self.wait_caught_up(id, within).await;
        let (start, end) = history.range();
        let local = self.scan_local(id, &start, &end).await;
        let (problems, _) = history.check(&local);
        assert_problems_empty(&problems, &format!("node {id}'s own copy"));
        caught_up
    }

    /// The last `lines` lines of node `id`'s log.
    pub fn log_tail(&self, id: u64, lines: usize) -> String {
        let text = read_log_from(&self.node(id).log_path, 0);
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    /// Prints the tail of every node's log to stderr.
    pub fn print_logs(&self, lines: usize) {
        for node in self.nodes.values() {
            eprintln!(
                "---- node {} ({}), last {lines} lines ----\n{}",
                node.id,
                node.log_path.display(),
                self.log_tail(node.id, lines)
            );
        }
    }

    fn node(&self, id: u64) -> &Node {
        self.nodes
            .get(&id)
            .unwrap_or_else(|| panic!("no node {id} in this cluster"))
    }

    fn node_mut(&mut self, id: u64) -> &mut Node {
        self.nodes
            .get_mut(&id)
            .unwrap_or_else(|| panic!("no node {id} in this cluster"))
    }

    fn kill_all(&mut self) {
        for node in self.nodes.values_mut() {
            if let Some(mut process) = node.process.take() {
                if let Some(w) = process.watchdog.take() {
                    w.disarm();
                }
                let _ = process.child.kill();
                if let Ok(status) = process.child.wait() {
                    node.exits.push(status);
                }
            }
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.kill_all();
        if std::thread::panicking() {
            eprintln!(
                "[harness] the test failed; logs of the nodes in {}:",
                self.root.display()
            );
            self.print_logs(LOG_TAIL_LINES);
        }
        if std::env::var_os("RAFTKV_KEEP_TEST_DIR").is_some()
            && let Some(dir) = self.dir.take()
        {
            eprintln!("[harness] kept {}", dir.keep().display());
        }
    }
}

/// The host label of node `id` in the netns network.
fn label(id: u64) -> String {
    format!("n{id}")
}

/// Node address on a test host: the fixed client or peer port on its own IP.
fn netns_addr(ip: Ipv4Addr, client: bool) -> SocketAddr {
    let port = if client {
        NETNS_CLIENT_PORT
    } else {
        NETNS_PEER_PORT
    };
    SocketAddr::V4(SocketAddrV4::new(ip, port))
}

/// A lazily connecting channel to a node's client port, for `Cluster.Status`. Reconnects by
/// itself after a restart.
fn status_channel(client_addr: SocketAddr, tls: Option<raftkv_proto::tls::Connector>) -> Channel {
    let endpoint = Endpoint::from_shared(format!("http://{client_addr}"))
        .expect("a valid URI")
        .connect_timeout(Duration::from_millis(500))
        .timeout(STATUS_TIMEOUT);
    match tls {
        Some(connector) => endpoint.connect_with_connector_lazy(connector),
        None => endpoint.connect_lazy(),
    }
}

async fn status_of(
    id: u64,
    channel: Channel,
    cluster_id: String,
) -> Result<pb::StatusResponse, String> {
    let mut client = pb::cluster_client::ClusterClient::new(channel);
    let status =
        match tokio::time::timeout(STATUS_TIMEOUT, client.status(pb::StatusRequest {})).await {
            Ok(Ok(response)) => response.into_inner(),
            Ok(Err(status)) => return Err(format!("node {id}: {status}")),
            Err(_) => return Err(format!("node {id}: no answer within {STATUS_TIMEOUT:?}")),
        };
    if status.node_id == id && status.cluster_id.is_empty() {
        // A node with an empty data dir serves Status while it decides to bootstrap or join.
        return Err(format!("node {id} has not bootstrapped or joined yet"));
    }
    if status.node_id == id && status.member_state == pb::MemberState::Loading as i32 {
        // Its ports open before its state is loaded; it answers with what is on disk.
        return Err(format!("node {id} is still loading its state"));
    }
    if status.node_id != id || status.cluster_id != cluster_id {
        return Err(format!(
            "the process on node {id}'s port is node {} of cluster {:?}, not ours",
            status.node_id, status.cluster_id
        ));
    }
    Ok(status)
}

fn read_log_from(path: &Path, offset: u64) -> String {
    let mut text = String::new();
    if let Ok(mut file) = fs::File::open(path) {
        let _ = file.seek(SeekFrom::Start(offset));
        let mut bytes = Vec::new();
        let _ = file.read_to_end(&mut bytes);
        text = String::from_utf8_lossy(&bytes).into_owned();
    }
    text
}

/// The leader a set of `Cluster.Status` answers agree on: a node that says it leads in the
/// highest term any of them reports, named as leader in that term by a majority of its voters
/// (itself included). A deposed leader that has not noticed yet does not count.
pub fn agreed_leader(views: &[pb::StatusResponse]) -> Option<u64> {
    let term = views.iter().map(|s| s.term).max()?;
    let leader = views
        .iter()
        .find(|s| s.term == term && s.role() == pb::Role::Leader)?;
    let voters: Vec<u64> = leader
        .members
        .iter()
        .filter(|m| m.role() == pb::MemberRole::Voter)
        .map(|m| m.id)
        .collect();
    let agree = views
        .iter()
        .filter(|s| s.term == term && s.leader_id == leader.node_id)
        .filter(|s| voters.contains(&s.node_id))
        .count();
    (agree > voters.len() / 2).then_some(leader.node_id)
}
