//! Transfer-page packets (type 7, spec §1.6): parsing only.
//!
//! Layout of the type-specific header (after the 16-byte descriptor):
//! `u16 pageset_id, u8 sender_owns_set, u8 reserved, u32 range_count`, then `range_count`
//! records of `u32 byte_count, u32 byte_offset`. The ranges index into a buffer that a device
//! protocol registered earlier; the ring does not interpret them.
//!
//! Validation mirrors GPA-direct: the 8-byte header must fit (`offset8 >= 3`), `range_count` must
//! be at least 1, and the ranges must fit inside the header area (`offset8 * 8`). Requiring at
//! least one range is this emulator's choice (the spec only says "analogous" to GPA-direct).

use zerocopy::FromBytes;

use super::RingError;
use super::wire::{WireTransferPageHeader, WireTransferPageRange};

/// Validates a received transfer-page header area and returns its view plus the bytes the header
/// and ranges occupy.
pub(crate) fn parse(header: &[u8], offset8: u16) -> Result<(TransferPages<'_>, usize), RingError> {
    let Ok((fixed, rest)) = WireTransferPageHeader::ref_from_prefix(header) else {
        return Err(RingError::TransferPageHeaderTruncated { offset8 });
    };
    let range_count = fixed.range_count.get();
    if range_count == 0 {
        return Err(RingError::TransferPageNoRanges);
    }
    let available = rest.len() / size_of::<WireTransferPageRange>();
    let truncated = RingError::TransferPageRangesTruncated {
        range_count,
        available,
    };
    let n = usize::try_from(range_count).map_err(|_| truncated)?;
    let (ranges, _) =
        <[WireTransferPageRange]>::ref_from_prefix_with_elems(rest, n).map_err(|_| truncated)?;
    let used = size_of::<WireTransferPageHeader>() + size_of_val(ranges);
    Ok((
        TransferPages {
            pageset_id: fixed.pageset_id.get(),
            sender_owns_set: fixed.sender_owns_set,
            ranges,
        },
        used,
    ))
}

/// The validated type-specific header of a received transfer-page packet.
#[derive(Clone, Copy, Debug)]
pub struct TransferPages<'a> {
    pageset_id: u16,
    sender_owns_set: u8,
    ranges: &'a [WireTransferPageRange],
}

impl<'a> TransferPages<'a> {
    /// ID of the transfer page set the ranges index into (netvsc: 0xcafe).
    #[must_use]
    pub const fn pageset_id(&self) -> u16 {
        self.pageset_id
    }

    /// The raw `sender_owns_set` byte.
    #[must_use]
    pub const fn sender_owns_set(&self) -> u8 {
        self.sender_owns_set
    }

    /// Number of ranges (at least 1).
    #[must_use]
    pub const fn range_count(&self) -> usize {
        self.ranges.len()
    }

    /// Iterates over the ranges without allocating.
    #[must_use]
    pub fn ranges(&self) -> TransferPageRanges<'a> {
        TransferPageRanges {
            inner: self.ranges.iter(),
        }
    }
}

/// One transfer-page range: `byte_count` bytes at `byte_offset` in the page set.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TransferPageRange {
    /// Length of the range, in bytes.
    pub byte_count: u32,
    /// Offset of the range in the page set, in bytes.
    pub byte_offset: u32,
}

/// Iterator over the ranges of a transfer-page packet.
#[derive(Clone, Debug)]
pub struct TransferPageRanges<'a> {
    inner: core::slice::Iter<'a, WireTransferPageRange>,
}

impl Iterator for TransferPageRanges<'_> {
    type Item = TransferPageRange;

    fn next(&mut self) -> Option<Self::Item> {
        self.inner.next().map(|r| TransferPageRange {
            byte_count: r.byte_count.get(),
            byte_offset: r.byte_offset.get(),
        })
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        self.inner.size_hint()
    }
}

impl ExactSizeIterator for TransferPageRanges<'_> {}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(count: u32, ranges: &[(u32, u32)]) -> Vec<u8> {
        let mut v = vec![0xfe, 0xca, 1, 0xAA];
        v.extend_from_slice(&count.to_le_bytes());
        for &(c, o) in ranges {
            v.extend_from_slice(&c.to_le_bytes());
            v.extend_from_slice(&o.to_le_bytes());
        }
        v
    }

    #[test]
    fn parses_ranges() {
        let h = header(2, &[(100, 0), (200, 4096)]);
        let (tp, used) = parse(&h, 5).unwrap();
        assert_eq!(used, 24);
        assert_eq!(tp.pageset_id(), 0xcafe);
        assert_eq!(tp.sender_owns_set(), 1);
        let r: Vec<_> = tp.ranges().collect();
        assert_eq!(
            r,
            [
                TransferPageRange {
                    byte_count: 100,
                    byte_offset: 0
                },
                TransferPageRange {
                    byte_count: 200,
                    byte_offset: 4096
                }
            ]
        );
    }

    #[test]
    fn rejects_bad_headers() {
        assert_eq!(
            parse(&[], 2).unwrap_err(),
            RingError::TransferPageHeaderTruncated { offset8: 2 }
        );
        assert_eq!(
            parse(&header(0, &[]), 3).unwrap_err(),
            RingError::TransferPageNoRanges
        );
        assert_eq!(
            parse(&header(3, &[(1, 1)]), 4).unwrap_err(),
            RingError::TransferPageRangesTruncated {
                range_count: 3,
                available: 1
            }
        );
    }
}
