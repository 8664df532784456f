//! Durable storage for the Raft log, hard state and snapshots.
