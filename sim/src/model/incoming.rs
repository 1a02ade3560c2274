//! Incoming packets: reading the host→guest ring, delivery to the driver's packet callbacks,
//! and the incoming packet objects (`VMBPACKETCOMPLETION`). The callback ("DPC") thread and
//! the passive worker that run this are `threads::dpc` and `threads::passive`.

use std::sync::{Arc, Mutex};

use vmbus_kmcl::Irql;
use vmbus_kmcl::sys::{MDL, NTSTATUS, VMBUS_CHANNEL_PROCESS_PACKET_FLAG_EXTERNAL_DATA};

use crate::base::event::{Locked, lock};
use crate::base::memory::{HostBuffer, OwnedMdl, PAGE_SIZE};
use crate::base::status::{
    STATUS_INSUFFICIENT_RESOURCES, STATUS_INVALID_DEVICE_REQUEST, STATUS_PENDING, STATUS_SUCCESS,
};
use crate::model::channel::{Channel, Inner, State};
use crate::model::outgoing::{RawBuf, Tx, Work, completion_frame, deliver_completion};
use crate::model::registry::{self, Object};
use crate::ring::{PacketType, RingError};
use crate::verifier::report::{Counter, ViolationKind};

/// Most packets read from the ring per batch.
const BATCH: usize = 64;
/// Most packets held while paused.
const HELD_MAX: usize = 4096;

/// One GPA range of a received packet.
#[derive(Clone, Debug)]
pub(crate) struct OwnedRange {
    pub(crate) byte_offset: u32,
    pub(crate) byte_count: u32,
    pub(crate) pfns: Vec<u64>,
}

/// A packet copied out of the host→guest ring.
#[derive(Clone, Debug)]
pub(crate) struct Received {
    pub(crate) kind: PacketType,
    pub(crate) completion_requested: bool,
    pub(crate) txid: u64,
    pub(crate) payload: Vec<u8>,
    pub(crate) ranges: Vec<OwnedRange>,
}

pub(crate) struct InState {
    pub(crate) done: bool,
    pub(crate) defer: bool,
    pub(crate) pending: bool,
    pub(crate) pending_served: bool,
    pub(crate) at_passive: bool,
    pub(crate) mdls: Vec<OwnedMdl<'static>>,
}

/// An incoming packet delivered to the driver (`VMBPACKETCOMPLETION`).
pub(crate) struct InPacket {
    pub(crate) handle: usize,
    pub(crate) channel: Arc<Channel>,
    pub(crate) txid: u64,
    pub(crate) completion_requested: bool,
    pub(crate) flags: u32,
    pub(crate) st: Mutex<InState>,
    payload: RawBuf,
    payload_len: u32,
    context: Option<RawBuf>,
    ranges: Vec<OwnedRange>,
    external: Option<Arc<HostBuffer>>,
}

impl InPacket {
    /// The client context address, or 0.
    pub(crate) fn client_context(&self) -> usize {
        self.context.as_ref().map_or(0, RawBuf::address)
    }
}

/// Checks that every byte of `ranges` lies inside `buffer`.
fn ranges_inside(ranges: &[OwnedRange], buffer: &HostBuffer) -> bool {
    let lo = buffer.address();
    let hi = lo + buffer.len();
    ranges.iter().all(|r| {
        let mut remaining = r.byte_count as usize;
        let mut offset = r.byte_offset as usize;
        for pfn in &r.pfns {
            if remaining == 0 {
                break;
            }
            let Some(page) = usize::try_from(*pfn)
                .ok()
                .and_then(|p| p.checked_mul(PAGE_SIZE))
            else {
                return false;
            };
            let n = remaining.min(PAGE_SIZE - offset);
            let Some(start) = page.checked_add(offset) else {
                return false;
            };
            if start < lo || start.saturating_add(n) > hi {
                return false;
            }
            remaining -= n;
            offset = 0;
        }
        remaining == 0
    })
}

/// Creates and registers the incoming packet object for `r`, reserving a callback slot. Called
/// with `inner` locked by the caller via the returned closure pattern; returns `None` (and
/// counts) for a packet that must be dropped.
fn make_incoming(ch: &Arc<Channel>, r: Received) -> Option<Arc<InPacket>> {
    let external = if r.kind == PacketType::GpaDirect {
        let buffer = lock(&ch.host)
            .tx
            .get(&r.txid)
            .and_then(|t| t.external.clone());
        match buffer {
            Some(b) if ranges_inside(&r.ranges, &b) => Some(b),
            _ => {
                ch.bus.bump(Counter::BadGpaDirect);
                return None;
            }
        }
    } else {
        None
    };
    let mut completion_requested = r.completion_requested;
    if completion_requested && r.txid == 0 {
        ch.bus.bump(Counter::TxidZeroRequest);
        completion_requested = false;
    }
    let context_size = lock(&ch.inner).cfg.client_context_size as usize;
    let handle = registry::synthetic_handle();
    let pkt = Arc::new(InPacket {
        handle,
        channel: Arc::clone(ch),
        txid: r.txid,
        completion_requested,
        flags: if external.is_some() {
            VMBUS_CHANNEL_PROCESS_PACKET_FLAG_EXTERNAL_DATA
        } else {
            0
        },
        st: Mutex::new(InState {
            done: false,
            defer: false,
            pending: false,
            pending_served: false,
            at_passive: false,
            mdls: Vec::new(),
        }),
        payload_len: u32::try_from(r.payload.len()).unwrap_or(u32::MAX),
        payload: RawBuf::from_bytes(&r.payload),
        context: (context_size > 0).then(|| RawBuf::zeroed(context_size)),
        ranges: r.ranges,
        external,
    });
    registry::insert(handle, Object::Incoming(Arc::clone(&pkt)));
    Some(pkt)
}

/// Runs the process-packet callback for a packet whose callback slot is reserved
/// (`in_callback` was incremented), then files it for re-delivery if the driver asked.
pub(crate) fn run_callback(ch: &Arc<Channel>, pkt: &Arc<InPacket>, passive: bool) {
    let cbs = lock(&ch.inner).process_cbs;
    {
        let mut st = lock(&pkt.st);
        st.defer = false;
        st.pending = false;
        st.at_passive = passive;
    }
    if cbs.is_some() {
        cbs.process(
            ch.handle,
            pkt.handle,
            pkt.payload.address() as *mut core::ffi::c_void,
            pkt.payload_len,
            pkt.flags,
            if passive {
                Irql::PASSIVE
            } else {
                Irql::DISPATCH
            },
        );
    } else {
        ch.violation(
            "EvtVmbChannelProcessPacket",
            ViolationKind::WrongState,
            "incoming packet on a channel without packet callbacks (completed by the emulator)",
        );
        complete(pkt, "EvtVmbChannelProcessPacket", &[]);
    }
    let (defer, pending, done) = {
        let st = lock(&pkt.st);
        (st.defer, st.pending, st.done)
    };
    let mut inner = lock(&ch.inner);
    inner.in_callback = inner.in_callback.saturating_sub(1);
    if !done {
        if defer {
            inner.passive.push_back(Arc::clone(pkt));
            ch.passive_event.signal();
        } else if pending {
            inner.redeliver.push_back(Arc::clone(pkt));
            ch.guest_event.signal();
        }
    }
    drop(inner);
    ch.cv.notify_all();
}

/// Delivers the completion-routine calls queued for the callback thread.
pub(crate) fn run_work(ch: &Arc<Channel>) {
    loop {
        let w = lock(&ch.inner).work.pop_front();
        let Some(Work::Complete {
            packet,
            status,
            response,
        }) = w
        else {
            break;
        };
        deliver_completion(&packet, status, &response);
    }
    ch.cv.notify_all();
}

/// Handles a completion packet from the host.
pub(crate) fn complete_transaction(ch: &Arc<Channel>, r: &Received) {
    if r.txid == 0 {
        ch.bus.bump(Counter::TxidZeroCompletion);
        return;
    }
    let entry = {
        let mut inner = lock(&ch.inner);
        let e = inner.tx.remove(&r.txid);
        match &e {
            Some(_) => Channel::remember_finished(&mut inner, r.txid),
            None => {
                let dup = inner.finished.contains(&r.txid);
                drop(inner);
                ch.bus.bump(if dup {
                    Counter::Duplicate
                } else {
                    Counter::Forged
                });
                return;
            }
        }
        e
    };
    ch.cv.notify_all();
    let status = lock(&ch.bus.faults)
        .completion_status
        .unwrap_or(STATUS_SUCCESS);
    match entry {
        Some(Tx::Packet(p)) => deliver_completion(&p, status, &r.payload),
        Some(Tx::Sync(w)) => w.put((status, r.payload.clone())),
        Some(Tx::Abandoned) => ch.bus.bump(Counter::Late),
        Some(Tx::Detached) | None => {}
    }
}

/// Reads up to `budget` packets from the host→guest ring.
pub(crate) fn read_ring(ch: &Arc<Channel>, budget: usize, scratch: &mut Vec<u8>) -> Vec<Received> {
    let mut out = Vec::new();
    let mut guard = lock(&ch.guest_reader);
    let Some(reader) = guard.as_mut() else {
        return out;
    };
    reader.mask_interrupts();
    let mut corrupt = false;
    let mut signal = false;
    {
        let mut batch = reader.batch();
        while out.len() < budget {
            match batch.read(scratch) {
                Ok(Some(p)) => {
                    let ranges = p
                        .gpa_ranges()
                        .map(|rs| {
                            rs.map(|r| OwnedRange {
                                byte_offset: r.byte_offset,
                                byte_count: r.byte_count,
                                pfns: r.pfns.iter().collect(),
                            })
                            .collect()
                        })
                        .unwrap_or_default();
                    out.push(Received {
                        kind: p.packet_type(),
                        completion_requested: p.completion_requested(),
                        txid: p.transaction_id(),
                        payload: p.payload().to_vec(),
                        ranges,
                    });
                }
                Ok(None) => break,
                Err(RingError::BufferTooSmall { needed, .. }) => {
                    scratch.resize(needed, 0);
                }
                Err(_) => {
                    corrupt = true;
                    break;
                }
            }
        }
        match batch.commit() {
            Ok(c) => signal = c.signal_needed,
            Err(_) => corrupt = true,
        }
    }
    if !corrupt && out.len() < budget && reader.unmask_interrupts().is_err() {
        corrupt = true;
    }
    drop(guard);
    if signal {
        ch.interrupt_host(None, true, false);
    }
    if corrupt {
        let mut inner = lock(&ch.inner);
        if !inner.in_corrupt {
            inner.in_corrupt = true;
            drop(inner);
            ch.bus.bump(Counter::RingCorruption);
        }
    }
    out
}

/// What the callback thread may do with the ring right now.
pub(crate) fn read_budget(ch: &Channel) -> usize {
    let inner = lock(&ch.inner);
    if inner.in_corrupt || inner.incoming_failed || !inner.delivery_enabled || inner.dpc_stop {
        return 0;
    }
    match inner.state {
        State::Running if !inner.quiescing => {
            let outstanding = inner.incoming.len() + inner.held.len();
            (inner.quota as usize)
                .saturating_sub(outstanding)
                .min(BATCH)
        }
        State::Running | State::Paused => HELD_MAX.saturating_sub(inner.held.len()).min(BATCH),
        _ => 0,
    }
}

/// Delivers (or holds, or drops) one data packet read from the ring. Returns true if the
/// callback ran on this thread.
pub(crate) fn dispatch_data(ch: &Arc<Channel>, r: Received) -> bool {
    {
        let mut inner = lock(&ch.inner);
        let deliverable = inner.state == State::Running
            && !inner.quiescing
            && !inner.suspended
            && inner.delivery_enabled
            && inner.held.is_empty();
        if !deliverable {
            if matches!(inner.state, State::Running | State::Paused) {
                inner.held.push_back(r);
            }
            return false;
        }
    }
    let Some(pkt) = make_incoming(ch, r) else {
        return false;
    };
    route(ch, &pkt)
}

/// Registers a new packet as outstanding, reserves its callback slot and runs the callback here
/// (returns true) or hands it to the passive worker with the reservation (returns false).
fn route(ch: &Arc<Channel>, pkt: &Arc<InPacket>) -> bool {
    let passive = {
        let mut inner = lock(&ch.inner);
        inner.incoming.insert(pkt.handle);
        inner.in_callback = inner.in_callback.saturating_add(1);
        if inner.at_passive {
            lock(&pkt.st).at_passive = true;
            inner.passive.push_back(Arc::clone(pkt));
            true
        } else {
            false
        }
    };
    if passive {
        ch.passive_event.signal();
        false
    } else {
        run_callback(ch, pkt, false);
        true
    }
}

/// Delivers packets held while paused, once running again.
pub(crate) fn deliver_held(ch: &Arc<Channel>) -> u32 {
    let mut delivered = 0u32;
    loop {
        let r = {
            let mut inner = lock(&ch.inner);
            let ok = inner.state == State::Running
                && !inner.quiescing
                && !inner.suspended
                && inner.delivery_enabled
                && (inner.incoming.len() as u64) < u64::from(inner.quota);
            if !ok {
                break;
            }
            inner.held.pop_front()
        };
        let Some(r) = r else {
            break;
        };
        let Some(pkt) = make_incoming(ch, r) else {
            continue;
        };
        if route(ch, &pkt) {
            delivered = delivered.saturating_add(1);
        }
    }
    delivered
}

/// Re-delivers packets whose external data was pending.
pub(crate) fn redeliver(ch: &Arc<Channel>) -> u32 {
    let mut delivered = 0u32;
    loop {
        let pkt = {
            let mut inner = lock(&ch.inner);
            if inner.suspended || !inner.delivery_enabled {
                break;
            }
            let p = inner.redeliver.pop_front();
            if p.is_some() {
                inner.in_callback = inner.in_callback.saturating_add(1);
            }
            p
        };
        let Some(pkt) = pkt else {
            break;
        };
        run_callback(ch, &pkt, false);
        delivered = delivered.saturating_add(1);
    }
    delivered
}

pub(crate) fn processing_complete(ch: &Arc<Channel>, count: u32, irql: Irql) {
    if count == 0 {
        return;
    }
    let cbs = {
        let inner = lock(&ch.inner);
        if inner.suspended {
            return;
        }
        inner.process_cbs
    };
    cbs.processing_complete(ch.handle, count, irql);
}

/// Marks an incoming packet consumed exactly once (a second time is a `DoubleComplete`
/// violation with `twice`), retires its handle and removes it from the channel; returns the
/// locked channel state for the caller's part, or `None` if it was already consumed.
fn consume<'a>(
    pkt: &'a Arc<InPacket>,
    slot: &'static str,
    twice: &'static str,
) -> Option<Locked<'a, Inner>> {
    let ch = &pkt.channel;
    {
        let mut st = lock(&pkt.st);
        if st.done {
            drop(st);
            ch.violation(slot, ViolationKind::DoubleComplete, twice);
            return None;
        }
        st.done = true;
        st.mdls.clear();
    }
    drop(registry::retire(pkt.handle, "completed"));
    let mut inner = lock(&ch.inner);
    inner.incoming.remove(&pkt.handle);
    Some(inner)
}

/// `VmbChannelPacketComplete` (and the emulator's own completion of orphan packets).
pub(crate) fn complete(pkt: &Arc<InPacket>, slot: &'static str, response: &[u8]) {
    let ch = &pkt.channel;
    let Some(mut inner) = consume(pkt, slot, "packet completed twice") else {
        return;
    };
    if pkt.completion_requested && pkt.txid != 0 && inner.writer.is_some() {
        let limit = inner
            .writer
            .as_ref()
            .map_or(0, |w| w.ring().max_packet_len() as usize);
        let mut response = response.to_vec();
        if crate::ring::packet_ring_bytes(0, response.len())
            .is_none_or(|b| (b as usize).saturating_sub(8) > limit)
        {
            ch.violation(
                slot,
                ViolationKind::InvalidParameter,
                "completion response larger than the ring (sent empty)",
            );
            response.clear();
        }
        let _ = ch.submit(&mut inner, completion_frame(pkt.txid, response));
    }
    drop(inner);
    ch.cv.notify_all();
    ch.guest_event.signal();
}

/// `VmbChannelPacketFail`: releases the packet without a completion and stops the queue.
pub(crate) fn fail(pkt: &Arc<InPacket>, slot: &'static str) {
    let Some(mut inner) = consume(pkt, slot, "packet failed after completion") else {
        return;
    };
    inner.incoming_failed = true;
    drop(inner);
    pkt.channel.cv.notify_all();
}

/// `VmbChannelPacketDeferToPassive`.
pub(crate) fn defer(pkt: &Arc<InPacket>, slot: &'static str) {
    let ch = &pkt.channel;
    let suspended = lock(&ch.inner).suspended;
    let mut st = lock(&pkt.st);
    if st.at_passive {
        drop(st);
        ch.violation(
            slot,
            ViolationKind::WrongState,
            "deferral of a packet that is already being processed at passive",
        );
        return;
    }
    if suspended {
        drop(st);
        ch.violation(
            slot,
            ViolationKind::CallbackAfterClose,
            "deferral on a suspended channel: the packet cannot be re-delivered",
        );
        return;
    }
    st.defer = true;
}

/// `VmbChannelPacketGetExternalData`.
pub(crate) fn external_data(
    pkt: &Arc<InPacket>,
    slot: &'static str,
    out: *mut *mut MDL,
) -> NTSTATUS {
    let ch = &pkt.channel;
    if pkt.external.is_none() {
        return STATUS_INVALID_DEVICE_REQUEST;
    }
    let defer = lock(&ch.bus.faults).defer_external;
    let suspended = lock(&ch.inner).suspended;
    let mut st = lock(&pkt.st);
    if defer && !st.pending_served {
        st.pending_served = true;
        if !suspended {
            st.pending = true;
            return STATUS_PENDING;
        }
        ch.violation(
            slot,
            ViolationKind::CallbackAfterClose,
            "external data pending on a suspended channel: no re-delivery possible",
        );
    }
    if st.mdls.is_empty() {
        let mut mdls: Vec<OwnedMdl<'static>> = Vec::new();
        for r in &pkt.ranges {
            let mut remaining = r.byte_count as usize;
            let mut offset = r.byte_offset as usize;
            for pfn in &r.pfns {
                if remaining == 0 {
                    break;
                }
                let n = remaining.min(PAGE_SIZE - offset);
                let Some(addr) = usize::try_from(*pfn)
                    .ok()
                    .and_then(|p| p.checked_mul(PAGE_SIZE))
                    .and_then(|p| p.checked_add(offset))
                else {
                    return STATUS_INSUFFICIENT_RESOURCES;
                };
                // SAFETY: the range was validated to lie inside the host buffer, which this
                // packet keeps alive (`pkt.external`) until after the MDLs are dropped (they are
                // cleared when the packet is completed, and the state is dropped before the
                // buffer).
                let Ok(mdl) = (unsafe { OwnedMdl::new(addr as *mut u8, n) }) else {
                    return STATUS_INSUFFICIENT_RESOURCES;
                };
                mdls.push(mdl);
                remaining -= n;
                offset = 0;
            }
        }
        for i in (1..mdls.len()).rev() {
            let (head, tail) = mdls.split_at_mut(i);
            if let (Some(prev), Some(next)) = (head.last_mut(), tail.first()) {
                prev.set_next(Some(next));
            }
        }
        st.mdls = mdls;
    }
    let first = st
        .mdls
        .first()
        .map_or(core::ptr::null_mut(), OwnedMdl::as_ptr);
    // SAFETY: `out` was checked non-null by the slot; the driver passes a writable PMDL.
    unsafe { out.write_unaligned(first) };
    STATUS_SUCCESS
}
