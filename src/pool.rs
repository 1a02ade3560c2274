//! [`PacketPool`]: outgoing packets in driver-provided storage (`VmbChannelSizeofPacket` +
//! `VmbPacketInitialize`), so that a driver can send without touching KMCL's packet pool or any
//! allocator.
//!
//! The storage is handed to the channel for good: it is freed at the channel's teardown, after
//! `VmbChannelCleanup`, when KMCL can no longer touch any packet in it. Dropping or forgetting a
//! `PacketPool` handle therefore never frees storage that a packet in flight lives in.

use core::cell::UnsafeCell;
use core::ptr::NonNull;
use core::sync::atomic::{AtomicU32, Ordering};

use crate::buffer::{OwnedBuffer, RawBuffer};
use crate::channel::{ChannelCore, ChannelRef};
use crate::flags::SendFlags;
use crate::handler::ChannelHandler;
use crate::interface::slot;
use crate::packet::OutgoingPacket;
use crate::state::StateWord;
use crate::status::{NtStatus, Result};

/// One 16-byte, 16-aligned unit of pool storage. Give a pool `Box<[PoolWord]>` (nonpaged pool
/// through the driver's global allocator) or a `&'static mut [PoolWord]` (a static in the
/// driver image, nonpaged by default) of [`PacketPool::words_needed`] words. KMCL touches the
/// storage at DISPATCH_LEVEL, so it must be nonpaged: pageable memory is not an
/// [`OwnedBuffer`] this crate offers.
#[derive(Clone, Copy, Debug)]
#[repr(C, align(16))]
pub struct PoolWord([u8; 16]);

impl PoolWord {
    /// A zeroed word.
    pub const ZERO: Self = Self([0; 16]);
}

/// Bytes before each packet's storage: its busy flag, padded to keep the packet 16-aligned.
const SLOT_HEADER: usize = size_of::<PoolWord>();
const FREE: u32 = 0;
const BUSY: u32 = 1;

/// Pool table entry states.
const ENTRY_FREE: u8 = 0;
const ENTRY_CLAIMED: u8 = 1;
const ENTRY_ATTACHED: u8 = 2;

/// A channel's record of one attached pool's storage, freed at teardown.
pub(crate) struct PoolEntry {
    state: StateWord,
    storage: UnsafeCell<Option<RawBuffer<PoolWord>>>,
}

// SAFETY: `storage` is written once by the thread that claimed the entry, before the Release
// store of ATTACHED, and read only at teardown after every holder has left (rundown).
unsafe impl Sync for PoolEntry {}

impl PoolEntry {
    pub(crate) fn new() -> Self {
        Self {
            state: StateWord::new(ENTRY_FREE),
            storage: UnsafeCell::new(None),
        }
    }
}

/// A fixed set of packet slots in storage owned by the channel.
///
/// [`send`](Self::send) and [`with_packet`](Self::with_packet) build packets with
/// `VmbPacketInitialize` in a free slot; a slot becomes free again when its packet's completion
/// has been delivered, or when an unsent packet is dropped or its send fails. The handle holds
/// a [`ChannelRef`], so it can be kept in driver state beside the channel; after teardown its
/// calls fail with `STATUS_INVALID_DEVICE_STATE`.
///
/// Pool storage must be owned (`'static`): a pool over a stack buffer does not compile.
///
/// ```compile_fail,E0597
/// # use vmbus_kmcl::{ChannelCore, ChannelHandler, PoolWord};
/// # struct H;
/// # impl ChannelHandler for H { type PacketContext = (); }
/// fn attach(channel: &ChannelCore<H>) {
///     let mut storage = [PoolWord::ZERO; 64];
///     let _pool = channel.attach_packet_pool(&mut storage[..]);
/// }
/// ```
pub struct PacketPool<H: ChannelHandler> {
    channel: ChannelRef<H>,
    base: NonNull<u8>,
    stride: usize,
    packet_bytes: u32,
    count: usize,
}

// SAFETY: the slots are claimed with atomic flags; the storage stays valid until teardown, and
// every access to it holds the channel's rundown reference.
unsafe impl<H: ChannelHandler> Send for PacketPool<H> {}
// SAFETY: as above; every `&self` method is safe to call concurrently.
unsafe impl<H: ChannelHandler> Sync for PacketPool<H> {}

/// Why attaching a pool failed, with the storage given back.
#[derive(Debug)]
pub struct AttachPoolError<S> {
    /// `STATUS_BUFFER_TOO_SMALL` when not one slot fits, `STATUS_INSUFFICIENT_RESOURCES` when
    /// the channel's pool table is full, `STATUS_INVALID_DEVICE_STATE` after teardown,
    /// `STATUS_NOT_SUPPORTED` without `VmbChannelSizeofPacket`.
    pub status: NtStatus,
    /// The storage, unchanged.
    pub storage: S,
}

impl<H: ChannelHandler> ChannelCore<H> {
    /// Gives `storage` to the channel as a packet pool with as many slots as fit (see
    /// [`PacketPool::words_needed`]). The channel frees the storage at teardown.
    ///
    /// # Errors
    /// [`AttachPoolError`], with the storage back.
    ///
    /// IRQL: ≤ DISPATCH_LEVEL (no KMCL call but `VmbChannelSizeofPacket`).
    pub fn attach_packet_pool<S: OwnedBuffer<PoolWord>>(
        &self,
        storage: S,
    ) -> core::result::Result<PacketPool<H>, AttachPoolError<S>> {
        let fail = |status, storage| Err(AttachPoolError { status, storage });
        let packet_bytes = match self.packet_storage_size() {
            Ok(bytes) => bytes,
            Err(status) => return fail(status, storage),
        };
        let stride = slot_stride(packet_bytes);
        let Ok(_entered) = self.enter_any() else {
            return fail(NtStatus::INVALID_DEVICE_STATE, storage);
        };
        let Some(entry) = self
            .pools
            .iter()
            .find(|entry| entry.state.moved(ENTRY_FREE, ENTRY_CLAIMED))
        else {
            return fail(NtStatus::INSUFFICIENT_RESOURCES, storage);
        };
        let raw = RawBuffer::new(storage);
        let count = raw.len.saturating_mul(SLOT_HEADER) / stride;
        if count == 0 {
            entry.state.store(ENTRY_FREE);
            // SAFETY: made from an `S` just above, not used since.
            let storage = unsafe { raw.into_buffer::<S>() };
            return fail(NtStatus::BUFFER_TOO_SMALL, storage);
        }
        // Every busy flag starts FREE.
        for index in 0..count {
            let flag = raw.base.as_ptr().cast::<u8>().wrapping_add(index * stride);
            // SAFETY: the first word of slot `index`, inside the storage this entry now owns.
            unsafe { flag.cast::<PoolWord>().write(PoolWord::ZERO) };
        }
        // SAFETY: the entry is CLAIMED by this thread; nothing else reads it until ATTACHED.
        unsafe { entry.storage.get().write(Some(raw)) };
        entry.state.store(ENTRY_ATTACHED);
        Ok(PacketPool {
            channel: self.new_ref(),
            base: raw.base.cast::<u8>(),
            stride,
            packet_bytes,
            count,
        })
    }
}

/// Frees the storage of every attached pool (teardown).
///
/// # Safety
/// KMCL touches no packet of the channel any more (`VmbChannelCleanup` returned) and the
/// rundown has completed.
pub(crate) unsafe fn release_all<H: ChannelHandler>(core: &ChannelCore<H>) {
    for entry in &core.pools {
        if entry.state.load() == ENTRY_ATTACHED {
            // SAFETY: written before ATTACHED; no holder is left to read it.
            if let Some(raw) = unsafe { entry.storage.get().replace(None) } {
                // SAFETY: per this function's contract nothing uses the storage.
                unsafe { raw.drop_buffer() };
            }
            entry.state.store(ENTRY_FREE);
        }
    }
}

/// Bytes per slot: header plus the packet storage rounded up to whole words.
fn slot_stride(packet_bytes: u32) -> usize {
    SLOT_HEADER + (packet_bytes as usize).div_ceil(SLOT_HEADER) * SLOT_HEADER
}

impl<H: ChannelHandler> PacketPool<H> {
    /// How many [`PoolWord`]s a pool of `packets` slots needs on `channel`.
    ///
    /// # Errors
    /// `STATUS_NOT_SUPPORTED` if `VmbChannelSizeofPacket` is missing.
    ///
    /// IRQL: ≤ DISPATCH_LEVEL.
    pub fn words_needed(channel: &ChannelCore<H>, packets: usize) -> Result<usize> {
        let stride = slot_stride(channel.packet_storage_size()?);
        Ok(packets.saturating_mul(stride / SLOT_HEADER))
    }

    /// Number of packet slots.
    ///
    /// IRQL: any.
    #[must_use]
    pub fn capacity(&self) -> usize {
        self.count
    }

    /// Slots in use (sent and not yet completed); 0 after teardown.
    ///
    /// IRQL: any.
    #[must_use]
    pub fn in_use(&self) -> usize {
        let Ok(_entered) = self.channel.enter_any() else {
            return 0;
        };
        (0..self.count)
            .filter(|&i| self.flag(i).load(Ordering::Acquire) == BUSY)
            .count()
    }

    /// The channel this pool belongs to.
    ///
    /// IRQL: any.
    #[must_use]
    pub fn channel(&self) -> &ChannelRef<H> {
        &self.channel
    }

    /// Builds a packet in a free slot and sends `data` in-band (`VmbPacketInitialize` +
    /// `VmbPacketSend`). Allocation-free.
    ///
    /// # Errors
    /// As [`with_packet`](Self::with_packet) and [`OutgoingPacket::send`]; on error `context`
    /// is dropped.
    ///
    /// IRQL: ≤ DISPATCH_LEVEL.
    #[inline]
    pub fn send(&self, data: &[u8], flags: SendFlags, context: H::PacketContext) -> Result<()> {
        self.with_packet(|packet| packet.send(data, flags, context))?
    }

    /// Runs `f` with a packet built in a free slot (`VmbPacketInitialize`); an unsent packet's
    /// slot is freed when `f` returns.
    ///
    /// # Errors
    /// `STATUS_INVALID_DEVICE_STATE` when the channel is not enabled (or torn down);
    /// `STATUS_INSUFFICIENT_RESOURCES` when every slot is in use; the KMCL status of
    /// `VmbPacketInitialize`. `f` is not called on error.
    ///
    /// IRQL: ≤ DISPATCH_LEVEL.
    pub fn with_packet<R>(&self, f: impl FnOnce(OutgoingPacket<'_, H>) -> R) -> Result<R> {
        let core: &ChannelCore<H> = &self.channel;
        let _entered = core.enter()?;
        let initialize = slot(core.interface().raw().VmbPacketInitialize)?;
        for index in 0..self.count {
            let flag = self.flag(index);
            if flag
                .compare_exchange(FREE, BUSY, Ordering::AcqRel, Ordering::Relaxed)
                .is_err()
            {
                continue;
            }
            let packet = self.slot_ptr(index).wrapping_add(SLOT_HEADER).cast();
            // SAFETY: `packet_bytes` bytes of storage this slot owns exclusively (BUSY), sized
            // by `VmbChannelSizeofPacket`, valid until teardown (rundown held).
            let status = NtStatus(unsafe { initialize(core.as_raw(), packet, self.packet_bytes) });
            if !status.is_success() {
                flag.store(FREE, Ordering::Release);
                return Err(status);
            }
            // SAFETY: initialized in a slot whose flag sits SLOT_HEADER bytes before it, as
            // `release_slot` expects; the rundown reference is held for the packet's scope.
            return Ok(f(unsafe { OutgoingPacket::from_pool(core, packet) }));
        }
        Err(NtStatus::INSUFFICIENT_RESOURCES)
    }

    fn slot_ptr(&self, index: usize) -> *mut u8 {
        self.base
            .as_ptr()
            .wrapping_add(index.saturating_mul(self.stride))
    }

    /// The busy flag of slot `index`; the caller holds the rundown reference.
    fn flag(&self, index: usize) -> &AtomicU32 {
        // SAFETY: the first 4 bytes of each slot header are its flag: in bounds, 16-aligned,
        // only ever accessed atomically, and valid until teardown, which the caller's rundown
        // reference holds off.
        unsafe { AtomicU32::from_ptr(self.slot_ptr(index).cast()) }
    }
}

/// Marks a pooled packet's slot free.
///
/// # Safety
/// `packet` came from [`PacketPool::with_packet`] and is no longer used by KMCL or the driver;
/// the channel has not been torn down (KMCL completes packets before `VmbChannelDisable`
/// returns, and teardown frees the storage only after that).
pub(crate) unsafe fn release_slot(packet: crate::sys::VMBPACKET) {
    let flag = packet.cast::<u8>().wrapping_sub(SLOT_HEADER).cast::<u32>();
    // SAFETY: per the contract, the slot's flag sits SLOT_HEADER bytes before the packet and
    // the storage is still the channel's.
    unsafe { AtomicU32::from_ptr(flag) }.store(FREE, Ordering::Release);
}

impl<H: ChannelHandler> core::fmt::Debug for PacketPool<H> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("PacketPool")
            .field("capacity", &self.count)
            .field("packet_bytes", &self.packet_bytes)
            .finish_non_exhaustive()
    }
}
