//! [`KvStateMachine`]: the ordered map the log is applied to, with reads and the results a write
//! returns to its client.

use std::ops::Bound;

use bytes::Bytes;
use raftkv_raft::Index;

use super::command::{Command, Op};
use super::data::KvData;
use super::session::{SessionConfig, SessionTable, Verdict};

/// Scan items returned when the request's limit is 0.
pub const SCAN_DEFAULT_LIMIT: u32 = 1000;
/// The most scan items one response holds; larger limits are clamped to it.
pub const SCAN_MAX_LIMIT: u32 = 10_000;
/// The most key + value bytes one scan response holds (it always holds at least one item, and one
/// maximal item — a 4 KiB key and a 1 MiB value — is well under this).
pub const SCAN_MAX_BYTES: usize = 4 * 1024 * 1024;

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

/// The replicated KV store: data, client sessions and the index of the last applied entry.
/// See the [module docs](super) for the rules.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KvStateMachine {
    pub(super) data: KvData,
    pub(super) sessions: SessionTable,
    pub(super) applied: Index,
    /// Planted bug `session-no-dedup`: retries are applied again.
    #[cfg(feature = "planted-bugs")]
    pub(super) no_dedup: bool,
}

impl Default for KvStateMachine {
    fn default() -> Self {
        Self::new()
    }
}

impl KvStateMachine {
    /// An empty store with the default session limits.
    pub fn new() -> Self {
        Self::with_config(SessionConfig::default())
    }

    /// An empty store with the given session limits (a `window` or `max_sessions` of 0 is raised
    /// to 1). Every replica of a cluster must use the same limits, or they would disagree on which
    /// retries are refused.
    pub fn with_config(config: SessionConfig) -> Self {
        Self {
            data: KvData::default(),
            sessions: SessionTable::new(config),
            applied: 0,
            #[cfg(feature = "planted-bugs")]
            no_dedup: false,
        }
    }

    /// Switches on the planted bug `session-no-dedup` (see `crate::planted`).
    #[cfg(feature = "planted-bugs")]
    pub fn plant_no_dedup(&mut self) {
        self.no_dedup = true;
    }

    /// The index of the last entry applied (0: none).
    pub fn applied_index(&self) -> Index {
        self.applied
    }

    /// The session limits in force.
    pub fn session_config(&self) -> SessionConfig {
        self.sessions.config
    }

    /// The number of keys.
    pub fn len(&self) -> usize {
        self.data.len()
    }

    /// Whether there are no keys.
    pub fn is_empty(&self) -> bool {
        self.data.len() == 0
    }

    /// The number of live client sessions.
    pub fn session_count(&self) -> usize {
        self.sessions.sessions.len()
    }

    /// What the session table's recorded results take, as counted against
    /// [`super::session::MAX_SESSION_BYTES`].
    pub fn session_bytes(&self) -> u64 {
        self.sessions.bytes()
    }

    fn advance(&mut self, index: Index) -> Result<(), OutOfOrder> {
        if index <= self.applied {
            return Err(OutOfOrder {
                index,
                applied: self.applied,
            });
        }
        self.applied = index;
        Ok(())
    }

    /// Marks an entry that carries no KV command (a leader's no-op, a configuration change) as
    /// applied.
    pub fn apply_noop(&mut self, index: Index) -> Result<(), OutOfOrder> {
        self.advance(index)
    }

    /// Applies the command of entry `index`. Entries must come in log order: `index` must be
    /// greater than [`applied_index`](Self::applied_index), or nothing happens and the error says
    /// so. Otherwise the entry is applied — even when the inner result is a [`CommandError`], which
    /// changes nothing but the applied index — and the inner result is what the client is told.
    ///
    /// Keys and values are copied into buffers of their own: a decoded command's `Bytes` may be a
    /// slice of a much larger buffer (a batch of entries read from the log or the network), and a
    /// stored slice would keep all of it alive.
    pub fn apply(&mut self, index: Index, cmd: &Command) -> Result<ApplyResult, OutOfOrder> {
        self.advance(index)?;
        if cmd.client_id.is_empty() {
            return Ok(Ok(self.write(index, &cmd.op)));
        }
        #[cfg(feature = "planted-bugs")]
        if self.no_dedup {
            return Ok(Ok(self.write(index, &cmd.op)));
        }
        let fingerprint = cmd.op.fingerprint();
        match self
            .sessions
            .check(&cmd.client_id, cmd.seq, fingerprint, index)
        {
            Err(refused) => Ok(Err(refused)),
            Ok(Verdict::Replay(response)) => Ok(Ok(response)),
            Ok(Verdict::Apply) => {
                let response = self.write(index, &cmd.op);
                self.sessions.record(
                    &cmd.client_id,
                    cmd.seq,
                    fingerprint,
                    response.clone(),
                    index,
                );
                Ok(Ok(response))
            }
        }
    }

    /// Performs a write at `index` (DESIGN §5).
    fn write(&mut self, index: Index, op: &Op) -> WriteResponse {
        match op {
            Op::Put { key, value } => {
                self.store(key, value, index);
                WriteResponse::Put { version: index }
            }
            Op::Delete { key } => match self.data.remove(key.as_ref()) {
                Some(old) => WriteResponse::Delete {
                    deleted: true,
                    prev_version: old.version,
                },
                None => WriteResponse::Delete {
                    deleted: false,
                    prev_version: 0,
                },
            },
            Op::CompareAndSwap {
                key,
                expected_version,
                value,
            } => {
                let current = self.data.get(key.as_ref());
                let current_version = current.map_or(0, |s| s.version);
                if current_version == *expected_version {
                    self.store(key, value, index);
                    WriteResponse::CompareAndSwap {
                        succeeded: true,
                        version: index,
                        current_value: Bytes::new(),
                    }
                } else {
                    WriteResponse::CompareAndSwap {
                        succeeded: false,
                        version: current_version,
                        current_value: current.map_or_else(Bytes::new, |s| s.value.clone()),
                    }
                }
            }
        }
    }

    fn store(&mut self, key: &Bytes, value: &Bytes, version: u64) {
        let value = Bytes::copy_from_slice(value);
        self.data.put(key, Stored { value, version });
    }

    /// Reads one key.
    pub fn get(&self, key: &[u8]) -> GetResponse {
        match self.data.get(key) {
            Some(stored) => GetResponse {
                found: true,
                value: stored.value.clone(),
                version: stored.version,
            },
            None => GetResponse {
                found: false,
                value: Bytes::new(),
                version: 0,
            },
        }
    }

    /// Reads the keys in `[start, end)` in ascending byte order; an empty `end` means up to the
    /// last key. At most `limit` items (0 means [`SCAN_DEFAULT_LIMIT`]; values above
    /// [`SCAN_MAX_LIMIT`] are clamped to it — the API layer may reject them instead) and at most
    /// [`SCAN_MAX_BYTES`] of keys and values, but always at least one item if the range has one.
    /// `more` says the range continues; the next page starts at [`ScanResponse::resume_key`].
    pub fn scan(&self, start: &[u8], end: &[u8], limit: u32) -> ScanResponse {
        let limit = match limit {
            0 => SCAN_DEFAULT_LIMIT,
            n => n.min(SCAN_MAX_LIMIT),
        } as usize;
        let upper = if end.is_empty() {
            Bound::Unbounded
        } else if start >= end {
            // BTreeMap::range panics on an inverted range; an empty or inverted one holds nothing.
            return ScanResponse::default();
        } else {
            Bound::Excluded(end)
        };
        let mut items = Vec::new();
        let mut bytes = 0usize;
        for (key, stored) in self.data.range((Bound::Included(start), upper)) {
            let size = key.len() + stored.value.len();
            if items.len() == limit || (!items.is_empty() && bytes + size > SCAN_MAX_BYTES) {
                // This key is in range but not in the response.
                return ScanResponse { items, more: true };
            }
            bytes += size;
            items.push(ScanItem {
                key: key.clone(),
                value: stored.value.clone(),
                version: stored.version,
            });
        }
        ScanResponse { items, more: false }
    }
}
