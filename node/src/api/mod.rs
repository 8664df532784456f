//! The client-facing gRPC services: `raftkv.v1.Kv` (data) and `raftkv.v1.Cluster` (admin).
//!
//! They validate input against the limits of DESIGN.md §5, turn requests into driver calls
//! through a [`crate::NodeHandle`], and map every failure to its status code with
//! [`crate::NodeError::to_status`]. No Raft logic lives here.

mod cluster;
mod kv;
mod limits;
mod outcome;

pub use cluster::ClusterService;
pub use kv::{DEFAULT_REQUEST_TIMEOUT, KvService};
