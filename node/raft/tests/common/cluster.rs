//! [`Cluster`]: N Raft cores on one simulated network, driven exactly as the `Ready` contract says,
//! with every step checked by the [`Checker`].
//!
//! This is the harness's public face, in the spirit of raft-rs' `Network`: scenario tests build a
//! cluster and move it with a handful of verbs (`tick_all`, `deliver_all`, `propose`, `isolate`,
//! `crash`, ...); the randomized driver in `sim.rs` uses the same verbs with seeded fault rates.
//!
//! # Time and determinism
//! There is no real time: a global tick counter (`now`) advances only in [`Cluster::tick_all`].
//! All randomness (fault decisions, delivery order, election-timer seeds) comes from one seeded
//! generator, and every collection that is iterated is ordered (`BTreeMap`, `Vec`), so a run is a
//! pure function of its options and the calls made on it.
//!
//! # How a node is driven (the `Ready` contract of `raftkv_raft::types::Ready`)
//! After every call into a core (`tick`, `step`, `propose`, ...) the harness observes the node
//! (role, term, commit index: election safety, leader completeness, the commitment rule) and
//! drains its `Ready`s, each as follows:
//! 1. send `messages` (they go on the wire now);
//!    — *crash point* [`CrashPoint::BeforePersist`]: the node dies and this `Ready` is never
//!    persisted;
//! 2. persist `snapshot` (with the data that arrived with the `InstallSnapshot`), `entries`,
//!    `hard_state` to the node's [`Disk`];
//!    — *crash point* [`CrashPoint::BeforePersistedMessages`]: durable, but the acknowledgements
//!    never leave;
//! 3. send `persisted_messages`;
//! 4. apply `committed_entries` to the node's [`StateMachine`], check and serve `read_states`;
//! 5. `advance(&rd)`.
//!
//! Snapshot data never passes through the core: when a core sends `InstallSnapshot{meta}`, the
//! harness attaches the sender's durable snapshot data to the envelope; on delivery it keeps the
//! data at the recipient until that node's `Ready` asks to install `meta`. The sender hears
//! `report_snapshot(to, true)` on delivery and `false` when the message is lost.
//!
//! # Violations
//! A broken invariant is recorded as a [`Violation`] (the first one wins). With
//! [`ClusterOpts::strict`] (the default for scenario tests) the harness panics at once, with the
//! description, so a scenario needs no explicit checks; the randomized driver turns strict off
//! and polls [`Cluster::take_violation`] after every tick.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use bytes::Bytes;
use raftkv_raft::{
    ConfChange, ConfChangeType, Config, Entry, EntryPayload, Error, Index, InitialState, Message,
    MessageBody, NodeId, RawNode, ReadLease, ReadState, Role, Term,
};

use super::check::{Checker, Invariant, Violation};
use super::disk::{Disk, SnapData, StateMachine};
use super::net::{Envelope, NetFaults, Network};
use super::rng::{Rng, combine};

/// Where in the processing of a `Ready` a node may die.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CrashPoint {
    /// After sending `messages`, before persisting anything of the `Ready`.
    BeforePersist,
    /// After persisting, before sending `persisted_messages`.
    BeforePersistedMessages,
}

/// Random crashes in the middle of `Ready` processing (per `Ready`).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct ReadyCrashes {
    /// Probability of dying at [`CrashPoint::BeforePersist`].
    pub before_persist: f64,
    /// Probability of dying at [`CrashPoint::BeforePersistedMessages`].
    pub before_persisted_messages: f64,
    /// Extra probability of dying at [`CrashPoint::BeforePersist`] when the `Ready` carries a
    /// granted vote (in either message list): aims crashes at the moment a vote must be durable.
    pub on_vote_grant: f64,
    /// A node crashed this way restarts after a number of ticks drawn from this range.
    pub down_ticks: (u64, u64),
}

/// How to build a [`Cluster`].
#[derive(Clone, Debug)]
pub struct ClusterOpts {
    /// Seeds all randomness: network faults, delivery order, election timers.
    pub seed: u64,
    /// Initial voters get ids `1..=voters`.
    pub voters: u64,
    /// Core tunables (see `raftkv_raft::Config`).
    pub election_tick: u64,
    /// Ticks between heartbeats.
    pub heartbeat_tick: u64,
    /// Pre-vote (thesis §9.6).
    pub pre_vote: bool,
    /// Check-quorum (thesis §6.2).
    pub check_quorum: bool,
    /// AppendEntries in flight per follower.
    pub max_inflight_msgs: usize,
    /// Bytes of entries per AppendEntries.
    pub max_size_per_msg: u64,
    /// Link faults applied to every message.
    pub net: NetFaults,
    /// Probability that the sender hears `report_unreachable` when a partition drops a message.
    pub report_unreachable: f64,
    /// Random crashes inside `Ready` processing.
    pub ready_crashes: ReadyCrashes,
    /// Take a snapshot and compact whenever a node's applied index is this far past its last
    /// snapshot (`None`: only explicit [`Cluster::snapshot`] calls).
    pub snapshot_threshold: Option<u64>,
    /// Entries the core keeps below each snapshot it takes (its trailing log, so that a follower
    /// a little behind is sent entries instead of the snapshot); 0 compacts to the snapshot.
    /// The disk keeps what real storage keeps: only the entries after the snapshot.
    pub snapshot_trailing: u64,
    /// Panic at the first violation (scenario tests) instead of recording it.
    pub strict: bool,
    /// Print every event to stderr (for replaying a failing seed).
    pub trace: bool,
    /// Check the §5.4.2 commitment rule directly (see [`Invariant::CommitRule`]).
    pub commit_rule: bool,
    /// Keep every applied command and served read per node (scenario tests inspect them; the
    /// randomized runs leave it off to save memory).
    pub record_applied: bool,
    /// Most messages stepped into one node before its `Ready` is drained, when messages fall
    /// due in [`Cluster::tick_all`]: each batch takes a random size in `1..=batch_delivery`.
    /// The node's driver steps up to 1024 queued messages per `Ready`, so a message's effects
    /// may share a `Ready` with those of the messages before it (1: one message per `Ready`).
    pub batch_delivery: usize,
    /// A planted bug to switch on in every node.
    #[cfg(feature = "planted-bugs")]
    pub bug: Option<raftkv_raft::planted::Bug>,
}

impl ClusterOpts {
    /// Deterministic defaults for scenario tests: `voters` nodes, etcd-like timing scaled to
    /// ticks (heartbeat 1, election 10), pre-vote and check-quorum on, a perfect network, no
    /// automatic snapshots, strict (panics on the first violation) and recording applied
    /// commands.
    pub fn new(voters: u64) -> Self {
        Self {
            seed: 0,
            voters,
            election_tick: 10,
            heartbeat_tick: 1,
            pre_vote: true,
            check_quorum: true,
            max_inflight_msgs: 256,
            max_size_per_msg: 1 << 20,
            net: NetFaults::none(),
            report_unreachable: 0.0,
            ready_crashes: ReadyCrashes::default(),
            snapshot_threshold: None,
            snapshot_trailing: 0,
            strict: true,
            trace: std::env::var_os("SIM_TRACE").is_some(),
            commit_rule: true,
            record_applied: true,
            batch_delivery: 1,
            #[cfg(feature = "planted-bugs")]
            bug: None,
        }
    }
}

/// Counters of what a run did, so a test can show (and assert) that it exercised something.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Global ticks elapsed.
    pub ticks: u64,
    /// Times a node became leader.
    pub elections: u64,
    /// Proposals accepted by a leader.
    pub proposals: u64,
    /// Distinct log indexes applied somewhere (filled in by [`Cluster::stats`]).
    pub committed: u64,
    /// ReadIndex requests accepted by a leader.
    pub reads_requested: u64,
    /// Reads served (ReadState confirmed and its index applied).
    pub reads_served: u64,
    /// Snapshots taken (followed by compaction).
    pub snapshots_taken: u64,
    /// Snapshots installed from a leader.
    pub snapshots_installed: u64,
    /// AppendEntries carrying entries a snapshot of the sender already covers (sent from its
    /// trailing log instead of the snapshot).
    pub trailing_appends: u64,
    /// Membership changes accepted by a leader (add learner, remove; not the automatic
    /// promotions).
    pub conf_changes_proposed: u64,
    /// Membership-change entries applied (promotions included).
    pub conf_changes_committed: u64,
    /// Leader transfers requested (and accepted by the leader).
    pub transfers: u64,
    /// Leader transfers that completed: the target won the next election.
    pub transfers_done: u64,
    /// Crashes (any point).
    pub crashes: u64,
    /// Crashes in the middle of a `Ready`.
    pub ready_crashes: u64,
    /// Restarts from durable state.
    pub restarts: u64,
    /// Partitions started.
    pub partitions: u64,
    /// Messages the cores sent.
    pub msgs_sent: u64,
    /// Messages delivered.
    pub msgs_delivered: u64,
    /// Messages lost (faults, partitions, dead recipients).
    pub msgs_dropped: u64,
    /// Messages duplicated.
    pub msgs_duplicated: u64,
    /// Heartbeat rounds acknowledged by a quorum (each one extends a read lease).
    pub leases: u64,
    /// Nodes that lost their disk and rejoined empty.
    pub wipes: u64,
    /// Process pauses.
    pub pauses: u64,
}

impl Stats {
    /// Adds another run's counters to these.
    pub fn add(&mut self, o: &Stats) {
        self.ticks += o.ticks;
        self.elections += o.elections;
        self.proposals += o.proposals;
        self.committed += o.committed;
        self.reads_requested += o.reads_requested;
        self.reads_served += o.reads_served;
        self.snapshots_taken += o.snapshots_taken;
        self.snapshots_installed += o.snapshots_installed;
        self.trailing_appends += o.trailing_appends;
        self.conf_changes_proposed += o.conf_changes_proposed;
        self.conf_changes_committed += o.conf_changes_committed;
        self.transfers += o.transfers;
        self.transfers_done += o.transfers_done;
        self.crashes += o.crashes;
        self.ready_crashes += o.ready_crashes;
        self.restarts += o.restarts;
        self.partitions += o.partitions;
        self.msgs_sent += o.msgs_sent;
        self.msgs_delivered += o.msgs_delivered;
        self.msgs_dropped += o.msgs_dropped;
        self.msgs_duplicated += o.msgs_duplicated;
        self.leases += o.leases;
        self.wipes += o.wipes;
        self.pauses += o.pauses;
    }
}

impl std::fmt::Display for Stats {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "ticks={} elections={} proposals={} committed={} reads={}/{} snapshots taken={} \
             installed={} trailing_appends={} conf_changes proposed={} committed={} transfers={}/{} crashes={} \
             (in-ready {}) restarts={} partitions={} msgs sent={} delivered={} dropped={} dup={} \
             leases={} pauses={} wipes={}",
            self.ticks,
            self.elections,
            self.proposals,
            self.committed,
            self.reads_served,
            self.reads_requested,
            self.snapshots_taken,
            self.snapshots_installed,
            self.trailing_appends,
            self.conf_changes_proposed,
            self.conf_changes_committed,
            self.transfers_done,
            self.transfers,
            self.crashes,
            self.ready_crashes,
            self.restarts,
            self.partitions,
            self.msgs_sent,
            self.msgs_delivered,
            self.msgs_dropped,
            self.msgs_duplicated,
            self.leases,
            self.pauses,
            self.wipes
        )
    }
}

/// One simulated server: a core (absent while crashed), its disk and its state machine.
#[derive(Debug)]
pub struct Node {
    /// The node's id.
    pub id: NodeId,
    /// The running core; `None` while crashed or after decommissioning.
    pub raw: Option<RawNode>,
    /// Durable state; survives crashes.
    pub disk: Disk,
    /// The application (volatile: rebuilt from the snapshot and replay on restart).
    pub sm: StateMachine,
    /// `(index, command)` of every applied `Normal` entry, when
    /// [`ClusterOpts::record_applied`]. Entries a node received inside a snapshot are not in it;
    /// a restart keeps what the node's own snapshot covers and drops the rest, which the node
    /// then applies again from its log.
    pub applied_log: Vec<(Index, Bytes)>,
    /// `(ctx, index)` of reads served, when [`ClusterOpts::record_applied`].
    pub served_reads: Vec<(u64, Index)>,
    /// Set once the node was removed from the cluster and shut down for good.
    pub decommissioned: bool,
    /// When a crashed node restarts by itself (randomized runs); `None`: only by
    /// [`Cluster::restart`].
    pub down_until: Option<u64>,
    /// While set (and in the future), the process is paused (think SIGSTOP or a long GC): it does
    /// not tick, messages to it wait, clients get no answer. Its state is kept.
    pub paused_until: Option<u64>,
    /// Snapshot data delivered with `InstallSnapshot`, waiting for the `Ready` that installs it.
    incoming: BTreeMap<Index, SnapData>,
    /// Confirmed reads waiting for their index to be applied.
    pending_reads: Vec<ReadState>,
    /// The term in which this node was last seen leading (to detect "just became leader").
    leader_term: Option<Term>,
    /// Its commit index when it became leader (for the commitment-rule check).
    commit_at_election: Index,
    /// A crash point armed by [`Cluster::crash_at`].
    crash_at: Option<CrashPoint>,
    /// The read lease, decided by the core crate's [`ReadLease`] exactly as the node's driver
    /// decides it (DESIGN.md §4): from the tick a heartbeat round was sent, until the minimum
    /// election timeout has passed (no clock drift in the simulation, so no margin); void for
    /// the rest of a term once `TimeoutNow` went out.
    lease: ReadLease<u64>,
    /// How often this node has been (re)started; varies the election-timer seed.
    incarnation: u64,
    /// The catch-up barrier `(index, log term, term)` the node got when it last came back with
    /// an empty disk (durable, like the disk: a node keeps it across restarts).
    pub catch_up: (Index, Term, Term),
    /// Wiped and not restarted yet: its next start must first learn a catch-up barrier.
    needs_barrier: bool,
}

impl Node {
    fn new(id: NodeId) -> Self {
        Self {
            id,
            raw: None,
            disk: Disk::default(),
            sm: StateMachine::default(),
            applied_log: Vec::new(),
            served_reads: Vec::new(),
            decommissioned: false,
            down_until: None,
            paused_until: None,
            incoming: BTreeMap::new(),
            pending_reads: Vec::new(),
            leader_term: None,
            commit_at_election: 0,
            crash_at: None,
            lease: ReadLease::new(),
            incarnation: 0,
            catch_up: (0, 0, 0),
            needs_barrier: false,
        }
    }

    /// Whether the core is running.
    pub fn is_up(&self) -> bool {
        self.raw.is_some()
    }

    /// Whether the process is paused at tick `now`.
    pub fn is_paused(&self, now: u64) -> bool {
        self.paused_until.is_some_and(|t| t > now)
    }
}

/// Feedback from the transport to a sender, delivered after the current `Ready` is done.
#[derive(Clone, Copy, Debug)]
enum Feedback {
    Snapshot { from: NodeId, to: NodeId, ok: bool },
    Unreachable { from: NodeId, to: NodeId },
}

/// How many delivery rounds one tick may take (a round delivers what the previous one sent).
const MAX_ROUNDS_PER_TICK: usize = 64;
/// Upper bound for [`Cluster::deliver_all`]; more means the cores are in a message storm.
const MAX_DELIVERIES: usize = 200_000;

/// N simulated nodes, their network and the safety checker.
#[derive(Debug)]
pub struct Cluster {
    /// Every node ever started (or reserved), by id.
    pub nodes: BTreeMap<NodeId, Node>,
    /// The network.
    pub net: Network,
    /// The invariant checker.
    pub checker: Checker,
    /// The global tick.
    pub now: u64,
    /// Options the cluster was built with (fault rates may be changed in between).
    pub opts: ClusterOpts,
    rng: Rng,
    stats: Stats,
    violation: Option<Violation>,
    feedback: VecDeque<Feedback>,
    next_ctx: u64,
    /// A requested leader transfer: `(term it was requested in, target)`.
    pending_transfer: Option<(Term, NodeId)>,
}

impl Cluster {
    /// A cluster of `voters` bootstrapped voters with ids `1..=voters`, with the defaults of
    /// [`ClusterOpts::new`] (strict: violations panic).
    pub fn with_voters(voters: u64) -> Self {
        Self::new(ClusterOpts::new(voters))
    }

    /// Boots `opts.voters` initial members (ids `1..=voters`): each persists the bootstrap
    /// configuration (entry 1) and starts.
    pub fn new(opts: ClusterOpts) -> Self {
        let mut c = Self {
            nodes: BTreeMap::new(),
            net: Network::new(opts.net),
            checker: Checker::new(opts.commit_rule),
            now: 0,
            rng: Rng::new(opts.seed),
            stats: Stats::default(),
            violation: None,
            feedback: VecDeque::new(),
            next_ctx: 0,
            pending_transfer: None,
            opts,
        };
        let voters: Vec<NodeId> = (1..=c.opts.voters).collect();
        let boot = RawNode::bootstrap(voters.iter().copied());
        for &id in &voters {
            let mut node = Node::new(id);
            node.disk.hard_state = boot.hard_state;
            match node.disk.append(&boot.entries) {
                Ok(written) => {
                    if let Err(v) = c.checker.on_persist(id, &written, &boot.entries) {
                        c.fail(v);
                    }
                }
                Err(why) => c.contract(id, format!("bootstrap state: {why}")),
            }
            c.nodes.insert(id, node);
        }
        for id in voters {
            c.start(id);
        }
        c
    }

    // ----- violations and tracing ------------------------------------------------------------

    fn fail(&mut self, v: Violation) {
        if self.opts.strict {
            panic!("invariant violated: {v}");
        }
        self.trace(|| format!("VIOLATION {v}"));
        if self.violation.is_none() {
            self.violation = Some(v);
        }
    }

    fn contract(&mut self, node: NodeId, detail: String) {
        self.fail(Violation {
            invariant: Invariant::Contract,
            tick: self.now,
            node: Some(node),
            detail,
        });
    }

    /// Records a violation found outside the cluster (the liveness check of the driver).
    pub fn report(&mut self, v: Violation) {
        self.fail(v);
    }

    /// The first violation recorded so far, if any (non-strict mode).
    pub fn violation(&self) -> Option<&Violation> {
        self.violation.as_ref()
    }

    /// Takes the first violation recorded so far.
    pub fn take_violation(&mut self) -> Option<Violation> {
        self.violation.take()
    }

    /// `Ok` unless a violation was recorded.
    pub fn check(&self) -> Result<(), Violation> {
        self.violation.clone().map_or(Ok(()), Err)
    }

    fn trace(&self, f: impl FnOnce() -> String) {
        if self.opts.trace {
            eprintln!("[t{:>5}] {}", self.now, f());
        }
    }

    /// Counters so far.
    pub fn stats(&self) -> Stats {
        Stats {
            committed: self.checker.committed_len(),
            ..self.stats
        }
    }

    // ----- inspection -----------------------------------------------------------------------

    /// The node `id`. Panics if it was never started (a test bug).
    pub fn node(&self, id: NodeId) -> &Node {
        self.nodes
            .get(&id)
            .unwrap_or_else(|| panic!("node {id} does not exist"))
    }

    /// The running core of `id`. Panics if it is down (a test bug).
    pub fn raw(&self, id: NodeId) -> &RawNode {
        self.node(id)
            .raw
            .as_ref()
            .unwrap_or_else(|| panic!("node {id} is down"))
    }

    /// Ids of running nodes, ascending.
    pub fn running(&self) -> Vec<NodeId> {
        self.nodes
            .values()
            .filter(|n| n.is_up())
            .map(|n| n.id)
            .collect()
    }

    /// The leader: among running nodes in the leader role, the one with the highest term.
    pub fn leader(&self) -> Option<NodeId> {
        self.nodes
            .values()
            .filter_map(|n| n.raw.as_ref())
            .filter(|r| r.role() == Role::Leader)
            .max_by_key(|r| (r.term(), r.id()))
            .map(|r| r.id())
    }

    /// The role of `id`, `None` while it is down.
    pub fn role(&self, id: NodeId) -> Option<Role> {
        self.nodes.get(&id)?.raw.as_ref().map(RawNode::role)
    }

    /// Messages in flight, in send order.
    pub fn in_flight(&self) -> &[Envelope] {
        &self.net.in_flight
    }

    // ----- node lifecycle -------------------------------------------------------------------

    fn config(&self, id: NodeId, incarnation: u64) -> Config {
        let mut cfg = Config::new(id);
        cfg.heartbeat_tick = self.opts.heartbeat_tick;
        cfg.election_tick = self.opts.election_tick;
        cfg.pre_vote = self.opts.pre_vote;
        cfg.check_quorum = self.opts.check_quorum;
        cfg.max_inflight_msgs = self.opts.max_inflight_msgs;
        cfg.max_size_per_msg = self.opts.max_size_per_msg;
        // A fresh timer seed per incarnation: a restarted node must not replay its old timeouts.
        cfg.seed = combine(self.opts.seed, &[id, incarnation]);
        #[cfg(feature = "planted-bugs")]
        {
            cfg.bug = self.opts.bug;
        }
        cfg
    }

    /// Starts (or restarts) `id` from its disk.
    fn start(&mut self, id: NodeId) {
        let Some(node) = self.nodes.get(&id) else {
            return;
        };
        if node.is_up() || node.decommissioned {
            return;
        }
        if node.needs_barrier {
            match self.catch_up_barrier(id) {
                Some(barrier) => {
                    let node = self.nodes.get_mut(&id).expect("checked above");
                    node.catch_up = barrier;
                    node.needs_barrier = false;
                    self.trace(|| format!("n{id} rejoins with catch-up barrier {barrier:?}"));
                }
                None => {
                    // Like a node that cannot yet reach a quorum of the other voters: it waits.
                    let at = self.now + 1;
                    if let Some(node) = self.nodes.get_mut(&id) {
                        node.down_until = Some(at);
                    }
                    return;
                }
            }
        }
        let node = self.nodes.get(&id).expect("checked above");
        let incarnation = node.incarnation + 1;
        let mut cfg = self.config(id, incarnation);
        (cfg.catch_up_index, cfg.catch_up_log_term, cfg.catch_up_term) = node.catch_up;
        let node = self.nodes.get_mut(&id).expect("checked above");
        let state = node.disk.initial_state();
        let snap_index = node.disk.snapshot_index();
        node.sm = StateMachine::restore(node.disk.snapshot.as_ref().map(|(_, d)| d));
        node.applied_log.retain(|(i, _)| *i <= snap_index);
        node.incarnation = incarnation;
        node.down_until = None;
        node.leader_term = None;
        #[cfg(feature = "planted-bugs")]
        if self.opts.bug == Some(raftkv_raft::planted::Bug::LeaseAfterTransfer) {
            node.lease.plant_lease_after_transfer();
        }
        match RawNode::new(cfg, state) {
            Ok(raw) => node.raw = Some(raw),
            Err(e) => {
                self.contract(id, format!("the core refused its own durable state: {e}"));
                return;
            }
        }
        self.trace(|| format!("start n{id} (incarnation {incarnation})"));
        self.after_op(id);
    }

    /// Restarts a crashed node from its durable state (no-op if it is running or
    /// decommissioned). Its state machine restarts from its snapshot; the core replays the
    /// committed entries after it.
    pub fn restart(&mut self, id: NodeId) {
        let Some(node) = self.nodes.get(&id) else {
            return;
        };
        if node.is_up() || node.decommissioned {
            return;
        }
        if let Err(v) = self.checker.on_restart(id, &node.disk) {
            self.fail(v);
        }
        self.stats.restarts += 1;
        self.start(id);
    }

    /// Crashes `id` now: the core and everything volatile (state machine, undelivered snapshot
    /// data, pending reads) are lost; the disk stays. Messages already on the wire stay there.
    pub fn crash(&mut self, id: NodeId) {
        let Some(node) = self.nodes.get_mut(&id) else {
            return;
        };
        if node.raw.take().is_none() {
            return;
        }
        node.incoming.clear();
        node.pending_reads.clear();
        node.paused_until = None;
        node.leader_term = None;
        node.crash_at = None;
        self.checker.forget_reads(id);
        self.stats.crashes += 1;
        self.trace(|| format!("crash n{id}"));
    }

    /// Crashes `id` and restarts it by itself at tick `at` (randomized runs).
    pub fn crash_until(&mut self, id: NodeId, at: u64) {
        self.crash(id);
        if let Some(node) = self.nodes.get_mut(&id)
            && !node.decommissioned
        {
            node.down_until = Some(at);
        }
    }

    /// Arms a crash of `id` at `point` of its next `Ready`.
    pub fn crash_at(&mut self, id: NodeId, point: CrashPoint) {
        if let Some(node) = self.nodes.get_mut(&id) {
            node.crash_at = Some(point);
        }
    }

    /// Pauses `id` until tick `until` (a stopped process: no ticks, messages wait, clients get
    /// no answer, state kept). [`Cluster::resume_all`] or reaching `until` ends it.
    pub fn pause(&mut self, id: NodeId, until: u64) {
        if let Some(node) = self.nodes.get_mut(&id)
            && node.is_up()
        {
            node.paused_until = Some(until);
            self.stats.pauses += 1;
            self.trace(|| format!("pause n{id} until t{until}"));
        }
    }

    /// Resumes every paused node now.
    pub fn resume_all(&mut self) {
        let mut resumed = BTreeSet::new();
        for n in self.nodes.values_mut() {
            if n.paused_until.take().is_some() {
                resumed.insert(n.id);
            }
        }
        // What waited for a paused process is readable now.
        let now = self.now;
        for env in &mut self.net.in_flight {
            if resumed.contains(&env.msg.to) {
                env.deliver_at = env.deliver_at.min(now);
            }
        }
    }

    /// Starts a node that joins later: empty state, no configuration; it waits for a leader
    /// to add it (as a learner) and send it the log or a snapshot. No-op if `id` already exists.
    pub fn add_spare(&mut self, id: NodeId) {
        if self.nodes.contains_key(&id) {
            return;
        }
        self.nodes.insert(id, Node::new(id));
        self.start(id);
    }

    /// Shuts `id` down for good and deletes its disk (a removed member's pod going away).
    pub fn decommission(&mut self, id: NodeId) {
        self.crash(id);
        if let Some(node) = self.nodes.get_mut(&id) {
            node.decommissioned = true;
            node.down_until = None;
            node.disk = Disk::default();
            self.trace(|| format!("decommission n{id}"));
        }
    }

    /// Wipes `id`: it crashes and loses its disk (a lost volume), and restarts by itself at tick
    /// `at` with an empty log, as a node that joins a running cluster does: first it learns a
    /// catch-up barrier from a quorum of the other voters (see [`Cluster::catch_up_barrier`]),
    /// waiting while it cannot reach one.
    pub fn wipe_until(&mut self, id: NodeId, at: u64) {
        self.crash(id);
        if let Some(node) = self.nodes.get_mut(&id)
            && !node.decommissioned
        {
            node.disk = Disk::default();
            node.sm = StateMachine::default();
            node.applied_log.clear();
            node.needs_barrier = true;
            node.down_until = Some(at);
            self.stats.wipes += 1;
            self.trace(|| format!("wipe n{id}"));
        }
    }

    /// The catch-up barrier a node `id` with an empty disk learns when it joins, from the other
    /// nodes that are running, exactly as `kvnode` computes it from their `Cluster.Status`
    /// answers ([`raftkv_raft::catch_up_barrier`]).
    fn catch_up_barrier(&self, id: NodeId) -> Option<(Index, Term, Term)> {
        let now = self.now;
        let answers: Vec<raftkv_raft::PeerLog> = self
            .nodes
            .values()
            .filter(|n| n.id != id && !n.is_paused(now))
            .filter_map(|n| n.raw.as_ref())
            .map(|r| raftkv_raft::PeerLog {
                id: r.id(),
                term: r.term(),
                last_index: r.last_index(),
                last_log_term: r.log_term(r.last_index()).unwrap_or(0),
                voters: r.conf_state().voters.clone(),
            })
            .collect();
        let barrier = raftkv_raft::catch_up_barrier(id, &answers);
        self.trace(|| format!("n{id} barrier from {} answers: {barrier:?}", answers.len()));
        barrier.map(|b| (b.index, b.log_term, b.term))
    }

    /// Whether some node lost its disk and has not caught up yet (it is down waiting for a
    /// barrier, or below its barrier). Losing a second volume meanwhile may lose committed
    /// entries, which no consensus protocol survives.
    pub fn any_catching_up(&self) -> bool {
        self.nodes
            .values()
            .any(|n| n.needs_barrier || n.raw.as_ref().is_some_and(|r| r.catch_up_index() > 0))
    }

    /// Restarts every crashed (not decommissioned) node.
    pub fn restart_all(&mut self) {
        let down: Vec<NodeId> = self
            .nodes
            .values()
            .filter(|n| !n.is_up() && !n.decommissioned)
            .map(|n| n.id)
            .collect();
        for id in down {
            self.restart(id);
        }
    }

    // ----- network controls -----------------------------------------------------------------

    /// Isolates `id` from every other node (both directions).
    pub fn isolate(&mut self, id: NodeId) {
        self.stats.partitions += 1;
        self.net.isolate(id);
        self.trace(|| format!("isolate n{id}"));
    }

    /// Cuts the link between `a` and `b` (both directions).
    pub fn cut(&mut self, a: NodeId, b: NodeId) {
        self.net.cut(a, b);
        self.trace(|| format!("cut n{a} <-> n{b}"));
    }

    /// Cuts only `from -> to`.
    pub fn cut_oneway(&mut self, from: NodeId, to: NodeId) {
        self.net.cut_oneway(from, to);
        self.trace(|| format!("cut n{from} -> n{to}"));
    }

    /// Splits the nodes into two groups that cannot talk to each other.
    pub fn split(&mut self, a: &[NodeId], b: &[NodeId]) {
        self.stats.partitions += 1;
        for &x in a {
            for &y in b {
                self.net.cut(x, y);
            }
        }
        self.trace(|| format!("split {a:?} | {b:?}"));
    }

    /// Heals every partition (link fault rates stay as they are).
    pub fn recover(&mut self) {
        self.net.recover();
        self.trace(|| "recover".to_string());
    }

    /// Replaces the link fault rates.
    pub fn set_net_faults(&mut self, faults: NetFaults) {
        self.net.faults = faults;
    }

    // ----- driving --------------------------------------------------------------------------

    /// Advances the global clock by `n` ticks. Each tick: restarts nodes whose downtime is over,
    /// ticks every running node, then delivers the messages that are due (several rounds, so a
    /// request and its answer can both happen within a tick).
    pub fn tick_all(&mut self, n: u64) {
        for _ in 0..n {
            self.now += 1;
            self.checker.now = self.now;
            self.stats.ticks += 1;
            let due: Vec<NodeId> = self
                .nodes
                .values()
                .filter(|n| !n.is_up() && n.down_until.is_some_and(|t| t <= self.now))
                .map(|n| n.id)
                .collect();
            for id in due {
                self.restart(id);
            }
            let now = self.now;
            for n in self.nodes.values_mut() {
                if n.paused_until.is_some_and(|t| t <= now) {
                    n.paused_until = None;
                }
            }
            let mut ids: Vec<NodeId> = self
                .nodes
                .values()
                .filter(|n| n.is_up() && !n.is_paused(now))
                .map(|n| n.id)
                .collect();
            if self.net.faults.reorder {
                self.rng.shuffle(&mut ids);
            }
            for id in ids {
                self.tick(id);
            }
            self.deliver_due();
        }
    }

    /// Ticks one node (its clock only; no delivery).
    pub fn tick(&mut self, id: NodeId) {
        if let Some(raw) = self.nodes.get_mut(&id).and_then(|n| n.raw.as_mut()) {
            raw.tick();
            self.after_op(id);
        }
    }

    /// Delivers the messages due at the current tick, round after round (what a round sends
    /// with no delay is due in the next round), in random order when the network reorders.
    pub fn deliver_due(&mut self) {
        for _ in 0..MAX_ROUNDS_PER_TICK {
            let mut due = self.net.take_due(self.now);
            if due.is_empty() {
                break;
            }
            if self.net.faults.reorder {
                self.rng.shuffle(&mut due);
            }
            self.deliver_in_batches(due);
        }
    }

    /// Delivers `envs` (in their order per recipient), stepping a random number of them, up to
    /// [`ClusterOpts::batch_delivery`], into a node before its `Ready` is drained.
    fn deliver_in_batches(&mut self, envs: Vec<Envelope>) {
        let max = self.opts.batch_delivery.max(1) as u64;
        if max == 1 {
            for env in envs {
                self.deliver(env);
            }
            return;
        }
        let mut order: Vec<NodeId> = Vec::new();
        let mut queues: BTreeMap<NodeId, VecDeque<Envelope>> = BTreeMap::new();
        for env in envs {
            let to = env.msg.to;
            if !queues.contains_key(&to) {
                order.push(to);
            }
            queues.entry(to).or_default().push_back(env);
        }
        while !queues.is_empty() {
            for to in &order {
                let Some(queue) = queues.get_mut(to) else {
                    continue;
                };
                let n = self.rng.range(1, max) as usize;
                let batch: Vec<Envelope> = queue.drain(..n.min(queue.len())).collect();
                if queue.is_empty() {
                    queues.remove(to);
                }
                self.deliver_batch(batch);
            }
        }
    }

    /// Delivers every message in flight, ignoring delays, in send order, until the network is
    /// quiet (partitions and fault rates still apply). Returns how many were delivered.
    pub fn deliver_all(&mut self) -> usize {
        let mut delivered = 0;
        loop {
            let now = self.now;
            let paused: BTreeSet<NodeId> = self
                .nodes
                .values()
                .filter(|n| n.is_paused(now))
                .map(|n| n.id)
                .collect();
            let batch = self.net.take_matching(|e| !paused.contains(&e.msg.to));
            if batch.is_empty() {
                return delivered;
            }
            for env in batch {
                self.deliver(env);
                delivered += 1;
            }
            if delivered > MAX_DELIVERIES {
                self.contract(
                    0,
                    format!("no quiet network after {MAX_DELIVERIES} deliveries: a message storm"),
                );
                return delivered;
            }
        }
    }

    /// Drops every message in flight matching `pred`; returns them.
    pub fn drop_matching(&mut self, pred: impl FnMut(&Envelope) -> bool) -> Vec<Envelope> {
        let dropped = self.net.take_matching(pred);
        self.stats.msgs_dropped += dropped.len() as u64;
        for env in &dropped {
            if env.snapshot.is_some() {
                self.feedback.push_back(Feedback::Snapshot {
                    from: env.msg.from,
                    to: env.msg.to,
                    ok: false,
                });
            }
        }
        self.flush_feedback();
        dropped
    }

    /// Delivers one envelope now (partitions apply; a down recipient loses it).
    pub fn deliver(&mut self, env: Envelope) {
        self.deliver_batch(vec![env]);
    }

    /// Steps every envelope of `envs` (all to one node) into its core, then drains the node's
    /// `Ready`s once, as a driver that takes every queued message before its next `Ready` does.
    fn deliver_batch(&mut self, envs: Vec<Envelope>) {
        let mut stepped = None;
        let mut snapshots_delivered = Vec::new();
        for env in envs {
            let (from, to) = (env.msg.from, env.msg.to);
            let is_snapshot = env.snapshot.is_some();
            let up = self.nodes.get(&to).is_some_and(Node::is_up);
            if let Some(until) = self.nodes.get(&to).and_then(|n| n.paused_until)
                && up
                && until > self.now
            {
                // A paused process reads its socket only when it resumes.
                self.net.push(env.msg, until, env.snapshot);
                continue;
            }
            if !up || self.net.is_cut(from, to) {
                let by_partition = up;
                self.lost(from, to, is_snapshot, by_partition);
                continue;
            }
            self.stats.msgs_delivered += 1;
            self.trace(|| describe("deliver", &env.msg));
            let node = self.nodes.get_mut(&to).expect("checked up above");
            if let Some(data) = env.snapshot {
                node.incoming.insert(data.index, data);
            }
            if let Some(raw) = node.raw.as_mut() {
                raw.step(env.msg);
            }
            stepped = Some(to);
            if is_snapshot {
                snapshots_delivered.push((from, to));
            }
        }
        if let Some(to) = stepped {
            self.after_op(to);
        }
        for (from, to) in snapshots_delivered {
            self.feedback
                .push_back(Feedback::Snapshot { from, to, ok: true });
        }
        self.flush_feedback();
    }

    fn lost(&mut self, from: NodeId, to: NodeId, is_snapshot: bool, by_partition: bool) {
        self.stats.msgs_dropped += 1;
        if is_snapshot {
            self.feedback.push_back(Feedback::Snapshot {
                from,
                to,
                ok: false,
            });
        } else if by_partition && self.rng.chance(self.opts.report_unreachable) {
            self.feedback.push_back(Feedback::Unreachable { from, to });
        }
    }

    /// Puts a message on the wire, applying the link faults.
    fn send(&mut self, msg: Message) {
        self.stats.msgs_sent += 1;
        if let MessageBody::AppendEntries {
            prev_log_index,
            entries,
            ..
        } = &msg.body
            && !entries.is_empty()
            && self
                .nodes
                .get(&msg.from)
                .and_then(|n| n.raw.as_ref())
                .is_some_and(|raw| *prev_log_index < raw.snapshot_index())
        {
            self.stats.trailing_appends += 1;
        }
        let (from, to) = (msg.from, msg.to);
        if let MessageBody::RequestVoteResponse {
            pre_vote: false,
            granted: true,
        } = msg.body
            && let Err(v) = self.checker.on_vote_granted(from, msg.term, to)
        {
            self.fail(v);
        }
        let snapshot = match &msg.body {
            MessageBody::InstallSnapshot { meta } => {
                let stored = self
                    .nodes
                    .get(&from)
                    .and_then(|n| n.disk.snapshot.as_ref())
                    .map(|(m, d)| (m.index, m.term, *d));
                match stored {
                    Some((i, t, d)) if i == meta.index && t == meta.term => Some(d),
                    other => {
                        self.contract(
                            from,
                            format!(
                                "InstallSnapshot (index {}, term {}) to n{to}, but the sender's \
                                 durable snapshot is {:?}",
                                meta.index,
                                meta.term,
                                other.map(|(i, t, _)| (i, t))
                            ),
                        );
                        return;
                    }
                }
            }
            _ => None,
        };
        if self.net.is_cut(from, to) {
            self.lost(from, to, snapshot.is_some(), true);
            return;
        }
        let f = self.net.faults;
        if self.rng.chance(f.drop) {
            self.lost(from, to, snapshot.is_some(), false);
            return;
        }
        let copies = if self.rng.chance(f.dup) {
            self.stats.msgs_duplicated += 1;
            2
        } else {
            1
        };
        for _ in 0..copies {
            let delay = if self.rng.chance(f.delay) {
                self.rng.range(1, f.max_delay.max(1))
            } else {
                0
            };
            self.net.push(msg.clone(), self.now + delay, snapshot);
        }
    }

    /// After any call into a core: observe it, drain its `Ready`s, pass on transport feedback.
    fn after_op(&mut self, id: NodeId) {
        self.settle(id);
        self.flush_feedback();
    }

    fn settle(&mut self, id: NodeId) {
        // A core that produces Readies forever is a bug; 64 in a row is far beyond any real need.
        for _ in 0..64 {
            self.observe(id);
            let has_ready = self
                .nodes
                .get(&id)
                .and_then(|n| n.raw.as_ref())
                .is_some_and(RawNode::has_ready);
            if !has_ready {
                self.check_durable_log(id);
                self.maybe_auto_snapshot(id);
                return;
            }
            self.handle_ready(id);
        }
        self.contract(
            id,
            "has_ready() still true after 64 Readies in a row".into(),
        );
    }

    /// With no `Ready` pending, everything in the core's log has been handed out for
    /// persistence, so the core's log and the durable one must agree at their ends and at the
    /// commit index (otherwise a restart would come back with a different log).
    fn check_durable_log(&mut self, id: NodeId) {
        let Some(node) = self.nodes.get(&id) else {
            return;
        };
        let Some(raw) = node.raw.as_ref() else {
            return;
        };
        let d = &node.disk;
        let (first, last, commit) = (raw.first_index(), raw.last_index(), raw.commit_index());
        // The core may keep a trailing log below the snapshot; the disk starts right after it.
        let agree = raw.snapshot_index() == d.snapshot_index()
            && first <= d.snapshot_index() + 1
            && last == d.last_index()
            && raw.log_term(last) == d.term_at(last)
            && raw.log_term(commit) == d.term_at(commit);
        if !agree {
            let detail = format!(
                "with no Ready pending, the core's log (first {first}, last {last} of term {:?}, \
                 commit {commit} of term {:?}) differs from the durable log (snapshot {}, last {} \
                 of term {:?}, term {:?} at {commit}): some change never came out in a Ready",
                raw.log_term(last),
                raw.log_term(commit),
                d.snapshot_index(),
                d.last_index(),
                d.term_at(d.last_index()),
                d.term_at(commit)
            );
            self.contract(id, detail);
        }
    }

    fn flush_feedback(&mut self) {
        let mut budget = 10_000;
        while let Some(fb) = self.feedback.pop_front() {
            budget -= 1;
            if budget == 0 {
                self.contract(0, "transport feedback never settles".into());
                self.feedback.clear();
                return;
            }
            let (from, to) = match fb {
                Feedback::Snapshot { from, to, .. } | Feedback::Unreachable { from, to } => {
                    (from, to)
                }
            };
            let Some(raw) = self.nodes.get_mut(&from).and_then(|n| n.raw.as_mut()) else {
                continue;
            };
            match fb {
                Feedback::Snapshot { ok, .. } => raw.report_snapshot(to, ok),
                Feedback::Unreachable { .. } => raw.report_unreachable(to),
            }
            self.settle(from);
        }
    }

    /// Checks what may have changed on `id`: a new leader (election safety, membership, leader
    /// completeness), a leader's commit index (commitment rule), the highest commit anywhere.
    fn observe(&mut self, id: NodeId) {
        let Some(node) = self.nodes.get_mut(&id) else {
            return;
        };
        let Some(raw) = node.raw.as_ref() else {
            return;
        };
        let (role, term, commit) = (raw.role(), raw.term(), raw.commit_index());
        self.checker.max_commit = self.checker.max_commit.max(commit);
        if role != Role::Leader {
            return;
        }
        let mut result = Ok(());
        let became_leader = node.leader_term != Some(term);
        if became_leader {
            node.leader_term = Some(term);
            node.commit_at_election = commit;
            self.stats.elections += 1;
            if let Some((t, target)) = self.pending_transfer
                && term > t
            {
                if target == id {
                    self.stats.transfers_done += 1;
                }
                self.pending_transfer = None;
            }
            if self.opts.trace {
                eprintln!("[t{:>5}] n{id} became leader of term {term}", self.now);
            }
            result = self
                .checker
                .on_leader(id, term, &node.disk, raw.conf_state());
        }
        if result.is_ok() {
            result = self.checker.on_leader_commit(
                id,
                term,
                commit,
                node.commit_at_election,
                &node.disk,
            );
        }
        if became_leader && result.is_ok() {
            result = self.check_leases(id, term);
        }
        if let Err(v) = result {
            self.fail(v);
        }
    }

    /// Lease safety: `id` just became leader of `term`; no older leader may still hold a lease.
    fn check_leases(&self, id: NodeId, term: Term) -> Result<(), Violation> {
        // Leases rest on voters refusing votes while they hear from a leader, which only
        // check-quorum provides: without it a driver must not serve lease reads at all.
        if !self.opts.check_quorum {
            return Ok(());
        }
        for n in self.nodes.values() {
            let Some(raw) = n.raw.as_ref() else {
                continue;
            };
            if n.id == id || raw.role() != Role::Leader || raw.term() >= term {
                continue;
            }
            if n.lease.is_valid(raw, self.now) {
                let until = n.lease.until().unwrap_or_default();
                return Err(Violation {
                    invariant: Invariant::Lease,
                    tick: self.now,
                    node: Some(id),
                    detail: format!(
                        "n{id} became leader of term {term} while n{} (leader of term {}) holds \
                         a read lease until tick {until} (exclusive): its lease reads could be \
                         stale",
                        n.id,
                        raw.term()
                    ),
                });
            }
        }
        Ok(())
    }

    fn should_crash(&mut self, id: NodeId, point: CrashPoint, vote_grant: bool) -> bool {
        let Some(node) = self.nodes.get_mut(&id) else {
            return false;
        };
        if node.crash_at == Some(point) {
            self.trace(|| format!("crash n{id} at {point:?} (armed)"));
            self.crash(id);
            return true;
        }
        let rc = self.opts.ready_crashes;
        let p = match point {
            CrashPoint::BeforePersist => {
                rc.before_persist + if vote_grant { rc.on_vote_grant } else { 0.0 }
            }
            CrashPoint::BeforePersistedMessages => rc.before_persisted_messages,
        };
        if self.rng.chance(p) {
            let (lo, hi) = rc.down_ticks;
            let back = self.now + self.rng.range(lo, hi).max(1);
            self.trace(|| format!("crash n{id} at {point:?}, back at t{back}"));
            self.crash_until(id, back);
            return true;
        }
        false
    }

    /// Processes one `Ready` of `id` in the contract's order, with the crash points in between.
    fn handle_ready(&mut self, id: NodeId) {
        let Some(raw) = self.nodes.get_mut(&id).and_then(|n| n.raw.as_mut()) else {
            return;
        };
        let rd = raw.ready();
        let grants_vote = rd.messages.iter().chain(&rd.persisted_messages).any(|m| {
            matches!(
                m.body,
                MessageBody::RequestVoteResponse {
                    pre_vote: false,
                    granted: true
                }
            )
        });

        // 1. Messages that need nothing durable go out at once. A lease-reading driver notes the
        // time of a heartbeat round just before sending it.
        let (now, election_tick) = (self.now, self.opts.election_tick);
        if rd.acked_round.is_some() {
            self.stats.leases += 1;
        }
        if let Some(node) = self.nodes.get_mut(&id) {
            let term = node.raw.as_ref().map_or(0, RawNode::term);
            node.lease
                .on_ready(term, &rd, now, |sent| sent + election_tick);
        }
        for m in &rd.messages {
            self.trace(|| describe("send", m));
            self.send(m.clone());
        }
        if self.should_crash(id, CrashPoint::BeforePersist, grants_vote) {
            self.stats.ready_crashes += 1;
            return;
        }

        // 2. Persist: snapshot, then entries, then hard state.
        let node = self.nodes.get_mut(&id).expect("running above");
        let mut result: Result<(), Violation> = Ok(());
        if let Some(meta) = &rd.snapshot {
            let Some(data) = node.incoming.get(&meta.index).copied() else {
                self.contract(
                    id,
                    format!(
                        "Ready.snapshot asks to install a snapshot at index {} (term {}) that \
                         was never delivered to this node",
                        meta.index, meta.term
                    ),
                );
                return;
            };
            if meta.index < node.sm.applied {
                let applied = node.sm.applied;
                self.contract(
                    id,
                    format!(
                        "Ready.snapshot at index {} would roll back the state machine, which \
                         applied {applied}",
                        meta.index
                    ),
                );
                return;
            }
            result = self.checker.on_snapshot(id, meta, &data);
            node.disk.install_snapshot(meta.clone(), data);
            node.sm = StateMachine::restore(Some(&data));
            node.incoming.retain(|i, _| *i > meta.index);
            self.stats.snapshots_installed += 1;
            if self.opts.trace {
                eprintln!(
                    "[t{:>5}] n{id} installs snapshot {}/{}",
                    self.now, meta.index, meta.term
                );
            }
        }
        if result.is_ok() && !rd.entries.is_empty() {
            result = match node.disk.append(&rd.entries) {
                Ok(written) => self.checker.on_persist(id, &written, &rd.entries),
                Err(why) => Err(Violation {
                    invariant: Invariant::Contract,
                    tick: self.now,
                    node: Some(id),
                    detail: why,
                }),
            };
        }
        if let Some(hs) = rd.hard_state {
            if result.is_ok() {
                result = self.checker.on_hard_state(id, &node.disk.hard_state, &hs);
            }
            node.disk.hard_state = hs;
        }
        if let Err(v) = result {
            self.fail(v);
            return;
        }
        if self.should_crash(id, CrashPoint::BeforePersistedMessages, false) {
            self.stats.ready_crashes += 1;
            return;
        }

        // 3. Messages that promise durability. An append acknowledgement promises that the
        // acknowledged entries are on this node's disk: check that it keeps the promise.
        if let Err(v) = self.check_acks_durable(id, &rd.persisted_messages) {
            self.fail(v);
            return;
        }
        for m in &rd.persisted_messages {
            self.trace(|| describe("send", m));
            self.send(m.clone());
        }

        // 4. Apply, then confirm and serve reads.
        for e in &rd.committed_entries {
            if let Err(v) = self.apply(id, e) {
                self.fail(v);
                return;
            }
        }
        for rs in &rd.read_states {
            if let Err(v) = self.checker.on_read_state(id, rs) {
                self.fail(v);
                return;
            }
        }
        let record = self.opts.record_applied;
        let node = self.nodes.get_mut(&id).expect("running above");
        node.pending_reads.extend(rd.read_states.iter().copied());
        let applied = node.sm.applied;
        let before = node.pending_reads.len();
        node.pending_reads.retain(|rs| {
            let serve = rs.index <= applied;
            if serve && record {
                node.served_reads.push((rs.ctx, rs.index));
            }
            !serve
        });
        self.stats.reads_served += (before - node.pending_reads.len()) as u64;

        // 5. Done.
        if let Some(raw) = node.raw.as_mut() {
            raw.advance(&rd);
        }
    }

    /// Every successful append response in `msgs` acknowledges entries up to its index: the
    /// node's disk must hold its log up to there, as its core has it (a crash now must not lose
    /// an entry that a leader counts towards a quorum).
    fn check_acks_durable(&self, id: NodeId, msgs: &[Message]) -> Result<(), Violation> {
        let Some(node) = self.nodes.get(&id) else {
            return Ok(());
        };
        let Some(raw) = node.raw.as_ref() else {
            return Ok(());
        };
        for m in msgs {
            let MessageBody::AppendEntriesResponse {
                success: true,
                index,
                ..
            } = m.body
            else {
                continue;
            };
            // At or below the durable snapshot, entries are committed and held by the snapshot.
            if index <= node.disk.snapshot_index() || m.term != raw.term() {
                continue;
            }
            let durable = node.disk.term_at(index);
            let in_core = raw.log_term(index);
            if durable.is_none() || (in_core.is_some() && durable != in_core) {
                return Err(Violation {
                    invariant: Invariant::Contract,
                    tick: self.now,
                    node: Some(id),
                    detail: format!(
                        "n{id} acknowledges entries up to index {index} to n{} but its disk \
                         holds {:?} there (durable log ends at {}, snapshot {}): an \
                         acknowledged entry is not durable",
                        m.to,
                        durable,
                        node.disk.last_index(),
                        node.disk.snapshot_index()
                    ),
                });
            }
        }
        Ok(())
    }

    fn apply(&mut self, id: NodeId, e: &Entry) -> Result<(), Violation> {
        let node = self.nodes.get_mut(&id).expect("running");
        let contract = |detail: String| Violation {
            invariant: Invariant::Contract,
            tick: self.now,
            node: Some(id),
            detail,
        };
        if e.index != node.sm.applied + 1 {
            return Err(contract(format!(
                "committed entry {} handed out after applied index {} (apply order)",
                e.index, node.sm.applied
            )));
        }
        match node.disk.entry(e.index) {
            Some(d) if d.term == e.term && d.payload == e.payload => {}
            other => {
                return Err(contract(format!(
                    "committed entry (index {}, term {}) is not in the durable log (there: {:?})",
                    e.index,
                    e.term,
                    other.map(|d| d.term)
                )));
            }
        }
        let term = node.raw.as_ref().map_or(0, RawNode::term);
        let first_time = self.checker.applied_at(e.index).is_none();
        node.sm.apply(e);
        if self.opts.record_applied
            && let EntryPayload::Normal(data) = &e.payload
        {
            node.applied_log.push((e.index, data.clone()));
        }
        if first_time
            && matches!(
                e.payload,
                EntryPayload::Config {
                    change: Some(_),
                    ..
                }
            )
        {
            self.stats.conf_changes_committed += 1;
        }
        self.checker.on_apply(id, term, e, node.sm.hash)
    }

    fn maybe_auto_snapshot(&mut self, id: NodeId) {
        let Some(threshold) = self.opts.snapshot_threshold else {
            return;
        };
        let Some(node) = self.nodes.get(&id) else {
            return;
        };
        if node.is_up() && node.sm.applied >= node.disk.snapshot_index() + threshold.max(1) {
            self.snapshot(id);
        }
    }

    /// Takes a snapshot of `id`'s state machine at its applied index, stores it durably and
    /// compacts the log up to it (disk and core). Returns whether a snapshot was taken.
    pub fn snapshot(&mut self, id: NodeId) -> bool {
        let Some(node) = self.nodes.get_mut(&id) else {
            return false;
        };
        let Some(raw) = node.raw.as_mut() else {
            return false;
        };
        let index = node.sm.applied;
        if index <= node.disk.snapshot_index() || raw.has_ready() {
            // Nothing new to cover, or a `Ready` (perhaps with an `InstallSnapshot` for the
            // current snapshot) is pending: snapshot later.
            return false;
        }
        let meta = match raw.snapshot_meta(index) {
            Ok(meta) => meta,
            Err(e) => {
                self.contract(
                    id,
                    format!("snapshot_meta({index}) refused an applied index: {e}"),
                );
                return false;
            }
        };
        let (Some(chain), Some(term)) = (node.disk.chain_at(index), node.disk.term_at(index))
        else {
            self.contract(
                id,
                format!("applied index {index} is not in the durable log"),
            );
            return false;
        };
        if term != meta.term || meta.index != index {
            self.contract(
                id,
                format!(
                    "snapshot_meta({index}) says (index {}, term {}) but the log has term {term}",
                    meta.index, meta.term
                ),
            );
            return false;
        }
        let data = SnapData {
            index,
            term,
            sm_hash: node.sm.hash,
            chain,
        };
        if let Err(v) = self.checker.on_snapshot(id, &meta, &data) {
            self.fail(v);
            return false;
        }
        node.disk.compact(meta, data);
        if let Err(e) = raw.compact(index, self.opts.snapshot_trailing) {
            self.contract(
                id,
                format!("compact({index}) after a durable snapshot failed: {e}"),
            );
            return false;
        }
        self.stats.snapshots_taken += 1;
        self.trace(|| format!("n{id} snapshot+compact at {index}"));
        true
    }

    // ----- client operations ----------------------------------------------------------------

    fn with_raw<T>(
        &mut self,
        id: NodeId,
        f: impl FnOnce(&mut RawNode) -> Result<T, Error>,
    ) -> Result<T, Error> {
        let now = self.now;
        let Some(raw) = self
            .nodes
            .get_mut(&id)
            .filter(|n| !n.is_paused(now))
            .and_then(|n| n.raw.as_mut())
        else {
            return Err(Error::NotLeader { leader: None });
        };
        let result = f(raw);
        self.after_op(id);
        result
    }

    /// Proposes a command at `id` (which should be the leader). A down node answers
    /// `NotLeader { leader: None }`.
    pub fn propose(&mut self, id: NodeId, data: impl Into<Bytes>) -> Result<Index, Error> {
        let data = data.into();
        let r = self.with_raw(id, |raw| raw.propose(data));
        if r.is_ok() {
            self.stats.proposals += 1;
        }
        self.trace(|| format!("propose at n{id}: {r:?}"));
        r
    }

    /// Proposes a membership change at `id`.
    pub fn propose_conf_change(&mut self, id: NodeId, cc: ConfChange) -> Result<Index, Error> {
        let r = self.with_raw(id, |raw| raw.propose_conf_change(cc.clone()));
        if r.is_ok() {
            self.stats.conf_changes_proposed += 1;
        }
        self.trace(|| {
            format!(
                "conf change at n{id} {:?} n{}: {r:?}",
                cc.change_type, cc.node_id
            )
        });
        r
    }

    /// Asks leader `leader` to add `new` as a learner; on success starts `new` (empty state)
    /// if it is not running yet. The leader promotes it once it has caught up.
    pub fn add_learner(&mut self, leader: NodeId, new: NodeId) -> Result<Index, Error> {
        let r = self.propose_conf_change(
            leader,
            ConfChange {
                change_type: ConfChangeType::AddLearner,
                node_id: new,
                context: Bytes::new(),
            },
        );
        if r.is_ok() {
            self.add_spare(new);
        }
        r
    }

    /// Asks leader `leader` to remove `id` (voter or learner, possibly itself).
    pub fn remove_node(&mut self, leader: NodeId, id: NodeId) -> Result<Index, Error> {
        self.propose_conf_change(
            leader,
            ConfChange {
                change_type: ConfChangeType::RemoveNode,
                node_id: id,
                context: Bytes::new(),
            },
        )
    }

    /// Starts a ReadIndex read at `id`; returns its `ctx`. The checker notes the highest index
    /// committed anywhere right now; the confirmed read must not be older.
    pub fn read_index(&mut self, id: NodeId) -> Result<u64, Error> {
        self.next_ctx += 1;
        let ctx = self.next_ctx;
        let now = self.now;
        let Some(raw) = self
            .nodes
            .get_mut(&id)
            .filter(|n| !n.is_paused(now))
            .and_then(|n| n.raw.as_mut())
        else {
            return Err(Error::NotLeader { leader: None });
        };
        let r = raw.read_index(ctx);
        if r.is_ok() {
            self.checker.on_read_index(id, ctx);
            self.stats.reads_requested += 1;
        }
        self.after_op(id);
        r.map(|()| ctx)
    }

    /// Asks leader `id` to hand leadership to `target` (0 = the most caught-up voter).
    pub fn transfer_leader(&mut self, id: NodeId, target: NodeId) -> Result<NodeId, Error> {
        let term = self
            .nodes
            .get(&id)
            .and_then(|n| n.raw.as_ref())
            .map_or(0, RawNode::term);
        let r = self.with_raw(id, |raw| raw.transfer_leader(target));
        if let Ok(t) = r
            && t != id
        {
            self.stats.transfers += 1;
            self.pending_transfer = Some((term, t));
        }
        self.trace(|| format!("transfer at n{id} to n{target}: {r:?}"));
        r
    }

    /// Makes `id` start an election now.
    ///
    /// This voids every current leader's read lease for the rest of its term: a lease assumes
    /// that the nodes which acknowledged the leader's round start no election before their
    /// election timeout, and a forced campaign breaks exactly that (the campaigner may be one of
    /// them, and its own vote counts).
    pub fn campaign(&mut self, id: NodeId) {
        let now = self.now;
        if self
            .nodes
            .get(&id)
            .is_some_and(|n| n.is_up() && !n.is_paused(now))
        {
            for n in self.nodes.values_mut() {
                if n.raw.as_ref().is_some_and(|r| r.role() == Role::Leader) {
                    n.lease.forfeit();
                }
            }
        }
        let _ = self.with_raw(id, |raw| {
            raw.campaign();
            Ok(())
        });
    }

    /// Campaigns at `id` and delivers everything until quiet; returns whether `id` now leads.
    pub fn elect(&mut self, id: NodeId) -> bool {
        self.campaign(id);
        self.deliver_all();
        self.role(id) == Some(Role::Leader)
    }

    /// The recovered state `id` would restart from (its disk).
    pub fn durable_state(&self, id: NodeId) -> InitialState {
        self.node(id).disk.initial_state()
    }

    /// Running members that are voters in `leader`'s configuration and have applied `index`.
    pub fn voters_applied(&self, leader: NodeId, index: Index) -> usize {
        let Some(raw) = self.nodes.get(&leader).and_then(|n| n.raw.as_ref()) else {
            return 0;
        };
        raw.conf_state()
            .voters
            .iter()
            .filter(|v| self.nodes.get(v).is_some_and(|n| n.sm.applied >= index))
            .count()
    }

    /// Ids of running nodes that still run but whose removal committed.
    pub fn removed_but_running(&self) -> BTreeSet<NodeId> {
        self.nodes
            .values()
            .filter(|n| n.is_up() && self.checker.is_removed(n.id))
            .map(|n| n.id)
            .collect()
    }
}

/// One line describing a message, for traces.
fn describe(verb: &str, m: &Message) -> String {
    let detail = match &m.body {
        MessageBody::AppendEntries {
            prev_log_index,
            prev_log_term,
            entries,
            leader_commit,
        } => format!(
            " prev={prev_log_index}/{prev_log_term} n={} commit={leader_commit}",
            entries.len()
        ),
        MessageBody::AppendEntriesResponse { success, index, .. } => {
            format!(" ok={success} index={index}")
        }
        MessageBody::RequestVote {
            last_log_index,
            last_log_term,
            ..
        } => format!(" last={last_log_index}/{last_log_term}"),
        MessageBody::RequestVoteResponse { granted, .. } => format!(" granted={granted}"),
        MessageBody::InstallSnapshot { meta } => format!(" snap={}/{}", meta.index, meta.term),
        MessageBody::Heartbeat { commit, round } => format!(" commit={commit} round={round}"),
        _ => String::new(),
    };
    format!(
        "{verb} {} n{}->n{} t{}{detail}",
        m.body.name(),
        m.from,
        m.to,
        m.term
    )
}
