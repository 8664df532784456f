//! The fault-injection suite (DESIGN.md §8.2, §8.3): seeded runs of concurrent clients against a
//! 3-node cluster in network namespaces while a nemesis kills (-9), pauses (SIGSTOP), restarts
//! the whole cluster (one by one, or all at once), wipes a member's volume and partitions nodes; at the end every key's history must be linearizable
//! and no acknowledged write may be lost. The machinery is `support/fault.rs`.
//!
//! - `linearizable_reads_under_faults`: the default fault mix, LINEARIZABLE reads.
//! - `lease_reads_under_faults`: LEASE reads, with a nemesis that mostly freezes the leader
//!   (SIGSTOP, and SIGSTOP while cut off from its peers): a lease must not outlive a pause.
//! - `tls_on_both_ports_under_faults`: the default mix with mutual TLS between peers and TLS
//!   with client certificates on the client port (one seed unless `FAULT_TLS_SEEDS` says
//!   otherwise; `FAULT_TLS=1` runs every test of the suite with TLS).
//!
//! Knobs: `FAULT_SEEDS` (seeds per test, default 5 each, so 10 in all), `FAULT_SECONDS` (nemesis
//! time per seed, default 30), `FAULT_SEED=n` (replay one seed's fault schedule),
//! `FAULT_KEEP_HISTORY=1` (keep the JSON-lines histories). Seeds run one after another (a
//! 3-node cluster each; the tests share one lock): about 40 s per seed on a 2-core machine.
//!
//! Needs root and `ip netns`: skipped loudly without them, a failure under `CI=true`.

mod support;

use std::time::Instant;

use raftkv_client::Consistency;
use support::fault::{
    FaultKind, Nemesis, RunConfig, Workload, fresh_seeds, run_seed, seconds, seeds,
};
use support::netns::netns_or_skip;

/// The runs of this binary take turns: each is a 3-node cluster on a 2-core machine.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Seeds per test unless `FAULT_SEEDS` says otherwise.
const DEFAULT_SEEDS: usize = 5;
/// Nemesis seconds per seed unless `FAULT_SECONDS` says otherwise.
const DEFAULT_SECONDS: u64 = 30;

async fn run_all(cfg: RunConfig) {
    run_seeds(cfg, seeds(DEFAULT_SEEDS)).await;
}

/// Runs `seeds` of `cfg` one after another and asserts that none found a violation.
async fn run_seeds(cfg: RunConfig, seeds: Vec<u64>) {
    println!(
        "[fault] {}: seeds {seeds:?}, {:?} each (replay one with FAULT_SEED=<seed>)",
        cfg.name, cfg.duration
    );
    let started = Instant::now();
    let mut failed = Vec::new();
    let (mut ops, mut faults, mut keys) = (0, 0, 0);
    for seed in seeds.iter().copied() {
        let result = run_seed(seed, &cfg).await;
        println!("{}", result.text);
        ops += result.report.summary.operations;
        keys += result.report.summary.keys;
        faults += result.faults.len();
        if result.caught() || result.incomplete() {
            println!(
                "!! seed {seed} FAILED (replay: FAULT_SEED={seed}); {} key(s) too long to check; \
                 history kept at {}\n{}",
                result.report.summary.unknown,
                result.history_path.display(),
                result.findings()
            );
            failed.push(seed);
        } else {
            result.discard_history();
        }
    }
    println!(
        "[fault] {}: {} seeds, {faults} faults, {ops} operations, {keys} keys checked in \
         {:.1?}; failing seeds: {failed:?}",
        cfg.name,
        seeds.len(),
        started.elapsed()
    );
    assert!(
        failed.is_empty(),
        "{}: seeds {failed:?} found violations or lost writes, or could not be checked (see \
         above)",
        cfg.name
    );
}

/// The default fault mix with LINEARIZABLE reads.
#[tokio::test(flavor = "multi_thread")]
async fn linearizable_reads_under_faults() {
    if !netns_or_skip("linearizable_reads_under_faults") {
        return;
    }
    let _turn = SERIAL.lock().await;
    run_all(RunConfig {
        name: "linearizable".into(),
        duration: seconds(DEFAULT_SECONDS),
        planted_bug: None,
        tls: false,
        workload: Workload::default(),
        nemesis: Nemesis::default(),
    })
    .await;
}

/// LEASE reads while the nemesis mostly freezes the leader: a leader that was paused must find
/// its lease expired when it wakes, even while cut off from the new leader.
#[tokio::test(flavor = "multi_thread")]
async fn lease_reads_under_faults() {
    if !netns_or_skip("lease_reads_under_faults") {
        return;
    }
    let _turn = SERIAL.lock().await;
    run_all(RunConfig {
        name: "lease".into(),
        duration: seconds(DEFAULT_SECONDS),
        planted_bug: None,
        tls: false,
        workload: Workload {
            reads: Consistency::Lease,
            patient_readers_per_group: 2,
            ..Workload::default()
        },
        nemesis: Nemesis {
            weights: vec![
                (FaultKind::Pause, 4),
                (FaultKind::PauseThenCut, 3),
                (FaultKind::Kill, 1),
                (FaultKind::Isolate, 1),
                (FaultKind::RestartAll, 1),
                (FaultKind::RestartAllAtOnce, 1),
                (FaultKind::Wipe, 1),
            ],
            leader_share: 0.8,
            ..Nemesis::default()
        },
    })
    .await;
}

/// The default fault mix with TLS on both ports: mutual TLS between the peers (every reconnect
/// after a kill, pause or partition is a new handshake) and client certificates on the client
/// port.
#[tokio::test(flavor = "multi_thread")]
async fn tls_on_both_ports_under_faults() {
    if !netns_or_skip("tls_on_both_ports_under_faults") {
        return;
    }
    let _turn = SERIAL.lock().await;
    let count = std::env::var("FAULT_TLS_SEEDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1);
    run_seeds(
        RunConfig {
            name: "tls".into(),
            duration: seconds(DEFAULT_SECONDS),
            planted_bug: None,
            tls: true,
            workload: Workload::default(),
            nemesis: Nemesis::default(),
        },
        fresh_seeds(count),
    )
    .await;
}
