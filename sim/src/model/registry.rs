//! The handle registry: every handle the emulator hands out, looked up before any use.
//!
//! A slot receives raw handles from the driver under test. It never dereferences one: it looks
//! the value up here. Live handles map to their object; released handles stay as tombstones
//! (with the bus that owned them) until the bus shuts down, so a stale handle is reported as
//! use-after-free, and an unknown value as an invalid handle.
//!
//! Handles the emulator allocates itself (channels from `VmbChannelAllocate`, packets from
//! `VmbPacketAllocate`, incoming packets, the interface context) are synthetic: unique values in
//! a kernel-looking address range that no host allocation can occupy, never reused. Handles in
//! caller storage (`VmbChannelInitialize`, `VmbPacketInitialize`) are the storage address.
//!
//! Violations about a handle that no bus owns are attributed to the bus the calling thread used
//! last (every slot call with a valid handle, every emulator thread and `Vmbus::new` set it);
//! failing that they go to a process-wide list ([`unattributed_violations`](crate::unattributed_violations)).
//!
//! The table mechanics (tombstones, synthetic values, the lookup rules) are generic and live in
//! `verifier::handles`; this module says what a handle refers to ([`Object`]) and holds the
//! one process-wide table.

use std::cell::RefCell;
use std::sync::{Arc, Weak};

use crate::model::bus::Bus;
use crate::model::channel::Channel;
use crate::model::incoming::InPacket;
use crate::model::offer::OfferShared;
use crate::model::outgoing::OutPacket;
pub(crate) use crate::verifier::handles::{HandleKind, LookupError, synthetic_handle};
use crate::verifier::handles::{Handled, Table, record_unattributed};
use crate::verifier::report::{Violation, ViolationKind};

/// What a handle refers to.
#[derive(Clone)]
pub(crate) enum Object {
    Interface(Weak<Bus>),
    Device(Weak<OfferShared>, Weak<Bus>),
    Channel(Arc<Channel>),
    Packet(Arc<OutPacket>),
    Incoming(Arc<InPacket>),
}

impl Handled for Object {
    type Owner = Bus;

    fn kind(&self) -> HandleKind {
        match self {
            Self::Interface(_) => HandleKind::Interface,
            Self::Device(..) => HandleKind::Device,
            Self::Channel(_) => HandleKind::Channel,
            Self::Packet(_) => HandleKind::Packet,
            Self::Incoming(_) => HandleKind::Incoming,
        }
    }

    fn owner(&self) -> Weak<Bus> {
        match self {
            Self::Interface(b) | Self::Device(_, b) => b.clone(),
            Self::Channel(c) => Arc::downgrade(&c.bus),
            Self::Packet(p) => Arc::downgrade(&p.channel.bus),
            Self::Incoming(p) => Arc::downgrade(&p.channel.bus),
        }
    }
}

static REGISTRY: Table<Object> = Table::new();

thread_local! {
    static CURRENT_BUS: RefCell<Weak<Bus>> = const { RefCell::new(Weak::new()) };
}

/// Makes `bus` the calling thread's current bus (attribution of unowned violations).
pub(crate) fn set_current_bus(bus: &Arc<Bus>) {
    CURRENT_BUS.with(|c| {
        let mut c = c.borrow_mut();
        if !core::ptr::eq(c.as_ptr(), Arc::as_ptr(bus)) {
            *c = Arc::downgrade(bus);
        }
    });
}

pub(crate) fn current_bus() -> Option<Arc<Bus>> {
    CURRENT_BUS.with(|c| c.borrow().upgrade())
}

/// The bus that owns (or owned) `handle`, if it is still alive. Records nothing.
pub(crate) fn owner(handle: usize) -> Option<Arc<Bus>> {
    REGISTRY.owner(handle)
}

/// Records a violation on `bus` if it is alive, else on the current bus, else globally.
pub(crate) fn report(bus: Option<Arc<Bus>>, v: Violation) {
    match bus.or_else(current_bus) {
        Some(b) => b.record(v),
        None => record_unattributed(v),
    }
}

/// Registers a live object under `handle`, replacing a tombstone. Returns false (and changes
/// nothing) if a live object already has that handle.
pub(crate) fn insert(handle: usize, object: Object) -> bool {
    REGISTRY.insert(handle, object)
}

/// The live object under `handle` if it is of `kind` (used to check caller storage reuse).
pub(crate) fn live_kind(handle: usize) -> Option<HandleKind> {
    REGISTRY.live_kind(handle)
}

/// Replaces the live object under `handle` with a tombstone and returns it (to be dropped by
/// the caller, outside the registry lock).
pub(crate) fn retire(handle: usize, why: &'static str) -> Option<Object> {
    REGISTRY.retire(handle, why)
}

/// Removes every entry (live or dead) owned by the bus `bus` (by address); returns the live
/// objects so the caller can drop them outside the lock.
pub(crate) fn purge_bus(bus: *const Bus) -> Vec<Object> {
    REGISTRY.purge(bus)
}

/// Looks `handle` up as a `want`; records a violation in `slot` and fails if it is null,
/// unknown, of another type, or released.
fn lookup(handle: usize, want: HandleKind, slot: &'static str) -> Result<Object, LookupError> {
    lookup_as(handle, want, slot, None)
}

/// As [`lookup`]; a released handle of the right type whose tombstone reason starts with
/// `again.0` is reported as `again.1` (double free / double completion) instead of
/// use-after-free.
fn lookup_as(
    handle: usize,
    want: HandleKind,
    slot: &'static str,
    again: Option<(&'static str, ViolationKind)>,
) -> Result<Object, LookupError> {
    match REGISTRY.lookup_as(handle, want, again) {
        Ok(o) => Ok(o),
        Err((err, bus, kind, message)) => {
            report(
                bus,
                Violation {
                    slot,
                    kind,
                    message,
                    handle,
                    irql: None,
                },
            );
            Err(err)
        }
    }
}

/// Looks up a channel handle (see [`lookup`]); sets the thread's current bus on success.
pub(crate) fn channel(handle: usize, slot: &'static str) -> Result<Arc<Channel>, LookupError> {
    match lookup(handle, HandleKind::Channel, slot)? {
        Object::Channel(c) => {
            set_current_bus(&c.bus);
            Ok(c)
        }
        _ => Err(LookupError::Invalid),
    }
}

/// Looks up an outgoing packet handle.
pub(crate) fn packet(handle: usize, slot: &'static str) -> Result<Arc<OutPacket>, LookupError> {
    match lookup(handle, HandleKind::Packet, slot)? {
        Object::Packet(p) => {
            set_current_bus(&p.channel.bus);
            Ok(p)
        }
        _ => Err(LookupError::Invalid),
    }
}

/// Looks up an incoming packet (completion context) handle.
pub(crate) fn incoming(handle: usize, slot: &'static str) -> Result<Arc<InPacket>, LookupError> {
    match lookup(handle, HandleKind::Incoming, slot)? {
        Object::Incoming(p) => {
            set_current_bus(&p.channel.bus);
            Ok(p)
        }
        _ => Err(LookupError::Invalid),
    }
}

/// Looks up an outgoing packet for `VmbPacketFree` (a freed handle is a double free).
pub(crate) fn packet_for_free(
    handle: usize,
    slot: &'static str,
) -> Result<Arc<OutPacket>, LookupError> {
    match lookup_as(
        handle,
        HandleKind::Packet,
        slot,
        Some(("freed", ViolationKind::DoubleFree)),
    )? {
        Object::Packet(p) => {
            set_current_bus(&p.channel.bus);
            Ok(p)
        }
        _ => Err(LookupError::Invalid),
    }
}

/// Looks up an incoming packet for complete/fail (a completed handle is a double completion).
pub(crate) fn incoming_for_completion(
    handle: usize,
    slot: &'static str,
) -> Result<Arc<InPacket>, LookupError> {
    match lookup_as(
        handle,
        HandleKind::Incoming,
        slot,
        Some(("completed", ViolationKind::DoubleComplete)),
    )? {
        Object::Incoming(p) => {
            set_current_bus(&p.channel.bus);
            Ok(p)
        }
        _ => Err(LookupError::Invalid),
    }
}

/// Looks up a device object; returns its offer and bus.
pub(crate) fn device(
    handle: usize,
    slot: &'static str,
) -> Result<(Arc<OfferShared>, Arc<Bus>), LookupError> {
    match lookup(handle, HandleKind::Device, slot)? {
        Object::Device(o, b) => match (o.upgrade(), b.upgrade()) {
            (Some(o), Some(b)) => {
                set_current_bus(&b);
                Ok((o, b))
            }
            _ => Err(LookupError::Freed),
        },
        _ => Err(LookupError::Invalid),
    }
}

/// Looks up an interface context (no violation is recorded on failure: the caller does it).
pub(crate) fn interface(handle: usize) -> Option<Arc<Bus>> {
    REGISTRY.peek(handle, |o| match o {
        Object::Interface(b) => b.upgrade(),
        _ => None,
    })
}

/// True if `handle` is a live channel of `bus`.
pub(crate) fn is_live_channel(handle: usize) -> bool {
    REGISTRY
        .peek(handle, |o| matches!(o, Object::Channel(_)).then_some(()))
        .is_some()
}

/// The live channel under `handle`, without recording anything.
pub(crate) fn peek_channel(handle: usize) -> Option<Arc<Channel>> {
    REGISTRY.peek(handle, |o| match o {
        Object::Channel(c) => Some(Arc::clone(c)),
        _ => None,
    })
}

/// The live outgoing packet under `handle`, without recording anything.
pub(crate) fn peek_packet(handle: usize) -> Option<Arc<OutPacket>> {
    REGISTRY.peek(handle, |o| match o {
        Object::Packet(p) => Some(Arc::clone(p)),
        _ => None,
    })
}
