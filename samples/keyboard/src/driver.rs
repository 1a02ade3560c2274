//! The KMDF glue (Windows with a WDK, `cfg(kbd_driver)`): a keyboard port device under
//! kbdclass. It owns the WDF objects and the device context and calls into [`crate::client`]
//! for everything VMBus and [`crate::ioctl`] for the structures kbdclass exchanges:
//!
//! | WDF event | what happens |
//! |---|---|
//! | `DriverEntry` | `WdfDriverCreate` with `EvtDeviceAdd` |
//! | `EvtDeviceAdd` | device type `FILE_DEVICE_KEYBOARD`, PnP callbacks, the device with its context (a `KEVENT`, the class connection, the keyboard slot), a parallel queue for the internal IOCTLs kbdclass sends down |
//! | `EvtDevicePrepareHardware` | `KmclInterface::query_fdo`, `Keyboard::open` (channel, enable, protocol 1.0 negotiation) |
//! | `EvtDeviceReleaseHardware` | `Keyboard::close` (disable: no receive DPC runs after it; cleanup) |
//! | `IOCTL_INTERNAL_KEYBOARD_CONNECT` / `DISCONNECT` | store / clear kbdclass's `CONNECT_DATA` (its device object and service callback) |
//! | `IOCTL_KEYBOARD_QUERY_ATTRIBUTES` | [`KeyboardAttributes::SYNTHETIC`] |
//! | `IOCTL_KEYBOARD_QUERY_INDICATORS` / `SET_INDICATORS` | the stored indicators / [`Keyboard::set_indicators`] (forwarded to the host as the LED message) |
//! | `IOCTL_KEYBOARD_QUERY_TYPEMATIC` / `SET_TYPEMATIC` | [`crate::ioctl::KeyboardSettings`] (the protocol has no typematic message) |
//! | receive DPC | [`InputSink::deliver`]: kbdclass's service callback with the `KEYBOARD_INPUT_DATA`, at DISPATCH_LEVEL |
//! | context cleanup | the context is dropped in place |
//!
//! The class connection is two atomics, so the receive DPC reads it without a lock. kbdclass
//! sends DISCONNECT, and deletes its device object, only after the remove request has passed
//! through this device, whose ReleaseHardware disables the channel first; a DPC racing a
//! DISCONNECT may still make one call into a kbdclass device that is alive.

use core::ffi::c_void;
use core::ptr::{self, NonNull};
use core::sync::atomic::{AtomicPtr, Ordering};

use vmbus_kmcl::{KmclInterface, NtStatus, ParentDevice, PassiveLevel};
use wdk_sys::ntddk::{
    KeClearEvent, KeInitializeEvent, KeQueryPerformanceCounter, KeSetEvent, KeWaitForSingleObject,
};
use wdk_sys::{
    _EVENT_TYPE, _KWAIT_REASON, _MODE, _WDF_EXECUTION_LEVEL, _WDF_IO_QUEUE_DISPATCH_TYPE,
    _WDF_SYNCHRONIZATION_SCOPE, _WDF_TRI_STATE, KEVENT, KPROCESSOR_MODE, LARGE_INTEGER, NTSTATUS,
    PCUNICODE_STRING, PCWDF_OBJECT_CONTEXT_TYPE_INFO, PDRIVER_OBJECT, PVOID, PWDFDEVICE_INIT,
    ULONG, ULONG_PTR, WDF_DRIVER_CONFIG, WDF_IO_QUEUE_CONFIG, WDF_NO_HANDLE,
    WDF_NO_OBJECT_ATTRIBUTES, WDF_OBJECT_ATTRIBUTES, WDF_OBJECT_CONTEXT_TYPE_INFO,
    WDF_PNPPOWER_EVENT_CALLBACKS, WDFCMRESLIST, WDFDEVICE, WDFDRIVER, WDFOBJECT, WDFQUEUE,
    WDFREQUEST, call_unsafe_wdf_function_binding,
};

use crate::client::{InputSink, KbdConfig, KbdError, Keyboard, Platform};
use crate::ioctl::{
    IOCTL_INTERNAL_KEYBOARD_CONNECT, IOCTL_INTERNAL_KEYBOARD_DISCONNECT,
    IOCTL_KEYBOARD_QUERY_ATTRIBUTES, IOCTL_KEYBOARD_QUERY_INDICATORS,
    IOCTL_KEYBOARD_QUERY_TYPEMATIC, IOCTL_KEYBOARD_SET_INDICATORS, IOCTL_KEYBOARD_SET_TYPEMATIC,
    IndicatorParameters, KeyboardAttributes, TypematicParameters,
};
use crate::protocol::KeyboardInputData;

#[cfg(not(test))]
#[global_allocator]
static GLOBAL_ALLOCATOR: wdk_alloc::WdkAllocator = wdk_alloc::WdkAllocator;

/// `FILE_DEVICE_KEYBOARD` (`devioctl.h`).
const FILE_DEVICE_KEYBOARD: ULONG = 0x0b;
/// `STATUS_INVALID_DEVICE_REQUEST`.
const STATUS_INVALID_DEVICE_REQUEST: NtStatus = NtStatus(0xC000_0010_u32 as i32);
/// `STATUS_SHARING_VIOLATION`: a second class driver tried to connect.
const STATUS_SHARING_VIOLATION: NtStatus = NtStatus(0xC000_0043_u32 as i32);
/// `STATUS_DEVICE_NOT_READY`.
const STATUS_DEVICE_NOT_READY: NtStatus = NtStatus(0xC000_00A3_u32 as i32);

/// kbdclass's service callback (`KeyboardClassServiceCallback`, a `PSERVICE_CALLBACK_ROUTINE`
/// called with the class device, the first and one-past-the-last record, and a count out).
type ClassServiceCallback = unsafe extern "system" fn(
    class_device: PVOID,
    input_data_start: *mut KeyboardInputData,
    input_data_end: *mut KeyboardInputData,
    input_data_consumed: *mut ULONG,
);

/// `CONNECT_DATA` (`kbdmou.h`): what kbdclass passes with `IOCTL_INTERNAL_KEYBOARD_CONNECT`.
#[repr(C)]
#[derive(Clone, Copy)]
struct ConnectData {
    class_device_object: PVOID,
    class_service: PVOID,
}

/// The class connection, read by the receive DPC.
struct Connection {
    class_device: AtomicPtr<c_void>,
    service: AtomicPtr<c_void>,
}

/// The per-device state, in the WDF device's context memory.
///
/// Fields are reached through the context pointer one at a time: `keyboard` by the PnP
/// callbacks (serialized by WDF) and by the IOCTL callback, which only reads it and never
/// overlaps PrepareHardware/ReleaseHardware (a power-managed queue delivers requests in D0
/// only, and its callbacks complete every request before returning); `connection` through its
/// atomics; `event` through the [`KernelPlatform`].
struct DeviceContext {
    event: KEVENT,
    connection: Connection,
    keyboard: Option<Keyboard<KernelPlatform>>,
}

/// The `WDF_OBJECT_CONTEXT_TYPE_INFO` of [`DeviceContext`], as `WDF_DECLARE_CONTEXT_TYPE`
/// makes it: in `.data`, its `UniqueType` pointing at itself.
#[repr(transparent)]
struct ContextTypeInfo(WDF_OBJECT_CONTEXT_TYPE_INFO);

// SAFETY: the value is never mutated; its pointers refer to static data.
unsafe impl Sync for ContextTypeInfo {}

#[unsafe(link_section = ".data")]
static DEVICE_CONTEXT_TYPE: ContextTypeInfo = ContextTypeInfo(WDF_OBJECT_CONTEXT_TYPE_INFO {
    Size: size_of::<WDF_OBJECT_CONTEXT_TYPE_INFO>() as ULONG,
    ContextName: c"VMBUS_KBD_DEVICE_CONTEXT".as_ptr().cast_mut(),
    ContextSize: size_of::<DeviceContext>(),
    UniqueType: ptr::addr_of!(DEVICE_CONTEXT_TYPE).cast::<WDF_OBJECT_CONTEXT_TYPE_INFO>(),
    EvtDriverGetUniqueContextType: None,
});

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
/// `device` is a live WDF device created by [`device_add`].
unsafe fn context(device: WDFDEVICE) -> Option<NonNull<DeviceContext>> {
    // SAFETY: a live WDF object and the context type it was created with.
    let raw: PVOID = unsafe {
        call_unsafe_wdf_function_binding!(
            WdfObjectGetTypedContextWorker,
            device.cast(),
            device_context_type(),
        )
    };
    NonNull::new(raw.cast::<DeviceContext>())
}

/// The driver's [`Platform`]: `KeQueryPerformanceCounter`, a notification `KEVENT` and the
/// class connection, both in the device context.
struct KernelPlatform {
    event: NonNull<KEVENT>,
    connection: NonNull<Connection>,
    frequency: u64,
}

// SAFETY: the event is a dispatcher object and the connection two atomics, both usable from
// any thread; they live in the device context, which outlives the keyboard (ReleaseHardware
// and the context cleanup drop the keyboard first).
unsafe impl Send for KernelPlatform {}
// SAFETY: as for Send; every method is a Ke* call or an atomic access.
unsafe impl Sync for KernelPlatform {}

impl KernelPlatform {
    fn new(event: NonNull<KEVENT>, connection: NonNull<Connection>) -> Self {
        let mut frequency = LARGE_INTEGER::default();
        // SAFETY: any IRQL; writes the counter frequency to a valid out pointer.
        let _ = unsafe { KeQueryPerformanceCounter(&mut frequency) };
        // SAFETY: `QuadPart` spans the whole union, which the call above wrote.
        let ticks = unsafe { frequency.QuadPart };
        Self {
            event,
            connection,
            frequency: u64::try_from(ticks).unwrap_or(1).max(1),
        }
    }
}

impl InputSink for KernelPlatform {
    fn deliver(&self, data: &[KeyboardInputData]) -> usize {
        // SAFETY: the connection lives in the device context (see `KernelPlatform`).
        let connection = unsafe { self.connection.as_ref() };
        let class_device = connection.class_device.load(Ordering::Acquire);
        let service = connection.service.load(Ordering::Acquire);
        if class_device.is_null() || service.is_null() {
            return 0;
        }
        // SAFETY: `service` is the non-null `ClassService` kbdclass gave with CONNECT, a
        // function of the `ClassServiceCallback` type.
        let callback = unsafe { core::mem::transmute::<PVOID, ClassServiceCallback>(service) };
        let range = data.as_ptr_range();
        let mut consumed: ULONG = 0;
        // SAFETY: kbdclass's documented contract: called at DISPATCH_LEVEL (the receive DPC)
        // with its device object and a range of records it only reads during the call.
        unsafe {
            callback(
                class_device,
                range.start.cast_mut(),
                range.end.cast_mut(),
                &mut consumed,
            );
        }
        usize::try_from(consumed).unwrap_or(0).min(data.len())
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
        let units = i64::try_from(timeout_ns / 100).unwrap_or(i64::MAX).max(1);
        let mut timeout = LARGE_INTEGER { QuadPart: -units };
        // SAFETY: PASSIVE_LEVEL (only the negotiation waits); a valid dispatcher object and
        // timeout; kernel-mode, non-alertable.
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
/// Called by the I/O manager (through KMDF's `FxDriverEntry`).
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
    // SAFETY: DriverEntry's driver object and registry path, a valid config, no handle out.
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

unsafe extern "C" fn evt_device_add(_driver: WDFDRIVER, device_init: PWDFDEVICE_INIT) -> NTSTATUS {
    match device_add(device_init) {
        Ok(()) => NtStatus::SUCCESS.raw(),
        Err(status) => {
            wdk::println!("vmbus-kbd: EvtDeviceAdd failed: {status}");
            status.raw()
        }
    }
}

fn device_add(mut device_init: PWDFDEVICE_INIT) -> Result<(), NtStatus> {
    // SAFETY: the WDFDEVICE_INIT of this EvtDeviceAdd, before WdfDeviceCreate.
    unsafe {
        call_unsafe_wdf_function_binding!(
            WdfDeviceInitSetDeviceType,
            device_init,
            FILE_DEVICE_KEYBOARD,
        );
    }
    let mut callbacks = WDF_PNPPOWER_EVENT_CALLBACKS {
        Size: size_of::<WDF_PNPPOWER_EVENT_CALLBACKS>() as ULONG,
        EvtDevicePrepareHardware: Some(evt_prepare_hardware),
        EvtDeviceReleaseHardware: Some(evt_release_hardware),
        ..WDF_PNPPOWER_EVENT_CALLBACKS::default()
    };
    // SAFETY: as above.
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
    // SAFETY: the init structure, attributes with the context type, a valid out pointer.
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
    // SAFETY: WDF's zeroed context memory of the right size and alignment, not yet used.
    let initialized = unsafe { &mut *slot.as_ptr() }.write(DeviceContext {
        event: KEVENT::default(),
        connection: Connection {
            class_device: AtomicPtr::new(ptr::null_mut()),
            service: AtomicPtr::new(ptr::null_mut()),
        },
        keyboard: None,
    });
    // SAFETY: the event in the context, which never moves; PASSIVE_LEVEL.
    unsafe {
        KeInitializeEvent(&mut initialized.event, _EVENT_TYPE::NotificationEvent, 0);
    }
    // kbdclass sends every request as an internal device control, possibly at DISPATCH_LEVEL:
    // a parallel, power-managed queue whose callback never blocks.
    let mut queue_config = WDF_IO_QUEUE_CONFIG {
        Size: size_of::<WDF_IO_QUEUE_CONFIG>() as ULONG,
        PowerManaged: _WDF_TRI_STATE::WdfUseDefault,
        DefaultQueue: 1,
        DispatchType: _WDF_IO_QUEUE_DISPATCH_TYPE::WdfIoQueueDispatchParallel,
        EvtIoInternalDeviceControl: Some(evt_io_internal_device_control),
        ..WDF_IO_QUEUE_CONFIG::default()
    };
    let mut queue_attributes = object_attributes();
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

/// Drops the context in place (a keyboard still there is torn down by its `Drop`).
unsafe extern "C" fn evt_device_context_cleanup(object: WDFOBJECT) {
    // SAFETY: WDF calls this for the device created in `device_add`.
    if let Some(context) = unsafe { context(object.cast()) } {
        // SAFETY: the last use of the context; WDF frees the memory after this returns.
        unsafe { ptr::drop_in_place(context.as_ptr()) };
    }
}

unsafe extern "C" fn evt_prepare_hardware(
    device: WDFDEVICE,
    _resources: WDFCMRESLIST,
    _resources_translated: WDFCMRESLIST,
) -> NTSTATUS {
    // SAFETY: WDF passes the device created in `device_add`.
    match unsafe { prepare_hardware(device) } {
        Ok(()) => NtStatus::SUCCESS.raw(),
        Err(error) => {
            wdk::println!("vmbus-kbd: PrepareHardware failed: {error}");
            error.status().raw()
        }
    }
}

/// # Safety
/// `device` is the device created in `device_add`; called from PrepareHardware.
unsafe fn prepare_hardware(device: WDFDEVICE) -> Result<(), KbdError> {
    let irql = PassiveLevel::check().ok_or(KbdError::NotReady)?;
    // SAFETY: per this function's contract.
    let context = unsafe { context(device) }.ok_or(KbdError::NotReady)?;
    // SAFETY: a function driver's device, at PASSIVE_LEVEL.
    let interface = unsafe { KmclInterface::query_fdo(device) }?;
    // SAFETY: the device outlives its channel (ReleaseHardware and the cleanup drop it first).
    let parent = unsafe { ParentDevice::from_wdf_device(device) };
    // SAFETY: field addresses in the initialized context (no reference is created).
    let event = unsafe { &raw mut (*context.as_ptr()).event };
    // SAFETY: as above.
    let connection = unsafe { &raw mut (*context.as_ptr()).connection };
    let platform = KernelPlatform::new(
        NonNull::new(event).ok_or(KbdError::NotReady)?,
        NonNull::new(connection).ok_or(KbdError::NotReady)?,
    );
    let keyboard = Keyboard::open(&irql, &interface, parent, &KbdConfig::DEFAULT, platform)?;
    drop(interface);
    wdk::println!("vmbus-kbd: keyboard protocol 1.0 accepted");
    // SAFETY: PnP callbacks are serialized and no request runs before D0 (see
    // `DeviceContext`); the old value (None) is dropped in place.
    unsafe { (*context.as_ptr()).keyboard = Some(keyboard) };
    Ok(())
}

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
    // SAFETY: a PnP callback after D0Exit: no request runs (see `DeviceContext`).
    let keyboard = unsafe { (*context.as_ptr()).keyboard.take() };
    if let Some(keyboard) = keyboard {
        keyboard.close(&irql);
    }
    NtStatus::SUCCESS.raw()
}

/// The keyboard of a device context, for a request callback.
///
/// # Safety
/// `context` is initialized and the caller is a request callback (see `DeviceContext`).
unsafe fn keyboard_of<'a>(context: NonNull<DeviceContext>) -> Option<&'a Keyboard<KernelPlatform>> {
    // SAFETY: per the contract, a shared reference to the `keyboard` field only, which no PnP
    // callback changes while a request callback runs.
    unsafe { &(*context.as_ptr()).keyboard }.as_ref()
}

/// `EvtIoInternalDeviceControl`: everything kbdclass sends. Never blocks.
unsafe extern "C" fn evt_io_internal_device_control(
    queue: WDFQUEUE,
    request: WDFREQUEST,
    _output_buffer_length: usize,
    _input_buffer_length: usize,
    io_control_code: ULONG,
) {
    // SAFETY: WDF passes its queue and a request of it.
    let result = unsafe { internal_ioctl(queue, request, io_control_code) };
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

/// The request's input buffer of at least `minimum` bytes, copied into `out`.
///
/// # Safety
/// `request` is a live request of this device's queue.
unsafe fn read_input(request: WDFREQUEST, minimum: usize, out: &mut [u8]) -> Result<(), NtStatus> {
    let mut buffer: PVOID = ptr::null_mut();
    let mut length = 0_usize;
    // SAFETY: a live request and valid out pointers.
    NtStatus(unsafe {
        call_unsafe_wdf_function_binding!(
            WdfRequestRetrieveInputBuffer,
            request,
            minimum,
            &mut buffer,
            &mut length,
        )
    })
    .ok()?;
    let n = out.len().min(length);
    // SAFETY: WDF's buffer of `length` bytes, alive until the request completes.
    let bytes = unsafe { core::slice::from_raw_parts(buffer.cast::<u8>(), n) };
    out.get_mut(..n)
        .ok_or(NtStatus::INVALID_PARAMETER)?
        .copy_from_slice(bytes);
    Ok(())
}

/// Writes through `write` into the request's output buffer of at least `minimum` bytes.
///
/// # Safety
/// `request` is a live request of this device's queue.
unsafe fn write_output(
    request: WDFREQUEST,
    minimum: usize,
    write: impl FnOnce(&mut [u8]) -> Option<usize>,
) -> Result<usize, NtStatus> {
    let mut buffer: PVOID = ptr::null_mut();
    let mut length = 0_usize;
    // SAFETY: a live request and valid out pointers.
    NtStatus(unsafe {
        call_unsafe_wdf_function_binding!(
            WdfRequestRetrieveOutputBuffer,
            request,
            minimum,
            &mut buffer,
            &mut length,
        )
    })
    .ok()?;
    // SAFETY: WDF's buffer of `length` bytes; the input (same system buffer for
    // METHOD_BUFFERED) was read before, if at all.
    let bytes = unsafe { core::slice::from_raw_parts_mut(buffer.cast::<u8>(), length) };
    write(bytes).ok_or(NtStatus::BUFFER_TOO_SMALL)
}

/// # Safety
/// `queue` is the device's queue and `request` a request it presented.
unsafe fn internal_ioctl(
    queue: WDFQUEUE,
    request: WDFREQUEST,
    code: ULONG,
) -> Result<usize, NtStatus> {
    // SAFETY: a live queue of a device created in `device_add`.
    let device = unsafe { call_unsafe_wdf_function_binding!(WdfIoQueueGetDevice, queue) };
    // SAFETY: that device.
    let context = unsafe { context(device) }.ok_or(NtStatus::INVALID_DEVICE_STATE)?;
    // SAFETY: the connection's atomics, shared with the receive DPC.
    let connection = unsafe { &(*context.as_ptr()).connection };
    match code {
        IOCTL_INTERNAL_KEYBOARD_CONNECT => {
            let mut buffer: PVOID = ptr::null_mut();
            let mut length = 0_usize;
            // SAFETY: a live request; for this METHOD_NEITHER internal request KMDF hands out
            // kbdclass's kernel-mode CONNECT_DATA.
            NtStatus(unsafe {
                call_unsafe_wdf_function_binding!(
                    WdfRequestRetrieveInputBuffer,
                    request,
                    size_of::<ConnectData>(),
                    &mut buffer,
                    &mut length,
                )
            })
            .ok()?;
            // SAFETY: at least `size_of::<ConnectData>()` readable bytes (checked by WDF),
            // read unaligned.
            let data = unsafe { buffer.cast::<ConnectData>().read_unaligned() };
            if data.class_device_object.is_null() || data.class_service.is_null() {
                return Err(NtStatus::INVALID_PARAMETER);
            }
            if connection
                .service
                .compare_exchange(
                    ptr::null_mut(),
                    data.class_service,
                    Ordering::AcqRel,
                    Ordering::Acquire,
                )
                .is_err()
            {
                return Err(STATUS_SHARING_VIOLATION);
            }
            connection
                .class_device
                .store(data.class_device_object, Ordering::Release);
            Ok(0)
        }
        IOCTL_INTERNAL_KEYBOARD_DISCONNECT => {
            connection
                .class_device
                .store(ptr::null_mut(), Ordering::Release);
            connection.service.store(ptr::null_mut(), Ordering::Release);
            Ok(0)
        }
        IOCTL_KEYBOARD_QUERY_ATTRIBUTES => {
            // SAFETY: per this function's contract.
            unsafe {
                write_output(request, KeyboardAttributes::LEN, |out| {
                    KeyboardAttributes::SYNTHETIC.write(out)
                })
            }
        }
        _ => {
            // SAFETY: a request callback (see `DeviceContext`).
            let keyboard = unsafe { keyboard_of(context) }.ok_or(STATUS_DEVICE_NOT_READY)?;
            let settings = keyboard.client().settings();
            match code {
                IOCTL_KEYBOARD_QUERY_INDICATORS => {
                    let value = settings.indicators();
                    // SAFETY: per this function's contract.
                    unsafe {
                        write_output(request, IndicatorParameters::LEN, |out| value.write(out))
                    }
                }
                IOCTL_KEYBOARD_SET_INDICATORS => {
                    let mut raw = [0_u8; IndicatorParameters::LEN];
                    // SAFETY: per this function's contract.
                    unsafe { read_input(request, IndicatorParameters::LEN, &mut raw) }?;
                    let value =
                        IndicatorParameters::parse(&raw).ok_or(NtStatus::INVALID_PARAMETER)?;
                    keyboard
                        .set_indicators(value.led_flags)
                        .map_err(KbdError::status)?;
                    Ok(0)
                }
                IOCTL_KEYBOARD_QUERY_TYPEMATIC => {
                    let value = settings.typematic();
                    // SAFETY: per this function's contract.
                    unsafe {
                        write_output(request, TypematicParameters::LEN, |out| value.write(out))
                    }
                }
                IOCTL_KEYBOARD_SET_TYPEMATIC => {
                    let mut raw = [0_u8; TypematicParameters::LEN];
                    // SAFETY: per this function's contract.
                    unsafe { read_input(request, TypematicParameters::LEN, &mut raw) }?;
                    let value =
                        TypematicParameters::parse(&raw).ok_or(NtStatus::INVALID_PARAMETER)?;
                    settings
                        .set_typematic(value)
                        .map_err(|_| NtStatus::INVALID_PARAMETER)?;
                    Ok(0)
                }
                _ => Err(STATUS_INVALID_DEVICE_REQUEST),
            }
        }
    }
}
