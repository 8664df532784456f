//! Spawning the node's tasks: inside the caller's tracing span, and joined together.
//!
//! Kept out of `lib.rs` so that no module has to import from the crate root above it.

use tokio::task::JoinHandle;

/// Spawns a task that stays inside the caller's tracing span (`node{id=..}`), so that every log
/// line a node's tasks write names the node, even with several nodes in one process (tests).
pub(crate) fn spawn<F>(future: F) -> JoinHandle<F::Output>
where
    F: std::future::Future + Send + 'static,
    F::Output: Send + 'static,
{
    use tracing::Instrument as _;
    tokio::spawn(future.in_current_span())
}

/// Runs a set of futures concurrently and collects the outputs of those that finished (a task
/// that panicked is left out): a tiny `join_all`, to avoid a dependency.
pub(crate) async fn join_all<F, T>(futs: impl Iterator<Item = F>) -> Vec<T>
where
    F: std::future::Future<Output = T> + Send + 'static,
    T: Send + 'static,
{
    let handles: Vec<JoinHandle<T>> = futs.map(spawn).collect();
    let mut out = Vec::with_capacity(handles.len());
    for h in handles {
        if let Ok(v) = h.await {
            out.push(v);
        }
    }
    out
}
