//! How every raftkv gRPC connection is tuned: the client's channels, the node's channels to its
//! peers and both of the node's servers apply these, so that each side agrees and one place says
//! why.
//!
//! - `TCP_NODELAY` on every socket. gRPC writes a response as several small pieces (headers,
//!   message, trailers); with Nagle's algorithm on, a piece written while an earlier one is still
//!   unacknowledged waits for that ACK, which the peer delays by up to 40 ms. That was the 44 ms
//!   floor of every read (docs/benchmarks.md, "Fast path"). tonic's channels set it by default,
//!   but a server fed its own listener (as the node's are) does not.
//! - HTTP/2 flow-control windows sized for the largest messages: a stream window above the largest
//!   request or append (a 1 MiB value, or an append of `max_size_per_msg` = 1 MiB of entries) so
//!   that neither waits for a WINDOW_UPDATE round trip mid-message, and a connection window that
//!   lets several such streams (pipelined appends, concurrent clients on one channel) move at
//!   once. Memory is bounded by these per connection, and a node has a handful of connections.

use tonic::transport::{Endpoint, Server};

/// The initial HTTP/2 window of each stream: 4 MiB.
pub const STREAM_WINDOW_BYTES: u32 = 4 << 20;

/// The initial HTTP/2 window of each connection, shared by its streams: 16 MiB.
pub const CONNECTION_WINDOW_BYTES: u32 = 16 << 20;

/// Applies the settings above to a channel's endpoint (client to node, node to peer).
pub fn tune_endpoint(endpoint: Endpoint) -> Endpoint {
    endpoint
        .tcp_nodelay(true)
        .initial_stream_window_size(STREAM_WINDOW_BYTES)
        .initial_connection_window_size(CONNECTION_WINDOW_BYTES)
}

/// Applies the settings above to a server. `tcp_nodelay` here covers only listeners the server
/// binds itself; one that serves an accepted-connection stream must set it on each accepted
/// socket (tonic's `TcpIncoming::with_nodelay`).
pub fn tune_server(server: Server) -> Server {
    server
        .tcp_nodelay(true)
        .initial_stream_window_size(STREAM_WINDOW_BYTES)
        .initial_connection_window_size(CONNECTION_WINDOW_BYTES)
}
