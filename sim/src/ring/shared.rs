//! The state shared by the two endpoints of a ring: its memory and its counters.

use core::fmt;
use core::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use super::control::{ControlPage, ControlWord};
use super::memory::RingMemory;
use super::reader::RingReader;
use super::writer::RingWriter;
use super::{DESCRIPTOR_LEN, MAX_PACKET_LEN, PAGE_SIZE, RingError};

/// One VMBus ring: a 4096-byte control page followed by `data_pages × 4096` data bytes, in a
/// single zeroed, page-aligned allocation that is freed when the last [`Arc`] goes away.
///
/// A `Ring` is only reachable through its two endpoints ([`RingWriter::ring`],
/// [`RingReader::ring`]); it offers read-only inspection (control words, counters). Raw writes go
/// through [`RawAccess`](super::RawAccess), which borrows both endpoints.
pub struct Ring {
    memory: RingMemory,
    counters: Counters,
}

/// Event counters, updated by the endpoints with relaxed atomics.
#[derive(Default)]
pub(crate) struct Counters {
    pub(crate) writer_signals: AtomicU64,
    pub(crate) reader_signals: AtomicU64,
    pub(crate) packets_written: AtomicU64,
    pub(crate) bytes_written: AtomicU64,
    pub(crate) packets_read: AtomicU64,
    pub(crate) bytes_read: AtomicU64,
}

impl Counters {
    /// Adds `n` to a counter. Each counter has a single updating endpoint, so a load and a store
    /// suffice (no read-modify-write on the hot path).
    pub(crate) fn add(counter: &AtomicU64, n: u64) {
        counter.store(
            counter.load(Ordering::Relaxed).wrapping_add(n),
            Ordering::Relaxed,
        );
    }
}

/// A snapshot of a ring's counters. "Bytes" are ring bytes: `len8 * 8 + 8` per packet
/// (descriptor, header, padded payload, trailer).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RingCounters {
    /// Write commits that asked for a signal to the reader (empty→non-empty, mask clear).
    pub writer_signals: u64,
    /// Read commits that asked for a signal to the writer (`pending_send_sz` crossed).
    pub reader_signals: u64,
    /// Packets published by the writer.
    pub packets_written: u64,
    /// Ring bytes published by the writer.
    pub bytes_written: u64,
    /// Packets consumed (read index published) by the reader.
    pub packets_read: u64,
    /// Ring bytes consumed by the reader.
    pub bytes_read: u64,
}

impl Ring {
    /// Creates a ring with `data_pages` data pages (data area `data_pages × 4096` bytes) and
    /// returns its only writer and only reader.
    ///
    /// The ring starts empty (both indices 0), unmasked, with `pending_send_sz = 0` and the
    /// `feat_pending_send_sz` feature bit set (both endpoints implement flow control).
    ///
    /// # Errors
    /// [`RingError::InvalidPageCount`] if `data_pages` is 0 or above
    /// [`MAX_DATA_PAGES`](super::MAX_DATA_PAGES); [`RingError::AllocationFailed`] if the memory
    /// cannot be allocated.
    pub fn create(data_pages: usize) -> Result<(RingWriter, RingReader), RingError> {
        let ring = Arc::new(Self {
            memory: RingMemory::new(data_pages)?,
            counters: Counters::default(),
        });
        Ok((RingWriter::new(Arc::clone(&ring)), RingReader::new(ring)))
    }

    /// Size of the data area, in bytes (a non-zero multiple of 4096).
    #[must_use]
    pub const fn data_size(&self) -> u32 {
        self.memory.data_size()
    }

    /// Number of data pages.
    #[must_use]
    pub const fn data_pages(&self) -> usize {
        self.memory.data_size() as usize / PAGE_SIZE
    }

    /// Largest packet the ring accepts, in bytes (`len8 * 8`, trailer excluded):
    /// `min(MAX_PACKET_LEN, data_size - 16)`, so that packet + trailer fit in `data_size - 8`.
    #[must_use]
    pub fn max_packet_len(&self) -> u32 {
        let by_ring = self.data_size().saturating_sub(DESCRIPTOR_LEN as u32);
        by_ring.min(MAX_PACKET_LEN as u32)
    }

    /// Current value of a control word (atomic load, sequentially consistent).
    #[must_use]
    pub fn control_word(&self, word: ControlWord) -> u32 {
        self.memory.control().word(word).load(Ordering::SeqCst)
    }

    /// A snapshot of the counters.
    #[must_use]
    pub fn counters(&self) -> RingCounters {
        let c = &self.counters;
        RingCounters {
            writer_signals: c.writer_signals.load(Ordering::Relaxed),
            reader_signals: c.reader_signals.load(Ordering::Relaxed),
            packets_written: c.packets_written.load(Ordering::Relaxed),
            bytes_written: c.bytes_written.load(Ordering::Relaxed),
            packets_read: c.packets_read.load(Ordering::Relaxed),
            bytes_read: c.bytes_read.load(Ordering::Relaxed),
        }
    }

    pub(crate) fn control(&self) -> &ControlPage {
        self.memory.control()
    }

    pub(crate) const fn memory(&self) -> &RingMemory {
        &self.memory
    }

    pub(crate) const fn counters_raw(&self) -> &Counters {
        &self.counters
    }
}

impl fmt::Debug for Ring {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Ring")
            .field("data_size", &self.data_size())
            .field("write_index", &self.control_word(ControlWord::WriteIndex))
            .field("read_index", &self.control_word(ControlWord::ReadIndex))
            .field(
                "interrupt_mask",
                &self.control_word(ControlWord::InterruptMask),
            )
            .field(
                "pending_send_size",
                &self.control_word(ControlWord::PendingSendSize),
            )
            .field("counters", &self.counters())
            .finish()
    }
}
