//! Completing logins: minting the token an auth method granted, deriving the stable
//! entity id, and limiting repeated failures per source address.
//!
//! * The token is an orphan (a login starts a tree), created at the login's path, with
//!   the grant's policies and metadata; its TTL defaults to the auth mount's tuned
//!   `default_lease_ttl` and is capped by its `max_lease_ttl` (then the server's).
//! * `entity_id` = a UUID-shaped keyed hash of (mount accessor, identity alias): the same
//!   agent gets the same id at every login, across restarts, without an identity store;
//!   no one without the storage key can compute or reverse it.
//! * Failed logins are counted per source IP in a fixed one-minute window; past
//!   [`MAX_FAILURES`] the source gets 429 until the window ends. Other sources are not
//!   affected. The check comes before a login and the count after it, so concurrent
//!   failures from one source can overshoot the budget by their number. Failures are also
//!   counted per (mount, role) for metrics; the role is the login's `role` field (JWT,
//!   Kubernetes) or the path's last segment (userpass), and AppRole failures (whose role
//!   is unknown until the credential checks out) count under `""`.
//! * The minted token is counted in the metrics under the grant's role (see
//!   `metrics.rs`: `vault_token_creation_time{role}` and friends).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use leash_backend::{AuthInfo, CoreError, LoginGrant, MountEntry, Request};

use crate::Inner;
use crate::token::TokenSpec;

/// Failed logins one source may make per [`WINDOW`] before it is refused.
pub(crate) const MAX_FAILURES: u32 = 20;
/// The rate limiter's window.
pub(crate) const WINDOW: Duration = Duration::from_secs(60);
/// Most sources tracked at once (oldest windows are dropped first when full).
const MAX_SOURCES: usize = 100_000;
/// Most (mount, role) failure counters; past it, new roles count under `"(other)"` (a
/// role name may come from the caller, so the set must not grow without bound).
const MAX_ROLE_COUNTERS: usize = 10_000;

/// The entity id of identity `alias` on `mount`.
pub(crate) fn entity_id(inner: &Inner, mount: &MountEntry, alias: &str) -> String {
    let h = inner
        .storage
        .keyring()
        .token_hash(&format!("entity:{}:{alias}", mount.accessor));
    let b = &h.0;
    // Shaped as a version-4-style UUID so Vault clients that parse it are happy.
    format!(
        "{:08x}-{:04x}-4{:03x}-{:04x}-{:012x}",
        u32::from_be_bytes([b[0], b[1], b[2], b[3]]),
        u16::from_be_bytes([b[4], b[5]]),
        u16::from_be_bytes([b[6], b[7]]) & 0x0fff,
        (u16::from_be_bytes([b[8], b[9]]) & 0x3fff) | 0x8000,
        u64::from_be_bytes([0, 0, b[10], b[11], b[12], b[13], b[14], b[15]]),
    )
}

/// Mints the token a login granted and returns its `auth` block (and any warnings).
pub(crate) async fn complete(
    inner: &Inner,
    mount: &MountEntry,
    req: &Request,
    grant: LoginGrant,
) -> Result<(AuthInfo, Vec<String>), CoreError> {
    let mount_ttl = |v: u64| (v > 0).then(|| Duration::from_secs(v));
    let ttl = grant.ttl.or(mount_ttl(mount.config.default_lease_ttl));
    let max = match (grant.max_ttl, mount_ttl(mount.config.max_lease_ttl)) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    };
    let meta = grant.metadata;
    if let Some(r) = &grant.role {
        tracing::debug!(mount = %mount.route_prefix(), role = %r, "login");
    }
    let spec = TokenSpec {
        policies: grant.policies,
        no_default_policy: grant.no_default_policy,
        meta,
        display_name: grant.display_name,
        ttl,
        explicit_max_ttl: max,
        period: grant.period,
        num_uses: grant.num_uses,
        renewable: true,
        path: req.path.trim_end_matches('/').to_owned(),
        role: None,
        entity_id: entity_id(inner, mount, &grant.alias),
        bound_cidrs: grant.bound_cidrs,
        id: None,
    };
    let minted = inner
        .tokens
        .mint_for_role(spec, None, grant.role.as_deref())
        .await?;
    Ok((inner.tokens.auth_info(&minted), minted.warnings))
}

struct Window {
    started: Instant,
    failures: u32,
}

/// Failed-login accounting: per source for the rate limit, per role for metrics.
#[derive(Default)]
pub(crate) struct LoginGuard {
    sources: Mutex<HashMap<IpAddr, Window>>,
    per_role: Mutex<HashMap<(String, String), u64>>,
}

impl LoginGuard {
    /// Refuses a login from `ip` while it is over its failure budget.
    pub(crate) fn check(&self, ip: Option<IpAddr>) -> Result<(), CoreError> {
        let Some(ip) = ip else { return Ok(()) };
        let Ok(map) = self.sources.lock() else {
            return Ok(());
        };
        match map.get(&ip) {
            Some(w) if w.started.elapsed() < WINDOW && w.failures >= MAX_FAILURES => {
                let wait = WINDOW.saturating_sub(w.started.elapsed()).as_secs() + 1;
                Err(CoreError::RateLimited(format!(
                    "too many failed logins from this address; try again in {wait}s"
                )))
            }
            _ => Ok(()),
        }
    }

    /// Records a failed login from `ip` through `role` of the mount at `mount_path`.
    pub(crate) fn failed(&self, ip: Option<IpAddr>, mount_path: &str, role: &str) {
        if let Ok(mut m) = self.per_role.lock() {
            let mut key = (mount_path.to_owned(), role.to_owned());
            if !m.contains_key(&key) && m.len() >= MAX_ROLE_COUNTERS {
                key.1 = "(other)".to_owned();
            }
            *m.entry(key).or_insert(0) += 1;
        }
        let Some(ip) = ip else { return };
        let Ok(mut map) = self.sources.lock() else {
            return;
        };
        if map.len() >= MAX_SOURCES {
            map.retain(|_, w| w.started.elapsed() < WINDOW);
            if map.len() >= MAX_SOURCES {
                map.clear();
            }
        }
        let w = map.entry(ip).or_insert(Window {
            started: Instant::now(),
            failures: 0,
        });
        if w.started.elapsed() >= WINDOW {
            *w = Window {
                started: Instant::now(),
                failures: 0,
            };
        }
        w.failures = w.failures.saturating_add(1);
    }

    /// Failed logins so far per (auth mount path, role).
    pub(crate) fn failures_per_role(&self) -> Vec<((String, String), u64)> {
        let mut v: Vec<_> = self
            .per_role
            .lock()
            .map(|m| m.iter().map(|(k, v)| (k.clone(), *v)).collect())
            .unwrap_or_default();
        v.sort();
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_source_is_limited_after_its_budget_and_others_are_not() {
        let g = LoginGuard::default();
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        for _ in 0..MAX_FAILURES {
            assert!(g.check(Some(a)).is_ok());
            g.failed(Some(a), "auth/approle/", "r1");
        }
        let e = g.check(Some(a)).unwrap_err();
        assert!(matches!(e, CoreError::RateLimited(_)), "{e:?}");
        assert!(g.check(Some(b)).is_ok(), "other sources are not locked out");
        assert!(g.check(None).is_ok());
        assert_eq!(
            g.failures_per_role(),
            vec![(
                ("auth/approle/".into(), "r1".into()),
                u64::from(MAX_FAILURES)
            )]
        );
    }
}
