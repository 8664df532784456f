//! The storage thread: group commit (many queued requests, one fsync), ordering of answers,
//! failures, and shutdown.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, mpsc};
use std::time::Duration;

use bytes::Bytes;
use raftkv_node::storage::{
    DiskOptions, DiskStorage, LogStorage, MemStorage, Result, SnapshotStore, StagedSnapshot,
    StorageError, StorageThread, WriteBatch,
};
use raftkv_raft::{ConfState, Entry, EntryPayload, HardState, Index, SnapshotMeta, Term};

type TestResult = std::result::Result<(), Box<dyn std::error::Error>>;

const WAIT: Duration = Duration::from_secs(30);

fn ent(index: Index, term: Term) -> Entry {
    Entry {
        term,
        index,
        payload: EntryPayload::Normal(Bytes::from(format!("v{index}"))),
    }
}

fn entries(index: Index) -> WriteBatch {
    WriteBatch {
        entries: vec![ent(index, 1)],
        ..WriteBatch::default()
    }
}

/// A `MemStorage` whose first `sync` waits for the test to open a gate, and whose syncs can be
/// made to fail: lets a test queue requests behind a sync in progress, deterministically.
struct Gated {
    inner: MemStorage,
    entered: mpsc::Sender<()>,
    gate: Option<mpsc::Receiver<()>>,
    syncs: Arc<AtomicUsize>,
    fail_syncs: bool,
}

impl LogStorage for Gated {
    fn append(&mut self, e: &[Entry]) -> Result<()> {
        self.inner.append(e)
    }
    fn set_hard_state(&mut self, hs: HardState) -> Result<()> {
        self.inner.set_hard_state(hs)
    }
    fn install_snapshot(&mut self, s: StagedSnapshot) -> Result<()> {
        self.inner.install_snapshot(s)
    }
    fn compact(&mut self, upto: Index) -> Result<()> {
        self.inner.compact(upto)
    }
    fn sync(&mut self) -> Result<()> {
        if let Some(gate) = self.gate.take() {
            let _ = self.entered.send(());
            let _ = gate.recv_timeout(WAIT);
        }
        self.syncs.fetch_add(1, Ordering::SeqCst);
        if self.fail_syncs {
            return Err(StorageError::Io {
                op: "fsync",
                path: "gated".into(),
                source: Arc::new(std::io::Error::other("injected")),
            });
        }
        self.inner.sync()
    }
    fn hard_state(&self) -> HardState {
        self.inner.hard_state()
    }
    fn snapshot_meta(&self) -> Option<SnapshotMeta> {
        self.inner.snapshot_meta()
    }
    fn first_index(&self) -> Index {
        self.inner.first_index()
    }
    fn last_index(&self) -> Index {
        self.inner.last_index()
    }
    fn term(&self, index: Index) -> Result<Term> {
        self.inner.term(index)
    }
    fn entries(&self, lo: Index, hi: Index) -> Result<Vec<Entry>> {
        self.inner.entries(lo, hi)
    }
    fn snapshot_store(&self) -> SnapshotStore {
        self.inner.snapshot_store()
    }
}

struct GateControl {
    entered: mpsc::Receiver<()>,
    open: mpsc::Sender<()>,
    syncs: Arc<AtomicUsize>,
}

fn gated(fail_syncs: bool) -> (Gated, GateControl) {
    let (entered_tx, entered) = mpsc::channel();
    let (open, gate) = mpsc::channel();
    let syncs = Arc::new(AtomicUsize::new(0));
    (
        Gated {
            inner: MemStorage::new(),
            entered: entered_tx,
            gate: Some(gate),
            syncs: syncs.clone(),
            fail_syncs,
        },
        GateControl {
            entered,
            open,
            syncs,
        },
    )
}

#[test]
fn requests_queued_during_a_sync_share_the_next_one() -> TestResult {
    let (storage, ctl) = gated(false);
    let thread = StorageThread::spawn(storage)?;
    let handle = thread.handle();
    let (tx, rx) = mpsc::channel();
    let first = tx.clone();
    handle.submit(entries(1), move |r| {
        let _ = first.send((1, r));
    });
    // The thread is now inside the first sync; queue fifty more requests behind it.
    ctl.entered.recv_timeout(WAIT)?;
    for i in 2..=51 {
        let tx = tx.clone();
        handle.submit(entries(i), move |r| {
            let _ = tx.send((i, r));
        });
    }
    ctl.open.send(())?;
    for want in 1..=51 {
        let (i, r) = rx.recv_timeout(WAIT)?;
        assert_eq!(i, want, "answers come in request order");
        r?;
    }
    // One sync for the first request, one for the fifty behind it.
    assert_eq!(ctl.syncs.load(Ordering::SeqCst), 2);
    let storage = thread.shutdown()?;
    assert_eq!(storage.last_index(), 51);
    assert_eq!(storage.inner.sync_count(), 2);
    Ok(())
}

#[test]
fn a_failed_sync_fails_every_write_of_its_batch() -> TestResult {
    let (storage, ctl) = gated(true);
    let thread = StorageThread::spawn(storage)?;
    let handle = thread.handle();
    let (tx, rx) = mpsc::channel();
    for i in 1..=3 {
        let tx = tx.clone();
        handle.submit(entries(i), move |r| {
            let _ = tx.send(r);
        });
        if i == 1 {
            ctl.entered.recv_timeout(WAIT)?;
        }
    }
    ctl.open.send(())?;
    for _ in 1..=3 {
        let r = rx.recv_timeout(WAIT)?;
        assert!(
            matches!(r, Err(StorageError::Io { op: "fsync", .. })),
            "{r:?}"
        );
    }
    Ok(())
}

#[test]
fn a_refused_request_fails_alone() -> TestResult {
    let thread = StorageThread::spawn(MemStorage::new())?;
    let handle = thread.handle();
    handle.persist(WriteBatch {
        entries: vec![ent(1, 1), ent(2, 1)],
        ..WriteBatch::default()
    })?;
    assert!(matches!(
        handle.persist(entries(4)),
        Err(StorageError::AppendOutOfRange { index: 4, .. })
    ));
    handle.persist(entries(3))?;
    let storage = thread.shutdown()?;
    assert_eq!(storage.last_index(), 3);
    Ok(())
}

#[test]
fn a_disk_log_written_through_the_thread_survives_reopen() -> TestResult {
    let dir = tempfile::tempdir()?;
    let opts = DiskOptions {
        segment_size: 2048,
        keep_snapshots: 2,
    };
    let (storage, _) = DiskStorage::open(dir.path(), opts.clone())?;
    let store = storage.snapshot_store();
    let thread = StorageThread::spawn(storage)?;
    let handle = thread.handle();
    let (tx, rx) = mpsc::channel();
    for i in 1..=200 {
        let tx = tx.clone();
        handle.submit(
            WriteBatch {
                entries: vec![ent(i, 1)],
                hard_state: Some(HardState {
                    term: 1,
                    vote: 1,
                    commit: i - 1,
                }),
                snapshot: None,
            },
            move |r| {
                let _ = tx.send(r);
            },
        );
    }
    for _ in 1..=200 {
        rx.recv_timeout(WAIT)??;
    }
    // A snapshot staged by "the transport" through the shared store, then installed and compacted.
    let meta = SnapshotMeta {
        index: 150,
        term: 1,
        conf: ConfState::with_voters([1]),
    };
    let mut w = store.writer(meta.clone())?;
    std::io::Write::write_all(&mut w, b"state at 150")?;
    handle.persist(WriteBatch {
        snapshot: Some(w.finish()?),
        ..WriteBatch::default()
    })?;
    let (ctx, crx) = mpsc::channel();
    handle.compact(150, move |r| {
        let _ = ctx.send(r);
    });
    crx.recv_timeout(WAIT)??;
    let storage = thread.shutdown()?;
    let state = storage.initial_state()?;
    assert!(
        storage.stats().syncs < 200,
        "no request was grouped: {:?}",
        storage.stats()
    );
    drop(storage);

    let (_, rec) = DiskStorage::open(dir.path(), opts)?;
    assert_eq!(rec, state);
    assert_eq!(rec.snapshot, Some(meta));
    assert_eq!(rec.entries.len(), 50);
    assert_eq!(rec.hard_state.commit, 199);
    Ok(())
}

/// A batch that only moves the commit index is answered without an fsync (the commit index is
/// an optimisation, never needed for safety), while one that records a new term or vote, or
/// appends, is synced before it is answered.
#[test]
fn only_a_commit_index_change_is_not_synced() -> TestResult {
    let (storage, ctl) = gated(false);
    let thread = StorageThread::spawn(storage)?;
    let handle = thread.handle();
    let hard = |term, vote, commit| WriteBatch {
        hard_state: Some(HardState { term, vote, commit }),
        ..WriteBatch::default()
    };
    // A new term and vote: synced (the first sync waits at the gate).
    let (tx, rx) = mpsc::channel();
    handle.submit(hard(1, 1, 0), move |r| {
        let _ = tx.send(r);
    });
    ctl.entered.recv_timeout(WAIT)?;
    ctl.open.send(())?;
    rx.recv_timeout(WAIT)??;
    assert_eq!(ctl.syncs.load(Ordering::SeqCst), 1);
    // Entries, then the commit index alone: one more sync, for the entries only.
    handle.persist(entries(1))?;
    handle.persist(hard(1, 1, 1))?;
    assert_eq!(ctl.syncs.load(Ordering::SeqCst), 2);
    // A new vote in a new term is synced again.
    handle.persist(hard(2, 3, 1))?;
    assert_eq!(ctl.syncs.load(Ordering::SeqCst), 3);
    let storage = thread.shutdown()?;
    assert_eq!(
        storage.hard_state(),
        HardState {
            term: 2,
            vote: 3,
            commit: 1
        }
    );
    Ok(())
}

#[test]
fn requests_after_shutdown_are_answered_stopped() -> TestResult {
    let thread = StorageThread::spawn(MemStorage::new())?;
    let handle = thread.handle();
    thread.shutdown()?;
    assert!(matches!(
        handle.persist(entries(1)),
        Err(StorageError::Stopped)
    ));
    let (tx, rx) = mpsc::channel();
    handle.compact(0, move |r| {
        let _ = tx.send(r);
    });
    assert!(matches!(rx.recv_timeout(WAIT)?, Err(StorageError::Stopped)));
    Ok(())
}

#[test]
fn staged_snapshots_from_bytes_go_through_the_thread() -> TestResult {
    let thread = StorageThread::spawn(MemStorage::new())?;
    let handle = thread.handle();
    let meta = SnapshotMeta {
        index: 7,
        term: 2,
        conf: ConfState::with_voters([1, 2, 3]),
    };
    handle.persist(WriteBatch {
        snapshot: Some(StagedSnapshot::from_bytes(
            meta.clone(),
            Bytes::from_static(b"s"),
        )),
        entries: vec![ent(8, 2)],
        hard_state: Some(HardState {
            term: 2,
            vote: 0,
            commit: 7,
        }),
    })?;
    let mut storage = thread.shutdown()?;
    storage.crash();
    assert_eq!(storage.snapshot_meta(), Some(meta));
    assert_eq!(storage.last_index(), 8);
    Ok(())
}
