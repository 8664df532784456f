//! raftkv-operator: runs raftkv clusters on Kubernetes (DESIGN §7).
//!
//! One reconcile of a KvCluster is observe -> plan -> act -> report:
//!
//! - [`crd`]: the `KvCluster` resource (spec, status) and the generated CRD.
//! - [`resources`]: pure builders of the objects a KvCluster owns (Services, PDB, NetworkPolicy,
//!   StatefulSet).
//! - [`podtls`]: the TLS Secrets a pod mounts and the kvnode flags that name them (`spec.tls`).
//! - [`certs`]: the certificates of `spec.tls.*.auto` (CA, per-pod, the operator's) and the pure
//!   renewal and CA-overlap decisions.
//! - [`autotls`]: the CA and certificate Secrets of one pass, from what is stored and the time.
//! - [`tlsio`]: the reconcile's TLS step against the API server: read the Secrets, how to dial
//!   the nodes, apply the `auto` Secrets.
//! - [`nodes`]: the nodes' `Cluster` API as the operator uses it (a trait, and its gRPC
//!   implementation).
//! - [`observe`]: what the API server and the nodes said, turned into the planner's input.
//! - [`planner`]: the pure planner, observed state -> at most one action, and the leader labels.
//! - [`status`]: the status and conditions written after every pass.
//! - [`controller`]: reconcile (observe, plan, act, report), error policy with backoff.
//! - [`run`]: `kv-operator run`: leader election, the controller, graceful shutdown.
//! - [`render`]: `kv-operator render`, the objects the first reconcile would apply.
//! - [`metrics`]: the operator's Prometheus series and its /metrics, /healthz, /readyz endpoint.
pub mod autotls;
pub mod certs;
pub mod controller;
pub mod crd;
pub mod metrics;
pub mod nodes;
pub mod observe;
pub mod planner;
pub mod podtls;
pub mod render;
pub mod resources;
pub mod run;
pub mod status;
pub mod tlsio;
