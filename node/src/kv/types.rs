//! The values the state machine and the session table share: what a write returns to its client
//! (recorded per session and replayed to retries), why a command is refused, and read results;
//! and [`Stored`], a key's value and version, shared by the key map, the state machine and
//! snapshots.
//!
//! Kept apart from `state_machine.rs`, `session.rs`, `data.rs` and `snapshot.rs` so that they
//! all depend on it and none on another's types (no import cycle).

use bytes::Bytes;
use raftkv_raft::Index;

/// What a write's client is told. Recorded per session seq and replayed to retries.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WriteResponse {
    /// A put: the key's new version (the entry's index).
    Put {
        /// The new version.
        version: u64,
    },
    /// A delete.
    Delete {
        /// Whether the key existed.
        deleted: bool,
        /// The version the key had, or 0 if it was absent.
        prev_version: u64,
    },
    /// A compare-and-swap.
    CompareAndSwap {
        /// Whether the compare held and the value was written.
        succeeded: bool,
        /// On success the new version (the entry's index); on failure the key's current version
        /// (0 if absent).
        version: u64,
        /// On failure the key's current value (empty if absent); empty on success, since the
        /// client knows what it wrote.
        current_value: Bytes,
    },
}

/// Why a session refuses a write: the variant says which rule.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Expiry {
    /// The seq is older than the session's window: its result, if it had one, is forgotten.
    BelowWindow {
        /// The oldest seq the session still answers for.
        oldest_kept: u64,
    },
    /// The session was evicted (the table was full and it was the least recently used).
    Evicted,
    /// The session is unknown and the seq is above the window, so this cannot be a new session
    /// (new sessions start at seq 1): it is one the table has forgotten.
    Unknown {
        /// The highest seq a new session may start with.
        window: u64,
    },
}

impl std::fmt::Display for Expiry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Expiry::BelowWindow { oldest_kept } => {
                write!(
                    f,
                    "seq is older than the oldest remembered seq {oldest_kept}"
                )
            }
            Expiry::Evicted => write!(f, "the session was evicted"),
            Expiry::Unknown { window } => write!(
                f,
                "unknown session with a seq above {window}; new sessions start at seq 1"
            ),
        }
    }
}

/// A write the state machine refused. Deterministic: every replica refuses the same entry the
/// same way, and a refused write changes nothing (the entry still counts as applied).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CommandError {
    /// The seq was already used in this session for a different request.
    #[error("seq {seq} of session {client_id:?} was already used for a different request")]
    SeqReuse {
        /// The session.
        client_id: String,
        /// The reused seq.
        seq: u64,
    },
    /// The session cannot tell whether this write was already applied, so it refuses it.
    #[error("session expired: {expiry} (client_id {client_id:?}, seq {seq})")]
    SessionExpired {
        /// The session.
        client_id: String,
        /// The refused seq.
        seq: u64,
        /// Which rule refused it.
        expiry: Expiry,
    },
    /// The session fields are malformed.
    #[error("invalid session: {reason}")]
    InvalidSession {
        /// What is wrong.
        reason: &'static str,
    },
}

/// How a [`CommandError`] reaches the client, without naming gRPC here: the API layer maps each
/// code to the `tonic::Code` of the same name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorCode {
    /// Bad input: seq reuse, seq 0, an oversize client id.
    InvalidArgument,
    /// The session expired; the write's outcome cannot be known, so it was not applied.
    Aborted,
}

impl CommandError {
    /// The status code the client gets.
    pub fn code(&self) -> ErrorCode {
        match self {
            CommandError::SeqReuse { .. } | CommandError::InvalidSession { .. } => {
                ErrorCode::InvalidArgument
            }
            CommandError::SessionExpired { .. } => ErrorCode::Aborted,
        }
    }
}

/// The outcome of applying one command: what to send to the waiting client.
pub type ApplyResult = Result<WriteResponse, CommandError>;

/// An entry handed to the state machine at or below its applied index: a driver bug. Nothing was
/// applied; continuing would make this replica diverge, so the driver should stop.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("entry {index} is not after the applied index {applied}")]
pub struct OutOfOrder {
    /// The index handed in.
    pub index: Index,
    /// The state machine's applied index.
    pub applied: Index,
}

/// The answer to a Get.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GetResponse {
    /// Whether the key exists.
    pub found: bool,
    /// The value (empty if not found).
    pub value: Bytes,
    /// The index of the last write to the key (0 if not found).
    pub version: u64,
}

/// One key of a scan.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ScanItem {
    /// The key.
    pub key: Bytes,
    /// Its value.
    pub value: Bytes,
    /// Its version.
    pub version: u64,
}

/// The answer to a Scan.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ScanResponse {
    /// Keys in `[start, end)`, ascending byte order.
    pub items: Vec<ScanItem>,
    /// Whether the range holds more keys after the last item (the item or byte limit cut it).
    pub more: bool,
}

impl ScanResponse {
    /// Where the next page starts when `more` is set: the last key followed by a zero byte, the
    /// smallest key after it.
    pub fn resume_key(&self) -> Option<Bytes> {
        if !self.more {
            return None;
        }
        let last = self.items.last()?;
        let mut next = Vec::with_capacity(last.key.len() + 1);
        next.extend_from_slice(&last.key);
        next.push(0);
        Some(Bytes::from(next))
    }
}

/// A stored value and its version.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct Stored {
    pub(super) value: Bytes,
    pub(super) version: u64,
}
