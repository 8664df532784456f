//! The safety checker: Raft's guarantees (Figure 3 of the paper) as incremental bookkeeping.
//!
//! The cluster calls the `on_*` hooks as things happen; each hook checks only what just changed
//! against global maps built up during the run, so checking after every step stays cheap even for
//! thousands of seeds. A hook returns a [`Violation`] (never panics) so that a run can report
//! which invariant broke, and planted-bug tests can assert on it.
//!
//! What is checked, and where the paper states it:
//! - **Election Safety** (§5.2): at most one leader per term — a global `term -> leader` map;
//!   below it, at most one vote granted per voter and term, and durable votes never change.
//! - **Log Matching** (§5.3): every persisted entry's chain hash (hash of the whole prefix) is
//!   recorded per `(index, term)`; two logs with the same `(index, term)` but different prefixes
//!   disagree on the hash.
//! - **Leader Completeness** (§5.4): a node that becomes leader of term `t` holds, in its durable
//!   log or snapshot, the highest entry any leader of a term `< t` was seen to commit.
//! - **State Machine Safety** (§5.4.3): one global `index -> (term, payload, state hash)` map of
//!   applied entries; any node applying something else at an index, or reaching a different state,
//!   breaks it. Snapshots are held to the same map.
//! - **Commitment rule** (§5.4.2, optional): a leader's commit index only ever advances onto an
//!   entry of its own term ("Raft never commits log entries from previous terms by counting").
//! - **Durable commit**: a restarted node's persisted commit index is covered by its durable log
//!   and agrees with what was applied there; a persisted commit index never goes back.
//! - **ReadIndex** (thesis §6.4): a confirmed read's index is at least the highest index known
//!   committed anywhere when the read was requested (otherwise the read could be stale).
//! - **Membership** (thesis §4): a leader is a voter of its own configuration, was added at
//!   some point, and does not lead a term later than the one its removal committed in.
//! - **Lease** (thesis §6.4.1, checked by the cluster, which knows the ticks): no node becomes
//!   leader while a leader of an older term still holds a lease — a lease starting at the tick a
//!   heartbeat round was sent and ending `election_tick` ticks later, once a quorum acknowledged
//!   the round (`Ready::sent_round` / `acked_round`), and void once a transfer was requested or
//!   an election was forced with `campaign()` (both bypass the election timer the lease rests
//!   on).
//! - **Liveness** is checked by the driver, not here (see `sim.rs`); the cluster also checks the
//!   `Ready` contract itself (entries contiguous, applied entries durable and in order, snapshot
//!   data delivered before it is installed, the core's log equal to the durable one whenever no
//!   `Ready` is pending) and reports breaches as [`Invariant::Contract`].

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;

use raftkv_raft::{
    ConfChangeType, ConfState, Entry, EntryPayload, HardState, Index, NO_NODE, NodeId, ReadState,
    SnapshotMeta, Term,
};

use super::disk::{Disk, SnapData, payload_hash};

/// Which guarantee broke.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Invariant {
    /// Two leaders in one term (§5.2).
    ElectionSafety,
    /// Two logs agree on an entry's index and term but not on what precedes it (§5.3).
    LogMatching,
    /// A new leader lacks a committed entry (§5.4.1).
    LeaderCompleteness,
    /// Two nodes applied different entries (or reached different states) at one index (§5.4.3).
    StateMachineSafety,
    /// A leader advanced its commit index onto an entry of an earlier term (§5.4.2).
    CommitRule,
    /// A node's durable state lost a committed entry across a crash.
    DurableCommit,
    /// A ReadIndex read could return stale data (thesis §6.4).
    ReadIndex,
    /// A removed or never-added node became leader (thesis §4).
    Membership,
    /// A new leader was elected while an older leader still held a read lease (thesis §6.4.1).
    Lease,
    /// No leader, or no fresh commit, within the bound after the last fault healed.
    Liveness,
    /// The core broke the `Ready`/API contract the harness relies on (e.g. asked to install a
    /// snapshot that was never delivered, or to apply an entry that is not durable).
    Contract,
}

impl Invariant {
    /// A short, stable name for reports and assertions.
    pub fn name(self) -> &'static str {
        match self {
            Invariant::ElectionSafety => "election-safety",
            Invariant::LogMatching => "log-matching",
            Invariant::LeaderCompleteness => "leader-completeness",
            Invariant::StateMachineSafety => "state-machine-safety",
            Invariant::CommitRule => "commit-rule",
            Invariant::DurableCommit => "durable-commit",
            Invariant::ReadIndex => "read-index",
            Invariant::Membership => "membership",
            Invariant::Lease => "lease",
            Invariant::Liveness => "liveness",
            Invariant::Contract => "contract",
        }
    }
}

/// A broken guarantee, with enough context to start debugging from the replay.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Violation {
    /// What broke.
    pub invariant: Invariant,
    /// The global tick at which it was detected.
    pub tick: u64,
    /// The node at which it was detected, if any.
    pub node: Option<NodeId>,
    /// A human-readable description.
    pub detail: String,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "[{}] at tick {}", self.invariant.name(), self.tick)?;
        if let Some(n) = self.node {
            write!(f, " on node {n}")?;
        }
        write!(f, ": {}", self.detail)
    }
}

impl std::error::Error for Violation {}

/// What the whole cluster agreed was applied at one index.
#[derive(Clone, Copy, Debug)]
struct AppliedRec {
    term: Term,
    /// Unknown when the index was only ever reached through a snapshot.
    payload: Option<u64>,
    sm_hash: u64,
}

/// The global bookkeeping behind the checks. One per cluster; survives node crashes (it is the
/// omniscient observer, not part of any node).
#[derive(Debug, Default)]
pub struct Checker {
    /// The global tick, stamped on violations (the cluster keeps it current).
    pub now: u64,
    /// Election Safety: the leader of each term.
    leaders: HashMap<Term, NodeId>,
    /// Log Matching: the chain hash of every `(index, term)` ever persisted anywhere.
    chains: HashMap<(Index, Term), u64>,
    /// State Machine Safety: what was applied at each index (dense; index 0 unused).
    applied: Vec<Option<AppliedRec>>,
    /// Leader Completeness: the highest commit index seen at the leader of each term, with the
    /// chain hash of the leader's log there (when it was durable).
    leader_commits: BTreeMap<Term, (Index, Option<u64>)>,
    /// The highest commit index observed on any node (every node's commit index is a real one).
    pub max_commit: Index,
    /// Committed configurations by the index at which they took effect (from applied
    /// configuration entries and installed snapshots), to check snapshot metadata.
    confs: BTreeMap<Index, ConfState>,
    /// Every id that appeared in a persisted configuration.
    ever_members: BTreeSet<NodeId>,
    /// Ids whose removal is committed (and not undone by a later committed re-add), with the
    /// term of the node that first applied the removal (at least the term it committed in).
    removed: BTreeMap<NodeId, Term>,
    /// Votes granted: `(voter, term) -> candidate` (§5.2: at most one vote per term).
    votes: HashMap<(NodeId, Term), NodeId>,
    /// Outstanding ReadIndex requests: `(node, ctx) -> highest commit known at request time`.
    reads: HashMap<(NodeId, u64), Index>,
    /// Check the §5.4.2 commitment rule directly (see [`Invariant::CommitRule`]).
    pub commit_rule: bool,
}

impl Checker {
    /// A checker; `commit_rule` switches on the direct §5.4.2 check.
    pub fn new(commit_rule: bool) -> Self {
        Self {
            commit_rule,
            applied: vec![None],
            ..Self::default()
        }
    }

    fn violation(&self, invariant: Invariant, node: NodeId, detail: String) -> Violation {
        Violation {
            invariant,
            tick: self.now,
            node: Some(node),
            detail,
        }
    }

    /// The number of distinct indexes applied anywhere (= committed entries seen applied).
    pub fn committed_len(&self) -> u64 {
        self.applied.len() as u64 - 1
    }

    /// Whether `id`'s removal from the cluster is committed.
    pub fn is_removed(&self, id: NodeId) -> bool {
        self.removed.contains_key(&id)
    }

    /// The leader recorded for `term`, if any.
    pub fn leader_of(&self, term: Term) -> Option<NodeId> {
        self.leaders.get(&term).copied()
    }

    /// The entry term and payload hash applied at `index`, if any node applied it.
    pub fn applied_at(&self, index: Index) -> Option<(Term, Option<u64>)> {
        self.applied
            .get(index as usize)
            .copied()
            .flatten()
            .map(|r| (r.term, r.payload))
    }

    /// Log Matching: entries just made durable on `node` (`(index, term, chain hash)`, from
    /// [`Disk::append`]), plus the entries themselves for the membership bookkeeping.
    pub fn on_persist(
        &mut self,
        node: NodeId,
        written: &[(Index, Term, u64)],
        entries: &[Entry],
    ) -> Result<(), Violation> {
        for &(index, term, chain) in written {
            match self.chains.get(&(index, term)) {
                Some(&known) if known != chain => {
                    return Err(self.violation(
                        Invariant::LogMatching,
                        node,
                        format!(
                            "entry (index {index}, term {term}) follows a different log prefix \
                             than the same entry elsewhere (chain hash {chain:#x} vs {known:#x})"
                        ),
                    ));
                }
                Some(_) => {}
                None => {
                    self.chains.insert((index, term), chain);
                }
            }
        }
        for e in entries {
            if let EntryPayload::Config { conf, .. } = &e.payload {
                self.ever_members.extend(conf.members());
            }
        }
        Ok(())
    }

    /// A node made a snapshot durable (taken itself or received from a leader): its chain hash,
    /// state and configuration must agree with what the cluster committed at that index.
    pub fn on_snapshot(
        &mut self,
        node: NodeId,
        meta: &SnapshotMeta,
        data: &SnapData,
    ) -> Result<(), Violation> {
        if data.index != meta.index || data.term != meta.term {
            return Err(self.violation(
                Invariant::Contract,
                node,
                format!(
                    "snapshot metadata (index {}, term {}) does not describe the data it came \
                     with (index {}, term {})",
                    meta.index, meta.term, data.index, data.term
                ),
            ));
        }
        match self.chains.get(&(meta.index, meta.term)) {
            Some(&known) if known != data.chain => {
                return Err(self.violation(
                    Invariant::LogMatching,
                    node,
                    format!(
                        "snapshot at (index {}, term {}) covers a different log prefix than the \
                         entry of that index and term elsewhere",
                        meta.index, meta.term
                    ),
                ));
            }
            Some(_) => {}
            None => {
                self.chains.insert((meta.index, meta.term), data.chain);
            }
        }
        self.check_state(node, meta.index, meta.term, None, data.sm_hash, "snapshot")?;
        if let Some((at, conf)) = self.confs.range(..=meta.index).next_back()
            && *conf != meta.conf
        {
            return Err(self.violation(
                Invariant::StateMachineSafety,
                node,
                format!(
                    "snapshot at index {} carries configuration {:?}, but the configuration \
                     committed at index {at} (the latest at or before it) is {:?}",
                    meta.index, meta.conf, conf
                ),
            ));
        }
        self.confs
            .entry(meta.index)
            .or_insert_with(|| meta.conf.clone());
        self.ever_members.extend(meta.conf.members());
        Ok(())
    }

    /// State Machine Safety for one applied index (entry or snapshot).
    fn check_state(
        &mut self,
        node: NodeId,
        index: Index,
        term: Term,
        payload: Option<u64>,
        sm_hash: u64,
        what: &str,
    ) -> Result<(), Violation> {
        let i = index as usize;
        if self.applied.len() <= i {
            self.applied.resize(i + 1, None);
        }
        match self.applied[i] {
            None => {
                self.applied[i] = Some(AppliedRec {
                    term,
                    payload,
                    sm_hash,
                });
                Ok(())
            }
            Some(rec) => {
                let payload_differs =
                    matches!((rec.payload, payload), (Some(a), Some(b)) if a != b);
                if rec.term != term || payload_differs {
                    return Err(self.violation(
                        Invariant::StateMachineSafety,
                        node,
                        format!(
                            "{what} applies (index {index}, term {term}) but another node \
                             applied (index {index}, term {}){}",
                            rec.term,
                            if payload_differs {
                                " with a different payload"
                            } else {
                                ""
                            }
                        ),
                    ));
                }
                if rec.sm_hash != sm_hash {
                    return Err(self.violation(
                        Invariant::StateMachineSafety,
                        node,
                        format!(
                            "after {what} at index {index} the state machine differs from \
                             another node's at the same index"
                        ),
                    ));
                }
                if rec.payload.is_none() && payload.is_some() {
                    self.applied[i] = Some(AppliedRec { payload, ..rec });
                }
                Ok(())
            }
        }
    }

    /// State Machine Safety: `node`, in `term`, applied `e`, reaching state hash `sm_hash`.
    pub fn on_apply(
        &mut self,
        node: NodeId,
        term: Term,
        e: &Entry,
        sm_hash: u64,
    ) -> Result<(), Violation> {
        self.check_state(
            node,
            e.index,
            e.term,
            Some(payload_hash(&e.payload)),
            sm_hash,
            "applying",
        )?;
        if let EntryPayload::Config { change, conf } = &e.payload {
            self.confs.entry(e.index).or_insert_with(|| conf.clone());
            if let Some(cc) = change {
                match cc.change_type {
                    ConfChangeType::RemoveNode => {
                        self.removed.entry(cc.node_id).or_insert(term);
                    }
                    ConfChangeType::AddLearner => {
                        self.removed.remove(&cc.node_id);
                    }
                    ConfChangeType::PromoteLearner => {}
                }
            }
        }
        Ok(())
    }

    /// `node` just became leader of `term`; `disk` is its durable state, which at this point holds
    /// its whole log (the harness persists every `Ready` before the next step), and `conf` is the
    /// configuration it believes in.
    pub fn on_leader(
        &mut self,
        node: NodeId,
        term: Term,
        disk: &Disk,
        conf: &ConfState,
    ) -> Result<(), Violation> {
        // Election Safety (§5.2).
        if let Some(&other) = self.leaders.get(&term)
            && other != node
        {
            return Err(self.violation(
                Invariant::ElectionSafety,
                node,
                format!(
                    "node {node} became leader of term {term}, which node {other} already leads"
                ),
            ));
        }
        self.leaders.insert(term, node);

        // Membership: only voters lead; a node never added never leads; and a node whose
        // removal committed in term T never leads a later term (thesis §4.1: the removal's commit
        // quorum holds the removal entry and refuses it). It may still win an election of an
        // earlier term whose votes were cast before the removal committed: such a stale leader
        // can commit nothing and is harmless.
        if !conf.voters.contains(&node) {
            return Err(self.violation(
                Invariant::Membership,
                node,
                format!(
                    "node {node} became leader of term {term} but is not a voter of its \
                     configuration {conf:?}"
                ),
            ));
        }
        if !self.ever_members.contains(&node) {
            return Err(self.violation(
                Invariant::Membership,
                node,
                format!("node {node} became leader of term {term} although it was never added"),
            ));
        }
        if let Some(&removed_in) = self.removed.get(&node)
            && term > removed_in
        {
            return Err(self.violation(
                Invariant::Membership,
                node,
                format!(
                    "node {node} became leader of term {term}, although its removal was \
                     committed by term {removed_in}"
                ),
            ));
        }

        // Leader Completeness (§5.4): the highest index committed by any earlier term's leader.
        // Log Matching (checked on every append) extends this to every entry before it.
        let Some((&cterm, &(cindex, cchain))) = self
            .leader_commits
            .range(..term)
            .max_by_key(|(t, (i, _))| (*i, *t))
        else {
            return Ok(());
        };
        let snap = disk.snapshot_index();
        if cindex < snap {
            // Covered by the snapshot, whose contents the state-machine check vouched for.
            return Ok(());
        }
        match (disk.chain_at(cindex), cchain) {
            (None, _) => Err(self.violation(
                Invariant::LeaderCompleteness,
                node,
                format!(
                    "node {node} became leader of term {term} with a log ending at index {}, \
                     but index {cindex} was committed by the leader of term {cterm}",
                    disk.last_index()
                ),
            )),
            (Some(mine), Some(committed)) if mine != committed => Err(self.violation(
                Invariant::LeaderCompleteness,
                node,
                format!(
                    "node {node} became leader of term {term} but its entry at index {cindex} \
                     (term {:?}) is not the one the leader of term {cterm} committed",
                    disk.term_at(cindex)
                ),
            )),
            _ => Ok(()),
        }
    }

    /// The leader `node` of `term` has commit index `commit`; it had `commit_at_election` when
    /// it won. Records the commit for Leader Completeness and checks the commitment rule.
    pub fn on_leader_commit(
        &mut self,
        node: NodeId,
        term: Term,
        commit: Index,
        commit_at_election: Index,
        disk: &Disk,
    ) -> Result<(), Violation> {
        let known = self.leader_commits.get(&term).map_or(0, |(i, _)| *i);
        if commit <= known {
            return Ok(());
        }
        self.leader_commits
            .insert(term, (commit, disk.chain_at(commit)));
        if self.commit_rule
            && commit > commit_at_election
            && let Some(t) = disk.term_at(commit)
            && t != term
        {
            return Err(self.violation(
                Invariant::CommitRule,
                node,
                format!(
                    "the leader of term {term} advanced its commit index to {commit}, an entry \
                     of term {t}: entries of earlier terms must not be committed by counting \
                     replicas (§5.4.2)"
                ),
            ));
        }
        Ok(())
    }

    /// A restarted node's durable state: its persisted commit index must be covered by its log,
    /// and agree with what the cluster applied there.
    pub fn on_restart(&mut self, node: NodeId, disk: &Disk) -> Result<(), Violation> {
        let commit = disk.hard_state.commit;
        if commit > disk.last_index() {
            return Err(self.violation(
                Invariant::DurableCommit,
                node,
                format!(
                    "restarted with commit index {commit} but its durable log ends at {}",
                    disk.last_index()
                ),
            ));
        }
        if let (Some(mine), Some((term, _))) = (disk.term_at(commit), self.applied_at(commit))
            && mine != term
        {
            return Err(self.violation(
                Invariant::DurableCommit,
                node,
                format!(
                    "restarted with entry (index {commit}, term {mine}) at its commit index, \
                     but the cluster applied term {term} there"
                ),
            ));
        }
        Ok(())
    }

    /// `voter` sent a granted (real, not pre-) vote to `candidate` in `term`. §5.2: "each server
    /// will vote for at most one candidate in a given term" — across crashes too, which is why
    /// the vote must be durable before the grant leaves.
    pub fn on_vote_granted(
        &mut self,
        voter: NodeId,
        term: Term,
        candidate: NodeId,
    ) -> Result<(), Violation> {
        match self.votes.insert((voter, term), candidate) {
            Some(earlier) if earlier != candidate => Err(self.violation(
                Invariant::ElectionSafety,
                voter,
                format!(
                    "n{voter} granted its vote in term {term} to n{candidate} after granting it \
                     to n{earlier}"
                ),
            )),
            _ => Ok(()),
        }
    }

    /// `node` persists `new` over `old`: the term never goes back, a vote cast in a term is never
    /// changed (Fig. 2 `votedFor`), the commit index never goes back.
    pub fn on_hard_state(
        &mut self,
        node: NodeId,
        old: &HardState,
        new: &HardState,
    ) -> Result<(), Violation> {
        if new.term < old.term
            || (new.term == old.term && old.vote != NO_NODE && new.vote != old.vote)
        {
            return Err(self.violation(
                Invariant::ElectionSafety,
                node,
                format!(
                    "durable (term, vote) went from {:?} to {:?}",
                    (old.term, old.vote),
                    (new.term, new.vote)
                ),
            ));
        }
        if new.commit < old.commit {
            return Err(self.violation(
                Invariant::DurableCommit,
                node,
                format!(
                    "durable commit index went back from {} to {}",
                    old.commit, new.commit
                ),
            ));
        }
        Ok(())
    }

    /// `node` accepted `read_index(ctx)`: remember how far the cluster had committed.
    pub fn on_read_index(&mut self, node: NodeId, ctx: u64) {
        self.reads.insert((node, ctx), self.max_commit);
    }

    /// `node` confirmed a read: it must not be older than the request.
    pub fn on_read_state(&mut self, node: NodeId, rs: &ReadState) -> Result<(), Violation> {
        let Some(required) = self.reads.remove(&(node, rs.ctx)) else {
            return Err(self.violation(
                Invariant::Contract,
                node,
                format!(
                    "ReadState for ctx {} that was never requested on this node",
                    rs.ctx
                ),
            ));
        };
        if rs.index < required {
            return Err(self.violation(
                Invariant::ReadIndex,
                node,
                format!(
                    "read ctx {} confirmed at index {} but index {required} was already \
                     committed when it was requested: the read could be stale",
                    rs.ctx, rs.index
                ),
            ));
        }
        Ok(())
    }

    /// Forget reads a crashed node can no longer answer.
    pub fn forget_reads(&mut self, node: NodeId) {
        self.reads.retain(|(n, _), _| *n != node);
    }
}
