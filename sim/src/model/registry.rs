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
//! failing that they go to a process-wide list ([`unattributed_violations`]).

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};

use crate::base::event::lock;
use crate::base::verifier::{Violation, ViolationKind};
use crate::model::bus::Bus;
use crate::model::channel::Channel;
use crate::model::incoming::InPacket;
use crate::model::offer::OfferShared;
use crate::model::outgoing::OutPacket;

/// What a handle refers to.
pub(crate) enum Object {
    Interface(Weak<Bus>),
    Device(Weak<OfferShared>, Weak<Bus>),
    Channel(Arc<Channel>),
    Packet(Arc<OutPacket>),
    Incoming(Arc<InPacket>),
}

/// The type of a handle, for messages and type checks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum HandleKind {
    Interface,
    Device,
    Channel,
    Packet,
    Incoming,
}

impl HandleKind {
    pub(crate) const fn c_name(self) -> &'static str {
        match self {
            Self::Interface => "interface context",
            Self::Device => "PDEVICE_OBJECT",
            Self::Channel => "VMBCHANNEL",
            Self::Packet => "VMBPACKET",
            Self::Incoming => "VMBPACKETCOMPLETION",
        }
    }
}

impl Object {
    const fn kind(&self) -> HandleKind {
        match self {
            Self::Interface(_) => HandleKind::Interface,
            Self::Device(..) => HandleKind::Device,
            Self::Channel(_) => HandleKind::Channel,
            Self::Packet(_) => HandleKind::Packet,
            Self::Incoming(_) => HandleKind::Incoming,
        }
    }

    fn bus(&self) -> Weak<Bus> {
        match self {
            Self::Interface(b) | Self::Device(_, b) => b.clone(),
            Self::Channel(c) => Arc::downgrade(&c.bus),
            Self::Packet(p) => Arc::downgrade(&p.channel.bus),
            Self::Incoming(p) => Arc::downgrade(&p.channel.bus),
        }
    }
}

enum Entry {
    Live(Object),
    Dead {
        kind: HandleKind,
        bus: Weak<Bus>,
        why: &'static str,
    },
}

static REGISTRY: Mutex<BTreeMap<usize, Entry>> = Mutex::new(BTreeMap::new());
static UNATTRIBUTED: Mutex<Vec<Violation>> = Mutex::new(Vec::new());
static NEXT_SYNTHETIC: AtomicU64 = AtomicU64::new(1);

thread_local! {
    static CURRENT_BUS: RefCell<Weak<Bus>> = const { RefCell::new(Weak::new()) };
}

/// Base of the synthetic handle range: canonical kernel-half addresses, which a user-space
/// allocation on a 64-bit host can never have.
const SYNTHETIC_BASE: u64 = 0xFFFF_A000_0000_0000;

/// A fresh synthetic handle: 16-byte aligned, never 0, never reused.
pub(crate) fn synthetic_handle() -> usize {
    let n = NEXT_SYNTHETIC.fetch_add(1, Ordering::Relaxed);
    let value = SYNTHETIC_BASE.wrapping_add(n.wrapping_mul(16));
    usize::try_from(value).unwrap_or(usize::MAX & !15)
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
    match lock(&REGISTRY).get(&handle)? {
        Entry::Live(o) => o.bus().upgrade(),
        Entry::Dead { bus, .. } => bus.upgrade(),
    }
}

/// Records a violation on `bus` if it is alive, else on the current bus, else globally.
pub(crate) fn report(bus: Option<Arc<Bus>>, v: Violation) {
    match bus.or_else(current_bus) {
        Some(b) => b.record(v),
        None => lock(&UNATTRIBUTED).push(v),
    }
}

/// Violations that could not be attributed to any live bus (a foreign handle on a thread that
/// never used a bus). Returns and clears the process-wide list.
#[must_use]
pub fn unattributed_violations() -> Vec<Violation> {
    core::mem::take(&mut *lock(&UNATTRIBUTED))
}

/// Registers a live object under `handle`, replacing a tombstone. Returns false (and changes
/// nothing) if a live object already has that handle.
pub(crate) fn insert(handle: usize, object: Object) -> bool {
    let mut reg = lock(&REGISTRY);
    if matches!(reg.get(&handle), Some(Entry::Live(_))) {
        return false;
    }
    reg.insert(handle, Entry::Live(object));
    true
}

/// The live object under `handle` if it is of `kind` (used to check caller storage reuse).
pub(crate) fn live_kind(handle: usize) -> Option<HandleKind> {
    match lock(&REGISTRY).get(&handle) {
        Some(Entry::Live(o)) => Some(o.kind()),
        _ => None,
    }
}

/// Replaces the live object under `handle` with a tombstone and returns it (to be dropped by
/// the caller, outside the registry lock).
pub(crate) fn retire(handle: usize, why: &'static str) -> Option<Object> {
    let mut reg = lock(&REGISTRY);
    let entry = reg.get_mut(&handle)?;
    let Entry::Live(object) = entry else {
        return None;
    };
    let tomb = Entry::Dead {
        kind: object.kind(),
        bus: object.bus(),
        why,
    };
    match core::mem::replace(entry, tomb) {
        Entry::Live(o) => Some(o),
        Entry::Dead { .. } => None,
    }
}

/// Removes every entry (live or dead) owned by the bus `bus` (by address); returns the live
/// objects so the caller can drop them outside the lock.
pub(crate) fn purge_bus(bus: *const Bus) -> Vec<Object> {
    let mut reg = lock(&REGISTRY);
    let keys: Vec<usize> = reg
        .iter()
        .filter(|(_, e)| {
            let owner = match e {
                Entry::Live(o) => o.bus(),
                Entry::Dead { bus, .. } => bus.clone(),
            };
            core::ptr::eq(owner.as_ptr(), bus)
        })
        .map(|(k, _)| *k)
        .collect();
    let mut live = Vec::new();
    for k in keys {
        if let Some(Entry::Live(o)) = reg.remove(&k) {
            live.push(o);
        }
    }
    live
}

/// Why a lookup failed; the violation has already been recorded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum LookupError {
    /// The handle was null.
    Null,
    /// Never issued, or of another type.
    Invalid,
    /// Released earlier.
    Freed,
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
    let found = {
        let reg = lock(&REGISTRY);
        match reg.get(&handle) {
            Some(Entry::Live(o)) if o.kind() == want => Ok(match o {
                Object::Interface(b) => Object::Interface(b.clone()),
                Object::Device(o, b) => Object::Device(o.clone(), b.clone()),
                Object::Channel(c) => Object::Channel(Arc::clone(c)),
                Object::Packet(p) => Object::Packet(Arc::clone(p)),
                Object::Incoming(p) => Object::Incoming(Arc::clone(p)),
            }),
            Some(Entry::Live(o)) => Err((
                LookupError::Invalid,
                o.bus().upgrade(),
                ViolationKind::InvalidHandle,
                format!("a {} was passed as a {}", o.kind().c_name(), want.c_name()),
            )),
            Some(Entry::Dead { kind, bus, why }) => {
                let (err, vk) = if *kind == want {
                    let vk = match again {
                        Some((prefix, vk)) if why.starts_with(prefix) => vk,
                        _ => ViolationKind::UseAfterFree,
                    };
                    (LookupError::Freed, vk)
                } else {
                    (LookupError::Invalid, ViolationKind::InvalidHandle)
                };
                Err((
                    err,
                    bus.upgrade(),
                    vk,
                    format!("{} used after it was {why}", kind.c_name()),
                ))
            }
            None if handle == 0 => Err((
                LookupError::Null,
                None,
                ViolationKind::InvalidHandle,
                format!("null {}", want.c_name()),
            )),
            None => Err((
                LookupError::Invalid,
                None,
                ViolationKind::InvalidHandle,
                format!("{} {handle:#x} was never issued", want.c_name()),
            )),
        }
    };
    match found {
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
    match lock(&REGISTRY).get(&handle) {
        Some(Entry::Live(Object::Interface(b))) => b.upgrade(),
        _ => None,
    }
}

/// True if `handle` is a live channel of `bus`.
pub(crate) fn is_live_channel(handle: usize) -> bool {
    matches!(
        lock(&REGISTRY).get(&handle),
        Some(Entry::Live(Object::Channel(_)))
    )
}

/// The live channel under `handle`, without recording anything.
pub(crate) fn peek_channel(handle: usize) -> Option<Arc<Channel>> {
    match lock(&REGISTRY).get(&handle) {
        Some(Entry::Live(Object::Channel(c))) => Some(Arc::clone(c)),
        _ => None,
    }
}

/// The live outgoing packet under `handle`, without recording anything.
pub(crate) fn peek_packet(handle: usize) -> Option<Arc<OutPacket>> {
    match lock(&REGISTRY).get(&handle) {
        Some(Entry::Live(Object::Packet(p))) => Some(Arc::clone(p)),
        _ => None,
    }
}
