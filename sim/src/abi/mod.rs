//! Layer 5: the C ABI face. `slots` holds the `extern "system"` slot bodies of the
//! `KMCL_CLIENT_INTERFACE_V1`…`V5` tables: each checks the IRQL, looks its handles up and calls
//! the model (or `threads::open` for `VmbChannelEnable`). Uses every layer below.

pub(crate) mod slots;
