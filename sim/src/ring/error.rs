//! Errors of the ring: local misuse, lack of space, and peer corruption.

use core::fmt;

/// Everything that can go wrong on a ring.
///
/// Variants fall into three groups:
/// * **local**: the caller asked for something impossible (bad page count, packet too large,
///   buffer too small, header not a multiple of 8, out-of-range raw access); nothing changes.
/// * **flow control**: [`RingError::NotEnoughSpace`]; retry after the reader frees space.
/// * **peer corruption** ([`RingError::is_peer_corruption`]): a value written by the other side
///   (an index, a descriptor field, a GPA-direct or transfer-page header field) is invalid. The
///   endpoint that saw it is poisoned: it does not advance, and every later call returns the same
///   error.
///
/// All lengths and offsets are in bytes unless the field name ends in `8` (8-byte units, as on
/// the wire).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum RingError {
    /// [`Ring::create`](super::Ring::create) was asked for 0 data pages or more than
    /// [`MAX_DATA_PAGES`](super::MAX_DATA_PAGES).
    InvalidPageCount {
        /// The requested number of data pages.
        pages: usize,
    },
    /// The ring memory (control page plus data area) could not be allocated.
    AllocationFailed {
        /// Requested allocation size, in bytes.
        bytes: usize,
    },
    /// The packet (descriptor + header + payload, padded to 8; trailer excluded) is longer than
    /// the ring accepts: `min(MAX_PACKET_LEN, data_size - 16)`.
    PacketTooLarge {
        /// Padded packet length, in bytes (saturated at `usize::MAX`).
        len: usize,
        /// Largest accepted packet length for this ring, in bytes.
        max: u32,
    },
    /// The type-specific header handed to the writer is not a multiple of 8 bytes (the payload
    /// offset is expressed in 8-byte units).
    HeaderNotAligned {
        /// Header length, in bytes.
        len: usize,
    },
    /// The ring does not have room for the packet right now. `needed` is what
    /// [`RingWriter::wait_for_space`](super::RingWriter::wait_for_space) should be asked for.
    NotEnoughSpace {
        /// Ring bytes the packet needs (`len8 * 8 + 8`, trailer included).
        needed: u32,
        /// Ring bytes that are free right now (already excluding the 8 bytes that are never used).
        free: u32,
    },
    /// The GPA-direct or transfer-page header handed to the writer has bytes after the ranges it
    /// declares.
    HeaderLengthMismatch {
        /// Header length, in bytes.
        len: usize,
        /// Bytes the declared ranges occupy.
        expected: usize,
    },
    /// The caller's buffer cannot hold the next packet; nothing was consumed.
    BufferTooSmall {
        /// Bytes needed (`len8 * 8` for a packet, the encoded size for an encoder).
        needed: usize,
        /// Length of the buffer that was passed, in bytes.
        len: usize,
    },
    /// [`RawAccess::new`](super::RawAccess::new) was given a writer and a reader of different
    /// rings.
    MismatchedEndpoints,
    /// Caller-supplied ring memory ([`RingWriter::over_raw`](super::RingWriter::over_raw),
    /// [`RingReader::over_raw`](super::RingReader::over_raw)) does not start on a 4096-byte
    /// boundary.
    MisalignedMemory {
        /// The address that was passed.
        address: usize,
    },
    /// The index an endpoint was asked to start at is not 8-aligned or not `< data_size`.
    InvalidStartIndex {
        /// The index that was passed.
        index: u32,
    },
    /// A raw data access was out of range: the offset must be `< data_size` and the length
    /// `<= data_size`; a snapshot buffer must be exactly `4096 + data_size` bytes; a raw packet
    /// must be a non-zero multiple of 8 bytes that fits.
    RawAccessOutOfRange {
        /// Requested byte offset.
        offset: usize,
        /// Requested length, in bytes.
        len: usize,
    },
    /// A GPA range handed to the encoder does not carry exactly
    /// `ceil((byte_offset + byte_count) / 4096)` PFNs.
    GpaPfnCountMismatch {
        /// Index of the range.
        range: u32,
        /// PFN count implied by the offset and length.
        expected: u64,
        /// PFN count that was supplied.
        actual: usize,
    },
    /// Peer corruption: the read index seen by the writer is not 8-aligned or not `< data_size`.
    InvalidReadIndex {
        /// The value found in the control page.
        index: u32,
    },
    /// Peer corruption: the write index seen by the reader is not 8-aligned or not `< data_size`.
    InvalidWriteIndex {
        /// The value found in the control page.
        index: u32,
    },
    /// Peer corruption: fewer than 16 bytes are readable, so not even a descriptor is there.
    TruncatedDescriptor {
        /// Readable bytes.
        available: u32,
    },
    /// Peer corruption: the packet type is not 6 (in-band), 7 (transfer pages), 9 (GPA direct)
    /// or 0xB (completion).
    UnknownPacketType {
        /// The type found in the descriptor.
        packet_type: u16,
    },
    /// Peer corruption: a flag bit other than bit 0 (completion requested) is set.
    InvalidFlags {
        /// The flags found in the descriptor.
        flags: u16,
    },
    /// Peer corruption: `offset8 < 2`, so the payload would start inside the descriptor.
    DataOffsetTooSmall {
        /// The `offset8` found in the descriptor.
        offset8: u16,
    },
    /// Peer corruption: `len8 < offset8` (this includes `len8 == 0`).
    LengthBelowDataOffset {
        /// The `len8` found in the descriptor.
        len8: u16,
        /// The `offset8` found in the descriptor.
        offset8: u16,
    },
    /// Peer corruption: the packet plus its trailer (`len8 * 8 + 8`) is longer than the readable
    /// bytes.
    LengthExceedsAvailable {
        /// `len8 * 8 + 8`, in bytes.
        needed: u32,
        /// Readable bytes.
        available: u32,
    },
    /// Peer corruption: a GPA-direct packet has `offset8 < 3`, so its 8-byte
    /// `{reserved, range_count}` header does not fit before the payload. Also returned by the
    /// encoder/writer for a GPA-direct header shorter than 8 bytes.
    GpaHeaderTruncated {
        /// The packet's `offset8` (for the writer: the one the header would give).
        offset8: u16,
    },
    /// Peer corruption (or encoder input): a GPA-direct packet with `range_count == 0`.
    GpaNoRanges,
    /// Peer corruption: a GPA range header `{byte_count, byte_offset}` extends past the header
    /// area (`offset8 * 8`).
    GpaRangeTruncated {
        /// Index of the range.
        range: u32,
    },
    /// Peer corruption (or encoder input): a GPA range with `byte_count == 0`.
    GpaZeroByteCount {
        /// Index of the range.
        range: u32,
    },
    /// Peer corruption (or encoder input): a GPA range with `byte_offset > 0xfff`.
    GpaByteOffsetTooLarge {
        /// Index of the range.
        range: u32,
        /// The offending offset.
        byte_offset: u32,
    },
    /// Peer corruption: the header area ends before all PFNs of a GPA range
    /// (`ceil((byte_offset + byte_count) / 4096)` of them).
    GpaTooFewPfns {
        /// Index of the range.
        range: u32,
        /// PFNs the range needs.
        needed: u64,
        /// PFNs that fit in what is left of the header area.
        available: usize,
    },
    /// Peer corruption: a transfer-page packet has `offset8 < 3`, so its 8-byte
    /// `{pageset_id, sender_owns_set, reserved, range_count}` header does not fit.
    TransferPageHeaderTruncated {
        /// The packet's `offset8`.
        offset8: u16,
    },
    /// Peer corruption: a transfer-page packet with `range_count == 0`.
    TransferPageNoRanges,
    /// Peer corruption: the transfer-page ranges extend past the header area.
    TransferPageRangesTruncated {
        /// The `range_count` found in the header.
        range_count: u32,
        /// Ranges that fit in the header area.
        available: usize,
    },
}

impl RingError {
    /// True for errors caused by a bad value written by the peer; such an error poisons the
    /// endpoint that saw it.
    #[must_use]
    pub const fn is_peer_corruption(&self) -> bool {
        matches!(
            self,
            Self::InvalidReadIndex { .. }
                | Self::InvalidWriteIndex { .. }
                | Self::TruncatedDescriptor { .. }
                | Self::UnknownPacketType { .. }
                | Self::InvalidFlags { .. }
                | Self::DataOffsetTooSmall { .. }
                | Self::LengthBelowDataOffset { .. }
                | Self::LengthExceedsAvailable { .. }
                | Self::GpaHeaderTruncated { .. }
                | Self::GpaNoRanges
                | Self::GpaRangeTruncated { .. }
                | Self::GpaZeroByteCount { .. }
                | Self::GpaByteOffsetTooLarge { .. }
                | Self::GpaTooFewPfns { .. }
                | Self::TransferPageHeaderTruncated { .. }
                | Self::TransferPageNoRanges
                | Self::TransferPageRangesTruncated { .. }
        )
    }
}

impl fmt::Display for RingError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Self::InvalidPageCount { pages } => {
                write!(
                    f,
                    "invalid ring data page count {pages} (must be 1..=262144)"
                )
            }
            Self::AllocationFailed { bytes } => {
                write!(f, "could not allocate {bytes} bytes of ring memory")
            }
            Self::PacketTooLarge { len, max } => {
                write!(
                    f,
                    "packet of {len} bytes exceeds the ring's maximum of {max} bytes"
                )
            }
            Self::HeaderNotAligned { len } => {
                write!(
                    f,
                    "type-specific header of {len} bytes is not a multiple of 8"
                )
            }
            Self::NotEnoughSpace { needed, free } => {
                write!(f, "ring full: packet needs {needed} bytes, {free} free")
            }
            Self::HeaderLengthMismatch { len, expected } => write!(
                f,
                "type-specific header is {len} bytes but its ranges occupy {expected}"
            ),
            Self::BufferTooSmall { needed, len } => {
                write!(f, "buffer of {len} bytes too small, {needed} bytes needed")
            }
            Self::MismatchedEndpoints => {
                write!(f, "writer and reader belong to different rings")
            }
            Self::MisalignedMemory { address } => {
                write!(f, "ring memory at {address:#x} is not 4096-byte aligned")
            }
            Self::InvalidStartIndex { index } => {
                write!(
                    f,
                    "start index {index} is not 8-aligned or not inside the data area"
                )
            }
            Self::RawAccessOutOfRange { offset, len } => {
                write!(
                    f,
                    "raw ring access out of range (offset {offset}, {len} bytes)"
                )
            }
            Self::GpaPfnCountMismatch {
                range,
                expected,
                actual,
            } => write!(
                f,
                "GPA range {range} needs exactly {expected} PFNs, {actual} supplied"
            ),
            Self::InvalidReadIndex { index } => {
                write!(
                    f,
                    "corrupt ring: read index {index:#x} unaligned or out of range"
                )
            }
            Self::InvalidWriteIndex { index } => {
                write!(
                    f,
                    "corrupt ring: write index {index:#x} unaligned or out of range"
                )
            }
            Self::TruncatedDescriptor { available } => write!(
                f,
                "corrupt ring: only {available} bytes readable, less than a descriptor"
            ),
            Self::UnknownPacketType { packet_type } => {
                write!(f, "corrupt packet: unknown type {packet_type:#x}")
            }
            Self::InvalidFlags { flags } => {
                write!(
                    f,
                    "corrupt packet: flags {flags:#x} have bits other than bit 0"
                )
            }
            Self::DataOffsetTooSmall { offset8 } => {
                write!(f, "corrupt packet: offset8 {offset8} is below 2")
            }
            Self::LengthBelowDataOffset { len8, offset8 } => {
                write!(f, "corrupt packet: len8 {len8} is below offset8 {offset8}")
            }
            Self::LengthExceedsAvailable { needed, available } => write!(
                f,
                "corrupt packet: needs {needed} bytes with trailer, only {available} readable"
            ),
            Self::GpaHeaderTruncated { offset8 } => write!(
                f,
                "corrupt GPA-direct packet: offset8 {offset8} leaves no room for the range header"
            ),
            Self::GpaNoRanges => write!(f, "corrupt GPA-direct packet: range count is 0"),
            Self::GpaRangeTruncated { range } => {
                write!(f, "corrupt GPA-direct packet: range {range} is truncated")
            }
            Self::GpaZeroByteCount { range } => {
                write!(
                    f,
                    "corrupt GPA-direct packet: range {range} has byte count 0"
                )
            }
            Self::GpaByteOffsetTooLarge { range, byte_offset } => write!(
                f,
                "corrupt GPA-direct packet: range {range} byte offset {byte_offset:#x} exceeds 0xfff"
            ),
            Self::GpaTooFewPfns {
                range,
                needed,
                available,
            } => write!(
                f,
                "corrupt GPA-direct packet: range {range} needs {needed} PFNs, {available} present"
            ),
            Self::TransferPageHeaderTruncated { offset8 } => write!(
                f,
                "corrupt transfer-page packet: offset8 {offset8} leaves no room for the header"
            ),
            Self::TransferPageNoRanges => {
                write!(f, "corrupt transfer-page packet: range count is 0")
            }
            Self::TransferPageRangesTruncated {
                range_count,
                available,
            } => write!(
                f,
                "corrupt transfer-page packet: {range_count} ranges declared, room for {available}"
            ),
        }
    }
}

impl std::error::Error for RingError {}
