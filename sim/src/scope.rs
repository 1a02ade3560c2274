//! Whose code is running on the current thread: the emulator's or the driver's.
//!
//! The emulator is test infrastructure and allocates freely; the driver (and the library under
//! test) must not allocate on its packet paths. A test's counting global allocator asks
//! [`in_driver`] to attribute each allocation: every call back into the driver runs in driver
//! scope, and a test thread marks the driver code it runs with [`as_driver`]; every slot body
//! runs in emulator scope even when called from driver code. Code in neither (thread start-up,
//! the test harness) is not attributed to the driver.

use core::cell::Cell;

thread_local! {
    /// Nesting depth of emulator scopes on this thread.
    static EMULATOR_DEPTH: Cell<u32> = const { Cell::new(0) };
    /// True inside a driver scope.
    static DRIVER: Cell<bool> = const { Cell::new(false) };
}

/// True while the current thread runs driver code: inside a driver callback or [`as_driver`],
/// and not inside a KMCL slot it called. Cheap and allocation-free, so a global allocator may
/// call it.
#[must_use]
pub fn in_driver() -> bool {
    let driver = DRIVER.try_with(Cell::get).unwrap_or(false);
    driver && EMULATOR_DEPTH.try_with(Cell::get).unwrap_or(1) == 0
}

/// True while the current thread runs emulator code (a KMCL slot body or an emulator thread
/// outside driver callbacks).
#[must_use]
pub fn in_emulator() -> bool {
    EMULATOR_DEPTH.try_with(|d| d.get() > 0).unwrap_or(true)
}

/// Marks the current thread as running emulator code until dropped.
pub(crate) struct EmulatorScope(());

impl EmulatorScope {
    pub(crate) fn enter() -> Self {
        let _ = EMULATOR_DEPTH.try_with(|d| d.set(d.get().saturating_add(1)));
        Self(())
    }
}

impl Drop for EmulatorScope {
    fn drop(&mut self) {
        let _ = EMULATOR_DEPTH.try_with(|d| d.set(d.get().saturating_sub(1)));
    }
}

/// Marks the current thread as running driver code (a callback) until dropped, restoring the
/// previous state afterwards.
pub(crate) struct DriverScope {
    depth: u32,
    driver: bool,
}

impl DriverScope {
    pub(crate) fn enter() -> Self {
        Self {
            depth: EMULATOR_DEPTH.try_with(|d| d.replace(0)).unwrap_or(0),
            driver: DRIVER.try_with(|d| d.replace(true)).unwrap_or(false),
        }
    }
}

impl Drop for DriverScope {
    fn drop(&mut self) {
        let (depth, driver) = (self.depth, self.driver);
        let _ = EMULATOR_DEPTH.try_with(|d| d.set(depth));
        let _ = DRIVER.try_with(|d| d.set(driver));
    }
}

/// Runs `f` as emulator code: for test harnesses that drive the emulated host from a test
/// thread (e.g. `EchoControl::send_unsolicited`) inside [`as_driver`].
pub fn as_emulator<R>(f: impl FnOnce() -> R) -> R {
    let _emulator = EmulatorScope::enter();
    f()
}

/// Runs `f` as driver code: a test thread marks the driver code it runs (sends, waits) so a
/// counting allocator attributes its allocations to the driver.
pub fn as_driver<R>(f: impl FnOnce() -> R) -> R {
    let _driver = DriverScope::enter();
    f()
}
