//! The raftkv wire contract, generated at build time from `proto/raftkv/v1/*.proto`.
//!
//! - [`v1`]: messages and tonic clients/servers of package `raftkv.v1`:
//!   - service `Kv` (kv.proto): the client API — Put, Get, Delete, Scan, CompareAndSwap;
//!   - service `Cluster` (cluster.proto): the admin API — Status, AddMember, RemoveMember,
//!     TransferLeader;
//!   - service `Raft` (raft.proto): node-to-node messages; responses travel one-way through
//!     `Respond` (the reason is written at the top of raft.proto).
//! - [`LEADER_METADATA_KEY`]: the response metadata that names the leader on a redirect.
//! - [`FILE_DESCRIPTOR_SET`]: the compiled descriptors, for gRPC reflection.
//!
//! Byte fields are `bytes::Bytes` (re-exported by prost as [`prost::bytes`]).

/// Package `raftkv.v1`: every message, enum, client and server of the three services.
#[allow(missing_docs)] // tonic's generated client/server plumbing has items without docs.
pub mod v1 {
    tonic::include_proto!("raftkv.v1");
}

/// The metadata key of a redirect: a node that is not the leader answers FAILED_PRECONDITION
/// with this key set to the leader's client address (`host:port`).
pub const LEADER_METADATA_KEY: &str = "raftkv-leader";

/// The encoded `FileDescriptorSet` of all raftkv protos (for `tonic-reflection` or tooling).
pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("raftkv_descriptor");

pub use prost;
pub use tonic;
