//! DNS discovery as in a Kubernetes StatefulSet (DESIGN.md §6), with real `kvnode` processes in
//! network namespaces: each node runs with `--discovery dns:kv-peers.test --hostname kv-<ordinal>
//! --initial-cluster-size 3`, listens on its own IP (`<ip>:7100` peers, `<ip>:7000` clients) and
//! finds the others only by name, through its namespace's hosts file (the real system resolver;
//! see `support/netns.rs`). A node's name exists only once it has been launched, like a pod's DNS
//! record.
//!
//! Every case ends with the same check: a leader agreed by a quorum, writes acknowledged, and
//! every acknowledged write read back (LINEARIZABLE) with its value and version.
//!
//! The nodes redirect clients to `kv-<n>.kv-peers.test:7000`, a name the test process (in the
//! root namespace) cannot resolve, so the test's clients are pointed at the leader's IP first
//! ([`Cluster::leader_client`]); the cases keep the leader in place while writers run.
//!
//! Needs root and `ip netns` (skipped loudly without them; a failure under `CI=true`).

mod support;

use std::time::{Duration, Instant};

use support::cluster::{Cluster, ClusterOptions, Network};
use support::netns::netns_or_skip;
use support::wait::wait_for;
use support::workload::{WriteHistory, Writers};

/// The headless Service's name.
const SERVICE: &str = "kv-peers.test";
/// A bound for things that take a second or two on an idle machine.
const SLOW: Duration = Duration::from_secs(30);

fn dns_options() -> ClusterOptions {
    ClusterOptions {
        network: Network::Netns,
        dns_service: Some(SERVICE.to_owned()),
        ..ClusterOptions::default()
    }
}

/// Writers aimed at the current leader (see the module docs), run until `n` writes are
/// acknowledged, then stopped; the history is verified through a fresh leader client.
async fn write_and_verify(cluster: &Cluster, prefix: &str, n: usize) -> WriteHistory {
    let writers = start_writers(cluster, prefix).await;
    writers.wait_more_acked(n, SLOW).await;
    let history = writers.stop().await;
    let counts = history.verify(&cluster.leader_client().await).await;
    assert!(counts.acked >= n, "{prefix}: {counts:?}");
    history
}

async fn start_writers(cluster: &Cluster, prefix: &str) -> Writers {
    let leader = cluster.leader().await;
    let first = cluster.client_addr(leader).to_string();
    let mut endpoints = vec![first.clone()];
    endpoints.extend(cluster.endpoints().into_iter().filter(|e| *e != first));
    Writers::start(endpoints, prefix, 2, None).await
}

/// Every running member reports the cluster id this cluster's token derives, i.e. there is
/// exactly one cluster; and every "bootstrapped" log line names that same id.
async fn assert_one_cluster(cluster: &Cluster) {
    let expected = cluster.cluster_id().to_owned();
    for (id, status) in cluster.statuses().await {
        let status = status.unwrap_or_else(|e| panic!("status of node {id}: {e}"));
        assert_eq!(status.cluster_id, expected, "node {id}'s cluster id");
    }
    for id in cluster.ids() {
        for line in cluster
            .log(id)
            .lines()
            .filter(|l| l.contains("bootstrapped a new cluster"))
        {
            assert!(
                line.contains(&expected),
                "node {id} bootstrapped another cluster: {line}"
            );
        }
    }
}

/// Three nodes started together find each other by name, elect a leader and serve writes; the
/// configuration holds their names, not addresses.
#[tokio::test(flavor = "multi_thread")]
async fn three_nodes_found_by_name() {
    if !netns_or_skip("three_nodes_found_by_name") {
        return;
    }
    let started = Instant::now();
    let cluster = Cluster::start_with(3, dns_options()).await;
    let formed = started.elapsed();
    assert_one_cluster(&cluster).await;
    let leader = cluster.leader().await;
    let status = cluster.status(leader).await.expect("leader status");
    let mut peers: Vec<String> = status.members.iter().map(|m| m.peer_addr.clone()).collect();
    peers.sort();
    assert_eq!(
        peers,
        (0..3)
            .map(|o| format!("kv-{o}.{SERVICE}:7100"))
            .collect::<Vec<_>>(),
        "members' peer addresses are not their DNS names: {:?}",
        status.members
    );
    let history = write_and_verify(&cluster, "byname", 50).await;
    println!(
        "found by name: cluster formed in {formed:.2?} (leader {leader}); {:?}",
        history.counts()
    );
}

/// kv-2 starts alone (the others' names do not resolve yet) and waits; kv-0 comes a few
/// seconds later and the two bootstrap; kv-1 comes last and finds the running cluster instead
/// of bootstrapping. One cluster id everywhere.
#[tokio::test(flavor = "multi_thread")]
async fn nodes_start_in_any_order() {
    if !netns_or_skip("nodes_start_in_any_order") {
        return;
    }
    let mut cluster = Cluster::prepare(3, dns_options());
    let started = Instant::now();
    // kv-2 (node 3) alone: no quorum of fresh initial members, so it must wait.
    cluster.launch(3);
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(
        cluster.is_running(3),
        "kv-2 exited while waiting for its peers:\n{}",
        cluster.log_tail(3, 20)
    );
    assert!(
        cluster.status(3).await.is_err(),
        "kv-2 joined or bootstrapped a cluster on its own"
    );
    // kv-0 (node 1): with kv-2 it is a fresh quorum of the initial three.
    cluster.launch(1);
    cluster.wait_node_started(1).await;
    cluster.wait_node_started(3).await;
    let leader = cluster.leader().await;
    let formed = started.elapsed();
    tokio::time::sleep(Duration::from_secs(2)).await;
    // kv-1 (node 2) last: a leader exists, so it must join, not bootstrap.
    let late = Instant::now();
    cluster.launch(2);
    cluster.wait_node_started(2).await;
    cluster.wait_caught_up(2, SLOW).await;
    let joined = late.elapsed();
    let log = cluster.log(2);
    assert!(
        log.contains("found a running cluster"),
        "kv-1 did not find the running cluster:\n{}",
        cluster.log_tail(2, 30)
    );
    assert!(
        !log.contains("bootstrapped a new cluster"),
        "kv-1 bootstrapped although a cluster was running"
    );
    assert_one_cluster(&cluster).await;
    let history = write_and_verify(&cluster, "order", 50).await;
    cluster.assert_replica_matches(2, &history, SLOW).await;
    println!(
        "start order kv-2, kv-0, kv-1: kv-2 + kv-0 formed the cluster {formed:.2?} after kv-2 \
         started (leader {leader}); kv-1 joined and caught up in {joined:.2?}; {:?}",
        history.counts()
    );
}

/// A follower is killed, moved to a new IP (its name follows it in every hosts file) and
/// restarted: the leader must reconnect to it by name (re-resolving), and it must catch up and
/// count towards the quorum again.
#[tokio::test(flavor = "multi_thread")]
async fn node_restarted_with_new_address() {
    if !netns_or_skip("node_restarted_with_new_address") {
        return;
    }
    let mut cluster = Cluster::start_with(3, dns_options()).await;
    let before = write_and_verify(&cluster, "moved1", 30).await;
    let leader = cluster.leader().await;
    let victim = cluster
        .member_ids()
        .into_iter()
        .find(|&id| id != leader)
        .expect("a follower");
    let old_ip = cluster.client_addr(victim).ip();
    cluster.kill9(victim);
    // Writes go on without it (and its log falls behind).
    let during = write_and_verify(&cluster, "moved2", 30).await;
    let new_ip = cluster.move_node(victim);
    let restarted = Instant::now();
    cluster.restart(victim).await;
    let caught_up = cluster.assert_replica_matches(victim, &during, SLOW).await;
    cluster.assert_replica_matches(victim, &before, SLOW).await;
    let reconnected = restarted.elapsed();
    // Only the leader and the moved node are left: writes need both, so they prove the link
    // between them works in both directions under the new address.
    let other = cluster
        .member_ids()
        .into_iter()
        .find(|&id| id != leader && id != victim)
        .expect("the other follower");
    cluster.kill9(other);
    let after = write_and_verify(&cluster, "moved3", 30).await;
    cluster.assert_replica_matches(victim, &after, SLOW).await;
    assert_one_cluster(&cluster).await;
    println!(
        "new address: node {victim} moved {old_ip} -> {new_ip}, restarted, reached by name and \
         caught up in {reconnected:.2?} (apply wait {caught_up:.2?}); with node {other} down the \
         leader {leader} and node {victim} committed {:?}",
        after.counts()
    );
}

/// A follower loses its volume (kill -9, empty data dir, restart): it must find the running
/// cluster instead of bootstrapping a second one (same cluster id), get the log back from the
/// leader, and count towards the quorum.
#[tokio::test(flavor = "multi_thread")]
async fn node_restarted_with_empty_data_dir() {
    if !netns_or_skip("node_restarted_with_empty_data_dir") {
        return;
    }
    let mut cluster = Cluster::start_with(3, dns_options()).await;
    let before = write_and_verify(&cluster, "wiped1", 50).await;
    let leader = cluster.leader().await;
    let restarted = Instant::now();
    let victim = wipe_a_follower(&mut cluster, leader).await;
    // A write after the restart must reach the wiped node too (the idle case, where only
    // heartbeats reveal the lost log, is `wiped_node_catches_up_while_idle`).
    let nudge = write_and_verify(&cluster, "wiped-nudge", 1).await;
    let log = cluster.log_of_current_start(victim);
    assert!(
        log.contains("found a running cluster"),
        "the wiped node did not say it found the running cluster:\n{}",
        cluster.log_tail(victim, 30)
    );
    assert!(
        !log.contains("bootstrapped a new cluster"),
        "the wiped node bootstrapped a new cluster:\n{}",
        cluster.log_tail(victim, 30)
    );
    let caught_up = cluster.assert_replica_matches(victim, &before, SLOW).await;
    cluster.assert_replica_matches(victim, &nudge, SLOW).await;
    let rejoined = restarted.elapsed();
    let other = cluster
        .member_ids()
        .into_iter()
        .find(|&id| id != leader && id != victim)
        .expect("the other follower");
    cluster.kill9(other);
    let after = write_and_verify(&cluster, "wiped2", 30).await;
    cluster.assert_replica_matches(victim, &after, SLOW).await;
    assert_one_cluster(&cluster).await;
    // The wiped node's term and vote were forgotten with its volume; it must be following the
    // leader, not campaigning with a stale term.
    let status = wait_for("the wiped node to follow the leader", SLOW, async || {
        cluster
            .status(victim)
            .await
            .ok()
            .filter(|s| s.leader_id == leader)
    })
    .await;
    println!(
        "empty data dir: node {victim} rejoined cluster {} and caught up in {rejoined:.2?} \
         (apply wait {caught_up:.2?}, term {}); with node {other} down the leader and node \
         {victim} committed {:?}",
        status.cluster_id,
        status.term,
        after.counts()
    );
}

/// Like `node_restarted_with_empty_data_dir`, but with no write after the wiped node returns:
/// it must still get the log back. The leader's progress still says the follower holds
/// everything, so no append would go out; the follower reveals the loss by answering a
/// heartbeat whose commit index is beyond its log.
#[tokio::test(flavor = "multi_thread")]
async fn wiped_node_catches_up_while_idle() {
    if !netns_or_skip("wiped_node_catches_up_while_idle") {
        return;
    }
    let mut cluster = Cluster::start_with(3, dns_options()).await;
    let before = write_and_verify(&cluster, "idle", 50).await;
    let leader = cluster.leader().await;
    let victim = wipe_a_follower(&mut cluster, leader).await;
    let caught_up = cluster.assert_replica_matches(victim, &before, SLOW).await;
    println!("idle cluster: wiped node {victim} caught up in {caught_up:.2?}");
}

/// Kills a follower of `leader` with -9, deletes its data directory and restarts it; returns it.
async fn wipe_a_follower(cluster: &mut Cluster, leader: u64) -> u64 {
    let victim = cluster
        .member_ids()
        .into_iter()
        .find(|&id| id != leader)
        .expect("a follower");
    cluster.kill9(victim);
    cluster.wipe(victim);
    cluster.restart(victim).await;
    victim
}
