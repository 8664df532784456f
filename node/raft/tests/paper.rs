//! Named scenario tests, one per rule of the Raft paper (Ongaro & Ousterhout 2014, "§") and
//! Ongaro's thesis (2014, "thesis §"), in the spirit of raft-rs' `test_raft_paper.rs`.
//!
//! Each test drives real cores through a small deterministic network (`Cluster` below) that
//! delivers messages in FIFO order, can cut links, and persists every `Ready` to an in-memory disk
//! so nodes can be restarted. The randomized, fault-injecting simulation lives in
//! `simulation.rs`; these tests pin down one behaviour each, so a regression names its rule.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use bytes::Bytes;
use raftkv_raft::*;

/// What a node has on stable storage.
#[derive(Clone, Debug, Default)]
struct Disk {
    hard_state: HardState,
    snapshot: Option<SnapshotMeta>,
    entries: Vec<Entry>,
}

impl Disk {
    fn store(&mut self, rd: &Ready) {
        if let Some(meta) = &rd.snapshot {
            self.entries.retain(|e| e.index > meta.index);
            if self
                .entries
                .first()
                .is_some_and(|e| e.index != meta.index + 1)
            {
                self.entries.clear();
            }
            self.snapshot = Some(meta.clone());
        }
        if let Some(first) = rd.entries.first() {
            self.entries.retain(|e| e.index < first.index);
            self.entries.extend(rd.entries.iter().cloned());
        }
        if let Some(hs) = rd.hard_state {
            self.hard_state = hs;
        }
    }

    fn initial_state(&self) -> InitialState {
        InitialState {
            hard_state: self.hard_state,
            snapshot: self.snapshot.clone(),
            entries: self.entries.clone(),
            applied: self.snapshot.as_ref().map_or(0, |s| s.index),
        }
    }
}

/// A cluster of cores on a FIFO network with cuttable links.
struct Cluster {
    nodes: BTreeMap<NodeId, RawNode>,
    disks: BTreeMap<NodeId, Disk>,
    configs: BTreeMap<NodeId, Config>,
    queue: VecDeque<Message>,
    /// Directed links that drop everything.
    cut: BTreeSet<(NodeId, NodeId)>,
    /// Everything delivered, for tests that inspect traffic.
    delivered: Vec<Message>,
    /// Fail every snapshot transfer (the transport reports the failure).
    fail_snapshots: bool,
    applied: BTreeMap<NodeId, Vec<Entry>>,
    read_states: BTreeMap<NodeId, Vec<ReadState>>,
    acked_rounds: BTreeMap<NodeId, u64>,
}

impl Cluster {
    /// `n` bootstrapped voters 1..=n with default settings.
    fn new(n: u64) -> Self {
        Self::with(n, |_| {})
    }

    fn with(n: u64, tweak: impl Fn(&mut Config)) -> Self {
        let mut c = Cluster {
            nodes: BTreeMap::new(),
            disks: BTreeMap::new(),
            configs: BTreeMap::new(),
            queue: VecDeque::new(),
            cut: BTreeSet::new(),
            delivered: Vec::new(),
            fail_snapshots: false,
            applied: BTreeMap::new(),
            read_states: BTreeMap::new(),
            acked_rounds: BTreeMap::new(),
        };
        let boot = RawNode::bootstrap(1..=n);
        for id in 1..=n {
            let mut cfg = Config::new(id);
            tweak(&mut cfg);
            c.start(id, cfg, boot.clone());
        }
        c
    }

    fn start(&mut self, id: NodeId, cfg: Config, state: InitialState) {
        let disk = Disk {
            hard_state: state.hard_state,
            snapshot: state.snapshot.clone(),
            entries: state.entries.clone(),
        };
        self.nodes
            .insert(id, RawNode::new(cfg.clone(), state).expect("valid state"));
        self.disks.insert(id, disk);
        self.configs.insert(id, cfg);
    }

    /// Adds a node with empty state (as a brand-new member that waits to be added).
    fn add_empty(&mut self, id: NodeId) {
        self.start(id, Config::new(id), InitialState::default());
    }

    fn node(&self, id: NodeId) -> &RawNode {
        &self.nodes[&id]
    }

    fn node_mut(&mut self, id: NodeId) -> &mut RawNode {
        self.nodes.get_mut(&id).expect("node exists")
    }

    /// Handles every pending `Ready` in the order the contract in `types.rs` gives.
    fn process_readies(&mut self) -> bool {
        let mut any = false;
        let ids: Vec<NodeId> = self.nodes.keys().copied().collect();
        for id in ids {
            let node = self.nodes.get_mut(&id).expect("node exists");
            if !node.has_ready() {
                continue;
            }
            any = true;
            let rd = node.ready();
            self.queue.extend(rd.messages.iter().cloned());
            self.disks.get_mut(&id).expect("disk").store(&rd);
            self.queue.extend(rd.persisted_messages.iter().cloned());
            if let Some(meta) = &rd.snapshot {
                // The state machine is replaced by the snapshot's; record it as a marker.
                let applied = self.applied.entry(id).or_default();
                applied.retain(|e| e.index <= meta.index);
            }
            self.applied
                .entry(id)
                .or_default()
                .extend(rd.committed_entries.iter().cloned());
            self.read_states
                .entry(id)
                .or_default()
                .extend(rd.read_states.iter().copied());
            if let Some(r) = rd.acked_round {
                self.acked_rounds.insert(id, r);
            }
            self.nodes.get_mut(&id).expect("node exists").advance(&rd);
        }
        any
    }

    /// Delivers messages and processes readies until nothing moves.
    fn settle(&mut self) {
        for _ in 0..10_000 {
            let progressed = self.process_readies();
            let mut delivered_any = false;
            while let Some(m) = self.queue.pop_front() {
                delivered_any = true;
                if self.cut.contains(&(m.from, m.to)) || !self.nodes.contains_key(&m.to) {
                    continue;
                }
                if let MessageBody::InstallSnapshot { .. } = m.body {
                    let (from, to) = (m.from, m.to);
                    let ok = !self.fail_snapshots;
                    self.node_mut(from).report_snapshot(to, ok);
                    if !ok {
                        continue;
                    }
                }
                self.delivered.push(m.clone());
                let to = m.to;
                self.node_mut(to).step(m);
            }
            if !progressed && !delivered_any {
                return;
            }
        }
        panic!("cluster did not settle");
    }

    /// Delivers everything but AppendEntries for a few rounds: elections complete, but the new
    /// leader's log (its no-op included) reaches nobody.
    fn deliver_all_but_appends(&mut self, rounds: usize) {
        for _ in 0..rounds {
            self.process_readies();
            let msgs: Vec<Message> = self.queue.drain(..).collect();
            for m in msgs {
                if !matches!(m.body, MessageBody::AppendEntries { .. }) {
                    let to = m.to;
                    self.node_mut(to).step(m);
                }
            }
        }
    }

    fn tick(&mut self, id: NodeId, ticks: u64) {
        for _ in 0..ticks {
            self.node_mut(id).tick();
            self.settle();
        }
    }

    fn tick_all(&mut self, ticks: u64) {
        for _ in 0..ticks {
            let ids: Vec<NodeId> = self.nodes.keys().copied().collect();
            for id in ids {
                self.node_mut(id).tick();
            }
            self.settle();
        }
    }

    /// Makes `id` campaign and settles; asserts it won.
    fn elect(&mut self, id: NodeId) {
        self.node_mut(id).campaign();
        self.settle();
        assert_eq!(
            self.node(id).role(),
            Role::Leader,
            "node {id} should have won"
        );
    }

    fn isolate(&mut self, id: NodeId) {
        for &other in self.nodes.keys() {
            if other != id {
                self.cut.insert((id, other));
                self.cut.insert((other, id));
            }
        }
    }

    fn heal(&mut self) {
        self.cut.clear();
    }

    fn propose(&mut self, id: NodeId, data: &'static [u8]) -> Result<Index, Error> {
        let r = self.node_mut(id).propose(Bytes::from_static(data));
        self.settle();
        r
    }

    /// Crashes `id` (losing volatile state) and restarts it from its disk.
    fn restart(&mut self, id: NodeId) {
        let state = self.disks[&id].initial_state();
        let cfg = self.configs[&id].clone();
        self.queue.retain(|m| m.to != id && m.from != id);
        self.applied.remove(&id);
        self.nodes
            .insert(id, RawNode::new(cfg, state).expect("recovered state"));
    }

    fn applied_data(&self, id: NodeId) -> Vec<Bytes> {
        self.applied
            .get(&id)
            .map(|es| {
                es.iter()
                    .filter_map(|e| match &e.payload {
                        EntryPayload::Normal(d) => Some(d.clone()),
                        _ => None,
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    fn leaders(&self) -> Vec<NodeId> {
        self.nodes
            .values()
            .filter(|n| n.role() == Role::Leader)
            .map(|n| n.id())
            .collect()
    }
}

fn entry(index: Index, term: Term) -> Entry {
    Entry {
        term,
        index,
        payload: EntryPayload::Normal(Bytes::from(format!("{index}@{term}"))),
    }
}

/// A config for nodes restarted from `state_with_terms`: check-quorum off, since these tests are
/// about log rules and a restarted node would otherwise refuse votes for one election timeout
/// (see `restarted_node_refuses_votes_for_one_election_timeout`).
fn restarted_config(id: NodeId) -> Config {
    let mut cfg = Config::new(id);
    cfg.check_quorum = false;
    cfg
}

/// A state whose log is the bootstrap configuration followed by entries of the given terms.
fn state_with_terms(voters: u64, terms: &[Term], current_term: Term) -> InitialState {
    let mut s = RawNode::bootstrap(1..=voters);
    for (i, &t) in terms.iter().enumerate() {
        s.entries.push(entry(i as u64 + 2, t));
    }
    s.hard_state.term = current_term;
    s
}

// ----- §5.2 Leader election ---------------------------------------------------------------------

/// §5.2: a follower that hears nothing for an election timeout campaigns, and with pre-vote
/// (thesis §9.6) first polls without bumping its term; it wins with a majority of votes.
#[test]
fn election_timeout_starts_pre_vote_then_election() {
    let mut c = Cluster::new(3);
    let term = c.node(1).term();
    // Randomized timeouts lie in [T, 2T): nothing may happen before T ticks.
    for _ in 0..9 {
        c.node_mut(1).tick();
    }
    assert_eq!(c.node(1).role(), Role::Follower);
    for _ in 0..10 {
        c.node_mut(1).tick();
        if c.node(1).role() != Role::Follower {
            break;
        }
    }
    assert_eq!(c.node(1).role(), Role::PreCandidate);
    assert_eq!(c.node(1).term(), term, "pre-vote must not change the term");
    c.settle();
    assert_eq!(c.node(1).role(), Role::Leader);
    assert_eq!(c.node(1).term(), term + 1);
    assert_eq!(c.node(2).leader_id(), 1);
}

/// §5.2: election timeouts are randomized in [T, 2T) so that split votes are rare.
#[test]
fn election_timeouts_are_randomized() {
    let mut seen = BTreeSet::new();
    for seed in 0..50 {
        let mut cfg = Config::new(1);
        cfg.seed = seed;
        cfg.pre_vote = false;
        let mut n = RawNode::new(cfg, RawNode::bootstrap([1, 2, 3])).expect("node");
        let mut ticks = 0;
        while n.role() == Role::Follower {
            n.tick();
            ticks += 1;
        }
        assert!(
            (10..20).contains(&ticks),
            "timeout {ticks} outside [10, 20)"
        );
        seen.insert(ticks);
    }
    assert!(seen.len() > 3, "timeouts are not spread: {seen:?}");
}

/// §5.2: each server votes for at most one candidate in a term, first come first served.
#[test]
fn votes_at_most_once_per_term() {
    let mut c = Cluster::with(3, |cfg| cfg.pre_vote = false);
    c.isolate(3);
    c.elect(1);
    let term = c.node(1).term();
    // Node 2 voted for 1 in `term`; a request from 3 in the same term must be refused.
    let req = Message {
        from: 3,
        to: 2,
        term,
        body: MessageBody::RequestVote {
            pre_vote: false,
            last_log_index: 100,
            last_log_term: 100,
            leader_transfer: true,
        },
    };
    c.node_mut(2).step(req);
    let rd = c.node_mut(2).ready();
    let answers: Vec<_> = rd.messages.iter().chain(&rd.persisted_messages).collect();
    assert!(answers.iter().any(|m| matches!(
        m.body,
        MessageBody::RequestVoteResponse {
            granted: false,
            pre_vote: false
        }
    )));
    assert!(!answers.iter().any(|m| matches!(
        m.body,
        MessageBody::RequestVoteResponse { granted: true, .. }
    )));
    c.node_mut(2).advance(&rd);
}

/// §5.2: a candidate that hears from a leader of its own term returns to follower.
#[test]
fn candidate_steps_down_for_leader_of_same_term() {
    let mut c = Cluster::with(3, |cfg| cfg.pre_vote = false);
    c.isolate(3);
    c.elect(1);
    let term = c.node(1).term();
    // Put node 3 into candidacy in the leader's term by hand.
    c.heal();
    c.node_mut(3).step(Message {
        from: 1,
        to: 3,
        term,
        body: MessageBody::Heartbeat {
            commit: 0,
            round: 0,
        },
    });
    c.settle();
    assert_eq!(c.node(3).role(), Role::Follower);
    assert_eq!(c.node(3).leader_id(), 1);
}

/// §5.4.1: a voter refuses a candidate whose log is less up-to-date than its own.
#[test]
fn election_restriction_refuses_stale_candidate() {
    let mut c = Cluster::with(0, |_| {});
    // Nodes 1 and 2 hold an entry of term 3; node 3's log ends in term 2.
    for (id, terms) in [(1, vec![2, 3]), (2, vec![2, 3]), (3, vec![2, 2, 2])] {
        let mut cfg = restarted_config(id);
        cfg.pre_vote = false;
        c.start(id, cfg, state_with_terms(3, &terms, 3));
    }
    c.node_mut(3).campaign();
    c.settle();
    assert_ne!(c.node(3).role(), Role::Leader, "a stale log must not win");
    c.elect(1);
}

/// §5.4.1 with the longer-log tie-break: same last term, longer log wins.
#[test]
fn election_restriction_compares_length_on_equal_terms() {
    let mut c = Cluster::with(0, |_| {});
    for (id, terms) in [(1, vec![2]), (2, vec![2, 2]), (3, vec![2, 2])] {
        let mut cfg = restarted_config(id);
        cfg.pre_vote = false;
        c.start(id, cfg, state_with_terms(3, &terms, 2));
    }
    c.node_mut(1).campaign();
    c.settle();
    assert_ne!(c.node(1).role(), Role::Leader);
    c.elect(2);
}

// ----- §5.3 Log replication ---------------------------------------------------------------------

/// §5.3 / §8: a new leader appends a no-op of its term and commits it, then replicates
/// proposals to every follower, which apply them in order.
#[test]
fn leader_appends_noop_and_replicates() {
    let mut c = Cluster::new(3);
    c.elect(1);
    let noop_index = c.node(1).commit_index();
    let noop = c.applied[&1]
        .iter()
        .find(|e| e.index == noop_index)
        .expect("applied");
    assert_eq!(noop.payload, EntryPayload::Noop);
    assert_eq!(noop.term, c.node(1).term());
    c.propose(1, b"a").expect("leader accepts");
    c.propose(1, b"b").expect("leader accepts");
    for id in 1..=3 {
        assert_eq!(
            c.applied_data(id),
            vec![Bytes::from("a"), Bytes::from("b")],
            "node {id}"
        );
    }
}

/// §5.3: an entry is committed once stored on a majority, even if one follower is down.
#[test]
fn commits_with_majority_only() {
    let mut c = Cluster::new(3);
    c.elect(1);
    c.isolate(3);
    let index = c.propose(1, b"x").expect("accepted");
    assert!(c.node(1).commit_index() >= index);
    assert!(c.node(3).commit_index() < index);
    c.isolate(2);
    c.isolate(3);
    let index = c.propose(1, b"y").expect("accepted");
    assert!(c.node(1).commit_index() < index, "no majority, no commit");
}

/// §5.3: the consistency check rejects an append whose previous entry does not match, and a
/// conflicting suffix is replaced by the leader's entries.
#[test]
fn follower_rejects_mismatch_and_replaces_conflicting_suffix() {
    let mut c = Cluster::with(0, |_| {});
    // Leader 1 has terms [2, 3]; follower 2 has the diverged suffix [2, 2, 2].
    for (id, terms) in [(1, vec![2, 3]), (2, vec![2, 2, 2]), (3, vec![2, 3])] {
        c.start(id, restarted_config(id), state_with_terms(3, &terms, 3));
    }
    c.elect(1);
    c.propose(1, b"z").expect("accepted");
    let leader_last = c.node(1).last_index();
    assert_eq!(c.node(2).last_index(), leader_last);
    for i in 1..=leader_last {
        assert_eq!(c.node(2).log_term(i), c.node(1).log_term(i), "index {i}");
    }
    assert!(c.delivered.iter().any(|m| m.to == 1
        && matches!(
            m.body,
            MessageBody::AppendEntriesResponse { success: false, .. }
        )));
}

/// §5.3 (fast back-off): a follower with a long divergent log is repaired in a few round
/// trips, not one per entry.
#[test]
fn conflict_back_off_skips_whole_terms() {
    let mut c = Cluster::with(0, |_| {});
    let long_stale: Vec<Term> = vec![2; 200];
    for (id, terms) in [(1, vec![3]), (2, vec![3]), (3, long_stale)] {
        c.start(id, restarted_config(id), state_with_terms(3, &terms, 3));
    }
    c.elect(1);
    let rejects = c
        .delivered
        .iter()
        .filter(|m| {
            m.from == 3
                && matches!(
                    m.body,
                    MessageBody::AppendEntriesResponse { success: false, .. }
                )
        })
        .count();
    assert!(rejects <= 3, "{rejects} rejections to repair 200 entries");
    assert_eq!(c.node(3).last_index(), c.node(1).last_index());
}

/// §5.4.2 (Figure 8): a leader never commits an entry of an earlier term by counting replicas;
/// an old-term entry on a majority stays uncommitted until an entry of the leader's own term is.
#[test]
fn old_term_entry_on_majority_stays_uncommitted_until_own_term_entry() {
    let mut c = Cluster::with(0, |_| {});
    for (id, terms) in [(1, vec![2]), (2, vec![2]), (3, vec![])] {
        let mut cfg = restarted_config(id);
        cfg.pre_vote = false;
        c.start(id, cfg, state_with_terms(3, &terms, 2));
    }
    // Node 2 will grant its vote but then never receive appends.
    c.node_mut(1).campaign();
    // Deliver the vote requests and answers only.
    c.deliver_all_but_appends(4);
    assert_eq!(c.node(1).role(), Role::Leader);
    // Node 2 already has index 2 (term 2) — a majority with the leader — yet it is not committed.
    assert_eq!(c.node(2).log_term(2), Some(2));
    assert!(
        c.node(1).commit_index() < 2,
        "committed an old-term entry by counting"
    );
    // Once the no-op of the new term reaches node 2, both commit together.
    c.tick_all(1);
    assert!(c.node(1).commit_index() >= 3);
    assert_eq!(c.node(1).log_term(3), Some(c.node(1).term()));
}

/// §5.3 / flow control: at most `max_inflight_msgs` appends are in flight to a follower, and a
/// message carries at most `max_size_per_msg` bytes of entries — but a single larger entry
/// still goes out alone.
#[test]
fn pipelining_is_bounded_by_inflight_and_bytes() {
    let mut c = Cluster::with(3, |cfg| {
        cfg.max_inflight_msgs = 2;
        cfg.max_size_per_msg = 100;
    });
    c.elect(1);
    // Stop delivery to node 3 so its window fills up.
    c.cut.insert((1, 3));
    for _ in 0..10 {
        c.node_mut(1)
            .propose(Bytes::from(vec![7u8; 60]))
            .expect("leader");
        c.process_readies();
    }
    let to3: Vec<&Message> = c.queue.iter().filter(|m| m.to == 3).collect();
    let appends_with_entries = to3
        .iter()
        .filter(|m| matches!(&m.body, MessageBody::AppendEntries { entries, .. } if !entries.is_empty()))
        .count();
    assert!(
        appends_with_entries <= 2,
        "{appends_with_entries} appends in flight"
    );
    c.settle();
    c.heal();
    let big = Bytes::from(vec![1u8; 1000]);
    c.node_mut(1).propose(big.clone()).expect("leader");
    c.settle();
    c.tick_all(3);
    assert!(
        c.applied_data(3).contains(&big),
        "an entry above the byte limit must still replicate"
    );
    for m in &c.delivered {
        if let MessageBody::AppendEntries { entries, .. } = &m.body
            && entries.len() > 1
        {
            let size: u64 = entries.iter().map(Entry::size_hint).sum();
            assert!(size <= 100 + entries.last().map_or(0, Entry::size_hint));
        }
    }
}

// ----- Persistence --------------------------------------------------------------------------------

/// Figure 2: term, vote and log are persisted before answering; a restarted node resumes from
/// them and does not vote again in the same term.
#[test]
fn restart_resumes_from_persisted_state() {
    let mut c = Cluster::with(3, |cfg| cfg.pre_vote = false);
    c.elect(1);
    c.propose(1, b"a").expect("leader");
    let (term, last) = (c.node(2).term(), c.node(2).last_index());
    c.restart(2);
    assert_eq!(c.node(2).term(), term);
    assert_eq!(c.node(2).last_index(), last);
    assert_eq!(c.node(2).status().vote, 1);
    // Still bound by its vote: a rival in the same term is refused.
    c.node_mut(2).step(Message {
        from: 3,
        to: 2,
        term,
        body: MessageBody::RequestVote {
            pre_vote: false,
            last_log_index: last + 10,
            last_log_term: term,
            leader_transfer: true,
        },
    });
    let rd = c.node_mut(2).ready();
    assert!(
        !rd.messages
            .iter()
            .chain(&rd.persisted_messages)
            .any(|m| matches!(
                m.body,
                MessageBody::RequestVoteResponse { granted: true, .. }
            ))
    );
    // Committed entries are applied again after the restart (the state machine was volatile).
    assert!(
        rd.committed_entries
            .iter()
            .any(|e| e.payload == EntryPayload::Normal(Bytes::from("a")))
    );
    c.node_mut(2).advance(&rd);
}

/// The `Ready` contract: vote grants and append acknowledgements are only in
/// `persisted_messages`, never in `messages`.
#[test]
fn durable_promises_wait_for_persistence() {
    let mut c = Cluster::with(3, |cfg| cfg.pre_vote = false);
    c.node_mut(1).campaign();
    c.process_readies();
    let reqs: Vec<Message> = c.queue.drain(..).collect();
    assert!(!reqs.is_empty());
    for m in reqs {
        let to = m.to;
        c.node_mut(to).step(m);
    }
    let rd = c.node_mut(2).ready();
    assert!(rd.hard_state.is_some_and(|hs| hs.vote == 1));
    assert!(rd.persisted_messages.iter().any(|m| matches!(
        m.body,
        MessageBody::RequestVoteResponse { granted: true, .. }
    )));
    assert!(!rd.messages.iter().any(|m| matches!(
        m.body,
        MessageBody::RequestVoteResponse { granted: true, .. }
    )));
    c.node_mut(2).advance(&rd);
}

// ----- Pre-vote and check-quorum (thesis §9.6, §6.2) -------------------------------------------

/// Thesis §9.6: a node partitioned away keeps failing pre-votes without raising its term, so
/// when it comes back it does not depose the healthy leader.
#[test]
fn pre_vote_keeps_partitioned_node_from_disrupting() {
    let mut c = Cluster::new(3);
    c.elect(1);
    let term = c.node(1).term();
    c.isolate(3);
    c.tick(3, 100);
    assert_eq!(c.node(3).term(), term, "pre-vote must keep the term");
    c.heal();
    c.tick_all(5);
    assert_eq!(c.leaders(), vec![1]);
    assert_eq!(c.node(1).term(), term);
    assert_eq!(c.node(3).leader_id(), 1);
}

/// Thesis §6.2: a leader that cannot hear from a quorum for an election timeout steps down.
#[test]
fn check_quorum_steps_isolated_leader_down() {
    let mut c = Cluster::new(3);
    c.elect(1);
    c.isolate(1);
    c.tick(1, 25);
    assert_ne!(c.node(1).role(), Role::Leader);
    // The majority side elects a new leader.
    c.tick_all(0);
    let mut ticks = 0;
    while !c.leaders().iter().any(|&l| l != 1) && ticks < 100 {
        c.tick(2, 1);
        c.tick(3, 1);
        ticks += 1;
    }
    assert!(c.leaders().iter().any(|&l| l == 2 || l == 3));
}

/// Thesis §4.2.3: a follower that heard from the leader within the minimum election timeout
/// ignores a vote request with a higher term, and does not adopt that term.
#[test]
fn follower_in_lease_ignores_higher_term_vote() {
    let mut c = Cluster::new(3);
    c.elect(1);
    let term = c.node(1).term();
    c.node_mut(2).step(Message {
        from: 3,
        to: 2,
        term: term + 5,
        body: MessageBody::RequestVote {
            pre_vote: false,
            last_log_index: 1000,
            last_log_term: term + 4,
            leader_transfer: false,
        },
    });
    c.settle();
    assert_eq!(c.node(2).term(), term);
    assert_eq!(c.node(2).leader_id(), 1);
}

/// A node restarted after elections had happened refuses (pre-)votes for one election timeout:
/// it may have acknowledged a leader's heartbeat just before crashing, and that leader may be
/// serving lease reads on the strength of it.
#[test]
fn restarted_node_refuses_votes_for_one_election_timeout() {
    let mut c = Cluster::new(3);
    c.elect(1);
    c.restart(2);
    c.restart(3);
    c.isolate(1);
    let term = c.node(3).term();
    // Node 3 campaigns at once: the restarted node 2 refuses, and nobody's term moves.
    c.node_mut(3).campaign();
    c.settle();
    assert_ne!(c.node(3).role(), Role::Leader);
    assert_eq!(c.node(2).term(), term);
    // Once an election timeout has passed, the lease is over and an election succeeds.
    let mut ticks = 0;
    while c.leaders().iter().all(|&l| l == 1) && ticks < 60 {
        c.tick(2, 1);
        c.tick(3, 1);
        ticks += 1;
    }
    assert!(ticks >= 10, "elected after {ticks} ticks, inside the lease");
    assert!(c.leaders().iter().any(|&l| l == 2 || l == 3));
}

/// §5.1: a leader that sees a higher term in an answer steps down; a stale leader's append is
/// answered with the newer term so that it learns it was deposed.
#[test]
fn stale_leader_learns_newer_term_and_steps_down() {
    let mut c = Cluster::with(3, |cfg| cfg.check_quorum = false);
    c.elect(1);
    c.isolate(1);
    c.elect(2);
    let new_term = c.node(2).term();
    c.heal();
    c.propose(1, b"lost")
        .expect("old leader still thinks it leads");
    assert_eq!(c.node(1).role(), Role::Follower);
    assert_eq!(c.node(1).term(), new_term);
    c.tick_all(2);
    assert!(!c.applied_data(2).contains(&Bytes::from("lost")));
}

// ----- Reads (thesis §6.4) ------------------------------------------------------------------------

/// Thesis §6.4: ReadIndex confirms leadership with a heartbeat round before answering, with the
/// commit index at the time of the request.
#[test]
fn read_index_needs_a_quorum_round() {
    let mut c = Cluster::new(3);
    c.elect(1);
    c.propose(1, b"a").expect("leader");
    let commit = c.node(1).commit_index();
    c.node_mut(1).read_index(7).expect("leader");
    c.settle();
    assert_eq!(
        c.read_states[&1],
        vec![ReadState {
            ctx: 7,
            index: commit
        }]
    );

    // Cut off from the quorum, the leader cannot confirm a read.
    c.isolate(1);
    c.node_mut(1).read_index(8).expect("still leader");
    c.settle();
    assert!(!c.read_states[&1].iter().any(|r| r.ctx == 8));
    assert!(c.acked_rounds.contains_key(&1));
}

/// Thesis §6.4: a new leader answers reads only after it committed an entry of its term.
#[test]
fn read_index_waits_for_first_commit_of_term() {
    let mut c = Cluster::with(3, |cfg| cfg.pre_vote = false);
    c.node_mut(1).campaign();
    // Deliver votes by hand, then ask for a read before the no-op commits.
    c.deliver_all_but_appends(3);
    assert_eq!(c.node(1).role(), Role::Leader);
    assert!(!c.node(1).has_committed_in_term());
    c.node_mut(1).read_index(1).expect("leader");
    c.process_readies();
    assert!(c.read_states.get(&1).is_none_or(|r| r.is_empty()));
    // The appends were dropped above; the next heartbeat re-probes and the no-op commits.
    c.queue.clear();
    c.tick_all(1);
    let rs = c.read_states[&1].clone();
    assert_eq!(rs.len(), 1);
    assert!(rs[0].index >= c.node(1).commit_index().min(rs[0].index));
    assert!(rs[0].index >= 2, "the read index must cover the no-op");
}

/// Only the leader serves ReadIndex; followers are told who leads.
#[test]
fn read_index_on_follower_names_leader() {
    let mut c = Cluster::new(3);
    c.elect(1);
    assert_eq!(
        c.node_mut(2).read_index(1),
        Err(Error::NotLeader { leader: Some(1) })
    );
}

// ----- Leader transfer (thesis §3.10) -----------------------------------------------------------

/// Thesis §3.10: the leader brings the target up to date, sends TimeoutNow, and the target
/// wins at once; proposals are refused while the transfer runs.
#[test]
fn leader_transfer_hands_over_to_target() {
    let mut c = Cluster::new(3);
    c.elect(1);
    c.isolate(3);
    c.propose(1, b"a").expect("leader");
    c.heal();
    // Node 3 is behind: the transfer must first catch it up.
    c.node_mut(1).transfer_leader(3).expect("leader");
    assert_eq!(
        c.node_mut(1).propose(Bytes::from_static(b"b")),
        Err(Error::TransferInProgress)
    );
    c.settle();
    assert_eq!(c.leaders(), vec![3]);
    assert!(
        c.delivered
            .iter()
            .any(|m| m.to == 3 && m.body == MessageBody::TimeoutNow)
    );
    c.propose(3, b"c").expect("new leader");
    assert!(c.applied_data(1).contains(&Bytes::from("c")));
}

/// Thesis §3.10: a transfer to an unreachable target is abandoned after an election timeout.
#[test]
fn leader_transfer_times_out() {
    let mut c = Cluster::new(3);
    c.elect(1);
    c.isolate(3);
    c.node_mut(1).transfer_leader(3).expect("leader");
    c.tick(1, 11);
    assert_eq!(c.node(1).role(), Role::Leader);
    assert_eq!(c.node(1).lead_transferee(), None);
    c.propose(1, b"after").expect("proposals resume");
}

/// Transfer to 0 picks the most caught-up voter.
#[test]
fn leader_transfer_to_best_follower() {
    let mut c = Cluster::new(3);
    c.elect(1);
    c.isolate(2);
    c.propose(1, b"a").expect("leader");
    assert_eq!(c.node_mut(1).transfer_leader(0), Ok(3));
    c.settle();
    assert_eq!(c.leaders(), vec![3]);
}

// ----- Membership (thesis §4.1, §4.2.2) ---------------------------------------------------------

fn conf_change(change_type: ConfChangeType, node_id: NodeId) -> ConfChange {
    ConfChange {
        change_type,
        node_id,
        context: Bytes::new(),
    }
}

/// Thesis §4.2.1: a new node joins as a learner, receives the log (no vote), and the leader
/// promotes it automatically once it has caught up.
#[test]
fn learner_joins_and_is_promoted_when_caught_up() {
    let mut c = Cluster::new(3);
    c.elect(1);
    for _ in 0..5 {
        c.propose(1, b"x").expect("leader");
    }
    c.add_empty(4);
    c.node_mut(1)
        .propose_conf_change(conf_change(ConfChangeType::AddLearner, 4))
        .expect("allowed");
    c.settle();
    c.tick_all(3);
    let conf = c.node(1).conf_state().clone();
    assert!(conf.voters.contains(&4), "learner not promoted: {conf:?}");
    assert_eq!(c.node(4).conf_state(), &conf);
    assert_eq!(c.applied_data(4).len(), 5);
}

/// Ongaro 2015 fix: at most one configuration entry is uncommitted at a time, and a new
/// leader changes the configuration only after committing an entry of its own term.
#[test]
fn one_uncommitted_conf_change_at_a_time() {
    let mut c = Cluster::new(3);
    c.elect(1);
    c.isolate(2);
    c.isolate(3);
    c.node_mut(1)
        .propose_conf_change(conf_change(ConfChangeType::AddLearner, 4))
        .expect("first change");
    assert!(matches!(
        c.node_mut(1)
            .propose_conf_change(conf_change(ConfChangeType::AddLearner, 5)),
        Err(Error::ConfChangeNotAllowed(_))
    ));

    let mut c = Cluster::with(3, |cfg| cfg.pre_vote = false);
    c.node_mut(1).campaign();
    c.deliver_all_but_appends(3);
    assert_eq!(c.node(1).role(), Role::Leader);
    assert!(matches!(
        c.node_mut(1)
            .propose_conf_change(conf_change(ConfChangeType::AddLearner, 4)),
        Err(Error::ConfChangeNotAllowed(_))
    ));
}

/// Thesis §4.2.2: a leader can remove itself; it keeps leading until the removal commits (not
/// counting its own vote), then steps down and the others elect a leader.
#[test]
fn removing_the_leader_hands_over_leadership() {
    let mut c = Cluster::new(3);
    c.elect(1);
    c.node_mut(1)
        .propose_conf_change(conf_change(ConfChangeType::RemoveNode, 1))
        .expect("allowed");
    c.settle();
    assert_ne!(c.node(1).role(), Role::Leader);
    assert!(!c.node(2).conf_state().voters.contains(&1));
    c.tick_all(30);
    let leaders = c.leaders();
    assert_eq!(leaders.len(), 1);
    assert_ne!(leaders[0], 1);
    c.propose(leaders[0], b"after").expect("new leader");
}

/// A removed node, or one never added, can never win an election: a removed node knows it is
/// out and does not campaign, a node with no configuration neither campaigns nor votes, and a
/// stranger's vote request is refused while the leader's lease holds (thesis §4.2.3). (Voters do
/// not consult their own configuration otherwise — see `regressions.rs` for why that would be a
/// liveness bug.)
#[test]
fn non_members_cannot_win_elections() {
    let mut c = Cluster::new(3);
    c.elect(1);
    c.node_mut(1)
        .propose_conf_change(conf_change(ConfChangeType::RemoveNode, 3))
        .expect("allowed");
    c.settle();
    c.tick_all(2);
    assert!(!c.node(1).conf_state().contains(3));
    // The removed node knows it is out and never campaigns.
    c.isolate(1);
    c.isolate(2);
    c.tick(3, 100);
    assert_ne!(c.node(3).role(), Role::Candidate);
    c.heal();

    // A stranger with a long, newer-looking log asks for votes: refused, and no term bump.
    let term = c.node(2).term();
    c.add_empty(9);
    c.node_mut(2).step(Message {
        from: 9,
        to: 2,
        term: term + 10,
        body: MessageBody::RequestVote {
            pre_vote: false,
            last_log_index: 10_000,
            last_log_term: term + 9,
            leader_transfer: false,
        },
    });
    c.settle();
    assert_eq!(c.node(2).term(), term);
    assert_eq!(c.leaders(), vec![1]);
    // A node with empty state has no configuration and so never campaigns either.
    c.tick(9, 100);
    assert_eq!(c.node(9).role(), Role::Follower);
}

// ----- Snapshots and compaction (§7) --------------------------------------------------------------

/// §7: after compaction, a follower that needs compacted entries gets InstallSnapshot with the
/// snapshot's metadata and configuration, then catches up from the log.
#[test]
fn lagging_follower_catches_up_through_snapshot() {
    let mut c = Cluster::new(3);
    c.elect(1);
    c.isolate(3);
    for _ in 0..10 {
        c.propose(1, b"x").expect("leader");
    }
    let applied = c.node(1).applied_index();
    let meta = c.node(1).snapshot_meta(applied).expect("applied");
    assert_eq!(meta.conf, c.node(1).conf_state().clone());
    c.disks.get_mut(&1).expect("disk").snapshot = Some(meta.clone());
    c.node_mut(1).compact(applied, 0).expect("compact");
    assert_eq!(c.node(1).first_index(), applied + 1);
    c.heal();
    c.propose(1, b"after").expect("leader");
    c.tick_all(3);
    assert!(c.delivered.iter().any(|m| m.to == 3
        && matches!(&m.body, MessageBody::InstallSnapshot { meta: got } if *got == meta)));
    assert_eq!(c.node(3).last_index(), c.node(1).last_index());
    assert_eq!(c.node(3).commit_index(), c.node(1).commit_index());
    assert!(c.applied_data(3).contains(&Bytes::from("after")));
    // The follower's disk now starts at the snapshot.
    assert_eq!(
        c.disks[&3].snapshot.as_ref().map(|s| s.index),
        Some(applied)
    );
}

/// §7: compaction never goes beyond what is applied.
#[test]
fn compaction_is_bounded_by_applied() {
    let mut c = Cluster::new(1);
    c.elect(1);
    let applied = c.node(1).applied_index();
    assert_eq!(
        c.node_mut(1).compact(applied + 1, 0),
        Err(Error::Unavailable(applied + 1))
    );
    assert!(c.node(1).snapshot_meta(applied + 1).is_err());
}

/// A cluster of three with node 3 cut off while node 1 commits ten entries, then node 1 takes a
/// durable snapshot at its applied index and compacts keeping entries from node 3's last one
/// on, minus `short` (so with `short == 0` the oldest entry kept is node 3's last one).
/// Returns the snapshot and node 3's last index.
fn lagging_follower_after_compaction(c: &mut Cluster, short: u64) -> (SnapshotMeta, Index) {
    c.elect(1);
    c.isolate(3);
    for _ in 0..10 {
        c.propose(1, b"x").expect("leader");
    }
    let behind = c.node(3).last_index();
    let applied = c.node(1).applied_index();
    let meta = c.node(1).snapshot_meta(applied).expect("applied");
    c.disks.get_mut(&1).expect("disk").snapshot = Some(meta.clone());
    let trailing = applied - behind - short;
    let start = c.node_mut(1).compact(applied, trailing).expect("compact");
    assert_eq!(start, applied - trailing);
    assert_eq!(c.node(1).first_index(), start + 1);
    assert_eq!(c.node(1).snapshot_index(), applied);
    (meta, behind)
}

/// Item 8 of the safety issue: with a trailing log, a follower whose next entry is still in the
/// leader's log (here exactly the oldest one kept) is sent AppendEntries, not the snapshot.
#[test]
fn follower_within_trailing_log_gets_entries() {
    let mut c = Cluster::new(3);
    let (meta, behind) = lagging_follower_after_compaction(&mut c, 0);
    // The oldest entry kept is the follower's last one: its term is known, so the consistency
    // check can succeed at it.
    assert_eq!(c.node(1).first_index(), behind + 1);
    assert_eq!(c.node(1).log_term(behind), c.node(3).log_term(behind));
    c.heal();
    c.propose(1, b"after").expect("leader");
    c.tick_all(3);
    assert!(
        !c.delivered
            .iter()
            .any(|m| matches!(m.body, MessageBody::InstallSnapshot { .. })),
        "no snapshot is sent to a follower within the trailing log"
    );
    assert!(c.delivered.iter().any(|m| m.to == 3
        && matches!(&m.body, MessageBody::AppendEntries { prev_log_index, entries, .. }
            if *prev_log_index == behind && !entries.is_empty())));
    assert_eq!(c.node(3).last_index(), c.node(1).last_index());
    assert_eq!(c.node(3).commit_index(), c.node(1).commit_index());
    assert!(c.applied_data(3).contains(&Bytes::from("after")));
    // The follower never installed a snapshot; the leader's is still the one at `applied`.
    assert_eq!(c.disks[&3].snapshot, None);
    assert_eq!(c.node(1).snapshot_index(), meta.index);
}

/// One entry fewer kept than that follower needs, and it is sent the snapshot at S (not one at
/// the log's start).
#[test]
fn follower_behind_trailing_log_gets_snapshot() {
    let mut c = Cluster::new(3);
    let (meta, behind) = lagging_follower_after_compaction(&mut c, 1);
    assert_eq!(c.node(1).first_index(), behind + 2);
    c.heal();
    c.propose(1, b"after").expect("leader");
    c.tick_all(3);
    assert!(c.delivered.iter().any(|m| m.to == 3
        && matches!(&m.body, MessageBody::InstallSnapshot { meta: got } if *got == meta)));
    assert_eq!(c.node(3).last_index(), c.node(1).last_index());
    assert!(c.applied_data(3).contains(&Bytes::from("after")));
    // Installing the leader's snapshot dropped the follower's whole log: it starts at S.
    assert_eq!(c.node(3).snapshot_index(), meta.index);
    assert_eq!(c.node(3).first_index(), meta.index + 1);
}

/// Compaction never moves the log's start back, and a snapshot at or below the current one
/// changes nothing.
#[test]
fn compaction_start_only_moves_forward() {
    let mut c = Cluster::new(1);
    c.elect(1);
    for _ in 0..10 {
        c.propose(1, b"x").expect("leader");
    }
    let applied = c.node(1).applied_index();
    assert_eq!(c.node_mut(1).compact(applied - 2, 0), Ok(applied - 2));
    // A later snapshot with a longer trailing log keeps the start where it was.
    assert_eq!(c.node_mut(1).compact(applied, 100), Ok(applied - 2));
    assert_eq!(c.node(1).snapshot_index(), applied);
    assert_eq!(c.node(1).log_term(applied - 2), Some(c.node(1).term()));
    assert_eq!(c.node(1).log_term(applied - 3), None);
    // An older snapshot is ignored.
    assert_eq!(c.node_mut(1).compact(applied - 1, 0), Ok(applied - 2));
    assert_eq!(c.node(1).snapshot_index(), applied);
    // A snapshot can still be described at the applied index, with its configuration.
    let meta = c.node(1).snapshot_meta(applied).expect("applied");
    assert_eq!(meta.conf, c.node(1).conf_state().clone());
}

/// Recovered entries `first..=last` of term 1, with a snapshot at 5 of `snapshot_term`.
fn recovered(first: Index, last: Index, snapshot_term: Term) -> InitialState {
    let conf = ConfState {
        voters: [1].into_iter().collect(),
        ..ConfState::default()
    };
    InitialState {
        hard_state: HardState {
            term: 1,
            vote: 1,
            commit: 10,
        },
        snapshot: Some(SnapshotMeta {
            index: 5,
            term: snapshot_term,
            conf,
        }),
        entries: (first..=last)
            .map(|index| Entry {
                term: 1,
                index,
                payload: EntryPayload::Normal(Bytes::from_static(b"x")),
            })
            .collect(),
        applied: 5,
    }
}

/// Recovery: entries that start below the snapshot are kept as the trailing log (the first one
/// is the log's start), entries right after it are the usual case, and a gap, entries that
/// disagree with the snapshot or that end before it are refused.
#[test]
fn recovery_with_trailing_entries() {
    let node = RawNode::new(Config::new(1), recovered(2, 10, 1)).expect("trailing log");
    assert_eq!(node.snapshot_index(), 5);
    assert_eq!((node.first_index(), node.last_index()), (3, 10));
    assert_eq!(node.log_term(2), Some(1));
    assert_eq!(node.log_term(1), None);
    assert_eq!(node.commit_index(), 10);
    assert_eq!(node.applied_index(), 5);

    let node = RawNode::new(Config::new(1), recovered(6, 10, 1)).expect("log after snapshot");
    assert_eq!((node.first_index(), node.last_index()), (6, 10));
    assert_eq!(node.log_term(5), Some(1));

    // Starting at the snapshot's own index: that entry is the start.
    let node = RawNode::new(Config::new(1), recovered(5, 10, 1)).expect("log from snapshot");
    assert_eq!((node.first_index(), node.last_index()), (6, 10));

    for (state, why) in [
        (recovered(7, 10, 1), "a gap after the snapshot"),
        (
            recovered(2, 10, 2),
            "entries that disagree with the snapshot's term",
        ),
        (recovered(2, 4, 1), "entries that end before the snapshot"),
    ] {
        assert!(
            matches!(
                RawNode::new(Config::new(1), state),
                Err(Error::InvalidState(_))
            ),
            "{why} must be refused"
        );
    }
}

/// A failed snapshot transfer is reported and retried.
#[test]
fn failed_snapshot_is_retried() {
    let mut c = Cluster::new(3);
    c.elect(1);
    c.isolate(3);
    for _ in 0..3 {
        c.propose(1, b"x").expect("leader");
    }
    let applied = c.node(1).applied_index();
    c.node_mut(1).compact(applied, 0).expect("compact");
    c.heal();
    c.fail_snapshots = true;
    c.tick_all(3);
    let attempts = |c: &Cluster| {
        c.queue.len()
            + c.delivered
                .iter()
                .filter(|m| matches!(m.body, MessageBody::InstallSnapshot { .. }))
                .count()
    };
    assert_eq!(attempts(&c), 0, "failed transfers are not delivered");
    assert!(c.node(3).commit_index() < applied);
    assert!(!c.node(1).status().progress[&3].snapshot_pending);
    c.fail_snapshots = false;
    c.tick_all(3);
    assert_eq!(c.node(3).commit_index(), c.node(1).commit_index());
}

/// Outside the Raft model, but it happens: a voter's disk is wiped and it restarts empty. It
/// rejects appends at indexes it once acknowledged; the leader must notice (it may lower
/// `matched`: the commit index never moves back) and send the log again, or the cluster would
/// silently run without that replica.
#[test]
fn follower_that_lost_its_log_is_caught_up_again() {
    let mut c = Cluster::new(3);
    c.elect(1);
    for _ in 0..5 {
        c.propose(1, b"x").expect("leader");
    }
    let last = c.node(1).last_index();
    assert_eq!(c.node(1).status().progress[&3].match_index, last);
    // Node 3 loses everything and restarts empty.
    c.queue.retain(|m| m.to != 3 && m.from != 3);
    c.disks.insert(3, Disk::default());
    c.restart(3);
    c.propose(1, b"after").expect("leader");
    c.tick_all(5);
    assert_eq!(c.node(3).last_index(), c.node(1).last_index());
    assert_eq!(c.node(3).conf_state(), c.node(1).conf_state());
    assert_eq!(
        c.node(1).status().progress[&3].match_index,
        c.node(1).last_index()
    );
}

/// The same with an idle cluster: no new entry will ever make the leader probe the wiped
/// follower, so heartbeats must reveal it (the follower's log ends below the commit index the
/// leader says it holds).
#[test]
fn idle_leader_notices_a_follower_that_lost_its_log() {
    let mut c = Cluster::new(3);
    c.elect(1);
    for _ in 0..5 {
        c.propose(1, b"x").expect("leader");
    }
    c.tick_all(2);
    c.queue.retain(|m| m.to != 3 && m.from != 3);
    c.disks.insert(3, Disk::default());
    c.restart(3);
    c.tick_all(5);
    assert_eq!(c.node(3).last_index(), c.node(1).last_index());
    assert_eq!(c.node(3).commit_index(), c.node(1).commit_index());
}
