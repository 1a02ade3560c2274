#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]
//! The driver's send, completion and receive paths make no heap allocation: every operation
//! of a `Session`, every callback of the `EchoClient` handler, and the acknowledgements of
//! pended host packets completed later by the ack worker thread (which runs them as driver
//! code), measured with a counting global allocator in steady state. The emulator and the emulated host allocate freely;
//! `vmbus_kmcl_sim::scope` tells the allocator whose code runs, so only driver code is counted
//! (this test thread's session calls and every callback into the handler). One test in this
//! file, so nothing else runs while measuring.

use std::time::{Duration, Instant};

use vmbus_echo::client::{EchoConfig, Session};
use vmbus_echo::protocol;
use vmbus_echo_sim::{HostConfig, Rig};
use vmbus_kmcl::PassiveLevel;
use vmbus_kmcl_sim::InterfaceVersion;
use vmbus_kmcl_sim::scope::{DriverAllocations, as_emulator};

#[global_allocator]
static ALLOCATOR: DriverAllocations = DriverAllocations::new();

/// Driver allocations while `f` runs as driver code (and callbacks run on emulator threads).
fn measure(f: impl FnOnce()) -> u64 {
    ALLOCATOR.measure(f)
}

#[test]
fn every_path_is_allocation_free() {
    // The counter sees driver allocations.
    assert_eq!(measure(|| drop(std::hint::black_box(Box::new(1_u64)))), 1);

    for version in [InterfaceVersion::V1, InterfaceVersion::V5] {
        let rig = Rig::new(version, HostConfig::HONEST);
        {
            let irql = PassiveLevel::check().unwrap();
            let mut channel = rig.create_channel(&EchoConfig::DEFAULT).unwrap();
            let mut session = Session::open(&mut channel, &irql).unwrap();
            // The client through a counted reference, so that the session stays usable.
            let reference = session.channel().new_ref();
            let client = reference.handler();
            let platform = client.platform();
            let mut scratch = vec![0_u8; protocol::MAX_MESSAGE];
            let bulk = 5 * 4096;
            // A malformed host packet (garbage after a valid magic), rejected and acknowledged.
            let hostile = {
                let mut bytes = b"ECHO".to_vec();
                bytes.extend_from_slice(&[0xA5; 60]);
                bytes
            };
            let send_hostile = |n: usize| {
                let before = client.counters().incoming;
                for _ in 0..n {
                    as_emulator(|| rig.offer.host_send(&hostile, true)).unwrap();
                }
                let deadline = Instant::now() + Duration::from_secs(10);
                while client.counters().incoming < before + n as u64
                    || client.acks_outstanding() > 0
                {
                    assert!(Instant::now() < deadline);
                    std::thread::sleep(Duration::from_millis(1));
                }
            };

            // Warm up every path once.
            session.ping_burst(128, 32, &mut scratch).unwrap();
            session.ping(128, &mut scratch).unwrap();
            session.request_notifications(32, 64).unwrap();
            session.bulk(bulk, 1).unwrap();
            session.sync_request(1).unwrap();
            send_hostile(2);
            let worker_before = platform.worker_completed();

            let allocations = measure(|| {
                assert_eq!(
                    session.ping_burst(256, 1000, &mut scratch).unwrap().ok,
                    1000
                );
                for _ in 0..20 {
                    session.ping(64, &mut scratch).unwrap();
                }
                session.request_notifications(500, 128).unwrap();
                send_hostile(20);
                for seed in 0..4 {
                    session.bulk(bulk, seed).unwrap();
                }
                for value in 0..50 {
                    assert_eq!(
                        session.sync_request(value),
                        Ok(protocol::sync_answer(value))
                    );
                }
            });
            assert_eq!(
                allocations, 0,
                "{version:?}: heap allocations by the driver"
            );
            let c = client.counters();
            assert_eq!(c.pings_ok, 32 + 1 + 1000 + 20);
            assert_eq!(c.notifications_ok, 532);
            assert_eq!(c.rejected_total(), 22);
            // The measured acknowledgements were completed later by the worker thread.
            assert_eq!(c.acks_completed, c.acks_pended);
            assert!(
                platform.worker_completed() > worker_before,
                "{version:?}: the worker completed nothing while measured"
            );
            session.close().unwrap();
        }
        rig.bus.verifier().assert_clean();
    }
}
