//! Rundown protection: every call that uses a resource holds a reference, and whoever retires
//! the resource refuses new holders and waits for the current ones to leave. A channel has two:
//! one for its KMCL handle (run down before `VmbChannelCleanup`) and one for sends (open while
//! the channel is enabling or enabled, run down before `VmbChannelDisable`).
//! The pattern of the kernel's `EX_RUNDOWN_REF`, lock-free: two atomic operations per call.

use core::sync::atomic::{AtomicUsize, Ordering};

/// Bit 0: run down (no new holders); the rest: holders × 2.
pub(crate) struct Rundown(AtomicUsize);

const CLOSED: usize = 1;
const ONE: usize = 2;

impl Rundown {
    pub(crate) const fn new() -> Self {
        Self(AtomicUsize::new(0))
    }

    /// A rundown that refuses holders until [`reopen`](Self::reopen).
    pub(crate) const fn new_closed() -> Self {
        Self(AtomicUsize::new(CLOSED))
    }

    /// Admits holders again after a completed [`run_down`](Self::run_down).
    pub(crate) fn reopen(&self) {
        self.0.fetch_and(!CLOSED, Ordering::AcqRel);
    }

    /// Enters, unless the rundown has started.
    #[inline(always)]
    pub(crate) fn acquire(&self) -> Option<RundownGuard<'_>> {
        let previous = self.0.fetch_add(ONE, Ordering::Acquire);
        if previous & CLOSED != 0 {
            self.0.fetch_sub(ONE, Ordering::Release);
            return None;
        }
        Some(RundownGuard(self))
    }

    /// Refuses new holders and waits until every current one has left. The holders are KMCL
    /// calls that do not wait for this thread, so the wait ends.
    pub(crate) fn run_down(&self) {
        self.0.fetch_or(CLOSED, Ordering::AcqRel);
        while self.0.load(Ordering::Acquire) != CLOSED {
            crate::spin::relax();
        }
    }
}

/// One holder; leaves on drop.
pub(crate) struct RundownGuard<'a>(&'a Rundown);

impl Drop for RundownGuard<'_> {
    #[inline(always)]
    fn drop(&mut self) {
        self.0.0.fetch_sub(ONE, Ordering::Release);
    }
}
