//! Time as a dependency. Expiry logic takes a [`Clock`] so tests can move time by hand
//! instead of sleeping.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use time::format_description::well_known::Rfc3339;

/// A source of wall-clock time, in whole Unix seconds and as `SystemTime`.
pub trait Clock: Send + Sync + 'static {
    /// Current time.
    fn now(&self) -> SystemTime;

    /// Current time as Unix seconds.
    fn unix(&self) -> i64 {
        unix_seconds(self.now())
    }

    /// Current time as RFC 3339 in UTC with nanoseconds, as audit entries carry it.
    fn now_rfc3339(&self) -> String {
        rfc3339_precise(self.now())
    }
}

/// Unix seconds as RFC 3339 in UTC (`2026-11-29T14:03:11Z`), as Vault's time fields
/// show them; empty when out of range.
pub fn rfc3339(unix: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(unix)
        .ok()
        .and_then(|t| t.format(&Rfc3339).ok())
        .unwrap_or_default()
}

/// A `SystemTime` as RFC 3339 in UTC with its fraction of a second
/// (`2026-11-29T14:03:11.123456789Z`); empty when out of range.
pub fn rfc3339_precise(t: SystemTime) -> String {
    time::OffsetDateTime::from(t)
        .format(&Rfc3339)
        .unwrap_or_default()
}

/// Unix seconds of a `SystemTime` (negative before 1970).
pub fn unix_seconds(t: SystemTime) -> i64 {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        Err(e) => -i64::try_from(e.duration().as_secs()).unwrap_or(i64::MAX),
    }
}

/// The operating system's clock.
#[derive(Clone, Copy, Debug, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    #[allow(
        clippy::disallowed_methods,
        reason = "the one place production code reads the wall clock"
    )]
    fn now(&self) -> SystemTime {
        SystemTime::now()
    }
}

/// A clock that moves only when told; for tests.
#[derive(Clone, Debug)]
pub struct ManualClock {
    unix_millis: Arc<AtomicI64>,
}

impl ManualClock {
    /// A clock standing at the current system time.
    pub fn new() -> ManualClock {
        let ms = SystemClock
            .now()
            .duration_since(UNIX_EPOCH)
            .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
            .unwrap_or(0);
        ManualClock {
            unix_millis: Arc::new(AtomicI64::new(ms)),
        }
    }

    /// Moves the clock forward.
    pub fn advance(&self, d: Duration) {
        let ms = i64::try_from(d.as_millis()).unwrap_or(i64::MAX);
        self.unix_millis.fetch_add(ms, Ordering::SeqCst);
    }
}

impl Default for ManualClock {
    fn default() -> Self {
        ManualClock::new()
    }
}

impl Clock for ManualClock {
    fn now(&self) -> SystemTime {
        let ms = self.unix_millis.load(Ordering::SeqCst);
        UNIX_EPOCH + Duration::from_millis(u64::try_from(ms).unwrap_or(0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manual_clock_moves_only_when_told() {
        let c = ManualClock::new();
        let a = c.unix();
        c.advance(Duration::from_secs(90));
        assert_eq!(c.unix() - a, 90);
    }

    #[test]
    fn rfc3339_formats_seconds_and_precise_times_in_utc() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(1_764_424_991), "2025-11-29T14:03:11Z");
        assert_eq!(rfc3339(i64::MAX), "");
        let t = UNIX_EPOCH + Duration::new(1_764_424_991, 123_456_789);
        assert_eq!(rfc3339_precise(t), "2025-11-29T14:03:11.123456789Z");
        assert_eq!(rfc3339_precise(UNIX_EPOCH), "1970-01-01T00:00:00Z");
    }

    #[test]
    fn now_rfc3339_reads_the_given_clock() {
        let c = ManualClock::new();
        let before = c.now_rfc3339();
        assert_eq!(c.now_rfc3339(), before, "a manual clock stands still");
        c.advance(Duration::from_secs(3600));
        assert_ne!(c.now_rfc3339(), before);
        assert!(c.now_rfc3339().ends_with('Z'));
    }
}
