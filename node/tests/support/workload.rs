//! A write workload for process and container clusters: concurrent [`Writers`] that put unique
//! keys with unique values and record every outcome (acknowledged, unknown, failed) with its
//! time, and the [`WriteHistory`] check that the cluster holds exactly what those outcomes allow.
//!
//! This is a lighter check than the linearizability checker of `history.rs`: every write has its
//! own key, so each key is checked on its own against one write's outcome.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use raftkv_client::{Client, Consistency, KeyValue};

use super::wait::wait_for;
use super::{lock, random_u64, test_client_options};

/// What became of one write.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WriteOutcome {
    /// Acknowledged with this version, by the node the client then believed to lead.
    Acked {
        /// The version (log index) the cluster answered.
        version: u64,
        /// [`Client::leader`] right after the answer: the node that acknowledged it.
        leader: Option<String>,
    },
    /// The client gave up without an answer: the write may or may not have been applied.
    Unknown(String),
    /// A definite failure: the write had no effect.
    Failed(String),
}

/// One write of a [`Writers`] workload.
#[derive(Clone, Debug)]
pub struct WriteRecord {
    /// Which writer made it.
    pub writer: usize,
    /// The key; every write has its own.
    pub key: String,
    /// The value; unique too.
    pub value: String,
    /// When the call was made.
    pub invoked: Instant,
    /// When it returned.
    pub completed: Instant,
    /// What it returned.
    pub outcome: WriteOutcome,
}

impl WriteRecord {
    /// The acknowledged version, if the write was acknowledged.
    pub fn acked_version(&self) -> Option<u64> {
        match self.outcome {
            WriteOutcome::Acked { version, .. } => Some(version),
            _ => None,
        }
    }

    /// The node that acknowledged it (`http://host:port`), if it was acknowledged.
    pub fn acked_by(&self) -> Option<&str> {
        match &self.outcome {
            WriteOutcome::Acked { leader, .. } => leader.as_deref(),
            _ => None,
        }
    }
}

/// Concurrent writers, each with its own [`Client`] (own session, own leader cache), putting
/// `<prefix>/<writer>/<n>` = a unique value in a loop, and recording every outcome.
pub struct Writers {
    prefix: String,
    stop: Arc<AtomicBool>,
    records: Arc<Mutex<Vec<WriteRecord>>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Writers {
    /// Starts `count` writers against `endpoints`. With `limit`, each writer stops after that
    /// many writes (see [`Writers::finish`]); otherwise they run until [`Writers::stop`].
    pub async fn start(
        endpoints: Vec<String>,
        prefix: &str,
        count: usize,
        limit: Option<u64>,
    ) -> Writers {
        let stop = Arc::new(AtomicBool::new(false));
        let records = Arc::new(Mutex::new(Vec::new()));
        let run = format!("{:08x}", random_u64() as u32);
        let mut tasks = Vec::with_capacity(count);
        for writer in 0..count {
            let client = Client::connect(endpoints.clone(), test_client_options())
                .await
                .expect("client for a writer");
            let (stop, records) = (stop.clone(), records.clone());
            let (prefix, run) = (prefix.to_owned(), run.clone());
            tasks.push(tokio::spawn(async move {
                let mut n: u64 = 0;
                while !stop.load(Ordering::Relaxed) && limit.is_none_or(|l| n < l) {
                    n += 1;
                    let key = format!("{prefix}/{writer:02}/{n:08}");
                    let value = format!("{run}:{writer}:{n}");
                    let invoked = Instant::now();
                    let result = client.put(key.clone(), value.clone()).await;
                    let outcome = match result {
                        Ok(version) => WriteOutcome::Acked {
                            version,
                            leader: client.leader(),
                        },
                        Err(e) if e.is_outcome_unknown() => WriteOutcome::Unknown(e.to_string()),
                        Err(e) => WriteOutcome::Failed(e.to_string()),
                    };
                    let acked = matches!(outcome, WriteOutcome::Acked { .. });
                    lock(&records).push(WriteRecord {
                        writer,
                        key,
                        value,
                        invoked,
                        completed: Instant::now(),
                        outcome,
                    });
                    if !acked {
                        // Do not spin on a cluster that refuses everything.
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                }
            }));
        }
        Writers {
            prefix: prefix.to_owned(),
            stop,
            records,
            tasks,
        }
    }

    /// A copy of the records so far.
    pub fn records(&self) -> Vec<WriteRecord> {
        lock(&self.records).clone()
    }

    /// How many writes have been acknowledged so far.
    pub fn acked(&self) -> usize {
        lock(&self.records)
            .iter()
            .filter(|r| r.acked_version().is_some())
            .count()
    }

    /// Waits for a record matching `pred` and returns it (the earliest completed one).
    pub async fn wait_for_record(
        &self,
        what: &str,
        timeout: Duration,
        pred: impl Fn(&WriteRecord) -> bool,
    ) -> WriteRecord {
        wait_for(what, timeout, async || {
            lock(&self.records)
                .iter()
                .filter(|r| pred(r))
                .min_by_key(|r| r.completed)
                .cloned()
        })
        .await
    }

    /// Waits until `n` more writes than now have been acknowledged.
    pub async fn wait_more_acked(&self, n: usize, timeout: Duration) {
        let target = self.acked() + n;
        wait_for(
            &format!("{n} more acknowledged writes"),
            timeout,
            async || (self.acked() >= target).then_some(()),
        )
        .await;
    }

    /// Stops the writers (each finishes its current write) and returns the history.
    pub async fn stop(self) -> WriteHistory {
        self.stop.store(true, Ordering::Relaxed);
        self.finish().await
    }

    /// Waits for the writers to end on their own (with a `limit`) and returns the history.
    pub async fn finish(self) -> WriteHistory {
        for task in self.tasks {
            task.await.expect("a writer task panicked");
        }
        let records = std::mem::take(&mut *lock(&self.records));
        WriteHistory {
            prefix: self.prefix,
            records,
        }
    }
}

/// The writes of a [`Writers`] run, and what the cluster must hold because of them.
#[derive(Clone, Debug)]
pub struct WriteHistory {
    /// The key prefix of the run.
    pub prefix: String,
    /// Every write, in the order the writers recorded them.
    pub records: Vec<WriteRecord>,
}

/// WriteCounts of a history, as printed by tests.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WriteCounts {
    /// Acknowledged writes.
    pub acked: usize,
    /// Writes with an unknown outcome.
    pub unknown: usize,
    /// Writes that definitely failed.
    pub failed: usize,
    /// Unknown-outcome writes that turned out to be applied.
    pub unknown_applied: usize,
}

impl WriteHistory {
    /// `[start, end)` of the run's keys.
    pub fn range(&self) -> (String, String) {
        // '0' is the byte after '/': the end of everything under "<prefix>/".
        (format!("{}/", self.prefix), format!("{}0", self.prefix))
    }

    /// Adds another run's records (with the same prefix) to this one.
    pub fn extend(&mut self, other: WriteHistory) {
        assert_eq!(self.prefix, other.prefix, "histories of different prefixes");
        self.records.extend(other.records);
    }

    /// WriteCounts of acknowledged, unknown and failed writes.
    pub fn counts(&self) -> WriteCounts {
        let mut c = WriteCounts::default();
        for r in &self.records {
            match r.outcome {
                WriteOutcome::Acked { .. } => c.acked += 1,
                WriteOutcome::Unknown(_) => c.unknown += 1,
                WriteOutcome::Failed(_) => c.failed += 1,
            }
        }
        c
    }

    /// The longest time between two consecutive acknowledgements (of any writer) where the
    /// second one came after `from`: how long the cluster accepted no writes around `from`.
    pub fn longest_ack_gap_after(&self, from: Instant) -> Duration {
        let mut acks: Vec<Instant> = self
            .records
            .iter()
            .filter(|r| r.acked_version().is_some())
            .map(|r| r.completed)
            .collect();
        acks.sort();
        acks.windows(2)
            .filter(|w| w[1] > from)
            .map(|w| w[1] - w[0])
            .max()
            .unwrap_or_default()
    }

    /// Checks `items` (a scan of [`WriteHistory::range`] made after the writers stopped) against the
    /// history: every acknowledged write is there with its value and version, every failed one
    /// is absent, an unknown one is absent or has its value, and nothing else is there.
    /// Returns the problems found (empty: all good) and the counts.
    pub fn check(&self, items: &[KeyValue]) -> (Vec<String>, WriteCounts) {
        let mut problems = Vec::new();
        let mut counts = self.counts();
        let found: BTreeMap<&[u8], &KeyValue> =
            items.iter().map(|kv| (kv.key.as_ref(), kv)).collect();
        let mut known: BTreeSet<&[u8]> = BTreeSet::new();
        for r in &self.records {
            known.insert(r.key.as_bytes());
            let got = found.get(r.key.as_bytes());
            match (&r.outcome, got) {
                (WriteOutcome::Acked { version, .. }, Some(kv))
                    if kv.value.as_ref() == r.value.as_bytes() && kv.version == *version => {}
                (WriteOutcome::Acked { version, .. }, got) => problems.push(format!(
                    "acknowledged write {}={} (version {version}) reads back as {}",
                    r.key,
                    r.value,
                    describe(got.copied())
                )),
                (WriteOutcome::Failed(_), None) => {}
                (WriteOutcome::Failed(e), got) => problems.push(format!(
                    "failed write {}={} ({e}) is present: {}",
                    r.key,
                    r.value,
                    describe(got.copied())
                )),
                (WriteOutcome::Unknown(_), None) => {}
                (WriteOutcome::Unknown(_), Some(kv)) if kv.value.as_ref() == r.value.as_bytes() => {
                    counts.unknown_applied += 1;
                }
                (WriteOutcome::Unknown(_), got) => problems.push(format!(
                    "unknown-outcome write {}={} reads back as {}",
                    r.key,
                    r.value,
                    describe(got.copied())
                )),
            }
        }
        for kv in items {
            if !known.contains(kv.key.as_ref()) {
                problems.push(format!(
                    "key {} was never written but holds {}",
                    String::from_utf8_lossy(&kv.key),
                    describe(Some(kv))
                ));
            }
        }
        (problems, counts)
    }

    /// Reads the run's keys back through `client` (LINEARIZABLE scan, plus LINEARIZABLE gets of
    /// each writer's last acknowledged write and a sample of the others) and panics listing the
    /// problems if the cluster does not hold what the history allows. Returns the counts.
    pub async fn verify(&self, client: &Client) -> WriteCounts {
        let (start, end) = self.range();
        let items = client
            .scan_all(start, end, 0, Consistency::Linearizable)
            .await
            .unwrap_or_else(|e| panic!("scan of the written keys: {e}"));
        let (mut problems, counts) = self.check(&items);
        let acked: Vec<&WriteRecord> = self
            .records
            .iter()
            .filter(|r| r.acked_version().is_some())
            .collect();
        let mut sample: Vec<&WriteRecord> = acked
            .iter()
            .step_by(acked.len() / 25 + 1)
            .copied()
            .collect();
        for writer in self
            .records
            .iter()
            .map(|r| r.writer)
            .collect::<BTreeSet<_>>()
        {
            if let Some(last) = acked.iter().rev().find(|r| r.writer == writer) {
                sample.push(last);
            }
        }
        for r in sample {
            let got = client
                .get(r.key.clone(), Consistency::Linearizable)
                .await
                .unwrap_or_else(|e| panic!("get {}: {e}", r.key));
            let ok = got.as_ref().is_some_and(|v| {
                v.value == r.value.as_bytes() && Some(v.version) == r.acked_version()
            });
            if !ok {
                problems.push(format!(
                    "get of acknowledged write {}={} (version {:?}) returned {got:?}",
                    r.key,
                    r.value,
                    r.acked_version()
                ));
            }
        }
        assert_problems_empty(&problems, "read-back");
        counts
    }
}

/// Panics listing (the first few of) `problems`, if there are any.
pub fn assert_problems_empty(problems: &[String], what: &str) {
    if problems.is_empty() {
        return;
    }
    let shown: Vec<&str> = problems.iter().take(20).map(String::as_str).collect();
    panic!(
        "{what}: {} problem(s), the first {}:\n  {}",
        problems.len(),
        shown.len(),
        shown.join("\n  ")
    );
}

fn describe(kv: Option<&KeyValue>) -> String {
    match kv {
        None => "absent".to_owned(),
        Some(kv) => format!(
            "{:?} (version {})",
            String::from_utf8_lossy(&kv.value),
            kv.version
        ),
    }
}
