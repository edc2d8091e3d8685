//! A fixed-size log-linear latency histogram: exact below 256 ns, then 128 buckets per
//! power of two, so any recorded value is reported within 0.8 %. Memory is fixed
//! (about 17 KiB) whatever the number of samples, which keeps a long benchmark bounded.
//! Values above ~18 minutes are clamped into the last bucket; the exact maximum is kept
//! apart.

use std::time::Duration;

/// Sub-buckets per power of two (2^7).
const SUB_BITS: u32 = 7;
const SUB: u64 = 1 << SUB_BITS;
/// Largest value with its own bucket, in nanoseconds (2^40 ns ≈ 18 min).
const MAX_TRACKED_BITS: u32 = 40;
const BUCKETS: usize = ((MAX_TRACKED_BITS - SUB_BITS + 1) as usize) * SUB as usize;

/// Counts of latencies, in nanoseconds.
#[derive(Clone)]
pub(crate) struct Histogram {
    counts: Vec<u32>,
    total: u64,
    max_ns: u64,
}

impl std::fmt::Debug for Histogram {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Histogram")
            .field("total", &self.total)
            .field("max_ns", &self.max_ns)
            .finish()
    }
}

fn index_of(ns: u64) -> usize {
    let v = ns.min((1u64 << MAX_TRACKED_BITS) - 1);
    if v < 2 * SUB {
        return v as usize;
    }
    let msb = 63 - v.leading_zeros();
    let shift = msb - SUB_BITS;
    ((u64::from(shift) + 1) * SUB + ((v >> shift) - SUB)) as usize
}

/// The middle of bucket `i`, in nanoseconds.
fn value_of(i: usize) -> u64 {
    let i = i as u64;
    if i < 2 * SUB {
        return i;
    }
    let shift = i / SUB - 1;
    let base = (SUB + i % SUB) << shift;
    base + (1u64 << shift) / 2
}

impl Histogram {
    /// An empty histogram.
    pub(crate) fn new() -> Histogram {
        Histogram {
            counts: vec![0; BUCKETS],
            total: 0,
            max_ns: 0,
        }
    }

    /// Records one latency.
    pub(crate) fn record(&mut self, d: Duration) {
        let ns = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        let slot = &mut self.counts[index_of(ns)];
        *slot = slot.saturating_add(1);
        self.total += 1;
        self.max_ns = self.max_ns.max(ns);
    }

    /// Adds another histogram's samples.
    pub(crate) fn merge(&mut self, other: &Histogram) {
        for (a, b) in self.counts.iter_mut().zip(&other.counts) {
            *a = a.saturating_add(*b);
        }
        self.total += other.total;
        self.max_ns = self.max_ns.max(other.max_ns);
    }

    /// Number of samples.
    pub(crate) fn len(&self) -> u64 {
        self.total
    }

    /// The largest sample, exactly.
    pub(crate) fn max(&self) -> Duration {
        Duration::from_nanos(self.max_ns)
    }

    /// The `q` quantile (0.0–1.0); zero when empty. Never above the maximum.
    pub(crate) fn quantile(&self, q: f64) -> Duration {
        if self.total == 0 {
            return Duration::ZERO;
        }
        let rank = ((q.clamp(0.0, 1.0) * self.total as f64).ceil() as u64).max(1);
        let mut seen = 0u64;
        for (i, c) in self.counts.iter().enumerate() {
            seen += u64::from(*c);
            if seen >= rank {
                return Duration::from_nanos(value_of(i).min(self.max_ns));
            }
        }
        self.max()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_contiguous_and_precise() {
        let mut last = 0;
        for v in [
            0u64,
            1,
            255,
            256,
            257,
            511,
            512,
            1000,
            123_456,
            9_999_999_999,
            1 << 39,
        ] {
            let i = index_of(v);
            assert!(i >= last, "{v}");
            last = i;
            let mid = value_of(i);
            let err = (mid as f64 - v as f64).abs() / (v.max(1) as f64);
            assert!(err <= 1.0 / 128.0, "{v}: bucket middle {mid}");
        }
        assert!(index_of(u64::MAX) < BUCKETS);
        assert_eq!(index_of(255) + 1, index_of(256));
    }

    #[test]
    fn quantiles_of_a_uniform_spread() {
        let mut h = Histogram::new();
        for us in 1..=1000u64 {
            h.record(Duration::from_micros(us));
        }
        assert_eq!(h.len(), 1000);
        let close = |d: Duration, us: f64| ((d.as_nanos() as f64 / 1000.0) - us).abs() / us < 0.01;
        assert!(close(h.quantile(0.5), 500.0), "{:?}", h.quantile(0.5));
        assert!(close(h.quantile(0.9), 900.0));
        assert!(close(h.quantile(0.99), 990.0));
        assert_eq!(h.max(), Duration::from_micros(1000));
        assert!(h.quantile(1.0) <= h.max());
    }

    #[test]
    fn merge_adds_up() {
        let mut a = Histogram::new();
        let mut b = Histogram::new();
        a.record(Duration::from_millis(1));
        b.record(Duration::from_millis(3));
        a.merge(&b);
        assert_eq!(a.len(), 2);
        assert_eq!(a.max(), Duration::from_millis(3));
        assert_eq!(Histogram::new().quantile(0.5), Duration::ZERO);
    }
}
