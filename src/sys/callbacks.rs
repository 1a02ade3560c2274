//! Driver-implemented callbacks (`EVT_VMB_*`), their `PFN_*` pointers, and the state-change
//! callback registration structs.
//!
//! Each `EVT_*` alias is the non-null function pointer; each `PFN_*` alias is the nullable
//! `Option` of it, as it appears in registration arguments and structs. The `_EX` forms
//! (WDK 10.0.19041, interface V5) carry the context given at registration: for channel callbacks
//! it is the second argument, for the packet completion routine it comes right after the packet.

use super::base::{NTSTATUS, PVOID, VMBCHANNEL, VMBPACKET, VMBPACKETCOMPLETION};

/// `EvtVmbChannelOpened`: the channel opened; returning an error fails the open. PASSIVE_LEVEL.
pub type EVT_VMB_CHANNEL_OPENED = unsafe extern "system" fn(Channel: VMBCHANNEL) -> NTSTATUS;
/// Nullable [`EVT_VMB_CHANNEL_OPENED`].
pub type PFN_VMB_CHANNEL_OPENED = Option<EVT_VMB_CHANNEL_OPENED>;
/// `EvtVmbChannelOpenedEx` (V5). PASSIVE_LEVEL.
pub type EVT_VMB_CHANNEL_OPENED_EX =
    unsafe extern "system" fn(Channel: VMBCHANNEL, CallbackContext: PVOID) -> NTSTATUS;
/// Nullable [`EVT_VMB_CHANNEL_OPENED_EX`].
pub type PFN_VMB_CHANNEL_OPENED_EX = Option<EVT_VMB_CHANNEL_OPENED_EX>;

/// `EvtVmbChannelClosed`: the opposite endpoint closed the channel. PASSIVE_LEVEL.
pub type EVT_VMB_CHANNEL_CLOSED = unsafe extern "system" fn(Channel: VMBCHANNEL);
/// Nullable [`EVT_VMB_CHANNEL_CLOSED`].
pub type PFN_VMB_CHANNEL_CLOSED = Option<EVT_VMB_CHANNEL_CLOSED>;
/// `EvtVmbChannelClosedEx` (V5). PASSIVE_LEVEL.
pub type EVT_VMB_CHANNEL_CLOSED_EX =
    unsafe extern "system" fn(Channel: VMBCHANNEL, CallbackContext: PVOID);
/// Nullable [`EVT_VMB_CHANNEL_CLOSED_EX`].
pub type PFN_VMB_CHANNEL_CLOSED_EX = Option<EVT_VMB_CHANNEL_CLOSED_EX>;

/// `EvtVmbChannelSuspend`: the channel is being paused or torn down. PASSIVE_LEVEL.
pub type EVT_VMB_CHANNEL_SUSPEND = unsafe extern "system" fn(Channel: VMBCHANNEL);
/// Nullable [`EVT_VMB_CHANNEL_SUSPEND`].
pub type PFN_VMB_CHANNEL_SUSPEND = Option<EVT_VMB_CHANNEL_SUSPEND>;
/// `EvtVmbChannelSuspendEx` (V5). PASSIVE_LEVEL.
pub type EVT_VMB_CHANNEL_SUSPEND_EX =
    unsafe extern "system" fn(Channel: VMBCHANNEL, CallbackContext: PVOID);
/// Nullable [`EVT_VMB_CHANNEL_SUSPEND_EX`].
pub type PFN_VMB_CHANNEL_SUSPEND_EX = Option<EVT_VMB_CHANNEL_SUSPEND_EX>;

/// `EvtVmbChannelStarted`: the channel is started (packets may flow). PASSIVE_LEVEL.
pub type EVT_VMB_CHANNEL_STARTED = unsafe extern "system" fn(Channel: VMBCHANNEL);
/// Nullable [`EVT_VMB_CHANNEL_STARTED`].
pub type PFN_VMB_CHANNEL_STARTED = Option<EVT_VMB_CHANNEL_STARTED>;
/// `EvtVmbChannelStartedEx` (V5). PASSIVE_LEVEL.
pub type EVT_VMB_CHANNEL_STARTED_EX =
    unsafe extern "system" fn(Channel: VMBCHANNEL, CallbackContext: PVOID);
/// Nullable [`EVT_VMB_CHANNEL_STARTED_EX`].
pub type PFN_VMB_CHANNEL_STARTED_EX = Option<EVT_VMB_CHANNEL_STARTED_EX>;

/// `EvtVmbChannelPostStarted`: called after the started callback, once packets can be
/// delivered. PASSIVE_LEVEL.
pub type EVT_VMB_CHANNEL_POST_STARTED = unsafe extern "system" fn(Channel: VMBCHANNEL);
/// Nullable [`EVT_VMB_CHANNEL_POST_STARTED`].
pub type PFN_VMB_CHANNEL_POST_STARTED = Option<EVT_VMB_CHANNEL_POST_STARTED>;
/// `EvtVmbChannelPostStartedEx` (V5). PASSIVE_LEVEL.
pub type EVT_VMB_CHANNEL_POST_STARTED_EX =
    unsafe extern "system" fn(Channel: VMBCHANNEL, CallbackContext: PVOID);
/// Nullable [`EVT_VMB_CHANNEL_POST_STARTED_EX`].
pub type PFN_VMB_CHANNEL_POST_STARTED_EX = Option<EVT_VMB_CHANNEL_POST_STARTED_EX>;

/// `EvtVmbChannelSavePacket` (server side): save an in-flight packet. PASSIVE_LEVEL.
pub type EVT_VMB_CHANNEL_SAVE_PACKET = unsafe extern "system" fn(
    Channel: VMBCHANNEL,
    Packet: VMBPACKET,
    SaveBuf: PVOID,
    SaveBufSize: u32,
    BytesNeeded: *mut u32,
) -> NTSTATUS;
/// Nullable [`EVT_VMB_CHANNEL_SAVE_PACKET`].
pub type PFN_VMB_CHANNEL_SAVE_PACKET = Option<EVT_VMB_CHANNEL_SAVE_PACKET>;
/// `EvtVmbChannelSavePacketEx` (server side, V5). PASSIVE_LEVEL.
pub type EVT_VMB_CHANNEL_SAVE_PACKET_EX = unsafe extern "system" fn(
    Channel: VMBCHANNEL,
    CallbackContext: PVOID,
    Packet: VMBPACKET,
    SaveBuf: PVOID,
    SaveBufSize: u32,
    BytesNeeded: *mut u32,
) -> NTSTATUS;
/// Nullable [`EVT_VMB_CHANNEL_SAVE_PACKET_EX`].
pub type PFN_VMB_CHANNEL_SAVE_PACKET_EX = Option<EVT_VMB_CHANNEL_SAVE_PACKET_EX>;

/// `EvtVmbChannelRestorePacket` (server side): restore a saved packet. PASSIVE_LEVEL.
pub type EVT_VMB_CHANNEL_RESTORE_PACKET = unsafe extern "system" fn(
    Channel: VMBCHANNEL,
    LibBuf: PVOID,
    LibBufSize: u32,
    SaveBuf: PVOID,
    SaveBufSize: u32,
) -> NTSTATUS;
/// Nullable [`EVT_VMB_CHANNEL_RESTORE_PACKET`].
pub type PFN_VMB_CHANNEL_RESTORE_PACKET = Option<EVT_VMB_CHANNEL_RESTORE_PACKET>;
/// `EvtVmbChannelRestorePacketEx` (server side, V5). PASSIVE_LEVEL.
pub type EVT_VMB_CHANNEL_RESTORE_PACKET_EX = unsafe extern "system" fn(
    Channel: VMBCHANNEL,
    CallbackContext: PVOID,
    LibBuf: PVOID,
    LibBufSize: u32,
    SaveBuf: PVOID,
    SaveBufSize: u32,
) -> NTSTATUS;
/// Nullable [`EVT_VMB_CHANNEL_RESTORE_PACKET_EX`].
pub type PFN_VMB_CHANNEL_RESTORE_PACKET_EX = Option<EVT_VMB_CHANNEL_RESTORE_PACKET_EX>;

/// `EvtVmbChannelProcessPacket`: an incoming packet. `Buffer`/`BufferLength` are the in-band
/// bytes; `Flags` holds `VMBUS_CHANNEL_PROCESS_PACKET_FLAG_*`. The driver must eventually call
/// `VmbChannelPacketComplete` (or fail / defer) on `Packet`. IRQL ≤ DISPATCH_LEVEL.
pub type EVT_VMB_CHANNEL_PROCESS_PACKET = unsafe extern "system" fn(
    Channel: VMBCHANNEL,
    Packet: VMBPACKETCOMPLETION,
    Buffer: PVOID,
    BufferLength: u32,
    Flags: u32,
);
/// Nullable [`EVT_VMB_CHANNEL_PROCESS_PACKET`].
pub type PFN_VMB_CHANNEL_PROCESS_PACKET = Option<EVT_VMB_CHANNEL_PROCESS_PACKET>;
/// `EvtVmbChannelProcessPacketEx` (V5). IRQL ≤ DISPATCH_LEVEL.
pub type EVT_VMB_CHANNEL_PROCESS_PACKET_EX = unsafe extern "system" fn(
    Channel: VMBCHANNEL,
    CallbackContext: PVOID,
    Packet: VMBPACKETCOMPLETION,
    Buffer: PVOID,
    BufferLength: u32,
    Flags: u32,
);
/// Nullable [`EVT_VMB_CHANNEL_PROCESS_PACKET_EX`].
pub type PFN_VMB_CHANNEL_PROCESS_PACKET_EX = Option<EVT_VMB_CHANNEL_PROCESS_PACKET_EX>;

/// `EvtVmbChannelProcessingComplete`: a batch of `PacketsProcessed` packets has been delivered.
/// IRQL ≤ DISPATCH_LEVEL.
pub type EVT_VMB_CHANNEL_PROCESSING_COMPLETE =
    unsafe extern "system" fn(Channel: VMBCHANNEL, PacketsProcessed: u32);
/// Nullable [`EVT_VMB_CHANNEL_PROCESSING_COMPLETE`].
pub type PFN_VMB_CHANNEL_PROCESSING_COMPLETE = Option<EVT_VMB_CHANNEL_PROCESSING_COMPLETE>;
/// `EvtVmbChannelProcessingCompleteEx` (V5). IRQL ≤ DISPATCH_LEVEL.
pub type EVT_VMB_CHANNEL_PROCESSING_COMPLETE_EX =
    unsafe extern "system" fn(Channel: VMBCHANNEL, CallbackContext: PVOID, PacketsProcessed: u32);
/// Nullable [`EVT_VMB_CHANNEL_PROCESSING_COMPLETE_EX`].
pub type PFN_VMB_CHANNEL_PROCESSING_COMPLETE_EX = Option<EVT_VMB_CHANNEL_PROCESSING_COMPLETE_EX>;

/// `EvtVmbPacketCompletionRoutine`: an outgoing packet completed with `Status`; `Buffer` /
/// `BufferLength` hold the opposite endpoint's response (may be null / 0). IRQL ≤ DISPATCH_LEVEL.
pub type EVT_VMB_PACKET_COMPLETION_ROUTINE = unsafe extern "system" fn(
    Packet: VMBPACKET,
    Status: NTSTATUS,
    Buffer: PVOID,
    BufferLength: u32,
);
/// Nullable [`EVT_VMB_PACKET_COMPLETION_ROUTINE`].
pub type PFN_VMB_PACKET_COMPLETION_ROUTINE = Option<EVT_VMB_PACKET_COMPLETION_ROUTINE>;
/// `EvtVmbPacketCompletionRoutineEx` (V5): note the context comes right after the packet.
/// IRQL ≤ DISPATCH_LEVEL.
pub type EVT_VMB_PACKET_COMPLETION_ROUTINE_EX = unsafe extern "system" fn(
    Packet: VMBPACKET,
    CallbackContext: PVOID,
    Status: NTSTATUS,
    Buffer: PVOID,
    BufferLength: u32,
);
/// Nullable [`EVT_VMB_PACKET_COMPLETION_ROUTINE_EX`].
pub type PFN_VMB_PACKET_COMPLETION_ROUTINE_EX = Option<EVT_VMB_PACKET_COMPLETION_ROUTINE_EX>;

/// `EvtVmbChannelPnpFailure`: the target PnP device failed to come up. PASSIVE_LEVEL.
pub type EVT_VMB_CHANNEL_PNP_FAILURE =
    unsafe extern "system" fn(Channel: VMBCHANNEL, FailureStatus: NTSTATUS);
/// Nullable [`EVT_VMB_CHANNEL_PNP_FAILURE`].
pub type PFN_VMB_CHANNEL_PNP_FAILURE = Option<EVT_VMB_CHANNEL_PNP_FAILURE>;

/// `Version` of [`VMB_CHANNEL_STATE_CHANGE_CALLBACKS`], as `VMB_CHANNEL_STATE_CHANGE_CALLBACKS_INIT`
/// sets it (the header has no macro for it).
pub const VMB_CHANNEL_STATE_CHANGE_CALLBACKS_VERSION_1: u32 = 1;
/// `Version` of [`VMB_CHANNEL_STATE_CHANGE_CALLBACKS_V5`], as
/// `VMB_CHANNEL_STATE_CHANGE_CALLBACKS_INIT_V5` sets it.
pub const VMB_CHANNEL_STATE_CHANGE_CALLBACKS_VERSION_5: u32 = 5;

/// `VMB_CHANNEL_STATE_CHANGE_CALLBACKS`: passed to `VmbChannelInitSetStateChangeCallbacks`.
/// `Version` comes before `Size` (unlike `INTERFACE`); KMCL answers
/// `STATUS_INVALID_PARAMETER_2` when either is wrong. Every callback is optional.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
#[allow(non_snake_case)]
pub struct VMB_CHANNEL_STATE_CHANGE_CALLBACKS {
    /// Must be [`VMB_CHANNEL_STATE_CHANGE_CALLBACKS_VERSION_1`].
    pub Version: u32,
    /// Must be `size_of::<Self>()` (48 on 64-bit targets).
    pub Size: u32,
    /// See [`EVT_VMB_CHANNEL_OPENED`].
    pub EvtChannelOpened: PFN_VMB_CHANNEL_OPENED,
    /// See [`EVT_VMB_CHANNEL_CLOSED`].
    pub EvtChannelClosed: PFN_VMB_CHANNEL_CLOSED,
    /// See [`EVT_VMB_CHANNEL_SUSPEND`].
    pub EvtChannelSuspend: PFN_VMB_CHANNEL_SUSPEND,
    /// See [`EVT_VMB_CHANNEL_STARTED`].
    pub EvtChannelStarted: PFN_VMB_CHANNEL_STARTED,
    /// See [`EVT_VMB_CHANNEL_POST_STARTED`].
    pub EvtChannelPostStarted: PFN_VMB_CHANNEL_POST_STARTED,
}

impl VMB_CHANNEL_STATE_CHANGE_CALLBACKS {
    /// `VMB_CHANNEL_STATE_CHANGE_CALLBACKS_INIT`: no callbacks, Version 1, Size = sizeof.
    pub const INIT: Self = Self {
        Version: VMB_CHANNEL_STATE_CHANGE_CALLBACKS_VERSION_1,
        Size: size_of::<Self>() as u32,
        EvtChannelOpened: None,
        EvtChannelClosed: None,
        EvtChannelSuspend: None,
        EvtChannelStarted: None,
        EvtChannelPostStarted: None,
    };
}

/// `VMB_CHANNEL_STATE_CHANGE_CALLBACKS_V5` (WDK 10.0.19041): the Ex callbacks plus the context
/// they receive. Passed through the same `VmbChannelInitSetStateChangeCallbacks` slot (cast to
/// the V1 pointer type); `Version`/`Size` tell the two apart.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
#[allow(non_snake_case)]
pub struct VMB_CHANNEL_STATE_CHANGE_CALLBACKS_V5 {
    /// Must be [`VMB_CHANNEL_STATE_CHANGE_CALLBACKS_VERSION_5`].
    pub Version: u32,
    /// Must be `size_of::<Self>()` (56 on 64-bit targets).
    pub Size: u32,
    /// Passed as `CallbackContext` to every Ex callback below.
    pub CallbackContext: PVOID,
    /// See [`EVT_VMB_CHANNEL_OPENED_EX`].
    pub EvtChannelOpenedEx: PFN_VMB_CHANNEL_OPENED_EX,
    /// See [`EVT_VMB_CHANNEL_CLOSED_EX`].
    pub EvtChannelClosedEx: PFN_VMB_CHANNEL_CLOSED_EX,
    /// See [`EVT_VMB_CHANNEL_SUSPEND_EX`].
    pub EvtChannelSuspendEx: PFN_VMB_CHANNEL_SUSPEND_EX,
    /// See [`EVT_VMB_CHANNEL_STARTED_EX`].
    pub EvtChannelStartedEx: PFN_VMB_CHANNEL_STARTED_EX,
    /// See [`EVT_VMB_CHANNEL_POST_STARTED_EX`].
    pub EvtChannelPostStartedEx: PFN_VMB_CHANNEL_POST_STARTED_EX,
}

impl VMB_CHANNEL_STATE_CHANGE_CALLBACKS_V5 {
    /// `VMB_CHANNEL_STATE_CHANGE_CALLBACKS_INIT_V5`: no callbacks, null context, Version 5,
    /// Size = sizeof.
    pub const INIT: Self = Self {
        Version: VMB_CHANNEL_STATE_CHANGE_CALLBACKS_VERSION_5,
        Size: size_of::<Self>() as u32,
        CallbackContext: core::ptr::null_mut(),
        EvtChannelOpenedEx: None,
        EvtChannelClosedEx: None,
        EvtChannelSuspendEx: None,
        EvtChannelStartedEx: None,
        EvtChannelPostStartedEx: None,
    };
}

/// `PVMB_CHANNEL_STATE_CHANGE_CALLBACKS`.
pub type PVMB_CHANNEL_STATE_CHANGE_CALLBACKS = *mut VMB_CHANNEL_STATE_CHANGE_CALLBACKS;
