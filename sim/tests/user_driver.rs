//! The worked example of `docs/testing-your-driver.md`: testing a driver of your own against
//! the emulator.
//!
//! Everything a driver author writes is here, in one file so that `cargo test` builds and runs
//! it:
//!
//! - [`protocol`]: a small device protocol, the "counter" device. The guest asks the host to
//!   add to a counter (`INCREMENT`, with a completion that carries the new value), asks it to
//!   copy the history of increments into a buffer the guest shares (`SNAPSHOT`, through a
//!   GPADL), and the host pushes `EVENT`s the guest acknowledges later from another thread.
//! - [`driver`]: the driver side, the code that would live in your driver crate: a
//!   `ChannelHandler` and a device object that opens the channel, sends, and closes. It uses
//!   only the `vmbus-kmcl` API and knows nothing of the emulator.
//! - [`host`]: the host side, a VSP written for the test: a `HostDevice` that serves the
//!   protocol on the emulator's host thread, plus a control handle for the test.
//! - the tests at the bottom: the happy path on a V1 and a V5 bus, a hostile host, injected
//!   KMCL faults, and teardown with events still pended; each ends with the verifier's report.

use std::sync::{Mutex, MutexGuard, PoisonError};

/// Locks a mutex, ignoring poisoning (a panicking test thread must not hide the real error).
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The counter protocol: every message is 16 bytes, little-endian:
/// `{ kind: u32, arg: u32, value: u64 }`.
///
/// 16 is a multiple of 8 on purpose: VMBus rings carry lengths in 8-byte units, so a receiver
/// sees the sender's bytes padded with zeros to a multiple of 8 and must not rely on the exact
/// length of anything else.
mod protocol {
    /// Length of every message.
    pub const MESSAGE_LEN: usize = 16;

    /// Guest → host, completion requested: add `value` to the counter. Answered by `VALUE`.
    pub const INCREMENT: u32 = 1;
    /// Guest → host, synchronous: write the history of increments (one `u64` per increment,
    /// oldest first) into GPADL `arg`, at most `value` bytes. Answered by `VALUE` with the
    /// number of entries written.
    pub const SNAPSHOT: u32 = 2;
    /// Host → guest, the answer to a request: `arg` is 0 on success, else an error code;
    /// `value` is the result.
    pub const VALUE: u32 = 0x81;
    /// Host → guest, completion requested: the counter is now `value`.
    pub const EVENT: u32 = 0x82;
    /// Guest → host, the completion (response) of an `EVENT`: `value` echoes the event's.
    pub const EVENT_ACK: u32 = 0x83;

    /// One message.
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub struct Message {
        /// One of the kinds above.
        pub kind: u32,
        /// Kind-specific.
        pub arg: u32,
        /// Kind-specific.
        pub value: u64,
    }

    impl Message {
        /// A message of `kind`.
        pub const fn new(kind: u32, arg: u32, value: u64) -> Self {
            Self { kind, arg, value }
        }

        /// The wire bytes.
        pub fn encode(self) -> [u8; MESSAGE_LEN] {
            let mut out = [0_u8; MESSAGE_LEN];
            let (kind, rest) = out.split_at_mut(4);
            let (arg, value) = rest.split_at_mut(4);
            kind.copy_from_slice(&self.kind.to_le_bytes());
            arg.copy_from_slice(&self.arg.to_le_bytes());
            value.copy_from_slice(&self.value.to_le_bytes());
            out
        }

        /// Parses the first 16 bytes of `bytes` (`None` if there are fewer). The kind is not
        /// checked here: each receiver checks for the kinds it accepts.
        pub fn decode(bytes: &[u8]) -> Option<Self> {
            let (kind, rest) = bytes.split_first_chunk::<4>()?;
            let (arg, rest) = rest.split_first_chunk::<4>()?;
            let (value, _) = rest.split_first_chunk::<8>()?;
            Some(Self {
                kind: u32::from_le_bytes(*kind),
                arg: u32::from_le_bytes(*arg),
                value: u64::from_le_bytes(*value),
            })
        }
    }
}

/// The driver: what would live in your driver crate, written against `vmbus-kmcl` only.
///
/// The receive and completion callbacks run at DISPATCH_LEVEL in a real guest: they use atomics
/// and one short lock, and never allocate. The lock is a `std::sync::Mutex` because this file is
/// a test; a kernel driver uses a spin lock (`KSPIN_LOCK`, `WDFSPINLOCK`) or a lock-free queue
/// (as `samples/echo` does) in its place.
mod driver {
    use std::collections::VecDeque;
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    use vmbus_kmcl::{
        Channel, ChannelConfig, ChannelCore, ChannelHandler, ChannelRef, Completion, Gpadl,
        GpadlFlags, IncomingPacket, KmclInterface, NtStatus, Page, ParentDevice, PassiveLevel,
        PendedPacket, SendFlags,
    };

    use crate::lock;
    use crate::protocol::{EVENT, EVENT_ACK, INCREMENT, MESSAGE_LEN, Message, SNAPSHOT, VALUE};

    /// Host events the driver keeps pended at once (the channel's pend table has this size).
    pub const MAX_EVENTS: usize = 8;
    /// Pages of the history buffer shared with the host.
    pub const HISTORY_PAGES: usize = 1;

    /// What the driver counted. Shared (`Arc`) between the handler and whoever reads it, so a
    /// test can still read it after the channel, and the handler with it, are gone.
    #[derive(Debug, Default)]
    pub struct Stats {
        /// `INCREMENT`s answered with a well-formed `VALUE`.
        pub replies: AtomicU64,
        /// `INCREMENT`s that failed: an error status, or a malformed answer.
        pub failed: AtomicU64,
        /// The highest counter value the host reported.
        pub last_value: AtomicU64,
        /// Well-formed `EVENT`s received.
        pub events: AtomicU64,
        /// `EVENT`s acknowledged (completed with an `EVENT_ACK`).
        pub acked: AtomicU64,
        /// Pended `EVENT`s the channel cancelled before the driver could acknowledge them.
        pub cancelled: AtomicU64,
        /// Malformed host messages (packets or completion responses), counted and dropped.
        pub rejected: AtomicU64,
    }

    impl Stats {
        /// Reads one counter.
        pub fn get(counter: &AtomicU64) -> u64 {
            counter.load(Ordering::SeqCst)
        }
    }

    fn bump(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::SeqCst);
    }

    /// The channel handler.
    pub struct CounterClient {
        stats: Arc<Stats>,
        /// Pended `EVENT`s and their values, waiting for [`CounterClient::ack_events`]. Its
        /// capacity is reserved up front and never exceeded (the pend table is as large), so
        /// pushing never allocates.
        events: Mutex<VecDeque<(PendedPacket<CounterClient>, u64)>>,
    }

    impl CounterClient {
        fn new(stats: Arc<Stats>) -> Self {
            Self {
                stats,
                events: Mutex::new(VecDeque::with_capacity(MAX_EVENTS)),
            }
        }

        /// Acknowledges every pended `EVENT` (`VmbChannelPacketComplete` with an `EVENT_ACK`);
        /// returns how many it took. Any thread, ≤ DISPATCH_LEVEL: a work item in a driver, a
        /// worker thread in the test.
        pub fn ack_events(&self) -> usize {
            let mut taken = 0;
            loop {
                // Take one entry and release the lock before completing.
                let next = lock(&self.events).pop_front();
                let Some((pended, value)) = next else {
                    return taken;
                };
                taken += 1;
                let ack = Message::new(EVENT_ACK, 0, value).encode();
                match pended.complete(&ack) {
                    Ok(()) => bump(&self.stats.acked),
                    // Delivery stopped first and the channel cancelled it.
                    Err(_) => bump(&self.stats.cancelled),
                }
            }
        }
    }

    impl ChannelHandler for CounterClient {
        /// The amount of the `INCREMENT` the packet carried.
        type PacketContext = u64;

        fn process_packet(&self, _: &ChannelCore<Self>, packet: IncomingPacket<'_, Self>) {
            // The bytes are host memory: copy them once, then validate the copy.
            let mut bytes = [0_u8; MESSAGE_LEN];
            let copied = packet.copy_data(&mut bytes);
            let event = Message::decode(&bytes).filter(|message| {
                packet.data().len() == MESSAGE_LEN && copied == MESSAGE_LEN && message.kind == EVENT
            });
            let Some(event) = event else {
                // Count it and drop it: dropping an `IncomingPacket` completes it with no
                // response. (`fail()` would stop the channel's incoming queue.)
                bump(&self.stats.rejected);
                drop(packet);
                return;
            };
            bump(&self.stats.events);
            // Keep it for later; if the pend table is full, acknowledge it now.
            match packet.pend() {
                Ok(pended) => lock(&self.events).push_back((pended, event.value)),
                Err(packet) => {
                    let ack = Message::new(EVENT_ACK, 0, event.value).encode();
                    if packet.complete(&ack).is_ok() {
                        bump(&self.stats.acked);
                    }
                }
            }
        }

        fn packet_completed(&self, _: &ChannelCore<Self>, done: Completion<'_, u64>) {
            if !done.status.is_success() {
                bump(&self.stats.failed);
                return;
            }
            let mut bytes = [0_u8; MESSAGE_LEN];
            let copied = done.response.copy_to(&mut bytes);
            // `done.context` is the amount this request added: the new value is at least that.
            match Message::decode(&bytes) {
                Some(reply)
                    if done.response.len() == MESSAGE_LEN
                        && copied == MESSAGE_LEN
                        && reply.kind == VALUE
                        && reply.arg == 0
                        && reply.value >= done.context =>
                {
                    self.stats
                        .last_value
                        .fetch_max(reply.value, Ordering::SeqCst);
                    bump(&self.stats.replies);
                }
                _ => {
                    bump(&self.stats.rejected);
                    bump(&self.stats.failed);
                }
            }
        }

        /// Delivery is stopping (pause, host rescind, disable): KMCL waits for every incoming
        /// packet now, so acknowledge what is still pended (after a driver-initiated disable the
        /// crate has already cancelled them, and this only empties the queue). Emptying the
        /// queue also drops the `PendedPacket`s, whose channel references would otherwise keep
        /// the channel's allocation, and this handler, alive after teardown.
        fn suspend(&self, _: &ChannelCore<Self>, _: &PassiveLevel) {
            self.ack_events();
        }
    }

    /// The device: the channel and the shared history buffer, as a driver keeps them in its
    /// WDF device context.
    pub struct CounterDevice {
        channel: Channel<CounterClient>,
        history: Gpadl<CounterClient, Box<[Page]>>,
        stats: Arc<Stats>,
    }

    impl CounterDevice {
        /// Opens the channel and shares the history buffer (`EvtDevicePrepareHardware`). On
        /// error nothing is left behind: the dropped channel tears itself down.
        ///
        /// # Errors
        /// The failing KMCL status.
        pub fn open(
            irql: &PassiveLevel,
            interface: &KmclInterface,
            parent: ParentDevice,
        ) -> vmbus_kmcl::Result<Self> {
            let config = ChannelConfig::new()
                .ring_buffer_pages(4, 4)
                .maximum_packet_size(256)
                .max_pended_packets(MAX_EVENTS as u16);
            let stats = Arc::new(Stats::default());
            let handler = CounterClient::new(Arc::clone(&stats));
            let mut channel = Channel::new(irql, interface, parent, &config, handler)?;
            channel.enable(irql)?;
            let buffer = vec![Page::ZERO; HISTORY_PAGES].into_boxed_slice();
            let history = channel
                .create_gpadl(irql, buffer, GpadlFlags::empty())
                .map_err(|error| error.status)?;
            Ok(Self {
                channel,
                history,
                stats,
            })
        }

        /// Sends `INCREMENT amount` with a completion; the answer arrives in
        /// `packet_completed`. IRQL ≤ DISPATCH_LEVEL.
        ///
        /// # Errors
        /// The KMCL status of the send.
        pub fn increment(&self, amount: u64) -> vmbus_kmcl::Result<()> {
            let request = Message::new(INCREMENT, 0, amount).encode();
            self.channel
                .send(&request, SendFlags::WAIT_FOR_COMPLETION, amount)
        }

        /// Asks the host to copy the history of increments into the shared buffer and reads it
        /// into `out`; returns how many entries the host wrote (at most `out.len()` are
        /// copied). Synchronous: PASSIVE_LEVEL.
        ///
        /// # Errors
        /// The KMCL status of the request; `STATUS_UNSUCCESSFUL` for a malformed or failed
        /// answer.
        pub fn snapshot(&self, irql: &PassiveLevel, out: &mut [u64]) -> vmbus_kmcl::Result<usize> {
            let capacity = self.history.len();
            let request = Message::new(SNAPSHOT, self.history.handle(), capacity as u64).encode();
            let mut response = [0_u8; MESSAGE_LEN];
            let received = self.channel.send_synchronous(
                irql,
                &request,
                SendFlags::WAIT_FOR_COMPLETION,
                &mut response,
                Duration::from_secs(5),
            )?;
            // The answer is host data too: check it, including the count against the buffer.
            let entries = Message::decode(&response)
                .filter(|reply| received == MESSAGE_LEN && reply.kind == VALUE && reply.arg == 0)
                .and_then(|reply| usize::try_from(reply.value).ok())
                .filter(|&entries| entries <= capacity / 8);
            let Some(entries) = entries else {
                bump(&self.stats.rejected);
                return Err(NtStatus::UNSUCCESSFUL);
            };
            for (index, entry) in out.iter_mut().take(entries).enumerate() {
                let mut word = [0_u8; 8];
                self.history.read(index * 8, &mut word)?;
                *entry = u64::from_le_bytes(word);
            }
            Ok(entries)
        }

        /// A counted channel reference for a worker that acknowledges events (a work item's
        /// context in a driver).
        pub fn channel_ref(&self) -> ChannelRef<CounterClient> {
            self.channel.new_ref()
        }

        /// The driver's counters.
        pub fn stats(&self) -> Arc<Stats> {
            Arc::clone(&self.stats)
        }

        /// Acknowledges the pended events, deletes the GPADL and closes the channel
        /// (`EvtDeviceReleaseHardware`).
        ///
        /// The acknowledgements come first because `Channel::disable` cancels pended packets
        /// (completes them with no response) before KMCL calls `suspend`; an event that arrives
        /// in between is cancelled that way.
        pub fn close(self, irql: &PassiveLevel) {
            let Self {
                channel, history, ..
            } = self;
            channel.handler().ack_events();
            drop(history.delete(irql));
            channel.close(irql);
        }
    }
}

/// The host side: a VSP for the counter protocol, written for the tests.
mod host {
    use std::collections::VecDeque;
    use std::sync::{Arc, Mutex};

    use vmbus_kmcl::sys::NTSTATUS;
    use vmbus_kmcl_sim::{HostChannel, HostCompletion, HostDevice, HostPacket, HostWaker};

    use crate::lock;
    use crate::protocol::{EVENT, EVENT_ACK, INCREMENT, Message, SNAPSHOT, VALUE};

    #[derive(Default)]
    struct State {
        value: u64,
        history: Vec<u64>,
        /// Events waiting to be sent from the host thread.
        queued_events: VecDeque<u64>,
        /// Values of the `EVENT_ACK`s received, in order.
        acks: Vec<u64>,
        /// Completions of host packets that carried no valid `EVENT_ACK` (dropped by the guest).
        other_completions: u64,
        /// Requests the VSP did not understand.
        bad_requests: u64,
        /// Hostile: answer every request with a message of an unknown kind.
        garbage_replies: bool,
        waker: Option<HostWaker>,
    }

    /// The VSP. It runs on the emulator's host thread for the open channel.
    pub struct CounterVsp {
        state: Arc<Mutex<State>>,
    }

    /// The test's handle on the VSP.
    #[derive(Clone)]
    pub struct CounterControl {
        state: Arc<Mutex<State>>,
    }

    impl CounterVsp {
        /// A VSP and its control handle.
        pub fn new() -> (Self, CounterControl) {
            let state = Arc::new(Mutex::new(State::default()));
            let control = CounterControl {
                state: Arc::clone(&state),
            };
            (Self { state }, control)
        }
    }

    impl CounterControl {
        /// Queues `count` events (each carries the counter value when it is sent) and wakes the
        /// host thread.
        pub fn push_events(&self, count: usize) {
            let waker = {
                let mut state = lock(&self.state);
                let value = state.value;
                state.queued_events.extend((0..count).map(|_| value));
                state.waker.clone()
            };
            if let Some(waker) = waker {
                waker.wake();
            }
        }

        /// The host's counter.
        pub fn value(&self) -> u64 {
            lock(&self.state).value
        }

        /// The `EVENT_ACK` values received so far.
        pub fn acks(&self) -> Vec<u64> {
            lock(&self.state).acks.clone()
        }

        /// Completions without a valid `EVENT_ACK`.
        pub fn other_completions(&self) -> u64 {
            lock(&self.state).other_completions
        }

        /// Requests the VSP did not understand.
        pub fn bad_requests(&self) -> u64 {
            lock(&self.state).bad_requests
        }

        /// Hostile mode: answers of an unknown kind.
        pub fn set_garbage_replies(&self, on: bool) {
            lock(&self.state).garbage_replies = on;
        }
    }

    impl HostDevice for CounterVsp {
        fn on_open(&mut self, channel: &mut HostChannel) -> Result<(), NTSTATUS> {
            lock(&self.state).waker = Some(channel.waker());
            Ok(())
        }

        fn on_packet(&mut self, channel: &mut HostChannel, packet: &HostPacket) {
            let mut state = lock(&self.state);
            // `payload()` is the guest's bytes padded to a multiple of 8.
            let mut reply = match Message::decode(packet.payload()) {
                Some(request) if request.kind == INCREMENT => {
                    state.value = state.value.wrapping_add(request.value);
                    state.history.push(request.value);
                    Message::new(VALUE, 0, state.value)
                }
                Some(request) if request.kind == SNAPSHOT => {
                    // The guest names a GPADL of this channel; the host writes into it.
                    match channel.gpadl(request.arg) {
                        Some(view) => {
                            let room = view.len().min(request.value as usize) / 8;
                            let entries = state.history.len().min(room);
                            let mut bytes = Vec::with_capacity(entries * 8);
                            for entry in state.history.iter().take(entries) {
                                bytes.extend_from_slice(&entry.to_le_bytes());
                            }
                            match view.write(0, &bytes) {
                                Ok(()) => Message::new(VALUE, 0, entries as u64),
                                Err(_) => Message::new(VALUE, 2, 0),
                            }
                        }
                        None => Message::new(VALUE, 1, 0),
                    }
                }
                _ => {
                    state.bad_requests += 1;
                    Message::new(VALUE, 3, 0)
                }
            };
            if state.garbage_replies {
                reply.kind = 0xBAD;
            }
            drop(state);
            if packet.completion_requested() {
                let _ = channel.complete(packet.transaction_id(), &reply.encode());
            }
        }

        fn on_completion(&mut self, _: &mut HostChannel, completion: &HostCompletion) {
            let mut state = lock(&self.state);
            match Message::decode(&completion.payload) {
                Some(ack) if ack.kind == EVENT_ACK => state.acks.push(ack.value),
                _ => state.other_completions += 1,
            }
        }

        fn on_poll(&mut self, channel: &mut HostChannel) {
            loop {
                let next = lock(&self.state).queued_events.pop_front();
                let Some(value) = next else {
                    return;
                };
                let event = Message::new(EVENT, 0, value).encode();
                if channel.send(&event, true).is_err() {
                    return;
                }
            }
        }

        fn on_close(&mut self, _: &mut HostChannel) {
            lock(&self.state).waker = None;
        }
    }
}

#[allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::time::Duration;

    use vmbus_kmcl::sys::GUID;
    use vmbus_kmcl::{NtStatus, PassiveLevel};
    use vmbus_kmcl_sim::{InterfaceVersion, Offer, Slot, Vmbus, VmbusConfig, schedule};

    use crate::driver::{CounterDevice, Stats};
    use crate::host::{CounterControl, CounterVsp};
    use crate::protocol::{EVENT, Message};

    /// The counter device's interface type and instance (any GUIDs: the offer and the driver
    /// only have to agree).
    const COUNTER_TYPE: GUID = GUID {
        Data1: 0xc0de_0001,
        Data2: 0x1111,
        Data3: 0x2222,
        Data4: [3, 3, 4, 4, 5, 5, 6, 6],
    };
    const COUNTER_INSTANCE: GUID = GUID {
        Data1: 0xc0de_0002,
        Data2: 0x7777,
        Data3: 0x8888,
        Data4: [9, 9, 10, 10, 11, 11, 12, 12],
    };

    /// Makes the emulator's IRQL model the library's probe (`Vmbus::new` does it too; it is
    /// idempotent). Without it every thread counts as passive, so a `PassiveLevel::check()`
    /// reached from a packet callback would succeed here and bugcheck in a guest.
    fn install_irql_model() {
        vmbus_kmcl_sim::install_irql_model();
    }

    /// A test thread's PASSIVE_LEVEL token.
    fn passive() -> PassiveLevel {
        PassiveLevel::check().expect("test threads run at PASSIVE_LEVEL")
    }

    /// Polls `condition` for up to 5 s. `schedule::sleep` is `std::thread::sleep` normally and
    /// a virtual sleep under a seeded schedule, so the helper works in both.
    fn wait_until(condition: impl Fn() -> bool) -> bool {
        for _ in 0..25_000 {
            if condition() {
                return true;
            }
            schedule::sleep(Duration::from_micros(200));
        }
        condition()
    }

    /// A bus offering one counter device.
    fn counter_bus(version: InterfaceVersion) -> (Vmbus, Offer, CounterControl) {
        install_irql_model();
        let bus = Vmbus::new(VmbusConfig::new(version));
        let (vsp, control) = CounterVsp::new();
        let offer = bus.offer(COUNTER_TYPE, COUNTER_INSTANCE, Box::new(vsp));
        (bus, offer, control)
    }

    /// A worker thread that acknowledges pended events until stopped, as a work item would.
    struct AckWorker {
        stop: Arc<AtomicBool>,
        thread: schedule::JoinHandle<()>,
    }

    impl AckWorker {
        fn start(device: &CounterDevice) -> Self {
            let channel = device.channel_ref();
            let stop = Arc::new(AtomicBool::new(false));
            let flag = Arc::clone(&stop);
            // `schedule::spawn`: a plain thread normally, a participant under a schedule.
            let thread = schedule::spawn("ack worker", move || {
                while !flag.load(Ordering::SeqCst) {
                    channel.handler().ack_events();
                    schedule::sleep(Duration::from_micros(200));
                }
                // `channel` (a ChannelRef) is dropped here.
            })
            .unwrap();
            Self { stop, thread }
        }

        fn stop(self) {
            self.stop.store(true, Ordering::SeqCst);
            self.thread.join().unwrap();
        }
    }

    /// The walkthrough: open, increments with completions, a GPADL snapshot, host events pended
    /// and acknowledged from another thread, close, and a clean verifier report. On a V1 bus
    /// (legacy callbacks) and a V5 bus (Ex callbacks).
    #[test]
    fn counter_device_round_trip() {
        for version in [InterfaceVersion::V1, InterfaceVersion::V5] {
            round_trip(version);
        }
    }

    /// The same walkthrough under 20 seeded schedules: the emulator's threads, the ack worker
    /// and the test thread run one at a time in an order each seed chooses, so a race in the
    /// driver shows up as a failing seed (`VMBUS_SIM_SEED=<seed>` replays it).
    #[test]
    fn counter_device_round_trip_under_seeded_schedules() {
        let sweep = schedule::sweep(0, 20, |seed| {
            round_trip(if seed.is_multiple_of(2) {
                InterfaceVersion::V5
            } else {
                InterfaceVersion::V1
            });
        });
        assert!(sweep.runs < 2 || sweep.distinct_traces > 1, "{sweep:?}");
    }

    fn round_trip(version: InterfaceVersion) {
        {
            let (bus, offer, control) = counter_bus(version);
            let irql = passive();
            let interface = bus.kmcl_interface().unwrap();
            let device = CounterDevice::open(&irql, &interface, offer.parent_device()).unwrap();
            let stats = device.stats();

            // Increments: sent with completions, answered by the host with the new value.
            for amount in 1..=10 {
                device.increment(amount).unwrap();
            }
            assert!(wait_until(|| Stats::get(&stats.replies) == 10));
            assert_eq!(Stats::get(&stats.last_value), 55, "{version:?}");
            assert_eq!(control.value(), 55);

            // The GPADL: the host wrote the history into the shared page.
            let mut history = [0_u64; 16];
            let entries = device.snapshot(&irql, &mut history).unwrap();
            assert_eq!(&history[..entries], &[1, 2, 3, 4, 5, 6, 7, 8, 9, 10]);

            // Host events: pended by the receive path, acknowledged by the worker.
            let worker = AckWorker::start(&device);
            control.push_events(5);
            assert!(wait_until(|| control.acks().len() == 5), "{version:?}");
            assert_eq!(control.acks(), vec![55; 5]);
            worker.stop();
            assert_eq!(Stats::get(&stats.events), 5);
            assert_eq!(Stats::get(&stats.acked), 5);

            // While the device is open the verifier sees its resources: not clean yet.
            let report = bus.verifier();
            assert_eq!(report.live_channels, 1);
            assert_eq!(report.live_gpadls, 1);
            assert!(!report.is_clean());

            device.close(&irql);
            drop(interface);
            // The handler was dropped with the channel (nothing kept it alive).
            assert_eq!(Arc::strong_count(&stats), 1);
            assert_eq!(Stats::get(&stats.rejected), 0);
            assert_eq!(Stats::get(&stats.failed), 0);
            let report = bus.verifier();
            println!("{version:?}: {report}");
            report.assert_clean();
        }
    }

    /// A hostile host: malformed packets reach the driver, which counts and drops them (each is
    /// completed with no response) and keeps working; a forged completion never reaches the
    /// driver at all (the bus drops and counts it).
    #[test]
    fn malformed_host_messages_are_counted_and_dropped() {
        let (bus, offer, control) = counter_bus(InterfaceVersion::V5);
        let irql = passive();
        let interface = bus.kmcl_interface().unwrap();
        let device = CounterDevice::open(&irql, &interface, offer.parent_device()).unwrap();
        let stats = device.stats();

        // An unknown kind, and a message too short for the protocol.
        offer.host_send(&[0xEE; 16], true).unwrap();
        offer.host_send(b"bad", true).unwrap();
        assert!(wait_until(|| Stats::get(&stats.rejected) == 2));
        assert!(wait_until(|| control.other_completions() == 2));
        assert_eq!(Stats::get(&stats.events), 0);

        // An event with the right kind but 24 bytes long is malformed too.
        let mut long = Message::new(EVENT, 0, 1).encode().to_vec();
        long.extend_from_slice(&[0; 8]);
        offer.host_send(&long, true).unwrap();
        assert!(wait_until(|| Stats::get(&stats.rejected) == 3));

        // A completion for a transaction the guest never started.
        offer.inject_completion(0xDEAD_BEEF, &[0; 16]).unwrap();
        assert!(wait_until(
            || bus.verifier().counters.forged_completions == 1
        ));

        // The channel still works.
        device.increment(7).unwrap();
        assert!(wait_until(|| Stats::get(&stats.replies) == 1));
        assert_eq!(Stats::get(&stats.last_value), 7);

        device.close(&irql);
        drop(interface);
        let report = bus.verifier();
        assert_eq!(report.uncompleted_incoming, 0);
        report.assert_clean();
    }

    /// A host that answers with garbage: the request fails, the answer is counted as rejected,
    /// and the driver's value does not move.
    #[test]
    fn garbage_reply_fails_the_request() {
        let (bus, offer, control) = counter_bus(InterfaceVersion::V5);
        let irql = passive();
        let interface = bus.kmcl_interface().unwrap();
        let device = CounterDevice::open(&irql, &interface, offer.parent_device()).unwrap();
        let stats = device.stats();

        control.set_garbage_replies(true);
        device.increment(3).unwrap();
        assert!(wait_until(|| Stats::get(&stats.failed) == 1));
        assert_eq!(Stats::get(&stats.rejected), 1);
        assert_eq!(Stats::get(&stats.replies), 0);
        assert_eq!(Stats::get(&stats.last_value), 0);
        let mut history = [0_u64; 4];
        assert_eq!(
            device.snapshot(&irql, &mut history),
            Err(NtStatus::UNSUCCESSFUL)
        );
        assert_eq!(control.bad_requests(), 0, "the requests were well formed");

        device.close(&irql);
        drop(interface);
        bus.assert_clean();
    }

    /// Injected KMCL faults come back from the driver's API as errors, and the error paths
    /// leak nothing.
    #[test]
    fn injected_faults_surface_as_errors() {
        let injected = NtStatus::INSUFFICIENT_RESOURCES;

        // A failing send.
        let (bus, offer, _control) = counter_bus(InterfaceVersion::V5);
        let irql = passive();
        let interface = bus.kmcl_interface().unwrap();
        let device = CounterDevice::open(&irql, &interface, offer.parent_device()).unwrap();
        let stats = device.stats();
        assert!(
            bus.faults()
                .fail_nth(Slot::VmbPacketSend, 1, injected.raw())
        );
        assert_eq!(device.increment(1), Err(injected));
        device.increment(2).unwrap(); // only the first call was armed
        assert!(wait_until(|| Stats::get(&stats.replies) == 1));
        assert_eq!(Stats::get(&stats.last_value), 2);

        // Completions that arrive with an error status.
        bus.faults()
            .completion_status(Some(vmbus_kmcl_sim::status::STATUS_DEVICE_BUSY));
        device.increment(4).unwrap();
        assert!(wait_until(|| Stats::get(&stats.failed) == 1));
        bus.faults().clear();

        device.close(&irql);
        drop(interface);
        bus.assert_clean();

        // A failure in the middle of `open`: the half-open channel is torn down.
        for slot in [
            Slot::VmbChannelEnable,
            Slot::VmbChannelCreateGpadlFromBuffer,
        ] {
            let (bus, offer, _control) = counter_bus(InterfaceVersion::V5);
            let interface = bus.kmcl_interface().unwrap();
            assert!(bus.faults().fail_nth(slot, 1, injected.raw()));
            let opened = CounterDevice::open(&irql, &interface, offer.parent_device());
            assert_eq!(opened.err(), Some(injected), "{}", slot.name());
            drop(interface);
            bus.assert_clean();
        }
    }

    /// Events still pended when the driver closes the device are acknowledged by `close`,
    /// before the channel is disabled.
    #[test]
    fn pended_events_are_acknowledged_at_close() {
        let (bus, offer, control) = counter_bus(InterfaceVersion::V5);
        let irql = passive();
        let interface = bus.kmcl_interface().unwrap();
        let device = CounterDevice::open(&irql, &interface, offer.parent_device()).unwrap();
        let stats = device.stats();

        control.push_events(3);
        assert!(wait_until(|| Stats::get(&stats.events) == 3));
        assert!(
            control.acks().is_empty(),
            "no worker runs: they stay pended"
        );
        assert_eq!(bus.verifier().uncompleted_incoming, 3);

        device.close(&irql);
        // Checked on the guest side: the emulator stops the VSP (`on_close`) without reading
        // what the guest wrote to the ring during the close, so the VSP may miss these acks.
        assert_eq!(Stats::get(&stats.acked), 3);
        assert_eq!(Stats::get(&stats.cancelled), 0);
        assert_eq!(Arc::strong_count(&stats), 1);
        drop(interface);
        bus.assert_clean();
    }

    /// The host rescinds the offer with events pended: the handler's `suspend` acknowledges
    /// them, later sends fail, and the driver's close still leaves nothing behind.
    #[test]
    fn host_rescind_acknowledges_pended_events_in_suspend() {
        let (bus, offer, control) = counter_bus(InterfaceVersion::V5);
        let irql = passive();
        let interface = bus.kmcl_interface().unwrap();
        let device = CounterDevice::open(&irql, &interface, offer.parent_device()).unwrap();
        let stats = device.stats();

        control.push_events(2);
        assert!(wait_until(|| Stats::get(&stats.events) == 2));
        offer.rescind();
        assert_eq!(Stats::get(&stats.acked), 2, "acknowledged in suspend");
        assert_eq!(bus.verifier().uncompleted_incoming, 0);
        assert_eq!(device.increment(1), Err(NtStatus::DEVICE_REMOVED));

        device.close(&irql);
        assert_eq!(Arc::strong_count(&stats), 1);
        drop(interface);
        bus.assert_clean();
    }
}
