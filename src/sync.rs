//! Locking std mutexes the one way this crate does it.

use std::sync::{Mutex, MutexGuard, PoisonError};

/// Lock `m`, recovering from a poisoned lock: a thread that panicked while holding it leaves
/// data that is still consistent (every critical section in this crate is panic-free), and a
/// device daemon keeps running rather than spreading the panic.
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}
