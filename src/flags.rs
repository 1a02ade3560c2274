//! Flag sets of the KMCL calls, as `bitflags` types over the raw `sys` constants.

use bitflags::bitflags;

use crate::sys;

bitflags! {
    /// `Flags` of the send calls (`VmbPacketSend*`, `VmbChannelSendSynchronousRequest`):
    /// `VMBUS_CHANNEL_FORMAT_FLAG_*`.
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
    pub struct SendFlags: u32 {
        /// Hold the packet until the opposite endpoint completes it; its response reaches the
        /// completion routine.
        const WAIT_FOR_COMPLETION = sys::VMBUS_CHANNEL_FORMAT_FLAG_WAIT_FOR_COMPLETION;
        /// Take the external data length from the MDL's byte count.
        const FORCE_MDL_LENGTH = sys::VMBUS_CHANNEL_FORMAT_FLAG_FORCE_MDL_LENGTH;
        /// The in-band buffer is pageable: KMCL copies it before DPC level.
        const PAGED_BUFFER = sys::VMBUS_CHANNEL_FORMAT_FLAG_PAGED_BUFFER;
        /// External data flows only from the opposite endpoint (WDK 10.0.18362).
        const DATA_IN_ONLY = sys::VMBUS_CHANNEL_FORMAT_FLAG_DATA_IN_ONLY;
        /// External data flows only to the opposite endpoint (WDK 10.0.18362).
        const DATA_OUT_ONLY = sys::VMBUS_CHANNEL_FORMAT_FLAG_DATA_OUT_ONLY;
    }
}

bitflags! {
    /// `Flags` of the GPADL calls: `VMBUS_CHANNEL_GPADL_FLAG_*`.
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
    pub struct GpadlFlags: u32 {
        /// The opposite endpoint only reads the buffer (a hint, not a protection).
        const READ_ONLY = sys::VMBUS_CHANNEL_GPADL_FLAG_READ_ONLY;
    }
}

bitflags! {
    /// `Flags` of `VmbChannelInitSetFlags`: `VMBUS_CHANNEL_INIT_FLAG_*`.
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
    pub struct ChannelInitFlags: u32 {
        /// Open the channel in pipe mode.
        const IS_PIPE = sys::VMBUS_CHANNEL_INIT_FLAG_IS_PIPE;
    }
}

bitflags! {
    /// `Flags` handed to `EvtVmbChannelProcessPacket`: `VMBUS_CHANNEL_PROCESS_PACKET_FLAG_*`.
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
    pub struct ProcessPacketFlags: u32 {
        /// The packet carries external data (see `IncomingPacket::external_data`).
        const EXTERNAL_DATA = sys::VMBUS_CHANNEL_PROCESS_PACKET_FLAG_EXTERNAL_DATA;
    }
}

bitflags! {
    /// `Flags` of `VmbChannelPacketGetExternalData`:
    /// `VMBUS_CHANNEL_PACKET_EXTERNAL_DATA_FLAG_*`.
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
    pub struct ExternalDataFlags: u32 {
        /// Map the external data read-only.
        const READ_ONLY = sys::VMBUS_CHANNEL_PACKET_EXTERNAL_DATA_FLAG_READ_ONLY;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masks_are_the_headers() {
        assert_eq!(SendFlags::all().bits(), sys::VMBUS_CHANNEL_FORMAT_FLAGS);
        assert_eq!(GpadlFlags::all().bits(), sys::VMBUS_CHANNEL_GPADL_FLAGS);
        assert_eq!(
            ChannelInitFlags::all().bits(),
            sys::VMBUS_CHANNEL_INIT_FLAGS
        );
        assert_eq!(
            ProcessPacketFlags::all().bits(),
            sys::VMBUS_CHANNEL_PROCESS_PACKET_FLAGS
        );
        assert_eq!(
            ExternalDataFlags::all().bits(),
            sys::VMBUS_CHANNEL_PACKET_EXTERNAL_DATA_FLAGS
        );
    }
}
