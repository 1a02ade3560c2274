//! Writes the seed corpus of the `ring_reader` fuzz target (`seeds/ring_reader/`): rings filled
//! by the emulator's own `RingWriter`, saved in the target's input layout
//! (`pages - 1`, write index LE, read index LE, data area).
//!
//! ```sh
//! cd sim/fuzz && cargo run --example ring_reader_seeds -- seeds/ring_reader
//! ```
//!
//! The seeds: a valid in-band packet; an in-band packet, a completion and a GPA-direct packet
//! with two ranges; a packet that wraps around the end of the data area (reader starting near
//! the end); a transfer-page packet (type 7, valid header); the in-band packet with a bad
//! descriptor (`len8` below `offset8`); and a published write index that is not 8-aligned.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};

use vmbus_kmcl_sim::ring::{
    GpaRangeSpec, OutgoingPacket, PAGE_SIZE, PacketType, RawAccess, Ring, RingError,
    encode_gpa_direct_header, gpa_direct_header_len,
};

/// One seed: a ring of `pages` data pages whose reader starts at `start`, filled by `fill`;
/// `poke` may change the data area (descriptor corruption) and returns the write index to
/// publish instead of the writer's (or `None`).
fn seed(
    pages: usize,
    start: u32,
    fill: impl FnOnce(&mut vmbus_kmcl_sim::ring::RingWriter) -> Result<(), RingError>,
    poke: impl FnOnce(&mut [u8], u32) -> Option<u32>,
) -> Vec<u8> {
    let (mut writer, mut reader) = Ring::create_at(pages, start, start).unwrap();
    fill(&mut writer).unwrap();
    let raw = RawAccess::new(&mut writer, &mut reader).unwrap();
    let mut memory = vec![0_u8; PAGE_SIZE + raw.data_size() as usize];
    raw.snapshot(&mut memory).unwrap();
    let write_index = u32::from_le_bytes(memory[..4].try_into().unwrap());
    let mut data = memory.split_off(PAGE_SIZE);
    let write_index = poke(&mut data, write_index).unwrap_or(write_index);
    // Trailing zeroes are implied by the layout: keep the seed short.
    while data.last() == Some(&0) {
        data.pop();
    }
    let mut out = vec![u8::try_from(pages - 1).unwrap()];
    out.extend_from_slice(&write_index.to_le_bytes());
    out.extend_from_slice(&start.to_le_bytes());
    out.extend_from_slice(&data);
    out
}

fn in_band(writer: &mut vmbus_kmcl_sim::ring::RingWriter) -> Result<(), RingError> {
    let payload: Vec<u8> = (0..40_u8).collect();
    writer.write(&OutgoingPacket::in_band(7, true, &[&payload]))?;
    Ok(())
}

fn main() {
    let dir = std::env::args_os()
        .nth(1)
        .map_or_else(|| PathBuf::from("seeds/ring_reader"), PathBuf::from);
    std::fs::create_dir_all(&dir).unwrap();
    let mut seeds: Vec<(&str, Vec<u8>)> = Vec::new();

    seeds.push(("in-band", seed(1, 0, in_band, |_, _| None)));

    seeds.push((
        "mixed-gpa-direct",
        seed(
            2,
            0,
            |writer| {
                in_band(writer)?;
                writer.write(&OutgoingPacket::completion(7, &[b"done"]))?;
                let first = [0x1000_u64, 0x1001];
                let second = [0x2000_u64];
                let ranges = [
                    GpaRangeSpec {
                        byte_offset: 0x800,
                        byte_count: 0x1000,
                        pfns: &first,
                    },
                    GpaRangeSpec {
                        byte_offset: 0,
                        byte_count: 16,
                        pfns: &second,
                    },
                ];
                let mut header = vec![0_u8; gpa_direct_header_len(&ranges)?];
                encode_gpa_direct_header(&ranges, &mut header)?;
                writer.write(&OutgoingPacket::gpa_direct(9, &header, &[b"gpa payload"]))?;
                Ok(())
            },
            |_, _| None,
        ),
    ));

    // The reader starts 64 bytes before the end of a one-page ring: the 200-byte payload wraps.
    seeds.push((
        "wrap-around",
        seed(
            1,
            (PAGE_SIZE - 64) as u32,
            |writer| {
                let payload = [0xA5_u8; 200];
                writer.write(&OutgoingPacket::in_band(3, false, &[&payload]))?;
                Ok(())
            },
            |_, _| None,
        ),
    ));

    // A transfer-page packet: header = transfer_page_set_id u16, sender_owns_set u8,
    // reserved u8, range_count u32, then (byte_count u32, byte_offset u32) per range.
    seeds.push((
        "transfer-pages",
        seed(
            1,
            0,
            |writer| {
                let mut header = Vec::new();
                header.extend_from_slice(&1_u16.to_le_bytes());
                header.extend_from_slice(&[0, 0]);
                header.extend_from_slice(&1_u32.to_le_bytes());
                header.extend_from_slice(&64_u32.to_le_bytes());
                header.extend_from_slice(&0_u32.to_le_bytes());
                writer.write(&OutgoingPacket {
                    packet_type: PacketType::TransferPages,
                    completion_requested: true,
                    transaction_id: 11,
                    header: &header,
                    payload: &[b"xfer"],
                })?;
                Ok(())
            },
            |_, _| None,
        ),
    ));

    // Descriptor bytes 2..4 are offset8, 4..6 len8: len8 = 1 < offset8 = 2.
    seeds.push((
        "bad-descriptor",
        seed(1, 0, in_band, |data, _| {
            data[4..6].copy_from_slice(&1_u16.to_le_bytes());
            None
        }),
    ));

    seeds.push((
        "unaligned-write-index",
        seed(1, 0, in_band, |_, write| Some(write + 3)),
    ));

    for (name, bytes) in &seeds {
        let path: &Path = &dir.join(name);
        std::fs::write(path, bytes).unwrap();
        println!(
            "{} ({} bytes): {}",
            path.display(),
            bytes.len(),
            describe(bytes)
        );
    }
}

/// What the fuzz target's reader makes of a seed: the packets it reads, then how it stops.
fn describe(input: &[u8]) -> String {
    let pages = usize::from(input[0] % 3) + 1;
    let write = u32::from_le_bytes(input[1..5].try_into().unwrap());
    let size = pages * PAGE_SIZE;
    let read = (u32::from_le_bytes(input[5..9].try_into().unwrap()) % size as u32) & !7;
    let data = &input[9..input.len().min(9 + size)];
    let layout = std::alloc::Layout::from_size_align((1 + pages) * PAGE_SIZE, PAGE_SIZE).unwrap();
    // SAFETY: non-zero size.
    let base = std::ptr::NonNull::new(unsafe { std::alloc::alloc_zeroed(layout) }).unwrap();
    // SAFETY: inside the allocation; no endpoint exists yet.
    unsafe {
        base.as_ptr().cast::<u32>().write(write);
        base.as_ptr().add(4).cast::<u32>().write(read);
        base.as_ptr().add(64).cast::<u32>().write(1);
        std::ptr::copy_nonoverlapping(data.as_ptr(), base.as_ptr().add(PAGE_SIZE), data.len());
    }
    let mut out = Vec::new();
    {
        // SAFETY: the allocation outlives the reader, its only endpoint.
        let mut reader =
            unsafe { vmbus_kmcl_sim::ring::RingReader::over_raw(base, pages, read) }.unwrap();
        let mut buf = vec![0_u8; 64 * 1024];
        loop {
            match reader.read(&mut buf) {
                Ok(Some(o)) => out.push(format!(
                    "{:?} at {} ({} payload bytes, gpa ranges {}, transfer ranges {})",
                    o.packet.packet_type(),
                    o.packet.ring_offset(),
                    o.packet.payload().len(),
                    o.packet.gpa_ranges().map_or(0, Iterator::count),
                    o.packet.transfer_pages().map_or(0, |t| t.ranges().count()),
                )),
                Ok(None) => {
                    out.push("empty".to_owned());
                    break;
                }
                Err(e) => {
                    out.push(format!("error {e:?}"));
                    break;
                }
            }
        }
    }
    // SAFETY: allocated above with `layout`; the reader is gone.
    unsafe { std::alloc::dealloc(base.as_ptr(), layout) };
    out.join("; ")
}
