//! [`KmclInterface`]: the queried `KMCL_CLIENT_INTERFACE_Vn`, negotiated from V5 down to V1,
//! validated, and released with `InterfaceDereference` on drop.

use core::ffi::c_void;

use crate::status::{NtStatus, Result};
use crate::sys;

/// A KMCL client interface version (`KMCL_CLIENT_INTERFACE_VERSION_Vn`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[repr(u16)]
pub enum InterfaceVersion {
    /// `KMCL_CLIENT_INTERFACE_V1`: 41 slots (Windows 10 1803).
    V1 = sys::KMCL_CLIENT_INTERFACE_VERSION_V1,
    /// `KMCL_CLIENT_INTERFACE_V2`: + client context, target/parent device objects (1809).
    V2 = sys::KMCL_CLIENT_INTERFACE_VERSION_V2,
    /// `KMCL_CLIENT_INTERFACE_V3`: + bounce buffers (1903).
    V3 = sys::KMCL_CLIENT_INTERFACE_VERSION_V3,
    /// `KMCL_CLIENT_INTERFACE_V4`: + maximum packet count, GPADL from a PFN list (1903).
    V4 = sys::KMCL_CLIENT_INTERFACE_VERSION_V4,
    /// `KMCL_CLIENT_INTERFACE_V5`: + Ex callbacks with context, inline packet context,
    /// caller-storage channels, subchannels, DPC CPU usage, target processor (2004).
    V5 = sys::KMCL_CLIENT_INTERFACE_VERSION_V5,
}

impl InterfaceVersion {
    /// Every version, newest first: the negotiation order.
    pub const NEWEST_FIRST: [Self; 5] = [Self::V5, Self::V4, Self::V3, Self::V2, Self::V1];

    /// The `INTERFACE.Version` value.
    #[must_use]
    pub const fn number(self) -> u16 {
        self as u16
    }

    /// The `INTERFACE.Size` to query this version with: `sizeof(KMCL_CLIENT_INTERFACE_Vn)`.
    #[must_use]
    pub const fn struct_size(self) -> u16 {
        match self {
            Self::V1 => sys::KMCL_CLIENT_INTERFACE_V1::SIZE,
            Self::V2 => sys::KMCL_CLIENT_INTERFACE_V2::SIZE,
            Self::V3 => sys::KMCL_CLIENT_INTERFACE_V3::SIZE,
            Self::V4 => sys::KMCL_CLIENT_INTERFACE_V4::SIZE,
            Self::V5 => sys::KMCL_CLIENT_INTERFACE_V5::SIZE,
        }
    }

    /// How many function-pointer slots this version has (41, 44, 46, 48, 57).
    #[must_use]
    pub const fn slot_count(self) -> usize {
        (self.struct_size() as usize - size_of::<sys::INTERFACE>()) / size_of::<usize>()
    }
}

/// The total number of client slots (V5).
const ALL_SLOTS: usize = InterfaceVersion::V5.slot_count();

/// The KMCL client interface, queried and validated; one interface reference.
///
/// Holds a copy of the function table (the V5 layout; slots newer than the negotiated version
/// are null, so features of later versions report `STATUS_NOT_SUPPORTED` instead of calling
/// through a null slot). Cloning takes another reference (`InterfaceReference`), dropping
/// releases one (`InterfaceDereference`): every channel keeps its own clone, so the interface
/// outlives every channel made from it.
///
/// Obtain it with [`KmclInterface::query_with`] (any provider, e.g. the emulator) or, in a
/// KMDF driver, with `KmclInterface::query_fdo` / `query_io_target` (Windows, `wdk` feature).
pub struct KmclInterface {
    table: sys::KMCL_CLIENT_INTERFACE_V5,
    version: InterfaceVersion,
}

// SAFETY: the table holds KMCL function pointers, callable from any thread at the IRQLs KMCL
// documents, and an opaque provider context that KMCL itself shares across threads.
unsafe impl Send for KmclInterface {}
// SAFETY: as for Send; `&KmclInterface` only reads the immutable table.
unsafe impl Sync for KmclInterface {}

impl KmclInterface {
    /// Queries the KMCL client interface through `query`, newest version first (V5, then V4 …
    /// V1), and keeps the first version the provider grants.
    ///
    /// `query(interface, size, version)` must behave like `WdfFdoQueryForInterface` with
    /// `InterfaceType = KMCL_CLIENT_INTERFACE_TYPE`: on success it has filled the `INTERFACE`
    /// header and the slots of that version into the `size`-byte buffer at `interface`, and
    /// taken one interface reference, which this value then owns. A failing status means "not
    /// this version" and the next older one is tried.
    ///
    /// # Errors
    /// - The provider's last failure status when no version is granted (typically
    ///   `STATUS_NOT_SUPPORTED`).
    /// - `STATUS_NOINTERFACE` when the granted interface is malformed: its header reports a
    ///   smaller size or older version than asked, or a slot of the version is null (the
    ///   reference is released first).
    ///
    /// # Safety
    /// `query` must honour the contract above: write only within the buffer, and on success
    /// leave valid KMCL function pointers, context and reference routines in it.
    ///
    /// IRQL: PASSIVE_LEVEL (interface queries are PnP calls).
    pub unsafe fn query_with<Q>(mut query: Q) -> Result<Self>
    where
        Q: FnMut(*mut sys::INTERFACE, u16, u16) -> NtStatus,
    {
        let mut last = NtStatus::NOT_SUPPORTED;
        for version in InterfaceVersion::NEWEST_FIRST {
            let mut table = sys::KMCL_CLIENT_INTERFACE_V5::NULL;
            let raw = (&raw mut table).cast::<sys::INTERFACE>();
            let status = query(raw, version.struct_size(), version.number());
            if !status.is_success() {
                last = status;
                continue;
            }
            return Self::validated(table, version);
        }
        Err(last)
    }

    /// Takes over a filled table: checks the header and that every slot of `version` is set;
    /// on failure releases the reference the table carries.
    fn validated(table: sys::KMCL_CLIENT_INTERFACE_V5, version: InterfaceVersion) -> Result<Self> {
        let interface = Self { table, version };
        let header = &interface.table.InterfaceHeader;
        let header_ok = (header.Size == 0 || header.Size >= version.struct_size())
            && (header.Version == 0 || header.Version >= version.number());
        if header_ok && interface.slots_present(version) {
            Ok(interface)
        } else {
            // Drop releases the reference the provider took.
            Err(NtStatus::NOINTERFACE)
        }
    }

    /// True when the first `version.slot_count()` slots are all non-null.
    fn slots_present(&self, version: InterfaceVersion) -> bool {
        let first_slot = (&raw const self.table)
            .cast::<u8>()
            .wrapping_add(size_of::<sys::INTERFACE>())
            .cast::<[usize; ALL_SLOTS]>();
        // SAFETY: the V5 struct is the 32-byte INTERFACE header followed by exactly ALL_SLOTS
        // pointer-sized `Option<fn>` slots (asserted in sys::layout), so this reads initialized
        // memory inside `self.table`, suitably aligned; a null slot reads as 0.
        let slots = unsafe { first_slot.read() };
        slots
            .get(..version.slot_count())
            .is_some_and(|granted| granted.iter().all(|&slot| slot != 0))
    }

    /// The negotiated version.
    #[must_use]
    pub fn version(&self) -> InterfaceVersion {
        self.version
    }

    /// True when the negotiated version is `version` or newer.
    #[must_use]
    pub fn supports(&self, version: InterfaceVersion) -> bool {
        self.version >= version
    }

    /// The raw table (V5 layout; slots newer than [`version`](Self::version) are `None`).
    #[must_use]
    pub fn raw(&self) -> &sys::KMCL_CLIENT_INTERFACE_V5 {
        &self.table
    }

    /// The provider's interface context (`INTERFACE.Context`).
    fn context(&self) -> *mut c_void {
        self.table.InterfaceHeader.Context
    }
}

/// Takes another interface reference (`InterfaceReference(Context)`).
impl Clone for KmclInterface {
    fn clone(&self) -> Self {
        if let Some(reference) = self.table.InterfaceHeader.InterfaceReference {
            // SAFETY: the provider's reference routine with its own context, as WDM requires
            // of every holder of a copy of the interface.
            unsafe { reference(self.context()) };
        }
        Self {
            table: self.table,
            version: self.version,
        }
    }
}

/// Releases the reference (`InterfaceDereference(Context)`).
impl Drop for KmclInterface {
    fn drop(&mut self) {
        if let Some(dereference) = self.table.InterfaceHeader.InterfaceDereference {
            // SAFETY: this value owns exactly one reference, released exactly once here.
            unsafe { dereference(self.context()) };
        }
    }
}

impl core::fmt::Debug for KmclInterface {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("KmclInterface")
            .field("version", &self.version)
            .finish_non_exhaustive()
    }
}

/// Returns the function in `slot`, or `STATUS_NOT_SUPPORTED` when the negotiated version lacks
/// it.
#[inline(always)]
pub(crate) fn slot<F>(slot: Option<F>) -> Result<F> {
    slot.ok_or(NtStatus::NOT_SUPPORTED)
}
