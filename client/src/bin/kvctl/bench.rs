//! `kvctl bench`: N concurrent clients issuing a Put/Get mix; throughput and latency percentiles.
//!
//! Each bench client is a separate [`Client`] (its own session and connections), so the load
//! looks like N independent applications. Latencies of successful requests are recorded in
//! microseconds in HdrHistograms, one per client and operation, merged at the end. Only loopback
//! or user-given endpoints are targeted; the run is bounded by `--duration` or `--requests`.

use std::io::IsTerminal;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use raftkv_client::{Bytes, Client, Consistency};
use serde_json::{Value, json};

use crate::cli::BenchArgs;
use crate::commands::connect;
use crate::exit::{Exit, Failure};
use crate::output::Output;

/// The highest latency tracked: anything slower is recorded as this (60 s, in µs).
const MAX_LATENCY_US: u64 = 60_000_000;

/// Counters shared by the workers and the progress printer.
#[derive(Default)]
struct Shared {
    ops: AtomicU64,
    errors: AtomicU64,
    /// Requests still to start when `--requests` is given.
    budget: AtomicU64,
    stop: AtomicBool,
}

/// What one worker measured.
struct Tally {
    reads: Histogram<u64>,
    writes: Histogram<u64>,
    errors_unknown: u64,
    errors_definite: u64,
    last_error: Option<String>,
}

impl Tally {
    fn new() -> Result<Self, Failure> {
        let histogram = || {
            Histogram::new_with_bounds(1, MAX_LATENCY_US, 3)
                .map_err(|e| Failure::Other(format!("cannot create histogram: {e}")))
        };
        Ok(Self {
            reads: histogram()?,
            writes: histogram()?,
            errors_unknown: 0,
            errors_definite: 0,
            last_error: None,
        })
    }

    fn merge(&mut self, other: Tally) -> Result<(), Failure> {
        let fail = |e: hdrhistogram::AdditionError| Failure::Other(format!("histogram: {e}"));
        self.reads.add(&other.reads).map_err(fail)?;
        self.writes.add(&other.writes).map_err(fail)?;
        self.errors_unknown += other.errors_unknown;
        self.errors_definite += other.errors_definite;
        if other.last_error.is_some() {
            self.last_error = other.last_error;
        }
        Ok(())
    }
}

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
    let consistency = Consistency::from(args.consistency);

    let mut clients = Vec::with_capacity(args.clients as usize);
    for _ in 0..args.clients {
        clients.push(connect(endpoints, timeout, tls).await?);
    }
    let what = match args.requests {
        Some(n) => format!("{n} requests"),
        None => format!("{:?}", args.duration),
    };
    out.note(&format!(
        "bench: {} clients, {what}, {} keys, {}-byte values, {:.0}% reads ({consistency:?}) against {}",
        args.clients,
        args.keys,
        args.value_size,
        args.read_ratio * 100.0,
        endpoints.join(",")
    ));

    let started = Instant::now();
    let mut workers = Vec::with_capacity(clients.len());
    for client in clients {
        let (shared, args, value) = (shared.clone(), args.clone(), value.clone());
        workers.push(tokio::spawn(async move {
            worker(client, shared, args, consistency, value).await
        }));
    }
    let progress = tokio::spawn(progress(shared.clone(), started, !out.is_json()));

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
    progress.abort();

    report(&total, elapsed, &args, out);
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
    client: Client,
    shared: Arc<Shared>,
    args: Arc<BenchArgs>,
    consistency: Consistency,
    value: Bytes,
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
        let key = format!("{}{:08}", args.key_prefix, rng.next() % args.keys);
        let is_read = args.read_ratio >= 1.0 || rng.next() < read_threshold;
        let begun = Instant::now();
        let result = if is_read {
            client.get(key, consistency).await.map(|_| ())
        } else {
            client.put(key, value.clone()).await.map(|_| ())
        };
        let micros = u64::try_from(begun.elapsed().as_micros()).unwrap_or(u64::MAX);
        match result {
            Ok(()) => {
                let histogram = if is_read {
                    &mut tally.reads
                } else {
                    &mut tally.writes
                };
                histogram.saturating_record(micros.clamp(1, MAX_LATENCY_US));
                shared.ops.fetch_add(1, Ordering::Relaxed);
            }
            Err(error) => {
                if error.is_outcome_unknown() {
                    tally.errors_unknown += 1;
                } else {
                    tally.errors_definite += 1;
                }
                tally.last_error = Some(error.to_string());
                shared.errors.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
    Ok(tally)
}

/// Prints a progress line on stderr every second (in place on a terminal).
async fn progress(shared: Arc<Shared>, started: Instant, enabled: bool) {
    if !enabled {
        return;
    }
    let tty = std::io::stderr().is_terminal();
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.tick().await;
    let mut last_ops = 0;
    loop {
        tick.tick().await;
        if shared.stop.load(Ordering::Relaxed) {
            break;
        }
        let ops = shared.ops.load(Ordering::Relaxed);
        let line = format!(
            "[{:>4}s] {ops:>9} ops  {:>8} ops/s  {} errors",
            started.elapsed().as_secs(),
            ops - last_ops,
            shared.errors.load(Ordering::Relaxed)
        );
        last_ops = ops;
        if tty {
            eprint!("\r{line}");
        } else {
            eprintln!("{line}");
        }
    }
    if tty {
        eprintln!();
    }
}

fn report(total: &Tally, elapsed: Duration, args: &BenchArgs, out: &Output) {
    let mut all = total.reads.clone();
    // Both histograms have the same bounds, so adding cannot fail; fall back to reads only.
    let _ = all.add(&total.writes);
    let seconds = elapsed.as_secs_f64().max(f64::EPSILON);
    let throughput = all.len() as f64 / seconds;
    let errors = total.errors_unknown + total.errors_definite;

    if out.is_json() {
        out.json(&json!({
            "clients": args.clients,
            "keys": args.keys,
            "value_size": args.value_size,
            "read_ratio": args.read_ratio,
            "elapsed_seconds": seconds,
            "ops": all.len(),
            "throughput_ops_per_second": throughput,
            "errors": { "total": errors, "outcome_unknown": total.errors_unknown,
                        "definite": total.errors_definite, "last": total.last_error },
            "latency_ms": {
                "all": latency_json(&all),
                "read": latency_json(&total.reads),
                "write": latency_json(&total.writes),
            },
        }));
        return;
    }
    println!(
        "{} ops in {seconds:.2}s: {throughput:.1} ops/s, {errors} errors ({} outcome unknown)",
        all.len(),
        total.errors_unknown
    );
    println!(
        "{:<6} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9}   (latency, ms)",
        "", "count", "p50", "p90", "p99", "p99.9", "max"
    );
    for (name, histogram) in [
        ("all", &all),
        ("read", &total.reads),
        ("write", &total.writes),
    ] {
        if histogram.is_empty() {
            continue;
        }
        let ms = |q: f64| histogram.value_at_quantile(q) as f64 / 1000.0;
        println!(
            "{name:<6} {:>9} {:>9.2} {:>9.2} {:>9.2} {:>9.2} {:>9.2}",
            histogram.len(),
            ms(0.5),
            ms(0.9),
            ms(0.99),
            ms(0.999),
            histogram.max() as f64 / 1000.0
        );
    }
    if let Some(error) = &total.last_error {
        println!("last error: {error}");
    }
}

fn latency_json(histogram: &Histogram<u64>) -> Value {
    if histogram.is_empty() {
        return Value::Null;
    }
    let ms = |q: f64| histogram.value_at_quantile(q) as f64 / 1000.0;
    json!({
        "count": histogram.len(),
        "p50": ms(0.5),
        "p90": ms(0.9),
        "p99": ms(0.99),
        "p999": ms(0.999),
        "max": histogram.max() as f64 / 1000.0,
        "mean": histogram.mean() / 1000.0,
    })
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
