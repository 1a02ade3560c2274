//! The passive worker of an open channel: re-delivers deferred packets, and delivers every
//! packet when incoming processing at passive is requested (at PASSIVE_LEVEL).

use std::sync::Arc;

use vmbus_kmcl::Irql;

use crate::base::event::lock;
use crate::model::channel::{Channel, POLL};
use crate::model::incoming::{processing_complete, run_callback};
use crate::model::registry;
use crate::verifier::report::{Counter, ViolationKind};

/// The passive worker of a channel.
pub(crate) fn passive_main(ch: &Arc<Channel>) {
    let _emulator = crate::base::scope::EmulatorScope::enter();
    registry::set_current_bus(&ch.bus);
    loop {
        let seen = ch.passive_event.current();
        let mut delivered = 0u32;
        loop {
            let next = {
                let mut inner = lock(&ch.inner);
                let Some(pkt) = inner.passive.pop_front() else {
                    break;
                };
                let reserved = lock(&pkt.st).at_passive;
                if reserved {
                    // First delivery in at-passive mode: the reservation was taken by the
                    // callback thread.
                    Some(pkt)
                } else if inner.suspended || !inner.delivery_enabled {
                    drop(inner);
                    ch.violation(
                        "VmbChannelPacketDeferToPassive",
                        ViolationKind::CallbackAfterClose,
                        "deferred packet could not be re-delivered: the channel was suspended",
                    );
                    ch.cv.notify_all();
                    None
                } else {
                    inner.in_callback = inner.in_callback.saturating_add(1);
                    Some(pkt)
                }
            };
            if let Some(pkt) = next {
                lock(&pkt.st).at_passive = false;
                let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    run_callback(ch, &pkt, true);
                }));
                if r.is_err() {
                    ch.bus.bump(Counter::Internal);
                }
                delivered = delivered.saturating_add(1);
            }
        }
        if lock(&ch.inner).at_passive {
            processing_complete(ch, delivered, Irql::PASSIVE);
        }
        {
            let inner = lock(&ch.inner);
            if inner.dpc_stop && inner.passive.is_empty() {
                break;
            }
        }
        ch.passive_event.wait_past(seen, POLL);
    }
    ch.cv.notify_all();
}
