//! # vmbus-echo
//!
//! A sample KMDF VMBus client driver (VSC) on [`vmbus_kmcl`]: it binds to the echo device's
//! VMBus interface type ([`protocol::INTERFACE_TYPE`]), negotiates the echo protocol with the
//! host, and exercises every ring path: pings sent from a packet pool and completed with the
//! echo in the completion, host-initiated notifications (the receive path, pended and
//! acknowledged later from another thread), a bulk transfer through a GPADL kept for the whole
//! session, and the synchronous request.
//!
//! Layout:
//! - [`protocol`]: the wire protocol (zerocopy structs, strict parsing, typed rejections);
//! - [`client`]: the portable VMBus logic, taking a queried [`vmbus_kmcl::KmclInterface`] and a
//!   [`vmbus_kmcl::ParentDevice`]: the [`client::EchoClient`] handler, the
//!   [`client::EchoChannel`] (the channel with its packet pool and bulk GPADL beside it) and the
//!   [`client::Session`] operations;
//! - [`stats`]: the allocation-free latency histogram;
//! - [`ioctl`]: the user-mode ping IOCTL;
//! - `driver` (Windows with a WDK and the `driver` feature only, `cfg(echo_driver)`): the KMDF
//!   glue (`DriverEntry`, `EvtDeviceAdd`, PnP and power callbacks, the IOCTL queue, the work
//!   item that acknowledges pended host packets), which only calls into `client`.
//!
//! Everything but `driver` builds and is tested on any host; `vmbus-echo-sim` runs the same
//! `client` code over the `vmbus-kmcl-sim` emulator.
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
#[cfg(not(echo_driver))]
extern crate std;

// The kernel panic handler (bug check) of the driver build.
#[cfg(all(echo_driver, not(test)))]
extern crate wdk_panic;

pub mod client;
pub mod ioctl;
pub mod protocol;
pub mod stats;

#[cfg(echo_driver)]
mod driver;
