//! The node's one lock helper.
//!
//! Every `std::sync::Mutex` in the node guards a value whose critical sections are single
//! assignments, inserts, removes or clones, so a panic while one is held cannot leave the value
//! half-updated: a poisoned lock is used as it is rather than spreading the panic.

use std::sync::{Mutex, MutexGuard, PoisonError};

/// Locks `mutex`, ignoring poisoning (see the module docs).
pub(crate) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}
