//! Wire-format conformance: an independent parser, written here from the byte layout of spec
//! §1.2–§1.5 (little-endian u16/u32/u64 read from a raw snapshot of control page + data area),
//! walks the packets the ring API wrote and checks every byte: descriptor fields, header, payload,
//! zero padding and the trailer `start << 32`, including packets and descriptors that wrap.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use vmbus_kmcl_sim::ring::{
    ControlWord, GpaRangeSpec, OutgoingPacket, PacketType, RawAccess, Ring, RingReader, RingWriter,
    encode_gpa_direct_header,
};

/// A raw image of a ring: 4096-byte control page + data area.
struct Snapshot {
    bytes: Vec<u8>,
}

impl Snapshot {
    fn take(writer: &mut RingWriter, reader: &mut RingReader) -> Self {
        let raw = RawAccess::new(writer, reader).unwrap();
        let mut bytes = vec![0u8; 4096 + raw.data_size() as usize];
        raw.snapshot(&mut bytes).unwrap();
        Self { bytes }
    }

    fn size(&self) -> usize {
        self.bytes.len() - 4096
    }

    fn control_u32(&self, offset: usize) -> u32 {
        u32::from_le_bytes(self.bytes[offset..offset + 4].try_into().unwrap())
    }

    /// Data-area byte at `offset + i`, wrapping.
    fn data(&self, offset: usize, i: usize) -> u8 {
        self.bytes[4096 + (offset + i) % self.size()]
    }

    fn data_range(&self, offset: usize, len: usize) -> Vec<u8> {
        (0..len).map(|i| self.data(offset, i)).collect()
    }

    fn u16_at(&self, offset: usize, i: usize) -> u16 {
        u16::from_le_bytes([self.data(offset, i), self.data(offset, i + 1)])
    }

    fn u64_at(&self, offset: usize, i: usize) -> u64 {
        let b: Vec<u8> = (0..8).map(|k| self.data(offset, i + k)).collect();
        u64::from_le_bytes(b.try_into().unwrap())
    }
}

/// What the test expects one packet to be.
struct Expected {
    packet_type: u16,
    flags: u16,
    txid: u64,
    header: Vec<u8>,
    payload: Vec<u8>,
}

impl Expected {
    /// The packet's full byte image, built from the spec independently of the crate.
    fn image(&self, start: usize) -> Vec<u8> {
        let offset8 = (16 + self.header.len()) / 8;
        let unpadded = 16 + self.header.len() + self.payload.len();
        let len8 = unpadded.div_ceil(8);
        let mut v = Vec::new();
        v.extend_from_slice(&self.packet_type.to_le_bytes());
        v.extend_from_slice(&(offset8 as u16).to_le_bytes());
        v.extend_from_slice(&(len8 as u16).to_le_bytes());
        v.extend_from_slice(&self.flags.to_le_bytes());
        v.extend_from_slice(&self.txid.to_le_bytes());
        v.extend_from_slice(&self.header);
        v.extend_from_slice(&self.payload);
        v.resize(len8 * 8, 0);
        v.extend_from_slice(&((start as u64) << 32).to_le_bytes());
        v
    }
}

/// Walks every packet between the read and write index of `snap` and checks it against
/// `expected`, field by field and byte by byte. Returns the start offsets.
fn walk(snap: &Snapshot, expected: &[Expected]) -> Vec<usize> {
    let size = snap.size();
    let write = snap.control_u32(0) as usize;
    let read = snap.control_u32(4) as usize;
    assert_eq!(snap.control_u32(64) & 1, 1, "feat_pending_send_sz");
    assert_eq!(write % 8, 0);
    assert_eq!(read % 8, 0);
    let mut pos = read;
    let mut starts = Vec::new();
    for e in expected {
        assert_ne!(pos, write, "ring ended early");
        let packet_type = snap.u16_at(pos, 0);
        let offset8 = snap.u16_at(pos, 2) as usize;
        let len8 = snap.u16_at(pos, 4) as usize;
        let flags = snap.u16_at(pos, 6);
        let txid = snap.u64_at(pos, 8);
        assert_eq!(packet_type, e.packet_type);
        assert_eq!(flags, e.flags);
        assert_eq!(txid, e.txid);
        assert_eq!(offset8 * 8, 16 + e.header.len());
        assert_eq!(len8, (16 + e.header.len() + e.payload.len()).div_ceil(8));
        assert_eq!(snap.data_range(pos + 16, e.header.len()), e.header);
        let payload_at = pos + offset8 * 8;
        assert_eq!(snap.data_range(payload_at, e.payload.len()), e.payload);
        let pad_from = payload_at + e.payload.len();
        let pad_len = pos + len8 * 8 - pad_from;
        assert!(pad_len < 8);
        assert!(snap.data_range(pad_from, pad_len).iter().all(|&b| b == 0));
        let trailer = snap.u64_at(pos, len8 * 8);
        assert_eq!(trailer, (pos as u64) << 32, "trailer of packet at {pos}");
        assert_eq!(trailer & 0xffff_ffff, 0);
        // Byte for byte against an image built from the spec.
        let image = e.image(pos);
        assert_eq!(snap.data_range(pos, image.len()), image);
        starts.push(pos);
        pos = (pos + len8 * 8 + 8) % size;
    }
    assert_eq!(pos, write, "extra bytes after the expected packets");
    starts
}

/// Moves both indices of an empty ring to `target` with one filler packet (written, then read).
fn park_indices(writer: &mut RingWriter, reader: &mut RingReader, target: u32) {
    let size = writer.ring().data_size();
    let current = writer.write_index();
    let distance = (target + size - current) % size;
    if distance == 0 {
        return;
    }
    assert!(distance >= 24 && distance <= size - 8);
    let payload = vec![0xEEu8; distance as usize - 24];
    let parts = [&payload[..]];
    writer
        .write(&OutgoingPacket::in_band(0, false, &parts))
        .unwrap();
    let mut buf = vec![0u8; size as usize];
    reader.read(&mut buf).unwrap().unwrap();
    assert_eq!(writer.ring().control_word(ControlWord::ReadIndex), target);
}

fn bytes(n: usize, seed: u8) -> Vec<u8> {
    (0..n)
        .map(|i| seed.wrapping_add((i as u8).wrapping_mul(7)))
        .collect()
}

#[test]
fn descriptor_split_across_the_wrap() {
    // Data area 4096 bytes; a packet starting at 4088 has its descriptor split 8/8.
    let (mut w, mut r) = Ring::create(1).unwrap();
    park_indices(&mut w, &mut r, 4088);
    let payload = bytes(21, 3);
    let parts = [&payload[..5], &payload[5..]];
    w.write(&OutgoingPacket::in_band(
        0xABCD_EF01_2345_6789,
        true,
        &parts,
    ))
    .unwrap();
    let snap = Snapshot::take(&mut w, &mut r);
    let starts = walk(
        &snap,
        &[Expected {
            packet_type: 6,
            flags: 1,
            txid: 0xABCD_EF01_2345_6789,
            header: vec![],
            payload,
        }],
    );
    assert_eq!(starts, [4088]);
    // The descriptor's first half is at the very end, the second half at the start.
    assert_eq!(&snap.bytes[4096 + 4088..4096 + 4090], &[6, 0]);
    assert_eq!(snap.control_u32(0), (4088 + 16 + 24 + 8) % 4096);
}

#[test]
fn every_wrap_split_point() {
    // For each 8-aligned position near the end, a packet whose descriptor, payload, padding or
    // trailer straddles the wrap is written and checked byte by byte.
    for target in (4096 - 64..4096).step_by(8) {
        let (mut w, mut r) = Ring::create(1).unwrap();
        park_indices(&mut w, &mut r, target);
        let payload = bytes(37, target as u8);
        let parts = [&payload[..]];
        w.write(&OutgoingPacket::completion(7, &parts)).unwrap();
        let payload2 = bytes(3, 9);
        let parts2 = [&payload2[..]];
        w.write(&OutgoingPacket::in_band(8, false, &parts2))
            .unwrap();
        let snap = Snapshot::take(&mut w, &mut r);
        walk(
            &snap,
            &[
                Expected {
                    packet_type: 0xB,
                    flags: 0,
                    txid: 7,
                    header: vec![],
                    payload,
                },
                Expected {
                    packet_type: 6,
                    flags: 0,
                    txid: 8,
                    header: vec![],
                    payload: payload2,
                },
            ],
        );
    }
}

#[test]
fn gpa_direct_packet_layout_wrapped() {
    let (mut w, mut r) = Ring::create(2).unwrap();
    park_indices(&mut w, &mut r, 8192 - 32);
    let pfns_a = [0x1_0000u64, 0x1_0001, 0x1_0002];
    let pfns_b = [0xdead_beefu64];
    let ranges = [
        GpaRangeSpec {
            byte_offset: 0x123,
            byte_count: 8000,
            pfns: &pfns_a,
        },
        GpaRangeSpec {
            byte_offset: 0xfff,
            byte_count: 1,
            pfns: &pfns_b,
        },
    ];
    let mut header = [0u8; 128];
    let n = encode_gpa_direct_header(&ranges, &mut header).unwrap();
    let header = &header[..n];

    // The independent encoding of the same header, from spec §1.5.
    let mut want_header = Vec::new();
    want_header.extend_from_slice(&0u32.to_le_bytes()); // reserved
    want_header.extend_from_slice(&2u32.to_le_bytes()); // range_count
    want_header.extend_from_slice(&8000u32.to_le_bytes());
    want_header.extend_from_slice(&0x123u32.to_le_bytes());
    for p in pfns_a {
        want_header.extend_from_slice(&p.to_le_bytes());
    }
    want_header.extend_from_slice(&1u32.to_le_bytes());
    want_header.extend_from_slice(&0xfffu32.to_le_bytes());
    want_header.extend_from_slice(&0xdead_beefu64.to_le_bytes());
    assert_eq!(header, &want_header[..]);

    let payload = bytes(13, 0x55);
    let parts = [&payload[..]];
    w.write(&OutgoingPacket::gpa_direct(42, header, &parts))
        .unwrap();
    let snap = Snapshot::take(&mut w, &mut r);
    let starts = walk(
        &snap,
        &[Expected {
            packet_type: 9,
            flags: 1,
            txid: 42,
            header: want_header,
            payload: payload.clone(),
        }],
    );
    assert_eq!(starts, [8192 - 32]);
    // offset8 must be >= 3 for GPA direct and covers the range array.
    assert_eq!(snap.u16_at(8192 - 32, 2), (16 + 8 + 32 + 16) / 8);

    // And the reader parses it back.
    let mut buf = [0u8; 256];
    let out = r.read(&mut buf).unwrap().unwrap();
    let p = out.packet;
    assert_eq!(p.packet_type(), PacketType::GpaDirect);
    assert_eq!(&p.payload()[..13], &payload[..]);
    let got: Vec<_> = p.gpa_ranges().unwrap().collect();
    assert_eq!(got.len(), 2);
    assert_eq!((got[0].byte_offset, got[0].byte_count), (0x123, 8000));
    assert!(got[0].pfns.eq_slice(&pfns_a));
    assert_eq!((got[1].byte_offset, got[1].byte_count), (0xfff, 1));
    assert_eq!(got[1].pfns.iter().collect::<Vec<_>>(), pfns_b);
}

#[test]
fn many_packets_across_several_wraps() {
    let (mut w, mut r) = Ring::create(1).unwrap();
    let mut buf = vec![0u8; 4096];
    for round in 0..40u64 {
        let mut expected = Vec::new();
        let mut batch = w.batch();
        let payloads: Vec<Vec<u8>> = (0..3)
            .map(|k| bytes(((round * 131 + k * 57) % 900) as usize, (round + k) as u8))
            .collect();
        for (k, payload) in payloads.iter().enumerate() {
            let parts = [&payload[..]];
            let txid = round * 10 + k as u64;
            batch
                .write(&OutgoingPacket::in_band(txid, k == 1, &parts))
                .unwrap();
            expected.push(Expected {
                packet_type: 6,
                flags: u16::from(k == 1),
                txid,
                header: vec![],
                payload: payload.clone(),
            });
        }
        let _ = batch.commit();
        let snap = Snapshot::take(&mut w, &mut r);
        walk(&snap, &expected);
        let mut rb = r.batch();
        while rb.read(&mut buf).unwrap().is_some() {}
        rb.commit().unwrap();
    }
}

#[test]
fn control_page_layout() {
    let (mut w, mut r) = Ring::create(1).unwrap();
    r.mask_interrupts();
    let payload = [1u8; 8];
    let parts = [&payload[..]];
    w.write(&OutgoingPacket::in_band(1, false, &parts)).unwrap();
    assert!(!w.wait_for_space(4088).unwrap());
    let snap = Snapshot::take(&mut w, &mut r);
    assert_eq!(snap.control_u32(0), 32); // write_index
    assert_eq!(snap.control_u32(4), 0); // read_index
    assert_eq!(snap.control_u32(8), 1); // interrupt_mask
    assert_eq!(snap.control_u32(12), 4088); // pending_send_sz
    assert_eq!(snap.control_u32(64), 1); // feature_bits
    for off in (16..64).chain(68..4096).step_by(4) {
        assert_eq!(snap.control_u32(off), 0, "reserved word at {off}");
    }
}
