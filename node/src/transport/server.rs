//! The `raftkv.v1.Raft` service: admits messages from peers into the driver's queue.
//!
//! Admission checks: the message names this node as recipient and carries this cluster's id
//! (addresses are reused when pods move, and a message meant for another node or cluster must
//! never reach the core), and it decodes into a valid core message. On a unary call a full queue
//! answers RESOURCE_EXHAUSTED: the message is dropped, which Raft tolerates. On a `Pipe` stream
//! (how nodes send to each other) messages are queued in the order they came, waiting for room.
//!
//! With peer TLS, the sender is also authenticated: the handshake proved the certificate chains
//! to the peer CA, and here the certificate must be valid for the host of the peer address the
//! claimed sender (`from`) advertises (the membership, as the transport knows it). Otherwise
//! PERMISSION_DENIED, logged once per claimed sender and reason. Checking the cluster id stops
//! mistakes; this stops a holder of one member's certificate from speaking as another. Without
//! peer TLS the port is unprotected (README, "Security").

use std::io::Write;
use std::sync::{Arc, OnceLock};

use raftkv_proto::v1 as pb;
use raftkv_proto::v1::raft_envelope::Kind;
use raftkv_raft::NodeId;
use tokio::sync::mpsc;
use tokio_stream::StreamExt;
use tonic::{Request, Response, Status, Streaming};

use super::types::{Inbound, PeerDirectory, PeerGuards};
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
    /// With peer TLS: who listens where, to check a sender against its certificate.
    auth: Option<(PeerDirectory, Arc<crate::tls::LogOnce>)>,
}

/// The client certificates of the connection a request came on (peer TLS only).
type PeerCerts = Option<Arc<Vec<tonic::transport::CertificateDer<'static>>>>;

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
            auth: None,
        }
    }

    /// Requires every message's sender to be the member its connection's certificate names
    /// (peer TLS). `log` limits the refusals logged to one per sender and reason.
    pub fn with_peer_auth(
        mut self,
        directory: PeerDirectory,
        log: Arc<crate::tls::LogOnce>,
    ) -> Self {
        self.auth = Some((directory, log));
        self
    }

    /// With peer TLS, that the certificate `certs` came with is valid for member `from`'s
    /// advertised peer host.
    fn authenticate(&self, certs: &PeerCerts, from: NodeId) -> Result<(), Status> {
        let Some((directory, log)) = &self.auth else {
            return Ok(());
        };
        let Some(leaf) = certs.as_ref().and_then(|c| c.first()) else {
            return Err(Status::unauthenticated("peer TLS: no client certificate"));
        };
        let Some(addr) = directory.get(from) else {
            let reason = "not a known member";
            if log.should_log(&format!("node {from}"), reason) {
                tracing::warn!(
                    peer = from,
                    "refused a Raft message: the sender is {reason}"
                );
            }
            return Err(Status::permission_denied(format!(
                "node {from} is {reason}"
            )));
        };
        let host = crate::tls::host_of(&addr);
        crate::tls::cert_covers_host(leaf, host).map_err(|reason| {
            if log.should_log(&format!("node {from}"), &reason) {
                tracing::warn!(peer = from, %host, %reason, "refused a Raft message: the certificate does not belong to the member it claims to be");
            }
            Status::permission_denied(format!(
                "the client certificate is not that of node {from} ({host}): {reason}"
            ))
        })
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

/// Checks, authenticates and converts one message of any kind, as its unary RPC or a `Pipe`
/// stream carries it; `certs` are those of the connection it came on.
fn decode(service: &RaftService, certs: &PeerCerts, kind: Kind) -> Result<Inbound, Status> {
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
    service.authenticate(certs, h.from)?;
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
        let certs = req.peer_certs();
        let inbound = decode(self, &certs, Kind::AppendEntries(req.into_inner()))?;
        self.admit(inbound)
    }

    async fn request_vote(
        &self,
        req: Request<pb::RequestVoteRequest>,
    ) -> Result<Response<pb::RaftAck>, Status> {
        let certs = req.peer_certs();
        let inbound = decode(self, &certs, Kind::RequestVote(req.into_inner()))?;
        self.admit(inbound)
    }

    async fn timeout_now(
        &self,
        req: Request<pb::TimeoutNowRequest>,
    ) -> Result<Response<pb::RaftAck>, Status> {
        let certs = req.peer_certs();
        let inbound = decode(self, &certs, Kind::TimeoutNow(req.into_inner()))?;
        self.admit(inbound)
    }

    async fn respond(
        &self,
        req: Request<pb::RaftResponse>,
    ) -> Result<Response<pb::RaftAck>, Status> {
        let certs = req.peer_certs();
        let inbound = decode(self, &certs, Kind::Respond(req.into_inner()))?;
        self.admit(inbound)
    }

    async fn pipe(
        &self,
        req: Request<Streaming<pb::RaftEnvelope>>,
    ) -> Result<Response<pb::RaftAck>, Status> {
        let certs = req.peer_certs();
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
            // Every message is authenticated, not just the first: `from` is per message.
            let inbound = decode(self, &certs, kind)?;
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
        let certs = req.peer_certs();
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
        // Before a byte is staged: a forged snapshot must not even reach the disk.
        self.authenticate(&certs, header.from)?;
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
        // Checked again at admission: the membership may have changed during the transfer.
        self.check(&header)?;
        self.authenticate(&certs, header.from)?;
        let msg = snapshot_message(&header, meta);
        self.admit(Inbound::Snapshot { msg, data: staged })
    }
}
