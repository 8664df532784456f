//! [`Caller`]: how one call reaches the cluster — leader redirects, retries with backoff, and the
//! endpoints a client knows.
//!
//! How a call goes:
//! 1. It is sent to the cached leader, or else to the next endpoint in round-robin order.
//! 2. FAILED_PRECONDITION with `raftkv-leader: host:port` means "not the leader, ask there": the
//!    client opens a channel to that address (if it has none), caches it as the leader and retries
//!    at once. An address listed in `ClientOptions::connect_to` is dialled as the address it maps
//!    to (a name only a container network resolves, seen from outside it).
//! 3. UNAVAILABLE, DEADLINE_EXCEEDED, RESOURCE_EXHAUSTED, transport errors and attempts that get no
//!    answer within `attempt_timeout` forget the cached leader, rotate to the next endpoint and
//!    retry after an exponential, jittered backoff — until the call's `timeout` runs out.
//! 4. Anything else is a definite answer and is returned as is.
//! 5. With TLS (`ClientOptions::tls`) every channel, redirect targets included, dials with the
//!    same TLS configuration. A failed handshake is retried on the other endpoints like a
//!    transport error, but once every attempt so far, at least one per endpoint, failed in the
//!    handshake, the call fails with [`Error::Tls`] at once: waiting would not fix a certificate.
//!
//! A write's retries resend the identical request (same session and seq, see `session.rs`), so
//! retrying is safe; an ABORTED answer to a session write replaces the session.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Mutex;
use std::time::Duration;

use raftkv_proto::LEADER_METADATA_KEY;
use raftkv_proto::v1::cluster_client::ClusterClient;
use raftkv_proto::v1::kv_client::KvClient;
use raftkv_proto::v1::{Consistency, Role, StatusRequest, StatusResponse};
use tokio::time::Instant;
use tonic::transport::{Channel, Endpoint as TonicEndpoint, Uri};
use tonic::{Code, Status};

use crate::error::Error;
use crate::options::ClientOptions;
use crate::session::WriteSlot;
use crate::sync::lock;

/// The most endpoints a client keeps. Redirects add the leader's address when it is not one of
/// the configured endpoints; the cap keeps a long-lived client in a churning cluster bounded.
const MAX_ENDPOINTS: usize = 64;

/// Sends a client's calls: one channel per known node, the leader cache, and the redirect and
/// retry loop. Shared by a client's clones.
#[derive(Debug)]
pub(crate) struct Caller {
    options: ClientOptions,
    /// `options.connect_to` with both sides normalised (`http://host:port`).
    connect_to: BTreeMap<String, String>,
    // A std Mutex, not a tokio one: it is held only for a few field updates, never across an await.
    routing: Mutex<Routing>,
}

/// Where to send the next attempt.
#[derive(Debug)]
struct Routing {
    endpoints: Vec<Node>,
    /// The index of the node believed to lead, learned from a redirect or a successful write.
    leader: Option<usize>,
    /// Where round-robin continues when no leader is known.
    next: usize,
}

#[derive(Debug)]
struct Node {
    /// Normalised `http://host:port`, used to match redirect targets against known nodes.
    uri: String,
    /// Whether the user configured this node (rather than a redirect adding it).
    seed: bool,
    channel: Channel,
}

/// What kind of call is running; decides the error when time runs out and leader caching.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum CallKind {
    /// Changes state: a timeout leaves the outcome unknown.
    Write,
    /// Served by the leader only: success confirms the leader.
    LeaderRead,
    /// Served by any node.
    AnyRead,
}

impl CallKind {
    pub(crate) fn read(consistency: Consistency) -> Self {
        match consistency {
            Consistency::Stale => CallKind::AnyRead,
            Consistency::Linearizable | Consistency::Lease => CallKind::LeaderRead,
        }
    }
}

/// What to do after an attempt failed.
enum RetryDecision {
    /// Ask the named leader instead.
    Redirect(String),
    /// Try another node after a pause; says what went wrong.
    Retry(String),
    /// Give up with this error.
    Fail(Status),
}

impl Caller {
    /// A caller for `endpoints` (`host:port` or `http://host:port`). Channels connect lazily.
    pub(crate) fn new(endpoints: Vec<String>, options: ClientOptions) -> Result<Self, Error> {
        if endpoints.is_empty() {
            return Err(Error::NoEndpoints);
        }
        #[cfg(feature = "tls")]
        let has_tls = options.tls.is_some();
        #[cfg(not(feature = "tls"))]
        let has_tls = false;
        if let Some(https) = endpoints
            .iter()
            .find(|e| !has_tls && e.trim().starts_with("https://"))
        {
            return Err(Error::InvalidEndpoint {
                endpoint: https.clone(),
                reason: "https:// needs a TLS configuration (ClientOptions::tls, kvctl --cacert)"
                    .into(),
            });
        }
        let connect_to = options
            .connect_to
            .iter()
            .map(|(from, to)| Ok((normalize(from)?, normalize(to)?)))
            .collect::<Result<BTreeMap<_, _>, Error>>()?;
        let mut nodes: Vec<Node> = Vec::with_capacity(endpoints.len());
        for endpoint in endpoints {
            let uri = route(&connect_to, &endpoint)?;
            if nodes.iter().any(|n| n.uri == uri) {
                continue;
            }
            let channel = open_channel(&uri, &options)?;
            nodes.push(Node {
                uri,
                seed: true,
                channel,
            });
        }
        Ok(Self {
            options,
            connect_to,
            routing: Mutex::new(Routing {
                endpoints: nodes,
                leader: None,
                next: 0,
            }),
        })
    }

    /// The options the client was created with.
    pub(crate) fn options(&self) -> &ClientOptions {
        &self.options
    }

    /// The address (`http://host:port`) of the node currently believed to lead, if any.
    pub(crate) fn leader(&self) -> Option<String> {
        let routing = lock(&self.routing);
        routing.leader.map(|i| routing.endpoints[i].uri.clone())
    }

    /// Forgets the cached leader (it is known to have changed).
    pub(crate) fn forget_leader(&self) {
        lock(&self.routing).leader = None;
    }

    /// Asks the node at `client_addr` once, within one attempt's budget, for its status, and
    /// caches it as the leader if it says it leads. `None` when it cannot be reached, does not
    /// answer in time, or does not lead.
    pub(crate) async fn leader_status(&self, client_addr: &str) -> Option<StatusResponse> {
        let uri = route(&self.connect_to, client_addr).ok()?;
        let index = self.node_index(&uri).ok()?;
        let mut cluster = self.cluster(self.channel(index));
        let timeout = self.options.attempt_timeout;
        let request = with_deadline(StatusRequest {}, timeout);
        let Ok(Ok(response)) = tokio::time::timeout(timeout, cluster.status(request)).await else {
            return None;
        };
        let leader = response.into_inner();
        if leader.role != i32::from(Role::Leader) {
            return None;
        }
        lock(&self.routing).leader = Some(index);
        Some(leader)
    }

    pub(crate) fn kv(&self, channel: Channel) -> KvClient<Channel> {
        let limit = self.options.max_message_size;
        KvClient::new(channel)
            .max_decoding_message_size(limit)
            .max_encoding_message_size(limit)
    }

    pub(crate) fn cluster(&self, channel: Channel) -> ClusterClient<Channel> {
        let limit = self.options.max_message_size;
        ClusterClient::new(channel)
            .max_decoding_message_size(limit)
            .max_encoding_message_size(limit)
    }

    fn channel(&self, index: usize) -> Channel {
        lock(&self.routing).endpoints[index].channel.clone()
    }

    /// Runs `attempt` with redirects and retries until it succeeds, fails definitely, or the
    /// call's timeout runs out. `attempt` gets the channel to try and the attempt's time budget;
    /// `session` is the session slot of a session write (to replace the session if it expired).
    pub(crate) async fn call<T, F, Fut>(
        &self,
        kind: CallKind,
        session: Option<&WriteSlot>,
        mut attempt: F,
    ) -> Result<T, Error>
    where
        F: FnMut(Channel, Duration) -> Fut,
        Fut: Future<Output = Result<tonic::Response<T>, Status>>,
    {
        let options = &self.options;
        let started = Instant::now();
        let deadline = started + options.timeout;
        let mut backoff = options.backoff_initial;
        let mut attempts: u32 = 0;
        let mut redirects_in_a_row: u32 = 0;
        // TLS failures, and whether any node answered at all: a call that no node answered
        // and that met a failed handshake fails with the handshake's reason, not a timeout.
        let mut tls_failures: usize = 0;
        let mut tls_reason = None;
        let mut answered = false;
        let mut last_error = String::from("no attempt finished");
        // Set by a redirect: the next attempt goes to the named leader.
        let mut forced = None;

        loop {
            let remaining = deadline.saturating_duration_since(Instant::now());
            if remaining.is_zero() {
                return Err(match tls_reason {
                    Some(reason) if !answered => Error::Tls(reason),
                    _ => timeout_error(kind, attempts, started.elapsed(), last_error),
                });
            }
            let (index, uri, channel) = self.pick(forced.take());
            let budget = remaining.min(options.attempt_timeout);
            attempts += 1;

            let outcome = tokio::time::timeout(budget, attempt(channel, budget)).await;
            let status = match outcome {
                Ok(Ok(response)) => {
                    if kind != CallKind::AnyRead {
                        lock(&self.routing).leader = Some(index);
                    }
                    return Ok(response.into_inner());
                }
                Ok(Err(status)) => match tls_failure(&status) {
                    Some(reason) => {
                        tls_failures += 1;
                        last_error = format!("{uri}: {reason}");
                        let endpoints = lock(&self.routing).endpoints.len();
                        if !answered && tls_failures >= endpoints {
                            return Err(Error::Tls(last_error));
                        }
                        tls_reason = Some(last_error.clone());
                        self.failed(index);
                        self.pause(&mut backoff, deadline).await;
                        continue;
                    }
                    None => {
                        // Codes a node sends, as opposed to those of a broken connection.
                        answered |= !matches!(
                            status.code(),
                            Code::Unknown | Code::Internal | Code::Cancelled
                        );
                        status
                    }
                },
                Err(_elapsed) => {
                    // No answer in time: the node may be hung or partitioned. Try another one
                    // at once; the attempt itself already took its time.
                    last_error = format!("{uri}: no answer within {budget:?}");
                    redirects_in_a_row = 0;
                    self.failed(index);
                    continue;
                }
            };

            match retry_decision(status) {
                RetryDecision::Redirect(target) => {
                    last_error = format!("{uri}: not the leader, redirected to {target}");
                    redirects_in_a_row += 1;
                    match route(&self.connect_to, &target).and_then(|t| self.node_index(&t)) {
                        Ok(leader) if leader != index => {
                            lock(&self.routing).leader = Some(leader);
                            forced = Some(leader);
                        }
                        // A node naming itself, or an address we cannot use: its view is stale
                        // or broken, so treat it like an unavailable node.
                        _ => self.failed(index),
                    }
                    // The first redirect is followed at once; a chain of them (an election in
                    // progress, stale views) backs off like any other retry.
                    if redirects_in_a_row > 1 {
                        self.pause(&mut backoff, deadline).await;
                    }
                }
                RetryDecision::Retry(what) => {
                    redirects_in_a_row = 0;
                    last_error = format!("{uri}: {what}");
                    self.failed(index);
                    self.pause(&mut backoff, deadline).await;
                }
                RetryDecision::Fail(status) => {
                    return Err(self.definite_error(kind, session, attempts, started, status));
                }
            }
        }
    }

    /// Maps a non-retryable status to the caller's error. `session` is the session slot a write
    /// carried, if it carried one.
    fn definite_error(
        &self,
        kind: CallKind,
        session: Option<&WriteSlot>,
        attempts: u32,
        started: Instant,
        status: Status,
    ) -> Error {
        let code = status.code();
        let message = status.message().to_owned();
        if let (Code::Aborted, Some(slot)) = (code, session) {
            slot.session_expired();
        }
        // A session-less write (a membership change) that is refused on a retry may be refused
        // because an earlier attempt applied it ("node 4 is not a member" after a removal that
        // went through): only its first attempt's answer is definite.
        let sessionless_retry = kind == CallKind::Write && session.is_none() && attempts > 1;
        match code {
            // Retries resend the identical request, so this is about the request itself.
            Code::InvalidArgument if !sessionless_retry => Error::InvalidArgument(message),
            // An earlier attempt of this write may have been applied (its answer was lost), so
            // a refusal now proves nothing about the write — e.g. the session expired after the
            // first attempt was applied.
            _ if kind == CallKind::Write && attempts > 1 => Error::OutcomeUnknown {
                attempts,
                elapsed: started.elapsed(),
                last_error: format!(
                    "{code:?} after an earlier attempt that may have applied: {message}"
                ),
            },
            Code::Aborted if session.is_some() => Error::SessionExpired(message),
            code => Error::Rpc { code, message },
        }
    }

    /// The node for the next attempt: `forced`, else the cached leader, else round-robin.
    fn pick(&self, forced: Option<usize>) -> (usize, String, Channel) {
        let mut routing = lock(&self.routing);
        let len = routing.endpoints.len();
        let index = match forced.or(routing.leader) {
            Some(index) if index < len => index,
            _ => {
                let index = routing.next % len;
                routing.next = index;
                index
            }
        };
        let node = &routing.endpoints[index];
        (index, node.uri.clone(), node.channel.clone())
    }

    /// Node `index` failed: forget it as leader and continue round-robin after it. A node
    /// learned from a redirect sits after the configured ones, so "after it" would wrap around to
    /// the node that redirected there; continue after that node instead.
    fn failed(&self, index: usize) {
        let mut routing = lock(&self.routing);
        if routing.leader == Some(index) {
            routing.leader = None;
        }
        let len = routing.endpoints.len();
        let learned = routing.endpoints.get(index).is_some_and(|n| !n.seed);
        routing.next = if learned {
            (routing.next + 1) % len
        } else {
            (index + 1) % len
        };
    }

    /// The index of the node at `uri`, opening a channel to it if it is new.
    fn node_index(&self, uri: &str) -> Result<usize, Error> {
        let mut routing = lock(&self.routing);
        if let Some(index) = routing.endpoints.iter().position(|n| n.uri == uri) {
            return Ok(index);
        }
        let node = Node {
            uri: uri.to_owned(),
            seed: false,
            channel: open_channel(uri, &self.options)?,
        };
        if routing.endpoints.len() < MAX_ENDPOINTS {
            routing.endpoints.push(node);
            return Ok(routing.endpoints.len() - 1);
        }
        // Full: replace a node learned from an earlier redirect (never a configured one), in
        // place so that indexes held by running calls stay in range.
        let leader = routing.leader;
        let slot = routing
            .endpoints
            .iter()
            .enumerate()
            .position(|(i, n)| !n.seed && Some(i) != leader);
        match slot {
            Some(slot) => {
                routing.endpoints[slot] = node;
                Ok(slot)
            }
            None => Err(Error::InvalidEndpoint {
                endpoint: uri.to_owned(),
                reason: format!("the client already tracks {MAX_ENDPOINTS} endpoints"),
            }),
        }
    }

    /// Sleeps for the current backoff (with jitter, never past the deadline) and doubles it.
    async fn pause(&self, backoff: &mut Duration, deadline: Instant) {
        let remaining = deadline.saturating_duration_since(Instant::now());
        // Jitter in [50%, 100%) keeps many clients that failed together from retrying in step.
        let factor = 0.5 + f64::from(getrandom::u32().unwrap_or(0) % 1000) / 2000.0;
        let sleep = backoff.mul_f64(factor).min(remaining);
        tokio::time::sleep(sleep).await;
        *backoff = (*backoff * 2).min(self.options.backoff_max);
    }
}

/// Classifies a failed attempt.
fn retry_decision(status: Status) -> RetryDecision {
    match status.code() {
        Code::FailedPrecondition => match leader_hint(&status) {
            Some(target) => RetryDecision::Redirect(target),
            None => RetryDecision::Fail(status),
        },
        // Transient by contract (UNAVAILABLE: no leader, leadership lost, transfer running;
        // DEADLINE_EXCEEDED: not committed in time; RESOURCE_EXHAUSTED: overload), or how tonic
        // reports a broken connection (UNKNOWN, INTERNAL, CANCELLED). Retrying a write is safe:
        // it carries the same seq.
        Code::Unavailable
        | Code::DeadlineExceeded
        | Code::ResourceExhausted
        | Code::Cancelled
        | Code::Unknown
        | Code::Internal => {
            RetryDecision::Retry(format!("{:?}: {}", status.code(), status.message()))
        }
        _ => RetryDecision::Fail(status),
    }
}

/// What went wrong in the TLS handshake, if that is why the attempt failed.
fn tls_failure(status: &Status) -> Option<String> {
    #[cfg(feature = "tls")]
    return raftkv_proto::tls::explain(status);
    #[cfg(not(feature = "tls"))]
    return {
        let _ = status;
        None
    };
}

/// The leader address named by a redirect, if the status carries a usable one.
fn leader_hint(status: &Status) -> Option<String> {
    let value = status
        .metadata()
        .get(LEADER_METADATA_KEY)?
        .to_str()
        .ok()?
        .trim();
    (!value.is_empty()).then(|| value.to_owned())
}

fn timeout_error(kind: CallKind, attempts: u32, elapsed: Duration, last_error: String) -> Error {
    if kind == CallKind::Write {
        Error::OutcomeUnknown {
            attempts,
            elapsed,
            last_error,
        }
    } else {
        Error::Timeout {
            attempts,
            elapsed,
            last_error,
        }
    }
}

/// Wraps a message in a request whose gRPC deadline is the attempt's budget, so that the server
/// can stop working on an attempt the client has already given up on.
pub(crate) fn with_deadline<T>(message: T, timeout: Duration) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request.set_timeout(timeout);
    request
}

/// `host:port`, `http://host:port` or `https://host:port` as `http://host:port`: the key the
/// client knows a node by. Whether it is dialled with TLS is the client's option, not the
/// scheme's (the TLS is the connector's; tonic's own would refuse `https` without its TLS).
fn normalize(endpoint: &str) -> Result<String, Error> {
    let endpoint = endpoint.trim();
    let invalid = |reason: &str| Error::InvalidEndpoint {
        endpoint: endpoint.to_owned(),
        reason: reason.to_owned(),
    };
    if endpoint.is_empty() {
        return Err(invalid("empty"));
    }
    let with_scheme = if endpoint.starts_with("http://") {
        endpoint.to_owned()
    } else if let Some(rest) = endpoint.strip_prefix("https://") {
        format!("http://{rest}")
    } else {
        format!("http://{endpoint}")
    };
    let uri: Uri = with_scheme
        .parse()
        .map_err(|e: tonic::codegen::http::uri::InvalidUri| invalid(&e.to_string()))?;
    let Some(authority) = uri.authority() else {
        return Err(invalid("no host"));
    };
    if authority.port_u16().is_none() {
        return Err(invalid("no port (expected host:port)"));
    }
    if uri.path() != "/" && !uri.path().is_empty() {
        return Err(invalid("a path is not allowed (expected host:port)"));
    }
    Ok(format!("http://{authority}"))
}

/// The normalised address to dial for `endpoint`: its `connect_to` replacement, if it has one.
fn route(connect_to: &BTreeMap<String, String>, endpoint: &str) -> Result<String, Error> {
    let uri = normalize(endpoint)?;
    Ok(connect_to.get(&uri).cloned().unwrap_or(uri))
}

/// A lazily connecting channel to `uri`, with the client's timeouts and keepalive.
fn open_channel(uri: &str, options: &ClientOptions) -> Result<Channel, Error> {
    let endpoint =
        TonicEndpoint::from_shared(uri.to_owned()).map_err(|e| Error::InvalidEndpoint {
            endpoint: uri.to_owned(),
            reason: e.to_string(),
        })?;
    let endpoint = raftkv_proto::http2::tune_endpoint(endpoint)
        .connect_timeout(options.connect_timeout)
        .http2_keep_alive_interval(options.keepalive_interval)
        .keep_alive_timeout(options.keepalive_timeout)
        .keep_alive_while_idle(true);
    #[cfg(feature = "tls")]
    if let Some(tls) = &options.tls {
        return Ok(endpoint.connect_with_connector_lazy(tls.connector()));
    }
    Ok(endpoint.connect_lazy())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalize_accepts_host_port_and_http() {
        assert_eq!(
            normalize("127.0.0.1:7001").ok().as_deref(),
            Some("http://127.0.0.1:7001")
        );
        assert_eq!(
            normalize("http://kv-0.kv:7001/").ok().as_deref(),
            Some("http://kv-0.kv:7001")
        );
        assert!(normalize("").is_err());
        assert!(normalize("127.0.0.1").is_err());
        assert_eq!(normalize("https://a:1").ok().as_deref(), Some("http://a:1"));
        assert!(normalize("a:1/x").is_err());
    }

    #[test]
    fn connect_to_replaces_named_addresses() {
        let map: BTreeMap<String, String> = [(
            "http://kv-0.kv.ns.svc:7001".to_owned(),
            "http://10.1.2.3:7001".to_owned(),
        )]
        .into();
        assert_eq!(
            route(&map, "kv-0.kv.ns.svc:7001").ok().as_deref(),
            Some("http://10.1.2.3:7001")
        );
        assert_eq!(
            route(&map, "kv-1.kv.ns.svc:7001").ok().as_deref(),
            Some("http://kv-1.kv.ns.svc:7001")
        );
    }
}
