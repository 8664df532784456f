//! Errors the core returns to its caller. All are recoverable: the core's state is unchanged.

use crate::types::{Index, NodeId};

/// Why the core refused a request.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// Only the leader accepts proposals, reads and membership changes.
    #[error("not the leader (leader: {leader:?})")]
    NotLeader {
        /// The leader this node knows of, if any.
        leader: Option<NodeId>,
    },
    /// A leader transfer is in progress; proposals are refused until it ends (thesis §3.10).
    #[error("leader transfer in progress")]
    TransferInProgress,
    /// A membership change must wait: another one is not committed yet, or this leader has not
    /// committed an entry of its own term (Ongaro 2015, the single-server change fix).
    #[error("membership change not allowed now: {0}")]
    ConfChangeNotAllowed(&'static str),
    /// The membership change makes no sense for the current configuration.
    #[error("invalid membership change: {0}")]
    InvalidConfChange(String),
    /// The requested index is below the first index still in the log.
    #[error("index {0} is compacted")]
    Compacted(Index),
    /// The requested index is beyond what the log holds or has applied.
    #[error("index {0} is unavailable")]
    Unavailable(Index),
    /// A `Config` value breaks an invariant.
    #[error("invalid config: {0}")]
    InvalidConfig(String),
    /// The persisted state handed to `RawNode::new` is inconsistent.
    #[error("inconsistent initial state: {0}")]
    InvalidState(String),
}
