#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]
//! Fault injection on the open and close paths: every KMCL call the driver makes while opening
//! (allocate, init setters, enable, the version request's packet) and closing (the goodbye's
//! packet, its completion) is made to fail in turn. Each failure surfaces as a clean error
//! carrying the injected status, and once the driver has dropped its objects the verifier is
//! clean: no channel, packet, GPADL or interface reference leaks, no violation.

use core::pin::pin;

use vmbus_echo::client::{EchoConfig, EchoError, Session};
use vmbus_echo::protocol;
use vmbus_echo_sim::{HostConfig, Rig};
use vmbus_kmcl::NtStatus;
use vmbus_kmcl_sim::status::{STATUS_CANCELLED, STATUS_INSUFFICIENT_RESOURCES};
use vmbus_kmcl_sim::{InterfaceVersion, Slot, SlotReturn};

/// An unusual status, so that a test can tell the injected failure from any other.
const INJECTED: i32 = 0xC0DE_0001_u32 as i32;

/// What happened when opening with a fault armed.
#[derive(Debug, PartialEq, Eq)]
enum Outcome {
    /// The fault did not hit the open path (the slot is not used there); the session worked.
    Unaffected,
    /// `create_channel` failed.
    CreateFailed(EchoError),
    /// `Session::open` failed.
    OpenFailed(EchoError),
}

/// Arms `slot` to fail on its first call, then creates, opens, pings and closes.
fn open_with_fault(version: InterfaceVersion, slot: Slot) -> (Outcome, Rig) {
    let rig = Rig::new(version, HostConfig::HONEST);
    assert!(rig.bus.faults().fail_nth(slot, 1, INJECTED));
    let outcome = {
        match rig.create_channel(&EchoConfig::DEFAULT) {
            Err(error) => Outcome::CreateFailed(error),
            Ok(channel) => {
                let channel = pin!(channel);
                match Session::open(channel.as_ref()) {
                    Err(error) => {
                        assert!(
                            !channel.is_enabled(),
                            "{slot}: a failed open leaves it closed"
                        );
                        Outcome::OpenFailed(error)
                    }
                    Ok(session) => {
                        rig.bus.faults().clear();
                        let mut scratch = vec![0_u8; protocol::MAX_MESSAGE];
                        session.ping_burst(32, 5, &mut scratch).unwrap();
                        session.close().unwrap();
                        Outcome::Unaffected
                    }
                }
            }
        }
    };
    (outcome, rig)
}

/// The status an outcome carries.
fn status(outcome: &Outcome) -> Option<NtStatus> {
    match outcome {
        Outcome::CreateFailed(e) | Outcome::OpenFailed(e) => Some(e.status()),
        Outcome::Unaffected => None,
    }
}

fn sweep(version: InterfaceVersion) {
    let mut failed = Vec::new();
    for slot in Slot::ALL {
        if slot.returns() == SlotReturn::Other || slot.min_version() > version {
            continue;
        }
        let (outcome, rig) = open_with_fault(version, slot);
        let report = rig.bus.verifier();
        assert!(report.is_clean(), "{slot}: {outcome:?}\n{report}");
        let host = rig.host.stats();
        assert_eq!(host.opens, host.closes, "{slot}: host open/close balance");
        assert_eq!(host.guest_errors, 0, "{slot}");
        match slot.returns() {
            SlotReturn::Status => {
                if let Some(status) = status(&outcome) {
                    assert_eq!(status, NtStatus(INJECTED), "{slot}: {outcome:?}");
                }
            }
            // VmbPacketAllocate returns null: the driver reports no resources.
            SlotReturn::Packet => assert_eq!(
                status(&outcome),
                Some(NtStatus(STATUS_INSUFFICIENT_RESOURCES)),
                "{slot}"
            ),
            SlotReturn::Other => {}
        }
        if outcome != Outcome::Unaffected {
            failed.push(slot);
        }
    }
    // Every fallible call of the open path was hit.
    let mut expected = vec![
        Slot::VmbChannelAllocate,
        Slot::VmbChannelInitSetFriendlyName,
        Slot::VmbChannelInitSetMaximumPacketSize,
        Slot::VmbChannelInitSetStateChangeCallbacks,
        Slot::VmbChannelEnable,
        Slot::VmbClientChannelInitSetRingBufferPageCount,
        Slot::VmbPacketAllocate,
        Slot::VmbPacketSend,
    ];
    if version >= InterfaceVersion::V5 {
        expected.push(Slot::VmbChannelInitSetInlinePacketContextSize);
        expected.push(Slot::VmbChannelInitSetProcessPacketCallbacksEx);
    } else {
        expected.push(Slot::VmbChannelInitSetProcessPacketCallbacks);
    }
    expected.sort();
    failed.sort();
    assert_eq!(failed, expected);
}

#[test]
fn every_open_path_call_fails_cleanly_on_v1() {
    sweep(InterfaceVersion::V1);
}

#[test]
fn every_open_path_call_fails_cleanly_on_v5() {
    sweep(InterfaceVersion::V5);
}

#[test]
fn failing_enable_can_be_retried() {
    let rig = Rig::new(InterfaceVersion::V5, HostConfig::HONEST);
    {
        let channel = pin!(rig.create_channel(&EchoConfig::DEFAULT).unwrap());
        rig.bus
            .faults()
            .fail_nth(Slot::VmbChannelEnable, 1, INJECTED);
        assert_eq!(
            Session::open(channel.as_ref()).unwrap_err(),
            EchoError::Kmcl(NtStatus(INJECTED))
        );
        rig.bus.faults().fail_nth(Slot::VmbPacketSend, 1, INJECTED);
        assert_eq!(
            Session::open(channel.as_ref()).unwrap_err(),
            EchoError::Kmcl(NtStatus(INJECTED))
        );
        let session = Session::open(channel.as_ref()).unwrap();
        assert_eq!(session.sync_request(9), Ok(protocol::sync_answer(9)));
        session.close().unwrap();
    }
    rig.bus.verifier().assert_clean();
}

#[test]
fn failed_version_completion_fails_open() {
    let rig = Rig::new(InterfaceVersion::V1, HostConfig::HONEST);
    {
        let channel = pin!(rig.create_channel(&EchoConfig::DEFAULT).unwrap());
        rig.bus.faults().completion_status(Some(STATUS_CANCELLED));
        assert_eq!(
            Session::open(channel.as_ref()).unwrap_err(),
            EchoError::Completion(NtStatus(STATUS_CANCELLED))
        );
        assert_eq!(channel.handler().counters().failed_completions, 1);
    }
    rig.bus.verifier().assert_clean();
}

/// Opens a session, arms a fault, closes: the close reports it, the channel is closed anyway.
fn close_with(version: InterfaceVersion, arm: impl FnOnce(&Rig)) -> (Result<(), EchoError>, Rig) {
    let rig = Rig::new(version, HostConfig::HONEST);
    let result = {
        let channel = pin!(rig.create_channel(&EchoConfig::DEFAULT).unwrap());
        let session = Session::open(channel.as_ref()).unwrap();
        let mut scratch = vec![0_u8; protocol::MAX_MESSAGE];
        session.ping_burst(64, 10, &mut scratch).unwrap();
        arm(&rig);
        let result = session.close();
        assert!(!channel.is_enabled());
        assert_eq!(channel.handler().negotiated_version(), None);
        result
    };
    (result, rig)
}

#[test]
fn close_path_faults_fail_cleanly() {
    for version in [InterfaceVersion::V1, InterfaceVersion::V5] {
        let (result, rig) = close_with(version, |rig| {
            rig.bus.faults().fail_nth(Slot::VmbPacketSend, 1, INJECTED);
        });
        assert_eq!(result, Err(EchoError::Kmcl(NtStatus(INJECTED))));
        rig.bus.verifier().assert_clean();
        assert_eq!(rig.host.stats().goodbyes, 0);

        let (result, rig) = close_with(version, |rig| {
            rig.bus
                .faults()
                .fail_nth(Slot::VmbPacketAllocate, 1, INJECTED);
        });
        assert_eq!(
            result,
            Err(EchoError::Kmcl(NtStatus(STATUS_INSUFFICIENT_RESOURCES)))
        );
        rig.bus.verifier().assert_clean();

        let (result, rig) = close_with(version, |rig| {
            rig.bus.faults().completion_status(Some(STATUS_CANCELLED));
        });
        assert_eq!(
            result,
            Err(EchoError::Completion(NtStatus(STATUS_CANCELLED)))
        );
        rig.bus.verifier().assert_clean();
        let host = rig.host.stats();
        assert_eq!((host.opens, host.closes, host.goodbyes), (1, 1, 1));
    }
}

#[test]
fn failing_gpadl_and_sync_leave_no_trace() {
    let rig = Rig::new(InterfaceVersion::V5, HostConfig::HONEST);
    {
        let channel = pin!(rig.create_channel(&EchoConfig::DEFAULT).unwrap());
        let session = Session::open(channel.as_ref()).unwrap();
        let mut buffer = vec![0_u8; 3 * 4096];
        rig.bus
            .faults()
            .fail_nth(Slot::VmbChannelCreateGpadlFromBuffer, 1, INJECTED);
        assert_eq!(
            session.bulk(&mut buffer, 1),
            Err(EchoError::Kmcl(NtStatus(INJECTED)))
        );
        rig.bus
            .faults()
            .fail_nth(Slot::VmbChannelSendSynchronousRequest, 1, INJECTED);
        assert_eq!(
            session.sync_request(1),
            Err(EchoError::Kmcl(NtStatus(INJECTED)))
        );
        // Both work again afterwards.
        session.bulk(&mut buffer, 2).unwrap();
        assert_eq!(session.sync_request(2), Ok(protocol::sync_answer(2)));
        let c = channel.handler().counters();
        assert_eq!(
            (c.bulk_ok, c.bulk_failed, c.sync_ok, c.sync_failed),
            (1, 1, 1, 1)
        );
        session.close().unwrap();
    }
    rig.bus.verifier().assert_clean();
}
