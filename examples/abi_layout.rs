//! Prints the KMCL client interface layouts this crate was built with: for each version the
//! Size/Version pair to query with, the slot count, and the first and last slot offsets, plus
//! the interface GUID. The same facts are asserted at compile time in `vmbus_kmcl::sys`.
//!
//! `cargo run --example abi_layout`

use core::mem::offset_of;

use vmbus_kmcl::sys::*;

/// Bytes of the `INTERFACE` header before the first slot.
const HEADER: usize = size_of::<INTERFACE>();

fn main() {
    let g = KMCL_CLIENT_INTERFACE_TYPE;
    println!(
        "KMCL_CLIENT_INTERFACE_TYPE = {{{:08x}-{:04x}-{:04x}-{:02x}{:02x}-{}}}",
        g.Data1,
        g.Data2,
        g.Data3,
        g.Data4[0],
        g.Data4[1],
        g.Data4[2..]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<String>()
    );
    println!(
        "{:<26} {:>7} {:>8} {:>6} {:>11} {:>10}",
        "struct", "Version", "Size", "slots", "first slot", "last slot"
    );
    let rows = [
        (
            "KMCL_CLIENT_INTERFACE_V1",
            KMCL_CLIENT_INTERFACE_V1::VERSION,
            KMCL_CLIENT_INTERFACE_V1::SIZE,
            offset_of!(KMCL_CLIENT_INTERFACE_V1, VmbChannelAllocate),
            offset_of!(KMCL_CLIENT_INTERFACE_V1, VmbPacketSetPointer),
        ),
        (
            "KMCL_CLIENT_INTERFACE_V2",
            KMCL_CLIENT_INTERFACE_V2::VERSION,
            KMCL_CLIENT_INTERFACE_V2::SIZE,
            offset_of!(KMCL_CLIENT_INTERFACE_V2, VmbChannelAllocate),
            offset_of!(KMCL_CLIENT_INTERFACE_V2, VmbChannelGetParentDeviceObject),
        ),
        (
            "KMCL_CLIENT_INTERFACE_V3",
            KMCL_CLIENT_INTERFACE_V3::VERSION,
            KMCL_CLIENT_INTERFACE_V3::SIZE,
            offset_of!(KMCL_CLIENT_INTERFACE_V3, VmbChannelAllocate),
            offset_of!(KMCL_CLIENT_INTERFACE_V3, VmbChannelAllocateBounceBuffer),
        ),
        (
            "KMCL_CLIENT_INTERFACE_V4",
            KMCL_CLIENT_INTERFACE_V4::VERSION,
            KMCL_CLIENT_INTERFACE_V4::SIZE,
            offset_of!(KMCL_CLIENT_INTERFACE_V4, VmbChannelAllocate),
            offset_of!(KMCL_CLIENT_INTERFACE_V4, VmbChannelCreateGpadlFromPfnList),
        ),
        (
            "KMCL_CLIENT_INTERFACE_V5",
            KMCL_CLIENT_INTERFACE_V5::VERSION,
            KMCL_CLIENT_INTERFACE_V5::SIZE,
            offset_of!(KMCL_CLIENT_INTERFACE_V5, VmbChannelAllocate),
            offset_of!(KMCL_CLIENT_INTERFACE_V5, VmbPacketSetCompletionRoutineEx),
        ),
    ];
    for (name, version, size, first, last) in rows {
        let slots = (usize::from(size) - HEADER) / size_of::<usize>();
        println!("{name:<26} {version:>7} {size:>#8x} {slots:>6} {first:>#11x} {last:>#10x}");
    }
}
