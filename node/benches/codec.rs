//! Micro-benchmark behind the choice of the node's codec (`node/src/codec.rs`): encodes and
//! decodes the same Put — a client id, a seq, a key and a value — with the node's own encoding
//! (`EntryKind::Command`, what every write puts in the log) and with an equivalent prost message,
//! and prints ns/op for each and their ratio. Asserts nothing.
//!
//! `cargo bench -p raftkv-node --bench codec` (`RAFTKV_BENCH_VALUE`: value bytes, default 256;
//! `RAFTKV_BENCH_OPS`: operations per measurement, default 500,000). Run by `cargo test`
//! (without `--bench`), it does a quick smoke run instead.

use std::hint::black_box;
use std::time::Instant;

use bytes::Bytes;
use prost::Message;
use raftkv_node::entry::EntryKind;
use raftkv_node::kv::{Command, Op};

/// The prost twin of a Put command.
#[derive(Clone, PartialEq, prost::Message)]
struct PutCommand {
    #[prost(string, tag = "1")]
    client_id: String,
    #[prost(uint64, tag = "2")]
    seq: u64,
    #[prost(bytes = "bytes", tag = "3")]
    key: Bytes,
    #[prost(bytes = "bytes", tag = "4")]
    value: Bytes,
}

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Runs `f` `ops` times and returns ns per call.
fn time(ops: usize, mut f: impl FnMut(usize)) -> f64 {
    let start = Instant::now();
    for i in 0..ops {
        f(i);
    }
    start.elapsed().as_nanos() as f64 / ops as f64
}

fn main() {
    let bench = std::env::args().any(|a| a == "--bench");
    let value_len = env_usize("RAFTKV_BENCH_VALUE", 256);
    let ops = if bench {
        env_usize("RAFTKV_BENCH_OPS", 500_000)
    } else {
        1_000
    };
    let key = Bytes::from_static(b"user/000123/profile");
    let value = Bytes::from(vec![7u8; value_len]);
    let client_id = "kvctl-4f1c2a9b-0001".to_owned();

    let ours = EntryKind::Command(Command::with_session(
        Op::Put {
            key: key.clone(),
            value: value.clone(),
        },
        client_id.clone(),
        42,
    ));
    let theirs = PutCommand {
        client_id,
        seq: 42,
        key,
        value,
    };
    let ours_bytes = ours.encode();
    let theirs_bytes = Bytes::from(theirs.encode_to_vec());

    // Warm up both paths (allocator, caches) before measuring.
    for _ in 0..ops.min(10_000) {
        black_box(ours.encode());
        black_box(theirs.encode_to_vec());
    }
    let ours_encode = time(ops, |_| {
        black_box(black_box(&ours).encode());
    });
    let theirs_encode = time(ops, |_| {
        black_box(Bytes::from(black_box(&theirs).encode_to_vec()));
    });
    let ours_decode = time(ops, |_| {
        let decoded = EntryKind::decode(black_box(&ours_bytes));
        assert!(decoded.is_ok());
        black_box(decoded.ok());
    });
    let theirs_decode = time(ops, |_| {
        let decoded = PutCommand::decode(black_box(theirs_bytes.clone()));
        assert!(decoded.is_ok());
        black_box(decoded.ok());
    });

    println!(
        "codec: a Put with a {value_len}-byte value, {ops} ops each{}",
        if bench { "" } else { " (smoke run)" }
    );
    println!("                 encode ns/op  decode ns/op  encoded bytes");
    println!(
        "node codec       {ours_encode:>12.1}  {ours_decode:>12.1}  {:>13}",
        ours_bytes.len()
    );
    println!(
        "prost            {theirs_encode:>12.1}  {theirs_decode:>12.1}  {:>13}",
        theirs_bytes.len()
    );
    println!(
        "prost / node     {:>12.2}  {:>12.2}",
        theirs_encode / ours_encode,
        theirs_decode / ours_decode
    );
}
