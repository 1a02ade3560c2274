//! Wire structures (spec §1.4–§1.6), little-endian and unaligned, via `zerocopy`.

use zerocopy::little_endian::{U16, U32, U64};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout, Unaligned};

use super::index::round_up8;
use super::{DESCRIPTOR_LEN, TRAILER_LEN};

/// Flag bit 0 of the descriptor: the sender wants a completion packet
/// (`VMBUS_DATA_PACKET_FLAG_COMPLETION_REQUESTED`). No other flag bit is valid.
pub const FLAG_COMPLETION_REQUESTED: u16 = 1;

/// The packet types the ring accepts (spec §1.4); any other value is rejected by the reader with
/// [`RingError::UnknownPacketType`](super::RingError::UnknownPacketType).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u16)]
pub enum PacketType {
    /// 0x6 `VM_PKT_DATA_INBAND`: descriptor, optional header, payload.
    InBand = 6,
    /// 0x7 `VM_PKT_DATA_USING_XFER_PAGES`: transfer-page header and ranges, then payload.
    TransferPages = 7,
    /// 0x9 `VM_PKT_DATA_USING_GPA_DIRECT`: GPA range array, then payload.
    GpaDirect = 9,
    /// 0xB `VM_PKT_COMP`: completion of the request with the same transaction ID.
    Completion = 0xB,
}

impl PacketType {
    /// Decodes the descriptor's `type` field; `None` for anything but 6, 7, 9 and 0xB.
    #[must_use]
    pub const fn from_wire(value: u16) -> Option<Self> {
        match value {
            6 => Some(Self::InBand),
            7 => Some(Self::TransferPages),
            9 => Some(Self::GpaDirect),
            0xB => Some(Self::Completion),
            _ => None,
        }
    }

    /// The value stored in the descriptor's `type` field.
    #[must_use]
    pub const fn to_wire(self) -> u16 {
        self as u16
    }
}

/// Ring bytes a packet occupies: `round_up8(16 + header_len + payload_len) + 8` (descriptor,
/// header, payload, zero padding and trailer). `None` if that exceeds `u32`; whether the packet
/// fits a given ring is decided by the writer.
#[must_use]
pub fn packet_ring_bytes(header_len: usize, payload_len: usize) -> Option<u32> {
    let unpadded = DESCRIPTOR_LEN
        .checked_add(header_len)?
        .checked_add(payload_len)?;
    let total = round_up8(unpadded)?.checked_add(TRAILER_LEN)?;
    u32::try_from(total).ok()
}

/// `struct vmpacket_descriptor`: 16 bytes at the start of every packet.
#[derive(Clone, Copy, Debug, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub(crate) struct WireDescriptor {
    /// Packet type (6, 7, 9 or 0xB).
    pub(crate) packet_type: U16,
    /// Payload offset from the start of the descriptor, in 8-byte units.
    pub(crate) data_offset8: U16,
    /// Packet length excluding the trailer, in 8-byte units.
    pub(crate) length8: U16,
    /// Bit 0 = completion requested.
    pub(crate) flags: U16,
    /// Opaque request ID, echoed by the completion.
    pub(crate) transaction_id: U64,
}

/// Type 9 header after the descriptor: `{u32 reserved, u32 range_count}`.
#[derive(Clone, Copy, Debug, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub(crate) struct WireGpaDirectHeader {
    /// Reserved; may hold garbage from a peer.
    pub(crate) reserved: U32,
    /// Number of `gpa_range` records that follow.
    pub(crate) range_count: U32,
}

/// Fixed part of a `gpa_range`: `{u32 byte_count, u32 byte_offset}`, followed by the PFNs.
#[derive(Clone, Copy, Debug, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub(crate) struct WireGpaRange {
    /// Length of the range in bytes.
    pub(crate) byte_count: U32,
    /// Offset into the first page, 0..=0xfff.
    pub(crate) byte_offset: U32,
}

/// Type 7 header after the descriptor.
#[derive(Clone, Copy, Debug, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub(crate) struct WireTransferPageHeader {
    /// ID of the transfer page set (set up by a device protocol).
    pub(crate) pageset_id: U16,
    /// Non-zero if the sender owns the page set.
    pub(crate) sender_owns_set: u8,
    /// Reserved.
    pub(crate) reserved: u8,
    /// Number of ranges that follow.
    pub(crate) range_count: U32,
}

/// One transfer-page range: `{u32 byte_count, u32 byte_offset}`.
#[derive(Clone, Copy, Debug, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub(crate) struct WireTransferPageRange {
    /// Length of the range in bytes.
    pub(crate) byte_count: U32,
    /// Offset of the range in the page set, in bytes.
    pub(crate) byte_offset: U32,
}

const _: () = {
    assert!(size_of::<WireDescriptor>() == DESCRIPTOR_LEN);
    assert!(size_of::<WireGpaDirectHeader>() == 8);
    assert!(size_of::<WireGpaRange>() == 8);
    assert!(size_of::<WireTransferPageHeader>() == 8);
    assert!(size_of::<WireTransferPageRange>() == 8);
};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn descriptor_bytes_are_little_endian() {
        let d = WireDescriptor {
            packet_type: U16::new(6),
            data_offset8: U16::new(2),
            length8: U16::new(0x0103),
            flags: U16::new(1),
            transaction_id: U64::new(0x1122_3344_5566_7788),
        };
        assert_eq!(
            d.as_bytes(),
            &[
                6, 0, 2, 0, 3, 1, 1, 0, 0x88, 0x77, 0x66, 0x55, 0x44, 0x33, 0x22, 0x11
            ]
        );
    }

    #[test]
    fn packet_types_round_trip() {
        for v in 0..=0xFFu16 {
            match PacketType::from_wire(v) {
                Some(t) => assert_eq!(t.to_wire(), v),
                None => assert!(![6, 7, 9, 0xB].contains(&v)),
            }
        }
    }

    #[test]
    fn ring_bytes() {
        assert_eq!(packet_ring_bytes(0, 0), Some(24));
        assert_eq!(packet_ring_bytes(0, 1), Some(32));
        assert_eq!(packet_ring_bytes(0, 4000), Some(4024));
        assert_eq!(packet_ring_bytes(8, 8), Some(40));
        assert_eq!(packet_ring_bytes(usize::MAX, 1), None);
    }
}
