//! The emulated VMBus and its `vmbkmcl.sys`: configuration, the interface query, offers,
//! verifier and fault injection.

use core::ffi::c_void;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use vmbus_kmcl::sys::{
    GUID, Guid, INTERFACE, KMCL_CLIENT_INTERFACE_V1, KMCL_CLIENT_INTERFACE_V2,
    KMCL_CLIENT_INTERFACE_V3, KMCL_CLIENT_INTERFACE_V4, KMCL_CLIENT_INTERFACE_V5, NTSTATUS,
};

use crate::channel::Channel;
use crate::event::lock;
use crate::host::HostDevice;
use crate::offer::{Offer, OfferShared};
use crate::profile::HostProfile;
use crate::registry::{self, Object};
use crate::slot::{Slot, SlotReturn};
use crate::status::{STATUS_INVALID_PARAMETER, STATUS_NOT_SUPPORTED, STATUS_SUCCESS};
use crate::verifier::{Counter, VerifierReport, VerifierState, Violation, ViolationKind};

/// A KMCL client interface version (`KMCL_CLIENT_INTERFACE_VERSION_Vn`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum InterfaceVersion {
    /// V1: 41 slots, 360 bytes (Windows 10 1803).
    V1 = 1,
    /// V2: 44 slots, 384 bytes (1809).
    V2 = 2,
    /// V3: 46 slots, 400 bytes (1903).
    V3 = 3,
    /// V4: 48 slots, 416 bytes (1903).
    V4 = 4,
    /// V5: 57 slots, 488 bytes (2004).
    V5 = 5,
}

impl InterfaceVersion {
    /// Every version, oldest first.
    pub const ALL: [Self; 5] = [Self::V1, Self::V2, Self::V3, Self::V4, Self::V5];

    /// The `KMCL_CLIENT_INTERFACE_VERSION_Vn` number.
    #[must_use]
    pub const fn number(self) -> u16 {
        self as u16
    }

    /// The version with this number, if any.
    #[must_use]
    pub const fn from_number(n: u16) -> Option<Self> {
        match n {
            1 => Some(Self::V1),
            2 => Some(Self::V2),
            3 => Some(Self::V3),
            4 => Some(Self::V4),
            5 => Some(Self::V5),
            _ => None,
        }
    }

    /// `sizeof(KMCL_CLIENT_INTERFACE_Vn)` in bytes.
    #[must_use]
    pub const fn struct_size(self) -> usize {
        match self {
            Self::V1 => size_of::<KMCL_CLIENT_INTERFACE_V1>(),
            Self::V2 => size_of::<KMCL_CLIENT_INTERFACE_V2>(),
            Self::V3 => size_of::<KMCL_CLIENT_INTERFACE_V3>(),
            Self::V4 => size_of::<KMCL_CLIENT_INTERFACE_V4>(),
            Self::V5 => size_of::<KMCL_CLIENT_INTERFACE_V5>(),
        }
    }
}

/// Configuration of an emulated bus. `Default` is a V5 bus with the defaults below.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct VmbusConfig {
    /// Highest interface version the bus offers (queries for higher versions fail).
    pub version: InterfaceVersion,
    /// Default data pages of each ring of a channel (default 16 = 64 KiB each way).
    pub ring_pages: u32,
    /// Default maximum in-band packet size in bytes (default 4096).
    pub max_packet_size: u32,
    /// Default maximum number of `VmbPacketAllocate` packets alive per channel (default 256).
    pub max_packet_count: u32,
    /// Default maximum external data per packet in bytes (default 1 MiB).
    pub max_external_data: u32,
    /// Default maximum MDL chain length per packet (default 16).
    pub max_external_chain: u32,
    /// How long disable/pause/rescind wait for the driver to complete incoming packets and for
    /// callbacks to finish before they force-release and record a violation (default 2 s).
    pub drain_timeout: Duration,
    /// Longest wait of a `VmbChannelSendSynchronousRequest` with a null (infinite) timeout;
    /// after it the request is cancelled (default 30 s).
    pub infinite_wait_cap: Duration,
    /// The host implementation the emulator imitates (default [`HostProfile::Default`], the
    /// behaviour of earlier versions).
    pub host_profile: HostProfile,
}

impl VmbusConfig {
    /// The defaults with `version`.
    #[must_use]
    pub fn new(version: InterfaceVersion) -> Self {
        Self {
            version,
            ..Self::default()
        }
    }

    /// The same configuration imitating `profile`.
    #[must_use]
    pub const fn with_host_profile(mut self, profile: HostProfile) -> Self {
        self.host_profile = profile;
        self
    }
}

impl Default for VmbusConfig {
    fn default() -> Self {
        Self {
            version: InterfaceVersion::V5,
            ring_pages: 16,
            max_packet_size: 4096,
            max_packet_count: 256,
            max_external_data: 1 << 20,
            max_external_chain: 16,
            drain_timeout: Duration::from_secs(2),
            infinite_wait_cap: Duration::from_secs(30),
            host_profile: HostProfile::Default,
        }
    }
}

#[derive(Debug, Default)]
pub(crate) struct FaultState {
    armed: Vec<(Slot, u32, NTSTATUS)>,
    pub(crate) defer_external: bool,
    pub(crate) completion_status: Option<NTSTATUS>,
}

#[derive(Default)]
pub(crate) struct BusState {
    pub(crate) offers: Vec<Arc<OfferShared>>,
    pub(crate) channels: Vec<Weak<Channel>>,
    pub(crate) references: i64,
    pub(crate) shut_down: bool,
}

/// The shared state of one bus.
pub(crate) struct Bus {
    pub(crate) config: VmbusConfig,
    /// The interface `Context` value (a synthetic handle).
    pub(crate) context: usize,
    pub(crate) state: Mutex<BusState>,
    verifier: Mutex<VerifierState>,
    pub(crate) faults: Mutex<FaultState>,
    /// `Faults::spurious_guest_signals` (an atomic: it is read on every guest send).
    pub(crate) spurious_signals: AtomicBool,
}

impl Bus {
    pub(crate) fn record(&self, v: Violation) {
        lock(&self.verifier).record(v);
    }

    pub(crate) fn violation(
        &self,
        slot: &'static str,
        kind: ViolationKind,
        message: impl Into<String>,
        handle: usize,
    ) {
        self.record(Violation {
            slot,
            kind,
            message: message.into(),
            handle,
            irql: None,
        });
    }

    pub(crate) fn bump(&self, c: Counter) {
        lock(&self.verifier).bump(c);
    }

    /// The injected fault for this call of `slot`, if one is due (counts the call).
    pub(crate) fn fault(&self, slot: Slot) -> Option<NTSTATUS> {
        let mut f = lock(&self.faults);
        let pos = f.armed.iter().position(|(s, _, _)| *s == slot)?;
        let entry = f.armed.get_mut(pos)?;
        entry.1 = entry.1.saturating_sub(1);
        if entry.1 == 0 {
            let status = entry.2;
            f.armed.remove(pos);
            Some(status)
        } else {
            None
        }
    }

    pub(crate) fn find_offer(
        &self,
        interface_type: &GUID,
        instance: Option<&GUID>,
        subchannel: u16,
    ) -> Option<Arc<OfferShared>> {
        lock(&self.state)
            .offers
            .iter()
            .find(|o| {
                Guid(o.interface_type) == Guid(*interface_type)
                    && !o.is_rescinded()
                    && instance.is_none_or(|i| Guid(*i) == Guid(o.instance))
                    && o.subchannel_index == subchannel
            })
            .cloned()
    }

    pub(crate) fn add_channel(&self, ch: &Arc<Channel>) {
        let mut st = lock(&self.state);
        st.channels.retain(|w| w.strong_count() > 0);
        st.channels.push(Arc::downgrade(ch));
    }

    pub(crate) fn forget_channel(&self, ch: &Channel) {
        lock(&self.state)
            .channels
            .retain(|w| !core::ptr::eq(w.as_ptr(), ch));
    }

    pub(crate) fn reference(&self, delta: i64, slot: &'static str) {
        let mut st = lock(&self.state);
        let next = st.references.saturating_add(delta);
        if next < 0 {
            drop(st);
            self.violation(
                slot,
                ViolationKind::ReferenceUnderflow,
                "InterfaceDereference without a matching reference",
                self.context,
            );
        } else {
            st.references = next;
        }
    }

    fn report(&self) -> VerifierReport {
        let (channels, references) = {
            let st = lock(&self.state);
            let chs: Vec<Arc<Channel>> = st.channels.iter().filter_map(Weak::upgrade).collect();
            (chs, st.references)
        };
        let mut report = VerifierReport {
            interface_references: references,
            ..VerifierReport::default()
        };
        for ch in &channels {
            ch.add_to_report(&mut report);
        }
        let v = lock(&self.verifier);
        report.violations = v.violations.clone();
        report.counters = v.counters;
        report
    }
}

/// One emulated VMBus with its KMCL (`vmbkmcl.sys`).
///
/// Create it, offer channels with [`Vmbus::offer`], hand the driver under test the interface
/// ([`Vmbus::query_interface`] or [`Vmbus::client_interface_v5`] …) and the offer's device
/// object, then check [`Vmbus::verifier`]. Dropping the bus (or [`Vmbus::shutdown`]) stops every
/// thread without calling back into the driver.
pub struct Vmbus {
    bus: Arc<Bus>,
}

impl core::fmt::Debug for Vmbus {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Vmbus")
            .field("version", &self.bus.config.version)
            .field("context", &self.bus.context)
            .finish_non_exhaustive()
    }
}

impl Vmbus {
    /// Creates a bus. The calling thread's violations about foreign handles are attributed to
    /// it from now on. Installs the IRQL model as the library's probe
    /// ([`install_irql_model`](crate::install_irql_model)) if nothing installed it yet.
    #[must_use]
    pub fn new(config: VmbusConfig) -> Self {
        crate::irql::install_irql_model();
        let bus = Arc::new(Bus {
            config,
            context: registry::synthetic_handle(),
            state: Mutex::new(BusState::default()),
            verifier: Mutex::new(VerifierState::default()),
            faults: Mutex::new(FaultState::default()),
            spurious_signals: AtomicBool::new(false),
        });
        registry::insert(bus.context, Object::Interface(Arc::downgrade(&bus)));
        registry::set_current_bus(&bus);
        Self { bus }
    }

    /// The configured interface version.
    #[must_use]
    pub fn version(&self) -> InterfaceVersion {
        self.bus.config.version
    }

    /// The configuration.
    #[must_use]
    pub fn config(&self) -> &VmbusConfig {
        &self.bus.config
    }

    /// The value every queried interface carries in `INTERFACE::Context`.
    #[must_use]
    pub fn interface_context(&self) -> *mut c_void {
        self.bus.context as *mut c_void
    }

    /// Emulates `IRP_MN_QUERY_INTERFACE` for `KMCL_CLIENT_INTERFACE_TYPE`, as
    /// `WdfFdoQueryForInterface` issues it.
    ///
    /// Succeeds iff `version` is 1..=5, not above the bus's version, and `size` is **at least**
    /// `sizeof(KMCL_CLIENT_INTERFACE_Vversion)` (larger buffers are accepted; only the struct of
    /// the requested version is written, the rest of the caller's buffer is untouched). On
    /// success it writes `Size` (= that struct size), `Version`, `Context`,
    /// `InterfaceReference`, `InterfaceDereference` and exactly that version's slots, and takes
    /// one interface reference (release it with `InterfaceDereference(Context)`).
    ///
    /// Returns `STATUS_SUCCESS`, `STATUS_INVALID_PARAMETER` for a null `interface`, or
    /// `STATUS_NOT_SUPPORTED` (nothing written).
    ///
    /// # Safety
    /// `interface` must be null or valid for writes of `size` bytes.
    #[must_use]
    pub unsafe fn query_interface(
        &self,
        interface: *mut INTERFACE,
        size: u16,
        version: u16,
    ) -> NTSTATUS {
        registry::set_current_bus(&self.bus);
        if interface.is_null() {
            return STATUS_INVALID_PARAMETER;
        }
        let Some(v) = InterfaceVersion::from_number(version) else {
            return STATUS_NOT_SUPPORTED;
        };
        if v > self.bus.config.version || usize::from(size) < v.struct_size() {
            return STATUS_NOT_SUPPORTED;
        }
        let table = crate::slots::table(self.bus.context, v);
        // SAFETY: `table` is a local V5 struct of at least `v.struct_size()` bytes; the caller
        // guarantees `interface` is writable for `size >= v.struct_size()` bytes; the two cannot
        // overlap (one is on our stack).
        unsafe {
            core::ptr::copy_nonoverlapping(
                core::ptr::from_ref(&table).cast::<u8>(),
                interface.cast::<u8>(),
                v.struct_size(),
            );
        }
        self.bus.reference(1, "query_interface");
        STATUS_SUCCESS
    }

    fn typed<T: Copy>(&self, v: InterfaceVersion) -> Option<T> {
        if v > self.bus.config.version || size_of::<T>() != v.struct_size() {
            return None;
        }
        let mut out = core::mem::MaybeUninit::<T>::zeroed();
        let size = u16::try_from(size_of::<T>()).ok()?;
        // SAFETY: `out` is writable for `size_of::<T>()` bytes.
        let status = unsafe { self.query_interface(out.as_mut_ptr().cast(), size, v.number()) };
        if status == STATUS_SUCCESS {
            // SAFETY: the query wrote every byte of the struct of version `v` (header and all
            // slots), and `T` is that struct (same size, checked above).
            Some(unsafe { out.assume_init() })
        } else {
            None
        }
    }

    /// The V1 interface (a reference is taken), or `None` on a bus below V1 (never).
    #[must_use]
    pub fn client_interface_v1(&self) -> Option<KMCL_CLIENT_INTERFACE_V1> {
        self.typed(InterfaceVersion::V1)
    }

    /// The V2 interface (a reference is taken), or `None` if the bus is older.
    #[must_use]
    pub fn client_interface_v2(&self) -> Option<KMCL_CLIENT_INTERFACE_V2> {
        self.typed(InterfaceVersion::V2)
    }

    /// The V3 interface (a reference is taken), or `None` if the bus is older.
    #[must_use]
    pub fn client_interface_v3(&self) -> Option<KMCL_CLIENT_INTERFACE_V3> {
        self.typed(InterfaceVersion::V3)
    }

    /// The V4 interface (a reference is taken), or `None` if the bus is older.
    #[must_use]
    pub fn client_interface_v4(&self) -> Option<KMCL_CLIENT_INTERFACE_V4> {
        self.typed(InterfaceVersion::V4)
    }

    /// The V5 interface (a reference is taken), or `None` if the bus is older.
    #[must_use]
    pub fn client_interface_v5(&self) -> Option<KMCL_CLIENT_INTERFACE_V5> {
        self.typed(InterfaceVersion::V5)
    }

    /// The host offers a channel of `interface_type` / `interface_instance`, served by
    /// `device` on its own thread whenever a guest channel is open on it.
    pub fn offer(
        &self,
        interface_type: GUID,
        interface_instance: GUID,
        device: Box<dyn HostDevice>,
    ) -> Offer {
        self.offer_indexed(interface_type, interface_instance, 0, device)
    }

    /// The host offers subchannel `index` (> 0) of `primary`'s interface; a guest channel with
    /// `VmbChannelInitSetPrimaryChannel(channel, primary_channel, index)` opens on it.
    pub fn offer_subchannel(
        &self,
        primary: &Offer,
        index: u16,
        device: Box<dyn HostDevice>,
    ) -> Offer {
        self.offer_indexed(
            primary.interface_type(),
            primary.interface_instance(),
            index,
            device,
        )
    }

    fn offer_indexed(
        &self,
        interface_type: GUID,
        instance: GUID,
        index: u16,
        device: Box<dyn HostDevice>,
    ) -> Offer {
        let shared = OfferShared::new(&self.bus, interface_type, instance, index, device);
        lock(&self.bus.state).offers.push(Arc::clone(&shared));
        Offer::from_shared(shared)
    }

    /// The verifier's report now: leaks (live resources), violations and hostile counters.
    #[must_use]
    pub fn verifier(&self) -> VerifierReport {
        self.bus.report()
    }

    /// Panics unless the verifier report [`is_clean`](VerifierReport::is_clean).
    ///
    /// # Panics
    /// If the report has a leak or a violation.
    pub fn assert_clean(&self) {
        self.verifier().assert_clean();
    }

    /// Fault injection controls.
    #[must_use]
    pub fn faults(&self) -> Faults<'_> {
        Faults { bus: &self.bus }
    }

    /// Takes the final report, then rescinds every offer and stops every emulator thread
    /// (deterministically: all are joined) **without calling back into the driver**; every
    /// handle of the bus becomes invalid.
    #[must_use]
    pub fn shutdown(self) -> VerifierReport {
        let report = self.bus.report();
        self.teardown();
        report
    }

    fn teardown(&self) {
        let channels: Vec<Arc<Channel>> = {
            let mut st = lock(&self.bus.state);
            if st.shut_down {
                return;
            }
            st.shut_down = true;
            st.channels.iter().filter_map(Weak::upgrade).collect()
        };
        for o in lock(&self.bus.state).offers.iter() {
            o.mark_rescinded();
        }
        for ch in &channels {
            ch.force_teardown();
        }
        drop(channels);
        let objects = registry::purge_bus(Arc::as_ptr(&self.bus));
        drop(objects);
        let offers = core::mem::take(&mut lock(&self.bus.state).offers);
        for o in &offers {
            o.unregister();
        }
        drop(offers);
    }
}

impl Drop for Vmbus {
    fn drop(&mut self) {
        self.teardown();
    }
}

/// Fault injection on one bus (see [`Vmbus::faults`]).
#[derive(Clone, Copy)]
pub struct Faults<'a> {
    bus: &'a Bus,
}

impl core::fmt::Debug for Faults<'_> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Faults").finish_non_exhaustive()
    }
}

impl Faults<'_> {
    /// Makes the `n`-th call (1-based, counted from now; 0 counts as 1) of `slot` on this bus fail
    /// with `status` before it has any side effect. `VmbPacketAllocate` returns null instead.
    /// Calls rejected for a bad handle are not counted (the bus is unknown then). Slots that
    /// return neither a status nor a packet ([`SlotReturn::Other`]) cannot fail: the call is
    /// ignored and false is returned.
    pub fn fail_nth(&self, slot: Slot, n: u32, status: NTSTATUS) -> bool {
        if slot.returns() == SlotReturn::Other {
            return false;
        }
        lock(&self.bus.faults).armed.push((slot, n.max(1), status));
        true
    }

    /// With `true`, the first `VmbChannelPacketGetExternalData` of every incoming packet returns
    /// `STATUS_PENDING`; the packet is then delivered to the process-packet callback again.
    pub fn defer_external_data(&self, on: bool) {
        lock(&self.bus.faults).defer_external = on;
    }

    /// Completions the host sends arrive at the driver (completion routines, synchronous
    /// requests) with `status` instead of `STATUS_SUCCESS`; `None` restores success.
    pub fn completion_status(&self, status: Option<NTSTATUS>) {
        lock(&self.bus.faults).completion_status = status;
    }

    /// With `true`, the emulated KMCL interrupts the host after **every** guest→host write,
    /// whether the ring's signalling rule calls for it or not (a guest that ignores the
    /// empty→non-empty rule). Each unneeded interrupt is counted
    /// ([`OfferCounters::unneeded_guest_signals`](crate::OfferCounters::unneeded_guest_signals))
    /// and, under [`HostProfile::HyperV`], reported as
    /// [`ViolationKind::UnexpectedInterrupt`].
    pub fn spurious_guest_signals(&self, on: bool) {
        self.bus.spurious_signals.store(on, Ordering::Relaxed);
    }

    /// Disarms every fault.
    pub fn clear(&self) {
        *lock(&self.bus.faults) = FaultState::default();
        self.bus.spurious_signals.store(false, Ordering::Relaxed);
    }
}
