//! `EchoVsp`: a host device that echoes requests, sends unsolicited packets on demand, and
//! counts what it saw.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use crate::base::event::lock;
use crate::model::host::{
    HostChannel, HostCompletion, HostDevice, HostPacket, HostPacketKind, HostWaker,
};

/// What an [`EchoVsp`] saw and did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct EchoStats {
    /// Channels opened on it.
    pub opens: u64,
    /// Channels closed.
    pub closes: u64,
    /// Data packets received.
    pub packets: u64,
    /// In-band bytes received (padded lengths).
    pub bytes: u64,
    /// Received packets that requested a completion.
    pub completion_requested: u64,
    /// Completions sent.
    pub completions_sent: u64,
    /// GPA-direct packets received.
    pub gpa_direct: u64,
    /// External bytes announced by GPA-direct packets.
    pub external_bytes: u64,
    /// Unsolicited packets sent.
    pub unsolicited_sent: u64,
    /// Unsolicited packets the guest completed.
    pub unsolicited_completed: u64,
}

#[derive(Default)]
struct EchoState {
    stats: EchoStats,
    unsolicited: VecDeque<Vec<u8>>,
    responses: Vec<Vec<u8>>,
    waker: Option<HostWaker>,
}

/// The echo VSP: completes every completion-requested packet with the packet's own in-band
/// bytes (as received, i.e. padded to 8), and sends unsolicited in-band packets (completion
/// requested) queued through its [`EchoControl`].
pub struct EchoVsp {
    state: Arc<Mutex<EchoState>>,
}

/// Controls an [`EchoVsp`] from the test thread. Cheap to clone.
#[derive(Clone)]
pub struct EchoControl {
    state: Arc<Mutex<EchoState>>,
}

impl core::fmt::Debug for EchoVsp {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("EchoVsp").finish_non_exhaustive()
    }
}

impl core::fmt::Debug for EchoControl {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("EchoControl")
            .field("stats", &self.stats())
            .finish()
    }
}

impl EchoVsp {
    /// A new echo device and its control handle.
    #[must_use]
    pub fn new() -> (Self, EchoControl) {
        let state = Arc::new(Mutex::new(EchoState::default()));
        (
            Self {
                state: Arc::clone(&state),
            },
            EchoControl { state },
        )
    }
}

impl EchoControl {
    /// Queues an unsolicited in-band packet (completion requested); it is sent from the host
    /// thread as soon as a channel is open.
    pub fn send_unsolicited(&self, bytes: &[u8]) {
        let waker = {
            let mut s = lock(&self.state);
            s.unsolicited.push_back(bytes.to_vec());
            s.waker.clone()
        };
        if let Some(w) = waker {
            w.wake();
        }
    }

    /// The counters so far.
    #[must_use]
    pub fn stats(&self) -> EchoStats {
        lock(&self.state).stats
    }

    /// The guest's responses to unsolicited packets, in completion order.
    #[must_use]
    pub fn unsolicited_responses(&self) -> Vec<Vec<u8>> {
        lock(&self.state).responses.clone()
    }
}

impl HostDevice for EchoVsp {
    fn on_open(&mut self, channel: &mut HostChannel) -> Result<(), vmbus_kmcl::sys::NTSTATUS> {
        let mut s = lock(&self.state);
        s.stats.opens += 1;
        s.waker = Some(channel.waker());
        Ok(())
    }

    fn on_packet(&mut self, channel: &mut HostChannel, packet: &HostPacket) {
        {
            let mut s = lock(&self.state);
            s.stats.packets += 1;
            s.stats.bytes += packet.payload().len() as u64;
            if packet.kind() == HostPacketKind::GpaDirect {
                s.stats.gpa_direct += 1;
                s.stats.external_bytes += packet.external_len() as u64;
            }
            if packet.completion_requested() {
                s.stats.completion_requested += 1;
            }
        }
        if packet.completion_requested()
            && channel
                .complete(packet.transaction_id(), packet.payload())
                .is_ok()
        {
            lock(&self.state).stats.completions_sent += 1;
        }
    }

    fn on_completion(&mut self, _channel: &mut HostChannel, completion: &HostCompletion) {
        let mut s = lock(&self.state);
        s.stats.unsolicited_completed += 1;
        s.responses.push(completion.payload.clone());
    }

    fn on_poll(&mut self, channel: &mut HostChannel) {
        loop {
            let next = lock(&self.state).unsolicited.pop_front();
            let Some(bytes) = next else {
                break;
            };
            if channel.send(&bytes, true).is_ok() {
                lock(&self.state).stats.unsolicited_sent += 1;
            }
        }
    }

    fn on_close(&mut self, _channel: &mut HostChannel) {
        let mut s = lock(&self.state);
        s.stats.closes += 1;
        s.waker = None;
    }
}
