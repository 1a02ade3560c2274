//! The reading endpoint of a ring.

use core::ptr;
use core::sync::atomic::{Ordering, fence};
use std::sync::Arc;

use super::gpa::{self, GpaRanges};
use super::index;
use super::shared::{Counters, Ring};
use super::transfer::{self, TransferPages};
use super::wire::{FLAG_COMPLETION_REQUESTED, PacketType, WireDescriptor};
use super::{DESCRIPTOR_LEN, RingError, TRAILER_LEN};

/// Type-specific part of a received packet.
#[derive(Clone, Debug)]
enum Body<'b> {
    Plain,
    GpaDirect(GpaRanges<'b>),
    TransferPages(TransferPages<'b>),
}

/// A validated packet, copied out of the ring into the caller's buffer (the view borrows that
/// buffer, never the ring, so the peer cannot change it afterwards).
///
/// Shapes: `header()` is the `offset8 * 8 - 16` bytes between the descriptor and the payload;
/// `payload()` is the `(len8 - offset8) * 8` bytes after them, **including** the writer's zero
/// padding (the true length is not on the wire; device protocols carry their own).
#[derive(Clone, Debug)]
pub struct IncomingPacket<'b> {
    packet_type: PacketType,
    flags: u16,
    transaction_id: u64,
    ring_offset: u32,
    bytes: &'b [u8],
    header: &'b [u8],
    payload: &'b [u8],
    body: Body<'b>,
}

impl<'b> IncomingPacket<'b> {
    /// The packet type.
    #[must_use]
    pub const fn packet_type(&self) -> PacketType {
        self.packet_type
    }

    /// The raw flags (only bit 0 can be set in a validated packet).
    #[must_use]
    pub const fn flags(&self) -> u16 {
        self.flags
    }

    /// Flag bit 0: the sender wants a completion packet.
    #[must_use]
    pub const fn completion_requested(&self) -> bool {
        self.flags & FLAG_COMPLETION_REQUESTED != 0
    }

    /// The transaction ID.
    #[must_use]
    pub const fn transaction_id(&self) -> u64 {
        self.transaction_id
    }

    /// Byte offset in the data area where the packet's descriptor started.
    #[must_use]
    pub const fn ring_offset(&self) -> u32 {
        self.ring_offset
    }

    /// The whole packet as copied (`len8 * 8` bytes: descriptor, header, padded payload; no
    /// trailer).
    #[must_use]
    pub const fn bytes(&self) -> &'b [u8] {
        self.bytes
    }

    /// The type-specific header bytes (`offset8 * 8 - 16` bytes; for GPA-direct the raw range
    /// array).
    #[must_use]
    pub const fn header(&self) -> &'b [u8] {
        self.header
    }

    /// The payload including zero padding (`(len8 - offset8) * 8` bytes).
    #[must_use]
    pub const fn payload(&self) -> &'b [u8] {
        self.payload
    }

    /// The validated GPA ranges, for a [`PacketType::GpaDirect`] packet.
    #[must_use]
    pub fn gpa_ranges(&self) -> Option<GpaRanges<'b>> {
        match &self.body {
            Body::GpaDirect(r) => Some(r.clone()),
            _ => None,
        }
    }

    /// The validated transfer-page header, for a [`PacketType::TransferPages`] packet.
    #[must_use]
    pub const fn transfer_pages(&self) -> Option<TransferPages<'b>> {
        match self.body {
            Body::TransferPages(t) => Some(t),
            _ => None,
        }
    }
}

/// Result of [`ReadBatch::commit`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ReadCommit {
    /// The writer must be signalled: it set `pending_send_sz` and this commit made the free space
    /// cross it (spec §1.8, OpenVMM form).
    pub signal_needed: bool,
    /// Packets consumed by this commit.
    pub packets: u32,
    /// Ring bytes consumed by this commit (`len8 * 8 + 8` per packet).
    pub bytes: u32,
}

/// Result of [`RingReader::read`]: one packet, already consumed.
#[derive(Clone, Debug)]
pub struct ReadOutcome<'b> {
    /// The packet (borrowing the caller's buffer).
    pub packet: IncomingPacket<'b>,
    /// The writer must be signalled (see [`ReadCommit::signal_needed`]).
    pub signal_needed: bool,
}

/// The only reading endpoint of a [`Ring`].
///
/// Reads go through a [`ReadBatch`] (or [`RingReader::read`], a batch of one): each packet is
/// copied out in full into a caller buffer and validated there; the read index is published only
/// when the batch is committed. The reader keeps its own copy of the read index and validates
/// the writer's index (8-aligned, `< data_size`) before every use.
pub struct RingReader {
    ring: Arc<Ring>,
    /// Committed read index (the value last published).
    read_index: u32,
    /// First peer-corruption error seen; the reader never advances past it.
    poisoned: Option<RingError>,
}

impl core::fmt::Debug for RingReader {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("RingReader")
            .field("read_index", &self.read_index)
            .field("poisoned", &self.poisoned)
            .field("ring", &self.ring)
            .finish()
    }
}

impl RingReader {
    pub(crate) const fn new(ring: Arc<Ring>) -> Self {
        Self::new_at(ring, 0)
    }

    pub(crate) const fn new_at(ring: Arc<Ring>, read_index: u32) -> Self {
        Self {
            ring,
            read_index,
            poisoned: None,
        }
    }

    /// The reading half of a ring in memory the caller supplies (`base`: the 4096-byte control
    /// page, then `data_pages` × 4096 data bytes), starting at `read_index`. This is how another
    /// implementation of the ring, or a user's own host device, shares a ring with the
    /// emulator's: the writer may be a [`RingWriter`](super::RingWriter) over the same memory, the
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
    /// `base` is not 4096-aligned; [`RingError::InvalidStartIndex`] if `read_index` is not
    /// 8-aligned or not below the data size.
    ///
    /// # Safety
    /// * `base` points to `(1 + data_pages) * 4096` initialised bytes that stay valid (readable,
    ///   writable, not freed) for as long as the endpoint and every [`Ring`] handle cloned from
    ///   it live.
    /// * No other reading endpoint of this ring exists meanwhile.
    /// * Nobody holds a Rust reference into the memory meanwhile; every other access uses atomic
    ///   loads and stores for the control page and follows the ring protocol for the data area.
    pub unsafe fn over_raw(
        base: core::ptr::NonNull<u8>,
        data_pages: usize,
        read_index: u32,
    ) -> Result<Self, RingError> {
        // SAFETY: the caller's contract covers `Ring::over_raw`'s.
        let ring = unsafe { Ring::over_raw(base, data_pages, read_index) }?;
        Ok(Self::new_at(ring, read_index))
    }

    /// The shared ring (inspection: control words, counters, sizes).
    #[must_use]
    pub const fn ring(&self) -> &Arc<Ring> {
        &self.ring
    }

    /// The peer-corruption error that poisoned this reader, if any. Once set, every read returns
    /// it and the read index no longer moves.
    #[must_use]
    pub const fn corruption(&self) -> Option<RingError> {
        self.poisoned
    }

    /// The read index this reader last published (byte offset, 8-aligned, `< data_size`).
    #[must_use]
    pub const fn read_index(&self) -> u32 {
        self.read_index
    }

    fn poison(&mut self, error: RingError) -> RingError {
        if self.poisoned.is_none() {
            self.poisoned = Some(error);
        }
        error
    }

    /// Loads the writer's index with acquire ordering (so the packet bytes before it are
    /// visible) and validates it.
    #[inline]
    fn peer_write_index(&mut self) -> Result<u32, RingError> {
        if let Some(e) = self.poisoned {
            return Err(e);
        }
        let size = self.ring.data_size();
        let write = self.ring.control().write_index.load(Ordering::Acquire);
        if index::is_valid(write, size) {
            Ok(write)
        } else {
            Err(self.poison(RingError::InvalidWriteIndex { index: write }))
        }
    }

    /// Bytes published by the writer and not yet consumed.
    ///
    /// # Errors
    /// [`RingError::InvalidWriteIndex`] (poisons the reader) if the writer's index is bad.
    pub fn readable_bytes(&mut self) -> Result<u32, RingError> {
        let write = self.peer_write_index()?;
        Ok(index::used(write, self.read_index, self.ring.data_size()))
    }

    /// Sets `interrupt_mask = 1`: the writer will not signal while the reader drains.
    pub fn mask_interrupts(&mut self) {
        self.ring
            .control()
            .interrupt_mask
            .store(1, Ordering::Relaxed);
    }

    /// Clears `interrupt_mask`, issues a full fence, and re-checks the ring (spec §1.8 reader
    /// protocol). Returns `Ok(true)` if data is available: the writer may have seen the mask set
    /// and skipped its signal, so the caller must drain again instead of sleeping.
    ///
    /// # Errors
    /// [`RingError::InvalidWriteIndex`] (poisons the reader) if the writer's index is bad.
    pub fn unmask_interrupts(&mut self) -> Result<bool, RingError> {
        if let Some(e) = self.poisoned {
            return Err(e);
        }
        self.ring
            .control()
            .interrupt_mask
            .store(0, Ordering::Relaxed);
        // Order the mask store before the write-index load; pairs with the writer's fence between
        // publishing its index and loading the mask.
        fence(Ordering::SeqCst);
        let write = self.peer_write_index()?;
        Ok(write != self.read_index)
    }

    /// Starts a batch: packets read from it are consumed together by [`ReadBatch::commit`].
    /// Dropping the batch without committing leaves them in the ring (they will be read again).
    #[inline]
    pub const fn batch(&mut self) -> ReadBatch<'_> {
        let start = self.read_index;
        ReadBatch {
            reader: self,
            next: start,
            packets: 0,
            bytes: 0,
        }
    }

    /// Reads and consumes the next packet (a batch of one); `Ok(None)` if the ring is empty.
    ///
    /// # Errors
    /// See [`ReadBatch::read`] and [`ReadBatch::commit`].
    #[inline]
    pub fn read<'b>(&mut self, buf: &'b mut [u8]) -> Result<Option<ReadOutcome<'b>>, RingError> {
        let mut batch = self.batch();
        let Some(packet) = batch.read(buf)? else {
            return Ok(None);
        };
        let commit = batch.commit()?;
        Ok(Some(ReadOutcome {
            packet,
            signal_needed: commit.signal_needed,
        }))
    }
}

/// A group of packets consumed together when [`ReadBatch::commit`] is called.
#[must_use = "packets are consumed only by ReadBatch::commit"]
pub struct ReadBatch<'r> {
    reader: &'r mut RingReader,
    /// Where the next packet of the batch starts.
    next: u32,
    packets: u32,
    bytes: u32,
}

impl core::fmt::Debug for ReadBatch<'_> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("ReadBatch")
            .field("next", &self.next)
            .field("packets", &self.packets)
            .field("bytes", &self.bytes)
            .finish_non_exhaustive()
    }
}

impl ReadBatch<'_> {
    /// Packets read in this batch so far.
    #[must_use]
    pub const fn packets(&self) -> u32 {
        self.packets
    }

    /// Copies `dst.len()` bytes from the ring at `pos` and returns the position after them.
    #[inline]
    fn get(&self, pos: u32, dst: &mut [u8]) -> u32 {
        // SAFETY: callers only pass spans that lie between the reader's position and the write
        // index loaded with acquire ordering: the writer published those bytes and does not
        // touch them again until the read index moves past them, and this reader (mutably
        // borrowed by the batch, so no `RawAccess` exists) is the ring's only reader.
        unsafe { self.reader.ring.memory().read_at(pos, dst) }
    }

    /// Copies the next packet into the front of `buf`, validates the copy, and returns a view of
    /// it; `Ok(None)` if no packet is left. Every ring byte is read exactly once, so the peer
    /// cannot change a field after it was checked. No allocation.
    ///
    /// Checks, in order: the write index (8-aligned, `< data_size`); at least 16 readable bytes;
    /// type ∈ {6, 7, 9, 0xB}; no flag bit but bit 0; `offset8 >= 2`; `len8 >= offset8`;
    /// `len8 * 8 + 8 <= readable`; the caller's buffer; then, for type 9, the GPA ranges
    /// (`offset8 >= 3`, `range_count >= 1`, each `byte_count != 0`, `byte_offset <= 0xfff`,
    /// enough PFNs inside the header area) and for type 7 the transfer-page header.
    ///
    /// # Errors
    /// * [`RingError::BufferTooSmall`] with `needed = len8 * 8`: `buf` is too short; nothing is
    ///   consumed and the call can be repeated with a larger buffer.
    /// * Every other error is peer corruption: the reader is poisoned and never advances past
    ///   this packet (packets read earlier in the batch can still be committed).
    #[inline]
    pub fn read<'b>(&mut self, buf: &'b mut [u8]) -> Result<Option<IncomingPacket<'b>>, RingError> {
        let write = self.reader.peer_write_index()?;
        let size = self.reader.ring.data_size();
        let start = self.next;
        let available = index::used(write, start, size);
        if available == 0 {
            return Ok(None);
        }
        if (available as usize) < DESCRIPTOR_LEN {
            return Err(self
                .reader
                .poison(RingError::TruncatedDescriptor { available }));
        }
        let memory = self.reader.ring.memory();
        let raw: [u8; DESCRIPTOR_LEN] = if let Some(src) = memory.contiguous(start, DESCRIPTOR_LEN)
        {
            // SAFETY: the 16 bytes at `start` are in the data area (checked by `contiguous`) and
            // between the reader's position and the write index loaded with acquire ordering
            // (`available >= 16`): published by the writer, which does not touch them again
            // until the read index moves past them; this reader (mutably borrowed by the batch,
            // so no `RawAccess` exists) is the ring's only reader. A fixed-size copy.
            unsafe { ptr::read_unaligned(src.cast::<[u8; DESCRIPTOR_LEN]>()) }
        } else {
            let mut raw = [0u8; DESCRIPTOR_LEN];
            self.get(start, &mut raw);
            raw
        };
        let body_pos = index::advance(start, DESCRIPTOR_LEN as u32, size);
        let descriptor: WireDescriptor = zerocopy::transmute!(raw);
        let (packet_type, offset8, len8) = match validate_descriptor(&descriptor, available) {
            Ok(v) => v,
            Err(e) => return Err(self.reader.poison(e)),
        };
        let len = usize::from(len8) * 8;
        let data_offset = usize::from(offset8) * 8;
        let buf_len = buf.len();
        let Some((packet, _)) = buf.split_at_mut_checked(len) else {
            return Err(RingError::BufferTooSmall {
                needed: len,
                len: buf_len,
            });
        };
        if let Some((head, rest)) = packet.split_at_mut_checked(DESCRIPTOR_LEN) {
            head.copy_from_slice(&raw);
            if let Some(src) = memory.contiguous(body_pos, rest.len()) {
                // SAFETY: the rest of the packet (`len8 * 8 - 16` bytes after the descriptor) is
                // in the data area (checked by `contiguous`) and, by `validate_descriptor`
                // (`len8 * 8 + 8 <= available`), between the reader's position and the write index
                // loaded with acquire ordering, so no one writes it (as for the descriptor);
                // `rest` is caller memory, which cannot overlap the ring.
                unsafe {
                    ptr::copy_nonoverlapping(src.cast_const(), rest.as_mut_ptr(), rest.len())
                };
            } else {
                self.get(body_pos, rest);
            }
        }
        let packet: &'b [u8] = packet;
        let (front, payload) = packet
            .split_at_checked(data_offset)
            .unwrap_or((packet, &[]));
        let header = front.get(DESCRIPTOR_LEN..).unwrap_or(&[]);
        let body = match packet_type {
            PacketType::GpaDirect => gpa::parse(header, offset8).map(|(r, _)| Body::GpaDirect(r)),
            PacketType::TransferPages => {
                transfer::parse(header, offset8).map(|(t, _)| Body::TransferPages(t))
            }
            PacketType::InBand | PacketType::Completion => Ok(Body::Plain),
        };
        let body = match body {
            Ok(b) => b,
            Err(e) => return Err(self.reader.poison(e)),
        };
        let need = u32::from(len8) * 8 + TRAILER_LEN as u32;
        self.next = index::advance(start, need, size);
        self.packets += 1;
        self.bytes += need;
        Ok(Some(IncomingPacket {
            packet_type,
            flags: descriptor.flags.get(),
            transaction_id: descriptor.transaction_id.get(),
            ring_offset: start,
            bytes: packet,
            header,
            payload,
            body,
        }))
    }

    /// Publishes the new read index (release ordering: the copies out of the consumed bytes
    /// happen before the writer may reuse them), issues a full fence, and decides whether the
    /// writer must be signalled (spec §1.8, OpenVMM form): with `pending = pending_send_sz & !7`,
    /// signal iff `pending != 0 && old_free < pending && new_free >= pending`, where `free` is
    /// `data_size - in_flight - 8` computed against the current write index. The interrupt mask
    /// is deliberately not consulted. An empty batch publishes nothing and never signals.
    ///
    /// # Errors
    /// [`RingError::InvalidWriteIndex`] (poisons the reader) if the writer's index is bad when
    /// the signal decision is made; the read index has been published by then.
    #[inline]
    pub fn commit(self) -> Result<ReadCommit, RingError> {
        if self.packets == 0 {
            return Ok(ReadCommit::default());
        }
        let reader = self.reader;
        let old = reader.read_index;
        let control = reader.ring.control();
        // A sequentially consistent store (release included: the copies out of the consumed
        // bytes happen before the writer may reuse them) followed by a sequentially consistent
        // load orders the index store before the pending_send_sz load, as a full fence between
        // them would; it pairs with the writer's fence in `wait_for_space` (pending store, fence,
        // read-index load): if this commit misses the pending size, the writer's load after its
        // fence sees this index. On x86-64 the store is one `xchg` instead of a `mov` and an
        // `mfence`.
        control.read_index.store(self.next, Ordering::SeqCst);
        reader.read_index = self.next;
        {
            let counters = reader.ring.counters_raw();
            Counters::add(&counters.packets_read, u64::from(self.packets));
            Counters::add(&counters.bytes_read, u64::from(self.bytes));
        }
        let pending = control.pending_send_size.load(Ordering::SeqCst) & !7;
        let mut outcome = ReadCommit {
            signal_needed: false,
            packets: self.packets,
            bytes: self.bytes,
        };
        if pending == 0 {
            return Ok(outcome);
        }
        let write = reader.peer_write_index()?;
        let size = reader.ring.data_size();
        let old_free = index::free(write, old, size);
        let new_free = index::free(write, self.next, size);
        outcome.signal_needed = old_free < pending && new_free >= pending;
        if outcome.signal_needed {
            Counters::add(&reader.ring.counters_raw().reader_signals, 1);
        }
        Ok(outcome)
    }
}

/// Checks the descriptor fields that do not depend on the type; returns
/// `(type, offset8, len8)`.
#[inline]
fn validate_descriptor(
    d: &WireDescriptor,
    available: u32,
) -> Result<(PacketType, u16, u16), RingError> {
    let raw_type = d.packet_type.get();
    let Some(packet_type) = PacketType::from_wire(raw_type) else {
        return Err(RingError::UnknownPacketType {
            packet_type: raw_type,
        });
    };
    let flags = d.flags.get();
    if flags & !FLAG_COMPLETION_REQUESTED != 0 {
        return Err(RingError::InvalidFlags { flags });
    }
    let offset8 = d.data_offset8.get();
    if offset8 < 2 {
        return Err(RingError::DataOffsetTooSmall { offset8 });
    }
    let len8 = d.length8.get();
    if len8 < offset8 {
        return Err(RingError::LengthBelowDataOffset { len8, offset8 });
    }
    let needed = u32::from(len8) * 8 + TRAILER_LEN as u32;
    if needed > available {
        return Err(RingError::LengthExceedsAvailable { needed, available });
    }
    Ok((packet_type, offset8, len8))
}
