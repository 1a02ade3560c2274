//! Base Windows types the KMCL signatures use, and the three KMCL handles.
//!
//! With the `wdk` feature on a Windows target inside a KMDF/WDM build graph, the base types are
//! wdk-sys's own (so values flow to and from other WDK calls without casts). Everywhere else they
//! are portable `#[repr(C)]` twins with the same names, fields and layouts, so the emulator and
//! the tests run on any host. `sys::layout` proves the twins' layouts at compile time.
//!
//! Code that must build both ways uses only what both forms have: wdk-sys's `GUID` implements
//! neither `PartialEq` nor `Debug`, so GUIDs are compared and printed through [`Guid`].

use core::ffi::c_void;

/// `PVOID`: an untyped pointer.
pub type PVOID = *mut c_void;

/// `HANDLE`: an opaque kernel or VMBus handle (server-side slots only).
pub type HANDLE = *mut c_void;

#[cfg(kmcl_wdk)]
pub use wdk_sys::{
    BOOLEAN, DEVICE_OBJECT, GUID, INTERFACE, LARGE_INTEGER, MDL, NTSTATUS, PFN_NUMBER,
    PINTERFACE_DEREFERENCE, PINTERFACE_REFERENCE, UNICODE_STRING,
};

#[cfg(not(kmcl_wdk))]
pub use portable::*;

/// Portable twins of the wdk-sys base types (ntdef.h / wdm.h layouts).
#[cfg(not(kmcl_wdk))]
#[allow(non_camel_case_types, non_snake_case)]
mod portable {
    use core::ffi::c_void;

    /// `NTSTATUS`: a 32-bit signed status code (`ntdef.h`).
    pub type NTSTATUS = i32;

    /// `BOOLEAN`: one byte, `0` is FALSE and anything else TRUE (`ntdef.h`).
    pub type BOOLEAN = u8;

    /// `PFN_NUMBER`: a physical page frame number (`wdm.h`): `ULONG64` on 64-bit targets.
    #[cfg(target_pointer_width = "64")]
    pub type PFN_NUMBER = u64;

    /// `PFN_NUMBER`: a physical page frame number (`wdm.h`): `ULONG` on 32-bit targets.
    #[cfg(target_pointer_width = "32")]
    pub type PFN_NUMBER = u32;

    /// `PINTERFACE_REFERENCE`: `VOID (*)(PVOID Context)`, no explicit calling convention.
    ///
    /// `extern "C"`, exactly as wdk-sys declares it, so that the same Rust function type fits
    /// with and without the WDK (see [`crate::sys`]'s calling-convention rule).
    pub type PINTERFACE_REFERENCE = Option<unsafe extern "C" fn(Context: *mut c_void)>;

    /// `PINTERFACE_DEREFERENCE`: `VOID (*)(PVOID Context)`, no explicit calling convention;
    /// `extern "C"` as in wdk-sys.
    pub type PINTERFACE_DEREFERENCE = Option<unsafe extern "C" fn(Context: *mut c_void)>;

    /// `GUID`: 16 bytes, `{Data1-Data2-Data3-Data4[0..2]-Data4[2..8]}` (`guiddef.h`).
    #[repr(C)]
    #[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
    pub struct GUID {
        /// First 8 hex digits.
        pub Data1: u32,
        /// Next 4 hex digits.
        pub Data2: u16,
        /// Next 4 hex digits.
        pub Data3: u16,
        /// Remaining 16 hex digits, in string order.
        pub Data4: [u8; 8],
    }

    /// `INTERFACE`: the common header of every driver-defined interface (`wdm.h`), 32 bytes on
    /// 64-bit targets.
    #[repr(C)]
    #[derive(Clone, Copy, Debug)]
    pub struct INTERFACE {
        /// Size in bytes of the whole interface structure the caller passes.
        pub Size: u16,
        /// Requested (on input) / provided (on output) interface version.
        pub Version: u16,
        /// Provider context passed to `InterfaceReference` / `InterfaceDereference`.
        pub Context: *mut c_void,
        /// Takes a reference on the interface.
        pub InterfaceReference: PINTERFACE_REFERENCE,
        /// Releases a reference on the interface.
        pub InterfaceDereference: PINTERFACE_DEREFERENCE,
    }

    /// The two 32-bit halves of a `LARGE_INTEGER`.
    #[repr(C)]
    #[derive(Clone, Copy, Debug, Default)]
    pub struct LARGE_INTEGER_PARTS {
        /// Low 32 bits.
        pub LowPart: u32,
        /// High 32 bits, signed.
        pub HighPart: i32,
    }

    /// `LARGE_INTEGER`: a signed 64-bit value viewed as a whole or as two halves (`ntdef.h`).
    /// KMCL timeouts use the kernel convention: negative is relative, in 100 ns units.
    #[repr(C)]
    #[derive(Clone, Copy)]
    pub union LARGE_INTEGER {
        /// The halves, as the anonymous struct member.
        pub u: LARGE_INTEGER_PARTS,
        /// The whole signed 64-bit value.
        pub QuadPart: i64,
    }
    /// Shows the whole value (`QuadPart`).
    impl core::fmt::Debug for LARGE_INTEGER {
        fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
            // SAFETY: both members are plain integers covering the same 8 bytes, so every bit
            // pattern is a valid `QuadPart`.
            let whole = unsafe { self.QuadPart };
            f.debug_tuple("LARGE_INTEGER").field(&whole).finish()
        }
    }

    /// `UNICODE_STRING`: a counted UTF-16 string (`ntdef.h`). Lengths are in bytes.
    #[repr(C)]
    #[derive(Clone, Copy, Debug)]
    pub struct UNICODE_STRING {
        /// Bytes in use, not counting any terminator.
        pub Length: u16,
        /// Bytes allocated at `Buffer`.
        pub MaximumLength: u16,
        /// The UTF-16 code units.
        pub Buffer: *mut u16,
    }

    /// `MDL`: memory descriptor list header (`wdm.h`). The PFN array (`PFN_NUMBER` per page
    /// spanned by `StartVa + ByteOffset .. + ByteCount`) follows the header in memory.
    #[repr(C)]
    #[derive(Clone, Copy, Debug)]
    pub struct MDL {
        /// Next MDL in a chain, or null.
        pub Next: *mut MDL,
        /// Bytes of this header plus its PFN array.
        pub Size: i16,
        /// `MDL_*` flags.
        pub MdlFlags: i16,
        /// Owning process (`PEPROCESS`), or null.
        pub Process: *mut c_void,
        /// System virtual address when mapped (`MDL_MAPPED_TO_SYSTEM_VA`).
        pub MappedSystemVa: *mut c_void,
        /// Page-aligned virtual address of the first page.
        pub StartVa: *mut c_void,
        /// Length of the described buffer, in bytes.
        pub ByteCount: u32,
        /// Offset of the buffer within the first page, in bytes.
        pub ByteOffset: u32,
    }

    /// `DEVICE_OBJECT` (`wdm.h`): the leading documented fields, then the rest of the real
    /// structure kept opaque so that the size matches (0x150 bytes on x64). KMCL only ever takes
    /// pointers to it.
    #[repr(C)]
    #[derive(Clone, Copy, Debug)]
    pub struct DEVICE_OBJECT {
        /// `IO_TYPE_DEVICE` (3).
        pub Type: i16,
        /// Size in bytes of this object (without the extension).
        pub Size: u16,
        /// Open handle count.
        pub ReferenceCount: i32,
        /// Owning `DRIVER_OBJECT`.
        pub DriverObject: *mut c_void,
        /// Next device object of the same driver.
        pub NextDevice: *mut DEVICE_OBJECT,
        /// Device attached on top of this one.
        pub AttachedDevice: *mut DEVICE_OBJECT,
        /// Current IRP for StartIo drivers.
        pub CurrentIrp: *mut c_void,
        /// `PIO_TIMER`.
        pub Timer: *mut c_void,
        /// `DO_*` flags.
        pub Flags: u32,
        /// `FILE_*` device characteristics.
        pub Characteristics: u32,
        /// `PVPB`.
        pub Vpb: *mut c_void,
        /// Driver-defined device extension.
        pub DeviceExtension: *mut c_void,
        /// `FILE_DEVICE_*` type.
        pub DeviceType: u32,
        /// IRP stack locations needed.
        pub StackSize: i8,
        /// The remaining fields (`Queue` .. `Reserved`), not used through this crate.
        pub Opaque: [u8; OPAQUE_TAIL],
    }

    #[cfg(target_pointer_width = "64")]
    const OPAQUE_TAIL: usize = 0x150 - 0x4d;
    #[cfg(target_pointer_width = "32")]
    const OPAQUE_TAIL: usize = 0xb8 - 0x31;
}

/// Opaque target of a [`VMBCHANNEL`] handle (`DECLARE_HANDLE(VMBCHANNEL)`).
#[repr(C)]
#[derive(Debug)]
pub struct VMBCHANNEL__ {
    _opaque: [u8; 0],
    _not_send_sync: core::marker::PhantomData<(*mut u8, core::marker::PhantomPinned)>,
}

/// Opaque target of a [`VMBPACKET`] handle (`DECLARE_HANDLE(VMBPACKET)`).
#[repr(C)]
#[derive(Debug)]
pub struct VMBPACKET__ {
    _opaque: [u8; 0],
    _not_send_sync: core::marker::PhantomData<(*mut u8, core::marker::PhantomPinned)>,
}

/// Opaque target of a [`VMBPACKETCOMPLETION`] handle (`DECLARE_HANDLE(VMBPACKETCOMPLETION)`).
#[repr(C)]
#[derive(Debug)]
pub struct VMBPACKETCOMPLETION__ {
    _opaque: [u8; 0],
    _not_send_sync: core::marker::PhantomData<(*mut u8, core::marker::PhantomPinned)>,
}

/// A KMCL channel handle. Also used for caller-supplied channel storage
/// (`VmbChannelInitialize`, sized by `VmbSizeofChannel`).
pub type VMBCHANNEL = *mut VMBCHANNEL__;

/// A KMCL outgoing-packet handle. Also used for caller-supplied packet storage
/// (`VmbPacketInitialize`, sized by `VmbChannelSizeofPacket`).
pub type VMBPACKET = *mut VMBPACKET__;

/// The completion context of an incoming packet, handed to `EvtVmbChannelProcessPacket` and
/// consumed by `VmbChannelPacketComplete` / `VmbChannelPacketFail`.
pub type VMBPACKETCOMPLETION = *mut VMBPACKETCOMPLETION__;

/// `PDEVICE_OBJECT`.
pub type PDEVICE_OBJECT = *mut DEVICE_OBJECT;
/// `PMDL`.
pub type PMDL = *mut MDL;
/// `PPFN_NUMBER`.
pub type PPFN_NUMBER = *mut PFN_NUMBER;
/// A GUID you can compare, hash and print, whichever `GUID` type is in use (wdk-sys's has no
/// `PartialEq` or `Debug`): a transparent wrapper with the same layout.
#[repr(transparent)]
#[derive(Clone, Copy)]
pub struct Guid(pub GUID);

impl Guid {
    /// The GUID's 16 bytes in memory order (`Data1`..`Data3` little-endian, then `Data4`).
    #[must_use]
    pub const fn to_bytes(&self) -> [u8; 16] {
        let g = &self.0;
        let [a0, a1, a2, a3] = g.Data1.to_le_bytes();
        let [b0, b1] = g.Data2.to_le_bytes();
        let [c0, c1] = g.Data3.to_le_bytes();
        let [d0, d1, d2, d3, d4, d5, d6, d7] = g.Data4;
        [
            a0, a1, a2, a3, b0, b1, c0, c1, d0, d1, d2, d3, d4, d5, d6, d7,
        ]
    }
}

impl From<GUID> for Guid {
    fn from(guid: GUID) -> Self {
        Self(guid)
    }
}

impl PartialEq for Guid {
    fn eq(&self, other: &Self) -> bool {
        self.to_bytes() == other.to_bytes()
    }
}

impl Eq for Guid {}

impl core::hash::Hash for Guid {
    fn hash<S: core::hash::Hasher>(&self, state: &mut S) {
        self.to_bytes().hash(state);
    }
}

/// The registry form: `{xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx}`, lower case.
impl core::fmt::Display for Guid {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        let g = &self.0;
        let [d0, d1, d2, d3, d4, d5, d6, d7] = g.Data4;
        write!(
            f,
            "{{{:08x}-{:04x}-{:04x}-{d0:02x}{d1:02x}-{d2:02x}{d3:02x}{d4:02x}{d5:02x}{d6:02x}{d7:02x}}}",
            g.Data1, g.Data2, g.Data3
        )
    }
}

impl core::fmt::Debug for Guid {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        core::fmt::Display::fmt(self, f)
    }
}

/// `LPGUID`.
pub type LPGUID = *mut GUID;
/// `LPCGUID`.
pub type LPCGUID = *const GUID;
/// `PCUNICODE_STRING`.
pub type PCUNICODE_STRING = *const UNICODE_STRING;
/// `PLARGE_INTEGER`.
pub type PLARGE_INTEGER = *mut LARGE_INTEGER;
