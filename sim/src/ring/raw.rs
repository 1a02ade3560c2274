//! Raw access to a ring's memory, for tests, independent parsers and fault injection.

use core::sync::atomic::Ordering;
use std::sync::Arc;

use super::control::ControlWord;
use super::reader::RingReader;
use super::shared::Ring;
use super::writer::RingWriter;
use super::{PAGE_SIZE, RingError};

/// Exclusive raw access to one ring: read or overwrite any control word or data byte.
///
/// It mutably borrows **both** endpoints of the ring, so while it exists no packet copy can be in
/// progress and raw data accesses cannot race with them. Poking the two index words is `unsafe`:
/// a wild but in-range index outlives this borrow and can make the endpoints' regions overlap, so
/// the endpoints must then not be used from two threads at once (see
/// [`RawAccess::set_write_index`]). Every other poke is safe: a bad descriptor, header, mask or
/// pending size only produces errors or signals.
pub struct RawAccess<'a> {
    ring: Arc<Ring>,
    _writer: &'a mut RingWriter,
    _reader: &'a mut RingReader,
}

impl core::fmt::Debug for RawAccess<'_> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("RawAccess")
            .field("ring", &self.ring)
            .finish_non_exhaustive()
    }
}

impl<'a> RawAccess<'a> {
    /// Borrows the writer and the reader of one ring.
    ///
    /// # Errors
    /// [`RingError::MismatchedEndpoints`] if they belong to different rings.
    pub fn new(writer: &'a mut RingWriter, reader: &'a mut RingReader) -> Result<Self, RingError> {
        if !Arc::ptr_eq(writer.ring(), reader.ring()) {
            return Err(RingError::MismatchedEndpoints);
        }
        Ok(Self {
            ring: Arc::clone(writer.ring()),
            _writer: writer,
            _reader: reader,
        })
    }

    /// Size of the data area, in bytes.
    #[must_use]
    pub fn data_size(&self) -> u32 {
        self.ring.data_size()
    }

    /// Current value of a named control word.
    #[must_use]
    pub fn control_word(&self, word: ControlWord) -> u32 {
        self.ring.control_word(word)
    }

    /// The 32-bit control-page word at `byte_offset` (a multiple of 4 below 4096).
    ///
    /// # Errors
    /// [`RingError::RawAccessOutOfRange`] for an unaligned or out-of-page offset.
    pub fn load_control(&self, byte_offset: usize) -> Result<u32, RingError> {
        self.ring
            .control()
            .word_at(byte_offset)
            .map(|w| w.load(Ordering::SeqCst))
            .ok_or(RingError::RawAccessOutOfRange {
                offset: byte_offset,
                len: 4,
            })
    }

    /// Overwrites the 32-bit control-page word at `byte_offset` (a multiple of 4 below 4096),
    /// except the two indices (use [`RawAccess::set_write_index`] and
    /// [`RawAccess::set_read_index`]).
    ///
    /// # Errors
    /// [`RingError::RawAccessOutOfRange`] for an unaligned or out-of-page offset, or for byte
    /// offsets 0 and 4 (the indices).
    pub fn store_control(&mut self, byte_offset: usize, value: u32) -> Result<(), RingError> {
        let out_of_range = RingError::RawAccessOutOfRange {
            offset: byte_offset,
            len: 4,
        };
        if byte_offset < 8 {
            return Err(out_of_range);
        }
        let word = self
            .ring
            .control()
            .word_at(byte_offset)
            .ok_or(out_of_range)?;
        word.store(value, Ordering::SeqCst);
        Ok(())
    }

    /// Overwrites `interrupt_mask`.
    pub fn set_interrupt_mask(&mut self, value: u32) {
        self.ring
            .control()
            .interrupt_mask
            .store(value, Ordering::SeqCst);
    }

    /// Overwrites `pending_send_sz` (any value, e.g. the bogus `data_size - 1` some peers use).
    pub fn set_pending_send_size(&mut self, value: u32) {
        self.ring
            .control()
            .pending_send_size
            .store(value, Ordering::SeqCst);
    }

    /// Overwrites `feature_bits`.
    pub fn set_feature_bits(&mut self, value: u32) {
        self.ring
            .control()
            .feature_bits
            .store(value, Ordering::SeqCst);
    }

    /// Overwrites the shared `write_index` word as a hostile writer would. The reader validates
    /// it on its next use; the writer ignores it (it keeps its own copy) and overwrites it at its
    /// next commit.
    ///
    /// # Safety
    /// Until the writer's next commit restores a consistent index, the ring's writer and reader
    /// must not be used concurrently from different threads: a wild but valid-looking index can
    /// make the reader copy bytes the writer is writing, which is a data race. Invalid values
    /// (unaligned, `>= data_size`) and single-threaded use are always fine.
    pub unsafe fn set_write_index(&mut self, value: u32) {
        self.ring
            .control()
            .write_index
            .store(value, Ordering::SeqCst);
    }

    /// Overwrites the shared `read_index` word as a hostile reader would. The writer validates it
    /// on its next use; the reader ignores it and overwrites it at its next commit.
    ///
    /// # Safety
    /// As for [`RawAccess::set_write_index`]: until the reader's next commit, the endpoints must
    /// not be used concurrently from different threads.
    pub unsafe fn set_read_index(&mut self, value: u32) {
        self.ring
            .control()
            .read_index
            .store(value, Ordering::SeqCst);
    }

    fn check_span(&self, offset: u32, len: usize) -> Result<(), RingError> {
        let size = self.ring.data_size();
        if offset < size && len <= size as usize {
            Ok(())
        } else {
            Err(RingError::RawAccessOutOfRange {
                offset: offset as usize,
                len,
            })
        }
    }

    /// Copies `out.len()` data-area bytes starting at byte `offset`, wrapping at the end.
    ///
    /// # Errors
    /// [`RingError::RawAccessOutOfRange`] unless `offset < data_size` and
    /// `out.len() <= data_size`.
    pub fn read_data(&self, offset: u32, out: &mut [u8]) -> Result<(), RingError> {
        self.check_span(offset, out.len())?;
        // SAFETY: both endpoints are mutably borrowed by `self`, so neither can be copying; they
        // are the only code that writes data bytes, hence no concurrent writer.
        unsafe { self.ring.memory().read_at(offset, out) };
        Ok(())
    }

    /// Overwrites `src.len()` data-area bytes starting at byte `offset`, wrapping at the end.
    /// Use it to corrupt a published packet; the reader validates on its next read.
    ///
    /// # Errors
    /// [`RingError::RawAccessOutOfRange`] unless `offset < data_size` and
    /// `src.len() <= data_size`.
    pub fn write_data(&mut self, offset: u32, src: &[u8]) -> Result<(), RingError> {
        self.check_span(offset, src.len())?;
        // SAFETY: both endpoints are mutably borrowed by `self` (exclusively, `&mut self`), so no
        // other access to the data area can be in progress.
        unsafe { self.ring.memory().write_at(offset, src) };
        Ok(())
    }

    /// Copies the whole ring memory into `out`: the 4096-byte control page (each word stored
    /// little-endian) followed by the data area.
    ///
    /// # Errors
    /// [`RingError::RawAccessOutOfRange`] unless `out.len() == 4096 + data_size`.
    pub fn snapshot(&self, out: &mut [u8]) -> Result<(), RingError> {
        let size = self.ring.data_size() as usize;
        let bad = RingError::RawAccessOutOfRange {
            offset: 0,
            len: out.len(),
        };
        if out.len() != PAGE_SIZE + size {
            return Err(bad);
        }
        let (page, data) = out.split_at_mut_checked(PAGE_SIZE).ok_or(bad)?;
        let control = self.ring.control();
        for (i, chunk) in page.chunks_exact_mut(4).enumerate() {
            let value = control
                .word_at(i * 4)
                .map_or(0, |w| w.load(Ordering::SeqCst));
            chunk.copy_from_slice(&value.to_le_bytes());
        }
        self.read_data(0, data)
    }
}
