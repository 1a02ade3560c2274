//! Outgoing packets: [`OutgoingPacket`] (`VmbPacketAllocate` … `VmbPacketFree`), the send calls,
//! the synchronous request, and the [`Completion`] a handler receives.
//!
//! Ownership: an `OutgoingPacket` owns its `VMBPACKET` until it is sent. It exists only inside
//! a scope ([`ChannelCore::with_packet`], [`PacketPool::with_packet`](crate::PacketPool::with_packet))
//! that holds the channel's rundown reference, so teardown cannot clean the channel up under an
//! unsent packet, and forgetting the packet leaks it without holding teardown up. A successful
//! send passes it to KMCL; the crate's completion routine hands the completion to
//! [`ChannelHandler::packet_completed`] and then frees the packet. A failed send frees it at
//! once and drops the context. Nothing on these paths allocates.

use core::ffi::c_void;
use core::ptr::{self, NonNull};
use core::time::Duration;

use crate::callbacks;
use crate::channel::ChannelCore;
use crate::flags::SendFlags;
use crate::handler::{ChannelHandler, PacketContext};
use crate::host_bytes::HostBytes;
use crate::interface::slot;
use crate::irql::PassiveLevel;
use crate::status::{NtStatus, Result};
use crate::sys;

/// What a handler learns when an outgoing packet completes.
#[derive(Debug)]
#[non_exhaustive]
pub struct Completion<'a, C> {
    /// The completion status: `STATUS_SUCCESS`, or e.g. `STATUS_CANCELLED` when the channel
    /// was closed with the packet in flight.
    pub status: NtStatus,
    /// The opposite endpoint's response bytes (empty without `WAIT_FOR_COMPLETION`), in memory
    /// the host may still change: copy, then validate. Valid only during the callback.
    pub response: HostBytes<'a>,
    /// The context given when the packet was sent.
    pub context: C,
}

/// A packet not yet sent: from KMCL's pool ([`ChannelCore::with_packet`], freed with
/// `VmbPacketFree` if dropped unsent) or from a packet pool
/// ([`PacketPool::with_packet`](crate::PacketPool::with_packet), its slot released if dropped
/// unsent). It lives only inside that scope:
///
/// ```compile_fail
/// # use vmbus_kmcl::{ChannelCore, ChannelHandler, OutgoingPacket};
/// # struct H;
/// # impl ChannelHandler for H { type PacketContext = (); }
/// fn escape(channel: &ChannelCore<H>) {
///     let _kept = channel.with_packet(|packet| packet); // the packet cannot leave the scope
/// }
/// ```
pub struct OutgoingPacket<'c, H: ChannelHandler> {
    channel: &'c ChannelCore<H>,
    handle: sys::VMBPACKET,
    origin: Origin,
}

/// Where an outgoing packet's memory comes from, which decides how it is released.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Origin {
    /// `VmbPacketAllocate`: released with `VmbPacketFree`.
    Allocated,
    /// `VmbPacketInitialize` in a `PacketPool` slot: released by freeing the slot.
    Pooled,
}

impl<H: ChannelHandler> ChannelCore<H> {
    /// Allocates a packet from the channel's pool (`VmbPacketAllocate`) and sends `data`
    /// in-band (`VmbPacketSend`). With [`SendFlags::WAIT_FOR_COMPLETION`] the opposite
    /// endpoint's response reaches [`ChannelHandler::packet_completed`] with `context`.
    ///
    /// # Errors
    /// `STATUS_INVALID_DEVICE_STATE` when the channel is not enabled (or torn down);
    /// `STATUS_INVALID_PARAMETER_3` for data longer than the configured maximum packet size;
    /// `STATUS_INSUFFICIENT_RESOURCES` when KMCL has no packet; the KMCL status of the send.
    /// On error `context` is dropped.
    ///
    /// IRQL: ≤ DISPATCH_LEVEL (`PAGED_BUFFER` data: PASSIVE_LEVEL).
    #[inline]
    pub fn send(&self, data: &[u8], flags: SendFlags, context: H::PacketContext) -> Result<()> {
        self.with_packet(|packet| packet.send(data, flags, context))?
    }

    /// Runs `f` with a packet from the channel's pool (`VmbPacketAllocate`), for the MDL and
    /// PFN sends; a packet `f` does not send is freed (`VmbPacketFree`) when it returns.
    ///
    /// # Errors
    /// `STATUS_INVALID_DEVICE_STATE` when the channel is not enabled (or torn down);
    /// `STATUS_INSUFFICIENT_RESOURCES` when KMCL has no packet (`f` is not called).
    ///
    /// IRQL: ≤ DISPATCH_LEVEL.
    #[inline]
    pub fn with_packet<R>(&self, f: impl FnOnce(OutgoingPacket<'_, H>) -> R) -> Result<R> {
        let _entered = self.enter()?;
        let allocate = self.send_slots.allocate;
        // SAFETY: an enabled channel, held open by the rundown reference.
        let handle = unsafe { allocate(self.as_raw()) };
        if handle.is_null() {
            return Err(NtStatus::INSUFFICIENT_RESOURCES);
        }
        Ok(f(OutgoingPacket {
            channel: self,
            handle,
            origin: Origin::Allocated,
        }))
    }

    /// `VmbChannelSendSynchronousRequest`: sends `request` and waits for its completion,
    /// copying the response into `response`; returns the response length in bytes.
    ///
    /// `response.len()` must be a multiple of 8 (it may be 0 when no response is wanted).
    /// `timeout`: `Duration::ZERO` does not wait and does not queue the request when the ring
    /// is full; otherwise a relative timeout in 100 ns units, rounded up (a non-zero timeout
    /// never becomes "do not wait"). There is no "wait forever": [`Channel::disable`] waits for
    /// a request in progress, so the timeout bounds how long a disable can be held up by a host
    /// that never answers.
    ///
    /// [`Channel::disable`]: crate::Channel::disable
    ///
    /// # Errors
    /// - `STATUS_INVALID_PARAMETER` for a response buffer that is not a multiple of 8 bytes or a
    ///   request over 4 GiB (checked before calling KMCL).
    /// - `STATUS_CANCELLED` when the timeout elapsed (Microsoft's page; the request is
    ///   cancelled), or when the channel closed first. `STATUS_TIMEOUT` and `STATUS_PENDING`,
    ///   which are NT_SUCCESS codes, are returned as errors too should KMCL report them.
    /// - `STATUS_BUFFER_OVERFLOW` when the packet did not fit in the ring (Microsoft's page; with
    ///   a zero timeout the request is then not queued) or the response was truncated.
    /// - `STATUS_INVALID_DEVICE_STATE` when the channel is not enabled; other KMCL statuses as
    ///   returned.
    ///
    /// IRQL: PASSIVE_LEVEL (it waits).
    pub fn send_synchronous(
        &self,
        irql: &PassiveLevel,
        request: &[u8],
        flags: SendFlags,
        response: &mut [u8],
        timeout: Duration,
    ) -> Result<usize> {
        let _ = irql;
        let _entered = self.enter()?;
        let send = slot(self.interface().raw().VmbChannelSendSynchronousRequest)?;
        let request_len = u32::try_from(request.len()).map_err(|_| NtStatus::INVALID_PARAMETER)?;
        let mut response_len =
            u32::try_from(response.len()).map_err(|_| NtStatus::INVALID_PARAMETER)?;
        if response_len % sys::KMCL_COMPLETION_BUFFER_ALIGNMENT != 0 {
            return Err(NtStatus::INVALID_PARAMETER);
        }
        let (response_ptr, response_len_ptr) = if response.is_empty() {
            (ptr::null_mut(), ptr::null_mut())
        } else {
            (
                response.as_mut_ptr().cast::<c_void>(),
                &raw mut response_len,
            )
        };
        let mut wait = sys::LARGE_INTEGER {
            QuadPart: relative_timeout(timeout),
        };
        let wait_ptr = &raw mut wait;
        // SAFETY: an enabled channel; the request is only read, the response buffer and its
        // in/out size describe `response`, and every pointer outlives this blocking call.
        let status = NtStatus(unsafe {
            send(
                self.as_raw(),
                request.as_ptr().cast_mut().cast(),
                request_len,
                ptr::null_mut(),
                flags.bits(),
                response_ptr,
                response_len_ptr,
                wait_ptr,
            )
        });
        if status == NtStatus::TIMEOUT || status == NtStatus::PENDING {
            return Err(status);
        }
        status.ok()?;
        Ok((response_len as usize).min(response.len()))
    }
}

/// A relative kernel timeout: negative, in 100 ns units rounded up, saturating.
fn relative_timeout(timeout: Duration) -> i64 {
    let units = timeout.as_nanos().div_ceil(100);
    -(i64::try_from(units).unwrap_or(i64::MAX))
}

impl<'c, H: ChannelHandler> OutgoingPacket<'c, H> {
    /// A packet just initialized in a `PacketPool` slot.
    ///
    /// # Safety
    /// `handle` was initialized with `VmbPacketInitialize` in a pool slot marked busy, and the
    /// caller holds the channel's rundown reference for `'c`.
    pub(crate) unsafe fn from_pool(channel: &'c ChannelCore<H>, handle: sys::VMBPACKET) -> Self {
        Self {
            channel,
            handle,
            origin: Origin::Pooled,
        }
    }

    /// `VmbPacketSend` of in-band `data`.
    ///
    /// # Errors
    /// `STATUS_INVALID_PARAMETER_3` for data longer than the configured maximum packet size
    /// (checked before calling KMCL) or over 4 GiB; otherwise the KMCL status. The packet is
    /// freed and `context` dropped.
    ///
    /// IRQL: ≤ DISPATCH_LEVEL (`PAGED_BUFFER` data: PASSIVE_LEVEL).
    #[inline]
    pub fn send(self, data: &[u8], flags: SendFlags, context: H::PacketContext) -> Result<()> {
        let len = self.channel.check_packet_len(data.len())?;
        let send = self.channel.send_slots.send;
        self.dispatch(context, |packet| {
            // SAFETY: a prepared packet; KMCL reads `len` bytes of `data` during the call.
            unsafe {
                send(
                    packet,
                    data.as_ptr().cast_mut().cast(),
                    len,
                    ptr::null_mut(),
                    flags.bits(),
                )
            }
        })
    }

    /// `VmbPacketSend` with external data described by `mdl` (sent as a GPA-direct packet).
    ///
    /// # Errors
    /// As [`send`](Self::send).
    ///
    /// # Safety
    /// `mdl` is a valid MDL chain whose pages stay valid and locked until the completion of
    /// this packet has been delivered to the handler.
    ///
    /// IRQL: ≤ DISPATCH_LEVEL.
    pub unsafe fn send_with_mdl(
        self,
        data: &[u8],
        mdl: NonNull<sys::MDL>,
        flags: SendFlags,
        context: H::PacketContext,
    ) -> Result<()> {
        let len = self.channel.check_packet_len(data.len())?;
        let send = slot(self.channel.interface().raw().VmbPacketSend)?;
        self.dispatch(context, |packet| {
            // SAFETY: a prepared packet; the MDL is valid per this function's contract.
            unsafe {
                send(
                    packet,
                    data.as_ptr().cast_mut().cast(),
                    len,
                    mdl.as_ptr(),
                    flags.bits(),
                )
            }
        })
    }

    /// `VmbPacketSendWithExternalMdl`: external data is `length` bytes of `mdl` starting
    /// `offset` bytes in.
    ///
    /// # Errors
    /// As [`send`](Self::send).
    ///
    /// # Safety
    /// As [`send_with_mdl`](Self::send_with_mdl).
    ///
    /// IRQL: ≤ DISPATCH_LEVEL.
    pub unsafe fn send_with_external_mdl(
        self,
        data: &[u8],
        mdl: NonNull<sys::MDL>,
        offset: u32,
        length: u32,
        flags: SendFlags,
        context: H::PacketContext,
    ) -> Result<()> {
        let len = self.channel.check_packet_len(data.len())?;
        let send = slot(self.channel.interface().raw().VmbPacketSendWithExternalMdl)?;
        self.dispatch(context, |packet| {
            // SAFETY: a prepared packet; the MDL is valid per this function's contract.
            unsafe {
                send(
                    packet,
                    data.as_ptr().cast_mut().cast(),
                    len,
                    mdl.as_ptr(),
                    offset,
                    length,
                    flags.bits(),
                )
            }
        })
    }

    /// `VmbPacketSendWithExternalPfns`: external data is the pages `pfns` (4 KiB each).
    ///
    /// # Errors
    /// `STATUS_INVALID_PARAMETER` for more than `u32::MAX` PFNs; as [`send`](Self::send).
    ///
    /// # Safety
    /// The pages stay valid and locked until the completion of this packet has been delivered.
    ///
    /// IRQL: ≤ DISPATCH_LEVEL.
    pub unsafe fn send_with_external_pfns(
        self,
        data: &[u8],
        pfns: &[sys::PFN_NUMBER],
        flags: SendFlags,
        context: H::PacketContext,
    ) -> Result<()> {
        let len = self.channel.check_packet_len(data.len())?;
        let count = u32::try_from(pfns.len()).map_err(|_| NtStatus::INVALID_PARAMETER)?;
        let send = slot(self.channel.interface().raw().VmbPacketSendWithExternalPfns)?;
        self.dispatch(context, |packet| {
            // SAFETY: a prepared packet; the PFN list is read during the call and the pages are
            // valid per this function's contract.
            unsafe {
                send(
                    packet,
                    data.as_ptr().cast_mut().cast(),
                    len,
                    pfns.as_ptr().cast_mut(),
                    count,
                    flags.bits(),
                )
            }
        })
    }

    /// The raw `VMBPACKET`.
    ///
    /// IRQL: any.
    #[must_use]
    pub fn as_raw(&self) -> sys::VMBPACKET {
        self.handle
    }

    /// Sets the completion routine and the context, then sends; on failure frees the packet
    /// (through drop) and drops the context.
    fn dispatch(
        self,
        context: H::PacketContext,
        send: impl FnOnce(sys::VMBPACKET) -> sys::NTSTATUS,
    ) -> Result<()> {
        let raw_context = context.into_raw();
        let status = match self.prepare(raw_context) {
            Ok(()) => NtStatus(send(self.handle)),
            Err(status) => status,
        };
        if status.is_success() {
            // KMCL owns the packet now; the completion routine frees it.
            core::mem::forget(self);
            Ok(())
        } else {
            // SAFETY: `raw_context` came from `into_raw` and KMCL did not take the packet, so
            // the completion routine will never decode it.
            drop(unsafe { H::PacketContext::from_raw(raw_context) });
            Err(status)
        }
    }

    /// Installs the crate's completion routine and stores `raw_context` in the packet.
    fn prepare(&self, raw_context: *mut c_void) -> Result<()> {
        let t = self.channel.interface().raw();
        if let Some((context_slot, set_completion)) = self.channel.send_slots.inline {
            // SAFETY: a live packet of a channel whose inline context is one pointer (set by
            // `Channel::new` on V5).
            let inline = unsafe { context_slot(self.handle) }.cast::<*mut c_void>();
            if inline.is_null() {
                return Err(NtStatus::INSUFFICIENT_RESOURCES);
            }
            // SAFETY: the inline context is pointer-sized and pointer-aligned KMCL memory.
            unsafe { inline.write_unaligned(raw_context) };
            let channel = ptr::from_ref(self.channel).cast_mut().cast::<c_void>();
            let routine: sys::EVT_VMB_PACKET_COMPLETION_ROUTINE_EX = match self.origin {
                Origin::Allocated => callbacks::packet_completion_ex::<H, true>,
                Origin::Pooled => callbacks::packet_completion_ex::<H, false>,
            };
            // SAFETY: a live packet; the trampoline's context is its (pinned, enabled) channel.
            unsafe { set_completion(self.handle, channel, Some(routine)) };
        } else {
            let set_pointer = slot(t.VmbPacketSetPointer)?;
            // SAFETY: a live packet; the pointer slot is ours until completion.
            unsafe { set_pointer(self.handle, raw_context) };
            let set_completion = slot(t.VmbPacketSetCompletionRoutine)?;
            let routine: sys::EVT_VMB_PACKET_COMPLETION_ROUTINE = match self.origin {
                Origin::Allocated => callbacks::packet_completion::<H, true>,
                Origin::Pooled => callbacks::packet_completion::<H, false>,
            };
            // SAFETY: a live packet; the legacy trampoline finds the channel from the packet.
            unsafe { set_completion(self.handle, Some(routine)) };
        }
        Ok(())
    }
}

impl<H: ChannelHandler> core::fmt::Debug for OutgoingPacket<'_, H> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("OutgoingPacket")
            .field("handle", &self.handle)
            .field("origin", &self.origin)
            .finish_non_exhaustive()
    }
}

impl<H: ChannelHandler> Drop for OutgoingPacket<'_, H> {
    fn drop(&mut self) {
        // SAFETY: a packet KMCL does not own (never successfully sent), released once.
        unsafe { release(self.channel, self.handle, self.origin) };
    }
}

/// Returns a packet to where it came from.
///
/// # Safety
/// Neither KMCL nor the driver uses `packet` afterwards.
unsafe fn release<H: ChannelHandler>(
    channel: &ChannelCore<H>,
    packet: sys::VMBPACKET,
    origin: Origin,
) {
    match origin {
        Origin::Allocated => {
            let free = channel.send_slots.free;
            // SAFETY: an allocated packet, freed exactly once per this function's contract.
            unsafe { free(packet) };
        }
        // SAFETY: a pooled packet, per this function's contract.
        Origin::Pooled => unsafe { crate::pool::release_slot(packet) },
    }
}

/// Delivers one completion to the handler, then releases the packet (`origin`).
///
/// # Safety
/// `packet`, `buffer` and `length` are the arguments of one completion routine call for a
/// packet of `origin` this crate sent on `channel`.
pub(crate) unsafe fn complete<H: ChannelHandler>(
    channel: Option<&ChannelCore<H>>,
    origin: Origin,
    packet: sys::VMBPACKET,
    status: NtStatus,
    buffer: *mut c_void,
    length: u32,
) {
    // Without its channel there is no table to free through; unreachable for enabled channels.
    let Some(channel) = channel else { return };
    let raw_context = if let Some((context_slot, _)) = channel.send_slots.inline {
        // SAFETY: a live packet in its completion routine.
        let inline = unsafe { context_slot(packet) }.cast::<*mut c_void>();
        if inline.is_null() {
            // No word was stored (`prepare` refuses to send without an inline context), so
            // there is nothing to decode: release the packet without a completion.
            // SAFETY: the completion returned the packet to this crate; released exactly once.
            unsafe { release(channel, packet, origin) };
            return;
        }
        // SAFETY: written by `prepare` before the send.
        unsafe { inline.read_unaligned() }
    } else {
        crate::routes::packet_pointer(packet)
    };
    // SAFETY: stored by `prepare` from `into_raw`; each completion decodes it once.
    let context = unsafe { H::PacketContext::from_raw(raw_context) };
    let response = if length == 0 {
        HostBytes::EMPTY
    } else {
        // SAFETY: KMCL's response buffer of `length` bytes (or null), valid during this callback.
        unsafe { HostBytes::from_raw(buffer.cast::<u8>(), length as usize) }
    };
    channel.handler().packet_completed(
        channel,
        Completion {
            status,
            response,
            context,
        },
    );
    // SAFETY: the completion returned the packet to this crate; released exactly once.
    unsafe { release(channel, packet, origin) };
}
