//! Tunables of the core, with etcd's defaults, and their validation.

use crate::error::Error;
use crate::types::NodeId;

/// Configuration of one [`crate::RawNode`].
///
/// Time is counted in ticks; the caller decides how long a tick is (kvnode: 100 ms, so the
/// defaults are etcd's heartbeat of 100 ms and election timeout of 1 s).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    /// This node's id; never [`crate::NO_NODE`].
    pub id: NodeId,
    /// Ticks between heartbeats from the leader.
    pub heartbeat_tick: u64,
    /// The minimum election timeout `T` in ticks; each timeout is drawn from `[T, 2T)`.
    pub election_tick: u64,
    /// Pre-vote (thesis §9.6): a node first checks that it could win before it bumps its term.
    pub pre_vote: bool,
    /// Check-quorum (thesis §6.2): a leader that has not heard from a quorum within an election
    /// timeout steps down, and a follower that has heard from a leader within the minimum election
    /// timeout rejects (pre-)votes.
    pub check_quorum: bool,
    /// The most AppendEntries messages in flight to one follower.
    pub max_inflight_msgs: usize,
    /// The most bytes of entries in one AppendEntries message. A single larger entry is still sent,
    /// alone, so the largest allowed entry always fits.
    pub max_size_per_msg: u64,
    /// Seed for the election-timeout randomisation. The core uses no other randomness.
    pub seed: u64,
    /// The catch-up barrier of a node that joined a running cluster with an empty log (a lost
    /// volume, or a new member): the position (index, and the term of the entry there) of a log
    /// that holds every entry committed so far. Until its own log is at least as up-to-date as
    /// that position (§5.4.1's order), the node grants votes and pre-votes only to candidates
    /// whose log is, and it neither campaigns nor obeys `TimeoutNow`. Any entry it acknowledged
    /// before it lost its log and that a quorum counted is therefore in the log of every leader
    /// it helps elect. 0: none. The caller persists it (it must survive restarts until reached)
    /// and learns it from a quorum of the other voters (see `kvnode`'s bootstrap module).
    pub catch_up_index: crate::types::Index,
    /// The term of the entry at [`Config::catch_up_index`].
    pub catch_up_log_term: crate::types::Term,
    /// With the barrier: the highest current term the node learned of when it joined. It
    /// grants no vote in this term or an earlier one, ever: it may have voted in them before it
    /// lost its state, and a second vote in one term could elect two leaders. 0: none.
    pub catch_up_term: crate::types::Term,
    /// A deliberate safety bug to switch on, for proving that the tests catch it.
    #[cfg(feature = "planted-bugs")]
    pub bug: Option<crate::planted::Bug>,
}

impl Config {
    /// The defaults for node `id`: heartbeat 1 tick, election timeout 10 ticks, pre-vote and
    /// check-quorum on, 256 messages in flight of at most 1 MiB of entries each.
    pub fn new(id: NodeId) -> Self {
        Self {
            id,
            heartbeat_tick: 1,
            election_tick: 10,
            pre_vote: true,
            check_quorum: true,
            max_inflight_msgs: 256,
            max_size_per_msg: 1 << 20,
            seed: id,
            catch_up_index: 0,
            catch_up_log_term: 0,
            catch_up_term: 0,
            #[cfg(feature = "planted-bugs")]
            bug: None,
        }
    }

    /// Checks the invariants the core relies on.
    pub fn validate(&self) -> Result<(), Error> {
        let bad = |why: &str| Err(Error::InvalidConfig(why.to_string()));
        if self.id == crate::NO_NODE {
            return bad("id must not be 0");
        }
        if self.heartbeat_tick == 0 {
            return bad("heartbeat_tick must be at least 1");
        }
        if self.election_tick <= self.heartbeat_tick {
            return bad("election_tick must be greater than heartbeat_tick");
        }
        if self.max_inflight_msgs == 0 {
            return bad("max_inflight_msgs must be at least 1");
        }
        if self.max_size_per_msg == 0 {
            return bad("max_size_per_msg must be at least 1");
        }
        Ok(())
    }
}
