//! `raftkv.v1.Kv`: Put, Get, Delete, Scan and CompareAndSwap.

use std::time::Duration;

use raftkv_proto::v1 as pb;
use raftkv_proto::{check_key, check_scan_bound, check_value};
use tonic::{Request, Response, Status};

use super::limits::validate_session;
use super::outcome::finish;
use crate::error::NodeError;
use crate::handle::{Consistency, NodeHandle, ReadQuery, ReadResult};
use crate::kv::{Command, Op, SCAN_DEFAULT_LIMIT, SCAN_MAX_LIMIT, WriteResponse};
use crate::metrics::Metrics;

/// How long a request may wait for its write to commit (or its read to be confirmed) before the
/// client is told DEADLINE_EXCEEDED. A write may still apply afterwards; the client retries with
/// the same seq.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// The Kv service of one node.
#[derive(Clone, Debug)]
pub struct KvService {
    node: NodeHandle,
    timeout: Duration,
    metrics: Option<std::sync::Arc<Metrics>>,
}

impl KvService {
    /// Serves the Kv API through `node`.
    pub fn new(node: NodeHandle) -> Self {
        Self {
            node,
            timeout: DEFAULT_REQUEST_TIMEOUT,
            metrics: None,
        }
    }

    /// Counts failed requests by status code in `metrics`.
    pub fn with_metrics(mut self, metrics: std::sync::Arc<Metrics>) -> Self {
        self.metrics = Some(metrics);
        self
    }

    /// Changes the commit timeout.
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    async fn bounded<T>(
        &self,
        fut: impl std::future::Future<Output = Result<T, NodeError>>,
    ) -> Result<T, Status> {
        match tokio::time::timeout(self.timeout, fut).await {
            Ok(r) => Ok(r?),
            Err(_) => Err(NodeError::Timeout(self.timeout).to_status()),
        }
    }

    async fn write(&self, client_id: String, seq: u64, op: Op) -> Result<WriteResponse, Status> {
        validate_session(&client_id, seq)?;
        let cmd = if client_id.is_empty() {
            Command::new(op)
        } else {
            Command::with_session(op, client_id, seq)
        };
        self.bounded(self.node.propose(cmd)).await
    }

    async fn read(&self, query: ReadQuery, consistency: i32) -> Result<ReadResult, Status> {
        let consistency = match pb::Consistency::try_from(consistency) {
            Ok(pb::Consistency::Linearizable) => Consistency::Linearizable,
            Ok(pb::Consistency::Lease) => Consistency::Lease,
            Ok(pb::Consistency::Stale) => Consistency::Stale,
            Err(_) => {
                return Err(Status::invalid_argument(format!(
                    "unknown consistency {consistency}; expected 0 (LINEARIZABLE), 1 (LEASE) or 2 (STALE)"
                )));
            }
        };
        self.bounded(self.node.read(query, consistency)).await
    }

    async fn do_put(&self, r: pb::PutRequest) -> Result<pb::PutResponse, Status> {
        check_key("key", &r.key)?;
        check_value(&r.value)?;
        let op = Op::Put {
            key: r.key,
            value: r.value,
        };
        match self.write(r.client_id, r.seq, op).await? {
            WriteResponse::Put { version } => Ok(pb::PutResponse { version }),
            WriteResponse::Delete { .. } | WriteResponse::CompareAndSwap { .. } => {
                Err(unexpected())
            }
        }
    }

    async fn do_get(&self, r: pb::GetRequest) -> Result<pb::GetResponse, Status> {
        check_key("key", &r.key)?;
        match self
            .read(ReadQuery::Get { key: r.key }, r.consistency)
            .await?
        {
            ReadResult::Get(g) => Ok(pb::GetResponse {
                found: g.found,
                value: g.value,
                version: g.version,
            }),
            ReadResult::Scan(_) => Err(unexpected()),
        }
    }

    async fn do_delete(&self, r: pb::DeleteRequest) -> Result<pb::DeleteResponse, Status> {
        check_key("key", &r.key)?;
        match self
            .write(r.client_id, r.seq, Op::Delete { key: r.key })
            .await?
        {
            WriteResponse::Delete {
                deleted,
                prev_version,
            } => Ok(pb::DeleteResponse {
                deleted,
                prev_version,
            }),
            WriteResponse::Put { .. } | WriteResponse::CompareAndSwap { .. } => Err(unexpected()),
        }
    }

    async fn do_scan(&self, r: pb::ScanRequest) -> Result<pb::ScanResponse, Status> {
        check_scan_bound("start", &r.start)?;
        check_scan_bound("end", &r.end)?;
        let limit = match r.limit {
            0 => SCAN_DEFAULT_LIMIT,
            l if l > SCAN_MAX_LIMIT => {
                return Err(Status::invalid_argument(format!(
                    "limit {l} is above the maximum of {SCAN_MAX_LIMIT}"
                )));
            }
            l => l,
        };
        let query = ReadQuery::Scan {
            start: r.start,
            end: r.end,
            limit,
        };
        match self.read(query, r.consistency).await? {
            ReadResult::Scan(s) => Ok(pb::ScanResponse {
                items: s
                    .items
                    .into_iter()
                    .map(|i| pb::KeyValue {
                        key: i.key,
                        value: i.value,
                        version: i.version,
                    })
                    .collect(),
                more: s.more,
            }),
            ReadResult::Get(_) => Err(unexpected()),
        }
    }

    async fn do_compare_and_swap(
        &self,
        r: pb::CompareAndSwapRequest,
    ) -> Result<pb::CompareAndSwapResponse, Status> {
        check_key("key", &r.key)?;
        check_value(&r.value)?;
        let op = Op::CompareAndSwap {
            key: r.key,
            expected_version: r.expected_version,
            value: r.value,
        };
        match self.write(r.client_id, r.seq, op).await? {
            WriteResponse::CompareAndSwap {
                succeeded,
                version,
                current_value,
            } => Ok(pb::CompareAndSwapResponse {
                succeeded,
                version,
                current_value,
            }),
            WriteResponse::Put { .. } | WriteResponse::Delete { .. } => Err(unexpected()),
        }
    }
}

/// A result of another kind than the request's: a driver bug. Every match on a result names all
/// its kinds (no `_` arm), so that a new kind is a compile error here rather than this status.
fn unexpected() -> Status {
    Status::internal("the node answered with a result of another kind")
}

#[tonic::async_trait]
impl pb::kv_server::Kv for KvService {
    async fn put(&self, req: Request<pb::PutRequest>) -> Result<Response<pb::PutResponse>, Status> {
        finish(self.metrics.as_deref(), self.do_put(req.into_inner()).await)
    }

    async fn get(&self, req: Request<pb::GetRequest>) -> Result<Response<pb::GetResponse>, Status> {
        finish(self.metrics.as_deref(), self.do_get(req.into_inner()).await)
    }

    async fn delete(
        &self,
        req: Request<pb::DeleteRequest>,
    ) -> Result<Response<pb::DeleteResponse>, Status> {
        finish(
            self.metrics.as_deref(),
            self.do_delete(req.into_inner()).await,
        )
    }

    async fn scan(
        &self,
        req: Request<pb::ScanRequest>,
    ) -> Result<Response<pb::ScanResponse>, Status> {
        finish(
            self.metrics.as_deref(),
            self.do_scan(req.into_inner()).await,
        )
    }

    async fn compare_and_swap(
        &self,
        req: Request<pb::CompareAndSwapRequest>,
    ) -> Result<Response<pb::CompareAndSwapResponse>, Status> {
        finish(
            self.metrics.as_deref(),
            self.do_compare_and_swap(req.into_inner()).await,
        )
    }
}
