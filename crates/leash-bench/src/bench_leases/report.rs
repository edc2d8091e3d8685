//! The output of `bench-leases`: its rows, as a table or as JSON.

use std::time::Duration;

use serde_json::{Value, json};

use crate::Format;
use crate::bench::report::fmt_latency;

// ---------------------------------------------------------------------------------------
// Output
// ---------------------------------------------------------------------------------------

/// One line of the figures.
#[derive(Debug)]
pub(crate) struct Row {
    /// What was measured.
    pub(crate) name: String,
    /// Operations completed.
    pub(super) count: u64,
    /// Operations that failed.
    pub(crate) errors: u64,
    /// Wall time of the whole measurement.
    pub(crate) elapsed: Duration,
    /// Operations per second, when a rate means something.
    pub(crate) rate: Option<f64>,
    /// Median and 99th percentile of one operation, when measured one by one.
    pub(super) p50: Option<Duration>,
    pub(super) p99: Option<Duration>,
    /// Rate relative to the raw baseline.
    pub(crate) vs_raw: Option<f64>,
    /// Anything worth saying next to the figure.
    pub(super) note: String,
}

impl Row {
    pub(super) fn new(name: impl Into<String>, count: u64, elapsed: Duration) -> Row {
        let secs = elapsed.as_secs_f64();
        Row {
            name: name.into(),
            count,
            errors: 0,
            elapsed,
            rate: (secs > 0.0).then(|| count as f64 / secs),
            p50: None,
            p99: None,
            vs_raw: None,
            note: String::new(),
        }
    }
}

/// Figures gathered so far; table rows are printed as they come.
pub(crate) struct Output {
    pub(super) format: Format,
    /// Print nothing on stdout (the suite prints its own table).
    pub(super) quiet: bool,
    pub(crate) rows: Vec<Row>,
    pub(super) notes: Vec<String>,
    pub(super) header_done: bool,
    pub(super) meta: Value,
}

pub(super) fn ms(d: Duration) -> f64 {
    (d.as_secs_f64() * 1e5).round() / 100.0
}

impl Output {
    pub(super) fn new(format: Format) -> Output {
        Output {
            format,
            quiet: false,
            rows: Vec::new(),
            notes: Vec::new(),
            header_done: false,
            meta: Value::Null,
        }
    }

    pub(super) fn header() -> String {
        format!(
            "{:<36} {:>7} {:>6} {:>9} {:>10} {:>9} {:>9} {:>7}  {}",
            "measurement", "n", "errors", "time", "per s", "p50", "p99", "vs raw", "notes"
        )
    }

    pub(super) fn line(r: &Row) -> String {
        let opt = |d: Option<Duration>| d.map_or_else(|| "-".to_owned(), fmt_latency);
        format!(
            "{:<36} {:>7} {:>6} {:>9} {:>10} {:>9} {:>9} {:>7}  {}",
            r.name,
            r.count,
            r.errors,
            fmt_latency(r.elapsed),
            r.rate.map_or_else(|| "-".to_owned(), |v| format!("{v:.1}")),
            opt(r.p50),
            opt(r.p99),
            r.vs_raw
                .map_or_else(|| "-".to_owned(), |v| format!("{v:.2}x")),
            r.note
        )
    }

    pub(super) fn push(&mut self, row: Row) {
        if self.format == Format::Table && !self.quiet {
            if !self.header_done {
                println!("{}", Output::header());
                self.header_done = true;
            }
            println!("{}", Output::line(&row));
        }
        self.rows.push(row);
    }

    pub(super) fn note(&mut self, text: impl Into<String>) {
        self.notes.push(text.into());
    }

    pub(super) fn finish(&self) {
        match self.format {
            Format::Table => {
                if !self.notes.is_empty() {
                    println!();
                    for n in &self.notes {
                        println!("* {n}");
                    }
                }
            }
            Format::Json => {
                let rows: Vec<Value> = self
                    .rows
                    .iter()
                    .map(|r| {
                        json!({
                            "measurement": r.name,
                            "count": r.count,
                            "errors": r.errors,
                            "elapsed_ms": ms(r.elapsed),
                            "per_s": r.rate.map(|v| (v * 10.0).round() / 10.0),
                            "p50_ms": r.p50.map(ms),
                            "p99_ms": r.p99.map(ms),
                            "vs_raw": r.vs_raw.map(|v| (v * 1000.0).round() / 1000.0),
                            "note": r.note,
                        })
                    })
                    .collect();
                let doc = json!({"run": self.meta, "figures": rows, "notes": self.notes});
                println!("{}", serde_json::to_string_pretty(&doc).unwrap_or_default());
            }
        }
    }
}
