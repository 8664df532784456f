//! The loop's tunables, and how long a read lease may last given the guards of the voters.

use std::time::Duration;

/// Tunables of the loop.
#[derive(Clone, Debug)]
pub struct DriverConfig {
    /// How long one Raft tick is.
    pub tick: Duration,
    /// The core's minimum election timeout, in ticks.
    pub election_ticks: u64,
    /// Take a snapshot (and compact the log) after this many applied entries.
    pub snapshot_entries: u64,
    /// Entries kept in the log below each local snapshot (the trailing log), so that a follower
    /// behind by fewer is sent entries, not the snapshot; 0 compacts to the snapshot.
    pub snapshot_trailing_entries: u64,
    /// Most writes and reads waiting at once before new ones are refused as overloaded.
    pub max_pending: usize,
    /// A deliberate bug to switch on (see [`crate::planted`]).
    #[cfg(feature = "planted-bugs")]
    pub planted_bug: Option<crate::planted::PlantedBug>,
    /// Test hook (feature `planted-bugs`): a node with state on disk holds start-up this long
    /// after its ports opened, as if loading a large snapshot took that long.
    #[cfg(feature = "planted-bugs")]
    pub slow_start: Option<Duration>,
}

impl DriverConfig {
    /// How long this node refuses (pre-)votes after it heard from a leader, by its own clock:
    /// it refuses until `election_ticks` of its ticks have passed, and its first tick may come
    /// right after the message, so at least `election_ticks - 1` ticks. Reported to leaders in
    /// every response (`RaftResponse.lease_guard_ms`).
    pub fn lease_guard(&self) -> Duration {
        self.tick * self.election_ticks.saturating_sub(1) as u32
    }

    /// How long a lease read may rely on a quorum's acknowledgement of a heartbeat round, given
    /// the shortest guard among the voters that answered this leader (`None`: none reported).
    /// Every voter in the acknowledging quorum has reported its guard with that very answer, so
    /// the shortest reported guard bounds them all, whatever timing flags each member runs
    /// with. One of this node's ticks and 10% are the margin for clock drift and scheduling.
    pub fn lease(&self, shortest_peer_guard: Option<Duration>) -> Duration {
        let guard = shortest_peer_guard.map_or(self.lease_guard(), |g| g.min(self.lease_guard()));
        guard.saturating_sub(self.tick).mul_f64(0.9)
    }
}

impl Default for DriverConfig {
    fn default() -> Self {
        Self {
            tick: Duration::from_millis(100),
            election_ticks: 10,
            snapshot_entries: 10_000,
            snapshot_trailing_entries: 5_000,
            max_pending: 10_000,
            #[cfg(feature = "planted-bugs")]
            planted_bug: None,
            #[cfg(feature = "planted-bugs")]
            slow_start: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_lease_is_bounded_by_the_shortest_guard_of_any_voter() {
        let cfg = DriverConfig {
            tick: Duration::from_millis(100),
            election_ticks: 10,
            ..DriverConfig::default()
        };
        assert_eq!(cfg.lease_guard(), Duration::from_millis(900));
        // Same timing everywhere: (10 - 2) ticks, less 10%.
        assert_eq!(cfg.lease(None), Duration::from_millis(720));
        assert_eq!(
            cfg.lease(Some(Duration::from_millis(900))),
            Duration::from_millis(720)
        );
        // A voter running with a quarter of the election timeout shortens the lease to fit it.
        assert_eq!(
            cfg.lease(Some(Duration::from_millis(300))),
            Duration::from_millis(180)
        );
        // A voter with a longer guard does not lengthen it beyond this node's own.
        assert_eq!(
            cfg.lease(Some(Duration::from_secs(5))),
            Duration::from_millis(720)
        );
        // A guard shorter than one tick leaves no lease at all.
        assert_eq!(cfg.lease(Some(Duration::from_millis(50))), Duration::ZERO);
    }
}
