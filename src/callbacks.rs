//! The monomorphised `extern "system"` trampolines KMCL calls, one set per handler type.
//!
//! Ex (V5) trampolines get the channel as their `CallbackContext`; legacy ones look it up with
//! `VmbChannelGetPointer` through [`routes`](crate::routes). Each trampoline turns raw arguments
//! into safe views and calls the [`ChannelHandler`]; none panics or unwinds.

use core::ffi::c_void;

use crate::channel::ChannelCore;
use crate::handler::ChannelHandler;
use crate::incoming::IncomingPacket;
use crate::irql::PassiveLevel;
use crate::packet;
use crate::routes;
use crate::status::NtStatus;
use crate::sys;

/// The channel behind a callback context, if any.
///
/// # Safety
/// `context` is null or the address of a `ChannelCore<H>` registered by `Channel::enable`,
/// which KMCL only passes to callbacks while that core is alive (disable waits for callbacks,
/// and the core outlives its KMCL channel).
unsafe fn channel_at<'a, H: ChannelHandler>(context: *mut c_void) -> Option<&'a ChannelCore<H>> {
    // SAFETY: per this function's contract.
    unsafe { context.cast::<ChannelCore<H>>().as_ref() }
}

/// The channel a legacy callback's handle belongs to.
///
/// # Safety
/// `channel` is a KMCL channel handle passed to a callback registered for `Channel<H>`.
unsafe fn channel_of<'a, H: ChannelHandler>(
    channel: sys::VMBCHANNEL,
) -> Option<&'a ChannelCore<H>> {
    // SAFETY: the pointer stored on a channel registered for `H` is that `Channel<H>`.
    unsafe { channel_at::<H>(routes::channel_pointer(channel)) }
}

/// The token for a state callback.
fn passive() -> PassiveLevel {
    // SAFETY: KMCL calls the state-change and PnP-failure callbacks at PASSIVE_LEVEL (their
    // pages say so), and the token lives only for the callback.
    unsafe { PassiveLevel::assume() }
}

// ---- state change: legacy ----

pub(crate) fn state_callbacks_v1<H: ChannelHandler>() -> sys::VMB_CHANNEL_STATE_CHANGE_CALLBACKS {
    sys::VMB_CHANNEL_STATE_CHANGE_CALLBACKS {
        EvtChannelOpened: Some(opened::<H>),
        EvtChannelClosed: Some(closed::<H>),
        EvtChannelSuspend: Some(suspend::<H>),
        EvtChannelStarted: Some(started::<H>),
        EvtChannelPostStarted: Some(post_started::<H>),
        ..sys::VMB_CHANNEL_STATE_CHANGE_CALLBACKS::INIT
    }
}

unsafe extern "system" fn opened<H: ChannelHandler>(channel: sys::VMBCHANNEL) -> sys::NTSTATUS {
    // SAFETY: a handle KMCL passes to this channel's callback.
    match unsafe { channel_of::<H>(channel) } {
        Some(this) => status_of(this.handler().opened(this, &passive())),
        None => sys::STATUS_SUCCESS,
    }
}

/// Generates a legacy `VOID (VMBCHANNEL)` state trampoline calling `ChannelHandler::$method`.
macro_rules! legacy_state {
    ($($name:ident => $method:ident),* $(,)?) => {$(
        unsafe extern "system" fn $name<H: ChannelHandler>(channel: sys::VMBCHANNEL) {
            // SAFETY: a handle KMCL passes to this channel's callback.
            if let Some(this) = unsafe { channel_of::<H>(channel) } {
                this.handler().$method(this, &passive());
            }
        }
    )*};
}
legacy_state!(closed => closed, post_started => post_started);

unsafe extern "system" fn started<H: ChannelHandler>(channel: sys::VMBCHANNEL) {
    // SAFETY: a handle KMCL passes to this channel's callback.
    if let Some(this) = unsafe { channel_of::<H>(channel) } {
        started_now(this);
    }
}

unsafe extern "system" fn suspend<H: ChannelHandler>(channel: sys::VMBCHANNEL) {
    // SAFETY: a handle KMCL passes to this channel's callback.
    if let Some(this) = unsafe { channel_of::<H>(channel) } {
        suspended(this);
    }
}

// ---- state change: Ex (V5) ----

pub(crate) fn state_callbacks_v5<H: ChannelHandler>(
    context: *mut c_void,
) -> sys::VMB_CHANNEL_STATE_CHANGE_CALLBACKS_V5 {
    sys::VMB_CHANNEL_STATE_CHANGE_CALLBACKS_V5 {
        CallbackContext: context,
        EvtChannelOpenedEx: Some(opened_ex::<H>),
        EvtChannelClosedEx: Some(closed_ex::<H>),
        EvtChannelSuspendEx: Some(suspend_ex::<H>),
        EvtChannelStartedEx: Some(started_ex::<H>),
        EvtChannelPostStartedEx: Some(post_started_ex::<H>),
        ..sys::VMB_CHANNEL_STATE_CHANGE_CALLBACKS_V5::INIT
    }
}

unsafe extern "system" fn opened_ex<H: ChannelHandler>(
    _: sys::VMBCHANNEL,
    context: *mut c_void,
) -> sys::NTSTATUS {
    // SAFETY: the context registered by `Channel::enable`.
    match unsafe { channel_at::<H>(context) } {
        Some(this) => status_of(this.handler().opened(this, &passive())),
        None => sys::STATUS_SUCCESS,
    }
}

/// Generates an Ex `VOID (VMBCHANNEL, PVOID)` state trampoline calling
/// `ChannelHandler::$method`.
macro_rules! ex_state {
    ($($name:ident => $method:ident),* $(,)?) => {$(
        unsafe extern "system" fn $name<H: ChannelHandler>(_: sys::VMBCHANNEL, context: *mut c_void) {
            // SAFETY: the context registered by `Channel::enable`.
            if let Some(this) = unsafe { channel_at::<H>(context) } {
                this.handler().$method(this, &passive());
            }
        }
    )*};
}
ex_state!(
    closed_ex => closed,
    post_started_ex => post_started,
);

unsafe extern "system" fn started_ex<H: ChannelHandler>(_: sys::VMBCHANNEL, context: *mut c_void) {
    // SAFETY: the context registered by `Channel::enable`.
    if let Some(this) = unsafe { channel_at::<H>(context) } {
        started_now(this);
    }
}

/// `EvtVmbChannelStarted[Ex]`: the channel runs, so sends may reach KMCL from now on (the
/// handler's `started` may already send); pause and disable close them again first.
fn started_now<H: ChannelHandler>(channel: &ChannelCore<H>) {
    channel.open_sends();
    channel.handler().started(channel, &passive());
}

unsafe extern "system" fn suspend_ex<H: ChannelHandler>(_: sys::VMBCHANNEL, context: *mut c_void) {
    // SAFETY: the context registered by `Channel::enable`.
    if let Some(this) = unsafe { channel_at::<H>(context) } {
        suspended(this);
    }
}

/// `EvtVmbChannelSuspend[Ex]`: the handler's `suspend` (which may still complete pended
/// packets), then the crate completes what is left with no response: KMCL waits for every
/// incoming packet once delivery stops (pause, disable, rescind), so leaving them pended would
/// hang it.
fn suspended<H: ChannelHandler>(channel: &ChannelCore<H>) {
    channel.handler().suspend(channel, &passive());
    crate::incoming::cancel_pended(channel);
}

fn status_of(result: crate::Result<()>) -> sys::NTSTATUS {
    match result {
        Ok(()) => sys::STATUS_SUCCESS,
        Err(status) => status.raw(),
    }
}

// ---- PnP failure (no Ex form) ----

pub(crate) unsafe extern "system" fn pnp_failure<H: ChannelHandler>(
    channel: sys::VMBCHANNEL,
    status: sys::NTSTATUS,
) {
    // SAFETY: a handle KMCL passes to this channel's callback.
    if let Some(this) = unsafe { channel_of::<H>(channel) } {
        this.handler()
            .pnp_failure(this, NtStatus(status), &passive());
    }
}

// ---- incoming packets ----

pub(crate) unsafe extern "system" fn process_packet<H: ChannelHandler>(
    channel: sys::VMBCHANNEL,
    packet: sys::VMBPACKETCOMPLETION,
    buffer: *mut c_void,
    length: u32,
    flags: u32,
) {
    // SAFETY: a handle KMCL passes to this channel's callback.
    if let Some(this) = unsafe { channel_of::<H>(channel) } {
        // SAFETY: KMCL's packet arguments, valid for this callback.
        unsafe { deliver(this, packet, buffer, length, flags) };
    }
}

pub(crate) unsafe extern "system" fn process_packet_ex<H: ChannelHandler>(
    _: sys::VMBCHANNEL,
    context: *mut c_void,
    packet: sys::VMBPACKETCOMPLETION,
    buffer: *mut c_void,
    length: u32,
    flags: u32,
) {
    // SAFETY: the context registered by `Channel::enable`.
    if let Some(this) = unsafe { channel_at::<H>(context) } {
        // SAFETY: KMCL's packet arguments, valid for this callback.
        unsafe { deliver(this, packet, buffer, length, flags) };
    }
}

/// Hands one incoming packet to the handler.
///
/// # Safety
/// `packet`, `buffer` and `length` are the arguments of one `EvtVmbChannelProcessPacket[Ex]`
/// call for `channel`.
unsafe fn deliver<H: ChannelHandler>(
    channel: &ChannelCore<H>,
    packet: sys::VMBPACKETCOMPLETION,
    buffer: *mut c_void,
    length: u32,
    flags: u32,
) {
    if channel.delivers_at_passive() || channel.has_deferred() {
        // SAFETY: per this function's contract.
        return unsafe { deliver_maybe_passive(channel, packet, buffer, length, flags) };
    }
    // SAFETY: per this function's contract; no token.
    let incoming =
        unsafe { IncomingPacket::from_raw(channel, packet, buffer, length, flags, false) };
    channel.handler().process_packet(channel, incoming);
}

#[cold]
#[inline(never)]
unsafe fn deliver_maybe_passive<H: ChannelHandler>(
    channel: &ChannelCore<H>,
    packet: sys::VMBPACKETCOMPLETION,
    buffer: *mut c_void,
    length: u32,
    flags: u32,
) {
    // Both conditions say KMCL meant to deliver at PASSIVE_LEVEL; the IRQL read confirms it, so
    // a token is never minted at DISPATCH_LEVEL whatever KMCL does.
    let at_passive = (channel.delivers_at_passive() || channel.take_deferred(packet))
        && crate::irql::current_irql() == crate::irql::Irql::PASSIVE;
    // SAFETY: per this function's contract; `at_passive` was checked against the IRQL.
    let incoming =
        unsafe { IncomingPacket::from_raw(channel, packet, buffer, length, flags, at_passive) };
    channel.handler().process_packet(channel, incoming);
}

pub(crate) unsafe extern "system" fn processing_complete<H: ChannelHandler>(
    channel: sys::VMBCHANNEL,
    count: u32,
) {
    // SAFETY: a handle KMCL passes to this channel's callback.
    if let Some(this) = unsafe { channel_of::<H>(channel) } {
        this.handler().processing_complete(this, count);
    }
}

pub(crate) unsafe extern "system" fn processing_complete_ex<H: ChannelHandler>(
    _: sys::VMBCHANNEL,
    context: *mut c_void,
    count: u32,
) {
    // SAFETY: the context registered by `Channel::enable`.
    if let Some(this) = unsafe { channel_at::<H>(context) } {
        this.handler().processing_complete(this, count);
    }
}

// ---- outgoing packet completion ----

/// `ALLOCATED`: the packet came from `VmbPacketAllocate` (else from a `PacketPool`).
pub(crate) unsafe extern "system" fn packet_completion<H: ChannelHandler, const ALLOCATED: bool>(
    packet: sys::VMBPACKET,
    status: sys::NTSTATUS,
    buffer: *mut c_void,
    length: u32,
) {
    let channel = routes::packet_channel(packet);
    // SAFETY: the packet was sent on a channel registered for `H`.
    let this = unsafe { channel_of::<H>(channel) };
    // SAFETY: the arguments of one completion of a packet this crate sent.
    unsafe {
        packet::complete::<H>(
            this,
            origin::<ALLOCATED>(),
            packet,
            NtStatus(status),
            buffer,
            length,
        )
    };
}

/// `ALLOCATED`: the packet came from `VmbPacketAllocate` (else from a `PacketPool`).
pub(crate) unsafe extern "system" fn packet_completion_ex<
    H: ChannelHandler,
    const ALLOCATED: bool,
>(
    packet: sys::VMBPACKET,
    context: *mut c_void,
    status: sys::NTSTATUS,
    buffer: *mut c_void,
    length: u32,
) {
    // SAFETY: the context given with `VmbPacketSetCompletionRoutineEx` is the channel.
    let this = unsafe { channel_at::<H>(context) };
    // SAFETY: the arguments of one completion of a packet this crate sent.
    unsafe {
        packet::complete::<H>(
            this,
            origin::<ALLOCATED>(),
            packet,
            NtStatus(status),
            buffer,
            length,
        )
    };
}

const fn origin<const ALLOCATED: bool>() -> packet::Origin {
    if ALLOCATED {
        packet::Origin::Allocated
    } else {
        packet::Origin::Pooled
    }
}
