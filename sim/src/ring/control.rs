//! The 4096-byte control page (`struct hv_ring_buffer`, spec §1.2).

use core::mem::{offset_of, size_of};
use core::sync::atomic::AtomicU32;

use super::PAGE_SIZE;

/// The control page at the start of every ring, as laid out on the wire.
///
/// Every word is an atomic: both endpoints (and fault-injection code) access the page
/// concurrently, and the reserved words are atomics too so that a raw poke anywhere in the page is
/// never a data race.
#[repr(C, align(4096))]
pub(crate) struct ControlPage {
    /// Byte 0: byte offset in the data area where the next packet goes. Written by the writer.
    pub(crate) write_index: AtomicU32,
    /// Byte 4: byte offset of the next unread packet. Written by the reader.
    pub(crate) read_index: AtomicU32,
    /// Byte 8: non-zero asks the writer not to signal on empty→non-empty. Written by the reader.
    pub(crate) interrupt_mask: AtomicU32,
    /// Byte 12: non-zero means the writer is blocked until this many bytes are free. Written by
    /// the writer.
    pub(crate) pending_send_size: AtomicU32,
    /// Bytes 16..64: reserved.
    reserved1: [AtomicU32; 12],
    /// Byte 64: bit 0 = `feat_pending_send_sz`.
    pub(crate) feature_bits: AtomicU32,
    /// Bytes 68..4096: reserved.
    reserved2: [AtomicU32; 1007],
}

const _: () = {
    assert!(size_of::<ControlPage>() == PAGE_SIZE);
    assert!(align_of::<ControlPage>() == PAGE_SIZE);
    assert!(offset_of!(ControlPage, write_index) == 0);
    assert!(offset_of!(ControlPage, read_index) == 4);
    assert!(offset_of!(ControlPage, interrupt_mask) == 8);
    assert!(offset_of!(ControlPage, pending_send_size) == 12);
    assert!(offset_of!(ControlPage, reserved1) == 16);
    assert!(offset_of!(ControlPage, feature_bits) == 64);
    assert!(offset_of!(ControlPage, reserved2) == 68);
};

/// Bit 0 of the feature word: the endpoint implements pending-send-size flow control.
pub(crate) const FEATURE_PENDING_SEND_SZ: u32 = 1;

impl ControlPage {
    /// The 32-bit word at `byte_offset` (a multiple of 4 below 4096), or `None`.
    pub(crate) fn word_at(&self, byte_offset: usize) -> Option<&AtomicU32> {
        if !byte_offset.is_multiple_of(4) {
            return None;
        }
        match byte_offset / 4 {
            0 => Some(&self.write_index),
            1 => Some(&self.read_index),
            2 => Some(&self.interrupt_mask),
            3 => Some(&self.pending_send_size),
            16 => Some(&self.feature_bits),
            i @ 4..=15 => self.reserved1.get(i - 4),
            i => self.reserved2.get(i.checked_sub(17)?),
        }
    }

    /// The atomic behind a named control word.
    pub(crate) fn word(&self, word: ControlWord) -> &AtomicU32 {
        match word {
            ControlWord::WriteIndex => &self.write_index,
            ControlWord::ReadIndex => &self.read_index,
            ControlWord::InterruptMask => &self.interrupt_mask,
            ControlWord::PendingSendSize => &self.pending_send_size,
            ControlWord::FeatureBits => &self.feature_bits,
        }
    }
}

/// The named 32-bit words of the control page (spec §1.2), for raw inspection and fault
/// injection. Each value is little-endian on the wire.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ControlWord {
    /// Byte offset 0: `write_index`, written by the ring's writer.
    WriteIndex,
    /// Byte offset 4: `read_index`, written by the ring's reader.
    ReadIndex,
    /// Byte offset 8: `interrupt_mask`, written by the reader.
    InterruptMask,
    /// Byte offset 12: `pending_send_sz`, written by the writer.
    PendingSendSize,
    /// Byte offset 64: `feature_bits` (bit 0 = `feat_pending_send_sz`).
    FeatureBits,
}

impl ControlWord {
    /// Byte offset of the word in the control page.
    #[must_use]
    pub const fn byte_offset(self) -> usize {
        match self {
            Self::WriteIndex => 0,
            Self::ReadIndex => 4,
            Self::InterruptMask => 8,
            Self::PendingSendSize => 12,
            Self::FeatureBits => 64,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn named_words_match_word_at() {
        let page = ControlPage {
            write_index: AtomicU32::new(1),
            read_index: AtomicU32::new(2),
            interrupt_mask: AtomicU32::new(3),
            pending_send_size: AtomicU32::new(4),
            reserved1: [const { AtomicU32::new(0) }; 12],
            feature_bits: AtomicU32::new(5),
            reserved2: [const { AtomicU32::new(0) }; 1007],
        };
        for (word, value) in [
            (ControlWord::WriteIndex, 1),
            (ControlWord::ReadIndex, 2),
            (ControlWord::InterruptMask, 3),
            (ControlWord::PendingSendSize, 4),
            (ControlWord::FeatureBits, 5),
        ] {
            let a = page.word_at(word.byte_offset()).unwrap();
            assert!(core::ptr::eq(a, page.word(word)));
            assert_eq!(a.load(core::sync::atomic::Ordering::Relaxed), value);
        }
        assert!(page.word_at(4092).is_some());
        assert!(page.word_at(4096).is_none());
        assert!(page.word_at(2).is_none());
    }
}
