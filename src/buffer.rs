//! [`OwnedBuffer`]: memory the driver hands over to a channel for as long as KMCL or the host
//! may touch it (GPADL pages, packet-pool storage). Owning it, rather than borrowing it, is what
//! makes forgetting a handle leak the memory instead of freeing it under the host's feet.

extern crate alloc;

use alloc::boxed::Box;
use core::ptr::NonNull;

/// An owned slice of `T` at a stable address, movable through raw parts.
///
/// Implemented for `&'static mut [T]` (a static or leaked buffer: never freed) and
/// `Box<[T]>` (freed with the global allocator, which in a kernel driver is nonpaged pool).
///
/// # Safety
/// `into_raw` returns the address and length of memory that stays valid, at that address, until
/// `from_raw` rebuilds the value from exactly those parts; moving the raw parts does not move
/// the memory; the memory is readable and writable and not reachable through any other value.
pub unsafe trait OwnedBuffer<T>: Send + 'static {
    /// Gives up the buffer as (first element, element count).
    fn into_raw(self) -> (NonNull<T>, usize);

    /// Rebuilds the buffer.
    ///
    /// # Safety
    /// `base` and `len` come from `into_raw` of the same type, and are used once.
    unsafe fn from_raw(base: NonNull<T>, len: usize) -> Self;
}

// SAFETY: a 'static exclusive borrow is never freed; its parts rebuild the same borrow.
unsafe impl<T: Send + 'static> OwnedBuffer<T> for &'static mut [T] {
    fn into_raw(self) -> (NonNull<T>, usize) {
        let len = self.len();
        (NonNull::from(self).cast::<T>(), len)
    }
    unsafe fn from_raw(base: NonNull<T>, len: usize) -> Self {
        // SAFETY: per the contract, the parts of a `&'static mut [T]`, used once.
        unsafe { core::slice::from_raw_parts_mut(base.as_ptr(), len) }
    }
}

// SAFETY: a boxed slice's heap memory does not move with the box; `Box::from_raw` takes back
// exactly what `Box::into_raw` gave up.
unsafe impl<T: Send + 'static> OwnedBuffer<T> for Box<[T]> {
    fn into_raw(self) -> (NonNull<T>, usize) {
        let len = self.len();
        let raw = Box::into_raw(self);
        // SAFETY: `Box::into_raw` never returns null.
        (unsafe { NonNull::new_unchecked(raw) }.cast::<T>(), len)
    }
    unsafe fn from_raw(base: NonNull<T>, len: usize) -> Self {
        let slice = core::ptr::slice_from_raw_parts_mut(base.as_ptr(), len);
        // SAFETY: per the contract, the parts of a `Box<[T]>`, used once.
        unsafe { Box::from_raw(slice) }
    }
}

/// A type-erased [`OwnedBuffer`]: its parts and the function that drops it.
#[derive(Clone, Copy)]
pub(crate) struct RawBuffer<T> {
    pub(crate) base: NonNull<T>,
    pub(crate) len: usize,
    drop: unsafe fn(NonNull<T>, usize),
}

impl<T> RawBuffer<T> {
    pub(crate) fn new<B: OwnedBuffer<T>>(buffer: B) -> Self {
        let (base, len) = buffer.into_raw();
        Self {
            base,
            len,
            drop: drop_raw::<T, B>,
        }
    }

    /// Rebuilds the original buffer.
    ///
    /// # Safety
    /// Made by `new::<B>` with this same `B`, and not yet dropped or rebuilt.
    pub(crate) unsafe fn into_buffer<B: OwnedBuffer<T>>(self) -> B {
        // SAFETY: per this function's contract.
        unsafe { B::from_raw(self.base, self.len) }
    }

    /// Drops the original buffer.
    ///
    /// # Safety
    /// Not yet dropped or rebuilt, and nothing (KMCL, the host) uses the memory any more.
    pub(crate) unsafe fn drop_buffer(self) {
        // SAFETY: per this function's contract.
        unsafe { (self.drop)(self.base, self.len) };
    }
}

unsafe fn drop_raw<T, B: OwnedBuffer<T>>(base: NonNull<T>, len: usize) {
    // SAFETY: called once by `RawBuffer::drop_buffer` with the parts of a `B`.
    drop(unsafe { B::from_raw(base, len) });
}
