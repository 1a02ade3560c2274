#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]
//! A host that lies, and a host that goes away: malformed messages are counted by reason and
//! dropped (and still completed), keystrokes before the protocol response are rejected, a
//! missing consumer loses records without harm, a rescind while open closes the keyboard
//! cleanly, and a re-offer opens again. Verifier clean at the end of each test.

use vmbus_kbd::client::KbdError;
use vmbus_kbd::protocol::{self, Keystroke, RejectReason};
use vmbus_kbd_sim::harness::WAIT;
use vmbus_kbd_sim::typist;
use vmbus_kbd_sim::{HostConfig, Negotiation, Rig, wait_until};
use vmbus_kmcl::NtStatus;
use vmbus_kmcl_sim::InterfaceVersion;

#[test]
fn malformed_messages_are_counted_and_dropped() {
    let rig = Rig::new(
        InterfaceVersion::V5,
        HostConfig {
            completion_requested: true,
            ..HostConfig::HONEST
        },
    );
    let keyboard = rig.open().unwrap();
    let client = keyboard.client();
    let event = protocol::encode_event(Keystroke {
        make_code: 0x1e,
        info: 0,
    });
    let mut too_long = event.to_vec();
    too_long.resize(protocol::MAX_MESSAGE + 16, 0);
    let cases: Vec<(Vec<u8>, RejectReason)> = vec![
        // Truncated events: header only, and header plus make code.
        (event[..4].to_vec(), RejectReason::TooShort),
        (event[..6].to_vec(), RejectReason::TooShort),
        // One byte: the ring pads it to 8, an event header with no body.
        (vec![3], RejectReason::TooShort),
        (vec![0x99, 0, 0, 0, 0, 0, 0, 0], RejectReason::UnknownType),
        (
            protocol::encode_protocol_request(protocol::VERSION_1_0).to_vec(),
            RejectReason::UnexpectedType,
        ),
        (
            protocol::encode_led_indicators(7).to_vec(),
            RejectReason::UnexpectedType,
        ),
        (too_long, RejectReason::TooLong),
        (
            protocol::encode_event(Keystroke {
                make_code: 0x1d,
                info: protocol::INFO_E0 | protocol::INFO_E1,
            })
            .to_vec(),
            RejectReason::BadFlags,
        ),
        (
            protocol::encode_event(Keystroke {
                make_code: 0x1e | 0x80,
                info: 0,
            })
            .to_vec(),
            RejectReason::BadMakeCode,
        ),
        (
            protocol::encode_protocol_response(1).to_vec(),
            RejectReason::UnexpectedResponse,
        ),
    ];
    for (bytes, _) in &cases {
        rig.host.send_raw(bytes);
    }
    let total = cases.len() as u64;
    assert!(wait_until(WAIT, || client.counters().rejected_total() == total));
    for reason in RejectReason::ALL {
        let expected = cases.iter().filter(|(_, r)| *r == reason).count() as u64;
        assert_eq!(
            client.counters().rejected(reason),
            expected,
            "{}",
            reason.name()
        );
    }
    assert_eq!(rig.platform.record_count(), 0, "nothing reached kbdclass");
    // Every hostile packet asked for a completion and got one.
    assert!(wait_until(WAIT, || rig.host.completions() == total));
    assert_eq!(rig.bus.verifier().uncompleted_incoming, 0);

    // The keyboard still works.
    let keystrokes = typist::type_text("ok").unwrap();
    rig.host.type_keystrokes(&keystrokes);
    assert!(rig.wait_records(4));
    assert_eq!(typist::decode(&rig.platform.records()).text, "ok");
    assert!(wait_until(WAIT, || rig.host.completions() == total + 4));
    let report = rig.finish(Some(keyboard));
    assert_eq!(report.counters.host_device_panics, 0);
    report.assert_clean();
}

#[test]
fn keystrokes_before_the_response_are_rejected() {
    let rig = Rig::new(
        InterfaceVersion::V1,
        HostConfig {
            events_before_response: 3,
            completion_requested: true,
            ..HostConfig::HONEST
        },
    );
    let keyboard = rig.open().unwrap();
    let counters = keyboard.client().counters();
    assert_eq!(counters.rejected(RejectReason::NotNegotiated), 3);
    assert_eq!(counters.events, 0);
    assert_eq!(rig.platform.record_count(), 0);
    rig.host.type_keystrokes(&typist::type_text("z").unwrap());
    assert!(rig.wait_records(2));
    rig.finish(Some(keyboard)).assert_clean();
}

#[test]
fn keystrokes_from_a_refusing_host_never_arrive() {
    let rig = Rig::new(
        InterfaceVersion::V5,
        HostConfig {
            negotiation: Negotiation::Refuse(0),
            events_before_response: 2,
            completion_requested: false,
        },
    );
    assert_eq!(rig.open().unwrap_err(), KbdError::Refused { status: 0 });
    assert_eq!(rig.platform.record_count(), 0);
    rig.finish(None).assert_clean();
}

#[test]
fn a_missing_consumer_loses_records_harmlessly() {
    let rig = Rig::new(InterfaceVersion::V5, HostConfig::HONEST);
    let keyboard = rig.open().unwrap();
    let client = keyboard.client();
    rig.platform.set_connected(false);
    rig.host
        .type_keystrokes(&typist::type_text("lost").unwrap());
    assert!(wait_until(WAIT, || client.counters().consumer_dropped == 8));
    rig.platform.set_connected(true);
    rig.host
        .type_keystrokes(&typist::type_text("kept").unwrap());
    assert!(rig.wait_records(8));
    assert_eq!(typist::decode(&rig.platform.records()).text, "kept");
    rig.finish(Some(keyboard)).assert_clean();
}

#[test]
fn rescind_while_open_then_reoffer() {
    for version in [InterfaceVersion::V1, InterfaceVersion::V5] {
        let mut rig = Rig::new(version, HostConfig::HONEST);
        let keyboard = rig.open().unwrap();
        rig.host.type_keystrokes(&typist::type_text("ab").unwrap());
        assert!(rig.wait_records(4));

        rig.offer.rescind();
        let client = keyboard.client();
        assert!(client.host_closed());
        assert!(!client.is_ready());
        assert_eq!(keyboard.set_indicators(2), Err(KbdError::HostClosed));
        assert_eq!(KbdError::HostClosed.status(), NtStatus::DEVICE_REMOVED);
        let irql = vmbus_kmcl::PassiveLevel::check().unwrap();
        keyboard.close(&irql);
        let report = rig.bus.verifier();
        assert_eq!(report.live_channels, 0, "{report}");
        assert_eq!(report.uncompleted_incoming, 0);
        // Opening the rescinded offer fails cleanly.
        assert!(matches!(rig.open(), Err(KbdError::Kmcl(_))));

        // The host offers the keyboard again: a new device, a new channel.
        rig.reoffer(HostConfig::HONEST);
        let keyboard = rig.open().unwrap();
        rig.host.type_keystrokes(&typist::type_text("c").unwrap());
        assert!(rig.wait_records(6));
        assert_eq!(typist::decode(&rig.platform.records()).text, "abc");
        keyboard.set_indicators(1).unwrap();
        assert!(wait_until(WAIT, || rig.host.leds() == [1]));
        assert_eq!(rig.platform.deliveries_off_dispatch(), 0);
        rig.finish(Some(keyboard)).assert_clean();
    }
}
