#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]
//! A hostile host: every malformed message (bad length, version, type, sequence, flags, magic,
//! garbage, wrong contents) is rejected and counted under the right reason, the driver keeps
//! working, and nothing leaks.

use std::time::{Duration, Instant};

use proptest::prelude::*;
use vmbus_echo::client::{EchoClient, EchoConfig, EchoError, Session};
use vmbus_echo::protocol::{self, MessageType, ProtocolError, RejectReason};
use vmbus_echo_sim::{HostConfig, HostileKind, Options, Rig, StdPlatform, run};
use vmbus_kmcl::PassiveLevel;
use vmbus_kmcl_sim::InterfaceVersion;
use zerocopy::IntoBytes;

fn hostile(version: InterfaceVersion, every: u32) -> Options {
    Options {
        interface_version: version,
        pings: 360,
        payload: 48,
        notifications: 50,
        notification_payload: 32,
        bulk_bytes: 8192,
        bulk_rounds: 3,
        sync_requests: 5,
        hostile_every: every,
        timeout: Duration::from_secs(10),
        ..Options::default()
    }
}

fn assert_hostile_run(version: InterfaceVersion) {
    let r = run(&hostile(version, 4));
    // `run` itself checks that the driver's rejections equal the host's injections, reason by
    // reason, and that every hostile packet was acknowledged with its rejection code.
    assert!(r.passed(), "{r}");
    let d = r.driver;
    let h = r.host;
    assert_eq!(h.corrupted_pings, 90);
    assert_eq!(d.pings_failed, 90);
    assert_eq!(d.pings_ok, 270);
    assert_eq!(h.hostile_unsolicited, 90);
    assert_eq!(h.hostile_acked, 90);
    assert_eq!((h.hostile_bulk, d.bulk_failed, d.bulk_ok), (1, 1, 2));
    assert_eq!((h.hostile_sync, d.sync_failed), (1, 1));
    // 9 kinds x 10 on each path, plus the planted bulk and sync mismatches.
    for kind in HostileKind::PING {
        let expected = 20 + u64::from(kind.reason() == RejectReason::PayloadMismatch) * 2;
        assert_eq!(d.rejected(kind.reason()), expected, "{kind:?}");
    }
    assert_eq!(d.rejected_total(), 182);
    assert_eq!(d.notifications_ok, 50);
    assert_eq!(r.verifier.counters.forged_completions, 1);
}

#[test]
fn hostile_host_on_v1() {
    assert_hostile_run(InterfaceVersion::V1);
}

#[test]
fn hostile_host_on_v5() {
    assert_hostile_run(InterfaceVersion::V5);
}

#[test]
fn every_response_corrupted() {
    // Every ping answered wrongly: all fail, all are counted, nothing is lost.
    let r = run(&Options {
        pings: 45,
        ..hostile(InterfaceVersion::V5, 1)
    });
    assert!(r.passed(), "{r}");
    assert_eq!(r.driver.pings_failed, 45);
    assert_eq!(r.driver.pings_ok, 0);
    assert_eq!(r.host.hostile_acked, 45);
}

/// Waits until the driver has seen `n` host packets and acknowledged every one.
fn wait_incoming(client: &EchoClient<StdPlatform>, n: u64) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while client.counters().incoming < n || client.acks_outstanding() > 0 {
        assert!(
            Instant::now() < deadline,
            "driver saw {:?}",
            client.counters()
        );
        std::thread::sleep(Duration::from_millis(1));
    }
}

#[test]
fn each_malformed_notification_is_rejected_with_its_reason() {
    let rig = Rig::new(InterfaceVersion::V5, HostConfig::HONEST);
    {
        let irql = PassiveLevel::check().unwrap();
        let mut channel = rig.create_channel(&EchoConfig::DEFAULT).unwrap();
        let session = Session::open(&mut channel, &irql).unwrap();
        let client = session.client();
        let v = session.version().unwrap();
        let good = |seq: u64| {
            let mut payload = [0_u8; 24];
            protocol::fill_pattern(&mut payload, seq, 0);
            let mut buf = [0_u8; 64];
            let n =
                protocol::encode(&mut buf, MessageType::Notification, v, seq, &payload).unwrap();
            buf[..n].to_vec()
        };
        let mut cases: Vec<(Vec<u8>, RejectReason)> = Vec::new();
        cases.push((vec![1, 2, 3], RejectReason::TooShort));
        let mut b = good(1);
        b[0] = b'X';
        cases.push((b, RejectReason::BadMagic));
        let mut b = good(1);
        b[6] = 0x77;
        cases.push((b, RejectReason::UnknownType));
        let mut b = good(1);
        b[9] = 1;
        cases.push((b, RejectReason::BadFlags));
        let mut b = good(1);
        b[12] = 200; // declares 200 payload bytes, carries 24
        cases.push((b, RejectReason::BadLength));
        let mut b = good(1);
        b.extend_from_slice(&[0; 16]); // 16 bytes beyond the declared payload
        cases.push((b, RejectReason::BadLength));
        let mut b = good(1);
        b[6] = MessageType::PingRequest.raw() as u8;
        cases.push((b, RejectReason::UnexpectedType));
        let mut b = good(1);
        b[4] = 9;
        cases.push((b, RejectReason::BadVersion));
        cases.push((good(2), RejectReason::BadSequence));
        cases.push((good(0), RejectReason::BadSequence));
        let mut b = good(1);
        *b.last_mut().unwrap() ^= 1;
        cases.push((b, RejectReason::PayloadMismatch));
        for (i, (bytes, reason)) in cases.iter().enumerate() {
            let before = client.counters();
            rig.offer.host_send(bytes, true).unwrap();
            wait_incoming(client, before.incoming + 1);
            let after = client.counters();
            assert_eq!(
                after.rejected(*reason),
                before.rejected(*reason) + 1,
                "case {i}: {after:?}"
            );
            assert_eq!(
                after.rejected_total(),
                before.rejected_total() + 1,
                "case {i}"
            );
        }
        // The state was not disturbed: the valid first notification is still accepted, then
        // a replay of it is not.
        rig.offer.host_send(&good(1), true).unwrap();
        rig.offer.host_send(&good(1), false).unwrap();
        wait_incoming(client, cases.len() as u64 + 2);
        let c = client.counters();
        assert_eq!(c.notifications_ok, 1);
        assert_eq!(c.rejected(RejectReason::BadSequence), 3);
        // Each packet was acknowledged once, later, with its verdict; the host got every
        // acknowledgement that was asked for (all but the last packet).
        assert_eq!(c.acks_pended + c.acks_inline, c.incoming);
        assert_eq!(c.acks_completed, c.acks_pended);
        let expected_acks = cases.len() as u64 + 1;
        let deadline = Instant::now() + Duration::from_secs(10);
        while rig.host.stats().untracked_acks < expected_acks {
            assert!(Instant::now() < deadline, "{:?}", rig.host.stats());
            std::thread::sleep(Duration::from_millis(1));
        }
        assert_eq!(rig.host.stats().untracked_acks_ok, 1);
        // The driver keeps working.
        let mut scratch = vec![0_u8; protocol::MAX_MESSAGE];
        session.ping_burst(100, 20, &mut scratch).unwrap();
        session.close().unwrap();
    }
    rig.bus.verifier().assert_clean();
}

#[test]
fn notification_before_negotiation_is_rejected() {
    let rig = Rig::new(InterfaceVersion::V5, HostConfig::HONEST);
    {
        let irql = PassiveLevel::check().unwrap();
        let mut channel = rig.create_channel(&EchoConfig::DEFAULT).unwrap();
        channel.channel_mut().enable(&irql).unwrap();
        let mut buf = [0_u8; 64];
        let n = protocol::encode(&mut buf, MessageType::Notification, 2, 1, &[]).unwrap();
        rig.offer.host_send(&buf[..n], true).unwrap();
        wait_incoming(channel.client(), 1);
        assert_eq!(
            channel
                .client()
                .counters()
                .rejected(RejectReason::NotNegotiated),
            1
        );
        channel.channel_mut().disable(&irql);
    }
    rig.bus.verifier().assert_clean();
}

#[test]
fn wrong_synchronous_answers_are_rejected() {
    let rig = Rig::new(
        InterfaceVersion::V1,
        HostConfig {
            hostile_every: 1000,
            ..HostConfig::HONEST
        },
    );
    {
        let irql = PassiveLevel::check().unwrap();
        let mut channel = rig.create_channel(&EchoConfig::DEFAULT).unwrap();
        let mut session = Session::open(&mut channel, &irql).unwrap();
        // The hostile host answers the first synchronous request wrongly.
        assert_eq!(
            session.sync_request(7),
            Err(EchoError::Rejected(ProtocolError::PayloadMismatch))
        );
        assert_eq!(session.sync_request(7), Ok(protocol::sync_answer(7)));
        // And fills the first bulk buffer with the wrong pattern.
        assert_eq!(
            session.bulk(10_000, 5),
            Err(EchoError::Rejected(ProtocolError::PayloadMismatch))
        );
        session.bulk(10_000, 6).unwrap();
        let c = session.client().counters();
        assert_eq!(
            (c.sync_ok, c.sync_failed, c.bulk_ok, c.bulk_failed),
            (1, 1, 1, 1)
        );
        assert_eq!(c.rejected(RejectReason::PayloadMismatch), 2);
        session.close().unwrap();
    }
    rig.bus.verifier().assert_clean();
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 16, ..ProptestConfig::default() })]

    /// Random host packets (random bytes, or a valid header followed by random bytes) are each
    /// rejected, counted and completed; the driver then still pings.
    #[test]
    fn random_host_packets_never_break_the_driver(
        packets in proptest::collection::vec(
            (any::<bool>(), proptest::collection::vec(any::<u8>(), 0..200)),
            1..12,
        )
    ) {
        let rig = Rig::new(InterfaceVersion::V5, HostConfig::HONEST);
        {
            let irql = PassiveLevel::check().unwrap();
            let mut channel = rig.create_channel(&EchoConfig::DEFAULT).unwrap();
            let session = Session::open(&mut channel, &irql).unwrap();
            for (with_header, tail) in &packets {
                let mut bytes = Vec::new();
                if *with_header {
                    // A plausible header with a random type/length/sequence.
                    let mut h = protocol::header(MessageType::Notification, 2, 1, 0);
                    let t = tail.first().copied().unwrap_or(0);
                    h.message_type.set(u16::from(t % 16));
                    h.payload_len.set(u32::from(tail.get(1).copied().unwrap_or(0)));
                    h.sequence.set(u64::from(tail.get(2).copied().unwrap_or(0)) + 2);
                    bytes.extend_from_slice(h.as_bytes());
                }
                bytes.extend_from_slice(tail);
                if bytes.is_empty() {
                    bytes.push(0);
                }
                rig.offer.host_send(&bytes, true).unwrap();
            }
            wait_incoming(session.client(), packets.len() as u64);
            let c = session.client().counters();
            prop_assert_eq!(c.incoming, packets.len() as u64);
            prop_assert_eq!(c.notifications_ok, 0);
            prop_assert_eq!(c.rejected_total(), packets.len() as u64);
            let mut scratch = vec![0_u8; protocol::MAX_MESSAGE];
            prop_assert_eq!(session.ping_burst(64, 10, &mut scratch).unwrap().ok, 10);
            session.close().unwrap();
        }
        prop_assert!(rig.bus.verifier().is_clean(), "{}", rig.bus.verifier());
    }
}
