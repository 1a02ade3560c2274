//! Whose code is running on the current thread: the emulator's or the driver's.
//!
//! The emulator is test infrastructure and allocates freely; the driver (and the library under
//! test) must not allocate on its packet paths. A test's counting global allocator asks
//! [`in_emulator`] to attribute each allocation: every slot body and every emulator thread runs
//! in emulator scope, and every call back into the driver runs in driver scope.

use core::cell::Cell;

thread_local! {
    /// Nesting depth of emulator scopes on this thread; 0 = driver (or test) code.
    static DEPTH: Cell<u32> = const { Cell::new(0) };
}

/// True while the current thread runs emulator code (a KMCL slot body or an emulator thread
/// outside driver callbacks). Cheap and allocation-free, so a global allocator may call it.
#[must_use]
pub fn in_emulator() -> bool {
    DEPTH.try_with(|d| d.get() > 0).unwrap_or(true)
}

/// Marks the current thread as running emulator code until dropped.
pub(crate) struct EmulatorScope(());

impl EmulatorScope {
    pub(crate) fn enter() -> Self {
        let _ = DEPTH.try_with(|d| d.set(d.get().saturating_add(1)));
        Self(())
    }
}

impl Drop for EmulatorScope {
    fn drop(&mut self) {
        let _ = DEPTH.try_with(|d| d.set(d.get().saturating_sub(1)));
    }
}

/// Marks the current thread as running driver code (a callback) until dropped, restoring the
/// emulator depth afterwards.
pub(crate) struct DriverScope(u32);

impl DriverScope {
    pub(crate) fn enter() -> Self {
        Self(DEPTH.try_with(|d| d.replace(0)).unwrap_or(0))
    }
}

impl Drop for DriverScope {
    fn drop(&mut self) {
        let saved = self.0;
        let _ = DEPTH.try_with(|d| d.set(saved));
    }
}

/// Runs `f` as emulator code: for test harnesses that drive the emulated host from a test
/// thread (e.g. `EchoControl::send_unsolicited`) while a counting allocator is measuring the
/// driver.
pub fn as_emulator<R>(f: impl FnOnce() -> R) -> R {
    let _emulator = EmulatorScope::enter();
    f()
}
