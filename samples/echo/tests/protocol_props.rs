#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]
//! Property tests of the echo protocol parser: arbitrary bytes never panic and are either
//! rejected or parsed consistently; every valid message round-trips, with any ring padding;
//! every single-field corruption is rejected with the reason for that field.

use proptest::prelude::*;
use vmbus_echo::protocol::{
    self, HEADER_SIZE, MAX_PADDING, MAX_PAYLOAD, MessageType, ProtocolError, RejectReason,
};

fn message_type() -> impl Strategy<Value = MessageType> {
    proptest::sample::select(MessageType::ALL.to_vec())
}

/// A valid message: its type, version, sequence and payload.
fn valid_message() -> impl Strategy<Value = (MessageType, u16, u64, Vec<u8>)> {
    (message_type(), 1..=protocol::MAX_VERSION, any::<u64>()).prop_flat_map(|(t, v, s)| {
        let payload = match t.fixed_payload_len() {
            Some(n) => proptest::collection::vec(any::<u8>(), n..=n).boxed(),
            None => proptest::collection::vec(any::<u8>(), 0..600).boxed(),
        };
        (Just(t), Just(v), Just(s), payload)
    })
}

fn encode(t: MessageType, v: u16, s: u64, payload: &[u8]) -> Vec<u8> {
    let mut buf = vec![0_u8; HEADER_SIZE + payload.len()];
    let n = protocol::encode(&mut buf, t, v, s, payload).unwrap();
    assert_eq!(n, buf.len());
    buf
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..5000)) {
        match protocol::parse(&bytes) {
            Ok(m) => {
                // A parsed message is self-consistent.
                prop_assert_eq!(m.payload().len() as u64, u64::from(m.header().payload_len.get()));
                prop_assert!(bytes.len() - HEADER_SIZE - m.payload().len() <= MAX_PADDING);
                prop_assert!(m.payload().len() <= MAX_PAYLOAD);
                if let Some(n) = m.message_type().fixed_payload_len() {
                    prop_assert_eq!(m.payload().len(), n);
                }
            }
            Err(e) => {
                let _ = e.reason().code();
                let _ = format!("{e}");
            }
        }
    }

    #[test]
    fn header_prefixed_noise_never_panics(
        t in any::<u16>(),
        len in any::<u32>(),
        flags in prop_oneof![Just(0_u32), any::<u32>()],
        tail in proptest::collection::vec(any::<u8>(), 0..300),
    ) {
        // Mostly-valid headers reach the deeper checks.
        let mut bytes = protocol::header(MessageType::PingRequest, 1, 1, 0).as_bytes_vec();
        bytes[6..8].copy_from_slice(&(t % 20).to_le_bytes());
        bytes[8..12].copy_from_slice(&flags.to_le_bytes());
        bytes[12..16].copy_from_slice(&(len % 400).to_le_bytes());
        bytes.extend_from_slice(&tail);
        if let Ok(m) = protocol::parse(&bytes) {
            prop_assert_eq!(m.header().flags.get(), 0);
            prop_assert_eq!(m.payload().len() as u32, len % 400);
        }
    }

    #[test]
    fn valid_messages_round_trip((t, v, s, payload) in valid_message(), padding in 0..=MAX_PADDING) {
        let mut bytes = encode(t, v, s, &payload);
        bytes.extend(std::iter::repeat_n(0_u8, padding));
        let m = protocol::parse(&bytes).unwrap();
        prop_assert_eq!(m.message_type(), t);
        prop_assert_eq!(m.version(), v);
        prop_assert_eq!(m.sequence(), s);
        prop_assert_eq!(m.payload(), &payload[..]);
        if t.min_version() <= v {
            prop_assert!(m.expect(t, v, s).is_ok());
        }
        prop_assert!(m.expect(t, v, s.wrapping_add(1)).is_err());
    }

    #[test]
    fn too_much_padding_is_rejected((t, v, s, payload) in valid_message(), extra in 8_usize..64) {
        let mut bytes = encode(t, v, s, &payload);
        bytes.extend(std::iter::repeat_n(0_u8, extra));
        let reason = protocol::parse(&bytes).map(|_| ()).map_err(|e| e.reason());
        prop_assert_eq!(reason, Err(RejectReason::BadLength));
    }

    #[test]
    fn truncation_is_rejected((t, v, s, payload) in valid_message(), cut in 1_usize..700) {
        let bytes = encode(t, v, s, &payload);
        let cut = cut.min(bytes.len());
        let short = &bytes[..bytes.len() - cut];
        let reason = protocol::parse(short).map(|_| ()).map_err(|e| e.reason());
        let expected = if short.len() < HEADER_SIZE {
            RejectReason::TooShort
        } else {
            RejectReason::BadLength
        };
        prop_assert_eq!(reason, Err(expected));
    }

    #[test]
    fn header_field_corruptions_are_rejected_by_field(
        (t, v, s, payload) in valid_message(),
        magic_bit in 0_u32..32,
        bad_type in 15_u16..,
        flags in 1_u32..,
    ) {
        let good = encode(t, v, s, &payload);
        let reason = |b: &[u8]| protocol::parse(b).map(|_| ()).map_err(|e| e.reason());

        let mut b = good.clone();
        let magic = protocol::MAGIC ^ (1 << magic_bit);
        b[..4].copy_from_slice(&magic.to_le_bytes());
        prop_assert_eq!(reason(&b), Err(RejectReason::BadMagic));

        let mut b = good.clone();
        b[6..8].copy_from_slice(&bad_type.to_le_bytes());
        prop_assert_eq!(reason(&b), Err(RejectReason::UnknownType));

        let mut b = good.clone();
        b[8..12].copy_from_slice(&flags.to_le_bytes());
        prop_assert_eq!(reason(&b), Err(RejectReason::BadFlags));

        let m = protocol::parse(&good).unwrap();
        let other = MessageType::ALL.into_iter().find(|o| *o != t).unwrap();
        prop_assert!(
            matches!(m.expect(other, v, s), Err(ProtocolError::UnexpectedType { .. })),
            "type {:?} accepted as {:?}", t, other
        );
        if t.min_version() <= v {
            prop_assert_eq!(
                m.expect(t, v.wrapping_add(1), s).map(|_| ()),
                Err(ProtocolError::BadVersion { found: v, expected: v.wrapping_add(1) })
            );
        }
    }

    #[test]
    fn pattern_checks_every_byte(
        seed in any::<u64>(),
        start in 0_u64..10_000,
        len in 1_usize..300,
        flip in any::<prop::sample::Index>(),
        bit in 0_u8..8,
    ) {
        let mut data = vec![0_u8; len];
        protocol::fill_pattern(&mut data, seed, start);
        prop_assert!(protocol::check_pattern(&data, seed, start));
        let i = flip.index(len);
        data[i] ^= 1 << bit;
        prop_assert!(!protocol::check_pattern(&data, seed, start));
    }
}

/// `IntoBytes::as_bytes` as a `Vec`.
trait AsBytesVec {
    fn as_bytes_vec(&self) -> Vec<u8>;
}

impl AsBytesVec for protocol::Header {
    fn as_bytes_vec(&self) -> Vec<u8> {
        zerocopy::IntoBytes::as_bytes(self).to_vec()
    }
}
