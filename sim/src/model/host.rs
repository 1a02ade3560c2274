//! The emulated host endpoint (VSP side): the [`HostDevice`] trait, what a device can do with
//! its channel, and the host side of a channel (its ring ends and queued frames). The host
//! thread that runs a device is `threads::host`.

use core::fmt;
use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Weak};

use vmbus_kmcl::sys::{GUID, NTSTATUS};

use crate::base::event::lock;
use crate::base::memory::{self, HostBuffer, PAGE_SIZE, pfn_of};
use crate::model::channel::Channel;
use crate::model::gpadl::GpadlView;
use crate::model::offer::OfferShared;
use crate::ring::{
    GpaRangeSpec, OutgoingPacket, PacketType, RawAccess, RingError, encode_gpa_direct_header,
    gpa_direct_header_len, packet_ring_bytes,
};

/// Why a host-side operation failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum HostError {
    /// No guest channel is open on the offer.
    NotOpen,
    /// The packet cannot fit the ring.
    TooLarge,
    /// The ring was corrupted (by a hostile-host control); the host no longer uses it.
    RingCorrupted,
    /// The ring has no room and raw packets are not queued.
    RingFull,
    /// A raw packet that is empty or not a multiple of 8 bytes.
    InvalidRawPacket,
    /// The GPADL was deleted.
    Revoked,
    /// Offset/length outside the buffer.
    OutOfRange,
    /// Write to a read-only GPADL.
    ReadOnly,
    /// The guest memory is not (or no longer) known: its MDL or buffer was released.
    NotMapped,
    /// The guest does not hold the packet's external buffers (it did not send with
    /// `VMBUS_CHANNEL_FORMAT_FLAG_WAIT_FOR_COMPLETION`, or the transaction ended).
    NotPinned,
    /// The packet carries no external data.
    NoExternalData,
}

impl fmt::Display for HostError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

impl std::error::Error for HostError {}

/// A device model (VSP) served by the emulated host, one thread per open channel.
///
/// Every method runs on the channel's host thread. A panic in a method is caught and counted
/// ([`HostileCounters::host_device_panics`](crate::HostileCounters::host_device_panics)).
pub trait HostDevice: Send + 'static {
    /// The guest opened a channel. An `Err` fails the guest's `VmbChannelEnable` with that
    /// status.
    ///
    /// # Errors
    /// The status to fail the open with.
    fn on_open(&mut self, channel: &mut HostChannel) -> Result<(), NTSTATUS> {
        let _ = channel;
        Ok(())
    }

    /// A data packet (in-band or GPA-direct) from the guest.
    fn on_packet(&mut self, channel: &mut HostChannel, packet: &HostPacket);

    /// The guest completed a packet the host sent with `completion_requested`.
    fn on_completion(&mut self, channel: &mut HostChannel, completion: &HostCompletion) {
        let _ = (channel, completion);
    }

    /// Called on every wake of the host thread (at least every 20 ms, and after
    /// [`HostWaker::wake`]).
    fn on_poll(&mut self, channel: &mut HostChannel) {
        let _ = channel;
    }

    /// The channel closed (guest disable, rescind or bus shutdown).
    fn on_close(&mut self, channel: &mut HostChannel) {
        let _ = channel;
    }
}

/// Wakes a channel's host thread (its device's [`HostDevice::on_poll`] runs soon after). Cheap
/// to clone; does nothing once the channel is gone.
#[derive(Clone, Debug)]
pub struct HostWaker(Weak<Channel>);

impl HostWaker {
    /// Wakes the host thread.
    pub fn wake(&self) {
        if let Some(ch) = self.0.upgrade() {
            ch.host_event.signal();
        }
    }
}

/// Kind of a packet the host received.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HostPacketKind {
    /// Type 6.
    InBand,
    /// Type 9 (external data as GPA ranges).
    GpaDirect,
}

/// One GPA range of a received GPA-direct packet.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HostRange {
    /// Offset into the first page.
    pub byte_offset: u32,
    /// Length in bytes.
    pub byte_count: u32,
    /// Guest page frame numbers.
    pub pfns: Vec<u64>,
}

/// A data packet from the guest, as the host device sees it.
#[derive(Clone)]
pub struct HostPacket {
    kind: HostPacketKind,
    transaction_id: u64,
    completion_requested: bool,
    payload: Vec<u8>,
    ranges: Vec<HostRange>,
    channel: Arc<Channel>,
}

impl fmt::Debug for HostPacket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HostPacket")
            .field("kind", &self.kind)
            .field("transaction_id", &self.transaction_id)
            .field("completion_requested", &self.completion_requested)
            .field("payload_len", &self.payload.len())
            .field("ranges", &self.ranges)
            .finish()
    }
}

impl HostPacket {
    /// In-band or GPA-direct.
    #[must_use]
    pub const fn kind(&self) -> HostPacketKind {
        self.kind
    }

    /// The transaction ID to complete.
    #[must_use]
    pub const fn transaction_id(&self) -> u64 {
        self.transaction_id
    }

    /// The guest asked for a completion (it sent with `WAIT_FOR_COMPLETION` or synchronously).
    #[must_use]
    pub const fn completion_requested(&self) -> bool {
        self.completion_requested
    }

    /// The in-band bytes, padded with zeros to a multiple of 8 (the wire has no exact length).
    #[must_use]
    pub fn payload(&self) -> &[u8] {
        &self.payload
    }

    /// The GPA ranges of a GPA-direct packet (empty for in-band).
    #[must_use]
    pub fn ranges(&self) -> &[HostRange] {
        &self.ranges
    }

    /// Total external bytes (sum of the ranges' byte counts).
    #[must_use]
    pub fn external_len(&self) -> usize {
        self.ranges.iter().map(|r| r.byte_count as usize).sum()
    }

    fn pinned(&self) -> bool {
        self.completion_requested
            && lock(&self.channel.inner)
                .tx
                .contains_key(&self.transaction_id)
    }

    /// Walks the external bytes `[offset, offset + len)` page by page.
    fn walk(
        &self,
        offset: usize,
        len: usize,
        mut f: impl FnMut(usize, core::ops::Range<usize>) -> Result<(), memory::MemError>,
    ) -> Result<(), HostError> {
        if self.ranges.is_empty() {
            return Err(HostError::NoExternalData);
        }
        let end = offset.checked_add(len).ok_or(HostError::OutOfRange)?;
        if end > self.external_len() {
            return Err(HostError::OutOfRange);
        }
        if !self.pinned() {
            return Err(HostError::NotPinned);
        }
        let mut pos = 0usize;
        for r in &self.ranges {
            let mut remaining = r.byte_count as usize;
            let mut in_page = r.byte_offset as usize;
            for pfn in &r.pfns {
                if remaining == 0 {
                    break;
                }
                let n = remaining.min(PAGE_SIZE - in_page);
                let lo = offset.max(pos);
                let hi = end.min(pos + n);
                if lo < hi {
                    let page = usize::try_from(*pfn)
                        .ok()
                        .and_then(|p| p.checked_mul(PAGE_SIZE))
                        .ok_or(HostError::NotMapped)?;
                    let addr = page.wrapping_add(in_page).wrapping_add(lo - pos);
                    f(addr, (lo - offset)..(hi - offset)).map_err(|_| HostError::NotMapped)?;
                }
                pos += n;
                remaining -= n;
                in_page = 0;
            }
        }
        Ok(())
    }

    /// Reads external bytes of a GPA-direct packet into `out`.
    ///
    /// # Errors
    /// [`HostError::NoExternalData`], [`HostError::OutOfRange`], [`HostError::NotPinned`],
    /// [`HostError::NotMapped`].
    pub fn read_external(&self, offset: usize, out: &mut [u8]) -> Result<(), HostError> {
        let len = out.len();
        self.walk(offset, len, |addr, range| {
            let dst = out.get_mut(range).ok_or(memory::MemError::NotMapped)?;
            memory::copy_from_guest(addr, dst)
        })
    }

    /// Writes external bytes of a GPA-direct packet (e.g. a read request's data).
    ///
    /// # Errors
    /// As for [`HostPacket::read_external`].
    pub fn write_external(&self, offset: usize, data: &[u8]) -> Result<(), HostError> {
        self.walk(offset, data.len(), |addr, range| {
            let src = data.get(range).ok_or(memory::MemError::NotMapped)?;
            memory::copy_to_guest(addr, src)
        })
    }
}

/// The guest's completion of a packet the host sent.
#[derive(Clone, Debug)]
pub struct HostCompletion {
    /// The host transaction ID.
    pub transaction_id: u64,
    /// The guest's response bytes (padded to 8).
    pub payload: Vec<u8>,
    /// For a host GPA-direct packet: the external buffer's contents after the guest processed
    /// it.
    pub external: Option<Vec<u8>>,
}

/// A host→guest transaction awaiting the guest's completion.
#[derive(Debug, Default)]
pub(crate) struct HostTx {
    pub(crate) external: Option<Arc<HostBuffer>>,
}

/// A frame waiting for room in the host→guest ring.
struct HostFrame {
    kind: PacketType,
    txid: u64,
    completion_requested: bool,
    header: Vec<u8>,
    payload: Vec<u8>,
}

/// Work for the host thread.
#[derive(Debug)]
pub(crate) enum HostCommand {
    /// Run `on_close` and exit.
    Close,
}

/// The host side of a channel, behind `Channel::host`.
#[derive(Default)]
pub(crate) struct HostSide {
    /// Guest→host ring reader.
    pub(crate) reader: Option<crate::ring::RingReader>,
    /// Host→guest ring writer.
    pub(crate) writer: Option<crate::ring::RingWriter>,
    queue: VecDeque<HostFrame>,
    pub(crate) commands: VecDeque<HostCommand>,
    next_txid: u64,
    pub(crate) tx: BTreeMap<u64, HostTx>,
    writer_frozen: bool,
    reader_frozen: bool,
}

fn write_frame(ch: &Channel, host: &mut HostSide, f: &HostFrame) -> Result<(), RingError> {
    let w = host.writer.as_mut().ok_or(RingError::MismatchedEndpoints)?;
    let payload: [&[u8]; 1] = [&f.payload];
    let packet = OutgoingPacket {
        packet_type: f.kind,
        completion_requested: f.completion_requested,
        transaction_id: f.txid,
        header: &f.header,
        payload: &payload,
    };
    let outcome = w.write(&packet)?;
    if outcome.signal_needed {
        ch.guest_event.signal();
    }
    Ok(())
}

/// Writes queued host frames while there is room.
pub(crate) fn flush(ch: &Channel, host: &mut HostSide) {
    while let Some(front) = host.queue.pop_front() {
        if host.writer_frozen {
            host.queue.clear();
            return;
        }
        match write_frame(ch, host, &front) {
            Ok(()) => {}
            Err(RingError::NotEnoughSpace { needed, .. }) => {
                host.queue.push_front(front);
                let profile = ch.bus.config.host_profile;
                let wanted = |w: &mut crate::ring::RingWriter| {
                    let request = profile.pending_send_request(needed, w.ring().max_packet_len());
                    w.wait_for_space(request)
                };
                match host.writer.as_mut().map(wanted) {
                    Some(Ok(true)) => {}
                    Some(Err(_)) => {
                        host.writer_frozen = true;
                        return;
                    }
                    _ => return,
                }
            }
            Err(_) => {}
        }
    }
}

fn submit(ch: &Channel, host: &mut HostSide, f: HostFrame) -> Result<(), HostError> {
    if host.writer_frozen {
        return Err(HostError::RingCorrupted);
    }
    let limit = host
        .writer
        .as_ref()
        .map(|w| w.ring().max_packet_len() as usize)
        .ok_or(HostError::NotOpen)?;
    let bytes = packet_ring_bytes(f.header.len(), f.payload.len()).ok_or(HostError::TooLarge)?;
    if (bytes as usize).saturating_sub(8) > limit {
        return Err(HostError::TooLarge);
    }
    host.queue.push_back(f);
    flush(ch, host);
    Ok(())
}

/// Host send (device or test thread).
pub(crate) fn host_send(
    ch: &Channel,
    payload: &[u8],
    external: Option<&[u8]>,
    completion_requested: bool,
) -> Result<u64, HostError> {
    let buffer = match external {
        Some(data) => Some(Arc::new(HostBuffer::new(data).ok_or(HostError::TooLarge)?)),
        None => None,
    };
    let header = match &buffer {
        None => Vec::new(),
        Some(b) => {
            let pages = b.len().div_ceil(PAGE_SIZE);
            let first = pfn_of(b.address());
            let pfns: Vec<u64> = (0..pages as u64).map(|i| first.wrapping_add(i)).collect();
            let spec = [GpaRangeSpec {
                byte_offset: 0,
                byte_count: u32::try_from(b.len()).map_err(|_| HostError::TooLarge)?,
                pfns: &pfns,
            }];
            let len = gpa_direct_header_len(&spec).map_err(|_| HostError::TooLarge)?;
            let mut h = vec![0u8; len];
            encode_gpa_direct_header(&spec, &mut h).map_err(|_| HostError::TooLarge)?;
            h
        }
    };
    let mut host = lock(&ch.host);
    if host.writer.is_none() {
        return Err(HostError::NotOpen);
    }
    host.next_txid = host.next_txid.wrapping_add(1).max(1);
    let txid = host.next_txid;
    let kind = if buffer.is_some() {
        PacketType::GpaDirect
    } else {
        PacketType::InBand
    };
    if completion_requested || buffer.is_some() {
        host.tx.insert(txid, HostTx { external: buffer });
    }
    let frame = HostFrame {
        kind,
        txid,
        completion_requested,
        header,
        payload: payload.to_vec(),
    };
    if let Err(e) = submit(ch, &mut host, frame) {
        host.tx.remove(&txid);
        return Err(e);
    }
    Ok(txid)
}

/// A packet to write verbatim into the host→guest ring (hostile host). Every descriptor field
/// can be chosen; `offset8`/`len8` default to the values the bytes imply.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RawPacket {
    /// Descriptor `type` (any value, valid or not).
    pub packet_type: u16,
    /// Descriptor `flags` (bit 0 = completion requested; other bits are invalid).
    pub flags: u16,
    /// Descriptor `trans_id`.
    pub transaction_id: u64,
    /// Descriptor `offset8`; `None` = `(16 + header.len()) / 8`.
    pub offset8: Option<u16>,
    /// Descriptor `len8`; `None` = the padded length of descriptor + header + payload, in 8-byte
    /// units.
    pub len8: Option<u16>,
    /// Bytes between the descriptor and the payload (e.g. GPA ranges); padded to 8.
    pub header: Vec<u8>,
    /// The payload; padded to 8.
    pub payload: Vec<u8>,
}

impl RawPacket {
    /// A well-formed in-band packet (type 6).
    #[must_use]
    pub fn in_band(transaction_id: u64, completion_requested: bool, payload: &[u8]) -> Self {
        Self {
            packet_type: 6,
            flags: u16::from(completion_requested),
            transaction_id,
            offset8: None,
            len8: None,
            header: Vec::new(),
            payload: payload.to_vec(),
        }
    }

    /// A well-formed completion (type 0xB).
    #[must_use]
    pub fn completion(transaction_id: u64, payload: &[u8]) -> Self {
        Self {
            packet_type: 0xB,
            flags: 0,
            transaction_id,
            offset8: None,
            len8: None,
            header: Vec::new(),
            payload: payload.to_vec(),
        }
    }

    /// A GPA-direct packet (type 9) with the given raw range header
    /// (`{u32 reserved, u32 count, ranges…}`).
    #[must_use]
    pub fn gpa_direct(transaction_id: u64, header: &[u8], payload: &[u8]) -> Self {
        Self {
            packet_type: 9,
            flags: 1,
            transaction_id,
            offset8: None,
            len8: None,
            header: header.to_vec(),
            payload: payload.to_vec(),
        }
    }

    /// The packet bytes (descriptor, header, payload, padding; no trailer).
    #[must_use]
    pub fn to_bytes(&self) -> Vec<u8> {
        let pad = |v: &mut Vec<u8>| {
            while !v.len().is_multiple_of(8) {
                v.push(0);
            }
        };
        let mut header = self.header.clone();
        pad(&mut header);
        let mut body = header;
        body.extend_from_slice(&self.payload);
        pad(&mut body);
        let offset8 = self.offset8.unwrap_or_else(|| {
            u16::try_from((16 + self.header.len().next_multiple_of(8)) / 8).unwrap_or(u16::MAX)
        });
        let len8 = self
            .len8
            .unwrap_or_else(|| u16::try_from((16 + body.len()) / 8).unwrap_or(u16::MAX));
        let mut out = Vec::with_capacity(16 + body.len());
        out.extend_from_slice(&self.packet_type.to_le_bytes());
        out.extend_from_slice(&offset8.to_le_bytes());
        out.extend_from_slice(&len8.to_le_bytes());
        out.extend_from_slice(&self.flags.to_le_bytes());
        out.extend_from_slice(&self.transaction_id.to_le_bytes());
        out.extend_from_slice(&body);
        out
    }
}

/// Writes a raw packet (plus its trailer) into the host→guest ring.
pub(crate) fn inject_raw(ch: &Channel, raw: &RawPacket) -> Result<(), HostError> {
    let mut bytes = raw.to_bytes();
    let mut host = lock(&ch.host);
    if host.writer_frozen {
        return Err(HostError::RingCorrupted);
    }
    flush(ch, &mut host);
    if !host.queue.is_empty() {
        return Err(HostError::RingFull);
    }
    let w = host.writer.as_mut().ok_or(HostError::NotOpen)?;
    let start = w.write_index();
    bytes.extend_from_slice(&(u64::from(start) << 32).to_le_bytes());
    let mut batch = w.batch();
    match batch.write_raw(&bytes) {
        Ok(()) => {}
        Err(RingError::NotEnoughSpace { .. }) => return Err(HostError::RingFull),
        Err(RingError::RawAccessOutOfRange { .. }) => return Err(HostError::InvalidRawPacket),
        Err(_) => return Err(HostError::RingCorrupted),
    }
    let outcome = batch.commit();
    drop(host);
    if outcome.signal_needed {
        ch.guest_event.signal();
    }
    // Make sure the guest looks even if it was draining with interrupts masked.
    ch.guest_event.signal();
    Ok(())
}

/// Hostile: wild `write_index` on the host→guest ring.
pub(crate) fn poke_incoming_write_index(ch: &Channel, value: u32) -> Result<(), HostError> {
    let mut host = lock(&ch.host);
    let mut reader = lock(&ch.guest_reader);
    let (Some(w), Some(r)) = (host.writer.as_mut(), reader.as_mut()) else {
        return Err(HostError::NotOpen);
    };
    let mut raw = RawAccess::new(w, r).map_err(|_| HostError::RingCorrupted)?;
    // SAFETY: the host writer is frozen below, so from now on only the guest's reader uses this
    // ring: the endpoints are never used concurrently (the index poke's requirement).
    unsafe { raw.set_write_index(value) };
    drop(raw);
    drop(reader);
    host.writer_frozen = true;
    host.queue.clear();
    drop(host);
    ch.guest_event.signal();
    Ok(())
}

/// Hostile: wild `read_index` on the guest→host ring.
pub(crate) fn poke_outgoing_read_index(ch: &Channel, value: u32) -> Result<(), HostError> {
    let mut inner = lock(&ch.inner);
    let mut host = lock(&ch.host);
    let (Some(w), Some(r)) = (inner.writer.as_mut(), host.reader.as_mut()) else {
        return Err(HostError::NotOpen);
    };
    let mut raw = RawAccess::new(w, r).map_err(|_| HostError::RingCorrupted)?;
    // SAFETY: the host reader is frozen below, so from now on only the guest's writer uses this
    // ring: the endpoints are never used concurrently.
    unsafe { raw.set_read_index(value) };
    drop(raw);
    host.reader_frozen = true;
    Ok(())
}

/// What a device can do with its open channel (passed to every [`HostDevice`] method).
pub struct HostChannel {
    pub(crate) channel: Arc<Channel>,
    pub(crate) offer: Arc<OfferShared>,
}

impl fmt::Debug for HostChannel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HostChannel")
            .field("channel", &self.channel.handle)
            .finish_non_exhaustive()
    }
}

impl HostChannel {
    /// Sends the completion of guest transaction `transaction_id` with `response` (queued if the
    /// ring is full).
    ///
    /// # Errors
    /// [`HostError::NotOpen`], [`HostError::TooLarge`], [`HostError::RingCorrupted`].
    pub fn complete(&mut self, transaction_id: u64, response: &[u8]) -> Result<(), HostError> {
        let mut host = lock(&self.channel.host);
        submit(
            &self.channel,
            &mut host,
            HostFrame {
                kind: PacketType::Completion,
                txid: transaction_id,
                completion_requested: false,
                header: Vec::new(),
                payload: response.to_vec(),
            },
        )
    }

    /// Sends an in-band packet to the guest; returns its host transaction ID.
    ///
    /// # Errors
    /// As for [`HostChannel::complete`].
    pub fn send(&mut self, payload: &[u8], completion_requested: bool) -> Result<u64, HostError> {
        host_send(&self.channel, payload, None, completion_requested)
    }

    /// Sends a GPA-direct packet whose external data is a host buffer holding a copy of
    /// `external`; the guest maps it with `VmbChannelPacketGetExternalData`. The buffer's final
    /// contents come back in [`HostCompletion::external`].
    ///
    /// # Errors
    /// As for [`HostChannel::complete`]; [`HostError::TooLarge`] for empty `external`.
    pub fn send_with_external(
        &mut self,
        payload: &[u8],
        external: &[u8],
        completion_requested: bool,
    ) -> Result<u64, HostError> {
        host_send(&self.channel, payload, Some(external), completion_requested)
    }

    /// The host view of guest GPADL `handle`, if the guest created it on this channel.
    #[must_use]
    pub fn gpadl(&self, handle: u32) -> Option<GpadlView> {
        crate::model::gpadl::view(&self.channel, handle)
    }

    /// A waker for this channel's host thread.
    #[must_use]
    pub fn waker(&self) -> HostWaker {
        HostWaker(Arc::downgrade(&self.channel))
    }

    /// The offer's interface type.
    #[must_use]
    pub fn interface_type(&self) -> GUID {
        self.offer.interface_type
    }

    /// The offer's interface instance.
    #[must_use]
    pub fn interface_instance(&self) -> GUID {
        self.offer.instance
    }
}

/// A packet read by the host.
pub(crate) enum HostIncoming {
    Data(HostPacket),
    Completion { txid: u64, payload: Vec<u8> },
    Other,
}

pub(crate) fn read_guest_ring(
    ch: &Arc<Channel>,
    scratch: &mut Vec<u8>,
) -> (Vec<HostIncoming>, bool) {
    let mut out = Vec::new();
    let mut host = lock(&ch.host);
    if host.reader_frozen {
        return (out, false);
    }
    let Some(reader) = host.reader.as_mut() else {
        return (out, false);
    };
    reader.mask_interrupts();
    let mut signal = false;
    let mut more = false;
    {
        let mut batch = reader.batch();
        while out.len() < 64 {
            match batch.read(scratch) {
                Ok(Some(p)) => {
                    let item = match p.packet_type() {
                        PacketType::Completion => HostIncoming::Completion {
                            txid: p.transaction_id(),
                            payload: p.payload().to_vec(),
                        },
                        PacketType::InBand | PacketType::GpaDirect => {
                            let ranges = p
                                .gpa_ranges()
                                .map(|rs| {
                                    rs.map(|r| HostRange {
                                        byte_offset: r.byte_offset,
                                        byte_count: r.byte_count,
                                        pfns: r.pfns.iter().collect(),
                                    })
                                    .collect()
                                })
                                .unwrap_or_default();
                            HostIncoming::Data(HostPacket {
                                kind: if p.packet_type() == PacketType::GpaDirect {
                                    HostPacketKind::GpaDirect
                                } else {
                                    HostPacketKind::InBand
                                },
                                transaction_id: p.transaction_id(),
                                completion_requested: p.completion_requested(),
                                payload: p.payload().to_vec(),
                                ranges,
                                channel: Arc::clone(ch),
                            })
                        }
                        PacketType::TransferPages => HostIncoming::Other,
                    };
                    out.push(item);
                }
                Ok(None) => break,
                Err(RingError::BufferTooSmall { needed, .. }) => scratch.resize(needed, 0),
                Err(_) => break,
            }
        }
        if out.len() >= 64 {
            more = true;
        }
        if let Ok(c) = batch.commit() {
            signal = c.signal_needed;
        }
    }
    if !more {
        more = reader.unmask_interrupts().unwrap_or(false);
    }
    drop(host);
    if signal {
        ch.guest_event.signal();
    }
    (out, more)
}
