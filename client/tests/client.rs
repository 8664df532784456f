//! The client library against in-process fake nodes: redirects, leader caching, rotation on
//! UNAVAILABLE, the same seq on a retried write, timeouts as unknown outcomes, paging.

mod fake;

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use fake::{Fake, closed_port, start};
use raftkv_client::{Client, ClientOptions, Consistency, Error};

/// Quick retries; the attempt timeout is generous so a loaded CI machine causes no extra attempt.
fn fast(timeout: Duration) -> ClientOptions {
    ClientOptions {
        timeout,
        attempt_timeout: Duration::from_secs(1),
        connect_timeout: Duration::from_millis(300),
        backoff_initial: Duration::from_millis(5),
        backoff_max: Duration::from_millis(50),
        ..ClientOptions::default()
    }
}

async fn client(endpoints: &[&String], timeout: Duration) -> Client {
    Client::connect(
        endpoints.iter().map(|e| (*e).clone()).collect(),
        fast(timeout),
    )
    .await
    .expect("valid endpoints")
}

#[tokio::test]
async fn follows_the_redirect_and_caches_the_leader() {
    let leader = Fake::new();
    let leader_addr = start(leader.clone()).await;
    let follower = Fake::new();
    *follower.redirect_to.lock().expect("lock") = Some(leader_addr.clone());
    let follower_addr = start(follower.clone()).await;

    let client = client(&[&follower_addr], Duration::from_secs(5)).await;
    let version = client.put("k", "v1").await.expect("put via redirect");
    assert_eq!(version, 1);
    assert_eq!(follower.calls(), 1, "asked the follower once");
    assert_eq!(leader.calls(), 1, "then the leader");
    assert_eq!(client.leader(), Some(format!("http://{leader_addr}")));

    // Cached: the next calls go straight to the leader.
    client.put("k", "v2").await.expect("second put");
    let got = client
        .get("k", Consistency::Linearizable)
        .await
        .expect("get")
        .expect("found");
    assert_eq!(got.value.as_ref(), b"v2");
    assert_eq!(follower.calls(), 1, "the follower is not asked again");
    assert_eq!(leader.calls(), 3);
}

/// Nodes in a container network redirect to DNS names only the network resolves;
/// `connect_to` maps such a name to an address the client reaches.
#[tokio::test]
async fn connect_to_maps_an_advertised_name() {
    let leader = Fake::new();
    let leader_addr = start(leader.clone()).await;
    let follower = Fake::new();
    let name = "kv-1.kv-headless.default.svc.cluster.local:7001".to_owned();
    *follower.redirect_to.lock().expect("lock") = Some(name.clone());
    let follower_addr = start(follower.clone()).await;

    let options = ClientOptions {
        connect_to: [(name, leader_addr.clone())].into(),
        ..fast(Duration::from_secs(5))
    };
    let client = Client::connect(vec![follower_addr], options)
        .await
        .expect("valid endpoints");
    client.put("k", "v").await.expect("put via the mapped name");
    assert_eq!(follower.calls(), 1, "asked the follower once");
    assert_eq!(leader.calls(), 1, "then the leader, at the mapped address");
    assert_eq!(client.leader(), Some(format!("http://{leader_addr}")));
}

/// A redirect to an address this client cannot reach (e.g. a name only the cluster resolves)
/// must not trap round-robin on the node that redirected: the next configured endpoint is tried.
#[tokio::test]
async fn an_unreachable_redirect_target_does_not_trap_round_robin() {
    let unreachable = closed_port().await;
    let follower = Fake::new();
    *follower.redirect_to.lock().expect("lock") = Some(unreachable);
    let follower_addr = start(follower.clone()).await;
    let second_follower = Fake::new();
    *second_follower.redirect_to.lock().expect("lock") = Some(closed_port().await);
    let second_addr = start(second_follower.clone()).await;
    let leader = Fake::new();
    let leader_addr = start(leader.clone()).await;

    let client = client(
        &[&follower_addr, &second_addr, &leader_addr],
        Duration::from_secs(5),
    )
    .await;
    let version = client.put("k", "v").await.expect("reaches the leader");
    assert_eq!(version, 1);
    assert_eq!(leader.calls(), 1);
}

#[tokio::test]
async fn rotates_past_unavailable_and_dead_endpoints() {
    let dead = closed_port().await;
    let sick = Fake::new();
    sick.unavailable.store(true, Ordering::Relaxed);
    let sick_addr = start(sick.clone()).await;
    let healthy = Fake::new();
    let healthy_addr = start(healthy.clone()).await;

    let client = client(&[&dead, &sick_addr, &healthy_addr], Duration::from_secs(5)).await;
    client
        .put("k", "v")
        .await
        .expect("put reaches the healthy node");
    assert_eq!(sick.calls(), 1, "the UNAVAILABLE node was tried once");
    assert_eq!(healthy.calls(), 1);
    assert_eq!(client.leader(), Some(format!("http://{healthy_addr}")));
    // One write, one seq, however many nodes were tried.
    assert_eq!(healthy.writes().len(), 1);
}

#[tokio::test]
async fn a_retried_write_reuses_its_seq() {
    let node = Fake::new();
    node.lose_responses.store(1, Ordering::Relaxed);
    let addr = start(node.clone()).await;
    let client = client(&[&addr], Duration::from_secs(5)).await;

    client.put("k", "v").await.expect("put succeeds on retry");
    client.delete("k").await.expect("delete");
    let writes = node.writes();
    assert_eq!(
        writes.len(),
        3,
        "first attempt, its retry, then the delete: {writes:?}"
    );
    assert_eq!(
        writes[0], writes[1],
        "the retry carries the same (client_id, seq)"
    );
    assert_eq!(writes[0].0, client.client_id());
    assert_eq!(writes[2].0, writes[0].0, "same session");
    assert_eq!(
        writes[2].1,
        writes[0].1 + 1,
        "the next write takes the next seq"
    );
}

#[tokio::test]
async fn timeouts_are_unknown_outcomes_for_writes() {
    let dead = closed_port().await;
    let client = client(&[&dead], Duration::from_millis(400)).await;
    let started = Instant::now();
    let error = client.put("k", "v").await.expect_err("nobody answers");
    assert!(
        matches!(error, Error::OutcomeUnknown { attempts, .. } if attempts > 1),
        "{error:?}"
    );
    assert!(error.is_outcome_unknown());
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "bounded by the timeout"
    );

    let error = client
        .get("k", Consistency::Linearizable)
        .await
        .expect_err("nobody answers");
    assert!(matches!(error, Error::Timeout { .. }), "{error:?}");

    // A hung node (accepts, never answers) is the same: the write may have been applied.
    let hung = Fake::new();
    hung.hang.store(true, Ordering::Relaxed);
    let hung_addr = start(hung.clone()).await;
    let options = ClientOptions {
        attempt_timeout: Duration::from_millis(200),
        ..fast(Duration::from_millis(700))
    };
    let client = Client::connect(vec![hung_addr], options)
        .await
        .expect("valid endpoint");
    let error = client.put("k", "v").await.expect_err("no answer");
    assert!(matches!(error, Error::OutcomeUnknown { .. }), "{error:?}");
    assert!(hung.calls() >= 2, "retried after the attempt timeout");
}

#[tokio::test]
async fn definite_errors_are_not_retried() {
    let node = Fake::new();
    let addr = start(node.clone()).await;
    let client = client(&[&addr], Duration::from_secs(5)).await;
    // The fake rejects an empty key only if it gets one: the client checks locally first.
    let error = client.put("", "v").await.expect_err("empty key");
    assert!(matches!(error, Error::InvalidArgument(_)), "{error:?}");
    assert!(error.is_definite());
    // Oversize input is refused locally too, against the servers' limits and in their words.
    let long_key = vec![b'k'; raftkv_client::MAX_KEY_BYTES + 1];
    let error = client.put(long_key, "v").await.expect_err("long key");
    assert_eq!(
        error,
        Error::InvalidArgument("key is 4097 bytes; the limit is 4096 bytes".into())
    );
    let large_value = vec![b'v'; raftkv_client::MAX_VALUE_BYTES + 1];
    let error = client
        .compare_and_swap("k", 0, large_value)
        .await
        .expect_err("large value");
    assert_eq!(
        error,
        Error::InvalidArgument("value is 1048577 bytes; the limit is 1048576 bytes".into())
    );
    assert_eq!(node.calls(), 0, "rejected without a round trip");

    assert_eq!(
        client
            .get("missing", Consistency::Stale)
            .await
            .expect("get"),
        None,
        "a missing key is not an error"
    );
    assert_eq!(client.delete("missing").await.expect("delete"), None);
}

#[tokio::test]
async fn an_expired_session_is_replaced() {
    let node = Fake::new();
    node.abort_writes.store(true, Ordering::Relaxed);
    let addr = start(node.clone()).await;
    let client = client(&[&addr], Duration::from_secs(5)).await;
    let old_session = client.client_id();
    let error = client.put("k", "v").await.expect_err("session expired");
    assert!(matches!(error, Error::SessionExpired(_)), "{error:?}");
    assert!(
        error.is_definite(),
        "refused on the first attempt: nothing applied"
    );
    assert_ne!(
        client.client_id(),
        old_session,
        "later writes use a new session"
    );

    // The client writes again after the expiry, under the new session from seq 1 (the servers
    // open an unknown session only at a seq within the window).
    node.abort_writes.store(false, Ordering::Relaxed);
    node.session_rules.store(true, Ordering::Relaxed);
    client.put("k", "v2").await.expect("write after expiry");
    client
        .put("k", "v3")
        .await
        .expect("second write after expiry");
    let writes = node.writes();
    assert_eq!(
        writes,
        vec![(client.client_id(), 1), (client.client_id(), 2)],
        "the new session starts at seq 1"
    );
}

/// More writes in flight on one client than the servers' session window: later seqs overtake
/// earlier ones at the server, yet none may fall out of the window (which would be refused as
/// ABORTED), because the client keeps its in-flight seqs within one window.
#[tokio::test]
async fn more_concurrent_writes_than_the_session_window() {
    let node = Fake::new();
    node.session_rules.store(true, Ordering::Relaxed);
    let addr = start(node.clone()).await;
    let client = client(&[&addr], Duration::from_secs(30)).await;
    let started = Instant::now();
    let writes: Vec<_> = (0..300)
        .map(|i| {
            let client = client.clone();
            tokio::spawn(async move { client.put(format!("k{i}"), "v").await })
        })
        .collect();
    let mut failed = Vec::new();
    for (i, w) in writes.into_iter().enumerate() {
        match w.await.expect("task") {
            Ok(_) => {}
            Err(e) => failed.push((i, e)),
        }
    }
    println!(
        "300 concurrent writes on one client in {:?}",
        started.elapsed()
    );
    assert!(failed.is_empty(), "writes failed: {failed:?}");
    let mut seqs: Vec<u64> = node.writes().into_iter().map(|(_, seq)| seq).collect();
    seqs.sort_unstable();
    assert_eq!(seqs, (1..=300).collect::<Vec<u64>>(), "one seq per write");
}

#[tokio::test]
async fn compare_and_swap_reports_the_current_state() {
    let node = Fake::new();
    let addr = start(node.clone()).await;
    let client = client(&[&addr], Duration::from_secs(5)).await;
    let created = client
        .compare_and_swap("k", 0, "a")
        .await
        .expect("create if absent");
    assert!(created.succeeded);
    let failed = client.compare_and_swap("k", 0, "b").await.expect("cas");
    assert!(!failed.succeeded);
    assert_eq!(failed.version, created.version);
    assert_eq!(failed.current_value.as_ref(), b"a");
}

#[tokio::test]
async fn scan_all_follows_pages() {
    let node = Fake::new();
    node.page_size.store(2, Ordering::Relaxed);
    for key in ["a", "b", "c", "d", "e"] {
        node.insert(key, &key.to_uppercase());
    }
    let addr = start(node.clone()).await;
    let client = client(&[&addr], Duration::from_secs(5)).await;

    let all = client
        .scan_all("", "", 0, Consistency::Linearizable)
        .await
        .expect("scan");
    let keys: Vec<&[u8]> = all.iter().map(|kv| kv.key.as_ref()).collect();
    assert_eq!(keys, [b"a", b"b", b"c", b"d", b"e"]);

    let some = client
        .scan_all("b", "e", 2, Consistency::Linearizable)
        .await
        .expect("scan");
    let keys: Vec<&[u8]> = some.iter().map(|kv| kv.key.as_ref()).collect();
    assert_eq!(keys, [b"b", b"c"]);
}

#[tokio::test]
async fn admin_calls() {
    let node = Fake::new();
    let addr = start(node.clone()).await;
    let client = client(&[&addr], Duration::from_secs(5)).await;
    let status = client.status().await.expect("status");
    assert_eq!(status.leader_id, 1);
    assert_eq!(status.members.len(), 1);
    let members = client
        .add_member(4, "127.0.0.1:7104", "127.0.0.1:7004")
        .await
        .expect("add");
    assert_eq!(members[0].id, 4);
    assert_eq!(client.transfer_leader(0).await.expect("transfer"), 2);
}
