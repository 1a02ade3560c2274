#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]
//! Host packets are pended (`IncomingPacket::pend`) by the receive path and acknowledged later
//! from another thread: the ack worker (the driver's work item) completes them with
//! `PendedPacket::complete`, and the host receives each acknowledgement. Whatever the worker
//! leaves is completed by close and by pause, never cancelled (the verifier would report an
//! uncompleted incoming packet, and `acks_cancelled` would count it).

use std::time::{Duration, Instant};

use vmbus_echo::client::{ACK_QUEUE, EchoConfig, Session};
use vmbus_echo::protocol::{self, MessageType, RejectReason};
use vmbus_echo_sim::{HostConfig, HostStats, Rig};
use vmbus_kmcl::PassiveLevel;
use vmbus_kmcl_sim::InterfaceVersion;

/// A valid notification of `sequence` with 24 pattern bytes, in `version`.
fn notification(version: u16, sequence: u64) -> Vec<u8> {
    let mut payload = [0_u8; 24];
    protocol::fill_pattern(&mut payload, sequence, 0);
    let mut buf = [0_u8; 64];
    let n = protocol::encode(
        &mut buf,
        MessageType::Notification,
        version,
        sequence,
        &payload,
    )
    .unwrap();
    buf[..n].to_vec()
}

/// Waits (bounded) until `done` holds.
fn wait(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(1));
    }
}

#[test]
fn notifications_are_acknowledged_from_the_worker_thread() {
    for version in [InterfaceVersion::V1, InterfaceVersion::V5] {
        let rig = Rig::new(version, HostConfig::HONEST);
        {
            let irql = PassiveLevel::check().unwrap();
            let mut channel = rig.create_channel(&EchoConfig::DEFAULT).unwrap();
            let session = Session::open(&mut channel, &irql).unwrap();
            session.request_notifications(300, 64).unwrap();
            let client = session.client();
            let platform = client.platform();
            let c = client.counters();
            assert_eq!((c.incoming, c.notifications_ok), (300, 300));
            // Every host packet was pended and then completed with its acknowledgement.
            assert_eq!(c.acks_pended + c.acks_inline, 300);
            assert!(c.acks_pended > 0, "{c:?}");
            assert_eq!(c.acks_completed, c.acks_pended);
            assert_eq!(c.acks_cancelled, 0);
            // By the worker, on its own thread, not on the thread that received the packets.
            let receive = platform.receive_thread().expect("acks were queued");
            let worker = platform.worker_thread().expect("the worker runs");
            assert_ne!(receive, worker);
            assert_ne!(receive, std::thread::current().id());
            wait("the worker's count", || {
                platform.worker_completed() == c.acks_pended
            });
            // The host receives an acknowledgement with status 0 for each notification.
            wait("the host to read the acknowledgements", || {
                rig.host.stats().notifications_acked == 300
            });
            let host = rig.host.stats();
            assert_eq!(host.notifications_sent, 300);
            assert_eq!(host.notifications_acked, 300);
            assert_eq!(host.ack_mismatches, 0);
            session.close().unwrap();
        }
        rig.bus.verifier().assert_clean();
    }
}

#[test]
fn acknowledgement_waits_for_the_worker() {
    let rig = Rig::new(InterfaceVersion::V5, HostConfig::HONEST);
    {
        let irql = PassiveLevel::check().unwrap();
        let mut channel = rig.create_channel(&EchoConfig::DEFAULT).unwrap();
        let session = Session::open(&mut channel, &irql).unwrap();
        let version = session.version().unwrap();
        let client = session.client();
        let platform = client.platform();

        // While the worker is held, received packets stay pended: the host sees nothing.
        platform.hold_acks(true);
        let sent = 5_u64;
        for sequence in 1..=sent {
            rig.offer
                .host_send(&notification(version, sequence), true)
                .unwrap();
        }
        // A malformed one too (shorter than a header even with the ring's padding to 8 bytes):
        // rejected, and acknowledged with its reason later.
        rig.offer.host_send(b"garbage", true).unwrap();
        wait("the packets to be received", || {
            client.counters().incoming == sent + 1
        });
        std::thread::sleep(Duration::from_millis(50));
        assert_eq!(client.acks_outstanding(), sent + 1);
        assert_eq!(rig.host.stats().untracked_acks, 0);
        assert_eq!(platform.worker_completed(), 0);
        let c = client.counters();
        assert_eq!(c.notifications_ok, sent);
        assert_eq!(c.rejected(RejectReason::TooShort), 1);

        // Released, the worker completes them all, from its own thread.
        platform.hold_acks(false);
        wait("the host to receive the acknowledgements", || {
            rig.host.stats().untracked_acks == sent + 1
        });
        let host: HostStats = rig.host.stats();
        assert_eq!(host.untracked_acks_ok, sent);
        wait("the worker's count", || {
            platform.worker_completed() == sent + 1
        });
        assert_eq!(client.acks_outstanding(), 0);
        assert_ne!(platform.worker_thread(), platform.receive_thread());
        assert_ne!(platform.worker_thread(), Some(std::thread::current().id()));
        session.close().unwrap();
    }
    rig.bus.verifier().assert_clean();
}

#[test]
fn a_full_queue_acknowledges_in_the_callback() {
    let rig = Rig::new(InterfaceVersion::V5, HostConfig::HONEST);
    {
        let irql = PassiveLevel::check().unwrap();
        let mut channel = rig.create_channel(&EchoConfig::DEFAULT).unwrap();
        let session = Session::open(&mut channel, &irql).unwrap();
        let version = session.version().unwrap();
        let client = session.client();
        let platform = client.platform();
        platform.hold_acks(true);
        let sent = ACK_QUEUE as u64 + 4;
        for sequence in 1..=sent {
            rig.offer
                .host_send(&notification(version, sequence), true)
                .unwrap();
        }
        wait("the packets to be received", || {
            client.counters().incoming == sent
        });
        // The queue (and the channel's pend table) hold ACK_QUEUE packets; the rest were
        // completed in the callback, so the host already has their acknowledgements.
        let c = client.counters();
        assert_eq!(c.acks_pended, ACK_QUEUE as u64);
        assert_eq!(c.acks_inline, 4);
        wait("the inline acknowledgements", || {
            rig.host.stats().untracked_acks == 4
        });
        platform.hold_acks(false);
        wait("every acknowledgement", || {
            rig.host.stats().untracked_acks == sent
        });
        assert_eq!(rig.host.stats().untracked_acks_ok, sent);
        assert_eq!(client.counters().acks_completed, ACK_QUEUE as u64);
        session.close().unwrap();
    }
    rig.bus.verifier().assert_clean();
}

#[test]
fn close_acknowledges_what_the_worker_left() {
    for version in [InterfaceVersion::V1, InterfaceVersion::V5] {
        let rig = Rig::new(version, HostConfig::HONEST);
        {
            let irql = PassiveLevel::check().unwrap();
            let mut channel = rig
                .create_channel(&EchoConfig {
                    timeout_ns: 200_000_000,
                    ..EchoConfig::DEFAULT
                })
                .unwrap();
            let session = Session::open(&mut channel, &irql).unwrap();
            let protocol_version = session.version().unwrap();
            let client = session.client();
            client.platform().hold_acks(true);
            for sequence in 1..=3 {
                rig.offer
                    .host_send(&notification(protocol_version, sequence), true)
                    .unwrap();
            }
            wait("the packets to be received", || {
                client.counters().incoming == 3
            });
            // The worker stays held: close waits for it (bounded), then acknowledges the
            // pended packets itself before disabling the channel, so none is cancelled.
            session.close().unwrap();
            let c = channel.client().counters();
            assert_eq!(
                (c.acks_pended, c.acks_completed, c.acks_cancelled),
                (3, 3, 0)
            );
            assert_eq!(channel.platform().worker_completed(), 0);
        }
        rig.bus.verifier().assert_clean();
    }
}

#[test]
fn pause_acknowledges_pended_packets() {
    let rig = Rig::new(InterfaceVersion::V5, HostConfig::HONEST);
    {
        let irql = PassiveLevel::check().unwrap();
        let mut channel = rig.create_channel(&EchoConfig::DEFAULT).unwrap();
        let mut session = Session::open(&mut channel, &irql).unwrap();
        let protocol_version = session.version().unwrap();
        session.client().platform().hold_acks(true);
        for sequence in 1..=2 {
            rig.offer
                .host_send(&notification(protocol_version, sequence), true)
                .unwrap();
        }
        wait("the packets to be received", || {
            session.client().counters().incoming == 2
        });
        // KMCL's pause waits for every incoming packet: the suspend callback acknowledges them.
        session.pause().unwrap();
        assert_eq!(session.client().acks_outstanding(), 0);
        session.resume().unwrap();
        session.client().platform().hold_acks(false);
        let mut scratch = vec![0_u8; protocol::MAX_MESSAGE];
        session.ping(64, &mut scratch).unwrap();
        session.close().unwrap();
        let c = channel.client().counters();
        assert_eq!(
            (c.acks_pended, c.acks_completed, c.acks_cancelled),
            (2, 2, 0)
        );
        assert_eq!(rig.host.stats().untracked_acks_ok, 2);
    }
    rig.bus.verifier().assert_clean();
}

#[test]
fn dropping_an_open_channel_acknowledges_pended_packets_in_suspend() {
    let rig = Rig::new(InterfaceVersion::V5, HostConfig::HONEST);
    let reference = {
        let irql = PassiveLevel::check().unwrap();
        let mut channel = rig.create_channel(&EchoConfig::DEFAULT).unwrap();
        let session = Session::open(&mut channel, &irql).unwrap();
        let protocol_version = session.version().unwrap();
        session.client().platform().hold_acks(true);
        for sequence in 1..=3 {
            rig.offer
                .host_send(&notification(protocol_version, sequence), true)
                .unwrap();
        }
        wait("the packets to be received", || {
            session.client().counters().incoming == 3
        });
        // No close: the channel is dropped open, with three packets pended.
        channel.new_ref()
    };
    // The teardown's suspend callback acknowledged them (KMCL waits for every incoming packet
    // when delivery stops) and the queue let go of them: nothing is left pended.
    let c = reference.handler().counters();
    assert_eq!(
        (c.acks_pended, c.acks_completed, c.acks_cancelled),
        (3, 3, 0)
    );
    assert_eq!(reference.handler().acks_outstanding(), 0);
    assert!(!reference.is_enabled());
    drop(reference);
    rig.bus.verifier().assert_clean();
}
