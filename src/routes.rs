//! The one static of the crate: how a legacy (pre-V5) callback finds its channel.
//!
//! Legacy KMCL callbacks (`EvtVmbChannelProcessPacket`, `EvtVmbPacketCompletionRoutine`, the V1
//! state-change callbacks) receive only a KMCL handle, no context. The channel pointer is stored
//! on the KMCL channel with `VmbChannelSetPointer`, but reading it back needs
//! `VmbChannelGetPointer` — a slot of the interface table, which a bare `extern "system"`
//! trampoline cannot reach. So the few slots a legacy trampoline needs are published here when a
//! channel is enabled. They are the same for every channel of one `vmbkmcl.sys`; V5 interfaces
//! never read them (their Ex callbacks carry the channel as context).

use core::sync::atomic::{AtomicPtr, Ordering};

use crate::sys;

/// Function pointers stored as data pointers (null = not yet published). A pointer keeps its
/// provenance through the cast and back; an integer would not.
struct LegacyRoutes {
    channel_get_pointer: AtomicPtr<()>,
    packet_get_channel: AtomicPtr<()>,
    packet_get_pointer: AtomicPtr<()>,
}

static LEGACY_ROUTES: LegacyRoutes = LegacyRoutes {
    channel_get_pointer: AtomicPtr::new(core::ptr::null_mut()),
    packet_get_channel: AtomicPtr::new(core::ptr::null_mut()),
    packet_get_pointer: AtomicPtr::new(core::ptr::null_mut()),
};

/// Publishes the slots legacy trampolines need (idempotent; called before enabling a channel).
pub(crate) fn publish(table: &sys::KMCL_CLIENT_INTERFACE_V5) {
    if let Some(f) = table.VmbChannelGetPointer {
        LEGACY_ROUTES
            .channel_get_pointer
            .store(f as *mut (), Ordering::Release);
    }
    if let Some(f) = table.VmbPacketGetChannel {
        LEGACY_ROUTES
            .packet_get_channel
            .store(f as *mut (), Ordering::Release);
    }
    if let Some(f) = table.VmbPacketGetPointer {
        LEGACY_ROUTES
            .packet_get_pointer
            .store(f as *mut (), Ordering::Release);
    }
}

/// Loads a published function address as its function-pointer type.
macro_rules! load {
    ($field:ident: $fn_type:ty) => {{
        let address = LEGACY_ROUTES.$field.load(Ordering::Acquire);
        if address.is_null() {
            None
        } else {
            // SAFETY: non-null values were stored from a `$fn_type` in `publish`; the data
            // pointer kept the function pointer's provenance.
            Some(unsafe { core::mem::transmute::<*mut (), $fn_type>(address) })
        }
    }};
}

/// `VmbChannelGetPointer(channel)`, or null when no channel was ever enabled.
pub(crate) fn channel_pointer(channel: sys::VMBCHANNEL) -> *mut core::ffi::c_void {
    match load!(channel_get_pointer: sys::FN_VMB_CHANNEL_GET_POINTER) {
        // SAFETY: KMCL's own routine, called with a handle KMCL passed to a callback.
        Some(get_pointer) => unsafe { get_pointer(channel) },
        None => core::ptr::null_mut(),
    }
}

/// `VmbPacketGetChannel(packet)`, or null when no channel was ever enabled.
pub(crate) fn packet_channel(packet: sys::VMBPACKET) -> sys::VMBCHANNEL {
    match load!(packet_get_channel: sys::FN_VMB_PACKET_GET_CHANNEL) {
        // SAFETY: KMCL's own routine, called with a packet KMCL passed to a completion routine.
        Some(get_channel) => unsafe { get_channel(packet) },
        None => core::ptr::null_mut(),
    }
}

/// `VmbPacketGetPointer(packet)`, or null when no channel was ever enabled.
pub(crate) fn packet_pointer(packet: sys::VMBPACKET) -> *mut core::ffi::c_void {
    match load!(packet_get_pointer: sys::FN_VMB_PACKET_GET_POINTER) {
        // SAFETY: KMCL's own routine, called with a packet KMCL passed to a completion routine.
        Some(get_pointer) => unsafe { get_pointer(packet) },
        None => core::ptr::null_mut(),
    }
}
