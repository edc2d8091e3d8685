//! `leash bench suite`: every figure of the performance issue, each next to a baseline
//! measured in the same run, printed as one table (or one JSON document).
//!
//! The suite starts everything itself: an in-process leash (the dev configuration,
//! SQLite in a temporary directory) and, for the HTTP ceiling, a one-handler axum app
//! served by the same `leash_http::serve` (same hyper stack, same listener limits). Both
//! run on their own Tokio runtime (as many workers as CPUs, as `leash server` does),
//! apart from the load generator's, and are driven by the same load generator
//! (`bench::driver`, one keep-alive connection per task). The rows:
//!
//! * the three scenarios of `leash bench`, unaudited, against the HTTP ceiling;
//! * the same three with a file audit device (default options, fsync), against unaudited;
//! * the audit device alone (the `leash-audit` broker, entries of a request's size, as
//!   many writers as connections) against raw durable append (the same lines written in
//!   batches of that many, one `fdatasync` per batch, no leash in between);
//! * p99 against p50 of audited KV reads at half the measured audited peak (open loop);
//! * database issuance and mass expiry against raw PostgreSQL (`bench_leases`);
//! * start-up with many live leases (time and RSS, in a child process) against none;
//! * the agent's idle RSS with three templates renewing: the small `leash-agent` binary
//!   next to this one, against the all-in-one `leash agent` as the baseline.
//!
//! Throughput figures are medians of `rounds` runs interleaved with their baselines.
//! Progress goes to stderr, the table (or JSON) to stdout. A part that cannot run (no
//! PostgreSQL, no `leash` binary) yields rows without a value, `met: false`, and says why.
//!
//! Invariants: everything the suite creates lives in temporary directories or carries a
//! random tag in PostgreSQL and is removed at the end; no secret is printed.

mod agent;
mod audit;
mod database;
mod http;
mod startup;

use std::process::ExitCode;
use std::time::{Duration, Instant};

use leash_client::SecretString;

use crate::Format;
use agent::agent_part;
use audit::audit_part;
use database::database_part;
use http::http_part;
use startup::startup_part;
pub(crate) use startup::{ProbeArgs, probe};

/// Default PostgreSQL, as `bench-leases`.
const DEFAULT_POSTGRES: &str = "postgresql://postgres@127.0.0.1:5432/postgres";
/// The ceiling's answer: a hard-coded JSON document of about a KV read's size.
const CEILING_BODY: &str = r#"{"request_id":"00000000-0000-0000-0000-000000000000","lease_id":"","renewable":false,"lease_duration":0,"data":{"data":{"owner":"bench","value":"leash-bench"},"metadata":{"created_time":"2026-01-01T00:00:00.000000000Z","custom_metadata":null,"deletion_time":"","destroyed":false,"version":1}},"wrap_info":null,"warnings":null,"auth":null}"#;
/// Audit device path the suite enables on its server.
const AUDIT_PATH: &str = "suite-audit";

/// Parts of the suite.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Part {
    /// Throughput against the HTTP ceiling, audited against unaudited, p99 at half load.
    Http,
    /// The audit device alone against raw durable append.
    Audit,
    /// Database issuance and mass expiry against raw PostgreSQL.
    Database,
    /// Start-up time and memory with many live leases.
    Startup,
    /// Idle memory of `leash-agent` and `leash agent`.
    Agent,
}

/// Options of `leash bench suite`.
#[derive(clap::Args, Debug)]
pub(crate) struct SuiteArgs {
    /// Fewer, shorter rounds (under 3 minutes); the same table.
    #[arg(long)]
    quick: bool,
    /// Output format (progress always goes to stderr).
    #[arg(long, value_enum, default_value_t = Format::Table)]
    format: Format,
    /// PostgreSQL for the database figures, as a user that may create databases and roles.
    #[arg(
        long,
        value_name = "URL",
        env = "LEASH_TEST_POSTGRES_URL",
        hide_env_values = true,
        default_value = DEFAULT_POSTGRES,
        value_parser = parse_secret
    )]
    postgres: SecretString,
    /// Parts to run, comma-separated.
    #[arg(
        long,
        value_enum,
        value_delimiter = ',',
        default_value = "http,audit,database,startup,agent"
    )]
    only: Vec<Part>,
    /// Keep-alive connections of the HTTP figures (and writers of the audit figure).
    #[arg(long, default_value_t = 64,
          value_parser = clap::value_parser!(u32).range(1..=1024))]
    concurrency: u32,
    /// Rounds of each throughput figure (median) [default: 3, 1 with --quick].
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=20))]
    rounds: Option<u32>,
    /// Live leases of the start-up figure [default: 1 000 000, 100 000 with --quick].
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=2_000_000))]
    startup_leases: Option<u32>,
}

fn parse_secret(s: &str) -> Result<SecretString, std::convert::Infallible> {
    Ok(SecretString::from(s.to_owned()))
}

/// Sizes of one run.
#[derive(Debug, Clone, Copy)]
struct Plan {
    rounds: usize,
    warmup: Duration,
    duration: Duration,
    audit_duration: Duration,
    issue: u32,
    expire: u32,
    startup_leases: u32,
    agent_idle: Duration,
}

impl Plan {
    fn of(args: &SuiteArgs) -> Plan {
        let (rounds, warmup, duration, audit, issue, expire, leases, idle) = if args.quick {
            (1, 1, 3, 2, 300, 2_000, 100_000, 5)
        } else {
            (3, 2, 8, 5, 1_000, 10_000, 1_000_000, 20)
        };
        Plan {
            rounds: args.rounds.map_or(rounds, |r| r as usize),
            warmup: Duration::from_secs(warmup),
            duration: Duration::from_secs(duration),
            audit_duration: Duration::from_secs(audit),
            issue,
            expire,
            startup_leases: args.startup_leases.unwrap_or(leases),
            agent_idle: Duration::from_secs(idle),
        }
    }
}

/// Which way a target points.
#[derive(Debug, Clone, Copy)]
enum Goal {
    /// `ratio >= x`.
    RatioAtLeast(f64),
    /// `ratio <= x`.
    RatioAtMost(f64),
    /// `value <= x` (absolute: seconds or MiB).
    ValueAtMost(f64, &'static str),
}

/// One line of the table.
#[derive(Debug)]
struct SuiteRow {
    figure: String,
    value: Option<f64>,
    baseline: Option<f64>,
    goal: Goal,
    /// Unit of value and baseline, for people.
    unit: &'static str,
}

impl SuiteRow {
    fn ratio(&self) -> Option<f64> {
        match (self.value, self.baseline) {
            (Some(v), Some(b)) if b > 0.0 => Some(v / b),
            _ => None,
        }
    }

    fn target(&self) -> String {
        match self.goal {
            Goal::RatioAtLeast(x) => format!(">= {x} x"),
            Goal::RatioAtMost(x) => format!("<= {x} x"),
            Goal::ValueAtMost(x, unit) => format!("<= {x} {unit}"),
        }
    }

    fn met(&self) -> bool {
        match self.goal {
            Goal::RatioAtLeast(x) => self.ratio().is_some_and(|r| r >= x),
            Goal::RatioAtMost(x) => self.ratio().is_some_and(|r| r <= x),
            Goal::ValueAtMost(x, _) => self.value.is_some_and(|v| v <= x),
        }
    }

    fn json(&self) -> JsonRow<'_> {
        let round = |v: f64| (v * 1000.0).round() / 1000.0;
        JsonRow {
            figure: &self.figure,
            value: self.value.map(round),
            baseline: self.baseline.map(round),
            ratio: self.ratio().map(round),
            target: self.target(),
            met: self.met(),
        }
    }
}

/// `--format json`: `{"rows": [...]}`.
#[derive(Debug, serde::Serialize)]
struct JsonDoc<'a> {
    rows: Vec<JsonRow<'a>>,
}

/// A row of `--format json`, fields in the issue's order.
#[derive(Debug, serde::Serialize)]
struct JsonRow<'a> {
    figure: &'a str,
    value: Option<f64>,
    baseline: Option<f64>,
    ratio: Option<f64>,
    target: String,
    met: bool,
}

fn fmt_num(v: Option<f64>, unit: &str) -> String {
    match v {
        None => "-".into(),
        Some(v) if v >= 100.0 => format!("{v:.0} {unit}"),
        Some(v) => format!("{v:.2} {unit}"),
    }
}

fn table_header() -> String {
    format!(
        "{:<58} {:>16} {:>16} {:>7} {:>12} {:>4}",
        "figure", "value", "baseline", "ratio", "target", "met"
    )
}

fn table_line(r: &SuiteRow) -> String {
    format!(
        "{:<58} {:>16} {:>16} {:>7} {:>12} {:>4}",
        r.figure,
        fmt_num(r.value, r.unit),
        fmt_num(r.baseline, r.unit),
        r.ratio().map_or_else(|| "-".into(), |x| format!("{x:.2}")),
        r.target(),
        if r.met() { "yes" } else { "no" }
    )
}

/// Runs the suite; exit 0 when it completed (targets met or not), 1 on a setup failure.
pub(crate) fn run(args: SuiteArgs) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("Error: starting the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    let servers = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("suite-server")
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("Error: starting the servers' runtime: {e}");
            return ExitCode::from(1);
        }
    };
    let rows = runtime.block_on(suite(&args, servers.handle()));
    servers.shutdown_timeout(Duration::from_secs(5));
    match args.format {
        Format::Table => {
            println!("{}", table_header());
            for r in &rows {
                println!("{}", table_line(r));
            }
        }
        Format::Json => {
            // Serialised from structs, not a `Value` (whose map sorts keys): the fields
            // keep the issue's order.
            let doc = JsonDoc {
                rows: rows.iter().map(SuiteRow::json).collect(),
            };
            println!("{}", serde_json::to_string_pretty(&doc).unwrap_or_default());
        }
    }
    ExitCode::SUCCESS
}

async fn suite(args: &SuiteArgs, servers: &tokio::runtime::Handle) -> Vec<SuiteRow> {
    let plan = Plan::of(args);
    let started = Instant::now();
    let cpus = std::thread::available_parallelism().map_or(0, std::num::NonZeroUsize::get);
    eprintln!(
        "leash bench suite: {cpus} CPUs, {} connections, {} round(s) of {}s (+{}s warm-up){}",
        args.concurrency,
        plan.rounds,
        plan.duration.as_secs(),
        plan.warmup.as_secs(),
        if args.quick { ", quick" } else { "" }
    );
    let mut rows = Vec::new();
    let runs = |p: Part| args.only.contains(&p);
    if runs(Part::Http) {
        rows.extend(http_part(args, &plan, servers).await);
    }
    if runs(Part::Audit) {
        rows.extend(audit_part(args, &plan).await);
    }
    if runs(Part::Database) {
        rows.extend(database_part(args, &plan).await);
    }
    if runs(Part::Startup) {
        rows.extend(startup_part(&plan).await);
    }
    if runs(Part::Agent) {
        rows.extend(agent_part(args, &plan, servers).await);
    }
    eprintln!(
        "leash bench suite: done in {:.0}s",
        started.elapsed().as_secs_f64()
    );
    rows
}

fn median(mut v: Vec<f64>) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    Some(v[v.len() / 2])
}

fn tempdir(what: &str) -> Result<tempfile::TempDir, String> {
    tempfile::Builder::new()
        .prefix(&format!("leash-suite-{what}-"))
        .tempdir()
        .map_err(|e| format!("creating a temporary directory: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn row(value: Option<f64>, baseline: Option<f64>, goal: Goal) -> SuiteRow {
        SuiteRow {
            figure: "f".into(),
            value,
            baseline,
            goal,
            unit: "",
        }
    }

    #[test]
    fn targets_are_judged_on_the_ratio_or_the_value() {
        assert!(row(Some(8.0), Some(10.0), Goal::RatioAtLeast(0.8)).met());
        assert!(!row(Some(7.9), Some(10.0), Goal::RatioAtLeast(0.8)).met());
        assert!(row(Some(4.0), Some(1.0), Goal::RatioAtMost(5.0)).met());
        assert!(!row(Some(6.0), Some(1.0), Goal::RatioAtMost(5.0)).met());
        assert!(row(Some(1.5), Some(0.1), Goal::ValueAtMost(2.0, "s")).met());
        assert!(!row(None, Some(1.0), Goal::RatioAtLeast(0.1)).met());
        assert!(!row(Some(1.0), Some(0.0), Goal::RatioAtLeast(0.1)).met());
    }

    #[test]
    fn json_rows_have_exactly_the_issue_fields() {
        let v = serde_json::to_string(&row(Some(5.0), Some(10.0), Goal::RatioAtLeast(0.5)).json())
            .unwrap();
        assert_eq!(
            v,
            r#"{"figure":"f","value":5.0,"baseline":10.0,"ratio":0.5,"target":">= 0.5 x","met":true}"#
        );
        let none =
            serde_json::to_value(row(None, None, Goal::ValueAtMost(8.0, "MiB")).json()).unwrap();
        assert!(none["value"].is_null() && none["ratio"].is_null());
        assert_eq!(none["met"], json!(false));
    }

    #[test]
    fn table_lines_line_up() {
        let r = row(Some(12345.0), Some(20000.0), Goal::RatioAtLeast(0.5));
        assert_eq!(
            table_line(&r).chars().count(),
            table_header().chars().count()
        );
    }

    #[test]
    fn medians() {
        assert_eq!(median(vec![3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(vec![]), None);
    }
}
