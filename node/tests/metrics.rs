//! Scrapes `/metrics` from a running single-node cluster over plain HTTP, parses the Prometheus
//! text format line by line, and checks that the series move with the work done. Also checks
//! that the exporter answers garbage with an error and keeps serving.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use raftkv_node::{DriverConfig, NodeConfig, NodeHandle, kv};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// One sample: metric name, labels as written, value.
type Samples = BTreeMap<String, f64>;

/// Parses the text exposition format; every sample line must be `name{labels} value` or
/// `name value`, and every `# TYPE` names a known type.
fn parse(text: &str) -> Samples {
    let mut out = Samples::new();
    for line in text.lines() {
        if line.is_empty() {
            continue;
        }
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let kind = rest.split_whitespace().nth(1).expect("TYPE has a kind");
            assert!(
                ["counter", "gauge", "histogram"].contains(&kind),
                "unknown type in {line:?}"
            );
            continue;
        }
        if line.starts_with("# HELP ") {
            continue;
        }
        let (series, value) = line.rsplit_once(' ').expect("sample has a value");
        let value: f64 = value.parse().expect("numeric value");
        let name_end = series.find('{').unwrap_or(series.len());
        let name = &series[..name_end];
        assert!(
            name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'),
            "bad metric name in {line:?}"
        );
        if name_end < series.len() {
            assert!(series.ends_with('}'), "unterminated labels in {line:?}");
        }
        out.insert(series.to_string(), value);
    }
    out
}

async fn http_get(addr: std::net::SocketAddr, request: &[u8]) -> String {
    let mut s = TcpStream::connect(addr).await.expect("connect");
    s.write_all(request).await.expect("write");
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).await.expect("read");
    String::from_utf8(buf).expect("utf-8 response")
}

async fn scrape(addr: std::net::SocketAddr) -> Samples {
    let resp = http_get(addr, b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n").await;
    let (head, body) = resp.split_once("\r\n\r\n").expect("http response");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(head.contains("text/plain; version=0.0.4"), "{head}");
    parse(body)
}

async fn put(node: &NodeHandle, key: &str, seq: u64) {
    let cmd = kv::Command::with_session(
        kv::Op::Put {
            key: key.as_bytes().to_vec().into(),
            value: b"v".to_vec().into(),
        },
        "metrics-test",
        seq,
    );
    node.propose(cmd).await.expect("put");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_are_scraped_and_parsed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let client = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let peer = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let peer_addr = peer.local_addr().expect("addr").to_string();
    let cfg = NodeConfig {
        id: 1,
        advertise_client: client.local_addr().expect("addr").to_string(),
        advertise_peer: peer_addr.clone(),
        peers: [(1, peer_addr)].into_iter().collect(),
        data_dir: dir.path().join("n1"),
        initial_cluster_size: 1,
        initial_cluster_token: "metrics-test".into(),
        driver: DriverConfig {
            tick: Duration::from_millis(20),
            // Small, so the test also sees a snapshot being taken.
            snapshot_entries: 20,
            ..DriverConfig::default()
        },
        transport: Default::default(),
        seed: Some(1),
        listen_metrics: Some("127.0.0.1:0".parse().expect("addr")),
    };
    let node = raftkv_node::start_with_listeners(cfg, client, peer)
        .await
        .expect("start");
    let addr = node.metrics_addr().expect("metrics served");
    let handle = node.handle();

    let started = Instant::now();
    while node.observe().borrow().role != raftkv_raft::Role::Leader {
        assert!(started.elapsed() < Duration::from_secs(30), "no leader");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    for seq in 1..=30 {
        put(&handle, &format!("k{seq}"), seq).await;
    }

    let m = scrape(addr).await;
    assert_eq!(m["raftkv_node_id"], 1.0);
    assert_eq!(m["raftkv_role"], 3.0, "a single node leads");
    assert!(m["raftkv_term"] >= 2.0);
    assert_eq!(m["raftkv_leader_id"], 1.0);
    assert!(m["raftkv_commit_index"] >= 30.0);
    assert!(m["raftkv_applied_index"] >= 30.0);
    assert_eq!(m["raftkv_is_member"], 1.0);
    assert!(m["raftkv_proposal_duration_seconds_count"] >= 30.0);
    assert_eq!(
        m["raftkv_proposal_duration_seconds_bucket{le=\"+Inf\"}"],
        m["raftkv_proposal_duration_seconds_count"]
    );
    assert!(m["raftkv_fsync_duration_seconds_count"] >= 1.0);
    assert!(m["raftkv_fsync_duration_seconds_sum"] > 0.0);
    assert!(m["raftkv_snapshots_taken_total"] >= 1.0);
    assert_eq!(m["raftkv_snapshots_sent_total{result=\"ok\"}"], 0.0);

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
    node.stop().await.expect("stop");
}
