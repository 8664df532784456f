//! Conversions between the core's `Message` and the `raftkv.v1.Raft` wire types.
//!
//! Every inbound conversion validates: a `oneof` that is unset, an unknown enum value or an entry
//! without a payload is refused with a [`WireError`] (answered INVALID_ARGUMENT) and never reaches
//! the core. Outbound conversion cannot fail.

use std::collections::BTreeSet;

use raftkv_proto::v1 as pb;
use raftkv_raft::{
    ConfChange, ConfChangeType, ConfState, Entry, EntryPayload, Message, MessageBody, NodeId,
    SnapshotMeta, Term,
};

/// A message from a peer that does not decode into a valid core message.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("malformed raft message: {0}")]
pub struct WireError(pub String);

fn bad<T>(why: impl Into<String>) -> Result<T, WireError> {
    Err(WireError(why.into()))
}

/// The header every Raft RPC carries.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Header {
    /// The sender's cluster id.
    pub cluster_id: String,
    /// Sender.
    pub from: NodeId,
    /// Recipient.
    pub to: NodeId,
    /// The sender's term.
    pub term: Term,
}

/// One outbound RPC for a core message.
#[derive(Clone, Debug, PartialEq)]
pub enum Outbound {
    /// `Raft.AppendEntries` (an append or a heartbeat).
    Append(pb::AppendEntriesRequest),
    /// `Raft.RequestVote`.
    Vote(pb::RequestVoteRequest),
    /// `Raft.TimeoutNow`.
    TimeoutNow(pb::TimeoutNowRequest),
    /// `Raft.Respond`.
    Respond(pb::RaftResponse),
    /// `Raft.InstallSnapshot`: the transport streams the snapshot whose metadata this is.
    Snapshot {
        /// The RPC header for every chunk.
        header: Header,
        /// Which snapshot to stream.
        meta: SnapshotMeta,
    },
}

/// Maps a core message to the RPC that carries it.
pub fn to_wire(cluster_id: &str, m: Message) -> Outbound {
    let cluster_id = cluster_id.to_string();
    let (from, to, term) = (m.from, m.to, m.term);
    let respond = |kind| {
        Outbound::Respond(pb::RaftResponse {
            cluster_id: cluster_id.clone(),
            from,
            to,
            term,
            kind: Some(kind),
            // Set by the peer task, which knows this node's timing.
            lease_guard_ms: 0,
        })
    };
    match m.body {
        MessageBody::RequestVote {
            pre_vote,
            last_log_index,
            last_log_term,
            leader_transfer,
        } => Outbound::Vote(pb::RequestVoteRequest {
            cluster_id,
            from,
            to,
            term,
            pre_vote,
            last_log_index,
            last_log_term,
            leader_transfer,
        }),
        MessageBody::AppendEntries {
            prev_log_index,
            prev_log_term,
            entries,
            leader_commit,
        } => Outbound::Append(pb::AppendEntriesRequest {
            cluster_id,
            from,
            to,
            term,
            kind: Some(pb::append_entries_request::Kind::Append(pb::Append {
                prev_log_index,
                prev_log_term,
                entries: entries.into_iter().map(entry_to_wire).collect(),
                leader_commit,
            })),
        }),
        MessageBody::Heartbeat { commit, round } => Outbound::Append(pb::AppendEntriesRequest {
            cluster_id,
            from,
            to,
            term,
            kind: Some(pb::append_entries_request::Kind::Heartbeat(pb::Heartbeat {
                commit,
                round,
            })),
        }),
        MessageBody::TimeoutNow => Outbound::TimeoutNow(pb::TimeoutNowRequest {
            cluster_id,
            from,
            to,
            term,
        }),
        MessageBody::InstallSnapshot { meta } => Outbound::Snapshot {
            header: Header {
                cluster_id,
                from,
                to,
                term,
            },
            meta,
        },
        MessageBody::RequestVoteResponse { pre_vote, granted } => respond(
            pb::raft_response::Kind::RequestVote(pb::RequestVoteResponse { pre_vote, granted }),
        ),
        MessageBody::AppendEntriesResponse {
            success,
            index,
            reject_hint,
            reject_hint_term,
        } => respond(pb::raft_response::Kind::AppendEntries(
            pb::AppendEntriesResponse {
                success,
                index,
                reject_hint,
                reject_hint_term,
            },
        )),
        MessageBody::HeartbeatResponse { round } => {
            respond(pb::raft_response::Kind::Heartbeat(pb::HeartbeatResponse {
                round,
            }))
        }
    }
}

fn conf_change_type_to_wire(t: ConfChangeType) -> pb::ConfChangeType {
    match t {
        ConfChangeType::AddLearner => pb::ConfChangeType::AddLearner,
        ConfChangeType::PromoteLearner => pb::ConfChangeType::PromoteLearner,
        ConfChangeType::RemoveNode => pb::ConfChangeType::RemoveNode,
    }
}

/// Encodes one log entry.
pub fn entry_to_wire(e: Entry) -> pb::Entry {
    let payload = match e.payload {
        EntryPayload::Noop => pb::entry::Payload::Noop(pb::Noop {}),
        EntryPayload::Normal(data) => pb::entry::Payload::Normal(data),
        EntryPayload::Config { change, conf } => pb::entry::Payload::Config(pb::ConfigEntry {
            change: change.map(|c| pb::ConfChange {
                change_type: conf_change_type_to_wire(c.change_type) as i32,
                node_id: c.node_id,
                context: c.context,
            }),
            voters: conf.voters.into_iter().collect(),
            learners: conf.learners.into_iter().collect(),
        }),
    };
    pb::Entry {
        term: e.term,
        index: e.index,
        payload: Some(payload),
    }
}

/// Encodes snapshot metadata.
pub fn meta_to_wire(meta: &SnapshotMeta) -> pb::SnapshotMeta {
    pb::SnapshotMeta {
        index: meta.index,
        term: meta.term,
        voters: meta.conf.voters.iter().copied().collect(),
        learners: meta.conf.learners.iter().copied().collect(),
    }
}

fn conf_from_wire(voters: Vec<u64>, learners: Vec<u64>) -> Result<ConfState, WireError> {
    let voters: BTreeSet<NodeId> = voters.into_iter().collect();
    let learners: BTreeSet<NodeId> = learners.into_iter().collect();
    if voters.contains(&0) || learners.contains(&0) {
        return bad("node id 0 in a configuration");
    }
    if voters.intersection(&learners).next().is_some() {
        return bad("a node is both voter and learner");
    }
    Ok(ConfState { voters, learners })
}

/// Decodes snapshot metadata.
pub fn meta_from_wire(meta: pb::SnapshotMeta) -> Result<SnapshotMeta, WireError> {
    Ok(SnapshotMeta {
        index: meta.index,
        term: meta.term,
        conf: conf_from_wire(meta.voters, meta.learners)?,
    })
}

/// Decodes one log entry.
pub fn entry_from_wire(e: pb::Entry) -> Result<Entry, WireError> {
    let payload = match e.payload {
        None => return bad(format!("entry {} has no payload", e.index)),
        Some(pb::entry::Payload::Noop(_)) => EntryPayload::Noop,
        Some(pb::entry::Payload::Normal(data)) => EntryPayload::Normal(data),
        Some(pb::entry::Payload::Config(c)) => {
            let change = match c.change {
                None => None,
                Some(cc) => {
                    let change_type = match pb::ConfChangeType::try_from(cc.change_type) {
                        Ok(pb::ConfChangeType::AddLearner) => ConfChangeType::AddLearner,
                        Ok(pb::ConfChangeType::PromoteLearner) => ConfChangeType::PromoteLearner,
                        Ok(pb::ConfChangeType::RemoveNode) => ConfChangeType::RemoveNode,
                        Err(_) => return bad(format!("unknown change type {}", cc.change_type)),
                    };
                    Some(ConfChange {
                        change_type,
                        node_id: cc.node_id,
                        context: cc.context,
                    })
                }
            };
            EntryPayload::Config {
                change,
                conf: conf_from_wire(c.voters, c.learners)?,
            }
        }
    };
    Ok(Entry {
        term: e.term,
        index: e.index,
        payload,
    })
}

/// The header of any request type: they all carry `cluster_id`, `from`, `to` and `term`.
macro_rules! header {
    ($req:expr) => {
        Header {
            cluster_id: $req.cluster_id,
            from: $req.from,
            to: $req.to,
            term: $req.term,
        }
    };
}

fn message(h: Header, body: MessageBody) -> Message {
    Message {
        from: h.from,
        to: h.to,
        term: h.term,
        body,
    }
}

/// Decodes `Raft.AppendEntries`.
pub fn append_from_wire(req: pb::AppendEntriesRequest) -> Result<(Header, Message), WireError> {
    let h = header!(req);
    let body = match req.kind {
        None => return bad("AppendEntries without append or heartbeat"),
        Some(pb::append_entries_request::Kind::Heartbeat(hb)) => MessageBody::Heartbeat {
            commit: hb.commit,
            round: hb.round,
        },
        Some(pb::append_entries_request::Kind::Append(a)) => {
            let entries = a
                .entries
                .into_iter()
                .map(entry_from_wire)
                .collect::<Result<Vec<_>, _>>()?;
            // The core relies on contiguous entries right after prev_log_index.
            for (i, e) in entries.iter().enumerate() {
                if e.index != a.prev_log_index + 1 + i as u64 {
                    return bad(format!(
                        "entry index {} does not follow prev_log_index {}",
                        e.index, a.prev_log_index
                    ));
                }
            }
            MessageBody::AppendEntries {
                prev_log_index: a.prev_log_index,
                prev_log_term: a.prev_log_term,
                entries,
                leader_commit: a.leader_commit,
            }
        }
    };
    Ok((h.clone(), message(h, body)))
}

/// Decodes `Raft.RequestVote`.
pub fn vote_from_wire(req: pb::RequestVoteRequest) -> (Header, Message) {
    let h = header!(req);
    let body = MessageBody::RequestVote {
        pre_vote: req.pre_vote,
        last_log_index: req.last_log_index,
        last_log_term: req.last_log_term,
        leader_transfer: req.leader_transfer,
    };
    (h.clone(), message(h, body))
}

/// Decodes `Raft.TimeoutNow`.
pub fn timeout_now_from_wire(req: pb::TimeoutNowRequest) -> (Header, Message) {
    let h = header!(req);
    (h.clone(), message(h, MessageBody::TimeoutNow))
}

/// Decodes `Raft.Respond`.
pub fn response_from_wire(req: pb::RaftResponse) -> Result<(Header, Message), WireError> {
    let h = header!(req);
    let body = match req.kind {
        None => return bad("Respond without an answer"),
        Some(pb::raft_response::Kind::RequestVote(r)) => MessageBody::RequestVoteResponse {
            pre_vote: r.pre_vote,
            granted: r.granted,
        },
        Some(pb::raft_response::Kind::AppendEntries(r)) => MessageBody::AppendEntriesResponse {
            success: r.success,
            index: r.index,
            reject_hint: r.reject_hint,
            reject_hint_term: r.reject_hint_term,
        },
        Some(pb::raft_response::Kind::Heartbeat(r)) => {
            MessageBody::HeartbeatResponse { round: r.round }
        }
    };
    Ok((h.clone(), message(h, body)))
}

/// Decodes a header-only view of a snapshot stream's first chunk into the core's message.
pub fn snapshot_message(h: &Header, meta: SnapshotMeta) -> Message {
    message(h.clone(), MessageBody::InstallSnapshot { meta })
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;

    fn roundtrip(m: Message) -> Message {
        match to_wire("c1", m) {
            Outbound::Append(r) => append_from_wire(r).map(|x| x.1),
            Outbound::Vote(r) => Ok(vote_from_wire(r).1),
            Outbound::TimeoutNow(r) => Ok(timeout_now_from_wire(r).1),
            Outbound::Respond(r) => response_from_wire(r).map(|x| x.1),
            Outbound::Snapshot { header, meta } => Ok(snapshot_message(&header, meta)),
        }
        .expect("valid")
    }

    #[test]
    fn every_message_kind_round_trips() {
        let conf = ConfState::with_voters([1, 2, 3]);
        let entries = vec![
            Entry {
                term: 2,
                index: 5,
                payload: EntryPayload::Noop,
            },
            Entry {
                term: 2,
                index: 6,
                payload: EntryPayload::Normal(Bytes::from_static(b"cmd")),
            },
            Entry {
                term: 2,
                index: 7,
                payload: EntryPayload::Config {
                    change: Some(ConfChange {
                        change_type: ConfChangeType::RemoveNode,
                        node_id: 3,
                        context: Bytes::from_static(b"ctx"),
                    }),
                    conf: conf.clone(),
                },
            },
        ];
        let bodies = vec![
            MessageBody::RequestVote {
                pre_vote: true,
                last_log_index: 4,
                last_log_term: 1,
                leader_transfer: true,
            },
            MessageBody::RequestVoteResponse {
                pre_vote: false,
                granted: true,
            },
            MessageBody::AppendEntries {
                prev_log_index: 4,
                prev_log_term: 1,
                entries,
                leader_commit: 3,
            },
            MessageBody::AppendEntriesResponse {
                success: false,
                index: 9,
                reject_hint: 4,
                reject_hint_term: 1,
            },
            MessageBody::Heartbeat {
                commit: 3,
                round: 17,
            },
            MessageBody::HeartbeatResponse { round: 17 },
            MessageBody::InstallSnapshot {
                meta: SnapshotMeta {
                    index: 10,
                    term: 2,
                    conf,
                },
            },
            MessageBody::TimeoutNow,
        ];
        for body in bodies {
            let m = Message {
                from: 1,
                to: 2,
                term: 3,
                body,
            };
            assert_eq!(roundtrip(m.clone()), m);
        }
    }

    #[test]
    fn malformed_messages_are_refused() {
        let no_kind = pb::AppendEntriesRequest::default();
        assert!(append_from_wire(no_kind).is_err());
        let gap = pb::AppendEntriesRequest {
            kind: Some(pb::append_entries_request::Kind::Append(pb::Append {
                prev_log_index: 3,
                entries: vec![pb::Entry {
                    term: 1,
                    index: 9,
                    payload: Some(pb::entry::Payload::Noop(pb::Noop {})),
                }],
                ..Default::default()
            })),
            ..Default::default()
        };
        assert!(append_from_wire(gap).is_err());
        let no_payload = pb::Entry {
            term: 1,
            index: 1,
            payload: None,
        };
        assert!(entry_from_wire(no_payload).is_err());
        let bad_type = pb::Entry {
            term: 1,
            index: 1,
            payload: Some(pb::entry::Payload::Config(pb::ConfigEntry {
                change: Some(pb::ConfChange {
                    change_type: 99,
                    node_id: 1,
                    context: Bytes::new(),
                }),
                voters: vec![1],
                learners: vec![],
            })),
        };
        assert!(entry_from_wire(bad_type).is_err());
        assert!(response_from_wire(pb::RaftResponse::default()).is_err());
        assert!(
            meta_from_wire(pb::SnapshotMeta {
                voters: vec![1, 2],
                learners: vec![2],
                ..Default::default()
            })
            .is_err()
        );
    }
}
