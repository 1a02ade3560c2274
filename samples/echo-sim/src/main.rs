//! The main job: `cargo run -p vmbus-echo-sim --release -- [flags]`.
//!
//! Runs the vmbus-echo driver's VMBus logic over the emulator against the echo VSP, prints
//! counts, bytes, throughput, round-trip percentiles, signals per packet and the verifier's
//! verdict, and exits 0 only when every count matches on both sides, nothing was lost and the
//! verifier is clean (1 otherwise, 2 for bad arguments).
//!
//! The report is written through a checked writer: when the reader of standard output goes
//! away early (`vmbus-echo-sim | head -1`) the job exits quietly with status 141 (128 + SIGPIPE,
//! what a shell reports for a program killed by a broken pipe); any other write error (a full
//! disk) prints one line on standard error and exits 1.
//!
//! The command line is built with clap's builder API: clap's derive macros emit
//! `#[allow(clippy::restriction)]`, which the workspace's `forbid`-level lints reject.
#![cfg_attr(
    test,
    allow(
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::panic,
        clippy::indexing_slicing
    )
)]

use std::fmt::Display;
use std::io::{self, ErrorKind, Write};
use std::process::ExitCode;
use std::time::Duration;

use clap::builder::{PossibleValuesParser, RangedU64ValueParser, TypedValueParser};
use clap::{Arg, ArgAction, ArgMatches, Command};
use vmbus_echo::{client, protocol};
use vmbus_echo_sim::{Options, Paths, run};
use vmbus_kmcl_sim::{HostProfile, InterfaceVersion};

/// Exit status when standard output was closed before the whole report was written.
const EXIT_BROKEN_PIPE: u8 = 141;

/// The values of `-i`, matched ignoring ASCII case (`v5` and `V5`).
const INTERFACE_VERSIONS: [(&str, InterfaceVersion); 5] = [
    ("v1", InterfaceVersion::V1),
    ("v2", InterfaceVersion::V2),
    ("v3", InterfaceVersion::V3),
    ("v4", InterfaceVersion::V4),
    ("v5", InterfaceVersion::V5),
];

/// The largest `--timeout-ms`: a day (bounded so deadlines cannot overflow the clock).
const MAX_TIMEOUT_MS: u64 = 24 * 60 * 60 * 1000;

/// The largest `--ring-pages`.
const MAX_RING_PAGES: u64 = 1024;

/// A numeric flag `--id` accepting `low..=high` (in `unit`, if any), with the range and unit in
/// its help text; clap rejects values outside it with "`value` is not in `low..=high`".
fn numeric<T>(
    id: &'static str,
    value_name: &'static str,
    what: &str,
    low: u64,
    high: u64,
    unit: &str,
) -> Arg
where
    T: TryFrom<u64> + Clone + Send + Sync + 'static,
    <T as TryFrom<u64>>::Error: Send + Sync + 'static + std::error::Error + ToString,
{
    Arg::new(id)
        .value_name(value_name)
        .long(id)
        .help(if unit.is_empty() {
            format!("{what} [range: {low}..={high}]")
        } else {
            format!("{what} [range: {low}..={high} {unit}]")
        })
        .value_parser(RangedU64ValueParser::<T>::new().range(low..=high))
}

/// Maps an `-i` value (already checked against [`INTERFACE_VERSIONS`]) to its version.
fn interface_version(value: &str) -> InterfaceVersion {
    INTERFACE_VERSIONS
        .iter()
        .find(|(name, _)| name.eq_ignore_ascii_case(value))
        .map_or(InterfaceVersion::V5, |&(_, version)| version)
}

/// The command line; its defaults are `Options::default()` (a test checks they agree).
fn command() -> Command {
    let max_payload = protocol::MAX_PAYLOAD as u64;
    let u32_max = u64::from(u32::MAX);
    Command::new("vmbus-echo-sim")
        .version(env!("CARGO_PKG_VERSION"))
        .about(
            "Runs the vmbus-echo sample driver's VMBus logic over the vmbus-kmcl emulator (real \
             VMBus rings, an emulated host speaking the echo protocol) and checks every count \
             on both sides. Exits 0 only if nothing was lost or mismatched and the verifier is \
             clean.",
        )
        .after_help(
            "Exit status: 0 passed; 1 a mismatch, loss or leak (or the report could not be \
             written: one line on stderr); 2 bad arguments; 141 standard output was closed \
             before the whole report was written (e.g. `| head -1`; nothing on stderr).",
        )
        .arg(
            numeric::<u64>(
                "pings",
                "N",
                "Pings to send (0: none; the round trip line then reads n/a)",
                0,
                u64::MAX,
                "pings",
            )
            .short('n')
            .default_value("100000"),
        )
        .arg(
            numeric::<u32>("size", "BYTES", "Payload per ping", 0, max_payload, "bytes")
                .short('s')
                .default_value("256"),
        )
        .arg(
            numeric::<u32>(
                "ring-pages",
                "PAGES",
                "Ring buffer size per direction",
                2,
                MAX_RING_PAGES,
                "pages of 4 KiB",
            )
            .short('r')
            .default_value("16"),
        )
        .arg(
            Arg::new("paths")
                .value_name("PATHS")
                .short('p')
                .long("paths")
                .help("Paths to run, comma separated")
                .value_parser(PossibleValuesParser::new([
                    "ping", "notify", "bulk", "sync",
                ]))
                .value_delimiter(',')
                .action(ArgAction::Append)
                .default_value("ping,notify,bulk,sync"),
        )
        .arg(
            Arg::new("interface-version")
                .value_name("VERSION")
                .short('i')
                .long("interface-version")
                .help("Newest KMCL interface version the emulated bus offers (case-insensitive)")
                .ignore_case(true)
                .value_parser(
                    PossibleValuesParser::new(INTERFACE_VERSIONS.map(|(name, _)| name))
                        .map(|v| interface_version(&v)),
                )
                .default_value("v5"),
        )
        .arg(
            Arg::new("hostile")
                .long("hostile")
                .help(
                    "Make the host hostile: corrupt ping responses, inject malformed packets, \
                     answer wrongly (the driver must reject and count each one and keep working)",
                )
                .action(ArgAction::SetTrue),
        )
        .arg(
            numeric::<u32>(
                "hostile-every",
                "K",
                "Requires --hostile: corrupt every K-th ping response and inject one hostile \
                 packet each time",
                1,
                u32_max,
                "pings",
            )
            .requires("hostile")
            .default_value("50"),
        )
        .arg(
            numeric::<u32>(
                "window",
                "N",
                "Pings in flight at most",
                1,
                client::SLOTS as u64 - 4,
                "pings",
            )
            .short('w')
            .default_value("16"),
        )
        .arg(
            numeric::<u32>(
                "notifications",
                "N",
                "Notifications to ask the host for",
                1,
                u32_max,
                "notifications",
            )
            .default_value("20000"),
        )
        .arg(
            numeric::<u32>(
                "notification-size",
                "BYTES",
                "Payload per notification",
                0,
                max_payload,
                "bytes",
            )
            .default_value("128"),
        )
        .arg(
            numeric::<u32>(
                "bulk-bytes",
                "BYTES",
                "Size of each bulk transfer",
                1,
                u64::from(client::MAX_BULK_BYTES),
                "bytes",
            )
            .default_value("1048576"),
        )
        .arg(
            numeric::<u32>(
                "bulk-rounds",
                "N",
                "Number of bulk transfers",
                0,
                u32_max,
                "transfers",
            )
            .default_value("16"),
        )
        .arg(
            numeric::<u32>(
                "sync-requests",
                "N",
                "Number of synchronous requests",
                0,
                u32_max,
                "requests",
            )
            .default_value("2000"),
        )
        .arg(
            numeric::<u16>(
                "host-protocol",
                "VERSION",
                "The host's newest echo protocol version (1 has no bulk transfer)",
                u64::from(protocol::MIN_VERSION),
                u64::from(protocol::MAX_VERSION),
                "",
            )
            .default_value("2"),
        )
        .arg(
            Arg::new("host-profile")
                .value_name("PROFILE")
                .long("host-profile")
                .help(
                    "The host implementation the emulator imitates (case-insensitive): hyperv \
                     reports unneeded guest-to-host interrupts and lets the device talk before \
                     the open result, openvmm asks for space in large chunks when its writer \
                     blocks",
                )
                .ignore_case(true)
                .value_parser(
                    PossibleValuesParser::new(HostProfile::ALL.map(HostProfile::name))
                        .map(|v| HostProfile::from_name(&v).unwrap_or_default()),
                )
                .default_value("default"),
        )
        .arg(
            numeric::<u64>(
                "timeout-ms",
                "MS",
                "How long the driver waits for the host",
                1,
                MAX_TIMEOUT_MS,
                "milliseconds",
            )
            .default_value("5000"),
        )
}

fn value<T: Clone + Send + Sync + 'static>(matches: &ArgMatches, id: &str, fallback: T) -> T {
    matches.get_one::<T>(id).cloned().unwrap_or(fallback)
}

fn options(matches: &ArgMatches) -> Options {
    let d = Options::default();
    let paths: Vec<&String> = matches
        .get_many::<String>("paths")
        .map(Iterator::collect)
        .unwrap_or_default();
    let has = |name: &str| paths.iter().any(|p| p.as_str() == name);
    let hostile = matches.get_flag("hostile");
    Options {
        interface_version: value(matches, "interface-version", d.interface_version),
        pings: value(matches, "pings", d.pings),
        payload: value(matches, "size", 0_u32) as usize,
        window: value(matches, "window", d.window),
        ring_pages: value(matches, "ring-pages", d.ring_pages),
        notifications: value(matches, "notifications", d.notifications),
        notification_payload: value(matches, "notification-size", d.notification_payload),
        bulk_bytes: value(matches, "bulk-bytes", 0_u32) as usize,
        bulk_rounds: value(matches, "bulk-rounds", d.bulk_rounds),
        sync_requests: value(matches, "sync-requests", d.sync_requests),
        paths: Paths {
            ping: has("ping"),
            notify: has("notify"),
            bulk: has("bulk"),
            sync: has("sync"),
        },
        hostile_every: if hostile {
            value(matches, "hostile-every", 50_u32)
        } else {
            0
        },
        host_max_version: value(matches, "host-protocol", d.host_max_version),
        timeout: Duration::from_millis(value(matches, "timeout-ms", 5000_u64)),
        host_profile: value(matches, "host-profile", d.host_profile),
    }
}

/// Writes the report and a newline to `out` and flushes it.
fn write_report(out: &mut impl Write, report: &impl Display) -> io::Result<()> {
    writeln!(out, "{report}")?;
    out.flush()
}

/// The exit status for the outcome of writing the report of a run that `passed`; any write
/// error other than a broken pipe is reported in one line on `stderr` (whose own errors are
/// ignored: there is nowhere left to report them).
fn exit_status(written: io::Result<()>, passed: bool, stderr: &mut impl Write) -> ExitCode {
    match written {
        Ok(()) if passed => ExitCode::SUCCESS,
        Ok(()) => ExitCode::FAILURE,
        Err(error) if error.kind() == ErrorKind::BrokenPipe => ExitCode::from(EXIT_BROKEN_PIPE),
        Err(error) => {
            let _ = writeln!(
                stderr,
                "vmbus-echo-sim: cannot write the report to standard output: {error}"
            );
            ExitCode::FAILURE
        }
    }
}

fn main() -> ExitCode {
    let matches = command().get_matches();
    let report = run(&options(&matches));
    let written = write_report(&mut io::stdout().lock(), &report);
    exit_status(written, report.passed(), &mut io::stderr().lock())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Options, clap::Error> {
        command()
            .try_get_matches_from(std::iter::once("vmbus-echo-sim").chain(args.iter().copied()))
            .map(|m| options(&m))
    }

    #[test]
    fn command_is_consistent() {
        command().debug_assert();
    }

    #[test]
    fn defaults_and_flags() {
        assert_eq!(parse(&[]).unwrap(), Options::default());
        let o = parse(&[
            "-n",
            "7",
            "-s",
            "0",
            "-p",
            "ping,sync",
            "-i",
            "v1",
            "--hostile",
            "--hostile-every",
            "3",
        ])
        .unwrap();
        assert_eq!(o.pings, 7);
        assert_eq!(o.payload, 0);
        assert_eq!(
            o.paths,
            Paths {
                ping: true,
                notify: false,
                bulk: false,
                sync: true
            }
        );
        assert_eq!(o.interface_version, InterfaceVersion::V1);
        assert_eq!(o.hostile_every, 3);
        assert_eq!(parse(&["--hostile"]).unwrap().hostile_every, 50);
        assert!(parse(&["-s", "5000"]).is_err());
        assert!(parse(&["-p", "pong"]).is_err());
    }

    #[test]
    fn interface_versions_ignore_case() {
        for (name, version) in INTERFACE_VERSIONS {
            let upper = name.to_ascii_uppercase();
            for spelling in [name, upper.as_str()] {
                let o = parse(&["-i", spelling]).unwrap();
                assert_eq!(o.interface_version, version, "-i {spelling}");
                let long = format!("--interface-version={spelling}");
                assert_eq!(parse(&[&long]).unwrap().interface_version, version);
            }
        }
        for bad in ["v0", "v6", "5", "vv5", ""] {
            let error = parse(&["-i", bad]).unwrap_err();
            assert_eq!(
                error.kind(),
                clap::error::ErrorKind::InvalidValue,
                "-i {bad:?}"
            );
        }
    }

    #[test]
    fn host_profiles_ignore_case() {
        for profile in HostProfile::ALL {
            let upper = profile.name().to_ascii_uppercase();
            for spelling in [profile.name(), upper.as_str()] {
                let o = parse(&["--host-profile", spelling]).unwrap();
                assert_eq!(o.host_profile, profile, "--host-profile {spelling}");
            }
        }
        assert_eq!(parse(&[]).unwrap().host_profile, HostProfile::Default);
        let error = parse(&["--host-profile", "qemu"]).unwrap_err();
        assert_eq!(error.kind(), clap::error::ErrorKind::InvalidValue);
    }

    #[test]
    fn hostile_every_requires_hostile() {
        let error = parse(&["--hostile-every", "3"]).unwrap_err();
        assert_eq!(
            error.kind(),
            clap::error::ErrorKind::MissingRequiredArgument
        );
        assert!(error.to_string().contains("--hostile"), "{error}");
        assert_eq!(
            parse(&["--hostile-every", "3", "--hostile"])
                .unwrap()
                .hostile_every,
            3
        );
    }

    /// Every numeric flag: its help states the range it accepts, both ends are accepted and
    /// the values just outside are clap errors naming the range.
    #[test]
    fn numeric_ranges() {
        let cases: [(&str, u64, u64); 12] = [
            ("--pings", 0, u64::MAX),
            ("--size", 0, protocol::MAX_PAYLOAD as u64),
            ("--ring-pages", 2, MAX_RING_PAGES),
            ("--hostile-every", 1, u64::from(u32::MAX)),
            ("--window", 1, client::SLOTS as u64 - 4),
            ("--notifications", 1, u64::from(u32::MAX)),
            ("--notification-size", 0, protocol::MAX_PAYLOAD as u64),
            ("--bulk-bytes", 1, u64::from(client::MAX_BULK_BYTES)),
            ("--bulk-rounds", 0, u64::from(u32::MAX)),
            ("--sync-requests", 0, u64::from(u32::MAX)),
            (
                "--host-protocol",
                u64::from(protocol::MIN_VERSION),
                u64::from(protocol::MAX_VERSION),
            ),
            ("--timeout-ms", 1, MAX_TIMEOUT_MS),
        ];
        let cmd = command();
        let numeric: Vec<_> = cmd
            .get_arguments()
            .filter(|a| {
                a.get_help()
                    .is_some_and(|h| h.to_string().contains("[range: "))
            })
            .map(|a| format!("--{}", a.get_id()))
            .collect();
        let listed: Vec<_> = cases.iter().map(|c| c.0.to_owned()).collect();
        assert_eq!(numeric, listed, "every numeric flag is covered");
        for (flag, low, high) in cases {
            let arg = cmd
                .get_arguments()
                .find(|a| format!("--{}", a.get_id()) == flag)
                .unwrap();
            let help = arg.get_help().unwrap().to_string();
            assert!(
                help.contains(&format!("[range: {low}..={high}")),
                "{flag}: {help}"
            );
            let extra: &[&str] = if flag == "--hostile-every" {
                &["--hostile"]
            } else {
                &[]
            };
            for ok in [low, high] {
                let value = format!("{flag}={ok}");
                let args: Vec<&str> = std::iter::once(value.as_str())
                    .chain(extra.iter().copied())
                    .collect();
                assert!(parse(&args).is_ok(), "{value}");
            }
            let outside = [low.checked_sub(1), high.checked_add(1)];
            for bad in outside.into_iter().flatten() {
                let value = format!("{flag}={bad}");
                let args: Vec<&str> = std::iter::once(value.as_str())
                    .chain(extra.iter().copied())
                    .collect();
                let error = parse(&args).unwrap_err();
                assert_eq!(
                    error.kind(),
                    clap::error::ErrorKind::ValueValidation,
                    "{value}"
                );
                assert!(
                    error
                        .to_string()
                        .contains(&format!("{bad} is not in {low}..={high}")),
                    "{value}: {error}"
                );
            }
        }
        // Beyond u64: clap's own message.
        assert!(parse(&["--pings=18446744073709551616"]).is_err());
        assert!(parse(&["--pings=-1"]).is_err());
    }

    /// A writer failing with `kind` after accepting `accept` bytes.
    struct Failing {
        accept: usize,
        kind: ErrorKind,
    }

    impl Write for Failing {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            if self.accept == 0 {
                return Err(io::Error::from(self.kind));
            }
            let n = buf.len().min(self.accept);
            self.accept -= n;
            Ok(n)
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn output_errors() {
        let report = "first line\nsecond line\n  result: PASS in 1 ms";
        let mut out = Vec::new();
        assert!(write_report(&mut out, &report).is_ok());
        assert_eq!(String::from_utf8(out).unwrap(), format!("{report}\n"));
        for accept in [0, 1, 11, report.len()] {
            let mut stderr = Vec::new();
            let mut pipe = Failing {
                accept,
                kind: ErrorKind::BrokenPipe,
            };
            let written = write_report(&mut pipe, &report);
            assert_eq!(
                written.as_ref().map_err(io::Error::kind),
                Err(ErrorKind::BrokenPipe)
            );
            let status = exit_status(written, true, &mut stderr);
            assert_eq!(status, ExitCode::from(EXIT_BROKEN_PIPE));
            assert!(stderr.is_empty());
            let mut disk = Failing {
                accept,
                kind: ErrorKind::StorageFull,
            };
            let written = write_report(&mut disk, &report);
            assert_eq!(exit_status(written, true, &mut stderr), ExitCode::FAILURE);
            let message = String::from_utf8(stderr).unwrap();
            assert!(
                message.starts_with("vmbus-echo-sim: cannot write the report to standard output: "),
                "{message}"
            );
            assert_eq!(message.lines().count(), 1, "{message}");
        }
        let mut stderr = Vec::new();
        assert_eq!(exit_status(Ok(()), true, &mut stderr), ExitCode::SUCCESS);
        assert_eq!(exit_status(Ok(()), false, &mut stderr), ExitCode::FAILURE);
        assert!(stderr.is_empty());
    }
}
