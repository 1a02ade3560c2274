//! The driver's VMBus logic, portable: the [`EchoClient`] channel handler (receive and
//! completion paths, counters) and the [`Session`] operations (open with version negotiation,
//! ping, notifications, GPADL bulk transfer, synchronous request, close).
//!
//! Everything here takes a queried [`KmclInterface`] and a [`ParentDevice`], so the same code
//! runs in the KMDF driver (interface from `WdfFdoQueryForInterface`, parent = the FDO) and over
//! the emulator (interface from `Vmbus::query_interface`, parent = the offer's device object).
//!
//! Nothing here allocates. Blocking waits go through the [`Platform`] the driver supplies
//! (a `KEVENT` in the kernel, a condition variable on a host).
//!
//! ## Concurrency
//! Callbacks run on KMCL's DPCs, possibly concurrently. Per-request state lives in a fixed table
//! of [`SLOTS`] slots of atomics; the packet context of each request is its slot index. A slot
//! moves `FREE → RESERVED → PENDING/ASYNC → DONE → FREE`; a waiter that times out marks it
//! `ABANDONED` and the late completion frees it.

use core::pin::Pin;
use core::sync::atomic::{
    AtomicBool, AtomicI32, AtomicU8, AtomicU16, AtomicU32, AtomicU64, Ordering,
};
use core::time::Duration;

use vmbus_kmcl::{
    Channel, ChannelConfig, ChannelHandler, Completion, GpadlFlags, IncomingPacket, KmclInterface,
    NtStatus, ParentDevice, ProcessPacketFlags, SendFlags,
};
use zerocopy::little_endian::{U16, U32, U64};

use crate::protocol::{
    self, BulkRequest, BulkResponse, MessageType, NotificationAck, NotifyRequest, NotifyResponse,
    ProtocolError, RejectReason, StatusBody, SyncRequest, SyncResponse, VersionRequest,
    VersionResponse,
};
use crate::stats::LatencyHistogram;

/// Requests in flight at most (ping window plus blocking requests).
pub const SLOTS: usize = 64;

/// What the client needs from its environment: a monotonic clock and a wait/notify pair.
///
/// `notify` is called from KMCL callbacks (IRQL ≤ DISPATCH_LEVEL) after client state changed;
/// `wait` is called at PASSIVE_LEVEL by a thread waiting for such a change. Waits may return
/// early (spuriously); the client re-checks its condition and bounds each wait, so a
/// notification that races with the start of a wait costs at most one wait slice.
pub trait Platform: Sync {
    /// Monotonic time in nanoseconds (any origin). IRQL: any.
    fn now_ns(&self) -> u64;

    /// Arms the event: a `notify` after this makes the next `wait` return. IRQL: PASSIVE_LEVEL.
    fn prepare_wait(&self);

    /// Wakes waiters. IRQL: ≤ DISPATCH_LEVEL.
    fn notify(&self);

    /// Blocks until notified or `timeout_ns` elapsed. IRQL: PASSIVE_LEVEL.
    fn wait(&self, timeout_ns: u64);
}

/// Longest single wait; conditions are re-checked at least this often.
const WAIT_SLICE_NS: u64 = 10_000_000;

/// Settings of an echo channel and its session.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EchoConfig {
    /// Ring size in 4 KiB pages, each direction (≥ 2: a ring must hold a maximum-size message).
    pub ring_pages: u32,
    /// How long a blocking operation waits for the host, in nanoseconds.
    pub timeout_ns: u64,
    /// Pings in flight at most during [`Session::ping_burst`] (1..=[`SLOTS`] - 4).
    pub window: u32,
}

impl EchoConfig {
    /// 16 ring pages each way, 5 s timeout, 16 pings in flight.
    pub const DEFAULT: Self = Self {
        ring_pages: 16,
        timeout_ns: 5_000_000_000,
        window: 16,
    };
}

impl Default for EchoConfig {
    fn default() -> Self {
        Self::DEFAULT
    }
}

/// Why an echo operation failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EchoError {
    /// A KMCL call failed with this status.
    Kmcl(NtStatus),
    /// The host's response failed validation (also counted in
    /// [`Counters::rejected`]).
    Rejected(ProtocolError),
    /// The request completed with this failure status (e.g. `STATUS_CANCELLED` when the channel
    /// closed with it in flight).
    Completion(NtStatus),
    /// The host did not answer within [`EchoConfig::timeout_ns`].
    Timeout,
    /// No session: the channel is not open or no version was negotiated.
    NotOpen,
    /// The host closed (rescinded) the channel.
    HostClosed,
    /// The host speaks no version in `MIN_VERSION..=MAX_VERSION`; `host` is its newest.
    NoCommonVersion {
        /// The host's newest version.
        host: u16,
    },
    /// The operation needs a newer protocol version than the one negotiated.
    NotSupported,
    /// An argument is out of range (payload too large, scratch buffer too small, empty bulk
    /// buffer, zero count).
    InvalidArgument,
    /// Every request slot is in use.
    Busy,
}

impl EchoError {
    /// The NTSTATUS to report to WDF or user mode.
    #[must_use]
    pub fn status(self) -> NtStatus {
        match self {
            Self::Kmcl(status) | Self::Completion(status) => status,
            Self::Rejected(_) => NtStatus(0xC000_0185_u32 as i32), // STATUS_IO_DEVICE_ERROR
            Self::Timeout => NtStatus(0xC000_00B5_u32 as i32),     // STATUS_IO_TIMEOUT
            Self::NotOpen => NtStatus::INVALID_DEVICE_STATE,
            Self::HostClosed => NtStatus::DEVICE_REMOVED,
            Self::NoCommonVersion { .. } | Self::NotSupported => NtStatus::NOT_SUPPORTED,
            Self::InvalidArgument => NtStatus::INVALID_PARAMETER,
            Self::Busy => NtStatus(0x8000_0011_u32 as i32), // STATUS_DEVICE_BUSY
        }
    }
}

impl From<NtStatus> for EchoError {
    fn from(status: NtStatus) -> Self {
        Self::Kmcl(status)
    }
}

impl From<ProtocolError> for EchoError {
    fn from(error: ProtocolError) -> Self {
        Self::Rejected(error)
    }
}

impl core::fmt::Display for EchoError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Self::Kmcl(status) => write!(f, "KMCL call failed: {status}"),
            Self::Rejected(error) => write!(f, "host message rejected: {error}"),
            Self::Completion(status) => write!(f, "request completed with {status}"),
            Self::Timeout => f.write_str("timed out waiting for the host"),
            Self::NotOpen => f.write_str("no open echo session"),
            Self::HostClosed => f.write_str("the host closed the channel"),
            Self::NoCommonVersion { host } => write!(f, "no common version (host speaks {host})"),
            Self::NotSupported => f.write_str("not supported by the negotiated version"),
            Self::InvalidArgument => f.write_str("invalid argument"),
            Self::Busy => f.write_str("no free request slot"),
        }
    }
}

impl core::error::Error for EchoError {}

/// A snapshot of the client's counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counters {
    /// Packets handed to KMCL successfully (every request kind).
    pub packets_sent: u64,
    /// Sends KMCL refused.
    pub send_failures: u64,
    /// Pings sent.
    pub pings_sent: u64,
    /// Pings whose echo came back intact.
    pub pings_ok: u64,
    /// Pings whose completion failed or was rejected.
    pub pings_failed: u64,
    /// Ping payload bytes sent.
    pub ping_bytes_sent: u64,
    /// Ping payload bytes echoed back intact.
    pub ping_bytes_echoed: u64,
    /// Packets the host sent (the receive path), valid or not.
    pub incoming: u64,
    /// Notifications accepted (valid, in order) and completed.
    pub notifications_ok: u64,
    /// Payload bytes of accepted notifications.
    pub notification_bytes: u64,
    /// Notify requests the host accepted.
    pub notify_requests_ok: u64,
    /// Bulk transfers verified.
    pub bulk_ok: u64,
    /// Bulk transfers that failed.
    pub bulk_failed: u64,
    /// Bytes of verified bulk transfers.
    pub bulk_bytes: u64,
    /// Synchronous requests answered correctly.
    pub sync_ok: u64,
    /// Synchronous requests that failed.
    pub sync_failed: u64,
    /// Completions with a failure status (cancelled at close, removed at rescind).
    pub failed_completions: u64,
    /// Completions that arrived after their waiter gave up.
    pub late_completions: u64,
    /// Host messages rejected, by [`RejectReason::index`].
    pub rejected: [u64; RejectReason::COUNT],
}

impl Counters {
    /// Rejections of every reason.
    #[must_use]
    pub fn rejected_total(&self) -> u64 {
        self.rejected.iter().sum()
    }

    /// Rejections of `reason`.
    #[must_use]
    pub fn rejected(&self, reason: RejectReason) -> u64 {
        self.rejected.get(reason.index()).copied().unwrap_or(0)
    }
}

/// The live counters (atomics), see [`Counters`] for their meaning.
#[derive(Default)]
struct LiveCounters {
    packets_sent: AtomicU64,
    send_failures: AtomicU64,
    pings_sent: AtomicU64,
    pings_ok: AtomicU64,
    pings_failed: AtomicU64,
    ping_bytes_sent: AtomicU64,
    ping_bytes_echoed: AtomicU64,
    incoming: AtomicU64,
    notifications_ok: AtomicU64,
    notification_bytes: AtomicU64,
    notify_requests_ok: AtomicU64,
    bulk_ok: AtomicU64,
    bulk_failed: AtomicU64,
    bulk_bytes: AtomicU64,
    sync_ok: AtomicU64,
    sync_failed: AtomicU64,
    failed_completions: AtomicU64,
    late_completions: AtomicU64,
    rejected: [AtomicU64; RejectReason::COUNT],
}

fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

fn add(counter: &AtomicU64, value: u64) {
    counter.fetch_add(value, Ordering::Relaxed);
}

fn read(counter: &AtomicU64) -> u64 {
    counter.load(Ordering::Relaxed)
}

impl LiveCounters {
    fn snapshot(&self) -> Counters {
        let mut rejected = [0; RejectReason::COUNT];
        for (out, live) in rejected.iter_mut().zip(&self.rejected) {
            *out = read(live);
        }
        Counters {
            packets_sent: read(&self.packets_sent),
            send_failures: read(&self.send_failures),
            pings_sent: read(&self.pings_sent),
            pings_ok: read(&self.pings_ok),
            pings_failed: read(&self.pings_failed),
            ping_bytes_sent: read(&self.ping_bytes_sent),
            ping_bytes_echoed: read(&self.ping_bytes_echoed),
            incoming: read(&self.incoming),
            notifications_ok: read(&self.notifications_ok),
            notification_bytes: read(&self.notification_bytes),
            notify_requests_ok: read(&self.notify_requests_ok),
            bulk_ok: read(&self.bulk_ok),
            bulk_failed: read(&self.bulk_failed),
            bulk_bytes: read(&self.bulk_bytes),
            sync_ok: read(&self.sync_ok),
            sync_failed: read(&self.sync_failed),
            failed_completions: read(&self.failed_completions),
            late_completions: read(&self.late_completions),
            rejected,
        }
    }

    fn reject(&self, error: &ProtocolError) {
        if let Some(counter) = self.rejected.get(error.reason().index()) {
            bump(counter);
        }
    }
}

/// Slot states.
const FREE: u8 = 0;
/// Taken by a sender, not yet sent.
const RESERVED: u8 = 1;
/// Sent; a waiter collects the outcome.
const PENDING: u8 = 2;
/// Sent; the completion routine finishes it (pings of a burst).
const ASYNC: u8 = 3;
/// Completed; the outcome is ready for the waiter.
const DONE: u8 = 4;
/// The waiter gave up; the completion routine frees it.
const ABANDONED: u8 = 5;

/// What a slot's request is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
enum Kind {
    Version = 1,
    Ping = 2,
    Notify = 3,
    Bulk = 4,
    Goodbye = 5,
}

impl Kind {
    fn from_raw(raw: u8) -> Option<Self> {
        Some(match raw {
            1 => Self::Version,
            2 => Self::Ping,
            3 => Self::Notify,
            4 => Self::Bulk,
            5 => Self::Goodbye,
            _ => return None,
        })
    }

    const fn response(self) -> MessageType {
        match self {
            Self::Version => MessageType::VersionResponse,
            Self::Ping => MessageType::PingResponse,
            Self::Notify => MessageType::NotifyResponse,
            Self::Bulk => MessageType::BulkResponse,
            Self::Goodbye => MessageType::GoodbyeResponse,
        }
    }
}

/// Outcome tags.
const OUTCOME_OK: u8 = 1;
const OUTCOME_REJECTED: u8 = 2;
const OUTCOME_FAILED: u8 = 3;

/// One request in flight.
struct Slot {
    state: AtomicU8,
    kind: AtomicU8,
    sequence: AtomicU64,
    sent_at: AtomicU64,
    /// Kind-specific expectation: ping payload bytes, bulk bytes, notification count.
    expect: AtomicU64,
    /// Outcome tag.
    outcome: AtomicU8,
    /// Kind-specific result (the negotiated version).
    value: AtomicU64,
    /// Failure status (`OUTCOME_FAILED`).
    status: AtomicI32,
    /// The rejection (`OUTCOME_REJECTED`), kept whole for the caller.
    error: ErrorCell,
}

/// A `ProtocolError` stored in atomics: the reason plus the two most useful numbers.
struct ErrorCell {
    reason: AtomicU8,
    a: AtomicU64,
    b: AtomicU64,
}

impl ErrorCell {
    const fn new() -> Self {
        Self {
            reason: AtomicU8::new(0),
            a: AtomicU64::new(0),
            b: AtomicU64::new(0),
        }
    }

    fn store(&self, error: &ProtocolError) {
        let (a, b) = match *error {
            ProtocolError::TooShort { len } => (len as u64, 0),
            ProtocolError::BadMagic { found } | ProtocolError::BadFlags { found } => {
                (u64::from(found), 0)
            }
            ProtocolError::UnknownType { found } => (u64::from(found), 0),
            ProtocolError::BadLength {
                declared, actual, ..
            } => (u64::from(declared), actual as u64),
            ProtocolError::UnexpectedType { found } => (u64::from(found.raw()), 0),
            ProtocolError::BadVersion { found, expected } => {
                (u64::from(found), u64::from(expected))
            }
            ProtocolError::BadSequence { found, expected } => (found, expected),
            ProtocolError::HostStatus { status } => (u64::from(status), 0),
            ProtocolError::PayloadMismatch | ProtocolError::NotNegotiated => (0, 0),
        };
        self.reason.store(error.reason() as u8, Ordering::Relaxed);
        self.a.store(a, Ordering::Relaxed);
        self.b.store(b, Ordering::Relaxed);
    }

    fn load(&self) -> ProtocolError {
        let a = self.a.load(Ordering::Relaxed);
        let b = self.b.load(Ordering::Relaxed);
        let reason = RejectReason::ALL
            .get(usize::from(self.reason.load(Ordering::Relaxed)))
            .copied()
            .unwrap_or(RejectReason::PayloadMismatch);
        let narrow32 = |v: u64| u32::try_from(v).unwrap_or(u32::MAX);
        let narrow16 = |v: u64| u16::try_from(v).unwrap_or(u16::MAX);
        match reason {
            RejectReason::TooShort => ProtocolError::TooShort {
                len: usize::try_from(a).unwrap_or(usize::MAX),
            },
            RejectReason::BadMagic => ProtocolError::BadMagic { found: narrow32(a) },
            RejectReason::UnknownType => ProtocolError::UnknownType { found: narrow16(a) },
            RejectReason::BadFlags => ProtocolError::BadFlags { found: narrow32(a) },
            RejectReason::BadLength => ProtocolError::BadLength {
                declared: narrow32(a),
                actual: usize::try_from(b).unwrap_or(usize::MAX),
                expected: None,
            },
            RejectReason::UnexpectedType => MessageType::from_raw(narrow16(a))
                .map_or(ProtocolError::UnknownType { found: narrow16(a) }, |found| {
                    ProtocolError::UnexpectedType { found }
                }),
            RejectReason::BadVersion => ProtocolError::BadVersion {
                found: narrow16(a),
                expected: narrow16(b),
            },
            RejectReason::BadSequence => ProtocolError::BadSequence {
                found: a,
                expected: b,
            },
            RejectReason::PayloadMismatch => ProtocolError::PayloadMismatch,
            RejectReason::NotNegotiated => ProtocolError::NotNegotiated,
            RejectReason::HostStatus => ProtocolError::HostStatus {
                status: narrow32(a),
            },
        }
    }
}

impl Slot {
    const fn new() -> Self {
        Self {
            state: AtomicU8::new(FREE),
            kind: AtomicU8::new(0),
            sequence: AtomicU64::new(0),
            sent_at: AtomicU64::new(0),
            expect: AtomicU64::new(0),
            outcome: AtomicU8::new(0),
            value: AtomicU64::new(0),
            status: AtomicI32::new(0),
            error: ErrorCell::new(),
        }
    }
}

/// The echo device's channel handler: the receive path (host notifications), the completion
/// path (responses to the guest's requests) and all client state, in atomics.
///
/// `P` is the environment ([`Platform`]). Create the channel with [`create_channel`], then
/// drive it with a [`Session`].
pub struct EchoClient<P: Platform> {
    platform: P,
    config: EchoConfig,
    /// The negotiated protocol version; 0 before negotiation and after close.
    negotiated: AtomicU16,
    /// The host's newest version, from a version response that refused ours.
    host_version: AtomicU16,
    host_closed: AtomicBool,
    next_sequence: AtomicU64,
    last_notification: AtomicU64,
    in_flight: AtomicU32,
    slots: [Slot; SLOTS],
    counters: LiveCounters,
    latency: LatencyHistogram,
}

/// The channel type of the echo device.
pub type EchoChannel<P> = Channel<EchoClient<P>>;

/// The channel's friendly name, "vmbus-echo" in UTF-16.
static FRIENDLY_NAME: [u16; 10] = [
    'v' as u16, 'm' as u16, 'b' as u16, 'u' as u16, 's' as u16, '-' as u16, 'e' as u16, 'c' as u16,
    'h' as u16, 'o' as u16,
];

/// Allocates the echo channel on `parent` from `interface` (`VmbChannelAllocate` and the init
/// setters: ring pages, maximum packet size [`protocol::MAX_MESSAGE`], friendly name). Pin the
/// result and open it with [`Session::open`].
///
/// # Errors
/// [`EchoError::InvalidArgument`] for a configuration out of range; [`EchoError::Kmcl`] with
/// the status of the failing KMCL call (nothing is leaked).
///
/// IRQL: PASSIVE_LEVEL.
pub fn create_channel<P: Platform>(
    interface: &KmclInterface,
    parent: ParentDevice,
    config: &EchoConfig,
    platform: P,
) -> Result<EchoChannel<P>, EchoError> {
    let window_ok = config.window >= 1 && (config.window as usize) <= SLOTS - 4;
    if config.ring_pages < 2 || !window_ok || config.timeout_ns == 0 {
        return Err(EchoError::InvalidArgument);
    }
    let channel_config = ChannelConfig::new()
        .ring_buffer_pages(config.ring_pages, config.ring_pages)
        .maximum_packet_size(protocol::MAX_MESSAGE as u32)
        .friendly_name(&FRIENDLY_NAME);
    let client = EchoClient::new(platform, *config);
    Ok(Channel::new(interface, parent, &channel_config, client)?)
}

impl<P: Platform> EchoClient<P> {
    /// A client with `config`, before any channel exists.
    #[must_use]
    pub fn new(platform: P, config: EchoConfig) -> Self {
        Self {
            platform,
            config,
            negotiated: AtomicU16::new(0),
            host_version: AtomicU16::new(0),
            host_closed: AtomicBool::new(false),
            next_sequence: AtomicU64::new(1),
            last_notification: AtomicU64::new(0),
            in_flight: AtomicU32::new(0),
            slots: [const { Slot::new() }; SLOTS],
            counters: LiveCounters::default(),
            latency: LatencyHistogram::new(),
        }
    }

    /// The environment.
    #[must_use]
    pub fn platform(&self) -> &P {
        &self.platform
    }

    /// The configuration.
    #[must_use]
    pub fn config(&self) -> &EchoConfig {
        &self.config
    }

    /// The negotiated protocol version, or `None` without a session.
    #[must_use]
    pub fn negotiated_version(&self) -> Option<u16> {
        match self.negotiated.load(Ordering::Acquire) {
            0 => None,
            v => Some(v),
        }
    }

    /// True once the host closed (rescinded) the channel.
    #[must_use]
    pub fn host_closed(&self) -> bool {
        self.host_closed.load(Ordering::Acquire)
    }

    /// A snapshot of the counters.
    #[must_use]
    pub fn counters(&self) -> Counters {
        self.counters.snapshot()
    }

    /// Ping round-trip times (send to validated echo), in nanoseconds.
    #[must_use]
    pub fn latency(&self) -> &LatencyHistogram {
        &self.latency
    }

    /// Requests sent and not yet completed (pings of a burst and blocking requests).
    #[must_use]
    pub fn requests_in_flight(&self) -> usize {
        self.slots
            .iter()
            .filter(|s| matches!(s.state.load(Ordering::Acquire), PENDING | ASYNC | ABANDONED))
            .count()
    }

    fn sequence(&self) -> u64 {
        self.next_sequence.fetch_add(1, Ordering::Relaxed)
    }

    /// Takes a free slot, or `None` when all are in use.
    fn reserve(&self) -> Option<usize> {
        self.slots.iter().position(|slot| {
            slot.state
                .compare_exchange(FREE, RESERVED, Ordering::Acquire, Ordering::Relaxed)
                .is_ok()
        })
    }

    fn slot(&self, index: usize) -> Option<&Slot> {
        self.slots.get(index)
    }

    fn release(&self, index: usize) {
        if let Some(slot) = self.slot(index) {
            slot.state.store(FREE, Ordering::Release);
        }
    }

    /// Validates the response to the request in `slot` (kind `kind`); returns the kind-specific
    /// value on success.
    fn check_response(
        &self,
        kind: Kind,
        slot: &Slot,
        response: &[u8],
    ) -> Result<u64, ProtocolError> {
        let sequence = slot.sequence.load(Ordering::Relaxed);
        let expect = slot.expect.load(Ordering::Relaxed);
        let message = protocol::parse(response)?;
        if kind == Kind::Version {
            let message = message.expect(kind.response(), message.version(), sequence)?;
            let body: VersionResponse = message.body()?;
            let status = body.status.get();
            let version = body.version.get();
            if status == protocol::STATUS_UNSUPPORTED {
                self.host_version.store(version, Ordering::Relaxed);
                return Err(ProtocolError::HostStatus { status });
            }
            if status != protocol::STATUS_OK {
                return Err(ProtocolError::HostStatus { status });
            }
            if !(protocol::MIN_VERSION..=protocol::MAX_VERSION).contains(&version)
                || message.version() != version
            {
                return Err(ProtocolError::BadVersion {
                    found: message.version(),
                    expected: version,
                });
            }
            // Published before DONE so that a notification right behind the response is
            // accepted.
            self.negotiated.store(version, Ordering::Release);
            return Ok(u64::from(version));
        }
        let version = self.negotiated.load(Ordering::Acquire);
        if version == 0 {
            return Err(ProtocolError::NotNegotiated);
        }
        let message = message.expect(kind.response(), version, sequence)?;
        let declared = message.payload().len();
        match kind {
            Kind::Ping => {
                if declared as u64 != expect {
                    return Err(ProtocolError::BadLength {
                        declared: message.header().payload_len.get(),
                        actual: declared,
                        expected: usize::try_from(expect).ok(),
                    });
                }
                if !protocol::check_pattern(message.payload(), sequence, 0) {
                    return Err(ProtocolError::PayloadMismatch);
                }
                Ok(expect)
            }
            Kind::Notify => {
                let body: NotifyResponse = message.body()?;
                match body.status.get() {
                    protocol::STATUS_OK if u64::from(body.count.get()) == expect => Ok(expect),
                    protocol::STATUS_OK => Err(ProtocolError::PayloadMismatch),
                    status => Err(ProtocolError::HostStatus { status }),
                }
            }
            Kind::Bulk => {
                let body: BulkResponse = message.body()?;
                match body.status.get() {
                    protocol::STATUS_OK if u64::from(body.bytes_written.get()) == expect => {
                        Ok(expect)
                    }
                    protocol::STATUS_OK => Err(ProtocolError::PayloadMismatch),
                    status => Err(ProtocolError::HostStatus { status }),
                }
            }
            Kind::Goodbye => {
                let body: StatusBody = message.body()?;
                match body.status.get() {
                    protocol::STATUS_OK => Ok(0),
                    status => Err(ProtocolError::HostStatus { status }),
                }
            }
            Kind::Version => Err(ProtocolError::UnexpectedType {
                found: message.message_type(),
            }),
        }
    }

    /// Finishes a ping of a burst (the completion routine owns the slot).
    fn finish_ping(&self, slot: &Slot, status: NtStatus, response: &[u8]) {
        if status.is_success() {
            match self.check_response(Kind::Ping, slot, response) {
                Ok(bytes) => {
                    self.account_ping_ok(slot, bytes);
                }
                Err(error) => {
                    self.counters.reject(&error);
                    bump(&self.counters.pings_failed);
                }
            }
        } else {
            bump(&self.counters.failed_completions);
            bump(&self.counters.pings_failed);
        }
        slot.state.store(FREE, Ordering::Release);
        self.in_flight.fetch_sub(1, Ordering::AcqRel);
    }

    /// Records the outcome of a waited-for request and hands the slot to its waiter. For a
    /// ping the value is its round-trip time.
    fn finish_pending(&self, kind: Kind, slot: &Slot, status: NtStatus, response: &[u8]) {
        if status.is_success() {
            match self.check_response(kind, slot, response) {
                Ok(mut value) => {
                    if kind == Kind::Ping {
                        let rtt = self.account_ping_ok(slot, value);
                        value = rtt;
                    }
                    slot.value.store(value, Ordering::Relaxed);
                    slot.outcome.store(OUTCOME_OK, Ordering::Relaxed);
                }
                Err(error) => {
                    self.counters.reject(&error);
                    if kind == Kind::Ping {
                        bump(&self.counters.pings_failed);
                    }
                    slot.error.store(&error);
                    slot.outcome.store(OUTCOME_REJECTED, Ordering::Relaxed);
                }
            }
        } else {
            bump(&self.counters.failed_completions);
            if kind == Kind::Ping {
                bump(&self.counters.pings_failed);
            }
            slot.status.store(status.raw(), Ordering::Relaxed);
            slot.outcome.store(OUTCOME_FAILED, Ordering::Relaxed);
        }
        if slot
            .state
            .compare_exchange(PENDING, DONE, Ordering::AcqRel, Ordering::Acquire)
            .is_err()
        {
            // The waiter gave up in the meantime.
            bump(&self.counters.late_completions);
            slot.state.store(FREE, Ordering::Release);
        }
    }

    /// Accounts a ping echoed intact: latency and counters. Returns the round-trip time.
    fn account_ping_ok(&self, slot: &Slot, bytes: u64) -> u64 {
        let rtt = self
            .platform
            .now_ns()
            .saturating_sub(slot.sent_at.load(Ordering::Relaxed));
        self.latency.record(rtt);
        bump(&self.counters.pings_ok);
        add(&self.counters.ping_bytes_echoed, bytes);
        rtt
    }

    /// Validates a host packet (the receive path); returns the notification's sequence number
    /// and payload length.
    fn check_notification(
        &self,
        data: &[u8],
        flags: ProcessPacketFlags,
    ) -> Result<(u64, u64), ProtocolError> {
        let message = protocol::parse(data)?;
        if flags.contains(ProcessPacketFlags::EXTERNAL_DATA) {
            return Err(ProtocolError::UnexpectedType {
                found: message.message_type(),
            });
        }
        let version = self.negotiated.load(Ordering::Acquire);
        if version == 0 {
            return Err(ProtocolError::NotNegotiated);
        }
        let last = self.last_notification.load(Ordering::Acquire);
        let expected = last.wrapping_add(1);
        let message = message.expect(MessageType::Notification, version, expected)?;
        if !protocol::check_pattern(message.payload(), expected, 0) {
            return Err(ProtocolError::PayloadMismatch);
        }
        if self
            .last_notification
            .compare_exchange(last, expected, Ordering::AcqRel, Ordering::Acquire)
            .is_err()
        {
            return Err(ProtocolError::BadSequence {
                found: expected,
                expected: self
                    .last_notification
                    .load(Ordering::Acquire)
                    .wrapping_add(1),
            });
        }
        Ok((expected, message.payload().len() as u64))
    }
}

impl<P: Platform> ChannelHandler for EchoClient<P> {
    /// The request slot index.
    type PacketContext = usize;

    fn closed(&self, _channel: &Channel<Self>) {
        self.host_closed.store(true, Ordering::Release);
        self.platform.notify();
    }

    /// The receive path: validates a host message and completes it with a
    /// [`NotificationAck`] carrying 0 (accepted) or the rejection's code. Runs at ≤
    /// DISPATCH_LEVEL, never allocates, never fails to complete the packet.
    fn process_packet(&self, _channel: &Channel<Self>, packet: IncomingPacket<'_>) {
        bump(&self.counters.incoming);
        let data = packet.data();
        let (status, sequence) = match self.check_notification(data, packet.flags()) {
            Ok((sequence, bytes)) => {
                bump(&self.counters.notifications_ok);
                add(&self.counters.notification_bytes, bytes);
                (0, sequence)
            }
            Err(error) => {
                self.counters.reject(&error);
                let sequence = protocol::parse(data).map_or(0, |m| m.sequence());
                (error.reason().code(), sequence)
            }
        };
        let ack = NotificationAck {
            status: U32::new(status),
            reserved: U32::new(0),
        };
        let mut buf = [0_u8; protocol::HEADER_SIZE + size_of::<NotificationAck>()];
        let version = self.negotiated.load(Ordering::Acquire);
        match protocol::encode_body(
            &mut buf,
            MessageType::NotificationAck,
            version,
            sequence,
            &ack,
        ) {
            Ok(len) => {
                let _ = packet.complete(buf.get(..len).unwrap_or(&[]));
            }
            // Unreachable (the buffer fits); dropping completes the packet without a response.
            Err(_) => drop(packet),
        }
        self.platform.notify();
    }

    /// The completion path: validates the host's response to request slot `context`.
    fn packet_completed(&self, _channel: &Channel<Self>, completion: Completion<'_, usize>) {
        let Some(slot) = self.slot(completion.context) else {
            return;
        };
        let kind = Kind::from_raw(slot.kind.load(Ordering::Relaxed));
        match (slot.state.load(Ordering::Acquire), kind) {
            (ASYNC, Some(Kind::Ping)) => {
                self.finish_ping(slot, completion.status, completion.response);
            }
            (PENDING, Some(kind)) => {
                self.finish_pending(kind, slot, completion.status, completion.response);
            }
            (ABANDONED, _) => {
                bump(&self.counters.late_completions);
                slot.state.store(FREE, Ordering::Release);
            }
            // A slot not awaiting a completion: cannot happen (contexts are ours).
            _ => {}
        }
        self.platform.notify();
    }
}

/// The result of [`Session::ping_burst`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BurstReport {
    /// Pings sent.
    pub sent: u64,
    /// Pings echoed intact.
    pub ok: u64,
    /// Pings failed or rejected.
    pub failed: u64,
    /// Payload bytes echoed intact.
    pub bytes: u64,
    /// Wall time of the burst, nanoseconds.
    pub elapsed_ns: u64,
}

/// An echo session over a pinned, open echo channel: every operation of the protocol.
///
/// A session is a cheap view (`Copy`): state lives in the [`EchoClient`], so a driver can
/// rebuild it from its device context in every callback ([`Session::attach`]).
pub struct Session<'c, P: Platform> {
    channel: Pin<&'c EchoChannel<P>>,
}

impl<P: Platform> Clone for Session<'_, P> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<P: Platform> Copy for Session<'_, P> {}

impl<P: Platform> core::fmt::Debug for Session<'_, P> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Session")
            .field("version", &self.client().negotiated_version())
            .finish_non_exhaustive()
    }
}

/// How a waited-for request ended.
enum Waited {
    Ok(u64),
    Rejected(ProtocolError),
    Failed(NtStatus),
}

impl<'c, P: Platform> Session<'c, P> {
    /// Opens the channel (`VmbChannelEnable`) and negotiates the protocol version: sends a
    /// [`VersionRequest`] for `MIN_VERSION..=MAX_VERSION` and waits for the host's choice.
    /// On any failure the channel is disabled again.
    ///
    /// # Errors
    /// [`EchoError::Kmcl`] from enable or the send; [`EchoError::NoCommonVersion`];
    /// [`EchoError::Rejected`] for an invalid response; [`EchoError::Timeout`];
    /// [`EchoError::Completion`].
    ///
    /// IRQL: PASSIVE_LEVEL.
    pub fn open(channel: Pin<&'c EchoChannel<P>>) -> Result<Self, EchoError> {
        let client = channel.handler();
        client.negotiated.store(0, Ordering::Release);
        client.host_closed.store(false, Ordering::Release);
        client.last_notification.store(0, Ordering::Release);
        channel.enable()?;
        let session = Self { channel };
        match session.negotiate() {
            Ok(()) => Ok(session),
            Err(error) => {
                client.negotiated.store(0, Ordering::Release);
                channel.disable();
                Err(error)
            }
        }
    }

    /// A session over a channel opened earlier with [`Session::open`].
    ///
    /// # Errors
    /// [`EchoError::NotOpen`] when the channel is not enabled or no version is negotiated.
    pub fn attach(channel: Pin<&'c EchoChannel<P>>) -> Result<Self, EchoError> {
        if channel.is_enabled() && channel.handler().negotiated_version().is_some() {
            Ok(Self { channel })
        } else {
            Err(EchoError::NotOpen)
        }
    }

    /// The client (counters, latency, negotiated version).
    #[must_use]
    pub fn client(&self) -> &'c EchoClient<P> {
        self.channel.get_ref().handler()
    }

    /// The channel.
    #[must_use]
    pub fn channel(&self) -> Pin<&'c EchoChannel<P>> {
        self.channel
    }

    /// The negotiated version.
    ///
    /// # Errors
    /// [`EchoError::HostClosed`] after a rescind, [`EchoError::NotOpen`] after close.
    pub fn version(&self) -> Result<u16, EchoError> {
        let client = self.client();
        if client.host_closed() {
            return Err(EchoError::HostClosed);
        }
        client.negotiated_version().ok_or(EchoError::NotOpen)
    }

    fn negotiate(&self) -> Result<(), EchoError> {
        let body = VersionRequest {
            min_version: U16::new(protocol::MIN_VERSION),
            max_version: U16::new(protocol::MAX_VERSION),
            reserved: U32::new(0),
        };
        let mut buf = [0_u8; protocol::HEADER_SIZE + size_of::<VersionRequest>()];
        let waited = self.request(Kind::Version, 0, &mut buf, |buf, sequence| {
            protocol::encode_body(
                buf,
                MessageType::VersionRequest,
                protocol::MAX_VERSION,
                sequence,
                &body,
            )
        })?;
        match waited {
            Waited::Ok(_) => Ok(()),
            Waited::Rejected(ProtocolError::HostStatus {
                status: protocol::STATUS_UNSUPPORTED,
            }) => Err(EchoError::NoCommonVersion {
                host: self.client().host_version.load(Ordering::Relaxed),
            }),
            Waited::Rejected(error) => Err(EchoError::Rejected(error)),
            Waited::Failed(status) => Err(EchoError::Completion(status)),
        }
    }

    /// Waits until `done()` holds or the deadline passes; true if it holds.
    fn wait_until(&self, deadline_ns: u64, mut done: impl FnMut() -> bool) -> bool {
        let platform = self.client().platform();
        loop {
            platform.prepare_wait();
            if done() {
                return true;
            }
            let now = platform.now_ns();
            if now >= deadline_ns {
                return done();
            }
            platform.wait((deadline_ns - now).min(WAIT_SLICE_NS));
        }
    }

    fn deadline(&self) -> u64 {
        let client = self.client();
        client
            .platform()
            .now_ns()
            .saturating_add(client.config.timeout_ns)
    }

    /// Reserves a slot, waiting up to the timeout for one.
    fn reserve(&self) -> Result<usize, EchoError> {
        let client = self.client();
        let mut index = None;
        let deadline = self.deadline();
        self.wait_until(deadline, || {
            index = client.reserve();
            index.is_some() || client.host_closed()
        });
        if client.host_closed() {
            if let Some(index) = index {
                client.release(index);
            }
            return Err(EchoError::HostClosed);
        }
        index.ok_or(EchoError::Busy)
    }

    /// Sends one request of `kind` built by `encode` into `buf` and waits for its response.
    fn request(
        &self,
        kind: Kind,
        expect: u64,
        buf: &mut [u8],
        encode: impl FnOnce(&mut [u8], u64) -> Result<usize, ProtocolError>,
    ) -> Result<Waited, EchoError> {
        let client = self.client();
        if client.host_closed() {
            return Err(EchoError::HostClosed);
        }
        let index = self.reserve()?;
        let slot = client.slot(index).ok_or(EchoError::Busy)?;
        let sequence = client.sequence();
        let len = match encode(buf, sequence) {
            Ok(len) => len,
            Err(_) => {
                client.release(index);
                return Err(EchoError::InvalidArgument);
            }
        };
        slot.kind.store(kind as u8, Ordering::Relaxed);
        slot.sequence.store(sequence, Ordering::Relaxed);
        slot.expect.store(expect, Ordering::Relaxed);
        slot.outcome.store(0, Ordering::Relaxed);
        slot.sent_at
            .store(client.platform().now_ns(), Ordering::Relaxed);
        slot.state.store(PENDING, Ordering::Release);
        let message = buf.get(..len).ok_or(EchoError::InvalidArgument)?;
        if let Err(status) = self
            .channel
            .send(message, SendFlags::WAIT_FOR_COMPLETION, index)
        {
            bump(&client.counters.send_failures);
            client.release(index);
            return Err(EchoError::Kmcl(status));
        }
        bump(&client.counters.packets_sent);
        if kind == Kind::Ping {
            bump(&client.counters.pings_sent);
            add(&client.counters.ping_bytes_sent, expect);
        }
        let deadline = self.deadline();
        self.wait_until(deadline, || {
            slot.state.load(Ordering::Acquire) == DONE || client.host_closed()
        });
        if slot
            .state
            .compare_exchange(PENDING, ABANDONED, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
        {
            // Not completed: the completion (KMCL cancels it at close at the latest) frees the
            // slot.
            return Err(if client.host_closed() {
                EchoError::HostClosed
            } else {
                EchoError::Timeout
            });
        }
        let waited = match slot.outcome.load(Ordering::Relaxed) {
            OUTCOME_OK => Waited::Ok(slot.value.load(Ordering::Relaxed)),
            OUTCOME_REJECTED => Waited::Rejected(slot.error.load()),
            _ => Waited::Failed(NtStatus(slot.status.load(Ordering::Relaxed))),
        };
        client.release(index);
        Ok(waited)
    }

    /// One ping of `payload_len` pattern bytes, waited for; returns its round-trip time in
    /// nanoseconds (also recorded in [`EchoClient::latency`]).
    ///
    /// # Errors
    /// [`EchoError::InvalidArgument`] (payload over [`protocol::MAX_PAYLOAD`], scratch smaller
    /// than `HEADER_SIZE + payload_len`); [`EchoError::Rejected`] when the echo is wrong;
    /// [`EchoError::Kmcl`], [`EchoError::Timeout`], [`EchoError::Completion`],
    /// [`EchoError::HostClosed`], [`EchoError::NotOpen`].
    ///
    /// IRQL: PASSIVE_LEVEL.
    pub fn ping(&self, payload_len: usize, scratch: &mut [u8]) -> Result<u64, EchoError> {
        let version = self.version()?;
        if payload_len > protocol::MAX_PAYLOAD {
            return Err(EchoError::InvalidArgument);
        }
        let waited = self.request(Kind::Ping, payload_len as u64, scratch, |buf, sequence| {
            protocol::encode_pattern(
                buf,
                MessageType::PingRequest,
                version,
                sequence,
                payload_len,
                sequence,
            )
        })?;
        match waited {
            Waited::Ok(rtt) => Ok(rtt),
            Waited::Rejected(error) => Err(EchoError::Rejected(error)),
            Waited::Failed(status) => Err(EchoError::Completion(status)),
        }
    }

    /// Sends `count` pings of `payload_len` pattern bytes, at most [`EchoConfig::window`] in
    /// flight, and waits for every completion. Each completion is validated (type, version,
    /// sequence, length, every byte) and its round-trip time recorded in
    /// [`EchoClient::latency`]. `scratch` holds one message at a time
    /// (`HEADER_SIZE + payload_len` bytes).
    ///
    /// # Errors
    /// [`EchoError::InvalidArgument`] (payload over [`protocol::MAX_PAYLOAD`], scratch too
    /// small), [`EchoError::Kmcl`] when a send fails (pings already sent still complete),
    /// [`EchoError::Timeout`], [`EchoError::HostClosed`], [`EchoError::NotOpen`].
    ///
    /// IRQL: PASSIVE_LEVEL.
    pub fn ping_burst(
        &self,
        payload_len: usize,
        count: u64,
        scratch: &mut [u8],
    ) -> Result<BurstReport, EchoError> {
        let client = self.client();
        let version = self.version()?;
        if payload_len > protocol::MAX_PAYLOAD
            || scratch.len() < protocol::HEADER_SIZE + payload_len
        {
            return Err(EchoError::InvalidArgument);
        }
        let window = client.config.window;
        let start = client.platform().now_ns();
        let before = client.counters();
        let mut sent = 0_u64;
        let mut result = Ok(());
        while sent < count {
            let deadline = self.deadline();
            let room = self.wait_until(deadline, || {
                client.in_flight.load(Ordering::Acquire) < window || client.host_closed()
            });
            if client.host_closed() {
                result = Err(EchoError::HostClosed);
                break;
            }
            if !room {
                result = Err(EchoError::Timeout);
                break;
            }
            let index = match self.reserve() {
                Ok(index) => index,
                Err(error) => {
                    result = Err(error);
                    break;
                }
            };
            let Some(slot) = client.slot(index) else {
                result = Err(EchoError::Busy);
                break;
            };
            let sequence = client.sequence();
            let encoded = protocol::encode_pattern(
                scratch,
                MessageType::PingRequest,
                version,
                sequence,
                payload_len,
                sequence,
            );
            let Some(message) = encoded.ok().and_then(|len| scratch.get(..len)) else {
                client.release(index);
                result = Err(EchoError::InvalidArgument);
                break;
            };
            slot.kind.store(Kind::Ping as u8, Ordering::Relaxed);
            slot.sequence.store(sequence, Ordering::Relaxed);
            slot.expect.store(payload_len as u64, Ordering::Relaxed);
            client.in_flight.fetch_add(1, Ordering::AcqRel);
            slot.sent_at
                .store(client.platform().now_ns(), Ordering::Relaxed);
            slot.state.store(ASYNC, Ordering::Release);
            if let Err(status) = self
                .channel
                .send(message, SendFlags::WAIT_FOR_COMPLETION, index)
            {
                bump(&client.counters.send_failures);
                client.in_flight.fetch_sub(1, Ordering::AcqRel);
                client.release(index);
                result = Err(EchoError::Kmcl(status));
                break;
            }
            bump(&client.counters.packets_sent);
            bump(&client.counters.pings_sent);
            add(&client.counters.ping_bytes_sent, payload_len as u64);
            sent += 1;
        }
        let deadline = self.deadline();
        let drained = self.wait_until(deadline, || {
            client.in_flight.load(Ordering::Acquire) == 0 || client.host_closed()
        });
        result?;
        if client.host_closed() {
            return Err(EchoError::HostClosed);
        }
        if !drained {
            return Err(EchoError::Timeout);
        }
        let after = client.counters();
        Ok(BurstReport {
            sent,
            ok: after.pings_ok - before.pings_ok,
            failed: after.pings_failed - before.pings_failed,
            bytes: after.ping_bytes_echoed - before.ping_bytes_echoed,
            elapsed_ns: client.platform().now_ns().saturating_sub(start),
        })
    }

    /// Asks the host for `count` notifications of `payload_len` bytes (a [`NotifyRequest`]),
    /// then waits until that many valid notifications have been received and completed (the
    /// receive path, [`EchoClient`]'s `process_packet`).
    ///
    /// # Errors
    /// [`EchoError::InvalidArgument`] for a zero count or a payload over
    /// [`protocol::MAX_PAYLOAD`]; [`EchoError::Rejected`] when the host refuses;
    /// [`EchoError::Timeout`] when the notifications do not all arrive; as
    /// [`ping_burst`](Self::ping_burst).
    ///
    /// IRQL: PASSIVE_LEVEL.
    pub fn request_notifications(&self, count: u32, payload_len: u32) -> Result<(), EchoError> {
        let client = self.client();
        let version = self.version()?;
        if count == 0 || payload_len as usize > protocol::MAX_PAYLOAD {
            return Err(EchoError::InvalidArgument);
        }
        let before = read(&client.counters.notifications_ok);
        let body = NotifyRequest {
            count: U32::new(count),
            payload_len: U32::new(payload_len),
        };
        let mut buf = [0_u8; protocol::HEADER_SIZE + size_of::<NotifyRequest>()];
        let waited = self.request(Kind::Notify, u64::from(count), &mut buf, |buf, sequence| {
            protocol::encode_body(buf, MessageType::NotifyRequest, version, sequence, &body)
        })?;
        match waited {
            Waited::Ok(_) => bump(&client.counters.notify_requests_ok),
            Waited::Rejected(error) => return Err(EchoError::Rejected(error)),
            Waited::Failed(status) => return Err(EchoError::Completion(status)),
        }
        let target = before + u64::from(count);
        let deadline = self.deadline();
        let all = self.wait_until(deadline, || {
            read(&client.counters.notifications_ok) >= target || client.host_closed()
        });
        if client.host_closed() {
            Err(EchoError::HostClosed)
        } else if all {
            Ok(())
        } else {
            Err(EchoError::Timeout)
        }
    }

    /// The bulk transfer (protocol version 2): shares `buffer` through a GPADL
    /// (`VmbChannelCreateGpadlFromBuffer`), asks the host to fill it with the pattern of
    /// `seed` ([`BulkRequest`]), waits for the [`BulkResponse`], checks every byte through the
    /// GPADL, and deletes the GPADL. The buffer is zeroed first, so stale contents cannot pass.
    ///
    /// # Errors
    /// [`EchoError::NotSupported`] on version 1; [`EchoError::InvalidArgument`] for an empty
    /// buffer or one over 4 GiB; [`EchoError::Kmcl`] from the GPADL or the send;
    /// [`EchoError::Rejected`] (with [`ProtocolError::PayloadMismatch`] when the contents are
    /// wrong); [`EchoError::Timeout`].
    ///
    /// IRQL: PASSIVE_LEVEL.
    pub fn bulk(&self, buffer: &mut [u8], seed: u64) -> Result<(), EchoError> {
        let client = self.client();
        let result = self.bulk_inner(buffer, seed);
        match result {
            Ok(bytes) => {
                bump(&client.counters.bulk_ok);
                add(&client.counters.bulk_bytes, bytes);
                Ok(())
            }
            Err(error) => {
                bump(&client.counters.bulk_failed);
                Err(error)
            }
        }
    }

    fn bulk_inner(&self, buffer: &mut [u8], seed: u64) -> Result<u64, EchoError> {
        let client = self.client();
        let version = self.version()?;
        if version < protocol::VERSION_2 {
            return Err(EchoError::NotSupported);
        }
        let length = u32::try_from(buffer.len()).map_err(|_| EchoError::InvalidArgument)?;
        if length == 0 {
            return Err(EchoError::InvalidArgument);
        }
        buffer.fill(0);
        let gpadl = self.channel.create_gpadl(buffer, GpadlFlags::empty())?;
        let body = BulkRequest {
            gpadl: U32::new(gpadl.handle()),
            length: U32::new(length),
            seed: U64::new(seed),
        };
        let mut buf = [0_u8; protocol::HEADER_SIZE + size_of::<BulkRequest>()];
        let waited = self.request(Kind::Bulk, u64::from(length), &mut buf, |buf, sequence| {
            protocol::encode_body(buf, MessageType::BulkRequest, version, sequence, &body)
        })?;
        match waited {
            Waited::Ok(_) => {}
            Waited::Rejected(error) => return Err(EchoError::Rejected(error)),
            Waited::Failed(status) => return Err(EchoError::Completion(status)),
        }
        let mut chunk = [0_u8; 256];
        let mut offset = 0_usize;
        while offset < gpadl.len() {
            let n = chunk.len().min(gpadl.len() - offset);
            let part = chunk.get_mut(..n).ok_or(EchoError::InvalidArgument)?;
            gpadl.read(offset, part)?;
            if !protocol::check_pattern(part, seed, offset as u64) {
                let error = ProtocolError::PayloadMismatch;
                client.counters.reject(&error);
                return Err(EchoError::Rejected(error));
            }
            offset += n;
        }
        drop(gpadl);
        Ok(u64::from(length))
    }

    /// The synchronous request: sends a [`SyncRequest`] for `value` with
    /// `VmbChannelSendSynchronousRequest` and returns the host's validated answer
    /// ([`protocol::sync_answer`]`(value)`).
    ///
    /// # Errors
    /// [`EchoError::Kmcl`] (e.g. `STATUS_TIMEOUT`, `STATUS_BUFFER_OVERFLOW` for an oversized
    /// response), [`EchoError::Rejected`], [`EchoError::NotOpen`], [`EchoError::HostClosed`].
    ///
    /// IRQL: PASSIVE_LEVEL.
    pub fn sync_request(&self, value: u64) -> Result<u64, EchoError> {
        let client = self.client();
        let result = self.sync_inner(value);
        if result.is_ok() {
            bump(&client.counters.sync_ok);
        } else {
            bump(&client.counters.sync_failed);
        }
        result
    }

    fn sync_inner(&self, value: u64) -> Result<u64, EchoError> {
        let client = self.client();
        let version = self.version()?;
        let sequence = client.sequence();
        let mut request = [0_u8; protocol::HEADER_SIZE + size_of::<SyncRequest>()];
        let body = SyncRequest {
            value: U64::new(value),
        };
        let len = protocol::encode_body(
            &mut request,
            MessageType::SyncRequest,
            version,
            sequence,
            &body,
        )?;
        let mut response = [0_u8; 64];
        let message = request.get(..len).ok_or(EchoError::InvalidArgument)?;
        let timeout = Duration::from_nanos(client.config.timeout_ns);
        let received = match self.channel.send_synchronous(
            message,
            SendFlags::WAIT_FOR_COMPLETION,
            &mut response,
            Some(timeout),
        ) {
            Ok(received) => received,
            Err(status) => {
                if status == NtStatus::BUFFER_OVERFLOW {
                    let error = ProtocolError::BadLength {
                        declared: 0,
                        actual: response.len(),
                        expected: Some(size_of::<SyncResponse>()),
                    };
                    client.counters.reject(&error);
                    return Err(EchoError::Rejected(error));
                }
                return Err(EchoError::Kmcl(status));
            }
        };
        bump(&client.counters.packets_sent);
        let checked = response
            .get(..received)
            .ok_or(ProtocolError::TooShort { len: received })
            .and_then(protocol::parse)
            .and_then(|m| m.expect(MessageType::SyncResponse, version, sequence))
            .and_then(|m| m.body::<SyncResponse>())
            .and_then(|body| {
                if body.value.get() == protocol::sync_answer(value) {
                    Ok(body.value.get())
                } else {
                    Err(ProtocolError::PayloadMismatch)
                }
            });
        checked.map_err(|error| {
            client.counters.reject(&error);
            EchoError::Rejected(error)
        })
    }

    /// Stops packet delivery (`VmbChannelPause`), e.g. when the device leaves D0.
    ///
    /// # Errors
    /// [`EchoError::Kmcl`] when the channel is not enabled.
    ///
    /// IRQL: PASSIVE_LEVEL.
    pub fn pause(&self) -> Result<(), EchoError> {
        Ok(self.channel.pause()?)
    }

    /// Resumes packet delivery after [`pause`](Self::pause) (`VmbChannelStart`).
    ///
    /// # Errors
    /// [`EchoError::Kmcl`] when the channel is not enabled.
    ///
    /// IRQL: PASSIVE_LEVEL.
    pub fn resume(&self) -> Result<(), EchoError> {
        Ok(self.channel.start()?)
    }

    /// Closes the session: says goodbye to the host (a [`MessageType::Goodbye`] request,
    /// skipped when the host already closed the channel), then disables the channel
    /// (`VmbChannelDisable`, which waits for every callback and cancels requests in flight).
    /// The channel is disabled whatever the goodbye's outcome; drop it to clean it up.
    ///
    /// # Errors
    /// The goodbye's failure ([`EchoError::Kmcl`], [`EchoError::Rejected`],
    /// [`EchoError::Timeout`], [`EchoError::Completion`]); the channel is closed anyway.
    ///
    /// IRQL: PASSIVE_LEVEL.
    pub fn close(self) -> Result<(), EchoError> {
        let client = self.client();
        let result = match (client.host_closed(), client.negotiated_version()) {
            (false, Some(version)) => {
                let mut buf = [0_u8; protocol::HEADER_SIZE];
                self.request(Kind::Goodbye, 0, &mut buf, |buf, sequence| {
                    protocol::encode(buf, MessageType::Goodbye, version, sequence, &[])
                })
                .and_then(|waited| match waited {
                    Waited::Ok(_) => Ok(()),
                    Waited::Rejected(error) => Err(EchoError::Rejected(error)),
                    Waited::Failed(status) => Err(EchoError::Completion(status)),
                })
            }
            _ => Ok(()),
        };
        client.negotiated.store(0, Ordering::Release);
        self.channel.disable();
        result
    }
}
