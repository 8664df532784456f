//! TLS for raftkv's gRPC channels (feature `tls`): what the client library and the node's peer
//! dialing share, so that both read certificates, dial and explain failures the same way.
//!
//! - [`Identity`], [`read_roots`]: a certificate chain and its private key, or a CA bundle, read
//!   from PEM files; an identity whose key does not belong to its certificate is refused here,
//!   once, for every caller;
//! - [`client_config`]: a rustls client configuration (ring provider: no OpenSSL, no C build)
//!   offering HTTP/2 by ALPN;
//! - [`Connector`]: a tonic connector (TCP, then the TLS handshake) that takes its configuration
//!   from a [`ConfigSource`] on every new connection, so that a rotated certificate is used by the
//!   next connection without rebuilding the channel;
//! - [`explain`]: one line a person can act on for a failed handshake (expired, unknown CA, wrong
//!   name), found anywhere in an error's source chain.
//!
//! Why a connector of our own rather than tonic's `ClientTlsConfig`: tonic fixes the certificate
//! when the endpoint is built, and raftkv must pick up a renewed certificate (a Kubernetes Secret
//! that cert-manager rotates) without a restart.

use std::future::Future;
use std::io;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use hyper_util::rt::TokioIo;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::sign::CertifiedKey;
use rustls::{ClientConfig, RootCertStore};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;
use tonic::transport::Uri;

pub use rustls;

/// Why TLS material could not be used. Each names the file and what to fix.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: io::Error,
    },
    /// A certificate file holds no PEM certificate.
    #[error("{path} holds no PEM certificate (-----BEGIN CERTIFICATE-----)")]
    NoCertificate {
        /// The file.
        path: PathBuf,
    },
    /// A key file holds no PEM private key.
    #[error("{path} holds no PEM private key (PKCS#8, PKCS#1 or SEC1)")]
    NoKey {
        /// The file.
        path: PathBuf,
    },
    /// The private key cannot be used with the certificate.
    #[error("the key in {key} does not belong to the certificate in {cert}: {reason}")]
    KeyMismatch {
        /// The certificate file.
        cert: PathBuf,
        /// The key file.
        key: PathBuf,
        /// What rustls said.
        reason: rustls::Error,
    },
    /// A CA file holds a certificate that cannot be a trust anchor.
    #[error("{path}: not a usable CA certificate: {reason}")]
    BadCa {
        /// The file.
        path: PathBuf,
        /// What rustls said.
        reason: rustls::Error,
    },
    /// rustls refused the configuration (e.g. a verifier with no roots).
    #[error("TLS configuration: {0}")]
    Config(String),
}

/// The cryptography raftkv uses everywhere: rustls' ring provider.
pub fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Reads a whole file, naming it in the error.
pub fn read_file(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        path: path.to_path_buf(),
        source,
    })
}

/// A certificate chain (leaf first) and the private key that belongs to its leaf.
#[derive(Debug)]
pub struct Identity {
    /// The chain, leaf first; never empty.
    certs: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
}

impl Clone for Identity {
    fn clone(&self) -> Self {
        Self {
            certs: self.certs.clone(),
            key: self.key.clone_key(),
        }
    }
}

impl Identity {
    /// Reads `cert` and `key` (PEM) and checks that the key belongs to the certificate.
    pub fn load(cert: &Path, key: &Path) -> Result<Self, TlsError> {
        Self::from_pem(cert, &read_file(cert)?, key, &read_file(key)?)
    }

    /// As [`Identity::load`], from contents already read (paths are for the messages).
    pub fn from_pem(
        cert_path: &Path,
        cert_pem: &[u8],
        key_path: &Path,
        key_pem: &[u8],
    ) -> Result<Self, TlsError> {
        let certs = certs_from_pem(cert_path, cert_pem)?;
        let key = PrivateKeyDer::from_pem_slice(key_pem).map_err(|_| TlsError::NoKey {
            path: key_path.to_path_buf(),
        })?;
        let mismatch = |reason| TlsError::KeyMismatch {
            cert: cert_path.to_path_buf(),
            key: key_path.to_path_buf(),
            reason,
        };
        let certified = CertifiedKey::from_der(certs.clone(), key.clone_key(), &provider())
            .map_err(mismatch)?;
        match certified.keys_match() {
            Ok(()) | Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::Unknown)) => {}
            Err(e) => return Err(mismatch(e)),
        }
        Ok(Self { certs, key })
    }

    /// The leaf certificate (the chain is never empty: `certs_from_pem` refuses that).
    pub fn leaf(&self) -> &CertificateDer<'static> {
        &self.certs[0]
    }

    /// The chain (leaf first) and the key, for a server configuration.
    pub fn into_parts(self) -> (Vec<CertificateDer<'static>>, PrivateKeyDer<'static>) {
        (self.certs, self.key)
    }
}

/// Every certificate in a PEM file; at least one.
pub fn certs_from_pem(path: &Path, pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs: Vec<_> = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<_, _>>()
        .map_err(|_| TlsError::NoCertificate {
            path: path.to_path_buf(),
        })?;
    if certs.is_empty() {
        return Err(TlsError::NoCertificate {
            path: path.to_path_buf(),
        });
    }
    Ok(certs)
}

/// The trust anchors in a PEM CA bundle (one or more certificates).
pub fn roots_from_pem(path: &Path, pem: &[u8]) -> Result<RootCertStore, TlsError> {
    let mut roots = RootCertStore::empty();
    for cert in certs_from_pem(path, pem)? {
        roots.add(cert).map_err(|reason| TlsError::BadCa {
            path: path.to_path_buf(),
            reason,
        })?;
    }
    Ok(roots)
}

/// Reads a PEM CA bundle.
pub fn read_roots(path: &Path) -> Result<RootCertStore, TlsError> {
    roots_from_pem(path, &read_file(path)?)
}

/// A client configuration that trusts `roots`, presents `identity` when given (mutual TLS), and
/// offers HTTP/2 by ALPN (gRPC).
pub fn client_config(
    roots: RootCertStore,
    identity: Option<Identity>,
) -> Result<ClientConfig, TlsError> {
    let builder = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Config(e.to_string()))?
        .with_root_certificates(roots);
    let mut config = match identity {
        Some(id) => builder
            .with_client_auth_cert(id.certs, id.key)
            .map_err(|e| TlsError::Config(e.to_string()))?,
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(config)
}

/// Where a [`Connector`] gets the configuration for each new connection.
pub type ConfigSource = Arc<dyn Fn() -> Arc<ClientConfig> + Send + Sync>;

/// A tonic connector that dials TCP and then TLS, checking that the server's certificate is valid
/// for the host of the URI it dials (a DNS name or an IP address).
///
/// Use it with `Endpoint::connect_with_connector_lazy` and an `http://` URI: the TLS is this
/// connector's, and tonic refuses `https://` unless its own TLS is configured.
#[derive(Clone)]
pub struct Connector {
    source: ConfigSource,
}

impl std::fmt::Debug for Connector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connector").finish_non_exhaustive()
    }
}

impl Connector {
    /// A connector that always uses `config`.
    pub fn fixed(config: Arc<ClientConfig>) -> Self {
        Self {
            source: Arc::new(move || config.clone()),
        }
    }

    /// A connector that asks `source` for the configuration of every new connection.
    pub fn reloading(source: ConfigSource) -> Self {
        Self { source }
    }
}

impl tower_service::Service<Uri> for Connector {
    type Response = TokioIo<TlsStream<TcpStream>>;
    type Error = io::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, io::Error>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), io::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let config = (self.source)();
        Box::pin(async move {
            let invalid = |what: &str| io::Error::new(io::ErrorKind::InvalidInput, what.to_owned());
            let host = uri
                .host()
                .ok_or_else(|| invalid("the address has no host"))?
                .trim_start_matches('[')
                .trim_end_matches(']')
                .to_owned();
            let port = uri
                .port_u16()
                .ok_or_else(|| invalid("the address has no port"))?;
            let name = ServerName::try_from(host.clone())
                .map_err(|_| invalid("the host is neither a DNS name nor an IP address"))?;
            let tcp = TcpStream::connect((host.as_str(), port)).await?;
            // Raft heartbeats and small client calls must not wait for Nagle's algorithm.
            tcp.set_nodelay(true)?;
            let tls = TlsConnector::from(config).connect(name, tcp).await?;
            Ok(TokioIo::new(tls))
        })
    }
}

/// One line saying what went wrong in a TLS handshake and what to check, if `err` or anything in
/// its source chain is a TLS error; `None` for other failures (refused, timed out...).
pub fn explain(err: &(dyn std::error::Error + 'static)) -> Option<String> {
    let mut next = Some(err);
    while let Some(e) = next {
        if let Some(tls) = e.downcast_ref::<rustls::Error>() {
            return Some(describe(tls));
        }
        // io::Error hides what it wraps from `source()`: look inside it.
        if let Some(inner) = e
            .downcast_ref::<io::Error>()
            .and_then(|io| io.get_ref())
            .and_then(|inner| inner.downcast_ref::<rustls::Error>())
        {
            return Some(describe(inner));
        }
        // h2 keeps I/O errors as text (it needs them cloneable), so an alert the server sent
        // after the handshake (TLS 1.3 checks the client's certificate then) arrives as words.
        if let Some(alert) = e.to_string().split("received fatal alert: ").nth(1) {
            let name: String = alert
                .chars()
                .take_while(char::is_ascii_alphanumeric)
                .collect();
            return Some(describe_alert(&name));
        }
        next = e.source();
    }
    None
}

/// [`describe`] for an alert known only by its name (rustls' `Debug` of `AlertDescription`).
fn describe_alert(name: &str) -> String {
    use rustls::AlertDescription as A;
    let alert = match name {
        "CertificateRequired" => A::CertificateRequired,
        "UnknownCA" => A::UnknownCA,
        "CertificateExpired" => A::CertificateExpired,
        "BadCertificate" => A::BadCertificate,
        "DecryptError" => A::DecryptError,
        other => return format!("the other side refused the TLS handshake ({other})"),
    };
    describe(&rustls::Error::AlertReceived(alert))
}

/// A short reason for a rustls error, worded for the person who has to fix the certificates.
pub fn describe(e: &rustls::Error) -> String {
    use rustls::{AlertDescription as A, CertificateError as C, Error as E};
    match e {
        E::InvalidCertificate(c) => match c {
            C::Expired | C::ExpiredContext { .. } => "the certificate has expired".into(),
            C::NotValidYet | C::NotValidYetContext { .. } => {
                "the certificate is not valid yet (check the clocks)".into()
            }
            C::UnknownIssuer => {
                "the certificate is not signed by the trusted CA (wrong CA file?)".into()
            }
            C::NotValidForName | C::NotValidForNameContext { .. } => {
                "the certificate is not valid for the name dialed (check its DNS/IP SANs)".into()
            }
            C::Revoked => "the certificate is revoked".into(),
            C::InvalidPurpose | C::InvalidPurposeContext { .. } => {
                "the certificate is not for this use (server/client auth)".into()
            }
            other => format!("invalid certificate: {other:?}"),
        },
        E::NoCertificatesPresented => "no client certificate was presented".into(),
        E::AlertReceived(A::CertificateRequired) => {
            "the server requires a client certificate from its CA".into()
        }
        E::AlertReceived(A::UnknownCA) => {
            "the other side does not trust our certificate's CA".into()
        }
        E::AlertReceived(A::CertificateExpired) => {
            "the other side says our certificate has expired".into()
        }
        E::AlertReceived(A::DecryptError) => {
            "the other side could not verify our certificate (signed by another CA?)".into()
        }
        E::AlertReceived(A::BadCertificate) => {
            "the other side refused our certificate (wrong name or CA?)".into()
        }
        E::InvalidMessage(_) | E::InappropriateMessage { .. } => {
            "not a TLS peer (is TLS on at both ends?)".into()
        }
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_file_without_a_key_names_the_file() {
        let err = Identity::from_pem(
            Path::new("c.pem"),
            b"-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n",
            Path::new("k.pem"),
            b"nothing",
        )
        .map(drop);
        let msg = err.err().map(|e| e.to_string()).unwrap_or_default();
        assert!(
            msg.contains("c.pem") || msg.contains("k.pem"),
            "error names no file: {msg:?}"
        );
    }

    #[test]
    fn explain_finds_a_rustls_error_inside_an_io_error() {
        let io = io::Error::new(
            io::ErrorKind::InvalidData,
            rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer),
        );
        let line = explain(&io).unwrap_or_default();
        assert!(line.contains("trusted CA"), "{line}");
        let plain = io::Error::new(io::ErrorKind::ConnectionRefused, "refused");
        assert_eq!(explain(&plain), None);
    }
}
