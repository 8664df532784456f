//! Core defects the simulation found, each boiled down to a deterministic scenario.
//!
//! Each test states the behaviour Raft requires, so it failed while the defect was there; a defect
//! still open is `#[ignore]`d with the reason until its fix lands.

mod common;

use common::*;
use raftkv_raft::MessageBody;

/// Liveness, found by `SIM_VARIANT=snapshot-always SIM_SEED=10429` (a permanent stall after
/// healing). A voter refuses (pre-)votes from candidates that are not voters of *its own*
/// configuration (`handle_vote_request`'s `member`, and the `unknown` check in `step`). A voter
/// whose configuration is stale — it missed a learner's promotion — then refuses the promoted
/// voter for good. Here 3 of 4 voters are up and connected and no leader is ever elected: n4 has
/// the longest log, so only n4 can win, and n3 will not vote for a node it still thinks is a
/// learner. Thesis §4.1: "servers process incoming RPC requests without consulting their current
/// configurations"; removed servers are kept from disrupting by pre-vote and the check-quorum
/// lease (thesis §4.2.3), not by refusing votes.
#[test]
fn a_voter_with_a_stale_configuration_does_not_block_elections() {
    let mut c = Cluster::with_voters(3);
    assert!(c.elect(1));
    c.tick_all(2);
    // n3 misses everything from here on: it keeps a configuration in which n4 is no voter.
    c.isolate(3);
    c.add_learner(1, 4).expect("the leader adds a learner");
    c.tick_all(10);
    assert!(c.raw(1).conf_state().voters.contains(&4), "n4 was promoted");
    assert!(!c.raw(3).conf_state().voters.contains(&4));
    // One more entry reaches n4 but not n2: n4's log is now the only most up-to-date one.
    c.propose(1, "x").expect("leader");
    c.drop_matching(|e| e.msg.to == 2 && matches!(e.msg.body, MessageBody::AppendEntries { .. }));
    c.cut(1, 2);
    c.deliver_all();
    assert!(c.raw(4).last_index() > c.raw(2).last_index());
    // The leader dies; the network heals. Voters 2, 3, 4 (a quorum of 4) are up.
    c.crash(1);
    c.recover();
    c.tick_all(200);
    assert!(
        c.leader().is_some(),
        "3 of 4 voters up and connected, yet no leader after 20 election timeouts"
    );
}

/// Lease safety (thesis §6.4.1), found by the `no-pre-vote` variant of the simulation. A
/// follower that heard from its leader within the election timeout must not help elect anyone
/// else — the lease rests on that. But any message with a higher term that is not a vote
/// request (here a stale `HeartbeatResponse`) makes it adopt the term with no leader
/// (`become_follower(term, NO_NODE)`), which ends its protection at once: it grants the very
/// next vote while the old leader still serves lease reads. With pre-vote on, the same opening
/// needs a node already at a higher term (e.g. after an abandoned transfer or a lost election).
/// A fix: while in lease, ignore higher-term responses instead of adopting their term.
#[test]
fn a_stale_response_does_not_end_a_followers_lease() {
    let mut opts = ClusterOpts::new(3);
    opts.pre_vote = false;
    let mut c = Cluster::new(opts);
    assert!(c.elect(2));
    c.tick_all(2);
    // A heartbeat of term 2 from n2 to n3 is held up in the network.
    c.tick(2);
    let held = c.net.take_matching(|e| {
        e.msg.from == 2 && e.msg.to == 3 && matches!(e.msg.body, MessageBody::Heartbeat { .. })
    });
    assert_eq!(held.len(), 1);
    c.deliver_all();
    // Leadership moves to n1 (term 3), which then holds a lease acknowledged by n2 and n3.
    assert_eq!(c.transfer_leader(2, 1), Ok(1));
    c.deliver_all();
    c.tick_all(3);
    // n3 loses its link to n1; its election timer fires (term 4); n2 is in lease and refuses.
    c.cut(1, 3);
    for _ in 0..40 {
        if c.raw(3).term() == 4 {
            break;
        }
        c.tick_all(1);
    }
    assert_eq!(c.raw(3).term(), 4);
    assert_eq!(
        c.raw(2).term(),
        3,
        "n2 is in lease and ignored the vote request"
    );
    // Just before n3's timer can fire again (10..20 ticks), the stale heartbeat reaches n3,
    // which answers n2 with term 4: n2 adopts term 4 and forgets its leader. (n2's next words
    // to n1 are lost, so n1 does not learn of term 4 either.)
    c.tick_all(9);
    c.cut_oneway(2, 1);
    for env in held {
        c.deliver(env);
    }
    for env in c.net.take_matching(|e| e.msg.to == 2) {
        c.deliver(env);
    }
    // n2 is in lease: it ignores the stale answer and keeps its term and its leader. (Before the
    // fix it adopted term 4 with no leader, granted n3's next vote, and n3 led term 5 while n1's
    // lease still ran: the strict harness panicked with a lease violation.)
    assert_eq!((c.raw(2).term(), c.raw(2).leader_id()), (3, 1));
    c.tick_all(12);
    c.check().expect("no lease violation");
}

/// `Status` reports a follower that answered within the last election timeout as active, also
/// right after a check-quorum round started (which clears the round's own flag): operators and
/// `kvctl status` sample it at any phase of the round.
#[test]
fn a_follower_heard_in_the_last_round_is_reported_active() {
    let mut c = Cluster::with_voters(3);
    assert!(c.elect(1));
    c.deliver_all();
    // One election timeout of ticks on the leader alone: a check-quorum round passes (it still
    // counts the followers heard before) and a new one starts with nobody heard yet.
    for _ in 0..10 {
        c.tick(1);
    }
    let status = c.raw(1).status();
    for id in [2, 3] {
        assert!(
            status.progress.get(&id).is_some_and(|p| p.recent_active),
            "n{id} answered one election timeout ago but is reported inactive: {status:?}"
        );
    }
}
