//! An in-process raftkv cluster for integration tests.
//!
//! [`TestCluster::start`] binds a client and a peer listener on `127.0.0.1:0` for every node
//! *before* starting any of them, so every node knows every peer address from the start (no port
//! guessing, no retries on `EADDRINUSE`). Each node gets its own temporary data directory and a
//! fast tick, and is started with [`raftkv_node::start_with_listeners`].
//!
//! Tests talk to the nodes over real gRPC (the same code paths a client uses), never through the
//! driver's handle. Waiting is always polling a condition until a generous deadline
//! ([`DEADLINE`]); there are no fixed sleeps, so a slow, loaded 2-core machine makes the tests
//! slower but not flaky. Timeouts panic with the last thing observed, which is what one needs to
//! diagnose a failure from a CI log.
//!
//! Set `RUST_LOG=raftkv_node=debug` to see the nodes' logs (captured per test by libtest).

use std::collections::BTreeMap;
use std::future::Future;
use std::time::Duration;

use raftkv_node::transport::TransportConfig;
use raftkv_node::{DriverConfig, NodeConfig, RunningNode, start_with_listeners};
use raftkv_proto::v1::cluster_client::ClusterClient;
use raftkv_proto::v1::kv_client::KvClient;
use raftkv_proto::v1::raft_client::RaftClient;
use raftkv_proto::v1::{GetRequest, PutRequest, Role, StatusRequest, StatusResponse};
use tempfile::TempDir;
use tokio::net::TcpListener;
use tokio::time::Instant;
use tonic::transport::{Channel, Endpoint};
use tonic::{Code, Status};

/// How long any condition may take to come true. Generous: an election on an idle machine takes
/// well under a second, but the tests share two cores with builds and other test binaries.
pub const DEADLINE: Duration = Duration::from_secs(30);

/// The pause between two polls of a condition.
pub const POLL: Duration = Duration::from_millis(20);

/// One Raft tick. Fast, so that elections finish in well under a second, yet long enough that
/// a briefly starved tokio worker on a busy machine does not cost the leader its term: followers
/// wait `ELECTION_TICKS` ticks (300..600 ms) without a heartbeat before they campaign.
pub const TICK: Duration = Duration::from_millis(30);

/// The minimum election timeout, in ticks (etcd's ratio of heartbeat to election timeout).
pub const ELECTION_TICKS: u64 = 10;

/// The gRPC message limit of the test clients: the nodes' own, above the 1 MiB value limit plus
/// overhead.
const MAX_MESSAGE: usize = raftkv_proto::MAX_GRPC_MESSAGE_BYTES;

/// Sends `RUST_LOG`-filtered node logs to libtest's captured output, when `RUST_LOG` is set.
pub fn init_logging() {
    if std::env::var_os("RUST_LOG").is_some() {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_test_writer()
            .try_init();
    }
}

/// The driver settings every test node runs with.
pub fn fast_driver() -> DriverConfig {
    DriverConfig {
        tick: TICK,
        election_ticks: ELECTION_TICKS,
        ..DriverConfig::default()
    }
}

/// A cluster of in-process nodes with ids `1..=size`.
pub struct TestCluster {
    /// `nodes[i]` is node `i + 1`. Declared before `dirs` so that nodes are told to stop before
    /// their data directories are removed.
    nodes: Vec<RunningNode>,
    /// A lazily connecting channel per node: (client port, peer port).
    channels: Vec<(Channel, Channel)>,
    /// When `start` was called, for printing how long things took.
    started: Instant,
    dirs: Vec<TempDir>,
}

/// The leader as every node sees it.
#[derive(Clone, Debug)]
pub struct Leader {
    /// Its node id.
    pub id: u64,
    /// The term it leads in.
    pub term: u64,
    /// Its client address (`host:port`).
    pub client_addr: String,
    /// Time from `TestCluster::start` until every node agreed.
    pub elapsed: Duration,
}

impl TestCluster {
    /// Starts `size` nodes that bootstrap one cluster of `size` voters.
    pub async fn start(size: u64) -> Self {
        Self::start_with(size, |_, _| {}).await
    }

    /// Like [`TestCluster::start`], with each node's configuration adjusted by `configure` (called
    /// with the node id) before it starts.
    pub async fn start_with(size: u64, configure: impl Fn(u64, &mut NodeConfig)) -> Self {
        init_logging();
        let started = Instant::now();
        // Bind everything first: the peer map must be complete before the first node starts.
        let mut listeners = Vec::new();
        for _ in 0..size {
            let client = TcpListener::bind("127.0.0.1:0")
                .await
                .expect("bind a client listener");
            let peer = TcpListener::bind("127.0.0.1:0")
                .await
                .expect("bind a peer listener");
            listeners.push((client, peer));
        }
        let addr = |l: &TcpListener| l.local_addr().expect("listener address").to_string();
        let peers: BTreeMap<u64, String> = (1..=size)
            .zip(&listeners)
            .map(|(id, (_, peer))| (id, addr(peer)))
            .collect();

        let mut starting = Vec::new();
        let mut dirs = Vec::new();
        let mut channels = Vec::new();
        for (id, (client, peer)) in (1..=size).zip(listeners) {
            let dir = tempfile::Builder::new()
                .prefix(&format!("raftkv-node{id}-"))
                .tempdir()
                .expect("create a data dir");
            let mut cfg = NodeConfig {
                id,
                advertise_client: addr(&client),
                advertise_peer: addr(&peer),
                peers: peers.clone(),
                data_dir: dir.path().to_path_buf(),
                initial_cluster_size: size,
                initial_cluster_token: "inprocess-test".into(),
                driver: fast_driver(),
                transport: TransportConfig::default(),
                seed: None,
                // Off unless a test asks (`start_with`).
                listen_metrics: None,
                listen_health: None,
                tls: Default::default(),
            };
            configure(id, &mut cfg);
            channels.push((lazy_channel(&addr(&client)), lazy_channel(&addr(&peer))));
            // All at once: before bootstrapping, a node asks its peers whether a cluster already
            // exists, and a peer whose listener is bound but not yet served only answers with
            // the asker's timeout. Started one by one, that wait would add up.
            starting.push(tokio::spawn(start_with_listeners(cfg, client, peer)));
            dirs.push(dir);
        }
        let mut nodes = Vec::new();
        for (id, handle) in (1..=size).zip(starting) {
            let node = handle
                .await
                .expect("the start task")
                .unwrap_or_else(|e| panic!("node {id} did not start: {e}"));
            nodes.push(node);
        }
        println!(
            "{size} node(s) started after {} ms",
            started.elapsed().as_millis()
        );
        Self {
            nodes,
            channels,
            started,
            dirs,
        }
    }

    /// The node ids, `1..=size`.
    pub fn ids(&self) -> Vec<u64> {
        self.nodes.iter().map(RunningNode::id).collect()
    }

    /// The running node `id`.
    pub fn node(&self, id: u64) -> &RunningNode {
        &self.nodes[index(id)]
    }

    /// Time since `start`.
    pub fn elapsed(&self) -> Duration {
        self.started.elapsed()
    }

    /// Node `id`'s client address, `host:port`.
    pub fn client_addr(&self, id: u64) -> String {
        self.node(id).client_addr().to_string()
    }

    /// Every node's client address, for `raftkv_client::Client::connect`.
    pub fn client_endpoints(&self) -> Vec<String> {
        self.ids()
            .into_iter()
            .map(|id| self.client_addr(id))
            .collect()
    }

    /// A raw Kv client on node `id`'s client port.
    pub fn kv(&self, id: u64) -> KvClient<Channel> {
        KvClient::new(self.channels[index(id)].0.clone())
            .max_decoding_message_size(MAX_MESSAGE)
            .max_encoding_message_size(MAX_MESSAGE)
    }

    /// A raw Cluster client on node `id`'s client port.
    pub fn admin(&self, id: u64) -> ClusterClient<Channel> {
        ClusterClient::new(self.channels[index(id)].0.clone())
    }

    /// A raw Raft client on node `id`'s *peer* port.
    pub fn raft(&self, id: u64) -> RaftClient<Channel> {
        RaftClient::new(self.channels[index(id)].1.clone())
            .max_decoding_message_size(MAX_MESSAGE)
            .max_encoding_message_size(MAX_MESSAGE)
    }

    /// Node `id`'s own view, through `Cluster.Status` on its client port.
    pub async fn status(&self, id: u64) -> Result<StatusResponse, Status> {
        Ok(self.admin(id).status(StatusRequest {}).await?.into_inner())
    }

    /// Every node's status (`Err` for a node that did not answer).
    pub async fn statuses(&self) -> Vec<Result<StatusResponse, Status>> {
        let mut out = Vec::new();
        for id in self.ids() {
            out.push(self.status(id).await);
        }
        out
    }

    /// The node that says it leads in the highest term, if any answers so.
    pub async fn current_leader(&self) -> Option<u64> {
        self.statuses()
            .await
            .into_iter()
            .flatten()
            .filter(|s| s.role == Role::Leader as i32)
            .max_by_key(|s| s.term)
            .map(|s| s.node_id)
    }

    /// Waits until one node leads and every node agrees on it, on its term and on the cluster
    /// id, and knows the leader's client address (the leader publishes it through the log after
    /// its election, so this also waits until redirects can name it).
    pub async fn wait_for_leader(&self) -> Leader {
        let leader = eventually("every node agrees on one leader", || async {
            let mut agreed: Option<(u64, u64, String, String)> = None;
            for (id, s) in self.ids().into_iter().zip(self.statuses().await) {
                let s = s.map_err(|e| format!("node {id}: Status failed: {e}"))?;
                if s.leader_id == 0 {
                    return Err(format!("node {id} knows no leader (term {})", s.term));
                }
                if s.leader_client_addr.is_empty() {
                    return Err(format!(
                        "node {id} follows {} but does not know its client address yet",
                        s.leader_id
                    ));
                }
                let view = (s.leader_id, s.term, s.cluster_id, s.leader_client_addr);
                match &agreed {
                    None => agreed = Some(view),
                    Some(first) if *first == view => {}
                    Some(first) => {
                        return Err(format!("views differ: {first:?} vs node {id}: {view:?}"));
                    }
                }
            }
            let (id, term, _, client_addr) = agreed.ok_or("no nodes")?;
            let s = self
                .status(id)
                .await
                .map_err(|e| format!("leader {id}: {e}"))?;
            if s.role != Role::Leader as i32 || s.term != term {
                return Err(format!("node {id} is named leader but says {s:?}"));
            }
            Ok(Leader {
                id,
                term,
                client_addr,
                elapsed: self.elapsed(),
            })
        })
        .await;
        println!(
            "leader elected and known everywhere after {} ms: node {} in term {}",
            leader.elapsed.as_millis(),
            leader.id,
            leader.term
        );
        leader
    }

    /// Runs a Kv call on whichever node leads, retrying while there is no leader or leadership
    /// moves (UNAVAILABLE, FAILED_PRECONDITION, DEADLINE_EXCEEDED). Writes must carry a session
    /// (`client_id`, `seq`): a retry resends the identical request, which is then applied once.
    /// Any other status is the call's definite answer and is returned.
    pub async fn on_leader<T, F, Fut>(&self, mut call: F) -> Result<T, Status>
    where
        F: FnMut(KvClient<Channel>) -> Fut,
        Fut: Future<Output = Result<tonic::Response<T>, Status>>,
    {
        let deadline = Instant::now() + DEADLINE;
        loop {
            let last = match self.current_leader().await {
                None => "no node says it leads".to_string(),
                Some(id) => match call(self.kv(id)).await {
                    Ok(response) => return Ok(response.into_inner()),
                    Err(s) if is_transient(&s) => format!("node {id}: {s}"),
                    Err(s) => return Err(s),
                },
            };
            assert!(
                Instant::now() < deadline,
                "no leader answered within {DEADLINE:?}; last: {last}"
            );
            tokio::time::sleep(POLL).await;
        }
    }

    /// Asserts that the cluster still serves: no driver has stopped, a fresh write is acknowledged
    /// and read back, and every `(key, value, version)` acknowledged earlier is still there.
    pub async fn assert_serving(&self, acknowledged: &[(Vec<u8>, Vec<u8>, u64)]) {
        for n in &self.nodes {
            assert!(!n.is_finished(), "node {}'s driver stopped", n.id());
        }
        let key = format!("still-serving-{}", self.elapsed().as_nanos()).into_bytes();
        let put = PutRequest {
            key: key.clone().into(),
            value: b"yes".to_vec().into(),
            client_id: format!("assert-serving-{}", self.elapsed().as_nanos()),
            seq: 1,
        };
        let version = self
            .on_leader(|mut kv| {
                let put = put.clone();
                async move { kv.put(put).await }
            })
            .await
            .expect("a normal put after bad input")
            .version;
        let mut expected = acknowledged.to_vec();
        expected.push((key, b"yes".to_vec(), version));
        for (key, value, version) in expected {
            let got = self
                .on_leader(|mut kv| {
                    let key = key.clone();
                    async move {
                        kv.get(GetRequest {
                            key: key.into(),
                            consistency: 0,
                        })
                        .await
                    }
                })
                .await
                .expect("a normal get after bad input");
            assert!(got.found, "{:?} vanished", String::from_utf8_lossy(&key));
            assert_eq!(got.value.as_ref(), value.as_slice());
            assert_eq!(got.version, version);
        }
    }

    /// Stops every node and asserts that none stopped with an error.
    pub async fn shutdown(mut self) {
        for node in std::mem::take(&mut self.nodes) {
            let id = node.id();
            if let Err(e) = node.stop().await {
                panic!("node {id} stopped with an error: {e}");
            }
        }
    }
}

impl Drop for TestCluster {
    /// A test that panics never reaches `shutdown`: at least tell the nodes to stop, so their
    /// tasks wind down before the data directories go away.
    fn drop(&mut self) {
        for n in &self.nodes {
            n.begin_stop();
        }
    }
}

fn index(id: u64) -> usize {
    usize::try_from(id).expect("small node id") - 1
}

/// A channel that connects on first use (and reconnects after failures).
fn lazy_channel(addr: &str) -> Channel {
    Endpoint::from_shared(format!("http://{addr}"))
        .expect("a valid URI")
        .connect_timeout(Duration::from_secs(2))
        // Bounds every RPC, so a hung node fails a poll instead of hanging the test.
        .timeout(Duration::from_secs(10))
        .connect_lazy()
}

/// Codes that mean "not now, ask again (maybe elsewhere)".
pub fn is_transient(s: &Status) -> bool {
    matches!(
        s.code(),
        Code::Unavailable | Code::FailedPrecondition | Code::DeadlineExceeded
    )
}

/// Polls `probe` until it returns `Ok`, or panics after [`DEADLINE`] with the last reason it
/// gave. Each probe is itself bounded, so a hung call cannot stall the deadline.
pub async fn eventually<T, F, Fut>(what: &str, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, String>>,
{
    let start = Instant::now();
    let deadline = start + DEADLINE;
    let mut polls = 0u32;
    loop {
        polls += 1;
        let last = match tokio::time::timeout_at(deadline, probe()).await {
            Ok(Ok(v)) => return v,
            Ok(Err(why)) => why,
            Err(_) => "the probe itself did not finish".to_string(),
        };
        assert!(
            Instant::now() < deadline,
            "{what}: not true after {:?} ({polls} polls); last: {last}",
            start.elapsed()
        );
        tokio::time::sleep(POLL).await;
    }
}

/// Asserts that `result` failed with `code`, and that the message contains every `needle`.
pub fn assert_status<T: std::fmt::Debug>(
    result: Result<T, Status>,
    code: Code,
    needles: &[&str],
    what: &str,
) -> Status {
    let status = match result {
        Ok(v) => panic!("{what}: expected {code:?}, got OK: {v:?}"),
        Err(s) => s,
    };
    assert_eq!(status.code(), code, "{what}: {status:?}");
    for needle in needles {
        assert!(
            status.message().contains(needle),
            "{what}: message {:?} should mention {needle:?}",
            status.message()
        );
    }
    status
}
