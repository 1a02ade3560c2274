//! Bridges to the safe layer of `vmbus-kmcl`, so tests and samples over the emulator need no
//! `unsafe`: the queried [`KmclInterface`] and the [`ParentDevice`] of an offer.

use vmbus_kmcl::{KmclInterface, NtStatus, ParentDevice};

use crate::api::offer::Offer;
use crate::api::vmbus::Vmbus;

impl Vmbus {
    /// Queries the client interface the way a driver does on Windows
    /// (`KmclInterface::query_with`, newest version first) through
    /// [`Vmbus::query_interface`].
    ///
    /// # Errors
    /// As `KmclInterface::query_with`: `STATUS_NOT_SUPPORTED` when no version is granted.
    pub fn kmcl_interface(&self) -> vmbus_kmcl::Result<KmclInterface> {
        let query = |interface, size, version| {
            // SAFETY: `query_with` passes its own buffer of `size` bytes.
            NtStatus(unsafe { self.query_interface(interface, size, version) })
        };
        // SAFETY: `query_interface` follows the query contract: it writes only within the
        // caller's `size` bytes and, on success, fills valid slots and takes a reference.
        unsafe { KmclInterface::query_with(query) }
    }
}

impl Offer {
    /// The offer's device object as a [`ParentDevice`] for `Channel::new`. The emulator keeps
    /// it alive for as long as the bus, and a channel used after the bus is gone only meets
    /// invalid-handle errors.
    #[must_use]
    pub fn parent_device(&self) -> ParentDevice {
        // SAFETY: an emulator-owned DEVICE_OBJECT that lives as long as the bus; the emulator
        // validates every handle, so no channel can make KMCL dereference it after that.
        unsafe { ParentDevice::from_raw(self.device_object()) }
    }
}
