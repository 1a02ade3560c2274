//! # vmbus-echo-sim
//!
//! Runs the `vmbus-echo` sample driver's portable VMBus logic over the `vmbus-kmcl-sim`
//! emulator: the same `vmbus_echo::client` code the KMDF driver runs, calling a real KMCL
//! function table, with real VMBus rings between it and an emulated host.
//!
//! - [`vsp`]: [`EchoHost`], the host side of the echo protocol (a `HostDevice`), honest or
//!   hostile;
//! - [`platform`]: [`StdPlatform`], the client's clock and wait/notify on a host;
//! - [`harness`]: [`run`] (the main job, `cargo run -p vmbus-echo-sim --release`) and [`Rig`]
//!   for tests.
#![cfg_attr(
    test,
    allow(
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::panic,
        clippy::indexing_slicing
    )
)]

pub mod harness;
pub mod platform;
pub mod vsp;

pub use harness::{Options, Paths, Report, Rig, SimChannel, run};
pub use platform::{AckWorker, StdPlatform};
pub use vsp::{EchoHost, HostConfig, HostControl, HostStats, HostileKind};
