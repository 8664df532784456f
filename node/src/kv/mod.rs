//! The replicated key-value state machine: what committed log entries are applied to.
//!
//! Deterministic by construction: the same entries in the same order give the same state, the same
//! results and the same snapshot bytes on every replica. There is no clock, no randomness, no I/O
//! (beyond an optional `Write` for snapshots) and no hash-map iteration here; maps are `BTreeMap`s
//! and the session table evicts in log order.
//!
//! Files:
//! - `command`: [`Command`], the payload of a log entry, and its versioned binary encoding;
//! - `state_machine`: [`KvStateMachine`] — apply, Get, Scan;
//! - `types`: the response and error types, shared by the state machine and the session table;
//! - `data`: the key map — a shared base plus, while a snapshot is written, an overlay of
//!   changes — and [`FrozenKv`], the view a snapshot is written from off the event loop;
//! - `session`: the client session table that makes retried writes exactly-once;
//! - `snapshot`: checksummed, deterministic snapshots and their restore.
//!
//! Their encodings are built from the node's one codec (`crate::codec`: varints, a bounds-checked
//! reader, FNV-1a).
//!
//! # Applying entries (for the driver)
//!
//! Committed entries are applied strictly in log order. For each one, the driver calls
//! [`KvStateMachine::apply`] with the decoded [`Command`] of a normal entry, or
//! [`KvStateMachine::apply_noop`] for a leader's no-op or a configuration entry; both refuse an
//! index that is not above [`KvStateMachine::applied_index`] ([`OutOfOrder`], a driver bug: stop).
//! The inner [`ApplyResult`] goes to the waiting request. A committed entry that fails
//! [`Command::decode`] must also stop the node rather than be skipped: it means a newer format
//! (a rolling upgrade out of order) or corruption, and a replica that skipped an entry others
//! applied would diverge from them silently.
//!
//! # Semantics (DESIGN §5)
//!
//! - A key's version is the index of the entry that last wrote it; a missing key has version 0.
//! - Put: version = index.
//! - Delete: `deleted` and `prev_version`; a missing key is not an error; afterwards version 0.
//! - CompareAndSwap: succeeds iff the key's version equals `expected_version` (0: absent); success
//!   writes with version = index and returns an empty `current_value`; failure is a normal response
//!   with `succeeded = false` and the current version and value.
//! - Get and Scan take `&self` and never touch sessions; see [`KvStateMachine::scan`] for limits.
//!
//! # Sessions: exactly-once writes
//!
//! A command with a non-empty `client_id` belongs to that client's session; `seq` numbers the
//! client's writes from 1. Each session keeps, for the last [`SessionConfig::window`] seqs (by
//! number: `(highest - window, highest]`), the response and a fingerprint (FNV-1a) of the request.
//! A write is then, in this order:
//!
//! 1. refused with `InvalidSession` (INVALID_ARGUMENT) if `seq` is 0 or the id is over
//!    [`MAX_CLIENT_ID_LEN`] bytes;
//! 2. a **retry** if its seq has a recorded result with the same fingerprint: the recorded response
//!    is returned and nothing is applied;
//! 3. refused with `SeqReuse` (INVALID_ARGUMENT) if its seq has a recorded result for a different
//!    request;
//! 4. refused with `SessionExpired` (ABORTED) if its seq is at or below `highest - window`: its
//!    result, if it had one, is forgotten, so applying it could apply it twice;
//! 5. otherwise **new**: applied, and its response recorded. Seqs may arrive out of order within
//!    the window (a pipelining client), and gaps are fine.
//!
//! Sessions are bounded by [`SessionConfig::max_sessions`]. Opening one more evicts the least
//! recently used session, where "used" is the index of the last entry that applied or replayed one
//! of its writes — a log position, never a clock, so every replica evicts the same session.
//! They are bounded in bytes too ([`MAX_SESSION_BYTES`]: a failed CAS records the current value,
//! up to 1 MiB): over the budget, least recently used sessions are evicted the same way, several
//! by one entry if need be.
//!
//! **Telling a new session from a forgotten one.** The client id is chosen by the client, so an
//! id the table does not know is either new or was evicted. The rule:
//!
//! - an evicted id leaves a *tombstone*; any write on a tombstoned id is refused with
//!   `SessionExpired` (ABORTED), whatever its seq — the client must start a new session under a
//!   new id. Tombstones are bounded by [`SessionConfig::max_tombstones`], oldest forgotten first;
//! - an unknown id without a tombstone opens a session only if its seq is within the first window
//!   (`seq <= window`): clients start sessions at seq 1, so a higher seq proves a session the
//!   table has forgotten, and it is refused with `SessionExpired`.
//!
//! So a retry is never applied twice, except in one case the table cannot know about: a session
//! that was evicted *and* whose tombstone was later forgotten (another `max_tombstones` evictions,
//! i.e. at the defaults 10,000 more sessions opened after it went idle), retrying a write of its
//! first window. A long-lived session is protected for ever by the seq rule; the bound trades
//! that remaining corner for bounded memory, and the defaults put it far beyond a client's retry
//! horizon (seconds).
//!
//! Refused writes change nothing (the entry still counts as applied), and are not recorded: a retry
//! of a refused write is refused again in the same way. Session limits are replicated state: they
//! are stored in snapshots, and all replicas must start with the same [`SessionConfig`].
//!
//! Memory: a failed CompareAndSwap records the current value it returned (shared with the map
//! while the key is unchanged), so a session's window can hold up to `window` values.
//!
//! # Errors and gRPC codes
//!
//! [`CommandError::code`] gives an [`ErrorCode`] that the API layer maps to the `tonic::Code` of the
//! same name: `SeqReuse` and `InvalidSession` are INVALID_ARGUMENT, `SessionExpired` is ABORTED
//! (its message starts with "session expired"). [`OutOfOrder`], [`DecodeError`] on a committed
//! entry and [`SnapshotError`] are the node's own failures, never a client's (INTERNAL if they must
//! be reported at all).

mod command;
mod data;
mod session;
mod snapshot;
mod state_machine;
mod types;

pub use crate::codec::DecodeError;
pub use command::{COMMAND_FORMAT_VERSION, Command, Op};
pub use data::FrozenKv;
pub use session::{MAX_CLIENT_ID_LEN, MAX_SESSION_BYTES, SessionConfig};
pub use snapshot::{SNAPSHOT_FORMAT_VERSION, SNAPSHOT_MAGIC, SnapshotError};
pub use state_machine::{KvStateMachine, SCAN_DEFAULT_LIMIT, SCAN_MAX_BYTES, SCAN_MAX_LIMIT};
pub use types::{
    ApplyResult, CommandError, ErrorCode, Expiry, GetResponse, OutOfOrder, ScanItem, ScanResponse,
    WriteResponse,
};
