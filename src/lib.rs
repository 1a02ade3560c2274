//! # vmbus-kmcl
//!
//! Rust bindings to the Hyper-V VMBus Kernel Mode Client Library (KMCL, `vmbkmcl.sys`) for
//! KMDF client drivers (VSCs) in Windows guests.
//!
//! Layers:
//! 1. [`sys`]: the raw ABI, layout-exact, with the C names of `vmbuskernelmodeclientlibapi.h`.
//! 2. The safe layer: [`KmclInterface`] (the queried function table); [`Channel`] (the owner:
//!    lifecycle and teardown), [`ChannelCore`] (sends, settings, pools, GPADLs) and
//!    [`ChannelRef`] (a counted reference for state kept beside the channel), with the driver's
//!    [`ChannelHandler`]; [`Completion`], [`IncomingPacket`] and [`PendedPacket`];
//!    [`PacketPool`]; [`Gpadl`]; [`PassiveLevel`], the IRQL token; [`HostBytes`], the copying
//!    view of host memory; [`NtStatus`] and the flag sets.
//! 3. The WDF glue (Windows with the `wdk` feature in a KMDF build): the interface query.
//!
//! The crate is `no_std`. It never panics. It allocates once per channel, in [`Channel::new`]
//! (PASSIVE_LEVEL, through the global allocator); every send, completion and receive path is
//! allocation-free and lock-free.
//!
//! Soundness: no sequence of safe calls reaches undefined behaviour, including `mem::forget`,
//! leaks, calls from several threads at once and callbacks at DISPATCH_LEVEL. Memory KMCL or the
//! host can touch (the channel, pool storage, GPADL buffers) is owned by the channel's
//! allocation and freed only after KMCL has let go of it; forgetting a value leaks it.
//!
//! ```no_run
//! use vmbus_kmcl::{Channel, ChannelConfig, ChannelCore, ChannelHandler, Completion};
//! use vmbus_kmcl::{IncomingPacket, KmclInterface, ParentDevice, PassiveLevel, SendFlags};
//!
//! struct Echo;
//! impl ChannelHandler for Echo {
//!     type PacketContext = u64;
//!     fn process_packet(&self, _: &ChannelCore<Self>, packet: IncomingPacket<'_, Self>) {
//!         let mut request = [0_u8; 256];
//!         let n = packet.copy_data(&mut request); // copy host memory once, then use the copy
//!         let _ = packet.complete(&request[..n]); // echo it back as the completion
//!     }
//!     fn packet_completed(&self, _: &ChannelCore<Self>, done: Completion<'_, u64>) {
//!         let _ = (done.status, done.response.len(), done.context);
//!     }
//! }
//!
//! # fn run(interface: &KmclInterface, parent: ParentDevice) -> vmbus_kmcl::Result<()> {
//! let irql = PassiveLevel::check().ok_or(vmbus_kmcl::NtStatus::INVALID_DEVICE_STATE)?;
//! let config = ChannelConfig::new().ring_buffer_pages(16, 16).maximum_packet_size(4096);
//! let mut channel = Channel::new(&irql, interface, parent, &config, Echo)?; // keep it in the device context
//! channel.enable(&irql)?;
//! channel.send(b"ping", SendFlags::WAIT_FOR_COMPLETION, 1)?;
//! channel.close(&irql); // or drop it at PASSIVE_LEVEL
//! # Ok(()) }
//! ```
#![no_std]
#![cfg_attr(docsrs, feature(doc_cfg))]
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

mod buffer;
mod callbacks;
mod channel;
mod config;
mod flags;
mod gpadl;
mod handler;
mod host_bytes;
mod incoming;
mod interface;
pub mod irql;
pub mod mdl;
mod packet;
mod pool;
mod routes;
mod rundown;
pub mod spin;
mod state;
mod status;
#[cfg(any(kmcl_kmdf, docsrs))]
#[cfg_attr(docsrs, doc(cfg(all(windows, feature = "wdk"))))]
pub mod wdf;

pub use buffer::OwnedBuffer;
pub use channel::{Channel, ChannelCore, ChannelRef, channel_storage_size};
pub use config::{ChannelConfig, ParentDevice};
pub use flags::{ChannelInitFlags, ExternalDataFlags, GpadlFlags, ProcessPacketFlags, SendFlags};
pub use gpadl::{ExternalMemory, Gpadl, GpadlError, Page};
pub use handler::{ChannelHandler, PacketContext};
pub use host_bytes::HostBytes;
pub use incoming::{ExternalData, IncomingPacket, PendedPacket};
pub use interface::{InterfaceVersion, KmclInterface};
pub use irql::{Irql, PassiveLevel};
pub use packet::{Completion, OutgoingPacket};
pub use pool::{AttachPoolError, PacketPool, PoolWord};
pub use status::{NtStatus, Result};
