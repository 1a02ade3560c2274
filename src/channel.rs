//! [`Channel`]: one KMCL channel (`VmbChannelAllocate` … `VmbChannelCleanup`), its lifecycle
//! (enable, pause, start, disable, teardown), and the shared [`ChannelCore`] that callbacks,
//! [`ChannelRef`]s, GPADLs, packet pools and pended packets reach it through.
//!
//! Ownership: the core lives in one allocation made by [`Channel::new`] (at PASSIVE_LEVEL, never
//! on a send or receive path) and counted by references. The unique owner, [`Channel`], is the
//! only value that can change the lifecycle (`&mut self`, so lifecycle calls are serialised by
//! the borrow checker) and the only one whose drop tears the channel down. Everything else holds
//! a [`ChannelRef`]; after teardown their calls fail with `STATUS_INVALID_DEVICE_STATE`, and the
//! last reference frees the memory. Forgetting any value leaks the allocation; it never frees
//! memory that KMCL or the host still uses.

extern crate alloc;

use alloc::alloc::{Layout, alloc, dealloc};
use alloc::vec::Vec;
use core::cell::UnsafeCell;
use core::ffi::c_void;
use core::ops::Deref;
use core::ptr::{self, NonNull};
use core::sync::atomic::{AtomicBool, AtomicPtr, AtomicU8, AtomicUsize, Ordering, fence};

use crate::callbacks;
use crate::config::{ChannelConfig, ParentDevice};
use crate::gpadl::GpadlEntry;
use crate::handler::ChannelHandler;
use crate::incoming::PendSlot;
use crate::interface::{InterfaceVersion, KmclInterface, slot};
use crate::irql::PassiveLevel;
use crate::pool::PoolEntry;
use crate::routes;
use crate::rundown::{Rundown, RundownGuard};
use crate::status::{NtStatus, Result};
use crate::sys;

/// Lifecycle states (an `AtomicU8`). Only the owner writes them, under `&mut`.
const CREATED: u8 = 0;
const ENABLING: u8 = 1;
const ENABLED: u8 = 2;
const DISABLING: u8 = 3;
const DISABLED: u8 = 4;

/// Deferred packets remembered so that their redelivery gets a PASSIVE_LEVEL token.
const DEFERRED_SLOTS: usize = 8;

/// The state-change callback struct registered at enable; KMCL may keep a pointer to it.
union StateCallbacks {
    v1: sys::VMB_CHANNEL_STATE_CHANGE_CALLBACKS,
    v5: sys::VMB_CHANNEL_STATE_CHANGE_CALLBACKS_V5,
}

/// The shared part of a channel: what callbacks, [`ChannelRef`]s and the owner's `Deref` reach.
/// Sends, packet pools, GPADLs and channel-wide settings are methods of this type.
///
/// It is never moved or owned by the driver: it lives in the allocation [`Channel::new`] made,
/// at an address KMCL keeps for its callbacks.
pub struct ChannelCore<H: ChannelHandler> {
    refs: AtomicUsize,
    /// Holders: every call through the KMCL handle. Run down by teardown.
    rundown: Rundown,
    /// Holders: sends and GPADL creation. Open from KMCL's `started` callback until a pause or
    /// a disable, which run it down before calling KMCL, so no send reaches KMCL on a channel
    /// that is not running.
    sends: Rundown,
    lifecycle: AtomicU8,
    at_passive: AtomicBool,
    deferred_count: AtomicUsize,
    deferred: [AtomicPtr<c_void>; DEFERRED_SLOTS],
    /// The table, for calls (does not own an interface reference).
    interface: KmclInterface,
    /// The channel's interface reference, released at teardown (after which no call goes
    /// through the table).
    reference: UnsafeCell<Option<KmclInterface>>,
    handle: sys::VMBCHANNEL,
    /// KMCL's channel object when it lives in memory of ours (`VmbChannelInitialize`).
    kmcl_storage: KmclStorage,
    client_context_size: u32,
    /// The configured maximum packet size in bytes, 0 when KMCL's default applies.
    maximum_packet_size: u32,
    callbacks: UnsafeCell<StateCallbacks>,
    pub(crate) gpadls: Vec<GpadlEntry>,
    pub(crate) pools: Vec<PoolEntry>,
    pub(crate) pended: Vec<PendSlot>,
    handler: H,
    pub(crate) send_slots: SendSlots,
}

// SAFETY: the KMCL handle may be used from any thread; the handler is `Sync` (trait bound); the
// callback struct is written only by the owner under `&mut` while no callback is registered;
// every other field is atomic or written only before the core is shared.
unsafe impl<H: ChannelHandler> Sync for ChannelCore<H> {}
// SAFETY: as for Sync; the handler is `Send` (trait bound), so the last reference may drop it
// on any thread.
unsafe impl<H: ChannelHandler> Send for ChannelCore<H> {}

/// The unique owner of a channel: lifecycle calls and teardown.
///
/// Store it in the device context. It dereferences to [`ChannelCore`] for sends and settings.
/// Dropping it at PASSIVE_LEVEL tears the channel down (see [`close`](Self::close)); dropped
/// above PASSIVE_LEVEL it cannot block, so it leaks the channel instead (nothing is freed, KMCL
/// keeps working on valid memory; the emulator reports the leak).
///
/// Lifecycle calls need `&mut self`, so two threads cannot enable and disable at once:
///
/// ```compile_fail,E0596
/// # use vmbus_kmcl::{Channel, ChannelHandler, PassiveLevel};
/// # struct Vsc;
/// # impl ChannelHandler for Vsc { type PacketContext = (); }
/// fn racy(channel: &Channel<Vsc>, irql: &PassiveLevel) {
///     let _ = channel.enable(irql); // needs `&mut Channel`
/// }
/// ```
///
/// The owner is not `Send`, so a handler (which is `Send + Sync`) cannot keep it and tear its
/// own channel down from a callback:
///
/// ```compile_fail,E0277
/// # use std::sync::Mutex;
/// # use vmbus_kmcl::{Channel, ChannelHandler};
/// struct Vsc {
///     owner: Mutex<Option<Channel<Vsc>>>,
/// }
/// impl ChannelHandler for Vsc {
///     type PacketContext = ();
/// }
/// ```
pub struct Channel<H: ChannelHandler> {
    core: NonNull<ChannelCore<H>>,
}

// No `Send` for the owner, on purpose: the handler is `Send + Sync`, so it cannot hold the
// owner, and no callback can tear its own channel down (which would free the handler under the
// callback's `&self`, and call `VmbChannelDisable` from inside a callback it waits for).
// SAFETY: `&Channel` only gives `&ChannelCore`, which is Sync.
unsafe impl<H: ChannelHandler> Sync for Channel<H> {}

/// A counted reference to a channel's core, for state kept beside the channel (a work item, a
/// request queue) and held by GPADLs, packet pools and pended packets. It keeps the memory
/// valid, not the channel open: after the owner's teardown its calls fail with
/// `STATUS_INVALID_DEVICE_STATE`. Cloning and dropping are one atomic operation each, at any
/// IRQL ≤ DISPATCH_LEVEL.
pub struct ChannelRef<H: ChannelHandler> {
    core: NonNull<ChannelCore<H>>,
}

// SAFETY: as for `Channel`.
unsafe impl<H: ChannelHandler> Send for ChannelRef<H> {}
// SAFETY: as for `Channel`.
unsafe impl<H: ChannelHandler> Sync for ChannelRef<H> {}

impl<H: ChannelHandler> Channel<H> {
    /// Allocates a channel on `parent` (`VmbChannelAllocate`, client side; or, with
    /// [`ChannelConfig::kmcl_storage_in_channel`], `VmbSizeofChannel` + `VmbChannelInitialize`
    /// in memory of this allocation) and applies `config` through the `VmbChannelInit*` setters.
    ///
    /// This is the one allocation of the crate: the core (handler included) and its tables of
    /// GPADLs, packet pools and pended packets, with the global allocator (nonpaged pool in a
    /// driver using `wdk-alloc`). On V5 it also sizes each packet's inline context to one
    /// pointer, where [`PacketContext`](crate::PacketContext) values travel.
    ///
    /// # Errors
    /// - `STATUS_INVALID_PARAMETER_n` for a setting outside its documented range (checked
    ///   before any KMCL call; `n` is the setter argument): zero ring pages, a maximum packet
    ///   size of 0 or over [`sys::KMCL_RING_BUFFER_MTU`], zero external data or chain length, a
    ///   zero packet count, subchannel index 0, bounce-buffer sizes not multiples of 4096.
    /// - `STATUS_NOT_SUPPORTED` for a setting the negotiated interface version lacks.
    /// - `STATUS_INSUFFICIENT_RESOURCES` when the allocation fails.
    /// - The failing KMCL status otherwise.
    ///
    /// Nothing is leaked on error (the handler is dropped).
    ///
    /// IRQL: PASSIVE_LEVEL (`VmbChannelAllocate` is annotated `_IRQL_requires_(PASSIVE_LEVEL)`).
    pub fn new(
        irql: &PassiveLevel,
        interface: &KmclInterface,
        parent: ParentDevice,
        config: &ChannelConfig,
        handler: H,
    ) -> Result<Self> {
        config.validate()?;
        let send_slots = SendSlots::resolve(interface)?;
        let gpadls = table(config.capacity.gpadls, GpadlEntry::new)?;
        let pools = table(config.capacity.packet_pools, PoolEntry::new)?;
        let pended = table(config.capacity.pended_packets, PendSlot::new)?;
        let layout = Layout::new::<ChannelCore<H>>();
        // SAFETY: the layout of a sized, non-zero-sized type.
        let memory = NonNull::new(unsafe { alloc(layout) }.cast::<ChannelCore<H>>())
            .ok_or(NtStatus::INSUFFICIENT_RESOURCES)?;
        let (handle, kmcl_storage) = match allocate_kmcl_channel(interface, parent, config) {
            Ok(parts) => parts,
            Err(status) => {
                // SAFETY: allocated above with this layout, never initialized.
                unsafe { dealloc(memory.as_ptr().cast(), layout) };
                return Err(status);
            }
        };
        let core = ChannelCore {
            refs: AtomicUsize::new(1),
            rundown: Rundown::new(),
            sends: Rundown::new_closed(),
            lifecycle: AtomicU8::new(CREATED),
            at_passive: AtomicBool::new(config.at_passive()),
            deferred_count: AtomicUsize::new(0),
            deferred: [const { AtomicPtr::new(ptr::null_mut()) }; DEFERRED_SLOTS],
            interface: interface.table_copy(),
            reference: UnsafeCell::new(Some(interface.clone())),
            handle,
            kmcl_storage,
            client_context_size: config.client_context_size_or_zero(),
            maximum_packet_size: match config.maximum_packet_size_or_zero() {
                0 => u32::MAX,
                n => n,
            },
            callbacks: UnsafeCell::new(StateCallbacks {
                v1: sys::VMB_CHANNEL_STATE_CHANGE_CALLBACKS::INIT,
            }),
            gpadls,
            pools,
            pended,
            handler,
            send_slots,
        };
        // SAFETY: fresh memory of the right layout.
        unsafe { memory.as_ptr().write(core) };
        let channel = Self { core: memory };
        let applied = channel.attach_and_configure(config);
        match applied {
            Ok(()) => Ok(channel),
            Err(status) => {
                channel.close(irql);
                Err(status)
            }
        }
    }

    /// Stores the core's address on the KMCL channel (for legacy callbacks and PnP failure) and
    /// applies the init setters.
    fn attach_and_configure(&self, config: &ChannelConfig) -> Result<()> {
        let core = self.core();
        let set_pointer = slot(core.interface.raw().VmbChannelSetPointer)?;
        // SAFETY: a live channel; the pointer is the core, which outlives the KMCL channel.
        unsafe { set_pointer(core.handle, self.core.as_ptr().cast()) };
        config.apply::<H>(&core.interface, core.handle)
    }

    fn core(&self) -> &ChannelCore<H> {
        // SAFETY: the owner holds a reference, so the core is alive.
        unsafe { self.core.as_ref() }
    }

    /// Registers the callbacks and opens the channel (`VmbChannelEnable`). On V5 the Ex
    /// callbacks carry the core as their context; before V5 the legacy callbacks find it
    /// through `VmbChannelGetPointer`.
    ///
    /// [`ChannelHandler::opened`], `started` and `post_started` run before this returns.
    ///
    /// # Errors
    /// `STATUS_INVALID_DEVICE_STATE` if the channel is already enabled; the failing KMCL status
    /// otherwise (including an error returned by `opened`). After an error the channel can be
    /// dropped or enabled again.
    ///
    /// IRQL: PASSIVE_LEVEL (it waits for the host's open result).
    pub fn enable(&mut self, irql: &PassiveLevel) -> Result<()> {
        let _ = irql;
        let core = self.core();
        let previous = core.lifecycle.load(Ordering::Acquire);
        if previous != CREATED && previous != DISABLED {
            return Err(NtStatus::INVALID_DEVICE_STATE);
        }
        core.lifecycle.store(ENABLING, Ordering::SeqCst);
        // Sends open when KMCL reports the channel started (the `started` callback, inside
        // `VmbChannelEnable`); a failed enable closes them again.
        let result = core.register_and_enable();
        if result.is_err() {
            core.sends.run_down();
        }
        let next = if result.is_ok() { ENABLED } else { previous };
        core.lifecycle.store(next, Ordering::SeqCst);
        result
    }

    /// Closes the channel (`VmbChannelDisable`): first stops new sends and waits for the ones in
    /// progress (a synchronous request in progress for up to its timeout), then lets KMCL tear
    /// the channel down. Inside `VmbChannelDisable` KMCL stops delivery and calls
    /// [`ChannelHandler::suspend`], which may still complete pended packets; the crate then
    /// cancels whatever is still pended (completes it with no response, since KMCL waits for
    /// every incoming packet), and its [`PendedPacket`](crate::PendedPacket) reports
    /// `STATUS_CANCELLED`. A packet pended once the disable has started is cancelled at once.
    ///
    /// After this returns no callback runs, every packet sent has been completed (in flight:
    /// `STATUS_CANCELLED`), and no incoming packet is outstanding. GPADLs stay registered until
    /// teardown (the host no longer reaches them). A no-op when not enabled; the channel may be
    /// enabled again.
    ///
    /// IRQL: PASSIVE_LEVEL (it waits for callbacks).
    pub fn disable(&mut self, irql: &PassiveLevel) {
        let _ = irql;
        let core = self.core();
        if core.lifecycle.load(Ordering::Acquire) != ENABLED {
            return;
        }
        core.lifecycle.store(DISABLING, Ordering::SeqCst);
        core.sends.run_down();
        if let Some(disable) = core.interface.raw().VmbChannelDisable {
            // SAFETY: an enabled channel; KMCL waits for its callbacks before returning.
            unsafe { disable(core.handle) };
        }
        // Normally nothing is left (the suspend callback cancelled it); a KMCL that closed
        // without one has released such packets itself.
        crate::incoming::abandon_pended(core);
        core.forget_deferred();
        core.lifecycle.store(DISABLED, Ordering::SeqCst);
    }

    /// `VmbChannelPause`: stops packet delivery ([`ChannelHandler::suspend`] runs) and waits for
    /// the packets in flight. Sends are refused (`STATUS_INVALID_DEVICE_STATE`) from the start
    /// of the pause until [`start`](Self::start): KMCL does not take sends on a paused channel.
    ///
    /// # Errors
    /// `STATUS_INVALID_DEVICE_STATE` when the channel is not enabled.
    ///
    /// IRQL: PASSIVE_LEVEL (it waits).
    pub fn pause(&mut self, irql: &PassiveLevel) -> Result<()> {
        let _ = irql;
        let core = self.core();
        core.require_enabled()?;
        core.sends.run_down();
        let f = slot(core.interface.raw().VmbChannelPause)?;
        // SAFETY: an enabled channel.
        unsafe { f(core.handle) };
        Ok(())
    }

    /// `VmbChannelStart`: resumes packet delivery after [`pause`](Self::pause)
    /// ([`ChannelHandler::started`] runs, and sends are accepted again from then on).
    ///
    /// # Errors
    /// `STATUS_INVALID_DEVICE_STATE` when the channel is not enabled.
    ///
    /// IRQL: PASSIVE_LEVEL (state callbacks run on the calling thread).
    pub fn start(&mut self, irql: &PassiveLevel) -> Result<()> {
        let _ = irql;
        let core = self.core();
        core.require_enabled()?;
        let f = slot(core.interface.raw().VmbChannelStart)?;
        // SAFETY: an enabled channel.
        unsafe { f(core.handle) };
        Ok(())
    }

    /// `VmbChannelSetIncomingProcessingAtPassive`: deliver incoming packets at PASSIVE_LEVEL
    /// (`true`; they then offer [`IncomingPacket::passive_level`](crate::IncomingPacket::passive_level))
    /// or DISPATCH_LEVEL (`false`). Only while the channel is not enabled: KMCL does not say when
    /// a switch takes effect for packets already on their way, so changing it under live
    /// delivery could hand a PASSIVE_LEVEL token to a DISPATCH_LEVEL callback.
    ///
    /// # Errors
    /// `STATUS_INVALID_DEVICE_STATE` while enabled; `STATUS_NOT_SUPPORTED` if the slot is
    /// missing.
    ///
    /// IRQL: PASSIVE_LEVEL (not documented by KMCL; always safe).
    pub fn set_incoming_processing_at_passive(
        &mut self,
        irql: &PassiveLevel,
        at_passive: bool,
    ) -> Result<()> {
        let _ = irql;
        let core = self.core();
        let state = core.lifecycle.load(Ordering::Acquire);
        if state != CREATED && state != DISABLED {
            return Err(NtStatus::INVALID_DEVICE_STATE);
        }
        let _entered = core.enter_any()?;
        let f = slot(
            core.interface
                .raw()
                .VmbChannelSetIncomingProcessingAtPassive,
        )?;
        // SAFETY: a live channel and a BOOLEAN.
        unsafe { f(core.handle, u8::from(at_passive)) };
        core.at_passive.store(at_passive, Ordering::Release);
        Ok(())
    }

    /// A counted reference to the core, to keep beside the channel.
    ///
    /// IRQL: any.
    #[must_use]
    pub fn new_ref(&self) -> ChannelRef<H> {
        self.core().new_ref()
    }

    /// Tears the channel down: disables it if enabled, stops every call made through a
    /// [`ChannelRef`] (they now fail with `STATUS_INVALID_DEVICE_STATE`) and waits for the ones
    /// in progress, deletes every GPADL still registered (`VmbChannelDeleteGpadl`; a GPADL
    /// whose handle was dropped has its buffer freed now, one whose handle still lives keeps its
    /// buffer, now private again), calls `VmbChannelCleanup`, frees the packet-pool storage,
    /// and releases the owner's reference (the last reference frees the memory).
    ///
    /// IRQL: PASSIVE_LEVEL (it waits). Dropping the owner does the same when the current IRQL is
    /// PASSIVE_LEVEL.
    pub fn close(mut self, irql: &PassiveLevel) {
        self.disable(irql);
        let core = self.core();
        core.rundown.run_down();
        crate::gpadl::delete_all(core);
        if let Some(cleanup) = core.interface.raw().VmbChannelCleanup {
            // SAFETY: disabled (or never enabled), and no call through the handle is in
            // progress or can start (run down).
            unsafe { cleanup(core.handle) };
        }
        // SAFETY: KMCL is done with every packet (cleanup returned).
        unsafe { crate::pool::release_all(core) };
        if let Some((storage, layout)) = core.kmcl_storage {
            // SAFETY: KMCL's channel object, released by `VmbChannelCleanup` above.
            unsafe { dealloc(storage.as_ptr(), layout) };
        }
        // SAFETY: only teardown touches `reference`, and teardown runs once (it consumes the
        // owner).
        drop(unsafe { core.reference.get().replace(None) });
        let this = core::mem::ManuallyDrop::new(self);
        // SAFETY: the owner's reference, released once (the owner is not dropped again).
        unsafe { release(this.core) };
    }
}

/// A table of `n` entries, allocated fallibly.
fn table<T>(n: u16, make: fn() -> T) -> Result<Vec<T>> {
    let mut entries = Vec::new();
    entries
        .try_reserve_exact(usize::from(n))
        .map_err(|_| NtStatus::INSUFFICIENT_RESOURCES)?;
    entries.extend((0..n).map(|_| make()));
    Ok(entries)
}

/// Memory of ours that holds KMCL's channel object (`VmbChannelInitialize`).
type KmclStorage = Option<(NonNull<u8>, Layout)>;

/// The KMCL channel: `VmbChannelAllocate`, or `VmbChannelInitialize` in memory of ours.
fn allocate_kmcl_channel(
    interface: &KmclInterface,
    parent: ParentDevice,
    config: &ChannelConfig,
) -> Result<(sys::VMBCHANNEL, KmclStorage)> {
    if config.kmcl_storage_in_channel {
        let initialize = slot(interface.raw().VmbChannelInitialize)?;
        let size = slot(interface.raw().VmbSizeofChannel)?;
        // SAFETY: takes no arguments.
        let bytes = unsafe { size() };
        let layout = Layout::from_size_align(bytes as usize, 16)
            .map_err(|_| NtStatus::INSUFFICIENT_RESOURCES)?;
        if bytes == 0 {
            return Err(NtStatus::UNSUCCESSFUL);
        }
        // SAFETY: a non-zero size.
        let storage =
            NonNull::new(unsafe { alloc(layout) }).ok_or(NtStatus::INSUFFICIENT_RESOURCES)?;
        let handle = storage.as_ptr().cast::<sys::VMBCHANNEL__>();
        // SAFETY: `bytes` writable bytes, owned by the channel until after cleanup.
        let status = NtStatus(unsafe { initialize(parent.as_raw(), 0, handle, bytes) });
        if let Err(status) = status.ok() {
            // SAFETY: allocated above; KMCL did not take it.
            unsafe { dealloc(storage.as_ptr(), layout) };
            return Err(status);
        }
        Ok((handle, Some((storage, layout))))
    } else {
        let allocate = slot(interface.raw().VmbChannelAllocate)?;
        let mut handle: sys::VMBCHANNEL = ptr::null_mut();
        // SAFETY: `parent` is valid by ParentDevice's contract; `handle` is a valid out pointer.
        NtStatus(unsafe { allocate(parent.as_raw(), 0, &raw mut handle) }).ok()?;
        if handle.is_null() {
            return Err(NtStatus::INSUFFICIENT_RESOURCES);
        }
        Ok((handle, None))
    }
}

/// Drops one reference; the last one drops the core and frees its memory.
///
/// # Safety
/// `core` holds a reference owned by the caller, released exactly once.
unsafe fn release<H: ChannelHandler>(core: NonNull<ChannelCore<H>>) {
    // SAFETY: the caller's reference keeps the core alive for this access.
    let previous = unsafe { core.as_ref() }
        .refs
        .fetch_sub(1, Ordering::Release);
    if previous == 1 {
        fence(Ordering::Acquire);
        // SAFETY: the last reference: nothing else can reach the core.
        unsafe { ptr::drop_in_place(core.as_ptr()) };
        // SAFETY: allocated by `Channel::new` with this layout.
        unsafe { dealloc(core.as_ptr().cast(), Layout::new::<ChannelCore<H>>()) };
    }
}

impl<H: ChannelHandler> Drop for Channel<H> {
    fn drop(&mut self) {
        // Above PASSIVE_LEVEL nothing may block: leak the channel (the owner's reference is
        // never released, so the memory KMCL uses stays valid).
        if let Some(irql) = PassiveLevel::check() {
            let owner = Self { core: self.core };
            owner.close(&irql);
        }
    }
}

impl<H: ChannelHandler> Deref for Channel<H> {
    type Target = ChannelCore<H>;
    fn deref(&self) -> &ChannelCore<H> {
        self.core()
    }
}

impl<H: ChannelHandler> Deref for ChannelRef<H> {
    type Target = ChannelCore<H>;
    fn deref(&self) -> &ChannelCore<H> {
        // SAFETY: this reference keeps the core alive.
        unsafe { self.core.as_ref() }
    }
}

impl<H: ChannelHandler> Clone for ChannelRef<H> {
    fn clone(&self) -> Self {
        self.deref().new_ref()
    }
}

impl<H: ChannelHandler> Drop for ChannelRef<H> {
    fn drop(&mut self) {
        // SAFETY: this value's reference, released once.
        unsafe { release(self.core) };
    }
}

impl<H: ChannelHandler> ChannelCore<H> {
    /// A counted reference to this core.
    ///
    /// IRQL: any.
    #[must_use]
    pub fn new_ref(&self) -> ChannelRef<H> {
        self.refs.fetch_add(1, Ordering::Relaxed);
        ChannelRef {
            core: NonNull::from(self),
        }
    }

    /// The body of [`Channel::enable`], run in the ENABLING state.
    fn register_and_enable(&self) -> Result<()> {
        let t = self.interface.raw();
        let context = ptr::from_ref(self).cast_mut().cast::<c_void>();
        routes::publish(t);
        let set_state = slot(t.VmbChannelInitSetStateChangeCallbacks)?;
        let registered = self.callbacks.get();
        if self.interface.supports(InterfaceVersion::V5) {
            let v5 = callbacks::state_callbacks_v5::<H>(context);
            // SAFETY: the owner holds `&mut`, and no callback is registered while disabled, so
            // nothing else reads or writes `callbacks`.
            unsafe { registered.write(StateCallbacks { v5 }) };
            // SAFETY: a V5 struct passed as the V1 pointer type, told apart by Version/Size as
            // the header intends; it lives in the core.
            NtStatus(unsafe { set_state(self.handle, registered.cast()) }).ok()?;
            let set_packets = slot(t.VmbChannelInitSetProcessPacketCallbacksEx)?;
            // SAFETY: trampolines for `H` with this core as their context.
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
            // SAFETY: as above.
            unsafe { registered.write(StateCallbacks { v1 }) };
            // SAFETY: the V1 struct, living in the core.
            NtStatus(unsafe { set_state(self.handle, registered.cast()) }).ok()?;
            let set_packets = slot(t.VmbChannelInitSetProcessPacketCallbacks)?;
            // SAFETY: legacy trampolines for `H`; they find this core via its pointer.
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
        // SAFETY: a configured channel whose callbacks point at this core.
        NtStatus(unsafe { enable(self.handle) }).ok()
    }

    /// Enters for a send (the channel enabling or enabled): disable waits for the holder
    /// before `VmbChannelDisable`, and teardown (which disables first) before cleanup.
    #[inline(always)]
    pub(crate) fn enter(&self) -> Result<RundownGuard<'_>> {
        self.sends.acquire().ok_or(NtStatus::INVALID_DEVICE_STATE)
    }

    /// Enters for a call that only needs the KMCL handle to exist (any state before teardown).
    #[inline(always)]
    pub(crate) fn enter_any(&self) -> Result<RundownGuard<'_>> {
        self.rundown.acquire().ok_or(NtStatus::INVALID_DEVICE_STATE)
    }

    /// Admits sends again: KMCL reported the channel started.
    pub(crate) fn open_sends(&self) {
        self.sends.reopen();
    }

    /// True while packets may be pended: enabling or enabled (SeqCst: pairs with
    /// `disable`'s store of DISABLING before its cancel pass).
    pub(crate) fn accepts_pended(&self) -> bool {
        let state = self.lifecycle.load(Ordering::SeqCst);
        state == ENABLED || state == ENABLING
    }

    /// True between a successful [`Channel::enable`] and [`Channel::disable`].
    ///
    /// IRQL: any.
    #[must_use]
    pub fn is_enabled(&self) -> bool {
        self.lifecycle.load(Ordering::Acquire) == ENABLED
    }

    pub(crate) fn require_enabled(&self) -> Result<()> {
        if self.is_enabled() {
            Ok(())
        } else {
            Err(NtStatus::INVALID_DEVICE_STATE)
        }
    }

    /// Whether incoming packets arrive at PASSIVE_LEVEL (fixed while the channel is enabled).
    pub(crate) fn delivers_at_passive(&self) -> bool {
        self.at_passive.load(Ordering::Acquire)
    }

    /// Remembers a packet deferred to PASSIVE_LEVEL (best effort: when all slots are taken its
    /// redelivery just gets no token).
    pub(crate) fn remember_deferred(&self, completion: sys::VMBPACKETCOMPLETION) {
        for entry in &self.deferred {
            if entry
                .compare_exchange(
                    ptr::null_mut(),
                    completion.cast(),
                    Ordering::AcqRel,
                    Ordering::Relaxed,
                )
                .is_ok()
            {
                self.deferred_count.fetch_add(1, Ordering::Release);
                return;
            }
        }
    }

    #[inline(always)]
    pub(crate) fn has_deferred(&self) -> bool {
        self.deferred_count.load(Ordering::Acquire) != 0
    }

    /// True (once) when `completion` is a packet this channel deferred to PASSIVE_LEVEL.
    #[inline(always)]
    pub(crate) fn take_deferred(&self, completion: sys::VMBPACKETCOMPLETION) -> bool {
        if self.deferred_count.load(Ordering::Acquire) == 0 {
            return false;
        }
        for entry in &self.deferred {
            if entry
                .compare_exchange(
                    completion.cast(),
                    ptr::null_mut(),
                    Ordering::AcqRel,
                    Ordering::Relaxed,
                )
                .is_ok()
            {
                self.deferred_count.fetch_sub(1, Ordering::Release);
                return true;
            }
        }
        false
    }

    /// Forgets deferred packets that were never redelivered (KMCL drops them at disable), so a
    /// later packet reusing the handle is not mistaken for one.
    fn forget_deferred(&self) {
        for entry in &self.deferred {
            if !entry.swap(ptr::null_mut(), Ordering::AcqRel).is_null() {
                self.deferred_count.fetch_sub(1, Ordering::Release);
            }
        }
    }

    /// The driver's handler.
    ///
    /// IRQL: any.
    #[must_use]
    pub fn handler(&self) -> &H {
        &self.handler
    }

    /// The table this channel calls through (crate-internal: it holds no interface reference).
    pub(crate) fn interface(&self) -> &KmclInterface {
        &self.interface
    }

    /// The negotiated interface version of the channel's KMCL.
    ///
    /// IRQL: any.
    #[must_use]
    pub fn version(&self) -> InterfaceVersion {
        self.interface.version()
    }

    /// The raw `VMBCHANNEL`, for calls this crate does not wrap. Do not call
    /// `VmbChannelSetPointer` on it: the crate stores the core's address there.
    ///
    /// IRQL: any.
    #[must_use]
    pub fn as_raw(&self) -> sys::VMBCHANNEL {
        self.handle
    }

    /// Checks an in-band length against the configured maximum packet size (KMCL checks it
    /// too; checking here keeps the bad call away from KMCL).
    #[inline(always)]
    pub(crate) fn check_packet_len(&self, len: usize) -> Result<u32> {
        if len > self.maximum_packet_size as usize {
            return Err(NtStatus::INVALID_PARAMETER_3);
        }
        Ok(len as u32)
    }

    /// Bytes of per-incoming-packet client context configured.
    pub(crate) fn client_context_size(&self) -> u32 {
        self.client_context_size
    }

    /// `VmbChannelSetTransactionQuota`: at most `quota` incoming packets outstanding
    /// (delivered and not yet completed).
    ///
    /// # Errors
    /// `STATUS_NOT_SUPPORTED` if the slot is missing; `STATUS_INVALID_DEVICE_STATE` after
    /// teardown.
    ///
    /// IRQL: not documented by KMCL; PASSIVE_LEVEL is always safe.
    pub fn set_transaction_quota(&self, quota: u32) -> Result<()> {
        let _entered = self.enter_any()?;
        let f = slot(self.interface.raw().VmbChannelSetTransactionQuota)?;
        // SAFETY: a live channel and a plain value.
        unsafe { f(self.handle, quota) };
        Ok(())
    }

    /// `VmbChannelSetInterruptLatency`: sets the channel's monitor interrupt latency, in 100 ns
    /// units (Microsoft's page; at most 65,535 units, about 6.5 ms), and returns the previous
    /// value in the same units. Meaningful only while the channel is open.
    ///
    /// # Errors
    /// The KMCL status; `STATUS_INVALID_DEVICE_STATE` after teardown.
    ///
    /// IRQL: not documented by KMCL; PASSIVE_LEVEL is always safe.
    pub fn set_interrupt_latency(&self, latency_100ns: u16) -> Result<u16> {
        let _entered = self.enter_any()?;
        let f = slot(self.interface.raw().VmbChannelSetInterruptLatency)?;
        let mut original = 0_u16;
        // SAFETY: a live channel and a valid out pointer.
        NtStatus(unsafe { f(self.handle, latency_100ns, &raw mut original) }).ok()?;
        Ok(original)
    }

    /// `VmbChannelSetAllowableDpcCpuUsage` (V5): percentage of a CPU, 1..=100, the channel's
    /// DPCs may use.
    ///
    /// # Errors
    /// `STATUS_INVALID_PARAMETER_2` outside 1..=100; `STATUS_NOT_SUPPORTED` before V5;
    /// `STATUS_INVALID_DEVICE_STATE` after teardown.
    ///
    /// IRQL: not documented by KMCL; PASSIVE_LEVEL is always safe.
    pub fn set_allowable_dpc_cpu_usage(&self, percent: u8) -> Result<()> {
        let _entered = self.enter_any()?;
        let f = slot(self.interface.raw().VmbChannelSetAllowableDpcCpuUsage)?;
        if !(sys::KMCL_DPC_CPU_USAGE_MIN..=sys::KMCL_DPC_CPU_USAGE_MAX).contains(&percent) {
            return Err(NtStatus::INVALID_PARAMETER_2);
        }
        // SAFETY: a live channel and a value in range.
        unsafe { f(self.handle, percent) };
        Ok(())
    }

    /// `VmbChannelGetInterfaceInstance`: the instance GUID identifying the channel (as a
    /// comparable, printable [`sys::Guid`]).
    ///
    /// # Errors
    /// `STATUS_NOT_SUPPORTED` if the slot is missing; `STATUS_INVALID_DEVICE_STATE` after
    /// teardown.
    ///
    /// IRQL: not documented by KMCL; PASSIVE_LEVEL is always safe.
    pub fn interface_instance(&self) -> Result<sys::Guid> {
        let _entered = self.enter_any()?;
        let f = slot(self.interface.raw().VmbChannelGetInterfaceInstance)?;
        let mut guid = core::mem::MaybeUninit::<sys::GUID>::zeroed();
        // SAFETY: a live channel and a GUID-sized out buffer.
        unsafe { f(self.handle, guid.as_mut_ptr()) };
        // SAFETY: zero-initialized, and GUID is plain integers, so any bytes are valid.
        Ok(sys::Guid(unsafe { guid.assume_init() }))
    }

    /// `VmbChannelGetMmioSpace`: the channel's MMIO range as (guest physical address, bytes);
    /// (0, 0) when it has none.
    ///
    /// # Errors
    /// `STATUS_NOT_SUPPORTED` if the slot is missing; `STATUS_INVALID_DEVICE_STATE` after
    /// teardown.
    ///
    /// IRQL: not documented by KMCL; PASSIVE_LEVEL is always safe.
    pub fn mmio_space(&self) -> Result<(u64, u64)> {
        let _entered = self.enter_any()?;
        let f = slot(self.interface.raw().VmbChannelGetMmioSpace)?;
        let (mut address, mut size) = (0_u64, 0_u64);
        // SAFETY: a live channel and two valid out pointers.
        unsafe { f(self.handle, &raw mut address, &raw mut size) };
        Ok((address, size))
    }

    /// `VmbChannelGetTargetDeviceObject` (V2).
    ///
    /// # Errors
    /// `STATUS_NOT_SUPPORTED` before V2; `STATUS_INVALID_DEVICE_STATE` after teardown.
    ///
    /// IRQL: not documented by KMCL; PASSIVE_LEVEL is always safe.
    pub fn target_device_object(&self) -> Result<sys::PDEVICE_OBJECT> {
        let _entered = self.enter_any()?;
        let f = slot(self.interface.raw().VmbChannelGetTargetDeviceObject)?;
        let mut device = ptr::null_mut();
        // SAFETY: a live channel and a valid out pointer.
        unsafe { f(self.handle, &raw mut device) };
        Ok(device)
    }

    /// `VmbChannelGetParentDeviceObject` (V2).
    ///
    /// # Errors
    /// `STATUS_NOT_SUPPORTED` before V2; `STATUS_INVALID_DEVICE_STATE` after teardown.
    ///
    /// IRQL: not documented by KMCL; PASSIVE_LEVEL is always safe.
    pub fn parent_device_object(&self) -> Result<sys::PDEVICE_OBJECT> {
        let _entered = self.enter_any()?;
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
    /// before calling KMCL); `STATUS_NOT_SUPPORTED` before V3; `STATUS_INVALID_DEVICE_STATE`
    /// after teardown; the KMCL status.
    ///
    /// IRQL: PASSIVE_LEVEL (allocates memory).
    pub fn allocate_bounce_buffer(&self, irql: &PassiveLevel, bytes: u32) -> Result<()> {
        let _ = irql;
        let _entered = self.enter_any()?;
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
    /// `STATUS_NOT_SUPPORTED` if the slot is missing; `STATUS_INVALID_DEVICE_STATE` after
    /// teardown.
    ///
    /// IRQL: ≤ DISPATCH_LEVEL.
    pub fn packet_storage_size(&self) -> Result<u32> {
        let _entered = self.enter_any()?;
        let f = slot(self.interface.raw().VmbChannelSizeofPacket)?;
        // SAFETY: a live channel.
        Ok(unsafe { f(self.handle) })
    }
}

/// `VmbSizeofChannel` (V5): bytes of KMCL channel storage that
/// [`ChannelConfig::kmcl_storage_in_channel`] adds to the channel's allocation.
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

impl<H: ChannelHandler> core::fmt::Debug for ChannelCore<H> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("ChannelCore")
            .field("handle", &self.handle)
            .field("enabled", &self.is_enabled())
            .field("version", &self.interface.version())
            .finish_non_exhaustive()
    }
}

impl<H: ChannelHandler> core::fmt::Debug for Channel<H> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_tuple("Channel").field(self.core()).finish()
    }
}

impl<H: ChannelHandler> core::fmt::Debug for ChannelRef<H> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_tuple("ChannelRef").field(self.deref()).finish()
    }
}

/// The slots of the send and completion paths, resolved once.
#[derive(Clone, Copy)]
pub(crate) struct SendSlots {
    pub(crate) allocate: sys::FN_VMB_PACKET_ALLOCATE,
    pub(crate) send: sys::FN_VMB_PACKET_SEND,
    pub(crate) free: sys::FN_VMB_PACKET_FREE,
    pub(crate) inline: Option<(
        sys::FN_VMB_PACKET_GET_INLINE_PACKET_CONTEXT_POINTER,
        sys::FN_VMB_PACKET_SET_COMPLETION_ROUTINE_EX,
    )>,
}

impl SendSlots {
    fn resolve(interface: &KmclInterface) -> Result<Self> {
        let t = interface.raw();
        let inline = if interface.supports(InterfaceVersion::V5) {
            Some((
                slot(t.VmbPacketGetInlinePacketContextPointer)?,
                slot(t.VmbPacketSetCompletionRoutineEx)?,
            ))
        } else {
            None
        };
        Ok(Self {
            allocate: slot(t.VmbPacketAllocate)?,
            send: slot(t.VmbPacketSend)?,
            free: slot(t.VmbPacketFree)?,
            inline,
        })
    }
}
