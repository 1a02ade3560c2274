//! The public bus: [`Vmbus`] (configuration, the interface query, offers, the verifier's
//! report, shutdown) and its fault injection ([`Faults`]).

use core::ffi::c_void;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};

use vmbus_kmcl::sys::{
    GUID, INTERFACE, KMCL_CLIENT_INTERFACE_V1, KMCL_CLIENT_INTERFACE_V2, KMCL_CLIENT_INTERFACE_V3,
    KMCL_CLIENT_INTERFACE_V4, KMCL_CLIENT_INTERFACE_V5, NTSTATUS,
};

use crate::api::offer::Offer;
use crate::base::event::lock;
use crate::base::slot::{InterfaceVersion, Slot, SlotReturn};
use crate::base::status::{STATUS_INVALID_PARAMETER, STATUS_NOT_SUPPORTED, STATUS_SUCCESS};
use crate::model::bus::{Bus, BusState, FaultState, VmbusConfig};
use crate::model::channel::Channel;
use crate::model::host::HostDevice;
use crate::model::offer::OfferShared;
use crate::model::registry::{self, Object};
use crate::verifier::report::{VerifierReport, VerifierState};

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
        crate::model::irql::install_irql_model();
        // The library's busy waits give the turn away under a seeded schedule.
        vmbus_kmcl::spin::set_spin_hook(Some(crate::base::schedule::spin_hook));
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
        let table = crate::abi::slots::table(self.bus.context, v);
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
    /// and, under [`HostProfile::HyperV`](crate::HostProfile::HyperV), reported as
    /// [`ViolationKind::UnexpectedInterrupt`](crate::ViolationKind::UnexpectedInterrupt).
    pub fn spurious_guest_signals(&self, on: bool) {
        self.bus.spurious_signals.store(on, Ordering::Relaxed);
    }

    /// Disarms every fault.
    pub fn clear(&self) {
        *lock(&self.bus.faults) = FaultState::default();
        self.bus.spurious_signals.store(false, Ordering::Relaxed);
    }
}
