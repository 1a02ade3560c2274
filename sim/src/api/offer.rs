//! [`Offer`]: the public handle to a channel the emulated host offers, and the host's controls
//! over it (rescind, stall, hostile writes, counters).

use std::sync::Arc;
use std::sync::atomic::Ordering;

use vmbus_kmcl::sys::{DEVICE_OBJECT, GUID};

use crate::base::event::{lock, wait_until};
use crate::model::channel::{Channel, State};
use crate::model::gpadl::GpadlView;
use crate::model::host::{HostError, RawPacket};
use crate::model::offer::{OfferCounters, OfferShared};
use crate::ring::Ring;

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
        crate::model::host::host_send(&ch, payload, None, completion_requested)
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
        crate::model::host::host_send(&ch, payload, Some(external), completion_requested)
    }

    /// Writes `raw` into the host→guest ring verbatim (descriptor fields as given, trailer
    /// appended), as a hostile host would. The guest validates it.
    ///
    /// # Errors
    /// [`HostError::NotOpen`], [`HostError::InvalidRawPacket`] (not a multiple of 8 or larger
    /// than the ring), [`HostError::RingFull`], [`HostError::RingCorrupted`].
    pub fn inject_raw_packet(&self, raw: &RawPacket) -> Result<(), HostError> {
        let ch = self.open_channel()?;
        crate::model::host::inject_raw(&ch, raw)
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
        crate::model::host::poke_incoming_write_index(&ch, value)
    }

    /// Overwrites the guest→host ring's `read_index` with `value`. The host never reads that
    /// ring again; the guest's writer detects the corruption on its next send.
    ///
    /// # Errors
    /// [`HostError::NotOpen`].
    pub fn corrupt_outgoing_read_index(&self, value: u32) -> Result<(), HostError> {
        let ch = self.open_channel()?;
        crate::model::host::poke_outgoing_read_index(&ch, value)
    }

    /// The host's view of a GPADL of the open channel (see [`GpadlView`]).
    #[must_use]
    pub fn gpadl(&self, handle: u32) -> Option<GpadlView> {
        let ch = self.shared.channel()?;
        crate::model::gpadl::view(&ch, handle)
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
            .filter(|(_, t)| !matches!(t, crate::model::outgoing::Tx::Abandoned))
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
