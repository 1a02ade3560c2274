//! [`ChannelHandler`]: the driver's side of one channel, and [`PacketContext`], the value a
//! driver attaches to each outgoing packet.

use core::ffi::c_void;

use crate::channel::ChannelCore;
use crate::incoming::IncomingPacket;
use crate::irql::PassiveLevel;
use crate::packet::Completion;
use crate::status::{NtStatus, Result};

/// The driver's callbacks for one channel (`EVT_VMB_*`), called through monomorphised
/// `extern "system"` trampolines: the Ex (V5) callbacks with the channel's core as their context
/// when the interface is V5, the legacy ones (finding the core through `VmbChannelGetPointer`)
/// otherwise.
///
/// IRQL is in the signatures: the state callbacks run at PASSIVE_LEVEL and receive a
/// [`PassiveLevel`] token for blocking calls; packet and completion callbacks run at
/// DISPATCH_LEVEL (or PASSIVE_LEVEL when delivery at passive is set: see
/// [`IncomingPacket::passive_level`]) and receive none.
///
/// Callbacks take `&self` and may run concurrently on different processors, so handler state
/// needs interior mutability that is safe at DISPATCH_LEVEL (atomics, spin locks). Every method
/// has a default that does nothing (and completes incoming packets with no response). No
/// callback runs after [`Channel::disable`](crate::Channel::disable) returns.
///
/// Panics: a callback must not panic. The trampolines are `extern "system"`, so an unwinding
/// panic cannot cross into KMCL: in a test build (std, `panic=unwind`) the process aborts; in a
/// kernel build (`panic=abort`, `wdk-panic`) the driver's panic handler runs, which bugchecks.
pub trait ChannelHandler: Sized + Send + Sync + 'static {
    /// The value attached to each outgoing packet and handed back with its completion.
    type PacketContext: PacketContext;

    /// `EvtVmbChannelOpened[Ex]`: the channel is open. An error fails `enable` with that status.
    /// IRQL: PASSIVE_LEVEL.
    fn opened(&self, channel: &ChannelCore<Self>, irql: &PassiveLevel) -> Result<()> {
        let _ = (channel, irql);
        Ok(())
    }

    /// `EvtVmbChannelClosed[Ex]`: the channel closed (the driver disabled it, or the host
    /// rescinded the offer). Sends fail from now on; disable and drop the channel.
    /// IRQL: PASSIVE_LEVEL.
    fn closed(&self, channel: &ChannelCore<Self>, irql: &PassiveLevel) {
        let _ = (channel, irql);
    }

    /// `EvtVmbChannelSuspend[Ex]`: packet delivery is stopping (pause or teardown).
    /// IRQL: PASSIVE_LEVEL.
    fn suspend(&self, channel: &ChannelCore<Self>, irql: &PassiveLevel) {
        let _ = (channel, irql);
    }

    /// `EvtVmbChannelStarted[Ex]`: the channel is started. IRQL: PASSIVE_LEVEL.
    fn started(&self, channel: &ChannelCore<Self>, irql: &PassiveLevel) {
        let _ = (channel, irql);
    }

    /// `EvtVmbChannelPostStarted[Ex]`: called after `started`, once packets can be delivered.
    /// IRQL: PASSIVE_LEVEL.
    fn post_started(&self, channel: &ChannelCore<Self>, irql: &PassiveLevel) {
        let _ = (channel, irql);
    }

    /// `EvtVmbChannelProcessPacket[Ex]`: a packet from the opposite endpoint. Consume it with
    /// [`IncomingPacket::complete`], [`fail`](IncomingPacket::fail),
    /// [`defer_to_passive`](IncomingPacket::defer_to_passive) or [`pend`](IncomingPacket::pend);
    /// dropping it completes it with no response. IRQL: DISPATCH_LEVEL, or PASSIVE_LEVEL when
    /// [`IncomingPacket::passive_level`] says so.
    fn process_packet(&self, channel: &ChannelCore<Self>, packet: IncomingPacket<'_, Self>) {
        let _ = (channel, packet);
    }

    /// `EvtVmbChannelProcessingComplete[Ex]`: a batch of `packets_processed` packets has been
    /// delivered. IRQL: ≤ DISPATCH_LEVEL.
    fn processing_complete(&self, channel: &ChannelCore<Self>, packets_processed: u32) {
        let _ = (channel, packets_processed);
    }

    /// `EvtVmbPacketCompletionRoutine[Ex]`: an outgoing packet completed: its status, the
    /// opposite endpoint's response bytes and the context given at send. The packet is freed
    /// when this returns. IRQL: ≤ DISPATCH_LEVEL.
    fn packet_completed(
        &self,
        channel: &ChannelCore<Self>,
        completion: Completion<'_, Self::PacketContext>,
    ) {
        let _ = (channel, completion);
    }

    /// `EvtVmbChannelPnpFailure`: the target PnP device failed with `status`.
    /// IRQL: PASSIVE_LEVEL.
    fn pnp_failure(&self, channel: &ChannelCore<Self>, status: NtStatus, irql: &PassiveLevel) {
        let _ = (channel, status, irql);
    }
}

/// A value attached to an outgoing packet: pointer-sized, so that it fits the packet's inline
/// context (V5, `VmbChannelInitSetInlinePacketContextSize`) and, on older interfaces, the
/// packet pointer slot (`VmbPacketSetPointer`). No heap allocation either way.
///
/// Implemented for `()`, `usize`, `u64` and `u32`; implement it for a newtype around an index
/// or a handle (for example a `WDFREQUEST`).
pub trait PacketContext: Send + 'static {
    /// Encodes the value as a pointer-sized word.
    fn into_raw(self) -> *mut c_void;

    /// Decodes a word made by [`into_raw`](Self::into_raw). The crate never decodes a word it
    /// did not store (a null inline context is not decoded).
    ///
    /// # Safety
    /// `raw` was returned by `Self::into_raw`, and each such word is decoded at most once.
    unsafe fn from_raw(raw: *mut c_void) -> Self;
}

impl PacketContext for () {
    fn into_raw(self) -> *mut c_void {
        core::ptr::null_mut()
    }
    unsafe fn from_raw(_: *mut c_void) -> Self {}
}

impl PacketContext for usize {
    fn into_raw(self) -> *mut c_void {
        core::ptr::without_provenance_mut(self)
    }
    unsafe fn from_raw(raw: *mut c_void) -> Self {
        raw.addr()
    }
}

#[cfg(target_pointer_width = "64")]
impl PacketContext for u64 {
    fn into_raw(self) -> *mut c_void {
        core::ptr::without_provenance_mut(self as usize)
    }
    unsafe fn from_raw(raw: *mut c_void) -> Self {
        raw.addr() as u64
    }
}

impl PacketContext for u32 {
    fn into_raw(self) -> *mut c_void {
        core::ptr::without_provenance_mut(self as usize)
    }
    unsafe fn from_raw(raw: *mut c_void) -> Self {
        raw.addr() as u32
    }
}
