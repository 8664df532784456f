//! The planner as a table: one observed state per row, the one action (and phase, and labels) it
//! must produce. Every scenario DESIGN §7 and issue 10 list is a row or a sequence of rows.
//!
//! Replay one scenario with its full observed state and plan printed:
//! `PLANNER_SCENARIO=scale-down-leader-last cargo test -p raftkv-operator --test planner -- --nocapture`.
//! A state logged by the operator replays with `kv-operator plan -f observed.json`.

use raftkv_operator::crd::Phase;
use raftkv_operator::planner::{
    Action, Health, LabelChange, Member, MemberRole, MemberState, NodeRole, NodeStatus, Observed,
    ObservedPod, ObservedStatefulSet, Plan, plan,
};

fn voter(id: u64, healthy: bool) -> Member {
    Member {
        id,
        role: MemberRole::Voter,
        match_index: 100,
        healthy,
    }
}

fn node(id: u64, role: NodeRole, term: u64, leader_id: u64, members: Vec<Member>) -> NodeStatus {
    NodeStatus {
        node_id: id,
        role,
        term,
        leader_id,
        cluster_id: "c1".into(),
        member_state: MemberState::Voter,
        last_log_index: 100,
        catch_up_index: 0,
        members,
    }
}

/// A healthy cluster of `n` voters, all at revision r1, `leader` (an ordinal) leading at term 2
/// and labelled as such.
fn healthy(n: u32, leader: u32) -> Observed {
    let members: Vec<Member> = (1..=u64::from(n)).map(|id| voter(id, true)).collect();
    let pods = (0..n)
        .map(|ordinal| {
            let id = u64::from(ordinal) + 1;
            let is_leader = ordinal == leader;
            ObservedPod {
                ordinal,
                name: format!("demo-{ordinal}"),
                revision: Some("r1".into()),
                terminating: false,
                ready: true,
                ready_for_ms: 60_000,
                role_label: Some(if is_leader { "leader" } else { "follower" }.into()),
                status: Some(node(
                    id,
                    if is_leader {
                        NodeRole::Leader
                    } else {
                        NodeRole::Follower
                    },
                    2,
                    u64::from(leader) + 1,
                    members.clone(),
                )),
            }
        })
        .collect();
    Observed {
        spec_replicas: i32::try_from(n).expect("small"),
        paused: false,
        initial_replicas: Some(3),
        cluster_id_known: true,
        settle_ms: 4000,
        statefulset: Some(ObservedStatefulSet {
            replicas: i32::try_from(n).expect("small"),
            update_revision: Some("r1".into()),
        }),
        pods,
    }
}

fn pod(o: &mut Observed, ordinal: u32) -> &mut ObservedPod {
    o.pods
        .iter_mut()
        .find(|p| p.ordinal == ordinal)
        .expect("pod in fixture")
}

fn status(o: &mut Observed, ordinal: u32) -> &mut NodeStatus {
    pod(o, ordinal).status.as_mut().expect("status in fixture")
}

/// Sets every pod's view of the configuration (the leader's is the one that counts).
fn set_config(o: &mut Observed, members: &[Member]) {
    for p in &mut o.pods {
        if let Some(s) = p.status.as_mut() {
            s.members = members.to_vec();
        }
    }
}

/// Adds a pod `ordinal` that is not a member yet, in `state`.
fn add_new_pod(o: &mut Observed, ordinal: u32, state: MemberState) {
    let leader_id = o.pods[0].status.as_ref().map_or(0, |s| s.leader_id);
    let mut s = node(
        u64::from(ordinal) + 1,
        NodeRole::Follower,
        2,
        leader_id,
        vec![],
    );
    s.member_state = state;
    s.last_log_index = 0;
    o.pods.push(ObservedPod {
        ordinal,
        name: format!("demo-{ordinal}"),
        revision: Some("r1".into()),
        terminating: false,
        ready: false,
        ready_for_ms: 0,
        role_label: None,
        status: Some(s),
    });
}

fn follower(pod: &str) -> LabelChange {
    LabelChange {
        pod: pod.into(),
        role: "follower".into(),
    }
}

fn leader(pod: &str) -> LabelChange {
    LabelChange {
        pod: pod.into(),
        role: "leader".into(),
    }
}

struct Row {
    name: &'static str,
    observed: Observed,
    action: Action,
    phase: Phase,
    /// Label changes, in order; None when the row does not care.
    labels: Option<Vec<LabelChange>>,
    /// A phrase the status sentence must contain.
    message: &'static str,
}

fn rows() -> Vec<Row> {
    let mut rows = vec![];

    // --- Fresh create: freeze the initial size, create the objects, wait for the first leader.
    let mut o = healthy(3, 0);
    o.initial_replicas = None;
    o.statefulset = None;
    o.pods.clear();
    o.cluster_id_known = false;
    rows.push(Row {
        name: "create-freezes-initial-replicas",
        observed: o.clone(),
        action: Action::InitializeStatus {
            initial_replicas: 3,
        },
        phase: Phase::Creating,
        labels: Some(vec![]),
        message: "recording 3 initial members",
    });
    o.initial_replicas = Some(3);
    o.spec_replicas = 5; // scaled before the first objects existed: still created at 3
    rows.push(Row {
        name: "create-applies-objects-at-initial-size",
        observed: o.clone(),
        action: Action::CreateCluster { replicas: 3 },
        phase: Phase::Creating,
        labels: Some(vec![]),
        message: "creating the cluster with 3 members",
    });
    let mut o = healthy(3, 0);
    o.cluster_id_known = false;
    for ordinal in 0..3 {
        let p = pod(&mut o, ordinal);
        p.ready = false;
        p.role_label = None;
        let s = status(&mut o, ordinal);
        s.role = NodeRole::Follower;
        s.leader_id = 0;
        s.term = 0;
        s.member_state = MemberState::Fresh;
        s.members.clear();
    }
    rows.push(Row {
        name: "create-waits-for-first-leader",
        observed: o,
        action: Action::None,
        phase: Phase::Creating,
        labels: Some(vec![
            follower("demo-0"),
            follower("demo-1"),
            follower("demo-2"),
        ]),
        message: "elect a leader",
    });

    rows.push(Row {
        name: "steady",
        observed: healthy(3, 0),
        action: Action::None,
        phase: Phase::Available,
        labels: Some(vec![]),
        message: "3 members, demo-0 leads",
    });

    // --- A pod is lost: the StatefulSet recreates it; the operator deletes or removes nothing.
    let mut o = healthy(3, 0);
    o.pods.retain(|p| p.ordinal != 1);
    set_config(&mut o, &[voter(1, true), voter(2, false), voter(3, true)]);
    rows.push(Row {
        name: "pod-lost",
        observed: o,
        action: Action::None,
        phase: Phase::Degraded,
        labels: Some(vec![]),
        message: "the pod of ordinal 1 does not exist yet",
    });

    // --- The leader's pod was deleted and another member won the election: the label moves,
    // removal first. The old pod is back, following.
    let mut o = healthy(3, 0);
    set_config(&mut o, &[voter(1, true), voter(2, true), voter(3, true)]);
    for ordinal in 0..3 {
        let s = status(&mut o, ordinal);
        s.term = 3;
        s.leader_id = 2;
        s.role = if ordinal == 1 {
            NodeRole::Leader
        } else {
            NodeRole::Follower
        };
    }
    rows.push(Row {
        name: "leader-pod-deleted-label-moves",
        observed: o,
        action: Action::None,
        phase: Phase::Available,
        labels: Some(vec![follower("demo-0"), leader("demo-1")]),
        message: "demo-1 leads",
    });
    // ... and while the survivors have not elected anyone yet: hands off, label removed.
    let mut o = healthy(3, 0);
    o.pods.retain(|p| p.ordinal != 0);
    o.pods.push(ObservedPod {
        ordinal: 0,
        name: "demo-0".into(),
        revision: Some("r1".into()),
        terminating: true,
        ready: false,
        ready_for_ms: 0,
        role_label: Some("leader".into()),
        status: None,
    });
    for ordinal in 1..3 {
        let s = status(&mut o, ordinal);
        s.leader_id = 0;
        s.role = NodeRole::PreCandidate;
    }
    rows.push(Row {
        name: "leader-pod-deleted-no-leader-yet",
        observed: o,
        action: Action::None,
        phase: Phase::Degraded,
        labels: Some(vec![follower("demo-0")]),
        message: "hands off",
    });

    // --- Two pods claim leadership at different terms: the higher term wins the label, the
    // stale one loses it first.
    let mut o = healthy(3, 0);
    for ordinal in 1..3 {
        let s = status(&mut o, ordinal);
        s.term = 3;
        s.leader_id = 3;
    }
    status(&mut o, 2).role = NodeRole::Leader;
    rows.push(Row {
        name: "two-leaders-higher-term-wins",
        observed: o.clone(),
        action: Action::None,
        phase: Phase::Available,
        labels: Some(vec![follower("demo-0"), leader("demo-2")]),
        message: "demo-2 leads",
    });
    // At the same term nobody gets the label (Raft never allows this; the fence must hold).
    status(&mut o, 0).term = 3;
    rows.push(Row {
        name: "two-leaders-same-term-nobody",
        observed: o,
        action: Action::None,
        phase: Phase::Degraded,
        labels: Some(vec![follower("demo-0")]),
        message: "hands off",
    });

    // --- Scale up 3 -> 5, one member at a time.
    let mut o = healthy(3, 0);
    o.spec_replicas = 5;
    rows.push(Row {
        name: "scale-up-grows-statefulset",
        observed: o.clone(),
        action: Action::ScaleStatefulSet { from: 3, to: 4 },
        phase: Phase::Scaling,
        labels: Some(vec![]),
        message: "growing the StatefulSet to 4",
    });
    o.statefulset = Some(ObservedStatefulSet {
        replicas: 4,
        update_revision: Some("r1".into()),
    });
    add_new_pod(&mut o, 3, MemberState::Fresh);
    rows.push(Row {
        name: "scale-up-waits-for-new-pod",
        observed: o.clone(),
        action: Action::None,
        phase: Phase::Scaling,
        labels: Some(vec![follower("demo-3")]),
        message: "demo-3",
    });
    status(&mut o, 3).member_state = MemberState::WaitingToBeAdded;
    rows.push(Row {
        name: "scale-up-adds-learner",
        observed: o.clone(),
        action: Action::AddLearner {
            node_id: 4,
            ordinal: 3,
        },
        phase: Phase::Scaling,
        labels: None,
        message: "adding demo-3 as a learner",
    });
    let mut with_learner: Vec<Member> = (1..=3).map(|id| voter(id, true)).collect();
    with_learner.push(Member {
        id: 4,
        role: MemberRole::Learner,
        match_index: 40,
        healthy: true,
    });
    set_config(&mut o, &with_learner);
    status(&mut o, 3).member_state = MemberState::Learner;
    rows.push(Row {
        name: "scale-up-waits-for-promotion",
        observed: o.clone(),
        action: Action::None,
        phase: Phase::Scaling,
        labels: None,
        message: "demo-3 to catch up as a learner",
    });
    set_config(
        &mut o,
        &(1..=4).map(|id| voter(id, true)).collect::<Vec<_>>(),
    );
    status(&mut o, 3).member_state = MemberState::Voter;
    pod(&mut o, 3).ready = true;
    pod(&mut o, 3).ready_for_ms = 60_000;
    rows.push(Row {
        name: "scale-up-next-pod",
        observed: o,
        action: Action::ScaleStatefulSet { from: 4, to: 5 },
        phase: Phase::Scaling,
        labels: None,
        message: "growing the StatefulSet to 5",
    });
    // A member is down: no new voter joins a cluster that is short.
    let mut o = healthy(3, 0);
    o.spec_replicas = 5;
    set_config(&mut o, &[voter(1, true), voter(2, true), voter(3, false)]);
    rows.push(Row {
        name: "scale-up-waits-while-member-down",
        observed: o,
        action: Action::None,
        phase: Phase::Scaling,
        labels: Some(vec![]),
        message: "waiting to grow",
    });

    // --- Scale down 5 -> 3 when the highest ordinal leads: transfer, remove, shrink.
    let mut o = healthy(5, 4);
    o.spec_replicas = 3;
    rows.push(Row {
        name: "scale-down-leader-last",
        observed: o.clone(),
        action: Action::TransferLeader { from: 5 },
        phase: Phase::Scaling,
        labels: Some(vec![]),
        message: "moving leadership away from demo-4",
    });
    let mut o = healthy(5, 0);
    o.spec_replicas = 3;
    rows.push(Row {
        name: "scale-down-removes-member",
        observed: o.clone(),
        action: Action::RemoveMember { node_id: 5 },
        phase: Phase::Scaling,
        labels: Some(vec![]),
        message: "removing demo-4",
    });
    set_config(
        &mut o,
        &(1..=4).map(|id| voter(id, true)).collect::<Vec<_>>(),
    );
    status(&mut o, 4).member_state = MemberState::Removed;
    rows.push(Row {
        name: "scale-down-shrinks-after-removal",
        observed: o.clone(),
        action: Action::ScaleStatefulSet { from: 5, to: 4 },
        phase: Phase::Scaling,
        labels: None,
        message: "shrinking the StatefulSet to 4",
    });
    // Removing node 5 would leave voters 1-4 with only 1 and 2 healthy: no quorum of 4.
    let mut o = healthy(5, 0);
    o.spec_replicas = 4;
    set_config(
        &mut o,
        &[
            voter(1, true),
            voter(2, true),
            voter(3, false),
            voter(4, false),
            voter(5, true),
        ],
    );
    rows.push(Row {
        name: "scale-down-blocked-by-quorum",
        observed: o,
        action: Action::None,
        phase: Phase::Scaling,
        labels: Some(vec![]),
        message: "would not have a healthy quorum",
    });

    // --- Image change: followers first (highest ordinal first), the leader last after a transfer.
    let mut o = healthy(3, 0);
    if let Some(s) = o.statefulset.as_mut() {
        s.update_revision = Some("r2".into());
    }
    rows.push(Row {
        name: "image-change-replaces-a-follower",
        observed: o.clone(),
        action: Action::DeletePod {
            pod: "demo-2".into(),
        },
        phase: Phase::Upgrading,
        labels: Some(vec![]),
        message: "replacing demo-2",
    });
    pod(&mut o, 2).revision = Some("r2".into());
    pod(&mut o, 2).ready = false;
    pod(&mut o, 2).ready_for_ms = 0;
    rows.push(Row {
        name: "image-change-waits-for-replacement",
        observed: o.clone(),
        action: Action::None,
        phase: Phase::Upgrading,
        labels: None,
        message: "demo-2 is not healthy and ready",
    });
    // Ready again, but not for long enough: the leader may still remember the old process.
    pod(&mut o, 2).ready = true;
    pod(&mut o, 2).ready_for_ms = 1500;
    rows.push(Row {
        name: "image-change-waits-for-replacement-to-settle",
        observed: o.clone(),
        action: Action::None,
        phase: Phase::Upgrading,
        labels: None,
        message: "demo-2 has been ready for 1500 ms, less than 4000 ms",
    });
    pod(&mut o, 2).ready_for_ms = 4000;
    pod(&mut o, 1).revision = Some("r2".into());
    rows.push(Row {
        name: "image-change-leader-transfers-last",
        observed: o.clone(),
        action: Action::TransferLeader { from: 1 },
        phase: Phase::Upgrading,
        labels: None,
        message: "moving leadership away from demo-0 before replacing it",
    });
    for ordinal in 0..3 {
        let s = status(&mut o, ordinal);
        s.term = 3;
        s.leader_id = 2;
        s.role = if ordinal == 1 {
            NodeRole::Leader
        } else {
            NodeRole::Follower
        };
    }
    rows.push(Row {
        name: "image-change-old-leader-replaced",
        observed: o,
        action: Action::DeletePod {
            pod: "demo-0".into(),
        },
        phase: Phase::Upgrading,
        labels: Some(vec![follower("demo-0"), leader("demo-1")]),
        message: "replacing demo-0",
    });

    // --- Paused: no action even with work to do; labels still follow the leader.
    let mut o = healthy(3, 0);
    o.paused = true;
    o.spec_replicas = 5;
    if let Some(s) = o.statefulset.as_mut() {
        s.update_revision = Some("r2".into());
    }
    pod(&mut o, 0).role_label = None;
    rows.push(Row {
        name: "paused",
        observed: o,
        action: Action::None,
        phase: Phase::Paused,
        labels: Some(vec![leader("demo-0")]),
        message: "paused",
    });

    // --- Quorum lost: nothing but status, even with a scale request and a stale pod.
    let mut o = healthy(3, 0);
    o.spec_replicas = 1;
    if let Some(s) = o.statefulset.as_mut() {
        s.update_revision = Some("r2".into());
    }
    set_config(&mut o, &[voter(1, true), voter(2, false), voter(3, false)]);
    rows.push(Row {
        name: "quorum-lost",
        observed: o,
        action: Action::None,
        phase: Phase::Degraded,
        labels: Some(vec![]),
        message: "1 of 3 voters are healthy",
    });

    // --- A member comes back with an empty volume: it catches up as the same member (wait), or,
    // if its id left the configuration, it is added back as a learner.
    let mut o = healthy(3, 0);
    {
        let s = status(&mut o, 1);
        s.member_state = MemberState::CatchingUp;
        s.last_log_index = 40;
        s.catch_up_index = 100;
    }
    pod(&mut o, 1).ready = false;
    pod(&mut o, 1).ready_for_ms = 0;
    rows.push(Row {
        name: "empty-volume-catches-up",
        observed: o,
        action: Action::None,
        phase: Phase::Scaling,
        labels: Some(vec![]),
        message: "demo-1 to catch up from an empty volume (index 40 of 100)",
    });
    let mut o = healthy(3, 0);
    set_config(&mut o, &[voter(1, true), voter(3, true)]);
    o.pods.retain(|p| p.ordinal != 1);
    add_new_pod(&mut o, 1, MemberState::WaitingToBeAdded);
    rows.push(Row {
        name: "empty-volume-readded-as-learner",
        observed: o,
        action: Action::AddLearner {
            node_id: 2,
            ordinal: 1,
        },
        phase: Phase::Scaling,
        labels: Some(vec![follower("demo-1")]),
        message: "adding demo-1",
    });

    // --- A removed member back on its retained volume (scaled down and up again with
    // whenScaled: Retain): its own log still makes it a voter of the old configuration.
    let mut o = healthy(3, 0);
    o.spec_replicas = 4;
    o.statefulset = Some(ObservedStatefulSet {
        replicas: 4,
        update_revision: Some("r1".into()),
    });
    add_new_pod(&mut o, 3, MemberState::Voter);
    status(&mut o, 3).members = (1..=4).map(|id| voter(id, true)).collect();
    status(&mut o, 3).leader_id = 0;
    status(&mut o, 3).last_log_index = 60;
    rows.push(Row {
        name: "removed-member-on-retained-volume-readded-as-learner",
        observed: o.clone(),
        action: Action::AddLearner {
            node_id: 4,
            ordinal: 3,
        },
        phase: Phase::Scaling,
        labels: None,
        message: "adding demo-3 as a learner",
    });
    status(&mut o, 3).member_state = MemberState::Removed;
    rows.push(Row {
        name: "removed-member-that-saw-its-removal-readded-as-learner",
        observed: o.clone(),
        action: Action::AddLearner {
            node_id: 4,
            ordinal: 3,
        },
        phase: Phase::Scaling,
        labels: None,
        message: "adding demo-3 as a learner",
    });
    // A volume from another cluster (another id) is never added.
    status(&mut o, 3).cluster_id = "another-cluster".into();
    rows.push(Row {
        name: "member-of-another-cluster-not-added",
        observed: o,
        action: Action::None,
        phase: Phase::Degraded,
        labels: None,
        message: "demo-3 is not a member",
    });

    rows
}

fn check(row: &Row) -> Result<Plan, String> {
    let got = plan(&row.observed);
    let mut errors = vec![];
    if got.action != row.action {
        errors.push(format!(
            "action: got {:?}, want {:?}",
            got.action, row.action
        ));
    }
    if let Action::ScaleStatefulSet { to, .. } = row.action
        && got.statefulset_replicas != Some(to)
    {
        errors.push(format!(
            "statefulset_replicas: got {:?}, want {to}",
            got.statefulset_replicas
        ));
    }
    if got.phase != row.phase {
        errors.push(format!("phase: got {:?}, want {:?}", got.phase, row.phase));
    }
    if let Some(labels) = &row.labels
        && &got.labels != labels
    {
        errors.push(format!("labels: got {:?}, want {labels:?}", got.labels));
    }
    if !got.message.contains(row.message) {
        errors.push(format!("message {:?} lacks {:?}", got.message, row.message));
    }
    if errors.is_empty() {
        Ok(got)
    } else {
        Err(errors.join("; "))
    }
}

#[test]
fn planner_table() {
    let only = std::env::var("PLANNER_SCENARIO").ok();
    let rows = rows();
    if let Some(name) = &only {
        assert!(
            rows.iter().any(|r| r.name == name),
            "no scenario named {name}"
        );
    }
    let mut failures = vec![];
    for row in rows
        .iter()
        .filter(|r| only.as_deref().is_none_or(|n| n == r.name))
    {
        let result = check(row);
        if only.is_some() {
            println!(
                "observed: {}",
                serde_json::to_string_pretty(&row.observed).unwrap_or_default()
            );
            println!("plan: {:#?}", plan(&row.observed));
        }
        if let Err(e) = result {
            failures.push(format!(
                "{}: {e}\n  replay: PLANNER_SCENARIO={} cargo test -p raftkv-operator --test planner -- --nocapture",
                row.name, row.name
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn settle_time_outlasts_the_leaders_memory_of_a_member() {
    // The leader calls a member healthy for up to one election timeout (< 2T) after its last
    // answer; the settle time must be longer than that.
    use raftkv_operator::planner::settle_ms;
    assert_eq!(settle_ms(100, 10), 4000);
    assert!(settle_ms(30, 10) > 2 * 30 * 10);
}

#[test]
fn scenario_names_are_unique() {
    let rows = rows();
    let mut names: Vec<_> = rows.iter().map(|r| r.name).collect();
    names.sort_unstable();
    names.dedup();
    assert_eq!(names.len(), rows.len());
}

/// The safety guard as a property over every row: an action that removes a member or deletes a
/// pod is planned only when a leader exists and every voter outside the change is accounted for.
#[test]
fn destructive_actions_only_with_a_healthy_leader() {
    for row in rows() {
        let got = plan(&row.observed);
        if matches!(
            got.action,
            Action::RemoveMember { .. } | Action::DeletePod { .. } | Action::TransferLeader { .. }
        ) {
            assert!(got.leader.is_some(), "{}: no leader", row.name);
            assert!(
                matches!(got.health, Health::Healthy | Health::MemberDown(_)),
                "{}: {:?}",
                row.name,
                got.health
            );
        }
        if matches!(got.action, Action::DeletePod { .. }) {
            assert_eq!(got.health, Health::Healthy, "{}", row.name);
        }
    }
}

#[test]
fn observed_state_round_trips_as_json_for_replay() {
    for row in rows() {
        let json = serde_json::to_string(&row.observed).expect("serializes");
        let back: Observed = serde_json::from_str(&json).expect("deserializes");
        assert_eq!(plan(&back), plan(&row.observed), "{}", row.name);
    }
}
