//! Flag values, masks and documented limits of `vmbuskernelmodeclientlibapi.h`, and the NTSTATUS
//! codes its comments name (`docs/spec/kmcl-abi.md` §6).

use super::base::NTSTATUS;

// ---- Send flags: `Flags` of VmbPacketSend* and VmbChannelSendSynchronousRequest ----

/// The packet is not complete, and its resources stay held, until the opposite endpoint sends a
/// completion.
pub const VMBUS_CHANNEL_FORMAT_FLAG_WAIT_FOR_COMPLETION: u32 = 0x1;
/// Use the MDL's byte count as the external data length (meaningful for
/// `VmbPacketSendWithExternalMdl`).
pub const VMBUS_CHANNEL_FORMAT_FLAG_FORCE_MDL_LENGTH: u32 = 0x2;
/// The in-band buffer is pageable and must be copied before DPC level.
pub const VMBUS_CHANNEL_FORMAT_FLAG_PAGED_BUFFER: u32 = 0x4;
/// The external data only flows in (opposite endpoint to this one). WDK 10.0.18362.
pub const VMBUS_CHANNEL_FORMAT_FLAG_DATA_IN_ONLY: u32 = 0x8;
/// The external data only flows out (this endpoint to the opposite one). WDK 10.0.18362.
pub const VMBUS_CHANNEL_FORMAT_FLAG_DATA_OUT_ONLY: u32 = 0x10;
/// `VMBUS_CHANNEL_FORMAT_FLAGS`: every valid send flag (0x7 before WDK 10.0.18362).
pub const VMBUS_CHANNEL_FORMAT_FLAGS: u32 = 0x1F;

// ---- GPADL flags: `Flags` of VmbChannelCreateGpadl* / VmbChannelMapGpadl ----

/// The opposite endpoint may only read the buffer (a hint for snapshots and live migration, not
/// a security boundary). The header's comments spell it `VMBUS_CHANNEL_GPADL_READ_ONLY`.
pub const VMBUS_CHANNEL_GPADL_FLAG_READ_ONLY: u32 = 0x1;
/// `VMBUS_CHANNEL_GPADL_FLAGS`: every valid GPADL flag.
pub const VMBUS_CHANNEL_GPADL_FLAGS: u32 = 0x1;

// ---- Channel init flags: VmbChannelInitSetFlags ----

/// Open the channel in pipe mode.
pub const VMBUS_CHANNEL_INIT_FLAG_IS_PIPE: u32 = 0x1;
/// `VMBUS_CHANNEL_INIT_FLAGS`: every valid channel init flag.
pub const VMBUS_CHANNEL_INIT_FLAGS: u32 = 0x1;

// ---- Server channel init flags: VmbServerChannelInitSetFlags (server side) ----

/// Offer the channel back to the same partition (server side).
pub const VMBUS_SERVER_CHANNEL_INIT_FLAG_LOOPBACK_OFFER: u32 = 0x1;
/// Enumerate a device interface for the offer (server side).
pub const VMBUS_SERVER_CHANNEL_INIT_FLAG_ENUMERATE_DEVICE_INTERFACE: u32 = 0x2;
/// Offer the channel as a pipe (server side).
pub const VMBUS_SERVER_CHANNEL_INIT_FLAG_OFFER_AS_PIPE: u32 = 0x4;
/// Always make a new channel (server side).
pub const VMBUS_SERVER_CHANNEL_INIT_FLAG_FORCE_NEW_CHANNEL: u32 = 0x8;
/// The offer comes from a TLNPI provider (server side).
pub const VMBUS_SERVER_CHANNEL_INIT_FLAG_TLNPI_PROVIDER_OFFER: u32 = 0x10;
/// `VMBUS_SERVER_CHANNEL_INIT_FLAGS`: every valid server init flag.
pub const VMBUS_SERVER_CHANNEL_INIT_FLAGS: u32 = 0x1F;

// ---- Incoming packets ----

/// In `Flags` of `EvtVmbChannelProcessPacket[Ex]`: the packet carries external data; fetch it
/// with `VmbChannelPacketGetExternalData`.
pub const VMBUS_CHANNEL_PROCESS_PACKET_FLAG_EXTERNAL_DATA: u32 = 0x1;
/// `VMBUS_CHANNEL_PROCESS_PACKET_FLAGS`: every valid process-packet flag.
pub const VMBUS_CHANNEL_PROCESS_PACKET_FLAGS: u32 = 0x1;
/// In `Flags` of `VmbChannelPacketGetExternalData`: map the external data read-only.
pub const VMBUS_CHANNEL_PACKET_EXTERNAL_DATA_FLAG_READ_ONLY: u32 = 0x1;
/// `VMBUS_CHANNEL_PACKET_EXTERNAL_DATA_FLAGS`: every valid external-data flag.
pub const VMBUS_CHANNEL_PACKET_EXTERNAL_DATA_FLAGS: u32 = 0x1;

/// Most bytes of "extra data" in a channel offer (server side).
pub const VMBUS_SERVER_CHANNEL_INIT_MAXIMUM_OFFER_DATA: u32 = 120;

// ---- Limits stated only in the header's comments (the names are this crate's) ----

/// The KMCL ring-buffer MTU, in bytes: the largest packet, `u16::MAX` units of 8 bytes.
pub const KMCL_RING_BUFFER_MTU: u32 = 524_280;
/// Most bytes of KMCL's internal header on a packet in the ring.
pub const KMCL_PACKET_HEADER_MAX_BYTES: u32 = 32;
/// Ring bytes added per chained MDL and per page of external data.
pub const KMCL_EXTERNAL_DATA_BYTES_PER_ENTRY: u32 = 8;
/// `*CompletionBufferSize` of `VmbChannelSendSynchronousRequest` must be a multiple of this.
pub const KMCL_COMPLETION_BUFFER_ALIGNMENT: u32 = 8;
/// The page size of VMBus, of GPADLs and of bounce-buffer sizes, in bytes.
pub const KMCL_PAGE_SIZE: u32 = 4096;
/// Smallest `CpuPercentage` of `VmbChannelSetAllowableDpcCpuUsage`.
pub const KMCL_DPC_CPU_USAGE_MIN: u8 = 1;
/// Largest `CpuPercentage` of `VmbChannelSetAllowableDpcCpuUsage`.
pub const KMCL_DPC_CPU_USAGE_MAX: u8 = 100;
/// Smallest `SubChannelIndex` of `VmbChannelInitSetPrimaryChannel` (0 is the primary).
pub const KMCL_SUBCHANNEL_INDEX_MIN: u16 = 1;

// ---- NTSTATUS codes the header's comments name (values from ntstatus.h) ----

/// `STATUS_SUCCESS`.
pub const STATUS_SUCCESS: NTSTATUS = 0;
/// `STATUS_PENDING`: informational; from `VmbChannelPacketGetExternalData` it means "return from
/// the packet callback, it will be called again".
pub const STATUS_PENDING: NTSTATUS = 0x0000_0103;
/// `STATUS_BUFFER_OVERFLOW`: warning; the data did not fit and was truncated.
pub const STATUS_BUFFER_OVERFLOW: NTSTATUS = 0x8000_0005_u32 as NTSTATUS;
/// `STATUS_INVALID_PARAMETER`.
pub const STATUS_INVALID_PARAMETER: NTSTATUS = 0xC000_000D_u32 as NTSTATUS;
/// `STATUS_MORE_PROCESSING_REQUIRED`.
pub const STATUS_MORE_PROCESSING_REQUIRED: NTSTATUS = 0xC000_0016_u32 as NTSTATUS;
/// `STATUS_BUFFER_TOO_SMALL`.
pub const STATUS_BUFFER_TOO_SMALL: NTSTATUS = 0xC000_0023_u32 as NTSTATUS;
/// `STATUS_INSUFFICIENT_RESOURCES`.
pub const STATUS_INSUFFICIENT_RESOURCES: NTSTATUS = 0xC000_009A_u32 as NTSTATUS;
/// `STATUS_NOT_SUPPORTED`.
pub const STATUS_NOT_SUPPORTED: NTSTATUS = 0xC000_00BB_u32 as NTSTATUS;
/// `STATUS_INVALID_PARAMETER_1`.
pub const STATUS_INVALID_PARAMETER_1: NTSTATUS = 0xC000_00EF_u32 as NTSTATUS;
/// `STATUS_INVALID_PARAMETER_2`.
pub const STATUS_INVALID_PARAMETER_2: NTSTATUS = 0xC000_00F0_u32 as NTSTATUS;
/// `STATUS_INVALID_PARAMETER_3`.
pub const STATUS_INVALID_PARAMETER_3: NTSTATUS = 0xC000_00F1_u32 as NTSTATUS;
/// `STATUS_INVALID_PARAMETER_4`.
pub const STATUS_INVALID_PARAMETER_4: NTSTATUS = 0xC000_00F2_u32 as NTSTATUS;
/// `STATUS_CANCELLED`.
pub const STATUS_CANCELLED: NTSTATUS = 0xC000_0120_u32 as NTSTATUS;
/// `STATUS_DEVICE_REMOVED`.
pub const STATUS_DEVICE_REMOVED: NTSTATUS = 0xC000_02B6_u32 as NTSTATUS;
