//! The planner and the node side of the act layer driven against real `kvnode` processes, with
//! no Kubernetes: a test adapter plays the StatefulSet. It starts and stops `kvnode` child
//! processes at the planner's request, each pod slot with its own data directory and fixed
//! 127.0.0.1 ports, with the flags the operator's StatefulSet gives
//! ([`raftkv_operator::resources::node_args`]) except that static peers replace DNS discovery.
//! A pod is stopped with SIGTERM, the graceful path a pod deletion takes; the nodes are asked
//! through the same [`GrpcNodes`] the controller uses.
//!
//! Every scenario runs under a workload of concurrent reads and writes recorded as a history,
//! checked for linearizability (todc-utils' WGL checker, per key), and a writer of unique keys
//! whose acknowledged writes must all read back at the end. Checked besides: while a leader
//! exists, a quorum of voters never stays unhealthy; no pod's process is stopped while it leads
//! (leadership moves first); the scenarios are 3 -> 5 (each new pod added as a learner once it
//! reports `MEMBER_STATE_WAITING_TO_BE_ADDED`), a member back with an empty data directory (it
//! catches up before the cluster is Available again), 5 -> 3 (each member removed before the
//! StatefulSet shrinks), every pod replaced with the leader last, and 3 -> 4 again over the
//! retained volume of a removed member (added back as a learner).
//!
//! The `kvnode` binary comes from this test executable's target directory (support/processes.rs).
//! Set `PLANNER_TRACE=1` to print every plan.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use raftkv_client::{Client, ClientOptions};
use raftkv_operator::crd::{KvClusterSpec, Phase};
use raftkv_operator::nodes::{GrpcNodes, NodeApi, NodeError};
use raftkv_operator::observe::node_status;
use raftkv_operator::planner::{
    Action, Health, Leader, MemberState, NodeRole, Observed, ObservedPod, ObservedStatefulSet,
    Plan, plan, settle_ms,
};
use raftkv_operator::resources::{Cluster, SHUTDOWN_TIMEOUT_SECONDS, node_args};

#[path = "support/processes.rs"]
mod processes;
use processes::{kvnode, reserve_ports};
use tempfile::TempDir;
use todc_utils::specifications::register::{RegisterOperation, RegisterSpecification};
use todc_utils::{Action as TodcAction, History, WGLChecker};

/// The nodes' Raft timing: 30 ms ticks, elections after 10 to 20 ticks.
const TICK_MS: u64 = 30;
const ELECTION_TICKS: u64 = 10;

/// How long the whole test may take on a loaded 2-core machine.
const DEADLINE: Duration = Duration::from_secs(300);

/// How long a started process may take to answer `Cluster.Status`.
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// One pod slot of the fake StatefulSet: fixed ports and a data directory that outlive
/// restarts (a PVC), and the current process, if any.
struct Slot {
    client: SocketAddr,
    peer: SocketAddr,
    metrics: SocketAddr,
    data_dir: PathBuf,
    log: PathBuf,
    process: Option<Child>,
    revision: String,
}

/// Plays the StatefulSet: `replicas` pods, an update revision, pods started at a revision.
struct FakeStatefulSet {
    /// Holds every slot's data directory and log; removed on drop.
    _root: TempDir,
    slots: Vec<Slot>,
    replicas: usize,
    /// When each pod was first seen ready since its last start (the kubelet's Ready transition).
    ready_since: Mutex<BTreeMap<usize, Instant>>,
    /// The pods seen leading (their own Status) since their last start.
    led: Mutex<BTreeSet<usize>>,
    /// How many pods that had led were stopped, each checked to no longer lead.
    former_leaders_stopped: usize,
    update_revision: String,
    /// The arguments the operator's StatefulSet gives every pod.
    operator_args: Vec<String>,
    peers: String,
}

impl FakeStatefulSet {
    /// `size` pods running, and slots (ports, data directories) for up to `room` pods, so that
    /// the set can grow: every pod's peer list names them all, as the headless Service's DNS
    /// names would.
    async fn start(size: usize, room: usize) -> Self {
        let root = tempfile::Builder::new()
            .prefix("raftkv-op-processes-")
            .tempdir()
            .expect("temporary directory");
        let ports = reserve_ports(3 * room);
        let addr = |port: u16| SocketAddr::from(([127, 0, 0, 1], port));
        let slots: Vec<Slot> = (0..room)
            .map(|i| Slot {
                client: addr(ports[3 * i]),
                peer: addr(ports[3 * i + 1]),
                metrics: addr(ports[3 * i + 2]),
                data_dir: root.path().join(format!("demo-{i}")),
                log: root.path().join(format!("demo-{i}.log")),
                process: None,
                revision: "r1".into(),
            })
            .collect();
        let peers = slots
            .iter()
            .enumerate()
            .map(|(i, s)| format!("{}={}", i + 1, s.peer))
            .collect::<Vec<_>>()
            .join(",");
        let spec: KvClusterSpec = serde_json::from_value(serde_json::json!({
            "replicas": size, "image": "raftkv/kvnode:test", "storage": {"size": "1Gi"},
            "tuning": {"tickMillis": TICK_MS, "electionTicks": ELECTION_TICKS}
        }))
        .expect("spec");
        let cluster = Cluster {
            name: "demo".into(),
            namespace: "test".into(),
            uid: "operator-process-test".into(),
            spec,
            initial_replicas: i32::try_from(size).expect("size"),
        };
        let mut set = FakeStatefulSet {
            _root: root,
            slots,
            replicas: size,
            ready_since: Mutex::default(),
            led: Mutex::default(),
            former_leaders_stopped: 0,
            update_revision: "r1".into(),
            operator_args: node_args(&cluster),
            peers,
        };
        // All at once (podManagementPolicy: Parallel): a fresh node bootstraps only once a
        // quorum of the initial members answers.
        for ordinal in 0..size {
            set.spawn(ordinal);
        }
        for ordinal in 0..size {
            set.wait_started(ordinal).await;
        }
        set
    }

    /// The operator's arguments, with the pod's own 127.0.0.1 addresses and data directory in
    /// place of 0.0.0.0 and the volume mount, and static peers in place of DNS discovery.
    fn args(&self, ordinal: usize) -> Vec<String> {
        let slot = &self.slots[ordinal];
        let mut args: Vec<String> = self
            .operator_args
            .iter()
            .filter(|a| !a.starts_with("--discovery="))
            .map(|a| match a.split_once('=') {
                Some(("--listen-client", _)) => format!("--listen-client={}", slot.client),
                Some(("--listen-peer", _)) => format!("--listen-peer={}", slot.peer),
                Some(("--listen-metrics", _)) => format!("--listen-metrics={}", slot.metrics),
                Some(("--data-dir", _)) => format!("--data-dir={}", slot.data_dir.display()),
                _ => a.clone(),
            })
            .collect();
        args.extend([
            format!("--id={}", ordinal + 1),
            format!("--advertise-client={}", slot.client),
            format!("--advertise-peer={}", slot.peer),
            format!("--peers={}", self.peers),
            "--log=info".into(),
        ]);
        args
    }

    /// Starts pod `ordinal`'s process at the update revision, output appended to its log.
    fn spawn(&mut self, ordinal: usize) {
        let args = self.args(ordinal);
        let revision = self.update_revision.clone();
        let slot = &mut self.slots[ordinal];
        assert!(slot.process.is_none(), "demo-{ordinal} is already running");
        let log = File::options()
            .create(true)
            .append(true)
            .open(&slot.log)
            .expect("open the pod's log");
        let stderr = log.try_clone().expect("duplicate the log handle");
        let child = Command::new(kvnode())
            .args(&args)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(stderr)
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {}: {e}", kvnode().display()));
        slot.process = Some(child);
        slot.revision = revision;
    }

    /// The end of pod `ordinal`'s log, for a failure message.
    fn log_tail(&self, ordinal: usize) -> String {
        let text = std::fs::read_to_string(&self.slots[ordinal].log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }

    /// Waits until pod `ordinal` answers `Cluster.Status` as itself.
    async fn wait_started(&mut self, ordinal: usize) {
        let nodes = GrpcNodes::default();
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            let exited = self.slots[ordinal]
                .process
                .as_mut()
                .and_then(|p| p.try_wait().ok().flatten());
            if let Some(status) = exited {
                panic!(
                    "demo-{ordinal} exited at start ({status}); its log ends:\n{}",
                    self.log_tail(ordinal)
                );
            }
            let status = nodes
                .status(&self.slots[ordinal].client.to_string(), None)
                .await;
            if status.is_ok_and(|s| s.node_id == ordinal as u64 + 1) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "demo-{ordinal} did not answer within {START_TIMEOUT:?}; its log ends:\n{}",
                self.log_tail(ordinal)
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// (Re)starts pod `ordinal` on its fixed ports and data directory.
    async fn launch(&mut self, ordinal: usize) {
        self.spawn(ordinal);
        self.wait_started(ordinal).await;
    }

    /// Deletes pod `ordinal` as the kubelet does: SIGTERM, then waits for the process to exit
    /// within the grace period. The planner must have moved leadership away first: the pod may
    /// not lead at the moment it is stopped.
    async fn stop(&mut self, ordinal: usize) {
        self.ready_since
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&ordinal);
        let client = self.slots[ordinal].client.to_string();
        // The child stays in its slot until it exited, so that a failed check below still
        // leaves it to `Drop` to kill.
        let Some(pid) = self.slots[ordinal].process.as_ref().map(Child::id) else {
            return;
        };
        // A pod that led must answer (a loaded machine gets a few seconds) and not lead now.
        let had_led = self
            .led
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&ordinal);
        let asked = Instant::now();
        let now = loop {
            match GrpcNodes::default().status(&client, None).await {
                Err(e) if had_led && asked.elapsed() < Duration::from_secs(10) => {
                    println!("demo-{ordinal} (a former leader) did not answer: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                other => break other,
            }
        };
        match &now {
            Ok(s) => assert_ne!(
                node_status(s).role,
                NodeRole::Leader,
                "demo-{ordinal} leads at term {} while its process is stopped",
                s.term
            ),
            Err(e) => assert!(
                !had_led,
                "demo-{ordinal} led, and its status is unknown as it is stopped: {e}"
            ),
        }
        if had_led {
            self.former_leaders_stopped += 1;
        }
        kill(
            Pid::from_raw(i32::try_from(pid).expect("pid")),
            Signal::SIGTERM,
        )
        .expect("SIGTERM");
        let grace = Duration::from_secs(SHUTDOWN_TIMEOUT_SECONDS.unsigned_abs() + 20);
        let deadline = Instant::now() + grace;
        let status = loop {
            let exited = self.slots[ordinal]
                .process
                .as_mut()
                .and_then(|child| child.try_wait().ok().flatten());
            if let Some(status) = exited {
                self.slots[ordinal].process = None;
                break status;
            }
            if Instant::now() > deadline {
                panic!(
                    "demo-{ordinal} did not exit within {grace:?} of SIGTERM; its log ends:\n{}",
                    self.log_tail(ordinal)
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        assert!(
            status.success(),
            "demo-{ordinal} exited with {status} after SIGTERM; its log ends:\n{}",
            self.log_tail(ordinal)
        );
    }

    /// Stops every pod (leadership moves on its own at shutdown, so the last one leads).
    fn kill_all(&mut self) {
        for slot in &mut self.slots {
            if let Some(mut child) = slot.process.take() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }

    fn client_addrs(&self) -> Vec<String> {
        self.slots[..self.replicas]
            .iter()
            .map(|s| s.client.to_string())
            .collect()
    }

    async fn observe(&self, nodes: &GrpcNodes, spec_replicas: i32) -> Observed {
        let mut pods = vec![];
        for (ordinal, slot) in self.slots.iter().enumerate().take(self.replicas) {
            if slot.process.is_none() {
                continue;
            }
            let status = nodes
                .status(&slot.client.to_string(), None)
                .await
                .ok()
                .map(|r| node_status(&r));
            if status.as_ref().is_some_and(|s| s.role == NodeRole::Leader) {
                self.led
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .insert(ordinal);
            }
            let ready = status
                .as_ref()
                .is_some_and(|s| s.leader_id != 0 && s.members.iter().any(|m| m.id == s.node_id));
            let ready_for_ms = {
                let mut since = self.ready_since.lock().unwrap_or_else(|e| e.into_inner());
                if ready {
                    let t = *since.entry(ordinal).or_insert_with(Instant::now);
                    u64::try_from(t.elapsed().as_millis()).unwrap_or(u64::MAX)
                } else {
                    since.remove(&ordinal);
                    0
                }
            };
            pods.push(ObservedPod {
                ordinal: ordinal as u32,
                name: format!("demo-{ordinal}"),
                revision: Some(slot.revision.clone()),
                terminating: false,
                ready,
                ready_for_ms,
                role_label: None,
                status,
            });
        }
        let initial = self
            .operator_args
            .iter()
            .find_map(|a| a.strip_prefix("--initial-cluster-size="))
            .and_then(|n| n.parse().ok());
        Observed {
            spec_replicas,
            paused: false,
            initial_replicas: initial,
            cluster_id_known: true,
            settle_ms: settle_ms(TICK_MS, ELECTION_TICKS),
            statefulset: Some(ObservedStatefulSet {
                replicas: self.replicas as i32,
                update_revision: Some(self.update_revision.clone()),
            }),
            pods,
        }
    }
}

/// Kills the processes a failed test leaves behind; the data directories go with `root`.
impl Drop for FakeStatefulSet {
    fn drop(&mut self) {
        self.kill_all();
        if std::thread::panicking() {
            for ordinal in 0..self.slots.len() {
                eprintln!(
                    "---- demo-{ordinal}'s log ends:\n{}",
                    self.log_tail(ordinal)
                );
            }
        }
    }
}
/// Carries out one planned action; returns a line for the log. A node call that fails is logged
/// and not retried here: as in the controller, the next observation decides again (a change
/// whose outcome is unknown may have been applied).
async fn act(set: &mut FakeStatefulSet, nodes: &GrpcNodes, p: &Plan) -> String {
    let endpoints = set.client_addrs();
    match &p.action {
        Action::None => String::new(),
        Action::ScaleStatefulSet { from, to } => {
            assert_eq!(*from as usize, set.replicas);
            if to < from {
                set.stop(*to as usize).await;
            } else {
                set.launch(*from as usize).await;
            }
            set.replicas = *to as usize;
            format!("statefulset {from} -> {to}")
        }
        Action::RemoveMember { node_id } => {
            let result = nodes.remove_member(None, endpoints, *node_id).await;
            format!("removed member {node_id}{}", failure(result.err()))
        }
        Action::TransferLeader { from } => match nodes.transfer_leader(None, endpoints).await {
            Ok(to) => format!("leadership {from} -> {to}"),
            Err(e) => format!("leadership {from} -> ?{}", failure(Some(e))),
        },
        Action::DeletePod { pod } => {
            let ordinal: usize = pod
                .trim_start_matches("demo-")
                .parse()
                .expect("pod ordinal");
            // `stop` checks that the pod does not lead at that moment.
            set.stop(ordinal).await;
            set.launch(ordinal).await;
            format!("replaced {pod}")
        }
        Action::AddLearner { node_id, ordinal } => {
            let slot = &set.slots[*ordinal as usize];
            let result = nodes
                .add_member(
                    None,
                    endpoints,
                    *node_id,
                    slot.peer.to_string(),
                    slot.client.to_string(),
                )
                .await;
            format!("added learner {node_id}{}", failure(result.err()))
        }
        other => panic!("unexpected action in this scenario: {other:?}"),
    }
}

/// The log's suffix for a node call that failed.
fn failure(error: Option<NodeError>) -> String {
    error.map_or_else(String::new, |e| format!(" (failed: {e})"))
}

/// The fenced leader, once there is one (an election may be under way).
async fn current_leader(set: &FakeStatefulSet, nodes: &GrpcNodes, spec_replicas: i32) -> Leader {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(leader) = plan(&set.observe(nodes, spec_replicas).await).leader {
            return leader;
        }
        assert!(Instant::now() < deadline, "no leader within 60 s");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Runs observe -> plan -> act until `done` holds for an observed state and its plan.
async fn converge(
    set: &mut FakeStatefulSet,
    nodes: &GrpcNodes,
    spec_replicas: i32,
    started: Instant,
    log: &mut Vec<String>,
    done: impl Fn(&Observed, &Plan) -> bool,
) {
    let mut no_quorum_since: Option<Instant> = None;
    loop {
        let observed = set.observe(nodes, spec_replicas).await;
        let p = plan(&observed);
        if std::env::var_os("PLANNER_TRACE").is_some() {
            println!(
                "{:>6.2}s plan: {:?} {}",
                started.elapsed().as_secs_f64(),
                p.action,
                p.message
            );
        }
        // The point of one-at-a-time: with a leader, a quorum of voters stays healthy. A single
        // sample can under-report: the leader's `healthy` is Raft's `recent_active`, which
        // check-quorum clears every election timeout until the next heartbeat answers (reported
        // to the node's owners). So the check is that a lost quorum does not last: not beyond
        // three settle periods.
        match (&p.health, p.leader.is_some(), no_quorum_since) {
            (Health::NoQuorum(_), true, None) => no_quorum_since = Some(Instant::now()),
            (Health::NoQuorum(_), true, Some(t)) => assert!(
                t.elapsed() < Duration::from_millis(3 * settle_ms(TICK_MS, ELECTION_TICKS)),
                "quorum lost for {:?} at {:?}: {p:?}; log {log:?}",
                t.elapsed(),
                started.elapsed()
            ),
            _ => no_quorum_since = None,
        }
        if done(&observed, &p) {
            return;
        }
        // Leader last: during a roll, leadership moves only once the leader is the last pod at
        // the old revision (the followers went first).
        if let Action::TransferLeader { from } = &p.action {
            let rev = &set.update_revision;
            let stale: Vec<u64> = observed
                .pods
                .iter()
                .filter(|pod| pod.revision.as_ref() != Some(rev))
                .map(|pod| u64::from(pod.ordinal) + 1)
                .collect();
            assert!(
                stale.is_empty() || stale == [*from],
                "leadership moves away from {from} while {stale:?} are at the old revision"
            );
        }
        assert!(
            started.elapsed() < DEADLINE,
            "no convergence after {:?}; last plan {p:?}; log {log:?}",
            started.elapsed()
        );
        if p.action != Action::None {
            let line = act(set, nodes, &p).await;
            println!("{:>6.2}s {line}", started.elapsed().as_secs_f64());
            log.push(line);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// One completed (or open) operation on a key: a write of a unique value, or a read of the
/// value found (0 = absent). `responded` is None when a write's outcome is unknown: it stays
/// open for ever, as Jepsen's `info` operations do.
#[derive(Clone, Debug)]
struct Op {
    key: String,
    invoked: u64,
    responded: Option<u64>,
    op: RegisterOperation<u64>,
}

/// What a scenario's history workers share.
#[derive(Clone)]
struct HistoryShared {
    scenario: &'static str,
    /// Orders invocations and responses across workers.
    clock: Arc<AtomicU64>,
    /// The next unique value to write (0 stands for "absent").
    values: Arc<AtomicU64>,
    ops: Arc<Mutex<Vec<Op>>>,
    stop: Arc<AtomicBool>,
    started: Instant,
}

/// Concurrent clients reading and writing a few keys that change every two seconds (short
/// per-key histories keep the exponential search cheap), recording every operation.
async fn history_worker(worker: u64, endpoints: Vec<String>, shared: HistoryShared) {
    let HistoryShared {
        scenario,
        clock,
        values,
        ops,
        stop,
        started,
    } = shared;
    let client = Client::connect(endpoints, ClientOptions::default())
        .await
        .expect("client");
    // A small deterministic generator per worker: which key, read or write.
    let mut x = worker.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    while !stop.load(Ordering::Relaxed) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let key = format!(
            "{scenario}-lin-{}-{}",
            started.elapsed().as_secs() / 2,
            x % 3
        );
        let invoked = clock.fetch_add(1, Ordering::SeqCst);
        let record = if (x >> 8) & 1 == 0 {
            let value = values.fetch_add(1, Ordering::SeqCst);
            let result = client.put(key.clone(), value.to_string()).await;
            Some(Op {
                key,
                invoked,
                // A failed write may still have been applied: it stays open.
                responded: result.ok().map(|_| clock.fetch_add(1, Ordering::SeqCst)),
                op: RegisterOperation::Write(value),
            })
        } else {
            match client
                .get(key.clone(), raftkv_client::Consistency::Linearizable)
                .await
            {
                Ok(found) => {
                    let value = found
                        .map(|v| {
                            std::str::from_utf8(&v.value)
                                .ok()
                                .and_then(|s| s.parse().ok())
                                .expect("values are numbers")
                        })
                        .unwrap_or(0);
                    Some(Op {
                        key,
                        invoked,
                        responded: Some(clock.fetch_add(1, Ordering::SeqCst)),
                        op: RegisterOperation::Read(Some(value)),
                    })
                }
                // A failed read changed nothing: it is left out.
                Err(_) => None,
            }
        };
        if let Some(op) = record {
            ops.lock().unwrap_or_else(|e| e.into_inner()).push(op);
        }
    }
}

/// Checks every key's history; returns the keys whose history is not linearizable.
fn non_linearizable_keys(ops: &[Op]) -> Vec<String> {
    let mut by_key: BTreeMap<&str, Vec<&Op>> = BTreeMap::new();
    for op in ops {
        by_key.entry(&op.key).or_default().push(op);
    }
    let mut bad = vec![];
    for (key, ops) in by_key {
        // Each operation is its own process, so calls and responses pair unambiguously; open
        // operations respond after everything else.
        let mut events: Vec<(u64, usize, TodcAction<RegisterOperation<u64>>)> = vec![];
        for (process, op) in ops.iter().enumerate() {
            events.push((op.invoked, process, TodcAction::Call(op.op)));
            let at = op
                .responded
                .unwrap_or(u64::MAX - ops.len() as u64 + process as u64);
            events.push((at, process, TodcAction::Response(op.op)));
        }
        events.sort_by_key(|(at, _, _)| *at);
        let history = History::from_actions(events.into_iter().map(|(_, p, a)| (p, a)).collect());
        if !WGLChecker::<RegisterSpecification<u64>>::is_linearizable(history) {
            bad.push(key.to_string());
        }
    }
    bad
}

#[test]
fn the_history_check_catches_a_stale_read() {
    // It proves something only if it can fail: write 1 completes, then a read returns the
    // initial value.
    let op = |invoked, responded, op| Op {
        key: "k".into(),
        invoked,
        responded: Some(responded),
        op,
    };
    let stale = [
        op(0, 1, RegisterOperation::Write(1)),
        op(2, 3, RegisterOperation::Read(Some(0))),
    ];
    assert_eq!(non_linearizable_keys(&stale), ["k"]);
    let fine = [
        op(0, 1, RegisterOperation::Write(1)),
        op(2, 3, RegisterOperation::Read(Some(1))),
    ];
    assert!(non_linearizable_keys(&fine).is_empty());
    // An open write may take effect at any time after its call.
    let open = [
        Op {
            key: "k".into(),
            invoked: 0,
            responded: None,
            op: RegisterOperation::Write(2),
        },
        op(1, 2, RegisterOperation::Read(Some(0))),
        op(3, 4, RegisterOperation::Read(Some(2))),
    ];
    assert!(non_linearizable_keys(&open).is_empty());
}

/// A scenario's load: a writer of unique keys whose acknowledged writes must all survive, and
/// three clients reading and writing a few short-lived keys, every operation recorded.
struct Workload {
    scenario: &'static str,
    stop: Arc<AtomicBool>,
    acked: Arc<Mutex<Vec<u64>>>,
    writer: tokio::task::JoinHandle<u64>,
    workers: Vec<tokio::task::JoinHandle<()>>,
    ops: Arc<Mutex<Vec<Op>>>,
}

impl Workload {
    async fn start(set: &FakeStatefulSet, scenario: &'static str) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let (acked, writer) = spawn_writer(set, scenario, stop.clone()).await;
        let ops = Arc::new(Mutex::new(Vec::<Op>::new()));
        let shared = HistoryShared {
            scenario,
            clock: Arc::new(AtomicU64::new(0)),
            values: Arc::new(AtomicU64::new(1)),
            ops: ops.clone(),
            stop: stop.clone(),
            started: Instant::now(),
        };
        let workers = (1..=3)
            .map(|w| tokio::spawn(history_worker(w, set.client_addrs(), shared.clone())))
            .collect();
        Workload {
            scenario,
            stop,
            acked,
            writer,
            workers,
            ops,
        }
    }

    /// Stops the load, checks the history for linearizability and reads every acknowledged
    /// write back.
    async fn check(self, set: &FakeStatefulSet, started: Instant) {
        self.stop.store(true, Ordering::Relaxed);
        let failed = self.writer.await.expect("writer");
        for w in self.workers {
            w.await.expect("history worker");
        }
        let ops = self.ops.lock().unwrap_or_else(|e| e.into_inner()).clone();
        assert!(!ops.is_empty(), "{}: no operation recorded", self.scenario);
        let keys: std::collections::BTreeSet<&str> = ops.iter().map(|o| o.key.as_str()).collect();
        let open = ops.iter().filter(|o| o.responded.is_none()).count();
        let bad = tokio::task::spawn_blocking({
            let ops = ops.clone();
            move || non_linearizable_keys(&ops)
        })
        .await
        .expect("history check");
        assert!(
            bad.is_empty(),
            "{}: not linearizable: {bad:?}",
            self.scenario
        );
        println!(
            "{:>6.2}s {}: history of {} operations on {} keys ({open} with unknown outcome) is linearizable",
            started.elapsed().as_secs_f64(),
            self.scenario,
            ops.len(),
            keys.len()
        );
        assert_acked_present(set, self.scenario, &self.acked, failed, started).await;
    }
}

/// A writer of unique keys `<scenario>-k<i>` = `v<i>` until `stop`; the acknowledged `i`s are
/// recorded. The task returns how many writes failed or had an unknown outcome.
async fn spawn_writer(
    set: &FakeStatefulSet,
    scenario: &'static str,
    stop: Arc<AtomicBool>,
) -> (Arc<Mutex<Vec<u64>>>, tokio::task::JoinHandle<u64>) {
    let client = Client::connect(set.client_addrs(), ClientOptions::default())
        .await
        .expect("client");
    let acked = Arc::new(Mutex::new(Vec::<u64>::new()));
    let writer = {
        let acked = acked.clone();
        tokio::spawn(async move {
            let mut i = 0u64;
            let mut failed = 0u64;
            while !stop.load(Ordering::Relaxed) {
                i += 1;
                match client
                    .put(format!("{scenario}-k{i}"), format!("v{i}"))
                    .await
                {
                    Ok(_) => acked.lock().unwrap_or_else(|e| e.into_inner()).push(i),
                    Err(_) => failed += 1,
                }
            }
            failed
        })
    };
    (acked, writer)
}

/// Every acknowledged write of [`spawn_writer`] reads back (LINEARIZABLE, through the leader).
async fn assert_acked_present(
    set: &FakeStatefulSet,
    scenario: &str,
    acked: &Mutex<Vec<u64>>,
    failed: u64,
    started: Instant,
) {
    let acked = acked.lock().unwrap_or_else(|e| e.into_inner()).clone();
    assert!(!acked.is_empty(), "{scenario}: no write was acknowledged");
    let reader = Client::connect(set.client_addrs(), ClientOptions::default())
        .await
        .expect("client");
    for i in &acked {
        // A read that times out (an election, a loaded machine) says nothing about the data:
        // it is retried, within a generous deadline.
        let deadline = Instant::now() + Duration::from_secs(60);
        let got = loop {
            match reader
                .get(
                    format!("{scenario}-k{i}"),
                    raftkv_client::Consistency::Linearizable,
                )
                .await
            {
                Ok(got) => break got,
                Err(e) if Instant::now() < deadline => {
                    println!("{scenario}: reading {scenario}-k{i} again after: {e}");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                Err(e) => panic!("{scenario}: cannot read {scenario}-k{i} back: {e}"),
            }
        };
        assert_eq!(
            got.map(|v| v.value),
            Some(format!("v{i}").into()),
            "{scenario}: acknowledged write {scenario}-k{i} is missing"
        );
    }
    println!(
        "{:>6.2}s {scenario}: {} acknowledged writes all present ({failed} writes failed or had an unknown outcome)",
        started.elapsed().as_secs_f64(),
        acked.len()
    );
}

/// Waits until the leader reports `n` voters; returns them.
async fn wait_for_voters(set: &FakeStatefulSet, nodes: &GrpcNodes, n: usize) -> Vec<u64> {
    let deadline = Instant::now() + DEADLINE;
    loop {
        let p = plan(&set.observe(nodes, n as i32).await);
        if let Some(leader) = &p.leader {
            let status = nodes
                .status(&set.slots[leader.id as usize - 1].client.to_string(), None)
                .await;
            if let Ok(s) = status {
                let voters: Vec<u64> = s
                    .members
                    .iter()
                    .filter(|m| m.role == raftkv_proto::v1::MemberRole::Voter as i32)
                    .map(|m| m.id)
                    .collect();
                if voters.len() == n {
                    return voters;
                }
            }
        }
        assert!(Instant::now() < deadline, "no {n} voters in time");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Asserts that a line starting with `before` appears in the log, before the first one starting
/// with `after` (a failed attempt counts: its outcome may be unknown, yet applied).
fn assert_ordered(log: &[String], before: &str, after: &str) {
    let b = log
        .iter()
        .position(|l| l.starts_with(before))
        .expect(before);
    let a = log.iter().position(|l| l.starts_with(after)).expect(after);
    assert!(b < a, "{before} before {after}: {log:?}");
}

/// An image change replaces every pod, followers first and the leader last after a transfer;
/// then 5 -> 3, each member removed before the StatefulSet shrinks.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replaces_every_pod_leader_last_and_shrinks_5_to_3_under_load() {
    let started = Instant::now();
    let mut set = FakeStatefulSet::start(5, 5).await;
    let nodes = GrpcNodes::default();
    let mut log = vec![];
    converge(&mut set, &nodes, 5, started, &mut log, |_, p| {
        p.phase == Phase::Available
    })
    .await;
    println!(
        "{:>6.2}s 5 members available",
        started.elapsed().as_secs_f64()
    );

    let load = Workload::start(&set, "replace-all").await;
    let leader_before = current_leader(&set, &nodes, 5).await;
    set.update_revision = "r2".into();
    converge(&mut set, &nodes, 5, started, &mut log, |o, p| {
        p.phase == Phase::Available
            && o.pods
                .iter()
                .all(|pod| pod.revision.as_deref() == Some("r2"))
    })
    .await;
    let replaced: Vec<&String> = log.iter().filter(|l| l.starts_with("replaced")).collect();
    assert_eq!(replaced.len(), 5, "{log:?}");
    // The leader went last, after a transfer (converge checks that the transfer came when it was
    // the only pod left at the old revision). Unless leadership moved by itself during the roll
    // (an election on a loaded machine), that leader is the first one.
    let transfer = log.iter().position(|l| l.starts_with("leadership"));
    match transfer {
        Some(t) => {
            let from: u64 = log[t]
                .split_whitespace()
                .nth(1)
                .and_then(|id| id.parse().ok())
                .expect("leadership <from> -> <to>");
            assert_eq!(
                log[t + 1..].iter().find(|l| l.starts_with("replaced")),
                Some(&format!("replaced demo-{}", from - 1)),
                "the leader is replaced right after the transfer: {log:?}"
            );
            assert_eq!(
                replaced.last().map(|l| l.as_str()),
                Some(format!("replaced demo-{}", from - 1).as_str()),
                "the leader is replaced last: {log:?}"
            );
            if leader_before.id != from {
                println!("leadership moved by itself during the roll: {log:?}");
            }
        }
        None => println!("leadership moved by itself to a replaced pod during the roll: {log:?}"),
    }
    assert!(
        set.former_leaders_stopped >= 1,
        "the first leader was stopped, and checked not to lead"
    );
    load.check(&set, started).await;

    log.clear();
    let load = Workload::start(&set, "shrink-5-3").await;
    converge(&mut set, &nodes, 3, started, &mut log, |o, p| {
        p.phase == Phase::Available && o.statefulset.as_ref().is_some_and(|s| s.replicas == 3)
    })
    .await;
    let leader = current_leader(&set, &nodes, 3).await;
    assert!(leader.id <= 3, "{leader:?}");
    assert_ordered(&log, "removed member 5", "statefulset 5 -> 4");
    assert_ordered(&log, "removed member 4", "statefulset 4 -> 3");
    load.check(&set, started).await;
}

/// 3 -> 5 (each new pod reports that it waits to be added, is added as a learner and promoted
/// once caught up, one at a time); a member back with an empty data directory (it catches up
/// before the cluster is Available again); 5 -> 3; then 3 -> 4 over the retained volume of the
/// removed member 4 (`whenScaled: Retain`): it is added back as a learner and becomes a voter.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grows_3_to_5_replaces_a_lost_volume_shrinks_and_readds_a_retained_member() {
    let started = Instant::now();
    let mut set = FakeStatefulSet::start(3, 5).await;
    let nodes = GrpcNodes::default();
    let mut log = vec![];
    converge(&mut set, &nodes, 3, started, &mut log, |_, p| {
        p.phase == Phase::Available
    })
    .await;

    let load = Workload::start(&set, "grow-3-5").await;
    converge(&mut set, &nodes, 5, started, &mut log, |o, p| {
        p.phase == Phase::Available && o.statefulset.as_ref().is_some_and(|s| s.replicas == 5)
    })
    .await;
    assert_ordered(&log, "statefulset 3 -> 4", "added learner 4");
    assert_ordered(&log, "statefulset 4 -> 5", "added learner 5");
    let voters = wait_for_voters(&set, &nodes, 5).await;
    println!(
        "{:>6.2}s grown to 5 voters {voters:?}",
        started.elapsed().as_secs_f64()
    );
    load.check(&set, started).await;

    // A follower's volume is lost: the pod restarts empty under the same id.
    let load = Workload::start(&set, "lost-volume").await;
    let leader = current_leader(&set, &nodes, 5).await;
    let victim = (0..5)
        .find(|&o| o as u64 + 1 != leader.id)
        .expect("a follower");
    set.stop(victim).await;
    let dir = set.slots[victim].data_dir.clone();
    std::fs::remove_dir_all(&dir).expect("wipe");
    set.launch(victim).await;
    converge(&mut set, &nodes, 5, started, &mut log, |o, p| {
        p.phase == Phase::Available
            && o.pods.iter().any(|pod| {
                pod.ordinal as usize == victim
                    && pod
                        .status
                        .as_ref()
                        .is_some_and(|s| s.member_state == MemberState::Voter)
            })
    })
    .await;
    println!(
        "{:>6.2}s the wiped member {} rejoined and caught up",
        started.elapsed().as_secs_f64(),
        victim + 1
    );
    load.check(&set, started).await;

    log.clear();
    let load = Workload::start(&set, "shrink-5-3").await;
    converge(&mut set, &nodes, 3, started, &mut log, |o, p| {
        p.phase == Phase::Available && o.statefulset.as_ref().is_some_and(|s| s.replicas == 3)
    })
    .await;
    assert_ordered(&log, "removed member 5", "statefulset 5 -> 4");
    assert_ordered(&log, "removed member 4", "statefulset 4 -> 3");
    println!("{:>6.2}s shrunk to 3", started.elapsed().as_secs_f64());
    load.check(&set, started).await;

    // 3 -> 4 again: demo-3 starts on its retained volume as node 4, which was removed from the
    // configuration. It is added back as a learner and promoted.
    log.clear();
    let load = Workload::start(&set, "readd-retained").await;
    converge(&mut set, &nodes, 4, started, &mut log, |o, p| {
        p.phase == Phase::Available && o.statefulset.as_ref().is_some_and(|s| s.replicas == 4)
    })
    .await;
    assert_ordered(&log, "statefulset 3 -> 4", "added learner 4");
    let voters = wait_for_voters(&set, &nodes, 4).await;
    println!(
        "{:>6.2}s the removed member 4 is back, voters {voters:?}",
        started.elapsed().as_secs_f64()
    );
    load.check(&set, started).await;
}
