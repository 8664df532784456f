//! The leader's view of each follower: how much of the log matches, what to send next, and how
//! many appends are in flight (etcd-raft's `Progress` and `Inflights`).

use std::collections::VecDeque;

use crate::types::Index;

/// How the leader is replicating to one follower.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProgressState {
    /// The follower's match point is unknown: send one append at a time and wait for the answer.
    Probe,
    /// The follower is known to match up to `matched`: stream appends, several in flight.
    Replicate,
    /// The follower needs a snapshot; nothing else is sent until the transport reports back.
    Snapshot,
}

/// Replication state for one member, as seen by the leader.
#[derive(Clone, Debug)]
pub(crate) struct Progress {
    /// Highest index known to be replicated on the member (§5.3 `matchIndex`).
    pub matched: Index,
    /// Next index to send (§5.3 `nextIndex`).
    pub next: Index,
    pub state: ProgressState,
    /// In `Probe`: a probe is outstanding, wait for its answer (or a heartbeat answer) first.
    pub paused: bool,
    /// In `Snapshot`: the index of the snapshot being sent.
    pub pending_snapshot: Index,
    /// Heard from since the last check-quorum round.
    pub recent_active: bool,
    /// Heard from in the check-quorum round before the current one. With `recent_active`: heard
    /// from within the last one or two election timeouts, whatever the phase of the round.
    pub active_last_round: bool,
    /// Highest heartbeat round the member has acknowledged.
    pub acked_round: u64,
    /// Last index of each append in flight, oldest first.
    inflights: VecDeque<Index>,
}

impl Progress {
    pub(crate) fn new(next: Index) -> Self {
        Self {
            matched: 0,
            next,
            state: ProgressState::Probe,
            paused: false,
            pending_snapshot: 0,
            recent_active: false,
            active_last_round: false,
            acked_round: 0,
            inflights: VecDeque::new(),
        }
    }

    fn reset_state(&mut self, state: ProgressState) {
        self.paused = false;
        self.pending_snapshot = 0;
        self.state = state;
        self.inflights.clear();
    }

    pub(crate) fn become_probe(&mut self) {
        // After a snapshot the follower has at least the snapshot's index.
        let next = if self.state == ProgressState::Snapshot {
            (self.matched + 1).max(self.pending_snapshot + 1)
        } else {
            self.matched + 1
        };
        self.reset_state(ProgressState::Probe);
        self.next = next;
    }

    pub(crate) fn become_replicate(&mut self) {
        self.reset_state(ProgressState::Replicate);
        self.next = self.matched + 1;
    }

    pub(crate) fn become_snapshot(&mut self, snapshot_index: Index) {
        self.reset_state(ProgressState::Snapshot);
        self.pending_snapshot = snapshot_index;
    }

    /// Records a successful append up to `index`; false if the answer was stale.
    pub(crate) fn maybe_update(&mut self, index: Index) -> bool {
        let updated = index > self.matched;
        if updated {
            self.matched = index;
            self.paused = false;
        }
        self.next = self.next.max(index + 1);
        updated
    }

    /// Handles a rejected append of `rejected` with the follower's hint; false if stale.
    pub(crate) fn maybe_decr_to(&mut self, rejected: Index, hint_next: Index) -> bool {
        if self.state == ProgressState::Replicate {
            // Answers to appends that were sent before a later success are stale.
            if rejected <= self.matched {
                return false;
            }
            self.next = self.matched + 1;
            return true;
        }
        // In Probe only the answer to the outstanding probe (sent at next - 1) counts.
        if self.next == 0 || self.next - 1 != rejected {
            return false;
        }
        if rejected <= self.matched {
            // The follower rejects an entry it once acknowledged: it lost its log (a wiped
            // volume — outside Raft's model, but it happens). Forget what we knew; lowering
            // `matched` is always safe, since the commit index never moves back, and the log is
            // sent again from the follower's hint.
            self.matched = 0;
        }
        self.next = rejected.min(hint_next).max(self.matched + 1);
        self.paused = false;
        true
    }

    /// Whether the leader should hold back appends to this member for now.
    pub(crate) fn is_paused(&self, max_inflight: usize) -> bool {
        match self.state {
            ProgressState::Probe => self.paused,
            ProgressState::Replicate => self.inflights.len() >= max_inflight,
            ProgressState::Snapshot => true,
        }
    }

    /// Notes that an append ending at `last` was sent.
    pub(crate) fn sent_entries(&mut self, last: Index) {
        match self.state {
            ProgressState::Replicate => {
                self.next = last + 1;
                self.inflights.push_back(last);
            }
            ProgressState::Probe => self.paused = true,
            ProgressState::Snapshot => {}
        }
    }

    /// Frees the in-flight slots of appends up to `index` (acknowledged or superseded).
    pub(crate) fn free_inflights_to(&mut self, index: Index) {
        while self.inflights.front().is_some_and(|&last| last <= index) {
            self.inflights.pop_front();
        }
    }

    /// Frees the oldest slot, so a full window whose messages were lost gets unstuck on the next
    /// heartbeat answer (etcd does the same).
    pub(crate) fn free_first_inflight(&mut self) {
        self.inflights.pop_front();
    }

    pub(crate) fn inflight_count(&self) -> usize {
        self.inflights.len()
    }
}
