//! `leash bench`: measures a running server's throughput and latency over its HTTP API.
//!
//! Each of `--concurrency` keep-alive HTTP/1.1 connections is driven by its own task
//! (hyper's low-level client over a `TcpStream`, so the load generator stays cheap)
//! sending requests back to back (closed loop) or, with `--rate`, on a fixed schedule
//! (open loop). In open loop, latency is measured from the *scheduled* send time, so a
//! server that falls behind shows its queueing delay instead of hiding it (coordinated
//! omission). Each scenario runs `--warmup` unmeasured, then `--duration` measured.
//!
//! Scenarios: `token-create` (root token creates `bench` tokens), `token-lookup` (a
//! child token looks itself up), `kv-read` (a `bench`-policy token reads a KV v2
//! secret). Setup and cleanup go through `leash_client`; `--audit-file` enables a file
//! audit device for the run and disables it afterwards, even on error or Ctrl-C.
//!
//! Invariants: the run is bounded in time (warm-up + duration + a short grace per
//! scenario) and memory (fixed-size histograms); it refuses a non-loopback address unless
//! `--allow-remote`; tokens stay `SecretString`s and header values marked sensitive.
//! Not here: TLS (benchmark the plain listener), HTTP/2, distributed load.

pub(crate) mod driver;
pub(crate) mod histogram;
pub(crate) mod report;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use hyper::Method;
use hyper::header::HeaderValue;
use leash_client::{Client, ClientConfig, SecretString, TokenCreateRequest};
use serde_json::{Map, Value, json};
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::Format;
use driver::{RequestSpec, Schedule, Stats, Target, drive, token_header};
use report::{Report, json_report, table_header, table_row};

/// Upper bound of `--concurrency`.
const MAX_CONCURRENCY: u32 = 4096;
/// Upper bound of `--rate` (requests per second).
const MAX_RATE: f64 = 1_000_000.0;
/// Upper bound of `--duration` and `--warmup`.
const MAX_DURATION: Duration = Duration::from_secs(3600);
/// Audit device path used by `--audit-file`.
const AUDIT_PATH: &str = "bench-audit";
/// Policy the benchmark writes and its tokens carry.
const BENCH_POLICY: &str = "bench";
const BENCH_POLICY_HCL: &str = "path \"secret/data/bench/*\" {\n  capabilities = [\"read\"]\n}\n";

/// What to measure.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Scenario {
    /// `POST auth/token/create` with the root token.
    TokenCreate,
    /// `GET auth/token/lookup-self` with a child token.
    TokenLookup,
    /// `GET secret/data/bench/item` with a `bench`-policy token.
    KvRead,
}

impl Scenario {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Scenario::TokenCreate => "token-create",
            Scenario::TokenLookup => "token-lookup",
            Scenario::KvRead => "kv-read",
        }
    }
}

/// Options of `leash bench`.
#[derive(clap::Args, Debug)]
pub(crate) struct BenchArgs {
    /// Server address, plain HTTP [default: $LEASH_ADDR, $VAULT_ADDR or http://127.0.0.1:8200].
    #[arg(long, value_name = "URL")]
    address: Option<String>,
    /// Root token [default: $LEASH_TOKEN, $VAULT_TOKEN or ~/.leash-token].
    #[arg(long, value_name = "TOKEN", value_parser = parse_secret)]
    token: Option<SecretString>,
    /// Number of keep-alive connections, each driven by its own task.
    #[arg(long, default_value_t = 32,
          value_parser = clap::value_parser!(u32).range(1..=i64::from(MAX_CONCURRENCY)))]
    concurrency: u32,
    /// Measured time per scenario (`10s`, `1m`).
    #[arg(long, default_value = "10s", value_parser = parse_run_duration)]
    duration: Duration,
    /// Unmeasured warm-up per scenario.
    #[arg(long, default_value = "2s", value_parser = parse_warmup)]
    warmup: Duration,
    /// Fixed request rate across all connections (requests/s); default: as fast as possible.
    #[arg(long, value_name = "REQ_PER_S", value_parser = parse_rate)]
    rate: Option<f64>,
    /// Scenarios to run, comma-separated.
    #[arg(
        long,
        value_enum,
        value_delimiter = ',',
        default_value = "token-create,token-lookup,kv-read"
    )]
    scenario: Vec<Scenario>,
    /// Enable a file audit device writing here for the run, so figures are audited.
    #[arg(long, value_name = "PATH")]
    audit_file: Option<PathBuf>,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Table)]
    format: Format,
    /// Allow benchmarking a server that is not on a loopback address.
    #[arg(long)]
    allow_remote: bool,
    /// Worker threads of the load generator [default: number of CPUs].
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..=256))]
    threads: Option<u16>,
}

fn parse_secret(s: &str) -> Result<SecretString, std::convert::Infallible> {
    Ok(SecretString::from(s.to_owned()))
}

fn parse_bounded(s: &str, min: Duration) -> Result<Duration, String> {
    let d = leash_types::parse_duration(s).map_err(|e| e.to_string())?;
    if d < min || d > MAX_DURATION {
        return Err(format!(
            "must be between {}s and {}s",
            min.as_secs(),
            MAX_DURATION.as_secs()
        ));
    }
    Ok(d)
}

fn parse_run_duration(s: &str) -> Result<Duration, String> {
    parse_bounded(s, Duration::from_secs(1))
}

fn parse_warmup(s: &str) -> Result<Duration, String> {
    parse_bounded(s, Duration::ZERO)
}

fn parse_rate(s: &str) -> Result<f64, String> {
    let r: f64 = s.parse().map_err(|_| format!("not a number: {s:?}"))?;
    if !(r.is_finite() && r > 0.0 && r <= MAX_RATE) {
        return Err(format!("must be above 0 and at most {MAX_RATE}"));
    }
    Ok(r)
}

/// Runs the benchmark; exit 0 on completion (even with request errors, which are
/// reported), 1 on bad arguments or setup failure, 130 when interrupted.
pub(crate) fn run(args: BenchArgs) -> ExitCode {
    let threads = args.threads.map(usize::from).unwrap_or_else(|| {
        std::thread::available_parallelism()
            .map(std::num::NonZeroUsize::get)
            .unwrap_or(2)
    });
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("Error: starting the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    match runtime.block_on(bench(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(BenchError::Interrupted) => {
            eprintln!("Interrupted; cleaned up.");
            ExitCode::from(130)
        }
        Err(BenchError::Failed(msg)) => {
            eprintln!("Error: {msg}");
            ExitCode::from(1)
        }
    }
}

#[derive(Debug)]
pub(crate) enum BenchError {
    Failed(String),
    Interrupted,
}

pub(crate) fn failed(msg: impl std::fmt::Display) -> BenchError {
    BenchError::Failed(msg.to_string())
}

/// Parses `http://host[:port][/]` into `(host, port)`.
fn split_address(address: &str) -> Result<(String, u16), String> {
    if address.starts_with("https://") {
        return Err("bench speaks plain HTTP only; point it at a non-TLS listener".into());
    }
    let rest = address
        .strip_prefix("http://")
        .ok_or_else(|| format!("invalid address {address:?}: expected http://host:port"))?;
    let authority = rest.split('/').next().unwrap_or("");
    if authority.is_empty() || authority.contains('@') {
        return Err(format!(
            "invalid address {address:?}: expected http://host:port"
        ));
    }
    let bad = || format!("invalid address {address:?}: expected http://host:port");
    let (host, port) = if authority.starts_with('[') {
        let close = authority.find(']').ok_or_else(bad)?;
        let (host, rest) = authority.split_at(close + 1);
        match rest {
            "" => (host, 80),
            _ => {
                let p = rest.strip_prefix(':').ok_or_else(bad)?;
                (
                    host,
                    p.parse()
                        .map_err(|_| format!("invalid port in {address:?}"))?,
                )
            }
        }
    } else {
        match authority.rsplit_once(':') {
            Some((h, _)) if h.contains(':') => return Err(bad()),
            Some((h, p)) => (
                h,
                p.parse()
                    .map_err(|_| format!("invalid port in {address:?}"))?,
            ),
            None => (authority, 80),
        }
    };
    if host.is_empty() || host == "[]" {
        return Err(bad());
    }
    Ok((host.to_owned(), port))
}

async fn resolve_target(address: &str, allow_remote: bool) -> Result<Target, BenchError> {
    let (host, port) = split_address(address).map_err(failed)?;
    let lookup_host = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_owned();
    let addrs: Vec<SocketAddr> = tokio::net::lookup_host((lookup_host.as_str(), port))
        .await
        .map_err(|e| failed(format!("resolving {host}: {e}")))?
        .collect();
    let first = *addrs
        .first()
        .ok_or_else(|| failed(format!("{host} resolves to no address")))?;
    if !allow_remote && !addrs.iter().all(|a| a.ip().is_loopback()) {
        return Err(failed(format!(
            "{host} is not a loopback address; pass --allow-remote to load a remote server"
        )));
    }
    let host_header = HeaderValue::from_str(&format!("{host}:{port}"))
        .map_err(|_| failed(format!("invalid host {host:?}")))?;
    Ok(Target {
        addr: first,
        host: host_header,
    })
}

/// Tokens the setup created, revoked at the end.
#[derive(Default)]
pub(crate) struct Created {
    pub(crate) tokens: Vec<SecretString>,
}

async fn bench(args: BenchArgs) -> Result<(), BenchError> {
    let mut config = ClientConfig::from_env(crate::real_env).map_err(failed)?;
    if let Some(a) = &args.address {
        config.address = a.clone();
    }
    if let Some(t) = &args.token {
        config.token = Some(t.clone());
    }
    let root = config
        .token
        .clone()
        .ok_or_else(|| failed("no token: pass --token or set LEASH_TOKEN"))?;
    let address = config.address.trim_end_matches('/').to_owned();
    let target = resolve_target(&address, args.allow_remote).await?;
    let client = Client::new(config).map_err(failed)?;

    describe(&args, &address);
    let mut created = Created::default();
    if let Some(path) = &args.audit_file {
        let body = json!({"type": "file", "options": {"file_path": path.display().to_string()}});
        client
            .write(&format!("sys/audit/{AUDIT_PATH}"), &body)
            .await
            .map_err(|e| failed(format!("enabling audit device {AUDIT_PATH}/: {e}")))?;
    }
    let outcome = tokio::select! {
        r = run_scenarios(&args, &client, &root, &target, &mut created) => r,
        _ = tokio::signal::ctrl_c() => Err(BenchError::Interrupted),
    };
    cleanup(&args, &client, &created).await;
    let reports = outcome?;
    if args.format == Format::Json {
        println!(
            "{}",
            serde_json::to_string_pretty(&json_report(&args, &address, &reports))
                .unwrap_or_default()
        );
    }
    Ok(())
}

fn describe(args: &BenchArgs, address: &str) {
    let mode = match args.rate {
        Some(r) => format!("open loop at {r} req/s"),
        None => "closed loop".to_owned(),
    };
    let audit = match &args.audit_file {
        Some(p) => format!("file audit device -> {}", p.display()),
        None => "no audit device added".to_owned(),
    };
    eprintln!(
        "leash bench: {address}, {} connections, {}s warm-up + {}s per scenario, {mode}, {audit}",
        args.concurrency,
        args.warmup.as_secs(),
        args.duration.as_secs()
    );
}

async fn cleanup(args: &BenchArgs, client: &Client, created: &Created) {
    for t in &created.tokens {
        if let Err(e) = client.token_revoke(t).await {
            eprintln!("warning: revoking a setup token: {e}");
        }
    }
    if args.audit_file.is_some()
        && let Err(e) = client.delete(&format!("sys/audit/{AUDIT_PATH}")).await
    {
        eprintln!("warning: disabling audit device {AUDIT_PATH}/: {e}");
    }
}

async fn run_scenarios(
    args: &BenchArgs,
    client: &Client,
    root: &SecretString,
    target: &Target,
    created: &mut Created,
) -> Result<Vec<Report>, BenchError> {
    client
        .policy_write(BENCH_POLICY, BENCH_POLICY_HCL)
        .await
        .map_err(|e| failed(format!("writing policy {BENCH_POLICY}: {e}")))?;
    let mut reports = Vec::new();
    if args.format == Format::Table {
        println!("{}", table_header());
    }
    for &scenario in &args.scenario {
        let spec = Arc::new(setup(scenario, client, root, created).await?);
        let report = measure(scenario.name(), spec, target, &Load::of(args)).await;
        if args.format == Format::Table {
            println!("{}", table_row(&report));
            if let Some(e) = &report.first_error {
                println!("  first error: {e}");
            }
        }
        reports.push(report);
    }
    Ok(reports)
}

/// Prepares a scenario on the server and returns the request it repeats.
pub(crate) async fn setup(
    scenario: Scenario,
    client: &Client,
    root: &SecretString,
    created: &mut Created,
) -> Result<RequestSpec, BenchError> {
    let child = |policies: Vec<String>| TokenCreateRequest {
        policies,
        ttl: Some("1h".into()),
        display_name: Some("leash-bench".into()),
        ..Default::default()
    };
    match scenario {
        Scenario::TokenCreate => {
            let body = json!({"policies": [BENCH_POLICY], "ttl": "1h"});
            Ok(RequestSpec {
                method: Method::POST,
                path: "/v1/auth/token/create".into(),
                token: Some(token_header(root)?),
                body: Some(Bytes::from(body.to_string())),
            })
        }
        Scenario::TokenLookup => {
            let auth = client
                .token_create(&child(Vec::new()))
                .await
                .map_err(|e| failed(format!("creating the lookup token: {e}")))?;
            created.tokens.push(auth.client_token.clone());
            Ok(RequestSpec {
                method: Method::GET,
                path: "/v1/auth/token/lookup-self".into(),
                token: Some(token_header(&auth.client_token)?),
                body: None,
            })
        }
        Scenario::KvRead => {
            let mut data = Map::new();
            data.insert("value".into(), Value::String("leash-bench".into()));
            data.insert("owner".into(), Value::String("bench".into()));
            client
                .kv2_put("secret", "bench/item", &data)
                .await
                .map_err(|e| failed(format!("writing secret/data/bench/item: {e}")))?;
            let auth = client
                .token_create(&child(vec![BENCH_POLICY.into()]))
                .await
                .map_err(|e| failed(format!("creating the kv-read token: {e}")))?;
            created.tokens.push(auth.client_token.clone());
            Ok(RequestSpec {
                method: Method::GET,
                path: "/v1/secret/data/bench/item".into(),
                token: Some(token_header(&auth.client_token)?),
                body: None,
            })
        }
    }
}

/// How one scenario is driven.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Load {
    pub(crate) concurrency: u32,
    pub(crate) warmup: Duration,
    pub(crate) duration: Duration,
    /// Fixed total rate (open loop); `None`: closed loop.
    pub(crate) rate: Option<f64>,
}

impl Load {
    fn of(args: &BenchArgs) -> Load {
        Load {
            concurrency: args.concurrency,
            warmup: args.warmup,
            duration: args.duration,
            rate: args.rate,
        }
    }
}

/// Drives `spec` at `target` as `load` says and reports what the connections saw.
pub(crate) async fn measure(
    name: &'static str,
    spec: Arc<RequestSpec>,
    target: &Target,
    load: &Load,
) -> Report {
    let start = Instant::now();
    let measure_from = start + load.warmup;
    let sched = Schedule {
        start,
        measure_from,
        end: measure_from + load.duration,
        interval: load
            .rate
            .map(|r| Duration::from_secs_f64(f64::from(load.concurrency) / r)),
    };
    let mut tasks = JoinSet::new();
    for i in 0..load.concurrency {
        tasks.spawn(drive(i, spec.clone(), target.clone(), sched, load.rate));
    }
    let mut total = Stats::new();
    while let Some(res) = tasks.join_next().await {
        match res {
            Ok(stats) => total.merge(stats),
            Err(e) => total.error(format!("connection task failed: {e}")),
        }
    }
    let secs = load.duration.as_secs_f64();
    Report {
        scenario: name,
        requests: total.requests,
        errors: total.errors,
        throughput: if secs > 0.0 {
            total.requests as f64 / secs
        } else {
            0.0
        },
        p50: total.latencies.quantile(0.50),
        p90: total.latencies.quantile(0.90),
        p99: total.latencies.quantile(0.99),
        max: total.latencies.max(),
        first_error: total.first_error,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_split_into_host_and_port() {
        assert_eq!(
            split_address("http://127.0.0.1:8200").unwrap(),
            ("127.0.0.1".into(), 8200)
        );
        assert_eq!(
            split_address("http://localhost:8200/").unwrap(),
            ("localhost".into(), 8200)
        );
        assert_eq!(
            split_address("http://[::1]:8200").unwrap(),
            ("[::1]".into(), 8200)
        );
        assert_eq!(
            split_address("http://example").unwrap(),
            ("example".into(), 80)
        );
        assert!(split_address("https://127.0.0.1:8200").is_err());
        assert!(split_address("127.0.0.1:8200").is_err());
        assert!(split_address("http://:8200").is_err());
        assert!(split_address("http://::1:8200").is_err());
        assert!(split_address("http://[::1]x").is_err());
        assert!(split_address("http://h:notaport").is_err());
    }

    #[tokio::test]
    async fn remote_addresses_are_refused_by_default() {
        assert!(resolve_target("http://127.0.0.1:8200", false).await.is_ok());
        assert!(resolve_target("http://[::1]:8200", false).await.is_ok());
        let e = resolve_target("http://192.0.2.1:8200", false)
            .await
            .unwrap_err();
        assert!(matches!(e, BenchError::Failed(m) if m.contains("--allow-remote")));
        assert!(resolve_target("http://192.0.2.1:8200", true).await.is_ok());
    }

    #[test]
    fn flags_are_bounded() {
        assert!(parse_rate("0").is_err());
        assert!(parse_rate("NaN").is_err());
        assert!(parse_rate("1e9").is_err());
        assert_eq!(parse_rate("500").unwrap(), 500.0);
        assert!(parse_run_duration("0s").is_err());
        assert!(parse_run_duration("2h").is_err());
        assert_eq!(parse_warmup("0").unwrap(), Duration::ZERO);
    }
}
