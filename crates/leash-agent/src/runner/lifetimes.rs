//! The lifetimes of the token and of each credential: adopting the cache, logging in
//! and again, renewing, rotating at max TTL, fetching, revoking what was replaced.

use std::time::{Duration, SystemTime};

use leash_client::{ClientError, SecretString};
use leash_types::{Clock as _, SystemClock};
use serde_json::{Map, Value};

use super::{Agent, Held, TokenState};
use crate::AgentError;
use crate::cache::{Cache, SecretData};
use crate::health;
use crate::schedule::{backoff, jitter, renew_after};
use crate::template::SecretRequest;

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

impl Agent {
    pub(super) async fn adopt_cache(&mut self) {
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
        let now = SystemClock.now();
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
    pub(super) fn must_rotate(&self, h: &Held, at: SystemTime) -> bool {
        if !h.renewable {
            return true;
        }
        match h.max_expire_at {
            Some(max) => at + Duration::from_secs(h.issued_ttl) > max,
            None => false,
        }
    }

    pub(super) async fn login(&mut self) -> Result<(), AgentError> {
        match self.auth.login(&self.base).await {
            Ok(li) => {
                let now = SystemClock.now();
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
                self.token_generation += 1;
                self.login_attempts = 0;
                self.note_success();
                Ok(())
            }
            Err(e) => {
                self.login_attempts += 1;
                self.login_at = SystemClock.now() + self.retry_delay(self.login_attempts);
                // A bad local credential file will not fix itself quickly, but may be
                // mounted late (Kubernetes projected volumes): retry like the server.
                self.note_failure("login", &e.to_string())
            }
        }
    }

    /// Drops the current token (it is gone or ending) and logs in again. Every leased
    /// secret is re-issued under the new token; the old token (and with it its leases)
    /// is revoked after the grace period.
    pub(super) async fn reauthenticate(&mut self, revoke_old: bool) -> Result<(), AgentError> {
        let old = self.token.take();
        self.login_at = SystemClock.now();
        let logged_in = self.login().await;
        if logged_in.is_err() || self.token.is_none() {
            if let Some(o) = old {
                if revoke_old {
                    // A leaked token is revoked whether or not a new one could be had.
                    self.old_tokens.push((o.client, SystemClock.now()));
                } else if o.expire_at.is_none_or(|e| e > SystemClock.now()) {
                    // Keep the old token while logins fail: its leases may still be valid.
                    self.token = Some(o);
                    if let Some(t) = self.token.as_mut() {
                        t.next = Some(self.login_at);
                    }
                }
            }
            return logged_in;
        }
        health::update(&self.status, |s| s.reauths += 1);
        if let Some(o) = old {
            self.old_tokens
                .push((o.client, SystemClock.now() + self.grace()));
        }
        let now = SystemClock.now();
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

    pub(super) async fn token_step(&mut self, now: SystemTime) -> Result<(), AgentError> {
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
                let now = SystemClock.now();
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
                    let mut at = SystemClock.now() + d;
                    if let Some(exp) = tok.expire_at {
                        at = at.min(exp.max(SystemClock.now() + Duration::from_secs(1)));
                    }
                    tok.next = Some(at);
                    self.note_failure("token renewal", &m)
                }
            },
        }
    }

    pub(super) async fn secret_step(&mut self, r: &SecretRequest) -> Result<(), AgentError> {
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
                let now = SystemClock.now();
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
                    h.next = SystemClock.now();
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
                    h.next = SystemClock.now() + d;
                    self.note_failure("lease renewal", &m)
                }
            },
        }
    }

    /// Fetches (or re-fetches) a secret; an old lease it replaces is revoked after the
    /// grace period.
    pub(super) async fn fetch(&mut self, r: &SecretRequest) -> Result<(), AgentError> {
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
                let now = SystemClock.now();
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

    pub(super) fn bump_attempts(&mut self, key: &str) -> u32 {
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

    pub(super) fn schedule_retry(&mut self, r: &SecretRequest, attempts: u32) {
        let at = SystemClock.now() + self.retry_delay(attempts);
        match self.held.get_mut(&r.key()) {
            Some(h) => h.next = at,
            // Not fetched yet: `next_wake` uses `login_at` for missing secrets.
            None => self.login_at = at,
        }
    }

    pub(super) async fn revoke_due(&mut self, now: SystemTime) {
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
                // Unreachable or failing server: retried until it answers (a leaked token
                // must not outlive a busy moment). A 4xx means the token is gone already.
                Err(e) if e.status().is_none_or(|s| s >= 500) => {
                    tracing::warn!(error = %e, "revoking the replaced token failed; will retry");
                    keep.push((c, now + self.retry_delay(1)));
                }
                Err(e) => tracing::debug!(error = %e, "replaced token already gone"),
            }
        }
        self.old_tokens = keep;
    }

    pub(super) fn publish_status(&self) {
        let creds: Vec<(String, SystemTime)> = self
            .held
            .values()
            .filter_map(|h| h.expire_at.map(|e| (h.req.path.clone(), e)))
            .collect();
        health::update(&self.status, |s| s.credentials = creds);
    }
}

fn parse_time(s: &str) -> Option<SystemTime> {
    let t = time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339).ok()?;
    let secs = u64::try_from(t.unix_timestamp()).ok()?;
    Some(SystemTime::UNIX_EPOCH + Duration::from_secs(secs))
}
