//! [`Client`]: the raftkv client's operations — reads, writes, compare-and-swap, scans and
//! membership changes — each a request built, checked and sent with redirects and retries.
//!
//! Every call goes through `call.rs` (the leader cache, redirects, retries with backoff until
//! the call's timeout), and every write takes its `(client_id, seq)` from `session.rs` once,
//! before its first attempt, so that all retries resend the identical request: the servers
//! recognise it and return the recorded result instead of applying the write twice.

use std::sync::Arc;

use bytes::Bytes;
use raftkv_proto::v1::{
    AddMemberRequest, CompareAndSwapRequest, Consistency, DeleteRequest, GetRequest, KeyValue,
    Member, PutRequest, RemoveMemberRequest, Role, ScanRequest, StatusRequest, StatusResponse,
    TransferLeaderRequest,
};
use raftkv_proto::{check_key, check_value};
use tonic::Code;

use crate::call::{CallKind, Caller, with_deadline};
use crate::error::Error;
use crate::options::ClientOptions;
pub use crate::session::SESSION_WINDOW;
use crate::session::WriteSession;

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
    /// Channels, the leader cache and the redirect and retry loop.
    caller: Arc<Caller>,
    /// The exactly-once session every write takes its seq from.
    session: Arc<WriteSession>,
}

impl Client {
    /// Creates a client for a cluster reachable at `endpoints` (`host:port` or
    /// `http://host:port`, any members of the cluster).
    ///
    /// Channels connect lazily, so this succeeds even while every node is down; the first call
    /// connects (and waits up to its timeout for a node to answer).
    pub async fn connect(endpoints: Vec<String>, options: ClientOptions) -> Result<Self, Error> {
        Ok(Self {
            caller: Arc::new(Caller::new(endpoints, options)?),
            session: Arc::new(WriteSession::new()),
        })
    }

    /// The options this client was created with.
    pub fn options(&self) -> &ClientOptions {
        self.caller.options()
    }

    /// The id of the current exactly-once session.
    pub fn client_id(&self) -> String {
        self.session.client_id()
    }

    /// The address (`http://host:port`) of the node currently believed to lead, if any.
    pub fn leader(&self) -> Option<String> {
        self.caller.leader()
    }

    /// Sets `key` to `value`; returns the new version (the log index of the write).
    pub async fn put(&self, key: impl Into<Bytes>, value: impl Into<Bytes>) -> Result<u64, Error> {
        let (key, value) = (key.into(), value.into());
        check_key("key", &key)?;
        check_value(&value)?;
        let (client_id, seq, slot) = self.session.next_write().await;
        let request = PutRequest {
            key,
            value,
            client_id,
            seq,
        };
        let response = self
            .caller
            .call(CallKind::Write, Some(&slot), |channel, timeout| {
                let mut kv = self.caller.kv(channel);
                let request = with_deadline(request.clone(), timeout);
                async move { kv.put(request).await }
            })
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
            .caller
            .call(CallKind::read(consistency), None, |channel, timeout| {
                let mut kv = self.caller.kv(channel);
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
        let (client_id, seq, slot) = self.session.next_write().await;
        let request = DeleteRequest {
            key,
            client_id,
            seq,
        };
        let response = self
            .caller
            .call(CallKind::Write, Some(&slot), |channel, timeout| {
                let mut kv = self.caller.kv(channel);
                let request = with_deadline(request.clone(), timeout);
                async move { kv.delete(request).await }
            })
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
        let (client_id, seq, slot) = self.session.next_write().await;
        let request = CompareAndSwapRequest {
            key,
            expected_version,
            value,
            client_id,
            seq,
        };
        let response = self
            .caller
            .call(CallKind::Write, Some(&slot), |channel, timeout| {
                let mut kv = self.caller.kv(channel);
                let request = with_deadline(request.clone(), timeout);
                async move { kv.compare_and_swap(request).await }
            })
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
            .caller
            .call(CallKind::read(consistency), None, |channel, timeout| {
                let mut kv = self.caller.kv(channel);
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
            .caller
            .call(CallKind::AnyRead, None, |channel, timeout| {
                let mut cluster = self.caller.cluster(channel);
                let request = with_deadline(StatusRequest {}, timeout);
                async move { cluster.status(request).await }
            })
            .await?;
        if status.role == i32::from(Role::Leader) || status.leader_client_addr.is_empty() {
            return Ok(status);
        }
        // The first node knows a leader: ask it once for the full picture. Best effort — the
        // answer we already have is still worth returning if the leader does not respond.
        Ok(self
            .caller
            .leader_status(&status.leader_client_addr)
            .await
            .unwrap_or(status))
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
            .caller
            .call(CallKind::Write, None, |channel, timeout| {
                let mut cluster = self.caller.cluster(channel);
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
            .caller
            .call(CallKind::Write, None, |channel, timeout| {
                let mut cluster = self.caller.cluster(channel);
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
            .caller
            .call(CallKind::Write, None, |channel, timeout| {
                let mut cluster = self.caller.cluster(channel);
                let request = with_deadline(request, timeout);
                async move { cluster.transfer_leader(request).await }
            })
            .await?;
        // The old leader's cached index is now wrong; the next call will be redirected anyway,
        // but forgetting it saves that round trip's confusion in `leader()`.
        self.caller.forget_leader();
        Ok(response.leader_id)
    }
}

/// The smallest key greater than `key` in byte order: `key` followed by a zero byte.
fn successor(key: &[u8]) -> Bytes {
    let mut next = Vec::with_capacity(key.len() + 1);
    next.extend_from_slice(key);
    next.push(0);
    Bytes::from(next)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn successor_is_the_next_key() {
        assert_eq!(successor(b"a").as_ref(), b"a\0");
        assert!(successor(b"a").as_ref() < b"a\x01".as_slice());
    }
}
