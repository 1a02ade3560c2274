//! [`IncomingPacket`]: a packet from the opposite endpoint, handed to
//! [`ChannelHandler::process_packet`](crate::ChannelHandler::process_packet), which must be
//! completed exactly once (`VmbChannelPacketComplete`), failed or deferred.

use core::ffi::c_void;
use core::marker::PhantomData;
use core::ptr::NonNull;

use crate::channel::Channel;
use crate::flags::{ExternalDataFlags, ProcessPacketFlags};
use crate::handler::ChannelHandler;
use crate::interface::{KmclInterface, slot};
use crate::mdl::MdlChain;
use crate::status::{NtStatus, Result};
use crate::sys;

/// A packet received on a channel. Consuming it with [`complete`](Self::complete),
/// [`fail`](Self::fail) or [`defer_to_passive`](Self::defer_to_passive) releases its ring
/// slot; dropping it un-completed completes it with no response, so a packet is never leaked.
/// The one exception is [`ExternalData::Pending`]: KMCL will deliver the packet again, so the
/// packet is then released without completion.
pub struct IncomingPacket<'a> {
    interface: &'a KmclInterface,
    completion: sys::VMBPACKETCOMPLETION,
    data: &'a [u8],
    flags: ProcessPacketFlags,
    client_context_size: u32,
    /// Set when KMCL will deliver this packet again (external data pending).
    redelivery: bool,
    _not_send: PhantomData<*mut u8>,
}

/// The external data of a packet (`VmbChannelPacketGetExternalData`).
#[derive(Debug)]
pub enum ExternalData<'a> {
    /// The MDL chain describing the data, valid until the packet is completed.
    Mdl(MdlChain<'a>),
    /// `STATUS_PENDING`: return from the callback; KMCL calls it again for this packet.
    Pending,
}

impl<'a> IncomingPacket<'a> {
    /// # Safety
    /// The arguments of one `EvtVmbChannelProcessPacket[Ex]` call for `channel`.
    pub(crate) unsafe fn from_raw<H: ChannelHandler>(
        channel: &'a Channel<H>,
        completion: sys::VMBPACKETCOMPLETION,
        buffer: *mut c_void,
        length: u32,
        flags: u32,
    ) -> Self {
        let data: &[u8] = if buffer.is_null() || length == 0 {
            &[]
        } else {
            // SAFETY: KMCL's in-band bytes, valid until the packet is completed.
            unsafe { core::slice::from_raw_parts(buffer.cast::<u8>(), length as usize) }
        };
        Self {
            interface: channel.interface(),
            completion,
            data,
            flags: ProcessPacketFlags::from_bits_retain(flags),
            client_context_size: channel.client_context_size(),
            redelivery: false,
            _not_send: PhantomData,
        }
    }

    /// The in-band bytes. The ring does not record the sender's unpadded length, so a device
    /// protocol carries its own length where it matters.
    ///
    /// IRQL: the callback's (≤ DISPATCH_LEVEL).
    #[must_use]
    pub fn data(&self) -> &'a [u8] {
        self.data
    }

    /// The `Flags` KMCL passed (`EXTERNAL_DATA` when the packet carries external data).
    ///
    /// IRQL: the callback's.
    #[must_use]
    pub fn flags(&self) -> ProcessPacketFlags {
        self.flags
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
        let get = slot(self.interface.raw().VmbChannelPacketGetExternalData)?;
        let mut mdl: sys::PMDL = core::ptr::null_mut();
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
    /// configured with `ChannelConfig::client_context_size`.
    ///
    /// # Errors
    /// `STATUS_NOT_SUPPORTED` before V2 or when no context size was configured.
    ///
    /// IRQL: ≤ DISPATCH_LEVEL (in the callback).
    pub fn client_context(&mut self) -> Result<&mut [u8]> {
        let get = slot(self.interface.raw().VmbChannelPacketGetClientContext)?;
        if self.client_context_size == 0 {
            return Err(NtStatus::NOT_SUPPORTED);
        }
        // SAFETY: this packet's completion context.
        let context = unsafe { get(self.completion) };
        if context.is_null() {
            return Err(NtStatus::NOT_SUPPORTED);
        }
        // SAFETY: KMCL's per-packet context of the configured size, exclusively this packet's
        // until it is completed; `&mut self` keeps it unique.
        Ok(unsafe {
            core::slice::from_raw_parts_mut(context.cast::<u8>(), self.client_context_size as usize)
        })
    }

    /// `VmbChannelPacketComplete`: completes the packet, sending `response` to the opposite
    /// endpoint if it asked for a completion.
    ///
    /// # Errors
    /// `STATUS_INVALID_PARAMETER` for a response over 4 GiB (the packet is then completed
    /// with no response).
    ///
    /// IRQL: ≤ DISPATCH_LEVEL.
    pub fn complete(mut self, response: &[u8]) -> Result<()> {
        let len = u32::try_from(response.len());
        let (buffer, len, result) = match len {
            Ok(len) => (response.as_ptr().cast_mut().cast::<c_void>(), len, Ok(())),
            Err(_) => (core::ptr::null_mut(), 0, Err(NtStatus::INVALID_PARAMETER)),
        };
        self.complete_raw(buffer, len);
        result
    }

    /// `VmbChannelPacketFail`: the packet could not be processed (KMCL tears the channel down).
    ///
    /// IRQL: ≤ DISPATCH_LEVEL.
    pub fn fail(mut self) {
        if let (Some(completion), Some(fail)) =
            (self.take(), self.interface.raw().VmbChannelPacketFail)
        {
            // SAFETY: this packet, consumed exactly once.
            unsafe { fail(completion) };
        }
    }

    /// `VmbChannelPacketDeferToPassive`: KMCL delivers this packet again at PASSIVE_LEVEL.
    ///
    /// IRQL: ≤ DISPATCH_LEVEL (the packet comes back at PASSIVE_LEVEL).
    pub fn defer_to_passive(mut self) {
        if let (Some(completion), Some(defer)) = (
            self.take(),
            self.interface.raw().VmbChannelPacketDeferToPassive,
        ) {
            // SAFETY: this packet, consumed exactly once.
            unsafe { defer(completion) };
        }
    }

    /// Marks the packet consumed and returns its completion context, or `None` when it must
    /// not be completed (already consumed, or KMCL will deliver it again).
    fn take(&mut self) -> Option<sys::VMBPACKETCOMPLETION> {
        let completion = core::mem::replace(&mut self.completion, core::ptr::null_mut());
        (!completion.is_null() && !self.redelivery).then_some(completion)
    }

    fn complete_raw(&mut self, buffer: *mut c_void, len: u32) {
        if let (Some(completion), Some(complete)) =
            (self.take(), self.interface.raw().VmbChannelPacketComplete)
        {
            // SAFETY: this packet, consumed exactly once; KMCL copies the response.
            unsafe { complete(completion, buffer, len) };
        }
    }
}

/// Completes the packet with no response if it was not consumed.
impl Drop for IncomingPacket<'_> {
    fn drop(&mut self) {
        self.complete_raw(core::ptr::null_mut(), 0);
    }
}

impl core::fmt::Debug for IncomingPacket<'_> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("IncomingPacket")
            .field("len", &self.data.len())
            .field("flags", &self.flags)
            .finish_non_exhaustive()
    }
}
