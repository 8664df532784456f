//! Micro-benchmark of the on-disk WAL. Prints appends/s and fsyncs/s; asserts nothing.
//!
//! `cargo bench -p raftkv-node --bench storage_wal`
//!
//! Two kinds of runs, each on a fresh `DiskStorage` in a temp directory:
//! - direct: append a batch of B entries, record the hard state, `sync` — for B = 1, 16, 256;
//!   fsyncs/s is the device's sync rate, appends/s what batching buys on top of it;
//! - thread: one producer keeps W single-entry requests in flight through the `StorageThread`
//!   (the driver's pattern under load); the thread folds whatever is queued into one fsync.
//!
//! Environment: `RAFTKV_BENCH_DIR` (where the temp directories go; default the system temp dir —
//! it must be a real disk, fsync on tmpfs is free), `RAFTKV_BENCH_SECS` (per run, default 2),
//! `RAFTKV_BENCH_VALUE` (payload bytes per entry, default 128). Run by `cargo test` (without
//! `--bench`), it does a quick smoke run instead.

use std::sync::mpsc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use raftkv_node::storage::{
    DiskOptions, DiskStorage, LogStorage, StorageError, StorageThread, WriteBatch,
};
use raftkv_raft::{Entry, EntryPayload, HardState};

type BenchResult = Result<(), Box<dyn std::error::Error>>;

struct Settings {
    dir: std::path::PathBuf,
    run_for: Duration,
    value: Bytes,
}

fn settings() -> Settings {
    let bench_mode = std::env::args().any(|a| a == "--bench");
    let secs: f64 = std::env::var("RAFTKV_BENCH_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(if bench_mode { 2.0 } else { 0.05 });
    let value_len: usize = std::env::var("RAFTKV_BENCH_VALUE")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(128);
    Settings {
        dir: std::env::var_os("RAFTKV_BENCH_DIR")
            .map(Into::into)
            .unwrap_or_else(std::env::temp_dir),
        run_for: Duration::from_secs_f64(secs),
        value: Bytes::from(vec![b'x'; value_len]),
    }
}

fn entry(index: u64, value: &Bytes) -> Entry {
    Entry {
        term: 1,
        index,
        payload: EntryPayload::Normal(value.clone()),
    }
}

struct Row {
    name: String,
    entries: u64,
    syncs: u64,
    bytes: u64,
    elapsed: Duration,
    sync_mean: Option<Duration>,
    sync_max: Option<Duration>,
}

fn print_header() {
    println!(
        "{:<22} {:>9} {:>8} {:>12} {:>10} {:>9} {:>10} {:>10}",
        "run", "entries", "fsyncs", "appends/s", "fsyncs/s", "MiB/s", "sync mean", "sync max"
    );
}

fn print_row(r: &Row) {
    let secs = r.elapsed.as_secs_f64();
    let ms = |d: Option<Duration>| {
        d.map_or("-".to_string(), |d| {
            format!("{:.3}ms", d.as_secs_f64() * 1e3)
        })
    };
    println!(
        "{:<22} {:>9} {:>8} {:>12.0} {:>10.0} {:>9.2} {:>10} {:>10}",
        r.name,
        r.entries,
        r.syncs,
        r.entries as f64 / secs,
        r.syncs as f64 / secs,
        r.bytes as f64 / secs / (1 << 20) as f64,
        ms(r.sync_mean),
        ms(r.sync_max),
    );
}

fn direct(s: &Settings, batch: u64) -> Result<Row, Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir_in(&s.dir)?;
    let (mut storage, _) = DiskStorage::open(dir.path(), DiskOptions::default())?;
    let start_stats = storage.stats();
    let mut next = 1;
    let mut sync_total = Duration::ZERO;
    let mut sync_max = Duration::ZERO;
    let mut sync_calls = 0u32;
    let start = Instant::now();
    while start.elapsed() < s.run_for {
        let entries: Vec<Entry> = (next..next + batch).map(|i| entry(i, &s.value)).collect();
        storage.append(&entries)?;
        next += batch;
        storage.set_hard_state(HardState {
            term: 1,
            vote: 1,
            commit: next - 1,
        })?;
        let t = Instant::now();
        storage.sync()?;
        let d = t.elapsed();
        sync_total += d;
        sync_max = sync_max.max(d);
        sync_calls += 1;
    }
    let elapsed = start.elapsed();
    let stats = storage.stats();
    Ok(Row {
        name: format!("direct, batch {batch}"),
        entries: next - 1,
        syncs: stats.syncs - start_stats.syncs,
        bytes: stats.bytes_written - start_stats.bytes_written,
        elapsed,
        sync_mean: sync_total.checked_div(sync_calls.max(1)),
        sync_max: Some(sync_max),
    })
}

fn threaded(s: &Settings, in_flight: u64) -> Result<Row, Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir_in(&s.dir)?;
    let (storage, _) = DiskStorage::open(dir.path(), DiskOptions::default())?;
    let thread = StorageThread::spawn(storage)?;
    let handle = thread.handle();
    let (tx, rx) = mpsc::channel::<Result<(), StorageError>>();
    let mut next = 1;
    let mut done = 0u64;
    let start = Instant::now();
    while start.elapsed() < s.run_for {
        while next - 1 - done < in_flight {
            let tx = tx.clone();
            handle.submit(
                WriteBatch {
                    entries: vec![entry(next, &s.value)],
                    hard_state: None,
                    snapshot: None,
                },
                move |r| {
                    let _ = tx.send(r);
                },
            );
            next += 1;
        }
        rx.recv()??;
        done += 1;
    }
    while done < next - 1 {
        rx.recv()??;
        done += 1;
    }
    let elapsed = start.elapsed();
    let storage = thread.shutdown()?;
    let stats = storage.stats();
    Ok(Row {
        name: format!("thread, {in_flight} in flight"),
        entries: done,
        syncs: stats.syncs,
        bytes: stats.bytes_written,
        elapsed,
        sync_mean: None,
        sync_max: None,
    })
}

fn main() -> BenchResult {
    let s = settings();
    println!(
        "DiskStorage WAL benchmark: {} B values, {:.1} s per run, in {}",
        s.value.len(),
        s.run_for.as_secs_f64(),
        s.dir.display()
    );
    print_header();
    for batch in [1, 16, 256] {
        print_row(&direct(&s, batch)?);
    }
    for in_flight in [1, 16, 256] {
        print_row(&threaded(&s, in_flight)?);
    }
    Ok(())
}
