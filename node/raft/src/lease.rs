//! The leader's read lease (DESIGN.md §4), decided in one place for every caller.
//!
//! A lease read skips the heartbeat round of ReadIndex. It is safe only while no other node can
//! become leader, which rests on one promise: a voter that acknowledged a heartbeat round refuses
//! (pre-)votes until its election timeout has passed since it heard that round. The lease
//! therefore starts when a round was *sent* (a quorum may acknowledge it at any time after), is
//! confirmed when a quorum acknowledged it (`Ready::acked_round`), and lasts less than the
//! minimum election timeout (the caller's `expiry`, with its clock-drift margin).
//!
//! A leader transfer breaks the promise: `TimeoutNow` makes its target campaign at once, and the
//! target's forced vote requests skip the voters' lease check. So once a leader has *sent*
//! `TimeoutNow`, it serves no lease read for the rest of its term, even if the transfer is given
//! up after an election timeout and later rounds are acknowledged: the `TimeoutNow` may still be
//! in flight, or its target may be counting votes. LEASE reads then fall back to ReadIndex.
//!
//! The type is generic over the caller's time: the node uses a monotonic `Instant` (checked at
//! serve time, so a paused process finds its lease expired when it wakes), the simulation uses
//! ticks. Both go through this code, so the simulation checks the rule the node runs.

use std::collections::BTreeMap;

use crate::raft::RawNode;
use crate::types::{MessageBody, Ready, Role, Term};

/// A leader's read lease; see the module docs.
#[derive(Clone, Debug)]
pub struct ReadLease<T> {
    /// The term the rest belongs to: a new term starts from nothing.
    term: Term,
    /// When each heartbeat round of this term was sent, until it is acknowledged.
    sent: BTreeMap<u64, T>,
    /// The lease ends here (exclusive).
    until: Option<T>,
    /// `TimeoutNow` went out in this term: no lease until the term ends.
    forfeited: bool,
    /// Planted bug `lease-after-transfer`: a lease is only paused while a transfer runs, and
    /// rounds acknowledged after the transfer was given up renew it.
    #[cfg(feature = "planted-bugs")]
    ignore_forfeit: bool,
}

impl<T> Default for ReadLease<T> {
    fn default() -> Self {
        Self {
            term: 0,
            sent: BTreeMap::new(),
            until: None,
            forfeited: false,
            #[cfg(feature = "planted-bugs")]
            ignore_forfeit: false,
        }
    }
}

impl<T: Copy + Ord> ReadLease<T> {
    /// A lease that is not held.
    pub fn new() -> Self {
        Self::default()
    }

    /// Takes what `rd` says about heartbeat rounds and transfers. Call it with `term` = the
    /// core's term and `now` = the time just before `rd.messages` are sent; `expiry(sent)` is when
    /// a lease confirmed by a round sent at `sent` ends.
    pub fn on_ready(&mut self, term: Term, rd: &Ready, now: T, expiry: impl Fn(T) -> T) {
        if term != self.term {
            self.reset(term);
        }
        let soft_leader = rd.soft_state.map(|s| s.role == Role::Leader);
        if soft_leader == Some(false) {
            self.reset(term);
        }
        if rd
            .messages
            .iter()
            .any(|m| matches!(m.body, MessageBody::TimeoutNow))
        {
            self.forfeit();
        }
        if let Some(round) = rd.sent_round {
            self.sent.insert(round, now);
        }
        if let Some(round) = rd.acked_round {
            if let Some(&sent) = self.sent.get(&round) {
                let until = expiry(sent);
                self.until = Some(self.until.map_or(until, |u| u.max(until)));
            }
            self.sent = self.sent.split_off(&(round + 1));
        }
    }

    /// Gives the lease up for the rest of the term (a `TimeoutNow` left, or something else made
    /// voters campaign before their election timeout).
    pub fn forfeit(&mut self) {
        self.until = None;
        #[cfg(feature = "planted-bugs")]
        if self.ignore_forfeit {
            return;
        }
        self.forfeited = true;
    }

    /// Whether a lease read may be served at `now` by the node whose core is `raw`.
    pub fn is_valid(&self, raw: &RawNode, now: T) -> bool {
        raw.role() == Role::Leader
            && raw.term() == self.term
            && raw.lead_transferee().is_none()
            && raw.has_committed_in_term()
            && !self.forfeited
            && self.until.is_some_and(|until| now < until)
    }

    /// When the lease ends, if one is held (whether or not the core still allows serving).
    pub fn until(&self) -> Option<T> {
        if self.forfeited { None } else { self.until }
    }

    /// Switches on the planted bug `lease-after-transfer` (feature `planted-bugs`).
    #[cfg(feature = "planted-bugs")]
    pub fn plant_lease_after_transfer(&mut self) {
        self.ignore_forfeit = true;
    }

    fn reset(&mut self, term: Term) {
        self.term = term;
        self.sent.clear();
        self.until = None;
        self.forfeited = false;
    }
}
