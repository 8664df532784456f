//! The fault-injection suite (DESIGN.md §8.2, §8.3): concurrent clients, a seeded nemesis, and
//! the checks at the end. Shared by `fault_suite.rs` (seeded runs, LINEARIZABLE and LEASE reads)
//! and `fault_planted.rs` (each planted node bug must be caught).
//!
//! One run ([`run_seed`]) is:
//! 1. a 3-node cluster in network namespaces (`support/netns.rs`), optionally with a planted bug;
//! 2. the workload ([`Workload`]): groups of clients, each with its own [`Client`] (own session,
//!    short per-attempt timeouts so that faults turn into retries and unknown outcomes), doing
//!    get / put / cas / delete on the group's current key, a fresh key every `key_period`
//!    (Jepsen's "independent keys": short per-key histories keep the exponential search cheap).
//!    Every write carries a value never used before, so the checker can treat CAS-by-version as
//!    CAS-by-value. Everything is recorded through `support/history.rs`: invoke before the
//!    request, then ok / fail / info; after an info the client goes on under a new process id.
//!    Some clients only read, with an attempt timeout longer than a pause, so that a read queued
//!    at a frozen leader is answered when it wakes (the scenario a lease must survive);
//! 3. the nemesis ([`Nemesis`]), driven by a seeded RNG: kill -9 and restart on the same data,
//!    SIGSTOP / SIGCONT, kill -9 of the whole cluster and restart, isolation of a node (link
//!    down), a peer-only cut (the node still serves clients), and a paused leader that wakes up
//!    cut off from its peers. At least half the faults aim at the current leader. The schedule
//!    (kinds, "leader or node k", timings) depends only on the seed, so `FAULT_SEED=n` replays
//!    it (the cluster's reactions are of course not replayed);
//! 4. the end: heal everything, wait for a leader, read every key (LINEARIZABLE, recorded in the
//!    history too), then check each key's history for linearizability (todc-utils' WGL checker
//!    via `history.rs`) and count lost acknowledged writes directly ([`final_state_check`]).
//!
//! The history of a run goes to a JSON-lines file, kept when the run fails (the path is printed)
//! or when `FAULT_KEEP_HISTORY=1`.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use raftkv_client::{Client, ClientOptions, Consistency};

use super::cluster::{Cluster, ClusterOptions, Network, TlsMode};
use super::history::{self, CheckOptions, EventType, Func, Op, Recorder, Report, Verdict};
use super::netns::Net;

// ----- configuration -------------------------------------------------------------------------

/// The seeds to run: `FAULT_SEED=n` runs exactly that one (a replay); otherwise `FAULT_SEEDS`
/// (default `default_count`) seeds drawn at random, each printed.
pub fn seeds(default_count: usize) -> Vec<u64> {
    fresh_seeds(env_u64("FAULT_SEEDS").map_or(default_count, |n| n as usize))
}

/// `count` seeds drawn at random, or just `FAULT_SEED` if it is set (a replay).
pub fn fresh_seeds(count: usize) -> Vec<u64> {
    if let Some(seed) = env_u64("FAULT_SEED") {
        return vec![seed];
    }
    let mut rng = Rng::new(random_seed());
    (0..count).map(|_| rng.next() % 1_000_000).collect()
}

/// How long the nemesis runs per seed: `FAULT_SECONDS` (default `default_secs`).
pub fn seconds(default_secs: u64) -> Duration {
    Duration::from_secs(env_u64("FAULT_SECONDS").unwrap_or(default_secs))
}

fn env_u64(name: &str) -> Option<u64> {
    let value = std::env::var(name).ok()?;
    Some(
        value
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("{name}={value:?} is not a number")),
    )
}

fn random_seed() -> u64 {
    use std::hash::{BuildHasher, RandomState};
    RandomState::new().hash_one(std::process::id())
}

/// A fault the nemesis can inject.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum FaultKind {
    /// kill -9, wait, restart on the same data dir.
    Kill,
    /// SIGSTOP, wait, SIGCONT.
    Pause,
    /// kill -9 of every node at once (a power cut), then restart them one by one.
    RestartAll,
    /// kill -9 of every node, then start them all at once (a StatefulSet rolled in parallel):
    /// every node asks the others while they are still loading.
    RestartAllAtOnce,
    /// kill -9, delete the data dir (a lost volume), restart empty: the node must rejoin as the
    /// same member, not vote before it caught up, and catch up before the next fault.
    Wipe,
    /// The node's link goes down (no packet in or out), then up again.
    Isolate,
    /// Traffic to and from the other nodes is dropped; clients still reach the node.
    CutPeers,
    /// Cut from its peers *and* paused; it wakes up (SIGCONT) still cut off for a while, then
    /// the cut heals. A leader treated so believes it leads for up to an election timeout
    /// after waking, while another leader has taken over — stale reads show up here.
    PauseThenCut,
}

impl FaultKind {
    fn name(self) -> &'static str {
        match self {
            FaultKind::Kill => "kill -9",
            FaultKind::Pause => "SIGSTOP",
            FaultKind::RestartAll => "kill -9 all",
            FaultKind::RestartAllAtOnce => "kill -9 all, start all at once",
            FaultKind::Wipe => "kill -9, wipe volume, restart",
            FaultKind::Isolate => "isolate",
            FaultKind::CutPeers => "cut from peers",
            FaultKind::PauseThenCut => "SIGSTOP+cut, wake cut",
        }
    }

    fn needs_firewall(self) -> bool {
        matches!(self, FaultKind::CutPeers | FaultKind::PauseThenCut)
    }
}

/// What the nemesis does and how often. The `Default` is the mix of the normal seeded runs.
#[derive(Clone, Debug)]
pub struct Nemesis {
    /// Relative weights of the fault kinds.
    pub weights: Vec<(FaultKind, u32)>,
    /// Share of the faults aimed at the current leader (the rest at a random node).
    pub leader_share: f64,
    /// How long a fault lasts, in ms (uniform).
    pub hold_ms: (u64, u64),
    /// The healthy gap before each fault, in ms (uniform).
    pub gap_ms: (u64, u64),
}

impl Default for Nemesis {
    fn default() -> Self {
        Self {
            weights: vec![
                (FaultKind::Kill, 3),
                (FaultKind::Pause, 3),
                (FaultKind::RestartAll, 1),
                (FaultKind::RestartAllAtOnce, 1),
                (FaultKind::Wipe, 1),
                (FaultKind::Isolate, 2),
                (FaultKind::CutPeers, 1),
                (FaultKind::PauseThenCut, 2),
            ],
            leader_share: 0.6,
            hold_ms: (800, 3000),
            gap_ms: (700, 2500),
        }
    }
}

/// The clients and what they do.
#[derive(Clone, Debug)]
pub struct Workload {
    /// Independent key groups; each works on its own current key.
    pub groups: usize,
    /// Clients per group doing the op mix.
    pub clients_per_group: usize,
    /// Read-only clients per group with [`Workload::patient_attempt`] (see the module docs).
    pub patient_readers_per_group: usize,
    /// A fresh key this often.
    pub key_period: Duration,
    /// Relative weights of read, write, cas, delete.
    pub mix: [u32; 4],
    /// The clients' per-attempt timeout.
    pub attempt_timeout: Duration,
    /// The clients' per-call budget (retries included).
    pub call_timeout: Duration,
    /// The patient readers' per-attempt timeout (longer than most pauses).
    pub patient_attempt: Duration,
    /// The consistency of the workload's reads (the final reads are always LINEARIZABLE).
    pub reads: Consistency,
    /// TLS for the clients (the cluster's, when it runs with TLS).
    pub tls: Option<raftkv_client::tls::TlsConfig>,
}

impl Default for Workload {
    fn default() -> Self {
        Self {
            groups: 2,
            clients_per_group: 3,
            patient_readers_per_group: 1,
            key_period: Duration::from_secs(2),
            mix: [40, 25, 25, 10],
            attempt_timeout: Duration::from_millis(300),
            call_timeout: Duration::from_secs(1),
            patient_attempt: Duration::from_secs(4),
            reads: Consistency::Linearizable,
            tls: None,
        }
    }
}

/// One run's configuration.
#[derive(Clone, Debug)]
pub struct RunConfig {
    /// For the output and file names, e.g. "linearizable".
    pub name: String,
    /// How long the nemesis runs.
    pub duration: Duration,
    /// `kvnode --planted-bug <this>`.
    pub planted_bug: Option<String>,
    /// The clients.
    pub workload: Workload,
    /// The faults.
    pub nemesis: Nemesis,
    /// TLS on both ports, with client certificates required (`FAULT_TLS=1` turns it on for
    /// every run).
    pub tls: bool,
}

// ----- RNG -----------------------------------------------------------------------------------

/// SplitMix64: tiny, seedable, and the same sequence on every platform and version (a
/// registry RNG could change its stream between releases and break seed replays).
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    /// A generator whose sequence is determined by `seed`.
    pub fn new(seed: u64) -> Self {
        Rng(seed)
    }

    /// The next 64 random bits.
    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `[low, high]`.
    pub fn range(&mut self, (low, high): (u64, u64)) -> u64 {
        low + self.next() % (high - low + 1)
    }

    /// True with probability `p`.
    pub fn chance(&mut self, p: f64) -> bool {
        (self.next() % 1_000_000) as f64 / 1_000_000.0 < p
    }

    /// An index into `weights`, drawn by weight.
    pub fn weighted(&mut self, weights: &[u32]) -> usize {
        let total: u64 = weights.iter().map(|&w| u64::from(w)).sum();
        let mut pick = self.next() % total.max(1);
        for (i, &w) in weights.iter().enumerate() {
            if pick < u64::from(w) {
                return i;
            }
            pick -= u64::from(w);
        }
        weights.len() - 1
    }
}

// ----- the run -------------------------------------------------------------------------------

/// One fault as injected.
#[derive(Clone, Debug)]
pub struct FaultRecord {
    /// Since the workload started.
    pub at: Duration,
    /// What.
    pub kind: FaultKind,
    /// The node (0 for the whole cluster).
    pub target: u64,
    /// The schedule aimed it at the leader.
    pub aimed_at_leader: bool,
    /// The target was the leader agreed by a quorum when the fault began.
    pub hit_leader: bool,
    /// How long it lasted.
    pub hold: Duration,
}

impl std::fmt::Display for FaultRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // "the leader" and "node k" are what the seed chose (and what a replay repeats); the
        // node in brackets is who that was in this run.
        let target = match (self.target, self.aimed_at_leader, self.hit_leader) {
            (0, _, _) => String::new(),
            (n, true, true) => format!(" the leader (node {n})"),
            (n, true, false) => format!(" the leader (none agreed; node {n})"),
            (n, false, true) => format!(" node {n} (the leader)"),
            (n, false, false) => format!(" node {n}"),
        };
        write!(
            f,
            "+{:>5.1}s {}{target} for {:.1}s",
            self.at.as_secs_f64(),
            self.kind.name(),
            self.hold.as_secs_f64()
        )
    }
}

/// What a run found.
pub struct RunResult {
    /// The seed.
    pub seed: u64,
    /// The linearizability report of every key.
    pub report: Report,
    /// Acknowledged writes the final state contradicts (see [`final_state_check`]).
    pub lost: Vec<String>,
    /// Final values that no operation which may have happened stored.
    pub phantom: Vec<String>,
    /// The faults injected.
    pub faults: Vec<FaultRecord>,
    /// Where the history is (kept on failure).
    pub history_path: PathBuf,
    /// Time from the start of the workload to the end of the check.
    pub elapsed: Duration,
    /// The run's printed summary.
    pub text: String,
}

impl RunResult {
    /// Whether some key's check ran out of budget (neither proved nor refuted).
    pub fn incomplete(&self) -> bool {
        self.report.summary.unknown > 0
    }

    /// Whether the checks found anything.
    pub fn caught(&self) -> bool {
        !self.report.is_linearizable() || !self.lost.is_empty() || !self.phantom.is_empty()
    }

    /// What caught the problem, for the output: the first violation's excerpt and the lost
    /// writes.
    pub fn findings(&self) -> String {
        let mut out = String::new();
        if let Some(key) = self.report.violations().next()
            && let Verdict::NotLinearizable { excerpt } = &key.verdict
        {
            let _ = writeln!(
                out,
                "linearizability checker: {} key(s) NOT linearizable; the first:\n{}",
                self.report.summary.violations,
                excerpt.trim_end()
            );
        }
        for (what, list) in [
            ("lost acknowledged writes", &self.lost),
            ("final values nobody wrote", &self.phantom),
        ] {
            if !list.is_empty() {
                let _ = writeln!(out, "{what}: {} (first {}):", list.len(), list.len().min(5));
                for l in list.iter().take(5) {
                    let _ = writeln!(out, "  {l}");
                }
            }
        }
        out
    }

    /// Deletes the history file unless `FAULT_KEEP_HISTORY` is set.
    pub fn discard_history(&self) {
        if std::env::var_os("FAULT_KEEP_HISTORY").is_none() {
            let _ = std::fs::remove_file(&self.history_path);
        }
    }
}

/// Runs one seed: cluster, workload, nemesis, heal, final reads, checks. Panics only if the
/// harness itself fails (e.g. a node does not come back); findings are in the result.
pub async fn run_seed(seed: u64, cfg: &RunConfig) -> RunResult {
    let began = Instant::now();
    let mut opts = ClusterOptions {
        network: Network::Netns,
        ..ClusterOptions::default()
    };
    if cfg.tls || std::env::var_os("FAULT_TLS").is_some_and(|v| v == "1") {
        opts.tls = Some(TlsMode { client_ca: true });
    }
    if let Some(bug) = &cfg.planted_bug {
        opts.extra_args = vec!["--planted-bug".into(), bug.clone()];
    }
    let mut cluster = Cluster::start_with(3, opts).await;
    let history_path = std::env::temp_dir().join(format!(
        "raftkv-fault-{}-{}-seed{seed}.jsonl",
        cfg.name,
        std::process::id()
    ));
    let recorder = Recorder::create(&history_path).expect("create the history file");
    // Printed now so that a run that panics (a node that does not come back) leaves a trail.
    eprintln!(
        "[fault] {} seed {seed}: history -> {}",
        cfg.name,
        history_path.display()
    );
    let mut nemesis_cfg = cfg.nemesis.clone();
    if !Net::can_cut_peers() {
        eprintln!("[fault] neither nft nor iptables works here: no peer-only cuts in this run");
        nemesis_cfg.weights.retain(|(k, _)| !k.needs_firewall());
    }

    let started = Instant::now();
    let stop = Arc::new(AtomicBool::new(false));
    let tasks = start_clients(&cluster, &cfg.workload, &recorder, seed, &stop, started).await;
    let faults = run_nemesis(&mut cluster, &nemesis_cfg, seed, cfg.duration, started).await;

    // The end: every fault has been undone by the nemesis; make sure, then let the clients see
    // a healthy cluster for a moment before they stop.
    let healing = Instant::now();
    cluster.heal_all();
    let leader = cluster.leader().await;
    let healed = healing.elapsed();
    tokio::time::sleep(Duration::from_secs(1)).await;
    stop.store(true, Ordering::Relaxed);
    for task in tasks {
        task.await.expect("a client task panicked");
    }
    let workload_time = started.elapsed();

    let reading = Instant::now();
    let keys = recorded_keys(&recorder);
    let finals = final_reads(&cluster, &recorder, &keys).await;
    let read_time = reading.elapsed();
    drop(cluster);

    let checking = Instant::now();
    let (report, history) = check_history(&recorder).await;
    let (lost, phantom) = final_state_check(&history, &finals);
    let check_time = checking.elapsed();

    let mut text = String::new();
    let _ = writeln!(
        text,
        "== {} seed {seed}{}: {} faults in {:.1?} ({} aimed at the leader, {} hit it)",
        cfg.name,
        cfg.planted_bug
            .as_ref()
            .map(|b| format!(" (planted bug {b})"))
            .unwrap_or_default(),
        faults.len(),
        cfg.duration,
        faults
            .iter()
            .filter(|f| f.aimed_at_leader || f.target == 0)
            .count(),
        faults.iter().filter(|f| f.hit_leader).count(),
    );
    let mut by_kind: BTreeMap<FaultKind, usize> = BTreeMap::new();
    for f in &faults {
        *by_kind.entry(f.kind).or_default() += 1;
    }
    let _ = writeln!(
        text,
        "faults by kind: {}",
        by_kind
            .iter()
            .map(|(k, n)| format!("{} x{n}", k.name()))
            .collect::<Vec<_>>()
            .join(", ")
    );
    for f in &faults {
        let _ = writeln!(text, "  {f}");
    }
    let _ = writeln!(text, "{}", report.summary);
    let _ = writeln!(
        text,
        "lost acknowledged writes: {}; final values nobody wrote: {}; final reads of {} keys; \
         leader {leader} {healed:.1?} after healing",
        lost.len(),
        phantom.len(),
        keys.len()
    );
    let _ = write!(
        text,
        "timing: cluster start {:.1?}, workload {workload_time:.1?}, final reads \
         {read_time:.1?}, check {check_time:.1?}, run {:.1?}; history {}",
        started - began,
        began.elapsed(),
        history_path.display()
    );
    RunResult {
        seed,
        report,
        lost,
        phantom,
        faults,
        history_path,
        elapsed: began.elapsed(),
        text,
    }
}

// ----- clients -------------------------------------------------------------------------------

/// Spawns the workload's client tasks; they run until `stop`.
async fn start_clients(
    cluster: &Cluster,
    w: &Workload,
    recorder: &Recorder,
    seed: u64,
    stop: &Arc<AtomicBool>,
    started: Instant,
) -> Vec<tokio::task::JoinHandle<()>> {
    let endpoints = cluster.endpoints();
    let w = &Workload {
        tls: cluster.client_options().tls,
        ..w.clone()
    };
    start_workload(
        &endpoints,
        &BTreeMap::new(),
        w,
        recorder,
        seed,
        stop,
        started,
    )
    .await
}

/// Spawns the workload's client tasks against the nodes at `endpoints`, dialling through
/// `connect_to` (see [`ClientOptions::connect_to`]; the container tests need it); they run
/// until `stop`.
pub async fn start_workload(
    endpoints: &[String],
    connect_to: &BTreeMap<String, String>,
    w: &Workload,
    recorder: &Recorder,
    seed: u64,
    stop: &Arc<AtomicBool>,
    started: Instant,
) -> Vec<tokio::task::JoinHandle<()>> {
    let mut tasks = Vec::new();
    let mut index = 0usize;
    for group in 0..w.groups {
        for n in 0..w.clients_per_group + w.patient_readers_per_group {
            let patient = n >= w.clients_per_group;
            let options = ClientOptions {
                timeout: if patient {
                    w.patient_attempt * 2
                } else {
                    w.call_timeout
                },
                attempt_timeout: if patient {
                    w.patient_attempt
                } else {
                    w.attempt_timeout
                },
                connect_timeout: Duration::from_millis(300),
                backoff_initial: Duration::from_millis(20),
                backoff_max: Duration::from_millis(200),
                connect_to: connect_to.clone(),
                tls: w.tls.clone(),
                ..ClientOptions::default()
            };
            // Rotate the endpoint order so the clients do not all start at node 1.
            let mut endpoints = endpoints.to_vec();
            let shift = index % endpoints.len();
            endpoints.rotate_left(shift);
            let client = Client::connect(endpoints, options)
                .await
                .expect("a workload client");
            let ctx = ClientCtx {
                index,
                group,
                patient,
                mix: w.mix,
                reads: w.reads,
                key_period: w.key_period,
                started,
                rng: Rng::new(seed ^ (index as u64 + 1).wrapping_mul(0x5851_f42d_4c95_7f2d)),
            };
            let (process, stop) = (recorder.process(), stop.clone());
            tasks.push(tokio::spawn(client_loop(ctx, client, process, stop)));
            index += 1;
        }
    }
    tasks
}

struct ClientCtx {
    index: usize,
    group: usize,
    patient: bool,
    mix: [u32; 4],
    reads: Consistency,
    key_period: Duration,
    started: Instant,
    rng: Rng,
}

impl ClientCtx {
    /// The group's key right now: a fresh one every `key_period`.
    fn key(&self) -> String {
        let n = self.started.elapsed().as_millis() / self.key_period.as_millis().max(1);
        format!("g{}/k{n:04}", self.group)
    }
}

/// What this client last saw of its current key: the value and the version it had. `None`
/// when it does not know (a new key, or after an unknown outcome).
type Seen = Option<(Option<String>, u64)>;

async fn client_loop(
    mut ctx: ClientCtx,
    client: Client,
    mut p: history::Process,
    stop: Arc<AtomicBool>,
) {
    let mut key = String::new();
    let mut seen: Seen = None;
    let mut counter = 0u64;
    while !stop.load(Ordering::Relaxed) {
        let current = ctx.key();
        if current != key {
            key = current;
            seen = None;
        }
        let mut f = if ctx.patient {
            Func::Read
        } else {
            Func::ALL[ctx.rng.weighted(&ctx.mix)]
        };
        // A CAS needs a version to expect; without one, read first.
        if f == Func::Cas && seen.is_none() {
            f = Func::Read;
        }
        counter += 1;
        // Unique across the whole run: client index and a per-client counter.
        let value = format!("c{}-{counter}", ctx.index);
        let definite = match f {
            Func::Read => {
                p.invoke(key.clone(), Op::Read);
                match client.get(key.clone(), ctx.reads).await {
                    Ok(got) => {
                        let value = got.as_ref().map(|v| text(&v.value));
                        seen = Some((value.clone(), got.map_or(0, |v| v.version)));
                        p.ok_read(value);
                        true
                    }
                    // A read that got no answer changed nothing: `fail` is exact for it.
                    Err(e) => {
                        p.fail(e);
                        false
                    }
                }
            }
            Func::Write => {
                p.invoke(key.clone(), Op::Write(value.clone()));
                match client.put(key.clone(), value.clone()).await {
                    Ok(version) => {
                        seen = Some((Some(value), version));
                        p.ok();
                        true
                    }
                    Err(e) => write_error(&mut p, &mut seen, e),
                }
            }
            Func::Cas => {
                let Some((expected, version)) = seen.clone() else {
                    unreachable!("a CAS without a known version was turned into a read");
                };
                p.invoke(
                    key.clone(),
                    Op::Cas {
                        expected,
                        new: value.clone(),
                    },
                );
                match client
                    .compare_and_swap(key.clone(), version, value.clone())
                    .await
                {
                    Ok(out) if out.succeeded => {
                        seen = Some((Some(value), out.version));
                        p.ok();
                        true
                    }
                    Ok(out) => {
                        // The compare failed: nothing was written. The answer tells the
                        // current value and version, which the next CAS may expect.
                        let current = (out.version != 0).then(|| text(&out.current_value));
                        seen = Some((current, out.version));
                        p.fail(format!("compare failed (version {})", out.version));
                        true
                    }
                    Err(e) => write_error(&mut p, &mut seen, e),
                }
            }
            Func::Delete => {
                p.invoke(key.clone(), Op::Delete);
                match client.delete(key.clone()).await {
                    Ok(_) => {
                        seen = Some((None, 0));
                        p.ok();
                        true
                    }
                    Err(e) => write_error(&mut p, &mut seen, e),
                }
            }
        };
        if !definite {
            // Do not spin against a cluster that answers nothing.
            tokio::time::sleep(Duration::from_millis(20 + ctx.rng.next() % 30)).await;
        }
    }
}

/// Records a write's error: `info` when it may have applied (the client then knows nothing
/// about the key), `fail` when it certainly did not.
fn write_error(p: &mut history::Process, seen: &mut Seen, e: raftkv_client::Error) -> bool {
    if e.is_outcome_unknown() {
        *seen = None;
        p.info(e);
    } else {
        p.fail(e);
    }
    false
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

// ----- nemesis -------------------------------------------------------------------------------

/// Injects faults until `duration` has passed since `started`; undoes each before the next.
async fn run_nemesis(
    cluster: &mut Cluster,
    cfg: &Nemesis,
    seed: u64,
    duration: Duration,
    started: Instant,
) -> Vec<FaultRecord> {
    let mut rng = Rng::new(seed);
    let weights: Vec<u32> = cfg.weights.iter().map(|(_, w)| *w).collect();
    let ids = cluster.member_ids();
    let mut faults = Vec::new();
    loop {
        // Every draw happens in the same order whatever the cluster does, so a seed always
        // yields the same schedule.
        let gap = Duration::from_millis(rng.range(cfg.gap_ms));
        let kind = cfg.weights[rng.weighted(&weights)].0;
        let aimed_at_leader = rng.chance(cfg.leader_share);
        let random_target = ids[(rng.next() % ids.len() as u64) as usize];
        let hold = Duration::from_millis(rng.range(cfg.hold_ms));
        tokio::time::sleep(gap).await;
        if started.elapsed() + hold > duration {
            break;
        }
        let leader = cluster.try_leader().await;
        let target = match (kind, aimed_at_leader, leader) {
            (FaultKind::RestartAll | FaultKind::RestartAllAtOnce, _, _) => 0,
            (_, true, Some(leader)) => leader,
            _ => random_target,
        };
        let record = FaultRecord {
            at: started.elapsed(),
            kind,
            target,
            aimed_at_leader,
            // Killing every node kills the leader too.
            hit_leader: leader.is_some() && (target == 0 || leader == Some(target)),
            hold,
        };
        inject(cluster, kind, target, hold).await;
        faults.push(record);
    }
    faults
}

/// Injects one fault, waits `hold`, and undoes it.
async fn inject(cluster: &mut Cluster, kind: FaultKind, target: u64, hold: Duration) {
    match kind {
        FaultKind::Kill => {
            cluster.kill9(target);
            tokio::time::sleep(hold).await;
            cluster.restart(target).await;
        }
        FaultKind::Pause => {
            cluster.sigstop(target);
            tokio::time::sleep(hold).await;
            cluster.sigcont(target);
        }
        FaultKind::RestartAll => {
            cluster.kill9_all();
            tokio::time::sleep(hold / 4).await;
            for id in cluster.member_ids() {
                cluster.restart(id).await;
            }
        }
        FaultKind::RestartAllAtOnce => {
            cluster.kill9_all();
            tokio::time::sleep(hold / 4).await;
            let ids = cluster.member_ids();
            for &id in &ids {
                cluster.launch(id);
            }
            for id in ids {
                cluster.wait_node_started(id).await;
            }
        }
        FaultKind::Wipe => {
            cluster.kill9(target);
            cluster.wipe(target);
            tokio::time::sleep(hold).await;
            cluster.restart(target).await;
            // A second lost volume before this one caught up could lose committed writes,
            // which no consensus protocol survives: the next fault waits for the catch-up.
            cluster
                .wait_caught_up(target, Duration::from_secs(60))
                .await;
        }
        FaultKind::Isolate => {
            cluster.isolate(target);
            tokio::time::sleep(hold).await;
            cluster.heal(target);
        }
        FaultKind::CutPeers => {
            assert!(cluster.cut_peers(target), "cut_peers failed");
            tokio::time::sleep(hold).await;
            cluster.heal(target);
        }
        FaultKind::PauseThenCut => {
            assert!(cluster.cut_peers(target), "cut_peers failed");
            cluster.sigstop(target);
            tokio::time::sleep(hold).await;
            cluster.sigcont(target);
            // Awake but still cut off: a leader keeps believing it leads until its check
            // of the quorum fails, up to two election timeouts (2 x 10 x 50 ms).
            tokio::time::sleep(Duration::from_millis(1200)).await;
            cluster.heal(target);
        }
    }
}

// ----- the end -------------------------------------------------------------------------------

/// Checks the recorded history for linearizability on the blocking pool; returns the report and
/// the history (for the final-state check).
pub async fn check_history(recorder: &Recorder) -> (Report, history::History) {
    let history = recorder.history();
    tokio::task::spawn_blocking(move || {
        let report = history
            .check(&CheckOptions::default())
            .expect("a well-formed history");
        (report, history)
    })
    .await
    .expect("the checker panicked")
}

/// Every key the history names, in order, once.
pub fn recorded_keys(recorder: &Recorder) -> Vec<String> {
    let mut keys: Vec<String> = recorder
        .history()
        .events
        .iter()
        .map(|e| e.key.clone())
        .collect();
    keys.sort();
    keys.dedup();
    keys
}

/// Reads every key once more, LINEARIZABLE, through a client that starts at the leader; each
/// read is recorded (so the checker sees it) under its own process. Returns the values read.
async fn final_reads(
    cluster: &Cluster,
    recorder: &Recorder,
    keys: &[String],
) -> BTreeMap<String, Option<String>> {
    read_back(&cluster.leader_client().await, recorder, keys).await
}

/// Reads every key of `keys` once more, LINEARIZABLE, through `client`, retrying for up to a
/// minute per key; each read is recorded in `recorder` under one new process. Returns the values
/// read.
pub async fn read_back(
    client: &raftkv_client::Client,
    recorder: &Recorder,
    keys: &[String],
) -> BTreeMap<String, Option<String>> {
    let mut p = recorder.process();
    let mut finals = BTreeMap::new();
    for key in keys {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            p.invoke(key.clone(), Op::Read);
            match client.get(key.clone(), Consistency::Linearizable).await {
                Ok(got) => {
                    let value = got.map(|v| text(&v.value));
                    p.ok_read(value.clone());
                    finals.insert(key.clone(), value);
                    break;
                }
                Err(e) if Instant::now() < deadline => {
                    p.fail(&e);
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                Err(e) => panic!("the cluster does not serve a read of {key}: {e}"),
            }
        }
    }
    finals
}

/// One operation of the history with its outcome, for [`final_state_check`].
#[derive(Clone, Debug)]
struct OpView {
    process: u64,
    f: Func,
    /// The value it stores (write, cas).
    stores: Option<String>,
    invoked_ns: u64,
    /// `Some` for ok.
    ok_ns: Option<u64>,
    failed: bool,
}

/// Checks each key's final state against the acknowledged writes, returning (lost, phantom).
///
/// Lost: for a key whose final read returned `F`, an acknowledged write / cas / delete `m` is
/// lost when every operation that could have produced `F` (the one that stored that unique
/// value; for "absent": the initial state and every delete that did not fail) had completed
/// before `m` was invoked — then `F` cannot be the latest state if `m` took effect. Phantom: a
/// final value that no operation which may have happened stored (only a failed one, or none).
/// Both are direct, real-time-only subsets of what the linearizability check finds, printed as
/// their own counts.
pub fn final_state_check(
    history: &history::History,
    finals: &BTreeMap<String, Option<String>>,
) -> (Vec<String>, Vec<String>) {
    let mut open: BTreeMap<u64, (String, OpView)> = BTreeMap::new();
    let mut by_key: BTreeMap<String, Vec<OpView>> = BTreeMap::new();
    for e in &history.events {
        match e.kind {
            EventType::Invoke => {
                let stores = match &e.value {
                    history::Value::One(v) if e.f == Func::Write => Some(v.clone()),
                    history::Value::Cas(_, new) => Some(new.clone()),
                    _ => None,
                };
                let view = OpView {
                    process: e.process,
                    f: e.f,
                    stores,
                    invoked_ns: e.time_ns,
                    ok_ns: None,
                    failed: false,
                };
                open.insert(e.process, (e.key.clone(), view));
            }
            kind => {
                if let Some((key, mut view)) = open.remove(&e.process) {
                    match kind {
                        EventType::Ok => view.ok_ns = Some(e.time_ns),
                        EventType::Fail => view.failed = true,
                        _ => {}
                    }
                    by_key.entry(key).or_default().push(view);
                }
            }
        }
    }
    // Operations never completed stay open: they may have happened.
    for (key, view) in open.into_values() {
        by_key.entry(key).or_default().push(view);
    }
    let (mut lost, mut phantom) = (Vec::new(), Vec::new());
    for (key, ops) in &by_key {
        let Some(fin) = finals.get(key) else { continue };
        let mutations = ops.iter().filter(|o| o.f != Func::Read);
        // When each possible producer of the final state completed (None: not known to have
        // completed, so it may be the latest); the initial state "completed" at 0.
        let producers: Vec<Option<u64>> = match fin {
            Some(v) => mutations
                .clone()
                .filter(|o| !o.failed && o.stores.as_deref() == Some(v.as_str()))
                .map(|o| o.ok_ns)
                .collect(),
            None => std::iter::once(Some(0))
                .chain(
                    mutations
                        .clone()
                        .filter(|o| o.f == Func::Delete && !o.failed)
                        .map(|o| o.ok_ns),
                )
                .collect(),
        };
        if producers.is_empty() {
            phantom.push(format!(
                "{key}: final value {fin:?} was stored by no operation that may have happened"
            ));
            continue;
        }
        for m in mutations.filter(|o| o.ok_ns.is_some()) {
            if producers
                .iter()
                .all(|p| p.is_some_and(|done| done < m.invoked_ns))
            {
                lost.push(format!(
                    "{key}: acknowledged {} by p{} (invoked at {:.3}s) is lost: the final \
                     state {fin:?} was produced before it began",
                    m.f.name(),
                    m.process,
                    m.invoked_ns as f64 / 1e9,
                ));
            }
        }
    }
    (lost, phantom)
}
