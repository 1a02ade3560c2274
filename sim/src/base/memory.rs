//! Emulated guest "physical" memory and MDLs.
//!
//! The emulator maps guest physical addresses to host virtual addresses one to one: the page
//! frame number of a byte is its virtual address `>> 12`. Memory the host side may touch must be
//! *known*: registered as a region by an [`OwnedMdl`], by a GPADL created from a buffer, or by a
//! host-owned external-data buffer. Every host access checks, under one lock, that the whole
//! span lies inside a live region, so a forged PFN or a buffer released by its owner produces an
//! error, never a wild access.
//!
//! MDLs are likewise registered: a slot that receives a `PMDL` looks it up before reading it and
//! rejects MDLs that no [`OwnedMdl`] created.

use core::marker::PhantomData;
use core::ptr::{self, NonNull};
use std::alloc::{self, Layout};
use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use vmbus_kmcl::sys::MDL;

use crate::base::event::lock;

/// Page size of the emulated guest, in bytes.
pub const PAGE_SIZE: usize = 4096;

/// `MDL_MAPPED_TO_SYSTEM_VA`.
pub const MDL_MAPPED_TO_SYSTEM_VA: i16 = 0x0001;
/// `MDL_PAGES_LOCKED`.
pub const MDL_PAGES_LOCKED: i16 = 0x0002;
/// `MDL_SOURCE_IS_NONPAGED_POOL`.
pub const MDL_SOURCE_IS_NONPAGED_POOL: i16 = 0x0004;

/// The `MdlFlags` of every MDL the emulator builds: locked, non-paged, with `MappedSystemVa` set
/// (what `MmBuildMdlForNonPagedPool` produces).
pub const OWNED_MDL_FLAGS: i16 = MDL_PAGES_LOCKED | MDL_SOURCE_IS_NONPAGED_POOL;

/// Most chained MDLs the emulator follows before it declares a chain corrupt (a cycle).
pub(crate) const MAX_CHAIN_WALK: usize = 4096;

static REGIONS: Mutex<BTreeMap<(usize, u64), usize>> = Mutex::new(BTreeMap::new());
static MDLS: Mutex<BTreeMap<usize, MdlRecord>> = Mutex::new(BTreeMap::new());
static NEXT_REGION: AtomicU64 = AtomicU64::new(1);

/// The page frame number of a virtual address in the emulator's identity mapping.
#[must_use]
pub const fn pfn_of(address: usize) -> u64 {
    (address / PAGE_SIZE) as u64
}

/// Why a host access to guest memory failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum MemError {
    /// The span is not inside one live region.
    NotMapped,
}

/// A registered region; unregistered on drop.
#[derive(Debug)]
pub(crate) struct RegionGuard {
    start: usize,
    id: u64,
}

impl Drop for RegionGuard {
    fn drop(&mut self) {
        lock(&REGIONS).remove(&(self.start, self.id));
    }
}

/// Registers `[start, start + len)` as known memory.
pub(crate) fn register_region(start: usize, len: usize) -> RegionGuard {
    let id = NEXT_REGION.fetch_add(1, Ordering::Relaxed);
    lock(&REGIONS).insert((start, id), len);
    RegionGuard { start, id }
}

fn contains(map: &BTreeMap<(usize, u64), usize>, addr: usize, len: usize) -> bool {
    let Some(end) = addr.checked_add(len) else {
        return false;
    };
    map.range(..=(addr, u64::MAX))
        .rev()
        .any(|(&(start, _), &rlen)| start.checked_add(rlen).is_some_and(|rend| end <= rend))
}

/// True if `[addr, addr + len)` lies inside one live region.
pub(crate) fn is_known(addr: usize, len: usize) -> bool {
    contains(&lock(&REGIONS), addr, len)
}

/// Copies guest memory at `addr` into `out`, if the span is known.
pub(crate) fn copy_from_guest(addr: usize, out: &mut [u8]) -> Result<(), MemError> {
    if out.is_empty() {
        return Ok(());
    }
    let map = lock(&REGIONS);
    if !contains(&map, addr, out.len()) {
        return Err(MemError::NotMapped);
    }
    // SAFETY: the span lies inside a registered region, whose registrant guarantees the memory
    // is valid for reads while registered; the region lock is held, so it cannot be
    // unregistered (and the memory released by a well-behaved owner) during the copy. `out` is
    // a distinct host buffer.
    unsafe { ptr::copy_nonoverlapping(addr as *const u8, out.as_mut_ptr(), out.len()) };
    Ok(())
}

/// Copies `src` into guest memory at `addr`, if the span is known.
pub(crate) fn copy_to_guest(addr: usize, src: &[u8]) -> Result<(), MemError> {
    if src.is_empty() {
        return Ok(());
    }
    let map = lock(&REGIONS);
    if !contains(&map, addr, src.len()) {
        return Err(MemError::NotMapped);
    }
    // SAFETY: as in `copy_from_guest`; registrants also guarantee write access (every region
    // comes from a `*mut` buffer or a host allocation).
    unsafe { ptr::copy_nonoverlapping(src.as_ptr(), addr as *mut u8, src.len()) };
    Ok(())
}

#[derive(Clone, Copy, Debug)]
struct MdlRecord {
    /// Pages the PFN array was allocated for.
    capacity_pages: usize,
}

/// Why an [`OwnedMdl`] could not be built.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum MdlError {
    /// The buffer is null or empty.
    Empty,
    /// The buffer is longer than `u32::MAX` bytes or spans more pages than an MDL's 16-bit
    /// `Size` can describe (4089 pages on 64-bit hosts).
    TooLarge,
}

impl core::fmt::Display for MdlError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Self::Empty => f.write_str("MDL buffer is null or empty"),
            Self::TooLarge => f.write_str("MDL buffer is too large"),
        }
    }
}

impl std::error::Error for MdlError {}

const HEADER_WORDS: usize = size_of::<MDL>() / 8;
const _: () = assert!(size_of::<MDL>().is_multiple_of(8));

/// A real-layout MDL over a caller buffer, registered with the emulator.
///
/// Memory shape: the [`MDL`] header (`Next`, `Size` = header + PFN bytes, `MdlFlags` =
/// [`OWNED_MDL_FLAGS`], `MappedSystemVa` = the buffer, `StartVa` = the buffer rounded down to a
/// page, `ByteCount`, `ByteOffset` = the buffer's offset in its first page) immediately followed
/// by one `PFN_NUMBER` per page spanned, each the page's address `>> 12` (the emulator's identity
/// "physical" mapping). Chain MDLs with [`OwnedMdl::set_next`].
///
/// While an `OwnedMdl` lives, its buffer is known memory: the emulated host may read and write
/// it (GPA-direct packets, GPADLs over it). Dropping it unregisters both, after which host
/// accesses fail cleanly.
///
/// # Example
/// ```
/// use vmbus_kmcl_sim::OwnedMdl;
/// let mut buf = vec![7u8; 10_000];
/// let mdl = OwnedMdl::from_slice(&mut buf).unwrap();
/// assert_eq!(mdl.byte_count(), 10_000);
/// assert!(mdl.pfn_count() >= 3);
/// ```
#[derive(Debug)]
pub struct OwnedMdl<'a> {
    mdl: NonNull<MDL>,
    words: usize,
    _region: RegionGuard,
    _buffer: PhantomData<&'a mut [u8]>,
}

// SAFETY: the MDL allocation is owned by this value; the raw pointers in it are plain addresses
// the emulator validates before use, so moving the owner to another thread is fine.
unsafe impl Send for OwnedMdl<'_> {}
// SAFETY: `&OwnedMdl` only reads the header (plain integers and pointers); every mutation takes
// `&mut self`.
unsafe impl Sync for OwnedMdl<'_> {}

impl OwnedMdl<'static> {
    /// Builds an MDL over `len` bytes at `buffer`.
    ///
    /// # Errors
    /// [`MdlError::Empty`] for a null or empty buffer, [`MdlError::TooLarge`] past the limits.
    ///
    /// # Safety
    /// `buffer` must be valid for reads and writes of `len` bytes for as long as the returned
    /// value lives, and the caller must not hold Rust references into it while the emulated
    /// host may access it (as for memory shared with a real host).
    pub unsafe fn new(buffer: *mut u8, len: usize) -> Result<Self, MdlError> {
        Self::build(buffer as usize, len)
    }
}

impl<'a> OwnedMdl<'a> {
    /// Builds an MDL over `buffer`, borrowing it for the MDL's lifetime.
    ///
    /// # Errors
    /// As for [`OwnedMdl::new`].
    pub fn from_slice(buffer: &'a mut [u8]) -> Result<Self, MdlError> {
        Self::build(buffer.as_mut_ptr() as usize, buffer.len())
    }

    fn build(buffer: usize, len: usize) -> Result<Self, MdlError> {
        if buffer == 0 || len == 0 {
            return Err(MdlError::Empty);
        }
        let byte_count = u32::try_from(len).map_err(|_| MdlError::TooLarge)?;
        let byte_offset = buffer % PAGE_SIZE;
        let start_va = buffer - byte_offset;
        let end = byte_offset.checked_add(len).ok_or(MdlError::TooLarge)?;
        let pages = end.div_ceil(PAGE_SIZE);
        let words = pages.checked_add(HEADER_WORDS).ok_or(MdlError::TooLarge)?;
        let size = i16::try_from(words.checked_mul(8).ok_or(MdlError::TooLarge)?)
            .map_err(|_| MdlError::TooLarge)?;
        let alloc: Box<[u64]> = vec![0u64; words].into_boxed_slice();
        let raw = Box::into_raw(alloc).cast::<u64>();
        let mdl = NonNull::new(raw.cast::<MDL>()).ok_or(MdlError::Empty)?;
        let header = MDL {
            Next: ptr::null_mut(),
            Size: size,
            MdlFlags: OWNED_MDL_FLAGS,
            Process: ptr::null_mut(),
            MappedSystemVa: buffer as *mut core::ffi::c_void,
            StartVa: start_va as *mut core::ffi::c_void,
            ByteCount: byte_count,
            ByteOffset: u32::try_from(byte_offset).unwrap_or(0),
        };
        // SAFETY: `mdl` points to a fresh allocation of `words * 8 >= size_of::<MDL>()` bytes,
        // aligned to 8 (a `u64` slice), which satisfies `MDL`'s alignment.
        unsafe { mdl.as_ptr().write(header) };
        let first_pfn = pfn_of(start_va);
        for i in 0..pages {
            let slot = raw.wrapping_add(HEADER_WORDS + i);
            // SAFETY: word `HEADER_WORDS + i` is inside the allocation (`i < pages`), aligned.
            unsafe { slot.write(first_pfn.wrapping_add(i as u64)) };
        }
        let region = register_region(buffer, len);
        lock(&MDLS).insert(
            mdl.as_ptr() as usize,
            MdlRecord {
                capacity_pages: pages,
            },
        );
        Ok(Self {
            mdl,
            words,
            _region: region,
            _buffer: PhantomData,
        })
    }

    /// The `PMDL` to pass to KMCL slots. Valid while `self` lives.
    #[must_use]
    pub const fn as_ptr(&self) -> *mut MDL {
        self.mdl.as_ptr()
    }

    fn header(&self) -> MDL {
        // SAFETY: `self.mdl` points to our live allocation holding an initialised header.
        unsafe { self.mdl.as_ptr().read() }
    }

    /// `ByteCount`: length of the described buffer, in bytes.
    #[must_use]
    pub fn byte_count(&self) -> u32 {
        self.header().ByteCount
    }

    /// `ByteOffset`: offset of the buffer in its first page.
    #[must_use]
    pub fn byte_offset(&self) -> u32 {
        self.header().ByteOffset
    }

    /// `StartVa`: the page-aligned address of the first page.
    #[must_use]
    pub fn start_va(&self) -> *mut u8 {
        self.header().StartVa.cast()
    }

    /// `MappedSystemVa`: the buffer's address.
    #[must_use]
    pub fn system_address(&self) -> *mut u8 {
        self.header().MappedSystemVa.cast()
    }

    /// `Next`: the next MDL of the chain, or null.
    #[must_use]
    pub fn next(&self) -> *mut MDL {
        self.header().Next
    }

    /// Number of entries in the PFN array.
    #[must_use]
    pub const fn pfn_count(&self) -> usize {
        self.words - HEADER_WORDS
    }

    /// The PFN array (a copy).
    #[must_use]
    pub fn pfns(&self) -> Vec<u64> {
        (0..self.pfn_count())
            .map(|i| {
                let word = self
                    .mdl
                    .as_ptr()
                    .cast::<u64>()
                    .wrapping_add(HEADER_WORDS + i);
                // SAFETY: `HEADER_WORDS + i < self.words`, inside our live allocation.
                unsafe { word.read() }
            })
            .collect()
    }

    /// Sets `Next`: chains `next` after this MDL (or ends the chain with `None`). The emulator
    /// validates every MDL of a chain when it is used, so a chained MDL that is dropped first
    /// makes later uses fail cleanly.
    pub fn set_next(&mut self, next: Option<&OwnedMdl<'_>>) {
        let value = next.map_or(ptr::null_mut(), OwnedMdl::as_ptr);
        // `Next` is the first field of the header (offset 0).
        let next_field = self.mdl.as_ptr().cast::<*mut MDL>();
        // SAFETY: `next_field` points to the `Next` field of our live, exclusively borrowed
        // header, aligned to 8.
        unsafe { next_field.write(value) };
    }
}

impl Drop for OwnedMdl<'_> {
    fn drop(&mut self) {
        lock(&MDLS).remove(&(self.mdl.as_ptr() as usize));
        let slice = ptr::slice_from_raw_parts_mut(self.mdl.as_ptr().cast::<u64>(), self.words);
        // SAFETY: the allocation came from `Box<[u64]>` of exactly `self.words` elements via
        // `Box::into_raw`, and it is freed once, here; the registry entry is gone, so the
        // emulator will not read it again.
        drop(unsafe { Box::from_raw(slice) });
    }
}

/// One MDL of a chain, as read and validated by the emulator.
#[derive(Clone, Debug)]
pub(crate) struct MdlSpan {
    /// Address of the first described byte (`StartVa + ByteOffset`).
    pub(crate) address: usize,
    /// `ByteCount`.
    pub(crate) len: usize,
}

/// Why a driver-supplied MDL chain was rejected.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum ChainError {
    /// An MDL pointer no `OwnedMdl` created (or already dropped).
    Unknown(usize),
    /// A header that does not match the emulator's layout or identity mapping.
    Corrupt(usize, &'static str),
    /// More MDLs than allowed (or a cycle).
    TooLong,
}

/// Reads and validates the chain starting at `first` (which must be non-null). At most
/// `max_chain` MDLs are accepted.
pub(crate) fn read_chain(first: *mut MDL, max_chain: usize) -> Result<Vec<MdlSpan>, ChainError> {
    let registry = lock(&MDLS);
    let mut spans = Vec::new();
    let mut current = first;
    while !current.is_null() {
        if spans.len() >= max_chain.min(MAX_CHAIN_WALK) {
            return Err(ChainError::TooLong);
        }
        let addr = current as usize;
        let Some(record) = registry.get(&addr) else {
            return Err(ChainError::Unknown(addr));
        };
        // SAFETY: `addr` is a live `OwnedMdl` allocation (registered, and the registry lock held
        // keeps it from being dropped), aligned and starting with an initialised header.
        let header = unsafe { current.read() };
        let start = header.StartVa as usize;
        let offset = header.ByteOffset as usize;
        let count = header.ByteCount as usize;
        if !start.is_multiple_of(PAGE_SIZE) || offset >= PAGE_SIZE {
            return Err(ChainError::Corrupt(
                addr,
                "StartVa/ByteOffset not page-consistent",
            ));
        }
        if count == 0 {
            return Err(ChainError::Corrupt(addr, "ByteCount is 0"));
        }
        let pages = (offset + count).div_ceil(PAGE_SIZE);
        if pages > record.capacity_pages {
            return Err(ChainError::Corrupt(addr, "ByteCount exceeds the PFN array"));
        }
        for i in 0..pages {
            let word = current.cast::<u64>().wrapping_add(HEADER_WORDS + i);
            // SAFETY: `i < pages <= capacity_pages`, so the word is inside the live allocation.
            let pfn = unsafe { word.read() };
            if pfn != pfn_of(start).wrapping_add(i as u64) {
                return Err(ChainError::Corrupt(
                    addr,
                    "PFN array does not match the buffer",
                ));
            }
        }
        let Some(address) = start.checked_add(offset) else {
            return Err(ChainError::Corrupt(addr, "StartVa overflows"));
        };
        if !is_known(address, count) {
            return Err(ChainError::Corrupt(addr, "buffer is not known memory"));
        }
        spans.push(MdlSpan {
            address,
            len: count,
        });
        current = header.Next;
    }
    Ok(spans)
}

/// Selects the byte window `[offset, offset + len)` of a chain; returns the spans it covers.
/// `None` if the window does not fit.
pub(crate) fn window(spans: &[MdlSpan], offset: usize, len: usize) -> Option<Vec<MdlSpan>> {
    let end = offset.checked_add(len)?;
    let total: usize = spans.iter().map(|s| s.len).sum();
    if end > total || len == 0 {
        return None;
    }
    let mut out = Vec::new();
    let mut pos = 0usize;
    for s in spans {
        let s_end = pos + s.len;
        let lo = offset.max(pos);
        let hi = end.min(s_end);
        if lo < hi {
            out.push(MdlSpan {
                address: s.address.wrapping_add(lo - pos),
                len: hi - lo,
            });
        }
        pos = s_end;
    }
    Some(out)
}

/// A page-aligned, zeroed buffer owned by the emulated host (external data of host→guest
/// GPA-direct packets). Known memory while it lives.
#[derive(Debug)]
pub(crate) struct HostBuffer {
    ptr: NonNull<u8>,
    len: usize,
    layout: Layout,
    region: Option<RegionGuard>,
}

// SAFETY: the allocation is exclusively owned; all accesses go through the region-checked copy
// functions, which serialise on the region lock.
unsafe impl Send for HostBuffer {}
// SAFETY: see `Send`; `&HostBuffer` exposes only the address and length.
unsafe impl Sync for HostBuffer {}

impl HostBuffer {
    /// A buffer holding a copy of `data` (`data` must be non-empty).
    pub(crate) fn new(data: &[u8]) -> Option<Self> {
        if data.is_empty() {
            return None;
        }
        let size = data.len().checked_next_multiple_of(PAGE_SIZE)?;
        let layout = Layout::from_size_align(size, PAGE_SIZE).ok()?;
        // SAFETY: `layout` has a non-zero size.
        let raw = unsafe { alloc::alloc_zeroed(layout) };
        let ptr = NonNull::new(raw)?;
        // SAFETY: the fresh allocation has `size >= data.len()` bytes and cannot overlap `data`.
        unsafe { ptr::copy_nonoverlapping(data.as_ptr(), raw, data.len()) };
        let region = register_region(raw as usize, data.len());
        Some(Self {
            ptr,
            len: data.len(),
            layout,
            region: Some(region),
        })
    }

    pub(crate) fn address(&self) -> usize {
        self.ptr.as_ptr() as usize
    }

    pub(crate) const fn len(&self) -> usize {
        self.len
    }

    /// The current contents.
    pub(crate) fn contents(&self) -> Vec<u8> {
        let mut out = vec![0u8; self.len];
        let _ = copy_from_guest(self.address(), &mut out);
        out
    }
}

impl Drop for HostBuffer {
    fn drop(&mut self) {
        // Unregister first: removing the region takes the region lock, so it waits for a copy in
        // progress, and no later copy can reach the memory.
        drop(self.region.take());
        // SAFETY: allocated with `self.layout` in `new` and freed once, here, after the region
        // that made it reachable is gone.
        unsafe { alloc::dealloc(self.ptr.as_ptr(), self.layout) };
    }
}
