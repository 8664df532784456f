//! Self-tests of the simulation harness (`tests/common`): its scenario verbs do what their docs
//! say, and its checker flags what it must. These are not the paper-style scenario tests of the
//! core (those build on the same verbs); they make sure the ground those tests stand on is
//! solid. Every cluster here is strict: any invariant violation panics.

mod common;

use bytes::Bytes;
use common::*;
use raftkv_raft::{ConfState, Entry, EntryPayload, HardState, MessageBody, Role, SnapshotMeta};

/// A 3-voter cluster with node 1 elected.
fn three_with_leader() -> Cluster {
    let mut c = Cluster::with_voters(3);
    assert!(
        c.elect(1),
        "node 1 should win an election on a quiet network"
    );
    c
}

fn applied_commands(c: &Cluster, id: u64) -> Vec<Bytes> {
    c.node(id)
        .applied_log
        .iter()
        .map(|(_, d)| d.clone())
        .collect()
}

#[test]
fn elect_propose_replicate() {
    let mut c = three_with_leader();
    let idx = c.propose(1, "x").expect("the leader accepts proposals");
    assert!(c.propose(2, "y").is_err(), "a follower refuses proposals");
    c.deliver_all();
    for id in 1..=3 {
        assert!(c.node(id).sm.applied >= idx, "n{id} applied the entry");
        assert_eq!(applied_commands(&c, id), vec![Bytes::from("x")]);
    }
    assert_eq!(c.stats().elections, 1);
}

#[test]
fn tick_all_elects_a_leader_without_help() {
    let mut c = Cluster::with_voters(5);
    c.tick_all(40);
    let l = c
        .leader()
        .expect("randomized timeouts elect a leader within 2 timeouts");
    assert_eq!(c.role(l), Some(Role::Leader));
}

#[test]
fn isolated_leader_is_replaced_and_rejoins() {
    let mut c = three_with_leader();
    c.isolate(1);
    c.tick_all(50);
    let new = c.leader().expect("the majority side elects a leader");
    assert_ne!(new, 1);
    // Check-quorum: the isolated leader stepped down by itself.
    assert_ne!(c.role(1), Some(Role::Leader));
    c.recover();
    let idx = c.propose(new, "after").expect("new leader");
    c.tick_all(5);
    assert!(
        c.node(1).sm.applied >= idx,
        "the old leader catches up after healing"
    );
    assert_eq!(c.raw(1).term(), c.raw(new).term());
}

#[test]
fn cut_and_split_partition_the_network() {
    let mut c = Cluster::with_voters(5);
    assert!(c.elect(1));
    c.split(&[1, 2], &[3, 4, 5]);
    c.tick_all(60);
    let l = c.leader().expect("the majority side elects a leader");
    assert!(
        [3, 4, 5].contains(&l),
        "leader {l} must be on the majority side"
    );
    c.recover();
    c.cut(1, 2);
    c.cut_oneway(3, 4);
    assert!(c.net.is_cut(1, 2) && c.net.is_cut(2, 1));
    assert!(c.net.is_cut(3, 4) && !c.net.is_cut(4, 3));
}

#[test]
fn a_paused_leader_is_replaced_and_steps_down_when_it_resumes() {
    let mut c = three_with_leader();
    c.tick_all(3);
    let until = c.now + 40;
    c.pause(1, until);
    assert!(
        c.propose(1, "x").is_err(),
        "a paused process answers nobody"
    );
    c.tick_all(30);
    let l = c.leader().expect("the others elect a leader");
    assert_ne!(l, 1);
    // Still leader in its own (frozen) view of an older term.
    assert_eq!(c.role(1), Some(Role::Leader));
    c.tick_all(15);
    assert_eq!(
        c.role(1),
        Some(Role::Follower),
        "resumed, it hears of the newer term"
    );
    assert_eq!(c.stats().pauses, 1);
}

#[test]
fn crash_and_restart_recover_from_disk() {
    let mut c = three_with_leader();
    c.propose(1, "a").expect("leader");
    c.deliver_all();
    c.crash(2);
    assert_eq!(c.role(2), None);
    c.propose(1, "b").expect("two of three still commit");
    c.deliver_all();
    c.restart(2);
    c.tick_all(3);
    assert_eq!(
        applied_commands(&c, 2),
        vec![Bytes::from("a"), Bytes::from("b")],
        "the restarted node replays its log and catches up"
    );
    assert_eq!(c.stats().restarts, 1);
}

#[test]
fn crash_inside_a_ready_loses_only_that_ready() {
    let mut c = three_with_leader();
    c.crash_at(2, CrashPoint::BeforePersist);
    let idx = c.propose(1, "lost on n2").expect("leader");
    c.deliver_all();
    assert_eq!(c.role(2), None, "n2 died processing the append");
    assert!(
        c.node(2).disk.last_index() < idx,
        "n2 never persisted that Ready"
    );
    assert!(c.node(1).sm.applied >= idx, "n1 and n3 still commit");
    c.restart(2);
    c.tick_all(3);
    assert!(
        c.node(2).sm.applied >= idx,
        "n2 catches up after restarting"
    );
}

#[test]
fn messages_can_be_inspected_dropped_and_delivered_one_by_one() {
    let mut c = three_with_leader();
    c.propose(1, "x").expect("leader");
    let appends = c
        .in_flight()
        .iter()
        .filter(|e| matches!(e.msg.body, MessageBody::AppendEntries { .. }))
        .count();
    assert_eq!(appends, 2, "one append per follower");
    let dropped = c.drop_matching(|e| e.msg.to == 3);
    assert_eq!(dropped.len(), 1);
    let to_2 = c.net.take_matching(|e| e.msg.to == 2);
    for env in to_2 {
        c.deliver(env);
    }
    let last = c.raw(1).last_index();
    assert_eq!(c.node(2).disk.last_index(), last, "n2 got the append");
    assert!(c.node(3).disk.last_index() < last, "n3 lost its append");
    // The leader notices the gap (n3 rejects the next append) and backs off to resend.
    c.deliver_all();
    assert_eq!(c.node(3).applied_log.len(), 1);
    assert_eq!(c.stats().msgs_dropped, 1);
}

#[test]
fn snapshot_reaches_a_new_learner_which_is_promoted() {
    let mut c = three_with_leader();
    for i in 0..20 {
        c.propose(1, format!("cmd{i}")).expect("leader");
    }
    c.deliver_all();
    for id in 1..=3 {
        assert!(c.snapshot(id), "n{id} takes a snapshot");
    }
    c.tick_all(1);
    c.add_learner(1, 4)
        .expect("the leader has committed in its term");
    c.tick_all(10);
    let s = c.stats();
    assert_eq!(s.snapshots_taken, 3);
    assert!(
        s.snapshots_installed >= 1,
        "n4 must be sent the snapshot: the log is compacted"
    );
    assert_eq!(c.node(4).sm, c.node(1).sm, "n4 reached the leader's state");
    assert!(
        c.raw(1).conf_state().voters.contains(&4),
        "the caught-up learner was promoted"
    );
}

#[test]
fn removing_the_leader_hands_over_leadership() {
    let mut c = Cluster::with_voters(5);
    assert!(c.elect(1));
    c.tick_all(2);
    c.remove_node(1, 1).expect("a leader may remove itself");
    c.tick_all(30);
    let l = c.leader().expect("the others elect a leader");
    assert_ne!(l, 1);
    assert!(!c.raw(l).conf_state().contains(1));
    assert!(c.checker.is_removed(1));
    c.decommission(1);
    assert!(c.node(1).decommissioned);
}

#[test]
fn read_index_is_confirmed_and_served() {
    let mut c = three_with_leader();
    c.tick_all(2);
    let ctx = c.read_index(1).expect("the leader accepts reads");
    c.deliver_all();
    assert!(
        c.node(1).served_reads.iter().any(|(x, _)| *x == ctx),
        "the read was confirmed by a heartbeat round and served"
    );
}

#[test]
fn transfer_moves_leadership() {
    let mut c = three_with_leader();
    c.tick_all(2);
    assert_eq!(c.transfer_leader(1, 3), Ok(3));
    c.deliver_all();
    assert_eq!(c.leader(), Some(3));
    assert_eq!(c.stats().transfers_done, 1);
}

#[test]
fn durable_state_is_what_a_restart_sees() {
    let mut c = three_with_leader();
    c.propose(1, "x").expect("leader");
    c.deliver_all();
    let st = c.durable_state(2);
    assert_eq!(st.hard_state.term, c.raw(1).term());
    assert_eq!(
        st.entries.last().map(|e| e.index),
        Some(c.raw(1).last_index())
    );
}

// ----- the checker flags what it must ---------------------------------------------------------

fn entry(index: u64, term: u64, data: &'static str) -> Entry {
    Entry {
        index,
        term,
        payload: EntryPayload::Normal(Bytes::from(data)),
    }
}

#[test]
fn checker_flags_two_leaders_in_a_term() {
    let mut ck = Checker::new(true);
    let disk = Disk::default();
    let conf = ConfState::with_voters([1, 2, 3]);
    let mut d1 = Disk::default();
    let boot = raftkv_raft::RawNode::bootstrap([1, 2, 3]);
    let w = d1.append(&boot.entries).expect("bootstrap");
    ck.on_persist(1, &w, &boot.entries).expect("fresh");
    ck.on_leader(1, 2, &d1, &conf)
        .expect("first leader of term 2");
    let v = ck
        .on_leader(2, 2, &disk, &conf)
        .expect_err("second leader of term 2");
    assert_eq!(v.invariant, Invariant::ElectionSafety);
}

#[test]
fn checker_flags_divergent_logs_and_applies() {
    let mut ck = Checker::new(true);
    let (mut a, mut b) = (Disk::default(), Disk::default());
    // Same (index 2, term 2) after different entries at index 1: Log Matching is broken.
    let wa = a
        .append(&[entry(1, 1, "p"), entry(2, 2, "x")])
        .expect("append");
    let wb = b
        .append(&[entry(1, 1, "q"), entry(2, 2, "x")])
        .expect("append");
    ck.on_persist(1, &wa, &[]).expect("first log");
    let v = ck.on_persist(2, &wb, &[]).expect_err("divergent prefix");
    assert_eq!(v.invariant, Invariant::LogMatching);

    let mut sm = StateMachine::default();
    sm.apply(&entry(1, 1, "p"));
    ck.on_apply(1, 1, &entry(1, 1, "p"), sm.hash)
        .expect("first apply");
    let mut other = StateMachine::default();
    other.apply(&entry(1, 1, "q"));
    let v = ck
        .on_apply(2, 1, &entry(1, 1, "q"), other.hash)
        .expect_err("different command at index 1");
    assert_eq!(v.invariant, Invariant::StateMachineSafety);
}

#[test]
fn checker_flags_a_leader_missing_a_committed_entry() {
    let mut ck = Checker::new(true);
    let conf = ConfState::with_voters([1, 2, 3]);
    let boot = raftkv_raft::RawNode::bootstrap([1, 2, 3]);
    let mut long = Disk::default();
    let w = long
        .append(&[boot.entries[0].clone(), entry(2, 2, "x")])
        .expect("append");
    ck.on_persist(1, &w, &boot.entries).expect("fresh");
    ck.on_leader(1, 2, &long, &conf).expect("leader of term 2");
    ck.on_leader_commit(1, 2, 2, 1, &long)
        .expect("commits its own entry");
    let mut short = Disk::default();
    let w = short.append(&boot.entries).expect("append");
    ck.on_persist(2, &w, &[]).expect("prefix");
    let v = ck
        .on_leader(2, 3, &short, &conf)
        .expect_err("n2 lacks the committed entry 2");
    assert_eq!(v.invariant, Invariant::LeaderCompleteness);
}

#[test]
fn checker_flags_commits_of_old_terms_and_stale_reads() {
    let mut ck = Checker::new(true);
    let mut d = Disk::default();
    let w = d
        .append(&[entry(1, 1, "a"), entry(2, 1, "b"), entry(3, 3, "c")])
        .expect("append");
    ck.on_persist(1, &w, &[]).expect("fresh");
    let v = ck
        .on_leader_commit(1, 3, 2, 1, &d)
        .expect_err("index 2 is of term 1, the leader is in term 3");
    assert_eq!(v.invariant, Invariant::CommitRule);

    ck.max_commit = 7;
    ck.on_read_index(1, 99);
    let v = ck
        .on_read_state(1, &raftkv_raft::ReadState { ctx: 99, index: 5 })
        .expect_err("index 7 was committed when the read arrived");
    assert_eq!(v.invariant, Invariant::ReadIndex);
}

#[test]
fn checker_flags_a_snapshot_that_disagrees_with_the_cluster() {
    let mut ck = Checker::new(true);
    let mut sm = StateMachine::default();
    sm.apply(&entry(1, 1, "a"));
    ck.on_apply(1, 1, &entry(1, 1, "a"), sm.hash)
        .expect("apply");
    let meta = SnapshotMeta {
        index: 1,
        term: 1,
        conf: ConfState::default(),
    };
    let data = SnapData {
        index: 1,
        term: 1,
        sm_hash: sm.hash ^ 1,
        chain: 0,
    };
    let v = ck
        .on_snapshot(2, &meta, &data)
        .expect_err("different state at index 1");
    assert_eq!(v.invariant, Invariant::StateMachineSafety);
}

#[test]
fn checker_flags_a_commit_index_beyond_the_durable_log() {
    let mut ck = Checker::new(true);
    let mut d = Disk::default();
    d.append(&[entry(1, 1, "a")]).expect("append");
    d.hard_state = HardState {
        term: 1,
        vote: 0,
        commit: 3,
    };
    let v = ck
        .on_restart(1, &d)
        .expect_err("commit 3 but the log ends at 1");
    assert_eq!(v.invariant, Invariant::DurableCommit);
}

#[test]
#[should_panic(expected = "invariant violated")]
fn strict_clusters_panic_on_the_first_violation() {
    let mut c = Cluster::with_voters(3);
    c.report(Violation {
        invariant: Invariant::Liveness,
        tick: 0,
        node: None,
        detail: "test".into(),
    });
}
