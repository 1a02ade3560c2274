//! [`IncomingPacket`]: a packet from the opposite endpoint, handed to
//! [`ChannelHandler::process_packet`](crate::ChannelHandler::process_packet), which is completed
//! exactly once (`VmbChannelPacketComplete`), failed, deferred, or pended as a
//! [`PendedPacket`] to complete later from any thread.

use core::cell::UnsafeCell;
use core::ffi::c_void;
use core::ptr::{self, NonNull};

use crate::channel::{ChannelCore, ChannelRef};
use crate::flags::{ExternalDataFlags, ProcessPacketFlags};
use crate::handler::ChannelHandler;
use crate::host_bytes::HostBytes;
use crate::interface::slot;
use crate::irql::PassiveLevel;
use crate::mdl::MdlChain;
use crate::state::StateWord;
use crate::status::{NtStatus, Result};
use crate::sys;

/// A packet received on a channel. Consuming it with [`complete`](Self::complete),
/// [`fail`](Self::fail), [`defer_to_passive`](Self::defer_to_passive) or [`pend`](Self::pend)
/// releases or hands on its ring slot; dropping it un-completed completes it with no response,
/// so a packet is never leaked. The one exception is [`ExternalData::Pending`]: KMCL will deliver
/// the packet again, so the packet is then released without completion.
///
/// Its bytes are host memory: [`data`](Self::data) is a copying view that borrows the packet.
pub struct IncomingPacket<'a, H: ChannelHandler> {
    channel: &'a ChannelCore<H>,
    completion: sys::VMBPACKETCOMPLETION,
    buffer: *const u8,
    len: u32,
    flags: ProcessPacketFlags,
    passive: Option<PassiveLevel>,
    /// Set when KMCL will deliver this packet again (external data pending).
    redelivery: bool,
}

/// The external data of a packet (`VmbChannelPacketGetExternalData`).
#[derive(Debug)]
#[non_exhaustive]
pub enum ExternalData<'a> {
    /// The MDL chain describing the data, valid until the packet is completed.
    Mdl(MdlChain<'a>),
    /// `STATUS_PENDING`: return from the callback; KMCL calls it again for this packet.
    Pending,
}

impl<'a, H: ChannelHandler> IncomingPacket<'a, H> {
    /// # Safety
    /// The arguments of one `EvtVmbChannelProcessPacket[Ex]` call for `channel`, and
    /// `at_passive` true only if that call runs at PASSIVE_LEVEL.
    pub(crate) unsafe fn from_raw(
        channel: &'a ChannelCore<H>,
        completion: sys::VMBPACKETCOMPLETION,
        buffer: *mut c_void,
        length: u32,
        flags: u32,
        at_passive: bool,
    ) -> Self {
        Self {
            channel,
            completion,
            buffer: buffer.cast_const().cast(),
            len: if buffer.is_null() { 0 } else { length },
            flags: ProcessPacketFlags::from_bits_retain(flags),
            // SAFETY: per this function's contract the callback runs at PASSIVE_LEVEL, and the
            // token lives no longer than the packet, which is not Send.
            passive: at_passive.then(|| unsafe { PassiveLevel::assume() }),
            redelivery: false,
        }
    }

    /// The in-band bytes, as a copying view over memory the host may change: copy them once,
    /// then validate the copy. The ring does not record the sender's unpadded length, so a
    /// device protocol carries its own length where it matters.
    ///
    /// IRQL: the callback's.
    #[must_use]
    pub fn data(&self) -> HostBytes<'_> {
        // SAFETY: KMCL's in-band bytes, valid until the packet is completed, which needs `self`.
        unsafe { HostBytes::from_raw(self.buffer, self.len as usize) }
    }

    /// Copies the in-band bytes into `out`; returns how many were copied (at most
    /// `out.len()`). Shorthand for `data().copy_to(out)`.
    ///
    /// IRQL: the callback's.
    pub fn copy_data(&self, out: &mut [u8]) -> usize {
        self.data().copy_to(out)
    }

    /// The `Flags` KMCL passed (`EXTERNAL_DATA` when the packet carries external data).
    ///
    /// IRQL: the callback's.
    #[must_use]
    pub fn flags(&self) -> ProcessPacketFlags {
        self.flags
    }

    /// A PASSIVE_LEVEL token when this delivery runs at PASSIVE_LEVEL: the channel delivers at
    /// passive ([`ChannelConfig::incoming_processing_at_passive`](crate::ChannelConfig::incoming_processing_at_passive)),
    /// or this is the redelivery of a packet the handler deferred with
    /// [`defer_to_passive`](Self::defer_to_passive). `None` at DISPATCH_LEVEL.
    ///
    /// IRQL: the callback's.
    #[must_use]
    pub fn passive_level(&self) -> Option<&PassiveLevel> {
        self.passive.as_ref()
    }

    /// The raw `VMBPACKETCOMPLETION`.
    ///
    /// IRQL: the callback's.
    #[must_use]
    pub fn as_raw(&self) -> sys::VMBPACKETCOMPLETION {
        self.completion
    }

    /// `VmbChannelPacketGetExternalData`: the MDL chain of the packet's external data.
    ///
    /// # Errors
    /// The KMCL status (e.g. `STATUS_INVALID_PARAMETER` when the packet has none).
    /// `STATUS_PENDING` is not an error: it is [`ExternalData::Pending`], after which this
    /// packet is not completed (KMCL delivers it again).
    ///
    /// IRQL: ≤ DISPATCH_LEVEL (in the callback).
    pub fn external_data(&mut self, flags: ExternalDataFlags) -> Result<ExternalData<'_>> {
        let get = slot(
            self.channel
                .interface()
                .raw()
                .VmbChannelPacketGetExternalData,
        )?;
        let mut mdl: sys::PMDL = ptr::null_mut();
        // SAFETY: this packet's completion context and a valid out pointer.
        let status = NtStatus(unsafe { get(self.completion, flags.bits(), &raw mut mdl) });
        if status == NtStatus::PENDING {
            self.redelivery = true;
            return Ok(ExternalData::Pending);
        }
        if status != NtStatus::SUCCESS {
            return Err(if status.is_success() {
                NtStatus::UNSUCCESSFUL
            } else {
                status
            });
        }
        match NonNull::new(mdl) {
            // SAFETY: KMCL's MDL chain, valid until this packet is completed (which needs
            // `self`, borrowed by the returned value).
            Some(mdl) => Ok(ExternalData::Mdl(unsafe { MdlChain::from_raw(mdl) })),
            None => Err(NtStatus::UNSUCCESSFUL),
        }
    }

    /// `VmbChannelPacketGetClientContext` (V2): the per-packet client context, as many bytes as
    /// configured with `ChannelConfig::client_context_size`. Driver memory (the host never sees
    /// it) that KMCL does not document as initialized, hence `MaybeUninit`.
    ///
    /// # Errors
    /// `STATUS_NOT_SUPPORTED` before V2 or when no context size was configured.
    ///
    /// IRQL: ≤ DISPATCH_LEVEL (in the callback).
    pub fn client_context(&mut self) -> Result<&mut [core::mem::MaybeUninit<u8>]> {
        let get = slot(
            self.channel
                .interface()
                .raw()
                .VmbChannelPacketGetClientContext,
        )?;
        let size = self.channel.client_context_size();
        if size == 0 {
            return Err(NtStatus::NOT_SUPPORTED);
        }
        // SAFETY: this packet's completion context.
        let context = unsafe { get(self.completion) };
        if context.is_null() {
            return Err(NtStatus::NOT_SUPPORTED);
        }
        // SAFETY: KMCL's per-packet context of the configured size, driver memory (the host
        // never sees it), exclusively this packet's until it is completed; `&mut self` keeps
        // it unique.
        Ok(unsafe {
            core::slice::from_raw_parts_mut(
                context.cast::<core::mem::MaybeUninit<u8>>(),
                size as usize,
            )
        })
    }

    /// `VmbChannelPacketComplete`: completes the packet, sending `response` to the opposite
    /// endpoint if it asked for a completion.
    ///
    /// # Errors
    /// `STATUS_INVALID_PARAMETER` for a response of 4 GiB or more (the packet is then completed
    /// with no response).
    ///
    /// IRQL: ≤ DISPATCH_LEVEL.
    pub fn complete(mut self, response: &[u8]) -> Result<()> {
        let (buffer, len, result) = response_parts(response);
        if let Some(completion) = self.take() {
            // SAFETY: this packet, consumed exactly once.
            unsafe { complete_raw(self.channel, completion, buffer, len) };
        }
        result
    }

    /// `VmbChannelPacketFail`: the packet could not be processed (KMCL tears the channel down).
    ///
    /// IRQL: ≤ DISPATCH_LEVEL.
    pub fn fail(mut self) {
        if let Some(completion) = self.take() {
            // SAFETY: this packet, consumed exactly once.
            unsafe { fail_raw(self.channel, completion) };
        }
    }

    /// `VmbChannelPacketDeferToPassive`: KMCL delivers this packet again at PASSIVE_LEVEL; that
    /// delivery offers [`passive_level`](Self::passive_level).
    ///
    /// IRQL: ≤ DISPATCH_LEVEL (the packet comes back at PASSIVE_LEVEL).
    pub fn defer_to_passive(mut self) {
        if let (Some(completion), Some(defer)) = (
            self.take(),
            self.channel
                .interface()
                .raw()
                .VmbChannelPacketDeferToPassive,
        ) {
            self.channel.remember_deferred(completion);
            // SAFETY: this packet, consumed exactly once.
            unsafe { defer(completion) };
        }
    }

    /// Keeps the packet for completion later, from any thread at ≤ DISPATCH_LEVEL (Microsoft's
    /// page for `VmbChannelPacketComplete`: "from the callback or later"). The returned
    /// [`PendedPacket`] is `Send` and holds a [`ChannelRef`], so it can go into a queue, a
    /// work item or a WDF request's context.
    ///
    /// When delivery stops first (pause, disable, host rescind), the crate cancels it after the
    /// handler's `suspend` callback (completing it with no response, since KMCL waits for every
    /// incoming packet then) and the `PendedPacket` reports `STATUS_CANCELLED`.
    ///
    /// # Errors
    /// Gives the packet back when the channel's pend table
    /// ([`ChannelConfig::max_pended_packets`](crate::ChannelConfig::max_pended_packets)) is
    /// full, when its external data is pending, or when it was already consumed.
    ///
    /// IRQL: ≤ DISPATCH_LEVEL.
    pub fn pend(mut self) -> core::result::Result<PendedPacket<H>, Self> {
        if self.redelivery || self.completion.is_null() {
            return Err(self);
        }
        let Some((index, pend_slot)) = self
            .channel
            .pended
            .iter()
            .enumerate()
            .find(|(_, s)| s.moved(SLOT_FREE, SLOT_CLAIMED))
        else {
            return Err(self);
        };
        let Some(completion) = self.take() else {
            pend_slot.state.store(SLOT_FREE);
            return Err(self);
        };
        // SAFETY: the slot is CLAIMED by this thread; nothing reads it until PENDED.
        unsafe {
            pend_slot.packet.get().write(Pended {
                completion,
                buffer: self.buffer,
                len: self.len,
                flags: self.flags,
            })
        };
        pend_slot.state.store(SLOT_PENDED);
        let pended = PendedPacket {
            channel: self.channel.new_ref(),
            index,
        };
        // A disable that started before the slot was published will not see it: cancel it here
        // (the SeqCst pair with `Channel::disable` makes one of the two see the other).
        if !self.channel.accepts_pended() {
            cancel_slot(self.channel, pend_slot);
        }
        Ok(pended)
    }

    /// Marks the packet consumed and returns its completion context, or `None` when it must
    /// not be completed (already consumed, or KMCL will deliver it again).
    fn take(&mut self) -> Option<sys::VMBPACKETCOMPLETION> {
        let completion = core::mem::replace(&mut self.completion, ptr::null_mut());
        (!completion.is_null() && !self.redelivery).then_some(completion)
    }
}

/// (buffer, length, result) for a response: a response of 4 GiB or more is dropped with
/// `STATUS_INVALID_PARAMETER`.
fn response_parts(response: &[u8]) -> (*mut c_void, u32, Result<()>) {
    match u32::try_from(response.len()) {
        Ok(len) => (response.as_ptr().cast_mut().cast::<c_void>(), len, Ok(())),
        Err(_) => (ptr::null_mut(), 0, Err(NtStatus::INVALID_PARAMETER)),
    }
}

/// `VmbChannelPacketComplete`.
///
/// # Safety
/// `completion` is an un-consumed packet of `channel`, consumed by this call.
unsafe fn complete_raw<H: ChannelHandler>(
    channel: &ChannelCore<H>,
    completion: sys::VMBPACKETCOMPLETION,
    buffer: *mut c_void,
    len: u32,
) {
    if let Some(complete) = channel.interface().raw().VmbChannelPacketComplete {
        // SAFETY: per this function's contract; KMCL copies the response.
        unsafe { complete(completion, buffer, len) };
    }
}

/// `VmbChannelPacketFail`.
///
/// # Safety
/// As [`complete_raw`].
unsafe fn fail_raw<H: ChannelHandler>(
    channel: &ChannelCore<H>,
    completion: sys::VMBPACKETCOMPLETION,
) {
    if let Some(fail) = channel.interface().raw().VmbChannelPacketFail {
        // SAFETY: per this function's contract.
        unsafe { fail(completion) };
    }
}

/// Completes the packet with no response if it was not consumed.
impl<H: ChannelHandler> Drop for IncomingPacket<'_, H> {
    fn drop(&mut self) {
        if let Some(completion) = self.take() {
            // SAFETY: this packet, consumed exactly once.
            unsafe { complete_raw(self.channel, completion, ptr::null_mut(), 0) };
        }
    }
}

impl<H: ChannelHandler> core::fmt::Debug for IncomingPacket<'_, H> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("IncomingPacket")
            .field("len", &self.len)
            .field("flags", &self.flags)
            .field("at_passive", &self.passive.is_some())
            .finish_non_exhaustive()
    }
}

// ---- pended packets ----

/// Pend-slot states.
const SLOT_FREE: u8 = 0;
/// Being filled by `pend`.
const SLOT_CLAIMED: u8 = 1;
/// Holds an un-consumed packet.
const SLOT_PENDED: u8 = 2;
/// Someone (the handle or the canceller) is using the packet.
const SLOT_BUSY: u8 = 3;
/// Disable failed the packet; the handle frees the slot.
const SLOT_CANCELLED: u8 = 4;

#[derive(Clone, Copy)]
struct Pended {
    completion: sys::VMBPACKETCOMPLETION,
    buffer: *const u8,
    len: u32,
    flags: ProcessPacketFlags,
}

/// A channel's slot for one pended packet.
pub(crate) struct PendSlot {
    state: StateWord,
    packet: UnsafeCell<Pended>,
}

// SAFETY: `packet` is written only in CLAIMED (before the SeqCst store of PENDED) and read only
// by the thread that moved the slot from PENDED to BUSY; the state machine gives one owner.
unsafe impl Sync for PendSlot {}

impl PendSlot {
    pub(crate) fn new() -> Self {
        Self {
            state: StateWord::new(SLOT_FREE),
            packet: UnsafeCell::new(Pended {
                completion: ptr::null_mut(),
                buffer: ptr::null(),
                len: 0,
                flags: ProcessPacketFlags::empty(),
            }),
        }
    }

    fn moved(&self, from: u8, to: u8) -> bool {
        self.state.moved(from, to)
    }

    /// Takes the slot from PENDED to BUSY, waiting while another user has it BUSY. `false` when
    /// the packet is gone (cancelled).
    fn lock(&self) -> bool {
        loop {
            if self.moved(SLOT_PENDED, SLOT_BUSY) {
                return true;
            }
            if self.state.load() != SLOT_BUSY {
                return false;
            }
            crate::spin::relax();
        }
    }

    fn packet(&self) -> Pended {
        // SAFETY: called only while this thread holds the slot BUSY.
        unsafe { self.packet.get().read() }
    }
}

/// Completes one pended packet with no response if it is still pended (the cancel pass). Not
/// `VmbChannelPacketFail`: that stops the channel's queue, and a pause must not.
fn cancel_slot<H: ChannelHandler>(channel: &ChannelCore<H>, slot: &PendSlot) {
    if slot.lock() {
        let packet = slot.packet();
        // SAFETY: BUSY is held; the packet is un-consumed and consumed here once.
        unsafe { complete_raw(channel, packet.completion, ptr::null_mut(), 0) };
        slot.state.store(SLOT_CANCELLED);
    }
}

/// Cancels every pended packet of the channel when delivery stops (after the handler's suspend
/// callback in a pause, disable or rescind).
pub(crate) fn cancel_pended<H: ChannelHandler>(channel: &ChannelCore<H>) {
    for slot in &channel.pended {
        cancel_slot(channel, slot);
    }
}

/// Marks packets still pended after `VmbChannelDisable` returned as cancelled without calling
/// KMCL: the channel is closed and KMCL has already released them (it waits for incoming packets
/// only as long as it chooses to), so completing them now would hand it a stale handle.
pub(crate) fn abandon_pended<H: ChannelHandler>(channel: &ChannelCore<H>) {
    for slot in &channel.pended {
        if slot.lock() {
            slot.state.store(SLOT_CANCELLED);
        }
    }
}

/// A received packet kept for completion later ([`IncomingPacket::pend`]): complete or fail it
/// from any thread at ≤ DISPATCH_LEVEL. Dropping it completes it with no response. If delivery
/// stopped first (pause, disable, rescind) and the handler's `suspend` did not complete it, the
/// crate cancelled it (completed with no response) and every call reports `STATUS_CANCELLED`.
///
/// Forgetting it keeps one pend slot and one channel reference (a leak); disable still cancels
/// the packet, so the channel closes.
pub struct PendedPacket<H: ChannelHandler> {
    channel: ChannelRef<H>,
    index: usize,
}

// SAFETY: a packet completion context may be completed from any thread ("or later", Microsoft's
// page for VmbChannelPacketComplete); the slot's state machine serialises access to it.
unsafe impl<H: ChannelHandler> Send for PendedPacket<H> {}
// SAFETY: every `&self` method takes the slot BUSY first.
unsafe impl<H: ChannelHandler> Sync for PendedPacket<H> {}

impl<H: ChannelHandler> PendedPacket<H> {
    fn slot(&self) -> Option<&PendSlot> {
        self.channel.pended.get(self.index)
    }

    /// Runs `f` on the packet while holding its slot BUSY, then releases the slot with `after`.
    fn with_packet<R>(&self, after: u8, f: impl FnOnce(Pended) -> R) -> Result<R> {
        let slot = self.slot().ok_or(NtStatus::CANCELLED)?;
        if !slot.lock() {
            return Err(NtStatus::CANCELLED);
        }
        let result = f(slot.packet());
        slot.state.store(after);
        Ok(result)
    }

    /// Length of the in-band bytes.
    ///
    /// # Errors
    /// `STATUS_CANCELLED` when disable cancelled the packet.
    ///
    /// IRQL: ≤ DISPATCH_LEVEL.
    pub fn data_len(&self) -> Result<usize> {
        self.with_packet(SLOT_PENDED, |packet| packet.len as usize)
    }

    /// Copies the in-band bytes into `out`; returns how many were copied. The bytes are host
    /// memory: validate the copy.
    ///
    /// # Errors
    /// `STATUS_CANCELLED` when disable cancelled the packet (its memory is gone).
    ///
    /// IRQL: ≤ DISPATCH_LEVEL.
    pub fn copy_data(&self, out: &mut [u8]) -> Result<usize> {
        self.with_packet(SLOT_PENDED, |packet| {
            // SAFETY: the packet is un-consumed (BUSY held), so KMCL keeps its bytes.
            unsafe { HostBytes::from_raw(packet.buffer, packet.len as usize) }.copy_to(out)
        })
    }

    /// The `Flags` KMCL passed with the packet.
    ///
    /// # Errors
    /// `STATUS_CANCELLED` when disable cancelled the packet.
    ///
    /// IRQL: ≤ DISPATCH_LEVEL.
    pub fn flags(&self) -> Result<ProcessPacketFlags> {
        self.with_packet(SLOT_PENDED, |packet| packet.flags)
    }

    /// `VmbChannelPacketComplete` with `response`.
    ///
    /// # Errors
    /// `STATUS_CANCELLED` when disable cancelled the packet; `STATUS_INVALID_PARAMETER` for a
    /// response of 4 GiB or more (completed with no response).
    ///
    /// IRQL: ≤ DISPATCH_LEVEL.
    pub fn complete(self, response: &[u8]) -> Result<()> {
        let (buffer, len, result) = response_parts(response);
        self.with_packet(SLOT_CANCELLED, |packet| {
            // SAFETY: BUSY is held; the packet is consumed here once (the slot then reads as
            // done, and drop frees it).
            unsafe { complete_raw(&self.channel, packet.completion, buffer, len) };
        })?;
        result
    }

    /// `VmbChannelPacketFail`.
    ///
    /// # Errors
    /// `STATUS_CANCELLED` when disable cancelled the packet.
    ///
    /// IRQL: ≤ DISPATCH_LEVEL.
    pub fn fail(self) -> Result<()> {
        self.with_packet(SLOT_CANCELLED, |packet| {
            // SAFETY: as in `complete`.
            unsafe { fail_raw(&self.channel, packet.completion) };
        })
    }

    /// The channel the packet came from.
    ///
    /// IRQL: any.
    #[must_use]
    pub fn channel(&self) -> &ChannelRef<H> {
        &self.channel
    }
}

/// Completes an un-consumed packet with no response, then frees the slot.
impl<H: ChannelHandler> Drop for PendedPacket<H> {
    fn drop(&mut self) {
        let _ = self.with_packet(SLOT_CANCELLED, |packet| {
            // SAFETY: as in `complete`.
            unsafe { complete_raw(&self.channel, packet.completion, ptr::null_mut(), 0) };
        });
        if let Some(slot) = self.slot() {
            // Consumed (by this handle or by disable): the slot is free again.
            slot.state.store(SLOT_FREE);
        }
    }
}

impl<H: ChannelHandler> core::fmt::Debug for PendedPacket<H> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("PendedPacket")
            .field("slot", &self.index)
            .finish_non_exhaustive()
    }
}
