//! The transport's shared vocabulary: what arrives for the driver ([`Inbound`]), how peer
//! connections are tuned and secured ([`TransportConfig`], [`PeerTls`]), the lease guards peers
//! report ([`PeerGuards`]) and where each member's peer address is ([`PeerDirectory`]). Both the sender tasks (`peer`) and the `Raft` service (`server`) use these,
//! so they live in a room of their own rather than in the parent that re-exports them.

use std::time::Duration;

use raftkv_raft::{Message, NodeId};

use crate::storage::StagedSnapshot;

/// The lease guard each peer last reported in its responses (`RaftResponse.lease_guard_ms`),
/// written by the Raft service as responses arrive and read by the driver when it times a lease.
#[derive(Clone, Debug, Default)]
pub struct PeerGuards(
    std::sync::Arc<std::sync::Mutex<std::collections::BTreeMap<NodeId, Duration>>>,
);

impl PeerGuards {
    /// Records what `peer` reported (0 = nothing reported: ignored).
    pub fn record(&self, peer: NodeId, guard_ms: u64) {
        if guard_ms == 0 {
            return;
        }
        crate::sync::lock(&self.0).insert(peer, Duration::from_millis(guard_ms));
    }

    /// The shortest guard reported by any of `peers` that reported one.
    pub fn shortest(&self, peers: impl IntoIterator<Item = NodeId>) -> Option<Duration> {
        let guards = crate::sync::lock(&self.0);
        peers
            .into_iter()
            .filter_map(|p| guards.get(&p).copied())
            .min()
    }
}

/// Every member's peer address as the transport knows it (`Transport::set_peer` keeps it), so
/// that the Raft service can check a message's sender against the certificate it came with.
#[derive(Clone, Debug, Default)]
pub struct PeerDirectory(
    std::sync::Arc<std::sync::Mutex<std::collections::BTreeMap<NodeId, String>>>,
);

impl PeerDirectory {
    /// `id` listens at `addr` (host:port).
    pub fn set(&self, id: NodeId, addr: &str) {
        crate::sync::lock(&self.0).insert(id, addr.to_owned());
    }

    /// `id` is no longer a member.
    pub fn remove(&self, id: NodeId) {
        crate::sync::lock(&self.0).remove(&id);
    }

    /// Where `id` listens, if it is known.
    pub fn get(&self, id: NodeId) -> Option<String> {
        crate::sync::lock(&self.0).get(&id).cloned()
    }
}

/// Mutual TLS between peers: how to dial, and who is who.
#[derive(Clone, Debug)]
pub struct PeerTls {
    /// Dials peers with TLS (the configuration of the moment, so rotation needs no restart).
    pub connector: raftkv_proto::tls::Connector,
    /// Kept by the transport, read by the Raft service to bind `from` to the certificate.
    pub directory: PeerDirectory,
}

/// What the transport hands the driver.
#[derive(Debug)]
pub enum Inbound {
    /// A message from a peer.
    Message(Message),
    /// A complete, durable snapshot from the leader, with the core's InstallSnapshot message.
    Snapshot {
        /// The InstallSnapshot message to step.
        msg: Message,
        /// The staged data, installed when the core's `Ready` says so.
        data: StagedSnapshot,
    },
    /// Sending to a peer failed; the core should stop streaming to it.
    Unreachable(NodeId),
    /// A snapshot transfer to a peer finished.
    SnapshotStatus {
        /// The peer.
        peer: NodeId,
        /// Whether the peer accepted it.
        ok: bool,
    },
}

/// Timeouts and limits of peer connections.
#[derive(Clone, Debug)]
pub struct TransportConfig {
    /// How long a connection attempt may take.
    pub connect_timeout: Duration,
    /// How long a unary call may take, and how long a keepalive ping may go unanswered before the
    /// connection (with its `Pipe` streams and any snapshot stream) is given up.
    pub rpc_timeout: Duration,
    /// HTTP/2 keepalive ping interval when nothing arrives from the peer. Messages on a `Pipe`
    /// stream get no answer of their own, so these pings are how a peer that stopped answering
    /// (a paused process, a dropped network) is noticed: within this plus `rpc_timeout`.
    pub keepalive_interval: Duration,
    /// Messages queued per peer and lane before new ones are dropped (and the peer reported
    /// unreachable).
    pub queue_len: usize,
    /// Bytes of snapshot data per chunk.
    pub snapshot_chunk: usize,
    /// This node's lease guard, sent with every response (`RaftResponse.lease_guard_ms`; see
    /// [`crate::DriverConfig::lease_guard`]).
    pub lease_guard: Duration,
    /// Mutual TLS to peers; `None` dials plain TCP.
    pub tls: Option<PeerTls>,
}

impl Default for TransportConfig {
    fn default() -> Self {
        Self {
            connect_timeout: Duration::from_secs(1),
            rpc_timeout: Duration::from_secs(5),
            keepalive_interval: Duration::from_secs(1),
            queue_len: 1024,
            snapshot_chunk: 256 << 10,
            lease_guard: Duration::ZERO,
            tls: None,
        }
    }
}
