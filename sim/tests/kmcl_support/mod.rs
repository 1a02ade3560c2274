//! Shared helpers for the emulator's integration tests: a recording "raw driver" (callbacks
//! that log into a per-channel record keyed by channel handle), a recording host device, and
//! fixtures that open channels through the raw table.
#![allow(dead_code, unused_imports, clippy::missing_safety_doc)]

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

pub use vmbus_kmcl::sys::*;
pub use vmbus_kmcl_sim::status::*;
pub use vmbus_kmcl_sim::*;

/// The slot table (function pointers are the same for every bus; the context is irrelevant to
/// the slots).
pub struct Table(pub KMCL_CLIENT_INTERFACE_V5);
// SAFETY: the table holds function pointers and an opaque context value that is never
// dereferenced by the tests.
unsafe impl Send for Table {}
// SAFETY: see `Send`.
unsafe impl Sync for Table {}

/// The V5 slot table, from a throwaway bus.
pub fn k() -> &'static KMCL_CLIENT_INTERFACE_V5 {
    static T: OnceLock<Table> = OnceLock::new();
    &T.get_or_init(|| {
        let bus = Vmbus::new(VmbusConfig::default());
        let t = bus.client_interface_v5().unwrap();
        // SAFETY: releasing the reference the query took.
        unsafe { (t.InterfaceHeader.InterfaceDereference.unwrap())(t.InterfaceHeader.Context) };
        Table(t)
    })
    .0
}

/// Queries the interface of `bus` into a V5-shaped struct (slots above the bus version stay
/// null) and returns it with its reference taken.
pub fn query(bus: &Vmbus) -> KMCL_CLIENT_INTERFACE_V5 {
    let mut t = KMCL_CLIENT_INTERFACE_V5::NULL;
    let v = bus.version();
    // SAFETY: `t` is writable for its whole size, which is >= every version's size.
    let s = unsafe {
        bus.query_interface(
            (&raw mut t).cast(),
            u16::try_from(size_of::<KMCL_CLIENT_INTERFACE_V5>()).unwrap(),
            v.number(),
        )
    };
    assert_eq!(s, STATUS_SUCCESS);
    t
}

/// Releases the reference of a queried table.
pub fn release(t: &KMCL_CLIENT_INTERFACE_V5) {
    // SAFETY: releasing a reference the query took.
    unsafe { (t.InterfaceHeader.InterfaceDereference.unwrap())(t.InterfaceHeader.Context) };
}

pub fn guid(n: u32) -> GUID {
    GUID {
        Data1: n,
        Data2: 0x1234,
        Data3: 0x5678,
        Data4: [1, 2, 3, 4, 5, 6, 7, 8],
    }
}

/// Polls `cond` until true or `timeout`; returns whether it became true.
pub fn wait_for(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + timeout;
    while Instant::now() < end {
        if cond() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    cond()
}

pub const T: Duration = Duration::from_secs(5);

// ---------------------------------------------------------------- recording driver

/// What the recording driver does with an incoming packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Mode {
    /// Complete at once with the packet's own bytes.
    #[default]
    Echo,
    /// Keep it (the test completes it).
    Keep,
    /// Defer to passive, then echo.
    Defer,
    /// Map the external data; echo its first 8 bytes.
    External,
    /// `VmbChannelPacketFail`.
    Fail,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Ev {
    Opened,
    Closed,
    Suspend,
    Started,
    PostStarted,
    Packet {
        pc: usize,
        data: Vec<u8>,
        flags: u32,
        passive_redelivery: bool,
    },
    Batch(u32),
    Completion {
        packet: usize,
        status: NTSTATUS,
        data: Vec<u8>,
    },
    Pending(usize),
    ExternalData(Vec<u8>),
}

#[derive(Default)]
pub struct Log {
    pub events: Vec<Ev>,
    pub mode: Mode,
    pub kept: Vec<usize>,
    pub deferred: Vec<usize>,
    pub free_on_complete: bool,
    pub open_status: NTSTATUS,
    pub ctx_errors: u32,
    pub threads: Vec<String>,
}

pub static LOGS: Mutex<BTreeMap<usize, Log>> = Mutex::new(BTreeMap::new());

pub fn with_log<R>(ch: VMBCHANNEL, f: impl FnOnce(&mut Log) -> R) -> R {
    let mut logs = LOGS
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    f(logs.entry(ch as usize).or_default())
}

pub fn events(ch: VMBCHANNEL) -> Vec<Ev> {
    with_log(ch, |l| l.events.clone())
}

pub fn count(ch: VMBCHANNEL, f: impl Fn(&Ev) -> bool) -> usize {
    with_log(ch, |l| l.events.iter().filter(|e| f(e)).count())
}

pub fn completions(ch: VMBCHANNEL) -> Vec<(usize, NTSTATUS, Vec<u8>)> {
    with_log(ch, |l| {
        l.events
            .iter()
            .filter_map(|e| match e {
                Ev::Completion {
                    packet,
                    status,
                    data,
                } => Some((*packet, *status, data.clone())),
                _ => None,
            })
            .collect()
    })
}

pub fn packets(ch: VMBCHANNEL) -> Vec<(usize, Vec<u8>, u32)> {
    with_log(ch, |l| {
        l.events
            .iter()
            .filter_map(|e| match e {
                Ev::Packet {
                    pc, data, flags, ..
                } => Some((*pc, data.clone(), *flags)),
                _ => None,
            })
            .collect()
    })
}

fn push(ch: VMBCHANNEL, e: Ev) {
    with_log(ch, |l| l.events.push(e));
}

unsafe fn bytes(buf: PVOID, len: u32) -> Vec<u8> {
    if buf.is_null() || len == 0 {
        return Vec::new();
    }
    // SAFETY: the emulator passes `len` readable bytes.
    unsafe { core::slice::from_raw_parts(buf.cast::<u8>(), len as usize) }.to_vec()
}

fn handle_packet(ch: VMBCHANNEL, pc: VMBPACKETCOMPLETION, buf: PVOID, len: u32, flags: u32) {
    // SAFETY: the emulator passes the packet's bytes.
    let data = unsafe { bytes(buf, len) };
    let (mode, already_deferred) = with_log(ch, |l| {
        l.threads
            .push(std::thread::current().name().unwrap_or("?").to_owned());
        (l.mode, l.deferred.contains(&(pc as usize)))
    });
    push(
        ch,
        Ev::Packet {
            pc: pc as usize,
            data: data.clone(),
            flags,
            passive_redelivery: already_deferred,
        },
    );
    let t = k();
    match mode {
        Mode::Echo => {
            // SAFETY: completing a live packet with our own buffer.
            unsafe { (t.VmbChannelPacketComplete.unwrap())(pc, buf, len) };
        }
        Mode::Keep => with_log(ch, |l| l.kept.push(pc as usize)),
        Mode::Defer => {
            if already_deferred {
                // SAFETY: as above.
                unsafe { (t.VmbChannelPacketComplete.unwrap())(pc, buf, len) };
            } else {
                with_log(ch, |l| l.deferred.push(pc as usize));
                // SAFETY: deferring a live packet from its callback.
                unsafe { (t.VmbChannelPacketDeferToPassive.unwrap())(pc) };
            }
        }
        Mode::External => {
            let mut mdl: PMDL = core::ptr::null_mut();
            // SAFETY: live packet, writable out-pointer.
            let s = unsafe { (t.VmbChannelPacketGetExternalData.unwrap())(pc, 0, &mut mdl) };
            if s == STATUS_PENDING {
                push(ch, Ev::Pending(pc as usize));
                return;
            }
            assert_eq!(s, STATUS_SUCCESS);
            let mut all = Vec::new();
            let mut cur = mdl;
            while !cur.is_null() {
                // SAFETY: the emulator built this MDL chain; it is valid until completion.
                let m = unsafe { cur.read() };
                let va = m.MappedSystemVa.cast::<u8>();
                // SAFETY: the MDL describes `ByteCount` bytes at `MappedSystemVa`.
                all.extend_from_slice(unsafe {
                    core::slice::from_raw_parts(va, m.ByteCount as usize)
                });
                // Write back a marker the host can observe.
                // SAFETY: writable host buffer described by the MDL.
                unsafe { va.write(0xEE) };
                cur = m.Next;
            }
            push(ch, Ev::ExternalData(all.clone()));
            let mut resp: Vec<u8> = all.iter().take(8).copied().collect();
            // SAFETY: completing a live packet.
            unsafe {
                (t.VmbChannelPacketComplete.unwrap())(
                    pc,
                    resp.as_mut_ptr().cast(),
                    u32::try_from(resp.len()).unwrap(),
                );
            }
        }
        Mode::Fail => {
            // SAFETY: failing a live packet.
            unsafe { (t.VmbChannelPacketFail.unwrap())(pc) };
        }
    }
}

pub unsafe extern "system" fn ev_packet(
    ch: VMBCHANNEL,
    pc: VMBPACKETCOMPLETION,
    buf: PVOID,
    len: u32,
    flags: u32,
) {
    handle_packet(ch, pc, buf, len, flags);
}

pub unsafe extern "system" fn ev_batch(ch: VMBCHANNEL, n: u32) {
    push(ch, Ev::Batch(n));
}

fn check_ctx(ch: VMBCHANNEL, ctx: PVOID) {
    if !core::ptr::eq(ctx.cast::<u8>(), ch.cast::<u8>()) {
        with_log(ch, |l| l.ctx_errors += 1);
    }
}

pub unsafe extern "system" fn ev_packet_ex(
    ch: VMBCHANNEL,
    ctx: PVOID,
    pc: VMBPACKETCOMPLETION,
    buf: PVOID,
    len: u32,
    flags: u32,
) {
    check_ctx(ch, ctx);
    handle_packet(ch, pc, buf, len, flags);
}

pub unsafe extern "system" fn ev_batch_ex(ch: VMBCHANNEL, ctx: PVOID, n: u32) {
    check_ctx(ch, ctx);
    push(ch, Ev::Batch(n));
}

fn on_done(pkt: VMBPACKET, status: NTSTATUS, buf: PVOID, len: u32) {
    // SAFETY: a live packet inside its completion routine.
    let ch = unsafe { (k().VmbPacketGetChannel.unwrap())(pkt) };
    // SAFETY: the emulator passes the response bytes.
    let data = unsafe { bytes(buf, len) };
    push(
        ch,
        Ev::Completion {
            packet: pkt as usize,
            status,
            data,
        },
    );
    if with_log(ch, |l| l.free_on_complete) {
        // SAFETY: freeing our packet from its completion routine.
        unsafe { (k().VmbPacketFree.unwrap())(pkt) };
    }
}

pub unsafe extern "system" fn ev_done(pkt: VMBPACKET, status: NTSTATUS, buf: PVOID, len: u32) {
    on_done(pkt, status, buf, len);
}

pub static EX_DONE_CTX_ERRORS: AtomicUsize = AtomicUsize::new(0);

/// Ex routine: the context must be the packet handle.
pub unsafe extern "system" fn ev_done_ex(
    pkt: VMBPACKET,
    ctx: PVOID,
    status: NTSTATUS,
    buf: PVOID,
    len: u32,
) {
    if !core::ptr::eq(ctx.cast::<u8>(), pkt.cast::<u8>()) {
        EX_DONE_CTX_ERRORS.fetch_add(1, Ordering::SeqCst);
    }
    on_done(pkt, status, buf, len);
}

pub unsafe extern "system" fn ev_opened(ch: VMBCHANNEL) -> NTSTATUS {
    push(ch, Ev::Opened);
    with_log(ch, |l| l.open_status)
}
pub unsafe extern "system" fn ev_closed(ch: VMBCHANNEL) {
    push(ch, Ev::Closed);
}
pub unsafe extern "system" fn ev_suspend(ch: VMBCHANNEL) {
    push(ch, Ev::Suspend);
}
pub unsafe extern "system" fn ev_started(ch: VMBCHANNEL) {
    push(ch, Ev::Started);
}
pub unsafe extern "system" fn ev_post_started(ch: VMBCHANNEL) {
    push(ch, Ev::PostStarted);
}
pub unsafe extern "system" fn ev_opened_ex(ch: VMBCHANNEL, ctx: PVOID) -> NTSTATUS {
    check_ctx(ch, ctx);
    push(ch, Ev::Opened);
    with_log(ch, |l| l.open_status)
}
pub unsafe extern "system" fn ev_closed_ex(ch: VMBCHANNEL, ctx: PVOID) {
    check_ctx(ch, ctx);
    push(ch, Ev::Closed);
}
pub unsafe extern "system" fn ev_suspend_ex(ch: VMBCHANNEL, ctx: PVOID) {
    check_ctx(ch, ctx);
    push(ch, Ev::Suspend);
}
pub unsafe extern "system" fn ev_started_ex(ch: VMBCHANNEL, ctx: PVOID) {
    check_ctx(ch, ctx);
    push(ch, Ev::Started);
}
pub unsafe extern "system" fn ev_post_started_ex(ch: VMBCHANNEL, ctx: PVOID) {
    check_ctx(ch, ctx);
    push(ch, Ev::PostStarted);
}

pub fn v1_callbacks() -> VMB_CHANNEL_STATE_CHANGE_CALLBACKS {
    VMB_CHANNEL_STATE_CHANGE_CALLBACKS {
        EvtChannelOpened: Some(ev_opened),
        EvtChannelClosed: Some(ev_closed),
        EvtChannelSuspend: Some(ev_suspend),
        EvtChannelStarted: Some(ev_started),
        EvtChannelPostStarted: Some(ev_post_started),
        ..VMB_CHANNEL_STATE_CHANGE_CALLBACKS::INIT
    }
}

pub fn v5_callbacks(ch: VMBCHANNEL) -> VMB_CHANNEL_STATE_CHANGE_CALLBACKS_V5 {
    VMB_CHANNEL_STATE_CHANGE_CALLBACKS_V5 {
        CallbackContext: ch.cast(),
        EvtChannelOpenedEx: Some(ev_opened_ex),
        EvtChannelClosedEx: Some(ev_closed_ex),
        EvtChannelSuspendEx: Some(ev_suspend_ex),
        EvtChannelStartedEx: Some(ev_started_ex),
        EvtChannelPostStartedEx: Some(ev_post_started_ex),
        ..VMB_CHANNEL_STATE_CHANGE_CALLBACKS_V5::INIT
    }
}

// ---------------------------------------------------------------- recording host device

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Seen {
    pub kind: HostPacketKind,
    pub txid: u64,
    pub completion_requested: bool,
    pub payload: Vec<u8>,
    pub ranges: Vec<HostRange>,
    pub external: Option<Vec<u8>>,
}

#[derive(Default)]
pub struct RecState {
    pub seen: Vec<Seen>,
    pub completions: Vec<HostCompletion>,
    /// Complete requests automatically with their payload.
    pub auto_complete: bool,
    /// Overwrite external data with this byte before completing.
    pub write_external: Option<u8>,
    pub opens: u32,
    pub closes: u32,
    pub fail_open: Option<NTSTATUS>,
}

/// A host device that records every packet and completes on request.
pub struct Recorder(pub Arc<Mutex<RecState>>);

impl Recorder {
    pub fn new(auto_complete: bool) -> (Self, Arc<Mutex<RecState>>) {
        let s = Arc::new(Mutex::new(RecState {
            auto_complete,
            ..RecState::default()
        }));
        (Self(Arc::clone(&s)), s)
    }
}

impl HostDevice for Recorder {
    fn on_open(&mut self, _ch: &mut HostChannel) -> Result<(), NTSTATUS> {
        let mut s = self.0.lock().unwrap();
        s.opens += 1;
        match s.fail_open {
            Some(st) => Err(st),
            None => Ok(()),
        }
    }

    fn on_packet(&mut self, ch: &mut HostChannel, p: &HostPacket) {
        let (auto, wx) = {
            let s = self.0.lock().unwrap();
            (s.auto_complete, s.write_external)
        };
        let external = (p.external_len() > 0).then(|| {
            let mut v = vec![0u8; p.external_len()];
            match p.read_external(0, &mut v) {
                Ok(()) => v,
                Err(_) => Vec::new(),
            }
        });
        if let Some(b) = wx {
            let fill = vec![b; p.external_len()];
            let _ = p.write_external(0, &fill);
        }
        self.0.lock().unwrap().seen.push(Seen {
            kind: p.kind(),
            txid: p.transaction_id(),
            completion_requested: p.completion_requested(),
            payload: p.payload().to_vec(),
            ranges: p.ranges().to_vec(),
            external,
        });
        if auto && p.completion_requested() {
            ch.complete(p.transaction_id(), p.payload()).unwrap();
        }
    }

    fn on_completion(&mut self, _ch: &mut HostChannel, c: &HostCompletion) {
        self.0.lock().unwrap().completions.push(c.clone());
    }

    fn on_close(&mut self, _ch: &mut HostChannel) {
        self.0.lock().unwrap().closes += 1;
    }
}

// ---------------------------------------------------------------- fixtures

/// A bus with one offer served by a device.
pub struct Fx {
    pub bus: Vmbus,
    pub t: KMCL_CLIENT_INTERFACE_V5,
    pub offer: Offer,
}

impl Fx {
    pub fn new(version: InterfaceVersion, device: Box<dyn HostDevice>) -> Self {
        Self::with_config(VmbusConfig::new(version), device)
    }

    pub fn with_config(config: VmbusConfig, device: Box<dyn HostDevice>) -> Self {
        let bus = Vmbus::new(config);
        let offer = bus.offer(guid(1), guid(2), device);
        let t = query(&bus);
        Self { bus, t, offer }
    }

    /// Allocates a channel with the recording callbacks (legacy on V1–V4, Ex on V5 when `ex`).
    pub fn channel(&self, ex: bool) -> VMBCHANNEL {
        let k = self.k();
        let mut ch: VMBCHANNEL = core::ptr::null_mut();
        assert_eq!(
            k.allocate(self.offer.device_object(), 0, &mut ch),
            STATUS_SUCCESS
        );
        if ex {
            let mut cbs = v5_callbacks(ch);
            assert_eq!(k.state_callbacks(ch, (&raw mut cbs).cast()), STATUS_SUCCESS);
            assert_eq!(
                k.process_callbacks_ex(ch, ch.cast(), Some(ev_packet_ex), Some(ev_batch_ex)),
                STATUS_SUCCESS
            );
        } else {
            let mut cbs = v1_callbacks();
            assert_eq!(k.state_callbacks(ch, &mut cbs), STATUS_SUCCESS);
            assert_eq!(
                k.process_callbacks(ch, Some(ev_packet), Some(ev_batch)),
                STATUS_SUCCESS
            );
        }
        with_log(ch, |l| *l = Log::default());
        ch
    }

    /// Allocates and enables a channel.
    pub fn open(&self, ex: bool) -> VMBCHANNEL {
        let ch = self.channel(ex);
        assert_eq!(self.k().enable(ch), STATUS_SUCCESS);
        ch
    }

    pub fn close(&self, ch: VMBCHANNEL) {
        self.k().disable(ch);
        self.k().cleanup(ch);
        LOGS.lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .remove(&(ch as usize));
    }

    /// Allocates a packet with the recording legacy completion routine.
    pub fn packet(&self, ch: VMBCHANNEL) -> VMBPACKET {
        let p = self.k().packet_allocate(ch);
        assert!(!p.is_null());
        self.k().set_routine(p, Some(ev_done));
        p
    }

    pub fn send(&self, p: VMBPACKET, data: &[u8], flags: u32) -> NTSTATUS {
        let mut d = data.to_vec();
        self.k().send(
            p,
            d.as_mut_ptr().cast(),
            u32::try_from(d.len()).unwrap(),
            core::ptr::null_mut(),
            flags,
        )
    }

    pub fn free(&self, p: VMBPACKET) {
        self.k().packet_free(p);
    }

    /// Releases the interface reference, shuts the bus down and returns the report.
    pub fn finish(self) -> VerifierReport {
        release(&self.t);
        self.bus.shutdown()
    }
}

/// A page-aligned buffer.
pub struct PageBuf {
    ptr: *mut u8,
    layout: std::alloc::Layout,
}

impl PageBuf {
    pub fn new(pages: usize) -> Self {
        let layout = std::alloc::Layout::from_size_align(pages * 4096, 4096).unwrap();
        // SAFETY: non-zero size.
        let ptr = unsafe { std::alloc::alloc_zeroed(layout) };
        assert!(!ptr.is_null());
        Self { ptr, layout }
    }
    pub fn ptr(&self) -> *mut u8 {
        self.ptr
    }
    pub fn len(&self) -> usize {
        self.layout.size()
    }
    pub fn fill(&self, f: impl Fn(usize) -> u8) {
        for i in 0..self.len() {
            let p = self.ptr.wrapping_add(i);
            // SAFETY: in bounds of our allocation.
            unsafe { p.write(f(i)) };
        }
    }
    pub fn get(&self, i: usize) -> u8 {
        assert!(i < self.len());
        let p = self.ptr.wrapping_add(i);
        // SAFETY: in bounds of our allocation.
        unsafe { p.read() }
    }
    pub fn pfns(&self) -> Vec<u64> {
        (0..self.len() / 4096)
            .map(|i| pfn_of(self.ptr as usize + i * 4096))
            .collect()
    }
}

impl Drop for PageBuf {
    fn drop(&mut self) {
        // SAFETY: allocated with this layout.
        unsafe { std::alloc::dealloc(self.ptr, self.layout) };
    }
}

// ---------------------------------------------------------------- one wrapper per slot

/// Thin wrappers over the raw slots (one unsafe call each). Arguments are raw, exactly as a
/// driver would pass them; the emulator validates them.
#[derive(Clone, Copy)]
pub struct K<'a>(pub &'a KMCL_CLIENT_INTERFACE_V5);

#[allow(clippy::not_unsafe_ptr_arg_deref, clippy::too_many_arguments)]
impl K<'_> {
    pub fn allocate(&self, dev: PDEVICE_OBJECT, server: u8, out: *mut VMBCHANNEL) -> NTSTATUS {
        // SAFETY: raw slot call; the emulator validates every argument.
        unsafe { (self.0.VmbChannelAllocate.unwrap())(dev, server, out) }
    }
    pub fn cleanup(&self, ch: VMBCHANNEL) {
        // SAFETY: as above.
        unsafe { (self.0.VmbChannelCleanup.unwrap())(ch) }
    }
    pub fn gpadl_from_buffer(
        &self,
        ch: VMBCHANNEL,
        flags: u32,
        buf: PVOID,
        len: u32,
        out: *mut u32,
    ) -> NTSTATUS {
        // SAFETY: as above.
        unsafe { (self.0.VmbChannelCreateGpadlFromBuffer.unwrap())(ch, flags, buf, len, out) }
    }
    pub fn gpadl_from_mdl(
        &self,
        ch: VMBCHANNEL,
        flags: u32,
        mdl: PMDL,
        off: u32,
        len: u32,
        out: *mut u32,
    ) -> NTSTATUS {
        // SAFETY: as above.
        unsafe { (self.0.VmbChannelCreateGpadlFromMdl.unwrap())(ch, flags, mdl, off, len, out) }
    }
    pub fn delete_gpadl(&self, ch: VMBCHANNEL, h: u32) {
        // SAFETY: as above.
        unsafe { (self.0.VmbChannelDeleteGpadl.unwrap())(ch, h) }
    }
    pub fn disable(&self, ch: VMBCHANNEL) {
        // SAFETY: as above.
        unsafe { (self.0.VmbChannelDisable.unwrap())(ch) }
    }
    pub fn enable(&self, ch: VMBCHANNEL) -> NTSTATUS {
        // SAFETY: as above.
        unsafe { (self.0.VmbChannelEnable.unwrap())(ch) }
    }
    pub fn interface_instance(&self, ch: VMBCHANNEL, out: LPGUID) {
        // SAFETY: as above.
        unsafe { (self.0.VmbChannelGetInterfaceInstance.unwrap())(ch, out) }
    }
    pub fn mmio(&self, ch: VMBCHANNEL, a: *mut u64, s: *mut u64) {
        // SAFETY: as above.
        unsafe { (self.0.VmbChannelGetMmioSpace.unwrap())(ch, a, s) }
    }
    pub fn get_pointer(&self, ch: VMBCHANNEL) -> PVOID {
        // SAFETY: as above.
        unsafe { (self.0.VmbChannelGetPointer.unwrap())(ch) }
    }
    pub fn client_context_size(&self, ch: VMBCHANNEL, n: u32) -> NTSTATUS {
        // SAFETY: as above.
        unsafe { (self.0.VmbChannelInitSetClientContextSize.unwrap())(ch, n) }
    }
    pub fn init_flags(&self, ch: VMBCHANNEL, f: u32) -> NTSTATUS {
        // SAFETY: as above.
        unsafe { (self.0.VmbChannelInitSetFlags.unwrap())(ch, f) }
    }
    pub fn friendly_name(&self, ch: VMBCHANNEL, n: PCUNICODE_STRING) -> NTSTATUS {
        // SAFETY: as above.
        unsafe { (self.0.VmbChannelInitSetFriendlyName.unwrap())(ch, n) }
    }
    pub fn max_external(&self, ch: VMBCHANNEL, size: u32, chain: u32) -> NTSTATUS {
        // SAFETY: as above.
        unsafe { (self.0.VmbChannelInitSetMaximumExternalData.unwrap())(ch, size, chain) }
    }
    pub fn max_packet_size(&self, ch: VMBCHANNEL, n: u32) -> NTSTATUS {
        // SAFETY: as above.
        unsafe { (self.0.VmbChannelInitSetMaximumPacketSize.unwrap())(ch, n) }
    }
    pub fn process_callbacks(
        &self,
        ch: VMBCHANNEL,
        p: PFN_VMB_CHANNEL_PROCESS_PACKET,
        c: PFN_VMB_CHANNEL_PROCESSING_COMPLETE,
    ) -> NTSTATUS {
        // SAFETY: as above.
        unsafe { (self.0.VmbChannelInitSetProcessPacketCallbacks.unwrap())(ch, p, c) }
    }
    pub fn state_callbacks(
        &self,
        ch: VMBCHANNEL,
        c: PVMB_CHANNEL_STATE_CHANGE_CALLBACKS,
    ) -> NTSTATUS {
        // SAFETY: as above.
        unsafe { (self.0.VmbChannelInitSetStateChangeCallbacks.unwrap())(ch, c) }
    }
    pub fn complete(&self, pc: VMBPACKETCOMPLETION, buf: PVOID, n: u32) {
        // SAFETY: as above.
        unsafe { (self.0.VmbChannelPacketComplete.unwrap())(pc, buf, n) }
    }
    pub fn defer(&self, pc: VMBPACKETCOMPLETION) {
        // SAFETY: as above.
        unsafe { (self.0.VmbChannelPacketDeferToPassive.unwrap())(pc) }
    }
    pub fn fail(&self, pc: VMBPACKETCOMPLETION) {
        // SAFETY: as above.
        unsafe { (self.0.VmbChannelPacketFail.unwrap())(pc) }
    }
    pub fn external_data(&self, pc: VMBPACKETCOMPLETION, f: u32, out: *mut PMDL) -> NTSTATUS {
        // SAFETY: as above.
        unsafe { (self.0.VmbChannelPacketGetExternalData.unwrap())(pc, f, out) }
    }
    pub fn pause(&self, ch: VMBCHANNEL) {
        // SAFETY: as above.
        unsafe { (self.0.VmbChannelPause.unwrap())(ch) }
    }
    pub fn sync(
        &self,
        ch: VMBCHANNEL,
        buf: PVOID,
        n: u32,
        mdl: PMDL,
        flags: u32,
        comp: PVOID,
        comp_len: *mut u32,
        timeout: PLARGE_INTEGER,
    ) -> NTSTATUS {
        // SAFETY: as above.
        unsafe {
            (self.0.VmbChannelSendSynchronousRequest.unwrap())(
                ch, buf, n, mdl, flags, comp, comp_len, timeout,
            )
        }
    }
    pub fn at_passive(&self, ch: VMBCHANNEL, b: u8) {
        // SAFETY: as above.
        unsafe { (self.0.VmbChannelSetIncomingProcessingAtPassive.unwrap())(ch, b) }
    }
    pub fn latency(&self, ch: VMBCHANNEL, l: u16, old: *mut u16) -> NTSTATUS {
        // SAFETY: as above.
        unsafe { (self.0.VmbChannelSetInterruptLatency.unwrap())(ch, l, old) }
    }
    pub fn set_pointer(&self, ch: VMBCHANNEL, p: PVOID) {
        // SAFETY: as above.
        unsafe { (self.0.VmbChannelSetPointer.unwrap())(ch, p) }
    }
    pub fn quota(&self, ch: VMBCHANNEL, q: u32) {
        // SAFETY: as above.
        unsafe { (self.0.VmbChannelSetTransactionQuota.unwrap())(ch, q) }
    }
    pub fn sizeof_packet(&self, ch: VMBCHANNEL) -> u32 {
        // SAFETY: as above.
        unsafe { (self.0.VmbChannelSizeofPacket.unwrap())(ch) }
    }
    pub fn start(&self, ch: VMBCHANNEL) {
        // SAFETY: as above.
        unsafe { (self.0.VmbChannelStart.unwrap())(ch) }
    }
    pub fn ring_pages(&self, ch: VMBCHANNEL, i: u32, o: u32) -> NTSTATUS {
        // SAFETY: as above.
        unsafe { (self.0.VmbClientChannelInitSetRingBufferPageCount.unwrap())(ch, i, o) }
    }
    pub fn target_pnp(
        &self,
        ch: VMBCHANNEL,
        ty: LPCGUID,
        inst: LPCGUID,
        f: PFN_VMB_CHANNEL_PNP_FAILURE,
    ) -> NTSTATUS {
        // SAFETY: as above.
        unsafe { (self.0.VmbClientChannelInitSetTargetPnp.unwrap())(ch, ty, inst, f) }
    }
    pub fn packet_allocate(&self, ch: VMBCHANNEL) -> VMBPACKET {
        // SAFETY: as above.
        unsafe { (self.0.VmbPacketAllocate.unwrap())(ch) }
    }
    pub fn packet_free(&self, p: VMBPACKET) {
        // SAFETY: as above.
        unsafe { (self.0.VmbPacketFree.unwrap())(p) }
    }
    pub fn packet_channel(&self, p: VMBPACKET) -> VMBCHANNEL {
        // SAFETY: as above.
        unsafe { (self.0.VmbPacketGetChannel.unwrap())(p) }
    }
    pub fn packet_get_pointer(&self, p: VMBPACKET) -> PVOID {
        // SAFETY: as above.
        unsafe { (self.0.VmbPacketGetPointer.unwrap())(p) }
    }
    pub fn packet_initialize(&self, ch: VMBCHANNEL, p: VMBPACKET, n: u32) -> NTSTATUS {
        // SAFETY: as above.
        unsafe { (self.0.VmbPacketInitialize.unwrap())(ch, p, n) }
    }
    pub fn send(&self, p: VMBPACKET, buf: PVOID, n: u32, mdl: PMDL, flags: u32) -> NTSTATUS {
        // SAFETY: as above.
        unsafe { (self.0.VmbPacketSend.unwrap())(p, buf, n, mdl, flags) }
    }
    pub fn send_mdl(
        &self,
        p: VMBPACKET,
        buf: PVOID,
        n: u32,
        mdl: PMDL,
        off: u32,
        len: u32,
        flags: u32,
    ) -> NTSTATUS {
        // SAFETY: as above.
        unsafe { (self.0.VmbPacketSendWithExternalMdl.unwrap())(p, buf, n, mdl, off, len, flags) }
    }
    pub fn send_pfns(
        &self,
        p: VMBPACKET,
        buf: PVOID,
        n: u32,
        pfns: PPFN_NUMBER,
        count: u32,
        flags: u32,
    ) -> NTSTATUS {
        // SAFETY: as above.
        unsafe { (self.0.VmbPacketSendWithExternalPfns.unwrap())(p, buf, n, pfns, count, flags) }
    }
    pub fn set_routine(&self, p: VMBPACKET, r: PFN_VMB_PACKET_COMPLETION_ROUTINE) {
        // SAFETY: as above.
        unsafe { (self.0.VmbPacketSetCompletionRoutine.unwrap())(p, r) }
    }
    pub fn packet_set_pointer(&self, p: VMBPACKET, v: PVOID) {
        // SAFETY: as above.
        unsafe { (self.0.VmbPacketSetPointer.unwrap())(p, v) }
    }
    pub fn client_context(&self, pc: VMBPACKETCOMPLETION) -> PVOID {
        // SAFETY: as above.
        unsafe { (self.0.VmbChannelPacketGetClientContext.unwrap())(pc) }
    }
    pub fn target_device(&self, ch: VMBCHANNEL, out: *mut PDEVICE_OBJECT) {
        // SAFETY: as above.
        unsafe { (self.0.VmbChannelGetTargetDeviceObject.unwrap())(ch, out) }
    }
    pub fn parent_device(&self, ch: VMBCHANNEL, out: *mut PDEVICE_OBJECT) {
        // SAFETY: as above.
        unsafe { (self.0.VmbChannelGetParentDeviceObject.unwrap())(ch, out) }
    }
    pub fn bounce_sizes(&self, ch: VMBCHANNEL, a: u32, b: u32, c: u32) -> NTSTATUS {
        // SAFETY: as above.
        unsafe { (self.0.VmbChannelInitSetBounceBufferSizes.unwrap())(ch, a, b, c) }
    }
    pub fn allocate_bounce(&self, ch: VMBCHANNEL, n: u32) -> NTSTATUS {
        // SAFETY: as above.
        unsafe { (self.0.VmbChannelAllocateBounceBuffer.unwrap())(ch, n) }
    }
    pub fn max_packet_count(&self, ch: VMBCHANNEL, n: u32) -> NTSTATUS {
        // SAFETY: as above.
        unsafe { (self.0.VmbChannelInitSetMaximumPacketCount.unwrap())(ch, n) }
    }
    pub fn gpadl_from_pfns(
        &self,
        ch: VMBCHANNEL,
        f: u32,
        pfns: PPFN_NUMBER,
        n: u32,
        out: *mut u32,
    ) -> NTSTATUS {
        // SAFETY: as above.
        unsafe { (self.0.VmbChannelCreateGpadlFromPfnList.unwrap())(ch, f, pfns, n, out) }
    }
    pub fn primary(&self, ch: VMBCHANNEL, p: VMBCHANNEL, idx: u16) -> NTSTATUS {
        // SAFETY: as above.
        unsafe { (self.0.VmbChannelInitSetPrimaryChannel.unwrap())(ch, p, idx) }
    }
    pub fn initialize(&self, dev: PDEVICE_OBJECT, server: u8, ch: VMBCHANNEL, n: u32) -> NTSTATUS {
        // SAFETY: as above.
        unsafe { (self.0.VmbChannelInitialize.unwrap())(dev, server, ch, n) }
    }
    pub fn dpc_usage(&self, ch: VMBCHANNEL, pct: u8) {
        // SAFETY: as above.
        unsafe { (self.0.VmbChannelSetAllowableDpcCpuUsage.unwrap())(ch, pct) }
    }
    pub fn target_processor(&self, ch: VMBCHANNEL, i: u32) -> NTSTATUS {
        // SAFETY: as above.
        unsafe { (self.0.VmbClientChannelInitSetTargetProcessorIndex.unwrap())(ch, i) }
    }
    pub fn sizeof_channel(&self) -> u32 {
        // SAFETY: as above.
        unsafe { (self.0.VmbSizeofChannel.unwrap())() }
    }
    pub fn inline_context_size(&self, ch: VMBCHANNEL, n: u32) -> NTSTATUS {
        // SAFETY: as above.
        unsafe { (self.0.VmbChannelInitSetInlinePacketContextSize.unwrap())(ch, n) }
    }
    pub fn inline_context(&self, p: VMBPACKET) -> PVOID {
        // SAFETY: as above.
        unsafe { (self.0.VmbPacketGetInlinePacketContextPointer.unwrap())(p) }
    }
    pub fn process_callbacks_ex(
        &self,
        ch: VMBCHANNEL,
        ctx: PVOID,
        p: PFN_VMB_CHANNEL_PROCESS_PACKET_EX,
        c: PFN_VMB_CHANNEL_PROCESSING_COMPLETE_EX,
    ) -> NTSTATUS {
        // SAFETY: as above.
        unsafe { (self.0.VmbChannelInitSetProcessPacketCallbacksEx.unwrap())(ch, ctx, p, c) }
    }
    pub fn set_routine_ex(
        &self,
        p: VMBPACKET,
        ctx: PVOID,
        r: PFN_VMB_PACKET_COMPLETION_ROUTINE_EX,
    ) {
        // SAFETY: as above.
        unsafe { (self.0.VmbPacketSetCompletionRoutineEx.unwrap())(p, ctx, r) }
    }
}

impl Fx {
    pub fn k(&self) -> K<'_> {
        K(&self.t)
    }

    /// Violations recorded so far.
    pub fn violations(&self) -> Vec<Violation> {
        self.bus.verifier().violations
    }

    /// True if a violation of `kind` was recorded in `slot`.
    pub fn has(&self, slot: &str, kind: ViolationKind) -> bool {
        self.bus.verifier().has(slot, kind)
    }
}

/// A bus with a recording host device.
pub fn rec_fx(version: InterfaceVersion, auto: bool) -> (Fx, Arc<Mutex<RecState>>) {
    let (dev, state) = Recorder::new(auto);
    (Fx::new(version, Box::new(dev)), state)
}

/// Runs `f` on a V1 bus and on a V5 bus when `slot` exists there.
pub fn on_versions(slot: Slot, mut f: impl FnMut(InterfaceVersion)) {
    for v in [InterfaceVersion::V1, InterfaceVersion::V5] {
        if slot.min_version() <= v {
            f(v);
        }
    }
}
