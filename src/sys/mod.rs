//! The raw KMCL ABI, layout-exact, with the C names of `vmbuskernelmodeclientlibapi.h`.
//!
//! Everything here mirrors the WDK header slot by slot (`docs/spec/kmcl-abi.md` is the
//! reference): the three opaque handles, the base types, every `FN_`/`PFN_` function type, every
//! `EVT_` callback, the interface structs V1–V5 (client) and the server-side blocks, the
//! state-change callback structs, GUIDs, versions, flags, limits and the NTSTATUS codes KMCL
//! documents. Sizes and offsets are asserted at compile time in `layout`.
//!
//! Nothing here is safe to call: every slot is an `unsafe extern` function pointer whose
//! contract is the KMCL's. The safe layer of this crate wraps the client side.
//!
//! Calling conventions, one rule for every path (library, emulator, tests) on every target: a
//! pointer type is declared with the convention the header gives it, spelled the way wdk-sys
//! spells it. KMCL slots and callbacks are `extern "system"` (`NTAPI`/`__stdcall` on 32-bit x86,
//! the platform convention elsewhere), the nine `FASTCALL` slots `extern "fastcall"` on 32-bit
//! x86. The two `INTERFACE` routines (`PINTERFACE_REFERENCE` / `PINTERFACE_DEREFERENCE`) name no
//! convention in `wdm.h`, and wdk-sys declares them `extern "C"`; so do the portable twins here
//! and every function the crate or the emulator stores in them. On x86-64 and ARM64, the
//! targets windows-drivers-rs supports, "C" and "system" are the same convention.

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
