//! `kvctl bench`: N concurrent clients issuing a Put/Get mix against raftkv or etcd; throughput
//! and latency percentiles, a progress bar, `--json`, and an optional SVG plot.
//!
//! Each bench client is a closed loop: one request in flight, the next sent when it returns. The
//! clients share `--connections` connections round-robin (default: one each), so "128 clients on
//! 8 connections", the shape of etcd's own benchmark, can be measured as well as N independent
//! applications. The loop and the report are the same for every target; only the call differs
//! (`bench_target`). The run is bounded by `--duration` or `--requests`; only the endpoints the
//! user gave (or the local cluster's) are targeted.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use raftkv_client::Bytes;
use serde_json::json;

use crate::bench_plot;
use crate::bench_stats::{self, Goal, Shared, Tally};
use crate::bench_target::Connection;
use crate::cli::{BenchArgs, BenchTarget, KeyOrder, ReadConsistency};
use crate::exit::{Exit, Failure};
use crate::output::Output;

/// Runs the benchmark.
pub async fn run(
    endpoints: &[String],
    timeout: Duration,
    tls: Option<&raftkv_client::tls::TlsConfig>,
    args: BenchArgs,
    out: &Output,
) -> Result<Exit, Failure> {
    let value = Bytes::from(random_bytes(args.value_size));
    let shared = Arc::new(Shared {
        budget: AtomicU64::new(args.requests.unwrap_or(u64::MAX)),
        ..Shared::default()
    });
    let args = Arc::new(args);

    let connections = args.connection_count();
    let mut pool = Vec::with_capacity(connections as usize);
    for _ in 0..connections {
        pool.push(Connection::open(args.target, endpoints, timeout, tls).await?);
    }
    let what = match args.requests {
        Some(n) => format!("{n} requests"),
        None => format!("{:?}", args.duration),
    };
    out.note(&format!(
        "bench {}: {} clients on {connections} connections, {what}, {} keys, {}-byte values, \
         {:.0}% reads ({}) against {}",
        target_name(args.target),
        args.clients,
        args.keys,
        args.value_size,
        args.read_ratio * 100.0,
        consistency_name(args.target, args.consistency),
        endpoints.join(",")
    ));

    let started = Instant::now();
    let mut workers = Vec::with_capacity(args.clients as usize);
    for index in 0..args.clients as usize {
        let connection = pool[index % pool.len()].clone();
        let (shared, args, value) = (shared.clone(), args.clone(), value.clone());
        workers.push(tokio::spawn(async move {
            worker(connection, &shared, &args, &value).await
        }));
    }
    drop(pool);
    let progress = (!out.is_json()).then(|| {
        let shared = shared.clone();
        let goal = match args.requests {
            Some(n) => Goal::Requests(n),
            None => Goal::Duration(args.duration),
        };
        tokio::spawn(async move { bench_stats::progress(&shared, started, goal).await })
    });

    if args.requests.is_none() {
        tokio::time::sleep(args.duration).await;
        shared.stop.store(true, Ordering::Relaxed);
    }
    let mut total = Tally::new()?;
    for worker in workers {
        let tally = worker
            .await
            .map_err(|e| Failure::Other(format!("a bench client failed: {e}")))??;
        total.merge(tally)?;
    }
    let elapsed = started.elapsed();
    shared.stop.store(true, Ordering::Relaxed);
    if let Some(progress) = progress {
        // It sees `stop` within a second and ends its line; waiting keeps the output tidy.
        let _ = progress.await;
    }

    report(&total, elapsed, &args, out)?;
    let succeeded = total.reads.len() + total.writes.len();
    Ok(if succeeded > 0 {
        Exit::Success
    } else if total.errors_definite == 0 && total.errors_unknown > 0 {
        Exit::Unknown
    } else {
        Exit::Failure
    })
}

/// One bench client: picks an operation and a key, measures, repeats until told to stop.
async fn worker(
    mut connection: Connection,
    shared: &Shared,
    args: &BenchArgs,
    value: &Bytes,
) -> Result<Tally, Failure> {
    let mut tally = Tally::new()?;
    let mut rng = Rng::new();
    // Reads below this threshold of a uniform u64; computed once.
    let read_threshold = (args.read_ratio * u64::MAX as f64) as u64;
    while !shared.stop.load(Ordering::Relaxed) {
        if args.requests.is_some()
            && shared
                .budget
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1))
                .is_err()
        {
            break;
        }
        let index = match args.key_order {
            KeyOrder::Random => rng.next(),
            KeyOrder::Sequential => shared.next_key.fetch_add(1, Ordering::Relaxed),
        } % args.keys;
        let key = format!("{}{index:08}", args.key_prefix);
        let is_read =
            args.read_ratio >= 1.0 || (args.read_ratio > 0.0 && rng.next() < read_threshold);
        let begun = Instant::now();
        let result = if is_read {
            connection.get(key, args.consistency).await
        } else {
            connection.put(key, value).await
        };
        let elapsed = begun.elapsed();
        let counter = if result.is_ok() {
            &shared.ops
        } else {
            &shared.errors
        };
        counter.fetch_add(1, Ordering::Relaxed);
        tally.record(is_read, elapsed, result);
    }
    Ok(tally)
}

/// Prints the report (text or `--json`) and draws `--plot`.
fn report(total: &Tally, elapsed: Duration, args: &BenchArgs, out: &Output) -> Result<(), Failure> {
    let all = total.all()?;
    let seconds = elapsed.as_secs_f64().max(f64::EPSILON);
    if let Some(path) = &args.plot {
        let mut series = Vec::new();
        for earlier in &args.plot_with {
            series.extend(bench_plot::load_series(earlier)?);
        }
        let target = target_name(args.target);
        for (op, histogram) in [("read", &total.reads), ("write", &total.writes)] {
            series.push(bench_plot::Series {
                name: format!("{target} {op}"),
                points: bench_plot::spectrum(histogram),
            });
        }
        bench_plot::draw(path, &plot_title(args), &series)?;
        out.note(&format!("latency plot written to {}", path.display()));
    }
    if !out.is_json() {
        bench_stats::print_text(total, &all, seconds);
        return Ok(());
    }
    out.json(&json!({
        "target": target_name(args.target),
        "clients": args.clients,
        "connections": args.connection_count(),
        "keys": args.keys,
        "value_size": args.value_size,
        "read_ratio": args.read_ratio,
        "consistency": consistency_name(args.target, args.consistency),
        "elapsed_seconds": seconds,
        "ops": all.len(),
        "throughput_ops_per_second": all.len() as f64 / seconds,
        "errors": { "total": total.errors(), "outcome_unknown": total.errors_unknown,
                    "definite": total.errors_definite, "last": total.last_error },
        "latency_ms": {
            "all": bench_stats::latency_json(&all),
            "read": bench_stats::latency_json(&total.reads),
            "write": bench_stats::latency_json(&total.writes),
        },
        // [[quantile, ms], ...] per operation: what `--plot-with` draws from a saved report.
        "spectrum": {
            "read": bench_plot::spectrum_json(&total.reads),
            "write": bench_plot::spectrum_json(&total.writes),
        },
    }));
    Ok(())
}

fn target_name(target: BenchTarget) -> &'static str {
    match target {
        BenchTarget::Raftkv => "raftkv",
        BenchTarget::Etcd => "etcd",
    }
}

/// The read level actually asked of the target (etcd knows only two).
fn consistency_name(target: BenchTarget, consistency: ReadConsistency) -> &'static str {
    match (target, consistency) {
        (_, ReadConsistency::Linearizable) => "linearizable",
        (BenchTarget::Raftkv, ReadConsistency::Lease) => "lease",
        (BenchTarget::Raftkv, ReadConsistency::Stale) => "stale",
        (BenchTarget::Etcd, _) => "serializable",
    }
}

fn plot_title(args: &BenchArgs) -> String {
    // Beside another target's run, name the read level both were asked for (raftkv's).
    let level = if args.plot_with.is_empty() {
        consistency_name(args.target, args.consistency)
    } else {
        consistency_name(BenchTarget::Raftkv, args.consistency)
    };
    let mix = match args.read_ratio {
        r if r <= 0.0 => "put".to_owned(),
        r if r >= 1.0 => format!("{level} get"),
        r => format!("{:.0}% {level} get", r * 100.0),
    };
    // With earlier runs on the same axes the legend names the targets; the title names the load.
    let who = if args.plot_with.is_empty() {
        format!("{} ", target_name(args.target))
    } else {
        String::new()
    };
    format!(
        "{who}{mix}, {} clients on {} connections, {} B values",
        args.clients,
        args.connection_count(),
        args.value_size
    )
}

/// xorshift64*: fast, good enough to spread keys and pick operations; not for secrets.
struct Rng(u64);

impl Rng {
    fn new() -> Self {
        // Zero is the one state xorshift never leaves.
        Self(getrandom::u64().unwrap_or(0x9e37_79b9_7f4a_7c15) | 1)
    }

    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
}

fn random_bytes(len: usize) -> Vec<u8> {
    let mut rng = Rng::new();
    // Printable bytes, so that `kvctl get` on a bench key shows something readable.
    (0..len).map(|_| b'a' + (rng.next() % 26) as u8).collect()
}
