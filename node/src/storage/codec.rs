//! A compact binary encoding of the Raft core's types, for WAL records and snapshot headers.
//!
//! Integers are unsigned LEB128 varints (terms, indexes and ids are small, so most take one or two
//! bytes), byte strings are a varint length followed by the bytes, and enums are a one-byte tag.
//! The format has no versioning of its own: the WAL segment header and the snapshot file magic carry
//! a format version for the whole file. Decoding never panics and never trusts a length from the
//! input beyond the bytes actually present.

use bytes::Bytes;
use raftkv_raft::{
    ConfChange, ConfChangeType, ConfState, Entry, EntryPayload, HardState, NodeId, SnapshotMeta,
};

/// Why a byte string does not decode.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub(crate) enum DecodeError {
    /// The input ended in the middle of a value.
    #[error("input ends in the middle of a value at byte {0}")]
    Truncated(usize),
    /// A varint is longer than ten bytes or overflows 64 bits.
    #[error("varint overflows 64 bits at byte {0}")]
    VarintOverflow(usize),
    /// An enum tag has no meaning.
    #[error("unknown {what} tag {tag} at byte {at}")]
    UnknownTag {
        /// Which enum.
        what: &'static str,
        /// The tag found.
        tag: u8,
        /// Where.
        at: usize,
    },
    /// Bytes are left over after the value.
    #[error("{0} unexpected trailing bytes")]
    Trailing(usize),
}

/// Appends a varint.
pub(crate) fn put_u64(buf: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        // Truncation to the low seven bits is the point of the encoding.
        buf.push((v as u8 & 0x7f) | 0x80);
        v >>= 7;
    }
    buf.push(v as u8);
}

/// Appends a length-prefixed byte string.
pub(crate) fn put_bytes(buf: &mut Vec<u8>, b: &[u8]) {
    put_u64(buf, b.len() as u64);
    buf.extend_from_slice(b);
}

/// Reads values from a byte slice, front to back.
pub(crate) struct Decoder<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Decoder<'a> {
    /// A decoder at the start of `buf`.
    pub(crate) fn new(buf: &'a [u8]) -> Self {
        Self { buf, pos: 0 }
    }

    /// Fails unless every byte was consumed.
    pub(crate) fn finish(self) -> Result<(), DecodeError> {
        self.finish_ref()
    }

    /// Like [`Self::finish`], for a decoder that is borrowed.
    pub(crate) fn finish_ref(&self) -> Result<(), DecodeError> {
        match self.buf.len() - self.pos {
            0 => Ok(()),
            n => Err(DecodeError::Trailing(n)),
        }
    }

    pub(crate) fn u8(&mut self) -> Result<u8, DecodeError> {
        let b = *self
            .buf
            .get(self.pos)
            .ok_or(DecodeError::Truncated(self.pos))?;
        self.pos += 1;
        Ok(b)
    }

    pub(crate) fn u64(&mut self) -> Result<u64, DecodeError> {
        let start = self.pos;
        let mut v: u64 = 0;
        for shift in (0..64).step_by(7) {
            let b = self.u8()?;
            let low = u64::from(b & 0x7f);
            // The tenth byte may only contribute the single top bit.
            if shift == 63 && low > 1 {
                return Err(DecodeError::VarintOverflow(start));
            }
            v |= low << shift;
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err(DecodeError::VarintOverflow(start))
    }

    pub(crate) fn bytes(&mut self) -> Result<&'a [u8], DecodeError> {
        let at = self.pos;
        let len = self.u64()?;
        let remaining = (self.buf.len() - self.pos) as u64;
        if len > remaining {
            return Err(DecodeError::Truncated(at));
        }
        // `len <= remaining`, which fits in usize.
        let end = self.pos + len as usize;
        let out = &self.buf[self.pos..end];
        self.pos = end;
        Ok(out)
    }
}

const PAYLOAD_NOOP: u8 = 0;
const PAYLOAD_NORMAL: u8 = 1;
const PAYLOAD_CONFIG: u8 = 2;

const CHANGE_ADD_LEARNER: u8 = 0;
const CHANGE_PROMOTE_LEARNER: u8 = 1;
const CHANGE_REMOVE_NODE: u8 = 2;

/// Appends an entry.
pub(crate) fn put_entry(buf: &mut Vec<u8>, e: &Entry) {
    put_u64(buf, e.term);
    put_u64(buf, e.index);
    match &e.payload {
        EntryPayload::Noop => buf.push(PAYLOAD_NOOP),
        EntryPayload::Normal(data) => {
            buf.push(PAYLOAD_NORMAL);
            put_bytes(buf, data);
        }
        EntryPayload::Config { change, conf } => {
            buf.push(PAYLOAD_CONFIG);
            match change {
                None => buf.push(0),
                Some(c) => {
                    buf.push(1);
                    buf.push(match c.change_type {
                        ConfChangeType::AddLearner => CHANGE_ADD_LEARNER,
                        ConfChangeType::PromoteLearner => CHANGE_PROMOTE_LEARNER,
                        ConfChangeType::RemoveNode => CHANGE_REMOVE_NODE,
                    });
                    put_u64(buf, c.node_id);
                    put_bytes(buf, &c.context);
                }
            }
            put_conf(buf, conf);
        }
    }
}

/// Reads an entry.
pub(crate) fn get_entry(d: &mut Decoder<'_>) -> Result<Entry, DecodeError> {
    let term = d.u64()?;
    let index = d.u64()?;
    let at = d.pos;
    let payload = match d.u8()? {
        PAYLOAD_NOOP => EntryPayload::Noop,
        PAYLOAD_NORMAL => EntryPayload::Normal(Bytes::copy_from_slice(d.bytes()?)),
        PAYLOAD_CONFIG => {
            let at = d.pos;
            let change = match d.u8()? {
                0 => None,
                1 => {
                    let at = d.pos;
                    let change_type = match d.u8()? {
                        CHANGE_ADD_LEARNER => ConfChangeType::AddLearner,
                        CHANGE_PROMOTE_LEARNER => ConfChangeType::PromoteLearner,
                        CHANGE_REMOVE_NODE => ConfChangeType::RemoveNode,
                        tag => {
                            return Err(DecodeError::UnknownTag {
                                what: "conf change type",
                                tag,
                                at,
                            });
                        }
                    };
                    let node_id = d.u64()?;
                    let context = Bytes::copy_from_slice(d.bytes()?);
                    Some(ConfChange {
                        change_type,
                        node_id,
                        context,
                    })
                }
                tag => {
                    return Err(DecodeError::UnknownTag {
                        what: "option",
                        tag,
                        at,
                    });
                }
            };
            let conf = get_conf(d)?;
            EntryPayload::Config { change, conf }
        }
        tag => {
            return Err(DecodeError::UnknownTag {
                what: "entry payload",
                tag,
                at,
            });
        }
    };
    Ok(Entry {
        term,
        index,
        payload,
    })
}

/// Appends a configuration.
fn put_conf(buf: &mut Vec<u8>, conf: &ConfState) {
    for set in [&conf.voters, &conf.learners] {
        put_u64(buf, set.len() as u64);
        for id in set {
            put_u64(buf, *id);
        }
    }
}

/// Reads a configuration.
fn get_conf(d: &mut Decoder<'_>) -> Result<ConfState, DecodeError> {
    let mut conf = ConfState::default();
    for set in [&mut conf.voters, &mut conf.learners] {
        let n = d.u64()?;
        // No allocation is sized from `n`: a corrupt count just runs out of input.
        for _ in 0..n {
            let id: NodeId = d.u64()?;
            set.insert(id);
        }
    }
    Ok(conf)
}

/// Appends a hard state.
pub(crate) fn put_hard_state(buf: &mut Vec<u8>, hs: &HardState) {
    put_u64(buf, hs.term);
    put_u64(buf, hs.vote);
    put_u64(buf, hs.commit);
}

/// Reads a hard state.
pub(crate) fn get_hard_state(d: &mut Decoder<'_>) -> Result<HardState, DecodeError> {
    Ok(HardState {
        term: d.u64()?,
        vote: d.u64()?,
        commit: d.u64()?,
    })
}

/// Appends snapshot metadata.
pub(crate) fn put_snapshot_meta(buf: &mut Vec<u8>, meta: &SnapshotMeta) {
    put_u64(buf, meta.index);
    put_u64(buf, meta.term);
    put_conf(buf, &meta.conf);
}

/// Reads snapshot metadata.
pub(crate) fn get_snapshot_meta(d: &mut Decoder<'_>) -> Result<SnapshotMeta, DecodeError> {
    Ok(SnapshotMeta {
        index: d.u64()?,
        term: d.u64()?,
        conf: get_conf(d)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entries() -> Vec<Entry> {
        vec![
            Entry {
                term: 1,
                index: 1,
                payload: EntryPayload::Noop,
            },
            Entry {
                term: u64::MAX,
                index: 300,
                payload: EntryPayload::Normal(Bytes::from_static(b"hello")),
            },
            Entry {
                term: 7,
                index: 1 << 40,
                payload: EntryPayload::Config {
                    change: Some(ConfChange {
                        change_type: ConfChangeType::PromoteLearner,
                        node_id: 4,
                        context: Bytes::from_static(b"ctx"),
                    }),
                    conf: ConfState {
                        voters: [1, 2, 3].into(),
                        learners: [4].into(),
                    },
                },
            },
            Entry {
                term: 2,
                index: 9,
                payload: EntryPayload::Config {
                    change: None,
                    conf: ConfState::with_voters([1]),
                },
            },
        ]
    }

    #[test]
    fn entries_round_trip() {
        for e in entries() {
            let mut buf = Vec::new();
            put_entry(&mut buf, &e);
            let mut d = Decoder::new(&buf);
            assert_eq!(get_entry(&mut d), Ok(e));
            assert_eq!(d.finish(), Ok(()));
        }
    }

    #[test]
    fn every_prefix_of_an_entry_fails_cleanly() {
        for e in entries() {
            let mut buf = Vec::new();
            put_entry(&mut buf, &e);
            for cut in 0..buf.len() {
                let mut d = Decoder::new(&buf[..cut]);
                assert!(get_entry(&mut d).is_err(), "prefix {cut} of {e:?} decoded");
            }
        }
    }

    #[test]
    fn varint_edges() {
        for v in [0, 1, 127, 128, 16_383, 16_384, u64::MAX - 1, u64::MAX] {
            let mut buf = Vec::new();
            put_u64(&mut buf, v);
            let mut d = Decoder::new(&buf);
            assert_eq!(d.u64(), Ok(v));
            assert_eq!(d.finish(), Ok(()));
        }
        // Eleven continuation bytes, and a tenth byte carrying more than one bit.
        assert!(Decoder::new(&[0xff; 11]).u64().is_err());
        let mut too_big = vec![0xff; 9];
        too_big.push(0x02);
        assert_eq!(
            Decoder::new(&too_big).u64(),
            Err(DecodeError::VarintOverflow(0))
        );
    }

    #[test]
    fn hard_state_and_meta_round_trip() {
        let hs = HardState {
            term: 5,
            vote: 2,
            commit: 1_000_000,
        };
        let meta = SnapshotMeta {
            index: 77,
            term: 5,
            conf: ConfState {
                voters: [1, 2, 3].into(),
                learners: [9].into(),
            },
        };
        let mut buf = Vec::new();
        put_hard_state(&mut buf, &hs);
        put_snapshot_meta(&mut buf, &meta);
        let mut d = Decoder::new(&buf);
        assert_eq!(get_hard_state(&mut d), Ok(hs));
        assert_eq!(get_snapshot_meta(&mut d), Ok(meta));
        assert_eq!(d.finish(), Ok(()));
    }

    #[test]
    fn a_huge_length_is_rejected_without_allocating() {
        let mut buf = vec![1, 1, PAYLOAD_NORMAL];
        put_u64(&mut buf, u64::MAX);
        assert_eq!(
            get_entry(&mut Decoder::new(&buf)),
            Err(DecodeError::Truncated(3))
        );
    }
}
