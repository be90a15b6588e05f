//! The log-linear srtt histogram: 8 exact buckets for 0..8 µs, then 8 linear sub-buckets per
//! power of two up to 2^24 µs (16.7 s). A bucket's width is at most 1/8 of its lower bound, so the
//! midpoint used as a quantile is within 6.25% of any value in the bucket.

/// Linear sub-buckets per power of two (3 mantissa bits).
const SUB_BUCKETS: u32 = 8;
/// log2 of [`SUB_BUCKETS`].
const SUB_BITS: u32 = 3;
/// The largest exponent with its own buckets; larger values land in the last bucket.
const EXP_MAX: u32 = 23;
/// Number of histogram buckets.
pub const SRTT_BUCKETS: usize = (SUB_BUCKETS + (EXP_MAX - SUB_BITS + 1) * SUB_BUCKETS) as usize;

/// Value of the RTT map: monotonic counters per client prefix, only ever increased by the BPF side
/// (the agent reads deltas).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RttValue {
    /// Samples per srtt bucket, see [`bucket_of`].
    pub buckets: [u32; SRTT_BUCKETS],
    /// Number of RTT samples.
    pub count: u64,
    /// Sum of the samples in µs.
    pub sum_us: u64,
    /// Lowest sample ever seen in µs (at least 1); 0 = none yet. Lifetime, not per interval.
    pub min_us: u32,
    /// Retransmitted segments.
    pub retrans: u32,
}

impl Default for RttValue {
    fn default() -> Self {
        RttValue::ZERO
    }
}

impl RttValue {
    /// No samples.
    pub const ZERO: RttValue = RttValue {
        buckets: [0; SRTT_BUCKETS],
        count: 0,
        sum_us: 0,
        min_us: 0,
        retrans: 0,
    };

    /// Records one sample the way the BPF side does (non-atomically: for tests and tools).
    pub fn record(&mut self, srtt_us: u32) {
        let b = bucket_of(srtt_us);
        self.buckets[b] = self.buckets[b].wrapping_add(1);
        self.count = self.count.wrapping_add(1);
        self.sum_us = self.sum_us.wrapping_add(u64::from(srtt_us));
        let v = if srtt_us == 0 { 1 } else { srtt_us };
        if self.min_us == 0 || v < self.min_us {
            self.min_us = v;
        }
    }

    /// What was counted since `older` (an earlier read of the same entry). Counters wrap; `min_us`
    /// is carried over because it is a lifetime minimum.
    #[must_use]
    pub fn since(&self, older: &RttValue) -> RttValue {
        let mut out = RttValue::ZERO;
        for (o, (n, p)) in out
            .buckets
            .iter_mut()
            .zip(self.buckets.iter().zip(&older.buckets))
        {
            *o = n.wrapping_sub(*p);
        }
        out.count = self.count.wrapping_sub(older.count);
        out.sum_us = self.sum_us.wrapping_sub(older.sum_us);
        out.min_us = self.min_us;
        out.retrans = self.retrans.wrapping_sub(older.retrans);
        out
    }

    /// p50, p90 and min of the samples in this (delta) value; `None` without samples.
    #[must_use]
    pub fn quantiles(&self) -> Option<Quantiles> {
        let total: u64 = self.buckets.iter().map(|&c| u64::from(c)).sum();
        if total == 0 {
            return None;
        }
        let lowest = self.buckets.iter().position(|&c| c != 0)?;
        let (low, high) = bucket_bounds(lowest);
        // The kernel's lifetime minimum is the interval's minimum when it falls in the lowest
        // bucket that got samples in this interval; otherwise the bucket's lower bound is the
        // best bound we have.
        let min_us = if self.min_us >= low && self.min_us < high {
            self.min_us
        } else {
            low
        };
        // Bucket representatives can sit below the exact minimum of the same bucket: keep the
        // quantiles ordered (min <= p50 <= p90), as the report protocol requires.
        let p50_us = self.quantile(total, 500).max(min_us);
        let p90_us = self.quantile(total, 900).max(p50_us);
        Some(Quantiles {
            samples: total,
            p50_us,
            p90_us,
            min_us,
        })
    }

    fn quantile(&self, total: u64, permille: u64) -> u32 {
        let rank = (total * permille).div_ceil(1000).max(1);
        let mut seen = 0u64;
        for (b, &c) in self.buckets.iter().enumerate() {
            seen += u64::from(c);
            if seen >= rank {
                return bucket_value(b);
            }
        }
        bucket_value(SRTT_BUCKETS - 1)
    }
}

/// Quantiles of one prefix's samples in one interval.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Quantiles {
    /// Samples in the interval.
    pub samples: u64,
    /// Median srtt in µs (bucket midpoint).
    pub p50_us: u32,
    /// 90th percentile srtt in µs (bucket midpoint).
    pub p90_us: u32,
    /// Lowest srtt in µs (exact when known, else the lowest bucket's lower bound).
    pub min_us: u32,
}

/// floor(log2(v)) for v > 0, branch-only (no loop, no ctlz) so the BPF backend handles it.
#[inline(always)]
fn log2_floor(mut v: u32) -> u32 {
    let mut r = 0;
    if v >= 1 << 16 {
        v >>= 16;
        r += 16;
    }
    if v >= 1 << 8 {
        v >>= 8;
        r += 8;
    }
    if v >= 1 << 4 {
        v >>= 4;
        r += 4;
    }
    if v >= 1 << 2 {
        v >>= 2;
        r += 2;
    }
    if v >= 1 << 1 {
        r += 1;
    }
    r
}

/// The bucket of an srtt value in µs; always `< SRTT_BUCKETS`.
#[inline(always)]
#[must_use]
pub fn bucket_of(srtt_us: u32) -> usize {
    if srtt_us < SUB_BUCKETS {
        return srtt_us as usize;
    }
    let e = log2_floor(srtt_us);
    if e > EXP_MAX {
        return SRTT_BUCKETS - 1;
    }
    let m = (srtt_us >> (e - SUB_BITS)) & (SUB_BUCKETS - 1);
    (SUB_BUCKETS + (e - SUB_BITS) * SUB_BUCKETS + m) as usize
}

/// `[low, high)` of bucket `b` in µs (the last bucket also holds everything above `high`).
#[must_use]
pub fn bucket_bounds(b: usize) -> (u32, u32) {
    let b = b.min(SRTT_BUCKETS - 1) as u32;
    if b < SUB_BUCKETS {
        return (b, b + 1);
    }
    let e = (b - SUB_BUCKETS) / SUB_BUCKETS + SUB_BITS;
    let m = (b - SUB_BUCKETS) % SUB_BUCKETS;
    let shift = e - SUB_BITS;
    let low = (SUB_BUCKETS + m) << shift;
    (low, low + (1 << shift))
}

/// The value that stands for bucket `b` in quantiles: exact below 8 µs, else the midpoint.
#[must_use]
pub fn bucket_value(b: usize) -> u32 {
    let (low, high) = bucket_bounds(b);
    low + (high - low) / 2
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_stay_ordered_when_the_minimum_is_above_its_bucket_representative() {
        let mut h = RttValue::default();
        for _ in 0..10 {
            // All samples in one bucket, above the bucket's representative value.
            h.record(bucket_bounds(bucket_of(40_000)).1 - 1);
        }
        let q = h.quantiles().expect("samples");
        assert!(q.min_us <= q.p50_us && q.p50_us <= q.p90_us, "{q:?}");
    }

    #[test]
    fn buckets_cover_the_range_in_order() {
        assert_eq!(SRTT_BUCKETS, 176);
        assert_eq!(bucket_of(0), 0);
        assert_eq!(bucket_of(7), 7);
        assert_eq!(bucket_of(8), 8);
        assert_eq!(bucket_of(u32::MAX), SRTT_BUCKETS - 1);
        let mut prev = 0;
        for v in (0..100_000u32).chain((1..4096).map(|k| k * 4099)) {
            let b = bucket_of(v);
            assert!(b < SRTT_BUCKETS);
            assert!(b >= prev || v < 100_000, "monotonic");
            let (low, high) = bucket_bounds(b);
            assert!(
                low <= v && (v < high || b == SRTT_BUCKETS - 1),
                "{v} in [{low}, {high}) of {b}"
            );
            if v < 100_000 {
                prev = b;
            }
        }
    }

    #[test]
    fn every_bucket_round_trips_and_is_narrow() {
        for b in 0..SRTT_BUCKETS {
            let (low, high) = bucket_bounds(b);
            assert_eq!(bucket_of(low), b);
            assert_eq!(bucket_of(high - 1), b);
            let mid = bucket_value(b);
            assert_eq!(bucket_of(mid), b);
            if low >= 8 {
                assert!(u64::from(high - low) * 8 <= u64::from(low), "bucket {b} too wide");
            }
        }
    }

    #[test]
    fn quantiles_of_a_delta() {
        let mut old = RttValue::ZERO;
        for _ in 0..100 {
            old.record(80_000);
        }
        let mut new = old;
        // This interval: 90 samples near 20 ms and 10 near 5 ms, plus the old 80 ms ones.
        for i in 0..90 {
            new.record(20_000 + i);
        }
        for _ in 0..10 {
            new.record(5_000);
        }
        new.retrans += 3;
        let d = new.since(&old);
        assert_eq!(d.count, 100);
        assert_eq!(d.retrans, 3);
        let q = d.quantiles().expect("samples");
        assert_eq!(q.samples, 100);
        assert!(q.p50_us.abs_diff(20_045) * 16 <= 20_045, "p50 {}", q.p50_us);
        assert!(q.p90_us.abs_diff(20_045) * 16 <= 20_045, "p90 {}", q.p90_us);
        assert_eq!(
            q.min_us, 5_000,
            "the lifetime min falls in the lowest delta bucket"
        );
        assert_eq!(RttValue::ZERO.quantiles(), None);
    }

    #[test]
    fn interval_min_is_a_bucket_bound_when_the_lifetime_min_is_older() {
        let mut old = RttValue::ZERO;
        old.record(100);
        let mut new = old;
        new.record(40_000);
        let q = new.since(&old).quantiles().expect("samples");
        let (low, _) = bucket_bounds(bucket_of(40_000));
        assert_eq!(q.min_us, low);
        assert!(q.min_us <= 40_000 && q.min_us * 9 >= 40_000 * 8);
    }

    #[test]
    fn deltas_wrap() {
        let mut old = RttValue::ZERO;
        old.count = u64::MAX;
        old.buckets[3] = u32::MAX;
        let mut new = RttValue::ZERO;
        new.count = 1;
        new.buckets[3] = 1;
        let d = new.since(&old);
        assert_eq!((d.count, d.buckets[3]), (2, 2));
    }
}
