//! Multi-process tests (DESIGN.md §8.3): real `kvnode` processes on 127.0.0.1, driven through the
//! client library, with the faults an operator meets — a leader killed with SIGKILL, a whole
//! cluster restarted from disk, members added and removed under load, a leader stopped with
//! SIGTERM, a leader frozen with SIGSTOP. The invariant is always the same: nothing acknowledged
//! is lost (every acknowledged write reads back with its value and version), nothing that
//! definitely failed is present, and nothing unwritten appears.
//!
//! The harness is `support/cluster.rs` (data dirs, logs, signals, clean-up) with the writers of
//! `support/workload.rs`. Measured times are printed (`cargo test -p raftkv-node --test cluster_process -- --nocapture`); the
//! bounds asserted are generous because CI runs this on a loaded 2-core machine.

mod support;

use std::time::{Duration, Instant};

use raftkv_client::{Client, Consistency, MemberRole};
use support::cluster::{Cluster, ClusterOptions};
use support::wait::wait_for;
use support::workload::{WriteRecord, Writers};

/// The longest a kill -9 of the leader may keep writes from being acknowledged.
const FAILOVER_BOUND: Duration = Duration::from_secs(15);
/// The hand-over test runs with a minimum election timeout of 40 ticks of 50 ms: a failover
/// through an election cannot take less, so a write gap below it shows the hand-over needed none.
const HANDOVER_ELECTION_TICKS: u64 = 40;
const HANDOVER_BOUND: Duration = Duration::from_millis(50 * HANDOVER_ELECTION_TICKS);
/// A bound for things that should take a second or two: progress, catch-up, promotion.
const SLOW: Duration = Duration::from_secs(30);

/// Kill -9 the leader while four writers run; measure how long until a new leader acknowledges
/// a write; nothing acknowledged is lost; the killed node comes back from disk and catches up.
#[tokio::test(flavor = "multi_thread")]
async fn kill9_leader_under_write_load() {
    let mut cluster = Cluster::start(3).await;
    let writers = Writers::start(cluster.endpoints(), "kill9", 4, None).await;
    writers.wait_more_acked(100, SLOW).await;

    let old = cluster.leader().await;
    let old_uri = cluster.client_uri(old);
    // Taken just before the signal, so the failover time is not under-measured.
    let killed_at = Instant::now();
    cluster.kill9(old);
    // The first acknowledgement from another node after the kill ends the failover. (A reply
    // the dead leader sent just before the kill may still arrive after it; it does not count.)
    let first = writers
        .wait_for_record(
            "a write acknowledged by a new leader",
            FAILOVER_BOUND + Duration::from_secs(5),
            |r: &WriteRecord| {
                r.completed > killed_at && r.acked_by().is_some_and(|by| by != old_uri)
            },
        )
        .await;
    let failover = first.completed - killed_at;
    let new = cluster.leader_other_than(old).await;
    println!(
        "kill -9 of leader {old}: failover {failover:.2?} (first write acknowledged by {}, \
         leader now {new})",
        first.acked_by().unwrap_or("?")
    );
    assert!(
        failover < FAILOVER_BOUND,
        "failover took {failover:?}, over {FAILOVER_BOUND:?}"
    );

    // The killed node restarts from its data dir while the writers go on.
    let restarted_at = Instant::now();
    cluster.restart(old).await;
    writers.wait_more_acked(100, SLOW).await;
    let history = writers.stop().await;
    let counts = history.verify(&cluster.client().await).await;
    let caught_up = cluster.assert_replica_matches(old, &history, SLOW).await;
    println!(
        "kill -9: {counts:?}, longest write gap {:.2?}; node {old} restarted and caught up \
         {:.2?} after its restart ({caught_up:.2?} after the writers stopped)",
        history.longest_ack_gap_after(killed_at),
        restarted_at.elapsed(),
    );
}

/// Write, stop every node (SIGTERM, clean), restart all from disk, check; write more, kill -9
/// every node at once (a power cut), restart all, check again. Small snapshots make recovery
/// go through a snapshot plus a log tail.
#[tokio::test(flavor = "multi_thread")]
async fn restart_all_from_disk() {
    let opts = ClusterOptions {
        snapshot_entries: 100,
        ..ClusterOptions::default()
    };
    let mut cluster = Cluster::start_with(3, opts).await;
    let first = Writers::start(cluster.endpoints(), "disk1", 4, Some(60))
        .await
        .finish()
        .await;
    let client = cluster.client().await;
    let extras = write_extras(&client).await;
    first.verify(&client).await;
    drop(client);

    // Round 1: SIGTERM all; every node exits cleanly.
    let stopping = Instant::now();
    let exits = cluster.sigterm_all().await;
    let stop_time = stopping.elapsed();
    for (id, status) in &exits {
        assert!(
            status.success(),
            "node {id} exited with {status} after SIGTERM"
        );
    }
    let recovery = restart_all(&mut cluster).await;
    let client = cluster.client().await;
    let counts = first.verify(&client).await;
    check_extras(&client, &extras).await;
    for id in cluster.member_ids() {
        cluster.assert_replica_matches(id, &first, SLOW).await;
    }
    println!(
        "restart from disk after SIGTERM: stopped in {stop_time:.2?}, leader again {recovery:.2?} \
         after the restarts began; {counts:?}"
    );

    // Round 2: more writes, then kill -9 all at once.
    let second = Writers::start(cluster.endpoints(), "disk2", 4, Some(40))
        .await
        .finish()
        .await;
    cluster.kill9_all();
    let recovery = restart_all(&mut cluster).await;
    let client = cluster.client().await;
    first.verify(&client).await;
    let counts = second.verify(&client).await;
    check_extras(&client, &extras).await;
    for id in cluster.member_ids() {
        cluster.assert_replica_matches(id, &second, SLOW).await;
    }
    println!(
        "restart from disk after kill -9 of all: leader again {recovery:.2?} after the restarts \
         began; {counts:?}"
    );
}

/// Restarts every member from disk; returns how long until a leader was agreed.
async fn restart_all(cluster: &mut Cluster) -> Duration {
    let started = Instant::now();
    for id in cluster.member_ids() {
        cluster.restart(id).await;
    }
    cluster.leader().await;
    started.elapsed()
}

/// Writes beyond plain puts, whose effect must survive restarts too.
struct Extras {
    /// Written twice: the second value and version must win.
    overwritten: u64,
    /// Created by compare-and-swap from absent.
    cas: u64,
}

async fn write_extras(client: &Client) -> Extras {
    client
        .put("extra/overwritten", "first")
        .await
        .expect("put first");
    let overwritten = client
        .put("extra/overwritten", "second")
        .await
        .expect("put second");
    client
        .put("extra/deleted", "doomed")
        .await
        .expect("put doomed");
    let deleted = client.delete("extra/deleted").await.expect("delete");
    assert!(deleted.is_some(), "the key to delete was not there");
    let cas = client
        .compare_and_swap("extra/cas", 0, "created")
        .await
        .expect("cas");
    assert!(
        cas.succeeded,
        "compare-and-swap from absent failed: {cas:?}"
    );
    Extras {
        overwritten,
        cas: cas.version,
    }
}

async fn check_extras(client: &Client, extras: &Extras) {
    let get = async |key: &str| {
        client
            .get(key.to_owned(), Consistency::Linearizable)
            .await
            .unwrap_or_else(|e| panic!("get {key}: {e}"))
            .map(|v| (String::from_utf8_lossy(&v.value).into_owned(), v.version))
    };
    assert_eq!(
        get("extra/overwritten").await,
        Some(("second".to_owned(), extras.overwritten))
    );
    assert_eq!(get("extra/deleted").await, None);
    assert_eq!(
        get("extra/cas").await,
        Some(("created".to_owned(), extras.cas))
    );
}

/// While three writers run: add a fourth node (promoted to voter automatically), remove a
/// follower, then remove the leader itself; the cluster elects another leader and keeps
/// accepting writes, and everything acknowledged reads back from the remaining members.
#[tokio::test(flavor = "multi_thread")]
async fn membership_changes_under_write_load() {
    let mut cluster = Cluster::start(3).await;
    let writers = Writers::start(cluster.endpoints(), "member", 3, None).await;
    let admin = cluster.client().await;
    writers.wait_more_acked(50, SLOW).await;
    let began = Instant::now();

    // Add node 4: it starts empty, finds the cluster, and waits to be added.
    let adding = Instant::now();
    cluster.add_node(4).await;
    let members = admin
        .add_member(
            4,
            cluster.peer_addr(4).to_string(),
            cluster.client_addr(4).to_string(),
        )
        .await
        .expect("AddMember 4");
    assert!(
        members.iter().any(|m| m.id == 4),
        "AddMember's answer lacks node 4: {members:?}"
    );
    cluster.wait_voter(4, SLOW).await;
    let promoted = adding.elapsed();
    writers.wait_more_acked(50, SLOW).await;

    // Remove a follower (one of the original nodes), then stop it, as an operator would.
    let leader = cluster.leader().await;
    let follower = cluster
        .member_ids()
        .into_iter()
        .find(|&id| id != leader && id != 4)
        .expect("a follower among the original nodes");
    let removing = Instant::now();
    remove_member(&admin, &cluster, follower).await;
    let follower_removed = removing.elapsed();
    cluster.retire(follower);
    let status = cluster.sigterm(follower).await;
    assert!(
        status.success(),
        "removed node {follower} exited with {status}"
    );
    writers.wait_more_acked(50, SLOW).await;

    // Remove the leader itself: it steps down once its removal commits; the other two elect a
    // leader among themselves.
    let leader = cluster.leader().await;
    let removing = Instant::now();
    remove_member(&admin, &cluster, leader).await;
    cluster.retire(leader);
    let new_leader = cluster.leader_other_than(leader).await;
    let leader_replaced = removing.elapsed();
    let status = cluster.sigterm(leader).await;
    assert!(
        status.success(),
        "removed leader {leader} exited with {status}"
    );
    writers.wait_more_acked(50, SLOW).await;

    let history = writers.stop().await;
    let remaining = cluster.member_ids();
    let members = cluster.members().await;
    let voters: Vec<u64> = members
        .iter()
        .filter(|m| m.role() == MemberRole::Voter)
        .map(|m| m.id)
        .collect();
    assert_eq!(
        voters, remaining,
        "the configuration is not the remaining nodes: {members:?}"
    );
    let counts = history.verify(&cluster.client().await).await;
    for &id in &remaining {
        cluster.assert_replica_matches(id, &history, SLOW).await;
    }
    println!(
        "membership: node 4 added and promoted in {promoted:.2?}; follower {follower} removed in \
         {follower_removed:.2?}; leader {leader} removed and replaced by {new_leader} in \
         {leader_replaced:.2?}; longest write gap {:.2?}; {counts:?}",
        history.longest_ack_gap_after(began)
    );
}

/// RemoveMember through the client, then waits until the leader's configuration lacks `id`.
///
/// The client retries admin calls without a session (unlike Put), so a retry of a removal that
/// was applied but whose answer was lost (e.g. a leader removing itself) can come back as
/// "not a member". What matters here is the configuration, so an error is printed, not fatal.
async fn remove_member(admin: &Client, cluster: &Cluster, id: u64) {
    if let Err(e) = admin.remove_member(id).await {
        println!("RemoveMember {id} returned an error (checking the configuration): {e}");
    }
    cluster.wait_not_member(id, SLOW).await;
}

/// SIGTERM to the leader: it hands leadership over and exits 0; writers see a short gap, not
/// an election timeout.
#[tokio::test(flavor = "multi_thread")]
async fn sigterm_leader_hands_over() {
    let opts = ClusterOptions {
        tick: Duration::from_millis(50),
        election_ticks: HANDOVER_ELECTION_TICKS,
        ..ClusterOptions::default()
    };
    let mut cluster = Cluster::start_with(3, opts).await;
    let writers = Writers::start(cluster.endpoints(), "sigterm", 2, None).await;
    writers.wait_more_acked(100, SLOW).await;

    let old = cluster.leader().await;
    let old_uri = cluster.client_uri(old);
    let terminated_at = Instant::now();
    let status = cluster.sigterm(old).await;
    let exit_time = terminated_at.elapsed();
    assert!(
        status.success(),
        "leader {old} exited with {status} after SIGTERM"
    );
    let new = cluster.leader_other_than(old).await;
    let first = writers
        .wait_for_record("a write acknowledged by the new leader", SLOW, |r| {
            r.completed > terminated_at && r.acked_by().is_some_and(|by| by != old_uri)
        })
        .await;
    writers.wait_more_acked(100, SLOW).await;
    let history = writers.stop().await;
    let gap = history.longest_ack_gap_after(terminated_at);
    println!(
        "SIGTERM of leader {old}: exited 0 after {exit_time:.2?}; leader now {new}; first write \
         acknowledged by another node {:.2?} after the signal; longest write gap {gap:.2?}",
        first.completed - terminated_at
    );
    assert!(
        gap < HANDOVER_BOUND,
        "writes stalled for {gap:?} around the SIGTERM"
    );
    let counts = history.verify(&cluster.client().await).await;
    println!("SIGTERM: {counts:?}");
}

/// SIGSTOP the leader: the others elect a new leader and go on; after SIGCONT the old leader
/// steps down, catches up, and nothing acknowledged is lost.
#[tokio::test(flavor = "multi_thread")]
async fn sigstop_leader_then_resume() {
    let mut cluster = Cluster::start(3).await;
    let writers = Writers::start(cluster.endpoints(), "sigstop", 2, None).await;
    writers.wait_more_acked(50, SLOW).await;

    let old = cluster.leader().await;
    cluster.sigstop(old);
    let stopped_at = Instant::now();
    let new = cluster.leader_other_than(old).await;
    let elected = stopped_at.elapsed();
    writers.wait_more_acked(50, SLOW).await;
    cluster.sigcont(old);
    // The old leader must learn it was deposed: it follows the new leader (or a later one).
    wait_for(&format!("node {old} to follow again"), SLOW, async || {
        let status = cluster.status(old).await.ok()?;
        (status.leader_id != old && status.leader_id != 0).then_some(())
    })
    .await;
    writers.wait_more_acked(50, SLOW).await;
    let history = writers.stop().await;
    let counts = history.verify(&cluster.client().await).await;
    cluster.assert_replica_matches(old, &history, SLOW).await;
    println!(
        "SIGSTOP of leader {old}: leader {new} elected {elected:.2?} later; longest write gap \
         {:.2?}; {counts:?}",
        history.longest_ack_gap_after(stopped_at)
    );
}

/// A member whose data dir was lost (kill -9, empty dir, restart): it must rejoin without
/// bootstrapping a second cluster and without voting with a forgotten term (DESIGN.md §6), then
/// get the log again from the leader and count towards the quorum.
#[tokio::test(flavor = "multi_thread")]
async fn member_with_lost_data_dir_catches_up() {
    let mut cluster = Cluster::start(3).await;
    let writers = Writers::start(cluster.endpoints(), "wiped", 2, None).await;
    writers.wait_more_acked(50, SLOW).await;

    let leader = cluster.leader().await;
    let victim = cluster
        .member_ids()
        .into_iter()
        .find(|&id| id != leader)
        .expect("a follower");
    cluster.kill9(victim);
    cluster.wipe(victim);
    cluster.restart(victim).await;
    let caught_up = cluster.wait_caught_up(victim, SLOW).await;

    // With the third node gone, writes go on only if the wiped node counts for the quorum.
    let other = cluster
        .member_ids()
        .into_iter()
        .find(|&id| id != leader && id != victim)
        .expect("the other follower");
    cluster.kill9(other);
    writers.wait_more_acked(50, SLOW).await;
    let history = writers.stop().await;
    let counts = history.verify(&cluster.client().await).await;
    cluster.assert_replica_matches(victim, &history, SLOW).await;
    println!("lost data dir: node {victim} caught up in {caught_up:.2?}; {counts:?}");
}
