//! The WDF glue (Windows, `wdk` feature, KMDF build only): querying the KMCL client interface
//! through `WdfFdoQueryForInterface` / `WdfIoTargetQueryForInterface`, and the parent device of
//! a WDF device. Nothing else in the crate touches WDF.

use core::ptr;

use wdk_sys::{WDFDEVICE, WDFIOTARGET, call_unsafe_wdf_function_binding};

use crate::config::ParentDevice;
use crate::interface::KmclInterface;
use crate::status::{NtStatus, Result};
use crate::sys;

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
    /// `device` is a valid WDFDEVICE of a function driver (FDO). IRQL: PASSIVE_LEVEL.
    pub unsafe fn query_fdo(device: WDFDEVICE) -> Result<Self> {
        // SAFETY: WdfFdoQueryForInterface fills at most `size` bytes of the interface buffer
        // and takes a reference on success, as `query_with` requires.
        unsafe {
            Self::query_with(|interface, size, version| {
                NtStatus(call_unsafe_wdf_function_binding!(
                    WdfFdoQueryForInterface,
                    device,
                    &sys::KMCL_CLIENT_INTERFACE_TYPE,
                    interface,
                    size,
                    version,
                    ptr::null_mut(),
                ))
            })
        }
    }

    /// As [`query_fdo`](Self::query_fdo), through `WdfIoTargetQueryForInterface` on `target`.
    ///
    /// # Errors
    /// As [`query_fdo`](Self::query_fdo).
    ///
    /// # Safety
    /// `target` is a valid, started WDFIOTARGET. IRQL: PASSIVE_LEVEL.
    pub unsafe fn query_io_target(target: WDFIOTARGET) -> Result<Self> {
        // SAFETY: as in `query_fdo`.
        unsafe {
            Self::query_with(|interface, size, version| {
                NtStatus(call_unsafe_wdf_function_binding!(
                    WdfIoTargetQueryForInterface,
                    target,
                    &sys::KMCL_CLIENT_INTERFACE_TYPE,
                    interface,
                    size,
                    version,
                    ptr::null_mut(),
                ))
            })
        }
    }
}

impl ParentDevice {
    /// The WDM device object of a WDF device (`WdfDeviceWdmGetDeviceObject`).
    ///
    /// # Safety
    /// `device` is a valid WDFDEVICE that outlives every channel created on the result.
    #[must_use]
    pub unsafe fn from_wdf_device(device: WDFDEVICE) -> Self {
        // SAFETY: a valid WDFDEVICE per this function's contract.
        let raw = unsafe { call_unsafe_wdf_function_binding!(WdfDeviceWdmGetDeviceObject, device) };
        // SAFETY: the device object of a live WDF device, valid as long as the device is.
        unsafe { Self::from_raw(raw) }
    }
}
