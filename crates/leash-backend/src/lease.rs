//! Leases as engines see them.
//!
//! An engine that hands out a credential with a lifetime (a database role, a cloud key)
//! follows the **intent-first** protocol, so a crash at any instant leaves either a
//! lease that will be revoked on schedule or nothing in the target:
//!
//! 1. [`LeaseRegistry::begin`] persists a `Pending` lease (owned by the caller's token)
//!    holding everything revocation needs, and returns its id and lifetime;
//! 2. the engine creates the credential in the target;
//! 3. [`LeaseRegistry::activate`] marks the lease `Active`. If that fails (the owning
//!    token was revoked meanwhile) the engine calls [`LeaseRegistry::abandon`] and
//!    refuses the request; the core's expiry worker revokes the credential.
//!
//! If step 2 fails, the engine calls [`LeaseRegistry::abandon`] too: the worker then
//! revokes whatever may exist ("revoke if exists"), so a credential half-made by a lost
//! connection cannot survive.
//!
//! Renewal and revocation come back to the engine through
//! [`crate::Backend::renew_lease`] and [`crate::Backend::revoke_leases`] with the
//! [`LeaseRecord`] it stored.

use std::time::Duration;

use async_trait::async_trait;
use serde_json::Value;

use crate::backend::BackendRequest;
use crate::error::CoreError;

/// What an engine asks the core to record before it creates a credential.
#[derive(Debug, Clone)]
pub struct LeaseRequest {
    /// Path of the lease below the mount, without the random suffix (e.g.
    /// `creds/readonly`); the lease id becomes `<mount>/<path>/<random>`.
    pub path: String,
    /// Requested TTL; zero means the mount's (or the system's) default.
    pub ttl: Duration,
    /// Requested maximum lifetime; zero means the mount's (or the system's) maximum.
    pub max_ttl: Duration,
    /// Whether the lease may be renewed.
    pub renewable: bool,
    /// Engine data needed to renew and revoke (usernames, statements). Sealed at rest;
    /// must not hold the credential's secret.
    pub internal: Value,
    /// Issuance caps per identity of the role that asks (0: none).
    pub caps: IssuanceCaps,
}

/// Per-identity issuance caps of a role (`max_live_leases_per_entity`,
/// `max_issuance_per_minute_per_entity`), enforced by the core in
/// [`LeaseRegistry::begin`] against the leases of the same mount and `path`. The
/// identity is the caller's entity id, else its token accessor. 0 means no cap.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct IssuanceCaps {
    /// Most live leases one identity may hold at once.
    pub max_live_per_entity: u64,
    /// Most leases one identity may be issued per minute.
    pub max_per_minute_per_entity: u64,
}

/// A lease recorded as intent; the engine now creates the credential.
#[derive(Debug, Clone)]
pub struct PendingLease {
    /// The full lease id (`database/creds/readonly/<random>`).
    pub id: String,
    /// Unix seconds at which it expires (after every cap: role, mount, system, token).
    pub expire_at: i64,
    /// Its TTL in whole seconds, as returned to the caller.
    pub ttl: u64,
    /// The trace id of the issuing request (the engine may pass it on, e.g. in an AWS
    /// role session name, so the target's own logs join leash's audit).
    pub trace_id: String,
    /// The core's stored form of the lease (opaque to engines; lets
    /// [`LeaseRegistry::abandon`] re-record a lease that was removed meanwhile).
    pub stored: Vec<u8>,
}

/// A stored lease handed back to its engine.
#[derive(Debug, Clone)]
pub struct LeaseRecord {
    /// The full lease id.
    pub id: String,
    /// The lease path below its mount (`creds/readonly/<random>`).
    pub path: String,
    /// Unix seconds of issue.
    pub issue_time: i64,
    /// Unix seconds of expiry (for renewal: the new expiry).
    pub expire_at: i64,
    /// The engine's data, as given to [`LeaseRegistry::begin`].
    pub internal: Value,
}

/// The core's lease book, as engines use it (see the module docs for the protocol).
#[async_trait]
pub trait LeaseRegistry: Send + Sync {
    /// Persists the intent (`Pending`), owned by the request's token. Fails if that
    /// token is already gone.
    async fn begin(
        &self,
        req: &BackendRequest<'_>,
        lease: LeaseRequest,
    ) -> Result<PendingLease, CoreError>;
    /// Marks the lease `Active` once the credential exists. An error means the lease was
    /// revoked meanwhile: the engine must [`LeaseRegistry::abandon`] it and fail.
    async fn activate(&self, lease: &PendingLease) -> Result<(), CoreError>;
    /// Gives the lease up: it is marked for revocation now (re-recorded if it was
    /// already removed), so the expiry worker revokes whatever the engine may have
    /// created. Never loses the record; errors only if storage fails.
    async fn abandon(&self, lease: &PendingLease) -> Result<(), CoreError>;
    /// Seconds lease `id` has left if it is active and owned by the token of `req`
    /// (`None` otherwise): lets an engine hand the same token its live credential again
    /// (`reuse_lease_for_same_token`).
    async fn live_for_caller(
        &self,
        _req: &BackendRequest<'_>,
        _id: &str,
    ) -> Result<Option<u64>, CoreError> {
        Ok(None)
    }
}
