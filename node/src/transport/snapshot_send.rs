//! Sending a snapshot to a peer: the file is read in chunks on the blocking pool and streamed
//! through `Raft.InstallSnapshot`, and the outcome goes back to the core as
//! `report_snapshot(ok|failed)`. Runs in its own task per transfer (started by `peer`), so
//! heartbeats and appends keep flowing to a peer that is receiving a snapshot.

use std::io::Read;

use raftkv_proto::v1 as pb;
use raftkv_proto::v1::raft_client::RaftClient;
use raftkv_raft::SnapshotMeta;
use tokio::sync::mpsc;
use tonic::transport::Channel;
use tracing::warn;

use super::types::Inbound;
use super::wire::{Header, meta_to_wire};
use crate::metrics::Metrics;
use crate::storage::SnapshotStore;

/// Streams the committed snapshot `meta` in chunks and reports the outcome to the core.
pub(super) async fn send_snapshot(
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
