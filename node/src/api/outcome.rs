//! The one exit of every handler of both services: the reply, with a failure counted by its
//! status code (`raftkv_rpc_errors_total{code}`) when metrics are on.

use tonic::{Response, Status};

use crate::metrics::Metrics;

/// Turns a handler's result into its reply, counting a failure by code in `metrics`.
pub(super) fn finish<T>(
    metrics: Option<&Metrics>,
    r: Result<T, Status>,
) -> Result<Response<T>, Status> {
    if let (Err(status), Some(m)) = (&r, metrics) {
        m.rpc_error(status.code());
    }
    r.map(Response::new)
}
