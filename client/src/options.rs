//! [`ClientOptions`]: how long to wait, how often to retry, how large a message may be.

use std::collections::BTreeMap;
use std::time::Duration;

/// Tunables of a [`crate::Client`]. Start from [`Default`] and override what you need:
///
/// ```
/// # use std::time::Duration;
/// let options = raftkv_client::ClientOptions {
///     timeout: Duration::from_secs(2),
///     ..Default::default()
/// };
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClientOptions {
    /// The budget of one call, all redirects and retries included. When it runs out the call
    /// fails with [`crate::Error::Timeout`] (reads) or [`crate::Error::OutcomeUnknown`] (writes).
    pub timeout: Duration,
    /// The longest a single attempt may take before the client gives up on that node and tries
    /// the next one. Shorter than `timeout` so that one hung node (SIGSTOP, a partition) does not
    /// eat the whole budget. Also sent to the server as the gRPC deadline.
    pub attempt_timeout: Duration,
    /// How long to wait for a TCP connection to a node.
    pub connect_timeout: Duration,
    /// The interval of HTTP/2 keepalive pings, which detect a dead connection that TCP alone
    /// would only notice after minutes.
    pub keepalive_interval: Duration,
    /// How long to wait for a keepalive ping's answer before the connection is closed.
    pub keepalive_timeout: Duration,
    /// The first pause between retries; it doubles after every failure up to `backoff_max`.
    pub backoff_initial: Duration,
    /// The longest pause between retries.
    pub backoff_max: Duration,
    /// The largest gRPC message sent or received; by default the nodes' own
    /// ([`crate::MAX_GRPC_MESSAGE_BYTES`]). Must exceed the 1 MiB value limit plus overhead;
    /// tonic's default (4 MiB) is too small for a full Scan page of large values.
    pub max_message_size: usize,
    /// Addresses to dial in place of the ones the nodes name, `host:port` -> `host:port` (like
    /// curl's `--connect-to`). Nodes redirect to the client address a leader *advertises*; in a
    /// container network or a StatefulSet that is a DNS name only resolvable inside it, so a
    /// client outside (a test on the Docker host) maps each name to an address it can reach.
    /// Applies to configured endpoints, redirects and the leader named by a status. Empty by
    /// default: every address is dialled as named.
    pub connect_to: BTreeMap<String, String>,
    /// TLS for every channel (feature `tls`): the configured endpoints and the leaders that
    /// redirects name alike. `None` (the default) dials plain TCP.
    #[cfg(feature = "tls")]
    pub tls: Option<crate::tls::TlsConfig>,
}

impl Default for ClientOptions {
    fn default() -> Self {
        Self {
            timeout: Duration::from_secs(5),
            attempt_timeout: Duration::from_secs(2),
            connect_timeout: Duration::from_secs(1),
            keepalive_interval: Duration::from_secs(10),
            keepalive_timeout: Duration::from_secs(5),
            backoff_initial: Duration::from_millis(20),
            backoff_max: Duration::from_millis(500),
            max_message_size: raftkv_proto::MAX_GRPC_MESSAGE_BYTES,
            connect_to: BTreeMap::new(),
            #[cfg(feature = "tls")]
            tls: None,
        }
    }
}
