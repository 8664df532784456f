//! Scrapes `/metrics` from the leader of a running two-node cluster over plain HTTP, parses the
//! exposition line by line, and checks that every series from the catalogue below is exposed
//! with its type, help text and label names, and that the series move with the work done. Two
//! nodes, so that the per-peer series have a sample. Also checks that the exporter answers
//! garbage with an error and keeps serving. A single node with TLS on both ports exports its
//! certificates' expiry.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use raftkv_node::{DriverConfig, NodeConfig, RunningNode, kv};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Every series a node exposes, as a user's dashboards and alerts see it: the sample name, its
/// type, its help text and its label names (besides a histogram's `le`). Renaming, retyping or
/// dropping one of them breaks someone's queries, so this list only ever grows.
const CATALOGUE: &[(&str, &str, &str, &[&str])] = &[
    ("raftkv_node_id", "gauge", "This node's id.", &[]),
    ("raftkv_term", "gauge", "Current Raft term.", &[]),
    (
        "raftkv_role",
        "gauge",
        "Raft role: 0 follower, 1 pre-candidate, 2 candidate, 3 leader.",
        &[],
    ),
    (
        "raftkv_leader_id",
        "gauge",
        "The leader this node follows (0 = none known).",
        &[],
    ),
    (
        "raftkv_commit_index",
        "gauge",
        "Highest log index known committed.",
        &[],
    ),
    (
        "raftkv_applied_index",
        "gauge",
        "Highest log index applied to the state machine.",
        &[],
    ),
    (
        "raftkv_is_member",
        "gauge",
        "1 if this node is in the cluster configuration.",
        &[],
    ),
    (
        "raftkv_proposal_duration_seconds",
        "histogram",
        "Time from proposing a write to applying it, on the leader.",
        &[],
    ),
    (
        "raftkv_fsync_duration_seconds",
        "histogram",
        "Time to write and fsync one storage batch.",
        &[],
    ),
    (
        "raftkv_peer_messages_sent_total",
        "counter",
        "Raft messages sent, per peer.",
        &["peer"],
    ),
    (
        "raftkv_peer_bytes_sent_total",
        "counter",
        "Approximate bytes of log entries sent, per peer.",
        &["peer"],
    ),
    (
        "raftkv_peer_send_failures_total",
        "counter",
        "Messages that could not be delivered, per peer.",
        &["peer"],
    ),
    (
        "raftkv_rpc_errors_total",
        "counter",
        "Client API errors by gRPC code.",
        &["code"],
    ),
    (
        "raftkv_snapshots_taken_total",
        "counter",
        "Local snapshots taken (each followed by log compaction).",
        &[],
    ),
    (
        "raftkv_snapshots_installed_total",
        "counter",
        "Snapshots received from a leader and installed.",
        &[],
    ),
    (
        "raftkv_snapshots_sent_total",
        "counter",
        "Snapshot transfers to followers, by result.",
        &["result"],
    ),
    (
        "raftkv_read_lease_seconds",
        "gauge",
        "The read lease this leader grants itself (0 when not leading).",
        &[],
    ),
    (
        "raftkv_leader_silence_max_seconds",
        "gauge",
        "Longest time this node went without a message from its leader within one term.",
        &[],
    ),
];

/// Series a node exposes only with TLS on (one sample per port that has it), checked by
/// `tls_certificate_expiry_is_exported`. Like [`CATALOGUE`], this list only ever grows.
const TLS_CATALOGUE: &[(&str, &str, &str, &[&str])] = &[(
    "raftkv_tls_certificate_expiry_timestamp_seconds",
    "gauge",
    "When the certificate served on a port expires, in Unix time.",
    &["port"],
)];

/// One metric family as declared by its `# TYPE` and `# HELP` lines.
#[derive(Debug, Default)]
struct Family {
    kind: String,
    help: String,
}

/// A parsed scrape: samples by series (name and labels as written), families by name, and the
/// label names seen on each sample name.
#[derive(Debug, Default)]
struct Scrape {
    samples: BTreeMap<String, f64>,
    families: BTreeMap<String, Family>,
    labels: BTreeMap<String, BTreeSet<String>>,
}

impl std::ops::Index<&str> for Scrape {
    type Output = f64;
    fn index(&self, series: &str) -> &f64 {
        self.samples
            .get(series)
            .unwrap_or_else(|| panic!("no sample {series:?} in {:#?}", self.samples))
    }
}

impl Scrape {
    /// The family a sample name belongs to: itself, or (a histogram's samples) the name without
    /// the suffix its type adds.
    fn family_of(&self, sample: &str) -> Option<(&str, &Family)> {
        if let Some((name, f)) = self.families.get_key_value(sample) {
            return Some((name, f));
        }
        ["_bucket", "_sum", "_count"]
            .iter()
            .filter_map(|s| sample.strip_suffix(s))
            .find_map(|base| self.families.get_key_value(base))
            .map(|(name, f)| (name.as_str(), f))
    }
}

/// Parses the text exposition format 0.0.4: every sample line must be `name{labels} value` or
/// `name value`, every `# TYPE` names a known type, and there are no other comments.
fn parse(text: &str) -> Scrape {
    let mut out = Scrape::default();
    for line in text.lines() {
        if line.is_empty() {
            continue;
        }
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').expect("TYPE has a kind");
            assert!(
                ["counter", "gauge", "histogram"].contains(&kind),
                "unknown type in {line:?}"
            );
            out.families.entry(name.into()).or_default().kind = kind.into();
            continue;
        }
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let (name, help) = rest.split_once(' ').expect("HELP has a text");
            out.families.entry(name.into()).or_default().help = help.into();
            continue;
        }
        assert!(!line.starts_with('#'), "unexpected comment {line:?}");
        let (series, value) = line.rsplit_once(' ').expect("sample has a value");
        let value: f64 = value.parse().expect("numeric value");
        let name_end = series.find('{').unwrap_or(series.len());
        let name = &series[..name_end];
        assert!(
            name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'),
            "bad metric name in {line:?}"
        );
        let labels = out.labels.entry(name.into()).or_default();
        if name_end < series.len() {
            let inner = series[name_end + 1..]
                .strip_suffix('}')
                .unwrap_or_else(|| panic!("unterminated labels in {line:?}"));
            for pair in inner.split(',').filter(|p| !p.is_empty()) {
                let (key, value) = pair.split_once('=').expect("label is key=value");
                assert!(
                    value.starts_with('"') && value.ends_with('"'),
                    "unquoted label value in {line:?}"
                );
                labels.insert(key.into());
            }
        }
        out.samples.insert(series.to_string(), value);
    }
    out
}

/// Checks that every series of `catalogue` has a sample, and that its family declares the same
/// type and help text and its samples carry the same label names.
fn assert_catalogue(m: &Scrape, catalogue: &[(&str, &str, &str, &[&str])]) {
    for &(name, kind, help, label_names) in catalogue {
        let samples: Vec<&str> = if kind == "histogram" {
            vec!["_bucket", "_sum", "_count"]
                .into_iter()
                .map(|s| format!("{name}{s}"))
                .map(|s| {
                    m.labels
                        .get_key_value(s.as_str())
                        .map(|(k, _)| k.as_str())
                        .unwrap_or_else(|| panic!("no sample named {s}"))
                })
                .collect()
        } else {
            vec![
                m.labels
                    .get_key_value(name)
                    .map(|(k, _)| k.as_str())
                    .unwrap_or_else(|| panic!("no sample named {name} in {:#?}", m.samples)),
            ]
        };
        for sample in samples {
            let (family, f) = m
                .family_of(sample)
                .unwrap_or_else(|| panic!("{sample} has no # TYPE"));
            assert_eq!(f.kind, kind, "type of {sample} (family {family})");
            assert_eq!(f.help, help, "help of {sample} (family {family})");
            let mut want: BTreeSet<String> = label_names.iter().map(|l| l.to_string()).collect();
            if sample.ends_with("_bucket") {
                want.insert("le".into());
            }
            assert_eq!(m.labels[sample], want, "label names of {sample}");
        }
    }
}

async fn http_get(addr: std::net::SocketAddr, request: &[u8]) -> String {
    let mut s = TcpStream::connect(addr).await.expect("connect");
    s.write_all(request).await.expect("write");
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).await.expect("read");
    String::from_utf8(buf).expect("utf-8 response")
}

async fn scrape(addr: std::net::SocketAddr) -> Scrape {
    let resp = http_get(addr, b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n").await;
    let (head, body) = resp.split_once("\r\n\r\n").expect("http response");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(head.contains("text/plain; version=0.0.4"), "{head}");
    parse(body)
}

/// Starts a two-node cluster whose nodes both serve metrics.
async fn start_cluster(dir: &std::path::Path) -> Vec<RunningNode> {
    let mut listeners = Vec::new();
    for _ in 0..2 {
        let client = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let peer = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        listeners.push((client, peer));
    }
    let addr = |l: &TcpListener| l.local_addr().expect("addr").to_string();
    let peers: BTreeMap<u64, String> = (1..)
        .zip(&listeners)
        .map(|(id, (_, peer))| (id, addr(peer)))
        .collect();
    let mut starting = Vec::new();
    for (id, (client, peer)) in (1..).zip(listeners) {
        let cfg = NodeConfig {
            id,
            advertise_client: addr(&client),
            advertise_peer: addr(&peer),
            peers: peers.clone(),
            data_dir: dir.join(format!("n{id}")),
            initial_cluster_size: 2,
            initial_cluster_token: "metrics-test".into(),
            driver: DriverConfig {
                tick: Duration::from_millis(30),
                // Small, so the test also sees a snapshot being taken.
                snapshot_entries: 20,
                ..DriverConfig::default()
            },
            transport: Default::default(),
            seed: Some(id),
            listen_metrics: Some("127.0.0.1:0".parse().expect("addr")),
            listen_health: None,
            tls: Default::default(),
        };
        // Both at once: each asks the other whether a cluster exists before bootstrapping.
        starting.push(tokio::spawn(raftkv_node::start_with_listeners(
            cfg, client, peer,
        )));
    }
    let mut nodes = Vec::new();
    for s in starting {
        nodes.push(s.await.expect("start task").expect("start"));
    }
    nodes
}

/// The index of the node that leads, once one does.
async fn wait_for_leader(nodes: &[RunningNode]) -> usize {
    let started = Instant::now();
    loop {
        if let Some(i) = nodes
            .iter()
            .position(|n| n.observe().borrow().role == raftkv_raft::Role::Leader)
        {
            return i;
        }
        assert!(started.elapsed() < Duration::from_secs(30), "no leader");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Writes `key` through whichever node leads, retrying (same session and seq, so at most once)
/// if leadership moves on the loaded machine.
async fn put(nodes: &[RunningNode], key: &str, seq: u64) {
    let started = Instant::now();
    loop {
        let leader = wait_for_leader(nodes).await;
        let cmd = kv::Command::with_session(
            kv::Op::Put {
                key: key.as_bytes().to_vec().into(),
                value: b"v".to_vec().into(),
            },
            "metrics-test",
            seq,
        );
        match nodes[leader].handle().propose(cmd).await {
            Ok(_) => return,
            Err(e) => assert!(
                started.elapsed() < Duration::from_secs(30),
                "put {key}: {e}"
            ),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_are_scraped_and_parsed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let nodes = start_cluster(dir.path()).await;
    for seq in 1..=30 {
        put(&nodes, &format!("k{seq}"), seq).await;
    }
    let leader = wait_for_leader(&nodes).await;
    let node = &nodes[leader];
    let id = leader as f64 + 1.0;
    let addr = node.metrics_addr().expect("metrics served");

    let m = scrape(addr).await;
    assert_eq!(m["raftkv_node_id"], id);
    assert_eq!(m["raftkv_role"], 3.0, "the leader's role");
    assert!(m["raftkv_term"] >= 2.0);
    assert_eq!(m["raftkv_leader_id"], id);
    assert!(m["raftkv_commit_index"] >= 30.0);
    assert!(m["raftkv_applied_index"] >= 30.0);
    assert_eq!(m["raftkv_is_member"], 1.0);
    assert!(m["raftkv_proposal_duration_seconds_count"] >= 1.0);
    assert_eq!(
        m["raftkv_proposal_duration_seconds_bucket{le=\"+Inf\"}"],
        m["raftkv_proposal_duration_seconds_count"]
    );
    assert!(m["raftkv_fsync_duration_seconds_count"] >= 1.0);
    assert!(m["raftkv_fsync_duration_seconds_sum"] > 0.0);
    assert!(m["raftkv_snapshots_taken_total"] >= 1.0);
    let follower = 2.0 - leader as f64;
    assert!(m[format!("raftkv_peer_messages_sent_total{{peer=\"{follower}\"}}").as_str()] >= 1.0);
    assert!(m[format!("raftkv_peer_bytes_sent_total{{peer=\"{follower}\"}}").as_str()] > 0.0);
    assert!(m.samples.contains_key(&format!(
        "raftkv_peer_send_failures_total{{peer=\"{follower}\"}}"
    )));
    assert_eq!(m["raftkv_snapshots_sent_total{result=\"ok\"}"], 0.0);
    assert_eq!(m["raftkv_snapshots_sent_total{result=\"failed\"}"], 0.0);

    // A bad request through the gRPC API is counted by its status code.
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{}", node.client_addr()))
        .expect("endpoint")
        .connect()
        .await
        .expect("connect");
    let err = raftkv_proto::v1::kv_client::KvClient::new(channel)
        .put(raftkv_proto::v1::PutRequest::default())
        .await
        .expect_err("an empty key is refused");
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    let m = scrape(addr).await;
    assert_eq!(m["raftkv_rpc_errors_total{code=\"INVALID_ARGUMENT\"}"], 1.0);
    // Every series has a sample by now (the error counter only after an error).
    assert_catalogue(&m, CATALOGUE);

    // Garbage gets an error response and the exporter keeps serving.
    assert!(
        http_get(addr, b"\x16\x03\x01garbage\r\n\r\n")
            .await
            .starts_with("HTTP/1.1 400")
    );
    assert!(
        http_get(addr, b"GET /nope HTTP/1.1\r\n\r\n")
            .await
            .starts_with("HTTP/1.1 404")
    );
    let big = vec![b'a'; 64 << 10];
    let resp = http_get(addr, &big).await;
    assert!(resp.starts_with("HTTP/1.1 431") || resp.is_empty());
    let again = scrape(addr).await;
    assert!(again["raftkv_commit_index"] >= m["raftkv_commit_index"]);
    for node in nodes {
        node.stop().await.expect("stop");
    }
}

/// With TLS on both ports, each port's certificate expiry is exported, as its `notAfter`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_certificate_expiry_is_exported() {
    let dir = tempfile::tempdir().expect("tempdir");
    let pki = support::tls::TestPki::new(&dir.path().join("pki"), "metrics");
    let before = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs_f64();
    let files = pki.issue_node("node", &["127.0.0.1".to_owned()], 30);
    let tls = |ca: Option<std::path::PathBuf>| raftkv_node::tls::TlsFiles {
        cert: files.cert.clone(),
        key: files.key.clone(),
        ca,
    };
    let client = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let peer = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = |l: &TcpListener| l.local_addr().expect("addr").to_string();
    let cfg = NodeConfig {
        id: 1,
        advertise_client: addr(&client),
        advertise_peer: addr(&peer),
        peers: BTreeMap::new(),
        data_dir: dir.path().join("n1"),
        initial_cluster_size: 1,
        initial_cluster_token: "metrics-tls-test".into(),
        driver: DriverConfig::default(),
        transport: Default::default(),
        seed: Some(1),
        listen_metrics: Some("127.0.0.1:0".parse().expect("addr")),
        listen_health: None,
        tls: raftkv_node::tls::TlsOptions {
            peer: Some(tls(Some(pki.ca()))),
            client: Some(tls(None)),
        },
    };
    let node = raftkv_node::start_with_listeners(cfg, client, peer)
        .await
        .expect("start");
    let m = scrape(node.metrics_addr().expect("metrics served")).await;
    assert_catalogue(&m, TLS_CATALOGUE);
    for port in ["peer", "client"] {
        let expiry =
            m[format!("raftkv_tls_certificate_expiry_timestamp_seconds{{port=\"{port}\"}}")
                .as_str()];
        // Issued for 30 days from about `before` (the issuing itself takes a moment).
        let want = before + 30.0 * 86_400.0;
        assert!(
            (expiry - want).abs() < 120.0,
            "{port}: expiry {expiry}, expected about {want}"
        );
    }
    node.stop().await.expect("stop");
}
