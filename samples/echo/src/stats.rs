//! Allocation-free statistics a driver can keep at DISPATCH_LEVEL: a log-linear latency
//! histogram of atomics, from which the p50/p99 round-trip times are read.

use core::sync::atomic::{AtomicU64, Ordering};

/// Sub-buckets per power of two (16: each bucket spans at most 1/16 of its value, so a
/// percentile is exact to within 6.25 %).
const SUB_BITS: u32 = 4;
const SUB: u64 = 1 << SUB_BITS;
/// Values with their top bit above this share the last bucket (2^48 ns ≈ 78 hours).
const MAX_MSB: u32 = 47;
/// Number of buckets: 16 exact ones for 0..16, then 16 per power of two up to `MAX_MSB`.
const BUCKETS: usize = ((MAX_MSB - SUB_BITS + 2) as usize) << SUB_BITS;

/// A histogram of durations in nanoseconds. Recording is lock-free (a few relaxed atomic adds)
/// and callable at any IRQL; reading while recording gives a consistent-enough view for
/// reporting.
pub struct LatencyHistogram {
    buckets: [AtomicU64; BUCKETS],
    count: AtomicU64,
    sum: AtomicU64,
    min: AtomicU64,
    max: AtomicU64,
}

/// A summary of a [`LatencyHistogram`], in nanoseconds. Percentiles are bucket upper bounds
/// (never below the true value, at most 6.25 % above it), clamped to the maximum.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LatencySummary {
    /// Samples recorded.
    pub count: u64,
    /// Smallest sample (0 when empty).
    pub min_ns: u64,
    /// Mean (0 when empty).
    pub mean_ns: u64,
    /// Median.
    pub p50_ns: u64,
    /// 99th percentile.
    pub p99_ns: u64,
    /// Largest sample.
    pub max_ns: u64,
}

impl Default for LatencyHistogram {
    fn default() -> Self {
        Self::new()
    }
}

impl core::fmt::Debug for LatencyHistogram {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("LatencyHistogram")
            .field("summary", &self.summary())
            .finish()
    }
}

/// The bucket of `value`.
fn bucket_of(value: u64) -> usize {
    if value < SUB {
        return value as usize;
    }
    let msb = (63 - value.leading_zeros()).min(MAX_MSB + 1);
    if msb > MAX_MSB {
        return BUCKETS - 1;
    }
    let group = (msb - SUB_BITS + 1) as usize;
    let sub = ((value >> (msb - SUB_BITS)) & (SUB - 1)) as usize;
    (group << SUB_BITS) | sub
}

/// The largest value that falls in `bucket`.
fn bucket_high(bucket: usize) -> u64 {
    let group = (bucket >> SUB_BITS) as u32;
    let sub = (bucket as u64) & (SUB - 1);
    if group == 0 {
        return sub;
    }
    let shift = group - 1;
    let low = (SUB + sub) << shift;
    low.saturating_add((1_u64 << shift) - 1)
}

impl LatencyHistogram {
    /// An empty histogram.
    #[must_use]
    pub const fn new() -> Self {
        Self {
            buckets: [const { AtomicU64::new(0) }; BUCKETS],
            count: AtomicU64::new(0),
            sum: AtomicU64::new(0),
            min: AtomicU64::new(u64::MAX),
            max: AtomicU64::new(0),
        }
    }

    /// Records one sample. IRQL: any.
    pub fn record(&self, nanoseconds: u64) {
        if let Some(bucket) = self.buckets.get(bucket_of(nanoseconds)) {
            bucket.fetch_add(1, Ordering::Relaxed);
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        self.sum.fetch_add(nanoseconds, Ordering::Relaxed);
        self.min.fetch_min(nanoseconds, Ordering::Relaxed);
        self.max.fetch_max(nanoseconds, Ordering::Relaxed);
    }

    /// Forgets every sample (not atomic with respect to concurrent `record`s).
    pub fn reset(&self) {
        for bucket in &self.buckets {
            bucket.store(0, Ordering::Relaxed);
        }
        self.count.store(0, Ordering::Relaxed);
        self.sum.store(0, Ordering::Relaxed);
        self.min.store(u64::MAX, Ordering::Relaxed);
        self.max.store(0, Ordering::Relaxed);
    }

    /// Samples recorded.
    #[must_use]
    pub fn count(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }

    /// The value at or below which `per_mille`/1000 of the samples lie (e.g. 500 for the
    /// median, 990 for p99); 0 when empty.
    #[must_use]
    pub fn percentile(&self, per_mille: u32) -> u64 {
        let total: u64 = self.buckets.iter().map(|b| b.load(Ordering::Relaxed)).sum();
        if total == 0 {
            return 0;
        }
        let per_mille = u64::from(per_mille.min(1000));
        // Rank of the sample wanted, 1-based, rounded up.
        let rank = (total.saturating_mul(per_mille).div_ceil(1000)).max(1);
        let mut seen = 0_u64;
        for (index, bucket) in self.buckets.iter().enumerate() {
            seen = seen.saturating_add(bucket.load(Ordering::Relaxed));
            if seen >= rank {
                return bucket_high(index).min(self.max.load(Ordering::Relaxed));
            }
        }
        self.max.load(Ordering::Relaxed)
    }

    /// Count, min, mean, p50, p99 and max.
    #[must_use]
    pub fn summary(&self) -> LatencySummary {
        let count = self.count();
        if count == 0 {
            return LatencySummary::default();
        }
        LatencySummary {
            count,
            min_ns: self.min.load(Ordering::Relaxed),
            mean_ns: self.sum.load(Ordering::Relaxed) / count,
            p50_ns: self.percentile(500),
            p99_ns: self.percentile(990),
            max_ns: self.max.load(Ordering::Relaxed),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_monotonic_and_tight() {
        let mut last = 0;
        for v in (0..5000_u64).chain([1 << 20, (1 << 20) + 1, u64::MAX / 3, u64::MAX]) {
            let b = bucket_of(v);
            assert!(b >= last || v > 5000, "monotonic at {v}");
            assert!(b < BUCKETS);
            if v < 1 << 40 {
                assert!(bucket_high(b) >= v, "{v} above its bucket {b}");
                assert!(bucket_high(b) - v <= v / 16 + 1, "bucket of {v} too wide");
            }
            last = b;
        }
        assert_eq!(bucket_of(u64::MAX), BUCKETS - 1);
    }

    #[test]
    fn percentiles() {
        let h = LatencyHistogram::new();
        assert_eq!(h.summary(), LatencySummary::default());
        for v in 1..=1000_u64 {
            h.record(v * 1000);
        }
        let s = h.summary();
        assert_eq!(s.count, 1000);
        assert_eq!(s.min_ns, 1000);
        assert_eq!(s.max_ns, 1_000_000);
        assert_eq!(s.mean_ns, 500_500);
        assert!((500_000..=532_000).contains(&s.p50_ns), "{s:?}");
        assert!((990_000..=1_000_000).contains(&s.p99_ns), "{s:?}");
        h.reset();
        assert_eq!(h.count(), 0);
        assert_eq!(h.percentile(500), 0);
    }
}
