//! The safe layer over the emulator: channel lifecycle, sends with completions, receives (pended
//! and deferred included), synchronous requests, GPADLs, pools and channel settings, on every
//! interface version, with the emulator's verifier clean at the end of each test.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Mutex, mpsc};
use std::time::Duration;

use common::{
    ALL_VERSIONS, ECHO_INSTANCE, Incoming, Recorder, on_dpc_thread, passive, rig, to_vec,
    wait_until,
};
use vmbus_kmcl::{
    Channel, ChannelConfig, ChannelCore, ChannelHandler, ExternalData, ExternalDataFlags,
    GpadlFlags, IncomingPacket, InterfaceVersion, NtStatus, PacketPool, Page, PendedPacket,
    PoolWord, ProcessPacketFlags, SendFlags,
};
use vmbus_kmcl_sim::{HostError, InterfaceVersion as SimVersion, Slot};

fn config() -> ChannelConfig {
    ChannelConfig::new()
        .ring_buffer_pages(8, 8)
        .maximum_packet_size(4096)
}

fn pages(count: usize) -> Box<[Page]> {
    vec![Page::ZERO; count].into_boxed_slice()
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
            let irql = passive();
            let mut channel = rig.create(&config(), Recorder::new(Incoming::Drop));
            // A counted reference, so the handler can be read while the owner is borrowed
            // mutably by the lifecycle calls.
            let observer = channel.new_ref();
            let h = observer.handler();
            assert!(!channel.is_enabled());
            assert_eq!(
                channel.send(b"x", SendFlags::empty(), 0),
                Err(NtStatus::INVALID_DEVICE_STATE)
            );
            assert_eq!(channel.pause(&irql), Err(NtStatus::INVALID_DEVICE_STATE));
            channel.enable(&irql).unwrap();
            assert!(channel.is_enabled());
            assert_eq!(channel.enable(&irql), Err(NtStatus::INVALID_DEVICE_STATE));
            assert_eq!(h.opened.load(Ordering::SeqCst), 1, "{version:?}");
            assert!(h.started.load(Ordering::SeqCst) >= 1, "{version:?}");
            assert!(h.post_started.load(Ordering::SeqCst) >= 1, "{version:?}");
            channel.pause(&irql).unwrap();
            assert!(h.suspended.load(Ordering::SeqCst) >= 1, "{version:?}");
            let started = h.started.load(Ordering::SeqCst);
            channel.start(&irql).unwrap();
            assert!(h.started.load(Ordering::SeqCst) > started, "{version:?}");
            channel.disable(&irql);
            assert!(!channel.is_enabled());
            assert_eq!(h.closed.load(Ordering::SeqCst), 1, "{version:?}");
            assert_eq!(channel.pause(&irql), Err(NtStatus::INVALID_DEVICE_STATE));
            assert_eq!(channel.start(&irql), Err(NtStatus::INVALID_DEVICE_STATE));
            channel.disable(&irql); // a no-op when not enabled
            assert_eq!(h.closed.load(Ordering::SeqCst), 1, "{version:?}");
            channel.close(&irql);
            // The reference outlives the teardown: the core is still readable, calls fail.
            assert!(!observer.is_enabled());
            assert_eq!(
                observer.send(b"x", SendFlags::empty(), 0),
                Err(NtStatus::INVALID_DEVICE_STATE)
            );
            assert_eq!(
                observer.set_transaction_quota(1),
                Err(NtStatus::INVALID_DEVICE_STATE)
            );
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
            let mut channel = rig.create(&config(), recorder);
            assert_eq!(
                channel.enable(&passive()),
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
            assert!(wait_until(|| rig.bus.verifier().live_packets == 0));
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
            assert_eq!(
                channel.send(&big, SendFlags::WAIT_FOR_COMPLETION, 1),
                Err(NtStatus::INVALID_PARAMETER_3),
                "longer than the configured maximum packet size"
            );
            // An unsent packet is freed when its scope ends.
            channel.with_packet(|unsent| drop(unsent)).unwrap();
            assert_eq!(rig.bus.verifier().live_packets, 0, "{version:?}");
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
        (SimVersion::V1, Incoming::DeferOnce),
    ] {
        let rig = rig(version);
        {
            let channel = rig.open(&config(), Recorder::new(mode));
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
            let irql = passive();
            let channel = rig.open(&config(), Recorder::new(Incoming::Drop));
            let mut response = [0_u8; 32];
            let n = channel
                .send_synchronous(
                    &irql,
                    b"sync-request-16b",
                    SendFlags::WAIT_FOR_COMPLETION,
                    &mut response,
                    Duration::from_secs(5),
                )
                .unwrap();
            assert_eq!(&response[..n], b"sync-request-16b");
            let mut odd = [0_u8; 12];
            assert_eq!(
                channel.send_synchronous(
                    &irql,
                    b"x",
                    SendFlags::WAIT_FOR_COMPLETION,
                    &mut odd,
                    Duration::from_secs(5)
                ),
                Err(NtStatus::INVALID_PARAMETER),
                "completion buffer must be a multiple of 8"
            );
            rig.offer.stall(true);
            let timed_out = channel.send_synchronous(
                &irql,
                b"stalled!",
                SendFlags::WAIT_FOR_COMPLETION,
                &mut response,
                Duration::from_millis(50),
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

/// A timeout shorter than KMCL's 100 ns unit still waits (rounded up to one unit); only
/// `Duration::ZERO` means "do not wait".
#[test]
fn synchronous_timeout_below_100ns_is_rounded_up_not_zero() {
    for version in [SimVersion::V1, SimVersion::V5] {
        let rig = rig(version);
        {
            let irql = passive();
            let channel = rig.open(&config(), Recorder::new(Incoming::Drop));
            let mut response = [0_u8; 16];
            rig.offer.stall(true);
            for nanos in [1, 50, 99] {
                assert_eq!(
                    channel.send_synchronous(
                        &irql,
                        b"tiny-timeout",
                        SendFlags::WAIT_FOR_COMPLETION,
                        &mut response,
                        Duration::from_nanos(nanos),
                    ),
                    Err(NtStatus::CANCELLED),
                    "{version:?}: {nanos} ns waited and timed out (a zero timeout returns Ok(0))"
                );
            }
            // The contrast: a zero timeout does not wait and reports no response.
            assert_eq!(
                channel.send_synchronous(
                    &irql,
                    b"no-wait!",
                    SendFlags::WAIT_FOR_COMPLETION,
                    &mut response,
                    Duration::ZERO,
                ),
                Ok(0),
                "{version:?}"
            );
            rig.offer.stall(false);
            // The host catches up; the channel still works.
            let n = channel
                .send_synchronous(
                    &irql,
                    b"after-the-stall!",
                    SendFlags::WAIT_FOR_COMPLETION,
                    &mut response,
                    Duration::from_secs(5),
                )
                .unwrap();
            assert_eq!(&response[..n], b"after-the-stall!");
        }
        rig.finish();
    }
}

#[test]
fn gpadl_is_shared_with_the_host_and_delete_returns_the_buffer() {
    for version in [SimVersion::V1, SimVersion::V5] {
        let rig = rig(version);
        {
            let irql = passive();
            let channel = rig.open(&config(), Recorder::new(Incoming::Drop));
            let mut buffer = pages(4);
            buffer[3].0[4000..4005].copy_from_slice(b"guest");
            let mut gpadl = channel
                .create_gpadl(&irql, buffer, GpadlFlags::empty())
                .unwrap();
            let handle = gpadl.handle();
            assert_ne!(handle, 0);
            assert_eq!(gpadl.len(), 4 * 4096);
            assert!(!gpadl.is_empty());
            let view = rig.offer.gpadl(handle).expect("the host maps the GPADL");
            assert_eq!(view.len(), 4 * 4096);
            assert!(!view.is_read_only());
            // The buffer's contents before sharing are what the host sees.
            let mut before = [0_u8; 5];
            view.read(3 * 4096 + 4000, &mut before).unwrap();
            assert_eq!(&before, b"guest");
            // Host writes, guest reads (across a page boundary).
            view.write(4090, b"written by the host").unwrap();
            let mut seen = [0_u8; 19];
            gpadl.read(4090, &mut seen).unwrap();
            assert_eq!(&seen, b"written by the host");
            // Guest writes, host reads.
            gpadl.write(0, b"guest").unwrap();
            let mut host_seen = [0_u8; 5];
            view.read(0, &mut host_seen).unwrap();
            assert_eq!(&host_seen, b"guest");
            // Out of range, both ways.
            let len = gpadl.len();
            assert_eq!(
                gpadl.read(len - 1, &mut [0; 2]),
                Err(NtStatus::INVALID_PARAMETER)
            );
            assert_eq!(gpadl.write(len, b"x"), Err(NtStatus::INVALID_PARAMETER));
            assert_eq!(
                gpadl.read(usize::MAX, &mut [0; 2]),
                Err(NtStatus::INVALID_PARAMETER)
            );
            assert!(
                gpadl.read(len, &mut []).is_ok(),
                "an empty range at the end"
            );

            // Delete: the host loses access before the buffer comes back.
            let buffer = gpadl.delete(&irql);
            assert!(view.is_revoked(), "{version:?}: deleted");
            assert_eq!(view.read(0, &mut host_seen), Err(HostError::Revoked));
            assert_eq!(view.write(0, b"late"), Err(HostError::Revoked));
            assert!(rig.offer.gpadl(handle).is_none());
            assert_eq!(rig.bus.verifier().live_gpadls, 0);
            assert_eq!(buffer.len(), 4);
            assert_eq!(&buffer[0].0[4090..], b"writte");
            assert_eq!(&buffer[1].0[..13], b"n by the host");
            assert_eq!(&buffer[0].0[..5], b"guest");
            assert_eq!(&buffer[3].0[4000..4005], b"guest");

            // The same buffer can be shared again, read-only this time.
            let read_only = channel
                .create_gpadl(&irql, buffer, GpadlFlags::READ_ONLY)
                .unwrap();
            let view = rig.offer.gpadl(read_only.handle()).unwrap();
            assert!(view.is_read_only());
            assert_eq!(view.write(0, b"no"), Err(HostError::ReadOnly));
            let mut kept = [0_u8; 5];
            view.read(0, &mut kept).unwrap();
            assert_eq!(&kept, b"guest");
            // Dropped: parked, then deleted by teardown (the verifier checks).
        }
        rig.finish();
    }
}

/// A dropped `Gpadl` cannot block, so it is parked: the host still reaches the GPADL until
/// `reclaim_gpadls` (or teardown) deletes it and frees the buffer.
#[test]
fn dropped_gpadl_is_parked_until_reclaim_or_teardown() {
    for version in [SimVersion::V1, SimVersion::V5] {
        let rig = rig(version);
        let (reclaimed_view, torn_down_view) = {
            let irql = passive();
            let channel = rig.open(&config(), Recorder::new(Incoming::Drop));
            assert_eq!(channel.reclaim_gpadls(&irql), 0, "nothing parked yet");
            let first = channel
                .create_gpadl(&irql, pages(2), GpadlFlags::empty())
                .unwrap();
            let second = channel
                .create_gpadl(&irql, pages(1), GpadlFlags::empty())
                .unwrap();
            let first_view = rig.offer.gpadl(first.handle()).unwrap();
            let second_view = rig.offer.gpadl(second.handle()).unwrap();
            assert_eq!(rig.bus.verifier().live_gpadls, 2);

            // Dropped on another thread (a `Gpadl` is Send): parked, still registered.
            std::thread::spawn(move || drop(first)).join().unwrap();
            assert!(!first_view.is_revoked(), "{version:?}: parked, not deleted");
            first_view.write(0, b"still shared").unwrap();
            assert_eq!(rig.bus.verifier().live_gpadls, 2);

            assert_eq!(channel.reclaim_gpadls(&irql), 1, "{version:?}");
            assert!(first_view.is_revoked(), "{version:?}: reclaimed");
            assert_eq!(first_view.write(0, b"late"), Err(HostError::Revoked));
            assert!(!second_view.is_revoked(), "the live one is untouched");
            assert_eq!(rig.bus.verifier().live_gpadls, 1);
            assert_eq!(channel.reclaim_gpadls(&irql), 0, "reclaimed once");

            // The freed table entry is reusable.
            let mut third = channel
                .create_gpadl(&irql, pages(1), GpadlFlags::empty())
                .unwrap();
            third.write(0, b"third").unwrap();

            drop(second);
            drop(third);
            assert!(!second_view.is_revoked(), "parked until teardown");
            let reference = channel.new_ref();
            channel.close(&irql);
            assert_eq!(
                reference.reclaim_gpadls(&irql),
                0,
                "nothing left after teardown"
            );
            (first_view, second_view)
        };
        assert!(reclaimed_view.is_revoked());
        assert!(
            torn_down_view.is_revoked(),
            "{version:?}: teardown deleted it"
        );
        rig.finish();
    }
}

#[test]
fn gpadl_creation_errors_give_the_buffer_back() {
    for version in [SimVersion::V1, SimVersion::V5] {
        let rig = rig(version);
        {
            let irql = passive();
            let mut marked = pages(1);
            marked[0].0[0] = 0xA5;

            // Not enabled: refused before KMCL is called.
            let mut channel = rig.create(&config().max_gpadls(1), Recorder::new(Incoming::Drop));
            let refused = channel
                .create_gpadl(&irql, marked, GpadlFlags::empty())
                .unwrap_err();
            assert_eq!(refused.status, NtStatus::INVALID_DEVICE_STATE);
            assert_eq!(refused.buffer[0].0[0], 0xA5, "the same buffer comes back");
            channel.enable(&irql).unwrap();

            // Empty buffer.
            let empty = channel
                .create_gpadl(&irql, pages(0), GpadlFlags::empty())
                .unwrap_err();
            assert_eq!(empty.status, NtStatus::INVALID_PARAMETER_4);

            // The table (one entry here) is full.
            let only = channel
                .create_gpadl(&irql, pages(1), GpadlFlags::empty())
                .unwrap();
            let full = channel
                .create_gpadl(&irql, refused.buffer, GpadlFlags::empty())
                .unwrap_err();
            assert_eq!(full.status, NtStatus::INSUFFICIENT_RESOURCES);
            assert_eq!(full.buffer[0].0[0], 0xA5);
            assert_eq!(rig.bus.verifier().live_gpadls, 1);

            // A KMCL failure is reported and the entry is free again.
            drop(only.delete(&irql));
            assert!(rig.bus.faults().fail_nth(
                Slot::VmbChannelCreateGpadlFromBuffer,
                1,
                NtStatus::INSUFFICIENT_RESOURCES.raw()
            ));
            let failed = channel
                .create_gpadl(&irql, full.buffer, GpadlFlags::empty())
                .unwrap_err();
            assert_eq!(failed.status, NtStatus::INSUFFICIENT_RESOURCES);
            let again = channel
                .create_gpadl(&irql, failed.buffer, GpadlFlags::empty())
                .unwrap();
            let mut first = [0_u8; 1];
            again.read(0, &mut first).unwrap();
            assert_eq!(first, [0xA5]);
        }
        rig.finish();
    }
}

#[test]
fn gpadl_from_pfns_needs_v4() {
    for version in [SimVersion::V3, SimVersion::V4, SimVersion::V5] {
        let rig = rig(version);
        {
            let irql = passive();
            let channel = rig.open(&config(), Recorder::new(Incoming::Drop));
            let mut pages = common::Pages::new(3);
            let mdl = vmbus_kmcl_sim::OwnedMdl::from_slice(pages.bytes_mut()).unwrap();
            let pfns = mdl.pfns();
            // SAFETY: the pages (owned by `pages`, described by `mdl`) stay valid until the
            // GPADL is deleted below.
            let gpadl =
                unsafe { channel.create_gpadl_from_pfns(&irql, &pfns, GpadlFlags::empty()) };
            if version >= SimVersion::V4 {
                let gpadl = gpadl.unwrap();
                let view = rig.offer.gpadl(gpadl.handle()).unwrap();
                assert_eq!(view.len(), 3 * 4096);
                assert!(gpadl.is_empty(), "no buffer view of its own");
                assert_eq!(gpadl.read(0, &mut [0; 1]), Err(NtStatus::INVALID_PARAMETER));
                gpadl.delete(&irql);
                assert!(view.is_revoked());
            } else {
                assert_eq!(gpadl.unwrap_err(), NtStatus::NOT_SUPPORTED);
            }
            // SAFETY: as above (nothing is registered now).
            let empty = unsafe { channel.create_gpadl_from_pfns(&irql, &[], GpadlFlags::empty()) };
            let expected = if version >= SimVersion::V4 {
                NtStatus::INVALID_PARAMETER_4
            } else {
                NtStatus::NOT_SUPPORTED
            };
            assert_eq!(empty.unwrap_err(), expected);
        }
        rig.finish();
    }
}

/// Holds `depth` pooled packets unsent at once (nested scopes), then checks the pool is full.
fn hold_all(pool: &PacketPool<Recorder>, depth: usize) -> usize {
    if depth == 0 {
        assert_eq!(
            pool.with_packet(|unsent| drop(unsent)).err(),
            Some(NtStatus::INSUFFICIENT_RESOURCES),
            "all slots in use"
        );
        return pool.in_use();
    }
    pool.with_packet(|_held| hold_all(pool, depth - 1)).unwrap()
}

#[test]
fn packet_pool_sends_without_kmcl_allocation() {
    for version in [SimVersion::V1, SimVersion::V5] {
        let rig = rig(version);
        {
            let irql = passive();
            let channel = rig.open(&config(), Recorder::new(Incoming::Drop));
            let words = PacketPool::words_needed(&channel, 4).unwrap();
            let storage = vec![PoolWord::ZERO; words].into_boxed_slice();
            let pool = channel.attach_packet_pool(storage).unwrap();
            assert_eq!(pool.capacity(), 4);
            assert_eq!(pool.in_use(), 0);
            for round in 0..25_u64 {
                for i in 0..4 {
                    pool.send(
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
            {
                let h = channel.handler();
                let completions = h.completions.lock().unwrap();
                let mut contexts: Vec<u64> = completions.iter().map(|c| c.2).collect();
                contexts.sort_unstable();
                assert_eq!(contexts, (0..100).collect::<Vec<_>>());
                for (status, response, context) in completions.iter() {
                    assert_eq!(*status, NtStatus::SUCCESS);
                    assert_eq!(response.as_slice(), [(context % 4) as u8; 24]);
                }
            }
            assert_eq!(rig.echo.stats().packets, 100);
            assert_eq!(hold_all(&pool, 4), 4);
            assert_eq!(pool.in_use(), 0, "unsent packets release their slot");
            assert_eq!(rig.bus.verifier().live_packets, 0);

            // Storage too small for one packet: it comes back, and the table entry stays free.
            let small = channel
                .attach_packet_pool(vec![PoolWord::ZERO; 1].into_boxed_slice())
                .unwrap_err();
            assert_eq!(small.status, NtStatus::BUFFER_TOO_SMALL);
            assert_eq!(small.storage.len(), 1);

            // A pool in a `&'static mut` buffer (a static in a driver; leaked here).
            let leaked: &'static mut [PoolWord] =
                Box::leak(vec![PoolWord::ZERO; words].into_boxed_slice());
            let second = channel.attach_packet_pool(leaked).unwrap();
            second
                .send(b"from the second pool", SendFlags::WAIT_FOR_COMPLETION, 500)
                .unwrap();
            let h = channel.handler();
            assert!(wait_until(|| h.completed.load(Ordering::SeqCst) == 101));

            // A full pool table: the storage comes back.
            let third = channel
                .attach_packet_pool(vec![PoolWord::ZERO; words].into_boxed_slice())
                .unwrap_err();
            assert_eq!(
                third.status,
                NtStatus::INSUFFICIENT_RESOURCES,
                "default table of 2 pools"
            );
            assert_eq!(third.storage.len(), words);

            // The pool outlives the teardown: its calls fail, its storage was the channel's.
            let reference = channel.new_ref();
            channel.close(&irql);
            assert_eq!(
                pool.send(b"late", SendFlags::empty(), 0),
                Err(NtStatus::INVALID_DEVICE_STATE)
            );
            assert_eq!(pool.in_use(), 0);
            assert_eq!(
                reference
                    .attach_packet_pool(vec![PoolWord::ZERO; words].into_boxed_slice())
                    .unwrap_err()
                    .status,
                NtStatus::INVALID_DEVICE_STATE
            );
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
            let irql = passive();
            let mut channel = rig.open(&config(), Recorder::new(Incoming::Drop));
            assert_eq!(
                channel.interface_instance().unwrap(),
                vmbus_kmcl::sys::Guid(ECHO_INSTANCE)
            );
            assert_eq!(channel.mmio_space().unwrap(), (0, 0));
            let first = channel.set_interrupt_latency(250).unwrap();
            assert_eq!(channel.set_interrupt_latency(100).unwrap(), 250);
            let _ = first;
            channel.set_transaction_quota(8).unwrap();
            assert_eq!(
                channel.set_incoming_processing_at_passive(&irql, false),
                Err(NtStatus::INVALID_DEVICE_STATE),
                "not while enabled"
            );
            channel.disable(&irql);
            channel
                .set_incoming_processing_at_passive(&irql, false)
                .unwrap();
            channel.enable(&irql).unwrap();
            assert!(channel.packet_storage_size().unwrap() > 4096);
            assert_eq!(channel.version(), v);
            let parent = channel.parent_device_object();
            let bounce = channel.allocate_bounce_buffer(&irql, 4096);
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
            .incoming_processing_at_passive(false)
            .max_gpadls(2)
            .max_packet_pools(1)
            .max_pended_packets(4);
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
            assert_eq!(
                channel.send(&[0; 2049], SendFlags::empty(), 2),
                Err(NtStatus::INVALID_PARAMETER_3),
                "the configured maximum packet size applies"
            );
        }
        // Each invalid value fails `new` with the status of the offending setter argument,
        // and cleans up the channel.
        for (bad, status) in [
            (
                ChannelConfig::new().maximum_packet_size(0),
                NtStatus::INVALID_PARAMETER_2,
            ),
            (
                ChannelConfig::new().ring_buffer_pages(0, 4),
                NtStatus::INVALID_PARAMETER_2,
            ),
            (
                ChannelConfig::new().ring_buffer_pages(4, 0),
                NtStatus::INVALID_PARAMETER_3,
            ),
            (
                ChannelConfig::new().maximum_external_data(0, 1),
                NtStatus::INVALID_PARAMETER_2,
            ),
            (
                ChannelConfig::new().maximum_packet_count(0),
                NtStatus::INVALID_PARAMETER_2,
            ),
            (
                ChannelConfig::new().bounce_buffer_sizes(100, 4096, 4096),
                NtStatus::INVALID_PARAMETER_2,
            ),
        ] {
            let result = Channel::new(
                &passive(),
                &rig.interface,
                rig.parent,
                &bad,
                Recorder::new(Incoming::Drop),
            );
            assert_eq!(result.err(), Some(status), "{version:?}: {bad:?}");
        }
        if v < InterfaceVersion::V4 {
            let newer = ChannelConfig::new().maximum_packet_count(8);
            let result = Channel::new(
                &passive(),
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
    struct Ctx(Mutex<Vec<vmbus_kmcl::Result<usize>>>);
    impl ChannelHandler for Ctx {
        type PacketContext = ();
        fn process_packet(&self, _: &ChannelCore<Self>, mut packet: IncomingPacket<'_, Self>) {
            let result = packet.client_context().map(|c| {
                let zeroed = c.iter().all(|b| {
                    // SAFETY: the emulator zeroes each packet's client context (sim/README.md).
                    unsafe { b.assume_init() == 0 }
                });
                assert!(zeroed, "zeroed per packet");
                c.fill(std::mem::MaybeUninit::new(0xA5));
                c.len()
            });
            self.0.lock().unwrap().push(result);
        }
    }
    for version in [SimVersion::V1, SimVersion::V2, SimVersion::V5] {
        let rig = rig(version);
        {
            let cfg = config().client_context_size(24);
            let channel = rig.open(&cfg, Ctx(Mutex::default()));
            rig.echo.send_unsolicited(b"ctx");
            rig.echo.send_unsolicited(b"ctx again");
            assert!(wait_until(|| rig.echo.stats().unsolicited_completed == 2));
            let results = channel.handler().0.lock().unwrap().clone();
            if version >= SimVersion::V2 {
                assert_eq!(results, vec![Ok(24), Ok(24)]);
            } else {
                assert_eq!(results, vec![Err(NtStatus::NOT_SUPPORTED); 2]);
            }
        }
        rig.finish();
    }
}

#[test]
fn external_data_arrives_as_an_mdl_chain_and_pending_redelivers() {
    struct Ext(Mutex<Vec<(u32, Vec<u8>)>>, AtomicU32);
    impl ChannelHandler for Ext {
        type PacketContext = ();
        fn process_packet(&self, _: &ChannelCore<Self>, mut packet: IncomingPacket<'_, Self>) {
            self.1.fetch_add(1, Ordering::SeqCst);
            assert!(packet.flags().contains(ProcessPacketFlags::EXTERNAL_DATA));
            match packet.external_data(ExternalDataFlags::READ_ONLY).unwrap() {
                ExternalData::Mdl(chain) => {
                    let bytes: Vec<u8> = chain
                        .iter()
                        .flat_map(|m| to_vec(m.mapped_bytes().unwrap()))
                        .collect();
                    self.0
                        .lock()
                        .unwrap()
                        .push((chain.byte_count() as u32, bytes));
                    let _ = packet.complete(b"got it");
                }
                // KMCL delivers the packet again.
                ExternalData::Pending => {}
                other => panic!("unexpected external data {other:?}"),
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
            let channel = rig.open(&config(), Ext(Mutex::default(), AtomicU32::new(0)));
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
            assert_eq!(got.1.len(), 6000);
            assert!(got.1.iter().all(|&b| b == 0x5A));
            assert_eq!(h.1.load(Ordering::SeqCst), if defer { 2 } else { 1 });
            assert!(wait_until(|| rig.echo.stats().unsolicited_completed == 1));
            assert_eq!(&rig.echo.unsolicited_responses()[0][..6], b"got it");
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
            channel
                .with_packet(|packet| {
                    // SAFETY: `mdl` and `data` outlive the completion, awaited below.
                    unsafe {
                        packet.send_with_mdl(b"mdl", mdl_ptr, SendFlags::WAIT_FOR_COMPLETION, 1)
                    }
                })
                .unwrap()
                .unwrap();
            channel
                .with_packet(|packet| {
                    // SAFETY: as above.
                    unsafe {
                        packet.send_with_external_mdl(
                            b"window",
                            mdl_ptr,
                            100,
                            5000,
                            SendFlags::WAIT_FOR_COMPLETION,
                            2,
                        )
                    }
                })
                .unwrap()
                .unwrap();
            // PFN lists name whole pages: describe two whole pages of their own.
            let mut pfn_pages = common::Pages::new(2);
            let pfn_mdl = vmbus_kmcl_sim::OwnedMdl::from_slice(pfn_pages.bytes_mut()).unwrap();
            let pfns = pfn_mdl.pfns();
            channel
                .with_packet(|packet| {
                    // SAFETY: as above.
                    unsafe {
                        packet.send_with_external_pfns(
                            b"pfns",
                            &pfns,
                            SendFlags::WAIT_FOR_COMPLETION,
                            3,
                        )
                    }
                })
                .unwrap()
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
            let mut contexts: Vec<u64> =
                h.completions.lock().unwrap().iter().map(|c| c.2).collect();
            contexts.sort_unstable();
            assert_eq!(contexts, [1, 2, 3]);
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

/// `ChannelConfig::kmcl_storage_in_channel` (V5): KMCL's channel object lives in the channel's
/// own allocation (`VmbSizeofChannel` + `VmbChannelInitialize`), sized by the library.
#[test]
fn kmcl_storage_in_channel_on_v5() {
    let rig = rig(SimVersion::V5);
    {
        let size = vmbus_kmcl::channel_storage_size(&rig.interface).unwrap();
        assert!(size > 0);
        let cfg = config().kmcl_storage_in_channel(true);
        let channel = rig.open(&cfg, Recorder::new(Incoming::Drop));
        // The emulator's own channels have kernel-half handles; one initialized in caller
        // storage has the storage's (heap) address as its handle.
        assert!(
            (channel.as_raw() as usize) < 1 << 47,
            "KMCL's channel is in our memory: {:p}",
            channel.as_raw()
        );
        channel
            .send(b"in storage", SendFlags::WAIT_FOR_COMPLETION, 9)
            .unwrap();
        let h = channel.handler();
        assert!(wait_until(|| h.completed.load(Ordering::SeqCst) == 1));
        assert_eq!(h.completions.lock().unwrap()[0].2, 9);
        let allocated = rig.create(&config(), Recorder::new(Incoming::Drop));
        assert!(
            (allocated.as_raw() as usize) >= 1 << 47,
            "VmbChannelAllocate"
        );
    }
    // A failing VmbChannelInitialize fails `new` and frees the storage.
    assert!(rig.bus.faults().fail_nth(
        Slot::VmbChannelInitialize,
        1,
        NtStatus::INSUFFICIENT_RESOURCES.raw()
    ));
    let failed = Channel::new(
        &passive(),
        &rig.interface,
        rig.parent,
        &config().kmcl_storage_in_channel(true),
        Recorder::new(Incoming::Drop),
    );
    assert_eq!(failed.err(), Some(NtStatus::INSUFFICIENT_RESOURCES));
    rig.finish();

    // Before V5 there is no VmbChannelInitialize.
    let rig = common::rig(SimVersion::V4);
    let unsupported = Channel::new(
        &passive(),
        &rig.interface,
        rig.parent,
        &config().kmcl_storage_in_channel(true),
        Recorder::new(Incoming::Drop),
    );
    assert_eq!(unsupported.err(), Some(NtStatus::NOT_SUPPORTED));
    rig.finish();
}

#[test]
fn gpadl_from_an_mdl_window() {
    for version in [SimVersion::V1, SimVersion::V5] {
        let rig = rig(version);
        {
            let irql = passive();
            let channel = rig.open(&config(), Recorder::new(Incoming::Drop));
            let mut pages = common::Pages::new(2);
            let mdl = vmbus_kmcl_sim::OwnedMdl::from_slice(pages.bytes_mut()).unwrap();
            let mdl_ptr = std::ptr::NonNull::new(mdl.as_ptr()).unwrap();
            // SAFETY: `mdl` and `pages` stay valid until the GPADL is deleted below.
            let gpadl = unsafe {
                channel.create_gpadl_from_mdl(&irql, mdl_ptr, 0, 8192, GpadlFlags::empty())
            }
            .unwrap();
            let view = rig.offer.gpadl(gpadl.handle()).expect("mapped by the host");
            assert_eq!(view.len(), 8192);
            view.write(8000, b"end of page two").unwrap();
            assert!(
                gpadl.is_empty(),
                "MDL GPADLs have no buffer view of their own"
            );
            gpadl.delete(&irql);
            assert!(view.is_revoked());
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
        // SAFETY: the configuration is rejected (index 0), so no channel depends on `primary`.
        let bad = unsafe { config().primary_channel(&primary, 0) };
        assert_eq!(
            Channel::new(
                &passive(),
                &rig.interface,
                rig.parent,
                &bad,
                Recorder::new(Incoming::Drop)
            )
            .err(),
            Some(NtStatus::INVALID_PARAMETER_3)
        );
        {
            // SAFETY: the subchannel is dropped at the end of this block, before `primary`.
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
            let mut channel = rig.open(&cfg, Recorder::new(Incoming::CompleteReversed));
            rig.echo.send_unsolicited(b"at passive");
            assert!(wait_until(|| rig.echo.stats().unsolicited_completed == 1));
            channel.disable(&passive());
            channel
                .set_incoming_processing_at_passive(&passive(), false)
                .unwrap();
            channel.enable(&passive()).unwrap();
            rig.echo.send_unsolicited(b"at dispatch");
            assert!(wait_until(|| rig.echo.stats().unsolicited_completed == 2));
            let received = channel.handler().received.lock().unwrap().clone();
            assert_eq!(&received[0][..10], b"at passive");
            assert_eq!(&received[1][..11], b"at dispatch");
        }
        rig.finish();
    }
}

#[test]
fn bounce_buffers_on_v3_and_later() {
    for version in [SimVersion::V2, SimVersion::V3, SimVersion::V5] {
        let rig = rig(version);
        {
            let irql = passive();
            let cfg = if version >= SimVersion::V3 {
                config().bounce_buffer_sizes(4096, 4096, 65536)
            } else {
                config()
            };
            let channel = rig.open(&cfg, Recorder::new(Incoming::Drop));
            if version >= SimVersion::V3 {
                channel.allocate_bounce_buffer(&irql, 8192).unwrap();
                assert_eq!(
                    channel.allocate_bounce_buffer(&irql, 100),
                    Err(NtStatus::INVALID_PARAMETER_2)
                );
                assert_eq!(
                    channel.allocate_bounce_buffer(&irql, 0),
                    Err(NtStatus::INVALID_PARAMETER_2)
                );
            } else {
                assert_eq!(
                    channel.allocate_bounce_buffer(&irql, 8192),
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
            let mut channel = rig.create(&cfg, Recorder::new(Incoming::Drop));
            let status = channel.enable(&passive()).unwrap_err();
            assert_eq!(
                channel.handler().pnp_failures.lock().unwrap().as_slice(),
                &[status],
                "{version:?}"
            );
            assert!(!channel.is_enabled());
            assert_eq!(rig.echo.stats().opens, 0);
        }
        rig.finish();
    }
}

// ---- pended packets -----------------------------------------------------------------------

/// Pends every incoming packet and hands it to the test through a queue; when the pend table
/// is full, completes the packet at once with `b"refused!"`.
struct Pender {
    queue: Mutex<mpsc::Sender<PendedPacket<Pender>>>,
    refused: AtomicU32,
}

impl ChannelHandler for Pender {
    type PacketContext = ();
    fn process_packet(&self, _: &ChannelCore<Self>, packet: IncomingPacket<'_, Self>) {
        match packet.pend() {
            Ok(pended) => self.queue.lock().unwrap().send(pended).unwrap(),
            Err(packet) => {
                self.refused.fetch_add(1, Ordering::SeqCst);
                packet.complete(b"refused!").unwrap();
            }
        }
    }
}

fn pender() -> (Pender, mpsc::Receiver<PendedPacket<Pender>>) {
    let (sender, receiver) = mpsc::channel();
    let pender = Pender {
        queue: Mutex::new(sender),
        refused: AtomicU32::new(0),
    };
    (pender, receiver)
}

fn next(queue: &mpsc::Receiver<PendedPacket<Pender>>) -> PendedPacket<Pender> {
    queue
        .recv_timeout(Duration::from_secs(5))
        .expect("a pended packet")
}

/// A packet pended in the callback and completed later on another thread reaches the host
/// with its response; one dropped un-completed reaches it with no response.
#[test]
fn pended_packet_completed_on_another_thread_reaches_the_host() {
    for version in [SimVersion::V1, SimVersion::V5] {
        let rig = rig(version);
        {
            let (handler, queue) = pender();
            let channel = rig.open(&config(), handler);
            let mut transactions = Vec::new();
            for i in 0..4_u8 {
                transactions.push(rig.offer.host_send(&[i; 16], true).unwrap());
            }
            rig.offer.host_send(b"dropped!", true).unwrap();
            let pended: Vec<_> = (0..5).map(|_| next(&queue)).collect();
            std::thread::sleep(Duration::from_millis(10));
            assert_eq!(
                rig.echo.stats().unsolicited_completed,
                0,
                "{version:?}: pended packets wait for the driver"
            );
            let worker = std::thread::spawn(move || {
                let mut pended = pended.into_iter();
                for packet in pended.by_ref().take(4) {
                    assert_eq!(packet.data_len(), Ok(16));
                    assert_eq!(packet.flags(), Ok(ProcessPacketFlags::empty()));
                    let mut data = [0_u8; 16];
                    assert_eq!(packet.copy_data(&mut data), Ok(16));
                    let mut short = [0_u8; 4];
                    assert_eq!(packet.copy_data(&mut short), Ok(4));
                    let reply: Vec<u8> = data.iter().map(|b| b + 100).collect();
                    packet.complete(&reply).unwrap();
                }
                drop(pended); // the last one: completed with no response
            });
            worker.join().unwrap();
            assert!(
                wait_until(|| rig.echo.stats().unsolicited_completed == 5),
                "{version:?}"
            );
            let mut responses = rig.echo.unsolicited_responses();
            responses.sort();
            assert!(responses[0].is_empty(), "dropped: no response");
            for (i, response) in responses[1..].iter().enumerate() {
                assert_eq!(response.as_slice(), [i as u8 + 100; 16], "{version:?}");
            }
            assert_eq!(channel.handler().refused.load(Ordering::SeqCst), 0);
            assert_eq!(rig.bus.verifier().uncompleted_incoming, 0);
        }
        rig.finish();
    }
}

/// Disable cancels the pended packets (`VmbChannelPacketFail`): the host gets no completion
/// and the handles report `STATUS_CANCELLED`. A full pend table gives the packet back.
#[test]
fn disable_cancels_pended_packets_and_a_full_pend_table_refuses() {
    for version in [SimVersion::V1, SimVersion::V5] {
        let rig = rig(version);
        {
            let irql = passive();
            let (handler, queue) = pender();
            let mut channel = rig.open(&config().max_pended_packets(2), handler);
            for i in 0..3_u8 {
                rig.offer.host_send(&[i; 8], true).unwrap();
            }
            let first = next(&queue);
            let second = next(&queue);
            let observer = channel.new_ref();
            let h = observer.handler();
            assert!(wait_until(|| h.refused.load(Ordering::SeqCst) == 1));
            assert!(wait_until(|| rig.echo.stats().unsolicited_completed == 1));
            assert_eq!(&rig.echo.unsolicited_responses()[0], b"refused!");
            assert_eq!(first.data_len(), Ok(8));

            channel.disable(&irql);
            assert_eq!(first.data_len(), Err(NtStatus::CANCELLED));
            assert_eq!(first.flags(), Err(NtStatus::CANCELLED));
            assert_eq!(first.copy_data(&mut [0; 8]), Err(NtStatus::CANCELLED));
            assert_eq!(first.complete(b"too late"), Err(NtStatus::CANCELLED));
            assert_eq!(second.fail(), Err(NtStatus::CANCELLED));
            // Cancelled packets are completed with no response; whether the host reads those
            // completions before the channel closes is up to its thread, so only KMCL's side is
            // checked exactly: nothing is left outstanding.
            assert!(rig.echo.stats().unsolicited_completed >= 1, "{version:?}");
            assert_eq!(rig.bus.verifier().uncompleted_incoming, 0);

            // Re-enabled, the slots are free again; a packet still pended at teardown is
            // cancelled by it, and its handle outlives the channel.
            channel.enable(&irql).unwrap();
            rig.offer.host_send(b"again!!!", true).unwrap();
            let kept = next(&queue);
            assert_eq!(kept.data_len(), Ok(8));
            drop(channel);
            assert_eq!(kept.complete(b"too late"), Err(NtStatus::CANCELLED));
            assert_eq!(h.refused.load(Ordering::SeqCst), 1);
        }
        rig.finish();
    }
}

// ---- the PASSIVE_LEVEL token of incoming packets -------------------------------------------

/// Records, per delivery, whether a token came with it and on which emulator thread.
struct Irqls {
    defer_first: bool,
    deliveries: Mutex<Vec<(bool, bool)>>,
}

impl ChannelHandler for Irqls {
    type PacketContext = ();
    fn process_packet(&self, channel: &ChannelCore<Self>, packet: IncomingPacket<'_, Self>) {
        let token = packet.passive_level();
        if let Some(irql) = token {
            // The token is usable for PASSIVE_LEVEL calls.
            assert_eq!(channel.reclaim_gpadls(irql), 0);
        }
        let first = {
            let mut deliveries = self.deliveries.lock().unwrap();
            deliveries.push((token.is_some(), on_dpc_thread()));
            deliveries.len() == 1
        };
        if self.defer_first && first {
            packet.defer_to_passive();
        } else {
            packet.complete(b"seen").unwrap();
        }
    }
}

fn irqls(defer_first: bool) -> Irqls {
    Irqls {
        defer_first,
        deliveries: Mutex::new(Vec::new()),
    }
}

#[test]
fn passive_level_token_comes_only_with_passive_deliveries() {
    for version in [SimVersion::V1, SimVersion::V5] {
        // Delivered at DISPATCH_LEVEL (the callback thread): no token.
        let rig = rig(version);
        {
            let channel = rig.open(&config(), irqls(false));
            rig.echo.send_unsolicited(b"dispatch");
            assert!(wait_until(|| rig.echo.stats().unsolicited_completed == 1));
            assert_eq!(
                *channel.handler().deliveries.lock().unwrap(),
                [(false, true)],
                "{version:?}"
            );
        }
        rig.finish();

        // Incoming processing at passive: a token, on the passive worker; switched off, none.
        let rig = common::rig(version);
        {
            let cfg = config().incoming_processing_at_passive(true);
            let mut channel = rig.open(&cfg, irqls(false));
            rig.echo.send_unsolicited(b"passive!");
            assert!(wait_until(|| rig.echo.stats().unsolicited_completed == 1));
            channel.disable(&passive());
            channel
                .set_incoming_processing_at_passive(&passive(), false)
                .unwrap();
            channel.enable(&passive()).unwrap();
            rig.echo.send_unsolicited(b"dispatch");
            assert!(wait_until(|| rig.echo.stats().unsolicited_completed == 2));
            channel.disable(&passive());
            channel
                .set_incoming_processing_at_passive(&passive(), true)
                .unwrap();
            channel.enable(&passive()).unwrap();
            rig.echo.send_unsolicited(b"passive!");
            assert!(wait_until(|| rig.echo.stats().unsolicited_completed == 3));
            assert_eq!(
                *channel.handler().deliveries.lock().unwrap(),
                [(true, false), (false, true), (true, false)],
                "{version:?}"
            );
        }
        rig.finish();

        // Deferred to passive: no token the first time, a token on the redelivery.
        let rig = common::rig(version);
        {
            let channel = rig.open(&config(), irqls(true));
            rig.echo.send_unsolicited(b"deferred");
            assert!(wait_until(|| rig.echo.stats().unsolicited_completed == 1));
            rig.echo.send_unsolicited(b"dispatch");
            assert!(wait_until(|| rig.echo.stats().unsolicited_completed == 2));
            assert_eq!(
                *channel.handler().deliveries.lock().unwrap(),
                [(false, true), (true, false), (false, true)],
                "{version:?}: the redelivery only"
            );
        }
        rig.finish();
    }
}

// ---- teardown with sends in flight ---------------------------------------------------------

/// Dropping the owner with sends in flight (the host stalled) completes each of them exactly
/// once, with `STATUS_CANCELLED` and its context, before the drop returns.
#[test]
fn channel_dropped_with_sends_in_flight_cancels_them() {
    for version in [SimVersion::V1, SimVersion::V5] {
        let rig = rig(version);
        {
            let channel = rig.open(&config(), Recorder::new(Incoming::Drop));
            let words = PacketPool::words_needed(&channel, 2).unwrap();
            let pool = channel
                .attach_packet_pool(vec![PoolWord::ZERO; words].into_boxed_slice())
                .unwrap();
            rig.offer.stall(true);
            for i in 0..5_u64 {
                channel
                    .send(&i.to_le_bytes(), SendFlags::WAIT_FOR_COMPLETION, i)
                    .unwrap();
            }
            for i in 5..7_u64 {
                pool.send(&i.to_le_bytes(), SendFlags::WAIT_FOR_COMPLETION, i)
                    .unwrap();
            }
            assert_eq!(pool.in_use(), 2);
            let observer = channel.new_ref();
            let h = observer.handler();
            std::thread::sleep(Duration::from_millis(10));
            assert_eq!(
                h.completed.load(Ordering::SeqCst),
                0,
                "{version:?}: in flight"
            );
            drop(channel);
            assert_eq!(h.completed.load(Ordering::SeqCst), 7, "{version:?}");
            let completions = h.completions.lock().unwrap();
            let mut contexts: Vec<u64> = completions.iter().map(|c| c.2).collect();
            contexts.sort_unstable();
            assert_eq!(contexts, (0..7).collect::<Vec<_>>(), "each once");
            for (status, response, _) in completions.iter() {
                assert_eq!(*status, NtStatus::CANCELLED, "{version:?}");
                assert!(response.is_empty());
            }
            drop(completions);
            assert_eq!(
                observer.send(b"late", SendFlags::empty(), 99),
                Err(NtStatus::INVALID_DEVICE_STATE)
            );
            assert_eq!(
                pool.send(b"late", SendFlags::empty(), 99),
                Err(NtStatus::INVALID_DEVICE_STATE)
            );
            rig.offer.stall(false);
        }
        rig.finish();
    }
}

// ---- IRQL tokens at delivery -------------------------------------------------------------

/// Counts deliveries that carried a PASSIVE_LEVEL token on the emulator's DPC thread, and those
/// that carried one on its passive worker.
struct TokenWatch {
    deliveries: AtomicU32,
    at_dispatch_with_token: AtomicU32,
    at_passive_with_token: AtomicU32,
}

impl ChannelHandler for TokenWatch {
    type PacketContext = ();
    fn process_packet(&self, _: &ChannelCore<Self>, packet: IncomingPacket<'_, Self>) {
        self.deliveries.fetch_add(1, Ordering::SeqCst);
        if packet.passive_level().is_some() {
            if on_dpc_thread() {
                self.at_dispatch_with_token.fetch_add(1, Ordering::SeqCst);
            } else {
                self.at_passive_with_token.fetch_add(1, Ordering::SeqCst);
            }
        }
    }
}

/// A token never comes with a DISPATCH_LEVEL delivery: the delivery IRQL can only be switched
/// while the channel is not enabled (KMCL does not say when a switch reaches packets already on
/// their way), and the trampoline confirms PASSIVE_LEVEL with the IRQL probe before minting one.
#[test]
fn passive_token_is_never_minted_at_dispatch() {
    for version in [SimVersion::V1, SimVersion::V5] {
        let rig = rig(version);
        {
            let mut channel = rig.open(
                &config(),
                TokenWatch {
                    deliveries: AtomicU32::new(0),
                    at_dispatch_with_token: AtomicU32::new(0),
                    at_passive_with_token: AtomicU32::new(0),
                },
            );
            assert_eq!(
                channel.set_incoming_processing_at_passive(&passive(), true),
                Err(NtStatus::INVALID_DEVICE_STATE),
                "{version:?}: not while enabled"
            );
            for round in 0..6_u32 {
                let at_passive = round % 2 == 0;
                channel.disable(&passive());
                channel
                    .set_incoming_processing_at_passive(&passive(), at_passive)
                    .unwrap();
                channel.enable(&passive()).unwrap();
                for _ in 0..20 {
                    rig.offer.host_send(&[1; 8], true).unwrap();
                }
                let h = channel.handler();
                assert!(wait_until(
                    || h.deliveries.load(Ordering::SeqCst) == (round + 1) * 20
                ));
            }
            let h = channel.handler();
            assert_eq!(
                h.at_passive_with_token.load(Ordering::SeqCst),
                60,
                "{version:?}: the three at-passive rounds carried tokens"
            );
            assert_eq!(
                h.at_dispatch_with_token.load(Ordering::SeqCst),
                0,
                "{version:?}: a PassiveLevel token was handed to a DISPATCH_LEVEL callback"
            );
            channel.close(&passive());
        }
        rig.finish();
    }
}

// A handler that keeps its own channel's owner (and could tear the channel down from its own
// callback, freeing itself under `&self`) does not compile: `Channel` is not `Send`, and a
// handler is `Send + Sync` (the `compile_fail` doctest on `Channel`).
