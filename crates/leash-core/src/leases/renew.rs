//! Renewal and lookup of a lease.

use super::*;

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
