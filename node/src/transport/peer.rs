//! Outbound messages: per peer, two lanes, each a bounded queue drained by its own task, both on
//! one tonic `Channel` (one HTTP/2 connection).
//!
//! Why tasks: the driver must never wait on the network. It drops messages into a queue with
//! `try_send`; if the queue is full the message is dropped (Raft tolerates loss) and the core is
//! told the peer is unreachable so it stops streaming to it.
//!
//! Why a long-lived stream (`Raft.Pipe`) per lane rather than one awaited call per message: a
//! message is sent as soon as it is queued, without waiting for the previous one's ack, so the
//! core's pipelining (up to `max_inflight_msgs` appends per follower) reaches the wire, and a
//! stream keeps them in order, which pipelined unary calls would not (the server runs each call
//! as its own task). Order matters for speed, not safety: the core tolerates loss and
//! reordering, but an append that overtakes an earlier one is rejected and sends the leader back
//! to probing.
//!
//! Why two lanes: appends (`Log`) can be large; heartbeats, votes, answers and TimeoutNow
//! (`Control`) must not wait behind them, or a follower busy receiving the log would time out
//! its leader. HTTP/2 interleaves the two streams. No order between lanes is needed: a heartbeat
//! carries `min(match, commit)`, never more than the follower holds.
//!
//! Snapshot streams run in their own task (`snapshot_send`), so heartbeats keep flowing to a
//! peer that is receiving a snapshot. A peer that stops answering is noticed by HTTP/2
//! keepalive (a ping every `keepalive_interval`, dead after `rpc_timeout` without an answer),
//! which ends the lane's stream and its snapshot stream alike.

use std::collections::BTreeMap;

use raftkv_proto::MAX_GRPC_MESSAGE_BYTES;
use raftkv_proto::http2::tune_endpoint;
use raftkv_proto::v1 as pb;
use raftkv_proto::v1::raft_client::RaftClient;
use raftkv_raft::{Message, NodeId, SnapshotMeta};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tonic::transport::{Channel, Endpoint};
use tracing::{debug, info, warn};

use super::snapshot_send::send_snapshot;
use super::types::{Inbound, TransportConfig};
use super::wire::{Header, Outbound, to_wire};
use crate::metrics::Metrics;
use crate::storage::SnapshotStore;

/// A peer's two lanes (see the module docs), each a bounded queue drained by its own task.
struct Peer {
    addr: String,
    /// AppendEntries messages, in the order the core produced them.
    log: mpsc::Sender<Message>,
    /// Everything else: heartbeats, votes, answers, TimeoutNow, snapshot offers.
    control: mpsc::Sender<Message>,
    tasks: [JoinHandle<()>; 2],
}

impl Drop for Peer {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// Which of a peer's two lanes a message travels on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Lane {
    Log,
    Control,
}

impl Lane {
    fn of(m: &Message) -> Self {
        match m.body {
            raftkv_raft::MessageBody::AppendEntries { .. } => Lane::Log,
            _ => Lane::Control,
        }
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
        // One channel (one HTTP/2 connection) carries both lanes.
        let client = match channel(addr, &self.shared.cfg) {
            Ok(c) => Some(
                RaftClient::new(c)
                    .max_decoding_message_size(MAX_GRPC_MESSAGE_BYTES)
                    .max_encoding_message_size(MAX_GRPC_MESSAGE_BYTES),
            ),
            Err(e) => {
                warn!(peer = id, %addr, error = %e, "invalid peer address");
                None
            }
        };
        let (log, log_rx) = mpsc::channel(self.shared.cfg.queue_len);
        let (control, control_rx) = mpsc::channel(self.shared.cfg.queue_len);
        let spawn = |rx| {
            crate::task::spawn(lane_task(
                LaneTask {
                    peer: id,
                    addr: addr.to_string(),
                    client: client.clone(),
                    shared: self.shared.clone(),
                },
                rx,
            ))
        };
        let tasks = [spawn(log_rx), spawn(control_rx)];
        self.peers.insert(
            id,
            Peer {
                addr: addr.to_string(),
                log,
                control,
                tasks,
            },
        );
    }

    /// Forgets a peer and stops its tasks.
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
        let queue = match Lane::of(&m) {
            Lane::Log => &peer.log,
            Lane::Control => &peer.control,
        };
        if let Err(e) = queue.try_send(m) {
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

/// One lane of one peer: the messages it sends and how.
struct LaneTask {
    peer: NodeId,
    addr: String,
    /// `None` when the address is invalid: every message is then undelivered.
    client: Option<RaftClient<Channel>>,
    shared: Shared,
}

/// Messages handed to an open `Pipe` stream but not yet taken by HTTP/2; a full buffer holds
/// the lane back, and then the lane's queue, which the driver sees as an unreachable peer.
const PIPE_BUFFER: usize = 64;

/// Sends one lane's messages on a long-lived `Pipe` stream, opened when there is something to
/// send and again after it fails. A peer that does not serve `Pipe` (an older release, during a
/// rolling upgrade) is sent unary calls instead, one at a time.
async fn lane_task(task: LaneTask, mut rx: mpsc::Receiver<Message>) {
    let Some(client) = task.client.clone() else {
        // Drain forever so the driver sees the peer as unreachable, not as a full queue.
        while let Some(m) = rx.recv().await {
            undelivered(&task.shared.feedback, &m);
        }
        return;
    };
    let mut snapshot_task: Option<JoinHandle<()>> = None;
    let mut unary_only = false;
    let tls_log = crate::tls::LogOnce::default();
    while let Some(first) = rx.recv().await {
        let result = if unary_only {
            send_unary(&task, &client, &mut snapshot_task, first).await
        } else {
            match pipe(&task, &client, &mut snapshot_task, first, &mut rx).await {
                Err(status) if status.code() == tonic::Code::Unimplemented => {
                    info!(peer = task.peer, addr = %task.addr, "the peer does not serve Raft.Pipe; sending unary calls");
                    unary_only = true;
                    Ok(())
                }
                r => r,
            }
        };
        if let Err(status) = result {
            log_send_failure(task.peer, &task.addr, &status, &tls_log);
            task.shared.metrics.peer_failed(task.peer);
            let _ = task
                .shared
                .feedback
                .try_send(Inbound::Unreachable(task.peer));
            // Whatever is queued was meant for a peer we cannot reach now; the core resends what
            // matters, so drop it rather than pay a connect timeout per message.
            while let Ok(m) = rx.try_recv() {
                undelivered(&task.shared.feedback, &m);
            }
        }
    }
    if let Some(t) = snapshot_task {
        t.abort();
    }
}

/// Opens a `Pipe` stream with `first` and keeps feeding it from `rx` until the stream ends
/// (the peer refused a message, or the connection broke: HTTP/2 keepalive notices a peer that
/// stopped answering) or the lane is closed. Only the stream's outcome is awaited, never a
/// message's, so several appends are in flight at once, in order.
async fn pipe(
    task: &LaneTask,
    client: &RaftClient<Channel>,
    snapshot_task: &mut Option<JoinHandle<()>>,
    first: Message,
    rx: &mut mpsc::Receiver<Message>,
) -> Result<(), tonic::Status> {
    let (tx, body) = mpsc::channel(PIPE_BUFFER);
    let mut caller = client.clone();
    let call = async move {
        caller
            .pipe(tokio_stream::wrappers::ReceiverStream::new(body))
            .await
    };
    tokio::pin!(call);
    let closed = || tonic::Status::unavailable("the stream to the peer closed");
    let mut next = Some(first);
    loop {
        if let Some(m) = next.take()
            && let Some(envelope) = envelope(task, client, snapshot_task, m)
        {
            tokio::select! {
                biased;
                ended = &mut call => return ended.map(drop),
                sent = tx.send(envelope) => if sent.is_err() { return Err(closed()) },
            }
        }
        tokio::select! {
            biased;
            ended = &mut call => return ended.map(drop),
            m = rx.recv() => match m {
                Some(m) => next = Some(m),
                // The peer was removed: end the stream cleanly.
                None => return Ok(()),
            },
        }
    }
}

/// The envelope that carries `m` on a `Pipe` stream; `None` for a snapshot offer, which is
/// started here on its own stream instead.
fn envelope(
    task: &LaneTask,
    client: &RaftClient<Channel>,
    snapshot_task: &mut Option<JoinHandle<()>>,
    m: Message,
) -> Option<pb::RaftEnvelope> {
    use pb::raft_envelope::Kind;
    let kind = match to_wire(&task.shared.cluster_id, m) {
        Outbound::Append(r) => Kind::AppendEntries(r),
        Outbound::Vote(r) => Kind::RequestVote(r),
        Outbound::TimeoutNow(r) => Kind::TimeoutNow(r),
        Outbound::Respond(mut r) => {
            r.lease_guard_ms = lease_guard_ms(&task.shared.cfg);
            Kind::Respond(r)
        }
        Outbound::Snapshot { header, meta } => {
            start_snapshot(task, client, snapshot_task, header, meta);
            return None;
        }
    };
    Some(pb::RaftEnvelope { kind: Some(kind) })
}

/// This node's lease guard in milliseconds, as every response reports it.
fn lease_guard_ms(cfg: &TransportConfig) -> u64 {
    u64::try_from(cfg.lease_guard.as_millis()).unwrap_or(u64::MAX)
}

/// Starts streaming a snapshot unless one is already being sent to this peer.
fn start_snapshot(
    task: &LaneTask,
    client: &RaftClient<Channel>,
    snapshot_task: &mut Option<JoinHandle<()>>,
    header: Header,
    meta: SnapshotMeta,
) {
    if snapshot_task.as_ref().is_some_and(|t| !t.is_finished()) {
        // One transfer at a time; the core asks again if this one fails.
        return;
    }
    let shared = &task.shared;
    *snapshot_task = Some(crate::task::spawn(send_snapshot(
        client.clone(),
        header,
        meta,
        shared.snapshots.clone(),
        shared.cfg.snapshot_chunk,
        shared.feedback.clone(),
        shared.metrics.clone(),
    )));
}

/// Sends `m` as its own unary call and waits for the ack (for peers without `Pipe`).
async fn send_unary(
    task: &LaneTask,
    client: &RaftClient<Channel>,
    snapshot_task: &mut Option<JoinHandle<()>>,
    m: Message,
) -> Result<(), tonic::Status> {
    let mut client = client.clone();
    // Unary calls get a deadline each; snapshot streams have none (they may be long) and rely on
    // HTTP/2 keepalive to notice a dead peer.
    let deadline = task.shared.cfg.rpc_timeout;
    match to_wire(&task.shared.cluster_id, m) {
        Outbound::Append(r) => unary(deadline, client.append_entries(r)).await,
        Outbound::Vote(r) => unary(deadline, client.request_vote(r)).await,
        Outbound::TimeoutNow(r) => unary(deadline, client.timeout_now(r)).await,
        Outbound::Respond(mut r) => {
            r.lease_guard_ms = lease_guard_ms(&task.shared.cfg);
            unary(deadline, client.respond(r)).await
        }
        Outbound::Snapshot { header, meta } => {
            start_snapshot(task, &client, snapshot_task, header, meta);
            Ok(())
        }
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
