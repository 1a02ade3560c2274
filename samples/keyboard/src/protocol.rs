//! The Hyper-V synthetic keyboard protocol (guest side) and its translation to the input
//! records a Windows keyboard port driver hands to kbdclass.
//!
//! Protocol facts come from public sources and are restated here in this project's words:
//! - Linux `drivers/input/serio/hyperv-keyboard.c`: the interface type, version 1.0 encoded as
//!   `major << 16 | minor`, the four message types, the little-endian 32-bit message header,
//!   the protocol request and response (bit 0 of the status: accepted), the keystroke event
//!   (16-bit make code, 16 reserved bits, 32-bit info word with the unicode, break, E0 and E1
//!   bits), the largest message (256 bytes), ring sizes (10 pages each way), and the fact that
//!   the host answers the request with a separate in-band response message (the completion of
//!   the request carries nothing the guest uses).
//! - Microsoft's Hyper-V guest UEFI firmware (`mu_msvm`, the synthetic keyboard DXE driver): the
//!   LED message, the message header followed by a 16-bit set of `KEYBOARD_*_LOCK_ON` flags.
//!   Linux names that message type but never sends it.
//! - The WDK's `ntddkbd.h` (documented on Microsoft Learn): the `KEYBOARD_INPUT_DATA` layout and
//!   its `KEY_*` flags, the indicator flags, and the typematic limits.
//!
//! Every message is at most [`MAX_MESSAGE`] bytes; the VMBus ring pads what the guest receives
//! to a multiple of 8 bytes, so parsing checks minimum lengths, never exact ones.

use vmbus_kmcl::sys::GUID;

/// The synthetic keyboard's VMBus interface type, `{f912ad6d-2b17-48ea-bd65-f927a61c7684}`.
pub const INTERFACE_TYPE: GUID = GUID {
    Data1: 0xf912_ad6d,
    Data2: 0x2b17,
    Data3: 0x48ea,
    Data4: [0xbd, 0x65, 0xf9, 0x27, 0xa6, 0x1c, 0x76, 0x84],
};

/// The interface type as VMBus spells the device's hardware ID (what the INF matches).
pub const HARDWARE_ID: &str = "VMBUS\\{f912ad6d-2b17-48ea-bd65-f927a61c7684}";

/// Protocol version 1.0: major version in the high 16 bits, minor in the low 16.
pub const VERSION_1_0: u32 = 1 << 16;

/// The largest message either side sends, in bytes.
pub const MAX_MESSAGE: usize = 256;

/// Ring size each way, in 4 KiB pages (what Linux uses).
pub const RING_PAGES: u32 = 10;

/// Message type: protocol request (guest → host).
pub const MSG_PROTOCOL_REQUEST: u32 = 1;
/// Message type: protocol response (host → guest).
pub const MSG_PROTOCOL_RESPONSE: u32 = 2;
/// Message type: keystroke event (host → guest).
pub const MSG_EVENT: u32 = 3;
/// Message type: LED indicators (guest → host).
pub const MSG_LED_INDICATORS: u32 = 4;

/// Bytes of the message header (the type).
pub const HEADER_LEN: usize = 4;
/// Bytes of a protocol request: header, requested version.
pub const PROTOCOL_REQUEST_LEN: usize = 8;
/// Bytes of a protocol response: header, status.
pub const PROTOCOL_RESPONSE_LEN: usize = 8;
/// Bytes of a keystroke event: header, make code, reserved, info.
pub const EVENT_LEN: usize = 12;
/// Bytes of the LED message as sent: header, flags, and two bytes of zero padding (the C
/// structure's size on the host's side, 4-byte aligned).
pub const LED_LEN: usize = 8;

/// Protocol response status bit: the host accepted the requested version.
pub const STATUS_ACCEPTED: u32 = 1 << 0;

/// Event info bit: `make_code` is a UTF-16 code unit, not a scan code.
pub const INFO_UNICODE: u32 = 1 << 0;
/// Event info bit: the key was released.
pub const INFO_BREAK: u32 = 1 << 1;
/// Event info bit: the scan code had the 0xE0 prefix.
pub const INFO_E0: u32 = 1 << 2;
/// Event info bit: the scan code had the 0xE1 prefix.
pub const INFO_E1: u32 = 1 << 3;

/// `KEYBOARD_INPUT_DATA.Flags`: key pressed (the absence of [`KEY_BREAK`]).
pub const KEY_MAKE: u16 = 0;
/// `KEYBOARD_INPUT_DATA.Flags`: key released.
pub const KEY_BREAK: u16 = 1;
/// `KEYBOARD_INPUT_DATA.Flags`: 0xE0-prefixed scan code.
pub const KEY_E0: u16 = 2;
/// `KEYBOARD_INPUT_DATA.Flags`: 0xE1-prefixed scan code.
pub const KEY_E1: u16 = 4;

/// `KEYBOARD_INDICATOR_PARAMETERS.LedFlags`: scroll lock.
pub const KEYBOARD_SCROLL_LOCK_ON: u16 = 1;
/// `KEYBOARD_INDICATOR_PARAMETERS.LedFlags`: num lock.
pub const KEYBOARD_NUM_LOCK_ON: u16 = 2;
/// `KEYBOARD_INDICATOR_PARAMETERS.LedFlags`: caps lock.
pub const KEYBOARD_CAPS_LOCK_ON: u16 = 4;
/// `KEYBOARD_INDICATOR_PARAMETERS.LedFlags`: kana lock.
pub const KEYBOARD_KANA_LOCK_ON: u16 = 8;
/// The indicator flags this driver forwards to the host (the others are Windows-internal
/// markers such as "injected" and "shadow" and are masked off).
pub const LED_MASK: u16 =
    KEYBOARD_SCROLL_LOCK_ON | KEYBOARD_NUM_LOCK_ON | KEYBOARD_CAPS_LOCK_ON | KEYBOARD_KANA_LOCK_ON;

/// The largest make code of scan code set 1 (bit 7 is the release bit on the wire of a real
/// keyboard, so a make code never has it).
pub const MAX_MAKE_CODE: u16 = 0x7f;

/// One input record for kbdclass, laid out as `ntddkbd.h`'s `KEYBOARD_INPUT_DATA` (12 bytes).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct KeyboardInputData {
    /// The keyboard's unit number (`\Device\KeyboardPortN`); 0 here.
    pub unit_id: u16,
    /// The set-1 scan code of the key, without the release bit.
    pub make_code: u16,
    /// `KEY_MAKE` / `KEY_BREAK`, plus `KEY_E0` or `KEY_E1`.
    pub flags: u16,
    /// Zero.
    pub reserved: u16,
    /// Device-specific data; 0 here.
    pub extra_information: u32,
}

const _: () = assert!(size_of::<KeyboardInputData>() == 12);

impl KeyboardInputData {
    /// True for a release.
    #[must_use]
    pub const fn is_break(&self) -> bool {
        self.flags & KEY_BREAK != 0
    }
}

/// Why a host message was dropped.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum RejectReason {
    /// Shorter than its type requires (or than a header).
    TooShort = 0,
    /// Longer than [`MAX_MESSAGE`] plus ring padding.
    TooLong = 1,
    /// A type this protocol does not define.
    UnknownType = 2,
    /// A type the host must not send (a guest → host type).
    UnexpectedType = 3,
    /// A keystroke before the protocol was accepted (or after it was refused).
    NotNegotiated = 4,
    /// A protocol response while none was awaited.
    UnexpectedResponse = 5,
    /// A keystroke with both the E0 and E1 bits.
    BadFlags = 6,
    /// A scan code above [`MAX_MAKE_CODE`].
    BadMakeCode = 7,
    /// A packet with external data (the protocol has none).
    ExternalData = 8,
}

impl RejectReason {
    /// Number of reasons.
    pub const COUNT: usize = 9;

    /// Every reason, in index order.
    pub const ALL: [Self; Self::COUNT] = [
        Self::TooShort,
        Self::TooLong,
        Self::UnknownType,
        Self::UnexpectedType,
        Self::NotNegotiated,
        Self::UnexpectedResponse,
        Self::BadFlags,
        Self::BadMakeCode,
        Self::ExternalData,
    ];

    /// The reason's index in counter arrays.
    #[must_use]
    pub const fn index(self) -> usize {
        self as usize
    }

    /// A short name for reports.
    #[must_use]
    pub const fn name(self) -> &'static str {
        match self {
            Self::TooShort => "too short",
            Self::TooLong => "too long",
            Self::UnknownType => "unknown type",
            Self::UnexpectedType => "guest-to-host type",
            Self::NotNegotiated => "event before negotiation",
            Self::UnexpectedResponse => "unexpected protocol response",
            Self::BadFlags => "E0 and E1 together",
            Self::BadMakeCode => "make code out of range",
            Self::ExternalData => "external data",
        }
    }
}

/// A keystroke as the host sent it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Keystroke {
    /// Scan code, or a UTF-16 code unit with [`INFO_UNICODE`].
    pub make_code: u16,
    /// The info word.
    pub info: u32,
}

impl Keystroke {
    /// True for a unicode event.
    #[must_use]
    pub const fn is_unicode(&self) -> bool {
        self.info & INFO_UNICODE != 0
    }

    /// The record kbdclass receives for this keystroke, or `None` for a unicode event (a
    /// keyboard port reports scan codes only; see [`crate::client`] for what is done with
    /// unicode events).
    #[must_use]
    pub const fn to_input_data(&self) -> Option<KeyboardInputData> {
        if self.is_unicode() {
            return None;
        }
        let mut flags = KEY_MAKE;
        if self.info & INFO_BREAK != 0 {
            flags |= KEY_BREAK;
        }
        if self.info & INFO_E0 != 0 {
            flags |= KEY_E0;
        }
        if self.info & INFO_E1 != 0 {
            flags |= KEY_E1;
        }
        Some(KeyboardInputData {
            unit_id: 0,
            make_code: self.make_code,
            flags,
            reserved: 0,
            extra_information: 0,
        })
    }
}

/// A validated host → guest message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HostMessage {
    /// The answer to the protocol request: its status word.
    ProtocolResponse {
        /// Bit 0: accepted.
        status: u32,
    },
    /// A keystroke.
    Event(Keystroke),
}

/// Reads a little-endian `u16` at `offset`.
fn le_u16(data: &[u8], offset: usize) -> Option<u16> {
    let bytes = data.get(offset..offset.checked_add(2)?)?;
    Some(u16::from_le_bytes(bytes.try_into().ok()?))
}

/// Reads a little-endian `u32` at `offset`.
fn le_u32(data: &[u8], offset: usize) -> Option<u32> {
    let bytes = data.get(offset..offset.checked_add(4)?)?;
    Some(u32::from_le_bytes(bytes.try_into().ok()?))
}

/// The message type of `data`, if it has a header.
#[must_use]
pub fn message_type(data: &[u8]) -> Option<u32> {
    le_u32(data, 0)
}

/// Parses a host message already copied out of host memory. `data` is what the ring delivered
/// (padded to 8 bytes). Checks the length against the type; it does not check the driver's
/// state (that is [`crate::client`]'s job).
///
/// # Errors
/// The [`RejectReason`].
pub fn parse_host_message(data: &[u8]) -> Result<HostMessage, RejectReason> {
    if data.len() > MAX_MESSAGE + 7 {
        return Err(RejectReason::TooLong);
    }
    let kind = message_type(data).ok_or(RejectReason::TooShort)?;
    match kind {
        MSG_PROTOCOL_RESPONSE => {
            let status = le_u32(data, 4).ok_or(RejectReason::TooShort)?;
            Ok(HostMessage::ProtocolResponse { status })
        }
        MSG_EVENT => {
            let (Some(make_code), Some(info)) = (le_u16(data, 4), le_u32(data, 8)) else {
                return Err(RejectReason::TooShort);
            };
            let keystroke = Keystroke { make_code, info };
            if !keystroke.is_unicode() {
                if info & INFO_E0 != 0 && info & INFO_E1 != 0 {
                    return Err(RejectReason::BadFlags);
                }
                if make_code > MAX_MAKE_CODE {
                    return Err(RejectReason::BadMakeCode);
                }
            }
            Ok(HostMessage::Event(keystroke))
        }
        MSG_PROTOCOL_REQUEST | MSG_LED_INDICATORS => Err(RejectReason::UnexpectedType),
        _ => Err(RejectReason::UnknownType),
    }
}

/// The protocol request for `version`.
#[must_use]
pub fn encode_protocol_request(version: u32) -> [u8; PROTOCOL_REQUEST_LEN] {
    let mut out = [0_u8; PROTOCOL_REQUEST_LEN];
    let (header, body) = out.split_at_mut(HEADER_LEN);
    header.copy_from_slice(&MSG_PROTOCOL_REQUEST.to_le_bytes());
    body.copy_from_slice(&version.to_le_bytes());
    out
}

/// The LED message for `flags` (masked with [`LED_MASK`]).
#[must_use]
pub fn encode_led_indicators(flags: u16) -> [u8; LED_LEN] {
    let mut out = [0_u8; LED_LEN];
    let (header, body) = out.split_at_mut(HEADER_LEN);
    header.copy_from_slice(&MSG_LED_INDICATORS.to_le_bytes());
    if let Some(led) = body.get_mut(..2) {
        led.copy_from_slice(&(flags & LED_MASK).to_le_bytes());
    }
    out
}

/// The host's protocol response with `status` (for host models and tests).
#[must_use]
pub fn encode_protocol_response(status: u32) -> [u8; PROTOCOL_RESPONSE_LEN] {
    let mut out = [0_u8; PROTOCOL_RESPONSE_LEN];
    let (header, body) = out.split_at_mut(HEADER_LEN);
    header.copy_from_slice(&MSG_PROTOCOL_RESPONSE.to_le_bytes());
    body.copy_from_slice(&status.to_le_bytes());
    out
}

/// A keystroke event (for host models and tests).
#[must_use]
pub fn encode_event(keystroke: Keystroke) -> [u8; EVENT_LEN] {
    let mut out = [0_u8; EVENT_LEN];
    let (header, rest) = out.split_at_mut(HEADER_LEN);
    header.copy_from_slice(&MSG_EVENT.to_le_bytes());
    let (code, rest) = rest.split_at_mut(2);
    code.copy_from_slice(&keystroke.make_code.to_le_bytes());
    if let Some(info) = rest.get_mut(2..6) {
        info.copy_from_slice(&keystroke.info.to_le_bytes());
    }
    out
}

/// Parses a guest → host message (for host models): the protocol request's version, or the
/// LED message's flags.
#[must_use]
pub fn parse_guest_message(data: &[u8]) -> Option<GuestMessage> {
    match message_type(data)? {
        MSG_PROTOCOL_REQUEST => Some(GuestMessage::ProtocolRequest {
            version: le_u32(data, 4)?,
        }),
        MSG_LED_INDICATORS => Some(GuestMessage::LedIndicators {
            flags: le_u16(data, 4)?,
        }),
        _ => None,
    }
}

/// A guest → host message, as a host model sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GuestMessage {
    /// The protocol request.
    ProtocolRequest {
        /// The requested version.
        version: u32,
    },
    /// The LED indicators.
    LedIndicators {
        /// `KEYBOARD_*_LOCK_ON` flags.
        flags: u16,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips() {
        let ks = Keystroke {
            make_code: 0x4b,
            info: INFO_E0 | INFO_BREAK,
        };
        let mut padded = encode_event(ks).to_vec();
        padded.resize(16, 0);
        assert_eq!(parse_host_message(&padded), Ok(HostMessage::Event(ks)));
        assert_eq!(
            ks.to_input_data().unwrap(),
            KeyboardInputData {
                make_code: 0x4b,
                flags: KEY_BREAK | KEY_E0,
                ..KeyboardInputData::default()
            }
        );
        assert_eq!(
            parse_host_message(&encode_protocol_response(1)),
            Ok(HostMessage::ProtocolResponse { status: 1 })
        );
        assert_eq!(
            parse_guest_message(&encode_protocol_request(VERSION_1_0)),
            Some(GuestMessage::ProtocolRequest {
                version: 0x0001_0000
            })
        );
        assert_eq!(
            parse_guest_message(&encode_led_indicators(0xffff)),
            Some(GuestMessage::LedIndicators { flags: LED_MASK })
        );
    }

    #[test]
    fn rejections() {
        assert_eq!(parse_host_message(&[3, 0]), Err(RejectReason::TooShort));
        assert_eq!(
            parse_host_message(&[3, 0, 0, 0, 0x1e, 0, 0, 0]),
            Err(RejectReason::TooShort)
        );
        assert_eq!(
            parse_host_message(&[9, 0, 0, 0, 0, 0, 0, 0]),
            Err(RejectReason::UnknownType)
        );
        assert_eq!(
            parse_host_message(&encode_protocol_request(1)),
            Err(RejectReason::UnexpectedType)
        );
        let both = encode_event(Keystroke {
            make_code: 0x1d,
            info: INFO_E0 | INFO_E1,
        });
        assert_eq!(parse_host_message(&both), Err(RejectReason::BadFlags));
        let high = encode_event(Keystroke {
            make_code: 0x80,
            info: 0,
        });
        assert_eq!(parse_host_message(&high), Err(RejectReason::BadMakeCode));
        assert_eq!(
            parse_host_message(&[3; MAX_MESSAGE + 8]),
            Err(RejectReason::TooLong)
        );
    }
}
