#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]
//! The keyboard job (open, the host types a text, every record reaches the modelled kbdclass
//! at DISPATCH_LEVEL, LEDs, close) under seeded schedules (`vmbus_kmcl_sim::schedule`): the
//! emulator's threads and the job run one at a time in an order each seed chooses, V1 and V5
//! alternating. A failure names its seed (`VMBUS_SIM_SEED=<seed>` replays it).

use vmbus_kbd_sim::harness::{Options, run};
use vmbus_kmcl_sim::{InterfaceVersion, schedule};

#[test]
fn typing_passes_under_seeded_schedules() {
    let sweep = schedule::sweep(0, 16, |seed| {
        let options = Options {
            text: "Seeded: Shift, E0 & ~!".to_owned(),
            version: if seed.is_multiple_of(2) {
                InterfaceVersion::V5
            } else {
                InterfaceVersion::V1
            },
            ..Options::default()
        };
        let report = run(&options).unwrap();
        assert!(report.passed(), "{report}");
    });
    assert!(sweep.runs < 2 || sweep.distinct_traces > 1, "{sweep:?}");
}
