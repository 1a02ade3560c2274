#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]
//! Protocol negotiation over the emulator: accepted (on the legacy V1 and the Ex V5 callback
//! paths), refused with a clear error, never answered, and KMCL failures during open. Every
//! test ends with a clean verifier report.

use std::time::Duration;

use vmbus_kbd::client::{KbdConfig, KbdError};
use vmbus_kbd::protocol::{self, RejectReason};
use vmbus_kbd_sim::{HostConfig, Negotiation, Rig};
use vmbus_kmcl::NtStatus;
use vmbus_kmcl_sim::{InterfaceVersion, Slot};

#[test]
fn accepted_on_v1_and_v5() {
    for version in [InterfaceVersion::V1, InterfaceVersion::V5] {
        let rig = Rig::new(version, HostConfig::HONEST);
        let keyboard = rig.open().unwrap();
        assert!(keyboard.client().is_ready(), "{version:?}");
        assert!(rig.host.accepted());
        assert_eq!(rig.host.requested_versions(), vec![protocol::VERSION_1_0]);
        let counters = keyboard.client().counters();
        assert_eq!(counters.protocol_responses, 1);
        assert_eq!(counters.rejected_total(), 0);
        // The open channel is visible to the verifier.
        assert_eq!(rig.bus.verifier().live_channels, 1);
        let report = rig.finish(Some(keyboard));
        report.assert_clean();
    }
}

#[test]
fn refused_is_a_clear_error_and_leaves_nothing() {
    let rig = Rig::new(
        InterfaceVersion::V5,
        HostConfig {
            negotiation: Negotiation::Refuse(0x10),
            ..HostConfig::HONEST
        },
    );
    let error = rig.open().unwrap_err();
    assert_eq!(error, KbdError::Refused { status: 0x10 });
    assert_eq!(error.status(), NtStatus::NOT_SUPPORTED);
    let message = error.to_string();
    assert!(
        message.contains("refused keyboard protocol 1.0"),
        "{message}"
    );
    assert!(!rig.host.accepted());
    // Keystrokes queued on the refusing host are never sent.
    rig.host
        .type_keystrokes(&vmbus_kbd_sim::typist::type_text("x").unwrap());
    assert_eq!(rig.platform.record_count(), 0);
    rig.finish(None).assert_clean();
}

#[test]
fn silent_host_times_out() {
    let rig = Rig::new(
        InterfaceVersion::V5,
        HostConfig {
            negotiation: Negotiation::Silent,
            ..HostConfig::HONEST
        },
    );
    let config = KbdConfig {
        timeout_ns: Duration::from_millis(200).as_nanos() as u64,
        ..KbdConfig::DEFAULT
    };
    assert_eq!(rig.open_with(&config).unwrap_err(), KbdError::Timeout);
    rig.finish(None).assert_clean();
}

#[test]
fn invalid_configuration() {
    let rig = Rig::new(InterfaceVersion::V5, HostConfig::HONEST);
    for config in [
        KbdConfig {
            ring_pages: 1,
            ..KbdConfig::DEFAULT
        },
        KbdConfig {
            timeout_ns: 0,
            ..KbdConfig::DEFAULT
        },
    ] {
        assert_eq!(
            rig.open_with(&config).unwrap_err(),
            KbdError::InvalidArgument
        );
    }
    rig.finish(None).assert_clean();
}

#[test]
fn kmcl_failures_during_open_leak_nothing() {
    let injected = NtStatus::INSUFFICIENT_RESOURCES;
    for slot in [
        Slot::VmbChannelAllocate,
        Slot::VmbChannelEnable,
        Slot::VmbPacketSend,
        Slot::VmbPacketAllocate,
    ] {
        let rig = Rig::new(InterfaceVersion::V5, HostConfig::HONEST);
        assert!(rig.bus.faults().fail_nth(slot, 1, injected.raw()));
        assert_eq!(
            rig.open().unwrap_err(),
            KbdError::Kmcl(injected),
            "{}",
            slot.name()
        );
        rig.finish(None).assert_clean();
    }
}

#[test]
fn a_second_response_is_rejected() {
    let rig = Rig::new(InterfaceVersion::V5, HostConfig::HONEST);
    let keyboard = rig.open().unwrap();
    rig.host.send_raw(&protocol::encode_protocol_response(0));
    let client = keyboard.client();
    assert!(vmbus_kbd_sim::wait_until(
        vmbus_kbd_sim::harness::WAIT,
        || client.counters().rejected(RejectReason::UnexpectedResponse) == 1
    ));
    // Still accepted: a late refusal does not undo the negotiation.
    assert!(client.is_ready());
    rig.finish(Some(keyboard)).assert_clean();
}
