//! [`Gpadl`]: a Guest Physical Address Descriptor List shared with the opposite endpoint
//! (`VmbChannelCreateGpadlFrom{Buffer,Mdl,PfnList}` … `VmbChannelDeleteGpadl`).
//!
//! The GPADL owns its buffer ([`OwnedBuffer`] of whole [`Page`]s) and is registered in its
//! channel's GPADL table. The buffer is freed only after `VmbChannelDeleteGpadl` has returned:
//! - [`Gpadl::delete`] (PASSIVE_LEVEL) deletes it and gives the buffer back;
//! - dropping a `Gpadl` cannot block (it may run at DISPATCH_LEVEL), so it parks the buffer in
//!   the table: [`ChannelCore::reclaim_gpadls`] or the channel's teardown deletes the GPADL and
//!   then frees the buffer;
//! - teardown deletes every GPADL still registered; a `Gpadl` handle that outlives it keeps its
//!   buffer, now private memory again;
//! - forgetting a `Gpadl` leaks its buffer; teardown still deletes the GPADL.

use core::cell::UnsafeCell;
use core::marker::PhantomData;
use core::ptr::NonNull;

use crate::buffer::{OwnedBuffer, RawBuffer};
use crate::channel::{ChannelCore, ChannelRef};
use crate::flags::GpadlFlags;
use crate::handler::ChannelHandler;
use crate::interface::slot;
use crate::irql::PassiveLevel;
use crate::state::StateWord;
use crate::status::{NtStatus, Result};
use crate::sys;

/// One 4 KiB page, page-aligned: GPADL buffers are whole pages by type, so no neighbour of the
/// buffer is ever shared with the host.
#[derive(Clone, Copy)]
#[repr(C, align(4096))]
pub struct Page(pub [u8; sys::KMCL_PAGE_SIZE as usize]);

impl Page {
    /// A zeroed page.
    pub const ZERO: Self = Self([0; sys::KMCL_PAGE_SIZE as usize]);
}

impl core::fmt::Debug for Page {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("Page")
    }
}

/// The buffer type of a GPADL over memory the driver describes itself (an MDL or a PFN list,
/// the `unsafe` constructors): the GPADL has no buffer view.
#[derive(Debug)]
pub struct ExternalMemory(());

// SAFETY: no memory: the parts are dangling with length 0 and are never dereferenced.
unsafe impl OwnedBuffer<Page> for ExternalMemory {
    fn into_raw(self) -> (NonNull<Page>, usize) {
        (NonNull::dangling(), 0)
    }
    unsafe fn from_raw(_: NonNull<Page>, _: usize) -> Self {
        Self(())
    }
}

/// GPADL table entry states.
const FREE: u8 = 0;
/// Being created (the creator holds the rundown reference).
const CLAIMED: u8 = 1;
/// Registered; the `Gpadl` handle owns the buffer.
const LIVE: u8 = 2;
/// Being deleted by the handle's `delete`, a reclaim, or teardown.
const DELETING: u8 = 3;
/// Registered; the handle was dropped and left the buffer to the table.
const PARKED: u8 = 4;
/// Deleted by teardown while the handle lives; the handle frees the entry.
const ORPHANED: u8 = 5;
/// Being deleted by teardown, and the handle was dropped meanwhile: teardown frees the buffer.
const DELETING_PARKED: u8 = 6;

/// A channel's record of one GPADL.
pub(crate) struct GpadlEntry {
    state: StateWord,
    handle: UnsafeCell<u32>,
    buffer: UnsafeCell<Option<RawBuffer<Page>>>,
}

// SAFETY: `handle` and `buffer` are written only by the thread that holds the entry in CLAIMED,
// before the Release store of LIVE, and read by whoever moves it out of LIVE / PARKED with an
// compare-exchange; the state machine gives one owner at a time.
unsafe impl Sync for GpadlEntry {}

impl GpadlEntry {
    pub(crate) fn new() -> Self {
        Self {
            state: StateWord::new(FREE),
            handle: UnsafeCell::new(0),
            buffer: UnsafeCell::new(None),
        }
    }

    fn moved(&self, from: u8, to: u8) -> bool {
        self.state.moved(from, to)
    }

    /// Waits until teardown, which owns this entry's deletion, has deleted the GPADL.
    fn wait_orphaned(&self) {
        while self.state.load() != ORPHANED {
            crate::spin::relax();
        }
    }
}

/// A GPADL over the driver's buffer `B`, shared with the opposite endpoint.
///
/// It holds a [`ChannelRef`] and owns the buffer, so it can be stored beside the channel for the
/// channel's whole life. While it is registered the host may write the buffer at any time: read
/// and write it through [`read`](Self::read) / [`write`](Self::write), which copy without
/// creating Rust references to shared memory.
///
/// The buffer must be owned: a GPADL over a borrowed local does not compile.
///
/// ```compile_fail,E0597
/// # use vmbus_kmcl::{ChannelCore, ChannelHandler, GpadlFlags, Page, PassiveLevel};
/// # struct H;
/// # impl ChannelHandler for H { type PacketContext = (); }
/// fn share(channel: &ChannelCore<H>, irql: &PassiveLevel) {
///     let mut pages = [Page::ZERO; 4];
///     let _gpadl = channel.create_gpadl(irql, &mut pages[..], GpadlFlags::empty());
/// }
/// ```
pub struct Gpadl<H: ChannelHandler, B: OwnedBuffer<Page>> {
    channel: ChannelRef<H>,
    entry: usize,
    handle: u32,
    raw: RawBuffer<Page>,
    _buffer: PhantomData<B>,
}

// SAFETY: the buffer is owned (`B: Send`) and only copied through raw pointers; the entry is
// driven by atomics.
unsafe impl<H: ChannelHandler, B: OwnedBuffer<Page>> Send for Gpadl<H, B> {}
// SAFETY: `&Gpadl` offers only copies in and out of the buffer, which the host may also write.
unsafe impl<H: ChannelHandler, B: OwnedBuffer<Page>> Sync for Gpadl<H, B> {}

/// Why creating a GPADL failed, with the buffer given back.
#[derive(Debug)]
pub struct GpadlError<B> {
    /// `STATUS_INVALID_PARAMETER_4` for an empty buffer or one of 4 GiB or more;
    /// `STATUS_INSUFFICIENT_RESOURCES` when the channel's GPADL table is full;
    /// `STATUS_INVALID_DEVICE_STATE` when the channel is not enabled; the KMCL status.
    pub status: NtStatus,
    /// The buffer, unchanged.
    pub buffer: B,
}

impl<H: ChannelHandler> ChannelCore<H> {
    /// `VmbChannelCreateGpadlFromBuffer`: shares `buffer` (whole pages, probed and locked by
    /// KMCL until the GPADL is deleted) with the host. The handle ([`Gpadl::handle`]) is what
    /// the device protocol sends to the host. Returns once the host has acknowledged it.
    ///
    /// # Errors
    /// [`GpadlError`], with the buffer back.
    ///
    /// IRQL: PASSIVE_LEVEL (it waits for the host).
    pub fn create_gpadl<B: OwnedBuffer<Page>>(
        &self,
        irql: &PassiveLevel,
        buffer: B,
        flags: GpadlFlags,
    ) -> core::result::Result<Gpadl<H, B>, GpadlError<B>> {
        let _ = irql;
        let raw = RawBuffer::new(buffer);
        let bytes = raw.len.saturating_mul(size_of::<Page>());
        let created = match u32::try_from(bytes) {
            Ok(len) if len > 0 => {
                match slot(self.interface().raw().VmbChannelCreateGpadlFromBuffer) {
                    Ok(create) => self.register_gpadl(raw, |handle| {
                        // SAFETY: a live channel; the buffer stays valid and unmoved until the
                        // GPADL is deleted (the table or the handle owns it); `handle` is a valid
                        // out pointer.
                        unsafe {
                            create(
                                self.as_raw(),
                                flags.bits(),
                                raw.base.as_ptr().cast(),
                                len,
                                handle,
                            )
                        }
                    }),
                    Err(status) => Err(status),
                }
            }
            _ => Err(NtStatus::INVALID_PARAMETER_4),
        };
        created.map_err(|status| GpadlError {
            status,
            // SAFETY: made from a `B` above; KMCL did not keep it.
            buffer: unsafe { raw.into_buffer::<B>() },
        })
    }

    /// `VmbChannelCreateGpadlFromMdl`: shares `length` bytes of `mdl` starting `offset` bytes
    /// in.
    ///
    /// # Errors
    /// `STATUS_INSUFFICIENT_RESOURCES` when the GPADL table is full;
    /// `STATUS_INVALID_DEVICE_STATE` when the channel is not enabled; the KMCL status.
    ///
    /// # Safety
    /// The MDL and its pages stay valid and locked until the GPADL is deleted:
    /// [`Gpadl::delete`] returned, or the channel was torn down (a dropped handle defers the
    /// deletion to [`ChannelCore::reclaim_gpadls`] or teardown).
    ///
    /// IRQL: PASSIVE_LEVEL.
    pub unsafe fn create_gpadl_from_mdl(
        &self,
        irql: &PassiveLevel,
        mdl: NonNull<sys::MDL>,
        offset: u32,
        length: u32,
        flags: GpadlFlags,
    ) -> Result<Gpadl<H, ExternalMemory>> {
        let _ = irql;
        let create = slot(self.interface().raw().VmbChannelCreateGpadlFromMdl)?;
        self.register_gpadl(RawBuffer::new(ExternalMemory(())), |handle| {
            // SAFETY: a live channel; the MDL is valid per this function's contract.
            unsafe {
                create(
                    self.as_raw(),
                    flags.bits(),
                    mdl.as_ptr(),
                    offset,
                    length,
                    handle,
                )
            }
        })
    }

    /// `VmbChannelCreateGpadlFromPfnList` (V4): shares the 4 KiB pages `pfns`.
    ///
    /// # Errors
    /// `STATUS_INVALID_PARAMETER_4` for an empty list or more than `u32::MAX` PFNs;
    /// `STATUS_NOT_SUPPORTED` before V4; otherwise as
    /// [`create_gpadl_from_mdl`](Self::create_gpadl_from_mdl).
    ///
    /// # Safety
    /// The pages stay valid and allocated to the driver until the GPADL is deleted (as for
    /// [`create_gpadl_from_mdl`](Self::create_gpadl_from_mdl)).
    ///
    /// IRQL: PASSIVE_LEVEL.
    pub unsafe fn create_gpadl_from_pfns(
        &self,
        irql: &PassiveLevel,
        pfns: &[sys::PFN_NUMBER],
        flags: GpadlFlags,
    ) -> Result<Gpadl<H, ExternalMemory>> {
        let _ = irql;
        let create = slot(self.interface().raw().VmbChannelCreateGpadlFromPfnList)?;
        let count = u32::try_from(pfns.len()).map_err(|_| NtStatus::INVALID_PARAMETER_4)?;
        if count == 0 {
            return Err(NtStatus::INVALID_PARAMETER_4);
        }
        self.register_gpadl(RawBuffer::new(ExternalMemory(())), |handle| {
            // SAFETY: a live channel; the list is read during the call, the pages are valid per
            // this function's contract.
            unsafe {
                create(
                    self.as_raw(),
                    flags.bits(),
                    pfns.as_ptr().cast_mut(),
                    count,
                    handle,
                )
            }
        })
    }

    /// Claims a table entry, runs `create` with the rundown reference held, and registers the
    /// GPADL (or frees the entry again).
    fn register_gpadl<B: OwnedBuffer<Page>>(
        &self,
        raw: RawBuffer<Page>,
        create: impl FnOnce(*mut u32) -> sys::NTSTATUS,
    ) -> Result<Gpadl<H, B>> {
        let _entered = self.enter()?;
        let (index, entry) = self
            .gpadls
            .iter()
            .enumerate()
            .find(|(_, entry)| entry.moved(FREE, CLAIMED))
            .ok_or(NtStatus::INSUFFICIENT_RESOURCES)?;
        let mut handle = 0_u32;
        if let Err(status) = NtStatus(create(&raw mut handle)).ok() {
            entry.state.store(FREE);
            return Err(status);
        }
        // SAFETY: the entry is CLAIMED by this thread; nothing else reads it until LIVE.
        unsafe { entry.handle.get().write(handle) };
        // SAFETY: as above.
        unsafe { entry.buffer.get().write(Some(raw)) };
        entry.state.store(LIVE);
        Ok(Gpadl {
            channel: self.new_ref(),
            entry: index,
            handle,
            raw,
            _buffer: PhantomData,
        })
    }

    /// Deletes the GPADLs whose handles were dropped and frees their buffers.
    ///
    /// Returns how many were deleted.
    ///
    /// IRQL: PASSIVE_LEVEL (each delete waits for the host).
    pub fn reclaim_gpadls(&self, irql: &PassiveLevel) -> usize {
        let _ = irql;
        let Ok(_entered) = self.enter_any() else {
            return 0;
        };
        self.gpadls
            .iter()
            .filter(|entry| entry.moved(PARKED, DELETING))
            .map(|entry| {
                // SAFETY: DELETING is held by this thread; the rundown keeps the channel.
                unsafe { delete_and_free(self, entry) };
            })
            .count()
    }
}

/// `VmbChannelDeleteGpadl` of a DELETING entry, then frees its buffer and the entry.
///
/// # Safety
/// The caller moved the entry from PARKED to DELETING and keeps the KMCL channel valid.
unsafe fn delete_and_free<H: ChannelHandler>(core: &ChannelCore<H>, entry: &GpadlEntry) {
    // SAFETY: DELETING is exclusive, and the fields were written before LIVE.
    let handle = unsafe { entry.handle.get().read() };
    delete_kmcl(core, handle);
    // SAFETY: as above.
    if let Some(raw) = unsafe { entry.buffer.get().replace(None) } {
        // SAFETY: the GPADL is deleted, so the host no longer reaches the buffer.
        unsafe { raw.drop_buffer() };
    }
    entry.state.store(FREE);
}

fn delete_kmcl<H: ChannelHandler>(core: &ChannelCore<H>, handle: u32) {
    if let Some(delete) = core.interface().raw().VmbChannelDeleteGpadl {
        // SAFETY: a GPADL of this live channel, deleted exactly once (its entry is DELETING).
        unsafe { delete(core.as_raw(), handle) };
    }
}

/// Teardown: deletes every registered GPADL (run down, before `VmbChannelCleanup`).
pub(crate) fn delete_all<H: ChannelHandler>(core: &ChannelCore<H>) {
    for entry in &core.gpadls {
        if entry.moved(PARKED, DELETING) {
            // SAFETY: DELETING is held; teardown keeps the KMCL channel until cleanup.
            unsafe { delete_and_free(core, entry) };
        } else if entry.moved(LIVE, DELETING) {
            // SAFETY: DELETING is exclusive.
            let handle = unsafe { entry.handle.get().read() };
            delete_kmcl(core, handle);
            // The handle still owns the buffer and frees the entry, unless it was dropped
            // meanwhile and left the buffer to us.
            if !entry.moved(DELETING, ORPHANED) {
                // SAFETY: DELETING_PARKED: the handle is gone; the fields were written before
                // LIVE.
                if let Some(raw) = unsafe { entry.buffer.get().replace(None) } {
                    // SAFETY: the GPADL is deleted; freed once.
                    unsafe { raw.drop_buffer() };
                }
                entry.state.store(FREE);
            }
        }
    }
}

impl<H: ChannelHandler, B: OwnedBuffer<Page>> Gpadl<H, B> {
    /// The GPADL handle to send to the opposite endpoint.
    ///
    /// IRQL: any.
    #[must_use]
    pub fn handle(&self) -> u32 {
        self.handle
    }

    /// Length of the shared buffer in bytes (0 for MDL / PFN GPADLs).
    ///
    /// IRQL: any.
    #[must_use]
    pub fn len(&self) -> usize {
        self.raw.len.saturating_mul(size_of::<Page>())
    }

    /// True when there is no buffer view (MDL / PFN GPADLs).
    ///
    /// IRQL: any.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.raw.len == 0
    }

    /// The channel this GPADL belongs to.
    ///
    /// IRQL: any.
    #[must_use]
    pub fn channel(&self) -> &ChannelRef<H> {
        &self.channel
    }

    /// Copies `out.len()` bytes from `offset` of the shared buffer.
    ///
    /// # Errors
    /// `STATUS_INVALID_PARAMETER` when the range is outside the buffer (or there is none).
    ///
    /// IRQL: ≤ DISPATCH_LEVEL (the buffer is nonpaged or locked).
    pub fn read(&self, offset: usize, out: &mut [u8]) -> Result<()> {
        let source = self.range(offset, out.len())?;
        // SAFETY: `range` checked the bytes lie in the owned buffer; `out` is a distinct Rust
        // buffer. The copy races only with the opposite endpoint, as any DMA buffer does.
        unsafe { core::ptr::copy_nonoverlapping(source, out.as_mut_ptr(), out.len()) };
        Ok(())
    }

    /// Copies `data` to `offset` of the shared buffer. `&mut self`: two driver threads must not
    /// write (or read and write) the buffer at once; the host's accesses are outside Rust.
    ///
    /// # Errors
    /// `STATUS_INVALID_PARAMETER` when the range is outside the buffer (or there is none).
    ///
    /// IRQL: ≤ DISPATCH_LEVEL (the buffer is nonpaged or locked).
    pub fn write(&mut self, offset: usize, data: &[u8]) -> Result<()> {
        let target = self.range(offset, data.len())?;
        // SAFETY: as in `read`, with the roles swapped; the buffer is owned by this value.
        unsafe { core::ptr::copy_nonoverlapping(data.as_ptr(), target, data.len()) };
        Ok(())
    }

    fn range(&self, offset: usize, len: usize) -> Result<*mut u8> {
        match offset.checked_add(len) {
            Some(end) if end <= self.len() => {
                Ok(self.raw.base.as_ptr().cast::<u8>().wrapping_add(offset))
            }
            _ => Err(NtStatus::INVALID_PARAMETER),
        }
    }

    fn entry(&self) -> Option<&GpadlEntry> {
        self.channel.gpadls.get(self.entry)
    }

    /// `VmbChannelDeleteGpadl`: revokes the host's access (returns once the host has released
    /// the GPADL) and gives the buffer back. After the channel's teardown the GPADL is already
    /// deleted and the buffer is just returned.
    ///
    /// IRQL: PASSIVE_LEVEL (it waits for the host).
    pub fn delete(self, irql: &PassiveLevel) -> B {
        let _ = irql;
        if let Some(entry) = self.entry() {
            match self.channel.enter_any() {
                Ok(_entered) => {
                    if entry.moved(LIVE, DELETING) {
                        delete_kmcl(&self.channel, self.handle);
                    }
                }
                // Teardown has started: it deletes the GPADL; wait until it has.
                Err(_) => entry.wait_orphaned(),
            }
            // SAFETY: this handle owns the entry now (DELETING or ORPHANED).
            unsafe { entry.buffer.get().write(None) };
            entry.state.store(FREE);
        }
        let this = core::mem::ManuallyDrop::new(self);
        // SAFETY: the channel reference, moved out once (the handle is not dropped).
        drop(unsafe { core::ptr::read(&this.channel) });
        // SAFETY: the GPADL is deleted; the buffer's parts came from a `B` and are used once.
        unsafe { this.raw.into_buffer::<B>() }
    }
}

impl<H: ChannelHandler, B: OwnedBuffer<Page>> Drop for Gpadl<H, B> {
    /// Parks the buffer in the channel's table (no blocking: this may run at DISPATCH_LEVEL);
    /// [`ChannelCore::reclaim_gpadls`] or teardown deletes the GPADL and frees it. If teardown
    /// already deleted the GPADL, frees the buffer now; if teardown is deleting it right now,
    /// leaves the buffer to teardown.
    fn drop(&mut self) {
        let Some(entry) = self.entry() else { return };
        // Never waits: this may run at DISPATCH_LEVEL on the processor teardown needs.
        loop {
            if entry.moved(LIVE, PARKED) || entry.moved(DELETING, DELETING_PARKED) {
                // The table owns the buffer now; reclaim or teardown frees it.
                return;
            }
            if entry.moved(ORPHANED, FREE) {
                // SAFETY: teardown deleted the GPADL; the buffer is this handle's, freed once.
                unsafe { self.raw.drop_buffer() };
                return;
            }
            // Only LIVE, DELETING and ORPHANED are reachable while the handle lives; a failed
            // exchange means another one just happened, so look again.
            crate::spin::relax();
        }
    }
}

impl<H: ChannelHandler, B: OwnedBuffer<Page>> core::fmt::Debug for Gpadl<H, B> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Gpadl")
            .field("handle", &self.handle)
            .field("len", &self.len())
            .finish_non_exhaustive()
    }
}
