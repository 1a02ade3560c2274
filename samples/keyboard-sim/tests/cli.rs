#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]
//! The typing job's command line: the README's command passes and prints the decoded text and
//! a clean verifier; a character without a key is a usage error (exit status 2).

use std::process::Command;

fn job() -> Command {
    Command::new(env!("CARGO_BIN_EXE_vmbus-kbd-sim"))
}

#[test]
fn readme_command_passes() {
    let output = job()
        .args(["--text", "Hello, World! 123"])
        .output()
        .unwrap();
    let stdout = String::from_utf8(output.stdout).unwrap();
    assert_eq!(output.status.code(), Some(0), "{stdout}");
    assert!(
        stdout.contains("decoded     \"Hello, World! 123\""),
        "{stdout}"
    );
    assert!(stdout.contains("e0:47+"), "an E0 key was used: {stdout}");
    assert!(stdout.contains("verifier: clean"), "{stdout}");
    assert!(stdout.contains("result: PASS"), "{stdout}");
}

#[test]
fn every_interface_version() {
    for version in ["v1", "V3", "v5"] {
        let output = job()
            .args(["-i", version, "--text", "Mixed CASE!"])
            .output()
            .unwrap();
        assert_eq!(output.status.code(), Some(0), "{version}");
    }
}

#[test]
fn untypable_text_is_a_usage_error() {
    let output = job().args(["--text", "naïve"]).output().unwrap();
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert!(stderr.contains("no key for 'ï'"), "{stderr}");
    let output = job().args(["-i", "v9"]).output().unwrap();
    assert_eq!(output.status.code(), Some(2));
}
