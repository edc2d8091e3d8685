//! Credential lifecycle events: one audit entry per transition of a credential
//! (`agent.credential.issued|used|renewed|revoked|expired|leaked|anomaly|canary_tripped`), beside the Vault-shaped
//! request and response entries, on every audit device.
//!
//! * `trace_id` is the trace id of the request that caused the event (see
//!   [`leash_backend::Request::trace_id`]); a lease remembers the trace id of the
//!   request that issued it, so its renewal, revocation and expiry carry the same one
//!   even when they happen in the background.
//! * `agent_id` is the token's entity id when it has one (logins derive a stable one
//!   per auth mount and identity), else the token's accessor, HMAC'd like every
//!   accessor in the audit log.
//! * `agent_name` is the agent's readable name: its login role (`role_name`, `role`) or
//!   user name (`username`) from the token's metadata, else the token's display name.
//!   Dashboards filter on it; `agent_id` stays the stable id.
//! * Accessors are HMAC'd with each device's key (unless `log_raw`, or the device's
//!   `hmac_accessor` is off); lease ids stay clear as in the request entries. No event
//!   holds a token, password or any response data.

use std::sync::Arc;

use leash_audit::{Entry, Hasher};
use leash_backend::{CoreError, Request, TokenEntry};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::Inner;

tokio::task_local! {
    static CURRENT: Arc<RequestCtx>;
}

/// What an event records about the request that caused it.
pub(crate) struct RequestCtx {
    pub(crate) trace_id: String,
    request_id: String,
    path: String,
    operation: &'static str,
    remote_address: String,
}

impl RequestCtx {
    pub(crate) fn of(req: &Request) -> RequestCtx {
        RequestCtx {
            trace_id: req.trace_id.clone(),
            request_id: req.id.clone(),
            path: req.path.clone(),
            operation: req.operation.as_str(),
            remote_address: req
                .remote_addr
                .map(|a| a.ip().to_string())
                .unwrap_or_default(),
        }
    }
}

/// Runs `f` (the handling of one request) with `ctx` as the current request.
pub(crate) async fn scope<F: Future>(ctx: RequestCtx, f: F) -> F::Output {
    CURRENT.scope(Arc::new(ctx), f).await
}

/// Runs `f` (work a request started, e.g. an asynchronous containment job) with `ctx`
/// as the current request.
pub(crate) async fn scope_arc<F: Future>(ctx: Arc<RequestCtx>, f: F) -> F::Output {
    CURRENT.scope(ctx, f).await
}

/// The request being handled by this task, if any.
pub(crate) fn current() -> Option<Arc<RequestCtx>> {
    CURRENT.try_with(Arc::clone).ok()
}

/// The trace id of the current request, or a fresh one.
pub(crate) fn current_trace_id() -> String {
    current().map_or_else(Request::new_trace_id, |c| c.trace_id.clone())
}

/// The peer address of the current request (`""` outside a request).
pub(crate) fn current_remote_address() -> String {
    current()
        .map(|c| c.remote_address.clone())
        .unwrap_or_default()
}

/// `action_context`: the request that caused the event, or the background worker.
fn action_context() -> Value {
    match current() {
        Some(c) => json!({
            "request_id": c.request_id,
            "path": c.path,
            "operation": c.operation,
            "remote_address": c.remote_address,
            "trace_id": c.trace_id,
        }),
        None => json!({ "initiator": "expiry-worker" }),
    }
}

/// Which transition.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    Issued,
    Used,
    Renewed,
    Revoked,
    Expired,
    Leaked,
    Anomaly,
    CanaryTripped,
}

impl Kind {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Kind::Issued => "agent.credential.issued",
            Kind::Used => "agent.credential.used",
            Kind::Renewed => "agent.credential.renewed",
            Kind::Revoked => "agent.credential.revoked",
            Kind::Expired => "agent.credential.expired",
            Kind::Leaked => "agent.credential.leaked",
            Kind::Anomaly => "agent.credential.anomaly",
            Kind::CanaryTripped => "agent.credential.canary_tripped",
        }
    }
}

/// Why a credential was revoked (the `reason` of a `revoked` event).
pub(crate) mod reason {
    /// An explicit revocation API call (`sys/leases/revoke*`, `auth/token/revoke*`,
    /// disabling the mount).
    pub(crate) const OPERATOR: &str = "operator";
    /// The holder revoked its own token (`auth/token/revoke-self`, as `leash agent`
    /// does on exit): its task is done.
    pub(crate) const TASK_COMPLETED: &str = "task completed";
    /// The token it was issued to was revoked or expired (revoked by the worker).
    pub(crate) const TOKEN_REVOKED: &str = "token revoked";
    /// Its TTL ran out (the reason of every `expired` event).
    pub(crate) const LEASE_EXPIRED: &str = "lease expired";
    /// A child token revoked because its parent token was revoked or expired.
    pub(crate) const PARENT_REVOKED: &str = "parent revoked";
    /// A leak scan (`sys/leaks/scan`) found it in text that left its holder.
    pub(crate) const LEAK: &str = "leak";
    /// The kill switch (`sys/containment/lock`) ended everything its agent held.
    pub(crate) const CONTAINED: &str = "contained";
}

/// The token an event is about (stored with each lease).
#[derive(Serialize, Deserialize, Clone, Default, Debug)]
pub(crate) struct Agent {
    /// Entity id ("" when none).
    #[serde(default)]
    pub(crate) entity_id: String,
    /// The token's accessor (clear here: the lease entry is sealed at rest).
    #[serde(default)]
    pub(crate) accessor: String,
    /// The agent's readable name (see [`agent_name`]; "" for leases stored before it).
    #[serde(default)]
    pub(crate) name: String,
}

impl Agent {
    pub(crate) fn of(e: &TokenEntry) -> Agent {
        Agent {
            entity_id: e.entity_id.clone(),
            accessor: e.accessor.clone(),
            name: agent_name(&e.meta, &e.display_name),
        }
    }
}

/// The agent's readable name: the login role (`role_name` from AppRole, `role` from
/// JWT/Kubernetes) or user name (`username` from userpass) in the token's metadata,
/// else its display name.
pub(crate) fn agent_name(
    meta: &std::collections::BTreeMap<String, String>,
    display_name: &str,
) -> String {
    ["role_name", "role", "username"]
        .iter()
        .find_map(|k| meta.get(*k).filter(|v| !v.is_empty()))
        .map_or_else(|| display_name.to_owned(), Clone::clone)
}

/// One lifecycle event.
pub(crate) struct Event {
    pub(crate) kind: Kind,
    pub(crate) agent: Agent,
    pub(crate) credential_type: String,
    pub(crate) credential_scope: Value,
    /// Seconds the credential has left after the transition (0: none, or no expiry for
    /// a token without one).
    pub(crate) ttl_seconds: u64,
    pub(crate) trace_id: String,
    pub(crate) lease_id: Option<String>,
    pub(crate) reason: Option<&'static str>,
}

impl Event {
    /// An event about a token, caused by the current request.
    pub(crate) fn token(kind: Kind, e: &TokenEntry, now: i64) -> Event {
        Event {
            kind,
            agent: Agent::of(e),
            credential_type: "token".to_owned(),
            credential_scope: json!({ "policies": e.policies }),
            ttl_seconds: e
                .expire_time
                .map_or(0, |t| u64::try_from(t - now).unwrap_or(0)),
            trace_id: current_trace_id(),
            lease_id: None,
            reason: None,
        }
    }
}

#[derive(Serialize)]
struct EventOut<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    timestamp: String,
    event: &'static str,
    agent_id: &'a str,
    agent_name: &'a str,
    entity_id: &'a str,
    accessor: &'a str,
    credential_type: &'a str,
    credential_scope: &'a Value,
    ttl_seconds: u64,
    trace_id: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    lease_id: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<&'static str>,
    action_context: &'a Value,
}

/// An event with its context, ready for the broker.
struct Built<'a> {
    ev: &'a Event,
    timestamp: String,
    action_context: Value,
}

impl Entry for Built<'_> {
    fn write_json(&self, h: &Hasher, raw: bool, out: &mut Vec<u8>) -> serde_json::Result<()> {
        let ev = self.ev;
        let a = &ev.agent.accessor;
        let accessor = if raw || !h.hmac_accessor() || a.is_empty() {
            a.clone()
        } else {
            h.hmac(a)
        };
        let agent_id = if ev.agent.entity_id.is_empty() {
            accessor.as_str()
        } else {
            ev.agent.entity_id.as_str()
        };
        let o = EventOut {
            kind: "lifecycle",
            timestamp: self.timestamp.clone(),
            event: ev.kind.as_str(),
            agent_id,
            agent_name: &ev.agent.name,
            entity_id: &ev.agent.entity_id,
            accessor: &accessor,
            credential_type: &ev.credential_type,
            credential_scope: &ev.credential_scope,
            ttl_seconds: ev.ttl_seconds,
            trace_id: &ev.trace_id,
            lease_id: ev.lease_id.as_deref(),
            reason: ev.reason,
            action_context: &self.action_context,
        };
        serde_json::to_writer(out, &o)
    }
}

/// Records `events` on every audit device, in order. With `sync` the last one is
/// synced (and so all before it); without, they are only written, and a synced entry
/// the caller writes next (the request's response entry) makes them durable.
pub(crate) async fn emit(inner: &Inner, events: &[Event], sync: bool) -> Result<(), CoreError> {
    if inner.audit.is_empty() {
        return Ok(());
    }
    let action_context = action_context();
    for (i, ev) in events.iter().enumerate() {
        let built = Built {
            ev,
            timestamp: inner.clock.now_rfc3339(),
            action_context: action_context.clone(),
        };
        let r = if sync && i + 1 == events.len() {
            inner.audit.log(&built).await
        } else {
            inner.audit.log_written(&built).await
        };
        r.map_err(|e| {
            tracing::error!(error = %e, event = ev.kind.as_str(), "could not audit a lifecycle event");
            CoreError::AuditFailed
        })?;
    }
    Ok(())
}

/// Records events the session observer saw, with `context` (the session) as their
/// `action_context`; written and synced, failures logged only.
pub(crate) async fn emit_observed(inner: &Inner, events: &[Event], context: &Value) {
    for (i, ev) in events.iter().enumerate() {
        let built = Built {
            ev,
            timestamp: inner.clock.now_rfc3339(),
            action_context: context.clone(),
        };
        let r = if i + 1 == events.len() {
            inner.audit.log(&built).await
        } else {
            inner.audit.log_written(&built).await
        };
        if let Err(e) = r {
            tracing::error!(error = %e, event = ev.kind.as_str(), "could not audit an observed session");
        }
    }
}

/// Like [`emit`], for transitions that already happened and cannot be undone: a
/// failure is logged only.
pub(crate) async fn emit_logged(inner: &Inner, events: &[Event], sync: bool) {
    let _ = emit(inner, events, sync).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(ev: &Event, h: &Hasher, raw: bool) -> Value {
        let built = Built {
            ev,
            timestamp: leash_types::rfc3339(1_700_000_000),
            action_context: action_context(),
        };
        let mut out = Vec::new();
        built.write_json(h, raw, &mut out).unwrap();
        serde_json::from_slice(&out).unwrap()
    }

    fn event(entity_id: &str) -> Event {
        Event {
            kind: Kind::Used,
            agent: Agent {
                entity_id: entity_id.to_owned(),
                accessor: "accessor-in-clear".to_owned(),
                name: "agent-deployer".to_owned(),
            },
            credential_type: "token".to_owned(),
            credential_scope: json!({"policies": ["default"]}),
            ttl_seconds: 60,
            trace_id: "t-1".to_owned(),
            lease_id: None,
            reason: None,
        }
    }

    #[test]
    fn accessor_is_hmaced_and_agent_id_prefers_the_entity() {
        let h = Hasher::new(leash_types::SecretBytes::new(vec![7; 32]));
        let v = line(&event(""), &h, false);
        assert_eq!(v["type"], "lifecycle");
        assert_eq!(v["event"], "agent.credential.used");
        assert_eq!(v["accessor"], h.hmac("accessor-in-clear"));
        assert_eq!(v["agent_id"], v["accessor"], "no entity: the accessor");
        assert_eq!(v["action_context"]["initiator"], "expiry-worker");
        assert!(v.get("lease_id").is_none() && v.get("reason").is_none());
        assert!(!v.to_string().contains("accessor-in-clear"));

        let v = line(&event("ent-1"), &h, false);
        assert_eq!(v["agent_id"], "ent-1");
        assert_eq!(v["agent_name"], "agent-deployer");
        let v = line(&event("ent-1"), &h, true);
        assert_eq!(v["accessor"], "accessor-in-clear", "log_raw");
    }

    #[tokio::test]
    async fn the_current_request_is_the_context() {
        assert_eq!(current_trace_id().len(), 32, "generated outside a request");
        let mut req = Request::new(leash_types::Operation::Read, "database/creds/ro");
        req.trace_id = "trace-x".to_owned();
        let (trace, ctx) = scope(RequestCtx::of(&req), async {
            (current_trace_id(), action_context())
        })
        .await;
        assert_eq!(trace, "trace-x");
        assert_eq!(ctx["path"], "database/creds/ro");
        assert_eq!(ctx["request_id"], req.id.as_str());
    }
}
