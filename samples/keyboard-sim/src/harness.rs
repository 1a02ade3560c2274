//! [`Rig`] (a bus offering one host keyboard, for tests) and [`run`], the typing job behind
//! `cargo run -p vmbus-kbd-sim --release -- --text "…"`.

use std::fmt;
use std::time::{Duration, Instant};

use vmbus_kbd::client::{Counters, KbdConfig, KbdError, Keyboard};
use vmbus_kbd::protocol::{self, KeyboardInputData, Keystroke};
use vmbus_kmcl::sys::GUID;
use vmbus_kmcl::{KmclInterface, PassiveLevel};
use vmbus_kmcl_sim::{InterfaceVersion, Offer, VerifierReport, Vmbus, VmbusConfig};

use crate::host::{HostConfig, HostControl, KbdHost};
use crate::platform::SimPlatform;
use crate::typist::{self, Decoded, Untypable};

/// The keyboard offer's instance GUID (any value: the driver matches the interface type).
pub const INSTANCE: GUID = GUID {
    Data1: 0xd34b_2567,
    Data2: 0xb9b6,
    Data3: 0x42b9,
    Data4: [0x87, 0x78, 0x0a, 0x4e, 0xc0, 0xb9, 0x55, 0xbf],
};

/// How long a rig waits for something the host or the driver does.
pub const WAIT: Duration = Duration::from_secs(5);

/// Installs the emulator's IRQL model as the library's probe (`Vmbus::new` does it too; it is
/// idempotent): DISPATCH_LEVEL in packet and completion callbacks on the emulator's callback
/// threads, PASSIVE_LEVEL in state callbacks and on other threads.
pub fn install_irql_model() {
    vmbus_kmcl_sim::install_irql_model();
}

/// Polls `condition` every 200 µs until it holds or `timeout` passes (virtual time under a
/// seeded schedule).
pub fn wait_until(timeout: Duration, condition: impl Fn() -> bool) -> bool {
    let polls = timeout.as_micros() / 200;
    for _ in 0..polls.max(1) {
        if condition() {
            return true;
        }
        vmbus_kmcl_sim::schedule::sleep(Duration::from_micros(200));
    }
    condition()
}

/// A bus offering one host keyboard, and what a test needs around it.
#[derive(Debug)]
pub struct Rig {
    /// The emulated VMBus.
    pub bus: Vmbus,
    /// The keyboard's offer.
    pub offer: Offer,
    /// The host keyboard's control.
    pub host: HostControl,
    /// The driver's platform (a clone: the recording sink).
    pub platform: SimPlatform,
    /// The interface reference the driver opened with.
    pub interface: KmclInterface,
}

impl Rig {
    /// A bus offering KMCL `version` with a host keyboard behaving as `config`.
    ///
    /// # Panics
    /// If the bus refuses its own interface (an emulator bug).
    #[must_use]
    #[allow(clippy::expect_used)]
    pub fn new(version: InterfaceVersion, config: HostConfig) -> Self {
        install_irql_model();
        let bus = Vmbus::new(VmbusConfig::new(version));
        let (host, control) = KbdHost::new(config);
        let offer = bus.offer(protocol::INTERFACE_TYPE, INSTANCE, Box::new(host));
        let interface = bus
            .kmcl_interface()
            .expect("the emulator offers a KMCL interface");
        Self {
            bus,
            offer,
            host: control,
            platform: SimPlatform::new(),
            interface,
        }
    }

    /// Opens the keyboard on the current offer (this thread must be at PASSIVE_LEVEL).
    ///
    /// # Errors
    /// As [`Keyboard::open`]; [`KbdError::NotReady`] if this thread is not at PASSIVE_LEVEL.
    pub fn open(&self) -> Result<Keyboard<SimPlatform>, KbdError> {
        self.open_with(&KbdConfig::DEFAULT)
    }

    /// Opens the keyboard with `config`.
    ///
    /// # Errors
    /// As [`Rig::open`].
    pub fn open_with(&self, config: &KbdConfig) -> Result<Keyboard<SimPlatform>, KbdError> {
        let irql = PassiveLevel::check().ok_or(KbdError::NotReady)?;
        Keyboard::open(
            &irql,
            &self.interface,
            self.offer.parent_device(),
            config,
            self.platform.clone(),
        )
    }

    /// The host offers the keyboard again (after a rescind): a new offer with a new host
    /// device behaving as `config`, as Hyper-V does when a VM's keyboard comes back.
    pub fn reoffer(&mut self, config: HostConfig) {
        let (host, control) = KbdHost::new(config);
        self.offer = self
            .bus
            .offer(protocol::INTERFACE_TYPE, INSTANCE, Box::new(host));
        self.host = control;
    }

    /// Waits until the sink holds `count` records.
    #[must_use]
    pub fn wait_records(&self, count: usize) -> bool {
        wait_until(WAIT, || self.platform.record_count() >= count)
    }

    /// Closes `keyboard`, drops the interface reference and returns the verifier's report.
    ///
    /// # Panics
    /// If this thread is not at PASSIVE_LEVEL.
    #[must_use]
    #[allow(clippy::expect_used)]
    pub fn finish(self, keyboard: Option<Keyboard<SimPlatform>>) -> VerifierReport {
        let irql = PassiveLevel::check().expect("a PASSIVE_LEVEL thread");
        if let Some(keyboard) = keyboard {
            keyboard.close(&irql);
        }
        let Self { bus, interface, .. } = self;
        drop(interface);
        bus.shutdown()
    }
}

/// What [`run`] does.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Options {
    /// The text the host types.
    pub text: String,
    /// The KMCL interface the bus offers.
    pub version: InterfaceVersion,
    /// The LED flags sent after typing.
    pub leds: u16,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            text: "Hello, World! 123".to_owned(),
            version: InterfaceVersion::V5,
            leds: protocol::KEYBOARD_CAPS_LOCK_ON | protocol::KEYBOARD_NUM_LOCK_ON,
        }
    }
}

/// What [`run`] found.
#[derive(Debug)]
pub struct Report {
    /// The options.
    pub options: Options,
    /// The KMCL version the driver negotiated.
    pub negotiated: String,
    /// The host's events.
    pub keystrokes: Vec<Keystroke>,
    /// What the sink (kbdclass) received.
    pub records: Vec<KeyboardInputData>,
    /// True when `records` are exactly the translation of `keystrokes`.
    pub records_match: bool,
    /// The decoder's result.
    pub decoded: Decoded,
    /// LED messages the host saw.
    pub host_leds: Vec<u16>,
    /// The driver's counters at the end.
    pub counters: Counters,
    /// Deliveries to kbdclass that did not run at DISPATCH_LEVEL.
    pub deliveries_off_dispatch: u64,
    /// The verifier's report after close.
    pub verifier: VerifierReport,
    /// Wall time.
    pub elapsed: Duration,
    /// Why the run failed, if it did before the end.
    pub failure: Option<String>,
}

impl Report {
    /// True when the text came back exactly, every record matched, nothing was rejected or
    /// lost, the LEDs reached the host, and the verifier is clean.
    #[must_use]
    pub fn passed(&self) -> bool {
        self.failure.is_none()
            && self.records_match
            && self.decoded.text == self.options.text
            && self.decoded.consistent()
            && self.counters.rejected_total() == 0
            && self.counters.consumer_dropped == 0
            && self.deliveries_off_dispatch == 0
            && self.host_leds == [self.options.leds & protocol::LED_MASK]
            && self.verifier.is_clean()
            && self.verifier.counters.host_device_panics == 0
    }
}

/// Runs the typing job: opens the keyboard over the emulator, has the host type
/// `options.text` ([`typist::type_with_edit`]), waits for every record, sets the LEDs, closes,
/// and checks everything.
///
/// # Errors
/// [`Untypable`] when the text has a character without a key (nothing runs).
pub fn run(options: &Options) -> Result<Report, Untypable> {
    let keystrokes = typist::type_with_edit(&options.text)?;
    let expected = typist::expected_records(&keystrokes);
    let start = Instant::now();
    let rig = Rig::new(options.version, HostConfig::HONEST);
    let negotiated = format!("{:?}", rig.interface.version());
    let mut failure = None;
    let mut keyboard = None;
    match rig.open() {
        Ok(opened) => keyboard = Some(opened),
        Err(error) => failure = Some(format!("open failed: {error}")),
    }
    if let Some(keyboard) = &keyboard {
        rig.host.type_keystrokes(&keystrokes);
        if !rig.wait_records(expected.len()) {
            failure = Some(format!(
                "kbdclass received {} of {} records",
                rig.platform.record_count(),
                expected.len()
            ));
        }
        match keyboard.set_indicators(options.leds) {
            Ok(()) => {
                if !wait_until(WAIT, || !rig.host.leds().is_empty()) {
                    failure.get_or_insert_with(|| "the host saw no LED message".to_owned());
                }
            }
            Err(error) => {
                failure.get_or_insert_with(|| format!("LED update failed: {error}"));
            }
        }
    }
    let records = rig.platform.records();
    let deliveries_off_dispatch = rig.platform.deliveries_off_dispatch();
    let host_leds = rig.host.leds();
    let counters = keyboard
        .as_ref()
        .map(|k| k.client().counters())
        .unwrap_or_default();
    let verifier = rig.finish(keyboard);
    let decoded = typist::decode(&records);
    Ok(Report {
        options: options.clone(),
        negotiated,
        records_match: records == expected,
        keystrokes,
        records,
        decoded,
        host_leds,
        counters,
        deliveries_off_dispatch,
        verifier,
        elapsed: start.elapsed(),
        failure,
    })
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let shifted = self
            .keystrokes
            .iter()
            .filter(|k| k.make_code == typist::LEFT_SHIFT && k.info & protocol::INFO_BREAK == 0)
            .count();
        let e0 = self
            .keystrokes
            .iter()
            .filter(|k| k.info & protocol::INFO_E0 != 0 && k.info & protocol::INFO_BREAK == 0)
            .count();
        writeln!(
            f,
            "vmbus-kbd over vmbus-kmcl-sim: bus offers KMCL {:?}, driver negotiated {}, keyboard protocol 1.0 {}",
            self.options.version,
            self.negotiated,
            if self.counters.protocol_responses > 0 {
                "accepted"
            } else {
                "not accepted"
            },
        )?;
        writeln!(
            f,
            "  host typed  {:?}: {} events ({} shifted, {} E0 keys; edited with Home/End)",
            self.options.text,
            self.keystrokes.len(),
            shifted,
            e0,
        )?;
        writeln!(
            f,
            "  kbdclass received {} KEYBOARD_INPUT_DATA (make code, + make / - break):",
            self.records.len()
        )?;
        for row in self.records.chunks(12) {
            let line: Vec<String> = row.iter().map(typist::short).collect();
            writeln!(f, "    {}", line.join(" "))?;
        }
        writeln!(
            f,
            "  records match the host's events: {}",
            if self.records_match { "yes" } else { "NO" }
        )?;
        writeln!(f, "  decoded     {:?}", self.decoded.text)?;
        writeln!(
            f,
            "  decoder: {} unhandled, {} unbalanced breaks, {} keys stuck down",
            self.decoded.unhandled, self.decoded.unbalanced_breaks, self.decoded.stuck_keys
        )?;
        writeln!(
            f,
            "  LEDs: driver sent {:#06x}, host saw {:?}",
            self.options.leds & protocol::LED_MASK,
            self.host_leds
        )?;
        let c = &self.counters;
        writeln!(
            f,
            "  driver: {} packets in, {} keystrokes, {} delivered ({} not at DISPATCH_LEVEL), {} dropped by the consumer, {} unicode dropped, {} rejected",
            c.incoming,
            c.events,
            c.delivered,
            self.deliveries_off_dispatch,
            c.consumer_dropped,
            c.unicode_dropped,
            c.rejected_total()
        )?;
        let v = &self.verifier;
        writeln!(
            f,
            "  verifier: {} ({} live channels, {} live packets, {} live GPADLs, {} uncompleted incoming, {} interface references, {} violations, {} host device panics)",
            if v.is_clean() { "clean" } else { "NOT CLEAN" },
            v.live_channels,
            v.live_packets,
            v.live_gpadls,
            v.uncompleted_incoming,
            v.interface_references,
            v.violations.len(),
            v.counters.host_device_panics,
        )?;
        if !v.is_clean() {
            writeln!(f, "{v}")?;
        }
        if let Some(failure) = &self.failure {
            writeln!(f, "  failure: {failure}")?;
        }
        write!(
            f,
            "  result: {} in {:.2?}",
            if self.passed() { "PASS" } else { "FAIL" },
            self.elapsed
        )
    }
}
