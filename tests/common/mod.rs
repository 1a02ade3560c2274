//! Shared rig for the library's integration tests: an emulated bus with one echo offer, the
//! safe interface queried from it, and a recording handler.
#![allow(
    dead_code,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::sync::Mutex;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

use vmbus_kmcl::sys::GUID;
use vmbus_kmcl::{
    Channel, ChannelCore, ChannelHandler, Completion, IncomingPacket, KmclInterface, NtStatus,
    ParentDevice, PassiveLevel,
};
use vmbus_kmcl_sim::{
    EchoControl, EchoVsp, InterfaceVersion as SimVersion, Offer, Vmbus, VmbusConfig,
};

/// The offer's interface type and instance.
pub const ECHO_TYPE: GUID = GUID {
    Data1: 0x1234_5678,
    Data2: 0x9abc,
    Data3: 0xdef0,
    Data4: [1, 2, 3, 4, 5, 6, 7, 8],
};
pub const ECHO_INSTANCE: GUID = GUID {
    Data1: 0x0bad_cafe,
    Data2: 1,
    Data3: 2,
    Data4: [8, 7, 6, 5, 4, 3, 2, 1],
};

pub struct Rig {
    pub interface: KmclInterface,
    pub parent: ParentDevice,
    pub echo: EchoControl,
    pub offer: Offer,
    pub bus: Vmbus,
}

/// Installs the emulator's IRQL model as the library's IRQL probe
/// (`vmbus_kmcl_sim::install_irql_model`: DISPATCH_LEVEL in packet and completion callbacks on
/// its callback threads, PASSIVE_LEVEL in state callbacks and on other threads, a thread's own
/// `vmbus_kmcl_sim::irql::raise`). `Vmbus::new` does it too; it is idempotent.
pub fn install_irql_model() {
    vmbus_kmcl_sim::install_irql_model();
}

/// Runs `f` with this thread's IRQL raised to `irql` (as between `KeRaiseIrql` and
/// `KeLowerIrql`); the library and the emulator's slots both see it.
pub fn at_irql<R>(irql: vmbus_kmcl::Irql, f: impl FnOnce() -> R) -> R {
    install_irql_model();
    vmbus_kmcl_sim::irql::at(irql, f)
}

pub fn rig(version: SimVersion) -> Rig {
    install_irql_model();
    let bus = Vmbus::new(VmbusConfig::new(version));
    let (vsp, echo) = EchoVsp::new();
    let offer = bus.offer(ECHO_TYPE, ECHO_INSTANCE, Box::new(vsp));
    let interface = bus.kmcl_interface().expect("query the emulated interface");
    let parent = offer.parent_device();
    Rig {
        interface,
        parent,
        echo,
        offer,
        bus,
    }
}

/// The PASSIVE_LEVEL token of a test thread (the emulator runs no test code at DISPATCH_LEVEL).
pub fn passive() -> PassiveLevel {
    PassiveLevel::check().expect("test threads run at PASSIVE_LEVEL")
}

impl Rig {
    /// A channel on the echo offer, not yet enabled.
    pub fn create<H: ChannelHandler>(
        &self,
        config: &vmbus_kmcl::ChannelConfig,
        handler: H,
    ) -> Channel<H> {
        Channel::new(&passive(), &self.interface, self.parent, config, handler)
            .expect("Channel::new")
    }

    /// A channel on the echo offer, enabled.
    pub fn open<H: ChannelHandler>(
        &self,
        config: &vmbus_kmcl::ChannelConfig,
        handler: H,
    ) -> Channel<H> {
        let mut channel = self.create(config, handler);
        channel.enable(&passive()).expect("enable");
        channel
    }

    /// Releases the interface and asserts the emulator's verifier is clean: no leak, no
    /// violation.
    pub fn finish(self) {
        drop(self.interface);
        self.bus.assert_clean();
    }
}

/// Every emulated interface version, for tests that must hold on all of them.
pub const ALL_VERSIONS: [SimVersion; 5] = SimVersion::ALL;

/// Polls `condition` for up to 5 s (virtual time under a seeded schedule).
pub fn wait_until(condition: impl Fn() -> bool) -> bool {
    for _ in 0..25_000 {
        if condition() {
            return true;
        }
        vmbus_kmcl_sim::schedule::sleep(Duration::from_micros(200));
    }
    condition()
}

/// What a [`Recorder`] does with incoming packets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Incoming {
    /// Complete with the same bytes reversed.
    CompleteReversed,
    /// Drop the packet (completes with no response).
    Drop,
    /// Defer to passive the first time it is seen, complete reversed on redelivery.
    DeferOnce,
    /// Fail it.
    Fail,
}

/// Records every callback.
pub struct Recorder {
    pub incoming: Incoming,
    pub opened: AtomicU32,
    pub closed: AtomicU32,
    pub suspended: AtomicU32,
    pub started: AtomicU32,
    pub post_started: AtomicU32,
    pub received: Mutex<Vec<Vec<u8>>>,
    pub deliveries: AtomicU32,
    pub batches: AtomicU32,
    pub completions: Mutex<Vec<(NtStatus, Vec<u8>, u64)>>,
    pub completed: AtomicU64,
    pub fail_open: Option<NtStatus>,
    pub pnp_failures: Mutex<Vec<NtStatus>>,
}

impl Recorder {
    pub fn new(incoming: Incoming) -> Self {
        Self {
            incoming,
            opened: AtomicU32::new(0),
            closed: AtomicU32::new(0),
            suspended: AtomicU32::new(0),
            started: AtomicU32::new(0),
            post_started: AtomicU32::new(0),
            received: Mutex::new(Vec::new()),
            deliveries: AtomicU32::new(0),
            batches: AtomicU32::new(0),
            completions: Mutex::new(Vec::new()),
            completed: AtomicU64::new(0),
            fail_open: None,
            pnp_failures: Mutex::new(Vec::new()),
        }
    }
}

impl ChannelHandler for Recorder {
    type PacketContext = u64;

    fn opened(&self, _: &ChannelCore<Self>, _: &PassiveLevel) -> vmbus_kmcl::Result<()> {
        self.opened.fetch_add(1, Ordering::SeqCst);
        self.fail_open.map_or(Ok(()), Err)
    }
    fn closed(&self, _: &ChannelCore<Self>, _: &PassiveLevel) {
        self.closed.fetch_add(1, Ordering::SeqCst);
    }
    fn suspend(&self, _: &ChannelCore<Self>, _: &PassiveLevel) {
        self.suspended.fetch_add(1, Ordering::SeqCst);
    }
    fn started(&self, _: &ChannelCore<Self>, _: &PassiveLevel) {
        self.started.fetch_add(1, Ordering::SeqCst);
    }
    fn post_started(&self, _: &ChannelCore<Self>, _: &PassiveLevel) {
        self.post_started.fetch_add(1, Ordering::SeqCst);
    }
    fn process_packet(&self, _: &ChannelCore<Self>, packet: IncomingPacket<'_, Self>) {
        let seen = self.deliveries.fetch_add(1, Ordering::SeqCst);
        let mut data = vec![0; packet.data().len()];
        packet.copy_data(&mut data);
        match self.incoming {
            Incoming::CompleteReversed => {
                let reply: Vec<u8> = data.iter().rev().copied().collect();
                self.received.lock().unwrap().push(data);
                packet.complete(&reply).unwrap();
            }
            Incoming::Drop => {
                self.received.lock().unwrap().push(data);
                drop(packet);
            }
            Incoming::DeferOnce if seen == 0 => packet.defer_to_passive(),
            Incoming::DeferOnce => {
                let reply: Vec<u8> = data.iter().rev().copied().collect();
                self.received.lock().unwrap().push(data);
                packet.complete(&reply).unwrap();
            }
            Incoming::Fail => {
                self.received.lock().unwrap().push(data);
                packet.fail();
            }
        }
    }
    fn processing_complete(&self, _: &ChannelCore<Self>, _: u32) {
        self.batches.fetch_add(1, Ordering::SeqCst);
    }
    fn pnp_failure(&self, _: &ChannelCore<Self>, status: NtStatus, _: &PassiveLevel) {
        self.pnp_failures.lock().unwrap().push(status);
    }
    fn packet_completed(&self, _: &ChannelCore<Self>, done: Completion<'_, u64>) {
        let mut response = vec![0; done.response.len()];
        done.response.copy_to(&mut response);
        self.completions
            .lock()
            .unwrap()
            .push((done.status, response, done.context));
        self.completed.fetch_add(1, Ordering::SeqCst);
    }
}

/// One 4 KiB page, page-aligned.
#[derive(
    Clone,
    Copy,
    zerocopy::IntoBytes,
    zerocopy::FromBytes,
    zerocopy::Immutable,
    zerocopy::KnownLayout,
)]
#[repr(C, align(4096))]
pub struct Page([u8; 4096]);

/// Whole, page-aligned pages: what a PFN list or a full-page GPADL must describe.
pub struct Pages(Vec<Page>);

impl Pages {
    pub fn new(count: usize) -> Self {
        Self(vec![Page([0; 4096]); count])
    }
    pub fn bytes_mut(&mut self) -> &mut [u8] {
        zerocopy::IntoBytes::as_mut_bytes(self.0.as_mut_slice())
    }
}

/// Copies a host-memory view into a `Vec` (test code may allocate).
pub fn to_vec(view: vmbus_kmcl::HostBytes<'_>) -> Vec<u8> {
    let mut out = vec![0; view.len()];
    assert_eq!(view.copy_to(&mut out), out.len());
    out
}

/// True on an emulator callback ("DPC") thread, which models DISPATCH_LEVEL; the passive
/// worker (`vmbus-passive-*`) and test threads model PASSIVE_LEVEL.
pub fn on_dpc_thread() -> bool {
    std::thread::current()
        .name()
        .is_some_and(|name| name.starts_with("vmbus-dpc"))
}
