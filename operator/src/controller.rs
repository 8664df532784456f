//! The controller: one reconcile of a KvCluster is observe -> plan -> act -> report.
//!
//! - **Observe:** the StatefulSet, the Pods, the TLS Secrets (`spec.tls`, [`tlsio`]), and every
//!   pod's own `Cluster.Status` (asked concurrently on its stable DNS name, over TLS when the
//!   client port has it, each with a short timeout).
//! - **Plan:** [`planner::plan`], pure.
//! - **Act:** leader labels first, in the planner's order (removal before addition), stopping at
//!   the first failure; then, with `spec.tls.*.auto`, the CA and certificate Secrets (before the
//!   StatefulSet, so that a pod being added finds its certificate when it starts, announced by an
//!   Event when anything was issued); then the owned objects by server-side apply with one field manager
//!   ([`FIELD_MANAGER`]); then the members' volume claims, grown to `spec.storage.size` when it
//!   grew (announced by an Event); then the one action, announced by an Event.
//! - **Report:** the status, by server-side apply on the status subresource, skipped when nothing
//!   changed (so that writing it does not wake the next reconcile for nothing).
//!
//! Every pass ends with a requeue after [`Context::recheck`], so the leader label is re-checked
//! every few seconds while the cluster exists, as well as on every watch event. Failures back off
//! exponentially per object ([`error_policy`]).

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::future::join_all;
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams};
use kube::runtime::controller::Action as Requeue;
use kube::runtime::events::{Event, EventType, Recorder};
use kube::{Client, Resource, ResourceExt};
use serde_json::json;
use tracing::{info, warn};

use crate::crd::{KvCluster, KvClusterStatus};
use crate::metrics::Metrics;
use crate::nodes::{NodeApi, NodeError};
use crate::planner::{self, Action, Plan};
use crate::resources::{self, CLIENT_PORT, Cluster, INSTANCE_LABEL, PEER_PORT, ROLE_LABEL};
use crate::tlsio::{self, Dial, TlsError};
use crate::{observe, podtls, status};

/// The field manager of every object and status the operator writes.
pub const FIELD_MANAGER: &str = "raftkv-operator";

/// Why a reconcile failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A call to the API server failed.
    #[error("kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    /// A call to a node failed.
    #[error("node: {0}")]
    Node(#[from] NodeError),
    /// The KvCluster cannot be acted on as it is.
    #[error("invalid KvCluster: {0}")]
    Invalid(String),
    /// An object could not be serialized.
    #[error("serialize: {0}")]
    Serialize(#[from] serde_json::Error),
    /// TLS Secrets could not be read, checked or made.
    #[error("TLS: {0}")]
    Tls(#[from] TlsError),
}

impl Error {
    /// The error's kind, as the `error` label of `reconcile_failures_total`.
    pub fn metric_label(&self) -> &'static str {
        match self {
            Error::Kube(_) => "kube",
            Error::Node(_) => "node",
            Error::Invalid(_) => "invalid",
            Error::Serialize(_) => "serialize",
            Error::Tls(_) => "tls",
        }
    }
}

/// What every reconcile shares.
pub struct Context<N: NodeApi> {
    /// The API server.
    pub client: Client,
    /// Publishes Events.
    pub recorder: Recorder,
    /// The operator's metrics.
    pub metrics: Arc<Metrics>,
    /// The nodes' Cluster API.
    pub nodes: N,
    /// The clock for condition transition times (a fixed one in tests).
    pub now: Box<dyn Fn() -> Time + Send + Sync>,
    /// How often a healthy cluster is reconciled even without watch events (the leader label's
    /// re-check interval).
    pub recheck: Duration,
    /// Backoff after a failure: the first delay, doubled per consecutive failure up to `backoff_max`.
    pub backoff_initial: Duration,
    /// The longest backoff.
    pub backoff_max: Duration,
    /// Consecutive failures per KvCluster (namespace/name).
    failures: Mutex<HashMap<String, u32>>,
    /// Since when each KvCluster's leader Service has selected no pod or a non-leader.
    misrouted_since: Mutex<HashMap<String, Instant>>,
}

impl<N: NodeApi> Context<N> {
    /// A context with the defaults: re-check every 5 s, back off from 1 s to 5 min.
    pub fn new(client: Client, recorder: Recorder, metrics: Arc<Metrics>, nodes: N) -> Self {
        Context {
            client,
            recorder,
            metrics,
            nodes,
            now: Box::new(|| Time(k8s_openapi::jiff::Timestamp::now())),
            recheck: Duration::from_secs(5),
            backoff_initial: Duration::from_secs(1),
            backoff_max: Duration::from_secs(300),
            failures: Mutex::new(HashMap::new()),
            misrouted_since: Mutex::new(HashMap::new()),
        }
    }

    /// The backoff before retrying `key` after one more failure.
    pub fn next_backoff(&self, key: &str) -> Duration {
        let mut failures = lock(&self.failures);
        let n = failures.entry(key.to_string()).or_insert(0);
        *n = n.saturating_add(1);
        let factor = 2u32.saturating_pow(n.saturating_sub(1).min(20));
        self.backoff_initial
            .saturating_mul(factor)
            .min(self.backoff_max)
    }

    fn succeeded(&self, key: &str) {
        lock(&self.failures).remove(key);
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A panic elsewhere does not make these maps wrong: keep going with the data.
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn key(kvc: &KvCluster) -> String {
    format!("{}/{}", kvc.namespace().unwrap_or_default(), kvc.name_any())
}

/// Reconciles one KvCluster.
#[tracing::instrument(skip_all, fields(kvcluster = %key(&kvc)))]
pub async fn reconcile<N: NodeApi>(
    kvc: Arc<KvCluster>,
    ctx: Arc<Context<N>>,
) -> Result<Requeue, Error> {
    let started = Instant::now();
    ctx.metrics.reconciles.inc();
    let result = reconcile_inner(&kvc, &ctx).await;
    ctx.metrics
        .duration
        .observe(started.elapsed().as_secs_f64());
    if result.is_ok() {
        ctx.succeeded(&key(&kvc));
    }
    result
}

async fn reconcile_inner<N: NodeApi>(kvc: &KvCluster, ctx: &Context<N>) -> Result<Requeue, Error> {
    if kvc.metadata.deletion_timestamp.is_some() {
        // Owner references delete everything; nothing to do but let go.
        return Ok(Requeue::await_change());
    }
    let name = kvc.name_any();
    let ns = kvc
        .namespace()
        .ok_or_else(|| Error::Invalid("no namespace".into()))?;

    // Observe.
    let statefulsets: Api<StatefulSet> = Api::namespaced(ctx.client.clone(), &ns);
    let pods_api: Api<Pod> = Api::namespaced(ctx.client.clone(), &ns);
    let statefulset = statefulsets.get_opt(&name).await?;
    let selector = format!("app.kubernetes.io/name=raftkv,{INSTANCE_LABEL}={name}");
    let pods = pods_api
        .list(&ListParams::default().labels(&selector))
        .await?
        .items;
    let tls = match tlsio::observe(&ctx.client, &ns, &name, kvc.spec.tls.as_ref()).await {
        Ok(t) => t,
        Err(e) => {
            if let TlsError::Secret { .. } = &e {
                publish(ctx, kvc, EventType::Warning, TLS_SECRET, e.to_string()).await;
            }
            return Err(e.into());
        }
    };
    let dial = &tls.dial;
    let answers = join_all(pods.iter().filter(|_| *dial != Dial::NotYet).map(|pod| {
        let pod_name = pod.name_any();
        let addr = format!(
            "{}:{CLIENT_PORT}",
            resources::pod_fqdn(&name, &ns, &pod_name)
        );
        async move { (pod_name, ctx.nodes.status(&addr, dial.tls()).await) }
    }))
    .await;
    let mut statuses = BTreeMap::new();
    for (pod, answer) in answers {
        match answer {
            Ok(s) => {
                statuses.insert(pod, s);
            }
            Err(e) => info!(pod, "no status: {e}"),
        }
    }
    let now = (ctx.now)();
    let observed = observe::observed(kvc, statefulset.as_ref(), &pods, &statuses, &now);

    // Plan.
    let plan = planner::plan(&observed);
    tracing::debug!(
        observed = %serde_json::to_string(&observed).unwrap_or_default(),
        "planning"
    );

    // Act: labels, owned objects, the action.
    track_misrouting(ctx, kvc, &plan, !observed.pods.is_empty());
    for change in &plan.labels {
        let patch = json!({"metadata": {"labels": {ROLE_LABEL: change.role}}});
        pods_api
            .patch(&change.pod, &PatchParams::default(), &Patch::Merge(&patch))
            .await?;
        info!(pod = change.pod, role = change.role, "leader label");
    }
    let cluster = match Cluster::from_resource(kvc) {
        Ok(c) => Some(c),
        Err(_) if matches!(plan.action, Action::InitializeStatus { .. }) => None,
        Err(e) => return Err(Error::Invalid(e.to_string())),
    };
    let mut expanding = None;
    if let (Some(cluster), Some(replicas)) = (&cluster, plan.statefulset_replicas) {
        if podtls::uses_auto(cluster.spec.tls.as_ref()) {
            // Every pod that exists or is about to: the larger of the current and next size.
            let current = statefulset
                .as_ref()
                .and_then(|s| s.spec.as_ref()?.replicas)
                .unwrap_or(0);
            let pods = u32::try_from(replicas.max(current)).unwrap_or(0);
            let params = PatchParams::apply(FIELD_MANAGER).force();
            let issued =
                tlsio::apply_auto(&ctx.client, &params, cluster, pods, &tls, now.0.as_second())
                    .await?;
            if !issued.is_empty() {
                ctx.metrics.action(ISSUE_CERTIFICATES);
                let note = format!("issued certificates: {}", issued.join(", "));
                publish(ctx, kvc, EventType::Normal, ISSUE_CERTIFICATES, note).await;
            }
        }
        apply_owned(ctx, cluster, replicas, statefulset.as_ref()).await?;
        expanding = expand_claims(ctx, cluster, statefulset.as_ref()).await?;
    }
    if let Some(note) = &expanding {
        publish(ctx, kvc, EventType::Normal, EXPAND_VOLUMES, note.clone()).await;
    }
    if plan.action != Action::None {
        act(ctx, kvc, (&name, &ns), &tls.dial, &observed, &plan).await?;
    }

    // Report.
    let mut new_status = status::build(
        kvc,
        &observed,
        &plan,
        format!("{INSTANCE_LABEL}={name},app.kubernetes.io/name=raftkv"),
        now,
    );
    if let Some(note) = expanding {
        new_status.current_action = Some(if plan.message.is_empty() {
            note
        } else {
            format!("{note}; {}", plan.message)
        });
    }
    if kvc.status.as_ref() != Some(&new_status) {
        patch_status(ctx, &name, &ns, &new_status).await?;
    }
    Ok(Requeue::requeue(ctx.recheck))
}

/// Server-side applies every owned object, discovery and routing first.
///
/// A StatefulSet's claim templates are immutable, so an existing StatefulSet keeps the ones it
/// was created with: growing `spec.storage.size` (which the CRD allows) must not make every
/// apply fail. The claims themselves grow in [`expand_claims`].
async fn apply_owned<N: NodeApi>(
    ctx: &Context<N>,
    c: &Cluster,
    replicas: i32,
    existing: Option<&StatefulSet>,
) -> Result<(), Error> {
    let mut o = resources::owned_objects(c, replicas);
    if let (Some(spec), Some(existing)) = (
        o.statefulset.spec.as_mut(),
        existing.and_then(|s| s.spec.as_ref()),
    ) {
        spec.volume_claim_templates = existing.volume_claim_templates.clone();
    }
    let params = PatchParams::apply(FIELD_MANAGER).force();
    let ns = &c.namespace;
    let services: Api<k8s_openapi::api::core::v1::Service> =
        Api::namespaced(ctx.client.clone(), ns);
    for svc in [&o.headless_service, &o.client_service, &o.leader_service] {
        services
            .patch(&svc.name_any(), &params, &Patch::Apply(svc))
            .await?;
    }
    let pdbs: Api<k8s_openapi::api::policy::v1::PodDisruptionBudget> =
        Api::namespaced(ctx.client.clone(), ns);
    pdbs.patch(
        &o.pod_disruption_budget.name_any(),
        &params,
        &Patch::Apply(&o.pod_disruption_budget),
    )
    .await?;
    let policies: Api<k8s_openapi::api::networking::v1::NetworkPolicy> =
        Api::namespaced(ctx.client.clone(), ns);
    policies
        .patch(
            &o.network_policy.name_any(),
            &params,
            &Patch::Apply(&o.network_policy),
        )
        .await?;
    let statefulsets: Api<StatefulSet> = Api::namespaced(ctx.client.clone(), ns);
    statefulsets
        .patch(
            &o.statefulset.name_any(),
            &params,
            &Patch::Apply(&o.statefulset),
        )
        .await?;
    Ok(())
}

/// The Event reason and metrics kind of a volume expansion.
const EXPAND_VOLUMES: &str = "ExpandVolumes";
/// The Event reason and metrics kind of certificates made or renewed (`auto` TLS).
const ISSUE_CERTIFICATES: &str = "IssueCertificates";
/// The Event reason of a TLS Secret that is missing or incomplete.
const TLS_SECRET: &str = "TLSSecretInvalid";

/// Grows the members' claims to `spec.storage.size` once it is larger than the StatefulSet's
/// claim template (which is immutable, so it keeps the size of creation): lists the cluster's
/// claims and applies the new storage request to each one that asks for less, including claims
/// created later from the old template (a scale-up) and retained ones. The StorageClass must
/// allow expansion (`allowVolumeExpansion: true`), or the API server refuses the patch and the
/// reconcile fails and backs off with that error. Returns the sentence to report, if any claim
/// was patched. No request at all while the size never grew.
async fn expand_claims<N: NodeApi>(
    ctx: &Context<N>,
    c: &Cluster,
    existing: Option<&StatefulSet>,
) -> Result<Option<String>, Error> {
    let template_size = existing
        .and_then(|s| s.spec.as_ref())
        .and_then(|s| s.volume_claim_templates.as_ref())
        .and_then(|t| {
            t.iter()
                .find(|t| t.metadata.name.as_deref() == Some(resources::DATA_VOLUME))
        })
        .and_then(|t| t.spec.as_ref()?.resources.as_ref()?.requests.as_ref())
        .and_then(|r| r.get("storage"))
        .and_then(|q| resources::quantity_bytes(&q.0));
    let desired = resources::quantity_bytes(&c.spec.storage.size).ok_or_else(|| {
        Error::Invalid(format!(
            "spec.storage.size {:?} is not a quantity",
            c.spec.storage.size
        ))
    })?;
    if template_size.is_none_or(|t| t >= desired) {
        return Ok(None);
    }
    let claims: Api<PersistentVolumeClaim> = Api::namespaced(ctx.client.clone(), &c.namespace);
    let listed = claims
        .list(&ListParams::default().labels(&c.selector_string()))
        .await?
        .items;
    let mut grown = vec![];
    for claim in listed {
        let name = claim.name_any();
        let requested = claim
            .spec
            .as_ref()
            .and_then(|s| s.resources.as_ref()?.requests.as_ref()?.get("storage"))
            .and_then(|q| resources::quantity_bytes(&q.0));
        if !resources::is_member_claim(c, &name) || requested.is_some_and(|r| r >= desired) {
            continue;
        }
        claims
            .patch(
                &name,
                &PatchParams::apply(FIELD_MANAGER).force(),
                &Patch::Apply(&resources::claim_expansion(c, &name)),
            )
            .await?;
        grown.push(name);
    }
    if grown.is_empty() {
        return Ok(None);
    }
    ctx.metrics.action(EXPAND_VOLUMES);
    Ok(Some(format!(
        "expanding the volume claims {} to {}",
        grown.join(", "),
        c.spec.storage.size
    )))
}

/// Publishes an Event about the KvCluster; a failure to publish is logged, not fatal.
async fn publish<N: NodeApi>(
    ctx: &Context<N>,
    kvc: &KvCluster,
    type_: EventType,
    kind: &str,
    note: String,
) {
    info!(action = kind, "{note}");
    let event = Event {
        type_,
        reason: kind.to_string(),
        note: Some(note),
        action: kind.to_string(),
        secondary: None,
    };
    if let Err(e) = ctx.recorder.publish(&event, &kvc.object_ref(&())).await {
        warn!("cannot publish event: {e}");
    }
}

/// Carries out the plan's action (objects were applied before), with an Event.
async fn act<N: NodeApi>(
    ctx: &Context<N>,
    kvc: &KvCluster,
    (name, ns): (&str, &str),
    dial: &Dial,
    observed: &planner::Observed,
    plan: &Plan,
) -> Result<(), Error> {
    let tls = dial.tls();
    // Membership changes go to any member; the client follows redirects to the leader, tried first.
    let mut endpoints: Vec<String> = observed
        .pods
        .iter()
        .map(|p| format!("{}:{CLIENT_PORT}", resources::pod_fqdn(name, ns, &p.name)))
        .collect();
    if let Some(l) = &plan.leader
        && let Some(i) = observed.pods.iter().position(|p| p.name == l.pod)
    {
        endpoints.swap(0, i);
    }
    let result = match &plan.action {
        Action::None | Action::InitializeStatus { .. } | Action::CreateCluster { .. } => Ok(()),
        Action::ScaleStatefulSet { .. } => Ok(()), // applied with the new replica count above
        Action::AddLearner { node_id, ordinal } => {
            let host = resources::pod_fqdn(name, ns, &format!("{name}-{ordinal}"));
            ctx.nodes
                .add_member(
                    tls,
                    endpoints,
                    *node_id,
                    format!("{host}:{PEER_PORT}"),
                    format!("{host}:{CLIENT_PORT}"),
                )
                .await
                .map_err(Error::from)
        }
        Action::RemoveMember { node_id } => ctx
            .nodes
            .remove_member(tls, endpoints, *node_id)
            .await
            .map_err(Error::from),
        Action::TransferLeader { .. } => ctx
            .nodes
            .transfer_leader(tls, endpoints)
            .await
            .map(|_| ())
            .map_err(Error::from),
        Action::DeletePod { pod } => {
            let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), ns);
            pods.delete(pod, &DeleteParams::default())
                .await
                .map(|_| ())
                .map_err(Error::from)
        }
    };
    let kind = plan.action.kind();
    let (type_, note) = match &result {
        Ok(()) => (EventType::Normal, plan.message.clone()),
        Err(e) => (EventType::Warning, format!("{}: failed: {e}", plan.message)),
    };
    ctx.metrics.action(kind);
    publish(ctx, kvc, type_, kind, note).await;
    result
}

/// Writes the status by server-side apply on the status subresource.
async fn patch_status<N: NodeApi>(
    ctx: &Context<N>,
    name: &str,
    ns: &str,
    status: &KvClusterStatus,
) -> Result<(), Error> {
    let api: Api<KvCluster> = Api::namespaced(ctx.client.clone(), ns);
    let body = json!({
        "apiVersion": "raftkv.dev/v1alpha1",
        "kind": "KvCluster",
        "status": status,
    });
    api.patch_status(
        name,
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(&body),
    )
    .await?;
    Ok(())
}

/// Measures how long the leader Service selected no pod or a non-leader: the label is wrong
/// while the planner wants to change it, or while no pod is the fenced leader.
fn track_misrouting<N: NodeApi>(ctx: &Context<N>, kvc: &KvCluster, plan: &Plan, has_pods: bool) {
    let wrong = has_pods
        && (plan.leader.is_none() || plan.labels.iter().any(|l| l.role == resources::ROLE_LEADER));
    let mut since = lock(&ctx.misrouted_since);
    let k = key(kvc);
    match (wrong, since.get(&k).copied()) {
        (true, None) => {
            since.insert(k, Instant::now());
        }
        (false, Some(t)) => {
            let secs = t.elapsed().as_secs_f64();
            since.remove(&k);
            ctx.metrics.misrouted.inc_by(secs);
            info!(
                seconds = secs,
                "the leader Service points at the leader again"
            );
        }
        _ => {}
    }
}

/// Exponential backoff per KvCluster: 1 s, 2 s, 4 s, ... up to 5 minutes.
pub fn error_policy<N: NodeApi>(
    kvc: Arc<KvCluster>,
    error: &Error,
    ctx: Arc<Context<N>>,
) -> Requeue {
    ctx.metrics.failure(error.metric_label());
    let delay = ctx.next_backoff(&key(&kvc));
    warn!(kvcluster = %key(&kvc), ?delay, "reconcile failed: {error}");
    Requeue::requeue(delay)
}
