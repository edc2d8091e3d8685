//! What the core writes to the audit broker: Vault-shaped `request` and `response`
//! entries, and persistence of the enabled devices (config + per-device HMAC key).
//!
//! Every client token, accessor and string value in request or response data is
//! replaced by the device's `hmac-sha256:…` unless the device has `log_raw`, so an
//! audit file never holds a secret in clear. Lease ids stay clear (as in Vault): they
//! are needed to find a lease and cannot be used without a token.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::sync::Arc;

use base64::Engine as _;
use leash_audit::{Broker, DeviceConfig, Entry, Hasher};
use leash_backend::{Caller, CoreError, Request, Response};
use leash_storage::Storage;
use leash_types::{Clock, ExposeSecret, Operation, SecretBytes};
use serde::{Deserialize, Serialize, Serializer};
use serde_json::{Map, Value, json};

pub(crate) const NS: &str = "sys/audit";

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

/// Makes the device at `path` match storage (it was enabled or disabled through
/// another server): enabled here with the stored key if stored and not enabled, disabled
/// if enabled and no longer stored.
pub(crate) async fn sync_device(inner: &crate::Inner, path: &str) -> Result<(), CoreError> {
    let enabled = inner
        .audit
        .list()
        .iter()
        .any(|d| d.path.trim_end_matches('/') == path.trim_end_matches('/'));
    match inner.storage.get(NS, path).await? {
        Some(raw) if !enabled => {
            let dev: PersistedDevice = serde_json::from_slice(&raw).map_err(|e| {
                CoreError::internal(format!("stored audit device {path} is unreadable: {e}"))
            })?;
            let key = base64::engine::general_purpose::STANDARD
                .decode(&dev.key)
                .map_err(|_| {
                    CoreError::internal(format!("stored audit device {path} has a bad key"))
                })?;
            inner
                .audit
                .enable(dev.config, SecretBytes::new(key), None)
                .await
                .map_err(|e| {
                    CoreError::internal(format!(
                        "audit device {path}/ enabled by another server cannot be opened here: {e}"
                    ))
                })?;
        }
        None if enabled => {
            inner.audit.disable(path).await;
        }
        _ => {}
    }
    Ok(())
}

/// [`sync_device`] for every stored and every enabled device.
pub(crate) async fn sync_all(inner: &crate::Inner) -> Result<(), CoreError> {
    let mut paths = inner.storage.list(NS, "").await?;
    for d in inner.audit.list() {
        let p = d.path.trim_end_matches('/').to_owned();
        if !paths.contains(&p) {
            paths.push(p);
        }
    }
    for p in paths {
        sync_device(inner, &p).await?;
    }
    Ok(())
}

/// Enables and persists a device with a fresh HMAC key.
pub(crate) async fn enable_device(
    storage: &Arc<dyn Storage>,
    broker: &Broker,
    clock: &dyn Clock,
    config: DeviceConfig,
) -> Result<(), CoreError> {
    let key = SecretBytes::random(32);
    let encoded =
        zeroize::Zeroizing::new(base64::engine::general_purpose::STANDARD.encode(key.expose()));
    let path = config.path.clone();
    // The first line of every device records that it was enabled; writing it is also
    // the test that the device works (a device that cannot write is refused here).
    let probe_path = path.clone();
    let time = clock.now_rfc3339();
    let probe = move |_: &Hasher, _: bool| {
        json!({
            "time": time,
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
    /// The path is callable without a token (a login): its body is recorded even
    /// without a caller.
    pub(crate) unauthenticated: bool,
    /// The core's clock: entry times.
    pub(crate) clock: &'a dyn Clock,
}

impl AuditContext<'_> {
    /// Whether the request body is worth recording. A request refused for want of a
    /// valid token, or by the ACL, did nothing: its body is replaced by a marker, so an
    /// anonymous or denied caller cannot make the audit log grow by what it sends.
    fn records_body(&self) -> bool {
        let anonymous = self.caller.is_none() && !self.unauthenticated;
        let denied = matches!(self.policy_results, Some((false, _)));
        !(anonymous || denied)
    }
}

/// Largest audit entry written with its request and response data; past it the entry is
/// written again with both replaced by a marker (so one request cannot write megabytes).
pub(crate) const MAX_ENTRY_BYTES: usize = 256 * 1024;

/// What stands in for data that was not recorded.
#[derive(Serialize)]
struct Omitted {
    #[serde(rename = "leash_omitted")]
    reason: &'static str,
}

const OMITTED_UNTRUSTED: Omitted = Omitted {
    reason: "body of a request refused without a valid token or by policy",
};
const OMITTED_SIZE: Omitted = Omitted {
    reason: "data larger than the audit entry limit",
};

/// Request or response data as written: recorded (every string HMAC'd) or a marker.
#[derive(Serialize)]
#[serde(untagged)]
enum DataOut<'a, T> {
    Recorded(T),
    Omitted(&'a Omitted),
}

/// Serialises an entry with `build(full)`: first with its data, and if that exceeds
/// [`MAX_ENTRY_BYTES`], again without.
fn write_bounded<E: Serialize>(
    out: &mut Vec<u8>,
    build: impl Fn(bool) -> E,
) -> serde_json::Result<()> {
    let start = out.len();
    serde_json::to_writer(&mut *out, &build(true))?;
    if out.len() - start > MAX_ENTRY_BYTES {
        out.truncate(start);
        serde_json::to_writer(&mut *out, &build(false))?;
    }
    Ok(())
}

/// How one device sees a string: HMAC'd (its key), or raw with `log_raw`.
#[derive(Clone, Copy)]
struct Hm<'h> {
    h: &'h Hasher,
    raw: bool,
}

impl Hm<'_> {
    fn s<'v>(&self, v: &'v str) -> Cow<'v, str> {
        if self.raw || v.is_empty() {
            Cow::Borrowed(v)
        } else {
            Cow::Owned(self.h.hmac(v))
        }
    }

    fn accessor<'v>(&self, v: &'v str) -> Cow<'v, str> {
        if self.h.hmac_accessor() {
            self.s(v)
        } else {
            Cow::Borrowed(v)
        }
    }
}

/// A JSON value written with every string HMAC'd on the way out (no copy of the value).
struct Hashed<'a> {
    v: &'a Value,
    hm: Hm<'a>,
}

impl Serialize for Hashed<'_> {
    fn serialize<S: Serializer>(&self, ser: S) -> Result<S::Ok, S::Error> {
        match self.v {
            Value::String(s) => ser.serialize_str(&self.hm.s(s)),
            Value::Array(items) => ser.collect_seq(items.iter().map(|v| Hashed { v, hm: self.hm })),
            Value::Object(m) => {
                ser.collect_map(m.iter().map(|(k, v)| (k, Hashed { v, hm: self.hm })))
            }
            other => other.serialize(ser),
        }
    }
}

struct HashedMap<'a> {
    m: &'a Map<String, Value>,
    hm: Hm<'a>,
}

impl Serialize for HashedMap<'_> {
    fn serialize<S: Serializer>(&self, ser: S) -> Result<S::Ok, S::Error> {
        ser.collect_map(self.m.iter().map(|(k, v)| (k, Hashed { v, hm: self.hm })))
    }
}

#[derive(Serialize)]
struct GrantingPolicy<'a> {
    name: &'a str,
    #[serde(rename = "type")]
    kind: &'static str,
}

#[derive(Serialize)]
struct PolicyResults<'a> {
    allowed: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    granting_policies: Option<Vec<GrantingPolicy<'a>>>,
}

#[derive(Serialize)]
struct AuthOut<'a> {
    client_token: Cow<'a, str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    accessor: Option<Cow<'a, str>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    display_name: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    policies: Option<&'a [String]>,
    #[serde(skip_serializing_if = "Option::is_none")]
    token_policies: Option<&'a [String]>,
    #[serde(skip_serializing_if = "Option::is_none")]
    metadata: Option<&'a BTreeMap<String, String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    entity_id: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    token_type: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    token_ttl: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    token_issue_time: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    policy_results: Option<PolicyResults<'a>>,
    /// A scoped token's scope fingerprint (see `token::scope_hash`).
    #[serde(skip_serializing_if = "Option::is_none")]
    scope_hash: Option<String>,
    /// A scoped token's delegation chain: the accessors (HMAC'd like the token's own)
    /// of the ancestors whose ACLs bounded the request, nearest first.
    #[serde(skip_serializing_if = "Option::is_none")]
    delegation_chain: Option<Vec<Cow<'a, str>>>,
}

#[derive(Serialize)]
struct Namespace {
    id: &'static str,
}

#[derive(Serialize)]
struct RequestOut<'a> {
    id: &'a str,
    operation: &'static str,
    mount_point: &'a str,
    mount_type: &'a str,
    mount_accessor: &'a str,
    client_token: Cow<'a, str>,
    client_token_accessor: Cow<'a, str>,
    namespace: Namespace,
    path: &'a str,
    data: Option<DataOut<'a, HashedMap<'a>>>,
    remote_address: String,
    remote_port: u16,
}

#[derive(Serialize)]
struct SecretOut<'a> {
    lease_id: &'a str,
}

#[derive(Serialize)]
struct ResponseAuthOut<'a> {
    client_token: Cow<'a, str>,
    accessor: Cow<'a, str>,
    policies: &'a [String],
    token_policies: &'a [String],
    metadata: &'a BTreeMap<String, String>,
    entity_id: &'a str,
    token_type: &'a str,
    token_ttl: u64,
}

#[derive(Serialize)]
struct ResponseOut<'a> {
    mount_point: &'a str,
    mount_type: &'a str,
    mount_accessor: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    secret: Option<SecretOut<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    auth: Option<ResponseAuthOut<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    data: Option<DataOut<'a, Hashed<'a>>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    warnings: Option<&'a [String]>,
}

#[derive(Serialize)]
struct EntryOut<'a> {
    time: String,
    #[serde(rename = "type")]
    kind: &'static str,
    auth: AuthOut<'a>,
    request: RequestOut<'a>,
    #[serde(skip_serializing_if = "Option::is_none")]
    response: Option<ResponseOut<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<Cow<'a, str>>,
    /// The request's trace id (as in its lifecycle events).
    trace_id: &'a str,
    /// The caller's agent id (entity id, else its accessor as above), when authenticated.
    #[serde(skip_serializing_if = "Option::is_none")]
    agent_id: Option<Cow<'a, str>>,
}

fn agent_id<'a>(ctx: &'a AuditContext<'_>, hm: Hm<'a>) -> Option<Cow<'a, str>> {
    ctx.caller.map(|c| {
        if c.entry.entity_id.is_empty() {
            hm.accessor(&c.entry.accessor)
        } else {
            Cow::Borrowed(c.entry.entity_id.as_str())
        }
    })
}

fn auth_out<'a>(ctx: &'a AuditContext<'_>, hm: Hm<'a>) -> AuthOut<'a> {
    let client_token = ctx
        .req
        .token
        .as_ref()
        .map(|t| hm.s(t.expose_secret()))
        .unwrap_or_default();
    match ctx.caller {
        Some(c) => AuthOut {
            client_token,
            accessor: Some(hm.accessor(&c.entry.accessor)),
            display_name: Some(&c.entry.display_name),
            policies: Some(&c.entry.policies),
            token_policies: Some(&c.entry.policies),
            metadata: Some(&c.entry.meta),
            entity_id: Some(&c.entry.entity_id),
            token_type: Some("service"),
            token_ttl: Some(c.entry.creation_ttl),
            token_issue_time: Some(leash_types::rfc3339(c.entry.creation_time)),
            scope_hash: c.entry.scope.as_deref().map(crate::token::scope_hash),
            delegation_chain: c
                .entry
                .scoped
                .then(|| c.chain.iter().map(|a| hm.accessor(a)).collect()),
            policy_results: ctx
                .policy_results
                .as_ref()
                .map(|(allowed, granting)| PolicyResults {
                    allowed: *allowed,
                    granting_policies: Some(
                        granting
                            .iter()
                            .map(|p| GrantingPolicy {
                                name: p,
                                kind: "acl",
                            })
                            .collect(),
                    ),
                }),
        },
        None => AuthOut {
            client_token,
            accessor: None,
            display_name: None,
            policies: None,
            token_policies: None,
            metadata: None,
            entity_id: None,
            token_type: None,
            token_ttl: None,
            token_issue_time: None,
            scope_hash: None,
            delegation_chain: None,
            policy_results: ctx
                .policy_results
                .as_ref()
                .map(|(allowed, _)| PolicyResults {
                    allowed: *allowed,
                    granting_policies: None,
                }),
        },
    }
}

fn request_out<'a>(ctx: &'a AuditContext<'_>, hm: Hm<'a>, full: bool) -> RequestOut<'a> {
    RequestOut {
        id: &ctx.req.id,
        operation: ctx.operation.as_str(),
        mount_point: ctx.mount_point,
        mount_type: ctx.mount_type,
        mount_accessor: ctx.mount_accessor,
        client_token: ctx
            .req
            .token
            .as_ref()
            .map(|t| hm.s(t.expose_secret()))
            .unwrap_or_default(),
        client_token_accessor: ctx
            .caller
            .map(|c| hm.accessor(&c.entry.accessor))
            .unwrap_or_default(),
        namespace: Namespace { id: "root" },
        path: &ctx.req.path,
        data: (!ctx.req.data.is_empty()).then_some(if !ctx.records_body() {
            DataOut::Omitted(&OMITTED_UNTRUSTED)
        } else if !full {
            DataOut::Omitted(&OMITTED_SIZE)
        } else {
            DataOut::Recorded(HashedMap {
                m: &ctx.req.data,
                hm,
            })
        }),
        remote_address: ctx
            .req
            .remote_addr
            .map(|a| a.ip().to_string())
            .unwrap_or_default(),
        remote_port: ctx.req.remote_addr.map(|a| a.port()).unwrap_or(0),
    }
}

/// The `request` entry of a request (written before the operation).
pub(crate) struct RequestEntry<'a> {
    pub(crate) ctx: &'a AuditContext<'a>,
    pub(crate) error: Option<&'a str>,
}

impl Entry for RequestEntry<'_> {
    fn write_json(&self, h: &Hasher, raw: bool, out: &mut Vec<u8>) -> serde_json::Result<()> {
        let hm = Hm { h, raw };
        let time = self.ctx.clock.now_rfc3339();
        write_bounded(out, |full| EntryOut {
            time: time.clone(),
            kind: "request",
            auth: auth_out(self.ctx, hm),
            request: request_out(self.ctx, hm, full),
            response: None,
            error: self.error.map(Cow::Borrowed),
            trace_id: &self.ctx.req.trace_id,
            agent_id: agent_id(self.ctx, hm),
        })
    }
}

/// The `response` entry of a request (written before the answer leaves).
pub(crate) struct ResponseEntry<'a> {
    pub(crate) ctx: &'a AuditContext<'a>,
    pub(crate) resp: Result<&'a Response, &'a CoreError>,
}

impl Entry for ResponseEntry<'_> {
    fn write_json(&self, h: &Hasher, raw: bool, out: &mut Vec<u8>) -> serde_json::Result<()> {
        let hm = Hm { h, raw };
        let ctx = self.ctx;
        let time = ctx.clock.now_rfc3339();
        let error = self.resp.err().map(|e| Cow::Owned(e.to_string()));
        write_bounded(out, |full| EntryOut {
            time: time.clone(),
            kind: "response",
            auth: auth_out(ctx, hm),
            request: request_out(ctx, hm, full),
            response: self.resp.ok().map(|r| ResponseOut {
                mount_point: ctx.mount_point,
                mount_type: ctx.mount_type,
                mount_accessor: ctx.mount_accessor,
                secret: r.secret.as_ref().map(|s| SecretOut {
                    lease_id: &s.lease_id,
                }),
                auth: r.auth.as_ref().map(|a| ResponseAuthOut {
                    client_token: hm.s(a.client_token.expose_secret()),
                    accessor: hm.accessor(&a.accessor),
                    policies: &a.policies,
                    token_policies: &a.token_policies,
                    metadata: &a.metadata,
                    entity_id: &a.entity_id,
                    token_type: &a.token_type,
                    token_ttl: a.lease_duration,
                }),
                data: r.data.as_ref().map(|v| {
                    if full {
                        DataOut::Recorded(Hashed { v, hm })
                    } else {
                        DataOut::Omitted(&OMITTED_SIZE)
                    }
                }),
                warnings: (!r.warnings.is_empty()).then_some(r.warnings.as_slice()),
            }),
            error: error.clone(),
            trace_id: &ctx.req.trace_id,
            agent_id: agent_id(ctx, hm),
        })
    }
}
