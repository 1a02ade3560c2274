//! Compile-time layout proofs against `docs/spec/kmcl-abi.md` §3–4: the size of every
//! struct and the offset of every slot on 64-bit targets, and the sizes the spec gives for
//! 32-bit x86. A wrong slot here would make a driver call the wrong KMCL function in kernel
//! mode, so a mismatch fails the build.

#[cfg(target_pointer_width = "64")]
use core::mem::offset_of;

use super::*;

/// Asserts `size_of::<T>() == N` for each pair.
macro_rules! assert_sizes {
    ($($ty:ty = $size:expr),* $(,)?) => {
        $(const _: () = assert!(size_of::<$ty>() == $size, concat!("size of ", stringify!($ty)));)*
    };
}

/// Asserts every slot offset of the five client interfaces, each version inheriting the
/// previous version's slots at the same offsets.
#[cfg(target_pointer_width = "64")]
macro_rules! assert_client_offsets {
    (
        $n1:ident { $($s1:ident = $o1:expr),* $(,)? }
        $n2:ident { $($s2:ident = $o2:expr),* $(,)? }
        $n3:ident { $($s3:ident = $o3:expr),* $(,)? }
        $n4:ident { $($s4:ident = $o4:expr),* $(,)? }
        $n5:ident { $($s5:ident = $o5:expr),* $(,)? }
    ) => {
        assert_offsets!($n1 { $($s1 = $o1,)* });
        assert_offsets!($n2 { $($s1 = $o1,)* $($s2 = $o2,)* });
        assert_offsets!($n3 { $($s1 = $o1,)* $($s2 = $o2,)* $($s3 = $o3,)* });
        assert_offsets!($n4 { $($s1 = $o1,)* $($s2 = $o2,)* $($s3 = $o3,)* $($s4 = $o4,)* });
        assert_offsets!($n5 {
            $($s1 = $o1,)* $($s2 = $o2,)* $($s3 = $o3,)* $($s4 = $o4,)* $($s5 = $o5,)*
        });
    };
}

/// Asserts `offset_of!(T, field) == N` for each field.
#[cfg(target_pointer_width = "64")]
macro_rules! assert_offsets {
    ($ty:ident { $($field:ident = $offset:expr),* $(,)? }) => {
        $(const _: () = assert!(
            offset_of!($ty, $field) == $offset,
            concat!("offset of ", stringify!($ty), ".", stringify!($field))
        );)*
    };
}

#[cfg(target_pointer_width = "64")]
assert_sizes! {
    INTERFACE = 0x20,
    GUID = 16,
    MDL = 0x30,
    UNICODE_STRING = 16,
    LARGE_INTEGER = 8,
    KMCL_CLIENT_INTERFACE_V1 = 0x168,
    KMCL_CLIENT_INTERFACE_V2 = 0x180,
    KMCL_CLIENT_INTERFACE_V3 = 0x190,
    KMCL_CLIENT_INTERFACE_V4 = 0x1A0,
    KMCL_CLIENT_INTERFACE_V5 = 0x1E8,
    KMCL_SERVER_ONLY_METHODS = 0x70,
    KMCL_SERVER_ONLY_METHODS_V5 = 0x78,
    KMCL_SERVER_INTERFACE_V1 = 0x1D8,
    KMCL_SERVER_INTERFACE_V5 = 0x260,
    VMB_CHANNEL_STATE_CHANGE_CALLBACKS = 0x30,
    VMB_CHANNEL_STATE_CHANGE_CALLBACKS_V5 = 0x38,
}

// The portable twin only: wdk-sys's own DEVICE_OBJECT is whatever the WDK says.
#[cfg(all(target_pointer_width = "64", not(kmcl_wdk)))]
assert_sizes! { DEVICE_OBJECT = 0x150 }

#[cfg(target_pointer_width = "32")]
assert_sizes! {
    INTERFACE = 16,
    GUID = 16,
    KMCL_CLIENT_INTERFACE_V1 = 180,
    KMCL_CLIENT_INTERFACE_V2 = 192,
    KMCL_CLIENT_INTERFACE_V3 = 200,
    KMCL_CLIENT_INTERFACE_V4 = 208,
    KMCL_CLIENT_INTERFACE_V5 = 244,
    KMCL_SERVER_ONLY_METHODS = 56,
    KMCL_SERVER_ONLY_METHODS_V5 = 60,
    KMCL_SERVER_INTERFACE_V1 = 236,
    KMCL_SERVER_INTERFACE_V5 = 304,
    VMB_CHANNEL_STATE_CHANGE_CALLBACKS = 28,
    VMB_CHANNEL_STATE_CHANGE_CALLBACKS_V5 = 32,
}

#[cfg(target_pointer_width = "64")]
assert_offsets!(INTERFACE {
    Size = 0,
    Version = 2,
    Context = 8,
    InterfaceReference = 16,
    InterfaceDereference = 24,
});

#[cfg(target_pointer_width = "64")]
assert_offsets!(MDL {
    Next = 0,
    Size = 8,
    MdlFlags = 10,
    Process = 16,
    MappedSystemVa = 24,
    StartVa = 32,
    ByteCount = 40,
    ByteOffset = 44,
});

#[cfg(target_pointer_width = "64")]
assert_client_offsets! {
    KMCL_CLIENT_INTERFACE_V1 {
        InterfaceHeader = 0x00,
        VmbChannelAllocate = 0x20,
        VmbChannelCleanup = 0x28,
        VmbChannelCreateGpadlFromBuffer = 0x30,
        VmbChannelCreateGpadlFromMdl = 0x38,
        VmbChannelDeleteGpadl = 0x40,
        VmbChannelDisable = 0x48,
        VmbChannelEnable = 0x50,
        VmbChannelGetInterfaceInstance = 0x58,
        VmbChannelGetMmioSpace = 0x60,
        VmbChannelGetPointer = 0x68,
        VmbChannelInitSetClientContextSize = 0x70,
        VmbChannelInitSetFlags = 0x78,
        VmbChannelInitSetFriendlyName = 0x80,
        VmbChannelInitSetMaximumExternalData = 0x88,
        VmbChannelInitSetMaximumPacketSize = 0x90,
        VmbChannelInitSetProcessPacketCallbacks = 0x98,
        VmbChannelInitSetStateChangeCallbacks = 0xa0,
        VmbChannelPacketComplete = 0xa8,
        VmbChannelPacketDeferToPassive = 0xb0,
        VmbChannelPacketFail = 0xb8,
        VmbChannelPacketGetExternalData = 0xc0,
        VmbChannelPause = 0xc8,
        VmbChannelSendSynchronousRequest = 0xd0,
        VmbChannelSetIncomingProcessingAtPassive = 0xd8,
        VmbChannelSetInterruptLatency = 0xe0,
        VmbChannelSetPointer = 0xe8,
        VmbChannelSetTransactionQuota = 0xf0,
        VmbChannelSizeofPacket = 0xf8,
        VmbChannelStart = 0x100,
        VmbClientChannelInitSetRingBufferPageCount = 0x108,
        VmbClientChannelInitSetTargetPnp = 0x110,
        VmbPacketAllocate = 0x118,
        VmbPacketFree = 0x120,
        VmbPacketGetChannel = 0x128,
        VmbPacketGetPointer = 0x130,
        VmbPacketInitialize = 0x138,
        VmbPacketSend = 0x140,
        VmbPacketSendWithExternalMdl = 0x148,
        VmbPacketSendWithExternalPfns = 0x150,
        VmbPacketSetCompletionRoutine = 0x158,
        VmbPacketSetPointer = 0x160,
    }
    KMCL_CLIENT_INTERFACE_V2 {
        VmbChannelPacketGetClientContext = 0x168,
        VmbChannelGetTargetDeviceObject = 0x170,
        VmbChannelGetParentDeviceObject = 0x178,
    }
    KMCL_CLIENT_INTERFACE_V3 {
        VmbChannelInitSetBounceBufferSizes = 0x180,
        VmbChannelAllocateBounceBuffer = 0x188,
    }
    KMCL_CLIENT_INTERFACE_V4 {
        VmbChannelInitSetMaximumPacketCount = 0x190,
        VmbChannelCreateGpadlFromPfnList = 0x198,
    }
    KMCL_CLIENT_INTERFACE_V5 {
        VmbChannelInitSetPrimaryChannel = 0x1a0,
        VmbChannelInitialize = 0x1a8,
        VmbChannelSetAllowableDpcCpuUsage = 0x1b0,
        VmbClientChannelInitSetTargetProcessorIndex = 0x1b8,
        VmbSizeofChannel = 0x1c0,
        VmbChannelInitSetInlinePacketContextSize = 0x1c8,
        VmbPacketGetInlinePacketContextPointer = 0x1d0,
        VmbChannelInitSetProcessPacketCallbacksEx = 0x1d8,
        VmbPacketSetCompletionRoutineEx = 0x1e0,
    }
}

#[cfg(target_pointer_width = "64")]
assert_offsets!(KMCL_SERVER_ONLY_METHODS_V5 {
    VmbChannelMapGpadl = 0x00,
    VmbChannelRestoreFromBuffer = 0x08,
    VmbChannelSaveBegin = 0x10,
    VmbChannelSaveContinue = 0x18,
    VmbChannelSaveEnd = 0x20,
    VmbChannelUnmapGpadl = 0x28,
    VmbConvertVmbusHandleToKernelHandle = 0x30,
    VmbPacketRestore = 0x38,
    VmbServerChannelInitSetFlags = 0x40,
    VmbServerChannelInitSetMmioMegabytes = 0x48,
    VmbServerChannelInitSetSaveRestorePacketCallbacks = 0x50,
    VmbServerChannelInitSetTargetInterfaceId = 0x58,
    VmbServerChannelInitSetTargetVtl = 0x60,
    VmbServerChannelInitSetVmbusHandle = 0x68,
    VmbServerChannelInitSetSaveRestorePacketCallbacksEx = 0x70,
});

#[cfg(target_pointer_width = "64")]
assert_offsets!(KMCL_SERVER_ONLY_METHODS {
    VmbChannelMapGpadl = 0x00,
    VmbServerChannelInitSetVmbusHandle = 0x68,
});

#[cfg(target_pointer_width = "64")]
assert_offsets!(KMCL_SERVER_INTERFACE_V1 { Client = 0, Server = 0x168 });

#[cfg(target_pointer_width = "64")]
assert_offsets!(KMCL_SERVER_INTERFACE_V5 { Client = 0, Server = 0x1e8 });

#[cfg(target_pointer_width = "64")]
assert_offsets!(VMB_CHANNEL_STATE_CHANGE_CALLBACKS {
    Version = 0,
    Size = 4,
    EvtChannelOpened = 8,
    EvtChannelClosed = 16,
    EvtChannelSuspend = 24,
    EvtChannelStarted = 32,
    EvtChannelPostStarted = 40,
});

#[cfg(target_pointer_width = "64")]
assert_offsets!(VMB_CHANNEL_STATE_CHANGE_CALLBACKS_V5 {
    Version = 0,
    Size = 4,
    CallbackContext = 8,
    EvtChannelOpenedEx = 16,
    EvtChannelClosedEx = 24,
    EvtChannelSuspendEx = 32,
    EvtChannelStartedEx = 40,
    EvtChannelPostStartedEx = 48,
});

// Every interface fits the USHORT `INTERFACE.Size`, as the header asserts.
const _: () = assert!(size_of::<KMCL_SERVER_INTERFACE_V5>() <= u16::MAX as usize);
