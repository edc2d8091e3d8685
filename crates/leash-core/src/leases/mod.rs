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

mod caps;
mod registry;
mod renew;
mod revoke;
mod worker;

pub(crate) use caps::*;
pub(crate) use registry::*;
pub(crate) use renew::*;
pub(crate) use revoke::*;
pub(crate) use worker::*;

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
