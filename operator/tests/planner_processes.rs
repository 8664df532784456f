//! The planner and the node side of the act layer driven against real raftkv nodes, with no
//! Kubernetes: a test adapter plays the StatefulSet (it starts and stops in-process nodes at the
//! planner's request, each with its own data directory and fixed ports), the nodes are asked
//! through the same [`GrpcNodes`] the controller uses, and a writer runs throughout.
//!
//! Checked: while a leader exists, a quorum of voters never stays unhealthy; the history of
//! concurrent reads and writes on short-lived keys is linearizable (todc-utils' WGL checker, per
//! key); every pod is replaced with the leader last (a pod is never stopped while it leads);
//! the cluster grows 3 -> 5, each new pod added as a learner once it reports
//! `MEMBER_STATE_WAITING_TO_BE_ADDED`; a member that comes back with an empty data directory
//! rejoins and catches up before the cluster is Available again; the cluster shrinks 5 -> 3
//! with each member removed before the StatefulSet shrinks; no acknowledged write is lost.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use raftkv_client::{Client, ClientOptions};
use raftkv_node::transport::TransportConfig;
use raftkv_node::{DriverConfig, NodeConfig, RunningNode, start_with_listeners};
use raftkv_operator::crd::Phase;
use raftkv_operator::nodes::{GrpcNodes, NodeApi};
use raftkv_operator::observe::node_status;
use raftkv_operator::planner::{
    Action, Health, MemberState, NodeRole, Observed, ObservedPod, ObservedStatefulSet, Plan, plan,
    settle_ms,
};
use tempfile::TempDir;
use todc_utils::specifications::register::{RegisterOperation, RegisterSpecification};
use todc_utils::{Action as TodcAction, History, WGLChecker};
use tokio::net::TcpListener;

/// The nodes' Raft timing: 30 ms ticks, elections after 10 to 20 ticks.
const TICK_MS: u64 = 30;
const ELECTION_TICKS: u64 = 10;

/// How long the whole scenario may take on a loaded 2-core machine.
const DEADLINE: Duration = Duration::from_secs(180);

/// One pod slot of the fake StatefulSet: fixed ports and a data directory that outlive restarts.
struct Slot {
    client: SocketAddr,
    peer: SocketAddr,
    dir: TempDir,
    node: Option<RunningNode>,
    revision: String,
}

/// Plays the StatefulSet: `replicas` pods, an update revision, pods started at a revision.
struct FakeStatefulSet {
    slots: Vec<Slot>,
    replicas: usize,
    /// When each pod was first seen ready since its last start (the kubelet's Ready transition).
    ready_since: Mutex<BTreeMap<usize, Instant>>,
    update_revision: String,
    initial: u64,
    peers: BTreeMap<u64, String>,
}

impl FakeStatefulSet {
    async fn start(size: usize) -> Self {
        Self::start_with_room(size, size).await
    }

    /// `size` pods running, and slots (ports, data directories) for up to `room` pods, so that
    /// the set can grow: every pod's peer list names them all, as the headless Service's DNS
    /// names would.
    async fn start_with_room(size: usize, room: usize) -> Self {
        // Bind every port first so that the peer map is complete.
        let mut listeners = vec![];
        for _ in 0..room {
            let c = TcpListener::bind("127.0.0.1:0").await.expect("bind client");
            let p = TcpListener::bind("127.0.0.1:0").await.expect("bind peer");
            listeners.push((c, p));
        }
        let peers: BTreeMap<u64, String> = listeners
            .iter()
            .enumerate()
            .map(|(i, (_, p))| (i as u64 + 1, p.local_addr().expect("addr").to_string()))
            .collect();
        let mut set = FakeStatefulSet {
            slots: vec![],
            replicas: size,
            ready_since: Mutex::default(),
            update_revision: "r1".into(),
            initial: size as u64,
            peers,
        };
        for (i, (c, p)) in listeners.iter().enumerate() {
            set.slots.push(Slot {
                client: c.local_addr().expect("addr"),
                peer: p.local_addr().expect("addr"),
                dir: tempfile::Builder::new()
                    .prefix(&format!("raftkv-op-{i}-"))
                    .tempdir()
                    .expect("data dir"),
                node: None,
                revision: "r1".into(),
            });
        }
        // All at once: a fresh node bootstraps only once a quorum of the initial members answers.
        // The slots beyond `size` keep their ports (rebound when they launch).
        let starting: Vec<_> = listeners
            .into_iter()
            .take(size)
            .enumerate()
            .map(|(i, (c, p))| tokio::spawn(start_with_listeners(set.config(i), c, p)))
            .collect();
        for (i, task) in starting.into_iter().enumerate() {
            set.slots[i].node = Some(task.await.expect("start task").expect("node starts"));
        }
        set
    }

    fn config(&self, ordinal: usize) -> NodeConfig {
        let slot = &self.slots[ordinal];
        NodeConfig {
            id: ordinal as u64 + 1,
            advertise_client: slot.client.to_string(),
            advertise_peer: slot.peer.to_string(),
            peers: self.peers.clone(),
            data_dir: slot.dir.path().to_path_buf(),
            initial_cluster_size: self.initial,
            initial_cluster_token: "operator-process-test".into(),
            driver: DriverConfig {
                tick: Duration::from_millis(TICK_MS),
                election_ticks: ELECTION_TICKS,
                ..DriverConfig::default()
            },
            transport: TransportConfig::default(),
            seed: None,
            listen_metrics: None,
        }
    }

    /// (Re)starts pod `ordinal` at the update revision, on its fixed ports and data directory.
    async fn launch(&mut self, ordinal: usize) {
        let cfg = self.config(ordinal);
        let slot = &mut self.slots[ordinal];
        let c = TcpListener::bind(slot.client).await.expect("rebind client");
        let p = TcpListener::bind(slot.peer).await.expect("rebind peer");
        slot.node = Some(start_with_listeners(cfg, c, p).await.expect("node starts"));
        slot.revision = self.update_revision.clone();
    }

    async fn stop(&mut self, ordinal: usize) {
        self.ready_since
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&ordinal);
        if let Some(node) = self.slots[ordinal].node.take() {
            node.stop().await.expect("node stops cleanly");
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
            if slot.node.is_none() {
                continue;
            }
            let status = nodes
                .status(&slot.client.to_string())
                .await
                .ok()
                .map(|r| node_status(&r));
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
        Observed {
            spec_replicas,
            paused: false,
            initial_replicas: Some(self.initial as i32),
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

/// Carries out one planned action; returns a line for the log.
async fn act(
    set: &mut FakeStatefulSet,
    nodes: &GrpcNodes,
    observed: &Observed,
    p: &Plan,
) -> String {
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
            nodes
                .remove_member(endpoints, *node_id)
                .await
                .expect("remove member");
            format!("removed member {node_id}")
        }
        Action::TransferLeader { from } => {
            let to = nodes.transfer_leader(endpoints).await.expect("transfer");
            format!("leadership {from} -> {to}")
        }
        Action::DeletePod { pod } => {
            let ordinal: usize = pod
                .trim_start_matches("demo-")
                .parse()
                .expect("pod ordinal");
            // The pod must not lead at the moment it is stopped.
            let now = nodes
                .status(&set.slots[ordinal].client.to_string())
                .await
                .expect("status of the pod to replace");
            assert_ne!(
                node_status(&now).role,
                NodeRole::Leader,
                "{pod} leads while being replaced; observed {observed:?}"
            );
            set.stop(ordinal).await;
            set.launch(ordinal).await;
            format!("replaced {pod}")
        }
        Action::AddLearner { node_id, ordinal } => {
            let slot = &set.slots[*ordinal as usize];
            nodes
                .add_member(
                    endpoints,
                    *node_id,
                    slot.peer.to_string(),
                    slot.client.to_string(),
                )
                .await
                .expect("add member");
            format!("added learner {node_id}")
        }
        other => panic!("unexpected action in this scenario: {other:?}"),
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
        assert!(
            started.elapsed() < DEADLINE,
            "no convergence after {:?}; last plan {p:?}; log {log:?}",
            started.elapsed()
        );
        if p.action != Action::None {
            let line = act(set, nodes, &observed, &p).await;
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

/// Concurrent clients reading and writing a few keys that change every two seconds (short
/// per-key histories keep the exponential search cheap), recording every operation.
async fn history_worker(
    worker: u64,
    endpoints: Vec<String>,
    clock: Arc<AtomicU64>,
    values: Arc<AtomicU64>,
    ops: Arc<Mutex<Vec<Op>>>,
    stop: Arc<AtomicBool>,
    started: Instant,
) {
    let client = Client::connect(endpoints, ClientOptions::default())
        .await
        .expect("client");
    // A small deterministic generator per worker: which key, read or write.
    let mut x = worker.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    while !stop.load(Ordering::Relaxed) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let key = format!("lin-{}-{}", started.elapsed().as_secs() / 2, x % 3);
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replaces_every_pod_leader_last_and_shrinks_5_to_3_under_writes() {
    let started = Instant::now();
    let mut set = FakeStatefulSet::start(5).await;
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

    // A writer throughout: unique keys, acknowledged ones recorded.
    let stop = Arc::new(AtomicBool::new(false));
    let (acked, writer) = spawn_writer(&set, stop.clone()).await;

    let clock = Arc::new(AtomicU64::new(0));
    let values = Arc::new(AtomicU64::new(1));
    let ops = Arc::new(Mutex::new(Vec::<Op>::new()));
    let workers: Vec<_> = (1..=3)
        .map(|w| {
            tokio::spawn(history_worker(
                w,
                set.client_addrs(),
                clock.clone(),
                values.clone(),
                ops.clone(),
                stop.clone(),
                started,
            ))
        })
        .collect();

    // An image change: every pod replaced, followers first, the leader last after a transfer.
    let leader_before = plan(&set.observe(&nodes, 5).await)
        .leader
        .expect("a leader");
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
    assert_eq!(
        replaced.last().map(|s| s.as_str()),
        Some(format!("replaced {}", leader_before.pod).as_str()),
        "the first leader is replaced last: {log:?}"
    );
    let transfer = log
        .iter()
        .position(|l| l.starts_with("leadership"))
        .expect("a transfer");
    let last_replace = log
        .iter()
        .rposition(|l| l.starts_with("replaced"))
        .expect("replaced");
    assert!(transfer < last_replace, "{log:?}");
    println!(
        "{:>6.2}s every pod replaced",
        started.elapsed().as_secs_f64()
    );

    // Shrink 5 -> 3, one member at a time.
    log.clear();
    converge(&mut set, &nodes, 3, started, &mut log, |o, p| {
        p.phase == Phase::Available && o.statefulset.as_ref().is_some_and(|s| s.replicas == 3)
    })
    .await;
    let leader = plan(&set.observe(&nodes, 3).await)
        .leader
        .expect("a leader");
    assert!(leader.id <= 3, "{leader:?}");
    assert_eq!(
        log.iter()
            .filter(|l| l.starts_with("removed member"))
            .count(),
        2,
        "{log:?}"
    );
    for (removed, shrink) in [
        ("removed member 5", "statefulset 5 -> 4"),
        ("removed member 4", "statefulset 4 -> 3"),
    ] {
        let r = log.iter().position(|l| l == removed).expect(removed);
        let s = log.iter().position(|l| l == shrink).expect(shrink);
        assert!(r < s, "{removed} before {shrink}: {log:?}");
    }
    println!("{:>6.2}s shrunk to 3", started.elapsed().as_secs_f64());

    stop.store(true, Ordering::Relaxed);
    let failed = writer.await.expect("writer");
    for w in workers {
        w.await.expect("history worker");
    }
    let ops = ops.lock().unwrap_or_else(|e| e.into_inner()).clone();
    let keys: std::collections::BTreeSet<&str> = ops.iter().map(|o| o.key.as_str()).collect();
    let open = ops.iter().filter(|o| o.responded.is_none()).count();
    let bad = non_linearizable_keys(&ops);
    assert!(bad.is_empty(), "not linearizable: {bad:?}");
    println!(
        "{:>6.2}s history: {} operations on {} keys ({open} with unknown outcome), linearizable",
        started.elapsed().as_secs_f64(),
        ops.len(),
        keys.len()
    );
    assert_acked_present(&set, &acked, failed, started).await;
    for ordinal in 0..5 {
        set.stop(ordinal).await;
    }
}

/// A writer of unique keys `k<i>` = `v<i>` until `stop`; the acknowledged `i`s are recorded. The
/// task returns how many writes failed or had an unknown outcome.
async fn spawn_writer(
    set: &FakeStatefulSet,
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
                match client.put(format!("k{i}"), format!("v{i}")).await {
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
    acked: &Mutex<Vec<u64>>,
    failed: u64,
    started: Instant,
) {
    let acked = acked.lock().unwrap_or_else(|e| e.into_inner()).clone();
    assert!(!acked.is_empty());
    let reader = Client::connect(set.client_addrs(), ClientOptions::default())
        .await
        .expect("client");
    for i in &acked {
        let got = reader
            .get(format!("k{i}"), raftkv_client::Consistency::Linearizable)
            .await
            .expect("read");
        assert_eq!(
            got.map(|v| v.value),
            Some(format!("v{i}").into()),
            "acknowledged write k{i} is missing"
        );
    }
    println!(
        "{:>6.2}s {} acknowledged writes all present ({failed} writes failed or had an unknown outcome)",
        started.elapsed().as_secs_f64(),
        acked.len()
    );
}

/// Scale 3 -> 5 under a writer (each new pod reports it waits to be added, is added as a
/// learner and promoted once caught up, one at a time), then a member comes back with an empty
/// data directory (it rejoins and catches up before the cluster is Available again), then
/// 5 -> 3. No acknowledged write is lost.
#[tokio::test(flavor = "multi_thread")]
async fn scales_3_to_5_replaces_a_lost_volume_and_shrinks_back_under_writes() {
    let started = Instant::now();
    let mut set = FakeStatefulSet::start_with_room(3, 5).await;
    let nodes = GrpcNodes::default();
    let mut log = vec![];
    converge(&mut set, &nodes, 3, started, &mut log, |_, p| {
        p.phase == Phase::Available
    })
    .await;
    let stop = Arc::new(AtomicBool::new(false));
    let (acked, writer) = spawn_writer(&set, stop.clone()).await;

    converge(&mut set, &nodes, 5, started, &mut log, |o, p| {
        p.phase == Phase::Available && o.statefulset.as_ref().is_some_and(|s| s.replicas == 5)
    })
    .await;
    for (grow, add) in [
        ("statefulset 3 -> 4", "added learner 4"),
        ("statefulset 4 -> 5", "added learner 5"),
    ] {
        let g = log.iter().position(|l| l == grow).expect(grow);
        let a = log.iter().position(|l| l == add).expect(add);
        assert!(g < a, "{grow} before {add}: {log:?}");
    }
    let voters = wait_for_voters(&set, &nodes, 5).await;
    println!(
        "{:>6.2}s grown to 5 voters {voters:?}",
        started.elapsed().as_secs_f64()
    );

    // A follower's volume is lost: the pod restarts empty under the same id.
    let leader = plan(&set.observe(&nodes, 5).await)
        .leader
        .expect("a leader");
    let victim = (0..5)
        .find(|&o| o as u64 + 1 != leader.id)
        .expect("a follower");
    set.stop(victim).await;
    let dir = set.slots[victim].dir.path().to_path_buf();
    std::fs::remove_dir_all(&dir).expect("wipe");
    std::fs::create_dir_all(&dir).expect("recreate");
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

    converge(&mut set, &nodes, 3, started, &mut log, |o, p| {
        p.phase == Phase::Available && o.statefulset.as_ref().is_some_and(|s| s.replicas == 3)
    })
    .await;
    println!("{:>6.2}s shrunk to 3", started.elapsed().as_secs_f64());
    stop.store(true, Ordering::Relaxed);
    let failed = writer.await.expect("writer");
    assert_acked_present(&set, &acked, failed, started).await;
    for ordinal in 0..5 {
        set.stop(ordinal).await;
    }
}

/// Waits until the leader reports `n` voters; returns them.
async fn wait_for_voters(set: &FakeStatefulSet, nodes: &GrpcNodes, n: usize) -> Vec<u64> {
    let deadline = Instant::now() + DEADLINE;
    loop {
        let p = plan(&set.observe(nodes, n as i32).await);
        if let Some(leader) = &p.leader {
            let status = nodes
                .status(&set.slots[leader.id as usize - 1].client.to_string())
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
