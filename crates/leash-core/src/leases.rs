//! The lease book: intent-first registration for engines, renewal, revocation that
//! never gives up, and the expiry worker.
//!
//! * A lease is a storage row indexed by expiry (see [`leash_storage::StoredLease`]);
//!   nothing here holds leases in memory, so startup does not depend on their number.
//! * Engines register a lease **before** creating the credential
//!   ([`leash_backend::LeaseRegistry`]); a lease still `Pending` when a server starts
//!   belongs to an issuance that died with the previous process and is revoked at once.
//! * Revocation goes back to the engine that issued the lease, in batches per mount
//!   ([`leash_backend::Backend::revoke_leases`]). A failure keeps the lease, marks it
//!   `Revoking`, records the attempt and error, audits it, and schedules the next try
//!   with capped exponential backoff and jitter — forever.
//! * Revoking or expiring a token marks its leases (and its children's) `Revoking` in
//!   the same storage transaction; the worker is woken and revokes them.

use std::collections::HashMap;
use std::sync::{Arc, Weak};
use std::time::Duration;

use async_trait::async_trait;
use leash_backend::{
    Backend, BackendRequest, CoreError, LeaseRecord, LeaseRegistry, LeaseRequest, PendingLease,
};
use leash_storage::{LeaseState, StorageError, StoredLease};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tokio::sync::{Notify, watch};
use tokio::task::{JoinHandle, JoinSet};

use crate::Inner;
use crate::events::{self, Event, Kind, reason};

/// How often the worker looks for due leases when nothing wakes it.
const TICK: Duration = Duration::from_millis(250);
/// Most leases handled per round.
const BATCH: usize = 2_048;
/// First retry delay after a failed revocation; doubles per attempt.
const RETRY_BASE_SECS: i64 = 1;
/// Longest delay between two attempts at revoking one lease.
pub(crate) const RETRY_CAP_SECS: i64 = 300;
/// How long one engine may take for one batch before its leases count as failed.
const REVOKE_TIMEOUT: Duration = Duration::from_secs(60);
/// Random characters at the end of a lease id (~143 bits).
const LEASE_SUFFIX_LEN: usize = 24;

/// What the core stores with each lease (sealed at rest, bound to the lease id).
#[derive(Serialize, Deserialize, Clone)]
pub(crate) struct LeaseEntry {
    /// Uuid of the mount that issued it (routes renewals and revocations back).
    pub(crate) mount_uuid: String,
    /// Its routing prefix at issue (`database/`), for messages.
    pub(crate) mount_path: String,
    /// The lease path below the mount (`creds/readonly/<random>`).
    pub(crate) path: String,
    /// The TTL granted at issue, the default increment of a renewal.
    pub(crate) ttl: u64,
    /// Whether it may be renewed.
    pub(crate) renewable: bool,
    /// Unix seconds of the last renewal.
    #[serde(default)]
    pub(crate) last_renewal: Option<i64>,
    /// The engine's data.
    pub(crate) internal: Value,
    /// Who and what it was issued for, for its lifecycle events (absent in leases
    /// issued before lifecycle events existed).
    #[serde(default)]
    pub(crate) issued: Option<Issued>,
}

/// What a lease remembers of its issuance for lifecycle events.
#[derive(Serialize, Deserialize, Clone, Default)]
pub(crate) struct Issued {
    /// The trace id of the issuing request (its later events carry it too).
    #[serde(default)]
    pub(crate) trace_id: String,
    /// The token it was issued to.
    #[serde(default)]
    pub(crate) agent: events::Agent,
    /// The issuing mount's type (`database`, …).
    #[serde(default)]
    pub(crate) credential_type: String,
    /// The peer address the issuing request came from (the session observer compares
    /// the credential's database sessions with it).
    #[serde(default)]
    pub(crate) remote_address: String,
}

impl LeaseEntry {
    /// Its metric labels: the engine's mount path (`database/`) and the engine role
    /// (`internal.role`, empty when the engine has none).
    pub(crate) fn metric_labels(&self) -> (&str, &str) {
        let role = self
            .internal
            .get("role")
            .and_then(Value::as_str)
            .unwrap_or("");
        (self.mount_path.as_str(), role)
    }

    /// The lifecycle event `kind` of lease `id`, with `ttl` seconds left.
    pub(crate) fn event(
        &self,
        id: &str,
        kind: Kind,
        ttl: u64,
        reason: Option<&'static str>,
    ) -> Event {
        let issued = self.issued.clone().unwrap_or_default();
        // The scope of a database credential is its role and database; of anything
        // else, the lease path below the mount.
        // A credential narrowed at request time says what it was narrowed to
        // (`SELECT on public.t1`), whatever its engine.
        let scope = match (
            self.internal.get("scope"),
            self.internal.get("role"),
            self.internal.get("db_name"),
        ) {
            (Some(Value::String(s)), _, _) => json!(s),
            (_, Some(Value::String(r)), Some(Value::String(d))) => json!({"role": r, "db": d}),
            _ => json!({ "path": format!("{}{}", self.mount_path, self.path) }),
        };
        let credential_type = if issued.credential_type.is_empty() {
            self.mount_path.trim_end_matches('/').to_owned()
        } else {
            issued.credential_type
        };
        Event {
            kind,
            agent: issued.agent,
            credential_type,
            credential_scope: scope,
            ttl_seconds: ttl,
            trace_id: if issued.trace_id.is_empty() {
                events::current_trace_id()
            } else {
                issued.trace_id
            },
            lease_id: Some(id.to_owned()),
            reason,
        }
    }
}

impl LeaseEntry {
    pub(crate) fn decode(l: &StoredLease) -> Result<LeaseEntry, CoreError> {
        serde_json::from_slice(l.entry.as_slice())
            .map_err(|e| CoreError::internal(format!("lease {} is unreadable: {e}", l.id)))
    }

    pub(crate) fn record(&self, l: &StoredLease, expire_at: i64) -> LeaseRecord {
        LeaseRecord {
            id: l.id.clone(),
            path: self.path.clone(),
            issue_time: l.issue_time,
            expire_at,
            internal: self.internal.clone(),
        }
    }
}

fn encode(e: &LeaseEntry) -> Result<Vec<u8>, CoreError> {
    serde_json::to_vec(e).map_err(|e| CoreError::internal(e.to_string()))
}

fn secs(d: Duration) -> i64 {
    i64::try_from(d.as_secs()).unwrap_or(i64::MAX)
}

/// Delay before attempt `attempts + 1`: `base · 2^(attempts-1)` capped, then a random
/// point in its upper half (so many leases failing together do not retry in lockstep).
pub(crate) fn retry_delay(attempts: u32) -> i64 {
    let step = RETRY_BASE_SECS
        .saturating_mul(1i64 << attempts.saturating_sub(1).min(20))
        .min(RETRY_CAP_SECS);
    let half = step / 2;
    let jitter =
        i64::from(u32::from_le_bytes(leash_types::random::bytes::<4>())) % (step - half + 1);
    (half + jitter).max(1)
}

/// Why leases are being revoked (for logs and audit).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Reason {
    /// The worker found them due: an active lease's TTL ran out (`expired`), or a lease
    /// was marked for revocation because its token ended (`revoked`, `token revoked`).
    Expired,
    /// An explicit request revokes them now (`sys/leases/revoke*`, unmount):
    /// `revoked`, `operator`.
    Revoked,
    /// A leak scan found their credentials (`sys/leaks/scan`): `revoked`, `leak`.
    Leak,
    /// The kill switch (`sys/containment/lock`) ended everything their agent held:
    /// `revoked`, `contained`.
    Contained,
}

impl Reason {
    fn as_str(self) -> &'static str {
        match self {
            Reason::Expired => "expired",
            Reason::Revoked => "revoked",
            Reason::Leak => "leak",
            Reason::Contained => "contained",
        }
    }
}

/// Where a lease issued under a just-in-time grant is recorded (on the grant's access
/// request), before its credential exists, so closing the window early revokes it.
/// Implemented by the approvals module: the lease book records through this trait
/// without depending on it, and approvals revoke through the lease book (one direction,
/// no module cycle).
#[async_trait]
pub(crate) trait GrantLedger: Send + Sync {
    /// Records `lease_id` on the access request of `grant` (failures are logged: the
    /// lease is capped to the window anyway).
    async fn record_lease(&self, inner: &Inner, grant: &leash_backend::GrantWindow, lease_id: &str);
}

/// Everything the core keeps about leases beside storage: the registry engines issue
/// through ([`Registry`]), the expiry worker's wake-up ([`LeaseBook::start_worker`]),
/// the in-process revocation claims (storage adds the cross-server ones: `leases_due`
/// claims with `FOR UPDATE SKIP LOCKED` on shared storage), the issuance-rate windows,
/// and the grant ledger.
pub(crate) struct LeaseBook {
    /// Wakes the expiry worker (a token was revoked, a lease abandoned).
    pub(crate) wake: Arc<Notify>,
    /// Leases being revoked right now in this process (so a request and the worker
    /// never both do).
    pub(crate) claims: Claims,
    /// Recent issuances per (mount, lease path, identity), for
    /// `max_issuance_per_minute_per_entity`.
    pub(crate) issuance: IssuanceWindows,
    /// Where leases issued under a grant are recorded.
    pub(crate) grants: Arc<dyn GrantLedger>,
}

impl LeaseBook {
    /// A book whose worker is woken through `wake`.
    pub(crate) fn new(wake: Arc<Notify>, grants: Arc<dyn GrantLedger>) -> LeaseBook {
        LeaseBook {
            wake,
            claims: Claims::default(),
            issuance: IssuanceWindows::default(),
            grants,
        }
    }

    /// Starts the expiry worker of the core behind `inner`.
    pub(crate) fn start_worker(&self, inner: Weak<Inner>) -> Worker {
        start(inner, Arc::clone(&self.wake))
    }
}

/// Issuance times (unix seconds) of the last minute per (mount, lease path, identity).
#[derive(Default)]
pub(crate) struct IssuanceWindows(std::sync::Mutex<HashMap<String, Vec<i64>>>);

/// Most identities tracked for the per-minute caps (entries older than a minute are
/// dropped first when full).
const MAX_ISSUANCE_KEYS: usize = 100_000;

impl IssuanceWindows {
    /// Counts one issuance for `key` at `now` unless `max` were issued in the minute
    /// before; returns how many were (the refusal's count) when refused.
    pub(crate) fn take(&self, key: &str, now: i64, max: u64) -> Result<(), usize> {
        let Ok(mut m) = self.0.lock() else {
            return Ok(());
        };
        if m.len() >= MAX_ISSUANCE_KEYS && !m.contains_key(key) {
            m.retain(|_, v| v.iter().any(|t| now - t < 60));
        }
        let v = m.entry(key.to_owned()).or_default();
        v.retain(|t| now - t < 60);
        if u64::try_from(v.len()).unwrap_or(u64::MAX) >= max {
            return Err(v.len());
        }
        v.push(now);
        Ok(())
    }
}

/// Live leases of `mount_prefix` + `path` issued to `identity` (entity id, else token
/// accessor): reads the leases under that path (each decrypted).
async fn live_for(inner: &Inner, prefix: &str, identity: &str) -> Result<u64, CoreError> {
    let mut n = 0;
    for id in inner.storage.lease_ids_with_prefix(prefix).await? {
        let Some(l) = inner.storage.lease_get(&id).await? else {
            continue;
        };
        if l.state == LeaseState::Revoking {
            continue;
        }
        let Ok(e) = LeaseEntry::decode(&l) else {
            continue;
        };
        if e.issued.as_ref().is_some_and(|i| {
            let who = if i.agent.entity_id.is_empty() {
                &i.agent.accessor
            } else {
                &i.agent.entity_id
            };
            who == identity
        }) {
            n += 1;
        }
    }
    Ok(n)
}

/// Enforces a role's issuance caps for the caller (429 naming the cap and the count).
async fn check_caps(
    inner: &Inner,
    req: &BackendRequest<'_>,
    caller: &leash_backend::Caller,
    lease: &LeaseRequest,
    now: i64,
) -> Result<(), CoreError> {
    let caps = lease.caps;
    if caps == leash_backend::IssuanceCaps::default() {
        return Ok(());
    }
    let identity = if caller.entry.entity_id.is_empty() {
        caller.entry.accessor.as_str()
    } else {
        caller.entry.entity_id.as_str()
    };
    let prefix = format!(
        "{}{}/",
        req.mount.route_prefix(),
        lease.path.trim_matches('/')
    );
    let refuse = |reason: &'static str, msg: String| {
        inner.telemetry.issuance_refused(reason);
        tracing::warn!(path = %prefix, reason, "issuance refused by a per-entity cap");
        Err(CoreError::RateLimited(msg))
    };
    if caps.max_live_per_entity > 0 {
        let live = live_for(inner, &prefix, identity).await?;
        if live >= caps.max_live_per_entity {
            return refuse(
                "max_live_leases_per_entity",
                format!(
                    "max_live_leases_per_entity of {prefix} is {}: this entity holds {live} live leases of it; revoke one or wait for one to expire",
                    caps.max_live_per_entity
                ),
            );
        }
    }
    if caps.max_per_minute_per_entity > 0 {
        let key = format!("{}\u{0}{prefix}\u{0}{identity}", req.mount.uuid);
        if let Err(n) = inner
            .leases
            .issuance
            .take(&key, now, caps.max_per_minute_per_entity)
        {
            return refuse(
                "max_issuance_per_minute_per_entity",
                format!(
                    "max_issuance_per_minute_per_entity of {prefix} is {}: this entity was issued {n} in the last minute",
                    caps.max_per_minute_per_entity
                ),
            );
        }
    }
    Ok(())
}

/// The engines' handle on the lease book.
pub(crate) struct Registry {
    pub(crate) inner: Weak<Inner>,
}

#[async_trait]
impl LeaseRegistry for Registry {
    async fn live_for_caller(
        &self,
        req: &BackendRequest<'_>,
        id: &str,
    ) -> Result<Option<u64>, CoreError> {
        let inner = crate::upgrade(&self.inner)?;
        let Some(caller) = req.caller else {
            return Ok(None);
        };
        let now = inner.clock.unix();
        Ok(inner.storage.lease_get(id).await?.and_then(|l| {
            (l.state == LeaseState::Active && l.token == Some(caller.hash) && l.expire_at > now)
                .then(|| u64::try_from(l.expire_at - now).unwrap_or(0))
        }))
    }

    async fn begin(
        &self,
        req: &BackendRequest<'_>,
        lease: LeaseRequest,
    ) -> Result<PendingLease, CoreError> {
        let inner = crate::upgrade(&self.inner)?;
        let caller = req
            .caller
            .ok_or_else(|| CoreError::invalid("a lease needs an authenticated caller"))?;
        let now = inner.clock.unix();
        let sys = inner.config.token_limits;
        let mount_max = match req.mount.config.max_lease_ttl {
            0 => secs(sys.max_ttl),
            m => i64::try_from(m).unwrap_or(i64::MAX),
        };
        let mount_default = match req.mount.config.default_lease_ttl {
            0 => secs(sys.default_ttl),
            d => i64::try_from(d).unwrap_or(i64::MAX),
        };
        let max = match secs(lease.max_ttl) {
            0 => mount_max,
            m => m.min(mount_max),
        };
        let mut ttl = match secs(lease.ttl) {
            0 => mount_default,
            t => t,
        }
        .min(max);
        let mut max_expire_at = now.saturating_add(max);
        // A credential never outlives the token it was issued to.
        if let Some(t) = caller.entry.expire_time {
            ttl = ttl.min(t - now);
            max_expire_at = max_expire_at.min(caller.entry.max_expire_time.unwrap_or(i64::MAX));
        }
        // Under a just-in-time grant, the credential dies when the window closes (its
        // renewals too: the max expiry is the window's end).
        let grant = req.grant.cloned();
        if let Some(g) = &grant {
            if g.window_ends_at <= now {
                return Err(CoreError::invalid(
                    "the approval's grant window has closed; ask for a new approval",
                ));
            }
            ttl = ttl.min(g.window_ends_at - now);
            max_expire_at = max_expire_at.min(g.window_ends_at);
        }
        if ttl <= 0 {
            return Err(CoreError::invalid(
                "the token's remaining lifetime is too short to issue a lease",
            ));
        }
        check_caps(&inner, req, caller, &lease, now).await?;
        let id = format!(
            "{}{}/{}",
            req.mount.route_prefix(),
            lease.path.trim_matches('/'),
            leash_types::random::base62(LEASE_SUFFIX_LEN)
        );
        let entry = LeaseEntry {
            mount_uuid: req.mount.uuid.clone(),
            mount_path: req.mount.route_prefix(),
            path: id[req.mount.route_prefix().len()..].to_owned(),
            ttl: u64::try_from(ttl).unwrap_or(0),
            renewable: lease.renewable,
            last_renewal: None,
            internal: lease.internal,
            issued: Some(Issued {
                trace_id: events::current_trace_id(),
                agent: events::Agent::of(&caller.entry),
                credential_type: req.mount.kind.clone(),
                remote_address: events::current_remote_address(),
            }),
        };
        let stored = encode(&entry)?;
        let trace_id = entry
            .issued
            .as_ref()
            .map(|i| i.trace_id.clone())
            .unwrap_or_default();
        let expire_at = now + ttl;
        // Recorded on the access request before the credential exists, so closing the
        // window early revokes it whatever happens next.
        if let Some(g) = &grant {
            inner.leases.grants.record_lease(&inner, g, &id).await;
        }
        inner
            .storage
            .lease_insert(StoredLease {
                id: id.clone(),
                token: Some(caller.hash),
                issue_time: now,
                expire_at,
                max_expire_at,
                state: LeaseState::Pending,
                attempts: 0,
                next_attempt_at: 0,
                last_error: None,
                entry: leash_storage::Plain::new(stored.clone()),
            })
            .await
            .map_err(|e| match e {
                StorageError::Rejected(_) => CoreError::PermissionDenied,
                e => e.into(),
            })?;
        Ok(PendingLease {
            id,
            expire_at,
            ttl: u64::try_from(ttl).unwrap_or(0),
            trace_id,
            stored,
        })
    }

    async fn activate(&self, lease: &PendingLease) -> Result<(), CoreError> {
        let inner = crate::upgrade(&self.inner)?;
        match inner
            .storage
            .lease_update(&lease.id, LeaseState::Active, lease.expire_at, None)
            .await
        {
            Ok(true) => {
                // The credential exists now: its `issued` event (made durable by the
                // response entry that follows it).
                match serde_json::from_slice::<LeaseEntry>(&lease.stored) {
                    Ok(e) => {
                        let (engine, role) = e.metric_labels();
                        inner.telemetry.lease_issued(engine, role);
                        let ev = e.event(&lease.id, Kind::Issued, lease.ttl, None);
                        events::emit_logged(&inner, &[ev], false).await;
                    }
                    Err(e) => tracing::error!(error = %e, "lease entry unreadable for its event"),
                }
                Ok(())
            }
            Ok(false) | Err(StorageError::Rejected(_)) => Err(CoreError::invalid(
                "the token was revoked while the credential was being issued; the credential is being revoked",
            )),
            Err(e) => Err(e.into()),
        }
    }

    async fn abandon(&self, lease: &PendingLease) -> Result<(), CoreError> {
        let inner = crate::upgrade(&self.inner)?;
        let now = inner.clock.unix();
        let ids = [lease.id.clone()];
        if inner.storage.leases_mark_revoking(&ids, now).await? == 0 {
            // Already revoked and removed (before the credential existed, perhaps):
            // record it again, ownerless, so the worker revokes what may exist now.
            let again = StoredLease {
                id: lease.id.clone(),
                token: None,
                issue_time: now,
                expire_at: now,
                max_expire_at: now,
                state: LeaseState::Revoking,
                attempts: 0,
                next_attempt_at: 0,
                last_error: None,
                entry: leash_storage::Plain::new(lease.stored.clone()),
            };
            match inner.storage.lease_insert(again).await {
                Ok(()) | Err(StorageError::Conflict(_)) => {}
                Err(e) => return Err(e.into()),
            }
        }
        inner.leases.wake.notify_one();
        Ok(())
    }
}

/// Outcome of revoking a set of leases now.
#[derive(Debug, Default)]
pub(crate) struct Outcome {
    /// Revoked and removed.
    pub(crate) revoked: usize,
    /// Still there, scheduled for retry: (lease id, error).
    pub(crate) failed: Vec<(String, String)>,
}

/// Lease ids being revoked right now in this process. An explicit revocation and the
/// worker may pick the same lease at the same instant (a marked lease is due at once);
/// whoever claims it first revokes it, so its credential is revoked and its `revoked`
/// event logged once.
#[derive(Default)]
pub(crate) struct Claims(std::sync::Mutex<std::collections::HashSet<String>>);

impl Claims {
    /// Claims the ids that are free; returns (claimed, busy).
    fn claim(&self, ids: &[String]) -> (Vec<String>, Vec<String>) {
        let Ok(mut set) = self.0.lock() else {
            return (ids.to_vec(), Vec::new());
        };
        ids.iter().cloned().partition(|id| set.insert(id.clone()))
    }

    fn release(&self, ids: &[String]) {
        if let Ok(mut set) = self.0.lock() {
            for id in ids {
                set.remove(id);
            }
        }
    }
}

/// Releases claims when a revocation ends, however it ends.
struct ClaimGuard<'a> {
    claims: &'a Claims,
    ids: Vec<String>,
}

impl Drop for ClaimGuard<'_> {
    fn drop(&mut self) {
        self.claims.release(&self.ids);
    }
}

/// The leases of one mount in a round, with the backend that revokes them (`None`
/// when the mount is gone).
type MountBatch = (Option<Arc<dyn Backend>>, Vec<(StoredLease, LeaseRecord)>);

/// Revokes `leases` now (they must already be marked or be due, and claimed in
/// [`LeaseBook::claims`] by the caller): groups them by the mount that issued them, lets each engine revoke its batch (engines concurrently),
/// deletes what was revoked in one storage transaction and records each failure.
pub(crate) async fn revoke_now(
    inner: &Arc<Inner>,
    leases: Vec<StoredLease>,
    reason: Reason,
) -> Result<Outcome, CoreError> {
    let mut outcome = Outcome::default();
    let now = inner.clock.unix();
    let router = inner.router();
    let mut by_mount: HashMap<String, MountBatch> = HashMap::new();
    let mut failures: Vec<(StoredLease, String)> = Vec::new();
    for l in leases {
        let entry = match LeaseEntry::decode(&l) {
            Ok(e) => e,
            Err(e) => {
                failures.push((l, format!("lease entry is unreadable: {e}")));
                continue;
            }
        };
        let record = entry.record(&l, l.expire_at);
        let slot = by_mount.entry(entry.mount_uuid.clone()).or_insert_with(|| {
            let backend = router
                .all()
                .find(|m| m.entry.uuid == entry.mount_uuid)
                .map(|m| Arc::clone(&m.backend));
            (backend, Vec::new())
        });
        if slot.0.is_none() {
            failures.push((
                l,
                format!(
                    "the mount that issued this lease ({}) is no longer enabled",
                    entry.mount_path
                ),
            ));
            continue;
        }
        slot.1.push((l, record));
    }

    let mut tasks = JoinSet::new();
    for (_, (backend, items)) in by_mount {
        let Some(backend) = backend else { continue };
        if items.is_empty() {
            continue;
        }
        tasks.spawn(async move {
            let records: Vec<LeaseRecord> = items.iter().map(|(_, r)| r.clone()).collect();
            let results =
                match tokio::time::timeout(REVOKE_TIMEOUT, backend.revoke_leases(&records)).await {
                    Ok(r) if r.len() == records.len() => r,
                    Ok(_) => records
                        .iter()
                        .map(|_| Err(CoreError::internal("engine returned too few results")))
                        .collect(),
                    Err(_) => records
                        .iter()
                        .map(|_| {
                            Err(CoreError::Upstream(format!(
                                "revocation timed out after {}s",
                                REVOKE_TIMEOUT.as_secs()
                            )))
                        })
                        .collect(),
                };
            items
                .into_iter()
                .map(|(l, _)| l)
                .zip(results)
                .collect::<Vec<_>>()
        });
    }
    let mut done: Vec<StoredLease> = Vec::new();
    while let Some(joined) = tasks.join_next().await {
        let pairs = joined.map_err(|e| CoreError::internal(format!("revocation task: {e}")))?;
        for (l, r) in pairs {
            match r {
                Ok(()) => done.push(l),
                Err(e) => {
                    let msg = match &e {
                        CoreError::Internal(m) => m.clone(),
                        other => other.to_string(),
                    };
                    failures.push((l, msg));
                }
            }
        }
    }

    if !done.is_empty() {
        let ids: Vec<String> = done.iter().map(|l| l.id.clone()).collect();
        inner.storage.leases_delete(&ids).await?;
        drop(ids);
        outcome.revoked = done.len();
        let mut evs = Vec::with_capacity(done.len());
        for l in done {
            // A lease still Active or Pending when revoked here ran out its TTL; one
            // marked Revoking was asked for: by an operator (revoked right away, in a
            // request) or by its token's end (revoked by the worker).
            let (kind, why) = match reason {
                Reason::Revoked => (Kind::Revoked, reason::OPERATOR),
                Reason::Leak => (Kind::Revoked, reason::LEAK),
                Reason::Contained => (Kind::Revoked, reason::CONTAINED),
                Reason::Expired if l.state == LeaseState::Revoking => {
                    (Kind::Revoked, reason::TOKEN_REVOKED)
                }
                Reason::Expired => (Kind::Expired, reason::LEASE_EXPIRED),
            };
            let ttl = u64::try_from(l.expire_at - now).unwrap_or(0);
            match LeaseEntry::decode(&l) {
                Ok(e) => {
                    let (engine, role) = e.metric_labels();
                    inner.telemetry.lease_revoked(engine, role);
                    evs.push(e.event(&l.id, kind, ttl, Some(why)));
                }
                Err(e) => tracing::error!(error = %e, "lease entry unreadable for its event"),
            }
        }
        tracing::debug!(
            leases = evs.len(),
            reason = reason.as_str(),
            "leases revoked"
        );
        events::emit_logged(inner, &evs, true).await;
    }

    for (l, msg) in failures {
        let attempts = l.attempts.saturating_add(1);
        let next = now + retry_delay(attempts);
        if l.state != LeaseState::Revoking {
            // A lease that failed once can no longer be renewed back to life.
            inner
                .storage
                .lease_update(&l.id, LeaseState::Revoking, l.expire_at.min(now), None)
                .await?;
        }
        inner
            .storage
            .lease_record_failure(&l.id, attempts, next, &msg)
            .await?;
        tracing::warn!(lease_id = %l.id, attempts, retry_in_s = next - now, error = %msg, "lease revocation failed; will retry");
        let (id, m) = (l.id.clone(), msg.clone());
        audit_event(inner, move || {
            json!({
                "type": "lease",
                "event": "revocation-failed",
                "lease_id": id,
                "attempts": attempts,
                "error": m,
                "next_attempt_time": leash_types::rfc3339(next),
            })
        })
        .await;
        outcome.failed.push((l.id, msg));
    }
    Ok(outcome)
}

/// Writes a lease event to every audit device. A failure is logged (the revocation it
/// reports has already happened and must not be undone).
async fn audit_event<F>(inner: &Inner, f: F)
where
    F: Fn() -> Value + Send + Sync,
{
    let now = inner.clock.unix();
    let build = move |_: &leash_audit::Hasher, _: bool| {
        let mut v = f();
        if let Value::Object(m) = &mut v {
            m.insert("time".into(), Value::String(leash_types::rfc3339(now)));
        }
        v
    };
    if let Err(e) = inner.audit.log(&build).await {
        tracing::error!(error = %e, "could not audit a lease event");
    }
}

/// Marks `ids` for revocation and revokes them now; what fails stays for the worker.
pub(crate) async fn revoke_ids(inner: &Arc<Inner>, ids: &[String]) -> Result<Outcome, CoreError> {
    revoke_ids_because(inner, ids, Reason::Revoked).await
}

/// [`revoke_ids`] with the reason their events give.
pub(crate) async fn revoke_ids_because(
    inner: &Arc<Inner>,
    ids: &[String],
    why: Reason,
) -> Result<Outcome, CoreError> {
    let mut outcome = Outcome::default();
    for chunk in ids.chunks(BATCH) {
        // Claimed before they are marked (a marked lease is due for the worker at once):
        // the worker then leaves them to this request. A lease the worker is already
        // revoking is waited for, then taken over if it is still there.
        let (mut claimed, busy) = inner.leases.claims.claim(chunk);
        let mut guard = ClaimGuard {
            claims: &inner.leases.claims,
            ids: claimed.clone(),
        };
        for id in busy {
            let until = tokio::time::Instant::now() + REVOKE_TIMEOUT + Duration::from_secs(5);
            let mine = loop {
                let (mine, _) = inner.leases.claims.claim(std::slice::from_ref(&id));
                if !mine.is_empty() || tokio::time::Instant::now() >= until {
                    break mine;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            };
            if mine.is_empty() {
                outcome.failed.push((
                    id,
                    "another revocation of this lease is still running; it will be retried"
                        .to_owned(),
                ));
                continue;
            }
            guard.ids.extend(mine.iter().cloned());
            claimed.extend(mine);
        }
        let now = inner.clock.unix();
        inner.storage.leases_mark_revoking(&claimed, now).await?;
        let mut leases = Vec::with_capacity(claimed.len());
        for id in &claimed {
            if let Some(l) = inner.storage.lease_get(id).await? {
                leases.push(l);
            }
        }
        let o = revoke_now(inner, leases, why).await?;
        outcome.revoked += o.revoked;
        outcome.failed.extend(o.failed);
        drop(guard);
    }
    Ok(outcome)
}

/// Claims the leases of `ids` nobody is revoking yet, runs `first` (which may make
/// them due, e.g. by revoking their tokens: the worker leaves claimed leases alone),
/// then revokes the claimed ones now with reason `why`. Returns `first`'s result, the
/// outcome, and the ids that were busy (being revoked by someone else; the caller may
/// hand them to [`revoke_ids_because`]).
pub(crate) async fn revoke_claimed_after<T>(
    inner: &Arc<Inner>,
    ids: &[String],
    why: Reason,
    first: impl Future<Output = Result<T, CoreError>>,
) -> Result<(T, Outcome, Vec<String>), CoreError> {
    let (claimed, busy) = inner.leases.claims.claim(ids);
    let guard = ClaimGuard {
        claims: &inner.leases.claims,
        ids: claimed.clone(),
    };
    let t = first.await?;
    let mut outcome = Outcome::default();
    for chunk in claimed.chunks(BATCH) {
        let now = inner.clock.unix();
        inner.storage.leases_mark_revoking(chunk, now).await?;
        let mut leases = Vec::with_capacity(chunk.len());
        for id in chunk {
            if let Some(l) = inner.storage.lease_get(id).await? {
                leases.push(l);
            }
        }
        let o = revoke_now(inner, leases, why).await?;
        outcome.revoked += o.revoked;
        outcome.failed.extend(o.failed);
    }
    drop(guard);
    Ok((t, outcome, busy))
}

/// One round of the worker: revokes everything due now, batch by batch.
pub(crate) async fn revoke_due(inner: &Arc<Inner>) -> Result<usize, CoreError> {
    let mut total = 0;
    loop {
        let now = inner.clock.unix();
        let due = inner.storage.leases_due(now, BATCH).await?;
        let n = due.len();
        if n == 0 {
            return Ok(total);
        }
        // Leases a request is revoking right now are left to it.
        let ids: Vec<String> = due.iter().map(|l| l.id.clone()).collect();
        let (claimed, busy) = inner.leases.claims.claim(&ids);
        let _guard = ClaimGuard {
            claims: &inner.leases.claims,
            ids: claimed,
        };
        let due: Vec<StoredLease> = due.into_iter().filter(|l| !busy.contains(&l.id)).collect();
        let o = revoke_now(inner, due, Reason::Expired).await?;
        total += o.revoked;
        // A full batch taken by requests' revocations: the next tick looks again.
        if n < BATCH || busy.len() == n {
            return Ok(total);
        }
    }
}

/// The expiry worker's handle.
pub(crate) struct Worker {
    stop: watch::Sender<bool>,
    task: Option<JoinHandle<()>>,
}

impl Worker {
    pub(crate) async fn shutdown(mut self) {
        let _ = self.stop.send(true);
        if let Some(t) = self.task.take() {
            let _ = t.await;
        }
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
        if let Some(t) = self.task.take() {
            t.abort();
        }
    }
}

/// Starts the expiry worker. Its first act is to give up the intents of issuances the
/// previous process never finished.
pub(crate) fn start(inner: Weak<Inner>, wake: Arc<Notify>) -> Worker {
    let (stop, mut stopped) = watch::channel(false);
    let task = tokio::spawn(async move {
        if let Some(i) = inner.upgrade() {
            match i.storage.leases_abandon_pending(i.clock.unix()).await {
                Ok(0) => {}
                Ok(n) => tracing::warn!(
                    leases = n,
                    "leases left pending by an interrupted issuance are being revoked"
                ),
                Err(e) => tracing::error!(error = %e, "could not recover pending leases"),
            }
        }
        loop {
            if let Some(i) = inner.upgrade() {
                match revoke_due(&i).await {
                    Ok(0) => {}
                    Ok(n) => tracing::debug!(revoked = n, "leases revoked"),
                    Err(e) => tracing::warn!(error = %e, "lease expiry round failed; will retry"),
                }
            } else {
                break;
            }
            tokio::select! {
                _ = stopped.changed() => break,
                _ = tokio::time::sleep(TICK) => {}
                _ = wake.notified() => {}
            }
        }
    });
    Worker {
        stop,
        task: Some(task),
    }
}

/// Result of a renewal: the new TTL and any warning (capped by a maximum).
pub(crate) struct Renewed {
    pub(crate) ttl: u64,
    pub(crate) warning: Option<String>,
}

/// Renews lease `id` by `increment` (zero: the TTL it was issued with), capped at its
/// maximum lifetime and at its token's expiry; the engine moves the credential's own
/// expiry first (e.g. PostgreSQL's `VALID UNTIL`).
pub(crate) async fn renew(
    inner: &Arc<Inner>,
    id: &str,
    increment: Option<Duration>,
) -> Result<Renewed, CoreError> {
    let now = inner.clock.unix();
    let Some(l) = inner.storage.lease_get(id).await? else {
        return Err(CoreError::invalid("lease not found"));
    };
    match l.state {
        LeaseState::Active => {}
        LeaseState::Pending => {
            return Err(CoreError::invalid("lease is still being issued"));
        }
        LeaseState::Revoking => {
            return Err(CoreError::invalid(
                "lease is being revoked and cannot be renewed",
            ));
        }
    }
    if l.expire_at <= now {
        return Err(CoreError::invalid("lease expired"));
    }
    let mut entry = LeaseEntry::decode(&l)?;
    if !entry.renewable {
        return Err(CoreError::invalid("lease is not renewable"));
    }
    let wanted = match increment.map(secs) {
        Some(0) | None => i64::try_from(entry.ttl).unwrap_or(i64::MAX),
        Some(s) => s,
    };
    let mut cap = l.max_expire_at;
    let mut cap_name = "max_ttl";
    if let Some(t) = l.token {
        match inner.storage.token_get(t).await? {
            Some(tok) => {
                if let Some(e) = tok.expire_at
                    && e < cap
                {
                    cap = e;
                    cap_name = "token's expiry";
                }
            }
            None => return Err(CoreError::invalid("lease is being revoked with its token")),
        }
    }
    let mut new_expire = now.saturating_add(wanted);
    let mut warning = None;
    if new_expire > cap {
        warning = Some(format!(
            "TTL of {wanted}s exceeded the effective {cap_name} of {}s; TTL value is capped accordingly",
            (cap - now).max(0)
        ));
        new_expire = cap;
    }
    if new_expire <= now {
        return Err(CoreError::invalid(
            "lease cannot be renewed: it has reached its maximum lifetime",
        ));
    }
    let router = inner.router();
    let backend = router
        .all()
        .find(|m| m.entry.uuid == entry.mount_uuid)
        .map(|m| Arc::clone(&m.backend))
        .ok_or_else(|| {
            CoreError::invalid(format!(
                "the mount that issued this lease ({}) is no longer enabled",
                entry.mount_path
            ))
        })?;
    backend.renew_lease(&entry.record(&l, new_expire)).await?;
    entry.last_renewal = Some(now);
    match inner
        .storage
        .lease_update(id, LeaseState::Active, new_expire, Some(encode(&entry)?))
        .await
    {
        Ok(true) => {}
        Ok(false) => return Err(CoreError::invalid("lease not found")),
        Err(StorageError::Rejected(_)) => {
            return Err(CoreError::invalid(
                "lease is being revoked and cannot be renewed",
            ));
        }
        Err(e) => return Err(e.into()),
    }
    let ttl = u64::try_from(new_expire - now).unwrap_or(0);
    // Written; the renewal's response entry follows and makes it durable.
    let ev = entry.event(id, Kind::Renewed, ttl, None);
    events::emit_logged(inner, &[ev], false).await;
    Ok(Renewed { ttl, warning })
}

/// `sys/leases/lookup`'s answer for one lease.
pub(crate) async fn lookup(inner: &Arc<Inner>, id: &str) -> Result<Value, CoreError> {
    let Some(l) = inner.storage.lease_get(id).await? else {
        return Err(CoreError::invalid("invalid lease"));
    };
    let entry = LeaseEntry::decode(&l)?;
    let now = inner.clock.unix();
    let rfc = leash_types::rfc3339;
    let mut v = json!({
        "id": l.id,
        "issue_time": rfc(l.issue_time),
        "expire_time": rfc(l.expire_at),
        "last_renewal": entry.last_renewal.map(rfc),
        "renewable": entry.renewable && l.state == LeaseState::Active,
        "ttl": (l.expire_at - now).max(0),
        "state": l.state.as_str(),
        "max_expire_time": rfc(l.max_expire_at),
        "revocation_attempts": l.attempts,
    });
    if let Some(Value::String(scope)) = entry.internal.get("scope") {
        v["scope"] = json!(scope);
    }
    if let Some(e) = &l.last_error {
        v["last_error"] = json!(e);
        v["next_attempt_time"] = json!(rfc(l.next_attempt_at));
    }
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_delay_grows_and_is_capped() {
        for _ in 0..200 {
            let d1 = retry_delay(1);
            assert!((1..=1).contains(&d1), "{d1}");
            let d4 = retry_delay(4);
            assert!((4..=8).contains(&d4), "{d4}");
            let big = retry_delay(40);
            assert!(
                (RETRY_CAP_SECS / 2..=RETRY_CAP_SECS).contains(&big),
                "{big}"
            );
        }
    }
}
