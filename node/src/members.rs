//! Who the members are and where they listen.
//!
//! The Raft core knows members only by id. Addresses travel in three places:
//! - the `context` of a membership change (AddLearner) carries the new member's addresses;
//! - a `MemberUpdate` entry ([`crate::entry::EntryKind`]) lets a member publish (or change) its
//!   own addresses, as etcd members publish their client URLs: every leader publishes itself on
//!   election, so followers always know where to redirect clients;
//! - snapshots carry the whole book ([`crate::entry::snapshot_header`]), so a node restored from
//!   a snapshot knows everyone.
//!
//! One encoding of a member's addresses serves all three: each address as a big-endian `u32`
//! length and its UTF-8 bytes, at most [`MAX_ADDR_LEN`] bytes.

use std::collections::BTreeMap;

use bytes::Bytes;
use raftkv_raft::NodeId;

use crate::codec::{DecodeError, Reader};

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

/// Longest address accepted anywhere: a DNS name (253) plus a port, with room to spare.
pub const MAX_ADDR_LEN: usize = 512;

fn put_str(out: &mut Vec<u8>, s: &str) {
    // Addresses are checked against MAX_ADDR_LEN where they enter (flags, AddMember).
    out.extend_from_slice(&u32::try_from(s.len()).unwrap_or(u32::MAX).to_be_bytes());
    out.extend_from_slice(s.as_bytes());
}

fn get_str(r: &mut Reader<'_>, what: &'static str) -> Result<String, DecodeError> {
    let offset = r.offset();
    let len = r.u32_be(what)? as usize;
    if len > MAX_ADDR_LEN {
        return Err(DecodeError::TooLong {
            what,
            len,
            max: MAX_ADDR_LEN,
            offset,
        });
    }
    Ok(r.str_of_len(len, what)?.to_owned())
}

/// Appends a member's addresses.
pub(crate) fn put_addrs(out: &mut Vec<u8>, addrs: &MemberAddrs) {
    put_str(out, &addrs.peer);
    put_str(out, &addrs.client);
}

/// Reads a member's addresses.
pub(crate) fn get_addrs(
    r: &mut Reader<'_>,
    what: &'static str,
) -> Result<MemberAddrs, DecodeError> {
    Ok(MemberAddrs {
        peer: get_str(r, what)?,
        client: get_str(r, what)?,
    })
}

/// Encodes addresses for a membership change's context.
pub fn encode_context(addrs: &MemberAddrs) -> Bytes {
    let mut out = Vec::with_capacity(8 + addrs.peer.len() + addrs.client.len());
    put_addrs(&mut out, addrs);
    Bytes::from(out)
}

/// Decodes a membership change's context.
pub fn decode_context(context: &[u8]) -> Result<MemberAddrs, DecodeError> {
    let mut r = Reader::new(context);
    let addrs = get_addrs(&mut r, "membership context")?;
    r.finish()?;
    Ok(addrs)
}

/// The member a configuration entry adds as a learner, with the addresses its context carries
/// (or why they do not decode); `None` for any other entry.
pub fn added_learner(e: &raftkv_raft::Entry) -> Option<(NodeId, Result<MemberAddrs, DecodeError>)> {
    match &e.payload {
        raftkv_raft::EntryPayload::Config {
            change: Some(cc), ..
        } if cc.change_type == raftkv_raft::ConfChangeType::AddLearner => {
            Some((cc.node_id, decode_context(&cc.context)))
        }
        _ => None,
    }
}

/// Learns what an entry teaches about addresses as soon as it is in the log: the one place for
/// it, whether the driver just appended the entry or the node recovered it from its WAL at start.
///
/// Only an AddLearner's addresses are learned this early: the leader replicates to the learner
/// before the entry commits, and a follower that becomes leader must reach it too. A
/// `MemberUpdate` is learned when it is applied (the driver checks that its member is still in
/// the configuration), at start as during a run: a restarted node applies again every committed
/// entry after its snapshot.
pub(crate) fn learn_from_log(book: &mut MemberBook, e: &raftkv_raft::Entry) {
    match added_learner(e) {
        Some((id, Ok(addrs))) => {
            book.insert(id, addrs);
        }
        Some((id, Err(err))) => {
            tracing::warn!(node = id, error = %err, "membership change without addresses");
        }
        None => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn contexts_round_trip_and_garbage_is_refused() {
        let addrs = MemberAddrs {
            peer: "kv-2.kv:7100".into(),
            client: "kv-2.kv:7000".into(),
        };
        let ctx = encode_context(&addrs);
        assert_eq!(decode_context(&ctx), Ok(addrs));
        for cut in 0..ctx.len() {
            assert!(decode_context(&ctx[..cut]).is_err(), "cut at {cut}");
        }
        let mut trailing = ctx.to_vec();
        trailing.push(0);
        assert!(decode_context(&trailing).is_err());
        // A length over the limit is refused before anything is read or allocated.
        let huge = [0xff, 0xff, 0xff, 0xff];
        assert!(matches!(
            decode_context(&huge),
            Err(DecodeError::TooLong { .. })
        ));
        let not_utf8 = [0, 0, 0, 1, 0xff, 0, 0, 0, 0];
        assert!(matches!(
            decode_context(&not_utf8),
            Err(DecodeError::InvalidUtf8 { .. })
        ));
    }
}
