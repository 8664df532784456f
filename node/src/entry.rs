//! The node-level framing of what Raft replicates: the data of a Normal log entry
//! ([`EntryKind`]: a client's KV command, or a member publishing its addresses), and the node
//! snapshot (the address book, then the KV state machine's own snapshot).
//!
//! Every Put passes through here on its way into the log, so encoding writes one buffer sized in
//! advance: the tag byte, then the command encoded in place. The KV command's own encoding stays
//! the `kv` module's business, and the addresses' the `members` module's; both are built from the
//! node's one codec (`crate::codec`).
//!
//! Formats (unchanged since the first release; `tests::golden_bytes` pins them):
//! - entry data: a tag byte (0 command, 1 member update), then the command's encoding, or the
//!   member's id (u64, big-endian) and addresses;
//! - node snapshot: `RKVN`, a version byte (1), the number of members (u32, big-endian), each
//!   member's id (u64, big-endian) and addresses, then the KV snapshot to the end.

use bytes::Bytes;
use raftkv_raft::NodeId;

use crate::codec::{DecodeError, Reader};
use crate::kv::{Command, KvStateMachine, SnapshotError};
use crate::members::{MemberAddrs, MemberBook, get_addrs, put_addrs};

const TAG_COMMAND: u8 = 0;
const TAG_MEMBER_UPDATE: u8 = 1;

const SNAPSHOT_MAGIC: &[u8; 4] = b"RKVN";
const SNAPSHOT_VERSION: u8 = 1;

/// Why a Normal entry's data did not decode.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// The data is empty: every entry starts with its kind.
    #[error("empty entry data")]
    Empty,
    /// The first byte names no kind this build knows.
    #[error("unknown entry kind {0}")]
    UnknownKind(u8),
    /// The framing or the command inside it is malformed.
    #[error(transparent)]
    Decode(#[from] DecodeError),
}

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
        let out = match self {
            EntryKind::Command(cmd) => {
                let mut out = Vec::with_capacity(1 + cmd.encoded_len());
                out.push(TAG_COMMAND);
                cmd.encode_into(&mut out);
                out
            }
            EntryKind::MemberUpdate { id, addrs } => {
                let mut out = Vec::with_capacity(1 + 8 + 8 + addrs.peer.len() + addrs.client.len());
                out.push(TAG_MEMBER_UPDATE);
                out.extend_from_slice(&id.to_be_bytes());
                put_addrs(&mut out, addrs);
                out
            }
        };
        Bytes::from(out)
    }

    /// Decodes an entry's data.
    pub fn decode(data: &Bytes) -> Result<Self, FrameError> {
        let Some((&tag, _)) = data.split_first() else {
            return Err(FrameError::Empty);
        };
        match tag {
            TAG_COMMAND => Ok(EntryKind::Command(Command::decode(&data.slice(1..))?)),
            TAG_MEMBER_UPDATE => {
                let mut r = Reader::new(&data[1..]);
                let id = r.u64_be("member update id")?;
                let addrs = get_addrs(&mut r, "member update")?;
                r.finish()?;
                Ok(EntryKind::MemberUpdate { id, addrs })
            }
            other => Err(FrameError::UnknownKind(other)),
        }
    }
}

/// Why a node snapshot could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotLoadError {
    /// The snapshot's bytes could not be read (or their checksum did not match).
    #[error("reading the snapshot: {0}")]
    Read(#[from] std::io::Error),
    /// The node's framing (magic, version, address book) is malformed.
    #[error("malformed node snapshot: {0}")]
    Frame(#[from] DecodeError),
    /// The KV state machine's snapshot inside it is malformed.
    #[error(transparent)]
    Kv(#[from] SnapshotError),
}

/// Writes a node snapshot: the address book, then the KV state machine's snapshot.
pub fn encode_snapshot(book: &MemberBook, kv_snapshot: &[u8]) -> Vec<u8> {
    let mut out = snapshot_header(book);
    out.extend_from_slice(kv_snapshot);
    out
}

/// The bytes of a node snapshot that come before the KV snapshot (magic, version, address book),
/// for writers that stream the KV snapshot after it.
pub fn snapshot_header(book: &MemberBook) -> Vec<u8> {
    let mut out = Vec::with_capacity(64 * book.len() + 16);
    out.extend_from_slice(SNAPSHOT_MAGIC);
    out.push(SNAPSHOT_VERSION);
    // The book is bounded by the configuration (a handful of members), far below u32::MAX.
    out.extend_from_slice(&u32::try_from(book.len()).unwrap_or(u32::MAX).to_be_bytes());
    for (id, addrs) in book {
        out.extend_from_slice(&id.to_be_bytes());
        put_addrs(&mut out, addrs);
    }
    out
}

/// Splits a node snapshot into the address book and the KV snapshot bytes (a slice of `data`).
pub fn decode_snapshot(data: Bytes) -> Result<(MemberBook, Bytes), DecodeError> {
    let mut r = Reader::new(&data);
    let magic = r.take(SNAPSHOT_MAGIC.len(), "node snapshot magic")?;
    if &data[magic.clone()] != SNAPSHOT_MAGIC {
        return Err(DecodeError::BadTag {
            what: "node snapshot magic",
            value: data[magic.start],
            offset: magic.start,
        });
    }
    let version = r.u8("node snapshot version")?;
    if version != SNAPSHOT_VERSION {
        return Err(DecodeError::UnsupportedVersion {
            found: version,
            supported: SNAPSHOT_VERSION,
        });
    }
    let count = r.u32_be("node snapshot member count")?;
    let mut book = MemberBook::new();
    // No allocation is sized from `count`: a forged count just runs out of input.
    for _ in 0..count {
        let id = r.u64_be("node snapshot member id")?;
        book.insert(id, get_addrs(&mut r, "node snapshot member")?);
    }
    let kv = data.slice(r.offset()..);
    Ok((book, kv))
}

/// Learns a member's addresses from a recovered log entry: an AddLearner's context or a
/// `MemberUpdate` (what a node replays at start, before the driver takes over).
pub(crate) fn learn_addresses(book: &mut MemberBook, e: &raftkv_raft::Entry) {
    if let Some((id, Ok(addrs))) = crate::members::added_learner(e) {
        book.insert(id, addrs);
    } else if let raftkv_raft::EntryPayload::Normal(data) = &e.payload
        && let Ok(EntryKind::MemberUpdate { id, addrs }) = EntryKind::decode(data)
    {
        book.insert(id, addrs);
    }
}

/// Reads a whole node snapshot from `reader` (a snapshot file, whose checksum the reader checks)
/// and rebuilds the address book and the KV state machine from it. Blocking: the node calls it
/// on the blocking pool, both at start-up and when it installs a snapshot from the leader.
pub fn load_snapshot(
    mut reader: impl std::io::Read,
) -> Result<(MemberBook, KvStateMachine), SnapshotLoadError> {
    let mut data = Vec::new();
    reader.read_to_end(&mut data)?;
    let (book, kv) = decode_snapshot(data.into())?;
    let kv = KvStateMachine::restore(&kv)?;
    Ok((book, kv))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kv::Op;

    fn member_update() -> EntryKind {
        EntryKind::MemberUpdate {
            id: 3,
            addrs: MemberAddrs {
                peer: "kv-2.kv:7100".into(),
                client: "kv-2.kv:7000".into(),
            },
        }
    }

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
        for kind in [EntryKind::Command(cmd), member_update()] {
            let data = kind.encode();
            assert_eq!(EntryKind::decode(&data), Ok(kind));
            for cut in 0..data.len() {
                assert!(
                    EntryKind::decode(&data.slice(..cut)).is_err(),
                    "cut at {cut}"
                );
            }
        }
        assert_eq!(
            EntryKind::decode(&Bytes::from_static(&[9, 1, 2])),
            Err(FrameError::UnknownKind(9))
        );
        assert_eq!(EntryKind::decode(&Bytes::new()), Err(FrameError::Empty));
    }

    /// Data directories written by earlier releases hold these exact bytes: the framing must
    /// never change without a new tag or version.
    #[test]
    fn golden_bytes() {
        let mut want = vec![TAG_MEMBER_UPDATE, 0, 0, 0, 0, 0, 0, 0, 3];
        for s in ["kv-2.kv:7100", "kv-2.kv:7000"] {
            want.extend_from_slice(&[0, 0, 0, 12]);
            want.extend_from_slice(s.as_bytes());
        }
        assert_eq!(&member_update().encode()[..], &want[..]);

        let mut book = MemberBook::new();
        book.insert(
            1,
            MemberAddrs {
                peer: "a:1".into(),
                client: "".into(),
            },
        );
        let mut want = b"RKVN\x01\x00\x00\x00\x01".to_vec();
        want.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 3]);
        want.extend_from_slice(b"a:1");
        want.extend_from_slice(&[0, 0, 0, 0]);
        want.extend_from_slice(b"kv");
        assert_eq!(encode_snapshot(&book, b"kv"), want);
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
        let data = Bytes::from(encode_snapshot(&book, b"kvstate"));
        let (got, kv) = decode_snapshot(data.clone()).expect("valid");
        assert_eq!(got, book);
        assert_eq!(&kv[..], b"kvstate");
        assert!(decode_snapshot(Bytes::from_static(b"nope")).is_err());
        assert!(decode_snapshot(Bytes::from_static(b"RKVN\x02\x00\x00\x00\x00")).is_err());
        // Cut inside the header: refused, never a panic.
        for cut in 0..data.len() - b"kvstate".len() {
            assert!(decode_snapshot(data.slice(..cut)).is_err(), "cut at {cut}");
        }
    }
}
