//! One test per client slot (57), through the raw table, on a V1 bus and on a V5 bus where the
//! slot exists: success and at least one documented error each; the ring contents (as the host
//! parses them) where a slot writes to a ring.
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

fn no_leaks(r: &VerifierReport) {
    assert_eq!(
        (
            r.live_channels,
            r.live_packets,
            r.live_gpadls,
            r.uncompleted_incoming,
            r.interface_references
        ),
        (0, 0, 0, 0, 0),
        "{r}"
    );
}

fn ex(v: InterfaceVersion) -> bool {
    v == InterfaceVersion::V5
}

// ------------------------------------------------------------------ V1 slots

#[test]
fn vmb_channel_allocate() {
    on_versions(Slot::VmbChannelAllocate, |v| {
        let (fx, _) = rec_fx(v, true);
        let k = fx.k();
        let mut ch: VMBCHANNEL = null_mut();
        assert_eq!(
            k.allocate(fx.offer.device_object(), 0, &mut ch),
            STATUS_SUCCESS
        );
        assert!(!ch.is_null());
        k.cleanup(ch);
        assert_eq!(
            k.allocate(null_mut(), 0, &mut ch),
            STATUS_INVALID_PARAMETER_1
        );
        let mut fake = [0u64; 64];
        assert_eq!(
            k.allocate(fake.as_mut_ptr().cast(), 0, &mut ch),
            STATUS_INVALID_PARAMETER_1
        );
        assert_eq!(
            k.allocate(fx.offer.device_object(), 1, &mut ch),
            STATUS_NOT_SUPPORTED
        );
        assert_eq!(
            k.allocate(fx.offer.device_object(), 0, null_mut()),
            STATUS_INVALID_PARAMETER_3
        );
        assert!(fx.has("VmbChannelAllocate", ViolationKind::InvalidHandle));
        no_leaks(&fx.finish());
    });
}

#[test]
fn vmb_channel_cleanup() {
    on_versions(Slot::VmbChannelCleanup, |v| {
        let (fx, _) = rec_fx(v, true);
        let k = fx.k();
        let ch = fx.channel(ex(v));
        k.cleanup(ch);
        assert!(fx.bus.verifier().violations.is_empty());
        // Use after cleanup and double cleanup are reported, never dereferenced.
        k.set_pointer(ch, 8 as PVOID);
        k.cleanup(ch);
        let r = fx.bus.verifier();
        assert_eq!(r.violations_of(ViolationKind::UseAfterFree).count(), 2);
        // Cleanup of an enabled channel: violation, and the emulator disables it first.
        let ch = fx.open(ex(v));
        k.cleanup(ch);
        assert!(fx.has("VmbChannelCleanup", ViolationKind::WrongState));
        assert!(events(ch).contains(&Ev::Closed));
        no_leaks(&fx.finish());
    });
}

#[test]
fn vmb_channel_create_gpadl_from_buffer() {
    on_versions(Slot::VmbChannelCreateGpadlFromBuffer, |v| {
        let (fx, _) = rec_fx(v, true);
        let k = fx.k();
        let ch = fx.channel(ex(v));
        let buf = PageBuf::new(1);
        let mut h = 0u32;
        // Not enabled yet.
        assert_eq!(
            k.gpadl_from_buffer(ch, 0, buf.ptr().cast(), 4096, &mut h),
            STATUS_INVALID_DEVICE_STATE
        );
        assert_eq!(k.enable(ch), STATUS_SUCCESS);
        assert_eq!(
            k.gpadl_from_buffer(ch, 2, buf.ptr().cast(), 4096, &mut h),
            STATUS_INVALID_PARAMETER_2
        );
        assert_eq!(
            k.gpadl_from_buffer(ch, 0, null_mut(), 4096, &mut h),
            STATUS_INVALID_PARAMETER_3
        );
        assert_eq!(
            k.gpadl_from_buffer(ch, 0, buf.ptr().cast(), 0, &mut h),
            STATUS_INVALID_PARAMETER_4
        );
        assert_eq!(
            k.gpadl_from_buffer(ch, 0, buf.ptr().cast(), 4096, null_mut()),
            STATUS_INVALID_PARAMETER_5
        );
        assert_eq!(
            k.gpadl_from_buffer(
                ch,
                VMBUS_CHANNEL_GPADL_FLAG_READ_ONLY,
                buf.ptr().cast(),
                100,
                &mut h
            ),
            STATUS_SUCCESS
        );
        let view = fx.offer.gpadl(h).unwrap();
        assert!(view.is_read_only());
        assert_eq!(view.len(), 100);
        assert_eq!(view.write(0, b"x"), Err(HostError::ReadOnly));
        k.delete_gpadl(ch, h);
        fx.close(ch);
        assert!(fx.has(
            "VmbChannelCreateGpadlFromBuffer",
            ViolationKind::InvalidParameter
        ));
        no_leaks(&fx.finish());
    });
}

#[test]
fn vmb_channel_create_gpadl_from_mdl() {
    on_versions(Slot::VmbChannelCreateGpadlFromMdl, |v| {
        let (fx, _) = rec_fx(v, true);
        let k = fx.k();
        let ch = fx.open(ex(v));
        let buf = PageBuf::new(3);
        buf.fill(|i| (i % 199) as u8);
        // SAFETY: the page buffer outlives the MDL.
        let mdl = unsafe { OwnedMdl::new(buf.ptr(), buf.len()) }.unwrap();
        let mut h = 0u32;
        assert_eq!(
            k.gpadl_from_mdl(ch, 0, mdl.as_ptr(), 100, 5000, &mut h),
            STATUS_SUCCESS
        );
        let view = fx.offer.gpadl(h).unwrap();
        assert_eq!(view.len(), 5000);
        let mut got = vec![0u8; 5000];
        view.read(0, &mut got).unwrap();
        assert!(
            got.iter()
                .enumerate()
                .all(|(i, b)| *b == ((i + 100) % 199) as u8)
        );
        k.delete_gpadl(ch, h);
        assert_eq!(
            k.gpadl_from_mdl(ch, 0, null_mut(), 0, 1, &mut h),
            STATUS_INVALID_PARAMETER_3
        );
        let mut fake = [0u64; 16];
        assert_eq!(
            k.gpadl_from_mdl(ch, 0, fake.as_mut_ptr().cast(), 0, 1, &mut h),
            STATUS_INVALID_PARAMETER_3
        );
        assert!(fx.has("VmbChannelCreateGpadlFromMdl", ViolationKind::InvalidHandle));
        assert_eq!(
            k.gpadl_from_mdl(ch, 0, mdl.as_ptr(), 20_000, 1, &mut h),
            STATUS_INVALID_PARAMETER_4
        );
        assert_eq!(
            k.gpadl_from_mdl(ch, 0, mdl.as_ptr(), 0, 0, &mut h),
            STATUS_INVALID_PARAMETER_5
        );
        assert_eq!(
            k.gpadl_from_mdl(ch, 0, mdl.as_ptr(), 0, 1, null_mut()),
            STATUS_INVALID_PARAMETER_6
        );
        fx.close(ch);
        drop(mdl);
        no_leaks(&fx.finish());
    });
}

#[test]
fn vmb_channel_delete_gpadl() {
    on_versions(Slot::VmbChannelDeleteGpadl, |v| {
        let (fx, _) = rec_fx(v, true);
        let k = fx.k();
        let ch = fx.open(ex(v));
        let buf = PageBuf::new(1);
        let mut h = 0u32;
        assert_eq!(
            k.gpadl_from_buffer(ch, 0, buf.ptr().cast(), 4096, &mut h),
            STATUS_SUCCESS
        );
        let view = fx.offer.gpadl(h).unwrap();
        k.delete_gpadl(ch, h);
        assert!(view.is_revoked());
        assert!(fx.offer.gpadl(h).is_none());
        assert!(fx.bus.verifier().violations.is_empty());
        k.delete_gpadl(ch, h);
        assert!(fx.has("VmbChannelDeleteGpadl", ViolationKind::GpadlDeletedTwice));
        k.delete_gpadl(ch, 0xdead);
        assert!(fx.has("VmbChannelDeleteGpadl", ViolationKind::InvalidParameter));
        // A GPADL left at cleanup is a leak.
        assert_eq!(
            k.gpadl_from_buffer(ch, 0, buf.ptr().cast(), 4096, &mut h),
            STATUS_SUCCESS
        );
        assert_eq!(fx.bus.verifier().live_gpadls, 1);
        fx.close(ch);
        assert!(fx.has("VmbChannelCleanup", ViolationKind::Leak));
        no_leaks(&fx.finish());
    });
}

#[test]
fn vmb_channel_disable() {
    on_versions(Slot::VmbChannelDisable, |v| {
        let (fx, st) = rec_fx(v, true);
        let k = fx.k();
        let ch = fx.open(ex(v));
        assert!(fx.offer.is_open());
        k.disable(ch);
        assert_eq!(
            events(ch),
            vec![
                Ev::Opened,
                Ev::Started,
                Ev::PostStarted,
                Ev::Suspend,
                Ev::Closed
            ]
        );
        assert!(!fx.offer.is_open());
        assert_eq!(st.lock().unwrap().closes, 1);
        assert!(fx.bus.verifier().violations.is_empty());
        k.disable(ch);
        assert!(fx.has("VmbChannelDisable", ViolationKind::WrongState));
        // Re-enable after disable works.
        assert_eq!(k.enable(ch), STATUS_SUCCESS);
        assert_eq!(st.lock().unwrap().opens, 2);
        fx.close(ch);
        no_leaks(&fx.finish());
    });
}

#[test]
fn vmb_channel_enable() {
    on_versions(Slot::VmbChannelEnable, |v| {
        let (fx, st) = rec_fx(v, true);
        let k = fx.k();
        let ch = fx.channel(ex(v));
        // The driver's Opened callback fails the open.
        with_log(ch, |l| l.open_status = STATUS_INSUFFICIENT_RESOURCES);
        assert_eq!(k.enable(ch), STATUS_INSUFFICIENT_RESOURCES);
        assert!(!fx.offer.is_open());
        with_log(ch, |l| l.open_status = STATUS_SUCCESS);
        // The host fails the open.
        st.lock().unwrap().fail_open = Some(STATUS_DEVICE_REMOVED);
        assert_eq!(k.enable(ch), STATUS_DEVICE_REMOVED);
        st.lock().unwrap().fail_open = None;
        assert_eq!(k.enable(ch), STATUS_SUCCESS);
        assert_eq!(k.enable(ch), STATUS_INVALID_DEVICE_STATE);
        assert!(fx.has("VmbChannelEnable", ViolationKind::WrongState));
        // A second channel on the same offer: busy.
        let ch2 = fx.channel(ex(v));
        assert_eq!(k.enable(ch2), STATUS_DEVICE_BUSY);
        fx.close(ch);
        fx.close(ch2);
        assert_eq!(k.enable(null_mut()), STATUS_INVALID_PARAMETER_1);
        // A rescinded offer cannot be opened.
        fx.offer.rescind();
        let ch3 = fx.channel(ex(v));
        assert_eq!(k.enable(ch3), STATUS_DEVICE_REMOVED);
        k.cleanup(ch3);
        no_leaks(&fx.finish());
    });
}

#[test]
fn vmb_channel_get_interface_instance() {
    on_versions(Slot::VmbChannelGetInterfaceInstance, |v| {
        let (fx, _) = rec_fx(v, true);
        let k = fx.k();
        let ch = fx.channel(ex(v));
        let mut g = GUID::default();
        k.interface_instance(ch, &mut g);
        assert_eq!(Guid(g), Guid(guid(2)));
        k.interface_instance(ch, null_mut());
        assert!(fx.has(
            "VmbChannelGetInterfaceInstance",
            ViolationKind::InvalidParameter
        ));
        k.cleanup(ch);
        no_leaks(&fx.finish());
    });
}

#[test]
fn vmb_channel_get_mmio_space() {
    on_versions(Slot::VmbChannelGetMmioSpace, |v| {
        let (fx, _) = rec_fx(v, true);
        let k = fx.k();
        let ch = fx.open(ex(v));
        let (mut a, mut s) = (7u64, 7u64);
        k.mmio(ch, &mut a, &mut s);
        assert_eq!((a, s), (0, 0));
        k.mmio(ch, null_mut(), &mut s);
        assert!(fx.has("VmbChannelGetMmioSpace", ViolationKind::InvalidParameter));
        fx.close(ch);
        no_leaks(&fx.finish());
    });
}

#[test]
fn vmb_channel_get_pointer() {
    on_versions(Slot::VmbChannelGetPointer, |v| {
        let (fx, _) = rec_fx(v, true);
        let k = fx.k();
        let ch = fx.channel(ex(v));
        assert!(k.get_pointer(ch).is_null());
        k.set_pointer(ch, 0x1234 as PVOID);
        assert_eq!(k.get_pointer(ch) as usize, 0x1234);
        k.cleanup(ch);
        assert!(k.get_pointer(ch).is_null());
        assert!(fx.has("VmbChannelGetPointer", ViolationKind::UseAfterFree));
        no_leaks(&fx.finish());
    });
}

/// Shared check: an `Init*` setter after enable fails with `STATUS_INVALID_DEVICE_STATE`.
fn after_enable(fx: &Fx, v: InterfaceVersion, slot: &str, f: impl Fn(VMBCHANNEL) -> NTSTATUS) {
    let ch = fx.open(ex(v));
    assert_eq!(f(ch), STATUS_INVALID_DEVICE_STATE, "{slot} after enable");
    assert!(fx.has(slot, ViolationKind::WrongState));
    fx.close(ch);
}

#[test]
fn vmb_channel_init_set_client_context_size() {
    on_versions(Slot::VmbChannelInitSetClientContextSize, |v| {
        let (fx, _) = rec_fx(v, true);
        let k = fx.k();
        let ch = fx.channel(ex(v));
        assert_eq!(k.client_context_size(ch, 32), STATUS_SUCCESS);
        assert_eq!(
            k.client_context_size(ch, MAX_CONTEXT_SIZE + 1),
            STATUS_INVALID_PARAMETER_2
        );
        k.cleanup(ch);
        after_enable(&fx, v, "VmbChannelInitSetClientContextSize", |c| {
            k.client_context_size(c, 8)
        });
        no_leaks(&fx.finish());
    });
}

#[test]
fn vmb_channel_init_set_flags() {
    on_versions(Slot::VmbChannelInitSetFlags, |v| {
        let (fx, _) = rec_fx(v, true);
        let k = fx.k();
        let ch = fx.channel(ex(v));
        assert_eq!(
            k.init_flags(ch, VMBUS_CHANNEL_INIT_FLAG_IS_PIPE),
            STATUS_SUCCESS
        );
        assert_eq!(k.init_flags(ch, 0x2), STATUS_INVALID_PARAMETER_2);
        k.cleanup(ch);
        after_enable(&fx, v, "VmbChannelInitSetFlags", |c| k.init_flags(c, 0));
        no_leaks(&fx.finish());
    });
}

#[test]
fn vmb_channel_init_set_friendly_name() {
    on_versions(Slot::VmbChannelInitSetFriendlyName, |v| {
        let (fx, _) = rec_fx(v, true);
        let k = fx.k();
        let ch = fx.channel(ex(v));
        let mut text: Vec<u16> = "echo channel".encode_utf16().collect();
        let good = UNICODE_STRING {
            Length: 24,
            MaximumLength: 24,
            Buffer: text.as_mut_ptr(),
        };
        assert_eq!(k.friendly_name(ch, &good), STATUS_SUCCESS);
        let odd = UNICODE_STRING { Length: 3, ..good };
        assert_eq!(k.friendly_name(ch, &odd), STATUS_INVALID_PARAMETER_2);
        assert_eq!(
            k.friendly_name(ch, core::ptr::null()),
            STATUS_INVALID_PARAMETER_2
        );
        k.cleanup(ch);
        after_enable(&fx, v, "VmbChannelInitSetFriendlyName", |c| {
            k.friendly_name(c, &good)
        });
        no_leaks(&fx.finish());
    });
}

#[test]
fn vmb_channel_init_set_maximum_external_data() {
    on_versions(Slot::VmbChannelInitSetMaximumExternalData, |v| {
        let (fx, st) = rec_fx(v, true);
        let k = fx.k();
        let ch = fx.channel(ex(v));
        assert_eq!(k.max_external(ch, 0, 1), STATUS_INVALID_PARAMETER_2);
        assert_eq!(k.max_external(ch, 4096, 0), STATUS_INVALID_PARAMETER_3);
        assert_eq!(k.max_external(ch, 4096, 1), STATUS_SUCCESS);
        assert_eq!(k.enable(ch), STATUS_SUCCESS);
        let p = fx.packet(ch);
        let mut big = vec![1u8; 5000];
        let mdl = OwnedMdl::from_slice(&mut big).unwrap();
        assert_eq!(
            k.send(p, null_mut(), 0, mdl.as_ptr(), WAIT),
            STATUS_INVALID_PARAMETER_4,
            "external data over the maximum"
        );
        let mut a = vec![2u8; 100];
        let mut b = vec![3u8; 100];
        let mut m1 = OwnedMdl::from_slice(&mut a).unwrap();
        let m2 = OwnedMdl::from_slice(&mut b).unwrap();
        m1.set_next(Some(&m2));
        assert_eq!(
            k.send(p, null_mut(), 0, m1.as_ptr(), WAIT),
            STATUS_INVALID_PARAMETER_4,
            "chain longer than the maximum"
        );
        assert!(st.lock().unwrap().seen.is_empty());
        fx.free(p);
        fx.close(ch);
        after_enable(&fx, v, "VmbChannelInitSetMaximumExternalData", |c| {
            k.max_external(c, 4096, 1)
        });
        no_leaks(&fx.finish());
    });
}

#[test]
fn vmb_channel_init_set_maximum_packet_size() {
    on_versions(Slot::VmbChannelInitSetMaximumPacketSize, |v| {
        let (fx, st) = rec_fx(v, true);
        let k = fx.k();
        let ch = fx.channel(ex(v));
        assert_eq!(k.max_packet_size(ch, 0), STATUS_INVALID_PARAMETER_2);
        assert_eq!(
            k.max_packet_size(ch, KMCL_RING_BUFFER_MTU + 8),
            STATUS_INVALID_PARAMETER_2
        );
        assert_eq!(
            k.max_packet_size(ch, 16 * 4096),
            STATUS_INVALID_PARAMETER_2,
            "does not fit the default 16-page ring"
        );
        assert_eq!(k.max_packet_size(ch, 8192), STATUS_SUCCESS);
        assert_eq!(k.enable(ch), STATUS_SUCCESS);
        let p = fx.packet(ch);
        assert_eq!(fx.send(p, &[9u8; 8192], WAIT), STATUS_SUCCESS);
        assert!(wait_for(T, || completions(ch).len() == 1));
        assert_eq!(fx.send(p, &[9u8; 8193], WAIT), STATUS_INVALID_PARAMETER_3);
        assert_eq!(st.lock().unwrap().seen.len(), 1);
        fx.free(p);
        fx.close(ch);
        after_enable(&fx, v, "VmbChannelInitSetMaximumPacketSize", |c| {
            k.max_packet_size(c, 64)
        });
        no_leaks(&fx.finish());
    });
}

#[test]
fn vmb_channel_init_set_process_packet_callbacks() {
    on_versions(Slot::VmbChannelInitSetProcessPacketCallbacks, |v| {
        let (fx, st) = rec_fx(v, true);
        let k = fx.k();
        let ch = fx.channel(false);
        assert_eq!(
            k.process_callbacks(ch, None, None),
            STATUS_INVALID_PARAMETER_2
        );
        assert_eq!(
            k.process_callbacks(ch, Some(ev_packet), None),
            STATUS_SUCCESS
        );
        assert_eq!(k.enable(ch), STATUS_SUCCESS);
        fx.offer.host_send(b"12345678", true).unwrap();
        assert!(wait_for(T, || packets(ch).len() == 1));
        assert!(wait_for(T, || st.lock().unwrap().completions.len() == 1));
        assert_eq!(st.lock().unwrap().completions[0].payload, b"12345678");
        assert_eq!(
            count(ch, |e| matches!(e, Ev::Batch(_))),
            0,
            "no batch callback"
        );
        fx.close(ch);
        after_enable(&fx, v, "VmbChannelInitSetProcessPacketCallbacks", |c| {
            k.process_callbacks(c, Some(ev_packet), None)
        });
        no_leaks(&fx.finish());
    });
}

#[test]
fn vmb_channel_init_set_state_change_callbacks() {
    on_versions(Slot::VmbChannelInitSetStateChangeCallbacks, |v| {
        let (fx, _) = rec_fx(v, true);
        let k = fx.k();
        let ch = fx.channel(false);
        let mut bad = v1_callbacks();
        bad.Version = 2;
        assert_eq!(k.state_callbacks(ch, &mut bad), STATUS_INVALID_PARAMETER_2);
        bad.Version = 1;
        bad.Size = 40;
        assert_eq!(k.state_callbacks(ch, &mut bad), STATUS_INVALID_PARAMETER_2);
        assert_eq!(
            k.state_callbacks(ch, null_mut()),
            STATUS_INVALID_PARAMETER_2
        );
        let mut v5 = v5_callbacks(ch);
        let s = k.state_callbacks(ch, (&raw mut v5).cast());
        if v == InterfaceVersion::V5 {
            assert_eq!(s, STATUS_SUCCESS);
            assert_eq!(k.enable(ch), STATUS_SUCCESS);
            assert_eq!(events(ch), vec![Ev::Opened, Ev::Started, Ev::PostStarted]);
            assert_eq!(with_log(ch, |l| l.ctx_errors), 0);
            fx.close(ch);
        } else {
            assert_eq!(s, STATUS_INVALID_PARAMETER_2);
            assert!(fx.has(
                "VmbChannelInitSetStateChangeCallbacks",
                ViolationKind::NotSupported
            ));
            k.cleanup(ch);
        }
        after_enable(&fx, v, "VmbChannelInitSetStateChangeCallbacks", |c| {
            let mut cb = v1_callbacks();
            k.state_callbacks(c, &mut cb)
        });
        no_leaks(&fx.finish());
    });
}

#[test]
fn vmb_channel_packet_complete() {
    on_versions(Slot::VmbChannelPacketComplete, |v| {
        let (fx, st) = rec_fx(v, true);
        let k = fx.k();
        let ch = fx.channel(ex(v));
        with_log(ch, |l| l.mode = Mode::Keep);
        assert_eq!(k.enable(ch), STATUS_SUCCESS);
        let txid = fx.offer.host_send(b"request!", true).unwrap();
        assert!(wait_for(T, || with_log(ch, |l| l.kept.len()) == 1));
        let pc = with_log(ch, |l| l.kept[0]) as VMBPACKETCOMPLETION;
        assert_eq!(fx.bus.verifier().uncompleted_incoming, 1);
        // A null buffer with a size: rejected, not completed.
        k.complete(pc, null_mut(), 8);
        assert!(fx.has("VmbChannelPacketComplete", ViolationKind::InvalidParameter));
        let mut resp = *b"response";
        k.complete(pc, resp.as_mut_ptr().cast(), 8);
        assert!(wait_for(T, || st.lock().unwrap().completions.len() == 1));
        {
            let s = st.lock().unwrap();
            assert_eq!(s.completions[0].transaction_id, txid);
            assert_eq!(s.completions[0].payload, b"response");
        }
        assert_eq!(fx.bus.verifier().uncompleted_incoming, 0);
        k.complete(pc, resp.as_mut_ptr().cast(), 8);
        assert!(fx.has("VmbChannelPacketComplete", ViolationKind::DoubleComplete));
        // The host asked for no completion: none is written.
        fx.offer.host_send(b"no-reply", false).unwrap();
        assert!(wait_for(T, || with_log(ch, |l| l.kept.len()) == 2));
        k.complete(
            with_log(ch, |l| l.kept[1]) as VMBPACKETCOMPLETION,
            null_mut(),
            0,
        );
        std::thread::sleep(std::time::Duration::from_millis(30));
        assert_eq!(st.lock().unwrap().completions.len(), 1);
        fx.close(ch);
        no_leaks(&fx.finish());
    });
}

#[test]
fn vmb_channel_packet_defer_to_passive() {
    on_versions(Slot::VmbChannelPacketDeferToPassive, |v| {
        let (fx, st) = rec_fx(v, true);
        let k = fx.k();
        let ch = fx.channel(ex(v));
        with_log(ch, |l| l.mode = Mode::Defer);
        assert_eq!(k.enable(ch), STATUS_SUCCESS);
        fx.offer.host_send(b"deferred", true).unwrap();
        assert!(wait_for(T, || st.lock().unwrap().completions.len() == 1));
        let ev: Vec<(bool, String)> = with_log(ch, |l| {
            l.events
                .iter()
                .filter_map(|e| match e {
                    Ev::Packet {
                        passive_redelivery, ..
                    } => Some(*passive_redelivery),
                    _ => None,
                })
                .zip(l.threads.iter().cloned())
                .collect()
        });
        assert_eq!(ev.len(), 2, "delivered, then re-delivered at passive");
        assert!(!ev[0].0 && ev[0].1.starts_with("vmbus-dpc"));
        assert!(ev[1].0 && ev[1].1.starts_with("vmbus-passive"));
        // Deferring a packet that is no longer live is reported.
        k.defer(0x10 as VMBPACKETCOMPLETION);
        assert!(fx.has(
            "VmbChannelPacketDeferToPassive",
            ViolationKind::InvalidHandle
        ));
        fx.close(ch);
        no_leaks(&fx.finish());
    });
}

#[test]
fn vmb_channel_packet_fail() {
    on_versions(Slot::VmbChannelPacketFail, |v| {
        let (fx, st) = rec_fx(v, true);
        let k = fx.k();
        let ch = fx.channel(ex(v));
        with_log(ch, |l| l.mode = Mode::Fail);
        assert_eq!(k.enable(ch), STATUS_SUCCESS);
        fx.offer.host_send(b"bad-one!", true).unwrap();
        assert!(wait_for(T, || packets(ch).len() == 1));
        // The queue is stopped: the next packet is not delivered.
        fx.offer.host_send(b"next-one", true).unwrap();
        std::thread::sleep(std::time::Duration::from_millis(50));
        assert_eq!(packets(ch).len(), 1);
        assert!(st.lock().unwrap().completions.is_empty());
        let pc = packets(ch)[0].0 as VMBPACKETCOMPLETION;
        k.fail(pc);
        assert!(fx.has("VmbChannelPacketFail", ViolationKind::DoubleComplete));
        fx.close(ch);
        no_leaks(&fx.finish());
    });
}

#[test]
fn vmb_channel_packet_get_external_data() {
    on_versions(Slot::VmbChannelPacketGetExternalData, |v| {
        let (fx, st) = rec_fx(v, true);
        let k = fx.k();
        let ch = fx.channel(ex(v));
        with_log(ch, |l| l.mode = Mode::External);
        assert_eq!(k.enable(ch), STATUS_SUCCESS);
        let external: Vec<u8> = (0..6000u32).map(|i| (i % 253) as u8).collect();
        fx.offer
            .host_send_external(b"with-ext", &external, true)
            .unwrap();
        assert!(wait_for(T, || st.lock().unwrap().completions.len() == 1));
        let (flags, data) = {
            let p = packets(ch);
            (p[0].2, with_log(ch, |l| l.events.clone()))
        };
        assert_eq!(flags, VMBUS_CHANNEL_PROCESS_PACKET_FLAG_EXTERNAL_DATA);
        assert!(data.contains(&Ev::ExternalData(external.clone())));
        {
            let s = st.lock().unwrap();
            let c = &s.completions[0];
            assert_eq!(c.payload, external[..8].to_vec());
            // The driver wrote through the MDL; the host sees it.
            assert_eq!(c.external.as_ref().unwrap()[0], 0xEE);
        }
        // STATUS_PENDING once, then the packet is delivered again.
        fx.bus.faults().defer_external_data(true);
        fx.offer
            .host_send_external(b"pending!", &[7u8; 100], true)
            .unwrap();
        assert!(wait_for(T, || st.lock().unwrap().completions.len() == 2));
        assert_eq!(count(ch, |e| matches!(e, Ev::Pending(_))), 1);
        assert_eq!(packets(ch).len(), 3);
        fx.bus.faults().defer_external_data(false);
        // Errors: no external data, bad flags, null out-pointer.
        with_log(ch, |l| l.mode = Mode::Keep);
        fx.offer.host_send(b"in-band!", true).unwrap();
        assert!(wait_for(T, || with_log(ch, |l| l.kept.len()) == 1));
        let pc = with_log(ch, |l| l.kept[0]) as VMBPACKETCOMPLETION;
        let mut mdl: PMDL = null_mut();
        assert_eq!(
            k.external_data(pc, 0, &mut mdl),
            STATUS_INVALID_DEVICE_REQUEST
        );
        assert_eq!(k.external_data(pc, 2, &mut mdl), STATUS_INVALID_PARAMETER_2);
        assert_eq!(
            k.external_data(pc, 0, null_mut()),
            STATUS_INVALID_PARAMETER_3
        );
        k.complete(pc, null_mut(), 0);
        assert_eq!(k.external_data(pc, 0, &mut mdl), STATUS_INVALID_PARAMETER_1);
        fx.close(ch);
        no_leaks(&fx.finish());
    });
}

#[test]
fn vmb_channel_pause() {
    on_versions(Slot::VmbChannelPause, |v| {
        let (fx, st) = rec_fx(v, true);
        let k = fx.k();
        let ch = fx.open(ex(v));
        k.pause(ch);
        assert_eq!(events(ch).last(), Some(&Ev::Suspend));
        fx.offer.host_send(b"held....", true).unwrap();
        std::thread::sleep(std::time::Duration::from_millis(50));
        assert!(packets(ch).is_empty(), "no delivery while paused");
        let p = fx.packet(ch);
        assert_eq!(fx.send(p, b"paused..", WAIT), STATUS_INVALID_DEVICE_STATE);
        assert!(fx.has("VmbPacketSend", ViolationKind::SendOnDisabledChannel));
        k.start(ch);
        assert!(wait_for(T, || packets(ch).len() == 1));
        assert!(wait_for(T, || st.lock().unwrap().completions.len() == 1));
        // Pause before enable: the channel starts paused.
        fx.free(p);
        fx.close(ch);
        let ch = fx.channel(ex(v));
        k.pause(ch);
        assert_eq!(k.enable(ch), STATUS_SUCCESS);
        assert_eq!(events(ch), vec![Ev::Opened]);
        k.start(ch);
        assert_eq!(events(ch), vec![Ev::Opened, Ev::Started, Ev::PostStarted]);
        fx.close(ch);
        no_leaks(&fx.finish());
    });
}

#[test]
fn vmb_channel_send_synchronous_request() {
    on_versions(Slot::VmbChannelSendSynchronousRequest, |v| {
        let (fx, st) = rec_fx(v, true);
        let k = fx.k();
        let ch = fx.open(ex(v));
        let mut req = *b"sync-request-16b";
        let mut resp = [0u8; 16];
        let mut len = 16u32;
        let mut t: i64 = -20_000_000;
        assert_eq!(
            k.sync(
                ch,
                req.as_mut_ptr().cast(),
                16,
                null_mut(),
                WAIT,
                resp.as_mut_ptr().cast(),
                &mut len,
                &mut t as *mut i64 as PLARGE_INTEGER
            ),
            STATUS_SUCCESS
        );
        assert_eq!((len, &resp), (16, &req));
        // Ring: one in-band descriptor with completion requested.
        {
            let s = st.lock().unwrap();
            assert_eq!(s.seen.len(), 1);
            assert_eq!(s.seen[0].kind, HostPacketKind::InBand);
            assert!(s.seen[0].completion_requested);
            assert_ne!(s.seen[0].txid, 0);
        }
        // Response larger than the buffer: truncated, STATUS_BUFFER_OVERFLOW.
        let mut small = [0u8; 8];
        let mut small_len = 8u32;
        assert_eq!(
            k.sync(
                ch,
                req.as_mut_ptr().cast(),
                16,
                null_mut(),
                WAIT,
                small.as_mut_ptr().cast(),
                &mut small_len,
                &mut t as *mut i64 as PLARGE_INTEGER
            ),
            STATUS_BUFFER_OVERFLOW
        );
        assert_eq!((small_len, &small), (8, b"sync-req"));
        // Size not a multiple of 8; absolute timeout.
        let mut bad_len = 12u32;
        assert_eq!(
            k.sync(
                ch,
                req.as_mut_ptr().cast(),
                16,
                null_mut(),
                WAIT,
                resp.as_mut_ptr().cast(),
                &mut bad_len,
                &mut t as *mut i64 as PLARGE_INTEGER
            ),
            STATUS_INVALID_PARAMETER_7
        );
        let mut absolute: i64 = 5;
        assert_eq!(
            k.sync(
                ch,
                req.as_mut_ptr().cast(),
                16,
                null_mut(),
                WAIT,
                resp.as_mut_ptr().cast(),
                &mut len,
                &mut absolute as *mut i64 as PLARGE_INTEGER
            ),
            STATUS_INVALID_PARAMETER_8
        );
        // Zero timeout: placed in the ring, no wait.
        let mut zero: i64 = 0;
        len = 16;
        assert_eq!(
            k.sync(
                ch,
                req.as_mut_ptr().cast(),
                16,
                null_mut(),
                0,
                resp.as_mut_ptr().cast(),
                &mut len,
                &mut zero as *mut i64 as PLARGE_INTEGER
            ),
            STATUS_SUCCESS
        );
        assert_eq!(len, 0);
        // Timeout: the host is stalled, the request is cancelled; the late completion is
        // absorbed once the host resumes.
        fx.offer.stall(true);
        let mut short: i64 = -1_000_000; // 100 ms
        len = 16;
        assert_eq!(
            k.sync(
                ch,
                req.as_mut_ptr().cast(),
                16,
                null_mut(),
                WAIT,
                resp.as_mut_ptr().cast(),
                &mut len,
                &mut short as *mut i64 as PLARGE_INTEGER
            ),
            STATUS_CANCELLED
        );
        fx.offer.stall(false);
        assert!(wait_for(T, || fx.bus.verifier().counters.late_completions == 1));
        fx.close(ch);
        no_leaks(&fx.finish());
    });
}

#[test]
fn vmb_channel_set_incoming_processing_at_passive() {
    on_versions(Slot::VmbChannelSetIncomingProcessingAtPassive, |v| {
        let (fx, st) = rec_fx(v, true);
        let k = fx.k();
        let ch = fx.channel(ex(v));
        k.at_passive(ch, 1);
        assert_eq!(k.enable(ch), STATUS_SUCCESS);
        for _ in 0..3 {
            fx.offer.host_send(b"passive!", true).unwrap();
        }
        assert!(wait_for(T, || st.lock().unwrap().completions.len() == 3));
        let threads = with_log(ch, |l| l.threads.clone());
        assert!(
            threads.iter().all(|t| t.starts_with("vmbus-passive")),
            "{threads:?}"
        );
        k.at_passive(ch, 0);
        fx.offer.host_send(b"dpc.....", true).unwrap();
        assert!(wait_for(T, || st.lock().unwrap().completions.len() == 4));
        assert!(with_log(ch, |l| l.threads[3].starts_with("vmbus-dpc")));
        fx.close(ch);
        k.at_passive(ch, 1);
        assert!(fx.has(
            "VmbChannelSetIncomingProcessingAtPassive",
            ViolationKind::UseAfterFree
        ));
        no_leaks(&fx.finish());
    });
}

#[test]
fn vmb_channel_set_interrupt_latency() {
    on_versions(Slot::VmbChannelSetInterruptLatency, |v| {
        let (fx, _) = rec_fx(v, true);
        let k = fx.k();
        let ch = fx.open(ex(v));
        let mut old = 99u16;
        assert_eq!(k.latency(ch, 100, &mut old), STATUS_SUCCESS);
        assert_eq!(old, 0);
        assert_eq!(k.latency(ch, 50, &mut old), STATUS_SUCCESS);
        assert_eq!(old, 100);
        assert_eq!(k.latency(ch, 50, null_mut()), STATUS_INVALID_PARAMETER_3);
        fx.close(ch);
        assert_eq!(k.latency(ch, 1, &mut old), STATUS_INVALID_PARAMETER_1);
        no_leaks(&fx.finish());
    });
}

#[test]
fn vmb_channel_set_pointer() {
    on_versions(Slot::VmbChannelSetPointer, |v| {
        let (fx, _) = rec_fx(v, true);
        let k = fx.k();
        let ch = fx.open(ex(v));
        k.set_pointer(ch, 0xABCD as PVOID);
        assert_eq!(k.get_pointer(ch) as usize, 0xABCD);
        fx.close(ch);
        k.set_pointer(0x77 as VMBCHANNEL, null_mut());
        assert!(fx.has("VmbChannelSetPointer", ViolationKind::InvalidHandle));
        no_leaks(&fx.finish());
    });
}

#[test]
fn vmb_channel_set_transaction_quota() {
    on_versions(Slot::VmbChannelSetTransactionQuota, |v| {
        let (fx, st) = rec_fx(v, true);
        let k = fx.k();
        let ch = fx.channel(ex(v));
        with_log(ch, |l| l.mode = Mode::Keep);
        k.quota(ch, 1);
        assert_eq!(k.enable(ch), STATUS_SUCCESS);
        for i in 0..3u8 {
            fx.offer.host_send(&[i; 8], true).unwrap();
        }
        assert!(wait_for(T, || packets(ch).len() == 1));
        std::thread::sleep(std::time::Duration::from_millis(50));
        assert_eq!(packets(ch).len(), 1, "quota of 1 outstanding packet");
        for n in 1..=3 {
            let pc = with_log(ch, |l| l.kept[n - 1]) as VMBPACKETCOMPLETION;
            k.complete(pc, null_mut(), 0);
            if n < 3 {
                assert!(wait_for(T, || packets(ch).len() == n + 1));
            }
        }
        assert!(wait_for(T, || st.lock().unwrap().completions.len() == 3));
        k.quota(ch, 0);
        assert!(fx.has(
            "VmbChannelSetTransactionQuota",
            ViolationKind::InvalidParameter
        ));
        fx.close(ch);
        no_leaks(&fx.finish());
    });
}

#[test]
fn vmb_channel_sizeof_packet() {
    on_versions(Slot::VmbChannelSizeofPacket, |v| {
        let (fx, _) = rec_fx(v, true);
        let k = fx.k();
        let ch = fx.channel(ex(v));
        let n = k.sizeof_packet(ch);
        assert!(
            n >= 4096 + 8,
            "exceeds the maximum packet size plus a pointer"
        );
        assert_eq!(k.max_packet_size(ch, 100), STATUS_SUCCESS);
        assert!(k.sizeof_packet(ch) < n);
        k.cleanup(ch);
        assert_eq!(k.sizeof_packet(ch), 0);
        assert!(fx.has("VmbChannelSizeofPacket", ViolationKind::UseAfterFree));
        no_leaks(&fx.finish());
    });
}

#[test]
fn vmb_channel_start() {
    on_versions(Slot::VmbChannelStart, |v| {
        let (fx, _) = rec_fx(v, true);
        let k = fx.k();
        let ch = fx.open(ex(v));
        k.start(ch); // running: no effect
        assert_eq!(events(ch).len(), 3);
        k.pause(ch);
        k.start(ch);
        assert_eq!(
            &events(ch)[3..],
            &[Ev::Suspend, Ev::Started, Ev::PostStarted]
        );
        fx.close(ch);
        k.start(ch);
        assert!(fx.has("VmbChannelStart", ViolationKind::UseAfterFree));
        no_leaks(&fx.finish());
    });
}

#[test]
fn vmb_client_channel_init_set_ring_buffer_page_count() {
    on_versions(Slot::VmbClientChannelInitSetRingBufferPageCount, |v| {
        let (fx, _) = rec_fx(v, true);
        let k = fx.k();
        let ch = fx.channel(ex(v));
        assert_eq!(k.ring_pages(ch, 0, 4), STATUS_INVALID_PARAMETER_2);
        assert_eq!(k.ring_pages(ch, 4, 0), STATUS_INVALID_PARAMETER_3);
        assert_eq!(
            k.ring_pages(ch, 4, MAX_RING_PAGES + 1),
            STATUS_INVALID_PARAMETER_3
        );
        assert_eq!(
            k.ring_pages(ch, 4, 1),
            STATUS_INVALID_PARAMETER_3,
            "1 page cannot carry a 4096-byte packet"
        );
        assert_eq!(k.ring_pages(ch, 2, 3), STATUS_SUCCESS);
        assert_eq!(k.enable(ch), STATUS_SUCCESS);
        let p = fx.packet(ch);
        assert_eq!(fx.send(p, &[1u8; 4096], WAIT), STATUS_SUCCESS);
        assert!(wait_for(T, || completions(ch).len() == 1));
        fx.free(p);
        fx.close(ch);
        after_enable(&fx, v, "VmbClientChannelInitSetRingBufferPageCount", |c| {
            k.ring_pages(c, 2, 2)
        });
        no_leaks(&fx.finish());
    });
}

static PNP_FAILURES: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
unsafe extern "system" fn pnp_failed(_ch: VMBCHANNEL, status: NTSTATUS) {
    assert_eq!(status, STATUS_DEVICE_NOT_CONNECTED);
    PNP_FAILURES.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
}

#[test]
fn vmb_client_channel_init_set_target_pnp() {
    on_versions(Slot::VmbClientChannelInitSetTargetPnp, |v| {
        let (fx, _) = rec_fx(v, true);
        let (other, other_state) = Recorder::new(true);
        let other_offer = fx.bus.offer(guid(7), guid(8), Box::new(other));
        let k = fx.k();
        // Allocated on the first offer's device object, retargeted to the second offer.
        let ch = fx.channel(ex(v));
        let ty = guid(7);
        assert_eq!(
            k.target_pnp(ch, &ty, core::ptr::null(), None),
            STATUS_SUCCESS
        );
        assert_eq!(k.enable(ch), STATUS_SUCCESS);
        assert!(other_offer.is_open());
        assert!(!fx.offer.is_open());
        let p = fx.packet(ch);
        assert_eq!(fx.send(p, b"retarget", WAIT), STATUS_SUCCESS);
        assert!(wait_for(T, || other_state.lock().unwrap().seen.len() == 1));
        assert!(wait_for(T, || completions(ch).len() == 1));
        fx.free(p);
        fx.close(ch);
        // Errors: null type; unknown target fails the enable and calls the PnP callback.
        let ch = fx.channel(ex(v));
        assert_eq!(
            k.target_pnp(ch, core::ptr::null(), core::ptr::null(), None),
            STATUS_INVALID_PARAMETER_2
        );
        let unknown = guid(99);
        let before = PNP_FAILURES.load(std::sync::atomic::Ordering::SeqCst);
        assert_eq!(
            k.target_pnp(ch, &ty, &unknown, Some(pnp_failed)),
            STATUS_SUCCESS
        );
        assert_eq!(k.enable(ch), STATUS_DEVICE_NOT_CONNECTED);
        assert!(PNP_FAILURES.load(std::sync::atomic::Ordering::SeqCst) > before);
        k.cleanup(ch);
        no_leaks(&fx.finish());
    });
}

#[test]
fn vmb_packet_allocate() {
    on_versions(Slot::VmbPacketAllocate, |v| {
        let mut cfg = VmbusConfig::new(v);
        cfg.max_packet_count = 2;
        let (dev, _) = Recorder::new(true);
        let fx = Fx::with_config(cfg, Box::new(dev));
        let k = fx.k();
        let ch = fx.channel(ex(v));
        let a = k.packet_allocate(ch);
        let b = k.packet_allocate(ch);
        assert!(!a.is_null() && !b.is_null() && a != b);
        assert!(k.packet_allocate(ch).is_null(), "pool exhausted");
        assert_eq!(fx.bus.verifier().live_packets, 2);
        k.packet_free(a);
        let c = k.packet_allocate(ch);
        assert!(!c.is_null());
        k.packet_free(b);
        k.packet_free(c);
        assert!(k.packet_allocate(null_mut()).is_null());
        k.cleanup(ch);
        assert!(fx.has("VmbPacketAllocate", ViolationKind::InvalidHandle));
        no_leaks(&fx.finish());
    });
}

#[test]
fn vmb_packet_free() {
    on_versions(Slot::VmbPacketFree, |v| {
        let (fx, _) = rec_fx(v, false);
        let k = fx.k();
        let ch = fx.open(ex(v));
        let p = fx.packet(ch);
        // In flight (the host never completes): freeing is refused.
        assert_eq!(fx.send(p, b"inflight", WAIT), STATUS_SUCCESS);
        k.packet_free(p);
        assert!(fx.has("VmbPacketFree", ViolationKind::WrongState));
        fx.offer
            .inject_completion(fx.offer.pending_guest_transactions()[0], b"")
            .unwrap();
        assert!(wait_for(T, || completions(ch).len() == 1));
        k.packet_free(p);
        assert_eq!(fx.bus.verifier().live_packets, 0);
        k.packet_free(p);
        assert!(fx.has("VmbPacketFree", ViolationKind::DoubleFree));
        assert!(k.packet_get_pointer(p).is_null());
        assert!(fx.has("VmbPacketGetPointer", ViolationKind::UseAfterFree));
        // Leaked packets are reported at cleanup.
        let _leak = k.packet_allocate(ch);
        fx.close(ch);
        assert!(fx.has("VmbChannelCleanup", ViolationKind::Leak));
        no_leaks(&fx.finish());
    });
}

#[test]
fn vmb_packet_get_channel() {
    on_versions(Slot::VmbPacketGetChannel, |v| {
        let (fx, _) = rec_fx(v, true);
        let k = fx.k();
        let ch = fx.channel(ex(v));
        let p = k.packet_allocate(ch);
        assert_eq!(k.packet_channel(p), ch);
        k.packet_free(p);
        assert!(k.packet_channel(ch as VMBPACKET).is_null());
        assert!(fx.has("VmbPacketGetChannel", ViolationKind::InvalidHandle));
        k.cleanup(ch);
        no_leaks(&fx.finish());
    });
}

#[test]
fn vmb_packet_get_pointer() {
    on_versions(Slot::VmbPacketGetPointer, |v| {
        let (fx, _) = rec_fx(v, true);
        let k = fx.k();
        let ch = fx.channel(ex(v));
        let p = k.packet_allocate(ch);
        assert!(k.packet_get_pointer(p).is_null());
        k.packet_set_pointer(p, 0x5150 as PVOID);
        assert_eq!(k.packet_get_pointer(p) as usize, 0x5150);
        k.packet_free(p);
        assert!(k.packet_get_pointer(null_mut()).is_null());
        k.cleanup(ch);
        assert!(fx.has("VmbPacketGetPointer", ViolationKind::InvalidHandle));
        no_leaks(&fx.finish());
    });
}

#[test]
fn vmb_packet_initialize() {
    on_versions(Slot::VmbPacketInitialize, |v| {
        let (fx, st) = rec_fx(v, true);
        let k = fx.k();
        let ch = fx.open(ex(v));
        let size = k.sizeof_packet(ch);
        let mut storage = vec![0xFFu64; size as usize / 8 + 1];
        let p: VMBPACKET = storage.as_mut_ptr().cast();
        assert_eq!(
            k.packet_initialize(ch, p, size - 8),
            STATUS_INVALID_PARAMETER_3
        );
        assert_eq!(
            k.packet_initialize(ch, null_mut(), size),
            STATUS_INVALID_PARAMETER_2
        );
        assert_eq!(k.packet_initialize(ch, p, size), STATUS_SUCCESS);
        assert_eq!(storage[0], 0, "storage zeroed");
        // The initial completion routine is invalid: sending fails until one is set.
        assert_eq!(fx.send(p, b"no-route", WAIT), STATUS_INVALID_PARAMETER_1);
        k.set_routine(p, Some(ev_done));
        assert_eq!(fx.send(p, b"routed!!", WAIT), STATUS_SUCCESS);
        assert!(wait_for(T, || completions(ch).len() == 1));
        assert_eq!(st.lock().unwrap().seen.len(), 1);
        // Re-initializing idle storage is allowed.
        assert_eq!(k.packet_initialize(ch, p, size), STATUS_SUCCESS);
        k.packet_free(p);
        fx.close(ch);
        no_leaks(&fx.finish());
    });
}

#[test]
fn vmb_packet_send() {
    on_versions(Slot::VmbPacketSend, |v| {
        let (fx, st) = rec_fx(v, true);
        let k = fx.k();
        let ch = fx.open(ex(v));
        let p = fx.packet(ch);
        // With WAIT_FOR_COMPLETION: one type-6 descriptor, completion requested, non-zero txid;
        // the routine runs when the host's completion arrives.
        assert_eq!(fx.send(p, b"0123456789abcdef", WAIT), STATUS_SUCCESS);
        assert!(wait_for(T, || completions(ch).len() == 1));
        // Without: flag clear on the wire; the routine runs once the packet is in the ring.
        assert_eq!(fx.send(p, b"fire-and-forget!", 0), STATUS_SUCCESS);
        assert!(wait_for(T, || completions(ch).len() == 2));
        assert!(wait_for(T, || st.lock().unwrap().seen.len() == 2));
        {
            let s = st.lock().unwrap();
            assert_eq!(s.seen[0].kind, HostPacketKind::InBand);
            assert!(s.seen[0].completion_requested);
            assert_eq!(s.seen[0].payload, b"0123456789abcdef");
            assert!(!s.seen[1].completion_requested);
            assert!(s.seen[0].txid != 0 && s.seen[1].txid != 0);
            assert_ne!(s.seen[0].txid, s.seen[1].txid);
            assert!(s.seen.iter().all(|x| x.ranges.is_empty()));
        }
        let c = completions(ch);
        assert_eq!(
            c[0],
            (p as usize, STATUS_SUCCESS, b"0123456789abcdef".to_vec())
        );
        assert_eq!(c[1], (p as usize, STATUS_SUCCESS, Vec::new()));
        assert_eq!(fx.offer.counters().guest_to_host.packets_written, 2);
        // Errors.
        assert_eq!(
            k.send(p, null_mut(), 8, null_mut(), WAIT),
            STATUS_INVALID_PARAMETER_2
        );
        assert_eq!(fx.send(p, b"x", 0x100), STATUS_INVALID_PARAMETER_5);
        assert_eq!(fx.send(null_mut(), b"x", 0), STATUS_INVALID_PARAMETER_1);
        k.disable(ch);
        assert_eq!(fx.send(p, b"disabled", WAIT), STATUS_INVALID_DEVICE_STATE);
        assert!(fx.has("VmbPacketSend", ViolationKind::SendOnDisabledChannel));
        fx.free(p);
        k.cleanup(ch);
        no_leaks(&fx.finish());
    });
}

#[test]
fn vmb_packet_send_with_external_mdl() {
    on_versions(Slot::VmbPacketSendWithExternalMdl, |v| {
        let (fx, st) = rec_fx(v, true);
        let k = fx.k();
        let ch = fx.open(ex(v));
        let p = fx.packet(ch);
        let buf = PageBuf::new(3);
        buf.fill(|i| (i % 241) as u8);
        // SAFETY: the page buffer outlives the MDL.
        let mdl = unsafe { OwnedMdl::new(buf.ptr(), buf.len()) }.unwrap();
        let mut inband = *b"mdl-wndw";
        assert_eq!(
            k.send_mdl(
                p,
                inband.as_mut_ptr().cast(),
                8,
                mdl.as_ptr(),
                100,
                5000,
                WAIT
            ),
            STATUS_SUCCESS
        );
        assert!(wait_for(T, || completions(ch).len() == 1));
        {
            let s = st.lock().unwrap();
            let seen = &s.seen[0];
            assert_eq!(seen.kind, HostPacketKind::GpaDirect);
            assert!(seen.completion_requested);
            assert_eq!(seen.ranges.len(), 1);
            let r = &seen.ranges[0];
            assert_eq!((r.byte_offset, r.byte_count), (100, 5000));
            assert_eq!(r.pfns, buf.pfns()[..2].to_vec());
            let ext = seen.external.as_ref().unwrap();
            assert!(
                ext.iter()
                    .enumerate()
                    .all(|(i, b)| *b == ((i + 100) % 241) as u8)
            );
        }
        // FORCE_MDL_LENGTH: the rest of the MDL from the offset.
        assert_eq!(
            k.send_mdl(
                p,
                inband.as_mut_ptr().cast(),
                8,
                mdl.as_ptr(),
                4096,
                1,
                WAIT | VMBUS_CHANNEL_FORMAT_FLAG_FORCE_MDL_LENGTH
            ),
            STATUS_SUCCESS
        );
        assert!(wait_for(T, || completions(ch).len() == 2));
        assert_eq!(st.lock().unwrap().seen[1].ranges[0].byte_count, 8192);
        // Errors by parameter.
        let n = inband.as_mut_ptr().cast();
        assert_eq!(
            k.send_mdl(p, n, 8, null_mut(), 0, 1, WAIT),
            STATUS_INVALID_PARAMETER_4
        );
        assert_eq!(
            k.send_mdl(p, n, 8, mdl.as_ptr(), 20_000, 1, WAIT),
            STATUS_INVALID_PARAMETER_5
        );
        assert_eq!(
            k.send_mdl(p, n, 8, mdl.as_ptr(), 0, 20_000, WAIT),
            STATUS_INVALID_PARAMETER_6
        );
        assert_eq!(
            k.send_mdl(p, n, 8, mdl.as_ptr(), 0, 1, 0x400),
            STATUS_INVALID_PARAMETER_7
        );
        fx.free(p);
        fx.close(ch);
        drop(mdl);
        no_leaks(&fx.finish());
    });
}

#[test]
fn vmb_packet_send_with_external_pfns() {
    on_versions(Slot::VmbPacketSendWithExternalPfns, |v| {
        let (fx, st) = rec_fx(v, true);
        let k = fx.k();
        let ch = fx.open(ex(v));
        let p = fx.packet(ch);
        let buf = PageBuf::new(2);
        buf.fill(|i| (i % 7) as u8);
        // The pages must be known memory: describe them with an MDL first.
        // SAFETY: the page buffer outlives the MDL.
        let mdl = unsafe { OwnedMdl::new(buf.ptr(), buf.len()) }.unwrap();
        let mut pfns = buf.pfns();
        assert_eq!(
            k.send_pfns(p, null_mut(), 0, pfns.as_mut_ptr(), 2, WAIT),
            STATUS_SUCCESS
        );
        assert!(wait_for(T, || completions(ch).len() == 1));
        {
            let s = st.lock().unwrap();
            assert_eq!(s.seen[0].kind, HostPacketKind::GpaDirect);
            assert_eq!(s.seen[0].ranges[0].pfns, pfns);
            assert_eq!(s.seen[0].ranges[0].byte_count, 8192);
            let ext = s.seen[0].external.as_ref().unwrap();
            assert!(ext.iter().enumerate().all(|(i, b)| *b == (i % 7) as u8));
        }
        assert_eq!(
            k.send_pfns(p, null_mut(), 0, null_mut(), 1, WAIT),
            STATUS_INVALID_PARAMETER_4
        );
        assert_eq!(
            k.send_pfns(p, null_mut(), 0, pfns.as_mut_ptr(), 0, WAIT),
            STATUS_INVALID_PARAMETER_5
        );
        let mut wild = [0x1u64];
        assert_eq!(
            k.send_pfns(p, null_mut(), 0, wild.as_mut_ptr(), 1, WAIT),
            STATUS_INVALID_PARAMETER_4
        );
        assert_eq!(
            k.send_pfns(p, null_mut(), 0, pfns.as_mut_ptr(), 2, 0x800),
            STATUS_INVALID_PARAMETER_6
        );
        fx.free(p);
        fx.close(ch);
        drop(mdl);
        no_leaks(&fx.finish());
    });
}

#[test]
fn vmb_packet_set_completion_routine() {
    on_versions(Slot::VmbPacketSetCompletionRoutine, |v| {
        let (fx, _) = rec_fx(v, true);
        let k = fx.k();
        let ch = fx.open(ex(v));
        // No routine set on an allocated packet: the default routine frees it.
        let p = k.packet_allocate(ch);
        assert_eq!(fx.send(p, b"autofree", WAIT), STATUS_SUCCESS);
        assert!(wait_for(T, || fx.bus.verifier().live_packets == 0));
        // Most recent registration wins; null restores the default.
        let p = k.packet_allocate(ch);
        if v == InterfaceVersion::V5 {
            k.set_routine_ex(p, p.cast(), Some(ev_done_ex));
        }
        k.set_routine(p, Some(ev_done));
        assert_eq!(fx.send(p, b"legacy!!", WAIT), STATUS_SUCCESS);
        assert!(wait_for(T, || completions(ch).len() == 1));
        k.set_routine(p, None);
        assert_eq!(fx.send(p, b"default!", WAIT), STATUS_SUCCESS);
        assert!(wait_for(T, || fx.bus.verifier().live_packets == 0));
        assert_eq!(completions(ch).len(), 1);
        k.set_routine(p, Some(ev_done));
        assert!(fx.has("VmbPacketSetCompletionRoutine", ViolationKind::UseAfterFree));
        fx.close(ch);
        no_leaks(&fx.finish());
    });
}

#[test]
fn vmb_packet_set_pointer() {
    on_versions(Slot::VmbPacketSetPointer, |v| {
        let (fx, _) = rec_fx(v, true);
        let k = fx.k();
        let ch = fx.channel(ex(v));
        let p = k.packet_allocate(ch);
        k.packet_set_pointer(p, 0x99 as PVOID);
        assert_eq!(k.packet_get_pointer(p) as usize, 0x99);
        k.packet_free(p);
        k.packet_set_pointer(p, null_mut());
        assert!(fx.has("VmbPacketSetPointer", ViolationKind::UseAfterFree));
        k.cleanup(ch);
        no_leaks(&fx.finish());
    });
}

// ------------------------------------------------------------------ V2

#[test]
fn vmb_channel_packet_get_client_context() {
    on_versions(Slot::VmbChannelPacketGetClientContext, |v| {
        let (fx, st) = rec_fx(v, true);
        let k = fx.k();
        let ch = fx.channel(ex(v));
        with_log(ch, |l| l.mode = Mode::Keep);
        assert_eq!(k.client_context_size(ch, 40), STATUS_SUCCESS);
        assert_eq!(k.enable(ch), STATUS_SUCCESS);
        fx.offer.host_send(b"ctx-1...", true).unwrap();
        fx.offer.host_send(b"ctx-2...", true).unwrap();
        assert!(wait_for(T, || with_log(ch, |l| l.kept.len()) == 2));
        let kept = with_log(ch, |l| l.kept.clone());
        let c0 = k.client_context(kept[0] as VMBPACKETCOMPLETION);
        let c1 = k.client_context(kept[1] as VMBPACKETCOMPLETION);
        assert!(!c0.is_null() && !c1.is_null() && c0 != c1);
        // SAFETY: the context holds 40 bytes, zeroed, owned by the packet until completion.
        let zero = unsafe { core::slice::from_raw_parts(c0.cast::<u8>(), 40) }
            .iter()
            .all(|b| *b == 0);
        assert!(zero);
        for pc in &kept {
            k.complete(*pc as VMBPACKETCOMPLETION, null_mut(), 0);
        }
        assert!(wait_for(T, || st.lock().unwrap().completions.len() == 2));
        assert!(k.client_context(kept[0] as VMBPACKETCOMPLETION).is_null());
        assert!(fx.has(
            "VmbChannelPacketGetClientContext",
            ViolationKind::UseAfterFree
        ));
        fx.close(ch);
        no_leaks(&fx.finish());
    });
}

#[test]
fn vmb_channel_get_target_device_object() {
    on_versions(Slot::VmbChannelGetTargetDeviceObject, |v| {
        let (fx, _) = rec_fx(v, true);
        let other = fx
            .bus
            .offer(guid(5), guid(6), Box::new(Recorder::new(true).0));
        let k = fx.k();
        let ch = fx.channel(ex(v));
        let mut d: PDEVICE_OBJECT = null_mut();
        k.target_device(ch, &mut d);
        assert_eq!(d, fx.offer.device_object());
        let ty = guid(5);
        assert_eq!(
            k.target_pnp(ch, &ty, core::ptr::null(), None),
            STATUS_SUCCESS
        );
        k.target_device(ch, &mut d);
        assert_eq!(d, other.device_object());
        k.target_device(ch, null_mut());
        assert!(fx.has(
            "VmbChannelGetTargetDeviceObject",
            ViolationKind::InvalidParameter
        ));
        k.cleanup(ch);
        no_leaks(&fx.finish());
    });
}

#[test]
fn vmb_channel_get_parent_device_object() {
    on_versions(Slot::VmbChannelGetParentDeviceObject, |v| {
        let (fx, _) = rec_fx(v, true);
        let k = fx.k();
        let ch = fx.channel(ex(v));
        let mut d: PDEVICE_OBJECT = null_mut();
        k.parent_device(ch, &mut d);
        assert_eq!(d, fx.offer.device_object());
        // SAFETY: the emulator's device object is a real DEVICE_OBJECT.
        let dev = unsafe { d.read() };
        assert_eq!(dev.Type, 3);
        assert_eq!(usize::from(dev.Size), size_of::<DEVICE_OBJECT>());
        k.parent_device(ch, null_mut());
        assert!(fx.has(
            "VmbChannelGetParentDeviceObject",
            ViolationKind::InvalidParameter
        ));
        k.cleanup(ch);
        no_leaks(&fx.finish());
    });
}

// ------------------------------------------------------------------ V3

#[test]
fn vmb_channel_init_set_bounce_buffer_sizes() {
    on_versions(Slot::VmbChannelInitSetBounceBufferSizes, |v| {
        let (fx, _) = rec_fx(v, true);
        let k = fx.k();
        let ch = fx.channel(ex(v));
        assert_eq!(
            k.bounce_sizes(ch, 100, 4096, 8192),
            STATUS_INVALID_PARAMETER_2
        );
        assert_eq!(
            k.bounce_sizes(ch, 8192, 4096, 4096),
            STATUS_INVALID_PARAMETER_2
        );
        assert_eq!(
            k.bounce_sizes(ch, 4096, 5, 8192),
            STATUS_INVALID_PARAMETER_3
        );
        assert_eq!(k.bounce_sizes(ch, 0, 4096, 0), STATUS_INVALID_PARAMETER_4);
        assert_eq!(k.bounce_sizes(ch, 4096, 4096, 16384), STATUS_SUCCESS);
        k.cleanup(ch);
        after_enable(&fx, v, "VmbChannelInitSetBounceBufferSizes", |c| {
            k.bounce_sizes(c, 4096, 4096, 8192)
        });
        no_leaks(&fx.finish());
    });
}

#[test]
fn vmb_channel_allocate_bounce_buffer() {
    on_versions(Slot::VmbChannelAllocateBounceBuffer, |v| {
        let (fx, _) = rec_fx(v, true);
        let k = fx.k();
        let ch = fx.channel(ex(v));
        assert_eq!(k.bounce_sizes(ch, 4096, 4096, 16384), STATUS_SUCCESS);
        assert_eq!(k.enable(ch), STATUS_SUCCESS);
        assert_eq!(k.allocate_bounce(ch, 8192), STATUS_SUCCESS);
        assert_eq!(k.allocate_bounce(ch, 100), STATUS_INVALID_PARAMETER_2);
        assert_eq!(k.allocate_bounce(ch, 32768), STATUS_INVALID_PARAMETER_2);
        assert_eq!(
            k.allocate_bounce(null_mut(), 4096),
            STATUS_INVALID_PARAMETER_1
        );
        fx.close(ch);
        no_leaks(&fx.finish());
    });
}

// ------------------------------------------------------------------ V4

#[test]
fn vmb_channel_init_set_maximum_packet_count() {
    on_versions(Slot::VmbChannelInitSetMaximumPacketCount, |v| {
        let (fx, _) = rec_fx(v, true);
        let k = fx.k();
        let ch = fx.channel(ex(v));
        assert_eq!(k.max_packet_count(ch, 0), STATUS_INVALID_PARAMETER_2);
        assert_eq!(
            k.max_packet_count(ch, MAX_PACKET_COUNT + 1),
            STATUS_INVALID_PARAMETER_2
        );
        assert_eq!(k.max_packet_count(ch, 1), STATUS_SUCCESS);
        let p = k.packet_allocate(ch);
        assert!(!p.is_null());
        assert!(k.packet_allocate(ch).is_null());
        k.packet_free(p);
        k.cleanup(ch);
        after_enable(&fx, v, "VmbChannelInitSetMaximumPacketCount", |c| {
            k.max_packet_count(c, 4)
        });
        no_leaks(&fx.finish());
    });
}

#[test]
fn vmb_channel_create_gpadl_from_pfn_list() {
    on_versions(Slot::VmbChannelCreateGpadlFromPfnList, |v| {
        let (fx, _) = rec_fx(v, true);
        let k = fx.k();
        let ch = fx.open(ex(v));
        let buf = PageBuf::new(2);
        buf.fill(|i| (i / 4096) as u8 + 1);
        // SAFETY: the page buffer outlives the MDL.
        let mdl = unsafe { OwnedMdl::new(buf.ptr(), buf.len()) }.unwrap();
        let mut pfns = buf.pfns();
        pfns.reverse();
        let mut h = 0u32;
        assert_eq!(
            k.gpadl_from_pfns(ch, 0, pfns.as_mut_ptr(), 2, &mut h),
            STATUS_SUCCESS
        );
        let view = fx.offer.gpadl(h).unwrap();
        assert_eq!(view.len(), 8192);
        let mut b = [0u8; 2];
        view.read(4095, &mut b).unwrap();
        assert_eq!(b, [2, 1], "pages in PFN-list order");
        k.delete_gpadl(ch, h);
        let mut wild = [3u64];
        assert_eq!(
            k.gpadl_from_pfns(ch, 0, wild.as_mut_ptr(), 1, &mut h),
            STATUS_INVALID_PARAMETER_3
        );
        assert_eq!(
            k.gpadl_from_pfns(ch, 0, null_mut(), 1, &mut h),
            STATUS_INVALID_PARAMETER_3
        );
        assert_eq!(
            k.gpadl_from_pfns(ch, 0, pfns.as_mut_ptr(), 0, &mut h),
            STATUS_INVALID_PARAMETER_4
        );
        assert_eq!(
            k.gpadl_from_pfns(ch, 0, pfns.as_mut_ptr(), 2, null_mut()),
            STATUS_INVALID_PARAMETER_5
        );
        assert_eq!(
            k.gpadl_from_pfns(ch, 4, pfns.as_mut_ptr(), 2, &mut h),
            STATUS_INVALID_PARAMETER_2
        );
        fx.close(ch);
        drop(mdl);
        no_leaks(&fx.finish());
    });
}

// ------------------------------------------------------------------ V5

#[test]
fn vmb_channel_init_set_primary_channel() {
    on_versions(Slot::VmbChannelInitSetPrimaryChannel, |v| {
        let (fx, _) = rec_fx(v, true);
        let (sub_dev, sub_state) = Recorder::new(true);
        let _sub = fx.bus.offer_subchannel(&fx.offer, 1, Box::new(sub_dev));
        let k = fx.k();
        let primary = fx.open(true);
        let ch = fx.channel(true);
        assert_eq!(k.primary(ch, ch, 1), STATUS_INVALID_PARAMETER_2);
        assert_eq!(
            k.primary(ch, 0x40 as VMBCHANNEL, 1),
            STATUS_INVALID_PARAMETER_2
        );
        assert_eq!(k.primary(ch, primary, 0), STATUS_INVALID_PARAMETER_3);
        let other_bus = Vmbus::new(VmbusConfig::default());
        let other_offer = other_bus.offer(guid(1), guid(2), Box::new(Recorder::new(true).0));
        let mut foreign: VMBCHANNEL = null_mut();
        assert_eq!(
            k.allocate(other_offer.device_object(), 0, &mut foreign),
            STATUS_SUCCESS
        );
        assert_eq!(k.primary(ch, foreign, 1), STATUS_INVALID_PARAMETER_2);
        k.cleanup(foreign);
        assert_eq!(k.primary(ch, primary, 1), STATUS_SUCCESS);
        assert_eq!(k.enable(ch), STATUS_SUCCESS);
        let p = fx.packet(ch);
        assert_eq!(fx.send(p, b"subchan!", WAIT), STATUS_SUCCESS);
        assert!(wait_for(T, || sub_state.lock().unwrap().seen.len() == 1));
        assert!(wait_for(T, || completions(ch).len() == 1));
        fx.free(p);
        fx.close(ch);
        // A subchannel of a primary that is not open cannot open.
        let ch2 = fx.channel(true);
        assert_eq!(k.primary(ch2, primary, 1), STATUS_SUCCESS);
        fx.close(primary);
        assert_eq!(k.enable(ch2), STATUS_INVALID_DEVICE_STATE);
        k.cleanup(ch2);
        other_bus.shutdown().assert_clean();
        no_leaks(&fx.finish());
    });
}

#[test]
fn vmb_channel_initialize() {
    on_versions(Slot::VmbChannelInitialize, |v| {
        let (fx, _) = rec_fx(v, true);
        let k = fx.k();
        let size = k.sizeof_channel();
        let mut storage = vec![0xAAu64; size as usize / 8];
        let ch: VMBCHANNEL = storage.as_mut_ptr().cast();
        let dev = fx.offer.device_object();
        assert_eq!(
            k.initialize(dev, 0, ch, size - 8),
            STATUS_INVALID_PARAMETER_4
        );
        assert_eq!(
            k.initialize(dev, 0, null_mut(), size),
            STATUS_INVALID_PARAMETER_3
        );
        assert_eq!(
            k.initialize(null_mut(), 0, ch, size),
            STATUS_INVALID_PARAMETER_1
        );
        assert_eq!(k.initialize(dev, 1, ch, size), STATUS_NOT_SUPPORTED);
        assert_eq!(k.initialize(dev, 0, ch, size), STATUS_SUCCESS);
        assert_eq!(storage[0], 0);
        assert_eq!(k.initialize(dev, 0, ch, size), STATUS_INVALID_DEVICE_STATE);
        assert!(fx.has("VmbChannelInitialize", ViolationKind::WrongState));
        // The channel in caller storage works like an allocated one.
        let mut cbs = v1_callbacks();
        assert_eq!(k.state_callbacks(ch, &mut cbs), STATUS_SUCCESS);
        assert_eq!(
            k.process_callbacks(ch, Some(ev_packet), None),
            STATUS_SUCCESS
        );
        assert_eq!(k.enable(ch), STATUS_SUCCESS);
        let p = fx.packet(ch);
        assert_eq!(fx.send(p, b"storage!", WAIT), STATUS_SUCCESS);
        assert!(wait_for(T, || completions(ch).len() == 1));
        fx.free(p);
        fx.close(ch);
        no_leaks(&fx.finish());
    });
}

#[test]
fn vmb_channel_set_allowable_dpc_cpu_usage() {
    on_versions(Slot::VmbChannelSetAllowableDpcCpuUsage, |v| {
        let (fx, _) = rec_fx(v, true);
        let k = fx.k();
        let ch = fx.open(true);
        k.dpc_usage(ch, 50);
        k.dpc_usage(ch, 100);
        assert!(fx.bus.verifier().violations.is_empty());
        k.dpc_usage(ch, 0);
        k.dpc_usage(ch, 101);
        assert_eq!(
            fx.bus
                .verifier()
                .violations_of(ViolationKind::InvalidParameter)
                .count(),
            2
        );
        fx.close(ch);
        no_leaks(&fx.finish());
    });
}

#[test]
fn vmb_client_channel_init_set_target_processor_index() {
    on_versions(Slot::VmbClientChannelInitSetTargetProcessorIndex, |v| {
        let (fx, _) = rec_fx(v, true);
        let k = fx.k();
        let ch = fx.channel(true);
        assert_eq!(k.target_processor(ch, 3), STATUS_SUCCESS);
        assert_eq!(
            k.target_processor(ch, MAX_PROCESSORS),
            STATUS_INVALID_PARAMETER_2
        );
        k.cleanup(ch);
        after_enable(&fx, v, "VmbClientChannelInitSetTargetProcessorIndex", |c| {
            k.target_processor(c, 0)
        });
        no_leaks(&fx.finish());
    });
}

#[test]
fn vmb_sizeof_channel() {
    on_versions(Slot::VmbSizeofChannel, |v| {
        let (fx, _) = rec_fx(v, true);
        assert_eq!(fx.k().sizeof_channel(), SIZEOF_CHANNEL);
        // Too small a buffer for that size is rejected (see vmb_channel_initialize).
        let mut small = [0u64; 4];
        assert_eq!(
            fx.k()
                .initialize(fx.offer.device_object(), 0, small.as_mut_ptr().cast(), 32),
            STATUS_INVALID_PARAMETER_4
        );
        assert!(fx.has("VmbChannelInitialize", ViolationKind::InvalidParameter));
        no_leaks(&fx.finish());
    });
}

#[test]
fn vmb_channel_init_set_inline_packet_context_size() {
    on_versions(Slot::VmbChannelInitSetInlinePacketContextSize, |v| {
        let (fx, _) = rec_fx(v, true);
        let k = fx.k();
        let ch = fx.channel(true);
        let base = k.sizeof_packet(ch);
        assert_eq!(
            k.inline_context_size(ch, MAX_CONTEXT_SIZE + 1),
            STATUS_INVALID_PARAMETER_2
        );
        assert_eq!(k.inline_context_size(ch, 24), STATUS_SUCCESS);
        assert_eq!(k.sizeof_packet(ch), base + 24);
        k.cleanup(ch);
        after_enable(&fx, v, "VmbChannelInitSetInlinePacketContextSize", |c| {
            k.inline_context_size(c, 8)
        });
        no_leaks(&fx.finish());
    });
}

#[test]
fn vmb_packet_get_inline_packet_context_pointer() {
    on_versions(Slot::VmbPacketGetInlinePacketContextPointer, |v| {
        let (fx, _) = rec_fx(v, true);
        let k = fx.k();
        let ch = fx.channel(true);
        let plain = k.packet_allocate(ch);
        assert!(
            k.inline_context(plain).is_null(),
            "no inline context configured"
        );
        k.packet_free(plain);
        assert_eq!(k.inline_context_size(ch, 16), STATUS_SUCCESS);
        let p = k.packet_allocate(ch);
        let c = k.inline_context(p);
        assert!(!c.is_null());
        // SAFETY: 16 bytes of inline context, zeroed, writable while the packet lives.
        let bytes = unsafe { core::slice::from_raw_parts_mut(c.cast::<u8>(), 16) };
        assert!(bytes.iter().all(|b| *b == 0));
        bytes[0] = 1;
        // Caller-storage packets carry the context in their storage.
        let size = k.sizeof_packet(ch);
        let mut storage = vec![0xFFu64; size as usize / 8];
        let q: VMBPACKET = storage.as_mut_ptr().cast();
        assert_eq!(k.packet_initialize(ch, q, size), STATUS_SUCCESS);
        assert_eq!(k.inline_context(q), q.cast());
        k.packet_free(q);
        k.packet_free(p);
        assert!(k.inline_context(p).is_null());
        assert!(fx.has(
            "VmbPacketGetInlinePacketContextPointer",
            ViolationKind::UseAfterFree
        ));
        k.cleanup(ch);
        no_leaks(&fx.finish());
    });
}

#[test]
fn vmb_channel_init_set_process_packet_callbacks_ex() {
    on_versions(Slot::VmbChannelInitSetProcessPacketCallbacksEx, |v| {
        let (fx, st) = rec_fx(v, true);
        let k = fx.k();
        let ch = fx.channel(true);
        assert_eq!(
            k.process_callbacks_ex(ch, ch.cast(), None, None),
            STATUS_INVALID_PARAMETER_3
        );
        // The most recent registration wins: legacy after Ex.
        assert_eq!(
            k.process_callbacks_ex(ch, 0x1 as PVOID, Some(ev_packet_ex), Some(ev_batch_ex)),
            STATUS_SUCCESS
        );
        assert_eq!(
            k.process_callbacks(ch, Some(ev_packet), Some(ev_batch)),
            STATUS_SUCCESS
        );
        assert_eq!(k.enable(ch), STATUS_SUCCESS);
        fx.offer.host_send(b"legacy..", true).unwrap();
        assert!(wait_for(T, || st.lock().unwrap().completions.len() == 1));
        assert_eq!(with_log(ch, |l| l.ctx_errors), 0, "Ex callback not used");
        fx.close(ch);
        // Ex with its context.
        let ch = fx.channel(true);
        assert_eq!(
            k.process_callbacks_ex(ch, ch.cast(), Some(ev_packet_ex), Some(ev_batch_ex)),
            STATUS_SUCCESS
        );
        assert_eq!(k.enable(ch), STATUS_SUCCESS);
        fx.offer.host_send(b"ex-ctx..", true).unwrap();
        assert!(wait_for(T, || st.lock().unwrap().completions.len() == 2));
        assert!(wait_for(T, || count(ch, |e| matches!(e, Ev::Batch(1))) == 1));
        assert_eq!(with_log(ch, |l| l.ctx_errors), 0);
        fx.close(ch);
        after_enable(&fx, v, "VmbChannelInitSetProcessPacketCallbacksEx", |c| {
            k.process_callbacks_ex(c, null_mut(), Some(ev_packet_ex), None)
        });
        no_leaks(&fx.finish());
    });
}

#[test]
fn vmb_packet_set_completion_routine_ex() {
    on_versions(Slot::VmbPacketSetCompletionRoutineEx, |v| {
        let (fx, _) = rec_fx(v, true);
        let k = fx.k();
        let ch = fx.open(true);
        let p = k.packet_allocate(ch);
        let before = EX_DONE_CTX_ERRORS.load(std::sync::atomic::Ordering::SeqCst);
        k.set_routine_ex(p, p.cast(), Some(ev_done_ex));
        assert_eq!(fx.send(p, b"ex-route", WAIT), STATUS_SUCCESS);
        assert!(wait_for(T, || completions(ch).len() == 1));
        assert_eq!(completions(ch)[0].2, b"ex-route");
        assert_eq!(
            EX_DONE_CTX_ERRORS.load(std::sync::atomic::Ordering::SeqCst),
            before
        );
        k.packet_free(p);
        k.set_routine_ex(p, null_mut(), Some(ev_done_ex));
        assert!(fx.has(
            "VmbPacketSetCompletionRoutineEx",
            ViolationKind::UseAfterFree
        ));
        fx.close(ch);
        no_leaks(&fx.finish());
    });
}

/// Every one of the 57 slots has a test above.
#[test]
fn every_slot_is_covered() {
    let src = include_str!("kmcl_slots.rs");
    for s in Slot::ALL {
        let name = s.name();
        let mut snake = String::new();
        for (i, ch) in name.chars().enumerate() {
            if ch.is_ascii_uppercase() && i > 0 {
                snake.push('_');
            }
            snake.push(ch.to_ascii_lowercase());
        }
        assert!(
            src.contains(&format!("fn {snake}()")),
            "no test for {name} ({snake})"
        );
    }
}
