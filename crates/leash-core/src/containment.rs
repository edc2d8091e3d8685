//! The kill switch: `sys/containment/lock|unlock|locks|jobs/:id`. One call ends
//! everything an agent holds, and for an identity (an entity, or a login role of an auth
//! mount) keeps it from logging in again until it is unlocked.
//!
//! * **Selector** — exactly one of `entity_id`, `role` (`{"mount": "kubernetes",
//!   "role": "ai-agent-role"}`, or `"kubernetes/ai-agent-role"`), `accessor` (a token
//!   tree) or `trace_id` (everything issued under one task).
//! * **What ends** — every live token the selector picks, with its subtree; every lease
//!   issued to one of them (or, for `entity_id` and `trace_id`, carrying that entity or
//!   trace id), revoked in its engine before the call answers (database users dropped,
//!   their sessions killed); every pending or approved just-in-time request of those
//!   tokens (or that entity or trace). The leases are claimed before the tokens are
//!   revoked, so the expiry worker does not race the call for them: each gets its
//!   `agent.credential.revoked` event with reason `contained`, like each token.
//! * **Locks** (`entity_id`, `role`) are written *before* anything is revoked, so an
//!   agent logging in again during the call is refused already. They are stored (sealed,
//!   namespace `sys/containment`, keys `lock/entity/<id>` and `lock/role/<mount>/<role>`)
//!   and so survive a restart. [`refusal`] is what `login::complete` asks.
//! * **Audit** — one `{"type": "containment", "event": "containment.locked"}` entry per
//!   call (with the selector, reason, caller and counts; an accessor HMAC'd like every
//!   accessor), and `containment.unlocked` for unlocks. `leash_containment_actions_total
//!   {action}` counts `lock` (an identity locked), `revoke` (a tree or trace revoked
//!   without a lock) and `unlock`.
//! * **Asynchronously** — with `async=true` the call answers 202 with a `job_id` at once;
//!   `GET sys/containment/jobs/<id>` says `running`, then `done` with the counts (or
//!   `failed` with the error).

use std::collections::HashSet;
use std::sync::Arc;

use leash_backend::{Caller, CoreError, MountEntry, Response, TokenEntry, fields};
use leash_storage::KeyedHash;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use crate::Inner;
use crate::events::{self, Event, Kind, reason};
use crate::leases::{self, LeaseEntry, Reason};

/// Storage namespace.
const NS: &str = "sys/containment";
/// Longest reason accepted.
const MAX_REASON: usize = 1024;

/// What a lock call picks.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub(crate) enum Selector {
    /// Every token (and lease) of one entity.
    Entity { entity_id: String },
    /// Every token that logged in through `role` of the auth mount `mount`.
    Role { mount: String, role: String },
    /// One token tree.
    Accessor { accessor: String },
    /// Everything issued under one trace id.
    Trace { trace_id: String },
}

impl Selector {
    /// Whether it locks an identity (and not only revokes).
    fn locks(&self) -> bool {
        matches!(self, Selector::Entity { .. } | Selector::Role { .. })
    }

    /// Its storage key when it locks.
    fn lock_key(&self) -> Option<String> {
        match self {
            Selector::Entity { entity_id } => Some(format!("lock/entity/{entity_id}")),
            Selector::Role { mount, role } => Some(format!("lock/role/{mount}/{role}")),
            _ => None,
        }
    }

    fn matches_token(&self, e: &TokenEntry) -> bool {
        match self {
            Selector::Entity { entity_id } => e.entity_id == *entity_id,
            Selector::Role { mount, role } => {
                e.path.starts_with(&format!("auth/{mount}/"))
                    && e.metrics_role.as_deref() == Some(role.as_str())
            }
            Selector::Accessor { accessor } => e.accessor == *accessor,
            Selector::Trace { trace_id } => e.trace_id == *trace_id,
        }
    }

    fn matches_lease(&self, e: &LeaseEntry) -> bool {
        let Some(i) = &e.issued else { return false };
        match self {
            Selector::Entity { entity_id } => i.agent.entity_id == *entity_id,
            Selector::Trace { trace_id } => i.trace_id == *trace_id,
            _ => false,
        }
    }

    fn matches_request(&self, r: &leash_approval::AccessRequest) -> bool {
        match self {
            Selector::Entity { entity_id } => r.requester.entity_id == *entity_id,
            Selector::Trace { trace_id } => r.trace_id == *trace_id,
            _ => false,
        }
    }

    /// Its description in answers and audit (`accessor` HMAC'd by the caller).
    fn view(&self) -> Value {
        match self {
            Selector::Entity { entity_id } => json!({"entity_id": entity_id}),
            Selector::Role { mount, role } => json!({"role": {"mount": mount, "role": role}}),
            Selector::Accessor { accessor } => json!({"accessor": accessor}),
            Selector::Trace { trace_id } => json!({"trace_id": trace_id}),
        }
    }
}

/// `kubernetes`, `auth/kubernetes`, `auth/kubernetes/` → `kubernetes`.
fn normalise_mount(m: &str) -> String {
    let m = m.trim().trim_matches('/');
    m.strip_prefix("auth/")
        .unwrap_or(m)
        .trim_matches('/')
        .to_owned()
}

/// The mount name locks use for an auth mount entry.
fn mount_name(m: &MountEntry) -> String {
    normalise_mount(&m.route_prefix())
}

fn check_part(field: &str, v: &str) -> Result<(), CoreError> {
    if v.is_empty() || v.len() > 256 || v.chars().any(|c| c.is_control() || c.is_whitespace()) {
        return Err(CoreError::invalid(format!(
            "\"{field}\" must be 1 to 256 characters without spaces or control characters"
        )));
    }
    Ok(())
}

/// Reads the one selector of a lock or unlock call.
pub(crate) fn selector(data: &Map<String, Value>) -> Result<Selector, CoreError> {
    let mut found = Vec::new();
    if let Some(e) = fields::string(data, "entity_id")? {
        check_part("entity_id", &e)?;
        found.push(Selector::Entity { entity_id: e });
    }
    match data.get("role") {
        None | Some(Value::Null) => {}
        Some(Value::Object(o)) => {
            let mount = fields::string(o, "mount")?.unwrap_or_default();
            let role = fields::string(o, "role")?.unwrap_or_default();
            found.push(role_selector(&mount, &role)?);
        }
        Some(Value::String(s)) => {
            let (mount, role) = match fields::string(data, "mount")? {
                Some(m) => (m, s.clone()),
                None => match s.rsplit_once('/') {
                    Some((m, r)) => (m.to_owned(), r.to_owned()),
                    None => {
                        return Err(CoreError::invalid(
                            "\"role\" names a login role of an auth mount: {\"mount\": \"kubernetes\", \"role\": \"ai-agent-role\"} or \"kubernetes/ai-agent-role\"",
                        ));
                    }
                },
            };
            found.push(role_selector(&mount, &role)?);
        }
        Some(_) => {
            return Err(CoreError::invalid(
                "\"role\" must be an object {\"mount\", \"role\"} or a string \"mount/role\"",
            ));
        }
    }
    if let Some(a) = fields::string(data, "accessor")? {
        check_part("accessor", &a)?;
        found.push(Selector::Accessor { accessor: a });
    }
    if let Some(t) = fields::string(data, "trace_id")? {
        check_part("trace_id", &t)?;
        found.push(Selector::Trace { trace_id: t });
    }
    match found.len() {
        1 => Ok(found.remove(0)),
        0 => Err(CoreError::invalid(
            "name what to contain: one of \"entity_id\", \"role\" ({\"mount\", \"role\"}), \"accessor\" or \"trace_id\"",
        )),
        _ => Err(CoreError::invalid(
            "give exactly one of \"entity_id\", \"role\", \"accessor\" or \"trace_id\"",
        )),
    }
}

fn role_selector(mount: &str, role: &str) -> Result<Selector, CoreError> {
    let mount = normalise_mount(mount);
    check_part("role.mount", &mount)?;
    check_part("role.role", role)?;
    if role.contains('/') {
        return Err(CoreError::invalid("\"role.role\" cannot contain '/'"));
    }
    Ok(Selector::Role {
        mount,
        role: role.to_owned(),
    })
}

/// A stored lock.
#[derive(Serialize, Deserialize, Clone)]
struct Lock {
    selector: Selector,
    reason: String,
    locked_at: i64,
    #[serde(default)]
    locked_by: String,
    #[serde(default)]
    trace_id: String,
}

impl Lock {
    fn view(&self) -> Value {
        let mut v = self.selector.view();
        v["reason"] = json!(self.reason);
        v["locked_at"] = json!(leash_types::rfc3339(self.locked_at));
        v["locked_by"] = json!(self.locked_by);
        v["trace_id"] = json!(self.trace_id);
        v
    }
}

async fn load_lock(inner: &Inner, key: &str) -> Result<Option<Lock>, CoreError> {
    leash_backend::store::load_json(inner.storage.as_ref(), NS, key).await
}

/// Why a login of `entity_id` through `role` of auth mount `mount` must be refused:
/// `Some("locked: <reason>")` while the entity or the role is locked.
pub(crate) async fn refusal(
    inner: &Inner,
    mount: &MountEntry,
    role: Option<&str>,
    entity_id: &str,
) -> Result<Option<String>, CoreError> {
    if !entity_id.is_empty()
        && let Some(l) = load_lock(inner, &format!("lock/entity/{entity_id}")).await?
    {
        return Ok(Some(format!("locked: {}", l.reason)));
    }
    if let Some(role) = role.filter(|r| !r.is_empty())
        && let Some(l) =
            load_lock(inner, &format!("lock/role/{}/{role}", mount_name(mount))).await?
    {
        return Ok(Some(format!("locked: {}", l.reason)));
    }
    Ok(None)
}

/// How much one containment ended.
#[derive(Default, Debug, Clone, Copy, Serialize)]
pub(crate) struct Counts {
    /// Tokens revoked (subtrees included).
    pub(crate) tokens: usize,
    /// Leases revoked in their engines.
    pub(crate) leases: usize,
    /// Leases whose revocation failed (they stay marked, and are retried).
    pub(crate) leases_failed: usize,
    /// Pending or approved just-in-time requests ended.
    pub(crate) approvals: usize,
}

/// Lease ids picked by `sel`, or owned by a token in `hashes`, or issued to an
/// accessor in `accessors`.
async fn matching_leases(
    inner: &Inner,
    sel: &Selector,
    accessors: &HashSet<String>,
    hashes: &HashSet<KeyedHash>,
) -> Result<Vec<String>, CoreError> {
    let mut out = Vec::new();
    for id in inner.storage.lease_ids_with_prefix("").await? {
        let Some(l) = inner.storage.lease_get(&id).await? else {
            continue;
        };
        if l.token.is_some_and(|h| hashes.contains(&h)) {
            out.push(id);
            continue;
        }
        let Ok(e) = LeaseEntry::decode(&l) else {
            continue;
        };
        let by_accessor = e
            .issued
            .as_ref()
            .is_some_and(|i| !i.agent.accessor.is_empty() && accessors.contains(&i.agent.accessor));
        if by_accessor || sel.matches_lease(&e) {
            out.push(id);
        }
    }
    Ok(out)
}

/// Revokes everything `sel` picks (see the module docs). Locks nothing.
pub(crate) async fn contain(
    inner: &Arc<Inner>,
    sel: &Selector,
    actor: &Value,
) -> Result<Counts, CoreError> {
    let live = inner.tokens.live_entries().await?;
    // The selected tokens and their subtrees.
    let mut accessors: HashSet<String> = live
        .iter()
        .filter(|(_, e)| sel.matches_token(e))
        .map(|(_, e)| e.accessor.clone())
        .collect();
    loop {
        let before = accessors.len();
        for (_, e) in &live {
            if e.parent_accessor
                .as_ref()
                .is_some_and(|p| accessors.contains(p))
            {
                accessors.insert(e.accessor.clone());
            }
        }
        if accessors.len() == before {
            break;
        }
    }
    let hashes: HashSet<KeyedHash> = live
        .iter()
        .filter(|(_, e)| accessors.contains(&e.accessor))
        .map(|(h, _)| *h)
        .collect();
    // Roots of the trees: the subtree goes with them.
    let roots: Vec<KeyedHash> = live
        .iter()
        .filter(|(_, e)| {
            accessors.contains(&e.accessor)
                && !e
                    .parent_accessor
                    .as_ref()
                    .is_some_and(|p| accessors.contains(p))
        })
        .map(|(h, _)| *h)
        .collect();
    drop(live);

    let lease_ids = matching_leases(inner, sel, &accessors, &hashes).await?;
    let revoke_tokens = async {
        let now = inner.clock.unix();
        let mut gone: Vec<TokenEntry> = Vec::new();
        for h in &roots {
            match inner.tokens.revoke(*h, false).await {
                Ok(g) => gone.extend(g),
                Err(e) => {
                    tracing::error!(error = %e, "containment: a token could not be revoked");
                    return Err(e);
                }
            }
        }
        let evs: Vec<Event> = gone
            .iter()
            .map(|e| {
                let mut ev = Event::token(Kind::Revoked, e, now);
                ev.ttl_seconds = 0;
                ev.reason = Some(reason::CONTAINED);
                ev
            })
            .collect();
        events::emit_logged(inner, &evs, false).await;
        Ok(gone)
    };
    let (gone, outcome, busy) =
        leases::revoke_claimed_after(inner, &lease_ids, Reason::Contained, revoke_tokens).await?;
    let mut counts = Counts {
        tokens: gone.len(),
        leases: outcome.revoked,
        leases_failed: outcome.failed.len(),
        approvals: 0,
    };
    // Leases issued between the scan and the revocation (their tokens are gone now, so
    // no more can be), and leases someone else was revoking.
    let gone_accessors: HashSet<String> = gone.iter().map(|e| e.accessor.clone()).collect();
    let done: HashSet<&String> = lease_ids.iter().collect();
    let mut more: Vec<String> = matching_leases(inner, sel, &gone_accessors, &hashes)
        .await?
        .into_iter()
        .filter(|id| !done.contains(id))
        .collect();
    more.extend(busy);
    if !more.is_empty() {
        let o = leases::revoke_ids_because(inner, &more, Reason::Contained).await?;
        counts.leases += o.revoked;
        counts.leases_failed += o.failed.len();
    }
    counts.approvals = crate::approvals::contain(
        inner,
        |r| sel.matches_request(r) || accessors.contains(&r.requester.accessor),
        actor,
    )
    .await?;
    Ok(counts)
}

fn actor_of(caller: Option<&Caller>) -> Value {
    match caller {
        Some(c) => json!({"entity_id": c.entry.entity_id, "name": c.entry.display_name}),
        None => Value::Null,
    }
}

/// Writes the `containment.<event>` audit entry (fails closed: the caller answers
/// with the error).
async fn audit(
    inner: &Inner,
    event: &'static str,
    sel: &Selector,
    extra: Value,
) -> Result<(), CoreError> {
    let trace_id = events::current_trace_id();
    let build = |h: &leash_audit::Hasher, raw: bool| {
        let mut selector = sel.view();
        if let Selector::Accessor { accessor } = sel
            && !raw
            && h.hmac_accessor()
        {
            selector = json!({"accessor": h.hmac(accessor)});
        }
        json!({
            "type": "containment",
            "event": event,
            "time": leash_types::rfc3339(inner.clock.unix()),
            "selector": selector,
            "trace_id": trace_id,
            "detail": extra,
        })
    };
    inner.audit.log(&build).await.map_err(|e| {
        tracing::error!(error = %e, event, "could not audit a containment step");
        CoreError::AuditFailed
    })
}

/// Locks (when the selector names an identity) and contains: the whole of one call.
pub(crate) async fn run(
    inner: &Arc<Inner>,
    sel: &Selector,
    why: &str,
    caller: Option<&Caller>,
) -> Result<Value, CoreError> {
    let started = std::time::Instant::now();
    let actor = actor_of(caller);
    if let Some(key) = sel.lock_key() {
        let lock = Lock {
            selector: sel.clone(),
            reason: why.to_owned(),
            locked_at: inner.clock.unix(),
            locked_by: caller
                .map(|c| c.entry.display_name.clone())
                .unwrap_or_default(),
            trace_id: events::current_trace_id(),
        };
        leash_backend::store::save_json(inner.storage.as_ref(), NS, &key, &lock).await?;
    }
    let counts = contain(inner, sel, &actor).await?;
    inner
        .telemetry
        .containment(if sel.locks() { "lock" } else { "revoke" });
    let elapsed_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
    audit(
        inner,
        "containment.locked",
        sel,
        json!({"reason": why, "locked": sel.locks(), "actor": actor, "counts": counts, "elapsed_ms": elapsed_ms}),
    )
    .await?;
    tracing::warn!(
        tokens = counts.tokens,
        leases = counts.leases,
        approvals = counts.approvals,
        elapsed_ms,
        "containment: agent contained"
    );
    let mut out = sel.view();
    out["reason"] = json!(why);
    out["locked"] = json!(sel.locks());
    out["revoked"] = json!({
        "tokens": counts.tokens,
        "leases": counts.leases,
        "approvals": counts.approvals,
    });
    out["leases_retrying"] = json!(counts.leases_failed);
    out["elapsed_ms"] = json!(elapsed_ms);
    Ok(out)
}

/// `PUT sys/containment/lock`.
pub(crate) async fn lock(
    inner: &Arc<Inner>,
    data: &Map<String, Value>,
    caller: Option<&Caller>,
) -> Result<Response, CoreError> {
    let sel = selector(data)?;
    let why = fields::string(data, "reason")?.unwrap_or_default();
    let why = why.trim().to_owned();
    if why.is_empty() {
        return Err(CoreError::invalid(
            "missing required field \"reason\" (why the agent is contained; shown to it at login)",
        ));
    }
    if why.chars().count() > MAX_REASON || why.chars().any(char::is_control) {
        return Err(CoreError::invalid(format!(
            "\"reason\" must be at most {MAX_REASON} characters without control characters"
        )));
    }
    if !fields::boolean(data, "async")?.unwrap_or(false) {
        return Ok(Response::data(run(inner, &sel, &why, caller).await?));
    }
    let id = leash_types::random::uuid_v4();
    let key = format!("job/{id}");
    let started = leash_types::rfc3339(inner.clock.unix());
    leash_backend::store::save_json(
        inner.storage.as_ref(),
        NS,
        &key,
        &json!({"job_id": id, "status": "running", "started_at": started}),
    )
    .await?;
    let inner2 = Arc::clone(inner);
    let caller2 = caller.cloned();
    let ctx = events::current();
    let id2 = id.clone();
    let job = async move {
        let r = run(&inner2, &sel, &why, caller2.as_ref()).await;
        let v = match r {
            Ok(result) => {
                json!({"job_id": id2, "status": "done", "started_at": started, "result": result})
            }
            Err(e) => {
                json!({"job_id": id2, "status": "failed", "started_at": started, "error": e.to_string()})
            }
        };
        if let Err(e) = leash_backend::store::save_json(inner2.storage.as_ref(), NS, &key, &v).await
        {
            tracing::error!(error = %e, "containment: could not record a job's result");
        }
    };
    match ctx {
        Some(c) => tokio::spawn(events::scope_arc(c, job)),
        None => tokio::spawn(job),
    };
    Ok(Response::raw(
        202,
        json!({"data": {"job_id": id, "status": "running"}}),
    ))
}

/// `GET sys/containment/jobs/<id>`.
pub(crate) async fn job(inner: &Inner, id: &str) -> Result<Option<Response>, CoreError> {
    if id.is_empty() || id.len() > 64 || !id.bytes().all(|b| b.is_ascii_hexdigit() || b == b'-') {
        return Ok(None);
    }
    let v: Option<Value> =
        leash_backend::store::load_json(inner.storage.as_ref(), NS, &format!("job/{id}")).await?;
    Ok(v.map(Response::data))
}

/// `PUT sys/containment/unlock`.
pub(crate) async fn unlock(
    inner: &Arc<Inner>,
    data: &Map<String, Value>,
    caller: Option<&Caller>,
) -> Result<Response, CoreError> {
    let sel = selector(data)?;
    let Some(key) = sel.lock_key() else {
        return Err(CoreError::invalid(
            "only an \"entity_id\" or a \"role\" can be locked, and so unlocked",
        ));
    };
    let Some(was) = load_lock(inner, &key).await? else {
        return Err(CoreError::invalid("that identity is not locked"));
    };
    inner.storage.delete(NS, &key).await?;
    inner.telemetry.containment("unlock");
    audit(
        inner,
        "containment.unlocked",
        &sel,
        json!({"actor": actor_of(caller), "locked_reason": was.reason}),
    )
    .await?;
    let mut out = sel.view();
    out["unlocked"] = json!(true);
    Ok(Response::data(out))
}

/// `LIST sys/containment/locks`.
pub(crate) async fn locks(inner: &Inner) -> Result<Response, CoreError> {
    let mut keys = Vec::new();
    let mut info = Map::new();
    for key in inner.storage.list(NS, "lock/").await? {
        let Some(l) = load_lock(inner, &key).await? else {
            continue;
        };
        let k = key.trim_start_matches("lock/").to_owned();
        info.insert(k.clone(), l.view());
        keys.push(k);
    }
    Ok(Response::data(json!({"keys": keys, "key_info": info})))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn obj(v: Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    #[test]
    fn exactly_one_selector_is_taken() {
        assert_eq!(
            selector(&obj(
                json!({"role": {"mount": "auth/kubernetes/", "role": "ai"}})
            ))
            .unwrap(),
            Selector::Role {
                mount: "kubernetes".into(),
                role: "ai".into()
            }
        );
        assert_eq!(
            selector(&obj(json!({"role": "kubernetes/ai"}))).unwrap(),
            selector(&obj(json!({"role": "ai", "mount": "kubernetes"}))).unwrap()
        );
        assert!(selector(&obj(json!({}))).is_err());
        assert!(selector(&obj(json!({"entity_id": "e", "trace_id": "t"}))).is_err());
        assert!(selector(&obj(json!({"entity_id": "has space"}))).is_err());
        assert!(selector(&obj(json!({"role": "noslash"}))).is_err());
        assert_eq!(
            selector(&obj(json!({"trace_id": "abc"})))
                .unwrap()
                .lock_key(),
            None
        );
    }
}
