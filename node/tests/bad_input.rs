//! Bad input against a running node: every case gets a clear error and the node stays up.
//!
//! Covers the limits of DESIGN.md §5 (keys 1..=4096 bytes, values up to 1 MiB, consistency enum,
//! scan limit), garbage byte streams on both TCP ports, malformed Raft messages on the peer port,
//! and bad `Cluster.AddMember` requests. After each case the test asserts that the node still
//! takes writes and that data acknowledged *before* the bad input is still there.
//!
//! A single-node cluster is enough: input validation happens before anything is replicated, and
//! one node elects itself at once.

mod support;

use std::time::Duration;

use bytes::Bytes;
use raftkv_proto::v1::{
    AddMemberRequest, Append, AppendEntriesRequest, CompareAndSwapRequest, DeleteRequest, Entry,
    GetRequest, Heartbeat, InstallSnapshotRequest, PutRequest, RaftResponse, RequestVoteRequest,
    ScanRequest, append_entries_request, entry,
};
use support::inprocess::{TestCluster, assert_status};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;
use tonic::Code;

/// The limits of DESIGN.md §5, spelled out here rather than imported so that a change to the
/// node's constants cannot silently change what is tested.
const MAX_KEY: usize = 4096;
const MAX_VALUE: usize = 1 << 20;
// The shared constants (raftkv-proto) must still say the same: changing a limit is a change of
// the client contract, so it should fail here loudly rather than pass with a moved target.
const _: () = assert!(MAX_KEY == raftkv_proto::MAX_KEY_BYTES);
const _: () = assert!(MAX_VALUE == raftkv_proto::MAX_VALUE_BYTES);

/// What a test wrote and had acknowledged before sending bad input: (key, value, version).
type Acked = Vec<(Vec<u8>, Vec<u8>, u64)>;

/// A single-node cluster with one acknowledged write.
async fn started() -> (TestCluster, Acked) {
    let c = TestCluster::start(1).await;
    c.wait_for_leader().await;
    let version = c
        .kv(1)
        .put(put(b"before", b"acknowledged", "setup", 1))
        .await
        .expect("the first put")
        .into_inner()
        .version;
    (
        c,
        vec![(b"before".to_vec(), b"acknowledged".to_vec(), version)],
    )
}

fn put(key: &[u8], value: &[u8], client_id: &str, seq: u64) -> PutRequest {
    PutRequest {
        key: Bytes::copy_from_slice(key),
        value: Bytes::copy_from_slice(value),
        client_id: client_id.into(),
        seq,
    }
}

fn get(key: &[u8], consistency: i32) -> GetRequest {
    GetRequest {
        key: Bytes::copy_from_slice(key),
        consistency,
    }
}

fn scan(start: &[u8], limit: u32, consistency: i32) -> ScanRequest {
    ScanRequest {
        start: Bytes::copy_from_slice(start),
        end: Bytes::new(),
        limit,
        consistency,
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn keys_and_values_outside_the_limits_are_invalid_arguments() {
    let (c, mut acked) = started().await;
    let mut kv = c.kv(1);
    let long_key = vec![b'k'; MAX_KEY + 1];
    let long_value = vec![b'v'; MAX_VALUE + 1];

    // Every method that takes a key checks it, and names the limit.
    for (what, key) in [("empty key", &b""[..]), ("key of 4097 bytes", &long_key)] {
        let needles = ["4096"];
        let r = kv.put(put(key, b"v", "bad", 1)).await;
        assert_status(r, Code::InvalidArgument, &needles, &format!("put, {what}"));
        let r = kv.get(get(key, 0)).await;
        assert_status(r, Code::InvalidArgument, &needles, &format!("get, {what}"));
        let r = kv
            .delete(DeleteRequest {
                key: Bytes::copy_from_slice(key),
                client_id: "bad".into(),
                seq: 2,
            })
            .await;
        assert_status(
            r,
            Code::InvalidArgument,
            &needles,
            &format!("delete, {what}"),
        );
        let r = kv
            .compare_and_swap(CompareAndSwapRequest {
                key: Bytes::copy_from_slice(key),
                expected_version: 0,
                value: Bytes::from_static(b"v"),
                client_id: "bad".into(),
                seq: 3,
            })
            .await;
        assert_status(r, Code::InvalidArgument, &needles, &format!("cas, {what}"));
    }
    let r = kv.scan(scan(&long_key, 0, 0)).await;
    assert_status(
        r,
        Code::InvalidArgument,
        &["4096"],
        "scan start of 4097 bytes",
    );

    // Values above 1 MiB, on both methods that carry one.
    let r = kv.put(put(b"big", &long_value, "bad", 4)).await;
    assert_status(
        r,
        Code::InvalidArgument,
        &["1048576"],
        "put, value of 1 MiB + 1",
    );
    let r = kv
        .compare_and_swap(CompareAndSwapRequest {
            key: Bytes::from_static(b"big"),
            expected_version: 0,
            value: Bytes::from(long_value),
            client_id: "bad".into(),
            seq: 5,
        })
        .await;
    assert_status(
        r,
        Code::InvalidArgument,
        &["1048576"],
        "cas, value of 1 MiB + 1",
    );

    // Sessions: a set client_id needs a seq, and client ids are bounded.
    let r = kv.put(put(b"k", b"v", "bad", 0)).await;
    assert_status(r, Code::InvalidArgument, &["seq"], "seq 0 with a client_id");
    let r = kv.put(put(b"k", b"v", &"c".repeat(10_000), 1)).await;
    assert_status(
        r,
        Code::InvalidArgument,
        &["client_id"],
        "a 10 kB client_id",
    );

    // The limits are inclusive: exactly 4096 bytes of key and exactly 1 MiB of value succeed.
    let max_key = vec![b'K'; MAX_KEY];
    let max_value: Vec<u8> = (0..MAX_VALUE).map(|i| (i % 251) as u8).collect();
    let t = Instant::now();
    for (key, value, seq) in [
        (&max_key, &b"max key"[..], 1),
        (&b"max-value".to_vec(), &max_value[..], 2),
    ] {
        let version = kv
            .put(put(key, value, "limits", seq))
            .await
            .unwrap_or_else(|e| {
                panic!(
                    "a put at the limit ({} B key, {} B value): {e}",
                    key.len(),
                    value.len()
                )
            })
            .into_inner()
            .version;
        acked.push((key.clone(), value.to_vec(), version));
    }
    println!("puts at the limits took {} ms", t.elapsed().as_millis());
    c.assert_serving(&acked).await;
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn unknown_consistency_and_oversize_scan_limits_are_invalid_arguments() {
    let (c, acked) = started().await;
    let mut kv = c.kv(1);
    for consistency in [3, 7, -1, i32::MAX] {
        let what = format!("get with consistency {consistency}");
        let r = kv.get(get(b"before", consistency)).await;
        assert_status(r, Code::InvalidArgument, &["consistency"], &what);
        let what = format!("scan with consistency {consistency}");
        let r = kv.scan(scan(b"", 0, consistency)).await;
        assert_status(r, Code::InvalidArgument, &["consistency"], &what);
    }
    let r = kv.scan(scan(b"", 10_001, 0)).await;
    assert_status(r, Code::InvalidArgument, &["10000"], "scan limit 10001");
    let r = kv.scan(scan(b"", u32::MAX, 0)).await;
    assert_status(r, Code::InvalidArgument, &["10000"], "scan limit u32::MAX");
    // The maximum itself is fine.
    let page = kv
        .scan(scan(b"", 10_000, 0))
        .await
        .expect("scan limit 10000")
        .into_inner();
    assert_eq!(page.items.len(), 1);
    c.assert_serving(&acked).await;
    c.shutdown().await;
}

/// A deterministic stream of pseudo-random bytes (xorshift64*), so a failure is reproducible.
fn garbage(len: usize, mut seed: u64) -> Vec<u8> {
    (0..len)
        .map(|_| {
            seed ^= seed >> 12;
            seed ^= seed << 25;
            seed ^= seed >> 27;
            (seed.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 56) as u8
        })
        .collect()
}

/// Writes `bytes` to `addr`, closes the sending half, and waits until the server closes the
/// connection or it errors. Returns how long that took; panics if the server keeps it open.
async fn send_garbage(addr: std::net::SocketAddr, bytes: &[u8]) -> Duration {
    let t = Instant::now();
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    // The server may close (or reset) before it has read everything: a failed write is one of
    // the expected outcomes, not a test failure.
    let _ = stream.write_all(bytes).await;
    let _ = stream.shutdown().await;
    let mut sink = vec![0u8; 64 << 10];
    let closed = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match stream.read(&mut sink).await {
                Ok(0) | Err(_) => break,
                // Whatever the server says first (a GOAWAY frame, an HTTP/1 error) is fine.
                Ok(_) => {}
            }
        }
    })
    .await;
    assert!(
        closed.is_ok(),
        "{addr} kept a connection open after garbage"
    );
    t.elapsed()
}

#[tokio::test(flavor = "multi_thread")]
async fn garbage_on_the_client_and_peer_ports_is_dropped() {
    let (c, acked) = started().await;
    const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
    let streams: Vec<(&str, Vec<u8>)> = vec![
        ("random bytes", garbage(64 << 10, 0x5eed)),
        (
            "an HTTP/1.1 request",
            b"GET /raftkv.v1.Kv/Get HTTP/1.1\r\nHost: raftkv\r\nContent-Length: 5\r\n\r\nhello"
                .to_vec(),
        ),
        ("a truncated HTTP/2 preface", PREFACE[..10].to_vec()),
        (
            "the HTTP/2 preface and random frames",
            [PREFACE, &garbage(4 << 10, 42)].concat(),
        ),
        ("a single zero byte", vec![0]),
    ];
    let node = c.node(1);
    for (port, addr) in [("client", node.client_addr()), ("peer", node.peer_addr())] {
        for (what, bytes) in &streams {
            let took = send_garbage(addr, bytes).await;
            println!("{port} port closed {what} after {} ms", took.as_millis());
        }
    }
    // Many at once, as a port scanner or a misconfigured client would.
    let mut all = Vec::new();
    for i in 0..32u64 {
        let addr = if i % 2 == 0 {
            node.client_addr()
        } else {
            node.peer_addr()
        };
        let bytes = garbage(1024, i + 1);
        all.push(tokio::spawn(
            async move { send_garbage(addr, &bytes).await },
        ));
    }
    for h in all {
        h.await.expect("garbage sender");
    }
    // Connections that stall mid-handshake and stay open (slowloris style) must not stop the
    // node from serving everyone else.
    let mut stalled = Vec::new();
    for addr in [node.client_addr(), node.peer_addr()] {
        stalled.push(TcpStream::connect(addr).await.expect("connect"));
        let mut partial = TcpStream::connect(addr).await.expect("connect");
        partial
            .write_all(&PREFACE[..10])
            .await
            .expect("a partial preface");
        stalled.push(partial);
    }
    c.assert_serving(&acked).await;
    drop(stalled);
    c.shutdown().await;
}

/// Stopping a node must not depend on the good behaviour of whoever is connected to it.
#[tokio::test(flavor = "multi_thread")]
async fn stop_is_not_held_up_by_a_stalled_connection() {
    let (c, _acked) = started().await;
    let silent = TcpStream::connect(c.node(1).client_addr())
        .await
        .expect("connect");
    let mut partial = TcpStream::connect(c.node(1).peer_addr())
        .await
        .expect("connect");
    partial
        .write_all(&b"PRI * HTTP/2.0\r\n"[..])
        .await
        .expect("a partial preface");
    let t = Instant::now();
    let stopped = tokio::time::timeout(Duration::from_secs(15), c.shutdown()).await;
    println!("stop took {} ms", t.elapsed().as_millis());
    drop((silent, partial));
    assert!(
        stopped.is_ok(),
        "the node did not stop within 15 s while a stalled connection was open"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn malformed_raft_messages_are_refused() {
    let (c, acked) = started().await;
    let cluster_id = c.node(1).cluster_id().to_string();
    let mut raft = c.raft(1);
    // Term 0 and a sender that is not a member: even if something were admitted by mistake, it
    // could not disturb the node's term.
    let heartbeat = |cluster_id: &str, to: u64| AppendEntriesRequest {
        cluster_id: cluster_id.into(),
        from: 2,
        to,
        term: 0,
        kind: Some(append_entries_request::Kind::Heartbeat(Heartbeat {
            commit: 0,
            round: 0,
        })),
    };

    let r = raft.append_entries(heartbeat("another-cluster", 1)).await;
    assert_status(
        r,
        Code::FailedPrecondition,
        &["cluster"],
        "wrong cluster_id",
    );
    let r = raft.append_entries(heartbeat("", 1)).await;
    assert_status(
        r,
        Code::FailedPrecondition,
        &["cluster"],
        "empty cluster_id",
    );
    let r = raft.append_entries(heartbeat(&cluster_id, 7)).await;
    assert_status(r, Code::FailedPrecondition, &["7"], "wrong `to`");
    let r = raft
        .request_vote(RequestVoteRequest {
            cluster_id: "another-cluster".into(),
            from: 2,
            to: 1,
            ..RequestVoteRequest::default()
        })
        .await;
    assert_status(
        r,
        Code::FailedPrecondition,
        &["cluster"],
        "vote, wrong cluster_id",
    );

    let r = raft
        .append_entries(AppendEntriesRequest {
            kind: None,
            ..heartbeat(&cluster_id, 1)
        })
        .await;
    assert_status(r, Code::InvalidArgument, &[], "AppendEntries with no kind");

    let entry_without_payload = AppendEntriesRequest {
        kind: Some(append_entries_request::Kind::Append(Append {
            prev_log_index: 0,
            prev_log_term: 0,
            entries: vec![Entry {
                term: 0,
                index: 1,
                payload: None,
            }],
            leader_commit: 0,
        })),
        ..heartbeat(&cluster_id, 1)
    };
    let r = raft.append_entries(entry_without_payload).await;
    assert_status(r, Code::InvalidArgument, &[], "an entry without a payload");

    let normal_then_missing = AppendEntriesRequest {
        kind: Some(append_entries_request::Kind::Append(Append {
            prev_log_index: 0,
            prev_log_term: 0,
            entries: vec![
                Entry {
                    term: 0,
                    index: 1,
                    payload: Some(entry::Payload::Normal(Bytes::from_static(b"x"))),
                },
                Entry {
                    term: 0,
                    index: 2,
                    payload: None,
                },
            ],
            leader_commit: 0,
        })),
        ..heartbeat(&cluster_id, 1)
    };
    let r = raft.append_entries(normal_then_missing).await;
    assert_status(
        r,
        Code::InvalidArgument,
        &[],
        "a valid entry, then one without payload",
    );

    let r = raft
        .respond(RaftResponse {
            cluster_id: cluster_id.clone(),
            from: 2,
            to: 1,
            term: 0,
            kind: None,
            lease_guard_ms: 0,
        })
        .await;
    assert_status(r, Code::InvalidArgument, &[], "Respond with no kind");

    let r = raft
        .append_entries(AppendEntriesRequest {
            from: 0,
            ..heartbeat(&cluster_id, 1)
        })
        .await;
    assert_status(r, Code::InvalidArgument, &[], "sender id 0");

    // A snapshot stream that ends before its first chunk, and one whose first chunk has no meta.
    let r = raft
        .install_snapshot(tokio_stream::iter(Vec::<InstallSnapshotRequest>::new()))
        .await;
    assert_status(r, Code::InvalidArgument, &[], "an empty snapshot stream");
    let r = raft
        .install_snapshot(tokio_stream::iter(vec![InstallSnapshotRequest {
            cluster_id: cluster_id.clone(),
            from: 2,
            to: 1,
            term: 0,
            meta: None,
            offset: 0,
            data: Bytes::from_static(b"junk"),
            done: true,
        }]))
        .await;
    assert_status(
        r,
        Code::InvalidArgument,
        &["meta"],
        "a snapshot without meta",
    );

    // Nothing above reached the core: same term, still leader.
    let s = c.status(1).await.expect("status");
    assert_eq!(s.leader_id, 1, "{s:?}");
    c.assert_serving(&acked).await;
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn add_member_refuses_id_zero_and_bad_addresses() {
    let (c, acked) = started().await;
    let mut admin = c.admin(1);
    let add = |node_id: u64, peer: &str, client: &str| AddMemberRequest {
        node_id,
        peer_addr: peer.into(),
        client_addr: client.into(),
    };
    let r = admin
        .add_member(add(0, "127.0.0.1:7100", "127.0.0.1:7000"))
        .await;
    assert_status(r, Code::InvalidArgument, &["node_id"], "node_id 0");
    for bad in [
        "",
        "no-port",
        "host:",
        ":7000",
        "host:0",
        "host:65536",
        "host:port",
        "127.0.0.1:-1",
    ] {
        let r = admin.add_member(add(9, bad, "127.0.0.1:7000")).await;
        assert_status(
            r,
            Code::InvalidArgument,
            &["peer_addr"],
            &format!("peer_addr {bad:?}"),
        );
        let r = admin.add_member(add(9, "127.0.0.1:7100", bad)).await;
        assert_status(
            r,
            Code::InvalidArgument,
            &["client_addr"],
            &format!("client_addr {bad:?}"),
        );
    }
    // None of them changed the configuration.
    let s = c.status(1).await.expect("status");
    let members: Vec<u64> = s.members.iter().map(|m| m.id).collect();
    assert_eq!(members, vec![1]);
    c.assert_serving(&acked).await;
    c.shutdown().await;
}
