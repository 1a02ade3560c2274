//! The emulated KMCL channel: configuration, state machine, the phases of an open, and teardown.
//!
//! Each enabled channel has three threads: the host thread (runs the [`HostDevice`]), the
//! callback thread ("DPC": reads the host→guest ring and calls the driver's packet and
//! completion callbacks) and the passive worker (re-delivers deferred packets, and delivers all
//! packets when incoming processing at passive is requested). State-change callbacks run on the
//! thread that called the slot (enable, pause, start, disable) or on the callback thread (a host
//! rescind). The threads are started by `threads::open` and kept here as
//! [`Worker`]s, joined when the channel closes.
//!
//! Lock order (outer to inner): `Channel::inner` → packet state mutexes → `Channel::host` →
//! `Channel::guest_reader` → global leaf locks (registry, memory, verifier). Driver callbacks
//! are never called with a channel lock held.
//!
//! [`HostDevice`]: crate::HostDevice

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::{Arc, Condvar, Mutex, Weak};
use std::time::Duration;

use vmbus_kmcl::sys::{GUID, NTSTATUS, PFN_VMB_CHANNEL_PNP_FAILURE};

use crate::base::event::{Event, Locked, Rendezvous, lock, wait_until};
use crate::base::spawn::{self, Worker, WorkerId};
use crate::base::status::{
    STATUS_CANCELLED, STATUS_DEVICE_NOT_CONNECTED, STATUS_DEVICE_REMOVED,
    STATUS_INSUFFICIENT_RESOURCES, STATUS_INVALID_DEVICE_STATE, STATUS_SUCCESS,
    STATUS_UNSUCCESSFUL, nt_success,
};
use crate::model::bus::Bus;
use crate::model::callbacks::{ProcessCallbacks, StateCallbacks};
use crate::model::gpadl::GpadlMapping;
use crate::model::host::{HostCommand, HostDevice, HostSide};
use crate::model::incoming::{InPacket, Received};
use crate::model::offer::OfferShared;
use crate::model::outgoing::{Frame, Tx, Work};
use crate::model::registry;
use crate::ring::{Ring, RingReader, RingWriter};
use crate::verifier::report::{VerifierReport, ViolationKind};

/// How often idle emulator threads re-check their rings even without a signal.
pub(crate) const POLL: Duration = Duration::from_millis(20);

/// Creates one ring of `pages` data pages (the only call into the ring constructor).
fn make_ring(pages: u32) -> Result<(RingWriter, RingReader), crate::ring::RingError> {
    Ring::create(pages as usize)
}

/// The channel state machine.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum State {
    /// Allocated, never enabled: `Init*` setters allowed.
    Initial,
    /// Inside `VmbChannelEnable`.
    Opening,
    /// Open, packets flow.
    Running,
    /// Open, incoming delivery stopped (`VmbChannelPause` or paused on enable).
    Paused,
    /// Inside `VmbChannelDisable` or a host close.
    Closing,
    /// The host rescinded or closed the channel; the guest must disable / clean up.
    HostClosed,
    /// Disabled again: `Init*` setters allowed, can be re-enabled.
    Disabled,
}

/// Init-time configuration (`VmbChannelInitSet*` and friends).
#[derive(Clone, Debug)]
pub(crate) struct Config {
    pub(crate) client_context_size: u32,
    pub(crate) flags: u32,
    pub(crate) friendly_name: String,
    pub(crate) max_external_data: u32,
    pub(crate) max_external_chain: u32,
    pub(crate) max_packet_size: u32,
    pub(crate) incoming_pages: u32,
    pub(crate) outgoing_pages: u32,
    pub(crate) target: Option<(GUID, Option<GUID>)>,
    pub(crate) pnp_failure: PFN_VMB_CHANNEL_PNP_FAILURE,
    pub(crate) bounce: Option<(u32, u32, u32)>,
    pub(crate) max_packet_count: u32,
    pub(crate) primary: Option<(usize, u16)>,
    pub(crate) target_processor: Option<u32>,
    pub(crate) inline_context_size: u32,
}

/// Everything mutable about a channel, behind `Channel::inner`.
pub(crate) struct Inner {
    pub(crate) state: State,
    pub(crate) cfg: Config,
    pub(crate) pointer: usize,
    pub(crate) state_cbs: StateCallbacks,
    pub(crate) process_cbs: ProcessCallbacks,
    pub(crate) latency: u16,
    pub(crate) dpc_cpu: u8,
    pub(crate) at_passive: bool,
    pub(crate) quota: u32,
    pub(crate) pause_on_enable: bool,
    pub(crate) bounce_allocated: u32,
    /// The offer the channel is open on.
    pub(crate) offer: Option<Arc<OfferShared>>,
    /// Guest→host ring writer (open only).
    pub(crate) writer: Option<RingWriter>,
    /// Frames waiting for ring space, in order.
    pub(crate) send_queue: VecDeque<Frame>,
    /// Transactions waiting for their completion.
    pub(crate) tx: BTreeMap<u64, Tx>,
    pub(crate) next_txid: u64,
    /// Recently finished transaction IDs (to tell duplicate from forged completions).
    pub(crate) finished: VecDeque<u64>,
    /// Completion-routine calls for the callback thread.
    pub(crate) work: VecDeque<Work>,
    /// Packets for the passive worker.
    pub(crate) passive: VecDeque<Arc<InPacket>>,
    /// Packets to deliver again (external data was pending).
    pub(crate) redeliver: VecDeque<Arc<InPacket>>,
    /// Packets read while paused, delivered on start.
    pub(crate) held: VecDeque<Received>,
    /// Live incoming packet handles (delivered, not completed).
    pub(crate) incoming: BTreeSet<usize>,
    /// Live outgoing packet handles, with whether they came from `VmbPacketAllocate`.
    pub(crate) packets: BTreeMap<usize, bool>,
    pub(crate) gpadls: BTreeMap<u32, Arc<GpadlMapping>>,
    pub(crate) deleted_gpadls: BTreeSet<u32>,
    pub(crate) threads: Vec<Worker>,
    pub(crate) callback_threads: Vec<WorkerId>,
    /// Packet callbacks running right now.
    pub(crate) in_callback: u32,
    pub(crate) delivery_enabled: bool,
    /// Pause/disable in progress: no new packets from the ring are delivered.
    pub(crate) quiescing: bool,
    /// The Suspend callback ran (or the channel never started): no packet callbacks at all.
    pub(crate) suspended: bool,
    pub(crate) dpc_stop: bool,
    pub(crate) incoming_failed: bool,
    pub(crate) in_corrupt: bool,
    pub(crate) out_corrupt: bool,
    pub(crate) in_started: bool,
    pub(crate) host_close_requested: bool,
    /// The Closed callback of a host close has returned.
    pub(crate) host_close_notified: bool,
    /// A host close (rescind) is running on the callback thread.
    pub(crate) host_closing: bool,
    /// A guest `VmbChannelDisable` is closing the channel.
    pub(crate) guest_closing: bool,
    pub(crate) cleaned: bool,
}

impl Inner {
    /// True once the host has rescinded the channel: closed by the host, or still being
    /// closed by its rescind. The driver cannot see that coming, so a call that meets it fails
    /// (or does nothing) as it would on a host-closed channel, without a violation.
    pub(crate) fn host_took_it_away(&self) -> bool {
        match self.state {
            State::HostClosed => true,
            State::Closing => self.offer.as_ref().is_some_and(|o| o.is_rescinded()),
            _ => false,
        }
    }
}

/// What `VmbChannelEnable` carries from [`Channel::enable_begin`] to its later phases.
pub(crate) struct Opening {
    /// The driver's state callbacks as they were when the enable began.
    pub(crate) cbs: StateCallbacks,
    /// Whether the channel opens paused (`VmbChannelPause` before the enable).
    pub(crate) pause_on_enable: bool,
    /// The state before the enable, restored if it fails.
    prev: State,
    /// The offer the channel opens on.
    pub(crate) offer: Arc<OfferShared>,
}

/// One emulated channel. Shared (`Arc`) by the registry, its packets and its threads.
pub(crate) struct Channel {
    pub(crate) handle: usize,
    pub(crate) bus: Arc<Bus>,
    pub(crate) parent_device: usize,
    pub(crate) parent_offer: Weak<OfferShared>,
    pub(crate) inner: Mutex<Inner>,
    /// Signalled (with `inner`) whenever counts the lifecycle waits on change.
    pub(crate) cv: Condvar,
    pub(crate) host: Mutex<HostSide>,
    /// Host→guest ring reader (open only); used by the callback thread.
    pub(crate) guest_reader: Mutex<Option<RingReader>>,
    /// Wakes the callback thread.
    pub(crate) guest_event: Event,
    /// Wakes the host thread.
    pub(crate) host_event: Event,
    /// Wakes the passive worker.
    pub(crate) passive_event: Event,
}

impl Channel {
    pub(crate) fn new(
        bus: &Arc<Bus>,
        handle: usize,
        parent_device: usize,
        parent_offer: &Arc<OfferShared>,
    ) -> Arc<Self> {
        let c = &bus.config;
        Arc::new(Self {
            handle,
            bus: Arc::clone(bus),
            parent_device,
            parent_offer: Arc::downgrade(parent_offer),
            inner: Mutex::new(Inner {
                state: State::Initial,
                cfg: Config {
                    client_context_size: 0,
                    flags: 0,
                    friendly_name: String::new(),
                    max_external_data: c.max_external_data,
                    max_external_chain: c.max_external_chain,
                    max_packet_size: c.max_packet_size,
                    incoming_pages: c.ring_pages,
                    outgoing_pages: c.ring_pages,
                    target: None,
                    pnp_failure: None,
                    bounce: None,
                    max_packet_count: c.max_packet_count,
                    primary: None,
                    target_processor: None,
                    inline_context_size: 0,
                },
                pointer: 0,
                state_cbs: StateCallbacks::None,
                process_cbs: ProcessCallbacks::None,
                latency: 0,
                dpc_cpu: 100,
                at_passive: false,
                quota: u32::MAX,
                pause_on_enable: false,
                bounce_allocated: 0,
                offer: None,
                writer: None,
                send_queue: VecDeque::new(),
                tx: BTreeMap::new(),
                next_txid: 1,
                finished: VecDeque::new(),
                work: VecDeque::new(),
                passive: VecDeque::new(),
                redeliver: VecDeque::new(),
                held: VecDeque::new(),
                incoming: BTreeSet::new(),
                packets: BTreeMap::new(),
                gpadls: BTreeMap::new(),
                deleted_gpadls: BTreeSet::new(),
                threads: Vec::new(),
                callback_threads: Vec::new(),
                in_callback: 0,
                delivery_enabled: false,
                quiescing: false,
                suspended: true,
                dpc_stop: false,
                incoming_failed: false,
                in_corrupt: false,
                out_corrupt: false,
                in_started: false,
                host_close_requested: false,
                host_close_notified: false,
                host_closing: false,
                guest_closing: false,
                cleaned: false,
            }),
            cv: Condvar::new(),
            host: Mutex::new(HostSide::default()),
            guest_reader: Mutex::new(None),
            guest_event: Event::default(),
            host_event: Event::default(),
            passive_event: Event::default(),
        })
    }

    /// Records a violation on the channel's bus.
    pub(crate) fn violation(
        &self,
        slot: &'static str,
        kind: ViolationKind,
        message: impl Into<String>,
    ) {
        self.bus.violation(slot, kind, message, self.handle);
    }

    /// True if the calling thread is one of this channel's callback threads.
    pub(crate) fn on_callback_thread(inner: &Inner) -> bool {
        let me = spawn::current();
        inner.callback_threads.contains(&me)
    }

    /// True if the `Init*` setters are allowed.
    pub(crate) const fn configurable(state: State) -> bool {
        matches!(state, State::Initial | State::Disabled)
    }

    /// The offer a channel with this configuration targets.
    pub(crate) fn resolve_target(&self, cfg: &Config) -> Result<Arc<OfferShared>, NTSTATUS> {
        let parent = self.parent_offer.upgrade();
        let base = match (cfg.target, &parent) {
            (Some((ty, instance)), _) => self.bus.find_offer(&ty, instance.as_ref(), 0),
            (None, Some(p)) => Some(Arc::clone(p)),
            (None, None) => None,
        };
        let Some(base) = base else {
            return Err(STATUS_DEVICE_NOT_CONNECTED);
        };
        match cfg.primary {
            None => Ok(base),
            Some((primary, index)) => {
                let Some(p) = registry::peek_channel(primary) else {
                    return Err(STATUS_INVALID_DEVICE_STATE);
                };
                let open_on = lock(&p.inner).offer.clone();
                let Some(open_on) = open_on else {
                    return Err(STATUS_INVALID_DEVICE_STATE);
                };
                self.bus
                    .find_offer(&open_on.interface_type, Some(&open_on.instance), index)
                    .ok_or(STATUS_DEVICE_NOT_CONNECTED)
            }
        }
    }

    /// `VmbChannelEnable`, first phase: checks the state, resolves the offer, takes its device,
    /// creates the rings and attaches the channel to the offer. The layer that opens a channel
    /// (`threads::open::enable`) then starts the host thread, hands it over ([`Self::adopt`]) and
    /// continues with [`Self::enable_opened`] and [`Self::enable_finish`]. `Err` carries the
    /// status the enable returns (the state is already restored).
    pub(crate) fn enable_begin(
        self: &Arc<Self>,
    ) -> Result<(Opening, Box<dyn HostDevice>), NTSTATUS> {
        const SLOT: &str = "VmbChannelEnable";
        let (cfg, cbs, pause_on_enable, prev) = {
            let mut inner = lock(&self.inner);
            if !Self::configurable(inner.state) {
                self.violation(
                    SLOT,
                    ViolationKind::WrongState,
                    format!("enable in state {:?}", inner.state),
                );
                return Err(STATUS_INVALID_DEVICE_STATE);
            }
            let prev = inner.state;
            inner.state = State::Opening;
            (
                inner.cfg.clone(),
                inner.state_cbs,
                inner.pause_on_enable,
                prev,
            )
        };
        let fail = |status: NTSTATUS| {
            let mut inner = lock(&self.inner);
            inner.state = prev;
            status
        };
        let offer = match self.resolve_target(&cfg) {
            Ok(o) => o,
            Err(status) => {
                if let Some(f) = cfg.pnp_failure {
                    let _driver = crate::base::scope::DriverScope::enter();
                    let _irql = crate::model::irql::CallbackIrql::enter(vmbus_kmcl::Irql::PASSIVE);
                    // SAFETY: the driver registered `f` (VmbClientChannelInitSetTargetPnp) for
                    // this channel; the channel handle is live.
                    unsafe { f(self.handle as vmbus_kmcl::sys::VMBCHANNEL, status) };
                }
                return Err(fail(status));
            }
        };
        let device = match offer.take_device() {
            Ok(d) => d,
            Err(status) => return Err(fail(status)),
        };
        let rings = make_ring(cfg.outgoing_pages)
            .and_then(|g| make_ring(cfg.incoming_pages).map(|h| (g, h)));
        let Ok(((g2h_w, g2h_r), (h2g_w, h2g_r))) = rings else {
            offer.return_device(device);
            return Err(fail(STATUS_INSUFFICIENT_RESOURCES));
        };
        let g2h_ring = Arc::clone(g2h_w.ring());
        let h2g_ring = Arc::clone(h2g_w.ring());
        {
            let mut inner = lock(&self.inner);
            inner.writer = Some(g2h_w);
            inner.offer = Some(Arc::clone(&offer));
            inner.suspended = true;
            inner.quiescing = false;
            inner.dpc_stop = false;
            inner.delivery_enabled = false;
            inner.incoming_failed = false;
            inner.in_corrupt = false;
            inner.out_corrupt = false;
            inner.host_close_requested = false;
            inner.host_close_notified = false;
            inner.host_closing = false;
            inner.guest_closing = false;
        }
        {
            let mut host = lock(&self.host);
            *host = HostSide::default();
            host.reader = Some(g2h_r);
            host.writer = Some(h2g_w);
        }
        *lock(&self.guest_reader) = Some(h2g_r);
        offer.attach(self, g2h_ring, h2g_ring);
        Ok((
            Opening {
                cbs,
                pause_on_enable,
                prev,
                offer,
            },
            device,
        ))
    }

    /// `VmbChannelEnable` failed after [`Self::enable_begin`]: restores the state the channel
    /// had before and returns `status`.
    pub(crate) fn enable_failed(&self, opening: &Opening, status: NTSTATUS) -> NTSTATUS {
        let mut inner = lock(&self.inner);
        inner.state = opening.prev;
        status
    }

    /// Takes a started thread of this channel; it is joined when the channel closes.
    pub(crate) fn adopt(&self, worker: Worker) {
        lock(&self.inner).threads.push(worker);
    }

    /// `VmbChannelEnable`, second phase (the host thread runs): waits for the host's open
    /// result, then runs the driver's Opened and Started callbacks. `Err` carries the status the
    /// enable returns.
    pub(crate) fn enable_opened(
        self: &Arc<Self>,
        opening: &Opening,
        opened: &Rendezvous<NTSTATUS>,
    ) -> Result<(), NTSTATUS> {
        let cbs = opening.cbs;
        let pause_on_enable = opening.pause_on_enable;
        let fail = |status: NTSTATUS| self.enable_failed(opening, status);
        let open_status = opened
            .take_within(self.bus.config.drain_timeout.saturating_mul(4))
            .unwrap_or(STATUS_UNSUCCESSFUL);
        if !nt_success(open_status) {
            self.stop_host();
            self.join_threads();
            self.reset_open_state();
            return Err(fail(open_status));
        }
        let status = cbs.opened(self.handle);
        if !nt_success(status) {
            self.stop_host();
            self.join_threads();
            self.reset_open_state();
            return Err(fail(status));
        }
        {
            let mut inner = lock(&self.inner);
            inner.pause_on_enable = false;
            inner.state = if pause_on_enable {
                State::Paused
            } else {
                State::Running
            };
            inner.in_started = true;
        }
        if !pause_on_enable {
            cbs.started(self.handle);
        }
        {
            let mut inner = lock(&self.inner);
            if !matches!(inner.state, State::Running | State::Paused) {
                // The driver disabled the channel from EvtChannelStarted: it is closed already.
                inner.in_started = false;
                return Err(STATUS_INVALID_DEVICE_STATE);
            }
        }
        Ok(())
    }

    /// `VmbChannelEnable`, last phase: `spawned` says whether the callback threads started.
    pub(crate) fn enable_finish(
        self: &Arc<Self>,
        opening: &Opening,
        spawned: Result<(), NTSTATUS>,
    ) -> NTSTATUS {
        let cbs = opening.cbs;
        let pause_on_enable = opening.pause_on_enable;
        let offer = &opening.offer;
        let fail = |status: NTSTATUS| self.enable_failed(opening, status);
        {
            let mut inner = lock(&self.inner);
            inner.in_started = false;
            inner.delivery_enabled = true;
            inner.suspended = pause_on_enable;
        }
        if let Err(status) = spawned {
            // Could not start the callback threads: close again, silently.
            {
                let mut inner = lock(&self.inner);
                inner.state = State::Closing;
                inner.dpc_stop = true;
            }
            self.guest_event.signal();
            self.passive_event.signal();
            self.stop_host();
            self.join_threads();
            self.reset_open_state();
            return fail(status);
        }
        self.guest_event.signal();
        if !pause_on_enable {
            cbs.post_started(self.handle);
        }
        if offer.is_rescinded() {
            // Rescinded after the open result, while the guest's open callbacks ran (the
            // rescind saw the channel still opening and left it alone): close it now, as a
            // rescind of an open channel does.
            lock(&self.inner).host_close_requested = true;
            self.guest_event.signal();
        }
        STATUS_SUCCESS
    }

    /// Asks the host thread to run `on_close` and exit.
    pub(crate) fn stop_host(&self) {
        lock(&self.host).commands.push_back(HostCommand::Close);
        self.host_event.signal();
    }

    /// Joins every thread of the channel (none may be the caller).
    pub(crate) fn join_threads(&self) {
        let threads = core::mem::take(&mut lock(&self.inner).threads);
        let me = spawn::current();
        for t in threads {
            if t.id() == me {
                // Never join ourselves; the thread ends when its loop returns.
                continue;
            }
            t.join();
        }
    }

    /// Clears everything that only exists while the channel is open.
    pub(crate) fn reset_open_state(&self) {
        let (offer, dropped) = {
            let mut inner = lock(&self.inner);
            inner.writer = None;
            inner.send_queue.clear();
            inner.tx.clear();
            inner.work.clear();
            inner.passive.clear();
            inner.redeliver.clear();
            inner.held.clear();
            inner.callback_threads.clear();
            inner.delivery_enabled = false;
            inner.quiescing = false;
            inner.suspended = true;
            inner.dpc_stop = false;
            inner.in_started = false;
            inner.host_close_requested = false;
            let dropped: Vec<usize> = core::mem::take(&mut inner.incoming).into_iter().collect();
            (inner.offer.take(), dropped)
        };
        for h in dropped {
            drop(registry::retire(
                h,
                "force-released when its channel closed",
            ));
        }
        *lock(&self.host) = HostSide::default();
        *lock(&self.guest_reader) = None;
        if let Some(offer) = offer {
            offer.detach(self.handle);
        }
        self.cv.notify_all();
    }

    /// Waits until no packet callback runs and no re-delivery is queued (bounded).
    fn wait_quiet<'a>(&'a self, inner: Locked<'a, Inner>) -> Locked<'a, Inner> {
        let timeout = self.bus.config.drain_timeout;
        let (inner, _) = wait_until(&self.cv, inner, timeout, |i| {
            i.in_callback == 0 && i.passive.is_empty() && i.redeliver.is_empty()
        });
        inner
    }

    /// Waits (bounded) until the driver completed every incoming packet; force-releases the
    /// rest with a leak violation.
    fn drain_incoming(&self, slot: &'static str) {
        let timeout = self.bus.config.drain_timeout;
        let leftover: Vec<usize> = {
            let inner = lock(&self.inner);
            let (mut inner, done) = wait_until(&self.cv, inner, timeout, |i| i.incoming.is_empty());
            if done {
                Vec::new()
            } else {
                core::mem::take(&mut inner.incoming).into_iter().collect()
            }
        };
        if !leftover.is_empty() {
            self.violation(
                slot,
                ViolationKind::Leak,
                format!(
                    "{} incoming packet(s) not completed within {:?} of the channel closing; \
                     force-released",
                    leftover.len(),
                    timeout
                ),
            );
            for h in leftover {
                drop(registry::retire(
                    h,
                    "force-released when its channel closed",
                ));
            }
        }
    }

    /// Moves every queued frame and open transaction to the callback thread's work queue with
    /// `status` (synchronous waiters are woken directly).
    pub(crate) fn cancel_outgoing(inner: &mut Inner, status: NTSTATUS) {
        let queued: Vec<Frame> = inner.send_queue.drain(..).collect();
        for f in queued {
            f.cancel(inner, status);
        }
        let txs: Vec<(u64, Tx)> = core::mem::take(&mut inner.tx).into_iter().collect();
        for (_, t) in txs {
            match t {
                Tx::Packet(p) => inner.work.push_back(Work::Complete {
                    packet: p,
                    status,
                    response: Vec::new(),
                }),
                Tx::Sync(w) => w.put((status, Vec::new())),
                Tx::Abandoned | Tx::Detached => {}
            }
        }
    }

    /// `VmbChannelDisable`.
    pub(crate) fn disable(self: &Arc<Self>) {
        const SLOT: &str = "VmbChannelDisable";
        let mut inner = lock(&self.inner);
        if Self::on_callback_thread(&inner) {
            if inner.state == State::HostClosed {
                // Disabling from the Closed callback of a rescind: the threads are joined at
                // cleanup.
                inner.state = State::Disabled;
                return;
            }
            drop(inner);
            self.violation(
                SLOT,
                ViolationKind::WouldDeadlock,
                "VmbChannelDisable called from one of the channel's own callbacks",
            );
            return;
        }
        if inner.host_closing {
            // A rescind is being processed on the callback thread: the driver cannot know, so
            // wait for it and then disable as after a rescind.
            let timeout = self.bus.config.drain_timeout.saturating_mul(4);
            inner = wait_until(&self.cv, inner, timeout, |i| !i.host_closing).0;
        }
        match inner.state {
            State::Running | State::Paused => inner.guest_closing = true,
            State::HostClosed => {
                inner.state = State::Closing;
                drop(inner);
                self.join_threads();
                self.reset_open_state();
                lock(&self.inner).state = State::Disabled;
                return;
            }
            other => {
                drop(inner);
                self.violation(
                    SLOT,
                    ViolationKind::WrongState,
                    format!("disable of a channel that is not enabled (state {other:?})"),
                );
                return;
            }
        }
        let was_suspended = inner.suspended;
        inner.quiescing = true;
        self.guest_event.signal();
        self.passive_event.signal();
        let mut inner = self.wait_quiet(inner);
        inner.state = State::Closing;
        inner.suspended = true;
        let cbs = inner.state_cbs;
        drop(inner);
        if !was_suspended {
            cbs.suspend(self.handle);
        }
        self.drain_incoming(SLOT);
        {
            let mut inner = lock(&self.inner);
            Self::cancel_outgoing(&mut inner, STATUS_CANCELLED);
            inner.dpc_stop = true;
        }
        self.guest_event.signal();
        self.passive_event.signal();
        self.stop_host();
        self.join_threads();
        cbs.closed(self.handle);
        self.reset_open_state();
        {
            let mut inner = lock(&self.inner);
            inner.state = State::Disabled;
            inner.guest_closing = false;
        }
        self.cv.notify_all();
    }

    /// `VmbChannelPause`.
    pub(crate) fn pause(self: &Arc<Self>) {
        const SLOT: &str = "VmbChannelPause";
        let mut inner = lock(&self.inner);
        if Self::on_callback_thread(&inner) {
            drop(inner);
            self.violation(
                SLOT,
                ViolationKind::WouldDeadlock,
                "VmbChannelPause called from one of the channel's own callbacks",
            );
            return;
        }
        match inner.state {
            State::Initial | State::Disabled => {
                inner.pause_on_enable = true;
                return;
            }
            State::Running => {}
            State::Paused | State::HostClosed => return,
            // The host's rescind is closing the channel: nothing left to pause.
            State::Closing if inner.host_took_it_away() => return,
            State::Opening | State::Closing => {
                drop(inner);
                self.violation(
                    SLOT,
                    ViolationKind::WrongState,
                    "pause while the channel is opening or closing",
                );
                return;
            }
        }
        inner.quiescing = true;
        self.guest_event.signal();
        self.passive_event.signal();
        let mut inner = self.wait_quiet(inner);
        inner.suspended = true;
        inner.state = State::Paused;
        inner.quiescing = false;
        let cbs = inner.state_cbs;
        drop(inner);
        cbs.suspend(self.handle);
        self.drain_incoming(SLOT);
        // Let outgoing transactions finish (the callback thread keeps reading completions while
        // paused); cancel what is left after the drain timeout.
        let timeout = self.bus.config.drain_timeout;
        let inner = lock(&self.inner);
        let (mut inner, done) = wait_until(&self.cv, inner, timeout, |i| {
            i.send_queue.is_empty()
                && i.work.is_empty()
                && i.tx
                    .values()
                    .all(|t| matches!(t, Tx::Abandoned | Tx::Detached))
        });
        if !done {
            Self::cancel_outgoing(&mut inner, STATUS_CANCELLED);
            drop(inner);
            self.guest_event.signal();
        }
    }

    /// `VmbChannelStart`.
    pub(crate) fn start(self: &Arc<Self>) {
        let mut inner = lock(&self.inner);
        match inner.state {
            State::Initial | State::Disabled => inner.pause_on_enable = false,
            State::Paused => {
                inner.state = State::Running;
                inner.suspended = false;
                let cbs = inner.state_cbs;
                drop(inner);
                cbs.started(self.handle);
                self.guest_event.signal();
                cbs.post_started(self.handle);
            }
            _ => {}
        }
    }

    /// Host-initiated close (rescind), run on the callback thread.
    pub(crate) fn host_close(self: &Arc<Self>) {
        let mut inner = lock(&self.inner);
        inner.host_close_requested = false;
        if !matches!(inner.state, State::Running | State::Paused) || inner.guest_closing {
            // Not open, or the guest is closing it already (which also closes the host side).
            return;
        }
        inner.host_closing = true;
        let was_suspended = inner.suspended;
        inner.quiescing = true;
        inner.redeliver.clear();
        self.passive_event.signal();
        let timeout = self.bus.config.drain_timeout;
        let (mut inner, _) = wait_until(&self.cv, inner, timeout, |i| {
            i.in_callback == 0 && i.passive.is_empty()
        });
        inner.state = State::Closing;
        inner.suspended = true;
        let cbs = inner.state_cbs;
        drop(inner);
        if !was_suspended {
            cbs.suspend(self.handle);
        }
        self.drain_incoming("host rescind");
        {
            let mut inner = lock(&self.inner);
            Self::cancel_outgoing(&mut inner, STATUS_DEVICE_REMOVED);
        }
        crate::model::incoming::run_work(self);
        self.stop_host();
        {
            let mut inner = lock(&self.inner);
            inner.state = State::HostClosed;
            inner.dpc_stop = true;
        }
        cbs.closed(self.handle);
        {
            let mut inner = lock(&self.inner);
            inner.host_close_notified = true;
            inner.host_closing = false;
        }
        self.passive_event.signal();
        self.cv.notify_all();
    }

    /// `VmbChannelCleanup`.
    pub(crate) fn cleanup(self: &Arc<Self>) {
        const SLOT: &str = "VmbChannelCleanup";
        let state = {
            let inner = lock(&self.inner);
            if Self::on_callback_thread(&inner) && inner.state != State::Disabled {
                drop(inner);
                self.violation(
                    SLOT,
                    ViolationKind::WouldDeadlock,
                    "VmbChannelCleanup called from one of the channel's own callbacks",
                );
                return;
            }
            inner.state
        };
        match state {
            State::Running | State::Paused => {
                self.violation(
                    SLOT,
                    ViolationKind::WrongState,
                    "cleanup of an enabled channel (the emulator disabled it first)",
                );
                self.disable();
            }
            State::HostClosed => self.disable(),
            State::Opening | State::Closing => {
                self.violation(
                    SLOT,
                    ViolationKind::WrongState,
                    "cleanup while the channel is opening or closing",
                );
                return;
            }
            State::Initial | State::Disabled => {}
        }
        // Threads left over from a disable issued on the callback thread.
        self.join_threads();
        self.reset_open_state();
        let (gpadls, packets) = {
            let mut inner = lock(&self.inner);
            inner.cleaned = true;
            (
                core::mem::take(&mut inner.gpadls),
                core::mem::take(&mut inner.packets),
            )
        };
        if !gpadls.is_empty() {
            self.violation(
                SLOT,
                ViolationKind::Leak,
                format!(
                    "{} GPADL(s) not deleted before VmbChannelCleanup: {:?}",
                    gpadls.len(),
                    gpadls.keys().collect::<Vec<_>>()
                ),
            );
            for g in gpadls.values() {
                g.revoke();
            }
        }
        let leaked = packets.values().filter(|allocated| **allocated).count();
        if leaked > 0 {
            self.violation(
                SLOT,
                ViolationKind::Leak,
                format!("{leaked} packet(s) not freed before VmbChannelCleanup"),
            );
        }
        for h in packets.keys() {
            drop(registry::retire(*h, "freed by VmbChannelCleanup"));
        }
        drop(registry::retire(self.handle, "cleaned up"));
        self.bus.forget_channel(self);
    }

    /// Bus shutdown: stop everything without calling back into the driver.
    pub(crate) fn force_teardown(&self) {
        {
            let mut inner = lock(&self.inner);
            inner.state = State::Closing;
            inner.suspended = true;
            inner.quiescing = true;
            inner.dpc_stop = true;
            inner.send_queue.clear();
            inner.tx.clear();
            inner.work.clear();
            inner.passive.clear();
            inner.redeliver.clear();
            inner.process_cbs = ProcessCallbacks::None;
            inner.state_cbs = StateCallbacks::None;
            for g in inner.gpadls.values() {
                g.revoke();
            }
        }
        self.guest_event.signal();
        self.passive_event.signal();
        self.stop_host();
        self.join_threads();
        self.reset_open_state();
        let mut inner = lock(&self.inner);
        inner.state = State::Disabled;
        inner.gpadls.clear();
        inner.packets.clear();
        inner.cleaned = true;
    }

    /// Adds this channel's resources to a report.
    pub(crate) fn add_to_report(&self, report: &mut VerifierReport) {
        let inner = lock(&self.inner);
        if inner.cleaned {
            return;
        }
        report.live_channels += 1;
        report.live_packets += inner.packets.values().filter(|a| **a).count();
        report.live_packets += inner
            .tx
            .values()
            .filter(|t| matches!(t, Tx::Packet(p) if !p.allocated))
            .count();
        report.live_gpadls += inner.gpadls.len();
        report.uncompleted_incoming += inner.incoming.len();
    }
}
