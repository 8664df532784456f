//! A running cluster: three nodes in this test process, talking real gRPC over 127.0.0.1.
//!
//! Each test starts its own cluster (see `support/inprocess.rs`) and checks one part of the client
//! contract of DESIGN.md §5 end to end: election and agreement, leader redirects (raw and through
//! `raftkv_client`), CAS, delete, scan paging, exactly-once retries, versions as log indexes, and
//! the three read consistencies.
//!
//! Leadership may move at any time on a loaded machine, so tests that need "the leader" go
//! through `TestCluster::on_leader`, which retries with the identical request (writes carry a
//! session, so a retry is applied once). Assertions about *which* node leads are made only when
//! the term did not change around the observation.

mod support;

use std::collections::BTreeMap;
use std::time::Duration;

use bytes::Bytes;
use raftkv_client::{Client, ClientOptions};
use raftkv_proto::LEADER_METADATA_KEY;
use raftkv_proto::v1::{
    CompareAndSwapRequest, Consistency, DeleteRequest, GetRequest, GetResponse, MemberRole,
    PutRequest, Role, ScanRequest, ScanResponse,
};
use support::inprocess::{TestCluster, assert_status, eventually};
use tokio::time::Instant;
use tonic::Code;

fn put_req(key: &str, value: &str, client_id: &str, seq: u64) -> PutRequest {
    PutRequest {
        key: Bytes::copy_from_slice(key.as_bytes()),
        value: Bytes::copy_from_slice(value.as_bytes()),
        client_id: client_id.into(),
        seq,
    }
}

fn get_req(key: &str, consistency: Consistency) -> GetRequest {
    GetRequest {
        key: Bytes::copy_from_slice(key.as_bytes()),
        consistency: consistency.into(),
    }
}

/// Put through whichever node leads; returns the version.
async fn put(c: &TestCluster, req: PutRequest) -> u64 {
    c.on_leader(|mut kv| {
        let req = req.clone();
        async move { kv.put(req).await }
    })
    .await
    .expect("put")
    .version
}

/// Get through whichever node leads.
async fn get(c: &TestCluster, key: &str, consistency: Consistency) -> GetResponse {
    c.on_leader(|mut kv| {
        let req = get_req(key, consistency);
        async move { kv.get(req).await }
    })
    .await
    .expect("get")
}

/// Compare-and-swap through whichever node leads.
async fn cas(
    c: &TestCluster,
    key: &str,
    expected_version: u64,
    value: &str,
    seq: u64,
) -> raftkv_proto::v1::CompareAndSwapResponse {
    let req = CompareAndSwapRequest {
        key: Bytes::copy_from_slice(key.as_bytes()),
        expected_version,
        value: Bytes::copy_from_slice(value.as_bytes()),
        client_id: "cas-test".into(),
        seq,
    };
    c.on_leader(|mut kv| {
        let req = req.clone();
        async move { kv.compare_and_swap(req).await }
    })
    .await
    .expect("compare-and-swap")
}

/// Delete through whichever node leads.
async fn delete(c: &TestCluster, key: &str, seq: u64) -> raftkv_proto::v1::DeleteResponse {
    let req = DeleteRequest {
        key: Bytes::copy_from_slice(key.as_bytes()),
        client_id: "delete-test".into(),
        seq,
    };
    c.on_leader(|mut kv| {
        let req = req.clone();
        async move { kv.delete(req).await }
    })
    .await
    .expect("delete")
}

/// One linearizable scan page through whichever node leads.
async fn scan(c: &TestCluster, start: &[u8], end: &[u8], limit: u32) -> ScanResponse {
    let req = ScanRequest {
        start: Bytes::copy_from_slice(start),
        end: Bytes::copy_from_slice(end),
        limit,
        consistency: Consistency::Linearizable.into(),
    };
    c.on_leader(|mut kv| {
        let req = req.clone();
        async move { kv.scan(req).await }
    })
    .await
    .expect("scan")
}

fn keys_of(page: &ScanResponse) -> Vec<String> {
    page.items
        .iter()
        .map(|kv| String::from_utf8_lossy(&kv.key).into_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_leader_is_elected_and_every_node_agrees_on_it() {
    let c = TestCluster::start(3).await;
    let leader = c.wait_for_leader().await;

    // `wait_for_leader` polled until the views agreed; now check the details of one snapshot of
    // them, re-polling only if an election happened in between.
    eventually("a consistent status snapshot", || async {
        let statuses: Vec<_> = c
            .statuses()
            .await
            .into_iter()
            .collect::<Result<_, _>>()
            .map_err(|e| e.to_string())?;
        if statuses.iter().any(|s| s.term != leader.term) {
            return Err(format!("the term moved on from {}", leader.term));
        }
        for s in &statuses {
            assert_eq!(s.leader_id, leader.id, "node {} follows another", s.node_id);
            assert_eq!(s.leader_client_addr, leader.client_addr);
            assert_eq!(s.cluster_id, c.node(s.node_id).cluster_id());
            assert!(!s.cluster_id.is_empty());
            let want_role = if s.node_id == leader.id {
                Role::Leader
            } else {
                Role::Follower
            };
            assert_eq!(s.role, want_role as i32, "node {}", s.node_id);
            // Knowing the leader's client address means having applied the entry that
            // published it, which follows the bootstrap configuration (index 1) and the
            // leader's no-op (2). Nothing is applied beyond what is known to be committed.
            assert!(s.applied_index >= 3, "{s:?}");
            assert!(s.applied_index <= s.commit_index, "{s:?}");
            let members: Vec<u64> = s.members.iter().map(|m| m.id).collect();
            assert_eq!(members, vec![1, 2, 3], "node {}", s.node_id);
            for m in &s.members {
                assert_eq!(m.role, MemberRole::Voter as i32);
                assert_eq!(m.peer_addr, c.node(m.id).peer_addr().to_string());
            }
        }
        assert_eq!(
            statuses
                .iter()
                .filter(|s| s.role == Role::Leader as i32)
                .count(),
            1
        );
        assert_eq!(leader.client_addr, c.client_addr(leader.id));
        Ok(())
    })
    .await;

    // Every member eventually publishes its own client address through the log (the leader
    // learns followers' addresses over its peer port), so any node can redirect to any other.
    eventually("every member's client address is published", || async {
        let s = c.status(leader.id).await.map_err(|e| e.to_string())?;
        for m in &s.members {
            if m.client_addr != c.client_addr(m.id) {
                return Err(format!(
                    "member {} has client address {:?}",
                    m.id, m.client_addr
                ));
            }
        }
        Ok(())
    })
    .await;
    println!(
        "every member's address published after {} ms",
        c.elapsed().as_millis()
    );
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_follower_redirects_to_the_leader_and_the_client_follows() {
    let c = TestCluster::start(3).await;
    c.wait_for_leader().await;

    // Raw gRPC: a follower answers FAILED_PRECONDITION naming the leader's client address. The
    // claim is checked only when the follower's view did not change around the calls. Each
    // attempt writes its own key, so that we can check afterwards that it was not applied.
    let mut attempt = 0;
    let (follower, refused_key) = eventually("a follower redirects to the leader", || {
        attempt += 1;
        let key = format!("redirected-{attempt}");
        let req = put_req(&key, "never-applied", "redirect-test", attempt);
        let read = get_req(&key, Consistency::Linearizable);
        let c = &c;
        async move {
            let leader = c.current_leader().await.ok_or("no leader")?;
            let follower = c
                .ids()
                .into_iter()
                .find(|&id| id != leader)
                .ok_or("no follower")?;
            let before = c.status(follower).await.map_err(|e| e.to_string())?;
            if before.leader_id != leader || before.leader_client_addr.is_empty() {
                return Err(format!("node {follower} does not know leader {leader} yet"));
            }
            let write = c.kv(follower).put(req).await;
            // Leader-only reads redirect the same way.
            let read = c.kv(follower).get(read).await;
            let after = c.status(follower).await.map_err(|e| e.to_string())?;
            if (after.term, after.leader_id) != (before.term, before.leader_id) {
                return Err("leadership moved during the calls".into());
            }
            for (what, status) in [
                ("put", write.map(|_| ())),
                ("linearizable get", read.map(|_| ())),
            ] {
                let status = assert_status(status, Code::FailedPrecondition, &[], what);
                let named = status
                    .metadata()
                    .get(LEADER_METADATA_KEY)
                    .unwrap_or_else(|| panic!("{what}: a redirect carries raftkv-leader"))
                    .to_str()
                    .expect("an ASCII address");
                assert_eq!(named, c.client_addr(leader), "{what}");
                assert_eq!(named, before.leader_client_addr, "{what}");
            }
            Ok((follower, key))
        }
    })
    .await;
    println!(
        "follower {follower} redirected to the leader after {} ms",
        c.elapsed().as_millis()
    );

    // The refused Put must not have been applied anywhere.
    let got = get(&c, &refused_key, Consistency::Linearizable).await;
    assert!(!got.found, "a redirected write was applied: {got:?}");

    // The client library, given only the follower, follows the redirect.
    let client = Client::connect(
        vec![c.client_addr(follower)],
        ClientOptions {
            timeout: Duration::from_secs(30),
            ..ClientOptions::default()
        },
    )
    .await
    .expect("client");
    let t = Instant::now();
    let version = client
        .put("via-follower", "hello")
        .await
        .expect("put via follower");
    let got = client
        .get("via-follower", Consistency::Linearizable)
        .await
        .expect("get via follower")
        .expect("the key exists");
    println!(
        "put+get through a follower took {} ms",
        t.elapsed().as_millis()
    );
    assert_eq!(got.value.as_ref(), b"hello");
    assert_eq!(got.version, version);

    // The client now caches a leader other than the follower it was given (unless the follower
    // has itself become leader meanwhile, which the term check rules out).
    let s = c.status(follower).await.expect("status");
    let cached = client.leader().expect("a cached leader");
    if s.role != Role::Leader as i32 {
        assert_ne!(cached, format!("http://{}", c.client_addr(follower)));
        assert!(
            c.client_endpoints()
                .iter()
                .any(|a| cached == format!("http://{a}")),
            "cached leader {cached} is not a cluster member"
        );
    }
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_failed_cas_is_ok_with_the_current_value_and_version() {
    let c = TestCluster::start(3).await;
    c.wait_for_leader().await;

    // expected_version 0 = "must be absent": succeeds on a missing key.
    let created = cas(&c, "cas", 0, "first", 1).await;
    assert!(created.succeeded, "{created:?}");
    assert!(created.version > 0);
    assert!(created.current_value.is_empty(), "{created:?}");

    // ...and fails once it exists, reporting what is there.
    let exists = cas(&c, "cas", 0, "second", 2).await;
    assert!(!exists.succeeded);
    assert_eq!(exists.version, created.version);
    assert_eq!(exists.current_value.as_ref(), b"first");

    // A wrong version fails the same way, and changes nothing.
    let wrong = cas(&c, "cas", created.version + 1000, "second", 3).await;
    assert!(!wrong.succeeded);
    assert_eq!(wrong.version, created.version);
    assert_eq!(wrong.current_value.as_ref(), b"first");

    // The right version succeeds, with a new (higher) version.
    let swapped = cas(&c, "cas", created.version, "second", 4).await;
    assert!(swapped.succeeded, "{swapped:?}");
    assert!(swapped.version > created.version);
    assert!(swapped.current_value.is_empty());

    let got = get(&c, "cas", Consistency::Linearizable).await;
    assert!(got.found);
    assert_eq!(got.value.as_ref(), b"second");
    assert_eq!(got.version, swapped.version);

    // A compare against a missing key with a non-zero version: version 0, empty value.
    let missing = cas(&c, "cas-missing", 5, "x", 5).await;
    assert!(!missing.succeeded);
    assert_eq!(missing.version, 0);
    assert!(missing.current_value.is_empty());
    assert!(
        !get(&c, "cas-missing", Consistency::Linearizable)
            .await
            .found
    );
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn delete_reports_whether_the_key_existed() {
    let c = TestCluster::start(3).await;
    c.wait_for_leader().await;

    let missing = delete(&c, "del", 1).await;
    assert!(!missing.deleted, "{missing:?}");
    assert_eq!(missing.prev_version, 0);

    let version = put(&c, put_req("del", "v", "delete-test-put", 1)).await;
    let existing = delete(&c, "del", 2).await;
    assert!(existing.deleted);
    assert_eq!(existing.prev_version, version);

    let got = get(&c, "del", Consistency::Linearizable).await;
    assert!(!got.found);
    assert_eq!(got.version, 0);
    assert!(got.value.is_empty());

    let again = delete(&c, "del", 3).await;
    assert!(!again.deleted);
    assert_eq!(again.prev_version, 0);
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn scan_pages_through_a_range_in_ascending_order() {
    let c = TestCluster::start(3).await;
    c.wait_for_leader().await;

    // Written out of order, so that the order of the answer is the store's, not ours.
    let mut written: BTreeMap<String, (String, u64)> = BTreeMap::new();
    let t = Instant::now();
    for (seq, i) in (1..).zip((0..25).map(|i| (i * 7) % 25)) {
        let (key, value) = (format!("key-{i:02}"), format!("value-{i}"));
        let version = put(&c, put_req(&key, &value, "scan-test", seq)).await;
        written.insert(key, (value, version));
    }
    println!("25 sequential puts took {} ms", t.elapsed().as_millis());

    // Whole keyspace in pages of 10: 10 + 10 + 5.
    let mut seen = Vec::new();
    let mut pages = Vec::new();
    let mut start = Vec::new();
    loop {
        let page = scan(&c, &start, b"", 10).await;
        assert!(page.items.len() <= 10);
        pages.push((page.items.len(), page.more));
        for item in &page.items {
            let key = String::from_utf8_lossy(&item.key).into_owned();
            let (value, version) = written.get(&key).expect("only written keys");
            assert_eq!(item.value.as_ref(), value.as_bytes(), "{key}");
            assert_eq!(item.version, *version, "{key}");
            seen.push(key);
        }
        if !page.more {
            break;
        }
        let last = page
            .items
            .last()
            .expect("a page that says `more` has items");
        start = [last.key.as_ref(), b"\0"].concat();
    }
    assert_eq!(pages, vec![(10, true), (10, true), (5, false)]);
    let expected: Vec<String> = written.keys().cloned().collect();
    assert_eq!(seen, expected, "every key once, ascending");

    // [start, end): start inclusive, end exclusive; default limit (0) covers the range.
    let mid = scan(&c, b"key-05", b"key-15", 0).await;
    let want: Vec<String> = (5..15).map(|i| format!("key-{i:02}")).collect();
    assert_eq!(keys_of(&mid), want);
    assert!(!mid.more);

    // A page that ends exactly where the range ends does not promise more.
    let exact = scan(&c, b"key-05", b"key-15", 10).await;
    assert_eq!(keys_of(&exact), keys_of(&mid));
    assert!(
        !exact.more,
        "the range [key-05, key-15) has exactly 10 keys"
    );
    let exact_tail = scan(&c, b"key-15", b"", 10).await;
    assert_eq!(exact_tail.items.len(), 10);
    assert!(!exact_tail.more, "key-24 is the last key");

    // Empty end = to the last key.
    let tail = scan(&c, b"key-20", b"", 0).await;
    let want: Vec<String> = (20..25).map(|i| format!("key-{i:02}")).collect();
    assert_eq!(keys_of(&tail), want);
    assert!(!tail.more);

    // Empty start = from the first key; a start between keys begins at the next one.
    let head = scan(&c, b"", b"key-03", 0).await;
    assert_eq!(keys_of(&head), vec!["key-00", "key-01", "key-02"]);
    let between = scan(&c, b"key-22\0", b"", 0).await;
    assert_eq!(keys_of(&between), vec!["key-23", "key-24"]);

    // Nothing in range: empty, and not `more`.
    let none = scan(&c, b"zzz", b"", 0).await;
    assert!(none.items.is_empty() && !none.more, "{none:?}");

    // The client library's pager agrees.
    let client = Client::connect(c.client_endpoints(), ClientOptions::default())
        .await
        .expect("client");
    let all = client
        .scan_all("", "", 0, Consistency::Linearizable)
        .await
        .expect("scan_all");
    let keys: Vec<String> = all
        .iter()
        .map(|kv| String::from_utf8_lossy(&kv.key).into_owned())
        .collect();
    assert_eq!(keys, expected);
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_retried_seq_is_applied_once() {
    let c = TestCluster::start(3).await;
    c.wait_for_leader().await;

    let first = put(&c, put_req("retried", "once", "retry-test", 1)).await;
    // The identical request again, as a client would after a lost answer.
    let retry = put(&c, put_req("retried", "once", "retry-test", 1)).await;
    assert_eq!(retry, first, "the retry must return the recorded version");

    // Other writes move the log on; the retry's answer still does not change.
    let other = put(&c, put_req("other", "x", "retry-test", 2)).await;
    assert!(other > first);
    let late_retry = put(&c, put_req("retried", "once", "retry-test", 1)).await;
    assert_eq!(late_retry, first);

    let got = get(&c, "retried", Consistency::Linearizable).await;
    assert!(got.found);
    assert_eq!(got.value.as_ref(), b"once");
    assert_eq!(got.version, first, "applied more than once");

    // The same seq with another request is refused, and changes nothing.
    let reused = put_req("retried", "different", "retry-test", 1);
    let result = c
        .on_leader(|mut kv| {
            let req = reused.clone();
            async move { kv.put(req).await }
        })
        .await;
    assert_status(
        result,
        Code::InvalidArgument,
        &[],
        "the same seq, another value",
    );
    let got = get(&c, "retried", Consistency::Linearizable).await;
    assert_eq!(got.value.as_ref(), b"once");
    assert_eq!(got.version, first);
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn versions_are_log_indexes() {
    let c = TestCluster::start(3).await;
    c.wait_for_leader().await;

    let mut last = 0;
    for (seq, key) in (1..).zip(["a", "b", "c", "a", "b"]) {
        // Everything committed so far has a lower index than a write proposed afterwards.
        let committed_before = c
            .statuses()
            .await
            .into_iter()
            .flatten()
            .map(|s| s.commit_index)
            .max()
            .expect("some node answers");
        let version = put(&c, put_req(key, &format!("v{seq}"), "version-test", seq)).await;
        // A per-key counter would give "b" version 1 after "a" got version 1; a log index
        // grows across keys.
        assert!(
            version > last,
            "put #{seq} of {key:?}: {version} after {last}"
        );
        assert!(
            version > committed_before,
            "put #{seq}: version {version} is not after commit index {committed_before}"
        );
        let got = get(&c, key, Consistency::Linearizable).await;
        assert_eq!(got.version, version);
        last = version;
    }
    // The writes are in the log: the leader's commit index has reached the last version.
    eventually("the commit index covers the last write", || async {
        let leader = c.current_leader().await.ok_or("no leader")?;
        let s = c.status(leader).await.map_err(|e| e.to_string())?;
        if s.commit_index >= last && s.applied_index >= last {
            Ok(())
        } else {
            Err(format!("{s:?}"))
        }
    })
    .await;
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn every_consistency_reads_the_written_value() {
    let c = TestCluster::start(3).await;
    c.wait_for_leader().await;

    let version = put(&c, put_req("read-me", "fresh", "read-test", 1)).await;
    for consistency in [
        Consistency::Linearizable,
        Consistency::Lease,
        Consistency::Stale,
    ] {
        // A new leader may not have applied the write yet when it answers a STALE read; the
        // other two levels must see it at once.
        let got = eventually("the leader reads the write", || async {
            let got = get(&c, "read-me", consistency).await;
            if !got.found && consistency == Consistency::Stale {
                return Err("stale read before apply".to_string());
            }
            Ok(got)
        })
        .await;
        assert!(got.found, "{consistency:?}: {got:?}");
        assert_eq!(got.value.as_ref(), b"fresh", "{consistency:?}");
        assert_eq!(got.version, version, "{consistency:?}");
    }

    // Any node serves STALE reads from its applied state: followers catch up.
    let t = Instant::now();
    for id in c.ids() {
        eventually("every node's stale read sees the write", || async {
            let got = c
                .kv(id)
                .get(get_req("read-me", Consistency::Stale))
                .await
                .map_err(|e| format!("node {id}: {e}"))?
                .into_inner();
            if got.found && got.version == version && got.value.as_ref() == b"fresh" {
                Ok(())
            } else {
                Err(format!("node {id}: {got:?}"))
            }
        })
        .await;
        let page = c
            .kv(id)
            .scan(ScanRequest {
                start: Bytes::new(),
                end: Bytes::new(),
                limit: 0,
                consistency: Consistency::Stale.into(),
            })
            .await
            .expect("stale scan on any node")
            .into_inner();
        assert_eq!(keys_of(&page), vec!["read-me"], "node {id}");
    }
    println!(
        "stale reads saw the write on every node within {} ms",
        t.elapsed().as_millis()
    );
    c.shutdown().await;
}

/// Members with different timing (DESIGN §4, the lease): node 1 waits 20 ticks before an
/// election, nodes 2 and 3 only 5. Each member reports its lease guard with every answer, and a
/// leader bounds its read lease by the shortest guard its voters report, so node 1, leading, must
/// grant itself a lease that fits nodes 2 and 3 — not one timed by its own long election timeout,
/// during which they could already have elected another leader.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_with_a_long_election_timeout_times_its_lease_by_the_shortest_member() {
    let long = raftkv_node::DriverConfig {
        election_ticks: 20,
        ..support::inprocess::fast_driver()
    };
    let short = raftkv_node::DriverConfig {
        election_ticks: 5,
        ..support::inprocess::fast_driver()
    };
    let c = TestCluster::start_with(3, |id, cfg| {
        cfg.driver = if id == 1 { long.clone() } else { short.clone() };
        cfg.transport.lease_guard = cfg.driver.lease_guard();
        cfg.listen_metrics = Some("127.0.0.1:0".parse().expect("address"));
    })
    .await;
    let expected = long.lease(Some(short.lease_guard()));
    let own = long.lease(None);
    assert!(
        expected < own,
        "the scenario needs node 1's own lease ({own:?}) to be longer than what fits the others \
         ({expected:?})"
    );

    let client = Client::connect(c.client_endpoints(), ClientOptions::default())
        .await
        .expect("client");
    let metrics = c.node(1).metrics_addr().expect("node 1 serves metrics");
    let lease = eventually(
        "node 1 to lead with a lease that fits every member",
        async || {
            let leader = c.current_leader().await;
            if leader != Some(1) {
                // Node 1 is the least likely to win an election: hand leadership to it.
                let _ = client.transfer_leader(1).await;
                return Err(format!("node {leader:?} leads"));
            }
            match read_lease(metrics).await {
                Some(lease) if lease == expected => Ok(lease),
                other => Err(format!(
                    "node 1's lease is {other:?}, expected {expected:?}"
                )),
            }
        },
    )
    .await;
    println!(
        "node 1 leads with a {lease:?} lease (its own timing alone would give {own:?}); its \
         voters' guard is {:?}",
        short.lease_guard()
    );
}

/// `raftkv_read_lease_seconds` from a node's metrics port, if it answers.
async fn read_lease(addr: std::net::SocketAddr) -> Option<Duration> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.ok()?;
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .ok()?;
    let mut body = String::new();
    s.read_to_string(&mut body).await.ok()?;
    let value = body
        .lines()
        .find_map(|l| l.strip_prefix("raftkv_read_lease_seconds "))?;
    let secs: f64 = value.trim().parse().ok()?;
    Some(Duration::from_micros((secs * 1e6).round() as u64))
}

/// A node with an empty data directory asks its peers every half second until it can decide
/// (here never: 2 of 5 initial members are no quorum). It keeps one connection per peer for all
/// those rounds instead of dialing anew each time: a proxy in front of the peer counts them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deciding_node_asks_its_peers_over_one_connection_each() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use tokio::net::{TcpListener, TcpStream};

    let bind = async || TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = |l: &TcpListener| l.local_addr().expect("address").to_string();
    let (a_client, a_peer, b_client, b_peer, proxy) = (
        bind().await,
        bind().await,
        bind().await,
        bind().await,
        bind().await,
    );
    let (b_peer_addr, proxy_addr) = (addr(&b_peer), addr(&proxy));

    // The proxy: every connection it accepts is counted and forwarded to node B's peer port.
    let accepted = Arc::new(AtomicUsize::new(0));
    let counter = accepted.clone();
    let forward_to = b_peer_addr.clone();
    let proxy_task = tokio::spawn(async move {
        while let Ok((mut inbound, _)) = proxy.accept().await {
            counter.fetch_add(1, Ordering::SeqCst);
            let to = forward_to.clone();
            tokio::spawn(async move {
                if let Ok(mut outbound) = TcpStream::connect(to).await {
                    let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                }
            });
        }
    });

    let dir = tempfile::tempdir().expect("tempdir");
    let config = |id: u64, client: &TcpListener, peer: &TcpListener, peers: [(u64, String); 2]| {
        raftkv_node::NodeConfig {
            id,
            advertise_client: addr(client),
            advertise_peer: addr(peer),
            peers: peers.into_iter().collect(),
            data_dir: dir.path().join(format!("n{id}")),
            initial_cluster_size: 5,
            initial_cluster_token: "one-connection".into(),
            driver: support::inprocess::fast_driver(),
            transport: Default::default(),
            seed: None,
            listen_metrics: None,
            listen_health: None,
            tls: Default::default(),
        }
    };
    let a_cfg = config(1, &a_client, &a_peer, [(1, addr(&a_peer)), (2, proxy_addr)]);
    let b_cfg = config(
        2,
        &b_client,
        &b_peer,
        [(1, addr(&a_peer)), (2, b_peer_addr)],
    );
    let b = tokio::spawn(raftkv_node::start_with_listeners(b_cfg, b_client, b_peer));
    let a = tokio::spawn(raftkv_node::start_with_listeners(a_cfg, a_client, a_peer));

    // Eight rounds of asking, or more on a loaded machine.
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert!(
        !a.is_finished() && !b.is_finished(),
        "2 of 5 initial members decided (no quorum answered)"
    );
    let connections = accepted.load(Ordering::SeqCst);
    a.abort();
    b.abort();
    proxy_task.abort();
    println!("node 1 asked node 2 for 4 s over {connections} connection(s)");
    assert!(
        (1..=2).contains(&connections),
        "node 1 opened {connections} connections to node 2 in 4 s of asking"
    );
}

/// A node with an empty data directory counts a peer's "fresh" answer towards the quorum that
/// lets it bootstrap only if the answer comes from the member it asked: here the address it has
/// for node 2 is served by a fresh node 3 (a misconfigured address, or a port another cluster's
/// node took over), and node 1 must keep waiting instead of bootstrapping with it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_answer_under_another_id_does_not_count_towards_bootstrapping() {
    let bind = async || {
        tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind")
    };
    let addr = |l: &tokio::net::TcpListener| l.local_addr().expect("address").to_string();
    let (a_client, a_peer, x_client, x_peer, gone) = (
        bind().await,
        bind().await,
        bind().await,
        bind().await,
        bind().await,
    );
    // Nothing listens at node 3's address for node 1.
    let gone_addr = addr(&gone);
    drop(gone);

    let dir = tempfile::tempdir().expect("tempdir");
    let config = |id: u64,
                  client: &tokio::net::TcpListener,
                  peer: &tokio::net::TcpListener,
                  peers: [(u64, String); 3]| raftkv_node::NodeConfig {
        id,
        advertise_client: addr(client),
        advertise_peer: addr(peer),
        peers: peers.into_iter().collect(),
        data_dir: dir.path().join(format!("n{id}")),
        initial_cluster_size: 3,
        initial_cluster_token: "impostor".into(),
        driver: support::inprocess::fast_driver(),
        transport: Default::default(),
        seed: None,
        listen_metrics: None,
        listen_health: None,
        tls: Default::default(),
    };
    let a_cfg = config(
        1,
        &a_client,
        &a_peer,
        [
            (1, addr(&a_peer)),
            (2, addr(&x_peer)),
            (3, gone_addr.clone()),
        ],
    );
    // The impostor, fresh, waiting for peers that never answer.
    let x_cfg = config(
        3,
        &x_client,
        &x_peer,
        [
            (1, gone_addr.clone()),
            (2, gone_addr.clone()),
            (3, addr(&x_peer)),
        ],
    );
    let x = tokio::spawn(raftkv_node::start_with_listeners(x_cfg, x_client, x_peer));
    let a = tokio::spawn(raftkv_node::start_with_listeners(a_cfg, a_client, a_peer));

    // Eight rounds of asking, or more on a loaded machine.
    tokio::time::sleep(Duration::from_secs(4)).await;
    let decided = a.is_finished();
    a.abort();
    x.abort();
    assert!(
        !decided,
        "node 1 decided (bootstrapped) with an answer from node 3 at node 2's address"
    );
}
