//! [`ChannelConfig`]: the init-time settings of a channel (the `VmbChannelInit*` setters), and
//! [`ParentDevice`], the device object a channel is created on.

use core::ffi::c_void;
use core::ptr;

use crate::callbacks;
use crate::channel::ChannelCore;
use crate::flags::ChannelInitFlags;
use crate::handler::ChannelHandler;
use crate::interface::{InterfaceVersion, KmclInterface, slot};
use crate::status::{NtStatus, Result};
use crate::sys;

/// The device object a channel is created on (`ParentDeviceObject` of `VmbChannelAllocate`):
/// in a KMDF client driver, the WDM device object of the driver's FDO.
#[derive(Clone, Copy, Debug)]
pub struct ParentDevice(sys::PDEVICE_OBJECT);

impl ParentDevice {
    /// Wraps a raw device object.
    ///
    /// # Safety
    /// `device` is a valid `DEVICE_OBJECT` (the FDO of a device enumerated by VMBus, or one the
    /// emulator hands out) that outlives every channel created on it.
    #[must_use]
    pub const unsafe fn from_raw(device: sys::PDEVICE_OBJECT) -> Self {
        Self(device)
    }

    /// The raw device object.
    ///
    /// IRQL: any.
    #[must_use]
    pub const fn as_raw(self) -> sys::PDEVICE_OBJECT {
        self.0
    }
}

/// Init-time settings of a channel, applied by [`Channel::new`](crate::Channel::new) through the `VmbChannelInit*`
/// setters (which KMCL only accepts before the channel is enabled). Unset values keep KMCL's
/// defaults. Setters of a newer interface version than the one negotiated make `Channel::new`
/// fail with `STATUS_NOT_SUPPORTED`.
#[derive(Clone, Copy, Debug)]
pub struct ChannelConfig {
    ring_buffer_pages: Option<(u32, u32)>,
    maximum_packet_size: Option<u32>,
    maximum_external_data: Option<(u32, u32)>,
    maximum_packet_count: Option<u32>,
    client_context_size: Option<u32>,
    friendly_name: Option<&'static [u16]>,
    flags: Option<ChannelInitFlags>,
    target_pnp: Option<(sys::GUID, Option<sys::GUID>)>,
    target_processor: Option<u32>,
    primary_channel: Option<(sys::VMBCHANNEL, u16)>,
    bounce_buffer_sizes: Option<(u32, u32, u32)>,
    incoming_processing_at_passive: bool,
    pub(crate) capacity: Capacity,
    pub(crate) kmcl_storage_in_channel: bool,
}

/// How many long-lived resources a channel can hold (its tables are allocated with it).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Capacity {
    pub(crate) gpadls: u16,
    pub(crate) packet_pools: u16,
    pub(crate) pended_packets: u16,
}

impl ChannelConfig {
    /// All KMCL defaults.
    #[must_use]
    pub const fn new() -> Self {
        Self {
            ring_buffer_pages: None,
            maximum_packet_size: None,
            maximum_external_data: None,
            maximum_packet_count: None,
            client_context_size: None,
            friendly_name: None,
            flags: None,
            target_pnp: None,
            target_processor: None,
            primary_channel: None,
            bounce_buffer_sizes: None,
            incoming_processing_at_passive: false,
            capacity: Capacity {
                gpadls: 4,
                packet_pools: 2,
                pended_packets: 16,
            },
            kmcl_storage_in_channel: false,
        }
    }

    /// At most `gpadls` GPADLs live on the channel at once (default 4). The table is
    /// allocated with the channel; creating one more fails with
    /// `STATUS_INSUFFICIENT_RESOURCES`.
    #[must_use]
    pub const fn max_gpadls(mut self, gpadls: u16) -> Self {
        self.capacity.gpadls = gpadls;
        self
    }

    /// At most `pools` packet pools attached to the channel (default 2).
    #[must_use]
    pub const fn max_packet_pools(mut self, pools: u16) -> Self {
        self.capacity.packet_pools = pools;
        self
    }

    /// At most `packets` incoming packets pended at once with
    /// [`IncomingPacket::pend`](crate::IncomingPacket::pend) (default 16).
    #[must_use]
    pub const fn max_pended_packets(mut self, packets: u16) -> Self {
        self.capacity.pended_packets = packets;
        self
    }

    /// V5: keep KMCL's channel object in the channel's own allocation
    /// (`VmbSizeofChannel` + `VmbChannelInitialize`) instead of KMCL's (`VmbChannelAllocate`).
    #[must_use]
    pub const fn kmcl_storage_in_channel(mut self, inline: bool) -> Self {
        self.kmcl_storage_in_channel = inline;
        self
    }

    pub(crate) const fn client_context_size_or_zero(&self) -> u32 {
        match self.client_context_size {
            Some(bytes) => bytes,
            None => 0,
        }
    }

    pub(crate) const fn maximum_packet_size_or_zero(&self) -> u32 {
        match self.maximum_packet_size {
            Some(bytes) => bytes,
            None => 0,
        }
    }

    /// Whether incoming packets are configured to arrive at PASSIVE_LEVEL.
    pub(crate) const fn at_passive(&self) -> bool {
        self.incoming_processing_at_passive
    }

    /// `VmbClientChannelInitSetRingBufferPageCount`: ring sizes in 4 KiB pages, incoming
    /// (host → guest) and outgoing (guest → host).
    #[must_use]
    pub const fn ring_buffer_pages(mut self, incoming_pages: u32, outgoing_pages: u32) -> Self {
        self.ring_buffer_pages = Some((incoming_pages, outgoing_pages));
        self
    }

    /// `VmbChannelInitSetMaximumPacketSize`: the largest packet in bytes (> 0, at most
    /// [`sys::KMCL_RING_BUFFER_MTU`]).
    #[must_use]
    pub const fn maximum_packet_size(mut self, bytes: u32) -> Self {
        self.maximum_packet_size = Some(bytes);
        self
    }

    /// `VmbChannelInitSetMaximumExternalData`: the largest external data in bytes and the
    /// longest MDL chain (both > 0).
    #[must_use]
    pub const fn maximum_external_data(mut self, bytes: u32, chain_length: u32) -> Self {
        self.maximum_external_data = Some((bytes, chain_length));
        self
    }

    /// `VmbChannelInitSetMaximumPacketCount` (V4): most outgoing packets in flight (> 0).
    #[must_use]
    pub const fn maximum_packet_count(mut self, packets: u32) -> Self {
        self.maximum_packet_count = Some(packets);
        self
    }

    /// `VmbChannelInitSetClientContextSize`: bytes of per-incoming-packet client context,
    /// reachable with `IncomingPacket::client_context` (V2).
    #[must_use]
    pub const fn client_context_size(mut self, bytes: u32) -> Self {
        self.client_context_size = Some(bytes);
        self
    }

    /// `VmbChannelInitSetFriendlyName`: a UTF-16 name for diagnostics (at most 32,767 code
    /// units).
    #[must_use]
    pub const fn friendly_name(mut self, name: &'static [u16]) -> Self {
        self.friendly_name = Some(name);
        self
    }

    /// `VmbChannelInitSetFlags`.
    #[must_use]
    pub const fn flags(mut self, flags: ChannelInitFlags) -> Self {
        self.flags = Some(flags);
        self
    }

    /// `VmbClientChannelInitSetTargetPnp`: open the offer of `interface_type` (and
    /// `interface_instance` when given) instead of the parent device's own; PnP failures reach
    /// [`ChannelHandler::pnp_failure`].
    #[must_use]
    pub const fn target_pnp(
        mut self,
        interface_type: sys::GUID,
        interface_instance: Option<sys::GUID>,
    ) -> Self {
        self.target_pnp = Some((interface_type, interface_instance));
        self
    }

    /// `VmbClientChannelInitSetTargetProcessorIndex` (V5): the processor to interrupt.
    #[must_use]
    pub const fn target_processor(mut self, processor_index: u32) -> Self {
        self.target_processor = Some(processor_index);
        self
    }

    /// `VmbChannelInitSetBounceBufferSizes` (V3): bounce-buffer sizes in bytes, each a multiple
    /// of 4096.
    #[must_use]
    pub const fn bounce_buffer_sizes(mut self, initial: u32, increment: u32, maximum: u32) -> Self {
        self.bounce_buffer_sizes = Some((initial, increment, maximum));
        self
    }

    /// `VmbChannelSetIncomingProcessingAtPassive(TRUE)` before enabling: incoming packets are
    /// delivered at PASSIVE_LEVEL.
    #[must_use]
    pub const fn incoming_processing_at_passive(mut self, at_passive: bool) -> Self {
        self.incoming_processing_at_passive = at_passive;
        self
    }

    /// `VmbChannelInitSetPrimaryChannel` (V5): make this channel subchannel `subchannel_index`
    /// (> 0) of `primary`.
    ///
    /// # Safety
    /// The primary channel must stay open (not torn down) for as long as the channel created
    /// with this configuration lives: subchannels are closed before their primary.
    #[must_use]
    pub unsafe fn primary_channel<P: ChannelHandler>(
        mut self,
        primary: &ChannelCore<P>,
        subchannel_index: u16,
    ) -> Self {
        self.primary_channel = Some((primary.as_raw(), subchannel_index));
        self
    }
}

impl ChannelConfig {
    /// The documented ranges of the init setters, each reported as the
    /// `STATUS_INVALID_PARAMETER_n` of the offending setter argument.
    pub(crate) fn validate(&self) -> Result<()> {
        let check = |ok: bool, status: NtStatus| if ok { Ok(()) } else { Err(status) };
        if let Some((incoming, outgoing)) = self.ring_buffer_pages {
            check(incoming > 0, NtStatus::INVALID_PARAMETER_2)?;
            check(outgoing > 0, NtStatus::INVALID_PARAMETER_3)?;
        }
        if let Some(bytes) = self.maximum_packet_size {
            check(
                (1..=sys::KMCL_RING_BUFFER_MTU).contains(&bytes),
                NtStatus::INVALID_PARAMETER_2,
            )?;
        }
        if let Some((bytes, chain)) = self.maximum_external_data {
            check(bytes > 0, NtStatus::INVALID_PARAMETER_2)?;
            check(chain > 0, NtStatus::INVALID_PARAMETER_3)?;
        }
        if let Some(count) = self.maximum_packet_count {
            check(count > 0, NtStatus::INVALID_PARAMETER_2)?;
        }
        if let Some((_, index)) = self.primary_channel {
            check(
                index >= sys::KMCL_SUBCHANNEL_INDEX_MIN,
                NtStatus::INVALID_PARAMETER_3,
            )?;
        }
        if let Some((initial, increment, maximum)) = self.bounce_buffer_sizes {
            let page = sys::KMCL_PAGE_SIZE;
            check(initial.is_multiple_of(page), NtStatus::INVALID_PARAMETER_2)?;
            check(
                increment.is_multiple_of(page),
                NtStatus::INVALID_PARAMETER_3,
            )?;
            check(
                maximum % page == 0 && maximum >= initial,
                NtStatus::INVALID_PARAMETER_4,
            )?;
        }
        Ok(())
    }
}

impl Default for ChannelConfig {
    fn default() -> Self {
        Self::new()
    }
}

impl ChannelConfig {
    /// Calls each configured `VmbChannelInit*` setter, after checking the documented ranges
    /// here so that KMCL never sees a value it would reject.
    pub(crate) fn apply<H: ChannelHandler>(
        &self,
        interface: &KmclInterface,
        h: sys::VMBCHANNEL,
    ) -> Result<()> {
        let config = self;
        config.validate()?;
        let t = interface.raw();
        // SAFETY (every call below): a KMCL setter on this live, not yet enabled channel, with
        // plain values or pointers to data that outlives the call.
        if let Some((incoming, outgoing)) = config.ring_buffer_pages {
            let f = slot(t.VmbClientChannelInitSetRingBufferPageCount)?;
            // SAFETY: see above.
            NtStatus(unsafe { f(h, incoming, outgoing) }).ok()?;
        }
        if let Some(bytes) = config.maximum_packet_size {
            let f = slot(t.VmbChannelInitSetMaximumPacketSize)?;
            // SAFETY: see above.
            NtStatus(unsafe { f(h, bytes) }).ok()?;
        }
        if let Some((bytes, chain)) = config.maximum_external_data {
            let f = slot(t.VmbChannelInitSetMaximumExternalData)?;
            // SAFETY: see above.
            NtStatus(unsafe { f(h, bytes, chain) }).ok()?;
        }
        if let Some(count) = config.maximum_packet_count {
            let f = slot(t.VmbChannelInitSetMaximumPacketCount)?;
            // SAFETY: see above.
            NtStatus(unsafe { f(h, count) }).ok()?;
        }
        if let Some(bytes) = config.client_context_size {
            let f = slot(t.VmbChannelInitSetClientContextSize)?;
            // SAFETY: see above.
            NtStatus(unsafe { f(h, bytes) }).ok()?;
        }
        if let Some(name) = config.friendly_name {
            let f = slot(t.VmbChannelInitSetFriendlyName)?;
            let bytes = u16::try_from(name.len().saturating_mul(2))
                .map_err(|_| NtStatus::INVALID_PARAMETER_2)?;
            let unicode = sys::UNICODE_STRING {
                Length: bytes,
                MaximumLength: bytes,
                Buffer: name.as_ptr().cast_mut(),
            };
            // SAFETY: see above; the name is 'static, KMCL only reads it.
            NtStatus(unsafe { f(h, &raw const unicode) }).ok()?;
        }
        if let Some(flags) = config.flags {
            let f = slot(t.VmbChannelInitSetFlags)?;
            // SAFETY: see above.
            NtStatus(unsafe { f(h, flags.bits()) }).ok()?;
        }
        if let Some((interface_type, instance)) = &config.target_pnp {
            let f = slot(t.VmbClientChannelInitSetTargetPnp)?;
            let instance = instance.as_ref().map_or(ptr::null(), ptr::from_ref);
            // SAFETY: see above; the GUIDs outlive the call.
            NtStatus(unsafe {
                f(
                    h,
                    interface_type,
                    instance,
                    Some(callbacks::pnp_failure::<H>),
                )
            })
            .ok()?;
        }
        if let Some(index) = config.target_processor {
            let f = slot(t.VmbClientChannelInitSetTargetProcessorIndex)?;
            // SAFETY: see above.
            NtStatus(unsafe { f(h, index) }).ok()?;
        }
        if let Some((primary, index)) = config.primary_channel {
            let f = slot(t.VmbChannelInitSetPrimaryChannel)?;
            // SAFETY: see above; `primary` is live per `ChannelConfig::primary_channel`.
            NtStatus(unsafe { f(h, primary, index) }).ok()?;
        }
        if let Some((initial, increment, maximum)) = config.bounce_buffer_sizes {
            let f = slot(t.VmbChannelInitSetBounceBufferSizes)?;
            // SAFETY: see above.
            NtStatus(unsafe { f(h, initial, increment, maximum) }).ok()?;
        }
        if config.incoming_processing_at_passive {
            let f = slot(t.VmbChannelSetIncomingProcessingAtPassive)?;
            // SAFETY: see above.
            unsafe { f(h, 1) };
        }
        if interface.supports(InterfaceVersion::V5) {
            let f = slot(t.VmbChannelInitSetInlinePacketContextSize)?;
            // SAFETY: see above.
            NtStatus(unsafe { f(h, size_of::<*mut c_void>() as u32) }).ok()?;
        }
        Ok(())
    }
}
