//! The main job: `cargo run -p vmbus-echo-sim --release -- [flags]`.
//!
//! Runs the vmbus-echo driver's VMBus logic over the emulator against the echo VSP, prints
//! counts, bytes, throughput, round-trip percentiles, signals per packet and the verifier's
//! verdict, and exits 0 only when every count matches on both sides, nothing was lost and the
//! verifier is clean (1 otherwise, 2 for bad arguments).
//!
//! The command line is built with clap's builder API: clap's derive macros emit
//! `#[allow(clippy::restriction)]`, which the workspace's `forbid`-level lints reject.

use std::process::ExitCode;
use std::time::Duration;

use clap::builder::{PossibleValuesParser, RangedI64ValueParser, TypedValueParser};
use clap::{Arg, ArgAction, ArgMatches, Command, value_parser};
use vmbus_echo::protocol;
use vmbus_echo_sim::{Options, Paths, run};
use vmbus_kmcl_sim::InterfaceVersion;

fn ranged_u32(low: i64, high: i64) -> RangedI64ValueParser<u32> {
    value_parser!(u32).range(low..=high)
}

/// The command line; its defaults are `Options::default()` (a test checks they agree).
fn command() -> Command {
    Command::new("vmbus-echo-sim")
        .version(env!("CARGO_PKG_VERSION"))
        .about(
            "Runs the vmbus-echo sample driver's VMBus logic over the vmbus-kmcl emulator (real \
             VMBus rings, an emulated host speaking the echo protocol) and checks every count \
             on both sides. Exits 0 only if nothing was lost or mismatched and the verifier is \
             clean.",
        )
        .arg(
            Arg::new("pings")
                .value_name("N")
                .short('n')
                .long("pings")
                .help("Number of pings")
                .value_parser(value_parser!(u64))
                .default_value("100000"),
        )
        .arg(
            Arg::new("size")
                .value_name("BYTES")
                .short('s')
                .long("size")
                .help("Payload bytes per ping (0..=4072)")
                .value_parser(ranged_u32(0, protocol::MAX_PAYLOAD as i64))
                .default_value("256"),
        )
        .arg(
            Arg::new("ring-pages")
                .value_name("PAGES")
                .short('r')
                .long("ring-pages")
                .help("Ring buffer pages (4 KiB) per direction")
                .value_parser(ranged_u32(2, 1024))
                .default_value("16"),
        )
        .arg(
            Arg::new("paths")
                .value_name("PATHS")
                .short('p')
                .long("paths")
                .help("Paths to run, comma separated")
                .value_parser(PossibleValuesParser::new(["ping", "notify", "bulk", "sync"]))
                .value_delimiter(',')
                .action(ArgAction::Append)
                .default_value("ping,notify,bulk,sync"),
        )
        .arg(
            Arg::new("interface-version")
                .value_name("VERSION")
                .short('i')
                .long("interface-version")
                .help("Newest KMCL interface version the emulated bus offers")
                .value_parser(
                    PossibleValuesParser::new(["v1", "v2", "v3", "v4", "v5"]).map(|v| {
                        match v.as_str() {
                            "v1" => InterfaceVersion::V1,
                            "v2" => InterfaceVersion::V2,
                            "v3" => InterfaceVersion::V3,
                            "v4" => InterfaceVersion::V4,
                            _ => InterfaceVersion::V5,
                        }
                    }),
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
            Arg::new("hostile-every")
                .value_name("K")
                .long("hostile-every")
                .help("With --hostile: corrupt every K-th ping response and inject one hostile packet each time")
                .value_parser(ranged_u32(1, i64::from(u32::MAX)))
                .default_value("50"),
        )
        .arg(
            Arg::new("window")
                .value_name("N")
                .short('w')
                .long("window")
                .help("Pings in flight at most")
                .value_parser(ranged_u32(1, 60))
                .default_value("16"),
        )
        .arg(
            Arg::new("notifications")
                .value_name("N")
                .long("notifications")
                .help("Notifications to ask the host for")
                .value_parser(ranged_u32(1, i64::from(u32::MAX)))
                .default_value("20000"),
        )
        .arg(
            Arg::new("notification-size")
                .value_name("BYTES")
                .long("notification-size")
                .help("Payload bytes per notification (0..=4072)")
                .value_parser(ranged_u32(0, protocol::MAX_PAYLOAD as i64))
                .default_value("128"),
        )
        .arg(
            Arg::new("bulk-bytes")
                .value_name("BYTES")
                .long("bulk-bytes")
                .help("Bytes per bulk transfer")
                .value_parser(ranged_u32(1, 64 * 1024 * 1024))
                .default_value("1048576"),
        )
        .arg(
            Arg::new("bulk-rounds")
                .value_name("N")
                .long("bulk-rounds")
                .help("Number of bulk transfers")
                .value_parser(value_parser!(u32))
                .default_value("16"),
        )
        .arg(
            Arg::new("sync-requests")
                .value_name("N")
                .long("sync-requests")
                .help("Number of synchronous requests")
                .value_parser(value_parser!(u32))
                .default_value("2000"),
        )
        .arg(
            Arg::new("host-protocol")
                .value_name("VERSION")
                .long("host-protocol")
                .help("The host's newest echo protocol version (1 has no bulk transfer)")
                .value_parser(value_parser!(u16).range(1..=i64::from(protocol::MAX_VERSION)))
                .default_value("2"),
        )
        .arg(
            Arg::new("timeout-ms")
                .value_name("MS")
                .long("timeout-ms")
                .help("How long the driver waits for the host, in milliseconds")
                .value_parser(value_parser!(u64).range(1..))
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
    }
}

fn main() -> ExitCode {
    let matches = command().get_matches();
    let report = run(&options(&matches));
    println!("{report}");
    if report.passed() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn command_is_consistent() {
        command().debug_assert();
    }

    #[test]
    fn defaults_and_flags() {
        let m = command().get_matches_from(["vmbus-echo-sim"]);
        let o = options(&m);
        assert_eq!(o, Options::default());
        let m = command().get_matches_from([
            "vmbus-echo-sim",
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
        ]);
        let o = options(&m);
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
        assert!(
            command()
                .try_get_matches_from(["vmbus-echo-sim", "-s", "5000"])
                .is_err()
        );
        assert!(
            command()
                .try_get_matches_from(["vmbus-echo-sim", "-p", "pong"])
                .is_err()
        );
    }
}
