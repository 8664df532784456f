//! [`Client`]: the raftkv client with leader redirects, retries and exactly-once writes.
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
//!
//! Every write takes the next `seq` of the client's session once, before its first attempt, and
//! all retries resend the identical request: the servers recognise `(client_id, seq)` and return
//! the recorded result instead of applying the write twice.
//!
//! The servers remember the results of a session's last [`SESSION_WINDOW`] seqs, and open a new
//! session only at a seq within that window (DESIGN.md §5). So a client keeps every write it has
//! in flight within one window of its oldest unfinished write (a write waits for a slot), and
//! when the servers answer ABORTED ("session expired") it starts a new session at seq 1.

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use raftkv_proto::v1::cluster_client::ClusterClient;
use raftkv_proto::v1::kv_client::KvClient;
use raftkv_proto::v1::{
    AddMemberRequest, CompareAndSwapRequest, Consistency, DeleteRequest, GetRequest, KeyValue,
    Member, PutRequest, RemoveMemberRequest, Role, ScanRequest, StatusRequest, StatusResponse,
    TransferLeaderRequest,
};
use raftkv_proto::{LEADER_METADATA_KEY, check_key, check_value};
use tokio::time::Instant;
use tonic::transport::{Channel, Endpoint as TonicEndpoint, Uri};
use tonic::{Code, Status};

use crate::{ClientOptions, Error};

/// The most endpoints a client keeps. Redirects add the leader's address when it is not one of
/// the configured endpoints; the cap keeps a long-lived client in a churning cluster bounded.
const MAX_ENDPOINTS: usize = 64;

/// How many seqs of one session may be in flight at once, counted from the oldest unfinished
/// one: the servers' default session window (`SessionConfig::DEFAULT_WINDOW`). Within it every
/// retry can still be answered from the recorded results, and a new session never starts above
/// the seq the servers accept for an unknown session.
pub const SESSION_WINDOW: u64 = 128;

/// A value with the version (log index) of the write that produced it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Versioned {
    /// The value.
    pub value: Bytes,
    /// The log index of the write that produced it.
    pub version: u64,
}

/// The result of [`Client::compare_and_swap`]. A failed compare is not an error.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CasOutcome {
    /// Whether the key had the expected version and now holds the new value.
    pub succeeded: bool,
    /// On success the new version; on failure the current version (0 if the key is absent).
    pub version: u64,
    /// On failure the current value (empty if absent); empty on success.
    pub current_value: Bytes,
}

/// One page of a range read.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ScanPage {
    /// The keys in ascending byte order.
    pub items: Vec<KeyValue>,
    /// Whether the range continues after the last item.
    pub more: bool,
}

/// A connection to a raftkv cluster. Cheap to clone: clones share channels, the leader cache and
/// the session, and may be used from many tasks at once.
#[derive(Clone, Debug)]
pub struct Client {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    options: ClientOptions,
    /// `options.connect_to` with both sides normalised (`http://host:port`).
    connect_to: BTreeMap<String, String>,
    // A std Mutex, not a tokio one: it is held only for a few field updates, never across an await.
    routing: Mutex<Routing>,
    session: Mutex<Session>,
    /// Woken when a write leaves the session's window (or the session is replaced).
    slot_freed: tokio::sync::Notify,
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

/// The exactly-once session: a random id under which the servers record write results.
#[derive(Debug)]
struct Session {
    client_id: String,
    /// The seq the next write takes.
    next_seq: u64,
    /// Seqs of writes not finished yet (see [`SESSION_WINDOW`]).
    in_flight: BTreeSet<u64>,
}

impl Session {
    fn new() -> Self {
        Self {
            client_id: new_client_id(),
            next_seq: 1,
            in_flight: BTreeSet::new(),
        }
    }
}

/// One write's seq in the session; leaving the window when dropped (the write finished, failed
/// or its future was dropped) lets a waiting write take the next seq.
struct WriteSlot {
    inner: Arc<Inner>,
    client_id: String,
    seq: u64,
}

impl Drop for WriteSlot {
    fn drop(&mut self) {
        {
            let mut session = lock(&self.inner.session);
            if session.client_id == self.client_id {
                session.in_flight.remove(&self.seq);
            }
        }
        self.inner.slot_freed.notify_waiters();
    }
}

/// What kind of call is running; decides the error when time runs out and leader caching.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum CallKind {
    /// Changes state: a timeout leaves the outcome unknown.
    Write,
    /// Served by the leader only: success confirms the leader.
    LeaderRead,
    /// Served by any node.
    AnyRead,
}

impl CallKind {
    fn read(consistency: Consistency) -> Self {
        match consistency {
            Consistency::Stale => CallKind::AnyRead,
            Consistency::Linearizable | Consistency::Lease => CallKind::LeaderRead,
        }
    }
}

/// What to do after an attempt failed.
enum Verdict {
    /// Ask the named leader instead.
    Redirect(String),
    /// Try another node after a pause; says what went wrong.
    Retry(String),
    /// Give up with this error.
    Fail(Status),
}

impl Client {
    /// Creates a client for a cluster reachable at `endpoints` (`host:port` or
    /// `http://host:port`, any members of the cluster).
    ///
    /// Channels connect lazily, so this succeeds even while every node is down; the first call
    /// connects (and waits up to its timeout for a node to answer).
    pub async fn connect(endpoints: Vec<String>, options: ClientOptions) -> Result<Self, Error> {
        if endpoints.is_empty() {
            return Err(Error::NoEndpoints);
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
            inner: Arc::new(Inner {
                options,
                connect_to,
                routing: Mutex::new(Routing {
                    endpoints: nodes,
                    leader: None,
                    next: 0,
                }),
                session: Mutex::new(Session::new()),
                slot_freed: tokio::sync::Notify::new(),
            }),
        })
    }

    /// The options this client was created with.
    pub fn options(&self) -> &ClientOptions {
        &self.inner.options
    }

    /// The id of the current exactly-once session.
    pub fn client_id(&self) -> String {
        lock(&self.inner.session).client_id.clone()
    }

    /// The address (`http://host:port`) of the node currently believed to lead, if any.
    pub fn leader(&self) -> Option<String> {
        let routing = lock(&self.inner.routing);
        routing.leader.map(|i| routing.endpoints[i].uri.clone())
    }

    /// Sets `key` to `value`; returns the new version (the log index of the write).
    pub async fn put(&self, key: impl Into<Bytes>, value: impl Into<Bytes>) -> Result<u64, Error> {
        let (key, value) = (key.into(), value.into());
        check_key("key", &key)?;
        check_value(&value)?;
        let (client_id, seq, _slot) = self.next_write().await;
        let request = PutRequest {
            key,
            value,
            client_id,
            seq,
        };
        let response = self
            .call(
                CallKind::Write,
                Some(&request.client_id),
                |channel, timeout| {
                    let mut kv = self.kv(channel);
                    let request = with_deadline(request.clone(), timeout);
                    async move { kv.put(request).await }
                },
            )
            .await?;
        Ok(response.version)
    }

    /// Reads `key`; `None` when it does not exist.
    pub async fn get(
        &self,
        key: impl Into<Bytes>,
        consistency: Consistency,
    ) -> Result<Option<Versioned>, Error> {
        let key = key.into();
        check_key("key", &key)?;
        let request = GetRequest {
            key,
            consistency: consistency.into(),
        };
        let response = self
            .call(CallKind::read(consistency), None, |channel, timeout| {
                let mut kv = self.kv(channel);
                let request = with_deadline(request.clone(), timeout);
                async move { kv.get(request).await }
            })
            .await?;
        Ok(response.found.then_some(Versioned {
            value: response.value,
            version: response.version,
        }))
    }

    /// Removes `key`; returns the version it had, or `None` when it did not exist (not an error).
    pub async fn delete(&self, key: impl Into<Bytes>) -> Result<Option<u64>, Error> {
        let key = key.into();
        check_key("key", &key)?;
        let (client_id, seq, _slot) = self.next_write().await;
        let request = DeleteRequest {
            key,
            client_id,
            seq,
        };
        let response = self
            .call(
                CallKind::Write,
                Some(&request.client_id),
                |channel, timeout| {
                    let mut kv = self.kv(channel);
                    let request = with_deadline(request.clone(), timeout);
                    async move { kv.delete(request).await }
                },
            )
            .await?;
        Ok(response.deleted.then_some(response.prev_version))
    }

    /// Stores `value` under `key` only if the key's version is `expected_version` (0: the key
    /// must be absent). A failed compare is `Ok` with `succeeded == false` and the current state.
    pub async fn compare_and_swap(
        &self,
        key: impl Into<Bytes>,
        expected_version: u64,
        value: impl Into<Bytes>,
    ) -> Result<CasOutcome, Error> {
        let (key, value) = (key.into(), value.into());
        check_key("key", &key)?;
        check_value(&value)?;
        let (client_id, seq, _slot) = self.next_write().await;
        let request = CompareAndSwapRequest {
            key,
            expected_version,
            value,
            client_id,
            seq,
        };
        let response = self
            .call(
                CallKind::Write,
                Some(&request.client_id),
                |channel, timeout| {
                    let mut kv = self.kv(channel);
                    let request = with_deadline(request.clone(), timeout);
                    async move { kv.compare_and_swap(request).await }
                },
            )
            .await?;
        Ok(CasOutcome {
            succeeded: response.succeeded,
            version: response.version,
            current_value: response.current_value,
        })
    }

    /// Reads one page of `[start, end)` (empty `end`: to the last key). `limit` 0 asks for the
    /// server's default page size (1000); servers cap it at 10000 and at 4 MiB per page.
    pub async fn scan(
        &self,
        start: impl Into<Bytes>,
        end: impl Into<Bytes>,
        limit: u32,
        consistency: Consistency,
    ) -> Result<ScanPage, Error> {
        let request = ScanRequest {
            start: start.into(),
            end: end.into(),
            limit,
            consistency: consistency.into(),
        };
        let response = self
            .call(CallKind::read(consistency), None, |channel, timeout| {
                let mut kv = self.kv(channel);
                let request = with_deadline(request.clone(), timeout);
                async move { kv.scan(request).await }
            })
            .await?;
        Ok(ScanPage {
            items: response.items,
            more: response.more,
        })
    }

    /// Reads `[start, end)` page by page, up to `max_items` items (0: no limit).
    ///
    /// Each page is its own read (linearizable by default), so the result is not one snapshot: a
    /// write between two pages may or may not be seen.
    pub async fn scan_all(
        &self,
        start: impl Into<Bytes>,
        end: impl Into<Bytes>,
        max_items: usize,
        consistency: Consistency,
    ) -> Result<Vec<KeyValue>, Error> {
        let end = end.into();
        let mut start = start.into();
        let mut items = Vec::new();
        loop {
            let wanted = if max_items == 0 {
                0
            } else {
                u32::try_from(max_items - items.len()).unwrap_or(u32::MAX)
            };
            let page = self.scan(start, end.clone(), wanted, consistency).await?;
            let Some(last) = page.items.last() else {
                if page.more {
                    // A server that promises more but sends nothing would make us loop forever.
                    return Err(Error::Rpc {
                        code: Code::Internal,
                        message: "scan page was empty but said more".to_owned(),
                    });
                }
                return Ok(items);
            };
            start = successor(&last.key);
            items.extend(page.items);
            if max_items != 0 && items.len() >= max_items {
                items.truncate(max_items);
                return Ok(items);
            }
            if !page.more {
                return Ok(items);
            }
        }
    }

    /// The cluster's status. Asks the leader when one is known (only the leader knows every
    /// member's match index and health), and otherwise returns the first node's own view.
    pub async fn status(&self) -> Result<StatusResponse, Error> {
        let status = self
            .call(CallKind::AnyRead, None, |channel, timeout| {
                let mut cluster = self.cluster(channel);
                let request = with_deadline(StatusRequest {}, timeout);
                async move { cluster.status(request).await }
            })
            .await?;
        if status.role == i32::from(Role::Leader) || status.leader_client_addr.is_empty() {
            return Ok(status);
        }
        // The first node knows a leader: ask it once for the full picture. Best effort — the
        // answer we already have is still worth returning if the leader does not respond.
        let Ok(uri) = route(&self.inner.connect_to, &status.leader_client_addr) else {
            return Ok(status);
        };
        let Ok(index) = self.node_index(&uri) else {
            return Ok(status);
        };
        let mut cluster = self.cluster(self.channel(index));
        let timeout = self.inner.options.attempt_timeout;
        let request = with_deadline(StatusRequest {}, timeout);
        match tokio::time::timeout(timeout, cluster.status(request)).await {
            Ok(Ok(response)) => {
                let leader = response.into_inner();
                if leader.role == i32::from(Role::Leader) {
                    lock(&self.inner.routing).leader = Some(index);
                    return Ok(leader);
                }
                Ok(status)
            }
            _ => Ok(status),
        }
    }

    /// Adds `node_id` as a learner reachable at `peer_addr` (peers) and `client_addr` (clients);
    /// the leader promotes it once it has caught up. Returns the new configuration.
    pub async fn add_member(
        &self,
        node_id: u64,
        peer_addr: impl Into<String>,
        client_addr: impl Into<String>,
    ) -> Result<Vec<Member>, Error> {
        let request = AddMemberRequest {
            node_id,
            peer_addr: peer_addr.into(),
            client_addr: client_addr.into(),
        };
        let response = self
            .call(CallKind::Write, None, |channel, timeout| {
                let mut cluster = self.cluster(channel);
                let request = with_deadline(request.clone(), timeout);
                async move { cluster.add_member(request).await }
            })
            .await?;
        Ok(response.members)
    }

    /// Removes member `node_id` (a voter or a learner). Returns the new configuration.
    pub async fn remove_member(&self, node_id: u64) -> Result<Vec<Member>, Error> {
        let request = RemoveMemberRequest { node_id };
        let response = self
            .call(CallKind::Write, None, |channel, timeout| {
                let mut cluster = self.cluster(channel);
                let request = with_deadline(request, timeout);
                async move { cluster.remove_member(request).await }
            })
            .await?;
        Ok(response.members)
    }

    /// Moves leadership to voter `node_id` (0: the most caught-up follower). Returns the new
    /// leader's id.
    pub async fn transfer_leader(&self, node_id: u64) -> Result<u64, Error> {
        let request = TransferLeaderRequest { node_id };
        let response = self
            .call(CallKind::Write, None, |channel, timeout| {
                let mut cluster = self.cluster(channel);
                let request = with_deadline(request, timeout);
                async move { cluster.transfer_leader(request).await }
            })
            .await?;
        // The old leader's cached index is now wrong; the next call will be redirected anyway,
        // but forgetting it saves that round trip's confusion in `leader()`.
        lock(&self.inner.routing).leader = None;
        Ok(response.leader_id)
    }

    /// Takes the session and a fresh seq for one write; all its retries reuse both. Waits while
    /// the session's window is full (see [`SESSION_WINDOW`]); the slot is held until the returned
    /// guard drops.
    async fn next_write(&self) -> (String, u64, WriteSlot) {
        loop {
            // Register for a wake-up before looking, so a slot freed in between is not missed.
            let mut freed = std::pin::pin!(self.inner.slot_freed.notified());
            freed.as_mut().enable();
            {
                let mut session = lock(&self.inner.session);
                let oldest = session
                    .in_flight
                    .first()
                    .copied()
                    .unwrap_or(session.next_seq);
                if session.next_seq < oldest + SESSION_WINDOW {
                    let seq = session.next_seq;
                    session.next_seq += 1;
                    session.in_flight.insert(seq);
                    let client_id = session.client_id.clone();
                    let slot = WriteSlot {
                        inner: self.inner.clone(),
                        client_id: client_id.clone(),
                        seq,
                    };
                    return (client_id, seq, slot);
                }
            }
            freed.await;
        }
    }

    fn kv(&self, channel: Channel) -> KvClient<Channel> {
        let limit = self.inner.options.max_message_size;
        KvClient::new(channel)
            .max_decoding_message_size(limit)
            .max_encoding_message_size(limit)
    }

    fn cluster(&self, channel: Channel) -> ClusterClient<Channel> {
        let limit = self.inner.options.max_message_size;
        ClusterClient::new(channel)
            .max_decoding_message_size(limit)
            .max_encoding_message_size(limit)
    }

    fn channel(&self, index: usize) -> Channel {
        lock(&self.inner.routing).endpoints[index].channel.clone()
    }

    /// Runs `attempt` with redirects and retries until it succeeds, fails definitely, or the
    /// call's timeout runs out. `attempt` gets the channel to try and the attempt's time budget;
    /// `session` is the client id of a session write (to replace it if it expired).
    async fn call<T, F, Fut>(
        &self,
        kind: CallKind,
        session: Option<&str>,
        mut attempt: F,
    ) -> Result<T, Error>
    where
        F: FnMut(Channel, Duration) -> Fut,
        Fut: Future<Output = Result<tonic::Response<T>, Status>>,
    {
        let options = &self.inner.options;
        let started = Instant::now();
        let deadline = started + options.timeout;
        let mut backoff = options.backoff_initial;
        let mut attempts: u32 = 0;
        let mut redirects_in_a_row: u32 = 0;
        let mut last_error = String::from("no attempt finished");
        // Set by a redirect: the next attempt goes to the named leader.
        let mut forced = None;

        loop {
            let remaining = deadline.saturating_duration_since(Instant::now());
            if remaining.is_zero() {
                return Err(timeout_error(kind, attempts, started.elapsed(), last_error));
            }
            let (index, uri, channel) = self.pick(forced.take());
            let budget = remaining.min(options.attempt_timeout);
            attempts += 1;

            let outcome = tokio::time::timeout(budget, attempt(channel, budget)).await;
            let status = match outcome {
                Ok(Ok(response)) => {
                    if kind != CallKind::AnyRead {
                        lock(&self.inner.routing).leader = Some(index);
                    }
                    return Ok(response.into_inner());
                }
                Ok(Err(status)) => status,
                Err(_elapsed) => {
                    // No answer in time: the node may be hung or partitioned. Try another one
                    // at once; the attempt itself already took its time.
                    last_error = format!("{uri}: no answer within {budget:?}");
                    redirects_in_a_row = 0;
                    self.failed(index);
                    continue;
                }
            };

            match verdict(status) {
                Verdict::Redirect(target) => {
                    last_error = format!("{uri}: not the leader, redirected to {target}");
                    redirects_in_a_row += 1;
                    match route(&self.inner.connect_to, &target).and_then(|t| self.node_index(&t)) {
                        Ok(leader) if leader != index => {
                            lock(&self.inner.routing).leader = Some(leader);
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
                Verdict::Retry(what) => {
                    redirects_in_a_row = 0;
                    last_error = format!("{uri}: {what}");
                    self.failed(index);
                    self.pause(&mut backoff, deadline).await;
                }
                Verdict::Fail(status) => {
                    return Err(self.definite_error(kind, session, attempts, started, status));
                }
            }
        }
    }

    /// Maps a non-retryable status to the caller's error. `session` is the client id a write
    /// carried, if it carried one.
    fn definite_error(
        &self,
        kind: CallKind,
        session: Option<&str>,
        attempts: u32,
        started: Instant,
        status: Status,
    ) -> Error {
        let code = status.code();
        let message = status.message().to_owned();
        if let (Code::Aborted, Some(used)) = (code, session) {
            // The session is gone: later writes need a new one or they would fail the same way.
            // Replace it only if no other task already did. The new session starts at seq 1:
            // the servers open an unknown session only at a seq within the window.
            let mut current = lock(&self.inner.session);
            if current.client_id == used {
                *current = Session::new();
                drop(current);
                self.inner.slot_freed.notify_waiters();
            }
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
        let mut routing = lock(&self.inner.routing);
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
        let mut routing = lock(&self.inner.routing);
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
        let mut routing = lock(&self.inner.routing);
        if let Some(index) = routing.endpoints.iter().position(|n| n.uri == uri) {
            return Ok(index);
        }
        let node = Node {
            uri: uri.to_owned(),
            seed: false,
            channel: open_channel(uri, &self.inner.options)?,
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
        *backoff = (*backoff * 2).min(self.inner.options.backoff_max);
    }
}

/// Classifies a failed attempt.
fn verdict(status: Status) -> Verdict {
    match status.code() {
        Code::FailedPrecondition => match leader_hint(&status) {
            Some(target) => Verdict::Redirect(target),
            None => Verdict::Fail(status),
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
        | Code::Internal => Verdict::Retry(format!("{:?}: {}", status.code(), status.message())),
        _ => Verdict::Fail(status),
    }
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
fn with_deadline<T>(message: T, timeout: Duration) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request.set_timeout(timeout);
    request
}

/// `host:port` or `http://host:port` as `http://host:port`.
fn normalize(endpoint: &str) -> Result<String, Error> {
    let endpoint = endpoint.trim();
    let invalid = |reason: &str| Error::InvalidEndpoint {
        endpoint: endpoint.to_owned(),
        reason: reason.to_owned(),
    };
    if endpoint.is_empty() {
        return Err(invalid("empty"));
    }
    if endpoint.starts_with("https://") {
        return Err(invalid(
            "TLS is not supported by this client yet; use http://",
        ));
    }
    let with_scheme = if endpoint.starts_with("http://") {
        endpoint.to_owned()
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
    Ok(endpoint
        .connect_timeout(options.connect_timeout)
        .http2_keep_alive_interval(options.keepalive_interval)
        .keep_alive_timeout(options.keepalive_timeout)
        .keep_alive_while_idle(true)
        .tcp_nodelay(true)
        .connect_lazy())
}

/// The smallest key greater than `key` in byte order: `key` followed by a zero byte.
fn successor(key: &[u8]) -> Bytes {
    let mut next = Vec::with_capacity(key.len() + 1);
    next.extend_from_slice(key);
    next.push(0);
    Bytes::from(next)
}

/// A random session id: 128 bits as 32 hex digits.
fn new_client_id() -> String {
    let mut bytes = [0u8; 16];
    if getrandom::fill(&mut bytes).is_err() {
        // No OS randomness (practically never on Linux). A clock-and-pid id is still unique
        // enough to keep sessions apart; a collision could only merge two clients' seq spaces.
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        bytes = (nanos ^ (u128::from(std::process::id()) << 96)).to_le_bytes();
    }
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding one of these locks leaves consistent data (single field updates).
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
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
        assert!(normalize("https://a:1").is_err());
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

    #[test]
    fn successor_is_the_next_key() {
        assert_eq!(successor(b"a").as_ref(), b"a\0");
        assert!(successor(b"a").as_ref() < b"a\x01".as_slice());
    }

    #[test]
    fn client_ids_are_random_hex() {
        let a = new_client_id();
        assert_eq!(a.len(), 32);
        assert!(a.chars().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(a, new_client_id());
    }
}
