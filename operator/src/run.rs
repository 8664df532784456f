//! `kv-operator run`: the long-running operator process.
//!
//! Start-up: connect to the API server, serve /metrics, /healthz and /readyz, then contend for
//! the `raftkv-operator` Lease (coordination.k8s.io) through kube-lease-manager. Only the holder
//! runs the controller, so two replicas never act at once. A replica that loses the Lease stops
//! its controller and exits with an error, so that Kubernetes restarts it as a standby (safer than
//! trying to undo half-started work in place). SIGTERM or Ctrl-C stops the controller gracefully
//! (in-flight reconciles finish) and releases the Lease for the next replica.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{Pod, Secret};
use kube::runtime::events::{Recorder, Reporter};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::{Controller, watcher};
use kube::{Api, Client, ResourceExt};
use kube_lease_manager::LeaseManagerBuilder;
use tokio::sync::watch;
use tracing::{error, info, warn};

use crate::controller::{Context, error_policy, reconcile};
use crate::crd::KvCluster;
use crate::metrics::{self, Metrics};
use crate::nodes::GrpcNodes;
use crate::resources::INSTANCE_LABEL;

/// The name of the leader-election Lease.
pub const LEASE_NAME: &str = "raftkv-operator";

/// How the operator runs.
#[derive(Clone, Debug)]
pub struct RunOptions {
    /// Where /metrics, /healthz and /readyz are served.
    pub metrics_addr: SocketAddr,
    /// Manage KvClusters of this namespace only; every namespace when None.
    pub namespace: Option<String>,
    /// The namespace of the leader-election Lease.
    pub lease_namespace: String,
    /// This replica's identity in the Lease (the pod name).
    pub identity: String,
    /// How long a Lease is held without renewal.
    pub lease_seconds: u64,
}

/// Why the operator stopped.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// No API server connection.
    #[error("kubernetes client: {0}")]
    Client(#[from] kube::Error),
    /// The metrics port could not be served.
    #[error("metrics endpoint: {0}")]
    Metrics(#[from] std::io::Error),
    /// Leader election failed.
    #[error("leader election: {0}")]
    Lease(#[from] kube_lease_manager::LeaseManagerError),
    /// This replica lost the Lease while acting.
    #[error("lost the leader-election Lease")]
    LostLease,
}

/// Resolves on SIGTERM or Ctrl-C.
async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = ctrl_c => {}
                    _ = term.recv() => {}
                }
            }
            Err(e) => {
                warn!("cannot listen for SIGTERM: {e}");
                let _ = ctrl_c.await;
            }
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}

/// Runs the operator until a signal or the loss of the Lease.
pub async fn run(opts: RunOptions) -> Result<(), RunError> {
    let client = Client::try_default().await?;
    let metrics = Arc::new(Metrics::default());
    let (stop_tx, stop_rx) = watch::channel(false);
    let server = tokio::spawn(metrics::serve(opts.metrics_addr, metrics.clone(), stop_rx));
    // Standby replicas are ready too: readiness says the process is up and talks to the API
    // server, not that it leads.
    metrics.ready.store(true, Ordering::Relaxed);

    let lease = LeaseManagerBuilder::new(client.clone(), LEASE_NAME)
        .with_namespace(&opts.lease_namespace)
        .with_identity(&opts.identity)
        .with_duration(opts.lease_seconds)
        .with_grace(opts.lease_seconds.div_ceil(3).max(1))
        .build()
        .await?;
    let (mut leading, lease_task) = lease.watch().await;
    info!(
        identity = opts.identity,
        "waiting for the leader-election Lease"
    );
    let (signal_tx, mut signalled) = watch::channel(false);
    tokio::spawn(async move {
        shutdown_signal().await;
        let _ = signal_tx.send(true);
    });
    let got_lease = tokio::select! {
        r = leading.wait_for(|l| *l) => r.is_ok(),
        _ = signalled.wait_for(|s| *s) => false,
    };
    let result = if got_lease {
        info!("leading: starting the controller");
        metrics.leading.set(1);
        let outcome = run_controller(client, metrics.clone(), &opts, &leading, signalled).await;
        metrics.leading.set(0);
        outcome
    } else {
        Ok(())
    };

    // Dropping the receiver makes the Lease task release the Lease and finish.
    drop(leading);
    match tokio::time::timeout(Duration::from_secs(5), lease_task).await {
        Ok(Ok(Ok(_))) => info!("released the Lease"),
        Ok(Ok(Err(e))) => warn!("releasing the Lease: {e}"),
        Ok(Err(e)) => warn!("the Lease task failed: {e}"),
        Err(_) => warn!("the Lease was not released in time; it expires by itself"),
    }
    let _ = stop_tx.send(true);
    if let Ok(Err(e)) = server.await {
        error!("metrics endpoint: {e}");
    }
    result
}

async fn run_controller(
    client: Client,
    metrics: Arc<Metrics>,
    opts: &RunOptions,
    leading: &watch::Receiver<bool>,
    mut signalled: watch::Receiver<bool>,
) -> Result<(), RunError> {
    let (kvclusters, statefulsets, pods, secrets): (
        Api<KvCluster>,
        Api<StatefulSet>,
        Api<Pod>,
        Api<Secret>,
    ) = match &opts.namespace {
        Some(ns) => (
            Api::namespaced(client.clone(), ns),
            Api::namespaced(client.clone(), ns),
            Api::namespaced(client.clone(), ns),
            Api::namespaced(client.clone(), ns),
        ),
        None => (
            Api::all(client.clone()),
            Api::all(client.clone()),
            Api::all(client.clone()),
            Api::all(client.clone()),
        ),
    };
    let recorder = Recorder::new(
        client.clone(),
        Reporter {
            controller: "raftkv-operator".into(),
            instance: Some(opts.identity.clone()),
        },
    );
    let ctx = Arc::new(Context::new(
        client,
        recorder,
        metrics,
        GrpcNodes::default(),
    ));

    // Lost leadership stops the controller like a signal does, but is reported as an error.
    let (lost_tx, mut lost_rx) = watch::channel(false);
    let mut lease_watch = leading.clone();
    let lost = async move {
        let _ = lease_watch.wait_for(|l| !*l).await;
        let _ = lost_tx.send(true);
    };
    let stop = async move {
        tokio::select! {
            _ = signalled.wait_for(|s| *s) => info!("signal: stopping the controller"),
            _ = lost => error!("lost the Lease: stopping the controller"),
        }
    };

    let managed = watcher::Config::default().labels("app.kubernetes.io/managed-by=raftkv-operator");
    Controller::new(kvclusters, watcher::Config::default())
        .owns(statefulsets, managed.clone())
        // The `auto` TLS Secrets: one deleted by hand is made again at once, not at the next
        // re-check. Only the operator's own (by label) are watched and cached.
        .owns(secrets, managed)
        // Pods are owned by the StatefulSet, not the KvCluster: map them back by their label.
        .watches(
            pods,
            watcher::Config::default().labels("app.kubernetes.io/name=raftkv"),
            |pod: Pod| {
                let ns = pod.namespace();
                pod.labels().get(INSTANCE_LABEL).map(|name| match ns {
                    Some(ns) => ObjectRef::<KvCluster>::new(name).within(&ns),
                    None => ObjectRef::new(name),
                })
            },
        )
        .graceful_shutdown_on(stop)
        .run(reconcile, error_policy, ctx)
        .for_each(|result| async move {
            if let Err(e) = result {
                warn!("controller: {e}");
            }
        })
        .await;
    if *lost_rx.borrow_and_update() {
        return Err(RunError::LostLease);
    }
    Ok(())
}
