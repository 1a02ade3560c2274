//! The shared state of one emulated bus (`Bus`): configuration, offers, channels, verifier
//! state and armed faults. The public bus is `api::vmbus::Vmbus`.

use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use vmbus_kmcl::sys::{GUID, Guid, NTSTATUS};

use crate::base::event::lock;
use crate::base::profile::HostProfile;
use crate::base::slot::InterfaceVersion;
use crate::base::slot::Slot;
use crate::model::channel::Channel;
use crate::model::offer::OfferShared;
use crate::verifier::report::{Counter, VerifierReport, VerifierState, Violation, ViolationKind};

/// Configuration of an emulated bus. `Default` is a V5 bus with the defaults below.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct VmbusConfig {
    /// Highest interface version the bus offers (queries for higher versions fail).
    pub version: InterfaceVersion,
    /// Default data pages of each ring of a channel (default 16 = 64 KiB each way).
    pub ring_pages: u32,
    /// Default maximum in-band packet size in bytes (default 4096).
    pub max_packet_size: u32,
    /// Default maximum number of `VmbPacketAllocate` packets alive per channel (default 256).
    pub max_packet_count: u32,
    /// Default maximum external data per packet in bytes (default 1 MiB).
    pub max_external_data: u32,
    /// Default maximum MDL chain length per packet (default 16).
    pub max_external_chain: u32,
    /// How long disable/pause/rescind wait for the driver to complete incoming packets and for
    /// callbacks to finish before they force-release and record a violation (default 2 s).
    pub drain_timeout: Duration,
    /// Longest wait of a `VmbChannelSendSynchronousRequest` with a null (infinite) timeout;
    /// after it the request is cancelled (default 30 s).
    pub infinite_wait_cap: Duration,
    /// The host implementation the emulator imitates (default [`HostProfile::Default`], the
    /// behaviour of earlier versions).
    pub host_profile: HostProfile,
}

impl VmbusConfig {
    /// The defaults with `version`.
    #[must_use]
    pub fn new(version: InterfaceVersion) -> Self {
        Self {
            version,
            ..Self::default()
        }
    }

    /// The same configuration imitating `profile`.
    #[must_use]
    pub const fn with_host_profile(mut self, profile: HostProfile) -> Self {
        self.host_profile = profile;
        self
    }
}

impl Default for VmbusConfig {
    fn default() -> Self {
        Self {
            version: InterfaceVersion::V5,
            ring_pages: 16,
            max_packet_size: 4096,
            max_packet_count: 256,
            max_external_data: 1 << 20,
            max_external_chain: 16,
            drain_timeout: Duration::from_secs(2),
            infinite_wait_cap: Duration::from_secs(30),
            host_profile: HostProfile::Default,
        }
    }
}

#[derive(Debug, Default)]
pub(crate) struct FaultState {
    pub(crate) armed: Vec<(Slot, u32, NTSTATUS)>,
    pub(crate) defer_external: bool,
    pub(crate) completion_status: Option<NTSTATUS>,
}

#[derive(Default)]
pub(crate) struct BusState {
    pub(crate) offers: Vec<Arc<OfferShared>>,
    pub(crate) channels: Vec<Weak<Channel>>,
    pub(crate) references: i64,
    pub(crate) shut_down: bool,
}

/// The shared state of one bus.
pub(crate) struct Bus {
    pub(crate) config: VmbusConfig,
    /// The interface `Context` value (a synthetic handle).
    pub(crate) context: usize,
    pub(crate) state: Mutex<BusState>,
    pub(crate) verifier: Mutex<VerifierState>,
    pub(crate) faults: Mutex<FaultState>,
    /// `Faults::spurious_guest_signals` (an atomic: it is read on every guest send).
    pub(crate) spurious_signals: AtomicBool,
}

impl Bus {
    pub(crate) fn record(&self, v: Violation) {
        lock(&self.verifier).record(v);
    }

    pub(crate) fn violation(
        &self,
        slot: &'static str,
        kind: ViolationKind,
        message: impl Into<String>,
        handle: usize,
    ) {
        self.record(Violation {
            slot,
            kind,
            message: message.into(),
            handle,
            irql: None,
        });
    }

    pub(crate) fn bump(&self, c: Counter) {
        lock(&self.verifier).bump(c);
    }

    /// The injected fault for this call of `slot`, if one is due (counts the call).
    pub(crate) fn fault(&self, slot: Slot) -> Option<NTSTATUS> {
        let mut f = lock(&self.faults);
        let pos = f.armed.iter().position(|(s, _, _)| *s == slot)?;
        let entry = f.armed.get_mut(pos)?;
        entry.1 = entry.1.saturating_sub(1);
        if entry.1 == 0 {
            let status = entry.2;
            f.armed.remove(pos);
            Some(status)
        } else {
            None
        }
    }

    pub(crate) fn find_offer(
        &self,
        interface_type: &GUID,
        instance: Option<&GUID>,
        subchannel: u16,
    ) -> Option<Arc<OfferShared>> {
        lock(&self.state)
            .offers
            .iter()
            .find(|o| {
                Guid(o.interface_type) == Guid(*interface_type)
                    && !o.is_rescinded()
                    && instance.is_none_or(|i| Guid(*i) == Guid(o.instance))
                    && o.subchannel_index == subchannel
            })
            .cloned()
    }

    pub(crate) fn add_channel(&self, ch: &Arc<Channel>) {
        let mut st = lock(&self.state);
        st.channels.retain(|w| w.strong_count() > 0);
        st.channels.push(Arc::downgrade(ch));
    }

    pub(crate) fn forget_channel(&self, ch: &Channel) {
        lock(&self.state)
            .channels
            .retain(|w| !core::ptr::eq(w.as_ptr(), ch));
    }

    pub(crate) fn reference(&self, delta: i64, slot: &'static str) {
        let mut st = lock(&self.state);
        let next = st.references.saturating_add(delta);
        if next < 0 {
            drop(st);
            self.violation(
                slot,
                ViolationKind::ReferenceUnderflow,
                "InterfaceDereference without a matching reference",
                self.context,
            );
        } else {
            st.references = next;
        }
    }

    pub(crate) fn report(&self) -> VerifierReport {
        let (channels, references) = {
            let st = lock(&self.state);
            let chs: Vec<Arc<Channel>> = st.channels.iter().filter_map(Weak::upgrade).collect();
            (chs, st.references)
        };
        let mut report = VerifierReport {
            interface_references: references,
            ..VerifierReport::default()
        };
        for ch in &channels {
            ch.add_to_report(&mut report);
        }
        let v = lock(&self.verifier);
        report.violations = v.violations.clone();
        report.counters = v.counters;
        report
    }
}
