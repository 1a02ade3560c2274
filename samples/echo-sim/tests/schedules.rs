#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]
//! The echo sample's whole session (open, pings, a burst, notifications acknowledged by the ack
//! worker, bulk transfers through the GPADL, synchronous requests, close) under seeded
//! schedules (`vmbus_kmcl_sim::schedule`): the emulator's threads, the ack worker and the
//! session run one at a time in an order each seed chooses. Honest and hostile hosts, V1 and
//! V5 alternate with the seed; every run passes with a clean verifier. A failure names its seed
//! (`VMBUS_SIM_SEED=<seed>` replays it; `VMBUS_SIM_SEEDS=<n>` runs more).

use std::time::Duration;

use vmbus_echo_sim::{Options, run};
use vmbus_kmcl_sim::{InterfaceVersion, schedule};

fn options(seed: u64) -> Options {
    Options {
        interface_version: if seed.is_multiple_of(2) {
            InterfaceVersion::V5
        } else {
            InterfaceVersion::V1
        },
        pings: 24,
        notifications: 8,
        bulk_rounds: 1,
        sync_requests: 4,
        hostile_every: if seed % 4 < 2 { 0 } else { 5 },
        timeout: Duration::from_secs(10),
        ..Options::default()
    }
}

#[test]
fn echo_session_passes_under_seeded_schedules() {
    let sweep = schedule::sweep(0, 16, |seed| {
        let report = run(&options(seed));
        assert!(report.passed(), "{report}");
        report.verifier.assert_clean();
    });
    assert!(sweep.runs < 2 || sweep.distinct_traces > 1, "{sweep:?}");
}
