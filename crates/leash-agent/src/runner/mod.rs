//! The agent's loop: log in (or adopt the cached token), fetch every secret the
//! templates name, render, then sleep until the next thing is due — a lease renewal, a
//! rotation, a token renewal, a re-authentication, a delayed revocation, a static
//! refresh — or a signal arrives.
//!
//! Lifetimes, as the issue asks:
//! * a lease is renewed at its renewal point (two thirds of its TTL, or `renew_before`
//!   ahead of expiry), with the TTL it was issued with as increment;
//! * when that renewal would pass the lease's max TTL (known from `sys/leases/lookup`,
//!   or seen when a renewal comes back capped), the agent fetches a new credential,
//!   renders it, and revokes the old lease after `rotation_grace_period`;
//! * the token is renewed the same way; when it can no longer be renewed far enough, the
//!   agent logs in again before it ends, re-issues every lease under the new token (a
//!   child lease dies with its token), and revokes the old token after the grace period;
//! * a failed call is retried with exponential backoff and jitter; a 403 means the token
//!   is gone, so the agent logs in again; `exit_on_retry_failure` stops the agent once
//!   `num_retries` calls failed in a row.
//!
//! Not here: the configuration syntax (`config`), template syntax (`template`), process
//! handling (`exec`), HTTP (`leash-client`).

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use leash_client::{Client, ClientConfig};
use serde_json::Value;
use tokio::signal::unix::{SignalKind, signal};
use zeroize::Zeroizing;

mod leaks;
mod lifetimes;
mod output;
use leash_types::{Clock as _, SystemClock};

use crate::AgentError;
use crate::auth::Authenticator;
use crate::cache::SecretData;
use crate::config::{AgentConfig, ExecConfig, RestartMode};
use crate::exec::{ChildProcess, Redaction, exit_code, signal_by_name};
use crate::files::write_atomic;
use crate::health::{self, SharedStatus};
use crate::schedule::{backoff, jitter};
use crate::template::{SecretRequest, secret_value};

/// Options given on the command line (or by `leash proxy`).
#[derive(Debug, Default)]
pub struct RunOptions {
    /// `leash agent exec -- cmd…`: the child's argv (overrides `exec.command`).
    pub exec_command: Option<Vec<String>>,
    /// Secrets to fetch and keep fresh besides those the templates name (`leash proxy`'s
    /// upstream credentials).
    pub extra_secrets: Vec<SecretRequest>,
    /// Where every render publishes the current value of each secret, keyed by
    /// [`SecretRequest::key`] (`leash proxy` reads its credentials from there).
    pub publish: Option<SecretPublisher>,
}

/// The current secrets, in the shape a template's `secret` returns. Its `Debug` shows
/// the keys only.
#[derive(Clone, Default)]
pub struct SecretSnapshot(pub std::sync::Arc<BTreeMap<String, Value>>);

impl std::fmt::Debug for SecretSnapshot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.0.keys()).finish()
    }
}

/// The sending side of the snapshot channel.
pub struct SecretPublisher(pub tokio::sync::watch::Sender<SecretSnapshot>);

impl std::fmt::Debug for SecretPublisher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecretPublisher")
    }
}

/// The token the agent holds.
struct TokenState {
    client: Client,
    /// TTL it was issued with (0: never expires).
    ttl: u64,
    renewable: bool,
    expire_at: Option<SystemTime>,
    /// When to renew it (or log in again, when `ending`).
    next: Option<SystemTime>,
    /// Its renewal came back capped: it will end; log in again at `next`.
    ending: bool,
    attempts: u32,
}

/// One fetched secret.
struct Held {
    req: SecretRequest,
    lease_id: String,
    issued_ttl: u64,
    lease_duration: u64,
    renewable: bool,
    data: SecretData,
    expire_at: Option<SystemTime>,
    max_expire_at: Option<SystemTime>,
    next: SystemTime,
    /// The next action replaces the credential instead of renewing it.
    rotate: bool,
    /// The lease is already gone (lost, or died with a replaced token): nothing to
    /// revoke or renew, only to replace.
    lease_gone: bool,
    attempts: u32,
}

impl Held {
    fn value(&self) -> Value {
        secret_value(
            &self.data.0,
            &self.lease_id,
            self.lease_duration,
            self.renewable,
        )
    }
}

struct Agent {
    cfg: AgentConfig,
    base: Client,
    auth: Authenticator,
    token: Option<TokenState>,
    /// When to try logging in again after a failed login.
    login_at: SystemTime,
    login_attempts: u32,
    /// Tokens replaced by a re-authentication, revoked after the grace period.
    old_tokens: Vec<(Client, SystemTime)>,
    /// Every secret the templates need.
    requests: Vec<SecretRequest>,
    held: BTreeMap<String, Held>,
    /// Replaced leases, revoked after the grace period.
    to_revoke: Vec<(String, SystemTime, u32)>,
    file_hashes: Vec<Option<u64>>,
    env: Option<Vec<(String, Zeroizing<String>)>>,
    status: SharedStatus,
    failures_in_a_row: u32,
    last_failure: String,
    exec_argv: Option<Vec<String>>,
    /// Exec settings (the `exec` block, or defaults for `leash agent exec`).
    exec: ExecConfig,
    /// `leash proxy`: where each render publishes the secrets.
    publish: Option<SecretPublisher>,
    /// Redaction of the child's output (exec mode with `redact { enabled = true }`).
    redaction: Option<Redaction>,
    /// Matches the filter reports (`report_leaks`).
    leaks: Option<tokio::sync::mpsc::UnboundedReceiver<crate::redact::Origin>>,
    /// Values the filter looks for, current and replaced (see `leaks.rs`).
    redact_values: Vec<(Zeroizing<String>, crate::redact::Origin)>,
    /// Static secrets already warned about.
    leaks_warned: Vec<String>,
    /// When each secret was last re-issued after a leak.
    leak_responses: BTreeMap<String, SystemTime>,
    /// Counts successful logins (tells the current token from replaced ones).
    token_generation: u64,
}

/// Runs the agent until it is told to stop; returns the process exit code.
pub async fn run(cfg: AgentConfig, opts: RunOptions) -> Result<i32, AgentError> {
    let mut client_cfg = ClientConfig::new(cfg.server.address.clone());
    client_cfg.ca_cert = cfg.server.ca_cert.clone();
    client_cfg.tls_skip_verify = cfg.server.tls_skip_verify;
    client_cfg.timeout = Duration::from_secs(30);
    let base = Client::new(client_cfg)?;
    if cfg.server.tls_skip_verify {
        tracing::warn!("tls_skip_verify is set: the server's certificate is NOT checked");
    }
    let exec_argv = match (&opts.exec_command, &cfg.exec) {
        (Some(argv), _) if !argv.is_empty() => Some(argv.clone()),
        (_, Some(e)) if !e.command.is_empty() => Some(e.command.clone()),
        (_, Some(_)) => return Err(AgentError::Config("exec.command is empty".into())),
        _ => None,
    };
    if exec_argv.is_none() && !cfg.env_templates.is_empty() {
        return Err(AgentError::Config(
            "`env_template` needs an `exec` block or `leash agent exec -- command`".into(),
        ));
    }
    if exec_argv.is_none()
        && cfg.templates.is_empty()
        && cfg.auto_auth.sinks.is_empty()
        && opts.extra_secrets.is_empty()
    {
        return Err(AgentError::Config(
            "nothing to do: add a `template`, an `exec` block or a token `sink`".into(),
        ));
    }
    let agent_exec = cfg.exec.clone().unwrap_or_default();
    let (redaction, leaks) = if exec_argv.is_some() && agent_exec.redact.enabled {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        let report = agent_exec.redact.report_leaks;
        (
            Some(Redaction {
                patterns: crate::redact::shared(),
                report: report.then_some(tx),
            }),
            report.then_some(rx),
        )
    } else {
        (None, None)
    };
    let mut requests: Vec<SecretRequest> = cfg
        .templates
        .iter()
        .map(|t| &t.template)
        .chain(cfg.env_templates.iter().map(|(_, t)| t))
        .flat_map(|t| t.secrets().iter().cloned())
        .chain(opts.extra_secrets.iter().cloned())
        .collect();
    requests.sort();
    requests.dedup();
    if let Some(p) = &cfg.pid_file {
        write_atomic(p, format!("{}\n", std::process::id()).as_bytes(), 0o644)?;
    }
    let status = SharedStatus::default();
    let health_task = match cfg.health_address {
        Some(addr) => {
            let l = tokio::net::TcpListener::bind(addr)
                .await
                .map_err(|e| AgentError::Io {
                    path: format!("health listener {addr}"),
                    source: e,
                })?;
            tracing::info!(address = %l.local_addr().map_or(addr, |a| a), "health endpoint listening");
            Some(tokio::spawn(health::serve(l, status.clone())))
        }
        None => None,
    };
    let mut agent = Agent {
        file_hashes: vec![None; cfg.templates.len()],
        auth: Authenticator::new(cfg.auto_auth.clone()),
        cfg,
        base,
        token: None,
        login_at: SystemClock.now(),
        login_attempts: 0,
        old_tokens: Vec::new(),
        requests,
        held: BTreeMap::new(),
        to_revoke: Vec::new(),
        env: None,
        status,
        failures_in_a_row: 0,
        last_failure: String::new(),
        exec: agent_exec,
        exec_argv,
        publish: opts.publish,
        redaction,
        leaks,
        redact_values: Vec::new(),
        leaks_warned: Vec::new(),
        leak_responses: BTreeMap::new(),
        token_generation: 0,
    };
    let result = agent.main().await;
    if let Some(t) = health_task {
        t.abort();
    }
    if let Some(p) = &agent.cfg.pid_file {
        let _ = std::fs::remove_file(p);
    }
    result
}

impl Agent {
    async fn main(&mut self) -> Result<i32, AgentError> {
        let mut term =
            signal(SignalKind::terminate()).map_err(|e| AgentError::Exec(e.to_string()))?;
        let mut int =
            signal(SignalKind::interrupt()).map_err(|e| AgentError::Exec(e.to_string()))?;
        let mut hup = signal(SignalKind::hangup()).map_err(|e| AgentError::Exec(e.to_string()))?;
        let mut usr1 =
            signal(SignalKind::user_defined1()).map_err(|e| AgentError::Exec(e.to_string()))?;
        let mut usr2 =
            signal(SignalKind::user_defined2()).map_err(|e| AgentError::Exec(e.to_string()))?;

        self.adopt_cache().await;
        // First render: everything must be fetched; failures are retried (a signal
        // still stops the agent).
        loop {
            self.step().await?;
            if self.all_fetched() {
                break;
            }
            let wait = self.next_wake();
            tokio::select! {
                _ = sleep_until(wait) => {}
                _ = term.recv() => return Ok(self.shutdown(None).await),
                _ = int.recv() => return Ok(self.shutdown(None).await),
            }
        }
        self.render(true).await?;
        self.update_patterns();
        health::update(&self.status, |s| s.ready = true);
        self.save_cache();
        if self.cfg.exit_after_auth {
            tracing::info!("exit_after_auth: rendered once; exiting (leases are kept)");
            return Ok(0);
        }
        let mut child = match &self.exec_argv {
            Some(argv) => Some(ChildProcess::start(
                argv,
                self.env.as_deref().unwrap_or(&[]),
                self.redaction.as_ref(),
            )?),
            None => None,
        };
        loop {
            let wait = self.next_wake();
            let mut exited = None;
            let mut stop_with = None;
            let mut leaked = None;
            tokio::select! {
                _ = sleep_until(wait) => {}
                Some(o) = recv_leak(&mut self.leaks) => leaked = Some(o),
                r = wait_child(&mut child) => exited = Some(r),
                _ = term.recv() => stop_with = Some("SIGTERM"),
                _ = int.recv() => stop_with = Some("SIGINT"),
                _ = hup.recv() => forward(&child, "SIGHUP"),
                _ = usr1.recv() => forward(&child, "SIGUSR1"),
                _ = usr2.recv() => forward(&child, "SIGUSR2"),
            }
            if let Some(r) = exited {
                let code = r.map(exit_code).unwrap_or(1);
                tracing::info!(code, "child exited");
                self.shutdown(None).await;
                return Ok(code);
            }
            if let Some(sig) = stop_with {
                tracing::info!(signal = sig, "stopping");
                let code = match child.as_mut() {
                    Some(c) => {
                        let s = signal_by_name(sig).unwrap_or(rustix::process::Signal::TERM);
                        c.stop(s).await.map(exit_code).unwrap_or(1)
                    }
                    None => 0,
                };
                return Ok(self.shutdown(Some(code)).await);
            }
            if let Some(o) = leaked {
                self.on_leak(o).await;
            }
            let env_changed = match self.step().await {
                Ok(()) => self.render(false).await,
                Err(e) => Err(e),
            };
            self.update_patterns();
            let env_changed = match env_changed {
                Ok(c) => c,
                Err(e) => {
                    // Giving up (retries exhausted, a file that cannot be written):
                    // do not leave the child running unsupervised.
                    if let Some(c) = child.as_mut() {
                        let s = signal_by_name(&self.exec.stop_signal)
                            .unwrap_or(rustix::process::Signal::TERM);
                        let _ = c.stop(s).await;
                    }
                    return Err(e);
                }
            };
            if env_changed && let (Some(c), Some(argv)) = (child.as_mut(), &self.exec_argv) {
                let e = &self.exec;
                match e.restart {
                    RestartMode::Never => {}
                    RestartMode::Signal => {
                        if let Some(s) = signal_by_name(&e.change_signal) {
                            c.signal(s);
                        }
                    }
                    RestartMode::Always => {
                        tracing::info!("environment changed; restarting the child");
                        let s =
                            signal_by_name(&e.stop_signal).unwrap_or(rustix::process::Signal::TERM);
                        let _ = c.stop(s).await;
                        *c = ChildProcess::start(
                            argv,
                            self.env.as_deref().unwrap_or(&[]),
                            self.redaction.as_ref(),
                        )?;
                    }
                }
            }
            if !self.held.is_empty() || self.token.is_some() {
                self.save_cache();
            }
        }
    }

    fn all_fetched(&self) -> bool {
        self.token.is_some()
            && self
                .requests
                .iter()
                .all(|r| self.held.contains_key(&r.key()))
    }

    /// The earliest time something is due.
    fn next_wake(&self) -> SystemTime {
        let mut t = SystemClock.now() + Duration::from_secs(3600);
        match &self.token {
            None => t = t.min(self.login_at),
            Some(tok) => {
                if let Some(n) = tok.next {
                    t = t.min(n);
                }
            }
        }
        if self.token.is_some() {
            for r in &self.requests {
                match self.held.get(&r.key()) {
                    Some(h) => t = t.min(h.next),
                    None => t = t.min(self.login_at),
                }
            }
        }
        for (_, at, _) in &self.to_revoke {
            t = t.min(*at);
        }
        for (_, at) in &self.old_tokens {
            t = t.min(*at);
        }
        t
    }

    /// Does whatever is due now.
    async fn step(&mut self) -> Result<(), AgentError> {
        let now = SystemClock.now();
        if self.token.is_none() {
            if self.login_at > now {
                return Ok(());
            }
            self.login().await?;
            if self.token.is_none() {
                return Ok(());
            }
        }
        self.token_step(now).await?;
        if self.token.is_none() {
            return Ok(());
        }
        let due: Vec<SecretRequest> = self
            .requests
            .iter()
            .filter(|r| self.held.get(&r.key()).is_none_or(|h| h.next <= now))
            .cloned()
            .collect();
        for r in due {
            if self.token.is_none() {
                break;
            }
            self.secret_step(&r).await?;
        }
        self.revoke_due(now).await;
        self.publish_status();
        Ok(())
    }

    fn grace(&self) -> Duration {
        self.cfg.template_config.rotation_grace
    }

    fn note_success(&mut self) {
        self.failures_in_a_row = 0;
        health::update(&self.status, |s| s.failures_in_a_row = 0);
    }

    /// Counts a failure; errors out once retries are exhausted and the configuration
    /// says to exit.
    fn note_failure(&mut self, what: &str, msg: &str) -> Result<(), AgentError> {
        self.failures_in_a_row += 1;
        self.last_failure = format!("{what}: {msg}");
        tracing::warn!(
            failures_in_a_row = self.failures_in_a_row,
            "{what} failed: {msg}"
        );
        let n = self.failures_in_a_row;
        health::update(&self.status, |s| {
            s.failures += 1;
            s.failures_in_a_row = n;
        });
        if self.cfg.template_config.exit_on_retry_failure
            && self.failures_in_a_row > self.cfg.server.retry.num_retries
        {
            return Err(AgentError::RetriesExhausted {
                attempts: self.failures_in_a_row,
                last: self.last_failure.clone(),
            });
        }
        Ok(())
    }

    fn retry_delay(&self, attempts: u32) -> Duration {
        backoff(attempts, &self.cfg.server.retry, jitter())
    }
}

async fn wait_child(
    child: &mut Option<ChildProcess>,
) -> Result<std::process::ExitStatus, AgentError> {
    match child {
        Some(c) => c.wait().await,
        None => std::future::pending().await,
    }
}

async fn recv_leak(
    rx: &mut Option<tokio::sync::mpsc::UnboundedReceiver<crate::redact::Origin>>,
) -> Option<crate::redact::Origin> {
    match rx {
        Some(r) => r.recv().await,
        None => std::future::pending().await,
    }
}

fn forward(child: &Option<ChildProcess>, name: &str) {
    match (child, signal_by_name(name)) {
        (Some(c), Some(s)) => c.signal(s),
        _ => tracing::info!(signal = name, "signal ignored"),
    }
}

async fn sleep_until(t: SystemTime) {
    let d = t
        .duration_since(SystemClock.now())
        .unwrap_or(Duration::ZERO);
    tokio::time::sleep(d).await;
}
