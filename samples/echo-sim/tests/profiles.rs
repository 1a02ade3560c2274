#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]
//! The echo sample under every host profile (`--host-profile`): the main job passes, honest
//! and hostile, in process and as a process; the default report carries no profile line.

use std::process::{Command, Stdio};
use std::time::Duration;

use vmbus_echo_sim::{Options, run};
use vmbus_kmcl_sim::{HostProfile, ViolationKind};

const BIN: &str = env!("CARGO_BIN_EXE_vmbus-echo-sim");

/// Every path, kept short for a debug build.
fn short(profile: HostProfile, hostile_every: u32) -> Options {
    Options {
        pings: 300,
        notifications: 100,
        bulk_rounds: 2,
        sync_requests: 20,
        hostile_every,
        host_profile: profile,
        timeout: Duration::from_secs(10),
        ..Options::default()
    }
}

#[test]
fn echo_sample_passes_under_every_profile() {
    for profile in HostProfile::ALL {
        for hostile_every in [0, 7] {
            let report = run(&short(profile, hostile_every));
            assert!(
                report.passed(),
                "{profile}, hostile {hostile_every}:\n{report}"
            );
            report.verifier.assert_clean();
            assert_eq!(
                report
                    .verifier
                    .violations_of(ViolationKind::UnexpectedInterrupt)
                    .count(),
                0
            );
            assert_eq!(report.rings.unneeded_guest_signals, 0, "{profile}");
            let text = report.to_string();
            let line = format!("  host profile {profile}\n");
            assert_eq!(
                text.contains(&line),
                profile != HostProfile::Default,
                "{text}"
            );
        }
    }
}

const FLAGS: [&str; 8] = [
    "-n",
    "200",
    "--notifications",
    "50",
    "--bulk-rounds",
    "2",
    "--sync-requests",
    "20",
];

fn main_job(extra: &[&str]) -> (bool, String) {
    let output = Command::new(BIN)
        .args(FLAGS)
        .args(extra)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
    )
}

/// Each line of the report up to its first number, to compare the shape of two runs (the
/// measurements and their units differ from run to run).
fn shape(report: &str) -> Vec<&str> {
    report
        .lines()
        .map(|line| {
            line.split(|c: char| c.is_ascii_digit())
                .next()
                .unwrap_or("")
        })
        .collect()
}

#[test]
fn main_job_flag_selects_the_profile() {
    let (ok, plain) = main_job(&[]);
    assert!(ok, "{plain}");
    assert!(!plain.contains("host profile"), "{plain}");
    let (ok, default) = main_job(&["--host-profile", "default"]);
    assert!(ok, "{default}");
    assert_eq!(shape(&default), shape(&plain));
    for name in ["hyperv", "OpenVMM"] {
        let (ok, report) = main_job(&["--host-profile", name]);
        assert!(ok, "{name}: {report}");
        let profile = HostProfile::from_name(name).unwrap();
        assert!(
            report.contains(&format!("\n  host profile {profile}\n")),
            "{report}"
        );
        assert!(report.contains("result: PASS"), "{report}");
    }
}
