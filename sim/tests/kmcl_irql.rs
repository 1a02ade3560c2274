//! The IRQL model: every slot called above its IRQL (`Slot::max_irql`) is recorded as
//! `IrqlTooHigh` with both levels and refused without side effects; the `_When_` rule of
//! `VmbChannelSendSynchronousRequest`; the IRQL of every callback; a raw driver that makes a
//! PASSIVE_LEVEL-only call from its DISPATCH_LEVEL packet callback.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod kmcl_support;
use core::ptr::null_mut;
use kmcl_support::*;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU32, Ordering};
use vmbus_kmcl::Irql;

const WAIT: u32 = VMBUS_CHANNEL_FORMAT_FLAG_WAIT_FOR_COMPLETION;
const REFUSED: NTSTATUS = STATUS_INVALID_DEVICE_STATE;

/// The level a call of `slot` is made at in [`every_slot_refuses_calls_above_its_irql`]: one
/// above what the slot allows (DISPATCH_LEVEL for PASSIVE_LEVEL slots, as from a DPC).
fn too_high(slot: Slot) -> Irql {
    if slot.max_irql() == Irql::PASSIVE {
        Irql::DISPATCH
    } else {
        Irql(3)
    }
}

fn irql_violations(fx: &Fx, slot: Slot) -> Vec<Violation> {
    fx.violations()
        .into_iter()
        .filter(|v| v.kind == ViolationKind::IrqlTooHigh && v.slot == slot.name())
        .collect()
}

/// Calls `slot` through the raw table, with live handles, at `irql`, and checks that it was
/// refused as the real call would fail (status-returning slots: STATUS_INVALID_DEVICE_STATE;
/// others: nothing written, null or 0 returned).
#[allow(clippy::too_many_lines)]
fn call_refused(fx: &Fx, slot: Slot, ch: VMBCHANNEL, idle: VMBCHANNEL, p: VMBPACKET, pc: usize) {
    let k = fx.k();
    let pc = pc as VMBPACKETCOMPLETION;
    let mut buf = [7u8; 8];
    let b: PVOID = buf.as_mut_ptr().cast();
    let page = PageBuf::new(1);
    let mut out32 = 0xAAAA_u32;
    let _raised = irql::raise(too_high(slot));
    match slot {
        Slot::VmbChannelAllocate => {
            let mut out: VMBCHANNEL = null_mut();
            assert_eq!(k.allocate(fx.offer.device_object(), 0, &mut out), REFUSED);
            assert!(out.is_null());
        }
        Slot::VmbChannelCleanup => k.cleanup(ch),
        Slot::VmbChannelCreateGpadlFromBuffer => {
            assert_eq!(
                k.gpadl_from_buffer(ch, 0, page.ptr().cast(), 4096, &mut out32),
                REFUSED
            );
        }
        Slot::VmbChannelCreateGpadlFromMdl => {
            assert_eq!(
                k.gpadl_from_mdl(ch, 0, null_mut(), 0, 4096, &mut out32),
                REFUSED
            );
        }
        Slot::VmbChannelDeleteGpadl => k.delete_gpadl(ch, 1),
        Slot::VmbChannelDisable => k.disable(ch),
        Slot::VmbChannelEnable => assert_eq!(k.enable(idle), REFUSED),
        Slot::VmbChannelGetInterfaceInstance => {
            let mut g = GUID::default();
            k.interface_instance(ch, &mut g);
            assert_eq!(g, GUID::default());
        }
        Slot::VmbChannelGetMmioSpace => {
            let (mut a, mut s) = (7u64, 7u64);
            k.mmio(ch, &mut a, &mut s);
            assert_eq!((a, s), (7, 7));
        }
        Slot::VmbChannelGetPointer => assert!(k.get_pointer(ch).is_null()),
        Slot::VmbChannelInitSetClientContextSize => {
            assert_eq!(k.client_context_size(idle, 8), REFUSED);
        }
        Slot::VmbChannelInitSetFlags => assert_eq!(k.init_flags(idle, 0), REFUSED),
        Slot::VmbChannelInitSetFriendlyName => {
            let mut name: Vec<u16> = "x".encode_utf16().collect();
            let s = UNICODE_STRING {
                Length: 2,
                MaximumLength: 2,
                Buffer: name.as_mut_ptr(),
            };
            assert_eq!(k.friendly_name(idle, &s), REFUSED);
        }
        Slot::VmbChannelInitSetMaximumExternalData => {
            assert_eq!(k.max_external(idle, 4096, 1), REFUSED);
        }
        Slot::VmbChannelInitSetMaximumPacketSize => {
            assert_eq!(k.max_packet_size(idle, 256), REFUSED);
        }
        Slot::VmbChannelInitSetProcessPacketCallbacks => {
            assert_eq!(k.process_callbacks(idle, Some(ev_packet), None), REFUSED);
        }
        Slot::VmbChannelInitSetStateChangeCallbacks => {
            let mut cbs = v1_callbacks();
            assert_eq!(k.state_callbacks(idle, &mut cbs), REFUSED);
        }
        Slot::VmbChannelPacketComplete => k.complete(pc, null_mut(), 0),
        Slot::VmbChannelPacketDeferToPassive => k.defer(pc),
        Slot::VmbChannelPacketFail => k.fail(pc),
        Slot::VmbChannelPacketGetExternalData => {
            let mut mdl: PMDL = null_mut();
            assert_eq!(k.external_data(pc, 0, &mut mdl), REFUSED);
            assert!(mdl.is_null());
        }
        Slot::VmbChannelPause => k.pause(ch),
        Slot::VmbChannelSendSynchronousRequest => {
            let status = k.sync(ch, b, 8, null_mut(), 0, null_mut(), null_mut(), null_mut());
            assert_eq!(status, REFUSED);
        }
        Slot::VmbChannelSetIncomingProcessingAtPassive => k.at_passive(idle, 1),
        Slot::VmbChannelSetInterruptLatency => {
            let mut old = 0xAAAA_u16;
            assert_eq!(k.latency(ch, 5, &mut old), REFUSED);
            assert_eq!(old, 0xAAAA);
        }
        Slot::VmbChannelSetPointer => k.set_pointer(ch, 0x5678 as PVOID),
        Slot::VmbChannelSetTransactionQuota => k.quota(ch, 1),
        Slot::VmbChannelSizeofPacket => assert_eq!(k.sizeof_packet(ch), 0),
        Slot::VmbChannelStart => k.start(ch),
        Slot::VmbClientChannelInitSetRingBufferPageCount => {
            assert_eq!(k.ring_pages(idle, 4, 4), REFUSED);
        }
        Slot::VmbClientChannelInitSetTargetPnp => {
            let g = guid(1);
            assert_eq!(k.target_pnp(idle, &g, core::ptr::null(), None), REFUSED);
        }
        Slot::VmbPacketAllocate => assert!(k.packet_allocate(ch).is_null()),
        Slot::VmbPacketFree => k.packet_free(p),
        Slot::VmbPacketGetChannel => assert!(k.packet_channel(p).is_null()),
        Slot::VmbPacketGetPointer => assert!(k.packet_get_pointer(p).is_null()),
        Slot::VmbPacketInitialize => {
            let storage = PageBuf::new(1);
            assert_eq!(k.packet_initialize(ch, storage.ptr().cast(), 4096), REFUSED);
        }
        Slot::VmbPacketSend => assert_eq!(k.send(p, b, 8, null_mut(), WAIT), REFUSED),
        Slot::VmbPacketSendWithExternalMdl => {
            assert_eq!(k.send_mdl(p, b, 8, null_mut(), 0, 0, 0), REFUSED);
        }
        Slot::VmbPacketSendWithExternalPfns => {
            assert_eq!(k.send_pfns(p, b, 8, null_mut(), 0, 0), REFUSED);
        }
        Slot::VmbPacketSetCompletionRoutine => k.set_routine(p, None),
        Slot::VmbPacketSetPointer => k.packet_set_pointer(p, 0x9999 as PVOID),
        Slot::VmbChannelPacketGetClientContext => assert!(k.client_context(pc).is_null()),
        Slot::VmbChannelGetTargetDeviceObject => {
            let mut d: PDEVICE_OBJECT = 0x10 as PDEVICE_OBJECT;
            k.target_device(ch, &mut d);
            assert_eq!(d as usize, 0x10);
        }
        Slot::VmbChannelGetParentDeviceObject => {
            let mut d: PDEVICE_OBJECT = 0x10 as PDEVICE_OBJECT;
            k.parent_device(ch, &mut d);
            assert_eq!(d as usize, 0x10);
        }
        Slot::VmbChannelInitSetBounceBufferSizes => {
            assert_eq!(k.bounce_sizes(idle, 4096, 4096, 8192), REFUSED);
        }
        Slot::VmbChannelAllocateBounceBuffer => assert_eq!(k.allocate_bounce(ch, 4096), REFUSED),
        Slot::VmbChannelInitSetMaximumPacketCount => {
            assert_eq!(k.max_packet_count(idle, 8), REFUSED);
        }
        Slot::VmbChannelCreateGpadlFromPfnList => {
            let mut pfns = page.pfns();
            assert_eq!(
                k.gpadl_from_pfns(ch, 0, pfns.as_mut_ptr(), 1, &mut out32),
                REFUSED
            );
        }
        Slot::VmbChannelInitSetPrimaryChannel => assert_eq!(k.primary(idle, ch, 1), REFUSED),
        Slot::VmbChannelInitialize => {
            let storage = PageBuf::new(1);
            assert_eq!(
                k.initialize(fx.offer.device_object(), 0, storage.ptr().cast(), 4096),
                REFUSED
            );
        }
        Slot::VmbChannelSetAllowableDpcCpuUsage => k.dpc_usage(ch, 50),
        Slot::VmbClientChannelInitSetTargetProcessorIndex => {
            assert_eq!(k.target_processor(idle, 0), REFUSED);
        }
        Slot::VmbSizeofChannel => assert_eq!(k.sizeof_channel(), 0),
        Slot::VmbChannelInitSetInlinePacketContextSize => {
            assert_eq!(k.inline_context_size(idle, 8), REFUSED);
        }
        Slot::VmbPacketGetInlinePacketContextPointer => assert!(k.inline_context(p).is_null()),
        Slot::VmbChannelInitSetProcessPacketCallbacksEx => {
            assert_eq!(
                k.process_callbacks_ex(idle, null_mut(), Some(ev_packet_ex), None),
                REFUSED
            );
        }
        Slot::VmbPacketSetCompletionRoutineEx => k.set_routine_ex(p, null_mut(), None),
    }
    assert_eq!(out32, 0xAAAA, "{slot}: nothing written");
}

/// Each of the 57 slots, called one level above its requirement with live handles: one
/// `IrqlTooHigh` violation naming the slot and both levels, the refusal the real call would
/// give, and no side effect (the channel, its packet and its kept incoming packet are all as
/// before, and nothing else is reported).
#[test]
fn every_slot_refuses_calls_above_its_irql() {
    let (fx, host) = rec_fx(InterfaceVersion::V5, true);
    let k = fx.k();
    let ch = fx.open(true);
    with_log(ch, |l| l.mode = Mode::Keep);
    k.set_pointer(ch, 0x1234 as PVOID);
    let mut idle: VMBCHANNEL = null_mut();
    assert_eq!(
        k.allocate(fx.offer.device_object(), 0, &mut idle),
        STATUS_SUCCESS
    );
    let p = fx.packet(ch);
    k.packet_set_pointer(p, 0x4321 as PVOID);
    fx.offer.host_send(b"kept-pkt", true).unwrap();
    assert!(wait_for(T, || with_log(ch, |l| l.kept.len()) == 1));
    let pc = with_log(ch, |l| l.kept[0]);
    let before = fx.bus.verifier();

    for slot in Slot::ALL {
        call_refused(&fx, slot, ch, idle, p, pc);
        let found = irql_violations(&fx, slot);
        assert_eq!(found.len(), 1, "{slot}: {found:?}");
        let mismatch = found[0].irql.expect("both levels recorded");
        assert_eq!(mismatch.current, too_high(slot), "{slot}");
        assert_eq!(mismatch.required, slot.max_irql(), "{slot}");
    }

    // Nothing changed.
    let after = fx.bus.verifier();
    assert_eq!(
        (
            after.live_channels,
            after.live_packets,
            after.live_gpadls,
            after.uncompleted_incoming
        ),
        (
            before.live_channels,
            before.live_packets,
            before.live_gpadls,
            before.uncompleted_incoming
        )
    );
    assert_eq!(after.live_channels, 2);
    assert_eq!(after.uncompleted_incoming, 1);
    assert_eq!(after.violations.len(), Slot::ALL.len(), "{after}");
    assert!(fx.offer.is_open());
    assert_eq!(k.get_pointer(ch) as usize, 0x1234);
    assert_eq!(k.packet_get_pointer(p) as usize, 0x4321);
    assert!(host.lock().unwrap().seen.is_empty(), "nothing was sent");

    // At PASSIVE_LEVEL the same handles work.
    k.complete(pc as VMBPACKETCOMPLETION, null_mut(), 0);
    assert_eq!(fx.send(p, b"now-sent", WAIT), STATUS_SUCCESS);
    assert!(wait_for(T, || completions(ch).len() == 1));
    fx.free(p);
    k.cleanup(idle);
    fx.close(ch);
    let report = fx.finish();
    assert!(
        report
            .violations
            .iter()
            .all(|v| v.kind == ViolationKind::IrqlTooHigh),
        "{report}"
    );
}

/// The violation goes to the bus that owns the handle, not to the bus the thread used last.
#[test]
fn violations_go_to_the_bus_owning_the_handle() {
    let (a, _) = rec_fx(InterfaceVersion::V5, true);
    let ch = a.open(true);
    let b = Vmbus::new(VmbusConfig::default()); // the thread's current bus now
    {
        let _dispatch = irql::raise(Irql::DISPATCH);
        a.k().disable(ch);
    }
    let found = irql_violations(&a, Slot::VmbChannelDisable);
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].handle, ch as usize);
    b.assert_clean();
    a.close(ch);
    assert_eq!(a.finish().violations.len(), 1);
}

/// APC_LEVEL is already too high for a PASSIVE_LEVEL slot.
#[test]
fn apc_level_is_above_passive_slots() {
    let (fx, _) = rec_fx(InterfaceVersion::V1, true);
    let ch = fx.open(false);
    {
        let _apc = irql::raise(Irql::APC);
        fx.k().disable(ch);
        assert_eq!(
            fx.k().sizeof_packet(ch) % 8,
            0,
            "DISPATCH_LEVEL slots still work"
        );
    }
    assert!(fx.offer.is_open());
    assert_eq!(irql_violations(&fx, Slot::VmbChannelDisable).len(), 1);
    assert_eq!(irql_violations(&fx, Slot::VmbChannelSizeofPacket).len(), 0);
    fx.close(ch);
    assert_eq!(fx.finish().violations.len(), 1);
}

/// `_When_`: a synchronous request may run at DISPATCH_LEVEL only with a non-null zero timeout
/// and without `WAIT_FOR_COMPLETION`.
#[test]
fn synchronous_request_irql_follows_the_when_rule() {
    let (fx, _) = rec_fx(InterfaceVersion::V1, true);
    let k = fx.k();
    let ch = fx.open(false);
    let mut data = *b"syncsync";
    let b: PVOID = data.as_mut_ptr().cast();
    let mut zero: i64 = 0;
    let mut relative: i64 = -10_000_000;
    let _dispatch = irql::raise(Irql::DISPATCH);
    let no_wait = k.sync(
        ch,
        b,
        8,
        null_mut(),
        0,
        null_mut(),
        null_mut(),
        (&raw mut zero).cast(),
    );
    assert_ne!(no_wait, REFUSED);
    assert_eq!(
        irql_violations(&fx, Slot::VmbChannelSendSynchronousRequest).len(),
        0
    );
    for (flags, timeout) in [
        (WAIT, (&raw mut zero).cast::<LARGE_INTEGER>()),
        (0, null_mut()),
        (0, (&raw mut relative).cast()),
    ] {
        let status = k.sync(ch, b, 8, null_mut(), flags, null_mut(), null_mut(), timeout);
        assert_eq!(status, REFUSED);
    }
    let found = irql_violations(&fx, Slot::VmbChannelSendSynchronousRequest);
    assert_eq!(found.len(), 3);
    assert!(
        found
            .iter()
            .all(|v| v.irql.unwrap().required == Irql::PASSIVE)
    );
    drop(_dispatch);
    fx.close(ch);
    assert_eq!(fx.finish().violations.len(), 3);
}

/// `raise` is `KeRaiseIrql`: it never lowers, and dropping the guard restores the level.
#[test]
fn raise_and_lower() {
    assert_eq!(irql::current(), Irql::PASSIVE);
    let dispatch = irql::raise(Irql::DISPATCH);
    assert_eq!(dispatch.previous(), Irql::PASSIVE);
    {
        let apc = irql::raise(Irql::APC);
        assert_eq!(irql::current(), Irql::DISPATCH, "raising never lowers");
        assert_eq!(apc.previous(), Irql::DISPATCH);
    }
    assert_eq!(irql::current(), Irql::DISPATCH);
    drop(dispatch);
    assert_eq!(irql::current(), Irql::PASSIVE);
    assert_eq!(irql::at(Irql::DISPATCH, irql::current), Irql::DISPATCH);
    // The library's probe is the model once a bus exists.
    let bus = Vmbus::new(VmbusConfig::default());
    assert_eq!(
        irql::at(Irql::DISPATCH, vmbus_kmcl::irql::current_irql),
        Irql::DISPATCH
    );
    assert!(vmbus_kmcl::PassiveLevel::check().is_some());
    bus.assert_clean();
}

// ---- callbacks at their IRQL -----------------------------------------------------------

/// What each callback saw: (callback, the model's IRQL, the library probe's IRQL).
static SEEN: Mutex<Vec<(&str, Irql, Irql)>> = Mutex::new(Vec::new());
static DEFERRED: AtomicU32 = AtomicU32::new(0);

fn seen(name: &'static str) {
    SEEN.lock()
        .unwrap()
        .push((name, irql::current(), vmbus_kmcl::irql::current_irql()));
}

unsafe extern "system" fn irql_packet(
    _ch: VMBCHANNEL,
    pc: VMBPACKETCOMPLETION,
    _b: PVOID,
    _l: u32,
    _f: u32,
) {
    let k = K(k());
    if DEFERRED.fetch_add(1, Ordering::SeqCst) == 0 {
        seen("packet");
        k.defer(pc);
    } else {
        seen("packet-redelivered");
        k.complete(pc, null_mut(), 0);
    }
}
unsafe extern "system" fn irql_batch(_ch: VMBCHANNEL, _n: u32) {
    seen("processing-complete");
}
unsafe extern "system" fn irql_done(_p: VMBPACKET, _s: NTSTATUS, _b: PVOID, _l: u32) {
    seen("completion");
}
unsafe extern "system" fn irql_opened(_ch: VMBCHANNEL) -> NTSTATUS {
    seen("opened");
    STATUS_SUCCESS
}
unsafe extern "system" fn irql_closed(_ch: VMBCHANNEL) {
    seen("closed");
}
unsafe extern "system" fn irql_suspend(_ch: VMBCHANNEL) {
    seen("suspend");
}
unsafe extern "system" fn irql_started(_ch: VMBCHANNEL) {
    seen("started");
}
unsafe extern "system" fn irql_post_started(_ch: VMBCHANNEL) {
    seen("post-started");
}

/// Packet, processing-complete and completion callbacks run at DISPATCH_LEVEL on the callback
/// thread; a deferred packet comes back at PASSIVE_LEVEL; state callbacks run at PASSIVE_LEVEL,
/// also when the callback thread runs them for a host rescind. The library's probe agrees.
#[test]
fn callbacks_run_at_their_irql() {
    let (fx, _) = rec_fx(InterfaceVersion::V1, true);
    let k = fx.k();
    let mut ch: VMBCHANNEL = null_mut();
    assert_eq!(
        k.allocate(fx.offer.device_object(), 0, &mut ch),
        STATUS_SUCCESS
    );
    let mut cbs = VMB_CHANNEL_STATE_CHANGE_CALLBACKS {
        EvtChannelOpened: Some(irql_opened),
        EvtChannelClosed: Some(irql_closed),
        EvtChannelSuspend: Some(irql_suspend),
        EvtChannelStarted: Some(irql_started),
        EvtChannelPostStarted: Some(irql_post_started),
        ..VMB_CHANNEL_STATE_CHANGE_CALLBACKS::INIT
    };
    assert_eq!(k.state_callbacks(ch, &mut cbs), STATUS_SUCCESS);
    assert_eq!(
        k.process_callbacks(ch, Some(irql_packet), Some(irql_batch)),
        STATUS_SUCCESS
    );
    assert_eq!(k.enable(ch), STATUS_SUCCESS);
    let p = k.packet_allocate(ch);
    k.set_routine(p, Some(irql_done));
    let mut data = *b"to-host!";
    assert_eq!(
        k.send(p, data.as_mut_ptr().cast(), 8, null_mut(), WAIT),
        STATUS_SUCCESS
    );
    fx.offer.host_send(b"to-guest", true).unwrap();
    let has = |name: &str| SEEN.lock().unwrap().iter().any(|s| s.0 == name);
    assert!(wait_for(T, || has("completion")
        && has("packet-redelivered")
        && has("processing-complete")));
    fx.offer.rescind();
    assert!(wait_for(T, || has("closed")));
    k.packet_free(p);
    k.disable(ch);
    k.cleanup(ch);
    fx.finish().assert_clean();

    let seen = SEEN.lock().unwrap().clone();
    for (name, model, probe) in &seen {
        let expected = match *name {
            "packet" | "completion" => Irql::DISPATCH,
            "processing-complete" => *model, // on the callback thread or the passive worker
            _ => Irql::PASSIVE,
        };
        assert_eq!(*model, expected, "{name}: {seen:?}");
        assert_eq!(probe, model, "{name}: the library's probe is the model");
    }
    assert!(
        seen.iter()
            .any(|s| s.0 == "processing-complete" && s.1 == Irql::DISPATCH)
    );
    for name in ["opened", "started", "post-started", "suspend", "closed"] {
        assert!(seen.iter().any(|s| s.0 == name), "{name}: {seen:?}");
    }
}

// ---- a PASSIVE_LEVEL-only call from a packet callback -----------------------------------

static BOUNCE_STATUS: Mutex<Vec<(Irql, NTSTATUS)>> = Mutex::new(Vec::new());

/// A driver bug: allocates a bounce buffer (PASSIVE_LEVEL: it blocks) from its packet
/// callback.
unsafe extern "system" fn bouncing_packet(
    ch: VMBCHANNEL,
    pc: VMBPACKETCOMPLETION,
    _b: PVOID,
    _l: u32,
    _f: u32,
) {
    let k = K(k());
    let status = k.allocate_bounce(ch, 4096);
    BOUNCE_STATUS
        .lock()
        .unwrap()
        .push((irql::current(), status));
    k.complete(pc, null_mut(), 0);
}

/// The call is caught (and refused) from a DISPATCH_LEVEL delivery, and allowed from a
/// PASSIVE_LEVEL one (incoming processing at passive).
#[test]
fn passive_only_call_from_packet_callback_is_caught() {
    for at_passive in [false, true] {
        BOUNCE_STATUS.lock().unwrap().clear();
        let (fx, _) = rec_fx(InterfaceVersion::V3, true);
        let k = fx.k();
        let mut ch: VMBCHANNEL = null_mut();
        assert_eq!(
            k.allocate(fx.offer.device_object(), 0, &mut ch),
            STATUS_SUCCESS
        );
        assert_eq!(
            k.process_callbacks(ch, Some(bouncing_packet), None),
            STATUS_SUCCESS
        );
        k.at_passive(ch, u8::from(at_passive));
        assert_eq!(k.enable(ch), STATUS_SUCCESS);
        fx.offer.host_send(b"trigger!", true).unwrap();
        assert!(wait_for(T, || BOUNCE_STATUS.lock().unwrap().len() == 1));
        let (level, status) = BOUNCE_STATUS.lock().unwrap()[0];
        let caught = irql_violations(&fx, Slot::VmbChannelAllocateBounceBuffer);
        if at_passive {
            assert_eq!((level, status), (Irql::PASSIVE, STATUS_SUCCESS));
            assert!(caught.is_empty());
        } else {
            assert_eq!((level, status), (Irql::DISPATCH, REFUSED));
            assert_eq!(caught.len(), 1);
            assert!(caught[0].message.contains("DISPATCH_LEVEL"), "{caught:?}");
        }
        fx.close(ch);
        let report = fx.finish();
        assert_eq!(
            report.violations.len(),
            usize::from(!at_passive),
            "{report}"
        );
    }
}
