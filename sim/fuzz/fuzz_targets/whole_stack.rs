//! Whole-stack fuzzing: the fuzz input is the host's behaviour and the schedule, the guest is
//! the echo sample's client (`vmbus_echo::client`) over the safe layer (`vmbus_kmcl`) over the
//! emulated KMCL.
//!
//! The input decodes (with `arbitrary`) into a [`Script`]: a schedule seed (the first 8 bytes,
//! little-endian), a bus configuration and up to [`MAX_STEPS`] steps, run strictly in order on
//! this thread. A step is a guest operation (open, ping, ping burst, notifications, bulk, sync,
//! pause, resume, close, a new channel), a host action (any in-band payload, structured echo
//! messages with chosen fields, raw ring packets of any type/flags/length/transaction ID,
//! completions that are forged, duplicated, late or for ID 0, stalls, rescinds and re-offers,
//! ring-index corruption, emulated KMCL faults), or a guest operation with host actions fired
//! from a second thread while it waits for the host.
//!
//! Determinism: the whole script (bus creation, every step, close, shutdown) runs inside
//! `vmbus_kmcl_sim::schedule::run(seed, …)`. The emulator's threads, the guest's ack worker and
//! the second thread of a `During` step all take part in the schedule (started inside the run,
//! the latter two with `schedule::spawn`), and the guest's clock and waits are virtual (the
//! [`SchedPlatform`] below replaces the echo sample's `StdPlatform`, which uses `Instant` and
//! real condition-variable waits, and its `std::thread` ack worker). So an input is one
//! interleaving: running it again gives the same `Run::trace_hash`.
//! `WHOLE_STACK_CHECK_DETERMINISM=1` runs every input twice and aborts if the two trace hashes
//! (or step counts, or virtual times) differ.
//!
//! Findings (each aborts the process, so libFuzzer saves the input; the schedule seed is
//! printed with each):
//! - a panic anywhere (libFuzzer's panic hook aborts even on threads that would catch it);
//! - a guest-attributed verifier violation, a violation no bus could be blamed for, or an
//!   emulator-internal error, at any step boundary or at the end;
//! - a leak: the verifier not clean after the channel was closed and dropped and the bus was
//!   shut down (host-caused counters such as forged completions are expected and ignored);
//! - a scheduler finding (`Run::finding`): a deadlock (every thread waiting without a
//!   deadline), a hang (10 minutes of virtual time, or 2,000,000 switch points), or threads
//!   still running when the script returned;
//! - a run past [`VIRTUAL_BUDGET`] of virtual time (seen by the guest's ack worker; reached in
//!   seconds, where the scheduler's own 10 minutes take tens of seconds of real time);
//! - as a last resort, an input exceeding [`WATCHDOG`] of real time (a thread blocked outside
//!   the scheduler; a watchdog thread prints the step and aborts).
#![no_main]

use std::ops::{Deref, DerefMut};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use libfuzzer_sys::arbitrary::{self, Arbitrary};
use libfuzzer_sys::fuzz_target;
use vmbus_echo::client::{self, EchoChannel, EchoClient, EchoConfig, Platform, Session};
use vmbus_echo::protocol;
use vmbus_echo_sim::harness::INSTANCE;
use vmbus_echo_sim::{EchoHost, HostConfig};
use vmbus_kmcl::{ChannelRef, KmclInterface, ParentDevice, PassiveLevel};
use vmbus_kmcl_sim::{
    HostProfile, InterfaceVersion, Offer, RawPacket, Slot, Vmbus, VmbusConfig, schedule, scope,
    unattributed_violations,
};

/// Steps per input at most.
const MAX_STEPS: usize = 24;
/// Bytes of an arbitrary payload at most (beyond the echo protocol's maximum message).
const MAX_BYTES: usize = 4200;

// ---------------------------------------------------------------------------------------------
// The script.

#[derive(Arbitrary, Debug)]
struct Script {
    /// The seed of the schedule the whole script runs under (`schedule::run`).
    schedule_seed: u64,
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

#[derive(Arbitrary, Debug, Clone)]
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

#[derive(Arbitrary, Debug, Clone)]
enum Payload {
    Bytes(Vec<u8>),
    Message(Message),
}

/// An echo protocol message with every header field chosen.
#[derive(Arbitrary, Debug, Clone)]
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

#[derive(Arbitrary, Debug, Clone)]
enum Body {
    /// `n` pattern bytes seeded by the sequence number (as the host's notifications carry).
    Pattern(u16),
    Bytes(Vec<u8>),
}

// ---------------------------------------------------------------------------------------------
// The watchdog: a last resort against a hang the scheduler cannot see (a thread blocked outside
// the emulator's switch points, or a run given up after a finding that then blocks for real).

/// Real time an input may take (one execution; the determinism check arms it again for the
/// second). Below CI's libFuzzer `-timeout=60`, so the watchdog reports first, with the seed and
/// the step. A run under a schedule never sleeps for real: a normal input takes well under a
/// second even under AddressSanitizer.
const WATCHDOG: Duration = Duration::from_secs(50);

struct Watchdog {
    /// Milliseconds since `origin` after which the process aborts; 0 = disarmed.
    deadline_ms: AtomicU64,
    /// The schedule seed of the input being run.
    seed: AtomicU64,
    /// What runs now (the step).
    what: std::sync::Mutex<String>,
    origin: Instant,
}

fn watchdog() -> &'static Watchdog {
    static WATCHDOG_STATE: OnceLock<&'static Watchdog> = OnceLock::new();
    WATCHDOG_STATE.get_or_init(|| {
        let dog: &'static Watchdog = Box::leak(Box::new(Watchdog {
            deadline_ms: AtomicU64::new(0),
            seed: AtomicU64::new(0),
            what: std::sync::Mutex::new(String::new()),
            origin: Instant::now(),
        }));
        // Outside every schedule (it never touches the emulator): it only reads the clock.
        std::thread::spawn(move || {
            loop {
                std::thread::sleep(Duration::from_millis(200));
                let deadline = dog.deadline_ms.load(Ordering::Acquire);
                let now = u64::try_from(dog.origin.elapsed().as_millis()).unwrap_or(u64::MAX);
                if deadline != 0 && now > deadline {
                    let what = dog.what.lock().map(|w| w.clone()).unwrap_or_default();
                    eprintln!(
                        "whole_stack: HANG (real time): input exceeded {WATCHDOG:?} (a thread \
                         blocked outside the scheduler, or a hang the scheduler has not \
                         reported yet); schedule seed {}; at {what}",
                        dog.seed.load(Ordering::Relaxed)
                    );
                    std::process::abort();
                }
            }
        });
        dog
    })
}

/// Arms the watchdog for one execution of an input.
fn arm_watchdog(seed: u64) {
    let dog = watchdog();
    dog.seed.store(seed, Ordering::Relaxed);
    note_step("bus setup".to_owned());
    let deadline = dog.origin.elapsed() + WATCHDOG;
    let ms = u64::try_from(deadline.as_millis())
        .unwrap_or(u64::MAX)
        .max(1);
    dog.deadline_ms.store(ms, Ordering::Release);
}

fn disarm_watchdog() {
    watchdog().deadline_ms.store(0, Ordering::Release);
}

/// Records what the input runs now, for the watchdog's message.
fn note_step(what: String) {
    if let Ok(mut w) = watchdog().what.lock() {
        *w = what;
    }
}

/// The schedule seed of the input being run (for the messages of findings).
fn current_seed() -> u64 {
    watchdog().seed.load(Ordering::Relaxed)
}

// ---------------------------------------------------------------------------------------------
// The guest's platform under a schedule: virtual clock, waits and ack worker.

/// Granularity of the guest's waits, and the ack worker's first polling interval, in virtual
/// time.
const QUANTUM: Duration = Duration::from_millis(1);
/// The ack worker's polling interval doubles after this many polls without work, so that a
/// long stall costs few switch points …
const WORKER_BACKOFF_AFTER: u32 = 20;
/// … up to this interval, well below the shortest guest timeout (20 ms), which the guest's
/// notification request also waits for the acknowledgements. A signal resets it to
/// [`QUANTUM`]. (`vmbus_echo_sim::StdPlatform`'s worker also polls the queue every 20 ms as a
/// safety net; here no signal can be lost: `acks_queued` sets a flag the worker swaps.)
const WORKER_MAX_POLL: Duration = Duration::from_millis(8);
/// Virtual time after which a run is a hang finding, as seen by the ack worker (whose sleeps
/// add up to the virtual time since it started). No script comes near it: 24 steps, each
/// bounded by a few guest timeouts (at most 83 ms each) or a 2 s drain. The scheduler's own
/// limit (`schedule::HANG_LIMIT`, 10 min) is reached too, but only after tens of seconds of
/// real time, since every emulator thread wakes every 20 ms of virtual time.
const VIRTUAL_BUDGET: Duration = Duration::from_secs(120);

/// The echo client's [`Platform`] for a run under a schedule. Unlike the sample's
/// `StdPlatform` (an `Instant` clock, a condition variable, a `std::thread` worker), nothing
/// here blocks outside the scheduler: a wait is a series of `schedule::sleep(QUANTUM)` that
/// stops as soon as the event is signalled, and the clock counts the virtual time the guest
/// spent in those waits. Flags are atomics, so no lock is held across a switch point.
#[derive(Debug, Default)]
struct SchedPlatform {
    /// Virtual nanoseconds the guest waited so far.
    clock_ns: AtomicU64,
    /// The event (`prepare_wait` clears it, `notify` sets it).
    signalled: AtomicBool,
    /// `acks_queued` was called since the worker last looked.
    queued: AtomicBool,
    /// The worker must not complete anything.
    held: AtomicBool,
    /// The worker must exit.
    stop: AtomicBool,
}

impl Platform for SchedPlatform {
    fn now_ns(&self) -> u64 {
        self.clock_ns.load(Ordering::Acquire)
    }

    fn prepare_wait(&self) {
        self.signalled.store(false, Ordering::SeqCst);
    }

    fn notify(&self) {
        self.signalled.store(true, Ordering::SeqCst);
    }

    fn wait(&self, timeout_ns: u64) {
        let quantum = QUANTUM.as_nanos() as u64;
        let mut left = timeout_ns;
        while left > 0 && !self.signalled.load(Ordering::SeqCst) {
            let slice = left.min(quantum);
            schedule::sleep(Duration::from_nanos(slice));
            self.clock_ns.fetch_add(slice, Ordering::AcqRel);
            left -= slice;
        }
    }

    fn acks_queued(&self) {
        self.queued.store(true, Ordering::Release);
    }
}

/// The thread that acknowledges pended host packets (the driver's work item), started with
/// `schedule::spawn` so that it takes part in the schedule. Dropping it stops and joins it.
#[derive(Debug)]
struct AckWorker {
    channel: ChannelRef<EchoClient<SchedPlatform>>,
    thread: Option<schedule::JoinHandle<()>>,
}

impl AckWorker {
    fn start(channel: ChannelRef<EchoClient<SchedPlatform>>) -> std::io::Result<Self> {
        let worker = channel.clone();
        let thread = schedule::spawn("echo-ack-worker", move || ack_work(&worker))?;
        Ok(Self {
            channel,
            thread: Some(thread),
        })
    }
}

fn ack_work(channel: &ChannelRef<EchoClient<SchedPlatform>>) {
    let client = channel.handler();
    let platform = client.platform();
    let mut poll = QUANTUM;
    let mut idle = 0_u32;
    let mut slept = Duration::ZERO;
    while !platform.stop.load(Ordering::Acquire) {
        let held = platform.held.load(Ordering::Acquire);
        if !held && platform.queued.swap(false, Ordering::AcqRel) {
            scope::as_driver(|| client.complete_acks());
            poll = QUANTUM;
            idle = 0;
            continue;
        }
        schedule::sleep(poll);
        slept += poll;
        if slept > VIRTUAL_BUDGET && schedule::is_scheduled() {
            let what = watchdog()
                .what
                .lock()
                .map(|w| w.clone())
                .unwrap_or_default();
            eprintln!(
                "whole_stack: HANG: more than {VIRTUAL_BUDGET:?} of virtual time passed; \
                 schedule seed {}; at {what}",
                current_seed()
            );
            std::process::abort();
        }
        idle = idle.saturating_add(1);
        if idle >= WORKER_BACKOFF_AFTER && poll < WORKER_MAX_POLL {
            poll = (poll * 2).min(WORKER_MAX_POLL);
            idle = 0;
        }
    }
}

impl Drop for AckWorker {
    fn drop(&mut self) {
        self.channel
            .handler()
            .platform()
            .stop
            .store(true, Ordering::Release);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// The echo channel with its ack worker, as `vmbus_echo_sim::SimChannel` but over
/// [`SchedPlatform`]. Dereferences to the [`EchoChannel`]; dropping it stops the worker, then
/// tears the channel down.
#[derive(Debug)]
struct SchedChannel {
    /// Dropped first: the worker lets go of its channel reference before the teardown.
    _worker: AckWorker,
    echo: EchoChannel<SchedPlatform>,
}

impl SchedChannel {
    fn create(
        irql: &PassiveLevel,
        interface: &KmclInterface,
        parent: ParentDevice,
        config: &EchoConfig,
    ) -> Option<Self> {
        let echo =
            client::create_channel(irql, interface, parent, config, SchedPlatform::default())
                .ok()?;
        let worker = AckWorker::start(echo.new_ref()).ok()?;
        Some(Self {
            _worker: worker,
            echo,
        })
    }

    fn platform(&self) -> &SchedPlatform {
        self.echo.client().platform()
    }
}

impl Deref for SchedChannel {
    type Target = EchoChannel<SchedPlatform>;
    fn deref(&self) -> &Self::Target {
        &self.echo
    }
}

impl DerefMut for SchedChannel {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.echo
    }
}

// ---------------------------------------------------------------------------------------------
// The run.

struct Run {
    /// Shared with the second thread of a `During` step.
    bus: Arc<Vmbus>,
    offer: Offer,
    /// Every earlier offer (rescinded), kept until the bus shuts down.
    old_offers: Vec<Offer>,
    host: HostConfig,
    config: EchoConfig,
    channel: Option<SchedChannel>,
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
    fn new(script: &Script, irql: &PassiveLevel) -> Self {
        let version =
            pick(&InterfaceVersion::ALL, script.interface).unwrap_or(InterfaceVersion::V5);
        let profile = pick(&HostProfile::ALL, script.profile).unwrap_or_default();
        let host = HostConfig {
            min_version: protocol::MIN_VERSION,
            max_version: u16::from(script.host_max_version % 4),
            hostile_every: u32::from(script.hostile_every % 8),
        };
        let bus = Arc::new(Vmbus::new(
            VmbusConfig::new(version).with_host_profile(profile),
        ));
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
            seen: Vec::new(),
        };
        run.new_channel(irql);
        run
    }

    fn make_offer(bus: &Vmbus, host: HostConfig) -> Offer {
        let (device, _control) = EchoHost::new(host);
        bus.offer(protocol::INTERFACE_TYPE, INSTANCE, Box::new(device))
    }

    /// Drops the guest's channel (if any) and creates a new one on the current offer. Creation
    /// may fail (an injected fault, a rescinded offer): the guest then has no channel.
    fn new_channel(&mut self, irql: &PassiveLevel) {
        self.channel = None;
        if let Ok(interface) = self.bus.kmcl_interface() {
            self.channel =
                SchedChannel::create(irql, &interface, self.offer.parent_device(), &self.config);
        }
    }

    fn note_pending(&mut self) {
        for txid in self.offer.pending_guest_transactions() {
            if !self.seen.contains(&txid) && self.seen.len() < 64 {
                self.seen.push(txid);
            }
        }
    }

    fn guest(&mut self, op: GuestOp, irql: &PassiveLevel) {
        if let GuestOp::NewChannel = op {
            self.new_channel(irql);
        } else {
            guest_op(self.channel.as_mut(), op, irql);
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
    fn host(&mut self, action: &HostAction, irql: &PassiveLevel) {
        if let HostAction::Reoffer = action {
            self.offer.rescind();
            self.channel = None;
            let old = core::mem::replace(&mut self.offer, Self::make_offer(&self.bus, self.host));
            self.old_offers.push(old);
            return self.new_channel(irql);
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

    /// A guest operation with host actions fired from a second thread (taking part in the
    /// schedule) once the guest has a request waiting for the host, once the operation ended,
    /// or once the guest waited its timeout, whichever comes first.
    fn during(&mut self, op: GuestOp, actions: &[HostAction], irql: &PassiveLevel) {
        // A re-offer replaces the channel under the guest: not allowed concurrently.
        let actions: Vec<HostAction> = actions
            .iter()
            .filter(|a| !matches!(a, HostAction::Reoffer))
            .take(8)
            .cloned()
            .collect();
        let timeout = self.config.timeout_ns;
        let bus = Arc::clone(&self.bus);
        let offer = self.offer.clone();
        let seen = self.seen.clone();
        // The guest's clock (virtual time it waited), if it has a channel.
        let clock = self.channel.as_ref().map(|c| c.new_ref());
        let done = Arc::new(AtomicBool::new(false));
        let finished = Arc::clone(&done);
        let host = schedule::spawn("during-host", move || {
            let now = || {
                clock
                    .as_ref()
                    .map_or(0, |c| c.handler().platform().now_ns())
            };
            let start = now();
            while offer.pending_guest_transactions().is_empty()
                && !finished.load(Ordering::Acquire)
                && now().saturating_sub(start) < timeout
            {
                schedule::yield_now();
            }
            drop(clock);
            for action in &actions {
                Self::host_shared(&bus, &offer, &seen, action);
            }
        });
        guest_op(self.channel.as_mut(), op, irql);
        done.store(true, Ordering::Release);
        if let Ok(host) = host {
            let _ = host.join();
        }
    }

    /// `WHOLE_STACK_TRACE`: what a step did (the guest's negotiated version and counters).
    fn trace_step(&self, index: usize, step: &Step) {
        let state = self.channel.as_ref().map_or_else(
            || "no channel".to_owned(),
            |c| {
                let client = c.client();
                format!(
                    "enabled {} version {:?} {:?}",
                    c.is_enabled(),
                    client.negotiated_version(),
                    client.counters()
                )
            },
        );
        eprintln!("whole_stack step {index} {}: {state}", step_kind(step));
    }

    /// Fails the run unless the verifier has no violation (leaks are checked at the end).
    fn check_violations(&self, when: &str) {
        let report = self.bus.verifier();
        assert!(
            report.violations.is_empty() && report.counters.internal_errors == 0,
            "whole_stack: guest violation {when} (schedule seed {}):\n{report}",
            current_seed()
        );
        let stray = unattributed_violations();
        assert!(
            stray.is_empty(),
            "whole_stack: unattributed violations {when} (schedule seed {}): {stray:?}",
            current_seed()
        );
    }

    /// Closes what is open, drops the channel and the offers, shuts the bus down and checks
    /// the final report.
    fn finish(mut self, irql: &PassiveLevel) {
        self.offer.stall(false);
        if let Some(channel) = self.channel.as_mut() {
            channel.platform().held.store(false, Ordering::Release);
            guest_op(Some(channel), GuestOp::Close, irql);
        }
        self.channel = None;
        self.check_violations("at close");
        drop(self.offer);
        drop(self.old_offers);
        let Ok(bus) = Arc::try_unwrap(self.bus) else {
            unreachable!("whole_stack: the bus is shared after every step ended");
        };
        let report = bus.shutdown();
        let leaks = report.live_channels
            + report.live_packets
            + report.live_gpadls
            + report.uncompleted_incoming;
        assert!(
            leaks == 0 && report.interface_references == 0 && report.violations.is_empty(),
            "whole_stack: verifier not clean after shutdown (schedule seed {}):\n{report}",
            current_seed()
        );
        let stray = unattributed_violations();
        assert!(
            stray.is_empty(),
            "whole_stack: unattributed violations at shutdown (schedule seed {}): {stray:?}",
            current_seed()
        );
    }
}

/// One guest operation on the channel (none: nothing to do). `NewChannel` is handled by
/// [`Run::guest`]. Sends on a paused channel are made like any others: the safe layer refuses
/// them from the start of a pause until KMCL reports the channel started again
/// (`tests/soundness.rs::sends_are_refused_while_paused`).
fn guest_op(channel: Option<&mut SchedChannel>, op: GuestOp, irql: &PassiveLevel) {
    let Some(channel) = channel else { return };
    let payload = |len: u16| usize::from(len) % (protocol::MAX_PAYLOAD + 8);
    match op {
        GuestOp::Open => {
            let _ = Session::open(channel, irql);
        }
        GuestOp::HoldAcks(held) => channel.platform().held.store(held, Ordering::Release),
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
                    let _ = session.pause();
                }
                GuestOp::Resume => {
                    let _ = session.resume();
                }
                GuestOp::Close => {
                    let _ = session.close();
                }
                GuestOp::Open | GuestOp::NewChannel | GuestOp::HoldAcks(_) => {}
            }
        }
    }
}

/// True when the environment variable `name` is set (read once).
fn env_flag(name: &'static str, cell: &'static OnceLock<bool>) -> bool {
    *cell.get_or_init(|| std::env::var_os(name).is_some())
}

/// `WHOLE_STACK_TRACE`: print each input's decoded script and its run (seed, trace hash, switch
/// points, virtual time).
fn trace() -> bool {
    static CELL: OnceLock<bool> = OnceLock::new();
    env_flag("WHOLE_STACK_TRACE", &CELL)
}

/// `WHOLE_STACK_KINDS`: print one line with the schedule seed and the kind of every step of
/// each input, and run nothing (to survey a corpus, e.g. when choosing seeds).
fn kinds_only() -> bool {
    static CELL: OnceLock<bool> = OnceLock::new();
    env_flag("WHOLE_STACK_KINDS", &CELL)
}

/// `WHOLE_STACK_CHECK_DETERMINISM`: run each input twice and abort unless both runs have the
/// same trace hash, switch points and virtual time.
fn check_determinism() -> bool {
    static CELL: OnceLock<bool> = OnceLock::new();
    env_flag("WHOLE_STACK_CHECK_DETERMINISM", &CELL)
}

fn guest_kind(op: &GuestOp) -> &'static str {
    match op {
        GuestOp::Open => "Open",
        GuestOp::Ping { .. } => "Ping",
        GuestOp::Burst { .. } => "Burst",
        GuestOp::Notifications { .. } => "Notifications",
        GuestOp::Bulk { .. } => "Bulk",
        GuestOp::Sync { .. } => "Sync",
        GuestOp::Pause => "Pause",
        GuestOp::Resume => "Resume",
        GuestOp::Close => "Close",
        GuestOp::NewChannel => "NewChannel",
        GuestOp::HoldAcks(_) => "HoldAcks",
    }
}

fn host_kind(action: &HostAction) -> &'static str {
    match action {
        HostAction::Send { .. } => "Send",
        HostAction::Message { .. } => "Message",
        HostAction::SendExternal { .. } => "SendExternal",
        HostAction::Raw { .. } => "Raw",
        HostAction::Completion { .. } => "Completion",
        HostAction::Stall(_) => "Stall",
        HostAction::Rescind => "Rescind",
        HostAction::Reoffer => "Reoffer",
        HostAction::CorruptIncomingWriteIndex(_) => "CorruptIncomingWriteIndex",
        HostAction::CorruptOutgoingReadIndex(_) => "CorruptOutgoingReadIndex",
        HostAction::FailNth { .. } => "FailNth",
        HostAction::CompletionStatus(_) => "CompletionStatus",
        HostAction::DeferExternal(_) => "DeferExternal",
    }
}

/// A step's kind: `Guest:Ping`, `Host:Raw`, `During:Sync[Completion,Stall]`.
fn step_kind(step: &Step) -> String {
    match step {
        Step::Guest(op) => format!("Guest:{}", guest_kind(op)),
        Step::Host(action) => format!("Host:{}", host_kind(action)),
        Step::During(op, actions) => {
            let actions: Vec<&str> = actions.iter().map(host_kind).collect();
            format!("During:{}[{}]", guest_kind(op), actions.join(","))
        }
    }
}

/// Runs the whole script once under its seeded schedule.
fn execute(script: &Script, irql: &PassiveLevel) -> schedule::Run<()> {
    let _ = unattributed_violations();
    arm_watchdog(script.schedule_seed);
    let result = schedule::run(script.schedule_seed, || {
        let mut run = Run::new(script, irql);
        for (index, step) in script.steps.iter().take(MAX_STEPS).enumerate() {
            if !schedule::is_scheduled() {
                // The scheduler gave up (a deadlock or a hang, reported in `Run::finding`):
                // stop here, leaving everything as it is, and report it.
                std::mem::forget(run);
                return;
            }
            note_step(format!("step {index}: {}", step_kind(step)));
            match step {
                Step::Guest(op) => run.guest(*op, irql),
                Step::Host(action) => run.host(action, irql),
                Step::During(op, actions) => run.during(*op, actions, irql),
            }
            run.note_pending();
            if trace() {
                run.trace_step(index, step);
            }
            run.check_violations(&format!("after step {index}"));
        }
        if !schedule::is_scheduled() {
            std::mem::forget(run);
            return;
        }
        note_step("close and bus shutdown".to_owned());
        run.finish(irql);
    });
    disarm_watchdog();
    if let Some(finding) = &result.finding {
        eprintln!(
            "whole_stack: SCHEDULE FINDING (schedule seed {}, {} switch points, {:?} virtual \
             time): {finding}",
            result.seed, result.steps, result.virtual_time
        );
        std::process::abort();
    }
    result
}

/// Prints the schedule seed before libFuzzer's panic hook aborts.
fn install_seed_hook() {
    static ONCE: OnceLock<()> = OnceLock::new();
    ONCE.get_or_init(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            eprintln!(
                "whole_stack: panic under schedule seed {} (replay: run this input)",
                current_seed()
            );
            previous(info);
        }));
    });
}

fuzz_target!(|script: Script| {
    if kinds_only() {
        let kinds: Vec<String> = script.steps.iter().take(MAX_STEPS).map(step_kind).collect();
        eprintln!(
            "whole_stack kinds: seed {} steps {}: {}",
            script.schedule_seed,
            kinds.len(),
            kinds.join(" ")
        );
        return;
    }
    if trace() {
        eprintln!("whole_stack script: {script:#?}");
    }
    install_seed_hook();
    let Some(irql) = PassiveLevel::check() else {
        return;
    };
    let first = execute(&script, &irql);
    if trace() {
        eprintln!(
            "whole_stack run: schedule seed {} trace hash {:#018x} switch points {} virtual time \
             {:?}",
            first.seed, first.trace_hash, first.steps, first.virtual_time
        );
    }
    if check_determinism() {
        let second = execute(&script, &irql);
        let same = (first.trace_hash, first.steps, first.virtual_time)
            == (second.trace_hash, second.steps, second.virtual_time);
        if !same {
            eprintln!(
                "whole_stack: NONDETERMINISTIC replay of schedule seed {}: trace hash {:#018x} / \
                 {:#018x}, switch points {} / {}, virtual time {:?} / {:?}",
                first.seed,
                first.trace_hash,
                second.trace_hash,
                first.steps,
                second.steps,
                first.virtual_time,
                second.virtual_time
            );
            std::process::abort();
        }
    }
});
