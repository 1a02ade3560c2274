//! IRQL in the types: [`PassiveLevel`], the token that every blocking or PASSIVE_LEVEL-only
//! operation takes, and [`current_irql`], the runtime check behind [`PassiveLevel::check`] and
//! behind the drops that must block.
//!
//! Where a token comes from:
//! - the state callbacks of [`ChannelHandler`](crate::ChannelHandler) (`opened`, `closed`,
//!   `suspend`, `started`, `post_started`, `pnp_failure`) receive `&PassiveLevel`;
//! - an incoming packet delivered at PASSIVE_LEVEL (incoming processing at passive, or a packet
//!   coming back after [`defer_to_passive`](crate::IncomingPacket::defer_to_passive)) offers one
//!   through [`IncomingPacket::passive_level`](crate::IncomingPacket::passive_level);
//! - driver code that knows it runs at PASSIVE_LEVEL (`EvtDevicePrepareHardware`, `EvtDeviceD0Exit`,
//!   a work item) asks [`PassiveLevel::check`], or asserts it with `unsafe`
//!   [`PassiveLevel::assume`].
//!
//! Packet and completion callbacks run at DISPATCH_LEVEL and receive no token, so a blocking call
//! from them does not compile:
//!
//! ```compile_fail,E0133
//! # use vmbus_kmcl::{ChannelCore, ChannelHandler, IncomingPacket, PassiveLevel};
//! struct Vsc;
//! impl ChannelHandler for Vsc {
//!     type PacketContext = ();
//!     fn process_packet(&self, channel: &ChannelCore<Self>, packet: IncomingPacket<'_, Self>) {
//!         let irql = PassiveLevel::assume(); // needs `unsafe`: the caller must prove it
//!         let _ = channel.reclaim_gpadls(&irql);
//!     }
//! }
//! ```
//!
//! A token is neither `Send` nor `Sync`, so one handed to a passive callback cannot be kept for a
//! later DISPATCH_LEVEL callback on another thread:
//!
//! ```compile_fail,E0277
//! # use vmbus_kmcl::PassiveLevel;
//! fn keep_for_later(irql: PassiveLevel) {
//!     std::thread::spawn(move || drop(irql));
//! }
//! ```

use core::marker::PhantomData;
#[cfg(not(kmcl_wdk))]
use core::sync::atomic::{AtomicPtr, Ordering};

/// An interrupt request level (`KIRQL`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Irql(pub u8);

impl Irql {
    /// `PASSIVE_LEVEL` (0): threads may block and touch pageable memory.
    pub const PASSIVE: Self = Self(0);
    /// `APC_LEVEL` (1).
    pub const APC: Self = Self(1);
    /// `DISPATCH_LEVEL` (2): DPCs, spin locks held; no blocking, no pageable memory.
    pub const DISPATCH: Self = Self(2);
}

/// Proof that the current thread runs at PASSIVE_LEVEL for as long as the token lives.
///
/// Operations that block or need PASSIVE_LEVEL (enable, disable, pause, start, GPADL creation
/// and deletion, waiting synchronous requests, teardown) take `&PassiveLevel`. The token is a
/// zero-sized value that is neither `Send` nor `Sync` and is not `Clone`.
#[derive(Debug)]
pub struct PassiveLevel {
    _not_send: PhantomData<*mut ()>,
}

impl PassiveLevel {
    /// A token for the current thread if [`current_irql`] is PASSIVE_LEVEL.
    ///
    /// In a Windows kernel build this reads the processor's IRQL; elsewhere it asks the probe
    /// installed with [`set_irql_probe`] (an emulator's model of its threads' IRQL), and without
    /// a probe it reports PASSIVE_LEVEL: off Windows, with no probe, every thread counts as
    /// passive.
    ///
    /// IRQL: any.
    #[must_use]
    pub fn check() -> Option<Self> {
        // SAFETY: the IRQL was just read as PASSIVE_LEVEL on this thread, and the token cannot
        // leave the thread (not Send).
        (current_irql() == Irql::PASSIVE).then(|| unsafe { Self::assume() })
    }

    /// A token without a check.
    ///
    /// # Safety
    /// The calling thread runs at PASSIVE_LEVEL and will not raise its IRQL while the token
    /// (or a reference to it) is in use.
    #[must_use]
    pub const unsafe fn assume() -> Self {
        Self {
            _not_send: PhantomData,
        }
    }
}

/// The current thread's IRQL.
///
/// Windows kernel build (`kmcl_wdk`) on x86-64: the task-priority register (CR8), which is what
/// `KeGetCurrentIrql` reads. Other Windows kernel targets: DISPATCH_LEVEL (conservative: no
/// token is minted, drops that would block leak instead). Elsewhere: the installed probe, or
/// PASSIVE_LEVEL without one.
///
/// IRQL: any.
#[must_use]
pub fn current_irql() -> Irql {
    imp::current_irql()
}

#[cfg(kmcl_wdk)]
mod imp {
    use super::Irql;

    #[cfg(target_arch = "x86_64")]
    pub(super) fn current_irql() -> Irql {
        let cr8: u64;
        // SAFETY: reading CR8 is allowed in kernel mode (where a `kmcl_wdk` build runs), has no
        // side effect and touches no memory.
        unsafe {
            core::arch::asm!("mov {}, cr8", out(reg) cr8, options(nomem, nostack, preserves_flags))
        };
        Irql(u8::try_from(cr8 & 0xF).unwrap_or(u8::MAX))
    }

    #[cfg(not(target_arch = "x86_64"))]
    pub(super) fn current_irql() -> Irql {
        Irql::DISPATCH
    }
}

#[cfg(not(kmcl_wdk))]
mod imp {
    use super::{IRQL_PROBE, Irql, Ordering};

    pub(super) fn current_irql() -> Irql {
        let probe = IRQL_PROBE.load(Ordering::Acquire);
        if probe.is_null() {
            return Irql::PASSIVE;
        }
        // SAFETY: non-null values are stored only by `set_irql_probe` from an `fn() -> Irql`
        // (a function pointer cast to a data pointer keeps its provenance).
        let probe = unsafe { core::mem::transmute::<*mut (), fn() -> Irql>(probe) };
        probe()
    }
}

/// The probe behind [`current_irql`] off Windows (null: none installed).
#[cfg(not(kmcl_wdk))]
static IRQL_PROBE: AtomicPtr<()> = AtomicPtr::new(core::ptr::null_mut());

/// Installs the function [`current_irql`] asks off Windows (an emulator's model of the
/// thread's IRQL, e.g. DISPATCH_LEVEL on its DPC threads); `None` removes it.
///
/// # Safety
/// The probe must not report PASSIVE_LEVEL on a thread that the emulator treats as running at
/// DISPATCH_LEVEL: tokens minted by [`PassiveLevel::check`] rely on it.
#[cfg(not(kmcl_wdk))]
pub unsafe fn set_irql_probe(probe: Option<fn() -> Irql>) {
    let raw = probe.map_or(core::ptr::null_mut(), |f| f as *mut ());
    IRQL_PROBE.store(raw, Ordering::Release);
}
