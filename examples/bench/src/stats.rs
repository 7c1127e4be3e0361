//! Statistics shared by the measurements and the report: a latency histogram and the median.
//!
//! Latency histogram: log-linear buckets, 128 per power of two (< 0.8 % error), no allocation
//! per sample.

const SUB_BITS: u32 = 7;
const BUCKETS: usize = (64 - SUB_BITS as usize + 1) << SUB_BITS;

/// Latency histogram (ns).
#[derive(Clone)]
pub(crate) struct Hist {
    counts: Vec<u64>,
    total: u64,
}

impl Hist {
    pub(crate) fn new() -> Hist {
        Hist {
            counts: vec![0; BUCKETS],
            total: 0,
        }
    }

    fn bucket(ns: u64) -> usize {
        if ns < (1 << SUB_BITS) {
            return ns as usize;
        }
        let exp = 63 - ns.leading_zeros();
        let shift = exp - SUB_BITS;
        let mant = ((ns >> shift) as usize) & ((1 << SUB_BITS) - 1);
        (((shift + 1) as usize) << SUB_BITS) | mant
    }

    /// The middle of bucket `b`, in ns.
    fn value(b: usize) -> u64 {
        if b < (1 << SUB_BITS) {
            return b as u64;
        }
        let shift = (b >> SUB_BITS) - 1;
        let mant = (b & ((1 << SUB_BITS) - 1)) as u64;
        (((1 << SUB_BITS) | mant) << shift) + ((1u64 << shift) >> 1)
    }

    pub(crate) fn record(&mut self, ns: u64) {
        self.counts[Self::bucket(ns)] += 1;
        self.total += 1;
    }

    pub(crate) fn merge(&mut self, other: &Hist) {
        for (a, b) in self.counts.iter_mut().zip(&other.counts) {
            *a += b;
        }
        self.total += other.total;
    }

    pub(crate) fn quantile(&self, q: f64) -> u64 {
        if self.total == 0 {
            return 0;
        }
        let target = ((q * self.total as f64).ceil() as u64).clamp(1, self.total);
        let mut seen = 0;
        for (b, &c) in self.counts.iter().enumerate() {
            seen += c;
            if seen >= target {
                return Self::value(b);
            }
        }
        0
    }
}

/// The median (the mean of the two middle values for an even count; NaN for none).
pub(crate) fn median(mut v: Vec<f64>) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets_are_within_one_percent() {
        for ns in (0..200_000u64).step_by(7).chain([u64::MAX / 3, 1 << 40]) {
            let v = Hist::value(Hist::bucket(ns));
            let err = v.abs_diff(ns) as f64 / ns.max(1) as f64;
            assert!(err <= 0.01, "{ns} -> {v}");
        }
        assert!(Hist::bucket(u64::MAX) < BUCKETS);
    }

    #[test]
    fn histogram_quantiles() {
        let mut h = Hist::new();
        for ns in 1..=1000 {
            h.record(ns * 1000);
        }
        let p50 = h.quantile(0.5) as f64;
        let p99 = h.quantile(0.99) as f64;
        assert!((p50 - 500_000.0).abs() / 500_000.0 < 0.01, "{p50}");
        assert!((p99 - 990_000.0).abs() / 990_000.0 < 0.01, "{p99}");
        assert_eq!(Hist::new().quantile(0.5), 0);
    }

    #[test]
    fn median_of_odd_and_even() {
        assert_eq!(median(vec![3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(vec![4.0, 1.0, 2.0, 3.0]), 2.5);
        assert!(median(Vec::new()).is_nan());
    }
}
