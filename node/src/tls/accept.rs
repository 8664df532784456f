//! Accepting TLS connections for a tonic server: TCP accept, then the handshake with the port's
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
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;
use tokio_stream::wrappers::ReceiverStream;
use tracing::{debug, warn};

use super::log_once::LogOnce;
use super::port::PortTls;

/// How long a client may take to finish its handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Handshakes in progress at once; further connections wait in the listen backlog.
const MAX_HANDSHAKES: usize = 128;

/// The stream of established TLS connections on `listener`, for `serve_with_incoming`. It ends
/// when the server drops it (the accept task notices and stops).
pub fn incoming(
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
