//! Signalling rules of spec §1.8: writer signals only on empty→non-empty with the mask clear;
//! the reader's unmask re-checks; the reader signals only when `pending_send_sz` is crossed.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use vmbus_kmcl_sim::ring::{
    ControlWord, OutgoingPacket, RawAccess, Ring, RingError, RingReader, RingWriter,
};

fn send(w: &mut RingWriter, len: usize) -> Result<bool, RingError> {
    let payload = vec![0xA5u8; len];
    let parts = [&payload[..]];
    w.write(&OutgoingPacket::in_band(1, false, &parts))
        .map(|o| o.signal_needed)
}

fn recv(r: &mut RingReader) -> Option<bool> {
    let mut buf = vec![0u8; 8192];
    r.read(&mut buf).unwrap().map(|o| o.signal_needed)
}

#[test]
fn writer_signals_only_on_empty_to_non_empty() {
    let (mut w, mut r) = Ring::create(1).unwrap();
    assert!(send(&mut w, 10).unwrap(), "empty -> non-empty");
    assert!(!send(&mut w, 10).unwrap(), "already non-empty");
    assert!(!send(&mut w, 10).unwrap());
    assert_eq!(recv(&mut r), Some(false));
    assert!(
        !send(&mut w, 10).unwrap(),
        "still non-empty after a partial drain"
    );
    while recv(&mut r).is_some() {}
    assert!(send(&mut w, 10).unwrap(), "empty again");
    assert_eq!(w.ring().counters().writer_signals, 2);
}

#[test]
fn batch_gives_at_most_one_signal() {
    let (mut w, _r) = Ring::create(1).unwrap();
    let payload = [1u8; 100];
    let parts = [&payload[..]];
    let mut batch = w.batch();
    for i in 0..5 {
        batch
            .write(&OutgoingPacket::in_band(i, false, &parts))
            .unwrap();
    }
    assert_eq!(batch.packets(), 5);
    let out = batch.commit();
    assert!(out.signal_needed);
    assert_eq!(out.packets, 5);
    assert_eq!(out.bytes, 5 * 128);
    assert_eq!(w.ring().counters().writer_signals, 1);
    // An empty batch publishes nothing and never signals.
    let out = w.batch().commit();
    assert_eq!(out.packets, 0);
    assert!(!out.signal_needed);
}

#[test]
fn dropped_batch_publishes_nothing() {
    let (mut w, mut r) = Ring::create(1).unwrap();
    let payload = [1u8; 8];
    let parts = [&payload[..]];
    {
        let mut batch = w.batch();
        batch
            .write(&OutgoingPacket::in_band(1, false, &parts))
            .unwrap();
    }
    assert_eq!(w.ring().control_word(ControlWord::WriteIndex), 0);
    assert_eq!(recv(&mut r), None);
    assert!(send(&mut w, 8).unwrap());
}

#[test]
fn mask_suppresses_writer_signal_and_unmask_rechecks() {
    let (mut w, mut r) = Ring::create(1).unwrap();
    r.mask_interrupts();
    assert_eq!(w.ring().control_word(ControlWord::InterruptMask), 1);
    assert!(!send(&mut w, 10).unwrap(), "masked: no signal");
    assert_eq!(w.ring().counters().writer_signals, 0);
    // The writer skipped its signal, so unmask must report the data.
    assert!(r.unmask_interrupts().unwrap());
    assert_eq!(w.ring().control_word(ControlWord::InterruptMask), 0);
    assert_eq!(recv(&mut r), Some(false));
    assert!(!r.unmask_interrupts().unwrap(), "empty after draining");
    assert!(send(&mut w, 10).unwrap(), "unmasked and empty: signal");
}

#[test]
fn pending_send_size_crossing_signals_once() {
    // 16 data pages = 65536 bytes. A 4000-byte payload needs 16 + 4000 + 8 = 4024 ring bytes.
    let (mut w, mut r) = Ring::create(16).unwrap();
    let mut sent = 0;
    let needed = loop {
        match send(&mut w, 4000) {
            Ok(_) => sent += 1,
            Err(RingError::NotEnoughSpace { needed, free }) => {
                assert_eq!(free, 65536 - 8 - sent * 4024);
                break needed;
            }
            Err(e) => panic!("{e}"),
        }
    };
    assert_eq!(sent, 16);
    assert_eq!(needed, 4024);
    assert!(!w.wait_for_space(2 * 4024).unwrap(), "ring is still full");
    assert_eq!(
        w.ring().control_word(ControlWord::PendingSendSize),
        2 * 4024
    );
    // Drain one at a time: free goes 1144 -> 5168 -> 9192 (crosses 8048) -> ...
    let mut signals = Vec::new();
    while let Some(s) = recv(&mut r) {
        signals.push(s);
    }
    assert_eq!(signals.len(), 16);
    assert_eq!(
        signals.iter().filter(|&&s| s).count(),
        1,
        "exactly one signal"
    );
    assert!(signals[1], "the second packet crosses the threshold");
    assert_eq!(r.ring().counters().reader_signals, 1);
    // The next successful write clears pending_send_sz.
    assert!(send(&mut w, 8).unwrap());
    assert_eq!(w.ring().control_word(ControlWord::PendingSendSize), 0);
}

#[test]
fn pending_crossing_in_a_batch_signals_once() {
    let (mut w, mut r) = Ring::create(16).unwrap();
    while send(&mut w, 4000).is_ok() {}
    assert!(!w.wait_for_space(3 * 4024).unwrap());
    let mut buf = vec![0u8; 8192];
    let mut batch = r.batch();
    for _ in 0..5 {
        batch.read(&mut buf).unwrap().unwrap();
    }
    let commit = batch.commit().unwrap();
    assert_eq!(commit.packets, 5);
    assert!(commit.signal_needed);
    assert_eq!(recv(&mut r), Some(false));
}

#[test]
fn reader_signal_ignores_interrupt_mask() {
    // The old Linux bug (spec §5 pain point 2): the mask must not suppress the "space freed"
    // signal.
    let (mut w, mut r) = Ring::create(1).unwrap();
    while send(&mut w, 1000).is_ok() {}
    assert!(!w.wait_for_space(1024).unwrap());
    {
        let mut raw = RawAccess::new(&mut w, &mut r).unwrap();
        raw.set_interrupt_mask(1);
    }
    assert_eq!(recv(&mut r), Some(true));
}

#[test]
fn no_reader_signal_without_pending() {
    let (mut w, mut r) = Ring::create(1).unwrap();
    while send(&mut w, 1000).is_ok() {}
    while let Some(s) = recv(&mut r) {
        assert!(!s);
    }
    assert_eq!(r.ring().counters().reader_signals, 0);
}

#[test]
fn bogus_pending_size_is_masked_and_fires_when_empty() {
    // Some peers write ring_size - 1 (spec §5 pain point 19): masked to size - 8, it is reached
    // exactly when the ring is empty again.
    let (mut w, mut r) = Ring::create(1).unwrap();
    for _ in 0..3 {
        send(&mut w, 500).unwrap();
    }
    {
        let mut raw = RawAccess::new(&mut w, &mut r).unwrap();
        raw.set_pending_send_size(4096 - 1);
    }
    assert_eq!(recv(&mut r), Some(false));
    assert_eq!(recv(&mut r), Some(false));
    assert_eq!(recv(&mut r), Some(true));
}

#[test]
fn wait_for_space_rechecks_and_clears() {
    let (mut w, mut r) = Ring::create(1).unwrap();
    send(&mut w, 2000).unwrap();
    // Room is already there: true, and pending is not left set.
    assert!(w.wait_for_space(1024).unwrap());
    assert_eq!(w.ring().control_word(ControlWord::PendingSendSize), 0);
    // Not enough room: false, pending set (rounded up to 8).
    assert!(!w.wait_for_space(4000).unwrap());
    assert_eq!(w.ring().control_word(ControlWord::PendingSendSize), 4000);
    assert!(!w.wait_for_space(3001).unwrap());
    assert_eq!(w.ring().control_word(ControlWord::PendingSendSize), 3008);
    // Capped at the largest possible free space.
    assert!(!w.wait_for_space(100_000).unwrap());
    assert_eq!(w.ring().control_word(ControlWord::PendingSendSize), 4088);
    w.clear_pending_send_size();
    assert_eq!(w.ring().control_word(ControlWord::PendingSendSize), 0);
    assert_eq!(recv(&mut r), Some(false));
}

#[test]
fn size_limits() {
    let (mut w, mut r) = Ring::create(1).unwrap();
    assert_eq!(w.ring().max_packet_len(), 4080);
    // 4064-byte payload -> 4080-byte packet + trailer = 4088 = all usable space.
    assert!(send(&mut w, 4064).unwrap());
    assert_eq!(w.free_bytes().unwrap(), 0);
    assert_eq!(
        send(&mut w, 0),
        Err(RingError::NotEnoughSpace {
            needed: 24,
            free: 0
        })
    );
    assert_eq!(recv(&mut r), Some(false));
    assert_eq!(
        send(&mut w, 4065),
        Err(RingError::PacketTooLarge {
            len: 4088,
            max: 4080
        })
    );
    // The u16 len8 limit applies on big rings.
    let (w2, _r2) = Ring::create(256).unwrap();
    assert_eq!(w2.ring().max_packet_len(), 0xFFFF * 8);
    assert!(matches!(
        Ring::create(0),
        Err(RingError::InvalidPageCount { pages: 0 })
    ));
    // A header that is not a multiple of 8 is refused.
    let mut w = w;
    let header = [0u8; 4];
    let out = w.write(&OutgoingPacket {
        header: &header,
        ..OutgoingPacket::in_band(1, false, &[])
    });
    assert_eq!(out, Err(RingError::HeaderNotAligned { len: 4 }));
}
