//! Pure timing rules: when to renew, how long to back off. No clock is read here; the
//! caller passes durations, so the rules are unit-tested exactly.

use std::time::Duration;

use crate::config::{RetryConfig, TemplateSettings};

/// How long after a lease (or token) of `ttl` was issued or renewed to renew it:
/// `renew_before` ahead of expiry when set and shorter than the TTL, else the
/// configured share of the TTL (default two thirds). Never less than one second.
pub fn renew_after(ttl: Duration, s: &TemplateSettings) -> Duration {
    let at = match s.renew_before {
        Some(b) if b < ttl => ttl - b,
        _ => ttl.mul_f64(s.renew_fraction),
    };
    at.max(Duration::from_secs(1).min(ttl))
}

/// Wait before retry number `attempt` (1-based): exponential from `backoff`, capped at
/// `max_backoff`, then scaled by `jitter` (a factor in 0.75..=1.25 chosen by the caller).
pub fn backoff(attempt: u32, r: &RetryConfig, jitter: f64) -> Duration {
    let exp = attempt.saturating_sub(1).min(20);
    let base = r.backoff.saturating_mul(1u32 << exp).min(r.max_backoff);
    base.mul_f64(jitter.clamp(0.75, 1.25))
}

/// A jitter factor in 0.75..=1.25 from the CSPRNG.
pub fn jitter() -> f64 {
    let b = leash_types::random::bytes::<2>();
    let x = f64::from(u16::from_le_bytes(b)) / f64::from(u16::MAX);
    0.75 + x / 2.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renews_at_two_thirds_or_before_expiry() {
        let mut s = TemplateSettings::default();
        assert_eq!(
            renew_after(Duration::from_secs(900), &s),
            Duration::from_secs(600)
        );
        s.renew_before = Some(Duration::from_secs(300));
        assert_eq!(
            renew_after(Duration::from_secs(900), &s),
            Duration::from_secs(600)
        );
        assert_eq!(
            renew_after(Duration::from_secs(3600), &s),
            Duration::from_secs(3300)
        );
        // renew_before longer than the TTL falls back to the share.
        assert_eq!(
            renew_after(Duration::from_secs(60), &s),
            Duration::from_secs(40)
        );
        s.renew_before = None;
        s.renew_fraction = 0.5;
        assert_eq!(
            renew_after(Duration::from_secs(10), &s),
            Duration::from_secs(5)
        );
        assert_eq!(
            renew_after(Duration::from_secs(1), &s),
            Duration::from_secs(1)
        );
    }

    #[test]
    fn backoff_doubles_to_the_cap_with_jitter() {
        let r = RetryConfig {
            num_retries: 5,
            backoff: Duration::from_secs(1),
            max_backoff: Duration::from_secs(10),
        };
        let w: Vec<u64> = (1..=6).map(|a| backoff(a, &r, 1.0).as_secs()).collect();
        assert_eq!(w, [1, 2, 4, 8, 10, 10]);
        assert_eq!(backoff(1, &r, 0.75), Duration::from_millis(750));
        assert_eq!(backoff(100, &r, 1.25), Duration::from_millis(12500));
        for _ in 0..100 {
            let j = jitter();
            assert!((0.75..=1.25).contains(&j));
        }
    }
}
