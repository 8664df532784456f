//! Who the members are and where they listen; and the node-level framing of log entries and
//! snapshots that carries this address book alongside the KV state.
//!
//! The Raft core knows members only by id. Addresses travel in three places:
//! - the `context` of a membership change (AddLearner) carries the new member's addresses;
//! - a `MemberUpdate` entry lets a member publish (or change) its own addresses, as etcd members
//!   publish their client URLs: every leader publishes itself on election, so followers always
//!   know where to redirect clients;
//! - snapshots carry the whole book, so a node restored from a snapshot knows everyone.
//!
//! Entry framing: the first byte of a Normal entry says what follows ([`EntryKind`]); the KV
//! command encoding stays the `kv` module's business.

use std::collections::BTreeMap;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use raftkv_raft::NodeId;

use crate::kv::{Command, DecodeError};

/// Where one member listens.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MemberAddrs {
    /// Peer address (host:port) for Raft traffic.
    pub peer: String,
    /// Client address (host:port) for the Kv and Cluster services; empty until published.
    pub client: String,
}

/// Member addresses by id. Deterministic order (BTreeMap), as it is part of replicated state.
pub type MemberBook = BTreeMap<NodeId, MemberAddrs>;

/// Why node-level data did not decode.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// The bytes end early or hold an impossible value.
    #[error("malformed {what}: {why}")]
    Malformed {
        /// What was being decoded.
        what: &'static str,
        /// What is wrong.
        why: String,
    },
    /// A KV command inside the frame did not decode.
    #[error(transparent)]
    Command(#[from] DecodeError),
}

fn malformed(what: &'static str, why: impl Into<String>) -> FrameError {
    FrameError::Malformed {
        what,
        why: why.into(),
    }
}

const TAG_COMMAND: u8 = 0;
const TAG_MEMBER_UPDATE: u8 = 1;
/// Longest address accepted anywhere: a DNS name (253) plus a port, with room to spare.
pub const MAX_ADDR_LEN: usize = 512;

/// What a Normal log entry carries.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EntryKind {
    /// A client's KV command.
    Command(Command),
    /// A member publishes its addresses.
    MemberUpdate {
        /// The member.
        id: NodeId,
        /// Its addresses.
        addrs: MemberAddrs,
    },
}

impl EntryKind {
    /// Encodes the entry's data.
    pub fn encode(&self) -> Bytes {
        let mut out = BytesMut::new();
        match self {
            EntryKind::Command(cmd) => {
                out.put_u8(TAG_COMMAND);
                let mut body = Vec::with_capacity(cmd.encoded_len());
                cmd.encode_into(&mut body);
                out.put_slice(&body);
            }
            EntryKind::MemberUpdate { id, addrs } => {
                out.put_u8(TAG_MEMBER_UPDATE);
                out.put_u64(*id);
                put_addrs(&mut out, addrs);
            }
        }
        out.freeze()
    }

    /// Decodes an entry's data.
    pub fn decode(data: &Bytes) -> Result<Self, FrameError> {
        let Some((&tag, _)) = data.split_first() else {
            return Err(malformed("entry", "empty"));
        };
        match tag {
            TAG_COMMAND => Ok(EntryKind::Command(Command::decode(&data.slice(1..))?)),
            TAG_MEMBER_UPDATE => {
                let mut buf = data.slice(1..);
                let id = get_u64(&mut buf, "member update")?;
                let addrs = get_addrs(&mut buf, "member update")?;
                if buf.has_remaining() {
                    return Err(malformed("member update", "trailing bytes"));
                }
                Ok(EntryKind::MemberUpdate { id, addrs })
            }
            other => Err(malformed("entry", format!("unknown kind {other}"))),
        }
    }
}

fn put_str(out: &mut BytesMut, s: &str) {
    out.put_u32(s.len() as u32);
    out.put_slice(s.as_bytes());
}

fn put_addrs(out: &mut BytesMut, addrs: &MemberAddrs) {
    put_str(out, &addrs.peer);
    put_str(out, &addrs.client);
}

fn get_u64(buf: &mut Bytes, what: &'static str) -> Result<u64, FrameError> {
    if buf.remaining() < 8 {
        return Err(malformed(what, "truncated"));
    }
    Ok(buf.get_u64())
}

fn get_str(buf: &mut Bytes, what: &'static str) -> Result<String, FrameError> {
    if buf.remaining() < 4 {
        return Err(malformed(what, "truncated length"));
    }
    let len = buf.get_u32() as usize;
    if len > MAX_ADDR_LEN || buf.remaining() < len {
        return Err(malformed(what, format!("bad string length {len}")));
    }
    let s = buf.split_to(len);
    String::from_utf8(s.to_vec()).map_err(|_| malformed(what, "address is not UTF-8"))
}

fn get_addrs(buf: &mut Bytes, what: &'static str) -> Result<MemberAddrs, FrameError> {
    Ok(MemberAddrs {
        peer: get_str(buf, what)?,
        client: get_str(buf, what)?,
    })
}

/// Encodes addresses for a membership change's context.
pub fn encode_context(addrs: &MemberAddrs) -> Bytes {
    let mut out = BytesMut::new();
    put_addrs(&mut out, addrs);
    out.freeze()
}

/// The member a configuration entry adds as a learner, with the addresses its context carries
/// (or why they do not decode); `None` for any other entry.
pub fn added_learner(e: &raftkv_raft::Entry) -> Option<(NodeId, Result<MemberAddrs, FrameError>)> {
    match &e.payload {
        raftkv_raft::EntryPayload::Config {
            change: Some(cc), ..
        } if cc.change_type == raftkv_raft::ConfChangeType::AddLearner => {
            Some((cc.node_id, decode_context(&cc.context)))
        }
        _ => None,
    }
}

/// Decodes a membership change's context.
pub fn decode_context(context: &Bytes) -> Result<MemberAddrs, FrameError> {
    let mut buf = context.clone();
    let addrs = get_addrs(&mut buf, "membership context")?;
    if buf.has_remaining() {
        return Err(malformed("membership context", "trailing bytes"));
    }
    Ok(addrs)
}

const SNAPSHOT_MAGIC: &[u8; 4] = b"RKVN";
const SNAPSHOT_VERSION: u8 = 1;

/// Writes a node snapshot: the address book, then the KV state machine's snapshot.
pub fn encode_snapshot(book: &MemberBook, kv_snapshot: &[u8]) -> Vec<u8> {
    let mut out = snapshot_header(book).to_vec();
    out.extend_from_slice(kv_snapshot);
    out
}

/// The bytes of a node snapshot that come before the KV snapshot (magic, version, address book),
/// for writers that stream the KV snapshot after it.
pub fn snapshot_header(book: &MemberBook) -> BytesMut {
    let mut out = BytesMut::with_capacity(64 * book.len() + 16);
    out.put_slice(SNAPSHOT_MAGIC);
    out.put_u8(SNAPSHOT_VERSION);
    out.put_u32(book.len() as u32);
    for (id, addrs) in book {
        out.put_u64(*id);
        put_addrs(&mut out, addrs);
    }
    out
}

/// Why a node snapshot could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum LoadSnapshotError {
    /// The snapshot file could not be read (or its checksum does not match).
    #[error("reading: {0}")]
    Read(#[from] std::io::Error),
    /// The node's part (magic, version, address book) is malformed.
    #[error(transparent)]
    Frame(#[from] FrameError),
    /// The state machine's part does not decode.
    #[error(transparent)]
    Kv(#[from] crate::kv::SnapshotError),
}

/// Reads a whole node snapshot from `reader` (a snapshot file, whose checksum the reader checks)
/// and rebuilds the address book and the KV state machine from it. Blocking: the node calls it
/// on the blocking pool, both at start-up and when it installs a snapshot from the leader.
pub fn load_snapshot(
    mut reader: impl std::io::Read,
) -> Result<(MemberBook, crate::kv::KvStateMachine), LoadSnapshotError> {
    let mut data = Vec::new();
    reader.read_to_end(&mut data)?;
    let (book, kv) = decode_snapshot(data.into())?;
    let kv = crate::kv::KvStateMachine::restore(&kv)?;
    Ok((book, kv))
}

/// Splits a node snapshot into the address book and the KV snapshot bytes.
pub fn decode_snapshot(data: Bytes) -> Result<(MemberBook, Bytes), FrameError> {
    let what = "node snapshot";
    let mut buf = data;
    if buf.remaining() < 9 || &buf[..4] != SNAPSHOT_MAGIC {
        return Err(malformed(what, "bad magic"));
    }
    buf.advance(4);
    let version = buf.get_u8();
    if version != SNAPSHOT_VERSION {
        return Err(malformed(what, format!("unknown version {version}")));
    }
    let count = buf.get_u32();
    let mut book = MemberBook::new();
    for _ in 0..count {
        let id = get_u64(&mut buf, what)?;
        book.insert(id, get_addrs(&mut buf, what)?);
    }
    Ok((book, buf))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kv::Op;

    #[test]
    fn entries_round_trip_and_garbage_is_refused() {
        let cmd = Command::with_session(
            Op::Put {
                key: Bytes::from_static(b"k"),
                value: Bytes::from_static(b"v"),
            },
            "client",
            7,
        );
        for kind in [
            EntryKind::Command(cmd),
            EntryKind::MemberUpdate {
                id: 3,
                addrs: MemberAddrs {
                    peer: "kv-2.kv:7100".into(),
                    client: "kv-2.kv:7000".into(),
                },
            },
        ] {
            let data = kind.encode();
            assert_eq!(EntryKind::decode(&data), Ok(kind));
            for cut in 0..data.len() {
                assert!(
                    EntryKind::decode(&data.slice(..cut)).is_err(),
                    "cut at {cut}"
                );
            }
        }
        assert!(EntryKind::decode(&Bytes::from_static(&[9, 1, 2])).is_err());
    }

    #[test]
    fn snapshots_carry_the_book() {
        let mut book = MemberBook::new();
        book.insert(
            1,
            MemberAddrs {
                peer: "a:1".into(),
                client: "a:2".into(),
            },
        );
        let data = encode_snapshot(&book, b"kvstate");
        let (got, kv) = decode_snapshot(Bytes::from(data)).expect("valid");
        assert_eq!(got, book);
        assert_eq!(&kv[..], b"kvstate");
        assert!(decode_snapshot(Bytes::from_static(b"nope")).is_err());
        let ctx = encode_context(&book[&1]);
        assert_eq!(decode_context(&ctx).expect("valid"), book[&1]);
        assert!(decode_context(&ctx.slice(1..)).is_err());
    }
}
