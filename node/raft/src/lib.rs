//! The Raft consensus core of raftkv: a deterministic state machine that does no I/O.
//!
//! The shape is that of etcd-raft and raft-rs. Time arrives as [`RawNode::tick`], messages as
//! [`RawNode::step`], client commands as [`RawNode::propose`]; everything the caller must persist,
//! send and apply comes out of [`RawNode::ready`] and is acknowledged with [`RawNode::advance`].
//! There is no clock, no thread, no file, no socket and no OS randomness here: the election timer
//! is drawn from a seeded generator, so a run is a pure function of its inputs. That is what makes
//! the simulation tests in `tests/` replayable from a seed.
//!
//! Modules:
//! - [`types`]: entries, hard state, configurations, messages, `Ready`;
//! - [`config`]: tunables with etcd's defaults;
//! - [`error`]: what the core refuses and why;
//! - [`catch_up`]: the barrier a node that rejoins with an empty log must reach before it votes;
//! - [`lease`]: the leader's read lease, one decision shared by the node and the simulation;
//! - `log`: the in-memory log above the last snapshot, with the commit and apply indexes;
//! - `progress`: the leader's view of each follower (match/next index, in-flight window);
//! - `raft`: roles, elections, replication, reads, leader transfer, membership;
//! - `rng`: the seeded generator behind randomized election timeouts;
//! - [`planted`] (feature `planted-bugs`): deliberate safety bugs that the simulation must catch.
//!
//! # Membership changes
//! raftkv changes the configuration one server at a time (thesis §4.1), not by joint consensus:
//! every change our operator makes is a single step (add a learner, promote it, remove one member),
//! and single-server changes need no intermediate configuration on disk or on the wire. The known
//! hazard of this scheme (Ongaro, raft-dev 2015) is closed by the two rules the core enforces:
//! at most one configuration entry is uncommitted at any time, and a leader proposes a change only
//! after it has committed an entry of its own term. A configuration takes effect on every node as
//! soon as its entry is appended (not when committed), and is rolled back if the entry is truncated.
//! New members always start as learners and are promoted by the leader once caught up, so adding a
//! member never costs availability while it copies the log.

pub mod catch_up;
mod config;
mod error;
pub mod lease;
mod log;
#[cfg(feature = "planted-bugs")]
pub mod planted;
mod progress;
mod raft;
mod rng;
pub mod types;

pub use catch_up::{CatchUp, PeerLog, catch_up_barrier};
pub use config::Config;
pub use error::Error;
pub use lease::ReadLease;
pub use progress::ProgressState;
pub use raft::{InitialState, PeerProgress, RawNode, Status};
pub use types::*;
