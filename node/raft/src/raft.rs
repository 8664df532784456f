//! Roles, elections, replication, reads, leader transfer and membership: the Raft algorithm itself.
//!
//! Section numbers refer to the Raft paper (Ongaro & Ousterhout 2014, "§5.x") and Ongaro's thesis
//! (2014, "thesis §x"). Structure and names follow etcd-raft: `step` dispatches on the message's
//! term first (§5.1: stale terms are refused, newer terms depose), then on the role.

use std::collections::BTreeMap;

use bytes::Bytes;

use crate::config::Config;
use crate::error::Error;
use crate::log::RaftLog;
use crate::progress::{Progress, ProgressState};
use crate::rng::SplitMix64;
use crate::types::*;

/// What storage recovered, or what a new node starts from.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct InitialState {
    /// The persisted term, vote and commit index.
    pub hard_state: HardState,
    /// The latest durable snapshot, if any.
    pub snapshot: Option<SnapshotMeta>,
    /// The persisted log entries, contiguous. They start right after the snapshot, or at or below
    /// its index (a trailing log kept after compaction: then they must include the snapshot's
    /// last entry, with its term); starting later leaves a gap and is refused.
    pub entries: Vec<Entry>,
    /// The index the caller's state machine has applied (at least the snapshot's index).
    pub applied: Index,
}

/// The leader's view of one member, for status reports.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PeerProgress {
    /// Highest index known replicated on the member.
    pub match_index: Index,
    /// Next index the leader will send.
    pub next_index: Index,
    /// Whether the member answered within the current or the previous check-quorum round (an
    /// election timeout each): a sample right after a round started does not report a healthy
    /// member as silent.
    pub recent_active: bool,
    /// Whether the member is waiting for a snapshot.
    pub snapshot_pending: bool,
    /// Appends in flight to the member.
    pub inflight: usize,
}

/// A snapshot of the core's state, for `Cluster.Status` and tests.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Status {
    /// This node.
    pub id: NodeId,
    /// Its role.
    pub role: Role,
    /// Its current term.
    pub term: Term,
    /// The leader it follows, or [`NO_NODE`].
    pub leader_id: NodeId,
    /// Its vote in `term`.
    pub vote: NodeId,
    /// Commit index.
    pub commit: Index,
    /// Applied index.
    pub applied: Index,
    /// Index of its last log entry.
    pub last_index: Index,
    /// Index of the last snapshot it holds.
    pub snapshot_index: Index,
    /// The configuration in force.
    pub conf: ConfState,
    /// Per-member replication progress; only filled in on the leader.
    pub progress: BTreeMap<NodeId, PeerProgress>,
    /// The target of a leader transfer in progress.
    pub lead_transferee: Option<NodeId>,
}

/// A Raft node: the core state machine. See the crate docs for how to drive it.
#[derive(Debug)]
pub struct RawNode {
    cfg: Config,
    id: NodeId,
    term: Term,
    vote: NodeId,
    role: Role,
    leader_id: NodeId,
    log: RaftLog,
    rng: SplitMix64,

    /// Ticks since the last election-timer reset (followers, candidates) or since the last
    /// check-quorum round (leaders).
    election_elapsed: u64,
    heartbeat_elapsed: u64,
    /// Restarted after having seen an election: for one election timeout, act as if a leader had
    /// just been heard from. A follower that acknowledged a leader and then crashed would
    /// otherwise forget that and vote at once, letting a new leader be elected while the old one
    /// still serves lease reads.
    restart_lease: bool,
    randomized_election_timeout: u64,

    /// Votes received in the current (pre-)election.
    votes: BTreeMap<NodeId, bool>,
    /// The leader's view of every member but itself; its own match point is `log.persisted`.
    progress: BTreeMap<NodeId, Progress>,
    lead_transferee: Option<NodeId>,

    /// The leader's latest heartbeat round, and the highest one a quorum has acknowledged.
    round: u64,
    quorum_round: u64,
    /// ReadIndex requests waiting for this leader's first commit in its term.
    reads_awaiting_commit: Vec<u64>,
    /// ReadIndex requests `(ctx, index, round)` waiting for `round` to be acknowledged.
    reads_pending: Vec<(u64, Index, u64)>,
    need_read_round: bool,
    /// Proposals were appended since the last `ready()`: replicate them in one message per peer.
    need_bcast: bool,

    msgs: Vec<Message>,
    persisted_msgs: Vec<Message>,
    read_states: Vec<ReadState>,
    sent_round: Option<u64>,
    acked_round: Option<u64>,
    prev_soft: SoftState,
    prev_hard: HardState,
    /// A `Ready` was handed out and not yet advanced.
    ready_outstanding: bool,
}

impl RawNode {
    /// The state an initial member persists before its first start: the bootstrap configuration
    /// as entry 1 of term 1, already committed. Every initial member writes the identical entry,
    /// so logs agree from the start and a member added later learns the configuration from it.
    pub fn bootstrap(voters: impl IntoIterator<Item = NodeId>) -> InitialState {
        let conf = ConfState::with_voters(voters);
        InitialState {
            hard_state: HardState {
                term: 1,
                vote: NO_NODE,
                commit: 1,
            },
            snapshot: None,
            entries: vec![Entry {
                term: 1,
                index: 1,
                payload: EntryPayload::Config { change: None, conf },
            }],
            applied: 0,
        }
    }

    /// Builds a node from recovered (or bootstrap, or empty) state.
    pub fn new(cfg: Config, state: InitialState) -> Result<Self, Error> {
        cfg.validate()?;
        // `recover` treats everything handed in as durable.
        let log = RaftLog::recover(
            state.snapshot,
            state.entries,
            state.hard_state.commit,
            state.applied,
        )?;
        let mut node = Self {
            id: cfg.id,
            term: state.hard_state.term,
            vote: state.hard_state.vote,
            role: Role::Follower,
            leader_id: NO_NODE,
            rng: SplitMix64::new(cfg.seed ^ cfg.id.rotate_left(32)),
            election_elapsed: 0,
            heartbeat_elapsed: 0,
            // Term 1 is the bootstrap term: no leader, and so no lease, can have existed yet.
            restart_lease: state.hard_state.term > 1,
            randomized_election_timeout: cfg.election_tick,
            votes: BTreeMap::new(),
            progress: BTreeMap::new(),
            lead_transferee: None,
            round: 0,
            quorum_round: 0,
            reads_awaiting_commit: Vec::new(),
            reads_pending: Vec::new(),
            need_read_round: false,
            need_bcast: false,
            msgs: Vec::new(),
            persisted_msgs: Vec::new(),
            read_states: Vec::new(),
            sent_round: None,
            acked_round: None,
            prev_soft: SoftState::default(),
            prev_hard: state.hard_state,
            ready_outstanding: false,
            log,
            cfg,
        };
        node.prev_hard.commit = node.log.committed;
        #[cfg(feature = "planted-bugs")]
        {
            node.log.plant_unstable_from_persisted =
                node.bug(crate::planted::Bug::AckUnpersistedAfterSnapshot);
        }
        node.reset_election_timeout();
        Ok(node)
    }

    /// Whether this node knows enough to vote at all: it has a configuration, or it came back
    /// with an empty log and a catch-up barrier, which says whom it may safely vote for (a wiped
    /// voter's vote may be needed before any leader can send it the configuration).
    fn has_vote_basis(&self) -> bool {
        !self.log.conf().voters.is_empty() || self.cfg.catch_up_index > 0
    }

    /// Whether this node is below its catch-up barrier ([`Config::catch_up_index`]): it then
    /// grants no vote or pre-vote, does not campaign and ignores `TimeoutNow`.
    fn is_catching_up(&self) -> bool {
        self.catch_up_index() > 0 && !self.bug(Bug::VoteWhileCatchingUp)
    }

    #[cfg(feature = "planted-bugs")]
    fn bug(&self, bug: crate::planted::Bug) -> bool {
        self.cfg.bug == Some(bug)
    }

    #[cfg(not(feature = "planted-bugs"))]
    #[inline(always)]
    fn bug(&self, _bug: Bug) -> bool {
        false
    }

    // ----- accessors -------------------------------------------------------------------------

    /// This node's id.
    pub fn id(&self) -> NodeId {
        self.id
    }
    /// Its role.
    pub fn role(&self) -> Role {
        self.role
    }
    /// Its current term.
    pub fn term(&self) -> Term {
        self.term
    }
    /// The leader it follows, or [`NO_NODE`].
    pub fn leader_id(&self) -> NodeId {
        self.leader_id
    }
    /// Commit index.
    pub fn commit_index(&self) -> Index {
        self.log.committed
    }
    /// Applied index (including what the outstanding `Ready` hands out).
    pub fn applied_index(&self) -> Index {
        self.log.applied
    }
    /// Index of the last log entry.
    pub fn last_index(&self) -> Index {
        self.log.last_index()
    }
    /// Index of the first entry still in the log (at or below the snapshot's index + 1: entries
    /// a snapshot covers may be kept as a trailing log, see [`RawNode::compact`]).
    pub fn first_index(&self) -> Index {
        self.log.first_index()
    }
    /// Index of the latest durable snapshot (taken here or installed from a leader), 0 if none.
    pub fn snapshot_index(&self) -> Index {
        self.log.snapshot().index
    }
    /// The term of the entry at `index`, if it is in the log (or is the snapshot's last index).
    pub fn log_term(&self, index: Index) -> Option<Term> {
        self.log.term(index)
    }
    /// The configuration in force.
    pub fn conf_state(&self) -> &ConfState {
        self.log.conf()
    }
    /// The target of a leader transfer in progress.
    pub fn lead_transferee(&self) -> Option<NodeId> {
        self.lead_transferee
    }
    /// Whether this node may vote and campaign: it is a voter of the configuration in force.
    pub fn is_voter(&self) -> bool {
        self.log.conf().voters.contains(&self.id)
    }
    /// The catch-up barrier still in force ([`Config::catch_up_index`]); 0 once this node's log
    /// is at least as up-to-date as it (or if there is none).
    pub fn catch_up_index(&self) -> Index {
        let barrier = (self.cfg.catch_up_log_term, self.cfg.catch_up_index);
        if self.cfg.catch_up_index > 0 && (self.log.last_term(), self.log.last_index()) < barrier {
            self.cfg.catch_up_index
        } else {
            0
        }
    }

    /// Whether this leader has committed an entry of its own term, the precondition for serving
    /// reads and for membership changes.
    pub fn has_committed_in_term(&self) -> bool {
        self.log.term(self.log.committed) == Some(self.term)
    }

    /// Whether this node heard from a leader within the minimum election timeout (or restarted
    /// less than one ago): then it refuses to help elect anyone else (thesis §4.2.3, §6.4.1).
    fn in_lease(&self) -> bool {
        self.cfg.check_quorum
            && (self.leader_id != NO_NODE || self.restart_lease)
            && self.election_elapsed < self.cfg.election_tick
    }

    /// A snapshot of the node's state.
    pub fn status(&self) -> Status {
        let progress = if self.role == Role::Leader {
            let mut map: BTreeMap<NodeId, PeerProgress> = self
                .progress
                .iter()
                .map(|(&id, pr)| {
                    (
                        id,
                        PeerProgress {
                            match_index: pr.matched,
                            next_index: pr.next,
                            recent_active: pr.recent_active || pr.active_last_round,
                            snapshot_pending: pr.state == ProgressState::Snapshot,
                            inflight: pr.inflight_count(),
                        },
                    )
                })
                .collect();
            if self.log.conf().contains(self.id) {
                map.insert(
                    self.id,
                    PeerProgress {
                        match_index: self.log.persisted,
                        next_index: self.log.last_index() + 1,
                        recent_active: true,
                        snapshot_pending: false,
                        inflight: 0,
                    },
                );
            }
            map
        } else {
            BTreeMap::new()
        };
        Status {
            id: self.id,
            role: self.role,
            term: self.term,
            leader_id: self.leader_id,
            vote: self.vote,
            commit: self.log.committed,
            applied: self.log.applied,
            last_index: self.log.last_index(),
            snapshot_index: self.log.snapshot().index,
            conf: self.log.conf().clone(),
            progress,
            lead_transferee: self.lead_transferee,
        }
    }

    // ----- role changes ----------------------------------------------------------------------

    fn reset_election_timeout(&mut self) {
        let t = self.cfg.election_tick;
        self.randomized_election_timeout = self.rng.range(t, 2 * t);
    }

    /// Common to every role change; `term` is the new term.
    fn reset(&mut self, term: Term) {
        if self.term != term {
            self.term = term;
            self.vote = NO_NODE;
        }
        self.leader_id = NO_NODE;
        self.election_elapsed = 0;
        self.heartbeat_elapsed = 0;
        self.reset_election_timeout();
        self.votes.clear();
        self.progress.clear();
        self.lead_transferee = None;
        self.reads_awaiting_commit.clear();
        self.reads_pending.clear();
        self.need_read_round = false;
        self.need_bcast = false;
    }

    fn become_follower(&mut self, term: Term, leader: NodeId) {
        self.reset(term);
        self.role = Role::Follower;
        self.leader_id = leader;
    }

    fn become_pre_candidate(&mut self) {
        // Pre-vote changes neither term nor vote (thesis §9.6): a node that cannot win disturbs
        // nobody.
        self.votes.clear();
        self.progress.clear();
        self.reads_awaiting_commit.clear();
        self.reads_pending.clear();
        self.lead_transferee = None;
        self.role = Role::PreCandidate;
        self.leader_id = NO_NODE;
        self.election_elapsed = 0;
        self.reset_election_timeout();
    }

    fn become_candidate(&mut self) {
        self.reset(self.term + 1);
        self.vote = self.id;
        self.role = Role::Candidate;
    }

    fn become_leader(&mut self) {
        self.reset(self.term);
        self.role = Role::Leader;
        self.leader_id = self.id;
        let next = self.log.last_index() + 1;
        for id in self.log.conf().members().filter(|&m| m != self.id) {
            let mut pr = Progress::new(next);
            // Assume everyone is alive at the start of a term so that check-quorum gives them
            // a full election timeout to answer.
            pr.recent_active = true;
            self.progress.insert(id, pr);
        }
        // §5.4.2 / §8: a no-op of the new term lets the leader commit everything before it and
        // learn the commit index it needs for reads.
        let index = self.log.last_index() + 1;
        self.log.append([Entry {
            term: self.term,
            index,
            payload: EntryPayload::Noop,
        }]);
        self.need_bcast = true;
    }

    // ----- time ------------------------------------------------------------------------------

    /// Advances logical time by one tick.
    pub fn tick(&mut self) {
        match self.role {
            Role::Leader => self.tick_heartbeat(),
            _ => self.tick_election(),
        }
    }

    fn tick_election(&mut self) {
        self.election_elapsed += 1;
        if self.election_elapsed >= self.cfg.election_tick {
            self.restart_lease = false;
        }
        if self.election_elapsed >= self.randomized_election_timeout {
            self.election_elapsed = 0;
            if self.is_voter() && !self.is_catching_up() {
                self.campaign();
            }
        }
    }

    fn tick_heartbeat(&mut self) {
        self.heartbeat_elapsed += 1;
        self.election_elapsed += 1;
        if self.election_elapsed >= self.cfg.election_tick {
            self.election_elapsed = 0;
            if self.cfg.check_quorum && !self.check_quorum_active() {
                // Thesis §6.2: a leader that cannot reach a quorum steps down, so clients look
                // for the real leader instead of waiting on this one.
                let term = self.term;
                self.become_follower(term, NO_NODE);
                return;
            }
            // A transfer that did not finish within an election timeout is abandoned (§3.10).
            self.lead_transferee = None;
        }
        if self.heartbeat_elapsed >= self.cfg.heartbeat_tick {
            self.heartbeat_elapsed = 0;
            self.bcast_heartbeat();
            self.maybe_promote_learners();
        }
    }

    /// Counts voters heard from since the last round, then starts a new round.
    fn check_quorum_active(&mut self) -> bool {
        let conf = self.log.conf();
        let mut active = usize::from(conf.voters.contains(&self.id));
        for (id, pr) in self.progress.iter_mut() {
            pr.active_last_round = pr.recent_active;
            if conf.voters.contains(id) && pr.recent_active {
                active += 1;
            }
            pr.recent_active = false;
        }
        active >= conf.quorum()
    }

    // ----- elections -------------------------------------------------------------------------

    /// Starts an election now (with a pre-vote first when enabled). Does nothing on a leader or
    /// on a node that is not a voter.
    pub fn campaign(&mut self) {
        if self.role == Role::Leader || !self.is_voter() || self.is_catching_up() {
            return;
        }
        if self.cfg.pre_vote {
            self.campaign_pre_vote();
        } else {
            self.campaign_vote(false);
        }
    }

    fn campaign_pre_vote(&mut self) {
        self.become_pre_candidate();
        self.votes.insert(self.id, true);
        if self.tally() == Tally::Won {
            self.campaign_vote(false);
            return;
        }
        self.send_vote_requests(true, false);
    }

    fn campaign_vote(&mut self, leader_transfer: bool) {
        self.become_candidate();
        self.votes.insert(self.id, true);
        if self.tally() == Tally::Won {
            self.become_leader();
            return;
        }
        self.send_vote_requests(false, leader_transfer);
    }

    fn send_vote_requests(&mut self, pre_vote: bool, leader_transfer: bool) {
        let term = if pre_vote { self.term + 1 } else { self.term };
        let body = MessageBody::RequestVote {
            pre_vote,
            last_log_index: self.log.last_index(),
            last_log_term: self.log.last_term(),
            leader_transfer,
        };
        let voters: Vec<NodeId> = self.log.conf().voters.iter().copied().collect();
        for to in voters.into_iter().filter(|&v| v != self.id) {
            let msg = Message {
                from: self.id,
                to,
                term,
                body: body.clone(),
            };
            // A real vote request carries the new term and our own vote: both must be durable
            // first, or a crash could let us vote for someone else in the same term.
            if pre_vote {
                self.msgs.push(msg);
            } else {
                self.persisted_msgs.push(msg);
            }
        }
    }

    fn tally(&self) -> Tally {
        let conf = self.log.conf();
        let (mut granted, mut rejected) = (0, 0);
        for (id, &g) in &self.votes {
            if conf.voters.contains(id) {
                if g {
                    granted += 1;
                } else {
                    rejected += 1;
                }
            }
        }
        if granted >= conf.quorum() {
            Tally::Won
        } else if rejected >= conf.quorum() {
            Tally::Lost
        } else {
            Tally::Pending
        }
    }

    // ----- message dispatch ------------------------------------------------------------------

    /// Handles a message from a peer. Messages for another node, from ourselves, or stale ones are
    /// ignored; every request gets exactly one answer (unless we ignore it as misaddressed).
    pub fn step(&mut self, m: Message) {
        if m.to != self.id || m.from == self.id || m.from == NO_NODE {
            return;
        }
        if m.term > self.term {
            if let MessageBody::RequestVote {
                pre_vote,
                leader_transfer,
                ..
            } = m.body
            {
                // Thesis §4.2.3 / §9.6: a node that heard from a live leader within the minimum
                // election timeout ignores (pre-)votes, so a partitioned or removed node cannot
                // depose a healthy leader. A transfer (TimeoutNow) is exempt.
                // Votes are granted without consulting our configuration (thesis §4.1): ours may
                // be stale, and refusing a voter we still think a learner can block elections for
                // good. The one exception is a node with no configuration at all (never added, or
                // restarted with a lost volume): it may have forgotten a vote, so it votes for
                // nobody until a leader has given it the log, unless it holds a catch-up barrier
                // (`has_vote_basis`).
                if (self.in_lease() && !leader_transfer) || !self.has_vote_basis() {
                    self.reply_vote(&m, pre_vote, false);
                    return;
                }
            }
            if self.role == Role::Follower
                && self.in_lease()
                && matches!(
                    m.body,
                    MessageBody::RequestVoteResponse { .. }
                        | MessageBody::AppendEntriesResponse { .. }
                        | MessageBody::HeartbeatResponse { .. }
                )
            {
                // A follower has no requests out, so a newer term in an answer is stale news from
                // a past candidacy or leadership. Adopting it would drop the leader we follow and
                // with it the protection that leader's lease relies on (thesis §6.4.1).
                return;
            }
            match &m.body {
                // A pre-vote request and a granted pre-vote answer carry a term nobody is in yet.
                MessageBody::RequestVote { pre_vote: true, .. } => {}
                MessageBody::RequestVoteResponse {
                    pre_vote: true,
                    granted: true,
                } => {}
                MessageBody::AppendEntries { .. }
                | MessageBody::Heartbeat { .. }
                | MessageBody::InstallSnapshot { .. } => self.become_follower(m.term, m.from),
                _ => {
                    // Figure 2: only a leader's message or a granted vote resets the election
                    // timer. A newer term alone must not, or a candidate that cannot win keeps
                    // resetting the timers of the nodes that could (a stall without pre-vote).
                    let elapsed = self.election_elapsed;
                    self.become_follower(m.term, NO_NODE);
                    self.election_elapsed = elapsed;
                }
            }
        } else if m.term < self.term {
            self.step_stale(m);
            return;
        }

        match m.body {
            MessageBody::RequestVote { .. } => self.handle_vote_request(m),
            MessageBody::TimeoutNow => {
                // Thesis §3.10: the transfer target campaigns at once, skipping pre-vote.
                if self.role != Role::Leader && self.is_voter() && !self.is_catching_up() {
                    self.campaign_vote(true);
                }
            }
            _ => match self.role {
                Role::Leader => self.step_leader(m),
                Role::PreCandidate | Role::Candidate => self.step_candidate(m),
                Role::Follower => self.step_follower(m),
            },
        }
    }

    /// A message from an older term.
    fn step_stale(&mut self, m: Message) {
        match m.body {
            // Tell a deposed leader about the newer term so it steps down (needed with
            // check-quorum and pre-vote, where it might otherwise never learn it, thesis §9.6).
            MessageBody::AppendEntries { .. } | MessageBody::InstallSnapshot { .. } => {
                self.msgs.push(Message {
                    from: self.id,
                    to: m.from,
                    term: self.term,
                    body: reject(0, 0, 0),
                });
            }
            MessageBody::Heartbeat { .. } => self.msgs.push(Message {
                from: self.id,
                to: m.from,
                term: self.term,
                body: MessageBody::HeartbeatResponse { round: 0 },
            }),
            MessageBody::RequestVote { pre_vote, .. } => self.reply_vote(&m, pre_vote, false),
            // Answers from older terms, and TimeoutNow from a deposed leader: drop.
            _ => {}
        }
    }

    fn reply_vote(&mut self, m: &Message, pre_vote: bool, granted: bool) {
        // A granted pre-vote answers in the candidate's future term so that it is counted; every
        // other answer carries our own term.
        let term = if pre_vote && granted {
            m.term
        } else {
            self.term
        };
        let msg = Message {
            from: self.id,
            to: m.from,
            term,
            body: MessageBody::RequestVoteResponse { pre_vote, granted },
        };
        if granted && !pre_vote && !self.bug(Bug::VoteBeforePersist) {
            // §5.2 / Fig. 2: the vote must be on stable storage before the grant leaves.
            self.persisted_msgs.push(msg);
        } else {
            self.msgs.push(msg);
        }
    }

    fn handle_vote_request(&mut self, m: Message) {
        let MessageBody::RequestVote {
            pre_vote,
            last_log_index,
            last_log_term,
            ..
        } = m.body
        else {
            return;
        };
        let can_vote = self.vote == m.from
            || (self.vote == NO_NODE && self.leader_id == NO_NODE)
            || (pre_vote && m.term > self.term);
        let up_to_date = self.bug(Bug::VoteWithoutLogCheck)
            || self.log.is_up_to_date(last_log_index, last_log_term);
        // A node that lost its state may have voted in terms up to `catch_up_term` already, and
        // until it has caught up it stands in for its lost log with the barrier's position.
        let term_ok = m.term > self.cfg.catch_up_term || self.bug(Bug::VoteWhileCatchingUp);
        let barrier_ok = !self.is_catching_up()
            || (last_log_term, last_log_index)
                >= (self.cfg.catch_up_log_term, self.cfg.catch_up_index);
        let granted = can_vote && up_to_date && self.has_vote_basis() && term_ok && barrier_ok;
        if granted && !pre_vote {
            self.vote = m.from;
            // Granting a vote resets the timer (§5.2), so we do not compete with the candidate.
            self.election_elapsed = 0;
        }
        self.reply_vote(&m, pre_vote, granted);
    }

    fn step_candidate(&mut self, m: Message) {
        match m.body {
            MessageBody::AppendEntries { .. }
            | MessageBody::Heartbeat { .. }
            | MessageBody::InstallSnapshot { .. } => {
                // §5.2: a leader of our term exists.
                self.become_follower(m.term, m.from);
                self.step_follower(m);
            }
            MessageBody::RequestVoteResponse { pre_vote, granted } => {
                let expected = self.role == Role::PreCandidate;
                if pre_vote != expected {
                    return;
                }
                self.votes.insert(m.from, granted);
                match self.tally() {
                    Tally::Won if pre_vote => self.campaign_vote(false),
                    Tally::Won => self.become_leader(),
                    Tally::Lost => {
                        let term = self.term;
                        self.become_follower(term, NO_NODE);
                    }
                    Tally::Pending => {}
                }
            }
            _ => {}
        }
    }

    fn step_follower(&mut self, m: Message) {
        match m.body {
            MessageBody::AppendEntries {
                prev_log_index,
                prev_log_term,
                entries,
                leader_commit,
            } => {
                self.heard_from_leader(m.from);
                self.handle_append(
                    m.from,
                    prev_log_index,
                    prev_log_term,
                    entries,
                    leader_commit,
                );
            }
            MessageBody::Heartbeat { commit, round } => {
                self.heard_from_leader(m.from);
                // The leader sends min(match, commit), so this never commits past what we hold
                // from this leader.
                self.log.commit_to(commit);
                let last = self.log.last_index();
                if commit > last {
                    // The leader believes we hold entries we do not: our log was lost (a wiped
                    // volume). Say so — a rejection at index 0, which cannot happen otherwise,
                    // since index 0 always matches — so that it sends the log again even when
                    // no new entry is coming.
                    self.msgs.push(Message {
                        from: self.id,
                        to: m.from,
                        term: self.term,
                        body: reject(0, last, self.log.term(last).unwrap_or(0)),
                    });
                }
                // After persistence: the acknowledgement promises the leader a lease, which a
                // restart must not forget (the term it was given in must be durable).
                self.persisted_msgs.push(Message {
                    from: self.id,
                    to: m.from,
                    term: self.term,
                    body: MessageBody::HeartbeatResponse { round },
                });
            }
            MessageBody::InstallSnapshot { meta } => {
                self.heard_from_leader(m.from);
                self.handle_snapshot(m.from, meta);
            }
            _ => {}
        }
    }

    fn heard_from_leader(&mut self, leader: NodeId) {
        self.election_elapsed = 0;
        self.leader_id = leader;
    }

    fn reply_append(&mut self, to: NodeId, body: MessageBody) {
        // An acknowledgement promises the entries are durable (§5.3): send after the fsync.
        self.persisted_msgs.push(Message {
            from: self.id,
            to,
            term: self.term,
            body,
        });
    }

    /// §5.3: the consistency check, conflict resolution, and commit propagation.
    fn handle_append(
        &mut self,
        leader: NodeId,
        prev_index: Index,
        prev_term: Term,
        entries: Vec<Entry>,
        leader_commit: Index,
    ) {
        if prev_index < self.log.committed {
            // Everything up to our commit index matches the leader's log (Log Matching plus
            // Leader Completeness); tell it where to continue.
            let index = self.log.committed;
            self.reply_append(leader, accept(index));
            return;
        }
        let matches = self.log.match_term(prev_index, prev_term)
            || (self.bug(Bug::IgnorePrevLogCheck) && prev_index <= self.log.last_index());
        if !matches {
            let (hint, hint_term) = self.log.find_conflict_by_term(prev_index, prev_term);
            self.reply_append(leader, reject(prev_index, hint, hint_term));
            return;
        }
        let last_new = prev_index + entries.len() as u64;
        if let Some(from) = self.log.find_conflict(&entries)
            && !self.log.store_from(&entries, from)
        {
            // Only a broken leader asks to overwrite committed entries; refuse rather than lose
            // them, and let the leader probe again.
            let committed = self.log.committed;
            self.reply_append(
                leader,
                reject(prev_index, committed, self.log.term(committed).unwrap_or(0)),
            );
            return;
        }
        self.log.commit_to(leader_commit.min(last_new));
        self.reply_append(leader, accept(last_new));
    }

    fn handle_snapshot(&mut self, leader: NodeId, meta: SnapshotMeta) {
        if meta.index <= self.log.committed {
            let index = self.log.committed;
            self.reply_append(leader, accept(index));
            return;
        }
        if self.log.match_term(meta.index, meta.term) {
            // We already hold the snapshot's last entry: the log up to it matches; just commit.
            self.log.commit_to(meta.index);
            self.reply_append(leader, accept(meta.index));
            return;
        }
        let index = meta.index;
        self.log.restore(meta);
        self.reply_append(leader, accept(index));
    }

    fn step_leader(&mut self, m: Message) {
        if !self.progress.contains_key(&m.from) {
            return;
        }
        match m.body {
            MessageBody::AppendEntriesResponse {
                success,
                index,
                reject_hint,
                reject_hint_term,
            } => {
                if let Some(pr) = self.progress.get_mut(&m.from) {
                    pr.recent_active = true;
                }
                if success {
                    self.handle_append_success(m.from, index);
                } else {
                    self.handle_append_reject(m.from, index, reject_hint, reject_hint_term);
                }
            }
            MessageBody::HeartbeatResponse { round } => {
                self.handle_heartbeat_response(m.from, round)
            }
            _ => {}
        }
    }

    fn handle_append_success(&mut self, from: NodeId, index: Index) {
        let last_index = self.log.last_index();
        let Some(pr) = self.progress.get_mut(&from) else {
            return;
        };
        if !pr.maybe_update(index) {
            return;
        }
        match pr.state {
            ProgressState::Probe => pr.become_replicate(),
            ProgressState::Snapshot if pr.matched >= pr.pending_snapshot => {
                pr.become_probe();
                pr.become_replicate();
            }
            ProgressState::Replicate => pr.free_inflights_to(index),
            ProgressState::Snapshot => {}
        }
        let caught_up = pr.matched == last_index;
        if self.maybe_commit() {
            self.bcast_append();
        } else {
            self.send_append(from, false);
        }
        if caught_up && self.lead_transferee == Some(from) {
            self.send_timeout_now(from);
        }
        self.maybe_promote_learners();
    }

    fn handle_append_reject(
        &mut self,
        from: NodeId,
        rejected: Index,
        hint: Index,
        hint_term: Term,
    ) {
        if rejected == 0 {
            // A follower reporting lost entries (see the Heartbeat handling): forget what we
            // knew of it — lowering `matched` is always safe — and probe it from the start.
            if let Some(pr) = self.progress.get_mut(&from)
                && hint < pr.matched
            {
                pr.matched = 0;
                pr.become_probe();
                self.send_append(from, true);
            }
            return;
        }
        // Fast back-off: skip every entry of a term the follower cannot match.
        let next_probe = if hint_term > 0 {
            self.log.find_conflict_by_term(hint, hint_term).0 + 1
        } else {
            hint + 1
        };
        let Some(pr) = self.progress.get_mut(&from) else {
            return;
        };
        if pr.maybe_decr_to(rejected, next_probe) {
            if pr.state == ProgressState::Replicate {
                pr.become_probe();
            }
            self.send_append(from, true);
        }
    }

    fn handle_heartbeat_response(&mut self, from: NodeId, round: u64) {
        let last_index = self.log.last_index();
        let Some(pr) = self.progress.get_mut(&from) else {
            return;
        };
        pr.recent_active = true;
        pr.paused = false;
        pr.acked_round = pr.acked_round.max(round);
        if pr.state == ProgressState::Replicate && pr.is_paused(self.cfg.max_inflight_msgs) {
            pr.free_first_inflight();
        }
        if pr.matched < last_index {
            self.send_append(from, true);
        }
        self.advance_quorum_round();
    }

    // ----- replication -----------------------------------------------------------------------

    /// Sends appends to every member that can take them.
    fn bcast_append(&mut self) {
        let peers: Vec<NodeId> = self.progress.keys().copied().collect();
        for id in peers {
            self.send_append(id, true);
        }
    }

    /// Sends the next append (or the snapshot) to `to`. With `allow_empty`, an append without
    /// entries still goes out to carry the commit index or to re-probe.
    fn send_append(&mut self, to: NodeId, allow_empty: bool) {
        let max_inflight = self.cfg.max_inflight_msgs;
        let Some(pr) = self.progress.get(&to) else {
            return;
        };
        if pr.is_paused(max_inflight) {
            return;
        }
        if pr.next > self.log.last_index() + 1 {
            // Never probe beyond our own log; that would look like a compacted gap.
            let last = self.log.last_index();
            if let Some(pr) = self.progress.get_mut(&to) {
                pr.next = last + 1;
            }
        }
        let Some(pr) = self.progress.get(&to) else {
            return;
        };
        let prev_index = pr.next - 1;
        let Some(prev_term) = self.log.term(prev_index) else {
            // The follower needs entries we compacted: send the snapshot instead (§7).
            self.send_snapshot(to);
            return;
        };
        let entries = self.log.entries_from(pr.next, self.cfg.max_size_per_msg);
        if entries.is_empty() && !allow_empty {
            return;
        }
        let last = entries.last().map(|e| e.index);
        let commit = self.log.committed;
        if let Some(pr) = self.progress.get_mut(&to) {
            match last {
                Some(last) => pr.sent_entries(last),
                None if pr.state == ProgressState::Probe => pr.paused = true,
                None => {}
            }
        }
        self.msgs.push(Message {
            from: self.id,
            to,
            term: self.term,
            body: MessageBody::AppendEntries {
                prev_log_index: prev_index,
                prev_log_term: prev_term,
                entries,
                leader_commit: commit,
            },
        });
    }

    fn send_snapshot(&mut self, to: NodeId) {
        let meta = self.log.snapshot().clone();
        if let Some(pr) = self.progress.get_mut(&to) {
            pr.become_snapshot(meta.index);
        }
        self.msgs.push(Message {
            from: self.id,
            to,
            term: self.term,
            body: MessageBody::InstallSnapshot { meta },
        });
    }

    fn bcast_heartbeat(&mut self) {
        self.round += 1;
        self.sent_round = Some(self.round);
        self.need_read_round = false;
        let round = self.round;
        let committed = self.log.committed;
        let targets: Vec<(NodeId, Index)> = self
            .progress
            .iter()
            .map(|(&id, pr)| (id, pr.matched))
            .collect();
        for (to, matched) in targets {
            self.msgs.push(Message {
                from: self.id,
                to,
                term: self.term,
                body: MessageBody::Heartbeat {
                    commit: matched.min(committed),
                    round,
                },
            });
        }
        // A single voter needs nobody's acknowledgement.
        self.advance_quorum_round();
    }

    /// §5.3 / §5.4.2: the highest index stored on a quorum commits, but only by counting replicas
    /// of an entry of the current term.
    fn maybe_commit(&mut self) -> bool {
        let conf = self.log.conf();
        let mut matched: Vec<Index> = conf
            .voters
            .iter()
            .map(|id| {
                if *id == self.id {
                    self.log.persisted
                } else {
                    self.progress.get(id).map_or(0, |pr| pr.matched)
                }
            })
            .collect();
        if matched.is_empty() {
            return false;
        }
        matched.sort_unstable_by(|a, b| b.cmp(a));
        let quorum_index = matched[conf.quorum() - 1];
        if quorum_index <= self.log.committed {
            return false;
        }
        let own_term = self.log.term(quorum_index) == Some(self.term);
        if !own_term && !self.bug(Bug::CommitPreviousTerm) {
            return false;
        }
        self.log.commit_to(quorum_index);
        self.on_commit_advanced();
        true
    }

    fn on_commit_advanced(&mut self) {
        if !self.has_committed_in_term() {
            return;
        }
        // Reads that arrived before the first commit of this term can now be given an index.
        if !self.reads_awaiting_commit.is_empty() {
            let index = self.log.committed;
            let round = self.round + 1;
            for ctx in std::mem::take(&mut self.reads_awaiting_commit) {
                self.reads_pending.push((ctx, index, round));
            }
            self.need_read_round = true;
        }
        // Thesis §4.2.2: a leader that is no longer a voter steps down once its removal commits,
        // handing leadership straight to the most caught-up voter.
        if !self.is_voter() && self.log.conf_index() <= self.log.committed {
            let best = self.best_transfer_target();
            if let Some(target) = best {
                self.send_timeout_now(target);
            }
            let term = self.term;
            self.become_follower(term, NO_NODE);
        }
    }

    // ----- reads -----------------------------------------------------------------------------

    /// Thesis §6.4 ReadIndex: asks for a read identified by `ctx`. A later `Ready` carries
    /// `ReadState { ctx, index }`: once `index` is applied, the read may be served locally.
    pub fn read_index(&mut self, ctx: u64) -> Result<(), Error> {
        if self.role != Role::Leader {
            return Err(self.not_leader());
        }
        if !self.has_committed_in_term() {
            // The commit index is not known to be current until an entry of this term commits.
            self.reads_awaiting_commit.push(ctx);
            return Ok(());
        }
        self.reads_pending
            .push((ctx, self.log.committed, self.round + 1));
        self.need_read_round = true;
        Ok(())
    }

    fn advance_quorum_round(&mut self) {
        if self.role != Role::Leader {
            return;
        }
        let conf = self.log.conf();
        let mut rounds: Vec<u64> = conf
            .voters
            .iter()
            .map(|id| {
                if *id == self.id {
                    self.round
                } else {
                    self.progress.get(id).map_or(0, |pr| pr.acked_round)
                }
            })
            .collect();
        if rounds.is_empty() {
            return;
        }
        rounds.sort_unstable_by(|a, b| b.cmp(a));
        let q = rounds[conf.quorum() - 1];
        if q <= self.quorum_round {
            return;
        }
        self.quorum_round = q;
        self.acked_round = Some(q);
        let (done, waiting): (Vec<_>, Vec<_>) =
            self.reads_pending.drain(..).partition(|&(_, _, r)| r <= q);
        self.reads_pending = waiting;
        self.read_states.extend(
            done.into_iter()
                .map(|(ctx, index, _)| ReadState { ctx, index }),
        );
    }

    // ----- proposals -------------------------------------------------------------------------

    fn not_leader(&self) -> Error {
        Error::NotLeader {
            leader: (self.leader_id != NO_NODE).then_some(self.leader_id),
        }
    }

    fn check_can_propose(&self) -> Result<(), Error> {
        if self.role != Role::Leader {
            return Err(self.not_leader());
        }
        if self.lead_transferee.is_some() {
            return Err(Error::TransferInProgress);
        }
        Ok(())
    }

    fn append_own(&mut self, payload: EntryPayload) -> Index {
        let index = self.log.last_index() + 1;
        self.log.append([Entry {
            term: self.term,
            index,
            payload,
        }]);
        self.need_bcast = true;
        index
    }

    /// Proposes an application command. Returns the index the entry will have if it commits;
    /// together with the current term it identifies the proposal.
    pub fn propose(&mut self, data: Bytes) -> Result<Index, Error> {
        self.check_can_propose()?;
        Ok(self.append_own(EntryPayload::Normal(data)))
    }

    /// Proposes a single-server membership change (see the crate docs for the rules).
    pub fn propose_conf_change(&mut self, cc: ConfChange) -> Result<Index, Error> {
        self.check_can_propose()?;
        if self.log.conf_index() > self.log.committed {
            return Err(Error::ConfChangeNotAllowed(
                "another membership change is not committed yet",
            ));
        }
        if !self.has_committed_in_term() {
            return Err(Error::ConfChangeNotAllowed(
                "the leader has not committed an entry of its term yet",
            ));
        }
        let mut conf = self.log.conf().clone();
        let id = cc.node_id;
        match cc.change_type {
            ConfChangeType::AddLearner => {
                if id == NO_NODE {
                    return Err(Error::InvalidConfChange("node id 0 is reserved".into()));
                }
                if conf.contains(id) {
                    return Err(Error::InvalidConfChange(format!(
                        "node {id} is already a member"
                    )));
                }
                conf.learners.insert(id);
            }
            ConfChangeType::PromoteLearner => {
                if !conf.learners.remove(&id) {
                    return Err(Error::InvalidConfChange(format!(
                        "node {id} is not a learner"
                    )));
                }
                conf.voters.insert(id);
            }
            ConfChangeType::RemoveNode => {
                if conf.voters.contains(&id) && conf.voters.len() == 1 {
                    return Err(Error::InvalidConfChange(
                        "cannot remove the last voter".into(),
                    ));
                }
                if !conf.voters.remove(&id) && !conf.learners.remove(&id) {
                    return Err(Error::InvalidConfChange(format!(
                        "node {id} is not a member"
                    )));
                }
            }
        }
        let index = self.append_own(EntryPayload::Config {
            change: Some(cc),
            conf,
        });
        self.sync_progress_with_conf();
        // With fewer voters the quorum may already hold everything (e.g. removing a dead voter).
        if self.maybe_commit() {
            self.need_bcast = true;
        }
        Ok(index)
    }

    /// Adds progress for new members and drops it for removed ones, after the leader appended a
    /// configuration entry.
    fn sync_progress_with_conf(&mut self) {
        let conf = self.log.conf().clone();
        self.progress.retain(|id, _| conf.contains(*id));
        let next = self.log.last_index() + 1;
        for id in conf.members().filter(|&m| m != self.id) {
            self.progress.entry(id).or_insert_with(|| {
                let mut pr = Progress::new(next);
                pr.recent_active = true;
                pr
            });
        }
    }

    /// Promotes learners that have caught up with the commit index (one change at a time).
    fn maybe_promote_learners(&mut self) {
        if self.role != Role::Leader
            || self.lead_transferee.is_some()
            || self.log.conf_index() > self.log.committed
            || !self.has_committed_in_term()
        {
            return;
        }
        let committed = self.log.committed;
        let ready = self.log.conf().learners.iter().copied().find(|id| {
            self.progress
                .get(id)
                .is_some_and(|pr| pr.matched >= committed)
        });
        if let Some(id) = ready {
            let _ = self.propose_conf_change(ConfChange {
                change_type: ConfChangeType::PromoteLearner,
                node_id: id,
                context: Bytes::new(),
            });
        }
    }

    // ----- leader transfer -------------------------------------------------------------------

    fn best_transfer_target(&self) -> Option<NodeId> {
        let conf = self.log.conf();
        self.progress
            .iter()
            .filter(|(id, _)| conf.voters.contains(id))
            .max_by_key(|(id, pr)| (pr.matched, std::cmp::Reverse(**id)))
            .map(|(id, _)| *id)
    }

    /// Thesis §3.10: hands leadership to `target` (0 = the most caught-up voter). Proposals are
    /// refused until the transfer completes or times out after an election timeout.
    pub fn transfer_leader(&mut self, target: NodeId) -> Result<NodeId, Error> {
        if self.role != Role::Leader {
            return Err(self.not_leader());
        }
        let target = if target == NO_NODE {
            self.best_transfer_target()
                .ok_or_else(|| Error::InvalidConfChange("no other voter to transfer to".into()))?
        } else {
            target
        };
        if target == self.id {
            return Ok(target);
        }
        if !self.log.conf().voters.contains(&target) {
            return Err(Error::InvalidConfChange(format!(
                "node {target} is not a voter"
            )));
        }
        self.lead_transferee = Some(target);
        // The transfer gets one election timeout to complete.
        self.election_elapsed = 0;
        let caught_up = self
            .progress
            .get(&target)
            .is_some_and(|pr| pr.matched == self.log.last_index());
        if caught_up {
            self.send_timeout_now(target);
        } else {
            self.send_append(target, true);
        }
        Ok(target)
    }

    fn send_timeout_now(&mut self, to: NodeId) {
        self.msgs.push(Message {
            from: self.id,
            to,
            term: self.term,
            body: MessageBody::TimeoutNow,
        });
    }

    // ----- snapshots and feedback from the transport ------------------------------------------

    /// A snapshot from the leader that the core accepted and will hand out in the next `Ready`
    /// for installing (the caller must keep its data until then).
    pub fn pending_snapshot(&self) -> Option<&SnapshotMeta> {
        self.log.pending_snapshot.as_ref()
    }

    /// Metadata for a snapshot of the state machine taken at `index` (which must be applied).
    pub fn snapshot_meta(&self, index: Index) -> Result<SnapshotMeta, Error> {
        self.log.snapshot_meta(index)
    }

    /// Records that a snapshot at `snapshot_index` is durable and drops the log up to
    /// `snapshot_index - trailing_entries`, keeping that many covered entries as a trailing log
    /// (never moving the log's start back). A follower whose next entry is still in the log is
    /// sent entries; one that needs older entries is sent the snapshot. Returns the index the log
    /// now starts after, up to which the caller may compact its durable log.
    pub fn compact(
        &mut self,
        snapshot_index: Index,
        trailing_entries: u64,
    ) -> Result<Index, Error> {
        self.log.compact(snapshot_index, trailing_entries)
    }

    /// The transport finished (or gave up) sending a snapshot to `peer`.
    pub fn report_snapshot(&mut self, peer: NodeId, ok: bool) {
        let Some(pr) = self.progress.get_mut(&peer) else {
            return;
        };
        if pr.state != ProgressState::Snapshot {
            return;
        }
        if !ok {
            pr.pending_snapshot = 0;
        }
        pr.become_probe();
        // Wait for the follower's answer (or the next heartbeat answer) before probing.
        pr.paused = true;
    }

    /// The transport could not reach `peer`: stop streaming to it and probe instead.
    pub fn report_unreachable(&mut self, peer: NodeId) {
        if let Some(pr) = self.progress.get_mut(&peer)
            && pr.state == ProgressState::Replicate
        {
            pr.become_probe();
        }
    }

    // ----- Ready / advance ------------------------------------------------------------------

    fn soft_state(&self) -> SoftState {
        SoftState {
            leader_id: self.leader_id,
            role: self.role,
        }
    }

    fn hard_state(&self) -> HardState {
        HardState {
            term: self.term,
            vote: self.vote,
            commit: self.log.committed,
        }
    }

    /// Whether `ready()` has anything to hand out.
    pub fn has_ready(&self) -> bool {
        if self.ready_outstanding {
            return false;
        }
        self.need_bcast
            || (self.need_read_round && self.role == Role::Leader)
            || self.soft_state() != self.prev_soft
            || self.hard_state() != self.prev_hard
            || self.log.pending_snapshot.is_some()
            || self.log.has_unstable()
            || !self.msgs.is_empty()
            || !self.persisted_msgs.is_empty()
            || self.log.has_next_committed()
            || !self.read_states.is_empty()
            || self.sent_round.is_some()
            || self.acked_round.is_some()
    }

    /// Collects everything the caller must do. Call [`RawNode::advance`] before the next `ready`.
    pub fn ready(&mut self) -> Ready {
        debug_assert!(
            !self.ready_outstanding,
            "ready() called twice without advance()"
        );
        if self.role == Role::Leader {
            if self.need_bcast {
                self.bcast_append();
            }
            if self.need_read_round {
                self.bcast_heartbeat();
            }
        }
        self.need_bcast = false;
        self.need_read_round = false;
        let soft = self.soft_state();
        let hard = self.hard_state();
        let mut rd = Ready {
            soft_state: (soft != self.prev_soft).then_some(soft),
            hard_state: (hard != self.prev_hard).then_some(hard),
            snapshot: self.log.take_pending_snapshot(),
            entries: self.log.unstable_entries(),
            messages: std::mem::take(&mut self.msgs),
            persisted_messages: std::mem::take(&mut self.persisted_msgs),
            committed_entries: Vec::new(),
            read_states: std::mem::take(&mut self.read_states),
            sent_round: self.sent_round.take(),
            acked_round: self.acked_round.take(),
        };
        rd.committed_entries = self.log.next_committed();
        if let Some(last) = rd.committed_entries.last() {
            // Count them as applied now so a `ready()` after `advance` does not repeat them.
            self.log.applied = self.log.applied.max(last.index);
        }
        self.prev_soft = soft;
        if let Some(hs) = rd.hard_state {
            self.prev_hard = hs;
        }
        #[cfg(feature = "planted-bugs")]
        if self.bug(Bug::VoteBeforePersist)
            && let Some(hs) = rd.hard_state.as_mut()
        {
            // The vote never reaches the disk: after a crash it is forgotten.
            hs.vote = NO_NODE;
        }
        self.ready_outstanding = true;
        rd
    }

    /// Tells the core the caller finished `rd`: its snapshot and entries are durable and its
    /// committed entries applied.
    pub fn advance(&mut self, rd: &Ready) {
        self.ready_outstanding = false;
        let last_stored = rd.entries.last().map(|e| (e.index, e.term));
        let last_applied = rd.committed_entries.last().map(|e| e.index);
        self.log
            .advance(rd.snapshot.as_ref(), last_stored, last_applied);
        if self.role == Role::Leader && last_stored.is_some() && self.maybe_commit() {
            // The leader counts its own copy only now that it is durable (§3 of DESIGN.md).
            self.need_bcast = true;
        }
    }
}

#[cfg(not(feature = "planted-bugs"))]
#[derive(Clone, Copy)]
enum Bug {
    CommitPreviousTerm,
    VoteWithoutLogCheck,
    VoteBeforePersist,
    IgnorePrevLogCheck,
    VoteWhileCatchingUp,
}

#[cfg(feature = "planted-bugs")]
use crate::planted::Bug;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Tally {
    Won,
    Lost,
    Pending,
}

/// A rejected append: `index` is the `prev_log_index` that did not match (0: "I lost entries you
/// think I have"), with the follower's hint for the next probe.
fn reject(index: Index, reject_hint: Index, reject_hint_term: Term) -> MessageBody {
    MessageBody::AppendEntriesResponse {
        success: false,
        index,
        reject_hint,
        reject_hint_term,
    }
}

fn accept(index: Index) -> MessageBody {
    MessageBody::AppendEntriesResponse {
        success: true,
        index,
        reject_hint: 0,
        reject_hint_term: 0,
    }
}
