//! Channel offers: the host side of a channel before, during and after a guest opens it.

use core::mem::MaybeUninit;
use core::ptr::NonNull;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};

use vmbus_kmcl::sys::{DEVICE_OBJECT, GUID, NTSTATUS};

use crate::bus::Bus;
use crate::channel::{Channel, State};
use crate::event::{lock, wait_until};
use crate::gpadl::GpadlView;
use crate::host::{HostDevice, HostError, RawPacket};
use crate::registry::{self, Object};
use crate::ring::{Ring, RingCounters};
use crate::status::{STATUS_DEVICE_BUSY, STATUS_DEVICE_REMOVED};

/// `IO_TYPE_DEVICE`.
const IO_TYPE_DEVICE: i16 = 3;

/// An emulator-owned `DEVICE_OBJECT` (zeroed, `Type` = 3, `Size` = its size).
struct DeviceObject(NonNull<DEVICE_OBJECT>);

// SAFETY: the emulator never reads or writes the object after creating it; it only hands out
// its address (drivers may write to it, as to a real device object).
unsafe impl Send for DeviceObject {}
// SAFETY: see `Send`.
unsafe impl Sync for DeviceObject {}

impl DeviceObject {
    fn new() -> Self {
        // SAFETY: DEVICE_OBJECT is integers, raw pointers and a byte array: all-zero is valid.
        let mut d: DEVICE_OBJECT = unsafe { MaybeUninit::zeroed().assume_init() };
        d.Type = IO_TYPE_DEVICE;
        d.Size = u16::try_from(size_of::<DEVICE_OBJECT>()).unwrap_or(u16::MAX);
        Self(NonNull::from(Box::leak(Box::new(d))))
    }
}

impl Drop for DeviceObject {
    fn drop(&mut self) {
        // SAFETY: the pointer came from `Box::leak` in `new` and is freed once, here.
        drop(unsafe { Box::from_raw(self.0.as_ptr()) });
    }
}

/// Traffic counters of an offer: sums over every channel opened on it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct OfferCounters {
    /// The guest→host ring: `packets_written`/`bytes_written` are guest sends (and completions),
    /// `writer_signals` guest→host interrupts, `reader_signals` host "space freed" interrupts.
    pub guest_to_host: RingCounters,
    /// The host→guest ring, likewise from the host's point of view.
    pub host_to_guest: RingCounters,
    /// Times a guest channel opened on this offer.
    pub opens: u64,
    /// Guest→host interrupts the ring's signalling rule did not call for (see
    /// [`HostProfile`](crate::HostProfile)); 0 unless KMCL over-signals
    /// ([`Faults::spurious_guest_signals`](crate::Faults::spurious_guest_signals)).
    pub unneeded_guest_signals: u64,
}

fn add(a: &mut RingCounters, b: RingCounters) {
    a.writer_signals = a.writer_signals.wrapping_add(b.writer_signals);
    a.reader_signals = a.reader_signals.wrapping_add(b.reader_signals);
    a.packets_written = a.packets_written.wrapping_add(b.packets_written);
    a.bytes_written = a.bytes_written.wrapping_add(b.bytes_written);
    a.packets_read = a.packets_read.wrapping_add(b.packets_read);
    a.bytes_read = a.bytes_read.wrapping_add(b.bytes_read);
}

struct OfferState {
    device: Option<Box<dyn HostDevice>>,
    channel: Option<Weak<Channel>>,
    rings: Option<(Arc<Ring>, Arc<Ring>)>,
    totals: OfferCounters,
    rescinded: bool,
}

/// The shared state of an offer.
pub(crate) struct OfferShared {
    pub(crate) interface_type: GUID,
    pub(crate) instance: GUID,
    pub(crate) subchannel_index: u16,
    device_object: DeviceObject,
    state: Mutex<OfferState>,
    pub(crate) stalled: AtomicBool,
    /// Guest→host interrupts the signalling rule did not call for.
    pub(crate) unneeded_signals: AtomicU64,
}

impl OfferShared {
    pub(crate) fn new(
        bus: &Arc<Bus>,
        interface_type: GUID,
        instance: GUID,
        subchannel_index: u16,
        device: Box<dyn HostDevice>,
    ) -> Arc<Self> {
        let shared = Arc::new(Self {
            interface_type,
            instance,
            subchannel_index,
            device_object: DeviceObject::new(),
            state: Mutex::new(OfferState {
                device: Some(device),
                channel: None,
                rings: None,
                totals: OfferCounters::default(),
                rescinded: false,
            }),
            stalled: AtomicBool::new(false),
            unneeded_signals: AtomicU64::new(0),
        });
        registry::insert(
            shared.device_object_address(),
            Object::Device(Arc::downgrade(&shared), Arc::downgrade(bus)),
        );
        shared
    }

    pub(crate) fn device_object_address(&self) -> usize {
        self.device_object.0.as_ptr() as usize
    }

    /// Bus shutdown: the device object becomes invalid and the device is dropped (its host
    /// thread has been joined).
    pub(crate) fn unregister(&self) {
        drop(registry::retire(
            self.device_object_address(),
            "removed with its bus",
        ));
        let device = lock(&self.state).device.take();
        drop(device);
    }

    pub(crate) fn mark_rescinded(&self) {
        lock(&self.state).rescinded = true;
    }

    pub(crate) fn is_rescinded(&self) -> bool {
        lock(&self.state).rescinded
    }

    /// Takes the device for a channel that is opening.
    pub(crate) fn take_device(&self) -> Result<Box<dyn HostDevice>, NTSTATUS> {
        let mut st = lock(&self.state);
        if st.rescinded {
            return Err(STATUS_DEVICE_REMOVED);
        }
        if st.channel.as_ref().is_some_and(|w| w.strong_count() > 0) {
            return Err(STATUS_DEVICE_BUSY);
        }
        st.device.take().ok_or(STATUS_DEVICE_BUSY)
    }

    pub(crate) fn return_device(&self, device: Box<dyn HostDevice>) {
        lock(&self.state).device = Some(device);
    }

    pub(crate) fn attach(&self, ch: &Arc<Channel>, g2h: Arc<Ring>, h2g: Arc<Ring>) {
        let mut st = lock(&self.state);
        st.channel = Some(Arc::downgrade(ch));
        st.rings = Some((g2h, h2g));
        st.totals.opens = st.totals.opens.saturating_add(1);
    }

    pub(crate) fn detach(&self, handle: usize) {
        let mut st = lock(&self.state);
        let ours = st
            .channel
            .as_ref()
            .and_then(Weak::upgrade)
            .is_none_or(|c| c.handle == handle);
        if !ours {
            return;
        }
        st.channel = None;
        if let Some((g2h, h2g)) = st.rings.take() {
            add(&mut st.totals.guest_to_host, g2h.counters());
            add(&mut st.totals.host_to_guest, h2g.counters());
        }
    }

    pub(crate) fn channel(&self) -> Option<Arc<Channel>> {
        lock(&self.state).channel.as_ref().and_then(Weak::upgrade)
    }

    pub(crate) fn counters(&self) -> OfferCounters {
        let st = lock(&self.state);
        let mut c = st.totals;
        if let Some((g2h, h2g)) = &st.rings {
            add(&mut c.guest_to_host, g2h.counters());
            add(&mut c.host_to_guest, h2g.counters());
        }
        c.unneeded_guest_signals = self.unneeded_signals.load(Ordering::Relaxed);
        c
    }

    fn rings(&self) -> Option<(Arc<Ring>, Arc<Ring>)> {
        lock(&self.state).rings.clone()
    }
}

/// A channel offered by the emulated host; a handle to it (cheap to clone).
///
/// The guest opens it by allocating a channel on [`Offer::device_object`] (or by targeting its
/// interface type/instance with `VmbClientChannelInitSetTargetPnp`) and enabling it. The other
/// methods are the host's controls: rescind, stall, hostile writes, counters.
#[derive(Clone)]
pub struct Offer {
    shared: Arc<OfferShared>,
}

impl core::fmt::Debug for Offer {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Offer")
            .field("interface_type", &self.shared.interface_type)
            .field("instance", &self.shared.instance)
            .field("subchannel_index", &self.shared.subchannel_index)
            .finish_non_exhaustive()
    }
}

impl Offer {
    pub(crate) const fn from_shared(shared: Arc<OfferShared>) -> Self {
        Self { shared }
    }

    /// The device object to pass as `ParentDeviceObject` to `VmbChannelAllocate` /
    /// `VmbChannelInitialize`: an emulator-owned `DEVICE_OBJECT` (`Type` 3, `Size` = its size),
    /// valid while the bus lives. A channel allocated on it opens this offer unless
    /// `VmbClientChannelInitSetTargetPnp` retargets it.
    #[must_use]
    pub fn device_object(&self) -> *mut DEVICE_OBJECT {
        self.shared.device_object.0.as_ptr()
    }

    /// The interface type GUID.
    #[must_use]
    pub fn interface_type(&self) -> GUID {
        self.shared.interface_type
    }

    /// The interface instance GUID.
    #[must_use]
    pub fn interface_instance(&self) -> GUID {
        self.shared.instance
    }

    /// The subchannel index (0 for a primary offer).
    #[must_use]
    pub fn subchannel_index(&self) -> u16 {
        self.shared.subchannel_index
    }

    /// True once the offer was rescinded ([`Offer::rescind`] or bus shutdown). A rescinded offer
    /// is never opened again; offering the same interface type and instance again
    /// ([`Vmbus::offer`](crate::Vmbus::offer)) makes a new offer, which
    /// `VmbClientChannelInitSetTargetPnp` targets from then on.
    #[must_use]
    pub fn is_rescinded(&self) -> bool {
        self.shared.is_rescinded()
    }

    /// The guest→host ring of the channel open on the offer (inspection: control words such
    /// as `pending_send_sz` and the interrupt mask, counters), `None` when no channel is open.
    #[must_use]
    pub fn guest_to_host_ring(&self) -> Option<Arc<Ring>> {
        self.shared.rings().map(|(g2h, _)| g2h)
    }

    /// The host→guest ring of the channel open on the offer, as
    /// [`Offer::guest_to_host_ring`].
    #[must_use]
    pub fn host_to_guest_ring(&self) -> Option<Arc<Ring>> {
        self.shared.rings().map(|(_, h2g)| h2g)
    }

    /// True while a guest channel is open on the offer.
    #[must_use]
    pub fn is_open(&self) -> bool {
        self.shared.channel().is_some_and(|c| {
            matches!(
                lock(&c.inner).state,
                State::Running | State::Paused | State::Opening
            )
        })
    }

    /// Rescinds the offer. If a channel is open, the guest sees it closed by the host: its
    /// callback thread calls `EvtChannelSuspend` (if started) and `EvtChannelClosed`, completes
    /// outstanding sends with `STATUS_DEVICE_REMOVED`, and later sends fail. Waits (bounded by
    /// the drain timeout ×4) until the guest's Closed callback returned. Later enables fail with
    /// `STATUS_DEVICE_REMOVED`.
    ///
    /// A rescind while the guest is inside `VmbChannelEnable` returns at once: before the host
    /// sent its open result, the open fails with `STATUS_DEVICE_REMOVED` (the device, which had
    /// accepted the open, sees `on_close`); after it, the enable succeeds and the channel is then
    /// closed by the host as above, on the callback thread.
    pub fn rescind(&self) {
        self.shared.mark_rescinded();
        let Some(ch) = self.shared.channel() else {
            return;
        };
        {
            let mut inner = lock(&ch.inner);
            if !matches!(inner.state, State::Running | State::Paused) {
                return;
            }
            inner.host_close_requested = true;
        }
        ch.guest_event.signal();
        let timeout = ch.bus.config.drain_timeout.saturating_mul(4);
        let inner = lock(&ch.inner);
        let _ = wait_until(&ch.cv, inner, timeout, |i| {
            i.host_close_notified || matches!(i.state, State::Disabled | State::Initial)
        });
    }

    /// Stalls (`true`) or resumes the host's reading of its incoming ring. While stalled the
    /// guest→host ring fills, the guest sets `pending_send_sz`, and guest sends queue in order.
    pub fn stall(&self, stalled: bool) {
        self.shared.stalled.store(stalled, Ordering::SeqCst);
        if let Some(ch) = self.shared.channel() {
            ch.host_event.signal();
        }
    }

    fn open_channel(&self) -> Result<Arc<Channel>, HostError> {
        self.shared.channel().ok_or(HostError::NotOpen)
    }

    /// Sends an in-band packet to the guest as the host device would (queued if the ring is
    /// full); returns its host transaction ID (completions go to the device's `on_completion`).
    ///
    /// # Errors
    /// [`HostError::NotOpen`], [`HostError::TooLarge`], [`HostError::RingCorrupted`].
    pub fn host_send(&self, payload: &[u8], completion_requested: bool) -> Result<u64, HostError> {
        let ch = self.open_channel()?;
        crate::host::host_send(&ch, payload, None, completion_requested)
    }

    /// Sends a GPA-direct packet whose external data is a host buffer holding a copy of
    /// `external` (see [`HostChannel::send_with_external`](crate::HostChannel::send_with_external)).
    ///
    /// # Errors
    /// As for [`Offer::host_send`]; [`HostError::TooLarge`] for empty `external`.
    pub fn host_send_external(
        &self,
        payload: &[u8],
        external: &[u8],
        completion_requested: bool,
    ) -> Result<u64, HostError> {
        let ch = self.open_channel()?;
        crate::host::host_send(&ch, payload, Some(external), completion_requested)
    }

    /// Writes `raw` into the host→guest ring verbatim (descriptor fields as given, trailer
    /// appended), as a hostile host would. The guest validates it.
    ///
    /// # Errors
    /// [`HostError::NotOpen`], [`HostError::InvalidRawPacket`] (not a multiple of 8 or larger
    /// than the ring), [`HostError::RingFull`], [`HostError::RingCorrupted`].
    pub fn inject_raw_packet(&self, raw: &RawPacket) -> Result<(), HostError> {
        let ch = self.open_channel()?;
        crate::host::inject_raw(&ch, raw)
    }

    /// Sends a completion packet (type 0xB) for `transaction_id`, solicited or not (forged,
    /// duplicate, ID 0 …).
    ///
    /// # Errors
    /// As for [`Offer::inject_raw_packet`].
    pub fn inject_completion(&self, transaction_id: u64, payload: &[u8]) -> Result<(), HostError> {
        self.inject_raw_packet(&RawPacket::completion(transaction_id, payload))
    }

    /// Overwrites the host→guest ring's `write_index` with `value` (a wild index). The host
    /// never writes that ring again; the guest detects the corruption on its next read.
    ///
    /// # Errors
    /// [`HostError::NotOpen`].
    pub fn corrupt_incoming_write_index(&self, value: u32) -> Result<(), HostError> {
        let ch = self.open_channel()?;
        crate::host::poke_incoming_write_index(&ch, value)
    }

    /// Overwrites the guest→host ring's `read_index` with `value`. The host never reads that
    /// ring again; the guest's writer detects the corruption on its next send.
    ///
    /// # Errors
    /// [`HostError::NotOpen`].
    pub fn corrupt_outgoing_read_index(&self, value: u32) -> Result<(), HostError> {
        let ch = self.open_channel()?;
        crate::host::poke_outgoing_read_index(&ch, value)
    }

    /// The host's view of a GPADL of the open channel (see [`GpadlView`]).
    #[must_use]
    pub fn gpadl(&self, handle: u32) -> Option<GpadlView> {
        let ch = self.shared.channel()?;
        crate::gpadl::view(&ch, handle)
    }

    /// Transaction IDs of the guest's requests currently awaiting a completion, oldest first
    /// (lets a test complete, forge or duplicate them).
    #[must_use]
    pub fn pending_guest_transactions(&self) -> Vec<u64> {
        let Some(ch) = self.shared.channel() else {
            return Vec::new();
        };
        let inner = lock(&ch.inner);
        let mut ids: Vec<u64> = inner
            .tx
            .iter()
            .filter(|(_, t)| !matches!(t, crate::outgoing::Tx::Abandoned))
            .map(|(id, _)| *id)
            .collect();
        ids.sort_unstable();
        ids
    }

    /// Traffic counters (all channels ever opened on the offer).
    #[must_use]
    pub fn counters(&self) -> OfferCounters {
        self.shared.counters()
    }
}
