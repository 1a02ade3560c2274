//! What a keyboard port driver answers kbdclass with, portable: the IOCTL codes of `kbdmou.h`
//! and `ntddkbd.h`, the structures they carry (encoded and parsed byte by byte, so the WDF glue
//! needs no `unsafe` for them), and the [`KeyboardSettings`] (indicators and typematic) the
//! driver keeps.
//!
//! Codes are `CTL_CODE(FILE_DEVICE_KEYBOARD = 0x0b, function, method, FILE_ANY_ACCESS)`, with
//! the function numbers of the WDK headers.

use core::sync::atomic::{AtomicU16, Ordering};

use crate::protocol::LED_MASK;

/// `CTL_CODE(device, function, method, access)`.
const fn ctl_code(device: u32, function: u32, method: u32, access: u32) -> u32 {
    (device << 16) | (access << 14) | (function << 2) | method
}

const FILE_DEVICE_KEYBOARD: u32 = 0x0b;
const METHOD_BUFFERED: u32 = 0;
const METHOD_NEITHER: u32 = 3;
const FILE_ANY_ACCESS: u32 = 0;

/// kbdclass connects its service callback (`CONNECT_DATA` in the input buffer).
pub const IOCTL_INTERNAL_KEYBOARD_CONNECT: u32 = ctl_code(
    FILE_DEVICE_KEYBOARD,
    0x0080,
    METHOD_NEITHER,
    FILE_ANY_ACCESS,
);
/// kbdclass disconnects.
pub const IOCTL_INTERNAL_KEYBOARD_DISCONNECT: u32 = ctl_code(
    FILE_DEVICE_KEYBOARD,
    0x0100,
    METHOD_NEITHER,
    FILE_ANY_ACCESS,
);
/// `KEYBOARD_ATTRIBUTES` out.
pub const IOCTL_KEYBOARD_QUERY_ATTRIBUTES: u32 = ctl_code(
    FILE_DEVICE_KEYBOARD,
    0x0000,
    METHOD_BUFFERED,
    FILE_ANY_ACCESS,
);
/// `KEYBOARD_TYPEMATIC_PARAMETERS` in.
pub const IOCTL_KEYBOARD_SET_TYPEMATIC: u32 = ctl_code(
    FILE_DEVICE_KEYBOARD,
    0x0001,
    METHOD_BUFFERED,
    FILE_ANY_ACCESS,
);
/// `KEYBOARD_INDICATOR_PARAMETERS` in.
pub const IOCTL_KEYBOARD_SET_INDICATORS: u32 = ctl_code(
    FILE_DEVICE_KEYBOARD,
    0x0002,
    METHOD_BUFFERED,
    FILE_ANY_ACCESS,
);
/// `KEYBOARD_TYPEMATIC_PARAMETERS` out.
pub const IOCTL_KEYBOARD_QUERY_TYPEMATIC: u32 = ctl_code(
    FILE_DEVICE_KEYBOARD,
    0x0008,
    METHOD_BUFFERED,
    FILE_ANY_ACCESS,
);
/// `KEYBOARD_INDICATOR_PARAMETERS` out.
pub const IOCTL_KEYBOARD_QUERY_INDICATORS: u32 = ctl_code(
    FILE_DEVICE_KEYBOARD,
    0x0010,
    METHOD_BUFFERED,
    FILE_ANY_ACCESS,
);

/// Typematic limits of `ntddkbd.h`: characters per second.
pub const TYPEMATIC_RATE_MINIMUM: u16 = 2;
/// Typematic limits: characters per second.
pub const TYPEMATIC_RATE_MAXIMUM: u16 = 30;
/// Typematic default rate.
pub const TYPEMATIC_RATE_DEFAULT: u16 = 30;
/// Typematic limits: delay in milliseconds.
pub const TYPEMATIC_DELAY_MINIMUM: u16 = 250;
/// Typematic limits: delay in milliseconds.
pub const TYPEMATIC_DELAY_MAXIMUM: u16 = 1000;
/// Typematic default delay.
pub const TYPEMATIC_DELAY_DEFAULT: u16 = 250;

/// `KEYBOARD_TYPEMATIC_PARAMETERS` (6 bytes).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TypematicParameters {
    /// Unit number.
    pub unit_id: u16,
    /// Characters per second.
    pub rate: u16,
    /// Delay before repeating, milliseconds.
    pub delay: u16,
}

impl TypematicParameters {
    /// Bytes on the wire.
    pub const LEN: usize = 6;

    /// Parses the structure from an IOCTL input buffer.
    #[must_use]
    pub fn parse(bytes: &[u8]) -> Option<Self> {
        Some(Self {
            unit_id: read_u16(bytes, 0)?,
            rate: read_u16(bytes, 2)?,
            delay: read_u16(bytes, 4)?,
        })
    }

    /// Writes the structure into an IOCTL output buffer; returns the bytes written.
    #[must_use]
    pub fn write(&self, out: &mut [u8]) -> Option<usize> {
        write_u16(out, 0, self.unit_id)?;
        write_u16(out, 2, self.rate)?;
        write_u16(out, 4, self.delay)?;
        Some(Self::LEN)
    }
}

/// `KEYBOARD_INDICATOR_PARAMETERS` (4 bytes).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IndicatorParameters {
    /// Unit number.
    pub unit_id: u16,
    /// `KEYBOARD_*_LOCK_ON` flags.
    pub led_flags: u16,
}

impl IndicatorParameters {
    /// Bytes on the wire.
    pub const LEN: usize = 4;

    /// Parses the structure from an IOCTL input buffer.
    #[must_use]
    pub fn parse(bytes: &[u8]) -> Option<Self> {
        Some(Self {
            unit_id: read_u16(bytes, 0)?,
            led_flags: read_u16(bytes, 2)?,
        })
    }

    /// Writes the structure into an IOCTL output buffer; returns the bytes written.
    #[must_use]
    pub fn write(&self, out: &mut [u8]) -> Option<usize> {
        write_u16(out, 0, self.unit_id)?;
        write_u16(out, 2, self.led_flags)?;
        Some(Self::LEN)
    }
}

/// `KEYBOARD_ATTRIBUTES` as this driver reports it (28 bytes on every target: the 32-bit queue
/// length sits at offset 12 after two bytes of padding).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KeyboardAttributes {
    /// `KeyboardIdentifier.Type`: 4 (enhanced 101/102-key keyboard).
    pub kind: u8,
    /// `KeyboardIdentifier.Subtype`.
    pub subtype: u8,
    /// Scan code set: 1.
    pub keyboard_mode: u16,
    /// Function keys: 12.
    pub number_of_function_keys: u16,
    /// Indicators: 3.
    pub number_of_indicators: u16,
    /// Keys: 101.
    pub number_of_keys_total: u16,
    /// Records kbdclass should size its queue for.
    pub input_data_queue_length: u32,
    /// The slowest typematic setting.
    pub key_repeat_minimum: TypematicParameters,
    /// The fastest typematic setting.
    pub key_repeat_maximum: TypematicParameters,
}

impl KeyboardAttributes {
    /// Bytes on the wire.
    pub const LEN: usize = 28;

    /// What this driver reports: an enhanced 101-key keyboard in scan code set 1, the typematic
    /// limits of `ntddkbd.h`.
    pub const SYNTHETIC: Self = Self {
        kind: 4,
        subtype: 0,
        keyboard_mode: 1,
        number_of_function_keys: 12,
        number_of_indicators: 3,
        number_of_keys_total: 101,
        input_data_queue_length: 100,
        key_repeat_minimum: TypematicParameters {
            unit_id: 0,
            rate: TYPEMATIC_RATE_MINIMUM,
            delay: TYPEMATIC_DELAY_MINIMUM,
        },
        key_repeat_maximum: TypematicParameters {
            unit_id: 0,
            rate: TYPEMATIC_RATE_MAXIMUM,
            delay: TYPEMATIC_DELAY_MAXIMUM,
        },
    };

    /// Writes the structure into an IOCTL output buffer; returns the bytes written.
    #[must_use]
    pub fn write(&self, out: &mut [u8]) -> Option<usize> {
        if out.len() < Self::LEN {
            return None;
        }
        *out.get_mut(0)? = self.kind;
        *out.get_mut(1)? = self.subtype;
        write_u16(out, 2, self.keyboard_mode)?;
        write_u16(out, 4, self.number_of_function_keys)?;
        write_u16(out, 6, self.number_of_indicators)?;
        write_u16(out, 8, self.number_of_keys_total)?;
        write_u16(out, 10, 0)?;
        out.get_mut(12..16)?
            .copy_from_slice(&self.input_data_queue_length.to_le_bytes());
        let _ = self.key_repeat_minimum.write(out.get_mut(16..22)?)?;
        let _ = self.key_repeat_maximum.write(out.get_mut(22..28)?)?;
        Some(Self::LEN)
    }
}

fn read_u16(bytes: &[u8], offset: usize) -> Option<u16> {
    let b = bytes.get(offset..offset.checked_add(2)?)?;
    Some(u16::from_le_bytes(b.try_into().ok()?))
}

fn write_u16(out: &mut [u8], offset: usize, value: u16) -> Option<()> {
    out.get_mut(offset..offset.checked_add(2)?)?
        .copy_from_slice(&value.to_le_bytes());
    Some(())
}

/// The keyboard settings kbdclass reads and writes through the port (atomics: IOCTLs may come
/// at DISPATCH_LEVEL, concurrently with the receive path).
///
/// The synthetic keyboard protocol has no typematic message: the host does its own key repeat,
/// so the typematic setting is kept and reported back, nothing more. The indicators are also
/// forwarded to the host, by [`crate::client::Keyboard::set_indicators`].
#[derive(Debug)]
pub struct KeyboardSettings {
    indicators: AtomicU16,
    rate: AtomicU16,
    delay: AtomicU16,
}

impl Default for KeyboardSettings {
    fn default() -> Self {
        Self::new()
    }
}

impl KeyboardSettings {
    /// No indicator on; the default typematic rate and delay.
    #[must_use]
    pub const fn new() -> Self {
        Self {
            indicators: AtomicU16::new(0),
            rate: AtomicU16::new(TYPEMATIC_RATE_DEFAULT),
            delay: AtomicU16::new(TYPEMATIC_DELAY_DEFAULT),
        }
    }

    /// The indicators last set (masked with [`LED_MASK`]).
    #[must_use]
    pub fn indicators(&self) -> IndicatorParameters {
        IndicatorParameters {
            unit_id: 0,
            led_flags: self.indicators.load(Ordering::Acquire),
        }
    }

    /// Records new indicators; returns the masked flags.
    pub fn store_indicators(&self, led_flags: u16) -> u16 {
        let masked = led_flags & LED_MASK;
        self.indicators.store(masked, Ordering::Release);
        masked
    }

    /// The typematic setting.
    #[must_use]
    pub fn typematic(&self) -> TypematicParameters {
        TypematicParameters {
            unit_id: 0,
            rate: self.rate.load(Ordering::Acquire),
            delay: self.delay.load(Ordering::Acquire),
        }
    }

    /// Sets the typematic rate and delay.
    ///
    /// # Errors
    /// [`TypematicOutOfRange`] (nothing changed) when either is outside the `ntddkbd.h`
    /// limits.
    pub fn set_typematic(&self, params: TypematicParameters) -> Result<(), TypematicOutOfRange> {
        let rate_ok = (TYPEMATIC_RATE_MINIMUM..=TYPEMATIC_RATE_MAXIMUM).contains(&params.rate);
        let delay_ok = (TYPEMATIC_DELAY_MINIMUM..=TYPEMATIC_DELAY_MAXIMUM).contains(&params.delay);
        if !rate_ok || !delay_ok {
            return Err(TypematicOutOfRange);
        }
        self.rate.store(params.rate, Ordering::Release);
        self.delay.store(params.delay, Ordering::Release);
        Ok(())
    }
}

/// A typematic rate or delay outside the `ntddkbd.h` limits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TypematicOutOfRange;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_match_the_headers() {
        assert_eq!(IOCTL_INTERNAL_KEYBOARD_CONNECT, 0x000b_0203);
        assert_eq!(IOCTL_INTERNAL_KEYBOARD_DISCONNECT, 0x000b_0403);
        assert_eq!(IOCTL_KEYBOARD_QUERY_ATTRIBUTES, 0x000b_0000);
        assert_eq!(IOCTL_KEYBOARD_SET_TYPEMATIC, 0x000b_0004);
        assert_eq!(IOCTL_KEYBOARD_SET_INDICATORS, 0x000b_0008);
        assert_eq!(IOCTL_KEYBOARD_QUERY_TYPEMATIC, 0x000b_0020);
        assert_eq!(IOCTL_KEYBOARD_QUERY_INDICATORS, 0x000b_0040);
    }

    #[test]
    fn structures_encode() {
        let mut out = [0xff_u8; 28];
        assert_eq!(KeyboardAttributes::SYNTHETIC.write(&mut out), Some(28));
        assert_eq!(&out[..12], &[4, 0, 1, 0, 12, 0, 3, 0, 101, 0, 0, 0]);
        assert_eq!(&out[12..16], &100_u32.to_le_bytes());
        assert_eq!(KeyboardAttributes::SYNTHETIC.write(&mut out[..27]), None);
        let t = TypematicParameters {
            unit_id: 0,
            rate: 10,
            delay: 500,
        };
        let mut buf = [0_u8; 6];
        assert_eq!(t.write(&mut buf), Some(6));
        assert_eq!(TypematicParameters::parse(&buf), Some(t));
        assert_eq!(TypematicParameters::parse(&buf[..5]), None);
        let settings = KeyboardSettings::new();
        assert!(settings.set_typematic(t).is_ok());
        assert_eq!(settings.typematic(), t);
        assert!(
            settings
                .set_typematic(TypematicParameters { rate: 31, ..t })
                .is_err()
        );
        assert_eq!(settings.typematic(), t);
        assert_eq!(settings.store_indicators(0x8007), 7);
    }
}
