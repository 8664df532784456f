//! Membership: member addresses (the book), membership requests, and members publishing their
//! own addresses.
//!
//! An added learner's addresses travel in its AddLearner entry and are learned as soon as the
//! entry is in the log (the leader replicates to it before the entry commits); a member's
//! changed addresses travel in a `MemberUpdate` entry. Every member publishes its own addresses
//! when they are missing or stale in the book, so that clients can be redirected to whoever
//! leads: the leader proposes them itself, a follower asks the leader over its peer port.

use std::time::{Duration, Instant};

use bytes::Bytes;
use raftkv_raft::{ConfChange, ConfChangeType, NO_NODE, NodeId, Role};
use tracing::debug;

use super::pending::{MembersReply, Waiter};
use super::state::Driver;
use crate::entry::EntryKind;
use crate::handle::MemberStatus;
use crate::members::{MemberAddrs, encode_context};

impl Driver {
    pub(super) fn on_add_member(
        &mut self,
        id: NodeId,
        peer: String,
        client: String,
        reply: MembersReply,
    ) {
        let addrs = MemberAddrs { peer, client };
        if self.raw.conf_state().contains(id) {
            // Already a member: this publishes (or changes) its addresses, like etcd's member
            // update. Members publish themselves this way when they start.
            if self.book.get(&id) == Some(&addrs) {
                let _ = reply.send(Ok(self.members()));
                return;
            }
            self.propose(
                EntryKind::MemberUpdate { id, addrs },
                Waiter::Members(reply),
            );
            return;
        }
        let cc = ConfChange {
            change_type: ConfChangeType::AddLearner,
            node_id: id,
            context: encode_context(&addrs),
        };
        match self.raw.propose_conf_change(cc) {
            Ok(index) => {
                // The leader starts replicating to the learner right away: it needs the address now.
                self.book.insert(id, addrs);
                self.sync_transport_peers();
                let term = self.raw.term();
                self.proposals.insert(index, (term, Waiter::Members(reply)));
            }
            Err(e) => {
                let _ = reply.send(Err(self.raft_error(e)));
            }
        }
    }

    /// Proposes removing member `id`; the reply waits until the change is applied.
    pub(super) fn on_remove_member(&mut self, id: NodeId, reply: MembersReply) {
        let cc = ConfChange {
            change_type: ConfChangeType::RemoveNode,
            node_id: id,
            context: Bytes::new(),
        };
        match self.raw.propose_conf_change(cc) {
            Ok(index) => {
                let term = self.raw.term();
                self.proposals.insert(index, (term, Waiter::Members(reply)));
            }
            Err(e) => {
                let _ = reply.send(Err(self.raft_error(e)));
            }
        }
    }

    pub(super) fn maybe_publish_self(&mut self, now: Instant) {
        if self.book.get(&self.id) == Some(&self.advertise)
            || !self.raw.conf_state().contains(self.id)
        {
            return;
        }
        if self
            .published_at
            .is_some_and(|t| now.duration_since(t) < self.cfg.tick * self.cfg.election_ticks as u32)
        {
            return;
        }
        if self.raw.role() == Role::Leader && self.raw.has_committed_in_term() {
            self.published_at = Some(now);
            let kind = EntryKind::MemberUpdate {
                id: self.id,
                addrs: self.advertise.clone(),
            };
            self.propose(kind, Waiter::Internal);
        } else if self.raw.leader_id() != NO_NODE {
            // A follower asks the leader to publish it, over the leader's peer port.
            let Some(leader_peer) = self.book.get(&self.raw.leader_id()).map(|a| a.peer.clone())
            else {
                return;
            };
            self.published_at = Some(now);
            let (id, addrs) = (self.id, self.advertise.clone());
            // One lazily connected channel per leader address, reused for every attempt (a
            // channel reconnects by itself; a new connection per call would cost a handshake).
            let channel = match &self.publish_channel {
                Some((addr, channel)) if *addr == leader_peer => channel.clone(),
                _ => match publish_channel(&leader_peer) {
                    Ok(channel) => {
                        self.publish_channel = Some((leader_peer.clone(), channel.clone()));
                        channel
                    }
                    Err(e) => {
                        debug!(error = %e, leader = %leader_peer, "bad leader peer address");
                        return;
                    }
                },
            };
            crate::task::spawn(async move {
                if let Err(e) = publish_via(channel, id, addrs).await {
                    debug!(error = %e, "publishing own addresses failed; will retry");
                }
            });
        }
    }

    /// Points the transport at every known member's peer address — including peers not (yet)
    /// in the configuration: the leader answers a joining node before its entry is applied here.
    pub(super) fn sync_transport_peers(&mut self) {
        for (id, addrs) in &self.book {
            if *id != self.id && !addrs.peer.is_empty() {
                self.transport.set_peer(*id, &addrs.peer);
            }
        }
    }

    /// Member `id`'s published client address, if known.
    pub(super) fn client_addr(&self, id: NodeId) -> Option<String> {
        self.book
            .get(&id)
            .map(|a| a.client.clone())
            .filter(|c| !c.is_empty())
    }

    pub(super) fn members(&self) -> Vec<MemberStatus> {
        let status = self.raw.status();
        status
            .conf
            .members()
            .map(|id| {
                let addrs = self.book.get(&id).cloned().unwrap_or_default();
                let progress = status.progress.get(&id);
                MemberStatus {
                    id,
                    peer_addr: addrs.peer,
                    client_addr: addrs.client,
                    voter: status.conf.voters.contains(&id),
                    match_index: progress.map_or(0, |p| p.match_index),
                    healthy: match progress {
                        Some(p) => p.recent_active,
                        None => id == self.id,
                    },
                }
            })
            .collect()
    }
}

/// A lazily connected channel to a leader's peer port, for address publication.
fn publish_channel(
    leader_peer: &str,
) -> Result<tonic::transport::Channel, tonic::transport::Error> {
    let endpoint = tonic::transport::Endpoint::from_shared(format!("http://{leader_peer}"))?
        .connect_timeout(Duration::from_secs(1))
        .timeout(Duration::from_secs(5));
    Ok(endpoint.connect_lazy())
}

/// Asks the leader (on its peer port) to record this node's addresses.
async fn publish_via(
    channel: tonic::transport::Channel,
    id: NodeId,
    addrs: MemberAddrs,
) -> Result<(), tonic::Status> {
    use raftkv_proto::v1 as pb;
    let mut client = pb::cluster_client::ClusterClient::new(channel);
    client
        .add_member(pb::AddMemberRequest {
            node_id: id,
            peer_addr: addrs.peer,
            client_addr: addrs.client,
        })
        .await?;
    Ok(())
}
