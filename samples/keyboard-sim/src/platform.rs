//! [`SimPlatform`]: the keyboard client's [`Platform`] on a host. Its [`InputSink`] is a model
//! of kbdclass's service callback that records every `KEYBOARD_INPUT_DATA` it takes, in storage
//! reserved up front (so the driver's receive path stays allocation-free under test).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use vmbus_kbd::client::{InputSink, Platform};
use vmbus_kbd::protocol::KeyboardInputData;
use vmbus_kmcl::Irql;
use vmbus_kmcl_sim::schedule;

/// Records the sink keeps at most; beyond that it takes nothing (as a full class queue).
pub const SINK_CAPACITY: usize = 1 << 16;

#[derive(Debug)]
struct Shared {
    origin: Instant,
    /// The schedule's virtual time at creation, when created under a seeded schedule.
    virtual_origin: Option<Duration>,
    signalled: Mutex<bool>,
    cv: Condvar,
    records: Mutex<Vec<KeyboardInputData>>,
    connected: AtomicBool,
    /// `deliver` calls made at an IRQL other than DISPATCH_LEVEL (by the IRQL model).
    off_dispatch: AtomicU64,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// `Instant` clock, a manual-reset event, and the recording sink. Cheap to clone: the test
/// keeps a clone to read what the "class driver" received. Created under a seeded schedule
/// (`vmbus_kmcl_sim::schedule`), its clock is the run's virtual time and its wait hands the turn
/// on.
#[derive(Clone, Debug)]
pub struct SimPlatform(Arc<Shared>);

impl Default for SimPlatform {
    fn default() -> Self {
        Self::new()
    }
}

impl SimPlatform {
    /// A platform with a connected, empty sink.
    #[must_use]
    pub fn new() -> Self {
        Self(Arc::new(Shared {
            origin: Instant::now(),
            virtual_origin: schedule::now(),
            signalled: Mutex::new(false),
            cv: Condvar::new(),
            records: Mutex::new(Vec::with_capacity(SINK_CAPACITY)),
            connected: AtomicBool::new(true),
            off_dispatch: AtomicU64::new(0),
        }))
    }

    /// Every record the sink took, in order.
    #[must_use]
    pub fn records(&self) -> Vec<KeyboardInputData> {
        lock(&self.0.records).clone()
    }

    /// Records taken so far.
    #[must_use]
    pub fn record_count(&self) -> usize {
        lock(&self.0.records).len()
    }

    /// Forgets the records taken so far (keeps the reserved storage).
    pub fn clear(&self) {
        lock(&self.0.records).clear();
    }

    /// `deliver` calls that did not run at DISPATCH_LEVEL (kbdclass requires it). Meaningful
    /// once the harness's IRQL model is installed (every `Rig` installs it).
    #[must_use]
    pub fn deliveries_off_dispatch(&self) -> u64 {
        self.0.off_dispatch.load(Ordering::SeqCst)
    }

    /// Connects or disconnects the modelled class driver (disconnected: nothing is taken).
    pub fn set_connected(&self, connected: bool) {
        self.0.connected.store(connected, Ordering::SeqCst);
    }
}

impl InputSink for SimPlatform {
    fn deliver(&self, data: &[KeyboardInputData]) -> usize {
        if vmbus_kmcl::irql::current_irql() != Irql::DISPATCH {
            self.0.off_dispatch.fetch_add(1, Ordering::SeqCst);
        }
        if !self.0.connected.load(Ordering::SeqCst) {
            return 0;
        }
        let mut records = lock(&self.0.records);
        let room = records.capacity() - records.len();
        let taken = data.len().min(room);
        records.extend_from_slice(data.get(..taken).unwrap_or(&[]));
        taken
    }
}

impl Platform for SimPlatform {
    fn now_ns(&self) -> u64 {
        let elapsed = match (self.0.virtual_origin, schedule::now()) {
            (Some(origin), Some(now)) => now.saturating_sub(origin),
            _ => self.0.origin.elapsed(),
        };
        u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX)
    }

    fn prepare_wait(&self) {
        *lock(&self.0.signalled) = false;
    }

    fn notify(&self) {
        *lock(&self.0.signalled) = true;
        self.0.cv.notify_all();
    }

    fn wait(&self, timeout_ns: u64) {
        let _ = schedule::wait_timeout_while(
            &self.0.signalled,
            lock(&self.0.signalled),
            &self.0.cv,
            Duration::from_nanos(timeout_ns),
            |signalled| !*signalled,
        );
    }
}
