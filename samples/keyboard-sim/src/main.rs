//! The typing job: `cargo run -p vmbus-kbd-sim --release -- --text "Hello, World! 123"`.
//!
//! The emulated host keyboard types the text; the vmbus-kbd driver's VMBus logic receives the
//! events over real VMBus rings and hands `KEYBOARD_INPUT_DATA` records to a model of kbdclass.
//! Prints those records, the text decoded back from them, and the verifier's verdict. Exit
//! status: 0 passed, 1 any mismatch, loss, rejection or leak, 2 bad arguments (including a
//! character the US layout has no key for).
//!
//! The command line is built with clap's builder API, as the echo job's is.

use std::process::ExitCode;

use clap::builder::PossibleValuesParser;
use clap::{Arg, Command};
use vmbus_kbd_sim::{Options, run};
use vmbus_kmcl_sim::InterfaceVersion;

/// The values of `-i`.
const INTERFACE_VERSIONS: [(&str, InterfaceVersion); 5] = [
    ("v1", InterfaceVersion::V1),
    ("v2", InterfaceVersion::V2),
    ("v3", InterfaceVersion::V3),
    ("v4", InterfaceVersion::V4),
    ("v5", InterfaceVersion::V5),
];

fn command() -> Command {
    Command::new("vmbus-kbd-sim")
        .about(
            "Types text through an emulated Hyper-V synthetic keyboard into the vmbus-kbd \
             driver's VMBus logic and checks what kbdclass would receive",
        )
        .arg(
            Arg::new("text")
                .long("text")
                .short('t')
                .value_name("TEXT")
                .default_value("Hello, World! 123")
                .help("The text the host types (US layout: printable ASCII and newline)"),
        )
        .arg(
            Arg::new("interface")
                .short('i')
                .long("interface")
                .value_name("VERSION")
                .default_value("v5")
                .ignore_case(true)
                .value_parser(PossibleValuesParser::new(
                    INTERFACE_VERSIONS.map(|(n, _)| n),
                ))
                .help("KMCL interface version the emulated bus offers"),
        )
}

fn main() -> ExitCode {
    let matches = command().get_matches();
    let mut options = Options::default();
    if let Some(text) = matches.get_one::<String>("text") {
        options.text.clone_from(text);
    }
    if let Some(value) = matches.get_one::<String>("interface") {
        let value = value.to_ascii_lowercase();
        if let Some((_, version)) = INTERFACE_VERSIONS.iter().find(|(name, _)| *name == value) {
            options.version = *version;
        }
    }
    match run(&options) {
        Ok(report) => {
            println!("{report}");
            if report.passed() {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            }
        }
        Err(error) => {
            eprintln!("vmbus-kbd-sim: {error}");
            ExitCode::from(2)
        }
    }
}
