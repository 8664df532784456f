//! Polling: the one loop every "eventually" in a process or container test goes through.
//!
//! Cluster tests on a loaded 2-core machine wait for a condition with a generous timeout, never
//! for a fixed time: [`wait_for`] probes every [`POLL_INTERVAL`] and names what it waited for
//! when it gives up.

use std::time::{Duration, Instant};

/// How often [`wait_for`] probes.
pub const POLL_INTERVAL: Duration = Duration::from_millis(50);

/// Probes every 50 ms until `probe` returns `Some`, and returns it; panics with `what` and the
/// time waited if `timeout` passes first.
pub async fn wait_for<T>(
    what: &str,
    timeout: Duration,
    mut probe: impl AsyncFnMut() -> Option<T>,
) -> T {
    match try_wait_for(timeout, &mut probe).await {
        Some(value) => value,
        None => panic!("timed out after {timeout:?} waiting for {what}"),
    }
}

/// Like [`wait_for`], but `None` on timeout.
pub async fn try_wait_for<T>(
    timeout: Duration,
    mut probe: impl AsyncFnMut() -> Option<T>,
) -> Option<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = probe().await {
            return Some(value);
        }
        if Instant::now() >= deadline {
            return None;
        }
        tokio::time::sleep(POLL_INTERVAL).await;
    }
}
