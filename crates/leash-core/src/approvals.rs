//! Just-in-time access in the core: the approval gate of the pipeline, the
//! `sys/control-group/*` API, the grant window's leases, the sweeper, audit entries and
//! notifications. The state machine, rules and webhook delivery are in `leash_approval`.
//!
//! * **Gate.** A request the ACL allows but whose rule has a `control_group` passes only
//!   with an open grant bound to the same token for the same path and operation; one use
//!   of the grant is spent atomically. Otherwise 403 with how to ask.
//! * **Grant window.** The backend gets the grant on its request: a lease begun under it is capped
//!   to end with the window (renewals too: its max expiry is the window's end) and is
//!   recorded on the request before the credential exists, so closing the window (its end,
//!   or `complete`) revokes everything issued under it.
//! * **Sweeper** (every tick of the token expiry worker): pending requests past their
//!   lifetime expire, undecided ones are escalated, windows that ended are closed.
//! * **Storage** (namespace `sys/control-group`, sealed like everything): `req/<id>` the
//!   request; `tok/<token hash>/<id>` binds grants to tokens; `pending/<id>` and
//!   `open/<id>` index what the sweeper watches; `closed/<unix time>/<id>` what it
//!   deletes after 30 days; `config`; `rule/<name>`.
//! * **Audit.** Every step is an entry `{"type": "approval", "event": "approval.<step>"}`
//!   with the request id and the trace id of the request that created it; accessors and
//!   lease ids are HMAC'd per device. A step whose entry cannot be written fails (the
//!   sweeper retries on its next tick).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use leash_approval::model::{ApproveOutcome, normalise_path};
use leash_approval::{AccessRequest, ApprovalError, Approver, Config, Notifier, Rule, Status};
use leash_audit::{Entry, Hasher};
use leash_backend::store::{load_json, save_json};
use leash_backend::{BackendRequest, Caller, CoreError, Response, ResponseKind, fields};
use leash_policy::AclRequest;
use leash_types::Operation;
use serde_json::{Map, Value, json};

use crate::Inner;

/// Storage namespace.
const NS: &str = "sys/control-group";
/// Longest grant an agent may ask for (one day).
const MAX_MINUTES: u64 = 1440;

use leash_types::rfc3339;

/// An open grant a request runs under: the pipeline passes it to the backend on the
/// request (`BackendRequest::grant`), and the lease book caps leases to its window.
pub(crate) type Grant = leash_backend::GrantWindow;

/// How long a decided, expired or completed request is kept (the audit trail keeps its
/// history for as long as the audit files are retained).
const RETENTION_SECS: i64 = 30 * 86_400;
/// How often old requests are looked for.
const PRUNE_EVERY_SECS: i64 = 60;

/// Per-core state: the webhook notifier.
pub(crate) struct Approvals {
    notifier: Notifier,
    last_prune: std::sync::atomic::AtomicI64,
}

impl Approvals {
    /// Fails when the webhook client cannot be built (the server then refuses to start).
    pub(crate) fn new() -> Result<Approvals, CoreError> {
        Ok(Approvals {
            notifier: Notifier::start(Duration::from_secs(1)).map_err(err)?,
            last_prune: std::sync::atomic::AtomicI64::new(0),
        })
    }
}

fn err(e: ApprovalError) -> CoreError {
    match e {
        ApprovalError::Invalid(m) => CoreError::InvalidRequest(m),
        ApprovalError::Forbidden(m) => CoreError::Forbidden(m),
        ApprovalError::Setup(m) => CoreError::internal(m),
    }
}

fn op_of(s: &str) -> Operation {
    match s {
        "create" => Operation::Create,
        "update" => Operation::Update,
        "patch" => Operation::Patch,
        "delete" => Operation::Delete,
        "list" => Operation::List,
        _ => Operation::Read,
    }
}

fn hash_hex(c: &Caller) -> String {
    hex::encode(c.hash.0)
}

async fn load(inner: &Inner, id: &str) -> Result<Option<AccessRequest>, CoreError> {
    if id.is_empty() || id.len() > 64 || !id.bytes().all(|b| b.is_ascii_hexdigit() || b == b'-') {
        return Ok(None);
    }
    load_json(inner.storage.as_ref(), NS, &format!("req/{id}")).await
}

/// Changes request `id` atomically with `f`; returns the new state and `f`'s result.
async fn change<T: Send + 'static>(
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

async fn config(inner: &Inner) -> Result<Config, CoreError> {
    Ok(load_json(inner.storage.as_ref(), NS, "config")
        .await?
        .unwrap_or_default())
}

async fn rules(inner: &Inner) -> Result<Vec<Rule>, CoreError> {
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
async fn finished(inner: &Inner, r: &AccessRequest) -> Result<(), CoreError> {
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
async fn prune(inner: &Inner, now: i64) -> Result<(), CoreError> {
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

async fn index(inner: &Inner, key: String, on: bool) -> Result<(), CoreError> {
    if on {
        inner.storage.put(NS, &key, Vec::new()).await?;
    } else {
        inner.storage.delete(NS, &key).await?;
    }
    Ok(())
}

// ---------------------------------------------------------------------------- audit

/// One audit entry about a request.
struct Audited<'a> {
    event: &'static str,
    r: &'a AccessRequest,
    actor: Value,
    extra: Value,
    /// When it happened (the core's clock).
    timestamp: String,
}

impl Entry for Audited<'_> {
    fn write_json(&self, h: &Hasher, raw: bool, out: &mut Vec<u8>) -> serde_json::Result<()> {
        let hm = |s: &str| {
            if raw || s.is_empty() {
                s.to_owned()
            } else {
                h.hmac(s)
            }
        };
        let acc = &self.r.requester.accessor;
        let accessor = if raw || !h.hmac_accessor() || acc.is_empty() {
            acc.clone()
        } else {
            h.hmac(acc)
        };
        let leases: Vec<String> = self.r.leases.iter().map(|l| hm(l)).collect();
        let ctx = crate::events::current();
        let v = json!({
            "type": "approval",
            "timestamp": self.timestamp,
            "event": self.event,
            "request_id": self.r.id,
            "trace_id": self.r.trace_id,
            "status": self.r.status.as_str(),
            "agent_id": self.r.agent_id,
            "agent_name": self.r.requester.agent_name(),
            "entity_id": self.r.requester.entity_id,
            "accessor": accessor,
            "operation": self.r.operation,
            "granted_operations": self.r.grant_operations(),
            "target_resource": self.r.target_resource,
            "justification": self.r.justification,
            "requested_duration_minutes": self.r.requested_duration_minutes,
            "grant_duration_seconds": self.r.window_seconds,
            "grant_expires_at": self.r.window_ends_at.map(rfc3339),
            "rule": self.r.rule,
            "actor": self.actor,
            "lease_ids": leases,
            "details": self.extra,
            "action_context": match ctx {
                Some(c) => json!({"trace_id": c.trace_id}),
                None => json!({"initiator": "approval-sweeper"}),
            },
        });
        serde_json::to_writer(out, &v)
    }
}

async fn audit(
    inner: &Inner,
    event: &'static str,
    r: &AccessRequest,
    actor: Value,
    extra: Value,
) -> Result<(), CoreError> {
    let e = Audited {
        event,
        r,
        actor,
        extra,
        timestamp: inner.clock.now_rfc3339(),
    };
    inner.audit.log(&e).await.map_err(|e| {
        tracing::error!(error = %e, event, request_id = %r.id, "could not audit an approval step");
        CoreError::AuditFailed
    })
}

fn actor_of(c: &Caller) -> Value {
    json!({"entity_id": c.entry.entity_id, "name": c.entry.display_name})
}

async fn notify(inner: &Inner, event: &str, r: &AccessRequest) {
    match config(inner).await {
        Ok(cfg) => {
            if cfg.webhook_urls.is_empty() {
                return;
            }
            let p = leash_approval::notify::payload(event, r, &cfg, inner.clock.unix());
            inner.approvals.notifier.send(&cfg.webhook_urls, &p);
        }
        Err(e) => tracing::error!(error = %e, "approval settings unreadable; no notification"),
    }
}

// ----------------------------------------------------------------------------- gate

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
pub(crate) async fn record_lease(inner: &Inner, grant: &Grant, lease_id: &str) {
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

/// The approvals' side of the lease book's [`crate::leases::GrantLedger`].
pub(crate) struct Ledger;

#[async_trait::async_trait]
impl crate::leases::GrantLedger for Ledger {
    async fn record_lease(&self, inner: &Inner, grant: &Grant, lease_id: &str) {
        record_lease(inner, grant, lease_id).await;
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

fn envelope(r: &AccessRequest, now: i64, warnings: Vec<String>) -> Response {
    let mut resp = Response::data(r.view(now));
    resp.kind = ResponseKind::EnvelopeTopLevel;
    resp.warnings = warnings;
    resp
}

fn required_str(data: &Map<String, Value>, field: &str, max: usize) -> Result<String, CoreError> {
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

async fn create(
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
fn bind_operations(
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
fn may_see(caller: &Caller, r: &AccessRequest, groups: &[String]) -> bool {
    caller.acl.is_root()
        || r.requester.token_hash == hash_hex(caller)
        || (!caller.entry.entity_id.is_empty() && r.requester.entity_id == caller.entry.entity_id)
        || r.factors
            .iter()
            .any(|f| f.group_names.iter().any(|g| groups.contains(g)))
}

async fn read(
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

async fn list(
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

async fn decide(
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

async fn complete(
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

/// After a window closed: revoke what was issued under it, audit, unindex.
async fn close_window(
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

async fn rule_op(
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

/// One round of background work: expire pending requests, escalate old ones, close
/// windows that ended. Errors are logged; the next round retries.
pub(crate) async fn sweep(inner: &Arc<Inner>) {
    if let Err(e) = sweep_inner(inner).await {
        tracing::warn!(error = %e, "approval sweep failed; will retry");
    }
}

async fn sweep_inner(inner: &Arc<Inner>) -> Result<(), CoreError> {
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
