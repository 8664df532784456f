//! The gRPC health service: the readiness reporter, and the optional plain health port.
//!
//! The overall status (service `""`) is readiness: SERVING when the node is a member that knows a
//! leader. It is served on the client port, the peer port and, with `--listen-health`, on a port
//! of its own that is always plain TCP and serves nothing else: the kubelet's built-in gRPC probe
//! cannot speak TLS, so with TLS on the client port the probes go to this port (README, "Security").

use tokio::sync::watch;
use tokio::task::JoinHandle;
use tonic_health::pb::health_server::{Health, HealthServer};

use crate::driver::Observed;
use crate::shutdown::Shutdown;

/// The health service, and the task that keeps its readiness up to date until `stop`.
pub(crate) fn readiness(
    mut observed: watch::Receiver<Observed>,
    mut stop: Shutdown,
) -> (HealthServer<impl Health>, JoinHandle<()>) {
    let (reporter, service) = tonic_health::server::health_reporter();
    let task = crate::task::spawn(async move {
        loop {
            let ready = {
                let o = observed.borrow();
                o.member && o.leader_id != 0
            };
            let status = if ready {
                tonic_health::ServingStatus::Serving
            } else {
                tonic_health::ServingStatus::NotServing
            };
            reporter.set_service_status("", status).await;
            tokio::select! {
                r = observed.changed() => if r.is_err() { break },
                _ = stop.recv() => break,
            }
        }
    });
    (service, task)
}
