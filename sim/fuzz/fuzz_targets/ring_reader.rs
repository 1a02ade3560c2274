//! Fuzzes the ring reader with a hostile writer: arbitrary data-area bytes, an arbitrary
//! published write index, and a chosen start for the reader. The reader must return packets or a
//! `RingError`, never panic, read out of bounds or loop forever.
//!
//! Input: `pages` (1 byte: 1 + `pages % 3` data pages), the published write index (4 bytes,
//! little-endian, any value), the reader's start index (4 bytes, little-endian, reduced to a
//! valid one: `(value % data_size) & !7`), then the data area from offset 0 (cut to the data
//! size; the rest of the area is zero). A start index other than 0 lets one packet wrap around
//! the end of the data area without overlapping the others. `examples/ring_reader_seeds.rs`
//! writes the seeds in `seeds/ring_reader/`.
//!
//! Speed: the ring memory (one page-aligned allocation of the largest ring) and the 64 KiB
//! packet buffer are allocated once per process and reused. Before each input the harness puts
//! them back exactly as a fresh `Ring::create` and a fresh zeroed buffer would be: the control
//! page zeroed but for the `feat_pending_send_sz` bit (the reader publishes its read index
//! there), the data area zeroed past the input's bytes as far as earlier inputs wrote, and the
//! part of the buffer earlier reads copied packets into (at most one data area) zeroed. The
//! reader itself is created for each input (`RingReader::over_raw` over that memory), so no
//! reader state survives from one input to the next.
#![no_main]

use core::cell::RefCell;
use core::ptr::NonNull;
use std::alloc::{Layout, alloc_zeroed};

use libfuzzer_sys::fuzz_target;
use vmbus_kmcl_sim::ring::{ControlWord, PAGE_SIZE, RingReader};

/// Data pages at most (inputs choose 1..=3).
const MAX_DATA_PAGES: usize = 3;
/// The packet buffer: larger than any packet a ring of `MAX_DATA_PAGES` can hold.
const BUF_LEN: usize = 64 * 1024;
/// `feat_pending_send_sz`, set in every ring `Ring::create` makes.
const FEATURE_PENDING_SEND_SZ: u32 = 1;

/// Memory reused from one input to the next.
struct Scratch {
    /// Control page + `MAX_DATA_PAGES` data pages, 4096-aligned, never freed. Accessed only
    /// through raw pointers, and by a reader only while the harness does not touch it.
    ring: NonNull<u8>,
    /// Bytes of the data area that may be non-zero (from the start).
    ring_dirty: usize,
    /// The packet buffer handed to the reader.
    buf: Box<[u8]>,
    /// Bytes at the front of `buf` that may be non-zero.
    buf_dirty: usize,
}

impl Scratch {
    fn new() -> Option<Self> {
        let layout = Layout::from_size_align((1 + MAX_DATA_PAGES) * PAGE_SIZE, PAGE_SIZE).ok()?;
        // SAFETY: the layout has a non-zero size.
        let ring = NonNull::new(unsafe { alloc_zeroed(layout) })?;
        Some(Self {
            ring,
            ring_dirty: 0,
            buf: vec![0_u8; BUF_LEN].into_boxed_slice(),
            buf_dirty: 0,
        })
    }

    /// Puts the ring memory in the state of a fresh ring of `data_size` bytes whose data area
    /// starts with `data` (already cut to `data_size`), with the given indices.
    fn reset_ring(&mut self, data: &[u8], write_index: u32, read_index: u32) {
        let base = self.ring.as_ptr();
        let data_area = base.wrapping_add(PAGE_SIZE);
        let put = |offset: usize, value: u32| {
            // SAFETY: `offset` is a 4-aligned word of the control page (inside the allocation,
            // which is 4096-aligned); no reader exists while the harness writes.
            unsafe { base.add(offset).cast::<u32>().write(value) };
        };
        // SAFETY: the control page is the first page of the allocation; no reader exists.
        unsafe { base.write_bytes(0, PAGE_SIZE) };
        put(
            ControlWord::FeatureBits.byte_offset(),
            FEATURE_PENDING_SEND_SZ,
        );
        put(ControlWord::WriteIndex.byte_offset(), write_index);
        put(ControlWord::ReadIndex.byte_offset(), read_index);
        // SAFETY: `data.len()` and `ring_dirty` are at most `MAX_DATA_PAGES * PAGE_SIZE`, the
        // size of the data area; `data` is fuzzer memory, not the ring.
        unsafe {
            core::ptr::copy_nonoverlapping(data.as_ptr(), data_area, data.len());
            if self.ring_dirty > data.len() {
                data_area
                    .add(data.len())
                    .write_bytes(0, self.ring_dirty - data.len());
            }
        }
        self.ring_dirty = data.len();
    }
}

thread_local! {
    static SCRATCH: RefCell<Option<Scratch>> = RefCell::new(Scratch::new());
}

fn run(input: &[u8], scratch: &mut Scratch) {
    let Some((&pages, rest)) = input.split_first() else {
        return;
    };
    let Some((write_bytes, rest)) = rest.split_first_chunk::<4>() else {
        return;
    };
    let Some((read_bytes, data)) = rest.split_first_chunk::<4>() else {
        return;
    };
    let pages = usize::from(pages % 3) + 1;
    let size = pages * PAGE_SIZE;
    let data = &data[..data.len().min(size)];
    // A reader's own index is trusted state: reduce the choice to a valid one.
    let read_index = (u32::from_le_bytes(*read_bytes) % size as u32) & !7;
    scratch.reset_ring(data, u32::from_le_bytes(*write_bytes), read_index);
    // Zero what earlier reads copied into the buffer (a read copies at most one data area).
    let dirty = scratch.buf_dirty;
    if let Some(front) = scratch.buf.get_mut(..dirty) {
        front.fill(0);
    }
    scratch.buf_dirty = size;

    // SAFETY: `scratch.ring` is a 4096-aligned allocation of (1 + MAX_DATA_PAGES) pages ≥
    // (1 + pages) pages, initialised, never freed; this reader is its only endpoint and the
    // harness touches the memory again only after the reader is dropped (single thread).
    let Ok(mut reader) = (unsafe { RingReader::over_raw(scratch.ring, pages, read_index) }) else {
        return;
    };
    // Bounded: each successful read consumes at least 24 ring bytes of a ring of at most 12 KiB.
    for _ in 0..1024 {
        match reader.read(&mut scratch.buf) {
            Ok(Some(outcome)) => {
                let packet = outcome.packet;
                let _ = (
                    packet.packet_type(),
                    packet.payload().len(),
                    packet.transaction_id(),
                );
                if let Some(ranges) = packet.gpa_ranges() {
                    for range in ranges {
                        let _ = range.pfns.iter().count();
                    }
                }
                if let Some(pages) = packet.transfer_pages() {
                    let _ = pages.ranges().count();
                }
            }
            Ok(None) | Err(_) => break,
        }
    }
}

fuzz_target!(|input: &[u8]| {
    SCRATCH.with(|scratch| {
        if let Some(scratch) = scratch.borrow_mut().as_mut() {
            run(input, scratch);
        }
    });
});
