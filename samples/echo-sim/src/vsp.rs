//! The host side of the echo protocol: [`EchoHost`], a `vmbus-kmcl-sim` [`HostDevice`] (VSP)
//! that negotiates, answers pings in their completions, sends notifications, fills bulk
//! GPADLs and answers synchronous requests, and on request behaves as a hostile host.
//!
//! It validates every guest message with the same strict parser the driver uses and counts
//! what it did, including every hostile message it sent and the rejection it expects the
//! driver to report for it, so a harness can check the driver counted exactly those.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use vmbus_echo::protocol::{
    self, BulkRequest, BulkResponse, Header, Message, MessageType, NotificationAck, NotifyRequest,
    NotifyResponse, RejectReason, StatusBody, SyncRequest, SyncResponse, VersionRequest,
    VersionResponse,
};
use vmbus_kmcl::sys::NTSTATUS;
use vmbus_kmcl_sim::{HostChannel, HostCompletion, HostDevice, HostPacket, HostPacketKind};
use zerocopy::IntoBytes;
use zerocopy::little_endian::{U16, U32, U64};

/// How an [`EchoHost`] behaves.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HostConfig {
    /// Oldest protocol version the host accepts.
    pub min_version: u16,
    /// Newest protocol version the host speaks.
    pub max_version: u16,
    /// 0: an honest host. `k > 0`: every `k`-th ping response is corrupted (rotating through
    /// [`HostileKind::PING`]) and followed by one hostile unsolicited packet (rotating through
    /// [`HostileKind::UNSOLICITED`]); the first synchronous request gets a wrong answer and the
    /// first bulk transfer a wrong pattern.
    pub hostile_every: u32,
}

impl HostConfig {
    /// An honest host speaking versions 1 and 2.
    pub const HONEST: Self = Self {
        min_version: protocol::MIN_VERSION,
        max_version: protocol::MAX_VERSION,
        hostile_every: 0,
    };
}

impl Default for HostConfig {
    fn default() -> Self {
        Self::HONEST
    }
}

/// One way a hostile host breaks the protocol, and the rejection the driver must report.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum HostileKind {
    /// Fewer bytes than a header.
    Truncated,
    /// Random bytes (magic forced wrong).
    Garbage,
    /// An undefined type value.
    UnknownType,
    /// Reserved flags set.
    BadFlags,
    /// The declared payload length exceeds the bytes sent.
    BadLength,
    /// A well-formed message of a type the driver does not accept there.
    WrongType,
    /// A version other than the negotiated one.
    BadVersion,
    /// A sequence number other than the expected one.
    BadSequence,
    /// Right header, wrong payload bytes.
    CorruptPayload,
}

impl HostileKind {
    /// The corruptions applied to ping responses.
    pub const PING: [Self; 9] = [
        Self::Truncated,
        Self::Garbage,
        Self::UnknownType,
        Self::BadFlags,
        Self::BadLength,
        Self::WrongType,
        Self::BadVersion,
        Self::BadSequence,
        Self::CorruptPayload,
    ];

    /// The hostile unsolicited packets (the receive path).
    pub const UNSOLICITED: [Self; 9] = Self::PING;

    /// The rejection the driver reports.
    #[must_use]
    pub const fn reason(self) -> RejectReason {
        match self {
            Self::Truncated => RejectReason::TooShort,
            Self::Garbage => RejectReason::BadMagic,
            Self::UnknownType => RejectReason::UnknownType,
            Self::BadFlags => RejectReason::BadFlags,
            Self::BadLength => RejectReason::BadLength,
            Self::WrongType => RejectReason::UnexpectedType,
            Self::BadVersion => RejectReason::BadVersion,
            Self::BadSequence => RejectReason::BadSequence,
            Self::CorruptPayload => RejectReason::PayloadMismatch,
        }
    }
}

/// What an [`EchoHost`] saw and did (cumulative over every open).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HostStats {
    /// Channels opened on the host.
    pub opens: u64,
    /// Channels closed.
    pub closes: u64,
    /// The version negotiated on the last open (0: none).
    pub negotiated: u16,
    /// Version requests answered.
    pub version_requests: u64,
    /// Ping requests answered (honestly or not).
    pub pings: u64,
    /// Ping payload bytes received.
    pub ping_bytes: u64,
    /// Notify requests accepted.
    pub notify_requests: u64,
    /// Valid notifications sent.
    pub notifications_sent: u64,
    /// Valid notifications the driver acknowledged with status 0.
    pub notifications_acked: u64,
    /// Bulk requests served.
    pub bulk_requests: u64,
    /// Bytes written into guest GPADLs.
    pub bulk_bytes: u64,
    /// Synchronous requests answered.
    pub sync_requests: u64,
    /// Goodbyes received.
    pub goodbyes: u64,
    /// Guest messages that failed validation (the driver sent something malformed).
    pub guest_errors: u64,
    /// Ping responses corrupted on purpose.
    pub corrupted_pings: u64,
    /// Hostile unsolicited packets sent.
    pub hostile_unsolicited: u64,
    /// Synchronous requests answered wrongly on purpose.
    pub hostile_sync: u64,
    /// Bulk transfers filled wrongly on purpose.
    pub hostile_bulk: u64,
    /// Hostile messages sent, by the [`RejectReason`] the driver must report.
    pub injected: [u64; RejectReason::COUNT],
    /// Hostile unsolicited packets the driver acknowledged with the expected rejection code.
    pub hostile_acked: u64,
    /// Acknowledgements whose status or sequence was not what the host expected.
    pub ack_mismatches: u64,
    /// Completions of packets the host's session did not send itself (a test injected them
    /// with `Offer::host_send`).
    pub untracked_acks: u64,
    /// Of those, the well-formed `NotificationAck`s with status 0 (accepted).
    pub untracked_acks_ok: u64,
    /// Sends or completions the emulator refused.
    pub host_errors: u64,
}

impl HostStats {
    /// Hostile messages sent, all reasons.
    #[must_use]
    pub fn injected_total(&self) -> u64 {
        self.injected.iter().sum()
    }
}

/// What the host expects back for a packet it sent.
#[derive(Clone, Copy, Debug)]
enum Expect {
    /// A valid notification with this sequence: ack status 0.
    Valid(u64),
    /// A hostile packet: ack status is this reason's code.
    Rejected(RejectReason),
}

#[derive(Default)]
struct Shared {
    stats: HostStats,
}

/// Per-open state.
#[derive(Default)]
struct Session {
    negotiated: u16,
    next_notification: u64,
    pending: HashMap<u64, Expect>,
    hostile_ping_index: usize,
    hostile_unsolicited_index: usize,
    sync_seen: bool,
    bulk_seen: bool,
}

/// The echo VSP. Create it with [`EchoHost::new`], offer it on a `Vmbus`, and read its
/// [`HostStats`] through the [`HostControl`].
pub struct EchoHost {
    config: HostConfig,
    shared: Arc<Mutex<Shared>>,
    session: Session,
}

/// Reads an [`EchoHost`]'s statistics from another thread. Cheap to clone.
#[derive(Clone)]
pub struct HostControl {
    shared: Arc<Mutex<Shared>>,
}

impl core::fmt::Debug for EchoHost {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("EchoHost")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl core::fmt::Debug for HostControl {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("HostControl")
            .field("stats", &self.stats())
            .finish()
    }
}

fn lock(shared: &Mutex<Shared>) -> MutexGuard<'_, Shared> {
    shared.lock().unwrap_or_else(PoisonError::into_inner)
}

impl HostControl {
    /// The statistics so far.
    #[must_use]
    pub fn stats(&self) -> HostStats {
        lock(&self.shared).stats
    }
}

/// A message buffer for one response.
fn message(message_type: MessageType, version: u16, sequence: u64, payload: &[u8]) -> Vec<u8> {
    let mut out = protocol::header(
        message_type,
        version,
        sequence,
        u32::try_from(payload.len()).unwrap_or(u32::MAX),
    )
    .as_bytes()
    .to_vec();
    out.extend_from_slice(payload);
    out
}

/// A deterministic byte stream for garbage (xorshift).
fn garbage(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x.to_le_bytes()[0]
        })
        .collect()
}

/// Rewrites header fields of an encoded message.
fn patch(bytes: &mut [u8], f: impl FnOnce(&mut Header)) {
    if let Some(head) = bytes.get_mut(..protocol::HEADER_SIZE)
        && let Ok(header) = zerocopy::FromBytes::mut_from_bytes(head)
    {
        f(header);
    }
}

/// Applies `kind` to a well-formed `message` (which must have a variable-size type so that a
/// wrong type stays structurally valid).
fn corrupt(kind: HostileKind, mut bytes: Vec<u8>, seed: u64, wrong_type: MessageType) -> Vec<u8> {
    match kind {
        HostileKind::Truncated => garbage(seed, 10),
        HostileKind::Garbage => {
            let mut g = garbage(seed, protocol::HEADER_SIZE + 16);
            if let Some(first) = g.first_mut() {
                *first = !b'E';
            }
            g
        }
        HostileKind::UnknownType => {
            patch(&mut bytes, |h| h.message_type = U16::new(99));
            bytes
        }
        HostileKind::BadFlags => {
            patch(&mut bytes, |h| h.flags = U32::new(0x8000_0000));
            bytes
        }
        HostileKind::BadLength => {
            patch(&mut bytes, |h| {
                h.payload_len = U32::new(h.payload_len.get() + 16)
            });
            bytes
        }
        HostileKind::WrongType => {
            patch(&mut bytes, |h| h.message_type = U16::new(wrong_type.raw()));
            bytes
        }
        HostileKind::BadVersion => {
            patch(&mut bytes, |h| {
                h.version = U16::new(h.version.get().wrapping_add(7))
            });
            bytes
        }
        HostileKind::BadSequence => {
            patch(&mut bytes, |h| {
                h.sequence = U64::new(h.sequence.get().wrapping_add(1000));
            });
            bytes
        }
        HostileKind::CorruptPayload => {
            if let Some(last) = bytes.last_mut() {
                *last ^= 0x5a;
            }
            bytes
        }
    }
}

impl EchoHost {
    /// A host with `config`, and the handle to read its statistics.
    #[must_use]
    pub fn new(config: HostConfig) -> (Self, HostControl) {
        let shared = Arc::new(Mutex::new(Shared::default()));
        (
            Self {
                config,
                shared: Arc::clone(&shared),
                session: Session::default(),
            },
            HostControl { shared },
        )
    }

    fn stats(&self) -> MutexGuard<'_, Shared> {
        lock(&self.shared)
    }

    fn hostile(&self) -> bool {
        self.config.hostile_every > 0
    }

    fn complete(&self, channel: &mut HostChannel, packet: &HostPacket, response: &[u8]) {
        if packet.completion_requested()
            && channel.complete(packet.transaction_id(), response).is_err()
        {
            self.stats().stats.host_errors += 1;
        }
    }

    /// Counts a malformed guest message and completes it with nothing.
    fn guest_error(&self, channel: &mut HostChannel, packet: &HostPacket) {
        self.stats().stats.guest_errors += 1;
        self.complete(channel, packet, &[]);
    }

    fn record_injected(&self, reason: RejectReason) {
        if let Some(slot) = self.stats().stats.injected.get_mut(reason.index()) {
            *slot += 1;
        }
    }

    fn on_version(&mut self, channel: &mut HostChannel, packet: &HostPacket, m: &Message<'_>) {
        let Ok(body) = m.body::<VersionRequest>() else {
            return self.guest_error(channel, packet);
        };
        let (low, high) = (body.min_version.get(), body.max_version.get());
        let chosen = high.min(self.config.max_version);
        let accepted = low <= high && chosen >= low.max(self.config.min_version);
        let (status, version) = if accepted {
            (protocol::STATUS_OK, chosen)
        } else {
            (protocol::STATUS_UNSUPPORTED, self.config.max_version)
        };
        self.session = Session {
            negotiated: if accepted { version } else { 0 },
            next_notification: 1,
            ..Session::default()
        };
        {
            let mut s = self.stats();
            s.stats.version_requests += 1;
            s.stats.negotiated = self.session.negotiated;
        }
        let response = VersionResponse {
            status: U32::new(status),
            version: U16::new(version),
            reserved: U16::new(0),
        };
        let bytes = message(
            MessageType::VersionResponse,
            version,
            m.sequence(),
            response.as_bytes(),
        );
        self.complete(channel, packet, &bytes);
    }

    fn on_ping(&mut self, channel: &mut HostChannel, packet: &HostPacket, m: &Message<'_>) {
        if !protocol::check_pattern(m.payload(), m.sequence(), 0) {
            return self.guest_error(channel, packet);
        }
        let count = {
            let mut s = self.stats();
            s.stats.pings += 1;
            s.stats.ping_bytes += m.payload().len() as u64;
            s.stats.pings
        };
        let honest = message(
            MessageType::PingResponse,
            self.session.negotiated,
            m.sequence(),
            m.payload(),
        );
        let every = u64::from(self.config.hostile_every);
        if every == 0 || count % every != 0 {
            return self.complete(channel, packet, &honest);
        }
        let index = self.session.hostile_ping_index;
        self.session.hostile_ping_index += 1;
        let mut kind = HostileKind::PING
            .get(index % HostileKind::PING.len())
            .copied()
            .unwrap_or(HostileKind::Garbage);
        if kind == HostileKind::CorruptPayload && m.payload().is_empty() {
            kind = HostileKind::BadSequence;
        }
        let bytes = corrupt(kind, honest, count, MessageType::Notification);
        self.record_injected(kind.reason());
        self.stats().stats.corrupted_pings += 1;
        self.complete(channel, packet, &bytes);
        self.send_hostile_unsolicited(channel, count);
    }

    /// One hostile unsolicited packet (completion requested), remembered with the rejection
    /// the driver's acknowledgement must carry.
    fn send_hostile_unsolicited(&mut self, channel: &mut HostChannel, seed: u64) {
        let index = self.session.hostile_unsolicited_index;
        self.session.hostile_unsolicited_index += 1;
        let kind = HostileKind::UNSOLICITED
            .get(index % HostileKind::UNSOLICITED.len())
            .copied()
            .unwrap_or(HostileKind::Garbage);
        let sequence = self.session.next_notification;
        let mut payload = vec![0_u8; 16];
        protocol::fill_pattern(&mut payload, sequence, 0);
        let valid = message(
            MessageType::Notification,
            self.session.negotiated,
            sequence,
            &payload,
        );
        let bytes = corrupt(kind, valid, seed, MessageType::PingRequest);
        match channel.send(&bytes, true) {
            Ok(txid) => {
                self.session
                    .pending
                    .insert(txid, Expect::Rejected(kind.reason()));
                self.record_injected(kind.reason());
                self.stats().stats.hostile_unsolicited += 1;
            }
            Err(_) => self.stats().stats.host_errors += 1,
        }
    }

    fn on_notify(&mut self, channel: &mut HostChannel, packet: &HostPacket, m: &Message<'_>) {
        let Ok(body) = m.body::<NotifyRequest>() else {
            return self.guest_error(channel, packet);
        };
        let count = body.count.get();
        let payload_len = body.payload_len.get() as usize;
        let ok = count > 0 && payload_len <= protocol::MAX_PAYLOAD;
        let response = NotifyResponse {
            status: U32::new(if ok {
                protocol::STATUS_OK
            } else {
                protocol::STATUS_INVALID
            }),
            count: U32::new(if ok { count } else { 0 }),
        };
        let bytes = message(
            MessageType::NotifyResponse,
            self.session.negotiated,
            m.sequence(),
            response.as_bytes(),
        );
        self.complete(channel, packet, &bytes);
        if !ok {
            return;
        }
        self.stats().stats.notify_requests += 1;
        let mut payload = vec![0_u8; payload_len];
        for _ in 0..count {
            let sequence = self.session.next_notification;
            protocol::fill_pattern(&mut payload, sequence, 0);
            let bytes = message(
                MessageType::Notification,
                self.session.negotiated,
                sequence,
                &payload,
            );
            match channel.send(&bytes, true) {
                Ok(txid) => {
                    self.session.pending.insert(txid, Expect::Valid(sequence));
                    self.session.next_notification += 1;
                    self.stats().stats.notifications_sent += 1;
                }
                Err(_) => {
                    self.stats().stats.host_errors += 1;
                    break;
                }
            }
        }
    }

    fn on_bulk(&mut self, channel: &mut HostChannel, packet: &HostPacket, m: &Message<'_>) {
        let Ok(body) = m.body::<BulkRequest>() else {
            return self.guest_error(channel, packet);
        };
        let length = body.length.get() as usize;
        let mut seed = body.seed.get();
        let hostile = self.hostile() && !self.session.bulk_seen;
        self.session.bulk_seen = true;
        if hostile {
            seed = !seed;
        }
        let view = channel.gpadl(body.gpadl.get());
        let mut written = 0_usize;
        let filled = view.is_some_and(|view| {
            if length == 0 || length > view.len() {
                return false;
            }
            let mut chunk = vec![0_u8; 4096];
            while written < length {
                let n = chunk.len().min(length - written);
                let Some(part) = chunk.get_mut(..n) else {
                    return false;
                };
                protocol::fill_pattern(part, seed, written as u64);
                if view.write(written, part).is_err() {
                    return false;
                }
                written += n;
            }
            true
        });
        {
            let mut s = self.stats();
            s.stats.bulk_requests += 1;
            s.stats.bulk_bytes += written as u64;
            if hostile && filled {
                s.stats.hostile_bulk += 1;
            }
        }
        if hostile && filled {
            self.record_injected(RejectReason::PayloadMismatch);
        }
        let response = BulkResponse {
            status: U32::new(if filled {
                protocol::STATUS_OK
            } else {
                protocol::STATUS_INVALID
            }),
            bytes_written: U32::new(u32::try_from(written).unwrap_or(u32::MAX)),
        };
        let bytes = message(
            MessageType::BulkResponse,
            self.session.negotiated,
            m.sequence(),
            response.as_bytes(),
        );
        self.complete(channel, packet, &bytes);
    }

    fn on_sync(&mut self, channel: &mut HostChannel, packet: &HostPacket, m: &Message<'_>) {
        let Ok(body) = m.body::<SyncRequest>() else {
            return self.guest_error(channel, packet);
        };
        let hostile = self.hostile() && !self.session.sync_seen;
        self.session.sync_seen = true;
        let mut answer = protocol::sync_answer(body.value.get());
        if hostile {
            answer ^= 1;
            self.record_injected(RejectReason::PayloadMismatch);
            self.stats().stats.hostile_sync += 1;
        }
        self.stats().stats.sync_requests += 1;
        let response = SyncResponse {
            value: U64::new(answer),
        };
        let bytes = message(
            MessageType::SyncResponse,
            self.session.negotiated,
            m.sequence(),
            response.as_bytes(),
        );
        self.complete(channel, packet, &bytes);
    }

    fn on_goodbye(&mut self, channel: &mut HostChannel, packet: &HostPacket, m: &Message<'_>) {
        self.stats().stats.goodbyes += 1;
        let response = StatusBody {
            status: U32::new(protocol::STATUS_OK),
            reserved: U32::new(0),
        };
        let bytes = message(
            MessageType::GoodbyeResponse,
            self.session.negotiated,
            m.sequence(),
            response.as_bytes(),
        );
        self.complete(channel, packet, &bytes);
    }
}

impl HostDevice for EchoHost {
    fn on_open(&mut self, _channel: &mut HostChannel) -> Result<(), NTSTATUS> {
        self.session = Session::default();
        self.stats().stats.opens += 1;
        Ok(())
    }

    fn on_packet(&mut self, channel: &mut HostChannel, packet: &HostPacket) {
        if packet.kind() != HostPacketKind::InBand {
            return self.guest_error(channel, packet);
        }
        let Ok(m) = protocol::parse(packet.payload()) else {
            return self.guest_error(channel, packet);
        };
        let negotiated = self.session.negotiated;
        if m.message_type() == MessageType::VersionRequest {
            return self.on_version(channel, packet, &m);
        }
        // Every other request must carry the negotiated version and exist in it.
        if negotiated == 0
            || m.expect(m.message_type(), negotiated, m.sequence())
                .is_err()
        {
            return self.guest_error(channel, packet);
        }
        match m.message_type() {
            MessageType::PingRequest => self.on_ping(channel, packet, &m),
            MessageType::NotifyRequest => self.on_notify(channel, packet, &m),
            MessageType::BulkRequest => self.on_bulk(channel, packet, &m),
            MessageType::SyncRequest => self.on_sync(channel, packet, &m),
            MessageType::Goodbye => self.on_goodbye(channel, packet, &m),
            _ => self.guest_error(channel, packet),
        }
    }

    fn on_completion(&mut self, _channel: &mut HostChannel, completion: &HostCompletion) {
        let ack = protocol::parse(&completion.payload).ok().and_then(|m| {
            let m = m
                .expect(
                    MessageType::NotificationAck,
                    self.session.negotiated,
                    m.sequence(),
                )
                .ok()?;
            Some((m.sequence(), m.body::<NotificationAck>().ok()?.status.get()))
        });
        let Some(expect) = self.session.pending.remove(&completion.transaction_id) else {
            let mut s = self.stats();
            s.stats.untracked_acks += 1;
            if matches!(ack, Some((_, 0))) {
                s.stats.untracked_acks_ok += 1;
            }
            return;
        };
        let mut s = self.stats();
        match (expect, ack) {
            (Expect::Valid(sequence), Some((acked, 0))) if acked == sequence => {
                s.stats.notifications_acked += 1;
            }
            (Expect::Rejected(reason), Some((_, status))) if status == reason.code() => {
                s.stats.hostile_acked += 1;
            }
            _ => s.stats.ack_mismatches += 1,
        }
    }

    fn on_close(&mut self, _channel: &mut HostChannel) {
        self.session.pending.clear();
        self.stats().stats.closes += 1;
    }
}
