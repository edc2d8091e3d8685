//! What the core writes to the audit broker: Vault-shaped `request` and `response`
//! entries, and persistence of the enabled devices (config + per-device HMAC key).
//!
//! Every client token, accessor and string value in request or response data is
//! replaced by the device's `hmac-sha256:…` unless the device has `log_raw`, so an
//! audit file never holds a secret in clear. Lease ids stay clear (as in Vault): they
//! are needed to find a lease and cannot be used without a token.

use std::collections::BTreeMap;
use std::sync::Arc;

use base64::Engine as _;
use leash_audit::{Broker, DeviceConfig, Hasher, hash_strings};
use leash_backend::{Caller, CoreError, Request, Response};
use leash_storage::Storage;
use leash_types::{ExposeSecret, Operation, SecretBytes};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

const NS: &str = "sys/audit";

#[derive(Serialize, Deserialize)]
struct PersistedDevice {
    config: DeviceConfig,
    /// Base64 HMAC key (sealed by the storage barrier like every value).
    key: String,
}

/// Enables every persisted device; a device that cannot open is logged and skipped, so
/// with no device working every audited request then fails closed.
pub(crate) async fn restore_devices(
    storage: &Arc<dyn Storage>,
    broker: &Broker,
) -> Result<(), CoreError> {
    for path in storage.list(NS, "").await? {
        let Some(raw) = storage.get(NS, &path).await? else {
            continue;
        };
        let dev: PersistedDevice = serde_json::from_slice(&raw).map_err(|e| {
            CoreError::internal(format!("stored audit device {path} is unreadable: {e}"))
        })?;
        let key = base64::engine::general_purpose::STANDARD
            .decode(&dev.key)
            .map_err(|_| {
                CoreError::internal(format!("stored audit device {path} has a bad key"))
            })?;
        // Refuse to start rather than run with fewer audit devices than configured: a
        // server that silently dropped its only device would serve requests unaudited.
        broker.enable(dev.config, SecretBytes::new(key), None).await.map_err(|e| {
            CoreError::internal(format!(
                "audit device {path}/ cannot be re-enabled: {e}; fix it (or remove it from a server that can start) and restart"
            ))
        })?;
    }
    Ok(())
}

/// Enables and persists a device with a fresh HMAC key.
pub(crate) async fn enable_device(
    storage: &Arc<dyn Storage>,
    broker: &Broker,
    config: DeviceConfig,
) -> Result<(), CoreError> {
    let key = SecretBytes::random(32);
    let encoded =
        zeroize::Zeroizing::new(base64::engine::general_purpose::STANDARD.encode(key.expose()));
    let path = config.path.clone();
    // The first line of every device records that it was enabled; writing it is also
    // the test that the device works (a device that cannot write is refused here).
    let probe_path = path.clone();
    let probe = move |_: &Hasher, _: bool| {
        json!({
            "time": now_rfc3339_nanos(),
            "type": "audit_device_enabled",
            "path": probe_path,
        })
    };
    broker
        .enable(config.clone(), key, Some(&probe))
        .await
        .map_err(|e| CoreError::invalid(format!("cannot enable audit device: {e}")))?;
    let persisted = PersistedDevice {
        config: broker
            .list()
            .into_iter()
            .find(|c| c.path == path || c.path == format!("{path}/"))
            .unwrap_or(config),
        key: encoded.to_string(),
    };
    let bytes = serde_json::to_vec(&persisted).map_err(|e| CoreError::internal(e.to_string()))?;
    if let Err(e) = storage
        .put(NS, persisted.config.path.trim_end_matches('/'), bytes)
        .await
    {
        broker.disable(&persisted.config.path).await;
        return Err(e.into());
    }
    Ok(())
}

/// Disables and forgets a device.
pub(crate) async fn disable_device(
    storage: &Arc<dyn Storage>,
    broker: &Broker,
    path: &str,
) -> Result<(), CoreError> {
    let p = format!("{}/", path.trim_matches('/'));
    broker.disable(&p).await;
    storage.delete(NS, p.trim_end_matches('/')).await?;
    Ok(())
}

/// The request half of what is audited, borrowed from the pipeline.
pub(crate) struct AuditContext<'a> {
    /// The request.
    pub(crate) req: &'a Request,
    /// Operation after the existence check.
    pub(crate) operation: Operation,
    /// Mount the request was routed to (`""` when none).
    pub(crate) mount_point: &'a str,
    /// Mount type.
    pub(crate) mount_type: &'a str,
    /// Mount accessor.
    pub(crate) mount_accessor: &'a str,
    /// The authenticated caller, if any.
    pub(crate) caller: Option<&'a Caller>,
    /// Policy decision (allowed, granting policies), when an ACL check ran.
    pub(crate) policy_results: Option<(bool, Vec<String>)>,
}

fn now_rfc3339_nanos() -> String {
    time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

fn hashed_data(data: &Map<String, Value>, h: &Hasher, raw: bool) -> Value {
    let mut v = Value::Object(data.clone());
    if !raw {
        hash_strings(&mut v, h);
    }
    v
}

fn auth_block(ctx: &AuditContext<'_>, h: &Hasher, raw: bool) -> Value {
    let hm = |s: &str| {
        if raw || s.is_empty() {
            s.to_owned()
        } else {
            h.hmac(s)
        }
    };
    let hm_acc = |s: &str| {
        if raw || !h.hmac_accessor() || s.is_empty() {
            s.to_owned()
        } else {
            h.hmac(s)
        }
    };
    let token = ctx
        .req
        .token
        .as_ref()
        .map(|t| hm(t.expose_secret()))
        .unwrap_or_default();
    match ctx.caller {
        Some(c) => {
            let mut a = json!({
                "client_token": token,
                "accessor": hm_acc(&c.entry.accessor),
                "display_name": c.entry.display_name,
                "policies": c.entry.policies,
                "token_policies": c.entry.policies,
                "metadata": c.entry.meta,
                "entity_id": c.entry.entity_id,
                "token_type": "service",
                "token_ttl": c.entry.creation_ttl,
                "token_issue_time": crate::token::rfc3339(c.entry.creation_time),
            });
            if let Some((allowed, granting)) = &ctx.policy_results {
                a["policy_results"] = json!({ "allowed": allowed, "granting_policies": granting.iter().map(|p| json!({"name": p, "type": "acl"})).collect::<Vec<_>>() });
            }
            a
        }
        None => {
            let mut a = json!({ "client_token": token });
            if let Some((allowed, _)) = &ctx.policy_results {
                a["policy_results"] = json!({ "allowed": allowed });
            }
            a
        }
    }
}

fn request_block(ctx: &AuditContext<'_>, h: &Hasher, raw: bool) -> Value {
    let hm = |s: &str| {
        if raw || s.is_empty() {
            s.to_owned()
        } else {
            h.hmac(s)
        }
    };
    let hm_acc = |s: &str| {
        if raw || !h.hmac_accessor() || s.is_empty() {
            s.to_owned()
        } else {
            h.hmac(s)
        }
    };
    json!({
        "id": ctx.req.id,
        "operation": ctx.operation.as_str(),
        "mount_point": ctx.mount_point,
        "mount_type": ctx.mount_type,
        "mount_accessor": ctx.mount_accessor,
        "client_token": ctx.req.token.as_ref().map(|t| hm(t.expose_secret())).unwrap_or_default(),
        "client_token_accessor": ctx.caller.map(|c| hm_acc(&c.entry.accessor)).unwrap_or_default(),
        "namespace": { "id": "root" },
        "path": ctx.req.path,
        "data": if ctx.req.data.is_empty() { Value::Null } else { hashed_data(&ctx.req.data, h, raw) },
        "remote_address": ctx.req.remote_addr.map(|a| a.ip().to_string()).unwrap_or_default(),
        "remote_port": ctx.req.remote_addr.map(|a| a.port()).unwrap_or(0),
    })
}

/// Builds the `request` entry for one device.
pub(crate) fn request_entry(
    ctx: &AuditContext<'_>,
    error: Option<&str>,
    h: &Hasher,
    raw: bool,
) -> Value {
    let mut e = json!({
        "time": now_rfc3339_nanos(),
        "type": "request",
        "auth": auth_block(ctx, h, raw),
        "request": request_block(ctx, h, raw),
    });
    if let Some(err) = error {
        e["error"] = json!(err);
    }
    e
}

/// Builds the `response` entry for one device.
pub(crate) fn response_entry(
    ctx: &AuditContext<'_>,
    resp: Result<&Response, &CoreError>,
    h: &Hasher,
    raw: bool,
) -> Value {
    let hm = |s: &str| {
        if raw || s.is_empty() {
            s.to_owned()
        } else {
            h.hmac(s)
        }
    };
    let hm_acc = |s: &str| {
        if raw || !h.hmac_accessor() || s.is_empty() {
            s.to_owned()
        } else {
            h.hmac(s)
        }
    };
    let mut e = json!({
        "time": now_rfc3339_nanos(),
        "type": "response",
        "auth": auth_block(ctx, h, raw),
        "request": request_block(ctx, h, raw),
    });
    match resp {
        Ok(r) => {
            let mut body = json!({
                "mount_point": ctx.mount_point,
                "mount_type": ctx.mount_type,
                "mount_accessor": ctx.mount_accessor,
            });
            if let Some(s) = &r.secret {
                body["secret"] = json!({ "lease_id": s.lease_id });
            }
            if let Some(a) = &r.auth {
                let meta: BTreeMap<&String, &String> = a.metadata.iter().collect();
                body["auth"] = json!({
                    "client_token": hm(a.client_token.expose_secret()),
                    "accessor": hm_acc(&a.accessor),
                    "policies": a.policies,
                    "token_policies": a.token_policies,
                    "metadata": meta,
                    "entity_id": a.entity_id,
                    "token_type": a.token_type,
                    "token_ttl": a.lease_duration,
                });
            }
            if let Some(d) = &r.data {
                let mut d = d.clone();
                if !raw {
                    hash_strings(&mut d, h);
                }
                body["data"] = d;
            }
            if !r.warnings.is_empty() {
                body["warnings"] = json!(r.warnings);
            }
            e["response"] = body;
        }
        Err(err) => {
            e["error"] = json!(err.to_string());
        }
    }
    e
}
