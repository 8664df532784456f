//! The operator's own metrics and its small HTTP endpoint: `GET /metrics` (Prometheus text),
//! `GET /healthz` (the process runs) and `GET /readyz` (it is connected to the API server and
//! either leads or stands by).
//!
//! Series (all prefixed `raftkv_operator_`):
//! - `reconciles_total`, `reconcile_failures_total{error}`, `reconcile_duration_seconds`;
//! - `actions_total{kind}`: the planner's actions carried out;
//! - `leader_service_misrouted_seconds_total`: time the leader Service selected no pod or a pod
//!   that did not lead, as measured between reconciles;
//! - `leading`: 1 while this replica holds the leader-election Lease.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tracing::debug;

type Labels = Vec<(String, String)>;

/// Every series the operator exports.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    /// Reconciles started.
    pub reconciles: Counter,
    /// Failed reconciles by error kind.
    pub failures: Family<Labels, Counter>,
    /// Reconcile durations.
    pub duration: Histogram,
    /// Actions carried out, by kind.
    pub actions: Family<Labels, Counter>,
    /// Seconds the leader Service pointed at no pod or at a non-leader.
    pub misrouted: Counter<f64, AtomicU64>,
    /// 1 while this replica leads.
    pub leading: Gauge,
    /// Whether /readyz answers 200.
    pub ready: AtomicBool,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("raftkv_operator");
        let reconciles = Counter::default();
        let failures = Family::<Labels, Counter>::default();
        let duration = Histogram::new(exponential_buckets(0.005, 2.0, 14));
        let actions = Family::<Labels, Counter>::default();
        let misrouted = Counter::<f64, AtomicU64>::default();
        let leading = Gauge::default();
        registry.register("reconciles", "Reconciles started", reconciles.clone());
        registry.register(
            "reconcile_failures",
            "Failed reconciles by error kind",
            failures.clone(),
        );
        registry.register(
            "reconcile_duration_seconds",
            "Reconcile duration",
            duration.clone(),
        );
        registry.register(
            "actions",
            "Planner actions carried out, by kind",
            actions.clone(),
        );
        registry.register(
            "leader_service_misrouted_seconds",
            "Seconds the leader Service selected no pod or a pod that did not lead",
            misrouted.clone(),
        );
        registry.register(
            "leading",
            "1 while this replica holds the leader-election Lease",
            leading.clone(),
        );
        Metrics {
            registry,
            reconciles,
            failures,
            duration,
            actions,
            misrouted,
            leading,
            ready: AtomicBool::new(false),
        }
    }
}

impl Metrics {
    /// Counts a failed reconcile.
    pub fn failure(&self, kind: &str) {
        self.failures
            .get_or_create(&vec![("error".into(), kind.into())])
            .inc();
    }

    /// Counts an action.
    pub fn action(&self, kind: &str) {
        self.actions
            .get_or_create(&vec![("kind".into(), kind.into())])
            .inc();
    }

    /// The Prometheus text exposition of every series.
    pub fn render(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = encode(&mut out, &self.registry);
        out
    }
}

/// Serves /metrics, /healthz and /readyz on `addr` until `stop` turns true.
pub async fn serve(
    addr: SocketAddr,
    metrics: Arc<Metrics>,
    mut stop: watch::Receiver<bool>,
) -> std::io::Result<()> {
    let listener = TcpListener::bind(addr).await?;
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let Ok((stream, _)) = accepted else { continue };
                let metrics = metrics.clone();
                tokio::spawn(async move {
                    if let Err(e) = handle(stream, &metrics).await {
                        debug!("metrics connection: {e}");
                    }
                });
            }
            _ = stop.changed() => return Ok(()),
        }
    }
}

/// Answers one request and closes the connection. Only the request line is read: nothing else
/// of the request matters, and a slow or silent client is dropped after a few seconds.
async fn handle(mut stream: TcpStream, metrics: &Metrics) -> std::io::Result<()> {
    let mut buf = [0u8; 1024];
    let mut len = 0;
    let read = async {
        while len < buf.len() {
            let n = stream.read(&mut buf[len..]).await?;
            if n == 0 {
                break;
            }
            len += n;
            if buf[..len].windows(2).any(|w| w == b"\r\n") {
                break;
            }
        }
        Ok::<_, std::io::Error>(())
    };
    tokio::time::timeout(Duration::from_secs(5), read)
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "request line"))??;
    let (status, content_type, body) = route(&buf[..len], metrics);
    let head = format!(
        "HTTP/1.1 {status}\r\ncontent-type: {content_type}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await?;
    stream.write_all(body.as_bytes()).await?;
    stream.shutdown().await
}

/// The answer to a request whose first bytes are `request`.
fn route(request: &[u8], metrics: &Metrics) -> (&'static str, &'static str, String) {
    let line = request.split(|&b| b == b'\r').next().unwrap_or_default();
    let mut parts = line.split(|&b| b == b' ');
    let (method, path) = (
        parts.next().unwrap_or_default(),
        parts.next().unwrap_or_default(),
    );
    const TEXT: &str = "text/plain; charset=utf-8";
    if method != b"GET" {
        return ("405 Method Not Allowed", TEXT, "only GET\n".into());
    }
    match path {
        b"/metrics" => (
            "200 OK",
            "text/plain; version=0.0.4; charset=utf-8",
            metrics.render(),
        ),
        b"/healthz" => ("200 OK", TEXT, "ok\n".into()),
        b"/readyz" if metrics.ready.load(Ordering::Relaxed) => ("200 OK", TEXT, "ready\n".into()),
        b"/readyz" => ("503 Service Unavailable", TEXT, "not ready\n".into()),
        _ => ("404 Not Found", TEXT, "not found\n".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes() {
        let m = Metrics::default();
        m.reconciles.inc();
        m.failure("kube");
        m.action("AddLearner");
        assert_eq!(route(b"GET /healthz HTTP/1.1\r\n", &m).0, "200 OK");
        assert_eq!(
            route(b"GET /readyz HTTP/1.1\r\n", &m).0,
            "503 Service Unavailable"
        );
        m.ready.store(true, Ordering::Relaxed);
        assert_eq!(route(b"GET /readyz HTTP/1.1\r\n", &m).0, "200 OK");
        assert_eq!(
            route(b"POST /metrics HTTP/1.1\r\n", &m).0,
            "405 Method Not Allowed"
        );
        assert_eq!(route(b"GET /nope HTTP/1.1\r\n", &m).0, "404 Not Found");
        assert_eq!(route(b"garbage", &m).0, "405 Method Not Allowed");
        let body = route(b"GET /metrics HTTP/1.1\r\n", &m).2;
        assert!(
            body.contains("raftkv_operator_reconciles_total 1"),
            "{body}"
        );
        assert!(
            body.contains("raftkv_operator_reconcile_failures_total{error=\"kube\"} 1"),
            "{body}"
        );
        assert!(
            body.contains("raftkv_operator_actions_total{kind=\"AddLearner\"} 1"),
            "{body}"
        );
    }

    #[tokio::test]
    async fn serves_over_tcp_and_stops() {
        let m = Arc::new(Metrics::default());
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr");
        drop(listener);
        let (tx, rx) = watch::channel(false);
        let server = tokio::spawn(serve(addr, m, rx));
        let mut body = String::new();
        for _ in 0..50 {
            if let Ok(mut s) = TcpStream::connect(addr).await {
                s.write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n")
                    .await
                    .expect("write");
                s.read_to_string(&mut body).await.expect("read");
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(body.starts_with("HTTP/1.1 200 OK"), "{body}");
        assert!(body.ends_with("ok\n"));
        tx.send(true).expect("stop");
        server.await.expect("joins").expect("serves");
    }
}
