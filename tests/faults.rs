//! Fault injection at every KMCL call of the channel lifecycle and of the send/receive paths:
//! each injected failure comes back as that status from the safe API, and nothing leaks (the
//! emulator's verifier is clean after teardown), on a V1 and a V5 interface.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use std::collections::BTreeSet;
use std::pin::pin;
use std::sync::atomic::Ordering;
use std::time::Duration;

use common::{Incoming, Recorder, Rig, rig, wait_until};
use vmbus_kmcl::{Channel, ChannelConfig, GpadlFlags, NtStatus, PacketPool, PoolWord, SendFlags};
use vmbus_kmcl_sim::{InterfaceVersion as SimVersion, Slot, SlotReturn};

const INJECTED: NtStatus = NtStatus::INSUFFICIENT_RESOURCES;

/// The whole client path through the safe API; the first failure is returned.
fn scenario(rig: &Rig) -> vmbus_kmcl::Result<()> {
    let config = ChannelConfig::new()
        .ring_buffer_pages(8, 8)
        .maximum_packet_size(4096)
        .maximum_external_data(64 * 1024, 2)
        .client_context_size(8);
    let channel = pin!(Channel::new(
        &rig.interface,
        rig.parent,
        &config,
        Recorder::new(Incoming::CompleteReversed)
    )?);
    channel.as_ref().enable()?;
    let h = channel.handler();

    channel.send(b"ping", SendFlags::WAIT_FOR_COMPLETION, 1)?;
    if !wait_until(|| h.completed.load(Ordering::SeqCst) == 1) {
        return Err(NtStatus::UNSUCCESSFUL);
    }
    let mut response = [0_u8; 8];
    channel.send_synchronous(
        b"sync",
        SendFlags::WAIT_FOR_COMPLETION,
        &mut response,
        Some(Duration::from_secs(5)),
    )?;
    let mut buffer = vec![0_u8; 8192];
    drop(channel.create_gpadl(&mut buffer, GpadlFlags::empty())?);
    channel.set_interrupt_latency(10)?;

    let mut storage = vec![PoolWord::ZERO; PacketPool::words_needed(&channel, 1)?];
    let pool = channel.packet_pool(&mut storage)?;
    pool.allocate()?
        .send(b"pooled", SendFlags::WAIT_FOR_COMPLETION, 2)?;
    if !wait_until(|| h.completed.load(Ordering::SeqCst) == 2) {
        return Err(NtStatus::UNSUCCESSFUL);
    }
    let before = rig.echo.stats().unsolicited_completed;
    rig.echo.send_unsolicited(b"host says hi");
    if !wait_until(|| rig.echo.stats().unsolicited_completed == before + 1) {
        return Err(NtStatus::UNSUCCESSFUL);
    }
    Ok(())
}

fn sweep(version: SimVersion, expected_on_path: &[Slot]) {
    // Unfaulted, the scenario passes.
    {
        let rig = rig(version);
        scenario(&rig).unwrap();
        drop(rig.interface);
        rig.bus.assert_clean();
    }
    let mut failed = BTreeSet::new();
    for slot in Slot::ALL {
        if slot.returns() == SlotReturn::Other || slot.min_version() > version {
            continue;
        }
        let rig = rig(version);
        assert!(rig.bus.faults().fail_nth(slot, 1, INJECTED.raw()));
        let result = scenario(&rig);
        if let Err(status) = result {
            assert_eq!(
                status,
                INJECTED,
                "{version:?} {}: the injected status comes back",
                slot.name()
            );
            failed.insert(slot);
        }
        drop(rig.interface);
        let report = rig.bus.verifier();
        assert!(report.is_clean(), "{version:?} {}: {report}", slot.name());
    }
    for slot in expected_on_path {
        assert!(
            failed.contains(slot),
            "{version:?}: a fault in {} must surface",
            slot.name()
        );
    }
}

#[test]
fn every_call_on_the_path_can_fail_cleanly_v1() {
    sweep(
        SimVersion::V1,
        &[
            Slot::VmbChannelAllocate,
            Slot::VmbClientChannelInitSetRingBufferPageCount,
            Slot::VmbChannelInitSetMaximumPacketSize,
            Slot::VmbChannelInitSetMaximumExternalData,
            Slot::VmbChannelInitSetClientContextSize,
            Slot::VmbChannelInitSetStateChangeCallbacks,
            Slot::VmbChannelInitSetProcessPacketCallbacks,
            Slot::VmbChannelEnable,
            Slot::VmbPacketAllocate,
            Slot::VmbPacketSend,
            Slot::VmbChannelSendSynchronousRequest,
            Slot::VmbChannelCreateGpadlFromBuffer,
            Slot::VmbChannelSetInterruptLatency,
            Slot::VmbPacketInitialize,
        ],
    );
}

#[test]
fn every_call_on_the_path_can_fail_cleanly_v5() {
    sweep(
        SimVersion::V5,
        &[
            Slot::VmbChannelAllocate,
            Slot::VmbClientChannelInitSetRingBufferPageCount,
            Slot::VmbChannelInitSetMaximumPacketSize,
            Slot::VmbChannelInitSetMaximumExternalData,
            Slot::VmbChannelInitSetClientContextSize,
            Slot::VmbChannelInitSetInlinePacketContextSize,
            Slot::VmbChannelInitSetStateChangeCallbacks,
            Slot::VmbChannelInitSetProcessPacketCallbacksEx,
            Slot::VmbChannelEnable,
            Slot::VmbPacketAllocate,
            Slot::VmbPacketSend,
            Slot::VmbChannelSendSynchronousRequest,
            Slot::VmbChannelCreateGpadlFromBuffer,
            Slot::VmbChannelSetInterruptLatency,
            Slot::VmbPacketInitialize,
        ],
    );
}
