//! The NTSTATUS values the emulator returns.
//!
//! `vmbus_kmcl::sys` declares the codes the KMCL header names; the emulator also needs a few
//! standard `ntstatus.h` codes for cases the header leaves open (wrong channel state, the 5th to
//! 8th parameter, a blocked call). All of them are re-exported here so tests can match on one
//! module. Values are the `ntstatus.h` ones.

use vmbus_kmcl::sys::NTSTATUS;

pub use vmbus_kmcl::sys::{
    STATUS_BUFFER_OVERFLOW, STATUS_BUFFER_TOO_SMALL, STATUS_CANCELLED, STATUS_DEVICE_REMOVED,
    STATUS_INSUFFICIENT_RESOURCES, STATUS_INVALID_PARAMETER, STATUS_INVALID_PARAMETER_1,
    STATUS_INVALID_PARAMETER_2, STATUS_INVALID_PARAMETER_3, STATUS_INVALID_PARAMETER_4,
    STATUS_MORE_PROCESSING_REQUIRED, STATUS_NOT_SUPPORTED, STATUS_PENDING, STATUS_SUCCESS,
};

/// `STATUS_UNSUCCESSFUL` (0xC0000001): generic failure (fault-injection default).
pub const STATUS_UNSUCCESSFUL: NTSTATUS = 0xC000_0001_u32 as NTSTATUS;
/// `STATUS_INVALID_DEVICE_REQUEST` (0xC0000010): the packet has no external data.
pub const STATUS_INVALID_DEVICE_REQUEST: NTSTATUS = 0xC000_0010_u32 as NTSTATUS;
/// `STATUS_DEVICE_NOT_CONNECTED` (0xC000009D): no offer matches the channel's target.
pub const STATUS_DEVICE_NOT_CONNECTED: NTSTATUS = 0xC000_009D_u32 as NTSTATUS;
/// `STATUS_INTERNAL_ERROR` (0xC00000E5): the emulator caught a bug of its own.
pub const STATUS_INTERNAL_ERROR: NTSTATUS = 0xC000_00E5_u32 as NTSTATUS;
/// `STATUS_INVALID_PARAMETER_5` (0xC00000F3).
pub const STATUS_INVALID_PARAMETER_5: NTSTATUS = 0xC000_00F3_u32 as NTSTATUS;
/// `STATUS_INVALID_PARAMETER_6` (0xC00000F4).
pub const STATUS_INVALID_PARAMETER_6: NTSTATUS = 0xC000_00F4_u32 as NTSTATUS;
/// `STATUS_INVALID_PARAMETER_7` (0xC00000F5).
pub const STATUS_INVALID_PARAMETER_7: NTSTATUS = 0xC000_00F5_u32 as NTSTATUS;
/// `STATUS_INVALID_PARAMETER_8` (0xC00000F6).
pub const STATUS_INVALID_PARAMETER_8: NTSTATUS = 0xC000_00F6_u32 as NTSTATUS;
/// `STATUS_INVALID_DEVICE_STATE` (0xC0000184): the channel is in the wrong state for the call.
pub const STATUS_INVALID_DEVICE_STATE: NTSTATUS = 0xC000_0184_u32 as NTSTATUS;
/// `STATUS_DEVICE_BUSY` (0x80000011): the offer already has an open channel.
pub const STATUS_DEVICE_BUSY: NTSTATUS = 0x8000_0011_u32 as NTSTATUS;

/// `NT_SUCCESS`: success and informational codes (`>= 0`).
#[must_use]
pub const fn nt_success(status: NTSTATUS) -> bool {
    status >= 0
}
