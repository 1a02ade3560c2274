#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]
//! The driver's send, completion and receive paths make no heap allocation: every operation
//! of a `Session` and every callback of the `EchoClient` handler, measured with a counting
//! global allocator in steady state. The emulator and the emulated host allocate freely;
//! `vmbus_kmcl_sim::scope` tells the allocator whose code runs, so only driver code is counted
//! (this test thread's session calls and every callback into the handler). One test in this
//! file, so nothing else runs while measuring.

use std::pin::pin;

use vmbus_echo::client::{EchoConfig, Session};
use vmbus_echo::protocol;
use vmbus_echo_sim::{HostConfig, Rig};
use vmbus_kmcl_sim::InterfaceVersion;
use vmbus_kmcl_sim::scope::DriverAllocations;

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
            let channel = pin!(rig.create_channel(&EchoConfig::DEFAULT).unwrap());
            let session = Session::open(channel.as_ref()).unwrap();
            let mut scratch = vec![0_u8; protocol::MAX_MESSAGE];
            let mut bulk = vec![0_u8; 5 * 4096];

            // Warm up every path once.
            session.ping_burst(128, 32, &mut scratch).unwrap();
            session.ping(128, &mut scratch).unwrap();
            session.request_notifications(32, 64).unwrap();
            session.bulk(&mut bulk, 1).unwrap();
            session.sync_request(1).unwrap();

            let allocations = measure(|| {
                assert_eq!(
                    session.ping_burst(256, 1000, &mut scratch).unwrap().ok,
                    1000
                );
                for _ in 0..20 {
                    session.ping(64, &mut scratch).unwrap();
                }
                session.request_notifications(500, 128).unwrap();
                for seed in 0..4 {
                    session.bulk(&mut bulk, seed).unwrap();
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
            let c = channel.handler().counters();
            assert_eq!(c.pings_ok, 32 + 1 + 1000 + 20);
            assert_eq!(c.notifications_ok, 532);
            assert_eq!(c.rejected_total(), 0);
            session.close().unwrap();
        }
        rig.bus.verifier().assert_clean();
    }
}
