//! Exactly-once writes: retries of a `(client_id, seq)` return the recorded result and apply
//! nothing; a reused seq is refused; sessions expire by window and by LRU eviction exactly as the
//! `kv` module docs say.

use bytes::Bytes;
use proptest::prelude::*;
use raftkv_node::kv::{
    ApplyResult, Command, CommandError, ErrorCode, Expiry, KvStateMachine, MAX_CLIENT_ID_LEN, Op,
    ScanResponse, SessionConfig, WriteResponse,
};

fn put(key: &str, value: &str) -> Op {
    Op::Put {
        key: Bytes::copy_from_slice(key.as_bytes()),
        value: Bytes::copy_from_slice(value.as_bytes()),
    }
}

fn delete(key: &str) -> Op {
    Op::Delete {
        key: Bytes::copy_from_slice(key.as_bytes()),
    }
}

fn cas(key: &str, expected_version: u64, value: &str) -> Op {
    Op::CompareAndSwap {
        key: Bytes::copy_from_slice(key.as_bytes()),
        expected_version,
        value: Bytes::copy_from_slice(value.as_bytes()),
    }
}

/// Applies entries at consecutive indexes.
struct Log {
    sm: KvStateMachine,
    index: u64,
}

impl Log {
    fn new(config: SessionConfig) -> Self {
        Self {
            sm: KvStateMachine::with_config(config),
            index: 0,
        }
    }

    fn apply(&mut self, client: &str, seq: u64, op: Op) -> ApplyResult {
        self.index += 1;
        self.sm
            .apply(self.index, &Command::with_session(op, client, seq))
            .expect("in order")
    }

    fn ok(&mut self, client: &str, seq: u64, op: Op) -> WriteResponse {
        let index = self.index + 1;
        self.apply(client, seq, op)
            .unwrap_or_else(|e| panic!("entry {index}: {e}"))
    }

    fn expired(&mut self, client: &str, seq: u64, op: Op) -> Expiry {
        match self.apply(client, seq, op) {
            Err(CommandError::SessionExpired { expiry, .. }) => expiry,
            other => panic!("expected session expired, got {other:?}"),
        }
    }

    fn all(&self) -> ScanResponse {
        self.sm.scan(b"", b"", 0)
    }
}

fn small() -> SessionConfig {
    SessionConfig {
        window: 4,
        max_sessions: 2,
        max_tombstones: 2,
    }
}

#[test]
fn a_retried_put_returns_its_recorded_version_and_applies_nothing() {
    let mut log = Log::new(SessionConfig::default());
    assert_eq!(
        log.ok("c", 1, put("k", "v1")),
        WriteResponse::Put { version: 1 }
    );
    assert_eq!(
        log.ok("d", 1, put("k", "v2")),
        WriteResponse::Put { version: 2 }
    );
    let data = log.all();
    // The retry commits later (say, proposed again after a leader change): same answer, no write.
    assert_eq!(
        log.ok("c", 1, put("k", "v1")),
        WriteResponse::Put { version: 1 }
    );
    assert_eq!(log.all(), data);
    assert_eq!(log.sm.get(b"k").value, "v2");
    assert_eq!(log.sm.applied_index(), 3);
}

#[test]
fn retried_deletes_and_compare_and_swaps_return_their_recorded_results() {
    let mut log = Log::new(SessionConfig::default());
    log.ok("w", 1, put("k", "old"));
    let deleted = log.ok("c", 1, delete("k"));
    assert_eq!(
        deleted,
        WriteResponse::Delete {
            deleted: true,
            prev_version: 1
        }
    );
    let failed = log.ok("c", 2, cas("k", 1, "new"));
    assert_eq!(
        failed,
        WriteResponse::CompareAndSwap {
            succeeded: false,
            version: 0,
            current_value: Bytes::new()
        }
    );
    log.ok("w", 2, put("k", "later"));
    let data = log.all();
    // A retried delete would now delete "later"; a retried CAS would now see version 4.
    assert_eq!(log.ok("c", 1, delete("k")), deleted);
    assert_eq!(log.ok("c", 2, cas("k", 1, "new")), failed);
    assert_eq!(log.all(), data);

    let swapped = log.ok("c", 3, cas("k", 4, "mine"));
    assert_eq!(
        swapped,
        WriteResponse::CompareAndSwap {
            succeeded: true,
            version: 7,
            current_value: Bytes::new()
        }
    );
    log.ok("w", 3, put("k", "theirs"));
    assert_eq!(log.ok("c", 3, cas("k", 4, "mine")), swapped);
    assert_eq!(log.sm.get(b"k").value, "theirs");
}

#[test]
fn a_failed_compare_and_swap_replays_the_value_it_saw() {
    let mut log = Log::new(SessionConfig::default());
    log.ok("w", 1, put("k", "seen"));
    let failed = log.ok("c", 1, cas("k", 99, "x"));
    log.ok("w", 2, put("k", "changed"));
    assert_eq!(failed, log.ok("c", 1, cas("k", 99, "x")));
    assert_eq!(
        failed,
        WriteResponse::CompareAndSwap {
            succeeded: false,
            version: 1,
            current_value: Bytes::from_static(b"seen")
        }
    );
}

#[test]
fn a_seq_reused_for_a_different_request_is_invalid_argument() {
    let mut log = Log::new(SessionConfig::default());
    log.ok("c", 1, put("k", "v"));
    let data = log.all();
    for other in [put("k", "w"), put("j", "v"), delete("k"), cas("k", 0, "v")] {
        let err = log.apply("c", 1, other).expect_err("seq reuse");
        assert_eq!(
            err,
            CommandError::SeqReuse {
                client_id: "c".into(),
                seq: 1
            }
        );
        assert_eq!(err.code(), ErrorCode::InvalidArgument);
    }
    assert_eq!(log.all(), data);
    // The original is still answered.
    assert_eq!(
        log.ok("c", 1, put("k", "v")),
        WriteResponse::Put { version: 1 }
    );
}

#[test]
fn a_seq_below_the_window_is_aborted_as_session_expired() {
    let mut log = Log::new(small());
    for seq in 1..=6 {
        log.ok("c", seq, put("k", &seq.to_string()));
    }
    // Window 4, highest 6: seqs 3..=6 are remembered, 1 and 2 are not.
    assert_eq!(
        log.ok("c", 3, put("k", "3")),
        WriteResponse::Put { version: 3 }
    );
    let data = log.all();
    let err = log.apply("c", 2, put("k", "2")).expect_err("below window");
    assert_eq!(err.code(), ErrorCode::Aborted);
    assert!(err.to_string().starts_with("session expired"), "{err}");
    assert_eq!(
        err,
        CommandError::SessionExpired {
            client_id: "c".into(),
            seq: 2,
            expiry: Expiry::BelowWindow { oldest_kept: 3 }
        }
    );
    // Even a request never seen before: the session cannot know whether it was.
    assert_eq!(
        log.expired("c", 1, put("other", "x")),
        Expiry::BelowWindow { oldest_kept: 3 }
    );
    assert_eq!(log.all(), data);
}

#[test]
fn out_of_order_seqs_within_the_window_each_apply_once() {
    let mut log = Log::new(small());
    log.ok("c", 3, put("c", "3"));
    log.ok("c", 1, put("a", "1"));
    log.ok("c", 4, put("d", "4"));
    log.ok("c", 2, put("b", "2"));
    assert_eq!(log.all().items.len(), 4);
    let data = log.all();
    for seq in 1..=4 {
        let key = ["a", "b", "c", "d"][seq as usize - 1];
        log.ok("c", seq, put(key, &seq.to_string()));
    }
    assert_eq!(log.all(), data);
    // Gaps are fine: seq 7 is new, and with highest 7 seq 4 is still remembered.
    log.ok("c", 7, put("g", "7"));
    assert_eq!(
        log.ok("c", 4, put("d", "4")),
        WriteResponse::Put { version: 3 }
    );
    assert_eq!(
        log.expired("c", 3, put("c", "3")),
        Expiry::BelowWindow { oldest_kept: 4 }
    );
}

#[test]
fn the_least_recently_used_session_is_evicted_by_log_index() {
    let mut log = Log::new(small());
    log.ok("a", 1, put("a", "1"));
    log.ok("b", 1, put("b", "1"));
    // A retry counts as use: "a" is now more recent than "b".
    log.ok("a", 1, put("a", "1"));
    log.ok("c", 1, put("c", "1"));
    assert_eq!(log.sm.session_count(), 2);
    let data = log.all();
    assert_eq!(log.expired("b", 1, put("b", "1")), Expiry::Evicted);
    // A tombstone refuses every seq, new or old: the client must start a new session.
    assert_eq!(log.expired("b", 2, put("b", "2")), Expiry::Evicted);
    assert_eq!(log.all(), data);
    assert_eq!(
        log.ok("a", 1, put("a", "1")),
        WriteResponse::Put { version: 1 }
    );
    assert_eq!(
        log.ok("c", 1, put("c", "1")),
        WriteResponse::Put { version: 4 }
    );
}

#[test]
fn an_unknown_session_must_start_within_the_first_window() {
    let mut log = Log::new(small());
    assert_eq!(
        log.expired("late", 5, put("k", "v")),
        Expiry::Unknown { window: 4 }
    );
    assert!(log.all().items.is_empty());
    assert_eq!(log.sm.session_count(), 0);
    // A new client pipelining its first writes may see them commit in any order.
    log.ok("new", 4, put("k4", "v"));
    log.ok("new", 2, put("k2", "v"));
    log.ok("new", 1, put("k1", "v"));
    assert_eq!(log.sm.session_count(), 1);
}

#[test]
fn a_forgotten_tombstone_lets_the_id_start_over() {
    // The documented limit of bounded tombstones: with one tombstone, the second eviction
    // forgets the first evicted id, whose seq-1 retry then looks like a new session.
    let mut log = Log::new(SessionConfig {
        window: 4,
        max_sessions: 1,
        max_tombstones: 1,
    });
    log.ok("a", 1, put("k", "a"));
    log.ok("b", 1, put("k", "b")); // evicts a
    assert_eq!(log.expired("a", 1, put("k", "a")), Expiry::Evicted);
    log.ok("c", 1, put("k", "c")); // evicts b, forgets a's tombstone
    assert_eq!(log.expired("b", 1, put("k", "b")), Expiry::Evicted);
    assert_eq!(
        log.ok("a", 1, put("k", "a")),
        WriteResponse::Put { version: 6 }
    );
    // But a seq above the first window is still caught.
    log.ok("d", 1, put("k", "d"));
    log.ok("e", 1, put("k", "e"));
    assert_eq!(
        log.expired("a", 9, put("k", "a")),
        Expiry::Unknown { window: 4 }
    );
}

#[test]
fn an_empty_client_id_means_no_deduplication() {
    let mut sm = KvStateMachine::new();
    let cmd = Command::new(put("k", "v"));
    assert_eq!(sm.apply(1, &cmd), Ok(Ok(WriteResponse::Put { version: 1 })));
    assert_eq!(sm.apply(2, &cmd), Ok(Ok(WriteResponse::Put { version: 2 })));
    assert_eq!(sm.session_count(), 0);
}

#[test]
fn seq_zero_and_oversize_client_ids_are_invalid_arguments() {
    let mut log = Log::new(SessionConfig::default());
    let err = log.apply("c", 0, put("k", "v")).expect_err("seq 0");
    assert!(matches!(err, CommandError::InvalidSession { .. }));
    assert_eq!(err.code(), ErrorCode::InvalidArgument);
    let long = "x".repeat(MAX_CLIENT_ID_LEN + 1);
    let err = log.apply(&long, 1, put("k", "v")).expect_err("long id");
    assert_eq!(err.code(), ErrorCode::InvalidArgument);
    log.ok(&"x".repeat(MAX_CLIENT_ID_LEN), 1, put("k", "v"));
    assert_eq!(log.sm.get(b"k").version, 3);
    assert_eq!(log.sm.session_count(), 1);
}

#[test]
fn reads_do_not_touch_sessions() {
    let mut log = Log::new(small());
    log.ok("a", 1, put("k", "v"));
    let before = log.sm.snapshot();
    let _ = log.sm.get(b"k");
    let _ = log.sm.scan(b"", b"", 0);
    assert_eq!(log.sm.snapshot(), before);
}

/// A random history step: a new write of a client, or a replay of an earlier command.
#[derive(Clone, Debug)]
enum Step {
    Fresh {
        client: u8,
        key: u8,
        value: u8,
    },
    Replay {
        pick: prop::sample::Index,
    },
    Reuse {
        pick: prop::sample::Index,
        value: u8,
    },
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        3 => (0u8..6, 0u8..3, 0u8..4).prop_map(|(client, key, value)| Step::Fresh { client, key, value }),
        2 => any::<prop::sample::Index>().prop_map(|pick| Step::Replay { pick }),
        1 => (any::<prop::sample::Index>(), 0u8..4).prop_map(|(pick, value)| Step::Reuse { pick, value }),
    ]
}

fn op_for(key: u8, value: u8) -> Op {
    let key = Bytes::from(vec![key]);
    match value {
        0 => Op::Delete { key },
        1 => Op::CompareAndSwap {
            key,
            expected_version: 0,
            value: Bytes::from_static(b"cas"),
        },
        v => Op::Put {
            key,
            value: Bytes::from(vec![v]),
        },
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// However replays and reused seqs interleave with new writes — across windows, evictions
    /// and tombstones — a replay never changes the data and answers either exactly what the
    /// original got or "session expired"; a reused seq never changes the data either.
    #[test]
    fn replays_never_apply_twice(steps in prop::collection::vec(step(), 1..150)) {
        // More tombstones than clients, so that no tombstone is ever forgotten: then the rules
        // promise that nothing is applied twice, with no exception.
        let config = SessionConfig { window: 4, max_sessions: 3, max_tombstones: 8 };
        let mut sm = KvStateMachine::with_config(config);
        let mut index = 0;
        let mut next_seq = [0u64; 6];
        let mut history: Vec<(Command, ApplyResult)> = Vec::new();
        for step in &steps {
            index += 1;
            let before = sm.scan(b"", b"", 0);
            match step {
                Step::Fresh { client, key, value } => {
                    let c = usize::from(*client);
                    next_seq[c] += 1;
                    let cmd = Command::with_session(op_for(*key, *value), format!("c{client}"), next_seq[c]);
                    let result = sm.apply(index, &cmd).expect("in order");
                    match &result {
                        Ok(_) => {}
                        Err(CommandError::SessionExpired { expiry: Expiry::Evicted, .. }) => {
                            prop_assert_eq!(sm.scan(b"", b"", 0), before);
                        }
                        Err(e) => prop_assert!(false, "a new seq was refused: {}", e),
                    }
                    history.push((cmd, result));
                }
                Step::Replay { pick } if !history.is_empty() => {
                    let (cmd, original) = &history[pick.index(history.len())];
                    let result = sm.apply(index, cmd).expect("in order");
                    prop_assert_eq!(sm.scan(b"", b"", 0), before, "replay of {:?} changed data", cmd);
                    match (original, &result) {
                        (Ok(a), Ok(b)) => prop_assert_eq!(a, b),
                        (_, Err(CommandError::SessionExpired { .. })) => {}
                        (original, result) => prop_assert!(
                            false, "replay of {:?}: originally {:?}, now {:?}", cmd, original, result
                        ),
                    }
                }
                Step::Reuse { pick, value } if !history.is_empty() => {
                    let (cmd, _) = &history[pick.index(history.len())];
                    let mut other = cmd.clone();
                    other.op = op_for(b'z', *value);
                    let result = sm.apply(index, &other).expect("in order");
                    prop_assert!(
                        matches!(result, Err(CommandError::SeqReuse { .. } | CommandError::SessionExpired { .. })),
                        "reuse of {:?} as {:?}: {:?}", cmd, other, result
                    );
                    prop_assert_eq!(sm.scan(b"", b"", 0), before);
                }
                _ => sm.apply_noop(index).expect("in order"),
            }
        }
    }
}

/// The session table is bounded in bytes, not only in sessions x window: failed CAS answers carry
/// the current value (up to 1 MiB each), and without a byte budget 10,000 sessions x 128 seqs of
/// them could hold terabytes. Over the budget the least recently used sessions are evicted, and
/// their retries fail as expired (never apply twice); a snapshot restores the same count.
#[test]
fn the_session_table_is_bounded_in_bytes() {
    use raftkv_node::kv::MAX_SESSION_BYTES;
    let mut log = Log::new(SessionConfig::default());
    let big = "x".repeat(1 << 20);
    log.ok("writer", 1, put("k", &big));
    let sessions = (MAX_SESSION_BYTES >> 20) + 40;
    for i in 0..sessions {
        let client = format!("c{i}");
        match log.ok(&client, 1, cas("k", 999, "new")) {
            WriteResponse::CompareAndSwap {
                succeeded: false,
                current_value,
                ..
            } => assert_eq!(current_value.len(), 1 << 20),
            other => panic!("expected a failed CAS, got {other:?}"),
        }
        assert!(
            log.sm.session_bytes() <= MAX_SESSION_BYTES,
            "session {i}: {} bytes recorded, over the budget of {MAX_SESSION_BYTES}",
            log.sm.session_bytes()
        );
    }
    // The oldest sessions were evicted: a retry is refused, not applied again.
    assert_eq!(log.expired("c0", 1, cas("k", 999, "new")), Expiry::Evicted);
    // The newest is still answered from its record.
    let last = format!("c{}", sessions - 1);
    assert!(matches!(
        log.ok(&last, 1, cas("k", 999, "new")),
        WriteResponse::CompareAndSwap {
            succeeded: false,
            ..
        }
    ));
    let restored = KvStateMachine::restore(&log.sm.snapshot()).expect("restore");
    assert_eq!(restored.session_bytes(), log.sm.session_bytes());
}
