//! Bus-level behaviour: the interface query (versions, sizes, references), the verifier's leak
//! and violation tracking across a channel's life, deterministic shutdown, deadlock and drain
//! detection, and concurrent use of one channel.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod kmcl_support;
use core::ptr::null_mut;
use kmcl_support::*;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::Duration;

const WAIT: u32 = VMBUS_CHANNEL_FORMAT_FLAG_WAIT_FOR_COMPLETION;

#[test]
fn query_interface_versions_and_sizes() {
    let bus = Vmbus::new(VmbusConfig::new(InterfaceVersion::V3));
    let mut buf = [0xAAu8; 600];
    let p: *mut INTERFACE = buf.as_mut_ptr().cast();
    // SAFETY: `buf` is writable for 600 bytes in every call below.
    let q = |size: u16, version: u16| unsafe { bus.query_interface(p, size, version) };
    assert_eq!(q(416, 4), STATUS_NOT_SUPPORTED, "newer than the bus");
    assert_eq!(q(399, 3), STATUS_NOT_SUPPORTED, "too small for V3");
    assert_eq!(q(400, 0), STATUS_NOT_SUPPORTED);
    assert_eq!(q(600, 6), STATUS_NOT_SUPPORTED);
    assert!(
        buf.iter().all(|b| *b == 0xAA),
        "failed queries write nothing"
    );
    assert_eq!(q(488, 3), STATUS_SUCCESS, "a larger buffer is accepted");
    assert!(
        buf[400..].iter().all(|b| *b == 0xAA),
        "bytes past V3 untouched"
    );
    // SAFETY: the query wrote a complete V3 struct at the start of `buf`.
    let t: KMCL_CLIENT_INTERFACE_V3 =
        unsafe { p.cast::<KMCL_CLIENT_INTERFACE_V3>().read_unaligned() };
    assert_eq!(t.InterfaceHeader.Size, 400);
    assert_eq!(t.InterfaceHeader.Version, 3);
    assert!(t.VmbChannelAllocateBounceBuffer.is_some());
    assert_eq!(q(360, 1), STATUS_SUCCESS);
    // SAFETY: a null interface pointer is checked before any write.
    let null_status = unsafe { bus.query_interface(null_mut(), 488, 1) };
    assert_eq!(null_status, STATUS_INVALID_PARAMETER);
    assert_eq!(bus.verifier().interface_references, 2);
    assert!(bus.client_interface_v4().is_none());
    assert!(bus.client_interface_v5().is_none());
    let v2 = bus.client_interface_v2().unwrap();
    assert_eq!(v2.InterfaceHeader.Size, 384);
    assert_eq!(bus.verifier().interface_references, 3);
    let deref = t.InterfaceHeader.InterfaceDereference.unwrap();
    let reference = t.InterfaceHeader.InterfaceReference.unwrap();
    let ctx = t.InterfaceHeader.Context;
    assert_eq!(ctx, bus.interface_context());
    // SAFETY: releasing the references taken above (and one extra reference/release pair).
    unsafe {
        reference(ctx);
    }
    for _ in 0..4 {
        // SAFETY: releasing a reference taken above.
        unsafe { deref(ctx) };
    }
    assert_eq!(bus.verifier().interface_references, 0);
    bus.assert_clean();
    // One release too many.
    // SAFETY: the context is valid; the verifier flags the underflow.
    unsafe { deref(ctx) };
    assert!(
        bus.verifier()
            .has("InterfaceDereference", ViolationKind::ReferenceUnderflow)
    );
    // A context that is not an interface.
    // SAFETY: the emulator looks the value up; it never dereferences it.
    unsafe { deref(0x1234 as PVOID) };
    let r = bus.shutdown();
    assert!(r.has("InterfaceDereference", ViolationKind::InvalidHandle));
}

#[test]
fn v1_table_has_exactly_the_v1_slots() {
    let bus = Vmbus::new(VmbusConfig::new(InterfaceVersion::V1));
    let t = query(&bus);
    assert!(t.VmbPacketSetPointer.is_some());
    assert!(t.VmbChannelPacketGetClientContext.is_none());
    assert!(t.VmbPacketSetCompletionRoutineEx.is_none());
    assert_eq!(t.InterfaceHeader.Size, 360);
    assert_eq!(t.InterfaceHeader.Version, 1);
    release(&t);
    bus.shutdown().assert_clean();
}

#[test]
fn leaks_are_reported_and_shutdown_never_calls_back() {
    static DROPPED: AtomicBool = AtomicBool::new(false);
    struct Dev;
    impl HostDevice for Dev {
        fn on_packet(&mut self, ch: &mut HostChannel, p: &HostPacket) {
            if p.completion_requested() {
                ch.complete(p.transaction_id(), p.payload()).unwrap();
            }
        }
    }
    impl Drop for Dev {
        fn drop(&mut self) {
            DROPPED.store(true, Ordering::SeqCst);
        }
    }
    let fx = Fx::new(InterfaceVersion::V5, Box::new(Dev));
    let ch = fx.open(true);
    let _p = fx.k().packet_allocate(ch);
    let buf = PageBuf::new(1);
    let mut h = 0;
    assert_eq!(
        fx.k()
            .gpadl_from_buffer(ch, 0, buf.ptr().cast(), 4096, &mut h),
        STATUS_SUCCESS
    );
    let r = fx.bus.verifier();
    assert_eq!((r.live_channels, r.live_packets, r.live_gpadls), (1, 1, 1));
    assert!(!r.is_clean());
    let before = events(ch);
    release(&fx.t);
    let report = fx.bus.shutdown();
    assert_eq!(
        (
            report.live_channels,
            report.live_packets,
            report.live_gpadls
        ),
        (1, 1, 1)
    );
    assert_eq!(events(ch), before, "no callback during shutdown");
    assert!(
        DROPPED.load(Ordering::SeqCst),
        "host thread ended, device released"
    );
    // Every handle of the bus is gone: using one is reported globally, never dereferenced.
    let _ = unattributed_violations();
    K(k()).set_pointer(ch, null_mut());
}

static DISABLE_IN_CALLBACK: AtomicU32 = AtomicU32::new(0);
unsafe extern "system" fn disabling_packet(
    ch: VMBCHANNEL,
    pc: VMBPACKETCOMPLETION,
    _b: PVOID,
    _l: u32,
    _f: u32,
) {
    K(k()).disable(ch);
    K(k()).pause(ch);
    K(k()).complete(pc, null_mut(), 0);
    DISABLE_IN_CALLBACK.fetch_add(1, Ordering::SeqCst);
}

/// From a DISPATCH_LEVEL packet callback, a blocking call is refused for its IRQL first; from
/// a PASSIVE_LEVEL delivery on the channel's own passive worker it is refused as a deadlock.
#[test]
fn blocking_calls_from_callbacks_are_refused() {
    for passive in [false, true] {
        DISABLE_IN_CALLBACK.store(0, Ordering::SeqCst);
        let (fx, _) = rec_fx(InterfaceVersion::V1, true);
        let k = fx.k();
        let mut ch: VMBCHANNEL = null_mut();
        assert_eq!(
            k.allocate(fx.offer.device_object(), 0, &mut ch),
            STATUS_SUCCESS
        );
        assert_eq!(
            k.process_callbacks(ch, Some(disabling_packet), None),
            STATUS_SUCCESS
        );
        k.at_passive(ch, u8::from(passive));
        assert_eq!(k.enable(ch), STATUS_SUCCESS);
        fx.offer.host_send(b"trigger!", true).unwrap();
        assert!(wait_for(T, || DISABLE_IN_CALLBACK.load(Ordering::SeqCst) == 1));
        let kind = if passive {
            ViolationKind::WouldDeadlock
        } else {
            ViolationKind::IrqlTooHigh
        };
        assert!(
            fx.has("VmbChannelDisable", kind),
            "passive {passive}: {:?}",
            fx.violations()
        );
        assert!(fx.has("VmbChannelPause", kind), "{:?}", fx.violations());
        if !passive {
            let v = fx
                .violations()
                .into_iter()
                .find(|v| v.kind == ViolationKind::IrqlTooHigh)
                .unwrap();
            let irql = v.irql.unwrap();
            assert_eq!(
                (irql.current, irql.required),
                (vmbus_kmcl::Irql::DISPATCH, vmbus_kmcl::Irql::PASSIVE)
            );
        }
        // The channel still works and closes normally.
        assert!(fx.offer.is_open());
        fx.close(ch);
        let r = fx.finish();
        assert_eq!(r.violations.len(), 2, "{r}");
    }
}

#[test]
fn uncompleted_incoming_packets_are_force_released_on_disable() {
    let mut cfg = VmbusConfig::new(InterfaceVersion::V5);
    cfg.drain_timeout = Duration::from_millis(100);
    let (dev, _) = Recorder::new(true);
    let fx = Fx::with_config(cfg, Box::new(dev));
    let k = fx.k();
    let ch = fx.channel(true);
    with_log(ch, |l| l.mode = Mode::Keep);
    assert_eq!(k.enable(ch), STATUS_SUCCESS);
    fx.offer.host_send(b"forgotten", true).unwrap();
    assert!(wait_for(T, || with_log(ch, |l| l.kept.len()) == 1));
    assert_eq!(fx.bus.verifier().uncompleted_incoming, 1);
    let pc = with_log(ch, |l| l.kept[0]) as VMBPACKETCOMPLETION;
    k.disable(ch);
    assert!(fx.has("VmbChannelDisable", ViolationKind::Leak));
    assert_eq!(fx.bus.verifier().uncompleted_incoming, 0);
    // Completing it now is a use after free, caught.
    k.complete(pc, null_mut(), 0);
    assert!(fx.has("VmbChannelPacketComplete", ViolationKind::UseAfterFree));
    k.cleanup(ch);
    let r = fx.finish();
    assert_eq!(r.live_channels + r.uncompleted_incoming, 0);
}

static DEFER_AFTER_SUSPEND: AtomicU32 = AtomicU32::new(0);
static KEPT: std::sync::Mutex<Vec<usize>> = std::sync::Mutex::new(Vec::new());
unsafe extern "system" fn keep_packet(
    _ch: VMBCHANNEL,
    pc: VMBPACKETCOMPLETION,
    _b: PVOID,
    _l: u32,
    _f: u32,
) {
    KEPT.lock().unwrap().push(pc as usize);
}
unsafe extern "system" fn suspend_defers(_ch: VMBCHANNEL) {
    // Deferring from Suspend: the re-delivery would run after the guarantee "no more packet
    // callbacks" — refused and reported; then complete for real.
    let pcs: Vec<usize> = KEPT.lock().unwrap().drain(..).collect();
    for pc in pcs {
        K(k()).defer(pc as VMBPACKETCOMPLETION);
        K(k()).complete(pc as VMBPACKETCOMPLETION, null_mut(), 0);
        DEFER_AFTER_SUSPEND.fetch_add(1, Ordering::SeqCst);
    }
}

#[test]
fn callbacks_that_would_run_after_close_are_suppressed() {
    let (fx, st) = rec_fx(InterfaceVersion::V1, true);
    let k = fx.k();
    let mut ch: VMBCHANNEL = null_mut();
    assert_eq!(
        k.allocate(fx.offer.device_object(), 0, &mut ch),
        STATUS_SUCCESS
    );
    assert_eq!(
        k.process_callbacks(ch, Some(keep_packet), None),
        STATUS_SUCCESS
    );
    let mut cbs = VMB_CHANNEL_STATE_CHANGE_CALLBACKS {
        EvtChannelSuspend: Some(suspend_defers),
        ..VMB_CHANNEL_STATE_CHANGE_CALLBACKS::INIT
    };
    assert_eq!(k.state_callbacks(ch, &mut cbs), STATUS_SUCCESS);
    assert_eq!(k.enable(ch), STATUS_SUCCESS);
    fx.offer.host_send(b"pending.", true).unwrap();
    assert!(wait_for(T, || KEPT.lock().unwrap().len() == 1));
    k.disable(ch);
    assert_eq!(DEFER_AFTER_SUSPEND.load(Ordering::SeqCst), 1);
    assert!(fx.has(
        "VmbChannelPacketDeferToPassive",
        ViolationKind::CallbackAfterClose
    ));
    assert_eq!(st.lock().unwrap().closes, 1);
    k.cleanup(ch);
    let r = fx.finish();
    assert_eq!(r.violations.len(), 1, "{r}");
}

unsafe extern "system" fn closed_disables(ch: VMBCHANNEL) {
    K(k()).disable(ch);
}

#[test]
fn rescind_then_disable_from_the_closed_callback() {
    let (fx, _) = rec_fx(InterfaceVersion::V1, true);
    let k = fx.k();
    let mut ch: VMBCHANNEL = null_mut();
    assert_eq!(
        k.allocate(fx.offer.device_object(), 0, &mut ch),
        STATUS_SUCCESS
    );
    assert_eq!(
        k.process_callbacks(ch, Some(ev_packet), None),
        STATUS_SUCCESS
    );
    let mut cbs = VMB_CHANNEL_STATE_CHANGE_CALLBACKS {
        EvtChannelClosed: Some(closed_disables),
        ..VMB_CHANNEL_STATE_CHANGE_CALLBACKS::INIT
    };
    assert_eq!(k.state_callbacks(ch, &mut cbs), STATUS_SUCCESS);
    assert_eq!(k.enable(ch), STATUS_SUCCESS);
    fx.offer.rescind();
    assert!(!fx.offer.is_open());
    k.cleanup(ch);
    fx.finish().assert_clean();
}

#[test]
fn concurrent_senders_on_one_channel() {
    let (vsp, control) = EchoVsp::new();
    let fx = Fx::new(InterfaceVersion::V5, Box::new(vsp));
    let ch = fx.open(true);
    let chv = ch as usize;
    let threads: Vec<_> = (0..4u64)
        .map(|t| {
            std::thread::spawn(move || {
                let k = K(k());
                let ch = chv as VMBCHANNEL;
                for i in 0..100u64 {
                    let mut req = (t << 32 | i).to_le_bytes();
                    let mut resp = [0u8; 8];
                    let mut len = 8u32;
                    let mut timeout: i64 = -50_000_000;
                    let s = k.sync(
                        ch,
                        req.as_mut_ptr().cast(),
                        8,
                        null_mut(),
                        WAIT,
                        resp.as_mut_ptr().cast(),
                        &mut len,
                        (&raw mut timeout).cast(),
                    );
                    assert_eq!(s, STATUS_SUCCESS);
                    assert_eq!(resp, req);
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    assert_eq!(control.stats().packets, 400);
    fx.close(ch);
    fx.finish().assert_clean();
}

#[test]
fn violations_without_a_bus_are_kept_globally() {
    std::thread::spawn(|| {
        let _ = unattributed_violations();
        let k = K(k());
        k.set_pointer(0x4242_0000 as VMBCHANNEL, null_mut());
        let v = unattributed_violations();
        assert!(v.iter().any(|x| x.handle == 0x4242_0000
            && x.kind == ViolationKind::InvalidHandle
            && x.slot == "VmbChannelSetPointer"));
    })
    .join()
    .unwrap();
}

#[test]
fn pooled_packets_reuse_their_storage_without_free() {
    // The safe layer's packet pool: VmbPacketInitialize in fixed slots, re-initialized after
    // each completion, never VmbPacketFree'd; the storage may later hold a channel.
    let (vsp, _) = EchoVsp::new();
    let fx = Fx::new(InterfaceVersion::V5, Box::new(vsp));
    let k = fx.k();
    let ch = fx.open(true);
    let size = k.sizeof_packet(ch);
    let words = (size as usize).max(SIZEOF_CHANNEL as usize) / 8 + 1;
    let mut slot = vec![0u64; words];
    let p: VMBPACKET = slot.as_mut_ptr().cast();
    for i in 0..20u64 {
        assert_eq!(k.packet_initialize(ch, p, size), STATUS_SUCCESS);
        k.set_routine(p, Some(ev_done));
        assert_eq!(fx.send(p, &i.to_le_bytes(), WAIT), STATUS_SUCCESS);
        assert!(wait_for(T, || completions(ch).len()
            == usize::try_from(i).unwrap() + 1));
    }
    fx.close(ch);
    assert_eq!(fx.bus.verifier().live_packets, 0);
    // The same storage now holds a channel.
    let storage: VMBCHANNEL = slot.as_mut_ptr().cast();
    assert_eq!(
        k.initialize(fx.offer.device_object(), 0, storage, SIZEOF_CHANNEL),
        STATUS_SUCCESS
    );
    k.cleanup(storage);
    fx.finish().assert_clean();
}

#[test]
fn public_types_are_thread_safe() {
    fn check<T: Send + Sync>() {}
    check::<Vmbus>();
    check::<Offer>();
    check::<EchoControl>();
    check::<GpadlView>();
    check::<OwnedMdl<'static>>();
    check::<HostWaker>();
    check::<VerifierReport>();
}
