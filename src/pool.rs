//! [`PacketPool`]: outgoing packets in caller storage (`VmbChannelSizeofPacket` +
//! `VmbPacketInitialize`), so that a driver can send without touching KMCL's packet pool or any
//! allocator.

use core::marker::PhantomData;
use core::ptr::NonNull;
use core::sync::atomic::{AtomicU32, Ordering};

use crate::channel::Channel;
use crate::handler::ChannelHandler;
use crate::interface::slot;
use crate::packet::OutgoingPacket;
use crate::status::{NtStatus, Result};

/// One 16-byte, 16-aligned unit of pool storage. Declare storage as `[PoolWord::ZERO; N]`
/// with `N` from [`PacketPool::words_needed`].
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

/// A fixed set of packet slots in caller storage, borrowed from the driver for `'s` and tied to
/// one channel.
///
/// [`allocate`](Self::allocate) hands out [`OutgoingPacket`]s built with `VmbPacketInitialize`;
/// a slot becomes free again when its packet's completion has been delivered, or when an
/// unsent packet is dropped or its send fails. Dropping the pool while packets are still in
/// flight disables the channel first (KMCL then completes them), so KMCL never holds storage
/// the driver has taken back.
///
/// An unsent packet cannot outlive its pool:
///
/// ```compile_fail,E0597
/// # use vmbus_kmcl::{Channel, ChannelHandler, OutgoingPacket, PoolWord};
/// # struct H;
/// # impl ChannelHandler for H { type PacketContext = (); }
/// fn escape<'c>(channel: &'c Channel<H>, storage: &'c mut [PoolWord]) -> OutgoingPacket<'c, H> {
///     let pool = channel.packet_pool(storage).unwrap();
///     pool.allocate().unwrap()
/// }
/// ```
pub struct PacketPool<'c, 's, H: ChannelHandler> {
    channel: &'c Channel<H>,
    base: NonNull<u8>,
    stride: usize,
    packet_bytes: u32,
    count: usize,
    _storage: PhantomData<&'s mut [PoolWord]>,
}

impl<H: ChannelHandler> Channel<H> {
    /// Builds a pool over `storage`, with as many packet slots as fit (see
    /// [`PacketPool::words_needed`]).
    ///
    /// # Errors
    /// `STATUS_BUFFER_TOO_SMALL` when not even one slot fits; `STATUS_NOT_SUPPORTED` if the
    /// sizing slot is missing.
    ///
    /// IRQL: any (no KMCL call but `VmbChannelSizeofPacket`, ≤ DISPATCH_LEVEL).
    pub fn packet_pool<'s>(&self, storage: &'s mut [PoolWord]) -> Result<PacketPool<'_, 's, H>> {
        let packet_bytes = self.packet_storage_size()?;
        let stride = slot_stride(packet_bytes);
        let bytes = core::mem::size_of_val(storage);
        let count = bytes / stride;
        if count == 0 {
            return Err(NtStatus::BUFFER_TOO_SMALL);
        }
        // Every busy flag starts FREE: zero the slot headers.
        storage.fill(PoolWord::ZERO);
        Ok(PacketPool {
            channel: self,
            base: NonNull::from(storage).cast::<u8>(),
            stride,
            packet_bytes,
            count,
            _storage: PhantomData,
        })
    }
}

/// Bytes per slot: header plus the packet storage rounded up to whole words.
fn slot_stride(packet_bytes: u32) -> usize {
    SLOT_HEADER + (packet_bytes as usize).div_ceil(SLOT_HEADER) * SLOT_HEADER
}

impl<'c, H: ChannelHandler> PacketPool<'c, '_, H> {
    /// How many [`PoolWord`]s a pool of `packets` slots needs on `channel`.
    ///
    /// # Errors
    /// `STATUS_NOT_SUPPORTED` if `VmbChannelSizeofPacket` is missing.
    pub fn words_needed(channel: &Channel<H>, packets: usize) -> Result<usize> {
        let stride = slot_stride(channel.packet_storage_size()?);
        Ok(packets.saturating_mul(stride / SLOT_HEADER))
    }

    /// Number of packet slots.
    #[must_use]
    pub fn capacity(&self) -> usize {
        self.count
    }

    /// Slots currently in use (allocated, sent and not yet completed).
    #[must_use]
    pub fn in_use(&self) -> usize {
        (0..self.count)
            .filter(|&i| self.flag(i).load(Ordering::Acquire) == BUSY)
            .count()
    }

    /// A packet in a free slot (`VmbPacketInitialize`). Allocation-free. The packet borrows the
    /// pool, so an unsent packet cannot outlive the storage its slot lives in.
    ///
    /// # Errors
    /// `STATUS_INVALID_DEVICE_STATE` when the channel is not enabled;
    /// `STATUS_INSUFFICIENT_RESOURCES` when every slot is in use; the KMCL status.
    ///
    /// IRQL: ≤ DISPATCH_LEVEL.
    pub fn allocate(&self) -> Result<OutgoingPacket<'_, H>> {
        self.channel.require_enabled()?;
        let initialize = slot(self.channel.interface().raw().VmbPacketInitialize)?;
        for index in 0..self.count {
            let flag = self.flag(index);
            if flag
                .compare_exchange(FREE, BUSY, Ordering::AcqRel, Ordering::Relaxed)
                .is_err()
            {
                continue;
            }
            let packet = self.slot_ptr(index).wrapping_add(SLOT_HEADER).cast();
            // SAFETY: `packet_bytes` bytes of storage this pool owns exclusively (the slot is
            // BUSY), sized by `VmbChannelSizeofPacket`.
            let status =
                NtStatus(unsafe { initialize(self.channel.as_raw(), packet, self.packet_bytes) });
            if !status.is_success() {
                flag.store(FREE, Ordering::Release);
                return Err(status);
            }
            // SAFETY: `packet` was just initialized in a slot whose flag sits SLOT_HEADER
            // bytes before it, as `release_slot` expects.
            return Ok(unsafe { OutgoingPacket::from_pool(self.channel, packet) });
        }
        Err(NtStatus::INSUFFICIENT_RESOURCES)
    }

    fn slot_ptr(&self, index: usize) -> *mut u8 {
        self.base
            .as_ptr()
            .wrapping_add(index.saturating_mul(self.stride))
    }

    fn flag(&self, index: usize) -> &AtomicU32 {
        // SAFETY: the first 4 bytes of each slot header are its flag: in bounds, 16-aligned,
        // only ever accessed atomically while the pool borrows the storage.
        unsafe { AtomicU32::from_ptr(self.slot_ptr(index).cast()) }
    }
}

/// Marks a pooled packet's slot free.
///
/// # Safety
/// `packet` came from [`PacketPool::allocate`] and is no longer used by KMCL or the driver.
pub(crate) unsafe fn release_slot(packet: crate::sys::VMBPACKET) {
    let flag = packet.cast::<u8>().wrapping_sub(SLOT_HEADER).cast::<u32>();
    // SAFETY: per the contract, the slot's flag sits SLOT_HEADER bytes before the packet and
    // the pool (hence the storage) is still alive: it waits for in-flight packets on drop.
    unsafe { AtomicU32::from_ptr(flag) }.store(FREE, Ordering::Release);
}

impl<H: ChannelHandler> Drop for PacketPool<'_, '_, H> {
    fn drop(&mut self) {
        if self.in_use() > 0 {
            // KMCL completes (cancels) every packet in flight during disable, releasing slots.
            self.channel.disable_now();
        }
    }
}

impl<H: ChannelHandler> core::fmt::Debug for PacketPool<'_, '_, H> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("PacketPool")
            .field("capacity", &self.count)
            .field("packet_bytes", &self.packet_bytes)
            .finish_non_exhaustive()
    }
}
