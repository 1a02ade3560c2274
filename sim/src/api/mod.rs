//! Layer 6, the top: the public Rust API. [`Vmbus`](vmbus::Vmbus) and its
//! [`Faults`](vmbus::Faults), [`Offer`](offer::Offer), the bridges to the safe `vmbus-kmcl`
//! layer (`safe`) and the [`EchoVsp`](echo::EchoVsp) device. Uses every layer below.

pub(crate) mod echo;
pub(crate) mod offer;
pub(crate) mod safe;
pub(crate) mod vmbus;
