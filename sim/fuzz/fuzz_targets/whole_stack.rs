//! Whole-stack fuzzing: the fuzz input is the host's behaviour, the guest is the echo sample's
//! client (`vmbus_echo::client`) over the safe layer (`vmbus_kmcl`) over the emulated KMCL.
//!
//! The input decodes (with `arbitrary`) into a [`Script`]: a bus configuration and up to
//! [`MAX_STEPS`] steps, run strictly in order on this thread. A step is a guest operation
//! (open, ping, ping burst, notifications, bulk, sync, pause, resume, close, a new channel), a
//! host action (any in-band payload, structured echo messages with chosen fields, raw ring
//! packets of any type/flags/length/transaction ID, completions that are forged, duplicated,
//! late or for ID 0, stalls, rescinds and re-offers, ring-index corruption, emulated KMCL
//! faults), or a guest operation with host actions fired while it waits for the host.
//!
//! Findings (each aborts the process, so libFuzzer saves the input):
//! - a panic anywhere (libFuzzer's panic hook aborts even on threads that would catch it);
//! - a guest-attributed verifier violation, a violation no bus could be blamed for, or an
//!   emulator-internal error, at any step boundary or at the end;
//! - a leak: the verifier not clean after the channel was closed and dropped and the bus was
//!   shut down (host-caused counters such as forged completions are expected and ignored);
//! - a hang: a step (or the close and shutdown) exceeding its deadline (the watchdog thread
//!   aborts with the step's description).
//!
//! Determinism: the script is fixed by the input and every step runs to completion (bounded)
//! before the next starts. What remains nondeterministic is the emulator's threads (the host
//! device thread, the guest's callback and ack-worker threads): whether a host packet arrives
//! before or after a guest timeout under load, and the interleaving of the actions of a
//! `During` step with the guest's request. A crash found under one interleaving may need a few
//! replays (`-runs=N` on the artifact) to reproduce.
#![no_main]

use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use libfuzzer_sys::arbitrary::{self, Arbitrary};
use libfuzzer_sys::fuzz_target;
use vmbus_echo::client::{EchoConfig, Session};
use vmbus_echo::protocol;
use vmbus_echo_sim::harness::INSTANCE;
use vmbus_echo_sim::{EchoHost, HostConfig, SimChannel};
use vmbus_kmcl::PassiveLevel;
use vmbus_kmcl_sim::{
    HostProfile, InterfaceVersion, Offer, RawPacket, Slot, VerifierReport, Violation,
    ViolationKind, Vmbus, VmbusConfig, unattributed_violations,
};

/// Steps per input at most.
const MAX_STEPS: usize = 24;
/// Bytes of an arbitrary payload at most (beyond the echo protocol's maximum message).
const MAX_BYTES: usize = 4200;

// ---------------------------------------------------------------------------------------------
// The script.

#[derive(Arbitrary, Debug)]
struct Script {
    /// KMCL interface version offered: V1..=V5 (modulo 5).
    interface: u8,
    /// Host profile: Default, HyperV, OpenVmm (modulo 3).
    profile: u8,
    /// Host's newest echo protocol version (0..=3: below, at and above the guest's range).
    host_max_version: u8,
    /// The VSP's own hostility (`HostConfig::hostile_every`, 0 = honest; modulo 8).
    hostile_every: u8,
    /// Ring pages each way: 2..=9.
    ring_pages: u8,
    /// Guest timeout in milliseconds: 20..=83.
    timeout_ms: u8,
    /// Pings in flight at most during a burst: 1..=8.
    window: u8,
    /// Bulk buffer: 0 (none) or 1..=16 pages.
    bulk_pages: u8,
    steps: Vec<Step>,
}

#[derive(Arbitrary, Debug)]
enum Step {
    Guest(GuestOp),
    Host(HostAction),
    /// The guest operation runs here; the host actions run on a second thread once the guest has
    /// a request waiting for the host (or after the guest timeout), in order.
    During(GuestOp, Vec<HostAction>),
}

#[derive(Arbitrary, Debug, Clone, Copy)]
enum GuestOp {
    Open,
    Ping {
        len: u16,
    },
    Burst {
        count: u8,
        len: u16,
    },
    Notifications {
        count: u8,
        len: u16,
    },
    Bulk {
        len: u32,
        seed: u64,
    },
    Sync {
        value: u64,
    },
    Pause,
    Resume,
    Close,
    /// Drops the channel (stopping its worker, disabling it) and creates a new one on the
    /// current offer.
    NewChannel,
    /// Holds or releases the guest's ack worker.
    HoldAcks(bool),
}

#[derive(Arbitrary, Debug)]
enum HostAction {
    /// An in-band packet with arbitrary bytes.
    Send {
        bytes: Vec<u8>,
        completion: bool,
    },
    /// An in-band echo message with chosen header fields.
    Message {
        msg: Message,
        completion: bool,
    },
    /// A GPA-direct packet with host external data.
    SendExternal {
        payload: Vec<u8>,
        external: Vec<u8>,
        completion: bool,
    },
    /// A raw ring packet: any type, flags, offsets, lengths and transaction ID.
    Raw {
        packet_type: u16,
        flags: u16,
        txid: TxId,
        offset8: Option<u16>,
        len8: Option<u16>,
        header: Vec<u8>,
        payload: Vec<u8>,
    },
    /// A completion packet.
    Completion {
        txid: TxId,
        payload: Payload,
    },
    Stall(bool),
    Rescind,
    /// Rescinds the current offer (if not yet) and offers the interface again with a fresh VSP;
    /// the guest drops its channel and creates one on the new offer.
    Reoffer,
    CorruptIncomingWriteIndex(u32),
    CorruptOutgoingReadIndex(u32),
    /// KMCL fault: the `n`-th next call of a slot fails with `status`.
    FailNth {
        slot: u8,
        n: u8,
        status: u32,
    },
    /// KMCL fault: completions of guest requests carry this status (`None`: clear).
    CompletionStatus(Option<u32>),
    /// KMCL fault: hand external data of GPA-direct packets over later.
    DeferExternal(bool),
}

/// Which transaction ID a completion or raw packet carries.
#[derive(Arbitrary, Debug, Clone, Copy)]
enum TxId {
    /// The `i`-th (modulo) guest request now waiting for its completion (or 1 if none).
    Pending(u8),
    /// The `i`-th (modulo) guest transaction ID seen earlier in this run: duplicate or late.
    Seen(u8),
    Zero,
    Value(u64),
}

#[derive(Arbitrary, Debug)]
enum Payload {
    Bytes(Vec<u8>),
    Message(Message),
}

/// An echo protocol message with every header field chosen.
#[derive(Arbitrary, Debug)]
struct Message {
    good_magic: bool,
    version: u8,
    /// 1..=14 are defined types, others are not.
    message_type: u8,
    flags: u8,
    /// `None`: the true payload length.
    payload_len: Option<u16>,
    sequence: Sequence,
    body: Body,
}

#[derive(Arbitrary, Debug, Clone, Copy)]
enum Sequence {
    /// The next notification sequence number the guest expects, if it counts from 1.
    Next(u8),
    /// The sequence of the `i`-th (modulo) pending guest request.
    Pending(u8),
    Value(u64),
}

#[derive(Arbitrary, Debug)]
enum Body {
    /// `n` pattern bytes seeded by the sequence number (as the host's notifications carry).
    Pattern(u16),
    Bytes(Vec<u8>),
}

// ---------------------------------------------------------------------------------------------
// The watchdog: every step runs under a deadline.

struct Watchdog {
    /// Milliseconds since `origin` after which the process aborts; 0 = disarmed.
    deadline_ms: AtomicU64,
    what: std::sync::Mutex<String>,
    origin: Instant,
}

fn watchdog() -> &'static Watchdog {
    static WATCHDOG: OnceLock<&'static Watchdog> = OnceLock::new();
    WATCHDOG.get_or_init(|| {
        let dog: &'static Watchdog = Box::leak(Box::new(Watchdog {
            deadline_ms: AtomicU64::new(0),
            what: std::sync::Mutex::new(String::new()),
            origin: Instant::now(),
        }));
        std::thread::spawn(move || {
            loop {
                std::thread::sleep(Duration::from_millis(50));
                let deadline = dog.deadline_ms.load(Ordering::Acquire);
                let now = u64::try_from(dog.origin.elapsed().as_millis()).unwrap_or(u64::MAX);
                if deadline != 0 && now > deadline {
                    let what = dog.what.lock().map(|w| w.clone()).unwrap_or_default();
                    eprintln!("whole_stack: HANG: step exceeded its deadline: {what}");
                    std::process::abort();
                }
            }
        });
        dog
    })
}

/// Runs `f` under a deadline of `budget`; exceeding it aborts the process (a hang finding).
fn bounded<R>(budget: Duration, what: impl FnOnce() -> String, f: impl FnOnce() -> R) -> R {
    let dog = watchdog();
    if let Ok(mut w) = dog.what.lock() {
        *w = what();
    }
    let deadline = dog.origin.elapsed() + budget;
    let ms = u64::try_from(deadline.as_millis())
        .unwrap_or(u64::MAX)
        .max(1);
    dog.deadline_ms.store(ms, Ordering::Release);
    let result = f();
    dog.deadline_ms.store(0, Ordering::Release);
    result
}

// ---------------------------------------------------------------------------------------------
// The run.

struct Run {
    bus: Vmbus,
    offer: Offer,
    /// Every earlier offer (rescinded), kept until the bus shuts down.
    old_offers: Vec<Offer>,
    host: HostConfig,
    config: EchoConfig,
    channel: Option<SimChannel>,
    /// The host rescinded an offer in this run.
    rescinded: bool,
    /// The harness paused the channel (see [`avoid_paused_sends`]).
    paused: bool,
    /// Guest transaction IDs seen waiting for a completion.
    seen: Vec<u64>,
}

fn pick<T: Copy>(items: &[T], i: u8) -> Option<T> {
    if items.is_empty() {
        None
    } else {
        items.get(usize::from(i) % items.len()).copied()
    }
}

impl Run {
    fn new(script: &Script) -> Self {
        let version =
            pick(&InterfaceVersion::ALL, script.interface).unwrap_or(InterfaceVersion::V5);
        let profile = pick(&HostProfile::ALL, script.profile).unwrap_or_default();
        let host = HostConfig {
            min_version: protocol::MIN_VERSION,
            max_version: u16::from(script.host_max_version % 4),
            hostile_every: u32::from(script.hostile_every % 8),
        };
        let bus = Vmbus::new(VmbusConfig::new(version).with_host_profile(profile));
        let offer = Self::make_offer(&bus, host);
        let config = EchoConfig {
            ring_pages: u32::from(script.ring_pages % 8) + 2,
            timeout_ns: (u64::from(script.timeout_ms % 64) + 20) * 1_000_000,
            window: u32::from(script.window % 8) + 1,
            bulk_bytes: u32::from(script.bulk_pages % 17) * 4096,
        };
        let mut run = Self {
            bus,
            offer,
            old_offers: Vec::new(),
            host,
            config,
            channel: None,
            paused: false,
            rescinded: false,
            seen: Vec::new(),
        };
        run.new_channel();
        run
    }

    fn make_offer(bus: &Vmbus, host: HostConfig) -> Offer {
        let (device, _control) = EchoHost::new(host);
        bus.offer(protocol::INTERFACE_TYPE, INSTANCE, Box::new(device))
    }

    fn timeout(&self) -> Duration {
        Duration::from_nanos(self.config.timeout_ns)
    }

    /// Drops the guest's channel (if any) and creates a new one on the current offer. Creation
    /// may fail (an injected fault, a rescinded offer): the guest then has no channel.
    fn new_channel(&mut self) {
        self.channel = None;
        self.paused = false;
        if let Ok(interface) = self.bus.kmcl_interface() {
            self.channel =
                SimChannel::create(&interface, self.offer.parent_device(), &self.config).ok();
        }
    }

    fn note_pending(&mut self) {
        self.rescinded |= self.offer.is_rescinded();
        for txid in self.offer.pending_guest_transactions() {
            if !self.seen.contains(&txid) && self.seen.len() < 64 {
                self.seen.push(txid);
            }
        }
    }

    fn guest(&mut self, op: GuestOp, irql: &PassiveLevel) {
        if let GuestOp::NewChannel = op {
            self.new_channel();
        } else {
            guest_op(self.channel.as_mut(), &mut self.paused, op, irql);
        }
    }

    /// Resolves a transaction ID choice.
    fn txid(offer: &Offer, seen: &[u64], choice: TxId) -> u64 {
        match choice {
            TxId::Pending(i) => pick(&offer.pending_guest_transactions(), i).unwrap_or(1),
            TxId::Seen(i) => pick(seen, i).unwrap_or(2),
            TxId::Zero => 0,
            TxId::Value(v) => v,
        }
    }

    /// Encodes an echo message.
    fn message(offer: &Offer, msg: &Message) -> Vec<u8> {
        let sequence = match msg.sequence {
            Sequence::Next(k) => u64::from(k % 4) + 1,
            Sequence::Pending(i) => {
                // The harness does not see the sequence numbers inside the guest's requests;
                // a pending transaction ID is a cheap guess that the fuzzer can refine.
                pick(&offer.pending_guest_transactions(), i).unwrap_or(1)
            }
            Sequence::Value(v) => v,
        };
        let body = match &msg.body {
            Body::Pattern(n) => {
                let mut body = vec![0_u8; usize::from(*n) % (protocol::MAX_PAYLOAD + 8)];
                protocol::fill_pattern(&mut body, sequence, 0);
                body
            }
            Body::Bytes(bytes) => bytes.iter().copied().take(MAX_BYTES).collect(),
        };
        let len = msg
            .payload_len
            .map_or(u32::try_from(body.len()).unwrap_or(u32::MAX), u32::from);
        let magic = if msg.good_magic {
            protocol::MAGIC
        } else {
            protocol::MAGIC ^ 0x20
        };
        let mut out = Vec::with_capacity(protocol::HEADER_SIZE + body.len());
        out.extend_from_slice(&magic.to_le_bytes());
        out.extend_from_slice(&u16::from(msg.version % 4).to_le_bytes());
        out.extend_from_slice(&u16::from(msg.message_type % 16).to_le_bytes());
        out.extend_from_slice(&u32::from(msg.flags % 4).to_le_bytes());
        out.extend_from_slice(&len.to_le_bytes());
        out.extend_from_slice(&sequence.to_le_bytes());
        out.extend_from_slice(&body);
        out
    }

    /// One host action. Needs `&mut self` only for a re-offer (which replaces the channel).
    fn host(&mut self, action: &HostAction) {
        if let HostAction::Reoffer = action {
            self.offer.rescind();
            self.rescinded = true;
            self.channel = None;
            let old = core::mem::replace(&mut self.offer, Self::make_offer(&self.bus, self.host));
            self.old_offers.push(old);
            return self.new_channel();
        }
        Self::host_shared(&self.bus, &self.offer, &self.seen, action);
    }

    /// A host action that leaves the guest's channel in place (runs on any thread).
    fn host_shared(bus: &Vmbus, offer: &Offer, seen: &[u64], action: &HostAction) {
        let cap = |bytes: &[u8]| bytes.iter().copied().take(MAX_BYTES).collect::<Vec<u8>>();
        match action {
            HostAction::Send { bytes, completion } => {
                let _ = offer.host_send(&cap(bytes), *completion);
            }
            HostAction::Message { msg, completion } => {
                let _ = offer.host_send(&Self::message(offer, msg), *completion);
            }
            HostAction::SendExternal {
                payload,
                external,
                completion,
            } => {
                let _ = offer.host_send_external(&cap(payload), &cap(external), *completion);
            }
            HostAction::Raw {
                packet_type,
                flags,
                txid,
                offset8,
                len8,
                header,
                payload,
            } => {
                let raw = RawPacket {
                    packet_type: *packet_type,
                    flags: *flags,
                    transaction_id: Self::txid(offer, seen, *txid),
                    offset8: *offset8,
                    len8: *len8,
                    header: header.iter().copied().take(256).collect(),
                    payload: cap(payload),
                };
                let _ = offer.inject_raw_packet(&raw);
            }
            HostAction::Completion { txid, payload } => {
                let bytes = match payload {
                    Payload::Bytes(bytes) => cap(bytes),
                    Payload::Message(msg) => Self::message(offer, msg),
                };
                let _ = offer.inject_completion(Self::txid(offer, seen, *txid), &bytes);
            }
            HostAction::Stall(on) => offer.stall(*on),
            HostAction::Rescind => offer.rescind(),
            HostAction::CorruptIncomingWriteIndex(v) => {
                let _ = offer.corrupt_incoming_write_index(*v);
            }
            HostAction::CorruptOutgoingReadIndex(v) => {
                let _ = offer.corrupt_outgoing_read_index(*v);
            }
            HostAction::FailNth { slot, n, status } => {
                if let Some(slot) = pick(&Slot::ALL, *slot) {
                    // Only failure statuses: KMCL never fails a call with a success code.
                    let status = i32::from_ne_bytes((status | 0xC000_0000).to_ne_bytes());
                    let _ = bus.faults().fail_nth(slot, u32::from(*n % 4) + 1, status);
                }
            }
            HostAction::CompletionStatus(status) => {
                let status = status.map(|s| i32::from_ne_bytes((s | 0xC000_0000).to_ne_bytes()));
                bus.faults().completion_status(status);
            }
            HostAction::DeferExternal(on) => bus.faults().defer_external_data(*on),
            HostAction::Reoffer => {}
        }
    }

    /// A guest operation with host actions fired while it waits.
    fn during(&mut self, op: GuestOp, actions: &[HostAction], irql: &PassiveLevel) {
        // A re-offer replaces the channel under the guest: not allowed concurrently.
        let actions: Vec<&HostAction> = actions
            .iter()
            .filter(|a| !matches!(a, HostAction::Reoffer))
            .take(8)
            .collect();
        let timeout = self.timeout();
        let Self {
            bus,
            offer,
            seen,
            channel,
            paused,
            ..
        } = self;
        let (bus, offer, seen) = (&*bus, &*offer, &*seen);
        let done = AtomicBool::new(false);
        std::thread::scope(|scope| {
            let done = &done;
            scope.spawn(move || {
                let start = Instant::now();
                while offer.pending_guest_transactions().is_empty()
                    && !done.load(Ordering::Acquire)
                    && start.elapsed() < timeout
                {
                    std::thread::sleep(Duration::from_micros(200));
                }
                for action in actions {
                    Self::host_shared(bus, offer, seen, action);
                }
            });
            guest_op(channel.as_mut(), paused, op, irql);
            done.store(true, Ordering::Release);
        });
    }

    /// The report's violations, less the known host-race finding (see [`known_host_race`]).
    fn guest_violations(&self, report: &VerifierReport) -> usize {
        count_guest_violations(report, self.rescinded || self.offer.is_rescinded())
    }

    /// Fails the run unless the verifier has no violation (leaks are checked at the end).
    fn check_violations(&self, when: &str) {
        let report = self.bus.verifier();
        assert!(
            self.guest_violations(&report) == 0 && report.counters.internal_errors == 0,
            "whole_stack: guest violation {when}:\n{report}"
        );
        let stray = unattributed_violations();
        assert!(
            stray.is_empty(),
            "whole_stack: unattributed violations {when}: {stray:?}"
        );
    }

    /// Closes what is open, drops the channel and the offers, shuts the bus down and checks
    /// the final report.
    fn finish(mut self, irql: &PassiveLevel) {
        self.offer.stall(false);
        if let Some(channel) = self.channel.as_mut() {
            channel.platform().hold_acks(false);
            guest_op(Some(channel), &mut self.paused, GuestOp::Close, irql);
        }
        self.channel = None;
        self.check_violations("at close");
        drop(self.offer);
        drop(self.old_offers);
        let rescinded = self.rescinded;
        let report = self.bus.shutdown();
        let leaks = report.live_channels
            + report.live_packets
            + report.live_gpadls
            + report.uncompleted_incoming;
        assert!(
            leaks == 0
                && report.interface_references == 0
                && count_guest_violations(&report, rescinded) == 0,
            "whole_stack: verifier not clean after shutdown:\n{report}"
        );
        let stray = unattributed_violations();
        assert!(
            stray.is_empty(),
            "whole_stack: unattributed violations at shutdown: {stray:?}"
        );
    }
}

/// One guest operation on the channel (none: nothing to do). `NewChannel` is handled by
/// [`Run::guest`].
fn guest_op(channel: Option<&mut SimChannel>, paused: &mut bool, op: GuestOp, irql: &PassiveLevel) {
    let Some(channel) = channel else { return };
    let sends = matches!(
        op,
        GuestOp::Ping { .. }
            | GuestOp::Burst { .. }
            | GuestOp::Notifications { .. }
            | GuestOp::Bulk { .. }
            | GuestOp::Sync { .. }
    );
    if *paused && sends && avoid_paused_sends() {
        return;
    }
    let payload = |len: u16| usize::from(len) % (protocol::MAX_PAYLOAD + 8);
    match op {
        GuestOp::Open => {
            if Session::open(channel, irql).is_ok() {
                *paused = false;
            }
        }
        GuestOp::HoldAcks(held) => channel.platform().hold_acks(held),
        GuestOp::NewChannel => {}
        op => {
            let Ok(mut session) = Session::attach(channel, irql) else {
                return;
            };
            let mut scratch = vec![0_u8; protocol::MAX_MESSAGE];
            match op {
                GuestOp::Ping { len } => {
                    let _ = session.ping(payload(len), &mut scratch);
                }
                GuestOp::Burst { count, len } => {
                    let _ = session.ping_burst(payload(len), u64::from(count % 32), &mut scratch);
                }
                GuestOp::Notifications { count, len } => {
                    let _ =
                        session.request_notifications(u32::from(count % 16), u32::from(len) % 4200);
                }
                GuestOp::Bulk { len, seed } => {
                    let _ = session.bulk((len % (80 * 1024)) as usize, seed);
                }
                GuestOp::Sync { value } => {
                    let _ = session.sync_request(value);
                }
                GuestOp::Pause => {
                    if session.pause().is_ok() {
                        *paused = true;
                    }
                }
                GuestOp::Resume => {
                    if session.resume().is_ok() {
                        *paused = false;
                    }
                }
                GuestOp::Close => {
                    // The goodbye is a send: a paused channel is resumed first, as a driver
                    // leaving D3 would.
                    if *paused && avoid_paused_sends() {
                        let _ = session.resume();
                    }
                    *paused = false;
                    let _ = session.close();
                }
                GuestOp::Open | GuestOp::NewChannel | GuestOp::HoldAcks(_) => {}
            }
        }
    }
}

/// Violations the guest is blamed for, less the known host race when the host rescinded an
/// offer in this run (see [`known_host_race`]).
fn count_guest_violations(report: &VerifierReport, rescinded: bool) -> usize {
    report
        .violations
        .iter()
        .filter(|v| !(rescinded && known_host_race(v)))
        .count()
}

/// Known finding: a rescind racing `Session::open` can close the channel between the version
/// exchange and the bulk GPADL, and `VmbChannelCreateGpadlFromBuffer` on the Closing channel is
/// reported as the guest's `WrongState`, although the guest cannot see the rescind coming. Not
/// counted after a rescind unless `WHOLE_STACK_STRICT=1`.
fn known_host_race(v: &Violation) -> bool {
    static STRICT: OnceLock<bool> = OnceLock::new();
    let strict = *STRICT.get_or_init(|| std::env::var_os("WHOLE_STACK_STRICT").is_some());
    !strict
        && v.kind == ViolationKind::WrongState
        && v.slot == "VmbChannelCreateGpadlFromBuffer"
        && v.message.contains("Closing")
}

/// Fixed finding: the safe layer used to let the echo client send on a paused channel
/// (`VmbPacketSend` in state Paused, a `SendOnDisabledChannel` violation). Sends are now refused
/// from the start of a pause until KMCL reports the channel started again
/// (`tests/soundness.rs::sends_are_refused_while_paused`), so the harness sends while paused
/// like any driver would.
fn avoid_paused_sends() -> bool {
    false
}

/// True when `WHOLE_STACK_TRACE` is set: each input's decoded script is printed (for replaying
/// an artifact or choosing seeds).
fn trace() -> bool {
    static TRACE: OnceLock<bool> = OnceLock::new();
    *TRACE.get_or_init(|| std::env::var_os("WHOLE_STACK_TRACE").is_some())
}

fuzz_target!(|script: Script| {
    if trace() {
        eprintln!("whole_stack script: {script:#?}");
    }
    let Some(irql) = PassiveLevel::check() else {
        return;
    };
    let _ = unattributed_violations();
    // Generous for a loaded 2-core machine under ASan: a step's own waits are bounded by a few
    // guest timeouts (a burst, a close waiting for its goodbye and for acks).
    let budget = Duration::from_secs(20);
    let mut run = bounded(budget, || "bus setup".to_owned(), || Run::new(&script));
    for (index, step) in script.steps.iter().take(MAX_STEPS).enumerate() {
        bounded(
            budget,
            || format!("step {index}: {step:?}"),
            || match step {
                Step::Guest(op) => run.guest(*op, &irql),
                Step::Host(action) => run.host(action),
                Step::During(op, actions) => run.during(*op, actions, &irql),
            },
        );
        run.note_pending();
        run.check_violations(&format!("after step {index}"));
    }
    bounded(
        budget,
        || "close and bus shutdown".to_owned(),
        || run.finish(&irql),
    );
});
