//! The raftkv client: an async library and the `kvctl` CLI (src/bin/kvctl).
//!
//! - [`client`]: [`Client`], the operations (get, put, delete, compare-and-swap, scan, status,
//!   membership), each checked and sent through the two rooms below.
//! - `call`: one tonic channel per endpoint; follows leader redirects, caches the leader, retries
//!   with backoff until a per-call timeout.
//! - `session`: the exactly-once session (`client_id`, `seq`) every write takes once, so that a
//!   retry is never applied twice, and the window of seqs in flight.
//! - `sync`: the poison-tolerant lock helper.
//! - [`options`]: [`ClientOptions`], timeouts, keepalive, backoff and message size.
//! - [`error`]: [`Error`], which separates definite failures from unknown outcomes.
//! - [`tls`] (feature `tls`): [`tls::TlsConfig`], TLS to the nodes' client ports.
//! - [`local`]: the fixed addresses of a localhost cluster (`kvctl local up`), which are also the
//!   default endpoints.
//!
//! ```no_run
//! # async fn demo() -> Result<(), raftkv_client::Error> {
//! use raftkv_client::{Client, ClientOptions, Consistency};
//! let client = Client::connect(raftkv_client::local::default_endpoints(), ClientOptions::default()).await?;
//! let version = client.put("greeting", "hello").await?;
//! let got = client.get("greeting", Consistency::Linearizable).await?;
//! assert_eq!(got.map(|v| v.version), Some(version));
//! # Ok(())
//! # }
//! ```

mod call;
pub mod client;
pub mod error;
pub mod local;
pub mod options;
mod session;
mod sync;
#[cfg(feature = "tls")]
pub mod tls;

pub use bytes::Bytes;
pub use client::{CasOutcome, Client, ScanPage, Versioned};
pub use error::Error;
pub use options::ClientOptions;
pub use raftkv_proto::v1::{
    Consistency, KeyValue, Member, MemberRole, MemberState, Role, StatusResponse,
};

/// The key, value and message limits the servers enforce (DESIGN §5), under the names
/// `raftkv-proto` gives them; the client checks keys and values against them before sending.
pub use raftkv_proto::{MAX_GRPC_MESSAGE_BYTES, MAX_KEY_BYTES, MAX_VALUE_BYTES};
