//! The main job: the sample driver's portable VMBus logic (`vmbus_echo::client`) over the
//! emulator, with the [`EchoHost`] VSP on the other end of real VMBus rings.
//!
//! [`run`] opens the channel, negotiates, runs every selected path (ping burst,
//! host notifications, GPADL bulk transfers, synchronous requests), closes, shuts the bus down
//! and checks everything it can count on both sides: a [`Report`] with the numbers and every
//! mismatch found. [`Rig`] is the same setup for tests that drive the pieces themselves.
//! [`SimChannel`] is the echo channel together with its [`AckWorker`], the thread that
//! acknowledges pended host packets (the driver's work item).

use core::fmt;
use core::ops::{Deref, DerefMut};
use std::time::{Duration, Instant};

use vmbus_echo::client::{
    self, BurstReport, Counters, EchoChannel, EchoConfig, EchoError, Session,
};
use vmbus_echo::protocol::{self, ProtocolError, RejectReason};
use vmbus_echo::stats::LatencySummary;
use vmbus_kmcl::sys::GUID;
use vmbus_kmcl::{KmclInterface, NtStatus, ParentDevice, PassiveLevel};
use vmbus_kmcl_sim::{
    HostProfile, InterfaceVersion, Offer, OfferCounters, VerifierReport, Vmbus, VmbusConfig,
};

use crate::platform::{AckWorker, StdPlatform};
use crate::vsp::{EchoHost, HostConfig, HostControl, HostStats};

/// The interface instance of the emulated echo offer: `{29d870f5-0ff1-4ded-a62a-1d5af32be7e7}`.
pub const INSTANCE: GUID = GUID {
    Data1: 0x29d8_70f5,
    Data2: 0x0ff1,
    Data3: 0x4ded,
    Data4: [0xa6, 0x2a, 0x1d, 0x5a, 0xf3, 0x2b, 0xe7, 0xe7],
};

/// A bus with the echo offer and its host.
#[derive(Debug)]
pub struct Rig {
    /// The emulated VMBus and KMCL.
    pub bus: Vmbus,
    /// The offer of [`protocol::INTERFACE_TYPE`].
    pub offer: Offer,
    /// The host's statistics.
    pub host: HostControl,
}

impl Rig {
    /// A bus offering KMCL interface versions up to `version`, with an [`EchoHost`] of `host`
    /// offered as [`protocol::INTERFACE_TYPE`] / [`INSTANCE`].
    #[must_use]
    pub fn new(version: InterfaceVersion, host: HostConfig) -> Self {
        Self::with_profile(version, host, HostProfile::Default)
    }

    /// As [`Rig::new`], with the emulated host imitating `profile`.
    #[must_use]
    pub fn with_profile(version: InterfaceVersion, host: HostConfig, profile: HostProfile) -> Self {
        let bus = Vmbus::new(VmbusConfig::new(version).with_host_profile(profile));
        let (device, control) = EchoHost::new(host);
        let offer = bus.offer(protocol::INTERFACE_TYPE, INSTANCE, Box::new(device));
        Self {
            bus,
            offer,
            host: control,
        }
    }

    /// Queries the KMCL client interface from the bus, as `WdfFdoQueryForInterface` does in the
    /// driver.
    ///
    /// # Errors
    /// The query's status (e.g. an injected fault).
    pub fn interface(&self) -> Result<KmclInterface, NtStatus> {
        self.bus.kmcl_interface()
    }

    /// The offer's device object, as the parent of the driver's channel.
    #[must_use]
    pub fn parent(&self) -> ParentDevice {
        self.offer.parent_device()
    }

    /// Queries the interface and creates the echo channel (not yet open) with its ack worker.
    ///
    /// # Errors
    /// As `Rig::interface` and [`SimChannel::create`].
    pub fn create_channel(&self, config: &EchoConfig) -> Result<SimChannel, EchoError> {
        let interface = self.interface()?;
        SimChannel::create(&interface, self.parent(), config)
    }
}

/// The echo channel of a simulated device with its [`AckWorker`]: what the driver keeps in its
/// device context (the channel, and the work item that acknowledges pended host packets).
/// Dereferences to the [`EchoChannel`]; dropping it stops the worker, then tears the channel
/// down.
#[derive(Debug)]
pub struct SimChannel {
    /// Dropped first: the worker lets go of its channel reference before the teardown.
    worker: AckWorker,
    echo: EchoChannel<StdPlatform>,
}

impl SimChannel {
    /// `client::create_channel` with a fresh [`StdPlatform`] on the calling (test) thread,
    /// then starts the ack worker with a reference to the channel.
    ///
    /// # Errors
    /// As `client::create_channel`; `STATUS_INSUFFICIENT_RESOURCES` when the worker thread
    /// cannot be started; `STATUS_INVALID_DEVICE_STATE` off PASSIVE_LEVEL.
    pub fn create(
        interface: &KmclInterface,
        parent: ParentDevice,
        config: &EchoConfig,
    ) -> Result<Self, EchoError> {
        let irql = PassiveLevel::check().ok_or(EchoError::Kmcl(NtStatus::INVALID_DEVICE_STATE))?;
        let echo = client::create_channel(&irql, interface, parent, config, StdPlatform::new())?;
        let worker = AckWorker::start(echo.new_ref())
            .map_err(|_| EchoError::Kmcl(NtStatus::INSUFFICIENT_RESOURCES))?;
        Ok(Self { worker, echo })
    }

    /// The worker that acknowledges pended host packets.
    #[must_use]
    pub fn worker(&self) -> &AckWorker {
        &self.worker
    }

    /// The platform (clock, events, ack-worker statistics).
    #[must_use]
    pub fn platform(&self) -> &StdPlatform {
        self.echo.client().platform()
    }
}

impl Deref for SimChannel {
    type Target = EchoChannel<StdPlatform>;
    fn deref(&self) -> &Self::Target {
        &self.echo
    }
}

impl DerefMut for SimChannel {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.echo
    }
}

/// Which paths [`run`] exercises.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Paths {
    /// Pings, echoed in their completions.
    pub ping: bool,
    /// Host notifications (the receive path).
    pub notify: bool,
    /// GPADL bulk transfers.
    pub bulk: bool,
    /// Synchronous requests.
    pub sync: bool,
}

impl Paths {
    /// Every path.
    pub const ALL: Self = Self {
        ping: true,
        notify: true,
        bulk: true,
        sync: true,
    };
}

/// What [`run`] does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Options {
    /// The newest KMCL interface version the bus offers (the driver negotiates down to it).
    pub interface_version: InterfaceVersion,
    /// Pings to send.
    pub pings: u64,
    /// Payload bytes per ping.
    pub payload: usize,
    /// Pings in flight at most.
    pub window: u32,
    /// Ring pages per direction.
    pub ring_pages: u32,
    /// Notifications to ask the host for.
    pub notifications: u32,
    /// Payload bytes per notification.
    pub notification_payload: u32,
    /// Bytes per bulk transfer.
    pub bulk_bytes: usize,
    /// Bulk transfers.
    pub bulk_rounds: u32,
    /// Synchronous requests.
    pub sync_requests: u32,
    /// The paths to run.
    pub paths: Paths,
    /// 0: honest host; `k`: hostile host (see [`HostConfig::hostile_every`]).
    pub hostile_every: u32,
    /// The host's newest protocol version.
    pub host_max_version: u16,
    /// How long the driver waits for the host.
    pub timeout: Duration,
    /// The host implementation the emulator imitates.
    pub host_profile: HostProfile,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            interface_version: InterfaceVersion::V5,
            pings: 100_000,
            payload: 256,
            window: 16,
            ring_pages: 16,
            notifications: 20_000,
            notification_payload: 128,
            bulk_bytes: 1024 * 1024,
            bulk_rounds: 16,
            sync_requests: 2_000,
            paths: Paths::ALL,
            hostile_every: 0,
            host_max_version: protocol::MAX_VERSION,
            timeout: Duration::from_secs(5),
            host_profile: HostProfile::Default,
        }
    }
}

/// Everything [`run`] measured and checked.
#[derive(Clone, Debug)]
pub struct Report {
    /// The options of the run.
    pub options: Options,
    /// The KMCL interface version the driver negotiated.
    pub kmcl_version: Option<vmbus_kmcl::InterfaceVersion>,
    /// The echo protocol version negotiated.
    pub protocol_version: Option<u16>,
    /// The ping burst.
    pub burst: Option<BurstReport>,
    /// Round-trip times of the pings.
    pub latency: LatencySummary,
    /// Wall time of the notification phase.
    pub notify_elapsed: Duration,
    /// Wall time of the bulk phase.
    pub bulk_elapsed: Duration,
    /// Wall time of the synchronous phase.
    pub sync_elapsed: Duration,
    /// Bulk transfers skipped because the negotiated protocol lacks them.
    pub bulk_skipped: bool,
    /// The driver's counters at the end.
    pub driver: Counters,
    /// The host's statistics at the end.
    pub host: HostStats,
    /// Ring traffic and signals (from the emulator).
    pub rings: OfferCounters,
    /// The verifier's final report (after every handle was released).
    pub verifier: VerifierReport,
    /// Every expectation that did not hold.
    pub mismatches: Vec<String>,
    /// Wall time of the whole run.
    pub elapsed: Duration,
}

impl Report {
    fn new(options: &Options) -> Self {
        Self {
            options: *options,
            kmcl_version: None,
            protocol_version: None,
            burst: None,
            latency: LatencySummary::default(),
            notify_elapsed: Duration::ZERO,
            bulk_elapsed: Duration::ZERO,
            sync_elapsed: Duration::ZERO,
            bulk_skipped: false,
            driver: Counters::default(),
            host: HostStats::default(),
            rings: OfferCounters::default(),
            verifier: VerifierReport::default(),
            mismatches: Vec::new(),
            elapsed: Duration::ZERO,
        }
    }

    fn fail(&mut self, message: impl Into<String>) {
        self.mismatches.push(message.into());
    }

    fn expect_eq(&mut self, what: &str, actual: u64, expected: u64) {
        if actual != expected {
            self.fail(format!("{what}: {actual}, expected {expected}"));
        }
    }

    /// True when every expectation held and the verifier is clean.
    #[must_use]
    pub fn passed(&self) -> bool {
        self.mismatches.is_empty() && self.verifier.is_clean()
    }

    /// Host→guest and guest→host writer signals per packet written.
    #[must_use]
    pub fn signals_per_packet(&self) -> (f64, f64) {
        let ratio = |signals: u64, packets: u64| {
            if packets == 0 {
                0.0
            } else {
                signals as f64 / packets as f64
            }
        };
        (
            ratio(
                self.rings.guest_to_host.writer_signals,
                self.rings.guest_to_host.packets_written,
            ),
            ratio(
                self.rings.host_to_guest.writer_signals,
                self.rings.host_to_guest.packets_written,
            ),
        )
    }
}

/// Runs the main job with `options`; never panics, always shuts the bus down, and reports
/// every mismatch.
#[must_use]
pub fn run(options: &Options) -> Report {
    let started = Instant::now();
    let mut report = Report::new(options);
    let host = HostConfig {
        min_version: protocol::MIN_VERSION,
        max_version: options.host_max_version,
        hostile_every: options.hostile_every,
    };
    let Rig {
        bus,
        offer,
        host: control,
    } = Rig::with_profile(options.interface_version, host, options.host_profile);
    let rig_parent = offer.parent_device();
    let interface = bus.kmcl_interface();
    match interface {
        Ok(interface) => {
            report.kmcl_version = Some(interface.version());
            let config = EchoConfig {
                ring_pages: options.ring_pages,
                timeout_ns: u64::try_from(options.timeout.as_nanos()).unwrap_or(u64::MAX),
                window: options.window,
                bulk_bytes: if options.paths.bulk {
                    u32::try_from(options.bulk_bytes).unwrap_or(u32::MAX)
                } else {
                    0
                },
            };
            match SimChannel::create(&interface, rig_parent, &config) {
                Ok(mut channel) => exercise(&mut report, &mut channel, &offer, &control),
                Err(error) => report.fail(format!("creating the channel failed: {error}")),
            }
        }
        Err(status) => report.fail(format!("interface query failed: {status}")),
    }
    report.host = control.stats();
    report.rings = offer.counters();
    drop(offer);
    report.verifier = bus.shutdown();
    check(&mut report);
    report.elapsed = started.elapsed();
    report
}

/// Waits (polling every millisecond) until `done` holds or `timeout` passes; in virtual time
/// under a seeded schedule.
fn wait_for(timeout: Duration, mut done: impl FnMut() -> bool) -> bool {
    let polls = timeout.as_millis().max(1);
    for _ in 0..polls {
        if done() {
            return true;
        }
        vmbus_kmcl_sim::schedule::sleep(Duration::from_millis(1));
    }
    done()
}

/// True for the failure a hostile host's first bulk/sync answer causes.
fn is_planted_mismatch(error: &EchoError) -> bool {
    matches!(error, EchoError::Rejected(ProtocolError::PayloadMismatch))
}

fn exercise(report: &mut Report, channel: &mut SimChannel, offer: &Offer, host: &HostControl) {
    let options = report.options;
    let Some(irql) = PassiveLevel::check() else {
        return report.fail("the harness thread is not at PASSIVE_LEVEL");
    };
    let mut session = match Session::open(channel, &irql) {
        Ok(session) => session,
        Err(error) => return report.fail(format!("open failed: {error}")),
    };
    report.protocol_version = session.version().ok();
    let client = session.client();
    let hostile = options.hostile_every > 0;

    if options.paths.ping {
        let mut scratch = vec![0_u8; protocol::MAX_MESSAGE];
        client.latency().reset();
        match session.ping_burst(options.payload, options.pings, &mut scratch) {
            Ok(burst) => report.burst = Some(burst),
            Err(error) => report.fail(format!("ping burst failed: {error}")),
        }
        report.latency = client.latency().summary();
    }

    if options.paths.notify {
        let start = Instant::now();
        if let Err(error) =
            session.request_notifications(options.notifications, options.notification_payload)
        {
            report.fail(format!("notifications failed: {error}"));
        }
        report.notify_elapsed = start.elapsed();
    }

    if options.paths.bulk {
        let start = Instant::now();
        if session.version().unwrap_or(0) < protocol::VERSION_2 {
            report.bulk_skipped = true;
        } else {
            for round in 0..options.bulk_rounds {
                let seed = 0xB01C_0000_u64 + u64::from(round);
                match session.bulk(options.bulk_bytes, seed) {
                    Ok(()) => {}
                    Err(error) if hostile && round == 0 && is_planted_mismatch(&error) => {}
                    Err(error) => report.fail(format!("bulk {round} failed: {error}")),
                }
            }
        }
        report.bulk_elapsed = start.elapsed();
    }

    if options.paths.sync {
        let start = Instant::now();
        for i in 0..options.sync_requests {
            let value = u64::from(i).wrapping_mul(0x9E37_79B9_7F4A_7C15);
            match session.sync_request(value) {
                Ok(answer) if answer == protocol::sync_answer(value) => {}
                Ok(answer) => report.fail(format!("sync {i}: answer {answer:#x}")),
                Err(error) if hostile && i == 0 && is_planted_mismatch(&error) => {}
                Err(error) => report.fail(format!("sync {i} failed: {error}")),
            }
        }
        report.sync_elapsed = start.elapsed();
    }

    if hostile {
        // KMCL-level hostility: completions for transactions the guest never sent. The
        // emulated KMCL absorbs them (counted by the verifier); the driver never sees them.
        if offer.inject_completion(0xDEAD_BEEF, b"forged!!").is_err() {
            report.fail("could not inject a forged completion");
        }
        if offer.inject_completion(0, b"txid0!!!").is_err() {
            report.fail("could not inject a completion with transaction ID 0");
        }
        // The driver keeps working: one more honest-looking round trip.
        if let Err(error) = session.sync_request(42) {
            report.fail(format!("sync after hostile traffic failed: {error}"));
        }
    }

    // Every packet the host sent must have been acknowledged before the counters are read.
    let acked = wait_for(options.timeout, || {
        let s = host.stats();
        s.notifications_acked + s.hostile_acked + s.ack_mismatches
            >= s.notifications_sent + s.hostile_unsolicited
    });
    if !acked {
        report.fail("the driver did not acknowledge every host packet");
    }
    if let Err(error) = session.close() {
        report.fail(format!("close failed: {error}"));
    }
    // Final counters: the close may only have added the goodbye.
    report.driver = channel.client().counters();
    if channel.bulk_gpadl().is_some() {
        report.fail("the bulk GPADL outlived the session");
    }
    if channel.pool().in_use() != 0 {
        report.fail(format!(
            "{} pool packets still in use after close",
            channel.pool().in_use()
        ));
    }
    let platform = channel.platform();
    if report.driver.acks_completed > 0
        && (platform.worker_thread().is_none()
            || platform.worker_thread() == platform.receive_thread())
    {
        report.fail("pended host packets were not acknowledged from the worker thread");
    }
}

/// Compares the driver's and the host's accounts.
fn check(report: &mut Report) {
    let o = report.options;
    let d = report.driver;
    let h = report.host;
    if report.protocol_version.is_none() {
        return;
    }
    if o.paths.ping {
        let sent = report.burst.map_or(0, |b| b.sent);
        report.expect_eq("pings sent", sent, o.pings);
        report.expect_eq("pings answered by the host", h.pings, d.pings_sent);
        report.expect_eq("pings accounted", d.pings_ok + d.pings_failed, d.pings_sent);
        report.expect_eq("pings failed", d.pings_failed, h.corrupted_pings);
        report.expect_eq(
            "ping bytes echoed",
            d.ping_bytes_echoed,
            d.pings_ok * o.payload as u64,
        );
        report.expect_eq(
            "ping round trips recorded",
            report.latency.count,
            d.pings_ok,
        );
    }
    if o.paths.notify {
        report.expect_eq(
            "notifications accepted",
            d.notifications_ok,
            u64::from(o.notifications),
        );
        report.expect_eq(
            "notifications sent",
            h.notifications_sent,
            d.notifications_ok,
        );
        report.expect_eq(
            "notifications acknowledged",
            h.notifications_acked,
            h.notifications_sent,
        );
        report.expect_eq(
            "notification bytes",
            d.notification_bytes,
            d.notifications_ok * u64::from(o.notification_payload),
        );
    }
    if o.paths.bulk && !report.bulk_skipped {
        let rounds = u64::from(o.bulk_rounds);
        report.expect_eq(
            "bulk transfers verified",
            d.bulk_ok,
            rounds - h.hostile_bulk,
        );
        report.expect_eq("bulk transfers failed", d.bulk_failed, h.hostile_bulk);
        report.expect_eq(
            "bulk bytes verified",
            d.bulk_bytes,
            d.bulk_ok * o.bulk_bytes as u64,
        );
        report.expect_eq(
            "bulk bytes written",
            h.bulk_bytes,
            rounds * o.bulk_bytes as u64,
        );
    }
    if o.paths.sync {
        let extra = u64::from(o.hostile_every > 0);
        let total = u64::from(o.sync_requests) + extra;
        report.expect_eq("synchronous requests answered", h.sync_requests, total);
        report.expect_eq("synchronous requests ok", d.sync_ok, total - h.hostile_sync);
        report.expect_eq("synchronous requests failed", d.sync_failed, h.hostile_sync);
    }
    for reason in RejectReason::ALL {
        let injected = h.injected.get(reason.index()).copied().unwrap_or(0);
        report.expect_eq(
            &format!("rejections ({reason})"),
            d.rejected(reason),
            injected,
        );
    }
    report.expect_eq(
        "hostile packets acknowledged as rejected",
        h.hostile_acked,
        h.hostile_unsolicited,
    );
    report.expect_eq("acknowledgement mismatches", h.ack_mismatches, 0);
    report.expect_eq(
        "host packets acknowledged (pended or in the callback)",
        d.acks_pended + d.acks_inline,
        d.incoming,
    );
    report.expect_eq(
        "pended host packets completed",
        d.acks_completed,
        d.acks_pended,
    );
    report.expect_eq("pended host packets cancelled", d.acks_cancelled, 0);
    if d.incoming > 0 && d.acks_pended == 0 {
        report.fail("no host packet was pended");
    }
    if d.packets_sent > 0 && d.sends_pooled == 0 {
        report.fail("no request was sent from the packet pool");
    }
    report.expect_eq("malformed guest messages", h.guest_errors, 0);
    report.expect_eq("host send errors", h.host_errors, 0);
    report.expect_eq("send failures", d.send_failures, 0);
    report.expect_eq("failed completions", d.failed_completions, 0);
    report.expect_eq("late completions", d.late_completions, 0);
    report.expect_eq("host opens", h.opens, 1);
    report.expect_eq("host closes", h.closes, 1);
    report.expect_eq("goodbyes", h.goodbyes, 1);
    if o.hostile_every > 0 {
        let c = report.verifier.counters;
        report.expect_eq("forged completions absorbed", c.forged_completions, 1);
        report.expect_eq(
            "transaction-ID-0 completions absorbed",
            c.txid_zero_completions,
            1,
        );
    }
    if !report.verifier.is_clean() {
        report.fail(format!("verifier not clean: {}", report.verifier));
    }
}

/// `12.3 µs`, `4.56 ms`, `1.23 s`.
fn duration(ns: u64) -> String {
    let ns = ns as f64;
    if ns < 1e3 {
        format!("{ns:.0} ns")
    } else if ns < 1e6 {
        format!("{:.1} us", ns / 1e3)
    } else if ns < 1e9 {
        format!("{:.2} ms", ns / 1e6)
    } else {
        format!("{:.2} s", ns / 1e9)
    }
}

/// `n` as an English ordinal: `1st`, `2nd`, `3rd`, `4th`, `11th`, `12th`, `13th`, `21st`,
/// `22nd`, `111th`, `112th`, `123rd`.
fn ordinal(n: u64) -> String {
    let suffix = match (n % 10, n % 100) {
        (_, 11..=13) => "th",
        (1, _) => "st",
        (2, _) => "nd",
        (3, _) => "rd",
        _ => "th",
    };
    format!("{n}{suffix}")
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

fn per_second(count: u64, elapsed: Duration) -> f64 {
    let s = elapsed.as_secs_f64();
    if s > 0.0 { count as f64 / s } else { 0.0 }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let o = &self.options;
        let d = &self.driver;
        let h = &self.host;
        writeln!(
            f,
            "vmbus-echo over vmbus-kmcl-sim: bus offers KMCL {:?}, driver negotiated {}, echo protocol {}",
            o.interface_version,
            self.kmcl_version
                .map_or_else(|| "nothing".to_owned(), |v| format!("{v:?}")),
            self.protocol_version
                .map_or_else(|| "none".to_owned(), |v| format!("v{v}")),
        )?;
        writeln!(
            f,
            "  rings {} + {} pages, {} pings in flight, host {}",
            o.ring_pages,
            o.ring_pages,
            o.window,
            match o.hostile_every {
                0 => "honest".to_owned(),
                1 => "HOSTILE (every ping)".to_owned(),
                k => format!("HOSTILE (every {} ping)", ordinal(u64::from(k))),
            }
        )?;
        if o.host_profile != HostProfile::Default {
            writeln!(f, "  host profile {}", o.host_profile)?;
        }
        if o.paths.ping {
            let burst = self.burst.unwrap_or_default();
            let elapsed = Duration::from_nanos(burst.elapsed_ns);
            writeln!(
                f,
                "  ping    {} x {} B: {} ok, {} failed; {:.2} MiB echoed in {} ({:.0} pings/s, {:.2} MiB/s each way)",
                burst.sent,
                o.payload,
                burst.ok,
                burst.failed,
                mib(burst.bytes),
                duration(burst.elapsed_ns),
                per_second(burst.ok, elapsed),
                mib(burst.bytes) / elapsed.as_secs_f64().max(1e-9),
            )?;
            // No round trip recorded (`-n 0`, or every ping failed): no percentiles either.
            let time = |ns: u64| {
                if self.latency.count == 0 {
                    "n/a".to_owned()
                } else {
                    duration(ns)
                }
            };
            writeln!(
                f,
                "          round trip p50 {}, p99 {} (min {}, mean {}, max {})",
                time(self.latency.p50_ns),
                time(self.latency.p99_ns),
                time(self.latency.min_ns),
                time(self.latency.mean_ns),
                time(self.latency.max_ns),
            )?;
        }
        if o.paths.notify {
            writeln!(
                f,
                "  notify  {} x {} B: {} accepted and completed, {} acknowledged by the host, {:.2} MiB in {} ({:.0}/s)",
                o.notifications,
                o.notification_payload,
                d.notifications_ok,
                h.notifications_acked,
                mib(d.notification_bytes),
                duration(u64::try_from(self.notify_elapsed.as_nanos()).unwrap_or(u64::MAX)),
                per_second(d.notifications_ok, self.notify_elapsed),
            )?;
        }
        if o.paths.bulk {
            if self.bulk_skipped {
                writeln!(f, "  bulk    skipped: protocol v1 has no bulk transfer")?;
            } else {
                writeln!(
                    f,
                    "  bulk    {} x {} B through a GPADL: {} verified, {} failed, {:.2} MiB in {} ({:.1} MiB/s)",
                    o.bulk_rounds,
                    o.bulk_bytes,
                    d.bulk_ok,
                    d.bulk_failed,
                    mib(d.bulk_bytes),
                    duration(u64::try_from(self.bulk_elapsed.as_nanos()).unwrap_or(u64::MAX)),
                    mib(d.bulk_bytes) / self.bulk_elapsed.as_secs_f64().max(1e-9),
                )?;
            }
        }
        if o.paths.sync {
            writeln!(
                f,
                "  sync    {} requests: {} answered correctly, {} failed, in {} ({:.0}/s)",
                d.sync_ok + d.sync_failed,
                d.sync_ok,
                d.sync_failed,
                duration(u64::try_from(self.sync_elapsed.as_nanos()).unwrap_or(u64::MAX)),
                per_second(d.sync_ok + d.sync_failed, self.sync_elapsed),
            )?;
        }
        write!(
            f,
            "  rejected host messages: {} (host injected {})",
            d.rejected_total(),
            h.injected_total()
        )?;
        let mut first = true;
        for reason in RejectReason::ALL {
            let n = d.rejected(reason);
            if n > 0 {
                write!(f, "{}{reason} {n}", if first { ": " } else { ", " })?;
                first = false;
            }
        }
        writeln!(f)?;
        let (g2h, h2g) = self.signals_per_packet();
        writeln!(
            f,
            "  signals per packet: guest->host {g2h:.3} ({} signals / {} packets), host->guest {h2g:.3} ({} / {})",
            self.rings.guest_to_host.writer_signals,
            self.rings.guest_to_host.packets_written,
            self.rings.host_to_guest.writer_signals,
            self.rings.host_to_guest.packets_written,
        )?;
        let c = &self.verifier.counters;
        writeln!(
            f,
            "  verifier: {} ({} live channels, {} live packets, {} live GPADLs, {} uncompleted incoming, {} interface references, {} violations; absorbed {} forged and {} ID-0 completions)",
            if self.verifier.is_clean() {
                "clean"
            } else {
                "NOT CLEAN"
            },
            self.verifier.live_channels,
            self.verifier.live_packets,
            self.verifier.live_gpadls,
            self.verifier.uncompleted_incoming,
            self.verifier.interface_references,
            self.verifier.violations.len(),
            c.forged_completions,
            c.txid_zero_completions,
        )?;
        for mismatch in &self.mismatches {
            writeln!(f, "  MISMATCH: {mismatch}")?;
        }
        write!(
            f,
            "  result: {} in {}",
            if self.passed() { "PASS" } else { "FAIL" },
            duration(u64::try_from(self.elapsed.as_nanos()).unwrap_or(u64::MAX)),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ordinals() {
        let cases = [
            (0, "0th"),
            (1, "1st"),
            (2, "2nd"),
            (3, "3rd"),
            (4, "4th"),
            (9, "9th"),
            (10, "10th"),
            (11, "11th"),
            (12, "12th"),
            (13, "13th"),
            (14, "14th"),
            (21, "21st"),
            (22, "22nd"),
            (23, "23rd"),
            (50, "50th"),
            (101, "101st"),
            (102, "102nd"),
            (111, "111th"),
            (112, "112th"),
            (113, "113th"),
            (121, "121st"),
            (1001, "1001st"),
            (1011, "1011th"),
            (u64::MAX, "18446744073709551615th"),
        ];
        for (n, expected) in cases {
            assert_eq!(ordinal(n), expected, "{n}");
        }
    }

    #[test]
    fn host_line_uses_ordinals() {
        let mut options = Options {
            hostile_every: 2,
            ..Options::default()
        };
        let line = |options: &Options| {
            Report::new(options)
                .to_string()
                .lines()
                .nth(1)
                .unwrap_or_default()
                .to_owned()
        };
        assert!(line(&options).ends_with("host HOSTILE (every 2nd ping)"));
        options.hostile_every = 1;
        assert!(line(&options).ends_with("host HOSTILE (every ping)"));
        options.hostile_every = 0;
        assert!(line(&options).ends_with("host honest"));
    }

    #[test]
    fn no_round_trips_print_na() {
        let report = Report::new(&Options::default());
        let text = report.to_string();
        assert!(
            text.contains("round trip p50 n/a, p99 n/a (min n/a, mean n/a, max n/a)"),
            "{text}"
        );
    }
}
