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
//!   affected. An attempt is reserved before the credential is checked (failures plus
//!   attempts in flight may not exceed the budget), so concurrent attempts from one source
//!   cannot overshoot it; a successful attempt gives its reservation back. Failures are also
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
    // Defence in depth: roles and users holding `root` are refused when written, and a
    // grant carrying it (stored before that rule, or by a bug) is refused here again.
    let policies = leash_backend::fields::normalize_policies(grant.policies);
    if policies
        .iter()
        .any(|p| p == leash_backend::fields::ROOT_POLICY)
    {
        tracing::warn!(mount = %mount.route_prefix(), "refused a login whose role grants the root policy");
        return Err(CoreError::Forbidden(
            "this login would grant the root policy, which no auth method may grant".to_owned(),
        ));
    }
    let entity = crate::identity::entity_id(inner, mount, &grant.alias);
    if let Some(why) =
        crate::containment::refusal(inner, mount, grant.role.as_deref(), &entity).await?
    {
        tracing::warn!(mount = %mount.route_prefix(), "refused a login of a locked identity");
        return Err(CoreError::Forbidden(why));
    }
    check_login_caps(inner, mount, grant.caps, grant.role.as_deref(), &entity).await?;
    let spec = TokenSpec {
        policies,
        no_default_policy: grant.no_default_policy,
        meta,
        display_name: grant.display_name,
        ttl,
        explicit_max_ttl: max,
        period: grant.period,
        num_uses: grant.num_uses,
        renewable: true,
        path: req.path.clone(),
        role: None,
        entity_id: entity,
        bound_cidrs: grant.bound_cidrs,
        issuer: crate::token::Issuer::Login,
        // A login may only be narrower than its role.
        scope: crate::token_backend::scope_field(inner, &req.data)?,
        id: None,
        canary: false,
        contain_on_trip: false,
    };
    let minted = inner
        .tokens
        .mint_for_role(spec, None, grant.role.as_deref())
        .await?;
    Ok((inner.tokens.auth_info(&minted), minted.warnings))
}

/// An auth role's per-identity caps: live tokens of this identity through this role
/// (`max_live_leases_per_entity`) and logins per minute
/// (`max_issuance_per_minute_per_entity`). Past either: 429 naming the cap and the count.
async fn check_login_caps(
    inner: &Inner,
    mount: &MountEntry,
    caps: leash_backend::IssuanceCaps,
    role: Option<&str>,
    entity: &str,
) -> Result<(), CoreError> {
    if caps == leash_backend::IssuanceCaps::default() {
        return Ok(());
    }
    let role = role.unwrap_or("");
    let prefix = mount.route_prefix();
    let refuse = |reason: &'static str, msg: String| {
        inner.telemetry.issuance_refused(reason);
        tracing::warn!(mount = %prefix, role, reason, "login refused by a per-entity cap");
        Err(CoreError::RateLimited(msg))
    };
    if caps.max_live_per_entity > 0 {
        let live = inner
            .tokens
            .live_entries()
            .await?
            .iter()
            .filter(|(_, e)| {
                e.entity_id == entity
                    && e.path.starts_with(&prefix)
                    && e.metrics_role.as_deref() == Some(role)
            })
            .count() as u64;
        if live >= caps.max_live_per_entity {
            return refuse(
                "max_live_leases_per_entity",
                format!(
                    "max_live_leases_per_entity of role {role:?} of {prefix} is {}: this entity holds {live} live tokens from it; revoke one or wait for one to expire",
                    caps.max_live_per_entity
                ),
            );
        }
    }
    if caps.max_per_minute_per_entity > 0 {
        let key = format!("{}\u{0}login\u{0}{role}\u{0}{entity}", mount.uuid);
        if let Err(n) =
            inner
                .leases
                .issuance
                .take(&key, inner.clock.unix(), caps.max_per_minute_per_entity)
        {
            return refuse(
                "max_issuance_per_minute_per_entity",
                format!(
                    "max_issuance_per_minute_per_entity of role {role:?} of {prefix} is {}: this entity logged in {n} times in the last minute",
                    caps.max_per_minute_per_entity
                ),
            );
        }
    }
    Ok(())
}

struct Window {
    started: Instant,
    failures: u32,
    /// Attempts reserved and not yet decided.
    in_flight: u32,
}

impl Window {
    fn new() -> Window {
        Window {
            started: Instant::now(),
            failures: 0,
            in_flight: 0,
        }
    }

    /// Starts a new window when the current one is over (attempts in flight stay).
    fn roll(&mut self) {
        if self.started.elapsed() >= WINDOW {
            self.started = Instant::now();
            self.failures = 0;
        }
    }
}

/// Failed-login accounting: per source for the rate limit, per role for metrics.
#[derive(Default)]
pub(crate) struct LoginGuard {
    sources: Mutex<HashMap<IpAddr, Window>>,
    per_role: Mutex<HashMap<(String, String), u64>>,
}

/// A login attempt reserved against its source's budget. Mark it [`Attempt::failed`]
/// when the credential did not check out; dropping it otherwise gives it back.
pub(crate) struct Attempt<'a> {
    guard: &'a LoginGuard,
    ip: Option<IpAddr>,
    decided: bool,
}

impl Attempt<'_> {
    /// Records the attempt as a failed login through `role` of the mount at `mount_path`.
    pub(crate) fn failed(mut self, mount_path: &str, role: &str) {
        self.decided = true;
        self.guard.count_role(mount_path, role);
        self.guard.settle(self.ip, true);
    }
}

impl Drop for Attempt<'_> {
    fn drop(&mut self) {
        if !self.decided {
            self.guard.settle(self.ip, false);
        }
    }
}

impl LoginGuard {
    /// Reserves one login attempt from `ip`, or refuses it while the source's failures
    /// plus its attempts in flight reach its budget. Reserving before the credential is
    /// checked means concurrent attempts cannot overshoot the budget.
    pub(crate) fn reserve(&self, ip: Option<IpAddr>) -> Result<Attempt<'_>, CoreError> {
        let attempt = Attempt {
            guard: self,
            ip: None,
            decided: false,
        };
        let Some(ip) = ip else { return Ok(attempt) };
        let Ok(mut map) = self.sources.lock() else {
            return Err(CoreError::internal("login rate limiter lock poisoned"));
        };
        if map.len() >= MAX_SOURCES && !map.contains_key(&ip) {
            map.retain(|_, w| w.started.elapsed() < WINDOW || w.in_flight > 0);
        }
        let w = map.entry(ip).or_insert_with(Window::new);
        w.roll();
        if w.failures.saturating_add(w.in_flight) >= MAX_FAILURES {
            let wait = WINDOW.saturating_sub(w.started.elapsed()).as_secs() + 1;
            return Err(CoreError::RateLimited(format!(
                "too many failed logins from this address; try again in {wait}s"
            )));
        }
        w.in_flight += 1;
        Ok(Attempt {
            ip: Some(ip),
            ..attempt
        })
    }

    /// Ends a reserved attempt from `ip`, counting it as a failure or not.
    fn settle(&self, ip: Option<IpAddr>, failed: bool) {
        let Some(ip) = ip else { return };
        let Ok(mut map) = self.sources.lock() else {
            return;
        };
        let w = map.entry(ip).or_insert_with(Window::new);
        w.in_flight = w.in_flight.saturating_sub(1);
        w.roll();
        if failed {
            w.failures = w.failures.saturating_add(1);
        }
    }

    fn count_role(&self, mount_path: &str, role: &str) {
        if let Ok(mut m) = self.per_role.lock() {
            let mut key = (mount_path.to_owned(), role.to_owned());
            if !m.contains_key(&key) && m.len() >= MAX_ROLE_COUNTERS {
                key.1 = "(other)".to_owned();
            }
            *m.entry(key).or_insert(0) += 1;
        }
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
            g.reserve(Some(a)).unwrap().failed("auth/approle/", "r1");
        }
        let e = g.reserve(Some(a)).err().unwrap();
        assert!(matches!(e, CoreError::RateLimited(_)), "{e:?}");
        assert!(
            g.reserve(Some(b)).is_ok(),
            "other sources are not locked out"
        );
        assert!(g.reserve(None).is_ok());
        assert_eq!(
            g.failures_per_role(),
            vec![(
                ("auth/approle/".into(), "r1".into()),
                u64::from(MAX_FAILURES)
            )]
        );
    }

    #[test]
    fn concurrent_attempts_cannot_overshoot_the_budget() {
        // 300 attempts in flight at once: only the budget's worth is let through.
        let g = LoginGuard::default();
        let a: IpAddr = "10.0.0.3".parse().unwrap();
        let held: Vec<_> = (0..300).filter_map(|_| g.reserve(Some(a)).ok()).collect();
        assert_eq!(held.len(), MAX_FAILURES as usize);
        for h in held {
            h.failed("auth/userpass/", "alice");
        }
        assert!(g.reserve(Some(a)).is_err());
    }

    #[test]
    fn a_successful_attempt_gives_its_reservation_back() {
        let g = LoginGuard::default();
        let a: IpAddr = "10.0.0.4".parse().unwrap();
        for _ in 0..(MAX_FAILURES * 3) {
            drop(g.reserve(Some(a)).unwrap());
        }
        assert!(g.reserve(Some(a)).is_ok());
    }
}
