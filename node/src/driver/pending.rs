//! Who waits for the loop, as plain types: a proposed entry's waiter, a leader transfer, a read,
//! and why waiters fail in bulk; and how one waiter is answered with an error.
//!
//! A leaf: it imports nothing from the driver, so that the driver's state (`state.rs`) and every
//! room that acts on these waiters (`waiters`, `reads`, `snapshot`) can name them without
//! importing one another. The rules for when each fails are in `waiters`.

use std::time::Instant;

use raftkv_raft::NodeId;
use tokio::sync::oneshot;
use tracing::error;

use crate::error::NodeError;
use crate::handle::{MemberStatus, ReadQuery, ReadResult};
use crate::kv::WriteResponse;

pub(super) type WriteReply = oneshot::Sender<Result<WriteResponse, NodeError>>;
pub(super) type MembersReply = oneshot::Sender<Result<Vec<MemberStatus>, NodeError>>;

/// Who waits for a proposed entry to be applied.
pub(super) enum Waiter {
    Write(WriteReply),
    Members(MembersReply),
    /// An entry the node proposed for itself (address publication).
    Internal,
}

/// A leader transfer this node started, answered once the target leads or the deadline passed.
pub(super) struct TransferWait {
    pub(super) target: NodeId,
    pub(super) deadline: Instant,
    pub(super) reply: oneshot::Sender<Result<NodeId, NodeError>>,
}

/// Why waiters fail in bulk (see `Driver::fail_all` in `waiters`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Failure {
    /// This node is no longer leader: writes and reads fail, leader transfers go on.
    LeadershipLost,
    /// The loop stops: everyone fails.
    Stopping,
}

/// A read waiting for its read index, then for that index to be applied.
pub(super) struct PendingRead {
    pub(super) query: ReadQuery,
    pub(super) reply: oneshot::Sender<Result<ReadResult, NodeError>>,
}

/// The error of a write whose index another leader's entry took.
pub(super) fn lost_write() -> NodeError {
    NodeError::Unavailable(
        "the write was superseded by another leader's entry; retry with the same seq".into(),
    )
}

/// Answers `w` with `err` (an internal proposal has no one to answer: it is logged).
pub(super) fn reply_err(w: Waiter, err: NodeError) {
    match w {
        Waiter::Write(r) => {
            let _ = r.send(Err(err));
        }
        Waiter::Members(r) => {
            let _ = r.send(Err(err));
        }
        Waiter::Internal => {
            if !matches!(err, NodeError::Unavailable(_) | NodeError::Stopped) {
                error!(error = %err, "internal proposal failed");
            }
        }
    }
}
