//! The exactly-once write session: a random `client_id` under which the servers record write
//! results, the `seq` each write takes once (all its retries resend it), and the window that
//! bounds how many seqs are in flight.
//!
//! The servers remember the results of a session's last [`SESSION_WINDOW`] seqs, and open a new
//! session only at a seq within that window (DESIGN.md §5). So a client keeps every write it has
//! in flight within one window of its oldest unfinished write (a write waits for a slot), and
//! when the servers answer ABORTED ("session expired") it starts a new session at seq 1.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};

use crate::sync::lock;

/// How many seqs of one session may be in flight at once, counted from the oldest unfinished
/// one: the servers' default session window (`SessionConfig::DEFAULT_WINDOW`). Within it every
/// retry can still be answered from the recorded results, and a new session never starts above
/// the seq the servers accept for an unknown session.
pub const SESSION_WINDOW: u64 = 128;

/// A client's write session, shared by its clones.
#[derive(Debug)]
pub(crate) struct WriteSession {
    current: Mutex<Session>,
    /// Woken when a write leaves the session's window (or the session is replaced).
    slot_freed: tokio::sync::Notify,
}

impl WriteSession {
    pub(crate) fn new() -> Self {
        Self {
            current: Mutex::new(Session::new()),
            slot_freed: tokio::sync::Notify::new(),
        }
    }

    /// The id of the current session.
    pub(crate) fn client_id(&self) -> String {
        lock(&self.current).client_id.clone()
    }

    /// Takes the session and a fresh seq for one write; all its retries reuse both. Waits while
    /// the session's window is full (see [`SESSION_WINDOW`]); the slot is held until the returned
    /// guard drops.
    pub(crate) async fn next_write(self: &Arc<Self>) -> (String, u64, WriteSlot) {
        loop {
            // Register for a wake-up before looking, so a slot freed in between is not missed.
            let mut freed = std::pin::pin!(self.slot_freed.notified());
            freed.as_mut().enable();
            {
                let mut session = lock(&self.current);
                let oldest = session
                    .in_flight
                    .first()
                    .copied()
                    .unwrap_or(session.next_seq);
                if session.next_seq < oldest + SESSION_WINDOW {
                    let seq = session.next_seq;
                    session.next_seq += 1;
                    session.in_flight.insert(seq);
                    let client_id = session.client_id.clone();
                    let slot = WriteSlot {
                        session: self.clone(),
                        client_id: client_id.clone(),
                        seq,
                    };
                    return (client_id, seq, slot);
                }
            }
            freed.await;
        }
    }
}

/// The exactly-once session: a random id under which the servers record write results.
#[derive(Debug)]
struct Session {
    client_id: String,
    /// The seq the next write takes.
    next_seq: u64,
    /// Seqs of writes not finished yet (see [`SESSION_WINDOW`]).
    in_flight: BTreeSet<u64>,
}

impl Session {
    fn new() -> Self {
        Self {
            client_id: new_client_id(),
            next_seq: 1,
            in_flight: BTreeSet::new(),
        }
    }
}

/// One write's seq in the session; leaving the window when dropped (the write finished, failed
/// or its future was dropped) lets a waiting write take the next seq.
pub(crate) struct WriteSlot {
    session: Arc<WriteSession>,
    client_id: String,
    seq: u64,
}

impl Drop for WriteSlot {
    fn drop(&mut self) {
        {
            let mut session = lock(&self.session.current);
            if session.client_id == self.client_id {
                session.in_flight.remove(&self.seq);
            }
        }
        self.session.slot_freed.notify_waiters();
    }
}

impl WriteSlot {
    /// The servers answered ABORTED: the session this write used is gone, and later writes need
    /// a new one or they would fail the same way. Replaces it only if no other task already
    /// did. The new session starts at seq 1: the servers open an unknown session only at a seq
    /// within the window.
    pub(crate) fn session_expired(&self) {
        let mut current = lock(&self.session.current);
        if current.client_id == self.client_id {
            *current = Session::new();
            drop(current);
            self.session.slot_freed.notify_waiters();
        }
    }
}

/// A random session id: 128 bits as 32 hex digits.
fn new_client_id() -> String {
    let mut bytes = [0u8; 16];
    if getrandom::fill(&mut bytes).is_err() {
        // No OS randomness (practically never on Linux). A clock-and-pid id is still unique
        // enough to keep sessions apart; a collision could only merge two clients' seq spaces.
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        bytes = (nanos ^ (u128::from(std::process::id()) << 96)).to_le_bytes();
    }
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_ids_are_random_hex() {
        let a = new_client_id();
        assert_eq!(a.len(), 32);
        assert!(a.chars().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(a, new_client_id());
    }
}
