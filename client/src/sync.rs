//! Poison-tolerant locking for the client's shared state (routing and session).

use std::sync::{Mutex, MutexGuard, PoisonError};

/// Locks `mutex`, also after a panic in another task. A std Mutex, not a tokio one: every
/// critical section is a few field updates, never held across an await.
pub(crate) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding one of these locks leaves consistent data (single field updates).
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}
