//! Issuance windows: the per-minute lease caps per mount, path and identity.

use super::*;

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
pub(super) async fn check_caps(
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
