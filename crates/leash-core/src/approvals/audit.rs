//! The approval audit entries (`{"type": "approval"}`, accessors and lease ids HMAC'd per
//! device) and webhook notifications.

use leash_approval::AccessRequest;
use leash_audit::{Entry, Hasher};
use leash_backend::{Caller, CoreError};
use leash_types::rfc3339;
use serde_json::{Value, json};

use crate::Inner;

use super::store::config;

/// One audit entry about a request.
pub(super) struct Audited<'a> {
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

pub(super) async fn audit(
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

pub(super) fn actor_of(c: &Caller) -> Value {
    json!({"entity_id": c.entry.entity_id, "name": c.entry.display_name})
}

pub(super) async fn notify(inner: &Inner, event: &str, r: &AccessRequest) {
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
