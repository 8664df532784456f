//! Jepsen-style client histories and their linearizability check (DESIGN.md §8.2).
//!
//! The fault-injection suite (`node/tests/fault_*.rs`) runs concurrent clients doing
//! read / write / cas / delete on short-lived ("independent") keys while nodes are killed, stopped
//! and partitioned. This module is the pure layer under it:
//!
//! - [`Recorder`] / [`Process`]: record every operation as an `invoke` event before the request is
//!   sent and an `ok` / `fail` / `info` event after the answer (or the give-up), timestamped with
//!   a monotonic clock, one JSON line per event written straight to a file (so a failing or killed
//!   run leaves its history on disk) and kept in memory. A [`Process`] is one logical client
//!   thread; after an `info` it continues under a new process id, never the old one.
//! - [`Event`]: one JSON line; [`History`]: the events, loaded from / saved to such a file.
//! - [`History::check`]: splits the history per key and checks each key's sub-history for
//!   linearizability against a register, returning a [`Report`]: one [`KeyReport`] per key with a
//!   [`Verdict`] (linearizable, not linearizable with the offending sub-history printed, or
//!   unknown because the search ran out of its budget), and a [`Summary`] to print.
//!
//! # The JSON line schema
//!
//! ```text
//! {"process":3,"type":"invoke","f":"write","key":"k-7","value":"v-3-17","time_ns":1203344}
//! {"process":3,"type":"ok","f":"write","key":"k-7","value":"v-3-17","time_ns":1530021}
//! {"process":4,"type":"invoke","f":"read","key":"k-7","value":null,"time_ns":1600000}
//! {"process":4,"type":"ok","f":"read","key":"k-7","value":"v-3-17","time_ns":1700000}
//! {"process":5,"type":"invoke","f":"cas","key":"k-7","value":["v-3-17","v-5-2"],"time_ns":1800000}
//! {"process":5,"type":"info","f":"cas","key":"k-7","value":["v-3-17","v-5-2"],"time_ns":2900000,"error":"deadline exceeded"}
//! ```
//!
//! - `process`: u64, one logical client thread; at most one operation in flight, and no event
//!   after its `info`.
//! - `type`: `invoke` (sent), `ok` (happened), `fail` (definitely did not happen), `info`
//!   (unknown: may have happened, may still happen, so it stays open for ever).
//! - `f` and `value`: `read` — `null` on invoke / fail / info, the value read or `null` (absent)
//!   on ok; `write` — the value written; `cas` — `[expected, new]`, `expected` `null` meaning
//!   "the key must be absent"; `delete` — `null`. A completion repeats its invocation's `value`,
//!   except a read's `ok`.
//! - `time_ns`: nanoseconds since the recorder started (monotonic). Events are written in time
//!   order; [`History::check`] sorts by it anyway (stably).
//! - `error` (optional): why an operation failed or its outcome is unknown, for humans.
//!
//! # The model
//!
//! Each key is a register holding `Option<value>`: read returns it, write sets it, delete sets
//! `None`, cas(expected, new) succeeds iff it holds `Some(expected)` (or `None` for an `expected`
//! of `null`). Every write and every cas's new value must be unique within its key (the check
//! refuses a history where they are not): the server's CAS is by version, and with unique values
//! "the version I read" and "the value I read" name the same write, so a CAS that succeeded iff
//! the version matched is checked as a CAS by value. `fail` operations are dropped (they did not
//! happen). `info` (and never-completed) writes, deletes and cases may take effect at any point
//! after their invocation, or never: they get a response after every other event of the key, so
//! they are concurrent with everything that follows them, and "never" is the same as "last". An
//! unknown cas may take effect only if its compare holds at that point. Unknown reads constrain
//! nothing and are dropped.
//!
//! # The checker: todc-utils, not stateright
//!
//! The search itself comes from the crate registry (DESIGN §8.2 wants an independent checker):
//! [`todc_utils::WGLChecker`], the Wing–Gong algorithm with Lowe's memoization of (set of
//! linearized operations, register state), checked by its authors against Jepsen's etcd
//! histories. We only supply the register [`Specification`] and the translation. Against
//! `stateright`'s `LinearizabilityTester` (measured here, 2 cores, cold `cargo build` of a
//! crate depending on each, nothing shared):
//!
//! - compile cost: todc-utils has no dependencies and builds in under a second; stateright
//!   0.31 pulls 45 crates (tiny_http, dashmap, rand, parking_lot, serde_derive, …) — 28 s;
//! - search (read from the sources): stateright's tester tries interleavings recursively
//!   without memoization and clones its per-thread queues at every step, so refuting a bad
//!   history with a handful of concurrent clients explodes; memoized WGL is the algorithm
//!   behind Porcupine and one of Knossos's;
//! - real time: todc orders by the position of events in the history, which is exactly what we
//!   record; stateright derives it from per-thread completion counts, which would do too.
//!
//! What todc-utils lacks, and how it is bridged here:
//!
//! - open (`info`) operations: given a response after the whole history, which is the crate's
//!   own treatment of Jepsen's `:info` in its etcd loader. Each open write, delete or cas the
//!   search has not yet linearized doubles the configurations it must tell apart, so before
//!   the search we drop those nobody can observe (no read of the state they leave, and no cas
//!   expecting it, completes after their invocation) — provably without changing the verdict
//!   (see `prune_unobservable`), and checked: `CheckOptions::reduce` turns it off, and a test
//!   compares verdicts both ways on hundreds of random histories. Refuting a stale read late in
//!   a 300-operation key with ~30 timeouts went from 1.9 million steps (unknown) to 18,000;
//! - an empty history panics: answered here;
//! - no step or time limit: [`Specification::apply`] is called once per search step, so our
//!   register spec charges a thread-local budget there and, when it is spent, unwinds out of
//!   the search with [`std::panic::resume_unwind`] (which skips the panic hook, so nothing is
//!   printed), caught by [`std::panic::catch_unwind`] around it; the key is then reported
//!   unknown ("too long") instead of hanging the suite;
//! - it answers only yes or no: for a violation we look for the shortest failing prefix (binary
//!   search; linearizability is prefix-closed when operations in flight at the cut are treated
//!   as open) and print it, ending with the event that made the history impossible.
//!
//! # Cost
//!
//! Test builds are unoptimized, and the search is generic, so it is compiled into the test
//! binary at its opt-level: roughly 3 to 20 µs a step, growing with the key's length. Measured
//! (`history_checker.rs`, one key, about one operation in ten timing out): a linearizable key
//! of 300–400 operations takes 10–250 ms; refuting a stale read planted late takes 0.3 s for
//! 300 operations from 3–5 clients, 1 s for 200 from 8 clients, and some 10 s for 400 from 8.
//! Refutation is the expensive kind (every alternative must be exhausted), hence short keys.
//! The default budget, 500,000 steps or 10 s per key, also bounds memory: the memo holds at
//! most one entry per step, each a bitmap of the key's events, so at worst steps × 2 ×
//! operations bytes (some 300 MB for a 300-operation key).

use std::cell::Cell;
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::fmt;
use std::fs::File;
use std::io::{self, Write as _};
use std::panic::{self, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use todc_utils::{Action, Specification, WGLChecker};

// ----- events ---------------------------------------------------------------------------------

/// What an operation does: the `f` field.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Func {
    /// Read the key's value (or its absence).
    Read,
    /// Set the key's value.
    Write,
    /// Set the key's value if it holds the expected one.
    Cas,
    /// Remove the key.
    Delete,
}

impl Func {
    /// Every function, in the order the summary prints them.
    pub const ALL: [Func; 4] = [Func::Read, Func::Write, Func::Cas, Func::Delete];

    /// The name used in the JSON `f` field.
    pub fn name(self) -> &'static str {
        match self {
            Func::Read => "read",
            Func::Write => "write",
            Func::Cas => "cas",
            Func::Delete => "delete",
        }
    }
}

/// The `type` field: where in its life an operation is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EventType {
    /// The request is about to be sent.
    Invoke,
    /// It happened, with this result.
    Ok,
    /// It definitely did not happen.
    Fail,
    /// Unknown outcome: it may have happened, or may still happen.
    Info,
}

/// The `value` field (see the module docs for which shape goes with which `f`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Value {
    /// `null`: a read's invocation, a read that found the key absent, a delete.
    #[default]
    Nil,
    /// `"v"`: a written value, or the value a read returned.
    One(String),
    /// `[expected, new]`: a cas; `expected` `null` = the key must be absent.
    Cas(Option<String>, String),
}

/// One operation as the client invokes it.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Op {
    /// Read the value.
    Read,
    /// Write this (unique) value.
    Write(String),
    /// Replace `expected` (`None`: absent) with the (unique) value `new`.
    Cas {
        /// The value the key must hold (`None`: the key must be absent).
        expected: Option<String>,
        /// The value to set.
        new: String,
    },
    /// Remove the key.
    Delete,
}

impl Op {
    /// The JSON `f` of this operation.
    pub fn func(&self) -> Func {
        match self {
            Op::Read => Func::Read,
            Op::Write(_) => Func::Write,
            Op::Cas { .. } => Func::Cas,
            Op::Delete => Func::Delete,
        }
    }

    /// The JSON `value` of this operation's invocation.
    pub fn value(&self) -> Value {
        match self {
            Op::Read | Op::Delete => Value::Nil,
            Op::Write(v) => Value::One(v.clone()),
            Op::Cas { expected, new } => Value::Cas(expected.clone(), new.clone()),
        }
    }

    /// The operation an invocation event describes.
    fn from_invocation(f: Func, value: &Value) -> Result<Op, String> {
        match (f, value) {
            (Func::Read, Value::Nil) => Ok(Op::Read),
            (Func::Write, Value::One(v)) => Ok(Op::Write(v.clone())),
            (Func::Cas, Value::Cas(expected, new)) => Ok(Op::Cas {
                expected: expected.clone(),
                new: new.clone(),
            }),
            (Func::Delete, Value::Nil) => Ok(Op::Delete),
            (f, value) => Err(format!(
                "a {} invocation cannot carry the value {}",
                f.name(),
                json_of(value)
            )),
        }
    }

    /// The value this operation stores, if any (it must be unique within its key).
    pub fn stored_value(&self) -> Option<&str> {
        match self {
            Op::Write(v) | Op::Cas { new: v, .. } => Some(v),
            Op::Read | Op::Delete => None,
        }
    }
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Op::Read => write!(f, "read"),
            Op::Write(v) => write!(f, "write {v:?}"),
            Op::Cas { expected, new } => {
                write!(f, "cas {} -> {new:?}", show_value(expected.as_deref()))
            }
            Op::Delete => write!(f, "delete"),
        }
    }
}

/// One line of a history file.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    /// The logical client thread.
    pub process: u64,
    /// Invocation or which kind of completion.
    #[serde(rename = "type")]
    pub kind: EventType,
    /// What the operation does.
    pub f: Func,
    /// The key it works on.
    pub key: String,
    /// Its argument, or for a read's `ok`, its result.
    #[serde(default)]
    pub value: Value,
    /// Nanoseconds since the recorder started, from a monotonic clock.
    pub time_ns: u64,
    /// Why it failed or its outcome is unknown (for humans only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl Event {
    /// This event as one JSON line (without the newline).
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("an event always serializes")
    }
}

// ----- recording ------------------------------------------------------------------------------

/// Records the events of concurrent clients: cheap to clone, `Send + Sync`, usable from any
/// thread or task.
///
/// The lock is a `std` mutex, not a tokio one: it is held only to stamp, append and write one
/// line, never across an `.await`. Taking the timestamp under the lock makes the file's order
/// the time order. Every line goes to the file with one unbuffered `write`, so the history
/// survives a panicking or killed test; its cost is nothing next to a Raft round trip.
#[derive(Clone)]
pub struct Recorder {
    inner: Arc<Mutex<RecorderInner>>,
}

struct RecorderInner {
    start: Instant,
    file: Option<(PathBuf, File)>,
    events: Vec<Event>,
    next_process: u64,
    /// Process ids that ended with an `info`: no event may name them again.
    retired: HashSet<u64>,
}

impl Recorder {
    /// A recorder that also writes every event to `path` (created or truncated).
    pub fn create(path: impl AsRef<Path>) -> io::Result<Recorder> {
        let path = path.as_ref().to_path_buf();
        let file = File::create(&path)?;
        Ok(Recorder::with_file(Some((path, file))))
    }

    /// A recorder that keeps the events in memory only.
    pub fn in_memory() -> Recorder {
        Recorder::with_file(None)
    }

    fn with_file(file: Option<(PathBuf, File)>) -> Recorder {
        Recorder {
            inner: Arc::new(Mutex::new(RecorderInner {
                start: Instant::now(),
                file,
                events: Vec::new(),
                next_process: 0,
                retired: HashSet::new(),
            })),
        }
    }

    /// The file the events go to, if any.
    pub fn path(&self) -> Option<PathBuf> {
        self.lock().file.as_ref().map(|(path, _)| path.clone())
    }

    /// A new logical client with a process id never handed out before.
    pub fn process(&self) -> Process {
        Process {
            recorder: self.clone(),
            id: self.fresh_id(),
            in_flight: None,
        }
    }

    /// Everything recorded so far.
    pub fn history(&self) -> History {
        History::new(self.lock().events.clone())
    }

    fn fresh_id(&self) -> u64 {
        let mut inner = self.lock();
        let id = inner.next_process;
        inner.next_process += 1;
        id
    }

    // A panic in one client while it held the lock (there is nothing in the critical section
    // that panics except a failed file write) must not stop the others from recording.
    fn lock(&self) -> std::sync::MutexGuard<'_, RecorderInner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn record(
        &self,
        process: u64,
        kind: EventType,
        key: &str,
        op: &Op,
        value: Value,
        error: Option<String>,
    ) {
        let mut inner = self.lock();
        assert!(
            !inner.retired.contains(&process),
            "process {process} ended with an info; a client with an unknown outcome must \
             continue under a new process id"
        );
        let event = Event {
            process,
            kind,
            f: op.func(),
            key: key.to_owned(),
            value,
            // u64 nanoseconds last 584 years.
            time_ns: inner.start.elapsed().as_nanos() as u64,
            error,
        };
        if kind == EventType::Info {
            inner.retired.insert(process);
        }
        if let Some((path, file)) = &mut inner.file {
            let mut line = event.to_json();
            line.push('\n');
            if let Err(e) = file.write_all(line.as_bytes()) {
                panic!("writing the history to {}: {e}", path.display());
            }
        }
        inner.events.push(event);
    }
}

/// One logical client thread: at most one operation in flight, recorded through its
/// [`Recorder`]. Owned by the task that runs the client.
///
/// Call [`Process::invoke`] right before sending the request and one of [`Process::ok`] /
/// [`Process::ok_read`] / [`Process::fail`] / [`Process::info`] right after the answer (or the
/// give-up). Map errors conservatively: `fail` only when the operation certainly had no effect
/// (a compare that failed, INVALID_ARGUMENT, a refusal before anything was proposed); a timeout,
/// a lost connection, UNAVAILABLE after the request may have reached a leader, or anything
/// unsure is `info`. A `fail` that did happen hides bugs; an `info` that did not happen only
/// makes the search wider.
///
/// If the process is dropped with an operation in flight (a cancelled task), that operation
/// stays open, like an `info`, and the id is never handed out again.
pub struct Process {
    recorder: Recorder,
    id: u64,
    in_flight: Option<(String, Op)>,
}

impl Process {
    /// The current process id (it changes after [`Process::info`]).
    pub fn id(&self) -> u64 {
        self.id
    }

    /// Records the invocation of `op` on `key`.
    ///
    /// # Panics
    ///
    /// If an operation is already in flight.
    pub fn invoke(&mut self, key: impl Into<String>, op: Op) {
        let key = key.into();
        if let Some((k, o)) = &self.in_flight {
            panic!(
                "process {} invoked {op} on {key:?} while {o} on {k:?} is in flight",
                self.id
            );
        }
        self.recorder
            .record(self.id, EventType::Invoke, &key, &op, op.value(), None);
        self.in_flight = Some((key, op));
    }

    /// Records that the write, cas or delete in flight happened.
    ///
    /// # Panics
    ///
    /// If nothing is in flight, or it is a read (use [`Process::ok_read`]).
    pub fn ok(&mut self) {
        let (key, op) = self.take("ok");
        assert!(
            op != Op::Read,
            "process {}: a read completes with ok_read",
            self.id
        );
        self.recorder
            .record(self.id, EventType::Ok, &key, &op, op.value(), None);
    }

    /// Records that the read in flight returned `value` (`None`: the key was absent).
    ///
    /// # Panics
    ///
    /// If nothing is in flight, or it is not a read.
    pub fn ok_read(&mut self, value: Option<String>) {
        let (key, op) = self.take("ok_read");
        assert!(
            op == Op::Read,
            "process {}: ok_read completes a read, not {op}",
            self.id
        );
        let value = value.map_or(Value::Nil, Value::One);
        self.recorder
            .record(self.id, EventType::Ok, &key, &op, value, None);
    }

    /// Records that the operation in flight definitely did not happen.
    ///
    /// # Panics
    ///
    /// If nothing is in flight.
    pub fn fail(&mut self, error: impl fmt::Display) {
        let (key, op) = self.take("fail");
        self.recorder.record(
            self.id,
            EventType::Fail,
            &key,
            &op,
            op.value(),
            Some(error.to_string()),
        );
    }

    /// Records that the outcome of the operation in flight is unknown; it stays open for ever,
    /// so this client continues under a fresh process id.
    ///
    /// # Panics
    ///
    /// If nothing is in flight.
    pub fn info(&mut self, error: impl fmt::Display) {
        let (key, op) = self.take("info");
        self.recorder.record(
            self.id,
            EventType::Info,
            &key,
            &op,
            op.value(),
            Some(error.to_string()),
        );
        self.id = self.recorder.fresh_id();
    }

    fn take(&mut self, what: &str) -> (String, Op) {
        match self.in_flight.take() {
            Some(in_flight) => in_flight,
            None => panic!("process {}: {what} with no operation in flight", self.id),
        }
    }
}

// ----- histories ------------------------------------------------------------------------------

/// Why a history could not be read or checked.
#[derive(Debug, thiserror::Error)]
pub enum HistoryError {
    /// The file could not be read.
    #[error("reading {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        source: io::Error,
    },
    /// A line is not an event.
    #[error("line {line}: {message}")]
    Parse {
        /// 1-based line number.
        line: usize,
        /// What is wrong with it.
        message: String,
    },
    /// The events do not form a well-formed history (a bug in the recording, not in raftkv).
    #[error("malformed history at {event}: {message}")]
    Malformed {
        /// The offending event as JSON.
        event: String,
        /// What is wrong with it.
        message: String,
    },
}

/// A recorded history: events in the order they were recorded.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct History {
    /// The events.
    pub events: Vec<Event>,
}

impl History {
    /// A history of these events.
    pub fn new(events: Vec<Event>) -> History {
        History { events }
    }

    /// Parses JSON lines (blank lines are skipped).
    pub fn from_jsonl(text: &str) -> Result<History, HistoryError> {
        let mut events = Vec::new();
        for (n, line) in text.lines().enumerate() {
            if line.trim().is_empty() {
                continue;
            }
            let event = serde_json::from_str(line).map_err(|e| HistoryError::Parse {
                line: n + 1,
                message: format!("{e}: {line}"),
            })?;
            events.push(event);
        }
        Ok(History { events })
    }

    /// Reads a history file written by a [`Recorder`] or [`History::save`].
    pub fn load(path: impl AsRef<Path>) -> Result<History, HistoryError> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|source| HistoryError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        History::from_jsonl(&text)
    }

    /// The events as JSON lines, each ending in a newline.
    pub fn to_jsonl(&self) -> String {
        let mut out = String::new();
        for event in &self.events {
            out.push_str(&event.to_json());
            out.push('\n');
        }
        out
    }

    /// Writes [`History::to_jsonl`] to `path`.
    pub fn save(&self, path: impl AsRef<Path>) -> io::Result<()> {
        std::fs::write(path, self.to_jsonl())
    }

    /// Checks every key's sub-history for linearizability.
    ///
    /// Errors only when the history itself is malformed (see [`HistoryError::Malformed`]);
    /// violations and keys too costly to decide are in the [`Report`].
    pub fn check(&self, options: &CheckOptions) -> Result<Report, HistoryError> {
        let started = Instant::now();
        let ops = operations(&self.events)?;

        let mut summary = Summary {
            events: self.events.len(),
            operations: ops.len(),
            processes: self
                .events
                .iter()
                .map(|e| e.process)
                .collect::<BTreeSet<_>>()
                .len(),
            ..Summary::default()
        };
        for op in &ops {
            let counts = summary.counts.entry(op.op.func()).or_default();
            match op.outcome {
                Outcome::Ok(_) => counts.ok += 1,
                Outcome::Fail => counts.fail += 1,
                Outcome::Info => counts.info += 1,
                Outcome::Open => counts.open += 1,
            }
        }

        let mut by_key: BTreeMap<&str, Vec<&OpRecord>> = BTreeMap::new();
        for op in &ops {
            by_key.entry(&op.key).or_default().push(op);
        }
        let mut keys = Vec::with_capacity(by_key.len());
        for (key, ops) in by_key {
            let report = check_key(key, &ops, options);
            match report.verdict {
                Verdict::Linearizable => summary.linearizable += 1,
                Verdict::NotLinearizable { .. } => summary.violations += 1,
                Verdict::Unknown { .. } => summary.unknown += 1,
            }
            if summary
                .slowest
                .as_ref()
                .is_none_or(|(_, _, t)| report.elapsed > *t)
            {
                summary.slowest = Some((report.key.clone(), report.ops, report.elapsed));
            }
            keys.push(report);
        }
        summary.keys = keys.len();
        summary.check_time = started.elapsed();
        Ok(Report { summary, keys })
    }
}

// ----- from events to operations -------------------------------------------------------------

/// How an operation ended.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Outcome {
    /// It happened; for a read, with the value read (`None`: absent).
    Ok(Option<String>),
    /// It did not happen.
    Fail,
    /// Unknown outcome.
    Info,
    /// Never completed within the history: the same as unknown.
    Open,
}

/// One operation: an invocation and its completion, if any.
#[derive(Clone, Debug)]
struct OpRecord {
    process: u64,
    key: String,
    op: Op,
    /// Position of the invocation in time order (over the whole history).
    invoked: usize,
    invoked_ns: u64,
    /// Position and time of the completion.
    completed: Option<(usize, u64)>,
    outcome: Outcome,
    error: Option<String>,
}

/// Pairs invocations with completions, in time order, and checks the history is well formed.
fn operations(events: &[Event]) -> Result<Vec<OpRecord>, HistoryError> {
    let malformed = |event: &Event, message: String| HistoryError::Malformed {
        event: event.to_json(),
        message,
    };
    let mut order: Vec<&Event> = events.iter().collect();
    // Stable: events with equal timestamps keep the order they were recorded in.
    order.sort_by_key(|e| e.time_ns);

    let mut ops: Vec<OpRecord> = Vec::new();
    let mut in_flight: HashMap<u64, usize> = HashMap::new();
    let mut retired: HashSet<u64> = HashSet::new();
    let mut stored: HashSet<(&str, &str)> = HashSet::new();
    for (position, event) in order.into_iter().enumerate() {
        if retired.contains(&event.process) {
            return Err(malformed(
                event,
                format!(
                    "process {} already ended with an info; a client with an unknown outcome \
                     must continue under a new process id",
                    event.process
                ),
            ));
        }
        if event.kind == EventType::Invoke {
            if let Some(&open) = in_flight.get(&event.process) {
                return Err(malformed(
                    event,
                    format!(
                        "process {} still has {} on {:?} in flight",
                        event.process, ops[open].op, ops[open].key
                    ),
                ));
            }
            let op = Op::from_invocation(event.f, &event.value).map_err(|m| malformed(event, m))?;
            // Borrowed from the event (which outlives the set), not from `op`.
            let new = match &event.value {
                Value::One(v) | Value::Cas(_, v) => Some(v.as_str()),
                Value::Nil => None,
            };
            if let Some(new) = new
                && !stored.insert((&event.key, new))
            {
                return Err(malformed(
                    event,
                    format!(
                        "the value {new:?} is written twice to {:?}; values must be unique per \
                         write for CAS-by-version to be checkable as CAS-by-value",
                        event.key
                    ),
                ));
            }
            in_flight.insert(event.process, ops.len());
            ops.push(OpRecord {
                process: event.process,
                key: event.key.clone(),
                op,
                invoked: position,
                invoked_ns: event.time_ns,
                completed: None,
                outcome: Outcome::Open,
                error: None,
            });
            continue;
        }
        let Some(index) = in_flight.remove(&event.process) else {
            return Err(malformed(
                event,
                format!("process {} has nothing in flight", event.process),
            ));
        };
        let op = &mut ops[index];
        if op.op.func() != event.f || op.key != event.key {
            return Err(malformed(
                event,
                format!(
                    "it completes {} on {:?}, which process {} invoked",
                    op.op, op.key, event.process
                ),
            ));
        }
        op.outcome = match event.kind {
            EventType::Ok if event.f == Func::Read => match &event.value {
                Value::Nil => Outcome::Ok(None),
                Value::One(v) => Outcome::Ok(Some(v.clone())),
                Value::Cas(..) => {
                    return Err(malformed(event, "a read returns one value".to_owned()));
                }
            },
            EventType::Ok => Outcome::Ok(None),
            EventType::Fail => Outcome::Fail,
            EventType::Info => {
                retired.insert(event.process);
                Outcome::Info
            }
            EventType::Invoke => unreachable!("handled above"),
        };
        op.completed = Some((position, event.time_ns));
        op.error = event.error.clone();
    }
    Ok(ops)
}

// ----- the register specification for todc-utils ---------------------------------------------

/// What a write, delete or cas does; values are interned per key to small ids, so states are
/// `Copy` and cheap to hash in the memo.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Effect {
    Write(u32),
    Delete,
    Cas { expected: Option<u32>, new: u32 },
}

impl Effect {
    /// The value after it, or `None` when a cas's compare fails.
    fn apply(self, value: Option<u32>) -> Option<Option<u32>> {
        match self {
            Effect::Write(v) => Some(Some(v)),
            Effect::Delete => Some(None),
            Effect::Cas { expected, new } => (value == expected).then_some(Some(new)),
        }
    }

    /// The value it leaves when it takes effect.
    fn leaves(self) -> Option<u32> {
        match self {
            Effect::Write(v) | Effect::Cas { new: v, .. } => Some(v),
            Effect::Delete => None,
        }
    }
}

/// A register operation as the checker sees it.
#[derive(Clone, Copy, Debug)]
enum RegisterOp {
    /// A read that returned this (`None`: absent).
    Read(Option<u32>),
    /// An operation that happened: a cas's compare held.
    Done(Effect),
    /// Unknown outcome, open to the end of the history: may take effect anywhere after its
    /// invocation (a cas only if its compare holds there), and "never" is the same as "last".
    Open(Effect),
}

/// The register holding `Option<value>`, for [`WGLChecker`].
struct RegisterSpec;

impl Specification for RegisterSpec {
    type State = Option<u32>;
    type Operation = RegisterOp;

    fn init() -> Option<u32> {
        None
    }

    fn apply(op: &RegisterOp, state: &Option<u32>) -> (bool, Option<u32>) {
        // One call per search step: the only hook where a budget can be charged.
        charge_step();
        match *op {
            RegisterOp::Read(value) => (value == *state, *state),
            RegisterOp::Done(effect) => match effect.apply(*state) {
                Some(next) => (true, next),
                None => (false, *state),
            },
            RegisterOp::Open(effect) => (true, effect.apply(*state).unwrap_or(*state)),
        }
    }
}

/// What is left of the search budget of the check running on this thread.
#[derive(Clone, Copy)]
struct StepBudget {
    left: u64,
    used: u64,
    deadline: Instant,
}

/// The unwind payload that ends a search which ran out of budget.
struct OutOfBudget;

thread_local! {
    static BUDGET: Cell<Option<StepBudget>> = const { Cell::new(None) };
}

fn charge_step() {
    let Some(mut budget) = BUDGET.get() else {
        return;
    };
    // Reading the clock every step would cost more than a step of a short history.
    if budget.left == 0 || (budget.used % 1024 == 1023 && Instant::now() >= budget.deadline) {
        BUDGET.set(Some(budget));
        // resume_unwind, unlike panic!, skips the panic hook: nothing is printed.
        panic::resume_unwind(Box::new(OutOfBudget));
    }
    budget.left -= 1;
    budget.used += 1;
    BUDGET.set(Some(budget));
}

/// Runs the WGL search; `None` when it ran out of budget. Also returns the steps taken.
fn run_search(
    actions: Vec<(usize, Action<RegisterOp>)>,
    max_steps: u64,
    deadline: Instant,
) -> (Option<bool>, u64) {
    if actions.is_empty() {
        // todc-utils panics on an empty history; it is trivially linearizable.
        return (Some(true), 0);
    }
    let history = todc_utils::History::from_actions(actions);
    BUDGET.set(Some(StepBudget {
        left: max_steps,
        used: 0,
        deadline,
    }));
    let result = panic::catch_unwind(AssertUnwindSafe(|| {
        WGLChecker::<RegisterSpec>::is_linearizable(history)
    }));
    let used = BUDGET.take().map_or(0, |b| b.used);
    match result {
        Ok(linearizable) => (Some(linearizable), used),
        Err(payload) if payload.is::<OutOfBudget>() => (None, used),
        Err(payload) => panic::resume_unwind(payload),
    }
}

/// Interns one key's values to small ids.
#[derive(Default)]
struct Interner<'a> {
    ids: HashMap<&'a str, u32>,
}

impl<'a> Interner<'a> {
    fn id(&mut self, value: &'a str) -> u32 {
        let next = self.ids.len() as u32;
        *self.ids.entry(value).or_insert(next)
    }

    fn opt(&mut self, value: Option<&'a str>) -> Option<u32> {
        value.map(|v| self.id(v))
    }
}

/// An operation that goes to the search: index in the key's operations, what it is, and the
/// positions of its invocation and response (`usize::MAX`: open).
#[derive(Clone, Copy)]
struct Kept {
    index: usize,
    reg: RegisterOp,
    invoked: usize,
    responded: usize,
}

/// The checker's actions for the prefix of one key's history made of the events at positions
/// below `cut`; operations still in flight at the cut are open. With `reduce`, open operations
/// nobody can observe are left out first ([`prune_unobservable`]).
fn actions<'a>(
    ops: &[&'a OpRecord],
    cut: usize,
    values: &mut Interner<'a>,
    reduce: bool,
) -> Vec<(usize, Action<RegisterOp>)> {
    let mut kept: Vec<Kept> = Vec::new();
    for (index, op) in ops.iter().enumerate() {
        if op.invoked >= cut {
            continue;
        }
        let outcome = match op.completed {
            Some((at, _)) if at < cut => &op.outcome,
            _ => &Outcome::Open,
        };
        let open = matches!(outcome, Outcome::Info | Outcome::Open);
        let effect = match &op.op {
            Op::Read => None,
            Op::Write(v) => Some(Effect::Write(values.id(v))),
            Op::Delete => Some(Effect::Delete),
            Op::Cas { expected, new } => Some(Effect::Cas {
                expected: values.opt(expected.as_deref()),
                new: values.id(new),
            }),
        };
        let reg = match (effect, outcome) {
            (_, Outcome::Fail) => continue,
            (None, Outcome::Ok(v)) => RegisterOp::Read(values.opt(v.as_deref())),
            // A read with unknown outcome constrains nothing.
            (None, _) => continue,
            (Some(effect), _) if open => RegisterOp::Open(effect),
            (Some(effect), _) => RegisterOp::Done(effect),
        };
        let responded = match op.completed {
            Some((at, _)) if !open => at,
            _ => usize::MAX,
        };
        kept.push(Kept {
            index,
            reg,
            invoked: op.invoked,
            responded,
        });
    }
    if reduce {
        prune_unobservable(&mut kept);
    }

    let mut timed: Vec<(usize, usize, Action<RegisterOp>)> = Vec::with_capacity(2 * kept.len());
    for k in kept {
        // Each operation is its own todc "process": todc pairs calls with responses per
        // process, and real-time order comes from the positions alone.
        timed.push((k.invoked, k.index, Action::Call(k.reg)));
        timed.push((k.responded, k.index, Action::Response(k.reg)));
    }
    // Stable: open responses all sit at the end, in invocation order.
    timed.sort_by_key(|(at, _, _)| *at);
    timed.into_iter().map(|(_, i, a)| (i, a)).collect()
}

/// Drops open (unknown-outcome) writes, deletes and cases whose resulting state nothing can
/// observe: no read returning it and no remaining cas expecting it completes after the open
/// operation was invoked. This keeps the search from trying every subset of timed-out
/// operations nobody saw, which is most of them: each open operation, until the search has
/// linearized it, doubles the configurations it must tell apart (measured: a 300-operation key
/// with 20 timeouts went from over 300,000 steps, unknown, to 1,500).
///
/// The fact it rests on: an open operation `O`, leaving state `s`, that takes effect after
/// every operation observing `s` could as well not take effect. Take such a linearization:
/// every operation after `O` in it does not read or compare against `s`, so the next one that
/// depends on the state is an unconditional write or delete (which erases the difference), or
/// an open cas whose compare fails on `s` (a no-op there; move it to the end, where it changes
/// nothing anyone sees), or there is none. So removing `O` keeps every result valid; and an
/// open operation may always be put back last. Here no observer of `s` completes after `O` is
/// invoked, so `O` comes after all of them in any linearization, and it is dropped. Dropping
/// one can leave another unobserved (a cas that alone expected a value), hence the loop.
fn prune_unobservable(kept: &mut Vec<Kept>) {
    loop {
        let mut last_observed: HashMap<Option<u32>, usize> = HashMap::new();
        for k in kept.iter() {
            let observes = match k.reg {
                RegisterOp::Read(value) => value,
                RegisterOp::Done(Effect::Cas { expected, .. })
                | RegisterOp::Open(Effect::Cas { expected, .. }) => expected,
                _ => continue,
            };
            let latest = last_observed.entry(observes).or_insert(k.responded);
            *latest = (*latest).max(k.responded);
        }
        let before = kept.len();
        kept.retain(|k| match k.reg {
            RegisterOp::Open(effect) => last_observed
                .get(&effect.leaves())
                .is_some_and(|&latest| latest > k.invoked),
            _ => true,
        });
        if kept.len() == before {
            return;
        }
    }
}

// ----- per-key check and report ---------------------------------------------------------------

/// Limits of the search per key.
#[derive(Clone, Debug)]
pub struct CheckOptions {
    /// Search steps (calls of the register spec) per key, including the search for the shortest
    /// failing prefix. Also bounds memory: at worst steps × the key's events bytes.
    pub max_steps: u64,
    /// Wall-clock time per key.
    pub max_time: Duration,
    /// On a violation, look for the shortest failing prefix to print (a few more searches).
    pub shrink: bool,
    /// Leave out operations with unknown outcome that nothing can observe before the search
    /// (see `prune_unobservable` in the source): the same verdicts, far fewer steps. Off only
    /// to cross-check that claim.
    pub reduce: bool,
}

impl Default for CheckOptions {
    fn default() -> CheckOptions {
        CheckOptions {
            max_steps: 500_000,
            max_time: Duration::from_secs(10),
            shrink: true,
            reduce: true,
        }
    }
}

/// The answer for one key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Some order of the operations explains every result.
    Linearizable,
    /// No order does; `excerpt` shows the shortest failing prefix of the key's sub-history.
    NotLinearizable {
        /// The offending sub-history, one operation a line.
        excerpt: String,
    },
    /// The search ran out of budget.
    Unknown {
        /// Which limit was hit.
        reason: String,
    },
}

/// The check of one key.
#[derive(Clone, Debug)]
pub struct KeyReport {
    /// The key.
    pub key: String,
    /// Operations on it (including failed ones).
    pub ops: usize,
    /// The answer.
    pub verdict: Verdict,
    /// Search steps taken.
    pub steps: u64,
    /// Time taken.
    pub elapsed: Duration,
}

fn check_key(key: &str, ops: &[&OpRecord], options: &CheckOptions) -> KeyReport {
    let started = Instant::now();
    let deadline = started + options.max_time;
    let mut values = Interner::default();
    let (answer, mut steps) = run_search(
        actions(ops, usize::MAX, &mut values, options.reduce),
        options.max_steps,
        deadline,
    );
    let verdict = match answer {
        Some(true) => Verdict::Linearizable,
        None => Verdict::Unknown {
            reason: format!(
                "too long: gave up after {steps} steps and {:.1?} (limits: {} steps, {:?})",
                started.elapsed(),
                options.max_steps,
                options.max_time
            ),
        },
        Some(false) => {
            // Positions of this key's events; a prefix is "the first `n` of them". Prefix of
            // length 0 is linearizable, the whole is not: find the shortest that is not.
            let mut positions: Vec<usize> = ops
                .iter()
                .flat_map(|op| std::iter::once(op.invoked).chain(op.completed.map(|(at, _)| at)))
                .collect();
            positions.sort_unstable();
            let (mut good, mut bad) = (0, positions.len());
            while options.shrink && bad - good > 1 {
                let mid = (good + bad) / 2;
                let left = options.max_steps.saturating_sub(steps);
                let (answer, used) = run_search(
                    actions(ops, positions[mid - 1] + 1, &mut values, options.reduce),
                    left,
                    deadline,
                );
                steps += used;
                match answer {
                    Some(true) => good = mid,
                    Some(false) => bad = mid,
                    // Out of budget: print the shortest failing prefix found so far.
                    None => break,
                }
            }
            let shown = if !options.shrink {
                "The whole sub-history is shown (not shrunk); it"
            } else if bad - good > 1 {
                "A failing prefix is shown (the search for the shortest ran out of budget); it"
            } else if bad == positions.len() {
                "The whole sub-history is needed; it"
            } else {
                "Shown: the shortest failing prefix; it"
            };
            Verdict::NotLinearizable {
                excerpt: render(key, ops, positions[bad - 1], shown),
            }
        }
    };
    KeyReport {
        key: key.to_owned(),
        ops: ops.len(),
        verdict,
        steps,
        elapsed: started.elapsed(),
    }
}

/// At most this many operations of a failing prefix are printed (the last ones: the violation
/// is at its end); the whole history is in the file.
const EXCERPT_MAX_OPS: usize = 100;

/// The prefix of one key's sub-history up to and including the event at position `last`, one
/// operation a line, in invocation order.
fn render(key: &str, ops: &[&OpRecord], last: usize, shown_text: &str) -> String {
    use fmt::Write as _;
    let origin = ops.iter().map(|op| op.invoked_ns).min().unwrap_or(0);
    let ms = |ns: u64| format!("{:.3} ms", (ns - origin) as f64 / 1e6);
    let shown: Vec<&&OpRecord> = ops.iter().filter(|op| op.invoked <= last).collect();

    let mut out = String::new();
    let culprit = ops.iter().find_map(|op| {
        if op.invoked == last {
            Some(format!("p{} invoke {}", op.process, op.op))
        } else if op.completed.is_some_and(|(at, _)| at == last) {
            Some(format!("p{} {}", op.process, outcome_text(op)))
        } else {
            None
        }
    });
    let _ = writeln!(
        out,
        "key {key:?}: NOT linearizable: no order of these operations explains their results. \
         {shown_text} ends with: {}",
        culprit.unwrap_or_default()
    );
    let _ = writeln!(
        out,
        "    {:<8} {:>14} {:>14}  {:<40} outcome",
        "process", "invoked", "completed", "operation"
    );
    let skip = shown.len().saturating_sub(EXCERPT_MAX_OPS);
    if skip > 0 {
        let _ = writeln!(
            out,
            "    ... {skip} earlier operations not shown (see the history file)"
        );
    }
    for op in shown.into_iter().skip(skip) {
        let completed = match op.completed {
            Some((at, ns)) if at <= last => ms(ns),
            Some(_) => "(later)".to_owned(),
            None => "never".to_owned(),
        };
        let _ = writeln!(
            out,
            "    {:<8} {:>14} {:>14}  {:<40} {}",
            format!("p{}", op.process),
            ms(op.invoked_ns),
            completed,
            op.op.to_string(),
            outcome_text(op)
        );
    }
    out
}

fn outcome_text(op: &OpRecord) -> String {
    let why = op
        .error
        .as_deref()
        .map(|e| format!(" ({e})"))
        .unwrap_or_default();
    match (&op.outcome, &op.op) {
        (Outcome::Ok(v), Op::Read) => format!("ok -> {}", show_value(v.as_deref())),
        (Outcome::Ok(_), _) => "ok".to_owned(),
        (Outcome::Fail, _) => format!("fail{why} (did not happen)"),
        (Outcome::Info, _) => format!("info{why} (unknown, open for ever)"),
        (Outcome::Open, _) => "never completed (open for ever)".to_owned(),
    }
}

fn show_value(value: Option<&str>) -> String {
    match value {
        Some(v) => format!("{v:?}"),
        None => "nil".to_owned(),
    }
}

fn json_of(value: &Value) -> String {
    serde_json::to_string(value).unwrap_or_else(|_| format!("{value:?}"))
}

/// Operation counts of one [`Func`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counts {
    /// Completed with `ok`.
    pub ok: usize,
    /// Completed with `fail`.
    pub fail: usize,
    /// Completed with `info`.
    pub info: usize,
    /// Never completed within the history.
    pub open: usize,
}

/// What was recorded and what the check found; `Display` prints it for the test output.
#[derive(Clone, Debug, Default)]
pub struct Summary {
    /// Events in the history.
    pub events: usize,
    /// Operations (invocations).
    pub operations: usize,
    /// Distinct process ids.
    pub processes: usize,
    /// Per function; functions never invoked are absent.
    pub counts: BTreeMap<Func, Counts>,
    /// Keys checked.
    pub keys: usize,
    /// Keys found linearizable.
    pub linearizable: usize,
    /// Keys found not linearizable.
    pub violations: usize,
    /// Keys whose check ran out of budget.
    pub unknown: usize,
    /// Time for the whole check.
    pub check_time: Duration,
    /// The slowest key: its name, operations and check time.
    pub slowest: Option<(String, usize, Duration)>,
}

impl Summary {
    /// The counts of `f` (zero if never invoked).
    pub fn counts(&self, f: Func) -> Counts {
        self.counts.get(&f).copied().unwrap_or_default()
    }
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "history: {} events, {} operations, {} process ids, {} keys",
            self.events, self.operations, self.processes, self.keys
        )?;
        writeln!(
            f,
            "    {:<8} {:>7} {:>7} {:>7} {:>7}",
            "", "ok", "fail", "info", "open"
        )?;
        let mut total = Counts::default();
        for func in Func::ALL {
            let c = self.counts(func);
            total.ok += c.ok;
            total.fail += c.fail;
            total.info += c.info;
            total.open += c.open;
            writeln!(
                f,
                "    {:<8} {:>7} {:>7} {:>7} {:>7}",
                func.name(),
                c.ok,
                c.fail,
                c.info,
                c.open
            )?;
        }
        writeln!(
            f,
            "    {:<8} {:>7} {:>7} {:>7} {:>7}",
            "all", total.ok, total.fail, total.info, total.open
        )?;
        write!(
            f,
            "linearizability: {} keys checked: {} linearizable, {} NOT linearizable, {} unknown \
             (too long to check); {:.1?} in all",
            self.keys, self.linearizable, self.violations, self.unknown, self.check_time
        )?;
        if let Some((key, ops, time)) = &self.slowest {
            write!(f, ", slowest key {key:?} ({ops} operations): {time:.1?}")?;
        }
        Ok(())
    }
}

/// The result of [`History::check`].
#[derive(Clone, Debug)]
pub struct Report {
    /// Totals.
    pub summary: Summary,
    /// One per key, in key order.
    pub keys: Vec<KeyReport>,
}

impl Report {
    /// True when no key is known to be non-linearizable (unknown keys do not count; see
    /// [`Summary::unknown`]).
    pub fn is_linearizable(&self) -> bool {
        self.summary.violations == 0
    }

    /// The keys found not linearizable.
    pub fn violations(&self) -> impl Iterator<Item = &KeyReport> {
        self.keys
            .iter()
            .filter(|k| matches!(k.verdict, Verdict::NotLinearizable { .. }))
    }

    /// The keys whose check ran out of budget.
    pub fn unknown(&self) -> impl Iterator<Item = &KeyReport> {
        self.keys
            .iter()
            .filter(|k| matches!(k.verdict, Verdict::Unknown { .. }))
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.summary)?;
        for key in &self.keys {
            match &key.verdict {
                Verdict::Linearizable => {}
                Verdict::NotLinearizable { excerpt } => write!(f, "\n\n{}", excerpt.trim_end())?,
                Verdict::Unknown { reason } => write!(
                    f,
                    "\nkey {:?} ({} operations): unknown, {reason}",
                    key.key, key.ops
                )?,
            }
        }
        Ok(())
    }
}
