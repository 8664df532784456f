//! The `KvCluster` custom resource (`raftkv.dev/v1alpha1`): its spec, its status, and the CRD
//! that `crdgen` writes to `charts/raftkv/crds/`.
//!
//! The schema is the API server's first line of defence: every bound, enum and CEL rule here is
//! enforced before the operator sees an object, so the reconciler never has to guess what a
//! nonsensical spec means. Every field carries a doc comment because schemars turns it into the
//! schema's `description`, which is what `kubectl explain kvc.spec` prints.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Affinity, ResourceRequirements, Toleration};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// The API group of every raftkv resource and label.
pub const GROUP: &str = "raftkv.dev";

/// A replicated raftkv key-value store: a StatefulSet of `kvnode` pods that the operator scales,
/// upgrades and heals one safe step at a time.
// Each printcolumn(...) repeats `type_ = ...`; clippy reads them as duplicated attributes.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "raftkv.dev",
    version = "v1alpha1",
    kind = "KvCluster",
    namespaced,
    shortname = "kvc",
    category = "raftkv",
    doc = "A replicated raftkv key-value store: a StatefulSet of kvnode pods that the operator scales, upgrades and heals one safe step at a time.",
    status = "KvClusterStatus",
    derive = "PartialEq",
    scale(
        spec_replicas_path = ".spec.replicas",
        status_replicas_path = ".status.replicas",
        label_selector_path = ".status.selector"
    ),
    printcolumn(
        name = "Replicas",
        type_ = "integer",
        description = "Desired number of members",
        json_path = ".spec.replicas"
    ),
    printcolumn(
        name = "Ready",
        type_ = "integer",
        description = "Pods that are members and know a leader",
        json_path = ".status.readyReplicas"
    ),
    printcolumn(
        name = "Leader",
        type_ = "string",
        description = "The pod that leads",
        json_path = ".status.leader.pod"
    ),
    printcolumn(
        name = "Term",
        type_ = "integer",
        description = "The leader's Raft term",
        json_path = ".status.term"
    ),
    printcolumn(
        name = "Phase",
        type_ = "string",
        description = "What the cluster is going through",
        json_path = ".status.phase"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
#[schemars(
    description = "The desired state of a KvCluster: its size, image, storage, scheduling, Raft tuning and TLS.",
    extend("x-kubernetes-validations" = [
        {
            "rule": "(has(self.tls) && has(self.tls.peer)) == (has(oldSelf.tls) && has(oldSelf.tls.peer))",
            "message": "spec.tls.peer cannot be added or removed after creation: members with and without peer TLS cannot talk to each other"
        },
        {
            "rule": "(has(self.tls) && has(self.tls.client)) == (has(oldSelf.tls) && has(oldSelf.tls.client))",
            "message": "spec.tls.client cannot be added or removed after creation: during the roll the operator could reach only some of the members"
        }
    ])
)]
pub struct KvClusterSpec {
    /// Number of members (pods), 1 to 9. An odd count is recommended: an even one tolerates no
    /// more failures than the odd count below it, and the status carries a Warning condition.
    /// Scaling happens one member at a time (`kubectl scale kvc NAME --replicas N` works).
    #[serde(default = "default_replicas")]
    #[schemars(range(min = 1, max = 9))]
    pub replicas: i32,

    /// The kvnode container image, e.g. `raftkv/kvnode:0.1.0`. Changing it replaces the pods one
    /// at a time, followers first and the leader last, after a leadership transfer.
    #[schemars(length(min = 1, max = 512), regex(pattern = r"^\S+$"))]
    pub image: String,

    /// When the kubelet pulls the image: Always, IfNotPresent or Never (Kubernetes' default when
    /// unset).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_pull_policy: Option<ImagePullPolicy>,

    /// CPU and memory requests and limits of the kvnode container.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,

    /// The persistent volume of every member: its write-ahead log and snapshots.
    pub storage: StorageSpec,

    /// What happens to the members' PersistentVolumeClaims when the cluster shrinks or is
    /// deleted. The StatefulSet's own retention policy does the work; the operator never deletes
    /// a claim by hand.
    #[serde(default)]
    pub volume_retention: VolumeRetention,

    /// Node labels a pod's node must carry.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub node_selector: BTreeMap<String, String>,

    /// Taints the pods tolerate.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tolerations: Vec<Toleration>,

    /// Pod scheduling constraints. When unset, the operator prefers to spread members across
    /// nodes (preferred pod anti-affinity on `kubernetes.io/hostname`), so that one lost node
    /// costs at most one member where the cluster has room.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub affinity: Option<Affinity>,

    /// The PriorityClass of the pods.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    pub priority_class_name: Option<String>,

    /// Raft timing and log compaction of every node. Changing it replaces the pods one at a time,
    /// like an image change.
    #[serde(default)]
    pub tuning: Tuning,

    /// Stops every action of the operator on this cluster (scaling, replacing pods, membership
    /// changes) until set back to false. The status still reports what the operator observes,
    /// and the leader label still follows the leader, so that clients keep reaching it.
    #[serde(default)]
    pub paused: bool,

    /// TLS on the peer port (mutual, between members) and on the client port. Unset: plain
    /// text, and the NetworkPolicy is the peer port's only fence. Each port is fixed at creation
    /// (on or off); its certificates can change (a new Secret, or `auto` renewing).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<TlsSpec>,
}

fn default_replicas() -> i32 {
    3
}

/// When the kubelet pulls the image.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum ImagePullPolicy {
    /// Pull on every pod start.
    Always,
    /// Pull only when the node does not have the image.
    IfNotPresent,
    /// Never pull: the image must already be on the node.
    Never,
}

impl ImagePullPolicy {
    /// The name Kubernetes uses for this policy.
    pub fn as_str(self) -> &'static str {
        match self {
            ImagePullPolicy::Always => "Always",
            ImagePullPolicy::IfNotPresent => "IfNotPresent",
            ImagePullPolicy::Never => "Never",
        }
    }
}

/// The persistent volume of every member.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [
    {
        "rule": "quantity(self.size).isGreaterThan(quantity('0'))",
        "message": "storage size must be greater than zero"
    },
    {
        "rule": "quantity(self.size).compareTo(quantity(oldSelf.size)) >= 0",
        "message": "storage size cannot shrink"
    },
    {
        "rule": "has(self.storageClassName) == has(oldSelf.storageClassName) && (!has(self.storageClassName) || self.storageClassName == oldSelf.storageClassName)",
        "message": "storageClassName cannot change after creation"
    }
]))]
pub struct StorageSpec {
    /// Size of each member's volume, a Kubernetes quantity such as `1Gi`. It can grow but never
    /// shrink; growing it expands every member's claim, which the StorageClass must allow
    /// (`allowVolumeExpansion: true`).
    #[schemars(
        length(min = 1, max = 64),
        regex(
            pattern = r"^(\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))(([KMGTPE]i)|[numkMGTPE]|([eE](\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))))?$"
        )
    )]
    pub size: String,

    /// The StorageClass of the volumes; the cluster's default class when unset. Fixed at
    /// creation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    pub storage_class_name: Option<String>,
}

/// What the StatefulSet does with a member's PersistentVolumeClaim.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum RetentionPolicy {
    /// Delete the claim (and, with the usual reclaim policy, the data).
    Delete,
    /// Keep the claim.
    Retain,
}

impl RetentionPolicy {
    /// The name the StatefulSet API uses for this policy.
    pub fn as_str(self) -> &'static str {
        match self {
            RetentionPolicy::Delete => "Delete",
            RetentionPolicy::Retain => "Retain",
        }
    }
}

/// The retention of the members' PersistentVolumeClaims, mapped onto the StatefulSet's
/// `persistentVolumeClaimRetentionPolicy`.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct VolumeRetention {
    /// The claim of a member removed by scaling down. Default Delete: a member added later must
    /// start from an empty volume, because a volume from before its removal would make it a
    /// removed node that never rejoins.
    #[serde(default = "retention_delete")]
    pub when_scaled: RetentionPolicy,

    /// The claims of all members when the KvCluster is deleted. Default Retain: deleting the
    /// resource by mistake must not delete the data.
    #[serde(default = "retention_retain")]
    pub when_deleted: RetentionPolicy,
}

impl Default for VolumeRetention {
    fn default() -> Self {
        VolumeRetention {
            when_scaled: RetentionPolicy::Delete,
            when_deleted: RetentionPolicy::Retain,
        }
    }
}

fn retention_delete() -> RetentionPolicy {
    RetentionPolicy::Delete
}

fn retention_retain() -> RetentionPolicy {
    RetentionPolicy::Retain
}

/// Raft timing and log compaction, passed to every kvnode as typed flags.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [
    {
        "rule": "self.tickMillis * self.electionTicks <= 60000",
        "message": "the election timeout (tickMillis * electionTicks) must be at most 60 seconds"
    }
]))]
pub struct Tuning {
    /// Length of one Raft tick (the heartbeat interval) in milliseconds, 10 to 5000.
    #[serde(default = "default_tick_millis")]
    #[schemars(range(min = 10, max = 5000))]
    pub tick_millis: i32,

    /// Minimum election timeout in ticks, 3 to 100; each node's timeout is random in
    /// [T, 2T) ticks.
    #[serde(default = "default_election_ticks")]
    #[schemars(range(min = 3, max = 100))]
    pub election_ticks: i32,

    /// Take a snapshot and compact the log every this many applied entries, 100 to 10000000.
    #[serde(default = "default_snapshot_entries")]
    #[schemars(range(min = 100, max = 10_000_000))]
    pub snapshot_entries: i32,
}

impl Default for Tuning {
    fn default() -> Self {
        Tuning {
            tick_millis: default_tick_millis(),
            election_ticks: default_election_ticks(),
            snapshot_entries: default_snapshot_entries(),
        }
    }
}

fn default_tick_millis() -> i32 {
    100
}

fn default_election_ticks() -> i32 {
    10
}

fn default_snapshot_entries() -> i32 {
    10_000
}

/// TLS of the two ports. Certificates come from a Secret (the cert-manager layout: `tls.crt`,
/// `tls.key`, `ca.crt`) or from the operator (`auto`: a CA per cluster, a certificate per pod,
/// renewed before expiry). See docs/operator-tls.md.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [
    {
        "rule": "!has(self.peer) || !has(oldSelf.peer) || has(self.peer.auto) == has(oldSelf.peer.auto)",
        "message": "spec.tls.peer cannot switch between auto and secretName: members trusting different CAs cannot talk to each other"
    }
]))]
pub struct TlsSpec {
    /// Mutual TLS between members on the peer port: a member accepts a peer only with a
    /// certificate from the CA that names the peer's stable DNS name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peer: Option<PeerTls>,

    /// TLS on the client port, optionally requiring client certificates.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client: Option<ClientTls>,
}

/// The peer port's certificates: exactly one of `secretName` and `auto`.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [
    {"rule": "has(self.secretName) != has(self.auto)", "message": "set exactly one of secretName and auto"}
]))]
pub struct PeerTls {
    /// A Secret of this namespace in the cert-manager layout (`tls.crt`, `tls.key`, `ca.crt`),
    /// mounted into every pod. Every member presents the same certificate, so it must name every
    /// member (e.g. `*.<name>-peers.<namespace>.svc.cluster.local`), and members cannot be told
    /// apart by certificate: use `auto` for one certificate per member.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    pub secret_name: Option<String>,

    /// The operator makes a CA for the cluster and one certificate per pod, and renews both.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auto: Option<AutoTls>,
}

/// The client port's certificates: exactly one of `secretName` and `auto`.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [
    {"rule": "has(self.secretName) != has(self.auto)", "message": "set exactly one of secretName and auto"}
]))]
pub struct ClientTls {
    /// A Secret of this namespace in the cert-manager layout (`tls.crt`, `tls.key`, `ca.crt`):
    /// the server certificate every pod presents on the client port (it must name the client
    /// Services and every pod), and in `ca.crt` the CA that clients (and, when
    /// `requireClientCertificate` is set, client certificates) chain to. With
    /// `requireClientCertificate`, the operator authenticates with the Secret
    /// `<name>-operator-client-tls` (same layout) of this namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    pub secret_name: Option<String>,

    /// The operator makes the certificates, as for the peer port (one CA per cluster), and
    /// issues itself a client certificate from that CA.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auto: Option<AutoTls>,

    /// Refuse clients without a certificate from the CA (`kvnode --client-ca`). Readiness is
    /// unaffected: with client TLS the kubelet probes kvnode's plain health port (7201).
    #[serde(default)]
    pub require_client_certificate: bool,
}

/// Certificates made and renewed by the operator. No settings yet: the object's presence is
/// the choice.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub struct AutoTls {}

/// Where one port's certificates come from, once validated.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CertSource<'a> {
    /// A Secret in the cert-manager layout.
    Secret(&'a str),
    /// The operator's CA and per-pod certificates.
    Auto,
}

/// A TLS setting the CRD's rules should have refused (an API server without CEL, or a
/// manifest given to `kv-operator render`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("spec.tls.{port}: set exactly one of secretName and auto")]
pub struct TlsSpecError {
    /// `peer` or `client`.
    pub port: &'static str,
}

fn source<'a>(
    port: &'static str,
    secret_name: Option<&'a str>,
    auto: Option<AutoTls>,
) -> Result<CertSource<'a>, TlsSpecError> {
    match (secret_name, auto) {
        (Some(name), None) if !name.is_empty() => Ok(CertSource::Secret(name)),
        (None, Some(_)) => Ok(CertSource::Auto),
        _ => Err(TlsSpecError { port }),
    }
}

impl PeerTls {
    /// Where the peer certificates come from.
    pub fn source(&self) -> Result<CertSource<'_>, TlsSpecError> {
        source("peer", self.secret_name.as_deref(), self.auto)
    }
}

impl ClientTls {
    /// Where the client port's certificates come from.
    pub fn source(&self) -> Result<CertSource<'_>, TlsSpecError> {
        source("client", self.secret_name.as_deref(), self.auto)
    }
}

/// What the operator last observed of a KvCluster, and what it is doing about it.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct KvClusterStatus {
    /// What the cluster is going through.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<Phase>,

    /// Pods that exist (the StatefulSet's current replicas); the scale subresource reads it.
    #[serde(default)]
    pub replicas: i32,

    /// Pods that are members and know a leader (their readiness).
    #[serde(default)]
    pub ready_replicas: i32,

    /// The label selector of the pods, as a string; the scale subresource reads it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<String>,

    /// The member count the cluster was created with. Frozen at creation: it is every node's
    /// `--initial-cluster-size`, and changing it would restart every pod. Members beyond it join
    /// through membership changes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub initial_replicas: Option<i32>,

    /// The Raft cluster id the members report.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster_id: Option<String>,

    /// The member that leads, fenced by term: the pod whose own status says leader at the
    /// highest term any pod reports.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub leader: Option<LeaderStatus>,

    /// The leader's Raft term.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub term: Option<i64>,

    /// The configuration as the leader reports it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub members: Vec<MemberStatus>,

    /// A sentence naming what the operator is doing now, or waiting for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current_action: Option<String>,

    /// The `metadata.generation` of the spec this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,

    /// `Available`, `Progressing`, `Degraded` and, for an even member count, `Warning`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
}

/// What a KvCluster is going through.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum Phase {
    /// The first members are starting and have not elected a leader yet.
    Creating,
    /// Every member is a healthy voter, a leader exists and nothing is changing.
    Available,
    /// Members are being added or removed.
    Scaling,
    /// Pods are being replaced with a new image or tuning.
    Upgrading,
    /// No leader, or too few healthy voters: the operator changes nothing until it recovers.
    Degraded,
    /// `spec.paused` is set.
    Paused,
}

impl Phase {
    /// The phase's name, as in the status.
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Creating => "Creating",
            Phase::Available => "Available",
            Phase::Scaling => "Scaling",
            Phase::Upgrading => "Upgrading",
            Phase::Degraded => "Degraded",
            Phase::Paused => "Paused",
        }
    }
}

/// The member that leads.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct LeaderStatus {
    /// The leader's Raft node id (its pod ordinal + 1).
    pub id: i64,
    /// The leader's pod.
    pub pod: String,
}

/// One member of the configuration.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MemberStatus {
    /// The member's Raft node id (its pod ordinal + 1).
    pub id: i64,
    /// The member's pod.
    pub pod: String,
    /// `voter` or `learner`.
    pub role: String,
    /// Where the member stands, as it reports itself: Loading, Fresh, WaitingToBeAdded,
    /// CatchingUp, Learner, Voter, Removed, or Unknown when it did not answer.
    pub state: String,
    /// Whether the leader heard from the member recently.
    pub healthy: bool,
    /// The highest log index the leader knows to be replicated on the member.
    pub match_index: i64,
}

/// The generated CustomResourceDefinition, as the YAML document committed under
/// `charts/raftkv/crds/`.
pub fn crd_yaml() -> Result<String, serde_yaml_ng::Error> {
    use kube::CustomResourceExt;
    let yaml = serde_yaml_ng::to_string(&KvCluster::crd())?;
    Ok(format!(
        "# Generated by `cargo run -p raftkv-operator --bin crdgen` from operator/src/crd.rs: do not edit.\n{yaml}"
    ))
}
