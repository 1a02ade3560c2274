//! Send + completion round trip through the emulator (EchoVsp on real rings), with the safe API
//! and with raw calls through the same KMCL table, in one run. Target: the safe API within 2 %
//! of the raw calls.
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
use std::pin::pin;
use std::sync::atomic::{AtomicU64, Ordering};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use vmbus_kmcl::sys::*;
use vmbus_kmcl::{Channel, ChannelConfig, ChannelHandler, Completion, SendFlags};
use vmbus_kmcl_sim::{EchoVsp, InterfaceVersion, Vmbus, VmbusConfig};

const PAYLOAD: [u8; 64] = [0x42; 64];

struct Counter(AtomicU64);

impl ChannelHandler for Counter {
    type PacketContext = u64;
    fn packet_completed(&self, _: &Channel<Self>, done: Completion<'_, u64>) {
        black_box(done.response);
        self.0.fetch_add(1, Ordering::Release);
    }
}

static RAW_COMPLETED: AtomicU64 = AtomicU64::new(0);
static RAW_FREE: AtomicU64 = AtomicU64::new(0);

unsafe extern "system" fn raw_completion(packet: VMBPACKET, _: NTSTATUS, buffer: PVOID, _: u32) {
    black_box(buffer);
    // SAFETY: RAW_FREE holds the address of the table's `VmbPacketFree`, stored before sending.
    let free: FN_VMB_PACKET_FREE = unsafe {
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

fn round_trip(c: &mut Criterion) {
    let mut group = c.benchmark_group("send+completion round trip, 64 B, emulator");
    group.throughput(Throughput::Elements(1));

    // Safe API.
    {
        let bus = Vmbus::new(VmbusConfig::new(InterfaceVersion::V5));
        let (vsp, _echo) = EchoVsp::new();
        let offer = bus.offer(GUID::default(), GUID::default(), Box::new(vsp));
        let interface = bus.kmcl_interface().unwrap();
        let config = ChannelConfig::new().ring_buffer_pages(16, 16);
        let channel = pin!(
            Channel::new(
                &interface,
                offer.parent_device(),
                &config,
                Counter(AtomicU64::new(0))
            )
            .unwrap()
        );
        channel.as_ref().enable().unwrap();
        let mut sent = 0_u64;
        group.bench_function("safe API (Channel::send)", |b| {
            b.iter(|| {
                sent += 1;
                channel
                    .send(&PAYLOAD, SendFlags::WAIT_FOR_COMPLETION, sent)
                    .unwrap();
                wait_for(&channel.handler().0, sent);
            });
        });
    }

    // Raw calls through the same table.
    {
        let bus = Vmbus::new(VmbusConfig::new(InterfaceVersion::V5));
        let (vsp, _echo) = EchoVsp::new();
        let offer = bus.offer(GUID::default(), GUID::default(), Box::new(vsp));
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
            assert_eq!(
                t.VmbChannelInitSetProcessPacketCallbacks.unwrap()(
                    channel,
                    Some(raw_process),
                    None
                ),
                0
            );
        }
        // SAFETY: see above.
        unsafe {
            assert_eq!(t.VmbChannelEnable.unwrap()(channel), 0);
        }
        let (allocate, set_completion, send) = (
            t.VmbPacketAllocate.unwrap(),
            t.VmbPacketSetCompletionRoutine.unwrap(),
            t.VmbPacketSend.unwrap(),
        );
        let mut sent = RAW_COMPLETED.load(Ordering::Acquire);
        group.bench_function("raw KMCL calls", |b| {
            b.iter(|| {
                sent += 1;
                // SAFETY: see above.
                let packet = unsafe { allocate(channel) };
                // SAFETY: see above.
                unsafe { set_completion(packet, Some(raw_completion)) };
                let data = PAYLOAD.as_ptr().cast_mut().cast();
                // SAFETY: see above; KMCL reads the 64 bytes during the call.
                let status = unsafe {
                    send(
                        packet,
                        data,
                        64,
                        std::ptr::null_mut(),
                        VMBUS_CHANNEL_FORMAT_FLAG_WAIT_FOR_COMPLETION,
                    )
                };
                assert_eq!(status, 0);
                wait_for(&RAW_COMPLETED, sent);
            });
        });
        // SAFETY: see above.
        unsafe { t.VmbChannelDisable.unwrap()(channel) };
        // SAFETY: see above.
        unsafe { t.VmbChannelCleanup.unwrap()(channel) };
        // SAFETY: releases the reference the typed query took.
        unsafe { t.InterfaceHeader.InterfaceDereference.unwrap()(t.InterfaceHeader.Context) };
        bus.assert_clean();
    }
    group.finish();
}

criterion_group!(benches, round_trip);
criterion_main!(benches);
