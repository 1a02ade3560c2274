//! The raw KMCL ABI, layout-exact, with the C names of `vmbuskernelmodeclientlibapi.h`.
//!
//! Everything here mirrors the WDK header slot by slot (`../shared/spec/kmcl-abi.md` is the
//! reference): the three opaque handles, the base types, every `FN_`/`PFN_` function type, every
//! `EVT_` callback, the interface structs V1–V5 (client) and the server-side blocks, the
//! state-change callback structs, GUIDs, versions, flags, limits and the NTSTATUS codes KMCL
//! documents. Sizes and offsets are asserted at compile time in `layout`.
//!
//! Nothing here is safe to call: every slot is an `unsafe extern` function pointer whose
//! contract is the KMCL's. The safe layer of this crate wraps the client side.

#![allow(non_camel_case_types, non_snake_case)]

mod base;
mod callbacks;
mod constants;
mod functions;
mod interface;
mod layout;

pub use base::*;
pub use callbacks::*;
pub use constants::*;
pub use functions::*;
pub use interface::*;

#[cfg(all(test, kmcl_bindgen))]
mod bindgen_check;
