//! [`TlsConfig`] (feature `tls`): how the client reaches nodes whose client port has TLS.
//!
//! Every channel the client opens uses it: the configured endpoints, and the leader a redirect
//! names (a redirect carries `host:port`; it is dialled with the same TLS, never in clear). The
//! server's certificate must be valid for the host dialled and chain to the CA; with a client
//! certificate, the node can require it (`kvnode --client-ca`).

use std::path::Path;
use std::sync::Arc;

use raftkv_proto::tls::rustls::ClientConfig;
use raftkv_proto::tls::{Connector, Identity, TlsError, client_config, read_roots};

/// The TLS the client dials with. Cheap to clone; two values are equal when they share one
/// configuration.
#[derive(Clone, Debug)]
pub struct TlsConfig {
    config: Arc<ClientConfig>,
}

impl PartialEq for TlsConfig {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.config, &other.config)
    }
}

impl Eq for TlsConfig {}

impl TlsConfig {
    /// Trusts the CA bundle `ca` (PEM) and, when `identity` is given, presents that certificate
    /// and key (PEM files) to nodes that ask for one. A key that does not belong to its
    /// certificate is refused here, naming both files.
    pub fn from_files(ca: &Path, identity: Option<(&Path, &Path)>) -> Result<Self, TlsError> {
        let roots = read_roots(ca)?;
        let identity = match identity {
            Some((cert, key)) => Some(Identity::load(cert, key)?),
            None => None,
        };
        Ok(Self::from_rustls(Arc::new(client_config(roots, identity)?)))
    }

    /// A rustls configuration of the caller's own (it should offer ALPN `h2`).
    pub fn from_rustls(config: Arc<ClientConfig>) -> Self {
        Self { config }
    }

    pub(crate) fn connector(&self) -> Connector {
        Connector::fixed(self.config.clone())
    }
}
