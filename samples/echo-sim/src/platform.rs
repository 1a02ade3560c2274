//! [`StdPlatform`]: the client's [`Platform`] on a host (the emulator's "DPC" threads call
//! `notify` and `acks_queued`, the harness thread waits), and [`AckWorker`], the thread that
//! acknowledges pended host packets, as the driver's WDF work item does.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Condvar, Mutex, MutexGuard, OnceLock, PoisonError};
use std::thread::ThreadId;
use std::time::{Duration, Instant};

use vmbus_echo::client::{EchoClient, Platform};
use vmbus_kmcl::ChannelRef;
use vmbus_kmcl_sim::schedule::{self, JoinHandle};
use vmbus_kmcl_sim::scope;

/// How long the ack worker sleeps without a signal before it looks at the queue anyway.
const WORKER_POLL: Duration = Duration::from_millis(20);

/// The ack worker's signal, under one mutex.
#[derive(Debug, Default)]
struct AckSignal {
    /// `acks_queued` was called since the worker last looked.
    queued: bool,
    /// The worker must not complete anything (a test holds it).
    held: bool,
    /// The worker must exit.
    stop: bool,
}

/// `Instant`-based clock, a manual-reset event (a flag under a mutex and a condition
/// variable), and the signal of the [`AckWorker`]: the host counterparts of the driver's
/// `KeQueryPerformanceCounter`, `KEVENT` and `WdfWorkItemEnqueue`.
///
/// Created inside a seeded schedule (`vmbus_kmcl_sim::schedule::run`), its clock is the run's
/// virtual time and its waits hand the turn on, so the echo client runs under schedules too.
///
/// It also records which threads took part in acknowledging host packets, so tests can check
/// that the acknowledgements were sent from another thread than the one that received them.
#[derive(Debug)]
pub struct StdPlatform {
    origin: Instant,
    /// The schedule's virtual time at creation, when created under one.
    virtual_origin: Option<Duration>,
    signalled: Mutex<bool>,
    cv: Condvar,
    acks: Mutex<AckSignal>,
    acks_cv: Condvar,
    /// The thread of the first `acks_queued` call (the receive path: an emulator DPC thread).
    receive_thread: OnceLock<ThreadId>,
    /// The ack worker's thread.
    worker_thread: OnceLock<ThreadId>,
    /// `acks_queued` calls.
    acks_signalled: AtomicU64,
    /// Pended packets the worker completed.
    worker_completed: AtomicU64,
}

impl StdPlatform {
    /// A platform whose clock starts now, event clear, worker signal clear.
    #[must_use]
    pub fn new() -> Self {
        Self {
            origin: Instant::now(),
            virtual_origin: schedule::now(),
            signalled: Mutex::new(false),
            cv: Condvar::new(),
            acks: Mutex::new(AckSignal::default()),
            acks_cv: Condvar::new(),
            receive_thread: OnceLock::new(),
            worker_thread: OnceLock::new(),
            acks_signalled: AtomicU64::new(0),
            worker_completed: AtomicU64::new(0),
        }
    }

    fn flag(&self) -> MutexGuard<'_, bool> {
        self.signalled
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    fn ack_signal(&self) -> MutexGuard<'_, AckSignal> {
        self.acks.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Holds (`true`) or releases the ack worker: while held it completes nothing, so pended
    /// packets stay pended (their host sees no acknowledgement yet).
    pub fn hold_acks(&self, held: bool) {
        self.ack_signal().held = held;
        self.acks_cv.notify_all();
    }

    /// The thread that first queued acknowledgements (the receive path), if any did.
    #[must_use]
    pub fn receive_thread(&self) -> Option<ThreadId> {
        self.receive_thread.get().copied()
    }

    /// The ack worker's thread, once it started.
    #[must_use]
    pub fn worker_thread(&self) -> Option<ThreadId> {
        self.worker_thread.get().copied()
    }

    /// How many times the receive path signalled queued acknowledgements.
    #[must_use]
    pub fn acks_signalled(&self) -> u64 {
        self.acks_signalled.load(Ordering::Relaxed)
    }

    /// Pended host packets the ack worker took from the queue and completed.
    #[must_use]
    pub fn worker_completed(&self) -> u64 {
        self.worker_completed.load(Ordering::Relaxed)
    }

    /// Waits until there is work for the ack worker (or `WORKER_POLL` passed while not held);
    /// `false` when it must stop.
    fn wait_for_acks(&self) -> bool {
        loop {
            let (mut signal, timed_out) = schedule::wait_timeout_while(
                &self.acks,
                self.ack_signal(),
                &self.acks_cv,
                WORKER_POLL,
                |s| !s.stop && (s.held || !s.queued),
            );
            if signal.stop {
                return false;
            }
            if !signal.held && signal.queued {
                signal.queued = false;
                return true;
            }
            if timed_out && !signal.held {
                return true;
            }
        }
    }

    fn stop_worker(&self) {
        self.ack_signal().stop = true;
        self.acks_cv.notify_all();
    }
}

impl Default for StdPlatform {
    fn default() -> Self {
        Self::new()
    }
}

impl Platform for StdPlatform {
    fn now_ns(&self) -> u64 {
        let elapsed = match (self.virtual_origin, schedule::now()) {
            (Some(origin), Some(now)) => now.saturating_sub(origin),
            _ => self.origin.elapsed(),
        };
        u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX)
    }

    fn prepare_wait(&self) {
        *self.flag() = false;
    }

    fn notify(&self) {
        *self.flag() = true;
        self.cv.notify_all();
    }

    fn wait(&self, timeout_ns: u64) {
        let _ = schedule::wait_timeout_while(
            &self.signalled,
            self.flag(),
            &self.cv,
            Duration::from_nanos(timeout_ns),
            |signalled| !*signalled,
        );
    }

    fn acks_queued(&self) {
        if self.receive_thread.get().is_none() {
            let _ = self.receive_thread.set(std::thread::current().id());
        }
        self.acks_signalled.fetch_add(1, Ordering::Relaxed);
        self.ack_signal().queued = true;
        self.acks_cv.notify_all();
    }
}

/// The thread that acknowledges pended host packets ([`EchoClient::complete_acks`]) when the
/// receive path signals ([`Platform::acks_queued`]): the host counterpart of the driver's WDF
/// work item. It holds a [`ChannelRef`] to the channel, not a borrow, and runs its completions
/// as driver code (`vmbus_kmcl_sim::scope::as_driver`) so that a counting allocator sees them.
///
/// Dropping it stops and joins the thread.
#[derive(Debug)]
pub struct AckWorker {
    channel: ChannelRef<EchoClient<StdPlatform>>,
    thread: Option<JoinHandle<()>>,
}

impl AckWorker {
    /// Starts the worker of `channel`'s client.
    ///
    /// # Errors
    /// The error of spawning the thread.
    pub fn start(channel: ChannelRef<EchoClient<StdPlatform>>) -> std::io::Result<Self> {
        let worker = channel.clone();
        // A plain thread, or a participant when started under a seeded schedule.
        let thread = schedule::spawn("echo-ack-worker", move || work(&worker))?;
        Ok(Self {
            channel,
            thread: Some(thread),
        })
    }
}

impl AckWorker {
    /// The worker's reference to the channel.
    #[must_use]
    pub fn channel(&self) -> &ChannelRef<EchoClient<StdPlatform>> {
        &self.channel
    }

    /// True while the worker thread runs.
    #[must_use]
    pub fn is_running(&self) -> bool {
        self.thread
            .as_ref()
            .is_some_and(|thread| !thread.is_finished())
    }
}

fn work(channel: &ChannelRef<EchoClient<StdPlatform>>) {
    let client = channel.handler();
    let platform = client.platform();
    let _ = platform.worker_thread.set(std::thread::current().id());
    while platform.wait_for_acks() {
        let completed = scope::as_driver(|| client.complete_acks());
        platform
            .worker_completed
            .fetch_add(completed as u64, Ordering::Relaxed);
    }
}

impl Drop for AckWorker {
    fn drop(&mut self) {
        self.channel.handler().platform().stop_worker();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
