//! [`Gpadl`]: a Guest Physical Address Descriptor List shared with the opposite endpoint
//! (`VmbChannelCreateGpadlFrom{Buffer,Mdl,PfnList}` … `VmbChannelDeleteGpadl`).

use core::marker::PhantomData;
use core::ptr::NonNull;

use crate::channel::Channel;
use crate::flags::GpadlFlags;
use crate::handler::ChannelHandler;
use crate::interface::slot;
use crate::status::{NtStatus, Result};
use crate::sys;

/// A GPADL over memory the opposite endpoint may map. Deleted (`VmbChannelDeleteGpadl`) on
/// drop, after which the memory is the driver's again.
///
/// It borrows its channel (`'c`) and, for [`Channel::create_gpadl`], the buffer (`'b`), so by
/// type it cannot outlive either. While it lives, the opposite endpoint may write the buffer at
/// any time: read and write it through [`read`](Self::read) / [`write`](Self::write), which
/// copy without creating Rust references to shared memory.
///
/// A GPADL cannot outlive its buffer:
///
/// ```compile_fail,E0597
/// # use vmbus_kmcl::{Channel, ChannelHandler, Gpadl, GpadlFlags};
/// # struct H;
/// # impl ChannelHandler for H { type PacketContext = (); }
/// fn share<'c>(channel: &'c Channel<H>) -> Gpadl<'c, 'c, H> {
///     let mut buffer = [0_u8; 4096];
///     channel.create_gpadl(&mut buffer, GpadlFlags::empty()).unwrap()
/// }
/// ```
pub struct Gpadl<'c, 'b, H: ChannelHandler> {
    channel: &'c Channel<H>,
    handle: u32,
    buffer: Option<(NonNull<u8>, usize)>,
    _buffer: PhantomData<&'b mut [u8]>,
}

impl<H: ChannelHandler> Channel<H> {
    /// `VmbChannelCreateGpadlFromBuffer`: shares `buffer` (probed and locked by KMCL until
    /// the GPADL is deleted). The handle ([`Gpadl::handle`]) is what the device protocol sends
    /// to the host. Returns once the host has acknowledged the GPADL.
    ///
    /// # Errors
    /// `STATUS_INVALID_PARAMETER_4` for an empty buffer or one over 4 GiB; the KMCL status.
    ///
    /// IRQL: PASSIVE_LEVEL.
    pub fn create_gpadl<'b>(
        &self,
        buffer: &'b mut [u8],
        flags: GpadlFlags,
    ) -> Result<Gpadl<'_, 'b, H>> {
        let len = u32::try_from(buffer.len()).map_err(|_| NtStatus::INVALID_PARAMETER_4)?;
        if len == 0 {
            return Err(NtStatus::INVALID_PARAMETER_4);
        }
        let create = slot(self.interface().raw().VmbChannelCreateGpadlFromBuffer)?;
        let mut handle = 0_u32;
        let base = NonNull::from(&mut *buffer).cast::<u8>();
        // SAFETY: a live channel; the buffer stays borrowed (valid, not moved) by the returned
        // GPADL until it is deleted; `handle` is a valid out pointer.
        NtStatus(unsafe {
            create(
                self.as_raw(),
                flags.bits(),
                base.as_ptr().cast(),
                len,
                &raw mut handle,
            )
        })
        .ok()?;
        Ok(Gpadl {
            channel: self,
            handle,
            buffer: Some((base, buffer.len())),
            _buffer: PhantomData,
        })
    }

    /// `VmbChannelCreateGpadlFromMdl`: shares `length` bytes of `mdl` starting `offset` bytes
    /// in.
    ///
    /// # Errors
    /// The KMCL status.
    ///
    /// # Safety
    /// The MDL and its pages stay valid and locked until the returned GPADL is dropped.
    ///
    /// IRQL: PASSIVE_LEVEL.
    pub unsafe fn create_gpadl_from_mdl(
        &self,
        mdl: NonNull<sys::MDL>,
        offset: u32,
        length: u32,
        flags: GpadlFlags,
    ) -> Result<Gpadl<'_, 'static, H>> {
        let create = slot(self.interface().raw().VmbChannelCreateGpadlFromMdl)?;
        let mut handle = 0_u32;
        // SAFETY: a live channel; the MDL is valid per this function's contract.
        NtStatus(unsafe {
            create(
                self.as_raw(),
                flags.bits(),
                mdl.as_ptr(),
                offset,
                length,
                &raw mut handle,
            )
        })
        .ok()?;
        Ok(Gpadl {
            channel: self,
            handle,
            buffer: None,
            _buffer: PhantomData,
        })
    }

    /// `VmbChannelCreateGpadlFromPfnList` (V4): shares the 4 KiB pages `pfns`.
    ///
    /// # Errors
    /// `STATUS_INVALID_PARAMETER_4` for an empty list or more than `u32::MAX` PFNs;
    /// `STATUS_NOT_SUPPORTED` before V4; the KMCL status.
    ///
    /// # Safety
    /// The pages stay valid and allocated to the driver until the returned GPADL is dropped.
    ///
    /// IRQL: PASSIVE_LEVEL.
    pub unsafe fn create_gpadl_from_pfns(
        &self,
        pfns: &[sys::PFN_NUMBER],
        flags: GpadlFlags,
    ) -> Result<Gpadl<'_, 'static, H>> {
        let create = slot(self.interface().raw().VmbChannelCreateGpadlFromPfnList)?;
        let count = u32::try_from(pfns.len()).map_err(|_| NtStatus::INVALID_PARAMETER_4)?;
        if count == 0 {
            return Err(NtStatus::INVALID_PARAMETER_4);
        }
        let mut handle = 0_u32;
        // SAFETY: a live channel; the list is read during the call, the pages are valid per this
        // function's contract.
        NtStatus(unsafe {
            create(
                self.as_raw(),
                flags.bits(),
                pfns.as_ptr().cast_mut(),
                count,
                &raw mut handle,
            )
        })
        .ok()?;
        Ok(Gpadl {
            channel: self,
            handle,
            buffer: None,
            _buffer: PhantomData,
        })
    }
}

impl<H: ChannelHandler> Gpadl<'_, '_, H> {
    /// The GPADL handle to send to the opposite endpoint.
    ///
    /// IRQL: any.
    #[must_use]
    pub fn handle(&self) -> u32 {
        self.handle
    }

    /// Length of the shared buffer in bytes (0 for MDL / PFN GPADLs, whose memory the driver
    /// owns directly).
    #[must_use]
    pub fn len(&self) -> usize {
        self.buffer.map_or(0, |(_, len)| len)
    }

    /// True when there is no buffer view (MDL / PFN GPADLs).
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Copies `out.len()` bytes from `offset` of the shared buffer.
    ///
    /// # Errors
    /// `STATUS_INVALID_PARAMETER` when the range is outside the buffer (or there is none).
    ///
    /// IRQL: any (the buffer is locked); ≤ DISPATCH_LEVEL for nonpaged buffers.
    pub fn read(&self, offset: usize, out: &mut [u8]) -> Result<()> {
        let source = self.range(offset, out.len())?;
        // SAFETY: `range` checked the bytes lie in the borrowed buffer; `out` is a distinct
        // Rust buffer. The copy races only with the opposite endpoint, as any DMA buffer does.
        unsafe { core::ptr::copy_nonoverlapping(source, out.as_mut_ptr(), out.len()) };
        Ok(())
    }

    /// Copies `data` to `offset` of the shared buffer.
    ///
    /// # Errors
    /// `STATUS_INVALID_PARAMETER` when the range is outside the buffer (or there is none).
    ///
    /// IRQL: any (the buffer is locked); ≤ DISPATCH_LEVEL for nonpaged buffers.
    pub fn write(&self, offset: usize, data: &[u8]) -> Result<()> {
        let target = self.range(offset, data.len())?;
        // SAFETY: as in `read`, with the roles swapped; the buffer is borrowed mutably.
        unsafe { core::ptr::copy_nonoverlapping(data.as_ptr(), target, data.len()) };
        Ok(())
    }

    fn range(&self, offset: usize, len: usize) -> Result<*mut u8> {
        let (base, size) = self.buffer.ok_or(NtStatus::INVALID_PARAMETER)?;
        match offset.checked_add(len) {
            Some(end) if end <= size => Ok(base.as_ptr().wrapping_add(offset)),
            _ => Err(NtStatus::INVALID_PARAMETER),
        }
    }
}

impl<H: ChannelHandler> Drop for Gpadl<'_, '_, H> {
    fn drop(&mut self) {
        if let Some(delete) = self.channel.interface().raw().VmbChannelDeleteGpadl {
            // SAFETY: a GPADL this value created, deleted exactly once; KMCL returns once the
            // opposite endpoint has released it.
            unsafe { delete(self.channel.as_raw(), self.handle) };
        }
    }
}

impl<H: ChannelHandler> core::fmt::Debug for Gpadl<'_, '_, H> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Gpadl")
            .field("handle", &self.handle)
            .field("len", &self.len())
            .finish()
    }
}
