//! The approval gate of the pipeline and the grant window's bookkeeping: a use spent or
//! refunded, leases recorded before their credential exists, `granted` audited.

use leash_approval::{AccessRequest, Status};
use leash_backend::{Caller, CoreError};
use leash_types::Operation;
use serde_json::Value;

use crate::Inner;

use super::audit::audit;
use super::store::{change, load};
use super::*;

/// The approval gate: `Ok(grant)` if `caller` holds an open grant for `operation` on
/// `path` (one use is spent), else the 403 that says how to ask.
pub(crate) async fn gate(
    inner: &Inner,
    caller: &Caller,
    path: &str,
    operation: Operation,
) -> Result<Grant, CoreError> {
    let now = inner.clock.unix();
    let op = operation.as_str();
    let mut used_up: Option<String> = None;
    for key in inner
        .storage
        .list(NS, &format!("tok/{}/", hash_hex(caller)))
        .await?
    {
        let id = key.rsplit('/').next().unwrap_or_default().to_owned();
        let Some(r) = load(inner, &id).await? else {
            continue;
        };
        if !r.covers(path, op) {
            continue;
        }
        if !r.window_open(now) {
            if r.status == Status::Pending && r.is_pending(now) {
                used_up = Some(format!(
                    "access request {id} is still pending ({}/{} approvals); poll GET /v1/sys/control-group/request/{id}",
                    r.tally().0,
                    r.tally().1
                ));
            }
            continue;
        }
        match change(inner, &id, move |r| r.use_grant(now)).await {
            Ok((r, ())) => {
                return Ok(Grant {
                    request_id: r.id,
                    window_ends_at: r.window_ends_at.unwrap_or(now),
                });
            }
            Err(CoreError::InvalidRequest(m)) => used_up = Some(m),
            Err(e) => return Err(e),
        }
    }
    let how = format!(
        "{path} requires an approval (control group in the policy). Ask with POST /v1/sys/control-group/request {{\"operation\": \"{op}\", \"target_resource\": \"{path}\", \"justification\": \"…\", \"requested_duration_minutes\": N}}, then poll GET /v1/sys/control-group/request/<request_id> until \"approved\" is true"
    );
    Err(CoreError::ApprovalRequired(match used_up {
        Some(m) => format!("{m}; {how}"),
        None => how,
    }))
}

/// Gives back the use a request spent when its backend failed (a transient target
/// outage must not cost the agent its approval).
pub(crate) async fn refund(inner: &Inner, grant: &Grant) {
    let now = inner.clock.unix();
    if let Err(e) = change(inner, &grant.request_id, move |r| {
        if r.window_open(now) {
            r.uses_left = r.uses_left.map(|n| n.saturating_add(1));
        }
        Ok(())
    })
    .await
    {
        tracing::warn!(error = %e, request_id = %grant.request_id, "could not give back a grant use");
    }
}

/// Records a lease begun under the current grant (before its credential exists).
async fn record_lease(inner: &Inner, grant: &Grant, lease_id: &str) {
    let lease = lease_id.to_owned();
    if let Err(e) = change(inner, &grant.request_id, move |r| {
        r.leases.push(lease);
        Ok(())
    })
    .await
    {
        // The lease is capped to the window anyway; it only escapes an early `complete`.
        tracing::error!(error = %e, request_id = %grant.request_id, "could not record a lease on its access request");
    }
}

/// Audits the credential issued under the current grant (`granted`).
pub(crate) async fn granted(inner: &Inner, grant: &Grant, lease_id: &str) -> Result<(), CoreError> {
    let Some(r) = load(inner, &grant.request_id).await? else {
        return Ok(());
    };
    let one = AccessRequest {
        leases: vec![lease_id.to_owned()],
        ..r
    };
    audit(inner, "approval.granted", &one, Value::Null, Value::Null).await
}

// ------------------------------------------------------------------------------ API

/// The approvals' side of the lease book's [`crate::leases::GrantLedger`]: where
/// leases begun under a grant are recorded.
pub(crate) struct Ledger;

#[async_trait::async_trait]
impl crate::leases::GrantLedger for Ledger {
    async fn record_lease(&self, inner: &Inner, grant: &Grant, lease_id: &str) {
        record_lease(inner, grant, lease_id).await;
    }
}
