//! Background work: pending requests expire or escalate, ended windows close (what was
//! issued under them is revoked), and the kill switch's part.

use std::sync::Arc;

use leash_approval::{AccessRequest, Status};
use leash_backend::CoreError;
use serde_json::{Value, json};

use crate::Inner;

use super::audit::{audit, notify};
use super::store::{change, config, finished, index, load, prune};
use super::*;

/// After a window closed: revoke what was issued under it, audit, unindex.
pub(super) async fn close_window(
    inner: &Arc<Inner>,
    r: &AccessRequest,
    actor: Option<Value>,
) -> Result<(), CoreError> {
    let outcome = crate::leases::revoke_ids(inner, &r.leases).await?;
    let failed: Vec<String> = outcome.failed.iter().map(|(_, e)| e.clone()).collect();
    audit(
        inner,
        "approval.completed",
        r,
        actor.unwrap_or(Value::Null),
        json!({"reason": r.closed_reason, "leases_revoked": outcome.revoked, "revocations_retrying": failed.len()}),
    )
    .await?;
    finished(inner, r).await
}

/// One round of background work: expire pending requests, escalate old ones, close
/// windows that ended. Errors are logged; the next round retries.
pub(crate) async fn sweep(inner: &Arc<Inner>) {
    if let Err(e) = sweep_inner(inner).await {
        tracing::warn!(error = %e, "approval sweep failed; will retry");
    }
}

pub(super) async fn sweep_inner(inner: &Arc<Inner>) -> Result<(), CoreError> {
    let now = inner.clock.unix();
    let cfg = config(inner).await?;
    for key in inner.storage.list(NS, "pending/").await? {
        let id = key.trim_start_matches("pending/").to_owned();
        let Some(r) = load(inner, &id).await? else {
            index(inner, key, false).await?;
            continue;
        };
        if r.status != Status::Pending {
            index(inner, key, false).await?;
            continue;
        }
        if now >= r.pending_until {
            let (r, changed) = change(inner, &id, move |r| Ok(r.expire(now))).await?;
            if changed {
                audit(inner, "approval.expired", &r, Value::Null, Value::Null).await?;
                notify(inner, "expired", &r).await;
            }
            finished(inner, &r).await?;
            continue;
        }
        if let Some(url) = &cfg.escalation_url
            && !r.escalated
            && r.age(now) >= i64::try_from(cfg.escalate_after).unwrap_or(i64::MAX)
        {
            let (r, changed) = change(inner, &id, |r| {
                let first = !r.escalated;
                r.escalated = true;
                Ok(first)
            })
            .await?;
            if changed {
                audit(
                    inner,
                    "approval.escalated",
                    &r,
                    Value::Null,
                    json!({"after_seconds": r.age(now)}),
                )
                .await?;
                let p = leash_approval::notify::payload("escalated", &r, &cfg, now);
                inner.approvals.notifier.send(std::slice::from_ref(url), &p);
            }
        }
    }
    for key in inner.storage.list(NS, "open/").await? {
        let id = key.trim_start_matches("open/").to_owned();
        let Some(r) = load(inner, &id).await? else {
            index(inner, key, false).await?;
            continue;
        };
        let ended = r.window_ends_at.is_none_or(|e| now >= e);
        if r.status == Status::Approved && ended {
            let (r, changed) =
                change(inner, &id, move |r| Ok(r.close("window ended", now))).await?;
            if changed {
                close_window(inner, &r, None).await?;
                notify(inner, "completed", &r).await;
            }
        } else if r.status != Status::Approved {
            index(inner, key, false).await?;
        }
    }
    prune(inner, now).await
}

/// The kill switch: ends every pending or approved request `matches` picks (pending
/// ones can no longer be approved, approved windows close and their leases are
/// revoked). Returns how many were ended.
pub(crate) async fn contain(
    inner: &Arc<Inner>,
    matches: impl Fn(&AccessRequest) -> bool,
    actor: &Value,
) -> Result<usize, CoreError> {
    let now = inner.clock.unix();
    let mut ended = 0;
    let mut keys = inner.storage.list(NS, "pending/").await?;
    keys.extend(inner.storage.list(NS, "open/").await?);
    for key in keys {
        let id = key
            .trim_start_matches("pending/")
            .trim_start_matches("open/")
            .to_owned();
        let Some(r) = load(inner, &id).await? else {
            continue;
        };
        if !matches!(r.status, Status::Pending | Status::Approved) || !matches(&r) {
            continue;
        }
        let (r, was) = change(inner, &id, move |r| {
            let was = r.status;
            match was {
                Status::Pending => {
                    r.status = Status::Expired;
                    r.closed_at = Some(now);
                    r.closed_reason = Some(crate::events::reason::CONTAINED.to_owned());
                }
                Status::Approved => {
                    r.close(crate::events::reason::CONTAINED, now);
                }
                _ => {}
            }
            Ok(was)
        })
        .await?;
        match was {
            Status::Pending => {
                audit(
                    inner,
                    "approval.expired",
                    &r,
                    actor.clone(),
                    json!({"reason": crate::events::reason::CONTAINED}),
                )
                .await?;
                finished(inner, &r).await?;
                notify(inner, "expired", &r).await;
            }
            Status::Approved => {
                close_window(inner, &r, Some(actor.clone())).await?;
                notify(inner, "completed", &r).await;
            }
            _ => continue,
        }
        ended += 1;
    }
    Ok(ended)
}
