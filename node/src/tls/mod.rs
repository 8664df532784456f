//! TLS on the node's two ports (rustls with the ring provider; no OpenSSL).
//!
//! - Peer port (`--peer-cert/--peer-key/--peer-ca`): mutual TLS. The server accepts only
//!   certificates that chain to the peer CA; the node dials peers only with TLS, presenting the
//!   same certificate and checking that the peer's is valid for the host it dialed. And the Raft
//!   service binds every message's `from` to the certificate of the connection it came on
//!   ([`cert_covers_host`] against the sender's advertised peer host): a CA is not enough, a
//!   member may speak only as itself.
//! - Client port (`--client-cert/--client-key`, optional `--client-ca`): TLS, and with a CA,
//!   clients without a certificate from it are refused (per request, so that the client learns
//!   why: see `client_auth`).
//! - Rotation: the files are polled ([`RELOAD_INTERVAL`]) and compared by content, not watched
//!   with inotify (Kubernetes renews a mounted Secret by swapping a symlinked directory, which
//!   inotify on the file never sees). A change rebuilds the port's configuration; new connections
//!   use it. Each rotation is logged, and each port's certificate expiry is the metric
//!   `raftkv_tls_certificate_expiry_timestamp_seconds{port}`.
//!
//! Modules: `port` (files to configurations, and reloading), `accept` (serving a tonic router,
//! and the TLS accept loop), `client_auth` (client certificates on the client port, per request), `deferred` (their
//! handshake half), `names` (a certificate against a member's host), `expiry` (`notAfter` from the
//! DER), `log_once` (one log line per peer and reason).

mod accept;
mod client_auth;
mod deferred;
mod expiry;
mod log_once;
mod names;
mod port;

use std::sync::Arc;
use std::time::Duration;

use raftkv_proto::tls::{Connector, TlsError};
use tokio::task::JoinHandle;
use tracing::{info, warn};

pub(crate) use accept::serve;
pub use log_once::LogOnce;
pub use names::{cert_covers_host, host_of};
pub use port::{PortTls, TlsFiles};

use crate::metrics::Metrics;
use crate::shutdown::Shutdown;

/// How often certificate files are checked for changes.
pub const RELOAD_INTERVAL: Duration = Duration::from_secs(5);

/// Which ports use TLS, and with which files. The default is plain TCP on both.
#[derive(Clone, Debug, Default)]
pub struct TlsOptions {
    /// Mutual TLS on the peer port (the CA is required).
    pub peer: Option<TlsFiles>,
    /// TLS on the client port; with a CA, client certificates are required.
    pub client: Option<TlsFiles>,
}

/// The node's loaded TLS, one [`PortTls`] per port that has it.
#[derive(Clone, Debug, Default)]
pub struct NodeTls {
    /// The peer port's, if on.
    pub peer: Option<Arc<PortTls>>,
    /// The client port's, if on.
    pub client: Option<Arc<PortTls>>,
    /// Shared by the accept loops and the Raft service: one line per peer and reason.
    pub log: Arc<LogOnce>,
}

impl NodeTls {
    /// Reads every file now, so that a node with a key that does not match its certificate (or a
    /// missing file) refuses to start with a message naming the file.
    pub fn load(opts: &TlsOptions, metrics: &Metrics) -> Result<Self, TlsError> {
        let peer = match &opts.peer {
            Some(files) if files.ca.is_none() => {
                return Err(TlsError::Config(
                    "the peer port needs --peer-ca: peers are authenticated by their certificates"
                        .into(),
                ));
            }
            Some(files) => Some(Arc::new(PortTls::load("peer", files.clone(), false)?)),
            None => None,
        };
        let client = match &opts.client {
            Some(files) => Some(Arc::new(PortTls::load("client", files.clone(), true)?)),
            None => None,
        };
        let tls = Self {
            peer,
            client,
            log: Arc::default(),
        };
        for port in tls.ports() {
            report(port, &port.current(), metrics, "TLS certificate loaded");
        }
        Ok(tls)
    }

    fn ports(&self) -> impl Iterator<Item = &Arc<PortTls>> {
        self.peer.iter().chain(self.client.iter())
    }

    /// The connector for dialing peers with mutual TLS, if the peer port has TLS. It takes the
    /// configuration in use at each new connection.
    pub fn peer_connector(&self) -> Option<Connector> {
        let peer = self.peer.clone()?;
        Some(Connector::reloading(Arc::new(move || {
            peer.current().client.clone()
        })))
    }

    /// The request check of the client port: with a client CA, a request without a certificate
    /// from it is refused (UNAUTHENTICATED, saying why); otherwise everything passes.
    pub(crate) fn client_auth(
        &self,
    ) -> impl FnMut(tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status>
    + Clone
    + Send
    + Sync
    + 'static {
        let (port, log) = (self.client.clone(), self.log.clone());
        move |request| {
            if let Some(port) = &port {
                client_auth::authorize(port, &log, &request)?;
            }
            Ok(request)
        }
    }

    /// Polls the files of every TLS port until `shutdown`; `None` when no port has TLS.
    pub(crate) fn spawn_reloader(
        &self,
        metrics: Arc<Metrics>,
        mut shutdown: Shutdown,
    ) -> Option<JoinHandle<()>> {
        let ports: Vec<_> = self.ports().cloned().collect();
        if ports.is_empty() {
            return None;
        }
        Some(crate::task::spawn(async move {
            let mut failing: Vec<Option<String>> = vec![None; ports.len()];
            loop {
                tokio::select! {
                    () = tokio::time::sleep(RELOAD_INTERVAL) => {}
                    _ = shutdown.recv() => return,
                }
                for (port, last_error) in ports.iter().zip(failing.iter_mut()) {
                    // File reads block: off the async workers, like every other disk access.
                    let reading = port.clone();
                    let reloaded = tokio::task::spawn_blocking(move || reading.reload()).await;
                    let Ok(reloaded) = reloaded else {
                        continue;
                    };
                    match reloaded {
                        Ok(Some(loaded)) => {
                            *last_error = None;
                            report(port, &loaded, &metrics, "TLS certificate rotated");
                        }
                        Ok(None) => *last_error = None,
                        Err(e) => {
                            let msg = e.to_string();
                            if last_error.as_ref() != Some(&msg) {
                                warn!(port = port.port, error = %msg, "TLS files changed but cannot be used; keeping the current certificate");
                            }
                            *last_error = Some(msg);
                        }
                    }
                }
            }
        }))
    }
}

/// Logs what a port serves now and sets its expiry metric.
fn report(port: &PortTls, loaded: &port::Loaded, metrics: &Metrics, what: &str) {
    let files = port.files();
    match loaded.not_after {
        Some(at) => {
            metrics.set_tls_expiry(port.port, at);
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs() as i64);
            if at <= now {
                warn!(port = port.port, cert = %files.cert.display(), not_after = at, "the TLS certificate has expired: peers and clients will refuse it");
            }
            info!(port = port.port, cert = %files.cert.display(), not_after = at, "{what}");
        }
        None => info!(port = port.port, cert = %files.cert.display(), "{what} (expiry unreadable)"),
    }
}
