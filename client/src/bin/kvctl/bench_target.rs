//! What `kvctl bench` sends its requests to: a raftkv cluster, or (with the `etcd` feature) an
//! etcd cluster running the same workload, so that both can be measured by one tool in one run.
//!
//! Only the per-request call differs between the targets; the worker loop, the histograms and the
//! report are shared (`bench`, `bench_stats`). A [`Connection`] is what `--connections` counts:
//! bench clients assigned to the same one share its channels.

use std::time::Duration;

use raftkv_client::{Bytes, Client, Consistency};

use crate::bench_stats::RequestError;
use crate::cli::{BenchTarget, ReadConsistency};
use crate::commands::connect;
use crate::exit::Failure;

/// One connection to the benchmarked cluster; cheap to clone, clones share its channels.
#[derive(Clone)]
pub enum Connection {
    /// A raftkv client: its channels, leader cache and exactly-once session are shared by clones.
    Raftkv(Client),
    /// An etcd client's KV service over a channel balanced across the endpoints (boxed: it is
    /// several times the size of a raftkv client handle).
    #[cfg(feature = "etcd")]
    Etcd(Box<etcd_client::KvClient>),
}

impl Connection {
    /// Connects to `target` at `endpoints` (raftkv with `tls` if given); `timeout` bounds each
    /// request.
    pub async fn open(
        target: BenchTarget,
        endpoints: &[String],
        timeout: Duration,
        tls: Option<&raftkv_client::tls::TlsConfig>,
    ) -> Result<Self, Failure> {
        match target {
            BenchTarget::Raftkv => Ok(Connection::Raftkv(
                connect(endpoints, timeout, tls).await?,
            )),
            // The comparison runs both stores on plain loopback; etcd's TLS flags differ.
            BenchTarget::Etcd if tls.is_some() => Err(Failure::Other(
                "kvctl bench --target etcd does not take --cacert/--cert/--key: run etcd without TLS for the comparison".into(),
            )),
            #[cfg(feature = "etcd")]
            BenchTarget::Etcd => Ok(Connection::Etcd(Box::new(
                etcd::open(endpoints, timeout).await?,
            ))),
            #[cfg(not(feature = "etcd"))]
            BenchTarget::Etcd => Err(Failure::Other(
                "this kvctl was built without etcd support; build it with \
                 `cargo build --release --bin kvctl --features etcd`"
                    .to_owned(),
            )),
        }
    }

    /// Sets `key` to `value`.
    pub async fn put(&mut self, key: String, value: &Bytes) -> Result<(), RequestError> {
        match self {
            Connection::Raftkv(client) => client
                .put(key, value.clone())
                .await
                .map(drop)
                .map_err(raftkv_error),
            #[cfg(feature = "etcd")]
            Connection::Etcd(kv) => etcd::put(kv, key, value).await,
        }
    }

    /// Reads `key` with `consistency` (mapped to linearizable or serializable for etcd).
    pub async fn get(
        &mut self,
        key: String,
        consistency: ReadConsistency,
    ) -> Result<(), RequestError> {
        match self {
            Connection::Raftkv(client) => client
                .get(key, Consistency::from(consistency))
                .await
                .map(drop)
                .map_err(raftkv_error),
            #[cfg(feature = "etcd")]
            Connection::Etcd(kv) => etcd::get(kv, key, consistency).await,
        }
    }
}

fn raftkv_error(error: raftkv_client::Error) -> RequestError {
    RequestError {
        outcome_unknown: error.is_outcome_unknown(),
        message: error.to_string(),
    }
}

/// The etcd target, through the `etcd-client` crate.
#[cfg(feature = "etcd")]
mod etcd {
    use std::time::Duration;

    use etcd_client::{ConnectOptions, GetOptions, KvClient};
    use raftkv_client::Bytes;
    use tonic::Code;

    use crate::bench_stats::RequestError;
    use crate::cli::ReadConsistency;
    use crate::exit::Failure;

    pub async fn open(endpoints: &[String], timeout: Duration) -> Result<KvClient, Failure> {
        // etcd-client wants URLs; accept the same `host:port` form raftkv's --endpoints takes.
        let urls: Vec<String> = endpoints
            .iter()
            .map(|e| {
                if e.contains("://") {
                    e.clone()
                } else {
                    format!("http://{e}")
                }
            })
            .collect();
        let options = ConnectOptions::new()
            .with_timeout(timeout)
            .with_connect_timeout(timeout);
        let client = etcd_client::Client::connect(&urls, Some(options))
            .await
            .map_err(|e| Failure::Other(format!("cannot connect to etcd at {urls:?}: {e}")))?;
        Ok(client.kv_client())
    }

    pub async fn put(kv: &mut KvClient, key: String, value: &Bytes) -> Result<(), RequestError> {
        kv.put(key, value.to_vec(), None)
            .await
            .map(drop)
            .map_err(etcd_error)
    }

    pub async fn get(
        kv: &mut KvClient,
        key: String,
        consistency: ReadConsistency,
    ) -> Result<(), RequestError> {
        // etcd has two read levels: a linearizable range (a ReadIndex round through the leader)
        // and a serializable one (the member's own state). LEASE and STALE both skip the round.
        let options = match consistency {
            ReadConsistency::Linearizable => None,
            ReadConsistency::Lease | ReadConsistency::Stale => {
                Some(GetOptions::new().with_serializable())
            }
        };
        kv.get(key, options).await.map(drop).map_err(etcd_error)
    }

    fn etcd_error(error: etcd_client::Error) -> RequestError {
        let outcome_unknown = match &error {
            etcd_client::Error::GRpcStatus(status) => matches!(
                status.code(),
                Code::Unavailable | Code::DeadlineExceeded | Code::Cancelled | Code::Unknown
            ),
            etcd_client::Error::TransportError(_) | etcd_client::Error::IoError(_) => true,
            _ => false,
        };
        RequestError {
            outcome_unknown,
            message: error.to_string(),
        }
    }
}
