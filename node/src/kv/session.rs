//! The client session table: exactly-once writes for clients that retry (DESIGN §5, Raft thesis
//! §6.3). It is replicated state: every replica applies the same entries to the same table and so
//! reaches the same verdicts, and it travels in snapshots. Nothing here reads a clock or iterates
//! a hash map; eviction is ordered by log index.
//!
//! The rules are described once, in the [module docs](super); this file implements them.

use std::collections::{BTreeMap, BTreeSet};

use raftkv_raft::Index;

use super::types::{CommandError, Expiry, WriteResponse};

/// The longest accepted `client_id`, in bytes. Bounds the memory of the session table and of its
/// tombstones; the API layer should refuse longer ids before proposing.
pub const MAX_CLIENT_ID_LEN: usize = 128;

/// The most bytes the recorded results of all sessions may take (values of failed CAS answers,
/// client ids and a fixed overhead per result). Beyond it the least recently used sessions are
/// evicted, exactly as when there are too many sessions: their later retries fail with "session
/// expired" instead of risking a second apply. A compile-time constant, the same on every
/// replica (it decides evictions, which are replicated state): changing it is a change of the
/// replicated state machine.
pub const MAX_SESSION_BYTES: u64 = 64 << 20;

/// What one recorded result counts against [`MAX_SESSION_BYTES`].
fn result_bytes(r: &Recorded) -> u64 {
    let value = match &r.response {
        WriteResponse::CompareAndSwap { current_value, .. } => current_value.len() as u64,
        _ => 0,
    };
    48 + value
}

/// What a session counts against [`MAX_SESSION_BYTES`] besides its results.
fn session_bytes(client_id: &str) -> u64 {
    64 + client_id.len() as u64
}

/// Limits of the session table. Part of the replicated state: every replica must use the same
/// values (they are stored in snapshots, and a restored state machine keeps the snapshot's).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SessionConfig {
    /// How many seqs per session keep their result: a session whose highest seq is `h` answers
    /// retries of seqs in `(h - window, h]`; older seqs fail with "session expired". It is also
    /// the highest seq a session may start with. Also bounds how many writes a client may pipeline.
    pub window: u64,
    /// How many sessions are kept; opening one more evicts the least recently used (by log index).
    pub max_sessions: u64,
    /// How many evicted session ids are remembered, so that their retries fail instead of opening a
    /// new session; when full, the id evicted longest ago is forgotten.
    pub max_tombstones: u64,
}

impl SessionConfig {
    /// Default seqs remembered per session.
    pub const DEFAULT_WINDOW: u64 = 128;
    /// Default bound on live sessions.
    pub const DEFAULT_MAX_SESSIONS: u64 = 10_000;
    /// Default bound on remembered evicted ids.
    pub const DEFAULT_MAX_TOMBSTONES: u64 = 10_000;

    /// The config with every limit at least 1 (a zero window or table could not record anything).
    pub(super) fn normalized(self) -> Self {
        Self {
            window: self.window.max(1),
            max_sessions: self.max_sessions.max(1),
            max_tombstones: self.max_tombstones,
        }
    }
}

impl Default for SessionConfig {
    fn default() -> Self {
        Self {
            window: Self::DEFAULT_WINDOW,
            max_sessions: Self::DEFAULT_MAX_SESSIONS,
            max_tombstones: Self::DEFAULT_MAX_TOMBSTONES,
        }
    }
}

/// The result recorded for one seq of a session.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct Recorded {
    /// [`Op::fingerprint`](super::Op) of the request that produced `response`.
    pub(super) fingerprint: u64,
    /// What the client was (or should have been) told.
    pub(super) response: WriteResponse,
}

/// One client session.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct Session {
    /// The index of the last entry that applied or replayed a write of this session: the LRU key.
    pub(super) last_used: Index,
    /// Results by seq, for seqs in `(highest - window, highest]`. Never empty: a session exists
    /// only once it has recorded a result, and the highest seq's result is never pruned.
    pub(super) results: BTreeMap<u64, Recorded>,
}

impl Session {
    /// The highest seq recorded.
    pub(super) fn highest_seq(&self) -> u64 {
        self.results.last_key_value().map_or(0, |(seq, _)| *seq)
    }
}

/// What to do with a write, decided before it is applied.
#[derive(Debug)]
pub(super) enum Admission {
    /// Apply it and then [`SessionTable::record`] the result.
    Apply,
    /// A retry: answer with the recorded response, apply nothing.
    Replay(WriteResponse),
}

/// Sessions, their LRU order and the tombstones of evicted ones.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct SessionTable {
    pub(super) config: SessionConfig,
    pub(super) sessions: BTreeMap<String, Session>,
    /// `last_used` -> client id. Each entry touches at most one session, so keys are unique, and
    /// the first key is the least recently used session.
    pub(super) lru: BTreeMap<Index, String>,
    /// Evicted client id -> the index of the entry that evicted it.
    pub(super) tombstones: BTreeMap<String, Index>,
    /// (Eviction index, client id), oldest first: the order in which tombstones are forgotten.
    /// One entry may evict several sessions (over [`MAX_SESSION_BYTES`]), so the id breaks ties.
    pub(super) tombstone_order: BTreeSet<(Index, String)>,
    /// What the sessions count against [`MAX_SESSION_BYTES`] (derived: recounted on restore).
    pub(super) bytes: u64,
}

impl SessionTable {
    /// An empty table.
    pub(super) fn new(config: SessionConfig) -> Self {
        Self {
            config: config.normalized(),
            sessions: BTreeMap::new(),
            lru: BTreeMap::new(),
            tombstones: BTreeMap::new(),
            tombstone_order: BTreeSet::new(),
            bytes: 0,
        }
    }

    /// Decides whether the write `(client_id, seq)` with request `fingerprint` is new, a retry, or
    /// refused. A replay marks the session used at `index`; nothing else changes here.
    pub(super) fn check(
        &mut self,
        client_id: &str,
        seq: u64,
        fingerprint: u64,
        index: Index,
    ) -> Result<Admission, CommandError> {
        if seq == 0 {
            return Err(CommandError::InvalidSession {
                reason: "seq must be at least 1 when client_id is set",
            });
        }
        if client_id.len() > MAX_CLIENT_ID_LEN {
            return Err(CommandError::InvalidSession {
                reason: "client_id is longer than 128 bytes",
            });
        }
        let window = self.config.window;
        let Some(session) = self.sessions.get(client_id) else {
            if self.tombstones.contains_key(client_id) {
                return Err(CommandError::SessionExpired {
                    client_id: client_id.to_owned(),
                    seq,
                    expiry: Expiry::Evicted,
                });
            }
            if seq > window {
                return Err(CommandError::SessionExpired {
                    client_id: client_id.to_owned(),
                    seq,
                    expiry: Expiry::Unknown { window },
                });
            }
            return Ok(Admission::Apply);
        };
        if let Some(recorded) = session.results.get(&seq) {
            if recorded.fingerprint != fingerprint {
                return Err(CommandError::SeqReuse {
                    client_id: client_id.to_owned(),
                    seq,
                });
            }
            let response = recorded.response.clone();
            self.touch(client_id, index);
            return Ok(Admission::Replay(response));
        }
        let highest = session.highest_seq();
        if seq <= highest.saturating_sub(window) {
            // Its result, if it ever had one, has been pruned: applying it could apply it twice.
            return Err(CommandError::SessionExpired {
                client_id: client_id.to_owned(),
                seq,
                expiry: Expiry::BelowWindow {
                    oldest_kept: highest.saturating_sub(window) + 1,
                },
            });
        }
        Ok(Admission::Apply)
    }

    /// Records the result of a write that [`SessionTable::check`] said to apply, opening the
    /// session (and evicting the least recently used one, if the table is full) when it is new.
    pub(super) fn record(
        &mut self,
        client_id: &str,
        seq: u64,
        fingerprint: u64,
        response: WriteResponse,
        index: Index,
    ) {
        let window = self.config.window;
        let recorded = Recorded {
            fingerprint,
            response,
        };
        self.bytes += result_bytes(&recorded);
        if let Some(session) = self.sessions.get_mut(client_id) {
            if let Some(replaced) = session.results.insert(seq, recorded) {
                self.bytes -= result_bytes(&replaced);
            }
            let highest = session.highest_seq();
            let keep_from = highest.saturating_sub(window) + 1;
            // split_off keeps seqs >= keep_from in the returned map; the rest is dropped.
            let kept = session.results.split_off(&keep_from);
            let pruned = std::mem::replace(&mut session.results, kept);
            self.bytes -= pruned.values().map(result_bytes).sum::<u64>();
            self.touch(client_id, index);
        } else {
            if self.sessions.len() as u64 >= self.config.max_sessions {
                self.evict_lru(index);
            }
            let mut results = BTreeMap::new();
            results.insert(seq, recorded);
            self.bytes += session_bytes(client_id);
            self.sessions.insert(
                client_id.to_owned(),
                Session {
                    last_used: index,
                    results,
                },
            );
            self.lru.insert(index, client_id.to_owned());
        }
        // Over the byte budget: evict the least recently used sessions (possibly, for a huge
        // single session, this one: its later retries then fail as expired, never apply twice).
        while self.bytes > MAX_SESSION_BYTES && !self.lru.is_empty() {
            self.evict_lru(index);
        }
    }

    /// Recounts [`SessionTable::bytes`] (after a restore).
    pub(super) fn recount_bytes(&mut self) {
        self.bytes = self
            .sessions
            .iter()
            .map(|(id, s)| session_bytes(id) + s.results.values().map(result_bytes).sum::<u64>())
            .sum();
    }

    /// What the sessions count against [`MAX_SESSION_BYTES`].
    pub(super) fn bytes(&self) -> u64 {
        self.bytes
    }

    /// Moves `client_id` to the most recently used position.
    fn touch(&mut self, client_id: &str, index: Index) {
        if let Some(session) = self.sessions.get_mut(client_id) {
            self.lru.remove(&session.last_used);
            session.last_used = index;
            self.lru.insert(index, client_id.to_owned());
        }
    }

    /// Evicts the least recently used session and leaves a tombstone for it.
    fn evict_lru(&mut self, index: Index) {
        let Some((_, victim)) = self.lru.pop_first() else {
            return;
        };
        if let Some(session) = self.sessions.remove(&victim) {
            self.bytes -=
                session_bytes(&victim) + session.results.values().map(result_bytes).sum::<u64>();
        }
        if self.config.max_tombstones == 0 {
            return;
        }
        while self.tombstones.len() as u64 >= self.config.max_tombstones {
            match self.tombstone_order.pop_first() {
                Some((_, forgotten)) => {
                    self.tombstones.remove(&forgotten);
                }
                None => break,
            }
        }
        self.tombstones.insert(victim.clone(), index);
        self.tombstone_order.insert((index, victim));
    }
}
