//! A compact binary encoding of the Raft core's types, for WAL records and snapshot headers, built
//! on the node's one codec (`crate::codec`).
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

pub(crate) use crate::codec::{DecodeError, Reader, put_bytes, put_varint};

const PAYLOAD_NOOP: u8 = 0;
const PAYLOAD_NORMAL: u8 = 1;
const PAYLOAD_CONFIG: u8 = 2;

const CHANGE_ADD_LEARNER: u8 = 0;
const CHANGE_PROMOTE_LEARNER: u8 = 1;
const CHANGE_REMOVE_NODE: u8 = 2;

/// Appends an entry.
pub(crate) fn put_entry(buf: &mut Vec<u8>, e: &Entry) {
    put_varint(buf, e.term);
    put_varint(buf, e.index);
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
                    put_varint(buf, c.node_id);
                    put_bytes(buf, &c.context);
                }
            }
            put_conf(buf, conf);
        }
    }
}

/// Reads an entry.
pub(crate) fn get_entry(d: &mut Reader<'_>) -> Result<Entry, DecodeError> {
    let term = d.varint("entry term")?;
    let index = d.varint("entry index")?;
    let at = d.offset();
    let payload = match d.u8("entry payload")? {
        PAYLOAD_NOOP => EntryPayload::Noop,
        PAYLOAD_NORMAL => EntryPayload::Normal(Bytes::copy_from_slice(d.bytes("entry data")?)),
        PAYLOAD_CONFIG => {
            let at = d.offset();
            let change = match d.u8("conf change presence")? {
                0 => None,
                1 => {
                    let at = d.offset();
                    let change_type = match d.u8("conf change type")? {
                        CHANGE_ADD_LEARNER => ConfChangeType::AddLearner,
                        CHANGE_PROMOTE_LEARNER => ConfChangeType::PromoteLearner,
                        CHANGE_REMOVE_NODE => ConfChangeType::RemoveNode,
                        tag => {
                            return Err(DecodeError::BadTag {
                                what: "conf change type",
                                value: tag,
                                offset: at,
                            });
                        }
                    };
                    let node_id = d.varint("conf change node id")?;
                    let context = Bytes::copy_from_slice(d.bytes("conf change context")?);
                    Some(ConfChange {
                        change_type,
                        node_id,
                        context,
                    })
                }
                tag => {
                    return Err(DecodeError::BadTag {
                        what: "option",
                        value: tag,
                        offset: at,
                    });
                }
            };
            let conf = get_conf(d)?;
            EntryPayload::Config { change, conf }
        }
        tag => {
            return Err(DecodeError::BadTag {
                what: "entry payload",
                value: tag,
                offset: at,
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
        put_varint(buf, set.len() as u64);
        for id in set {
            put_varint(buf, *id);
        }
    }
}

/// Reads a configuration.
fn get_conf(d: &mut Reader<'_>) -> Result<ConfState, DecodeError> {
    let mut conf = ConfState::default();
    for set in [&mut conf.voters, &mut conf.learners] {
        let n = d.varint("member count")?;
        // No allocation is sized from `n`: a corrupt count just runs out of input.
        for _ in 0..n {
            let id: NodeId = d.varint("member id")?;
            set.insert(id);
        }
    }
    Ok(conf)
}

/// Appends a hard state.
pub(crate) fn put_hard_state(buf: &mut Vec<u8>, hs: &HardState) {
    put_varint(buf, hs.term);
    put_varint(buf, hs.vote);
    put_varint(buf, hs.commit);
}

/// Reads a hard state.
pub(crate) fn get_hard_state(d: &mut Reader<'_>) -> Result<HardState, DecodeError> {
    Ok(HardState {
        term: d.varint("hard state term")?,
        vote: d.varint("hard state vote")?,
        commit: d.varint("hard state commit")?,
    })
}

/// Appends snapshot metadata.
pub(crate) fn put_snapshot_meta(buf: &mut Vec<u8>, meta: &SnapshotMeta) {
    put_varint(buf, meta.index);
    put_varint(buf, meta.term);
    put_conf(buf, &meta.conf);
}

/// Reads snapshot metadata.
pub(crate) fn get_snapshot_meta(d: &mut Reader<'_>) -> Result<SnapshotMeta, DecodeError> {
    Ok(SnapshotMeta {
        index: d.varint("snapshot index")?,
        term: d.varint("snapshot term")?,
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
            let mut d = Reader::new(&buf);
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
                let mut d = Reader::new(&buf[..cut]);
                assert!(get_entry(&mut d).is_err(), "prefix {cut} of {e:?} decoded");
            }
        }
    }

    #[test]
    fn varint_edges() {
        for v in [0, 1, 127, 128, 16_383, 16_384, u64::MAX - 1, u64::MAX] {
            let mut buf = Vec::new();
            put_varint(&mut buf, v);
            let mut d = Reader::new(&buf);
            assert_eq!(d.varint("v"), Ok(v));
            assert_eq!(d.finish(), Ok(()));
        }
        // Eleven continuation bytes, and a tenth byte carrying more than one bit.
        assert!(Reader::new(&[0xff; 11]).varint("v").is_err());
        let mut too_big = vec![0xff; 9];
        too_big.push(0x02);
        assert_eq!(
            Reader::new(&too_big).varint("v"),
            Err(DecodeError::BadVarint {
                what: "v",
                offset: 0
            })
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
        let mut d = Reader::new(&buf);
        assert_eq!(get_hard_state(&mut d), Ok(hs));
        assert_eq!(get_snapshot_meta(&mut d), Ok(meta));
        assert_eq!(d.finish(), Ok(()));
    }

    #[test]
    fn a_huge_length_is_rejected_without_allocating() {
        let mut buf = vec![1, 1, PAYLOAD_NORMAL];
        put_varint(&mut buf, u64::MAX);
        assert_eq!(
            get_entry(&mut Reader::new(&buf)),
            Err(DecodeError::Truncated {
                what: "entry data",
                offset: 3
            })
        );
    }
}
