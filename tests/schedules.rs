//! The safe layer's lifecycle and teardown under seeded schedules
//! (`vmbus_kmcl_sim::schedule`): the emulator's host, DPC and passive threads and this test's own
//! threads run one at a time, a seed choosing who runs at each switch point, so each run is one
//! reproducible interleaving. Every scenario runs under many seeds and ends with a clean
//! verifier; a failure names its seed, and `VMBUS_SIM_SEED=<seed>` replays it
//! (`VMBUS_SIM_SEEDS=<n>` changes how many seeds each scenario runs).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use std::sync::Mutex;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use common::{Incoming, Recorder, passive, rig, wait_until};
use vmbus_kmcl::{
    Channel, ChannelConfig, ChannelCore, ChannelHandler, Completion, GpadlFlags, IncomingPacket,
    NtStatus, Page, PassiveLevel, PendedPacket, SendFlags,
};
use vmbus_kmcl_sim::InterfaceVersion as SimVersion;
use vmbus_kmcl_sim::schedule;

/// Seeds per scenario (CI's budget; `VMBUS_SIM_SEEDS` overrides).
const SEEDS: u64 = 40;

fn config() -> ChannelConfig {
    ChannelConfig::new()
        .ring_buffer_pages(4, 4)
        .maximum_packet_size(512)
}

/// V1 and V5 alternate with the seed: the two ends of the table.
fn version(seed: u64) -> SimVersion {
    if seed.is_multiple_of(2) {
        SimVersion::V5
    } else {
        SimVersion::V1
    }
}

/// Sends `count` pings through `send`, returning how many were accepted.
fn send_pings(count: u64, send: impl Fn(u64) -> vmbus_kmcl::Result<()>) -> u64 {
    (0..count).filter(|&i| send(i).is_ok()).count() as u64
}

/// A scheduled thread that sends `count` pings (contexts 0..count) through its own
/// `ChannelRef` and returns how many were accepted.
fn spawn_sender(channel: &Channel<Recorder>, count: u64) -> schedule::JoinHandle<u64> {
    let sender = channel.new_ref();
    schedule::spawn("sender", move || {
        send_pings(count, |i| {
            sender.send(&i.to_le_bytes(), SendFlags::WAIT_FOR_COMPLETION, i)
        })
    })
    .unwrap()
}

/// Every accepted send completed exactly once, each context once.
fn assert_each_completed_once(recorder: &Recorder, accepted: u64) {
    let completions = recorder.completions.lock().unwrap();
    assert_eq!(
        completions.len() as u64,
        accepted,
        "one completion per send"
    );
    let mut contexts: Vec<u64> = completions.iter().map(|c| c.2).collect();
    contexts.sort_unstable();
    contexts.dedup();
    assert_eq!(
        contexts.len() as u64,
        accepted,
        "no context completed twice"
    );
    for (status, _, _) in completions.iter() {
        assert!(
            matches!(
                *status,
                NtStatus::SUCCESS | NtStatus::CANCELLED | NtStatus::DEVICE_REMOVED
            ),
            "{status:?}"
        );
    }
}

/// Open, send with completions, receive host packets, pause and start, close.
fn lifecycle(seed: u64) -> u64 {
    let rig = rig(version(seed));
    let accepted;
    {
        let irql = passive();
        let mut channel = rig.open(&config(), Recorder::new(Incoming::CompleteReversed));
        let mut sent = send_pings(3, |i| {
            channel.send(&i.to_le_bytes(), SendFlags::WAIT_FOR_COMPLETION, i)
        });
        rig.offer.host_send(b"host one", true).unwrap();
        rig.offer.host_send(b"host two", true).unwrap();
        assert!(wait_until(|| channel
            .handler()
            .completed
            .load(Ordering::SeqCst)
            == sent));
        assert!(wait_until(|| rig.echo.stats().unsolicited_completed == 2));
        channel.pause(&irql).unwrap();
        assert_eq!(
            channel.send(b"paused", SendFlags::empty(), 99),
            Err(NtStatus::INVALID_DEVICE_STATE)
        );
        channel.start(&irql).unwrap();
        sent += send_pings(2, |i| {
            channel.send(&i.to_le_bytes(), SendFlags::WAIT_FOR_COMPLETION, 10 + i)
        });
        let observer = channel.new_ref();
        channel.close(&irql);
        accepted = sent;
        assert_each_completed_once(observer.handler(), accepted);
        let h = observer.handler();
        assert_eq!(h.opened.load(Ordering::SeqCst), 1);
        assert_eq!(h.closed.load(Ordering::SeqCst), 1);
        assert_eq!(h.received.lock().unwrap().len(), 2);
    }
    rig.finish();
    accepted
}

#[test]
fn lifecycle_under_many_seeds() {
    let sweep = schedule::sweep(0, SEEDS, |seed| {
        assert_eq!(lifecycle(seed), 5);
    });
    assert!(
        sweep.runs < 2 || sweep.distinct_traces > 1,
        "seeds must give different interleavings: {sweep:?}"
    );
}

#[test]
fn one_seed_gives_one_trace() {
    let a = schedule::run(42, || lifecycle(42));
    let b = schedule::run(42, || lifecycle(42));
    assert_eq!(a.trace_hash, b.trace_hash, "same seed, same trace");
    assert_eq!(a.steps, b.steps);
    assert!(
        a.steps > 100,
        "the run went through the scheduler: {}",
        a.steps
    );
    assert!(a.finding.is_none(), "{:?}", a.finding);
    let c = schedule::run(43, || lifecycle(42));
    assert_ne!(
        a.trace_hash, c.trace_hash,
        "another seed, another interleaving"
    );
}

/// The owner is dropped while another thread sends through a `ChannelRef`: each accepted send
/// completes once (success or cancelled), later sends are refused, nothing leaks.
#[test]
fn drop_while_another_thread_sends() {
    schedule::sweep(100, SEEDS, |seed| {
        let rig = rig(version(seed));
        {
            let channel = rig.open(&config(), Recorder::new(Incoming::Drop));
            let observer = channel.new_ref();
            let thread = spawn_sender(&channel, 8);
            schedule::yield_now();
            drop(channel);
            let accepted = thread.join().unwrap();
            assert_each_completed_once(observer.handler(), accepted);
            assert_eq!(
                observer.send(b"late", SendFlags::empty(), 99),
                Err(NtStatus::INVALID_DEVICE_STATE)
            );
        }
        rig.finish();
    });
}

/// Pause and start race a sending thread; then the channel closes under it.
#[test]
fn pause_and_start_while_another_thread_sends() {
    schedule::sweep(200, SEEDS, |seed| {
        let rig = rig(version(seed));
        {
            let irql = passive();
            let mut channel = rig.open(&config(), Recorder::new(Incoming::Drop));
            let observer = channel.new_ref();
            let thread = spawn_sender(&channel, 8);
            for _ in 0..2 {
                channel.pause(&irql).unwrap();
                channel.start(&irql).unwrap();
            }
            channel.close(&irql);
            let accepted = thread.join().unwrap();
            assert_each_completed_once(observer.handler(), accepted);
        }
        rig.finish();
    });
}

/// The host rescinds the offer while a thread sends and the owner closes.
#[test]
fn rescind_while_sending_and_closing() {
    schedule::sweep(300, SEEDS, |seed| {
        let rig = rig(version(seed));
        {
            let channel = rig.open(&config(), Recorder::new(Incoming::CompleteReversed));
            let observer = channel.new_ref();
            let thread = spawn_sender(&channel, 6);
            rig.offer.host_send(b"from host", true).unwrap_or_default();
            rig.offer.rescind();
            channel.close(&passive());
            let accepted = thread.join().unwrap();
            assert_each_completed_once(observer.handler(), accepted);
            assert_eq!(observer.handler().closed.load(Ordering::SeqCst), 1);
        }
        rig.finish();
    });
}

/// A GPADL handle dropped on another thread while the channel closes: the buffer is freed
/// once, by whichever side finishes the deletion, and the host's mapping is gone.
#[test]
fn gpadl_dropped_on_another_thread_during_close() {
    schedule::sweep(400, SEEDS, |seed| {
        let rig = rig(version(seed));
        {
            let irql = passive();
            let channel = rig.open(&config(), Recorder::new(Incoming::Drop));
            let gpadl = channel
                .create_gpadl(
                    &irql,
                    vec![Page::ZERO; 2].into_boxed_slice(),
                    GpadlFlags::empty(),
                )
                .unwrap();
            let handle = gpadl.handle();
            let thread = schedule::spawn("gpadl owner", move || drop(gpadl)).unwrap();
            channel.close(&irql);
            thread.join().unwrap();
            assert!(rig.offer.gpadl(handle).is_none(), "the host's view is gone");
        }
        rig.finish();
    });
}

/// Opens a channel under `seed`, runs `op` on it while a second thread rescinds the offer, then
/// closes it and hands the handler to `check`; the verifier must end clean (it holds nothing
/// against a guest that cannot see the rescind coming).
fn while_the_host_rescinds(
    seed: u64,
    op: impl FnOnce(&mut Channel<Recorder>, &PassiveLevel),
    check: impl FnOnce(&Recorder),
) {
    let rig = rig(version(seed));
    {
        let irql = passive();
        let mut channel = rig.open(&config(), Recorder::new(Incoming::Drop));
        let offer = rig.offer.clone();
        let host = schedule::spawn("host", move || offer.rescind()).unwrap();
        op(&mut channel, &irql);
        host.join().unwrap();
        let observer = channel.new_ref();
        channel.close(&irql);
        assert_eq!(observer.handler().closed.load(Ordering::SeqCst), 1);
        check(observer.handler());
    }
    rig.finish();
}

/// A GPADL created while the host rescinds: it succeeds or fails with `STATUS_DEVICE_REMOVED`.
#[test]
fn gpadl_created_while_the_host_rescinds() {
    schedule::sweep(600, SEEDS, |seed| {
        let op = |channel: &mut Channel<Recorder>, irql: &PassiveLevel| {
            let buffer = vec![Page::ZERO; 1].into_boxed_slice();
            match channel.create_gpadl(irql, buffer, GpadlFlags::empty()) {
                Ok(gpadl) => drop(gpadl),
                Err(e) => assert_eq!(e.status, NtStatus::DEVICE_REMOVED, "{:?}", e.status),
            }
        };
        while_the_host_rescinds(seed, op, |_| {});
    });
}

/// A pause while the host rescinds: the driver's suspend step runs at most once.
#[test]
fn pause_while_the_host_rescinds() {
    schedule::sweep(700, SEEDS, |seed| {
        while_the_host_rescinds(
            seed,
            // Refused or done: either is right once the host may have closed the channel.
            |channel, irql| {
                let _ = channel.pause(irql);
            },
            |h| assert!(h.suspended.load(Ordering::SeqCst) <= 1, "suspend ran twice"),
        );
    });
}

/// A start after a pause, racing the rescind: started runs at most once more than the open's.
#[test]
fn start_while_the_host_rescinds() {
    schedule::sweep(900, SEEDS, |seed| {
        while_the_host_rescinds(
            seed,
            |channel, irql| {
                // The rescind may already have closed the channel before the pause.
                if channel.pause(irql).is_ok() {
                    let _ = channel.start(irql);
                }
            },
            |h| assert!(h.started.load(Ordering::SeqCst) <= 2, "started ran 3 times"),
        );
    });
}

/// A synchronous request waits for its response on another thread while the owner closes: it
/// returns the echoed bytes or an error (cancelled, device state), never hangs the close, and
/// nothing leaks.
#[test]
fn synchronous_request_while_closing() {
    schedule::sweep(800, SEEDS, |seed| {
        let rig = rig(version(seed));
        {
            let channel = rig.open(&config(), Recorder::new(Incoming::Drop));
            let requester = channel.new_ref();
            let thread = schedule::spawn("requester", move || {
                let mut response = [0_u8; 8];
                requester
                    .send_synchronous(
                        &passive(),
                        b"request!",
                        SendFlags::empty(),
                        &mut response,
                        std::time::Duration::from_secs(1),
                    )
                    .map(|n| response[..n].to_vec())
            })
            .unwrap();
            schedule::yield_now();
            channel.close(&passive());
            match thread.join().unwrap() {
                Ok(response) => assert_eq!(response, b"request!"),
                Err(status) => assert!(
                    matches!(status, NtStatus::CANCELLED | NtStatus::INVALID_DEVICE_STATE),
                    "{status:?}"
                ),
            }
        }
        rig.finish();
    });
}

/// The last `ChannelRef` is dropped on another thread while the owner closes: the channel is
/// released once, after the close, by whichever drop is last.
#[test]
fn last_reference_dropped_on_another_thread() {
    schedule::sweep(1000, SEEDS, |seed| {
        let rig = rig(version(seed));
        {
            let channel = rig.open(&config(), Recorder::new(Incoming::CompleteReversed));
            let reference = channel.new_ref();
            rig.offer.host_send(b"host one", true).unwrap();
            let thread = schedule::spawn("holder", move || {
                schedule::yield_now();
                let _ = reference.send(b"last", SendFlags::empty(), 7);
                drop(reference);
            })
            .unwrap();
            channel.close(&passive());
            thread.join().unwrap();
        }
        rig.finish();
    });
}

/// Pends every packet into a queue for another thread.
struct Pender {
    queue: Mutex<Vec<PendedPacket<Pender>>>,
    pended: AtomicU32,
}

impl ChannelHandler for Pender {
    type PacketContext = ();
    fn process_packet(&self, _: &ChannelCore<Self>, packet: IncomingPacket<'_, Self>) {
        match packet.pend() {
            Ok(p) => {
                self.queue.lock().unwrap().push(p);
                self.pended.fetch_add(1, Ordering::SeqCst);
            }
            Err(packet) => packet.fail(),
        }
    }
}

/// Pended packets completed on another thread while the owner closes: each is completed by the
/// thread or cancelled by the close, once; nothing leaks (the verifier reports a packet
/// completed twice or never).
#[test]
fn pended_packets_completed_while_closing() {
    schedule::sweep(500, SEEDS, |seed| {
        let rig = rig(version(seed));
        {
            let channel = rig.open(
                &config(),
                Pender {
                    queue: Mutex::new(Vec::new()),
                    pended: AtomicU32::new(0),
                },
            );
            for i in 0..3_u8 {
                rig.offer.host_send(&[i; 8], true).unwrap();
            }
            assert!(wait_until(|| channel
                .handler()
                .pended
                .load(Ordering::SeqCst)
                == 3));
            let pended = core::mem::take(&mut *channel.handler().queue.lock().unwrap());
            let thread = schedule::spawn("completer", move || {
                pended
                    .into_iter()
                    .map(|p| p.complete(b"done"))
                    .filter(Result::is_ok)
                    .count()
            })
            .unwrap();
            channel.close(&passive());
            let completed = thread.join().unwrap();
            assert!(completed <= 3);
            // Each packet reaches the host at most once: with "done" if the thread completed
            // it, empty if the close cancelled it first. What is still in the ring when the
            // channel closes goes with it.
            let responses = rig.echo.unsolicited_responses();
            assert!(responses.len() <= 3, "{responses:?}");
            // (The ring carries lengths in 8-byte units: "done" arrives padded.)
            let done = responses
                .iter()
                .filter(|r| r.as_slice() == b"done\0\0\0\0")
                .count();
            let empty = responses.iter().filter(|r| r.is_empty()).count();
            assert_eq!(done + empty, responses.len(), "{responses:?}");
            assert!(done <= completed, "{responses:?}, {completed} completed");
        }
        rig.finish();
    });
}

// ---- a planted race, found by a sweep and replayed by its seed -------------------------------

/// A handler with a deliberate bug (test-only): it counts completions with a load and a store
/// around a send, instead of one atomic add, and the test thread does the same around its own
/// sends. An update is lost whenever a completion runs between the other side's load and store.
struct RacyCounter {
    total: AtomicU64,
    completions: AtomicU64,
}

impl ChannelHandler for RacyCounter {
    type PacketContext = u64;
    fn packet_completed(&self, core: &ChannelCore<Self>, done: Completion<'_, u64>) {
        let n = self.total.load(Ordering::SeqCst);
        if done.context < 3 {
            // A follow-up send: a KMCL call between the load and the store.
            let _ = core.send(b"follow-up", SendFlags::WAIT_FOR_COMPLETION, 100);
        }
        self.total.store(n + 1, Ordering::SeqCst);
        self.completions.fetch_add(1, Ordering::SeqCst);
    }
}

/// One run of the racy scenario: true if an update was lost.
fn racy(seed: u64) -> bool {
    let rig = rig(version(seed));
    let lost;
    {
        let channel = rig.open(
            &config(),
            RacyCounter {
                total: AtomicU64::new(0),
                completions: AtomicU64::new(0),
            },
        );
        let h = channel.handler();
        let mut expected = 0;
        for i in 0..3_u64 {
            let n = h.total.load(Ordering::SeqCst);
            channel
                .send(&i.to_le_bytes(), SendFlags::WAIT_FOR_COMPLETION, i)
                .unwrap();
            h.total.store(n + 1, Ordering::SeqCst);
            expected += 2; // our own count and the completion's
        }
        expected += 3; // the three follow-ups' completions
        assert!(wait_until(|| h.completions.load(Ordering::SeqCst) == 6));
        lost = h.total.load(Ordering::SeqCst) != expected;
    }
    rig.finish();
    lost
}

#[test]
fn a_planted_race_is_found_by_a_sweep_and_replayed_by_its_seed() {
    let runs: Vec<_> = (0..60)
        .map(|seed| schedule::run(seed, || racy(seed)))
        .collect();
    let failing: Vec<_> = runs.iter().filter(|r| r.value).collect();
    let passing = runs.len() - failing.len();
    assert!(
        !failing.is_empty(),
        "the sweep finds the lost update in some interleaving"
    );
    assert!(passing > 0, "and it is a race, not a plain bug");
    for found in failing.iter().take(3) {
        let replay = schedule::run(found.seed, || racy(found.seed));
        assert!(replay.value, "seed {} replays the lost update", found.seed);
        assert_eq!(replay.trace_hash, found.trace_hash, "seed {}", found.seed);
    }
}

#[test]
#[should_panic(expected = "seeded schedule failed: seed")]
fn a_failing_sweep_names_its_seed() {
    schedule::sweep(0, 60, |seed| assert!(!racy(seed), "lost an update"));
}
