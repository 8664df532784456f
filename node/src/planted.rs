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
}

impl PlantedBug {
    /// Every planted bug of the node (the core's are in `raftkv_raft::planted::Bug::ALL`).
    pub const NODE: [PlantedBug; 3] = [
        PlantedBug::StaleRead,
        PlantedBug::AckBeforeFsync,
        PlantedBug::SessionNoDedup,
    ];

    /// The name on the command line.
    pub fn name(self) -> &'static str {
        match self {
            PlantedBug::Core(b) => b.name(),
            PlantedBug::StaleRead => "stale-read",
            PlantedBug::AckBeforeFsync => "ack-before-fsync",
            PlantedBug::SessionNoDedup => "session-no-dedup",
        }
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
