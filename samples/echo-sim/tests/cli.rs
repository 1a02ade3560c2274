#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]
//! The main job's command line, run as a process: output errors (a closed pipe, a full disk),
//! case-insensitive `-i`, `--hostile-every` without `--hostile`, `-n 0`, out-of-range values,
//! the ranges in `--help`, and the shape of the report.

use std::process::{Command, Output, Stdio};

const BIN: &str = env!("CARGO_BIN_EXE_vmbus-echo-sim");

/// Flags that keep a run short in a debug build (every path still runs).
const SHORT: [&str; 8] = [
    "-n",
    "200",
    "--notifications",
    "50",
    "--bulk-rounds",
    "2",
    "--sync-requests",
    "20",
];

fn sim(args: &[&str]) -> Command {
    let mut command = Command::new(BIN);
    command.args(args).stdin(Stdio::null());
    command
}

fn output(args: &[&str]) -> Output {
    sim(args).output().unwrap()
}

fn short(extra: &[&str]) -> Output {
    let args: Vec<&str> = SHORT.iter().chain(extra).copied().collect();
    output(&args)
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Standard error of a process that must not have panicked.
fn no_panic(output: &Output) -> String {
    let stderr = text(&output.stderr);
    assert!(
        !stderr.contains("panicked") && !stderr.contains("RUST_BACKTRACE"),
        "{stderr}"
    );
    stderr
}

/// Standard output closed before the child writes anything: every write fails with
/// `BrokenPipe`. The job exits 141 without a word on stderr.
#[test]
fn closed_pipe_exits_quietly_with_141() {
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    let out = sim(&SHORT)
        .stdout(writer)
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    let stderr = no_panic(&out);
    assert_eq!(out.status.code(), Some(141), "{stderr}");
    assert_eq!(stderr, "");
}

/// The same through a child whose piped stdout the parent closes right after the spawn.
#[test]
fn pipe_closed_early_exits_quietly_with_141() {
    let mut child = sim(&SHORT)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    let out = child.wait_with_output().unwrap();
    let stderr = no_panic(&out);
    assert_eq!(out.status.code(), Some(141), "{stderr}");
    assert_eq!(stderr, "");
}

/// `--help` into a closed pipe: clap ignores the error and exits 0, without a panic.
#[test]
fn help_into_closed_pipe_does_not_panic() {
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    let out = sim(&["--help"])
        .stdout(writer)
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    no_panic(&out);
    assert_eq!(out.status.code(), Some(0));
}

/// Any other write error (here ENOSPC from /dev/full): exit 1 and one line on stderr.
#[cfg(target_os = "linux")]
#[test]
fn full_disk_exits_1_with_one_line() {
    let full = std::fs::OpenOptions::new()
        .write(true)
        .open("/dev/full")
        .unwrap();
    let out = sim(&SHORT)
        .stdout(full)
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    let stderr = no_panic(&out);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.starts_with("vmbus-echo-sim: cannot write the report to standard output: "),
        "{stderr}"
    );
    assert!(stderr.ends_with('\n'));
}

#[test]
fn interface_version_ignores_case() {
    for (flag, version) in [("V5", "V5"), ("v3", "V3"), ("V1", "V1")] {
        let out = short(&["-i", flag]);
        let stdout = text(&out.stdout);
        assert_eq!(out.status.code(), Some(0), "-i {flag}: {stdout}");
        let first = stdout.lines().next().unwrap();
        assert!(
            first.contains(&format!(
                "bus offers KMCL {version}, driver negotiated {version}"
            )),
            "-i {flag}: {first}"
        );
    }
    let out = output(&["-i", "V6"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("[possible values: v1, v2, v3, v4, v5]"));
}

#[test]
fn hostile_every_without_hostile_is_an_error() {
    let out = output(&["--hostile-every", "3"]);
    let stderr = no_panic(&out);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(out.stdout.is_empty());
    assert!(
        stderr.contains("the following required arguments were not provided")
            && stderr.contains("--hostile"),
        "{stderr}"
    );
    let out = short(&["--hostile", "--hostile-every", "3"]);
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}");
    assert!(stdout.contains("host HOSTILE (every 3rd ping)"), "{stdout}");
}

#[test]
fn zero_pings_print_na() {
    let args: Vec<&str> = ["-n", "0"]
        .into_iter()
        .chain(SHORT.iter().copied().skip(2))
        .collect();
    let out = output(&args);
    let stdout = text(&out.stdout);
    let stderr = no_panic(&out);
    assert_eq!(out.status.code(), Some(0), "{stdout}{stderr}");
    assert!(
        stdout.contains("  ping    0 x 256 B: 0 ok, 0 failed;"),
        "{stdout}"
    );
    assert!(
        stdout.contains("          round trip p50 n/a, p99 n/a (min n/a, mean n/a, max n/a)\n"),
        "{stdout}"
    );
}

#[test]
fn out_of_range_values_are_clap_errors() {
    let cases: [(&[&str], &str); 12] = [
        (&["-s", "4073"], "4073 is not in 0..=4072"),
        (&["-r", "1"], "1 is not in 2..=1024"),
        (&["-r", "1025"], "1025 is not in 2..=1024"),
        (&["-w", "0"], "0 is not in 1..=60"),
        (&["-w", "61"], "61 is not in 1..=60"),
        (
            &["--hostile", "--hostile-every", "0"],
            "0 is not in 1..=4294967295",
        ),
        (&["--notifications", "0"], "0 is not in 1..=4294967295"),
        (&["--notification-size", "5000"], "5000 is not in 0..=4072"),
        (
            &["--bulk-bytes", "67108865"],
            "67108865 is not in 1..=67108864",
        ),
        (&["--host-protocol", "3"], "3 is not in 1..=2"),
        (&["--timeout-ms", "0"], "0 is not in 1..=86400000"),
        (
            &["--sync-requests", "4294967296"],
            "4294967296 is not in 0..=4294967295",
        ),
    ];
    for (args, message) in cases {
        let out = output(args);
        let stderr = no_panic(&out);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(out.stdout.is_empty(), "{args:?}");
        assert!(
            stderr.starts_with("error: invalid value"),
            "{args:?}: {stderr}"
        );
        assert!(stderr.contains(message), "{args:?}: {stderr}");
    }
    let out = output(&["-n", "18446744073709551616"]);
    no_panic(&out);
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn help_gives_every_range_and_the_exit_statuses() {
    let out = output(&["--help"]);
    assert_eq!(out.status.code(), Some(0));
    let help = text(&out.stdout);
    for (flag, range) in [
        ("--pings <N>", "[range: 0..=18446744073709551615 pings]"),
        ("--size <BYTES>", "[range: 0..=4072 bytes]"),
        ("--ring-pages <PAGES>", "[range: 2..=1024 pages of 4 KiB]"),
        ("--hostile-every <K>", "[range: 1..=4294967295 pings]"),
        ("--window <N>", "[range: 1..=60 pings]"),
        (
            "--notifications <N>",
            "[range: 1..=4294967295 notifications]",
        ),
        ("--notification-size <BYTES>", "[range: 0..=4072 bytes]"),
        ("--bulk-bytes <BYTES>", "[range: 1..=67108864 bytes]"),
        ("--bulk-rounds <N>", "[range: 0..=4294967295 transfers]"),
        ("--sync-requests <N>", "[range: 0..=4294967295 requests]"),
        ("--host-protocol <VERSION>", "[range: 1..=2]"),
        ("--timeout-ms <MS>", "[range: 1..=86400000 milliseconds]"),
    ] {
        let line = help
            .lines()
            .find(|l| l.contains(flag))
            .unwrap_or_else(|| panic!("{flag} missing: {help}"));
        assert!(line.contains(range), "{line}");
    }
    assert!(help.contains("Requires --hostile"), "{help}");
    assert!(help.contains("141 standard output was closed"), "{help}");
}

/// The report keeps its shape: the same lines, in the same order, as README.md shows.
#[test]
fn report_shape() {
    let out = short(&[]);
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}");
    assert!(
        stdout.ends_with('\n') && !stdout.ends_with("\n\n"),
        "{stdout}"
    );
    let prefixes = [
        "vmbus-echo over vmbus-kmcl-sim: bus offers KMCL V5, driver negotiated V5, echo protocol v2",
        "  rings 16 + 16 pages, 16 pings in flight, host honest",
        "  ping    200 x 256 B: 200 ok, 0 failed; ",
        "          round trip p50 ",
        "  notify  50 x 128 B: 50 accepted and completed, 50 acknowledged by the host, ",
        "  bulk    2 x 1048576 B through a GPADL: 2 verified, 0 failed, 2.00 MiB in ",
        "  sync    20 requests: 20 answered correctly, 0 failed, in ",
        "  rejected host messages: 0 (host injected 0)",
        "  signals per packet: guest->host ",
        "  verifier: clean (0 live channels, 0 live packets, 0 live GPADLs, 0 uncompleted incoming, 0 interface references, 0 violations; absorbed 0 forged and 0 ID-0 completions)",
        "  result: PASS in ",
    ];
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), prefixes.len(), "{stdout}");
    for (line, prefix) in lines.iter().zip(prefixes) {
        assert!(
            line.starts_with(prefix),
            "{line:?} should start with {prefix:?}"
        );
    }
    assert!(!lines[3].contains("n/a"), "{stdout}");
}
