//! Report: the KvCluster status the operator writes after every pass, built purely from the
//! previous status, the observed state and the plan (the caller passes the clock's reading).
//!
//! Conditions follow the Kubernetes conventions: `Available`, `Progressing` and `Degraded` are
//! always present with a reason and a message, and a condition's `lastTransitionTime` changes only
//! when its status does. `Warning` is present only while the member count is even.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

use crate::crd::{KvCluster, KvClusterStatus, LeaderStatus, MemberStatus, Phase};
use crate::planner::{Action, Health, MemberRole, MemberState, Observed, Plan};

fn i64_of(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// The status to write for `kvc` after planning `plan` from `o`, at time `now`.
pub fn build(
    kvc: &KvCluster,
    o: &Observed,
    plan: &Plan,
    selector: String,
    now: Time,
) -> KvClusterStatus {
    let prev = kvc.status.clone().unwrap_or_default();
    let name = kvc.metadata.name.clone().unwrap_or_default();
    let generation = kvc.metadata.generation;

    let initial_replicas = match plan.action {
        Action::InitializeStatus { initial_replicas } => Some(initial_replicas),
        _ => prev.initial_replicas,
    };
    let leader_status = plan.leader.as_ref().and_then(|l| {
        o.pods
            .iter()
            .find(|p| p.name == l.pod)
            .and_then(|p| p.status.as_ref())
    });
    let cluster_id = leader_status
        .map(|s| s.cluster_id.clone())
        .filter(|id| !id.is_empty())
        .or(prev.cluster_id.clone());
    let members = match leader_status {
        Some(s) => s
            .members
            .iter()
            .map(|m| {
                let pod = o.pods.iter().find(|p| p.node_id() == m.id);
                MemberStatus {
                    id: i64_of(m.id),
                    pod: pod.map_or_else(
                        || format!("{name}-{}", m.id.saturating_sub(1)),
                        |p| p.name.clone(),
                    ),
                    role: match m.role {
                        MemberRole::Voter => "voter",
                        MemberRole::Learner => "learner",
                    }
                    .into(),
                    state: pod
                        .and_then(|p| p.status.as_ref())
                        .map_or(MemberState::Unknown, |s| s.member_state)
                        .as_str()
                        .into(),
                    healthy: m.healthy,
                    match_index: i64_of(m.match_index),
                }
            })
            .collect(),
        // Without a leader nobody knows the configuration for sure: keep the last one seen.
        None => prev.members.clone(),
    };

    let mut conditions = vec![];
    let (available, available_reason, available_message) = match &plan.health {
        Health::Healthy => (
            true,
            "QuorumHealthy",
            "a leader and every voter are healthy".to_string(),
        ),
        Health::MemberDown(why) => (
            true,
            "QuorumHealthy",
            format!("a leader and a healthy quorum; {why}"),
        ),
        Health::NoQuorum(why) => (false, "NoQuorum", why.clone()),
        Health::Bootstrapping => (
            false,
            "Bootstrapping",
            "the initial members have not elected a leader yet".to_string(),
        ),
    };
    conditions.push(condition(
        &prev,
        "Available",
        available,
        available_reason,
        available_message,
        generation,
        &now,
    ));
    let progressing = plan.action != Action::None
        || matches!(
            plan.phase,
            Phase::Creating | Phase::Scaling | Phase::Upgrading
        );
    conditions.push(condition(
        &prev,
        "Progressing",
        progressing,
        if plan.phase == Phase::Paused {
            "Paused"
        } else if progressing {
            plan.phase.as_str()
        } else {
            "Idle"
        },
        plan.message.clone(),
        generation,
        &now,
    ));
    let (degraded, degraded_reason, degraded_message) = match &plan.health {
        Health::NoQuorum(why) => (
            true,
            "NoQuorum",
            format!(
                "the operator changes nothing until a leader and a healthy quorum exist: {why}"
            ),
        ),
        Health::MemberDown(why) => (true, "MemberDown", why.clone()),
        Health::Healthy | Health::Bootstrapping => (
            false,
            "AsExpected",
            "no member is known to be down".to_string(),
        ),
    };
    conditions.push(condition(
        &prev,
        "Degraded",
        degraded,
        degraded_reason,
        degraded_message,
        generation,
        &now,
    ));
    if kvc.spec.replicas % 2 == 0 {
        conditions.push(condition(
            &prev,
            "Warning",
            true,
            "EvenReplicas",
            format!(
                "{} members tolerate {} failure(s), no more than {}: an odd count is recommended",
                kvc.spec.replicas,
                (kvc.spec.replicas - 1) / 2,
                kvc.spec.replicas - 1
            ),
            generation,
            &now,
        ));
    }

    KvClusterStatus {
        phase: Some(plan.phase),
        replicas: o.statefulset.as_ref().map_or(0, |s| s.replicas),
        ready_replicas: i32::try_from(o.pods.iter().filter(|p| p.ready && !p.terminating).count())
            .unwrap_or(i32::MAX),
        selector: Some(selector),
        initial_replicas,
        cluster_id,
        leader: plan.leader.as_ref().map(|l| LeaderStatus {
            id: i64_of(l.id),
            pod: l.pod.clone(),
        }),
        term: plan.leader.as_ref().map(|l| i64_of(l.term)),
        members,
        current_action: Some(plan.message.clone()),
        observed_generation: generation,
        conditions,
    }
}

/// A condition, keeping the previous `lastTransitionTime` when its status did not change.
fn condition(
    prev: &KvClusterStatus,
    type_: &str,
    status: bool,
    reason: &str,
    message: String,
    generation: Option<i64>,
    now: &Time,
) -> Condition {
    let status = if status { "True" } else { "False" }.to_string();
    let last_transition_time = prev
        .conditions
        .iter()
        .find(|c| c.type_ == type_ && c.status == status)
        .map_or_else(|| now.clone(), |c| c.last_transition_time.clone());
    Condition {
        type_: type_.into(),
        status,
        reason: reason.into(),
        message,
        observed_generation: generation,
        last_transition_time,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::planner::{Leader, Member, NodeRole, NodeStatus, ObservedPod, ObservedStatefulSet};

    fn kvc(replicas: i32) -> KvCluster {
        let mut k = KvCluster::new(
            "demo",
            serde_json::from_value(serde_json::json!({
                "replicas": replicas, "image": "raftkv/kvnode:0.1.0", "storage": {"size": "1Gi"}
            }))
            .expect("spec"),
        );
        k.metadata.generation = Some(4);
        k
    }

    fn time(secs: i64) -> Time {
        Time(k8s_openapi::jiff::Timestamp::from_second(secs).expect("valid"))
    }

    fn observed() -> Observed {
        let members = vec![
            Member {
                id: 1,
                role: MemberRole::Voter,
                match_index: 9,
                healthy: true,
            },
            Member {
                id: 2,
                role: MemberRole::Learner,
                match_index: 3,
                healthy: true,
            },
        ];
        Observed {
            spec_replicas: 3,
            paused: false,
            initial_replicas: Some(3),
            cluster_id_known: true,
            settle_ms: 4000,
            statefulset: Some(ObservedStatefulSet {
                replicas: 2,
                update_revision: None,
            }),
            pods: vec![
                ObservedPod {
                    ordinal: 0,
                    name: "demo-0".into(),
                    revision: None,
                    terminating: false,
                    ready: true,
                    ready_for_ms: 60_000,
                    role_label: None,
                    status: Some(NodeStatus {
                        node_id: 1,
                        role: NodeRole::Leader,
                        term: 5,
                        leader_id: 1,
                        cluster_id: "c1".into(),
                        member_state: MemberState::Voter,
                        last_log_index: 9,
                        catch_up_index: 0,
                        members,
                    }),
                },
                ObservedPod {
                    ordinal: 1,
                    name: "demo-1".into(),
                    revision: None,
                    terminating: false,
                    ready: false,
                    ready_for_ms: 0,
                    role_label: None,
                    status: None,
                },
            ],
        }
    }

    fn plan(health: Health) -> Plan {
        Plan {
            action: Action::None,
            statefulset_replicas: Some(2),
            labels: vec![],
            leader: Some(Leader {
                id: 1,
                pod: "demo-0".into(),
                term: 5,
            }),
            health,
            phase: Phase::Scaling,
            message: "waiting for demo-1 to catch up as a learner".into(),
        }
    }

    #[test]
    fn status_reports_leader_members_and_counts() {
        let s = build(
            &kvc(3),
            &observed(),
            &plan(Health::Healthy),
            "sel".into(),
            time(100),
        );
        assert_eq!(s.phase, Some(Phase::Scaling));
        assert_eq!((s.replicas, s.ready_replicas), (2, 1));
        assert_eq!(
            s.leader,
            Some(LeaderStatus {
                id: 1,
                pod: "demo-0".into()
            })
        );
        assert_eq!(s.term, Some(5));
        assert_eq!(s.cluster_id.as_deref(), Some("c1"));
        assert_eq!(s.observed_generation, Some(4));
        assert_eq!(s.members.len(), 2);
        assert_eq!(s.members[1].pod, "demo-1");
        assert_eq!(s.members[1].role, "learner");
        assert_eq!(s.members[1].state, "Unknown");
        assert_eq!(s.members[0].state, "Voter");
        assert_eq!(
            s.current_action.as_deref(),
            Some("waiting for demo-1 to catch up as a learner")
        );
        let types: Vec<_> = s
            .conditions
            .iter()
            .map(|c| (c.type_.as_str(), c.status.as_str()))
            .collect();
        assert_eq!(
            types,
            [
                ("Available", "True"),
                ("Progressing", "True"),
                ("Degraded", "False")
            ]
        );
        assert!(
            s.conditions
                .iter()
                .all(|c| c.observed_generation == Some(4))
        );
    }

    #[test]
    fn transition_time_moves_only_when_status_changes() {
        let mut k = kvc(3);
        let first = build(
            &k,
            &observed(),
            &plan(Health::Healthy),
            "sel".into(),
            time(100),
        );
        k.status = Some(first);
        let same = build(
            &k,
            &observed(),
            &plan(Health::MemberDown("node 2 is down".into())),
            "sel".into(),
            time(200),
        );
        let get = |s: &KvClusterStatus, t: &str| {
            s.conditions
                .iter()
                .find(|c| c.type_ == t)
                .cloned()
                .expect("condition")
        };
        assert_eq!(get(&same, "Available").last_transition_time, time(100));
        assert_eq!(get(&same, "Degraded").status, "True");
        assert_eq!(get(&same, "Degraded").last_transition_time, time(200));
        assert_eq!(get(&same, "Degraded").reason, "MemberDown");
    }

    #[test]
    fn even_replicas_carry_a_warning_and_no_quorum_is_degraded() {
        let mut p = plan(Health::NoQuorum("1 of 3 voters are healthy".into()));
        p.leader = None;
        p.phase = Phase::Degraded;
        let mut k = kvc(4);
        k.status = Some(KvClusterStatus {
            initial_replicas: Some(3),
            ..Default::default()
        });
        let s = build(&k, &observed(), &p, "sel".into(), time(1));
        let get = |t: &str| {
            s.conditions
                .iter()
                .find(|c| c.type_ == t)
                .cloned()
                .expect("condition")
        };
        assert_eq!(get("Warning").reason, "EvenReplicas");
        assert_eq!(get("Available").status, "False");
        assert_eq!(get("Degraded").reason, "NoQuorum");
        assert_eq!(s.leader, None);
        assert_eq!(s.initial_replicas, Some(3));
        assert!(s.members.is_empty());
    }

    #[test]
    fn initialize_status_freezes_initial_replicas() {
        let mut p = plan(Health::Bootstrapping);
        p.action = Action::InitializeStatus {
            initial_replicas: 5,
        };
        let s = build(&kvc(5), &observed(), &p, "sel".into(), time(1));
        assert_eq!(s.initial_replicas, Some(5));
    }
}
