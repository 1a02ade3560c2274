//! The 57 client slots of `KMCL_CLIENT_INTERFACE_V5`, by name, and the interface versions
//! (`KMCL_CLIENT_INTERFACE_VERSION_Vn`) they belong to.

use core::fmt;

use vmbus_kmcl::sys::{
    KMCL_CLIENT_INTERFACE_V1, KMCL_CLIENT_INTERFACE_V2, KMCL_CLIENT_INTERFACE_V3,
    KMCL_CLIENT_INTERFACE_V4, KMCL_CLIENT_INTERFACE_V5,
};

/// A KMCL client interface version (`KMCL_CLIENT_INTERFACE_VERSION_Vn`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum InterfaceVersion {
    /// V1: 41 slots, 360 bytes (Windows 10 1803).
    V1 = 1,
    /// V2: 44 slots, 384 bytes (1809).
    V2 = 2,
    /// V3: 46 slots, 400 bytes (1903).
    V3 = 3,
    /// V4: 48 slots, 416 bytes (1903).
    V4 = 4,
    /// V5: 57 slots, 488 bytes (2004).
    V5 = 5,
}

impl InterfaceVersion {
    /// Every version, oldest first.
    pub const ALL: [Self; 5] = [Self::V1, Self::V2, Self::V3, Self::V4, Self::V5];

    /// The `KMCL_CLIENT_INTERFACE_VERSION_Vn` number.
    #[must_use]
    pub const fn number(self) -> u16 {
        self as u16
    }

    /// The version with this number, if any.
    #[must_use]
    pub const fn from_number(n: u16) -> Option<Self> {
        match n {
            1 => Some(Self::V1),
            2 => Some(Self::V2),
            3 => Some(Self::V3),
            4 => Some(Self::V4),
            5 => Some(Self::V5),
            _ => None,
        }
    }

    /// `sizeof(KMCL_CLIENT_INTERFACE_Vn)` in bytes.
    #[must_use]
    pub const fn struct_size(self) -> usize {
        match self {
            Self::V1 => size_of::<KMCL_CLIENT_INTERFACE_V1>(),
            Self::V2 => size_of::<KMCL_CLIENT_INTERFACE_V2>(),
            Self::V3 => size_of::<KMCL_CLIENT_INTERFACE_V3>(),
            Self::V4 => size_of::<KMCL_CLIENT_INTERFACE_V4>(),
            Self::V5 => size_of::<KMCL_CLIENT_INTERFACE_V5>(),
        }
    }
}

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

/// Where a slot's IRQL requirement comes from (the `sim/README.md` table cites each one).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum IrqlSource {
    /// An annotation in `vmbuskernelmodeclientlibapi.h` (`_IRQL_requires_`, `_When_`).
    Header,
    /// The call blocks (waits for the host, for callbacks or for other threads), so it needs
    /// PASSIVE_LEVEL.
    Blocks,
    /// Channel configuration before enable (the `Init*` setters, the channel pointer, the
    /// delivery IRQL): nothing is documented; PASSIVE_LEVEL, where drivers make these calls.
    Setup,
    /// A packet path or a query that KMCL drivers make from their DISPATCH_LEVEL callbacks:
    /// nothing is documented; at most DISPATCH_LEVEL.
    PacketPath,
}

impl Slot {
    /// The highest IRQL at which the emulator accepts a call of this slot. A call above it is an
    /// [`IrqlTooHigh`](crate::ViolationKind::IrqlTooHigh) violation and is refused.
    ///
    /// `VmbChannelSendSynchronousRequest` is listed at PASSIVE_LEVEL, its rule when it waits;
    /// the header's `_When_` lets it run at DISPATCH_LEVEL with a non-null zero timeout and no
    /// `VMBUS_CHANNEL_FORMAT_FLAG_WAIT_FOR_COMPLETION`, and the slot applies that per call.
    #[must_use]
    pub const fn max_irql(self) -> vmbus_kmcl::Irql {
        match self.irql_source() {
            IrqlSource::Header | IrqlSource::Blocks | IrqlSource::Setup => {
                vmbus_kmcl::Irql::PASSIVE
            }
            IrqlSource::PacketPath => vmbus_kmcl::Irql::DISPATCH,
        }
    }

    /// Why [`max_irql`](Self::max_irql) is what it is.
    #[must_use]
    pub const fn irql_source(self) -> IrqlSource {
        match self {
            Self::VmbChannelAllocate | Self::VmbChannelSendSynchronousRequest => IrqlSource::Header,
            Self::VmbChannelInitialize
            | Self::VmbChannelCleanup
            | Self::VmbChannelEnable
            | Self::VmbChannelDisable
            | Self::VmbChannelPause
            | Self::VmbChannelStart
            | Self::VmbChannelCreateGpadlFromBuffer
            | Self::VmbChannelCreateGpadlFromMdl
            | Self::VmbChannelCreateGpadlFromPfnList
            | Self::VmbChannelDeleteGpadl
            | Self::VmbChannelAllocateBounceBuffer => IrqlSource::Blocks,
            Self::VmbChannelInitSetClientContextSize
            | Self::VmbChannelInitSetFlags
            | Self::VmbChannelInitSetFriendlyName
            | Self::VmbChannelInitSetMaximumExternalData
            | Self::VmbChannelInitSetMaximumPacketSize
            | Self::VmbChannelInitSetProcessPacketCallbacks
            | Self::VmbChannelInitSetStateChangeCallbacks
            | Self::VmbClientChannelInitSetRingBufferPageCount
            | Self::VmbClientChannelInitSetTargetPnp
            | Self::VmbChannelInitSetBounceBufferSizes
            | Self::VmbChannelInitSetMaximumPacketCount
            | Self::VmbChannelInitSetPrimaryChannel
            | Self::VmbClientChannelInitSetTargetProcessorIndex
            | Self::VmbChannelInitSetInlinePacketContextSize
            | Self::VmbChannelInitSetProcessPacketCallbacksEx
            | Self::VmbChannelSetIncomingProcessingAtPassive
            | Self::VmbChannelSetPointer => IrqlSource::Setup,
            Self::VmbChannelGetInterfaceInstance
            | Self::VmbChannelGetMmioSpace
            | Self::VmbChannelGetPointer
            | Self::VmbChannelPacketComplete
            | Self::VmbChannelPacketDeferToPassive
            | Self::VmbChannelPacketFail
            | Self::VmbChannelPacketGetExternalData
            | Self::VmbChannelSetInterruptLatency
            | Self::VmbChannelSetTransactionQuota
            | Self::VmbChannelSizeofPacket
            | Self::VmbPacketAllocate
            | Self::VmbPacketFree
            | Self::VmbPacketGetChannel
            | Self::VmbPacketGetPointer
            | Self::VmbPacketInitialize
            | Self::VmbPacketSend
            | Self::VmbPacketSendWithExternalMdl
            | Self::VmbPacketSendWithExternalPfns
            | Self::VmbPacketSetCompletionRoutine
            | Self::VmbPacketSetPointer
            | Self::VmbChannelPacketGetClientContext
            | Self::VmbChannelGetTargetDeviceObject
            | Self::VmbChannelGetParentDeviceObject
            | Self::VmbChannelSetAllowableDpcCpuUsage
            | Self::VmbSizeofChannel
            | Self::VmbPacketGetInlinePacketContextPointer
            | Self::VmbPacketSetCompletionRoutineEx => IrqlSource::PacketPath,
        }
    }
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
