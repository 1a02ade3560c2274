//! The seeded scheduler itself (`vmbus_kmcl_sim::schedule`): one seed one trace, virtual time,
//! and the findings it reports instead of hanging (a deadlock, a hang, threads left running).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::{Duration, Instant};

use vmbus_kmcl_sim::schedule;

/// Three threads append their index to a log at yield points: the log is the interleaving.
fn interleaving(seed: u64) -> schedule::Run<Vec<u32>> {
    schedule::run(seed, || {
        let log = Arc::new(std::sync::Mutex::new(Vec::new()));
        let threads: Vec<_> = (1..=3)
            .map(|i| {
                let log = Arc::clone(&log);
                schedule::spawn(format!("t{i}"), move || {
                    for _ in 0..4 {
                        log.lock().unwrap().push(i);
                        schedule::yield_now();
                    }
                })
                .unwrap()
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        Arc::try_unwrap(log).unwrap().into_inner().unwrap()
    })
}

#[test]
fn a_seed_fixes_the_interleaving_and_the_trace() {
    let a = interleaving(1);
    let b = interleaving(1);
    assert!(a.finding.is_none(), "{:?}", a.finding);
    assert_eq!(a.value, b.value);
    assert_eq!(a.trace_hash, b.trace_hash);
    assert!(a.finding.is_none(), "{:?}", a.finding);
    let orders: std::collections::BTreeSet<Vec<u32>> =
        (0..20).map(|seed| interleaving(seed).value).collect();
    assert!(
        orders.len() > 5,
        "seeds choose different interleavings: {orders:?}"
    );
}

#[test]
fn sleeps_are_virtual() {
    let started = Instant::now();
    let run = schedule::run(5, || {
        let t = schedule::spawn("sleeper", || schedule::sleep(Duration::from_secs(30))).unwrap();
        schedule::sleep(Duration::from_secs(10));
        t.join().unwrap();
    });
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "nothing slept for real"
    );
    assert_eq!(run.virtual_time, Duration::from_secs(30));
    assert!(run.finding.is_none(), "{:?}", run.finding);
}

#[test]
fn a_poll_nobody_can_satisfy_is_reported_as_a_deadlock() {
    let run = schedule::run(0, || {
        let never = AtomicBool::new(false);
        for _ in 0..100 {
            if never.load(Ordering::SeqCst) {
                break;
            }
            schedule::yield_now();
        }
    });
    let finding = run.finding.expect("a finding");
    assert!(finding.starts_with("deadlock"), "{finding}");
}

#[test]
fn endless_waiting_with_a_deadline_is_reported_as_a_hang() {
    let run = schedule::run(0, || {
        for _ in 0..2_000 {
            if !schedule::is_scheduled() {
                break;
            }
            schedule::sleep(Duration::from_secs(1));
        }
    });
    let finding = run.finding.expect("a finding");
    assert!(finding.starts_with("hang"), "{finding}");
}

#[test]
fn a_panicking_thread_does_not_stop_the_run() {
    let run = schedule::run(3, || {
        let t = schedule::spawn("panics", || panic!("planted")).unwrap();
        schedule::yield_now();
        t.join().is_err()
    });
    assert!(run.value);
}

#[test]
fn threads_left_running_are_a_finding() {
    let release = Arc::new(AtomicBool::new(false));
    let r = Arc::clone(&release);
    let run = schedule::run(0, || {
        let t = schedule::spawn("left", move || {
            while !r.load(Ordering::SeqCst) {
                schedule::yield_now();
            }
        })
        .unwrap();
        schedule::yield_now();
        t
    });
    assert!(
        run.finding
            .as_deref()
            .unwrap_or("")
            .contains("still running"),
        "{:?}",
        run.finding
    );
    release.store(true, Ordering::SeqCst);
    run.value.join().unwrap();
}

#[test]
fn sweep_runs_the_given_seeds() {
    let count = AtomicU32::new(0);
    let sweep = schedule::sweep(10, 7, |_| {
        count.fetch_add(1, Ordering::SeqCst);
    });
    if std::env::var_os(schedule::SEED_VAR).is_none()
        && std::env::var_os(schedule::SEEDS_VAR).is_none()
    {
        assert_eq!(sweep.runs, 7);
        assert_eq!(count.load(Ordering::SeqCst), 7);
    }
}
