//! The deterministic simulation harness for the Raft core (DESIGN.md §8.1).
//!
//! N in-memory [`raftkv_raft::RawNode`]s, each with a simulated [`Disk`] and [`StateMachine`], on
//! a simulated [`Network`] that can drop, delay, reorder, duplicate and partition messages;
//! nodes crash (also in the middle of a `Ready`) and restart from what they persisted. There is
//! no real time and no OS randomness: a run is a pure function of its seed, so any failure
//! replays with one command. A [`Checker`] verifies Raft's safety properties after every step.
//!
//! Map:
//! - [`rng`]: seeded SplitMix64 generator and stable hashing;
//! - [`disk`]: durable state (hard state, snapshot, entries with chain hashes) and the state
//!   machine;
//! - [`net`]: messages in flight, link faults, partitions;
//! - [`check`]: the invariants (election safety, log matching, leader completeness, state machine
//!   safety, commitment rule, durable commit, ReadIndex freshness, membership; the read-lease
//!   check lives in `cluster`, which knows the ticks) and [`Violation`];
//! - [`cluster`]: [`Cluster`], the verbs scenario tests use (see below);
//! - [`sim`]: the randomized driver (`run(seed, &Profile, bug)`), with the liveness check.
//!
//! # Writing a scenario test
//! ```ignore
//! mod common;
//! use common::*;
//!
//! let mut c = Cluster::with_voters(3);          // ids 1..=3, strict: violations panic
//! assert!(c.elect(1));                           // campaign + deliver until quiet
//! let idx = c.propose(1, "x").expect("leader");  // proposals go to the leader
//! c.deliver_all();                               // replicate, commit, heartbeat...
//! assert!(c.node(2).sm.applied >= idx);
//! c.isolate(1);                                  // partitions: isolate, cut, cut_oneway, split
//! c.tick_all(30);                                // time: ticks every node, delivers due messages
//! assert_ne!(c.leader(), Some(1));              // say n3 won
//! c.recover();                                   // heal
//! c.crash(2); c.restart(2);                      // crash/restart from the node's Disk
//! c.add_learner(3, 4).expect("3 leads");         // a spare joins empty and is promoted later
//! ```
//! Other verbs: `tick(id)`, `deliver(envelope)`, `drop_matching(pred)`, `in_flight()`,
//! `crash_at(id, CrashPoint)` (die inside the next `Ready`), `pause(id, until)` /
//! `resume_all()` (a stopped process), `snapshot(id)` (snapshot +
//! compaction), `read_index(id)`, `transfer_leader(id, target)`, `remove_node(leader, id)`,
//! `decommission(id)`, `set_net_faults(..)`; inspection: `leader()`, `role(id)`, `raw(id)`,
//! `node(id)` (disk, state machine, `applied_log`, `served_reads`), `durable_state(id)`,
//! `stats()`, `check()`. `ClusterOpts` sets timing, flow control, fault rates, automatic
//! snapshots and (with the `planted-bugs` feature) a planted bug; `strict: false` records the
//! first violation instead of panicking.
//!
//! # Randomized runs
//! `sim::run(seed, &Profile::randomized(seed), None)` is one seeded run (see `sim.rs`);
//! `Profile::variant(name, seed)` gives named variations (no pre-vote, lossy links, ...).
//! Environment: `SIM_SEED`, `SIM_SEEDS`, `SIM_SEED_FROM`, `SIM_VARIANT`, and `SIM_TRACE=1`, which
//! prints every event of a run to stderr (use it with a single seed).

// Each test crate uses a different part of the harness; what one of them leaves unused is not
// dead code (nor an unused import) for the others.
#![allow(dead_code, unused_imports)]

pub mod check;
pub mod cluster;
pub mod disk;
pub mod net;
pub mod rng;
pub mod sim;

pub use check::{Checker, Invariant, Violation};
pub use cluster::{Cluster, ClusterOpts, CrashPoint, Node, ReadyCrashes, Stats};
pub use disk::{Disk, SnapData, StateMachine};
pub use net::{Envelope, NetFaults, Network};
pub use rng::Rng;
pub use sim::{Profile, RunOutcome, run, seeds_from_env};
