//! [`NtStatus`]: the NTSTATUS newtype every fallible call returns, with `NT_SUCCESS` semantics.

use core::fmt;

use crate::sys;

/// An `NTSTATUS` code, kept raw (`#[repr(transparent)]` over `i32`, the C `NTSTATUS`).
///
/// `NT_SUCCESS` semantics: success and informational codes (severity 0 and 1, i.e. the value is
/// ≥ 0) are successes; warnings (severity 2) and errors (severity 3) are failures. KMCL uses a
/// few informational codes as signals (`STATUS_PENDING` from `VmbChannelPacketGetExternalData`);
/// the wrappers that can see them turn them into their own enum variants rather than errors.
///
/// Every fallible API of this crate returns [`Result<T>`](Result), whose error is an `NtStatus`
/// a driver can hand straight back to WDF.
#[repr(transparent)]
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NtStatus(pub sys::NTSTATUS);

/// The result of a KMCL call: `Err` holds the failing [`NtStatus`].
pub type Result<T, E = NtStatus> = core::result::Result<T, E>;

impl NtStatus {
    /// `STATUS_SUCCESS`.
    pub const SUCCESS: Self = Self(sys::STATUS_SUCCESS);
    /// `STATUS_TIMEOUT` (0x102): informational; a wait ended because its timeout elapsed.
    pub const TIMEOUT: Self = Self(0x0000_0102);
    /// `STATUS_PENDING` (0x103): informational; the operation completes later.
    pub const PENDING: Self = Self(sys::STATUS_PENDING);
    /// `STATUS_BUFFER_OVERFLOW`: warning; the data did not fit and was truncated.
    pub const BUFFER_OVERFLOW: Self = Self(sys::STATUS_BUFFER_OVERFLOW);
    /// `STATUS_UNSUCCESSFUL`.
    pub const UNSUCCESSFUL: Self = Self(0xC000_0001_u32 as i32);
    /// `STATUS_INVALID_HANDLE`.
    pub const INVALID_HANDLE: Self = Self(0xC000_0008_u32 as i32);
    /// `STATUS_INVALID_PARAMETER`.
    pub const INVALID_PARAMETER: Self = Self(sys::STATUS_INVALID_PARAMETER);
    /// `STATUS_MORE_PROCESSING_REQUIRED`.
    pub const MORE_PROCESSING_REQUIRED: Self = Self(sys::STATUS_MORE_PROCESSING_REQUIRED);
    /// `STATUS_BUFFER_TOO_SMALL`.
    pub const BUFFER_TOO_SMALL: Self = Self(sys::STATUS_BUFFER_TOO_SMALL);
    /// `STATUS_INSUFFICIENT_RESOURCES`.
    pub const INSUFFICIENT_RESOURCES: Self = Self(sys::STATUS_INSUFFICIENT_RESOURCES);
    /// `STATUS_NOT_SUPPORTED`: also what this crate returns for a feature the negotiated
    /// interface version does not have.
    pub const NOT_SUPPORTED: Self = Self(sys::STATUS_NOT_SUPPORTED);
    /// `STATUS_INVALID_PARAMETER_1`.
    pub const INVALID_PARAMETER_1: Self = Self(sys::STATUS_INVALID_PARAMETER_1);
    /// `STATUS_INVALID_PARAMETER_2`.
    pub const INVALID_PARAMETER_2: Self = Self(sys::STATUS_INVALID_PARAMETER_2);
    /// `STATUS_INVALID_PARAMETER_3`.
    pub const INVALID_PARAMETER_3: Self = Self(sys::STATUS_INVALID_PARAMETER_3);
    /// `STATUS_INVALID_PARAMETER_4`.
    pub const INVALID_PARAMETER_4: Self = Self(sys::STATUS_INVALID_PARAMETER_4);
    /// `STATUS_CANCELLED`.
    pub const CANCELLED: Self = Self(sys::STATUS_CANCELLED);
    /// `STATUS_INVALID_DEVICE_STATE`: the channel is not in a state that allows the call.
    pub const INVALID_DEVICE_STATE: Self = Self(0xC000_0184_u32 as i32);
    /// `STATUS_DEVICE_REMOVED`.
    pub const DEVICE_REMOVED: Self = Self(sys::STATUS_DEVICE_REMOVED);
    /// `STATUS_NOINTERFACE`: the queried interface is missing or malformed (a null slot, or a
    /// Size/Version pair that does not match what was asked).
    pub const NOINTERFACE: Self = Self(0xC000_02B9_u32 as i32);

    /// `NT_SUCCESS(status)`: true for success and informational codes (value ≥ 0).
    #[must_use]
    pub const fn is_success(self) -> bool {
        self.0 >= 0
    }

    /// True for errors (severity 3, the top two bits set).
    #[must_use]
    pub const fn is_error(self) -> bool {
        (self.0 as u32) >> 30 == 3
    }

    /// True for warnings (severity 2), e.g. `STATUS_BUFFER_OVERFLOW`.
    #[must_use]
    pub const fn is_warning(self) -> bool {
        (self.0 as u32) >> 30 == 2
    }

    /// The raw code.
    #[must_use]
    pub const fn raw(self) -> sys::NTSTATUS {
        self.0
    }

    /// `Ok(())` when [`is_success`](Self::is_success), else `Err(self)`.
    pub const fn ok(self) -> Result<()> {
        if self.is_success() { Ok(()) } else { Err(self) }
    }

    /// The symbolic name of the codes KMCL documents and this crate uses, if it is one.
    #[must_use]
    pub const fn name(self) -> Option<&'static str> {
        Some(match self {
            Self::SUCCESS => "STATUS_SUCCESS",
            Self::TIMEOUT => "STATUS_TIMEOUT",
            Self::PENDING => "STATUS_PENDING",
            Self::BUFFER_OVERFLOW => "STATUS_BUFFER_OVERFLOW",
            Self::UNSUCCESSFUL => "STATUS_UNSUCCESSFUL",
            Self::INVALID_HANDLE => "STATUS_INVALID_HANDLE",
            Self::INVALID_PARAMETER => "STATUS_INVALID_PARAMETER",
            Self::MORE_PROCESSING_REQUIRED => "STATUS_MORE_PROCESSING_REQUIRED",
            Self::BUFFER_TOO_SMALL => "STATUS_BUFFER_TOO_SMALL",
            Self::INSUFFICIENT_RESOURCES => "STATUS_INSUFFICIENT_RESOURCES",
            Self::NOT_SUPPORTED => "STATUS_NOT_SUPPORTED",
            Self::INVALID_PARAMETER_1 => "STATUS_INVALID_PARAMETER_1",
            Self::INVALID_PARAMETER_2 => "STATUS_INVALID_PARAMETER_2",
            Self::INVALID_PARAMETER_3 => "STATUS_INVALID_PARAMETER_3",
            Self::INVALID_PARAMETER_4 => "STATUS_INVALID_PARAMETER_4",
            Self::CANCELLED => "STATUS_CANCELLED",
            Self::INVALID_DEVICE_STATE => "STATUS_INVALID_DEVICE_STATE",
            Self::DEVICE_REMOVED => "STATUS_DEVICE_REMOVED",
            Self::NOINTERFACE => "STATUS_NOINTERFACE",
            _ => return None,
        })
    }
}

impl From<sys::NTSTATUS> for NtStatus {
    fn from(raw: sys::NTSTATUS) -> Self {
        Self(raw)
    }
}

impl From<NtStatus> for sys::NTSTATUS {
    fn from(status: NtStatus) -> Self {
        status.0
    }
}

/// `STATUS_NAME (0xXXXXXXXX)`, or just the hex code for codes without a known name.
impl fmt::Display for NtStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.name() {
            Some(name) => write!(f, "{name} ({:#010x})", self.0 as u32),
            None => write!(f, "NTSTATUS {:#010x}", self.0 as u32),
        }
    }
}

impl fmt::Debug for NtStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl core::error::Error for NtStatus {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nt_success_covers_success_and_informational_only() {
        assert!(NtStatus::SUCCESS.is_success());
        assert!(NtStatus::PENDING.is_success() && !NtStatus::PENDING.is_error());
        assert!(NtStatus::TIMEOUT.is_success());
        assert!(!NtStatus::BUFFER_OVERFLOW.is_success() && NtStatus::BUFFER_OVERFLOW.is_warning());
        assert!(
            NtStatus::INVALID_PARAMETER.is_error() && !NtStatus::INVALID_PARAMETER.is_success()
        );
        assert_eq!(NtStatus::PENDING.ok(), Ok(()));
        assert_eq!(NtStatus::CANCELLED.ok(), Err(NtStatus::CANCELLED));
    }

    #[test]
    fn display_names_documented_codes_and_keeps_raw_value() {
        extern crate std;
        use std::format;
        assert_eq!(
            format!("{}", NtStatus::INVALID_PARAMETER_2),
            "STATUS_INVALID_PARAMETER_2 (0xc00000f0)"
        );
        assert_eq!(format!("{}", NtStatus(0x1234)), "NTSTATUS 0x00001234");
        assert_eq!(
            NtStatus::from(-1_073_741_637).raw(),
            sys::STATUS_NOT_SUPPORTED
        );
    }
}
