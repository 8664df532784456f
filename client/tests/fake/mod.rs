//! An in-process fake raftkv node: the generated Kv and Cluster server traits over a BTreeMap,
//! with switches to misbehave (redirect, UNAVAILABLE, stall, hang) and a record of what it saw.
//!
//! It is not a Raft node: it exists to test the client's routing, retry and session logic, and
//! kvctl's exit codes, without a real cluster.

#![allow(dead_code)] // Each test binary uses a different part of the fake.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use raftkv_proto::LEADER_METADATA_KEY;
use raftkv_proto::v1::cluster_server::{Cluster, ClusterServer};
use raftkv_proto::v1::kv_server::{Kv, KvServer};
use raftkv_proto::v1::*;
use tonic::transport::Server;
use tonic::transport::server::TcpIncoming;
use tonic::{Request, Response, Status};

/// key -> (value, version).
type Store = BTreeMap<Vec<u8>, (Vec<u8>, u64)>;

/// One fake node's switches and records.
#[derive(Default)]
pub struct Fake {
    /// The node's own address (host:port), filled in by [`start`].
    pub addr: Mutex<String>,
    /// When set, every call is answered FAILED_PRECONDITION + `raftkv-leader: <this>`.
    pub redirect_to: Mutex<Option<String>>,
    /// When set, every call is answered UNAVAILABLE.
    pub unavailable: AtomicBool,
    /// When set, every call hangs forever (a SIGSTOPped node).
    pub hang: AtomicBool,
    /// When set, every write is answered ABORTED (session expired).
    pub abort_writes: AtomicBool,
    /// When set, writes follow the servers' session rules (DESIGN.md §5, window 128): an unknown
    /// session must start at a seq <= 128, and a seq at or below `highest - 128` of its session
    /// is ABORTED. Each write is also held for a time that shrinks as its seq grows, so that
    /// later writes overtake earlier ones, as they may on a real network.
    pub session_rules: AtomicBool,
    /// Highest seq recorded per session (with `session_rules`).
    highest_seq: Mutex<std::collections::BTreeMap<String, u64>>,
    /// This many writes are recorded and applied, but their answer never arrives (the
    /// response is "lost": the handler sleeps far beyond any client timeout).
    pub lose_responses: AtomicU32,
    /// Every call, counted before any switch applies.
    pub calls: AtomicU32,
    /// `(client_id, seq)` of every write received, in order.
    pub writes: Mutex<Vec<(String, u64)>>,
    /// Page size of Scan answers.
    pub page_size: AtomicU32,
    data: Mutex<Store>,
    next_version: AtomicU64,
}

impl Fake {
    /// A well-behaved fake.
    pub fn new() -> Arc<Self> {
        let fake = Self::default();
        fake.page_size.store(1000, Ordering::Relaxed);
        Arc::new(fake)
    }

    /// Stores `key` directly (test setup).
    pub fn insert(&self, key: &str, value: &str) -> u64 {
        let version = self.next_version.fetch_add(1, Ordering::Relaxed) + 1;
        self.data.lock().expect("fake lock").insert(
            key.as_bytes().to_vec(),
            (value.as_bytes().to_vec(), version),
        );
        version
    }

    /// The recorded writes.
    pub fn writes(&self) -> Vec<(String, u64)> {
        self.writes.lock().expect("fake lock").clone()
    }

    /// How many calls arrived.
    pub fn calls(&self) -> u32 {
        self.calls.load(Ordering::Relaxed)
    }

    /// Applies the switches every call goes through.
    async fn gate(&self) -> Result<(), Status> {
        self.calls.fetch_add(1, Ordering::Relaxed);
        if self.hang.load(Ordering::Relaxed) {
            std::future::pending::<()>().await;
        }
        if self.unavailable.load(Ordering::Relaxed) {
            return Err(Status::unavailable("fake: no leader"));
        }
        let redirect = self.redirect_to.lock().expect("fake lock").clone();
        if let Some(leader) = redirect {
            let mut status = Status::failed_precondition("fake: not the leader");
            status.metadata_mut().insert(
                LEADER_METADATA_KEY,
                leader
                    .parse()
                    .map_err(|_| Status::internal("bad leader address"))?,
            );
            return Err(status);
        }
        Ok(())
    }

    /// Records a write; if its response is to be lost, hangs after applying `apply`.
    async fn write<T>(
        &self,
        client_id: &str,
        seq: u64,
        apply: impl FnOnce() -> T,
    ) -> Result<T, Status> {
        if self.abort_writes.load(Ordering::Relaxed) {
            return Err(Status::aborted("session expired"));
        }
        if self.session_rules.load(Ordering::Relaxed) {
            const WINDOW: u64 = 128;
            let hold = 100_000u64.saturating_sub(seq.min(1000) * 100);
            tokio::time::sleep(Duration::from_micros(hold)).await;
            let mut highest = self.highest_seq.lock().expect("fake lock");
            match highest.get(client_id).copied() {
                None if seq > WINDOW => {
                    return Err(Status::aborted(format!(
                        "session expired: unknown session starting at seq {seq} > {WINDOW}"
                    )));
                }
                Some(h) if seq + WINDOW <= h => {
                    return Err(Status::aborted(format!(
                        "session expired: seq {seq} is below the window of highest seq {h}"
                    )));
                }
                h => {
                    highest.insert(client_id.to_owned(), h.unwrap_or(0).max(seq));
                }
            }
        }
        self.writes
            .lock()
            .expect("fake lock")
            .push((client_id.to_owned(), seq));
        let result = apply();
        let lose = self
            .lose_responses
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1))
            .is_ok();
        if lose {
            tokio::time::sleep(Duration::from_secs(3600)).await;
        }
        Ok(result)
    }

    fn check_key(key: &[u8]) -> Result<(), Status> {
        Ok(raftkv_proto::check_key("key", key)?)
    }
}

/// The gRPC face of a [`Fake`].
#[derive(Clone)]
struct Node(Arc<Fake>);

#[tonic::async_trait]
impl Kv for Node {
    async fn put(&self, request: Request<PutRequest>) -> Result<Response<PutResponse>, Status> {
        self.0.gate().await?;
        let r = request.into_inner();
        Fake::check_key(&r.key)?;
        let version = self
            .0
            .write(&r.client_id, r.seq, || {
                let version = self.0.next_version.fetch_add(1, Ordering::Relaxed) + 1;
                self.0
                    .data
                    .lock()
                    .expect("fake lock")
                    .insert(r.key.to_vec(), (r.value.to_vec(), version));
                version
            })
            .await?;
        Ok(Response::new(PutResponse { version }))
    }

    async fn get(&self, request: Request<GetRequest>) -> Result<Response<GetResponse>, Status> {
        self.0.gate().await?;
        let r = request.into_inner();
        Fake::check_key(&r.key)?;
        let data = self.0.data.lock().expect("fake lock");
        Ok(Response::new(match data.get(r.key.as_ref()) {
            Some((value, version)) => GetResponse {
                found: true,
                value: value.clone().into(),
                version: *version,
            },
            None => GetResponse::default(),
        }))
    }

    async fn delete(
        &self,
        request: Request<DeleteRequest>,
    ) -> Result<Response<DeleteResponse>, Status> {
        self.0.gate().await?;
        let r = request.into_inner();
        let removed = self
            .0
            .write(&r.client_id, r.seq, || {
                self.0
                    .data
                    .lock()
                    .expect("fake lock")
                    .remove(r.key.as_ref())
            })
            .await?;
        Ok(Response::new(DeleteResponse {
            deleted: removed.is_some(),
            prev_version: removed.map_or(0, |(_, v)| v),
        }))
    }

    async fn scan(&self, request: Request<ScanRequest>) -> Result<Response<ScanResponse>, Status> {
        self.0.gate().await?;
        let r = request.into_inner();
        let page = match r.limit {
            0 => self.0.page_size.load(Ordering::Relaxed),
            n => n.min(self.0.page_size.load(Ordering::Relaxed)),
        } as usize;
        let data = self.0.data.lock().expect("fake lock");
        let mut in_range = data
            .range(r.start.to_vec()..)
            .filter(|(k, _)| r.end.is_empty() || k.as_slice() < r.end.as_ref());
        let items: Vec<KeyValue> = in_range
            .by_ref()
            .take(page)
            .map(|(k, (v, version))| KeyValue {
                key: k.clone().into(),
                value: v.clone().into(),
                version: *version,
            })
            .collect();
        let more = in_range.next().is_some();
        Ok(Response::new(ScanResponse { items, more }))
    }

    async fn compare_and_swap(
        &self,
        request: Request<CompareAndSwapRequest>,
    ) -> Result<Response<CompareAndSwapResponse>, Status> {
        self.0.gate().await?;
        let r = request.into_inner();
        let response = self
            .0
            .write(&r.client_id, r.seq, || {
                let mut data = self.0.data.lock().expect("fake lock");
                let current = data.get(r.key.as_ref()).cloned();
                let current_version = current.as_ref().map_or(0, |(_, v)| *v);
                if current_version == r.expected_version {
                    let version = self.0.next_version.fetch_add(1, Ordering::Relaxed) + 1;
                    data.insert(r.key.to_vec(), (r.value.to_vec(), version));
                    CompareAndSwapResponse {
                        succeeded: true,
                        version,
                        current_value: Default::default(),
                    }
                } else {
                    CompareAndSwapResponse {
                        succeeded: false,
                        version: current_version,
                        current_value: current.map(|(v, _)| v.into()).unwrap_or_default(),
                    }
                }
            })
            .await?;
        Ok(Response::new(response))
    }
}

#[tonic::async_trait]
impl Cluster for Node {
    async fn status(
        &self,
        _request: Request<StatusRequest>,
    ) -> Result<Response<StatusResponse>, Status> {
        // Status is answered by any node, redirecting or not.
        self.0.calls.fetch_add(1, Ordering::Relaxed);
        let addr = self.0.addr.lock().expect("fake lock").clone();
        Ok(Response::new(StatusResponse {
            node_id: 1,
            role: Role::Leader.into(),
            term: 3,
            leader_id: 1,
            leader_client_addr: addr.clone(),
            commit_index: 9,
            applied_index: 9,
            cluster_id: "c0ffee".into(),
            members: vec![Member {
                id: 1,
                peer_addr: "127.0.0.1:7101".into(),
                client_addr: addr,
                role: MemberRole::Voter.into(),
                match_index: 9,
                healthy: true,
            }],
            ..Default::default()
        }))
    }

    async fn add_member(
        &self,
        request: Request<AddMemberRequest>,
    ) -> Result<Response<AddMemberResponse>, Status> {
        self.0.gate().await?;
        let r = request.into_inner();
        Ok(Response::new(AddMemberResponse {
            members: vec![Member {
                id: r.node_id,
                peer_addr: r.peer_addr,
                client_addr: r.client_addr,
                role: MemberRole::Learner.into(),
                match_index: 0,
                healthy: false,
            }],
        }))
    }

    async fn remove_member(
        &self,
        _request: Request<RemoveMemberRequest>,
    ) -> Result<Response<RemoveMemberResponse>, Status> {
        self.0.gate().await?;
        Ok(Response::new(RemoveMemberResponse { members: vec![] }))
    }

    async fn transfer_leader(
        &self,
        request: Request<TransferLeaderRequest>,
    ) -> Result<Response<TransferLeaderResponse>, Status> {
        self.0.gate().await?;
        Ok(Response::new(TransferLeaderResponse {
            leader_id: request.into_inner().node_id.max(2),
        }))
    }
}

/// Serves `fake` on 127.0.0.1 at an ephemeral port until the test's runtime ends; returns
/// `host:port`.
pub async fn start(fake: Arc<Fake>) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind 127.0.0.1:0");
    let addr = listener.local_addr().expect("local addr").to_string();
    *fake.addr.lock().expect("fake lock") = addr.clone();
    let node = Node(fake);
    tokio::spawn(
        Server::builder()
            .add_service(KvServer::new(node.clone()))
            .add_service(ClusterServer::new(node))
            .serve_with_incoming(TcpIncoming::from(listener)),
    );
    addr
}

/// An address nothing listens on: bind an ephemeral port, then close it.
pub async fn closed_port() -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind 127.0.0.1:0");
    listener.local_addr().expect("local addr").to_string()
}
