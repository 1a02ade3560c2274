//! Fuzzes the ring reader with a hostile writer: arbitrary data-area bytes, an arbitrary
//! published write index and interrupt/pending words. The reader must return packets or a
//! `RingError`, never panic, read out of bounds or loop forever.
#![no_main]

use libfuzzer_sys::fuzz_target;
use vmbus_kmcl_sim::ring::{RawAccess, Ring};

fuzz_target!(|input: &[u8]| {
    let Some((&pages, rest)) = input.split_first() else { return };
    let Some((index_bytes, data)) = rest.split_first_chunk::<4>() else { return };
    let Ok((mut writer, mut reader)) = Ring::create(usize::from(pages % 3) + 1) else { return };
    {
        let Ok(mut raw) = RawAccess::new(&mut writer, &mut reader) else { return };
        let size = raw.data_size() as usize;
        let data = &data[..data.len().min(size)];
        if raw.write_data(0, data).is_err() {
            return;
        }
        // SAFETY: single-threaded use; the reader validates the value.
        unsafe { raw.set_write_index(u32::from_le_bytes(*index_bytes)) };
    }
    let mut buf = vec![0_u8; 64 * 1024];
    // Bounded: each successful read consumes at least 24 ring bytes of a ring of at most 12 KiB.
    for _ in 0..1024 {
        match reader.read(&mut buf) {
            Ok(Some(outcome)) => {
                let packet = outcome.packet;
                let _ = (packet.packet_type(), packet.payload().len(), packet.transaction_id());
                if let Some(ranges) = packet.gpa_ranges() {
                    for range in ranges {
                        let _ = range.pfns.iter().count();
                    }
                }
            }
            Ok(None) | Err(_) => break,
        }
    }
});
