//! The operator's side of the nodes' `Cluster` API: one pod's own status, and the membership and
//! leadership changes the planner asks for.
//!
//! [`NodeApi`] is a trait so that the controller's tests answer for the nodes without any process,
//! and so that a process-backed adapter can drive the same act layer; [`GrpcNodes`] is the real
//! thing. Every call has a short timeout: one hung pod must not stall a reconcile.
//!
//! With client TLS on (`spec.tls.client`), every call carries a [`NodeTls`]: the CA bundle the
//! nodes' certificates chain to, and the operator's own client certificate when the nodes
//! require one. The server name checked is the host dialled, a pod's stable DNS name, which its
//! certificate carries.

use std::future::Future;
use std::time::Duration;

use std::path::Path;
use std::sync::Arc;

use raftkv_client::tls::TlsConfig;
use raftkv_client::{Client, ClientOptions};
use raftkv_proto::tls::rustls::ClientConfig;
use raftkv_proto::tls::{Connector, Identity, client_config, explain, roots_from_pem};
use raftkv_proto::v1::{StatusRequest, StatusResponse, cluster_client::ClusterClient};
use tonic::transport::Endpoint;

use crate::certs::KeyedCert;

/// How the operator speaks TLS to the nodes' client ports.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeTls {
    /// The CA certificates (PEM) the nodes' certificates must chain to.
    pub ca_pem: String,
    /// The operator's client certificate, when the nodes require one.
    pub identity: Option<KeyedCert>,
}

impl NodeTls {
    /// The rustls configuration (the one the client library and kvnode use: ring, ALPN h2).
    /// The material comes from Secrets, so the "paths" in errors name their keys.
    pub fn client_config(&self) -> Result<Arc<ClientConfig>, NodeError> {
        let tls_error = |e: raftkv_proto::tls::TlsError| NodeError::Tls(e.to_string());
        let roots =
            roots_from_pem(Path::new("ca.crt"), self.ca_pem.as_bytes()).map_err(tls_error)?;
        let identity = match &self.identity {
            Some(id) => Some(
                Identity::from_pem(
                    Path::new("the operator's tls.crt"),
                    id.cert_pem.as_bytes(),
                    Path::new("the operator's tls.key"),
                    id.key_pem.as_bytes(),
                )
                .map_err(tls_error)?,
            ),
            None => None,
        };
        Ok(Arc::new(client_config(roots, identity).map_err(tls_error)?))
    }
}

/// Why a node call failed.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    /// The address is not a valid endpoint.
    #[error("bad node address {0}: {1}")]
    Address(String, String),
    /// No connection or no answer in time.
    #[error("node {0} unreachable: {1}")]
    Unreachable(String, String),
    /// The node answered with an error.
    #[error("node {0} answered {1}")]
    Rpc(String, String),
    /// A membership or leadership change failed.
    #[error("{0}")]
    Change(String),
    /// The TLS material cannot be used.
    #[error("TLS material: {0}")]
    Tls(String),
}

/// What the operator asks of the nodes.
pub trait NodeApi: Send + Sync + 'static {
    /// `Cluster.Status` of the node at `addr` (`host:port`): its own view.
    fn status(
        &self,
        addr: &str,
        tls: Option<&NodeTls>,
    ) -> impl Future<Output = Result<StatusResponse, NodeError>> + Send;

    /// `Cluster.AddMember`: `node_id` as a learner, sent to any of `endpoints` (redirects to the
    /// leader are followed).
    fn add_member(
        &self,
        tls: Option<&NodeTls>,
        endpoints: Vec<String>,
        node_id: u64,
        peer_addr: String,
        client_addr: String,
    ) -> impl Future<Output = Result<(), NodeError>> + Send;

    /// `Cluster.RemoveMember`; returns once the removal is committed.
    fn remove_member(
        &self,
        tls: Option<&NodeTls>,
        endpoints: Vec<String>,
        node_id: u64,
    ) -> impl Future<Output = Result<(), NodeError>> + Send;

    /// `Cluster.TransferLeader` to the most caught-up follower; returns the new leader's id.
    fn transfer_leader(
        &self,
        tls: Option<&NodeTls>,
        endpoints: Vec<String>,
    ) -> impl Future<Output = Result<u64, NodeError>> + Send;
}

/// [`NodeApi`] over gRPC.
#[derive(Clone, Debug)]
pub struct GrpcNodes {
    /// The budget of one status call (connect included).
    pub status_timeout: Duration,
    /// The budget of one membership or leadership change, redirects and retries included.
    pub change_timeout: Duration,
}

impl Default for GrpcNodes {
    fn default() -> Self {
        GrpcNodes {
            status_timeout: Duration::from_secs(2),
            change_timeout: Duration::from_secs(20),
        }
    }
}

impl GrpcNodes {
    fn client(
        &self,
        tls: Option<&NodeTls>,
        endpoints: Vec<String>,
    ) -> impl Future<Output = Result<Client, NodeError>> {
        let tls = tls.map(NodeTls::client_config);
        let timeout = self.change_timeout;
        async move {
            let options = ClientOptions {
                timeout,
                tls: tls.transpose()?.map(TlsConfig::from_rustls),
                ..ClientOptions::default()
            };
            Client::connect(endpoints, options)
                .await
                .map_err(|e| NodeError::Change(e.to_string()))
        }
    }
}

/// Why a connection failed: the TLS reason in one line when the handshake failed (expired,
/// unknown CA, wrong name), else the transport's own words.
fn unreachable(addr: &str, e: &tonic::transport::Error) -> NodeError {
    NodeError::Unreachable(addr.into(), explain(e).unwrap_or_else(|| e.to_string()))
}

impl NodeApi for GrpcNodes {
    async fn status(&self, addr: &str, tls: Option<&NodeTls>) -> Result<StatusResponse, NodeError> {
        // Always an http:// URI: with TLS, the handshake is the connector's (tonic's own TLS
        // would insist on https and a configuration of its own).
        let endpoint = Endpoint::from_shared(format!("http://{addr}"))
            .map_err(|e| NodeError::Address(addr.into(), e.to_string()))?
            .connect_timeout(self.status_timeout)
            .timeout(self.status_timeout);
        let connector = tls
            .map(|t| t.client_config().map(Connector::fixed))
            .transpose()?;
        let call = async {
            let channel = match connector {
                Some(c) => endpoint.connect_with_connector(c).await,
                None => endpoint.connect().await,
            }
            .map_err(|e| unreachable(addr, &e))?;
            ClusterClient::new(channel)
                .status(StatusRequest {})
                .await
                .map(tonic::Response::into_inner)
                .map_err(|s| {
                    NodeError::Rpc(addr.into(), format!("{:?}: {}", s.code(), s.message()))
                })
        };
        tokio::time::timeout(self.status_timeout, call)
            .await
            .map_err(|_| NodeError::Unreachable(addr.into(), "timed out".into()))?
    }

    async fn add_member(
        &self,
        tls: Option<&NodeTls>,
        endpoints: Vec<String>,
        node_id: u64,
        peer_addr: String,
        client_addr: String,
    ) -> Result<(), NodeError> {
        self.client(tls, endpoints)
            .await?
            .add_member(node_id, peer_addr, client_addr)
            .await
            .map(|_| ())
            .map_err(|e| NodeError::Change(format!("add member {node_id}: {e}")))
    }

    async fn remove_member(
        &self,
        tls: Option<&NodeTls>,
        endpoints: Vec<String>,
        node_id: u64,
    ) -> Result<(), NodeError> {
        self.client(tls, endpoints)
            .await?
            .remove_member(node_id)
            .await
            .map(|_| ())
            .map_err(|e| NodeError::Change(format!("remove member {node_id}: {e}")))
    }

    async fn transfer_leader(
        &self,
        tls: Option<&NodeTls>,
        endpoints: Vec<String>,
    ) -> Result<u64, NodeError> {
        self.client(tls, endpoints)
            .await?
            .transfer_leader(0)
            .await
            .map_err(|e| NodeError::Change(format!("transfer leadership: {e}")))
    }
}
