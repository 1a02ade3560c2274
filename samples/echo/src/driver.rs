//! The KMDF glue (Windows with a WDK, `cfg(echo_driver)`): `DriverEntry`, `EvtDeviceAdd`, the
//! PnP/power callbacks and the IOCTL queue. It owns the WDF objects and the device context and
//! calls into [`crate::client`] for everything VMBus:
//!
//! | WDF event | what happens |
//! |---|---|
//! | `DriverEntry` | `WdfDriverCreate` with `EvtDeviceAdd` |
//! | `EvtDeviceAdd` | PnP/power callbacks, the device with its context (a `KEVENT`, the channel slot, a message buffer), the device interface, a sequential passive-level queue for IOCTLs |
//! | `EvtDevicePrepareHardware` | `KmclInterface::query_fdo`, `client::create_channel`, `Session::open` (enable + version negotiation) |
//! | `EvtDeviceD0Entry` | `Session::resume` if `D0Exit` paused the channel |
//! | `EvtDeviceD0Exit` | `Session::pause` |
//! | `EvtDeviceReleaseHardware` | `Session::close` (goodbye + disable), then the channel is dropped (`VmbChannelCleanup`) |
//! | `EvtIoDeviceControl` | `IOCTL_VMBUS_ECHO_PING` → `ioctl::run_ping` |
//! | context cleanup | the context is dropped in place |

use core::pin::Pin;
use core::ptr::{self, NonNull};

use vmbus_kmcl::{KmclInterface, NtStatus, ParentDevice};
use wdk_sys::ntddk::{
    KeClearEvent, KeInitializeEvent, KeQueryPerformanceCounter, KeSetEvent, KeWaitForSingleObject,
};
use wdk_sys::{
    _EVENT_TYPE, _KWAIT_REASON, _MODE, _WDF_EXECUTION_LEVEL, _WDF_IO_QUEUE_DISPATCH_TYPE,
    _WDF_SYNCHRONIZATION_SCOPE, _WDF_TRI_STATE, KEVENT, KPROCESSOR_MODE, LARGE_INTEGER, NTSTATUS,
    PCUNICODE_STRING, PCWDF_OBJECT_CONTEXT_TYPE_INFO, PDRIVER_OBJECT, PVOID, PWDFDEVICE_INIT,
    ULONG, ULONG_PTR, WDF_DRIVER_CONFIG, WDF_IO_QUEUE_CONFIG, WDF_NO_HANDLE,
    WDF_NO_OBJECT_ATTRIBUTES, WDF_OBJECT_ATTRIBUTES, WDF_OBJECT_CONTEXT_TYPE_INFO,
    WDF_PNPPOWER_EVENT_CALLBACKS, WDF_POWER_DEVICE_STATE, WDFCMRESLIST, WDFDEVICE, WDFDRIVER,
    WDFOBJECT, WDFQUEUE, WDFREQUEST, call_unsafe_wdf_function_binding,
};

use crate::client::{self, EchoChannel, EchoConfig, EchoError, Platform, Session};
use crate::ioctl::{self, PingInput, PingOutput};
use crate::protocol;

#[cfg(not(test))]
#[global_allocator]
static GLOBAL_ALLOCATOR: wdk_alloc::WdkAllocator = wdk_alloc::WdkAllocator;

/// The per-device state, in the WDF device's context memory (which never moves, so the channel
/// in it stays pinned from `EvtDevicePrepareHardware` until it is dropped).
struct DeviceContext {
    /// The client's wait/notify event (a notification event).
    event: KEVENT,
    /// The echo channel, between PrepareHardware and ReleaseHardware.
    channel: Option<EchoChannel<KernelPlatform>>,
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

/// The pinned channel of a device context, if open.
///
/// # Safety
/// `context` is an initialized device context; the returned reference is used while no one
/// replaces `channel` (PnP callbacks are serialized by WDF, IOCTLs are stopped before
/// ReleaseHardware).
unsafe fn channel<'a>(
    context: NonNull<DeviceContext>,
) -> Option<Pin<&'a EchoChannel<KernelPlatform>>> {
    // SAFETY: an initialized context (per this function's contract), read shared.
    let channel = unsafe { &(*context.as_ptr()).channel }.as_ref()?;
    // SAFETY: the channel lives in WDF context memory that never moves, and it is only ever
    // dropped in place (`channel = None` or the context cleanup), so it stays pinned.
    Some(unsafe { Pin::new_unchecked(channel) })
}

/// The [`Platform`] of the driver: `KeQueryPerformanceCounter` and a notification `KEVENT` in
/// the device context.
struct KernelPlatform {
    event: NonNull<KEVENT>,
    /// Performance-counter ticks per second.
    frequency: u64,
}

// SAFETY: the event is a kernel dispatcher object, usable from any thread at the IRQLs the
// Ke* routines document; it lives in the device context, which outlives the channel.
unsafe impl Send for KernelPlatform {}
// SAFETY: as for Send; every method is a Ke* call that is safe to make concurrently.
unsafe impl Sync for KernelPlatform {}

impl KernelPlatform {
    fn new(event: NonNull<KEVENT>) -> Self {
        let mut frequency = LARGE_INTEGER::default();
        // SAFETY: any IRQL; writes the counter frequency to a valid out pointer.
        let _ = unsafe { KeQueryPerformanceCounter(&mut frequency) };
        // SAFETY: `QuadPart` spans the whole union, which the call above wrote.
        let ticks = unsafe { frequency.QuadPart };
        Self {
            event,
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
    // SAFETY: the device just created with the context type.
    let context = unsafe { context(device) }.ok_or(NtStatus::INSUFFICIENT_RESOURCES)?;
    let slot = context.cast::<core::mem::MaybeUninit<DeviceContext>>();
    // SAFETY: WDF's zeroed context memory of `size_of::<DeviceContext>()` bytes, suitably
    // aligned, not yet in use by anyone else.
    let initialized = unsafe { &mut *slot.as_ptr() }.write(DeviceContext {
        event: KEVENT::default(),
        channel: None,
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
/// there, is disabled and cleaned up by its `Drop`).
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
    // SAFETY: per this function's contract.
    let context = unsafe { context(device) }.ok_or(EchoError::NotOpen)?;
    // SAFETY: a function driver's device, at PASSIVE_LEVEL.
    let interface = unsafe { KmclInterface::query_fdo(device) }?;
    // SAFETY: the device outlives its channel (ReleaseHardware and the context cleanup drop it
    // first).
    let parent = unsafe { ParentDevice::from_wdf_device(device) };
    // SAFETY: the event's address in the initialized context (no reference is created).
    let event = unsafe { &raw mut (*context.as_ptr()).event };
    let platform = KernelPlatform::new(NonNull::new(event).ok_or(EchoError::NotOpen)?);
    let echo = client::create_channel(&interface, parent, &EchoConfig::DEFAULT, platform)?;
    // The channel holds its own interface reference.
    drop(interface);
    // SAFETY: PnP callbacks are serialized and no channel exists yet, so nothing else reads
    // the slot; the old value (None) is dropped in place.
    unsafe { (*context.as_ptr()).channel = Some(echo) };
    // SAFETY: the channel was just stored and is not replaced while this runs.
    let pinned = unsafe { channel(context) }.ok_or(EchoError::NotOpen)?;
    match Session::open(pinned) {
        Ok(session) => {
            wdk::println!(
                "vmbus-echo: channel open, protocol version {}",
                session.version().unwrap_or(0)
            );
            Ok(())
        }
        Err(error) => {
            // SAFETY: the channel is disabled (open failed), no callback runs; dropped in place.
            unsafe { (*context.as_ptr()).channel = None };
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
    // SAFETY: an initialized context; the channel is not replaced while this runs.
    if let Some(pinned) = unsafe { channel(context) }
        && let Ok(session) = Session::attach(pinned)
        && let Err(error) = session.close()
    {
        wdk::println!("vmbus-echo: goodbye failed: {error}");
    }
    // SAFETY: the channel is disabled (or the drop disables it) and no callback or IOCTL uses
    // it any more; dropped in place (VmbChannelCleanup).
    unsafe { (*context.as_ptr()).channel = None };
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
    // SAFETY: power callbacks are serialized with PnP callbacks; `paused` is only used here and
    // in D0Exit.
    let paused = unsafe { &mut (*context.as_ptr()).paused };
    if !*paused {
        return NtStatus::SUCCESS.raw();
    }
    *paused = false;
    // SAFETY: an initialized context; the channel is not replaced while this runs.
    let resumed = unsafe { channel(context) }
        .ok_or(EchoError::NotOpen)
        .and_then(Session::attach)
        .and_then(|session| session.resume());
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
    // SAFETY: an initialized context; the channel is not replaced while this runs.
    let session = unsafe { channel(context) }.and_then(|pinned| Session::attach(pinned).ok());
    if let Some(session) = session
        && session.pause().is_ok()
    {
        // SAFETY: as in D0Entry.
        unsafe { (*context.as_ptr()).paused = true };
    }
    // D0Exit must not fail.
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

    // SAFETY: an initialized context; IOCTLs stop before ReleaseHardware replaces the channel.
    let pinned = unsafe { channel(context) }.ok_or(NtStatus::INVALID_DEVICE_STATE)?;
    let session = Session::attach(pinned).map_err(EchoError::status)?;
    // SAFETY: the queue is sequential, so this is the only user of the scratch buffer.
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
