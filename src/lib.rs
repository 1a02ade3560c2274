//! # vmbus-kmcl
//!
//! Rust bindings to the Hyper-V VMBus Kernel Mode Client Library (KMCL, `vmbkmcl.sys`) for KMDF
//! client drivers (VSCs) in Windows guests.
//!
//! Layers (see `DESIGN.md` of the project):
//! 1. [`sys`]: the raw ABI, layout-exact, with the C names of `vmbuskernelmodeclientlibapi.h`.
//! 2. The safe layer (channels, packets, GPADLs) — built on `sys`.
//! 3. The WDF glue (Windows with the `wdk` feature only): the interface query.
//!
//! The crate is `no_std`, never panics and never allocates.
#![no_std]
#![deny(missing_docs)]
#![cfg_attr(
    test,
    allow(
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::panic,
        clippy::indexing_slicing
    )
)]

pub mod sys;
