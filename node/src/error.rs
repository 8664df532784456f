//! Errors a node reports to its clients, and their gRPC status codes (DESIGN.md §5).

use raftkv_proto::LEADER_METADATA_KEY;
use raftkv_raft::NodeId;
use tonic::{Code, Status};

use crate::kv::{CommandError, ErrorCode};

/// Why a request to the node failed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum NodeError {
    /// This node is not the leader. With the leader's client address the client is redirected
    /// (FAILED_PRECONDITION + `raftkv-leader`); without one there is no leader to go to
    /// (UNAVAILABLE).
    #[error("not the leader")]
    NotLeader {
        /// The leader's id, or 0.
        leader_id: NodeId,
        /// The leader's client address, if known.
        leader_client_addr: Option<String>,
    },
    /// No leader, leadership lost before commit, or a leader transfer in progress: retry.
    #[error("unavailable: {0}")]
    Unavailable(String),
    /// Bounded queues are full: back off.
    #[error("overloaded: {0}")]
    Overloaded(String),
    /// Not committed in time; the write may still apply: retry with the same seq.
    #[error("not committed within {0:?}; the write may still apply, retry with the same seq")]
    Timeout(std::time::Duration),
    /// The state machine refused the write.
    #[error(transparent)]
    Command(#[from] CommandError),
    /// Bad input; the message names the limit.
    #[error("{0}")]
    InvalidArgument(String),
    /// The node is shutting down.
    #[error("the node is shutting down")]
    Stopped,
    /// A local failure (storage); the node stops serving.
    #[error("internal error: {0}")]
    Internal(String),
}

impl NodeError {
    /// The gRPC status code, for metrics and for [`NodeError::to_status`].
    pub fn code(&self) -> Code {
        match self {
            NodeError::NotLeader {
                leader_client_addr: Some(_),
                ..
            } => Code::FailedPrecondition,
            NodeError::NotLeader { .. } | NodeError::Unavailable(_) | NodeError::Stopped => {
                Code::Unavailable
            }
            NodeError::Overloaded(_) => Code::ResourceExhausted,
            NodeError::Timeout(_) => Code::DeadlineExceeded,
            NodeError::Command(e) => match e.code() {
                ErrorCode::InvalidArgument => Code::InvalidArgument,
                ErrorCode::Aborted => Code::Aborted,
            },
            NodeError::InvalidArgument(_) => Code::InvalidArgument,
            NodeError::Internal(_) => Code::Internal,
        }
    }

    /// The status a client receives, with the redirect metadata where it applies.
    pub fn to_status(&self) -> Status {
        match self {
            NodeError::NotLeader {
                leader_id,
                leader_client_addr: Some(addr),
            } => {
                let mut status = Status::failed_precondition(format!(
                    "not the leader; the leader is node {leader_id} at {addr}"
                ));
                if let Ok(value) = addr.parse() {
                    status.metadata_mut().insert(LEADER_METADATA_KEY, value);
                }
                status
            }
            NodeError::NotLeader { .. } => Status::unavailable("no leader is known; retry"),
            other => Status::new(other.code(), other.to_string()),
        }
    }
}

impl From<NodeError> for Status {
    fn from(e: NodeError) -> Self {
        e.to_status()
    }
}
