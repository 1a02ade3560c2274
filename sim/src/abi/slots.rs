//! The client slots: one `extern "system"` function per `KMCL_CLIENT_INTERFACE_V5` slot.
//!
//! Every slot validates each handle through the registry before use (an unknown or released
//! handle is reported and never dereferenced), checks its arguments in parameter order, applies
//! an injected fault (before any side effect), and runs inside `catch_unwind` so that no panic
//! can cross the `extern "system"` boundary. Raw pointers that are not handles (buffers,
//! out-parameters, GUIDs, strings) are trusted as the KMCL contract says, after a null check.

use core::ffi::c_void;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;

use vmbus_kmcl::sys::{
    BOOLEAN, GUID, INTERFACE, KMCL_CLIENT_INTERFACE_V5, KMCL_RING_BUFFER_MTU, LPCGUID, LPGUID,
    NTSTATUS, PCUNICODE_STRING, PDEVICE_OBJECT, PFN_VMB_CHANNEL_PNP_FAILURE,
    PFN_VMB_CHANNEL_PROCESS_PACKET, PFN_VMB_CHANNEL_PROCESS_PACKET_EX,
    PFN_VMB_CHANNEL_PROCESSING_COMPLETE, PFN_VMB_CHANNEL_PROCESSING_COMPLETE_EX,
    PFN_VMB_PACKET_COMPLETION_ROUTINE, PFN_VMB_PACKET_COMPLETION_ROUTINE_EX, PLARGE_INTEGER, PMDL,
    PPFN_NUMBER, PVMB_CHANNEL_STATE_CHANGE_CALLBACKS, PVOID, UNICODE_STRING,
    VMB_CHANNEL_STATE_CHANGE_CALLBACKS, VMB_CHANNEL_STATE_CHANGE_CALLBACKS_V5, VMBCHANNEL,
    VMBPACKET, VMBPACKETCOMPLETION, VMBUS_CHANNEL_FORMAT_FLAG_WAIT_FOR_COMPLETION,
    VMBUS_CHANNEL_GPADL_FLAGS, VMBUS_CHANNEL_INIT_FLAGS, VMBUS_CHANNEL_PACKET_EXTERNAL_DATA_FLAGS,
};

use crate::base::event::lock;
use crate::base::memory::{self, ChainError, MdlSpan, PAGE_SIZE};
use crate::base::slot::InterfaceVersion;
use crate::base::slot::Slot;
use crate::base::status::{
    STATUS_INTERNAL_ERROR, STATUS_INVALID_DEVICE_STATE, STATUS_INVALID_PARAMETER_1,
    STATUS_INVALID_PARAMETER_2, STATUS_INVALID_PARAMETER_3, STATUS_INVALID_PARAMETER_4,
    STATUS_INVALID_PARAMETER_5, STATUS_INVALID_PARAMETER_6, STATUS_INVALID_PARAMETER_7,
    STATUS_NOT_SUPPORTED, STATUS_SUCCESS,
};
use crate::model::bus::Bus;
use crate::model::callbacks::{CompletionRoutine, ProcessCallbacks, StateCallbacks};
use crate::model::channel::{Channel, Inner};
use crate::model::incoming::{self, InPacket};
use crate::model::irql::{Irql, Refused};
use crate::model::outgoing::{self, External, OutPacket, Phase, RawBuf, SendParams};
use crate::model::registry::{self, HandleKind, Object};
use crate::ring::packet_ring_bytes;
use crate::verifier::report::{Counter, Violation, ViolationKind};

/// `VmbSizeofChannel()`: bytes of caller storage a channel needs.
pub const SIZEOF_CHANNEL: u32 = 1024;
/// Most ring data pages per direction `VmbClientChannelInitSetRingBufferPageCount` accepts.
pub const MAX_RING_PAGES: u32 = 8192;
/// Largest client / inline packet context, in bytes.
pub const MAX_CONTEXT_SIZE: u32 = 64 * 1024;
/// Largest `VmbChannelInitSetMaximumPacketCount`.
pub const MAX_PACKET_COUNT: u32 = 65_536;
/// Processor indexes `VmbClientChannelInitSetTargetProcessorIndex` accepts: `0..2048`.
pub const MAX_PROCESSORS: u32 = 2048;
/// Fixed part of `VmbChannelSizeofPacket` (the packet object header), in bytes.
pub const PACKET_OBJECT_HEADER: u32 = 64;

/// Runs a slot body after the IRQL check ([`Slot::max_irql`]); a call above the slot's IRQL is
/// recorded (on the bus owning `handle`) and refused ([`Refused`]); a panic (an emulator bug)
/// is counted and turned into `fallback`.
fn guard<R: Refused>(slot: Slot, handle: usize, fallback: R, body: impl FnOnce() -> R) -> R {
    guard_at(slot, handle, slot.max_irql(), fallback, body)
}

/// [`guard`] with an explicit IRQL requirement (for a slot whose requirement depends on its
/// arguments). `handle` (the slot's first handle argument, 0 if none) only attributes an IRQL
/// violation to the bus that owns it.
fn guard_at<R: Refused>(
    slot: Slot,
    handle: usize,
    max_irql: Irql,
    fallback: R,
    body: impl FnOnce() -> R,
) -> R {
    let _emulator = crate::base::scope::EmulatorScope::enter();
    if !crate::model::irql::allowed(slot, handle, max_irql) {
        return R::refused();
    }
    match catch_unwind(AssertUnwindSafe(body)) {
        Ok(r) => r,
        Err(_) => {
            let _ = slot;
            if let Some(bus) = registry::current_bus() {
                bus.bump(Counter::Internal);
            }
            fallback
        }
    }
}

fn chan(slot: Slot, handle: VMBCHANNEL) -> Option<Arc<Channel>> {
    registry::channel(handle as usize, slot.name()).ok()
}

fn out_packet(slot: Slot, handle: VMBPACKET) -> Option<Arc<OutPacket>> {
    registry::packet(handle as usize, slot.name()).ok()
}

fn in_packet(slot: Slot, handle: VMBPACKETCOMPLETION) -> Option<Arc<InPacket>> {
    registry::incoming(handle as usize, slot.name()).ok()
}

/// Records an invalid-parameter violation and returns `status`.
fn bad(ch: &Channel, slot: Slot, status: NTSTATUS, message: impl Into<String>) -> NTSTATUS {
    ch.violation(slot.name(), ViolationKind::InvalidParameter, message);
    status
}

/// `VmbChannelSizeofPacket` for a configuration.
fn sizeof_packet(inner: &Inner) -> u32 {
    let raw = PACKET_OBJECT_HEADER
        .saturating_add(inner.cfg.max_packet_size)
        .saturating_add(inner.cfg.inline_context_size);
    raw.saturating_add(7) & !7
}

/// True if an in-band packet of `size` bytes fits a ring of `pages` data pages.
fn fits_ring(size: u32, pages: u32) -> bool {
    let data = u64::from(pages) * PAGE_SIZE as u64;
    packet_ring_bytes(0, size as usize).is_some_and(|b| u64::from(b) + 8 <= data)
}

/// Common shape of the `Init*` setters: handle, fault, state, then `body`.
fn init_setter(
    slot: Slot,
    channel: VMBCHANNEL,
    body: impl FnOnce(&Channel, &mut Inner) -> NTSTATUS,
) -> NTSTATUS {
    guard(slot, channel as usize, STATUS_INTERNAL_ERROR, || {
        let Some(ch) = chan(slot, channel) else {
            return STATUS_INVALID_PARAMETER_1;
        };
        if let Some(s) = ch.bus.fault(slot) {
            return s;
        }
        let mut inner = lock(&ch.inner);
        if !Channel::configurable(inner.state) {
            let state = inner.state;
            drop(inner);
            ch.violation(
                slot.name(),
                ViolationKind::WrongState,
                format!("{slot} in state {state:?} (only before enable)"),
            );
            return STATUS_INVALID_DEVICE_STATE;
        }
        body(&ch, &mut inner)
    })
}

fn new_channel(
    slot: Slot,
    parent: PDEVICE_OBJECT,
    is_server: BOOLEAN,
    handle: Option<usize>,
) -> Result<Arc<Channel>, NTSTATUS> {
    let Ok((offer, bus)) = registry::device(parent as usize, slot.name()) else {
        return Err(STATUS_INVALID_PARAMETER_1);
    };
    if let Some(s) = bus.fault(slot) {
        return Err(s);
    }
    if is_server != 0 {
        bus.violation(
            slot.name(),
            ViolationKind::NotSupported,
            "server channels are not emulated",
            parent as usize,
        );
        return Err(STATUS_NOT_SUPPORTED);
    }
    let handle = handle.unwrap_or_else(registry::synthetic_handle);
    let ch = Channel::new(&bus, handle, parent as usize, &offer);
    if !registry::insert(handle, Object::Channel(Arc::clone(&ch))) {
        return Err(STATUS_INVALID_DEVICE_STATE);
    }
    bus.add_channel(&ch);
    Ok(ch)
}

unsafe extern "system" fn vmb_channel_allocate(
    parent: PDEVICE_OBJECT,
    is_server: BOOLEAN,
    channel: *mut VMBCHANNEL,
) -> NTSTATUS {
    const SLOT: Slot = Slot::VmbChannelAllocate;
    guard(SLOT, parent as usize, STATUS_INTERNAL_ERROR, || {
        if channel.is_null() {
            if let Ok((_, bus)) = registry::device(parent as usize, SLOT.name()) {
                bus.violation(
                    SLOT.name(),
                    ViolationKind::InvalidParameter,
                    "null Channel out-pointer",
                    0,
                );
            }
            return STATUS_INVALID_PARAMETER_3;
        }
        match new_channel(SLOT, parent, is_server, None) {
            Ok(ch) => {
                // SAFETY: checked non-null; the driver passes a writable VMBCHANNEL.
                unsafe { channel.write_unaligned(ch.handle as VMBCHANNEL) };
                STATUS_SUCCESS
            }
            Err(s) => s,
        }
    })
}

unsafe extern "system" fn vmb_channel_cleanup(channel: VMBCHANNEL) {
    const SLOT: Slot = Slot::VmbChannelCleanup;
    guard(SLOT, channel as usize, (), || {
        if let Some(ch) = chan(SLOT, channel) {
            ch.cleanup();
        }
    });
}

unsafe extern "system" fn vmb_channel_create_gpadl_from_buffer(
    channel: VMBCHANNEL,
    flags: u32,
    buffer: PVOID,
    byte_count: u32,
    gpadl: *mut u32,
) -> NTSTATUS {
    const SLOT: Slot = Slot::VmbChannelCreateGpadlFromBuffer;
    guard(SLOT, channel as usize, STATUS_INTERNAL_ERROR, || {
        let Some(ch) = chan(SLOT, channel) else {
            return STATUS_INVALID_PARAMETER_1;
        };
        if let Some(s) = ch.bus.fault(SLOT) {
            return s;
        }
        if flags & !VMBUS_CHANNEL_GPADL_FLAGS != 0 {
            return bad(&ch, SLOT, STATUS_INVALID_PARAMETER_2, "unknown GPADL flags");
        }
        if buffer.is_null() {
            return bad(&ch, SLOT, STATUS_INVALID_PARAMETER_3, "null buffer");
        }
        if byte_count == 0 {
            return bad(&ch, SLOT, STATUS_INVALID_PARAMETER_4, "zero byte count");
        }
        if gpadl.is_null() {
            return bad(&ch, SLOT, STATUS_INVALID_PARAMETER_5, "null GpadlHandle");
        }
        let address = buffer as usize;
        let len = byte_count as usize;
        let region = memory::register_region(address, len);
        crate::model::gpadl::create(
            &ch,
            SLOT.name(),
            flags,
            vec![MdlSpan { address, len }],
            Some(region),
            gpadl,
        )
    })
}

unsafe extern "system" fn vmb_channel_create_gpadl_from_mdl(
    channel: VMBCHANNEL,
    flags: u32,
    mdl: PMDL,
    offset: u32,
    length: u32,
    gpadl: *mut u32,
) -> NTSTATUS {
    const SLOT: Slot = Slot::VmbChannelCreateGpadlFromMdl;
    guard(SLOT, channel as usize, STATUS_INTERNAL_ERROR, || {
        let Some(ch) = chan(SLOT, channel) else {
            return STATUS_INVALID_PARAMETER_1;
        };
        if let Some(s) = ch.bus.fault(SLOT) {
            return s;
        }
        if flags & !VMBUS_CHANNEL_GPADL_FLAGS != 0 {
            return bad(&ch, SLOT, STATUS_INVALID_PARAMETER_2, "unknown GPADL flags");
        }
        if mdl.is_null() {
            return bad(&ch, SLOT, STATUS_INVALID_PARAMETER_3, "null MDL");
        }
        let spans = match memory::read_chain(mdl, memory::MAX_CHAIN_WALK) {
            Ok(s) => s,
            Err(ChainError::Unknown(a)) => {
                ch.bus.violation(
                    SLOT.name(),
                    ViolationKind::InvalidHandle,
                    "MDL not created by OwnedMdl (or already dropped)",
                    a,
                );
                return STATUS_INVALID_PARAMETER_3;
            }
            Err(ChainError::Corrupt(a, why)) => {
                ch.bus
                    .violation(SLOT.name(), ViolationKind::InvalidParameter, why, a);
                return STATUS_INVALID_PARAMETER_3;
            }
            Err(ChainError::TooLong) => {
                return bad(&ch, SLOT, STATUS_INVALID_PARAMETER_3, "MDL chain too long");
            }
        };
        let total: usize = spans.iter().map(|s| s.len).sum();
        if offset as usize >= total {
            return bad(
                &ch,
                SLOT,
                STATUS_INVALID_PARAMETER_4,
                "offset beyond the MDL",
            );
        }
        let Some(window) = memory::window(&spans, offset as usize, length as usize) else {
            return bad(
                &ch,
                SLOT,
                STATUS_INVALID_PARAMETER_5,
                "length zero or beyond the MDL",
            );
        };
        if gpadl.is_null() {
            return bad(&ch, SLOT, STATUS_INVALID_PARAMETER_6, "null GpadlHandle");
        }
        crate::model::gpadl::create(&ch, SLOT.name(), flags, window, None, gpadl)
    })
}

unsafe extern "system" fn vmb_channel_delete_gpadl(channel: VMBCHANNEL, gpadl: u32) {
    const SLOT: Slot = Slot::VmbChannelDeleteGpadl;
    guard(SLOT, channel as usize, (), || {
        if let Some(ch) = chan(SLOT, channel) {
            crate::model::gpadl::delete(&ch, SLOT.name(), gpadl);
        }
    });
}

unsafe extern "system" fn vmb_channel_disable(channel: VMBCHANNEL) {
    const SLOT: Slot = Slot::VmbChannelDisable;
    guard(SLOT, channel as usize, (), || {
        if let Some(ch) = chan(SLOT, channel) {
            ch.disable();
        }
    });
}

unsafe extern "system" fn vmb_channel_enable(channel: VMBCHANNEL) -> NTSTATUS {
    const SLOT: Slot = Slot::VmbChannelEnable;
    guard(SLOT, channel as usize, STATUS_INTERNAL_ERROR, || {
        let Some(ch) = chan(SLOT, channel) else {
            return STATUS_INVALID_PARAMETER_1;
        };
        if let Some(s) = ch.bus.fault(SLOT) {
            return s;
        }
        crate::threads::open::enable(&ch)
    })
}

/// The offer a channel is (or would be) open on.
fn target_offer(ch: &Channel) -> Option<Arc<crate::model::offer::OfferShared>> {
    let (open, cfg) = {
        let inner = lock(&ch.inner);
        (inner.offer.clone(), inner.cfg.clone())
    };
    open.or_else(|| ch.resolve_target(&cfg).ok())
}

unsafe extern "system" fn vmb_channel_get_interface_instance(
    channel: VMBCHANNEL,
    instance: LPGUID,
) {
    const SLOT: Slot = Slot::VmbChannelGetInterfaceInstance;
    guard(SLOT, channel as usize, (), || {
        let Some(ch) = chan(SLOT, channel) else {
            return;
        };
        if instance.is_null() {
            bad(
                &ch,
                SLOT,
                STATUS_INVALID_PARAMETER_2,
                "null InterfaceInstance",
            );
            return;
        }
        let guid = target_offer(&ch).map_or_else(GUID::default, |o| o.instance);
        // SAFETY: checked non-null; the driver passes a writable GUID.
        unsafe { instance.write_unaligned(guid) };
    });
}

unsafe extern "system" fn vmb_channel_get_mmio_space(
    channel: VMBCHANNEL,
    address: *mut u64,
    size: *mut u64,
) {
    const SLOT: Slot = Slot::VmbChannelGetMmioSpace;
    guard(SLOT, channel as usize, (), || {
        let Some(ch) = chan(SLOT, channel) else {
            return;
        };
        if address.is_null() || size.is_null() {
            bad(
                &ch,
                SLOT,
                STATUS_INVALID_PARAMETER_2,
                "null MMIO out-pointer",
            );
            return;
        }
        // SAFETY: checked non-null; the driver passes writable UINT64s.
        unsafe { address.write_unaligned(0) };
        // SAFETY: as above.
        unsafe { size.write_unaligned(0) };
    });
}

unsafe extern "system" fn vmb_channel_get_pointer(channel: VMBCHANNEL) -> PVOID {
    const SLOT: Slot = Slot::VmbChannelGetPointer;
    guard(SLOT, channel as usize, core::ptr::null_mut(), || {
        chan(SLOT, channel).map_or(core::ptr::null_mut(), |ch| lock(&ch.inner).pointer as PVOID)
    })
}

unsafe extern "system" fn vmb_channel_init_set_client_context_size(
    channel: VMBCHANNEL,
    size: u32,
) -> NTSTATUS {
    const SLOT: Slot = Slot::VmbChannelInitSetClientContextSize;
    init_setter(SLOT, channel, |ch, inner| {
        if size > MAX_CONTEXT_SIZE {
            return bad(
                ch,
                SLOT,
                STATUS_INVALID_PARAMETER_2,
                "client context too large",
            );
        }
        inner.cfg.client_context_size = size;
        STATUS_SUCCESS
    })
}

unsafe extern "system" fn vmb_channel_init_set_flags(channel: VMBCHANNEL, flags: u32) -> NTSTATUS {
    const SLOT: Slot = Slot::VmbChannelInitSetFlags;
    init_setter(SLOT, channel, |ch, inner| {
        if flags & !VMBUS_CHANNEL_INIT_FLAGS != 0 {
            return bad(
                ch,
                SLOT,
                STATUS_INVALID_PARAMETER_2,
                "unknown channel init flags",
            );
        }
        inner.cfg.flags = flags;
        STATUS_SUCCESS
    })
}

unsafe extern "system" fn vmb_channel_init_set_friendly_name(
    channel: VMBCHANNEL,
    name: PCUNICODE_STRING,
) -> NTSTATUS {
    const SLOT: Slot = Slot::VmbChannelInitSetFriendlyName;
    init_setter(SLOT, channel, |ch, inner| {
        if name.is_null() {
            return bad(ch, SLOT, STATUS_INVALID_PARAMETER_2, "null name");
        }
        // SAFETY: checked non-null; the driver passes a readable UNICODE_STRING.
        let s: UNICODE_STRING = unsafe { name.read_unaligned() };
        if !s.Length.is_multiple_of(2)
            || s.Length > s.MaximumLength
            || (s.Length > 0 && s.Buffer.is_null())
        {
            return bad(
                ch,
                SLOT,
                STATUS_INVALID_PARAMETER_2,
                "malformed UNICODE_STRING",
            );
        }
        let units = usize::from(s.Length / 2);
        let text = if units == 0 {
            String::new()
        } else {
            // SAFETY: a well-formed UNICODE_STRING has `Length` readable bytes at `Buffer`.
            let slice = unsafe { core::slice::from_raw_parts(s.Buffer, units) };
            String::from_utf16_lossy(slice)
        };
        inner.cfg.friendly_name = text;
        STATUS_SUCCESS
    })
}

unsafe extern "system" fn vmb_channel_init_set_maximum_external_data(
    channel: VMBCHANNEL,
    data_size: u32,
    chain_length: u32,
) -> NTSTATUS {
    const SLOT: Slot = Slot::VmbChannelInitSetMaximumExternalData;
    init_setter(SLOT, channel, |ch, inner| {
        if data_size == 0 {
            return bad(
                ch,
                SLOT,
                STATUS_INVALID_PARAMETER_2,
                "zero external data size",
            );
        }
        if chain_length == 0 || chain_length as usize > memory::MAX_CHAIN_WALK {
            return bad(
                ch,
                SLOT,
                STATUS_INVALID_PARAMETER_3,
                "chain length out of range",
            );
        }
        inner.cfg.max_external_data = data_size;
        inner.cfg.max_external_chain = chain_length;
        STATUS_SUCCESS
    })
}

unsafe extern "system" fn vmb_channel_init_set_maximum_packet_size(
    channel: VMBCHANNEL,
    size: u32,
) -> NTSTATUS {
    const SLOT: Slot = Slot::VmbChannelInitSetMaximumPacketSize;
    init_setter(SLOT, channel, |ch, inner| {
        if size == 0 || size > KMCL_RING_BUFFER_MTU {
            return bad(
                ch,
                SLOT,
                STATUS_INVALID_PARAMETER_2,
                format!("maximum packet size {size} not in 1..={KMCL_RING_BUFFER_MTU}"),
            );
        }
        if !fits_ring(size, inner.cfg.outgoing_pages) {
            return bad(
                ch,
                SLOT,
                STATUS_INVALID_PARAMETER_2,
                format!(
                    "maximum packet size {size} does not fit the {}-page outgoing ring",
                    inner.cfg.outgoing_pages
                ),
            );
        }
        inner.cfg.max_packet_size = size;
        STATUS_SUCCESS
    })
}

unsafe extern "system" fn vmb_channel_init_set_process_packet_callbacks(
    channel: VMBCHANNEL,
    process: PFN_VMB_CHANNEL_PROCESS_PACKET,
    complete: PFN_VMB_CHANNEL_PROCESSING_COMPLETE,
) -> NTSTATUS {
    const SLOT: Slot = Slot::VmbChannelInitSetProcessPacketCallbacks;
    init_setter(SLOT, channel, |ch, inner| {
        let Some(process) = process else {
            return bad(
                ch,
                SLOT,
                STATUS_INVALID_PARAMETER_2,
                "null ProcessPacketCallback",
            );
        };
        inner.process_cbs = ProcessCallbacks::Legacy { process, complete };
        STATUS_SUCCESS
    })
}

unsafe extern "system" fn vmb_channel_init_set_state_change_callbacks(
    channel: VMBCHANNEL,
    callbacks: PVMB_CHANNEL_STATE_CHANGE_CALLBACKS,
) -> NTSTATUS {
    const SLOT: Slot = Slot::VmbChannelInitSetStateChangeCallbacks;
    init_setter(SLOT, channel, |ch, inner| {
        if callbacks.is_null() {
            return bad(ch, SLOT, STATUS_INVALID_PARAMETER_2, "null callbacks");
        }
        let head = callbacks.cast::<u32>();
        // SAFETY: checked non-null; every version of the struct starts with two ULONGs.
        let version = unsafe { head.read_unaligned() };
        // SAFETY: as above (second ULONG).
        let size = unsafe { head.wrapping_add(1).read_unaligned() };
        let v1 = size_of::<VMB_CHANNEL_STATE_CHANGE_CALLBACKS>() as u32;
        let v5 = size_of::<VMB_CHANNEL_STATE_CHANGE_CALLBACKS_V5>() as u32;
        match (version, size) {
            (1, s) if s == v1 => {
                // SAFETY: Version/Size identify a V1 struct, which the driver passes readable.
                let cbs = unsafe { callbacks.read_unaligned() };
                inner.state_cbs = StateCallbacks::from_v1(&cbs);
                STATUS_SUCCESS
            }
            (5, s) if s == v5 => {
                if ch.bus.config.version < InterfaceVersion::V5 {
                    ch.violation(
                        SLOT.name(),
                        ViolationKind::NotSupported,
                        "V5 (Ex) state callbacks on a bus older than V5",
                    );
                    return STATUS_INVALID_PARAMETER_2;
                }
                // SAFETY: Version/Size identify a V5 struct (cast by the driver, as the header
                // prescribes), which the driver passes readable.
                let cbs = unsafe {
                    callbacks
                        .cast::<VMB_CHANNEL_STATE_CHANGE_CALLBACKS_V5>()
                        .read_unaligned()
                };
                inner.state_cbs = StateCallbacks::from_v5(&cbs);
                STATUS_SUCCESS
            }
            _ => bad(
                ch,
                SLOT,
                STATUS_INVALID_PARAMETER_2,
                format!("state callbacks Version {version} / Size {size} (want 1/{v1} or 5/{v5})"),
            ),
        }
    })
}

/// Looks up an incoming packet for complete/fail: a released handle is a double completion.
fn completing(slot: Slot, handle: VMBPACKETCOMPLETION) -> Option<Arc<InPacket>> {
    registry::incoming_for_completion(handle as usize, slot.name()).ok()
}

unsafe extern "system" fn vmb_channel_packet_complete(
    packet: VMBPACKETCOMPLETION,
    buffer: PVOID,
    size: u32,
) {
    const SLOT: Slot = Slot::VmbChannelPacketComplete;
    guard(SLOT, packet as usize, (), || {
        let Some(pkt) = completing(SLOT, packet) else {
            return;
        };
        if buffer.is_null() && size > 0 {
            bad(
                &pkt.channel,
                SLOT,
                STATUS_INVALID_PARAMETER_2,
                "null completion buffer with a size (packet not completed)",
            );
            return;
        }
        let response = if size == 0 {
            Vec::new()
        } else {
            // SAFETY: the driver passes `size` readable bytes at `buffer` (checked non-null).
            unsafe { core::slice::from_raw_parts(buffer.cast::<u8>(), size as usize) }.to_vec()
        };
        incoming::complete(&pkt, SLOT.name(), &response);
    });
}

unsafe extern "system" fn vmb_channel_packet_defer_to_passive(packet: VMBPACKETCOMPLETION) {
    const SLOT: Slot = Slot::VmbChannelPacketDeferToPassive;
    guard(SLOT, packet as usize, (), || {
        if let Some(pkt) = in_packet(SLOT, packet) {
            incoming::defer(&pkt, SLOT.name());
        }
    });
}

unsafe extern "system" fn vmb_channel_packet_fail(packet: VMBPACKETCOMPLETION) {
    const SLOT: Slot = Slot::VmbChannelPacketFail;
    guard(SLOT, packet as usize, (), || {
        if let Some(pkt) = completing(SLOT, packet) {
            incoming::fail(&pkt, SLOT.name());
        }
    });
}

unsafe extern "system" fn vmb_channel_packet_get_external_data(
    packet: VMBPACKETCOMPLETION,
    flags: u32,
    mdl: *mut PMDL,
) -> NTSTATUS {
    const SLOT: Slot = Slot::VmbChannelPacketGetExternalData;
    guard(SLOT, packet as usize, STATUS_INTERNAL_ERROR, || {
        let Some(pkt) = in_packet(SLOT, packet) else {
            return STATUS_INVALID_PARAMETER_1;
        };
        if let Some(s) = pkt.channel.bus.fault(SLOT) {
            return s;
        }
        if flags & !VMBUS_CHANNEL_PACKET_EXTERNAL_DATA_FLAGS != 0 {
            return bad(
                &pkt.channel,
                SLOT,
                STATUS_INVALID_PARAMETER_2,
                "unknown flags",
            );
        }
        if mdl.is_null() {
            return bad(&pkt.channel, SLOT, STATUS_INVALID_PARAMETER_3, "null Mdl");
        }
        incoming::external_data(&pkt, SLOT.name(), mdl)
    })
}

unsafe extern "system" fn vmb_channel_pause(channel: VMBCHANNEL) {
    const SLOT: Slot = Slot::VmbChannelPause;
    guard(SLOT, channel as usize, (), || {
        if let Some(ch) = chan(SLOT, channel) {
            ch.pause();
        }
    });
}

#[allow(clippy::too_many_arguments)]
unsafe extern "system" fn vmb_channel_send_synchronous_request(
    channel: VMBCHANNEL,
    buffer: PVOID,
    size: u32,
    mdl: PMDL,
    flags: u32,
    completion: PVOID,
    completion_size: *mut u32,
    timeout: PLARGE_INTEGER,
) -> NTSTATUS {
    const SLOT: Slot = Slot::VmbChannelSendSynchronousRequest;
    // The header's `_When_`: PASSIVE_LEVEL unless the timeout is present and zero and no
    // completion is awaited.
    let no_wait = !timeout.is_null()
        && flags & VMBUS_CHANNEL_FORMAT_FLAG_WAIT_FOR_COMPLETION == 0
        // SAFETY: a non-null `Timeout` points to a readable LARGE_INTEGER (the KMCL contract).
        && unsafe { timeout.cast::<i64>().read_unaligned() } == 0;
    let max_irql = if no_wait {
        Irql::DISPATCH
    } else {
        Irql::PASSIVE
    };
    guard_at(
        SLOT,
        channel as usize,
        max_irql,
        STATUS_INTERNAL_ERROR,
        || {
            let Some(ch) = chan(SLOT, channel) else {
                return STATUS_INVALID_PARAMETER_1;
            };
            if let Some(s) = ch.bus.fault(SLOT) {
                return s;
            }
            outgoing::send_sync(
                &ch,
                buffer.cast::<u8>().cast_const(),
                size,
                mdl,
                flags,
                completion.cast::<u8>(),
                completion_size,
                timeout.cast::<i64>().cast_const(),
            )
        },
    )
}

unsafe extern "system" fn vmb_channel_set_incoming_processing_at_passive(
    channel: VMBCHANNEL,
    require_passive: BOOLEAN,
) {
    const SLOT: Slot = Slot::VmbChannelSetIncomingProcessingAtPassive;
    guard(SLOT, channel as usize, (), || {
        if let Some(ch) = chan(SLOT, channel) {
            lock(&ch.inner).at_passive = require_passive != 0;
        }
    });
}

unsafe extern "system" fn vmb_channel_set_interrupt_latency(
    channel: VMBCHANNEL,
    latency: u16,
    original: *mut u16,
) -> NTSTATUS {
    const SLOT: Slot = Slot::VmbChannelSetInterruptLatency;
    guard(SLOT, channel as usize, STATUS_INTERNAL_ERROR, || {
        let Some(ch) = chan(SLOT, channel) else {
            return STATUS_INVALID_PARAMETER_1;
        };
        if let Some(s) = ch.bus.fault(SLOT) {
            return s;
        }
        if original.is_null() {
            return bad(
                &ch,
                SLOT,
                STATUS_INVALID_PARAMETER_3,
                "null OriginalLatency",
            );
        }
        let old = core::mem::replace(&mut lock(&ch.inner).latency, latency);
        // SAFETY: checked non-null; the driver passes a writable UINT16.
        unsafe { original.write_unaligned(old) };
        STATUS_SUCCESS
    })
}

unsafe extern "system" fn vmb_channel_set_pointer(channel: VMBCHANNEL, pointer: PVOID) {
    const SLOT: Slot = Slot::VmbChannelSetPointer;
    guard(SLOT, channel as usize, (), || {
        if let Some(ch) = chan(SLOT, channel) {
            lock(&ch.inner).pointer = pointer as usize;
        }
    });
}

unsafe extern "system" fn vmb_channel_set_transaction_quota(channel: VMBCHANNEL, quota: u32) {
    const SLOT: Slot = Slot::VmbChannelSetTransactionQuota;
    guard(SLOT, channel as usize, (), || {
        let Some(ch) = chan(SLOT, channel) else {
            return;
        };
        if quota == 0 {
            bad(
                &ch,
                SLOT,
                STATUS_INVALID_PARAMETER_2,
                "quota must be > 0 (ignored)",
            );
            return;
        }
        lock(&ch.inner).quota = quota;
    });
}

unsafe extern "system" fn vmb_channel_sizeof_packet(channel: VMBCHANNEL) -> u32 {
    const SLOT: Slot = Slot::VmbChannelSizeofPacket;
    guard(SLOT, channel as usize, 0, || {
        chan(SLOT, channel).map_or(0, |ch| sizeof_packet(&lock(&ch.inner)))
    })
}

unsafe extern "system" fn vmb_channel_start(channel: VMBCHANNEL) {
    const SLOT: Slot = Slot::VmbChannelStart;
    guard(SLOT, channel as usize, (), || {
        if let Some(ch) = chan(SLOT, channel) {
            ch.start();
        }
    });
}

unsafe extern "system" fn vmb_client_channel_init_set_ring_buffer_page_count(
    channel: VMBCHANNEL,
    incoming: u32,
    outgoing: u32,
) -> NTSTATUS {
    const SLOT: Slot = Slot::VmbClientChannelInitSetRingBufferPageCount;
    init_setter(SLOT, channel, |ch, inner| {
        if incoming == 0 || incoming > MAX_RING_PAGES {
            return bad(
                ch,
                SLOT,
                STATUS_INVALID_PARAMETER_2,
                format!("incoming page count {incoming} not in 1..={MAX_RING_PAGES}"),
            );
        }
        if outgoing == 0 || outgoing > MAX_RING_PAGES {
            return bad(
                ch,
                SLOT,
                STATUS_INVALID_PARAMETER_3,
                format!("outgoing page count {outgoing} not in 1..={MAX_RING_PAGES}"),
            );
        }
        if !fits_ring(inner.cfg.max_packet_size, outgoing) {
            return bad(
                ch,
                SLOT,
                STATUS_INVALID_PARAMETER_3,
                "outgoing ring too small for the maximum packet size",
            );
        }
        inner.cfg.incoming_pages = incoming;
        inner.cfg.outgoing_pages = outgoing;
        STATUS_SUCCESS
    })
}

unsafe extern "system" fn vmb_client_channel_init_set_target_pnp(
    channel: VMBCHANNEL,
    interface_type: LPCGUID,
    interface_instance: LPCGUID,
    failure: PFN_VMB_CHANNEL_PNP_FAILURE,
) -> NTSTATUS {
    const SLOT: Slot = Slot::VmbClientChannelInitSetTargetPnp;
    init_setter(SLOT, channel, |ch, inner| {
        if interface_type.is_null() {
            return bad(ch, SLOT, STATUS_INVALID_PARAMETER_2, "null InterfaceType");
        }
        // SAFETY: checked non-null; the driver passes a readable GUID.
        let ty = unsafe { interface_type.read_unaligned() };
        let instance = if interface_instance.is_null() {
            None
        } else {
            // SAFETY: non-null optional GUID from the driver.
            Some(unsafe { interface_instance.read_unaligned() })
        };
        inner.cfg.target = Some((ty, instance));
        inner.cfg.pnp_failure = failure;
        STATUS_SUCCESS
    })
}

unsafe extern "system" fn vmb_packet_allocate(channel: VMBCHANNEL) -> VMBPACKET {
    const SLOT: Slot = Slot::VmbPacketAllocate;
    guard(SLOT, channel as usize, core::ptr::null_mut(), || {
        let Some(ch) = chan(SLOT, channel) else {
            return core::ptr::null_mut();
        };
        if ch.bus.fault(SLOT).is_some() {
            return core::ptr::null_mut();
        }
        let mut inner = lock(&ch.inner);
        let live = inner.packets.values().filter(|a| **a).count();
        if live >= inner.cfg.max_packet_count as usize {
            return core::ptr::null_mut();
        }
        let ctx_size = inner.cfg.inline_context_size as usize;
        let storage = (ctx_size > 0).then(|| RawBuf::zeroed(ctx_size));
        let context = storage.as_ref().map_or(0, RawBuf::address);
        let handle = registry::synthetic_handle();
        let pkt = OutPacket::new(&ch, handle, true, context, storage);
        if !registry::insert(handle, Object::Packet(pkt)) {
            return core::ptr::null_mut();
        }
        inner.packets.insert(handle, true);
        handle as VMBPACKET
    })
}

unsafe extern "system" fn vmb_packet_free(packet: VMBPACKET) {
    const SLOT: Slot = Slot::VmbPacketFree;
    guard(SLOT, packet as usize, (), || {
        let Ok(pkt) = registry::packet_for_free(packet as usize, SLOT.name()) else {
            return;
        };
        let phase = lock(&pkt.st).phase;
        match phase {
            Phase::Idle | Phase::Completing => outgoing::free_packet(&pkt, "freed"),
            other => pkt.channel.violation(
                SLOT.name(),
                ViolationKind::WrongState,
                format!("free of a packet that is {other:?} (ignored)"),
            ),
        }
    });
}

unsafe extern "system" fn vmb_packet_get_channel(packet: VMBPACKET) -> VMBCHANNEL {
    const SLOT: Slot = Slot::VmbPacketGetChannel;
    guard(SLOT, packet as usize, core::ptr::null_mut(), || {
        out_packet(SLOT, packet).map_or(core::ptr::null_mut(), |p| p.channel.handle as VMBCHANNEL)
    })
}

unsafe extern "system" fn vmb_packet_get_pointer(packet: VMBPACKET) -> PVOID {
    const SLOT: Slot = Slot::VmbPacketGetPointer;
    guard(SLOT, packet as usize, core::ptr::null_mut(), || {
        out_packet(SLOT, packet).map_or(core::ptr::null_mut(), |p| lock(&p.st).pointer as PVOID)
    })
}

unsafe extern "system" fn vmb_packet_initialize(
    channel: VMBCHANNEL,
    packet: VMBPACKET,
    byte_count: u32,
) -> NTSTATUS {
    const SLOT: Slot = Slot::VmbPacketInitialize;
    guard(SLOT, channel as usize, STATUS_INTERNAL_ERROR, || {
        let Some(ch) = chan(SLOT, channel) else {
            return STATUS_INVALID_PARAMETER_1;
        };
        if let Some(s) = ch.bus.fault(SLOT) {
            return s;
        }
        if packet.is_null() {
            return bad(&ch, SLOT, STATUS_INVALID_PARAMETER_2, "null packet storage");
        }
        let (needed, ctx) = {
            let inner = lock(&ch.inner);
            (sizeof_packet(&inner), inner.cfg.inline_context_size)
        };
        if byte_count < needed {
            return bad(
                &ch,
                SLOT,
                STATUS_INVALID_PARAMETER_3,
                format!("ByteCount {byte_count} below VmbChannelSizeofPacket {needed}"),
            );
        }
        let handle = packet as usize;
        match registry::live_kind(handle) {
            // Reusing the storage of an idle initialized packet re-initializes it.
            None => {}
            Some(HandleKind::Packet) if release_idle_initialized(handle) => {}
            Some(HandleKind::Packet) => {
                ch.violation(
                    SLOT.name(),
                    ViolationKind::WrongState,
                    "VmbPacketInitialize over a packet that is still in use",
                );
                return STATUS_INVALID_DEVICE_STATE;
            }
            Some(_) => {
                return bad(
                    &ch,
                    SLOT,
                    STATUS_INVALID_PARAMETER_2,
                    "packet storage overlaps another live KMCL object",
                );
            }
        }
        // SAFETY: the driver passes `byte_count` writable bytes at `packet` (KMCL contract:
        // `_Out_writes_bytes_(ByteCount)`).
        unsafe { core::ptr::write_bytes(packet.cast::<u8>(), 0, byte_count as usize) };
        let context = if ctx > 0 { handle } else { 0 };
        let pkt = OutPacket::new(&ch, handle, false, context, None);
        if !registry::insert(handle, Object::Packet(pkt)) {
            return STATUS_INVALID_DEVICE_STATE;
        }
        lock(&ch.inner).packets.insert(handle, false);
        STATUS_SUCCESS
    })
}

/// Storage of an idle `VmbPacketInitialize` packet that the driver reuses (packet storage is
/// caller memory that needs no `VmbPacketFree`): the old packet is released. False if the packet
/// is allocated or still in use.
fn release_idle_initialized(handle: usize) -> bool {
    let Some(old) = registry::peek_packet(handle) else {
        return true;
    };
    let busy = old.allocated || !matches!(lock(&old.st).phase, Phase::Idle | Phase::Completing);
    if busy {
        return false;
    }
    lock(&old.channel.inner).packets.remove(&handle);
    drop(registry::retire(handle, "re-initialized"));
    true
}

fn send_common(
    slot: Slot,
    packet: VMBPACKET,
    buffer: PVOID,
    len: u32,
    ext: &External,
    flags: u32,
    params: SendParams,
) -> NTSTATUS {
    guard(slot, packet as usize, STATUS_INTERNAL_ERROR, || {
        let Some(pkt) = out_packet(slot, packet) else {
            return STATUS_INVALID_PARAMETER_1;
        };
        if let Some(s) = pkt.channel.bus.fault(slot) {
            return s;
        }
        outgoing::send_packet(
            &pkt,
            slot.name(),
            buffer.cast::<u8>().cast_const(),
            len,
            ext,
            flags,
            params,
        )
    })
}

unsafe extern "system" fn vmb_packet_send(
    packet: VMBPACKET,
    buffer: PVOID,
    len: u32,
    mdl: PMDL,
    flags: u32,
) -> NTSTATUS {
    let ext = if mdl.is_null() {
        External::None
    } else {
        External::Chain { mdl }
    };
    send_common(
        Slot::VmbPacketSend,
        packet,
        buffer,
        len,
        &ext,
        flags,
        SendParams {
            mdl: STATUS_INVALID_PARAMETER_4,
            offset: STATUS_INVALID_PARAMETER_4,
            length: STATUS_INVALID_PARAMETER_4,
            flags: STATUS_INVALID_PARAMETER_5,
        },
    )
}

unsafe extern "system" fn vmb_packet_send_with_external_mdl(
    packet: VMBPACKET,
    buffer: PVOID,
    len: u32,
    mdl: PMDL,
    offset: u32,
    length: u32,
    flags: u32,
) -> NTSTATUS {
    send_common(
        Slot::VmbPacketSendWithExternalMdl,
        packet,
        buffer,
        len,
        &External::Window {
            mdl,
            offset,
            length,
        },
        flags,
        SendParams {
            mdl: STATUS_INVALID_PARAMETER_4,
            offset: STATUS_INVALID_PARAMETER_5,
            length: STATUS_INVALID_PARAMETER_6,
            flags: STATUS_INVALID_PARAMETER_7,
        },
    )
}

unsafe extern "system" fn vmb_packet_send_with_external_pfns(
    packet: VMBPACKET,
    buffer: PVOID,
    len: u32,
    pfns: PPFN_NUMBER,
    count: u32,
    flags: u32,
) -> NTSTATUS {
    send_common(
        Slot::VmbPacketSendWithExternalPfns,
        packet,
        buffer,
        len,
        &External::Pfns {
            pfns: pfns.cast_const(),
            count,
        },
        flags,
        SendParams {
            mdl: STATUS_INVALID_PARAMETER_4,
            offset: STATUS_INVALID_PARAMETER_5,
            length: STATUS_INVALID_PARAMETER_5,
            flags: STATUS_INVALID_PARAMETER_6,
        },
    )
}

unsafe extern "system" fn vmb_packet_set_completion_routine(
    packet: VMBPACKET,
    routine: PFN_VMB_PACKET_COMPLETION_ROUTINE,
) {
    const SLOT: Slot = Slot::VmbPacketSetCompletionRoutine;
    guard(SLOT, packet as usize, (), || {
        if let Some(p) = out_packet(SLOT, packet) {
            lock(&p.st).routine =
                routine.map_or(CompletionRoutine::Default, CompletionRoutine::Legacy);
        }
    });
}

unsafe extern "system" fn vmb_packet_set_pointer(packet: VMBPACKET, pointer: PVOID) {
    const SLOT: Slot = Slot::VmbPacketSetPointer;
    guard(SLOT, packet as usize, (), || {
        if let Some(p) = out_packet(SLOT, packet) {
            lock(&p.st).pointer = pointer as usize;
        }
    });
}

unsafe extern "system" fn vmb_channel_packet_get_client_context(
    packet: VMBPACKETCOMPLETION,
) -> PVOID {
    const SLOT: Slot = Slot::VmbChannelPacketGetClientContext;
    guard(SLOT, packet as usize, core::ptr::null_mut(), || {
        in_packet(SLOT, packet).map_or(core::ptr::null_mut(), |p| p.client_context() as PVOID)
    })
}

unsafe extern "system" fn vmb_channel_get_target_device_object(
    channel: VMBCHANNEL,
    out: *mut PDEVICE_OBJECT,
) {
    const SLOT: Slot = Slot::VmbChannelGetTargetDeviceObject;
    guard(SLOT, channel as usize, (), || {
        let Some(ch) = chan(SLOT, channel) else {
            return;
        };
        if out.is_null() {
            bad(
                &ch,
                SLOT,
                STATUS_INVALID_PARAMETER_2,
                "null TargetDeviceObject",
            );
            return;
        }
        let d = target_offer(&ch).map_or(0, |o| o.device_object_address());
        // SAFETY: checked non-null; the driver passes a writable PDEVICE_OBJECT.
        unsafe { out.write_unaligned(d as PDEVICE_OBJECT) };
    });
}

unsafe extern "system" fn vmb_channel_get_parent_device_object(
    channel: VMBCHANNEL,
    out: *mut PDEVICE_OBJECT,
) {
    const SLOT: Slot = Slot::VmbChannelGetParentDeviceObject;
    guard(SLOT, channel as usize, (), || {
        let Some(ch) = chan(SLOT, channel) else {
            return;
        };
        if out.is_null() {
            bad(
                &ch,
                SLOT,
                STATUS_INVALID_PARAMETER_2,
                "null ParentDeviceObject",
            );
            return;
        }
        // SAFETY: checked non-null; the driver passes a writable PDEVICE_OBJECT.
        unsafe { out.write_unaligned(ch.parent_device as PDEVICE_OBJECT) };
    });
}

unsafe extern "system" fn vmb_channel_init_set_bounce_buffer_sizes(
    channel: VMBCHANNEL,
    initial: u32,
    increment: u32,
    maximum: u32,
) -> NTSTATUS {
    const SLOT: Slot = Slot::VmbChannelInitSetBounceBufferSizes;
    init_setter(SLOT, channel, |ch, inner| {
        let page = PAGE_SIZE as u32;
        if !initial.is_multiple_of(page) || initial > maximum {
            return bad(
                ch,
                SLOT,
                STATUS_INVALID_PARAMETER_2,
                "initial size not a page multiple or above the maximum",
            );
        }
        if !increment.is_multiple_of(page) {
            return bad(
                ch,
                SLOT,
                STATUS_INVALID_PARAMETER_3,
                "increment not a page multiple",
            );
        }
        if !maximum.is_multiple_of(page) || maximum == 0 {
            return bad(
                ch,
                SLOT,
                STATUS_INVALID_PARAMETER_4,
                "maximum not a positive page multiple",
            );
        }
        inner.cfg.bounce = Some((initial, increment, maximum));
        STATUS_SUCCESS
    })
}

unsafe extern "system" fn vmb_channel_allocate_bounce_buffer(
    channel: VMBCHANNEL,
    size: u32,
) -> NTSTATUS {
    const SLOT: Slot = Slot::VmbChannelAllocateBounceBuffer;
    guard(SLOT, channel as usize, STATUS_INTERNAL_ERROR, || {
        let Some(ch) = chan(SLOT, channel) else {
            return STATUS_INVALID_PARAMETER_1;
        };
        if let Some(s) = ch.bus.fault(SLOT) {
            return s;
        }
        let mut inner = lock(&ch.inner);
        let max = inner.cfg.bounce.map_or(u32::MAX, |(_, _, m)| m);
        if size == 0 || !size.is_multiple_of(PAGE_SIZE as u32) || size > max {
            drop(inner);
            return bad(
                &ch,
                SLOT,
                STATUS_INVALID_PARAMETER_2,
                format!("bounce buffer size {size} not a page multiple in 1..={max}"),
            );
        }
        inner.bounce_allocated = inner.bounce_allocated.max(size);
        STATUS_SUCCESS
    })
}

unsafe extern "system" fn vmb_channel_init_set_maximum_packet_count(
    channel: VMBCHANNEL,
    count: u32,
) -> NTSTATUS {
    const SLOT: Slot = Slot::VmbChannelInitSetMaximumPacketCount;
    init_setter(SLOT, channel, |ch, inner| {
        if count == 0 || count > MAX_PACKET_COUNT {
            return bad(
                ch,
                SLOT,
                STATUS_INVALID_PARAMETER_2,
                format!("packet count {count} not in 1..={MAX_PACKET_COUNT}"),
            );
        }
        inner.cfg.max_packet_count = count;
        STATUS_SUCCESS
    })
}

unsafe extern "system" fn vmb_channel_create_gpadl_from_pfn_list(
    channel: VMBCHANNEL,
    flags: u32,
    pfns: PPFN_NUMBER,
    count: u32,
    gpadl: *mut u32,
) -> NTSTATUS {
    const SLOT: Slot = Slot::VmbChannelCreateGpadlFromPfnList;
    guard(SLOT, channel as usize, STATUS_INTERNAL_ERROR, || {
        let Some(ch) = chan(SLOT, channel) else {
            return STATUS_INVALID_PARAMETER_1;
        };
        if let Some(s) = ch.bus.fault(SLOT) {
            return s;
        }
        if flags & !VMBUS_CHANNEL_GPADL_FLAGS != 0 {
            return bad(&ch, SLOT, STATUS_INVALID_PARAMETER_2, "unknown GPADL flags");
        }
        if pfns.is_null() {
            return bad(&ch, SLOT, STATUS_INVALID_PARAMETER_3, "null PFN list");
        }
        if count == 0 {
            return bad(&ch, SLOT, STATUS_INVALID_PARAMETER_4, "zero PFN count");
        }
        if gpadl.is_null() {
            return bad(&ch, SLOT, STATUS_INVALID_PARAMETER_5, "null GpadlHandle");
        }
        // SAFETY: the driver passes `count` PFNs at `pfns` (checked non-null).
        let list = unsafe { core::slice::from_raw_parts(pfns, count as usize) }.to_vec();
        match crate::model::gpadl::pfn_spans(&list) {
            Ok(spans) => crate::model::gpadl::create(&ch, SLOT.name(), flags, spans, None, gpadl),
            Err(pfn) => bad(
                &ch,
                SLOT,
                STATUS_INVALID_PARAMETER_3,
                format!("PFN {pfn:#x} is not a whole page of known memory"),
            ),
        }
    })
}

unsafe extern "system" fn vmb_channel_init_set_primary_channel(
    channel: VMBCHANNEL,
    primary: VMBCHANNEL,
    index: u16,
) -> NTSTATUS {
    const SLOT: Slot = Slot::VmbChannelInitSetPrimaryChannel;
    init_setter(SLOT, channel, |ch, inner| {
        if primary as usize == ch.handle {
            return bad(
                ch,
                SLOT,
                STATUS_INVALID_PARAMETER_2,
                "a channel cannot be its own primary",
            );
        }
        let Ok(p) = registry::channel(primary as usize, SLOT.name()) else {
            return STATUS_INVALID_PARAMETER_2;
        };
        if !Arc::ptr_eq(&p.bus, &ch.bus) {
            return bad(
                ch,
                SLOT,
                STATUS_INVALID_PARAMETER_2,
                "primary channel belongs to another bus",
            );
        }
        if index == 0 {
            return bad(
                ch,
                SLOT,
                STATUS_INVALID_PARAMETER_3,
                "subchannel index must be > 0",
            );
        }
        inner.cfg.primary = Some((p.handle, index));
        STATUS_SUCCESS
    })
}

unsafe extern "system" fn vmb_channel_initialize(
    parent: PDEVICE_OBJECT,
    is_server: BOOLEAN,
    channel: VMBCHANNEL,
    size: u32,
) -> NTSTATUS {
    const SLOT: Slot = Slot::VmbChannelInitialize;
    guard(SLOT, parent as usize, STATUS_INTERNAL_ERROR, || {
        let bus: Option<Arc<Bus>> = registry::device(parent as usize, SLOT.name())
            .ok()
            .map(|(_, b)| b);
        let Some(bus) = bus else {
            return STATUS_INVALID_PARAMETER_1;
        };
        let report = |status: NTSTATUS, msg: &str| {
            bus.violation(
                SLOT.name(),
                ViolationKind::InvalidParameter,
                msg,
                channel as usize,
            );
            status
        };
        if channel.is_null() {
            return report(STATUS_INVALID_PARAMETER_3, "null channel storage");
        }
        if size < SIZEOF_CHANNEL {
            return report(
                STATUS_INVALID_PARAMETER_4,
                "BufferSize below VmbSizeofChannel()",
            );
        }
        if registry::is_live_channel(channel as usize) {
            bus.violation(
                SLOT.name(),
                ViolationKind::WrongState,
                "VmbChannelInitialize over a live channel",
                channel as usize,
            );
            return STATUS_INVALID_DEVICE_STATE;
        }
        match registry::live_kind(channel as usize) {
            None => {}
            Some(HandleKind::Packet) if release_idle_initialized(channel as usize) => {}
            Some(_) => {
                return report(
                    STATUS_INVALID_PARAMETER_3,
                    "channel storage overlaps another live KMCL object",
                );
            }
        }
        // Fault injection is checked inside `new_channel`, before any side effect; zero the
        // storage only once the channel exists.
        match new_channel(SLOT, parent, is_server, Some(channel as usize)) {
            Ok(_) => {
                // SAFETY: the driver passes `size` writable bytes at `channel`
                // (`_Out_writes_bytes_(BufferSize)`). The emulator keeps no state there.
                unsafe { core::ptr::write_bytes(channel.cast::<u8>(), 0, size as usize) };
                STATUS_SUCCESS
            }
            Err(s) => s,
        }
    })
}

unsafe extern "system" fn vmb_channel_set_allowable_dpc_cpu_usage(
    channel: VMBCHANNEL,
    percentage: u8,
) {
    const SLOT: Slot = Slot::VmbChannelSetAllowableDpcCpuUsage;
    guard(SLOT, channel as usize, (), || {
        let Some(ch) = chan(SLOT, channel) else {
            return;
        };
        if !(1..=100).contains(&percentage) {
            bad(
                &ch,
                SLOT,
                STATUS_INVALID_PARAMETER_2,
                format!("CPU percentage {percentage} not in 1..=100 (ignored)"),
            );
            return;
        }
        lock(&ch.inner).dpc_cpu = percentage;
    });
}

unsafe extern "system" fn vmb_client_channel_init_set_target_processor_index(
    channel: VMBCHANNEL,
    index: u32,
) -> NTSTATUS {
    const SLOT: Slot = Slot::VmbClientChannelInitSetTargetProcessorIndex;
    init_setter(SLOT, channel, |ch, inner| {
        if index >= MAX_PROCESSORS {
            return bad(
                ch,
                SLOT,
                STATUS_INVALID_PARAMETER_2,
                format!("processor index {index} not below {MAX_PROCESSORS}"),
            );
        }
        inner.cfg.target_processor = Some(index);
        STATUS_SUCCESS
    })
}

unsafe extern "system" fn vmb_sizeof_channel() -> u32 {
    guard(Slot::VmbSizeofChannel, 0, SIZEOF_CHANNEL, || SIZEOF_CHANNEL)
}

unsafe extern "system" fn vmb_channel_init_set_inline_packet_context_size(
    channel: VMBCHANNEL,
    size: u32,
) -> NTSTATUS {
    const SLOT: Slot = Slot::VmbChannelInitSetInlinePacketContextSize;
    init_setter(SLOT, channel, |ch, inner| {
        if size > MAX_CONTEXT_SIZE {
            return bad(
                ch,
                SLOT,
                STATUS_INVALID_PARAMETER_2,
                "inline context too large",
            );
        }
        inner.cfg.inline_context_size = size;
        STATUS_SUCCESS
    })
}

unsafe extern "system" fn vmb_packet_get_inline_packet_context_pointer(packet: VMBPACKET) -> PVOID {
    const SLOT: Slot = Slot::VmbPacketGetInlinePacketContextPointer;
    guard(SLOT, packet as usize, core::ptr::null_mut(), || {
        out_packet(SLOT, packet).map_or(core::ptr::null_mut(), |p| p.context as PVOID)
    })
}

unsafe extern "system" fn vmb_channel_init_set_process_packet_callbacks_ex(
    channel: VMBCHANNEL,
    context: PVOID,
    process: PFN_VMB_CHANNEL_PROCESS_PACKET_EX,
    complete: PFN_VMB_CHANNEL_PROCESSING_COMPLETE_EX,
) -> NTSTATUS {
    const SLOT: Slot = Slot::VmbChannelInitSetProcessPacketCallbacksEx;
    init_setter(SLOT, channel, |ch, inner| {
        let Some(process) = process else {
            return bad(
                ch,
                SLOT,
                STATUS_INVALID_PARAMETER_3,
                "null ProcessPacketCallbackEx",
            );
        };
        inner.process_cbs = ProcessCallbacks::Ex {
            context: context as usize,
            process,
            complete,
        };
        STATUS_SUCCESS
    })
}

unsafe extern "system" fn vmb_packet_set_completion_routine_ex(
    packet: VMBPACKET,
    context: PVOID,
    routine: PFN_VMB_PACKET_COMPLETION_ROUTINE_EX,
) {
    const SLOT: Slot = Slot::VmbPacketSetCompletionRoutineEx;
    guard(SLOT, packet as usize, (), || {
        if let Some(p) = out_packet(SLOT, packet) {
            lock(&p.st).routine = routine.map_or(CompletionRoutine::Default, |f| {
                CompletionRoutine::Ex(f, context as usize)
            });
        }
    });
}

/// `extern "C"`: the `INTERFACE` routines' convention (see `vmbus_kmcl::sys`).
unsafe extern "C" fn interface_reference(context: *mut c_void) {
    match registry::interface(context as usize) {
        Some(bus) => bus.reference(1, "InterfaceReference"),
        None => registry::report(
            None,
            Violation {
                slot: "InterfaceReference",
                kind: ViolationKind::InvalidHandle,
                message: "unknown interface context".into(),
                handle: context as usize,
                irql: None,
            },
        ),
    }
}

/// `extern "C"`, as `interface_reference`.
unsafe extern "C" fn interface_dereference(context: *mut c_void) {
    match registry::interface(context as usize) {
        Some(bus) => bus.reference(-1, "InterfaceDereference"),
        None => registry::report(
            None,
            Violation {
                slot: "InterfaceDereference",
                kind: ViolationKind::InvalidHandle,
                message: "unknown interface context".into(),
                handle: context as usize,
                irql: None,
            },
        ),
    }
}

/// The full V5 table for a bus; its header carries the requested version and that version's
/// size (the query copies only that many bytes).
pub(crate) fn table(context: usize, version: InterfaceVersion) -> KMCL_CLIENT_INTERFACE_V5 {
    KMCL_CLIENT_INTERFACE_V5 {
        InterfaceHeader: INTERFACE {
            Size: u16::try_from(version.struct_size()).unwrap_or(u16::MAX),
            Version: version.number(),
            Context: context as *mut c_void,
            InterfaceReference: Some(interface_reference),
            InterfaceDereference: Some(interface_dereference),
        },
        VmbChannelAllocate: Some(vmb_channel_allocate),
        VmbChannelCleanup: Some(vmb_channel_cleanup),
        VmbChannelCreateGpadlFromBuffer: Some(vmb_channel_create_gpadl_from_buffer),
        VmbChannelCreateGpadlFromMdl: Some(vmb_channel_create_gpadl_from_mdl),
        VmbChannelDeleteGpadl: Some(vmb_channel_delete_gpadl),
        VmbChannelDisable: Some(vmb_channel_disable),
        VmbChannelEnable: Some(vmb_channel_enable),
        VmbChannelGetInterfaceInstance: Some(vmb_channel_get_interface_instance),
        VmbChannelGetMmioSpace: Some(vmb_channel_get_mmio_space),
        VmbChannelGetPointer: Some(vmb_channel_get_pointer),
        VmbChannelInitSetClientContextSize: Some(vmb_channel_init_set_client_context_size),
        VmbChannelInitSetFlags: Some(vmb_channel_init_set_flags),
        VmbChannelInitSetFriendlyName: Some(vmb_channel_init_set_friendly_name),
        VmbChannelInitSetMaximumExternalData: Some(vmb_channel_init_set_maximum_external_data),
        VmbChannelInitSetMaximumPacketSize: Some(vmb_channel_init_set_maximum_packet_size),
        VmbChannelInitSetProcessPacketCallbacks: Some(
            vmb_channel_init_set_process_packet_callbacks,
        ),
        VmbChannelInitSetStateChangeCallbacks: Some(vmb_channel_init_set_state_change_callbacks),
        VmbChannelPacketComplete: Some(vmb_channel_packet_complete),
        VmbChannelPacketDeferToPassive: Some(vmb_channel_packet_defer_to_passive),
        VmbChannelPacketFail: Some(vmb_channel_packet_fail),
        VmbChannelPacketGetExternalData: Some(vmb_channel_packet_get_external_data),
        VmbChannelPause: Some(vmb_channel_pause),
        VmbChannelSendSynchronousRequest: Some(vmb_channel_send_synchronous_request),
        VmbChannelSetIncomingProcessingAtPassive: Some(
            vmb_channel_set_incoming_processing_at_passive,
        ),
        VmbChannelSetInterruptLatency: Some(vmb_channel_set_interrupt_latency),
        VmbChannelSetPointer: Some(vmb_channel_set_pointer),
        VmbChannelSetTransactionQuota: Some(vmb_channel_set_transaction_quota),
        VmbChannelSizeofPacket: Some(vmb_channel_sizeof_packet),
        VmbChannelStart: Some(vmb_channel_start),
        VmbClientChannelInitSetRingBufferPageCount: Some(
            vmb_client_channel_init_set_ring_buffer_page_count,
        ),
        VmbClientChannelInitSetTargetPnp: Some(vmb_client_channel_init_set_target_pnp),
        VmbPacketAllocate: Some(vmb_packet_allocate),
        VmbPacketFree: Some(vmb_packet_free),
        VmbPacketGetChannel: Some(vmb_packet_get_channel),
        VmbPacketGetPointer: Some(vmb_packet_get_pointer),
        VmbPacketInitialize: Some(vmb_packet_initialize),
        VmbPacketSend: Some(vmb_packet_send),
        VmbPacketSendWithExternalMdl: Some(vmb_packet_send_with_external_mdl),
        VmbPacketSendWithExternalPfns: Some(vmb_packet_send_with_external_pfns),
        VmbPacketSetCompletionRoutine: Some(vmb_packet_set_completion_routine),
        VmbPacketSetPointer: Some(vmb_packet_set_pointer),
        VmbChannelPacketGetClientContext: Some(vmb_channel_packet_get_client_context),
        VmbChannelGetTargetDeviceObject: Some(vmb_channel_get_target_device_object),
        VmbChannelGetParentDeviceObject: Some(vmb_channel_get_parent_device_object),
        VmbChannelInitSetBounceBufferSizes: Some(vmb_channel_init_set_bounce_buffer_sizes),
        VmbChannelAllocateBounceBuffer: Some(vmb_channel_allocate_bounce_buffer),
        VmbChannelInitSetMaximumPacketCount: Some(vmb_channel_init_set_maximum_packet_count),
        VmbChannelCreateGpadlFromPfnList: Some(vmb_channel_create_gpadl_from_pfn_list),
        VmbChannelInitSetPrimaryChannel: Some(vmb_channel_init_set_primary_channel),
        VmbChannelInitialize: Some(vmb_channel_initialize),
        VmbChannelSetAllowableDpcCpuUsage: Some(vmb_channel_set_allowable_dpc_cpu_usage),
        VmbClientChannelInitSetTargetProcessorIndex: Some(
            vmb_client_channel_init_set_target_processor_index,
        ),
        VmbSizeofChannel: Some(vmb_sizeof_channel),
        VmbChannelInitSetInlinePacketContextSize: Some(
            vmb_channel_init_set_inline_packet_context_size,
        ),
        VmbPacketGetInlinePacketContextPointer: Some(vmb_packet_get_inline_packet_context_pointer),
        VmbChannelInitSetProcessPacketCallbacksEx: Some(
            vmb_channel_init_set_process_packet_callbacks_ex,
        ),
        VmbPacketSetCompletionRoutineEx: Some(vmb_packet_set_completion_routine_ex),
    }
}
