//! What `kvctl bench` counts and how it reports it: the counters its workers share, each worker's
//! latency histograms, the progress bar, and the final text or `--json` report.
//!
//! Latencies are recorded in microseconds in HdrHistograms (3 significant digits), one per worker
//! and operation, and merged at the end, so workers never contend on a shared histogram.

use std::io::IsTerminal;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use serde_json::{Value, json};

use crate::exit::Failure;

/// A failed request, as the report counts it.
#[derive(Debug)]
pub struct RequestError {
    /// Whether a write may or may not have been applied (no answer in time, connection lost).
    pub outcome_unknown: bool,
    /// What went wrong, for the report's "last error".
    pub message: String,
}

/// The highest latency tracked: anything slower is recorded as this (60 s, in µs).
pub const MAX_LATENCY_US: u64 = 60_000_000;

/// The quantiles the report shows, with their names in text and JSON.
pub const QUANTILES: [(&str, &str, f64); 4] = [
    ("p50", "p50", 0.5),
    ("p90", "p90", 0.9),
    ("p99", "p99", 0.99),
    ("p99.9", "p999", 0.999),
];

/// Counters shared by the workers and the progress bar.
#[derive(Debug, Default)]
pub struct Shared {
    /// Successful requests so far.
    pub ops: AtomicU64,
    /// Failed requests so far.
    pub errors: AtomicU64,
    /// Requests still to start when `--requests` is given.
    pub budget: AtomicU64,
    /// The next key for `--key-order sequential`.
    pub next_key: AtomicU64,
    /// Set when the run is over (duration elapsed).
    pub stop: AtomicBool,
}

/// What one worker (or, merged, the whole run) measured.
pub struct Tally {
    /// Latencies of successful reads, µs.
    pub reads: Histogram<u64>,
    /// Latencies of successful writes, µs.
    pub writes: Histogram<u64>,
    /// Failed requests whose outcome is unknown.
    pub errors_unknown: u64,
    /// Failed requests that definitely did nothing.
    pub errors_definite: u64,
    /// The most recent error's message.
    pub last_error: Option<String>,
}

impl Tally {
    /// An empty tally.
    pub fn new() -> Result<Self, Failure> {
        Ok(Self {
            reads: histogram()?,
            writes: histogram()?,
            errors_unknown: 0,
            errors_definite: 0,
            last_error: None,
        })
    }

    /// Records one request's latency (success) or its error.
    pub fn record(&mut self, is_read: bool, elapsed: Duration, result: Result<(), RequestError>) {
        match result {
            Ok(()) => {
                let micros = u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX);
                let histogram = if is_read {
                    &mut self.reads
                } else {
                    &mut self.writes
                };
                histogram.saturating_record(micros.clamp(1, MAX_LATENCY_US));
            }
            Err(error) => {
                if error.outcome_unknown {
                    self.errors_unknown += 1;
                } else {
                    self.errors_definite += 1;
                }
                self.last_error = Some(error.message);
            }
        }
    }

    /// Adds another worker's tally to this one.
    pub fn merge(&mut self, other: Tally) -> Result<(), Failure> {
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

    /// Reads and writes together.
    pub fn all(&self) -> Result<Histogram<u64>, Failure> {
        let mut all = self.reads.clone();
        all.add(&self.writes)
            .map_err(|e| Failure::Other(format!("histogram: {e}")))?;
        Ok(all)
    }

    /// Failed requests of either kind.
    pub fn errors(&self) -> u64 {
        self.errors_unknown + self.errors_definite
    }
}

/// A histogram of 1 µs ..= [`MAX_LATENCY_US`] with 3 significant digits.
pub fn histogram() -> Result<Histogram<u64>, Failure> {
    Histogram::new_with_bounds(1, MAX_LATENCY_US, 3)
        .map_err(|e| Failure::Other(format!("cannot create histogram: {e}")))
}

/// How far the run has got, for the progress bar.
#[derive(Clone, Copy, Debug)]
pub enum Goal {
    /// Run for this long.
    Duration(Duration),
    /// Run this many requests.
    Requests(u64),
}

/// Shows progress on stderr once a second until `shared.stop`: an in-place bar on a terminal,
/// a plain line per second otherwise (logs, CI).
pub async fn progress(shared: &Shared, started: Instant, goal: Goal) {
    let tty = std::io::stderr().is_terminal();
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.tick().await;
    let mut last_ops = 0;
    let mut drawn = false;
    loop {
        tick.tick().await;
        if shared.stop.load(Ordering::Relaxed) {
            break;
        }
        let ops = shared.ops.load(Ordering::Relaxed);
        let errors = shared.errors.load(Ordering::Relaxed);
        let elapsed = started.elapsed();
        let done = match goal {
            Goal::Duration(total) => elapsed.as_secs_f64() / total.as_secs_f64().max(1e-9),
            Goal::Requests(total) => (ops + errors) as f64 / total.max(1) as f64,
        };
        let counts = format!(
            "{:>5}s {ops:>9} ops {:>8} ops/s {errors} errors",
            elapsed.as_secs(),
            ops - last_ops
        );
        last_ops = ops;
        if tty {
            eprint!("\r{} {counts}", bar(done));
            drawn = true;
        } else {
            eprintln!("[{:>3.0}%] {counts}", done.clamp(0.0, 1.0) * 100.0);
        }
    }
    if drawn {
        eprintln!();
    }
}

/// `[#########...........]  45%` for a fraction `done` (clamped to 0..=1).
fn bar(done: f64) -> String {
    const WIDTH: usize = 30;
    let done = done.clamp(0.0, 1.0);
    let filled = (done * WIDTH as f64).round() as usize;
    format!(
        "[{}{}] {:>3.0}%",
        "#".repeat(filled),
        ".".repeat(WIDTH - filled),
        done * 100.0
    )
}

/// The figures of one histogram in milliseconds, or null when it is empty.
pub fn latency_json(histogram: &Histogram<u64>) -> Value {
    if histogram.is_empty() {
        return Value::Null;
    }
    let mut object = serde_json::Map::new();
    object.insert("count".into(), json!(histogram.len()));
    for (_, name, q) in QUANTILES {
        object.insert(name.into(), json!(ms(histogram.value_at_quantile(q))));
    }
    object.insert("max".into(), json!(ms(histogram.max())));
    object.insert("mean".into(), json!(histogram.mean() / 1000.0));
    Value::Object(object)
}

/// Prints the text report: throughput, then a latency table (ms) per operation.
pub fn print_text(total: &Tally, all: &Histogram<u64>, seconds: f64) {
    println!(
        "{} ops in {seconds:.2}s: {:.1} ops/s, {} errors ({} outcome unknown)",
        all.len(),
        all.len() as f64 / seconds,
        total.errors(),
        total.errors_unknown
    );
    print!("{:<6} {:>9}", "", "count");
    for (name, _, _) in QUANTILES {
        print!(" {name:>9}");
    }
    println!(" {:>9}   (latency, ms)", "max");
    for (name, histogram) in [
        ("all", all),
        ("read", &total.reads),
        ("write", &total.writes),
    ] {
        if histogram.is_empty() {
            continue;
        }
        print!("{name:<6} {:>9}", histogram.len());
        for (_, _, q) in QUANTILES {
            print!(" {:>9.2}", ms(histogram.value_at_quantile(q)));
        }
        println!(" {:>9.2}", ms(histogram.max()));
    }
    if let Some(error) = &total.last_error {
        println!("last error: {error}");
    }
}

/// Microseconds as fractional milliseconds.
pub fn ms(micros: u64) -> f64 {
    micros as f64 / 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bar_is_clamped_and_sized() {
        assert_eq!(bar(0.0), format!("[{}]   0%", ".".repeat(30)));
        assert_eq!(bar(2.0), format!("[{}] 100%", "#".repeat(30)));
        assert_eq!(bar(0.5).matches('#').count(), 15);
    }

    #[test]
    fn tally_counts_successes_and_errors_apart() -> Result<(), Failure> {
        let mut tally = Tally::new()?;
        tally.record(true, Duration::from_micros(1500), Ok(()));
        tally.record(false, Duration::from_millis(3), Ok(()));
        let error = RequestError {
            outcome_unknown: true,
            message: "timed out".into(),
        };
        tally.record(false, Duration::from_secs(5), Err(error));
        let mut total = Tally::new()?;
        total.merge(tally)?;
        assert_eq!((total.reads.len(), total.writes.len()), (1, 1));
        assert_eq!((total.errors_unknown, total.errors()), (1, 1));
        assert_eq!(total.last_error.as_deref(), Some("timed out"));
        let json = latency_json(&total.all()?);
        assert_eq!(json["count"], 2);
        let p50 = json["p50"].as_f64().unwrap_or_default();
        assert!((1.4..1.6).contains(&p50), "p50 {p50}");
        assert_eq!(latency_json(&histogram()?), Value::Null);
        Ok(())
    }
}
