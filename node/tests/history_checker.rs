//! Tests of the history format and the linearizability check the fault-injection suite uses
//! (`support/history.rs`, DESIGN.md §8.2).
//!
//! - Hand-written histories that must pass, and ones that must fail, each a known anomaly.
//! - Malformed histories the check refuses, and the [`Recorder`]'s process-id discipline.
//! - The JSON-lines file: written by a [`Recorder`] from several threads, read back, and its
//!   schema as the suite's readers (and humans) see it.
//! - Randomized: linearizable histories from a simulated register with random concurrency,
//!   timeouts and late effects must pass; one read changed to a stale value must fail.
//! - The search budget: a pathological key is reported unknown, not hung on.
//!
//! `cargo test -p raftkv-node --test history_checker -- --nocapture` prints the reports and
//! timings.

mod support;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use support::history::{
    CheckOptions, Event, EventType, Func, History, HistoryError, Op, Recorder, Report, Value,
    Verdict,
};

// ----- helpers --------------------------------------------------------------------------------

/// A hand-written history: events in the order written, 1 µs apart.
#[derive(Default)]
struct Script {
    events: Vec<Event>,
    in_flight: HashMap<u64, (String, Op)>,
}

impl Script {
    fn new() -> Script {
        Script::default()
    }

    fn push(&mut self, process: u64, kind: EventType, key: &str, op: &Op, value: Value) {
        let time_ns = 1_000 * (self.events.len() as u64 + 1);
        self.events.push(Event {
            process,
            kind,
            f: op.func(),
            key: key.to_owned(),
            value,
            time_ns,
            error: None,
        });
    }

    /// Process `p` invokes `op` on key "k".
    fn invoke(&mut self, p: u64, op: Op) -> &mut Script {
        self.invoke_on(p, "k", op)
    }

    fn invoke_on(&mut self, p: u64, key: &str, op: Op) -> &mut Script {
        self.push(p, EventType::Invoke, key, &op, op.value());
        self.in_flight.insert(p, (key.to_owned(), op));
        self
    }

    fn complete(&mut self, p: u64, kind: EventType, read: Option<&str>) -> &mut Script {
        let (key, op) = self.in_flight.remove(&p).expect("an operation in flight");
        let value = match (&op, kind) {
            (Op::Read, EventType::Ok) => read.map_or(Value::Nil, |v| Value::One(v.to_owned())),
            _ => op.value(),
        };
        self.push(p, kind, &key, &op, value);
        self
    }

    fn ok(&mut self, p: u64) -> &mut Script {
        self.complete(p, EventType::Ok, None)
    }

    fn read(&mut self, p: u64, value: Option<&str>) -> &mut Script {
        self.complete(p, EventType::Ok, value)
    }

    fn fail(&mut self, p: u64) -> &mut Script {
        self.complete(p, EventType::Fail, None)
    }

    fn info(&mut self, p: u64) -> &mut Script {
        self.complete(p, EventType::Info, None)
    }

    /// A whole read by `p` returning `value`, concurrent with nothing it does not overlap.
    fn reads(&mut self, p: u64, value: Option<&str>) -> &mut Script {
        self.invoke(p, Op::Read).read(p, value)
    }

    /// A whole acknowledged write by `p`.
    fn writes(&mut self, p: u64, value: &str) -> &mut Script {
        self.invoke(p, w(value)).ok(p)
    }

    fn history(&self) -> History {
        History::new(self.events.clone())
    }
}

fn w(value: &str) -> Op {
    Op::Write(value.to_owned())
}

fn cas(expected: Option<&str>, new: &str) -> Op {
    Op::Cas {
        expected: expected.map(str::to_owned),
        new: new.to_owned(),
    }
}

fn check(history: &History) -> Report {
    history
        .check(&CheckOptions::default())
        .expect("a well-formed history")
}

#[track_caller]
fn assert_linearizable(script: &Script) {
    let report = check(&script.history());
    println!("{report}\n");
    assert!(report.is_linearizable(), "expected linearizable:\n{report}");
    assert_eq!(report.summary.unknown, 0, "{report}");
}

/// Asserts the script is found not linearizable and returns the printed excerpt.
#[track_caller]
fn assert_violation(script: &Script) -> String {
    let report = check(&script.history());
    println!("{report}\n");
    assert!(
        !report.is_linearizable(),
        "expected a violation:\n{}",
        script.history().to_jsonl()
    );
    match &report.violations().next().expect("a violation").verdict {
        Verdict::NotLinearizable { excerpt } => excerpt.clone(),
        other => panic!("unexpected verdict {other:?}"),
    }
}

// ----- histories that must pass ---------------------------------------------------------------

#[test]
fn concurrent_writes_and_reads_in_a_valid_order() {
    // p0 |----------------- write a ---------------|
    // p1 |----------------- write b ---------------|
    // p2    |read b|  |read a|                          b then a: the writes linearize in
    // p3                                |read a|        reverse order of invocation.
    let mut s = Script::new();
    s.invoke(0, w("a")).invoke(1, w("b"));
    s.reads(2, Some("b")).reads(2, Some("a"));
    s.reads(3, Some("a"));
    s.ok(0).ok(1);
    s.reads(2, Some("a"));
    assert_linearizable(&s);

    // A read overlapping a write may see the old value or the new one.
    let mut s = Script::new();
    s.writes(0, "a");
    s.invoke(1, w("b")).invoke(2, Op::Read).read(2, Some("a"));
    s.invoke(3, Op::Read).ok(1).read(3, Some("b"));
    s.reads(2, Some("b"));
    assert_linearizable(&s);
}

#[test]
fn info_write_that_takes_effect_late() {
    // The client timed out; the write applied long after, and is read after reads of nil.
    let mut s = Script::new();
    s.invoke(0, w("a")).info(0);
    s.reads(1, None).reads(1, None);
    s.reads(2, Some("a")).reads(1, Some("a"));
    assert_linearizable(&s);
}

#[test]
fn info_write_that_never_takes_effect() {
    let mut s = Script::new();
    s.writes(0, "a");
    s.invoke(1, w("b")).info(1);
    s.reads(2, Some("a")).reads(3, Some("a"));
    s.writes(4, "c").reads(2, Some("c"));
    assert_linearizable(&s);
}

#[test]
fn cas_success_and_failure_consistent() {
    let mut s = Script::new();
    s.invoke(0, cas(None, "a")).ok(0); // absent -> a
    s.invoke(1, cas(Some("a"), "b")).ok(1);
    s.invoke(2, cas(Some("a"), "c")).fail(2); // a is gone: the compare fails
    s.reads(3, Some("b"));
    s.invoke(2, cas(None, "d")).fail(2); // not absent
    s.invoke(4, Op::Delete).ok(4);
    s.invoke(2, cas(None, "e")).ok(2);
    s.reads(3, Some("e"));
    // Unknown cas outcomes: one whose compare held and took effect, one that did not.
    s.invoke(5, cas(Some("e"), "f")).info(5);
    s.reads(3, Some("f"));
    s.invoke(6, cas(Some("e"), "g")).info(6);
    s.reads(3, Some("f"));
    assert_linearizable(&s);
}

#[test]
fn delete_then_read_nil() {
    let mut s = Script::new();
    s.writes(0, "a").reads(1, Some("a"));
    s.invoke(0, Op::Delete).ok(0);
    s.reads(1, None).reads(2, None);
    // Deleting an absent key is fine too.
    s.invoke(0, Op::Delete).ok(0).reads(1, None);
    assert_linearizable(&s);
}

#[test]
fn independent_keys_are_checked_separately() {
    // On one register this would be a stale read; on two keys it is fine.
    let mut s = Script::new();
    s.invoke_on(0, "x", w("a")).ok(0);
    s.invoke_on(0, "y", w("b")).ok(0);
    s.invoke_on(1, "x", Op::Read).read(1, Some("a"));
    s.invoke_on(1, "y", Op::Read).read(1, Some("b"));
    let report = check(&s.history());
    println!("{report}");
    assert!(report.is_linearizable());
    assert_eq!(report.summary.keys, 2);
}

#[test]
fn failed_operations_did_not_happen() {
    // Failed operations are dropped: the value of a failed write is never there to read.
    let mut s = Script::new();
    s.writes(0, "a");
    s.invoke(1, w("b")).fail(1);
    s.reads(2, Some("a"));
    s.invoke(1, Op::Delete).fail(1);
    s.reads(2, Some("a"));
    assert_linearizable(&s);
}

// ----- histories that must fail ---------------------------------------------------------------

#[test]
fn stale_read_after_a_completed_write() {
    let mut s = Script::new();
    s.writes(0, "a").writes(1, "b");
    s.reads(2, Some("a"));
    let excerpt = assert_violation(&s);
    assert!(excerpt.contains(r#"ok -> "a""#), "{excerpt}");
}

#[test]
fn read_of_a_value_never_written() {
    let mut s = Script::new();
    s.writes(0, "a");
    s.reads(1, Some("zzz"));
    assert_violation(&s);
}

#[test]
fn value_reappearing_after_being_overwritten() {
    // The "applied twice" signature: a, then b, then a again (a re-applied duplicate).
    let mut s = Script::new();
    s.writes(0, "a").writes(1, "b");
    s.reads(2, Some("b")).reads(2, Some("a"));
    assert_violation(&s);

    // Even when the second write is concurrent with the reads, a cannot come back after b.
    let mut s = Script::new();
    s.writes(0, "a");
    s.invoke(1, w("b"));
    s.reads(2, Some("b")).reads(3, Some("a"));
    s.ok(1);
    assert_violation(&s);
}

#[test]
fn failed_cas_whose_value_is_later_read() {
    let mut s = Script::new();
    s.writes(0, "a");
    s.invoke(1, cas(Some("a"), "b")).fail(1);
    s.reads(2, Some("b"));
    assert_violation(&s);
}

#[test]
fn unknown_cas_whose_compare_never_held_is_read() {
    let mut s = Script::new();
    s.writes(0, "a");
    s.invoke(1, cas(Some("x"), "b")).info(1);
    s.reads(2, Some("b"));
    assert_violation(&s);
}

#[test]
fn lost_acknowledged_write() {
    // The write was acknowledged, nothing else touches the key, later reads see the older
    // state: here the absence the key had before it.
    let mut s = Script::new();
    s.reads(1, None);
    s.writes(0, "a");
    s.reads(1, None);
    let excerpt = assert_violation(&s);
    assert!(excerpt.contains("ok -> nil"), "{excerpt}");

    // The same with an older value, and unrelated traffic on another key in between.
    let mut s = Script::new();
    s.writes(0, "a").writes(0, "b");
    s.invoke_on(3, "other", w("x")).ok(3);
    s.reads(1, Some("a"));
    let report = check(&s.history());
    println!("{report}");
    assert_eq!(report.summary.violations, 1);
    assert_eq!(report.summary.linearizable, 1);
}

#[test]
fn violation_shows_the_shortest_failing_prefix() {
    let mut s = Script::new();
    s.writes(0, "a").writes(0, "b");
    s.reads(1, Some("a")); // the violation: event 6
    for i in 0..20 {
        s.writes(0, &format!("v{i}"))
            .reads(1, Some(&format!("v{i}")));
    }
    let excerpt = assert_violation(&s);
    assert!(excerpt.contains("shortest failing prefix"), "{excerpt}");
    assert!(excerpt.contains(r#"p1 ok -> "a""#), "{excerpt}");
    assert!(
        !excerpt.contains("v19"),
        "the excerpt stops at the violation:\n{excerpt}"
    );
}

// ----- malformed histories and the process discipline ----------------------------------------

#[track_caller]
fn assert_malformed(script: &Script, needle: &str) {
    match script.history().check(&CheckOptions::default()) {
        Err(e @ HistoryError::Malformed { .. }) => {
            assert!(e.to_string().contains(needle), "{e}");
        }
        other => panic!("expected a malformed history, got {other:?}"),
    }
}

#[test]
fn a_process_must_not_continue_after_info() {
    let mut s = Script::new();
    s.invoke(0, w("a")).info(0);
    s.reads(0, Some("a"));
    assert_malformed(&s, "new process id");
}

#[test]
fn malformed_histories_are_refused() {
    let mut s = Script::new();
    s.writes(0, "a").writes(1, "a");
    assert_malformed(&s, "unique");

    let mut s = Script::new();
    s.invoke(0, w("a")).invoke(0, w("b"));
    assert_malformed(&s, "in flight");

    let mut s = Script::new();
    s.push(0, EventType::Ok, "k", &w("a"), Value::One("a".into()));
    assert_malformed(&s, "nothing in flight");

    let mut s = Script::new();
    s.push(0, EventType::Invoke, "k", &w("a"), Value::Nil);
    assert_malformed(&s, "cannot carry");
}

#[test]
fn recorder_moves_a_process_to_a_fresh_id_after_info() {
    let recorder = Recorder::in_memory();
    let mut p = recorder.process();
    let mut q = recorder.process();
    assert_ne!(p.id(), q.id());
    let first = p.id();
    p.invoke("k", w("a"));
    p.info("deadline exceeded");
    assert_ne!(p.id(), first);
    assert_ne!(p.id(), q.id());
    p.invoke("k", Op::Read);
    p.ok_read(Some("a".into()));
    q.invoke("k", cas(Some("a"), "b"));
    q.fail("compare failed");

    let history = recorder.history();
    let ids: Vec<u64> = history.events.iter().map(|e| e.process).collect();
    assert_eq!(ids[..2], [first, first]);
    assert!(ids[2..4].iter().all(|&id| id != first), "{ids:?}");
    assert_eq!(
        history.events[1].error.as_deref(),
        Some("deadline exceeded")
    );
    let report = check(&history);
    println!("{report}");
    assert!(report.is_linearizable());
    assert_eq!(report.summary.counts(Func::Write).info, 1);
    assert_eq!(report.summary.counts(Func::Cas).fail, 1);
}

#[test]
#[should_panic(expected = "in flight")]
fn recorder_refuses_two_operations_in_flight() {
    let recorder = Recorder::in_memory();
    let mut p = recorder.process();
    p.invoke("k", w("a"));
    p.invoke("k", w("b"));
}

#[test]
#[should_panic(expected = "ok_read")]
fn recorder_refuses_a_read_completed_without_its_value() {
    let recorder = Recorder::in_memory();
    let mut p = recorder.process();
    p.invoke("k", Op::Read);
    p.ok();
}

// ----- the file -------------------------------------------------------------------------------

#[test]
fn json_lines_round_trip() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("history.jsonl");
    let recorder = Recorder::create(&path).expect("create the history file");

    // Four threads on their own keys, every kind of operation and outcome.
    let threads: Vec<_> = (0..4)
        .map(|t| {
            let recorder = recorder.clone();
            std::thread::spawn(move || {
                let key = format!("k{t}");
                let mut p = recorder.process();
                for i in 0..25 {
                    let v = format!("v{t}-{i}");
                    p.invoke(&key, w(&v));
                    p.ok();
                    p.invoke(&key, Op::Read);
                    p.ok_read(Some(v.clone()));
                    p.invoke(&key, cas(Some(&v), &format!("{v}-c")));
                    p.ok();
                    p.invoke(&key, cas(None, &format!("{v}-x")));
                    p.fail("compare failed");
                    p.invoke(&key, Op::Delete);
                    p.ok();
                    p.invoke(&key, Op::Read);
                    p.ok_read(None);
                }
                p.invoke(&key, w(&format!("v{t}-late")));
                p.info("deadline exceeded");
                p.invoke(&key, Op::Read);
                // Left in flight: a client cancelled mid-operation.
            })
        })
        .collect();
    for t in threads {
        t.join().expect("a recording thread");
    }

    let in_memory = recorder.history();
    let from_file = History::load(&path).expect("load the history file");
    assert_eq!(from_file, in_memory);
    assert_eq!(from_file.events.len(), 4 * (25 * 12 + 3));
    assert_eq!(
        History::from_jsonl(&in_memory.to_jsonl()).expect("parse"),
        in_memory
    );

    // The schema, as any JSON reader sees it.
    let text = std::fs::read_to_string(&path).expect("read");
    let mut last_time = 0;
    for line in text.lines() {
        let v: serde_json::Value = serde_json::from_str(line).expect("a JSON object a line");
        for field in ["process", "type", "f", "key", "value", "time_ns"] {
            assert!(v.get(field).is_some(), "{field} missing: {line}");
        }
        let time = v["time_ns"].as_u64().expect("time_ns is a u64");
        assert!(time >= last_time, "file order is time order: {line}");
        last_time = time;
        match (v["type"].as_str(), v["f"].as_str()) {
            (Some("invoke"), Some("read" | "delete")) => assert!(v["value"].is_null(), "{line}"),
            (_, Some("write")) => assert!(v["value"].is_string(), "{line}"),
            (_, Some("cas")) => assert_eq!(v["value"].as_array().map(Vec::len), Some(2), "{line}"),
            (Some("fail" | "info"), _) => assert!(v["error"].is_string(), "{line}"),
            _ => {}
        }
    }
    let first_cas_fail = text
        .lines()
        .find(|l| l.contains(r#""type":"fail""#))
        .expect("a failed cas");
    assert!(
        first_cas_fail.contains(r#""value":[null,"#),
        "{first_cas_fail}"
    );

    let report = check(&from_file);
    println!("{report}");
    assert!(report.is_linearizable(), "{report}");
    assert_eq!(report.summary.keys, 4);
    assert_eq!(report.summary.counts(Func::Read).open, 4);
    assert_eq!(report.summary.counts(Func::Write).info, 4);
    assert_eq!(report.summary.counts(Func::Cas).fail, 100);
}

#[test]
fn hand_written_json_lines_parse_and_check() {
    // The example of the module docs, completed by a read of the cas's new value.
    let text = r#"
{"process":3,"type":"invoke","f":"write","key":"k-7","value":"v-3-17","time_ns":1203344}
{"process":3,"type":"ok","f":"write","key":"k-7","value":"v-3-17","time_ns":1530021}
{"process":4,"type":"invoke","f":"read","key":"k-7","value":null,"time_ns":1600000}
{"process":4,"type":"ok","f":"read","key":"k-7","value":"v-3-17","time_ns":1700000}
{"process":5,"type":"invoke","f":"cas","key":"k-7","value":["v-3-17","v-5-2"],"time_ns":1800000}
{"process":5,"type":"info","f":"cas","key":"k-7","value":["v-3-17","v-5-2"],"time_ns":2900000,"error":"deadline exceeded"}
{"process":4,"type":"invoke","f":"read","key":"k-7","time_ns":3000000}
{"process":4,"type":"ok","f":"read","key":"k-7","value":"v-5-2","time_ns":3100000}
"#;
    let history = History::from_jsonl(text).expect("parse");
    assert_eq!(
        history.events[4].value,
        Value::Cas(Some("v-3-17".into()), "v-5-2".into())
    );
    assert_eq!(
        history.events[6].value,
        Value::Nil,
        "a missing value is null"
    );
    let report = check(&history);
    println!("{report}");
    assert!(report.is_linearizable());

    match History::from_jsonl("{\"process\":1}\n") {
        Err(HistoryError::Parse { line: 1, .. }) => {}
        other => panic!("expected a parse error, got {other:?}"),
    }
}

// ----- randomized -----------------------------------------------------------------------------

/// splitmix64: deterministic, seedable, no dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn chance(&mut self, percent: u64) -> bool {
        self.next() % 100 < percent
    }
}

/// What a simulated operation returned when it took effect.
#[derive(Clone)]
enum SimResult {
    Read(Option<String>),
    Done,
    CompareFailed,
}

/// Applies `op` atomically to a simulated register.
fn apply(register: &mut Option<String>, op: &Op) -> SimResult {
    match op {
        Op::Read => SimResult::Read(register.clone()),
        Op::Write(v) => {
            *register = Some(v.clone());
            SimResult::Done
        }
        Op::Delete => {
            *register = None;
            SimResult::Done
        }
        Op::Cas { expected, new } => {
            if register == expected {
                *register = Some(new.clone());
                SimResult::Done
            } else {
                SimResult::CompareFailed
            }
        }
    }
}

/// A linearizable history by construction: `clients` concurrent clients on `keys` keys, each
/// operation taking effect atomically at a random moment between its invocation and its
/// completion; some time out (info) before or after taking effect, and those that had not yet
/// taken effect may do so at any later moment, or never; some clients vanish mid-operation.
/// `timeouts`: the percent chance, each time a client with an operation in flight is picked,
/// that it gives up on it.
fn simulate(seed: u64, keys: usize, clients: usize, ops: usize, timeouts: u64) -> History {
    let mut rng = Rng(seed);
    let recorder = Recorder::in_memory();
    let mut registers: Vec<Option<String>> = vec![None; keys];
    let mut stored: Vec<Vec<String>> = vec![Vec::new(); keys];
    struct Client {
        p: support::history::Process,
        pending: Option<(usize, Op, Option<SimResult>)>,
    }
    let mut clients: Vec<Client> = (0..clients)
        .map(|_| Client {
            p: recorder.process(),
            pending: None,
        })
        .collect();
    // Operations whose client gave up before they took effect; they may still.
    let mut zombies: Vec<(usize, Op)> = Vec::new();
    let (mut invoked, mut fresh) = (0, 0);
    loop {
        if !zombies.is_empty() && rng.chance(3) {
            let (key, op) = zombies.swap_remove(rng.below(zombies.len()));
            apply(&mut registers[key], &op);
        }
        if invoked >= ops && clients.iter().all(|c| c.pending.is_none()) {
            break;
        }
        let pick = rng.below(clients.len());
        let c = &mut clients[pick];
        match c.pending.take() {
            None if invoked < ops => {
                let key = rng.below(keys);
                fresh += 1;
                let value = format!("v{fresh}");
                let op = match rng.below(20) {
                    0..=6 => Op::Read,
                    7..=12 => Op::Write(value),
                    13..=17 => {
                        let expected = match rng.below(10) {
                            0..=5 => registers[key].clone(),
                            6..=7 if !stored[key].is_empty() => {
                                Some(stored[key][rng.below(stored[key].len())].clone())
                            }
                            _ => None,
                        };
                        Op::Cas {
                            expected,
                            new: value,
                        }
                    }
                    _ => Op::Delete,
                };
                if let Some(v) = op.stored_value().map(str::to_owned) {
                    stored[key].push(v);
                }
                c.p.invoke(format!("key-{key}"), op.clone());
                c.pending = Some((key, op, None));
                invoked += 1;
            }
            None => {}
            Some((key, op, None)) => {
                if rng.chance(50) {
                    let result = apply(&mut registers[key], &op);
                    c.pending = Some((key, op, Some(result)));
                } else if rng.chance(timeouts) {
                    c.p.info("timed out before taking effect");
                    if op != Op::Read {
                        zombies.push((key, op));
                    }
                } else if rng.chance(1) {
                    // The client vanishes: its operation stays in flight in the history.
                    c.p = recorder.process();
                    if op != Op::Read {
                        zombies.push((key, op));
                    }
                } else {
                    c.pending = Some((key, op, None));
                }
            }
            Some((key, op, Some(result))) => {
                if rng.chance(timeouts) {
                    c.p.info("timed out after taking effect");
                } else if rng.chance(70) {
                    match result {
                        SimResult::Read(v) => c.p.ok_read(v),
                        SimResult::Done => c.p.ok(),
                        SimResult::CompareFailed => c.p.fail("compare failed"),
                    }
                } else {
                    c.pending = Some((key, op, Some(result)));
                }
            }
        }
    }
    recorder.history()
}

/// One operation of a history, for picking mutations: event indices of its invocation and
/// completion.
struct Span {
    key: String,
    op: Op,
    invoked: usize,
    completed: Option<(usize, EventType)>,
}

fn spans(history: &History) -> Vec<Span> {
    let mut spans = Vec::new();
    let mut open: HashMap<u64, usize> = HashMap::new();
    for (i, e) in history.events.iter().enumerate() {
        if e.kind == EventType::Invoke {
            let op = match (&e.f, &e.value) {
                (Func::Read, _) => Op::Read,
                (Func::Delete, _) => Op::Delete,
                (Func::Write, Value::One(v)) => Op::Write(v.clone()),
                (Func::Cas, Value::Cas(x, n)) => Op::Cas {
                    expected: x.clone(),
                    new: n.clone(),
                },
                _ => unreachable!("a well-formed invocation"),
            };
            open.insert(e.process, spans.len());
            spans.push(Span {
                key: e.key.clone(),
                op,
                invoked: i,
                completed: None,
            });
        } else if let Some(s) = open.remove(&e.process) {
            spans[s].completed = Some((i, e.kind));
        }
    }
    spans
}

fn ok_end(span: &Span) -> Option<usize> {
    match span.completed {
        Some((i, EventType::Ok)) => Some(i),
        _ => None,
    }
}

/// For an ok read, a value that is certainly stale at its invocation: written by an
/// acknowledged write W1 that completed before an acknowledged W2 was invoked, W2 having
/// completed before the read was invoked. Values are unique, so nothing can bring it back.
fn stale_value_for(spans: &[Span], read: &Span) -> Option<String> {
    let same_key = || spans.iter().filter(|s| s.key == read.key);
    let w2_invoked = same_key()
        .filter(|s| s.op != Op::Read && ok_end(s).is_some_and(|end| end < read.invoked))
        .map(|s| s.invoked)
        .max()?;
    same_key()
        .filter(|s| ok_end(s).is_some_and(|end| end < w2_invoked))
        .find_map(|s| s.op.stored_value().map(str::to_owned))
}

fn set_read_value(history: &mut History, event: usize, value: Option<String>) {
    history.events[event].value = value.map_or(Value::Nil, Value::One);
}

#[test]
fn randomized_linearizable_histories_pass_and_stale_reads_fail() {
    let started = Instant::now();
    let (mut histories, mut ops, mut stale_checked, mut random_caught, mut random_tried) =
        (0, 0, 0, 0, 0);
    for seed in 0..150u64 {
        let keys = 1 + (seed % 3) as usize;
        let clients = 2 + (seed % 5) as usize;
        let history = simulate(seed, keys, clients, 120, 5);
        let report = check(&history);
        assert!(
            report.is_linearizable() && report.summary.unknown == 0,
            "seed {seed}: a simulated register's history must pass:\n{report}\n{}",
            history.to_jsonl()
        );
        histories += 1;
        ops += report.summary.operations;

        let spans = spans(&history);
        let reads: Vec<&Span> = spans
            .iter()
            .filter(|s| s.op == Op::Read && ok_end(s).is_some())
            .collect();
        let mut rng = Rng(seed ^ 0xdead_beef);

        // Constructed: a read changed to a value certainly overwritten before it began.
        if let Some((read, stale)) = reads
            .iter()
            .find_map(|r| stale_value_for(&spans, r).map(|v| (r, v)))
        {
            let mut mutated = history.clone();
            let end = ok_end(read).expect("an ok read");
            set_read_value(&mut mutated, end, Some(stale));
            let report = check(&mutated);
            assert!(
                !report.is_linearizable(),
                "seed {seed}: a stale read must fail:\n{}",
                mutated.to_jsonl()
            );
            stale_checked += 1;
        }

        // Random: any other value that key ever held (or nil) — usually, not always, wrong.
        if !reads.is_empty() {
            let read = reads[rng.below(reads.len())];
            let end = ok_end(read).expect("an ok read");
            let mut candidates: Vec<Option<String>> = spans
                .iter()
                .filter(|s| s.key == read.key)
                .filter_map(|s| s.op.stored_value().map(str::to_owned).map(Some))
                .collect();
            candidates.push(None);
            candidates.retain(|c| {
                *c != match &history.events[end].value {
                    Value::One(v) => Some(v.clone()),
                    _ => None,
                }
            });
            let mut mutated = history.clone();
            set_read_value(
                &mut mutated,
                end,
                candidates[rng.below(candidates.len())].clone(),
            );
            random_tried += 1;
            if !check(&mutated).is_linearizable() {
                random_caught += 1;
            }
        }
    }
    println!(
        "{histories} simulated histories ({ops} operations) passed; {stale_checked} constructed \
         stale reads all failed; random one-read mutations failed {random_caught}/{random_tried}; \
         {:.1?}",
        started.elapsed()
    );
    assert!(
        stale_checked >= 100,
        "too few constructed cases: {stale_checked}"
    );
    assert!(
        random_caught * 2 > random_tried,
        "random mutations should mostly fail: {random_caught}/{random_tried}"
    );
}

#[test]
fn timing_of_a_few_hundred_operations_on_one_key() {
    // About one operation in ten ends in a timeout here, far more than a run without faults;
    // timeouts are what make the search expensive.
    for (clients, ops) in [(3, 300), (5, 300), (8, 400), (8, 200)] {
        let history = simulate(7 + clients as u64 + ops as u64, 1, clients, ops, 5);
        let started = Instant::now();
        let report = check(&history);
        let valid = started.elapsed();
        assert!(
            report.is_linearizable() && report.summary.unknown == 0,
            "{report}"
        );
        let counts = |f| report.summary.counts(f);
        let timeouts: usize = Func::ALL
            .iter()
            .map(|&f| counts(f).info + counts(f).open)
            .sum();
        let mut line = format!(
            "{clients} clients, {} operations ({timeouts} timed out) on one key: linearizable in \
             {valid:.1?} ({} steps)",
            report.summary.operations, report.keys[0].steps
        );

        // A stale read planted late in the history: refuting it is the expensive kind of search
        // (every alternative must be exhausted), so only the shorter histories are refuted
        // here; the longest one would take some 10 s unoptimized.
        let spans = spans(&history);
        let planted = spans
            .iter()
            .rev()
            .filter(|r| r.op == Op::Read)
            .find_map(|r| Some((ok_end(r)?, stale_value_for(&spans, r)?)));
        if let Some((end, stale)) = planted
            && ops <= 300
        {
            let mut mutated = history.clone();
            set_read_value(&mut mutated, end, Some(stale));
            let started = Instant::now();
            let report = check(&mutated);
            assert!(!report.is_linearizable(), "{report}");
            line += &format!(
                "; with a stale read planted: refuted and shrunk in {:.1?} ({} steps)",
                started.elapsed(),
                report.keys[0].steps
            );
        }
        println!("{line}");
    }
}

#[test]
fn pruning_unobservable_timeouts_changes_no_verdict() {
    // Many timeouts on short histories, where the unpruned search is affordable: the verdict
    // with and without pruning must agree, on the histories and on stale-read mutations.
    let plain = CheckOptions {
        reduce: false,
        max_steps: 200_000,
        shrink: false,
        ..CheckOptions::default()
    };
    let (mut compared, mut violations, mut too_long) = (0, 0, 0);
    for seed in 0..250u64 {
        let history = simulate(1_000 + seed, 1, 2 + (seed % 4) as usize, 36, 20);
        let spans = spans(&history);
        let mut variants = vec![history.clone()];
        for read in spans.iter().filter(|s| s.op == Op::Read) {
            if let (Some(end), Some(stale)) = (ok_end(read), stale_value_for(&spans, read)) {
                let mut mutated = history.clone();
                set_read_value(&mut mutated, end, Some(stale));
                variants.push(mutated);
                break;
            }
        }
        // And a read of nil where it saw a value: sometimes possible (a delete), often not.
        if let Some(read) = spans
            .iter()
            .find(|s| s.op == Op::Read && ok_end(s).is_some())
        {
            let mut mutated = history.clone();
            set_read_value(&mut mutated, ok_end(read).expect("ok"), None);
            variants.push(mutated);
        }
        for variant in variants {
            let pruned = check(&variant);
            let unpruned = variant.check(&plain).expect("well-formed");
            if unpruned.summary.unknown > 0 {
                // Exactly what pruning is for; nothing to compare.
                too_long += 1;
                continue;
            }
            assert_eq!(
                pruned.keys[0].verdict == Verdict::Linearizable,
                unpruned.keys[0].verdict == Verdict::Linearizable,
                "seed {seed}: pruning changed the verdict:\n{pruned}\n---\n{unpruned}\n{}",
                variant.to_jsonl()
            );
            compared += 1;
            violations += pruned.summary.violations;
        }
    }
    println!(
        "{compared} histories, {violations} of them not linearizable: same verdicts with and \
         without pruning ({too_long} more too long to check unpruned)"
    );
    assert!(
        violations > 50,
        "the mutations should give violations to compare"
    );
    assert!(compared > 500, "too few compared: {compared}");
}

// ----- the budget -----------------------------------------------------------------------------

/// Many concurrent writes that never complete, then a read of a value nobody wrote: to refute
/// it the search must try every subset and order of the open writes.
fn pathological(open_writes: u64) -> Script {
    let mut s = Script::new();
    for p in 0..open_writes {
        s.invoke(p, w(&format!("v{p}"))).info(p);
    }
    for p in 0..open_writes {
        s.reads(100 + p, Some(&format!("v{p}")));
    }
    s.reads(200, Some("never written"));
    s
}

#[test]
fn budget_reports_unknown_instead_of_hanging() {
    // 16 open writes read in order, then an impossible read.
    let history = pathological(16).history();
    let options = CheckOptions {
        max_steps: 2_000,
        ..CheckOptions::default()
    };
    let started = Instant::now();
    let report = history.check(&options).expect("well-formed");
    println!("{report}\n({:.1?})", started.elapsed());
    assert_eq!(report.summary.unknown, 1, "{report}");
    assert!(report.is_linearizable(), "unknown is not a violation");
    let unknown = report.unknown().next().expect("an unknown key");
    assert!(
        matches!(&unknown.verdict, Verdict::Unknown { reason } if reason.contains("too long")),
        "{unknown:?}"
    );
    assert!(report.to_string().contains("1 unknown"), "{report}");

    // The time limit alone stops it too.
    let options = CheckOptions {
        max_steps: u64::MAX,
        max_time: Duration::from_millis(20),
        ..CheckOptions::default()
    };
    let started = Instant::now();
    let report = pathological(24)
        .history()
        .check(&options)
        .expect("well-formed");
    let elapsed = started.elapsed();
    println!("{report}\n({elapsed:.1?})");
    assert_eq!(report.summary.unknown, 1, "{report}");
    assert!(elapsed < Duration::from_secs(5), "{elapsed:?}");

    // With enough budget the small one is decided.
    let report = check(&pathological(6).history());
    assert_eq!(report.summary.violations, 1, "{report}");
}
