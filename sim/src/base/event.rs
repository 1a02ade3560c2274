//! Small synchronisation helpers: a poison-tolerant lock, a condition wait, an event with a
//! generation counter, and a one-shot rendezvous. Every lock and wait in the emulator goes
//! through them, because under a seeded schedule ([`super::schedule`]) a wait must hand the
//! turn to another thread instead of blocking, and no thread may give up its turn while it
//! holds a lock.

use std::ops::{Deref, DerefMut};
use std::sync::{Condvar, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use super::schedule::{self, LockHeld};

/// A locked emulator mutex: derefs to the data; the lock is counted as held by this thread
/// (no schedule switch while one is held).
pub(crate) struct Locked<'a, T> {
    mutex: &'a Mutex<T>,
    guard: MutexGuard<'a, T>,
    _held: LockHeld,
}

impl<T> Deref for Locked<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.guard
    }
}

impl<T> DerefMut for Locked<'_, T> {
    fn deref_mut(&mut self) -> &mut T {
        &mut self.guard
    }
}

/// Locks `m`, recovering the data of a poisoned mutex (a panic elsewhere must not wedge the
/// emulator; every critical section leaves its data consistent before it can panic).
pub(crate) fn lock<T>(m: &Mutex<T>) -> Locked<'_, T> {
    let guard = m.lock().unwrap_or_else(PoisonError::into_inner);
    Locked {
        mutex: m,
        guard,
        _held: schedule::lock_held(),
    }
}

/// Waits on `cv` until `done` holds or `timeout` passes; returns the guard and whether `done`
/// held. Under a seeded schedule the lock is released and the turn handed on between looks,
/// and `timeout` is virtual.
pub(crate) fn wait_until<'a, T>(
    cv: &Condvar,
    locked: Locked<'a, T>,
    timeout: Duration,
    mut done: impl FnMut(&mut T) -> bool,
) -> (Locked<'a, T>, bool) {
    let mutex = locked.mutex;
    let locked = match schedule::current() {
        Some(me) => match me.wait_locked(timeout, locked, || lock(mutex), &mut done) {
            Ok(outcome) => return outcome,
            Err(locked) => locked,
        },
        None => locked,
    };
    let Locked {
        mutex,
        guard,
        _held,
    } = locked;
    let (guard, result) = cv
        .wait_timeout_while(guard, timeout, |v| !done(v))
        .unwrap_or_else(PoisonError::into_inner);
    (
        Locked {
            mutex,
            guard,
            _held,
        },
        !result.timed_out(),
    )
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

/// A one-shot rendezvous: one side [`put`](Self::put)s a value once, the other waits for it.
#[derive(Debug)]
pub(crate) struct Rendezvous<T> {
    value: Mutex<Option<T>>,
    cv: Condvar,
}

impl<T> Default for Rendezvous<T> {
    fn default() -> Self {
        Self {
            value: Mutex::new(None),
            cv: Condvar::new(),
        }
    }
}

impl<T> Rendezvous<T> {
    /// Stores `value` unless one is already there, and wakes the waiter.
    pub(crate) fn put(&self, value: T) {
        let mut v = lock(&self.value);
        if v.is_none() {
            *v = Some(value);
        }
        self.cv.notify_all();
    }

    /// Waits up to `timeout` for the value and takes it; `None` on timeout.
    pub(crate) fn take_within(&self, timeout: Duration) -> Option<T> {
        let v = lock(&self.value);
        let (mut v, _) = wait_until(&self.cv, v, timeout, |v| v.is_some());
        v.take()
    }
}
