//! [`StdPlatform`]: the client's [`Platform`] on a host (the emulator's "DPC" threads call
//! `notify`, the harness thread waits).

use std::sync::{Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use vmbus_echo::client::Platform;

/// `Instant`-based clock and a manual-reset event (a flag under a mutex and a condition
/// variable), the host counterpart of the driver's `KeQueryPerformanceCounter` and `KEVENT`.
#[derive(Debug)]
pub struct StdPlatform {
    origin: Instant,
    signalled: Mutex<bool>,
    cv: Condvar,
}

impl StdPlatform {
    /// A platform whose clock starts now, event clear.
    #[must_use]
    pub fn new() -> Self {
        Self {
            origin: Instant::now(),
            signalled: Mutex::new(false),
            cv: Condvar::new(),
        }
    }

    fn flag(&self) -> MutexGuard<'_, bool> {
        self.signalled
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

impl Default for StdPlatform {
    fn default() -> Self {
        Self::new()
    }
}

impl Platform for StdPlatform {
    fn now_ns(&self) -> u64 {
        u64::try_from(self.origin.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }

    fn prepare_wait(&self) {
        *self.flag() = false;
    }

    fn notify(&self) {
        *self.flag() = true;
        self.cv.notify_all();
    }

    fn wait(&self, timeout_ns: u64) {
        let guard = self.flag();
        let _ = self
            .cv
            .wait_timeout_while(guard, Duration::from_nanos(timeout_ns), |signalled| {
                !*signalled
            })
            .unwrap_or_else(PoisonError::into_inner);
    }
}
