//! The safe layer over the emulator: channel lifecycle, sends with completions, receives,
//! synchronous requests, GPADLs, pools and channel settings, on every interface version, with
//! the emulator's verifier clean at the end of each test.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use std::pin::pin;
use std::sync::atomic::Ordering;
use std::time::Duration;

use common::{ALL_VERSIONS, ECHO_INSTANCE, Incoming, Recorder, rig, wait_until};
use vmbus_kmcl::{
    Channel, ChannelConfig, ExternalData, ExternalDataFlags, GpadlFlags, InterfaceVersion,
    NtStatus, PacketPool, PoolWord, ProcessPacketFlags, SendFlags,
};
use vmbus_kmcl_sim::InterfaceVersion as SimVersion;

fn config() -> ChannelConfig {
    ChannelConfig::new()
        .ring_buffer_pages(8, 8)
        .maximum_packet_size(4096)
}

#[test]
fn negotiates_the_bus_version() {
    for version in ALL_VERSIONS {
        let rig = rig(version);
        assert_eq!(rig.interface.version() as u16, version.number());
        rig.finish();
    }
}

#[test]
fn lifecycle_callbacks_on_every_version() {
    for version in ALL_VERSIONS {
        let rig = rig(version);
        {
            let channel = pin!(
                Channel::new(
                    &rig.interface,
                    rig.parent,
                    &config(),
                    Recorder::new(Incoming::Drop)
                )
                .unwrap()
            );
            assert!(!channel.is_enabled());
            assert_eq!(
                channel.send(b"x", SendFlags::empty(), 0),
                Err(NtStatus::INVALID_DEVICE_STATE)
            );
            channel.as_ref().enable().unwrap();
            assert!(channel.is_enabled());
            assert_eq!(
                channel.as_ref().enable(),
                Err(NtStatus::INVALID_DEVICE_STATE)
            );
            let h = channel.handler();
            assert_eq!(h.opened.load(Ordering::SeqCst), 1, "{version:?}");
            assert!(h.started.load(Ordering::SeqCst) >= 1, "{version:?}");
            channel.pause().unwrap();
            assert!(h.suspended.load(Ordering::SeqCst) >= 1, "{version:?}");
            let started = h.started.load(Ordering::SeqCst);
            channel.start().unwrap();
            assert!(h.started.load(Ordering::SeqCst) > started, "{version:?}");
            channel.as_ref().disable();
            assert!(!channel.is_enabled());
            assert_eq!(channel.pause(), Err(NtStatus::INVALID_DEVICE_STATE));
        }
        assert_eq!(rig.echo.stats().opens, 1);
        rig.finish();
    }
}

#[test]
fn opened_error_fails_enable_and_leaks_nothing() {
    for version in [SimVersion::V1, SimVersion::V5] {
        let rig = rig(version);
        let mut recorder = Recorder::new(Incoming::Drop);
        recorder.fail_open = Some(NtStatus::INSUFFICIENT_RESOURCES);
        {
            let channel =
                pin!(Channel::new(&rig.interface, rig.parent, &config(), recorder).unwrap());
            assert_eq!(
                channel.as_ref().enable(),
                Err(NtStatus::INSUFFICIENT_RESOURCES)
            );
            assert!(!channel.is_enabled());
        }
        rig.finish();
    }
}

#[test]
fn pings_complete_with_context_and_echoed_bytes() {
    for version in ALL_VERSIONS {
        let rig = rig(version);
        {
            let channel = rig.open(&config(), Recorder::new(Incoming::Drop));
            for i in 0..200_u64 {
                let payload = i.to_le_bytes();
                channel
                    .send(&payload, SendFlags::WAIT_FOR_COMPLETION, 1000 + i)
                    .unwrap();
            }
            let h = channel.handler();
            assert!(
                wait_until(|| h.completed.load(Ordering::SeqCst) == 200),
                "{version:?}"
            );
            let completions = h.completions.lock().unwrap();
            let mut contexts: Vec<u64> = completions.iter().map(|c| c.2).collect();
            contexts.sort_unstable();
            assert_eq!(
                contexts,
                (1000..1200).collect::<Vec<_>>(),
                "{version:?}: every context once"
            );
            for (status, response, context) in completions.iter() {
                assert_eq!(*status, NtStatus::SUCCESS);
                assert_eq!(
                    response.as_slice(),
                    (context - 1000).to_le_bytes(),
                    "{version:?}: echoed bytes"
                );
            }
        }
        assert_eq!(rig.echo.stats().completions_sent, 200);
        rig.finish();
    }
}

#[test]
fn sends_without_completion_still_free_their_packet() {
    for version in [SimVersion::V1, SimVersion::V5] {
        let rig = rig(version);
        {
            let channel = rig.open(&config(), Recorder::new(Incoming::Drop));
            for _ in 0..50 {
                channel
                    .send(b"fire-and-forget!", SendFlags::empty(), 7)
                    .unwrap();
            }
            assert!(wait_until(|| rig.echo.stats().packets == 50));
            let h = channel.handler();
            assert!(
                wait_until(|| h.completed.load(Ordering::SeqCst) == 50),
                "{version:?}"
            );
            assert!(
                h.completions
                    .lock()
                    .unwrap()
                    .iter()
                    .all(|c| c.1.is_empty() && c.2 == 7)
            );
        }
        rig.finish();
    }
}

#[test]
fn oversized_send_fails_and_frees_the_packet() {
    for version in [SimVersion::V1, SimVersion::V5] {
        let rig = rig(version);
        {
            let channel = rig.open(&config(), Recorder::new(Incoming::Drop));
            let big = vec![0_u8; 64 * 1024];
            assert!(
                channel
                    .send(&big, SendFlags::WAIT_FOR_COMPLETION, 1)
                    .is_err()
            );
            let unsent = channel.allocate_packet().unwrap();
            drop(unsent);
            assert_eq!(channel.handler().completed.load(Ordering::SeqCst), 0);
        }
        rig.finish();
    }
}

#[test]
fn host_packets_are_received_and_completed() {
    for (version, mode) in [
        (SimVersion::V1, Incoming::CompleteReversed),
        (SimVersion::V5, Incoming::CompleteReversed),
        (SimVersion::V1, Incoming::Drop),
        (SimVersion::V5, Incoming::DeferOnce),
    ] {
        let rig = rig(version);
        {
            let channel = pin!(
                Channel::new(&rig.interface, rig.parent, &config(), Recorder::new(mode)).unwrap()
            );
            channel.as_ref().enable().unwrap();
            rig.echo.send_unsolicited(b"hello from the host!");
            assert!(
                wait_until(|| rig.echo.stats().unsolicited_completed == 1),
                "{version:?} {mode:?}"
            );
            let h = channel.handler();
            let received = h.received.lock().unwrap().clone();
            assert_eq!(received.len(), 1);
            assert_eq!(&received[0][..20], b"hello from the host!");
            let responses = rig.echo.unsolicited_responses();
            match mode {
                Incoming::Drop => assert!(
                    responses[0].is_empty(),
                    "dropping completes with no response"
                ),
                _ => assert_eq!(
                    responses[0],
                    received[0].iter().rev().copied().collect::<Vec<_>>()
                ),
            }
            if mode == Incoming::DeferOnce {
                assert_eq!(
                    h.deliveries.load(Ordering::SeqCst),
                    2,
                    "deferred packets come back once"
                );
            }
            assert!(
                h.batches.load(Ordering::SeqCst) >= 1,
                "processing-complete runs per batch"
            );
        }
        rig.finish();
    }
}

#[test]
fn synchronous_request_returns_the_response() {
    for version in [SimVersion::V1, SimVersion::V5] {
        let rig = rig(version);
        {
            let channel = rig.open(&config(), Recorder::new(Incoming::Drop));
            let mut response = [0_u8; 32];
            let n = channel
                .send_synchronous(
                    b"sync-request-16b",
                    SendFlags::WAIT_FOR_COMPLETION,
                    &mut response,
                    Some(Duration::from_secs(5)),
                )
                .unwrap();
            assert_eq!(&response[..n], b"sync-request-16b");
            let mut odd = [0_u8; 12];
            assert_eq!(
                channel.send_synchronous(b"x", SendFlags::WAIT_FOR_COMPLETION, &mut odd, None),
                Err(NtStatus::INVALID_PARAMETER),
                "completion buffer must be a multiple of 8"
            );
            rig.offer.stall(true);
            let timed_out = channel.send_synchronous(
                b"stalled!",
                SendFlags::WAIT_FOR_COMPLETION,
                &mut response,
                Some(Duration::from_millis(50)),
            );
            assert_eq!(
                timed_out,
                Err(NtStatus::CANCELLED),
                "KMCL cancels a request whose timeout elapsed"
            );
            rig.offer.stall(false);
        }
        rig.finish();
    }
}

#[test]
fn gpadl_is_shared_with_the_host_and_deleted_on_drop() {
    for version in [SimVersion::V1, SimVersion::V5] {
        let rig = rig(version);
        {
            let channel = rig.open(&config(), Recorder::new(Incoming::Drop));
            let mut buffer = vec![0_u8; 3 * 4096 + 100];
            let handle;
            {
                let gpadl = channel
                    .create_gpadl(&mut buffer, GpadlFlags::empty())
                    .unwrap();
                handle = gpadl.handle();
                assert_ne!(handle, 0);
                assert_eq!(gpadl.len(), 3 * 4096 + 100);
                let view = rig.offer.gpadl(handle).expect("the host maps the GPADL");
                view.write(4000, b"written by the host").unwrap();
                let mut seen = [0_u8; 19];
                gpadl.read(4000, &mut seen).unwrap();
                assert_eq!(&seen, b"written by the host");
                gpadl.write(0, b"guest").unwrap();
                let mut host_seen = [0_u8; 5];
                view.read(0, &mut host_seen).unwrap();
                assert_eq!(&host_seen, b"guest");
                assert_eq!(
                    gpadl.read(buffer_len_minus(3 * 4096 + 100), &mut [0; 2]),
                    Err(NtStatus::INVALID_PARAMETER)
                );
            }
            assert!(
                rig.offer.gpadl(handle).is_none_or(|v| v.is_revoked()),
                "deleted on drop"
            );
            assert_eq!(&buffer[4000..4019], b"written by the host");
            let read_only = channel
                .create_gpadl(&mut buffer, GpadlFlags::READ_ONLY)
                .unwrap();
            assert!(rig.offer.gpadl(read_only.handle()).unwrap().is_read_only());
        }
        rig.finish();
    }
}

fn buffer_len_minus(len: usize) -> usize {
    len - 1
}

#[test]
fn gpadl_from_pfns_needs_v4() {
    for version in [SimVersion::V3, SimVersion::V4] {
        let rig = rig(version);
        {
            let channel = rig.open(&config(), Recorder::new(Incoming::Drop));
            let mut pages = common::Pages::new(3);
            let mdl = vmbus_kmcl_sim::OwnedMdl::from_slice(pages.bytes_mut()).unwrap();
            let pfns = mdl.pfns();
            // SAFETY: the pages (owned by `pages`, described by `mdl`) outlive the GPADL.
            let gpadl = unsafe { channel.create_gpadl_from_pfns(&pfns, GpadlFlags::empty()) };
            if version >= SimVersion::V4 {
                let gpadl = gpadl.unwrap();
                assert!(rig.offer.gpadl(gpadl.handle()).is_some());
            } else {
                assert_eq!(gpadl.unwrap_err(), NtStatus::NOT_SUPPORTED);
            }
        }
        rig.finish();
    }
}

#[test]
fn packet_pool_sends_without_kmcl_allocation() {
    for version in [SimVersion::V1, SimVersion::V5] {
        let rig = rig(version);
        {
            let channel = rig.open(&config(), Recorder::new(Incoming::Drop));
            let words = PacketPool::words_needed(&channel, 4).unwrap();
            let mut storage = vec![PoolWord::ZERO; words];
            let pool = channel.packet_pool(&mut storage).unwrap();
            assert_eq!(pool.capacity(), 4);
            for round in 0..25_u64 {
                for i in 0..4 {
                    pool.allocate()
                        .unwrap()
                        .send(
                            &[i as u8; 24],
                            SendFlags::WAIT_FOR_COMPLETION,
                            round * 4 + i,
                        )
                        .unwrap();
                }
                let h = channel.handler();
                assert!(
                    wait_until(|| h.completed.load(Ordering::SeqCst) == (round + 1) * 4),
                    "{version:?}"
                );
                assert!(wait_until(|| pool.in_use() == 0));
            }
            let held: Vec<_> = (0..4).map(|_| pool.allocate().unwrap()).collect();
            assert_eq!(
                pool.allocate().err(),
                Some(NtStatus::INSUFFICIENT_RESOURCES),
                "all slots in use"
            );
            drop(held);
            assert_eq!(pool.in_use(), 0, "unsent packets release their slot");
        }
        rig.finish();
    }
}

#[test]
fn channel_settings_follow_the_interface_version() {
    for version in ALL_VERSIONS {
        let rig = rig(version);
        let v = rig.interface.version();
        {
            let channel = rig.open(&config(), Recorder::new(Incoming::Drop));
            assert_eq!(channel.interface_instance().unwrap(), ECHO_INSTANCE);
            assert_eq!(channel.mmio_space().unwrap(), (0, 0));
            let first = channel.set_interrupt_latency(250).unwrap();
            assert_eq!(channel.set_interrupt_latency(100).unwrap(), 250);
            let _ = first;
            channel.set_transaction_quota(8).unwrap();
            channel.set_incoming_processing_at_passive(false).unwrap();
            assert!(channel.packet_storage_size().unwrap() > 4096);
            let parent = channel.parent_device_object();
            let bounce = channel.allocate_bounce_buffer(4096);
            let dpc = channel.set_allowable_dpc_cpu_usage(50);
            if v >= InterfaceVersion::V2 {
                assert_eq!(parent.unwrap(), rig.parent.as_raw());
                assert!(channel.target_device_object().is_ok());
            } else {
                assert_eq!(parent, Err(NtStatus::NOT_SUPPORTED));
            }
            if v < InterfaceVersion::V3 {
                assert_eq!(bounce, Err(NtStatus::NOT_SUPPORTED));
            }
            if v >= InterfaceVersion::V5 {
                dpc.unwrap();
                assert_eq!(
                    channel.set_allowable_dpc_cpu_usage(0),
                    Err(NtStatus::INVALID_PARAMETER_2)
                );
                assert_eq!(
                    channel.set_allowable_dpc_cpu_usage(101),
                    Err(NtStatus::INVALID_PARAMETER_2)
                );
                assert!(vmbus_kmcl::channel_storage_size(&rig.interface).unwrap() > 0);
            } else {
                assert_eq!(dpc, Err(NtStatus::NOT_SUPPORTED));
                assert_eq!(
                    vmbus_kmcl::channel_storage_size(&rig.interface),
                    Err(NtStatus::NOT_SUPPORTED)
                );
            }
        }
        rig.finish();
    }
}

#[test]
fn init_setters_apply_and_reject_bad_values_without_leaks() {
    for version in ALL_VERSIONS {
        let rig = rig(version);
        let v = rig.interface.version();
        static NAME: [u16; 4] = [b't' as u16, b'e' as u16, b's' as u16, b't' as u16];
        let mut full = ChannelConfig::new()
            .ring_buffer_pages(4, 4)
            .maximum_packet_size(2048)
            .maximum_external_data(64 * 1024, 4)
            .client_context_size(16)
            .friendly_name(&NAME)
            .flags(vmbus_kmcl::ChannelInitFlags::empty())
            .target_pnp(common::ECHO_TYPE, Some(ECHO_INSTANCE))
            .incoming_processing_at_passive(false);
        if v >= InterfaceVersion::V3 {
            full = full.bounce_buffer_sizes(4096, 4096, 16384);
        }
        if v >= InterfaceVersion::V4 {
            full = full.maximum_packet_count(32);
        }
        if v >= InterfaceVersion::V5 {
            full = full.target_processor(0);
        }
        {
            let channel = rig.open(&full, Recorder::new(Incoming::Drop));
            channel
                .send(b"configured", SendFlags::WAIT_FOR_COMPLETION, 1)
                .unwrap();
            let h = channel.handler();
            assert!(wait_until(|| h.completed.load(Ordering::SeqCst) == 1));
        }
        // Each invalid value fails `new` with KMCL's status and cleans up the channel.
        for bad in [
            ChannelConfig::new().maximum_packet_size(0),
            ChannelConfig::new().ring_buffer_pages(0, 4),
            ChannelConfig::new().maximum_external_data(0, 1),
        ] {
            let result = Channel::new(
                &rig.interface,
                rig.parent,
                &bad,
                Recorder::new(Incoming::Drop),
            );
            assert!(result.is_err(), "{version:?}: {bad:?}");
        }
        if v < InterfaceVersion::V4 {
            let newer = ChannelConfig::new().maximum_packet_count(8);
            let result = Channel::new(
                &rig.interface,
                rig.parent,
                &newer,
                Recorder::new(Incoming::Drop),
            );
            assert_eq!(result.err(), Some(NtStatus::NOT_SUPPORTED));
        }
        rig.finish();
    }
}

#[test]
fn client_context_is_per_packet_on_v2_and_later() {
    use vmbus_kmcl::{ChannelHandler, IncomingPacket};
    struct Ctx(std::sync::Mutex<Vec<vmbus_kmcl::Result<usize>>>);
    impl ChannelHandler for Ctx {
        type PacketContext = ();
        fn process_packet(&self, _: &Channel<Self>, mut packet: IncomingPacket<'_>) {
            let result = packet.client_context().map(|c| {
                c.fill(0xA5);
                c.len()
            });
            self.0.lock().unwrap().push(result);
        }
    }
    for version in [SimVersion::V1, SimVersion::V2, SimVersion::V5] {
        let rig = rig(version);
        {
            let cfg = config().client_context_size(24);
            let channel = pin!(
                Channel::new(&rig.interface, rig.parent, &cfg, Ctx(Default::default())).unwrap()
            );
            channel.as_ref().enable().unwrap();
            rig.echo.send_unsolicited(b"ctx");
            assert!(wait_until(|| rig.echo.stats().unsolicited_completed == 1));
            let results = channel.handler().0.lock().unwrap().clone();
            if version >= SimVersion::V2 {
                assert_eq!(results, vec![Ok(24)]);
            } else {
                assert_eq!(results, vec![Err(NtStatus::NOT_SUPPORTED)]);
            }
        }
        rig.finish();
    }
}

#[test]
fn external_data_arrives_as_an_mdl_chain_and_pending_redelivers() {
    use vmbus_kmcl::{ChannelHandler, IncomingPacket};
    struct Ext(
        std::sync::Mutex<Vec<(u32, Vec<u8>)>>,
        std::sync::atomic::AtomicU32,
    );
    impl ChannelHandler for Ext {
        type PacketContext = ();
        fn process_packet(&self, _: &Channel<Self>, mut packet: IncomingPacket<'_>) {
            self.1.fetch_add(1, Ordering::SeqCst);
            assert!(packet.flags().contains(ProcessPacketFlags::EXTERNAL_DATA));
            match packet.external_data(ExternalDataFlags::READ_ONLY).unwrap() {
                ExternalData::Pending => {}
                ExternalData::Mdl(chain) => {
                    let bytes: Vec<u8> = chain
                        .iter()
                        .flat_map(|m| m.mapped_bytes().unwrap().to_vec())
                        .collect();
                    self.0
                        .lock()
                        .unwrap()
                        .push((chain.byte_count() as u32, bytes));
                    let _ = packet.complete(b"got it");
                }
            }
        }
    }
    for (version, defer) in [
        (SimVersion::V1, false),
        (SimVersion::V5, false),
        (SimVersion::V5, true),
    ] {
        let rig = rig(version);
        {
            let channel = pin!(
                Channel::new(
                    &rig.interface,
                    rig.parent,
                    &config(),
                    Ext(Default::default(), Default::default())
                )
                .unwrap()
            );
            channel.as_ref().enable().unwrap();
            rig.bus.faults().defer_external_data(defer);
            let external = vec![0x5A_u8; 6000];
            rig.offer
                .host_send_external(b"header", &external, true)
                .unwrap();
            let h = channel.handler();
            assert!(
                wait_until(|| !h.0.lock().unwrap().is_empty()),
                "{version:?} defer={defer}"
            );
            let got = h.0.lock().unwrap()[0].clone();
            assert_eq!(got.0, 6000);
            assert!(got.1.iter().all(|&b| b == 0x5A));
            assert_eq!(h.1.load(Ordering::SeqCst), if defer { 2 } else { 1 });
        }
        rig.finish();
    }
}

#[test]
fn mdl_and_pfn_sends_reach_the_host_as_gpa_direct() {
    for version in [SimVersion::V1, SimVersion::V5] {
        let rig = rig(version);
        {
            let cfg = config().maximum_external_data(1 << 20, 4);
            let channel = rig.open(&cfg, Recorder::new(Incoming::Drop));
            let mut data = common::Pages::new(3);
            data.bytes_mut().fill(3);
            let mdl =
                vmbus_kmcl_sim::OwnedMdl::from_slice(&mut data.bytes_mut()[..10_000]).unwrap();
            let mdl_ptr = std::ptr::NonNull::new(mdl.as_ptr()).unwrap();
            // SAFETY: `mdl` and `data` outlive the completion, awaited below.
            unsafe {
                channel.allocate_packet().unwrap().send_with_mdl(
                    b"mdl",
                    mdl_ptr,
                    SendFlags::WAIT_FOR_COMPLETION,
                    1,
                )
            }
            .unwrap();
            // SAFETY: as above.
            unsafe {
                channel.allocate_packet().unwrap().send_with_external_mdl(
                    b"window",
                    mdl_ptr,
                    100,
                    5000,
                    SendFlags::WAIT_FOR_COMPLETION,
                    2,
                )
            }
            .unwrap();
            // PFN lists name whole pages: describe two whole pages of their own.
            let mut pfn_pages = common::Pages::new(2);
            let pfn_mdl = vmbus_kmcl_sim::OwnedMdl::from_slice(pfn_pages.bytes_mut()).unwrap();
            let pfns = pfn_mdl.pfns();
            // SAFETY: as above.
            unsafe {
                channel.allocate_packet().unwrap().send_with_external_pfns(
                    b"pfns",
                    &pfns,
                    SendFlags::WAIT_FOR_COMPLETION,
                    3,
                )
            }
            .unwrap();
            let h = channel.handler();
            assert!(
                wait_until(|| h.completed.load(Ordering::SeqCst) == 3),
                "{version:?}"
            );
            let stats = rig.echo.stats();
            assert_eq!(stats.gpa_direct, 3);
            assert_eq!(
                stats.external_bytes,
                10_000 + 5000 + pfns.len() as u64 * 4096
            );
        }
        rig.finish();
    }
}

#[test]
fn rescind_reports_closed_and_fails_later_sends() {
    for version in [SimVersion::V1, SimVersion::V5] {
        let rig = rig(version);
        {
            let channel = rig.open(&config(), Recorder::new(Incoming::Drop));
            rig.offer.rescind();
            let h = channel.handler();
            assert!(
                wait_until(|| h.closed.load(Ordering::SeqCst) == 1),
                "{version:?}"
            );
            assert!(
                channel
                    .send(b"late", SendFlags::WAIT_FOR_COMPLETION, 1)
                    .is_err()
            );
        }
        rig.finish();
    }
}

#[test]
fn channel_in_caller_storage_on_v5() {
    let rig = rig(SimVersion::V5);
    {
        let size = vmbus_kmcl::channel_storage_size(&rig.interface).unwrap() as usize;
        let mut storage = vec![0_u64; size.div_ceil(8)];
        let base = std::ptr::NonNull::new(storage.as_mut_ptr().cast::<u8>()).unwrap();
        // SAFETY: `storage` outlives the channel (dropped at the end of this block, first).
        let small = unsafe {
            Channel::new_in_storage(
                &rig.interface,
                rig.parent,
                base,
                8,
                &config(),
                Recorder::new(Incoming::Drop),
            )
        };
        assert_eq!(small.err(), Some(NtStatus::BUFFER_TOO_SMALL));
        // SAFETY: as above.
        let channel = unsafe {
            Channel::new_in_storage(
                &rig.interface,
                rig.parent,
                base,
                size,
                &config(),
                Recorder::new(Incoming::Drop),
            )
        }
        .unwrap();
        let channel = pin!(channel);
        channel.as_ref().enable().unwrap();
        channel
            .send(b"in storage", SendFlags::WAIT_FOR_COMPLETION, 9)
            .unwrap();
        let h = channel.handler();
        assert!(wait_until(|| h.completed.load(Ordering::SeqCst) == 1));
    }
    rig.finish();
}

#[test]
fn gpadl_from_an_mdl_window() {
    for version in [SimVersion::V1, SimVersion::V5] {
        let rig = rig(version);
        {
            let channel = rig.open(&config(), Recorder::new(Incoming::Drop));
            let mut pages = common::Pages::new(2);
            let mdl = vmbus_kmcl_sim::OwnedMdl::from_slice(pages.bytes_mut()).unwrap();
            let mdl_ptr = std::ptr::NonNull::new(mdl.as_ptr()).unwrap();
            // SAFETY: `mdl` and `pages` outlive the GPADL (dropped at the end of this block).
            let gpadl =
                unsafe { channel.create_gpadl_from_mdl(mdl_ptr, 0, 8192, GpadlFlags::empty()) }
                    .unwrap();
            let view = rig.offer.gpadl(gpadl.handle()).expect("mapped by the host");
            assert_eq!(view.len(), 8192);
            view.write(8000, b"end of page two").unwrap();
            assert!(
                gpadl.is_empty(),
                "MDL GPADLs have no buffer view of their own"
            );
            drop(gpadl);
            drop(mdl);
            assert_eq!(&pages.bytes_mut()[8000..8015], b"end of page two");
        }
        rig.finish();
    }
}

#[test]
fn failed_packet_is_not_completed_and_channel_still_closes_cleanly() {
    for version in [SimVersion::V1, SimVersion::V5] {
        let rig = rig(version);
        {
            let channel = rig.open(&config(), Recorder::new(Incoming::Fail));
            rig.echo.send_unsolicited(b"reject me");
            let h = channel.handler();
            assert!(wait_until(|| h.deliveries.load(Ordering::SeqCst) == 1));
            std::thread::sleep(Duration::from_millis(20));
            assert_eq!(
                rig.echo.stats().unsolicited_completed,
                0,
                "a failed packet gets no completion"
            );
        }
        rig.finish();
    }
}

#[test]
fn subchannel_opens_on_its_primary_v5() {
    let rig = rig(SimVersion::V5);
    let (sub_vsp, sub_echo) = vmbus_kmcl_sim::EchoVsp::new();
    let _sub_offer = rig.bus.offer_subchannel(&rig.offer, 1, Box::new(sub_vsp));
    {
        let primary = rig.open(&config(), Recorder::new(Incoming::Drop));
        // SAFETY: the subchannel is dropped at the end of the inner block, before `primary`.
        let bad = unsafe { config().primary_channel(&primary, 0) };
        assert_eq!(
            Channel::new(
                &rig.interface,
                rig.parent,
                &bad,
                Recorder::new(Incoming::Drop)
            )
            .err(),
            Some(NtStatus::INVALID_PARAMETER_3)
        );
        {
            // SAFETY: as above.
            let sub_config = unsafe { config().primary_channel(&primary, 1) };
            let sub = rig.open(&sub_config, Recorder::new(Incoming::Drop));
            sub.send(b"on the subchannel", SendFlags::WAIT_FOR_COMPLETION, 5)
                .unwrap();
            let h = sub.handler();
            assert!(wait_until(|| h.completed.load(Ordering::SeqCst) == 1));
            assert_eq!(
                sub_echo.stats().packets,
                1,
                "the subchannel's own VSP got it"
            );
            assert_eq!(rig.echo.stats().packets, 0);
        }
    }
    rig.finish();
}

#[test]
fn incoming_processing_at_passive_still_delivers() {
    for version in [SimVersion::V1, SimVersion::V5] {
        let rig = rig(version);
        {
            let cfg = config().incoming_processing_at_passive(true);
            let channel = rig.open(&cfg, Recorder::new(Incoming::CompleteReversed));
            rig.echo.send_unsolicited(b"at passive");
            assert!(wait_until(|| rig.echo.stats().unsolicited_completed == 1));
            channel.set_incoming_processing_at_passive(false).unwrap();
            rig.echo.send_unsolicited(b"at dispatch");
            assert!(wait_until(|| rig.echo.stats().unsolicited_completed == 2));
        }
        rig.finish();
    }
}

#[test]
fn bounce_buffers_on_v3_and_later() {
    for version in [SimVersion::V2, SimVersion::V3, SimVersion::V5] {
        let rig = rig(version);
        {
            let cfg = if version >= SimVersion::V3 {
                config().bounce_buffer_sizes(4096, 4096, 65536)
            } else {
                config()
            };
            let channel = rig.open(&cfg, Recorder::new(Incoming::Drop));
            if version >= SimVersion::V3 {
                channel.allocate_bounce_buffer(8192).unwrap();
                assert_eq!(
                    channel.allocate_bounce_buffer(100),
                    Err(NtStatus::INVALID_PARAMETER_2)
                );
            } else {
                assert_eq!(
                    channel.allocate_bounce_buffer(8192),
                    Err(NtStatus::NOT_SUPPORTED)
                );
            }
        }
        rig.finish();
    }
}

#[test]
fn unknown_target_pnp_fails_enable_and_reports_pnp_failure() {
    for version in [SimVersion::V1, SimVersion::V5] {
        let rig = rig(version);
        {
            let nowhere = vmbus_kmcl::sys::GUID {
                Data1: 0xdead,
                Data2: 0,
                Data3: 0,
                Data4: [0; 8],
            };
            let cfg = config().target_pnp(nowhere, None);
            let channel = pin!(
                Channel::new(
                    &rig.interface,
                    rig.parent,
                    &cfg,
                    Recorder::new(Incoming::Drop)
                )
                .unwrap()
            );
            let status = channel.as_ref().enable().unwrap_err();
            assert_eq!(
                channel.handler().pnp_failures.lock().unwrap().as_slice(),
                &[status],
                "{version:?}"
            );
            assert_eq!(rig.echo.stats().opens, 0);
        }
        rig.finish();
    }
}
