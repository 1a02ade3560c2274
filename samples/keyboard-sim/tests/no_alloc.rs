#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]
//! The driver's receive path (copy, validate, translate, deliver; hostile messages included)
//! and its LED send make no heap allocation, measured with a counting global allocator that
//! `vmbus_kmcl_sim::scope` tells whose code runs (the emulator and the host device allocate
//! freely and are not counted). One test in this file, so nothing else runs while measuring.

use vmbus_kbd::protocol;
use vmbus_kbd_sim::harness::WAIT;
use vmbus_kbd_sim::{HostConfig, Rig, typist, wait_until};
use vmbus_kmcl_sim::InterfaceVersion;
use vmbus_kmcl_sim::scope::{DriverAllocations, as_emulator};

#[global_allocator]
static ALLOCATOR: DriverAllocations = DriverAllocations::new();

#[test]
fn receive_and_led_paths_are_allocation_free() {
    // The counter sees driver allocations.
    assert_eq!(
        ALLOCATOR.measure(|| drop(std::hint::black_box(Box::new(1_u64)))),
        1
    );
    for version in [InterfaceVersion::V1, InterfaceVersion::V5] {
        let rig = Rig::new(version, HostConfig::HONEST);
        let keyboard = rig.open().unwrap();
        let client = keyboard.client();
        let text = "Hello, World! 123 ~ the quick brown fox";
        let keystrokes = typist::type_with_edit(text).unwrap();
        let expected = typist::expected_records(&keystrokes).len();
        // Warm up.
        as_emulator(|| rig.host.type_keystrokes(&keystrokes));
        assert!(rig.wait_records(expected));
        keyboard.set_indicators(1).unwrap();
        rig.platform.clear();

        let allocations = ALLOCATOR.measure(|| {
            for round in 1..=5 {
                as_emulator(|| {
                    rig.host.type_keystrokes(&keystrokes);
                    rig.host.send_raw(&[0xEE; 16]);
                });
                assert!(rig.wait_records(expected * round));
                keyboard
                    .set_indicators(protocol::KEYBOARD_CAPS_LOCK_ON)
                    .unwrap();
            }
            assert!(wait_until(WAIT, || client.counters().rejected_total() == 5));
        });
        assert_eq!(
            allocations, 0,
            "{version:?}: heap allocations by the driver"
        );
        assert_eq!(
            typist::decode(&rig.platform.records()[..expected]).text,
            text
        );
        rig.finish(Some(keyboard)).assert_clean();
    }
}
