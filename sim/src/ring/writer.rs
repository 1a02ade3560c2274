//! The writing endpoint of a ring.

use core::ptr;
use core::sync::atomic::{Ordering, fence};
use std::sync::Arc;

use zerocopy::IntoBytes;
use zerocopy::little_endian::{U16, U64};

use super::index::{self, round_up8};
use super::shared::{Counters, Ring};
use super::wire::{FLAG_COMPLETION_REQUESTED, PacketType, WireDescriptor};
use super::{DESCRIPTOR_LEN, RingError, TRAILER_LEN, gpa, transfer};

/// Zero bytes used for padding (at most 7 are ever needed).
const ZEROS: [u8; 8] = [0; 8];

/// A packet to write, described by parts so that nothing needs to be assembled first.
///
/// On the wire it becomes: the 16-byte descriptor (`offset8 = (16 + header.len()) / 8`,
/// `len8 = round_up8(16 + header.len() + payload bytes) / 8`), `header`, the payload slices back
/// to back, zero padding to a multiple of 8, and the 8-byte trailer.
#[derive(Clone, Copy, Debug)]
pub struct OutgoingPacket<'a> {
    /// Packet type.
    pub packet_type: PacketType,
    /// Sets flag bit 0 (completion requested). No other flag can be set.
    pub completion_requested: bool,
    /// Transaction ID (opaque to the ring; 0 means "non-transactional" to Hyper-V).
    pub transaction_id: u64,
    /// Type-specific header placed between the descriptor and the payload; a multiple of 8 bytes.
    /// For [`PacketType::GpaDirect`] it must be a valid range array (see
    /// [`encode_gpa_direct_header`](super::encode_gpa_direct_header)); for
    /// [`PacketType::TransferPages`] a valid transfer-page header; otherwise usually empty.
    pub header: &'a [u8],
    /// Payload as a gather list; the slices are copied back to back.
    pub payload: &'a [&'a [u8]],
}

impl<'a> OutgoingPacket<'a> {
    /// An in-band (type 6) packet without a header.
    #[must_use]
    pub const fn in_band(
        transaction_id: u64,
        completion_requested: bool,
        payload: &'a [&'a [u8]],
    ) -> Self {
        Self {
            packet_type: PacketType::InBand,
            completion_requested,
            transaction_id,
            header: &[],
            payload,
        }
    }

    /// A completion (type 0xB) packet for `transaction_id`, flags 0 (spec §1.7).
    #[must_use]
    pub const fn completion(transaction_id: u64, payload: &'a [&'a [u8]]) -> Self {
        Self {
            packet_type: PacketType::Completion,
            completion_requested: false,
            transaction_id,
            header: &[],
            payload,
        }
    }

    /// A GPA-direct (type 9) packet with completion requested (as Linux sends them); `header` is
    /// the output of [`encode_gpa_direct_header`](super::encode_gpa_direct_header).
    #[must_use]
    pub const fn gpa_direct(
        transaction_id: u64,
        header: &'a [u8],
        payload: &'a [&'a [u8]],
    ) -> Self {
        Self {
            packet_type: PacketType::GpaDirect,
            completion_requested: true,
            transaction_id,
            header,
            payload,
        }
    }
}

/// Result of publishing writes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WriteOutcome {
    /// The reader must be signalled: its interrupt mask was clear and the ring went from empty to
    /// non-empty with this commit (spec §1.8).
    pub signal_needed: bool,
    /// Packets published by this commit.
    pub packets: u32,
    /// Ring bytes published by this commit (`len8 * 8 + 8` per packet).
    pub bytes: u32,
}

/// The only writing endpoint of a [`Ring`].
///
/// Writes go through a [`WriteBatch`] (or [`RingWriter::write`], a batch of one): packets are
/// copied into the free region and become visible to the reader only when the batch is
/// committed. The writer keeps its own copy of the write index and never trusts the one in
/// shared memory; it validates the reader's index (8-aligned, `< data_size`) before every use.
pub struct RingWriter {
    ring: Arc<Ring>,
    /// Committed write index (the value last published).
    write_index: u32,
    /// Whether this writer set `pending_send_sz` and has not cleared it yet.
    pending_set: bool,
    /// First peer-corruption error seen; the writer refuses to work after it.
    poisoned: Option<RingError>,
}

impl core::fmt::Debug for RingWriter {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("RingWriter")
            .field("write_index", &self.write_index)
            .field("pending_set", &self.pending_set)
            .field("poisoned", &self.poisoned)
            .field("ring", &self.ring)
            .finish()
    }
}

impl RingWriter {
    pub(crate) const fn new(ring: Arc<Ring>) -> Self {
        Self::new_at(ring, 0)
    }

    pub(crate) const fn new_at(ring: Arc<Ring>, write_index: u32) -> Self {
        Self {
            ring,
            write_index,
            pending_set: false,
            poisoned: None,
        }
    }

    /// The writeing half of a ring in memory the caller supplies (`base`: the 4096-byte control
    /// page, then `data_pages` × 4096 data bytes), starting at `write_index`. This is how another
    /// implementation of the ring, or a user's own host device, shares a ring with the
    /// emulator's: the reader may be a [`RingReader`](super::RingReader) over the same memory, the
    /// emulator's own endpoint (see [`Ring::base`]), or foreign code that follows the ring
    /// protocol.
    ///
    /// Nothing is written at construction (the control page is left as it is, readable with
    /// [`Ring::control_word`] and [`Ring::control_page`]); the endpoint keeps its own copy of
    /// its index, publishes it at its first commit, and validates every value the peer writes
    /// exactly as an endpoint from [`Ring::create`] does. The peer's index is read from the
    /// control page, so it must already be consistent with the chosen start (e.g. equal to it
    /// for an empty ring). Dropping the endpoint never frees the memory.
    ///
    /// # Errors
    /// [`RingError::InvalidPageCount`] for 0 or more than
    /// [`MAX_DATA_PAGES`](super::MAX_DATA_PAGES) pages; [`RingError::MisalignedMemory`] if
    /// `base` is not 4096-aligned; [`RingError::InvalidStartIndex`] if `write_index` is not
    /// 8-aligned or not below the data size.
    ///
    /// # Safety
    /// * `base` points to `(1 + data_pages) * 4096` initialised bytes that stay valid (readable,
    ///   writable, not freed) for as long as the endpoint and every [`Ring`] handle cloned from
    ///   it live.
    /// * No other writeing endpoint of this ring exists meanwhile.
    /// * Nobody holds a Rust reference into the memory meanwhile; every other access uses atomic
    ///   loads and stores for the control page and follows the ring protocol for the data area.
    pub unsafe fn over_raw(
        base: core::ptr::NonNull<u8>,
        data_pages: usize,
        write_index: u32,
    ) -> Result<Self, RingError> {
        // SAFETY: the caller's contract covers `Ring::over_raw`'s.
        let ring = unsafe { Ring::over_raw(base, data_pages, write_index) }?;
        Ok(Self::new_at(ring, write_index))
    }

    /// The shared ring (inspection: control words, counters, sizes).
    #[must_use]
    pub const fn ring(&self) -> &Arc<Ring> {
        &self.ring
    }

    /// The peer-corruption error that poisoned this writer, if any.
    #[must_use]
    pub const fn corruption(&self) -> Option<RingError> {
        self.poisoned
    }

    /// The write index this writer last published (byte offset, 8-aligned, `< data_size`).
    #[must_use]
    pub const fn write_index(&self) -> u32 {
        self.write_index
    }

    fn poison(&mut self, error: RingError) -> RingError {
        if self.poisoned.is_none() {
            self.poisoned = Some(error);
        }
        error
    }

    /// Loads the reader's index with acquire ordering (so the reader's copies out of the bytes we
    /// are about to overwrite happen before our writes) and validates it.
    #[inline]
    fn peer_read_index(&mut self) -> Result<u32, RingError> {
        if let Some(e) = self.poisoned {
            return Err(e);
        }
        let size = self.ring.data_size();
        let read = self.ring.control().read_index.load(Ordering::Acquire);
        if index::is_valid(read, size) {
            Ok(read)
        } else {
            Err(self.poison(RingError::InvalidReadIndex { index: read }))
        }
    }

    /// Ring bytes a packet can use right now (`data_size - in_flight - 8`).
    ///
    /// # Errors
    /// [`RingError::InvalidReadIndex`] (poisons the writer) if the reader's index is bad.
    pub fn free_bytes(&mut self) -> Result<u32, RingError> {
        let read = self.peer_read_index()?;
        Ok(index::free(self.write_index, read, self.ring.data_size()))
    }

    /// Starts a batch: packets written to it are published together by
    /// [`WriteBatch::commit`], with at most one signal. Dropping the batch without committing
    /// discards its packets (they were never visible to the reader).
    #[inline]
    pub const fn batch(&mut self) -> WriteBatch<'_> {
        let start = self.write_index;
        WriteBatch {
            writer: self,
            start,
            next: start,
            packets: 0,
            bytes: 0,
        }
    }

    /// Writes one packet and publishes it at once (a batch of one).
    ///
    /// # Errors
    /// See [`WriteBatch::write`]; on error nothing is published.
    #[inline]
    pub fn write(&mut self, packet: &OutgoingPacket<'_>) -> Result<WriteOutcome, RingError> {
        let mut batch = self.batch();
        batch.write(packet)?;
        Ok(batch.commit())
    }

    /// Stores `pending_send_sz`: the writer is blocked until `bytes` ring bytes are free (pass
    /// the `needed` of [`RingError::NotEnoughSpace`]). The value is rounded up to a multiple of 8
    /// and capped at `data_size - 8` (the most that can ever be free). `bytes == 0` clears it.
    ///
    /// Prefer [`RingWriter::wait_for_space`], which also performs the mandatory re-check.
    pub fn set_pending_send_size(&mut self, bytes: u32) {
        let size = self.ring.data_size();
        let cap = size.saturating_sub(index::RESERVED_GAP);
        let value = bytes.saturating_add(7) & !7;
        let value = value.min(cap);
        self.ring
            .control()
            .pending_send_size
            .store(value, Ordering::Relaxed);
        self.pending_set = value != 0;
    }

    /// Clears `pending_send_sz` (the writer is no longer blocked). A successful commit does this
    /// automatically.
    pub fn clear_pending_send_size(&mut self) {
        self.ring
            .control()
            .pending_send_size
            .store(0, Ordering::Relaxed);
        self.pending_set = false;
    }

    /// Prepares to sleep until `bytes` ring bytes are free (spec §1.8, writer side when full):
    /// sets `pending_send_sz` as [`RingWriter::set_pending_send_size`] does, issues a full
    /// fence, then re-checks the free space.
    ///
    /// Returns `Ok(true)` if the space is already there: `pending_send_sz` is cleared again and
    /// the caller should retry the write instead of sleeping. Returns `Ok(false)` if the caller
    /// must wait for the reader's signal (a [`ReadCommit`](super::ReadCommit) with
    /// `signal_needed`).
    ///
    /// # Errors
    /// [`RingError::InvalidReadIndex`] (poisons the writer) if the reader's index is bad.
    pub fn wait_for_space(&mut self, bytes: u32) -> Result<bool, RingError> {
        if let Some(e) = self.poisoned {
            return Err(e);
        }
        self.set_pending_send_size(bytes);
        let wanted = self
            .ring
            .control()
            .pending_send_size
            .load(Ordering::Relaxed);
        // Order the pending store before the read-index load; pairs with the reader's fence
        // between publishing its index and loading pending_send_sz.
        fence(Ordering::SeqCst);
        let read = self.peer_read_index()?;
        let free = index::free(self.write_index, read, self.ring.data_size());
        if free >= wanted {
            self.clear_pending_send_size();
            Ok(true)
        } else {
            Ok(false)
        }
    }
}

/// A group of packets that the reader sees all at once, when [`WriteBatch::commit`] is called.
///
/// Dropping a batch without committing discards its packets: the write index is not moved, so the
/// bytes stay in the free region and are overwritten later.
#[must_use = "packets are published only by WriteBatch::commit"]
pub struct WriteBatch<'w> {
    writer: &'w mut RingWriter,
    /// Write index before the batch (the old write index of spec §1.8).
    start: u32,
    /// Where the next packet of the batch goes.
    next: u32,
    packets: u32,
    bytes: u32,
}

impl core::fmt::Debug for WriteBatch<'_> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("WriteBatch")
            .field("start", &self.start)
            .field("next", &self.next)
            .field("packets", &self.packets)
            .field("bytes", &self.bytes)
            .finish_non_exhaustive()
    }
}

impl WriteBatch<'_> {
    /// Packets written to this batch so far.
    #[must_use]
    pub const fn packets(&self) -> u32 {
        self.packets
    }

    /// Reserves `need` ring bytes at `self.next`: validates the reader's index and checks space.
    #[inline]
    fn reserve(&mut self, need: u32) -> Result<(), RingError> {
        let read = self.writer.peer_read_index()?;
        let free = index::free(self.next, read, self.writer.ring.data_size());
        if need > free {
            return Err(RingError::NotEnoughSpace { needed: need, free });
        }
        Ok(())
    }

    /// Copies `bytes` into the ring at `pos` and returns the position after them.
    fn put(&self, pos: u32, bytes: &[u8]) -> u32 {
        if bytes.is_empty() {
            return pos;
        }
        // SAFETY: `pos..pos + bytes.len()` lies within the span reserved by `reserve`, i.e. inside
        // the writer's free region: the reader reads only up to the published write index, which
        // has not been moved past this span, and this writer is the ring's only writer (and is
        // mutably borrowed by this batch, so no `RawAccess` exists).
        unsafe { self.writer.ring.memory().write_at(pos, bytes) }
    }

    /// Copies one packet into the ring (not yet visible to the reader) and returns the ring bytes
    /// it uses (`len8 * 8 + 8`). No allocation; at most one copy of each byte.
    ///
    /// # Errors
    /// Nothing is written on error.
    /// * [`RingError::HeaderNotAligned`]: `header.len()` is not a multiple of 8.
    /// * [`RingError::PacketTooLarge`]: padded length above [`Ring::max_packet_len`].
    /// * GPA-direct / transfer-page header errors ([`RingError::GpaNoRanges`], ...) if the header
    ///   of such a packet is invalid, [`RingError::HeaderLengthMismatch`] if it has bytes after
    ///   its ranges.
    /// * [`RingError::NotEnoughSpace`]: not enough free space now; `needed` is what to wait for.
    /// * [`RingError::InvalidReadIndex`]: the reader's index is bad; the writer is poisoned.
    #[inline]
    pub fn write(&mut self, packet: &OutgoingPacket<'_>) -> Result<u32, RingError> {
        if let Some(e) = self.writer.poisoned {
            return Err(e);
        }
        let max = self.writer.ring.max_packet_len();
        let header_len = packet.header.len();
        if !header_len.is_multiple_of(8) {
            return Err(RingError::HeaderNotAligned { len: header_len });
        }
        let payload_len = packet
            .payload
            .iter()
            .try_fold(0usize, |acc, s| acc.checked_add(s.len()));
        let too_large = RingError::PacketTooLarge {
            len: usize::MAX,
            max,
        };
        let data_offset = header_len.checked_add(DESCRIPTOR_LEN).ok_or(too_large)?;
        let unpadded = payload_len
            .and_then(|p| p.checked_add(data_offset))
            .ok_or(too_large)?;
        let len = round_up8(unpadded).ok_or(too_large)?;
        let len_u32 = u32::try_from(len).map_err(|_| too_large)?;
        if len_u32 > max {
            return Err(RingError::PacketTooLarge { len, max });
        }
        let offset8 = u16::try_from(data_offset / 8).map_err(|_| too_large)?;
        let len8 = u16::try_from(len / 8).map_err(|_| too_large)?;
        let used = match packet.packet_type {
            PacketType::GpaDirect => gpa::parse(packet.header, offset8)?.1,
            PacketType::TransferPages => transfer::parse(packet.header, offset8)?.1,
            PacketType::InBand | PacketType::Completion => header_len,
        };
        if used != header_len {
            return Err(RingError::HeaderLengthMismatch {
                len: header_len,
                expected: used,
            });
        }
        let need = len_u32 + TRAILER_LEN as u32;
        self.reserve(need)?;

        let start = self.next;
        let descriptor = WireDescriptor {
            packet_type: U16::new(packet.packet_type.to_wire()),
            data_offset8: U16::new(offset8),
            length8: U16::new(len8),
            flags: U16::new(if packet.completion_requested {
                FLAG_COMPLETION_REQUESTED
            } else {
                0
            }),
            transaction_id: U64::new(packet.transaction_id),
        };
        let trailer = (u64::from(start) << 32).to_le_bytes();
        let memory = self.writer.ring.memory();
        let size = memory.data_size();
        self.next = if let Some(dst) = memory.contiguous(start, need as usize) {
            // The usual case: the packet does not wrap, so every part is copied straight to its
            // place with no further bounds or wrap arithmetic. Every access below stays inside
            // `dst..dst + need`, which is in the data area (checked by `contiguous`) and inside
            // the span reserved above, i.e. the writer's free region: the reader reads only up to
            // the published write index, which has not been moved past it, and this writer is the
            // ring's only writer (mutably borrowed by this batch, so no `RawAccess` exists). The
            // sources are caller memory, which cannot overlap the ring (no safe API hands out
            // references into it).
            let descriptor = descriptor.as_bytes();
            // SAFETY: 16 bytes at the start of the span (see above).
            unsafe { ptr::copy_nonoverlapping(descriptor.as_ptr(), dst, DESCRIPTOR_LEN) };
            let mut at = DESCRIPTOR_LEN;
            for part in core::iter::once(packet.header).chain(packet.payload.iter().copied()) {
                if !part.is_empty() {
                    // SAFETY: the parts are laid out back to back from byte 16 and end at
                    // `unpadded <= len < need` (their total length was checked above).
                    unsafe {
                        ptr::copy_nonoverlapping(part.as_ptr(), dst.wrapping_add(at), part.len())
                    };
                    at += part.len();
                }
            }
            if len != unpadded {
                // Eight zero bytes at the end of the payload cover the padding (at most 7 bytes);
                // any excess lands in the trailer's place, which is written next.
                // SAFETY: `unpadded + 8 <= len + 8 = need`, inside the span.
                unsafe {
                    ptr::write_unaligned(dst.wrapping_add(unpadded).cast::<[u8; 8]>(), [0; 8])
                };
            }
            // SAFETY: the trailer is the last 8 bytes of the span (`len + 8 = need`).
            unsafe { ptr::write_unaligned(dst.wrapping_add(len).cast::<[u8; 8]>(), trailer) };
            index::advance(start, need, size)
        } else {
            let mut pos = self.put(start, descriptor.as_bytes());
            pos = self.put(pos, packet.header);
            for slice in packet.payload {
                pos = self.put(pos, slice);
            }
            pos = self.put(pos, ZEROS.get(..len - unpadded).unwrap_or(&[]));
            self.put(pos, &trailer)
        };
        self.packets += 1;
        self.bytes += need;
        Ok(need)
    }

    /// Fault injection: copies `bytes` into the ring verbatim as the next "packet" (no descriptor,
    /// no padding, no trailer added, nothing validated), to be published by
    /// [`WriteBatch::commit`]. Lets a hostile endpoint send malformed packets through the normal
    /// protocol; the reader must reject them.
    ///
    /// # Errors
    /// [`RingError::RawAccessOutOfRange`] unless `bytes.len()` is a non-zero multiple of 8;
    /// [`RingError::NotEnoughSpace`] or [`RingError::InvalidReadIndex`] as for
    /// [`WriteBatch::write`].
    pub fn write_raw(&mut self, bytes: &[u8]) -> Result<(), RingError> {
        let out_of_range = RingError::RawAccessOutOfRange {
            offset: self.next as usize,
            len: bytes.len(),
        };
        if bytes.is_empty() || !bytes.len().is_multiple_of(8) {
            return Err(out_of_range);
        }
        let need = u32::try_from(bytes.len()).map_err(|_| out_of_range)?;
        self.reserve(need)?;
        self.next = self.put(self.next, bytes);
        self.packets += 1;
        self.bytes += need;
        Ok(())
    }

    /// Publishes the batch (spec §1.8, writer rules): stores the new write index with release
    /// ordering (the packet bytes become visible with it), issues a full fence, then decides on
    /// the signal: none if the reader's interrupt mask is non-zero, otherwise a signal iff the
    /// read index equals the write index before the batch (the ring was empty).
    ///
    /// Clears `pending_send_sz` if this writer had set it. An empty batch publishes nothing and
    /// never signals.
    #[inline]
    pub fn commit(self) -> WriteOutcome {
        if self.packets == 0 {
            return WriteOutcome::default();
        }
        let writer = self.writer;
        let ring = &*writer.ring;
        let control = ring.control();
        // A sequentially consistent store (release included: the packet bytes become visible
        // with the index) followed by sequentially consistent loads orders the index store
        // before the mask and read-index loads, as a full fence between them would; it pairs with
        // the reader's fence in `unmask_interrupts` (mask store, fence, write-index load): if
        // this commit misses the mask store, the reader's load after its fence sees this index.
        // On x86-64 the store is one `xchg` instead of a `mov` and an `mfence`.
        control.write_index.store(self.next, Ordering::SeqCst);
        writer.write_index = self.next;
        let signal_needed = control.interrupt_mask.load(Ordering::SeqCst) == 0
            && control.read_index.load(Ordering::SeqCst) == self.start;
        if writer.pending_set {
            control.pending_send_size.store(0, Ordering::Relaxed);
            writer.pending_set = false;
        }
        let counters = ring.counters_raw();
        Counters::add(&counters.packets_written, u64::from(self.packets));
        Counters::add(&counters.bytes_written, u64::from(self.bytes));
        if signal_needed {
            Counters::add(&counters.writer_signals, 1);
        }
        WriteOutcome {
            signal_needed,
            packets: self.packets,
            bytes: self.bytes,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::RawAccess;
    use super::*;

    /// The packet image at `start` after writing `payload` into a one-page ring whose data area
    /// was first filled with 0xEE, read back raw (so stale bytes in the padding would show).
    fn image_at(start: u32, payload: &[u8]) -> Vec<u8> {
        let (mut writer, mut reader) = Ring::create_at(1, start, start).unwrap();
        RawAccess::new(&mut writer, &mut reader)
            .unwrap()
            .write_data(0, &[0xEE; 4096])
            .unwrap();
        let need = writer
            .write(&OutgoingPacket::in_band(0x1122, true, &[payload]))
            .unwrap()
            .bytes;
        let raw = RawAccess::new(&mut writer, &mut reader).unwrap();
        let mut image = vec![0u8; need as usize];
        raw.read_data(start, &mut image).unwrap();
        image
    }

    #[test]
    fn contiguous_and_wrapped_writes_agree() {
        for len in 0..=24usize {
            let payload: Vec<u8> = (1..=len).map(|b| b as u8).collect();
            // Far from the end: the one-piece path.
            let flat = image_at(0, &payload);
            let padded = (16 + len).div_ceil(8) * 8;
            assert_eq!(flat.len(), padded + 8);
            assert!(
                flat[16 + len..padded].iter().all(|&b| b == 0),
                "padding, len {len}"
            );
            assert_eq!(&flat[16..16 + len], &payload[..]);
            // Every start that makes the packet wrap: the piecewise path, same bytes apart from
            // the trailer (which holds the start offset).
            for start in (4096 - flat.len() as u32 + 8..4096).step_by(8) {
                let wrapped = image_at(start, &payload);
                assert_eq!(
                    wrapped[..padded],
                    flat[..padded],
                    "len {len}, start {start}"
                );
                assert_eq!(wrapped[padded..], (u64::from(start) << 32).to_le_bytes());
            }
        }
    }
}
