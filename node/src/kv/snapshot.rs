//! Snapshots of the KV state machine: data, sessions and applied index in one checksummed,
//! deterministic byte string.
//!
//! # Format, version 1
//!
//! ```text
//! "RKVS"  magic
//! u8      format version (1)
//! varint  applied index
//! varint  session window, varint max sessions, varint max tombstones
//! varint  key count,        then per key in ascending byte order:
//!           bytes key, varint version, bytes value
//! varint  session count,    then per session in ascending client_id order:
//!           bytes client_id, varint last_used, varint result count, then per seq ascending:
//!             varint seq, u64le fingerprint, response
//! varint  tombstone count,  then per evicted id in ascending order:
//!           bytes client_id, varint evicted_at
//! u32le   CRC-32 (IEEE, as crc32fast computes it) of every byte before it
//!
//! response: u8 1 (Put)    varint version
//!           u8 2 (Delete) u8 deleted, varint prev_version
//!           u8 3 (CAS)    u8 succeeded, varint version, bytes current_value
//! ```
//!
//! Everything is written in map order, so equal states give equal bytes: replicas can compare
//! snapshots, and a restored state machine snapshots to exactly the bytes it was restored from.
//! Restoring checks the checksum and then every invariant the state machine relies on (sorted
//! unique keys, versions not after the applied index, session windows, unique LRU positions), so a
//! snapshot that passes is one this code could have written.

use std::collections::BTreeMap;
use std::io::{self, Write};

use bytes::Bytes;
use raftkv_raft::Index;

use super::data::FrozenKv;
use super::session::{MAX_CLIENT_ID_LEN, Recorded, Session, SessionConfig, SessionTable};
use super::state_machine::KvStateMachine;
use super::types::{Stored, WriteResponse};
use crate::codec::{DecodeError, Reader, varint_bytes};

/// The first bytes of every KV snapshot.
pub const SNAPSHOT_MAGIC: [u8; 4] = *b"RKVS";
/// The snapshot format this build writes and reads.
pub const SNAPSHOT_FORMAT_VERSION: u8 = 1;

const HEADER_LEN: usize = SNAPSHOT_MAGIC.len() + 1;
const TRAILER_LEN: usize = 4;

const RESPONSE_PUT: u8 = 1;
const RESPONSE_DELETE: u8 = 2;
const RESPONSE_CAS: u8 = 3;

/// Why a snapshot could not be restored.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SnapshotError {
    /// Shorter than the fixed header and trailer.
    #[error("snapshot too short: {len} bytes")]
    TooShort {
        /// Its length.
        len: usize,
    },
    /// Does not start with [`SNAPSHOT_MAGIC`].
    #[error("not a KV snapshot (bad magic)")]
    BadMagic,
    /// The trailing CRC-32 does not match the contents.
    #[error("snapshot checksum mismatch: stored {stored:#010x}, computed {computed:#010x}")]
    ChecksumMismatch {
        /// The checksum in the trailer.
        stored: u32,
        /// The checksum of the contents.
        computed: u32,
    },
    /// A field is malformed (or the format version is unknown).
    #[error("malformed snapshot: {0}")]
    Decode(#[from] DecodeError),
    /// The fields decode but break an invariant of the state machine.
    #[error("inconsistent snapshot: {0}")]
    Inconsistent(String),
}

/// Writes through to `inner`, buffering small fields and keeping a running CRC of all bytes.
struct ChecksumWriter<W: Write> {
    inner: W,
    buf: Vec<u8>,
    crc: crc32fast::Hasher,
}

impl<W: Write> ChecksumWriter<W> {
    /// Small fields are gathered up to this size before a write to `inner`.
    const BUFFER: usize = 64 * 1024;

    fn new(inner: W) -> Self {
        Self {
            inner,
            buf: Vec::with_capacity(Self::BUFFER),
            crc: crc32fast::Hasher::new(),
        }
    }

    fn flush_buf(&mut self) -> io::Result<()> {
        self.crc.update(&self.buf);
        self.inner.write_all(&self.buf)?;
        self.buf.clear();
        Ok(())
    }

    fn raw(&mut self, bytes: &[u8]) -> io::Result<()> {
        if self.buf.len() + bytes.len() > Self::BUFFER {
            self.flush_buf()?;
            if bytes.len() > Self::BUFFER {
                // A large value goes straight through instead of being copied into the buffer.
                self.crc.update(bytes);
                return self.inner.write_all(bytes);
            }
        }
        self.buf.extend_from_slice(bytes);
        Ok(())
    }

    fn varint(&mut self, v: u64) -> io::Result<()> {
        let (bytes, n) = varint_bytes(v);
        self.raw(&bytes[..n])
    }

    fn bytes(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.varint(bytes.len() as u64)?;
        self.raw(bytes)
    }

    /// Writes the trailer (the CRC of everything so far) and flushes.
    fn finish(mut self) -> io::Result<W> {
        self.flush_buf()?;
        let crc = self.crc.finalize();
        self.inner.write_all(&crc.to_le_bytes())?;
        self.inner.flush()?;
        Ok(self.inner)
    }
}

fn write_response<W: Write>(w: &mut ChecksumWriter<W>, response: &WriteResponse) -> io::Result<()> {
    match response {
        WriteResponse::Put { version } => {
            w.raw(&[RESPONSE_PUT])?;
            w.varint(*version)
        }
        WriteResponse::Delete {
            deleted,
            prev_version,
        } => {
            w.raw(&[RESPONSE_DELETE, u8::from(*deleted)])?;
            w.varint(*prev_version)
        }
        WriteResponse::CompareAndSwap {
            succeeded,
            version,
            current_value,
        } => {
            w.raw(&[RESPONSE_CAS, u8::from(*succeeded)])?;
            w.varint(*version)?;
            w.bytes(current_value)
        }
    }
}

fn read_response(r: &mut Reader<'_>) -> Result<WriteResponse, DecodeError> {
    let offset = r.offset();
    match r.u8("response kind")? {
        RESPONSE_PUT => Ok(WriteResponse::Put {
            version: r.varint("put version")?,
        }),
        RESPONSE_DELETE => Ok(WriteResponse::Delete {
            deleted: r.bool("deleted")?,
            prev_version: r.varint("prev_version")?,
        }),
        RESPONSE_CAS => Ok(WriteResponse::CompareAndSwap {
            succeeded: r.bool("succeeded")?,
            version: r.varint("cas version")?,
            current_value: Bytes::copy_from_slice(r.bytes("current_value")?),
        }),
        value => Err(DecodeError::BadTag {
            what: "response kind",
            value,
            offset,
        }),
    }
}

fn inconsistent(what: impl Into<String>) -> SnapshotError {
    SnapshotError::Inconsistent(what.into())
}

impl KvStateMachine {
    /// Writes a snapshot of the whole state (see the format above) to `w`, buffered, ending with
    /// its checksum. The caller makes it durable (fsync) as its storage requires.
    pub fn write_snapshot<W: Write>(&self, w: W) -> io::Result<()> {
        write_state(
            w,
            self.applied,
            &self.sessions,
            self.data.len(),
            self.data.iter(),
        )
    }

    /// The snapshot as one byte string.
    pub fn snapshot(&self) -> Vec<u8> {
        in_memory(|out| self.write_snapshot(out))
    }

    /// Rebuilds a state machine from [`snapshot`](Self::snapshot) bytes, with the snapshot's
    /// session limits. Keys and values are copied out of `bytes`, so the (large) snapshot buffer
    /// can be dropped afterwards.
    pub fn restore(bytes: &[u8]) -> Result<Self, SnapshotError> {
        if bytes.len() < HEADER_LEN + TRAILER_LEN {
            return Err(SnapshotError::TooShort { len: bytes.len() });
        }
        if bytes[..SNAPSHOT_MAGIC.len()] != SNAPSHOT_MAGIC {
            return Err(SnapshotError::BadMagic);
        }
        // The version comes before the checksum: a newer format may checksum differently, and
        // "unsupported version" is the more useful error then.
        let version = bytes[SNAPSHOT_MAGIC.len()];
        if version != SNAPSHOT_FORMAT_VERSION {
            return Err(DecodeError::UnsupportedVersion {
                found: version,
                supported: SNAPSHOT_FORMAT_VERSION,
            }
            .into());
        }
        let (contents, trailer) = bytes.split_at(bytes.len() - TRAILER_LEN);
        let mut stored = [0u8; TRAILER_LEN];
        stored.copy_from_slice(trailer);
        let stored = u32::from_le_bytes(stored);
        let computed = crc32fast::hash(contents);
        if stored != computed {
            return Err(SnapshotError::ChecksumMismatch { stored, computed });
        }

        let mut r = Reader::new(contents);
        r.take(HEADER_LEN, "header")?;
        let applied: Index = r.varint("applied index")?;
        let config = SessionConfig {
            window: r.varint("window")?,
            max_sessions: r.varint("max sessions")?,
            max_tombstones: r.varint("max tombstones")?,
        };
        if config != config.normalized() {
            return Err(inconsistent(
                "session window and max sessions must be at least 1",
            ));
        }

        let data = read_data(&mut r, applied)?;
        let mut sessions = SessionTable::new(config);
        read_sessions(&mut r, applied, &mut sessions)?;
        read_tombstones(&mut r, applied, &mut sessions)?;
        r.finish()?;
        sessions.recount_bytes();
        Ok(Self {
            data: data.into(),
            sessions,
            applied,
            // Not replicated state: the driver plants it again after a restore.
            #[cfg(feature = "planted-bugs")]
            no_dedup: false,
        })
    }
}

impl FrozenKv {
    /// Writes the snapshot of the frozen state: the same bytes
    /// [`KvStateMachine::write_snapshot`] wrote at the time of the freeze.
    pub fn write_snapshot<W: Write>(&self, w: W) -> io::Result<()> {
        write_state(
            w,
            self.applied,
            &self.sessions,
            self.data.len(),
            self.data.iter(),
        )
    }

    /// The snapshot as one byte string.
    pub fn snapshot(&self) -> Vec<u8> {
        in_memory(|out| self.write_snapshot(out))
    }
}

/// Writes a snapshot of `applied`, `sessions` and the `key_count` keys of `keys` (ascending) to
/// `w`: the one encoder behind [`KvStateMachine::write_snapshot`] and the frozen view's.
pub(super) fn write_state<'a, W: Write>(
    w: W,
    applied: Index,
    sessions: &SessionTable,
    key_count: usize,
    keys: impl Iterator<Item = (&'a Bytes, &'a Stored)>,
) -> io::Result<()> {
    let mut w = ChecksumWriter::new(w);
    w.raw(&SNAPSHOT_MAGIC)?;
    w.raw(&[SNAPSHOT_FORMAT_VERSION])?;
    w.varint(applied)?;
    let config = sessions.config;
    w.varint(config.window)?;
    w.varint(config.max_sessions)?;
    w.varint(config.max_tombstones)?;

    w.varint(key_count as u64)?;
    for (key, stored) in keys {
        w.bytes(key)?;
        w.varint(stored.version)?;
        w.bytes(&stored.value)?;
    }

    w.varint(sessions.sessions.len() as u64)?;
    for (client_id, session) in &sessions.sessions {
        w.bytes(client_id.as_bytes())?;
        w.varint(session.last_used)?;
        w.varint(session.results.len() as u64)?;
        for (seq, recorded) in &session.results {
            w.varint(*seq)?;
            w.raw(&recorded.fingerprint.to_le_bytes())?;
            write_response(&mut w, &recorded.response)?;
        }
    }

    w.varint(sessions.tombstones.len() as u64)?;
    for (client_id, evicted_at) in &sessions.tombstones {
        w.bytes(client_id.as_bytes())?;
        w.varint(*evicted_at)?;
    }
    w.finish().map(drop)
}

fn read_data(r: &mut Reader<'_>, applied: Index) -> Result<BTreeMap<Bytes, Stored>, SnapshotError> {
    let count = r.len("key count")?;
    let mut data = BTreeMap::new();
    let mut previous: Option<&[u8]> = None;
    for _ in 0..count {
        let key = r.bytes("key")?;
        let version = r.varint("version")?;
        let value = r.bytes("value")?;
        if previous.is_some_and(|p| p >= key) {
            return Err(inconsistent("keys are not in strictly ascending order"));
        }
        if version == 0 || version > applied {
            return Err(inconsistent(format!(
                "key version {version} is not in 1..={applied} (the applied index)"
            )));
        }
        previous = Some(key);
        data.insert(
            Bytes::copy_from_slice(key),
            Stored {
                value: Bytes::copy_from_slice(value),
                version,
            },
        );
    }
    Ok(data)
}

fn read_sessions(
    r: &mut Reader<'_>,
    applied: Index,
    table: &mut SessionTable,
) -> Result<(), SnapshotError> {
    let config = table.config;
    let count = r.len("session count")?;
    if count as u64 > config.max_sessions {
        return Err(inconsistent(format!(
            "{count} sessions exceed the limit of {}",
            config.max_sessions
        )));
    }
    let mut previous: Option<&str> = None;
    for _ in 0..count {
        let client_id = r.string("client_id")?;
        check_client_id(client_id, previous)?;
        previous = Some(client_id);
        let last_used = r.varint("last_used")?;
        if last_used == 0 || last_used > applied {
            return Err(inconsistent(format!(
                "session last used at {last_used}, not in 1..={applied}"
            )));
        }
        if table.lru.insert(last_used, client_id.to_owned()).is_some() {
            return Err(inconsistent(format!(
                "two sessions last used at the same index {last_used}"
            )));
        }
        let result_count = r.len("result count")?;
        if result_count == 0 {
            return Err(inconsistent("a session without results"));
        }
        let mut results = BTreeMap::new();
        let mut previous_seq = 0;
        for _ in 0..result_count {
            let seq = r.varint("seq")?;
            if seq <= previous_seq {
                return Err(inconsistent(
                    "session seqs are not strictly ascending from 1",
                ));
            }
            previous_seq = seq;
            let fingerprint = r.u64_le("fingerprint")?;
            let response = read_response(r)?;
            results.insert(
                seq,
                Recorded {
                    fingerprint,
                    response,
                },
            );
        }
        let session = Session { last_used, results };
        let highest = session.highest_seq();
        if session
            .results
            .first_key_value()
            .is_some_and(|(oldest, _)| *oldest <= highest.saturating_sub(config.window))
        {
            return Err(inconsistent("a session keeps a seq outside its window"));
        }
        table.sessions.insert(client_id.to_owned(), session);
    }
    Ok(())
}

fn read_tombstones(
    r: &mut Reader<'_>,
    applied: Index,
    table: &mut SessionTable,
) -> Result<(), SnapshotError> {
    let count = r.len("tombstone count")?;
    if count as u64 > table.config.max_tombstones {
        return Err(inconsistent(format!(
            "{count} tombstones exceed the limit of {}",
            table.config.max_tombstones
        )));
    }
    let mut previous: Option<&str> = None;
    for _ in 0..count {
        let client_id = r.string("tombstone client_id")?;
        check_client_id(client_id, previous)?;
        previous = Some(client_id);
        let evicted_at = r.varint("evicted_at")?;
        if evicted_at == 0 || evicted_at > applied {
            return Err(inconsistent(format!(
                "session evicted at {evicted_at}, not in 1..={applied}"
            )));
        }
        if table.sessions.contains_key(client_id) {
            return Err(inconsistent("an evicted session is also live"));
        }
        table
            .tombstone_order
            .insert((evicted_at, client_id.to_owned()));
        table.tombstones.insert(client_id.to_owned(), evicted_at);
    }
    Ok(())
}

/// A stored client id is non-empty, within the length limit, and after the previous one.
fn check_client_id(client_id: &str, previous: Option<&str>) -> Result<(), SnapshotError> {
    if client_id.is_empty() || client_id.len() > MAX_CLIENT_ID_LEN {
        return Err(inconsistent(format!(
            "client_id of {} bytes is not in 1..={MAX_CLIENT_ID_LEN}",
            client_id.len()
        )));
    }
    if previous.is_some_and(|p| p >= client_id) {
        return Err(inconsistent(
            "client ids are not in strictly ascending order",
        ));
    }
    Ok(())
}

/// Runs a snapshot writer into memory. Writing into a `Vec` cannot fail; the only io errors come
/// from a real writer.
pub(super) fn in_memory(write: impl FnOnce(&mut Vec<u8>) -> io::Result<()>) -> Vec<u8> {
    let mut out = Vec::new();
    if let Err(e) = write(&mut out) {
        unreachable!("writing a snapshot into memory failed: {e}");
    }
    out
}
