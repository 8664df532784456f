//! raftkv-operator: runs raftkv clusters on Kubernetes.
//!
//! - [`crd`]: the `KvCluster` resource (spec, status) and the generated CRD.
//! - [`resources`]: pure builders of the objects a KvCluster owns (Services, PDB, NetworkPolicy,
//!   StatefulSet).
//! - [`planner`]: the pure planner, observed state -> at most one action, and the leader labels.
//! - [`render`]: `kv-operator render`, the objects the first reconcile would apply.
pub mod crd;
pub mod planner;
pub mod render;
pub mod resources;
