//! `VmbChannelEnable`: the channel model's open phases with the channel's threads started in
//! between (the host thread, then the callback thread and the passive worker).

use std::sync::Arc;

use vmbus_kmcl::sys::NTSTATUS;

use crate::base::event::{Rendezvous, lock};
use crate::base::spawn::spawn;
use crate::base::status::STATUS_INSUFFICIENT_RESOURCES;
use crate::model::channel::Channel;
use crate::threads::dpc::dpc_main;
use crate::threads::host::host_main;
use crate::threads::passive::passive_main;

/// `VmbChannelEnable`.
pub(crate) fn enable(ch: &Arc<Channel>) -> NTSTATUS {
    let (opening, device) = match ch.enable_begin() {
        Ok(o) => o,
        Err(status) => return status,
    };
    let opened = Arc::new(Rendezvous::default());
    let host_thread = {
        let c = Arc::clone(ch);
        let offer = Arc::clone(&opening.offer);
        let opened = Arc::clone(&opened);
        spawn(format!("vmbus-host-{:x}", ch.handle), move || {
            host_main(&c, device, &offer, &opened);
        })
    };
    let Ok(host_thread) = host_thread else {
        ch.reset_open_state();
        return ch.enable_failed(&opening, STATUS_INSUFFICIENT_RESOURCES);
    };
    ch.adopt(host_thread);
    if let Err(status) = ch.enable_opened(&opening, &opened) {
        return status;
    }
    let spawned = spawn_callback_threads(ch);
    ch.enable_finish(&opening, spawned)
}

/// Starts the callback thread and the passive worker and hands them to the channel.
fn spawn_callback_threads(ch: &Arc<Channel>) -> Result<(), NTSTATUS> {
    let dpc = {
        let c = Arc::clone(ch);
        spawn(format!("vmbus-dpc-{:x}", ch.handle), move || dpc_main(&c))
            .map_err(|_| STATUS_INSUFFICIENT_RESOURCES)?
    };
    let dpc_id = dpc.id();
    let passive = {
        let c = Arc::clone(ch);
        spawn(format!("vmbus-passive-{:x}", ch.handle), move || {
            passive_main(&c);
        })
    };
    let mut inner = lock(&ch.inner);
    inner.threads.push(dpc);
    inner.callback_threads.push(dpc_id);
    let passive = passive.map_err(|_| STATUS_INSUFFICIENT_RESOURCES)?;
    inner.callback_threads.push(passive.id());
    inner.threads.push(passive);
    Ok(())
}
