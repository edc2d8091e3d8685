//! Per-route request latency: `leash_request_duration_seconds{route,method}`, a
//! Prometheus histogram kept in atomics.
//!
//! `route` is low-cardinality by construction: the mount's path plus the first segment
//! below it (`database/creds`, `auth/approle/login`, `sys/leases`, `secret/data`), never
//! a lease id or a secret name. KV version 1 mounts, whose first segment *is* the secret
//! name, are labelled by the mount alone; requests that match no mount are `unmatched`.
//! A segment that is not a plain word (`[a-z0-9_-]`, at most 32 characters) becomes `*`,
//! and past [`MAX_ROUTES`] label pairs new ones count under `(other)`, so callers cannot
//! grow the series without bound. `method` is the operation (`read`, `list`, `create`,
//! `update`, `delete`, `patch`) as the pipeline sees it before the existence check.
//!
//! Cost on the hot path: one route lookup, one read-locked map lookup, and three relaxed
//! atomic additions when the request ends. The map's write lock is taken only the first
//! time a route is seen.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Instant;

use leash_backend::Request;

use crate::Inner;
use crate::router::Router;

/// Upper bounds (seconds) of the histogram buckets (`+Inf` is implied).
pub(crate) const BUCKETS: [f64; 14] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];
/// Most (route, method) pairs tracked.
pub(crate) const MAX_ROUTES: usize = 1000;

/// One histogram: per-bucket counts (not cumulative; the last is `+Inf`), sum, count.
#[derive(Default)]
pub(crate) struct Histogram {
    buckets: [AtomicU64; BUCKETS.len() + 1],
    sum_ns: AtomicU64,
    count: AtomicU64,
}

impl Histogram {
    fn observe(&self, secs: f64, ns: u64) {
        let i = BUCKETS
            .iter()
            .position(|b| secs <= *b)
            .unwrap_or(BUCKETS.len());
        self.buckets[i].fetch_add(1, Ordering::Relaxed);
        self.sum_ns.fetch_add(ns, Ordering::Relaxed);
        self.count.fetch_add(1, Ordering::Relaxed);
    }

    /// Cumulative bucket counts, sum (seconds) and count.
    pub(crate) fn snapshot(&self) -> (Vec<u64>, f64, u64) {
        let mut acc = 0;
        let cumulative = self
            .buckets
            .iter()
            .map(|b| {
                acc += b.load(Ordering::Relaxed);
                acc
            })
            .collect();
        (
            cumulative,
            self.sum_ns.load(Ordering::Relaxed) as f64 / 1e9,
            self.count.load(Ordering::Relaxed),
        )
    }
}

/// The histograms of every route.
#[derive(Default)]
pub(crate) struct Latency {
    routes: RwLock<HashMap<(String, &'static str), Arc<Histogram>>>,
}

impl Latency {
    fn histogram(&self, route: String, method: &'static str) -> Arc<Histogram> {
        let key = (route, method);
        if let Ok(m) = self.routes.read()
            && let Some(h) = m.get(&key)
        {
            return Arc::clone(h);
        }
        let Ok(mut m) = self.routes.write() else {
            return Arc::new(Histogram::default());
        };
        let key = if !m.contains_key(&key) && m.len() >= MAX_ROUTES {
            ("(other)".to_owned(), method)
        } else {
            key
        };
        Arc::clone(m.entry(key).or_default())
    }

    /// Every histogram, sorted by (route, method).
    pub(crate) fn snapshot(&self) -> Vec<((String, &'static str), Arc<Histogram>)> {
        let mut v: Vec<_> = self
            .routes
            .read()
            .map(|m| m.iter().map(|(k, h)| (k.clone(), Arc::clone(h))).collect())
            .unwrap_or_default();
        v.sort_by(|a, b| a.0.cmp(&b.0));
        v
    }
}

/// A running request's timer; [`Timer::finish`] records it.
pub(crate) struct Timer {
    histogram: Arc<Histogram>,
    started: Instant,
}

impl Timer {
    pub(crate) fn finish(self) {
        let elapsed = self.started.elapsed();
        self.histogram.observe(
            elapsed.as_secs_f64(),
            u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX),
        );
    }
}

/// Starts timing `req`.
pub(crate) fn start(inner: &Inner, req: &Request) -> Timer {
    let route = route_label(&inner.router(), &req.path);
    Timer {
        histogram: inner
            .telemetry
            .latency
            .histogram(route, req.operation.as_str()),
        started: Instant::now(),
    }
}

/// The `route` label of `path` (see the module docs).
pub(crate) fn route_label(router: &Router, path: &str) -> String {
    let Some((m, rel)) = router.route(path) else {
        return "unmatched".to_owned();
    };
    let mount = m.entry.route_prefix();
    let mount = mount.trim_end_matches('/');
    if m.entry.kind == "kv" && m.entry.kv_version() == 1 {
        return mount.to_owned();
    }
    let first = rel.split('/').next().unwrap_or("");
    if first.is_empty() {
        return mount.to_owned();
    }
    let plain = first.len() <= 32
        && first
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-');
    format!("{mount}/{}", if plain { first } else { "*" })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_cumulative_and_the_sum_is_in_seconds() {
        let h = Histogram::default();
        h.observe(0.0002, 200_000);
        h.observe(0.003, 3_000_000);
        h.observe(20.0, 20_000_000_000);
        let (b, sum, count) = h.snapshot();
        assert_eq!(count, 3);
        assert_eq!(b[0], 1, "≤ 0.5 ms");
        assert_eq!(b[3], 2, "≤ 5 ms");
        assert_eq!(b[BUCKETS.len() - 1], 2, "≤ 10 s");
        assert_eq!(b[BUCKETS.len()], 3, "+Inf");
        assert!((sum - 20.0032).abs() < 1e-9, "{sum}");
    }

    #[test]
    fn routes_past_the_bound_count_as_other() {
        let l = Latency::default();
        for i in 0..MAX_ROUTES + 5 {
            l.histogram(format!("r{i}"), "read")
                .observe(0.001, 1_000_000);
        }
        let snap = l.snapshot();
        assert_eq!(snap.len(), MAX_ROUTES + 1);
        let other = snap
            .iter()
            .find(|((r, _), _)| r == "(other)")
            .map(|(_, h)| h.snapshot().2);
        assert_eq!(other, Some(5));
    }
}
