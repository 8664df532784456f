//! Decoding untrusted bytes: garbage, truncated and corrupted commands and snapshots give typed
//! errors, never a panic, and whatever decodes re-encodes to the same bytes.

use bytes::Bytes;
use proptest::prelude::*;
use raftkv_node::kv::{
    Command, DecodeError, KvStateMachine, Op, SNAPSHOT_FORMAT_VERSION, SNAPSHOT_MAGIC,
    SessionConfig, SnapshotError,
};

fn command() -> impl Strategy<Value = Command> {
    let bytes = |max| prop::collection::vec(any::<u8>(), 0..max).prop_map(Bytes::from);
    let op = prop_oneof![
        (bytes(16), bytes(64)).prop_map(|(key, value)| Op::Put { key, value }),
        bytes(16).prop_map(|key| Op::Delete { key }),
        (bytes(16), any::<u64>(), bytes(64)).prop_map(|(key, expected_version, value)| {
            Op::CompareAndSwap {
                key,
                expected_version,
                value,
            }
        }),
    ];
    (op, "[a-z0-9é-]{0,12}", any::<u64>()).prop_map(|(op, client_id, seq)| Command {
        client_id,
        seq,
        op,
    })
}

/// A state machine with data, live sessions (with every kind of recorded response) and
/// tombstones, built from a random history.
fn state() -> impl Strategy<Value = KvStateMachine> {
    prop::collection::vec((0u8..5, 1u64..6, 0u8..4, 0u8..4), 0..40).prop_map(|steps| {
        let mut sm = KvStateMachine::with_config(SessionConfig {
            window: 3,
            max_sessions: 3,
            max_tombstones: 2,
        });
        for (i, (client, seq, key, kind)) in steps.into_iter().enumerate() {
            let key = Bytes::from(vec![key]);
            let op = match kind {
                0 => Op::Delete { key },
                1 => Op::CompareAndSwap {
                    key,
                    expected_version: 0,
                    value: Bytes::from_static(b"cas"),
                },
                _ => Op::Put {
                    key,
                    value: Bytes::from(vec![kind; usize::from(kind)]),
                },
            };
            let cmd = if client == 0 {
                Command::new(op)
            } else {
                Command::with_session(op, format!("client-{client}"), seq)
            };
            // The history's own results do not matter here, only the state it leaves.
            let _ = sm.apply(i as u64 + 1, &cmd);
        }
        sm
    })
}

/// Wraps a snapshot body in a valid header and checksum, so that it reaches the body parser.
fn seal(body: &[u8]) -> Vec<u8> {
    let mut out = SNAPSHOT_MAGIC.to_vec();
    out.push(SNAPSHOT_FORMAT_VERSION);
    out.extend_from_slice(body);
    let crc = crc32fast::hash(&out);
    out.extend_from_slice(&crc.to_le_bytes());
    out
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn garbage_commands_are_errors_and_accepted_bytes_are_canonical(
        data in prop::collection::vec(any::<u8>(), 0..64),
    ) {
        let data = Bytes::from(data);
        if let Ok(cmd) = Command::decode(&data) {
            prop_assert_eq!(cmd.encode(), data);
        }
    }

    #[test]
    fn plausible_garbage_commands_are_errors(
        tag in 0u8..5,
        rest in prop::collection::vec(any::<u8>(), 0..32),
    ) {
        // Start with a valid version and a mostly valid tag, so the fields behind them get tried.
        let mut data = vec![1, tag];
        data.extend(rest);
        let data = Bytes::from(data);
        if let Ok(cmd) = Command::decode(&data) {
            prop_assert_eq!(cmd.encode(), data);
        }
    }

    #[test]
    fn commands_round_trip_and_every_truncation_fails(cmd in command()) {
        let bytes = cmd.encode();
        prop_assert_eq!(bytes.len(), cmd.encoded_len());
        prop_assert_eq!(Command::decode(&bytes), Ok(cmd));
        for len in 0..bytes.len() {
            let err = Command::decode(&bytes.slice(..len));
            prop_assert!(err.is_err(), "prefix of {} bytes decoded", len);
        }
        let mut longer = bytes.to_vec();
        longer.push(0);
        prop_assert!(
            matches!(Command::decode(&Bytes::from(longer)), Err(DecodeError::TrailingBytes { count: 1, .. })),
            "a trailing byte was accepted"
        );
    }

    #[test]
    fn garbage_snapshots_are_errors(data in prop::collection::vec(any::<u8>(), 0..128)) {
        prop_assert!(KvStateMachine::restore(&data).is_err());
    }

    #[test]
    fn garbage_behind_a_valid_checksum_is_an_error_or_canonical(
        body in prop::collection::vec(any::<u8>(), 0..96),
    ) {
        let sealed = seal(&body);
        if let Ok(sm) = KvStateMachine::restore(&sealed) {
            prop_assert_eq!(sm.snapshot(), sealed);
        }
    }

    /// Mutations of a real snapshot's body, resealed with a valid checksum, reach deep into the
    /// parser. Whatever restores must be canonical and usable: applying more writes (which opens,
    /// evicts and replays sessions) must not panic either.
    #[test]
    fn mutated_bodies_behind_a_valid_checksum_never_panic(
        sm in state(),
        edits in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..4),
    ) {
        let bytes = sm.snapshot();
        let header = SNAPSHOT_MAGIC.len() + 1;
        let mut body = bytes[header..bytes.len() - 4].to_vec();
        for (at, value) in edits {
            let i = at.index(body.len());
            body[i] = value;
        }
        let sealed = seal(&body);
        if let Ok(mut restored) = KvStateMachine::restore(&sealed) {
            prop_assert_eq!(restored.snapshot(), sealed);
            let mut index = restored.applied_index();
            for client in ["client-1", "client-2", "client-3", "client-4", "fresh"] {
                for seq in [1, 5] {
                    index += 1;
                    let op = Op::Put { key: Bytes::from_static(b"k"), value: Bytes::new() };
                    let _ = restored.apply(index, &Command::with_session(op, client, seq));
                }
            }
            let _ = restored.scan(b"", b"", 0);
        }
    }

    #[test]
    fn snapshots_round_trip_and_corruption_is_detected(
        sm in state(),
        cut in any::<prop::sample::Index>(),
        flip in any::<prop::sample::Index>(),
        bit in 0u8..8,
    ) {
        let bytes = sm.snapshot();
        let restored = KvStateMachine::restore(&bytes).expect("own snapshot");
        prop_assert_eq!(&restored, &sm);

        let mut streamed = Vec::new();
        sm.write_snapshot(&mut streamed).expect("write to memory");
        prop_assert_eq!(&streamed, &bytes);

        let truncated = &bytes[..cut.index(bytes.len())];
        prop_assert!(KvStateMachine::restore(truncated).is_err());

        // CRC-32 detects every single-bit error; magic and version bits fail earlier.
        let mut flipped = bytes.clone();
        flipped[flip.index(bytes.len())] ^= 1 << bit;
        prop_assert!(KvStateMachine::restore(&flipped).is_err());
    }
}

#[test]
fn snapshot_header_errors_are_typed() {
    let good = KvStateMachine::new().snapshot();
    assert!(matches!(
        KvStateMachine::restore(&good[..8]),
        Err(SnapshotError::TooShort { len: 8 })
    ));
    let mut bad_magic = good.clone();
    bad_magic[0] = b'X';
    assert_eq!(
        KvStateMachine::restore(&bad_magic),
        Err(SnapshotError::BadMagic)
    );
    let mut future = good.clone();
    future[SNAPSHOT_MAGIC.len()] = SNAPSHOT_FORMAT_VERSION + 1;
    assert!(matches!(
        KvStateMachine::restore(&future),
        Err(SnapshotError::Decode(
            DecodeError::UnsupportedVersion { .. }
        ))
    ));
    let mut bad_crc = good.clone();
    let last = bad_crc.len() - 1;
    bad_crc[last] ^= 0xff;
    assert!(matches!(
        KvStateMachine::restore(&bad_crc),
        Err(SnapshotError::ChecksumMismatch { .. })
    ));
    let mut trailing = good[..good.len() - 4].to_vec();
    trailing.push(0);
    let crc = crc32fast::hash(&trailing);
    trailing.extend_from_slice(&crc.to_le_bytes());
    assert!(matches!(
        KvStateMachine::restore(&trailing),
        Err(SnapshotError::Decode(DecodeError::TrailingBytes {
            count: 1,
            ..
        }))
    ));
}

#[test]
fn the_snapshot_format_is_pinned() {
    // A change to these bytes breaks every stored snapshot: bump SNAPSHOT_FORMAT_VERSION instead.
    let mut sm = KvStateMachine::with_config(SessionConfig {
        window: 2,
        max_sessions: 1,
        max_tombstones: 1,
    });
    let put = |v: &'static [u8]| Op::Put {
        key: Bytes::from_static(b"k"),
        value: Bytes::from_static(v),
    };
    sm.apply(1, &Command::with_session(put(b"a"), "x", 1))
        .expect("in order")
        .expect("put");
    sm.apply(2, &Command::with_session(put(b"b"), "y", 1)) // evicts x
        .expect("in order")
        .expect("put");
    let mut body = vec![2, 2, 1, 1]; // applied, window, max sessions, max tombstones
    body.extend([1, 1, b'k', 2, 1, b'b']); // one key: "k" at version 2 = "b"
    body.extend([1, 1, b'y', 2, 1, 1]); // one session "y", last used 2, one result: seq 1
    body.extend(0x4629_310e_4e52_2fe3u64.to_le_bytes()); // fingerprint of Put k=b
    body.extend([1, 2]); // Put, version 2
    body.extend([1, 1, b'x', 2]); // one tombstone: "x", evicted at 2
    assert_eq!(sm.snapshot(), seal(&body));
}

/// Bodies that decode but break an invariant are refused as inconsistent.
#[test]
fn inconsistent_snapshots_are_refused() {
    let cases: [(&str, Vec<u8>); 7] = [
        ("zero window", vec![0, 0, 1, 1, 0, 0, 0]),
        (
            "keys out of order",
            vec![1, 1, 1, 1, 2, 1, b'b', 1, 0, 1, b'a', 1, 0, 0, 0],
        ),
        (
            "version after applied",
            vec![1, 1, 1, 1, 1, 1, b'a', 2, 0, 0, 0],
        ),
        ("version 0", vec![1, 1, 1, 1, 1, 1, b'a', 0, 0, 0, 0]),
        (
            "more sessions than allowed",
            vec![
                1, 1, 1, 1, 0, 2, 1, b'a', 1, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, b'b', 1, 1, 1,
                0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 0,
            ],
        ),
        (
            "session without results",
            vec![1, 1, 1, 1, 0, 1, 1, b'a', 1, 0, 0],
        ),
        (
            "tombstone of a live session",
            vec![
                1, 1, 1, 1, 0, 1, 1, b'a', 1, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, b'a', 1,
            ],
        ),
    ];
    for (what, body) in cases {
        match KvStateMachine::restore(&seal(&body)) {
            Err(SnapshotError::Inconsistent(_)) => {}
            other => panic!("{what}: {other:?}"),
        }
    }
    // And a window that keeps a seq it should have pruned.
    let body = vec![
        3, 1, 1, 0, 0, // applied 3, window 1, max 1 session, max 0 tombstones, no keys
        1, 1, b'a', 3, 2, // session "a", last used 3, two results
        1, 0, 0, 0, 0, 0, 0, 0, 0, 1, 1, // seq 1
        2, 0, 0, 0, 0, 0, 0, 0, 0, 1, 2, // seq 2: with window 1, seq 1 must be gone
        0,
    ];
    assert!(matches!(
        KvStateMachine::restore(&seal(&body)),
        Err(SnapshotError::Inconsistent(_))
    ));
}
