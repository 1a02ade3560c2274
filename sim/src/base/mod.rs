//! Layer 1, above `ring`: leaf utilities every higher layer may use. Poison-tolerant locks and
//! events (`event`, the only blocking waits), thread start and join (`spawn`, the only
//! `std::thread` use), the seeded scheduler that runs those threads one at a time (`schedule`), status codes, scopes, host profiles, the slot catalogue and interface
//! versions, and guest memory with its MDLs. Uses only `ring`.

pub(crate) mod event;
pub(crate) mod memory;
pub(crate) mod profile;
pub mod schedule;
pub mod scope;
pub(crate) mod slot;
pub(crate) mod spawn;
pub mod status;
