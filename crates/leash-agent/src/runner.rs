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
use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use leash_client::{Client, ClientConfig, ClientError, SecretString};
use serde_json::{Map, Value};
use tokio::signal::unix::{SignalKind, signal};
use zeroize::Zeroizing;

use crate::AgentError;
use crate::auth::Authenticator;
use crate::cache::{Cache, CachedSecret, SecretData};
use crate::config::{AgentConfig, ExecConfig, RestartMode};
use crate::exec::{ChildProcess, exit_code, signal_by_name};
use crate::files::write_atomic;
use crate::health::{self, SharedStatus};
use crate::schedule::{backoff, jitter, renew_after};
use crate::template::{RenderEnv, SecretRequest, Template, secret_value};

/// Options given on the command line.
#[derive(Debug, Default)]
pub struct RunOptions {
    /// `leash agent exec -- cmd…`: the child's argv (overrides `exec.command`).
    pub exec_command: Option<Vec<String>>,
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

/// Why an action failed.
enum Failure {
    /// The token is gone (403): log in again.
    Auth(String),
    /// The lease is gone (4xx on renewal): fetch a new credential.
    LeaseGone(String),
    /// Anything else: retry later.
    Retry(String),
}

fn classify(e: &ClientError) -> Failure {
    match e.status() {
        Some(403) => Failure::Auth(e.to_string()),
        Some(400 | 404) => Failure::LeaseGone(e.to_string()),
        _ => Failure::Retry(e.to_string()),
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
    if exec_argv.is_none() && cfg.templates.is_empty() && cfg.auto_auth.sinks.is_empty() {
        return Err(AgentError::Config(
            "nothing to do: add a `template`, an `exec` block or a token `sink`".into(),
        ));
    }
    let agent_exec = cfg.exec.clone().unwrap_or_default();
    let mut requests: Vec<SecretRequest> = cfg
        .templates
        .iter()
        .map(|t| &t.template)
        .chain(cfg.env_templates.iter().map(|(_, t)| t))
        .flat_map(|t| t.secrets().iter().cloned())
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
        login_at: SystemTime::now(),
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
            )?),
            None => None,
        };
        loop {
            let wait = self.next_wake();
            let mut exited = None;
            let mut stop_with = None;
            tokio::select! {
                _ = sleep_until(wait) => {}
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
            self.step().await?;
            let env_changed = self.render(false).await?;
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
                        *c = ChildProcess::start(argv, self.env.as_deref().unwrap_or(&[]))?;
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
        let mut t = SystemTime::now() + Duration::from_secs(3600);
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
        let now = SystemTime::now();
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

    async fn adopt_cache(&mut self) {
        let Some(path) = self.cfg.lease_cache_file.clone() else {
            return;
        };
        let Some(cache) = Cache::load(&path) else {
            return;
        };
        let client = self.base.with_token(cache.token);
        let info = match client.token_lookup_self().await {
            Ok(i) => i,
            Err(e) => {
                tracing::info!(error = %e, "cached token is not usable; logging in");
                return;
            }
        };
        tracing::info!(ttl = info.ttl, "reusing the cached token");
        let now = SystemTime::now();
        let ttl = if info.ttl == 0 {
            0
        } else {
            info.creation_ttl.max(info.ttl)
        };
        self.token = Some(TokenState {
            client: client.clone(),
            ttl,
            renewable: info.renewable,
            expire_at: (info.ttl > 0).then(|| now + Duration::from_secs(info.ttl)),
            next: (info.ttl > 0).then(|| {
                now + renew_after(Duration::from_secs(info.ttl), &self.cfg.template_config)
            }),
            ending: false,
            attempts: 0,
        });
        let _ = self
            .auth
            .write_sinks(&client.token().cloned().unwrap_or_default());
        for r in self.requests.clone() {
            let Some(c) = cache.secrets.get(&r.key()) else {
                continue;
            };
            if c.lease_id.is_empty() {
                continue;
            }
            match client.lease_lookup(&c.lease_id).await {
                Ok(l) if l.ttl > 0 && l.state.as_deref().is_none_or(|s| s == "active") => {
                    let expire = now + Duration::from_secs(l.ttl);
                    let mut h = Held {
                        req: r.clone(),
                        lease_id: c.lease_id.clone(),
                        issued_ttl: c.lease_duration,
                        lease_duration: l.ttl,
                        renewable: l.renewable,
                        data: c.data.clone(),
                        expire_at: Some(expire),
                        max_expire_at: l.max_expire_time.as_deref().and_then(parse_time),
                        next: now,
                        rotate: false,
                        lease_gone: false,
                        attempts: 0,
                    };
                    h.next =
                        now + renew_after(Duration::from_secs(l.ttl), &self.cfg.template_config);
                    h.rotate = self.must_rotate(&h, h.next);
                    tracing::info!(secret = %r.path, ttl = l.ttl, "reusing a cached lease");
                    self.held.insert(r.key(), h);
                }
                _ => tracing::info!(secret = %r.path, "cached lease is gone; fetching a new one"),
            }
        }
    }

    /// Whether renewing at `at` would pass the lease's max TTL (or cannot be done).
    fn must_rotate(&self, h: &Held, at: SystemTime) -> bool {
        if !h.renewable {
            return true;
        }
        match h.max_expire_at {
            Some(max) => at + Duration::from_secs(h.issued_ttl) > max,
            None => false,
        }
    }

    async fn login(&mut self) -> Result<(), AgentError> {
        match self.auth.login(&self.base).await {
            Ok(li) => {
                let now = SystemTime::now();
                let client = self.base.with_token(li.token);
                if let Err(e) = self
                    .auth
                    .write_sinks(client.token().unwrap_or(&SecretString::default()))
                {
                    tracing::warn!(error = %e, "writing the token sink failed");
                }
                self.token = Some(TokenState {
                    client,
                    ttl: li.ttl,
                    renewable: li.renewable,
                    expire_at: (li.ttl > 0).then(|| now + Duration::from_secs(li.ttl)),
                    next: (li.ttl > 0).then(|| {
                        now + renew_after(Duration::from_secs(li.ttl), &self.cfg.template_config)
                    }),
                    ending: !li.renewable,
                    attempts: 0,
                });
                self.login_attempts = 0;
                self.note_success();
                Ok(())
            }
            Err(e) => {
                self.login_attempts += 1;
                self.login_at = SystemTime::now() + self.retry_delay(self.login_attempts);
                // A bad local credential file will not fix itself quickly, but may be
                // mounted late (Kubernetes projected volumes): retry like the server.
                self.note_failure("login", &e.to_string())
            }
        }
    }

    /// Drops the current token (it is gone or ending) and logs in again. Every leased
    /// secret is re-issued under the new token; the old token (and with it its leases)
    /// is revoked after the grace period.
    async fn reauthenticate(&mut self, revoke_old: bool) -> Result<(), AgentError> {
        let old = self.token.take();
        self.login_at = SystemTime::now();
        self.login().await?;
        if self.token.is_none() {
            // Keep the old token while logins fail: its leases may still be valid.
            if let Some(o) = old
                && o.expire_at.is_none_or(|e| e > SystemTime::now())
                && !revoke_old
            {
                self.token = Some(o);
                if let Some(t) = self.token.as_mut() {
                    t.next = Some(self.login_at);
                }
            }
            return Ok(());
        }
        health::update(&self.status, |s| s.reauths += 1);
        if let Some(o) = old {
            self.old_tokens
                .push((o.client, SystemTime::now() + self.grace()));
        }
        let now = SystemTime::now();
        for h in self.held.values_mut() {
            if !h.lease_id.is_empty() {
                h.rotate = true;
                h.next = now;
                // The old lease dies with the old token; nothing to revoke one by one.
                h.lease_gone = true;
            }
        }
        Ok(())
    }

    async fn token_step(&mut self, now: SystemTime) -> Result<(), AgentError> {
        let Some(tok) = self.token.as_mut() else {
            return Ok(());
        };
        let Some(next) = tok.next else {
            return Ok(());
        };
        if next > now {
            return Ok(());
        }
        if tok.ending || !tok.renewable {
            tracing::info!("token cannot be renewed far enough; logging in again");
            return self.reauthenticate(false).await;
        }
        let increment = tok.ttl;
        match tok.client.token_renew_self(Some(increment)).await {
            Ok(a) => {
                let now = SystemTime::now();
                tok.expire_at = Some(now + Duration::from_secs(a.lease_duration));
                tok.attempts = 0;
                if a.lease_duration < increment || !a.renewable {
                    tok.ending = true;
                }
                tok.next = Some(
                    now + renew_after(
                        Duration::from_secs(a.lease_duration),
                        &self.cfg.template_config,
                    ),
                );
                tracing::debug!(ttl = a.lease_duration, "token renewed");
                health::update(&self.status, |s| s.renewals += 1);
                self.note_success();
                Ok(())
            }
            Err(e) => match classify(&e) {
                Failure::Auth(m) | Failure::LeaseGone(m) => {
                    tracing::warn!("token renewal refused ({m}); logging in again");
                    self.reauthenticate(true).await
                }
                Failure::Retry(m) => {
                    tok.attempts += 1;
                    let d = backoff(tok.attempts, &self.cfg.server.retry, jitter());
                    let mut at = SystemTime::now() + d;
                    if let Some(exp) = tok.expire_at {
                        at = at.min(exp.max(SystemTime::now() + Duration::from_secs(1)));
                    }
                    tok.next = Some(at);
                    self.note_failure("token renewal", &m)
                }
            },
        }
    }

    async fn secret_step(&mut self, r: &SecretRequest) -> Result<(), AgentError> {
        let key = r.key();
        let rotate_needed = match self.held.get(&key) {
            None => true,
            Some(h) if h.lease_id.is_empty() => true, // static secret: read again
            Some(h) => h.rotate,
        };
        if rotate_needed {
            return self.fetch(r).await;
        }
        let Some(client) = self.token.as_ref().map(|t| t.client.clone()) else {
            return Ok(());
        };
        let Some(h) = self.held.get_mut(&key) else {
            return Ok(());
        };
        match client.lease_renew(&h.lease_id, Some(h.issued_ttl)).await {
            Ok(rn) => {
                let now = SystemTime::now();
                h.lease_duration = rn.lease_duration;
                h.renewable = rn.renewable;
                h.expire_at = Some(now + Duration::from_secs(rn.lease_duration));
                h.attempts = 0;
                h.next = now
                    + renew_after(
                        Duration::from_secs(rn.lease_duration),
                        &self.cfg.template_config,
                    );
                let capped = rn.lease_duration < h.issued_ttl;
                h.rotate = capped || !rn.renewable || {
                    match h.max_expire_at {
                        Some(max) => h.next + Duration::from_secs(h.issued_ttl) > max,
                        None => false,
                    }
                };
                tracing::debug!(secret = %r.path, ttl = rn.lease_duration, "lease renewed");
                health::update(&self.status, |s| s.renewals += 1);
                self.note_success();
                Ok(())
            }
            Err(e) => match classify(&e) {
                Failure::LeaseGone(m) => {
                    tracing::warn!(secret = %r.path, "lease renewal refused ({m}); fetching a new credential");
                    h.rotate = true;
                    h.next = SystemTime::now();
                    h.lease_gone = true;
                    self.fetch(r).await
                }
                Failure::Auth(m) => {
                    tracing::warn!(secret = %r.path, "lease renewal denied ({m}); logging in again");
                    self.reauthenticate(true).await
                }
                Failure::Retry(m) => {
                    h.attempts += 1;
                    let d = backoff(h.attempts, &self.cfg.server.retry, jitter());
                    h.next = SystemTime::now() + d;
                    self.note_failure("lease renewal", &m)
                }
            },
        }
    }

    /// Fetches (or re-fetches) a secret; an old lease it replaces is revoked after the
    /// grace period.
    async fn fetch(&mut self, r: &SecretRequest) -> Result<(), AgentError> {
        let Some(client) = self.token.as_ref().map(|t| t.client.clone()) else {
            return Ok(());
        };
        let key = r.key();
        let params: Map<String, Value> = r
            .params
            .iter()
            .map(|(k, v)| (k.clone(), Value::String(v.clone())))
            .collect();
        match client.fetch_secret(&r.path, &params).await {
            Ok(Some(s)) => {
                let now = SystemTime::now();
                let leased = !s.lease_id.is_empty() && s.lease_duration > 0;
                let max_expire_at = if leased {
                    match client.lease_lookup(&s.lease_id).await {
                        Ok(l) => l.max_expire_time.as_deref().and_then(parse_time),
                        Err(_) => None,
                    }
                } else {
                    None
                };
                let next = if leased {
                    now + renew_after(
                        Duration::from_secs(s.lease_duration),
                        &self.cfg.template_config,
                    )
                } else {
                    now + self.cfg.template_config.static_secret_render_interval
                };
                let mut h = Held {
                    req: r.clone(),
                    lease_id: s.lease_id.clone(),
                    issued_ttl: s.lease_duration,
                    lease_duration: s.lease_duration,
                    renewable: s.renewable,
                    data: SecretData(s.data.unwrap_or_default()),
                    expire_at: leased.then(|| now + Duration::from_secs(s.lease_duration)),
                    max_expire_at,
                    next,
                    rotate: false,
                    lease_gone: false,
                    attempts: 0,
                };
                if leased {
                    h.rotate = self.must_rotate(&h, next);
                }
                if let Some(old) = self.held.insert(key, h) {
                    let was_rotation = !old.lease_id.is_empty();
                    if was_rotation {
                        health::update(&self.status, |s| s.rotations += 1);
                        if !old.lease_gone && old.lease_id != s.lease_id {
                            tracing::info!(secret = %r.path, grace = ?self.grace(), "credential rotated; old lease revoked after the grace period");
                            self.to_revoke.push((old.lease_id, now + self.grace(), 0));
                        }
                    }
                }
                if leased {
                    tracing::info!(secret = %r.path, ttl = s.lease_duration, "credential issued");
                }
                self.note_success();
                Ok(())
            }
            Ok(None) => {
                let d = self.bump_attempts(&key);
                self.note_failure(&format!("reading {}", r.path), "nothing at this path (404)")?;
                self.schedule_retry(r, d);
                Ok(())
            }
            Err(e) => {
                if let Failure::Auth(m) = classify(&e) {
                    // Either the token is gone or the policy does not allow the path;
                    // check which before logging in again.
                    if client.token_lookup_self().await.is_err() {
                        tracing::warn!(secret = %r.path, "token is gone ({m}); logging in again");
                        return self.reauthenticate(true).await;
                    }
                }
                let d = self.bump_attempts(&key);
                self.note_failure(&format!("reading {}", r.path), &e.to_string())?;
                self.schedule_retry(r, d);
                Ok(())
            }
        }
    }

    fn bump_attempts(&mut self, key: &str) -> u32 {
        match self.held.get_mut(key) {
            Some(h) => {
                h.attempts += 1;
                h.attempts
            }
            None => {
                self.login_attempts += 1;
                self.login_attempts
            }
        }
    }

    fn schedule_retry(&mut self, r: &SecretRequest, attempts: u32) {
        let at = SystemTime::now() + self.retry_delay(attempts);
        match self.held.get_mut(&r.key()) {
            Some(h) => h.next = at,
            // Not fetched yet: `next_wake` uses `login_at` for missing secrets.
            None => self.login_at = at,
        }
    }

    async fn revoke_due(&mut self, now: SystemTime) {
        let Some(client) = self.token.as_ref().map(|t| t.client.clone()) else {
            return;
        };
        let mut keep = Vec::new();
        for (id, at, tries) in std::mem::take(&mut self.to_revoke) {
            if at > now {
                keep.push((id, at, tries));
                continue;
            }
            match client.lease_revoke(&id).await {
                Ok(()) => tracing::info!(lease = %id, "replaced lease revoked"),
                Err(e) if e.status() == Some(403) => tracing::warn!(
                    lease = %id,
                    "revoking the replaced lease was denied; grant `update` on sys/leases/revoke \
                     to the agent's policy, or it lives until its TTL ends"
                ),
                Err(e) if tries < 5 && e.status().is_none_or(|s| s >= 500) => {
                    keep.push((id, now + self.retry_delay(tries + 1), tries + 1));
                }
                Err(e) => {
                    tracing::warn!(lease = %id, error = %e, "revoking the replaced lease failed")
                }
            }
        }
        self.to_revoke = keep;
        let mut keep = Vec::new();
        for (c, at) in std::mem::take(&mut self.old_tokens) {
            if at > now {
                keep.push((c, at));
                continue;
            }
            match c.token_revoke_self().await {
                Ok(()) => tracing::info!("replaced token revoked"),
                Err(e) => tracing::debug!(error = %e, "replaced token already gone"),
            }
        }
        self.old_tokens = keep;
    }

    fn publish_status(&self) {
        let creds: Vec<(String, SystemTime)> = self
            .held
            .values()
            .filter_map(|h| h.expire_at.map(|e| (h.req.path.clone(), e)))
            .collect();
        health::update(&self.status, |s| s.credentials = creds);
    }

    /// Renders every file and environment template. Returns whether the environment
    /// changed. On the first render an error is fatal (a missing key names the key and
    /// the template); later ones are logged and the old output kept.
    async fn render(&mut self, first: bool) -> Result<bool, AgentError> {
        let values: BTreeMap<String, Value> = self
            .held
            .iter()
            .map(|(k, h)| (k.clone(), h.value()))
            .collect();
        let lookup = |r: &SecretRequest| values.get(&r.key()).cloned();
        let env_lookup = |k: &str| std::env::var(k).ok();
        let mut commands = Vec::new();
        let mut writes = 0u64;
        for (i, ft) in self.cfg.templates.iter().enumerate() {
            let env = RenderEnv {
                secret: &lookup,
                env: &env_lookup,
                error_on_missing_key: ft.error_on_missing_key,
            };
            let out = match ft.template.render(&env) {
                Ok(o) => Zeroizing::new(o),
                Err(e) if first => return Err(e.into()),
                Err(e) => {
                    tracing::error!(error = %e, "render failed; keeping the previous file");
                    continue;
                }
            };
            let h = hash(out.as_bytes());
            if self.file_hashes[i] == Some(h) {
                continue;
            }
            write_atomic(&ft.destination, out.as_bytes(), ft.perms)?;
            tracing::info!(destination = %ft.destination.display(), "rendered");
            self.file_hashes[i] = Some(h);
            writes += 1;
            if let Some(cmd) = &ft.command {
                commands.push(cmd.clone());
            }
        }
        let mut env_changed = false;
        if !self.cfg.env_templates.is_empty() {
            let mut vars = Vec::new();
            let mut failed = false;
            for (name, t) in &self.cfg.env_templates {
                let env = RenderEnv {
                    secret: &lookup,
                    env: &env_lookup,
                    error_on_missing_key: true,
                };
                match t.render(&env) {
                    Ok(v) => vars.push((name.clone(), Zeroizing::new(v))),
                    Err(e) if first => return Err(e.into()),
                    Err(e) => {
                        tracing::error!(error = %e, "env render failed; keeping the child's environment");
                        failed = true;
                    }
                }
            }
            if !failed && self.env.as_ref() != Some(&vars) {
                env_changed = self.env.is_some();
                self.env = Some(vars);
                writes += 1;
            }
        }
        if writes > 0 {
            health::update(&self.status, |s| s.renders += writes);
        }
        for cmd in commands {
            run_command(&cmd).await;
        }
        Ok(env_changed)
    }

    fn save_cache(&self) {
        let (Some(path), Some(tok)) = (&self.cfg.lease_cache_file, &self.token) else {
            return;
        };
        let Some(token) = tok.client.token() else {
            return;
        };
        let secrets: BTreeMap<String, CachedSecret> = self
            .held
            .iter()
            .filter(|(_, h)| !h.lease_id.is_empty() && !h.lease_gone)
            .map(|(k, h)| {
                (
                    k.clone(),
                    CachedSecret {
                        lease_id: h.lease_id.clone(),
                        lease_duration: h.issued_ttl,
                        renewable: h.renewable,
                        data: h.data.clone(),
                    },
                )
            })
            .collect();
        if let Err(e) = Cache::save(path, token, &secrets) {
            tracing::warn!(error = %e, "writing the lease cache failed");
        }
    }

    /// Stops: revokes leases and tokens unless told not to, removes files if asked.
    /// Returns the exit code (`code`, or 0).
    async fn shutdown(&mut self, code: Option<i32>) -> i32 {
        if self.cfg.revoke_on_exit {
            let mut revoked = 0;
            if let Some(tok) = &self.token {
                // Revoking the token revokes every lease issued under it; revoke the
                // leases first anyway so each credential is dropped even if the token
                // was an orphan created elsewhere (token_file).
                for h in self.held.values() {
                    if !h.lease_id.is_empty()
                        && !h.lease_gone
                        && tok.client.lease_revoke(&h.lease_id).await.is_ok()
                    {
                        revoked += 1;
                    }
                }
                for (id, _, _) in &self.to_revoke {
                    let _ = tok.client.lease_revoke(id).await;
                }
                match tok.client.token_revoke_self().await {
                    Ok(()) => tracing::info!("token revoked"),
                    Err(e) => tracing::warn!(error = %e, "revoking the token failed"),
                }
            }
            for (c, _) in &self.old_tokens {
                let _ = c.token_revoke_self().await;
            }
            tracing::info!(leases = revoked, "revoked on exit");
            if let Some(p) = &self.cfg.lease_cache_file {
                let _ = std::fs::remove_file(p);
            }
        } else {
            self.save_cache();
        }
        if self.cfg.remove_files_on_exit {
            for t in &self.cfg.templates {
                let _ = std::fs::remove_file(&t.destination);
            }
        }
        code.unwrap_or(0)
    }
}

async fn run_command(argv: &[String]) {
    let Some((prog, args)) = argv.split_first() else {
        return;
    };
    let child = tokio::process::Command::new(prog)
        .args(args)
        .kill_on_drop(true)
        .spawn();
    let mut child = match child {
        Ok(c) => c,
        Err(e) => {
            tracing::warn!(command = %prog, error = %e, "template command failed to start");
            return;
        }
    };
    match tokio::time::timeout(Duration::from_secs(30), child.wait()).await {
        Ok(Ok(s)) if s.success() => {}
        Ok(Ok(s)) => tracing::warn!(command = %prog, status = %s, "template command failed"),
        Ok(Err(e)) => tracing::warn!(command = %prog, error = %e, "template command failed"),
        Err(_) => tracing::warn!(command = %prog, "template command timed out after 30s"),
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

fn forward(child: &Option<ChildProcess>, name: &str) {
    match (child, signal_by_name(name)) {
        (Some(c), Some(s)) => c.signal(s),
        _ => tracing::info!(signal = name, "signal ignored"),
    }
}

async fn sleep_until(t: SystemTime) {
    let d = t
        .duration_since(SystemTime::now())
        .unwrap_or(Duration::ZERO);
    tokio::time::sleep(d).await;
}

fn parse_time(s: &str) -> Option<SystemTime> {
    let t = time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339).ok()?;
    let secs = u64::try_from(t.unix_timestamp()).ok()?;
    Some(SystemTime::UNIX_EPOCH + Duration::from_secs(secs))
}

fn hash(b: &[u8]) -> u64 {
    use std::hash::{Hash as _, Hasher as _};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    b.hash(&mut h);
    h.finish()
}

/// The path of a file template's destination, for tests and messages.
pub fn destinations(cfg: &AgentConfig) -> Vec<PathBuf> {
    cfg.templates
        .iter()
        .map(|t| t.destination.clone())
        .collect()
}

/// Parses every template of a configuration without running anything (`-check`).
pub fn templates(cfg: &AgentConfig) -> Vec<&Template> {
    cfg.templates
        .iter()
        .map(|t| &t.template)
        .chain(cfg.env_templates.iter().map(|(_, t)| t))
        .collect()
}
