//! Observe: turns what the API server and the nodes said into the planner's [`Observed`].
//!
//! Pure conversions, so that they are tested without a cluster: the controller lists the
//! StatefulSet and the Pods, asks every pod's `Cluster.Status` (on its stable DNS name under the
//! headless Service), and hands the answers to [`observed`]. Unknown enum values from a newer
//! node map to `Unknown`-like values rather than failing the reconcile.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use raftkv_proto::v1 as pb;

use crate::crd::KvCluster;
use crate::planner::{
    Member, MemberRole, MemberState, NodeRole, NodeStatus, Observed, ObservedPod,
    ObservedStatefulSet, settle_ms,
};
use crate::resources::{REVISION_LABEL, ROLE_LABEL};

/// A node's `Cluster.Status` answer in the planner's terms.
pub fn node_status(r: &pb::StatusResponse) -> NodeStatus {
    let role = match pb::Role::try_from(r.role) {
        Ok(pb::Role::Leader) => NodeRole::Leader,
        Ok(pb::Role::Candidate) => NodeRole::Candidate,
        Ok(pb::Role::PreCandidate) => NodeRole::PreCandidate,
        // An unknown role never counts as leadership.
        Ok(pb::Role::Follower) | Err(_) => NodeRole::Follower,
    };
    let member_state = match pb::MemberState::try_from(r.member_state) {
        Ok(pb::MemberState::Loading) => MemberState::Loading,
        Ok(pb::MemberState::Fresh) => MemberState::Fresh,
        Ok(pb::MemberState::WaitingToBeAdded) => MemberState::WaitingToBeAdded,
        Ok(pb::MemberState::CatchingUp) => MemberState::CatchingUp,
        Ok(pb::MemberState::Learner) => MemberState::Learner,
        Ok(pb::MemberState::Voter) => MemberState::Voter,
        Ok(pb::MemberState::Removed) => MemberState::Removed,
        Ok(pb::MemberState::Unknown) | Err(_) => MemberState::Unknown,
    };
    let members = r
        .members
        .iter()
        .map(|m| Member {
            id: m.id,
            role: match pb::MemberRole::try_from(m.role) {
                Ok(pb::MemberRole::Voter) => MemberRole::Voter,
                // An unknown role is not counted as a vote.
                Ok(pb::MemberRole::Learner) | Err(_) => MemberRole::Learner,
            },
            match_index: m.match_index,
            healthy: m.healthy,
        })
        .collect();
    NodeStatus {
        node_id: r.node_id,
        role,
        term: r.term,
        leader_id: r.leader_id,
        cluster_id: r.cluster_id.clone(),
        member_state,
        last_log_index: r.last_log_index,
        catch_up_index: r.catch_up_index,
        members,
    }
}

/// The ordinal of a pod of StatefulSet `set` (`demo-2` -> 2), None for a pod of another set.
pub fn ordinal(pod_name: &str, set: &str) -> Option<u32> {
    let rest = pod_name.strip_prefix(set)?.strip_prefix('-')?;
    if rest.is_empty() || !rest.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    rest.parse().ok()
}

/// How long a pod has been ready at `now`, in milliseconds: None when its Ready condition is not
/// true, 0 when it is but has no transition time.
fn ready_for_ms(pod: &Pod, now: &Time) -> Option<u64> {
    let ready = pod
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .and_then(|c| c.iter().find(|c| c.type_ == "Ready" && c.status == "True"))?;
    let since = ready.last_transition_time.as_ref()?;
    let ms = now.0.duration_since(since.0).as_millis();
    Some(u64::try_from(ms.max(0)).unwrap_or(0))
}

/// Assembles the planner's input at time `now`. `statuses` maps pod names to their answers; a
/// pod missing from it did not answer.
pub fn observed(
    kvc: &KvCluster,
    statefulset: Option<&StatefulSet>,
    pods: &[Pod],
    statuses: &BTreeMap<String, pb::StatusResponse>,
    now: &Time,
) -> Observed {
    let set = kvc.metadata.name.clone().unwrap_or_default();
    let mut observed_pods: Vec<ObservedPod> = pods
        .iter()
        .filter_map(|pod| {
            let name = pod.metadata.name.clone()?;
            let ordinal = ordinal(&name, &set)?;
            let labels = pod.metadata.labels.as_ref();
            let ready_for = ready_for_ms(pod, now);
            Some(ObservedPod {
                ordinal,
                revision: labels.and_then(|l| l.get(REVISION_LABEL)).cloned(),
                terminating: pod.metadata.deletion_timestamp.is_some(),
                ready: ready_for.is_some(),
                ready_for_ms: ready_for.unwrap_or(0),
                role_label: labels.and_then(|l| l.get(ROLE_LABEL)).cloned(),
                status: statuses.get(&name).map(node_status),
                name,
            })
        })
        .collect();
    observed_pods.sort_by_key(|p| p.ordinal);
    let status = kvc.status.as_ref();
    Observed {
        spec_replicas: kvc.spec.replicas,
        paused: kvc.spec.paused,
        initial_replicas: status.and_then(|s| s.initial_replicas),
        cluster_id_known: status.is_some_and(|s| s.cluster_id.is_some()),
        settle_ms: settle_ms(
            u64::try_from(kvc.spec.tuning.tick_millis).unwrap_or(100),
            u64::try_from(kvc.spec.tuning.election_ticks).unwrap_or(10),
        ),
        statefulset: statefulset.map(|s| ObservedStatefulSet {
            replicas: s.spec.as_ref().and_then(|s| s.replicas).unwrap_or(0),
            update_revision: s.status.as_ref().and_then(|s| s.update_revision.clone()),
        }),
        pods: observed_pods,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{PodCondition, PodStatus};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    #[test]
    fn ordinals_only_for_this_sets_pods() {
        assert_eq!(ordinal("demo-0", "demo"), Some(0));
        assert_eq!(ordinal("demo-12", "demo"), Some(12));
        assert_eq!(ordinal("demo-x-1", "demo"), None);
        assert_eq!(ordinal("demo-", "demo"), None);
        assert_eq!(ordinal("demo2-1", "demo"), None);
        assert_eq!(ordinal("other-1", "demo"), None);
        assert_eq!(ordinal("demo-+1", "demo"), None);
    }

    #[test]
    fn status_conversion_maps_every_enum_and_treats_unknown_values_safely() {
        let r = pb::StatusResponse {
            node_id: 2,
            role: pb::Role::Leader.into(),
            term: 7,
            leader_id: 2,
            cluster_id: "c1".into(),
            member_state: pb::MemberState::CatchingUp.into(),
            last_log_index: 40,
            catch_up_index: 90,
            members: vec![
                pb::Member {
                    id: 1,
                    role: pb::MemberRole::Voter.into(),
                    match_index: 5,
                    healthy: true,
                    ..Default::default()
                },
                pb::Member {
                    id: 3,
                    role: 99,
                    ..Default::default()
                },
            ],
            ..Default::default()
        };
        let s = node_status(&r);
        assert_eq!(s.role, NodeRole::Leader);
        assert_eq!((s.term, s.leader_id, s.node_id), (7, 2, 2));
        assert_eq!(s.member_state, MemberState::CatchingUp);
        assert_eq!((s.last_log_index, s.catch_up_index), (40, 90));
        assert_eq!(s.members[0].role, MemberRole::Voter);
        assert_eq!(s.members[1].role, MemberRole::Learner);
        let unknown = node_status(&pb::StatusResponse {
            role: 42,
            member_state: 42,
            ..Default::default()
        });
        assert_eq!(unknown.role, NodeRole::Follower);
        assert_eq!(unknown.member_state, MemberState::Unknown);
    }

    #[test]
    fn observed_collects_pods_in_ordinal_order_with_labels_and_answers() {
        let mut kvc = KvCluster::new(
            "demo",
            serde_json::from_value(serde_json::json!({
                "replicas": 3, "image": "raftkv/kvnode:0.1.0", "storage": {"size": "1Gi"}
            }))
            .expect("spec"),
        );
        kvc.status = Some(crate::crd::KvClusterStatus {
            initial_replicas: Some(3),
            ..Default::default()
        });
        let at = |secs: i64| Time(k8s_openapi::jiff::Timestamp::from_second(secs).expect("time"));
        let pod = |name: &str, ready: bool, labels: &[(&str, &str)]| Pod {
            metadata: ObjectMeta {
                name: Some(name.into()),
                labels: Some(
                    labels
                        .iter()
                        .map(|(k, v)| (k.to_string(), v.to_string()))
                        .collect(),
                ),
                ..Default::default()
            },
            status: Some(PodStatus {
                conditions: Some(vec![PodCondition {
                    type_: "Ready".into(),
                    status: if ready { "True" } else { "False" }.into(),
                    last_transition_time: Some(at(1000)),
                    ..Default::default()
                }]),
                ..Default::default()
            }),
            ..Default::default()
        };
        let pods = [
            pod("demo-1", false, &[(REVISION_LABEL, "r1")]),
            pod(
                "demo-0",
                true,
                &[(REVISION_LABEL, "r1"), (ROLE_LABEL, "leader")],
            ),
            pod("unrelated-0", true, &[]),
        ];
        let statuses = BTreeMap::from([(
            "demo-0".to_string(),
            pb::StatusResponse {
                node_id: 1,
                role: pb::Role::Leader.into(),
                term: 2,
                ..Default::default()
            },
        )]);
        let o = observed(&kvc, None, &pods, &statuses, &at(1003));
        assert_eq!(o.initial_replicas, Some(3));
        assert!(!o.cluster_id_known);
        assert_eq!(o.statefulset, None);
        let names: Vec<_> = o.pods.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(names, ["demo-0", "demo-1"]);
        assert!(o.pods[0].ready && !o.pods[1].ready);
        assert_eq!((o.pods[0].ready_for_ms, o.pods[1].ready_for_ms), (3000, 0));
        // The default tuning (100 ms ticks, 10 election ticks): 4 s to settle.
        assert_eq!(o.settle_ms, 4000);
        assert_eq!(o.pods[0].role_label.as_deref(), Some("leader"));
        assert_eq!(o.pods[0].status.as_ref().map(|s| s.term), Some(2));
        assert_eq!(o.pods[1].status, None);
        assert_eq!(o.pods[1].revision.as_deref(), Some("r1"));
    }
}
