//! Node-to-node messaging over gRPC (`raftkv.v1.Raft`).
//!
//! - [`wire`]: core `Message` <-> protobuf, with validation of everything inbound;
//! - `peer`: one sender task per peer with one reused tonic `Channel` (connect timeout, HTTP/2
//!   keepalive, TLS when configured) and a bounded queue, so a slow or dead peer never blocks the
//!   others;
//! - `server`: the `Raft` service that checks cluster id, recipient and (with peer TLS) that the
//!   sender is who its certificate says, and hands messages to the driver; it also receives
//!   snapshot streams and stages them on disk;
//! - `types`: what the driver, the sender tasks and the service share (the inbound queue's
//!   items, the configuration, the peers' lease guards), kept apart so that no child imports
//!   from this module.
//!
//! Messages are one-way (see the note at the top of raft.proto): the driver steps whatever
//! arrives, and the answers travel back through `Raft.Respond`.

mod peer;
mod server;
mod types;
pub mod wire;

pub use peer::Transport;
pub use server::RaftService;
pub use types::{Inbound, PeerDirectory, PeerGuards, PeerTls, TransportConfig};
