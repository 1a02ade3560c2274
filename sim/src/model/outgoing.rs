//! Outgoing packets: packet objects, the send path, transactions and synchronous requests.

use core::ptr::NonNull;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use vmbus_kmcl::sys::{
    MDL, NTSTATUS, VMBUS_CHANNEL_FORMAT_FLAG_FORCE_MDL_LENGTH,
    VMBUS_CHANNEL_FORMAT_FLAG_WAIT_FOR_COMPLETION, VMBUS_CHANNEL_FORMAT_FLAGS,
};

use crate::base::event::lock;
use crate::base::memory::{self, ChainError, MdlSpan, PAGE_SIZE, pfn_of};
use crate::base::status::{
    STATUS_BUFFER_OVERFLOW, STATUS_CANCELLED, STATUS_DEVICE_REMOVED, STATUS_INVALID_DEVICE_STATE,
    STATUS_INVALID_PARAMETER, STATUS_INVALID_PARAMETER_1, STATUS_INVALID_PARAMETER_2,
    STATUS_INVALID_PARAMETER_3, STATUS_INVALID_PARAMETER_4, STATUS_INVALID_PARAMETER_5,
    STATUS_INVALID_PARAMETER_6, STATUS_INVALID_PARAMETER_7, STATUS_INVALID_PARAMETER_8,
    STATUS_SUCCESS, nt_success,
};
use crate::model::callbacks::CompletionRoutine;
use crate::model::channel::{Channel, Inner, State};
use crate::model::registry;
use crate::ring::{
    GpaRangeSpec, OutgoingPacket, PacketType, RingError, encode_gpa_direct_header,
    packet_ring_bytes,
};
use crate::verifier::report::{Counter, ViolationKind};

/// A zeroed, 8-aligned allocation whose address is handed to the driver (inline packet context,
/// client context, incoming payload).
#[derive(Debug)]
pub(crate) struct RawBuf {
    ptr: NonNull<u64>,
    words: usize,
}

// SAFETY: the allocation is owned; the emulator itself never forms references into it (only the
// driver writes through the address), so sharing the owner across threads is fine.
unsafe impl Send for RawBuf {}
// SAFETY: see `Send`.
unsafe impl Sync for RawBuf {}

impl RawBuf {
    /// `bytes` zeroed bytes (at least one word is allocated).
    pub(crate) fn zeroed(bytes: usize) -> Self {
        let words = bytes.div_ceil(8).max(1);
        let b: Box<[u64]> = vec![0u64; words].into_boxed_slice();
        let ptr = NonNull::from(Box::leak(b)).cast::<u64>();
        Self { ptr, words }
    }

    /// A copy of `data`.
    pub(crate) fn from_bytes(data: &[u8]) -> Self {
        let b = Self::zeroed(data.len());
        // SAFETY: the allocation holds at least `data.len()` bytes and is distinct from `data`.
        unsafe {
            core::ptr::copy_nonoverlapping(data.as_ptr(), b.ptr.as_ptr().cast::<u8>(), data.len());
        }
        b
    }

    pub(crate) fn address(&self) -> usize {
        self.ptr.as_ptr() as usize
    }
}

impl Drop for RawBuf {
    fn drop(&mut self) {
        let slice = core::ptr::slice_from_raw_parts_mut(self.ptr.as_ptr(), self.words);
        // SAFETY: leaked from a `Box<[u64]>` of `self.words` elements in `zeroed`; freed once.
        drop(unsafe { Box::from_raw(slice) });
    }
}

/// Where an outgoing packet is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Phase {
    Idle,
    Queued,
    InFlight,
    Completing,
    Freed,
}

pub(crate) struct OutState {
    pub(crate) pointer: usize,
    pub(crate) routine: CompletionRoutine,
    pub(crate) phase: Phase,
}

/// An outgoing packet object (`VMBPACKET`).
pub(crate) struct OutPacket {
    pub(crate) handle: usize,
    pub(crate) channel: Arc<Channel>,
    /// From `VmbPacketAllocate` (else caller storage from `VmbPacketInitialize`).
    pub(crate) allocated: bool,
    /// Address of the inline packet context (0 if none).
    pub(crate) context: usize,
    _context_storage: Option<RawBuf>,
    pub(crate) st: Mutex<OutState>,
}

impl OutPacket {
    pub(crate) fn new(
        channel: &Arc<Channel>,
        handle: usize,
        allocated: bool,
        context: usize,
        storage: Option<RawBuf>,
    ) -> Arc<Self> {
        Arc::new(Self {
            handle,
            channel: Arc::clone(channel),
            allocated,
            context,
            _context_storage: storage,
            st: Mutex::new(OutState {
                pointer: 0,
                routine: CompletionRoutine::Default,
                phase: Phase::Idle,
            }),
        })
    }
}

/// A synchronous request's rendezvous: the status and the response.
pub(crate) type SyncWait = crate::base::event::Rendezvous<(NTSTATUS, Vec<u8>)>;

/// Who is waiting for a frame.
pub(crate) enum Owner {
    Packet {
        packet: Arc<OutPacket>,
        wait: bool,
    },
    Sync {
        waiter: Arc<SyncWait>,
        wait: bool,
    },
    /// A completion packet of an incoming request; nobody waits.
    Completion,
}

/// A packet ready for the guest→host ring.
pub(crate) struct Frame {
    pub(crate) txid: u64,
    pub(crate) completion_requested: bool,
    pub(crate) kind: PacketType,
    pub(crate) header: Vec<u8>,
    pub(crate) payload: Vec<u8>,
    pub(crate) owner: Owner,
}

impl Frame {
    /// Cancels a frame that never reached the ring.
    pub(crate) fn cancel(self, inner: &mut Inner, status: NTSTATUS) {
        match self.owner {
            Owner::Packet { packet, .. } => inner.work.push_back(Work::Complete {
                packet,
                status,
                response: Vec::new(),
            }),
            Owner::Sync { waiter, .. } => waiter.put((status, Vec::new())),
            Owner::Completion => {}
        }
    }
}

/// An open transaction.
pub(crate) enum Tx {
    Packet(Arc<OutPacket>),
    Sync(Arc<SyncWait>),
    /// A synchronous request that timed out; its completion is absorbed (counted as late).
    Abandoned,
    /// A zero-timeout synchronous request; its completion is absorbed silently.
    Detached,
}

/// A completion-routine call for the callback thread.
pub(crate) enum Work {
    Complete {
        packet: Arc<OutPacket>,
        status: NTSTATUS,
        response: Vec<u8>,
    },
}

/// External data of a send.
pub(crate) enum External {
    None,
    /// A whole MDL chain (`VmbPacketSend`, `VmbChannelSendSynchronousRequest`).
    Chain {
        mdl: *mut MDL,
    },
    /// A window of an MDL chain (`VmbPacketSendWithExternalMdl`).
    Window {
        mdl: *mut MDL,
        offset: u32,
        length: u32,
    },
    /// Whole pages by PFN (`VmbPacketSendWithExternalPfns`).
    Pfns {
        pfns: *const u64,
        count: u32,
    },
}

/// One GPA range to encode.
struct Range {
    byte_offset: u32,
    byte_count: u32,
    pfns: Vec<u64>,
}

fn span_range(s: &MdlSpan) -> Option<Range> {
    let off = s.address % PAGE_SIZE;
    let pages = (off + s.len).div_ceil(PAGE_SIZE);
    let first = pfn_of(s.address - off);
    Some(Range {
        byte_offset: u32::try_from(off).ok()?,
        byte_count: u32::try_from(s.len).ok()?,
        pfns: (0..pages as u64).map(|i| first.wrapping_add(i)).collect(),
    })
}

impl Channel {
    fn next_txid(inner: &mut Inner) -> u64 {
        let id = inner.next_txid;
        inner.next_txid = inner.next_txid.wrapping_add(1).max(1);
        id
    }

    /// Remembers a finished transaction (to recognise duplicate completions).
    pub(crate) fn remember_finished(inner: &mut Inner, txid: u64) {
        if inner.finished.len() >= 4096 {
            inner.finished.pop_front();
        }
        inner.finished.push_back(txid);
    }

    fn write_frame(&self, inner: &mut Inner, f: &Frame) -> Result<(), RingError> {
        let Some(w) = inner.writer.as_mut() else {
            return Err(RingError::MismatchedEndpoints);
        };
        let payload: [&[u8]; 1] = [&f.payload];
        let packet = OutgoingPacket {
            packet_type: f.kind,
            completion_requested: f.completion_requested,
            transaction_id: f.txid,
            header: &f.header,
            payload: &payload,
        };
        let outcome = w.write(&packet)?;
        self.interrupt_host(inner.offer.as_deref(), outcome.signal_needed, true);
        Ok(())
    }

    /// A guest→host interrupt decision: `needed` is what the ring's signalling rule said
    /// (spec §1.8); `write` tells a write commit (which the spurious-signal fault may force)
    /// from a read commit's "space freed" signal. Unneeded interrupts are counted on `offer`
    /// and, under [`HostProfile::HyperV`](crate::HostProfile::HyperV), reported.
    pub(crate) fn interrupt_host(
        &self,
        offer: Option<&crate::model::offer::OfferShared>,
        needed: bool,
        write: bool,
    ) {
        if !needed {
            if !write
                || !self
                    .bus
                    .spurious_signals
                    .load(core::sync::atomic::Ordering::Relaxed)
            {
                return;
            }
            if let Some(o) = offer {
                o.unneeded_signals
                    .fetch_add(1, core::sync::atomic::Ordering::Relaxed);
            }
            if self.bus.config.host_profile.reports_unneeded_signals() {
                self.violation(
                    "guest-to-host interrupt",
                    ViolationKind::UnexpectedInterrupt,
                    "interrupt after a write that found the ring non-empty or the host's \
                     interrupts masked",
                );
            }
        }
        self.host_event.signal();
    }

    fn after_write(&self, inner: &mut Inner, f: Frame) {
        match f.owner {
            Owner::Packet { packet, wait: true } => {
                inner.tx.insert(f.txid, Tx::Packet(packet));
            }
            Owner::Packet {
                packet,
                wait: false,
            } => {
                inner.work.push_back(Work::Complete {
                    packet,
                    status: STATUS_SUCCESS,
                    response: Vec::new(),
                });
                self.guest_event.signal();
            }
            Owner::Sync { waiter, wait: true } => {
                inner.tx.insert(f.txid, Tx::Sync(waiter));
            }
            Owner::Sync {
                waiter,
                wait: false,
            } => waiter.put((STATUS_SUCCESS, Vec::new())),
            Owner::Completion => {}
        }
        self.cv.notify_all();
    }

    fn writer_corrupt(&self, inner: &mut Inner) {
        if !inner.out_corrupt {
            inner.out_corrupt = true;
            self.bus.bump(Counter::OutgoingRingCorruption);
        }
        let queued: Vec<Frame> = inner.send_queue.drain(..).collect();
        for f in queued {
            f.cancel(inner, STATUS_DEVICE_REMOVED);
        }
        self.guest_event.signal();
    }

    /// Writes `f` now, or queues it behind earlier frames / until the host frees space.
    pub(crate) fn submit(&self, inner: &mut Inner, f: Frame) -> Result<(), NTSTATUS> {
        if inner.out_corrupt {
            return Err(STATUS_DEVICE_REMOVED);
        }
        if inner.writer.is_none() {
            return Err(STATUS_INVALID_DEVICE_STATE);
        }
        if !inner.send_queue.is_empty() {
            inner.send_queue.push_back(f);
            self.flush(inner);
            return Ok(());
        }
        match self.write_frame(inner, &f) {
            Ok(()) => {
                self.after_write(inner, f);
                Ok(())
            }
            Err(RingError::NotEnoughSpace { needed, .. }) => {
                inner.send_queue.push_back(f);
                let ready = inner.writer.as_mut().map(|w| w.wait_for_space(needed));
                match ready {
                    Some(Ok(true)) => self.flush(inner),
                    Some(Err(_)) => self.writer_corrupt(inner),
                    _ => {}
                }
                Ok(())
            }
            Err(e) if e.is_peer_corruption() => {
                self.writer_corrupt(inner);
                Err(STATUS_DEVICE_REMOVED)
            }
            Err(_) => Err(STATUS_INVALID_PARAMETER),
        }
    }

    /// Writes queued frames while the ring has room.
    pub(crate) fn flush(&self, inner: &mut Inner) {
        loop {
            let Some(front) = inner.send_queue.pop_front() else {
                return;
            };
            match self.write_frame(inner, &front) {
                Ok(()) => self.after_write(inner, front),
                Err(RingError::NotEnoughSpace { needed, .. }) => {
                    inner.send_queue.push_front(front);
                    let ready = inner.writer.as_mut().map(|w| w.wait_for_space(needed));
                    match ready {
                        Some(Ok(true)) => {}
                        Some(Err(_)) => {
                            self.writer_corrupt(inner);
                            return;
                        }
                        _ => return,
                    }
                }
                Err(e) if e.is_peer_corruption() => {
                    inner.send_queue.push_front(front);
                    self.writer_corrupt(inner);
                    return;
                }
                Err(_) => front.cancel(inner, STATUS_INVALID_PARAMETER),
            }
        }
    }

    /// Largest packet (`len8 * 8`) the outgoing ring accepts, or 0 when not open.
    fn ring_limit(inner: &Inner) -> usize {
        inner
            .writer
            .as_ref()
            .map_or(0, |w| w.ring().max_packet_len() as usize)
    }

    /// State check shared by every send; records the violation.
    fn check_sendable(&self, inner: &Inner, slot: &'static str) -> Result<(), NTSTATUS> {
        match inner.state {
            State::Running => Ok(()),
            // The host closed the channel, or its rescind is closing it: the driver cannot
            // know yet, so the send fails as it will once the close is done, without a
            // violation.
            _ if inner.host_took_it_away() => Err(STATUS_DEVICE_REMOVED),
            other => {
                self.violation(
                    slot,
                    ViolationKind::SendOnDisabledChannel,
                    format!("send on a channel in state {other:?}"),
                );
                Err(STATUS_INVALID_DEVICE_STATE)
            }
        }
    }

    /// Reads and validates external data into GPA ranges. `mdl_param` is the status for a bad
    /// MDL/PFN argument; window errors use `offset_param` / `length_param`.
    fn external_ranges(
        &self,
        slot: &'static str,
        ext: &External,
        mdl_param: NTSTATUS,
        offset_param: NTSTATUS,
        length_param: NTSTATUS,
        flags: u32,
    ) -> Result<Vec<Range>, NTSTATUS> {
        let (max_data, max_chain) = {
            let inner = lock(&self.inner);
            (
                inner.cfg.max_external_data as usize,
                inner.cfg.max_external_chain as usize,
            )
        };
        let bad = |status: NTSTATUS, msg: String| {
            self.violation(slot, ViolationKind::InvalidParameter, msg);
            status
        };
        let spans = match *ext {
            External::None => return Ok(Vec::new()),
            External::Pfns { pfns, count } => {
                if pfns.is_null() {
                    return Err(bad(mdl_param, "null PFN array".into()));
                }
                if count == 0 {
                    return Err(bad(length_param, "zero PFN count".into()));
                }
                let bytes = (count as usize).saturating_mul(PAGE_SIZE);
                if bytes > max_data {
                    return Err(bad(
                        length_param,
                        format!("{bytes} bytes of external data exceed the maximum {max_data}"),
                    ));
                }
                let mut list = Vec::with_capacity(count as usize);
                for i in 0..count as usize {
                    // SAFETY: the driver passes `count` PFNs at `pfns` (KMCL contract); `i <
                    // count`.
                    let pfn = unsafe { pfns.wrapping_add(i).read_unaligned() };
                    let addr = usize::try_from(pfn)
                        .ok()
                        .and_then(|p| p.checked_mul(PAGE_SIZE));
                    if !addr.is_some_and(|a| memory::is_known(a, PAGE_SIZE)) {
                        return Err(bad(
                            mdl_param,
                            format!("PFN {pfn:#x} is not a whole page of known memory"),
                        ));
                    }
                    list.push(pfn);
                }
                return Ok(vec![Range {
                    byte_offset: 0,
                    byte_count: u32::try_from(bytes).map_err(|_| length_param)?,
                    pfns: list,
                }]);
            }
            External::Chain { mdl } | External::Window { mdl, .. } => {
                if mdl.is_null() {
                    return Err(bad(mdl_param, "null MDL".into()));
                }
                match memory::read_chain(mdl, max_chain) {
                    Ok(s) => s,
                    Err(ChainError::Unknown(a)) => {
                        self.bus.violation(
                            slot,
                            ViolationKind::InvalidHandle,
                            "MDL not created by OwnedMdl (or already dropped)",
                            a,
                        );
                        return Err(mdl_param);
                    }
                    Err(ChainError::Corrupt(a, why)) => {
                        self.bus
                            .violation(slot, ViolationKind::InvalidParameter, why, a);
                        return Err(mdl_param);
                    }
                    Err(ChainError::TooLong) => {
                        return Err(bad(
                            mdl_param,
                            format!("MDL chain longer than the maximum {max_chain}"),
                        ));
                    }
                }
            }
        };
        let total: usize = spans.iter().map(|s| s.len).sum();
        let (offset, length) = match *ext {
            External::Window { offset, length, .. } => {
                let offset = offset as usize;
                if offset >= total {
                    return Err(bad(
                        offset_param,
                        format!("MDL offset {offset} beyond the chain's {total} bytes"),
                    ));
                }
                let length = if flags & VMBUS_CHANNEL_FORMAT_FLAG_FORCE_MDL_LENGTH != 0 {
                    total - offset
                } else {
                    length as usize
                };
                (offset, length)
            }
            _ => (0, total),
        };
        let Some(window) = memory::window(&spans, offset, length) else {
            return Err(bad(
                length_param,
                format!("MDL window {offset}+{length} does not fit the chain's {total} bytes"),
            ));
        };
        if length > max_data {
            return Err(bad(
                length_param,
                format!("{length} bytes of external data exceed the maximum {max_data}"),
            ));
        }
        window
            .iter()
            .map(span_range)
            .collect::<Option<Vec<_>>>()
            .ok_or(mdl_param)
    }
}

fn encode_header(ranges: &[Range]) -> Result<Vec<u8>, RingError> {
    if ranges.is_empty() {
        return Ok(Vec::new());
    }
    let specs: Vec<GpaRangeSpec<'_>> = ranges
        .iter()
        .map(|r| GpaRangeSpec {
            byte_offset: r.byte_offset,
            byte_count: r.byte_count,
            pfns: &r.pfns,
        })
        .collect();
    let len = crate::ring::gpa_direct_header_len(&specs)?;
    let mut out = vec![0u8; len];
    encode_gpa_direct_header(&specs, &mut out)?;
    Ok(out)
}

/// Copies `len` driver bytes at `buffer`.
fn copy_in(buffer: *const u8, len: u32) -> Vec<u8> {
    if buffer.is_null() || len == 0 {
        return Vec::new();
    }
    // SAFETY: the driver passes `len` readable bytes at `buffer` (KMCL contract; null/0 handled
    // above).
    unsafe { core::slice::from_raw_parts(buffer, len as usize) }.to_vec()
}

/// The parameter statuses of one send slot.
#[derive(Clone, Copy)]
pub(crate) struct SendParams {
    pub(crate) mdl: NTSTATUS,
    pub(crate) offset: NTSTATUS,
    pub(crate) length: NTSTATUS,
    pub(crate) flags: NTSTATUS,
}

/// `VmbPacketSend` / `…WithExternalMdl` / `…WithExternalPfns`.
pub(crate) fn send_packet(
    packet: &Arc<OutPacket>,
    slot: &'static str,
    buffer: *const u8,
    len: u32,
    ext: &External,
    flags: u32,
    params: SendParams,
) -> NTSTATUS {
    let ch = &packet.channel;
    if flags & !VMBUS_CHANNEL_FORMAT_FLAGS != 0 {
        ch.violation(
            slot,
            ViolationKind::InvalidParameter,
            format!("unknown send flags {flags:#x}"),
        );
        return params.flags;
    }
    if buffer.is_null() && len > 0 {
        ch.violation(
            slot,
            ViolationKind::InvalidParameter,
            "null buffer with a length",
        );
        return STATUS_INVALID_PARAMETER_2;
    }
    let max = lock(&ch.inner).cfg.max_packet_size;
    if len > max {
        ch.violation(
            slot,
            ViolationKind::InvalidParameter,
            format!("{len} in-band bytes exceed the maximum packet size {max}"),
        );
        return STATUS_INVALID_PARAMETER_3;
    }
    let ranges =
        match ch.external_ranges(slot, ext, params.mdl, params.offset, params.length, flags) {
            Ok(r) => r,
            Err(s) => return s,
        };
    let Ok(header) = encode_header(&ranges) else {
        return params.mdl;
    };
    let payload = copy_in(buffer, len);
    let wait = flags & VMBUS_CHANNEL_FORMAT_FLAG_WAIT_FOR_COMPLETION != 0;
    let kind = if ranges.is_empty() {
        PacketType::InBand
    } else {
        PacketType::GpaDirect
    };
    let mut inner = lock(&ch.inner);
    if let Err(s) = ch.check_sendable(&inner, slot) {
        return s;
    }
    let needed = packet_ring_bytes(header.len(), payload.len()).map_or(usize::MAX, |b| b as usize);
    if needed.saturating_sub(8) > Channel::ring_limit(&inner) {
        drop(inner);
        ch.violation(
            slot,
            ViolationKind::InvalidParameter,
            "packet (with its GPA ranges) larger than the outgoing ring",
        );
        return if ranges.is_empty() {
            STATUS_INVALID_PARAMETER_3
        } else {
            params.mdl
        };
    }
    {
        let mut st = lock(&packet.st);
        match st.phase {
            Phase::Idle | Phase::Completing => {}
            other => {
                drop(st);
                drop(inner);
                ch.violation(
                    slot,
                    ViolationKind::WrongState,
                    format!("send of a packet that is {other:?}"),
                );
                return STATUS_INVALID_DEVICE_STATE;
            }
        }
        if matches!(st.routine, CompletionRoutine::Default) && !packet.allocated {
            drop(st);
            drop(inner);
            ch.violation(
                slot,
                ViolationKind::InvalidParameter,
                "VmbPacketInitialize packet sent without a completion routine",
            );
            return STATUS_INVALID_PARAMETER_1;
        }
        st.phase = Phase::Queued;
    }
    let txid = Channel::next_txid(&mut inner);
    let frame = Frame {
        txid,
        completion_requested: wait,
        kind,
        header,
        payload,
        owner: Owner::Packet {
            packet: Arc::clone(packet),
            wait,
        },
    };
    match ch.submit(&mut inner, frame) {
        Ok(()) => {
            let mut st = lock(&packet.st);
            if st.phase == Phase::Queued {
                st.phase = Phase::InFlight;
            }
            STATUS_SUCCESS
        }
        Err(s) => {
            lock(&packet.st).phase = Phase::Idle;
            s
        }
    }
}

/// The decoded timeout of a synchronous request.
enum Timeout {
    Zero,
    For(Duration),
}

/// `VmbChannelSendSynchronousRequest`.
#[allow(clippy::too_many_arguments)]
pub(crate) fn send_sync(
    ch: &Arc<Channel>,
    buffer: *const u8,
    size: u32,
    mdl: *mut MDL,
    flags: u32,
    completion: *mut u8,
    completion_size: *mut u32,
    timeout: *const i64,
) -> NTSTATUS {
    const SLOT: &str = "VmbChannelSendSynchronousRequest";
    if flags & !VMBUS_CHANNEL_FORMAT_FLAGS != 0 {
        ch.violation(
            SLOT,
            ViolationKind::InvalidParameter,
            format!("unknown send flags {flags:#x}"),
        );
        return STATUS_INVALID_PARAMETER_5;
    }
    if buffer.is_null() && size > 0 {
        ch.violation(
            SLOT,
            ViolationKind::InvalidParameter,
            "null buffer with a size",
        );
        return STATUS_INVALID_PARAMETER_2;
    }
    let max = lock(&ch.inner).cfg.max_packet_size;
    if size > max {
        ch.violation(
            SLOT,
            ViolationKind::InvalidParameter,
            format!("{size} bytes exceed the maximum packet size {max}"),
        );
        return STATUS_INVALID_PARAMETER_3;
    }
    let capacity = if completion_size.is_null() {
        if !completion.is_null() {
            ch.violation(
                SLOT,
                ViolationKind::InvalidParameter,
                "completion buffer without a size pointer",
            );
            return STATUS_INVALID_PARAMETER_7;
        }
        0
    } else {
        // SAFETY: non-null in/out size pointer supplied by the driver (KMCL contract).
        let cap = unsafe { completion_size.read_unaligned() };
        if !cap.is_multiple_of(8) {
            ch.violation(
                SLOT,
                ViolationKind::InvalidParameter,
                format!("completion buffer size {cap} is not a multiple of 8"),
            );
            return STATUS_INVALID_PARAMETER_7;
        }
        if completion.is_null() && cap > 0 {
            ch.violation(
                SLOT,
                ViolationKind::InvalidParameter,
                "null completion buffer with a size",
            );
            return STATUS_INVALID_PARAMETER_6;
        }
        cap
    };
    let timeout = if timeout.is_null() {
        Timeout::For(ch.bus.config.infinite_wait_cap)
    } else {
        // SAFETY: non-null LARGE_INTEGER supplied by the driver (KMCL contract); read as i64.
        let t = unsafe { timeout.read_unaligned() };
        match t {
            0 => Timeout::Zero,
            t if t < 0 => Timeout::For(Duration::from_nanos(t.unsigned_abs().saturating_mul(100))),
            _ => {
                ch.violation(
                    SLOT,
                    ViolationKind::InvalidParameter,
                    "absolute timeouts are not supported by the emulator",
                );
                return STATUS_INVALID_PARAMETER_8;
            }
        }
    };
    let ranges = match ch.external_ranges(
        SLOT,
        &if mdl.is_null() {
            External::None
        } else {
            External::Chain { mdl }
        },
        STATUS_INVALID_PARAMETER_4,
        STATUS_INVALID_PARAMETER_4,
        STATUS_INVALID_PARAMETER_4,
        flags,
    ) {
        Ok(r) => r,
        Err(s) => return s,
    };
    let Ok(header) = encode_header(&ranges) else {
        return STATUS_INVALID_PARAMETER_4;
    };
    let payload = copy_in(buffer, size);
    let wait_flag = flags & VMBUS_CHANNEL_FORMAT_FLAG_WAIT_FOR_COMPLETION != 0;
    let (completion_requested, wait_for) = match timeout {
        Timeout::Zero => (wait_flag, None),
        Timeout::For(d) => (true, Some(d)),
    };
    let waiter = Arc::new(SyncWait::default());
    let txid = {
        let mut inner = lock(&ch.inner);
        if wait_for.is_some() && (Channel::on_callback_thread(&inner) || inner.in_started) {
            drop(inner);
            ch.violation(
                SLOT,
                ViolationKind::WouldDeadlock,
                "waiting synchronous request from a packet callback or EvtChannelStarted \
                 (packets do not flow until it returns)",
            );
            return STATUS_INVALID_DEVICE_STATE;
        }
        if let Err(s) = ch.check_sendable(&inner, SLOT) {
            return s;
        }
        let needed = packet_ring_bytes(header.len(), payload.len()).unwrap_or(u32::MAX);
        if (needed as usize).saturating_sub(8) > Channel::ring_limit(&inner) {
            return STATUS_BUFFER_OVERFLOW;
        }
        if wait_for.is_none() {
            let free = inner
                .writer
                .as_mut()
                .map_or(Ok(0), crate::ring::RingWriter::free_bytes)
                .unwrap_or(0);
            if !inner.send_queue.is_empty() || free < needed {
                return STATUS_BUFFER_OVERFLOW;
            }
        }
        let txid = Channel::next_txid(&mut inner);
        let frame = Frame {
            txid,
            completion_requested,
            kind: if ranges.is_empty() {
                PacketType::InBand
            } else {
                PacketType::GpaDirect
            },
            header,
            payload,
            owner: Owner::Sync {
                waiter: Arc::clone(&waiter),
                wait: completion_requested,
            },
        };
        if let Err(s) = ch.submit(&mut inner, frame) {
            return s;
        }
        if let (None, true, Some(t)) = (wait_for, completion_requested, inner.tx.get_mut(&txid)) {
            *t = Tx::Detached;
        }
        txid
    };
    let Some(wait_for) = wait_for else {
        if !completion_size.is_null() {
            // SAFETY: checked non-null above; the driver's in/out size.
            unsafe { completion_size.write_unaligned(0) };
        }
        return STATUS_SUCCESS;
    };
    let result = waiter.take_within(wait_for);
    let Some((status, response)) = result else {
        let mut inner = lock(&ch.inner);
        if let Some(t) = inner.tx.get_mut(&txid) {
            *t = Tx::Abandoned;
        }
        inner.send_queue.retain(|f| f.txid != txid);
        return STATUS_CANCELLED;
    };
    if !nt_success(status) {
        return status;
    }
    let n = response.len().min(capacity as usize);
    if n > 0 {
        // SAFETY: `completion` is non-null with `capacity >= n` writable bytes (checked above,
        // KMCL contract); `response` is a distinct host buffer.
        unsafe { core::ptr::copy_nonoverlapping(response.as_ptr(), completion, n) };
    }
    if !completion_size.is_null() {
        // SAFETY: checked non-null above.
        unsafe { completion_size.write_unaligned(u32::try_from(n).unwrap_or(u32::MAX)) };
    }
    if response.len() > capacity as usize {
        STATUS_BUFFER_OVERFLOW
    } else {
        STATUS_SUCCESS
    }
}

/// Frees an outgoing packet (`VmbPacketFree`, or the default completion routine).
pub(crate) fn free_packet(packet: &Arc<OutPacket>, why: &'static str) {
    lock(&packet.st).phase = Phase::Freed;
    lock(&packet.channel.inner).packets.remove(&packet.handle);
    drop(registry::retire(packet.handle, why));
}

/// Delivers a completion to an outgoing packet's routine (callback thread).
pub(crate) fn deliver_completion(packet: &Arc<OutPacket>, status: NTSTATUS, response: &[u8]) {
    let routine = {
        let mut st = lock(&packet.st);
        if st.phase == Phase::Freed {
            return;
        }
        st.phase = Phase::Completing;
        st.routine
    };
    let called = routine.call(packet.handle, status, response);
    let auto_free = {
        let mut st = lock(&packet.st);
        if st.phase == Phase::Completing {
            st.phase = Phase::Idle;
            !called && packet.allocated
        } else {
            false
        }
    };
    if auto_free {
        free_packet(packet, "freed by its default completion routine");
    }
    packet.channel.cv.notify_all();
}

/// Completion of an incoming packet: the type-0xB frame with the driver's response.
pub(crate) fn completion_frame(txid: u64, response: Vec<u8>) -> Frame {
    Frame {
        txid,
        completion_requested: false,
        kind: PacketType::Completion,
        header: Vec::new(),
        payload: response,
        owner: Owner::Completion,
    }
}
