//! Client certificates on the client port (`--client-ca`), checked after the handshake.
//!
//! Why not in the handshake, as on the peer port: in TLS 1.3 the client finishes its side of the
//! handshake before the server has looked at its certificate, and a refusal arrives as an alert
//! that the client's HTTP/2 layer often reports only as "connection closed". A person running
//! `kvctl` without `--cert` would see a timeout instead of the reason. So the handshake accepts
//! any certificate, or none, after proving that the client holds the certificate's key; then
//! every request on the port is checked ([`authorize`]; the handshake half is `deferred`) against the CA, with the same rustls
//! verifier a handshake would use, and a refusal is a gRPC UNAUTHENTICATED whose message says
//! what is wrong (no certificate, unknown CA, expired), which every client shows.

use raftkv_proto::tls::rustls::pki_types::UnixTime;
use tonic::{Request, Status};

use super::log_once::LogOnce;
use super::port::PortTls;

/// The request half: a request on a port with a client CA must come with a certificate that
/// chains to it (checked by the port's current verifier, so a rotated CA applies at once).
pub fn authorize<T>(port: &PortTls, log: &LogOnce, request: &Request<T>) -> Result<(), Status> {
    let Some(verifier) = port.current().verifier.clone() else {
        return Ok(());
    };
    let certs = request.peer_certs();
    let reason = match certs.as_deref().and_then(|c| c.split_first()) {
        None => "no client certificate was presented (kvctl: --cert and --key)".to_owned(),
        Some((leaf, intermediates)) => {
            match verifier.verify_client_cert(leaf, intermediates, UnixTime::now()) {
                Ok(_) => return Ok(()),
                Err(e) => raftkv_proto::tls::describe(&e),
            }
        }
    };
    let remote = request
        .remote_addr()
        .map_or_else(|| "unknown".to_owned(), |a| a.ip().to_string());
    if log.should_log(&remote, &reason) {
        tracing::warn!(port = port.port, %remote, %reason, "refused a client");
    }
    Err(Status::unauthenticated(format!(
        "client certificate refused: {reason}"
    )))
}
