//! The `sys/control-group/*` API: create, read, list, approve/deny, complete, settings
//! and pre-approval rules.

use std::sync::Arc;

use leash_approval::model::{ApproveOutcome, normalise_path};
use leash_approval::{AccessRequest, ApprovalError, Approver, Rule, Status};
use leash_backend::store::{load_json, save_json};
use leash_backend::{BackendRequest, Caller, CoreError, Response, ResponseKind, fields};
use leash_policy::AclRequest;
use leash_types::Operation;
use serde_json::{Map, Value, json};

use crate::Inner;

use super::audit::{actor_of, audit, notify};
use super::store::{change, config, finished, index, load, rules};
use super::sweep::close_window;
use super::*;

/// Handles `p` if it is a control-group path.
pub(crate) async fn handle(
    inner: &Arc<Inner>,
    req: &BackendRequest<'_>,
    p: &str,
) -> Option<Result<Option<Response>, CoreError>> {
    let rest = p.strip_prefix("control-group")?;
    let op = req.operation;
    let write = matches!(op, Operation::Update | Operation::Create);
    let caller = req.caller?;
    Some(
        async {
            match (rest, op) {
                ("/request", _) if write => create(inner, req, caller).await.map(Some),
                ("/request", Operation::List) => list(inner, caller, req.data).await,
                ("/config", Operation::Read) => {
                    Ok(Some(Response::data(config(inner).await?.view())))
                }
                ("/config", _) if write => {
                    let mut c = config(inner).await?;
                    c.update(req.data).map_err(err)?;
                    save_json(inner.storage.as_ref(), NS, "config", &c).await?;
                    Ok(None)
                }
                ("/rules", Operation::List) => {
                    let keys: Vec<String> = rules(inner).await?.into_iter().map(|r| r.name).collect();
                    Ok((!keys.is_empty()).then(|| Response::data(json!({"keys": keys}))))
                }
                ("/authorize", _) => Err(CoreError::invalid(
                    "leash's control groups are decided with POST sys/control-group/request/<id>/approve or /deny (Vault's accessor-based authorize and response wrapping are not supported)",
                )),
                _ => {
                    if let Some(name) = rest.strip_prefix("/rules/") {
                        return rule_op(inner, req, name).await;
                    }
                    let Some(tail) = rest.strip_prefix("/request/") else {
                        return Err(CoreError::UnknownPath(format!("sys/{p}")));
                    };
                    let (id, action) = match tail.split_once('/') {
                        Some((id, a)) => (id, a),
                        None => (tail, ""),
                    };
                    match (action, op) {
                        ("", Operation::Read) => read(inner, caller, id).await,
                        ("approve", _) if write => decide(inner, req, caller, id, true).await,
                        ("deny", _) if write => decide(inner, req, caller, id, false).await,
                        ("complete", _) if write => complete(inner, caller, id).await,
                        _ => Err(CoreError::UnsupportedOperation),
                    }
                }
            }
        }
        .await,
    )
}

pub(super) fn envelope(r: &AccessRequest, now: i64, warnings: Vec<String>) -> Response {
    let mut resp = Response::data(r.view(now));
    resp.kind = ResponseKind::EnvelopeTopLevel;
    resp.warnings = warnings;
    resp
}

pub(super) fn required_str(
    data: &Map<String, Value>,
    field: &str,
    max: usize,
) -> Result<String, CoreError> {
    let v = fields::string(data, field)?.unwrap_or_default();
    let v = v.trim();
    if v.is_empty() {
        return Err(CoreError::invalid(format!(
            "missing required field \"{field}\""
        )));
    }
    if v.chars().count() > max {
        return Err(CoreError::invalid(format!(
            "{field} is longer than {max} characters"
        )));
    }
    Ok(v.to_owned())
}

pub(super) async fn create(
    inner: &Arc<Inner>,
    req: &BackendRequest<'_>,
    caller: &Caller,
) -> Result<Response, CoreError> {
    const KNOWN: &[&str] = &[
        "agent_id",
        "operation",
        "target_resource",
        "justification",
        "requested_duration_minutes",
        "timestamp",
    ];
    let data = req.data;
    if data.contains_key("accessor") && !data.contains_key("target_resource") {
        return Err(CoreError::invalid(
            "leash's control groups take {agent_id, operation, target_resource, justification, requested_duration_minutes}; Vault's accessor form (response wrapping) is not supported",
        ));
    }
    let mut warnings = Vec::new();
    if let Some(w) = fields::ignored_warning(data, KNOWN) {
        warnings.push(w);
    }
    // The stated operation is the agent's intent, kept as said; what the grant is bound
    // to is decided below from the policy.
    let operation = required_str(data, "operation", 64)?;
    required_str(data, "target_resource", 512)?;
    // Checked as written (not trimmed): a spelling no request uses is refused.
    let target = normalise_path(&fields::string(data, "target_resource")?.unwrap_or_default())
        .map_err(err)?;
    let justification = required_str(data, "justification", 4096)?;
    let minutes = match data.get("requested_duration_minutes") {
        None => {
            return Err(CoreError::invalid(
                "missing required field \"requested_duration_minutes\"",
            ));
        }
        Some(v) => v
            .as_u64()
            .or_else(|| {
                v.as_f64()
                    .filter(|f| f.fract() == 0.0 && *f >= 0.0)
                    .map(|f| f as u64)
            })
            .or_else(|| v.as_str().and_then(|s| s.trim().parse().ok()))
            .filter(|m| (1..=MAX_MINUTES).contains(m))
            .ok_or_else(|| {
                CoreError::invalid(format!(
                    "requested_duration_minutes must be a whole number from 1 to {MAX_MINUTES}"
                ))
            })?,
    };
    let agent_id = match data.get("agent_id") {
        None | Some(Value::Null) => caller.entry.display_name.clone(),
        Some(Value::String(s)) if s.chars().count() <= 256 => s.trim().to_owned(),
        Some(_) => {
            return Err(CoreError::invalid(
                "agent_id must be a string of at most 256 characters",
            ));
        }
    };
    let client_timestamp = match data.get("timestamp") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(s.chars().take(64).collect()),
        Some(Value::Number(n)) => Some(n.to_string()),
        Some(_) => {
            return Err(CoreError::invalid(
                "timestamp must be a string (RFC 3339) or a number",
            ));
        }
    };

    // An approval never widens a policy: the grant is bound to operations the token's
    // policy allows on the target.
    let (granted_operations, cg) = bind_operations(caller, &operation, &target)?;
    let now = inner.clock.unix();
    let cfg = config(inner).await?;
    let asked = minutes * 60;
    let window = match cg.ttl {
        Some(t) if t.as_secs() > 0 => asked.min(t.as_secs()),
        _ => asked,
    };
    if window < asked {
        warnings.push(format!(
            "requested {minutes} min; the control group allows at most {} min",
            window / 60
        ));
    }
    let mut r = AccessRequest {
        id: leash_types::random::uuid_v4(),
        status: Status::Pending,
        agent_id,
        requester: leash_approval::Requester {
            entity_id: caller.entry.entity_id.clone(),
            accessor: caller.entry.accessor.clone(),
            display_name: caller.entry.display_name.clone(),
            token_hash: hash_hex(caller),
            name: crate::events::agent_name(&caller.entry.meta, &caller.entry.display_name),
        },
        operation,
        granted_operations,
        target_resource: target,
        justification,
        requested_duration_minutes: minutes,
        window_seconds: window,
        client_timestamp,
        created_at: now,
        pending_until: now + i64::try_from(cfg.request_ttl).unwrap_or(3600),
        factors: cg
            .factors
            .iter()
            .map(|f| leash_approval::Factor {
                name: f.name.clone(),
                group_names: f.group_names.clone(),
                approvals_needed: f.approvals.max(1),
                approvals: Vec::new(),
            })
            .collect(),
        self_auth_allowed: cg.self_auth_allowed,
        decision: None,
        approved_at: None,
        window_ends_at: None,
        uses_left: None,
        uses_granted: None,
        rule: None,
        leases: Vec::new(),
        trace_id: crate::events::current_trace_id(),
        escalated: false,
        closed_at: None,
        closed_reason: None,
    };
    let rule = rules(inner).await?.into_iter().find(|x| {
        r.grant_operations()
            .iter()
            .all(|op| x.matches(&r.target_resource, op, minutes, now))
    });
    // Audited before it exists: a request that cannot be audited is never stored.
    audit(
        inner,
        "approval.requested",
        &r,
        actor_of(caller),
        Value::Null,
    )
    .await?;
    if let Some(rule) = &rule {
        r.auto_approve(&rule.name, rule.grant_uses(), now);
        audit(
            inner,
            "approval.auto_approved",
            &r,
            json!({"rule": r.rule}),
            Value::Null,
        )
        .await?;
    }
    save_json(inner.storage.as_ref(), NS, &format!("req/{}", r.id), &r).await?;
    index(
        inner,
        format!("tok/{}/{}", r.requester.token_hash, r.id),
        true,
    )
    .await?;
    if r.status == Status::Pending {
        index(inner, format!("pending/{}", r.id), true).await?;
        notify(inner, "requested", &r).await;
    } else {
        index(inner, format!("open/{}", r.id), true).await?;
        notify(inner, "auto-approved", &r).await;
    }
    Ok(envelope(&r, now, warnings))
}

/// What an access request's grant is bound to, and the control group that gates it.
///
/// A stated operation that is a Vault operation the policy allows on `target` binds the
/// grant to itself. Anything else (`"write"`, `"production write"`, or `"update"` on a
/// path the policy only lets the token read) is the agent's intent: the grant is bound
/// to the operations the policy puts behind a control group on `target`, never more
/// than the policy allows. `403` when the policy allows nothing there, `400` when what
/// it allows needs no approval.
pub(super) fn bind_operations(
    caller: &Caller,
    stated: &str,
    target: &str,
) -> Result<(Vec<String>, leash_policy::ControlGroup), CoreError> {
    let decide = |op: &str| {
        caller.acl.check(&AclRequest {
            path: target,
            operation: op_of(op),
            data: None,
            needs_sudo: false,
        })
    };
    if let Ok(op) = leash_approval::check_operation(stated) {
        let d = decide(&op);
        if d.allowed {
            return match d.control_group {
                Some(cg) => Ok((vec![op], cg)),
                None => Err(CoreError::invalid(format!(
                    "{op} on {target} does not need an approval for this token: call it directly"
                ))),
            };
        }
    }
    let mut granted = Vec::new();
    let mut gate: Option<leash_policy::ControlGroup> = None;
    let mut any_allowed = false;
    for op in leash_approval::OPERATIONS {
        let d = decide(op);
        if !d.allowed {
            continue;
        }
        any_allowed = true;
        let Some(cg) = d.control_group else { continue };
        granted.push((*op).to_owned());
        // Several gated operations: every factor of each must approve, and the
        // shortest window wins.
        match &mut gate {
            None => gate = Some(cg),
            Some(g) => {
                for f in cg.factors {
                    if !g.factors.iter().any(|x| x.name == f.name) {
                        g.factors.push(f);
                    }
                }
                g.ttl = match (g.ttl, cg.ttl) {
                    (Some(a), Some(b)) => Some(a.min(b)),
                    (a, b) => a.or(b),
                };
                g.self_auth_allowed &= cg.self_auth_allowed;
            }
        }
    }
    match gate {
        Some(cg) => Ok((granted, cg)),
        None if any_allowed => Err(CoreError::invalid(format!(
            "nothing the token may do on {target} needs an approval (asked: {stated}): call it directly"
        ))),
        None => Err(CoreError::Forbidden(format!(
            "your token's policies do not allow {stated} on {target}; an approval cannot grant more than the policies do"
        ))),
    }
}

/// Whether `caller` may see `r`: its requester, an approver it names, or root.
pub(super) fn may_see(caller: &Caller, r: &AccessRequest, groups: &[String]) -> bool {
    caller.acl.is_root()
        || r.requester.token_hash == hash_hex(caller)
        || (!caller.entry.entity_id.is_empty() && r.requester.entity_id == caller.entry.entity_id)
        || r.factors
            .iter()
            .any(|f| f.group_names.iter().any(|g| groups.contains(g)))
}

pub(super) async fn read(
    inner: &Arc<Inner>,
    caller: &Caller,
    id: &str,
) -> Result<Option<Response>, CoreError> {
    let Some(r) = load(inner, id).await? else {
        return Ok(None);
    };
    let groups = crate::identity::groups_of(inner, &caller.entry.entity_id).await?;
    if !may_see(caller, &r, &groups) {
        return Err(CoreError::Forbidden(
            "only the requester and the approvers this request names may read it".to_owned(),
        ));
    }
    Ok(Some(envelope(&r, inner.clock.unix(), Vec::new())))
}

pub(super) async fn list(
    inner: &Arc<Inner>,
    caller: &Caller,
    data: &Map<String, Value>,
) -> Result<Option<Response>, CoreError> {
    let status = fields::string(data, "status")?.unwrap_or_else(|| "pending".to_owned());
    let ids: Vec<String> = match status.as_str() {
        "pending" => inner.storage.list(NS, "pending/").await?,
        "approved" => inner.storage.list(NS, "open/").await?,
        "all" => inner.storage.list(NS, "req/").await?,
        _ => {
            return Err(CoreError::invalid(
                "status: expected pending, approved or all",
            ));
        }
    }
    .into_iter()
    .map(|k| k.rsplit('/').next().unwrap_or_default().to_owned())
    .collect();
    let groups = crate::identity::groups_of(inner, &caller.entry.entity_id).await?;
    let now = inner.clock.unix();
    let mut keys = Vec::new();
    let mut info = Map::new();
    let mut rows: Vec<AccessRequest> = Vec::new();
    for id in ids {
        if let Some(r) = load(inner, &id).await?
            && may_see(caller, &r, &groups)
        {
            rows.push(r);
        }
    }
    rows.sort_by_key(|r| r.created_at);
    for r in rows {
        let v = r.view(now);
        keys.push(r.id.clone());
        info.insert(
            r.id.clone(),
            json!({
                "status": v["status"], "agent_id": r.agent_id, "operation": r.operation,
                "target_resource": r.target_resource, "justification": r.justification,
                "requested_duration_minutes": r.requested_duration_minutes,
                "grant_duration_seconds": r.window_seconds,
                "age_seconds": r.age(now), "created_at": v["created_at"],
                "approvals": v["approvals"], "approvals_needed": v["approvals_needed"],
                "requester_entity_id": r.requester.entity_id,
            }),
        );
    }
    if keys.is_empty() {
        return Ok(None);
    }
    Ok(Some(Response::data(
        json!({"keys": keys, "key_info": info}),
    )))
}

pub(super) async fn decide(
    inner: &Arc<Inner>,
    req: &BackendRequest<'_>,
    caller: &Caller,
    id: &str,
    approve: bool,
) -> Result<Option<Response>, CoreError> {
    if load(inner, id).await?.is_none() {
        return Ok(None);
    }
    let comment = match fields::string(req.data, "comment")? {
        Some(c) if c.chars().count() > 2048 => {
            return Err(CoreError::invalid("comment is longer than 2048 characters"));
        }
        Some(c) => c.trim().to_owned(),
        None => String::new(),
    };
    if !approve && comment.is_empty() {
        return Err(CoreError::invalid(
            "a denial needs a comment saying why (field \"comment\")",
        ));
    }
    let approver = Approver {
        entity_id: caller.entry.entity_id.clone(),
        accessor: caller.entry.accessor.clone(),
        name: caller.entry.display_name.clone(),
        groups: crate::identity::groups_of(inner, &caller.entry.entity_id).await?,
    };
    let now = inner.clock.unix();
    let c2 = comment.clone();
    let result = change(inner, id, move |r| {
        if approve {
            // Human approvals grant one use; rules may grant more.
            r.approve(&approver, &c2, Some(1), now).map(Some)
        } else {
            r.deny(&approver, &c2, now).map(|()| None)
        }
    })
    .await;
    let (r, outcome) = match result {
        Ok(x) => x,
        Err(e) => {
            // Refusals are audited too (self-approval attempts matter to reviewers).
            if let (Some(r), CoreError::Forbidden(m) | CoreError::InvalidRequest(m)) =
                (load(inner, id).await?, &e)
            {
                audit(
                    inner,
                    "approval.refused",
                    &r,
                    actor_of(caller),
                    json!({"action": if approve {"approve"} else {"deny"}, "error": m}),
                )
                .await?;
            }
            return Err(e);
        }
    };
    let (have, need) = r.tally();
    let extra = json!({"comment": comment, "approvals": have, "approvals_needed": need});
    match outcome {
        None => {
            audit(inner, "approval.denied", &r, actor_of(caller), extra).await?;
            finished(inner, &r).await?;
            notify(inner, "denied", &r).await;
        }
        Some(ApproveOutcome::Counted(..)) => {
            audit(inner, "approval.approved", &r, actor_of(caller), extra).await?;
        }
        Some(ApproveOutcome::Approved) => {
            audit(inner, "approval.approved", &r, actor_of(caller), extra).await?;
            index(inner, format!("pending/{}", r.id), false).await?;
            index(inner, format!("open/{}", r.id), true).await?;
            notify(inner, "approved", &r).await;
        }
    }
    Ok(Some(envelope(&r, now, Vec::new())))
}

pub(super) async fn complete(
    inner: &Arc<Inner>,
    caller: &Caller,
    id: &str,
) -> Result<Option<Response>, CoreError> {
    let Some(r) = load(inner, id).await? else {
        return Ok(None);
    };
    let mine = r.requester.token_hash == hash_hex(caller)
        || (!caller.entry.entity_id.is_empty() && r.requester.entity_id == caller.entry.entity_id);
    if !mine && !caller.acl.is_root() {
        return Err(CoreError::Forbidden(
            "only the requester may complete its access request".to_owned(),
        ));
    }
    let now = inner.clock.unix();
    let (r, changed) = change(inner, id, move |r| match r.status {
        Status::Approved => Ok(r.close("completed by requester", now)),
        Status::Pending => Err(ApprovalError::Invalid(
            "the request is still pending; nothing to complete".into(),
        )),
        _ => Ok(false),
    })
    .await?;
    if changed {
        close_window(inner, &r, Some(actor_of(caller))).await?;
        notify(inner, "completed", &r).await;
    }
    Ok(Some(envelope(&r, now, Vec::new())))
}

pub(super) async fn rule_op(
    inner: &Arc<Inner>,
    req: &BackendRequest<'_>,
    name: &str,
) -> Result<Option<Response>, CoreError> {
    leash_approval::rules::check_name("rule", name).map_err(err)?;
    let key = format!("rule/{name}");
    match req.operation {
        Operation::Read => Ok(load_json::<Rule>(inner.storage.as_ref(), NS, &key)
            .await?
            .map(|r| Response::data(r.view()))),
        Operation::Delete => {
            inner.storage.delete(NS, &key).await?;
            Ok(None)
        }
        Operation::Create | Operation::Update => {
            let rule = Rule::from_input(name, req.data).map_err(err)?;
            save_json(inner.storage.as_ref(), NS, &key, &rule).await?;
            Ok(None)
        }
        _ => Err(CoreError::UnsupportedOperation),
    }
}

// -------------------------------------------------------------------------- sweeper
