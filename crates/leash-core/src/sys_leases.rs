//! `sys/leases/*` (and the legacy `sys/renew`, `sys/revoke`): look up, list, renew and
//! revoke leases; `revoke-prefix` and `revoke-force` (sudo); `failing` (sudo, a leash
//! extension: every lease whose revocation keeps failing, with its last error).

use std::sync::Arc;

use leash_backend::{BackendRequest, CoreError, LeaseInfo, Response, fields, match_route};
use leash_types::Operation;
use serde_json::{Value, json};

use crate::Inner;
use crate::leases::{self, Outcome};

/// How far up the token tree [`may_touch`] looks for the caller.
const MAX_TREE_DEPTH: usize = 64;

/// Whether the caller may renew or look up lease `id` (unlike Vault, which lets any
/// token with the path's capability do it): the lease must belong to the caller's token
/// or to a token below it, unless the caller holds `sudo` on the path (`sys/<p>`). A
/// lease the caller may not touch is answered as if it did not exist.
async fn may_touch(
    inner: &Inner,
    req: &BackendRequest<'_>,
    p: &str,
    id: &str,
) -> Result<bool, CoreError> {
    let Some(c) = req.caller else {
        return Ok(false);
    };
    if c.acl.is_root()
        || c.acl
            .capabilities(&format!("sys/{p}"))
            .contains(leash_types::Capability::Sudo)
    {
        return Ok(true);
    }
    let Some(lease) = inner.storage.lease_get(id).await? else {
        return Ok(true); // nothing to protect: the handler answers "not found"
    };
    let mut owner = lease.token;
    for _ in 0..MAX_TREE_DEPTH {
        match owner {
            None => return Ok(false),
            Some(h) if h == c.hash => return Ok(true),
            Some(h) => owner = inner.storage.token_get(h).await?.and_then(|t| t.parent),
        }
    }
    Ok(false)
}

/// Handles `p` if it is a lease path (`None` if it is not one).
pub(crate) async fn handle(
    inner: &Arc<Inner>,
    req: &BackendRequest<'_>,
    p: &str,
) -> Option<Result<Option<Response>, CoreError>> {
    let op = req.operation;
    let write = matches!(op, Operation::Update | Operation::Create);
    let lease_id = |from_path: &str| -> Result<String, CoreError> {
        let id = if from_path.is_empty() {
            fields::string(req.data, "lease_id")?.unwrap_or_default()
        } else {
            from_path.to_owned()
        };
        let id = id.trim().trim_start_matches('/').to_owned();
        if id.is_empty() {
            return Err(CoreError::invalid("missing required field \"lease_id\""));
        }
        Ok(id)
    };
    let rest = |pattern: &str| match_route(pattern, p).map(|c| c[0].to_owned());

    if p == "leases/lookup" && write {
        return Some(
            async {
                let id = lease_id("")?;
                if !may_touch(inner, req, p, &id).await? {
                    return Err(CoreError::invalid("invalid lease"));
                }
                Ok(Some(Response::data(leases::lookup(inner, &id).await?)))
            }
            .await,
        );
    }
    if let Some(prefix) = rest("leases/lookup/*") {
        if !matches!(op, Operation::List | Operation::Read) {
            return Some(Err(CoreError::UnsupportedOperation));
        }
        // Listing every lease (`LIST sys/leases/lookup`, no prefix) needs sudo too:
        // the root-protection check sees that path without its trailing slash.
        if prefix.trim_matches('/').is_empty()
            && let Some(c) = req.caller
            && !c.acl.is_root()
            && !c
                .acl
                .capabilities("sys/leases/lookup/")
                .contains(leash_types::Capability::Sudo)
        {
            return Some(Err(CoreError::PermissionDenied));
        }
        return Some(list_children(inner, &prefix).await);
    }
    let renew_path = rest("leases/renew/*").or_else(|| rest("renew/*"));
    if p == "leases/renew" || p == "renew" || renew_path.is_some() {
        if !write {
            return Some(Err(CoreError::UnsupportedOperation));
        }
        return Some(
            async {
                let id = lease_id(renew_path.as_deref().unwrap_or(""))?;
                if !may_touch(inner, req, p, &id).await? {
                    return Err(CoreError::invalid("lease not found"));
                }
                let increment = fields::duration(req.data, "increment")?;
                let r = leases::renew(inner, &id, increment).await?;
                let mut resp = Response::data(Value::Null);
                resp.data = None;
                resp.secret = Some(LeaseInfo {
                    lease_id: id,
                    renewable: true,
                    lease_duration: r.ttl,
                });
                if let Some(w) = r.warning {
                    resp = resp.with_warning(w);
                }
                Ok(Some(resp))
            }
            .await,
        );
    }
    let revoke_path = rest("leases/revoke/*").or_else(|| rest("revoke/*"));
    if p == "leases/revoke" || p == "revoke" || revoke_path.is_some() {
        if !write {
            return Some(Err(CoreError::UnsupportedOperation));
        }
        return Some(
            async {
                let id = lease_id(revoke_path.as_deref().unwrap_or(""))?;
                if inner.storage.lease_get(&id).await?.is_none() {
                    // Vault answers an unknown lease with success: revoking is idempotent.
                    return Ok(None);
                }
                revoke(inner, req, vec![id], "").await
            }
            .await,
        );
    }
    if let Some(prefix) = rest("leases/revoke-prefix/*").or_else(|| rest("revoke-prefix/*")) {
        if !write {
            return Some(Err(CoreError::UnsupportedOperation));
        }
        return Some(
            async {
                let prefix = check_prefix(&prefix)?;
                let ids = inner.storage.lease_ids_with_prefix(&prefix).await?;
                revoke(inner, req, ids, " under the prefix").await
            }
            .await,
        );
    }
    if let Some(prefix) = rest("leases/revoke-force/*").or_else(|| rest("revoke-force/*")) {
        if !write {
            return Some(Err(CoreError::UnsupportedOperation));
        }
        return Some(async {
            let prefix = check_prefix(&prefix)?;
            let ids = inner.storage.lease_ids_with_prefix(&prefix).await?;
            let n = inner.storage.leases_delete(&ids).await?;
            let who = req
                .caller
                .map(|c| c.entry.display_name.clone())
                .unwrap_or_default();
            tracing::warn!(
                prefix = %prefix,
                leases = n,
                by = %who,
                "revoke-force: lease records dropped WITHOUT revoking their credentials in the target"
            );
            let count = n;
            let (pfx, ids2) = (prefix.clone(), ids.clone());
            let event = move |_: &leash_audit::Hasher, _: bool| {
                json!({
                    "type": "lease",
                    "event": "force-revoked",
                    "warning": "lease records dropped without revoking their credentials",
                    "prefix": pfx,
                    "count": count,
                    "lease_ids": ids2,
                    "by": who,
                })
            };
            inner.audit.log(&event).await.map_err(|e| {
                tracing::error!(error = %e, "revoke-force could not be audited");
                CoreError::AuditFailed
            })?;
            if n == 0 {
                return Ok(None);
            }
            Ok(Some(
                Response::data(json!({"dropped": n})).with_warning(format!(
                    "{n} lease record(s) under {prefix} were dropped without revoking their credentials; remove those credentials from their targets by hand"
                )),
            ))
        }
        .await);
    }
    if p == "leases/failing" {
        if !matches!(op, Operation::Read | Operation::List) {
            return Some(Err(CoreError::UnsupportedOperation));
        }
        return Some(
            async {
                let limit = match fields::integer(req.data, "limit")? {
                    Some(n) if n > 0 => usize::try_from(n).unwrap_or(1000),
                    _ => 1000,
                };
                let rfc = leash_types::rfc3339;
                let list: Vec<Value> = inner
                    .storage
                    .leases_failing(limit)
                    .await?
                    .into_iter()
                    .map(|l| {
                        json!({
                            "lease_id": l.id,
                            "state": l.state.as_str(),
                            "attempts": l.attempts,
                            "last_error": l.last_error,
                            "next_attempt_time": rfc(l.next_attempt_at),
                            "expire_time": rfc(l.expire_at),
                        })
                    })
                    .collect();
                Ok(Some(Response::data(
                    json!({"count": list.len(), "leases": list}),
                )))
            }
            .await,
        );
    }
    None
}

/// A revoke prefix: not empty (that would be every lease), without a leading slash.
fn check_prefix(prefix: &str) -> Result<String, CoreError> {
    let p = prefix.trim_start_matches('/');
    if p.is_empty() {
        return Err(CoreError::invalid("a non-empty prefix is required"));
    }
    Ok(p.to_owned())
}

/// Revokes `ids` now, or schedules them (`sync=false`). Failures stay scheduled for
/// retry and are reported as a 502 that says so.
async fn revoke(
    inner: &Arc<Inner>,
    req: &BackendRequest<'_>,
    ids: Vec<String>,
    what: &str,
) -> Result<Option<Response>, CoreError> {
    if ids.is_empty() {
        return Ok(None);
    }
    let sync = fields::boolean(req.data, "sync")?.unwrap_or(true);
    if !sync {
        let now = inner.clock.unix();
        inner.storage.leases_mark_revoking(&ids, now).await?;
        inner.leases.wake.notify_one();
        return Ok(Some(Response::raw(202, Value::Null)));
    }
    let Outcome { revoked: _, failed } = leases::revoke_ids(inner, &ids).await?;
    match failed.first() {
        None => Ok(None),
        Some((id, err)) => Err(CoreError::Upstream(format!(
            "revocation of {} lease(s){what} failed and will be retried until it succeeds (first: {id}: {err})",
            failed.len()
        ))),
    }
}

/// `LIST sys/leases/lookup/<prefix>`: the next path segment of every lease under it
/// (folders end in `/`), as Vault lists them.
async fn list_children(inner: &Arc<Inner>, prefix: &str) -> Result<Option<Response>, CoreError> {
    let mut prefix = prefix.trim_start_matches('/').to_owned();
    if !prefix.is_empty() && !prefix.ends_with('/') {
        prefix.push('/');
    }
    let mut keys: Vec<String> = Vec::new();
    for id in inner.storage.lease_ids_with_prefix(&prefix).await? {
        let rest = &id[prefix.len()..];
        let key = match rest.find('/') {
            Some(i) => rest[..=i].to_owned(),
            None => rest.to_owned(),
        };
        if keys.last() != Some(&key) {
            keys.push(key);
        }
    }
    keys.dedup();
    if keys.is_empty() {
        return Ok(None);
    }
    Ok(Some(Response::keys(keys)))
}
