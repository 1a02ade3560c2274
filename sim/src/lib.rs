//! In-process emulator of the VMBus Kernel Mode Client Library (KMCL) and of the host endpoint.
//!
//! Host-only (`std`). The rings use the real VMBus wire format (see `ring`).
#![cfg_attr(
    test,
    allow(
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::panic,
        clippy::indexing_slicing
    )
)]

pub mod ring;
