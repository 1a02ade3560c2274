//! # vmbus-kmcl
//!
//! Rust bindings to the Hyper-V VMBus Kernel Mode Client Library (KMCL, `vmbkmcl.sys`) for
//! KMDF client drivers (VSCs) in Windows guests.
//!
//! Layers:
//! 1. [`sys`]: the raw ABI, layout-exact, with the C names of `vmbuskernelmodeclientlibapi.h`.
//! 2. The safe layer: [`KmclInterface`] (the queried function table), [`Channel`] with its
//!    [`ChannelHandler`], [`OutgoingPacket`] / [`Completion`], [`IncomingPacket`], [`Gpadl`],
//!    [`NtStatus`] and the flag sets. Each type owns exactly one KMCL resource and releases it
//!    in `Drop`.
//! 3. The WDF glue (Windows with the `wdk` feature in a KMDF build): the interface query.
//!
//! The crate is `no_std`, never panics and never allocates: every send, completion and receive
//! path is allocation-free.
//!
//! ```no_run
//! use core::pin::pin;
//! use vmbus_kmcl::{Channel, ChannelConfig, ChannelHandler, Completion, IncomingPacket};
//! use vmbus_kmcl::{KmclInterface, ParentDevice, SendFlags};
//!
//! struct Echo;
//! impl ChannelHandler for Echo {
//!     type PacketContext = u64;
//!     fn process_packet(&self, _: &Channel<Self>, packet: IncomingPacket<'_>) {
//!         let data = packet.data();
//!         let _ = packet.complete(data); // echo the request back as the completion
//!     }
//!     fn packet_completed(&self, _: &Channel<Self>, done: Completion<'_, u64>) {
//!         let _ = (done.status, done.response, done.context);
//!     }
//! }
//!
//! # fn run(interface: &KmclInterface, parent: ParentDevice) -> vmbus_kmcl::Result<()> {
//! let config = ChannelConfig::new().ring_buffer_pages(16, 16).maximum_packet_size(4096);
//! let channel = pin!(Channel::new(interface, parent, &config, Echo)?);
//! channel.as_ref().enable()?;
//! channel.send(b"ping", SendFlags::WAIT_FOR_COMPLETION, 1)?;
//! # Ok(()) }
//! ```
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

mod callbacks;
mod channel;
mod flags;
mod gpadl;
mod handler;
mod incoming;
mod interface;
pub mod mdl;
mod packet;
mod pool;
mod routes;
mod status;
#[cfg(kmcl_kmdf)]
mod wdf;

pub use channel::{Channel, ChannelConfig, ParentDevice, channel_storage_size};
pub use flags::{ChannelInitFlags, ExternalDataFlags, GpadlFlags, ProcessPacketFlags, SendFlags};
pub use gpadl::Gpadl;
pub use handler::{ChannelHandler, PacketContext};
pub use incoming::{ExternalData, IncomingPacket};
pub use interface::{InterfaceVersion, KmclInterface};
pub use packet::{Completion, OutgoingPacket};
pub use pool::{PacketPool, PoolWord};
pub use status::{NtStatus, Result};
