//! The emulator's IRQL model: every thread that enters the emulator has a current IRQL, and every
//! slot checks it against the slot's requirement ([`Slot::max_irql`]).
//!
//! Where the IRQL comes from:
//! - packet callbacks (`EvtVmbChannelProcessPacket[Ex]`, `EvtVmbChannelProcessingComplete[Ex]`)
//!   run at DISPATCH_LEVEL on the channel's callback thread, and at PASSIVE_LEVEL on its passive
//!   worker (incoming processing at passive, re-delivery after `VmbChannelPacketDeferToPassive`);
//! - completion routines (`EvtVmbPacketCompletionRoutine[Ex]`) run at DISPATCH_LEVEL;
//! - state callbacks (`EvtChannelOpened` … `EvtChannelPostStarted`, the PnP-failure callback)
//!   run at PASSIVE_LEVEL, also when the callback thread runs them for a host rescind;
//! - every other thread (test threads, the passive worker between callbacks) runs at
//!   PASSIVE_LEVEL until it raises itself with [`raise`], as `KeRaiseIrql` would.
//!
//! A slot called above its requirement records a [`ViolationKind::IrqlTooHigh`] violation (with
//! both levels in [`Violation::irql`]) and is refused before it looks at its arguments: a
//! status-returning slot returns `STATUS_INVALID_DEVICE_STATE`, `VmbPacketAllocate` and the
//! pointer-returning slots return null, the size slots 0, and `VOID` slots do nothing.
//!
//! [`install_irql_model`] makes the same model the `vmbus-kmcl` library's IRQL probe, so the
//! library's `PassiveLevel::check()` and `current_irql()` agree with the slots' checks.
//!
//! ```
//! use vmbus_kmcl::Irql;
//! use vmbus_kmcl_sim::irql;
//!
//! irql::install_irql_model();
//! assert_eq!(irql::current(), Irql::PASSIVE);
//! {
//!     let _raised = irql::raise(Irql::DISPATCH); // KeRaiseIrql
//!     assert_eq!(vmbus_kmcl::irql::current_irql(), Irql::DISPATCH);
//!     assert!(vmbus_kmcl::PassiveLevel::check().is_none());
//! } // KeLowerIrql
//! assert_eq!(irql::current(), Irql::PASSIVE);
//! ```
//!
//! [`Slot::max_irql`]: crate::Slot::max_irql
//! [`ViolationKind::IrqlTooHigh`]: crate::ViolationKind::IrqlTooHigh
//! [`Violation::irql`]: crate::Violation::irql

use core::cell::Cell;
use core::marker::PhantomData;

pub use vmbus_kmcl::Irql;

use crate::base::slot::Slot;
use crate::model::registry;
use crate::verifier::report::{IrqlMismatch, Violation, ViolationKind};

thread_local! {
    /// The calling thread's IRQL (`KIRQL`).
    static CURRENT: Cell<u8> = const { Cell::new(0) };
}

/// The calling thread's IRQL in the model (PASSIVE_LEVEL unless the emulator runs a callback at
/// DISPATCH_LEVEL on it or the thread raised itself). DISPATCH_LEVEL while the thread's locals
/// are being destroyed (conservative: no PASSIVE_LEVEL token is minted then).
#[must_use]
pub fn current() -> Irql {
    CURRENT.try_with(Cell::get).map_or(Irql::DISPATCH, Irql)
}

fn set(level: Irql) -> Irql {
    CURRENT
        .try_with(|c| Irql(c.replace(level.0)))
        .unwrap_or(Irql::DISPATCH)
}

/// Raises the calling thread's IRQL to `new` until the guard is dropped (`KeRaiseIrql`; the
/// drop is `KeLowerIrql` back to the previous level). Raising never lowers: if the thread is
/// already above `new`, it stays where it is.
#[must_use = "the IRQL is lowered again when the guard is dropped"]
pub fn raise(new: Irql) -> IrqlGuard {
    let previous = current();
    if new > previous {
        set(new);
    }
    IrqlGuard {
        previous,
        _not_send: PhantomData,
    }
}

/// Runs `f` with the calling thread raised to `irql` (see [`raise`]).
pub fn at<R>(irql: Irql, f: impl FnOnce() -> R) -> R {
    let _raised = raise(irql);
    f()
}

/// The calling thread's raised IRQL; dropping it lowers the thread back (`KeLowerIrql`). Not
/// `Send`: the IRQL belongs to the thread that raised it.
#[derive(Debug)]
pub struct IrqlGuard {
    previous: Irql,
    _not_send: PhantomData<*mut ()>,
}

impl IrqlGuard {
    /// The level the thread returns to when the guard is dropped.
    #[must_use]
    pub const fn previous(&self) -> Irql {
        self.previous
    }
}

impl Drop for IrqlGuard {
    fn drop(&mut self) {
        set(self.previous);
    }
}

/// The emulator running a driver callback at `level` on the current thread; restores the
/// previous level when dropped.
pub(crate) struct CallbackIrql(Irql);

impl CallbackIrql {
    pub(crate) fn enter(level: Irql) -> Self {
        Self(set(level))
    }
}

impl Drop for CallbackIrql {
    fn drop(&mut self) {
        set(self.0);
    }
}

/// Makes [`current`] the `vmbus-kmcl` library's IRQL probe (`vmbus_kmcl::irql::set_irql_probe`).
///
/// Idempotent and safe to call from any thread at any time: the probe is installed once per
/// process, and [`Vmbus::new`](crate::Vmbus::new) calls this. A test harness that wants a
/// different probe installs it after calling this function.
pub fn install_irql_model() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        // SAFETY: `current` reports DISPATCH_LEVEL on every thread the emulator runs at
        // DISPATCH_LEVEL (its callback thread inside packet and completion callbacks, and any
        // thread that raised itself), so it never reports PASSIVE_LEVEL above it.
        unsafe { vmbus_kmcl::irql::set_irql_probe(Some(current)) };
    });
}

/// Checks the calling thread's IRQL against `required` (the most `slot` allows); above it,
/// records an [`ViolationKind::IrqlTooHigh`] violation on the bus that owns `handle` (else the
/// calling thread's bus) and returns false.
pub(crate) fn allowed(slot: Slot, handle: usize, required: Irql) -> bool {
    let now = current();
    if now <= required {
        return true;
    }
    registry::report(
        registry::owner(handle),
        Violation {
            slot: slot.name(),
            kind: ViolationKind::IrqlTooHigh,
            message: format!(
                "{slot} called at IRQL {} (requires {})",
                name(now),
                name(required)
            ),
            handle,
            irql: Some(IrqlMismatch {
                current: now,
                required,
            }),
        },
    );
    false
}

/// `PASSIVE_LEVEL`, `APC_LEVEL`, `DISPATCH_LEVEL`, or the number.
fn name(irql: Irql) -> String {
    match irql {
        Irql::PASSIVE => "PASSIVE_LEVEL".into(),
        Irql::APC => "APC_LEVEL".into(),
        Irql::DISPATCH => "DISPATCH_LEVEL".into(),
        Irql(n) => format!("{n}"),
    }
}

/// What a slot returns when it refuses a call made above its IRQL (as the real call would fail).
pub(crate) trait Refused {
    fn refused() -> Self;
}

impl Refused for () {
    fn refused() -> Self {}
}

impl Refused for i32 {
    fn refused() -> Self {
        crate::base::status::STATUS_INVALID_DEVICE_STATE
    }
}

impl Refused for u32 {
    fn refused() -> Self {
        0
    }
}

impl<T> Refused for *mut T {
    fn refused() -> Self {
        core::ptr::null_mut()
    }
}
