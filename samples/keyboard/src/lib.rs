//! # vmbus-kbd
//!
//! A sample KMDF driver for the Hyper-V synthetic keyboard, on [`vmbus_kmcl`]: it binds to the
//! keyboard's VMBus interface type ([`protocol::INTERFACE_TYPE`]), negotiates protocol version
//! 1.0 with an unmodified Hyper-V host, turns the host's keystroke events into
//! `KEYBOARD_INPUT_DATA` records for kbdclass, and forwards the LED indicators to the host.
//!
//! Layout:
//! - [`protocol`]: the wire protocol and the translation to [`protocol::KeyboardInputData`];
//! - [`client`]: the portable VMBus logic ([`client::Keyboard`], [`client::KbdClient`]) and the
//!   traits the environment implements ([`client::InputSink`], [`client::Platform`]);
//! - [`ioctl`]: the keyboard port IOCTLs kbdclass sends, their structures, and the
//!   [`ioctl::KeyboardSettings`] (indicators, typematic) the port keeps;
//! - `driver` (Windows with a WDK and the `driver` feature only, `cfg(kbd_driver)`): the KMDF
//!   glue, a keyboard port device under kbdclass.
//!
//! Everything but `driver` builds and is tested on any host; `vmbus-kbd-sim` runs the same
//! `client` code over the `vmbus-kmcl-sim` emulator against an emulated host keyboard.
#![no_std]
#![cfg_attr(
    test,
    allow(
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::panic,
        clippy::indexing_slicing
    )
)]

// Outside the driver build the cdylib links std for its panic handler; the library code itself
// only uses `core`.
#[cfg(not(kbd_driver))]
extern crate std;

// The kernel panic handler (bug check) of the driver build.
#[cfg(all(kbd_driver, not(test)))]
extern crate wdk_panic;

pub mod client;
pub mod ioctl;
pub mod protocol;

#[cfg(kbd_driver)]
mod driver;
