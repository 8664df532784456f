//! [`Observed`]: what the loop publishes after every turn, for health checks, metrics and
//! shutdown. A leaf, so that the driver's state holds its sender without importing `status`.

use raftkv_raft::{Index, NodeId, Role, Term};

/// What the node shares with the outside world (health checks, metrics, shutdown).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Observed {
    /// Role of this node.
    pub role: Role,
    /// Current term.
    pub term: Term,
    /// Known leader (0 = none).
    pub leader_id: NodeId,
    /// Commit index.
    pub commit_index: Index,
    /// Applied index.
    pub applied_index: Index,
    /// Whether this node is in the configuration.
    pub member: bool,
}
