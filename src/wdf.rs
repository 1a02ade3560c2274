//! The WDF glue (Windows, `wdk` feature, KMDF build only): querying the KMCL client interface
//! through `WdfFdoQueryForInterface` / `WdfIoTargetQueryForInterface`, and the parent device of
//! a WDF device. Nothing else in the crate touches WDF.
//!
//! A documentation build (`--cfg docsrs`, as docs.rs runs it, without a WDK) compiles the same
//! public items over stand-in handle types ([`wdf_handles`]) and a body that only reports
//! `STATUS_NOT_SUPPORTED`, so that the real entry points appear in the documentation.

use crate::config::ParentDevice;
use crate::interface::KmclInterface;
use crate::status::Result;

#[cfg(kmcl_kmdf)]
use wdk_sys::{WDFDEVICE, WDFIOTARGET};

#[cfg(not(kmcl_kmdf))]
use self::wdf_handles::{WDFDEVICE, WDFIOTARGET};

impl KmclInterface {
    /// Queries `KMCL_CLIENT_INTERFACE_TYPE` from the bus driver below `device` with
    /// `WdfFdoQueryForInterface`, negotiating V5 down to V1 (see
    /// [`KmclInterface::query_with`]).
    ///
    /// # Errors
    /// `STATUS_NOT_SUPPORTED` (or the query's status) when no version is granted;
    /// `STATUS_NOINTERFACE` for a malformed interface.
    ///
    /// # Safety
    /// `device` is a valid WDFDEVICE of a function driver (FDO).
    ///
    /// IRQL: PASSIVE_LEVEL.
    #[cfg_attr(docsrs, doc(cfg(all(windows, feature = "wdk"))))]
    pub unsafe fn query_fdo(device: WDFDEVICE) -> Result<Self> {
        // SAFETY: this function's contract, forwarded.
        unsafe { imp::query_fdo(device) }
    }

    /// As [`query_fdo`](Self::query_fdo), through `WdfIoTargetQueryForInterface` on `target`.
    ///
    /// # Errors
    /// As [`query_fdo`](Self::query_fdo).
    ///
    /// # Safety
    /// `target` is a valid, started WDFIOTARGET.
    ///
    /// IRQL: PASSIVE_LEVEL.
    #[cfg_attr(docsrs, doc(cfg(all(windows, feature = "wdk"))))]
    pub unsafe fn query_io_target(target: WDFIOTARGET) -> Result<Self> {
        // SAFETY: this function's contract, forwarded.
        unsafe { imp::query_io_target(target) }
    }
}

impl ParentDevice {
    /// The WDM device object of a WDF device (`WdfDeviceWdmGetDeviceObject`).
    ///
    /// # Safety
    /// `device` is a valid WDFDEVICE that outlives every channel created on the result.
    ///
    /// IRQL: ≤ DISPATCH_LEVEL.
    #[cfg_attr(docsrs, doc(cfg(all(windows, feature = "wdk"))))]
    #[must_use]
    pub unsafe fn from_wdf_device(device: WDFDEVICE) -> Self {
        // SAFETY: this function's contract, forwarded.
        unsafe { imp::from_wdf_device(device) }
    }
}

/// The KMDF build: the real calls.
#[cfg(kmcl_kmdf)]
mod imp {
    use core::ptr;

    use wdk_sys::{WDFDEVICE, WDFIOTARGET, call_unsafe_wdf_function_binding};

    use crate::config::ParentDevice;
    use crate::interface::KmclInterface;
    use crate::status::{NtStatus, Result};
    use crate::sys;

    /// # Safety
    /// As `KmclInterface::query_fdo`.
    pub(super) unsafe fn query_fdo(device: WDFDEVICE) -> Result<KmclInterface> {
        let query = |interface: *mut sys::INTERFACE, size: u16, version: u16| {
            // SAFETY: `device` is a valid FDO (the caller's contract); `interface` is the
            // buffer of `size` bytes `query_with` passes, which WdfFdoQueryForInterface fills
            // and references on success.
            NtStatus(unsafe {
                call_unsafe_wdf_function_binding!(
                    WdfFdoQueryForInterface,
                    device,
                    &sys::KMCL_CLIENT_INTERFACE_TYPE,
                    interface,
                    size,
                    version,
                    ptr::null_mut(),
                )
            })
        };
        // SAFETY: the query writes at most `size` bytes of the buffer and takes a reference on
        // success, as `query_with` requires.
        unsafe { KmclInterface::query_with(query) }
    }

    /// # Safety
    /// As `KmclInterface::query_io_target`.
    pub(super) unsafe fn query_io_target(target: WDFIOTARGET) -> Result<KmclInterface> {
        let query = |interface: *mut sys::INTERFACE, size: u16, version: u16| {
            // SAFETY: as in `query_fdo`, with a valid, started I/O target.
            NtStatus(unsafe {
                call_unsafe_wdf_function_binding!(
                    WdfIoTargetQueryForInterface,
                    target,
                    &sys::KMCL_CLIENT_INTERFACE_TYPE,
                    interface,
                    size,
                    version,
                    ptr::null_mut(),
                )
            })
        };
        // SAFETY: as in `query_fdo`.
        unsafe { KmclInterface::query_with(query) }
    }

    /// # Safety
    /// As `ParentDevice::from_wdf_device`.
    pub(super) unsafe fn from_wdf_device(device: WDFDEVICE) -> ParentDevice {
        // SAFETY: a valid WDFDEVICE per the caller's contract.
        let raw = unsafe { call_unsafe_wdf_function_binding!(WdfDeviceWdmGetDeviceObject, device) };
        // SAFETY: the device object of a live WDF device, valid as long as the device is.
        unsafe { ParentDevice::from_raw(raw) }
    }
}

/// A documentation build: no WDF to call.
#[cfg(not(kmcl_kmdf))]
mod imp {
    use super::{WDFDEVICE, WDFIOTARGET};
    use crate::config::ParentDevice;
    use crate::interface::KmclInterface;
    use crate::status::{NtStatus, Result};

    pub(super) unsafe fn query_fdo(_: WDFDEVICE) -> Result<KmclInterface> {
        Err(NtStatus::NOT_SUPPORTED)
    }

    pub(super) unsafe fn query_io_target(_: WDFIOTARGET) -> Result<KmclInterface> {
        Err(NtStatus::NOT_SUPPORTED)
    }

    pub(super) unsafe fn from_wdf_device(_: WDFDEVICE) -> ParentDevice {
        // SAFETY: a null device object; outside a KMDF build there is no KMCL that could be
        // handed it, and the emulator rejects it as an invalid parent.
        unsafe { ParentDevice::from_raw(core::ptr::null_mut()) }
    }
}

/// Documentation stand-ins for wdk-sys's WDF handle types (a documentation build has no WDK).
/// In a KMDF build the functions above take `wdk_sys::WDFDEVICE` / `wdk_sys::WDFIOTARGET`.
#[cfg(not(kmcl_kmdf))]
pub mod wdf_handles {
    /// Opaque target of [`WDFDEVICE`].
    #[repr(C)]
    #[derive(Debug)]
    pub struct WDFDEVICE__ {
        _opaque: [u8; 0],
    }
    /// Opaque target of [`WDFIOTARGET`].
    #[repr(C)]
    #[derive(Debug)]
    pub struct WDFIOTARGET__ {
        _opaque: [u8; 0],
    }
    /// `WDFDEVICE` (wdk-sys: `*mut WDFDEVICE__`).
    pub type WDFDEVICE = *mut WDFDEVICE__;
    /// `WDFIOTARGET` (wdk-sys: `*mut WDFIOTARGET__`).
    pub type WDFIOTARGET = *mut WDFIOTARGET__;
}
