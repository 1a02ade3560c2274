//! The keyboard's VMBus logic, portable: the [`KbdClient`] channel handler (receive path,
//! negotiation state, counters, settings) and the [`Keyboard`] that owns the channel (open
//! with protocol negotiation, LED updates, close).
//!
//! Everything here takes a queried [`KmclInterface`] and a [`ParentDevice`], so the same code
//! runs in the KMDF driver and over the emulator (`vmbus-kbd-sim`).
//!
//! ## Receive path
//! Each host packet is copied out of host memory once ([`IncomingPacket::copy_data`]) and the
//! packet is completed at once (dropping an [`IncomingPacket`] completes it with no response;
//! the protocol has no acknowledgements). Only the copy is then validated: length against the
//! message type ([`protocol::parse_host_message`]), then against the state (a keystroke is only
//! accepted once the host accepted the protocol; a protocol response only while one is
//! awaited). A message that fails is counted by [`RejectReason`] and dropped; nothing else
//! happens, so a hostile host can neither crash the driver nor make it leak a packet.
//!
//! A valid keystroke becomes one [`KeyboardInputData`] handed to the consumer, kbdclass's
//! service callback in the kernel, through [`InputSink::deliver`], from the channel's DPC (at
//! DISPATCH_LEVEL, the IRQL kbdclass requires), with no allocation and no lock.
//!
//! **Unicode events** (info bit 0) carry a UTF-16 code unit instead of a scan code. A keyboard
//! port driver can only report scan codes to kbdclass, and there is no scan code for an
//! arbitrary character on an unknown layout, so they are counted in
//! [`Counters::unicode_dropped`] and dropped, not translated.
//!
//! ## Ordering
//! KMCL delivers one channel's packets in ring order from one DPC at a time (the emulator does
//! the same), so keystrokes reach the consumer in the order the host sent them.

use core::sync::atomic::{AtomicBool, AtomicU8, AtomicU32, AtomicU64, Ordering};

use vmbus_kmcl::{
    Channel, ChannelConfig, ChannelCore, ChannelHandler, ChannelRef, Completion, IncomingPacket,
    KmclInterface, NtStatus, ParentDevice, PassiveLevel, ProcessPacketFlags, SendFlags,
};

use crate::ioctl::KeyboardSettings;
use crate::protocol::{self, HostMessage, KeyboardInputData, RejectReason};

/// Where translated input goes: kbdclass's service callback in the driver, a recorder over the
/// emulator.
pub trait InputSink: Send + Sync + 'static {
    /// Hands `data` to the consumer; returns how many records it took (fewer, e.g. 0 while no
    /// class driver is connected, means the rest are lost, as on real hardware).
    ///
    /// IRQL: DISPATCH_LEVEL (called from the channel's receive DPC). Must not block or
    /// allocate.
    fn deliver(&self, data: &[KeyboardInputData]) -> usize;
}

/// What the client needs besides the sink: a clock and a wait/notify pair for the negotiation.
pub trait Platform: InputSink {
    /// Monotonic time in nanoseconds (any origin). IRQL: any.
    fn now_ns(&self) -> u64;

    /// Arms the event: a `notify` after this makes the next `wait` return. IRQL: PASSIVE_LEVEL.
    fn prepare_wait(&self);

    /// Wakes a waiter. IRQL: ≤ DISPATCH_LEVEL.
    fn notify(&self);

    /// Blocks until notified or `timeout_ns` elapsed (may return early). IRQL: PASSIVE_LEVEL.
    fn wait(&self, timeout_ns: u64);
}

/// Longest single wait; the condition is re-checked at least this often.
const WAIT_SLICE_NS: u64 = 10_000_000;

/// Bytes copied out of a host packet: a maximum message with its ring padding, plus one byte
/// so that anything longer is seen as too long.
const RECEIVE_BUFFER: usize = protocol::MAX_MESSAGE + 8 + 1;

/// Packet context of the protocol request.
const TAG_PROTOCOL: u32 = 1;
/// Packet context of an LED message.
const TAG_LED: u32 = 2;

/// The channel's friendly name, "vmbus-kbd" in UTF-16.
static FRIENDLY_NAME: [u16; 9] = [
    'v' as u16, 'm' as u16, 'b' as u16, 'u' as u16, 's' as u16, '-' as u16, 'k' as u16, 'b' as u16,
    'd' as u16,
];

/// Settings of a keyboard channel.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KbdConfig {
    /// Ring size in 4 KiB pages, each way (2..=256).
    pub ring_pages: u32,
    /// How long the negotiation waits for the host's response, in nanoseconds (> 0).
    pub timeout_ns: u64,
}

impl KbdConfig {
    /// 10 ring pages each way (as Linux), a 10 s negotiation timeout (as Linux).
    pub const DEFAULT: Self = Self {
        ring_pages: protocol::RING_PAGES,
        timeout_ns: 10_000_000_000,
    };
}

impl Default for KbdConfig {
    fn default() -> Self {
        Self::DEFAULT
    }
}

/// Why a keyboard operation failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KbdError {
    /// A KMCL call failed with this status.
    Kmcl(NtStatus),
    /// The host refused protocol version 1.0; `status` is its response's status word.
    Refused {
        /// The status word (bit 0 clear).
        status: u32,
    },
    /// The host did not answer the protocol request in time.
    Timeout,
    /// The host closed (rescinded) the channel.
    HostClosed,
    /// No accepted protocol: the channel is not open (or the host refused).
    NotReady,
    /// A configuration value out of range.
    InvalidArgument,
}

impl KbdError {
    /// The NTSTATUS to report to WDF.
    #[must_use]
    pub fn status(self) -> NtStatus {
        match self {
            Self::Kmcl(status) => status,
            Self::Refused { .. } => NtStatus::NOT_SUPPORTED,
            Self::Timeout => NtStatus(0xC000_00B5_u32 as i32), // STATUS_IO_TIMEOUT
            Self::HostClosed => NtStatus::DEVICE_REMOVED,
            Self::NotReady => NtStatus::INVALID_DEVICE_STATE,
            Self::InvalidArgument => NtStatus::INVALID_PARAMETER,
        }
    }
}

impl From<NtStatus> for KbdError {
    fn from(status: NtStatus) -> Self {
        Self::Kmcl(status)
    }
}

impl core::fmt::Display for KbdError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Self::Kmcl(status) => write!(f, "KMCL call failed: {status}"),
            Self::Refused { status } => write!(
                f,
                "the host refused keyboard protocol 1.0 (response status {status:#x})"
            ),
            Self::Timeout => f.write_str("the host did not answer the protocol request"),
            Self::HostClosed => f.write_str("the host closed the channel"),
            Self::NotReady => f.write_str("no accepted keyboard protocol"),
            Self::InvalidArgument => f.write_str("invalid argument"),
        }
    }
}

impl core::error::Error for KbdError {}

/// A snapshot of the client's counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counters {
    /// Host packets received, valid or not.
    pub incoming: u64,
    /// Valid protocol responses.
    pub protocol_responses: u64,
    /// Valid keystrokes (unicode ones included).
    pub events: u64,
    /// Records the consumer took.
    pub delivered: u64,
    /// Records the consumer did not take (no class driver connected, or its queue full).
    pub consumer_dropped: u64,
    /// Unicode keystrokes dropped (see the module documentation).
    pub unicode_dropped: u64,
    /// LED messages handed to KMCL.
    pub leds_sent: u64,
    /// LED messages KMCL refused.
    pub led_failures: u64,
    /// Completions of the guest's packets with a success status.
    pub completions: u64,
    /// Completions with a failure status (cancelled at close, removed at rescind).
    pub failed_completions: u64,
    /// Host messages dropped, by [`RejectReason::index`].
    pub rejected: [u64; RejectReason::COUNT],
}

impl Counters {
    /// Rejections of every reason.
    #[must_use]
    pub fn rejected_total(&self) -> u64 {
        self.rejected.iter().sum()
    }

    /// Rejections of `reason`.
    #[must_use]
    pub fn rejected(&self, reason: RejectReason) -> u64 {
        self.rejected.get(reason.index()).copied().unwrap_or(0)
    }
}

#[derive(Default)]
struct LiveCounters {
    incoming: AtomicU64,
    protocol_responses: AtomicU64,
    events: AtomicU64,
    delivered: AtomicU64,
    consumer_dropped: AtomicU64,
    unicode_dropped: AtomicU64,
    leds_sent: AtomicU64,
    led_failures: AtomicU64,
    completions: AtomicU64,
    failed_completions: AtomicU64,
    rejected: [AtomicU64; RejectReason::COUNT],
}

fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

fn read(counter: &AtomicU64) -> u64 {
    counter.load(Ordering::Relaxed)
}

impl LiveCounters {
    fn snapshot(&self) -> Counters {
        let mut rejected = [0; RejectReason::COUNT];
        for (out, live) in rejected.iter_mut().zip(&self.rejected) {
            *out = read(live);
        }
        Counters {
            incoming: read(&self.incoming),
            protocol_responses: read(&self.protocol_responses),
            events: read(&self.events),
            delivered: read(&self.delivered),
            consumer_dropped: read(&self.consumer_dropped),
            unicode_dropped: read(&self.unicode_dropped),
            leds_sent: read(&self.leds_sent),
            led_failures: read(&self.led_failures),
            completions: read(&self.completions),
            failed_completions: read(&self.failed_completions),
            rejected,
        }
    }

    fn reject(&self, reason: RejectReason) {
        if let Some(counter) = self.rejected.get(reason.index()) {
            bump(counter);
        }
    }
}

/// Negotiation states.
const IDLE: u8 = 0;
/// The protocol request is out (or about to be); a response is awaited.
const NEGOTIATING: u8 = 1;
/// The host accepted version 1.0: keystrokes flow.
const READY: u8 = 2;
/// The host refused.
const REFUSED: u8 = 3;

/// The keyboard channel's handler: the receive path, the negotiation state, the settings and
/// the counters, all in atomics.
pub struct KbdClient<P: Platform> {
    platform: P,
    state: AtomicU8,
    response_status: AtomicU32,
    host_closed: AtomicBool,
    settings: KeyboardSettings,
    counters: LiveCounters,
}

impl<P: Platform> core::fmt::Debug for KbdClient<P> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("KbdClient")
            .field("state", &self.state.load(Ordering::Relaxed))
            .field("host_closed", &self.host_closed())
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

impl<P: Platform> KbdClient<P> {
    /// A client before any channel exists.
    #[must_use]
    pub fn new(platform: P) -> Self {
        Self {
            platform,
            state: AtomicU8::new(IDLE),
            response_status: AtomicU32::new(0),
            host_closed: AtomicBool::new(false),
            settings: KeyboardSettings::new(),
            counters: LiveCounters::default(),
        }
    }

    /// The environment (and sink).
    #[must_use]
    pub fn platform(&self) -> &P {
        &self.platform
    }

    /// Indicators and typematic setting.
    #[must_use]
    pub fn settings(&self) -> &KeyboardSettings {
        &self.settings
    }

    /// True while the host has accepted the protocol and not closed the channel.
    #[must_use]
    pub fn is_ready(&self) -> bool {
        self.state.load(Ordering::Acquire) == READY && !self.host_closed()
    }

    /// True once the host closed (rescinded) the channel.
    #[must_use]
    pub fn host_closed(&self) -> bool {
        self.host_closed.load(Ordering::Acquire)
    }

    /// A snapshot of the counters.
    #[must_use]
    pub fn counters(&self) -> Counters {
        self.counters.snapshot()
    }

    /// Validates one host message (already copied out of host memory) against the protocol and
    /// the state, and acts on it.
    fn receive(&self, data: &[u8], total_len: usize, flags: ProcessPacketFlags) {
        let message = if flags.contains(ProcessPacketFlags::EXTERNAL_DATA) {
            Err(RejectReason::ExternalData)
        } else if total_len > data.len() {
            Err(RejectReason::TooLong)
        } else {
            protocol::parse_host_message(data)
        };
        let outcome = message.and_then(|message| match message {
            HostMessage::ProtocolResponse { status } => self.accept_response(status),
            HostMessage::Event(keystroke) => {
                if self.state.load(Ordering::Acquire) != READY {
                    return Err(RejectReason::NotNegotiated);
                }
                bump(&self.counters.events);
                match keystroke.to_input_data() {
                    Some(record) => {
                        let taken = self.platform.deliver(core::slice::from_ref(&record));
                        if taken >= 1 {
                            bump(&self.counters.delivered);
                        } else {
                            bump(&self.counters.consumer_dropped);
                        }
                    }
                    None => bump(&self.counters.unicode_dropped),
                }
                Ok(())
            }
        });
        if let Err(reason) = outcome {
            self.counters.reject(reason);
        }
    }

    /// The protocol response: accepted only while one is awaited.
    fn accept_response(&self, status: u32) -> Result<(), RejectReason> {
        let next = if status & protocol::STATUS_ACCEPTED != 0 {
            READY
        } else {
            REFUSED
        };
        self.response_status.store(status, Ordering::Relaxed);
        self.state
            .compare_exchange(NEGOTIATING, next, Ordering::AcqRel, Ordering::Acquire)
            .map_err(|_| RejectReason::UnexpectedResponse)?;
        bump(&self.counters.protocol_responses);
        self.platform.notify();
        Ok(())
    }

    /// Waits until `done()` holds or the deadline passes; true if it holds. PASSIVE_LEVEL.
    fn wait_until(&self, deadline_ns: u64, mut done: impl FnMut() -> bool) -> bool {
        let platform = &self.platform;
        loop {
            platform.prepare_wait();
            if done() {
                return true;
            }
            let now = platform.now_ns();
            if now >= deadline_ns {
                return done();
            }
            platform.wait((deadline_ns - now).min(WAIT_SLICE_NS));
        }
    }
}

impl<P: Platform> ChannelHandler for KbdClient<P> {
    /// What the packet was: the protocol request or an LED message.
    type PacketContext = u32;

    fn closed(&self, _channel: &ChannelCore<Self>, _irql: &PassiveLevel) {
        self.host_closed.store(true, Ordering::Release);
        self.platform.notify();
    }

    /// The receive path (DISPATCH_LEVEL): copy, complete, validate the copy, deliver. Never
    /// allocates, never panics, never keeps a packet.
    fn process_packet(&self, _channel: &ChannelCore<Self>, packet: IncomingPacket<'_, Self>) {
        bump(&self.counters.incoming);
        let mut copy = [0_u8; RECEIVE_BUFFER];
        let total_len = packet.data().len();
        let copied = packet.copy_data(&mut copy);
        let flags = packet.flags();
        // Completed now with no response: the host's bytes are no longer needed.
        drop(packet);
        let data = copy.get(..copied).unwrap_or(&[]);
        self.receive(data, total_len, flags);
    }

    fn packet_completed(&self, _channel: &ChannelCore<Self>, completion: Completion<'_, u32>) {
        // The protocol request's completion carries nothing the guest uses (the answer comes as
        // a separate message); the LED message asks for none. Only the status is counted,
        // whichever of `TAG_PROTOCOL` / `TAG_LED` the context is.
        if completion.status.is_success() {
            bump(&self.counters.completions);
        } else {
            bump(&self.counters.failed_completions);
        }
    }
}

/// The open keyboard: the unique owner of its channel. Keep it in the device context; dropping
/// it at PASSIVE_LEVEL tears the channel down (see [`Channel::close`]).
pub struct Keyboard<P: Platform> {
    channel: Channel<KbdClient<P>>,
}

impl<P: Platform> core::fmt::Debug for Keyboard<P> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Keyboard")
            .field("channel", &self.channel)
            .finish()
    }
}

impl<P: Platform> Keyboard<P> {
    /// Opens the keyboard: allocates the channel (`VmbChannelAllocate`, rings of
    /// [`KbdConfig::ring_pages`], 256-byte packets), enables it, sends the protocol request
    /// for version 1.0 (in-band, completion requested) and waits for the host's response.
    /// On any failure the channel is torn down again before this returns.
    ///
    /// # Errors
    /// [`KbdError::InvalidArgument`] for a configuration out of range; [`KbdError::Kmcl`] from
    /// KMCL; [`KbdError::Refused`] when the host answers without the accepted bit;
    /// [`KbdError::Timeout`]; [`KbdError::HostClosed`].
    ///
    /// IRQL: PASSIVE_LEVEL (the token).
    pub fn open(
        irql: &PassiveLevel,
        interface: &KmclInterface,
        parent: ParentDevice,
        config: &KbdConfig,
        platform: P,
    ) -> Result<Self, KbdError> {
        if !(2..=256).contains(&config.ring_pages) || config.timeout_ns == 0 {
            return Err(KbdError::InvalidArgument);
        }
        let channel_config = ChannelConfig::new()
            .ring_buffer_pages(config.ring_pages, config.ring_pages)
            .maximum_packet_size(protocol::MAX_MESSAGE as u32)
            .friendly_name(&FRIENDLY_NAME);
        let mut channel = Channel::new(
            irql,
            interface,
            parent,
            &channel_config,
            KbdClient::new(platform),
        )?;
        // From here on, an early return drops `channel`, which tears it down at PASSIVE_LEVEL.
        let client = channel.handler();
        // Keystrokes that arrive before the response are rejected as not negotiated.
        client.state.store(NEGOTIATING, Ordering::Release);
        channel.enable(irql)?;
        let request = protocol::encode_protocol_request(protocol::VERSION_1_0);
        channel.send(&request, SendFlags::WAIT_FOR_COMPLETION, TAG_PROTOCOL)?;
        let client = channel.handler();
        let deadline = client.platform.now_ns().saturating_add(config.timeout_ns);
        client.wait_until(deadline, || {
            client.state.load(Ordering::Acquire) != NEGOTIATING || client.host_closed()
        });
        let state = client.state.load(Ordering::Acquire);
        let result = if client.host_closed() {
            Err(KbdError::HostClosed)
        } else if state == READY {
            Ok(())
        } else if state == REFUSED {
            Err(KbdError::Refused {
                status: client.response_status.load(Ordering::Relaxed),
            })
        } else {
            Err(KbdError::Timeout)
        };
        match result {
            Ok(()) => Ok(Self { channel }),
            Err(error) => {
                channel.handler().state.store(IDLE, Ordering::Release);
                channel.close(irql);
                Err(error)
            }
        }
    }

    /// The client (counters, settings, state).
    #[must_use]
    pub fn client(&self) -> &KbdClient<P> {
        self.channel.handler()
    }

    /// The channel.
    #[must_use]
    pub fn channel(&self) -> &Channel<KbdClient<P>> {
        &self.channel
    }

    /// A counted reference to the channel (for state kept beside it).
    #[must_use]
    pub fn channel_ref(&self) -> ChannelRef<KbdClient<P>> {
        self.channel.new_ref()
    }

    /// Records the indicators (`KEYBOARD_*_LOCK_ON`, masked with [`protocol::LED_MASK`]) and
    /// forwards them to the host as the LED message (in-band, no completion requested). What
    /// kbdclass's `IOCTL_KEYBOARD_SET_INDICATORS` does.
    ///
    /// # Errors
    /// [`KbdError::HostClosed`] after a rescind; [`KbdError::NotReady`] without an accepted
    /// protocol; [`KbdError::Kmcl`] when the send fails. The indicators are recorded anyway.
    ///
    /// IRQL: ≤ DISPATCH_LEVEL. Allocation-free (KMCL's own packet allocator is used).
    pub fn set_indicators(&self, led_flags: u16) -> Result<(), KbdError> {
        let client = self.client();
        let masked = client.settings.store_indicators(led_flags);
        if client.host_closed() {
            return Err(KbdError::HostClosed);
        }
        if !client.is_ready() {
            return Err(KbdError::NotReady);
        }
        let message = protocol::encode_led_indicators(masked);
        match self.channel.send(&message, SendFlags::empty(), TAG_LED) {
            Ok(()) => {
                bump(&client.counters.leds_sent);
                Ok(())
            }
            Err(status) => {
                bump(&client.counters.led_failures);
                Err(KbdError::Kmcl(status))
            }
        }
    }

    /// Closes the keyboard: stops accepting keystrokes, then tears the channel down
    /// (`VmbChannelDisable`, which waits for every callback, then `VmbChannelCleanup`).
    ///
    /// IRQL: PASSIVE_LEVEL.
    pub fn close(self, irql: &PassiveLevel) {
        let Self { channel } = self;
        channel.handler().state.store(IDLE, Ordering::Release);
        channel.close(irql);
    }
}
