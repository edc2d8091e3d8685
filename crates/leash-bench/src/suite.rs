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
//! * `leash agent`'s idle RSS with three templates renewing (the `leash` binary next to
//!   this one).
//!
//! Throughput figures are medians of `rounds` runs interleaved with their baselines.
//! Progress goes to stderr, the table (or JSON) to stdout. A part that cannot run (no
//! PostgreSQL, no `leash` binary) yields rows without a value, `met: false`, and says why.
//!
//! Invariants: everything the suite creates lives in temporary directories or carries a
//! random tag in PostgreSQL and is removed at the end; no secret is printed.

use std::path::{Path, PathBuf};
use std::process::{ExitCode, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use hyper::Method;
use hyper::header::HeaderValue;
use leash_client::{Client, SecretString};
use leash_types::{ExposeSecret, SecretBytes, SystemClock};
use serde_json::{Value, json};
use tokio::io::AsyncWriteExt as _;

use crate::Format;
use crate::bench::driver::{RequestSpec, Target};
use crate::bench::{Created, Load, Scenario, measure, setup};
use crate::bench_leases::{self, Phase, Server};

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
    /// `leash agent` idle memory.
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

// ---------------------------------------------------------------------------------------
// HTTP: ceiling, unaudited, audited, p99 at half load
// ---------------------------------------------------------------------------------------

/// The HTTP ceiling: one handler answering [`CEILING_BODY`], on `leash_http::serve`.
async fn start_ceiling(
    servers: &tokio::runtime::Handle,
) -> Result<(Target, tokio::sync::oneshot::Sender<()>), String> {
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let listener = servers
        .spawn(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| format!("binding the ceiling server: {e}"))?;
    let addr = listener.local_addr().map_err(|e| e.to_string())?;
    let app = axum::Router::new().fallback(|| async {
        (
            [(hyper::header::CONTENT_TYPE, "application/json")],
            CEILING_BODY,
        )
    });
    servers.spawn(async move {
        let shutdown = async move {
            let _ = stop_rx.await;
        };
        if let Err(e) = leash_http::serve(listener, app, None, shutdown).await {
            eprintln!("warning: the ceiling server stopped: {e}");
        }
    });
    Ok((target_of(addr)?, stop_tx))
}

fn target_of(addr: std::net::SocketAddr) -> Result<Target, String> {
    Ok(Target {
        addr,
        host: HeaderValue::from_str(&addr.to_string()).map_err(|e| e.to_string())?,
    })
}

/// An in-process leash on the servers' runtime, its data in `dir`.
async fn start_leash(
    servers: &tokio::runtime::Handle,
    dir: &Path,
) -> Result<(Server, Client, SecretString), String> {
    let key = leash_storage::Keyring::generate_master();
    let root = SecretString::from(format!("suite-root-{}", leash_types::random::base62(24)));
    let (d, r) = (dir.to_path_buf(), root.clone());
    let server = servers
        .spawn(async move { Server::launch(&d, &key, Arc::new(SystemClock), &r).await })
        .await
        .map_err(|e| e.to_string())?
        .map_err(bench_leases::error_text)?;
    let client = server.client().map_err(bench_leases::error_text)?;
    Ok((server, client, root))
}

async fn http_part(
    args: &SuiteArgs,
    plan: &Plan,
    servers: &tokio::runtime::Handle,
) -> Vec<SuiteRow> {
    let scenarios = [
        Scenario::KvRead,
        Scenario::TokenLookup,
        Scenario::TokenCreate,
    ];
    let mut rows = Vec::new();
    let result = http_measure(args, plan, servers, &scenarios).await;
    let m = match result {
        Ok(m) => m,
        Err(e) => {
            eprintln!("http: not measured: {e}");
            HttpFigures::default()
        }
    };
    let names = |s: Scenario| match s {
        Scenario::KvRead => "policy-checked KV read",
        Scenario::TokenLookup => "token lookup-self",
        Scenario::TokenCreate => "durable token creation",
    };
    for (i, s) in scenarios.iter().enumerate() {
        let target = if *s == Scenario::TokenCreate {
            0.3
        } else {
            0.5
        };
        rows.push(SuiteRow {
            figure: format!("{}, unaudited vs HTTP ceiling (req/s)", names(*s)),
            value: m.unaudited.get(i).copied().flatten(),
            baseline: m.ceiling,
            goal: Goal::RatioAtLeast(target),
            unit: "",
        });
    }
    for (i, s) in scenarios.iter().enumerate() {
        rows.push(SuiteRow {
            figure: format!("{}, audited vs unaudited (req/s)", names(*s)),
            value: m.audited.get(i).copied().flatten(),
            baseline: m.unaudited.get(i).copied().flatten(),
            goal: Goal::RatioAtLeast(0.8),
            unit: "",
        });
    }
    rows.push(SuiteRow {
        figure: "audited KV read at half peak, open loop: p99 vs p50 (ms)".into(),
        value: m.p99_ms,
        baseline: m.p50_ms,
        goal: Goal::RatioAtMost(5.0),
        unit: "ms",
    });
    rows
}

#[derive(Debug, Default)]
struct HttpFigures {
    ceiling: Option<f64>,
    /// By scenario, in the order given.
    unaudited: Vec<Option<f64>>,
    audited: Vec<Option<f64>>,
    p50_ms: Option<f64>,
    p99_ms: Option<f64>,
}

async fn http_measure(
    args: &SuiteArgs,
    plan: &Plan,
    servers: &tokio::runtime::Handle,
    scenarios: &[Scenario],
) -> Result<HttpFigures, String> {
    let dir = tempdir("http")?;
    let (ceiling_target, ceiling_stop) = start_ceiling(servers).await?;
    let (server, client, root) = start_leash(servers, &dir.path().join("data")).await?;
    let target = target_of(server.addr)?;
    let outcome = async {
        client
            .policy_write(
                "bench",
                "path \"secret/data/bench/*\" {\n  capabilities = [\"read\"]\n}\n",
            )
            .await
            .map_err(|e| format!("writing the bench policy: {e}"))?;
        let mut created = Created::default();
        let mut specs = Vec::new();
        for s in scenarios {
            specs.push(Arc::new(
                setup(*s, &client, &root, &mut created)
                    .await
                    .map_err(|e| format!("{e:?}"))?,
            ));
        }
        let load = Load {
            concurrency: args.concurrency,
            warmup: plan.warmup,
            duration: plan.duration,
            rate: None,
        };
        let ceiling_spec = Arc::new(RequestSpec {
            method: Method::GET,
            path: "/v1/secret/data/bench/item".into(),
            token: specs.first().and_then(|s| s.token.clone()),
            body: None,
        });
        let audit_file = dir.path().join("audit.log");
        let mut ceiling = Vec::new();
        let mut unaudited = vec![Vec::new(); scenarios.len()];
        let mut audited = vec![Vec::new(); scenarios.len()];
        for round in 1..=plan.rounds {
            eprintln!("http: round {round}/{}: ceiling", plan.rounds);
            let r = measure("ceiling", Arc::clone(&ceiling_spec), &ceiling_target, &load).await;
            report_errors(&r);
            ceiling.push(r.throughput);
            for (i, s) in scenarios.iter().enumerate() {
                eprintln!(
                    "http: round {round}/{}: {} unaudited",
                    plan.rounds,
                    s.name()
                );
                let r = measure(s.name(), Arc::clone(&specs[i]), &target, &load).await;
                report_errors(&r);
                unaudited[i].push(r.throughput);
            }
            enable_audit(&client, &audit_file).await?;
            for (i, s) in scenarios.iter().enumerate() {
                eprintln!("http: round {round}/{}: {} audited", plan.rounds, s.name());
                let r = measure(s.name(), Arc::clone(&specs[i]), &target, &load).await;
                report_errors(&r);
                audited[i].push(r.throughput);
            }
            disable_audit(&client).await?;
        }
        let mut figures = HttpFigures {
            ceiling: median(ceiling),
            unaudited: unaudited.into_iter().map(median).collect(),
            audited: audited.into_iter().map(median).collect(),
            ..HttpFigures::default()
        };
        // p99 at half the audited peak of KV reads (the first scenario), open loop.
        if let Some(peak) = figures
            .audited
            .first()
            .copied()
            .flatten()
            .filter(|p| *p > 0.0)
        {
            enable_audit(&client, &audit_file).await?;
            let rate = peak / 2.0;
            eprintln!("http: audited KV reads at {rate:.0}/s (half the peak), open loop");
            let r = measure(
                "kv-read",
                Arc::clone(&specs[0]),
                &target,
                &Load {
                    rate: Some(rate),
                    ..load
                },
            )
            .await;
            report_errors(&r);
            disable_audit(&client).await?;
            figures.p50_ms = Some(r.p50.as_secs_f64() * 1e3);
            figures.p99_ms = Some(r.p99.as_secs_f64() * 1e3);
        }
        for t in &created.tokens {
            let _ = client.token_revoke(t).await;
        }
        Ok::<_, String>(figures)
    }
    .await;
    let _ = ceiling_stop.send(());
    let storage = server.stop().await;
    drop(storage);
    outcome
}

fn report_errors(r: &crate::bench::report::Report) {
    eprintln!(
        "  {:.0} req/s, p50 {}, p99 {}{}",
        r.throughput,
        crate::bench::report::fmt_latency(r.p50),
        crate::bench::report::fmt_latency(r.p99),
        if r.errors > 0 {
            format!(
                ", {} errors (first: {})",
                r.errors,
                r.first_error.as_deref().unwrap_or("")
            )
        } else {
            String::new()
        }
    );
}

async fn enable_audit(client: &Client, file: &Path) -> Result<(), String> {
    let body = json!({"type": "file", "options": {"file_path": file.display().to_string()}});
    client
        .write(&format!("sys/audit/{AUDIT_PATH}"), &body)
        .await
        .map(|_| ())
        .map_err(|e| format!("enabling the audit device: {e}"))
}

async fn disable_audit(client: &Client) -> Result<(), String> {
    client
        .delete(&format!("sys/audit/{AUDIT_PATH}"))
        .await
        .map(|_| ())
        .map_err(|e| format!("disabling the audit device: {e}"))
}

// ---------------------------------------------------------------------------------------
// The audit device alone against raw durable append
// ---------------------------------------------------------------------------------------

/// An entry shaped like a KV read's response entry (Vault's layout, ~1.5 KB).
fn sample_entry(h: &leash_audit::hash::Hasher, _raw: bool) -> Value {
    json!({
        "time": "2026-12-06T12:00:00.000000000Z",
        "type": "response",
        "auth": {
            "client_token": h.hmac("lsh.bench-client-token"),
            "accessor": h.hmac("bench-accessor"),
            "display_name": "token-leash-bench",
            "policies": ["bench", "default"],
            "token_policies": ["bench", "default"],
            "metadata": null,
            "entity_id": "",
            "token_type": "service",
            "token_ttl": 3600,
            "token_issue_time": "2026-12-06T11:00:00Z",
        },
        "request": {
            "id": "4b1c6a9e-7f1e-4b9a-9f7e-0a1b2c3d4e5f",
            "operation": "read",
            "mount_point": "secret/",
            "mount_type": "kv",
            "mount_accessor": "kv_0a1b2c3d",
            "client_token": h.hmac("lsh.bench-client-token"),
            "client_token_accessor": h.hmac("bench-accessor"),
            "namespace": {"id": "root"},
            "path": "secret/data/bench/item",
            "remote_address": "127.0.0.1",
            "remote_port": 40000,
            "headers": {"x-vault-request": [h.hmac("true")]},
        },
        "response": {
            "mount_point": "secret/",
            "mount_type": "kv",
            "mount_accessor": "kv_0a1b2c3d",
            "data": {
                "data": {"owner": h.hmac("bench"), "value": h.hmac("leash-bench")},
                "metadata": {
                    "created_time": h.hmac("2026-12-06T10:00:00Z"),
                    "custom_metadata": null,
                    "deletion_time": h.hmac(""),
                    "destroyed": false,
                    "version": 1,
                },
            },
        },
    })
}

async fn audit_part(args: &SuiteArgs, plan: &Plan) -> Vec<SuiteRow> {
    let (value, baseline) = match audit_measure(args, plan).await {
        Ok(v) => v,
        Err(e) => {
            eprintln!("audit: not measured: {e}");
            (None, None)
        }
    };
    vec![SuiteRow {
        figure: "audit device alone vs raw durable append (entries/s)".into(),
        value,
        baseline,
        goal: Goal::RatioAtLeast(0.5),
        unit: "",
    }]
}

async fn audit_measure(
    args: &SuiteArgs,
    plan: &Plan,
) -> Result<(Option<f64>, Option<f64>), String> {
    let dir = tempdir("audit")?;
    let writers = args.concurrency as usize;
    let mut device = Vec::new();
    let mut raw = Vec::new();
    for round in 1..=plan.rounds {
        let path = dir.path().join(format!("device-{round}.log"));
        eprintln!(
            "audit: round {round}/{}: the file device, {writers} writers",
            plan.rounds
        );
        let (rate, line_len) = device_rate(&path, writers, plan.audit_duration).await?;
        eprintln!("  {rate:.0} entries/s ({line_len} bytes a line)");
        device.push(rate);
        let raw_path = dir.path().join(format!("raw-{round}.log"));
        eprintln!(
            "audit: round {round}/{}: raw append, batches of {writers}",
            plan.rounds
        );
        let d = plan.audit_duration;
        let rate = tokio::task::spawn_blocking(move || raw_append(&raw_path, line_len, writers, d))
            .await
            .map_err(|e| e.to_string())??;
        eprintln!("  {rate:.0} entries/s");
        raw.push(rate);
        let _ = std::fs::remove_file(&path);
    }
    Ok((median(device), median(raw)))
}

/// Entries per second through a broker with one file device (default options), from
/// `writers` concurrent tasks; and the length of the line it wrote.
async fn device_rate(
    path: &Path,
    writers: usize,
    duration: Duration,
) -> Result<(f64, usize), String> {
    let broker = Arc::new(leash_audit::broker::Broker::new(
        leash_audit::broker::DEFAULT_DEADLINE,
    ));
    let cfg = leash_audit::config::DeviceConfig {
        path: "file/".into(),
        kind: "file".into(),
        description: String::new(),
        options: [("file_path".to_owned(), path.display().to_string())]
            .into_iter()
            .collect(),
        local: false,
    };
    broker
        .enable(cfg, SecretBytes::random(32), None)
        .await
        .map_err(|e| format!("enabling the device: {e}"))?;
    let stop = Arc::new(AtomicBool::new(false));
    let count = Arc::new(AtomicU64::new(0));
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..writers {
        let (b, stop, count) = (Arc::clone(&broker), Arc::clone(&stop), Arc::clone(&count));
        tasks.spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                if b.log(&sample_entry).await.is_err() {
                    return Err("an entry failed");
                }
                count.fetch_add(1, Ordering::Relaxed);
            }
            Ok(())
        });
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = count.load(Ordering::Relaxed);
    let start = Instant::now();
    tokio::time::sleep(duration).await;
    let n = count.load(Ordering::Relaxed) - before;
    let secs = start.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    while let Some(r) = tasks.join_next().await {
        r.map_err(|e| e.to_string())??;
    }
    broker.disable("file/").await;
    // The line as the device wrote it (with the chain's field): the last one.
    let text = std::fs::read(path).map_err(|e| e.to_string())?;
    let line_len = text
        .split(|b| *b == b'\n')
        .rev()
        .find(|l| !l.is_empty())
        .map_or(1500, |l| l.len() + 1);
    Ok((n as f64 / secs, line_len))
}

/// Raw durable append: lines of `line_len` bytes in batches of `batch`, one `write` and
/// one `fdatasync` per batch, for `duration`. Entries per second.
fn raw_append(
    path: &Path,
    line_len: usize,
    batch: usize,
    duration: Duration,
) -> Result<f64, String> {
    use std::io::Write as _;
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(|e| e.to_string())?;
    let mut line = vec![b'x'; line_len.max(2) - 1];
    line.push(b'\n');
    let buf: Vec<u8> = line.repeat(batch);
    let start = Instant::now();
    let mut n = 0u64;
    while start.elapsed() < duration {
        file.write_all(&buf).map_err(|e| e.to_string())?;
        file.sync_data().map_err(|e| e.to_string())?;
        n += batch as u64;
    }
    let secs = start.elapsed().as_secs_f64();
    drop(file);
    let _ = std::fs::remove_file(path);
    Ok(n as f64 / secs)
}

// ---------------------------------------------------------------------------------------
// Database
// ---------------------------------------------------------------------------------------

async fn database_part(args: &SuiteArgs, plan: &Plan) -> Vec<SuiteRow> {
    eprintln!(
        "database: {} credentials (raw and through leash), {} expiring together",
        plan.issue, plan.expire
    );
    let a = bench_leases::BenchLeasesArgs::for_suite(
        args.postgres.clone(),
        plan.issue,
        plan.expire,
        1,
        vec![Phase::Raw, Phase::Issue, Phase::Expire],
    );
    let found = match bench_leases::collect(&a).await {
        Ok(rows) => rows,
        Err(e) => {
            eprintln!("database: not measured: {}", bench_leases::error_text(e));
            Vec::new()
        }
    };
    let rate = |prefix: &str| {
        found
            .iter()
            .find(|r| r.name.starts_with(prefix))
            .and_then(|r| r.rate)
    };
    vec![
        SuiteRow {
            figure: format!(
                "database issuance, scram 4096, vs raw PostgreSQL ({} creds/s)",
                plan.issue
            ),
            value: rate("leash issue, scram 4096"),
            baseline: rate("raw create, scram 4096"),
            goal: Goal::RatioAtLeast(0.9),
            unit: "",
        },
        SuiteRow {
            figure: format!(
                "mass expiry of {} group-role creds vs batched DROP ROLE (/s)",
                plan.expire
            ),
            value: rate("expire "),
            baseline: rate("raw drop "),
            goal: Goal::RatioAtLeast(0.8),
            unit: "",
        },
    ]
}

// ---------------------------------------------------------------------------------------
// Start-up with many live leases
// ---------------------------------------------------------------------------------------

/// What the start-up probe (a child process) reports.
#[derive(Debug, serde::Deserialize)]
struct ProbeReport {
    startup_ms: f64,
    rss_kib: u64,
}

async fn startup_part(plan: &Plan) -> Vec<SuiteRow> {
    let n = plan.startup_leases;
    let mut found: Vec<Option<ProbeReport>> = Vec::new();
    for count in [0, n] {
        match startup_once(count).await {
            Ok(r) => {
                eprintln!(
                    "startup: {count} leases: {:.1} ms, RSS {:.1} MiB",
                    r.startup_ms,
                    r.rss_kib as f64 / 1024.0
                );
                found.push(Some(r));
            }
            Err(e) => {
                eprintln!("startup: {count} leases: not measured: {e}");
                found.push(None);
            }
        }
    }
    let (zero, many) = (&found[0], &found[1]);
    let secs = |r: &Option<ProbeReport>| r.as_ref().map(|r| r.startup_ms / 1e3);
    let mib = |r: &Option<ProbeReport>| r.as_ref().map(|r| r.rss_kib as f64 / 1024.0);
    vec![
        SuiteRow {
            figure: format!("start-up with {n} live leases vs none (s)"),
            value: secs(many),
            baseline: secs(zero),
            goal: Goal::ValueAtMost(2.0, "s"),
            unit: "s",
        },
        SuiteRow {
            figure: format!("start-up RSS growth with {n} live leases (MiB)"),
            value: match (mib(many), mib(zero)) {
                (Some(m), Some(z)) => Some(m - z),
                _ => None,
            },
            baseline: mib(zero),
            goal: Goal::ValueAtMost(64.0, "MiB"),
            unit: "MiB",
        },
    ]
}

/// Prepares a data directory with `n` live leases, then starts a server on it in a
/// child process (this binary's hidden `suite-startup-probe`) and returns its report.
async fn startup_once(n: u32) -> Result<ProbeReport, String> {
    let dir = tempdir("startup")?;
    let key = leash_storage::Keyring::generate_master();
    let root = SecretString::from(format!("suite-root-{}", leash_types::random::base62(24)));
    bench_leases::prepare_data_dir(dir.path(), &key, &root, n)
        .await
        .map_err(bench_leases::error_text)?;
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let mut child = tokio::process::Command::new(exe)
        .arg("suite-startup-probe")
        .arg("--dir")
        .arg(dir.path())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| format!("starting the probe: {e}"))?;
    let mut input = hex(key.expose());
    input.push('\n');
    input.push_str(root.expose_secret());
    input.push('\n');
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(input.as_bytes())
            .await
            .map_err(|e| format!("talking to the probe: {e}"))?;
    }
    let out = tokio::time::timeout(Duration::from_secs(300), child.wait_with_output())
        .await
        .map_err(|_| "the probe did not finish within 300 s".to_owned())?
        .map_err(|e| e.to_string())?;
    if !out.status.success() {
        return Err(format!("the probe failed ({})", out.status));
    }
    serde_json::from_slice(&out.stdout).map_err(|e| format!("the probe's report: {e}"))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

/// Options of the hidden start-up probe.
#[derive(clap::Args, Debug)]
pub(crate) struct ProbeArgs {
    /// Data directory prepared by the suite; the key and root token come on stdin.
    #[arg(long)]
    dir: PathBuf,
}

/// The child side of the start-up figure: reads the key and root token from stdin, starts
/// a server on `--dir`, waits for the first `sys/health` 200, prints the time and its
/// own RSS as JSON.
pub(crate) fn probe(args: ProbeArgs) -> ExitCode {
    let mut key = String::new();
    let mut root = String::new();
    let stdin = std::io::stdin();
    if stdin.read_line(&mut key).is_err() || stdin.read_line(&mut root).is_err() {
        eprintln!("Error: the probe reads the key and the root token on stdin");
        return ExitCode::from(1);
    }
    let Some(key) = unhex(key.trim()).map(SecretBytes::new) else {
        eprintln!("Error: the key is not hex");
        return ExitCode::from(1);
    };
    let root = SecretString::from(root.trim().to_owned());
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
    let outcome = runtime.block_on(async {
        let start = Instant::now();
        let server = Server::launch(&args.dir, &key, Arc::new(SystemClock), &root).await?;
        bench_leases::first_health(server.addr).await?;
        let elapsed = start.elapsed();
        let rss = proc_status_kib(None, "VmRSS").unwrap_or(0);
        let storage = server.stop().await;
        drop(storage);
        Ok::<_, bench_leases::Error>((elapsed, rss))
    });
    match outcome {
        Ok((elapsed, rss)) => {
            println!(
                "{}",
                json!({"startup_ms": elapsed.as_secs_f64() * 1e3, "rss_kib": rss})
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("Error: {}", bench_leases::error_text(e));
            ExitCode::from(1)
        }
    }
}

/// A `kB` field of `/proc/<pid>/status` (`None`: this process).
fn proc_status_kib(pid: Option<u32>, field: &str) -> Option<u64> {
    let path = match pid {
        Some(p) => format!("/proc/{p}/status"),
        None => "/proc/self/status".into(),
    };
    let text = std::fs::read_to_string(path).ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

// ---------------------------------------------------------------------------------------
// leash agent idle memory
// ---------------------------------------------------------------------------------------

async fn agent_part(
    args: &SuiteArgs,
    plan: &Plan,
    servers: &tokio::runtime::Handle,
) -> Vec<SuiteRow> {
    let (rss, anon) = match agent_measure(args, plan, servers).await {
        Ok((rss, anon)) => {
            eprintln!("agent: VmRSS {rss:.1} MiB, RssAnon {anon:.1} MiB");
            (Some(rss), Some(anon))
        }
        Err(e) => {
            eprintln!("agent: not measured: {e}");
            (None, None)
        }
    };
    vec![
        SuiteRow {
            figure: "leash agent idle RSS, three templates renewing (MiB)".into(),
            value: rss,
            baseline: None,
            goal: Goal::ValueAtMost(8.0, "MiB"),
            unit: "MiB",
        },
        SuiteRow {
            figure: "leash agent own anonymous memory (RssAnon, MiB)".into(),
            value: anon,
            baseline: None,
            goal: Goal::ValueAtMost(2.0, "MiB"),
            unit: "MiB",
        },
    ]
}

/// The `leash` binary next to this one.
fn leash_binary() -> Result<PathBuf, String> {
    let me = std::env::current_exe().map_err(|e| e.to_string())?;
    let bin = me
        .parent()
        .map(|d| d.join(format!("leash{}", std::env::consts::EXE_SUFFIX)))
        .filter(|p| p.is_file())
        .ok_or_else(|| {
            "no `leash` binary next to leash-bench (cargo build --release -p leash)".to_owned()
        })?;
    Ok(bin)
}

async fn agent_measure(
    args: &SuiteArgs,
    plan: &Plan,
    servers: &tokio::runtime::Handle,
) -> Result<(f64, f64), String> {
    let bin = leash_binary()?;
    let dir = tempdir("agent")?;
    let (server, client, _root) = start_leash(servers, &dir.path().join("data")).await?;
    let db = bench_leases::ScratchDb::create(&args.postgres)
        .await
        .map_err(bench_leases::error_text)?;
    let outcome = async {
        let role = format!("ag{}", db.tag());
        let call = |method: &'static str, path: String, body: Value| {
            let client = client.clone();
            async move {
                let r = client
                    .request(method, &path, Some(&body))
                    .await
                    .map_err(|e| format!("{method} {path}: {e}"))?;
                if r.is_success() {
                    Ok(r.body)
                } else {
                    Err(format!("{method} {path}: HTTP {}: {}", r.status, r.errors().join("; ")))
                }
            }
        };
        call("POST", "sys/mounts/database".into(), json!({"type": "database"})).await?;
        call("POST", "database/config/pg".into(), db.leash_config()).await?;
        call(
            "POST",
            format!("database/roles/{role}"),
            json!({
                "db_name": "pg",
                "creation_statements": ["CREATE ROLE \"{{name}}\" WITH LOGIN PASSWORD '{{password}}' VALID UNTIL '{{expiration}}';"],
                "default_ttl": "15s",
                "max_ttl": "1h",
            }),
        )
        .await?;
        call(
            "POST",
            "secret/data/agents/config/app".into(),
            json!({"data": {"model": "small", "max_tokens": 512}}),
        )
        .await?;
        call(
            "PUT",
            "sys/policy/suite-agent".into(),
            json!({"policy": format!("path \"database/creds/{role}\" {{ capabilities = [\"read\"] }}\npath \"secret/data/agents/*\" {{ capabilities = [\"read\"] }}\npath \"sys/leases/revoke\" {{ capabilities = [\"update\"] }}\n")}),
        )
        .await?;
        let token = call(
            "POST",
            "auth/token/create".into(),
            json!({"policies": ["suite-agent"], "ttl": "1h"}),
        )
        .await?
        .and_then(|b| b.pointer("/auth/client_token").and_then(Value::as_str).map(str::to_owned))
        .ok_or("auth/token/create returned no token")?;
        let work = dir.path();
        let token_file = work.join("token");
        write_private(&token_file, token.as_bytes())?;
        let hcl = agent_config(server.addr, work, &token_file, &role);
        std::fs::write(work.join("agent.hcl"), hcl).map_err(|e| e.to_string())?;
        let mut child = tokio::process::Command::new(&bin)
            .arg("agent")
            .arg("-config")
            .arg(work.join("agent.hcl"))
            .env("LEASH_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| format!("starting {}: {e}", bin.display()))?;
        let pid = child.id().ok_or("the agent exited at once")?;
        let measured = async {
            let files = ["db.json", "db.env", "config.json"].map(|f| work.join(f));
            let deadline = Instant::now() + Duration::from_secs(30);
            while !files.iter().all(|f| f.metadata().is_ok_and(|m| m.len() > 0)) {
                if Instant::now() > deadline {
                    return Err("the agent did not render its three templates within 30 s".to_owned());
                }
                if let Ok(Some(status)) = child.try_wait() {
                    return Err(format!("the agent exited ({status})"));
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            eprintln!("agent: templates rendered; idling {}s", plan.agent_idle.as_secs());
            tokio::time::sleep(plan.agent_idle).await;
            let rss = proc_status_kib(Some(pid), "VmRSS").ok_or("no VmRSS")?;
            let anon = proc_status_kib(Some(pid), "RssAnon").ok_or("no RssAnon")?;
            Ok((rss as f64 / 1024.0, anon as f64 / 1024.0))
        }
        .await;
        // SIGTERM: the agent revokes its leases on the way out.
        let _ = tokio::process::Command::new("kill")
            .arg("-TERM")
            .arg(pid.to_string())
            .status()
            .await;
        if tokio::time::timeout(Duration::from_secs(10), child.wait()).await.is_err() {
            let _ = child.kill().await;
        }
        let _ = call(
            "PUT",
            "sys/leases/revoke-prefix/database/creds/".into(),
            json!({}),
        )
        .await;
        measured
    }
    .await;
    let storage = server.stop().await;
    drop(storage);
    db.drop_all().await;
    outcome
}

fn write_private(path: &Path, bytes: &[u8]) -> Result<(), String> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let mut f = std::fs::OpenOptions::new()
        .create_new(true)
        .write(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| e.to_string())?;
    f.write_all(bytes).map_err(|e| e.to_string())
}

fn agent_config(addr: std::net::SocketAddr, work: &Path, token_file: &Path, role: &str) -> String {
    let w = work.display();
    format!(
        r#"vault {{ address = "http://{addr}" }}
auto_auth {{
  method "token_file" {{ config = {{ token_file_path = "{token}" }} }}
}}
template {{
  destination = "{w}/db.json"
  contents = <<EOT
{{{{- with secret "database/creds/{role}" -}}}}
{{
  "username": "{{{{ .Data.username }}}}",
  "password": "{{{{ .Data.password }}}}",
  "ttl_seconds": {{{{ .Data.lease_duration }}}}
}}
{{{{- end -}}}}
EOT
}}
template {{
  destination = "{w}/db.env"
  contents = <<EOT
{{{{ with secret "database/creds/{role}" }}}}PGUSER={{{{ .Data.username }}}}
PGPASSWORD={{{{ .Data.password }}}}
{{{{ end }}}}
EOT
}}
template {{
  destination = "{w}/config.json"
  contents = "{{{{ with secret \"secret/data/agents/config/app\" }}}}{{{{ .Data.data | toJSONPretty }}}}{{{{ end }}}}"
}}
"#,
        token = token_file.display()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

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
    fn hex_round_trips() {
        assert_eq!(unhex(&hex(&[0, 1, 254, 255])), Some(vec![0, 1, 254, 255]));
        assert_eq!(unhex("abc"), None);
        assert_eq!(unhex("zz"), None);
    }

    #[test]
    fn medians() {
        assert_eq!(median(vec![3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(vec![]), None);
    }
}
