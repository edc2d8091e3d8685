//! The suite's HTTP figures: the ceiling, unaudited and audited scenarios, p99 at half load.

use std::path::Path;
use std::sync::Arc;

use hyper::Method;
use hyper::header::HeaderValue;
use leash_client::{Client, SecretString};
use leash_types::SystemClock;
use serde_json::json;

use super::{AUDIT_PATH, CEILING_BODY, Goal, Plan, SuiteArgs, SuiteRow, median, tempdir};
use crate::bench::driver::{RequestSpec, Target};
use crate::bench::{Created, Load, Scenario, measure, setup};
use crate::bench_leases::{self, Server};

// ---------------------------------------------------------------------------------------
// HTTP: ceiling, unaudited, audited, p99 at half load
// ---------------------------------------------------------------------------------------

/// The HTTP ceiling: one handler answering [`CEILING_BODY`], on `leash_http::serve`.
pub(super) async fn start_ceiling(
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

pub(super) fn target_of(addr: std::net::SocketAddr) -> Result<Target, String> {
    Ok(Target {
        addr,
        host: HeaderValue::from_str(&addr.to_string()).map_err(|e| e.to_string())?,
    })
}

/// An in-process leash on the servers' runtime, its data in `dir`.
pub(super) async fn start_leash(
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

pub(super) async fn http_part(
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
pub(super) struct HttpFigures {
    pub(super) ceiling: Option<f64>,
    /// By scenario, in the order given.
    pub(super) unaudited: Vec<Option<f64>>,
    pub(super) audited: Vec<Option<f64>>,
    pub(super) p50_ms: Option<f64>,
    pub(super) p99_ms: Option<f64>,
}

pub(super) async fn http_measure(
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

pub(super) fn report_errors(r: &crate::bench::report::Report) {
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

pub(super) async fn enable_audit(client: &Client, file: &Path) -> Result<(), String> {
    let body = json!({"type": "file", "options": {"file_path": file.display().to_string()}});
    client
        .write(&format!("sys/audit/{AUDIT_PATH}"), &body)
        .await
        .map(|_| ())
        .map_err(|e| format!("enabling the audit device: {e}"))
}

pub(super) async fn disable_audit(client: &Client) -> Result<(), String> {
    client
        .delete(&format!("sys/audit/{AUDIT_PATH}"))
        .await
        .map(|_| ())
        .map_err(|e| format!("disabling the audit device: {e}"))
}
