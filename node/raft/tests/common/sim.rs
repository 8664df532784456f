//! The randomized driver: one seed → one run of a cluster under a random workload and random
//! faults, with periods in which the faults stop and the cluster must make progress (liveness).
//!
//! A run is `Profile::epochs` repetitions of two phases, then a final convergence check:
//! 1. **chaos** (`Profile::ticks` ticks): proposals, ReadIndex reads, membership changes (add a
//!    spare as learner — promoted automatically — or remove a voter or learner, the leader
//!    included, never leaving fewer than 3 voters), leader transfers, forced campaigns,
//!    snapshots with compaction, clean crashes and crashes inside `Ready` processing, process
//!    pauses, partitions (isolate a node, the leader, a random split, one-way cuts), and
//!    per-message drops, duplicates and delays;
//! 2. **healed**: every partition heals, paused processes resume, crashed nodes restart, the
//!    network stops losing messages; within `LIVENESS_TIMEOUTS` election timeouts a leader must
//!    be elected and a fresh proposal must commit (be applied by a quorum of that leader's
//!    voters).
//!
//! Finally every member must catch up with the leader's commit index (convergence).
//! The checker runs after every step of every phase (see `check.rs`).

use bytes::Bytes;
use raftkv_raft::{NodeId, Role};

use super::check::{Invariant, Violation};
use super::cluster::{Cluster, ClusterOpts, ReadyCrashes, Stats};
use super::net::NetFaults;
use super::rng::Rng;

/// After the last fault heals, a leader must be elected and a fresh entry committed within this
/// many (minimum) election timeouts.
pub const LIVENESS_TIMEOUTS: u64 = 10;

/// A planted bug, or `None` (always `None` when the feature is off).
#[cfg(feature = "planted-bugs")]
pub type BugOpt = Option<raftkv_raft::planted::Bug>;
/// A planted bug, or `None` (always `None` when the feature is off).
#[cfg(not(feature = "planted-bugs"))]
pub type BugOpt = Option<std::convert::Infallible>;

/// Rates and sizes of one randomized run. All probabilities are per tick unless noted.
#[derive(Clone, Debug)]
pub struct Profile {
    /// A label for reports.
    pub name: String,
    /// Length of each chaos phase in ticks.
    pub ticks: u64,
    /// How many times to go through chaos, heal and the liveness check.
    pub epochs: u64,
    /// Initial voters (ids `1..=voters`).
    pub voters: u64,
    /// Spare ids (`voters+1 ..= voters+spares`) that may join as learners.
    pub spares: u64,
    /// Core timing and flow control.
    pub election_tick: u64,
    /// Ticks between heartbeats.
    pub heartbeat_tick: u64,
    /// Pre-vote on.
    pub pre_vote: bool,
    /// Check-quorum on.
    pub check_quorum: bool,
    /// AppendEntries in flight per follower.
    pub max_inflight_msgs: usize,
    /// Bytes of entries per AppendEntries.
    pub max_size_per_msg: u64,
    /// Per-message link faults during chaos.
    pub net: NetFaults,
    /// Probability of `report_unreachable` when a partition drops a message.
    pub report_unreachable: f64,
    /// Crashes inside `Ready` processing (per `Ready`).
    pub ready_crashes: ReadyCrashes,
    /// Probability of a clean crash of a random running node.
    pub crash: f64,
    /// Ticks a crashed node stays down.
    pub down_ticks: (u64, u64),
    /// Probability of pausing a process (the leader half of the time) for up to three election
    /// timeouts: it keeps its state but neither ticks nor reads messages meanwhile.
    pub pause: f64,
    /// Probability of starting a partition while none is in force.
    pub partition: f64,
    /// Probability of healing while a partition is in force.
    pub heal: f64,
    /// Relative weights of the partition kinds: isolate a random node, isolate the leader,
    /// split into two random groups, a few one-way cuts.
    pub partition_kinds: [u64; 4],
    /// Probability of crashing the leader (on top of `crash`, which picks any node).
    pub crash_leader: f64,
    /// Probability of a batch of proposals.
    pub propose: f64,
    /// Largest batch of proposals in one tick.
    pub max_batch: u64,
    /// Probability of a ReadIndex read.
    pub read: f64,
    /// Probability of a membership change.
    pub conf_change: f64,
    /// Probability of a leader transfer.
    pub transfer: f64,
    /// Probability that a random node campaigns right now (disruption).
    pub campaign: f64,
    /// Auto-snapshot distance (see [`ClusterOpts::snapshot_threshold`]).
    pub snapshot_threshold: Option<u64>,
    /// Entries kept in the core's log below each snapshot (see
    /// [`ClusterOpts::snapshot_trailing`]).
    pub snapshot_trailing: u64,
    /// Check the §5.4.2 commitment rule directly.
    pub commit_rule: bool,
    /// Shut removed members down once their removal committed (after this many ticks at most).
    pub decommission_after: Option<u64>,
    /// Most messages stepped into a node per `Ready` (see [`ClusterOpts::batch_delivery`]).
    pub batch_delivery: usize,
    /// Probability of wiping a random running node's disk (it restarts empty after
    /// `down_ticks` and must catch up before it votes); never while another wiped node is still
    /// catching up.
    pub wipe: f64,
}

impl Profile {
    /// The standard mix for `tests/simulation.rs`: a 5-voter cluster with 6 spares and production
    /// settings (pre-vote, check-quorum), 4 epochs of 500 chaos ticks, with fault and workload
    /// rates drawn per seed so that the seeds together cover calm and stormy networks, small and
    /// large messages, frequent and rare snapshots, removed members that linger or go away.
    pub fn randomized(seed: u64) -> Self {
        let mut r = Rng::new(seed ^ 0x7072_6f66_696c_6521);
        let mut pick = |xs: &[f64]| xs[r.below(xs.len() as u64) as usize];
        let drop = pick(&[0.0, 0.01, 0.03, 0.1]);
        let dup = pick(&[0.0, 0.01, 0.05]);
        // 1.0: every message takes at least a tick, so timers race with replies all the time.
        let delay = pick(&[0.0, 0.1, 0.3, 1.0]);
        let max_delay = pick(&[2.0, 5.0, 15.0]) as u64;
        let crash = pick(&[0.0, 0.002, 0.006]);
        let pause = pick(&[0.0, 0.003, 0.01]);
        let in_ready = pick(&[0.0, 0.0005, 0.002]);
        let partition = pick(&[0.0, 0.01, 0.03]);
        let heal = pick(&[0.03, 0.08]);
        let propose = pick(&[0.3, 0.6, 0.9]);
        let read = pick(&[0.05, 0.2]);
        let conf_change = pick(&[0.005, 0.02]);
        let transfer = pick(&[0.002, 0.01]);
        let snapshot = pick(&[0.0, 5.0, 20.0, 60.0]) as u64;
        let inflight = pick(&[1.0, 4.0, 256.0]) as usize;
        let size = pick(&[64.0, 600.0, 1_048_576.0]) as u64;
        let decommission = pick(&[0.0, 1.0]);
        // Most seeds deliver several messages per Ready, as the node's driver does.
        let batch = pick(&[1.0, 4.0, 16.0, 64.0]) as usize;
        let wipe = pick(&[0.0, 0.001, 0.003]);
        // Drawn last so that the earlier draws (and the seeds' known profiles) stay as they were.
        let trailing = pick(&[0.0, 3.0, 20.0, 200.0]) as u64;
        Self {
            name: format!("randomized({seed})"),
            ticks: 500,
            epochs: 4,
            voters: 5,
            spares: 6,
            election_tick: 10,
            heartbeat_tick: 1,
            pre_vote: true,
            check_quorum: true,
            max_inflight_msgs: inflight,
            max_size_per_msg: size,
            net: NetFaults {
                drop,
                dup,
                delay,
                max_delay,
                reorder: true,
            },
            report_unreachable: 0.2,
            ready_crashes: ReadyCrashes {
                before_persist: in_ready,
                before_persisted_messages: in_ready,
                on_vote_grant: in_ready * 20.0,
                down_ticks: (1, 30),
            },
            crash,
            down_ticks: (1, 40),
            pause,
            partition,
            heal,
            partition_kinds: [1, 1, 1, 1],
            crash_leader: 0.0,
            propose,
            max_batch: 3,
            read,
            conf_change,
            transfer,
            campaign: 0.002,
            snapshot_threshold: (snapshot > 0).then_some(snapshot),
            snapshot_trailing: trailing,
            commit_rule: true,
            decommission_after: (decommission > 0.0).then_some(30),
            batch_delivery: batch,
            wipe,
        }
    }

    /// A named variation of [`Profile::randomized`], for exploring configurations other than
    /// production's (`SIM_VARIANT=<name>` in `tests/simulation.rs`):
    /// - `default`: [`Profile::randomized`] unchanged;
    /// - `no-pre-vote`, `no-check-quorum`, `no-pre-vote-no-check-quorum`: those features off;
    /// - `slow-heartbeat`: heartbeat every 3 ticks; `short-election`: election timeout of 4 ticks;
    /// - `three-voters`: 3 initial voters (4 spares);
    /// - `tiny-messages`: one entry per AppendEntries, one in flight;
    /// - `snapshot-always`: snapshot after every applied entry;
    /// - `lossy`: 30 % drops, 20 % duplicates.
    pub fn variant(name: &str, seed: u64) -> Option<Self> {
        let mut p = Self::randomized(seed);
        match name {
            "default" => {}
            "no-pre-vote" => p.pre_vote = false,
            "no-check-quorum" => p.check_quorum = false,
            "no-pre-vote-no-check-quorum" => {
                p.pre_vote = false;
                p.check_quorum = false;
            }
            "slow-heartbeat" => p.heartbeat_tick = 3,
            "short-election" => p.election_tick = 4,
            "three-voters" => {
                p.voters = 3;
                p.spares = 4;
            }
            "tiny-messages" => {
                p.max_inflight_msgs = 1;
                p.max_size_per_msg = 1;
            }
            "snapshot-always" => p.snapshot_threshold = Some(1),
            "lossy" => {
                p.net.drop = 0.3;
                p.net.dup = 0.2;
            }
            _ => return None,
        }
        p.name = format!("{name}({seed})");
        Some(p)
    }

    fn cluster_opts(&self, seed: u64, bug: BugOpt, trace: bool) -> ClusterOpts {
        #[cfg(not(feature = "planted-bugs"))]
        let _ = bug;
        ClusterOpts {
            seed,
            voters: self.voters,
            election_tick: self.election_tick,
            heartbeat_tick: self.heartbeat_tick,
            pre_vote: self.pre_vote,
            check_quorum: self.check_quorum,
            max_inflight_msgs: self.max_inflight_msgs,
            max_size_per_msg: self.max_size_per_msg,
            net: self.net,
            report_unreachable: self.report_unreachable,
            ready_crashes: self.ready_crashes,
            snapshot_threshold: self.snapshot_threshold,
            snapshot_trailing: self.snapshot_trailing,
            strict: false,
            trace,
            commit_rule: self.commit_rule,
            record_applied: false,
            batch_delivery: self.batch_delivery,
            #[cfg(feature = "planted-bugs")]
            bug,
        }
    }
}

/// What one run did and whether it broke anything.
#[derive(Clone, Debug)]
pub struct RunOutcome {
    /// The seed.
    pub seed: u64,
    /// Counters.
    pub stats: Stats,
    /// The first violation, if any.
    pub violation: Option<Violation>,
}

/// The driver's own state for one run.
struct Driver {
    rng: Rng,
    profile: Profile,
    seed: u64,
    proposals: u64,
    /// Spare ids never started yet.
    spares: Vec<NodeId>,
    /// When removed-and-still-running nodes get shut down.
    decommission_at: Vec<(NodeId, u64)>,
}

/// Runs one seed with `profile` (and optionally a planted bug). `SIM_TRACE=1` prints every event.
pub fn run(seed: u64, profile: &Profile, bug: BugOpt) -> RunOutcome {
    let trace = std::env::var_os("SIM_TRACE").is_some();
    let mut c = Cluster::new(profile.cluster_opts(seed, bug, trace));
    let mut d = Driver {
        rng: Rng::new(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ 0xd1b5_4a32_d192_ed03),
        profile: profile.clone(),
        seed,
        proposals: 0,
        spares: (profile.voters + 1..=profile.voters + profile.spares).collect(),
        decommission_at: Vec::new(),
    };
    let violation = d.run(&mut c).err();
    RunOutcome {
        seed,
        stats: c.stats(),
        violation,
    }
}

impl Driver {
    fn run(&mut self, c: &mut Cluster) -> Result<(), Violation> {
        for _ in 0..self.profile.epochs {
            c.set_net_faults(self.profile.net);
            c.opts.ready_crashes = self.profile.ready_crashes;
            for _ in 0..self.profile.ticks {
                self.chaos_step(c);
                c.check()?;
                c.tick_all(1);
                c.check()?;
            }
            self.heal(c);
            c.check()?;
            self.liveness(c)?;
        }
        self.convergence(c)
    }

    fn payload(&mut self, c: &Cluster) -> Bytes {
        self.proposals += 1;
        let mut s = format!("s{}-p{}", self.seed, self.proposals).into_bytes();
        // Now and then an entry larger than a whole AppendEntries message: it must still go out,
        // alone (Config::max_size_per_msg).
        if self.rng.chance(0.02) {
            let big = (c.opts.max_size_per_msg as usize).clamp(1, 4096) * 2;
            s.resize(big, b'x');
        }
        Bytes::from(s)
    }

    fn chaos_step(&mut self, c: &mut Cluster) {
        let p = self.profile.clone();
        let now = c.now;

        // Faults.
        if self.rng.chance(p.crash) {
            let running = c.running();
            if let Some(id) = self.rng.pick(&running) {
                let back = now + self.rng.range(p.down_ticks.0, p.down_ticks.1);
                c.crash_until(id, back);
            }
        }
        if self.rng.chance(p.crash_leader)
            && let Some(l) = c.leader()
        {
            let back = now + self.rng.range(p.down_ticks.0, p.down_ticks.1);
            c.crash_until(l, back);
        }
        if self.rng.chance(p.wipe) && !c.any_catching_up() {
            let running = c.running();
            if let Some(id) = self.rng.pick(&running) {
                let back = now + self.rng.range(p.down_ticks.0, p.down_ticks.1);
                c.wipe_until(id, back);
            }
        }
        if self.rng.chance(p.pause) {
            let target = match c.leader() {
                Some(l) if self.rng.chance(0.5) => Some(l),
                _ => self.rng.pick(&c.running()),
            };
            if let Some(id) = target {
                let until = now + self.rng.range(1, 3 * p.election_tick);
                c.pause(id, until);
            }
        }
        if c.net.is_partitioned() {
            if self.rng.chance(p.heal) {
                c.recover();
            }
        } else if self.rng.chance(p.partition) {
            self.partition(c);
        }
        if self.rng.chance(p.campaign) {
            let running = c.running();
            if let Some(id) = self.rng.pick(&running) {
                c.campaign(id);
            }
        }

        // Workload.
        if self.rng.chance(p.propose) {
            let n = self.rng.range(1, p.max_batch);
            for _ in 0..n {
                // Mostly at the leader; sometimes at a random node, which must refuse.
                let target = match c.leader() {
                    Some(l) if !self.rng.chance(0.05) => Some(l),
                    _ => self.rng.pick(&c.running()),
                };
                if let Some(id) = target {
                    let data = self.payload(c);
                    let _ = c.propose(id, data);
                }
            }
        }
        if self.rng.chance(p.read)
            && let Some(l) = c.leader()
        {
            let _ = c.read_index(l);
        }
        if self.rng.chance(p.conf_change) {
            self.conf_change(c);
        }
        if self.rng.chance(p.transfer)
            && let Some(l) = c.leader()
        {
            let voters: Vec<NodeId> = c.raw(l).conf_state().voters.iter().copied().collect();
            let target = if self.rng.chance(0.3) {
                0
            } else {
                self.rng.pick(&voters).unwrap_or(0)
            };
            let _ = c.transfer_leader(l, target);
        }

        // Removed members go away some time after their removal committed.
        if let Some(after) = p.decommission_after {
            for id in c.removed_but_running() {
                if !self.decommission_at.iter().any(|(n, _)| *n == id) {
                    let at = now + self.rng.range(0, after);
                    self.decommission_at.push((id, at));
                }
            }
            let due: Vec<NodeId> = self
                .decommission_at
                .iter()
                .filter(|(_, at)| *at <= now)
                .map(|(n, _)| *n)
                .collect();
            self.decommission_at.retain(|(_, at)| *at > now);
            for id in due {
                c.decommission(id);
            }
        }
    }

    fn partition(&mut self, c: &mut Cluster) {
        let mut ids: Vec<NodeId> = c
            .nodes
            .values()
            .filter(|n| !n.decommissioned)
            .map(|n| n.id)
            .collect();
        let weights = self.profile.partition_kinds;
        let mut roll = self.rng.below(weights.iter().sum::<u64>().max(1));
        let kind = weights
            .iter()
            .position(|&w| {
                let hit = roll < w;
                roll = roll.saturating_sub(w);
                hit
            })
            .unwrap_or(0);
        match kind {
            0 => {
                if let Some(id) = self.rng.pick(&ids) {
                    c.isolate(id);
                }
            }
            1 => {
                if let Some(l) = c.leader() {
                    c.isolate(l);
                }
            }
            2 => {
                self.rng.shuffle(&mut ids);
                let k = self
                    .rng
                    .range(1, (ids.len() as u64).saturating_sub(1).max(1))
                    as usize;
                let (a, b) = ids.split_at(k.min(ids.len()));
                c.split(a, b);
            }
            _ => {
                // A few one-way cuts: asymmetric reachability is where check-quorum and pre-vote
                // earn their keep.
                for _ in 0..self.rng.range(1, 3) {
                    if let (Some(a), Some(b)) = (self.rng.pick(&ids), self.rng.pick(&ids))
                        && a != b
                    {
                        c.cut_oneway(a, b);
                    }
                }
            }
        }
    }

    fn conf_change(&mut self, c: &mut Cluster) {
        let Some(l) = c.leader() else {
            return;
        };
        let conf = c.raw(l).conf_state().clone();
        if !self.spares.is_empty() && self.rng.chance(0.5) {
            let id = self.spares[0];
            if c.add_learner(l, id).is_ok() {
                self.spares.remove(0);
            }
            return;
        }
        // Remove a learner, or a voter while at least 4 remain (never fewer than 3 voters);
        // the leader itself is a candidate too.
        let mut candidates: Vec<NodeId> = conf.learners.iter().copied().collect();
        if conf.voters.len() >= 4 {
            candidates.extend(conf.voters.iter().copied());
        }
        if let Some(id) = self.rng.pick(&candidates) {
            let _ = c.remove_node(l, id);
        }
    }

    /// Ends every fault: heals partitions, resumes paused processes, stops losing, duplicating
    /// and delaying messages, stops crashing, restarts every crashed node.
    fn heal(&mut self, c: &mut Cluster) {
        c.recover();
        c.resume_all();
        c.set_net_faults(NetFaults {
            reorder: true,
            ..NetFaults::none()
        });
        c.opts.ready_crashes = ReadyCrashes::default();
        // Removals scheduled for later happen now, so that liveness is judged on the final
        // membership rather than interrupted by a decommission.
        for (id, _) in std::mem::take(&mut self.decommission_at) {
            c.decommission(id);
        }
        c.restart_all();
    }

    /// Liveness (§5.2, thesis §3.4 timing): within `LIVENESS_TIMEOUTS` election timeouts of the
    /// heal, some leader is elected and a fresh proposal is applied by a quorum of its voters.
    fn liveness(&mut self, c: &mut Cluster) -> Result<(), Violation> {
        let start = c.now;
        let deadline = start + LIVENESS_TIMEOUTS * self.profile.election_tick;
        // (leader, term, index) of the marker proposal in flight.
        let mut marker: Option<(NodeId, u64, u64)> = None;
        while c.now < deadline {
            c.tick_all(1);
            c.check()?;
            if let Some((l, term, index)) = marker {
                let committed = c.checker.applied_at(index).map(|(t, _)| t) == Some(term);
                let still_leading = c.role(l) == Some(Role::Leader) && c.raw(l).term() == term;
                if committed && c.voters_applied(l, index) >= quorum_of(c, l) {
                    return Ok(());
                }
                if !still_leading && !committed {
                    marker = None;
                }
            }
            if marker.is_none()
                && let Some(l) = c.leader()
            {
                let data = Bytes::from(format!("s{}-liveness-{}", self.seed, c.now));
                if let Ok(index) = c.propose(l, data) {
                    marker = Some((l, c.raw(l).term(), index));
                }
            }
        }
        let leaders: Vec<String> = c
            .running()
            .into_iter()
            .map(|id| {
                let r = c.raw(id);
                format!(
                    "n{id}:{}@t{}[last {}/{} commit {} voters {:?}]",
                    r.role().as_str(),
                    r.term(),
                    r.last_index(),
                    r.log_term(r.last_index()).unwrap_or(0),
                    r.commit_index(),
                    r.conf_state().voters
                )
            })
            .collect();
        Err(Violation {
            invariant: Invariant::Liveness,
            tick: c.now,
            node: None,
            detail: format!(
                "no fresh entry committed on a quorum within {} ticks after the last fault \
                 healed at tick {start} (marker {marker:?}; nodes: {})",
                LIVENESS_TIMEOUTS * self.profile.election_tick,
                leaders.join(" ")
            ),
        })
    }
}

impl Driver {
    /// At the end, with no faults, every running member of the leader's configuration catches
    /// up with the leader's commit index (learners and lagging voters included, through a
    /// snapshot if need be). A member far behind may legitimately need long (one small message
    /// per round trip), so the bound is on being *stuck*: no member may go `LIVENESS_TIMEOUTS`
    /// election timeouts without the laggards' applied indexes moving.
    fn convergence(&mut self, c: &mut Cluster) -> Result<(), Violation> {
        let window = LIVENESS_TIMEOUTS * self.profile.election_tick;
        let mut deadline = c.now + window;
        let mut last_progress = 0;
        loop {
            c.tick_all(1);
            c.check()?;
            let mut progress = 0;
            let lagging: Vec<String> = match c.leader() {
                None => vec!["no leader".to_string()],
                Some(l) => {
                    let raw = c.raw(l);
                    let commit = raw.commit_index();
                    raw.conf_state()
                        .members()
                        .filter_map(|m| {
                            let n = c.nodes.get(&m)?;
                            n.raw.as_ref()?;
                            progress += n.sm.applied;
                            (n.sm.applied < commit).then(|| {
                                format!(
                                    "n{m} applied {} of leader n{l}'s commit {commit}",
                                    n.sm.applied
                                )
                            })
                        })
                        .collect()
                }
            };
            if lagging.is_empty() {
                return Ok(());
            }
            if progress > last_progress {
                last_progress = progress;
                deadline = c.now + window;
            }
            if c.now >= deadline {
                return Err(Violation {
                    invariant: Invariant::Liveness,
                    tick: c.now,
                    node: None,
                    detail: format!(
                        "members made no progress for {window} ticks with no faults: {}",
                        lagging.join(", ")
                    ),
                });
            }
        }
    }
}

fn quorum_of(c: &Cluster, leader: NodeId) -> usize {
    c.nodes
        .get(&leader)
        .and_then(|n| n.raw.as_ref())
        .map_or(usize::MAX, |r| r.conf_state().quorum())
}

/// The seeds to run: `SIM_SEED=n` runs exactly `n`; otherwise `SIM_SEEDS` seeds (default
/// `default_count`) starting at `SIM_SEED_FROM` (default 1), for long hunts past the CI range.
pub fn seeds_from_env(default_count: u64) -> Vec<u64> {
    if let Some(seed) = env_u64("SIM_SEED") {
        return vec![seed];
    }
    let count = env_u64("SIM_SEEDS").unwrap_or(default_count);
    let from = env_u64("SIM_SEED_FROM").unwrap_or(1);
    (from..from + count).collect()
}

/// An unsigned integer from the environment, if set and parseable.
pub fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok()?.trim().parse().ok()
}
