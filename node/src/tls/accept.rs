//! Serving a tonic router on a port ([`serve`]), plain or TLS. Accepting TLS connections: TCP accept, then the handshake with the port's
//! configuration of the moment (so a rotated certificate serves the next connection).
//!
//! Handshakes run in tasks of their own, bounded in number and time, so that one slow or silent
//! client cannot stall the accept loop. A failed handshake is logged once per remote host and
//! reason ([`LogOnce`]), naming both: "expired", "unknown CA" and "no certificate" are what an
//! operator needs to see, once.

use std::io;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, mpsc};
use tokio::task::JoinHandle;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::server::TcpIncoming;
use tracing::{debug, warn};

use super::log_once::LogOnce;
use super::port::PortTls;
use crate::shutdown::Shutdown;

/// How long a client may take to finish its handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Handshakes in progress at once; further connections wait in the listen backlog.
const MAX_HANDSHAKES: usize = 128;

/// The stream of established TLS connections on `listener`, for `serve_with_incoming`. It ends
/// when the server drops it (the accept task notices and stops).
pub(crate) fn incoming(
    listener: TcpListener,
    tls: Arc<PortTls>,
    log: Arc<LogOnce>,
) -> ReceiverStream<io::Result<TlsStream<TcpStream>>> {
    let (tx, rx) = mpsc::channel(MAX_HANDSHAKES);
    crate::task::spawn(async move {
        let permits = Arc::new(Semaphore::new(MAX_HANDSHAKES));
        loop {
            let Ok(permit) = permits.clone().acquire_owned().await else {
                return;
            };
            let (tcp, remote) = tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok(conn) => conn,
                    Err(e) => {
                        // Out of descriptors and the like: wait rather than spin.
                        debug!(port = tls.port, error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                },
                () = tx.closed() => return,
            };
            let _ = tcp.set_nodelay(true);
            let acceptor = TlsAcceptor::from(tls.current().server.clone());
            let (tx, tls, log) = (tx.clone(), tls.clone(), log.clone());
            crate::task::spawn(async move {
                let _permit = permit;
                match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                    Ok(Ok(stream)) => {
                        let _ = tx.send(Ok(stream)).await;
                    }
                    // Closed before a word of TLS: a TCP probe (kubelet liveness) or a port
                    // scan, not a misconfigured peer.
                    Ok(Err(e)) if e.kind() == io::ErrorKind::UnexpectedEof => {
                        debug!(port = tls.port, %remote, "connection closed before the TLS handshake");
                    }
                    Ok(Err(e)) => {
                        let reason =
                            raftkv_proto::tls::explain(&e).unwrap_or_else(|| e.to_string());
                        let host = remote.ip().to_string();
                        if log.should_log(&host, &reason) {
                            warn!(port = tls.port, remote = %remote, %reason, "TLS handshake refused");
                        }
                    }
                    Err(_) => debug!(port = tls.port, %remote, "TLS handshake timed out"),
                }
            });
        }
    });
    ReceiverStream::new(rx)
}

/// Serves `router` on `listener` until `shutdown`, through TLS when `port_tls` is given. `name`
/// (`client`, `peer`, `health`) is for the log.
pub(crate) fn serve(
    router: tonic::transport::server::Router,
    listener: TcpListener,
    port_tls: Option<Arc<PortTls>>,
    log: Arc<LogOnce>,
    shutdown: Shutdown,
    name: &'static str,
) -> JoinHandle<()> {
    crate::task::spawn(async move {
        // `shutdown` is held until the server has drained; a clone tells it to begin.
        let mut signal = shutdown.clone();
        let stop = async move { signal.recv().await };
        let served = match port_tls {
            Some(port_tls) => {
                let incoming = incoming(listener, port_tls, log);
                router.serve_with_incoming_shutdown(incoming, stop).await
            }
            None => {
                // The server was handed a bound listener, so its own `tcp_nodelay` does not
                // apply: set it on each accepted socket (see `raftkv_proto::http2`), as the TLS
                // acceptor above does.
                let incoming = TcpIncoming::from(listener).with_nodelay(Some(true));
                router.serve_with_incoming_shutdown(incoming, stop).await
            }
        };
        if let Err(e) = served {
            warn!(port = name, error = %e, "server stopped with an error");
        }
        drop(shutdown);
    })
}
