//! [`MdlChain`]: a read-only view of a KMCL-owned MDL chain (external data of an incoming
//! packet), following the real `MDL` layout: the header, then one `PFN_NUMBER` per page spanned.

use core::marker::PhantomData;
use core::ptr::NonNull;

use crate::host_bytes::HostBytes;
use crate::sys;

/// `MDL_MAPPED_TO_SYSTEM_VA`: `MappedSystemVa` is valid.
pub const MDL_MAPPED_TO_SYSTEM_VA: i16 = 0x0001;
/// `MDL_SOURCE_IS_NONPAGED_POOL`: the buffer is nonpaged pool, mapped at `StartVa + ByteOffset`.
pub const MDL_SOURCE_IS_NONPAGED_POOL: i16 = 0x0004;

/// Bytes per page of an MDL's PFN array.
const PAGE_SIZE: usize = sys::KMCL_PAGE_SIZE as usize;

/// A chain of MDLs owned by KMCL, valid for `'a` (until the packet is completed).
#[derive(Clone, Copy, Debug)]
pub struct MdlChain<'a> {
    first: NonNull<sys::MDL>,
    _packet: PhantomData<&'a sys::MDL>,
}

/// One MDL of a chain.
#[derive(Clone, Copy, Debug)]
pub struct MdlView<'a> {
    mdl: &'a sys::MDL,
}

impl<'a> MdlChain<'a> {
    /// # Safety
    /// `first` heads a valid MDL chain (each with its PFN array) that stays valid and unchanged
    /// for `'a`.
    pub(crate) unsafe fn from_raw(first: NonNull<sys::MDL>) -> Self {
        Self {
            first,
            _packet: PhantomData,
        }
    }

    /// The first MDL, for KMCL or WDK calls this crate does not wrap.
    #[must_use]
    pub fn as_raw(&self) -> NonNull<sys::MDL> {
        self.first
    }

    /// The MDLs of the chain, following `Next`.
    pub fn iter(&self) -> impl Iterator<Item = MdlView<'a>> + 'a {
        // SAFETY: the chain is valid for 'a per `from_raw`.
        let mut next: Option<&'a sys::MDL> = unsafe { self.first.as_ptr().as_ref() };
        core::iter::from_fn(move || {
            let mdl = next?;
            // SAFETY: `Next` of a valid chain member is null or the next valid member.
            next = unsafe { mdl.Next.as_ref() };
            Some(MdlView { mdl })
        })
    }

    /// Total bytes described by the chain.
    #[must_use]
    pub fn byte_count(&self) -> u64 {
        self.iter().map(|mdl| u64::from(mdl.byte_count())).sum()
    }
}

impl<'a> MdlView<'a> {
    /// `ByteCount`: bytes described by this MDL.
    #[must_use]
    pub fn byte_count(&self) -> u32 {
        self.mdl.ByteCount
    }

    /// `ByteOffset`: offset of the data in the first page, in bytes.
    #[must_use]
    pub fn byte_offset(&self) -> u32 {
        self.mdl.ByteOffset
    }

    /// `MdlFlags`.
    #[must_use]
    pub fn flags(&self) -> i16 {
        self.mdl.MdlFlags
    }

    /// Pages spanned: `ADDRESS_AND_SIZE_TO_SPAN_PAGES(StartVa + ByteOffset, ByteCount)`.
    #[must_use]
    pub fn page_count(&self) -> usize {
        let start = self.mdl.ByteOffset as usize % PAGE_SIZE;
        (start + self.mdl.ByteCount as usize).div_ceil(PAGE_SIZE)
    }

    /// The PFN array that follows the header.
    #[must_use]
    pub fn pfns(&self) -> &'a [sys::PFN_NUMBER] {
        let array = core::ptr::from_ref(self.mdl)
            .wrapping_add(1)
            .cast::<sys::PFN_NUMBER>();
        // SAFETY: a valid MDL is followed by one PFN per page spanned (its `Size` covers them),
        // aligned like the pointer-aligned header.
        unsafe { core::slice::from_raw_parts(array, self.page_count()) }
    }

    /// The data, when the MDL says it is mapped in system space (`MDL_MAPPED_TO_SYSTEM_VA` or
    /// `MDL_SOURCE_IS_NONPAGED_POOL`); `None` otherwise (map it with
    /// `MmGetSystemAddressForMdlSafe`). External data is host memory the host may change: the
    /// view only copies.
    #[must_use]
    pub fn mapped_bytes(&self) -> Option<HostBytes<'a>> {
        let m = self.mdl;
        let base = if m.MdlFlags & MDL_MAPPED_TO_SYSTEM_VA != 0 {
            m.MappedSystemVa.cast::<u8>()
        } else if m.MdlFlags & MDL_SOURCE_IS_NONPAGED_POOL != 0 {
            m.StartVa.cast::<u8>().wrapping_add(m.ByteOffset as usize)
        } else {
            return None;
        };
        if base.is_null() {
            return None;
        }
        // SAFETY: a mapped MDL's system address covers `ByteCount` readable bytes for 'a.
        Some(unsafe { HostBytes::from_raw(base, m.ByteCount as usize) })
    }

    /// The raw MDL.
    #[must_use]
    pub fn as_raw(&self) -> &'a sys::MDL {
        self.mdl
    }
}
