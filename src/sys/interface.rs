//! The KMCL interface structs: `KMCL_CLIENT_INTERFACE_V1` … `V5`, the server-only method blocks
//! and the server interfaces, with their GUIDs and version numbers.
//!
//! Each client struct is flat: the 32-byte `INTERFACE` header, then every slot of that version in
//! header order (V1's 41 slots are alphabetical; later versions append). The C header embeds the
//! previous version as an anonymous member; the layout is the same. Offsets are proven in
//! `sys::layout` against `docs/spec/kmcl-abi.md` §3.

use super::base::{GUID, INTERFACE};
use super::functions::*;

/// `KMCL_CLIENT_INTERFACE_TYPE` {4aecb860-e161-42bb-a5ca-77f3a9645905}: the `InterfaceType` to
/// query the client interface with.
pub const KMCL_CLIENT_INTERFACE_TYPE: GUID = GUID {
    Data1: 0x4aec_b860,
    Data2: 0xe161,
    Data3: 0x42bb,
    Data4: [0xa5, 0xca, 0x77, 0xf3, 0xa9, 0x64, 0x59, 0x05],
};

/// `KMCL_SERVER_INTERFACE_TYPE` {83b21474-c5b9-4f65-b5e7-720c692bd371} (server side).
pub const KMCL_SERVER_INTERFACE_TYPE: GUID = GUID {
    Data1: 0x83b2_1474,
    Data2: 0xc5b9,
    Data3: 0x4f65,
    Data4: [0xb5, 0xe7, 0x72, 0x0c, 0x69, 0x2b, 0xd3, 0x71],
};

/// `KMCL_CLIENT_INTERFACE_VERSION_V1` (WDK 10.0.17134, Windows 10 1803).
pub const KMCL_CLIENT_INTERFACE_VERSION_V1: u16 = 1;
/// `KMCL_CLIENT_INTERFACE_VERSION_V2` (WDK 10.0.17763).
pub const KMCL_CLIENT_INTERFACE_VERSION_V2: u16 = 2;
/// `KMCL_CLIENT_INTERFACE_VERSION_V3` (WDK 10.0.18362).
pub const KMCL_CLIENT_INTERFACE_VERSION_V3: u16 = 3;
/// `KMCL_CLIENT_INTERFACE_VERSION_V4` (WDK 10.0.18362).
pub const KMCL_CLIENT_INTERFACE_VERSION_V4: u16 = 4;
/// `KMCL_CLIENT_INTERFACE_VERSION_V5` (WDK 10.0.19041).
pub const KMCL_CLIENT_INTERFACE_VERSION_V5: u16 = 5;
/// `KMCL_CLIENT_INTERFACE_VERSION_LATEST` as of WDK 10.0.20348–10.0.22621. Pair a version with
/// the size of the struct of that version, never LATEST with `sizeof(V1)`.
pub const KMCL_CLIENT_INTERFACE_VERSION_LATEST: u16 = KMCL_CLIENT_INTERFACE_VERSION_V5;
/// `KMCL_SERVER_INTERFACE_VERSION_V1` (server side).
pub const KMCL_SERVER_INTERFACE_VERSION_V1: u16 = 1;
/// `KMCL_SERVER_INTERFACE_VERSION_V5` (server side; versions 2–4 never shipped).
pub const KMCL_SERVER_INTERFACE_VERSION_V5: u16 = 5;
/// `KMCL_SERVER_INTERFACE_VERSION_LATEST` (server side).
pub const KMCL_SERVER_INTERFACE_VERSION_LATEST: u16 = KMCL_SERVER_INTERFACE_VERSION_V5;

/// One `#[repr(C)]` struct of function-pointer slots, optionally led by the `INTERFACE` header,
/// with an all-null constant.
macro_rules! slot_struct {
    (
        $(#[$meta:meta])* $name:ident [$($header:ident)?] { $($slot:ident: $pfn:ident),* $(,)? }
    ) => {
        $(#[$meta])*
        #[repr(C)]
        #[derive(Clone, Copy, Debug)]
        #[allow(non_snake_case)]
        pub struct $name {
            $(
                /// The `INTERFACE` header: `Size`, `Version`, `Context` and the reference /
                /// dereference routines of the provider.
                pub $header: INTERFACE,
            )?
            $(
                #[doc = concat!("`", stringify!($slot), "`: see [`", stringify!($pfn), "`].")]
                pub $slot: $pfn,
            )*
        }

        impl $name {
            /// Every slot null (and a zero header): the buffer to pass to an interface query.
            pub const NULL: Self = Self {
                $(
                    $header: INTERFACE {
                        Size: 0,
                        Version: 0,
                        Context: core::ptr::null_mut(),
                        InterfaceReference: None,
                        InterfaceDereference: None,
                    },
                )?
                $($slot: None,)*
            };
        }
    };
}

/// The five client interfaces, each the previous one plus its own slots.
macro_rules! client_interfaces {
    (
        $(#[$m1:meta])* $n1:ident = $v1:ident { $($s1:ident: $t1:ident),* $(,)? }
        $(#[$m2:meta])* $n2:ident = $v2:ident { $($s2:ident: $t2:ident),* $(,)? }
        $(#[$m3:meta])* $n3:ident = $v3:ident { $($s3:ident: $t3:ident),* $(,)? }
        $(#[$m4:meta])* $n4:ident = $v4:ident { $($s4:ident: $t4:ident),* $(,)? }
        $(#[$m5:meta])* $n5:ident = $v5:ident { $($s5:ident: $t5:ident),* $(,)? }
    ) => {
        slot_struct!($(#[$m1])* $n1 [InterfaceHeader] { $($s1: $t1,)* });
        slot_struct!($(#[$m2])* $n2 [InterfaceHeader] { $($s1: $t1,)* $($s2: $t2,)* });
        slot_struct!($(#[$m3])* $n3 [InterfaceHeader] { $($s1: $t1,)* $($s2: $t2,)* $($s3: $t3,)* });
        slot_struct!($(#[$m4])* $n4 [InterfaceHeader] {
            $($s1: $t1,)* $($s2: $t2,)* $($s3: $t3,)* $($s4: $t4,)*
        });
        slot_struct!($(#[$m5])* $n5 [InterfaceHeader] {
            $($s1: $t1,)* $($s2: $t2,)* $($s3: $t3,)* $($s4: $t4,)* $($s5: $t5,)*
        });
        client_interfaces!(@consts $n1 $v1);
        client_interfaces!(@consts $n2 $v2);
        client_interfaces!(@consts $n3 $v3);
        client_interfaces!(@consts $n4 $v4);
        client_interfaces!(@consts $n5 $v5);
    };
    (@consts $name:ident $version:ident) => {
        impl $name {
            /// `INTERFACE.Version` to request this struct with.
            pub const VERSION: u16 = $version;
            /// `INTERFACE.Size` to request this struct with: its size in bytes.
            pub const SIZE: u16 = size_of::<Self>() as u16;
        }
    };
}

client_interfaces! {
    /// `KMCL_CLIENT_INTERFACE_V1`: 41 slots, 360 bytes on x64 (WDK 10.0.17134).
    KMCL_CLIENT_INTERFACE_V1 = KMCL_CLIENT_INTERFACE_VERSION_V1 {
        VmbChannelAllocate: PFN_VMB_CHANNEL_ALLOCATE,
        VmbChannelCleanup: PFN_VMB_CHANNEL_CLEANUP,
        VmbChannelCreateGpadlFromBuffer: PFN_VMB_CHANNEL_CREATE_GPADL_FROM_BUFFER,
        VmbChannelCreateGpadlFromMdl: PFN_VMB_CHANNEL_CREATE_GPADL_FROM_MDL,
        VmbChannelDeleteGpadl: PFN_VMB_CHANNEL_DELETE_GPADL,
        VmbChannelDisable: PFN_VMB_CHANNEL_DISABLE,
        VmbChannelEnable: PFN_VMB_CHANNEL_ENABLE,
        VmbChannelGetInterfaceInstance: PFN_VMB_CHANNEL_GET_INTERFACE_INSTANCE,
        VmbChannelGetMmioSpace: PFN_VMB_CHANNEL_GET_MMIO_SPACE,
        VmbChannelGetPointer: PFN_VMB_CHANNEL_GET_POINTER,
        VmbChannelInitSetClientContextSize: PFN_VMB_CHANNEL_INIT_SET_CLIENT_CONTEXT_SIZE,
        VmbChannelInitSetFlags: PFN_VMB_CHANNEL_INIT_SET_FLAGS,
        VmbChannelInitSetFriendlyName: PFN_VMB_CHANNEL_INIT_SET_FRIENDLY_NAME,
        VmbChannelInitSetMaximumExternalData: PFN_VMB_CHANNEL_INIT_SET_MAXIMUM_EXTERNAL_DATA,
        VmbChannelInitSetMaximumPacketSize: PFN_VMB_CHANNEL_INIT_SET_MAXIMUM_PACKET_SIZE,
        VmbChannelInitSetProcessPacketCallbacks: PFN_VMB_CHANNEL_INIT_SET_PROCESS_PACKET_CALLBACKS,
        VmbChannelInitSetStateChangeCallbacks: PFN_VMB_CHANNEL_INIT_SET_STATE_CHANGE_CALLBACKS,
        VmbChannelPacketComplete: PFN_VMB_CHANNEL_PACKET_COMPLETE,
        VmbChannelPacketDeferToPassive: PFN_VMB_CHANNEL_PACKET_DEFER_TO_PASSIVE,
        VmbChannelPacketFail: PFN_VMB_CHANNEL_PACKET_FAIL,
        VmbChannelPacketGetExternalData: PFN_VMB_CHANNEL_PACKET_GET_EXTERNAL_DATA,
        VmbChannelPause: PFN_VMB_CHANNEL_PAUSE,
        VmbChannelSendSynchronousRequest: PFN_VMB_CHANNEL_SEND_SYNCHRONOUS_REQUEST,
        VmbChannelSetIncomingProcessingAtPassive: PFN_VMB_CHANNEL_SET_INCOMING_PROCESSING_AT_PASSIVE,
        VmbChannelSetInterruptLatency: PFN_VMB_CHANNEL_SET_INTERRUPT_LATENCY,
        VmbChannelSetPointer: PFN_VMB_CHANNEL_SET_POINTER,
        VmbChannelSetTransactionQuota: PFN_VMB_CHANNEL_SET_TRANSACTION_QUOTA,
        VmbChannelSizeofPacket: PFN_VMB_CHANNEL_SIZEOF_PACKET,
        VmbChannelStart: PFN_VMB_CHANNEL_START,
        VmbClientChannelInitSetRingBufferPageCount: PFN_VMB_CLIENT_CHANNEL_INIT_SET_RING_BUFFER_PAGE_COUNT,
        VmbClientChannelInitSetTargetPnp: PFN_VMB_CLIENT_CHANNEL_INIT_SET_TARGET_PNP,
        VmbPacketAllocate: PFN_VMB_PACKET_ALLOCATE,
        VmbPacketFree: PFN_VMB_PACKET_FREE,
        VmbPacketGetChannel: PFN_VMB_PACKET_GET_CHANNEL,
        VmbPacketGetPointer: PFN_VMB_PACKET_GET_POINTER,
        VmbPacketInitialize: PFN_VMB_PACKET_INITIALIZE,
        VmbPacketSend: PFN_VMB_PACKET_SEND,
        VmbPacketSendWithExternalMdl: PFN_VMB_PACKET_SEND_WITH_EXTERNAL_MDL,
        VmbPacketSendWithExternalPfns: PFN_VMB_PACKET_SEND_WITH_EXTERNAL_PFNS,
        VmbPacketSetCompletionRoutine: PFN_VMB_PACKET_SET_COMPLETION_ROUTINE,
        VmbPacketSetPointer: PFN_VMB_PACKET_SET_POINTER,
    }
    /// `KMCL_CLIENT_INTERFACE_V2`: V1 + 3 slots, 384 bytes on x64 (WDK 10.0.17763).
    KMCL_CLIENT_INTERFACE_V2 = KMCL_CLIENT_INTERFACE_VERSION_V2 {
        VmbChannelPacketGetClientContext: PFN_VMB_CHANNEL_PACKET_GET_CLIENT_CONTEXT,
        VmbChannelGetTargetDeviceObject: PFN_VMB_CHANNEL_GET_TARGET_DEVICE_OBJECT,
        VmbChannelGetParentDeviceObject: PFN_VMB_CHANNEL_GET_PARENT_DEVICE_OBJECT,
    }
    /// `KMCL_CLIENT_INTERFACE_V3`: V2 + 2 slots, 400 bytes on x64 (WDK 10.0.18362).
    KMCL_CLIENT_INTERFACE_V3 = KMCL_CLIENT_INTERFACE_VERSION_V3 {
        VmbChannelInitSetBounceBufferSizes: PFN_VMB_CHANNEL_INIT_SET_BOUNCE_BUFFER_SIZES,
        VmbChannelAllocateBounceBuffer: PFN_VMB_CHANNEL_ALLOCATE_BOUNCE_BUFFER,
    }
    /// `KMCL_CLIENT_INTERFACE_V4`: V3 + 2 slots, 416 bytes on x64 (WDK 10.0.18362).
    KMCL_CLIENT_INTERFACE_V4 = KMCL_CLIENT_INTERFACE_VERSION_V4 {
        VmbChannelInitSetMaximumPacketCount: PFN_VMB_CHANNEL_INIT_SET_MAXIMUM_PACKET_COUNT,
        VmbChannelCreateGpadlFromPfnList: PFN_VMB_CHANNEL_CREATE_GPADL_FROM_PFN_LIST,
    }
    /// `KMCL_CLIENT_INTERFACE_V5`: V4 + 9 slots = 57 client slots, 488 bytes on x64
    /// (WDK 10.0.19041).
    KMCL_CLIENT_INTERFACE_V5 = KMCL_CLIENT_INTERFACE_VERSION_V5 {
        VmbChannelInitSetPrimaryChannel: PFN_VMB_CHANNEL_INIT_SET_PRIMARY_CHANNEL,
        VmbChannelInitialize: PFN_VMB_CHANNEL_INITIALIZE,
        VmbChannelSetAllowableDpcCpuUsage: PFN_VMB_CHANNEL_SET_ALLOWABLE_DPC_CPU_USAGE,
        VmbClientChannelInitSetTargetProcessorIndex: PFN_VMB_CLIENT_CHANNEL_INIT_SET_TARGET_PROCESSOR_INDEX,
        VmbSizeofChannel: PFN_VMB_SIZEOF_CHANNEL,
        VmbChannelInitSetInlinePacketContextSize: PFN_VMB_CHANNEL_INIT_SET_INLINE_PACKET_CONTEXT_SIZE,
        VmbPacketGetInlinePacketContextPointer: PFN_VMB_PACKET_GET_INLINE_PACKET_CONTEXT_POINTER,
        VmbChannelInitSetProcessPacketCallbacksEx: PFN_VMB_CHANNEL_INIT_SET_PROCESS_PACKET_CALLBACKS_EX,
        VmbPacketSetCompletionRoutineEx: PFN_VMB_PACKET_SET_COMPLETION_ROUTINE_EX,
    }
}

slot_struct! {
    /// `KMCL_SERVER_ONLY_METHODS` (server side): 14 slots, 112 bytes on x64, alphabetical.
    KMCL_SERVER_ONLY_METHODS [] {
        VmbChannelMapGpadl: PFN_VMB_CHANNEL_MAP_GPADL,
        VmbChannelRestoreFromBuffer: PFN_VMB_CHANNEL_RESTORE_FROM_BUFFER,
        VmbChannelSaveBegin: PFN_VMB_CHANNEL_SAVE_BEGIN,
        VmbChannelSaveContinue: PFN_VMB_CHANNEL_SAVE_CONTINUE,
        VmbChannelSaveEnd: PFN_VMB_CHANNEL_SAVE_END,
        VmbChannelUnmapGpadl: PFN_VMB_CHANNEL_UNMAP_GPADL,
        VmbConvertVmbusHandleToKernelHandle: PFN_VMB_CONVERT_VMBUS_HANDLE_TO_KERNEL_HANDLE,
        VmbPacketRestore: PFN_VMB_PACKET_RESTORE,
        VmbServerChannelInitSetFlags: PFN_VMB_SERVER_CHANNEL_INIT_SET_FLAGS,
        VmbServerChannelInitSetMmioMegabytes: PFN_VMB_SERVER_CHANNEL_INIT_SET_MMIO_MEGABYTES,
        VmbServerChannelInitSetSaveRestorePacketCallbacks: PFN_VMB_SERVER_CHANNEL_INIT_SET_SAVE_RESTORE_PACKET_CALLBACKS,
        VmbServerChannelInitSetTargetInterfaceId: PFN_VMB_SERVER_CHANNEL_INIT_SET_TARGET_INTERFACE_ID,
        VmbServerChannelInitSetTargetVtl: PFN_VMB_SERVER_CHANNEL_INIT_SET_TARGET_VTL,
        VmbServerChannelInitSetVmbusHandle: PFN_VMB_SERVER_CHANNEL_INIT_SET_VMBUS_HANDLE,
    }
}

slot_struct! {
    /// `KMCL_SERVER_ONLY_METHODS_V5` (server side): the 14 server-only slots plus one,
    /// 120 bytes on x64.
    KMCL_SERVER_ONLY_METHODS_V5 [] {
        VmbChannelMapGpadl: PFN_VMB_CHANNEL_MAP_GPADL,
        VmbChannelRestoreFromBuffer: PFN_VMB_CHANNEL_RESTORE_FROM_BUFFER,
        VmbChannelSaveBegin: PFN_VMB_CHANNEL_SAVE_BEGIN,
        VmbChannelSaveContinue: PFN_VMB_CHANNEL_SAVE_CONTINUE,
        VmbChannelSaveEnd: PFN_VMB_CHANNEL_SAVE_END,
        VmbChannelUnmapGpadl: PFN_VMB_CHANNEL_UNMAP_GPADL,
        VmbConvertVmbusHandleToKernelHandle: PFN_VMB_CONVERT_VMBUS_HANDLE_TO_KERNEL_HANDLE,
        VmbPacketRestore: PFN_VMB_PACKET_RESTORE,
        VmbServerChannelInitSetFlags: PFN_VMB_SERVER_CHANNEL_INIT_SET_FLAGS,
        VmbServerChannelInitSetMmioMegabytes: PFN_VMB_SERVER_CHANNEL_INIT_SET_MMIO_MEGABYTES,
        VmbServerChannelInitSetSaveRestorePacketCallbacks: PFN_VMB_SERVER_CHANNEL_INIT_SET_SAVE_RESTORE_PACKET_CALLBACKS,
        VmbServerChannelInitSetTargetInterfaceId: PFN_VMB_SERVER_CHANNEL_INIT_SET_TARGET_INTERFACE_ID,
        VmbServerChannelInitSetTargetVtl: PFN_VMB_SERVER_CHANNEL_INIT_SET_TARGET_VTL,
        VmbServerChannelInitSetVmbusHandle: PFN_VMB_SERVER_CHANNEL_INIT_SET_VMBUS_HANDLE,
        VmbServerChannelInitSetSaveRestorePacketCallbacksEx: PFN_VMB_SERVER_CHANNEL_INIT_SET_SAVE_RESTORE_PACKET_CALLBACKS_EX,
    }
}

/// `KMCL_SERVER_INTERFACE_V1` (server side): the V1 client slots, then the server-only block;
/// 472 bytes on x64 in both the C and the C++ form of the header.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
#[allow(non_snake_case)]
pub struct KMCL_SERVER_INTERFACE_V1 {
    /// The client part (anonymous member in C, base class in C++).
    pub Client: KMCL_CLIENT_INTERFACE_V1,
    /// The server-only methods, starting at byte 360 on x64.
    pub Server: KMCL_SERVER_ONLY_METHODS,
}

/// `KMCL_SERVER_INTERFACE_V5` (server side), **C form**: the V5 client slots, then
/// `KMCL_SERVER_ONLY_METHODS_V5`; 608 bytes on x64. The header's C++ form inherits the non-V5
/// server block instead and is 600 bytes; which size vmbkmcl.sys checks is not documented.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
#[allow(non_snake_case)]
pub struct KMCL_SERVER_INTERFACE_V5 {
    /// The client part.
    pub Client: KMCL_CLIENT_INTERFACE_V5,
    /// The server-only methods, starting at byte 488 on x64.
    pub Server: KMCL_SERVER_ONLY_METHODS_V5,
}
