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
//! * [`WriteBatch::commit`] publishes the write index, issues a full fence, and asks for a signal
//!   only when the reader's interrupt mask is clear and the ring was empty before the batch.
//! * [`ReadBatch::commit`] publishes the read index, issues a full fence, and asks for a signal only
//!   when the writer's `pending_send_sz` is crossed (OpenVMM form, the interrupt mask is not
//!   consulted).
//! * [`RingReader::unmask_interrupts`] clears the mask, fences, and re-checks for data.
//! * [`RingWriter::wait_for_space`] sets `pending_send_sz`, fences, and re-checks for space.
//!
//! The feature bit `feat_pending_send_sz` (bit 0 of the feature word) is set when the ring is
//! created: both endpoints of the emulator implement pending-send-size flow control.
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
