//! The `LogStorage` conformance suite: every test is written once, generically, and instantiated
//! for each implementation (`MemStorage` and `DiskStorage`) by the `conformance!` macro at the
//! bottom — the same idea as TiKV's engine_traits_tests. "Reload" means a restart from what is
//! durable: `MemStorage::crash` for memory, dropping and reopening the directory for disk.

use std::io::{Read, Write};

use bytes::Bytes;
use raftkv_node::storage::{
    DiskOptions, DiskStorage, LogStorage, MemStorage, RecoveredState, StagedSnapshot, StorageError,
};
use raftkv_raft::{
    ConfChange, ConfChangeType, ConfState, Entry, EntryPayload, HardState, Index, SnapshotMeta,
    Term,
};

type TestResult = Result<(), Box<dyn std::error::Error>>;

/// One implementation under test, and how to restart it.
trait Harness: Sized {
    type S: LogStorage;
    fn new() -> Result<Self, StorageError>;
    fn storage(&mut self) -> &mut Self::S;
    /// Restarts from durable state and returns what the restart recovered.
    fn reload(&mut self) -> Result<RecoveredState, StorageError>;
}

struct Mem(MemStorage);

impl Harness for Mem {
    type S = MemStorage;
    fn new() -> Result<Self, StorageError> {
        Ok(Mem(MemStorage::new()))
    }
    fn storage(&mut self) -> &mut MemStorage {
        &mut self.0
    }
    fn reload(&mut self) -> Result<RecoveredState, StorageError> {
        self.0.crash();
        self.0.initial_state()
    }
}

struct Disk {
    dir: tempfile::TempDir,
    storage: Option<DiskStorage>,
}

/// Small segments, so that the tests cross segment boundaries.
fn disk_options() -> DiskOptions {
    DiskOptions {
        segment_size: 4096,
        keep_snapshots: 2,
    }
}

impl Harness for Disk {
    type S = DiskStorage;
    fn new() -> Result<Self, StorageError> {
        let dir = tempfile::tempdir().map_err(|e| StorageError::Io {
            op: "tempdir",
            path: Default::default(),
            source: e.into(),
        })?;
        let (storage, recovered) = DiskStorage::open(dir.path(), disk_options())?;
        assert_eq!(recovered, RecoveredState::default());
        Ok(Disk {
            dir,
            storage: Some(storage),
        })
    }
    fn storage(&mut self) -> &mut DiskStorage {
        self.storage.as_mut().unwrap_or_else(|| unreachable!())
    }
    fn reload(&mut self) -> Result<RecoveredState, StorageError> {
        // Dropping without a sync is what a crash looks like to the files (the page cache
        // survives a process crash, so this checks replay, not the fsync itself).
        self.storage = None;
        let (storage, recovered) = DiskStorage::open(self.dir.path(), disk_options())?;
        // What replay handed back must agree with what the reopened storage reads from disk.
        assert_eq!(storage.initial_state()?, recovered);
        self.storage = Some(storage);
        Ok(recovered)
    }
}

fn ent(index: Index, term: Term) -> Entry {
    Entry {
        term,
        index,
        payload: EntryPayload::Normal(Bytes::from(format!("value {index} @{term}"))),
    }
}

fn ents(indexes: std::ops::RangeInclusive<Index>, term: Term) -> Vec<Entry> {
    indexes.map(|i| ent(i, term)).collect()
}

fn big(indexes: std::ops::RangeInclusive<Index>, term: Term) -> Vec<Entry> {
    indexes
        .map(|index| Entry {
            term,
            index,
            payload: EntryPayload::Normal(Bytes::from(vec![index as u8; 100])),
        })
        .collect()
}

fn meta(index: Index, term: Term) -> SnapshotMeta {
    SnapshotMeta {
        index,
        term,
        conf: ConfState {
            voters: [1, 2, 3].into(),
            learners: [4].into(),
        },
    }
}

fn stage(
    s: &impl LogStorage,
    m: SnapshotMeta,
    data: &[u8],
) -> Result<StagedSnapshot, Box<dyn std::error::Error>> {
    let mut w = s.snapshot_store().writer(m)?;
    // Several writes, as the transport would deliver chunks.
    for chunk in data.chunks(7) {
        w.write_all(chunk)?;
    }
    Ok(w.finish()?)
}

fn read_snapshot(
    s: &impl LogStorage,
    m: &SnapshotMeta,
) -> Result<Vec<u8>, Box<dyn std::error::Error>> {
    let mut r = s.snapshot_store().open(m)?;
    assert_eq!(r.meta(), m);
    let mut out = Vec::new();
    r.read_to_end(&mut out)?;
    assert_eq!(out.len() as u64, r.len());
    Ok(out)
}

/// Syncs, reloads and checks that the restart sees exactly the state before it.
fn sync_and_reload<H: Harness>(h: &mut H) -> TestResult {
    h.storage().sync()?;
    let before = h.storage().initial_state()?;
    let after = h.reload()?;
    assert_eq!(after, before);
    assert_eq!(h.storage().initial_state()?, before);
    Ok(())
}

fn empty_storage_starts_at_index_one<H: Harness>() -> TestResult {
    let mut h = H::new()?;
    let s = h.storage();
    assert_eq!((s.first_index(), s.last_index()), (1, 0));
    assert_eq!(s.term(0)?, 0);
    assert_eq!(s.hard_state(), HardState::default());
    assert_eq!(s.snapshot_meta(), None);
    assert!(matches!(s.term(1), Err(StorageError::Unavailable(1))));
    assert_eq!(s.entries(1, 1)?, vec![]);
    s.sync()?;
    assert_eq!(h.reload()?, RecoveredState::default());
    Ok(())
}

fn append_then_read_back<H: Harness>() -> TestResult {
    let mut h = H::new()?;
    let mut log = vec![
        Entry {
            term: 1,
            index: 1,
            payload: EntryPayload::Config {
                change: None,
                conf: ConfState::with_voters([1, 2, 3]),
            },
        },
        Entry {
            term: 1,
            index: 2,
            payload: EntryPayload::Noop,
        },
        Entry {
            term: 1,
            index: 3,
            payload: EntryPayload::Config {
                change: Some(ConfChange {
                    change_type: ConfChangeType::AddLearner,
                    node_id: 4,
                    context: Bytes::from_static(b"10.0.0.4:7000"),
                }),
                conf: ConfState {
                    voters: [1, 2, 3].into(),
                    learners: [4].into(),
                },
            },
        },
    ];
    log.extend(ents(4..=10, 1));
    let s = h.storage();
    s.append(&log[..3])?;
    s.append(&log[3..])?;
    // Reads see writes before any sync.
    assert_eq!(s.entries(1, 11)?, log);
    assert_eq!(s.entries(4, 6)?, log[3..5].to_vec());
    assert_eq!((s.first_index(), s.last_index(), s.term(7)?), (1, 10, 1));
    assert!(matches!(s.entries(0, 3), Err(StorageError::Compacted(0))));
    assert!(matches!(
        s.entries(5, 12),
        Err(StorageError::Unavailable(11))
    ));
    s.append(&[])?;
    sync_and_reload(&mut h)?;
    assert_eq!(h.storage().entries(1, 11)?, log);
    Ok(())
}

fn append_overwrites_a_conflicting_suffix<H: Harness>() -> TestResult {
    let mut h = H::new()?;
    let s = h.storage();
    s.append(&ents(1..=10, 1))?;
    s.sync()?;
    s.append(&ents(6..=7, 2))?;
    assert_eq!(s.last_index(), 7);
    let mut want = ents(1..=5, 1);
    want.extend(ents(6..=7, 2));
    assert_eq!(s.entries(1, 8)?, want);
    sync_and_reload(&mut h)?;
    assert_eq!(h.storage().entries(1, 8)?, want);
    assert_eq!(h.storage().last_index(), 7);
    // Appending right after the new end, then truncating again down to the first entry.
    let s = h.storage();
    s.append(&ents(8..=9, 2))?;
    s.append(&ents(1..=2, 3))?;
    assert_eq!(s.entries(1, 3)?, ents(1..=2, 3));
    assert_eq!(s.last_index(), 2);
    sync_and_reload(&mut h)?;
    Ok(())
}

fn append_refuses_gaps_and_non_consecutive_entries<H: Harness>() -> TestResult {
    let mut h = H::new()?;
    let s = h.storage();
    s.append(&ents(1..=3, 1))?;
    let before = s.initial_state()?;
    assert!(matches!(
        s.append(&ents(5..=6, 1)),
        Err(StorageError::AppendOutOfRange {
            index: 5,
            first: 1,
            next: 4
        })
    ));
    assert!(matches!(
        s.append(&[ent(4, 1), ent(6, 1)]),
        Err(StorageError::NonConsecutive {
            expected: 5,
            got: 6
        })
    ));
    assert!(matches!(
        s.append(&[ent(0, 1)]),
        Err(StorageError::AppendOutOfRange { index: 0, .. })
    ));
    assert_eq!(s.initial_state()?, before);
    // A refusal is not a failure: the storage keeps working.
    s.append(&ents(4..=4, 1))?;
    sync_and_reload(&mut h)?;
    assert_eq!(h.storage().last_index(), 4);
    Ok(())
}

fn hard_state_survives_reload<H: Harness>() -> TestResult {
    let mut h = H::new()?;
    let hs = HardState {
        term: 3,
        vote: 2,
        commit: 0,
    };
    let s = h.storage();
    s.set_hard_state(hs)?;
    assert_eq!(s.hard_state(), hs);
    sync_and_reload(&mut h)?;
    assert_eq!(h.storage().hard_state(), hs);
    // Changes after entries, and an unchanged one, across segment rolls on disk.
    let s = h.storage();
    for i in 1..=100 {
        s.append(&big(i..=i, 3))?;
        s.set_hard_state(HardState { commit: i, ..hs })?;
        s.set_hard_state(HardState { commit: i, ..hs })?;
    }
    sync_and_reload(&mut h)?;
    assert_eq!(h.storage().hard_state().commit, 100);
    Ok(())
}

fn matching_snapshot_keeps_later_entries<H: Harness>() -> TestResult {
    let mut h = H::new()?;
    let s = h.storage();
    s.append(&ents(1..=10, 1))?;
    let m = meta(5, 1);
    let staged = stage(s, m.clone(), b"state machine at 5")?;
    s.install_snapshot(staged)?;
    assert_eq!(s.snapshot_meta(), Some(m.clone()));
    assert_eq!((s.first_index(), s.last_index()), (6, 10));
    assert_eq!(s.term(5)?, 1);
    assert!(matches!(s.term(4), Err(StorageError::Compacted(4))));
    assert!(matches!(s.entries(5, 7), Err(StorageError::Compacted(5))));
    assert_eq!(s.entries(6, 11)?, ents(6..=10, 1));
    assert_eq!(read_snapshot(s, &m)?, b"state machine at 5");
    sync_and_reload(&mut h)?;
    let rec = h.storage().initial_state()?;
    assert_eq!(rec.snapshot, Some(m.clone()));
    assert_eq!(rec.entries, ents(6..=10, 1));
    assert_eq!(read_snapshot(h.storage(), &m)?, b"state machine at 5");
    Ok(())
}

fn conflicting_snapshot_discards_the_log<H: Harness>() -> TestResult {
    let mut h = H::new()?;
    let s = h.storage();
    s.append(&ents(1..=10, 1))?;
    s.sync()?;
    // The leader's entry 7 has term 2: nothing in this log is known to agree with it.
    let m = meta(7, 2);
    let staged = stage(s, m.clone(), b"leader state")?;
    s.install_snapshot(staged)?;
    assert_eq!((s.first_index(), s.last_index()), (8, 7));
    assert_eq!(s.term(7)?, 2);
    assert_eq!(s.entries(8, 8)?, vec![]);
    // The log continues after the snapshot.
    s.append(&ents(8..=9, 2))?;
    sync_and_reload(&mut h)?;
    let rec = h.storage().initial_state()?;
    assert_eq!((rec.snapshot, rec.entries), (Some(m), ents(8..=9, 2)));
    Ok(())
}

fn snapshot_beyond_the_log_discards_it<H: Harness>() -> TestResult {
    let mut h = H::new()?;
    let s = h.storage();
    s.append(&ents(1..=3, 1))?;
    let m = meta(50, 4);
    let staged = stage(s, m.clone(), b"")?;
    s.install_snapshot(staged)?;
    assert_eq!((s.first_index(), s.last_index()), (51, 50));
    assert_eq!(read_snapshot(s, &m)?, b"");
    sync_and_reload(&mut h)?;
    assert_eq!(h.storage().snapshot_meta(), Some(m));
    Ok(())
}

fn stale_snapshots_and_appends_below_the_snapshot_are_refused<H: Harness>() -> TestResult {
    let mut h = H::new()?;
    let s = h.storage();
    s.append(&ents(1..=10, 1))?;
    let staged = stage(s, meta(8, 1), b"8")?;
    s.install_snapshot(staged)?;
    let old = stage(s, meta(5, 1), b"5")?;
    assert!(matches!(
        s.install_snapshot(old),
        Err(StorageError::StaleSnapshot {
            installed: 8,
            offered: 5
        })
    ));
    // Not even the same index: snapshots only move forward.
    let again = stage(s, meta(8, 2), b"8 again")?;
    assert!(matches!(
        s.install_snapshot(again),
        Err(StorageError::StaleSnapshot {
            installed: 8,
            offered: 8
        })
    ));
    let zero = stage(s, meta(0, 0), b"")?;
    assert!(matches!(
        s.install_snapshot(zero),
        Err(StorageError::StaleSnapshot { offered: 0, .. })
    ));
    assert!(matches!(
        s.append(&ents(8..=9, 2)),
        Err(StorageError::AppendOutOfRange {
            index: 8,
            first: 9,
            ..
        })
    ));
    // Right after the snapshot is fine, and truncates 9..=10.
    s.append(&ents(9..=9, 2))?;
    assert_eq!(s.last_index(), 9);
    sync_and_reload(&mut h)?;
    Ok(())
}

fn compaction_keeps_the_logical_state<H: Harness>() -> TestResult {
    let mut h = H::new()?;
    let s = h.storage();
    s.append(&big(1..=200, 1))?;
    s.set_hard_state(HardState {
        term: 1,
        vote: 1,
        commit: 200,
    })?;
    s.sync()?;
    assert!(matches!(
        s.compact(1),
        Err(StorageError::CompactBeyondSnapshot {
            upto: 1,
            snapshot: 0
        })
    ));
    let staged = stage(s, meta(150, 1), b"at 150")?;
    s.install_snapshot(staged)?;
    let before = s.initial_state()?;
    // Compaction syncs what it depends on by itself.
    s.compact(150)?;
    assert_eq!(s.initial_state()?, before);
    assert!(matches!(
        s.compact(151),
        Err(StorageError::CompactBeyondSnapshot {
            upto: 151,
            snapshot: 150
        })
    ));
    assert_eq!(h.reload()?, before);
    // And the log keeps going after compaction and reload.
    let s = h.storage();
    s.append(&big(201..=260, 1))?;
    s.append(&big(255..=256, 2))?;
    sync_and_reload(&mut h)?;
    assert_eq!(h.storage().last_index(), 256);
    assert_eq!(h.storage().term(256)?, 2);
    Ok(())
}

fn old_snapshots_are_pruned_after_sync<H: Harness>() -> TestResult {
    let mut h = H::new()?;
    let s = h.storage();
    s.append(&ents(1..=30, 1))?;
    for i in [10, 20, 30] {
        let staged = stage(s, meta(i, 1), format!("at {i}").as_bytes())?;
        s.install_snapshot(staged)?;
        s.sync()?;
    }
    let store = s.snapshot_store();
    assert_eq!(store.list()?, vec![(20, 1), (30, 1)]);
    assert!(matches!(
        store.open(&meta(10, 1)),
        Err(StorageError::SnapshotNotFound { index: 10, term: 1 })
    ));
    assert_eq!(read_snapshot(s, &meta(20, 1))?, b"at 20");
    sync_and_reload(&mut h)?;
    assert_eq!(read_snapshot(h.storage(), &meta(30, 1))?, b"at 30");
    Ok(())
}

fn snapshot_from_bytes_installs<H: Harness>() -> TestResult {
    let mut h = H::new()?;
    let s = h.storage();
    s.append(&ents(1..=4, 1))?;
    let m = meta(4, 1);
    s.install_snapshot(StagedSnapshot::from_bytes(
        m.clone(),
        Bytes::from_static(b"bytes"),
    ))?;
    assert_eq!(read_snapshot(s, &m)?, b"bytes");
    sync_and_reload(&mut h)?;
    assert_eq!(read_snapshot(h.storage(), &m)?, b"bytes");
    Ok(())
}

fn abandoned_snapshots_leave_nothing<H: Harness>() -> TestResult {
    let mut h = H::new()?;
    let s = h.storage();
    s.append(&ents(1..=4, 1))?;
    let store = s.snapshot_store();
    let mut w = store.writer(meta(3, 1))?;
    w.write_all(b"half")?;
    assert_eq!((w.len(), w.is_empty()), (4, false));
    drop(w);
    let staged = stage(s, meta(4, 1), b"never installed")?;
    assert_eq!(staged.meta(), &meta(4, 1));
    let mut check = Vec::new();
    staged.open_reader()?.read_to_end(&mut check)?;
    assert_eq!(check, b"never installed");
    drop(staged);
    assert_eq!(store.list()?, vec![]);
    assert!(store.open(&meta(4, 1)).is_err());
    sync_and_reload(&mut h)?;
    assert_eq!(h.storage().snapshot_meta(), None);
    Ok(())
}

fn reload_after_mixed_operations<H: Harness>() -> TestResult {
    let mut h = H::new()?;
    let mut term = 1;
    for round in 0..6u64 {
        let s = h.storage();
        let last = s.last_index();
        // Grow, then overwrite a few of the newest entries in a new term.
        s.append(&big(last + 1..=last + 40, term))?;
        term += 1;
        let from = (last + 35).max(s.first_index());
        s.append(&big(from..=from + 10, term))?;
        s.set_hard_state(HardState {
            term,
            vote: round % 3 + 1,
            commit: from,
        })?;
        if round % 2 == 1 {
            let at = from - 5;
            let t = s.term(at)?;
            let staged = stage(s, meta(at, t), &[round as u8; 300])?;
            s.install_snapshot(staged)?;
            s.compact(at)?;
        }
        sync_and_reload(&mut h)?;
    }
    Ok(())
}

macro_rules! conformance {
    ($($module:ident => $harness:ty),* $(,)?) => {$(
        mod $module {
            use super::*;
            conformance!(@tests $harness;
                empty_storage_starts_at_index_one,
                append_then_read_back,
                append_overwrites_a_conflicting_suffix,
                append_refuses_gaps_and_non_consecutive_entries,
                hard_state_survives_reload,
                matching_snapshot_keeps_later_entries,
                conflicting_snapshot_discards_the_log,
                snapshot_beyond_the_log_discards_it,
                stale_snapshots_and_appends_below_the_snapshot_are_refused,
                compaction_keeps_the_logical_state,
                old_snapshots_are_pruned_after_sync,
                snapshot_from_bytes_installs,
                abandoned_snapshots_leave_nothing,
                reload_after_mixed_operations,
            );
        }
    )*};
    (@tests $harness:ty; $($test:ident),* $(,)?) => {$(
        #[test]
        fn $test() -> TestResult {
            super::$test::<$harness>()
        }
    )*};
}

conformance!(mem => Mem, disk => Disk);

/// Memory only: a crash forgets exactly what was not synced (the disk equivalent needs a power
/// cut; `storage_recovery` covers its torn-write side).
#[test]
fn mem_crash_forgets_unsynced_writes() -> TestResult {
    let mut s = MemStorage::new();
    s.append(&ents(1..=5, 1))?;
    s.set_hard_state(HardState {
        term: 1,
        vote: 1,
        commit: 3,
    })?;
    s.sync()?;
    let durable = s.initial_state()?;
    s.append(&ents(4..=8, 2))?;
    s.set_hard_state(HardState {
        term: 2,
        vote: 0,
        commit: 3,
    })?;
    let staged = stage(&s, meta(6, 2), b"x")?;
    s.install_snapshot(staged)?;
    s.crash();
    assert_eq!(s.initial_state()?, durable);
    assert_eq!(s.sync_count(), 1);
    Ok(())
}
