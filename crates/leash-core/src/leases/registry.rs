//! The engines' handle on the lease book: intent-first registration and activation.

use super::caps::check_caps;
use super::*;

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
