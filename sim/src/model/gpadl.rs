//! GPADLs: guest buffers described to the host, and the host's bounds-checked view of them.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};

use vmbus_kmcl::sys::{NTSTATUS, VMBUS_CHANNEL_GPADL_FLAG_READ_ONLY};

use crate::base::event::lock;
use crate::base::memory::{self, MdlSpan, PAGE_SIZE, RegionGuard};
use crate::base::status::{STATUS_DEVICE_REMOVED, STATUS_INVALID_DEVICE_STATE, STATUS_SUCCESS};
use crate::model::channel::{Channel, State};
use crate::model::host::HostError;
use crate::verifier::report::ViolationKind;

static NEXT_GPADL: AtomicU32 = AtomicU32::new(1);

fn next_handle() -> u32 {
    loop {
        let h = NEXT_GPADL.fetch_add(1, Ordering::Relaxed);
        if h != 0 {
            return h;
        }
    }
}

/// A GPADL's mapping: the guest spans it covers, in order.
#[derive(Debug)]
pub(crate) struct GpadlMapping {
    pub(crate) handle: u32,
    read_only: bool,
    spans: Vec<MdlSpan>,
    len: usize,
    /// `true` once deleted; host accesses hold the read lock for the whole copy.
    revoked: RwLock<bool>,
    region: Mutex<Option<RegionGuard>>,
}

impl GpadlMapping {
    /// Marks the GPADL deleted, waiting for host accesses in progress.
    pub(crate) fn revoke(&self) {
        *self.revoked.write().unwrap_or_else(PoisonError::into_inner) = true;
        drop(lock(&self.region).take());
    }

    fn access(
        &self,
        offset: usize,
        len: usize,
        mut f: impl FnMut(usize, core::ops::Range<usize>) -> Result<(), memory::MemError>,
    ) -> Result<(), HostError> {
        let revoked = self.revoked.read().unwrap_or_else(PoisonError::into_inner);
        if *revoked {
            return Err(HostError::Revoked);
        }
        let end = offset.checked_add(len).ok_or(HostError::OutOfRange)?;
        if end > self.len {
            return Err(HostError::OutOfRange);
        }
        let mut pos = 0usize;
        for s in &self.spans {
            let s_end = pos + s.len;
            let lo = offset.max(pos);
            let hi = end.min(s_end);
            if lo < hi {
                f(
                    s.address.wrapping_add(lo - pos),
                    (lo - offset)..(hi - offset),
                )
                .map_err(|_| HostError::NotMapped)?;
            }
            pos = s_end;
        }
        drop(revoked);
        Ok(())
    }
}

/// The host's view of a guest GPADL: bounds-checked reads and writes of the guest buffer, valid
/// until the guest deletes the GPADL (then every access fails with [`HostError::Revoked`]).
/// `VmbChannelDeleteGpadl` waits for an access in progress, so the guest may reuse its memory as
/// soon as the delete returns.
#[derive(Clone, Debug)]
pub struct GpadlView {
    map: Arc<GpadlMapping>,
}

impl GpadlView {
    /// The GPADL handle.
    #[must_use]
    pub fn handle(&self) -> u32 {
        self.map.handle
    }

    /// Length of the described buffer, in bytes.
    #[must_use]
    pub fn len(&self) -> usize {
        self.map.len
    }

    /// True if the buffer is empty (never, for a created GPADL).
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.map.len == 0
    }

    /// True if the guest created it with `VMBUS_CHANNEL_GPADL_FLAG_READ_ONLY`; host writes then
    /// fail.
    #[must_use]
    pub fn is_read_only(&self) -> bool {
        self.map.read_only
    }

    /// True once the guest deleted the GPADL.
    #[must_use]
    pub fn is_revoked(&self) -> bool {
        *self
            .map
            .revoked
            .read()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Copies `out.len()` bytes starting `offset` bytes into the buffer.
    ///
    /// # Errors
    /// [`HostError::Revoked`], [`HostError::OutOfRange`], [`HostError::NotMapped`] (the guest
    /// memory behind it is gone).
    pub fn read(&self, offset: usize, out: &mut [u8]) -> Result<(), HostError> {
        let len = out.len();
        self.map.access(offset, len, |addr, range| {
            let dst = out.get_mut(range).ok_or(memory::MemError::NotMapped)?;
            memory::copy_from_guest(addr, dst)
        })
    }

    /// Copies `data` into the buffer starting `offset` bytes in.
    ///
    /// # Errors
    /// [`HostError::ReadOnly`] for a read-only GPADL, else as for [`GpadlView::read`].
    pub fn write(&self, offset: usize, data: &[u8]) -> Result<(), HostError> {
        if self.map.read_only {
            return Err(HostError::ReadOnly);
        }
        self.map.access(offset, data.len(), |addr, range| {
            let src = data.get(range).ok_or(memory::MemError::NotMapped)?;
            memory::copy_to_guest(addr, src)
        })
    }
}

/// The host view of GPADL `handle` of `ch`.
pub(crate) fn view(ch: &Channel, handle: u32) -> Option<GpadlView> {
    lock(&ch.inner)
        .gpadls
        .get(&handle)
        .map(|m| GpadlView { map: Arc::clone(m) })
}

/// Creates a GPADL over `spans`; `region` keeps a raw buffer known while the GPADL lives.
pub(crate) fn create(
    ch: &Channel,
    slot: &'static str,
    flags: u32,
    spans: Vec<MdlSpan>,
    region: Option<RegionGuard>,
    out: *mut u32,
) -> NTSTATUS {
    let mut inner = lock(&ch.inner);
    if inner.host_took_it_away() {
        // The host rescinded the channel: the driver cannot know yet, so the creation fails
        // as the host's refusal would, without a violation.
        return STATUS_DEVICE_REMOVED;
    }
    if !matches!(inner.state, State::Running | State::Paused) {
        let state = inner.state;
        drop(inner);
        ch.violation(
            slot,
            ViolationKind::WrongState,
            format!("GPADL created on a channel in state {state:?} (must be enabled)"),
        );
        return STATUS_INVALID_DEVICE_STATE;
    }
    let handle = next_handle();
    let len = spans.iter().map(|s| s.len).sum();
    inner.gpadls.insert(
        handle,
        Arc::new(GpadlMapping {
            handle,
            read_only: flags & VMBUS_CHANNEL_GPADL_FLAG_READ_ONLY != 0,
            spans,
            len,
            revoked: RwLock::new(false),
            region: Mutex::new(region),
        }),
    );
    drop(inner);
    // SAFETY: the slot checked `out` non-null; the driver passes a writable ULONG.
    unsafe { out.write_unaligned(handle) };
    STATUS_SUCCESS
}

/// Spans of whole pages given by PFN (each must be known memory).
pub(crate) fn pfn_spans(pfns: &[u64]) -> Result<Vec<MdlSpan>, u64> {
    pfns.iter()
        .map(|&pfn| {
            let addr = usize::try_from(pfn)
                .ok()
                .and_then(|p| p.checked_mul(PAGE_SIZE))
                .filter(|&a| memory::is_known(a, PAGE_SIZE))
                .ok_or(pfn)?;
            Ok(MdlSpan {
                address: addr,
                len: PAGE_SIZE,
            })
        })
        .collect()
}

/// `VmbChannelDeleteGpadl`.
pub(crate) fn delete(ch: &Channel, slot: &'static str, handle: u32) {
    let mapping = {
        let mut inner = lock(&ch.inner);
        match inner.gpadls.remove(&handle) {
            Some(m) => {
                inner.deleted_gpadls.insert(handle);
                Some(m)
            }
            None => {
                let twice = inner.deleted_gpadls.contains(&handle);
                drop(inner);
                if twice {
                    ch.violation(
                        slot,
                        ViolationKind::GpadlDeletedTwice,
                        format!("GPADL {handle} deleted twice"),
                    );
                } else {
                    ch.violation(
                        slot,
                        ViolationKind::InvalidParameter,
                        format!("GPADL {handle} is not a GPADL of this channel"),
                    );
                }
                None
            }
        }
    };
    if let Some(m) = mapping {
        m.revoke();
    }
}
