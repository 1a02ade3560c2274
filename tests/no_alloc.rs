//! Zero heap allocations per packet in steady state on the send, completion and receive paths
//! of the safe layer, measured with a counting global allocator: KMCL-pool and packet-pool
//! sends with their completions, and incoming packets completed in the callback, pended and
//! completed later by the driver's thread, or pended and completed by a worker thread.
//!
//! The emulator (test infrastructure) allocates freely; `vmbus_kmcl_sim::scope` tells the
//! allocator which code is running, so only allocations made by the library and the driver's
//! handler are counted: the test thread's driver code, the worker thread (which runs as driver
//! code throughout) and every callback the emulator makes. This file holds a single test so
//! nothing else runs while measuring.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use common::{ALL_VERSIONS, passive, rig, wait_until};
use vmbus_kmcl::{
    ChannelConfig, ChannelCore, ChannelHandler, Completion, IncomingPacket, PacketPool,
    PendedPacket, PoolWord, SendFlags,
};
use vmbus_kmcl_sim::scope::{DriverAllocations, as_driver, as_emulator};

#[global_allocator]
static ALLOCATOR: DriverAllocations = DriverAllocations::new();

/// Driver allocations while `f` runs as driver code (and callbacks run on emulator threads).
fn measure(f: impl FnOnce()) -> u64 {
    ALLOCATOR.measure(f)
}

/// Room in each pend queue: more than can ever be waiting (one packet per round trip).
const QUEUE: usize = 16;

/// A handler that counts and echoes without allocating. Incoming packet `i` (its first byte
/// modulo 3) is completed in the callback (0), pended for the driver's thread (1), or pended
/// for the worker thread (2). The queues are allocated up front and never grow.
struct Quiet {
    completed: AtomicU64,
    received: AtomicU64,
    responded: AtomicU64,
    for_driver: Mutex<Vec<PendedPacket<Quiet>>>,
    for_worker: Mutex<Vec<PendedPacket<Quiet>>>,
}

impl Quiet {
    fn new() -> Self {
        Self {
            completed: AtomicU64::new(0),
            received: AtomicU64::new(0),
            responded: AtomicU64::new(0),
            for_driver: Mutex::new(Vec::with_capacity(QUEUE)),
            for_worker: Mutex::new(Vec::with_capacity(QUEUE)),
        }
    }

    /// Echoes one pended packet, if any is queued in `queue`.
    fn echo_one(&self, queue: &Mutex<Vec<PendedPacket<Quiet>>>) -> bool {
        let Some(packet) = queue.lock().unwrap().pop() else {
            return false;
        };
        let mut data = [0_u8; 64];
        let n = packet.copy_data(&mut data).unwrap();
        packet.complete(&data[..n]).unwrap();
        self.responded.fetch_add(1, Ordering::SeqCst);
        true
    }
}

impl ChannelHandler for Quiet {
    type PacketContext = u64;
    fn process_packet(&self, _: &ChannelCore<Self>, packet: IncomingPacket<'_, Self>) {
        self.received.fetch_add(1, Ordering::SeqCst);
        let mut data = [0_u8; 64];
        let n = packet.copy_data(&mut data);
        let queue = match data[0] % 3 {
            0 => {
                let _ = packet.complete(&data[..n]);
                self.responded.fetch_add(1, Ordering::SeqCst);
                return;
            }
            1 => &self.for_driver,
            _ => &self.for_worker,
        };
        let mut queue = queue.lock().unwrap();
        assert!(queue.len() < queue.capacity(), "the queue never grows");
        queue.push(packet.pend().expect("a free pend slot"));
    }
    fn packet_completed(&self, _: &ChannelCore<Self>, done: Completion<'_, u64>) {
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

    for version in ALL_VERSIONS {
        let rig = rig(version);
        {
            let config = ChannelConfig::new()
                .ring_buffer_pages(16, 16)
                .maximum_packet_size(4096);
            let channel = rig.open(&config, Quiet::new());
            let h = channel.handler();
            let words = PacketPool::words_needed(&channel, 8).unwrap();
            let pool = channel
                .attach_packet_pool(vec![PoolWord::ZERO; words].into_boxed_slice())
                .unwrap();

            // The worker completes what is pended for it, as driver code, until told to stop.
            let stop = AtomicBool::new(false);
            std::thread::scope(|scope| {
                let worker = scope.spawn(|| {
                    as_driver(|| {
                        while !stop.load(Ordering::SeqCst) {
                            if !h.echo_one(&h.for_worker) {
                                std::hint::spin_loop();
                                std::thread::yield_now();
                            }
                        }
                    });
                });

                // Warm up every path once: both sends, and the three ways to complete.
                channel
                    .send(&0_u64.to_le_bytes(), SendFlags::WAIT_FOR_COMPLETION, 0)
                    .unwrap();
                pool.send(&0_u64.to_le_bytes(), SendFlags::WAIT_FOR_COMPLETION, 0)
                    .unwrap();
                for mode in 0..3_u64 {
                    as_emulator(|| rig.echo.send_unsolicited(&mode.to_le_bytes()));
                    assert!(wait_until(|| {
                        h.echo_one(&h.for_driver);
                        h.responded.load(Ordering::SeqCst) == mode + 1
                    }));
                }
                assert!(wait_until(|| h.completed.load(Ordering::SeqCst) == 2));

                const PACKETS: u64 = 600;
                let allocations = measure(|| {
                    for i in 1..=PACKETS {
                        channel
                            .send(&i.to_le_bytes(), SendFlags::WAIT_FOR_COMPLETION, i)
                            .unwrap();
                        pool.send(&i.to_le_bytes(), SendFlags::WAIT_FOR_COMPLETION, i)
                            .unwrap();
                        // The first byte picks how the packet is completed.
                        let mut payload = i.to_le_bytes();
                        payload[0] = (i % 3) as u8;
                        as_emulator(|| rig.echo.send_unsolicited(&payload));
                        while h.completed.load(Ordering::SeqCst) < 2 + 2 * i
                            || h.responded.load(Ordering::SeqCst) < 3 + i
                        {
                            if !h.echo_one(&h.for_driver) {
                                std::hint::spin_loop();
                            }
                        }
                    }
                });
                stop.store(true, Ordering::SeqCst);
                worker.join().unwrap();
                assert_eq!(
                    allocations, 0,
                    "{version:?}: heap allocations by the library over {PACKETS} round trips"
                );
            });
            assert_eq!(h.completed.load(Ordering::SeqCst), 2 + 2 * 600);
            assert_eq!(h.received.load(Ordering::SeqCst), 3 + 600);
            assert_eq!(h.responded.load(Ordering::SeqCst), 3 + 600);
            assert!(wait_until(
                || rig.echo.stats().unsolicited_completed == 3 + 600
            ));
            assert!(h.for_driver.lock().unwrap().is_empty());
            assert!(h.for_worker.lock().unwrap().is_empty());
            channel.close(&passive());
        }
        rig.finish();
    }
}
