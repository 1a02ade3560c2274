//! [`KbdHost`]: the host side of the synthetic keyboard (a `HostDevice` for the emulator),
//! honest or hostile, driven by the test through a [`HostControl`].
//!
//! Honest behaviour, as Hyper-V's keyboard device behaves towards Linux's driver: the guest's
//! protocol request is completed (with no response bytes, if it asked for a completion) and
//! answered by a separate protocol-response message; once the protocol is accepted, queued
//! keystrokes are sent as in-band events; LED messages are recorded.
//!
//! Hostile switches ([`HostConfig`]): refuse the protocol, never answer, send keystrokes
//! before the response, ask the guest to complete every event; and [`HostControl::send_raw`]
//! queues any bytes (truncated events, unknown types) behind the negotiation.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use vmbus_kbd::protocol::{self, GuestMessage, Keystroke};
use vmbus_kmcl_sim::{HostChannel, HostCompletion, HostDevice, HostPacket, HostWaker};

/// How the host answers the protocol request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Negotiation {
    /// Accepts (status bit 0 set).
    Accept,
    /// Refuses with this status word (bit 0 clear).
    Refuse(u32),
    /// Never answers.
    Silent,
}

/// The host keyboard's behaviour.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HostConfig {
    /// The answer to the protocol request.
    pub negotiation: Negotiation,
    /// Keystrokes (make of 'a') sent before the protocol response.
    pub events_before_response: u32,
    /// Send events with "completion requested" (the guest must still complete each one).
    pub completion_requested: bool,
}

impl HostConfig {
    /// Accepts; events need no completion.
    pub const HONEST: Self = Self {
        negotiation: Negotiation::Accept,
        events_before_response: 0,
        completion_requested: false,
    };
}

impl Default for HostConfig {
    fn default() -> Self {
        Self::HONEST
    }
}

/// What the host saw and did.
#[derive(Debug, Default)]
struct HostState {
    config: HostConfig,
    waker: Option<HostWaker>,
    accepted: bool,
    queue: VecDeque<Vec<u8>>,
    requested_versions: Vec<u32>,
    leds: Vec<u16>,
    sent: u64,
    completions: u64,
    bad_guest_messages: u64,
    closes: u64,
}

fn lock(state: &Mutex<HostState>) -> MutexGuard<'_, HostState> {
    state.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The host keyboard device. Move it into the bus with `Vmbus::offer`; keep its
/// [`HostControl`].
#[derive(Debug)]
pub struct KbdHost {
    state: Arc<Mutex<HostState>>,
}

/// The test's handle on a [`KbdHost`] (cheap to clone).
#[derive(Clone, Debug)]
pub struct HostControl {
    state: Arc<Mutex<HostState>>,
}

impl KbdHost {
    /// A host keyboard with `config`, and its control.
    #[must_use]
    pub fn new(config: HostConfig) -> (Self, HostControl) {
        let state = Arc::new(Mutex::new(HostState {
            config,
            ..HostState::default()
        }));
        (
            Self {
                state: Arc::clone(&state),
            },
            HostControl { state },
        )
    }
}

impl HostControl {
    /// Queues `keystrokes` as events (sent once the protocol is accepted) and wakes the host.
    pub fn type_keystrokes(&self, keystrokes: &[Keystroke]) {
        let mut state = lock(&self.state);
        for &keystroke in keystrokes {
            state
                .queue
                .push_back(protocol::encode_event(keystroke).to_vec());
        }
        wake(state);
    }

    /// Queues arbitrary bytes as one in-band message (hostile), behind the negotiation.
    pub fn send_raw(&self, bytes: &[u8]) {
        let mut state = lock(&self.state);
        state.queue.push_back(bytes.to_vec());
        wake(state);
    }

    /// True once the host accepted the protocol on the open channel.
    #[must_use]
    pub fn accepted(&self) -> bool {
        lock(&self.state).accepted
    }

    /// The versions of every protocol request received.
    #[must_use]
    pub fn requested_versions(&self) -> Vec<u32> {
        lock(&self.state).requested_versions.clone()
    }

    /// Every LED message's flags, in order.
    #[must_use]
    pub fn leds(&self) -> Vec<u16> {
        lock(&self.state).leds.clone()
    }

    /// Messages sent to the guest after the negotiation (events and raw messages).
    #[must_use]
    pub fn sent(&self) -> u64 {
        lock(&self.state).sent
    }

    /// Messages still queued.
    #[must_use]
    pub fn queued(&self) -> usize {
        lock(&self.state).queue.len()
    }

    /// Completions the guest sent for host packets that asked for one.
    #[must_use]
    pub fn completions(&self) -> u64 {
        lock(&self.state).completions
    }

    /// Guest messages the host could not parse.
    #[must_use]
    pub fn bad_guest_messages(&self) -> u64 {
        lock(&self.state).bad_guest_messages
    }

    /// Channel closes seen.
    #[must_use]
    pub fn closes(&self) -> u64 {
        lock(&self.state).closes
    }
}

/// Wakes the host thread, after releasing the lock.
fn wake(state: MutexGuard<'_, HostState>) {
    let waker = state.waker.clone();
    drop(state);
    if let Some(waker) = waker {
        waker.wake();
    }
}

impl HostDevice for KbdHost {
    fn on_open(&mut self, channel: &mut HostChannel) -> Result<(), i32> {
        let mut state = lock(&self.state);
        state.waker = Some(channel.waker());
        state.accepted = false;
        Ok(())
    }

    fn on_packet(&mut self, channel: &mut HostChannel, packet: &HostPacket) {
        let message = protocol::parse_guest_message(packet.payload());
        if packet.completion_requested() {
            let _ = channel.complete(packet.transaction_id(), &[]);
        }
        let mut state = lock(&self.state);
        match message {
            Some(GuestMessage::ProtocolRequest { version }) => {
                state.requested_versions.push(version);
                let config = state.config;
                drop(state);
                let early = protocol::encode_event(Keystroke {
                    make_code: 0x1e,
                    info: 0,
                });
                for _ in 0..config.events_before_response {
                    let _ = channel.send(&early, config.completion_requested);
                }
                let status = match config.negotiation {
                    Negotiation::Accept => protocol::STATUS_ACCEPTED,
                    Negotiation::Refuse(status) => status & !protocol::STATUS_ACCEPTED,
                    Negotiation::Silent => return,
                };
                let response = protocol::encode_protocol_response(status);
                if channel.send(&response, false).is_ok() && status & protocol::STATUS_ACCEPTED != 0
                {
                    lock(&self.state).accepted = true;
                    self.on_poll(channel);
                }
            }
            Some(GuestMessage::LedIndicators { flags }) => state.leds.push(flags),
            None => state.bad_guest_messages += 1,
        }
    }

    fn on_completion(&mut self, _channel: &mut HostChannel, _completion: &HostCompletion) {
        lock(&self.state).completions += 1;
    }

    fn on_poll(&mut self, channel: &mut HostChannel) {
        loop {
            let mut state = lock(&self.state);
            if !state.accepted {
                return;
            }
            let completion_requested = state.config.completion_requested;
            let Some(message) = state.queue.pop_front() else {
                return;
            };
            drop(state);
            if channel.send(&message, completion_requested).is_err() {
                lock(&self.state).queue.push_front(message);
                return;
            }
            lock(&self.state).sent += 1;
        }
    }

    fn on_close(&mut self, _channel: &mut HostChannel) {
        let mut state = lock(&self.state);
        state.waker = None;
        state.accepted = false;
        state.closes += 1;
    }
}
