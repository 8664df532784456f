//! The KV state machine against a plain `BTreeMap` model: random sequences of Put, Delete,
//! CompareAndSwap, Get and paged Scan must give the same answers on both, and snapshotting and
//! restoring at any point must not change a single answer after it. Frozen views (the snapshots
//! the driver writes off its loop) start and finish at random points of the sequences: every
//! answer must still match the model while writes go to the overlay, each view must snapshot to
//! the state at its index, and the overlay must be folded back once the views are gone.

use std::collections::BTreeMap;
use std::ops::Bound;

use bytes::Bytes;
use proptest::prelude::*;
use raftkv_node::kv::{
    ApplyResult, Command, FrozenKv, GetResponse, KvStateMachine, Op, SCAN_DEFAULT_LIMIT,
    SCAN_MAX_BYTES, SCAN_MAX_LIMIT, ScanItem, ScanResponse, SessionConfig, WriteResponse,
};

/// Which version a CompareAndSwap expects, resolved against the model when the step runs, so
/// that random sequences hit both outcomes often.
#[derive(Clone, Debug)]
enum Expect {
    /// 0: the key must be absent.
    Absent,
    /// The key's current version: succeeds.
    Current,
    /// One more than the current version: fails.
    CurrentPlusOne,
    /// Any small number.
    Fixed(u64),
}

#[derive(Clone, Debug)]
enum Step {
    Put {
        key: Vec<u8>,
        value: Vec<u8>,
        session: bool,
    },
    Delete {
        key: Vec<u8>,
        session: bool,
    },
    Cas {
        key: Vec<u8>,
        expect: Expect,
        value: Vec<u8>,
        session: bool,
    },
    Noop,
    Get {
        key: Vec<u8>,
    },
    Scan {
        start: Vec<u8>,
        end: Vec<u8>,
        limit: u32,
    },
}

/// Short keys over a tiny alphabet (with 0x00 and 0xff, the edges of byte order), so that
/// sequences revisit keys and scan bounds fall on, between and around them.
fn key() -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(prop::sample::select(vec![0x00u8, b'a', b'b', 0xff]), 0..4)
}

fn value() -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(any::<u8>(), 0..8)
}

fn expect() -> impl Strategy<Value = Expect> {
    prop_oneof![
        Just(Expect::Absent),
        Just(Expect::Current),
        Just(Expect::CurrentPlusOne),
        (0u64..6).prop_map(Expect::Fixed),
    ]
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        4 => (key(), value(), any::<bool>()).prop_map(|(key, value, session)| Step::Put { key, value, session }),
        2 => (key(), any::<bool>()).prop_map(|(key, session)| Step::Delete { key, session }),
        3 => (key(), expect(), value(), any::<bool>())
            .prop_map(|(key, expect, value, session)| Step::Cas { key, expect, value, session }),
        1 => Just(Step::Noop),
        2 => key().prop_map(|key| Step::Get { key }),
        2 => (key(), key(), prop_oneof![Just(0u32), 1u32..4, Just(u32::MAX)])
            .prop_map(|(start, end, limit)| Step::Scan { start, end, limit }),
    ]
}

/// The reference: a map from key to (value, version) and the last index.
#[derive(Default)]
struct Model {
    map: BTreeMap<Vec<u8>, (Vec<u8>, u64)>,
    index: u64,
}

impl Model {
    fn version(&self, key: &[u8]) -> u64 {
        self.map.get(key).map_or(0, |(_, v)| *v)
    }

    fn write(&mut self, op: &Op) -> WriteResponse {
        self.index += 1;
        let index = self.index;
        match op {
            Op::Put { key, value } => {
                self.map.insert(key.to_vec(), (value.to_vec(), index));
                WriteResponse::Put { version: index }
            }
            Op::Delete { key } => match self.map.remove(key.as_ref()) {
                Some((_, version)) => WriteResponse::Delete {
                    deleted: true,
                    prev_version: version,
                },
                None => WriteResponse::Delete {
                    deleted: false,
                    prev_version: 0,
                },
            },
            Op::CompareAndSwap {
                key,
                expected_version,
                value,
            } => {
                let current = self.map.get(key.as_ref()).cloned();
                let version = current.as_ref().map_or(0, |(_, v)| *v);
                if version == *expected_version {
                    self.map.insert(key.to_vec(), (value.to_vec(), index));
                    WriteResponse::CompareAndSwap {
                        succeeded: true,
                        version: index,
                        current_value: Bytes::new(),
                    }
                } else {
                    WriteResponse::CompareAndSwap {
                        succeeded: false,
                        version,
                        current_value: Bytes::from(current.map(|(v, _)| v).unwrap_or_default()),
                    }
                }
            }
        }
    }

    fn get(&self, key: &[u8]) -> GetResponse {
        match self.map.get(key) {
            Some((value, version)) => GetResponse {
                found: true,
                value: Bytes::from(value.clone()),
                version: *version,
            },
            None => GetResponse {
                found: false,
                value: Bytes::new(),
                version: 0,
            },
        }
    }

    /// Every item of `[start, end)` (empty end: unbounded).
    fn range(&self, start: &[u8], end: &[u8]) -> Vec<ScanItem> {
        if !end.is_empty() && start >= end {
            return Vec::new();
        }
        let upper = if end.is_empty() {
            Bound::Unbounded
        } else {
            Bound::Excluded(end.to_vec())
        };
        self.map
            .range((Bound::Included(start.to_vec()), upper))
            .map(|(k, (v, version))| ScanItem {
                key: Bytes::from(k.clone()),
                value: Bytes::from(v.clone()),
                version: *version,
            })
            .collect()
    }
}

/// What one step answered, to compare runs.
#[derive(Debug, PartialEq, Eq)]
enum Answer {
    Write(ApplyResult),
    Noop,
    Get(GetResponse),
    Scan(Vec<ScanResponse>),
}

/// Pages through `[start, end)` with `limit`, following `resume_key`, checking each page against
/// the model's range as it goes.
fn scan_all(
    sm: &KvStateMachine,
    model: &Model,
    start: &[u8],
    end: &[u8],
    limit: u32,
) -> Vec<ScanResponse> {
    let page_size = match limit {
        0 => SCAN_DEFAULT_LIMIT,
        n => n.min(SCAN_MAX_LIMIT),
    } as usize;
    let expected = model.range(start, end);
    let mut pages = Vec::new();
    let mut seen = Vec::new();
    let mut from = Bytes::copy_from_slice(start);
    loop {
        let page = sm.scan(&from, end, limit);
        let rest = &expected[seen.len()..];
        let want = rest.len().min(page_size);
        assert_eq!(page.items, rest[..want], "page from {from:?}");
        assert_eq!(page.more, rest.len() > want, "`more` of page from {from:?}");
        seen.extend(page.items.iter().cloned());
        let next = page.resume_key();
        pages.push(page);
        match next {
            Some(next) => from = next,
            None => break,
        }
    }
    assert_eq!(seen, expected);
    pages
}

/// Runs one step on the state machine (checking it against the model) and returns its answer.
fn run(sm: &mut KvStateMachine, model: &mut Model, seq: &mut u64, step: &Step) -> Answer {
    let session_command = |op: Op, session: bool, seq: &mut u64| {
        if session {
            *seq += 1;
            Command::with_session(op, "model-client", *seq)
        } else {
            Command::new(op)
        }
    };
    let command = match step {
        Step::Put {
            key,
            value,
            session,
        } => session_command(
            Op::Put {
                key: Bytes::from(key.clone()),
                value: Bytes::from(value.clone()),
            },
            *session,
            seq,
        ),
        Step::Delete { key, session } => session_command(
            Op::Delete {
                key: Bytes::from(key.clone()),
            },
            *session,
            seq,
        ),
        Step::Cas {
            key,
            expect,
            value,
            session,
        } => {
            let expected_version = match expect {
                Expect::Absent => 0,
                Expect::Current => model.version(key),
                Expect::CurrentPlusOne => model.version(key) + 1,
                Expect::Fixed(v) => *v,
            };
            session_command(
                Op::CompareAndSwap {
                    key: Bytes::from(key.clone()),
                    expected_version,
                    value: Bytes::from(value.clone()),
                },
                *session,
                seq,
            )
        }
        Step::Noop => {
            model.index += 1;
            sm.apply_noop(model.index).expect("in order");
            return Answer::Noop;
        }
        Step::Get { key } => {
            let got = sm.get(key);
            assert_eq!(got, model.get(key), "get {key:?}");
            return Answer::Get(got);
        }
        Step::Scan { start, end, limit } => {
            return Answer::Scan(scan_all(sm, model, start, end, *limit));
        }
    };
    let expected = model.write(&command.op);
    let got = sm.apply(model.index, &command).expect("in order");
    assert_eq!(got, Ok(expected), "{command:?}");
    assert_eq!(sm.applied_index(), model.index);
    Answer::Write(got)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn random_operations_match_a_btreemap_model(steps in prop::collection::vec(step(), 1..120)) {
        let mut sm = KvStateMachine::new();
        let mut model = Model::default();
        let mut seq = 0;
        for step in &steps {
            run(&mut sm, &mut model, &mut seq, step);
        }
        // A final full scan, one item per page, walks every key through resume_key.
        scan_all(&sm, &model, b"", b"", 1);
        prop_assert_eq!(sm.len(), model.map.len());
    }

    #[test]
    fn snapshot_restore_and_continue_matches_never_snapshotting(
        steps in prop::collection::vec(step(), 1..100),
        split in any::<prop::sample::Index>(),
    ) {
        let split = split.index(steps.len() + 1);
        let mut straight = KvStateMachine::new();
        let mut model_a = Model::default();
        let mut seq_a = 0;
        let answers_a: Vec<Answer> =
            steps.iter().map(|s| run(&mut straight, &mut model_a, &mut seq_a, s)).collect();

        let mut first = KvStateMachine::new();
        let mut model_b = Model::default();
        let mut seq_b = 0;
        let mut answers_b: Vec<Answer> =
            steps[..split].iter().map(|s| run(&mut first, &mut model_b, &mut seq_b, s)).collect();
        let bytes = first.snapshot();
        let mut restored = KvStateMachine::restore(&bytes).expect("restore own snapshot");
        prop_assert_eq!(&restored, &first);
        prop_assert_eq!(restored.snapshot(), bytes);
        drop(first);
        answers_b.extend(steps[split..].iter().map(|s| run(&mut restored, &mut model_b, &mut seq_b, s)));

        prop_assert_eq!(answers_a, answers_b);
        prop_assert_eq!(restored.snapshot(), straight.snapshot());
        prop_assert_eq!(restored, straight);
    }
}

/// A step of a sequence with snapshots in it: an operation, a freeze (a snapshot starts) or the
/// end of one of the running snapshots (picked by the index).
#[derive(Clone, Debug)]
enum Event {
    Op(Step),
    Freeze,
    Finish(prop::sample::Index),
}

fn event() -> impl Strategy<Value = Event> {
    prop_oneof![
        12 => step().prop_map(Event::Op),
        1 => Just(Event::Freeze),
        1 => any::<prop::sample::Index>().prop_map(Event::Finish),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// `sm` is frozen at random points while `plain` never is: the answers match the model, each
    /// view's snapshot is the bytes `plain` gave at the view's index, whenever the view is
    /// written (views outlive many later writes, and several may be alive at once, which makes
    /// the next freeze copy the base), and after the last view is gone the next write folds the
    /// overlay back.
    #[test]
    fn frozen_views_snapshot_the_state_at_their_index(
        events in prop::collection::vec(event(), 1..160),
    ) {
        let mut sm = KvStateMachine::new();
        let mut plain = KvStateMachine::new();
        let mut model = Model::default();
        let mut model_plain = Model::default();
        let (mut seq, mut seq_plain) = (0, 0);
        let mut views: Vec<(FrozenKv, Vec<u8>)> = Vec::new();
        for event in &events {
            match event {
                Event::Op(step) => {
                    let answer = run(&mut sm, &mut model, &mut seq, step);
                    let answer_plain = run(&mut plain, &mut model_plain, &mut seq_plain, step);
                    prop_assert_eq!(answer, answer_plain);
                    prop_assert_eq!(sm.len(), model.map.len());
                    if views.is_empty() && matches!(step, Step::Put { .. } | Step::Delete { .. }) {
                        prop_assert!(!sm.has_overlay(), "a write with no view alive folds the overlay");
                    }
                }
                Event::Freeze => {
                    let view = sm.freeze();
                    prop_assert_eq!(view.applied_index(), plain.applied_index());
                    views.push((view, plain.snapshot()));
                }
                Event::Finish(which) => {
                    if !views.is_empty() {
                        let (view, expected) = views.remove(which.index(views.len()));
                        prop_assert_eq!(view.snapshot(), expected);
                    }
                }
            }
        }
        for (view, expected) in views.drain(..) {
            prop_assert_eq!(view.snapshot(), expected);
        }
        scan_all(&sm, &model, b"", b"", 1);
        prop_assert_eq!(sm.snapshot(), plain.snapshot());
        prop_assert_eq!(&sm, &plain);
        let restored = KvStateMachine::restore(&sm.snapshot()).expect("restore own snapshot");
        prop_assert_eq!(restored, plain);
    }
}

/// Commands from several sessions with small seqs over a tiny session table: new writes, retries,
/// reused seqs, seqs below the window, evictions and tombstones, all in one random mix.
fn session_step() -> impl Strategy<Value = (u8, u64, u8, u8)> {
    // (client, seq, key, value): few values per key so that same-seq requests often coincide.
    (0u8..4, 1u64..10, 0u8..3, 0u8..2)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn snapshots_carry_sessions_and_tombstones(
        steps in prop::collection::vec(session_step(), 1..80),
        split in any::<prop::sample::Index>(),
    ) {
        let config = SessionConfig { window: 3, max_sessions: 2, max_tombstones: 1 };
        let command = |&(client, seq, key, value): &(u8, u64, u8, u8)| {
            let op = if value == 0 {
                Op::Delete { key: Bytes::from(vec![key]) }
            } else {
                Op::Put { key: Bytes::from(vec![key]), value: Bytes::from(vec![value]) }
            };
            Command::with_session(op, format!("client-{client}"), seq)
        };
        let split = split.index(steps.len() + 1);
        let mut straight = KvStateMachine::with_config(config);
        let mut resumed = KvStateMachine::with_config(config);
        for (i, step) in steps.iter().enumerate() {
            let index = i as u64 + 1;
            if i == split {
                resumed = KvStateMachine::restore(&resumed.snapshot()).expect("restore");
                prop_assert_eq!(&resumed, &straight);
            }
            let a = straight.apply(index, &command(step)).expect("in order");
            let b = resumed.apply(index, &command(step)).expect("in order");
            prop_assert_eq!(a, b, "step {} {:?}", i, step);
        }
        prop_assert_eq!(resumed.snapshot(), straight.snapshot());
        prop_assert_eq!(resumed.session_config(), config);
    }
}

fn put(key: &[u8], value: Vec<u8>) -> Command {
    Command::new(Op::Put {
        key: Bytes::copy_from_slice(key),
        value: Bytes::from(value),
    })
}

#[test]
fn scan_stops_at_four_mebibytes_but_always_returns_one_item() {
    let mut sm = KvStateMachine::new();
    let mib = 1024 * 1024;
    for (i, key) in [b"a", b"b", b"c", b"d", b"e"].iter().enumerate() {
        sm.apply(i as u64 + 1, &put(*key, vec![7; mib]))
            .expect("in order")
            .expect("put");
    }
    // Three 1 MiB values plus keys fit in 4 MiB; a fourth would not.
    let page = sm.scan(b"", b"", 0);
    assert_eq!(page.items.len(), 3);
    assert!(page.more);
    let bytes: usize = page.items.iter().map(|i| i.key.len() + i.value.len()).sum();
    assert!(bytes <= SCAN_MAX_BYTES);
    let page = sm.scan(&page.resume_key().expect("more"), b"", 0);
    assert_eq!(page.items.len(), 2);
    assert!(!page.more);
    assert_eq!(page.resume_key(), None);

    // An item bigger than the budget on its own still comes back, alone.
    let mut big = KvStateMachine::new();
    big.apply(1, &put(b"k", vec![1; SCAN_MAX_BYTES + 1]))
        .expect("in order")
        .expect("put");
    big.apply(2, &put(b"l", vec![1]))
        .expect("in order")
        .expect("put");
    let page = big.scan(b"", b"", 10);
    assert_eq!(page.items.len(), 1);
    assert!(page.more);
}

/// The byte limit counts merged items: with a view alive, values written to the overlay and
/// values left in the base share one 4 MiB page, tombstoned keys take none of it, and the
/// resume key continues across both.
#[test]
fn scan_byte_limit_holds_across_base_and_overlay() {
    let mut sm = KvStateMachine::new();
    let mib = 1024 * 1024;
    for (i, key) in [b"a", b"c", b"e"].iter().enumerate() {
        sm.apply(i as u64 + 1, &put(*key, vec![7; mib]))
            .expect("in order")
            .expect("put");
    }
    let view = sm.freeze();
    for (i, key) in [b"b", b"d", b"f"].iter().enumerate() {
        sm.apply(i as u64 + 4, &put(*key, vec![8; mib]))
            .expect("in order")
            .expect("put");
    }
    let delete = Command::new(Op::Delete {
        key: Bytes::from_static(b"c"),
    });
    sm.apply(7, &delete).expect("in order").expect("delete");
    assert!(sm.has_overlay());
    let page = sm.scan(b"", b"", 0);
    let keys: Vec<&[u8]> = page.items.iter().map(|i| i.key.as_ref()).collect();
    assert_eq!(keys, [b"a", b"b", b"d"]);
    assert!(page.more);
    let page = sm.scan(&page.resume_key().expect("more"), b"", 0);
    let keys: Vec<&[u8]> = page.items.iter().map(|i| i.key.as_ref()).collect();
    assert_eq!(keys, [b"e", b"f"]);
    assert!(!page.more);
    assert_eq!(sm.len(), 5);
    // The view still holds the three keys of index 3.
    let frozen = KvStateMachine::restore(&view.snapshot()).expect("restore the view");
    assert_eq!(frozen.len(), 3);
    assert_eq!(frozen.applied_index(), 3);
}

#[test]
fn scan_limits_default_and_clamp() {
    let mut sm = KvStateMachine::new();
    let keys = SCAN_MAX_LIMIT as u64 + 5;
    for i in 0..keys {
        sm.apply(i + 1, &put(&i.to_be_bytes(), Vec::new()))
            .expect("in order")
            .expect("put");
    }
    let default = sm.scan(b"", b"", 0);
    assert_eq!(default.items.len(), SCAN_DEFAULT_LIMIT as usize);
    assert!(default.more);
    let clamped = sm.scan(b"", b"", SCAN_MAX_LIMIT + 1);
    assert_eq!(clamped.items.len(), SCAN_MAX_LIMIT as usize);
    assert!(clamped.more);
    let exact = sm.scan(&(keys - 3).to_be_bytes(), b"", 3);
    assert_eq!(exact.items.len(), 3);
    assert!(!exact.more, "the range ends exactly at the limit");
}

#[test]
fn empty_and_inverted_ranges_are_empty_not_a_panic() {
    let mut sm = KvStateMachine::new();
    sm.apply(1, &put(b"b", vec![1]))
        .expect("in order")
        .expect("put");
    assert_eq!(sm.scan(b"b", b"b", 0), ScanResponse::default());
    assert_eq!(sm.scan(b"c", b"a", 0), ScanResponse::default());
    assert_eq!(sm.scan(b"a", b"b", 0), ScanResponse::default());
    assert_eq!(sm.scan(b"a", b"b\0", 0).items.len(), 1);
    assert_eq!(sm.scan(b"", b"", 0).items.len(), 1);
}

#[test]
fn entries_must_come_in_log_order() {
    let mut sm = KvStateMachine::new();
    sm.apply(3, &put(b"k", vec![1]))
        .expect("in order")
        .expect("put");
    let before = sm.clone();
    let err = sm.apply(3, &put(b"k", vec![2])).expect_err("same index");
    assert_eq!((err.index, err.applied), (3, 3));
    assert!(sm.apply(2, &put(b"k", vec![2])).is_err());
    assert!(sm.apply_noop(3).is_err());
    assert_eq!(sm, before, "a refused entry changes nothing");
    sm.apply_noop(4).expect("in order");
    assert_eq!(sm.applied_index(), 4);
    assert_eq!(sm.get(b"k").version, 3);
}

#[test]
fn delete_resets_the_version_and_cas_zero_means_absent() {
    let mut sm = KvStateMachine::new();
    let cas = |expected_version, value: &'static [u8]| {
        Command::new(Op::CompareAndSwap {
            key: Bytes::from_static(b"k"),
            expected_version,
            value: Bytes::from_static(value),
        })
    };
    let del = Command::new(Op::Delete {
        key: Bytes::from_static(b"k"),
    });
    let ok = |r: Result<ApplyResult, _>| r.expect("in order").expect("no session error");
    assert_eq!(
        ok(sm.apply(1, &del)),
        WriteResponse::Delete {
            deleted: false,
            prev_version: 0
        }
    );
    assert_eq!(
        ok(sm.apply(2, &cas(0, b"x"))),
        WriteResponse::CompareAndSwap {
            succeeded: true,
            version: 2,
            current_value: Bytes::new()
        }
    );
    assert_eq!(
        ok(sm.apply(3, &cas(0, b"y"))),
        WriteResponse::CompareAndSwap {
            succeeded: false,
            version: 2,
            current_value: Bytes::from_static(b"x")
        }
    );
    assert_eq!(
        ok(sm.apply(4, &del)),
        WriteResponse::Delete {
            deleted: true,
            prev_version: 2
        }
    );
    let gone = sm.get(b"k");
    assert!(!gone.found);
    assert_eq!(gone.version, 0);
    assert_eq!(
        ok(sm.apply(5, &cas(2, b"z"))),
        WriteResponse::CompareAndSwap {
            succeeded: false,
            version: 0,
            current_value: Bytes::new()
        }
    );
    assert!(matches!(
        ok(sm.apply(6, &cas(0, b"z"))),
        WriteResponse::CompareAndSwap {
            succeeded: true,
            version: 6,
            ..
        }
    ));
}
