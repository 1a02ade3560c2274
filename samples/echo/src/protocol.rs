//! The echo wire protocol: a versioned 24-byte header followed by a payload, little-endian,
//! carried in VMBus in-band packets and completions.
//!
//! Every structure is a `zerocopy` type with explicit little-endian fields and alignment 1, so
//! it can be read from and written to any byte offset of a ring buffer without copies or
//! `unsafe`. Parsing is strict: [`parse`] checks the structure of a message (length, magic,
//! type, flags, declared payload length against the bytes received and the type's size), and
//! [`Message::expect`] checks what the receiver expected (type, version, sequence). Every
//! rejection is a [`ProtocolError`] whose [`RejectReason`] the driver counts.
//!
//! See `docs/echo-protocol.md` for the tables of fields and the rules.

use core::fmt;

use vmbus_kmcl::sys::GUID;
use zerocopy::little_endian::{U16, U32, U64};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout, Unaligned};

/// The VMBus interface type of the echo device: `{f0094498-b2b6-4879-ae82-f489abf69181}`.
///
/// The host offers a channel of this type; the INF binds the driver to
/// `VMBUS\{f0094498-b2b6-4879-ae82-f489abf69181}`.
pub const INTERFACE_TYPE: GUID = GUID {
    Data1: 0xf009_4498,
    Data2: 0xb2b6,
    Data3: 0x4879,
    Data4: [0xae, 0x82, 0xf4, 0x89, 0xab, 0xf6, 0x91, 0x81],
};

/// The interface type as the INF's hardware ID spells it.
pub const HARDWARE_ID: &str = "VMBUS\\{f0094498-b2b6-4879-ae82-f489abf69181}";

/// `u32::from_le_bytes(*b"ECHO")`: the first four bytes of every message.
pub const MAGIC: u32 = u32::from_le_bytes(*b"ECHO");

/// Bytes of [`Header`].
pub const HEADER_SIZE: usize = 24;

/// The largest message (header and payload) either side sends, in bytes. The driver sets the
/// channel's maximum packet size to this.
pub const MAX_MESSAGE: usize = 4096;

/// The largest payload of a message, in bytes.
pub const MAX_PAYLOAD: usize = MAX_MESSAGE - HEADER_SIZE;

/// Bytes the VMBus ring may add after a message: in-band data is padded to a multiple of 8 and
/// the ring does not record the unpadded length, so a receiver accepts up to 7 extra bytes.
pub const MAX_PADDING: usize = 7;

/// Protocol version 1: version negotiation, ping, notifications, synchronous request, goodbye.
pub const VERSION_1: u16 = 1;
/// Protocol version 2: version 1 plus the GPADL bulk transfer.
pub const VERSION_2: u16 = 2;
/// The oldest version this implementation speaks.
pub const MIN_VERSION: u16 = VERSION_1;
/// The newest version this implementation speaks.
pub const MAX_VERSION: u16 = VERSION_2;

/// `status` of a response body: the request was carried out.
pub const STATUS_OK: u32 = 0;
/// `status` of a response body: the host does not support what was asked (e.g. no common
/// version).
pub const STATUS_UNSUPPORTED: u32 = 1;
/// `status` of a response body: the request was malformed or impossible (e.g. a GPADL the host
/// cannot map).
pub const STATUS_INVALID: u32 = 2;

/// The message header, 24 bytes at offset 0 of every message.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned,
)]
#[repr(C)]
pub struct Header {
    /// [`MAGIC`].
    pub magic: U32,
    /// The protocol version of the message: the negotiated version, except in the version
    /// exchange itself (see [`VersionRequest`], [`VersionResponse`]).
    pub version: U16,
    /// A [`MessageType`] value.
    pub message_type: U16,
    /// Reserved, must be 0.
    pub flags: U32,
    /// Bytes of payload following the header (not counting ring padding).
    pub payload_len: U32,
    /// Sequence number: chosen by the requester, echoed by the response; for host
    /// notifications, 1, 2, 3 … per open channel.
    pub sequence: U64,
}

const _: () = assert!(size_of::<Header>() == HEADER_SIZE);

/// Message types. A response's type is its request's type plus one.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u16)]
pub enum MessageType {
    /// Guest → host, at open: the range of versions the guest speaks ([`VersionRequest`]).
    VersionRequest = 1,
    /// Host → guest, in the completion of a version request ([`VersionResponse`]).
    VersionResponse = 2,
    /// Guest → host: payload of `n` pattern bytes seeded by the sequence number.
    PingRequest = 3,
    /// Host → guest, in the completion of a ping: the ping's payload echoed.
    PingResponse = 4,
    /// Guest → host: ask the host to send notifications ([`NotifyRequest`]).
    NotifyRequest = 5,
    /// Host → guest, in the completion of a notify request ([`NotifyResponse`]).
    NotifyResponse = 6,
    /// Host → guest, in-band with completion requested: payload of pattern bytes seeded by the
    /// notification's sequence number.
    Notification = 7,
    /// Guest → host, in the completion of a notification ([`NotificationAck`]).
    NotificationAck = 8,
    /// Guest → host: fill a GPADL the guest shares ([`BulkRequest`], protocol version 2).
    BulkRequest = 9,
    /// Host → guest, in the completion of a bulk request ([`BulkResponse`]).
    BulkResponse = 10,
    /// Guest → host, sent with `VmbChannelSendSynchronousRequest` ([`SyncRequest`]).
    SyncRequest = 11,
    /// Host → guest, in the completion of a synchronous request ([`SyncResponse`]).
    SyncResponse = 12,
    /// Guest → host, before the guest closes the channel (no payload).
    Goodbye = 13,
    /// Host → guest, in the completion of a goodbye ([`StatusBody`]).
    GoodbyeResponse = 14,
}

impl MessageType {
    /// Every type, in value order.
    pub const ALL: [Self; 14] = [
        Self::VersionRequest,
        Self::VersionResponse,
        Self::PingRequest,
        Self::PingResponse,
        Self::NotifyRequest,
        Self::NotifyResponse,
        Self::Notification,
        Self::NotificationAck,
        Self::BulkRequest,
        Self::BulkResponse,
        Self::SyncRequest,
        Self::SyncResponse,
        Self::Goodbye,
        Self::GoodbyeResponse,
    ];

    /// The type with wire value `raw`.
    #[must_use]
    pub const fn from_raw(raw: u16) -> Option<Self> {
        Some(match raw {
            1 => Self::VersionRequest,
            2 => Self::VersionResponse,
            3 => Self::PingRequest,
            4 => Self::PingResponse,
            5 => Self::NotifyRequest,
            6 => Self::NotifyResponse,
            7 => Self::Notification,
            8 => Self::NotificationAck,
            9 => Self::BulkRequest,
            10 => Self::BulkResponse,
            11 => Self::SyncRequest,
            12 => Self::SyncResponse,
            13 => Self::Goodbye,
            14 => Self::GoodbyeResponse,
            _ => return None,
        })
    }

    /// The wire value.
    #[must_use]
    pub const fn raw(self) -> u16 {
        self as u16
    }

    /// The exact payload size of fixed-size types; `None` for the variable-size ping, ping
    /// response and notification (0..=[`MAX_PAYLOAD`] bytes).
    #[must_use]
    pub const fn fixed_payload_len(self) -> Option<usize> {
        Some(match self {
            Self::VersionRequest => size_of::<VersionRequest>(),
            Self::VersionResponse => size_of::<VersionResponse>(),
            Self::NotifyRequest => size_of::<NotifyRequest>(),
            Self::NotifyResponse => size_of::<NotifyResponse>(),
            Self::NotificationAck => size_of::<NotificationAck>(),
            Self::BulkRequest => size_of::<BulkRequest>(),
            Self::BulkResponse => size_of::<BulkResponse>(),
            Self::SyncRequest => size_of::<SyncRequest>(),
            Self::SyncResponse => size_of::<SyncResponse>(),
            Self::Goodbye => 0,
            Self::GoodbyeResponse => size_of::<StatusBody>(),
            Self::PingRequest | Self::PingResponse | Self::Notification => return None,
        })
    }

    /// The protocol version that introduced the type.
    #[must_use]
    pub const fn min_version(self) -> u16 {
        match self {
            Self::BulkRequest | Self::BulkResponse => VERSION_2,
            _ => VERSION_1,
        }
    }
}

/// Payload of [`MessageType::VersionRequest`] (8 bytes). The header's `version` is the guest's
/// newest version (`max_version`).
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned,
)]
#[repr(C)]
pub struct VersionRequest {
    /// Oldest version the guest speaks.
    pub min_version: U16,
    /// Newest version the guest speaks.
    pub max_version: U16,
    /// Reserved, 0.
    pub reserved: U32,
}

/// Payload of [`MessageType::VersionResponse`] (8 bytes). On success the header's `version` and
/// `version` here are the chosen version; on failure both are the host's newest version.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned,
)]
#[repr(C)]
pub struct VersionResponse {
    /// [`STATUS_OK`] or [`STATUS_UNSUPPORTED`].
    pub status: U32,
    /// The chosen version (success) or the host's newest (failure).
    pub version: U16,
    /// Reserved, 0.
    pub reserved: U16,
}

/// Payload of [`MessageType::NotifyRequest`] (8 bytes).
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned,
)]
#[repr(C)]
pub struct NotifyRequest {
    /// Notifications to send.
    pub count: U32,
    /// Payload bytes of each notification (at most [`MAX_PAYLOAD`]).
    pub payload_len: U32,
}

/// Payload of [`MessageType::NotifyResponse`] (8 bytes).
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned,
)]
#[repr(C)]
pub struct NotifyResponse {
    /// [`STATUS_OK`] or [`STATUS_INVALID`].
    pub status: U32,
    /// Notifications the host will send (equal to the request's count on success).
    pub count: U32,
}

/// Payload of [`MessageType::NotificationAck`] (8 bytes).
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned,
)]
#[repr(C)]
pub struct NotificationAck {
    /// 0 when the notification was accepted, else the [`RejectReason::code`] of the rejection.
    pub status: U32,
    /// Reserved, 0.
    pub reserved: U32,
}

/// Payload of [`MessageType::BulkRequest`] (16 bytes).
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned,
)]
#[repr(C)]
pub struct BulkRequest {
    /// The GPADL handle of the guest's buffer.
    pub gpadl: U32,
    /// Bytes to fill, from offset 0 of the GPADL.
    pub length: U32,
    /// Seed of the pattern ([`pattern_byte`]) to write.
    pub seed: U64,
}

/// Payload of [`MessageType::BulkResponse`] (8 bytes).
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned,
)]
#[repr(C)]
pub struct BulkResponse {
    /// [`STATUS_OK`] or [`STATUS_INVALID`].
    pub status: U32,
    /// Bytes written (equal to the request's length on success).
    pub bytes_written: U32,
}

/// Payload of [`MessageType::SyncRequest`] (8 bytes).
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned,
)]
#[repr(C)]
pub struct SyncRequest {
    /// The operand.
    pub value: U64,
}

/// Payload of [`MessageType::SyncResponse`] (8 bytes).
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned,
)]
#[repr(C)]
pub struct SyncResponse {
    /// [`sync_answer`] of the request's value.
    pub value: U64,
}

/// Payload of [`MessageType::GoodbyeResponse`] (8 bytes).
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned,
)]
#[repr(C)]
pub struct StatusBody {
    /// [`STATUS_OK`].
    pub status: U32,
    /// Reserved, 0.
    pub reserved: U32,
}

/// Why a message was rejected: the counter a driver bumps. `code()` is what a
/// [`NotificationAck`] carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum RejectReason {
    /// Fewer bytes than a header.
    TooShort = 0,
    /// The magic is not [`MAGIC`].
    BadMagic = 1,
    /// A type value no version defines.
    UnknownType = 2,
    /// Non-zero reserved flags.
    BadFlags = 3,
    /// The declared payload length disagrees with the bytes received, the type's fixed size,
    /// the maximum, or the request (a response of the wrong length).
    BadLength = 4,
    /// A known type where another was expected (a request from the host, a response of the
    /// wrong kind, a type the negotiated version lacks).
    UnexpectedType = 5,
    /// The header's version is not the negotiated one (or not a version the guest offered).
    BadVersion = 6,
    /// A response whose sequence is not its request's, or a notification out of order.
    BadSequence = 7,
    /// The payload's content is wrong (echo bytes, pattern, synchronous answer).
    PayloadMismatch = 8,
    /// A host notification before a version was negotiated.
    NotNegotiated = 9,
    /// The host answered with a failure status.
    HostStatus = 10,
}

impl RejectReason {
    /// How many reasons there are.
    pub const COUNT: usize = 11;

    /// Every reason, in code order.
    pub const ALL: [Self; Self::COUNT] = [
        Self::TooShort,
        Self::BadMagic,
        Self::UnknownType,
        Self::BadFlags,
        Self::BadLength,
        Self::UnexpectedType,
        Self::BadVersion,
        Self::BadSequence,
        Self::PayloadMismatch,
        Self::NotNegotiated,
        Self::HostStatus,
    ];

    /// Index into a per-reason counter array (0..[`COUNT`](Self::COUNT)).
    #[must_use]
    pub const fn index(self) -> usize {
        self as usize
    }

    /// The non-zero status a [`NotificationAck`] carries for this reason (`index + 1`).
    #[must_use]
    pub const fn code(self) -> u32 {
        self as u32 + 1
    }

    /// The reason with ack status `code`, if any.
    #[must_use]
    pub fn from_code(code: u32) -> Option<Self> {
        let index = usize::try_from(code.checked_sub(1)?).ok()?;
        Self::ALL.get(index).copied()
    }

    /// A short name for reports.
    #[must_use]
    pub const fn name(self) -> &'static str {
        match self {
            Self::TooShort => "too-short",
            Self::BadMagic => "bad-magic",
            Self::UnknownType => "unknown-type",
            Self::BadFlags => "bad-flags",
            Self::BadLength => "bad-length",
            Self::UnexpectedType => "unexpected-type",
            Self::BadVersion => "bad-version",
            Self::BadSequence => "bad-sequence",
            Self::PayloadMismatch => "payload-mismatch",
            Self::NotNegotiated => "not-negotiated",
            Self::HostStatus => "host-status",
        }
    }
}

impl fmt::Display for RejectReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A message failed validation. Each variant maps to one [`RejectReason`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProtocolError {
    /// `len` bytes: fewer than [`HEADER_SIZE`].
    TooShort {
        /// Bytes received.
        len: usize,
    },
    /// The magic was `found`.
    BadMagic {
        /// The magic received.
        found: u32,
    },
    /// Type value `found` is not defined.
    UnknownType {
        /// The type value received.
        found: u16,
    },
    /// Reserved flags `found` are not 0.
    BadFlags {
        /// The flags received.
        found: u32,
    },
    /// The header declares `declared` payload bytes; `actual` bytes follow the header (which
    /// may exceed `declared` by at most [`MAX_PADDING`]), or `declared` is not the size the
    /// type or the request calls for (`expected`).
    BadLength {
        /// The header's `payload_len`.
        declared: u32,
        /// Payload bytes received (including ring padding).
        actual: usize,
        /// The size the type or request calls for, when there is one.
        expected: Option<usize>,
    },
    /// A message of type `found` where it is not allowed.
    UnexpectedType {
        /// The type received.
        found: MessageType,
    },
    /// The header's version is `found`; `expected` was wanted.
    BadVersion {
        /// The version received.
        found: u16,
        /// The version wanted.
        expected: u16,
    },
    /// The header's sequence is `found`; `expected` was wanted.
    BadSequence {
        /// The sequence received.
        found: u64,
        /// The sequence wanted.
        expected: u64,
    },
    /// The payload content is wrong.
    PayloadMismatch,
    /// A notification before version negotiation.
    NotNegotiated,
    /// The response's status is `status`, not [`STATUS_OK`].
    HostStatus {
        /// The status received.
        status: u32,
    },
}

impl ProtocolError {
    /// The counter this rejection bumps.
    #[must_use]
    pub const fn reason(&self) -> RejectReason {
        match self {
            Self::TooShort { .. } => RejectReason::TooShort,
            Self::BadMagic { .. } => RejectReason::BadMagic,
            Self::UnknownType { .. } => RejectReason::UnknownType,
            Self::BadFlags { .. } => RejectReason::BadFlags,
            Self::BadLength { .. } => RejectReason::BadLength,
            Self::UnexpectedType { .. } => RejectReason::UnexpectedType,
            Self::BadVersion { .. } => RejectReason::BadVersion,
            Self::BadSequence { .. } => RejectReason::BadSequence,
            Self::PayloadMismatch => RejectReason::PayloadMismatch,
            Self::NotNegotiated => RejectReason::NotNegotiated,
            Self::HostStatus { .. } => RejectReason::HostStatus,
        }
    }
}

impl fmt::Display for ProtocolError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::TooShort { len } => write!(f, "{len} bytes is shorter than a header"),
            Self::BadMagic { found } => write!(f, "bad magic {found:#010x}"),
            Self::UnknownType { found } => write!(f, "unknown message type {found}"),
            Self::BadFlags { found } => write!(f, "reserved flags {found:#x} set"),
            Self::BadLength {
                declared,
                actual,
                expected,
            } => {
                write!(f, "payload length {declared} with {actual} bytes received")?;
                if let Some(expected) = expected {
                    write!(f, ", {expected} expected")?;
                }
                Ok(())
            }
            Self::UnexpectedType { found } => write!(f, "unexpected message type {found:?}"),
            Self::BadVersion { found, expected } => {
                write!(f, "version {found}, expected {expected}")
            }
            Self::BadSequence { found, expected } => {
                write!(f, "sequence {found}, expected {expected}")
            }
            Self::PayloadMismatch => f.write_str("payload content mismatch"),
            Self::NotNegotiated => f.write_str("message before version negotiation"),
            Self::HostStatus { status } => write!(f, "host status {status}"),
        }
    }
}

impl core::error::Error for ProtocolError {}

/// A structurally valid message, borrowing the received bytes.
#[derive(Clone, Copy, Debug)]
pub struct Message<'a> {
    header: Header,
    message_type: MessageType,
    payload: &'a [u8],
}

impl<'a> Message<'a> {
    /// The header (a copy).
    #[must_use]
    pub const fn header(&self) -> &Header {
        &self.header
    }

    /// The message type.
    #[must_use]
    pub const fn message_type(&self) -> MessageType {
        self.message_type
    }

    /// The header's version.
    #[must_use]
    pub fn version(&self) -> u16 {
        self.header.version.get()
    }

    /// The header's sequence number.
    #[must_use]
    pub fn sequence(&self) -> u64 {
        self.header.sequence.get()
    }

    /// The payload: exactly the header's `payload_len` bytes (ring padding removed).
    #[must_use]
    pub const fn payload(&self) -> &'a [u8] {
        self.payload
    }

    /// Checks the type, version and sequence a receiver expects.
    ///
    /// # Errors
    /// [`ProtocolError::UnexpectedType`], [`ProtocolError::BadVersion`] (also when the type is
    /// newer than `version`), [`ProtocolError::BadSequence`], in that order.
    pub fn expect(
        self,
        message_type: MessageType,
        version: u16,
        sequence: u64,
    ) -> Result<Self, ProtocolError> {
        if self.message_type != message_type || message_type.min_version() > version {
            return Err(ProtocolError::UnexpectedType {
                found: self.message_type,
            });
        }
        if self.version() != version {
            return Err(ProtocolError::BadVersion {
                found: self.version(),
                expected: version,
            });
        }
        if self.sequence() != sequence {
            return Err(ProtocolError::BadSequence {
                found: self.sequence(),
                expected: sequence,
            });
        }
        Ok(self)
    }

    /// The payload as the fixed-size body `T` (a copy).
    ///
    /// # Errors
    /// [`ProtocolError::BadLength`] when the payload is not exactly `size_of::<T>()` bytes
    /// ([`parse`] already guarantees this for the type's own body).
    pub fn body<T: FromBytes>(&self) -> Result<T, ProtocolError> {
        T::read_from_bytes(self.payload).map_err(|_| ProtocolError::BadLength {
            declared: self.header.payload_len.get(),
            actual: self.payload.len(),
            expected: Some(size_of::<T>()),
        })
    }
}

/// Parses the structure of a received message, in this order: at least a header
/// ([`ProtocolError::TooShort`]), [`MAGIC`] ([`ProtocolError::BadMagic`]), a defined type
/// ([`ProtocolError::UnknownType`]), zero flags ([`ProtocolError::BadFlags`]), and a payload
/// length that is at most [`MAX_PAYLOAD`], equals the type's fixed size if it has one, and is
/// covered by the received bytes with at most [`MAX_PADDING`] bytes to spare
/// ([`ProtocolError::BadLength`]).
///
/// Never panics, never allocates; `bytes` may be anything.
///
/// # Errors
/// As listed.
pub fn parse(bytes: &[u8]) -> Result<Message<'_>, ProtocolError> {
    let Ok((header, rest)) = Header::read_from_prefix(bytes) else {
        return Err(ProtocolError::TooShort { len: bytes.len() });
    };
    if header.magic.get() != MAGIC {
        return Err(ProtocolError::BadMagic {
            found: header.magic.get(),
        });
    }
    let Some(message_type) = MessageType::from_raw(header.message_type.get()) else {
        return Err(ProtocolError::UnknownType {
            found: header.message_type.get(),
        });
    };
    if header.flags.get() != 0 {
        return Err(ProtocolError::BadFlags {
            found: header.flags.get(),
        });
    }
    let declared = header.payload_len.get();
    let bad_length = |expected| ProtocolError::BadLength {
        declared,
        actual: rest.len(),
        expected,
    };
    let len = usize::try_from(declared).map_err(|_| bad_length(None))?;
    let fixed = message_type.fixed_payload_len();
    if len > MAX_PAYLOAD || fixed.is_some_and(|fixed| fixed != len) {
        return Err(bad_length(fixed));
    }
    let payload = rest.get(..len).ok_or_else(|| bad_length(fixed))?;
    if rest.len() - len > MAX_PADDING {
        return Err(bad_length(fixed));
    }
    Ok(Message {
        header,
        message_type,
        payload,
    })
}

/// A header for a message of `message_type` with `payload_len` bytes of payload.
#[must_use]
pub fn header(message_type: MessageType, version: u16, sequence: u64, payload_len: u32) -> Header {
    Header {
        magic: U32::new(MAGIC),
        version: U16::new(version),
        message_type: U16::new(message_type.raw()),
        flags: U32::new(0),
        payload_len: U32::new(payload_len),
        sequence: U64::new(sequence),
    }
}

/// Splits `buf` for a message with `payload_len` payload bytes: writes the header and returns
/// the payload area and the message length.
fn frame(
    buf: &mut [u8],
    message_type: MessageType,
    version: u16,
    sequence: u64,
    payload_len: usize,
) -> Result<(&mut [u8], usize), ProtocolError> {
    let too_long = ProtocolError::BadLength {
        declared: u32::try_from(payload_len).unwrap_or(u32::MAX),
        actual: buf.len().saturating_sub(HEADER_SIZE),
        expected: None,
    };
    if payload_len > MAX_PAYLOAD {
        return Err(too_long);
    }
    let total = HEADER_SIZE + payload_len;
    let message = buf.get_mut(..total).ok_or(too_long)?;
    let (head, payload) = message.split_at_mut(HEADER_SIZE);
    let declared = u32::try_from(payload_len).map_err(|_| too_long)?;
    header(message_type, version, sequence, declared)
        .write_to(head)
        .map_err(|_| too_long)?;
    Ok((payload, total))
}

/// Writes a message with `payload` into `buf`; returns its length (`HEADER_SIZE +
/// payload.len()`).
///
/// # Errors
/// [`ProtocolError::BadLength`] when the payload exceeds [`MAX_PAYLOAD`] or `buf` is too small.
pub fn encode(
    buf: &mut [u8],
    message_type: MessageType,
    version: u16,
    sequence: u64,
    payload: &[u8],
) -> Result<usize, ProtocolError> {
    let (area, total) = frame(buf, message_type, version, sequence, payload.len())?;
    area.copy_from_slice(payload);
    Ok(total)
}

/// Writes a message whose payload is the fixed-size `body`; returns its length.
///
/// # Errors
/// As [`encode`].
pub fn encode_body<T: IntoBytes + Immutable>(
    buf: &mut [u8],
    message_type: MessageType,
    version: u16,
    sequence: u64,
    body: &T,
) -> Result<usize, ProtocolError> {
    encode(buf, message_type, version, sequence, body.as_bytes())
}

/// Writes a message whose payload is `payload_len` pattern bytes seeded by `seed`
/// ([`fill_pattern`]); returns its length.
///
/// # Errors
/// As [`encode`].
pub fn encode_pattern(
    buf: &mut [u8],
    message_type: MessageType,
    version: u16,
    sequence: u64,
    payload_len: usize,
    seed: u64,
) -> Result<usize, ProtocolError> {
    let (area, total) = frame(buf, message_type, version, sequence, payload_len)?;
    fill_pattern(area, seed, 0);
    Ok(total)
}

/// SplitMix64's output function: a bijective 64-bit mix.
const fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Pattern bytes `8 * word .. 8 * word + 8` of `seed`, as a little-endian word.
const fn pattern_word(seed: u64, word: u64) -> u64 {
    mix(seed ^ word.wrapping_mul(0xD6E8_FEB8_6659_FD93))
}

/// Byte `index` of the pattern seeded by `seed`: what pings, notifications and bulk buffers
/// carry, so that the receiver can check every byte without keeping a copy.
#[must_use]
pub const fn pattern_byte(seed: u64, index: u64) -> u8 {
    (pattern_word(seed, index / 8) >> (8 * (index % 8))) as u8
}

/// Fills `out` with pattern bytes `start .. start + out.len()` of `seed`.
pub fn fill_pattern(out: &mut [u8], seed: u64, start: u64) {
    for (offset, byte) in (start..).zip(out.iter_mut()) {
        if offset % 8 == 0 {
            break;
        }
        *byte = pattern_byte(seed, offset);
    }
    let head = usize::try_from((8 - start % 8) % 8)
        .unwrap_or(0)
        .min(out.len());
    let Some(aligned) = out.get_mut(head..) else {
        return;
    };
    let first_word = start.div_ceil(8);
    for (word, chunk) in (first_word..).zip(aligned.chunks_mut(8)) {
        let bytes = pattern_word(seed, word).to_le_bytes();
        for (dst, src) in chunk.iter_mut().zip(bytes) {
            *dst = src;
        }
    }
}

/// True when `data` is pattern bytes `start .. start + data.len()` of `seed`.
#[must_use]
pub fn check_pattern(data: &[u8], seed: u64, start: u64) -> bool {
    let head = usize::try_from((8 - start % 8) % 8)
        .unwrap_or(0)
        .min(data.len());
    let (unaligned, aligned) = data.split_at(head);
    let head_ok = (start..)
        .zip(unaligned)
        .all(|(offset, byte)| *byte == pattern_byte(seed, offset));
    let first_word = start.div_ceil(8);
    head_ok
        && (first_word..).zip(aligned.chunks(8)).all(|(word, chunk)| {
            let bytes = pattern_word(seed, word).to_le_bytes();
            chunk.iter().zip(bytes).all(|(a, b)| *a == b)
        })
}

/// The host's answer to a synchronous request for `value`: a fixed bijection, so a response
/// that merely echoes the request is rejected.
#[must_use]
pub const fn sync_answer(value: u64) -> u64 {
    value.rotate_left(17) ^ 0xC3A5_C85C_97CB_3127
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_is_24_bytes_little_endian() {
        let h = header(MessageType::PingRequest, 2, 0x0102_0304_0506_0708, 5);
        let bytes = h.as_bytes();
        assert_eq!(bytes.len(), 24);
        assert_eq!(&bytes[..4], b"ECHO");
        assert_eq!(&bytes[4..6], &[2, 0]);
        assert_eq!(&bytes[6..8], &[3, 0]);
        assert_eq!(&bytes[8..12], &[0; 4]);
        assert_eq!(&bytes[12..16], &[5, 0, 0, 0]);
        assert_eq!(&bytes[16..24], &[8, 7, 6, 5, 4, 3, 2, 1]);
    }

    #[test]
    fn body_sizes() {
        assert_eq!(size_of::<VersionRequest>(), 8);
        assert_eq!(size_of::<VersionResponse>(), 8);
        assert_eq!(size_of::<BulkRequest>(), 16);
        assert_eq!(size_of::<SyncResponse>(), 8);
        for t in MessageType::ALL {
            assert_eq!(MessageType::from_raw(t.raw()), Some(t));
        }
        assert_eq!(MessageType::from_raw(0), None);
        assert_eq!(MessageType::from_raw(15), None);
    }

    #[test]
    fn round_trip_with_padding() {
        let mut buf = [0u8; 64];
        let n = encode_pattern(&mut buf, MessageType::PingRequest, 1, 9, 13, 9).unwrap();
        assert_eq!(n, 37);
        // The ring pads to 8: up to 7 extra bytes are accepted, 8 are not.
        for extra in 0..=7 {
            let m = parse(&buf[..n + extra]).unwrap();
            assert_eq!(m.payload().len(), 13);
            assert!(check_pattern(m.payload(), 9, 0));
            m.expect(MessageType::PingRequest, 1, 9).unwrap();
        }
        assert!(matches!(
            parse(&buf[..n + 8]),
            Err(ProtocolError::BadLength { .. })
        ));
        assert!(matches!(
            parse(&buf[..n - 1]),
            Err(ProtocolError::BadLength { .. })
        ));
    }

    #[test]
    fn each_rejection() {
        let mut buf = [0u8; 64];
        let body = SyncRequest { value: U64::new(7) };
        let n = encode_body(&mut buf, MessageType::SyncRequest, 1, 3, &body).unwrap();
        let good = buf;
        let reason = |bytes: &[u8]| parse(bytes).map(|_| ()).map_err(|e| e.reason());
        assert_eq!(reason(&good[..n]), Ok(()));
        assert_eq!(reason(&good[..23]), Err(RejectReason::TooShort));
        let mut b = good;
        b[0] ^= 1;
        assert_eq!(reason(&b[..n]), Err(RejectReason::BadMagic));
        let mut b = good;
        b[6] = 99;
        assert_eq!(reason(&b[..n]), Err(RejectReason::UnknownType));
        let mut b = good;
        b[8] = 1;
        assert_eq!(reason(&b[..n]), Err(RejectReason::BadFlags));
        let mut b = good;
        b[12] = 9; // fixed 8-byte body declared as 9
        assert_eq!(reason(&b[..n + 1]), Err(RejectReason::BadLength));
        let m = parse(&good[..n]).unwrap();
        assert_eq!(
            m.expect(MessageType::SyncResponse, 1, 3).map(|_| ()),
            Err(ProtocolError::UnexpectedType {
                found: MessageType::SyncRequest
            })
        );
        assert_eq!(
            m.expect(MessageType::SyncRequest, 2, 3).map(|_| ()),
            Err(ProtocolError::BadVersion {
                found: 1,
                expected: 2
            })
        );
        assert_eq!(
            m.expect(MessageType::SyncRequest, 1, 4).map(|_| ()),
            Err(ProtocolError::BadSequence {
                found: 3,
                expected: 4
            })
        );
        // Bulk messages do not exist in version 1.
        let n = encode_body(
            &mut buf,
            MessageType::BulkRequest,
            1,
            1,
            &BulkRequest {
                gpadl: U32::new(1),
                length: U32::new(1),
                seed: U64::new(1),
            },
        )
        .unwrap();
        let m = parse(&buf[..n]).unwrap();
        assert!(matches!(
            m.expect(MessageType::BulkRequest, 1, 1),
            Err(ProtocolError::UnexpectedType { .. })
        ));
        assert_eq!(m.body::<BulkRequest>().unwrap().seed.get(), 1);
        assert!(m.body::<SyncRequest>().is_err());
    }

    #[test]
    fn encode_refuses_oversize() {
        let mut big = [0u8; MAX_MESSAGE + 8];
        assert!(encode_pattern(&mut big, MessageType::PingRequest, 1, 1, MAX_PAYLOAD, 1).is_ok());
        assert!(
            encode_pattern(&mut big, MessageType::PingRequest, 1, 1, MAX_PAYLOAD + 1, 1).is_err()
        );
        let mut small = [0u8; 30];
        assert!(encode_pattern(&mut small, MessageType::PingRequest, 1, 1, 7, 1).is_err());
        assert!(encode_pattern(&mut small, MessageType::PingRequest, 1, 1, 6, 1).is_ok());
    }

    #[test]
    fn pattern_helpers_agree() {
        for start in 0..20u64 {
            let mut a = [0u8; 37];
            fill_pattern(&mut a, 42, start);
            for (i, b) in a.iter().enumerate() {
                assert_eq!(*b, pattern_byte(42, start + i as u64));
            }
            assert!(check_pattern(&a, 42, start));
            assert!(!check_pattern(&a, 43, start));
            let mut c = a;
            c[36] ^= 0x80;
            assert!(!check_pattern(&c, 42, start));
        }
        assert_ne!(sync_answer(5), 5);
    }

    #[test]
    fn reject_codes_round_trip() {
        for r in RejectReason::ALL {
            assert_eq!(RejectReason::from_code(r.code()), Some(r));
            assert_eq!(RejectReason::ALL[r.index()], r);
        }
        assert_eq!(RejectReason::from_code(0), None);
        assert_eq!(RejectReason::from_code(12), None);
    }
}
