//! Prometheus metrics of one node, and the small HTTP endpoint that serves them on their own port.
//!
//! Counters and gauges are atomics updated on the hot paths (driver, transport, API); rendering
//! takes a snapshot in the text exposition format 0.0.4. There is no metrics crate: the handful
//! of series below do not justify one, and an exporter that answers only `GET /metrics` has
//! little surface for bad input (anything else gets 400/404 and the connection is closed).
//!
//! Series (all prefixed `raftkv_`):
//! - `term`, `role` (0 follower, 1 pre-candidate, 2 candidate, 3 leader), `leader_id`,
//!   `commit_index`, `applied_index`, `is_member`;
//! - `proposal_duration_seconds` (histogram: propose to apply, on the leader),
//!   `fsync_duration_seconds` (histogram: one storage batch, write and fsync);
//! - `peer_messages_sent_total{peer}`, `peer_bytes_sent_total{peer}`,
//!   `peer_send_failures_total{peer}`;
//! - `rpc_errors_total{code}` (client API errors by gRPC code);
//! - `snapshots_taken_total`, `snapshots_installed_total`, `snapshots_sent_total{result}`;
//! - `leader_silence_max_seconds` (the longest a follower went without a message from its leader
//!   within one term, since the node started).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use raftkv_raft::{NodeId, Role};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tracing::debug;

/// Bucket upper bounds in seconds, 100 µs to 10 s.
const BUCKETS: [f64; 14] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 10.0,
];

/// A fixed-bucket histogram of durations.
#[derive(Debug, Default)]
pub struct Histogram {
    counts: [AtomicU64; BUCKETS.len()],
    overflow: AtomicU64,
    sum_nanos: AtomicU64,
}

impl Histogram {
    /// Records one observation.
    pub fn observe(&self, d: Duration) {
        let secs = d.as_secs_f64();
        match BUCKETS.iter().position(|&b| secs <= b) {
            Some(i) => self.counts[i].fetch_add(1, Ordering::Relaxed),
            None => self.overflow.fetch_add(1, Ordering::Relaxed),
        };
        self.sum_nanos.fetch_add(
            d.as_nanos().min(u128::from(u64::MAX)) as u64,
            Ordering::Relaxed,
        );
    }

    fn render(&self, out: &mut String, name: &str, help: &str) {
        let _ = writeln!(out, "# HELP {name} {help}");
        let _ = writeln!(out, "# TYPE {name} histogram");
        let mut cumulative = 0;
        for (i, b) in BUCKETS.iter().enumerate() {
            cumulative += self.counts[i].load(Ordering::Relaxed);
            let _ = writeln!(out, "{name}_bucket{{le=\"{b}\"}} {cumulative}");
        }
        cumulative += self.overflow.load(Ordering::Relaxed);
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {cumulative}");
        let sum = self.sum_nanos.load(Ordering::Relaxed) as f64 / 1e9;
        let _ = writeln!(out, "{name}_sum {sum}");
        let _ = writeln!(out, "{name}_count {cumulative}");
    }
}

#[derive(Debug, Default)]
struct PeerCounters {
    messages: u64,
    bytes: u64,
    failures: u64,
}

/// Everything a node counts. Shared (`Arc`) between the driver, transport and services.
#[derive(Debug, Default)]
pub struct Metrics {
    term: AtomicU64,
    role: AtomicU64,
    leader_id: AtomicU64,
    commit_index: AtomicU64,
    applied_index: AtomicU64,
    is_member: AtomicU64,
    /// Propose-to-apply latency of writes on the leader.
    pub proposal_duration: Histogram,
    /// Duration of one storage batch (writes plus one fsync).
    pub fsync_duration: Histogram,
    peers: Mutex<BTreeMap<NodeId, PeerCounters>>,
    rpc_errors: Mutex<BTreeMap<&'static str, u64>>,
    snapshots_taken: AtomicU64,
    snapshots_installed: AtomicU64,
    snapshots_sent_ok: AtomicU64,
    snapshots_sent_failed: AtomicU64,
    leader_silence_max_nanos: AtomicU64,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A panic while counting cannot leave the maps inconsistent; keep serving.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Metrics {
    /// A fresh set of metrics.
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// Records the core's state after a `Ready`.
    pub fn set_state(
        &self,
        term: u64,
        role: Role,
        leader_id: NodeId,
        commit: u64,
        applied: u64,
        member: bool,
    ) {
        self.term.store(term, Ordering::Relaxed);
        let role = match role {
            Role::Follower => 0,
            Role::PreCandidate => 1,
            Role::Candidate => 2,
            Role::Leader => 3,
        };
        self.role.store(role, Ordering::Relaxed);
        self.leader_id.store(leader_id, Ordering::Relaxed);
        self.commit_index.store(commit, Ordering::Relaxed);
        self.applied_index.store(applied, Ordering::Relaxed);
        self.is_member.store(u64::from(member), Ordering::Relaxed);
    }

    /// A message of `bytes` bytes was sent to `peer`.
    pub fn peer_sent(&self, peer: NodeId, bytes: u64) {
        let mut peers = lock(&self.peers);
        let c = peers.entry(peer).or_default();
        c.messages += 1;
        c.bytes += bytes;
    }

    /// Sending to `peer` failed.
    pub fn peer_failed(&self, peer: NodeId) {
        lock(&self.peers).entry(peer).or_default().failures += 1;
    }

    /// A client request failed with `code`.
    pub fn rpc_error(&self, code: tonic::Code) {
        *lock(&self.rpc_errors).entry(code_name(code)).or_default() += 1;
    }

    /// A local snapshot was taken.
    pub fn snapshot_taken(&self) {
        self.snapshots_taken.fetch_add(1, Ordering::Relaxed);
    }

    /// A snapshot from the leader was installed.
    pub fn snapshot_installed(&self) {
        self.snapshots_installed.fetch_add(1, Ordering::Relaxed);
    }

    /// A snapshot transfer to a follower finished.
    pub fn snapshot_sent(&self, ok: bool) {
        if ok {
            self.snapshots_sent_ok.fetch_add(1, Ordering::Relaxed);
        } else {
            self.snapshots_sent_failed.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// A follower heard from its leader `gap` after the previous message of the same term.
    pub fn leader_silence(&self, gap: Duration) {
        let nanos = gap.as_nanos().min(u128::from(u64::MAX)) as u64;
        self.leader_silence_max_nanos
            .fetch_max(nanos, Ordering::Relaxed);
    }

    /// The text exposition of every series.
    pub fn render(&self, node_id: NodeId) -> String {
        let mut out = String::with_capacity(4096);
        let gauge = |out: &mut String, name: &str, help: &str, v: u64| {
            let _ = writeln!(out, "# HELP raftkv_{name} {help}");
            let _ = writeln!(out, "# TYPE raftkv_{name} gauge");
            let _ = writeln!(out, "raftkv_{name} {v}");
        };
        gauge(&mut out, "node_id", "This node's id.", node_id);
        gauge(
            &mut out,
            "term",
            "Current Raft term.",
            self.term.load(Ordering::Relaxed),
        );
        gauge(
            &mut out,
            "role",
            "Raft role: 0 follower, 1 pre-candidate, 2 candidate, 3 leader.",
            self.role.load(Ordering::Relaxed),
        );
        gauge(
            &mut out,
            "leader_id",
            "The leader this node follows (0 = none known).",
            self.leader_id.load(Ordering::Relaxed),
        );
        gauge(
            &mut out,
            "commit_index",
            "Highest log index known committed.",
            self.commit_index.load(Ordering::Relaxed),
        );
        gauge(
            &mut out,
            "applied_index",
            "Highest log index applied to the state machine.",
            self.applied_index.load(Ordering::Relaxed),
        );
        gauge(
            &mut out,
            "is_member",
            "1 if this node is in the cluster configuration.",
            self.is_member.load(Ordering::Relaxed),
        );
        self.proposal_duration.render(
            &mut out,
            "raftkv_proposal_duration_seconds",
            "Time from proposing a write to applying it, on the leader.",
        );
        self.fsync_duration.render(
            &mut out,
            "raftkv_fsync_duration_seconds",
            "Time to write and fsync one storage batch.",
        );
        {
            let peers = lock(&self.peers);
            for (name, help, pick) in [
                (
                    "peer_messages_sent_total",
                    "Raft messages sent, per peer.",
                    (|c: &PeerCounters| c.messages) as fn(&PeerCounters) -> u64,
                ),
                (
                    "peer_bytes_sent_total",
                    "Approximate bytes of log entries sent, per peer.",
                    |c: &PeerCounters| c.bytes,
                ),
                (
                    "peer_send_failures_total",
                    "Messages that could not be delivered, per peer.",
                    |c: &PeerCounters| c.failures,
                ),
            ] {
                let _ = writeln!(out, "# HELP raftkv_{name} {help}");
                let _ = writeln!(out, "# TYPE raftkv_{name} counter");
                for (peer, c) in peers.iter() {
                    let _ = writeln!(out, "raftkv_{name}{{peer=\"{peer}\"}} {}", pick(c));
                }
            }
        }
        let _ = writeln!(
            out,
            "# HELP raftkv_rpc_errors_total Client API errors by gRPC code."
        );
        let _ = writeln!(out, "# TYPE raftkv_rpc_errors_total counter");
        for (code, n) in lock(&self.rpc_errors).iter() {
            let _ = writeln!(out, "raftkv_rpc_errors_total{{code=\"{code}\"}} {n}");
        }
        for (name, help, v) in [
            (
                "snapshots_taken_total",
                "Local snapshots taken (each followed by log compaction).",
                self.snapshots_taken.load(Ordering::Relaxed),
            ),
            (
                "snapshots_installed_total",
                "Snapshots received from a leader and installed.",
                self.snapshots_installed.load(Ordering::Relaxed),
            ),
        ] {
            let _ = writeln!(out, "# HELP raftkv_{name} {help}");
            let _ = writeln!(out, "# TYPE raftkv_{name} counter");
            let _ = writeln!(out, "raftkv_{name} {v}");
        }
        let _ = writeln!(
            out,
            "# HELP raftkv_snapshots_sent_total Snapshot transfers to followers, by result."
        );
        let _ = writeln!(out, "# TYPE raftkv_snapshots_sent_total counter");
        let _ = writeln!(
            out,
            "raftkv_snapshots_sent_total{{result=\"ok\"}} {}",
            self.snapshots_sent_ok.load(Ordering::Relaxed)
        );
        let _ = writeln!(
            out,
            "raftkv_snapshots_sent_total{{result=\"failed\"}} {}",
            self.snapshots_sent_failed.load(Ordering::Relaxed)
        );
        let _ = writeln!(
            out,
            "# HELP raftkv_leader_silence_max_seconds Longest time this node went without a message \
             from its leader within one term."
        );
        let _ = writeln!(out, "# TYPE raftkv_leader_silence_max_seconds gauge");
        let _ = writeln!(
            out,
            "raftkv_leader_silence_max_seconds {}",
            self.leader_silence_max_nanos.load(Ordering::Relaxed) as f64 / 1e9
        );
        out
    }
}

fn code_name(code: tonic::Code) -> &'static str {
    use tonic::Code::*;
    match code {
        Ok => "OK",
        Cancelled => "CANCELLED",
        Unknown => "UNKNOWN",
        InvalidArgument => "INVALID_ARGUMENT",
        DeadlineExceeded => "DEADLINE_EXCEEDED",
        NotFound => "NOT_FOUND",
        AlreadyExists => "ALREADY_EXISTS",
        PermissionDenied => "PERMISSION_DENIED",
        ResourceExhausted => "RESOURCE_EXHAUSTED",
        FailedPrecondition => "FAILED_PRECONDITION",
        Aborted => "ABORTED",
        OutOfRange => "OUT_OF_RANGE",
        Unimplemented => "UNIMPLEMENTED",
        Internal => "INTERNAL",
        Unavailable => "UNAVAILABLE",
        DataLoss => "DATA_LOSS",
        Unauthenticated => "UNAUTHENTICATED",
    }
}

/// Largest request head accepted; a scrape's is a few hundred bytes.
const MAX_REQUEST_HEAD: usize = 8 << 10;

/// Serves `GET /metrics` on `listener` until `stop` turns true.
pub async fn serve(
    listener: TcpListener,
    metrics: Arc<Metrics>,
    node_id: NodeId,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = stop.changed() => return,
        };
        let Ok((stream, peer)) = accepted else {
            continue;
        };
        let metrics = metrics.clone();
        crate::spawn(async move {
            let r = tokio::time::timeout(
                Duration::from_secs(5),
                handle_connection(stream, &metrics, node_id),
            )
            .await;
            if !matches!(r, Ok(Ok(()))) {
                debug!(%peer, "metrics connection ended early");
            }
        });
    }
}

async fn handle_connection(
    mut stream: tokio::net::TcpStream,
    metrics: &Metrics,
    node_id: NodeId,
) -> std::io::Result<()> {
    let mut head = Vec::with_capacity(512);
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = stream.read(&mut buf).await?;
        if n == 0 {
            return Ok(());
        }
        head.extend_from_slice(&buf[..n]);
        if head.len() > MAX_REQUEST_HEAD {
            return respond(&mut stream, "431 Request Header Fields Too Large", "").await;
        }
    }
    let line = head.split(|&b| b == b'\r').next().unwrap_or_default();
    let mut parts = line.split(|&b| b == b' ');
    let (method, path) = (parts.next(), parts.next());
    match (method, path) {
        (Some(b"GET"), Some(b"/metrics")) => {
            respond(&mut stream, "200 OK", &metrics.render(node_id)).await
        }
        (Some(b"GET"), Some(_)) => respond(&mut stream, "404 Not Found", "try /metrics\n").await,
        _ => respond(&mut stream, "400 Bad Request", "").await,
    }
}

async fn respond(
    stream: &mut tokio::net::TcpStream,
    status: &str,
    body: &str,
) -> std::io::Result<()> {
    let head = format!(
        "HTTP/1.1 {status}\r\ncontent-type: text/plain; version=0.0.4; charset=utf-8\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await?;
    stream.write_all(body.as_bytes()).await?;
    stream.shutdown().await
}

/// Binds `addr` and serves metrics in the background.
pub async fn spawn(
    addr: SocketAddr,
    metrics: Arc<Metrics>,
    node_id: NodeId,
    stop: watch::Receiver<bool>,
) -> std::io::Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
    let listener = TcpListener::bind(addr).await?;
    let local = listener.local_addr()?;
    Ok((local, crate::spawn(serve(listener, metrics, node_id, stop))))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_every_series() {
        let m = Metrics::new();
        m.set_state(4, Role::Leader, 2, 10, 9, true);
        m.proposal_duration.observe(Duration::from_millis(3));
        m.fsync_duration.observe(Duration::from_secs(20));
        m.peer_sent(3, 100);
        m.peer_failed(3);
        m.rpc_error(tonic::Code::Unavailable);
        m.snapshot_taken();
        m.snapshot_sent(false);
        m.leader_silence(Duration::from_millis(250));
        m.leader_silence(Duration::from_millis(100));
        let text = m.render(2);
        for line in [
            "raftkv_term 4",
            "raftkv_role 3",
            "raftkv_commit_index 10",
            "raftkv_applied_index 9",
            "raftkv_proposal_duration_seconds_bucket{le=\"0.005\"} 1",
            "raftkv_proposal_duration_seconds_count 1",
            "raftkv_fsync_duration_seconds_bucket{le=\"+Inf\"} 1",
            "raftkv_peer_messages_sent_total{peer=\"3\"} 1",
            "raftkv_peer_bytes_sent_total{peer=\"3\"} 100",
            "raftkv_peer_send_failures_total{peer=\"3\"} 1",
            "raftkv_rpc_errors_total{code=\"UNAVAILABLE\"} 1",
            "raftkv_snapshots_taken_total 1",
            "raftkv_snapshots_sent_total{result=\"failed\"} 1",
            "raftkv_leader_silence_max_seconds 0.25",
        ] {
            assert!(text.contains(line), "missing {line:?} in\n{text}");
        }
    }
}
