//! Zero heap allocations per packet in steady state on the send, completion and receive paths
//! of the safe layer, measured with a counting global allocator.
//!
//! The emulator (test infrastructure) allocates freely; `vmbus_kmcl_sim::scope` tells the
//! allocator which code is running, so only allocations made by the library and the driver's
//! handler are counted: the test thread's driver code and every callback the emulator makes.
//! This file holds a single test so nothing else runs while measuring.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use std::pin::pin;
use std::sync::atomic::{AtomicU64, Ordering};

use common::{rig, wait_until};
use vmbus_kmcl::{
    Channel, ChannelConfig, ChannelHandler, Completion, IncomingPacket, PacketPool, PoolWord,
    SendFlags,
};
use vmbus_kmcl_sim::InterfaceVersion as SimVersion;
use vmbus_kmcl_sim::scope::{DriverAllocations, as_emulator};

#[global_allocator]
static ALLOCATOR: DriverAllocations = DriverAllocations::new();

/// Driver allocations while `f` runs as driver code (and callbacks run on emulator threads).
fn measure(f: impl FnOnce()) -> u64 {
    ALLOCATOR.measure(f)
}

/// A handler that counts and echoes without allocating.
struct Quiet {
    completed: AtomicU64,
    received: AtomicU64,
}

impl ChannelHandler for Quiet {
    type PacketContext = u64;
    fn process_packet(&self, _: &Channel<Self>, packet: IncomingPacket<'_>) {
        self.received.fetch_add(1, Ordering::SeqCst);
        let data = packet.data();
        let _ = packet.complete(data);
    }
    fn packet_completed(&self, _: &Channel<Self>, done: Completion<'_, u64>) {
        assert!(done.status.is_success() && done.response.len() >= 8);
        self.completed.fetch_add(1, Ordering::SeqCst);
    }
}

#[test]
fn steady_state_send_completion_and_receive_do_not_allocate() {
    // The counter sees allocations made by driver code …
    assert_eq!(measure(|| drop(std::hint::black_box(Box::new(1_u64)))), 1);
    // … and not those made in emulator scope.
    assert_eq!(
        measure(|| as_emulator(|| drop(std::hint::black_box(Box::new(1_u64))))),
        0
    );

    for version in [SimVersion::V1, SimVersion::V5] {
        let rig = rig(version);
        {
            let config = ChannelConfig::new()
                .ring_buffer_pages(16, 16)
                .maximum_packet_size(4096);
            let quiet = Quiet {
                completed: AtomicU64::new(0),
                received: AtomicU64::new(0),
            };
            let channel = pin!(Channel::new(&rig.interface, rig.parent, &config, quiet).unwrap());
            channel.as_ref().enable().unwrap();
            let h = channel.handler();
            let mut storage = vec![PoolWord::ZERO; PacketPool::words_needed(&channel, 8).unwrap()];
            let pool = channel.packet_pool(&mut storage).unwrap();

            // Warm up every path once.
            channel
                .send(&0_u64.to_le_bytes(), SendFlags::WAIT_FOR_COMPLETION, 0)
                .unwrap();
            pool.allocate()
                .unwrap()
                .send(&0_u64.to_le_bytes(), SendFlags::WAIT_FOR_COMPLETION, 0)
                .unwrap();
            as_emulator(|| rig.echo.send_unsolicited(b"warm-up!"));
            assert!(wait_until(|| h.completed.load(Ordering::SeqCst) == 2
                && h.received.load(Ordering::SeqCst) == 1));

            const PACKETS: u64 = 500;
            let allocations = measure(|| {
                for i in 1..=PACKETS {
                    channel
                        .send(&i.to_le_bytes(), SendFlags::WAIT_FOR_COMPLETION, i)
                        .unwrap();
                    pool.allocate()
                        .unwrap()
                        .send(&i.to_le_bytes(), SendFlags::WAIT_FOR_COMPLETION, i)
                        .unwrap();
                    as_emulator(|| rig.echo.send_unsolicited(&i.to_le_bytes()));
                    while h.completed.load(Ordering::SeqCst) < 2 + 2 * i
                        || h.received.load(Ordering::SeqCst) < 1 + i
                    {
                        std::hint::spin_loop();
                    }
                }
            });
            assert_eq!(
                allocations, 0,
                "{version:?}: heap allocations by the library over {PACKETS} round trips"
            );
            assert_eq!(h.completed.load(Ordering::SeqCst), 2 + 2 * PACKETS);
            assert_eq!(h.received.load(Ordering::SeqCst), 1 + PACKETS);
        }
        drop(rig.interface);
        rig.bus.assert_clean();
    }
}
