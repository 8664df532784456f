//! The `raftkv.v1.Raft` service: admits messages from peers into the driver's queue.
//!
//! Admission checks: the message names this node as recipient and carries this cluster's id
//! (addresses are reused when pods move, and a message meant for another node or cluster must
//! never reach the core), and it decodes into a valid core message. On a unary call a full queue
//! answers RESOURCE_EXHAUSTED: the message is dropped, which Raft tolerates. On a `Pipe` stream
//! (how nodes send to each other) messages are queued in the order they came, waiting for room.

use std::io::Write;
use std::sync::{Arc, OnceLock};

use raftkv_proto::v1 as pb;
use raftkv_proto::v1::raft_envelope::Kind;
use raftkv_raft::NodeId;
use tokio::sync::mpsc;
use tokio_stream::StreamExt;
use tonic::{Request, Response, Status, Streaming};

use super::types::{Inbound, PeerGuards};
use super::wire::{
    Header, append_from_wire, meta_from_wire, response_from_wire, snapshot_message,
    timeout_now_from_wire, vote_from_wire,
};
use crate::storage::SnapshotStore;

/// The Raft service of one node.
#[derive(Clone, Debug)]
pub struct RaftService {
    id: NodeId,
    /// Set once the node knows its cluster; until then every message is refused.
    cluster_id: Arc<OnceLock<String>>,
    tx: mpsc::Sender<Inbound>,
    snapshots: SnapshotStore,
    guards: PeerGuards,
}

impl RaftService {
    /// Admits messages for node `id` of `cluster_id` (once set) into `tx`.
    pub fn new(
        id: NodeId,
        cluster_id: Arc<OnceLock<String>>,
        tx: mpsc::Sender<Inbound>,
        snapshots: SnapshotStore,
        guards: PeerGuards,
    ) -> Self {
        Self {
            id,
            cluster_id,
            tx,
            snapshots,
            guards,
        }
    }

    fn check(&self, h: &Header) -> Result<(), Status> {
        let Some(cluster_id) = self.cluster_id.get() else {
            return Err(Status::unavailable("the node is starting"));
        };
        if h.cluster_id != *cluster_id {
            return Err(Status::failed_precondition(format!(
                "cluster id mismatch: message for cluster {:?}, this node belongs to {:?}",
                h.cluster_id, cluster_id
            )));
        }
        if h.to != self.id {
            return Err(Status::failed_precondition(format!(
                "message for node {} reached node {}",
                h.to, self.id
            )));
        }
        if h.from == 0 || h.from == self.id {
            return Err(Status::invalid_argument(format!(
                "invalid sender id {}",
                h.from
            )));
        }
        Ok(())
    }

    /// Queues a checked message for the core without waiting (a unary call's admission).
    fn admit(&self, inbound: Inbound) -> Result<Response<pb::RaftAck>, Status> {
        self.tx.try_send(inbound).map_err(|e| match e {
            mpsc::error::TrySendError::Full(_) => {
                Status::resource_exhausted("the node's raft inbox is full")
            }
            mpsc::error::TrySendError::Closed(_) => Status::unavailable("the node is stopping"),
        })?;
        Ok(Response::new(pb::RaftAck {}))
    }
}

fn invalid(e: impl std::fmt::Display) -> Status {
    Status::invalid_argument(e.to_string())
}

/// Checks and converts one message of any kind, as its unary RPC or a `Pipe` stream carries it.
fn decode(service: &RaftService, kind: Kind) -> Result<Inbound, Status> {
    let (h, m, lease_guard_ms) = match kind {
        Kind::AppendEntries(r) => {
            let (h, m) = append_from_wire(r).map_err(invalid)?;
            (h, m, None)
        }
        Kind::RequestVote(r) => {
            let (h, m) = vote_from_wire(r);
            (h, m, None)
        }
        Kind::TimeoutNow(r) => {
            let (h, m) = timeout_now_from_wire(r);
            (h, m, None)
        }
        Kind::Respond(r) => {
            let guard_ms = r.lease_guard_ms;
            let (h, m) = response_from_wire(r).map_err(invalid)?;
            (h, m, Some(guard_ms))
        }
    };
    service.check(&h)?;
    if let Some(guard_ms) = lease_guard_ms {
        // Recorded before the message reaches the driver: an acknowledgement that extends a
        // lease is always timed with its sender's current guard.
        service.guards.record(h.from, guard_ms);
    }
    Ok(Inbound::Message(m))
}

#[tonic::async_trait]
impl pb::raft_server::Raft for RaftService {
    async fn append_entries(
        &self,
        req: Request<pb::AppendEntriesRequest>,
    ) -> Result<Response<pb::RaftAck>, Status> {
        let inbound = decode(self, Kind::AppendEntries(req.into_inner()))?;
        self.admit(inbound)
    }

    async fn request_vote(
        &self,
        req: Request<pb::RequestVoteRequest>,
    ) -> Result<Response<pb::RaftAck>, Status> {
        let inbound = decode(self, Kind::RequestVote(req.into_inner()))?;
        self.admit(inbound)
    }

    async fn timeout_now(
        &self,
        req: Request<pb::TimeoutNowRequest>,
    ) -> Result<Response<pb::RaftAck>, Status> {
        let inbound = decode(self, Kind::TimeoutNow(req.into_inner()))?;
        self.admit(inbound)
    }

    async fn respond(
        &self,
        req: Request<pb::RaftResponse>,
    ) -> Result<Response<pb::RaftAck>, Status> {
        let inbound = decode(self, Kind::Respond(req.into_inner()))?;
        self.admit(inbound)
    }

    async fn pipe(
        &self,
        req: Request<Streaming<pb::RaftEnvelope>>,
    ) -> Result<Response<pb::RaftAck>, Status> {
        let mut stream = req.into_inner();
        loop {
            // A pipe lives as long as its sender wants; end it when the driver stops, so that the
            // server's graceful drain at shutdown does not wait for the peers to close theirs.
            let envelope = tokio::select! {
                next = stream.next() => match next {
                    Some(envelope) => envelope,
                    None => break,
                },
                _ = self.tx.closed() => return Err(Status::unavailable("the node is stopping")),
            };
            let kind = envelope?
                .kind
                .ok_or_else(|| Status::invalid_argument("a raft envelope with no message"))?;
            let inbound = decode(self, kind)?;
            // Unlike a unary call, wait for room: the messages behind this one keep their order,
            // and HTTP/2 flow control slows the sender down meanwhile.
            self.tx
                .send(inbound)
                .await
                .map_err(|_| Status::unavailable("the node is stopping"))?;
        }
        Ok(Response::new(pb::RaftAck {}))
    }

    async fn install_snapshot(
        &self,
        req: Request<Streaming<pb::InstallSnapshotRequest>>,
    ) -> Result<Response<pb::RaftAck>, Status> {
        let mut stream = req.into_inner();
        let first = stream
            .next()
            .await
            .ok_or_else(|| Status::invalid_argument("empty snapshot stream"))??;
        let header = Header {
            cluster_id: first.cluster_id.clone(),
            from: first.from,
            to: first.to,
            term: first.term,
        };
        self.check(&header)?;
        let meta = meta_from_wire(
            first
                .meta
                .clone()
                .ok_or_else(|| Status::invalid_argument("the first snapshot chunk has no meta"))?,
        )
        .map_err(invalid)?;
        let mut writer = self
            .snapshots
            .writer(meta.clone())
            .map_err(|e| Status::internal(format!("cannot stage snapshot: {e}")))?;
        let mut chunk = first;
        let mut expected = 0u64;
        loop {
            if chunk.offset != expected {
                return Err(Status::invalid_argument(format!(
                    "snapshot chunk at offset {} but {expected} bytes were received",
                    chunk.offset
                )));
            }
            if chunk.from != header.from || chunk.term != header.term {
                return Err(Status::invalid_argument(
                    "snapshot chunks from different senders",
                ));
            }
            // Local disk writes of at most one chunk; small enough not to stall the runtime.
            writer
                .write_all(&chunk.data)
                .map_err(|e| Status::internal(format!("cannot write snapshot: {e}")))?;
            expected += chunk.data.len() as u64;
            if chunk.done {
                break;
            }
            chunk = stream.next().await.ok_or_else(|| {
                Status::invalid_argument("snapshot stream ended before the last chunk")
            })??;
        }
        // Sealing fsyncs; keep it off the async workers.
        let staged = tokio::task::spawn_blocking(move || writer.finish())
            .await
            .map_err(|e| Status::internal(e.to_string()))?
            .map_err(|e| Status::internal(format!("cannot seal snapshot: {e}")))?;
        let msg = snapshot_message(&header, meta);
        self.admit(Inbound::Snapshot { msg, data: staged })
    }
}
