//! The raw ABI against `docs/spec/kmcl-abi.md`, checked at run time with readable failures.
//!
//! The slot tables are the spec's §3.3 rows (index, decimal offset, name) written out, not
//! computed from a running sum; the walk then proves that the named slots tile the struct with
//! no gap, no overlap and nothing unnamed.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]
#![cfg(target_pointer_width = "64")]

use core::mem::offset_of;

use vmbus_kmcl::sys::*;

/// `(spec index, spec offset, name, offset_of!)` for each listed field.
macro_rules! slots {
    ($ty:ident { $($index:literal @ $offset:literal $field:ident),* $(,)? }) => {
        [$(($index, $offset, stringify!($field), offset_of!($ty, $field))),*]
    };
}

/// Checks each row against `offset_of!`, then that the rows tile `first..size` in 8-byte steps.
fn walk(what: &str, rows: &[(usize, usize, &str, usize)], first: usize, size: usize) {
    for &(index, spec_offset, name, actual) in rows {
        assert_eq!(actual, spec_offset, "{what}: slot #{index} {name}");
    }
    let mut expected = first;
    for (position, &(index, _, name, actual)) in rows.iter().enumerate() {
        assert_eq!(
            actual, expected,
            "{what}: slot #{index} {name} is not the next slot"
        );
        assert_eq!(index, position, "{what}: {name} has spec index {index}");
        expected += 8;
    }
    assert_eq!(
        expected, size,
        "{what}: slots end at {expected}, struct is {size} bytes"
    );
}

#[test]
fn client_interface_v5_every_slot_at_its_spec_offset() {
    let rows = slots!(KMCL_CLIENT_INTERFACE_V5 {
        0 @ 32 VmbChannelAllocate,
        1 @ 40 VmbChannelCleanup,
        2 @ 48 VmbChannelCreateGpadlFromBuffer,
        3 @ 56 VmbChannelCreateGpadlFromMdl,
        4 @ 64 VmbChannelDeleteGpadl,
        5 @ 72 VmbChannelDisable,
        6 @ 80 VmbChannelEnable,
        7 @ 88 VmbChannelGetInterfaceInstance,
        8 @ 96 VmbChannelGetMmioSpace,
        9 @ 104 VmbChannelGetPointer,
        10 @ 112 VmbChannelInitSetClientContextSize,
        11 @ 120 VmbChannelInitSetFlags,
        12 @ 128 VmbChannelInitSetFriendlyName,
        13 @ 136 VmbChannelInitSetMaximumExternalData,
        14 @ 144 VmbChannelInitSetMaximumPacketSize,
        15 @ 152 VmbChannelInitSetProcessPacketCallbacks,
        16 @ 160 VmbChannelInitSetStateChangeCallbacks,
        17 @ 168 VmbChannelPacketComplete,
        18 @ 176 VmbChannelPacketDeferToPassive,
        19 @ 184 VmbChannelPacketFail,
        20 @ 192 VmbChannelPacketGetExternalData,
        21 @ 200 VmbChannelPause,
        22 @ 208 VmbChannelSendSynchronousRequest,
        23 @ 216 VmbChannelSetIncomingProcessingAtPassive,
        24 @ 224 VmbChannelSetInterruptLatency,
        25 @ 232 VmbChannelSetPointer,
        26 @ 240 VmbChannelSetTransactionQuota,
        27 @ 248 VmbChannelSizeofPacket,
        28 @ 256 VmbChannelStart,
        29 @ 264 VmbClientChannelInitSetRingBufferPageCount,
        30 @ 272 VmbClientChannelInitSetTargetPnp,
        31 @ 280 VmbPacketAllocate,
        32 @ 288 VmbPacketFree,
        33 @ 296 VmbPacketGetChannel,
        34 @ 304 VmbPacketGetPointer,
        35 @ 312 VmbPacketInitialize,
        36 @ 320 VmbPacketSend,
        37 @ 328 VmbPacketSendWithExternalMdl,
        38 @ 336 VmbPacketSendWithExternalPfns,
        39 @ 344 VmbPacketSetCompletionRoutine,
        40 @ 352 VmbPacketSetPointer,
        41 @ 360 VmbChannelPacketGetClientContext,
        42 @ 368 VmbChannelGetTargetDeviceObject,
        43 @ 376 VmbChannelGetParentDeviceObject,
        44 @ 384 VmbChannelInitSetBounceBufferSizes,
        45 @ 392 VmbChannelAllocateBounceBuffer,
        46 @ 400 VmbChannelInitSetMaximumPacketCount,
        47 @ 408 VmbChannelCreateGpadlFromPfnList,
        48 @ 416 VmbChannelInitSetPrimaryChannel,
        49 @ 424 VmbChannelInitialize,
        50 @ 432 VmbChannelSetAllowableDpcCpuUsage,
        51 @ 440 VmbClientChannelInitSetTargetProcessorIndex,
        52 @ 448 VmbSizeofChannel,
        53 @ 456 VmbChannelInitSetInlinePacketContextSize,
        54 @ 464 VmbPacketGetInlinePacketContextPointer,
        55 @ 472 VmbChannelInitSetProcessPacketCallbacksEx,
        56 @ 480 VmbPacketSetCompletionRoutineEx,
    });
    assert_eq!(rows.len(), 57, "the spec lists 57 client slots");
    walk(
        "KMCL_CLIENT_INTERFACE_V5",
        &rows,
        32,
        size_of::<KMCL_CLIENT_INTERFACE_V5>(),
    );
    assert_eq!(size_of::<KMCL_CLIENT_INTERFACE_V5>(), 488);
}

#[test]
fn each_client_version_ends_where_the_spec_says() {
    // (struct size, last slot offset) per version, from spec §3.2/§3.3.
    assert_eq!(
        (
            size_of::<KMCL_CLIENT_INTERFACE_V1>(),
            offset_of!(KMCL_CLIENT_INTERFACE_V1, VmbPacketSetPointer)
        ),
        (360, 352)
    );
    assert_eq!(
        (
            size_of::<KMCL_CLIENT_INTERFACE_V2>(),
            offset_of!(KMCL_CLIENT_INTERFACE_V2, VmbChannelGetParentDeviceObject)
        ),
        (384, 376)
    );
    assert_eq!(
        (
            size_of::<KMCL_CLIENT_INTERFACE_V3>(),
            offset_of!(KMCL_CLIENT_INTERFACE_V3, VmbChannelAllocateBounceBuffer)
        ),
        (400, 392)
    );
    assert_eq!(
        (
            size_of::<KMCL_CLIENT_INTERFACE_V4>(),
            offset_of!(KMCL_CLIENT_INTERFACE_V4, VmbChannelCreateGpadlFromPfnList)
        ),
        (416, 408)
    );
    assert_eq!(
        (
            size_of::<KMCL_CLIENT_INTERFACE_V5>(),
            offset_of!(KMCL_CLIENT_INTERFACE_V5, VmbPacketSetCompletionRoutineEx)
        ),
        (488, 480)
    );
    // The query pairs: Size and Version of each struct.
    assert_eq!(
        (
            KMCL_CLIENT_INTERFACE_V1::SIZE,
            KMCL_CLIENT_INTERFACE_V1::VERSION
        ),
        (0x168, 1)
    );
    assert_eq!(
        (
            KMCL_CLIENT_INTERFACE_V2::SIZE,
            KMCL_CLIENT_INTERFACE_V2::VERSION
        ),
        (0x180, 2)
    );
    assert_eq!(
        (
            KMCL_CLIENT_INTERFACE_V3::SIZE,
            KMCL_CLIENT_INTERFACE_V3::VERSION
        ),
        (0x190, 3)
    );
    assert_eq!(
        (
            KMCL_CLIENT_INTERFACE_V4::SIZE,
            KMCL_CLIENT_INTERFACE_V4::VERSION
        ),
        (0x1A0, 4)
    );
    assert_eq!(
        (
            KMCL_CLIENT_INTERFACE_V5::SIZE,
            KMCL_CLIENT_INTERFACE_V5::VERSION
        ),
        (0x1E8, 5)
    );
}

#[test]
fn interface_header_matches_wdm() {
    assert_eq!(size_of::<INTERFACE>(), 32);
    assert_eq!(offset_of!(INTERFACE, Size), 0);
    assert_eq!(offset_of!(INTERFACE, Version), 2);
    assert_eq!(offset_of!(INTERFACE, Context), 8);
    assert_eq!(offset_of!(INTERFACE, InterfaceReference), 16);
    assert_eq!(offset_of!(INTERFACE, InterfaceDereference), 24);
}

#[test]
fn server_blocks_at_their_spec_offsets() {
    let rows = slots!(KMCL_SERVER_ONLY_METHODS_V5 {
        0 @ 0 VmbChannelMapGpadl,
        1 @ 8 VmbChannelRestoreFromBuffer,
        2 @ 16 VmbChannelSaveBegin,
        3 @ 24 VmbChannelSaveContinue,
        4 @ 32 VmbChannelSaveEnd,
        5 @ 40 VmbChannelUnmapGpadl,
        6 @ 48 VmbConvertVmbusHandleToKernelHandle,
        7 @ 56 VmbPacketRestore,
        8 @ 64 VmbServerChannelInitSetFlags,
        9 @ 72 VmbServerChannelInitSetMmioMegabytes,
        10 @ 80 VmbServerChannelInitSetSaveRestorePacketCallbacks,
        11 @ 88 VmbServerChannelInitSetTargetInterfaceId,
        12 @ 96 VmbServerChannelInitSetTargetVtl,
        13 @ 104 VmbServerChannelInitSetVmbusHandle,
        14 @ 112 VmbServerChannelInitSetSaveRestorePacketCallbacksEx,
    });
    walk(
        "KMCL_SERVER_ONLY_METHODS_V5",
        &rows,
        0,
        size_of::<KMCL_SERVER_ONLY_METHODS_V5>(),
    );
    assert_eq!(size_of::<KMCL_SERVER_ONLY_METHODS>(), 112);
    // Server V1: VmbChannelMapGpadl at 360, VmbServerChannelInitSetVmbusHandle at 464, 472 total.
    let v1 = offset_of!(KMCL_SERVER_INTERFACE_V1, Server);
    assert_eq!(
        v1 + offset_of!(KMCL_SERVER_ONLY_METHODS, VmbChannelMapGpadl),
        360
    );
    assert_eq!(
        v1 + offset_of!(KMCL_SERVER_ONLY_METHODS, VmbServerChannelInitSetVmbusHandle),
        464
    );
    assert_eq!(size_of::<KMCL_SERVER_INTERFACE_V1>(), 472);
    // Server V5 (C form): block at 488, the Ex slot at 600, 608 total.
    let v5 = offset_of!(KMCL_SERVER_INTERFACE_V5, Server);
    assert_eq!(v5, 488);
    assert_eq!(
        v5 + offset_of!(
            KMCL_SERVER_ONLY_METHODS_V5,
            VmbServerChannelInitSetSaveRestorePacketCallbacksEx
        ),
        600
    );
    assert_eq!(size_of::<KMCL_SERVER_INTERFACE_V5>(), 608);
}

#[test]
fn state_change_callback_structs_and_their_init() {
    assert_eq!(size_of::<VMB_CHANNEL_STATE_CHANGE_CALLBACKS>(), 48);
    assert_eq!(
        [
            offset_of!(VMB_CHANNEL_STATE_CHANGE_CALLBACKS, Version),
            offset_of!(VMB_CHANNEL_STATE_CHANGE_CALLBACKS, Size),
            offset_of!(VMB_CHANNEL_STATE_CHANGE_CALLBACKS, EvtChannelOpened),
            offset_of!(VMB_CHANNEL_STATE_CHANGE_CALLBACKS, EvtChannelClosed),
            offset_of!(VMB_CHANNEL_STATE_CHANGE_CALLBACKS, EvtChannelSuspend),
            offset_of!(VMB_CHANNEL_STATE_CHANGE_CALLBACKS, EvtChannelStarted),
            offset_of!(VMB_CHANNEL_STATE_CHANGE_CALLBACKS, EvtChannelPostStarted),
        ],
        [0, 4, 8, 16, 24, 32, 40]
    );
    assert_eq!(size_of::<VMB_CHANNEL_STATE_CHANGE_CALLBACKS_V5>(), 56);
    assert_eq!(
        [
            offset_of!(VMB_CHANNEL_STATE_CHANGE_CALLBACKS_V5, Version),
            offset_of!(VMB_CHANNEL_STATE_CHANGE_CALLBACKS_V5, Size),
            offset_of!(VMB_CHANNEL_STATE_CHANGE_CALLBACKS_V5, CallbackContext),
            offset_of!(VMB_CHANNEL_STATE_CHANGE_CALLBACKS_V5, EvtChannelOpenedEx),
            offset_of!(VMB_CHANNEL_STATE_CHANGE_CALLBACKS_V5, EvtChannelClosedEx),
            offset_of!(VMB_CHANNEL_STATE_CHANGE_CALLBACKS_V5, EvtChannelSuspendEx),
            offset_of!(VMB_CHANNEL_STATE_CHANGE_CALLBACKS_V5, EvtChannelStartedEx),
            offset_of!(
                VMB_CHANNEL_STATE_CHANGE_CALLBACKS_V5,
                EvtChannelPostStartedEx
            ),
        ],
        [0, 4, 8, 16, 24, 32, 40, 48]
    );
    // The header's INIT helpers: zeroed, then Version 1 / Size 48 and Version 5 / Size 56.
    let v1 = VMB_CHANNEL_STATE_CHANGE_CALLBACKS::INIT;
    assert_eq!((v1.Version, v1.Size), (1, 48));
    assert!(v1.EvtChannelOpened.is_none() && v1.EvtChannelPostStarted.is_none());
    let v5 = VMB_CHANNEL_STATE_CHANGE_CALLBACKS_V5::INIT;
    assert_eq!((v5.Version, v5.Size), (5, 56));
    assert!(v5.CallbackContext.is_null() && v5.EvtChannelOpenedEx.is_none());
}

/// Formats a GUID the registry way, to compare with the spec's strings.
fn guid_string(g: &GUID) -> String {
    let d = g.Data4;
    format!(
        "{{{:08x}-{:04x}-{:04x}-{:02x}{:02x}-{:02x}{:02x}{:02x}{:02x}{:02x}{:02x}}}",
        g.Data1, g.Data2, g.Data3, d[0], d[1], d[2], d[3], d[4], d[5], d[6], d[7]
    )
}

#[test]
fn guids_equal_the_spec() {
    assert_eq!(
        guid_string(&KMCL_CLIENT_INTERFACE_TYPE),
        "{4aecb860-e161-42bb-a5ca-77f3a9645905}"
    );
    assert_eq!(
        guid_string(&KMCL_SERVER_INTERFACE_TYPE),
        "{83b21474-c5b9-4f65-b5e7-720c692bd371}"
    );
}

#[test]
fn versions_equal_the_spec() {
    assert_eq!(
        [
            KMCL_CLIENT_INTERFACE_VERSION_V1,
            KMCL_CLIENT_INTERFACE_VERSION_V2,
            KMCL_CLIENT_INTERFACE_VERSION_V3,
            KMCL_CLIENT_INTERFACE_VERSION_V4,
            KMCL_CLIENT_INTERFACE_VERSION_V5,
            KMCL_CLIENT_INTERFACE_VERSION_LATEST,
        ],
        [1, 2, 3, 4, 5, 5]
    );
    assert_eq!(
        [
            KMCL_SERVER_INTERFACE_VERSION_V1,
            KMCL_SERVER_INTERFACE_VERSION_V5,
            KMCL_SERVER_INTERFACE_VERSION_LATEST
        ],
        [1, 5, 5]
    );
    assert_eq!(
        [
            VMB_CHANNEL_STATE_CHANGE_CALLBACKS_VERSION_1,
            VMB_CHANNEL_STATE_CHANGE_CALLBACKS_VERSION_5
        ],
        [1, 5]
    );
}

#[test]
fn flags_and_masks_equal_the_spec() {
    let table: &[(&str, u32, u32)] = &[
        (
            "VMBUS_CHANNEL_FORMAT_FLAG_WAIT_FOR_COMPLETION",
            VMBUS_CHANNEL_FORMAT_FLAG_WAIT_FOR_COMPLETION,
            0x1,
        ),
        (
            "VMBUS_CHANNEL_FORMAT_FLAG_FORCE_MDL_LENGTH",
            VMBUS_CHANNEL_FORMAT_FLAG_FORCE_MDL_LENGTH,
            0x2,
        ),
        (
            "VMBUS_CHANNEL_FORMAT_FLAG_PAGED_BUFFER",
            VMBUS_CHANNEL_FORMAT_FLAG_PAGED_BUFFER,
            0x4,
        ),
        (
            "VMBUS_CHANNEL_FORMAT_FLAG_DATA_IN_ONLY",
            VMBUS_CHANNEL_FORMAT_FLAG_DATA_IN_ONLY,
            0x8,
        ),
        (
            "VMBUS_CHANNEL_FORMAT_FLAG_DATA_OUT_ONLY",
            VMBUS_CHANNEL_FORMAT_FLAG_DATA_OUT_ONLY,
            0x10,
        ),
        (
            "VMBUS_CHANNEL_FORMAT_FLAGS",
            VMBUS_CHANNEL_FORMAT_FLAGS,
            0x1F,
        ),
        (
            "VMBUS_CHANNEL_GPADL_FLAG_READ_ONLY",
            VMBUS_CHANNEL_GPADL_FLAG_READ_ONLY,
            0x1,
        ),
        ("VMBUS_CHANNEL_GPADL_FLAGS", VMBUS_CHANNEL_GPADL_FLAGS, 0x1),
        (
            "VMBUS_CHANNEL_INIT_FLAG_IS_PIPE",
            VMBUS_CHANNEL_INIT_FLAG_IS_PIPE,
            0x1,
        ),
        ("VMBUS_CHANNEL_INIT_FLAGS", VMBUS_CHANNEL_INIT_FLAGS, 0x1),
        (
            "VMBUS_SERVER_CHANNEL_INIT_FLAG_LOOPBACK_OFFER",
            VMBUS_SERVER_CHANNEL_INIT_FLAG_LOOPBACK_OFFER,
            0x1,
        ),
        (
            "VMBUS_SERVER_CHANNEL_INIT_FLAG_ENUMERATE_DEVICE_INTERFACE",
            VMBUS_SERVER_CHANNEL_INIT_FLAG_ENUMERATE_DEVICE_INTERFACE,
            0x2,
        ),
        (
            "VMBUS_SERVER_CHANNEL_INIT_FLAG_OFFER_AS_PIPE",
            VMBUS_SERVER_CHANNEL_INIT_FLAG_OFFER_AS_PIPE,
            0x4,
        ),
        (
            "VMBUS_SERVER_CHANNEL_INIT_FLAG_FORCE_NEW_CHANNEL",
            VMBUS_SERVER_CHANNEL_INIT_FLAG_FORCE_NEW_CHANNEL,
            0x8,
        ),
        (
            "VMBUS_SERVER_CHANNEL_INIT_FLAG_TLNPI_PROVIDER_OFFER",
            VMBUS_SERVER_CHANNEL_INIT_FLAG_TLNPI_PROVIDER_OFFER,
            0x10,
        ),
        (
            "VMBUS_SERVER_CHANNEL_INIT_FLAGS",
            VMBUS_SERVER_CHANNEL_INIT_FLAGS,
            0x1F,
        ),
        (
            "VMBUS_CHANNEL_PROCESS_PACKET_FLAG_EXTERNAL_DATA",
            VMBUS_CHANNEL_PROCESS_PACKET_FLAG_EXTERNAL_DATA,
            0x1,
        ),
        (
            "VMBUS_CHANNEL_PROCESS_PACKET_FLAGS",
            VMBUS_CHANNEL_PROCESS_PACKET_FLAGS,
            0x1,
        ),
        (
            "VMBUS_CHANNEL_PACKET_EXTERNAL_DATA_FLAG_READ_ONLY",
            VMBUS_CHANNEL_PACKET_EXTERNAL_DATA_FLAG_READ_ONLY,
            0x1,
        ),
        (
            "VMBUS_CHANNEL_PACKET_EXTERNAL_DATA_FLAGS",
            VMBUS_CHANNEL_PACKET_EXTERNAL_DATA_FLAGS,
            0x1,
        ),
        (
            "VMBUS_SERVER_CHANNEL_INIT_MAXIMUM_OFFER_DATA",
            VMBUS_SERVER_CHANNEL_INIT_MAXIMUM_OFFER_DATA,
            120,
        ),
    ];
    for &(name, actual, spec) in table {
        assert_eq!(actual, spec, "{name}");
    }
    // Each mask is exactly the union of its flags.
    assert_eq!(
        VMBUS_CHANNEL_FORMAT_FLAG_WAIT_FOR_COMPLETION
            | VMBUS_CHANNEL_FORMAT_FLAG_FORCE_MDL_LENGTH
            | VMBUS_CHANNEL_FORMAT_FLAG_PAGED_BUFFER
            | VMBUS_CHANNEL_FORMAT_FLAG_DATA_IN_ONLY
            | VMBUS_CHANNEL_FORMAT_FLAG_DATA_OUT_ONLY,
        VMBUS_CHANNEL_FORMAT_FLAGS
    );
}

#[test]
fn limits_equal_the_spec() {
    assert_eq!(KMCL_RING_BUFFER_MTU, 524_280);
    assert_eq!(
        KMCL_RING_BUFFER_MTU,
        u32::from(u16::MAX) * 8,
        "len8 is a u16 count of 8-byte units"
    );
    assert_eq!(KMCL_PACKET_HEADER_MAX_BYTES, 32);
    assert_eq!(KMCL_EXTERNAL_DATA_BYTES_PER_ENTRY, 8);
    assert_eq!(KMCL_COMPLETION_BUFFER_ALIGNMENT, 8);
    assert_eq!(KMCL_PAGE_SIZE, 4096);
    assert_eq!((KMCL_DPC_CPU_USAGE_MIN, KMCL_DPC_CPU_USAGE_MAX), (1, 100));
    assert_eq!(KMCL_SUBCHANNEL_INDEX_MIN, 1);
}

#[test]
fn status_codes_equal_ntstatus_h() {
    let table: &[(&str, NTSTATUS, u32)] = &[
        ("STATUS_SUCCESS", STATUS_SUCCESS, 0),
        ("STATUS_PENDING", STATUS_PENDING, 0x103),
        (
            "STATUS_BUFFER_OVERFLOW",
            STATUS_BUFFER_OVERFLOW,
            0x8000_0005,
        ),
        (
            "STATUS_MORE_PROCESSING_REQUIRED",
            STATUS_MORE_PROCESSING_REQUIRED,
            0xC000_0016,
        ),
        (
            "STATUS_BUFFER_TOO_SMALL",
            STATUS_BUFFER_TOO_SMALL,
            0xC000_0023,
        ),
        (
            "STATUS_INSUFFICIENT_RESOURCES",
            STATUS_INSUFFICIENT_RESOURCES,
            0xC000_009A,
        ),
        ("STATUS_NOT_SUPPORTED", STATUS_NOT_SUPPORTED, 0xC000_00BB),
        (
            "STATUS_INVALID_PARAMETER",
            STATUS_INVALID_PARAMETER,
            0xC000_000D,
        ),
        (
            "STATUS_INVALID_PARAMETER_1",
            STATUS_INVALID_PARAMETER_1,
            0xC000_00EF,
        ),
        (
            "STATUS_INVALID_PARAMETER_2",
            STATUS_INVALID_PARAMETER_2,
            0xC000_00F0,
        ),
        (
            "STATUS_INVALID_PARAMETER_3",
            STATUS_INVALID_PARAMETER_3,
            0xC000_00F1,
        ),
        (
            "STATUS_INVALID_PARAMETER_4",
            STATUS_INVALID_PARAMETER_4,
            0xC000_00F2,
        ),
        ("STATUS_CANCELLED", STATUS_CANCELLED, 0xC000_0120),
        ("STATUS_DEVICE_REMOVED", STATUS_DEVICE_REMOVED, 0xC000_02B6),
    ];
    for &(name, actual, spec) in table {
        assert_eq!(actual as u32, spec, "{name}");
    }
}

#[test]
fn handles_are_distinct_pointer_types() {
    // Distinct types: a VMBPACKET cannot be passed where a VMBCHANNEL is expected (compile-time),
    // and each is exactly one pointer wide.
    fn takes_channel(_: VMBCHANNEL) {}
    takes_channel(core::ptr::null_mut::<VMBCHANNEL__>());
    assert_eq!(size_of::<VMBCHANNEL>(), 8);
    assert_eq!(size_of::<VMBPACKET>(), 8);
    assert_eq!(size_of::<VMBPACKETCOMPLETION>(), 8);
    assert_ne!(
        core::any::TypeId::of::<VMBCHANNEL__>(),
        core::any::TypeId::of::<VMBPACKET__>()
    );
    assert_ne!(
        core::any::TypeId::of::<VMBPACKET__>(),
        core::any::TypeId::of::<VMBPACKETCOMPLETION__>()
    );
}

#[test]
fn null_interfaces_have_no_slot_filled() {
    let v5 = KMCL_CLIENT_INTERFACE_V5::NULL;
    assert!(v5.VmbChannelAllocate.is_none() && v5.VmbPacketSetCompletionRoutineEx.is_none());
    assert_eq!(
        (v5.InterfaceHeader.Size, v5.InterfaceHeader.Version),
        (0, 0)
    );
}
