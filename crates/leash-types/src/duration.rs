//! Durations as Vault accepts them: whole seconds (`900`, `"900"`) or Go-style strings
//! (`"15m"`, `"1h30m"`, `"1.5h"`, `"500ms"`, and Vault's `"7d"`).
//!
//! Sub-second remainders are dropped (Vault's `ParseDurationSecond` does the same); a
//! negative or overflowing duration is an error, never a wrap-around.

use std::time::Duration;

/// A duration string that could not be understood. It says what is wrong, never what
/// was given: the value may be something else pasted into the wrong field (a token, a
/// password) and errors reach responses and the audit log. Callers name the field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid duration: {reason}")]
pub struct DurationError {
    /// What is wrong with it.
    pub reason: &'static str,
}

fn err(_input: &str, reason: &'static str) -> DurationError {
    DurationError { reason }
}

/// Parses a duration in Vault's accepted forms; the result is in whole seconds.
pub fn parse_duration(input: &str) -> Result<Duration, DurationError> {
    let s = input.trim();
    if s.is_empty() {
        return Err(err(input, "empty"));
    }
    if s.starts_with('-') {
        return Err(err(input, "negative durations are not allowed"));
    }
    if s.bytes().all(|b| b.is_ascii_digit()) {
        let secs: u64 = s.parse().map_err(|_| err(input, "number too large"))?;
        return Ok(Duration::from_secs(secs));
    }
    let mut rest = s.strip_prefix('+').unwrap_or(s);
    let mut total_nanos: u128 = 0;
    while !rest.is_empty() {
        let num_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(|| err(input, "missing unit (use s, m, h or d)"))?;
        if num_len == 0 {
            return Err(err(input, "expected a number"));
        }
        let (num, after) = rest.split_at(num_len);
        let unit_len = after
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(after.len());
        let (unit, next) = after.split_at(unit_len);
        let unit_nanos: u128 = match unit {
            "ns" => 1,
            "us" | "µs" => 1_000,
            "ms" => 1_000_000,
            "s" => 1_000_000_000,
            "m" => 60 * 1_000_000_000,
            "h" => 3_600 * 1_000_000_000,
            "d" => 86_400 * 1_000_000_000,
            _ => return Err(err(input, "unknown unit (use s, m, h or d)")),
        };
        let (int_part, frac_part) = match num.split_once('.') {
            Some((i, f)) => (i, f),
            None => (num, ""),
        };
        if int_part.is_empty() && frac_part.is_empty() {
            return Err(err(input, "expected a number"));
        }
        let int: u128 = if int_part.is_empty() {
            0
        } else {
            int_part
                .parse()
                .map_err(|_| err(input, "number too large"))?
        };
        let mut part = int
            .checked_mul(unit_nanos)
            .ok_or_else(|| err(input, "too large"))?;
        if !frac_part.is_empty() {
            if !frac_part.bytes().all(|b| b.is_ascii_digit()) {
                return Err(err(input, "malformed number"));
            }
            let digits = &frac_part[..frac_part.len().min(18)];
            let frac: u128 = digits.parse().map_err(|_| err(input, "malformed number"))?;
            let scale = 10u128.pow(u32::try_from(digits.len()).unwrap_or(18));
            part += frac * unit_nanos / scale;
        }
        total_nanos = total_nanos
            .checked_add(part)
            .ok_or_else(|| err(input, "too large"))?;
        rest = next;
    }
    let secs = u64::try_from(total_nanos / 1_000_000_000).map_err(|_| err(input, "too large"))?;
    Ok(Duration::from_secs(secs))
}

/// Formats whole seconds the way Go prints a `time.Duration` (`1h0m0s`, `15m0s`, `0s`).
pub fn format_go_duration(d: Duration) -> String {
    let total = d.as_secs();
    if total == 0 {
        return "0s".to_owned();
    }
    let (h, m, s) = (total / 3600, (total % 3600) / 60, total % 60);
    if h > 0 {
        format!("{h}h{m}m{s}s")
    } else if m > 0 {
        format!("{m}m{s}s")
    } else {
        format!("{s}s")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secs(s: &str) -> u64 {
        parse_duration(s).unwrap().as_secs()
    }

    #[test]
    fn accepts_vault_forms() {
        assert_eq!(secs("900"), 900);
        assert_eq!(secs("15m"), 900);
        assert_eq!(secs("1h"), 3600);
        assert_eq!(secs("1h30m"), 5400);
        assert_eq!(secs("1.5h"), 5400);
        assert_eq!(secs("90s"), 90);
        assert_eq!(secs("1500ms"), 1);
        assert_eq!(secs("7d"), 604_800);
        assert_eq!(secs(" 10s "), 10);
        assert_eq!(secs("0"), 0);
    }

    #[test]
    fn rejects_nonsense_without_echoing_the_input() {
        for bad in [
            "",
            "-5s",
            "5x",
            "h",
            "1h-",
            "abc",
            "1..5s",
            "99999999999999999999999h",
        ] {
            let e = parse_duration(bad).unwrap_err().to_string();
            assert!(e.starts_with("invalid duration: "), "{e}");
            if !bad.is_empty() {
                assert!(!e.contains(bad), "{bad:?} echoed: {e}");
            }
        }
    }

    #[test]
    fn formats_like_go() {
        assert_eq!(format_go_duration(Duration::from_secs(3600)), "1h0m0s");
        assert_eq!(format_go_duration(Duration::from_secs(900)), "15m0s");
        assert_eq!(format_go_duration(Duration::from_secs(5)), "5s");
        assert_eq!(format_go_duration(Duration::ZERO), "0s");
    }

    #[test]
    fn every_formatted_duration_parses_back() {
        for s in [0u64, 1, 59, 60, 61, 3599, 3600, 86_399, 86_400, 10_000_000] {
            let d = Duration::from_secs(s);
            assert_eq!(parse_duration(&format_go_duration(d)).unwrap(), d);
        }
    }
}
