//! Hostile-peer cases: raw pokes of descriptor fields, GPA-direct and transfer-page headers, and
//! wild indices. Each must give its specific error, never panic, and leave the endpoint poisoned
//! without advancing.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use proptest::prelude::*;
use vmbus_kmcl_sim::ring::{
    ControlWord, GpaRangeSpec, OutgoingPacket, PacketType, RawAccess, Ring, RingError, RingReader,
    RingWriter, encode_gpa_direct_header,
};

/// Byte offsets of the descriptor fields.
const TYPE: u32 = 0;
const OFFSET8: u32 = 2;
const LEN8: u32 = 4;
const FLAGS: u32 = 6;

/// A one-page ring holding one valid in-band packet at offset 0: 24-byte payload, so
/// `offset8 = 2`, `len8 = 5`, 48 ring bytes with the trailer.
fn ring_with_in_band() -> (RingWriter, RingReader) {
    let (mut w, r) = Ring::create(1).unwrap();
    let payload = [0x5Au8; 24];
    let parts = [&payload[..]];
    w.write(&OutgoingPacket::in_band(1, true, &parts)).unwrap();
    (w, r)
}

fn poke_u16(w: &mut RingWriter, r: &mut RingReader, offset: u32, value: u16) {
    let mut raw = RawAccess::new(w, r).unwrap();
    raw.write_data(offset, &value.to_le_bytes()).unwrap();
}

fn poke_u32(w: &mut RingWriter, r: &mut RingReader, offset: u32, value: u32) {
    let mut raw = RawAccess::new(w, r).unwrap();
    raw.write_data(offset, &value.to_le_bytes()).unwrap();
}

fn poke_write_index(w: &mut RingWriter, r: &mut RingReader, value: u32) {
    let mut raw = RawAccess::new(w, r).unwrap();
    // SAFETY: single-threaded test; the endpoints are never used concurrently.
    unsafe { raw.set_write_index(value) };
}

fn poke_read_index(w: &mut RingWriter, r: &mut RingReader, value: u32) {
    let mut raw = RawAccess::new(w, r).unwrap();
    // SAFETY: single-threaded test; the endpoints are never used concurrently.
    unsafe { raw.set_read_index(value) };
}

/// The reader must fail with `expected`, stay poisoned, and not move the read index.
fn expect_reader_error(r: &mut RingReader, expected: RingError) {
    let ring = std::sync::Arc::clone(r.ring());
    let before = ring.control_word(ControlWord::ReadIndex);
    let mut buf = vec![0u8; 8192];
    assert_eq!(r.read(&mut buf).unwrap_err(), expected);
    assert!(expected.is_peer_corruption());
    assert!(!expected.to_string().is_empty());
    assert_eq!(r.corruption(), Some(expected));
    // Sticky: the same error again, still no progress, also through a batch.
    assert_eq!(r.read(&mut buf).unwrap_err(), expected);
    let mut batch = r.batch();
    assert_eq!(batch.read(&mut buf).unwrap_err(), expected);
    assert_eq!(batch.commit().unwrap().packets, 0);
    assert_eq!(ring.control_word(ControlWord::ReadIndex), before);
    assert_eq!(r.read_index(), before);
    assert_eq!(ring.counters().packets_read, 0);
}

#[test]
fn len8_zero() {
    let (mut w, mut r) = ring_with_in_band();
    poke_u16(&mut w, &mut r, LEN8, 0);
    expect_reader_error(
        &mut r,
        RingError::LengthBelowDataOffset {
            len8: 0,
            offset8: 2,
        },
    );
}

#[test]
fn len8_below_offset8() {
    let (mut w, mut r) = ring_with_in_band();
    poke_u16(&mut w, &mut r, LEN8, 1);
    expect_reader_error(
        &mut r,
        RingError::LengthBelowDataOffset {
            len8: 1,
            offset8: 2,
        },
    );
    let (mut w, mut r) = ring_with_in_band();
    poke_u16(&mut w, &mut r, OFFSET8, 5);
    poke_u16(&mut w, &mut r, LEN8, 4);
    expect_reader_error(
        &mut r,
        RingError::LengthBelowDataOffset {
            len8: 4,
            offset8: 5,
        },
    );
}

#[test]
fn len8_beyond_readable() {
    for (len8, needed) in [(6u16, 56u32), (0xFFFF, 0xFFFF * 8 + 8)] {
        let (mut w, mut r) = ring_with_in_band();
        poke_u16(&mut w, &mut r, LEN8, len8);
        expect_reader_error(
            &mut r,
            RingError::LengthExceedsAvailable {
                needed,
                available: 48,
            },
        );
    }
}

#[test]
fn offset8_below_two() {
    for offset8 in [0u16, 1] {
        let (mut w, mut r) = ring_with_in_band();
        poke_u16(&mut w, &mut r, OFFSET8, offset8);
        expect_reader_error(&mut r, RingError::DataOffsetTooSmall { offset8 });
    }
}

#[test]
fn unknown_types() {
    for t in [0u16, 1, 2, 5, 8, 0xA, 0xC, 0xD, 0xFFFF] {
        let (mut w, mut r) = ring_with_in_band();
        poke_u16(&mut w, &mut r, TYPE, t);
        expect_reader_error(&mut r, RingError::UnknownPacketType { packet_type: t });
    }
}

#[test]
fn extra_flag_bits() {
    for flags in [2u16, 3, 0x8000, 0xFFFF] {
        let (mut w, mut r) = ring_with_in_band();
        poke_u16(&mut w, &mut r, FLAGS, flags);
        expect_reader_error(&mut r, RingError::InvalidFlags { flags });
    }
}

#[test]
fn wild_write_index_seen_by_reader() {
    for index in [4u32, 44, 4096, 4100, 0x8000_0000, u32::MAX] {
        let (mut w, mut r) = ring_with_in_band();
        poke_write_index(&mut w, &mut r, index);
        expect_reader_error(&mut r, RingError::InvalidWriteIndex { index });
        assert_eq!(
            r.unmask_interrupts(),
            Err(RingError::InvalidWriteIndex { index })
        );
        assert_eq!(
            r.readable_bytes(),
            Err(RingError::InvalidWriteIndex { index })
        );
    }
}

#[test]
fn wild_write_index_on_unmask_poisons() {
    let (mut w, mut r) = ring_with_in_band();
    poke_write_index(&mut w, &mut r, 4);
    let e = RingError::InvalidWriteIndex { index: 4 };
    assert_eq!(r.unmask_interrupts(), Err(e));
    assert_eq!(r.corruption(), Some(e));
}

#[test]
fn fewer_bytes_than_a_descriptor() {
    let (mut w, mut r) = ring_with_in_band();
    poke_write_index(&mut w, &mut r, 8);
    expect_reader_error(&mut r, RingError::TruncatedDescriptor { available: 8 });
}

#[test]
fn wild_read_index_seen_by_writer() {
    for index in [12u32, 4092, 4096, 8192, u32::MAX - 7] {
        let (mut w, mut r) = Ring::create(1).unwrap();
        poke_read_index(&mut w, &mut r, index);
        let e = RingError::InvalidReadIndex { index };
        let payload = [1u8; 8];
        let parts = [&payload[..]];
        assert_eq!(w.write(&OutgoingPacket::in_band(1, false, &parts)), Err(e));
        assert_eq!(w.corruption(), Some(e));
        assert!(e.is_peer_corruption());
        // Nothing was published, and the writer stays stopped even if the index is repaired.
        assert_eq!(w.ring().control_word(ControlWord::WriteIndex), 0);
        poke_read_index(&mut w, &mut r, 0);
        assert_eq!(w.write(&OutgoingPacket::in_band(1, false, &parts)), Err(e));
        assert_eq!(w.wait_for_space(64), Err(e));
        assert_eq!(w.free_bytes(), Err(e));
        assert_eq!(w.ring().counters().packets_written, 0);
        let mut buf = [0u8; 64];
        assert!(r.read(&mut buf).unwrap().is_none());
    }
}

#[test]
fn wild_read_index_on_wait_for_space() {
    let (mut w, mut r) = Ring::create(1).unwrap();
    poke_read_index(&mut w, &mut r, 3);
    assert_eq!(
        w.wait_for_space(100),
        Err(RingError::InvalidReadIndex { index: 3 })
    );
}

/// A one-page ring holding one valid GPA-direct packet at offset 0: one range of 4096 bytes at
/// offset 0 (one PFN), so the header is `{reserved, count=1}{4096, 0}{pfn}` = 24 bytes, offset8 5.
fn ring_with_gpa() -> (RingWriter, RingReader) {
    let (mut w, r) = Ring::create(1).unwrap();
    let pfns = [0x1234u64];
    let mut header = [0u8; 24];
    let n = encode_gpa_direct_header(
        &[GpaRangeSpec {
            byte_offset: 0,
            byte_count: 4096,
            pfns: &pfns,
        }],
        &mut header,
    )
    .unwrap();
    assert_eq!(n, 24);
    let payload = [7u8; 8];
    let parts = [&payload[..]];
    w.write(&OutgoingPacket::gpa_direct(9, &header, &parts))
        .unwrap();
    (w, r)
}

const GPA_RANGE_COUNT: u32 = 20;
const GPA_BYTE_COUNT: u32 = 24;
const GPA_BYTE_OFFSET: u32 = 28;

#[test]
fn gpa_valid_packet_parses() {
    let (_w, mut r) = ring_with_gpa();
    let mut buf = [0u8; 128];
    let p = r.read(&mut buf).unwrap().unwrap().packet;
    assert_eq!(p.packet_type(), PacketType::GpaDirect);
    let ranges: Vec<_> = p.gpa_ranges().unwrap().collect();
    assert_eq!(ranges.len(), 1);
    assert_eq!(ranges[0].pfns.get(0), Some(0x1234));
    assert_eq!(p.payload(), &[7u8; 8]);
}

#[test]
fn gpa_range_count_zero() {
    let (mut w, mut r) = ring_with_gpa();
    poke_u32(&mut w, &mut r, GPA_RANGE_COUNT, 0);
    expect_reader_error(&mut r, RingError::GpaNoRanges);
}

#[test]
fn gpa_byte_offset_too_large() {
    let (mut w, mut r) = ring_with_gpa();
    poke_u32(&mut w, &mut r, GPA_BYTE_OFFSET, 0x1000);
    expect_reader_error(
        &mut r,
        RingError::GpaByteOffsetTooLarge {
            range: 0,
            byte_offset: 0x1000,
        },
    );
}

#[test]
fn gpa_zero_byte_count() {
    let (mut w, mut r) = ring_with_gpa();
    poke_u32(&mut w, &mut r, GPA_BYTE_COUNT, 0);
    expect_reader_error(&mut r, RingError::GpaZeroByteCount { range: 0 });
}

#[test]
fn gpa_too_few_pfns() {
    // 4097 bytes need two PFNs; only one is present.
    let (mut w, mut r) = ring_with_gpa();
    poke_u32(&mut w, &mut r, GPA_BYTE_COUNT, 4097);
    expect_reader_error(
        &mut r,
        RingError::GpaTooFewPfns {
            range: 0,
            needed: 2,
            available: 1,
        },
    );
    // A huge range must not overflow anything.
    let (mut w, mut r) = ring_with_gpa();
    poke_u32(&mut w, &mut r, GPA_BYTE_COUNT, u32::MAX);
    poke_u32(&mut w, &mut r, GPA_BYTE_OFFSET, 0xfff);
    expect_reader_error(
        &mut r,
        RingError::GpaTooFewPfns {
            range: 0,
            needed: 1_048_577,
            available: 1,
        },
    );
}

#[test]
fn gpa_more_ranges_than_fit() {
    let (mut w, mut r) = ring_with_gpa();
    poke_u32(&mut w, &mut r, GPA_RANGE_COUNT, 2);
    expect_reader_error(&mut r, RingError::GpaRangeTruncated { range: 1 });
}

#[test]
fn gpa_offset8_too_small() {
    let (mut w, mut r) = ring_with_gpa();
    poke_u16(&mut w, &mut r, OFFSET8, 2);
    expect_reader_error(&mut r, RingError::GpaHeaderTruncated { offset8: 2 });
    // offset8 = 3 holds {reserved, count} but not the range.
    let (mut w, mut r) = ring_with_gpa();
    poke_u16(&mut w, &mut r, OFFSET8, 3);
    expect_reader_error(&mut r, RingError::GpaRangeTruncated { range: 0 });
    // offset8 = 4 holds the range header but not its PFN.
    let (mut w, mut r) = ring_with_gpa();
    poke_u16(&mut w, &mut r, OFFSET8, 4);
    expect_reader_error(
        &mut r,
        RingError::GpaTooFewPfns {
            range: 0,
            needed: 1,
            available: 0,
        },
    );
}

/// A one-page ring holding one transfer-page packet: header `{0xcafe, 1, 0, count=2}` and two
/// ranges (24 bytes, offset8 5), 16-byte payload.
fn ring_with_transfer_pages() -> (RingWriter, RingReader) {
    let (mut w, r) = Ring::create(1).unwrap();
    let mut header = Vec::new();
    header.extend_from_slice(&0xcafeu16.to_le_bytes());
    header.extend_from_slice(&[1, 0]);
    header.extend_from_slice(&2u32.to_le_bytes());
    for (count, offset) in [(100u32, 0u32), (200, 4096)] {
        header.extend_from_slice(&count.to_le_bytes());
        header.extend_from_slice(&offset.to_le_bytes());
    }
    let payload = [3u8; 16];
    let parts = [&payload[..]];
    w.write(&OutgoingPacket {
        packet_type: PacketType::TransferPages,
        completion_requested: true,
        transaction_id: 77,
        header: &header,
        payload: &parts,
    })
    .unwrap();
    (w, r)
}

#[test]
fn transfer_pages_parse() {
    let (_w, mut r) = ring_with_transfer_pages();
    let mut buf = [0u8; 128];
    let p = r.read(&mut buf).unwrap().unwrap().packet;
    assert_eq!(p.packet_type(), PacketType::TransferPages);
    let tp = p.transfer_pages().unwrap();
    assert_eq!(tp.pageset_id(), 0xcafe);
    assert_eq!(tp.sender_owns_set(), 1);
    let ranges: Vec<_> = tp.ranges().map(|r| (r.byte_count, r.byte_offset)).collect();
    assert_eq!(ranges, [(100, 0), (200, 4096)]);
    assert_eq!(p.payload(), &[3u8; 16]);
}

#[test]
fn transfer_pages_bad_headers() {
    let (mut w, mut r) = ring_with_transfer_pages();
    poke_u32(&mut w, &mut r, 20, 0);
    expect_reader_error(&mut r, RingError::TransferPageNoRanges);

    let (mut w, mut r) = ring_with_transfer_pages();
    poke_u32(&mut w, &mut r, 20, 5);
    expect_reader_error(
        &mut r,
        RingError::TransferPageRangesTruncated {
            range_count: 5,
            available: 2,
        },
    );

    let (mut w, mut r) = ring_with_transfer_pages();
    poke_u16(&mut w, &mut r, OFFSET8, 2);
    expect_reader_error(
        &mut r,
        RingError::TransferPageHeaderTruncated { offset8: 2 },
    );
}

#[test]
fn error_mid_batch_keeps_valid_prefix_only() {
    let (mut w, mut r) = Ring::create(1).unwrap();
    let payload = [1u8; 8];
    let parts = [&payload[..]];
    w.write(&OutgoingPacket::in_band(1, false, &parts)).unwrap(); // 0..32
    w.write(&OutgoingPacket::in_band(2, false, &parts)).unwrap(); // 32..64
    poke_u16(&mut w, &mut r, 32 + TYPE, 0x42);
    let mut buf = [0u8; 64];
    let mut batch = r.batch();
    assert_eq!(batch.read(&mut buf).unwrap().unwrap().transaction_id(), 1);
    let e = RingError::UnknownPacketType { packet_type: 0x42 };
    assert_eq!(batch.read(&mut buf).unwrap_err(), e);
    let commit = batch.commit().unwrap();
    assert_eq!(commit.packets, 1);
    assert_eq!(r.ring().control_word(ControlWord::ReadIndex), 32);
    assert_eq!(r.read(&mut buf).unwrap_err(), e);
    assert_eq!(r.ring().control_word(ControlWord::ReadIndex), 32);
}

#[test]
fn buffer_too_small_consumes_nothing() {
    let (_w, mut r) = ring_with_in_band();
    let mut small = [0u8; 39];
    assert_eq!(
        r.read(&mut small).unwrap_err(),
        RingError::BufferTooSmall {
            needed: 40,
            len: 39
        }
    );
    assert_eq!(r.corruption(), None);
    assert_eq!(r.ring().control_word(ControlWord::ReadIndex), 0);
    let mut exact = [0u8; 40];
    let p = r.read(&mut exact).unwrap().unwrap().packet;
    assert_eq!(p.transaction_id(), 1);
    assert_eq!(p.bytes().len(), 40);
}

#[test]
fn packet_view_is_a_private_copy() {
    // TOCTOU: once read, rewriting the ring bytes cannot change what was validated.
    let (mut w, mut r) = ring_with_in_band();
    let mut buf = [0u8; 64];
    let out = r.read(&mut buf).unwrap().unwrap();
    {
        let mut raw = RawAccess::new(&mut w, &mut r).unwrap();
        raw.write_data(0, &[0xFFu8; 48]).unwrap();
    }
    assert_eq!(out.packet.packet_type(), PacketType::InBand);
    assert_eq!(out.packet.transaction_id(), 1);
    assert_eq!(out.packet.payload(), &[0x5Au8; 24]);
}

#[test]
fn hostile_writer_through_write_raw() {
    // The concurrent-safe way for a hostile endpoint to send garbage: publish it as a packet.
    let (mut w, mut r) = Ring::create(1).unwrap();
    let mut bad = [0u8; 24];
    bad[0..2].copy_from_slice(&6u16.to_le_bytes());
    bad[2..4].copy_from_slice(&2u16.to_le_bytes());
    bad[4..6].copy_from_slice(&200u16.to_le_bytes()); // len8 far beyond what was published
    let mut batch = w.batch();
    batch.write_raw(&bad).unwrap();
    assert!(batch.commit().signal_needed);
    expect_reader_error(
        &mut r,
        RingError::LengthExceedsAvailable {
            needed: 1608,
            available: 24,
        },
    );
    // write_raw refuses lengths that are not a non-zero multiple of 8.
    let mut batch = w.batch();
    assert!(matches!(
        batch.write_raw(&bad[..5]),
        Err(RingError::RawAccessOutOfRange { .. })
    ));
    assert!(matches!(
        batch.write_raw(&[]),
        Err(RingError::RawAccessOutOfRange { .. })
    ));
}

#[test]
fn raw_access_checks_its_arguments() {
    let (mut w1, mut r1) = Ring::create(1).unwrap();
    let (mut w2, mut r2) = Ring::create(1).unwrap();
    assert_eq!(
        RawAccess::new(&mut w1, &mut r2).unwrap_err(),
        RingError::MismatchedEndpoints
    );
    let _ = RawAccess::new(&mut w2, &mut r1).unwrap_err();
    let mut raw = RawAccess::new(&mut w1, &mut r1).unwrap();
    assert!(raw.write_data(4096, &[0]).is_err());
    assert!(raw.write_data(0, &[0u8; 4097]).is_err());
    assert!(raw.read_data(0, &mut [0u8; 4096]).is_ok());
    assert!(raw.snapshot(&mut [0u8; 8191]).is_err());
    assert!(raw.store_control(0, 1).is_err()); // indices need the unsafe setters
    assert!(raw.store_control(4, 1).is_err());
    assert!(raw.store_control(2, 1).is_err());
    assert!(raw.store_control(4096, 1).is_err());
    raw.store_control(100, 0xAB).unwrap();
    assert_eq!(raw.load_control(100), Ok(0xAB));
    raw.set_feature_bits(0);
    assert_eq!(raw.control_word(ControlWord::FeatureBits), 0);
}

fn descriptor_strategy() -> impl Strategy<Value = Vec<u8>> {
    let ty = prop_oneof![Just(6u16), Just(7), Just(9), Just(0xB), any::<u16>()];
    let flags = prop_oneof![Just(0u16), Just(1), any::<u16>()];
    let small = prop_oneof![0u16..16, any::<u16>()];
    (
        ty,
        small.clone(),
        small,
        flags,
        prop::collection::vec(any::<u8>(), 0..40),
    )
        .prop_map(|(t, o, l, f, rest)| {
            let mut v = Vec::new();
            for x in [t, o, l, f] {
                v.extend_from_slice(&x.to_le_bytes());
            }
            v.extend_from_slice(&[0u8; 8]);
            for chunk in rest.chunks(4) {
                v.extend_from_slice(chunk);
            }
            let padded = v.len().div_ceil(8) * 8;
            v.resize(padded, 0);
            // Small u32 fields (counts, offsets) are more interesting than random ones.
            if v.len() >= 24 {
                v[20] %= 4;
                v[21] = 0;
                v[22] = 0;
                v[23] = 0;
            }
            v
        })
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 256,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    /// Arbitrary (biased) bytes published by a hostile writer: the reader returns a packet or a
    /// peer-corruption error, never panics, never reads past what was published, and never
    /// advances after an error.
    #[test]
    fn garbage_never_panics(raw in descriptor_strategy(), tail in 0usize..3) {
        let (mut w, mut r) = Ring::create(1).unwrap();
        let mut batch = w.batch();
        batch.write_raw(&raw).unwrap();
        for _ in 0..tail {
            batch.write_raw(&raw).unwrap();
        }
        let _ = batch.commit();
        let mut buf = vec![0u8; 4096];
        match r.read(&mut buf) {
            Ok(Some(out)) => {
                let p = out.packet;
                let published = raw.repeat(tail + 1);
                prop_assert!(p.bytes().len() + 8 <= published.len());
                prop_assert_eq!(p.bytes(), &published[..p.bytes().len()]);
                if let Some(ranges) = p.gpa_ranges() {
                    for range in ranges {
                        prop_assert!(range.byte_count != 0 && range.byte_offset <= 0xfff);
                    }
                }
            }
            Ok(None) => prop_assert!(false, "published bytes must be seen"),
            Err(e) => {
                prop_assert!(e.is_peer_corruption(), "{e:?}");
                prop_assert_eq!(r.ring().control_word(ControlWord::ReadIndex), 0);
                prop_assert_eq!(r.read(&mut buf).unwrap_err(), e);
            }
        }
    }
}
