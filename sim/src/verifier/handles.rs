//! The mechanics of the handle registry, generic over what a handle refers to: live handles and
//! tombstones, synthetic handle values, and violations no bus owns.
//!
//! The registry itself (which objects exist, the one process-wide table, the calling thread's
//! bus, the typed lookups the slots use) is `model::registry`; it instantiates [`Table`] with
//! its `Object` enum and the bus as [`Handled::Owner`], so this layer names no model type.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};

use crate::base::event::lock;
use crate::verifier::report::{Violation, ViolationKind};

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

/// What a handle refers to, as the table sees it.
pub(crate) trait Handled: Clone {
    /// What owns objects (the bus); tombstones keep a weak reference to it.
    type Owner;
    /// The handle's type.
    fn kind(&self) -> HandleKind;
    /// The owner of the object.
    fn owner(&self) -> Weak<Self::Owner>;
}

pub(crate) enum Entry<O: Handled> {
    Live(O),
    Dead {
        kind: HandleKind,
        bus: Weak<O::Owner>,
        why: &'static str,
    },
}

/// Handles and what they refer to (live objects and tombstones), behind one lock.
pub(crate) struct Table<O: Handled> {
    map: Mutex<BTreeMap<usize, Entry<O>>>,
}

static UNATTRIBUTED: Mutex<Vec<Violation>> = Mutex::new(Vec::new());
static NEXT_SYNTHETIC: AtomicU64 = AtomicU64::new(1);

/// Base of the synthetic handle range: canonical kernel-half addresses, which a user-space
/// allocation on a 64-bit host can never have.
const SYNTHETIC_BASE: u64 = 0xFFFF_A000_0000_0000;

/// A fresh synthetic handle: 16-byte aligned, never 0, never reused.
pub(crate) fn synthetic_handle() -> usize {
    let n = NEXT_SYNTHETIC.fetch_add(1, Ordering::Relaxed);
    let value = SYNTHETIC_BASE.wrapping_add(n.wrapping_mul(16));
    usize::try_from(value).unwrap_or(usize::MAX & !15)
}

/// Records a violation no live bus owns on the process-wide list.
pub(crate) fn record_unattributed(v: Violation) {
    lock(&UNATTRIBUTED).push(v);
}

/// Violations that could not be attributed to any live bus (a foreign handle on a thread that
/// never used a bus). Returns and clears the process-wide list.
#[must_use]
pub fn unattributed_violations() -> Vec<Violation> {
    core::mem::take(&mut *lock(&UNATTRIBUTED))
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

/// A failed lookup: the error, the owner of the handle if known, and the violation to record.
pub(crate) type Refusal<B> = (LookupError, Option<Arc<B>>, ViolationKind, String);

impl<O: Handled> Table<O> {
    pub(crate) const fn new() -> Self {
        Self {
            map: Mutex::new(BTreeMap::new()),
        }
    }

    /// The owner of (the object that is or was under) `handle`, if it is still alive.
    pub(crate) fn owner(&self, handle: usize) -> Option<Arc<O::Owner>> {
        match lock(&self.map).get(&handle)? {
            Entry::Live(o) => o.owner().upgrade(),
            Entry::Dead { bus, .. } => bus.upgrade(),
        }
    }

    /// Registers a live object under `handle`, replacing a tombstone. Returns false (and
    /// changes nothing) if a live object already has that handle.
    pub(crate) fn insert(&self, handle: usize, object: O) -> bool {
        let mut reg = lock(&self.map);
        if matches!(reg.get(&handle), Some(Entry::Live(_))) {
            return false;
        }
        reg.insert(handle, Entry::Live(object));
        true
    }

    /// The kind of the live object under `handle`, if any.
    pub(crate) fn live_kind(&self, handle: usize) -> Option<HandleKind> {
        match lock(&self.map).get(&handle) {
            Some(Entry::Live(o)) => Some(o.kind()),
            _ => None,
        }
    }

    /// Replaces the live object under `handle` with a tombstone and returns it (to be dropped
    /// by the caller, outside the table lock).
    pub(crate) fn retire(&self, handle: usize, why: &'static str) -> Option<O> {
        let mut reg = lock(&self.map);
        let entry = reg.get_mut(&handle)?;
        let Entry::Live(object) = entry else {
            return None;
        };
        let tomb = Entry::Dead {
            kind: object.kind(),
            bus: object.owner(),
            why,
        };
        match core::mem::replace(entry, tomb) {
            Entry::Live(o) => Some(o),
            Entry::Dead { .. } => None,
        }
    }

    /// Removes every entry (live or dead) owned by `bus` (by address); returns the live objects
    /// so the caller can drop them outside the lock.
    pub(crate) fn purge(&self, bus: *const O::Owner) -> Vec<O> {
        let mut reg = lock(&self.map);
        let keys: Vec<usize> = reg
            .iter()
            .filter(|(_, e)| {
                let owner = match e {
                    Entry::Live(o) => o.owner(),
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

    /// The live object under `handle` passed through `f`, without recording anything.
    pub(crate) fn peek<R>(&self, handle: usize, f: impl FnOnce(&O) -> Option<R>) -> Option<R> {
        match lock(&self.map).get(&handle) {
            Some(Entry::Live(o)) => f(o),
            _ => None,
        }
    }

    /// Looks `handle` up as a `want`; fails if it is null, unknown, of another type, or
    /// released, with the violation to record. A released handle of the right type whose
    /// tombstone reason starts with `again.0` is reported as `again.1` (double free / double
    /// completion) instead of use-after-free.
    pub(crate) fn lookup_as(
        &self,
        handle: usize,
        want: HandleKind,
        again: Option<(&'static str, ViolationKind)>,
    ) -> Result<O, Refusal<O::Owner>> {
        let reg = lock(&self.map);
        match reg.get(&handle) {
            Some(Entry::Live(o)) if o.kind() == want => Ok(o.clone()),
            Some(Entry::Live(o)) => Err((
                LookupError::Invalid,
                o.owner().upgrade(),
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
    }
}
