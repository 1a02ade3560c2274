//! Host personalities: habits of particular VMBus host implementations that a guest driver
//! meets in the field, switched on per bus with [`VmbusConfig::host_profile`].
//!
//! [`VmbusConfig::host_profile`]: crate::VmbusConfig::host_profile

use core::fmt;

/// Which host the emulator imitates (see the crate README, "Host profiles").
///
/// Every profile keeps the emulator's semantics and every hostile-host control (`Offer`'s
/// corruption, injection, stall and rescind controls work under each of them); a profile only
/// adds the habits listed on its variant.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum HostProfile {
    /// The emulator as it always was: a well-behaved host. Guest→host interrupts that the
    /// empty→non-empty rule did not call for are counted
    /// ([`OfferCounters::unneeded_guest_signals`](crate::OfferCounters::unneeded_guest_signals))
    /// but not reported.
    #[default]
    Default,
    /// A Windows (Hyper-V) host:
    ///
    /// * every guest→host interrupt the ring's signalling rule did not call for (the ring was
    ///   not empty before the guest's write, or the host had masked interrupts) is a verifier
    ///   finding, [`ViolationKind::UnexpectedInterrupt`](crate::ViolationKind::UnexpectedInterrupt):
    ///   Windows hosts treat unexpected interrupts as abuse (comment in Linux
    ///   `drivers/hv/ring_buffer.c`, `hv_signal_on_write`);
    /// * right after the device accepts the open, before the open result reaches the guest, the
    ///   host runs the device's [`HostDevice::on_poll`](crate::HostDevice::on_poll) once, so a
    ///   device that has something to say (e.g. queued
    ///   [`EchoControl::send_unsolicited`](crate::EchoControl::send_unsolicited) packets) writes
    ///   it, and interrupts the guest, before the guest's `EvtChannelOpened` runs and before the
    ///   guest sent anything: integration-component devices start talking as soon as they are
    ///   told of the open (OpenVMM PR 1850), and such an interrupt can reach the guest before
    ///   its open result (OpenVMM PR 1829, a Linux driver that ignored it and stalled).
    HyperV,
    /// An OpenVMM host: when the host's writer finds the host→guest ring full it asks for
    /// `max(needed, largest packet / 4)` bytes in `pending_send_sz` instead of just what it
    /// needs, so that the guest signals once per large chunk of freed space rather than once per
    /// packet (OpenVMM `vmbus_ring`, `WriteState::poll_ready`; spec §1.8).
    OpenVmm,
}

impl HostProfile {
    /// Every profile, the default first.
    pub const ALL: [Self; 3] = [Self::Default, Self::HyperV, Self::OpenVmm];

    /// The profile's short name: `default`, `hyperv`, `openvmm`.
    #[must_use]
    pub const fn name(self) -> &'static str {
        match self {
            Self::Default => "default",
            Self::HyperV => "hyperv",
            Self::OpenVmm => "openvmm",
        }
    }

    /// The profile named `name` (as [`HostProfile::name`] spells it, any case).
    #[must_use]
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL
            .into_iter()
            .find(|p| p.name().eq_ignore_ascii_case(name))
    }

    /// True if unneeded guest→host interrupts are verifier findings.
    pub(crate) const fn reports_unneeded_signals(self) -> bool {
        matches!(self, Self::HyperV)
    }

    /// True if the device is polled before the open result reaches the guest.
    pub(crate) const fn polls_before_open_result(self) -> bool {
        matches!(self, Self::HyperV)
    }

    /// What the host writer stores in `pending_send_sz` when a packet needing `needed` ring
    /// bytes does not fit a ring whose largest packet is `max_packet` bytes.
    pub(crate) fn pending_send_request(self, needed: u32, max_packet: u32) -> u32 {
        match self {
            Self::OpenVmm => needed.max(max_packet / 4),
            Self::Default | Self::HyperV => needed,
        }
    }
}

impl fmt::Display for HostProfile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}
