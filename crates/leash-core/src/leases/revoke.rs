//! Revocation: claims, revoking now (per mount, in batches), and due leases.

use super::*;

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
        let mine = inner.storage.leases_claim_revoking(&claimed, now).await?;
        // Another server is revoking the rest (or they are gone): wait for it.
        for id in not_in(&claimed, &mine) {
            if let Some(msg) = wait_elsewhere(inner, &id).await? {
                outcome.failed.push((id, msg));
            }
        }
        let mut leases = Vec::with_capacity(mine.len());
        for id in &mine {
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
    let (claimed, mut busy) = inner.leases.claims.claim(ids);
    let guard = ClaimGuard {
        claims: &inner.leases.claims,
        ids: claimed.clone(),
    };
    let t = first.await?;
    let mut outcome = Outcome::default();
    for chunk in claimed.chunks(BATCH) {
        let now = inner.clock.unix();
        let mine = inner.storage.leases_claim_revoking(chunk, now).await?;
        // Claimed by another server: busy, as for a revocation in this process.
        busy.extend(not_in(chunk, &mine));
        let mut leases = Vec::with_capacity(mine.len());
        for id in &mine {
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

/// The ids of `all` that are not in `some`.
fn not_in(all: &[String], some: &[String]) -> Vec<String> {
    let some: std::collections::HashSet<&String> = some.iter().collect();
    all.iter()
        .filter(|id| !some.contains(id))
        .cloned()
        .collect()
}

/// Waits until a lease another server claimed is gone (revoked there). `None` when it
/// is gone (or never existed), else why it is still there after the revocation timeout
/// (it stays for the worker: the other server's claim lapses if that server died).
async fn wait_elsewhere(inner: &Inner, id: &str) -> Result<Option<String>, CoreError> {
    let until = tokio::time::Instant::now() + REVOKE_TIMEOUT + Duration::from_secs(5);
    loop {
        if inner.storage.lease_get(id).await?.is_none() {
            return Ok(None);
        }
        if tokio::time::Instant::now() >= until {
            return Ok(Some(
                "another server's revocation of this lease is still running; it will be retried"
                    .to_owned(),
            ));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
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
