//! The driver's VMBus logic, portable: the [`EchoClient`] channel handler (receive and
//! completion paths, counters, the queue of pended host packets), the [`EchoChannel`] that owns
//! the channel together with what lives beside it (its packet pool and its bulk GPADL), and the
//! [`Session`] operations (open with version negotiation, ping, notifications, GPADL bulk
//! transfer, synchronous request, pause/resume, close).
//!
//! Everything here takes a queried [`KmclInterface`] and a [`ParentDevice`], so the same code
//! runs in the KMDF driver (interface from `WdfFdoQueryForInterface`, parent = the FDO) and over
//! the emulator (interface from `Vmbus::kmcl_interface`, parent = the offer's device object).
//!
//! Allocation happens only in [`create_channel`] (PASSIVE_LEVEL, once per device): the
//! channel, the packet-pool storage and the bulk buffer. Sends, completions, the receive path
//! and the deferred acknowledgements allocate nothing. Blocking waits and the hand-off of
//! acknowledgements to another thread go through the [`Platform`] the driver supplies (a
//! `KEVENT` and a WDF work item in the kernel, a condition variable and a worker thread on a
//! host).
//!
//! ## Host memory
//! Every byte the host wrote (an incoming packet, a completion's response, the bulk buffer) is
//! copied into driver memory first ([`IncomingPacket::copy_data`], [`vmbus_kmcl::HostBytes`]'s
//! `copy_to`, [`Gpadl::read`]) and only the copy is parsed and checked, so a host that rewrites
//! the bytes while the driver looks at them cannot make a checked value change.
//!
//! ## Concurrency
//! Callbacks run on KMCL's DPCs, possibly concurrently. Per-request state lives in a fixed table
//! of [`SLOTS`] slots of atomics; the packet context of each request is its slot index. A slot
//! moves `FREE → RESERVED → PENDING/ASYNC → DONE → FREE`; a waiter that times out marks it
//! `ABANDONED` and the late completion frees it.
//!
//! Host packets are acknowledged later, from another thread: the receive path validates the
//! packet, pends it ([`IncomingPacket::pend`]), puts the [`PendedPacket`] and its
//! acknowledgement in a fixed queue of [`ACK_QUEUE`] entries and calls
//! [`Platform::acks_queued`]; the platform's worker (the driver's work item) then calls
//! [`EchoClient::complete_acks`]. Queue entries move `EMPTY → FILLING → READY → TAKING → EMPTY`
//! by compare-exchange, so neither side ever waits for the other (a DPC never spins on a thread
//! it may have interrupted).

extern crate alloc;

use alloc::boxed::Box;
use alloc::vec::Vec;
use core::cell::UnsafeCell;
use core::sync::atomic::{
    AtomicBool, AtomicI32, AtomicU8, AtomicU16, AtomicU32, AtomicU64, Ordering,
};
use core::time::Duration;

use vmbus_kmcl::{
    Channel, ChannelConfig, ChannelCore, ChannelHandler, ChannelRef, Completion, Gpadl, GpadlFlags,
    IncomingPacket, KmclInterface, NtStatus, PacketPool, Page, ParentDevice, PassiveLevel,
    PendedPacket, PoolWord, ProcessPacketFlags, SendFlags,
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

/// Packets in the channel's packet pool: one per request slot, plus a margin for completions
/// whose request slot is already free while KMCL has not yet handed the packet back. When the
/// pool is empty anyway, a request falls back to KMCL's own packet allocation.
pub const POOL_PACKETS: usize = SLOTS + 8;

/// Host packets that may wait for their acknowledgement at once: the size of the queue of
/// pended packets and of the channel's pend table (`ChannelConfig::max_pended_packets`).
pub const ACK_QUEUE: usize = 64;

/// The largest bulk buffer, in bytes.
pub const MAX_BULK_BYTES: u32 = 64 * 1024 * 1024;

/// Bytes copied out of a host packet or a completion response: a maximum message with its ring
/// padding, plus one byte so that anything longer is seen as too long.
const RECEIVE_BUFFER: usize = protocol::MAX_MESSAGE + protocol::MAX_PADDING + 1;

/// Bytes of a [`MessageType::NotificationAck`] message.
const ACK_MESSAGE: usize = protocol::HEADER_SIZE + size_of::<NotificationAck>();

/// Bytes checked or zeroed per copy of the bulk buffer.
const BULK_CHUNK: usize = 1024;

/// What the client needs from its environment: a monotonic clock, a wait/notify pair, and a
/// way to run [`EchoClient::complete_acks`] on another thread.
///
/// `notify` and `acks_queued` are called from KMCL callbacks (IRQL ≤ DISPATCH_LEVEL); `wait`
/// is called at PASSIVE_LEVEL by a thread waiting for a change. Waits may return early
/// (spuriously); the client re-checks its condition and bounds each wait, so a notification
/// that races with the start of a wait costs at most one wait slice.
pub trait Platform: Send + Sync + 'static {
    /// Monotonic time in nanoseconds (any origin). IRQL: any.
    fn now_ns(&self) -> u64;

    /// Arms the event: a `notify` after this makes the next `wait` return. IRQL: PASSIVE_LEVEL.
    fn prepare_wait(&self);

    /// Wakes waiters. IRQL: ≤ DISPATCH_LEVEL.
    fn notify(&self);

    /// Blocks until notified or `timeout_ns` elapsed. IRQL: PASSIVE_LEVEL.
    fn wait(&self, timeout_ns: u64);

    /// The receive path queued acknowledgements of pended host packets: arrange for
    /// [`EchoClient::complete_acks`] to run soon, on another thread, at IRQL ≤ DISPATCH_LEVEL
    /// (the driver enqueues a WDF work item; the emulator harness wakes a worker thread). A
    /// call while that is already arranged may do nothing, but a call that arrives while
    /// `complete_acks` runs must lead to one more run. Must not block or allocate.
    /// IRQL: ≤ DISPATCH_LEVEL.
    fn acks_queued(&self);
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
    /// Bytes of the bulk buffer shared with the host through a GPADL for the whole session
    /// (rounded up to whole pages; 0..=[`MAX_BULK_BYTES`]; 0: no bulk transfer).
    pub bulk_bytes: u32,
}

impl EchoConfig {
    /// 16 ring pages each way, 5 s timeout, 16 pings in flight, a 64 KiB bulk buffer.
    pub const DEFAULT: Self = Self {
        ring_pages: 16,
        timeout_ns: 5_000_000_000,
        window: 16,
        bulk_bytes: 64 * 1024,
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
    /// The operation needs a newer protocol version than the one negotiated (or, for the bulk
    /// transfer, a bulk buffer the configuration did not ask for).
    NotSupported,
    /// An argument is out of range (payload too large, scratch buffer too small, a bulk length
    /// of 0 or beyond the bulk buffer, zero count).
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
    /// Requests sent from the channel's packet pool.
    pub sends_pooled: u64,
    /// Requests sent with a packet from KMCL's allocator because the pool was empty.
    pub sends_allocated: u64,
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
    /// Notifications accepted (valid, in order).
    pub notifications_ok: u64,
    /// Payload bytes of accepted notifications.
    pub notification_bytes: u64,
    /// Host packets pended ([`IncomingPacket::pend`]) to be acknowledged later.
    pub acks_pended: u64,
    /// Pended host packets completed with their acknowledgement.
    pub acks_completed: u64,
    /// Pended host packets that a disable cancelled before they were acknowledged.
    pub acks_cancelled: u64,
    /// Host packets acknowledged in the receive callback itself (the pend table was full).
    pub acks_inline: u64,
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
    sends_pooled: AtomicU64,
    sends_allocated: AtomicU64,
    pings_sent: AtomicU64,
    pings_ok: AtomicU64,
    pings_failed: AtomicU64,
    ping_bytes_sent: AtomicU64,
    ping_bytes_echoed: AtomicU64,
    incoming: AtomicU64,
    notifications_ok: AtomicU64,
    notification_bytes: AtomicU64,
    acks_pended: AtomicU64,
    acks_completed: AtomicU64,
    acks_cancelled: AtomicU64,
    acks_inline: AtomicU64,
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
            sends_pooled: read(&self.sends_pooled),
            sends_allocated: read(&self.sends_allocated),
            pings_sent: read(&self.pings_sent),
            pings_ok: read(&self.pings_ok),
            pings_failed: read(&self.pings_failed),
            ping_bytes_sent: read(&self.ping_bytes_sent),
            ping_bytes_echoed: read(&self.ping_bytes_echoed),
            incoming: read(&self.incoming),
            notifications_ok: read(&self.notifications_ok),
            notification_bytes: read(&self.notification_bytes),
            acks_pended: read(&self.acks_pended),
            acks_completed: read(&self.acks_completed),
            acks_cancelled: read(&self.acks_cancelled),
            acks_inline: read(&self.acks_inline),
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

/// Queue-entry states (see the module documentation).
const ACK_EMPTY: u8 = 0;
/// The receive path is storing a packet.
const ACK_FILLING: u8 = 1;
/// Holds a packet waiting for its acknowledgement.
const ACK_READY: u8 = 2;
/// A completer is taking the packet out.
const ACK_TAKING: u8 = 3;

/// The acknowledgement of one host packet, decided by the receive path.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Ack {
    /// 0 (accepted) or the rejection's code.
    status: u32,
    /// The version the acknowledgement carries (the negotiated one when the packet arrived).
    version: u16,
    /// The sequence of the notification it answers (0 when its header could not be parsed).
    sequence: u64,
}

impl Ack {
    /// Encodes the [`NotificationAck`] message into `buf`; empty if it does not fit (it always
    /// does: `buf` is [`ACK_MESSAGE`] bytes).
    fn encode(self, buf: &mut [u8; ACK_MESSAGE]) -> &[u8] {
        let body = NotificationAck {
            status: U32::new(self.status),
            reserved: U32::new(0),
        };
        let encoded = protocol::encode_body(
            buf,
            MessageType::NotificationAck,
            self.version,
            self.sequence,
            &body,
        );
        match encoded {
            Ok(len) => buf.get(..len).unwrap_or(&[]),
            Err(_) => &[],
        }
    }
}

/// One entry of the acknowledgement queue: a pended packet (`T`, a [`PendedPacket`]) and its
/// acknowledgement.
struct AckEntry<T> {
    state: AtomicU8,
    packet: UnsafeCell<Option<T>>,
    status: AtomicU32,
    version: AtomicU16,
    sequence: AtomicU64,
}

// SAFETY: `packet` is only touched by the one thread that moved `state` to ACK_FILLING (the
// producer) or to ACK_TAKING (a consumer) with a compare-exchange; the producer's Release store
// of ACK_READY and a consumer's Acquire compare-exchange order the two accesses, as a mutex
// would. `T: Send` because the packet moves from the producer's thread to the consumer's.
unsafe impl<T: Send> Sync for AckEntry<T> {}

impl<T> AckEntry<T> {
    const fn new() -> Self {
        Self {
            state: AtomicU8::new(ACK_EMPTY),
            packet: UnsafeCell::new(None),
            status: AtomicU32::new(0),
            version: AtomicU16::new(0),
            sequence: AtomicU64::new(0),
        }
    }

    fn moved(&self, from: u8, to: u8) -> bool {
        self.state
            .compare_exchange(from, to, Ordering::AcqRel, Ordering::Relaxed)
            .is_ok()
    }
}

/// A fixed, lock-free multi-producer multi-consumer set of pended packets waiting for their
/// acknowledgement. Neither side ever waits: a producer that finds no empty entry gets the
/// packet back, a consumer skips entries being filled (their producer signals again).
struct AckQueue<T> {
    entries: [AckEntry<T>; ACK_QUEUE],
}

impl<T> AckQueue<T> {
    const fn new() -> Self {
        Self {
            entries: [const { AckEntry::new() }; ACK_QUEUE],
        }
    }

    /// Stores `packet` with `ack`, or gives it back when every entry is in use.
    fn push(&self, packet: T, ack: Ack) -> Result<(), T> {
        let Some(entry) = self
            .entries
            .iter()
            .find(|entry| entry.moved(ACK_EMPTY, ACK_FILLING))
        else {
            return Err(packet);
        };
        entry.status.store(ack.status, Ordering::Relaxed);
        entry.version.store(ack.version, Ordering::Relaxed);
        entry.sequence.store(ack.sequence, Ordering::Relaxed);
        // SAFETY: ACK_FILLING makes this thread the entry's only user (see `AckEntry`).
        let slot = unsafe { &mut *entry.packet.get() };
        *slot = Some(packet);
        entry.state.store(ACK_READY, Ordering::Release);
        Ok(())
    }

    /// Takes one ready packet and its acknowledgement.
    fn pop(&self) -> Option<(T, Ack)> {
        for entry in &self.entries {
            if !entry.moved(ACK_READY, ACK_TAKING) {
                continue;
            }
            // SAFETY: ACK_TAKING makes this thread the entry's only user (see `AckEntry`).
            let slot = unsafe { &mut *entry.packet.get() };
            let packet = slot.take();
            let ack = Ack {
                status: entry.status.load(Ordering::Relaxed),
                version: entry.version.load(Ordering::Relaxed),
                sequence: entry.sequence.load(Ordering::Relaxed),
            };
            entry.state.store(ACK_EMPTY, Ordering::Release);
            if let Some(packet) = packet {
                return Some((packet, ack));
            }
        }
        None
    }
}

/// The echo device's channel handler: the receive path (host notifications, acknowledged
/// later from another thread), the completion path (responses to the guest's requests) and
/// all client state, in atomics.
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
    /// Pended host packets waiting for [`EchoClient::complete_acks`].
    acks: AckQueue<PendedPacket<EchoClient<P>>>,
    counters: LiveCounters,
    latency: LatencyHistogram,
}

/// The channel's friendly name, "vmbus-echo" in UTF-16.
static FRIENDLY_NAME: [u16; 10] = [
    'v' as u16, 'm' as u16, 'b' as u16, 'u' as u16, 's' as u16, '-' as u16, 'e' as u16, 'c' as u16,
    'h' as u16, 'o' as u16,
];

/// Zeroes for clearing the bulk buffer through the GPADL.
static ZEROES: [u8; BULK_CHUNK] = [0; BULK_CHUNK];

/// A boxed slice of `len` copies of `value`, or `STATUS_INSUFFICIENT_RESOURCES` (never an
/// allocation-failure panic).
fn boxed_slice<T: Copy>(len: usize, value: T) -> Result<Box<[T]>, EchoError> {
    let mut items = Vec::new();
    items
        .try_reserve_exact(len)
        .map_err(|_| EchoError::Kmcl(NtStatus::INSUFFICIENT_RESOURCES))?;
    items.resize(len, value);
    Ok(items.into_boxed_slice())
}

/// Allocates the echo channel on `parent` from `interface` and everything that lives beside it
/// for the channel's life:
/// - the channel (`VmbChannelAllocate` and the init setters: ring pages, maximum packet size
///   [`protocol::MAX_MESSAGE`], friendly name; one GPADL, one packet pool and [`ACK_QUEUE`]
///   pended packets at most);
/// - the packet pool: [`POOL_PACKETS`] packets of `Box<[PoolWord]>` storage, attached once
///   (the channel frees it at teardown);
/// - the bulk buffer (`Box<[Page]>`, [`EchoConfig::bulk_bytes`] rounded up to pages), shared
///   through a GPADL while a version-2 session is open.
///
/// Open it with [`Session::open`].
///
/// # Errors
/// [`EchoError::InvalidArgument`] for a configuration out of range; [`EchoError::Kmcl`] with
/// the status of the failing KMCL call or `STATUS_INSUFFICIENT_RESOURCES` when an allocation
/// fails (nothing is leaked: the channel is torn down again).
///
/// IRQL: PASSIVE_LEVEL.
pub fn create_channel<P: Platform>(
    irql: &PassiveLevel,
    interface: &KmclInterface,
    parent: ParentDevice,
    config: &EchoConfig,
    platform: P,
) -> Result<EchoChannel<P>, EchoError> {
    let window_ok = config.window >= 1 && (config.window as usize) <= SLOTS - 4;
    if config.ring_pages < 2
        || !window_ok
        || config.timeout_ns == 0
        || config.bulk_bytes > MAX_BULK_BYTES
    {
        return Err(EchoError::InvalidArgument);
    }
    let channel_config = ChannelConfig::new()
        .ring_buffer_pages(config.ring_pages, config.ring_pages)
        .maximum_packet_size(protocol::MAX_MESSAGE as u32)
        .friendly_name(&FRIENDLY_NAME)
        .max_gpadls(1)
        .max_packet_pools(1)
        .max_pended_packets(ACK_QUEUE as u16);
    let client = EchoClient::new(platform, *config);
    let channel = Channel::new(irql, interface, parent, &channel_config, client)?;
    // On any error below, dropping `channel` (at PASSIVE_LEVEL) tears it down again.
    let words = PacketPool::words_needed(&channel, POOL_PACKETS)?;
    let storage = boxed_slice(words, PoolWord::ZERO)?;
    let pool = channel
        .attach_packet_pool(storage)
        .map_err(|error| EchoError::Kmcl(error.status))?;
    let pages = (config.bulk_bytes as usize).div_ceil(size_of::<Page>());
    let bulk_buffer = if pages == 0 {
        None
    } else {
        Some(boxed_slice(pages, Page::ZERO)?)
    };
    Ok(EchoChannel {
        channel,
        pool,
        bulk: None,
        bulk_buffer,
    })
}

/// The echo channel and what lives beside it for the device's life: the unique owner of the
/// KMCL channel, its packet pool, and the bulk buffer, which is shared with the host through a
/// GPADL while a version-2 session is open.
///
/// The pool and the GPADL hold a [`ChannelRef`], not a borrow, so they sit next to the channel
/// in one struct (a WDF device context in the driver). Dropping it at PASSIVE_LEVEL tears the
/// channel down (see [`Channel::close`]).
pub struct EchoChannel<P: Platform> {
    /// The owner; dropped first, so teardown runs before the handles below let go.
    channel: Channel<EchoClient<P>>,
    /// Every request is sent from here (KMCL's allocator only when it is empty).
    pool: PacketPool<EchoClient<P>>,
    /// The GPADL over the bulk buffer, between [`Session::open`] and [`Session::close`].
    bulk: Option<Gpadl<EchoClient<P>, Box<[Page]>>>,
    /// The bulk buffer while no GPADL shares it.
    bulk_buffer: Option<Box<[Page]>>,
}

impl<P: Platform> EchoChannel<P> {
    /// The client (counters, latency, negotiated version).
    #[must_use]
    pub fn client(&self) -> &EchoClient<P> {
        self.channel.handler()
    }

    /// The channel.
    #[must_use]
    pub fn channel(&self) -> &Channel<EchoClient<P>> {
        &self.channel
    }

    /// The channel, for lifecycle calls outside a [`Session`] (tests and diagnostics; a
    /// session's open and close do the right thing for normal use).
    #[must_use]
    pub fn channel_mut(&mut self) -> &mut Channel<EchoClient<P>> {
        &mut self.channel
    }

    /// A counted reference to the channel, for state kept beside it: the thread or work item
    /// that runs [`EchoClient::complete_acks`] holds one.
    #[must_use]
    pub fn new_ref(&self) -> ChannelRef<EchoClient<P>> {
        self.channel.new_ref()
    }

    /// True while the channel is enabled.
    #[must_use]
    pub fn is_enabled(&self) -> bool {
        self.channel.is_enabled()
    }

    /// The packet pool every request is sent from.
    #[must_use]
    pub fn pool(&self) -> &PacketPool<EchoClient<P>> {
        &self.pool
    }

    /// The handle of the bulk GPADL while a session shares the bulk buffer.
    #[must_use]
    pub fn bulk_gpadl(&self) -> Option<u32> {
        self.bulk.as_ref().map(Gpadl::handle)
    }

    /// Bytes of the bulk buffer (whole pages; 0 without one).
    #[must_use]
    pub fn bulk_len(&self) -> usize {
        match (&self.bulk, &self.bulk_buffer) {
            (Some(gpadl), _) => gpadl.len(),
            (None, Some(buffer)) => buffer.len().saturating_mul(size_of::<Page>()),
            (None, None) => 0,
        }
    }

    /// Sends a request (completion requested, `index` as its context) from the pool, or with
    /// a packet from KMCL's allocator when the pool is empty. No allocation by the driver.
    fn send_request(&self, message: &[u8], index: usize) -> Result<(), NtStatus> {
        let counters = &self.client().counters;
        match self
            .pool
            .send(message, SendFlags::WAIT_FOR_COMPLETION, index)
        {
            Ok(()) => {
                bump(&counters.sends_pooled);
                Ok(())
            }
            Err(status) if status == NtStatus::INSUFFICIENT_RESOURCES => {
                self.channel
                    .send(message, SendFlags::WAIT_FOR_COMPLETION, index)?;
                bump(&counters.sends_allocated);
                Ok(())
            }
            Err(status) => Err(status),
        }
    }
}

/// Dropping without [`Session::close`]: the pended host packets in the client's queue hold
/// references to the channel, so they must not outlive its teardown. Disabling cancels them
/// (`VmbChannelPacketFail`, through the library) and the suspend callback, or the drain here,
/// drops them; then the owner's drop tears the channel down and frees it.
impl<P: Platform> Drop for EchoChannel<P> {
    fn drop(&mut self) {
        if let Some(irql) = PassiveLevel::check() {
            self.channel.disable(&irql);
        }
        self.client().complete_acks();
    }
}

impl<P: Platform> core::fmt::Debug for EchoChannel<P> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("EchoChannel")
            .field("channel", &self.channel)
            .field("pool", &self.pool)
            .field("bulk_gpadl", &self.bulk_gpadl())
            .finish_non_exhaustive()
    }
}

impl<P: Platform> core::fmt::Debug for EchoClient<P> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("EchoClient")
            .field("config", &self.config)
            .field("negotiated_version", &self.negotiated_version())
            .field("host_closed", &self.host_closed())
            .field("requests_in_flight", &self.requests_in_flight())
            .finish_non_exhaustive()
    }
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
            acks: AckQueue::new(),
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

    /// Host packets pended and not yet acknowledged (or cancelled).
    #[must_use]
    pub fn acks_outstanding(&self) -> u64 {
        let c = &self.counters;
        read(&c.acks_pended)
            .saturating_sub(read(&c.acks_completed))
            .saturating_sub(read(&c.acks_cancelled))
    }

    /// Completes every queued pended host packet with its acknowledgement
    /// (`VmbChannelPacketComplete` through [`PendedPacket::complete`]); returns how many it
    /// took from the queue. The platform calls it from another thread after
    /// [`Platform::acks_queued`]; [`Session::close`] and the suspend and closed callbacks call it
    /// too, so nothing is left when the channel stops. Concurrent calls are fine. A packet that
    /// a disable cancelled first is counted in [`Counters::acks_cancelled`].
    ///
    /// Allocation-free; never blocks. IRQL: ≤ DISPATCH_LEVEL.
    pub fn complete_acks(&self) -> usize {
        let mut completed = 0_usize;
        while let Some((packet, ack)) = self.acks.pop() {
            self.finish_ack(packet, ack);
            completed = completed.saturating_add(1);
        }
        if completed > 0 {
            self.platform.notify();
        }
        completed
    }

    /// Completes one pended packet with `ack`.
    fn finish_ack(&self, packet: PendedPacket<Self>, ack: Ack) {
        let mut buf = [0_u8; ACK_MESSAGE];
        match packet.complete(ack.encode(&mut buf)) {
            Ok(()) => bump(&self.counters.acks_completed),
            Err(_) => bump(&self.counters.acks_cancelled),
        }
    }

    /// Validates a host packet (already copied out of host memory) and counts the verdict;
    /// returns the acknowledgement to send.
    fn receive(&self, data: &[u8], flags: ProcessPacketFlags) -> Ack {
        let version = self.negotiated.load(Ordering::Acquire);
        match self.check_notification(data, flags) {
            Ok((sequence, bytes)) => {
                bump(&self.counters.notifications_ok);
                add(&self.counters.notification_bytes, bytes);
                Ack {
                    status: 0,
                    version,
                    sequence,
                }
            }
            Err(error) => {
                self.counters.reject(&error);
                Ack {
                    status: error.reason().code(),
                    version,
                    sequence: protocol::parse(data).map_or(0, |m| m.sequence()),
                }
            }
        }
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

    /// Waits until `done()` holds or the deadline passes; true if it holds. PASSIVE_LEVEL.
    fn wait_until(&self, deadline_ns: u64, mut done: impl FnMut() -> bool) -> bool {
        let platform = &self.platform;
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

    /// Now plus the configured timeout.
    fn deadline(&self) -> u64 {
        self.platform
            .now_ns()
            .saturating_add(self.config.timeout_ns)
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

    /// Delivery stops (pause, close, rescind): KMCL waits for every incoming packet, so the
    /// pended ones are acknowledged now rather than by the worker.
    fn suspend(&self, _channel: &ChannelCore<Self>, _irql: &PassiveLevel) {
        self.complete_acks();
    }

    fn closed(&self, _channel: &ChannelCore<Self>, _irql: &PassiveLevel) {
        self.host_closed.store(true, Ordering::Release);
        self.complete_acks();
        self.platform.notify();
    }

    /// The receive path: copies the host message out of host memory, validates the copy
    /// (counting the verdict), and pends the packet ([`IncomingPacket::pend`]) with its
    /// [`NotificationAck`] (0 or the rejection's code) in the acknowledgement queue, for
    /// [`EchoClient::complete_acks`] on another thread. When the pend table is full it
    /// completes the packet here instead. Runs at ≤ DISPATCH_LEVEL, never allocates, never
    /// panics, never leaves a packet uncompleted.
    fn process_packet(&self, _channel: &ChannelCore<Self>, packet: IncomingPacket<'_, Self>) {
        bump(&self.counters.incoming);
        // The only read of host memory: one copy, then everything looks at the copy.
        let mut copy = [0_u8; RECEIVE_BUFFER];
        let copied = packet.copy_data(&mut copy);
        let data = copy.get(..copied).unwrap_or(&[]);
        let ack = self.receive(data, packet.flags());
        match packet.pend() {
            Ok(pended) => {
                bump(&self.counters.acks_pended);
                match self.acks.push(pended, ack) {
                    Ok(()) => self.platform.acks_queued(),
                    // Cannot happen (the queue is as large as the pend table): complete now.
                    Err(pended) => self.finish_ack(pended, ack),
                }
            }
            Err(packet) => {
                bump(&self.counters.acks_inline);
                let mut buf = [0_u8; ACK_MESSAGE];
                let _ = packet.complete(ack.encode(&mut buf));
            }
        }
        self.platform.notify();
    }

    /// The completion path: copies the host's response out of host memory and validates the
    /// copy against request slot `context`.
    fn packet_completed(&self, _channel: &ChannelCore<Self>, completion: Completion<'_, usize>) {
        let Some(slot) = self.slot(completion.context) else {
            return;
        };
        let mut copy = [0_u8; RECEIVE_BUFFER];
        let copied = completion.response.copy_to(&mut copy);
        let response = copy.get(..copied).unwrap_or(&[]);
        let kind = Kind::from_raw(slot.kind.load(Ordering::Relaxed));
        match (slot.state.load(Ordering::Acquire), kind) {
            (ASYNC, Some(Kind::Ping)) => {
                self.finish_ping(slot, completion.status, response);
            }
            (PENDING, Some(kind)) => {
                self.finish_pending(kind, slot, completion.status, response);
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

/// An echo session over an open [`EchoChannel`]: every operation of the protocol.
///
/// A session borrows the channel exclusively and holds the PASSIVE_LEVEL token of the thread
/// that runs it (so it cannot move to another thread). Its state lives in the channel (the
/// [`EchoClient`], the bulk GPADL), so a driver can rebuild it in every PASSIVE_LEVEL callback
/// with [`Session::attach`].
pub struct Session<'c, P: Platform> {
    echo: &'c mut EchoChannel<P>,
    irql: &'c PassiveLevel,
}

impl<P: Platform> core::fmt::Debug for Session<'_, P> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Session")
            .field("version", &self.client().negotiated_version())
            .field("bulk_gpadl", &self.echo.bulk_gpadl())
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
    /// Opens the channel (`VmbChannelEnable`), negotiates the protocol version (a
    /// [`VersionRequest`] for `MIN_VERSION..=MAX_VERSION`, waiting for the host's choice) and,
    /// on version 2, shares the bulk buffer through a GPADL
    /// (`VmbChannelCreateGpadlFromBuffer`) that stays until [`close`](Self::close). On any
    /// failure the channel is disabled again.
    ///
    /// # Errors
    /// [`EchoError::Kmcl`] from enable, the send or the GPADL;
    /// [`EchoError::NoCommonVersion`]; [`EchoError::Rejected`] for an invalid response;
    /// [`EchoError::Timeout`]; [`EchoError::Completion`].
    ///
    /// IRQL: PASSIVE_LEVEL (the token).
    pub fn open(echo: &'c mut EchoChannel<P>, irql: &'c PassiveLevel) -> Result<Self, EchoError> {
        let client = echo.client();
        client.negotiated.store(0, Ordering::Release);
        client.host_closed.store(false, Ordering::Release);
        client.last_notification.store(0, Ordering::Release);
        echo.channel.enable(irql)?;
        let mut session = Self { echo, irql };
        let opened = session.negotiate();
        match opened.and_then(|()| session.share_bulk_buffer()) {
            Ok(()) => Ok(session),
            Err(error) => {
                session.client().negotiated.store(0, Ordering::Release);
                session.echo.channel.disable(irql);
                Err(error)
            }
        }
    }

    /// A session over a channel opened earlier with [`Session::open`].
    ///
    /// # Errors
    /// [`EchoError::NotOpen`] when the channel is not enabled or no version is negotiated.
    pub fn attach(echo: &'c mut EchoChannel<P>, irql: &'c PassiveLevel) -> Result<Self, EchoError> {
        if echo.is_enabled() && echo.client().negotiated_version().is_some() {
            Ok(Self { echo, irql })
        } else {
            Err(EchoError::NotOpen)
        }
    }

    /// The client (counters, latency, negotiated version).
    #[must_use]
    pub fn client(&self) -> &EchoClient<P> {
        self.echo.client()
    }

    /// The channel and what lives beside it.
    #[must_use]
    pub fn channel(&self) -> &EchoChannel<P> {
        self.echo
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

    /// Version 2: creates the GPADL over the bulk buffer (once per session).
    fn share_bulk_buffer(&mut self) -> Result<(), EchoError> {
        if self.version()? < protocol::VERSION_2 || self.echo.bulk.is_some() {
            return Ok(());
        }
        let Some(buffer) = self.echo.bulk_buffer.take() else {
            return Ok(());
        };
        match self
            .echo
            .channel
            .create_gpadl(self.irql, buffer, GpadlFlags::empty())
        {
            Ok(gpadl) => {
                self.echo.bulk = Some(gpadl);
                Ok(())
            }
            Err(error) => {
                self.echo.bulk_buffer = Some(error.buffer);
                Err(EchoError::Kmcl(error.status))
            }
        }
    }

    /// Reserves a slot, waiting up to the timeout for one.
    fn reserve(&self) -> Result<usize, EchoError> {
        let client = self.client();
        let mut index = None;
        let deadline = client.deadline();
        client.wait_until(deadline, || {
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
        let Some(message) = buf.get(..len) else {
            client.release(index);
            return Err(EchoError::InvalidArgument);
        };
        slot.kind.store(kind as u8, Ordering::Relaxed);
        slot.sequence.store(sequence, Ordering::Relaxed);
        slot.expect.store(expect, Ordering::Relaxed);
        slot.outcome.store(0, Ordering::Relaxed);
        slot.sent_at
            .store(client.platform().now_ns(), Ordering::Relaxed);
        slot.state.store(PENDING, Ordering::Release);
        if let Err(status) = self.echo.send_request(message, index) {
            bump(&client.counters.send_failures);
            client.release(index);
            return Err(EchoError::Kmcl(status));
        }
        bump(&client.counters.packets_sent);
        if kind == Kind::Ping {
            bump(&client.counters.pings_sent);
            add(&client.counters.ping_bytes_sent, expect);
        }
        let deadline = client.deadline();
        client.wait_until(deadline, || {
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

    /// Sends `count` pings of `payload_len` pattern bytes from the packet pool, at most
    /// [`EchoConfig::window`] in flight, and waits for every completion. Each completion is
    /// copied out of host memory and validated (type, version, sequence, length, every byte)
    /// and its round-trip time recorded in [`EchoClient::latency`]. `scratch` holds one
    /// message at a time (`HEADER_SIZE + payload_len` bytes).
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
            let deadline = client.deadline();
            let room = client.wait_until(deadline, || {
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
            if let Err(status) = self.echo.send_request(message, index) {
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
        let deadline = client.deadline();
        let drained = client.wait_until(deadline, || {
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
            ok: after.pings_ok.saturating_sub(before.pings_ok),
            failed: after.pings_failed.saturating_sub(before.pings_failed),
            bytes: after
                .ping_bytes_echoed
                .saturating_sub(before.ping_bytes_echoed),
            elapsed_ns: client.platform().now_ns().saturating_sub(start),
        })
    }

    /// Asks the host for `count` notifications of `payload_len` bytes (a [`NotifyRequest`]),
    /// then waits until that many valid notifications have been received and every pended host
    /// packet has been acknowledged (the receive path, [`EchoClient`]'s `process_packet`, and
    /// [`EchoClient::complete_acks`] on the platform's worker).
    ///
    /// # Errors
    /// [`EchoError::InvalidArgument`] for a zero count or a payload over
    /// [`protocol::MAX_PAYLOAD`]; [`EchoError::Rejected`] when the host refuses;
    /// [`EchoError::Timeout`] when the notifications do not all arrive or are not all
    /// acknowledged in time; as [`ping_burst`](Self::ping_burst).
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
        let target = before.saturating_add(u64::from(count));
        let deadline = client.deadline();
        let all = client.wait_until(deadline, || {
            (read(&client.counters.notifications_ok) >= target && client.acks_outstanding() == 0)
                || client.host_closed()
        });
        if client.host_closed() {
            Err(EchoError::HostClosed)
        } else if all {
            Ok(())
        } else {
            Err(EchoError::Timeout)
        }
    }

    /// The bulk transfer (protocol version 2) over the session's GPADL: zeroes the first
    /// `length` bytes of the bulk buffer, asks the host to fill them with the pattern of `seed`
    /// ([`BulkRequest`] with the GPADL's handle), waits for the [`BulkResponse`], and checks
    /// every byte, copied out of the shared buffer chunk by chunk ([`Gpadl::read`]). Stale
    /// contents cannot pass (they were zeroed). The GPADL stays for the next transfer.
    ///
    /// # Errors
    /// [`EchoError::NotSupported`] on version 1 or without a bulk buffer;
    /// [`EchoError::InvalidArgument`] for a length of 0 or beyond the bulk buffer
    /// ([`EchoChannel::bulk_len`]); [`EchoError::Kmcl`] from the send;
    /// [`EchoError::Rejected`] (with [`ProtocolError::PayloadMismatch`] when the contents are
    /// wrong); [`EchoError::Timeout`].
    ///
    /// IRQL: PASSIVE_LEVEL.
    pub fn bulk(&mut self, length: usize, seed: u64) -> Result<(), EchoError> {
        let result = self.bulk_inner(length, seed);
        let counters = &self.client().counters;
        match result {
            Ok(bytes) => {
                bump(&counters.bulk_ok);
                add(&counters.bulk_bytes, bytes);
                Ok(())
            }
            Err(error) => {
                bump(&counters.bulk_failed);
                Err(error)
            }
        }
    }

    fn bulk_inner(&mut self, length: usize, seed: u64) -> Result<u64, EchoError> {
        let version = self.version()?;
        if version < protocol::VERSION_2 {
            return Err(EchoError::NotSupported);
        }
        let gpadl = self.echo.bulk.as_mut().ok_or(EchoError::NotSupported)?;
        if length == 0 || length > gpadl.len() {
            return Err(EchoError::InvalidArgument);
        }
        let length32 = u32::try_from(length).map_err(|_| EchoError::InvalidArgument)?;
        let mut offset = 0_usize;
        while offset < length {
            let n = BULK_CHUNK.min(length - offset);
            let zeroes = ZEROES.get(..n).ok_or(EchoError::InvalidArgument)?;
            gpadl.write(offset, zeroes)?;
            offset += n;
        }
        let body = BulkRequest {
            gpadl: U32::new(gpadl.handle()),
            length: U32::new(length32),
            seed: U64::new(seed),
        };
        let mut buf = [0_u8; protocol::HEADER_SIZE + size_of::<BulkRequest>()];
        let waited = self.request(
            Kind::Bulk,
            u64::from(length32),
            &mut buf,
            |buf, sequence| {
                protocol::encode_body(buf, MessageType::BulkRequest, version, sequence, &body)
            },
        )?;
        match waited {
            Waited::Ok(_) => {}
            Waited::Rejected(error) => return Err(EchoError::Rejected(error)),
            Waited::Failed(status) => return Err(EchoError::Completion(status)),
        }
        let gpadl = self.echo.bulk.as_ref().ok_or(EchoError::NotSupported)?;
        let mut chunk = [0_u8; BULK_CHUNK];
        let mut offset = 0_usize;
        while offset < length {
            let n = chunk.len().min(length - offset);
            let part = chunk.get_mut(..n).ok_or(EchoError::InvalidArgument)?;
            gpadl.read(offset, part)?;
            if !protocol::check_pattern(part, seed, offset as u64) {
                let error = ProtocolError::PayloadMismatch;
                self.client().counters.reject(&error);
                return Err(EchoError::Rejected(error));
            }
            offset += n;
        }
        Ok(u64::from(length32))
    }

    /// The synchronous request: sends a [`SyncRequest`] for `value` with
    /// `VmbChannelSendSynchronousRequest` (KMCL copies the response into a 64-byte buffer of
    /// the driver's) and returns the host's validated answer
    /// ([`protocol::sync_answer`]`(value)`).
    ///
    /// # Errors
    /// [`EchoError::Kmcl`] (e.g. `STATUS_TIMEOUT`), [`EchoError::Rejected`] (also for a
    /// response over 64 bytes, `STATUS_BUFFER_OVERFLOW`), [`EchoError::NotOpen`],
    /// [`EchoError::HostClosed`].
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
        let received = match self.echo.channel.send_synchronous(
            self.irql,
            message,
            SendFlags::WAIT_FOR_COMPLETION,
            &mut response,
            timeout,
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

    /// Stops packet delivery (`VmbChannelPause`), e.g. when the device leaves D0. Pended host
    /// packets are acknowledged first (the suspend callback).
    ///
    /// # Errors
    /// [`EchoError::Kmcl`] when the channel is not enabled.
    ///
    /// IRQL: PASSIVE_LEVEL.
    pub fn pause(&mut self) -> Result<(), EchoError> {
        Ok(self.echo.channel.pause(self.irql)?)
    }

    /// Resumes packet delivery after [`pause`](Self::pause) (`VmbChannelStart`).
    ///
    /// # Errors
    /// [`EchoError::Kmcl`] when the channel is not enabled.
    ///
    /// IRQL: PASSIVE_LEVEL.
    pub fn resume(&mut self) -> Result<(), EchoError> {
        Ok(self.echo.channel.start(self.irql)?)
    }

    /// Closes the session: says goodbye to the host (a [`MessageType::Goodbye`] request,
    /// skipped when the host already closed the channel), waits (bounded) until the worker has
    /// acknowledged every pended host packet and acknowledges any left itself, deletes the
    /// bulk GPADL (`VmbChannelDeleteGpadl`; the buffer is kept for the next open), then
    /// disables the channel (`VmbChannelDisable`, which waits for every callback and cancels
    /// requests in flight). The channel is disabled whatever the goodbye's outcome; it can be
    /// opened again, or dropped to tear it down.
    ///
    /// # Errors
    /// The goodbye's failure ([`EchoError::Kmcl`], [`EchoError::Rejected`],
    /// [`EchoError::Timeout`], [`EchoError::Completion`]); the channel is closed anyway.
    ///
    /// IRQL: PASSIVE_LEVEL.
    pub fn close(self) -> Result<(), EchoError> {
        let result = match (
            self.client().host_closed(),
            self.client().negotiated_version(),
        ) {
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
        let Self { echo, irql } = self;
        let client = echo.channel.handler();
        let deadline = client.deadline();
        client.wait_until(deadline, || client.acks_outstanding() == 0);
        client.complete_acks();
        client.negotiated.store(0, Ordering::Release);
        if let Some(gpadl) = echo.bulk.take() {
            echo.bulk_buffer = Some(gpadl.delete(irql));
        }
        echo.channel.disable(irql);
        result
    }
}
