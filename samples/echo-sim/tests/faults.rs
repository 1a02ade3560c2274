#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]
//! Fault injection on the open and close paths: every KMCL call the driver makes while opening
//! (allocate, init setters, enable, the version request's pool packet, the bulk GPADL) and
//! closing (the goodbye's packet, its completion) is made to fail in turn. Each failure surfaces as a clean error
//! carrying the injected status, and once the driver has dropped its objects the verifier is
//! clean: no channel, packet, GPADL or interface reference leaks, no violation.

use vmbus_echo::client::{EchoConfig, EchoError, Session};
use vmbus_echo::protocol;
use vmbus_echo_sim::{HostConfig, Rig};
use vmbus_kmcl::{NtStatus, PassiveLevel};
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
    let irql = PassiveLevel::check().unwrap();
    let outcome = {
        match rig.create_channel(&EchoConfig::DEFAULT) {
            Err(error) => Outcome::CreateFailed(error),
            Ok(mut channel) => match Session::open(&mut channel, &irql) {
                Err(error) => {
                    assert!(
                        !channel.is_enabled(),
                        "{slot}: a failed open leaves it closed"
                    );
                    assert_eq!(channel.bulk_gpadl(), None, "{slot}");
                    Outcome::OpenFailed(error)
                }
                Ok(session) => {
                    rig.bus.faults().clear();
                    let mut scratch = vec![0_u8; protocol::MAX_MESSAGE];
                    session.ping_burst(32, 5, &mut scratch).unwrap();
                    session.close().unwrap();
                    Outcome::Unaffected
                }
            },
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
            // VmbPacketAllocate returns null: the driver reports no resources. (Requests go
            // out from the packet pool, so the open path does not normally allocate packets.)
            SlotReturn::Packet => {
                if let Some(status) = status(&outcome) {
                    assert_eq!(status, NtStatus(STATUS_INSUFFICIENT_RESOURCES), "{slot}");
                }
            }
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
        Slot::VmbPacketInitialize,
        Slot::VmbPacketSend,
        Slot::VmbChannelCreateGpadlFromBuffer,
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
        let irql = PassiveLevel::check().unwrap();
        let mut channel = rig.create_channel(&EchoConfig::DEFAULT).unwrap();
        rig.bus
            .faults()
            .fail_nth(Slot::VmbChannelEnable, 1, INJECTED);
        assert_eq!(
            Session::open(&mut channel, &irql).unwrap_err(),
            EchoError::Kmcl(NtStatus(INJECTED))
        );
        rig.bus.faults().fail_nth(Slot::VmbPacketSend, 1, INJECTED);
        assert_eq!(
            Session::open(&mut channel, &irql).unwrap_err(),
            EchoError::Kmcl(NtStatus(INJECTED))
        );
        let session = Session::open(&mut channel, &irql).unwrap();
        assert_eq!(session.sync_request(9), Ok(protocol::sync_answer(9)));
        session.close().unwrap();
    }
    rig.bus.verifier().assert_clean();
}

#[test]
fn failed_version_completion_fails_open() {
    let rig = Rig::new(InterfaceVersion::V1, HostConfig::HONEST);
    {
        let irql = PassiveLevel::check().unwrap();
        let mut channel = rig.create_channel(&EchoConfig::DEFAULT).unwrap();
        rig.bus.faults().completion_status(Some(STATUS_CANCELLED));
        assert_eq!(
            Session::open(&mut channel, &irql).unwrap_err(),
            EchoError::Completion(NtStatus(STATUS_CANCELLED))
        );
        assert_eq!(channel.client().counters().failed_completions, 1);
    }
    rig.bus.verifier().assert_clean();
}

/// Opens a session, arms a fault, closes: the close reports it, the channel is closed anyway.
fn close_with(version: InterfaceVersion, arm: impl FnOnce(&Rig)) -> (Result<(), EchoError>, Rig) {
    let rig = Rig::new(version, HostConfig::HONEST);
    let result = {
        let irql = PassiveLevel::check().unwrap();
        let mut channel = rig.create_channel(&EchoConfig::DEFAULT).unwrap();
        let mut session = Session::open(&mut channel, &irql).unwrap();
        let mut scratch = vec![0_u8; protocol::MAX_MESSAGE];
        session.ping_burst(64, 10, &mut scratch).unwrap();
        session.bulk(4096, 7).unwrap();
        arm(&rig);
        let result = session.close();
        assert!(!channel.is_enabled());
        assert_eq!(channel.client().negotiated_version(), None);
        assert_eq!(channel.bulk_gpadl(), None);
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
                .fail_nth(Slot::VmbPacketInitialize, 1, INJECTED);
        });
        assert_eq!(result, Err(EchoError::Kmcl(NtStatus(INJECTED))));
        rig.bus.verifier().assert_clean();
        assert_eq!(rig.host.stats().goodbyes, 0);

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
        let irql = PassiveLevel::check().unwrap();
        let mut channel = rig.create_channel(&EchoConfig::DEFAULT).unwrap();
        // The bulk GPADL is created by open: its failure fails the open, which leaves the
        // channel closed with the buffer kept.
        rig.bus
            .faults()
            .fail_nth(Slot::VmbChannelCreateGpadlFromBuffer, 1, INJECTED);
        assert_eq!(
            Session::open(&mut channel, &irql).unwrap_err(),
            EchoError::Kmcl(NtStatus(INJECTED))
        );
        assert!(!channel.is_enabled());
        assert_eq!(channel.bulk_len(), EchoConfig::DEFAULT.bulk_bytes as usize);
        let mut session = Session::open(&mut channel, &irql).unwrap();
        rig.bus
            .faults()
            .fail_nth(Slot::VmbChannelSendSynchronousRequest, 1, INJECTED);
        assert_eq!(
            session.sync_request(1),
            Err(EchoError::Kmcl(NtStatus(INJECTED)))
        );
        // A failing request packet fails one bulk transfer; the GPADL stays.
        rig.bus
            .faults()
            .fail_nth(Slot::VmbPacketInitialize, 1, INJECTED);
        assert_eq!(
            session.bulk(3 * 4096, 1),
            Err(EchoError::Kmcl(NtStatus(INJECTED)))
        );
        // Both work again afterwards.
        session.bulk(3 * 4096, 2).unwrap();
        assert_eq!(session.sync_request(2), Ok(protocol::sync_answer(2)));
        let c = session.client().counters();
        assert_eq!(
            (c.bulk_ok, c.bulk_failed, c.sync_ok, c.sync_failed),
            (1, 1, 1, 1)
        );
        assert_eq!(c.send_failures, 1);
        session.close().unwrap();
    }
    let host = rig.host.stats();
    assert_eq!((host.opens, host.closes, host.goodbyes), (2, 2, 1));
    rig.bus.verifier().assert_clean();
}

#[test]
fn exhausted_pool_falls_back_to_kmcl_packets() {
    let rig = Rig::new(InterfaceVersion::V5, HostConfig::HONEST);
    {
        let irql = PassiveLevel::check().unwrap();
        let mut channel = rig.create_channel(&EchoConfig::DEFAULT).unwrap();
        let session = Session::open(&mut channel, &irql).unwrap();
        // Every pool packet is handed out by this scope; requests meanwhile use KMCL's own.
        // (KMCL hands the version request's packet back just after its completion routine,
        // which already let `open` return: wait for it.)
        let pool = session.channel().pool();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while pool.in_use() > 0 {
            assert!(std::time::Instant::now() < deadline);
            std::thread::yield_now();
        }
        let held = hold_all(pool, pool.capacity(), &session);
        assert_eq!(held, Some(()));
        let c = session.client().counters();
        assert!(c.sends_allocated >= 1, "{c:?}");
        assert_eq!(pool.in_use(), 0);
        session.close().unwrap();
    }
    rig.bus.verifier().assert_clean();
}

/// Takes `n` pool packets (nested scopes, none sent), then pings once with all of them taken.
fn hold_all(
    pool: &vmbus_kmcl::PacketPool<vmbus_echo::client::EchoClient<vmbus_echo_sim::StdPlatform>>,
    n: usize,
    session: &Session<'_, vmbus_echo_sim::StdPlatform>,
) -> Option<()> {
    if n == 0 {
        let mut scratch = vec![0_u8; protocol::MAX_MESSAGE];
        return session.ping(32, &mut scratch).ok().map(|_| ());
    }
    pool.with_packet(|_packet| hold_all(pool, n - 1, session))
        .ok()
        .flatten()
}
