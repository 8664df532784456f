//! Snapshots of a large store must not stall any event loop long enough for an election (the
//! safety issue, item 8): three `kvnode` processes with the fault suite's timing (50 ms ticks,
//! elections after 0.5-1 s of leader silence) load over 200 MB, taking several snapshots on the
//! way; then a follower loses its data dir and installs the full snapshot from the leader.
//!
//! Asserted: no node's term moved from before the load to after the install (no election), the
//! leader stayed, and a sample of keys reads back from the reinstalled follower's own copy.
//! Printed (`-- --nocapture`): bytes loaded, load time, each snapshot's size and times (time
//! on the loop to freeze the view, and to write and fsync it, from the nodes' "snapshot written"
//! log lines), the install time, and each follower's largest gap between two messages from its
//! leader (`raftkv_leader_silence_max_seconds`), beside the number of slow storage batches
//! (write + fsync, which the loop awaits) on each node.
//!
//! The gaps are printed, not asserted: a follower counts its own stalls too, and on a shared
//! disk they are dominated by fsyncs the loop awaits (WAL batches queued behind three nodes'
//! snapshot writes); a stalled follower does not tick either, so it does not elect. The
//! reinstalled follower decodes the received snapshot on the blocking pool before its core hears
//! of it, so the decode no longer stalls its loop (its largest gap went from 1.6-5.5 s to about
//! 0.2 s in a debug build).
//!
//! Budget: about 50 s of wall time and under 2 GB of disk in a debug build on 2 cores; the
//! temporary directory is removed at the end.

mod support;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use raftkv_client::{Client, ClientOptions, Consistency};
use support::cluster::{Cluster, ClusterOptions};
use support::wait::wait_for;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// One value: 64 KiB.
const VALUE_BYTES: usize = 64 * 1024;
/// Keys loaded: 3,250 x 64 KiB = 203 MiB of values.
const KEYS: usize = 3_250;
/// Concurrent writers: enough to fill the leader's batches (group commit) on a debug build.
const WRITERS: usize = 64;
/// `--snapshot-entries`: four snapshots per node during the load.
const SNAPSHOT_ENTRIES: u64 = 800;
/// Generous bounds for a loaded 2-core machine; every wait polls for its condition.
const LOAD_TIMEOUT: Duration = Duration::from_secs(240);
const INSTALL_TIMEOUT: Duration = Duration::from_secs(120);

fn key(i: usize) -> String {
    format!("big/{i:06}")
}

/// The value of key `i`: distinct per key, so that a read back proves the right value arrived.
fn value(i: usize) -> Bytes {
    let seed = (i as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    Bytes::from(seed.to_le_bytes().repeat(VALUE_BYTES / 8))
}

/// The address node `id` serves metrics on in its current run (it listens on port 0 and logs
/// the port it got).
fn metrics_addr(cluster: &Cluster, id: u64) -> Option<SocketAddr> {
    let log = cluster.log_of_current_start(id);
    let line = log.lines().find(|l| l.contains("node started"))?;
    let rest = &line[line.find("metrics=Some(")? + "metrics=Some(".len()..];
    rest[..rest.find(')')?].parse().ok()
}

/// One gauge or counter of node `id`, or `None` if the node does not answer.
async fn metric(cluster: &Cluster, id: u64, name: &str) -> Option<f64> {
    let addr = metrics_addr(cluster, id)?;
    let mut stream = TcpStream::connect(addr).await.ok()?;
    stream
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .ok()?;
    let mut body = String::new();
    stream.read_to_string(&mut body).await.ok()?;
    body.lines().find_map(|l| {
        let (series, v) = l.rsplit_once(' ')?;
        (series == name).then(|| v.parse().ok())?
    })
}

/// The "snapshot written" lines of node `id`'s log, all runs: (index, bytes, frozen_us,
/// written_ms).
fn snapshots_written(cluster: &Cluster, id: u64) -> Vec<(u64, u64, u64, u64)> {
    let field = |line: &str, name: &str| -> Option<u64> {
        let at = line.find(&format!(" {name}="))? + name.len() + 2;
        line[at..]
            .split(|c: char| !c.is_ascii_digit())
            .next()?
            .parse()
            .ok()
    };
    cluster
        .log(id)
        .lines()
        .filter(|l| l.contains("snapshot written"))
        .filter_map(|l| {
            Some((
                field(l, "index")?,
                field(l, "bytes")?,
                field(l, "frozen_us")?,
                field(l, "written_ms")?,
            ))
        })
        .collect()
}

async fn terms(cluster: &Cluster) -> BTreeMap<u64, u64> {
    cluster
        .statuses()
        .await
        .into_iter()
        .map(|(id, s)| (id, s.map_or(0, |s| s.term)))
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn snapshots_of_200_mb_are_taken_and_installed_without_an_election() {
    let opts = ClusterOptions {
        snapshot_entries: SNAPSHOT_ENTRIES,
        // No trailing log: the whole log fits in the default one, and the wiped follower would
        // catch up from entries instead of installing the snapshot this test is about.
        extra_args: vec![
            "--listen-metrics".into(),
            "127.0.0.1:0".into(),
            "--snapshot-trailing-entries".into(),
            "0".into(),
        ],
        ..ClusterOptions::default()
    };
    let mut cluster = Cluster::start_with(3, opts).await;
    let leader = cluster.leader().await;
    let followers: Vec<u64> = cluster
        .ids()
        .into_iter()
        .filter(|&id| id != leader)
        .collect();
    let before = terms(&cluster).await;
    let term = before[&leader];
    assert!(
        before.values().all(|&t| t == term),
        "all nodes agree on the term before the load: {before:?}"
    );

    // Load: WRITERS tasks share the keys, each write one entry of 16 KiB.
    // Long attempts: on a loaded machine a round of 64 x 64 KiB may take seconds to commit, and
    // a retry after a short attempt timeout would only send the same 64 KiB again.
    let client = Client::connect(
        cluster.endpoints(),
        ClientOptions {
            timeout: LOAD_TIMEOUT,
            attempt_timeout: Duration::from_secs(20),
            ..support::test_client_options()
        },
    )
    .await
    .expect("client");
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for w in 0..WRITERS {
        let client = client.clone();
        tasks.spawn(async move {
            for i in (w..KEYS).step_by(WRITERS) {
                client
                    .put(key(i), value(i))
                    .await
                    .unwrap_or_else(|e| panic!("put {}: {e}", key(i)));
            }
        });
    }
    let deadline = tokio::time::sleep(LOAD_TIMEOUT);
    tokio::pin!(deadline);
    loop {
        tokio::select! {
            joined = tasks.join_next() => match joined {
                Some(r) => r.expect("writer task"),
                None => break,
            },
            _ = &mut deadline => panic!("loading {KEYS} keys took over {LOAD_TIMEOUT:?}"),
        }
    }
    let load_time = started.elapsed();
    let loaded = (KEYS * VALUE_BYTES) as u64;
    eprintln!(
        "[200mb] loaded {loaded} bytes ({KEYS} x {VALUE_BYTES}) with {WRITERS} writers in {load_time:.2?} ({:.1} MB/s)",
        loaded as f64 / 1e6 / load_time.as_secs_f64()
    );
    for &f in &followers {
        cluster.wait_caught_up(f, LOAD_TIMEOUT).await;
    }

    // Every node snapshotted several times while loading: one every SNAPSHOT_ENTRIES entries,
    // except that a threshold passed while the previous snapshot is still being written is
    // taken at the next entry after it, so the last one may not come. Wait for the others.
    let expected = KEYS as u64 / SNAPSHOT_ENTRIES - 1;
    for id in cluster.ids() {
        wait_for(
            &format!("node {id} to write {expected} snapshots"),
            LOAD_TIMEOUT,
            async || {
                let n = snapshots_written(&cluster, id).len();
                (n as u64 >= expected).then_some(())
            },
        )
        .await;
    }
    let mut gaps = BTreeMap::new();
    for &f in &followers {
        gaps.insert(
            f,
            metric(&cluster, f, "raftkv_leader_silence_max_seconds")
                .await
                .expect("follower metrics"),
        );
    }
    // Slow fsyncs on each node's loop (it awaits them), to set beside the gaps.
    let mut slow_fsyncs = BTreeMap::new();
    for id in cluster.ids() {
        let count = async |le: &str| {
            metric(
                &cluster,
                id,
                &format!("raftkv_fsync_duration_seconds_bucket{{le=\"{le}\"}}"),
            )
            .await
            .expect("node metrics")
        };
        let (at_most_quarter, at_most_half, all) =
            (count("0.25").await, count("0.5").await, count("+Inf").await);
        slow_fsyncs.insert(id, (all - at_most_quarter, all - at_most_half, all));
    }

    // Install: one follower loses its volume and gets the whole state as one snapshot.
    let victim = followers[0];
    cluster.kill9(victim);
    cluster.wipe(victim);
    let started = Instant::now();
    cluster.restart(victim).await;
    cluster.wait_caught_up(victim, INSTALL_TIMEOUT).await;
    let install_time = started.elapsed();
    let installed = metric(&cluster, victim, "raftkv_snapshots_installed_total")
        .await
        .expect("metrics of the reinstalled follower");
    assert!(installed >= 1.0, "node {victim} installed no snapshot");
    let victim_gap = metric(&cluster, victim, "raftkv_leader_silence_max_seconds")
        .await
        .expect("metrics of the reinstalled follower");

    // No election anywhere: every node is at the term of before (the wiped node learnt it).
    let after = terms(&cluster).await;
    assert!(
        after.values().all(|&t| t == term),
        "a term moved during the load or the install (an election): before {before:?}, after {after:?}"
    );
    assert_eq!(
        cluster.try_leader().await,
        Some(leader),
        "the leader changed"
    );

    // A sample of keys reads back from the reinstalled follower's own copy.
    let own = cluster.client_of(victim).await;
    for i in (0..KEYS).step_by(KEYS / 50) {
        let got = own
            .get(key(i), Consistency::Stale)
            .await
            .unwrap_or_else(|e| panic!("stale get {} on node {victim}: {e}", key(i)))
            .unwrap_or_else(|| panic!("{} missing on node {victim}", key(i)));
        assert!(got.value == value(i), "{} has a wrong value", key(i));
    }

    for id in cluster.ids() {
        for (index, bytes, frozen_us, written_ms) in snapshots_written(&cluster, id) {
            eprintln!(
                "[200mb] node {id}: snapshot at {index}: {bytes} bytes, frozen in {frozen_us} us \
                 on the loop, written and fsynced in {written_ms} ms"
            );
        }
    }
    eprintln!(
        "[200mb] node {victim} wiped and restarted: caught up (snapshot received, decoded, installed) in {install_time:.2?}"
    );
    for (id, (over_quarter, over_half, all)) in &slow_fsyncs {
        eprintln!(
            "[200mb] node {id}: {all} storage batches during the load, {over_quarter} took over 0.25 s, {over_half} over 0.5 s"
        );
    }
    for (f, gap) in &gaps {
        eprintln!("[200mb] node {f}: largest leader silence during the load: {gap:.3} s");
    }
    eprintln!(
        "[200mb] node {victim}: largest leader silence since its restart (install): {victim_gap:.3} s"
    );
}
