//! Channel offers: the host side of a channel before, during and after a guest opens it (the
//! shared state; the public handle is `api::offer::Offer`).

use core::mem::MaybeUninit;
use core::ptr::NonNull;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};

use vmbus_kmcl::sys::{DEVICE_OBJECT, GUID, NTSTATUS};

use crate::base::event::lock;
use crate::base::status::{STATUS_DEVICE_BUSY, STATUS_DEVICE_REMOVED};
use crate::model::bus::Bus;
use crate::model::channel::Channel;
use crate::model::host::HostDevice;
use crate::model::registry::{self, Object};
use crate::ring::{Ring, RingCounters};

/// `IO_TYPE_DEVICE`.
const IO_TYPE_DEVICE: i16 = 3;

/// An emulator-owned `DEVICE_OBJECT` (zeroed, `Type` = 3, `Size` = its size).
pub(crate) struct DeviceObject(pub(crate) NonNull<DEVICE_OBJECT>);

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
    pub(crate) device_object: DeviceObject,
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

    pub(crate) fn rings(&self) -> Option<(Arc<Ring>, Arc<Ring>)> {
        lock(&self.state).rings.clone()
    }
}
