//! [`StateWord`]: the one-byte state machine behind every table entry a channel keeps (GPADL
//! entries, packet-pool entries, pend slots). Whoever moves an entry into a state with a
//! compare-exchange owns it in that state; everything is sequentially consistent, so a store in
//! one table and a load of another order as written (pend slots rely on it against disable).

use core::sync::atomic::{AtomicU8, Ordering};

/// A state byte moved only by compare-exchange or by its current owner's store.
pub(crate) struct StateWord(AtomicU8);

impl StateWord {
    pub(crate) const fn new(state: u8) -> Self {
        Self(AtomicU8::new(state))
    }

    /// Moves `from` → `to`; true when this call did it (and so owns the entry in `to`).
    pub(crate) fn moved(&self, from: u8, to: u8) -> bool {
        self.0
            .compare_exchange(from, to, Ordering::SeqCst, Ordering::SeqCst)
            .is_ok()
    }

    pub(crate) fn load(&self) -> u8 {
        self.0.load(Ordering::SeqCst)
    }

    /// Hands the entry on in state `to` (the caller owns it now).
    pub(crate) fn store(&self, to: u8) {
        self.0.store(to, Ordering::SeqCst);
    }
}
