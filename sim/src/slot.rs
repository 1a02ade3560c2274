//! The 57 client slots of `KMCL_CLIENT_INTERFACE_V5`, by name.

use core::fmt;

use crate::bus::InterfaceVersion;

/// What a slot returns, which decides how an injected fault shows.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SlotReturn {
    /// `NTSTATUS`: an injected fault returns the chosen status.
    Status,
    /// `VMBPACKET` (`VmbPacketAllocate`): an injected fault returns null.
    Packet,
    /// Anything else (`VOID`, a pointer, a size): faults cannot be injected.
    Other,
}

macro_rules! slots {
    ($( $(#[$doc:meta])* $name:ident = $version:ident, $ret:ident; )*) => {
        /// One client slot of the KMCL interface, in slot order (V1's 41 alphabetical slots, then
        /// V2–V5). Used for fault injection ([`Faults::fail_nth`](crate::Faults::fail_nth)) and
        /// to name the slot in verifier violations.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
        #[allow(clippy::enum_variant_names)]
        pub enum Slot {
            $( $(#[$doc])* #[doc = concat!("`", stringify!($name), "`.")] $name, )*
        }

        impl Slot {
            /// Every slot, in interface order.
            pub const ALL: [Slot; 57] = [ $( Slot::$name, )* ];

            /// The slot's C name, e.g. `"VmbPacketSend"`.
            #[must_use]
            pub const fn name(self) -> &'static str {
                match self { $( Slot::$name => stringify!($name), )* }
            }

            /// The first interface version whose struct has this slot.
            #[must_use]
            pub const fn min_version(self) -> InterfaceVersion {
                match self { $( Slot::$name => InterfaceVersion::$version, )* }
            }

            /// What the slot returns (decides whether a fault can be injected).
            #[must_use]
            pub const fn returns(self) -> SlotReturn {
                match self { $( Slot::$name => SlotReturn::$ret, )* }
            }
        }
    };
}

slots! {
    VmbChannelAllocate = V1, Status;
    VmbChannelCleanup = V1, Other;
    VmbChannelCreateGpadlFromBuffer = V1, Status;
    VmbChannelCreateGpadlFromMdl = V1, Status;
    VmbChannelDeleteGpadl = V1, Other;
    VmbChannelDisable = V1, Other;
    VmbChannelEnable = V1, Status;
    VmbChannelGetInterfaceInstance = V1, Other;
    VmbChannelGetMmioSpace = V1, Other;
    VmbChannelGetPointer = V1, Other;
    VmbChannelInitSetClientContextSize = V1, Status;
    VmbChannelInitSetFlags = V1, Status;
    VmbChannelInitSetFriendlyName = V1, Status;
    VmbChannelInitSetMaximumExternalData = V1, Status;
    VmbChannelInitSetMaximumPacketSize = V1, Status;
    VmbChannelInitSetProcessPacketCallbacks = V1, Status;
    VmbChannelInitSetStateChangeCallbacks = V1, Status;
    VmbChannelPacketComplete = V1, Other;
    VmbChannelPacketDeferToPassive = V1, Other;
    VmbChannelPacketFail = V1, Other;
    VmbChannelPacketGetExternalData = V1, Status;
    VmbChannelPause = V1, Other;
    VmbChannelSendSynchronousRequest = V1, Status;
    VmbChannelSetIncomingProcessingAtPassive = V1, Other;
    VmbChannelSetInterruptLatency = V1, Status;
    VmbChannelSetPointer = V1, Other;
    VmbChannelSetTransactionQuota = V1, Other;
    VmbChannelSizeofPacket = V1, Other;
    VmbChannelStart = V1, Other;
    VmbClientChannelInitSetRingBufferPageCount = V1, Status;
    VmbClientChannelInitSetTargetPnp = V1, Status;
    VmbPacketAllocate = V1, Packet;
    VmbPacketFree = V1, Other;
    VmbPacketGetChannel = V1, Other;
    VmbPacketGetPointer = V1, Other;
    VmbPacketInitialize = V1, Status;
    VmbPacketSend = V1, Status;
    VmbPacketSendWithExternalMdl = V1, Status;
    VmbPacketSendWithExternalPfns = V1, Status;
    VmbPacketSetCompletionRoutine = V1, Other;
    VmbPacketSetPointer = V1, Other;
    VmbChannelPacketGetClientContext = V2, Other;
    VmbChannelGetTargetDeviceObject = V2, Other;
    VmbChannelGetParentDeviceObject = V2, Other;
    VmbChannelInitSetBounceBufferSizes = V3, Status;
    VmbChannelAllocateBounceBuffer = V3, Status;
    VmbChannelInitSetMaximumPacketCount = V4, Status;
    VmbChannelCreateGpadlFromPfnList = V4, Status;
    VmbChannelInitSetPrimaryChannel = V5, Status;
    VmbChannelInitialize = V5, Status;
    VmbChannelSetAllowableDpcCpuUsage = V5, Other;
    VmbClientChannelInitSetTargetProcessorIndex = V5, Status;
    VmbSizeofChannel = V5, Other;
    VmbChannelInitSetInlinePacketContextSize = V5, Status;
    VmbPacketGetInlinePacketContextPointer = V5, Other;
    VmbChannelInitSetProcessPacketCallbacksEx = V5, Status;
    VmbPacketSetCompletionRoutineEx = V5, Other;
}

impl fmt::Display for Slot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_per_version() {
        let count = |v| Slot::ALL.iter().filter(|s| s.min_version() <= v).count();
        assert_eq!(count(InterfaceVersion::V1), 41);
        assert_eq!(count(InterfaceVersion::V2), 44);
        assert_eq!(count(InterfaceVersion::V3), 46);
        assert_eq!(count(InterfaceVersion::V4), 48);
        assert_eq!(count(InterfaceVersion::V5), 57);
    }
}
