//! Hostile host: every malformed or unexpected thing a host can write yields an error or a
//! counted drop — never a panic, a wild access, or a leak. Where the ring stays readable the
//! channel keeps working; after frame-level corruption the guest stops reading that ring but
//! can still send, disable and clean up.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod kmcl_support;
use core::ptr::null_mut;
use kmcl_support::*;

const WAIT: u32 = VMBUS_CHANNEL_FORMAT_FLAG_WAIT_FOR_COMPLETION;

struct H {
    fx: Fx,
    ch: VMBCHANNEL,
    control: EchoControl,
}

fn open() -> H {
    let (vsp, control) = EchoVsp::new();
    let fx = Fx::new(InterfaceVersion::V5, Box::new(vsp));
    let ch = fx.open(true);
    H { fx, ch, control }
}

impl H {
    /// A round trip that needs both rings.
    fn ping(&self) {
        let p = self.fx.packet(self.ch);
        let before = completions(self.ch).len();
        assert_eq!(self.fx.send(p, b"ping....", WAIT), STATUS_SUCCESS);
        assert!(wait_for(T, || completions(self.ch).len() == before + 1));
        assert_eq!(completions(self.ch)[before].1, STATUS_SUCCESS);
        self.fx.free(p);
    }

    /// A send the host must still receive (guest→host ring only).
    fn host_still_receives(&self) {
        let p = self.fx.packet(self.ch);
        let before = self.control.stats().packets;
        assert_eq!(self.fx.send(p, b"oneway..", 0), STATUS_SUCCESS);
        assert!(wait_for(T, || self.control.stats().packets == before + 1));
        assert!(wait_for(T, || self.fx.bus.verifier().live_packets == 1
            && completions(self.ch).iter().any(|c| c.0 == p as usize)));
        self.fx.free(p);
    }

    fn counters(&self) -> HostileCounters {
        self.fx.bus.verifier().counters
    }

    fn wait_counter(&self, f: impl Fn(&HostileCounters) -> u64, n: u64) {
        assert!(
            wait_for(T, || f(&self.counters()) >= n),
            "counter never reached {n}: {:?}",
            self.counters()
        );
    }

    /// Closes and checks: no leak, no violation (counters are expected).
    fn finish(self) -> HostileCounters {
        self.fx.close(self.ch);
        let report = self.fx.finish();
        report.assert_clean();
        report.counters
    }
}

fn corrupt_with(raw: RawPacket) -> HostileCounters {
    let h = open();
    h.ping();
    h.fx.offer.inject_raw_packet(&raw).unwrap();
    h.wait_counter(|c| c.ring_corruptions, 1);
    assert!(packets(h.ch).is_empty(), "nothing delivered");
    h.host_still_receives();
    h.finish()
}

#[test]
fn bad_len8_below_offset8() {
    let mut raw = RawPacket::in_band(7, true, b"12345678");
    raw.len8 = Some(1);
    assert_eq!(corrupt_with(raw).ring_corruptions, 1);
}

#[test]
fn bad_len8_beyond_available() {
    let mut raw = RawPacket::in_band(7, true, b"12345678");
    raw.len8 = Some(200);
    assert_eq!(corrupt_with(raw).ring_corruptions, 1);
}

#[test]
fn bad_offset8() {
    let mut raw = RawPacket::in_band(7, true, b"12345678");
    raw.offset8 = Some(1);
    assert_eq!(corrupt_with(raw).ring_corruptions, 1);
}

#[test]
fn unknown_packet_type() {
    let mut raw = RawPacket::in_band(7, true, b"12345678");
    raw.packet_type = 0x3;
    assert_eq!(corrupt_with(raw).ring_corruptions, 1);
}

#[test]
fn bad_flags() {
    let mut raw = RawPacket::in_band(7, true, b"12345678");
    raw.flags = 0x8001;
    assert_eq!(corrupt_with(raw).ring_corruptions, 1);
}

#[test]
fn gpa_direct_with_malformed_header() {
    // range_count 0.
    let header = [0u8; 8];
    assert_eq!(
        corrupt_with(RawPacket::gpa_direct(9, &header, b"")).ring_corruptions,
        1
    );
}

#[test]
fn wild_indices() {
    for value in [4u32, 0x10_0000, u32::MAX, 4096 * 16 - 8] {
        let h = open();
        h.ping();
        h.fx.offer.corrupt_incoming_write_index(value).unwrap();
        h.wait_counter(|c| c.ring_corruptions, 1);
        h.host_still_receives();
        // The host may no longer write that ring.
        assert_eq!(
            h.fx.offer.host_send(b"x", false),
            Err(HostError::RingCorrupted)
        );
        h.finish();
    }
}

#[test]
fn wild_outgoing_read_index() {
    let h = open();
    h.ping();
    h.fx.offer.corrupt_outgoing_read_index(12).unwrap();
    let p = h.fx.packet(h.ch);
    assert_eq!(h.fx.send(p, b"after...", WAIT), STATUS_DEVICE_REMOVED);
    assert_eq!(h.counters().outgoing_ring_corruptions, 1);
    // The incoming ring still works: host packets are delivered and completed (the
    // completion cannot be written, which is counted, not fatal).
    h.fx.offer.host_send(b"incoming", false).unwrap();
    assert!(wait_for(T, || packets(h.ch).len() == 1));
    h.fx.free(p);
    h.finish();
}

#[test]
fn completion_with_transaction_id_zero() {
    let h = open();
    h.fx.offer.inject_completion(0, b"zero....").unwrap();
    h.wait_counter(|c| c.txid_zero_completions, 1);
    h.ping();
    assert_eq!(h.finish().txid_zero_completions, 1);
}

#[test]
fn forged_and_unsolicited_completions() {
    let h = open();
    h.fx.offer
        .inject_completion(0xdead_beef, b"forged..")
        .unwrap();
    h.wait_counter(|c| c.forged_completions, 1);
    // A completion for an ID issued without WAIT_FOR_COMPLETION is also unknown.
    h.host_still_receives();
    h.ping();
    assert!(completions(h.ch).iter().all(|c| c.1 == STATUS_SUCCESS));
    assert_eq!(h.finish().forged_completions, 1);
}

#[test]
fn duplicate_completion() {
    let (dev, state) = Recorder::new(false);
    let fx = Fx::new(InterfaceVersion::V1, Box::new(dev));
    let ch = fx.open(false);
    let p = fx.packet(ch);
    assert_eq!(fx.send(p, b"once....", WAIT), STATUS_SUCCESS);
    assert!(wait_for(T, || state.lock().unwrap().seen.len() == 1));
    let txid = state.lock().unwrap().seen[0].txid;
    assert_eq!(fx.offer.pending_guest_transactions(), vec![txid]);
    fx.offer.inject_completion(txid, b"first...").unwrap();
    fx.offer.inject_completion(txid, b"second..").unwrap();
    assert!(wait_for(T, || fx
        .bus
        .verifier()
        .counters
        .duplicate_completions
        == 1));
    let c = completions(ch);
    assert_eq!(c.len(), 1, "delivered once");
    assert_eq!(c[0].2, b"first...");
    fx.free(p);
    fx.close(ch);
    let r = fx.finish();
    r.assert_clean();
    assert_eq!(r.counters.duplicate_completions, 1);
}

#[test]
fn gpa_direct_with_ranges_outside_any_host_buffer() {
    let h = open();
    // A well-formed range header pointing at a page the host never offered.
    let mut header = Vec::new();
    header.extend_from_slice(&0u32.to_le_bytes());
    header.extend_from_slice(&1u32.to_le_bytes());
    header.extend_from_slice(&64u32.to_le_bytes());
    header.extend_from_slice(&0u32.to_le_bytes());
    header.extend_from_slice(&0x1234u64.to_le_bytes());
    h.fx.offer
        .inject_raw_packet(&RawPacket::gpa_direct(77, &header, b"evil...."))
        .unwrap();
    h.wait_counter(|c| c.bad_gpa_direct, 1);
    assert!(packets(h.ch).is_empty(), "never delivered");
    h.ping();
    assert_eq!(h.finish().bad_gpa_direct, 1);
}

#[test]
fn transfer_page_packet_is_dropped() {
    let h = open();
    let mut header = Vec::new();
    header.extend_from_slice(&[0xfe, 0xca, 1, 0]);
    header.extend_from_slice(&1u32.to_le_bytes());
    header.extend_from_slice(&16u32.to_le_bytes());
    header.extend_from_slice(&0u32.to_le_bytes());
    let raw = RawPacket {
        packet_type: 7,
        flags: 1,
        transaction_id: 5,
        offset8: None,
        len8: None,
        header,
        payload: b"xferpage".to_vec(),
    };
    h.fx.offer.inject_raw_packet(&raw).unwrap();
    h.wait_counter(|c| c.unsupported_packets, 1);
    h.ping();
    h.finish();
}

#[test]
fn request_with_transaction_id_zero_is_delivered_but_not_answered() {
    let h = open();
    h.fx.offer
        .inject_raw_packet(&RawPacket::in_band(0, true, b"txid0req"))
        .unwrap();
    assert!(wait_for(T, || packets(h.ch).len() == 1));
    h.wait_counter(|c| c.txid_zero_requests, 1);
    h.ping();
    assert_eq!(h.control.stats().unsolicited_completed, 0);
    h.finish();
}

#[test]
fn oversized_and_misaligned_raw_packets_are_refused() {
    let h = open();
    let huge = RawPacket::in_band(1, false, &vec![0u8; 70_000]);
    assert_eq!(
        h.fx.offer.inject_raw_packet(&huge),
        Err(HostError::RingFull)
    );
    assert_eq!(
        h.fx.offer.host_send(&vec![0u8; 70_000], false),
        Err(HostError::TooLarge)
    );
    h.ping();
    h.finish();
}

#[test]
fn rescind_mid_send() {
    let h = open();
    h.fx.offer.stall(true);
    let pkts: Vec<VMBPACKET> = (0..3).map(|_| h.fx.packet(h.ch)).collect();
    for p in &pkts {
        assert_eq!(h.fx.send(*p, b"inflight", WAIT), STATUS_SUCCESS);
    }
    // A synchronous request blocked on the stalled host, from another thread.
    let ch = h.ch as usize;
    let sync = std::thread::spawn(move || {
        let k = K(k());
        let mut req = *b"syncwait";
        let mut resp = [0u8; 8];
        let mut len = 8u32;
        let mut timeout: i64 = -100_000_000;
        k.sync(
            ch as VMBCHANNEL,
            req.as_mut_ptr().cast(),
            8,
            null_mut(),
            WAIT,
            resp.as_mut_ptr().cast(),
            &mut len,
            (&raw mut timeout).cast(),
        )
    });
    assert!(wait_for(T, || h
        .fx
        .offer
        .pending_guest_transactions()
        .len()
        == 4));
    h.fx.offer.rescind();
    assert_eq!(sync.join().unwrap(), STATUS_DEVICE_REMOVED);
    let c = completions(h.ch);
    assert_eq!(c.len(), 3);
    assert!(c.iter().all(|x| x.1 == STATUS_DEVICE_REMOVED));
    // Suspend, then the cancelled completions, then Closed.
    let ev = events(h.ch);
    assert_eq!(
        &ev[..4],
        &[Ev::Opened, Ev::Started, Ev::PostStarted, Ev::Suspend]
    );
    assert!(ev[4..7].iter().all(|e| matches!(e, Ev::Completion { .. })));
    assert_eq!(&ev[7..], &[Ev::Closed]);
    // Later sends fail; the driver disables and cleans up normally.
    assert_eq!(h.fx.send(pkts[0], b"late....", WAIT), STATUS_DEVICE_REMOVED);
    for p in &pkts {
        h.fx.free(*p);
    }
    assert!(!h.fx.offer.is_open());
    h.finish();
}

#[test]
fn stalled_host_fills_the_ring_and_sends_queue_in_order() {
    let (vsp, control) = EchoVsp::new();
    let fx = Fx::new(InterfaceVersion::V1, Box::new(vsp));
    let k = fx.k();
    let ch = fx.channel(false);
    assert_eq!(k.ring_pages(ch, 4, 2), STATUS_SUCCESS);
    assert_eq!(k.max_packet_size(ch, 1024), STATUS_SUCCESS);
    assert_eq!(k.enable(ch), STATUS_SUCCESS);
    fx.offer.stall(true);
    let pkts: Vec<VMBPACKET> = (0..40).map(|_| fx.packet(ch)).collect();
    for (i, p) in pkts.iter().enumerate() {
        let mut data = vec![i as u8; 1000];
        data[0..8].copy_from_slice(&(i as u64).to_le_bytes());
        assert_eq!(
            fx.send(*p, &data, WAIT),
            STATUS_SUCCESS,
            "queued, not failed"
        );
    }
    std::thread::sleep(std::time::Duration::from_millis(30));
    assert_eq!(control.stats().packets, 0);
    // A zero-timeout synchronous request is not queued when the ring is full.
    let mut req = [0u8; 8];
    let mut zero: i64 = 0;
    assert_eq!(
        k.sync(
            ch,
            req.as_mut_ptr().cast(),
            8,
            null_mut(),
            0,
            null_mut(),
            null_mut(),
            (&raw mut zero).cast()
        ),
        STATUS_BUFFER_OVERFLOW
    );
    fx.offer.stall(false);
    assert!(wait_for(T, || completions(ch).len() == 40));
    let order: Vec<usize> = completions(ch).iter().map(|c| c.0).collect();
    assert_eq!(order, pkts.iter().map(|p| *p as usize).collect::<Vec<_>>());
    for (i, c) in completions(ch).iter().enumerate() {
        assert_eq!(c.2[0..8], (i as u64).to_le_bytes());
    }
    let counters = fx.offer.counters();
    assert!(
        counters.guest_to_host.reader_signals >= 1,
        "the host signalled the blocked writer (pending_send_sz): {counters:?}"
    );
    for p in &pkts {
        fx.free(*p);
    }
    fx.close(ch);
    fx.finish().assert_clean();
}

#[test]
fn host_device_panic_is_contained() {
    struct Panicky;
    impl HostDevice for Panicky {
        fn on_packet(&mut self, _ch: &mut HostChannel, _p: &HostPacket) {
            panic!("device bug");
        }
    }
    let fx = Fx::new(InterfaceVersion::V5, Box::new(Panicky));
    let ch = fx.open(true);
    let p = fx.packet(ch);
    assert_eq!(fx.send(p, b"boom....", 0), STATUS_SUCCESS);
    assert!(wait_for(T, || fx
        .bus
        .verifier()
        .counters
        .host_device_panics
        == 1));
    assert!(wait_for(T, || completions(ch).len() == 1));
    fx.free(p);
    fx.close(ch);
    fx.finish().assert_clean();
}

#[test]
fn foreign_handles_are_never_dereferenced() {
    let h = open();
    let k = h.fx.k();
    let mut junk = [0x41u8; 256];
    let junk_ptr = junk.as_mut_ptr();
    k.complete(junk_ptr.cast(), junk_ptr.cast(), 8);
    k.fail(8 as VMBPACKETCOMPLETION);
    k.packet_free(junk_ptr.cast());
    assert_eq!(k.enable(junk_ptr.cast()), STATUS_INVALID_PARAMETER_1);
    assert!(k.packet_allocate(usize::MAX as VMBCHANNEL).is_null());
    let r = h.fx.bus.verifier();
    assert_eq!(
        r.violations_of(ViolationKind::InvalidHandle).count(),
        5,
        "{r}"
    );
    h.ping();
    h.fx.close(h.ch);
    let r = h.fx.finish();
    assert_eq!(r.violations_of(ViolationKind::InvalidHandle).count(), 5);
    assert_eq!(r.violations.len(), 5);
}
