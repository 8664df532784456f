//! The planner: a pure function from what the operator observed of one KvCluster to at most one
//! next action, plus the leader labels and what to report.
//!
//! It has no client and no clock, so every decision is a row in a table test, and any observed
//! state the operator logs (as JSON) can be replayed with `kv-operator plan -f observed.json`.
//!
//! The rules, in the order they are checked (DESIGN §7):
//!
//! 1. Freeze `status.initialReplicas` before anything else: it is every node's
//!    `--initial-cluster-size` for the cluster's life.
//! 2. Create the owned objects with the initial members.
//! 3. Leader labels are computed on every pass, paused or not: only a pod whose own status says
//!    leader at the highest term any pod reports is the leader; every other pod is a follower,
//!    and the old leader loses its label before the new one gets it.
//! 4. `spec.paused`: nothing else.
//! 5. Safety guard: act only while a leader exists and a quorum of voters is healthy. Otherwise
//!    report and do nothing (a cluster that never had a leader is still Creating).
//! 6. Wait while any member is a learner or is catching up with an empty log.
//! 7. Add a pod that waits to be added (a new pod, or a member that came back with an empty volume
//!    after its id left the configuration) as a learner; the leader promotes it.
//! 8. Scale down: transfer leadership away from the highest ordinal if it leads, remove it from
//!    the configuration, then shrink the StatefulSet by one.
//! 9. Scale up: grow the StatefulSet by one once every existing pod is a voter.
//! 10. Remove members that have no pod slot (someone shrank the StatefulSet by hand).
//! 11. Replace pods whose revision is not the StatefulSet's update revision, one at a time,
//!     followers first and the leader last after a transfer, each only when every member is a
//!     healthy voter whose pod has been ready for at least `settle_ms`.
//!
//! Why `settle_ms`: the leader calls a member healthy if it heard from it within an election
//! timeout, so for that long after a pod is stopped the leader still calls it healthy, and a
//! restarted pod can look ready before the leader's connection to it is back. Replacing the next
//! pod on that stale picture took three of five members down at once in the process test
//! (tests/planner_processes.rs). A pod must therefore have been ready for longer than the
//! leader's memory (twice the maximum election timeout) before it counts as settled.

use serde::{Deserialize, Serialize};

use crate::crd::Phase;
use crate::resources::{ROLE_FOLLOWER, ROLE_LEADER};

/// A node's Raft role as it reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum NodeRole {
    /// Follows a leader or waits for one.
    Follower,
    /// Checking whether it could win an election.
    PreCandidate,
    /// Running an election.
    Candidate,
    /// Leads.
    Leader,
}

/// A member's place in the configuration.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum MemberRole {
    /// Votes.
    Voter,
    /// Receives the log, does not vote.
    Learner,
}

/// Where a node stands in its life as a member (`Cluster.Status.member_state`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum MemberState {
    /// Not reported.
    Unknown,
    /// Loading its state from disk.
    Loading,
    /// Empty data directory, asking peers whether a cluster exists.
    Fresh,
    /// Knows its cluster, not in the configuration: waits for AddMember.
    WaitingToBeAdded,
    /// Joined with an empty log; not yet at `catch_up_index`; grants no votes.
    CatchingUp,
    /// A learner.
    Learner,
    /// A voter.
    Voter,
    /// Removed from the configuration; will not rejoin by itself.
    Removed,
}

impl MemberState {
    /// The name used in `status.members[].state`.
    pub fn as_str(self) -> &'static str {
        match self {
            MemberState::Unknown => "Unknown",
            MemberState::Loading => "Loading",
            MemberState::Fresh => "Fresh",
            MemberState::WaitingToBeAdded => "WaitingToBeAdded",
            MemberState::CatchingUp => "CatchingUp",
            MemberState::Learner => "Learner",
            MemberState::Voter => "Voter",
            MemberState::Removed => "Removed",
        }
    }
}

/// One member of the configuration, as a node reports it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    /// Node id (ordinal + 1).
    pub id: u64,
    /// Voter or learner.
    pub role: MemberRole,
    /// The highest index known replicated on it (meaningful on the leader).
    pub match_index: u64,
    /// Whether the reporting node heard from it recently.
    pub healthy: bool,
}

/// A node's answer to `Cluster.Status`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeStatus {
    /// The answering node's id.
    pub node_id: u64,
    /// Its role.
    pub role: NodeRole,
    /// Its current term.
    pub term: u64,
    /// The leader it follows (itself when leader), 0 if none.
    pub leader_id: u64,
    /// The cluster id, empty before it joined.
    pub cluster_id: String,
    /// Where it stands.
    pub member_state: MemberState,
    /// The last index in its log.
    pub last_log_index: u64,
    /// In CatchingUp: the index it must reach before voting.
    pub catch_up_index: u64,
    /// The configuration as it sees it.
    pub members: Vec<Member>,
}

/// One pod of the StatefulSet.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ObservedPod {
    /// Its StatefulSet ordinal (node id - 1).
    pub ordinal: u32,
    /// Its name.
    pub name: String,
    /// Its `controller-revision-hash` label.
    pub revision: Option<String>,
    /// Whether it has a deletion timestamp.
    pub terminating: bool,
    /// Whether its Ready condition is true.
    pub ready: bool,
    /// How long it has been ready, in milliseconds (0 when not ready).
    pub ready_for_ms: u64,
    /// Its `raftkv.dev/role` label.
    pub role_label: Option<String>,
    /// Its answer to `Cluster.Status`, None if it did not answer in time.
    pub status: Option<NodeStatus>,
}

impl ObservedPod {
    /// The Raft node id of this pod.
    pub fn node_id(&self) -> u64 {
        u64::from(self.ordinal) + 1
    }
}

/// The StatefulSet as observed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ObservedStatefulSet {
    /// `spec.replicas`.
    pub replicas: i32,
    /// `status.updateRevision`: the revision every pod should be at.
    pub update_revision: Option<String>,
}

/// Everything the planner decides from.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Observed {
    /// `spec.replicas`.
    pub spec_replicas: i32,
    /// `spec.paused`.
    pub paused: bool,
    /// `status.initialReplicas`.
    pub initial_replicas: Option<i32>,
    /// Whether `status.clusterId` was ever recorded (the cluster once had a leader).
    pub cluster_id_known: bool,
    /// How long a pod must have been ready to count as settled (see the module docs).
    pub settle_ms: u64,
    /// The StatefulSet, if it exists.
    pub statefulset: Option<ObservedStatefulSet>,
    /// The pods, in ordinal order.
    pub pods: Vec<ObservedPod>,
}

/// The one thing to do next.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Action {
    /// Nothing but status (and labels).
    None,
    /// Record `status.initialReplicas`.
    InitializeStatus {
        /// The value to freeze.
        initial_replicas: i32,
    },
    /// Apply the owned objects for the first time.
    CreateCluster {
        /// The initial members.
        replicas: i32,
    },
    /// Change the StatefulSet's replicas by one.
    ScaleStatefulSet {
        /// Current replicas.
        from: i32,
        /// New replicas.
        to: i32,
    },
    /// `Cluster.AddMember` for a pod that waits to be added.
    AddLearner {
        /// Its node id.
        node_id: u64,
        /// Its ordinal (the act layer derives its addresses from it).
        ordinal: u32,
    },
    /// `Cluster.RemoveMember`.
    RemoveMember {
        /// The member to remove.
        node_id: u64,
    },
    /// `Cluster.TransferLeader` away from `from`.
    TransferLeader {
        /// The current leader.
        from: u64,
    },
    /// Delete a pod so that the StatefulSet recreates it at the update revision.
    DeletePod {
        /// The pod.
        pod: String,
    },
}

impl Action {
    /// A short kind name, for metrics and Event reasons.
    pub fn kind(&self) -> &'static str {
        match self {
            Action::None => "None",
            Action::InitializeStatus { .. } => "InitializeStatus",
            Action::CreateCluster { .. } => "CreateCluster",
            Action::ScaleStatefulSet { .. } => "ScaleStatefulSet",
            Action::AddLearner { .. } => "AddLearner",
            Action::RemoveMember { .. } => "RemoveMember",
            Action::TransferLeader { .. } => "TransferLeader",
            Action::DeletePod { .. } => "DeletePod",
        }
    }
}

/// A change to one pod's `raftkv.dev/role` label. The act layer applies them in order and stops
/// at the first failure, so that a leader label is never added before the old one is gone.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LabelChange {
    /// The pod.
    pub pod: String,
    /// The new value (`leader` or `follower`).
    pub role: String,
}

/// The fenced leader.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Leader {
    /// Its node id.
    pub id: u64,
    /// Its pod.
    pub pod: String,
    /// Its term.
    pub term: u64,
}

/// Whether the cluster can be acted on.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Health {
    /// A leader and every voter healthy.
    Healthy,
    /// A leader and a healthy quorum, but some member is down or missing.
    MemberDown(String),
    /// No leader or no healthy quorum: hands off.
    NoQuorum(String),
    /// The cluster has not elected its first leader yet.
    Bootstrapping,
}

/// What the planner decided.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Plan {
    /// The one action.
    pub action: Action,
    /// The replicas to apply the owned objects with (the new count for a scaling action), or
    /// None to apply nothing.
    pub statefulset_replicas: Option<i32>,
    /// Leader label changes, in order.
    pub labels: Vec<LabelChange>,
    /// The fenced leader, if any.
    pub leader: Option<Leader>,
    /// Whether the cluster can be acted on.
    pub health: Health,
    /// The phase to report.
    pub phase: Phase,
    /// A sentence naming what the operator does or waits for (`status.currentAction`).
    pub message: String,
}

/// How long a pod must have been ready to count as settled, for Raft timing `tick_millis` x
/// `election_ticks`: twice the longest randomized election timeout (2T), so longer than the
/// leader's memory of a member's last answer.
pub fn settle_ms(tick_millis: u64, election_ticks: u64) -> u64 {
    2 * 2 * tick_millis * election_ticks
}

/// The number of voters that make a quorum of `voters`.
fn quorum(voters: usize) -> usize {
    voters / 2 + 1
}

/// The pod that leads, fenced by term: its own status says leader at term T and no pod reports a
/// term above T. Two pods claiming leadership at the same term (impossible in Raft) fence each
/// other out.
pub fn fenced_leader(pods: &[ObservedPod]) -> Option<Leader> {
    let max_term = pods
        .iter()
        .filter_map(|p| p.status.as_ref())
        .map(|s| s.term)
        .max()?;
    let mut claims = pods.iter().filter(|p| {
        p.status.as_ref().is_some_and(|s| {
            s.role == NodeRole::Leader && s.term == max_term && s.node_id == p.node_id()
        })
    });
    let leader = claims.next()?;
    if claims.next().is_some() {
        return None;
    }
    Some(Leader {
        id: leader.node_id(),
        pod: leader.name.clone(),
        term: max_term,
    })
}

/// The label changes that make `leader` (or nobody) the only pod labelled leader: removals first.
pub fn label_changes(pods: &[ObservedPod], leader: Option<&Leader>) -> Vec<LabelChange> {
    let leader_pod = leader.map(|l| l.pod.as_str());
    let mut removals = vec![];
    let mut others = vec![];
    let mut add = None;
    for p in pods {
        let is_leader = Some(p.name.as_str()) == leader_pod;
        let want = if is_leader {
            ROLE_LEADER
        } else {
            ROLE_FOLLOWER
        };
        if p.role_label.as_deref() == Some(want) {
            continue;
        }
        let change = LabelChange {
            pod: p.name.clone(),
            role: want.to_string(),
        };
        if is_leader {
            add = Some(change);
        } else if p.role_label.as_deref() == Some(ROLE_LEADER) {
            removals.push(change);
        } else {
            others.push(change);
        }
    }
    removals.extend(add);
    removals.extend(others);
    removals
}

/// Decides the next step for one KvCluster.
pub fn plan(o: &Observed) -> Plan {
    let leader = fenced_leader(&o.pods);
    let labels = label_changes(&o.pods, leader.as_ref());
    let mut p = Plan {
        action: Action::None,
        statefulset_replicas: None,
        labels,
        leader: leader.clone(),
        health: Health::Bootstrapping,
        phase: Phase::Creating,
        message: String::new(),
    };

    let Some(initial) = o.initial_replicas else {
        p.action = Action::InitializeStatus {
            initial_replicas: o.spec_replicas,
        };
        p.message = format!("recording {} initial members", o.spec_replicas);
        return p;
    };
    let Some(sts) = &o.statefulset else {
        if o.paused {
            p.phase = Phase::Paused;
            p.message = "paused before the cluster was created".into();
            return p;
        }
        p.action = Action::CreateCluster { replicas: initial };
        p.statefulset_replicas = Some(initial);
        p.message = format!("creating the cluster with {initial} members");
        return p;
    };
    let n = sts.replicas;
    p.health = health(o, leader.as_ref());

    if o.paused {
        p.phase = Phase::Paused;
        p.message = "paused: spec.paused is set, the operator changes nothing".into();
        return p;
    }
    // From here on the owned objects are kept applied at the current size.
    p.statefulset_replicas = Some(n);

    let (leader, config) = match (&p.health, leader) {
        (Health::Bootstrapping, _) => {
            p.phase = Phase::Creating;
            p.message = "waiting for the initial members to elect a leader".into();
            return p;
        }
        (Health::NoQuorum(why), _) => {
            p.phase = Phase::Degraded;
            p.message = format!("hands off: {why}");
            return p;
        }
        (_, Some(l)) => {
            let config = o
                .pods
                .iter()
                .find(|pod| pod.name == l.pod)
                .and_then(|pod| pod.status.as_ref())
                .map(|s| s.members.clone())
                .unwrap_or_default();
            (l, config)
        }
        (_, None) => {
            // health() reports NoQuorum or Bootstrapping whenever there is no leader.
            p.phase = Phase::Degraded;
            p.message = "no leader".into();
            return p;
        }
    };
    let in_config = |id: u64| config.iter().find(|m| m.id == id);
    let pod_of = |ordinal: u32| o.pods.iter().find(|pod| pod.ordinal == ordinal);
    let name_of = |id: u64| {
        o.pods
            .iter()
            .find(|pod| pod.node_id() == id)
            .map(|pod| pod.name.clone())
            .unwrap_or_else(|| format!("node {id}"))
    };
    let m = o.spec_replicas;

    // 6. Membership changes in flight finish first.
    if let Some(learner) = config.iter().find(|m| m.role == MemberRole::Learner) {
        p.phase = Phase::Scaling;
        p.message = format!(
            "waiting for {} to catch up as a learner (at index {})",
            name_of(learner.id),
            learner.match_index
        );
        return p;
    }
    if let Some((pod, s)) = o.pods.iter().find_map(|pod| {
        pod.status
            .as_ref()
            .filter(|s| s.member_state == MemberState::CatchingUp)
            .map(|s| (pod, s))
    }) {
        p.phase = Phase::Scaling;
        p.message = format!(
            "waiting for {} to catch up from an empty volume (index {} of {})",
            pod.name, s.last_log_index, s.catch_up_index
        );
        return p;
    }

    // 7. Pods that wait to be added, within the desired size. Besides a new pod (waiting to be
    // added), this is a pod back on the retained volume of a member that was removed (scaled
    // down and up again with `whenScaled: Retain`): its id is no longer in the configuration,
    // and it reports the state its own log leaves it in, often still a voter, since a removed
    // member is not told that its removal committed. Raft lets it rejoin with that state: the
    // leader's AppendEntries truncate whatever its log has beyond the leader's, and it applies
    // its removal and the new AddLearner entry like any follower. Until then it cannot disrupt
    // the members (they ignore its pre-votes while they hear from the leader), so it is added
    // back as a learner like a new pod, and promoted once caught up.
    let cluster_id = o
        .pods
        .iter()
        .find(|pod| pod.name == leader.pod)
        .and_then(|pod| pod.status.as_ref())
        .map(|s| s.cluster_id.as_str());
    if let Some(pod) = o.pods.iter().find(|pod| {
        i64::from(pod.ordinal) < i64::from(m.min(n))
            && !pod.terminating
            && in_config(pod.node_id()).is_none()
            && pod.status.as_ref().is_some_and(|s| match s.member_state {
                MemberState::WaitingToBeAdded => true,
                MemberState::Removed
                | MemberState::Voter
                | MemberState::Learner
                | MemberState::CatchingUp => Some(s.cluster_id.as_str()) == cluster_id,
                MemberState::Loading | MemberState::Fresh | MemberState::Unknown => false,
            })
    }) {
        p.action = Action::AddLearner {
            node_id: pod.node_id(),
            ordinal: pod.ordinal,
        };
        p.phase = Phase::Scaling;
        p.message = format!("adding {} as a learner", pod.name);
        return p;
    }

    let voters: Vec<&Member> = config
        .iter()
        .filter(|m| m.role == MemberRole::Voter)
        .collect();
    let healthy_voters = |except: u64| {
        voters
            .iter()
            .filter(|v| v.id != except && v.healthy)
            .count()
    };

    // 8. Scale down, highest ordinal first.
    if m < n {
        let ordinal = u32::try_from(n - 1).unwrap_or(0);
        let id = u64::from(ordinal) + 1;
        p.phase = Phase::Scaling;
        if in_config(id).is_some() {
            if leader.id == id {
                p.action = Action::TransferLeader { from: id };
                p.message = format!(
                    "moving leadership away from {} before removing it",
                    leader.pod
                );
            } else if healthy_voters(id) >= quorum(voters.len().saturating_sub(1).max(1)) {
                p.action = Action::RemoveMember { node_id: id };
                p.message = format!("removing {} from the configuration", name_of(id));
            } else {
                p.message = format!(
                    "not removing {}: the remaining voters would not have a healthy quorum",
                    name_of(id)
                );
            }
        } else {
            p.action = Action::ScaleStatefulSet { from: n, to: n - 1 };
            p.statefulset_replicas = Some(n - 1);
            p.message = format!("shrinking the StatefulSet to {} pods", n - 1);
        }
        return p;
    }

    // 9. Scale up, one pod at a time, once every existing pod is a voter and every voter is
    // healthy: a new voter raises the quorum, so it must not join a cluster that is short.
    if m > n {
        p.phase = Phase::Scaling;
        if let Health::MemberDown(why) = &p.health {
            p.message = format!("waiting to grow: {why}");
            return p;
        }
        let not_voter = (0..u32::try_from(n).unwrap_or(0)).find(|&ordinal| {
            in_config(u64::from(ordinal) + 1).is_none_or(|mm| mm.role != MemberRole::Voter)
        });
        match not_voter {
            None => {
                p.action = Action::ScaleStatefulSet { from: n, to: n + 1 };
                p.statefulset_replicas = Some(n + 1);
                p.message = format!("growing the StatefulSet to {} pods", n + 1);
            }
            Some(ordinal) => {
                let pod = pod_of(ordinal);
                let state = pod
                    .and_then(|pod| pod.status.as_ref())
                    .map_or("not answering", |s| s.member_state.as_str());
                p.message = format!(
                    "waiting for {} to be added (it is {state})",
                    pod.map_or_else(|| format!("pod {ordinal}"), |pod| pod.name.clone())
                );
            }
        }
        return p;
    }

    // 10. Members without a pod slot.
    if let Some(extra) = config
        .iter()
        .find(|mm| mm.id > u64::try_from(n).unwrap_or(0))
    {
        p.phase = Phase::Scaling;
        if extra.id == leader.id {
            p.action = Action::TransferLeader { from: extra.id };
            p.message = format!(
                "moving leadership away from node {}, which has no pod slot",
                extra.id
            );
        } else if healthy_voters(extra.id) >= quorum(voters.len().saturating_sub(1).max(1)) {
            p.action = Action::RemoveMember { node_id: extra.id };
            p.message = format!("removing node {}, which has no pod slot", extra.id);
        } else {
            p.message = format!("not removing node {}: quorum at risk", extra.id);
        }
        return p;
    }

    // Every pod slot should now hold a healthy voter.
    let unsettled = (0..u32::try_from(n).unwrap_or(0)).find_map(|ordinal| {
        let id = u64::from(ordinal) + 1;
        let Some(pod) = pod_of(ordinal) else {
            return Some(format!("the pod of ordinal {ordinal} does not exist yet"));
        };
        if pod.terminating {
            return Some(format!("{} is terminating", pod.name));
        }
        let Some(member) = in_config(id) else {
            let state = pod
                .status
                .as_ref()
                .map_or("not answering", |s| s.member_state.as_str());
            return Some(format!("{} is not a member ({state})", pod.name));
        };
        if !member.healthy || !pod.ready {
            return Some(format!("{} is not healthy and ready", pod.name));
        }
        if pod.ready_for_ms < o.settle_ms {
            return Some(format!(
                "{} has been ready for {} ms, less than {} ms",
                pod.name, pod.ready_for_ms, o.settle_ms
            ));
        }
        None
    });

    // 11. Replace pods at an old revision: followers first, the leader last.
    let stale: Vec<&ObservedPod> = match &sts.update_revision {
        Some(rev) => o
            .pods
            .iter()
            .filter(|pod| {
                i64::from(pod.ordinal) < i64::from(n) && pod.revision.as_ref() != Some(rev)
            })
            .collect(),
        None => vec![],
    };
    if !stale.is_empty() {
        p.phase = Phase::Upgrading;
        if let Some(why) = unsettled {
            p.message = format!("replacing pods: waiting, {why}");
            return p;
        }
        if let Some(follower) = stale.iter().rev().find(|pod| pod.node_id() != leader.id) {
            p.action = Action::DeletePod {
                pod: follower.name.clone(),
            };
            p.message = format!("replacing {} with the new revision", follower.name);
        } else {
            p.action = Action::TransferLeader { from: leader.id };
            p.message = format!(
                "moving leadership away from {} before replacing it",
                leader.pod
            );
        }
        return p;
    }

    let waiting_for = match (&p.health, unsettled) {
        (_, Some(why)) => Some(why),
        (Health::MemberDown(why), None) => Some(why.clone()),
        _ => None,
    };
    match waiting_for {
        Some(why) => {
            p.phase = Phase::Degraded;
            p.message = format!("waiting: {why}");
        }
        None => {
            p.phase = Phase::Available;
            p.message = format!("{n} members, {} leads", leader.pod);
        }
    }
    p
}

/// Whether a leader exists and a quorum of its configuration's voters is healthy.
fn health(o: &Observed, leader: Option<&Leader>) -> Health {
    let Some(leader) = leader else {
        return if o.cluster_id_known {
            Health::NoQuorum("no pod reports being the leader at the highest term".into())
        } else {
            Health::Bootstrapping
        };
    };
    let Some(status) = o
        .pods
        .iter()
        .find(|pod| pod.name == leader.pod)
        .and_then(|pod| pod.status.as_ref())
    else {
        return Health::NoQuorum("the leader's status is unknown".into());
    };
    let voters: Vec<&Member> = status
        .members
        .iter()
        .filter(|m| m.role == MemberRole::Voter)
        .collect();
    let healthy = voters.iter().filter(|m| m.healthy).count();
    if voters.is_empty() || healthy < quorum(voters.len()) {
        return Health::NoQuorum(format!(
            "{healthy} of {} voters are healthy, fewer than a quorum",
            voters.len()
        ));
    }
    if let Some(down) = voters.iter().find(|m| !m.healthy) {
        return Health::MemberDown(format!("node {} does not answer the leader", down.id));
    }
    Health::Healthy
}
