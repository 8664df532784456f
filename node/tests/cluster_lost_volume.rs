//! Lost volumes with real `kvnode` processes (DESIGN.md §6): a member that comes back with an
//! empty data dir must never bootstrap a second history, even when its peers are still loading
//! their own state, and must not help elect a leader that lacks what it had acknowledged.
//!
//! Measured times are printed (`-- --nocapture`); bounds are generous for a loaded 2-core
//! machine, and every wait polls for its condition.

mod support;

use std::time::{Duration, Instant};

use raftkv_client::Consistency;
use raftkv_proto::v1 as pb;
use support::cluster::{Cluster, ClusterOptions};
use support::test_client_options;
use support::wait::wait_for;
use support::workload::{WriteHistory, Writers};

/// A bound for things that should take a second or two.
const SLOW: Duration = Duration::from_secs(30);

/// Every member restarts at once (a StatefulSet rolled in parallel), one of them with its volume
/// gone, while the others take seconds to load their state (`--test-slow-start`, standing in for
/// a large snapshot). The wiped node asks its peers whether a cluster exists while they load: they
/// must answer "loading, at term T", not "fresh", so it joins instead of bootstrapping a second
/// cluster at term 1, and nothing acknowledged is lost.
#[tokio::test(flavor = "multi_thread")]
async fn all_restart_at_once_with_one_volume_lost_while_peers_load() {
    let (mut cluster, history, victim, restarted_at) = restart_all_with_one_wiped(vec![]).await;
    for id in cluster.ids() {
        cluster.wait_node_started(id).await;
    }
    let leader = cluster.leader().await;
    let log = cluster.log_of_current_start(victim);
    assert!(
        !log.contains(BOOTSTRAPPED),
        "the wiped node bootstrapped a second cluster while its peers were loading:\n{log}"
    );
    assert!(
        log.contains(JOINED),
        "the wiped node did not join the running cluster:\n{log}"
    );
    let counts = history.verify(&cluster.client().await).await;
    let caught_up = cluster.wait_caught_up(victim, SLOW).await;
    cluster.assert_replica_matches(victim, &history, SLOW).await;
    println!(
        "all restarted at once, node {victim} wiped: leader {leader} after {:.2?}; the wiped \
         node caught up {caught_up:.2?} later; {counts:?}",
        restarted_at.elapsed() - caught_up
    );
}

/// The same restart with planted bug `status-fresh-while-loading` (loading nodes answer Status as
/// fresh ones, as before the fix): the wiped node must be seen bootstrapping a second cluster,
/// which proves the scenario above reaches the window it guards.
#[tokio::test(flavor = "multi_thread")]
async fn planted_status_fresh_while_loading_is_caught() {
    let planted = vec!["--planted-bug".into(), "status-fresh-while-loading".into()];
    let (cluster, _history, victim, _) = restart_all_with_one_wiped(planted).await;
    let log = wait_for(
        "the wiped node to decide between bootstrapping and joining",
        SLOW,
        async || {
            let log = cluster.log_of_current_start(victim);
            (log.contains(BOOTSTRAPPED) || log.contains(JOINED)).then_some(log)
        },
    )
    .await;
    assert!(
        log.contains(BOOTSTRAPPED),
        "planted bug status-fresh-while-loading was not caught: the wiped node joined the \
         running cluster although its loading peers answered as fresh nodes:\n{log}"
    );
    println!(
        "planted bug status-fresh-while-loading caught: the wiped node {victim} bootstrapped a second cluster"
    );
}

/// What the wiped node logs when it bootstraps a new cluster, and when it joins a running one.
const BOOTSTRAPPED: &str = "bootstrapped a new cluster";
const JOINED: &str = "found a running cluster";

/// Starts 3 members that snapshot often, writes, kills all of them, wipes one member's volume and
/// relaunches every member at once, each holding start-up 3 s after its ports opened (as loading
/// a large snapshot would). Returns the cluster, the writes made before, the wiped member and when
/// the relaunch began.
async fn restart_all_with_one_wiped(
    extra_args: Vec<String>,
) -> (Cluster, WriteHistory, u64, Instant) {
    let mut args = vec!["--test-slow-start".into(), "3s".into()];
    args.extend(extra_args);
    let opts = ClusterOptions {
        // Snapshots along the way, so that the restarted nodes load one.
        snapshot_entries: 40,
        extra_args: args,
        ..ClusterOptions::default()
    };
    let mut cluster = Cluster::start_with(3, opts).await;
    let writers = Writers::start(cluster.endpoints(), "lost-all", 2, None).await;
    writers.wait_more_acked(150, SLOW).await;
    let history = writers.stop().await;

    let victim = 1;
    cluster.kill9_all();
    cluster.wipe(victim);
    let restarted_at = Instant::now();
    for id in cluster.ids() {
        cluster.launch(id);
    }
    (cluster, history, victim, restarted_at)
}

/// Writes commit on {A, B} while C is down; B loses its volume; A stops. B and C must not elect a
/// leader: C lacks the writes, and B cannot know what it had acknowledged until it hears from a
/// quorum of the other voters (here: A and C), so it waits without voting. Once A is back, a
/// leader is elected, B rejoins and catches up, and every acknowledged write is there.
#[tokio::test(flavor = "multi_thread")]
async fn wiped_voter_does_not_elect_a_leader_without_the_writes() {
    let mut cluster = Cluster::start(3).await;
    let a = cluster.leader().await;
    let mut others = cluster.member_ids().into_iter().filter(|&id| id != a);
    let (b, c) = (
        others.next().expect("a follower"),
        others.next().expect("another follower"),
    );

    cluster.kill9(c);
    let writers = Writers::start(cluster.endpoints(), "ab-only", 2, None).await;
    writers.wait_more_acked(50, SLOW).await;
    let history = writers.stop().await;

    cluster.kill9(b);
    cluster.wipe(b);
    cluster.kill9(a);
    cluster.restart(c).await;
    cluster.launch(b);

    // Ten minimum election timeouts and more: any election C could win would be over by then.
    let watched = Duration::from_secs(8);
    let started = Instant::now();
    while started.elapsed() < watched {
        if let Some(leader) = cluster.try_leader().await {
            cluster.print_logs(40);
            panic!("node {leader} was elected without node {a}, which alone holds the writes");
        }
        if let Ok(status) = cluster.status(b).await {
            assert_ne!(
                status.member_state(),
                pb::MemberState::Voter,
                "the wiped node {b} became a voter without hearing from a quorum: {status:?}"
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    println!("no leader without node {a} for {watched:?}");

    cluster.restart(a).await;
    let leader = cluster.leader().await;
    cluster.wait_node_started(b).await;
    let caught_up = cluster.wait_caught_up(b, SLOW).await;
    let counts = history.verify(&cluster.client().await).await;
    cluster.assert_replica_matches(b, &history, SLOW).await;
    let state = wait_for(
        "the wiped node to report itself a voter",
        SLOW,
        async || {
            let s = cluster.status(b).await.ok()?;
            (s.member_state() == pb::MemberState::Voter && s.catch_up_index == 0).then_some(s)
        },
    )
    .await;
    println!(
        "node {a} back: leader {leader}; wiped node {b} caught up in {caught_up:.2?} (last log \
         index {}); {counts:?}",
        state.last_log_index
    );
    // A LINEARIZABLE read through the wiped node's port still works (redirected to the leader).
    let client = cluster.client_of(b).await;
    client
        .get("ab-only-probe", Consistency::Linearizable)
        .await
        .expect("linearizable read");
}

/// A crash between deciding to bootstrap (the identity file is written first) and writing the
/// Raft state must leave a node that starts: on restart it finds the recorded decision and redoes
/// the deterministic bootstrap writes, instead of refusing to start for ever.
#[tokio::test(flavor = "multi_thread")]
async fn a_bootstrap_interrupted_before_the_raft_state_completes_on_restart() {
    use raftkv_node::{DriverConfig, NodeConfig};
    use tokio::net::TcpListener;

    let dir = tempfile::tempdir().expect("temp dir");
    // What a crash right after the decision leaves: the identity, no Raft state.
    std::fs::write(dir.path().join("cluster_id"), "c0ffee\nbootstrap 1\n").expect("write");
    let client = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let peer = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let (client_addr, peer_addr) = (
        client.local_addr().expect("addr"),
        peer.local_addr().expect("addr"),
    );
    let cfg = NodeConfig {
        id: 1,
        advertise_client: client_addr.to_string(),
        advertise_peer: peer_addr.to_string(),
        peers: [(1, peer_addr.to_string())].into_iter().collect(),
        data_dir: dir.path().to_path_buf(),
        initial_cluster_size: 1,
        initial_cluster_token: "unused: the identity file decides".into(),
        driver: DriverConfig {
            tick: Duration::from_millis(20),
            ..DriverConfig::default()
        },
        transport: Default::default(),
        seed: Some(1),
        listen_metrics: None,
        listen_health: None,
        tls: Default::default(),
    };
    let node = raftkv_node::start_with_listeners(cfg, client, peer)
        .await
        .expect("the node starts");
    assert_eq!(node.cluster_id(), "c0ffee");
    let client =
        raftkv_client::Client::connect(vec![client_addr.to_string()], test_client_options())
            .await
            .expect("client");
    let version = wait_for("a write on the completed bootstrap", SLOW, async || {
        client.put("k", "v").await.ok()
    })
    .await;
    assert!(version >= 2, "entry 1 is the bootstrap configuration");
    node.stop().await.expect("stop");
}
