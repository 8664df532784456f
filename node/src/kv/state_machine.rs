//! [`KvStateMachine`]: the ordered map the log is applied to, with reads and the results a write
//! returns to its client.

use std::ops::Bound;

use bytes::Bytes;
use raftkv_raft::Index;

use super::command::{Command, Op};
use super::data::{FrozenKv, KvData};
use super::session::{Admission, SessionConfig, SessionTable};
use super::types::{
    ApplyResult, GetResponse, OutOfOrder, ScanItem, ScanResponse, Stored, WriteResponse,
};

/// Scan items returned when the request's limit is 0.
pub const SCAN_DEFAULT_LIMIT: u32 = 1000;
/// The most scan items one response holds; larger limits are clamped to it.
pub const SCAN_MAX_LIMIT: u32 = 10_000;
/// The most key + value bytes one scan response holds (it always holds at least one item, and one
/// maximal item — a 4 KiB key and a 1 MiB value — is well under this).
pub const SCAN_MAX_BYTES: usize = 4 * 1024 * 1024;

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
            Ok(Admission::Replay(response)) => Ok(Ok(response)),
            Ok(Admission::Apply) => {
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

impl KvStateMachine {
    /// Freezes the current state for a snapshot: O(1) for the keys (see the [module
    /// docs](super::data)), a copy of the bounded session table. Writes after this do not show in the
    /// view.
    pub fn freeze(&mut self) -> FrozenKv {
        FrozenKv {
            data: self.data.freeze(),
            sessions: self.sessions.clone(),
            applied: self.applied,
        }
    }

    /// Whether writes currently go to an overlay (a frozen view was taken and its changes not
    /// folded back yet). For tests and diagnostics.
    pub fn has_overlay(&self) -> bool {
        self.data.has_overlay()
    }
}
