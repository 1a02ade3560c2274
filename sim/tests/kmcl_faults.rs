//! Fault injection: every status-returning slot can be made to fail with a chosen status; the
//! failed call has no side effect (the next identical call succeeds, nothing leaks, nothing
//! reaches the host). Plus n-th-call counting, injected completion statuses, and pended
//! external data.
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
const INJ: NTSTATUS = 0xC0DE_0001_u32 as NTSTATUS;

/// Arms a one-shot fault on `slot`, runs `call` (expects the injected status), then runs `call`
/// again (expects success).
fn fail_once(fx: &Fx, slot: Slot, mut call: impl FnMut() -> NTSTATUS) {
    assert!(fx.bus.faults().fail_nth(slot, 1, INJ));
    assert_eq!(call(), INJ, "{slot} did not fail");
    assert_eq!(call(), STATUS_SUCCESS, "{slot} failed twice");
}

#[test]
fn every_status_slot_can_fail_without_residue() {
    let (fx, st) = rec_fx(InterfaceVersion::V5, true);
    let k = fx.k();
    let dev = fx.offer.device_object();
    let mut tested = Vec::new();
    for slot in Slot::ALL {
        if slot.returns() == SlotReturn::Other {
            assert!(!fx.bus.faults().fail_nth(slot, 1, INJ));
            continue;
        }
        tested.push(slot);
        match slot {
            Slot::VmbChannelAllocate => {
                let mut ch = 0x55 as VMBCHANNEL;
                assert!(fx.bus.faults().fail_nth(slot, 1, INJ));
                assert_eq!(k.allocate(dev, 0, &mut ch), INJ);
                assert_eq!(ch as usize, 0x55, "out-pointer untouched");
                assert_eq!(fx.bus.verifier().live_channels, 0);
                assert_eq!(k.allocate(dev, 0, &mut ch), STATUS_SUCCESS);
                k.cleanup(ch);
            }
            Slot::VmbChannelInitialize => {
                let size = k.sizeof_channel();
                let mut storage = vec![0xABu64; size as usize / 8];
                let ch: VMBCHANNEL = storage.as_mut_ptr().cast();
                assert!(fx.bus.faults().fail_nth(slot, 1, INJ));
                assert_eq!(k.initialize(dev, 0, ch, size), INJ);
                assert_eq!(storage[0], 0xAB, "storage untouched");
                assert_eq!(fx.bus.verifier().live_channels, 0);
                assert_eq!(k.initialize(dev, 0, ch, size), STATUS_SUCCESS);
                k.cleanup(ch);
            }
            Slot::VmbChannelEnable => {
                let ch = fx.channel(true);
                let opens = st.lock().unwrap().opens;
                assert!(fx.bus.faults().fail_nth(slot, 1, INJ));
                assert_eq!(k.enable(ch), INJ);
                assert!(!fx.offer.is_open());
                assert!(events(ch).is_empty(), "no callback ran");
                assert_eq!(st.lock().unwrap().opens, opens, "the host never saw it");
                assert_eq!(k.enable(ch), STATUS_SUCCESS);
                fx.close(ch);
            }
            Slot::VmbChannelCreateGpadlFromBuffer
            | Slot::VmbChannelCreateGpadlFromMdl
            | Slot::VmbChannelCreateGpadlFromPfnList => {
                let ch = fx.open(true);
                let buf = PageBuf::new(1);
                // SAFETY: the page buffer outlives the MDL.
                let mdl = unsafe { OwnedMdl::new(buf.ptr(), buf.len()) }.unwrap();
                let mut pfns = buf.pfns();
                let mut h = 0x77u32;
                let mut create = |h: &mut u32| match slot {
                    Slot::VmbChannelCreateGpadlFromBuffer => {
                        k.gpadl_from_buffer(ch, 0, buf.ptr().cast(), 4096, h)
                    }
                    Slot::VmbChannelCreateGpadlFromMdl => {
                        k.gpadl_from_mdl(ch, 0, mdl.as_ptr(), 0, 4096, h)
                    }
                    _ => k.gpadl_from_pfns(ch, 0, pfns.as_mut_ptr(), 1, h),
                };
                assert!(fx.bus.faults().fail_nth(slot, 1, INJ));
                assert_eq!(create(&mut h), INJ);
                assert_eq!(h, 0x77);
                assert_eq!(fx.bus.verifier().live_gpadls, 0);
                assert_eq!(create(&mut h), STATUS_SUCCESS);
                k.delete_gpadl(ch, h);
                fx.close(ch);
                drop(mdl);
            }
            Slot::VmbPacketAllocate => {
                let ch = fx.channel(true);
                assert!(fx.bus.faults().fail_nth(slot, 1, INJ));
                assert!(k.packet_allocate(ch).is_null());
                assert_eq!(fx.bus.verifier().live_packets, 0);
                let p = k.packet_allocate(ch);
                assert!(!p.is_null());
                k.packet_free(p);
                k.cleanup(ch);
            }
            Slot::VmbPacketInitialize => {
                let ch = fx.channel(true);
                let size = k.sizeof_packet(ch);
                let mut storage = vec![0xCDu64; size as usize / 8];
                let p: VMBPACKET = storage.as_mut_ptr().cast();
                assert!(fx.bus.faults().fail_nth(slot, 1, INJ));
                assert_eq!(k.packet_initialize(ch, p, size), INJ);
                assert_eq!(storage[0], 0xCD, "untouched");
                assert_eq!(k.packet_initialize(ch, p, size), STATUS_SUCCESS);
                k.packet_free(p);
                k.cleanup(ch);
            }
            Slot::VmbPacketSend
            | Slot::VmbPacketSendWithExternalMdl
            | Slot::VmbPacketSendWithExternalPfns => {
                let ch = fx.open(true);
                let p = fx.packet(ch);
                let buf = PageBuf::new(1);
                // SAFETY: the page buffer outlives the MDL.
                let mdl = unsafe { OwnedMdl::new(buf.ptr(), buf.len()) }.unwrap();
                let mut pfns = buf.pfns();
                let mut data = *b"faulted!";
                let seen_before = st.lock().unwrap().seen.len();
                let mut send = || match slot {
                    Slot::VmbPacketSend => k.send(p, data.as_mut_ptr().cast(), 8, null_mut(), WAIT),
                    Slot::VmbPacketSendWithExternalMdl => {
                        k.send_mdl(p, data.as_mut_ptr().cast(), 8, mdl.as_ptr(), 0, 100, WAIT)
                    }
                    _ => k.send_pfns(p, data.as_mut_ptr().cast(), 8, pfns.as_mut_ptr(), 1, WAIT),
                };
                assert!(fx.bus.faults().fail_nth(slot, 1, INJ));
                assert_eq!(send(), INJ);
                std::thread::sleep(std::time::Duration::from_millis(20));
                assert_eq!(
                    st.lock().unwrap().seen.len(),
                    seen_before,
                    "nothing on the wire"
                );
                assert_eq!(send(), STATUS_SUCCESS);
                assert!(wait_for(T, || completions(ch).len() == 1));
                assert_eq!(st.lock().unwrap().seen.len(), seen_before + 1);
                fx.free(p);
                fx.close(ch);
                drop(mdl);
            }
            Slot::VmbChannelSendSynchronousRequest => {
                let ch = fx.open(true);
                let seen_before = st.lock().unwrap().seen.len();
                let mut req = *b"syncfail";
                let mut resp = [0u8; 8];
                fail_once(&fx, slot, || {
                    let mut len = 8u32;
                    k.sync(
                        ch,
                        req.as_mut_ptr().cast(),
                        8,
                        null_mut(),
                        WAIT,
                        resp.as_mut_ptr().cast(),
                        &mut len,
                        null_mut(),
                    )
                });
                assert_eq!(st.lock().unwrap().seen.len(), seen_before + 1);
                fx.close(ch);
            }
            Slot::VmbChannelPacketGetExternalData => {
                let ch = fx.channel(true);
                with_log(ch, |l| l.mode = Mode::Keep);
                assert_eq!(k.enable(ch), STATUS_SUCCESS);
                fx.offer
                    .host_send_external(b"ext.....", &[1u8; 64], true)
                    .unwrap();
                assert!(wait_for(T, || with_log(ch, |l| l.kept.len()) == 1));
                let pc = with_log(ch, |l| l.kept[0]) as VMBPACKETCOMPLETION;
                let mut mdl = 0x99 as PMDL;
                assert!(fx.bus.faults().fail_nth(slot, 1, INJ));
                assert_eq!(k.external_data(pc, 0, &mut mdl), INJ);
                assert_eq!(mdl as usize, 0x99);
                assert_eq!(k.external_data(pc, 0, &mut mdl), STATUS_SUCCESS);
                assert!(!mdl.is_null());
                k.complete(pc, null_mut(), 0);
                fx.close(ch);
            }
            Slot::VmbChannelSetInterruptLatency => {
                let ch = fx.channel(true);
                let mut old = 0xEEEEu16;
                assert!(fx.bus.faults().fail_nth(slot, 1, INJ));
                assert_eq!(k.latency(ch, 10, &mut old), INJ);
                assert_eq!(old, 0xEEEE);
                assert_eq!(k.latency(ch, 20, &mut old), STATUS_SUCCESS);
                assert_eq!(old, 0, "the failed call did not apply");
                k.cleanup(ch);
            }
            Slot::VmbChannelAllocateBounceBuffer => {
                let ch = fx.open(true);
                fail_once(&fx, slot, || k.allocate_bounce(ch, 4096));
                fx.close(ch);
            }
            Slot::VmbChannelInitSetMaximumPacketSize => {
                let ch = fx.channel(true);
                let before = k.sizeof_packet(ch);
                assert!(fx.bus.faults().fail_nth(slot, 1, INJ));
                assert_eq!(k.max_packet_size(ch, 64), INJ);
                assert_eq!(k.sizeof_packet(ch), before, "not applied");
                assert_eq!(k.max_packet_size(ch, 64), STATUS_SUCCESS);
                assert!(k.sizeof_packet(ch) < before);
                k.cleanup(ch);
            }
            Slot::VmbChannelInitSetInlinePacketContextSize => {
                let ch = fx.channel(true);
                let before = k.sizeof_packet(ch);
                fail_once(&fx, slot, || {
                    let s = k.inline_context_size(ch, 32);
                    if s == INJ {
                        assert_eq!(k.sizeof_packet(ch), before);
                    }
                    s
                });
                assert_eq!(k.sizeof_packet(ch), before + 32);
                k.cleanup(ch);
            }
            Slot::VmbChannelInitSetMaximumPacketCount => {
                let ch = fx.channel(true);
                assert!(fx.bus.faults().fail_nth(slot, 1, INJ));
                assert_eq!(k.max_packet_count(ch, 1), INJ);
                let a = k.packet_allocate(ch);
                let b = k.packet_allocate(ch);
                assert!(!b.is_null(), "limit not applied");
                k.packet_free(a);
                k.packet_free(b);
                assert_eq!(k.max_packet_count(ch, 1), STATUS_SUCCESS);
                k.cleanup(ch);
            }
            Slot::VmbClientChannelInitSetTargetPnp => {
                let (other, other_state) = Recorder::new(true);
                let _o = fx.bus.offer(guid(40), guid(41), Box::new(other));
                let ch = fx.channel(true);
                let ty = guid(40);
                assert!(fx.bus.faults().fail_nth(slot, 1, INJ));
                assert_eq!(k.target_pnp(ch, &ty, core::ptr::null(), None), INJ);
                assert_eq!(k.enable(ch), STATUS_SUCCESS);
                assert!(fx.offer.is_open(), "still targets the parent offer");
                fx.close(ch);
                let ch = fx.channel(true);
                assert_eq!(
                    k.target_pnp(ch, &ty, core::ptr::null(), None),
                    STATUS_SUCCESS
                );
                assert_eq!(k.enable(ch), STATUS_SUCCESS);
                assert_eq!(other_state.lock().unwrap().opens, 1);
                fx.close(ch);
            }
            Slot::VmbChannelInitSetPrimaryChannel => {
                let primary = fx.open(true);
                let ch = fx.channel(true);
                assert!(fx.bus.faults().fail_nth(slot, 1, INJ));
                assert_eq!(k.primary(ch, primary, 1), INJ);
                assert_eq!(
                    k.enable(ch),
                    STATUS_DEVICE_BUSY,
                    "still targets the primary offer"
                );
                assert_eq!(k.primary(ch, primary, 1), STATUS_SUCCESS);
                k.cleanup(ch);
                fx.close(primary);
            }
            Slot::VmbChannelInitSetStateChangeCallbacks => {
                let mut ch: VMBCHANNEL = null_mut();
                assert_eq!(k.allocate(dev, 0, &mut ch), STATUS_SUCCESS);
                with_log(ch, |l| *l = Log::default());
                assert_eq!(
                    k.process_callbacks(ch, Some(ev_packet), None),
                    STATUS_SUCCESS
                );
                let mut cbs = v1_callbacks();
                assert!(fx.bus.faults().fail_nth(slot, 1, INJ));
                assert_eq!(k.state_callbacks(ch, &mut cbs), INJ);
                assert_eq!(k.enable(ch), STATUS_SUCCESS);
                assert!(events(ch).is_empty(), "callbacks not registered");
                k.disable(ch);
                assert_eq!(k.state_callbacks(ch, &mut cbs), STATUS_SUCCESS);
                assert_eq!(k.enable(ch), STATUS_SUCCESS);
                assert_eq!(events(ch).first(), Some(&Ev::Opened));
                fx.close(ch);
            }
            Slot::VmbChannelInitSetProcessPacketCallbacks
            | Slot::VmbChannelInitSetProcessPacketCallbacksEx
            | Slot::VmbChannelInitSetClientContextSize
            | Slot::VmbChannelInitSetFlags
            | Slot::VmbChannelInitSetFriendlyName
            | Slot::VmbChannelInitSetMaximumExternalData
            | Slot::VmbClientChannelInitSetRingBufferPageCount
            | Slot::VmbChannelInitSetBounceBufferSizes
            | Slot::VmbClientChannelInitSetTargetProcessorIndex => {
                let ch = fx.channel(true);
                let mut name: Vec<u16> = "n".encode_utf16().collect();
                let us = UNICODE_STRING {
                    Length: 2,
                    MaximumLength: 2,
                    Buffer: name.as_mut_ptr(),
                };
                fail_once(&fx, slot, || match slot {
                    Slot::VmbChannelInitSetProcessPacketCallbacks => {
                        k.process_callbacks(ch, Some(ev_packet), None)
                    }
                    Slot::VmbChannelInitSetProcessPacketCallbacksEx => {
                        k.process_callbacks_ex(ch, ch.cast(), Some(ev_packet_ex), None)
                    }
                    Slot::VmbChannelInitSetClientContextSize => k.client_context_size(ch, 8),
                    Slot::VmbChannelInitSetFlags => k.init_flags(ch, 1),
                    Slot::VmbChannelInitSetFriendlyName => k.friendly_name(ch, &us),
                    Slot::VmbChannelInitSetMaximumExternalData => k.max_external(ch, 4096, 2),
                    Slot::VmbClientChannelInitSetRingBufferPageCount => k.ring_pages(ch, 4, 4),
                    Slot::VmbChannelInitSetBounceBufferSizes => {
                        k.bounce_sizes(ch, 4096, 4096, 8192)
                    }
                    _ => k.target_processor(ch, 1),
                });
                assert_eq!(k.enable(ch), STATUS_SUCCESS);
                fx.close(ch);
            }
            other => panic!("no fault test for {other}"),
        }
    }
    assert_eq!(tested.len(), 30, "status-returning slots");
    let r = fx.finish();
    r.assert_clean();
}

#[test]
fn nth_call_is_counted_from_arming() {
    let (fx, st) = rec_fx(InterfaceVersion::V1, true);
    let ch = fx.open(false);
    let p = fx.packet(ch);
    assert!(
        fx.bus
            .faults()
            .fail_nth(Slot::VmbPacketSend, 3, STATUS_INSUFFICIENT_RESOURCES)
    );
    let mut results = Vec::new();
    let mut done = 0;
    for _ in 0..4 {
        let r = fx.send(p, b"counted.", WAIT);
        results.push(r);
        if r == STATUS_SUCCESS {
            done += 1;
            assert!(wait_for(T, || completions(ch).len() == done));
        }
    }
    assert_eq!(
        results,
        vec![
            STATUS_SUCCESS,
            STATUS_SUCCESS,
            STATUS_INSUFFICIENT_RESOURCES,
            STATUS_SUCCESS
        ]
    );
    assert!(wait_for(T, || st.lock().unwrap().seen.len() == 3));
    fx.free(p);
    fx.close(ch);
    fx.finish().assert_clean();
}

#[test]
fn completions_can_arrive_with_an_error_status() {
    let (fx, _) = rec_fx(InterfaceVersion::V5, true);
    let k = fx.k();
    let ch = fx.open(true);
    fx.bus.faults().completion_status(Some(STATUS_CANCELLED));
    let p = fx.packet(ch);
    assert_eq!(fx.send(p, b"errored.", WAIT), STATUS_SUCCESS);
    assert!(wait_for(T, || completions(ch).len() == 1));
    assert_eq!(completions(ch)[0].1, STATUS_CANCELLED);
    let mut req = [0u8; 8];
    let mut resp = [0u8; 8];
    let mut len = 8u32;
    assert_eq!(
        k.sync(
            ch,
            req.as_mut_ptr().cast(),
            8,
            null_mut(),
            WAIT,
            resp.as_mut_ptr().cast(),
            &mut len,
            null_mut()
        ),
        STATUS_CANCELLED
    );
    fx.bus.faults().completion_status(None);
    assert_eq!(fx.send(p, b"ok-again", WAIT), STATUS_SUCCESS);
    assert!(wait_for(T, || completions(ch).len() == 2));
    assert_eq!(completions(ch)[1].1, STATUS_SUCCESS);
    fx.free(p);
    fx.close(ch);
    fx.finish().assert_clean();
}

#[test]
fn clear_disarms_every_fault() {
    let (fx, _) = rec_fx(InterfaceVersion::V5, true);
    let k = fx.k();
    for s in [
        Slot::VmbChannelEnable,
        Slot::VmbPacketSend,
        Slot::VmbChannelAllocate,
    ] {
        assert!(fx.bus.faults().fail_nth(s, 1, INJ));
    }
    fx.bus.faults().clear();
    let ch = fx.open(true);
    let p = fx.packet(ch);
    assert_eq!(fx.send(p, b"cleared.", WAIT), STATUS_SUCCESS);
    assert!(wait_for(T, || completions(ch).len() == 1));
    fx.free(p);
    fx.close(ch);
    let _ = k;
    fx.finish().assert_clean();
}
