//! Stored driver callbacks and the (only) places where the emulator calls into the driver.
//!
//! Contexts are kept as `usize` so the channel state stays `Send`; they are passed back to the
//! driver unchanged. Every call passes handles the emulator issued.

use core::ffi::c_void;

use vmbus_kmcl::Irql;

use vmbus_kmcl::sys::{
    EVT_VMB_CHANNEL_PROCESS_PACKET, EVT_VMB_CHANNEL_PROCESS_PACKET_EX,
    EVT_VMB_PACKET_COMPLETION_ROUTINE, EVT_VMB_PACKET_COMPLETION_ROUTINE_EX, NTSTATUS,
    PFN_VMB_CHANNEL_CLOSED, PFN_VMB_CHANNEL_CLOSED_EX, PFN_VMB_CHANNEL_OPENED,
    PFN_VMB_CHANNEL_OPENED_EX, PFN_VMB_CHANNEL_POST_STARTED, PFN_VMB_CHANNEL_POST_STARTED_EX,
    PFN_VMB_CHANNEL_PROCESSING_COMPLETE, PFN_VMB_CHANNEL_PROCESSING_COMPLETE_EX,
    PFN_VMB_CHANNEL_STARTED, PFN_VMB_CHANNEL_STARTED_EX, PFN_VMB_CHANNEL_SUSPEND,
    PFN_VMB_CHANNEL_SUSPEND_EX, STATUS_SUCCESS, VMB_CHANNEL_STATE_CHANGE_CALLBACKS,
    VMB_CHANNEL_STATE_CHANGE_CALLBACKS_V5, VMBCHANNEL, VMBPACKET, VMBPACKETCOMPLETION,
};

fn ch(handle: usize) -> VMBCHANNEL {
    handle as VMBCHANNEL
}

fn ctx(value: usize) -> *mut c_void {
    value as *mut c_void
}

/// The state-change callbacks of a channel (V1 struct or V5 Ex struct).
#[derive(Clone, Copy, Debug, Default)]
pub(crate) enum StateCallbacks {
    #[default]
    None,
    Legacy {
        opened: PFN_VMB_CHANNEL_OPENED,
        closed: PFN_VMB_CHANNEL_CLOSED,
        suspend: PFN_VMB_CHANNEL_SUSPEND,
        started: PFN_VMB_CHANNEL_STARTED,
        post_started: PFN_VMB_CHANNEL_POST_STARTED,
    },
    Ex {
        context: usize,
        opened: PFN_VMB_CHANNEL_OPENED_EX,
        closed: PFN_VMB_CHANNEL_CLOSED_EX,
        suspend: PFN_VMB_CHANNEL_SUSPEND_EX,
        started: PFN_VMB_CHANNEL_STARTED_EX,
        post_started: PFN_VMB_CHANNEL_POST_STARTED_EX,
    },
}

impl StateCallbacks {
    pub(crate) const fn from_v1(s: &VMB_CHANNEL_STATE_CHANGE_CALLBACKS) -> Self {
        Self::Legacy {
            opened: s.EvtChannelOpened,
            closed: s.EvtChannelClosed,
            suspend: s.EvtChannelSuspend,
            started: s.EvtChannelStarted,
            post_started: s.EvtChannelPostStarted,
        }
    }

    pub(crate) fn from_v5(s: &VMB_CHANNEL_STATE_CHANGE_CALLBACKS_V5) -> Self {
        Self::Ex {
            context: s.CallbackContext as usize,
            opened: s.EvtChannelOpenedEx,
            closed: s.EvtChannelClosedEx,
            suspend: s.EvtChannelSuspendEx,
            started: s.EvtChannelStartedEx,
            post_started: s.EvtChannelPostStartedEx,
        }
    }

    /// `EvtChannelOpened[Ex]`; `STATUS_SUCCESS` if none is registered.
    pub(crate) fn opened(&self, channel: usize) -> NTSTATUS {
        match *self {
            Self::Legacy {
                opened: Some(f), ..
            } => {
                let _driver = crate::base::scope::DriverScope::enter();
                let _irql = crate::model::irql::CallbackIrql::enter(Irql::PASSIVE);
                // SAFETY: the driver registered `f` for this channel through
                // VmbChannelInitSetStateChangeCallbacks; the argument is the channel's handle.
                unsafe { f(ch(channel)) }
            }
            Self::Ex {
                context,
                opened: Some(f),
                ..
            } => {
                let _driver = crate::base::scope::DriverScope::enter();
                let _irql = crate::model::irql::CallbackIrql::enter(Irql::PASSIVE);
                // SAFETY: as above, with the context the driver registered.
                unsafe { f(ch(channel), ctx(context)) }
            }
            _ => STATUS_SUCCESS,
        }
    }

    /// `EvtChannelClosed[Ex]`.
    pub(crate) fn closed(&self, channel: usize) {
        match *self {
            Self::Legacy {
                closed: Some(f), ..
            } => {
                let _driver = crate::base::scope::DriverScope::enter();
                let _irql = crate::model::irql::CallbackIrql::enter(Irql::PASSIVE);
                // SAFETY: registered by the driver for this channel (see `opened`).
                unsafe { f(ch(channel)) }
            }
            Self::Ex {
                context,
                closed: Some(f),
                ..
            } => {
                let _driver = crate::base::scope::DriverScope::enter();
                let _irql = crate::model::irql::CallbackIrql::enter(Irql::PASSIVE);
                // SAFETY: registered by the driver for this channel (see `opened`).
                unsafe { f(ch(channel), ctx(context)) }
            }
            _ => {}
        }
    }

    /// `EvtChannelSuspend[Ex]`.
    pub(crate) fn suspend(&self, channel: usize) {
        match *self {
            Self::Legacy {
                suspend: Some(f), ..
            } => {
                let _driver = crate::base::scope::DriverScope::enter();
                let _irql = crate::model::irql::CallbackIrql::enter(Irql::PASSIVE);
                // SAFETY: registered by the driver for this channel (see `opened`).
                unsafe { f(ch(channel)) }
            }
            Self::Ex {
                context,
                suspend: Some(f),
                ..
            } => {
                let _driver = crate::base::scope::DriverScope::enter();
                let _irql = crate::model::irql::CallbackIrql::enter(Irql::PASSIVE);
                // SAFETY: registered by the driver for this channel (see `opened`).
                unsafe { f(ch(channel), ctx(context)) }
            }
            _ => {}
        }
    }

    /// `EvtChannelStarted[Ex]`.
    pub(crate) fn started(&self, channel: usize) {
        match *self {
            Self::Legacy {
                started: Some(f), ..
            } => {
                let _driver = crate::base::scope::DriverScope::enter();
                let _irql = crate::model::irql::CallbackIrql::enter(Irql::PASSIVE);
                // SAFETY: registered by the driver for this channel (see `opened`).
                unsafe { f(ch(channel)) }
            }
            Self::Ex {
                context,
                started: Some(f),
                ..
            } => {
                let _driver = crate::base::scope::DriverScope::enter();
                let _irql = crate::model::irql::CallbackIrql::enter(Irql::PASSIVE);
                // SAFETY: registered by the driver for this channel (see `opened`).
                unsafe { f(ch(channel), ctx(context)) }
            }
            _ => {}
        }
    }

    /// `EvtChannelPostStarted[Ex]`.
    pub(crate) fn post_started(&self, channel: usize) {
        match *self {
            Self::Legacy {
                post_started: Some(f),
                ..
            } => {
                let _driver = crate::base::scope::DriverScope::enter();
                let _irql = crate::model::irql::CallbackIrql::enter(Irql::PASSIVE);
                // SAFETY: registered by the driver for this channel (see `opened`).
                unsafe { f(ch(channel)) }
            }
            Self::Ex {
                context,
                post_started: Some(f),
                ..
            } => {
                let _driver = crate::base::scope::DriverScope::enter();
                let _irql = crate::model::irql::CallbackIrql::enter(Irql::PASSIVE);
                // SAFETY: registered by the driver for this channel (see `opened`).
                unsafe { f(ch(channel), ctx(context)) }
            }
            _ => {}
        }
    }
}

/// The packet-processing callbacks of a channel (legacy or Ex; the latest registration wins).
#[derive(Clone, Copy, Debug, Default)]
pub(crate) enum ProcessCallbacks {
    #[default]
    None,
    Legacy {
        process: EVT_VMB_CHANNEL_PROCESS_PACKET,
        complete: PFN_VMB_CHANNEL_PROCESSING_COMPLETE,
    },
    Ex {
        context: usize,
        process: EVT_VMB_CHANNEL_PROCESS_PACKET_EX,
        complete: PFN_VMB_CHANNEL_PROCESSING_COMPLETE_EX,
    },
}

impl ProcessCallbacks {
    pub(crate) const fn is_some(&self) -> bool {
        !matches!(self, Self::None)
    }

    /// `EvtVmbChannelProcessPacket[Ex]` at `irql` (DISPATCH_LEVEL on the callback thread,
    /// PASSIVE_LEVEL on the passive worker). `buffer` stays valid until the packet is completed.
    pub(crate) fn process(
        &self,
        channel: usize,
        packet: usize,
        buffer: *mut c_void,
        len: u32,
        flags: u32,
        irql: Irql,
    ) {
        match *self {
            Self::Legacy { process, .. } => {
                let _driver = crate::base::scope::DriverScope::enter();
                let _irql = crate::model::irql::CallbackIrql::enter(irql);
                // SAFETY: registered by the driver for this channel; `packet` is a live
                // completion context and `buffer` holds `len` readable bytes.
                unsafe {
                    process(
                        ch(channel),
                        packet as VMBPACKETCOMPLETION,
                        buffer,
                        len,
                        flags,
                    )
                }
            }
            Self::Ex {
                context, process, ..
            } => {
                let _driver = crate::base::scope::DriverScope::enter();
                let _irql = crate::model::irql::CallbackIrql::enter(irql);
                // SAFETY: as above, with the context the driver registered.
                unsafe {
                    process(
                        ch(channel),
                        ctx(context),
                        packet as VMBPACKETCOMPLETION,
                        buffer,
                        len,
                        flags,
                    );
                }
            }
            Self::None => {}
        }
    }

    /// `EvtVmbChannelProcessingComplete[Ex]` at `irql`, if registered.
    pub(crate) fn processing_complete(&self, channel: usize, count: u32, irql: Irql) {
        match *self {
            Self::Legacy {
                complete: Some(f), ..
            } => {
                let _driver = crate::base::scope::DriverScope::enter();
                let _irql = crate::model::irql::CallbackIrql::enter(irql);
                // SAFETY: registered by the driver for this channel.
                unsafe { f(ch(channel), count) }
            }
            Self::Ex {
                context,
                complete: Some(f),
                ..
            } => {
                let _driver = crate::base::scope::DriverScope::enter();
                let _irql = crate::model::irql::CallbackIrql::enter(irql);
                // SAFETY: registered by the driver for this channel.
                unsafe { f(ch(channel), ctx(context), count) }
            }
            _ => {}
        }
    }
}

/// The completion routine of an outgoing packet.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) enum CompletionRoutine {
    /// None set: a `VmbPacketAllocate` packet frees itself on completion; a
    /// `VmbPacketInitialize` packet cannot be sent.
    #[default]
    Default,
    Legacy(EVT_VMB_PACKET_COMPLETION_ROUTINE),
    Ex(EVT_VMB_PACKET_COMPLETION_ROUTINE_EX, usize),
}

impl CompletionRoutine {
    /// Calls the routine at DISPATCH_LEVEL; returns false for the default routine (nothing
    /// called).
    pub(crate) fn call(&self, packet: usize, status: NTSTATUS, response: &[u8]) -> bool {
        let (buffer, len) = if response.is_empty() {
            (core::ptr::null_mut(), 0)
        } else {
            (
                response.as_ptr().cast_mut().cast::<c_void>(),
                u32::try_from(response.len()).unwrap_or(u32::MAX),
            )
        };
        match *self {
            Self::Default => false,
            Self::Legacy(f) => {
                let _driver = crate::base::scope::DriverScope::enter();
                let _irql = crate::model::irql::CallbackIrql::enter(Irql::DISPATCH);
                // SAFETY: registered by the driver for this packet; `buffer` holds `len` bytes
                // (or is null) for the duration of the call.
                unsafe { f(packet as VMBPACKET, status, buffer, len) };
                true
            }
            Self::Ex(f, context) => {
                let _driver = crate::base::scope::DriverScope::enter();
                let _irql = crate::model::irql::CallbackIrql::enter(Irql::DISPATCH);
                // SAFETY: as above, with the context the driver registered.
                unsafe { f(packet as VMBPACKET, ctx(context), status, buffer, len) };
                true
            }
        }
    }
}
