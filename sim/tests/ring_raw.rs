//! Ring endpoints over caller memory (`RingWriter::over_raw`, `RingReader::over_raw`) and at
//! chosen indices (`Ring::create_at`): argument checks, wrap-around from a chosen index, sharing
//! with the emulator's own endpoints both ways, and the same peer validation as `Ring::create`.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use core::ptr::NonNull;
use std::alloc::{Layout, alloc_zeroed, dealloc};

use vmbus_kmcl_sim::ring::{
    ControlWord, MAX_DATA_PAGES, OutgoingPacket, PAGE_SIZE, PacketType, Ring, RingError,
    RingReader, RingWriter,
};

/// Page-aligned, zeroed memory for a ring of `data_pages` data pages, owned by the test.
struct Memory {
    base: NonNull<u8>,
    layout: Layout,
}

impl Memory {
    fn new(data_pages: usize) -> Self {
        let layout = Layout::from_size_align((1 + data_pages) * PAGE_SIZE, PAGE_SIZE).unwrap();
        // SAFETY: non-zero size.
        let base = NonNull::new(unsafe { alloc_zeroed(layout) }).unwrap();
        Self { base, layout }
    }

    /// Writes `bytes` at `offset` from the start (the control page is at 0, data at 4096). Only
    /// called while no endpoint is inside a call.
    fn poke(&self, offset: usize, bytes: &[u8]) {
        assert!(offset + bytes.len() <= self.layout.size());
        // SAFETY: in bounds of the allocation; single-threaded, no reference into it exists.
        unsafe {
            core::ptr::copy_nonoverlapping(
                bytes.as_ptr(),
                self.base.as_ptr().wrapping_add(offset),
                bytes.len(),
            );
        }
    }

    fn writer(&self, pages: usize, index: u32) -> Result<RingWriter, RingError> {
        // SAFETY: the memory outlives every endpoint of these tests (each test drops its
        // endpoints before `self`); one writer per ring at a time.
        unsafe { RingWriter::over_raw(self.base, pages, index) }
    }

    fn reader(&self, pages: usize, index: u32) -> Result<RingReader, RingError> {
        // SAFETY: as for `writer`; one reader per ring at a time.
        unsafe { RingReader::over_raw(self.base, pages, index) }
    }
}

impl Drop for Memory {
    fn drop(&mut self) {
        // SAFETY: allocated with this layout.
        unsafe { dealloc(self.base.as_ptr(), self.layout) };
    }
}

#[test]
fn arguments_are_checked() {
    let m = Memory::new(1);
    assert_eq!(
        m.writer(0, 0).unwrap_err(),
        RingError::InvalidPageCount { pages: 0 }
    );
    assert_eq!(
        m.reader(MAX_DATA_PAGES + 1, 0).unwrap_err(),
        RingError::InvalidPageCount {
            pages: MAX_DATA_PAGES + 1
        }
    );
    let odd = NonNull::new(m.base.as_ptr().wrapping_add(8)).unwrap();
    // SAFETY: rejected before any access.
    let misaligned = unsafe { RingReader::over_raw(odd, 1, 0) }.unwrap_err();
    assert_eq!(
        misaligned,
        RingError::MisalignedMemory {
            address: odd.as_ptr() as usize
        }
    );
    for index in [4, 4096, u32::MAX] {
        assert_eq!(
            m.writer(1, index).unwrap_err(),
            RingError::InvalidStartIndex { index }
        );
        assert_eq!(
            m.reader(1, index).unwrap_err(),
            RingError::InvalidStartIndex { index }
        );
        assert_eq!(
            Ring::create_at(1, index, 0).unwrap_err(),
            RingError::InvalidStartIndex { index }
        );
    }
    assert!(!RingError::MisalignedMemory { address: 1 }.is_peer_corruption());
    assert!(!RingError::InvalidStartIndex { index: 1 }.is_peer_corruption());
    assert!(
        RingError::InvalidStartIndex { index: 4 }
            .to_string()
            .contains('4')
    );
}

/// Nothing is written at construction; the first commit publishes the chosen index's successor.
#[test]
fn construction_writes_nothing_and_packets_wrap_from_the_chosen_index() {
    let m = Memory::new(1);
    m.poke(0, &0xDEAD_BEE8_u32.to_le_bytes()); // a stale write index
    m.poke(4, &4080u32.to_le_bytes()); // the peer reader's index: the ring is empty
    m.poke(64, &1u32.to_le_bytes()); // feature bits as some other implementation set them
    let mut w = m.writer(1, 4080).unwrap();
    assert_eq!(w.write_index(), 4080);
    assert_eq!(w.ring().control_word(ControlWord::WriteIndex), 0xDEAD_BEE8);
    assert_eq!(w.ring().control_word(ControlWord::FeatureBits), 1);
    assert_eq!(w.ring().data_pages(), 1);
    assert_eq!(w.ring().base(), m.base);
    // A 32-byte payload from 4080: descriptor at 4080..4096, payload wraps to 0..32.
    let payload: Vec<u8> = (0..32).collect();
    let parts = [&payload[..]];
    let out = w.write(&OutgoingPacket::in_band(9, false, &parts)).unwrap();
    assert_eq!(out.bytes, 16 + 32 + 8);
    assert_eq!(w.ring().control_word(ControlWord::WriteIndex), 40);
    let mut r = m.reader(1, 4080).unwrap();
    let mut buf = [0u8; 128];
    let got = r.read(&mut buf).unwrap().expect("a packet");
    assert_eq!(got.packet.packet_type(), PacketType::InBand);
    assert_eq!(got.packet.transaction_id(), 9);
    assert_eq!(got.packet.payload(), &payload[..]);
    assert_eq!(r.ring().control_word(ControlWord::ReadIndex), 40);
    assert_eq!(r.ring().control_page()[4..8], 40u32.to_le_bytes());
    assert!(r.read(&mut buf).unwrap().is_none(), "empty again");
    drop((w, r));
}

/// A reader over caller memory validates the peer exactly as the emulator's does: a wild write
/// index and a bad descriptor are refused, and the reader stays poisoned.
#[test]
fn peer_values_are_validated() {
    let m = Memory::new(1);
    let mut r = m.reader(1, 0).unwrap();
    m.poke(0, &12u32.to_le_bytes()); // not 8-aligned
    let mut buf = [0u8; 128];
    assert_eq!(
        r.read(&mut buf).unwrap_err(),
        RingError::InvalidWriteIndex { index: 12 }
    );
    m.poke(0, &0u32.to_le_bytes());
    assert!(r.read(&mut buf).is_err(), "poisoned");
    assert_eq!(r.read_index(), 0);
    drop(r);

    // A descriptor of unknown type, published by a foreign writer.
    let m = Memory::new(1);
    let mut r = m.reader(1, 0).unwrap();
    let mut descriptor = [0u8; 16];
    descriptor[0..2].copy_from_slice(&0x42u16.to_le_bytes()); // type
    descriptor[2..4].copy_from_slice(&2u16.to_le_bytes()); // offset8
    descriptor[4..6].copy_from_slice(&2u16.to_le_bytes()); // len8
    m.poke(PAGE_SIZE, &descriptor);
    m.poke(0, &24u32.to_le_bytes()); // 16 + trailer
    let err = r.read(&mut buf).unwrap_err();
    assert!(err.is_peer_corruption(), "{err:?}");
    assert_eq!(r.corruption(), Some(err));
    assert_eq!(
        r.ring().control_word(ControlWord::ReadIndex),
        0,
        "not advanced"
    );
}

/// A foreign writer feeding the emulator's reader, and the emulator's writer feeding a foreign
/// reader, on rings the emulator owns.
#[test]
fn shares_rings_with_the_emulators_endpoints() {
    let (emulator_writer, mut emulator_reader) = Ring::create(2).unwrap();
    let base = emulator_reader.ring().base();
    drop(emulator_writer);
    // SAFETY: `emulator_reader` keeps the memory alive past `foreign`; the emulator's writer is
    // gone, so this is the only writer.
    let mut foreign = unsafe { RingWriter::over_raw(base, 2, 0) }.unwrap();
    for i in 0..200u64 {
        let bytes = i.to_le_bytes();
        let parts = [&bytes[..]];
        foreign
            .write(&OutgoingPacket::in_band(i + 1, true, &parts))
            .unwrap();
        let mut buf = [0u8; 64];
        let got = emulator_reader.read(&mut buf).unwrap().unwrap();
        assert_eq!(got.packet.transaction_id(), i + 1);
        assert_eq!(got.packet.payload(), &bytes);
    }
    drop(foreign);

    let (mut writer, emulator_reader) = Ring::create_at(1, 4088, 4088).unwrap();
    drop(emulator_reader);
    // SAFETY: `writer` keeps the memory alive past `reader`; it is the only reader.
    let mut reader = unsafe { RingReader::over_raw(writer.ring().base(), 1, 4088) }.unwrap();
    assert_eq!(reader.readable_bytes().unwrap(), 0);
    writer
        .write(&OutgoingPacket::completion(5, &[b"wrapped!"]))
        .unwrap();
    let mut buf = [0u8; 64];
    let got = reader.read(&mut buf).unwrap().unwrap();
    assert_eq!(got.packet.packet_type(), PacketType::Completion);
    assert_eq!(got.packet.payload(), b"wrapped!");
    assert_eq!(writer.ring().control_word(ControlWord::ReadIndex), 32 - 8);
}
