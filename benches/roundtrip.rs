//! Send + completion round trip through the emulator (EchoVsp on real rings), with the safe API
//! and with raw calls through the same KMCL table, in one run. Target: the safe API within 2 %
//! of the raw calls.
//!
//! The emulator's round trip crosses three threads (sender, host, callback) on a 2-core machine,
//! so run-to-run noise is several percent. Besides criterion's two series, the run therefore
//! ends with an interleaved comparison: blocks of round trips alternating safe and raw, whose
//! per-block ratio cancels drift; its median is the number to compare with the target.
//!
//! `cargo bench -p vmbus-kmcl --bench roundtrip`
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    missing_docs
)]

use std::hint::black_box;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput};
use vmbus_kmcl::sys::*;
use vmbus_kmcl::{
    Channel, ChannelConfig, ChannelCore, ChannelHandler, Completion, KmclInterface, PassiveLevel,
    SendFlags,
};
use vmbus_kmcl_sim::{EchoVsp, InterfaceVersion, Offer, Vmbus, VmbusConfig};

const PAYLOAD: [u8; 64] = [0x42; 64];

struct Counter(AtomicU64);

impl ChannelHandler for Counter {
    type PacketContext = u64;
    fn packet_completed(&self, _: &ChannelCore<Self>, done: Completion<'_, u64>) {
        black_box(done.response);
        self.0.fetch_add(1, Ordering::Release);
    }
}

static RAW_COMPLETED: AtomicU64 = AtomicU64::new(0);
static RAW_FREE: AtomicU64 = AtomicU64::new(0);

/// The raw completion routine, in the same (Ex) form the safe layer registers on V5.
unsafe extern "system" fn raw_completion(
    packet: VMBPACKET,
    context: PVOID,
    _: NTSTATUS,
    buffer: PVOID,
    _: u32,
) {
    black_box((buffer, context));
    // SAFETY: RAW_FREE holds the address of the table's `VmbPacketFree`, stored before sending.
    let free = unsafe {
        std::mem::transmute::<usize, FN_VMB_PACKET_FREE>(RAW_FREE.load(Ordering::Acquire) as usize)
    };
    // SAFETY: the packet's completion returns it to the sender, which frees it once.
    unsafe { free(packet) };
    RAW_COMPLETED.fetch_add(1, Ordering::Release);
}

unsafe extern "system" fn raw_process(
    _: VMBCHANNEL,
    _: VMBPACKETCOMPLETION,
    _: PVOID,
    _: u32,
    _: u32,
) {
}

fn wait_for(counter: &AtomicU64, target: u64) {
    while counter.load(Ordering::Acquire) < target {
        std::hint::spin_loop();
    }
}

fn echo_bus() -> (Vmbus, Offer) {
    let bus = Vmbus::new(VmbusConfig::new(InterfaceVersion::V5));
    let (vsp, _echo) = EchoVsp::new();
    let offer = bus.offer(GUID::default(), GUID::default(), Box::new(vsp));
    (bus, offer)
}

/// The safe-API side: a V5 channel through `Channel` (dropped first: torn down before the
/// interface, offer and bus it uses).
struct Safe {
    channel: Channel<Counter>,
    sent: u64,
    _interface: KmclInterface,
    _offer: Offer,
    _bus: Vmbus,
}

impl Safe {
    fn new() -> Self {
        let (bus, offer) = echo_bus();
        let interface = bus.kmcl_interface().unwrap();
        let config = ChannelConfig::new().ring_buffer_pages(16, 16);
        let irql = PassiveLevel::check().expect("the bench thread runs at PASSIVE_LEVEL");
        let mut channel = Channel::new(
            &irql,
            &interface,
            offer.parent_device(),
            &config,
            Counter(AtomicU64::new(0)),
        )
        .unwrap();
        channel.enable(&irql).unwrap();
        Self {
            channel,
            sent: 0,
            _interface: interface,
            _offer: offer,
            _bus: bus,
        }
    }

    fn round_trip(&mut self) {
        self.sent += 1;
        self.channel
            .send(&PAYLOAD, SendFlags::WAIT_FOR_COMPLETION, self.sent)
            .unwrap();
        wait_for(&self.channel.handler().0, self.sent);
    }
}

/// The raw side: the same V5 table called directly, with the Ex completion routine the safe
/// layer also uses on V5 (so the comparison isolates the safe layer's own work).
struct Raw {
    table: KMCL_CLIENT_INTERFACE_V5,
    channel: VMBCHANNEL,
    sent: u64,
    _offer: Offer,
    bus: Vmbus,
}

impl Raw {
    fn new() -> Self {
        let (bus, offer) = echo_bus();
        let t = bus.client_interface_v5().unwrap();
        RAW_FREE.store(t.VmbPacketFree.unwrap() as usize as u64, Ordering::Release);
        let mut channel: VMBCHANNEL = std::ptr::null_mut();
        // SAFETY: (this and every raw call below) the emulator's table, a device object it
        // owns, and a channel it returned, used in the documented order.
        unsafe {
            assert_eq!(
                t.VmbChannelAllocate.unwrap()(offer.device_object(), 0, &raw mut channel),
                0
            );
        }
        // SAFETY: see above.
        unsafe {
            assert_eq!(
                t.VmbClientChannelInitSetRingBufferPageCount.unwrap()(channel, 16, 16),
                0
            );
        }
        // SAFETY: see above.
        unsafe {
            let set = t.VmbChannelInitSetProcessPacketCallbacks.unwrap();
            assert_eq!(set(channel, Some(raw_process), None), 0);
        }
        // SAFETY: see above.
        unsafe {
            assert_eq!(t.VmbChannelEnable.unwrap()(channel), 0);
        }
        let sent = RAW_COMPLETED.load(Ordering::Acquire);
        Self {
            table: t,
            channel,
            sent,
            _offer: offer,
            bus,
        }
    }

    fn round_trip(&mut self) {
        let t = &self.table;
        self.sent += 1;
        // SAFETY: see `new`.
        let packet = unsafe { t.VmbPacketAllocate.unwrap()(self.channel) };
        // SAFETY: see `new`.
        unsafe {
            let set = t.VmbPacketSetCompletionRoutineEx.unwrap();
            set(packet, std::ptr::null_mut(), Some(raw_completion));
        }
        let data = PAYLOAD.as_ptr().cast_mut().cast();
        let flags = VMBUS_CHANNEL_FORMAT_FLAG_WAIT_FOR_COMPLETION;
        // SAFETY: see `new`; KMCL reads the 64 bytes during the call.
        let status =
            unsafe { t.VmbPacketSend.unwrap()(packet, data, 64, std::ptr::null_mut(), flags) };
        assert_eq!(status, 0);
        wait_for(&RAW_COMPLETED, self.sent);
    }
}

impl Drop for Raw {
    fn drop(&mut self) {
        let t = &self.table;
        // SAFETY: see `new`.
        unsafe { t.VmbChannelDisable.unwrap()(self.channel) };
        // SAFETY: see `new`.
        unsafe { t.VmbChannelCleanup.unwrap()(self.channel) };
        // SAFETY: releases the reference the typed query took.
        unsafe { t.InterfaceHeader.InterfaceDereference.unwrap()(t.InterfaceHeader.Context) };
        self.bus.assert_clean();
    }
}

fn criterion_series(c: &mut Criterion, safe: &mut Safe, raw: &mut Raw) {
    let mut group = c.benchmark_group("send+completion round trip, 64 B, emulator");
    group.throughput(Throughput::Elements(1));
    group.bench_function("safe API (Channel::send)", |b| b.iter(|| safe.round_trip()));
    group.bench_function("raw KMCL calls", |b| b.iter(|| raw.round_trip()));
    group.finish();
}

/// Alternating blocks of safe and raw round trips; prints the median per-block time ratio.
fn interleaved_ratio(safe: &mut Safe, raw: &mut Raw) {
    const BLOCKS: usize = 40;
    const PER_BLOCK: u32 = 1000;
    let time = |f: &mut dyn FnMut()| {
        let start = Instant::now();
        for _ in 0..PER_BLOCK {
            f();
        }
        start.elapsed()
    };
    let mut ratios = Vec::with_capacity(BLOCKS);
    let (mut safe_total, mut raw_total) = (Duration::ZERO, Duration::ZERO);
    for block in 0..BLOCKS {
        let (s, r) = if block % 2 == 0 {
            let s = time(&mut || safe.round_trip());
            (s, time(&mut || raw.round_trip()))
        } else {
            let r = time(&mut || raw.round_trip());
            (time(&mut || safe.round_trip()), r)
        };
        safe_total += s;
        raw_total += r;
        ratios.push(s.as_secs_f64() / r.as_secs_f64());
    }
    ratios.sort_by(f64::total_cmp);
    let per = |d: Duration| d.as_secs_f64() * 1e6 / (BLOCKS as f64 * f64::from(PER_BLOCK));
    println!(
        "interleaved {BLOCKS} x {PER_BLOCK} round trips: safe {:.2} us, raw {:.2} us; safe/raw median {:.3} (quartiles {:.3}..{:.3})",
        per(safe_total),
        per(raw_total),
        ratios[BLOCKS / 2],
        ratios[BLOCKS / 4],
        ratios[3 * BLOCKS / 4],
    );
}

fn main() {
    let mut safe = Safe::new();
    let mut raw = Raw::new();
    let mut c = Criterion::default().configure_from_args();
    criterion_series(&mut c, &mut safe, &mut raw);
    interleaved_ratio(&mut safe, &mut raw);
    c.final_summary();
}
