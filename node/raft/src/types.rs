//! The vocabulary of the core: log entries, persistent state, configurations, messages and `Ready`.
//!
//! These are plain data types. Encoding them for the disk or the wire is the job of the storage and
//! transport layers; the core never serializes anything.

use std::collections::BTreeSet;

use bytes::Bytes;

/// A node's identity. Stable for the node's lifetime; `0` means "none" (no vote, no leader).
pub type NodeId = u64;
/// A Raft term (§5.1 of the paper).
pub type Term = u64;
/// A position in the replicated log; the first real entry has index 1, `0` means "before the log".
pub type Index = u64;

/// The "no node" id: used for "not voted" and "no known leader".
pub const NO_NODE: NodeId = 0;

/// State that must be on stable storage before any message that depends on it is sent (§5.1, Fig. 2).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct HardState {
    /// The latest term this node has seen.
    pub term: Term,
    /// The candidate this node voted for in `term`, or [`NO_NODE`].
    pub vote: NodeId,
    /// The highest index known to be committed. Persisting it is an optimisation (it lets a
    /// restarted node apply up to it before hearing from a leader); it is never needed for safety.
    pub commit: Index,
}

/// A cluster configuration: who votes and who only receives the log.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct ConfState {
    /// Members whose votes and acknowledgements count towards quorums.
    pub voters: BTreeSet<NodeId>,
    /// Members that receive the log but do not vote; the leader promotes them once caught up.
    pub learners: BTreeSet<NodeId>,
}

impl ConfState {
    /// A configuration of the given voters and no learners.
    pub fn with_voters(voters: impl IntoIterator<Item = NodeId>) -> Self {
        Self {
            voters: voters.into_iter().collect(),
            learners: BTreeSet::new(),
        }
    }

    /// Whether `id` is a voter or a learner.
    pub fn contains(&self, id: NodeId) -> bool {
        self.voters.contains(&id) || self.learners.contains(&id)
    }

    /// All members, voters first, each in ascending id order.
    pub fn members(&self) -> impl Iterator<Item = NodeId> + '_ {
        self.voters.iter().chain(self.learners.iter()).copied()
    }

    /// The number of votes that make a majority of the voters.
    pub fn quorum(&self) -> usize {
        self.voters.len() / 2 + 1
    }
}

/// The kind of a single-server membership change.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ConfChangeType {
    /// Add a node that receives the log but does not vote.
    AddLearner,
    /// Turn a caught-up learner into a voter. The leader proposes this itself.
    PromoteLearner,
    /// Remove a voter or a learner (the leader included).
    RemoveNode,
}

/// A request to change the configuration by one server.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ConfChange {
    /// What to do.
    pub change_type: ConfChangeType,
    /// Whom to do it to.
    pub node_id: NodeId,
    /// Opaque to the core; the node layer carries the member's addresses here.
    pub context: Bytes,
}

/// What a log entry carries.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum EntryPayload {
    /// Appended by every new leader so that it can commit an entry of its own term (§5.4.2, §8).
    Noop,
    /// An application command, opaque to the core.
    Normal(Bytes),
    /// A configuration entry. `conf` is the complete configuration that takes effect as soon as the
    /// entry is appended to a log (thesis §4.1); `change` is the step that produced it, or `None`
    /// for the bootstrap configuration.
    Config {
        /// The change that led from the previous configuration to `conf`.
        change: Option<ConfChange>,
        /// The configuration in force from this entry on.
        conf: ConfState,
    },
}

/// One entry of the replicated log.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Entry {
    /// The term of the leader that created the entry.
    pub term: Term,
    /// The entry's position in the log.
    pub index: Index,
    /// What the entry carries.
    pub payload: EntryPayload,
}

impl Entry {
    /// Approximate encoded size in bytes, used to bound the size of AppendEntries messages.
    pub fn size_hint(&self) -> u64 {
        const HEADER: u64 = 24;
        HEADER
            + match &self.payload {
                EntryPayload::Noop => 0,
                EntryPayload::Normal(data) => data.len() as u64,
                EntryPayload::Config { change, conf } => {
                    let change_len = change.as_ref().map_or(0, |c| 16 + c.context.len() as u64);
                    change_len + 8 * (conf.voters.len() + conf.learners.len()) as u64
                }
            }
    }
}

/// Describes a snapshot: the state machine as of `index`, whose entry had `term`, and the
/// configuration in force at `index`. The data itself never passes through the core.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct SnapshotMeta {
    /// The last log index the snapshot covers.
    pub index: Index,
    /// The term of the entry at `index`.
    pub term: Term,
    /// The configuration in force at `index`.
    pub conf: ConfState,
}

/// A node's role (§5.1, plus the pre-vote phase of thesis §9.6).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Role {
    /// Follows a leader, or waits for one. Learners are always followers.
    #[default]
    Follower,
    /// Asks whether it could win an election, without disturbing anyone's term (thesis §9.6).
    PreCandidate,
    /// Runs a real election in a new term.
    Candidate,
    /// Replicates the log and decides what commits.
    Leader,
}

impl Role {
    /// Lower-case name, as shown by `kvctl status` and in metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Follower => "follower",
            Role::PreCandidate => "pre-candidate",
            Role::Candidate => "candidate",
            Role::Leader => "leader",
        }
    }
}

/// A message between two cores. Every message is one-way; each request (`RequestVote`,
/// `AppendEntries`, `Heartbeat`) is answered by exactly one response message from the recipient,
/// unless the recipient crashes or the message is lost.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Message {
    /// Sender.
    pub from: NodeId,
    /// Recipient.
    pub to: NodeId,
    /// The sender's term (for a pre-vote request: the term it would campaign in).
    pub term: Term,
    /// What the message says.
    pub body: MessageBody,
}

/// The kinds of messages.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MessageBody {
    /// A (pre-)vote request (§5.2; thesis §9.6 for pre-vote).
    RequestVote {
        /// A pre-vote: grants change no state on the recipient.
        pre_vote: bool,
        /// Index of the candidate's last log entry (§5.4.1).
        last_log_index: Index,
        /// Term of the candidate's last log entry (§5.4.1).
        last_log_term: Term,
        /// Sent after `TimeoutNow`: voters must not refuse because they heard from a leader
        /// recently (thesis §3.10).
        leader_transfer: bool,
    },
    /// The answer to `RequestVote`.
    RequestVoteResponse {
        /// Answers a pre-vote request.
        pre_vote: bool,
        /// Whether the vote was granted.
        granted: bool,
    },
    /// Replicates entries (§5.3).
    AppendEntries {
        /// Index of the entry just before `entries`.
        prev_log_index: Index,
        /// Term of the entry at `prev_log_index`.
        prev_log_term: Term,
        /// The entries to append; may be empty (a probe).
        entries: Vec<Entry>,
        /// The leader's commit index.
        leader_commit: Index,
    },
    /// The answer to `AppendEntries` (and to `InstallSnapshot`).
    AppendEntriesResponse {
        /// Whether the follower's log now matches the leader's up to `index`.
        success: bool,
        /// On success: the highest index known to match. On rejection: the `prev_log_index` that
        /// did not match.
        index: Index,
        /// On rejection: a hint for the leader's next probe, the highest index at which the
        /// follower's log may still match (fast back-off, thesis §5.3 / etcd `findConflictByTerm`).
        reject_hint: Index,
        /// On rejection: the term of the follower's entry at `reject_hint` (0 if none).
        reject_hint_term: Term,
    },
    /// Leader liveness, commit propagation and read confirmation. `round` numbers the leader's
    /// heartbeat broadcasts; an acknowledged round confirms leadership for ReadIndex and leases.
    Heartbeat {
        /// The commit index the follower may adopt: never beyond what the leader knows it has.
        commit: Index,
        /// The broadcast round this heartbeat belongs to.
        round: u64,
    },
    /// The answer to `Heartbeat`.
    HeartbeatResponse {
        /// The round being acknowledged.
        round: u64,
    },
    /// Tells a lagging follower to replace its state with the leader's snapshot. The transport
    /// streams the data and delivers this message only once all of it has arrived.
    InstallSnapshot {
        /// Which snapshot.
        meta: SnapshotMeta,
    },
    /// Leader transfer: the recipient starts an election at once (thesis §3.10).
    TimeoutNow,
}

impl MessageBody {
    /// A short name, for logs and metrics.
    pub fn name(&self) -> &'static str {
        match self {
            MessageBody::RequestVote { pre_vote: true, .. } => "PreVote",
            MessageBody::RequestVote { .. } => "RequestVote",
            MessageBody::RequestVoteResponse { pre_vote: true, .. } => "PreVoteResponse",
            MessageBody::RequestVoteResponse { .. } => "RequestVoteResponse",
            MessageBody::AppendEntries { .. } => "AppendEntries",
            MessageBody::AppendEntriesResponse { .. } => "AppendEntriesResponse",
            MessageBody::Heartbeat { .. } => "Heartbeat",
            MessageBody::HeartbeatResponse { .. } => "HeartbeatResponse",
            MessageBody::InstallSnapshot { .. } => "InstallSnapshot",
            MessageBody::TimeoutNow => "TimeoutNow",
        }
    }
}

/// Volatile state worth reporting when it changes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SoftState {
    /// The leader this node currently follows (itself when leader), or [`NO_NODE`].
    pub leader_id: NodeId,
    /// This node's role.
    pub role: Role,
}

/// A confirmed ReadIndex request: once the state machine has applied `index`, a read identified by
/// `ctx` may be served locally and is linearizable (thesis §6.4).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReadState {
    /// The caller's identifier from [`crate::RawNode::read_index`].
    pub ctx: u64,
    /// The commit index at the time the read was received.
    pub index: Index,
}

/// Everything the caller must do, collected since the last `advance`.
///
/// Order of work for the caller:
/// 1. send `messages` right away (a leader's appends go out in parallel with its own fsync);
/// 2. persist `snapshot` (if any), then `entries` (an entry whose index is at or below the last
///    stored one replaces that entry and everything after it), then `hard_state`; then fsync;
/// 3. send `persisted_messages` (they promise durability: vote grants, append acknowledgements);
/// 4. apply `committed_entries` in order and serve `read_states` once applied;
/// 5. call [`crate::RawNode::advance`] with this `Ready`.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Ready {
    /// Set when the leader or role changed.
    pub soft_state: Option<SoftState>,
    /// Set when the hard state changed and must be persisted.
    pub hard_state: Option<HardState>,
    /// A snapshot received from the leader to install before `entries`.
    pub snapshot: Option<SnapshotMeta>,
    /// Entries to append to stable storage.
    pub entries: Vec<Entry>,
    /// Messages that may be sent before anything is persisted.
    pub messages: Vec<Message>,
    /// Messages that may be sent only after `snapshot`, `entries` and `hard_state` are durable.
    pub persisted_messages: Vec<Message>,
    /// Committed entries to apply, in log order; all are already durable locally.
    pub committed_entries: Vec<Entry>,
    /// Confirmed ReadIndex requests.
    pub read_states: Vec<ReadState>,
    /// The heartbeat round broadcast in `messages`, if any. A leader that serves lease reads notes
    /// the monotonic time just before sending and starts its lease from it once the round is
    /// acknowledged by a quorum.
    pub sent_round: Option<u64>,
    /// The highest heartbeat round now acknowledged by a quorum, when it advanced.
    pub acked_round: Option<u64>,
}

impl Ready {
    /// Whether there is nothing to do.
    pub fn is_empty(&self) -> bool {
        self.soft_state.is_none()
            && self.hard_state.is_none()
            && self.snapshot.is_none()
            && self.entries.is_empty()
            && self.messages.is_empty()
            && self.persisted_messages.is_empty()
            && self.committed_entries.is_empty()
            && self.read_states.is_empty()
            && self.sent_round.is_none()
            && self.acked_round.is_none()
    }
}
