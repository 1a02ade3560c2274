//! Windows-only cross-check: the structs bindgen generates from the WDK's
//! `vmbuskernelmodeclientlibapi.h` against the hand-written ones. Compiled only when `build.rs`
//! generated the bindings (`cfg(kmcl_bindgen)`).
//!
//! In the header's C form each interface embeds the previous version as an anonymous member, so
//! bindgen names only each version's own slots directly; those are compared per version, and
//! the inherited ones follow from the previous version's check plus the total size.

// `unsafe_op_in_unsafe_fn` and `clippy::undocumented_unsafe_blocks` are forbidden workspace-wide
// and cannot be allowed here (E0453); the generated code has no unsafe block once bindgen's
// `impl Default` is turned off (`derive_default(false)` in build.rs).
#[allow(
    dead_code,
    missing_docs,
    non_camel_case_types,
    non_snake_case,
    non_upper_case_globals,
    clippy::all,
    clippy::pedantic
)]
mod generated {
    use wdk_sys::*;

    include!(concat!(env!("OUT_DIR"), "/kmcl_bindings.rs"));
}

use core::mem::offset_of;

use super as ours;

/// The two server interfaces are compared as the sum of their parts: bindgen drops the header's
/// anonymous struct members (a Microsoft extension) and reports a size of 1 for both, while the
/// parts it does see (each client interface, each server-only block) are checked above.
#[test]
fn server_interfaces_are_their_parts() {
    assert_eq!(
        size_of::<ours::KMCL_SERVER_INTERFACE_V1>(),
        size_of::<generated::KMCL_CLIENT_INTERFACE_V1>()
            + size_of::<generated::KMCL_SERVER_ONLY_METHODS>()
    );
    assert_eq!(
        offset_of!(ours::KMCL_SERVER_INTERFACE_V1, Server),
        size_of::<generated::KMCL_CLIENT_INTERFACE_V1>()
    );
    assert_eq!(
        size_of::<ours::KMCL_SERVER_INTERFACE_V5>(),
        size_of::<generated::KMCL_CLIENT_INTERFACE_V5>()
            + size_of::<generated::KMCL_SERVER_ONLY_METHODS_V5>()
    );
    assert_eq!(
        offset_of!(ours::KMCL_SERVER_INTERFACE_V5, Server),
        size_of::<generated::KMCL_CLIENT_INTERFACE_V5>()
    );
}

/// Compares the size of each struct pair and the offset of each listed field.
macro_rules! same_layout {
    ($($ty:ident { $($field:ident),* $(,)? })*) => {$(
        assert_eq!(
            size_of::<generated::$ty>(),
            size_of::<ours::$ty>(),
            concat!("size of ", stringify!($ty))
        );
        $(assert_eq!(
            offset_of!(generated::$ty, $field),
            offset_of!(ours::$ty, $field),
            concat!(stringify!($ty), ".", stringify!($field))
        );)*
    )*};
}

#[test]
fn generated_structs_match_hand_written_layouts() {
    same_layout! {
        KMCL_CLIENT_INTERFACE_V1 {
            VmbChannelAllocate, VmbChannelCleanup, VmbChannelCreateGpadlFromBuffer,
            VmbChannelCreateGpadlFromMdl, VmbChannelDeleteGpadl, VmbChannelDisable,
            VmbChannelEnable, VmbChannelGetInterfaceInstance, VmbChannelGetMmioSpace,
            VmbChannelGetPointer, VmbChannelInitSetClientContextSize, VmbChannelInitSetFlags,
            VmbChannelInitSetFriendlyName, VmbChannelInitSetMaximumExternalData,
            VmbChannelInitSetMaximumPacketSize, VmbChannelInitSetProcessPacketCallbacks,
            VmbChannelInitSetStateChangeCallbacks, VmbChannelPacketComplete,
            VmbChannelPacketDeferToPassive, VmbChannelPacketFail,
            VmbChannelPacketGetExternalData, VmbChannelPause, VmbChannelSendSynchronousRequest,
            VmbChannelSetIncomingProcessingAtPassive, VmbChannelSetInterruptLatency,
            VmbChannelSetPointer, VmbChannelSetTransactionQuota, VmbChannelSizeofPacket,
            VmbChannelStart, VmbClientChannelInitSetRingBufferPageCount,
            VmbClientChannelInitSetTargetPnp, VmbPacketAllocate, VmbPacketFree,
            VmbPacketGetChannel, VmbPacketGetPointer, VmbPacketInitialize, VmbPacketSend,
            VmbPacketSendWithExternalMdl, VmbPacketSendWithExternalPfns,
            VmbPacketSetCompletionRoutine, VmbPacketSetPointer,
        }
        KMCL_CLIENT_INTERFACE_V2 {
            VmbChannelPacketGetClientContext, VmbChannelGetTargetDeviceObject,
            VmbChannelGetParentDeviceObject,
        }
        KMCL_CLIENT_INTERFACE_V3 {
            VmbChannelInitSetBounceBufferSizes, VmbChannelAllocateBounceBuffer,
        }
        KMCL_CLIENT_INTERFACE_V4 {
            VmbChannelInitSetMaximumPacketCount, VmbChannelCreateGpadlFromPfnList,
        }
        KMCL_CLIENT_INTERFACE_V5 {
            VmbChannelInitSetPrimaryChannel, VmbChannelInitialize,
            VmbChannelSetAllowableDpcCpuUsage, VmbClientChannelInitSetTargetProcessorIndex,
            VmbSizeofChannel, VmbChannelInitSetInlinePacketContextSize,
            VmbPacketGetInlinePacketContextPointer, VmbChannelInitSetProcessPacketCallbacksEx,
            VmbPacketSetCompletionRoutineEx,
        }
        KMCL_SERVER_ONLY_METHODS {
            VmbChannelMapGpadl, VmbChannelRestoreFromBuffer, VmbChannelSaveBegin,
            VmbChannelSaveContinue, VmbChannelSaveEnd, VmbChannelUnmapGpadl,
            VmbConvertVmbusHandleToKernelHandle, VmbPacketRestore, VmbServerChannelInitSetFlags,
            VmbServerChannelInitSetMmioMegabytes,
            VmbServerChannelInitSetSaveRestorePacketCallbacks,
            VmbServerChannelInitSetTargetInterfaceId, VmbServerChannelInitSetTargetVtl,
            VmbServerChannelInitSetVmbusHandle,
        }
        KMCL_SERVER_ONLY_METHODS_V5 {
            VmbServerChannelInitSetSaveRestorePacketCallbacksEx,
        }
        VMB_CHANNEL_STATE_CHANGE_CALLBACKS {
            Version, Size, EvtChannelOpened, EvtChannelClosed, EvtChannelSuspend,
            EvtChannelStarted, EvtChannelPostStarted,
        }
        VMB_CHANNEL_STATE_CHANGE_CALLBACKS_V5 {
            Version, Size, CallbackContext, EvtChannelOpenedEx, EvtChannelClosedEx,
            EvtChannelSuspendEx, EvtChannelStartedEx, EvtChannelPostStartedEx,
        }
    }
}
