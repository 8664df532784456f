//! The snapshot work the loop waits on, as plain types: a local snapshot being written, a
//! received one being decoded, and a received one decoded and kept until the core installs it;
//! with the futures the loop's `select!` awaits them through.
//!
//! A leaf (it imports only the driver's error type), so that the driver's state (`state.rs`)
//! holds these without importing `snapshot`, the room that acts on them.

use raftkv_raft::Index;
use tokio::sync::oneshot;

use super::error::DriverError;
use crate::entry::SnapshotLoadError;
use crate::kv::KvStateMachine;
use crate::members::MemberBook;
use crate::storage::StagedSnapshot;

/// A local snapshot at `index`, written to a staged file by a blocking task while the loop goes
/// on (ticks, heartbeats, writes).
pub(super) struct SnapshotJob {
    pub(super) index: Index,
    pub(super) done: oneshot::Receiver<Result<StagedSnapshot, DriverError>>,
}

/// Waits for the background snapshot, if there is one (never resolves otherwise).
pub(super) async fn snapshot_written(
    job: &mut Option<SnapshotJob>,
) -> (Index, Result<StagedSnapshot, DriverError>) {
    match job {
        Some(job) => {
            let result = (&mut job.done)
                .await
                .unwrap_or(Err(DriverError::TaskStopped("snapshot writing")));
            (job.index, result)
        }
        None => std::future::pending().await,
    }
}

/// The state a received snapshot rebuilds: the address book and the state machine.
pub(super) type Restored = (MemberBook, KvStateMachine);

/// A snapshot received from the leader, with the state decoded from it.
pub(super) struct Received {
    pub(super) staged: StagedSnapshot,
    pub(super) restored: Restored,
}

/// A received snapshot being read, checked and decoded by a blocking task, with the message
/// that announced it (stepped into the core once the data is decoded).
pub(super) struct Decoding {
    pub(super) msg: raftkv_raft::Message,
    pub(super) staged: StagedSnapshot,
    pub(super) task: tokio::task::JoinHandle<Result<Restored, SnapshotLoadError>>,
}

/// Waits for the snapshot being decoded, if there is one (never resolves otherwise).
pub(super) async fn snapshot_decoded(job: &mut Option<Decoding>) -> Result<Restored, DriverError> {
    match job {
        Some(job) => (&mut job.task)
            .await
            .map_err(|_| DriverError::TaskStopped("snapshot decoding"))?
            .map_err(DriverError::from),
        None => std::future::pending().await,
    }
}
