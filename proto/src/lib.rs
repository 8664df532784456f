//! The raftkv wire contract, generated at build time from `proto/raftkv/v1/*.proto`.
//!
//! - [`v1`]: messages and tonic clients/servers of package `raftkv.v1`:
//!   - service `Kv` (kv.proto): the client API — Put, Get, Delete, Scan, CompareAndSwap;
//!   - service `Cluster` (cluster.proto): the admin API — Status, AddMember, RemoveMember,
//!     TransferLeader;
//!   - service `Raft` (raft.proto): node-to-node messages; responses travel one-way through
//!     `Respond` (the reason is written at the top of raft.proto).
//! - [`LEADER_METADATA_KEY`]: the response metadata that names the leader on a redirect.
//! - Input limits, named once for the client, the node's API and its transport:
//!   [`MAX_KEY_BYTES`], [`MAX_VALUE_BYTES`], [`MAX_GRPC_MESSAGE_BYTES`], and one check per limit
//!   ([`check_key`], [`check_scan_bound`], [`check_value`]) whose [`LimitError`] the client turns
//!   into its `Error::InvalidArgument` and the server into an INVALID_ARGUMENT status, so both
//!   refuse the same input with the same words.
//! - [`FILE_DESCRIPTOR_SET`]: the compiled descriptors, for gRPC reflection.
//! - [`http2`]: TCP_NODELAY and HTTP/2 windows, applied by every channel and server alike.
//! - `tls` (feature `tls`): PEM identities and CA bundles, the rustls client configuration and the
//!   tonic connector that the client library and the node's peer dialing share.
//!
//! Byte fields are `bytes::Bytes` (re-exported by prost as [`prost::bytes`]).

pub mod http2;

/// Package `raftkv.v1`: every message, enum, client and server of the three services.
#[allow(missing_docs)] // tonic's generated client/server plumbing has items without docs.
pub mod v1 {
    tonic::include_proto!("raftkv.v1");
}

/// The metadata key of a redirect: a node that is not the leader answers FAILED_PRECONDITION
/// with this key set to the leader's client address (`host:port`).
pub const LEADER_METADATA_KEY: &str = "raftkv-leader";

/// Keys are 1..=4096 bytes (DESIGN.md §5).
pub const MAX_KEY_BYTES: usize = 4096;

/// Values are 0..=1 MiB (DESIGN.md §5).
pub const MAX_VALUE_BYTES: usize = 1 << 20;

/// The gRPC message limit of both node ports and of the client: well above the largest request
/// (key + value + session) and the largest Scan page (4 MiB), so oversize input reaches the
/// checks below and gets a clear error instead of a transport-level one; tonic's default (4 MiB)
/// would be too small for a full Scan page.
pub const MAX_GRPC_MESSAGE_BYTES: usize = 16 << 20;

/// An input over one of the limits above. The message names the field and the limit, so a
/// user can tell what to change.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LimitError {
    /// An empty key (keys are at least one byte).
    #[error("{field} must not be empty (keys are 1..={MAX_KEY_BYTES} bytes)")]
    EmptyKey {
        /// The request field, e.g. `key`.
        field: &'static str,
    },
    /// A key, or a scan bound, over [`MAX_KEY_BYTES`].
    #[error("{field} is {len} bytes; the limit is {MAX_KEY_BYTES} bytes")]
    KeyTooLong {
        /// The request field, e.g. `key` or `start`.
        field: &'static str,
        /// The key's length in bytes.
        len: usize,
    },
    /// A value over [`MAX_VALUE_BYTES`].
    #[error("value is {len} bytes; the limit is {MAX_VALUE_BYTES} bytes")]
    ValueTooLarge {
        /// The value's length in bytes.
        len: usize,
    },
}

/// Checks a key: 1..=[`MAX_KEY_BYTES`] bytes. `field` names it in the error.
pub fn check_key(field: &'static str, key: &[u8]) -> Result<(), LimitError> {
    if key.is_empty() {
        return Err(LimitError::EmptyKey { field });
    }
    check_scan_bound(field, key)
}

/// Checks a scan bound: empty (an open end) or like a key.
pub fn check_scan_bound(field: &'static str, bound: &[u8]) -> Result<(), LimitError> {
    if bound.len() > MAX_KEY_BYTES {
        return Err(LimitError::KeyTooLong {
            field,
            len: bound.len(),
        });
    }
    Ok(())
}

/// Checks a value: 0..=[`MAX_VALUE_BYTES`] bytes.
pub fn check_value(value: &[u8]) -> Result<(), LimitError> {
    if value.len() > MAX_VALUE_BYTES {
        return Err(LimitError::ValueTooLarge { len: value.len() });
    }
    Ok(())
}

/// A server refuses input over a limit with INVALID_ARGUMENT and the limit's message.
impl From<LimitError> for tonic::Status {
    fn from(e: LimitError) -> Self {
        tonic::Status::invalid_argument(e.to_string())
    }
}

/// The encoded `FileDescriptorSet` of all raftkv protos (for `tonic-reflection` or tooling).
pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("raftkv_descriptor");

pub use prost;
pub use tonic;

#[cfg(feature = "tls")]
pub mod tls;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_are_inclusive_and_named() {
        assert_eq!(check_key("key", b"k"), Ok(()));
        assert_eq!(check_key("key", &[0; MAX_KEY_BYTES]), Ok(()));
        let e = check_key("key", &[0; MAX_KEY_BYTES + 1]).expect_err("too long");
        assert_eq!(e.to_string(), "key is 4097 bytes; the limit is 4096 bytes");
        assert_eq!(
            check_key("key", b""),
            Err(LimitError::EmptyKey { field: "key" })
        );
        assert_eq!(check_scan_bound("start", b""), Ok(()));
        assert_eq!(check_scan_bound("end", &[0; MAX_KEY_BYTES]), Ok(()));
        assert!(check_scan_bound("end", &[0; MAX_KEY_BYTES + 1]).is_err());
        assert_eq!(check_value(b""), Ok(()));
        assert_eq!(check_value(&vec![0; MAX_VALUE_BYTES]), Ok(()));
        let e = check_value(&vec![0; MAX_VALUE_BYTES + 1]).expect_err("too large");
        assert!(e.to_string().contains("1048576"), "{e}");
    }

    #[test]
    fn a_limit_error_is_an_invalid_argument_status() {
        let status = tonic::Status::from(LimitError::KeyTooLong {
            field: "start",
            len: 5000,
        });
        assert_eq!(status.code(), tonic::Code::InvalidArgument);
        assert_eq!(
            status.message(),
            "start is 5000 bytes; the limit is 4096 bytes"
        );
    }
}
