//! # vmbus-kbd-sim
//!
//! Runs the `vmbus-kbd` sample driver's portable VMBus logic over the `vmbus-kmcl-sim`
//! emulator, against an emulated Hyper-V synthetic keyboard on real VMBus rings.
//!
//! - [`host`]: [`KbdHost`], the host side of the keyboard protocol (a `HostDevice`), honest or
//!   hostile;
//! - [`typist`]: text → the host's keystroke events (US layout, shift, E0 and E1 keys), and
//!   the records kbdclass receives → text;
//! - [`platform`]: [`SimPlatform`], the driver's clock, wait/notify and a recording model of
//!   kbdclass's service callback;
//! - [`harness`]: [`Rig`] for tests and [`run`], the typing job
//!   (`cargo run -p vmbus-kbd-sim --release -- --text "…"`).
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
pub mod host;
pub mod platform;
pub mod typist;

pub use harness::{Options, Report, Rig, run, wait_until};
pub use host::{HostConfig, HostControl, KbdHost, Negotiation};
pub use platform::SimPlatform;
