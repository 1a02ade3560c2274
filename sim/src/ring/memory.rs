//! The page-aligned allocation behind a ring: control page + data area.

use core::ptr::{self, NonNull};
use std::alloc::{self, Layout};

use super::control::{ControlPage, FEATURE_PENDING_SEND_SZ};
use super::{MAX_DATA_PAGES, PAGE_SIZE, RingError};

/// One zeroed, 4096-aligned allocation of `(1 + data_pages) * 4096` bytes. The first page is the
/// [`ControlPage`]; the rest is the data area, accessed only through [`RingMemory::write_at`] and
/// [`RingMemory::read_at`].
pub(crate) struct RingMemory {
    /// Start of the allocation (the control page).
    base: NonNull<u8>,
    /// Start of the data area (`base + 4096`).
    data: NonNull<u8>,
    /// Data area size in bytes: a non-zero multiple of 4096, at most 1 GiB.
    data_size: u32,
    /// Layout used to allocate, needed to free; `None` for caller-supplied memory, which is
    /// never freed here.
    layout: Option<Layout>,
}

// SAFETY: an allocated `RingMemory` owns its allocation exclusively (no aliasing outside of it);
// caller-supplied memory is, by the contract of `RingMemory::borrowed`, valid from any thread and
// touched by others only through the ring protocol. Moving it to another thread moves that
// access, and the raw pointers are never tied to the creating thread.
unsafe impl Send for RingMemory {}

// SAFETY: shared access happens only through `control()` (atomics, which are `Sync`) and through
// the `unsafe` `write_at`/`read_at`, whose callers promise that no two threads touch the same data
// bytes at once (the ring protocol's writer/reader region separation).
unsafe impl Sync for RingMemory {}

impl RingMemory {
    /// Allocates a zeroed ring with `data_pages` data pages and sets the
    /// `feat_pending_send_sz` feature bit.
    ///
    /// # Errors
    /// [`RingError::InvalidPageCount`] for 0 or more than [`MAX_DATA_PAGES`] pages;
    /// [`RingError::AllocationFailed`] if the allocator refuses.
    pub(crate) fn new(data_pages: usize) -> Result<Self, RingError> {
        if data_pages == 0 || data_pages > MAX_DATA_PAGES {
            return Err(RingError::InvalidPageCount { pages: data_pages });
        }
        let invalid = RingError::InvalidPageCount { pages: data_pages };
        let data_bytes = data_pages.checked_mul(PAGE_SIZE).ok_or(invalid)?;
        let data_size = u32::try_from(data_bytes).map_err(|_| invalid)?;
        let total = data_bytes.checked_add(PAGE_SIZE).ok_or(invalid)?;
        let layout = Layout::from_size_align(total, PAGE_SIZE).map_err(|_| invalid)?;
        // SAFETY: `layout` has a non-zero size (at least two pages).
        let raw = unsafe { alloc::alloc_zeroed(layout) };
        let base = NonNull::new(raw).ok_or(RingError::AllocationFailed { bytes: total })?;
        let data = NonNull::new(raw.wrapping_add(PAGE_SIZE))
            .ok_or(RingError::AllocationFailed { bytes: total })?;
        let memory = Self {
            base,
            data,
            data_size,
            layout: Some(layout),
        };
        memory.control().feature_bits.store(
            FEATURE_PENDING_SEND_SZ,
            core::sync::atomic::Ordering::Relaxed,
        );
        Ok(memory)
    }

    /// Ring memory the caller supplies: `base` is the control page, followed by `data_pages`
    /// data pages. Nothing is written and nothing is freed when the ring goes away.
    ///
    /// # Errors
    /// [`RingError::InvalidPageCount`] for 0 or more than [`MAX_DATA_PAGES`] pages;
    /// [`RingError::MisalignedMemory`] if `base` is not 4096-aligned.
    ///
    /// # Safety
    /// `base` points to `(1 + data_pages) * 4096` initialised bytes that stay valid (readable,
    /// writable, not freed) for as long as the returned value lives. Nobody holds a Rust
    /// reference into them meanwhile; other accesses (another ring endpoint, another
    /// implementation, a device) use atomic accesses for the control page and follow the ring
    /// protocol for the data area (a reader touches only bytes between the read and write
    /// indices, a writer only the free region).
    pub(crate) unsafe fn borrowed(base: NonNull<u8>, data_pages: usize) -> Result<Self, RingError> {
        if data_pages == 0 || data_pages > MAX_DATA_PAGES {
            return Err(RingError::InvalidPageCount { pages: data_pages });
        }
        let address = base.as_ptr() as usize;
        if !address.is_multiple_of(PAGE_SIZE) {
            return Err(RingError::MisalignedMemory { address });
        }
        let invalid = RingError::InvalidPageCount { pages: data_pages };
        let data_bytes = data_pages.checked_mul(PAGE_SIZE).ok_or(invalid)?;
        let data_size = u32::try_from(data_bytes).map_err(|_| invalid)?;
        let data = NonNull::new(base.as_ptr().wrapping_add(PAGE_SIZE)).ok_or(invalid)?;
        Ok(Self {
            base,
            data,
            data_size,
            layout: None,
        })
    }

    /// Start of the memory (the control page).
    pub(crate) const fn base(&self) -> NonNull<u8> {
        self.base
    }

    /// The control page.
    #[inline]
    pub(crate) fn control(&self) -> &ControlPage {
        // SAFETY: `base` points to a live allocation of at least 4096 bytes, aligned to 4096, that
        // was zero-initialised, or to caller memory with the same properties (initialised, see
        // `borrowed`); any initialised bytes are a valid `ControlPage` (every field is an atomic
        // integer), and the memory lives as long as `self`. Every field has interior mutability,
        // so this shared reference never conflicts with other accesses to the page.
        unsafe { self.base.cast::<ControlPage>().as_ref() }
    }

    /// Data area size in bytes.
    #[inline]
    pub(crate) const fn data_size(&self) -> u32 {
        self.data_size
    }

    /// Start of the `len` data bytes at `offset` when they lie in one piece (`offset + len <=
    /// size`, no wrap), else `None`. Computing the pointer is safe; accessing through it is the
    /// caller's `unsafe`, under the rules of [`RingMemory::write_at`] and [`RingMemory::read_at`].
    #[inline]
    pub(crate) fn contiguous(&self, offset: u32, len: usize) -> Option<*mut u8> {
        let end = (offset as usize).checked_add(len)?;
        if end > self.data_size as usize {
            return None;
        }
        Some(self.data.as_ptr().wrapping_add(offset as usize))
    }

    /// Copies `src` into the data area starting at `offset`, wrapping at the end; returns the
    /// offset just past the copy (modulo the size).
    ///
    /// Out-of-contract arguments (`offset >= size` or `src.len() > size`) copy nothing and return
    /// `offset`; they never touch memory outside the data area.
    ///
    /// # Safety
    /// No other thread may read or write the `src.len()` data bytes starting at `offset`
    /// (wrapping) during the call. The ring protocol guarantees this for bytes in the writer's
    /// free region.
    #[inline]
    pub(crate) unsafe fn write_at(&self, offset: u32, src: &[u8]) -> u32 {
        let size = self.data_size as usize;
        let off = offset as usize;
        if off >= size || src.len() > size {
            return offset;
        }
        let Some((first, rest)) = src.split_at_checked(src.len().min(size - off)) else {
            return offset;
        };
        let dst = self.data.as_ptr().wrapping_add(off);
        // SAFETY: `dst..dst + first.len()` lies inside the data area (`off + first.len() <= size`);
        // `first` is caller memory, which cannot overlap the ring allocation (no safe API hands out
        // references into it); the caller guarantees no concurrent access to these bytes.
        unsafe { ptr::copy_nonoverlapping(first.as_ptr(), dst, first.len()) };
        if !rest.is_empty() {
            // SAFETY: `rest.len() <= size - first.len() < size`, so it fits at the start of the
            // data area; same non-overlap and exclusivity arguments as above.
            unsafe { ptr::copy_nonoverlapping(rest.as_ptr(), self.data.as_ptr(), rest.len()) };
        }
        let end = off + src.len();
        let end = if end >= size { end - size } else { end };
        u32::try_from(end).unwrap_or(0)
    }

    /// Copies `dst.len()` bytes out of the data area starting at `offset`, wrapping at the end;
    /// returns the offset just past the copy (modulo the size).
    ///
    /// Out-of-contract arguments (`offset >= size` or `dst.len() > size`) copy nothing and return
    /// `offset`.
    ///
    /// # Safety
    /// No other thread may write the `dst.len()` data bytes starting at `offset` (wrapping) during
    /// the call. The ring protocol guarantees this for bytes between the read and write indices.
    #[inline]
    pub(crate) unsafe fn read_at(&self, offset: u32, dst: &mut [u8]) -> u32 {
        let size = self.data_size as usize;
        let off = offset as usize;
        let len = dst.len();
        if off >= size || len > size {
            return offset;
        }
        let Some((first, rest)) = dst.split_at_mut_checked(len.min(size - off)) else {
            return offset;
        };
        let src = self.data.as_ptr().wrapping_add(off).cast_const();
        // SAFETY: `src..src + first.len()` lies inside the data area; `first` is caller memory
        // that cannot overlap the ring allocation; the caller guarantees no concurrent writer.
        unsafe { ptr::copy_nonoverlapping(src, first.as_mut_ptr(), first.len()) };
        if !rest.is_empty() {
            // SAFETY: `rest.len() < size`, so the source lies at the start of the data area; same
            // arguments as above.
            unsafe { ptr::copy_nonoverlapping(self.data.as_ptr(), rest.as_mut_ptr(), rest.len()) };
        }
        let end = off + len;
        let end = if end >= size { end - size } else { end };
        u32::try_from(end).unwrap_or(0)
    }
}

impl Drop for RingMemory {
    fn drop(&mut self) {
        if let Some(layout) = self.layout {
            // SAFETY: `base` was returned by `alloc_zeroed(layout)` and is freed exactly once,
            // here; no reference into the allocation outlives `self`.
            unsafe { alloc::dealloc(self.base.as_ptr(), layout) };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_and_feature_bit() {
        let m = RingMemory::new(2).unwrap();
        assert_eq!(m.data_size(), 8192);
        assert_eq!(m.base.as_ptr() as usize % PAGE_SIZE, 0);
        assert_eq!(
            m.data.as_ptr() as usize - m.base.as_ptr() as usize,
            PAGE_SIZE
        );
        let c = m.control();
        assert_eq!(
            c.feature_bits.load(core::sync::atomic::Ordering::Relaxed),
            1
        );
        assert_eq!(c.write_index.load(core::sync::atomic::Ordering::Relaxed), 0);
        assert!(RingMemory::new(0).is_err());
        assert!(RingMemory::new(MAX_DATA_PAGES + 1).is_err());
    }

    #[test]
    fn wrapping_copies() {
        let m = RingMemory::new(1).unwrap();
        let src: Vec<u8> = (0..32u8).collect();
        // SAFETY: single-threaded test, nothing else touches the ring.
        let end = unsafe { m.write_at(4080, &src) };
        assert_eq!(end, 16);
        let mut out = [0u8; 32];
        // SAFETY: as above.
        let end = unsafe { m.read_at(4080, &mut out) };
        assert_eq!(end, 16);
        assert_eq!(&out[..], &src[..]);
        let mut head = [0u8; 16];
        // SAFETY: as above.
        unsafe { m.read_at(0, &mut head) };
        assert_eq!(&head[..], &src[16..]);
        // Out-of-contract calls do nothing.
        // SAFETY: as above.
        assert_eq!(unsafe { m.write_at(4096, &src) }, 4096);
        let big = vec![1u8; 4097];
        // SAFETY: as above.
        assert_eq!(unsafe { m.write_at(0, &big) }, 0);
    }
}
