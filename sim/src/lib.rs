//! In-process emulator of the VMBus Kernel Mode Client Library (KMCL, `vmbkmcl.sys`) and of
//! the host endpoint, with real VMBus rings.
//!
//! Host-only (`std`). A [`Vmbus`] builds a real `KMCL_CLIENT_INTERFACE_V1`…`V5` function table
//! whose slots are Rust `extern "system"` functions, so a driver's production path (calls
//! through the table, callbacks through its trampolines) is exactly what runs in tests. Each
//! open channel has a host thread running a [`HostDevice`] (the VSP; [`EchoVsp`] ships with the
//! crate) and a callback thread that delivers packets and completions to the driver, as DPCs
//! are. Rings use the VMBus wire format ([`ring`]). GPADLs and external data use real-layout
//! MDLs ([`OwnedMdl`]) over an identity "physical" mapping (PFN = virtual address >> 12).
//!
//! Every handle a slot receives is validated through a registry before use; driver bugs become
//! [`Violation`]s in the [`VerifierReport`], never crashes. Every thread has an IRQL ([`irql`]):
//! packet and completion callbacks run at DISPATCH_LEVEL, state callbacks at PASSIVE_LEVEL, and
//! a slot called above its IRQL ([`Slot::max_irql`]) is reported and refused. [`Faults`] inject
//! failures; an [`Offer`] rescinds, stalls, or writes hostile packets. A [`HostProfile`]
//! (`VmbusConfig::host_profile`) adds the habits of a particular host (Hyper-V, OpenVMM).
//! `sim/README.md` has the table of emulator semantics (slot → behaviour → status codes).
//!
//! # Example
//!
//! Open a channel to an [`EchoVsp`] through the raw V5 table, send one packet with a completion
//! routine, and check the verifier.
//!
//! ```
//! use std::sync::atomic::{AtomicU32, Ordering};
//! use vmbus_kmcl::sys::*;
//! use vmbus_kmcl_sim::{EchoVsp, Vmbus, VmbusConfig};
//!
//! static COMPLETED: AtomicU32 = AtomicU32::new(0);
//!
//! unsafe extern "system" fn on_packet(
//!     _ch: VMBCHANNEL, pkt: VMBPACKETCOMPLETION, _buf: PVOID, _len: u32, _flags: u32,
//! ) {
//!     let _ = pkt; // this example receives nothing
//! }
//!
//! unsafe extern "system" fn on_done(_p: VMBPACKET, status: NTSTATUS, _b: PVOID, len: u32) {
//!     assert_eq!(status, STATUS_SUCCESS);
//!     assert_eq!(len, 8);
//!     COMPLETED.fetch_add(1, Ordering::SeqCst);
//! }
//!
//! let bus = Vmbus::new(VmbusConfig::default());
//! let (vsp, control) = EchoVsp::new();
//! let offer = bus.offer(GUID::default(), GUID::default(), Box::new(vsp));
//! let kmcl = bus.client_interface_v5().unwrap();
//! unsafe {
//!     let mut ch: VMBCHANNEL = core::ptr::null_mut();
//!     assert_eq!((kmcl.VmbChannelAllocate.unwrap())(offer.device_object(), 0, &mut ch), 0);
//!     assert_eq!(
//!         (kmcl.VmbChannelInitSetProcessPacketCallbacks.unwrap())(ch, Some(on_packet), None),
//!         0
//!     );
//!     assert_eq!((kmcl.VmbChannelEnable.unwrap())(ch), STATUS_SUCCESS);
//!     let pkt = (kmcl.VmbPacketAllocate.unwrap())(ch);
//!     (kmcl.VmbPacketSetCompletionRoutine.unwrap())(pkt, Some(on_done));
//!     let mut ping = *b"ping1234";
//!     let status = (kmcl.VmbPacketSend.unwrap())(
//!         pkt, ping.as_mut_ptr().cast(), 8, core::ptr::null_mut(),
//!         VMBUS_CHANNEL_FORMAT_FLAG_WAIT_FOR_COMPLETION,
//!     );
//!     assert_eq!(status, STATUS_SUCCESS);
//!     while COMPLETED.load(Ordering::SeqCst) == 0 {
//!         std::thread::yield_now();
//!     }
//!     (kmcl.VmbPacketFree.unwrap())(pkt);
//!     (kmcl.VmbChannelDisable.unwrap())(ch);
//!     (kmcl.VmbChannelCleanup.unwrap())(ch);
//!     (kmcl.InterfaceHeader.InterfaceDereference.unwrap())(kmcl.InterfaceHeader.Context);
//! }
//! assert_eq!(control.stats().packets, 1);
//! bus.assert_clean();
//! ```
#![cfg_attr(
    test,
    allow(
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::panic,
        clippy::indexing_slicing
    )
)]

#[cfg(not(target_pointer_width = "64"))]
compile_error!("vmbus-kmcl-sim emulates the 64-bit KMCL ABI and needs a 64-bit host");

pub mod ring;

// The layers, bottom to top (`sim/README.md`, "Layers"; `tests/layering.rs` checks that a
// module names only its own and lower layers).
mod abi;
mod api;
mod base;
mod model;
mod threads;
mod verifier;

pub use base::{schedule, scope, status};
pub use model::irql;

pub use abi::slots::{
    MAX_CONTEXT_SIZE, MAX_PACKET_COUNT, MAX_PROCESSORS, MAX_RING_PAGES, PACKET_OBJECT_HEADER,
    SIZEOF_CHANNEL,
};
pub use api::echo::{EchoControl, EchoStats, EchoVsp};
pub use api::offer::Offer;
pub use api::vmbus::{Faults, Vmbus};
pub use base::memory::{
    MDL_MAPPED_TO_SYSTEM_VA, MDL_PAGES_LOCKED, MDL_SOURCE_IS_NONPAGED_POOL, MdlError,
    OWNED_MDL_FLAGS, OwnedMdl, PAGE_SIZE, pfn_of,
};
pub use base::profile::HostProfile;
pub use base::slot::{InterfaceVersion, IrqlSource, Slot, SlotReturn};
pub use model::bus::VmbusConfig;
pub use model::gpadl::GpadlView;
pub use model::host::{
    HostChannel, HostCompletion, HostDevice, HostError, HostPacket, HostPacketKind, HostRange,
    HostWaker, RawPacket,
};
pub use model::irql::install_irql_model;
pub use model::offer::OfferCounters;
pub use verifier::handles::unattributed_violations;
pub use verifier::report::{
    HostileCounters, IrqlMismatch, VerifierReport, Violation, ViolationKind,
};
