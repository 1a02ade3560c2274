//! Whose code is running on the current thread: the emulator's or the driver's.
//!
//! The emulator is test infrastructure and allocates freely; the driver (and the library under
//! test) must not allocate on its packet paths. A test's counting global allocator asks
//! [`in_driver`] to attribute each allocation: every call back into the driver runs in driver
//! scope, and a test thread marks the driver code it runs with [`as_driver`]; every slot body
//! runs in emulator scope even when called from driver code. Code in neither (thread start-up,
//! the test harness) is not attributed to the driver.

use core::cell::Cell;

use super::schedule::{self, Point};

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
    /// Enters emulator code: a switch point under a seeded schedule.
    pub(crate) fn enter() -> Self {
        schedule::switch(Point::Enter);
        let _ = EMULATOR_DEPTH.try_with(|d| d.set(d.get().saturating_add(1)));
        Self(())
    }
}

impl Drop for EmulatorScope {
    fn drop(&mut self) {
        let _ = EMULATOR_DEPTH.try_with(|d| d.set(d.get().saturating_sub(1)));
        schedule::switch(Point::Leave);
    }
}

/// Marks the current thread as running driver code (a callback) until dropped, restoring the
/// previous state afterwards.
pub(crate) struct DriverScope {
    depth: u32,
    driver: bool,
}

impl DriverScope {
    /// Calls into the driver: a switch point under a seeded schedule.
    pub(crate) fn enter() -> Self {
        schedule::switch(Point::Call);
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
        schedule::switch(Point::Return);
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

/// A global allocator for tests that counts heap allocations made by driver code (see
/// [`in_driver`]) while [`measure`](Self::measure) runs, and forwards everything to the system
/// allocator.
///
/// ```
/// use vmbus_kmcl_sim::scope::{DriverAllocations, as_emulator};
///
/// #[global_allocator]
/// static ALLOCATOR: DriverAllocations = DriverAllocations::new();
///
/// fn main() {
///     // Driver code that allocates is counted; emulator code is not.
///     assert_eq!(ALLOCATOR.measure(|| drop(std::hint::black_box(vec![1_u8]))), 1);
///     assert_eq!(ALLOCATOR.measure(|| as_emulator(|| drop(std::hint::black_box(vec![1_u8])))), 0);
/// }
/// ```
#[derive(Debug)]
pub struct DriverAllocations {
    measuring: core::sync::atomic::AtomicBool,
    count: core::sync::atomic::AtomicU64,
}

impl DriverAllocations {
    /// A counter that is not measuring.
    #[must_use]
    pub const fn new() -> Self {
        Self {
            measuring: core::sync::atomic::AtomicBool::new(false),
            count: core::sync::atomic::AtomicU64::new(0),
        }
    }

    /// Runs `f` as driver code on this thread ([`as_driver`]) and returns how many heap
    /// allocations driver code made meanwhile, on this thread and in every driver callback the
    /// emulator ran. Measure one thing at a time: allocations by other driver code running
    /// concurrently (another test) would be counted too.
    pub fn measure(&self, f: impl FnOnce()) -> u64 {
        use core::sync::atomic::Ordering;
        self.count.store(0, Ordering::SeqCst);
        self.measuring.store(true, Ordering::SeqCst);
        as_driver(f);
        self.measuring.store(false, Ordering::SeqCst);
        self.count.load(Ordering::SeqCst)
    }
}

impl Default for DriverAllocations {
    fn default() -> Self {
        Self::new()
    }
}

// SAFETY: every call is forwarded unchanged to the system allocator; counting touches only
// atomics and allocation-free thread locals.
unsafe impl std::alloc::GlobalAlloc for DriverAllocations {
    unsafe fn alloc(&self, layout: std::alloc::Layout) -> *mut u8 {
        use core::sync::atomic::Ordering;
        if self.measuring.load(Ordering::Relaxed) && in_driver() {
            self.count.fetch_add(1, Ordering::Relaxed);
        }
        // SAFETY: the caller's layout, passed through.
        unsafe { std::alloc::System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: std::alloc::Layout) {
        // SAFETY: the caller's pointer and layout, passed through.
        unsafe { std::alloc::System.dealloc(ptr, layout) }
    }
}
