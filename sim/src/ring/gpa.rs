//! GPA-direct packets (type 9, spec §1.5): encoding the range array and parsing it back.
//!
//! Layout of the type-specific header (after the 16-byte descriptor):
//! `u32 reserved, u32 range_count`, then `range_count` records of
//! `u32 byte_count, u32 byte_offset, u64 pfn[ceil((byte_offset + byte_count) / 4096)]`.

use zerocopy::little_endian::{U32, U64};
use zerocopy::{FromBytes, IntoBytes};

use super::PAGE_SIZE;
use super::RingError;
use super::wire::{WireGpaDirectHeader, WireGpaRange};

/// Largest valid `byte_offset` of a GPA range (the offset applies to the first page only).
const MAX_BYTE_OFFSET: u32 = 0xfff;

/// Number of PFNs a range with this offset and length covers:
/// `ceil((byte_offset + byte_count) / 4096)`. Computed in `u64`, so it never overflows.
#[must_use]
pub const fn pfn_count(byte_offset: u32, byte_count: u32) -> u64 {
    (byte_offset as u64 + byte_count as u64).div_ceil(PAGE_SIZE as u64)
}

/// One range to encode into a GPA-direct header: `byte_count` bytes starting `byte_offset` bytes
/// into the page `pfns[0]`, continuing through the following PFNs.
///
/// Invariants checked by the encoder: `byte_count != 0`, `byte_offset <= 0xfff`, and
/// `pfns.len() == pfn_count(byte_offset, byte_count)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GpaRangeSpec<'a> {
    /// Offset into the first page, in bytes (0..=0xfff).
    pub byte_offset: u32,
    /// Length of the range, in bytes (non-zero).
    pub byte_count: u32,
    /// Guest page frame numbers (4 KiB pages) of the range, in order.
    pub pfns: &'a [u64],
}

fn check_spec(index: u32, spec: &GpaRangeSpec<'_>) -> Result<(), RingError> {
    if spec.byte_count == 0 {
        return Err(RingError::GpaZeroByteCount { range: index });
    }
    if spec.byte_offset > MAX_BYTE_OFFSET {
        return Err(RingError::GpaByteOffsetTooLarge {
            range: index,
            byte_offset: spec.byte_offset,
        });
    }
    let expected = pfn_count(spec.byte_offset, spec.byte_count);
    if u64::try_from(spec.pfns.len()).ok() != Some(expected) {
        return Err(RingError::GpaPfnCountMismatch {
            range: index,
            expected,
            actual: spec.pfns.len(),
        });
    }
    Ok(())
}

/// Encoded length of the GPA-direct header for `ranges`, in bytes (always a multiple of 8):
/// `8 + Σ (8 + 8 × pfns)`.
///
/// # Errors
/// [`RingError::GpaNoRanges`] for an empty list; [`RingError::GpaZeroByteCount`],
/// [`RingError::GpaByteOffsetTooLarge`] or [`RingError::GpaPfnCountMismatch`] for a bad range;
/// [`RingError::PacketTooLarge`] if the header alone exceeds
/// [`MAX_PACKET_LEN`](super::MAX_PACKET_LEN).
pub fn gpa_direct_header_len(ranges: &[GpaRangeSpec<'_>]) -> Result<usize, RingError> {
    if ranges.is_empty() {
        return Err(RingError::GpaNoRanges);
    }
    let too_large = RingError::PacketTooLarge {
        len: usize::MAX,
        max: super::MAX_PACKET_LEN as u32,
    };
    let mut len = size_of::<WireGpaDirectHeader>();
    for (i, spec) in ranges.iter().enumerate() {
        let index = u32::try_from(i).map_err(|_| too_large)?;
        check_spec(index, spec)?;
        let pfn_bytes = spec.pfns.len().checked_mul(8).ok_or(too_large)?;
        len = len
            .checked_add(size_of::<WireGpaRange>())
            .and_then(|l| l.checked_add(pfn_bytes))
            .ok_or(too_large)?;
        if len > super::MAX_PACKET_LEN {
            return Err(RingError::PacketTooLarge {
                len,
                max: super::MAX_PACKET_LEN as u32,
            });
        }
    }
    Ok(len)
}

/// Appends `bytes` to `out` at `*pos`.
fn put(out: &mut [u8], pos: &mut usize, bytes: &[u8]) -> Option<()> {
    let end = pos.checked_add(bytes.len())?;
    out.get_mut(*pos..end)?.copy_from_slice(bytes);
    *pos = end;
    Some(())
}

/// Encodes the GPA-direct header for `ranges` into the front of `out` (reserved word 0) and
/// returns its length in bytes. Does not allocate; pass the result as
/// [`OutgoingPacket::header`](super::OutgoingPacket::header) of a [`PacketType::GpaDirect`]
/// packet.
///
/// [`PacketType::GpaDirect`]: super::PacketType::GpaDirect
///
/// # Errors
/// Those of [`gpa_direct_header_len`], and [`RingError::BufferTooSmall`] if `out` is shorter than
/// the encoded length (nothing is written then).
pub fn encode_gpa_direct_header(
    ranges: &[GpaRangeSpec<'_>],
    out: &mut [u8],
) -> Result<usize, RingError> {
    let needed = gpa_direct_header_len(ranges)?;
    let too_small = RingError::BufferTooSmall {
        needed,
        len: out.len(),
    };
    if out.len() < needed {
        return Err(too_small);
    }
    let count = u32::try_from(ranges.len()).map_err(|_| too_small)?;
    let header = WireGpaDirectHeader {
        reserved: U32::new(0),
        range_count: U32::new(count),
    };
    let mut pos = 0;
    put(out, &mut pos, header.as_bytes()).ok_or(too_small)?;
    for spec in ranges {
        let range = WireGpaRange {
            byte_count: U32::new(spec.byte_count),
            byte_offset: U32::new(spec.byte_offset),
        };
        put(out, &mut pos, range.as_bytes()).ok_or(too_small)?;
        for &pfn in spec.pfns {
            put(out, &mut pos, &pfn.to_le_bytes()).ok_or(too_small)?;
        }
    }
    Ok(pos)
}

/// Validates a received GPA-direct header area (`offset8 * 8 - 16` bytes after the descriptor)
/// and returns an iterator over its ranges plus the number of bytes the ranges occupy (the rest
/// of the area, if any, is ignored by readers).
pub(crate) fn parse(header: &[u8], offset8: u16) -> Result<(GpaRanges<'_>, usize), RingError> {
    let Ok((fixed, mut rest)) = WireGpaDirectHeader::ref_from_prefix(header) else {
        return Err(RingError::GpaHeaderTruncated { offset8 });
    };
    let count = fixed.range_count.get();
    if count == 0 {
        return Err(RingError::GpaNoRanges);
    }
    let ranges = rest;
    for index in 0..count {
        let Ok((range, after)) = WireGpaRange::ref_from_prefix(rest) else {
            return Err(RingError::GpaRangeTruncated { range: index });
        };
        let byte_count = range.byte_count.get();
        let byte_offset = range.byte_offset.get();
        if byte_count == 0 {
            return Err(RingError::GpaZeroByteCount { range: index });
        }
        if byte_offset > MAX_BYTE_OFFSET {
            return Err(RingError::GpaByteOffsetTooLarge {
                range: index,
                byte_offset,
            });
        }
        let needed = pfn_count(byte_offset, byte_count);
        let available = after.len() / 8;
        let pfn_bytes = usize::try_from(needed)
            .ok()
            .and_then(|n| n.checked_mul(8))
            .filter(|&b| b <= after.len());
        let Some(pfn_bytes) = pfn_bytes else {
            return Err(RingError::GpaTooFewPfns {
                range: index,
                needed,
                available,
            });
        };
        let Some((_, next)) = after.split_at_checked(pfn_bytes) else {
            return Err(RingError::GpaTooFewPfns {
                range: index,
                needed,
                available,
            });
        };
        rest = next;
    }
    let used = header.len() - rest.len();
    Ok((
        GpaRanges {
            bytes: ranges,
            remaining: count,
        },
        used,
    ))
}

/// The PFN array of one received GPA range: little-endian `u64`s borrowed from the caller's packet
/// buffer (which need not be 8-aligned, hence a view rather than `&[u64]`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Pfns<'a>(&'a [U64]);

impl<'a> Pfns<'a> {
    /// Number of PFNs.
    #[must_use]
    pub const fn len(&self) -> usize {
        self.0.len()
    }

    /// True if there are no PFNs (never the case for a validated range).
    #[must_use]
    pub const fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The PFN at `index`, or `None` past the end.
    #[must_use]
    pub fn get(&self, index: usize) -> Option<u64> {
        self.0.get(index).map(|p| p.get())
    }

    /// Iterates over the PFNs in order.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = u64> + DoubleEndedIterator + 'a {
        self.0.iter().map(|p| p.get())
    }

    /// True if the PFNs equal `other` element by element.
    #[must_use]
    pub fn eq_slice(&self, other: &[u64]) -> bool {
        self.len() == other.len() && self.iter().zip(other).all(|(a, &b)| a == b)
    }
}

/// One received GPA range: `byte_count` bytes starting at `byte_offset` in page `pfns[0]`.
/// Validated: `byte_count != 0`, `byte_offset <= 0xfff`, `pfns.len() == pfn_count(...)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GpaRange<'a> {
    /// Offset into the first page, in bytes (0..=0xfff).
    pub byte_offset: u32,
    /// Length of the range, in bytes (non-zero).
    pub byte_count: u32,
    /// The range's page frame numbers.
    pub pfns: Pfns<'a>,
}

/// Iterator over the validated ranges of a received GPA-direct packet; yields
/// `range_count` items without allocating.
#[derive(Clone, Debug)]
pub struct GpaRanges<'a> {
    /// Range records not yet yielded (starting with the next one).
    bytes: &'a [u8],
    /// Ranges not yet yielded.
    remaining: u32,
}

impl<'a> GpaRanges<'a> {
    /// Ranges left to yield (the packet's `range_count` before iteration starts).
    #[must_use]
    pub const fn remaining(&self) -> u32 {
        self.remaining
    }
}

impl<'a> Iterator for GpaRanges<'a> {
    type Item = GpaRange<'a>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.remaining == 0 {
            return None;
        }
        // The bytes were validated by `parse`; any failure here just ends the iteration.
        let parsed = (|| {
            let (range, after) = WireGpaRange::ref_from_prefix(self.bytes).ok()?;
            let byte_count = range.byte_count.get();
            let byte_offset = range.byte_offset.get();
            let n = usize::try_from(pfn_count(byte_offset, byte_count)).ok()?;
            let (pfns, rest) = <[U64]>::ref_from_prefix_with_elems(after, n).ok()?;
            Some((
                GpaRange {
                    byte_offset,
                    byte_count,
                    pfns: Pfns(pfns),
                },
                rest,
            ))
        })();
        match parsed {
            Some((range, rest)) => {
                self.bytes = rest;
                self.remaining -= 1;
                Some(range)
            }
            None => {
                self.remaining = 0;
                None
            }
        }
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let n = self.remaining as usize;
        (n, Some(n))
    }
}

impl ExactSizeIterator for GpaRanges<'_> {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encode_then_parse() {
        let a = [0x1000u64, 0x1001];
        let b = [0x2222u64];
        let ranges = [
            GpaRangeSpec {
                byte_offset: 0x800,
                byte_count: 4096,
                pfns: &a,
            },
            GpaRangeSpec {
                byte_offset: 0,
                byte_count: 1,
                pfns: &b,
            },
        ];
        assert_eq!(gpa_direct_header_len(&ranges).unwrap(), 8 + 8 + 16 + 8 + 8);
        let mut buf = [0u8; 64];
        let n = encode_gpa_direct_header(&ranges, &mut buf).unwrap();
        assert_eq!(n, 48);
        assert_eq!(&buf[4..8], &2u32.to_le_bytes());
        let (mut it, used) = parse(&buf[..n], 8).unwrap();
        assert_eq!(used, n);
        assert_eq!(it.len(), 2);
        let r0 = it.next().unwrap();
        assert_eq!((r0.byte_offset, r0.byte_count), (0x800, 4096));
        assert!(r0.pfns.eq_slice(&a));
        let r1 = it.next().unwrap();
        assert!(r1.pfns.eq_slice(&b));
        assert!(it.next().is_none());
    }

    #[test]
    fn encoder_rejects_bad_ranges() {
        let one = [1u64];
        let spec = |byte_offset, byte_count, pfns| GpaRangeSpec {
            byte_offset,
            byte_count,
            pfns,
        };
        let mut buf = [0u8; 64];
        assert_eq!(
            encode_gpa_direct_header(&[], &mut buf),
            Err(RingError::GpaNoRanges)
        );
        assert_eq!(
            encode_gpa_direct_header(&[spec(0, 0, &one)], &mut buf),
            Err(RingError::GpaZeroByteCount { range: 0 })
        );
        assert_eq!(
            encode_gpa_direct_header(&[spec(0x1000, 1, &one)], &mut buf),
            Err(RingError::GpaByteOffsetTooLarge {
                range: 0,
                byte_offset: 0x1000
            })
        );
        assert_eq!(
            encode_gpa_direct_header(&[spec(0xfff, 2, &one)], &mut buf),
            Err(RingError::GpaPfnCountMismatch {
                range: 0,
                expected: 2,
                actual: 1
            })
        );
        assert_eq!(
            encode_gpa_direct_header(&[spec(0, 1, &one)], &mut buf[..23]),
            Err(RingError::BufferTooSmall {
                needed: 24,
                len: 23
            })
        );
    }

    #[test]
    fn large_offset_spans_two_pages() {
        assert_eq!(pfn_count(0xfff, 1), 1);
        assert_eq!(pfn_count(0xfff, 2), 2);
        assert_eq!(pfn_count(0, 4096), 1);
        assert_eq!(pfn_count(0, 4097), 2);
        assert_eq!(pfn_count(0xfff, u32::MAX), 1_048_577);
    }
}
