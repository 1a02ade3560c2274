//! End to end over the raw table with `EchoVsp`: open, 1000 pings with completion (bytes
//! checked), unsolicited host packets completed by the driver, a GPADL the host reads and
//! writes, GPA-direct external data, a synchronous request, close; verifier clean. Runs on a V1
//! bus (legacy callbacks) and a V5 bus (Ex callbacks with context).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod kmcl_support;
use kmcl_support::*;

fn e2e(version: InterfaceVersion, ex: bool) {
    let (vsp, control) = EchoVsp::new();
    let fx = Fx::new(version, Box::new(vsp));
    let t = fx.t;
    let ch = fx.open(ex);
    assert_eq!(
        events(ch),
        vec![Ev::Opened, Ev::Started, Ev::PostStarted],
        "state callbacks on enable"
    );
    assert!(fx.offer.is_open());

    // 1000 pings, 8 in flight at a time, each checked byte for byte.
    let pkts: Vec<VMBPACKET> = (0..8).map(|_| fx.packet(ch)).collect();
    let mut expected = std::collections::BTreeMap::new();
    for round in 0..125u64 {
        for (j, p) in pkts.iter().enumerate() {
            let n = round * 8 + j as u64;
            let mut data = n.to_le_bytes().to_vec();
            data.extend_from_slice(b"ping-pong-bytes!");
            expected.insert(*p as usize, data.clone());
            assert_eq!(
                fx.send(*p, &data, VMBUS_CHANNEL_FORMAT_FLAG_WAIT_FOR_COMPLETION),
                STATUS_SUCCESS
            );
        }
        let want = ((round + 1) * 8) as usize;
        assert!(
            wait_for(T, || completions(ch).len() >= want),
            "round {round}: {} completions",
            completions(ch).len()
        );
        for (pkt, status, data) in completions(ch).iter().skip(want - 8) {
            assert_eq!(*status, STATUS_SUCCESS);
            assert_eq!(data, &expected[pkt]);
        }
    }
    assert_eq!(completions(ch).len(), 1000);
    assert_eq!(control.stats().packets, 1000);
    assert_eq!(control.stats().completions_sent, 1000);

    // Unsolicited host packets, completed by the driver (echo mode).
    for i in 0..3u8 {
        control.send_unsolicited(&[i; 16]);
    }
    assert!(wait_for(T, || control.stats().unsolicited_completed == 3));
    assert_eq!(
        control.unsolicited_responses(),
        vec![vec![0u8; 16], vec![1u8; 16], vec![2u8; 16]]
    );
    assert_eq!(
        count(ch, |e| matches!(e, Ev::Packet { flags: 0, .. })),
        3,
        "three in-band deliveries"
    );
    assert!(count(ch, |e| matches!(e, Ev::Batch(_))) >= 1);

    // A GPADL the host reads and writes.
    let buf = PageBuf::new(2);
    buf.fill(|i| (i % 251) as u8);
    let mut gpadl = 0u32;
    // SAFETY: raw-table call; the buffer outlives the GPADL.
    let s = unsafe {
        (t.VmbChannelCreateGpadlFromBuffer.unwrap())(
            ch,
            0,
            buf.ptr().cast(),
            u32::try_from(buf.len()).unwrap(),
            &mut gpadl,
        )
    };
    assert_eq!(s, STATUS_SUCCESS);
    assert_ne!(gpadl, 0);
    let view = fx.offer.gpadl(gpadl).expect("host view");
    assert_eq!(view.len(), 8192);
    let mut got = vec![0u8; 8192];
    view.read(0, &mut got).unwrap();
    assert!(got.iter().enumerate().all(|(i, b)| *b == (i % 251) as u8));
    view.write(4090, b"HOSTDATA").unwrap();
    assert_eq!(buf.get(4090), b'H');
    assert_eq!(buf.get(4097), b'A');
    assert_eq!(view.read(8190, &mut [0u8; 4]), Err(HostError::OutOfRange));
    // SAFETY: raw-table call.
    unsafe { (t.VmbChannelDeleteGpadl.unwrap())(ch, gpadl) };
    assert_eq!(view.read(0, &mut [0u8; 4]), Err(HostError::Revoked));

    // GPA-direct external data through an MDL.
    let mut ext = vec![0x5Au8; 5000];
    let mdl = OwnedMdl::from_slice(&mut ext).unwrap();
    let p = pkts[0];
    let mut inband = *b"external";
    // SAFETY: raw-table call; the MDL and buffer outlive the transaction.
    let s = unsafe {
        (t.VmbPacketSend.unwrap())(
            p,
            inband.as_mut_ptr().cast(),
            8,
            mdl.as_ptr(),
            VMBUS_CHANNEL_FORMAT_FLAG_WAIT_FOR_COMPLETION,
        )
    };
    assert_eq!(s, STATUS_SUCCESS);
    assert!(wait_for(T, || completions(ch).len() == 1001));
    assert_eq!(completions(ch)[1000].2, b"external".to_vec());
    assert_eq!(control.stats().gpa_direct, 1);
    assert_eq!(control.stats().external_bytes, 5000);
    drop(mdl);

    // A synchronous request.
    let mut req = *b"synchronous-request-24b!";
    let mut resp = [0u8; 32];
    let mut resp_len = 32u32;
    let mut timeout: i64 = -50_000_000; // 5 s, relative
    // SAFETY: raw-table call with valid buffers.
    let s = unsafe {
        (t.VmbChannelSendSynchronousRequest.unwrap())(
            ch,
            req.as_mut_ptr().cast(),
            24,
            core::ptr::null_mut(),
            VMBUS_CHANNEL_FORMAT_FLAG_WAIT_FOR_COMPLETION,
            resp.as_mut_ptr().cast(),
            &mut resp_len,
            (&raw mut timeout).cast(),
        )
    };
    assert_eq!(s, STATUS_SUCCESS);
    assert_eq!(resp_len, 24);
    assert_eq!(&resp[..24], &req[..]);

    // Close.
    for p in &pkts {
        fx.free(*p);
    }
    // SAFETY: raw-table calls.
    unsafe { (t.VmbChannelDisable.unwrap())(ch) };
    let ev = events(ch);
    assert_eq!(&ev[ev.len() - 2..], &[Ev::Suspend, Ev::Closed]);
    assert_eq!(with_log(ch, |l| l.ctx_errors), 0);
    assert!(!fx.offer.is_open());
    // SAFETY: raw-table call on a disabled channel.
    unsafe { (t.VmbChannelCleanup.unwrap())(ch) };
    assert_eq!(control.stats().closes, 1);
    let counters = fx.offer.counters();
    assert!(counters.guest_to_host.packets_written >= 1005);
    assert!(counters.host_to_guest.packets_written >= 1004);
    assert!(counters.guest_to_host.writer_signals >= 1);
    let report = fx.finish();
    report.assert_clean();
}

#[test]
fn end_to_end_v1_legacy_callbacks() {
    e2e(InterfaceVersion::V1, false);
}

#[test]
fn end_to_end_v5_ex_callbacks() {
    e2e(InterfaceVersion::V5, true);
}
