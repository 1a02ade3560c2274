#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]
//! Every path of the echo protocol end to end over the emulator: the sample driver's portable
//! logic (`vmbus_echo::client`) against the echo VSP through real VMBus rings, on every KMCL
//! interface version, with the verifier clean afterwards.

use std::time::Duration;

use vmbus_echo::client::{EchoConfig, EchoError, POOL_PACKETS, Session};
use vmbus_echo::ioctl::{self, PingInput, PingOutput};
use vmbus_echo::protocol::{self, MAX_PAYLOAD};
use vmbus_echo_sim::{HostConfig, Options, Paths, Rig, run};
use vmbus_kmcl::PassiveLevel;
use vmbus_kmcl_sim::InterfaceVersion;
use zerocopy::FromBytes;

/// A small but complete run.
fn small(version: InterfaceVersion) -> Options {
    Options {
        interface_version: version,
        pings: 300,
        payload: 200,
        notifications: 100,
        notification_payload: 64,
        bulk_bytes: 3 * 4096 + 123,
        bulk_rounds: 3,
        sync_requests: 20,
        timeout: Duration::from_secs(10),
        ..Options::default()
    }
}

fn assert_full_run(version: InterfaceVersion) {
    let r = run(&small(version));
    assert!(r.passed(), "{r}");
    let expected_kmcl = vmbus_kmcl::InterfaceVersion::NEWEST_FIRST
        .into_iter()
        .find(|v| v.number() == version.number());
    assert_eq!(r.kmcl_version, expected_kmcl);
    assert_eq!(r.protocol_version, Some(protocol::MAX_VERSION));
    let d = r.driver;
    assert_eq!((d.pings_sent, d.pings_ok, d.pings_failed), (300, 300, 0));
    assert_eq!(d.ping_bytes_echoed, 300 * 200);
    assert_eq!(d.notifications_ok, 100);
    assert_eq!(d.incoming, 100);
    assert_eq!((d.bulk_ok, d.bulk_bytes), (3, 3 * (3 * 4096 + 123)));
    assert_eq!(d.sync_ok, 20);
    assert_eq!(d.rejected_total(), 0);
    // Every host packet was pended and acknowledged later; every request but the synchronous
    // ones went out from the packet pool.
    assert_eq!(d.acks_pended + d.acks_inline, 100);
    assert!(d.acks_pended > 0);
    assert_eq!((d.acks_completed, d.acks_cancelled), (d.acks_pended, 0));
    assert_eq!(d.sends_pooled + d.sends_allocated, 1 + 300 + 1 + 3 + 1);
    assert!(d.sends_pooled > 0);
    assert_eq!(r.latency.count, 300);
    assert!(r.latency.p50_ns > 0 && r.latency.p50_ns <= r.latency.p99_ns);
    // Version request, pings, notify request, bulk requests, sync requests, goodbye.
    assert_eq!(
        r.rings.guest_to_host.packets_written,
        1 + 300 + 1 + 3 + 20 + 1 + 100
    );
    assert!(r.rings.guest_to_host.writer_signals >= 1);
    assert_eq!(r.host.opens, 1);
    assert_eq!(r.host.goodbyes, 1);
}

#[test]
fn every_path_on_v1() {
    assert_full_run(InterfaceVersion::V1);
}

#[test]
fn every_path_on_v5() {
    assert_full_run(InterfaceVersion::V5);
}

#[test]
fn every_path_on_v2_v3_v4() {
    for version in [
        InterfaceVersion::V2,
        InterfaceVersion::V3,
        InterfaceVersion::V4,
    ] {
        assert_full_run(version);
    }
}

#[test]
fn each_path_alone() {
    let only = [
        Paths {
            ping: true,
            notify: false,
            bulk: false,
            sync: false,
        },
        Paths {
            ping: false,
            notify: true,
            bulk: false,
            sync: false,
        },
        Paths {
            ping: false,
            notify: false,
            bulk: true,
            sync: false,
        },
        Paths {
            ping: false,
            notify: false,
            bulk: false,
            sync: true,
        },
    ];
    for paths in only {
        let r = run(&Options {
            paths,
            ..small(InterfaceVersion::V5)
        });
        assert!(r.passed(), "{paths:?}\n{r}");
        let d = r.driver;
        assert_eq!(d.pings_sent > 0, paths.ping);
        assert_eq!(d.notifications_ok > 0, paths.notify);
        assert_eq!(d.bulk_ok > 0, paths.bulk);
        assert_eq!(d.sync_ok > 0, paths.sync);
    }
}

#[test]
fn extreme_sizes_and_smallest_rings() {
    for (payload, window) in [(0, 1), (1, 60), (MAX_PAYLOAD, 4)] {
        let r = run(&Options {
            payload,
            window,
            ring_pages: 2,
            notification_payload: u32::try_from(payload).unwrap(),
            bulk_bytes: 1,
            ..small(InterfaceVersion::V5)
        });
        assert!(r.passed(), "payload {payload}\n{r}");
        assert_eq!(r.driver.ping_bytes_echoed, 300 * payload as u64);
    }
}

#[test]
fn version_1_host_has_no_bulk() {
    let r = run(&Options {
        host_max_version: protocol::VERSION_1,
        ..small(InterfaceVersion::V5)
    });
    assert!(r.passed(), "{r}");
    assert_eq!(r.protocol_version, Some(protocol::VERSION_1));
    assert!(r.bulk_skipped);

    let rig = Rig::new(
        InterfaceVersion::V5,
        HostConfig {
            max_version: protocol::VERSION_1,
            ..HostConfig::HONEST
        },
    );
    {
        let irql = PassiveLevel::check().unwrap();
        let mut channel = rig.create_channel(&EchoConfig::DEFAULT).unwrap();
        let mut session = Session::open(&mut channel, &irql).unwrap();
        // Version 1 has no bulk transfer: no GPADL was created.
        assert_eq!(session.channel().bulk_gpadl(), None);
        assert_eq!(session.bulk(4096, 1), Err(EchoError::NotSupported));
        assert_eq!(session.sync_request(3), Ok(protocol::sync_answer(3)));
        session.close().unwrap();
    }
    rig.bus.verifier().assert_clean();
}

#[test]
fn no_common_version_fails_open_cleanly() {
    let rig = Rig::new(
        InterfaceVersion::V5,
        HostConfig {
            min_version: 3,
            max_version: 3,
            hostile_every: 0,
        },
    );
    {
        let irql = PassiveLevel::check().unwrap();
        let mut channel = rig.create_channel(&EchoConfig::DEFAULT).unwrap();
        let error = Session::open(&mut channel, &irql).unwrap_err();
        assert_eq!(error, EchoError::NoCommonVersion { host: 3 });
        assert!(!channel.is_enabled());
        assert_eq!(channel.client().negotiated_version(), None);
        assert_eq!(channel.bulk_gpadl(), None);
    }
    let host = rig.host.stats();
    assert_eq!((host.opens, host.closes, host.negotiated), (1, 1, 0));
    rig.bus.verifier().assert_clean();
}

#[test]
fn single_ping_ioctl_pause_and_reopen() {
    let rig = Rig::new(InterfaceVersion::V5, HostConfig::HONEST);
    {
        let irql = PassiveLevel::check().unwrap();
        let mut channel = rig.create_channel(&EchoConfig::DEFAULT).unwrap();
        assert!(channel.pool().capacity() >= POOL_PACKETS);
        assert_eq!(channel.bulk_len(), EchoConfig::DEFAULT.bulk_bytes as usize);
        let mut scratch = vec![0_u8; protocol::MAX_MESSAGE];
        let mut gpadls = Vec::new();
        for round in 0..2 {
            let mut session = Session::open(&mut channel, &irql).unwrap();
            assert_eq!(session.version(), Ok(protocol::MAX_VERSION));
            // The bulk GPADL exists for the whole session, and the host can see it.
            let gpadl = session.channel().bulk_gpadl().unwrap();
            assert!(rig.offer.gpadl(gpadl).is_some());
            gpadls.push(gpadl);
            let rtt = session.ping(64, &mut scratch).unwrap();
            assert!(rtt > 0);
            // A scratch buffer too small for the message is refused before anything is sent.
            assert_eq!(
                session.ping(64, &mut scratch[..80]),
                Err(EchoError::InvalidArgument)
            );

            // The user-mode ping IOCTL's portable half.
            let input = ioctl::parse_ping_input(zerocopy::IntoBytes::as_bytes(&PingInput {
                payload_len: 100,
                count: 50,
            }))
            .unwrap();
            let output = ioctl::run_ping(&session, &input, &mut scratch).unwrap();
            assert_eq!((output.sent, output.ok, output.failed), (50, 50, 0));
            assert_eq!(output.bytes, 5000);
            assert!(output.p50_ns > 0 && output.p50_ns <= output.p99_ns);
            let mut out = [0_u8; 64];
            assert_eq!(ioctl::write_ping_output(&output, &mut out), Ok(64));
            assert_eq!(PingOutput::read_from_bytes(&out).unwrap(), output);

            // Several bulk transfers through the same GPADL.
            session.bulk(3 * 4096, round).unwrap();
            session.bulk(100, round + 10).unwrap();
            assert_eq!(session.channel().bulk_gpadl(), Some(gpadl));

            // D0Exit / D0Entry: pause and resume delivery.
            session.pause().unwrap();
            session.resume().unwrap();
            session.request_notifications(10, 8).unwrap();
            assert_eq!(
                session.sync_request(round),
                Ok(protocol::sync_answer(round))
            );
            session.close().unwrap();
            // Close deleted the GPADL (the host no longer sees it) and kept the buffer.
            assert_eq!(channel.bulk_gpadl(), None);
            assert!(rig.offer.gpadl(gpadl).is_none());
            assert_eq!(channel.pool().in_use(), 0);
            assert_eq!(
                Session::attach(&mut channel, &irql).unwrap_err(),
                EchoError::NotOpen
            );
            assert!(!channel.is_enabled());
        }
        let c = channel.client().counters();
        assert_eq!(c.pings_ok, 2 * 51);
        assert_eq!(c.notifications_ok, 20);
        assert_eq!((c.bulk_ok, c.bulk_bytes), (4, 2 * (3 * 4096 + 100)));
        assert_eq!(c.acks_completed + c.acks_inline, 20);
        assert_eq!(c.acks_cancelled, 0);
    }
    let host = rig.host.stats();
    assert_eq!((host.opens, host.closes, host.goodbyes), (2, 2, 2));
    assert_eq!(host.bulk_requests, 4);
    assert_eq!(host.guest_errors, 0);
    rig.bus.verifier().assert_clean();
}

#[test]
fn host_rescind_mid_session() {
    let rig = Rig::new(InterfaceVersion::V5, HostConfig::HONEST);
    {
        let irql = PassiveLevel::check().unwrap();
        let mut channel = rig.create_channel(&EchoConfig::DEFAULT).unwrap();
        let mut session = Session::open(&mut channel, &irql).unwrap();
        let mut scratch = vec![0_u8; protocol::MAX_MESSAGE];
        session.ping(16, &mut scratch).unwrap();
        session.bulk(4096, 1).unwrap();
        rig.offer.rescind();
        assert!(session.client().host_closed());
        assert_eq!(session.ping(16, &mut scratch), Err(EchoError::HostClosed));
        assert_eq!(session.sync_request(1), Err(EchoError::HostClosed));
        assert_eq!(session.bulk(4096, 2), Err(EchoError::HostClosed));
        assert_eq!(
            session.request_notifications(1, 1),
            Err(EchoError::HostClosed)
        );
        // Close skips the goodbye, deletes the GPADL and disables the channel.
        session.close().unwrap();
        assert_eq!(channel.bulk_gpadl(), None);
    }
    assert_eq!(rig.host.stats().goodbyes, 0);
    rig.bus.verifier().assert_clean();
}

#[test]
fn invalid_configuration_is_refused() {
    let rig = Rig::new(InterfaceVersion::V5, HostConfig::HONEST);
    for config in [
        EchoConfig {
            ring_pages: 1,
            ..EchoConfig::DEFAULT
        },
        EchoConfig {
            window: 0,
            ..EchoConfig::DEFAULT
        },
        EchoConfig {
            window: 61,
            ..EchoConfig::DEFAULT
        },
        EchoConfig {
            timeout_ns: 0,
            ..EchoConfig::DEFAULT
        },
        EchoConfig {
            bulk_bytes: vmbus_echo::client::MAX_BULK_BYTES + 1,
            ..EchoConfig::DEFAULT
        },
    ] {
        assert_eq!(
            rig.create_channel(&config).unwrap_err(),
            EchoError::InvalidArgument
        );
    }
    rig.bus.verifier().assert_clean();
}
