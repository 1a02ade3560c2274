//! The verifier: driver bugs (violations), leaks, and counters of hostile-host events.

use core::fmt;

/// The class of a driver bug the verifier found.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ViolationKind {
    /// A handle argument (`VMBCHANNEL`, `VMBPACKET`, `VMBPACKETCOMPLETION`, interface context,
    /// device object, MDL) that the emulator never handed out, or one of the wrong type. It is
    /// never dereferenced.
    InvalidHandle,
    /// A handle used after it was released (channel after `VmbChannelCleanup`, packet after
    /// `VmbPacketFree`, incoming packet after it was completed or force-released).
    UseAfterFree,
    /// `VmbPacketFree` on a packet that was already freed.
    DoubleFree,
    /// `VmbChannelPacketComplete` / `VmbChannelPacketFail` on a packet that was already
    /// completed.
    DoubleComplete,
    /// A call in the wrong channel or packet state (an `Init*` setter after enable, cleanup while
    /// enabled, enable twice, resend of a packet in flight, ...).
    WrongState,
    /// A bad argument that the slot rejected (the status says which parameter).
    InvalidParameter,
    /// A send on a channel that is disabled, paused, closing or not yet open.
    SendOnDisabledChannel,
    /// A callback would have run after its channel was closed (a deferred or pended packet on a
    /// closing channel); it was suppressed.
    CallbackAfterClose,
    /// `VmbChannelDeleteGpadl` on a GPADL that was already deleted.
    GpadlDeletedTwice,
    /// A resource still held when its owner went away (packets or GPADLs at cleanup, channels
    /// at shutdown, incoming packets never completed).
    Leak,
    /// A blocking call (disable, pause, cleanup, a waiting synchronous request) from one of the
    /// channel's own callback threads, which would deadlock; the call was refused.
    WouldDeadlock,
    /// `InterfaceDereference` without a matching reference.
    ReferenceUnderflow,
    /// A slot that the bus's interface version does not have (e.g. V5 callbacks on a V4 bus).
    NotSupported,
    /// A slot called above the highest IRQL it allows ([`Slot::max_irql`](crate::Slot::max_irql);
    /// e.g. `VmbChannelDisable` from a DISPATCH_LEVEL packet callback). The call was refused;
    /// [`Violation::irql`] holds both levels.
    IrqlTooHigh,
    /// A guest→host interrupt that the ring's signalling rule did not call for: the guest's
    /// write found the ring already non-empty, or the host had masked interrupts (spec §1.8).
    /// Reported only under [`HostProfile::HyperV`](crate::HostProfile::HyperV), whose hosts
    /// treat such interrupts as abuse; the handle is the channel's.
    UnexpectedInterrupt,
}

/// The two levels of an [`IrqlTooHigh`](ViolationKind::IrqlTooHigh) violation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct IrqlMismatch {
    /// The calling thread's IRQL.
    pub current: vmbus_kmcl::Irql,
    /// The highest IRQL the slot allows.
    pub required: vmbus_kmcl::Irql,
}

/// One driver bug: the slot it happened in, its class, a message and the handle involved.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Violation {
    /// The slot (C name) or emulator entry point where it was detected.
    pub slot: &'static str,
    /// The class of bug.
    pub kind: ViolationKind,
    /// What happened, in words.
    pub message: String,
    /// The handle or pointer involved (0 if none).
    pub handle: usize,
    /// The calling thread's IRQL and the slot's requirement, for
    /// [`IrqlTooHigh`](ViolationKind::IrqlTooHigh); `None` for other kinds.
    pub irql: Option<IrqlMismatch>,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}: {:?}: {} (handle {:#x})",
            self.slot, self.kind, self.message, self.handle
        )
    }
}

/// Counters of events caused by the host (hostile or just unusual). They never make a report
/// unclean: a hostile-host test asserts on them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct HostileCounters {
    /// Host→guest ring corruptions (frame-level: bad index, descriptor, `len8`/`offset8`, type,
    /// flags, GPA header). The guest stops reading that ring; the channel stays usable for sends.
    pub ring_corruptions: u64,
    /// Guest→host ring corruptions seen by the guest's writer (the host wrote a wild read index).
    pub outgoing_ring_corruptions: u64,
    /// Completions whose transaction ID was never issued (forged / unsolicited).
    pub forged_completions: u64,
    /// Completions of a transaction that was already completed.
    pub duplicate_completions: u64,
    /// Completions with transaction ID 0.
    pub txid_zero_completions: u64,
    /// Completions of a synchronous request that had already timed out (absorbed).
    pub late_completions: u64,
    /// GPA-direct packets whose ranges are not backed by the host buffer of their transaction
    /// (dropped, never delivered).
    pub bad_gpa_direct: u64,
    /// Packets of a type the client does not deliver (transfer pages); dropped.
    pub unsupported_packets: u64,
    /// Completion-requested packets with transaction ID 0 (delivered, never completed on the
    /// wire).
    pub txid_zero_requests: u64,
    /// Host-device callbacks that panicked (caught on the host thread).
    pub host_device_panics: u64,
    /// Internal emulator panics caught at a slot boundary (should stay 0).
    pub internal_errors: u64,
}

/// Resource counts and every violation of one bus, at the moment the report was taken.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct VerifierReport {
    /// Channels allocated and not cleaned up.
    pub live_channels: usize,
    /// Outgoing packets allocated (or initialized and in flight) and not freed.
    pub live_packets: usize,
    /// GPADLs created and not deleted.
    pub live_gpadls: usize,
    /// Incoming packets delivered to the driver and not completed.
    pub uncompleted_incoming: usize,
    /// Interface references taken and not released.
    pub interface_references: i64,
    /// Driver bugs, in the order found.
    pub violations: Vec<Violation>,
    /// Host-caused events.
    pub counters: HostileCounters,
}

impl VerifierReport {
    /// No leak of any kind and no violation. Counters do not count.
    #[must_use]
    pub fn is_clean(&self) -> bool {
        self.live_channels == 0
            && self.live_packets == 0
            && self.live_gpadls == 0
            && self.uncompleted_incoming == 0
            && self.interface_references == 0
            && self.violations.is_empty()
    }

    /// The violations of one kind.
    pub fn violations_of(&self, kind: ViolationKind) -> impl Iterator<Item = &Violation> {
        self.violations.iter().filter(move |v| v.kind == kind)
    }

    /// True if a violation of `kind` was recorded in `slot`.
    #[must_use]
    pub fn has(&self, slot: &str, kind: ViolationKind) -> bool {
        self.violations
            .iter()
            .any(|v| v.kind == kind && v.slot == slot)
    }

    /// Panics with the whole report unless it [`is_clean`](Self::is_clean). A test helper.
    ///
    /// # Panics
    /// If the report is not clean.
    pub fn assert_clean(&self) {
        assert!(self.is_clean(), "verifier report not clean:\n{self}");
    }
}

impl fmt::Display for VerifierReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "live channels {}, live packets {}, live GPADLs {}, uncompleted incoming {}, \
             interface references {}",
            self.live_channels,
            self.live_packets,
            self.live_gpadls,
            self.uncompleted_incoming,
            self.interface_references
        )?;
        writeln!(f, "counters: {:?}", self.counters)?;
        for v in &self.violations {
            writeln!(f, "  {v}")?;
        }
        Ok(())
    }
}

/// Which hostile counter to bump.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Counter {
    RingCorruption,
    OutgoingRingCorruption,
    Forged,
    Duplicate,
    TxidZeroCompletion,
    Late,
    BadGpaDirect,
    Unsupported,
    TxidZeroRequest,
    HostPanic,
    Internal,
}

/// The mutable verifier state of a bus.
#[derive(Debug, Default)]
pub(crate) struct VerifierState {
    pub(crate) violations: Vec<Violation>,
    pub(crate) counters: HostileCounters,
}

impl VerifierState {
    pub(crate) fn record(&mut self, v: Violation) {
        // Bound the list so a runaway driver cannot exhaust memory.
        if self.violations.len() < 10_000 {
            self.violations.push(v);
        }
    }

    pub(crate) fn bump(&mut self, c: Counter) {
        let k = &mut self.counters;
        let slot = match c {
            Counter::RingCorruption => &mut k.ring_corruptions,
            Counter::OutgoingRingCorruption => &mut k.outgoing_ring_corruptions,
            Counter::Forged => &mut k.forged_completions,
            Counter::Duplicate => &mut k.duplicate_completions,
            Counter::TxidZeroCompletion => &mut k.txid_zero_completions,
            Counter::Late => &mut k.late_completions,
            Counter::BadGpaDirect => &mut k.bad_gpa_direct,
            Counter::Unsupported => &mut k.unsupported_packets,
            Counter::TxidZeroRequest => &mut k.txid_zero_requests,
            Counter::HostPanic => &mut k.host_device_panics,
            Counter::Internal => &mut k.internal_errors,
        };
        *slot = slot.saturating_add(1);
    }
}
