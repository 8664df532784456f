//! Prometheus metrics of one node, and the small HTTP endpoint that serves them on their own port.
//!
//! Series are registered with `prometheus-client` (the operator uses it too) and encoded by it in
//! the Prometheus text format 0.0.4 (`prometheus_text`), not OpenMetrics: that is the format the
//! node has always served, so every series keeps its exact name (counters end in `_total`, which
//! the library appends to the registered name), type, labels, help text and bucket bounds
//! (`node/tests/metrics.rs` keeps the catalogue). The hot paths (driver, transport, API) only
//! touch the library's atomics; encoding happens per scrape.
//!
//! The endpoint is hyper 1's HTTP/1 server, not axum: the node already builds hyper with the
//! `server` and `http1` features (tonic serves gRPC with it), so serving compiles nothing new,
//! while `axum::serve` would need axum features the node does not build today (`tokio`, `http1`),
//! only to route one path. hyper also lets us cap the request head (`max_buf_size`, answered with
//! 431), which `axum::serve` does not expose. Bad input has little surface: unparsable requests
//! get 400 from hyper, other paths 404, other methods 405; every connection is closed after one
//! response and dropped after `CONNECTION_TIMEOUT` (5 s).
//!
//! Series (all prefixed `raftkv_`):
//! - `node_id`, `term`, `role` (0 follower, 1 pre-candidate, 2 candidate, 3 leader), `leader_id`,
//!   `commit_index`, `applied_index`, `is_member`;
//! - `proposal_duration_seconds` (histogram: propose to apply, on the leader),
//!   `fsync_duration_seconds` (histogram: one storage batch, write and fsync);
//! - `peer_messages_sent_total{peer}`, `peer_bytes_sent_total{peer}`,
//!   `peer_send_failures_total{peer}`;
//! - `rpc_errors_total{code}` (client API errors by gRPC code);
//! - `snapshots_taken_total`, `snapshots_installed_total`, `snapshots_sent_total{result}`;
//! - `read_lease_seconds` (on the leader: the lease it grants itself, bounded by the shortest
//!   lease guard its voters report; 0 elsewhere);
//! - `leader_silence_max_seconds` (the longest a follower went without a message from its leader
//!   within one term, since the node started);
//! - `tls_certificate_expiry_timestamp_seconds{port}` (`peer` or `client`: when the certificate
//!   the port serves expires, as Unix time; present only for ports with TLS on, updated when the
//!   certificate is rotated).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{ALLOW, CONTENT_TYPE, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use prometheus_client::encoding::{EncodeLabelSet, prometheus_text};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use raftkv_raft::{NodeId, Role};
use tokio::net::TcpListener;
use tracing::debug;

use crate::shutdown::Shutdown;

/// Bucket upper bounds in seconds, 100 µs to 10 s.
const BUCKETS: [f64; 14] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 10.0,
];

/// Largest request head accepted (hyper's smallest allowed buffer); a scrape's is a few hundred
/// bytes.
const MAX_REQUEST_HEAD: usize = 8 << 10;

/// How long one scrape connection may take, so a client that sends nothing cannot hold a task.
const CONNECTION_TIMEOUT: Duration = Duration::from_secs(5);

/// A gauge of a non-negative count (terms, indexes, ids are `u64`).
type U64Gauge = Gauge<u64, AtomicU64>;
type F64Gauge = Gauge<f64, AtomicU64>;

/// A histogram of durations, in seconds.
#[derive(Debug)]
pub struct Histogram(prometheus_client::metrics::histogram::Histogram);

impl Histogram {
    fn new() -> Self {
        Self(prometheus_client::metrics::histogram::Histogram::new(
            BUCKETS,
        ))
    }

    /// Records one observation.
    pub fn observe(&self, d: Duration) {
        self.0.observe(d.as_secs_f64());
    }
}

/// The `peer` label: the node id a message went to.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct PeerLabel {
    peer: NodeId,
}

/// The `code` label: a gRPC status code in its canonical upper-case name.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct CodeLabel {
    code: &'static str,
}

/// The `result` label of a snapshot transfer: `ok` or `failed`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct ResultLabel {
    result: &'static str,
}

/// The `port` label of a TLS certificate: `peer` or `client`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct PortLabel {
    port: &'static str,
}

/// Everything a node counts. Shared (`Arc`) between the driver, transport and services.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    node_id: U64Gauge,
    term: U64Gauge,
    role: U64Gauge,
    leader_id: U64Gauge,
    commit_index: U64Gauge,
    applied_index: U64Gauge,
    is_member: U64Gauge,
    /// Propose-to-apply latency of writes on the leader.
    pub proposal_duration: Histogram,
    /// Duration of one storage batch (writes plus one fsync).
    pub fsync_duration: Histogram,
    peer_messages_sent: Family<PeerLabel, Counter>,
    peer_bytes_sent: Family<PeerLabel, Counter>,
    peer_send_failures: Family<PeerLabel, Counter>,
    rpc_errors: Family<CodeLabel, Counter>,
    snapshots_taken: Counter,
    snapshots_installed: Counter,
    snapshots_sent: Family<ResultLabel, Counter>,
    read_lease: F64Gauge,
    leader_silence_max: F64Gauge,
    leader_silence_max_nanos: AtomicU64,
    tls_expiry: Family<PortLabel, Gauge<i64>>,
}

impl Default for Metrics {
    fn default() -> Self {
        // Help texts are written without their final period: the library appends one.
        let mut registry = Registry::with_prefix("raftkv");
        let gauge = |registry: &mut Registry, name: &str, help: &str| {
            let g = U64Gauge::default();
            registry.register(name, help, g.clone());
            g
        };
        let node_id = gauge(&mut registry, "node_id", "This node's id");
        let term = gauge(&mut registry, "term", "Current Raft term");
        let role = gauge(
            &mut registry,
            "role",
            "Raft role: 0 follower, 1 pre-candidate, 2 candidate, 3 leader",
        );
        let leader_id = gauge(
            &mut registry,
            "leader_id",
            "The leader this node follows (0 = none known)",
        );
        let commit_index = gauge(
            &mut registry,
            "commit_index",
            "Highest log index known committed",
        );
        let applied_index = gauge(
            &mut registry,
            "applied_index",
            "Highest log index applied to the state machine",
        );
        let is_member = gauge(
            &mut registry,
            "is_member",
            "1 if this node is in the cluster configuration",
        );
        let proposal_duration = Histogram::new();
        registry.register(
            "proposal_duration_seconds",
            "Time from proposing a write to applying it, on the leader",
            proposal_duration.0.clone(),
        );
        let fsync_duration = Histogram::new();
        registry.register(
            "fsync_duration_seconds",
            "Time to write and fsync one storage batch",
            fsync_duration.0.clone(),
        );
        // Counters are registered without `_total`: the library appends it.
        let peer_messages_sent = Family::default();
        registry.register(
            "peer_messages_sent",
            "Raft messages sent, per peer",
            peer_messages_sent.clone(),
        );
        let peer_bytes_sent = Family::default();
        registry.register(
            "peer_bytes_sent",
            "Approximate bytes of log entries sent, per peer",
            peer_bytes_sent.clone(),
        );
        let peer_send_failures = Family::default();
        registry.register(
            "peer_send_failures",
            "Messages that could not be delivered, per peer",
            peer_send_failures.clone(),
        );
        let rpc_errors = Family::default();
        registry.register(
            "rpc_errors",
            "Client API errors by gRPC code",
            rpc_errors.clone(),
        );
        let snapshots_taken = Counter::default();
        registry.register(
            "snapshots_taken",
            "Local snapshots taken (each followed by log compaction)",
            snapshots_taken.clone(),
        );
        let snapshots_installed = Counter::default();
        registry.register(
            "snapshots_installed",
            "Snapshots received from a leader and installed",
            snapshots_installed.clone(),
        );
        let snapshots_sent = Family::<ResultLabel, Counter>::default();
        registry.register(
            "snapshots_sent",
            "Snapshot transfers to followers, by result",
            snapshots_sent.clone(),
        );
        // Both results are exposed from the start, so a rate over them never starts from a gap.
        for result in ["ok", "failed"] {
            snapshots_sent.get_or_create_owned(&ResultLabel { result });
        }
        let read_lease = F64Gauge::default();
        registry.register(
            "read_lease_seconds",
            "The read lease this leader grants itself (0 when not leading)",
            read_lease.clone(),
        );
        let leader_silence_max = F64Gauge::default();
        registry.register(
            "leader_silence_max_seconds",
            "Longest time this node went without a message from its leader within one term",
            leader_silence_max.clone(),
        );
        let tls_expiry = Family::<PortLabel, Gauge<i64>>::default();
        registry.register(
            "tls_certificate_expiry_timestamp_seconds",
            "When the certificate served on a port expires, in Unix time",
            tls_expiry.clone(),
        );
        Self {
            registry,
            node_id,
            term,
            role,
            leader_id,
            commit_index,
            applied_index,
            is_member,
            proposal_duration,
            fsync_duration,
            peer_messages_sent,
            peer_bytes_sent,
            peer_send_failures,
            rpc_errors,
            snapshots_taken,
            snapshots_installed,
            snapshots_sent,
            read_lease,
            leader_silence_max,
            leader_silence_max_nanos: AtomicU64::new(0),
            tls_expiry,
        }
    }
}

impl Metrics {
    /// A fresh set of metrics.
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// Records this node's id (constant for the life of the process).
    pub fn set_node_id(&self, id: NodeId) {
        self.node_id.set(id);
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
        self.term.set(term);
        let role = match role {
            Role::Follower => 0,
            Role::PreCandidate => 1,
            Role::Candidate => 2,
            Role::Leader => 3,
        };
        self.role.set(role);
        self.leader_id.set(leader_id);
        self.commit_index.set(commit);
        self.applied_index.set(applied);
        self.is_member.set(u64::from(member));
    }

    /// The three counters of `peer`, created together so that a peer that was only ever
    /// unreachable still shows `0` messages sent rather than no series at all.
    fn peer(&self, peer: NodeId) -> [Counter; 3] {
        let label = PeerLabel { peer };
        [
            &self.peer_messages_sent,
            &self.peer_bytes_sent,
            &self.peer_send_failures,
        ]
        .map(|family| family.get_or_create_owned(&label))
    }

    /// A message of `bytes` bytes was sent to `peer`.
    pub fn peer_sent(&self, peer: NodeId, bytes: u64) {
        let [messages, sent_bytes, _] = self.peer(peer);
        messages.inc();
        sent_bytes.inc_by(bytes);
    }

    /// Sending to `peer` failed.
    pub fn peer_failed(&self, peer: NodeId) {
        let [_, _, failures] = self.peer(peer);
        failures.inc();
    }

    /// A client request failed with `code`.
    pub fn rpc_error(&self, code: tonic::Code) {
        self.rpc_errors
            .get_or_create(&CodeLabel {
                code: code_name(code),
            })
            .inc();
    }

    /// The read lease a leader grants itself (zero when not leading).
    pub fn set_read_lease(&self, lease: Duration) {
        self.read_lease.set(lease.as_secs_f64());
    }

    /// A follower went `gap` without a message from its leader (within one term); the gauge
    /// keeps the longest.
    pub fn leader_silence(&self, gap: Duration) {
        let nanos = u64::try_from(gap.as_nanos()).unwrap_or(u64::MAX);
        let longest = self
            .leader_silence_max_nanos
            .fetch_max(nanos, std::sync::atomic::Ordering::Relaxed)
            .max(nanos);
        self.leader_silence_max.set(longest as f64 / 1e9);
    }

    /// The certificate served on `port` (`peer` or `client`) expires at `unix_seconds`.
    pub fn set_tls_expiry(&self, port: &'static str, unix_seconds: i64) {
        self.tls_expiry
            .get_or_create(&PortLabel { port })
            .set(unix_seconds);
    }

    /// A local snapshot was taken.
    pub fn snapshot_taken(&self) {
        self.snapshots_taken.inc();
    }

    /// A snapshot from the leader was installed.
    pub fn snapshot_installed(&self) {
        self.snapshots_installed.inc();
    }

    /// A snapshot transfer to a follower finished.
    pub fn snapshot_sent(&self, ok: bool) {
        let result = if ok { "ok" } else { "failed" };
        self.snapshots_sent
            .get_or_create(&ResultLabel { result })
            .inc();
    }

    /// The text exposition (format 0.0.4) of every series.
    pub fn render(&self) -> String {
        let mut out = String::with_capacity(4096);
        // Writing into a String cannot fail, and every label and help text is ours.
        if let Err(e) = prometheus_text::encode(&mut out, &self.registry) {
            debug!(error = %e, "encoding metrics failed");
        }
        out
    }
}

/// The canonical name of a gRPC code, as in the gRPC spec's status code table.
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

/// Answers one request: `GET /metrics` is the exposition; anything else is an error.
fn respond(metrics: &Metrics, request: &Request<Incoming>) -> Response<Full<Bytes>> {
    let text = |status: StatusCode, body: &'static str| {
        let mut r = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
        *r.status_mut() = status;
        r.headers_mut().insert(
            CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=utf-8"),
        );
        r
    };
    if request.uri().path() != "/metrics" {
        return text(StatusCode::NOT_FOUND, "try /metrics\n");
    }
    if request.method() != Method::GET {
        let mut r = text(StatusCode::METHOD_NOT_ALLOWED, "");
        r.headers_mut()
            .insert(ALLOW, HeaderValue::from_static("GET"));
        return r;
    }
    let mut r = Response::new(Full::new(Bytes::from(metrics.render())));
    r.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static(prometheus_text::CONTENT_TYPE),
    );
    r
}

/// Serves one connection: one request, one response, then close (scrapers reconnect each
/// interval, and a closed connection is the simplest state to be in on bad input).
async fn serve_connection(
    stream: tokio::net::TcpStream,
    metrics: Arc<Metrics>,
) -> hyper::Result<()> {
    let service = hyper::service::service_fn(move |request| {
        let response = respond(&metrics, &request);
        async move { Ok::<_, Infallible>(response) }
    });
    hyper::server::conn::http1::Builder::new()
        .keep_alive(false)
        .max_buf_size(MAX_REQUEST_HEAD)
        .serve_connection(TokioIo::new(stream), service)
        .await
}

/// Serves `GET /metrics` on `listener` until `shutdown` is triggered.
pub(crate) async fn serve(listener: TcpListener, metrics: Arc<Metrics>, mut shutdown: Shutdown) {
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = shutdown.recv() => return,
        };
        let Ok((stream, peer)) = accepted else {
            continue;
        };
        let metrics = metrics.clone();
        crate::task::spawn(async move {
            match tokio::time::timeout(CONNECTION_TIMEOUT, serve_connection(stream, metrics)).await
            {
                Ok(Ok(())) => {}
                Ok(Err(e)) => debug!(%peer, error = %e, "metrics connection failed"),
                Err(_) => debug!(%peer, "metrics connection timed out"),
            }
        });
    }
}

/// Binds `addr` and serves metrics in the background; `node_id` is exposed as `raftkv_node_id`.
pub(crate) async fn spawn(
    addr: SocketAddr,
    metrics: Arc<Metrics>,
    node_id: NodeId,
    shutdown: Shutdown,
) -> std::io::Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
    let listener = TcpListener::bind(addr).await?;
    let local = listener.local_addr()?;
    metrics.set_node_id(node_id);
    Ok((
        local,
        crate::task::spawn(serve(listener, metrics, shutdown)),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_every_series() {
        let m = Metrics::new();
        m.set_node_id(2);
        m.set_state(4, Role::Leader, 2, 10, 9, true);
        m.proposal_duration.observe(Duration::from_millis(3));
        m.fsync_duration.observe(Duration::from_secs(20));
        m.peer_sent(3, 100);
        m.peer_failed(4);
        m.rpc_error(tonic::Code::Unavailable);
        m.snapshot_taken();
        m.snapshot_sent(false);
        m.leader_silence(Duration::from_millis(250));
        m.leader_silence(Duration::from_millis(100));
        let text = m.render();
        for line in [
            "# HELP raftkv_node_id This node's id.",
            "# TYPE raftkv_node_id gauge",
            "raftkv_node_id 2",
            "raftkv_term 4",
            "raftkv_role 3",
            "raftkv_commit_index 10",
            "raftkv_applied_index 9",
            "# TYPE raftkv_proposal_duration_seconds histogram",
            "raftkv_proposal_duration_seconds_bucket{le=\"0.0001\"} 0",
            "raftkv_proposal_duration_seconds_bucket{le=\"0.005\"} 1",
            "raftkv_proposal_duration_seconds_bucket{le=\"1\"} 1",
            "raftkv_proposal_duration_seconds_bucket{le=\"10\"} 1",
            "raftkv_proposal_duration_seconds_count 1",
            "raftkv_fsync_duration_seconds_bucket{le=\"10\"} 0",
            "raftkv_fsync_duration_seconds_bucket{le=\"+Inf\"} 1",
            "raftkv_fsync_duration_seconds_sum 20.0",
            "# HELP raftkv_peer_messages_sent_total Raft messages sent, per peer.",
            "# TYPE raftkv_peer_messages_sent_total counter",
            "raftkv_peer_messages_sent_total{peer=\"3\"} 1",
            "raftkv_peer_bytes_sent_total{peer=\"3\"} 100",
            "raftkv_peer_send_failures_total{peer=\"3\"} 0",
            "raftkv_peer_messages_sent_total{peer=\"4\"} 0",
            "raftkv_peer_send_failures_total{peer=\"4\"} 1",
            "raftkv_rpc_errors_total{code=\"UNAVAILABLE\"} 1",
            "raftkv_snapshots_taken_total 1",
            "raftkv_snapshots_installed_total 0",
            "raftkv_snapshots_sent_total{result=\"ok\"} 0",
            "raftkv_snapshots_sent_total{result=\"failed\"} 1",
            "raftkv_leader_silence_max_seconds 0.25",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "missing {line:?} in\n{text}"
            );
        }
    }
}
