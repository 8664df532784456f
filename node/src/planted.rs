//! Deliberate bugs for proving that the fault-injection suite catches them (feature
//! `planted-bugs`, selected by name with `kvnode --planted-bug NAME`). Compiled out of normal
//! builds entirely.
//!
//! A checker that catches nothing proves nothing: each bug breaks one guarantee the suite claims
//! to check, and CI asserts that the suite reports it.

use std::fmt;
use std::str::FromStr;

/// A named bug in the node or in the Raft core.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PlantedBug {
    /// One of the Raft core's planted bugs.
    Core(raftkv_raft::planted::Bug),
    /// A node that believes it leads serves LINEARIZABLE reads from its local state, without
    /// confirming leadership: a deposed (partitioned or paused) leader returns stale data.
    StaleRead,
    /// Appends are acknowledged (and the leader counts its own copy) before they are durable;
    /// the writes reach storage 200 ms later. A crash of a majority loses acknowledged writes.
    AckBeforeFsync,
    /// The session table does not de-duplicate: a retried (client_id, seq) is applied again.
    SessionNoDedup,
    /// Until its driver runs, a node with state on disk answers `Cluster.Status` as a fresh node
    /// would (no cluster id, term 0): a peer whose volume was lost counts it as fresh while it
    /// loads and bootstraps a second cluster (the safety issue, item 1).
    StatusFreshWhileLoading,
}

impl PlantedBug {
    /// Every planted bug of the node (the core's are in `raftkv_raft::planted::Bug::ALL`).
    pub const NODE: [PlantedBug; 4] = [
        PlantedBug::StaleRead,
        PlantedBug::AckBeforeFsync,
        PlantedBug::SessionNoDedup,
        PlantedBug::StatusFreshWhileLoading,
    ];

    /// The name on the command line.
    pub fn name(self) -> &'static str {
        match self {
            PlantedBug::Core(b) => b.name(),
            PlantedBug::StaleRead => "stale-read",
            PlantedBug::AckBeforeFsync => "ack-before-fsync",
            PlantedBug::SessionNoDedup => "session-no-dedup",
            PlantedBug::StatusFreshWhileLoading => "status-fresh-while-loading",
        }
    }
}

/// What `Cluster.Status` answers before the driver runs: under `status-fresh-while-loading`, what
/// a node with an empty data directory would answer, whatever is on disk.
pub(crate) fn status_before_start(
    bug: Option<PlantedBug>,
    on_disk: crate::handle::NodeStatus,
) -> crate::handle::NodeStatus {
    if bug != Some(PlantedBug::StatusFreshWhileLoading) {
        return on_disk;
    }
    crate::handle::NodeStatus {
        node_id: on_disk.node_id,
        member_state: crate::handle::MemberState::Fresh,
        ..Default::default()
    }
}

impl fmt::Display for PlantedBug {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for PlantedBug {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if let Some(b) = PlantedBug::NODE.into_iter().find(|b| b.name() == s) {
            return Ok(b);
        }
        s.parse::<raftkv_raft::planted::Bug>()
            .map(PlantedBug::Core)
            .map_err(|_| format!("unknown planted bug {s:?}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for b in PlantedBug::NODE {
            assert_eq!(b.name().parse(), Ok(b));
        }
        assert_eq!(
            "vote-before-persist".parse(),
            Ok(PlantedBug::Core(
                raftkv_raft::planted::Bug::VoteBeforePersist
            ))
        );
        assert!("nope".parse::<PlantedBug>().is_err());
    }
}
