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
use std::sync::atomic::Ordering;
use std::time::Duration;

use common::{Incoming, Recorder, Rig, passive, rig, wait_until};
use vmbus_kmcl::{
    Channel, ChannelConfig, GpadlFlags, NtStatus, PacketPool, Page, PoolWord, SendFlags,
};
use vmbus_kmcl_sim::{InterfaceVersion as SimVersion, Slot, SlotReturn};

const INJECTED: NtStatus = NtStatus::INSUFFICIENT_RESOURCES;

/// The whole client path through the safe API; the first failure is returned. With
/// `kmcl_storage_in_channel` the KMCL channel is initialized in the channel's allocation
/// (`VmbChannelInitialize`, V5) instead of allocated by KMCL.
fn scenario(rig: &Rig, kmcl_storage_in_channel: bool) -> vmbus_kmcl::Result<()> {
    let irql = passive();
    let config = ChannelConfig::new()
        .ring_buffer_pages(8, 8)
        .maximum_packet_size(4096)
        .maximum_external_data(64 * 1024, 2)
        .client_context_size(8)
        .kmcl_storage_in_channel(kmcl_storage_in_channel);
    let mut channel = Channel::new(
        &irql,
        &rig.interface,
        rig.parent,
        &config,
        Recorder::new(Incoming::CompleteReversed),
    )?;
    channel.enable(&irql)?;
    let h = channel.handler();

    channel.send(b"ping", SendFlags::WAIT_FOR_COMPLETION, 1)?;
    if !wait_until(|| h.completed.load(Ordering::SeqCst) == 1) {
        return Err(NtStatus::UNSUCCESSFUL);
    }
    let mut response = [0_u8; 8];
    channel.send_synchronous(
        &irql,
        b"sync",
        SendFlags::WAIT_FOR_COMPLETION,
        &mut response,
        Duration::from_secs(5),
    )?;
    let buffer = vec![Page::ZERO; 2].into_boxed_slice();
    let gpadl = channel
        .create_gpadl(&irql, buffer, GpadlFlags::empty())
        .map_err(|error| error.status)?;
    drop(gpadl.delete(&irql));
    let parked = channel
        .create_gpadl(
            &irql,
            vec![Page::ZERO; 1].into_boxed_slice(),
            GpadlFlags::empty(),
        )
        .map_err(|error| error.status)?;
    drop(parked);
    if channel.reclaim_gpadls(&irql) != 1 {
        return Err(NtStatus::UNSUCCESSFUL);
    }
    channel.set_interrupt_latency(10)?;

    let storage = vec![PoolWord::ZERO; PacketPool::words_needed(&channel, 1)?];
    let pool = channel
        .attach_packet_pool(storage.into_boxed_slice())
        .map_err(|error| error.status)?;
    pool.send(b"pooled", SendFlags::WAIT_FOR_COMPLETION, 2)?;
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

/// Fails each status-returning slot once in a fresh run of the scenario; returns the slots
/// whose fault surfaced.
fn sweep(
    version: SimVersion,
    kmcl_storage_in_channel: bool,
    expected_on_path: &[Slot],
) -> BTreeSet<Slot> {
    // Unfaulted, the scenario passes.
    {
        let rig = rig(version);
        scenario(&rig, kmcl_storage_in_channel).unwrap();
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
        let result = scenario(&rig, kmcl_storage_in_channel);
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
    failed
}

#[test]
fn every_call_on_the_path_can_fail_cleanly_v1() {
    sweep(
        SimVersion::V1,
        false,
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

/// The status-returning slots of the V5 path after the one that creates the KMCL channel.
const V5_PATH_AFTER_CREATE: [Slot; 14] = [
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
];

/// The V5 path: `create` (`VmbChannelAllocate` or `VmbChannelInitialize`), then the rest.
fn with_v5_path(create: Slot) -> Vec<Slot> {
    std::iter::once(create)
        .chain(V5_PATH_AFTER_CREATE)
        .collect()
}

#[test]
fn every_call_on_the_path_can_fail_cleanly_v5() {
    let failed = sweep(
        SimVersion::V5,
        false,
        &with_v5_path(Slot::VmbChannelAllocate),
    );
    assert!(
        !failed.contains(&Slot::VmbChannelInitialize),
        "VmbChannelInitialize only with kmcl_storage_in_channel"
    );
}

#[test]
fn every_call_on_the_path_can_fail_cleanly_v5_kmcl_storage_in_channel() {
    let failed = sweep(
        SimVersion::V5,
        true,
        &with_v5_path(Slot::VmbChannelInitialize),
    );
    assert!(
        !failed.contains(&Slot::VmbChannelAllocate),
        "the KMCL channel is initialized in the channel's allocation, not allocated"
    );
}
