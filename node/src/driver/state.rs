//! The driver's state: [`Driver`], the pieces it is built from ([`DriverParts`]), and
//! [`storage_call`], the one way the loop submits to the storage thread and waits.
//!
//! A room of its own so that the driver's module graph has no cycle: this file imports only leaf
//! types (`config`, `error`, `observed`, `pending`, `snapshot_jobs`); every room that acts on the
//! driver (`mod.rs`'s loop, `waiters`, `reads`, `snapshot`, `membership`, `status`) imports
//! `Driver` from here and `impl`s it.

use std::collections::BTreeMap;
#[cfg(feature = "planted-bugs")]
use std::time::Duration;
use std::time::Instant;

use raftkv_raft::{Index, NodeId, RawNode, ReadLease, Term};
use tokio::sync::{mpsc, oneshot, watch};

use super::config::DriverConfig;
use super::error::DriverError;
use super::observed::Observed;
use super::pending::{PendingRead, TransferWait, Waiter};
use super::snapshot_jobs::{Decoding, Received, SnapshotJob};
use crate::handle::DriverRequest;
use crate::kv::KvStateMachine;
use crate::members::{MemberAddrs, MemberBook};
use crate::metrics::Metrics;
#[cfg(feature = "planted-bugs")]
use crate::storage::WriteBatch;
use crate::storage::{Callback, SnapshotStore, StagedSnapshot, StorageError, StorageHandle};
use crate::transport::{Inbound, Transport};

/// The pieces a driver is made of; built by [`crate::node`].
pub(crate) struct DriverParts {
    pub id: NodeId,
    pub cluster_id: String,
    pub raw: RawNode,
    pub kv: KvStateMachine,
    pub book: MemberBook,
    pub advertise: MemberAddrs,
    pub requests: mpsc::Receiver<DriverRequest>,
    pub inbound: mpsc::Receiver<Inbound>,
    pub transport: Transport,
    pub storage: StorageHandle,
    pub snapshots: SnapshotStore,
    pub cfg: DriverConfig,
    pub observed: watch::Sender<Observed>,
    pub metrics: std::sync::Arc<Metrics>,
    pub guards: crate::transport::PeerGuards,
}

/// The event loop; see the module docs.
pub(crate) struct Driver {
    pub(super) id: NodeId,
    pub(super) cluster_id: String,
    pub(super) raw: RawNode,
    pub(super) kv: KvStateMachine,
    pub(super) book: MemberBook,
    pub(super) advertise: MemberAddrs,
    pub(super) requests: mpsc::Receiver<DriverRequest>,
    pub(super) inbound: mpsc::Receiver<Inbound>,
    pub(super) transport: Transport,
    pub(super) storage: StorageHandle,
    pub(super) snapshots: SnapshotStore,
    pub(super) cfg: DriverConfig,
    pub(super) observed: watch::Sender<Observed>,
    pub(super) metrics: std::sync::Arc<Metrics>,
    /// The lease guards peers reported (see [`DriverConfig::lease`]).
    pub(super) guards: crate::transport::PeerGuards,

    pub(super) proposals: BTreeMap<Index, (Term, Waiter)>,
    /// When each client write was proposed, for the proposal latency histogram.
    pub(super) proposed_at: BTreeMap<Index, Instant>,
    /// Planted bug `ack-before-fsync`: batches are written 200 ms after they were acknowledged.
    #[cfg(feature = "planted-bugs")]
    pub(super) write_behind: Option<mpsc::UnboundedSender<(Instant, WriteBatch)>>,
    pub(super) reads_by_ctx: BTreeMap<u64, PendingRead>,
    pub(super) reads_waiting_apply: Vec<(Index, PendingRead)>,
    pub(super) next_read_ctx: u64,
    pub(super) lease: ReadLease<Instant>,
    pub(super) transfers: Vec<TransferWait>,
    /// Snapshots received from a leader and decoded, by (index, term), until the core installs
    /// one.
    pub(super) received: BTreeMap<(Index, Term), Received>,
    /// A received snapshot being decoded on the blocking pool; the core hears of it only once
    /// it is decoded (see [`Driver::on_snapshot_received`]).
    pub(super) decoding: Option<Decoding>,
    /// The newest snapshot that arrived while another was being decoded: decoded next.
    pub(super) next_to_decode: Option<(raftkv_raft::Message, StagedSnapshot)>,
    /// The index of the last local snapshot (or the installed one).
    pub(super) snapshot_index: Index,
    /// Last time this node asked to publish its own addresses.
    pub(super) published_at: Option<Instant>,
    /// Whether this node has been in the configuration since it started (to tell "removed"
    /// from "not added yet").
    pub(super) was_member: bool,
    /// The channel used to publish this node's addresses, and the leader address it goes to.
    pub(super) publish_channel: Option<(String, tonic::transport::Channel)>,
    /// A snapshot being written in the background (see [`Driver::maybe_snapshot`]).
    pub(super) snapshot_job: Option<SnapshotJob>,
    /// The last message from a leader: its term, its id and when it arrived (see
    /// [`Driver::note_leader_message`]).
    pub(super) leader_heard: Option<(Term, NodeId, Instant)>,
}

impl Driver {
    pub(crate) fn new(p: DriverParts) -> Self {
        let snapshot_index = p.raw.snapshot_index();
        let mut driver = Self {
            id: p.id,
            cluster_id: p.cluster_id,
            raw: p.raw,
            kv: p.kv,
            book: p.book,
            advertise: p.advertise,
            requests: p.requests,
            inbound: p.inbound,
            transport: p.transport,
            storage: p.storage,
            snapshots: p.snapshots,
            cfg: p.cfg,
            observed: p.observed,
            metrics: p.metrics,
            guards: p.guards,
            proposals: BTreeMap::new(),
            proposed_at: BTreeMap::new(),
            #[cfg(feature = "planted-bugs")]
            write_behind: None,
            reads_by_ctx: BTreeMap::new(),
            reads_waiting_apply: Vec::new(),
            next_read_ctx: 1,
            lease: ReadLease::new(),
            transfers: Vec::new(),
            received: BTreeMap::new(),
            decoding: None,
            next_to_decode: None,
            snapshot_index,
            published_at: None,
            was_member: false,
            publish_channel: None,
            snapshot_job: None,
            leader_heard: None,
        };
        driver.plant_bugs();
        driver
    }

    /// Switches on the configured planted bug's hooks (feature `planted-bugs`).
    #[cfg(feature = "planted-bugs")]
    pub(super) fn plant_bugs(&mut self) {
        use crate::planted::PlantedBug;
        match self.cfg.planted_bug {
            Some(PlantedBug::SessionNoDedup) => self.kv.plant_no_dedup(),
            Some(PlantedBug::Core(raftkv_raft::planted::Bug::LeaseAfterTransfer)) => {
                self.lease.plant_lease_after_transfer();
            }
            Some(PlantedBug::AckBeforeFsync) if self.write_behind.is_none() => {
                let (tx, mut rx) = mpsc::unbounded_channel::<(Instant, WriteBatch)>();
                let storage = self.storage.clone();
                crate::task::spawn(async move {
                    while let Some((at, batch)) = rx.recv().await {
                        tokio::time::sleep_until((at + Duration::from_millis(200)).into()).await;
                        storage.submit(batch, |_| {});
                    }
                });
                self.write_behind = Some(tx);
            }
            _ => {}
        }
    }

    #[cfg(not(feature = "planted-bugs"))]
    pub(super) fn plant_bugs(&mut self) {}

    #[cfg(feature = "planted-bugs")]
    pub(super) fn bug(&self, bug: crate::planted::PlantedBug) -> bool {
        self.cfg.planted_bug == Some(bug)
    }
}

/// Starts one storage-thread operation with `start` (handed the completion callback) and waits
/// for it: the one place the loop submits to the storage thread and waits.
pub(super) async fn storage_call(start: impl FnOnce(Callback)) -> Result<(), DriverError> {
    let (tx, rx) = oneshot::channel();
    start(Box::new(move |r| {
        let _ = tx.send(r);
    }));
    rx.await.map_err(|_| StorageError::Stopped)??;
    Ok(())
}
