//! Binding a peer's certificate to a member: the certificate presented on a connection must be
//! valid for the host of the peer address that member advertises (a DNS name, such as a
//! StatefulSet pod's stable name, or an IP address), exactly as a client checks a server's
//! certificate against the name it dialed. So a valid certificate of member 2 cannot speak as
//! member 3.

use raftkv_proto::tls::rustls;
use rustls::pki_types::{CertificateDer, ServerName};

/// The host of a `host:port` address (`[v6]:port` and bare hosts too).
pub fn host_of(addr: &str) -> &str {
    let host = match addr.rsplit_once(':') {
        Some((h, port)) if !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit()) => h,
        _ => addr,
    };
    host.trim_start_matches('[').trim_end_matches(']')
}

/// Whether `leaf` is valid for `host`; the reason, worded for a log line, when it is not.
pub fn cert_covers_host(leaf: &CertificateDer<'_>, host: &str) -> Result<(), String> {
    let name = ServerName::try_from(host)
        .map_err(|_| format!("{host:?} is neither a DNS name nor an IP address"))?;
    let parsed = rustls::server::ParsedCertificate::try_from(leaf)
        .map_err(|e| format!("unreadable certificate: {e}"))?;
    rustls::client::verify_server_name(&parsed, &name).map_err(|e| raftkv_proto::tls::describe(&e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_of_addresses() {
        assert_eq!(host_of("kv-2.kv-peers.ns.svc:7101"), "kv-2.kv-peers.ns.svc");
        assert_eq!(host_of("127.0.0.3:7101"), "127.0.0.3");
        assert_eq!(host_of("[::1]:7101"), "::1");
        assert_eq!(host_of("node-1"), "node-1");
    }
}
