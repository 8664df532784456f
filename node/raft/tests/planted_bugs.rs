//! Mutation check of the simulation (DESIGN.md §8.1): every planted bug must be caught.
//!
//! For each `planted::Bug`, seeds run with the bug switched on in every node until the checker
//! reports a violation (at most `PLANTED_MAX_SEEDS`, default 400). The test then re-runs the
//! catching seed without the bug and requires it to pass, so the catch is the bug's doing and
//! not a flaw of the core or of the harness. A checker that catches nothing proves nothing.
//!
//! Replay one catch: `PLANTED_BUG=<name> SIM_SEED=<n> cargo test -p raftkv-raft --test
//! planted_bugs -- --nocapture` (add `SIM_TRACE=1` for the event trace).
#![cfg(feature = "planted-bugs")]

mod common;

use common::sim::env_u64;
use common::{Invariant, Profile, run};
use raftkv_raft::planted::Bug;

/// The profile for hunting `bug`. It starts from the standard randomized mix and turns up the
/// faults that give the bug a chance to matter (the catch must still come from a safety check).
fn profile(bug: Bug, seed: u64) -> Profile {
    let mut p = Profile::randomized(seed);
    p.name = format!("{bug}({seed})");
    // The direct §5.4.2 check would catch commit-previous-term at its first wrong commit; turn
    // it off so that the bug has to cause real damage (a lost or overwritten committed entry)
    // before it is caught.
    p.commit_rule = false;
    match bug {
        Bug::CommitPreviousTerm => {
            // Figure 8 of the paper needs a leader whose old-term entries reach a majority
            // (and get committed by counting) while its own no-op does not, and then a node with
            // a later-term but shorter log winning: three voters, one entry per message, leaders
            // isolated or crashed often, slow links, no pre-vote to hold candidates back.
            p.voters = 3;
            p.spares = 0;
            p.conf_change = 0.0;
            p.max_size_per_msg = 1;
            p.max_inflight_msgs = 1;
            p.net.drop = 0.0;
            p.net.delay = 0.8;
            p.net.max_delay = 3;
            p.crash = 0.02;
            p.crash_leader = 0.05;
            p.down_ticks = (1, 15);
            p.partition = 0.2;
            p.partition_kinds = [1, 2, 0, 0];
            p.heal = 0.2;
            p.propose = 0.9;
            p.pre_vote = false;
            p.epochs = 1;
            p.ticks = 2000;
        }
        Bug::VoteWithoutLogCheck => {
            // Lagging voters must get a chance to campaign: partitions and crashes that leave
            // some nodes behind, then leaders that disappear.
            p.partition = 0.05;
            p.heal = 0.05;
            p.crash = 0.01;
            p.propose = 0.9;
        }
        Bug::VoteBeforePersist => {
            // Two candidates in one term, and voters that die right after granting a vote and
            // come back in time to vote again.
            p.ready_crashes.on_vote_grant = 0.5;
            p.ready_crashes.down_ticks = (0, 2);
            p.net.delay = 0.3;
            p.net.max_delay = 3;
            p.pre_vote = false;
            p.campaign = 0.05;
        }
        Bug::IgnorePrevLogCheck => {
            // Divergent uncommitted suffixes, then appends that skip the consistency check.
            p.net.drop = 0.1;
            p.net.dup = 0.05;
            p.net.delay = 0.3;
            p.partition = 0.05;
            p.crash = 0.01;
        }
        Bug::AckUnpersistedAfterSnapshot => {
            // Followers that fall behind a compacted log get a snapshot, and the appends behind
            // it must arrive in the same batch: frequent snapshots, lagging nodes, big batches.
            p.snapshot_threshold = Some(5);
            p.partition = 0.05;
            p.heal = 0.05;
            p.pause = 0.01;
            p.crash = 0.005;
            p.propose = 0.9;
            p.max_inflight_msgs = 256;
            p.batch_delivery = 64;
        }
        Bug::LeaseAfterTransfer => {
            // A TimeoutNow that arrives after its leader gave the transfer up (slow links),
            // while the leader renewed its lease meanwhile.
            p.transfer = 0.1;
            p.net.delay = 0.5;
            p.net.max_delay = 25;
            p.net.drop = 0.0;
            p.crash = 0.0;
            p.pause = 0.0;
            p.partition = 0.0;
            p.read = 0.2;
        }
        Bug::VoteWhileCatchingUp => {
            // A wiped node that held committed entries a lagging node lacks, and that votes for
            // that node before it has caught up: three voters, lagging links, frequent wipes.
            p.voters = 3;
            p.spares = 0;
            p.conf_change = 0.0;
            p.wipe = 0.05;
            p.down_ticks = (1, 5);
            p.partition = 0.05;
            p.heal = 0.05;
            p.crash_leader = 0.01;
            p.propose = 0.9;
            p.snapshot_threshold = None;
        }
    }
    p
}

fn hunt(bug: Bug) {
    let max_seeds = env_u64("PLANTED_MAX_SEEDS").unwrap_or(400);
    let seeds: Vec<u64> = match env_u64("SIM_SEED") {
        Some(seed) => vec![seed],
        None => (1..=max_seeds).collect(),
    };
    if let Ok(only) = std::env::var("PLANTED_BUG")
        && only != bug.name()
    {
        return;
    }
    for &seed in &seeds {
        let out = run(seed, &profile(bug, seed), Some(bug));
        let Some(v) = out.violation else {
            continue;
        };
        if v.invariant == Invariant::Liveness {
            // The planted bugs break safety; a run that merely stalled (these profiles are
            // harsher than production's) proves nothing about the checker. Keep hunting.
            println!("planted bug {bug}: seed {seed} stalled ({v}); not counted");
            continue;
        }
        println!(
            "planted bug {bug}: caught by seed {seed} ({} runs tried): {v}\n  replay: \
             PLANTED_BUG={bug} SIM_SEED={seed} cargo test -p raftkv-raft --test planted_bugs \
             -- --nocapture",
            seeds.iter().position(|&s| s == seed).map_or(0, |p| p + 1),
        );
        let clean = run(seed, &profile(bug, seed), None);
        assert!(
            clean.violation.is_none(),
            "seed {seed} also fails without {bug}: {:?}",
            clean.violation
        );
        return;
    }
    panic!(
        "planted bug {bug} was not caught in {} seeds: the checker does not see it",
        seeds.len()
    );
}

#[test]
fn catches_commit_previous_term() {
    hunt(Bug::CommitPreviousTerm);
}

#[test]
fn catches_vote_without_log_check() {
    hunt(Bug::VoteWithoutLogCheck);
}

#[test]
fn catches_vote_before_persist() {
    hunt(Bug::VoteBeforePersist);
}

#[test]
fn catches_ignore_prev_log_check() {
    hunt(Bug::IgnorePrevLogCheck);
}

#[test]
fn catches_ack_unpersisted_after_snapshot() {
    hunt(Bug::AckUnpersistedAfterSnapshot);
}

#[test]
fn catches_lease_after_transfer() {
    hunt(Bug::LeaseAfterTransfer);
}

#[test]
fn catches_vote_while_catching_up() {
    hunt(Bug::VoteWhileCatchingUp);
}

/// Every bug has a test above: adding a bug to `Bug::ALL` without one fails here.
#[test]
fn every_bug_is_hunted() {
    let hunted = [
        Bug::CommitPreviousTerm,
        Bug::VoteWithoutLogCheck,
        Bug::VoteBeforePersist,
        Bug::IgnorePrevLogCheck,
        Bug::AckUnpersistedAfterSnapshot,
        Bug::LeaseAfterTransfer,
        Bug::VoteWhileCatchingUp,
    ];
    for bug in Bug::ALL {
        assert!(hunted.contains(&bug), "no test hunts planted bug {bug}");
    }
}
