//! The peer transport end to end on 127.0.0.1: a `Transport` sending to a real `RaftService`.
//! Appends are pipelined on one stream (none waits for the one before it), so these tests check
//! what pipelining must not break: every message arrives, appends in the order the core produced
//! them, and heartbeats on their own lane arrive too.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use raftkv_node::metrics::Metrics;
use raftkv_node::storage::SnapshotStore;
use raftkv_node::transport::{Inbound, PeerGuards, RaftService, Transport, TransportConfig};
use raftkv_proto::v1 as pb;
use raftkv_proto::v1::raft_server::RaftServer;
use raftkv_raft::{Entry, EntryPayload, Message, MessageBody};
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio::time::timeout;
use tonic::transport::Server;
use tonic::transport::server::TcpIncoming;

const CLUSTER: &str = "pipe-test";
const WAIT: Duration = Duration::from_secs(60);

fn append(to: u64, index: u64) -> Message {
    Message {
        from: 1,
        to,
        term: 1,
        body: MessageBody::AppendEntries {
            prev_log_index: index - 1,
            prev_log_term: u64::from(index > 1),
            entries: vec![Entry {
                term: 1,
                index,
                payload: EntryPayload::Normal(Bytes::from(vec![b'x'; 300])),
            }],
            leader_commit: 0,
        },
    }
}

fn heartbeat(to: u64, round: u64) -> Message {
    Message {
        from: 1,
        to,
        term: 1,
        body: MessageBody::Heartbeat { commit: 0, round },
    }
}

/// Serves the `Raft` service of node 2 on an ephemeral port; returns its address and what it
/// hands the (absent) driver.
async fn serve_node_2() -> (String, mpsc::Receiver<Inbound>, tokio::task::JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("local addr").to_string();
    let cluster = Arc::new(OnceLock::new());
    cluster.set(CLUSTER.to_string()).expect("set once");
    let (tx, rx) = mpsc::channel(64);
    let service = RaftService::new(
        2,
        cluster,
        tx,
        SnapshotStore::in_memory(),
        PeerGuards::default(),
    );
    let server = tokio::spawn(async move {
        let _ = Server::builder()
            .add_service(RaftServer::new(service))
            .serve_with_incoming(TcpIncoming::from(listener))
            .await;
    });
    (addr, rx, server)
}

#[tokio::test]
async fn pipelined_appends_arrive_all_and_in_order_with_heartbeats_beside_them() {
    let (addr, mut inbox, server) = serve_node_2().await;
    let (feedback, mut reports) = mpsc::channel(1024);
    let mut transport = Transport::new(
        CLUSTER.into(),
        TransportConfig::default(),
        feedback,
        SnapshotStore::in_memory(),
        Metrics::new(),
    );
    transport.set_peer(2, &addr);
    // Queued all at once (the core's pipelining); the service's queue (64) is smaller than this,
    // so the streams must also wait for room rather than drop.
    const APPENDS: u64 = 600;
    const HEARTBEATS: u64 = 100;
    for i in 1..=APPENDS {
        transport.send(append(2, i));
        if i % (APPENDS / HEARTBEATS) == 0 {
            transport.send(heartbeat(2, i / (APPENDS / HEARTBEATS)));
        }
    }
    let (mut appends, mut rounds) = (Vec::new(), Vec::new());
    let received = timeout(WAIT, async {
        while (appends.len() as u64) < APPENDS || (rounds.len() as u64) < HEARTBEATS {
            match inbox.recv().await {
                Some(Inbound::Message(m)) => match m.body {
                    MessageBody::AppendEntries { entries, .. } => {
                        appends.extend(entries.iter().map(|e| e.index));
                    }
                    MessageBody::Heartbeat { round, .. } => rounds.push(round),
                    other => panic!("unexpected message {other:?}"),
                },
                Some(other) => panic!("unexpected inbound {other:?}"),
                None => break,
            }
        }
    })
    .await;
    server.abort();
    assert!(
        received.is_ok(),
        "after {WAIT:?}: {} of {APPENDS} appends and {} of {HEARTBEATS} heartbeats arrived",
        appends.len(),
        rounds.len()
    );
    assert_eq!(
        appends,
        (1..=APPENDS).collect::<Vec<_>>(),
        "appends out of order or lost"
    );
    assert_eq!(
        rounds,
        (1..=HEARTBEATS).collect::<Vec<_>>(),
        "heartbeats out of order or lost"
    );
    assert!(
        reports.try_recv().is_err(),
        "a peer that took every message was reported unreachable"
    );
}

/// A message the recipient must refuse (meant for another cluster) ends the stream, the
/// sender reports the peer unreachable, and later messages go out on a new stream.
#[tokio::test]
async fn a_refused_message_is_reported_and_the_lane_recovers() {
    let (addr, mut inbox, server) = serve_node_2().await;
    let (feedback, mut reports) = mpsc::channel(1024);
    let mut wrong = Transport::new(
        "another-cluster".into(),
        TransportConfig::default(),
        feedback.clone(),
        SnapshotStore::in_memory(),
        Metrics::new(),
    );
    wrong.set_peer(2, &addr);
    wrong.send(append(2, 1));
    let report = timeout(WAIT, reports.recv()).await;
    assert!(
        matches!(report, Ok(Some(Inbound::Unreachable(2)))),
        "a refused message was not reported: {report:?}"
    );
    let mut right = Transport::new(
        CLUSTER.into(),
        TransportConfig::default(),
        feedback,
        SnapshotStore::in_memory(),
        Metrics::new(),
    );
    right.set_peer(2, &addr);
    right.send(append(2, 1));
    let got = timeout(WAIT, inbox.recv()).await;
    server.abort();
    assert!(
        matches!(
            got,
            Ok(Some(Inbound::Message(Message {
                body: MessageBody::AppendEntries { .. },
                ..
            })))
        ),
        "the append from the right cluster did not arrive: {got:?}"
    );
}

/// A peer of an older release, which serves the unary calls but not `Pipe`: it answers
/// UNIMPLEMENTED for the stream and hands every unary append to `appends`.
struct OldPeer {
    appends: mpsc::Sender<u64>,
}

#[tonic::async_trait]
impl raftkv_proto::v1::raft_server::Raft for OldPeer {
    async fn append_entries(
        &self,
        req: tonic::Request<pb::AppendEntriesRequest>,
    ) -> Result<tonic::Response<pb::RaftAck>, tonic::Status> {
        if let Some(pb::append_entries_request::Kind::Append(a)) = req.into_inner().kind {
            for e in a.entries {
                let _ = self.appends.send(e.index).await;
            }
        }
        Ok(tonic::Response::new(pb::RaftAck {}))
    }
    async fn request_vote(
        &self,
        _: tonic::Request<pb::RequestVoteRequest>,
    ) -> Result<tonic::Response<pb::RaftAck>, tonic::Status> {
        Ok(tonic::Response::new(pb::RaftAck {}))
    }
    async fn install_snapshot(
        &self,
        _: tonic::Request<tonic::Streaming<pb::InstallSnapshotRequest>>,
    ) -> Result<tonic::Response<pb::RaftAck>, tonic::Status> {
        Err(tonic::Status::unimplemented("not in this test"))
    }
    async fn timeout_now(
        &self,
        _: tonic::Request<pb::TimeoutNowRequest>,
    ) -> Result<tonic::Response<pb::RaftAck>, tonic::Status> {
        Ok(tonic::Response::new(pb::RaftAck {}))
    }
    async fn respond(
        &self,
        _: tonic::Request<pb::RaftResponse>,
    ) -> Result<tonic::Response<pb::RaftAck>, tonic::Status> {
        Ok(tonic::Response::new(pb::RaftAck {}))
    }
    async fn pipe(
        &self,
        _: tonic::Request<tonic::Streaming<pb::RaftEnvelope>>,
    ) -> Result<tonic::Response<pb::RaftAck>, tonic::Status> {
        Err(tonic::Status::unimplemented("an older release"))
    }
}

/// During a rolling upgrade a new node must still reach an old one: once the old peer answers
/// UNIMPLEMENTED to `Pipe`, the lane sends unary calls, and what the core sends next arrives.
#[tokio::test]
async fn a_peer_without_pipe_gets_unary_calls() {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("local addr").to_string();
    let (appends_tx, mut appends) = mpsc::channel(64);
    let server = tokio::spawn(async move {
        let _ = Server::builder()
            .add_service(RaftServer::new(OldPeer {
                appends: appends_tx,
            }))
            .serve_with_incoming(TcpIncoming::from(listener))
            .await;
    });
    let (feedback, _reports) = mpsc::channel(1024);
    let mut transport = Transport::new(
        CLUSTER.into(),
        TransportConfig::default(),
        feedback,
        SnapshotStore::in_memory(),
        Metrics::new(),
    );
    transport.set_peer(2, &addr);
    // The first messages may be lost with the refused stream (as Raft tolerates); the core
    // keeps sending, so keep sending until one arrives.
    let arrived = timeout(WAIT, async {
        let mut index = 0;
        loop {
            index += 1;
            transport.send(append(2, index));
            tokio::select! {
                got = appends.recv() => return got,
                _ = tokio::time::sleep(Duration::from_millis(50)) => {}
            }
        }
    })
    .await;
    server.abort();
    assert!(
        matches!(arrived, Ok(Some(_))),
        "no append reached a peer without Pipe within {WAIT:?}"
    );
}

/// A pipe is long-lived, but must not hold a stopping node: once the node's driver is gone (its
/// queue closed), the service ends open pipes, so the server's graceful drain finishes although
/// the sender keeps its end open.
#[tokio::test]
async fn open_pipes_end_when_the_node_stops() {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("local addr").to_string();
    let cluster = Arc::new(OnceLock::new());
    cluster.set(CLUSTER.to_string()).expect("set once");
    let (tx, mut inbox) = mpsc::channel(64);
    let service = RaftService::new(
        2,
        cluster,
        tx,
        SnapshotStore::in_memory(),
        PeerGuards::default(),
    );
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(async move {
        let _ = Server::builder()
            .add_service(RaftServer::new(service))
            .serve_with_incoming_shutdown(TcpIncoming::from(listener), async {
                let _ = stopped.await;
            })
            .await;
    });
    let (feedback, _reports) = mpsc::channel(1024);
    let mut transport = Transport::new(
        CLUSTER.into(),
        TransportConfig::default(),
        feedback,
        SnapshotStore::in_memory(),
        Metrics::new(),
    );
    transport.set_peer(2, &addr);
    transport.send(append(2, 1));
    transport.send(heartbeat(2, 1));
    for _ in 0..2 {
        let got = timeout(WAIT, inbox.recv()).await;
        assert!(
            matches!(got, Ok(Some(Inbound::Message(_)))),
            "a message did not arrive: {got:?}"
        );
    }
    // The node stops: its driver's queue closes, then the server drains.
    drop(inbox);
    let _ = stop.send(());
    let drained = timeout(WAIT, server).await;
    assert!(
        drained.is_ok(),
        "the server still waited for open pipes {WAIT:?} after the node stopped"
    );
    drop(transport);
}
