//! The callback ("DPC") thread of an open channel: reads the host→guest ring and calls the
//! driver's packet callbacks and completion routines (at DISPATCH_LEVEL), and runs a host
//! rescind.

use std::sync::Arc;

use vmbus_kmcl::Irql;

use crate::base::event::lock;
use crate::base::memory::PAGE_SIZE;
use crate::model::channel::{Channel, POLL};
use crate::model::incoming::{
    complete_transaction, deliver_held, dispatch_data, processing_complete, read_budget, read_ring,
    redeliver, run_work,
};
use crate::model::registry;
use crate::ring::PacketType;
use crate::verifier::report::Counter;

/// One iteration of the callback thread; false when it must exit.
fn dpc_step(ch: &Arc<Channel>, scratch: &mut Vec<u8>) -> bool {
    if lock(&ch.inner).host_close_requested {
        ch.host_close();
    }
    {
        let mut inner = lock(&ch.inner);
        ch.flush(&mut inner);
    }
    run_work(ch);
    let mut delivered = redeliver(ch);
    delivered = delivered.saturating_add(deliver_held(ch));
    loop {
        let budget = read_budget(ch);
        if budget == 0 {
            break;
        }
        let batch = read_ring(ch, budget, scratch);
        if batch.is_empty() {
            break;
        }
        for r in batch {
            match r.kind {
                PacketType::Completion => complete_transaction(ch, &r),
                PacketType::InBand | PacketType::GpaDirect => {
                    if dispatch_data(ch, r) {
                        delivered = delivered.saturating_add(1);
                    }
                }
                PacketType::TransferPages => ch.bus.bump(Counter::Unsupported),
            }
        }
        {
            let mut inner = lock(&ch.inner);
            ch.flush(&mut inner);
        }
        run_work(ch);
    }
    processing_complete(ch, delivered, Irql::DISPATCH);
    let inner = lock(&ch.inner);
    !(inner.dpc_stop && inner.work.is_empty())
}

/// The callback thread of a channel.
pub(crate) fn dpc_main(ch: &Arc<Channel>) {
    let _emulator = crate::base::scope::EmulatorScope::enter();
    registry::set_current_bus(&ch.bus);
    let size = lock(&ch.guest_reader)
        .as_ref()
        .map_or(PAGE_SIZE, |r| r.ring().data_size() as usize);
    let mut scratch = vec![0u8; size];
    loop {
        let seen = ch.guest_event.current();
        let step =
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| dpc_step(ch, &mut scratch)));
        match step {
            Ok(true) => {}
            Ok(false) => break,
            Err(_) => {
                ch.bus.bump(Counter::Internal);
                break;
            }
        }
        ch.guest_event.wait_past(seen, POLL);
    }
    ch.cv.notify_all();
}
