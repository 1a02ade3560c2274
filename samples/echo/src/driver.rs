//! The KMDF glue (Windows with a WDK, `cfg(echo_driver)`): `DriverEntry`, `EvtDeviceAdd`, the
//! PnP/power callbacks, the IOCTL queue and the acknowledgement work item. It owns the WDF
//! objects and the device context and calls into [`crate::client`] for everything VMBus:
//!
//! | WDF event | what happens |
//! |---|---|
//! | `DriverEntry` | `WdfDriverCreate` with `EvtDeviceAdd` |
//! | `EvtDeviceAdd` | PnP/power callbacks, the device with its context (a `KEVENT`, the ack work item, the channel slot and the work item's channel reference, a message buffer), the device interface, a sequential passive-level queue for IOCTLs |
//! | `EvtDevicePrepareHardware` | `KmclInterface::query_fdo`, `client::create_channel` (channel, packet pool, bulk buffer), a `ChannelRef` for the work item, `Session::open` (enable + version negotiation + the bulk GPADL) |
//! | `EvtDeviceD0Entry` | `Session::resume` if `D0Exit` paused the channel |
//! | `EvtDeviceD0Exit` | `Session::pause` (the suspend callback acknowledges pended packets) |
//! | `EvtDeviceReleaseHardware` | `Session::close` (goodbye, last acknowledgements, GPADL delete, disable), then the channel is dropped (teardown, `VmbChannelCleanup`), the work item flushed and its reference dropped |
//! | `EvtIoDeviceControl` | `IOCTL_VMBUS_ECHO_PING` → `ioctl::run_ping` |
//! | ack work item | `EchoClient::complete_acks`: completes the host packets the receive path pended |
//! | context cleanup | the context is dropped in place |
//!
//! Every PASSIVE_LEVEL callback gets its [`PassiveLevel`] token from [`PassiveLevel::check`]
//! (it fails the callback with `STATUS_INVALID_DEVICE_STATE` rather than assume).

use core::ptr::{self, NonNull};

use vmbus_kmcl::{ChannelRef, KmclInterface, NtStatus, ParentDevice, PassiveLevel};
use wdk_sys::ntddk::{
    KeClearEvent, KeInitializeEvent, KeQueryPerformanceCounter, KeSetEvent, KeWaitForSingleObject,
};
use wdk_sys::{
    _EVENT_TYPE, _KWAIT_REASON, _MODE, _WDF_EXECUTION_LEVEL, _WDF_IO_QUEUE_DISPATCH_TYPE,
    _WDF_SYNCHRONIZATION_SCOPE, _WDF_TRI_STATE, KEVENT, KPROCESSOR_MODE, LARGE_INTEGER, NTSTATUS,
    PCUNICODE_STRING, PCWDF_OBJECT_CONTEXT_TYPE_INFO, PDRIVER_OBJECT, PVOID, PWDFDEVICE_INIT,
    ULONG, ULONG_PTR, WDF_DRIVER_CONFIG, WDF_IO_QUEUE_CONFIG, WDF_NO_HANDLE,
    WDF_NO_OBJECT_ATTRIBUTES, WDF_OBJECT_ATTRIBUTES, WDF_OBJECT_CONTEXT_TYPE_INFO,
    WDF_PNPPOWER_EVENT_CALLBACKS, WDF_POWER_DEVICE_STATE, WDF_WORKITEM_CONFIG, WDFCMRESLIST,
    WDFDEVICE, WDFDRIVER, WDFOBJECT, WDFQUEUE, WDFREQUEST, WDFWORKITEM,
    call_unsafe_wdf_function_binding,
};

use crate::client::{self, EchoChannel, EchoClient, EchoConfig, EchoError, Platform, Session};
use crate::ioctl::{self, PingInput, PingOutput};
use crate::protocol;

#[cfg(not(test))]
#[global_allocator]
static GLOBAL_ALLOCATOR: wdk_alloc::WdkAllocator = wdk_alloc::WdkAllocator;

/// The per-device state, in the WDF device's context memory.
///
/// Who touches which field (the fields are reached through the context pointer one at a time,
/// never through a reference to the whole context, so the users below never alias):
/// - `echo`, `paused`: the PnP/power callbacks (serialized by WDF) and the IOCTL callback,
///   which never overlaps them (the queue is power-managed and has no `EvtIoStop`, so WDF
///   waits for a running request before D0Exit, and ReleaseHardware comes after D0Exit);
/// - `scratch`: the IOCTL callback (a sequential queue: one at a time);
/// - `acks`: the ack work item reads it; PrepareHardware writes it before the channel is
///   enabled (nothing can enqueue the work item yet) and ReleaseHardware clears it after the
///   channel is torn down and the work item flushed;
/// - `event`, `ack_work_item`: written once in `EvtDeviceAdd`, then used through the
///   [`KernelPlatform`].
struct DeviceContext {
    /// The client's wait/notify event (a notification event).
    event: KEVENT,
    /// The work item that acknowledges pended host packets (`EchoClient::complete_acks`).
    ack_work_item: WDFWORKITEM,
    /// The echo channel (with its packet pool and bulk buffer), between PrepareHardware and
    /// ReleaseHardware.
    echo: Option<EchoChannel<KernelPlatform>>,
    /// The work item's counted reference to the channel (beside it, not a borrow of it).
    acks: Option<ChannelRef<EchoClient<KernelPlatform>>>,
    /// D0Exit paused the channel.
    paused: bool,
    /// The message buffer of the IOCTL path (used only by the sequential IOCTL queue).
    scratch: [u8; protocol::MAX_MESSAGE],
}

/// The `WDF_OBJECT_CONTEXT_TYPE_INFO` of [`DeviceContext`], as `WDF_DECLARE_CONTEXT_TYPE` makes
/// it: in `.data`, its `UniqueType` pointing at itself.
#[repr(transparent)]
struct ContextTypeInfo(WDF_OBJECT_CONTEXT_TYPE_INFO);

// SAFETY: the value is never mutated by this driver; its pointers refer to static data.
unsafe impl Sync for ContextTypeInfo {}

#[unsafe(link_section = ".data")]
static DEVICE_CONTEXT_TYPE: ContextTypeInfo = ContextTypeInfo(WDF_OBJECT_CONTEXT_TYPE_INFO {
    Size: size_of::<WDF_OBJECT_CONTEXT_TYPE_INFO>() as ULONG,
    ContextName: c"VMBUS_ECHO_DEVICE_CONTEXT".as_ptr().cast_mut(),
    ContextSize: size_of::<DeviceContext>(),
    UniqueType: ptr::addr_of!(DEVICE_CONTEXT_TYPE).cast::<WDF_OBJECT_CONTEXT_TYPE_INFO>(),
    EvtDriverGetUniqueContextType: None,
});

/// `WDF_GET_CONTEXT_TYPE_INFO(DeviceContext)`.
fn device_context_type() -> PCWDF_OBJECT_CONTEXT_TYPE_INFO {
    DEVICE_CONTEXT_TYPE.0.UniqueType
}

/// `WDF_OBJECT_ATTRIBUTES_INIT`.
fn object_attributes() -> WDF_OBJECT_ATTRIBUTES {
    WDF_OBJECT_ATTRIBUTES {
        Size: size_of::<WDF_OBJECT_ATTRIBUTES>() as ULONG,
        ExecutionLevel: _WDF_EXECUTION_LEVEL::WdfExecutionLevelInheritFromParent,
        SynchronizationScope: _WDF_SYNCHRONIZATION_SCOPE::WdfSynchronizationScopeInheritFromParent,
        ..WDF_OBJECT_ATTRIBUTES::default()
    }
}

/// The device context of `device`.
///
/// # Safety
/// `device` is a live WDF device created by [`evt_device_add`].
unsafe fn context(device: WDFDEVICE) -> Option<NonNull<DeviceContext>> {
    // SAFETY: a live WDF object and the context type it was created with; WDF returns its
    // context memory (or null for a wrong type).
    let raw: PVOID = unsafe {
        call_unsafe_wdf_function_binding!(
            WdfObjectGetTypedContextWorker,
            device.cast(),
            device_context_type(),
        )
    };
    NonNull::new(raw.cast::<DeviceContext>())
}

/// The echo channel of a device context, if there is one.
///
/// # Safety
/// `context` is an initialized device context, and the caller is a PnP/power callback or the
/// IOCTL callback (see [`DeviceContext`]): nothing else uses `echo` while the returned
/// reference lives.
unsafe fn echo_of<'a>(
    context: NonNull<DeviceContext>,
) -> Option<&'a mut EchoChannel<KernelPlatform>> {
    // SAFETY: per this function's contract, an exclusive reference to the `echo` field only.
    unsafe { &mut (*context.as_ptr()).echo }.as_mut()
}

/// Drops the channel (teardown: disable if still enabled, delete the bulk GPADL if still
/// there, `VmbChannelCleanup`, free the pool storage), then flushes the ack work item and drops
/// its channel reference (the last one frees the channel's memory).
///
/// # Safety
/// `context` is an initialized device context; called from a PnP callback at PASSIVE_LEVEL.
unsafe fn release_channel(context: NonNull<DeviceContext>) {
    // SAFETY: PnP callbacks are serialized and no IOCTL runs (see `DeviceContext`); the value is
    // dropped in place (at PASSIVE_LEVEL, so the drop tears the channel down). After this no
    // callback runs and nothing enqueues the work item.
    unsafe { (*context.as_ptr()).echo = None };
    // SAFETY: written once in `EvtDeviceAdd`; a plain handle read.
    let work_item = unsafe { (*context.as_ptr()).ack_work_item };
    // SAFETY: the device's work item; PASSIVE_LEVEL; returns once a queued or running callback
    // has finished.
    unsafe { call_unsafe_wdf_function_binding!(WdfWorkItemFlush, work_item) };
    // SAFETY: the work item is idle and cannot be enqueued again (the channel is gone), so
    // nothing reads `acks`; dropped in place.
    unsafe { (*context.as_ptr()).acks = None };
}

/// The [`Platform`] of the driver: `KeQueryPerformanceCounter`, a notification `KEVENT` in the
/// device context, and the ack work item (`WdfWorkItemEnqueue`).
struct KernelPlatform {
    event: NonNull<KEVENT>,
    /// The device's ack work item.
    work_item: WDFWORKITEM,
    /// Performance-counter ticks per second.
    frequency: u64,
}

// SAFETY: the event is a kernel dispatcher object, usable from any thread at the IRQLs the
// Ke* routines document; the work item is a WDF handle, usable from any thread. Both live as
// long as the device, which outlives the channel (and so the client holding this platform,
// whose last reference is dropped by ReleaseHardware or the context cleanup).
unsafe impl Send for KernelPlatform {}
// SAFETY: as for Send; every method is a Ke* or WdfWorkItemEnqueue call that is safe to make
// concurrently.
unsafe impl Sync for KernelPlatform {}

impl KernelPlatform {
    fn new(event: NonNull<KEVENT>, work_item: WDFWORKITEM) -> Self {
        let mut frequency = LARGE_INTEGER::default();
        // SAFETY: any IRQL; writes the counter frequency to a valid out pointer.
        let _ = unsafe { KeQueryPerformanceCounter(&mut frequency) };
        // SAFETY: `QuadPart` spans the whole union, which the call above wrote.
        let ticks = unsafe { frequency.QuadPart };
        Self {
            event,
            work_item,
            frequency: u64::try_from(ticks).unwrap_or(1).max(1),
        }
    }
}

impl Platform for KernelPlatform {
    fn now_ns(&self) -> u64 {
        // SAFETY: any IRQL; a null frequency pointer is allowed.
        let counter = unsafe { KeQueryPerformanceCounter(ptr::null_mut()) };
        // SAFETY: `QuadPart` spans the whole union returned.
        let ticks = u64::try_from(unsafe { counter.QuadPart }).unwrap_or(0);
        let nanoseconds = u128::from(ticks) * 1_000_000_000 / u128::from(self.frequency);
        u64::try_from(nanoseconds).unwrap_or(u64::MAX)
    }

    fn prepare_wait(&self) {
        // SAFETY: an initialized event; IRQL ≤ DISPATCH_LEVEL.
        unsafe { KeClearEvent(self.event.as_ptr()) };
    }

    fn notify(&self) {
        // SAFETY: an initialized event; IRQL ≤ DISPATCH_LEVEL with Wait = FALSE.
        let _ = unsafe { KeSetEvent(self.event.as_ptr(), 0, 0) };
    }

    fn wait(&self, timeout_ns: u64) {
        // A relative timeout in 100 ns units (negative), at least one unit.
        let units = i64::try_from(timeout_ns / 100).unwrap_or(i64::MAX).max(1);
        let mut timeout = LARGE_INTEGER { QuadPart: -units };
        // SAFETY: PASSIVE_LEVEL (the client waits only there); a valid dispatcher object and
        // timeout; kernel-mode, non-alertable wait.
        let _ = unsafe {
            KeWaitForSingleObject(
                self.event.as_ptr().cast(),
                _KWAIT_REASON::Executive,
                _MODE::KernelMode as KPROCESSOR_MODE,
                0,
                &mut timeout,
            )
        };
    }

    fn acks_queued(&self) {
        // SAFETY: the device's work item, alive as long as the device; `WdfWorkItemEnqueue` may
        // be called at IRQL ≤ DISPATCH_LEVEL (the receive path's DPC) and does nothing when the
        // item is already queued; an item whose callback is running is queued again, so no
        // acknowledgement is left behind.
        unsafe { call_unsafe_wdf_function_binding!(WdfWorkItemEnqueue, self.work_item) };
    }
}

/// The ack work item (`EVT_WDF_WORKITEM`, PASSIVE_LEVEL): completes the host packets the receive
/// path pended, with their acknowledgements, through the context's channel reference.
unsafe extern "C" fn evt_ack_work_item(work_item: WDFWORKITEM) {
    // SAFETY: WDF passes the work item created in `device_add`, whose parent is the device.
    let parent =
        unsafe { call_unsafe_wdf_function_binding!(WdfWorkItemGetParentObject, work_item) };
    // SAFETY: that parent is the device created in `device_add`.
    let Some(context) = (unsafe { context(parent.cast()) }) else {
        return;
    };
    // SAFETY: a shared reference to the `acks` field only, which nobody writes while the work
    // item can run (see `DeviceContext`).
    if let Some(channel) = unsafe { &(*context.as_ptr()).acks } {
        channel.handler().complete_acks();
    }
}

/// `DriverEntry`: creates the WDF driver object with [`evt_device_add`].
///
/// # Safety
/// Called by the I/O manager (through KMDF's `FxDriverEntry`) with its driver object and
/// registry path.
#[unsafe(export_name = "DriverEntry")]
pub unsafe extern "system" fn driver_entry(
    driver: PDRIVER_OBJECT,
    registry_path: PCUNICODE_STRING,
) -> NTSTATUS {
    let mut config = WDF_DRIVER_CONFIG {
        Size: size_of::<WDF_DRIVER_CONFIG>() as ULONG,
        EvtDriverDeviceAdd: Some(evt_device_add),
        ..WDF_DRIVER_CONFIG::default()
    };
    // SAFETY: the driver object and registry path DriverEntry received; no attributes; a valid
    // config; no driver handle wanted.
    unsafe {
        call_unsafe_wdf_function_binding!(
            WdfDriverCreate,
            driver,
            registry_path,
            WDF_NO_OBJECT_ATTRIBUTES,
            &mut config,
            WDF_NO_HANDLE.cast::<WDFDRIVER>(),
        )
    }
}

/// `EvtDriverDeviceAdd`: the device, its context, its interface and its IOCTL queue.
unsafe extern "C" fn evt_device_add(_driver: WDFDRIVER, device_init: PWDFDEVICE_INIT) -> NTSTATUS {
    match device_add(device_init) {
        Ok(()) => NtStatus::SUCCESS.raw(),
        Err(status) => {
            wdk::println!("vmbus-echo: EvtDeviceAdd failed: {status}");
            status.raw()
        }
    }
}

fn device_add(mut device_init: PWDFDEVICE_INIT) -> Result<(), NtStatus> {
    let mut callbacks = WDF_PNPPOWER_EVENT_CALLBACKS {
        Size: size_of::<WDF_PNPPOWER_EVENT_CALLBACKS>() as ULONG,
        EvtDevicePrepareHardware: Some(evt_prepare_hardware),
        EvtDeviceReleaseHardware: Some(evt_release_hardware),
        EvtDeviceD0Entry: Some(evt_d0_entry),
        EvtDeviceD0Exit: Some(evt_d0_exit),
        ..WDF_PNPPOWER_EVENT_CALLBACKS::default()
    };
    // SAFETY: the WDFDEVICE_INIT of this EvtDeviceAdd, before WdfDeviceCreate.
    unsafe {
        call_unsafe_wdf_function_binding!(
            WdfDeviceInitSetPnpPowerEventCallbacks,
            device_init,
            &mut callbacks,
        );
    }
    let mut attributes = WDF_OBJECT_ATTRIBUTES {
        ContextTypeInfo: device_context_type(),
        EvtCleanupCallback: Some(evt_device_context_cleanup),
        ..object_attributes()
    };
    let mut device: WDFDEVICE = ptr::null_mut();
    // SAFETY: the init structure (consumed on success), attributes with the context type, and
    // a valid out pointer.
    NtStatus(unsafe {
        call_unsafe_wdf_function_binding!(
            WdfDeviceCreate,
            &mut device_init,
            &mut attributes,
            &mut device,
        )
    })
    .ok()?;
    // The ack work item, a child of the device (deleted with it, after waiting for a running
    // callback). No automatic serialization: the acknowledgement queue is lock-free.
    let mut work_config = WDF_WORKITEM_CONFIG {
        Size: size_of::<WDF_WORKITEM_CONFIG>() as ULONG,
        EvtWorkItemFunc: Some(evt_ack_work_item),
        AutomaticSerialization: 0,
    };
    let mut work_attributes = WDF_OBJECT_ATTRIBUTES {
        ParentObject: device.cast(),
        ..object_attributes()
    };
    let mut work_item: WDFWORKITEM = ptr::null_mut();
    // SAFETY: a valid config and attributes (the parent is the live device), a valid out
    // pointer; PASSIVE_LEVEL.
    NtStatus(unsafe {
        call_unsafe_wdf_function_binding!(
            WdfWorkItemCreate,
            &mut work_config,
            &mut work_attributes,
            &mut work_item,
        )
    })
    .ok()?;
    // SAFETY: the device just created with the context type.
    let context = unsafe { context(device) }.ok_or(NtStatus::INSUFFICIENT_RESOURCES)?;
    let slot = context.cast::<core::mem::MaybeUninit<DeviceContext>>();
    // SAFETY: WDF's zeroed context memory of `size_of::<DeviceContext>()` bytes, suitably
    // aligned, not yet in use by anyone else (the work item is not enqueued before a channel
    // exists).
    let initialized = unsafe { &mut *slot.as_ptr() }.write(DeviceContext {
        event: KEVENT::default(),
        ack_work_item: work_item,
        echo: None,
        acks: None,
        paused: false,
        scratch: [0; protocol::MAX_MESSAGE],
    });
    // SAFETY: the event in the context, which never moves; PASSIVE_LEVEL.
    unsafe {
        KeInitializeEvent(&mut initialized.event, _EVENT_TYPE::NotificationEvent, 0);
    }
    // SAFETY: a live device and a static GUID; no reference string.
    NtStatus(unsafe {
        call_unsafe_wdf_function_binding!(
            WdfDeviceCreateDeviceInterface,
            device,
            &ioctl::DEVICE_INTERFACE,
            ptr::null(),
        )
    })
    .ok()?;
    let mut queue_config = WDF_IO_QUEUE_CONFIG {
        Size: size_of::<WDF_IO_QUEUE_CONFIG>() as ULONG,
        PowerManaged: _WDF_TRI_STATE::WdfUseDefault,
        DefaultQueue: 1,
        DispatchType: _WDF_IO_QUEUE_DISPATCH_TYPE::WdfIoQueueDispatchSequential,
        EvtIoDeviceControl: Some(evt_io_device_control),
        ..WDF_IO_QUEUE_CONFIG::default()
    };
    // IOCTLs wait for the host, so they run at PASSIVE_LEVEL.
    let mut queue_attributes = WDF_OBJECT_ATTRIBUTES {
        ExecutionLevel: _WDF_EXECUTION_LEVEL::WdfExecutionLevelPassive,
        ..object_attributes()
    };
    let mut queue: WDFQUEUE = ptr::null_mut();
    // SAFETY: a live device, a valid config and attributes, a valid out pointer.
    NtStatus(unsafe {
        call_unsafe_wdf_function_binding!(
            WdfIoQueueCreate,
            device,
            &mut queue_config,
            &mut queue_attributes,
            &mut queue,
        )
    })
    .ok()
}

/// The context's `EvtCleanupCallback`: drops the context in place (the channel, if still
/// there, is torn down by its `Drop`; WDF has deleted the child work item before, so no
/// callback uses `acks` any more).
unsafe extern "C" fn evt_device_context_cleanup(object: WDFOBJECT) {
    // SAFETY: WDF calls this for the device created in `device_add`, whose context was
    // initialized there.
    if let Some(context) = unsafe { context(object.cast()) } {
        // SAFETY: the last use of the context; WDF frees the memory after this returns.
        unsafe { ptr::drop_in_place(context.as_ptr()) };
    }
}

/// `EvtDevicePrepareHardware`: query the KMCL interface, create the channel, open the session.
unsafe extern "C" fn evt_prepare_hardware(
    device: WDFDEVICE,
    _resources: WDFCMRESLIST,
    _resources_translated: WDFCMRESLIST,
) -> NTSTATUS {
    // SAFETY: WDF passes the device created in `device_add`.
    match unsafe { prepare_hardware(device) } {
        Ok(()) => NtStatus::SUCCESS.raw(),
        Err(error) => {
            wdk::println!("vmbus-echo: PrepareHardware failed: {error}");
            error.status().raw()
        }
    }
}

/// # Safety
/// `device` is the device created in `device_add`; called from PrepareHardware.
unsafe fn prepare_hardware(device: WDFDEVICE) -> Result<(), EchoError> {
    let irql = PassiveLevel::check().ok_or(EchoError::NotOpen)?;
    // SAFETY: per this function's contract.
    let context = unsafe { context(device) }.ok_or(EchoError::NotOpen)?;
    // SAFETY: a function driver's device, at PASSIVE_LEVEL.
    let interface = unsafe { KmclInterface::query_fdo(device) }?;
    // SAFETY: the device outlives its channel (ReleaseHardware and the context cleanup drop it
    // first).
    let parent = unsafe { ParentDevice::from_wdf_device(device) };
    // SAFETY: the event's address in the initialized context (no reference is created).
    let event = unsafe { &raw mut (*context.as_ptr()).event };
    // SAFETY: written once in `EvtDeviceAdd`; a plain handle read.
    let work_item = unsafe { (*context.as_ptr()).ack_work_item };
    let platform = KernelPlatform::new(NonNull::new(event).ok_or(EchoError::NotOpen)?, work_item);
    let echo = client::create_channel(&irql, &interface, parent, &EchoConfig::DEFAULT, platform)?;
    // The channel holds its own interface reference.
    drop(interface);
    let acks = echo.new_ref();
    // SAFETY: PnP callbacks are serialized and the work item cannot run yet (nothing enqueues
    // it before the channel is enabled), so nothing else uses `acks`; the old value (None) is
    // dropped in place.
    unsafe { (*context.as_ptr()).acks = Some(acks) };
    // SAFETY: as above for `echo` (no IOCTL runs before PrepareHardware succeeds).
    unsafe { (*context.as_ptr()).echo = Some(echo) };
    // SAFETY: a PnP callback (see `echo_of`).
    let echo = unsafe { echo_of(context) }.ok_or(EchoError::NotOpen)?;
    match Session::open(echo, &irql) {
        Ok(session) => {
            wdk::println!(
                "vmbus-echo: channel open, protocol version {}, bulk GPADL {:?}",
                session.version().unwrap_or(0),
                session.channel().bulk_gpadl(),
            );
            Ok(())
        }
        Err(error) => {
            // SAFETY: a PnP callback; the channel is disabled (open failed).
            unsafe { release_channel(context) };
            Err(error)
        }
    }
}

/// `EvtDeviceReleaseHardware`: close the session and drop the channel.
unsafe extern "C" fn evt_release_hardware(
    device: WDFDEVICE,
    _resources_translated: WDFCMRESLIST,
) -> NTSTATUS {
    // SAFETY: WDF passes the device created in `device_add`.
    let Some(context) = (unsafe { context(device) }) else {
        return NtStatus::SUCCESS.raw();
    };
    let Some(irql) = PassiveLevel::check() else {
        return NtStatus::INVALID_DEVICE_STATE.raw();
    };
    // SAFETY: a PnP callback (see `echo_of`).
    if let Some(echo) = unsafe { echo_of(context) }
        && let Ok(session) = Session::attach(echo, &irql)
        && let Err(error) = session.close()
    {
        wdk::println!("vmbus-echo: goodbye failed: {error}");
    }
    // SAFETY: a PnP callback at PASSIVE_LEVEL; the session (if any) is closed.
    unsafe { release_channel(context) };
    NtStatus::SUCCESS.raw()
}

/// `EvtDeviceD0Entry`: resume packet delivery if D0Exit paused it.
unsafe extern "C" fn evt_d0_entry(
    device: WDFDEVICE,
    _previous_state: WDF_POWER_DEVICE_STATE,
) -> NTSTATUS {
    // SAFETY: WDF passes the device created in `device_add`.
    let Some(context) = (unsafe { context(device) }) else {
        return NtStatus::SUCCESS.raw();
    };
    let Some(irql) = PassiveLevel::check() else {
        return NtStatus::INVALID_DEVICE_STATE.raw();
    };
    // SAFETY: power callbacks are serialized with PnP callbacks; `paused` is only used here and
    // in D0Exit.
    let paused = unsafe { &mut (*context.as_ptr()).paused };
    if !*paused {
        return NtStatus::SUCCESS.raw();
    }
    *paused = false;
    // SAFETY: a power callback (see `echo_of`).
    let resumed = unsafe { echo_of(context) }
        .ok_or(EchoError::NotOpen)
        .and_then(|echo| Session::attach(echo, &irql))
        .and_then(|mut session| session.resume());
    match resumed {
        Ok(()) => NtStatus::SUCCESS.raw(),
        Err(error) => error.status().raw(),
    }
}

/// `EvtDeviceD0Exit`: pause packet delivery while the device is out of D0.
unsafe extern "C" fn evt_d0_exit(
    device: WDFDEVICE,
    _target_state: WDF_POWER_DEVICE_STATE,
) -> NTSTATUS {
    // SAFETY: WDF passes the device created in `device_add`.
    let Some(context) = (unsafe { context(device) }) else {
        return NtStatus::SUCCESS.raw();
    };
    // D0Exit must not fail: without a token (which cannot happen here) nothing is paused.
    let Some(irql) = PassiveLevel::check() else {
        return NtStatus::SUCCESS.raw();
    };
    // SAFETY: a power callback (see `echo_of`).
    let session = unsafe { echo_of(context) }.and_then(|echo| Session::attach(echo, &irql).ok());
    if let Some(mut session) = session
        && session.pause().is_ok()
    {
        // SAFETY: as in D0Entry.
        unsafe { (*context.as_ptr()).paused = true };
    }
    NtStatus::SUCCESS.raw()
}

/// `EvtIoDeviceControl` of the sequential, passive-level default queue.
unsafe extern "C" fn evt_io_device_control(
    queue: WDFQUEUE,
    request: WDFREQUEST,
    _output_buffer_length: usize,
    _input_buffer_length: usize,
    io_control_code: ULONG,
) {
    let result = if io_control_code == ioctl::IOCTL_VMBUS_ECHO_PING {
        // SAFETY: WDF passes its queue and a request of it.
        unsafe { ping_ioctl(queue, request) }
    } else {
        Err(NtStatus(0xC000_0010_u32 as i32)) // STATUS_INVALID_DEVICE_REQUEST
    };
    let (status, information) = match result {
        Ok(written) => (NtStatus::SUCCESS, written),
        Err(status) => (status, 0),
    };
    // SAFETY: completes the request this callback owns, exactly once.
    unsafe {
        call_unsafe_wdf_function_binding!(
            WdfRequestCompleteWithInformation,
            request,
            status.raw(),
            information as ULONG_PTR,
        );
    }
}

/// `IOCTL_VMBUS_ECHO_PING`: returns the output bytes written.
///
/// # Safety
/// `queue` is the device's default queue and `request` a request it presented.
unsafe fn ping_ioctl(queue: WDFQUEUE, request: WDFREQUEST) -> Result<usize, NtStatus> {
    // SAFETY: a live queue of a device created in `device_add`.
    let device = unsafe { call_unsafe_wdf_function_binding!(WdfIoQueueGetDevice, queue) };
    // SAFETY: that device.
    let context = unsafe { context(device) }.ok_or(NtStatus::INVALID_DEVICE_STATE)?;

    // METHOD_BUFFERED: input and output share one system buffer, so the input is copied out
    // before the output is written.
    let input: PingInput = {
        let mut buffer: PVOID = ptr::null_mut();
        let mut length = 0_usize;
        // SAFETY: a request of this queue and valid out pointers.
        NtStatus(unsafe {
            call_unsafe_wdf_function_binding!(
                WdfRequestRetrieveInputBuffer,
                request,
                size_of::<PingInput>(),
                &mut buffer,
                &mut length,
            )
        })
        .ok()?;
        // SAFETY: WDF's system buffer of `length` bytes, alive until the request completes; no
        // other reference to it exists in this block.
        let bytes = unsafe { core::slice::from_raw_parts(buffer.cast::<u8>(), length) };
        ioctl::parse_ping_input(bytes).map_err(EchoError::status)?
    };

    let irql = PassiveLevel::check().ok_or(NtStatus::INVALID_DEVICE_STATE)?;
    // SAFETY: the IOCTL callback, which no PnP/power callback overlaps (see `DeviceContext`).
    let echo = unsafe { echo_of(context) }.ok_or(NtStatus::INVALID_DEVICE_STATE)?;
    let session = Session::attach(echo, &irql).map_err(EchoError::status)?;
    // SAFETY: the queue is sequential, so this is the only user of the scratch buffer (a
    // different field from `echo`).
    let scratch = unsafe { &mut (*context.as_ptr()).scratch };
    let output = ioctl::run_ping(&session, &input, scratch).map_err(EchoError::status)?;

    let mut buffer: PVOID = ptr::null_mut();
    let mut length = 0_usize;
    // SAFETY: a request of this queue and valid out pointers.
    NtStatus(unsafe {
        call_unsafe_wdf_function_binding!(
            WdfRequestRetrieveOutputBuffer,
            request,
            size_of::<PingOutput>(),
            &mut buffer,
            &mut length,
        )
    })
    .ok()?;
    // SAFETY: WDF's system buffer of `length` bytes; the input view above has ended.
    let bytes = unsafe { core::slice::from_raw_parts_mut(buffer.cast::<u8>(), length) };
    ioctl::write_ping_output(&output, bytes).map_err(EchoError::status)
}
