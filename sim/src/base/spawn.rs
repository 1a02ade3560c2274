//! The only place emulator threads start, are joined and are told apart.
//!
//! Every `std::thread` spawn and join of the crate goes through [`spawn`] and [`Worker::join`],
//! and the "am I this thread?" check through [`current`] and [`Worker::id`]; every blocking wait
//! goes through [`event`](super::event). A deterministic scheduler hooks in at these two modules.
//! The threads layer decides what runs on a worker; the channel model keeps
//! its workers (to join them when the channel closes) without knowing what they run.

use std::thread::{self, ThreadId};

use super::schedule::{self, JoinHandle};

/// A started emulator thread; joined with [`Worker::join`].
#[derive(Debug)]
pub(crate) struct Worker {
    handle: JoinHandle<()>,
}

/// Which thread a [`Worker`] is (compare with [`current`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct WorkerId(ThreadId);

/// Starts a thread named `name` running `f`; started by a thread under a seeded schedule, it
/// takes part in that schedule.
///
/// # Errors
/// The operating system refused to create the thread.
pub(crate) fn spawn(name: String, f: impl FnOnce() + Send + 'static) -> std::io::Result<Worker> {
    let handle = schedule::spawn(name, f)?;
    Ok(Worker { handle })
}

/// The calling thread's identity.
pub(crate) fn current() -> WorkerId {
    WorkerId(thread::current().id())
}

impl Worker {
    /// The worker's identity.
    pub(crate) fn id(&self) -> WorkerId {
        WorkerId(self.handle.thread().id())
    }

    /// Waits until the thread has ended (a panic in it is ignored); under a seeded schedule
    /// the wait hands the turn on. Never call it on the calling thread's own worker.
    pub(crate) fn join(self) {
        let _ = self.handle.join();
    }
}
