//! Layer 4: the threads that drive the channel model. `open` is `VmbChannelEnable`, which
//! starts them (through `base::spawn`); `host` is the host thread (`host_main`), `dpc` the
//! callback thread (`dpc_main`), `passive` the passive worker (`passive_main`). Uses `model`,
//! `verifier`, `base` and `ring`.

pub(crate) mod dpc;
pub(crate) mod host;
pub(crate) mod open;
pub(crate) mod passive;
