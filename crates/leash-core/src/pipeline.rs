//! The request pipeline. See the crate docs for the order of steps; each step that can
//! refuse does so before anything is changed, and every outcome — including denials and
//! bad tokens — is audited.

use std::sync::Arc;

use leash_backend::{
    BackendRequest, Caller, CoreError, Request, Response, Route, canonical_request_path,
};
use leash_policy::AclRequest;
use leash_types::Operation;

use crate::Inner;
use crate::audit_log::{AuditContext, RequestEntry, ResponseEntry};
use crate::events::{self, Event, Kind};
use crate::router::Mounted;

pub(crate) async fn handle(inner: &Arc<Inner>, req: Request) -> Result<Response, CoreError> {
    let ctx = events::RequestCtx::of(&req);
    events::scope(ctx, handle_in_scope(inner, req)).await
}

async fn handle_in_scope(inner: &Arc<Inner>, mut req: Request) -> Result<Response, CoreError> {
    // The one canonical spelling of the path, decided before authentication and the
    // ACL; the backend serves exactly this path (see `leash_backend::routes`).
    let canonical = canonical_request_path(&req.path, req.operation == Operation::List).len();
    req.path.truncate(canonical);
    let mut router = inner.router();
    // On shared storage a mount made through another server may not have been announced
    // here yet: a path no mount serves re-reads the mount table once before answering.
    if router.route(&req.path).is_none()
        && crate::coherence::shared(&inner.storage)
        && crate::coherence::reload_mounts(inner).await.is_ok()
    {
        router = inner.router();
    }
    let mut route: Option<Route> = None;
    let mut mounted: Option<Mounted> = None;
    let mut path_error: Option<CoreError> = None;
    if let Some((m, rel)) = router.route(&req.path) {
        let prefix_len = req.path.len() - rel.len();
        match m.backend.routes().find(rel) {
            Ok(Some(matched)) => {
                route = Some(matched.route);
                mounted = Some(m.clone());
                if let std::borrow::Cow::Owned(p) = matched.path {
                    req.path = format!("{}{p}", &req.path[..prefix_len]);
                }
            }
            // A path the backend does not declare is served by nobody.
            Ok(None) => {}
            Err(e) => {
                mounted = Some(m.clone());
                path_error = Some(e);
            }
        }
    }
    let rel: &str = match &mounted {
        Some(m) => req
            .path
            .get(m.entry.route_prefix().len()..)
            .unwrap_or_default(),
        None => "",
    };
    let unauthenticated = route.is_some_and(|r| r.unauthenticated);
    let needs_sudo = route.is_some_and(|r| r.sudo);

    let (mount_point, mount_type, mount_accessor) = match &mounted {
        Some(m) => (
            m.entry.route_prefix(),
            m.entry.kind.clone(),
            m.entry.accessor.clone(),
        ),
        None => (String::new(), String::new(), String::new()),
    };

    // Authenticate. On unauthenticated paths a presented token is still resolved (some
    // handlers tailor their answer to it) but not required.
    let caller: Result<Option<Caller>, CoreError> = match &req.token {
        Some(t) => match inner
            .tokens
            .authenticate_or_canary(t, req.remote_addr, &inner.policies)
            .await
        {
            Ok((c, canary)) => {
                if let Some(e) = canary {
                    // Tripped off the request's path: the answer (and its timing) is
                    // a revoked token's.
                    crate::canary::trip_token(inner, e, req.remote_addr);
                }
                Ok(c)
            }
            Err(e) => Err(e),
        },
        None => Ok(None),
    };
    let (caller, auth_error) = match caller {
        Ok(c) => (c, None),
        Err(e) => (None, Some(e)),
    };
    let mut ctx = AuditContext {
        req: &req,
        operation: req.operation,
        mount_point: &mount_point,
        mount_type: &mount_type,
        mount_accessor: &mount_accessor,
        caller: caller.as_ref(),
        policy_results: None,
        unauthenticated,
        clock: &*inner.clock,
    };
    // Every outcome is audited, failures to authenticate or to read the path included.
    if let Some(err) = auth_error.or(path_error) {
        audit_request(inner, &ctx, Some(&err.to_string())).await?;
        return Err(err);
    }

    if !unauthenticated && caller.is_none() {
        // Same refusal, with the reason clients show (no token / not a valid one).
        let presented = req.token.is_some();
        return deny(inner, &ctx).await.map_err(|e| match e {
            CoreError::PermissionDenied => CoreError::InvalidToken { presented },
            e => e,
        });
    }
    let Some(mounted) = mounted.as_ref() else {
        // Unknown path: a token that may not touch it learns nothing (403, as if it
        // existed); only a token the ACL lets through hears that nothing is there.
        if let Some(c) = &caller {
            let decision = c.acl.check(&AclRequest {
                path: &req.path,
                operation: req.operation,
                data: Some(&req.data),
                needs_sudo: false,
            });
            if !decision.allowed {
                ctx.policy_results = Some((false, Vec::new()));
                return deny(inner, &ctx).await;
            }
        }
        let err = CoreError::UnknownPath(req.path.clone());
        audit_request(inner, &ctx, Some(&err.to_string())).await?;
        return Err(err);
    };

    // Create vs update.
    let mut operation = req.operation;
    let mut breq = BackendRequest {
        id: &req.id,
        operation,
        path: rel,
        data: &req.data,
        mount: &mounted.entry,
        caller: caller.as_ref(),
        remote_addr: req.remote_addr,
        token: req.token.as_ref(),
        grant: None,
    };
    if operation == Operation::Update {
        match mounted.backend.exists(&breq).await {
            Ok(Some(false)) => operation = Operation::Create,
            Ok(_) => {}
            Err(err) => {
                audit_request(inner, &ctx, Some(&err.to_string())).await?;
                return Err(err);
            }
        }
    }
    breq.operation = operation;
    ctx.operation = operation;

    // ACL (unauthenticated paths have none).
    let mut grant: Option<crate::approvals::Grant> = None;
    if let Some(c) = caller.as_ref().filter(|_| !unauthenticated) {
        let decision = c.acl.check(&AclRequest {
            path: &req.path,
            operation,
            data: Some(&req.data),
            needs_sudo,
        });
        let granting = if c.acl.is_root() {
            vec!["root".to_owned()]
        } else {
            decision.granting_policies.clone()
        };
        ctx.policy_results = Some((decision.allowed, granting));
        if !decision.allowed {
            if let Some(d) = &decision.denial {
                tracing::debug!(path = %req.path, reason = %d, "request denied by policy");
            }
            return deny(inner, &ctx).await;
        }
        if decision.control_group.is_some() {
            // The approval gate: a path that needs a human's approval is served only
            // under an open grant of this token (one use is spent here).
            match crate::approvals::gate(inner, c, &req.path, operation).await {
                Ok(g) => grant = Some(g),
                Err(err) => {
                    audit_request(inner, &ctx, Some(&err.to_string())).await?;
                    return Err(err);
                }
            }
        }
    }

    // The request entry must be recorded before the operation. For a read it need not
    // be synced on its own: the response entry, synced before anything is answered,
    // follows it on every device and makes it durable too. A change to state waits
    // for its request entry to be on disk first, so no crash can leave a committed
    // change without its audit record.
    let audited = if matches!(operation, Operation::Read | Operation::List) {
        audit_request_written(inner, &ctx).await
    } else {
        audit_request(inner, &ctx, None).await
    };
    if let Err(e) = audited {
        // The request is refused: the grant use the gate spent is given back.
        if let Some(g) = &grant {
            crate::approvals::refund(inner, g).await;
        }
        return Err(e);
    }

    // Spend a use before doing anything on the token's behalf.
    let mut last_use = false;
    if let Some(c) = caller.as_ref().filter(|_| !unauthenticated) {
        match inner.tokens.spend_use(c).await {
            Ok(Some(0)) => last_use = true,
            Ok(_) => {}
            Err(e) => {
                if let Some(g) = &grant {
                    crate::approvals::refund(inner, g).await;
                }
                audit_response(inner, &ctx, Err(&e)).await?;
                return Err(e);
            }
        }
        // Every authenticated request is a use of its token: one event, written (not
        // synced on its own: the response entry follows it on every device).
        // (Built only when an audit device will write it: with none, it used to be
        // built and dropped on every request.)
        let now = inner.clock.unix();
        inner.activity.used(&c.entry.accessor, &req.trace_id, now);
        if !inner.audit.is_empty() {
            let used = Event::token(Kind::Used, &c.entry, now);
            events::emit(inner, &[used], false).await?;
        }
    }

    // A login path: refuse a source over its failed-login budget before checking
    // anything (audited like every refusal).
    // The attempt is reserved before any credential is checked, so concurrent attempts
    // count against the budget too (a reservation not marked failed is given back).
    let is_login = unauthenticated && mounted.entry.table == leash_backend::MountTable::Auth;
    let source = req.remote_addr.map(|a| a.ip());
    let attempt = if is_login {
        match inner.logins.reserve(source) {
            Ok(a) => Some(a),
            Err(e) => {
                audit_response(inner, &ctx, Err(&e)).await?;
                return Err(e);
            }
        }
    } else {
        None
    };

    // Under a grant, leases the backend begins are capped to the grant window.
    breq.grant = grant.as_ref();
    let result = mounted.backend.handle(&breq).await;
    if let (Some(g), Ok(Some(r))) = (&grant, &result)
        && let Some(s) = &r.secret
        && !s.lease_id.is_empty()
    {
        // A failure here is logged; the response entry that follows is the audit record
        // of the lease either way (and if it fails too, the lease is revoked below).
        if let Err(e) = crate::approvals::granted(inner, g, &s.lease_id).await {
            tracing::error!(error = %e, request_id = %g.request_id, "could not record the lease issued under an approval grant");
        }
    }
    if let (Some(g), Err(_)) = (&grant, &result) {
        crate::approvals::refund(inner, g).await;
    }
    let mut result = match result {
        Ok(Some(r)) => Ok(r),
        Ok(None) => Err(CoreError::NotFound),
        Err(e) => Err(e),
    };
    // A successful login: mint the token the auth method granted.
    if let Ok(r) = &mut result
        && let Some(grant) = r.login.take()
    {
        match crate::login::complete(inner, &mounted.entry, &req, *grant).await {
            Ok((auth, warnings)) => {
                r.auth = Some(auth);
                r.warnings.extend(warnings);
            }
            Err(e) => result = Err(e),
        }
    }
    if let Some(attempt) = attempt
        && let Err(
            CoreError::PermissionDenied | CoreError::Forbidden(_) | CoreError::InvalidRequest(_),
        ) = &result
    {
        let role = req
            .data
            .get("role")
            .and_then(serde_json::Value::as_str)
            .or_else(|| rel.strip_prefix("login/"))
            .unwrap_or("");
        attempt.failed(&mount_point, role);
    }
    // A write or delete that returns nothing is a 204, not a 404.
    let result = match result {
        Err(CoreError::NotFound) if !matches!(operation, Operation::Read | Operation::List) => {
            Ok(no_content())
        }
        other => other,
    };

    // A token was minted (login, token create) or renewed: its lifecycle event.
    // A renewal answers with an `auth` block for a token that already existed; only a
    // token minted by this request may be revoked if its response cannot be audited.
    let renewal = is_token_renewal(&mount_type, rel);
    if let Ok(r) = &result
        && let Some(a) = &r.auth
    {
        let kind = if renewal { Kind::Renewed } else { Kind::Issued };
        // A failure here is followed by the response entry failing too, which revokes
        // the token (fail closed below).
        token_event(inner, kind, a).await;
    }

    if let Err(audit_err) = audit_response(inner, &ctx, result.as_ref()).await {
        // Fail closed: the secret must not leave. A token minted by this request is
        // revoked so nobody holds a credential the audit trail does not know about.
        if let Ok(r) = &result
            && let Some(a) = &r.auth
            && !renewal
        {
            use leash_types::ExposeSecret;
            if let Ok(Some((h, _, _))) = inner.tokens.lookup(a.client_token.expose_secret()).await
                && let Err(e) = inner.tokens.revoke(h, false).await
            {
                tracing::error!(error = %e, "could not revoke a token whose creation failed to audit");
            }
        }
        // Likewise a credential leased by this request: its lease is revoked now.
        if let Ok(r) = &result
            && let Some(s) = &r.secret
            && !s.lease_id.is_empty()
            && s.lease_id.starts_with(&mount_point)
        {
            let ids = [s.lease_id.clone()];
            match inner
                .storage
                .leases_mark_revoking(&ids, inner.clock.unix())
                .await
            {
                Ok(_) => inner.leases.wake.notify_one(),
                Err(e) => {
                    tracing::error!(error = %e, lease_id = %s.lease_id, "could not revoke a lease whose issuance failed to audit")
                }
            }
        }
        return Err(audit_err);
    }

    if last_use
        && let Some(c) = &caller
        && let Err(e) = inner.tokens.revoke(c.hash, false).await
    {
        tracing::error!(error = %e, "could not revoke a used-up token");
    }
    result
}

/// Whether a request renews an existing token (`auth/token/renew`, `renew-self`,
/// `renew-accessor`): its `auth` block names a token the caller already held, which a
/// failed response audit must not revoke.
fn is_token_renewal(mount_type: &str, rel: &str) -> bool {
    mount_type == "token" && rel.starts_with("renew")
}

/// The lifecycle event of the token in `auth` (just minted or renewed).
async fn token_event(inner: &Inner, kind: Kind, a: &leash_backend::AuthInfo) {
    if inner.audit.is_empty() {
        return;
    }
    let ev = Event {
        kind,
        agent: events::Agent {
            entity_id: a.entity_id.clone(),
            accessor: a.accessor.clone(),
            name: events::agent_name(&a.metadata, &a.display_name),
        },
        credential_type: "token".to_owned(),
        credential_scope: serde_json::json!({ "policies": a.policies }),
        ttl_seconds: a.lease_duration,
        trace_id: events::current_trace_id(),
        lease_id: None,
        reason: None,
    };
    events::emit_logged(inner, &[ev], false).await;
}

/// The marker response the HTTP layer turns into 204.
fn no_content() -> Response {
    Response {
        data: None,
        secret: None,
        auth: None,
        warnings: Vec::new(),
        kind: leash_backend::ResponseKind::Envelope,
        login: None,
    }
}

async fn deny(inner: &Inner, ctx: &AuditContext<'_>) -> Result<Response, CoreError> {
    let err = CoreError::PermissionDenied;
    inner.telemetry.denied(&denial_entity(inner, ctx.caller));
    // Denials are audited too (unlike Vault). If that fails the answer is still a
    // refusal, so the audit failure takes precedence only in its status.
    audit_request(inner, ctx, Some(&err.to_string())).await?;
    Err(err)
}

/// The name-based id a denial is counted under (`auth_entity_id`): the role the
/// caller's token was issued for (login role, else token role), else its display name;
/// empty without a valid token.
fn denial_entity(inner: &Inner, caller: Option<&Caller>) -> String {
    let Some(c) = caller else {
        return String::new();
    };
    inner
        .telemetry
        .role_of(&c.hash)
        .or_else(|| c.entry.role.clone())
        .unwrap_or_else(|| c.entry.display_name.clone())
}

async fn audit_request(
    inner: &Inner,
    ctx: &AuditContext<'_>,
    error: Option<&str>,
) -> Result<(), CoreError> {
    let build = RequestEntry { ctx, error };
    inner.audit.log(&build).await.map_err(|e| {
        tracing::error!(error = %e, path = %ctx.req.path, "audit request entry failed; refusing the request");
        CoreError::AuditFailed
    })
}

async fn audit_request_written(inner: &Inner, ctx: &AuditContext<'_>) -> Result<(), CoreError> {
    let build = RequestEntry { ctx, error: None };
    inner.audit.log_written(&build).await.map_err(|e| {
        tracing::error!(error = %e, path = %ctx.req.path, "audit request entry failed; refusing the request");
        CoreError::AuditFailed
    })
}

async fn audit_response(
    inner: &Inner,
    ctx: &AuditContext<'_>,
    resp: Result<&Response, &CoreError>,
) -> Result<(), CoreError> {
    let build = ResponseEntry { ctx, resp };
    inner.audit.log(&build).await.map_err(|e| {
        tracing::error!(error = %e, path = %ctx.req.path, "audit response entry failed; withholding the response");
        CoreError::AuditFailed
    })
}

#[cfg(test)]
mod tests {
    use super::is_token_renewal;

    #[test]
    fn only_token_renewals_keep_their_token_when_the_response_audit_fails() {
        for rel in ["renew", "renew-self", "renew-accessor"] {
            assert!(is_token_renewal("token", rel), "{rel}");
        }
        for (kind, rel) in [
            ("token", "create"),
            ("token", "create-orphan"),
            ("token", "create/ops"),
            ("userpass", "login/alice"),
            ("approle", "login"),
            ("kv", "renew"),
        ] {
            assert!(!is_token_renewal(kind, rel), "{kind} {rel}");
        }
    }
}
