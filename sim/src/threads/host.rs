//! The host thread of an open channel: runs the [`HostDevice`] (`on_open`, then
//! `on_packet` / `on_completion` / `on_poll` until the channel closes, then `on_close`).
//!
//! [`HostDevice`]: crate::HostDevice

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::sync::atomic::Ordering;

use vmbus_kmcl::sys::NTSTATUS;

use crate::base::event::{Rendezvous, lock};
use crate::base::memory::PAGE_SIZE;
use crate::base::status::{STATUS_DEVICE_REMOVED, STATUS_SUCCESS, STATUS_UNSUCCESSFUL};
use crate::model::channel::{Channel, POLL};
use crate::model::host::{
    HostChannel, HostCommand, HostCompletion, HostDevice, HostIncoming, flush, read_guest_ring,
};
use crate::model::offer::OfferShared;
use crate::model::registry;
use crate::verifier::report::Counter;

fn guarded(ch: &Channel, f: impl FnOnce()) {
    if catch_unwind(AssertUnwindSafe(f)).is_err() {
        ch.bus.bump(Counter::HostPanic);
    }
}

/// The host thread of an open channel.
pub(crate) fn host_main(
    ch: &Arc<Channel>,
    mut device: Box<dyn HostDevice>,
    offer: &Arc<OfferShared>,
    opened: &Rendezvous<NTSTATUS>,
) {
    let _emulator = crate::base::scope::EmulatorScope::enter();
    registry::set_current_bus(&ch.bus);
    let mut hc = HostChannel {
        channel: Arc::clone(ch),
        offer: Arc::clone(offer),
    };
    let open = catch_unwind(AssertUnwindSafe(|| device.on_open(&mut hc)));
    let mut status = match open {
        Ok(Ok(())) => STATUS_SUCCESS,
        Ok(Err(s)) => s,
        Err(_) => {
            ch.bus.bump(Counter::HostPanic);
            STATUS_UNSUCCESSFUL
        }
    };
    if status == STATUS_SUCCESS && ch.bus.config.host_profile.polls_before_open_result() {
        // The device talks before the guest has its open result (HostProfile::HyperV).
        guarded(ch, || device.on_poll(&mut hc));
        flush(ch, &mut lock(&ch.host));
    }
    if status == STATUS_SUCCESS && offer.is_rescinded() {
        // Rescinded while opening: the host sends no open result; the guest's open fails and
        // the device, which had accepted the open, sees it closed.
        guarded(ch, || device.on_close(&mut hc));
        status = STATUS_DEVICE_REMOVED;
    }
    opened.put(status);
    if status != STATUS_SUCCESS {
        offer.return_device(device);
        return;
    }
    let size = lock(&ch.host)
        .reader
        .as_ref()
        .map_or(PAGE_SIZE, |r| r.ring().data_size() as usize);
    let mut scratch = vec![0u8; size];
    loop {
        let seen = ch.host_event.current();
        let close = lock(&ch.host).commands.pop_front();
        if let Some(HostCommand::Close) = close {
            guarded(ch, || device.on_close(&mut hc));
            break;
        }
        let mut more = false;
        if !offer.stalled.load(Ordering::SeqCst) {
            let (packets, m) = read_guest_ring(ch, &mut scratch);
            more = m;
            for p in packets {
                match p {
                    HostIncoming::Data(pkt) => guarded(ch, || device.on_packet(&mut hc, &pkt)),
                    HostIncoming::Completion { txid, payload } => {
                        let tx = lock(&ch.host).tx.remove(&txid);
                        if let Some(tx) = tx {
                            let completion = HostCompletion {
                                transaction_id: txid,
                                payload,
                                external: tx.external.as_ref().map(|b| b.contents()),
                            };
                            guarded(ch, || device.on_completion(&mut hc, &completion));
                        }
                    }
                    HostIncoming::Other => {}
                }
            }
        }
        {
            let mut host = lock(&ch.host);
            flush(ch, &mut host);
        }
        guarded(ch, || device.on_poll(&mut hc));
        if !more {
            ch.host_event.wait_past(seen, POLL);
        }
    }
    offer.return_device(device);
}
