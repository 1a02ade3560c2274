//! Small synchronisation helpers: a poison-tolerant lock and an event with a generation counter.

use std::sync::{Condvar, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

/// Locks `m`, recovering the data of a poisoned mutex (a panic elsewhere must not wedge the
/// emulator; every critical section leaves its data consistent before it can panic).
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Waits on `cv` until `done` holds or `timeout` passes; returns the guard and whether `done`
/// held.
pub(crate) fn wait_until<'a, T>(
    cv: &Condvar,
    guard: MutexGuard<'a, T>,
    timeout: Duration,
    mut done: impl FnMut(&mut T) -> bool,
) -> (MutexGuard<'a, T>, bool) {
    let (guard, result) = cv
        .wait_timeout_while(guard, timeout, |v| !done(v))
        .unwrap_or_else(PoisonError::into_inner);
    (guard, !result.timed_out())
}

/// An auto-reset-free event: `signal` bumps a generation counter and wakes every waiter; a
/// waiter remembers the generation it saw before doing its work, so no signal is ever lost.
#[derive(Debug, Default)]
pub(crate) struct Event {
    generation: Mutex<u64>,
    cv: Condvar,
}

impl Event {
    /// The current generation.
    pub(crate) fn current(&self) -> u64 {
        *lock(&self.generation)
    }

    /// Bumps the generation and wakes all waiters.
    pub(crate) fn signal(&self) {
        let mut g = lock(&self.generation);
        *g = g.wrapping_add(1);
        self.cv.notify_all();
    }

    /// Waits until the generation differs from `seen` or `timeout` passes.
    pub(crate) fn wait_past(&self, seen: u64, timeout: Duration) {
        let g = lock(&self.generation);
        let _ = wait_until(&self.cv, g, timeout, |g| *g != seen);
    }
}
