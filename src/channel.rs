//! [`Channel`]: one KMCL channel (`VmbChannelAllocate` … `VmbChannelCleanup`), its init-time
//! [`ChannelConfig`], lifecycle (enable, pause, start, disable) and channel-wide settings.
//!
//! IRQL: the KMCL header annotates only `VmbChannelAllocate` (PASSIVE_LEVEL), the synchronous
//! request and the callbacks, and Microsoft's pages leave `req.irql` empty. Each method says
//! what is known; where nothing is documented it says so, and PASSIVE_LEVEL is always safe.

use core::cell::UnsafeCell;
use core::ffi::c_void;
use core::marker::PhantomPinned;
use core::pin::Pin;
use core::ptr;
use core::sync::atomic::{AtomicU8, Ordering};

use crate::callbacks;
use crate::flags::ChannelInitFlags;
use crate::handler::ChannelHandler;
use crate::interface::{InterfaceVersion, KmclInterface, slot};
use crate::routes;
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

/// Init-time settings of a channel, applied by [`Channel::new`] through the `VmbChannelInit*`
/// setters (which KMCL only accepts before the channel is enabled). Unset values keep KMCL's
/// defaults. Setters of a newer interface version than the one negotiated make `Channel::new`
/// fail with `STATUS_NOT_SUPPORTED`.
#[derive(Clone, Copy, Debug, Default)]
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
        }
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
    /// `primary` must outlive the channel created with this configuration: subchannels are
    /// closed before their primary.
    #[must_use]
    pub unsafe fn primary_channel<P: ChannelHandler>(
        mut self,
        primary: &Channel<P>,
        subchannel_index: u16,
    ) -> Self {
        self.primary_channel = Some((primary.handle, subchannel_index));
        self
    }
}

impl ChannelConfig {
    /// The documented ranges of the init setters, each reported as the
    /// `STATUS_INVALID_PARAMETER_n` of the offending setter argument.
    fn validate(&self) -> Result<()> {
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

/// Lifecycle states (stored in an `AtomicU8`).
const CREATED: u8 = 0;
const ENABLING: u8 = 1;
const ENABLED: u8 = 2;
const DISABLED: u8 = 3;

/// The state-change callback struct registered at enable; KMCL may keep a pointer to it, so it
/// lives in the pinned channel.
union StateCallbacks {
    v1: sys::VMB_CHANNEL_STATE_CHANGE_CALLBACKS,
    v5: sys::VMB_CHANNEL_STATE_CHANGE_CALLBACKS_V5,
}

/// One KMCL client channel, owning its `VMBCHANNEL` and the driver's handler `H`.
///
/// Create it with [`Channel::new`] (movable until enabled), pin it (`core::pin::pin!`,
/// `Box::pin`, or in place in a device context), then [`enable`](Self::enable) it: from then on
/// KMCL holds the channel's address for its callbacks, which is why enabling needs `Pin`.
///
/// Drop disables the channel if it is enabled (`VmbChannelDisable` waits until every callback
/// has returned and the channel is torn down) and then calls `VmbChannelCleanup`. Borrows
/// (GPADLs, outgoing packets not yet sent) keep the channel alive; packets in flight are
/// completed by KMCL during disable.
pub struct Channel<H: ChannelHandler> {
    interface: KmclInterface,
    handle: sys::VMBCHANNEL,
    handler: H,
    state: AtomicU8,
    client_context_size: u32,
    /// The configured maximum packet size in bytes, 0 when KMCL's default applies.
    maximum_packet_size: u32,
    callbacks: UnsafeCell<StateCallbacks>,
    _pinned: PhantomPinned,
}

// SAFETY: the KMCL channel handle may be used from any thread; `H: Sync` is required by the
// trait; `callbacks` is written only during the single ENABLING transition (guarded by `state`).
unsafe impl<H: ChannelHandler + Send> Send for Channel<H> {}
// SAFETY: as above; every `&self` method is a KMCL call that KMCL allows concurrently.
unsafe impl<H: ChannelHandler> Sync for Channel<H> {}

impl<H: ChannelHandler> Channel<H> {
    /// Allocates a channel on `parent` (`VmbChannelAllocate`, client side) and applies `config`.
    ///
    /// Also sizes the inline packet context to one pointer on V5, where [`PacketContext`]
    /// values travel inline in each packet.
    ///
    /// # Errors
    /// - `STATUS_INVALID_PARAMETER_n` for a setting outside its documented range (checked
    ///   before any KMCL call; `n` is the setter argument): zero ring pages, a maximum packet
    ///   size of 0 or over [`sys::KMCL_RING_BUFFER_MTU`], zero external data or chain length, a
    ///   zero packet count, subchannel index 0, bounce-buffer sizes not multiples of 4096.
    /// - `STATUS_NOT_SUPPORTED` for a setting the negotiated interface version lacks.
    /// - The failing KMCL status otherwise (e.g. `STATUS_INSUFFICIENT_RESOURCES`).
    ///
    /// Nothing is leaked on error.
    ///
    /// IRQL: PASSIVE_LEVEL.
    ///
    /// [`PacketContext`]: crate::PacketContext
    pub fn new(
        interface: &KmclInterface,
        parent: ParentDevice,
        config: &ChannelConfig,
        handler: H,
    ) -> Result<Self> {
        let allocate = slot(interface.raw().VmbChannelAllocate)?;
        let mut handle: sys::VMBCHANNEL = ptr::null_mut();
        // SAFETY: `parent` is valid by ParentDevice's contract; `handle` is a valid out pointer.
        NtStatus(unsafe { allocate(parent.as_raw(), 0, &raw mut handle) }).ok()?;
        if handle.is_null() {
            return Err(NtStatus::INSUFFICIENT_RESOURCES);
        }
        Self::configure(interface.clone(), handle, config, handler)
    }

    /// Like [`new`](Self::new), but the channel lives in caller storage (`VmbSizeofChannel`,
    /// `VmbChannelInitialize`; V5).
    ///
    /// # Errors
    /// `STATUS_NOT_SUPPORTED` before V5; `STATUS_BUFFER_TOO_SMALL` when `storage_len` is below
    /// [`channel_storage_size`]; then as [`new`](Self::new).
    ///
    /// # Safety
    /// `storage` points to `storage_len` writable bytes, aligned for a pointer, that stay valid
    /// and unused by anything else until the returned channel has been dropped.
    ///
    /// IRQL: PASSIVE_LEVEL.
    pub unsafe fn new_in_storage(
        interface: &KmclInterface,
        parent: ParentDevice,
        storage: ptr::NonNull<u8>,
        storage_len: usize,
        config: &ChannelConfig,
        handler: H,
    ) -> Result<Self> {
        let initialize = slot(interface.raw().VmbChannelInitialize)?;
        let needed = channel_storage_size(interface)?;
        let len = u32::try_from(storage_len).unwrap_or(u32::MAX);
        if len < needed {
            return Err(NtStatus::BUFFER_TOO_SMALL);
        }
        let handle = storage.as_ptr().cast::<sys::VMBCHANNEL__>();
        // SAFETY: caller storage of `len` bytes per this function's contract; `parent` is valid.
        NtStatus(unsafe { initialize(parent.as_raw(), 0, handle, len) }).ok()?;
        Self::configure(interface.clone(), handle, config, handler)
    }

    /// Wraps a fresh handle (so that drop cleans up on any later error) and applies `config`.
    fn configure(
        interface: KmclInterface,
        handle: sys::VMBCHANNEL,
        config: &ChannelConfig,
        handler: H,
    ) -> Result<Self> {
        let channel = Self {
            interface,
            handle,
            handler,
            state: AtomicU8::new(CREATED),
            client_context_size: config.client_context_size.unwrap_or(0),
            maximum_packet_size: config.maximum_packet_size.unwrap_or(0),
            callbacks: UnsafeCell::new(StateCallbacks {
                v1: sys::VMB_CHANNEL_STATE_CHANGE_CALLBACKS::INIT,
            }),
            _pinned: PhantomPinned,
        };
        channel.apply(config)?;
        Ok(channel)
    }

    /// Calls each configured `VmbChannelInit*` setter, after checking the documented ranges
    /// here so that KMCL never sees a value it would reject.
    fn apply(&self, config: &ChannelConfig) -> Result<()> {
        config.validate()?;
        let t = self.interface.raw();
        let h = self.handle;
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
        if self.interface.supports(InterfaceVersion::V5) {
            let f = slot(t.VmbChannelInitSetInlinePacketContextSize)?;
            // SAFETY: see above.
            NtStatus(unsafe { f(h, size_of::<*mut c_void>() as u32) }).ok()?;
        }
        Ok(())
    }

    /// Registers the callbacks with this channel's (now fixed) address and opens the channel
    /// (`VmbChannelEnable`). On V5 the Ex callbacks carry the channel as their context; before
    /// V5 the legacy callbacks find it through `VmbChannelSetPointer`.
    ///
    /// [`ChannelHandler::opened`], `started` and `post_started` run before this returns.
    ///
    /// # Errors
    /// `STATUS_INVALID_DEVICE_STATE` if the channel is already enabled (or being enabled);
    /// the failing KMCL status otherwise (including an error returned by `opened`). After an
    /// error the channel can be dropped or enabled again.
    ///
    /// IRQL: PASSIVE_LEVEL.
    pub fn enable(self: Pin<&Self>) -> Result<()> {
        let this = self.get_ref();
        let previous = this.state.load(Ordering::Acquire);
        if previous == ENABLING || previous == ENABLED {
            return Err(NtStatus::INVALID_DEVICE_STATE);
        }
        if this
            .state
            .compare_exchange(previous, ENABLING, Ordering::AcqRel, Ordering::Acquire)
            .is_err()
        {
            return Err(NtStatus::INVALID_DEVICE_STATE);
        }
        let result = this.register_and_enable();
        let next = if result.is_ok() { ENABLED } else { previous };
        this.state.store(next, Ordering::Release);
        result
    }

    /// The body of [`enable`](Self::enable), run in the ENABLING state.
    fn register_and_enable(&self) -> Result<()> {
        let t = self.interface.raw();
        let context = ptr::from_ref(self).cast_mut().cast::<c_void>();
        routes::publish(t);
        let set_pointer = slot(t.VmbChannelSetPointer)?;
        // SAFETY: stores this pinned channel's address on its own KMCL channel.
        unsafe { set_pointer(self.handle, context) };

        let set_state = slot(t.VmbChannelInitSetStateChangeCallbacks)?;
        let registered = self.callbacks.get();
        if self.interface.supports(InterfaceVersion::V5) {
            let v5 = callbacks::state_callbacks_v5::<H>(context);
            // SAFETY: ENABLING is held, so nothing else reads or writes `callbacks`.
            unsafe { registered.write(StateCallbacks { v5 }) };
            // SAFETY: a V5 struct passed as the V1 pointer type, told apart by Version/Size as
            // the header intends; it lives in the pinned channel.
            NtStatus(unsafe { set_state(self.handle, registered.cast()) }).ok()?;
            let set_packets = slot(t.VmbChannelInitSetProcessPacketCallbacksEx)?;
            // SAFETY: trampolines for `H` with this channel as their context.
            NtStatus(unsafe {
                set_packets(
                    self.handle,
                    context,
                    Some(callbacks::process_packet_ex::<H>),
                    Some(callbacks::processing_complete_ex::<H>),
                )
            })
            .ok()?;
        } else {
            let v1 = callbacks::state_callbacks_v1::<H>();
            // SAFETY: ENABLING is held, so nothing else reads or writes `callbacks`.
            unsafe { registered.write(StateCallbacks { v1 }) };
            // SAFETY: the V1 struct, living in the pinned channel.
            NtStatus(unsafe { set_state(self.handle, registered.cast()) }).ok()?;
            let set_packets = slot(t.VmbChannelInitSetProcessPacketCallbacks)?;
            // SAFETY: legacy trampolines for `H`; they find this channel via its pointer.
            NtStatus(unsafe {
                set_packets(
                    self.handle,
                    Some(callbacks::process_packet::<H>),
                    Some(callbacks::processing_complete::<H>),
                )
            })
            .ok()?;
        }
        let enable = slot(t.VmbChannelEnable)?;
        // SAFETY: a configured channel whose callbacks point at this pinned value.
        NtStatus(unsafe { enable(self.handle) }).ok()
    }

    /// Closes the channel (`VmbChannelDisable`), waiting until it is torn down: no callback of
    /// this channel runs after this returns, and KMCL has completed the packets in flight. A
    /// no-op when not enabled. The channel may be enabled again.
    ///
    /// IRQL: PASSIVE_LEVEL.
    pub fn disable(self: Pin<&Self>) {
        self.get_ref().disable_now();
    }

    pub(crate) fn disable_now(&self) {
        let was_enabled = self
            .state
            .compare_exchange(ENABLED, DISABLED, Ordering::AcqRel, Ordering::Acquire)
            .is_ok();
        if let (true, Some(disable)) = (was_enabled, self.interface.raw().VmbChannelDisable) {
            // SAFETY: an enabled channel; KMCL waits for its callbacks before returning.
            unsafe { disable(self.handle) };
        }
    }

    /// True between a successful [`enable`](Self::enable) and [`disable`](Self::disable).
    ///
    /// IRQL: any.
    #[must_use]
    pub fn is_enabled(&self) -> bool {
        self.state.load(Ordering::Acquire) == ENABLED
    }

    /// `VmbChannelPause`: stops packet delivery ([`ChannelHandler::suspend`] runs).
    /// IRQL: PASSIVE_LEVEL.
    ///
    /// # Errors
    /// `STATUS_INVALID_DEVICE_STATE` when the channel is not enabled.
    pub fn pause(&self) -> Result<()> {
        self.require_enabled()?;
        let f = slot(self.interface.raw().VmbChannelPause)?;
        // SAFETY: an enabled channel.
        unsafe { f(self.handle) };
        Ok(())
    }

    /// `VmbChannelStart`: resumes packet delivery after [`pause`](Self::pause)
    /// ([`ChannelHandler::started`] runs). IRQL: PASSIVE_LEVEL.
    ///
    /// # Errors
    /// `STATUS_INVALID_DEVICE_STATE` when the channel is not enabled.
    pub fn start(&self) -> Result<()> {
        self.require_enabled()?;
        let f = slot(self.interface.raw().VmbChannelStart)?;
        // SAFETY: an enabled channel.
        unsafe { f(self.handle) };
        Ok(())
    }

    pub(crate) fn require_enabled(&self) -> Result<()> {
        if self.is_enabled() {
            Ok(())
        } else {
            Err(NtStatus::INVALID_DEVICE_STATE)
        }
    }

    /// The driver's handler.
    ///
    /// IRQL: any.
    #[must_use]
    pub fn handler(&self) -> &H {
        &self.handler
    }

    /// The interface this channel was made from.
    ///
    /// IRQL: any.
    #[must_use]
    pub fn interface(&self) -> &KmclInterface {
        &self.interface
    }

    /// The raw `VMBCHANNEL`, for calls this crate does not wrap. Do not call
    /// `VmbChannelSetPointer` on it: the crate stores the channel's address there.
    #[must_use]
    pub fn as_raw(&self) -> sys::VMBCHANNEL {
        self.handle
    }

    /// Checks an in-band length against the configured maximum packet size (KMCL checks it
    /// too; checking here keeps the bad call away from KMCL).
    pub(crate) fn check_packet_len(&self, len: usize) -> Result<u32> {
        let len = u32::try_from(len).map_err(|_| NtStatus::INVALID_PARAMETER_3)?;
        if self.maximum_packet_size != 0 && len > self.maximum_packet_size {
            return Err(NtStatus::INVALID_PARAMETER_3);
        }
        Ok(len)
    }

    /// Bytes of per-incoming-packet client context configured.
    pub(crate) fn client_context_size(&self) -> u32 {
        self.client_context_size
    }

    /// `VmbChannelSetTransactionQuota`: at most `quota` incoming packets outstanding
    /// (delivered and not yet completed).
    ///
    /// # Errors
    /// `STATUS_NOT_SUPPORTED` if the slot is missing.
    ///
    /// IRQL: not documented by KMCL; PASSIVE_LEVEL is always safe.
    pub fn set_transaction_quota(&self, quota: u32) -> Result<()> {
        let f = slot(self.interface.raw().VmbChannelSetTransactionQuota)?;
        // SAFETY: a live channel and a plain value.
        unsafe { f(self.handle, quota) };
        Ok(())
    }

    /// `VmbChannelSetInterruptLatency`: sets the latency in microseconds, returns the previous
    /// one.
    ///
    /// # Errors
    /// The KMCL status.
    ///
    /// IRQL: not documented by KMCL; PASSIVE_LEVEL is always safe.
    pub fn set_interrupt_latency(&self, microseconds: u16) -> Result<u16> {
        let f = slot(self.interface.raw().VmbChannelSetInterruptLatency)?;
        let mut original = 0_u16;
        // SAFETY: a live channel and a valid out pointer.
        NtStatus(unsafe { f(self.handle, microseconds, &raw mut original) }).ok()?;
        Ok(original)
    }

    /// `VmbChannelSetIncomingProcessingAtPassive`: deliver incoming packets at PASSIVE_LEVEL
    /// (`true`) or DISPATCH_LEVEL (`false`).
    ///
    /// # Errors
    /// `STATUS_NOT_SUPPORTED` if the slot is missing.
    ///
    /// IRQL: not documented by KMCL; PASSIVE_LEVEL is always safe.
    pub fn set_incoming_processing_at_passive(&self, at_passive: bool) -> Result<()> {
        let f = slot(
            self.interface
                .raw()
                .VmbChannelSetIncomingProcessingAtPassive,
        )?;
        // SAFETY: a live channel and a BOOLEAN.
        unsafe { f(self.handle, u8::from(at_passive)) };
        Ok(())
    }

    /// `VmbChannelSetAllowableDpcCpuUsage` (V5): percentage of a CPU, 1..=100, the channel's
    /// DPCs may use.
    ///
    /// # Errors
    /// `STATUS_INVALID_PARAMETER_2` outside 1..=100; `STATUS_NOT_SUPPORTED` before V5.
    ///
    /// IRQL: not documented by KMCL; PASSIVE_LEVEL is always safe.
    pub fn set_allowable_dpc_cpu_usage(&self, percent: u8) -> Result<()> {
        let f = slot(self.interface.raw().VmbChannelSetAllowableDpcCpuUsage)?;
        if !(sys::KMCL_DPC_CPU_USAGE_MIN..=sys::KMCL_DPC_CPU_USAGE_MAX).contains(&percent) {
            return Err(NtStatus::INVALID_PARAMETER_2);
        }
        // SAFETY: a live channel and a value in range.
        unsafe { f(self.handle, percent) };
        Ok(())
    }

    /// `VmbChannelGetInterfaceInstance`: the instance GUID identifying the channel.
    ///
    /// # Errors
    /// `STATUS_NOT_SUPPORTED` if the slot is missing.
    ///
    /// IRQL: not documented by KMCL; PASSIVE_LEVEL is always safe.
    pub fn interface_instance(&self) -> Result<sys::GUID> {
        let f = slot(self.interface.raw().VmbChannelGetInterfaceInstance)?;
        let mut guid = core::mem::MaybeUninit::<sys::GUID>::zeroed();
        // SAFETY: a live channel and a GUID-sized out buffer.
        unsafe { f(self.handle, guid.as_mut_ptr()) };
        // SAFETY: zero-initialized, and GUID is plain integers, so any bytes are valid.
        Ok(unsafe { guid.assume_init() })
    }

    /// `VmbChannelGetMmioSpace`: the channel's MMIO range as (guest physical address, bytes);
    /// (0, 0) when it has none.
    ///
    /// # Errors
    /// `STATUS_NOT_SUPPORTED` if the slot is missing.
    ///
    /// IRQL: not documented by KMCL; PASSIVE_LEVEL is always safe.
    pub fn mmio_space(&self) -> Result<(u64, u64)> {
        let f = slot(self.interface.raw().VmbChannelGetMmioSpace)?;
        let (mut address, mut size) = (0_u64, 0_u64);
        // SAFETY: a live channel and two valid out pointers.
        unsafe { f(self.handle, &raw mut address, &raw mut size) };
        Ok((address, size))
    }

    /// `VmbChannelGetTargetDeviceObject` (V2).
    ///
    /// # Errors
    /// `STATUS_NOT_SUPPORTED` before V2.
    ///
    /// IRQL: not documented by KMCL; PASSIVE_LEVEL is always safe.
    pub fn target_device_object(&self) -> Result<sys::PDEVICE_OBJECT> {
        let f = slot(self.interface.raw().VmbChannelGetTargetDeviceObject)?;
        let mut device = ptr::null_mut();
        // SAFETY: a live channel and a valid out pointer.
        unsafe { f(self.handle, &raw mut device) };
        Ok(device)
    }

    /// `VmbChannelGetParentDeviceObject` (V2).
    ///
    /// # Errors
    /// `STATUS_NOT_SUPPORTED` before V2.
    ///
    /// IRQL: not documented by KMCL; PASSIVE_LEVEL is always safe.
    pub fn parent_device_object(&self) -> Result<sys::PDEVICE_OBJECT> {
        let f = slot(self.interface.raw().VmbChannelGetParentDeviceObject)?;
        let mut device = ptr::null_mut();
        // SAFETY: a live channel and a valid out pointer.
        unsafe { f(self.handle, &raw mut device) };
        Ok(device)
    }

    /// `VmbChannelAllocateBounceBuffer` (V3): grows the bounce buffer to `bytes`, a non-zero
    /// multiple of 4096.
    ///
    /// # Errors
    /// `STATUS_INVALID_PARAMETER_2` for 0 or a size that is not a page multiple (checked
    /// before calling KMCL); `STATUS_NOT_SUPPORTED` before V3; the KMCL status.
    ///
    /// IRQL: PASSIVE_LEVEL (allocates memory).
    pub fn allocate_bounce_buffer(&self, bytes: u32) -> Result<()> {
        let f = slot(self.interface.raw().VmbChannelAllocateBounceBuffer)?;
        if bytes == 0 || !bytes.is_multiple_of(sys::KMCL_PAGE_SIZE) {
            return Err(NtStatus::INVALID_PARAMETER_2);
        }
        // SAFETY: a live channel and a plain value.
        NtStatus(unsafe { f(self.handle, bytes) }).ok()
    }

    /// `VmbChannelSizeofPacket`: bytes of caller storage one packet needs.
    ///
    /// # Errors
    /// `STATUS_NOT_SUPPORTED` if the slot is missing.
    ///
    /// IRQL: ≤ DISPATCH_LEVEL.
    pub fn packet_storage_size(&self) -> Result<u32> {
        let f = slot(self.interface.raw().VmbChannelSizeofPacket)?;
        // SAFETY: a live channel.
        Ok(unsafe { f(self.handle) })
    }
}

/// `VmbSizeofChannel` (V5): bytes of caller storage [`Channel::new_in_storage`] needs.
///
/// # Errors
/// `STATUS_NOT_SUPPORTED` before V5.
///
/// IRQL: any.
pub fn channel_storage_size(interface: &KmclInterface) -> Result<u32> {
    let f = slot(interface.raw().VmbSizeofChannel)?;
    // SAFETY: takes no arguments.
    Ok(unsafe { f() })
}

impl<H: ChannelHandler> Drop for Channel<H> {
    fn drop(&mut self) {
        self.disable_now();
        if let Some(cleanup) = self.interface.raw().VmbChannelCleanup {
            // SAFETY: the channel is disabled (or was never enabled) and nothing borrows it;
            // cleanup disposes of both allocated and caller-storage channels.
            unsafe { cleanup(self.handle) };
        }
    }
}

impl<H: ChannelHandler> core::fmt::Debug for Channel<H> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Channel")
            .field("handle", &self.handle)
            .field("enabled", &self.is_enabled())
            .field("version", &self.interface.version())
            .finish_non_exhaustive()
    }
}
