//! Operation counters and the storage latency histogram.

use super::*;

/// Upper bounds (seconds) of the storage latency histogram.
pub(super) const LATENCY_BOUNDS: [f64; 12] = [
    0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0,
];

#[derive(Default)]
pub(super) struct Stats {
    pub(super) heartbeats: AtomicU64,
    pub(super) heartbeat_failures: AtomicU64,
    pub(super) claim_batches: AtomicU64,
    pub(super) claimed: AtomicU64,
    pub(super) notifications: AtomicU64,
    pub(super) reconnects: AtomicU64,
    /// One counter per bound, plus `+Inf`.
    pub(super) buckets: [AtomicU64; LATENCY_BOUNDS.len() + 1],
    pub(super) sum_micros: AtomicU64,
    pub(super) count: AtomicU64,
}

impl Stats {
    pub(super) fn observe(&self, d: Duration) {
        let secs = d.as_secs_f64();
        let i = LATENCY_BOUNDS
            .iter()
            .position(|b| secs <= *b)
            .unwrap_or(LATENCY_BOUNDS.len());
        self.buckets[i].fetch_add(1, Ordering::Relaxed);
        self.sum_micros.fetch_add(
            u64::try_from(d.as_micros()).unwrap_or(u64::MAX),
            Ordering::Relaxed,
        );
        self.count.fetch_add(1, Ordering::Relaxed);
    }

    pub(super) fn snapshot(&self) -> HaStats {
        let mut cumulative = 0;
        let mut latency_buckets = Vec::with_capacity(LATENCY_BOUNDS.len() + 1);
        for (i, b) in self.buckets.iter().enumerate() {
            cumulative += b.load(Ordering::Relaxed);
            let bound = LATENCY_BOUNDS.get(i).copied().unwrap_or(f64::INFINITY);
            latency_buckets.push((bound, cumulative));
        }
        HaStats {
            heartbeats: self.heartbeats.load(Ordering::Relaxed),
            heartbeat_failures: self.heartbeat_failures.load(Ordering::Relaxed),
            claim_batches: self.claim_batches.load(Ordering::Relaxed),
            claimed: self.claimed.load(Ordering::Relaxed),
            notifications: self.notifications.load(Ordering::Relaxed),
            reconnects: self.reconnects.load(Ordering::Relaxed),
            latency_buckets,
            latency_sum: self.sum_micros.load(Ordering::Relaxed) as f64 / 1e6,
            latency_count: self.count.load(Ordering::Relaxed),
        }
    }
}

/// A pooled connection that times the operation it serves (from asking the pool to
/// giving the connection back) into the latency histogram.
pub(super) struct Timed<'a> {
    pub(super) obj: deadpool_postgres::Object,
    pub(super) start: std::time::Instant,
    pub(super) stats: &'a Stats,
}

impl std::ops::Deref for Timed<'_> {
    type Target = deadpool_postgres::Object;
    fn deref(&self) -> &Self::Target {
        &self.obj
    }
}

impl std::ops::DerefMut for Timed<'_> {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.obj
    }
}

impl Drop for Timed<'_> {
    fn drop(&mut self) {
        self.stats.observe(self.start.elapsed());
    }
}
