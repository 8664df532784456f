//! Outbound messages: one task per peer, each with its own bounded queue and tonic `Channel`.
//!
//! Why a task per peer: the driver must never wait on the network. It drops messages into a
//! queue with `try_send`; if the queue is full the message is dropped (Raft tolerates loss) and the
//! core is told the peer is unreachable so it stops streaming to it. Snapshot streams run in their
//! own task, so heartbeats keep flowing to a peer that is receiving a snapshot.

use std::collections::BTreeMap;
use std::io::Read;

use raftkv_proto::MAX_GRPC_MESSAGE_BYTES;
use raftkv_proto::http2::tune_endpoint;
use raftkv_proto::v1 as pb;
use raftkv_proto::v1::raft_client::RaftClient;
use raftkv_raft::{Message, NodeId, SnapshotMeta};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tonic::transport::{Channel, Endpoint};
use tracing::{debug, warn};

use super::types::{Inbound, TransportConfig};
use super::wire::{Header, Outbound, meta_to_wire, to_wire};
use crate::metrics::Metrics;
use crate::storage::SnapshotStore;

struct Peer {
    addr: String,
    tx: mpsc::Sender<Message>,
    task: JoinHandle<()>,
}

impl Drop for Peer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// What every peer task shares: where to report, what to send snapshots from, what to count.
#[derive(Clone)]
struct Shared {
    cluster_id: String,
    cfg: TransportConfig,
    feedback: mpsc::Sender<Inbound>,
    snapshots: SnapshotStore,
    metrics: std::sync::Arc<Metrics>,
}

/// Sends the core's messages to peers. Owned by the driver.
pub struct Transport {
    shared: Shared,
    peers: BTreeMap<NodeId, Peer>,
}

impl std::fmt::Debug for Transport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Transport")
            .field("peers", &self.peers.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl Transport {
    /// A transport whose failures are reported through `feedback` (the driver's inbound queue).
    pub fn new(
        cluster_id: String,
        cfg: TransportConfig,
        feedback: mpsc::Sender<Inbound>,
        snapshots: SnapshotStore,
        metrics: std::sync::Arc<Metrics>,
    ) -> Self {
        Self {
            shared: Shared {
                cluster_id,
                cfg,
                feedback,
                snapshots,
                metrics,
            },
            peers: BTreeMap::new(),
        }
    }

    /// Points `id` at `addr` (host:port). A changed address replaces the connection.
    pub fn set_peer(&mut self, id: NodeId, addr: &str) {
        if self.peers.get(&id).is_some_and(|p| p.addr == addr) {
            return;
        }
        if let Some(tls) = &self.shared.cfg.tls {
            tls.directory.set(id, addr);
        }
        let (tx, rx) = mpsc::channel(self.shared.cfg.queue_len);
        let task = crate::task::spawn(peer_task(id, addr.to_string(), rx, self.shared.clone()));
        self.peers.insert(
            id,
            Peer {
                addr: addr.to_string(),
                tx,
                task,
            },
        );
    }

    /// Forgets a peer and stops its task.
    pub fn remove_peer(&mut self, id: NodeId) {
        self.peers.remove(&id);
        if let Some(tls) = &self.shared.cfg.tls {
            tls.directory.remove(id);
        }
    }

    /// Queues `m` for its recipient; never waits.
    pub fn send(&mut self, m: Message) {
        let to = m.to;
        let Some(peer) = self.peers.get(&to) else {
            debug!(
                to,
                kind = m.body.name(),
                "no address for peer; message dropped"
            );
            self.shared.metrics.peer_failed(to);
            undelivered(&self.shared.feedback, &m);
            return;
        };
        let size = message_size(&m);
        if let Err(e) = peer.tx.try_send(m) {
            self.shared.metrics.peer_failed(to);
            let m = match e {
                mpsc::error::TrySendError::Full(m) | mpsc::error::TrySendError::Closed(m) => m,
            };
            undelivered(&self.shared.feedback, &m);
        } else {
            self.shared.metrics.peer_sent(to, size);
        }
    }
}

/// Tells the core that `m` was dropped: its peer is unreachable, and if `m` offered a snapshot,
/// that transfer failed. The core waits for a snapshot's outcome before it sends the follower
/// anything but heartbeats, so a snapshot message dropped silently (a full queue, or the queue
/// drained after a failed send to a paused peer) would leave that follower behind for good.
fn undelivered(feedback: &mpsc::Sender<Inbound>, m: &Message) {
    let _ = feedback.try_send(Inbound::Unreachable(m.to));
    if matches!(m.body, raftkv_raft::MessageBody::InstallSnapshot { .. }) {
        let _ = feedback.try_send(Inbound::SnapshotStatus {
            peer: m.to,
            ok: false,
        });
    }
}

/// Approximate wire size: the entries' sizes plus a fixed header.
fn message_size(m: &Message) -> u64 {
    const HEADER: u64 = 48;
    match &m.body {
        raftkv_raft::MessageBody::AppendEntries { entries, .. } => {
            HEADER
                + entries
                    .iter()
                    .map(raftkv_raft::Entry::size_hint)
                    .sum::<u64>()
        }
        _ => HEADER,
    }
}

fn endpoint(addr: &str, cfg: &TransportConfig) -> Result<Endpoint, tonic::transport::Error> {
    // The name is resolved again on every (re)connect, so a pod that comes back with a new IP is
    // found again under its stable DNS name. With TLS the scheme stays `http`: the TLS is the
    // connector's (see `channel`), and tonic refuses `https` without a TLS of its own.
    let endpoint = tune_endpoint(Endpoint::from_shared(format!("http://{addr}"))?);
    Ok(endpoint
        .connect_timeout(cfg.connect_timeout)
        .http2_keep_alive_interval(cfg.keepalive_interval)
        .keep_alive_timeout(cfg.rpc_timeout)
        .keep_alive_while_idle(true))
}

/// A lazily connected channel to `addr`: plain, or through the TLS connector, which takes the
/// certificate of the moment for each new connection.
fn channel(addr: &str, cfg: &TransportConfig) -> Result<Channel, tonic::transport::Error> {
    let endpoint = endpoint(addr, cfg)?;
    Ok(match &cfg.tls {
        Some(tls) => endpoint.connect_with_connector_lazy(tls.connector.clone()),
        None => endpoint.connect_lazy(),
    })
}

/// Logs a failed send at debug level, unless it is a TLS failure: that is logged once per peer
/// and reason as a warning, because it will not heal by retrying (wrong CA, expired, wrong name).
fn log_send_failure(id: NodeId, addr: &str, status: &tonic::Status, log: &crate::tls::LogOnce) {
    match raftkv_proto::tls::explain(status) {
        Some(reason) if log.should_log(&format!("node {id}"), &reason) => {
            warn!(peer = id, %addr, %reason, "TLS connection to peer refused");
        }
        Some(_) => {}
        None => debug!(peer = id, %addr, error = %status, "send failed"),
    }
}

async fn peer_task(id: NodeId, addr: String, mut rx: mpsc::Receiver<Message>, shared: Shared) {
    let Shared {
        cluster_id,
        cfg,
        feedback,
        snapshots,
        metrics,
    } = shared;
    let channel = match channel(&addr, &cfg) {
        Ok(c) => c,
        Err(e) => {
            warn!(peer = id, %addr, error = %e, "invalid peer address");
            // Drain forever so the driver sees the peer as unreachable, not as a full queue.
            while let Some(m) = rx.recv().await {
                undelivered(&feedback, &m);
            }
            return;
        }
    };
    let mut client = RaftClient::new(channel)
        .max_decoding_message_size(MAX_GRPC_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_GRPC_MESSAGE_BYTES);
    let mut snapshot_task: Option<JoinHandle<()>> = None;
    let tls_log = crate::tls::LogOnce::default();
    // Unary calls get a deadline each; snapshot streams have none (they may be long) and rely on
    // HTTP/2 keepalive to notice a dead peer.
    let deadline = cfg.rpc_timeout;
    let lease_guard_ms = u64::try_from(cfg.lease_guard.as_millis()).unwrap_or(u64::MAX);
    while let Some(m) = rx.recv().await {
        let result = match to_wire(&cluster_id, m) {
            Outbound::Append(r) => unary(deadline, client.append_entries(r)).await,
            Outbound::Vote(r) => unary(deadline, client.request_vote(r)).await,
            Outbound::TimeoutNow(r) => unary(deadline, client.timeout_now(r)).await,
            Outbound::Respond(mut r) => {
                r.lease_guard_ms = lease_guard_ms;
                unary(deadline, client.respond(r)).await
            }
            Outbound::Snapshot { header, meta } => {
                if snapshot_task.as_ref().is_some_and(|t| !t.is_finished()) {
                    // One transfer at a time; the core asks again if this one fails.
                    continue;
                }
                snapshot_task = Some(crate::task::spawn(send_snapshot(
                    client.clone(),
                    header,
                    meta,
                    snapshots.clone(),
                    cfg.snapshot_chunk,
                    feedback.clone(),
                    metrics.clone(),
                )));
                Ok(())
            }
        };
        if let Err(status) = result {
            log_send_failure(id, &addr, &status, &tls_log);
            metrics.peer_failed(id);
            let _ = feedback.try_send(Inbound::Unreachable(id));
            // Whatever is queued was meant for a peer we cannot reach now; the core resends what
            // matters, so drop it rather than pay a connect timeout per message.
            while let Ok(m) = rx.try_recv() {
                undelivered(&feedback, &m);
            }
        }
    }
    if let Some(t) = snapshot_task {
        t.abort();
    }
}

async fn unary<T>(
    deadline: std::time::Duration,
    call: impl std::future::Future<Output = Result<tonic::Response<T>, tonic::Status>>,
) -> Result<(), tonic::Status> {
    match tokio::time::timeout(deadline, call).await {
        Ok(r) => r.map(drop),
        Err(_) => Err(tonic::Status::deadline_exceeded(
            "peer did not answer in time",
        )),
    }
}

/// Streams the committed snapshot `meta` in chunks and reports the outcome to the core.
async fn send_snapshot(
    mut client: RaftClient<Channel>,
    header: Header,
    meta: SnapshotMeta,
    snapshots: SnapshotStore,
    chunk: usize,
    feedback: mpsc::Sender<Inbound>,
    metrics: std::sync::Arc<Metrics>,
) {
    let peer = header.to;
    let ok = match stream_snapshot(&mut client, &header, &meta, &snapshots, chunk).await {
        Ok(()) => true,
        Err(e) => {
            warn!(peer, index = meta.index, error = %e, "snapshot transfer failed");
            false
        }
    };
    metrics.snapshot_sent(ok);
    let _ = feedback.send(Inbound::SnapshotStatus { peer, ok }).await;
}

/// Why a snapshot transfer to a peer failed.
#[derive(Debug, thiserror::Error)]
enum SnapshotSendError {
    /// The snapshot file could not be opened.
    #[error("opening the snapshot: {0}")]
    Open(#[from] crate::storage::StorageError),
    /// Reading a chunk of it failed.
    #[error("reading the snapshot: {0}")]
    Read(#[from] std::io::Error),
    /// The stream closed before every chunk was handed to it.
    #[error("the snapshot stream was closed")]
    StreamClosed,
    /// The task that reads the chunks stopped (panicked).
    #[error("the snapshot reader task stopped: {0}")]
    Reader(#[from] tokio::task::JoinError),
    /// The peer refused the stream or the call failed.
    #[error("the peer answered: {0}")]
    Rpc(#[from] tonic::Status),
}

async fn stream_snapshot(
    client: &mut RaftClient<Channel>,
    header: &Header,
    meta: &SnapshotMeta,
    snapshots: &SnapshotStore,
    chunk: usize,
) -> Result<(), SnapshotSendError> {
    // Reading the file blocks, so chunks are read on the blocking pool and fed through a small
    // channel: the stream applies backpressure and never holds the whole snapshot in memory.
    let mut reader = snapshots.open(meta)?;
    let (tx, rx) = mpsc::channel::<pb::InstallSnapshotRequest>(4);
    let base = pb::InstallSnapshotRequest {
        cluster_id: header.cluster_id.clone(),
        from: header.from,
        to: header.to,
        term: header.term,
        ..Default::default()
    };
    let wire_meta = meta_to_wire(meta);
    let producer = tokio::task::spawn_blocking(move || -> Result<(), SnapshotSendError> {
        let mut offset = 0u64;
        let mut first = true;
        loop {
            let mut buf = vec![0u8; chunk];
            let mut filled = 0;
            while filled < chunk {
                let n = reader.read(&mut buf[filled..])?;
                if n == 0 {
                    break;
                }
                filled += n;
            }
            buf.truncate(filled);
            let done = filled < chunk;
            let req = pb::InstallSnapshotRequest {
                meta: first.then(|| wire_meta.clone()),
                offset,
                data: buf.into(),
                done,
                ..base.clone()
            };
            first = false;
            offset += filled as u64;
            if tx.blocking_send(req).is_err() {
                return Err(SnapshotSendError::StreamClosed);
            }
            if done {
                return Ok(());
            }
        }
    });
    let stream = tokio_stream::wrappers::ReceiverStream::new(rx);
    let sent = client.install_snapshot(stream).await;
    producer.await??;
    sent?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use raftkv_raft::MessageBody;
    use tokio::io::AsyncReadExt;
    use tokio::net::TcpListener;
    use tokio::time::timeout;

    use super::*;

    fn heartbeat(to: NodeId) -> Message {
        Message {
            from: 1,
            to,
            term: 1,
            body: MessageBody::AppendEntries {
                prev_log_index: 0,
                prev_log_term: 0,
                entries: vec![],
                leader_commit: 0,
            },
        }
    }

    /// A peer that stops answering (SIGSTOP) makes a send time out, and what is queued behind it
    /// is dropped. A snapshot offer among it must be reported as failed, or the core would wait
    /// for that transfer's outcome for ever and never send the follower anything again.
    #[tokio::test]
    async fn a_dropped_snapshot_offer_is_reported_as_failed() {
        // Accepts connections and never answers, as a stopped process does.
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("local addr");
        let (feedback, mut inbound) = mpsc::channel(16);
        let mut transport = Transport::new(
            "cluster".into(),
            TransportConfig {
                rpc_timeout: Duration::from_millis(300),
                ..TransportConfig::default()
            },
            feedback,
            SnapshotStore::in_memory(),
            Metrics::new(),
        );
        transport.set_peer(2, &addr.to_string());
        transport.send(heartbeat(2));
        transport.send(Message {
            from: 1,
            to: 2,
            term: 1,
            body: MessageBody::InstallSnapshot {
                meta: SnapshotMeta {
                    index: 10,
                    term: 1,
                    ..SnapshotMeta::default()
                },
            },
        });
        let reported = timeout(Duration::from_secs(10), async {
            while let Some(event) = inbound.recv().await {
                if let Inbound::SnapshotStatus { peer, ok } = event {
                    return Some((peer, ok));
                }
            }
            None
        })
        .await;
        drop(listener);
        assert_eq!(
            reported,
            Ok(Some((2, false))),
            "the dropped snapshot offer was not reported as failed"
        );
    }

    /// A member removed from the configuration gets no more traffic: forgetting the peer stops
    /// its task, and with it the connection (the removed node sees its socket closed).
    #[tokio::test]
    async fn removing_a_peer_closes_its_connection() {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("local addr");
        let (feedback, _inbound) = mpsc::channel(16);
        let mut transport = Transport::new(
            "cluster".into(),
            TransportConfig::default(),
            feedback,
            SnapshotStore::in_memory(),
            Metrics::new(),
        );
        transport.set_peer(2, &addr.to_string());
        transport.send(heartbeat(2));
        let (mut conn, _) = timeout(Duration::from_secs(10), listener.accept())
            .await
            .expect("the transport connects within 10 s")
            .expect("accept");
        let mut buf = [0u8; 4096];
        let n = timeout(Duration::from_secs(10), conn.read(&mut buf))
            .await
            .expect("the transport sends within 10 s")
            .expect("read");
        assert!(n > 0, "the transport closed before sending anything");

        transport.remove_peer(2);
        let closed = timeout(Duration::from_secs(10), async {
            loop {
                match conn.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(_) => {}
                }
            }
        })
        .await;
        assert!(
            closed.is_ok(),
            "the connection to a removed peer is still open 10 s after it was forgotten"
        );
    }
}
