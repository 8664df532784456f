//! The event loop of a node: it owns the Raft core and the KV state machine, feeds the core
//! ticks, peer messages and client requests, and carries out each `Ready`.
//!
//! One task, no locks. Between two `Ready`s the loop takes whatever has arrived (ticks, peer
//! messages, client requests); then it hands the `Ready`'s writes to the storage thread and awaits
//! the fsync. Messages that queue up meanwhile form the next batch — that is the group commit,
//! with no timer involved. The loop never holds anything across an await but its own state, and
//! never waits on the network: outbound messages go into per-peer queues (`transport`).
//!
//! Snapshots. A local snapshot is taken from a frozen view of the state machine
//! ([`KvStateMachine::freeze`]: O(1) for the keys, later writes go to an overlay until the view
//! is dropped; see `kv/data.rs`) and encoded, written and fsynced by a blocking task while the
//! loop goes on; when it is done the loop installs it and compacts the log (unless a newer
//! snapshot from the leader was installed meanwhile). Compaction keeps a trailing log of
//! [`DriverConfig::snapshot_trailing_entries`] entries below the snapshot in the core (and the
//! WAL segments that hold them), so that a follower a little behind is sent entries rather than
//! the whole snapshot. A snapshot received from the leader is read, checked and decoded on the
//! blocking pool *before its message is stepped into the core*, so the loop goes on ticking and
//! answering the leader while a large snapshot decodes, and installing it cannot fail once it
//! replaced the log on disk. Followers measure the longest silence of their
//! leader (`raftkv_leader_silence_max_seconds`); `node/tests/snapshot_200mb.rs` loads 200 MB,
//! checks that no election happens while snapshots are taken and installed, and prints those
//! gaps. The loop still awaits, inline, each storage batch's fsync (under disk contention the
//! 200 MB test saw batches over 0.5 s, and gaps of seconds): a follower stalled this way does
//! not tick either, so it does not call an election, but it does not answer its leader meanwhile.
//!
//! Waiters. A write's reply waits under the entry's (index, term). When the entry at that index is
//! applied with another term, the write was lost (UNAVAILABLE; the client retries with the same
//! seq). When this node stops being leader, every waiter fails the same way, since its entry may
//! never commit.
//!
//! Reads. LINEARIZABLE reads go through ReadIndex; the core batches them into one heartbeat
//! round. LEASE reads skip the round while the leader holds a lease, decided by the core crate's
//! [`ReadLease`] (the same code the simulation checks): the lease starts when a heartbeat round
//! was *sent* (noted just before sending) and is extended when that round is acknowledged by a
//! quorum; it lasts [`DriverConfig::lease`], which is shorter than the time a follower that
//! acknowledged the round refuses to vote for anyone else, minus a drift margin. It is checked
//! against the monotonic clock when the read is served, so a leader that was paused (SIGSTOP)
//! finds its lease expired on waking. It is paused while a leader transfer runs and ends for the
//! rest of the term once `TimeoutNow` was sent.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use bytes::Bytes;
use raftkv_raft::{
    ConfChange, ConfChangeType, Entry, EntryPayload, Error as RaftError, Index, NO_NODE, NodeId,
    RawNode, ReadLease, Ready, Role, SnapshotMeta, Term,
};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::MissedTickBehavior;
use tracing::{debug, error, info, warn};

use crate::entry::{EntryKind, snapshot_header};
use crate::error::NodeError;
use crate::handle::{
    Consistency, MemberState, MemberStatus, NodeStatus, ReadQuery, ReadResult, Request,
};
use crate::kv::{KvStateMachine, WriteResponse};
use crate::members::{MemberAddrs, MemberBook, added_learner, encode_context};
use crate::metrics::Metrics;
use crate::storage::{Callback, SnapshotStore, StagedSnapshot, StorageHandle, WriteBatch};
use crate::transport::{Inbound, Transport};

/// Most queued events handled before the next `Ready`: bounds the latency of one loop turn.
const MAX_EVENTS_PER_TURN: usize = 1024;

/// Tunables of the loop.
#[derive(Clone, Debug)]
pub struct DriverConfig {
    /// How long one Raft tick is.
    pub tick: Duration,
    /// The core's minimum election timeout, in ticks.
    pub election_ticks: u64,
    /// Take a snapshot (and compact the log) after this many applied entries.
    pub snapshot_entries: u64,
    /// Entries kept in the log below each local snapshot (the trailing log), so that a follower
    /// behind by fewer is sent entries, not the snapshot; 0 compacts to the snapshot.
    pub snapshot_trailing_entries: u64,
    /// Most writes and reads waiting at once before new ones are refused as overloaded.
    pub max_pending: usize,
    /// A deliberate bug to switch on (see [`crate::planted`]).
    #[cfg(feature = "planted-bugs")]
    pub planted_bug: Option<crate::planted::PlantedBug>,
    /// Test hook (feature `planted-bugs`): a node with state on disk holds start-up this long
    /// after its ports opened, as if loading a large snapshot took that long.
    #[cfg(feature = "planted-bugs")]
    pub slow_start: Option<Duration>,
}

impl DriverConfig {
    /// How long this node refuses (pre-)votes after it heard from a leader, by its own clock:
    /// it refuses until `election_ticks` of its ticks have passed, and its first tick may come
    /// right after the message, so at least `election_ticks - 1` ticks. Reported to leaders in
    /// every response (`RaftResponse.lease_guard_ms`).
    pub fn lease_guard(&self) -> Duration {
        self.tick * self.election_ticks.saturating_sub(1) as u32
    }

    /// How long a lease read may rely on a quorum's acknowledgement of a heartbeat round, given
    /// the shortest guard among the voters that answered this leader (`None`: none reported).
    /// Every voter in the acknowledging quorum has reported its guard with that very answer, so
    /// the shortest reported guard bounds them all, whatever timing flags each member runs
    /// with. One of this node's ticks and 10% are the margin for clock drift and scheduling.
    pub fn lease(&self, shortest_peer_guard: Option<Duration>) -> Duration {
        let guard = shortest_peer_guard.map_or(self.lease_guard(), |g| g.min(self.lease_guard()));
        guard.saturating_sub(self.tick).mul_f64(0.9)
    }
}

impl Default for DriverConfig {
    fn default() -> Self {
        Self {
            tick: Duration::from_millis(100),
            election_ticks: 10,
            snapshot_entries: 10_000,
            snapshot_trailing_entries: 5_000,
            max_pending: 10_000,
            #[cfg(feature = "planted-bugs")]
            planted_bug: None,
            #[cfg(feature = "planted-bugs")]
            slow_start: None,
        }
    }
}

type WriteReply = oneshot::Sender<Result<WriteResponse, NodeError>>;
type MembersReply = oneshot::Sender<Result<Vec<MemberStatus>, NodeError>>;

enum Waiter {
    Write(WriteReply),
    Members(MembersReply),
    /// An entry the node proposed for itself (address publication).
    Internal,
}

struct PendingRead {
    query: ReadQuery,
    reply: oneshot::Sender<Result<ReadResult, NodeError>>,
}

struct TransferWait {
    target: NodeId,
    deadline: Instant,
    reply: oneshot::Sender<Result<NodeId, NodeError>>,
}

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

/// The pieces a driver is made of; built by [`crate::node`].
pub(crate) struct DriverParts {
    pub id: NodeId,
    pub cluster_id: String,
    pub raw: RawNode,
    pub kv: KvStateMachine,
    pub book: MemberBook,
    pub advertise: MemberAddrs,
    pub requests: mpsc::Receiver<Request>,
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
    id: NodeId,
    cluster_id: String,
    raw: RawNode,
    kv: KvStateMachine,
    book: MemberBook,
    advertise: MemberAddrs,
    requests: mpsc::Receiver<Request>,
    inbound: mpsc::Receiver<Inbound>,
    transport: Transport,
    storage: StorageHandle,
    snapshots: SnapshotStore,
    cfg: DriverConfig,
    observed: watch::Sender<Observed>,
    metrics: std::sync::Arc<Metrics>,
    /// The lease guards peers reported (see [`DriverConfig::lease`]).
    guards: crate::transport::PeerGuards,

    proposals: BTreeMap<Index, (Term, Waiter)>,
    /// When each client write was proposed, for the proposal latency histogram.
    proposed_at: BTreeMap<Index, Instant>,
    /// Planted bug `ack-before-fsync`: batches are written 200 ms after they were acknowledged.
    #[cfg(feature = "planted-bugs")]
    write_behind: Option<mpsc::UnboundedSender<(Instant, WriteBatch)>>,
    reads_by_ctx: BTreeMap<u64, PendingRead>,
    reads_waiting_apply: Vec<(Index, PendingRead)>,
    next_read_ctx: u64,
    lease: ReadLease<Instant>,
    transfers: Vec<TransferWait>,
    /// Snapshots received from a leader and decoded, by (index, term), until the core installs
    /// one.
    received: BTreeMap<(Index, Term), Received>,
    /// A received snapshot being decoded on the blocking pool; the core hears of it only once
    /// it is decoded (see [`Driver::on_snapshot_received`]).
    decoding: Option<Decoding>,
    /// The newest snapshot that arrived while another was being decoded: decoded next.
    next_to_decode: Option<(raftkv_raft::Message, StagedSnapshot)>,
    /// The index of the last local snapshot (or the installed one).
    snapshot_index: Index,
    /// Last time this node asked to publish its own addresses.
    published_at: Option<Instant>,
    /// Whether this node has been in the configuration since it started (to tell "removed"
    /// from "not added yet").
    was_member: bool,
    /// The channel used to publish this node's addresses, and the leader address it goes to.
    publish_channel: Option<(String, tonic::transport::Channel)>,
    /// A snapshot being written in the background (see [`Driver::maybe_snapshot`]).
    snapshot_job: Option<SnapshotJob>,
    /// The last message from a leader: its term, its id and when it arrived (see
    /// [`Driver::note_leader_message`]).
    leader_heard: Option<(Term, NodeId, Instant)>,
}

/// A local snapshot at `index`, written to a staged file by a blocking task while the loop goes
/// on (ticks, heartbeats, writes).
struct SnapshotJob {
    index: Index,
    done: oneshot::Receiver<Result<StagedSnapshot, String>>,
}

/// Waits for the background snapshot, if there is one (never resolves otherwise).
async fn snapshot_written(
    job: &mut Option<SnapshotJob>,
) -> (Index, Result<StagedSnapshot, String>) {
    match job {
        Some(job) => {
            let result = (&mut job.done)
                .await
                .unwrap_or_else(|_| Err("the snapshot task stopped".into()));
            (job.index, result)
        }
        None => std::future::pending().await,
    }
}

/// The state a received snapshot rebuilds: the address book and the state machine.
type Restored = (MemberBook, KvStateMachine);

/// A snapshot received from the leader, with the state decoded from it.
struct Received {
    staged: StagedSnapshot,
    restored: Restored,
}

/// A received snapshot being read, checked and decoded by a blocking task, with the message
/// that announced it (stepped into the core once the data is decoded).
struct Decoding {
    msg: raftkv_raft::Message,
    staged: StagedSnapshot,
    task: tokio::task::JoinHandle<Result<Restored, crate::entry::SnapshotLoadError>>,
}

/// Waits for the snapshot being decoded, if there is one (never resolves otherwise).
async fn snapshot_decoded(job: &mut Option<Decoding>) -> Result<Restored, String> {
    match job {
        Some(job) => match (&mut job.task).await {
            Ok(decoded) => decoded.map_err(|e| e.to_string()),
            Err(e) => Err(format!("the decoding task stopped: {e}")),
        },
        None => std::future::pending().await,
    }
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
    fn plant_bugs(&mut self) {
        use crate::planted::PlantedBug;
        match self.cfg.planted_bug {
            Some(PlantedBug::SessionNoDedup) => self.kv.plant_no_dedup(),
            Some(PlantedBug::Core(raftkv_raft::planted::Bug::LeaseAfterTransfer)) => {
                self.lease.plant_lease_after_transfer();
            }
            Some(PlantedBug::AckBeforeFsync) if self.write_behind.is_none() => {
                let (tx, mut rx) = mpsc::unbounded_channel::<(Instant, WriteBatch)>();
                let storage = self.storage.clone();
                crate::spawn(async move {
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
    fn plant_bugs(&mut self) {}

    #[cfg(feature = "planted-bugs")]
    fn bug(&self, bug: crate::planted::PlantedBug) -> bool {
        self.cfg.planted_bug == Some(bug)
    }

    /// Runs until `shutdown` turns true or storage fails.
    pub(crate) async fn run(
        mut self,
        mut shutdown: watch::Receiver<bool>,
    ) -> Result<(), NodeError> {
        self.sync_transport_peers();
        let mut ticker = tokio::time::interval(self.cfg.tick);
        // After a stall, do not fire a burst of ticks: a burst would make election timers run
        // faster than real time, and lease reads rely on them running no faster.
        ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                changed = shutdown.changed() => {
                    if changed.is_err() || *shutdown.borrow() {
                        break;
                    }
                }
                _ = ticker.tick() => self.on_tick(),
                Some(inb) = self.inbound.recv() => {
                    self.on_inbound(inb);
                    for _ in 0..MAX_EVENTS_PER_TURN {
                        match self.inbound.try_recv() {
                            Ok(inb) => self.on_inbound(inb),
                            Err(_) => break,
                        }
                    }
                }
                (index, written) = snapshot_written(&mut self.snapshot_job) => {
                    self.snapshot_job = None;
                    self.finish_snapshot(index, written).await?;
                }
                decoded = snapshot_decoded(&mut self.decoding) => {
                    if let Some(job) = self.decoding.take() {
                        self.on_snapshot_decoded(job, decoded);
                    }
                }
                Some(req) = self.requests.recv() => {
                    self.on_request(req);
                    for _ in 0..MAX_EVENTS_PER_TURN {
                        match self.requests.try_recv() {
                            Ok(req) => self.on_request(req),
                            Err(_) => break,
                        }
                    }
                }
            }
            self.drain_ready().await?;
        }
        self.fail_all(|| NodeError::Stopped);
        Ok(())
    }

    // ----- events ---------------------------------------------------------------------------

    fn on_tick(&mut self) {
        self.raw.tick();
        let now = Instant::now();
        let mut i = 0;
        while i < self.transfers.len() {
            if self.transfers[i].deadline <= now {
                let t = self.transfers.swap_remove(i);
                let _ = t.reply.send(Err(NodeError::Unavailable(format!(
                    "leadership did not move to node {} in time",
                    t.target
                ))));
            } else {
                i += 1;
            }
        }
        self.maybe_publish_self(now);
    }

    fn on_inbound(&mut self, inb: Inbound) {
        match inb {
            Inbound::Message(m) => {
                self.note_leader_message(&m);
                self.raw.step(m)
            }
            Inbound::Snapshot { msg, data } => {
                self.note_leader_message(&msg);
                let meta = data.meta().clone();
                let announced = match &msg.body {
                    raftkv_raft::MessageBody::InstallSnapshot { meta } => Some(meta),
                    _ => None,
                };
                if announced != Some(&meta) {
                    warn!(
                        from = msg.from,
                        index = meta.index,
                        "a snapshot stream whose data does not match its message; dropped"
                    );
                    return;
                }
                self.on_snapshot_received(msg, data);
            }
            Inbound::Unreachable(peer) => self.raw.report_unreachable(peer),
            Inbound::SnapshotStatus { peer, ok } => self.raw.report_snapshot(peer, ok),
        }
    }

    /// Measures leader silence as a follower sees it: the time between two consecutive messages
    /// from the same leader in the same term (appends, heartbeats, snapshots), which is what the
    /// election timer races against. A stall of this loop counts too, as it should: a follower
    /// whose loop stalls misses heartbeats just the same.
    fn note_leader_message(&mut self, m: &raftkv_raft::Message) {
        use raftkv_raft::MessageBody::{AppendEntries, Heartbeat, InstallSnapshot};
        if !matches!(
            m.body,
            AppendEntries { .. } | Heartbeat { .. } | InstallSnapshot { .. }
        ) || m.term < self.raw.term()
        {
            return;
        }
        let now = Instant::now();
        if let Some((term, leader, at)) = self.leader_heard
            && (term, leader) == (m.term, m.from)
        {
            self.metrics.leader_silence(now.duration_since(at));
        }
        self.leader_heard = Some((m.term, m.from, now));
    }

    fn on_request(&mut self, req: Request) {
        match req {
            Request::Propose { cmd, reply } => {
                self.propose(EntryKind::Command(cmd), Waiter::Write(reply));
            }
            Request::Read {
                query,
                consistency,
                reply,
            } => self.on_read(PendingRead { query, reply }, consistency),
            Request::Status { reply } => {
                let _ = reply.send(self.status());
            }
            Request::AddMember {
                id,
                peer_addr,
                client_addr,
                reply,
            } => self.on_add_member(id, peer_addr, client_addr, reply),
            Request::RemoveMember { id, reply } => {
                let cc = ConfChange {
                    change_type: ConfChangeType::RemoveNode,
                    node_id: id,
                    context: Bytes::new(),
                };
                match self.raw.propose_conf_change(cc) {
                    Ok(index) => {
                        let term = self.raw.term();
                        self.proposals.insert(index, (term, Waiter::Members(reply)));
                    }
                    Err(e) => {
                        let _ = reply.send(Err(self.raft_error(e)));
                    }
                }
            }
            Request::TransferLeader { id, reply } => match self.raw.transfer_leader(id) {
                Ok(target) if target == self.id => {
                    let _ = reply.send(Ok(self.id));
                }
                Ok(target) => {
                    // The core refuses lease reads while the transfer runs (`ReadLease`).
                    let deadline =
                        Instant::now() + self.cfg.tick * (2 * self.cfg.election_ticks) as u32;
                    self.transfers.push(TransferWait {
                        target,
                        deadline,
                        reply,
                    });
                }
                Err(e) => {
                    let _ = reply.send(Err(self.raft_error(e)));
                }
            },
        }
    }

    fn on_add_member(&mut self, id: NodeId, peer: String, client: String, reply: MembersReply) {
        let addrs = MemberAddrs { peer, client };
        if self.raw.conf_state().contains(id) {
            // Already a member: this publishes (or changes) its addresses, like etcd's member
            // update. Members publish themselves this way when they start.
            if self.book.get(&id) == Some(&addrs) {
                let _ = reply.send(Ok(self.members()));
                return;
            }
            self.propose(
                EntryKind::MemberUpdate { id, addrs },
                Waiter::Members(reply),
            );
            return;
        }
        let cc = ConfChange {
            change_type: ConfChangeType::AddLearner,
            node_id: id,
            context: encode_context(&addrs),
        };
        match self.raw.propose_conf_change(cc) {
            Ok(index) => {
                // The leader starts replicating to the learner right away: it needs the address now.
                self.book.insert(id, addrs);
                self.sync_transport_peers();
                let term = self.raw.term();
                self.proposals.insert(index, (term, Waiter::Members(reply)));
            }
            Err(e) => {
                let _ = reply.send(Err(self.raft_error(e)));
            }
        }
    }

    fn propose(&mut self, kind: EntryKind, waiter: Waiter) {
        if self.proposals.len() >= self.cfg.max_pending {
            reply_err(
                waiter,
                NodeError::Overloaded("too many writes in flight".into()),
            );
            return;
        }
        match self.raw.propose(kind.encode()) {
            Ok(index) => {
                let term = self.raw.term();
                if matches!(waiter, Waiter::Write(_)) {
                    self.proposed_at.insert(index, Instant::now());
                }
                self.proposals.insert(index, (term, waiter));
            }
            Err(e) => {
                let err = self.raft_error(e);
                reply_err(waiter, err);
            }
        }
    }

    fn on_read(&mut self, read: PendingRead, consistency: Consistency) {
        if self.reads_by_ctx.len() + self.reads_waiting_apply.len() >= self.cfg.max_pending {
            let _ = read.reply.send(Err(NodeError::Overloaded(
                "too many reads in flight".into(),
            )));
            return;
        }
        #[cfg(feature = "planted-bugs")]
        if self.bug(crate::planted::PlantedBug::StaleRead) && self.raw.role() == Role::Leader {
            let result = self.execute(&read.query);
            let _ = read.reply.send(Ok(result));
            return;
        }
        match consistency {
            Consistency::Stale => {
                let result = self.execute(&read.query);
                let _ = read.reply.send(Ok(result));
            }
            Consistency::Lease if self.lease_valid(Instant::now()) => {
                let index = self.raw.commit_index();
                self.reads_waiting_apply.push((index, read));
                self.serve_applied_reads();
            }
            // Without a valid lease a LEASE read falls back to ReadIndex.
            Consistency::Lease | Consistency::Linearizable => {
                let ctx = self.next_read_ctx;
                self.next_read_ctx += 1;
                match self.raw.read_index(ctx) {
                    Ok(()) => {
                        self.reads_by_ctx.insert(ctx, read);
                    }
                    Err(e) => {
                        let _ = read.reply.send(Err(self.raft_error(e)));
                    }
                }
            }
        }
    }

    fn lease_valid(&self, now: Instant) -> bool {
        self.lease.is_valid(&self.raw, now)
    }

    fn execute(&self, q: &ReadQuery) -> ReadResult {
        match q {
            ReadQuery::Get { key } => ReadResult::Get(self.kv.get(key)),
            ReadQuery::Scan { start, end, limit } => {
                ReadResult::Scan(self.kv.scan(start, end, *limit))
            }
        }
    }

    fn serve_applied_reads(&mut self) {
        let applied = self.kv.applied_index();
        let mut i = 0;
        while i < self.reads_waiting_apply.len() {
            if self.reads_waiting_apply[i].0 <= applied {
                let (_, read) = self.reads_waiting_apply.swap_remove(i);
                let result = self.execute(&read.query);
                let _ = read.reply.send(Ok(result));
            } else {
                i += 1;
            }
        }
    }

    /// Members publish their own addresses so that clients can be redirected to whoever leads.
    fn maybe_publish_self(&mut self, now: Instant) {
        if self.book.get(&self.id) == Some(&self.advertise)
            || !self.raw.conf_state().contains(self.id)
        {
            return;
        }
        if self
            .published_at
            .is_some_and(|t| now.duration_since(t) < self.cfg.tick * self.cfg.election_ticks as u32)
        {
            return;
        }
        if self.raw.role() == Role::Leader && self.raw.has_committed_in_term() {
            self.published_at = Some(now);
            let kind = EntryKind::MemberUpdate {
                id: self.id,
                addrs: self.advertise.clone(),
            };
            self.propose(kind, Waiter::Internal);
        } else if self.raw.leader_id() != NO_NODE {
            // A follower asks the leader to publish it, over the leader's peer port.
            let Some(leader_peer) = self.book.get(&self.raw.leader_id()).map(|a| a.peer.clone())
            else {
                return;
            };
            self.published_at = Some(now);
            let (id, addrs) = (self.id, self.advertise.clone());
            // One lazily connected channel per leader address, reused for every attempt (a
            // channel reconnects by itself; a new connection per call would cost a handshake).
            let channel = match &self.publish_channel {
                Some((addr, channel)) if *addr == leader_peer => channel.clone(),
                _ => match publish_channel(&leader_peer) {
                    Ok(channel) => {
                        self.publish_channel = Some((leader_peer.clone(), channel.clone()));
                        channel
                    }
                    Err(e) => {
                        debug!(error = %e, leader = %leader_peer, "bad leader peer address");
                        return;
                    }
                },
            };
            crate::spawn(async move {
                if let Err(e) = publish_via(channel, id, addrs).await {
                    debug!(error = %e, "publishing own addresses failed; will retry");
                }
            });
        }
    }

    // ----- Ready ----------------------------------------------------------------------------

    async fn drain_ready(&mut self) -> Result<(), NodeError> {
        while self.raw.has_ready() {
            let mut rd = self.raw.ready();
            self.handle_ready(&mut rd).await?;
            self.raw.advance(&rd);
            self.maybe_snapshot()?;
        }
        self.publish_observed();
        Ok(())
    }

    /// Carries out `rd`. Its messages are moved out (`advance` does not look at them).
    async fn handle_ready(&mut self, rd: &mut Ready) -> Result<(), NodeError> {
        // 1. Messages that need nothing durable go out now, in parallel with our own fsync. A
        //    lease is timed from just before its heartbeats leave.
        let voters = self.raw.conf_state().voters.iter().copied();
        let lease = self.cfg.lease(self.guards.shortest(voters));
        self.metrics
            .set_read_lease(if self.raw.role() == Role::Leader {
                lease
            } else {
                Duration::ZERO
            });
        self.lease
            .on_ready(self.raw.term(), rd, Instant::now(), |sent| sent + lease);
        for m in std::mem::take(&mut rd.messages) {
            self.transport.send(m);
        }
        // Learn member addresses from configuration entries as soon as they are in the log.
        for e in &rd.entries {
            self.learn_addresses(e);
        }

        // 2. Persist snapshot, entries and hard state with one fsync on the storage thread.
        // A received snapshot was decoded before the core heard of it, so restoring cannot fail
        // after it replaced our log on disk, and this loop does not wait for the decoding.
        let (staged, restore_from) = match &rd.snapshot {
            Some(meta) => {
                let r = self.take_received(meta)?;
                (Some(r.staged), Some(r.restored))
            }
            None => (None, None),
        };
        let batch = WriteBatch {
            snapshot: staged,
            entries: rd.entries.clone(),
            hard_state: rd.hard_state,
        };
        #[cfg(feature = "planted-bugs")]
        let batch = match &self.write_behind {
            Some(tx) if !batch.is_empty() => {
                let _ = tx.send((Instant::now(), batch));
                WriteBatch::default()
            }
            _ => batch,
        };
        if !batch.is_empty() {
            let started = Instant::now();
            let done = storage_call("storage", |cb| self.storage.submit(batch, cb)).await;
            self.metrics.fsync_duration.observe(started.elapsed());
            done?;
        }
        if let (Some(meta), Some(loaded)) = (&rd.snapshot, restore_from) {
            self.restore_snapshot(meta, loaded);
        }

        // 3. Promises that depend on durable state.
        for m in std::mem::take(&mut rd.persisted_messages) {
            self.transport.send(m);
        }

        // 4. Apply, then serve what waited for it.
        for e in &rd.committed_entries {
            self.apply(e)?;
        }
        for rs in &rd.read_states {
            if let Some(read) = self.reads_by_ctx.remove(&rs.ctx) {
                self.reads_waiting_apply.push((rs.index, read));
            }
        }
        self.serve_applied_reads();
        if let Some(ss) = rd.soft_state {
            self.on_soft_state(ss.role, ss.leader_id);
        }
        Ok(())
    }

    fn take_received(&mut self, meta: &SnapshotMeta) -> Result<Received, NodeError> {
        self.received
            .remove(&(meta.index, meta.term))
            .ok_or_else(|| {
                NodeError::Internal(format!(
                    "the core installs snapshot {}@{} but its data was not received",
                    meta.index, meta.term
                ))
            })
    }

    /// A snapshot stream from the leader arrived complete. It is decoded on the blocking pool
    /// (read, checksum, the address book, the state machine rebuilt) before its message is
    /// stepped into the core: decoding a large snapshot takes seconds, and this loop must go on
    /// ticking and answering the leader meanwhile. A stream from a stale leader is dropped (the
    /// core answers its heartbeats with our term anyway); one that arrives while another is
    /// decoded waits, and only the newest such waits.
    fn on_snapshot_received(&mut self, msg: raftkv_raft::Message, data: StagedSnapshot) {
        if msg.term < self.raw.term() {
            return;
        }
        let index = data.meta().index;
        if let Some(job) = &self.decoding {
            // A leader whose probe this follower rejected while decoding sends the snapshot
            // again: the same one (or an older one) is not decoded twice.
            let newer = job.staged.meta().index < index
                && self
                    .next_to_decode
                    .as_ref()
                    .is_none_or(|(_, queued)| queued.meta().index < index);
            if newer {
                self.next_to_decode = Some((msg, data));
            }
            return;
        }
        let reader = match data.open_reader() {
            Ok(r) => r,
            Err(e) => {
                warn!(index, error = %e, "cannot read a received snapshot; dropped");
                return;
            }
        };
        let task = tokio::task::spawn_blocking(move || crate::entry::load_snapshot(reader));
        self.decoding = Some(Decoding {
            msg,
            staged: data,
            task,
        });
    }

    /// A received snapshot is decoded: the core hears of it now, and it is kept for the `Ready`
    /// that installs it. A snapshot that does not decode is dropped; the leader sends it again
    /// when the follower's next answer shows it still lacks the entries.
    fn on_snapshot_decoded(&mut self, job: Decoding, decoded: Result<Restored, String>) {
        let Decoding { msg, staged, .. } = job;
        match decoded {
            Ok(restored) => {
                let current_term = msg.term >= self.raw.term();
                self.raw.step(msg);
                let wanted = self.raw.pending_snapshot().map(|m| (m.index, m.term));
                let received = Received { staged, restored };
                keep_received(&mut self.received, current_term.then_some(received), wanted);
            }
            Err(e) => warn!(
                index = staged.meta().index,
                error = %e,
                "a received snapshot does not decode; dropped"
            ),
        }
        if let Some((msg, data)) = self.next_to_decode.take() {
            self.on_snapshot_received(msg, data);
        }
    }

    fn restore_snapshot(&mut self, meta: &SnapshotMeta, (book, kv): Restored) {
        self.kv = kv;
        self.plant_bugs();
        self.book.extend(book);
        self.snapshot_index = meta.index;
        self.sync_transport_peers();
        // Waiters for entries the snapshot replaced can no longer be answered from the log.
        let covered: Vec<Index> = self
            .proposals
            .range(..=meta.index)
            .map(|(i, _)| *i)
            .collect();
        for index in covered {
            if let Some((_, w)) = self.proposals.remove(&index) {
                reply_err(w, lost_write());
            }
        }
        self.metrics.snapshot_installed();
        info!(
            index = meta.index,
            term = meta.term,
            "installed snapshot from the leader"
        );
    }

    fn apply(&mut self, e: &Entry) -> Result<(), NodeError> {
        let proposed_at = self.proposed_at.remove(&e.index);
        let waiter = match self.proposals.remove(&e.index) {
            Some((term, w)) if term == e.term => Some(w),
            Some((_, w)) => {
                // Another leader's entry took this index: ours is gone for good.
                reply_err(w, lost_write());
                None
            }
            None => None,
        };
        match &e.payload {
            EntryPayload::Normal(data) => {
                let kind = EntryKind::decode(data).map_err(|err| {
                    // A committed entry every replica must apply identically: skipping it would
                    // diverge from the others, so stop instead.
                    NodeError::Internal(format!(
                        "committed entry {} does not decode: {err}",
                        e.index
                    ))
                })?;
                match kind {
                    EntryKind::Command(cmd) => {
                        let result = self
                            .kv
                            .apply(e.index, &cmd)
                            .map_err(|err| NodeError::Internal(err.to_string()))?;
                        if let Some(Waiter::Write(reply)) = waiter {
                            if let Some(at) = proposed_at {
                                self.metrics.proposal_duration.observe(at.elapsed());
                            }
                            let _ = reply.send(result.map_err(NodeError::Command));
                        }
                    }
                    EntryKind::MemberUpdate { id, addrs } => {
                        self.kv_noop(e.index)?;
                        if self.raw.conf_state().contains(id) {
                            self.book.insert(id, addrs);
                            self.sync_transport_peers();
                        }
                        if let Some(Waiter::Members(reply)) = waiter {
                            let _ = reply.send(Ok(self.members()));
                        }
                    }
                }
            }
            EntryPayload::Noop => self.kv_noop(e.index)?,
            EntryPayload::Config { change, .. } => {
                self.kv_noop(e.index)?;
                if let Some(cc) = change {
                    info!(index = e.index, change = ?cc.change_type, node = cc.node_id, "membership change applied");
                    if cc.change_type == ConfChangeType::RemoveNode && cc.node_id != self.id {
                        // A removed member gets no more messages, and its address is forgotten
                        // (on every replica alike: the book travels in snapshots). Re-adding it
                        // brings its addresses back with the AddLearner entry.
                        self.book.remove(&cc.node_id);
                        self.transport.remove_peer(cc.node_id);
                    }
                }
                self.sync_transport_peers();
                if let Some(Waiter::Members(reply)) = waiter {
                    let _ = reply.send(Ok(self.members()));
                }
            }
        }
        Ok(())
    }

    fn kv_noop(&mut self, index: Index) -> Result<(), NodeError> {
        self.kv
            .apply_noop(index)
            .map_err(|err| NodeError::Internal(err.to_string()))
    }

    fn learn_addresses(&mut self, e: &Entry) {
        match added_learner(e) {
            Some((id, Ok(addrs))) => {
                self.book.insert(id, addrs);
            }
            Some((id, Err(err))) => {
                warn!(node = id, error = %err, "membership change without addresses")
            }
            None => {}
        }
    }

    fn on_soft_state(&mut self, role: Role, leader_id: NodeId) {
        info!(
            ?role,
            leader = leader_id,
            term = self.raw.term(),
            "role change"
        );
        if role != Role::Leader {
            let leader = self.leader_error();
            self.proposed_at.clear();
            for (_, (_, w)) in std::mem::take(&mut self.proposals) {
                reply_err(
                    w,
                    NodeError::Unavailable(
                        "leadership lost before the write committed; retry with the same seq"
                            .into(),
                    ),
                );
            }
            for (_, read) in std::mem::take(&mut self.reads_by_ctx) {
                let _ = read.reply.send(Err(leader.clone()));
            }
            for (_, read) in std::mem::take(&mut self.reads_waiting_apply) {
                let _ = read.reply.send(Err(leader.clone()));
            }
        }
        let mut i = 0;
        while i < self.transfers.len() {
            if leader_id == self.transfers[i].target {
                let t = self.transfers.swap_remove(i);
                let _ = t.reply.send(Ok(leader_id));
            } else {
                i += 1;
            }
        }
        self.published_at = None;
    }

    // ----- snapshots ------------------------------------------------------------------------

    /// Starts a local snapshot once `snapshot_entries` entries were applied since the last one.
    ///
    /// The state at this point is frozen (O(1): no copy of the map) and a blocking task encodes
    /// and writes it, fsyncs the file and hands it back through [`SnapshotJob`]; meanwhile the
    /// loop keeps ticking, heartbeating and applying. [`Driver::finish_snapshot`] installs it and
    /// compacts the log.
    fn maybe_snapshot(&mut self) -> Result<(), NodeError> {
        let applied = self.kv.applied_index();
        if self.snapshot_job.is_some() || applied < self.snapshot_index + self.cfg.snapshot_entries
        {
            return Ok(());
        }
        let meta = self
            .raw
            .snapshot_meta(applied)
            .map_err(|e| NodeError::Internal(format!("snapshot meta at {applied}: {e}")))?;
        let header = snapshot_header(&self.book);
        let started = Instant::now();
        let kv = self.kv.freeze();
        let frozen_in = started.elapsed();
        let snapshots = self.snapshots.clone();
        let (tx, done) = oneshot::channel();
        tokio::task::spawn_blocking(move || {
            let written = (|| -> Result<StagedSnapshot, String> {
                use std::io::Write;
                let mut w = snapshots.writer(meta).map_err(|e| e.to_string())?;
                w.write_all(&header).map_err(|e| e.to_string())?;
                kv.write_snapshot(&mut w).map_err(|e| e.to_string())?;
                let bytes = w.len();
                let staged = w.finish().map_err(|e| e.to_string())?;
                info!(
                    index = applied,
                    bytes,
                    frozen_us = frozen_in.as_micros() as u64,
                    written_ms = started.elapsed().as_millis() as u64,
                    "snapshot written"
                );
                Ok(staged)
            })();
            // Release the frozen view before the loop hears of the result, so that its next
            // write folds the overlay back.
            drop(kv);
            let _ = tx.send(written);
        });
        self.snapshot_job = Some(SnapshotJob {
            index: applied,
            done,
        });
        Ok(())
    }

    /// Installs a snapshot written in the background and compacts the log up to
    /// `snapshot_trailing_entries` below it, unless a newer snapshot (one received from the
    /// leader) was installed meanwhile.
    async fn finish_snapshot(
        &mut self,
        index: Index,
        written: Result<StagedSnapshot, String>,
    ) -> Result<(), NodeError> {
        let staged =
            written.map_err(|e| NodeError::Internal(format!("snapshot at {index}: {e}")))?;
        if index <= self.snapshot_index {
            // Superseded; the staged file is deleted when dropped.
            return Ok(());
        }
        let install = WriteBatch {
            snapshot: Some(staged),
            ..Default::default()
        };
        storage_call("install snapshot", |cb| self.storage.submit(install, cb)).await?;
        // The core decides where the log now starts (never before its current start); the WAL
        // may free the segments below that.
        let start = self
            .raw
            .compact(index, self.cfg.snapshot_trailing_entries)
            .map_err(|e| NodeError::Internal(format!("compact core: {e}")))?;
        storage_call("compact", |cb| self.storage.compact(start, cb)).await?;
        self.snapshot_index = index;
        self.metrics.snapshot_taken();
        debug!(index, start, "snapshot taken, log compacted");
        Ok(())
    }

    // ----- helpers --------------------------------------------------------------------------

    /// Points the transport at every known member's peer address — including peers not (yet)
    /// in the configuration: the leader answers a joining node before its entry is applied here.
    fn sync_transport_peers(&mut self) {
        for (id, addrs) in &self.book {
            if *id != self.id && !addrs.peer.is_empty() {
                self.transport.set_peer(*id, &addrs.peer);
            }
        }
    }

    /// Member `id`'s published client address, if known.
    fn client_addr(&self, id: NodeId) -> Option<String> {
        self.book
            .get(&id)
            .map(|a| a.client.clone())
            .filter(|c| !c.is_empty())
    }

    fn leader_error(&self) -> NodeError {
        let leader_id = self.raw.leader_id();
        NodeError::NotLeader {
            leader_id,
            leader_client_addr: self.client_addr(leader_id).filter(|_| leader_id != self.id),
        }
    }

    fn raft_error(&self, e: RaftError) -> NodeError {
        match e {
            RaftError::NotLeader { .. } => self.leader_error(),
            RaftError::TransferInProgress => {
                NodeError::Unavailable("leader transfer in progress; retry".into())
            }
            RaftError::ConfChangeNotAllowed(why) => NodeError::Unavailable(why.to_string()),
            RaftError::InvalidConfChange(why) => NodeError::InvalidArgument(why),
            other => NodeError::Internal(other.to_string()),
        }
    }

    fn members(&self) -> Vec<MemberStatus> {
        let status = self.raw.status();
        status
            .conf
            .members()
            .map(|id| {
                let addrs = self.book.get(&id).cloned().unwrap_or_default();
                let progress = status.progress.get(&id);
                MemberStatus {
                    id,
                    peer_addr: addrs.peer,
                    client_addr: addrs.client,
                    voter: status.conf.voters.contains(&id),
                    match_index: progress.map_or(0, |p| p.match_index),
                    healthy: match progress {
                        Some(p) => p.recent_active,
                        None => id == self.id,
                    },
                }
            })
            .collect()
    }

    fn member_state(&self) -> MemberState {
        let conf = self.raw.conf_state();
        if self.raw.catch_up_index() > 0 && conf.contains(self.id) {
            MemberState::CatchingUp
        } else if conf.voters.contains(&self.id) {
            MemberState::Voter
        } else if conf.contains(self.id) {
            MemberState::Learner
        } else if self.was_member {
            MemberState::Removed
        } else {
            MemberState::WaitingToBeAdded
        }
    }

    fn status(&self) -> NodeStatus {
        let leader_id = self.raw.leader_id();
        let last_log_index = self.raw.last_index();
        NodeStatus {
            node_id: self.id,
            role: self.raw.role(),
            term: self.raw.term(),
            leader_id,
            leader_client_addr: self.client_addr(leader_id).unwrap_or_default(),
            commit_index: self.raw.commit_index(),
            applied_index: self.kv.applied_index(),
            cluster_id: self.cluster_id.clone(),
            members: self.members(),
            member_state: self.member_state(),
            last_log_index,
            last_log_term: self.raw.log_term(last_log_index).unwrap_or(0),
            catch_up_index: self.raw.catch_up_index(),
        }
    }

    fn publish_observed(&mut self) {
        if self.raw.conf_state().contains(self.id) {
            self.was_member = true;
        }
        self.metrics.set_state(
            self.raw.term(),
            self.raw.role(),
            self.raw.leader_id(),
            self.raw.commit_index(),
            self.kv.applied_index(),
            self.raw.conf_state().contains(self.id),
        );
        let o = Observed {
            role: self.raw.role(),
            term: self.raw.term(),
            leader_id: self.raw.leader_id(),
            commit_index: self.raw.commit_index(),
            applied_index: self.kv.applied_index(),
            member: self.raw.conf_state().contains(self.id),
        };
        self.observed.send_if_modified(|cur| {
            if *cur != o {
                *cur = o;
                true
            } else {
                false
            }
        });
    }

    fn fail_all(&mut self, err: impl Fn() -> NodeError) {
        self.proposed_at.clear();
        for (_, (_, w)) in std::mem::take(&mut self.proposals) {
            reply_err(w, err());
        }
        for (_, read) in std::mem::take(&mut self.reads_by_ctx) {
            let _ = read.reply.send(Err(err()));
        }
        for (_, read) in std::mem::take(&mut self.reads_waiting_apply) {
            let _ = read.reply.send(Err(err()));
        }
        for t in std::mem::take(&mut self.transfers) {
            let _ = t.reply.send(Err(err()));
        }
    }
}

fn lost_write() -> NodeError {
    NodeError::Unavailable(
        "the write was superseded by another leader's entry; retry with the same seq".into(),
    )
}

fn reply_err(w: Waiter, err: NodeError) {
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

/// Starts one storage-thread operation with `start` (handed the completion callback) and waits
/// for it; `what` names the operation in the error.
async fn storage_call(what: &str, start: impl FnOnce(Callback)) -> Result<(), NodeError> {
    let (tx, rx) = oneshot::channel();
    start(Box::new(move |r| {
        let _ = tx.send(r);
    }));
    rx.await
        .map_err(|_| NodeError::Internal("storage thread is gone".into()))?
        .map_err(|e| NodeError::Internal(format!("{what}: {e}")))
}

/// A lazily connected channel to a leader's peer port, for address publication.
fn publish_channel(leader_peer: &str) -> Result<tonic::transport::Channel, String> {
    let endpoint = tonic::transport::Endpoint::from_shared(format!("http://{leader_peer}"))
        .map_err(|e| e.to_string())?
        .connect_timeout(Duration::from_secs(1))
        .timeout(Duration::from_secs(5));
    Ok(endpoint.connect_lazy())
}

/// Asks the leader (on its peer port) to record this node's addresses.
async fn publish_via(
    channel: tonic::transport::Channel,
    id: NodeId,
    addrs: MemberAddrs,
) -> Result<(), String> {
    use raftkv_proto::v1 as pb;
    let mut client = pb::cluster_client::ClusterClient::new(channel);
    client
        .add_member(pb::AddMemberRequest {
            node_id: id,
            peer_addr: addrs.peer,
            client_addr: addrs.client,
        })
        .await
        .map_err(|e| e.to_string())?;
    Ok(())
}

/// Files a snapshot received from a leader (`data`: `None` when its stream came from a stale
/// leader, whose message the core answers with our term), then keeps only the snapshot the core
/// wants to install (`wanted`) and the newest one. A stale or superseded transfer's file is
/// deleted when dropped; the one the core is installing is never evicted, or its `Ready` would
/// find no data.
fn keep_received<S: ReceivedSnapshot>(
    received: &mut BTreeMap<(Index, Term), S>,
    data: Option<S>,
    wanted: Option<(Index, Term)>,
) {
    if let Some(data) = data {
        received.insert(data.key(), data);
    }
    let newest = received.last_key_value().map(|(k, _)| *k);
    received.retain(|k, _| Some(*k) == wanted || Some(*k) == newest);
}

/// What [`keep_received`] needs of a received snapshot: where it ends.
trait ReceivedSnapshot {
    fn key(&self) -> (Index, Term);
}

impl ReceivedSnapshot for Received {
    fn key(&self) -> (Index, Term) {
        (self.staged.meta().index, self.staged.meta().term)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    impl ReceivedSnapshot for (Index, Term) {
        fn key(&self) -> (Index, Term) {
            *self
        }
    }

    #[test]
    fn a_stale_or_older_stream_never_evicts_the_snapshot_being_installed() {
        let mut received = BTreeMap::new();
        // The core accepted 100@3 and will install it in its next Ready.
        keep_received(&mut received, Some((100, 3)), Some((100, 3)));
        assert_eq!(received.keys().copied().collect::<Vec<_>>(), [(100, 3)]);
        // An older transfer of the same leader arrives late: dropped, 100@3 stays.
        keep_received(&mut received, Some((50, 3)), Some((100, 3)));
        assert_eq!(received.keys().copied().collect::<Vec<_>>(), [(100, 3)]);
        // A stream from a deposed leader (lower term) is not filed at all.
        keep_received(&mut received, None, Some((100, 3)));
        assert_eq!(received.keys().copied().collect::<Vec<_>>(), [(100, 3)]);
        // A newer one arrives while 100@3 is still wanted: both are kept.
        keep_received(&mut received, Some((200, 4)), Some((100, 3)));
        assert_eq!(
            received.keys().copied().collect::<Vec<_>>(),
            [(100, 3), (200, 4)]
        );
        // Once the core wants the newer one, the older goes.
        keep_received(&mut received, None, Some((200, 4)));
        assert_eq!(received.keys().copied().collect::<Vec<_>>(), [(200, 4)]);
        // Nothing wanted: only the newest is kept for a message still to come.
        keep_received(&mut received, Some((150, 4)), None);
        assert_eq!(received.keys().copied().collect::<Vec<_>>(), [(200, 4)]);
    }

    #[test]
    fn the_lease_is_bounded_by_the_shortest_guard_of_any_voter() {
        let cfg = DriverConfig {
            tick: Duration::from_millis(100),
            election_ticks: 10,
            ..DriverConfig::default()
        };
        assert_eq!(cfg.lease_guard(), Duration::from_millis(900));
        // Same timing everywhere: (10 - 2) ticks, less 10%.
        assert_eq!(cfg.lease(None), Duration::from_millis(720));
        assert_eq!(
            cfg.lease(Some(Duration::from_millis(900))),
            Duration::from_millis(720)
        );
        // A voter running with a quarter of the election timeout shortens the lease to fit it.
        assert_eq!(
            cfg.lease(Some(Duration::from_millis(300))),
            Duration::from_millis(180)
        );
        // A voter with a longer guard does not lengthen it beyond this node's own.
        assert_eq!(
            cfg.lease(Some(Duration::from_secs(5))),
            Duration::from_millis(720)
        );
        // A guard shorter than one tick leaves no lease at all.
        assert_eq!(cfg.lease(Some(Duration::from_millis(50))), Duration::ZERO);
    }
}
