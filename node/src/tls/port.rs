//! The TLS material of one port: read from files, turned into rustls configurations, and read
//! again when the files change.
//!
//! Everything is rebuilt from the files on a change, the CA included: cert-manager renews
//! `tls.crt`, `tls.key` and `ca.crt` together, and Kubernetes swaps the whole mounted directory
//! at once (a symlink flip), so the three are read as one unit. A rebuild that fails (a file
//! half-written, a key that does not match yet) keeps the configuration in use and is tried
//! again on the next poll. Connections already open keep the certificate they were made with;
//! new ones get the current configuration.

use std::path::PathBuf;
use std::sync::{Arc, RwLock};

use raftkv_proto::tls::rustls::server::WebPkiClientVerifier;
use raftkv_proto::tls::rustls::{ClientConfig, RootCertStore, ServerConfig};
use raftkv_proto::tls::{Identity, TlsError, client_config, provider, read_file, roots_from_pem};

use super::deferred::Deferred;
use super::expiry::not_after;
use raftkv_proto::tls::rustls::server::danger::ClientCertVerifier;

/// The files of one port's TLS: certificate and key (PEM), and the CA that client certificates
/// must chain to (required on the peer port; on the client port, optional client authentication).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsFiles {
    /// The certificate chain this node presents, leaf first.
    pub cert: PathBuf,
    /// The private key of that certificate.
    pub key: PathBuf,
    /// The CA bundle that the other side's certificate must chain to.
    pub ca: Option<PathBuf>,
}

/// The configurations built from one reading of the files.
#[derive(Debug)]
pub struct Loaded {
    contents: Vec<Vec<u8>>,
    /// What the port's server uses for new connections.
    pub server: Arc<ServerConfig>,
    /// What this node dials peers with (used for the peer port only): the same certificate,
    /// trusting the CA.
    pub client: Arc<ClientConfig>,
    /// When the certificate expires (Unix seconds), if its DER could be read.
    pub not_after: Option<i64>,
    /// With client authentication checked per request (the client port, `client_auth`): the
    /// verifier of the CA.
    pub verifier: Option<Arc<dyn ClientCertVerifier>>,
}

/// One port's TLS, current configuration swapped in place on rotation.
#[derive(Debug)]
pub struct PortTls {
    /// `peer` or `client`: the metric label and the name in log lines.
    pub port: &'static str,
    files: TlsFiles,
    defer_client_auth: bool,
    current: RwLock<Arc<Loaded>>,
}

impl PortTls {
    /// Reads the files and builds the configurations. `defer_client_auth`: the handshake takes
    /// any client certificate (or none) and requests are checked instead (`client_auth`).
    pub fn load(
        port: &'static str,
        files: TlsFiles,
        defer_client_auth: bool,
    ) -> Result<Self, TlsError> {
        let loaded = build(&files, defer_client_auth, read_all(&files)?)?;
        Ok(Self {
            port,
            files,
            defer_client_auth,
            current: RwLock::new(Arc::new(loaded)),
        })
    }

    /// The configuration in use now.
    pub fn current(&self) -> Arc<Loaded> {
        self.current
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Reads the files again; the new configuration if they changed, `None` if they did not.
    pub fn reload(&self) -> Result<Option<Arc<Loaded>>, TlsError> {
        let contents = read_all(&self.files)?;
        if self.current().contents == contents {
            return Ok(None);
        }
        let loaded = Arc::new(build(&self.files, self.defer_client_auth, contents)?);
        *self
            .current
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = loaded.clone();
        Ok(Some(loaded))
    }

    /// The files this port reads.
    pub fn files(&self) -> &TlsFiles {
        &self.files
    }
}

fn read_all(files: &TlsFiles) -> Result<Vec<Vec<u8>>, TlsError> {
    let mut contents = vec![read_file(&files.cert)?, read_file(&files.key)?];
    if let Some(ca) = &files.ca {
        contents.push(read_file(ca)?);
    }
    Ok(contents)
}

fn config_error(e: impl std::fmt::Display) -> TlsError {
    TlsError::Config(e.to_string())
}

fn build(
    files: &TlsFiles,
    defer_client_auth: bool,
    contents: Vec<Vec<u8>>,
) -> Result<Loaded, TlsError> {
    let identity = Identity::from_pem(&files.cert, &contents[0], &files.key, &contents[1])?;
    let roots = match (&files.ca, contents.get(2)) {
        (Some(path), Some(pem)) => Some(roots_from_pem(path, pem)?),
        _ => None,
    };
    let expiry = not_after(identity.leaf());
    let client = Arc::new(client_config(
        roots.clone().unwrap_or_else(RootCertStore::empty),
        Some(identity.clone()),
    )?);
    let builder = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(config_error)?;
    let verifier = match roots {
        Some(roots) => Some(
            WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider())
                .build()
                .map_err(config_error)?,
        ),
        None => None,
    };
    let (builder, verifier) = match verifier {
        Some(v) if defer_client_auth => (
            builder.with_client_cert_verifier(Arc::new(Deferred(v.clone()))),
            Some(v),
        ),
        Some(v) => (builder.with_client_cert_verifier(v), None),
        None => (builder.with_no_client_auth(), None),
    };
    let (certs, key) = identity.into_parts();
    let mut server = builder.with_single_cert(certs, key).map_err(config_error)?;
    // gRPC is HTTP/2; clients that negotiate ALPN must be offered it.
    server.alpn_protocols = vec![b"h2".to_vec()];
    Ok(Loaded {
        contents,
        server: Arc::new(server),
        client,
        not_after: expiry,
        verifier,
    })
}
