//! Layer 3: the channel model. The handle registry, the IRQL model, the driver's stored
//! callbacks, the per-bus shared state (`bus::Bus`), offers, the channel state machine,
//! GPADLs, incoming and outgoing packets, and the host side of a channel (the `HostDevice`
//! trait and what a device can do). Nothing here starts a thread or knows the thread loops:
//! it uses `verifier`, `base` and `ring` only.

pub(crate) mod bus;
pub(crate) mod callbacks;
pub(crate) mod channel;
pub(crate) mod gpadl;
pub(crate) mod host;
pub(crate) mod incoming;
pub mod irql;
pub(crate) mod offer;
pub(crate) mod outgoing;
pub(crate) mod registry;
