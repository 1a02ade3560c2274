//! [`KmclInterface`]: the queried `KMCL_CLIENT_INTERFACE_Vn`, negotiated from V5 down to V1,
//! validated, and released with `InterfaceDereference` on drop.

use core::ffi::c_void;

use crate::status::{NtStatus, Result};
use crate::sys;

/// A KMCL client interface version (`KMCL_CLIENT_INTERFACE_VERSION_Vn`). Non-exhaustive: a newer
/// KMCL may add versions.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[non_exhaustive]
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
    /// False only for the crate's internal table copies, which hold no reference.
    owns_reference: bool,
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
        let interface = Self {
            table,
            version,
            owns_reference: true,
        };
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
            .cast::<[*const (); ALL_SLOTS]>();
        // SAFETY: the V5 struct is the 32-byte INTERFACE header followed by exactly ALL_SLOTS
        // pointer-sized `Option<fn>` slots (asserted in sys::layout), so this reads initialized
        // memory inside `self.table`, suitably aligned; a null slot reads as a null pointer.
        let slots = unsafe { first_slot.read() };
        slots
            .get(..version.slot_count())
            .is_some_and(|granted| granted.iter().all(|slot| !slot.is_null()))
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

    /// A copy of the table that takes and releases no reference (for a channel, which holds its
    /// own reference separately and releases it at teardown).
    pub(crate) fn table_copy(&self) -> Self {
        Self {
            table: self.table,
            version: self.version,
            owns_reference: false,
        }
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
            owns_reference: true,
        }
    }
}

/// Releases the reference (`InterfaceDereference(Context)`).
impl Drop for KmclInterface {
    fn drop(&mut self) {
        if !self.owns_reference {
            return;
        }
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

#[cfg(test)]
mod tests {
    //! Negotiation against a provider that follows the query contract with a table of inert
    //! functions; the emulator-based tests in `tests/` cover the real slots.
    use core::sync::atomic::{AtomicI32, Ordering};

    use super::*;

    static REFERENCES: AtomicI32 = AtomicI32::new(0);

    unsafe extern "C" fn reference(_: *mut c_void) {
        REFERENCES.fetch_add(1, Ordering::SeqCst);
    }
    unsafe extern "C" fn dereference(_: *mut c_void) {
        REFERENCES.fetch_sub(1, Ordering::SeqCst);
    }
    unsafe extern "system" fn sizeof_channel() -> u32 {
        64
    }

    /// Grants versions up to `highest`, filling every slot of the requested version with a
    /// non-null address (only `VmbSizeofChannel` is ever called) unless `hole` names a slot
    /// index to leave null.
    fn provider(
        highest: u16,
        hole: Option<usize>,
    ) -> impl FnMut(*mut sys::INTERFACE, u16, u16) -> NtStatus {
        move |interface, size, version| {
            if version > highest {
                return NtStatus::NOT_SUPPORTED;
            }
            let v = InterfaceVersion::NEWEST_FIRST
                .into_iter()
                .find(|v| v.number() == version)
                .unwrap();
            assert_eq!(size, v.struct_size(), "size paired with version");
            let mut table = sys::KMCL_CLIENT_INTERFACE_V5::NULL;
            table.InterfaceHeader.Size = size;
            table.InterfaceHeader.Version = version;
            table.InterfaceHeader.InterfaceReference = Some(reference);
            table.InterfaceHeader.InterfaceDereference = Some(dereference);
            let words = (&raw mut table)
                .cast::<u8>()
                .wrapping_add(32)
                .cast::<*const ()>();
            for i in 0..v.slot_count() {
                if Some(i) != hole {
                    // SAFETY: slot i of the V5 table; every slot is one pointer-sized word. A
                    // function pointer stored as a data pointer keeps its provenance.
                    unsafe { words.wrapping_add(i).write(sizeof_channel as *const ()) };
                }
            }
            // SAFETY: the caller's buffer holds `size` bytes; copy exactly that many.
            unsafe {
                core::ptr::copy_nonoverlapping(
                    (&raw const table).cast::<u8>(),
                    interface.cast::<u8>(),
                    usize::from(size),
                )
            };
            REFERENCES.fetch_add(1, Ordering::SeqCst);
            NtStatus::SUCCESS
        }
    }

    // One test so the shared reference counter is not raced by parallel tests.
    #[test]
    fn negotiation_validation_and_reference_counting() {
        // Highest granted version wins; newer slots stay null; later features unsupported.
        // SAFETY: the provider follows the query contract.
        let v3 = unsafe { KmclInterface::query_with(provider(3, None)) }.unwrap();
        assert_eq!(v3.version(), InterfaceVersion::V3);
        assert!(v3.supports(InterfaceVersion::V2) && !v3.supports(InterfaceVersion::V4));
        assert!(v3.raw().VmbChannelAllocateBounceBuffer.is_some());
        assert!(v3.raw().VmbChannelInitSetMaximumPacketCount.is_none());
        assert_eq!(
            crate::channel::channel_storage_size(&v3),
            Err(NtStatus::NOT_SUPPORTED)
        );
        assert_eq!(REFERENCES.load(Ordering::SeqCst), 1);

        // Clone references, drop dereferences.
        let copy = v3.clone();
        assert_eq!(REFERENCES.load(Ordering::SeqCst), 2);
        drop(copy);
        drop(v3);
        assert_eq!(REFERENCES.load(Ordering::SeqCst), 0);

        // V5 granted and usable.
        // SAFETY: the provider follows the query contract.
        let v5 = unsafe { KmclInterface::query_with(provider(5, None)) }.unwrap();
        assert_eq!(v5.version(), InterfaceVersion::V5);
        assert_eq!(crate::channel::channel_storage_size(&v5), Ok(64));
        drop(v5);

        // A null slot of the granted version: rejected, and its reference released.
        // SAFETY: the provider follows the query contract.
        let holed = unsafe { KmclInterface::query_with(provider(5, Some(56))) };
        assert_eq!(holed.unwrap_err(), NtStatus::NOINTERFACE);
        assert_eq!(REFERENCES.load(Ordering::SeqCst), 0);

        // Nothing granted: the provider's status.
        // SAFETY: the provider follows the query contract.
        let none = unsafe { KmclInterface::query_with(|_, _, _| NtStatus::NOT_SUPPORTED) };
        assert_eq!(none.unwrap_err(), NtStatus::NOT_SUPPORTED);
        assert_eq!(REFERENCES.load(Ordering::SeqCst), 0);
    }

    #[test]
    fn version_sizes_and_slot_counts() {
        let counts: [usize; 5] = InterfaceVersion::NEWEST_FIRST.map(InterfaceVersion::slot_count);
        assert_eq!(counts, [57, 48, 46, 44, 41]);
        assert_eq!(InterfaceVersion::V1.struct_size(), 360);
    }
}
