//! The TLS part of a reconcile, the one that talks to the API server: read the Secrets that
//! `spec.tls` names or that `auto` keeps, tell the controller how to dial the nodes, and apply the
//! `auto` Secrets that [`autotls::plan`] changed.
//!
//! A Secret named by `secretName` must hold the cert-manager layout (`tls.crt`, `tls.key`,
//! `ca.crt`); one that is missing or incomplete fails the reconcile with an error that names the
//! Secret and the key, rather than leaving pods stuck in ContainerCreating without a word.
//!
//! How the operator dials a cluster's client ports ([`Dial`]):
//!
//! | `spec.tls.client` | CA bundle | operator's certificate |
//! |---|---|---|
//! | unset | plain text | none |
//! | `auto` | `ca.crt` (+ previous) of `<name>-tls-ca` | `operator.crt` of `<name>-tls-ca` |
//! | `secretName: S` | `ca.crt` of S | with `requireClientCertificate`: `<name>-operator-client-tls` |

use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, Patch, PatchParams};
use kube::{Client, ResourceExt};

use crate::autotls;
use crate::certs::{CertError, KeyedCert};
use crate::crd::{CertSource, TlsSpec};
use crate::nodes::NodeTls;
use crate::podtls::{self, CA_KEY};
use crate::resources::Cluster;

/// Why the TLS step failed.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A call to the API server failed.
    #[error("kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    /// A Secret the spec relies on is missing or incomplete.
    #[error("Secret {namespace}/{name}: {problem}")]
    Secret {
        /// The Secret's namespace.
        namespace: String,
        /// The Secret's name.
        name: String,
        /// What is wrong, e.g. `has no key tls.key`.
        problem: String,
    },
    /// A certificate could not be made.
    #[error("certificates: {0}")]
    Certs(#[from] CertError),
}

/// How the operator dials the nodes' client ports.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Dial {
    /// Plain text: no client TLS.
    Plain,
    /// TLS with this material.
    Tls(NodeTls),
    /// Client TLS is `auto` and no CA exists yet: nothing to dial with (and no pod to dial).
    NotYet,
}

impl Dial {
    /// The TLS material, if dialing with TLS.
    pub fn tls(&self) -> Option<&NodeTls> {
        match self {
            Dial::Tls(t) => Some(t),
            _ => None,
        }
    }
}

/// What the TLS step read.
#[derive(Clone, Debug, PartialEq)]
pub struct TlsObserved {
    /// `<name>-tls-ca`, when `auto` is used and it exists.
    pub stored_ca: Option<Secret>,
    /// `<name>-tls`, when `auto` is used and it exists.
    pub stored_certs: Option<Secret>,
    /// How to dial the nodes.
    pub dial: Dial,
}

const LAYOUT: [&str; 3] = ["tls.crt", "tls.key", CA_KEY];

fn key_text(secret: &Secret, key: &str) -> Option<String> {
    let bytes = secret.data.as_ref()?.get(key)?;
    String::from_utf8(bytes.0.clone())
        .ok()
        .filter(|s| !s.trim().is_empty())
}

/// Reads Secret `name` and checks that it holds `keys`.
async fn cert_manager_secret(
    secrets: &Api<Secret>,
    namespace: &str,
    name: &str,
    keys: &[&str],
) -> Result<Secret, TlsError> {
    let problem = |problem: String| TlsError::Secret {
        namespace: namespace.into(),
        name: name.into(),
        problem,
    };
    let secret = secrets
        .get_opt(name)
        .await?
        .ok_or_else(|| problem("not found".into()))?;
    for key in keys {
        if key_text(&secret, key).is_none() {
            return Err(problem(format!("has no key {key} (PEM text)")));
        }
    }
    Ok(secret)
}

/// Reads what `tls` (of KvCluster `name` in `namespace`) needs.
pub async fn observe(
    client: &Client,
    namespace: &str,
    name: &str,
    tls: Option<&TlsSpec>,
) -> Result<TlsObserved, TlsError> {
    let mut observed = TlsObserved {
        stored_ca: None,
        stored_certs: None,
        dial: Dial::Plain,
    };
    let Some(tls) = tls else {
        return Ok(observed);
    };
    let secrets: Api<Secret> = Api::namespaced(client.clone(), namespace);
    if podtls::uses_auto(Some(tls)) {
        observed.stored_ca = secrets.get_opt(&podtls::ca_secret_name(name)).await?;
        observed.stored_certs = secrets.get_opt(&podtls::certs_secret_name(name)).await?;
    }
    if let Some(Ok(CertSource::Secret(secret))) = tls.peer.as_ref().map(|p| p.source()) {
        cert_manager_secret(&secrets, namespace, secret, &LAYOUT).await?;
    }
    let Some(client_tls) = &tls.client else {
        return Ok(observed);
    };
    observed.dial = match client_tls.source() {
        Ok(CertSource::Auto) => {
            match autotls::stored_client_material(observed.stored_ca.as_ref()) {
                Some((ca_pem, identity)) => Dial::Tls(NodeTls { ca_pem, identity }),
                None => Dial::NotYet,
            }
        }
        Ok(CertSource::Secret(secret)) => {
            let server = cert_manager_secret(&secrets, namespace, secret, &LAYOUT).await?;
            let identity = if client_tls.require_client_certificate {
                let own = podtls::operator_client_secret_name(name);
                let s = cert_manager_secret(&secrets, namespace, &own, &LAYOUT[..2]).await?;
                Some(KeyedCert {
                    cert_pem: key_text(&s, "tls.crt").unwrap_or_default(),
                    key_pem: key_text(&s, "tls.key").unwrap_or_default(),
                })
            } else {
                None
            };
            Dial::Tls(NodeTls {
                ca_pem: key_text(&server, CA_KEY).unwrap_or_default(),
                identity,
            })
        }
        // Refused by the CRD and by `Cluster::from_resource`; nothing to dial with meanwhile.
        Err(_) => Dial::NotYet,
    };
    Ok(observed)
}

/// Brings the `auto` Secrets up to date for `pods` pods at `now` (Unix seconds): applies what
/// changed, the CA first (so that the bundle never names a CA that is not stored). Returns what
/// was issued, one phrase each.
pub async fn apply_auto(
    client: &Client,
    params: &PatchParams,
    c: &Cluster,
    pods: u32,
    observed: &TlsObserved,
    now: i64,
) -> Result<Vec<String>, TlsError> {
    let plan = autotls::plan(
        c,
        pods,
        observed.stored_ca.as_ref(),
        observed.stored_certs.as_ref(),
        now,
    )?;
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &c.namespace);
    for secret in [&plan.ca_secret, &plan.certs_secret].into_iter().flatten() {
        secrets
            .patch(&secret.name_any(), params, &Patch::Apply(secret))
            .await?;
    }
    Ok(plan.issued)
}
