//! Presenting results: one table row per scenario for people, or one JSON document.
//! Latencies are shown in µs below a millisecond and in ms with two decimals above.

use std::time::Duration;

use serde_json::{Value, json};

use super::BenchArgs;

/// Results of one scenario.
#[derive(Debug)]
pub(crate) struct Report {
    pub(crate) scenario: &'static str,
    pub(crate) requests: u64,
    pub(crate) errors: u64,
    pub(crate) throughput: f64,
    pub(crate) p50: Duration,
    pub(crate) p90: Duration,
    pub(crate) p99: Duration,
    pub(crate) max: Duration,
    pub(crate) first_error: Option<String>,
}

/// Latency for people: whole µs below a millisecond, ms with 2 decimals up to a second,
/// then seconds.
pub(crate) fn fmt_latency(d: Duration) -> String {
    let us = d.as_secs_f64() * 1e6;
    if us < 1000.0 {
        format!("{us:.0}µs")
    } else if us < 1e6 {
        format!("{:.2}ms", us / 1000.0)
    } else {
        format!("{:.2}s", us / 1e6)
    }
}

pub(crate) fn table_header() -> String {
    format!(
        "{:<14} {:>10} {:>8} {:>11} {:>10} {:>10} {:>10} {:>10}",
        "scenario", "requests", "errors", "req/s", "p50", "p90", "p99", "max"
    )
}

pub(crate) fn table_row(r: &Report) -> String {
    format!(
        "{:<14} {:>10} {:>8} {:>11.1} {:>10} {:>10} {:>10} {:>10}",
        r.scenario,
        r.requests,
        r.errors,
        r.throughput,
        fmt_latency(r.p50),
        fmt_latency(r.p90),
        fmt_latency(r.p99),
        fmt_latency(r.max)
    )
}

fn micros(d: Duration) -> f64 {
    (d.as_secs_f64() * 1e8).round() / 100.0
}

pub(crate) fn json_report(args: &BenchArgs, address: &str, reports: &[Report]) -> Value {
    json!({
        "address": address,
        "concurrency": args.concurrency,
        "duration_s": args.duration.as_secs_f64(),
        "warmup_s": args.warmup.as_secs_f64(),
        "rate": args.rate,
        "audited": args.audit_file.is_some(),
        "scenarios": reports.iter().map(|r| json!({
            "scenario": r.scenario,
            "requests": r.requests,
            "errors": r.errors,
            "throughput_rps": (r.throughput * 10.0).round() / 10.0,
            "latency_us": {
                "p50": micros(r.p50),
                "p90": micros(r.p90),
                "p99": micros(r.p99),
                "max": micros(r.max),
            },
            "first_error": r.first_error,
        })).collect::<Vec<_>>(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latencies_format_in_us_or_ms() {
        assert_eq!(fmt_latency(Duration::from_micros(523)), "523µs");
        assert_eq!(fmt_latency(Duration::from_micros(1234)), "1.23ms");
        assert_eq!(fmt_latency(Duration::from_millis(250)), "250.00ms");
        assert_eq!(fmt_latency(Duration::from_millis(2500)), "2.50s");
        assert_eq!(micros(Duration::from_nanos(1_234_567)), 1234.57);
    }

    fn report() -> Report {
        Report {
            scenario: "kv-read",
            requests: 1000,
            errors: 1,
            throughput: 100.04,
            p50: Duration::from_micros(400),
            p90: Duration::from_micros(900),
            p99: Duration::from_micros(2500),
            max: Duration::from_millis(12),
            first_error: Some("HTTP 403: {\"errors\":[\"permission denied\"]}".into()),
        }
    }

    #[test]
    fn table_rows_line_up_with_the_header() {
        let header = table_header();
        let row = table_row(&report());
        assert_eq!(header.chars().count(), row.chars().count());
        assert!(row.contains("400µs") && row.contains("2.50ms") && row.contains("100.0"));
    }
}
