//! [`HostBytes`]: a view of memory the opposite endpoint can write while the driver reads it
//! (in-band data of an incoming packet, a completion's response, mapped external data).
//!
//! A hostile host may change these bytes between two reads, so the crate never hands out a
//! `&[u8]` over them: a Rust reference would promise that they do not change. The view only
//! copies: copy once into driver memory, then validate and use the copy (no double fetch).

use core::marker::PhantomData;

/// Bytes the opposite endpoint may change at any time, valid for `'a`. Copy them out with
/// [`copy_to`](Self::copy_to), [`read_at`](Self::read_at) or [`to_array`](Self::to_array),
/// then validate the copy.
///
/// The view borrows whatever keeps the memory valid (the packet, the completion), so it cannot
/// outlive it:
///
/// ```compile_fail,E0505
/// # use vmbus_kmcl::{ChannelCore, ChannelHandler, IncomingPacket};
/// struct Vsc;
/// impl ChannelHandler for Vsc {
///     type PacketContext = ();
///     fn process_packet(&self, _: &ChannelCore<Self>, packet: IncomingPacket<'_, Self>) {
///         let data = packet.data();
///         let _ = packet.complete(b"");
///         let _ = data.len(); // the packet (and its buffer) is gone
///     }
/// }
/// ```
#[derive(Clone, Copy)]
pub struct HostBytes<'a> {
    base: *const u8,
    len: usize,
    _memory: PhantomData<&'a [u8]>,
}

// SAFETY: a view that only copies out of memory valid for 'a; copying from several threads at
// once is as safe as the opposite endpoint writing it.
unsafe impl Send for HostBytes<'_> {}
// SAFETY: as above; `&HostBytes` offers only copies.
unsafe impl Sync for HostBytes<'_> {}

impl<'a> HostBytes<'a> {
    /// An empty view.
    pub const EMPTY: Self = Self {
        base: core::ptr::null(),
        len: 0,
        _memory: PhantomData,
    };

    /// # Safety
    /// `base` is null with `len == 0`, or points to `len` bytes that stay readable for `'a`.
    pub(crate) unsafe fn from_raw(base: *const u8, len: usize) -> Self {
        if base.is_null() {
            return Self::EMPTY;
        }
        Self {
            base,
            len,
            _memory: PhantomData,
        }
    }

    /// Length in bytes.
    ///
    /// IRQL: any.
    #[must_use]
    pub fn len(&self) -> usize {
        self.len
    }

    /// True for no bytes.
    ///
    /// IRQL: any.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Copies the first `min(self.len(), out.len())` bytes into `out`; returns how many.
    ///
    /// IRQL: the caller's (the memory is nonpaged or locked).
    pub fn copy_to(&self, out: &mut [u8]) -> usize {
        let n = self.len.min(out.len());
        if n > 0 {
            // SAFETY: `n` bytes inside this view (valid for 'a) into a distinct Rust buffer.
            unsafe { core::ptr::copy_nonoverlapping(self.base, out.as_mut_ptr(), n) };
        }
        n
    }

    /// Copies exactly `out.len()` bytes starting `offset` bytes in.
    ///
    /// # Errors
    /// `STATUS_INVALID_PARAMETER` when the range is not inside the view.
    ///
    /// IRQL: the caller's.
    pub fn read_at(&self, offset: usize, out: &mut [u8]) -> crate::Result<()> {
        match offset.checked_add(out.len()) {
            Some(end) if end <= self.len => {
                if !out.is_empty() {
                    // SAFETY: the range was checked against the view.
                    unsafe {
                        core::ptr::copy_nonoverlapping(
                            self.base.wrapping_add(offset),
                            out.as_mut_ptr(),
                            out.len(),
                        )
                    };
                }
                Ok(())
            }
            _ => Err(crate::NtStatus::INVALID_PARAMETER),
        }
    }

    /// The first `N` bytes as an array, zero-filled past the end of the view.
    ///
    /// IRQL: the caller's.
    #[must_use]
    pub fn to_array<const N: usize>(&self) -> [u8; N] {
        let mut out = [0_u8; N];
        self.copy_to(&mut out);
        out
    }
}

impl core::fmt::Debug for HostBytes<'_> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("HostBytes").field("len", &self.len).finish()
    }
}
