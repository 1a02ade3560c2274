//! The user-mode interface of the driver: the device interface GUID and the ping IOCTL, with
//! its portable handler (the WDF glue only retrieves the buffers and completes the request).

use vmbus_kmcl::sys::GUID;
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

use crate::client::{EchoError, Platform, Session};
use crate::protocol;

/// The device interface a user-mode tool opens (`SetupDiGetClassDevs` /
/// `CM_Get_Device_Interface_List` with this GUID): `{c9470cc5-0335-493a-9f40-ee45cd8b4b54}`.
pub const DEVICE_INTERFACE: GUID = GUID {
    Data1: 0xc947_0cc5,
    Data2: 0x0335,
    Data3: 0x493a,
    Data4: [0x9f, 0x40, 0xee, 0x45, 0xcd, 0x8b, 0x4b, 0x54],
};

/// `FILE_DEVICE_UNKNOWN`.
const FILE_DEVICE_UNKNOWN: u32 = 0x22;
/// `METHOD_BUFFERED`.
const METHOD_BUFFERED: u32 = 0;
/// `FILE_ANY_ACCESS`.
const FILE_ANY_ACCESS: u32 = 0;

/// `CTL_CODE(DeviceType, Function, Method, Access)` of `devioctl.h`.
#[must_use]
pub const fn ctl_code(device_type: u32, function: u32, method: u32, access: u32) -> u32 {
    (device_type << 16) | (access << 14) | (function << 2) | method
}

/// `IOCTL_VMBUS_ECHO_PING` (0x0022_2000): buffered; input [`PingInput`], output [`PingOutput`].
/// Runs a ping burst over the channel and reports counts and round-trip times.
pub const IOCTL_VMBUS_ECHO_PING: u32 =
    ctl_code(FILE_DEVICE_UNKNOWN, 0x800, METHOD_BUFFERED, FILE_ANY_ACCESS);

/// Most pings one IOCTL may ask for.
pub const MAX_PINGS_PER_IOCTL: u32 = 1_000_000;

/// Input of [`IOCTL_VMBUS_ECHO_PING`] (8 bytes, native endian).
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable,
)]
#[repr(C)]
pub struct PingInput {
    /// Payload bytes per ping (0..=[`protocol::MAX_PAYLOAD`]).
    pub payload_len: u32,
    /// Pings to send (1..=[`MAX_PINGS_PER_IOCTL`]).
    pub count: u32,
}

/// Output of [`IOCTL_VMBUS_ECHO_PING`] (64 bytes, native endian; times in nanoseconds).
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable,
)]
#[repr(C)]
pub struct PingOutput {
    /// Pings sent.
    pub sent: u64,
    /// Pings echoed intact.
    pub ok: u64,
    /// Pings failed or rejected.
    pub failed: u64,
    /// Payload bytes echoed intact.
    pub bytes: u64,
    /// Wall time of the burst.
    pub elapsed_ns: u64,
    /// Median round-trip time.
    pub p50_ns: u64,
    /// 99th-percentile round-trip time.
    pub p99_ns: u64,
    /// The negotiated protocol version.
    pub version: u32,
    /// Reserved, 0.
    pub reserved: u32,
}

/// Parses the input buffer of [`IOCTL_VMBUS_ECHO_PING`] (a copy, so the buffered I/O buffer
/// can then be reused for the output).
///
/// # Errors
/// [`EchoError::InvalidArgument`] when the buffer is shorter than [`PingInput`] or a field is
/// out of range.
pub fn parse_ping_input(input: &[u8]) -> Result<PingInput, EchoError> {
    let (request, _) =
        PingInput::read_from_prefix(input).map_err(|_| EchoError::InvalidArgument)?;
    let count_ok = (1..=MAX_PINGS_PER_IOCTL).contains(&request.count);
    if !count_ok || request.payload_len as usize > protocol::MAX_PAYLOAD {
        return Err(EchoError::InvalidArgument);
    }
    Ok(request)
}

/// Runs the ping IOCTL: a burst of `request.count` pings over `session`, with the latency
/// histogram reset first so that the percentiles are this burst's.
///
/// # Errors
/// As [`Session::ping_burst`].
///
/// IRQL: PASSIVE_LEVEL.
pub fn run_ping<P: Platform>(
    session: &Session<'_, P>,
    request: &PingInput,
    scratch: &mut [u8],
) -> Result<PingOutput, EchoError> {
    let client = session.client();
    client.latency().reset();
    let report = session.ping_burst(
        request.payload_len as usize,
        u64::from(request.count),
        scratch,
    )?;
    let latency = client.latency().summary();
    Ok(PingOutput {
        sent: report.sent,
        ok: report.ok,
        failed: report.failed,
        bytes: report.bytes,
        elapsed_ns: report.elapsed_ns,
        p50_ns: latency.p50_ns,
        p99_ns: latency.p99_ns,
        version: u32::from(session.version()?),
        reserved: 0,
    })
}

/// Writes `output` to the start of `buffer`; returns the bytes written (the request's
/// `Information`).
///
/// # Errors
/// [`EchoError::InvalidArgument`] when `buffer` is shorter than [`PingOutput`].
pub fn write_ping_output(output: &PingOutput, buffer: &mut [u8]) -> Result<usize, EchoError> {
    output
        .write_to_prefix(buffer)
        .map_err(|_| EchoError::InvalidArgument)?;
    Ok(size_of::<PingOutput>())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ioctl_code_and_layouts() {
        assert_eq!(IOCTL_VMBUS_ECHO_PING, 0x0022_2000);
        assert_eq!(size_of::<PingInput>(), 8);
        assert_eq!(size_of::<PingOutput>(), 64);
    }

    #[test]
    fn input_validation() {
        let ok = PingInput {
            payload_len: 64,
            count: 10,
        };
        assert_eq!(parse_ping_input(ok.as_bytes()), Ok(ok));
        assert!(parse_ping_input(&ok.as_bytes()[..7]).is_err());
        let zero = PingInput {
            payload_len: 64,
            count: 0,
        };
        assert!(parse_ping_input(zero.as_bytes()).is_err());
        let big = PingInput {
            payload_len: 5000,
            count: 1,
        };
        assert!(parse_ping_input(big.as_bytes()).is_err());
        let mut out = [0_u8; 63];
        assert!(write_ping_output(&PingOutput::default(), &mut out).is_err());
        let mut out = [0_u8; 64];
        assert_eq!(write_ping_output(&PingOutput::default(), &mut out), Ok(64));
    }
}
