//! Seeded schedules: the emulator's threads and the test's own threads run one at a time, and a
//! seed chooses who runs next, so a race shows up again whenever its seed is run again.
//!
//! Inside [`run`], every thread that takes part (the thread that called [`run`], the threads it
//! starts with [`spawn`], and the host, DPC and passive threads of every channel opened meanwhile)
//! holds a turn before it runs. A thread gives up its turn only at a *switch point*: entering or
//! leaving a KMCL slot, calling or returning from a driver callback, starting or ending a thread,
//! a wait inside the emulator, a busy wait in the `vmbus-kmcl` library
//! (`vmbus_kmcl::spin::set_spin_hook`), and [`yield_now`] / [`sleep`] in test code. At each one
//! the seeded generator picks the next thread among those that can run. Every switch point is
//! folded into a trace hash ([`Run::trace_hash`]): the same seed gives the same trace.
//!
//! Time is virtual. A wait with a timeout ends when the condition it waits for holds, or, once
//! every thread is waiting, when its deadline is the earliest; nothing sleeps for real. If every
//! thread waits without a deadline, or virtual time passes [`HANG_LIMIT`], the run records a
//! finding ([`Run::finding`]) and lets every thread run freely from then on, as outside a
//! schedule.
//!
//! Why not a model-checking library such as `shuttle` or `loom`: both run the code under test
//! on their own threads (shuttle on continuations in one OS thread) and switch only inside their
//! own synchronisation types. Here the code under test is a driver reached through C function
//! pointers, a `no_std` library that keeps per-thread IRQL in the emulator's `std` thread
//! locals and spins on `core` atomics, and an emulator whose threads block on `std` primitives;
//! none of that can be rewritten onto another crate's types. So this scheduler passes a baton
//! between real OS threads at the emulator's own boundaries.
//!
//! Tests that run under a schedule must not block outside the emulator (no `std::thread::sleep`,
//! no channel `recv`, no spinning on a flag without [`yield_now`]): a thread that blocks while
//! holding the turn stops the run. [`sleep`], [`yield_now`] and [`spawn`] behave like their
//! `std` namesakes outside a schedule, so a test can use them either way.
//!
//! ```
//! use vmbus_kmcl_sim::schedule;
//! use std::sync::Arc;
//! use std::sync::atomic::{AtomicU32, Ordering};
//!
//! let trace = |seed| {
//!     schedule::run(seed, || {
//!         let order = Arc::new(AtomicU32::new(0));
//!         let o = Arc::clone(&order);
//!         let t = schedule::spawn("worker", move || {
//!             schedule::yield_now();
//!             o.fetch_add(1, Ordering::SeqCst);
//!         })
//!         .unwrap();
//!         schedule::yield_now();
//!         order.fetch_add(10, Ordering::SeqCst);
//!         t.join().unwrap();
//!         order.load(Ordering::SeqCst)
//!     })
//! };
//! let (a, b) = (trace(7), trace(7));
//! assert_eq!(a.value, 11);
//! assert_eq!(a.trace_hash, b.trace_hash, "one seed, one trace");
//! assert!(a.finding.is_none());
//! ```

use std::cell::{Cell, RefCell};
use std::panic::{AssertUnwindSafe, catch_unwind, resume_unwind};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

/// Virtual time after which a run that has not finished is reported as a hang (10 minutes).
pub const HANG_LIMIT: Duration = Duration::from_secs(600);

/// Switch points after which a run that has not finished is reported as a hang (a livelock
/// that keeps switching without virtual time passing).
pub const STEP_LIMIT: u64 = 2_000_000;

/// The environment variable that makes [`sweep`] run one seed only (a replay).
pub const SEED_VAR: &str = "VMBUS_SIM_SEED";

/// The environment variable that sets how many seeds [`sweep`] runs (overrides its argument).
pub const SEEDS_VAR: &str = "VMBUS_SIM_SEEDS";

/// The environment variable that prints every switch point of a run to standard error.
pub const TRACE_VAR: &str = "VMBUS_SIM_TRACE";

/// Where a thread gave up its turn (part of the trace).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Point {
    /// A thread started.
    Start = 1,
    /// A thread ended.
    Exit,
    /// A thread was started by this one.
    Spawn,
    /// Entering emulator code (a KMCL slot, an emulator thread's loop).
    Enter,
    /// Leaving emulator code.
    Leave,
    /// Calling into the driver (a callback).
    Call,
    /// Returning from the driver.
    Return,
    /// Waiting inside the emulator for a condition.
    Wait,
    /// A busy wait in the library.
    Spin,
    /// A test's [`yield_now`] or [`sleep`].
    Yield,
    /// Waiting for another thread to end.
    Join,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Status {
    /// Can run.
    Runnable,
    /// Waits for a condition. `stale`: it looked since the last progress of anyone else, so
    /// running it again cannot help until someone else runs.
    Waiting { deadline: Option<u64>, stale: bool },
    /// Ended.
    Done,
}

#[derive(Debug)]
struct Task {
    name: String,
    status: Status,
    /// Signalled when this thread gets the turn (one per thread, so a switch wakes one thread).
    turn: Arc<Condvar>,
}

#[derive(Debug)]
struct State {
    rng: fastrand::Rng,
    tasks: Vec<Task>,
    running: usize,
    /// The schedule was given up (a finding, a panic, or the end of [`run`]): no more turns.
    free: bool,
    /// Virtual nanoseconds since the start of the run.
    now: u64,
    hash: u64,
    steps: u64,
    finding: Option<String>,
    print: bool,
}

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

impl State {
    fn record(&mut self, task: usize, point: Point) {
        self.steps = self.steps.wrapping_add(1);

        let bytes = (task as u64).to_le_bytes();
        for b in bytes.iter().chain(core::iter::once(&(point as u8))) {
            self.hash = (self.hash ^ u64::from(*b)).wrapping_mul(FNV_PRIME);
        }
        if self.print {
            let name = self.tasks.get(task).map_or("?", |t| t.name.as_str());
            eprintln!(
                "schedule: step {} t={}ns {name}: {point:?}",
                self.steps, self.now
            );
        }
    }

    /// Someone ran: every waiter may find its condition true now.
    fn progress(&mut self) {
        for t in &mut self.tasks {
            if let Status::Waiting { stale, .. } = &mut t.status {
                *stale = false;
            }
        }
    }

    fn eligible(status: Status) -> bool {
        matches!(
            status,
            Status::Runnable | Status::Waiting { stale: false, .. }
        )
    }

    /// The seeded choice among the threads that can run; when none can, virtual time jumps to
    /// the earliest deadline. `Err`: nobody can ever run again, with the finding that says why.
    fn pick(&mut self) -> Result<usize, String> {
        if self.steps >= STEP_LIMIT {
            return Err(self.stuck("hang"));
        }
        let mut count = self
            .tasks
            .iter()
            .filter(|t| Self::eligible(t.status))
            .count();
        if count == 0 {
            let deadline = self
                .tasks
                .iter()
                .filter_map(|t| match t.status {
                    Status::Waiting {
                        deadline: Some(d), ..
                    } => Some(d),
                    _ => None,
                })
                .min()
                .ok_or_else(|| self.stuck("deadlock"))?;
            if u128::from(deadline) > HANG_LIMIT.as_nanos() {
                return Err(self.stuck("hang"));
            }
            self.now = self.now.max(deadline);
            let now = self.now;
            for t in &mut self.tasks {
                if let Status::Waiting {
                    deadline: Some(d),
                    stale,
                } = &mut t.status
                    && *d <= now
                {
                    *stale = false;
                }
            }
            count = self
                .tasks
                .iter()
                .filter(|t| Self::eligible(t.status))
                .count();
        }
        let nth = self.rng.usize(..count.max(1));
        self.tasks
            .iter()
            .enumerate()
            .filter(|(_, t)| Self::eligible(t.status))
            .nth(nth)
            .map(|(i, _)| i)
            .ok_or_else(|| self.stuck("deadlock"))
    }

    /// A finding: `kind` (`deadlock` or `hang`) with the threads that had not ended.
    fn stuck(&self, kind: &str) -> String {
        let waiting: Vec<&str> = self
            .tasks
            .iter()
            .filter(|t| t.status != Status::Done)
            .map(|t| t.name.as_str())
            .collect();
        let why = if kind == "hang" {
            format!(
                "not finished after {} switch points and {:?} of virtual time (limits {STEP_LIMIT}, \
                 {HANG_LIMIT:?})",
                self.steps,
                Duration::from_nanos(self.now)
            )
        } else {
            "every thread waits and none has a deadline".to_owned()
        };
        format!("{kind}: {why}; threads: {waiting:?}")
    }

    /// Wakes `task` to look whether it has the turn.
    fn wake(&self, task: usize) {
        if let Some(t) = self.tasks.get(task) {
            t.turn.notify_one();
        }
    }

    /// The condition variable `task` waits on for its turn.
    fn turn_of(&self, task: usize) -> Arc<Condvar> {
        self.tasks
            .get(task)
            .map_or_else(|| Arc::new(Condvar::new()), |t| Arc::clone(&t.turn))
    }

    fn set_status(&mut self, task: usize, status: Status) {
        if let Some(t) = self.tasks.get_mut(task) {
            t.status = status;
        }
    }
}

/// One seeded run's shared state: the baton and who holds it.
#[derive(Debug)]
struct Scheduler {
    state: Mutex<State>,
}

/// How a wait ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Woken {
    /// The thread has its turn again; `timed_out`: its deadline has passed in virtual time.
    Turn { timed_out: bool },
    /// The schedule was given up: wait as outside a schedule.
    Free,
}

fn guard(m: &Mutex<State>) -> MutexGuard<'_, State> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Scheduler {
    /// Gives the turn to `next` and waits until this thread (`me`) has it again.
    fn hand_over<'a>(
        &'a self,
        mut s: MutexGuard<'a, State>,
        me: usize,
        next: usize,
    ) -> MutexGuard<'a, State> {
        s.running = next;
        if next != me {
            s.wake(next);
            let mine = s.turn_of(me);
            while s.running != me && !s.free {
                s = mine.wait(s).unwrap_or_else(PoisonError::into_inner);
            }
        }
        s
    }

    /// Gives up the schedule: records `finding` (if first) and lets everyone run freely.
    fn give_up(&self, s: &mut State, finding: Option<String>) {
        if s.finding.is_none() {
            s.finding = finding;
        }
        s.free = true;
        for t in &s.tasks {
            t.turn.notify_all();
        }
    }

    fn switch(&self, me: usize, point: Point) {
        let mut s = guard(&self.state);
        if s.free {
            return;
        }
        s.record(me, point);
        s.progress();
        match s.pick() {
            Ok(next) => drop(self.hand_over(s, me, next)),
            Err(finding) => self.give_up(&mut s, Some(finding)),
        }
    }

    fn wait(&self, me: usize, deadline: Option<u64>, point: Point, retry: bool) -> Woken {
        let mut s = guard(&self.state);
        if s.free {
            return Woken::Free;
        }
        s.record(me, point);
        if !retry {
            // The code since this thread's last switch point may have changed what others
            // wait for; a retry only looked.
            s.progress();
        }
        s.set_status(
            me,
            Status::Waiting {
                deadline,
                stale: true,
            },
        );
        let next = match s.pick() {
            Ok(next) => next,
            Err(finding) => {
                self.give_up(&mut s, Some(finding));
                return Woken::Free;
            }
        };
        let mut s = self.hand_over(s, me, next);
        if s.free {
            return Woken::Free;
        }
        s.set_status(me, Status::Runnable);
        Woken::Turn {
            timed_out: deadline.is_some_and(|d| s.now >= d),
        }
    }

    fn exit(&self, me: usize) {
        let mut s = guard(&self.state);
        s.set_status(me, Status::Done);
        if s.free {
            return;
        }
        s.record(me, Point::Exit);
        s.progress();
        if s.tasks.iter().all(|t| t.status == Status::Done) {
            return;
        }
        match s.pick() {
            Ok(next) => {
                s.running = next;
                s.wake(next);
            }
            Err(finding) => self.give_up(&mut s, Some(finding)),
        }
    }

    /// The end of the run (`main` returned): threads still running are a finding, and the
    /// schedule is given up in the same step, so no other thread runs first.
    fn finish(&self, main: usize) {
        let mut s = guard(&self.state);
        s.set_status(main, Status::Done);
        if !s.free {
            s.record(main, Point::Exit);
        }
        let leftover: Vec<&str> = s
            .tasks
            .iter()
            .filter(|t| t.status != Status::Done)
            .map(|t| t.name.as_str())
            .collect();
        let leftover = (!leftover.is_empty())
            .then(|| format!("threads still running after the body returned: {leftover:?}"));
        self.give_up(&mut s, leftover);
    }

    fn add(&self, parent: usize, name: String) -> usize {
        let mut s = guard(&self.state);
        let id = s.tasks.len();
        s.tasks.push(Task {
            name,
            status: Status::Runnable,
            turn: Arc::new(Condvar::new()),
        });
        if !s.free {
            s.record(parent, Point::Spawn);
        }
        id
    }

    /// Waits for this new thread's first turn.
    fn start(&self, me: usize) {
        let mut s = guard(&self.state);
        let mine = s.turn_of(me);
        while s.running != me && !s.free {
            s = mine.wait(s).unwrap_or_else(PoisonError::into_inner);
        }
        if !s.free {
            s.record(me, Point::Start);
        }
    }

    fn virtual_deadline(&self, timeout: Duration) -> u64 {
        let now = guard(&self.state).now;
        let timeout = u64::try_from(timeout.as_nanos()).unwrap_or(u64::MAX);
        now.saturating_add(timeout)
    }

    fn is_done(&self, task: usize) -> bool {
        let s = guard(&self.state);
        s.tasks.get(task).is_none_or(|t| t.status == Status::Done)
    }
}

/// This thread's place in a schedule.
#[derive(Clone, Debug)]
pub(crate) struct Participant {
    scheduler: Arc<Scheduler>,
    id: usize,
}

thread_local! {
    static CURRENT: RefCell<Option<Participant>> = const { RefCell::new(None) };
    /// Emulator locks this thread holds: no switch while one is held (another thread could
    /// block on it with the turn).
    static LOCKS_HELD: Cell<u32> = const { Cell::new(0) };
}

/// This thread's participant, if it runs under a schedule.
pub(crate) fn current() -> Option<Participant> {
    CURRENT.try_with(|c| c.borrow().clone()).ok().flatten()
}

fn set_current(p: Option<Participant>) {
    let _ = CURRENT.try_with(|c| *c.borrow_mut() = p);
}

/// A switch point: under a schedule, the seed may give the turn to another thread here.
/// Skipped while this thread holds an emulator lock.
pub(crate) fn switch(point: Point) {
    if LOCKS_HELD.try_with(Cell::get).unwrap_or(0) > 0 {
        return;
    }
    if let Some(p) = current() {
        p.scheduler.switch(p.id, point);
    }
}

/// Counts an emulator lock held by this thread while the returned token lives.
pub(crate) fn lock_held() -> LockHeld {
    let _ = LOCKS_HELD.try_with(|n| n.set(n.get().saturating_add(1)));
    LockHeld(())
}

/// One emulator lock held (see [`lock_held`]).
#[derive(Debug)]
pub(crate) struct LockHeld(());

impl Drop for LockHeld {
    fn drop(&mut self) {
        let _ = LOCKS_HELD.try_with(|n| n.set(n.get().saturating_sub(1)));
    }
}

impl Participant {
    /// The virtual deadline `timeout` from now.
    pub(crate) fn deadline(&self, timeout: Duration) -> u64 {
        self.scheduler.virtual_deadline(timeout)
    }

    /// Waits (its condition was false) until the seed gives this thread the turn again after
    /// someone else ran, or its virtual `deadline` passed. `retry`: this thread only looked at
    /// its condition since its last wait (it changed nothing others could wait for).
    pub(crate) fn wait(&self, deadline: Option<u64>, point: Point, retry: bool) -> Woken {
        if LOCKS_HELD.try_with(Cell::get).unwrap_or(0) > 0 {
            // Handing the turn on while holding a lock could leave the next thread blocked on
            // it with the turn: give the schedule up rather than risk a real deadlock.
            let mut s = guard(&self.scheduler.state);
            self.scheduler.give_up(
                &mut s,
                Some(format!(
                    "{point:?} while holding an emulator lock (an emulator bug)"
                )),
            );
            return Woken::Free;
        }
        self.scheduler.wait(self.id, deadline, point, retry)
    }
}

impl Participant {
    /// The scheduled part of a condition wait: looks at `done` under `guard`, and while it is
    /// false releases the lock, hands the turn on and locks again with `relock`, until `done`
    /// holds or the virtual `timeout` passed. `Ok((guard, done held))`; `Err(guard)` when the
    /// schedule was given up meanwhile (finish the wait as outside one).
    pub(crate) fn wait_locked<G: core::ops::DerefMut>(
        &self,
        timeout: Duration,
        mut guard: G,
        relock: impl Fn() -> G,
        mut done: impl FnMut(&mut G::Target) -> bool,
    ) -> Result<(G, bool), G> {
        let deadline = self.deadline(timeout);
        let mut retry = false;
        loop {
            if done(&mut guard) {
                return Ok((guard, true));
            }
            drop(guard);
            let woken = self.wait(Some(deadline), Point::Wait, retry);
            retry = true;
            guard = relock();
            match woken {
                Woken::Turn { timed_out: false } => {}
                Woken::Turn { timed_out: true } => {
                    let held = done(&mut guard);
                    return Ok((guard, held));
                }
                Woken::Free => return Err(guard),
            }
        }
    }
}

/// The library's busy-wait hook: under a schedule, let the others run.
pub(crate) fn spin_hook() {
    match current() {
        Some(p) => {
            // A busy wait only looks: it changes nothing until its condition holds.
            if p.wait(None, Point::Spin, true) == Woken::Free {
                std::thread::yield_now();
            }
        }
        None => std::thread::yield_now(),
    }
}

/// What a seeded [`run`] produced.
#[derive(Debug)]
#[non_exhaustive]
pub struct Run<R> {
    /// The body's result.
    pub value: R,
    /// The seed that chose the schedule.
    pub seed: u64,
    /// FNV-1a over every switch point (thread index and kind) in order: equal for equal seeds.
    pub trace_hash: u64,
    /// Switch points taken.
    pub steps: u64,
    /// Virtual time at the end.
    pub virtual_time: Duration,
    /// A deadlock or hang the scheduler saw (then the rest of the run was free-running).
    pub finding: Option<String>,
}

/// Ends a participant's part in the schedule when dropped, even by a panic.
struct Membership {
    participant: Participant,
    /// The thread that called [`run`]: its end is the end of the run.
    main: bool,
}

impl Drop for Membership {
    fn drop(&mut self) {
        let p = &self.participant;
        if std::thread::panicking() {
            // A failed assertion: hand the rest of the run to the OS so nobody waits on us.
            let mut s = guard(&p.scheduler.state);
            s.set_status(p.id, Status::Done);
            p.scheduler.give_up(&mut s, None);
        } else if self.main {
            p.scheduler.finish(p.id);
        } else {
            p.scheduler.exit(p.id);
        }
        set_current(None);
    }
}

/// Runs `body` on this thread under the schedule chosen by `seed`, and returns its result with
/// the trace hash. Threads started inside with [`spawn`], and the emulator's threads of
/// channels opened inside, take part. A panic in `body` gives the schedule up and is passed on.
///
/// # Panics
/// If called inside another schedule, or if `body` panics.
pub fn run<R>(seed: u64, body: impl FnOnce() -> R) -> Run<R> {
    assert!(current().is_none(), "schedule::run inside a schedule");
    let scheduler = Arc::new(Scheduler {
        state: Mutex::new(State {
            rng: fastrand::Rng::with_seed(seed),
            tasks: vec![Task {
                name: "main".to_owned(),
                status: Status::Runnable,
                turn: Arc::new(Condvar::new()),
            }],
            running: 0,
            free: false,
            now: 0,
            hash: FNV_OFFSET,
            steps: 0,
            finding: None,
            print: std::env::var_os(TRACE_VAR).is_some(),
        }),
    });
    let participant = Participant {
        scheduler: Arc::clone(&scheduler),
        id: 0,
    };
    set_current(Some(participant.clone()));
    let membership = Membership {
        participant,
        main: true,
    };
    let value = body();
    drop(membership);
    let s = guard(&scheduler.state);
    Run {
        value,
        seed,
        trace_hash: s.hash,
        steps: s.steps,
        virtual_time: Duration::from_nanos(s.now),
        finding: s.finding.clone(),
    }
}

/// What a [`sweep`] saw.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Sweep {
    /// Seeds run.
    pub runs: u64,
    /// Distinct trace hashes among them (how many different interleavings were tried).
    pub distinct_traces: usize,
}

/// Runs `body` under `count` seeds starting at `first`: each run is a [`run`]. A panic or a
/// scheduler finding prints `seeded schedule failed: seed N (replay: VMBUS_SIM_SEED=N …)` and
/// fails the sweep with that seed. `VMBUS_SIM_SEED=N` runs seed N only; `VMBUS_SIM_SEEDS=K`
/// runs K seeds instead of `count`.
///
/// # Panics
/// When a run panics or has a finding (with the seed in the message).
#[allow(
    clippy::panic,
    reason = "a test harness: a failing seed fails the calling test, with the seed in the message"
)]
pub fn sweep(first: u64, count: u64, body: impl Fn(u64)) -> Sweep {
    let seeds: Vec<u64> = match env_u64(SEED_VAR) {
        Some(seed) => vec![seed],
        None => {
            let count = env_u64(SEEDS_VAR).unwrap_or(count);
            (first..first.saturating_add(count)).collect()
        }
    };
    let mut hashes = std::collections::BTreeSet::new();
    for &seed in &seeds {
        let outcome = catch_unwind(AssertUnwindSafe(|| run(seed, || body(seed))));
        match outcome {
            Ok(r) => {
                if let Some(finding) = r.finding {
                    panic!(
                        "seeded schedule failed: seed {seed} (replay: {SEED_VAR}={seed}): \
                         {finding}"
                    );
                }
                hashes.insert(r.trace_hash);
            }
            Err(payload) => {
                let message = payload
                    .downcast_ref::<&str>()
                    .map(|s| (*s).to_owned())
                    .or_else(|| payload.downcast_ref::<String>().cloned());
                match message {
                    Some(message) => panic!(
                        "seeded schedule failed: seed {seed} (replay: {SEED_VAR}={seed}): \
                         {message}"
                    ),
                    None => {
                        eprintln!(
                            "seeded schedule failed: seed {seed} (replay: {SEED_VAR}={seed})"
                        );
                        resume_unwind(payload);
                    }
                }
            }
        }
    }
    Sweep {
        runs: seeds.len() as u64,
        distinct_traces: hashes.len(),
    }
}

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok()?.trim().parse().ok()
}

/// A thread that takes part in the current schedule (a plain thread outside one).
#[derive(Debug)]
pub struct JoinHandle<T> {
    thread: std::thread::JoinHandle<T>,
    task: Option<Participant>,
}

impl<T> JoinHandle<T> {
    /// Waits for the thread to end (a switch point under a schedule) and returns its result.
    ///
    /// # Errors
    /// The thread's panic payload, as [`std::thread::JoinHandle::join`].
    pub fn join(self) -> std::thread::Result<T> {
        if let (Some(task), Some(me)) = (&self.task, current()) {
            let mut retry = false;
            while !task.scheduler.is_done(task.id) {
                if me.wait(None, Point::Join, retry) == Woken::Free {
                    break;
                }
                retry = true;
            }
        }
        self.thread.join()
    }

    /// The underlying thread.
    #[must_use]
    pub fn thread(&self) -> &std::thread::Thread {
        self.thread.thread()
    }

    /// True once the thread's closure has returned (as [`std::thread::JoinHandle::is_finished`]).
    #[must_use]
    pub fn is_finished(&self) -> bool {
        self.thread.is_finished()
    }
}

/// Starts a thread named `name` that takes part in the current schedule (outside a schedule, a
/// plain named thread).
///
/// # Errors
/// The OS refused a thread.
pub fn spawn<T: Send + 'static>(
    name: impl Into<String>,
    f: impl FnOnce() -> T + Send + 'static,
) -> std::io::Result<JoinHandle<T>> {
    let name = name.into();
    let parent = current();
    let task = parent.as_ref().map(|p| Participant {
        scheduler: Arc::clone(&p.scheduler),
        id: p.scheduler.add(p.id, name.clone()),
    });
    let child = task.clone();
    let spawned = std::thread::Builder::new().name(name).spawn(move || {
        let Some(participant) = child else {
            return f();
        };
        set_current(Some(participant.clone()));
        participant.scheduler.start(participant.id);
        let _membership = Membership {
            participant,
            main: false,
        };
        f()
    });
    match spawned {
        Ok(thread) => Ok(JoinHandle { thread, task }),
        Err(e) => {
            if let Some(t) = &task {
                // Never started: it leaves the schedule without taking the caller's turn.
                guard(&t.scheduler.state).set_status(t.id, Status::Done);
            }
            Err(e)
        }
    }
}

/// Lets another thread run: under a schedule, the turn goes to another thread that can run (if
/// none can, virtual time advances to the next deadline), so a loop that polls a flag set by
/// another thread makes progress. Outside a schedule, `std::thread::yield_now`.
pub fn yield_now() {
    match current() {
        Some(p) => {
            if p.wait(None, Point::Yield, false) == Woken::Free {
                std::thread::yield_now();
            }
        }
        None => std::thread::yield_now(),
    }
}

/// Sleeps for `duration`: in virtual time under a schedule (other threads run meanwhile), for
/// real outside one.
pub fn sleep(duration: Duration) {
    let Some(p) = current() else {
        std::thread::sleep(duration);
        return;
    };
    let deadline = p.deadline(duration);
    let mut retry = false;
    loop {
        match p.wait(Some(deadline), Point::Yield, retry) {
            Woken::Turn { timed_out: true } => return,
            Woken::Turn { timed_out: false } => retry = true,
            Woken::Free => {
                std::thread::sleep(duration);
                return;
            }
        }
    }
}

/// The current run's virtual time (since [`run`] started), `None` outside a schedule: the clock
/// of a platform layer that must agree with the emulator's virtual timeouts.
#[must_use]
pub fn now() -> Option<Duration> {
    current().map(|p| Duration::from_nanos(guard(&p.scheduler.state).now))
}

/// [`std::sync::Condvar::wait_timeout_while`] for test and platform code whose thread may run
/// under a schedule: waits on `cv` while `condition` holds, at most `timeout`, and returns the
/// guard and whether the wait timed out. Under a schedule the mutex is released and the turn
/// handed on between looks, and `timeout` is virtual; `guard` must be `mutex`'s.
///
/// # Panics
/// If `mutex` is poisoned.
#[allow(
    clippy::expect_used,
    reason = "a test helper: a poisoned mutex means another test thread already failed"
)]
pub fn wait_timeout_while<'a, T>(
    mutex: &'a Mutex<T>,
    guard: MutexGuard<'a, T>,
    cv: &Condvar,
    timeout: Duration,
    mut condition: impl FnMut(&mut T) -> bool,
) -> (MutexGuard<'a, T>, bool) {
    let guard = match current() {
        Some(me) => match me.wait_locked(
            timeout,
            guard,
            || mutex.lock().expect("mutex poisoned"),
            |v| !condition(v),
        ) {
            Ok((guard, done)) => return (guard, !done),
            Err(guard) => guard,
        },
        None => guard,
    };
    let (guard, result) = cv
        .wait_timeout_while(guard, timeout, condition)
        .expect("mutex poisoned");
    (guard, result.timed_out())
}

/// True if this thread runs under a seeded schedule that has not been given up (after a
/// finding, every thread runs freely).
#[must_use]
pub fn is_scheduled() -> bool {
    current().is_some_and(|p| !guard(&p.scheduler.state).free)
}
