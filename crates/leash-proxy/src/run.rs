//! Starting the proxy: bind the listeners (failing fast), then run `leash agent` with
//! the proxy's secrets and serve until the agent stops (SIGTERM/SIGINT revoke, as in
//! `leash agent`).

use std::sync::Arc;

use leash_agent::{RunOptions, SecretPublisher, SecretSnapshot};
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::creds::{self, Current};
use crate::metrics::Metrics;
use crate::{ProxyConfig, ProxyError, http};

async fn bind(addr: std::net::SocketAddr, what: &str) -> Result<TcpListener, ProxyError> {
    let l = TcpListener::bind(addr).await.map_err(|e| ProxyError::Io {
        what: format!("{what} listener {addr}"),
        source: e,
    })?;
    tracing::info!(address = %l.local_addr().map_or(addr, |a| a), "{what} proxy listening");
    Ok(l)
}

/// Runs the proxy; returns the exit code (the exec child's, in exec mode).
pub async fn run(cfg: ProxyConfig, exec_command: Option<Vec<String>>) -> Result<i32, ProxyError> {
    let ProxyConfig {
        agent,
        http: http_cfg,
        postgres,
    } = cfg;
    let mut extra = Vec::new();
    if let Some(h) = &http_cfg {
        extra.extend(h.upstreams.iter().map(|u| u.secret.clone()));
    }
    if let Some(p) = &postgres {
        extra.push(p.secret.clone());
    }
    extra.sort();
    extra.dedup();
    let metrics = Arc::new(Metrics::default());
    let (snap_tx, snap_rx) = watch::channel(SecretSnapshot::default());
    let (cur_tx, cur_rx) = watch::channel(Arc::new(Current::default()));
    let upstreams = Arc::new(
        http_cfg
            .as_ref()
            .map(|h| h.upstreams.clone())
            .unwrap_or_default(),
    );
    let mut tasks = Vec::new();
    if let Some(h) = &http_cfg {
        let l = bind(h.listen, "http").await?;
        let state = Arc::new(http::State::new(
            h,
            h.upstreams.clone(),
            cur_rx.clone(),
            metrics.clone(),
        )?);
        tasks.push(tokio::spawn(http::serve(l, state, h.max_connections)));
    }
    if let Some(p) = postgres.as_ref() {
        let l = bind(p.listen, "postgres").await?;
        let pg = crate::pg::PgState::new(p, cur_rx.clone(), metrics.clone())?;
        tasks.push(tokio::spawn(crate::pg::serve(l, Arc::new(pg))));
    }
    tasks.push(tokio::spawn(creds::follow(
        upstreams,
        postgres.as_ref().map(|p| p.secret.clone()),
        snap_rx,
        cur_tx,
    )));
    let result = leash_agent::run(
        agent,
        RunOptions {
            exec_command,
            extra_secrets: extra,
            publish: Some(SecretPublisher(snap_tx)),
        },
    )
    .await;
    for t in tasks {
        t.abort();
    }
    // The last uses' event lines (written by a thread, in batches) before exiting.
    crate::metrics::flush_events(std::time::Duration::from_secs(2));
    Ok(result?)
}
