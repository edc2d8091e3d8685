//! Access requests in storage: load, atomic change, settings and rules, the sweeper's
//! and the gate's indexes, pruning, and the pending-request figures for metrics.

use std::sync::{Arc, Mutex};

use leash_approval::{AccessRequest, ApprovalError, Config, Rule};
use leash_backend::CoreError;
use leash_backend::store::load_json;

use crate::Inner;

use super::*;

pub(super) async fn load(inner: &Inner, id: &str) -> Result<Option<AccessRequest>, CoreError> {
    if id.is_empty() || id.len() > 64 || !id.bytes().all(|b| b.is_ascii_hexdigit() || b == b'-') {
        return Ok(None);
    }
    load_json(inner.storage.as_ref(), NS, &format!("req/{id}")).await
}

/// Changes request `id` atomically with `f`; returns the new state and `f`'s result.
pub(super) async fn change<T: Send + 'static>(
    inner: &Inner,
    id: &str,
    f: impl FnOnce(&mut AccessRequest) -> Result<T, ApprovalError> + Send + 'static,
) -> Result<(AccessRequest, T), CoreError> {
    let out: Arc<Mutex<Option<(AccessRequest, T)>>> = Arc::new(Mutex::new(None));
    let slot = Arc::clone(&out);
    let id_owned = id.to_owned();
    let res = inner
        .storage
        .modify(
            NS,
            &format!("req/{id}"),
            Box::new(move |cur| {
                // The refusal travels as the typed ApprovalError (Rejected's source) and
                // is mapped to its status below.
                let Some(cur) = cur else {
                    return Err(Box::new(ApprovalError::Invalid(format!(
                        "no access request {id_owned}"
                    ))));
                };
                let mut r: AccessRequest = serde_json::from_slice(cur).map_err(|e| {
                    ApprovalError::Setup(format!("stored request is unreadable: {e}"))
                })?;
                let t = f(&mut r)?;
                let bytes =
                    serde_json::to_vec(&r).map_err(|e| ApprovalError::Setup(e.to_string()))?;
                if let Ok(mut s) = slot.lock() {
                    *s = Some((r, t));
                }
                Ok(Some(bytes))
            }),
        )
        .await;
    match res {
        Ok(_) => {}
        Err(leash_storage::StorageError::Rejected(r)) => {
            return Err(match r.downcast::<ApprovalError>() {
                Ok(e) => err(*e),
                Err(other) => CoreError::internal(other.to_string()),
            });
        }
        Err(e) => return Err(e.into()),
    }
    out.lock()
        .ok()
        .and_then(|mut s| s.take())
        .ok_or_else(|| CoreError::internal("request change produced nothing"))
}

pub(super) async fn config(inner: &Inner) -> Result<Config, CoreError> {
    Ok(load_json(inner.storage.as_ref(), NS, "config")
        .await?
        .unwrap_or_default())
}

pub(super) async fn rules(inner: &Inner) -> Result<Vec<Rule>, CoreError> {
    let mut out = Vec::new();
    for k in inner.storage.list(NS, "rule/").await? {
        if let Some(r) = load_json::<Rule>(inner.storage.as_ref(), NS, &k).await? {
            out.push(r);
        }
    }
    Ok(out)
}

/// A request reached a final state: out of the sweeper's and the gate's indexes, into
/// the retention index.
pub(super) async fn finished(inner: &Inner, r: &AccessRequest) -> Result<(), CoreError> {
    index(inner, format!("pending/{}", r.id), false).await?;
    index(inner, format!("open/{}", r.id), false).await?;
    index(
        inner,
        format!("tok/{}/{}", r.requester.token_hash, r.id),
        false,
    )
    .await?;
    let at = r.closed_at.unwrap_or_else(|| inner.clock.unix()).max(0);
    index(inner, format!("closed/{at:012}/{}", r.id), true).await
}

/// Deletes requests that reached a final state more than [`RETENTION_SECS`] ago.
pub(super) async fn prune(inner: &Inner, now: i64) -> Result<(), CoreError> {
    use std::sync::atomic::Ordering;
    let last = inner.approvals.last_prune.load(Ordering::Relaxed);
    if now - last < PRUNE_EVERY_SECS {
        return Ok(());
    }
    inner.approvals.last_prune.store(now, Ordering::Relaxed);
    let cutoff = now - RETENTION_SECS;
    for key in inner.storage.list(NS, "closed/").await? {
        let mut parts = key.splitn(3, '/').skip(1);
        let (Some(at), Some(id)) = (parts.next(), parts.next()) else {
            continue;
        };
        if at.parse::<i64>().unwrap_or(0) >= cutoff {
            break; // keys are sorted by time
        }
        inner.storage.delete(NS, &format!("req/{id}")).await?;
        inner.storage.delete(NS, &key).await?;
    }
    Ok(())
}

pub(super) async fn index(inner: &Inner, key: String, on: bool) -> Result<(), CoreError> {
    if on {
        inner.storage.put(NS, &key, Vec::new()).await?;
    } else {
        inner.storage.delete(NS, &key).await?;
    }
    Ok(())
}

// ---------------------------------------------------------------------------- audit

/// Pending requests and the age of the oldest, for metrics.
pub(crate) async fn pending_stats(inner: &Inner) -> Result<(u64, i64), CoreError> {
    let now = inner.clock.unix();
    let mut n = 0;
    let mut oldest = 0;
    for key in inner.storage.list(NS, "pending/").await? {
        let id = key.trim_start_matches("pending/");
        if let Some(r) = load(inner, id).await?
            && r.is_pending(now)
        {
            n += 1;
            oldest = oldest.max(r.age(now));
        }
    }
    Ok((n, oldest))
}
// ---------------------------------------------------------------------- containment
