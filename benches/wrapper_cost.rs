//! The safe layer's own cost, in instructions: one send, one completion delivery and one
//! receive-and-complete through the safe API and through raw calls, over a fake V5 table whose
//! slots do no work, so that the difference between the two paths is the wrapper alone.
//!
//! The fake table (built here, handed to `KmclInterface::query_with`):
//! - `VmbChannelAllocate` hands out a fresh `FakeChannel` (`VmbChannelCleanup` frees it,
//!   `VmbChannelSetPointer` stores on it); the init setters, `VmbChannelEnable` and
//!   `VmbChannelDisable` succeed without doing anything else;
//! - `VmbChannelInitSetProcessPacketCallbacksEx` records the callback and its context on the
//!   fake channel, so the bench can call it the way KMCL would;
//! - `VmbPacketAllocate` returns the channel's one fake packet, `VmbPacketFree` does nothing;
//! - `VmbPacketGetInlinePacketContextPointer` returns the packet's one inline word;
//! - `VmbPacketSetCompletionRoutineEx` records the routine and its context on the packet,
//!   `VmbPacketSend` returns `STATUS_SUCCESS` (it does not complete: completion is measured on
//!   its own, by calling the recorded routine as KMCL would);
//! - `VmbChannelPacketComplete` does nothing;
//! - every other slot points at a function that aborts (none is called).
//!
//! Each iteration runs one cycle: send, deliver the completion of that send, deliver one
//! incoming packet that the handler completes with an 8-byte response. The three steps are
//! separate `#[inline(never)]` functions, so `valgrind --tool=callgrind
//! --toggle-collect=<function>` counts exactly one of them: `safe_send_once` / `raw_send_once`,
//! `kmcl_completes` (the call KMCL makes into the completion routine) and `kmcl_delivers` (the
//! call KMCL makes into the process-packet callback). One process runs one path (`--path safe`
//! or `--path raw`), so the shared `kmcl_*` functions count that path only.
//!
//! Run `benches/wrapper_cost.sh` for the instruction table (docs/wrapper-cost.md explains it).
//! `cargo bench -p vmbus-kmcl --bench wrapper_cost` runs both paths natively and checks that the
//! measured steps allocate nothing (counting global allocator).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    missing_docs
)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::{Cell, UnsafeCell};
use std::ffi::c_void;
use std::hint::black_box;
use std::ptr::{self, NonNull};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use vmbus_kmcl::sys::*;
use vmbus_kmcl::{
    Channel, ChannelConfig, ChannelCore, ChannelHandler, Completion, IncomingPacket,
    InterfaceVersion, KmclInterface, NtStatus, ParentDevice, PassiveLevel, SendFlags,
};

/// The in-band payload of every send and of every incoming packet.
static PAYLOAD: [u8; 64] = [0x42; 64];
/// The response: the completion's response bytes, and what the receiver completes with.
static RESPONSE: [u8; 8] = [0x24; 8];

// ---- counting allocator: the measured steps must not allocate ----

struct CountingAllocator;

static ALLOCATIONS: AtomicUsize = AtomicUsize::new(0);
static DEALLOCATIONS: AtomicUsize = AtomicUsize::new(0);

// SAFETY: forwards every call to the system allocator unchanged; the counters are atomics.
unsafe impl GlobalAlloc for CountingAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: the caller's layout, as `GlobalAlloc::alloc` requires.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, memory: *mut u8, layout: Layout) {
        DEALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: memory from `alloc` above with this layout.
        unsafe { System.dealloc(memory, layout) }
    }
    unsafe fn realloc(&self, memory: *mut u8, layout: Layout, size: usize) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: memory from `alloc` above with this layout.
        unsafe { System.realloc(memory, layout, size) }
    }
}

#[global_allocator]
static GLOBAL: CountingAllocator = CountingAllocator;

fn heap_calls() -> usize {
    ALLOCATIONS.load(Ordering::Relaxed) + DEALLOCATIONS.load(Ordering::Relaxed)
}

// ---- the fake KMCL ----

/// The one outgoing packet of a fake channel.
struct FakePacket {
    /// The inline packet context (`VmbChannelInitSetInlinePacketContextSize(8)`).
    inline_context: UnsafeCell<*mut c_void>,
    /// What `VmbPacketSetCompletionRoutineEx` set.
    routine: Cell<PFN_VMB_PACKET_COMPLETION_ROUTINE_EX>,
    routine_context: Cell<PVOID>,
}

/// What a `VMBCHANNEL` of the fake table points at.
struct FakeChannel {
    /// What `VmbChannelSetPointer` set.
    pointer: Cell<PVOID>,
    /// What `VmbChannelInitSetProcessPacketCallbacksEx` set.
    process_packet: Cell<PFN_VMB_CHANNEL_PROCESS_PACKET_EX>,
    callback_context: Cell<PVOID>,
    packet: FakePacket,
}

impl FakeChannel {
    fn new() -> Self {
        Self {
            pointer: Cell::new(ptr::null_mut()),
            process_packet: Cell::new(None),
            callback_context: Cell::new(ptr::null_mut()),
            packet: FakePacket {
                inline_context: UnsafeCell::new(ptr::null_mut()),
                routine: Cell::new(None),
                routine_context: Cell::new(ptr::null_mut()),
            },
        }
    }

    /// The fake channel behind a handle of the fake table.
    ///
    /// # Safety
    /// `handle` came from `fake_channel_allocate` and was not cleaned up.
    unsafe fn of<'a>(handle: VMBCHANNEL) -> &'a Self {
        // SAFETY: per this function's contract, a leaked `FakeChannel`.
        unsafe { &*handle.cast::<Self>() }
    }

    fn handle(&self) -> VMBCHANNEL {
        ptr::from_ref(self).cast_mut().cast()
    }

    fn packet_handle(&self) -> VMBPACKET {
        ptr::from_ref(&self.packet).cast_mut().cast()
    }
}

impl FakePacket {
    /// # Safety
    /// `packet` came from `fake_packet_allocate` on a live fake channel.
    unsafe fn of<'a>(packet: VMBPACKET) -> &'a Self {
        // SAFETY: per this function's contract, the packet field of a leaked `FakeChannel`.
        unsafe { &*packet.cast::<Self>() }
    }
}

unsafe extern "system" fn fake_channel_allocate(
    _parent: PDEVICE_OBJECT,
    _is_server: BOOLEAN,
    channel: *mut VMBCHANNEL,
) -> NTSTATUS {
    let fake: &FakeChannel = Box::leak(Box::new(FakeChannel::new()));
    // SAFETY: the caller's out pointer.
    unsafe { channel.write(fake.handle()) };
    STATUS_SUCCESS
}

unsafe extern "system" fn fake_channel_cleanup(channel: VMBCHANNEL) {
    // SAFETY: a handle from `fake_channel_allocate`, cleaned up once.
    drop(unsafe { Box::from_raw(channel.cast::<FakeChannel>()) });
}

unsafe extern "system" fn fake_channel_set_pointer(channel: VMBCHANNEL, pointer: PVOID) {
    // SAFETY: a live handle of the fake table.
    unsafe { FakeChannel::of(channel) }.pointer.set(pointer);
}

unsafe extern "system" fn fake_set_ring_pages(_: VMBCHANNEL, _: u32, _: u32) -> NTSTATUS {
    STATUS_SUCCESS
}

unsafe extern "system" fn fake_set_u32(_: VMBCHANNEL, _: u32) -> NTSTATUS {
    STATUS_SUCCESS
}

unsafe extern "system" fn fake_set_state_callbacks(
    _: VMBCHANNEL,
    _: PVMB_CHANNEL_STATE_CHANGE_CALLBACKS,
) -> NTSTATUS {
    STATUS_SUCCESS
}

unsafe extern "system" fn fake_set_packet_callbacks_ex(
    channel: VMBCHANNEL,
    context: PVOID,
    process_packet: PFN_VMB_CHANNEL_PROCESS_PACKET_EX,
    _processing_complete: PFN_VMB_CHANNEL_PROCESSING_COMPLETE_EX,
) -> NTSTATUS {
    // SAFETY: a live handle of the fake table.
    let fake = unsafe { FakeChannel::of(channel) };
    fake.process_packet.set(process_packet);
    fake.callback_context.set(context);
    STATUS_SUCCESS
}

unsafe extern "system" fn fake_channel_enable(_: VMBCHANNEL) -> NTSTATUS {
    STATUS_SUCCESS
}

unsafe extern "system" fn fake_channel_disable(_: VMBCHANNEL) {}

unsafe extern "system" fn fake_packet_allocate(channel: VMBCHANNEL) -> VMBPACKET {
    // SAFETY: a live handle of the fake table.
    unsafe { FakeChannel::of(channel) }.packet_handle()
}

unsafe extern "system" fn fake_packet_free(_: VMBPACKET) {}

unsafe extern "system" fn fake_inline_context(packet: VMBPACKET) -> PVOID {
    // SAFETY: a packet of the fake table.
    unsafe { FakePacket::of(packet) }
        .inline_context
        .get()
        .cast()
}

unsafe extern "system" fn fake_set_completion_ex(
    packet: VMBPACKET,
    context: PVOID,
    routine: PFN_VMB_PACKET_COMPLETION_ROUTINE_EX,
) {
    // SAFETY: a packet of the fake table.
    let fake = unsafe { FakePacket::of(packet) };
    fake.routine.set(routine);
    fake.routine_context.set(context);
}

unsafe extern "system" fn fake_packet_send(
    _: VMBPACKET,
    _: PVOID,
    _: u32,
    _: PMDL,
    _: u32,
) -> NTSTATUS {
    STATUS_SUCCESS
}

unsafe extern "system" fn fake_packet_complete(_: VMBPACKETCOMPLETION, _: PVOID, _: u32) {}

/// Every slot the bench does not expect to be called.
unsafe extern "system" fn unexpected_slot() {
    eprintln!("wrapper_cost: the safe layer called a KMCL slot the fake table does not provide");
    std::process::abort();
}

/// The fake V5 table: the slots above, `unexpected_slot` in every other one (the interface
/// query rejects a V5 table with a null slot).
fn fake_table() -> KMCL_CLIENT_INTERFACE_V5 {
    let mut t = KMCL_CLIENT_INTERFACE_V5::NULL;
    t.InterfaceHeader.Size = KMCL_CLIENT_INTERFACE_V5::SIZE;
    t.InterfaceHeader.Version = KMCL_CLIENT_INTERFACE_VERSION_V5;
    t.VmbChannelAllocate = Some(fake_channel_allocate);
    t.VmbChannelCleanup = Some(fake_channel_cleanup);
    t.VmbChannelSetPointer = Some(fake_channel_set_pointer);
    t.VmbClientChannelInitSetRingBufferPageCount = Some(fake_set_ring_pages);
    t.VmbChannelInitSetMaximumPacketSize = Some(fake_set_u32);
    t.VmbChannelInitSetInlinePacketContextSize = Some(fake_set_u32);
    t.VmbChannelInitSetStateChangeCallbacks = Some(fake_set_state_callbacks);
    t.VmbChannelInitSetProcessPacketCallbacksEx = Some(fake_set_packet_callbacks_ex);
    t.VmbChannelEnable = Some(fake_channel_enable);
    t.VmbChannelDisable = Some(fake_channel_disable);
    t.VmbPacketAllocate = Some(fake_packet_allocate);
    t.VmbPacketFree = Some(fake_packet_free);
    t.VmbPacketGetInlinePacketContextPointer = Some(fake_inline_context);
    t.VmbPacketSetCompletionRoutineEx = Some(fake_set_completion_ex);
    t.VmbPacketSend = Some(fake_packet_send);
    t.VmbChannelPacketComplete = Some(fake_packet_complete);
    let words = (&raw mut t)
        .cast::<u8>()
        .wrapping_add(size_of::<INTERFACE>())
        .cast::<*const ()>();
    for i in 0..InterfaceVersion::V5.slot_count() {
        let word = words.wrapping_add(i);
        // SAFETY: slot `i` of the V5 table: one initialized, aligned, pointer-sized word.
        let current = unsafe { word.read() };
        if current.is_null() {
            // SAFETY: as above. A function pointer stored as a data pointer keeps its
            // provenance, and nothing calls this slot (it would abort if something did).
            unsafe { word.write(unexpected_slot as *const ()) };
        }
    }
    t
}

/// The fake table through the safe layer's own query (V5 granted, no interface references).
fn fake_interface() -> KmclInterface {
    let table = fake_table();
    let provider = |buffer: *mut INTERFACE, size: u16, version: u16| {
        if version != KMCL_CLIENT_INTERFACE_VERSION_V5 || size != KMCL_CLIENT_INTERFACE_V5::SIZE {
            return NtStatus::NOT_SUPPORTED;
        }
        // SAFETY: the caller's buffer holds `size` bytes, the size of the V5 table.
        unsafe {
            ptr::copy_nonoverlapping(
                (&raw const table).cast::<u8>(),
                buffer.cast::<u8>(),
                usize::from(size),
            )
        };
        NtStatus::SUCCESS
    };
    // SAFETY: the provider writes exactly the V5 table into the buffer; its slots are the
    // functions above, and the header has no reference routines (nothing to release).
    unsafe { KmclInterface::query_with(provider) }.expect("the fake V5 table is accepted")
}

// ---- the safe path ----

/// The driver's handler on the safe path: the same trivial work as the raw callbacks.
struct Bench {
    completed: AtomicU64,
    received: AtomicU64,
}

/// A plain (non-RMW) accumulation: a load and a store, no `lock` prefix, on both paths.
fn accumulate(counter: &AtomicU64, value: u64) {
    counter.store(
        counter.load(Ordering::Relaxed).wrapping_add(value),
        Ordering::Relaxed,
    );
}

impl ChannelHandler for Bench {
    type PacketContext = u64;

    fn packet_completed(&self, _: &ChannelCore<Self>, done: Completion<'_, u64>) {
        accumulate(
            &self.completed,
            done.context.wrapping_add(done.response.len() as u64),
        );
    }

    fn process_packet(&self, _: &ChannelCore<Self>, packet: IncomingPacket<'_, Self>) {
        accumulate(&self.received, packet.data().len() as u64);
        let _ = packet.complete(&RESPONSE);
    }
}

/// One send through the safe layer.
#[inline(never)]
fn safe_send_once(channel: &ChannelCore<Bench>, data: &[u8], context: u64) -> bool {
    channel
        .send(data, SendFlags::WAIT_FOR_COMPLETION, context)
        .is_ok()
}

// ---- the raw path: what a C driver does through the same table ----

/// The raw driver's device context: its channel and the table's slots it calls. A C driver
/// keeps the queried `KMCL_CLIENT_INTERFACE_V5` and calls through its (never null) members;
/// these fields are those members, taken from the same table once, without the `Option`.
struct RawDevice {
    channel: VMBCHANNEL,
    packet_allocate: FN_VMB_PACKET_ALLOCATE,
    packet_free: FN_VMB_PACKET_FREE,
    inline_context: FN_VMB_PACKET_GET_INLINE_PACKET_CONTEXT_POINTER,
    set_completion_ex: FN_VMB_PACKET_SET_COMPLETION_ROUTINE_EX,
    packet_send: FN_VMB_PACKET_SEND,
    packet_complete: FN_VMB_CHANNEL_PACKET_COMPLETE,
    channel_disable: FN_VMB_CHANNEL_DISABLE,
    channel_cleanup: FN_VMB_CHANNEL_CLEANUP,
    completed: AtomicU64,
    received: AtomicU64,
}

/// One send as a C driver writes it: allocate, store the context inline, set the Ex completion
/// routine with the device as its context, send; free the packet if the send failed.
#[inline(never)]
fn raw_send_once(device: &RawDevice, data: &[u8], context: u64) -> bool {
    // SAFETY: a slot of the fake table; the channel is enabled.
    let packet = unsafe { (device.packet_allocate)(device.channel) };
    if packet.is_null() {
        return false;
    }
    // SAFETY: a slot of the fake table; a live packet.
    let inline = unsafe { (device.inline_context)(packet) };
    // SAFETY: the inline context is one pointer-sized word of KMCL memory.
    unsafe { inline.cast::<u64>().write_unaligned(context) };
    let device_context = ptr::from_ref(device).cast_mut().cast::<c_void>();
    // SAFETY: a slot of the fake table; the device outlives the packet.
    unsafe { (device.set_completion_ex)(packet, device_context, Some(raw_completion)) };
    // SAFETY: a slot of the fake table; KMCL reads `data` during the call.
    let status = unsafe {
        (device.packet_send)(
            packet,
            data.as_ptr().cast_mut().cast(),
            data.len() as u32,
            ptr::null_mut(),
            VMBUS_CHANNEL_FORMAT_FLAG_WAIT_FOR_COMPLETION,
        )
    };
    if status < 0 {
        // SAFETY: a slot of the fake table; KMCL did not take the packet.
        unsafe { (device.packet_free)(packet) };
        return false;
    }
    true
}

/// The raw Ex completion routine: read the inline context back, account, free the packet.
unsafe extern "system" fn raw_completion(
    packet: VMBPACKET,
    context: PVOID,
    _status: NTSTATUS,
    _buffer: PVOID,
    length: u32,
) {
    // SAFETY: the context given with the routine is the (leaked) raw device.
    let device = unsafe { &*context.cast::<RawDevice>() };
    // SAFETY: a slot of the fake table; a packet in its completion routine.
    let inline = unsafe { (device.inline_context)(packet) };
    // SAFETY: written by `raw_send_once`.
    let value = unsafe { inline.cast::<u64>().read_unaligned() };
    accumulate(&device.completed, value.wrapping_add(u64::from(length)));
    // SAFETY: a slot of the fake table; the completed packet is freed once.
    unsafe { (device.packet_free)(packet) };
}

/// The raw Ex process-packet callback: account, complete with the response.
unsafe extern "system" fn raw_process_packet(
    _channel: VMBCHANNEL,
    context: PVOID,
    packet: VMBPACKETCOMPLETION,
    _buffer: PVOID,
    length: u32,
    _flags: u32,
) {
    // SAFETY: the callback context registered by `RawDevice::open` is the (leaked) device.
    let device = unsafe { &*context.cast::<RawDevice>() };
    accumulate(&device.received, u64::from(length));
    // SAFETY: a slot of the fake table; this packet, completed once.
    unsafe {
        (device.packet_complete)(
            packet,
            RESPONSE.as_ptr().cast_mut().cast(),
            RESPONSE.len() as u32,
        )
    };
}

unsafe extern "system" fn raw_processing_complete(_: VMBCHANNEL, _: PVOID, _: u32) {}

impl RawDevice {
    /// Allocates, configures (8-byte inline context, Ex packet callbacks) and enables a channel
    /// through the table, as a C driver does at prepare-hardware time.
    fn open(t: &KMCL_CLIENT_INTERFACE_V5) -> &'static Self {
        let mut channel: VMBCHANNEL = ptr::null_mut();
        let allocate = t.VmbChannelAllocate.unwrap();
        // SAFETY: the fake allocate ignores the parent and writes the handle.
        let status = unsafe { allocate(ptr::null_mut(), 0, &raw mut channel) };
        assert_eq!(status, STATUS_SUCCESS);
        let device: &'static Self = Box::leak(Box::new(Self {
            channel,
            packet_allocate: t.VmbPacketAllocate.unwrap(),
            packet_free: t.VmbPacketFree.unwrap(),
            inline_context: t.VmbPacketGetInlinePacketContextPointer.unwrap(),
            set_completion_ex: t.VmbPacketSetCompletionRoutineEx.unwrap(),
            packet_send: t.VmbPacketSend.unwrap(),
            packet_complete: t.VmbChannelPacketComplete.unwrap(),
            channel_disable: t.VmbChannelDisable.unwrap(),
            channel_cleanup: t.VmbChannelCleanup.unwrap(),
            completed: AtomicU64::new(0),
            received: AtomicU64::new(0),
        }));
        let set_inline_size = t.VmbChannelInitSetInlinePacketContextSize.unwrap();
        // SAFETY: a fresh channel of the fake table.
        let status = unsafe { set_inline_size(channel, 8) };
        assert_eq!(status, STATUS_SUCCESS);
        let context = ptr::from_ref(device).cast_mut().cast::<c_void>();
        let set_callbacks = t.VmbChannelInitSetProcessPacketCallbacksEx.unwrap();
        // SAFETY: a fresh channel of the fake table; the device lives for the whole run.
        let status = unsafe {
            set_callbacks(
                channel,
                context,
                Some(raw_process_packet),
                Some(raw_processing_complete),
            )
        };
        assert_eq!(status, STATUS_SUCCESS);
        let enable = t.VmbChannelEnable.unwrap();
        // SAFETY: a configured channel of the fake table.
        let status = unsafe { enable(channel) };
        assert_eq!(status, STATUS_SUCCESS);
        device
    }

    fn close(&self) {
        // SAFETY: an enabled channel of the fake table.
        unsafe { (self.channel_disable)(self.channel) };
        // SAFETY: disabled, cleaned up once (the device is not used afterwards).
        unsafe { (self.channel_cleanup)(self.channel) };
    }
}

// ---- what KMCL does: call into the routine and the callback (shared by both paths) ----

/// KMCL completing a sent packet: one call of the completion routine set on it, with the
/// 8-byte response.
#[inline(never)]
fn kmcl_completes(
    routine: EVT_VMB_PACKET_COMPLETION_ROUTINE_EX,
    packet: VMBPACKET,
    context: PVOID,
) {
    // SAFETY: the routine and context set on `packet`, which was sent; the response is valid
    // for the call.
    unsafe {
        routine(
            packet,
            context,
            STATUS_SUCCESS,
            RESPONSE.as_ptr().cast_mut().cast(),
            RESPONSE.len() as u32,
        )
    };
}

/// KMCL delivering an incoming packet: one call of the Ex process-packet callback with the
/// 64-byte payload.
#[inline(never)]
fn kmcl_delivers(
    callback: EVT_VMB_CHANNEL_PROCESS_PACKET_EX,
    channel: VMBCHANNEL,
    context: PVOID,
    packet: VMBPACKETCOMPLETION,
) {
    // SAFETY: the callback and context registered on `channel`, with a packet completion
    // handle the fake complete ignores and the payload valid for the call.
    unsafe {
        callback(
            channel,
            context,
            packet,
            PAYLOAD.as_ptr().cast_mut().cast(),
            PAYLOAD.len() as u32,
            0,
        )
    };
}

// ---- the driver loop ----

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Path {
    Safe,
    Raw,
}

/// A fake incoming-packet handle (never dereferenced).
fn incoming_handle() -> VMBPACKETCOMPLETION {
    NonNull::<VMBPACKETCOMPLETION__>::dangling().as_ptr()
}

/// Sends one packet, completes it, delivers one incoming packet: `iterations` times.
/// Returns the heap calls made during the loop.
fn run_safe(iterations: u64) -> usize {
    let irql = PassiveLevel::check().expect("PASSIVE_LEVEL off Windows");
    let interface = fake_interface();
    let config = ChannelConfig::new()
        .ring_buffer_pages(16, 16)
        .maximum_packet_size(4096);
    let handler = Bench {
        completed: AtomicU64::new(0),
        received: AtomicU64::new(0),
    };
    // SAFETY: the fake `VmbChannelAllocate` never reads the parent device.
    let parent = unsafe { ParentDevice::from_raw(ptr::null_mut()) };
    let mut channel = Channel::new(&irql, &interface, parent, &config, handler).unwrap();
    channel.enable(&irql).unwrap();
    // SAFETY: the channel's handle comes from the fake table and lives until `close`.
    let fake = unsafe { FakeChannel::of(channel.as_raw()) };
    let process = fake.process_packet.get().expect("Ex callback registered");
    let process_context = fake.callback_context.get();
    let before = heap_calls();
    for i in 0..iterations {
        assert!(safe_send_once(
            black_box(&channel),
            black_box(&PAYLOAD),
            black_box(i)
        ));
        let routine = fake.packet.routine.get().expect("completion routine set");
        kmcl_completes(
            black_box(routine),
            black_box(fake.packet_handle()),
            black_box(fake.packet.routine_context.get()),
        );
        kmcl_delivers(
            black_box(process),
            black_box(fake.handle()),
            black_box(process_context),
            black_box(incoming_handle()),
        );
    }
    let heap = heap_calls() - before;
    let expected_completed = (0..iterations).map(|i| i + 8).sum::<u64>();
    assert_eq!(
        channel.handler().completed.load(Ordering::Relaxed),
        expected_completed
    );
    assert_eq!(
        channel.handler().received.load(Ordering::Relaxed),
        iterations * 64
    );
    channel.close(&irql);
    heap
}

fn run_raw(iterations: u64) -> usize {
    let interface = fake_interface();
    let device = RawDevice::open(interface.raw());
    // SAFETY: the device's handle comes from the fake table and lives until `close`.
    let fake = unsafe { FakeChannel::of(device.channel) };
    let process = fake.process_packet.get().expect("Ex callback registered");
    let process_context = fake.callback_context.get();
    let before = heap_calls();
    for i in 0..iterations {
        assert!(raw_send_once(
            black_box(device),
            black_box(&PAYLOAD),
            black_box(i)
        ));
        let routine = fake.packet.routine.get().expect("completion routine set");
        kmcl_completes(
            black_box(routine),
            black_box(fake.packet_handle()),
            black_box(fake.packet.routine_context.get()),
        );
        kmcl_delivers(
            black_box(process),
            black_box(fake.handle()),
            black_box(process_context),
            black_box(incoming_handle()),
        );
    }
    let heap = heap_calls() - before;
    let expected_completed = (0..iterations).map(|i| i + 8).sum::<u64>();
    assert_eq!(device.completed.load(Ordering::Relaxed), expected_completed);
    assert_eq!(device.received.load(Ordering::Relaxed), iterations * 64);
    device.close();
    heap
}

fn main() {
    let mut paths = vec![Path::Safe, Path::Raw];
    let mut iterations = 10_000_u64;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--path" => {
                paths = match args.next().as_deref() {
                    Some("safe") => vec![Path::Safe],
                    Some("raw") => vec![Path::Raw],
                    Some("both") => vec![Path::Safe, Path::Raw],
                    other => panic!("--path safe|raw|both, not {other:?}"),
                }
            }
            "--iterations" => {
                iterations = args
                    .next()
                    .and_then(|n| n.parse().ok())
                    .expect("--iterations N");
            }
            // `cargo bench` passes `--bench`; other harness flags are ignored too.
            _ => {}
        }
    }
    for path in paths {
        let heap = match path {
            Path::Safe => run_safe(iterations),
            Path::Raw => run_raw(iterations),
        };
        println!("wrapper_cost: path={path:?} iterations={iterations} heap_calls_in_loop={heap}");
        assert_eq!(heap, 0, "the send, completion and receive steps allocated");
    }
}
