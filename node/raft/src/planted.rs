//! Deliberate safety bugs, compiled only with the `planted-bugs` feature and switched on per node
//! through [`crate::Config::bug`]. The simulation runs with each one and must report a violation:
//! a checker that catches nothing proves nothing.

use std::fmt;
use std::str::FromStr;

/// A named, deliberately wrong variant of a Raft safety rule.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Bug {
    /// A leader commits an entry of an earlier term by counting replicas (breaks §5.4.2, Fig. 8).
    CommitPreviousTerm,
    /// A voter grants its vote without checking that the candidate's log is up to date (§5.4.1).
    VoteWithoutLogCheck,
    /// A vote grant goes out before the vote is persisted, so a crash lets the node vote twice in
    /// one term (§5.2, Fig. 2 "persistent state ... updated on stable storage before responding").
    VoteBeforePersist,
    /// A follower appends entries without checking that its entry at `prev_log_index` has
    /// `prev_log_term` (the consistency check of §5.3).
    IgnorePrevLogCheck,
    /// After installing a snapshot, the entries appended behind it in the same `Ready` are not
    /// handed out for persistence (the unstable range starts at the old persisted index, below
    /// the snapshot), yet their acknowledgement goes out after that `Ready`'s fsync.
    AckUnpersistedAfterSnapshot,
    /// A leader whose transfer was given up serves lease reads again once later heartbeat rounds
    /// are acknowledged, although its `TimeoutNow` may still make the target win (applied by the
    /// caller's [`crate::ReadLease`]).
    LeaseAfterTransfer,
    /// A node that joined with an empty log votes before it has caught up to its barrier
    /// ([`crate::Config::catch_up_index`]), with a log that misses entries it acknowledged
    /// before its volume was lost.
    VoteWhileCatchingUp,
}

impl Bug {
    /// Every planted bug, for tests that try them all.
    pub const ALL: [Bug; 7] = [
        Bug::CommitPreviousTerm,
        Bug::VoteWithoutLogCheck,
        Bug::VoteBeforePersist,
        Bug::IgnorePrevLogCheck,
        Bug::AckUnpersistedAfterSnapshot,
        Bug::LeaseAfterTransfer,
        Bug::VoteWhileCatchingUp,
    ];

    /// The bug's name on the command line and in test output.
    pub fn name(self) -> &'static str {
        match self {
            Bug::CommitPreviousTerm => "commit-previous-term",
            Bug::VoteWithoutLogCheck => "vote-without-log-check",
            Bug::VoteBeforePersist => "vote-before-persist",
            Bug::IgnorePrevLogCheck => "ignore-prev-log-check",
            Bug::AckUnpersistedAfterSnapshot => "ack-unpersisted-after-snapshot",
            Bug::LeaseAfterTransfer => "lease-after-transfer",
            Bug::VoteWhileCatchingUp => "vote-while-catching-up",
        }
    }
}

impl fmt::Display for Bug {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Bug {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Bug::ALL
            .into_iter()
            .find(|b| b.name() == s)
            .ok_or_else(|| format!("unknown planted bug {s:?}"))
    }
}
