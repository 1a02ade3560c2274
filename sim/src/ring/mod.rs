//! VMBus ring buffer with the real wire format (`docs/spec/vmbus-ring.md` §1).
//!
//! # Memory layout
//!
//! A ring is one page-aligned allocation: a 4096-byte control page (write index at byte 0,
//! read index at 4, interrupt mask at 8, `pending_send_sz` at 12, feature bits at 64) followed by
//! a data area of `N × 4096` bytes, `N ≥ 1`. Indices are byte offsets into the data area, always
//! multiples of 8 and smaller than the data size; the ring is empty when they are equal, and a
//! writer always leaves 8 bytes free so that full and empty differ (at most `data_size - 8` bytes
//! are in flight).
//!
//! Every packet is a 16-byte descriptor `{u16 type, u16 offset8, u16 len8, u16 flags,
//! u64 transaction_id}`, an optional type-specific header (GPA-direct ranges, transfer-page
//! ranges), the payload, zero padding to a multiple of 8, and an 8-byte little-endian trailer
//! whose value is `(start offset as u64) << 32`. Packets and descriptors may wrap around the end
//! of the data area.
//!
//! # Endpoints
//!
//! [`Ring::create`] returns the only [`RingWriter`] and the only [`RingReader`] of a ring. Each holds
//! an [`Arc`](std::sync::Arc) of the shared [`Ring`], so they can live on different threads (the
//! emulated guest and the emulated host). The control words are atomics; packet bytes are copied
//! with plain memory copies, and the protocol (acquire loads of the peer's index before touching
//! bytes, release stores when publishing) keeps the writer's and the reader's regions apart.
//!
//! Both endpoints copy: the writer gathers the caller's slices into the ring, and the reader copies
//! the whole packet out into a caller buffer **before** validating it, so a peer that rewrites
//! bytes after they were read cannot change what was validated (spec §5, pain point 4).
//! Neither path allocates.
//!
//! # Signalling (spec §1.8)
//!
//! * [`WriteBatch::commit`] publishes the write index with a sequentially consistent store (a full
//!   barrier before the loads that follow, as a fence would be), and asks for a signal only when
//!   the reader's interrupt mask is clear and the ring was empty before the batch.
//! * [`ReadBatch::commit`] publishes the read index the same way, and asks for a signal only
//!   when the writer's `pending_send_sz` is crossed (OpenVMM form, the interrupt mask is not
//!   consulted).
//! * [`RingReader::unmask_interrupts`] clears the mask, fences, and re-checks for data.
//! * [`RingWriter::wait_for_space`] sets `pending_send_sz`, fences, and re-checks for space.
//!
//! The feature bit `feat_pending_send_sz` (bit 0 of the feature word) is set when the ring is
//! created: both endpoints of the emulator implement pending-send-size flow control.
//!
//! # Rings over caller memory
//!
//! [`Ring::create`] owns its memory. To share a ring with code that is not this crate's (another
//! implementation of the ring, a user's own host device, a model of real hardware), build one
//! endpoint over memory the caller supplies with the `unsafe` [`RingWriter::over_raw`] or
//! [`RingReader::over_raw`]: the caller names the control page, the number of data pages and
//! the index the endpoint starts at, and promises that the memory stays valid and that only
//! the peer endpoint touches it (by the protocol). [`Ring::base`] gives the memory of any ring,
//! so a foreign endpoint can also attach to one of the emulator's; [`Ring::create_at`] starts
//! an emulator-owned ring at chosen indices. The endpoints work exactly as those of
//! [`Ring::create`]: copy out, then validate, every peer value checked, poisoned on corruption.
//! The control page stays readable from either side ([`Ring::control_word`],
//! [`Ring::control_page`]).
//!
//! ```
//! use core::ptr::NonNull;
//! use std::alloc::{Layout, alloc_zeroed, dealloc};
//! use vmbus_kmcl_sim::ring::{
//!     ControlWord, OutgoingPacket, PAGE_SIZE, Ring, RingError, RingReader, RingWriter,
//! };
//!
//! # fn main() -> Result<(), RingError> {
//! // The caller's memory: a control page and two data pages, page-aligned.
//! let layout = Layout::from_size_align(3 * PAGE_SIZE, PAGE_SIZE).unwrap();
//! // SAFETY: the layout has a non-zero size.
//! let base = NonNull::new(unsafe { alloc_zeroed(layout) }).unwrap();
//!
//! // A writer and a reader over it, both starting at byte 4096 of the data area.
//! // SAFETY: the memory is initialised and outlives both endpoints (freed below, after them);
//! // there is one writer and one reader, and nothing else touches the memory.
//! let mut writer = unsafe { RingWriter::over_raw(base, 2, 4096) }?;
//! // SAFETY: as above.
//! let mut reader = unsafe { RingReader::over_raw(base, 2, 4096) }?;
//! let outcome = writer.write(&OutgoingPacket::in_band(7, true, &[b"hello, ring!"]))?;
//! assert_eq!(outcome.bytes, 16 + 16 + 8); // descriptor, padded payload, trailer
//! assert_eq!(reader.ring().control_word(ControlWord::WriteIndex), 4096 + 40);
//!
//! let mut buf = [0u8; 64];
//! let read = reader.read(&mut buf)?.expect("one packet");
//! assert_eq!(read.packet.transaction_id(), 7);
//! assert_eq!(&read.packet.payload()[..12], b"hello, ring!");
//! assert_eq!(reader.ring().control_page()[4..8], (4096u32 + 40).to_le_bytes());
//! drop((writer, reader));
//! // SAFETY: allocated above with this layout; both endpoints are gone.
//! unsafe { dealloc(base.as_ptr(), layout) };
//!
//! // A foreign reader attached to an emulator-owned ring, in place of the emulator's reader.
//! let (mut writer, emulator_reader) = Ring::create(1)?;
//! drop(emulator_reader);
//! // SAFETY: `writer` keeps the ring's memory alive for longer than `foreign` (dropped
//! // first, below); the emulator's reader is gone, so this is the only reader.
//! let mut foreign = unsafe { RingReader::over_raw(writer.ring().base(), 1, 0) }?;
//! writer.write(&OutgoingPacket::in_band(1, false, &[b"8 bytes!"]))?;
//! let read = foreign.read(&mut buf)?.expect("one packet");
//! assert_eq!(read.packet.payload(), b"8 bytes!");
//! drop(foreign);
//! drop(writer);
//! # Ok(())
//! # }
//! ```
//!
//! # Hostile peers
//!
//! Every value the peer controls (its index, every descriptor field, every GPA-direct and
//! transfer-page header field) is validated; a bad value produces a distinct [`RingError`] and the
//! endpoint that saw it stops (it is *poisoned*: later calls return the same error and it never
//! advances). [`RawAccess`] lets a test or a fault-injecting host poke raw control words and data
//! bytes, and [`WriteBatch::write_raw`] publishes arbitrary bytes as if they were packets.

mod control;
mod error;
mod gpa;
mod index;
mod memory;
mod raw;
mod reader;
mod shared;
mod transfer;
mod wire;
mod writer;

pub use control::ControlWord;
pub use error::RingError;
pub use gpa::{
    GpaRange, GpaRangeSpec, GpaRanges, Pfns, encode_gpa_direct_header, gpa_direct_header_len,
    pfn_count,
};
pub use raw::RawAccess;
pub use reader::{IncomingPacket, ReadBatch, ReadCommit, ReadOutcome, RingReader};
pub use shared::{Ring, RingCounters};
pub use transfer::{TransferPageRange, TransferPageRanges, TransferPages};
pub use wire::{FLAG_COMPLETION_REQUESTED, PacketType, packet_ring_bytes};
pub use writer::{OutgoingPacket, RingWriter, WriteBatch, WriteOutcome};

/// Size of a VMBus page and of the control page, in bytes (always 4 KiB on the wire).
pub const PAGE_SIZE: usize = 4096;

/// Size of the packet descriptor (`struct vmpacket_descriptor`), in bytes.
pub const DESCRIPTOR_LEN: usize = 16;

/// Size of the trailer written after every packet, in bytes.
pub const TRAILER_LEN: usize = 8;

/// Largest packet length (`len8 * 8`, descriptor and padding included, trailer excluded) that the
/// 16-bit `len8` field can express: 65535 × 8 = 524,280 bytes. A ring further limits a packet to
/// `data_size - 16` bytes so that the packet plus its trailer fits in `data_size - 8` bytes.
pub const MAX_PACKET_LEN: usize = 0xFFFF * 8;

/// Largest number of data pages a ring may have (1 GiB of data area). This keeps every sum of two
/// indices inside `u32`.
pub const MAX_DATA_PAGES: usize = 1 << 18;
