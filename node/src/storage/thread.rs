//! Group commit on a dedicated OS thread.
//!
//! An fsync takes from tens of microseconds to tens of milliseconds. Run on a tokio worker, it
//! would stall every task on that worker — on two cores, heartbeats too, and followers would start
//! needless elections (DESIGN.md §3). So the storage lives on its own `std::thread`, and the driver
//! talks to it through a [`StorageHandle`].
//!
//! The thread takes every request that is waiting, applies them in order, syncs once, and only then
//! answers each request's callback: under load, many `Ready`s share one fsync (group commit), and
//! with no load a lone request is synced at once. A request that only moves the commit index is
//! written but not synced ([`WriteBatch::must_sync`]). A callback runs on the storage thread and
//! must be quick — typically it completes a oneshot channel the async driver awaits.
//!
//! Every callback is called exactly once: with the result, or with [`StorageError::Stopped`] if the
//! thread stops (or dies) before answering.

use std::sync::mpsc;
use std::thread::JoinHandle;

use raftkv_raft::{Entry, HardState, Index};

use super::contract::LogStorage;
use super::error::{Result, StorageError};
use super::snapshot_stream::StagedSnapshot;

/// The most requests folded into one fsync; bounds how long the first of them waits.
const MAX_BATCH: usize = 1024;

/// Receives the outcome of a request, on the storage thread.
pub type Callback = Box<dyn FnOnce(Result<()>) + Send + 'static>;

/// What one `Ready` asks to persist, applied in this order: snapshot, entries, hard state.
#[derive(Debug, Default)]
pub struct WriteBatch {
    /// A snapshot to install first (the staged data for `Ready::snapshot`).
    pub snapshot: Option<StagedSnapshot>,
    /// Entries to append (`Ready::entries`).
    pub entries: Vec<Entry>,
    /// The hard state to record (`Ready::hard_state`).
    pub hard_state: Option<HardState>,
}

impl WriteBatch {
    /// Whether there is nothing to write.
    pub fn is_empty(&self) -> bool {
        self.snapshot.is_none() && self.entries.is_empty() && self.hard_state.is_none()
    }

    /// Whether the batch must be durable before it is answered (etcd-raft's `MustSync`): it
    /// installs a snapshot, appends entries, or records a new term or vote. A hard state that only
    /// moves the commit index need not be: the commit index is persisted as an optimisation, never
    /// for safety (see [`HardState::commit`]), so it is written now and made durable by the next
    /// fsync. Without this every commit cost a second fsync on every node, and on the leader that
    /// fsync sat between a write's commit and its reply.
    pub fn must_sync(&self, current: &HardState) -> bool {
        self.snapshot.is_some()
            || !self.entries.is_empty()
            || self
                .hard_state
                .is_some_and(|hs| hs.term != current.term || hs.vote != current.vote)
    }
}

/// A callback that is answered `Stopped` if it is dropped unanswered (a stopped thread, a
/// request left in the queue, a panic while a batch was in progress).
struct Reply(Option<Callback>);

impl Reply {
    fn send(mut self, r: Result<()>) {
        if let Some(cb) = self.0.take() {
            cb(r);
        }
    }
}

impl Drop for Reply {
    fn drop(&mut self) {
        if let Some(cb) = self.0.take() {
            cb(Err(StorageError::Stopped));
        }
    }
}

/// What a [`StorageHandle`] asks of the storage thread, in the order it was sent.
enum StorageOp {
    Write(WriteBatch, Reply),
    Compact(Index, Reply),
    Stop,
}

/// Sends requests to a [`StorageThread`]. Cheap to clone; usable from any thread or task.
#[derive(Clone, Debug)]
pub struct StorageHandle {
    tx: mpsc::Sender<StorageOp>,
}

impl StorageHandle {
    /// Queues `batch`; `done` is called on the storage thread once it is durable (or failed).
    /// Never blocks.
    pub fn submit(&self, batch: WriteBatch, done: impl FnOnce(Result<()>) + Send + 'static) {
        // If the thread is gone, the returned command is dropped here and its Reply says Stopped.
        let _ = self
            .tx
            .send(StorageOp::Write(batch, Reply(Some(Box::new(done)))));
    }

    /// Queues a compaction up to `upto` (see [`LogStorage::compact`]), ordered after the writes
    /// queued before it.
    pub fn compact(&self, upto: Index, done: impl FnOnce(Result<()>) + Send + 'static) {
        let _ = self
            .tx
            .send(StorageOp::Compact(upto, Reply(Some(Box::new(done)))));
    }

    /// Submits `batch` and blocks until it is durable. For tests and tools; async code should use
    /// [`Self::submit`] with a oneshot channel. Must not be called from a callback (it would wait
    /// for the thread it runs on).
    pub fn persist(&self, batch: WriteBatch) -> Result<()> {
        let (tx, rx) = mpsc::sync_channel(1);
        self.submit(batch, move |r| {
            let _ = tx.send(r);
        });
        rx.recv().unwrap_or(Err(StorageError::Stopped))
    }
}

/// Owns the storage thread. Dropping it stops the thread after the requests queued before.
#[derive(Debug)]
pub struct StorageThread<S> {
    handle: StorageHandle,
    join: Option<JoinHandle<S>>,
}

impl<S: LogStorage + Send + 'static> StorageThread<S> {
    /// Moves `storage` onto a new thread named `raftkv-storage`.
    pub fn spawn(storage: S) -> Result<Self> {
        let (tx, rx) = mpsc::channel();
        let join = std::thread::Builder::new()
            .name("raftkv-storage".into())
            .spawn(move || run(storage, rx))
            .map_err(StorageError::io(
                "spawn storage thread",
                std::path::Path::new(""),
            ))?;
        Ok(Self {
            handle: StorageHandle { tx },
            join: Some(join),
        })
    }

    /// A handle to send requests with.
    pub fn handle(&self) -> StorageHandle {
        self.handle.clone()
    }

    /// Stops the thread once the requests queued before this call are done, and hands the storage
    /// back. Requests sent afterwards through other handles are answered `Stopped`.
    pub fn shutdown(mut self) -> Result<S> {
        self.stop().ok_or(StorageError::Stopped)
    }

    fn stop(&mut self) -> Option<S> {
        let join = self.join.take()?;
        let _ = self.handle.tx.send(StorageOp::Stop);
        // `Err` only if the thread panicked (a callback did); its requests were answered `Stopped`.
        join.join().ok()
    }
}

impl<S> Drop for StorageThread<S> {
    fn drop(&mut self) {
        if let Some(join) = self.join.take() {
            let _ = self.handle.tx.send(StorageOp::Stop);
            let _ = join.join();
        }
    }
}

/// The thread's loop: take everything waiting, apply in order, one sync, answer.
fn run<S: LogStorage>(mut storage: S, rx: mpsc::Receiver<StorageOp>) -> S {
    let mut stopping = false;
    while !stopping {
        let Ok(first) = rx.recv() else { break };
        let mut commands = vec![first];
        while commands.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(c) => commands.push(c),
                Err(_) => break,
            }
        }
        // (reply, result, whether the result depends on the batch's sync)
        let mut answers: Vec<(Reply, Result<()>, bool)> = Vec::with_capacity(commands.len());
        let mut wrote = false;
        for command in commands {
            match command {
                StorageOp::Stop => stopping = true,
                // Requests queued behind the stop are dropped: their Reply answers `Stopped`.
                _ if stopping => {}
                StorageOp::Write(batch, reply) => {
                    let must_sync = batch.must_sync(&storage.hard_state());
                    let r = apply(&mut storage, batch);
                    wrote |= r.is_ok() && must_sync;
                    answers.push((reply, r, must_sync));
                }
                StorageOp::Compact(upto, reply) => {
                    let r = storage.compact(upto);
                    answers.push((reply, r, false));
                }
            }
        }
        if wrote && let Err(e) = storage.sync() {
            for (_, r, needs_sync) in &mut answers {
                if *needs_sync && r.is_ok() {
                    *r = Err(e.clone());
                }
            }
        }
        for (reply, r, _) in answers {
            reply.send(r);
        }
    }
    storage
}

fn apply<S: LogStorage>(storage: &mut S, batch: WriteBatch) -> Result<()> {
    if let Some(snapshot) = batch.snapshot {
        storage.install_snapshot(snapshot)?;
    }
    storage.append(&batch.entries)?;
    if let Some(hs) = batch.hard_state {
        storage.set_hard_state(hs)?;
    }
    Ok(())
}
