//! Regression tests for the soundness properties of the safe layer: each scenario that once
//! reached undefined behaviour (or could, by the rules) runs here over the emulator and ends
//! with the verifier clean. The scenarios the types rule out are `compile_fail` doctests in the
//! library (named beside each test below).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use std::sync::atomic::Ordering;

use common::{Incoming, Recorder, passive, rig, wait_until};
use vmbus_kmcl::{ChannelConfig, NtStatus, SendFlags};
use vmbus_kmcl_sim::InterfaceVersion as SimVersion;

fn config() -> ChannelConfig {
    ChannelConfig::new()
        .ring_buffer_pages(8, 8)
        .maximum_packet_size(4096)
}

/// Scenario 1: every pre-V5 channel went through a provenance-less function pointer on its
/// first callback. The legacy path end to end (Miri runs this test).
#[test]
fn legacy_and_ex_callback_paths_round_trip() {
    for version in [SimVersion::V1, SimVersion::V5] {
        let rig = rig(version);
        {
            let channel = rig.open(&config(), Recorder::new(Incoming::CompleteReversed));
            for i in 0..4_u64 {
                channel
                    .send(&i.to_le_bytes(), SendFlags::WAIT_FOR_COMPLETION, i)
                    .unwrap();
            }
            let h = channel.handler();
            assert!(wait_until(|| h.completed.load(Ordering::SeqCst) == 4));
            rig.offer.host_send(b"from the host", true).unwrap();
            assert!(wait_until(|| h.received.lock().unwrap().len() == 1));
            channel.close(&passive());
        }
        rig.finish();
    }
}

#[test]
fn send_after_close_through_a_reference_fails_cleanly() {
    let rig = rig(SimVersion::V5);
    let channel = rig.open(&config(), Recorder::new(Incoming::Drop));
    let reference = channel.new_ref();
    channel.close(&passive());
    assert_eq!(
        reference.send(b"late", SendFlags::empty(), 0),
        Err(NtStatus::INVALID_DEVICE_STATE)
    );
    drop(reference);
    rig.finish();
}

// ---- scenario 2: a forgotten pool's storage stays the channel's ----------------------------

/// Once: `mem::forget(PacketPool)` and then freeing its storage let KMCL's completion write into
/// freed memory. Now the storage is owned by the channel (a pool over a borrowed buffer does not
/// compile: the `compile_fail` doctest on `PacketPool`), so forgetting the handle frees
/// nothing; the completions of the packets in flight arrive (cancelled by teardown) and the
/// storage is freed after `VmbChannelCleanup`.
#[test]
fn forgotten_pool_with_packets_in_flight_is_torn_down_cleanly() {
    use vmbus_kmcl::{PacketPool, PoolWord};
    for version in [SimVersion::V1, SimVersion::V5] {
        let rig = rig(version);
        {
            let channel = rig.open(&config(), Recorder::new(Incoming::Drop));
            let words = PacketPool::words_needed(&channel, 4).unwrap();
            let storage = vec![PoolWord::ZERO; words].into_boxed_slice();
            let pool = channel.attach_packet_pool(storage).unwrap();
            rig.offer.stall(true);
            for i in 0..4_u64 {
                pool.send(&i.to_le_bytes(), SendFlags::WAIT_FOR_COMPLETION, i)
                    .unwrap();
            }
            assert_eq!(pool.in_use(), 4);
            std::mem::forget(pool);
            let reference = channel.new_ref();
            channel.close(&passive());
            let h = reference.handler();
            assert_eq!(h.completed.load(Ordering::SeqCst), 4, "{version:?}");
            for (status, _, _) in h.completions.lock().unwrap().iter() {
                assert_eq!(*status, NtStatus::CANCELLED, "{version:?}");
            }
        }
        rig.finish();
    }
}

// ---- scenario 3: a forgotten GPADL's buffer is never freed under the host -------------------

/// Once: `mem::forget(Gpadl)` then dropping the buffer let the host write into reused memory.
/// Now the GPADL owns its buffer (a GPADL over a borrowed buffer does not compile: the
/// `compile_fail` doctest on `Gpadl`): forgetting it leaks the buffer, and teardown still
/// deletes the GPADL, so the host loses access before anything could reuse the memory.
#[test]
fn forgotten_gpadl_is_deleted_by_teardown_and_its_buffer_leaks() {
    use vmbus_kmcl::{GpadlFlags, Page};
    let rig = rig(SimVersion::V5);
    {
        let channel = rig.open(&config(), Recorder::new(Incoming::Drop));
        let buffer = vec![Page::ZERO; 2].into_boxed_slice();
        let gpadl = channel
            .create_gpadl(&passive(), buffer, GpadlFlags::empty())
            .unwrap();
        let handle = gpadl.handle();
        let view = rig.offer.gpadl(handle).expect("the host maps the GPADL");
        view.write(4096, b"host bytes").unwrap();
        let mut seen = [0_u8; 10];
        gpadl.read(4096, &mut seen).unwrap();
        assert_eq!(&seen, b"host bytes");
        std::mem::forget(gpadl);
        channel.close(&passive());
        assert!(rig.offer.gpadl(handle).is_none(), "teardown deleted it");
    }
    rig.finish();
}

/// A dropped (not forgotten) GPADL parks its buffer; `reclaim_gpadls` deletes it and frees the
/// buffer, and the host loses access.
#[test]
fn dropped_gpadl_is_parked_then_reclaimed() {
    use vmbus_kmcl::{GpadlFlags, Page};
    let rig = rig(SimVersion::V1);
    {
        let channel = rig.open(&config(), Recorder::new(Incoming::Drop));
        let gpadl = channel
            .create_gpadl(
                &passive(),
                vec![Page::ZERO; 1].into_boxed_slice(),
                GpadlFlags::empty(),
            )
            .unwrap();
        let handle = gpadl.handle();
        drop(gpadl);
        assert!(rig.offer.gpadl(handle).is_some(), "parked, not yet deleted");
        assert_eq!(channel.reclaim_gpadls(&passive()), 1);
        assert!(rig.offer.gpadl(handle).is_none());
        channel.close(&passive());
    }
    rig.finish();
}

/// A GPADL handle that outlives its channel's teardown keeps a valid, private buffer.
#[test]
fn gpadl_outliving_teardown_returns_its_buffer() {
    use vmbus_kmcl::{GpadlFlags, Page};
    let rig = rig(SimVersion::V5);
    let gpadl = {
        let channel = rig.open(&config(), Recorder::new(Incoming::Drop));
        let mut gpadl = channel
            .create_gpadl(
                &passive(),
                vec![Page::ZERO; 1].into_boxed_slice(),
                GpadlFlags::empty(),
            )
            .unwrap();
        gpadl.write(0, b"kept").unwrap();
        channel.close(&passive());
        gpadl
    };
    assert!(rig.offer.gpadl(gpadl.handle()).is_none());
    let buffer = gpadl.delete(&passive());
    assert_eq!(&buffer[0].0[..4], b"kept");
    rig.finish();
}

// ---- scenario 4: teardown racing senders on other threads ------------------------------------

/// Once: `disable()` on one thread while a pool was dropped on another freed storage KMCL still
/// completed into. Now lifecycle calls need the unique owner (`&mut`, the `compile_fail` doctest
/// on `Channel`), pool storage lives until teardown, and every send holds the channel's rundown
/// reference. Two threads send through a pool and a `ChannelRef` while the owner closes: every
/// accepted send is completed exactly once, later sends fail cleanly, nothing leaks.
#[test]
fn teardown_while_other_threads_send() {
    use vmbus_kmcl::{PacketPool, PoolWord};
    for version in [SimVersion::V1, SimVersion::V5] {
        let rig = rig(version);
        let channel = rig.open(&config(), Recorder::new(Incoming::Drop));
        let words = PacketPool::words_needed(&channel, 8).unwrap();
        let pool = channel
            .attach_packet_pool(vec![PoolWord::ZERO; words].into_boxed_slice())
            .unwrap();
        let reference = channel.new_ref();
        let observer = channel.new_ref();
        let pool_sender = std::thread::spawn(move || {
            let mut accepted = 0_u64;
            for i in 0..2000_u64 {
                match pool.send(&i.to_le_bytes(), SendFlags::WAIT_FOR_COMPLETION, i) {
                    Ok(()) => accepted += 1,
                    Err(NtStatus::INVALID_DEVICE_STATE) => break,
                    Err(_) => std::thread::yield_now(),
                }
            }
            accepted
        });
        let ref_sender = std::thread::spawn(move || {
            let mut accepted = 0_u64;
            for i in 0..2000_u64 {
                match reference.send(&i.to_le_bytes(), SendFlags::WAIT_FOR_COMPLETION, i) {
                    Ok(()) => accepted += 1,
                    Err(NtStatus::INVALID_DEVICE_STATE) => break,
                    Err(_) => std::thread::yield_now(),
                }
            }
            accepted
        });
        std::thread::sleep(std::time::Duration::from_millis(2));
        channel.close(&passive());
        let accepted = pool_sender.join().unwrap() + ref_sender.join().unwrap();
        let h = observer.handler();
        assert_eq!(
            h.completed.load(Ordering::SeqCst),
            accepted,
            "{version:?}: every accepted send completed once"
        );
        drop(observer);
        rig.finish();
    }
}

// ---- scenario 5 and pended packets --------------------------------------------------------

/// Pends every packet into a queue that another thread completes.
struct Pender {
    queue: std::sync::Mutex<Vec<vmbus_kmcl::PendedPacket<Pender>>>,
    refused: std::sync::atomic::AtomicU32,
}

impl vmbus_kmcl::ChannelHandler for Pender {
    type PacketContext = ();
    fn process_packet(
        &self,
        _: &vmbus_kmcl::ChannelCore<Self>,
        packet: vmbus_kmcl::IncomingPacket<'_, Self>,
    ) {
        match packet.pend() {
            Ok(pended) => self.queue.lock().unwrap().push(pended),
            Err(packet) => {
                self.refused.fetch_add(1, Ordering::SeqCst);
                drop(packet);
            }
        }
    }
}

fn pender() -> Pender {
    Pender {
        queue: std::sync::Mutex::new(Vec::new()),
        refused: std::sync::atomic::AtomicU32::new(0),
    }
}

/// Scenario 5 was `let d = p.data(); p.complete(..); d[0]` compiling (the `compile_fail`
/// doctest on `HostBytes` now). A pended packet's bytes stay readable until it is completed
/// from another thread, and the host receives the response.
#[test]
fn pended_packets_complete_from_another_thread() {
    for version in [SimVersion::V1, SimVersion::V5] {
        let rig = rig(version);
        {
            let channel = rig.open(&config(), pender());
            for i in 0..8_u8 {
                rig.echo.send_unsolicited(&[i; 16]);
            }
            let h = channel.handler();
            assert!(
                wait_until(|| h.queue.lock().unwrap().len() == 8),
                "{version:?}"
            );
            let pended: Vec<_> = std::mem::take(&mut *h.queue.lock().unwrap());
            std::thread::spawn(move || {
                for packet in pended {
                    let mut data = [0_u8; 16];
                    assert_eq!(packet.copy_data(&mut data).unwrap(), 16);
                    let reply: Vec<u8> = data.iter().map(|b| b + 100).collect();
                    packet.complete(&reply).unwrap();
                }
            })
            .join()
            .unwrap();
            assert!(wait_until(|| rig.echo.stats().unsolicited_completed == 8));
            let mut responses = rig.echo.unsolicited_responses();
            responses.sort();
            for (i, response) in responses.iter().enumerate() {
                assert_eq!(&response[..16], &[i as u8 + 100; 16], "{version:?}");
            }
            channel.close(&passive());
        }
        rig.finish();
    }
}

/// Disable cancels what is still pended (so it never waits on the driver), the handles then
/// report `STATUS_CANCELLED`, and the channel can be enabled again with the slots reusable.
#[test]
fn disable_cancels_pended_packets() {
    for version in [SimVersion::V1, SimVersion::V5] {
        let rig = rig(version);
        {
            let mut channel = rig.open(&config(), pender());
            for i in 0..3_u8 {
                rig.echo.send_unsolicited(&[i; 8]);
            }
            let h = channel.handler();
            assert!(wait_until(|| h.queue.lock().unwrap().len() == 3));
            let pended: Vec<_> = std::mem::take(&mut *h.queue.lock().unwrap());
            channel.disable(&passive());
            for packet in pended {
                let mut data = [0_u8; 8];
                assert_eq!(packet.copy_data(&mut data), Err(NtStatus::CANCELLED));
                assert_eq!(packet.complete(b"late"), Err(NtStatus::CANCELLED));
            }
            channel.enable(&passive()).unwrap();
            rig.echo.send_unsolicited(&[9; 8]);
            let h = channel.handler();
            assert!(wait_until(|| h.queue.lock().unwrap().len() == 1));
            let again = h.queue.lock().unwrap().pop().unwrap();
            again.complete(b"ok").unwrap();
            channel.close(&passive());
        }
        rig.finish();
    }
}

/// A pended packet completing on one thread while the owner disables on another: exactly one
/// of them consumes it, whichever wins, and the verifier sees it consumed once.
#[test]
fn pended_completion_races_disable() {
    for round in 0..20_u32 {
        let rig = rig(if round % 2 == 0 {
            SimVersion::V5
        } else {
            SimVersion::V1
        });
        let mut channel = rig.open(&config(), pender());
        rig.echo.send_unsolicited(&[7; 8]);
        let h = channel.handler();
        assert!(wait_until(|| h.queue.lock().unwrap().len() == 1));
        let packet = h.queue.lock().unwrap().pop().unwrap();
        let completer = std::thread::spawn(move || packet.complete(b"raced"));
        channel.disable(&passive());
        let outcome = completer.join().unwrap();
        assert!(
            outcome == Ok(()) || outcome == Err(NtStatus::CANCELLED),
            "{outcome:?}"
        );
        channel.close(&passive());
        rig.finish();
    }
}

// ---- lifecycle race and IRQL ---------------------------------------------------------------

/// "After disable returns, no callback runs": packets keep arriving from the host while the
/// owner disables; once `disable` has returned the handler's counters no longer move.
#[test]
fn no_callback_after_disable_returns() {
    for version in [SimVersion::V1, SimVersion::V5] {
        let rig = rig(version);
        let mut channel = rig.open(&config(), Recorder::new(Incoming::CompleteReversed));
        for i in 0..64_u8 {
            rig.echo.send_unsolicited(&[i; 32]);
        }
        let reference = channel.new_ref();
        let sender = std::thread::spawn(move || {
            for i in 0..500_u64 {
                if reference
                    .send(&i.to_le_bytes(), SendFlags::WAIT_FOR_COMPLETION, i)
                    .is_err()
                {
                    break;
                }
            }
        });
        channel.disable(&passive());
        let h = channel.handler();
        let seen = (
            h.deliveries.load(Ordering::SeqCst),
            h.completed.load(Ordering::SeqCst),
            h.batches.load(Ordering::SeqCst),
        );
        sender.join().unwrap();
        std::thread::sleep(std::time::Duration::from_millis(20));
        assert_eq!(
            seen,
            (
                h.deliveries.load(Ordering::SeqCst),
                h.completed.load(Ordering::SeqCst),
                h.batches.load(Ordering::SeqCst),
            ),
            "{version:?}: a callback ran after disable returned"
        );
        channel.close(&passive());
        rig.finish();
    }
}

/// Dropping the owner above PASSIVE_LEVEL must not block (`VmbChannelDisable` waits): the
/// channel is leaked instead, so KMCL keeps running on valid memory. The emulator then reports
/// the leaked channel, which is the expected finding here.
#[test]
fn owner_dropped_at_dispatch_leaks_instead_of_blocking() {
    let rig = rig(SimVersion::V5);
    let channel = rig.open(&config(), Recorder::new(Incoming::Drop));
    common::at_irql(vmbus_kmcl::Irql::DISPATCH, || {
        assert!(vmbus_kmcl::PassiveLevel::check().is_none());
        drop(channel);
    });
    let report = rig.bus.verifier();
    assert_eq!(report.live_channels, 1, "leaked, not torn down");
    assert!(report.violations.is_empty(), "{report:?}");
}

// ---- panic policy --------------------------------------------------------------------------

/// Panics on the first packet.
struct Panicker;

impl vmbus_kmcl::ChannelHandler for Panicker {
    type PacketContext = ();
    fn process_packet(
        &self,
        _: &vmbus_kmcl::ChannelCore<Self>,
        _: vmbus_kmcl::IncomingPacket<'_, Self>,
    ) {
        panic!("handler bug");
    }
}

const PANIC_CHILD: &str = "VMBUS_KMCL_PANIC_CHILD";

/// A handler panic cannot unwind into KMCL: the trampolines are `extern "system"`, so the
/// process aborts at the boundary (in a kernel build, `panic=abort` runs the driver's panic
/// handler instead). Runs the scenario in a child process and checks how it died.
#[test]
#[cfg_attr(miri, ignore = "spawns a process")]
fn handler_panic_aborts_at_the_kmcl_boundary() {
    if std::env::var_os(PANIC_CHILD).is_some() {
        let rig = rig(SimVersion::V5);
        let channel = rig.open(&config(), Panicker);
        rig.offer.host_send(b"boom", true).unwrap();
        std::thread::sleep(std::time::Duration::from_secs(5));
        drop(channel);
        return; // not reached: the DPC thread aborts the process
    }
    let output = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "handler_panic_aborts_at_the_kmcl_boundary",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(PANIC_CHILD, "1")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "the child survived: {stderr}");
    assert!(stderr.contains("handler bug"), "{stderr}");
    assert!(
        stderr.contains("panic in a function that cannot unwind"),
        "aborted at the extern boundary: {stderr}"
    );
    #[cfg(unix)]
    {
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(output.status.signal(), Some(6), "SIGABRT");
    }
}

/// KMCL waits for every incoming packet once delivery stops, so a packet still pended after the
/// handler's `suspend` is cancelled (completed with no response) by the crate: a pause does not
/// hang or force-release it, a later `complete` reports `STATUS_CANCELLED`, and delivery
/// resumes after `start`. The same holds for a host rescind.
#[test]
fn pause_and_rescind_cancel_pended_packets() {
    for version in [SimVersion::V1, SimVersion::V5] {
        let rig = rig(version);
        {
            let mut channel = rig.open(&config(), pender());
            rig.echo.send_unsolicited(&[1; 8]);
            let h = channel.handler();
            assert!(wait_until(|| h.queue.lock().unwrap().len() == 1));
            let held = h.queue.lock().unwrap().pop().unwrap();
            channel.pause(&passive()).unwrap();
            assert_eq!(held.complete(b"late"), Err(NtStatus::CANCELLED));
            assert_eq!(rig.bus.verifier().uncompleted_incoming, 0, "{version:?}");
            channel.start(&passive()).unwrap();
            rig.echo.send_unsolicited(&[2; 8]);
            let h = channel.handler();
            assert!(wait_until(|| h.queue.lock().unwrap().len() == 1));
            let second = h.queue.lock().unwrap().pop().unwrap();
            rig.offer.rescind();
            assert_eq!(second.complete(b"late"), Err(NtStatus::CANCELLED));
            channel.close(&passive());
        }
        rig.finish();
    }
}

/// Found by the whole-stack fuzzer: a send on a paused channel reached KMCL, which takes no
/// sends while paused (the emulator flags it). Sends are refused from the start of a pause until
/// KMCL reports the channel started again, and teardown from the paused state is clean.
#[test]
fn sends_are_refused_while_paused() {
    for version in [SimVersion::V1, SimVersion::V5] {
        let rig = rig(version);
        {
            let mut channel = rig.open(&config(), Recorder::new(Incoming::Drop));
            channel.pause(&passive()).unwrap();
            assert_eq!(
                channel.send(b"paused", SendFlags::WAIT_FOR_COMPLETION, 1),
                Err(NtStatus::INVALID_DEVICE_STATE),
                "{version:?}"
            );
            channel.start(&passive()).unwrap();
            channel
                .send(b"running", SendFlags::WAIT_FOR_COMPLETION, 2)
                .unwrap();
            let h = channel.handler();
            assert!(wait_until(|| h.completed.load(Ordering::SeqCst) == 1));
            channel.pause(&passive()).unwrap();
            channel.close(&passive());
        }
        rig.finish();
    }
}
