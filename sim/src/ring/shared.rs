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
    #[inline]
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

    /// Creates a ring as [`Ring::create`] does, with both indices starting at the given
    /// values instead of 0 (the ring holds `write_index - read_index` bytes, modulo the size, of
    /// zeroes, which a reader rejects as corrupt unless they are overwritten with packets first:
    /// start both at the same index for an empty ring).
    ///
    /// # Errors
    /// As [`Ring::create`]; [`RingError::InvalidStartIndex`] if an index is not 8-aligned or
    /// not below the data size.
    pub fn create_at(
        data_pages: usize,
        write_index: u32,
        read_index: u32,
    ) -> Result<(RingWriter, RingReader), RingError> {
        let memory = RingMemory::new(data_pages)?;
        let size = memory.data_size();
        for index in [write_index, read_index] {
            if !super::index::is_valid(index, size) {
                return Err(RingError::InvalidStartIndex { index });
            }
        }
        let control = memory.control();
        control.write_index.store(write_index, Ordering::Release);
        control.read_index.store(read_index, Ordering::Release);
        let ring = Arc::new(Self {
            memory,
            counters: Counters::default(),
        });
        Ok((
            RingWriter::new_at(Arc::clone(&ring), write_index),
            RingReader::new_at(ring, read_index),
        ))
    }

    /// A ring over caller-supplied memory (see [`RingWriter::over_raw`]).
    ///
    /// # Safety
    /// The contract of [`RingWriter::over_raw`] for `base` and `data_pages`.
    pub(crate) unsafe fn over_raw(
        base: core::ptr::NonNull<u8>,
        data_pages: usize,
        start_index: u32,
    ) -> Result<Arc<Self>, RingError> {
        // SAFETY: the caller's contract is `RingMemory::borrowed`'s.
        let memory = unsafe { RingMemory::borrowed(base, data_pages) }?;
        if !super::index::is_valid(start_index, memory.data_size()) {
            return Err(RingError::InvalidStartIndex { index: start_index });
        }
        Ok(Arc::new(Self {
            memory,
            counters: Counters::default(),
        }))
    }

    /// The start of the ring's memory: the control page, followed by the data area. This is
    /// what another endpoint ([`RingWriter::over_raw`], [`RingReader::over_raw`], another
    /// implementation, a device model) needs to share the ring; the pointer is valid while this
    /// `Ring` lives (for caller-supplied memory: while the caller keeps it valid).
    #[must_use]
    pub const fn base(&self) -> core::ptr::NonNull<u8> {
        self.memory.base()
    }

    /// A copy of the whole control page as it is now (each 32-bit word loaded atomically,
    /// little-endian on the wire), e.g. to check another implementation's view of the ring.
    #[must_use]
    pub fn control_page(&self) -> [u8; PAGE_SIZE] {
        let mut page = [0u8; PAGE_SIZE];
        let control = self.memory.control();
        for (offset, chunk) in (0..PAGE_SIZE).step_by(4).zip(page.chunks_exact_mut(4)) {
            if let Some(word) = control.word_at(offset) {
                chunk.copy_from_slice(&word.load(Ordering::SeqCst).to_le_bytes());
            }
        }
        page
    }

    /// Size of the data area, in bytes (a non-zero multiple of 4096).
    #[must_use]
    #[inline]
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
    #[inline]
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

    #[inline]
    pub(crate) fn control(&self) -> &ControlPage {
        self.memory.control()
    }

    #[inline]
    pub(crate) const fn memory(&self) -> &RingMemory {
        &self.memory
    }

    #[inline]
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
