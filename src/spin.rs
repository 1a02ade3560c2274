//! Busy-wait points. The library spins in three places, each bounded by another thread's
//! progress: a rundown waiting for its holders to leave, a dropped GPADL waiting for teardown to
//! finish deleting it, and a pended packet waiting for the thread that has it busy. In a kernel
//! build each iteration is the processor's pause hint. Elsewhere an emulator may install a hook
//! ([`set_spin_hook`]) that lets its other threads run: under a deterministic schedule only one
//! thread runs at a time, and a spinner that never gave way would wait forever.

use core::sync::atomic::{AtomicPtr, Ordering};

/// One iteration of a busy wait: the pause hint, then the installed hook (off Windows).
#[inline]
pub(crate) fn relax() {
    core::hint::spin_loop();
    #[cfg(not(kmcl_wdk))]
    {
        let hook = SPIN_HOOK.load(Ordering::Acquire);
        if !hook.is_null() {
            // SAFETY: non-null values are stored only by `set_spin_hook` from an `fn()` (a
            // function pointer cast to a data pointer keeps its provenance).
            let hook = unsafe { core::mem::transmute::<*mut (), fn()>(hook) };
            hook();
        }
    }
}

/// The hook behind [`relax`] off Windows (null: none installed).
static SPIN_HOOK: AtomicPtr<()> = AtomicPtr::new(core::ptr::null_mut());

/// Installs the function every busy-wait iteration calls off Windows (an emulator's "let the
/// other threads run"); `None` removes it. Any IRQL; the hook must not call back into the
/// library. Has no effect in a kernel build.
pub fn set_spin_hook(hook: Option<fn()>) {
    let raw = hook.map_or(core::ptr::null_mut(), |f| f as *mut ());
    SPIN_HOOK.store(raw, Ordering::Release);
}
