//! Pure builders of every object a KvCluster owns: the headless, client and leader Services, the
//! PodDisruptionBudget, the NetworkPolicy and the StatefulSet.
//!
//! They take a [`Cluster`] (the validated facts a reconcile knows) and return the full object the
//! operator server-side applies: no client, no clock, no randomness, so the same input always
//! gives byte-identical output. `kv-operator render` prints exactly these objects, and the tests
//! below pin every field that matters for safety (DESIGN §6, §7).
//!
//! Names, for a KvCluster `demo` in namespace `ns`:
//!
//! | object | name | why |
//! |---|---|---|
//! | StatefulSet | `demo` | pods are `demo-0`, `demo-1`, …; kvnode derives its id from the ordinal |
//! | headless Service | `demo-peers` | per-pod DNS `demo-0.demo-peers.ns.svc.cluster.local` for discovery |
//! | client Service | `demo` | ready pods; what applications use |
//! | leader Service | `demo-leader` | the one pod labelled `raftkv.dev/role=leader` |
//! | PodDisruptionBudget | `demo` | a voluntary eviction never takes away a quorum |
//! | NetworkPolicy | `demo-peers` | the peer port only from this cluster's own pods |

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{
    StatefulSet, StatefulSetPersistentVolumeClaimRetentionPolicy, StatefulSetSpec,
    StatefulSetUpdateStrategy,
};
use k8s_openapi::api::core::v1::{
    Affinity, Capabilities, Container, ContainerPort, GRPCAction, PersistentVolumeClaim,
    PersistentVolumeClaimSpec, PodAffinityTerm, PodAntiAffinity, PodSecurityContext, PodSpec,
    PodTemplateSpec, Probe, SeccompProfile, SecurityContext, Service, ServicePort, ServiceSpec,
    TCPSocketAction, VolumeMount, VolumeResourceRequirements, WeightedPodAffinityTerm,
};
use k8s_openapi::api::networking::v1::{
    NetworkPolicy, NetworkPolicyIngressRule, NetworkPolicyPeer, NetworkPolicyPort,
    NetworkPolicySpec,
};
use k8s_openapi::api::policy::v1::{PodDisruptionBudget, PodDisruptionBudgetSpec};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta, OwnerReference};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use crate::crd::{KvCluster, KvClusterSpec};
use crate::podtls;

/// The client port: `Kv`, `Cluster` and the gRPC health service.
pub const CLIENT_PORT: i32 = 7001;
/// The peer port: Raft traffic between members (and `Cluster`).
pub const PEER_PORT: i32 = 7101;
/// The Prometheus metrics port of every node.
pub const METRICS_PORT: i32 = 9100;
/// Where the data volume is mounted in the kvnode container.
pub const DATA_DIR: &str = "/var/lib/raftkv";
/// The name of the data volume (and of the StatefulSet's claim template).
pub const DATA_VOLUME: &str = "data";
/// The kvnode container's name.
pub const CONTAINER: &str = "kvnode";

/// How long a leader waits for leadership to move away on SIGTERM (`--shutdown-timeout`).
pub const SHUTDOWN_TIMEOUT_SECONDS: i64 = 10;
/// The pod's grace period: longer than the hand-off, so that the kubelet never kills a leader
/// that is still handing over, with room for the final fsync and exit.
pub const TERMINATION_GRACE_PERIOD_SECONDS: i64 = SHUTDOWN_TIMEOUT_SECONDS + 20;
const _: () = assert!(TERMINATION_GRACE_PERIOD_SECONDS > SHUTDOWN_TIMEOUT_SECONDS);

/// The label that marks the one pod the leader Service selects (`leader`, else `follower`).
pub const ROLE_LABEL: &str = "raftkv.dev/role";
/// [`ROLE_LABEL`]'s value on the leader's pod.
pub const ROLE_LEADER: &str = "leader";
/// [`ROLE_LABEL`]'s value on every other pod.
pub const ROLE_FOLLOWER: &str = "follower";
/// The label on the pods that names their KvCluster (also part of the selector).
pub const INSTANCE_LABEL: &str = "app.kubernetes.io/instance";
/// The label the StatefulSet controller puts on every pod: its revision.
pub const REVISION_LABEL: &str = "controller-revision-hash";
/// The user id the kvnode container runs as (the distroless "nonroot" user); also the group that
/// owns the data volume.
pub const RUN_AS_USER: i64 = 65532;

/// The facts about one KvCluster that the builders need, validated once by the reconciler.
#[derive(Clone, Debug, PartialEq)]
pub struct Cluster {
    /// The KvCluster's name (also the StatefulSet's and the client Service's).
    pub name: String,
    /// Its namespace.
    pub namespace: String,
    /// Its UID: the owner of every object, and the nodes' `--initial-cluster-token`, so that two
    /// clusters (even two of the same name, one after the other) never share a cluster id.
    pub uid: String,
    /// Its spec (defaults applied by the API server).
    pub spec: KvClusterSpec,
    /// `status.initialReplicas`: every node's `--initial-cluster-size`, frozen at creation.
    pub initial_replicas: i32,
}

/// Why a KvCluster cannot be built on yet (see [`Cluster::from_resource`]).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum NotBuildable {
    /// No `metadata.name`.
    #[error("the KvCluster has no name")]
    NoName,
    /// No `metadata.namespace`: never stored by an API server.
    #[error("the KvCluster has no namespace")]
    NoNamespace,
    /// No `metadata.uid`: never stored by an API server.
    #[error("the KvCluster has no UID")]
    NoUid,
    /// The first reconcile has not frozen `status.initialReplicas` yet.
    #[error("status.initialReplicas is not set yet")]
    NoInitialReplicas,
    /// `spec.tls` names no source, or two, for a port (the CRD's CEL rule says the same).
    #[error(transparent)]
    Tls(#[from] crate::crd::TlsSpecError),
}

impl Cluster {
    /// The facts of `kvc`, or why it cannot be built on yet (no namespace or UID: it was never
    /// stored by an API server; no `initialReplicas`: the first reconcile has not frozen it yet).
    pub fn from_resource(kvc: &KvCluster) -> Result<Cluster, NotBuildable> {
        let name = kvc.metadata.name.clone().ok_or(NotBuildable::NoName)?;
        let namespace = kvc
            .metadata
            .namespace
            .clone()
            .ok_or(NotBuildable::NoNamespace)?;
        let uid = kvc.metadata.uid.clone().ok_or(NotBuildable::NoUid)?;
        let initial_replicas = kvc
            .status
            .as_ref()
            .and_then(|s| s.initial_replicas)
            .ok_or(NotBuildable::NoInitialReplicas)?;
        podtls::validate(kvc.spec.tls.as_ref())?;
        Ok(Cluster {
            name,
            namespace,
            uid,
            spec: kvc.spec.clone(),
            initial_replicas,
        })
    }

    /// The StatefulSet's (and the client Service's) name.
    pub fn statefulset_name(&self) -> String {
        self.name.clone()
    }

    /// The headless Service's name.
    pub fn headless_service_name(&self) -> String {
        format!("{}-peers", self.name)
    }

    /// The leader Service's name.
    pub fn leader_service_name(&self) -> String {
        format!("{}-leader", self.name)
    }

    /// The headless Service's fully qualified DNS name (`--discovery dns:<this>`).
    pub fn headless_fqdn(&self) -> String {
        headless_fqdn(&self.name, &self.namespace)
    }

    /// The pod of a StatefulSet ordinal.
    pub fn pod_name(&self, ordinal: u32) -> String {
        format!("{}-{ordinal}", self.statefulset_name())
    }

    /// The pod's stable DNS name under the headless Service, the host part of the addresses the
    /// node advertises (kvnode's `dns_plan` derives the same name from its hostname).
    pub fn pod_fqdn(&self, ordinal: u32) -> String {
        format!("{}.{}", self.pod_name(ordinal), self.headless_fqdn())
    }

    /// The labels every owned object and pod carries; [`Cluster::selector_labels`] is a subset.
    pub fn labels(&self) -> BTreeMap<String, String> {
        let mut labels = self.selector_labels();
        labels.insert(
            "app.kubernetes.io/managed-by".into(),
            "raftkv-operator".into(),
        );
        labels.insert("app.kubernetes.io/component".into(), "kvnode".into());
        labels
    }

    /// The labels that select this cluster's pods. Never changes for a cluster's life (a
    /// StatefulSet's selector is immutable).
    pub fn selector_labels(&self) -> BTreeMap<String, String> {
        BTreeMap::from([
            ("app.kubernetes.io/name".to_string(), "raftkv".to_string()),
            (INSTANCE_LABEL.to_string(), self.name.clone()),
        ])
    }

    /// The pod selector as a string, for `status.selector` (the scale subresource).
    pub fn selector_string(&self) -> String {
        self.selector_labels()
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(",")
    }

    fn owner_reference(&self) -> OwnerReference {
        OwnerReference {
            api_version: "raftkv.dev/v1alpha1".into(),
            kind: "KvCluster".into(),
            name: self.name.clone(),
            uid: self.uid.clone(),
            controller: Some(true),
            block_owner_deletion: Some(true),
        }
    }

    /// The metadata of an owned object `name`: namespace, labels, owner reference.
    pub(crate) fn metadata(&self, name: String) -> ObjectMeta {
        ObjectMeta {
            name: Some(name),
            namespace: Some(self.namespace.clone()),
            labels: Some(self.labels()),
            owner_references: Some(vec![self.owner_reference()]),
            ..ObjectMeta::default()
        }
    }

    fn selector(&self) -> LabelSelector {
        LabelSelector {
            match_labels: Some(self.selector_labels()),
            match_expressions: None,
        }
    }
}

/// The headless Service's fully qualified DNS name for KvCluster `name` in `namespace`.
pub fn headless_fqdn(name: &str, namespace: &str) -> String {
    format!("{name}-peers.{namespace}.svc.cluster.local")
}

/// The stable DNS name of pod `pod` of KvCluster `name`: the host of its advertised addresses
/// (kvnode derives the same name from its hostname).
pub fn pod_fqdn(name: &str, namespace: &str, pod: &str) -> String {
    format!("{pod}.{}", headless_fqdn(name, namespace))
}

/// The number of voters that make a quorum in a cluster of `members`.
pub fn quorum(members: i32) -> i32 {
    members / 2 + 1
}

fn port(name: &str, port: i32) -> ServicePort {
    ServicePort {
        name: Some(name.into()),
        port,
        target_port: Some(IntOrString::String(name.into())),
        protocol: Some("TCP".into()),
        ..ServicePort::default()
    }
}

/// The headless Service: per-pod DNS names for peer discovery. It publishes pods that are not
/// ready, because a node is ready only once a leader exists, and no leader can be elected before
/// the nodes find each other (DESIGN §6).
pub fn headless_service(c: &Cluster) -> Service {
    Service {
        metadata: c.metadata(c.headless_service_name()),
        spec: Some(ServiceSpec {
            cluster_ip: Some("None".into()),
            publish_not_ready_addresses: Some(true),
            selector: Some(c.selector_labels()),
            ports: Some(vec![port("peer", PEER_PORT), port("client", CLIENT_PORT)]),
            ..ServiceSpec::default()
        }),
        status: None,
    }
}

/// The client Service: every ready pod (a member that knows a leader). Followers redirect writes
/// to the leader, and the client library follows the redirect.
pub fn client_service(c: &Cluster) -> Service {
    Service {
        metadata: c.metadata(c.statefulset_name()),
        spec: Some(ServiceSpec {
            selector: Some(c.selector_labels()),
            ports: Some(vec![port("client", CLIENT_PORT)]),
            ..ServiceSpec::default()
        }),
        status: None,
    }
}

/// The leader Service: the one pod labelled `raftkv.dev/role=leader`, which the operator moves
/// only after fencing by term (see the planner). Saves clients the redirect hop.
pub fn leader_service(c: &Cluster) -> Service {
    let mut selector = c.selector_labels();
    selector.insert(ROLE_LABEL.into(), ROLE_LEADER.into());
    Service {
        metadata: c.metadata(c.leader_service_name()),
        spec: Some(ServiceSpec {
            selector: Some(selector),
            ports: Some(vec![port("client", CLIENT_PORT)]),
            ..ServiceSpec::default()
        }),
        status: None,
    }
}

/// The PodDisruptionBudget: voluntary evictions (drains) keep a quorum of the current members.
/// `members` is the StatefulSet's current replica count, which moves one at a time.
pub fn pod_disruption_budget(c: &Cluster, members: i32) -> PodDisruptionBudget {
    PodDisruptionBudget {
        metadata: c.metadata(c.statefulset_name()),
        spec: Some(PodDisruptionBudgetSpec {
            min_available: Some(IntOrString::Int(quorum(members.max(1)))),
            selector: Some(c.selector()),
            ..PodDisruptionBudgetSpec::default()
        }),
        status: None,
    }
}

/// The NetworkPolicy: the peer port only from this cluster's own pods. Without `spec.tls.peer`
/// the peer port has no authentication, and a forged AppendEntries with a high term deposes a
/// leader; with it, this fence stays as a second wall. The client
/// and metrics ports stay open to everyone (listing them is required: a policy that selects a pod
/// for Ingress denies every port it does not allow).
pub fn network_policy(c: &Cluster) -> NetworkPolicy {
    let tcp = |p: i32| NetworkPolicyPort {
        port: Some(IntOrString::Int(p)),
        protocol: Some("TCP".into()),
        end_port: None,
    };
    let mut open = vec![tcp(CLIENT_PORT), tcp(METRICS_PORT)];
    if podtls::pod_tls(&c.name, c.spec.tls.as_ref()).client_tls {
        // The kubelet's readiness probe goes to the plain health port then.
        open.push(tcp(podtls::HEALTH_PORT));
    }
    NetworkPolicy {
        metadata: c.metadata(c.headless_service_name()),
        spec: Some(NetworkPolicySpec {
            pod_selector: Some(c.selector()),
            policy_types: Some(vec!["Ingress".into()]),
            ingress: Some(vec![
                NetworkPolicyIngressRule {
                    from: Some(vec![NetworkPolicyPeer {
                        pod_selector: Some(c.selector()),
                        ..NetworkPolicyPeer::default()
                    }]),
                    ports: Some(vec![tcp(PEER_PORT)]),
                },
                NetworkPolicyIngressRule {
                    from: None,
                    ports: Some(open),
                },
            ]),
            egress: None,
        }),
    }
}

/// The kvnode arguments. Stable for the cluster's life except where the spec's tuning changes,
/// which is a rolling replacement like an image change.
pub fn node_args(c: &Cluster) -> Vec<String> {
    let t = &c.spec.tuning;
    vec![
        format!("--discovery=dns:{}", c.headless_fqdn()),
        format!("--initial-cluster-size={}", c.initial_replicas),
        format!("--initial-cluster-token={}", c.uid),
        format!("--listen-client=0.0.0.0:{CLIENT_PORT}"),
        format!("--listen-peer=0.0.0.0:{PEER_PORT}"),
        format!("--listen-metrics=0.0.0.0:{METRICS_PORT}"),
        format!("--data-dir={DATA_DIR}"),
        format!("--tick={}ms", t.tick_millis),
        format!("--election-ticks={}", t.election_ticks),
        format!("--snapshot-entries={}", t.snapshot_entries),
        format!("--shutdown-timeout={SHUTDOWN_TIMEOUT_SECONDS}s"),
    ]
}

/// The name of member `ordinal`'s claim, as the StatefulSet controller names it
/// (`<template>-<statefulset>-<ordinal>`), e.g. `data-demo-2`.
pub fn claim_name(c: &Cluster, ordinal: u32) -> String {
    format!("{DATA_VOLUME}-{}-{ordinal}", c.statefulset_name())
}

/// Whether `name` is one of this cluster's member claims (any ordinal, retained ones included).
pub fn is_member_claim(c: &Cluster, name: &str) -> bool {
    name.strip_prefix(&format!("{DATA_VOLUME}-{}-", c.statefulset_name()))
        .is_some_and(|ordinal| ordinal.parse::<u32>().is_ok())
}

/// The server-side apply body that grows claim `name` to `spec.storage.size`: only the storage
/// request, the one field of a bound claim that may change (upwards, if its StorageClass allows
/// expansion).
pub fn claim_expansion(c: &Cluster, name: &str) -> serde_json::Value {
    serde_json::json!({
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": {"name": name, "namespace": c.namespace},
        "spec": {"resources": {"requests": {"storage": c.spec.storage.size}}},
    })
}

/// The value of a Kubernetes quantity in bytes, fractions of a byte rounded up; `None` if it
/// is not a quantity (or is negative or beyond `u128`). Compares storage sizes written in
/// different units (`1Gi` and `1024Mi` are equal), which the strings themselves cannot.
pub fn quantity_bytes(q: &str) -> Option<u128> {
    let q = q.trim();
    let q = q.strip_prefix('+').unwrap_or(q);
    let split = q
        .find(|ch: char| !(ch.is_ascii_digit() || ch == '.'))
        .unwrap_or(q.len());
    let (number, suffix) = q.split_at(split);
    let (int, frac) = number.split_once('.').unwrap_or((number, ""));
    if int.is_empty() && frac.is_empty() {
        return None;
    }
    let digits: u128 = format!("{int}{frac}").parse().ok()?;
    let (pow2, pow10): (u32, i64) = match suffix {
        "" => (0, 0),
        "Ki" => (10, 0),
        "Mi" => (20, 0),
        "Gi" => (30, 0),
        "Ti" => (40, 0),
        "Pi" => (50, 0),
        "Ei" => (60, 0),
        "n" => (0, -9),
        "u" => (0, -6),
        "m" => (0, -3),
        "k" => (0, 3),
        "M" => (0, 6),
        "G" => (0, 9),
        "T" => (0, 12),
        "P" => (0, 15),
        "E" => (0, 18),
        e if e.starts_with(['e', 'E']) => (0, e[1..].parse().ok()?),
        _ => return None,
    };
    let pow10 = pow10 - i64::try_from(frac.len()).ok()?;
    let value = digits.checked_mul(1u128.checked_shl(pow2)?)?;
    let scale = 10u128.checked_pow(u32::try_from(pow10.unsigned_abs()).ok()?)?;
    if pow10 >= 0 {
        value.checked_mul(scale)
    } else {
        Some(value.div_ceil(scale))
    }
}

/// The default scheduling: prefer one member per node, so that losing a node costs one member.
/// Preferred rather than required, so that a small cluster (kind, a laptop) still schedules.
pub fn default_affinity(c: &Cluster) -> Affinity {
    Affinity {
        pod_anti_affinity: Some(PodAntiAffinity {
            preferred_during_scheduling_ignored_during_execution: Some(vec![
                WeightedPodAffinityTerm {
                    weight: 100,
                    pod_affinity_term: PodAffinityTerm {
                        label_selector: Some(c.selector()),
                        topology_key: "kubernetes.io/hostname".into(),
                        ..PodAffinityTerm::default()
                    },
                },
            ]),
            ..PodAntiAffinity::default()
        }),
        ..Affinity::default()
    }
}

fn container(c: &Cluster) -> Container {
    let cport = |name: &str, port: i32| ContainerPort {
        name: Some(name.into()),
        container_port: port,
        protocol: Some("TCP".into()),
        ..ContainerPort::default()
    };
    let tls = podtls::pod_tls(&c.name, c.spec.tls.as_ref());
    let mut args = node_args(c);
    args.extend(tls.args);
    let mut volume_mounts = vec![VolumeMount {
        name: DATA_VOLUME.into(),
        mount_path: DATA_DIR.into(),
        ..VolumeMount::default()
    }];
    volume_mounts.extend(tls.mounts);
    // Readiness is the overall gRPC health status (a member that knows a leader). The kubelet's
    // gRPC probe speaks plain text only, so with client TLS on it asks kvnode's plain health
    // port instead of the client port.
    let health_port = if tls.client_tls {
        podtls::HEALTH_PORT
    } else {
        CLIENT_PORT
    };
    let mut ports = vec![
        cport("client", CLIENT_PORT),
        cport("peer", PEER_PORT),
        cport("metrics", METRICS_PORT),
    ];
    if tls.client_tls {
        ports.push(cport("health", podtls::HEALTH_PORT));
    }
    Container {
        name: CONTAINER.into(),
        image: Some(c.spec.image.clone()),
        image_pull_policy: c.spec.image_pull_policy.map(|p| p.as_str().to_string()),
        args: Some(args),
        env: (!tls.env.is_empty()).then_some(tls.env),
        ports: Some(ports),
        resources: c.spec.resources.clone(),
        readiness_probe: Some(Probe {
            grpc: Some(GRPCAction {
                port: health_port,
                service: None,
            }),
            period_seconds: Some(5),
            timeout_seconds: Some(2),
            failure_threshold: Some(2),
            ..Probe::default()
        }),
        // Liveness must not depend on leadership or quorum, or a cluster that lost its leader
        // would have every pod restarted (DESIGN §6). The node serves no separately named
        // always-on health service, so liveness is that the client port accepts connections.
        liveness_probe: Some(Probe {
            tcp_socket: Some(TCPSocketAction {
                port: IntOrString::Int(CLIENT_PORT),
                host: None,
            }),
            initial_delay_seconds: Some(10),
            period_seconds: Some(10),
            timeout_seconds: Some(5),
            failure_threshold: Some(6),
            ..Probe::default()
        }),
        volume_mounts: Some(volume_mounts),
        security_context: Some(SecurityContext {
            allow_privilege_escalation: Some(false),
            read_only_root_filesystem: Some(true),
            run_as_non_root: Some(true),
            capabilities: Some(Capabilities {
                drop: Some(vec!["ALL".into()]),
                add: None,
            }),
            ..SecurityContext::default()
        }),
        ..Container::default()
    }
}

/// The StatefulSet with `replicas` pods. `Parallel`, because OrderedReady would deadlock (pod 0
/// cannot be ready before a leader exists); `OnDelete`, because the operator replaces pods itself,
/// one at a time and the leader last; claims kept or deleted by the StatefulSet's own retention
/// policy.
pub fn statefulset(c: &Cluster, replicas: i32) -> StatefulSet {
    let spec = &c.spec;
    let volumes = podtls::pod_tls(&c.name, spec.tls.as_ref()).volumes;
    let pod_spec = PodSpec {
        containers: vec![container(c)],
        volumes: (!volumes.is_empty()).then_some(volumes),
        termination_grace_period_seconds: Some(TERMINATION_GRACE_PERIOD_SECONDS),
        affinity: Some(spec.affinity.clone().unwrap_or_else(|| default_affinity(c))),
        node_selector: (!spec.node_selector.is_empty()).then(|| spec.node_selector.clone()),
        tolerations: (!spec.tolerations.is_empty()).then(|| spec.tolerations.clone()),
        priority_class_name: spec.priority_class_name.clone(),
        // Service links would put every Service of the namespace into the environment.
        enable_service_links: Some(false),
        security_context: Some(PodSecurityContext {
            run_as_user: Some(RUN_AS_USER),
            run_as_group: Some(RUN_AS_USER),
            fs_group: Some(RUN_AS_USER),
            run_as_non_root: Some(true),
            seccomp_profile: Some(SeccompProfile {
                type_: "RuntimeDefault".into(),
                localhost_profile: None,
            }),
            ..PodSecurityContext::default()
        }),
        ..PodSpec::default()
    };
    let claim = PersistentVolumeClaim {
        metadata: ObjectMeta {
            name: Some(DATA_VOLUME.into()),
            labels: Some(c.selector_labels()),
            ..ObjectMeta::default()
        },
        spec: Some(PersistentVolumeClaimSpec {
            access_modes: Some(vec!["ReadWriteOnce".into()]),
            storage_class_name: spec.storage.storage_class_name.clone(),
            resources: Some(VolumeResourceRequirements {
                requests: Some(BTreeMap::from([(
                    "storage".to_string(),
                    Quantity(spec.storage.size.clone()),
                )])),
                limits: None,
            }),
            ..PersistentVolumeClaimSpec::default()
        }),
        status: None,
    };
    StatefulSet {
        metadata: c.metadata(c.statefulset_name()),
        spec: Some(StatefulSetSpec {
            replicas: Some(replicas),
            service_name: Some(c.headless_service_name()),
            selector: c.selector(),
            pod_management_policy: Some("Parallel".into()),
            update_strategy: Some(StatefulSetUpdateStrategy {
                type_: Some("OnDelete".into()),
                rolling_update: None,
            }),
            persistent_volume_claim_retention_policy: Some(
                StatefulSetPersistentVolumeClaimRetentionPolicy {
                    when_scaled: Some(spec.volume_retention.when_scaled.as_str().into()),
                    when_deleted: Some(spec.volume_retention.when_deleted.as_str().into()),
                },
            ),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(c.labels()),
                    ..ObjectMeta::default()
                }),
                spec: Some(pod_spec),
            },
            volume_claim_templates: Some(vec![claim]),
            ..StatefulSetSpec::default()
        }),
        status: None,
    }
}

/// Every object the operator applies for a cluster whose StatefulSet has `replicas` pods, in the
/// order it applies them: discovery and routing before the pods that need them.
pub fn owned_objects(c: &Cluster, replicas: i32) -> OwnedObjects {
    OwnedObjects {
        headless_service: headless_service(c),
        client_service: client_service(c),
        leader_service: leader_service(c),
        pod_disruption_budget: pod_disruption_budget(c, replicas),
        network_policy: network_policy(c),
        statefulset: statefulset(c, replicas),
    }
}

/// The objects a KvCluster owns.
#[derive(Clone, Debug, PartialEq)]
pub struct OwnedObjects {
    /// See [`headless_service`].
    pub headless_service: Service,
    /// See [`client_service`].
    pub client_service: Service,
    /// See [`leader_service`].
    pub leader_service: Service,
    /// See [`pod_disruption_budget`].
    pub pod_disruption_budget: PodDisruptionBudget,
    /// See [`network_policy`].
    pub network_policy: NetworkPolicy,
    /// See [`statefulset`].
    pub statefulset: StatefulSet,
}

#[cfg(test)]
mod tests {
    #[test]
    fn quantities_compare_across_units() {
        use super::quantity_bytes as q;
        assert_eq!(q("1Gi"), Some(1 << 30));
        assert_eq!(q("1024Mi"), q("1Gi"));
        assert_eq!(q("1.5Gi"), Some(3 << 29));
        assert_eq!(q("2G"), Some(2_000_000_000));
        assert_eq!(q("1e3"), Some(1000));
        assert_eq!(q("+10"), Some(10));
        assert_eq!(q("1500m"), Some(2), "a fraction of a byte rounds up");
        assert!(q("2Gi") > q("1999Mi"));
        for bad in [
            "",
            "Gi",
            "-1Gi",
            "1Xi",
            "1e",
            "99999999999999999999999999999999999999999Ei",
        ] {
            assert_eq!(q(bad), None, "{bad:?}");
        }
    }

    use super::*;
    use crate::crd::{ImagePullPolicy, RetentionPolicy, StorageSpec, Tuning, VolumeRetention};

    fn spec() -> KvClusterSpec {
        KvClusterSpec {
            replicas: 3,
            image: "raftkv/kvnode:0.1.0".into(),
            image_pull_policy: Some(ImagePullPolicy::IfNotPresent),
            resources: None,
            storage: StorageSpec {
                size: "1Gi".into(),
                storage_class_name: Some("fast".into()),
            },
            volume_retention: VolumeRetention::default(),
            node_selector: BTreeMap::new(),
            tolerations: vec![],
            affinity: None,
            priority_class_name: None,
            tuning: Tuning::default(),
            paused: false,
            tls: None,
        }
    }

    fn cluster() -> Cluster {
        Cluster {
            name: "demo".into(),
            namespace: "ns".into(),
            uid: "0b6f5a6e-uid".into(),
            spec: spec(),
            initial_replicas: 3,
        }
    }

    fn json<T: serde::Serialize>(v: &T) -> serde_json::Value {
        serde_json::to_value(v).expect("k8s-openapi objects serialize")
    }

    #[test]
    fn every_object_is_owned_by_the_kvcluster_as_controller() {
        let o = owned_objects(&cluster(), 3);
        let metas = [
            &o.headless_service.metadata,
            &o.client_service.metadata,
            &o.leader_service.metadata,
            &o.pod_disruption_budget.metadata,
            &o.network_policy.metadata,
            &o.statefulset.metadata,
        ];
        for m in metas {
            let refs = m.owner_references.as_ref().expect("owner references");
            assert_eq!(refs.len(), 1);
            assert_eq!(refs[0].uid, "0b6f5a6e-uid");
            assert_eq!(refs[0].kind, "KvCluster");
            assert_eq!(refs[0].api_version, "raftkv.dev/v1alpha1");
            assert_eq!(refs[0].controller, Some(true));
            assert_eq!(m.namespace.as_deref(), Some("ns"));
        }
        let names: Vec<_> = metas
            .iter()
            .map(|m| m.name.clone().unwrap_or_default())
            .collect();
        assert_eq!(
            names,
            [
                "demo-peers",
                "demo",
                "demo-leader",
                "demo",
                "demo-peers",
                "demo"
            ]
        );
    }

    #[test]
    fn headless_service_publishes_not_ready_pods_on_both_ports() {
        let s = json(&headless_service(&cluster()));
        assert_eq!(s["spec"]["clusterIP"], "None");
        assert_eq!(s["spec"]["publishNotReadyAddresses"], true);
        assert_eq!(s["spec"]["ports"][0]["port"], 7101);
        assert_eq!(s["spec"]["ports"][1]["port"], 7001);
        assert_eq!(
            s["spec"]["selector"],
            serde_json::json!({"app.kubernetes.io/instance": "demo", "app.kubernetes.io/name": "raftkv"})
        );
    }

    #[test]
    fn client_service_selects_ready_pods_and_leader_service_only_the_leader() {
        let client = json(&client_service(&cluster()));
        assert_eq!(
            client["spec"]["publishNotReadyAddresses"],
            serde_json::Value::Null
        );
        assert_eq!(client["spec"]["ports"][0]["port"], 7001);
        assert_eq!(
            client["spec"]["selector"].as_object().map(|m| m.len()),
            Some(2)
        );
        let leader = json(&leader_service(&cluster()));
        assert_eq!(leader["spec"]["selector"]["raftkv.dev/role"], "leader");
        assert_eq!(
            leader["spec"]["selector"]["app.kubernetes.io/instance"],
            "demo"
        );
        assert_eq!(leader["spec"]["ports"][0]["port"], 7001);
    }

    #[test]
    fn pdb_keeps_a_quorum_of_the_current_members() {
        for (members, min) in [(1, 1), (2, 2), (3, 2), (4, 3), (5, 3), (9, 5)] {
            let pdb = pod_disruption_budget(&cluster(), members);
            let spec = pdb.spec.expect("spec");
            assert_eq!(spec.min_available, Some(IntOrString::Int(min)), "{members}");
            assert_eq!(spec.max_unavailable, None);
        }
    }

    #[test]
    fn network_policy_opens_the_peer_port_only_to_the_clusters_pods() {
        let np = json(&network_policy(&cluster()));
        assert_eq!(np["spec"]["policyTypes"], serde_json::json!(["Ingress"]));
        let rules = np["spec"]["ingress"].as_array().expect("ingress rules");
        assert_eq!(rules.len(), 2);
        assert_eq!(
            rules[0]["ports"],
            serde_json::json!([{"port": 7101, "protocol": "TCP"}])
        );
        assert_eq!(
            rules[0]["from"],
            serde_json::json!([{"podSelector": {"matchLabels": {
                "app.kubernetes.io/instance": "demo", "app.kubernetes.io/name": "raftkv"}}}])
        );
        // The open rule lists no peer port, and no other rule mentions it.
        assert_eq!(rules[1].get("from"), None);
        assert_eq!(
            rules[1]["ports"],
            serde_json::json!([{"port": 7001, "protocol": "TCP"}, {"port": 9100, "protocol": "TCP"}])
        );
    }

    #[test]
    fn node_args_freeze_the_initial_size_and_use_the_uid_as_token() {
        let mut c = cluster();
        c.spec.replicas = 5; // scaled up since creation: the flag does not follow
        c.spec.tuning = Tuning {
            tick_millis: 50,
            election_ticks: 20,
            snapshot_entries: 5000,
        };
        assert_eq!(
            node_args(&c),
            [
                "--discovery=dns:demo-peers.ns.svc.cluster.local",
                "--initial-cluster-size=3",
                "--initial-cluster-token=0b6f5a6e-uid",
                "--listen-client=0.0.0.0:7001",
                "--listen-peer=0.0.0.0:7101",
                "--listen-metrics=0.0.0.0:9100",
                "--data-dir=/var/lib/raftkv",
                "--tick=50ms",
                "--election-ticks=20",
                "--snapshot-entries=5000",
                "--shutdown-timeout=10s",
            ]
        );
    }

    #[test]
    fn statefulset_is_parallel_on_delete_with_claims_and_retention() {
        let mut c = cluster();
        c.spec.volume_retention = VolumeRetention {
            when_scaled: RetentionPolicy::Retain,
            when_deleted: RetentionPolicy::Delete,
        };
        let s = json(&statefulset(&c, 4));
        let spec = &s["spec"];
        assert_eq!(spec["replicas"], 4);
        assert_eq!(spec["serviceName"], "demo-peers");
        assert_eq!(spec["podManagementPolicy"], "Parallel");
        assert_eq!(
            spec["updateStrategy"],
            serde_json::json!({"type": "OnDelete"})
        );
        assert_eq!(
            spec["persistentVolumeClaimRetentionPolicy"],
            serde_json::json!({"whenScaled": "Retain", "whenDeleted": "Delete"})
        );
        let claim = &spec["volumeClaimTemplates"][0];
        assert_eq!(claim["metadata"]["name"], "data");
        assert_eq!(
            claim["spec"]["accessModes"],
            serde_json::json!(["ReadWriteOnce"])
        );
        assert_eq!(claim["spec"]["storageClassName"], "fast");
        assert_eq!(claim["spec"]["resources"]["requests"]["storage"], "1Gi");
        // The selector is a subset of the template's labels (the API server insists).
        let template_labels = spec["template"]["metadata"]["labels"]
            .as_object()
            .expect("labels");
        for (k, v) in spec["selector"]["matchLabels"]
            .as_object()
            .expect("selector")
        {
            assert_eq!(template_labels.get(k), Some(v), "{k}");
        }
        // The template never carries the role label: moving it must not change the revision.
        assert!(!template_labels.contains_key(ROLE_LABEL));
    }

    #[test]
    fn pod_probes_grace_period_and_security() {
        let s = json(&statefulset(&cluster(), 3));
        let pod = &s["spec"]["template"]["spec"];
        assert_eq!(pod["terminationGracePeriodSeconds"], 30);
        let k = &pod["containers"][0];
        assert_eq!(k["name"], "kvnode");
        assert_eq!(k["image"], "raftkv/kvnode:0.1.0");
        assert_eq!(k["imagePullPolicy"], "IfNotPresent");
        // Readiness: the overall gRPC health status on the client port.
        assert_eq!(
            k["readinessProbe"]["grpc"],
            serde_json::json!({"port": 7001})
        );
        // Liveness: independent of leadership (TCP), and never the gRPC health status.
        assert_eq!(
            k["livenessProbe"]["tcpSocket"],
            serde_json::json!({"port": 7001})
        );
        assert_eq!(k["livenessProbe"].get("grpc"), None);
        assert_eq!(k["volumeMounts"][0]["mountPath"], "/var/lib/raftkv");
        assert_eq!(k["securityContext"]["readOnlyRootFilesystem"], true);
        assert_eq!(k["securityContext"]["runAsNonRoot"], true);
        assert_eq!(pod["securityContext"]["fsGroup"], 65532);
        let ports: Vec<_> = k["ports"]
            .as_array()
            .expect("ports")
            .iter()
            .map(|p| (p["name"].clone(), p["containerPort"].clone()))
            .collect();
        assert_eq!(
            ports,
            [
                ("client".into(), 7001.into()),
                ("peer".into(), 7101.into()),
                ("metrics".into(), 9100.into())
            ]
        );
    }

    #[test]
    fn scheduling_defaults_to_preferred_anti_affinity_and_spec_overrides_it() {
        let s = json(&statefulset(&cluster(), 3));
        let pod = &s["spec"]["template"]["spec"];
        let term = &pod["affinity"]["podAntiAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"]
            [0];
        assert_eq!(term["weight"], 100);
        assert_eq!(
            term["podAffinityTerm"]["topologyKey"],
            "kubernetes.io/hostname"
        );
        assert_eq!(pod.get("nodeSelector"), None);

        let mut c = cluster();
        c.spec.affinity = Some(Affinity::default());
        c.spec.node_selector = BTreeMap::from([("disk".to_string(), "ssd".to_string())]);
        c.spec.priority_class_name = Some("critical".into());
        let s = json(&statefulset(&c, 3));
        let pod = &s["spec"]["template"]["spec"];
        assert_eq!(pod["affinity"], serde_json::json!({}));
        assert_eq!(pod["nodeSelector"], serde_json::json!({"disk": "ssd"}));
        assert_eq!(pod["priorityClassName"], "critical");
    }

    #[test]
    fn builders_are_deterministic() {
        assert_eq!(owned_objects(&cluster(), 3), owned_objects(&cluster(), 3));
        assert_eq!(
            cluster().selector_string(),
            "app.kubernetes.io/instance=demo,app.kubernetes.io/name=raftkv"
        );
        assert_eq!(
            cluster().pod_fqdn(2),
            "demo-2.demo-peers.ns.svc.cluster.local"
        );
    }

    #[test]
    fn cluster_needs_uid_namespace_and_initial_replicas() {
        let mut kvc = KvCluster::new("demo", spec());
        assert!(Cluster::from_resource(&kvc).is_err());
        kvc.metadata.namespace = Some("ns".into());
        kvc.metadata.uid = Some("0b6f5a6e-uid".into());
        assert_eq!(
            Cluster::from_resource(&kvc),
            Err(NotBuildable::NoInitialReplicas)
        );
        kvc.status = Some(crate::crd::KvClusterStatus {
            initial_replicas: Some(3),
            ..Default::default()
        });
        assert_eq!(Cluster::from_resource(&kvc), Ok(cluster()));
    }
}
