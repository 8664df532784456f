//! The simulated network: messages in flight, link faults and partitions.
//!
//! Nothing here knows about time beyond the global tick counter: a message is "in flight" until
//! the tick at which it may be delivered. Faults are decided when a message is sent (drop,
//! duplicate, delay) and re-checked when it is delivered (a partition that started while the
//! message was in flight still cuts it). Which due message goes first is the cluster's choice
//! (FIFO for scenario tests, shuffled for randomized runs), which is how reordering happens.

use std::collections::BTreeSet;

use raftkv_raft::{Message, NodeId};

use super::disk::SnapData;

/// Per-message fault rates. The default is a perfect network.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct NetFaults {
    /// Probability that a message is lost.
    pub drop: f64,
    /// Probability that a message is delivered twice (each copy with its own delay).
    pub dup: f64,
    /// Probability that a message is delayed by 1..=`max_delay` ticks (otherwise it is
    /// deliverable within the current tick).
    pub delay: f64,
    /// The longest delay in ticks.
    pub max_delay: u64,
    /// Deliver due messages in random order instead of send order.
    pub reorder: bool,
}

impl NetFaults {
    /// A perfect network: nothing lost, duplicated, delayed or reordered.
    pub fn none() -> Self {
        Self::default()
    }
}

/// A message on the wire, with the snapshot data the transport streams alongside an
/// `InstallSnapshot` (the core itself only ever sees the metadata).
#[derive(Clone, Debug)]
pub struct Envelope {
    /// The message.
    pub msg: Message,
    /// The tick from which the message may be delivered.
    pub deliver_at: u64,
    /// The sender's snapshot data, for `InstallSnapshot` only.
    pub snapshot: Option<SnapData>,
    /// Send order, for FIFO delivery and stable reporting.
    pub seq: u64,
}

/// Messages in flight and which links are cut.
#[derive(Debug, Default)]
pub struct Network {
    /// Everything sent and neither delivered nor dropped yet, in send order.
    pub in_flight: Vec<Envelope>,
    /// Directed cut links `(from, to)`: messages from `from` to `to` are dropped.
    cuts: BTreeSet<(NodeId, NodeId)>,
    /// Node ids isolated from everyone (kept apart from `cuts` so that nodes started later are
    /// isolated too).
    isolated: BTreeSet<NodeId>,
    /// Fault rates applied to each message sent.
    pub faults: NetFaults,
    next_seq: u64,
}

impl Network {
    /// A network with no partitions and the given fault rates.
    pub fn new(faults: NetFaults) -> Self {
        Self {
            faults,
            ..Self::default()
        }
    }

    /// Whether a message from `from` to `to` would be dropped by a partition.
    pub fn is_cut(&self, from: NodeId, to: NodeId) -> bool {
        self.isolated.contains(&from)
            || self.isolated.contains(&to)
            || self.cuts.contains(&(from, to))
    }

    /// Whether any partition is in force.
    pub fn is_partitioned(&self) -> bool {
        !self.cuts.is_empty() || !self.isolated.is_empty()
    }

    /// Cuts the link between `a` and `b` in both directions.
    pub fn cut(&mut self, a: NodeId, b: NodeId) {
        self.cuts.insert((a, b));
        self.cuts.insert((b, a));
    }

    /// Cuts only the direction `from -> to` (an asymmetric partition).
    pub fn cut_oneway(&mut self, from: NodeId, to: NodeId) {
        self.cuts.insert((from, to));
    }

    /// Isolates `id` from every other node.
    pub fn isolate(&mut self, id: NodeId) {
        self.isolated.insert(id);
    }

    /// Heals every partition (fault rates are unchanged).
    pub fn recover(&mut self) {
        self.cuts.clear();
        self.isolated.clear();
    }

    /// Puts a message on the wire, deliverable from tick `deliver_at`.
    pub fn push(&mut self, msg: Message, deliver_at: u64, snapshot: Option<SnapData>) {
        self.next_seq += 1;
        self.in_flight.push(Envelope {
            msg,
            deliver_at,
            snapshot,
            seq: self.next_seq,
        });
    }

    /// Removes and returns the messages deliverable at tick `now`, in send order.
    pub fn take_due(&mut self, now: u64) -> Vec<Envelope> {
        let (due, rest): (Vec<_>, Vec<_>) = std::mem::take(&mut self.in_flight)
            .into_iter()
            .partition(|e| e.deliver_at <= now);
        self.in_flight = rest;
        due
    }

    /// Removes and returns every message in flight matching `pred`, in send order.
    pub fn take_matching(&mut self, mut pred: impl FnMut(&Envelope) -> bool) -> Vec<Envelope> {
        let (taken, rest): (Vec<_>, Vec<_>) = std::mem::take(&mut self.in_flight)
            .into_iter()
            .partition(|e| pred(e));
        self.in_flight = rest;
        taken
    }
}
