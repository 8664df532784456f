//! Node-to-node messaging over gRPC (`raftkv.v1.Raft`).
//!
//! - [`wire`]: core `Message` <-> protobuf, with validation of everything inbound;
//! - `peer`: two sender tasks per peer (appends; everything else) sharing one reused tonic
//!   `Channel` (connect timeout, HTTP/2 keepalive, TLS when configured), each with a bounded
//!   queue and a long-lived `Raft.Pipe` stream, so a slow or dead peer never blocks the others;
//! - `snapshot_send`: streaming a snapshot file to a peer and reporting the outcome;
//! - `server`: the `Raft` service that checks cluster id, recipient and (with peer TLS) that the
//!   sender is who its certificate says, and hands messages to the driver; it also receives
//!   snapshot streams and stages them on disk;
//! - `types`: what the driver, the sender tasks and the service share (the inbound queue's
//!   items, the configuration, the peers' lease guards), kept apart so that no child imports
//!   from this module.
//!
//! Messages are one-way (see the note at the top of raft.proto): the driver steps whatever
//! arrives, and the answers travel back like any other message.

mod peer;
mod server;
mod snapshot_send;
mod types;
pub mod wire;

pub use peer::Transport;
pub use server::RaftService;
pub use types::{Inbound, PeerDirectory, PeerGuards, PeerTls, TransportConfig};
