//! The catch-up barrier of a node that joins a running cluster with an empty log (DESIGN.md §6):
//! computed here, once, for the node's bootstrap code and for the simulation.
//!
//! A node that lost its volume may have acknowledged entries that a quorum then counted as
//! committed. Before it votes again, it must know a log position that every such entry lies at
//! or below; until its own log is that up-to-date it votes only for candidates whose logs are
//! (see [`crate::Config::catch_up_index`]). It learns the position from the other members' logs:
//!
//! An entry committed under a configuration with voters `V` and quorum `q` is on at least `q`
//! voters, so on at least `q - 1` besides the joining node. If `s` voters of `V` other than the
//! joining node answer, at least `k = s + q - |V|` of them hold the entry (when `k >= 1`), so the
//! `k`-th most up-to-date last log position among them is at least as up-to-date as a holder's,
//! and a log at least that up-to-date holds the entry (§5.4.1, Log Matching). Taking the `k`-th
//! and not simply the most up-to-date answer keeps an uncommitted tail on one node from
//! blocking the election a wiped voter's vote is needed for.
//!
//! Which configuration committed the entry is not known, so the bound is taken for every
//! configuration the answering nodes are in, and the highest bound wins. A configuration that
//! does not get enough answers (`k < 1`) makes the whole answer "not yet": the node keeps asking.
//!
//! The term floor is the highest current term among the answers: an answer set that holds a
//! holder of every committed entry also holds, by the same count, a voter of every election the
//! node may have voted in and that was won, so the node never votes twice in a term that
//! elected a leader. What remains: an election still running when the node comes back, whose
//! candidate got the node's lost vote and is not among the answers, could get a second vote from
//! it for another candidate in that term. A restart lease for nodes with a barrier (no vote for
//! an election timeout after start) would narrow that window; it is not built yet.

use std::collections::BTreeSet;

use crate::types::{Index, NodeId, Term};

/// What one other node says about its log (from `Cluster.Status`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerLog {
    /// Its id.
    pub id: NodeId,
    /// Its current term.
    pub term: Term,
    /// The index of its last log entry.
    pub last_index: Index,
    /// The term of its last log entry.
    pub last_log_term: Term,
    /// The voters of the configuration in force in its log.
    pub voters: BTreeSet<NodeId>,
}

/// A barrier: see [`crate::Config::catch_up_index`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CatchUp {
    /// The position's index.
    pub index: Index,
    /// The term of the entry at `index`.
    pub log_term: Term,
    /// The term floor: no vote in this term or earlier.
    pub term: Term,
}

/// The barrier for node `me` from the answers of other nodes; `None` while the answers do not
/// cover every configuration they name (the node must keep asking).
pub fn catch_up_barrier(me: NodeId, answers: &[PeerLog]) -> Option<CatchUp> {
    let answers: Vec<&PeerLog> = answers.iter().filter(|a| a.id != me).collect();
    let configs: BTreeSet<&BTreeSet<NodeId>> = answers
        .iter()
        .map(|a| &a.voters)
        .filter(|v| !v.is_empty())
        .collect();
    if configs.is_empty() {
        return None;
    }
    let mut bound: Option<(Term, Index)> = None;
    for voters in configs {
        let quorum = voters.len() / 2 + 1;
        let mut positions: Vec<(Term, Index)> = answers
            .iter()
            .filter(|a| voters.contains(&a.id))
            .map(|a| (a.last_log_term, a.last_index))
            .collect();
        let k = (positions.len() + quorum).checked_sub(voters.len())?;
        if k == 0 {
            return None;
        }
        positions.sort_unstable_by(|a, b| b.cmp(a));
        let at = *positions.get(k - 1)?;
        bound = Some(bound.map_or(at, |b| b.max(at)));
    }
    let (log_term, index) = bound?;
    let term = answers.iter().map(|a| a.term).max()?;
    Some(CatchUp {
        index,
        log_term,
        term,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer(id: NodeId, term: Term, last: (Term, Index), voters: &[NodeId]) -> PeerLog {
        PeerLog {
            id,
            term,
            last_index: last.1,
            last_log_term: last.0,
            voters: voters.iter().copied().collect(),
        }
    }

    #[test]
    fn three_voters_need_both_others_and_take_the_longer_log() {
        let v = [1, 2, 3];
        assert_eq!(catch_up_barrier(2, &[peer(3, 5, (5, 90), &v)]), None);
        let b = catch_up_barrier(2, &[peer(1, 5, (5, 100), &v), peer(3, 6, (5, 90), &v)]);
        assert_eq!(
            b,
            Some(CatchUp {
                index: 100,
                log_term: 5,
                term: 6
            })
        );
    }

    #[test]
    fn four_voters_with_three_answers_skip_one_uncommitted_tail() {
        // Voters {1,2,3,5}; node 3 lost its log. An entry committed on a quorum of 3 is on 2 of
        // the 3 others, so the second most up-to-date answer bounds it.
        let v = [1, 2, 3, 5];
        let b = catch_up_barrier(
            3,
            &[
                peer(1, 4, (4, 120), &v),
                peer(2, 4, (4, 126), &v),
                peer(5, 4, (4, 120), &v),
            ],
        );
        assert_eq!(b.map(|b| (b.log_term, b.index)), Some((4, 120)));
    }

    #[test]
    fn every_configuration_named_must_be_covered() {
        // A stale node still names {1..6}; the others are in {1,2,3,4,6}. The bound is the
        // higher of the two configurations' bounds.
        let old = [1, 2, 3, 4, 5, 6];
        let new = [1, 2, 3, 4, 6];
        let answers = [
            peer(1, 8, (7, 160), &new),
            peer(2, 8, (7, 168), &new),
            peer(3, 8, (7, 171), &new),
            peer(4, 8, (7, 160), &new),
            peer(5, 9, (2, 53), &old),
        ];
        let b = catch_up_barrier(6, &answers).expect("covered");
        assert_eq!((b.log_term, b.index, b.term), (7, 168, 9));
        // Without node 3's answer, {1,2,3,4,6} has 3 of 4 others: k = 3 + 3 - 5 = 1.
        let b = catch_up_barrier(
            6,
            &[answers[0].clone(), answers[1].clone(), answers[3].clone()],
        )
        .expect("covered");
        assert_eq!((b.log_term, b.index), (7, 168));
    }
}
