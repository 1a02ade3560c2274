//! Property tests of the ring: random packet sequences against an independent model of the ring's
//! occupancy and of the signalling rules (spec §1.3, §1.8), plus a two-thread stress test.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use proptest::prelude::*;
use vmbus_kmcl_sim::ring::{
    ControlWord, OutgoingPacket, PacketType, Ring, RingError, RingReader, RingWriter,
};

/// Largest packet the 16-bit len8 can express.
const LEN8_MAX_BYTES: u32 = 0xFFFF * 8;

#[derive(Clone, Debug)]
struct Pkt {
    completion_type: bool,
    completion_requested: bool,
    txid: u64,
    len: usize,
    seed: u8,
    /// Where to split the payload into a gather list (fractions of the length).
    splits: (u8, u8),
}

impl Pkt {
    fn payload(&self) -> Vec<u8> {
        (0..self.len)
            .map(|i| self.seed.wrapping_add((i as u8).wrapping_mul(31)) ^ (i >> 8) as u8)
            .collect()
    }

    fn packet_type(&self) -> PacketType {
        if self.completion_type {
            PacketType::Completion
        } else {
            PacketType::InBand
        }
    }

    /// Ring bytes: descriptor + payload padded to 8, plus trailer (computed from the spec, not
    /// from the crate).
    fn ring_bytes(&self) -> u32 {
        ((16 + self.len as u32).div_ceil(8) * 8) + 8
    }
}

#[derive(Clone, Debug)]
enum Op {
    Write(Vec<Pkt>),
    Read(usize),
    Mask,
    Unmask,
}

fn pkt() -> impl Strategy<Value = Pkt> {
    let len = prop_oneof![0usize..64, 0usize..700, 0usize..6000];
    (
        any::<bool>(),
        any::<bool>(),
        any::<u64>(),
        len,
        any::<u8>(),
        (any::<u8>(), any::<u8>()),
    )
        .prop_map(
            |(completion_type, completion_requested, txid, len, seed, splits)| Pkt {
                completion_type,
                completion_requested,
                txid,
                len,
                seed,
                splits,
            },
        )
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        5 => prop::collection::vec(pkt(), 1..4).prop_map(Op::Write),
        4 => (1usize..5).prop_map(Op::Read),
        1 => Just(Op::Mask),
        1 => Just(Op::Unmask),
    ]
}

/// Independent model of the ring state.
struct Model {
    size: u32,
    queue: VecDeque<Pkt>,
    used: u32,
    mask: bool,
    pending: u32,
    writer_signals: u64,
    reader_signals: u64,
    written: u64,
    read: u64,
    wraps: u64,
}

impl Model {
    fn free(&self, used: u32) -> u32 {
        self.size - used - 8
    }
}

fn write_op(writer: &mut RingWriter, model: &mut Model, pkts: &[Pkt]) {
    let max = (model.size - 16).min(LEN8_MAX_BYTES);
    let payloads: Vec<Vec<u8>> = pkts.iter().map(Pkt::payload).collect();
    let mut batch = writer.batch();
    let mut staged = Vec::new();
    let mut batch_used = 0;
    let mut blocked = None;
    for (p, data) in pkts.iter().zip(&payloads) {
        let a = (p.splits.0 as usize * data.len()) / 256;
        let b = a + ((p.splits.1 as usize * (data.len() - a)) / 256);
        let parts: [&[u8]; 3] = [&data[..a], &data[a..b], &data[b..]];
        let packet = OutgoingPacket {
            packet_type: p.packet_type(),
            completion_requested: p.completion_requested,
            transaction_id: p.txid,
            header: &[],
            payload: &parts,
        };
        let need = p.ring_bytes();
        let result = batch.write(&packet);
        if need - 8 > max {
            assert_eq!(
                result,
                Err(RingError::PacketTooLarge {
                    len: (need - 8) as usize,
                    max
                })
            );
            continue;
        }
        let free = model.free(model.used + batch_used);
        if need > free {
            assert_eq!(
                result,
                Err(RingError::NotEnoughSpace { needed: need, free })
            );
            blocked = Some(need);
            break;
        }
        assert_eq!(result, Ok(need));
        batch_used += need;
        staged.push(p.clone());
    }
    let outcome = batch.commit();
    assert_eq!(outcome.packets as usize, staged.len());
    assert_eq!(outcome.bytes, batch_used);
    if staged.is_empty() {
        assert!(!outcome.signal_needed);
    } else {
        let expect_signal = !model.mask && model.used == 0;
        assert_eq!(outcome.signal_needed, expect_signal, "writer signal rule");
        model.writer_signals += u64::from(expect_signal);
        model.pending = 0;
        model.used += batch_used;
        model.written += staged.len() as u64;
        model.queue.extend(staged);
    }
    if let Some(need) = blocked {
        // Nothing else runs, so the re-check must report "still full" and leave pending set.
        assert!(!writer.wait_for_space(need).unwrap());
        model.pending = need.div_ceil(8) * 8;
        model.pending = model.pending.min(model.size - 8);
        assert_eq!(
            writer.ring().control_word(ControlWord::PendingSendSize),
            model.pending
        );
    }
}

fn check_packet(got: &vmbus_kmcl_sim::ring::IncomingPacket<'_>, want: &Pkt) {
    assert_eq!(got.packet_type(), want.packet_type());
    assert_eq!(got.completion_requested(), want.completion_requested);
    assert_eq!(got.flags(), u16::from(want.completion_requested));
    assert_eq!(got.transaction_id(), want.txid);
    assert!(got.header().is_empty());
    let padded = (want.ring_bytes() - 8 - 16) as usize;
    assert_eq!(got.payload().len(), padded, "padded payload length");
    let data = want.payload();
    assert_eq!(&got.payload()[..want.len], &data[..]);
    assert!(got.payload()[want.len..].iter().all(|&b| b == 0));
    assert!(got.gpa_ranges().is_none());
}

fn read_op(reader: &mut RingReader, model: &mut Model, k: usize, buf: &mut [u8]) {
    let old_used = model.used;
    let mut consumed = 0u32;
    let mut n = 0;
    let signal;
    if k == 1 {
        match reader.read(buf).unwrap() {
            None => {
                assert!(model.queue.is_empty());
                return;
            }
            Some(out) => {
                let want = model.queue.pop_front().unwrap();
                check_packet(&out.packet, &want);
                consumed += want.ring_bytes();
                n += 1;
                signal = out.signal_needed;
            }
        }
    } else {
        let mut batch = reader.batch();
        for _ in 0..k {
            match batch.read(buf).unwrap() {
                None => {
                    assert!(model.queue.is_empty());
                    break;
                }
                Some(p) => {
                    let want = model.queue.pop_front().unwrap();
                    check_packet(&p, &want);
                    consumed += want.ring_bytes();
                    n += 1;
                }
            }
        }
        let commit = batch.commit().unwrap();
        assert_eq!(commit.packets, n);
        assert_eq!(commit.bytes, consumed);
        signal = commit.signal_needed;
    }
    model.used -= consumed;
    model.read += u64::from(n);
    let pending = model.pending & !7;
    let expect = n > 0
        && pending != 0
        && model.free(old_used) < pending
        && model.free(model.used) >= pending;
    assert_eq!(signal, expect, "reader signal rule");
    model.reader_signals += u64::from(expect);
}

fn check_invariants(ring: &Ring, model: &Model, last_write: &mut u32, wraps: &mut u64) {
    let size = ring.data_size();
    let w = ring.control_word(ControlWord::WriteIndex);
    let r = ring.control_word(ControlWord::ReadIndex);
    assert_eq!(w % 8, 0);
    assert_eq!(r % 8, 0);
    assert!(w < size && r < size);
    let in_flight = (w + size - r) % size;
    assert_eq!(in_flight, model.used);
    assert!(in_flight <= size - 8);
    if w < *last_write {
        *wraps += 1;
    }
    *last_write = w;
    let c = ring.counters();
    assert_eq!(c.writer_signals, model.writer_signals);
    assert_eq!(c.reader_signals, model.reader_signals);
    assert_eq!(c.packets_written, model.written);
    assert_eq!(c.packets_read, model.read);
    assert_eq!(c.bytes_written - c.bytes_read, u64::from(model.used));
    assert_eq!(
        ring.control_word(ControlWord::InterruptMask),
        u32::from(model.mask)
    );
}

fn run(pages: usize, ops: &[Op]) -> u64 {
    let (mut writer, mut reader) = Ring::create(pages).unwrap();
    let ring = Arc::clone(writer.ring());
    let mut model = Model {
        size: ring.data_size(),
        queue: VecDeque::new(),
        used: 0,
        mask: false,
        pending: 0,
        writer_signals: 0,
        reader_signals: 0,
        written: 0,
        read: 0,
        wraps: 0,
    };
    assert_eq!(model.size as usize, pages * 4096);
    let mut buf = vec![0u8; 16 * 1024];
    let mut last_write = 0;
    let mut wraps = 0;
    for op in ops {
        match op {
            Op::Write(pkts) => write_op(&mut writer, &mut model, pkts),
            Op::Read(k) => read_op(&mut reader, &mut model, *k, &mut buf),
            Op::Mask => {
                reader.mask_interrupts();
                model.mask = true;
            }
            Op::Unmask => {
                let more = reader.unmask_interrupts().unwrap();
                assert_eq!(more, model.used > 0);
                model.mask = false;
            }
        }
        check_invariants(&ring, &model, &mut last_write, &mut wraps);
    }
    // Drain: nothing lost, order kept.
    while !model.queue.is_empty() {
        read_op(&mut reader, &mut model, 3, &mut buf);
        check_invariants(&ring, &model, &mut last_write, &mut wraps);
    }
    assert!(reader.read(&mut buf).unwrap().is_none());
    assert_eq!(reader.readable_bytes().unwrap(), 0);
    model.wraps = wraps;
    model.wraps
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 64,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn model_matches_ring(pages in 1usize..=4, ops in prop::collection::vec(op(), 50..300)) {
        run(pages, &ops);
    }
}

/// A fixed, long sequence on a one-page ring: proves the model test really exercises many
/// wrap-arounds (and keeps doing so if the strategy changes).
#[test]
fn many_wraps_on_small_ring() {
    let mut ops = Vec::new();
    for i in 0..400u64 {
        let len = ((i * 977) % 2500) as usize;
        ops.push(Op::Write(vec![Pkt {
            completion_type: i % 3 == 0,
            completion_requested: i % 2 == 0,
            txid: i,
            len,
            seed: i as u8,
            splits: ((i * 7) as u8, (i * 13) as u8),
        }]));
        if i % 2 == 1 {
            ops.push(Op::Read(2));
        }
    }
    let wraps = run(1, &ops);
    assert!(wraps >= 50, "only {wraps} wrap-arounds");
}

/// Two threads, real concurrency: the writer blocks with `wait_for_space`, the reader masks while
/// draining and unmasks with a re-check. Signals are modelled by flags; a lost wake-up would
/// make a side wait forever, which the deadline turns into a failure.
#[test]
fn threaded_round_trip_without_lost_wakeups() {
    const PACKETS: u64 = 20_000;
    let (mut writer, mut reader) = Ring::create(2).unwrap();
    let to_reader = AtomicBool::new(false);
    let to_writer = AtomicBool::new(false);
    let (to_reader, to_writer) = (&to_reader, &to_writer);
    let deadline = Instant::now() + Duration::from_secs(60);

    let wait = |flag: &AtomicBool| {
        while !flag.swap(false, Ordering::AcqRel) {
            assert!(Instant::now() < deadline, "lost wake-up");
            std::thread::yield_now();
        }
    };

    std::thread::scope(|s| {
        s.spawn(move || {
            let mut data = vec![0u8; 3000];
            for i in 0..PACKETS {
                let len = ((i * 7919) % 3000) as usize;
                for (j, b) in data[..len].iter_mut().enumerate() {
                    *b = (i as u8) ^ (j as u8);
                }
                let parts = [&data[..len]];
                let packet = OutgoingPacket::in_band(i, false, &parts);
                loop {
                    match writer.write(&packet) {
                        Ok(out) => {
                            if out.signal_needed {
                                to_reader.store(true, Ordering::Release);
                            }
                            break;
                        }
                        Err(RingError::NotEnoughSpace { needed, .. }) => {
                            if !writer.wait_for_space(needed).unwrap() {
                                wait(to_writer);
                            }
                        }
                        Err(e) => panic!("writer: {e}"),
                    }
                }
            }
        });
        s.spawn(move || {
            let mut buf = vec![0u8; 4096];
            let mut next = 0u64;
            while next < PACKETS {
                reader.mask_interrupts();
                let mut batch = reader.batch();
                let mut got = 0;
                while got < 8 {
                    let Some(p) = batch.read(&mut buf).unwrap() else {
                        break;
                    };
                    assert_eq!(p.transaction_id(), next);
                    let len = ((next * 7919) % 3000) as usize;
                    assert!(
                        p.payload()[..len]
                            .iter()
                            .enumerate()
                            .all(|(j, &b)| b == (next as u8) ^ (j as u8))
                    );
                    next += 1;
                    got += 1;
                }
                let commit = batch.commit().unwrap();
                if commit.signal_needed {
                    to_writer.store(true, Ordering::Release);
                }
                if got == 0 && !reader.unmask_interrupts().unwrap() {
                    wait(to_reader);
                }
            }
        });
    });
}
