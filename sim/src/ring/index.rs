//! Index arithmetic of spec §1.3. All values are byte offsets into a data area of `size` bytes,
//! with `size` a multiple of 4096 no larger than 1 GiB.

/// Bytes a writer must always leave free so that full differs from empty.
pub(crate) const RESERVED_GAP: u32 = 8;

/// True if `index` is a valid ring index: 8-aligned and below `size`.
pub(crate) const fn is_valid(index: u32, size: u32) -> bool {
    index.is_multiple_of(8) && index < size
}

/// Bytes in flight between `read` and `write` (both valid indices).
pub(crate) const fn used(write: u32, read: u32, size: u32) -> u32 {
    if write >= read {
        write - read
    } else {
        // read < size, so size - read > 0 and size - read + write < size.
        size - read + write
    }
}

/// Bytes a writer may still use, after keeping the 8-byte gap (OpenVMM's `free`).
pub(crate) const fn free(write: u32, read: u32, size: u32) -> u32 {
    size.saturating_sub(used(write, read, size))
        .saturating_sub(RESERVED_GAP)
}

/// `index + n` modulo `size`, for a valid index and `n <= size`.
pub(crate) const fn advance(index: u32, n: u32, size: u32) -> u32 {
    // Both operands are at most 1 GiB, so the sum fits in u32.
    let sum = index.saturating_add(n);
    if sum >= size { sum - size } else { sum }
}

/// `n` rounded up to a multiple of 8, or `None` on overflow.
pub(crate) const fn round_up8(n: usize) -> Option<usize> {
    match n.checked_add(7) {
        Some(v) => Some(v & !7),
        None => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn used_and_free() {
        let size = 4096;
        assert_eq!(used(0, 0, size), 0);
        assert_eq!(free(0, 0, size), 4088);
        assert_eq!(used(16, 0, size), 16);
        assert_eq!(used(0, 4088, size), 8);
        assert_eq!(free(4080, 0, size), 8);
        assert_eq!(free(4088, 0, size), 0);
        assert_eq!(used(8, 16, size), 4088);
        assert_eq!(free(8, 16, size), 0);
    }

    #[test]
    fn advance_wraps() {
        assert_eq!(advance(4088, 8, 4096), 0);
        assert_eq!(advance(4080, 24, 4096), 8);
        assert_eq!(advance(0, 4096, 4096), 0);
        assert_eq!(advance(8, 16, 4096), 24);
    }

    #[test]
    fn validity() {
        assert!(is_valid(0, 4096));
        assert!(is_valid(4088, 4096));
        assert!(!is_valid(4096, 4096));
        assert!(!is_valid(4, 4096));
        assert!(!is_valid(u32::MAX, 4096));
    }

    #[test]
    fn rounding() {
        assert_eq!(round_up8(0), Some(0));
        assert_eq!(round_up8(1), Some(8));
        assert_eq!(round_up8(8), Some(8));
        assert_eq!(round_up8(17), Some(24));
        assert_eq!(round_up8(usize::MAX), None);
    }
}
