//! KMCL function types (`FN_VMB_*`) and their nullable slot pointers (`PFN_VMB_*`).
//!
//! Each `FN_*` alias is the non-null function pointer; each `PFN_*` alias is `Option` of it, the
//! type of an interface slot (unfilled slots are null). Parameter names, order and widths follow
//! `vmbuskernelmodeclientlibapi.h` exactly (`docs/spec/kmcl-abi.md` §7). Nine functions
//! are `FASTCALL` in the header: that only changes the convention on 32-bit x86; everything else
//! uses the platform default (`extern "system"`).

use super::base::{
    BOOLEAN, GUID, HANDLE, LPCGUID, LPGUID, NTSTATUS, PCUNICODE_STRING, PDEVICE_OBJECT,
    PLARGE_INTEGER, PMDL, PPFN_NUMBER, PVOID, VMBCHANNEL, VMBPACKET, VMBPACKETCOMPLETION,
};
use super::callbacks::{
    PFN_VMB_CHANNEL_PNP_FAILURE, PFN_VMB_CHANNEL_PROCESS_PACKET, PFN_VMB_CHANNEL_PROCESS_PACKET_EX,
    PFN_VMB_CHANNEL_PROCESSING_COMPLETE, PFN_VMB_CHANNEL_PROCESSING_COMPLETE_EX,
    PFN_VMB_CHANNEL_RESTORE_PACKET, PFN_VMB_CHANNEL_RESTORE_PACKET_EX, PFN_VMB_CHANNEL_SAVE_PACKET,
    PFN_VMB_CHANNEL_SAVE_PACKET_EX, PFN_VMB_PACKET_COMPLETION_ROUTINE,
    PFN_VMB_PACKET_COMPLETION_ROUTINE_EX, PVMB_CHANNEL_STATE_CHANGE_CALLBACKS,
};

/// The function-pointer type for a header calling convention: `default` or `fastcall`.
macro_rules! kmcl_abi {
    (default fn($($arg:ident: $ty:ty),*) $(-> $ret:ty)?) => {
        unsafe extern "system" fn($($arg: $ty),*) $(-> $ret)?
    };
    (fastcall fn($($arg:ident: $ty:ty),*) $(-> $ret:ty)?) => {
        kmcl_fastcall!(fn($($arg: $ty),*) $(-> $ret)?)
    };
}

/// `FASTCALL` is a real convention only on 32-bit x86; x64 and ARM64 ignore it.
#[cfg(target_arch = "x86")]
macro_rules! kmcl_fastcall {
    (fn($($arg:ident: $ty:ty),*) $(-> $ret:ty)?) => {
        unsafe extern "fastcall" fn($($arg: $ty),*) $(-> $ret)?
    };
}
#[cfg(not(target_arch = "x86"))]
macro_rules! kmcl_fastcall {
    (fn($($arg:ident: $ty:ty),*) $(-> $ret:ty)?) => {
        unsafe extern "system" fn($($arg: $ty),*) $(-> $ret)?
    };
}

/// Declares `FN_x` (non-null) and `PFN_x` (nullable slot) for each function.
macro_rules! kmcl_functions {
    ($(
        $(#[$doc:meta])*
        $conv:ident $fn_name:ident / $pfn_name:ident = fn($($arg:ident: $ty:ty),* $(,)?) $(-> $ret:ty)?;
    )*) => {$(
        $(#[$doc])*
        pub type $fn_name = kmcl_abi!($conv fn($($arg: $ty),*) $(-> $ret)?);
        #[doc = concat!("Nullable [`", stringify!($fn_name), "`]: the type of its interface slot.")]
        pub type $pfn_name = Option<$fn_name>;
    )*};
}

kmcl_functions! {
    // ---- KMCL_CLIENT_INTERFACE_V1 (WDK 10.0.17134), in slot order ----

    /// `VmbChannelAllocate`: allocates a channel with default parameters and writes it to
    /// `*Channel`. PASSIVE_LEVEL.
    default FN_VMB_CHANNEL_ALLOCATE / PFN_VMB_CHANNEL_ALLOCATE =
        fn(ParentDeviceObject: PDEVICE_OBJECT, IsServer: BOOLEAN, Channel: *mut VMBCHANNEL) -> NTSTATUS;
    /// `VmbChannelCleanup`: frees a channel made by `VmbChannelAllocate` or
    /// `VmbChannelInitialize`. The channel must be disabled.
    default FN_VMB_CHANNEL_CLEANUP / PFN_VMB_CHANNEL_CLEANUP = fn(Channel: VMBCHANNEL);
    /// `VmbChannelCreateGpadlFromBuffer`: probes and locks `ByteCount` bytes at `Buffer` and
    /// describes them to the opposite endpoint; returns the handle in `*GpadlHandle`.
    default FN_VMB_CHANNEL_CREATE_GPADL_FROM_BUFFER / PFN_VMB_CHANNEL_CREATE_GPADL_FROM_BUFFER =
        fn(Channel: VMBCHANNEL, Flags: u32, Buffer: PVOID, ByteCount: u32, GpadlHandle: *mut u32) -> NTSTATUS;
    /// `VmbChannelCreateGpadlFromMdl`: a GPADL over `DataLengthWithinMdl` bytes of an MDL
    /// starting `StartOffsetWithinMdl` bytes in.
    default FN_VMB_CHANNEL_CREATE_GPADL_FROM_MDL / PFN_VMB_CHANNEL_CREATE_GPADL_FROM_MDL =
        fn(Channel: VMBCHANNEL, Flags: u32, Mdl: PMDL, StartOffsetWithinMdl: u32, DataLengthWithinMdl: u32, GpadlHandle: *mut u32) -> NTSTATUS;
    /// `VmbChannelDeleteGpadl`: tears a GPADL down; the memory may be reused when it returns.
    default FN_VMB_CHANNEL_DELETE_GPADL / PFN_VMB_CHANNEL_DELETE_GPADL =
        fn(Channel: VMBCHANNEL, GpadlHandle: u32);
    /// `VmbChannelDisable`: closes the channel and waits until it is torn down.
    default FN_VMB_CHANNEL_DISABLE / PFN_VMB_CHANNEL_DISABLE = fn(Channel: VMBCHANNEL);
    /// `VmbChannelEnable`: opens the channel (client) or offers it (server). Must be inspected.
    default FN_VMB_CHANNEL_ENABLE / PFN_VMB_CHANNEL_ENABLE = fn(Channel: VMBCHANNEL) -> NTSTATUS;
    /// `VmbChannelGetInterfaceInstance`: the instance GUID that identifies the channel.
    default FN_VMB_CHANNEL_GET_INTERFACE_INSTANCE / PFN_VMB_CHANNEL_GET_INTERFACE_INSTANCE =
        fn(Channel: VMBCHANNEL, InterfaceInstance: LPGUID);
    /// `VmbChannelGetMmioSpace`: the channel's MMIO range (address and size in bytes).
    default FN_VMB_CHANNEL_GET_MMIO_SPACE / PFN_VMB_CHANNEL_GET_MMIO_SPACE =
        fn(Channel: VMBCHANNEL, MmioAddress: *mut u64, MmioSize: *mut u64);
    /// `VmbChannelGetPointer`: the pointer stored by `VmbChannelSetPointer`. FASTCALL.
    fastcall FN_VMB_CHANNEL_GET_POINTER / PFN_VMB_CHANNEL_GET_POINTER =
        fn(Channel: VMBCHANNEL) -> PVOID;
    /// `VmbChannelInitSetClientContextSize`: bytes of per-incoming-packet client context.
    default FN_VMB_CHANNEL_INIT_SET_CLIENT_CONTEXT_SIZE / PFN_VMB_CHANNEL_INIT_SET_CLIENT_CONTEXT_SIZE =
        fn(Channel: VMBCHANNEL, ContextSize: u32) -> NTSTATUS;
    /// `VmbChannelInitSetFlags`: `VMBUS_CHANNEL_INIT_FLAG_*`.
    default FN_VMB_CHANNEL_INIT_SET_FLAGS / PFN_VMB_CHANNEL_INIT_SET_FLAGS =
        fn(Channel: VMBCHANNEL, Flags: u32) -> NTSTATUS;
    /// `VmbChannelInitSetFriendlyName`: a name for diagnostics.
    default FN_VMB_CHANNEL_INIT_SET_FRIENDLY_NAME / PFN_VMB_CHANNEL_INIT_SET_FRIENDLY_NAME =
        fn(Channel: VMBCHANNEL, Name: PCUNICODE_STRING) -> NTSTATUS;
    /// `VmbChannelInitSetMaximumExternalData`: largest external data (bytes) and MDL chain length.
    default FN_VMB_CHANNEL_INIT_SET_MAXIMUM_EXTERNAL_DATA / PFN_VMB_CHANNEL_INIT_SET_MAXIMUM_EXTERNAL_DATA =
        fn(Channel: VMBCHANNEL, DataSize: u32, ChainLength: u32) -> NTSTATUS;
    /// `VmbChannelInitSetMaximumPacketSize`: largest packet in bytes (> 0).
    default FN_VMB_CHANNEL_INIT_SET_MAXIMUM_PACKET_SIZE / PFN_VMB_CHANNEL_INIT_SET_MAXIMUM_PACKET_SIZE =
        fn(Channel: VMBCHANNEL, PacketSize: u32) -> NTSTATUS;
    /// `VmbChannelInitSetProcessPacketCallbacks`: the legacy packet callbacks (the second is
    /// optional).
    default FN_VMB_CHANNEL_INIT_SET_PROCESS_PACKET_CALLBACKS / PFN_VMB_CHANNEL_INIT_SET_PROCESS_PACKET_CALLBACKS =
        fn(Channel: VMBCHANNEL, ProcessPacketCallback: PFN_VMB_CHANNEL_PROCESS_PACKET, ProcessingCompleteCallback: PFN_VMB_CHANNEL_PROCESSING_COMPLETE) -> NTSTATUS;
    /// `VmbChannelInitSetStateChangeCallbacks`: a V1 or (cast) V5 callback struct;
    /// `STATUS_INVALID_PARAMETER_2` on a wrong Version/Size.
    default FN_VMB_CHANNEL_INIT_SET_STATE_CHANGE_CALLBACKS / PFN_VMB_CHANNEL_INIT_SET_STATE_CHANGE_CALLBACKS =
        fn(Channel: VMBCHANNEL, StateChangeCallbacks: PVMB_CHANNEL_STATE_CHANGE_CALLBACKS) -> NTSTATUS;
    /// `VmbChannelPacketComplete`: completes an incoming packet, optionally with response bytes.
    default FN_VMB_CHANNEL_PACKET_COMPLETE / PFN_VMB_CHANNEL_PACKET_COMPLETE =
        fn(PacketCompletionContext: VMBPACKETCOMPLETION, PacketCompletionBuffer: PVOID, BufSize: u32);
    /// `VmbChannelPacketDeferToPassive`: re-deliver this packet at PASSIVE_LEVEL. FASTCALL.
    fastcall FN_VMB_CHANNEL_PACKET_DEFER_TO_PASSIVE / PFN_VMB_CHANNEL_PACKET_DEFER_TO_PASSIVE =
        fn(PacketCompletionContext: VMBPACKETCOMPLETION);
    /// `VmbChannelPacketFail`: the packet could not be processed; the channel is torn down.
    /// FASTCALL.
    fastcall FN_VMB_CHANNEL_PACKET_FAIL / PFN_VMB_CHANNEL_PACKET_FAIL =
        fn(PacketCompletionContext: VMBPACKETCOMPLETION);
    /// `VmbChannelPacketGetExternalData`: the MDL chain of the packet's external data. Succeeds
    /// only on 0; `STATUS_PENDING` means return and be called again.
    default FN_VMB_CHANNEL_PACKET_GET_EXTERNAL_DATA / PFN_VMB_CHANNEL_PACKET_GET_EXTERNAL_DATA =
        fn(PacketCompletionContext: VMBPACKETCOMPLETION, Flags: u32, Mdl: *mut PMDL) -> NTSTATUS;
    /// `VmbChannelPause`: stops packet delivery (reversed by `VmbChannelStart`).
    default FN_VMB_CHANNEL_PAUSE / PFN_VMB_CHANNEL_PAUSE = fn(Channel: VMBCHANNEL);
    /// `VmbChannelSendSynchronousRequest`: sends and waits for the completion.
    /// `*CompletionBufferSize` is in/out and a multiple of 8. PASSIVE_LEVEL unless `*Timeout`
    /// is 0 and WAIT_FOR_COMPLETION is clear.
    default FN_VMB_CHANNEL_SEND_SYNCHRONOUS_REQUEST / PFN_VMB_CHANNEL_SEND_SYNCHRONOUS_REQUEST =
        fn(Channel: VMBCHANNEL, Buffer: PVOID, BufferSize: u32, ExternalDataMdl: PMDL, Flags: u32, CompletionBuffer: PVOID, CompletionBufferSize: *mut u32, Timeout: PLARGE_INTEGER) -> NTSTATUS;
    /// `VmbChannelSetIncomingProcessingAtPassive`: deliver incoming packets at PASSIVE_LEVEL.
    default FN_VMB_CHANNEL_SET_INCOMING_PROCESSING_AT_PASSIVE / PFN_VMB_CHANNEL_SET_INCOMING_PROCESSING_AT_PASSIVE =
        fn(Channel: VMBCHANNEL, RequirePassive: BOOLEAN);
    /// `VmbChannelSetInterruptLatency`: monitor interrupt latency in 100 ns units (Microsoft's
    /// page); returns the previous value.
    default FN_VMB_CHANNEL_SET_INTERRUPT_LATENCY / PFN_VMB_CHANNEL_SET_INTERRUPT_LATENCY =
        fn(Channel: VMBCHANNEL, Latency: u16, OriginalLatency: *mut u16) -> NTSTATUS;
    /// `VmbChannelSetPointer`: stores a driver pointer on the channel. FASTCALL.
    fastcall FN_VMB_CHANNEL_SET_POINTER / PFN_VMB_CHANNEL_SET_POINTER =
        fn(Channel: VMBCHANNEL, Pointer: PVOID);
    /// `VmbChannelSetTransactionQuota`: how many incoming packets may be outstanding.
    default FN_VMB_CHANNEL_SET_TRANSACTION_QUOTA / PFN_VMB_CHANNEL_SET_TRANSACTION_QUOTA =
        fn(Channel: VMBCHANNEL, Quota: u32);
    /// `VmbChannelSizeofPacket`: bytes of caller storage `VmbPacketInitialize` needs.
    default FN_VMB_CHANNEL_SIZEOF_PACKET / PFN_VMB_CHANNEL_SIZEOF_PACKET =
        fn(Channel: VMBCHANNEL) -> u32;
    /// `VmbChannelStart`: resumes packet delivery after `VmbChannelPause`.
    default FN_VMB_CHANNEL_START / PFN_VMB_CHANNEL_START = fn(Channel: VMBCHANNEL);
    /// `VmbClientChannelInitSetRingBufferPageCount`: incoming and outgoing ring sizes in pages.
    default FN_VMB_CLIENT_CHANNEL_INIT_SET_RING_BUFFER_PAGE_COUNT / PFN_VMB_CLIENT_CHANNEL_INIT_SET_RING_BUFFER_PAGE_COUNT =
        fn(Channel: VMBCHANNEL, IncomingPageCount: u32, OutgoingPageCount: u32) -> NTSTATUS;
    /// `VmbClientChannelInitSetTargetPnp`: the offer to open (interface type and optional
    /// instance) and an optional PnP-failure callback.
    default FN_VMB_CLIENT_CHANNEL_INIT_SET_TARGET_PNP / PFN_VMB_CLIENT_CHANNEL_INIT_SET_TARGET_PNP =
        fn(Channel: VMBCHANNEL, InterfaceType: LPCGUID, InterfaceInstance: LPCGUID, PnpFailureCallback: PFN_VMB_CHANNEL_PNP_FAILURE) -> NTSTATUS;
    /// `VmbPacketAllocate`: a packet object from the channel's pool; null on failure.
    default FN_VMB_PACKET_ALLOCATE / PFN_VMB_PACKET_ALLOCATE = fn(Channel: VMBCHANNEL) -> VMBPACKET;
    /// `VmbPacketFree`: returns a packet from `VmbPacketAllocate` / `VmbPacketInitialize`.
    default FN_VMB_PACKET_FREE / PFN_VMB_PACKET_FREE = fn(VmbPacket: VMBPACKET);
    /// `VmbPacketGetChannel`: the channel the packet belongs to. FASTCALL.
    fastcall FN_VMB_PACKET_GET_CHANNEL / PFN_VMB_PACKET_GET_CHANNEL =
        fn(PacketObject: VMBPACKET) -> VMBCHANNEL;
    /// `VmbPacketGetPointer`: the pointer stored by `VmbPacketSetPointer`. FASTCALL.
    fastcall FN_VMB_PACKET_GET_POINTER / PFN_VMB_PACKET_GET_POINTER =
        fn(PacketObject: VMBPACKET) -> PVOID;
    /// `VmbPacketInitialize`: makes a packet in caller storage of `ByteCount` bytes
    /// (≥ `VmbChannelSizeofPacket`).
    default FN_VMB_PACKET_INITIALIZE / PFN_VMB_PACKET_INITIALIZE =
        fn(Channel: VMBCHANNEL, VmbPacket: VMBPACKET, ByteCount: u32) -> NTSTATUS;
    /// `VmbPacketSend`: sends `BufferLength` in-band bytes and optional external data.
    default FN_VMB_PACKET_SEND / PFN_VMB_PACKET_SEND =
        fn(PacketObject: VMBPACKET, Buffer: PVOID, BufferLength: u32, ExternalDataMdl: PMDL, Flags: u32) -> NTSTATUS;
    /// `VmbPacketSendWithExternalMdl`: as `VmbPacketSend` with a byte window of the MDL.
    default FN_VMB_PACKET_SEND_WITH_EXTERNAL_MDL / PFN_VMB_PACKET_SEND_WITH_EXTERNAL_MDL =
        fn(PacketObject: VMBPACKET, Buffer: PVOID, BufferLength: u32, ExternalDataMdl: PMDL, MdlOffset: u32, MdlLength: u32, Flags: u32) -> NTSTATUS;
    /// `VmbPacketSendWithExternalPfns`: as `VmbPacketSend` with external data given as PFNs.
    default FN_VMB_PACKET_SEND_WITH_EXTERNAL_PFNS / PFN_VMB_PACKET_SEND_WITH_EXTERNAL_PFNS =
        fn(PacketObject: VMBPACKET, Buffer: PVOID, BufferLength: u32, ExternalDataPfns: PPFN_NUMBER, PfnLength: u32, Flags: u32) -> NTSTATUS;
    /// `VmbPacketSetCompletionRoutine`: the legacy completion routine of the packet.
    default FN_VMB_PACKET_SET_COMPLETION_ROUTINE / PFN_VMB_PACKET_SET_COMPLETION_ROUTINE =
        fn(PacketObject: VMBPACKET, CompletionRoutine: PFN_VMB_PACKET_COMPLETION_ROUTINE);
    /// `VmbPacketSetPointer`: stores a driver pointer on the packet. FASTCALL.
    fastcall FN_VMB_PACKET_SET_POINTER / PFN_VMB_PACKET_SET_POINTER =
        fn(PacketObject: VMBPACKET, Pointer: PVOID);

    // ---- V2 (WDK 10.0.17763) ----

    /// `VmbChannelPacketGetClientContext`: the per-incoming-packet client context. FASTCALL.
    fastcall FN_VMB_CHANNEL_PACKET_GET_CLIENT_CONTEXT / PFN_VMB_CHANNEL_PACKET_GET_CLIENT_CONTEXT =
        fn(PacketCompletionContext: VMBPACKETCOMPLETION) -> PVOID;
    /// `VmbChannelGetTargetDeviceObject`: the device object the channel targets.
    default FN_VMB_CHANNEL_GET_TARGET_DEVICE_OBJECT / PFN_VMB_CHANNEL_GET_TARGET_DEVICE_OBJECT =
        fn(Channel: VMBCHANNEL, TargetDeviceObject: *mut PDEVICE_OBJECT);
    /// `VmbChannelGetParentDeviceObject`: the device object given at allocation.
    default FN_VMB_CHANNEL_GET_PARENT_DEVICE_OBJECT / PFN_VMB_CHANNEL_GET_PARENT_DEVICE_OBJECT =
        fn(Channel: VMBCHANNEL, ParentDeviceObject: *mut PDEVICE_OBJECT);

    // ---- V3 (WDK 10.0.18362) ----

    /// `VmbChannelInitSetBounceBufferSizes`: bounce-buffer sizes, multiples of PAGE_SIZE.
    default FN_VMB_CHANNEL_INIT_SET_BOUNCE_BUFFER_SIZES / PFN_VMB_CHANNEL_INIT_SET_BOUNCE_BUFFER_SIZES =
        fn(Channel: VMBCHANNEL, InitialBufferSize: u32, BufferSizeIncrement: u32, MaximumBufferSize: u32) -> NTSTATUS;
    /// `VmbChannelAllocateBounceBuffer`: grows the bounce buffer to `BufferSize` bytes.
    default FN_VMB_CHANNEL_ALLOCATE_BOUNCE_BUFFER / PFN_VMB_CHANNEL_ALLOCATE_BOUNCE_BUFFER =
        fn(Channel: VMBCHANNEL, BufferSize: u32) -> NTSTATUS;

    // ---- V4 (WDK 10.0.18362) ----

    /// `VmbChannelInitSetMaximumPacketCount`: most outgoing packets in flight (> 0).
    default FN_VMB_CHANNEL_INIT_SET_MAXIMUM_PACKET_COUNT / PFN_VMB_CHANNEL_INIT_SET_MAXIMUM_PACKET_COUNT =
        fn(Channel: VMBCHANNEL, PacketCount: u32) -> NTSTATUS;
    /// `VmbChannelCreateGpadlFromPfnList`: a GPADL over `PfnListCount` pages given by PFN.
    default FN_VMB_CHANNEL_CREATE_GPADL_FROM_PFN_LIST / PFN_VMB_CHANNEL_CREATE_GPADL_FROM_PFN_LIST =
        fn(Channel: VMBCHANNEL, Flags: u32, PfnList: PPFN_NUMBER, PfnListCount: u32, GpadlHandle: *mut u32) -> NTSTATUS;

    // ---- V5 (WDK 10.0.19041) ----

    /// `VmbChannelInitSetPrimaryChannel`: makes this a subchannel (`SubChannelIndex` > 0).
    default FN_VMB_CHANNEL_INIT_SET_PRIMARY_CHANNEL / PFN_VMB_CHANNEL_INIT_SET_PRIMARY_CHANNEL =
        fn(Channel: VMBCHANNEL, PrimaryChannel: VMBCHANNEL, SubChannelIndex: u16) -> NTSTATUS;
    /// `VmbChannelInitialize`: `VmbChannelAllocate` into caller storage of `BufferSize` bytes
    /// (≥ `VmbSizeofChannel()`).
    default FN_VMB_CHANNEL_INITIALIZE / PFN_VMB_CHANNEL_INITIALIZE =
        fn(ParentDeviceObject: PDEVICE_OBJECT, IsServer: BOOLEAN, Channel: VMBCHANNEL, BufferSize: u32) -> NTSTATUS;
    /// `VmbChannelSetAllowableDpcCpuUsage`: percentage 1..=100 of a CPU the channel's DPCs
    /// may use.
    default FN_VMB_CHANNEL_SET_ALLOWABLE_DPC_CPU_USAGE / PFN_VMB_CHANNEL_SET_ALLOWABLE_DPC_CPU_USAGE =
        fn(Channel: VMBCHANNEL, CpuPercentage: u8);
    /// `VmbClientChannelInitSetTargetProcessorIndex`: the processor to target for interrupts.
    default FN_VMB_CLIENT_CHANNEL_INIT_SET_TARGET_PROCESSOR_INDEX / PFN_VMB_CLIENT_CHANNEL_INIT_SET_TARGET_PROCESSOR_INDEX =
        fn(Channel: VMBCHANNEL, ProcessorIndex: u32) -> NTSTATUS;
    /// `VmbSizeofChannel`: bytes of caller storage `VmbChannelInitialize` needs.
    default FN_VMB_SIZEOF_CHANNEL / PFN_VMB_SIZEOF_CHANNEL = fn() -> u32;
    /// `VmbChannelInitSetInlinePacketContextSize`: bytes of context stored inside each
    /// outgoing packet object.
    default FN_VMB_CHANNEL_INIT_SET_INLINE_PACKET_CONTEXT_SIZE / PFN_VMB_CHANNEL_INIT_SET_INLINE_PACKET_CONTEXT_SIZE =
        fn(Channel: VMBCHANNEL, ContextSize: u32) -> NTSTATUS;
    /// `VmbPacketGetInlinePacketContextPointer`: the packet's inline context. FASTCALL.
    fastcall FN_VMB_PACKET_GET_INLINE_PACKET_CONTEXT_POINTER / PFN_VMB_PACKET_GET_INLINE_PACKET_CONTEXT_POINTER =
        fn(PacketObject: VMBPACKET) -> PVOID;
    /// `VmbChannelInitSetProcessPacketCallbacksEx`: the Ex packet callbacks and their context.
    default FN_VMB_CHANNEL_INIT_SET_PROCESS_PACKET_CALLBACKS_EX / PFN_VMB_CHANNEL_INIT_SET_PROCESS_PACKET_CALLBACKS_EX =
        fn(Channel: VMBCHANNEL, CallbackContext: PVOID, ProcessPacketCallbackEx: PFN_VMB_CHANNEL_PROCESS_PACKET_EX, ProcessingCompleteCallbackEx: PFN_VMB_CHANNEL_PROCESSING_COMPLETE_EX) -> NTSTATUS;
    /// `VmbPacketSetCompletionRoutineEx`: the Ex completion routine and its context.
    default FN_VMB_PACKET_SET_COMPLETION_ROUTINE_EX / PFN_VMB_PACKET_SET_COMPLETION_ROUTINE_EX =
        fn(PacketObject: VMBPACKET, CallbackContext: PVOID, CompletionRoutineEx: PFN_VMB_PACKET_COMPLETION_ROUTINE_EX);

    // ---- KMCL_SERVER_ONLY_METHODS (server side only) ----

    /// `VmbChannelMapGpadl` (server side): maps a client GPADL to an MDL.
    default FN_VMB_CHANNEL_MAP_GPADL / PFN_VMB_CHANNEL_MAP_GPADL =
        fn(Channel: VMBCHANNEL, Flags: u32, GpadlHandle: u32, Mdl: *mut PMDL) -> NTSTATUS;
    /// `VmbChannelRestoreFromBuffer` (server side). Must be inspected.
    default FN_VMB_CHANNEL_RESTORE_FROM_BUFFER / PFN_VMB_CHANNEL_RESTORE_FROM_BUFFER =
        fn(Channel: VMBCHANNEL, Buffer: PVOID, BufferSize: u32) -> NTSTATUS;
    /// `VmbChannelSaveBegin` (server side). Must be inspected.
    default FN_VMB_CHANNEL_SAVE_BEGIN / PFN_VMB_CHANNEL_SAVE_BEGIN =
        fn(Channel: VMBCHANNEL) -> NTSTATUS;
    /// `VmbChannelSaveContinue` (server side). Must be inspected.
    default FN_VMB_CHANNEL_SAVE_CONTINUE / PFN_VMB_CHANNEL_SAVE_CONTINUE =
        fn(Channel: VMBCHANNEL, SaveBuffer: PVOID, SaveBufferSize: u32, BytesFilled: *mut u32, BytesRequired: *mut u32) -> NTSTATUS;
    /// `VmbChannelSaveEnd` (server side).
    default FN_VMB_CHANNEL_SAVE_END / PFN_VMB_CHANNEL_SAVE_END = fn(Channel: VMBCHANNEL);
    /// `VmbChannelUnmapGpadl` (server side).
    default FN_VMB_CHANNEL_UNMAP_GPADL / PFN_VMB_CHANNEL_UNMAP_GPADL =
        fn(Channel: VMBCHANNEL, GpadlHandle: u32);
    /// `VmbConvertVmbusHandleToKernelHandle` (server side).
    default FN_VMB_CONVERT_VMBUS_HANDLE_TO_KERNEL_HANDLE / PFN_VMB_CONVERT_VMBUS_HANDLE_TO_KERNEL_HANDLE =
        fn(VmbusHandle: HANDLE, KernelHandle: *mut HANDLE) -> NTSTATUS;
    /// `VmbPacketRestore` (server side).
    default FN_VMB_PACKET_RESTORE / PFN_VMB_PACKET_RESTORE =
        fn(PacketObject: VMBPACKET, Buffer: PVOID, BufferSize: u32) -> NTSTATUS;
    /// `VmbServerChannelInitSetFlags` (server side): `VMBUS_SERVER_CHANNEL_INIT_FLAG_*`.
    default FN_VMB_SERVER_CHANNEL_INIT_SET_FLAGS / PFN_VMB_SERVER_CHANNEL_INIT_SET_FLAGS =
        fn(Channel: VMBCHANNEL, Flags: u32) -> NTSTATUS;
    /// `VmbServerChannelInitSetMmioMegabytes` (server side).
    default FN_VMB_SERVER_CHANNEL_INIT_SET_MMIO_MEGABYTES / PFN_VMB_SERVER_CHANNEL_INIT_SET_MMIO_MEGABYTES =
        fn(Channel: VMBCHANNEL, MmioMegabytes: u16, MmioMegabytesOptional: u16) -> NTSTATUS;
    /// `VmbServerChannelInitSetSaveRestorePacketCallbacks` (server side).
    default FN_VMB_SERVER_CHANNEL_INIT_SET_SAVE_RESTORE_PACKET_CALLBACKS / PFN_VMB_SERVER_CHANNEL_INIT_SET_SAVE_RESTORE_PACKET_CALLBACKS =
        fn(Channel: VMBCHANNEL, SavePacketCallback: PFN_VMB_CHANNEL_SAVE_PACKET, RestorePacketCallback: PFN_VMB_CHANNEL_RESTORE_PACKET) -> NTSTATUS;
    /// `VmbServerChannelInitSetTargetInterfaceId` (server side): both GUIDs by value.
    default FN_VMB_SERVER_CHANNEL_INIT_SET_TARGET_INTERFACE_ID / PFN_VMB_SERVER_CHANNEL_INIT_SET_TARGET_INTERFACE_ID =
        fn(Channel: VMBCHANNEL, InterfaceType: GUID, InterfaceInstance: GUID) -> NTSTATUS;
    /// `VmbServerChannelInitSetTargetVtl` (server side).
    default FN_VMB_SERVER_CHANNEL_INIT_SET_TARGET_VTL / PFN_VMB_SERVER_CHANNEL_INIT_SET_TARGET_VTL =
        fn(Channel: VMBCHANNEL, TargetVtl: u8) -> NTSTATUS;
    /// `VmbServerChannelInitSetVmbusHandle` (server side).
    default FN_VMB_SERVER_CHANNEL_INIT_SET_VMBUS_HANDLE / PFN_VMB_SERVER_CHANNEL_INIT_SET_VMBUS_HANDLE =
        fn(Channel: VMBCHANNEL, VmbusHandle: HANDLE) -> NTSTATUS;
    /// `VmbServerChannelInitSetSaveRestorePacketCallbacksEx` (server side, V5).
    default FN_VMB_SERVER_CHANNEL_INIT_SET_SAVE_RESTORE_PACKET_CALLBACKS_EX / PFN_VMB_SERVER_CHANNEL_INIT_SET_SAVE_RESTORE_PACKET_CALLBACKS_EX =
        fn(Channel: VMBCHANNEL, SaveRestoreContext: PVOID, SavePacketCallbackEx: PFN_VMB_CHANNEL_SAVE_PACKET_EX, RestorePacketCallbackEx: PFN_VMB_CHANNEL_RESTORE_PACKET_EX) -> NTSTATUS;

    // ---- Declared since WDK 10.0.20348 but in no interface struct ----

    /// `VmbChannelCreateGpadl`: declared by the header, carried by no interface slot.
    default FN_VMB_CHANNEL_CREATE_GPADL / PFN_VMB_CHANNEL_CREATE_GPADL =
        fn(Channel: VMBCHANNEL, Flags: u32, PageCount: u32, GpadlHandle: *mut u32) -> NTSTATUS;
    /// `VmbChannelGetSystemAddressForGpadl`: declared by the header, carried by no interface
    /// slot.
    default FN_VMB_CHANNEL_GET_SYSTEM_ADDRESS_FOR_GPADL / PFN_VMB_CHANNEL_GET_SYSTEM_ADDRESS_FOR_GPADL =
        fn(Channel: VMBCHANNEL, Flags: u32, GpadlHandle: u32, SystemAddress: *mut PVOID) -> NTSTATUS;
}
