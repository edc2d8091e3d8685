//! `sys/*`: health, mounts, auth methods, policies, capabilities and audit devices.
//!
//! Mount-table changes are serialised by the core's mount lock, persisted as one
//! document, and then swapped into the router; a failure before the swap leaves the old
//! table in force.

use std::collections::BTreeMap;
use std::sync::{Arc, Weak};

use async_trait::async_trait;
use leash_audit::DeviceConfig;
use leash_backend::{
    Backend, BackendRequest, CoreError, MountEntry, MountKind, MountTable, Response, Route, Routes,
    fields, match_route,
};
use leash_types::Operation;
use serde_json::{Map, Value, json};

use crate::{Core, Inner, MountTables, SYS_NS, VERSION, audit_log, new_mount_entry};

pub(crate) struct SysBackend {
    inner: Weak<Inner>,
}

impl SysBackend {
    pub(crate) fn new(inner: Weak<Inner>) -> SysBackend {
        SysBackend { inner }
    }
}

/// Every path `sys/` serves, with its marks. `metrics` is unauthenticated only when the
/// server's `telemetry` block says so (the second table).
const ROUTES: &[Route] = routes(false);
const ROUTES_OPEN_METRICS: &[Route] = routes(true);

const fn routes(open_metrics: bool) -> &'static [Route] {
    const fn table(metrics: Route) -> [Route; 57] {
        [
            Route::path("health").unauthenticated(),
            // Servers sharing the storage and who runs which background duty.
            Route::path("ha-status"),
            Route::path("seal-status").unauthenticated(),
            Route::path("init").unauthenticated(),
            Route::path("leader").unauthenticated(),
            Route::path("internal/ui/mounts").unauthenticated(),
            Route::path("internal/ui/mounts/*").unauthenticated(),
            metrics,
            Route::path("mounts"),
            Route::path("mounts/*"),
            Route::path("auth"),
            Route::path("auth/*").sudo(),
            Route::path("policy"),
            Route::path("policy/:name").folded(),
            Route::path("policies/acl"),
            Route::path("policies/acl/:name").folded(),
            Route::path("capabilities-self"),
            Route::path("capabilities").sudo(),
            Route::path("capabilities-accessor").sudo(),
            Route::path("audit").sudo(),
            Route::path("audit/*").sudo(),
            Route::path("audit-hash").sudo(),
            Route::path("audit-hash/*").sudo(),
            Route::path("leaks/scan").sudo(),
            // The kill switch (containment.rs).
            Route::path("containment/lock").sudo(),
            Route::path("containment/unlock").sudo(),
            Route::path("containment/locks").sudo(),
            Route::path("containment/jobs").sudo(),
            Route::path("containment/jobs/:id").sudo(),
            // Who holds what (agents.rs): read-only, so not sudo.
            Route::path("containment/agents"),
            // Leases (sys_leases.rs); the short forms are Vault's legacy aliases.
            Route::path("leases/lookup/*").sudo(),
            Route::path("leases/lookup"),
            Route::path("leases/renew"),
            Route::path("leases/renew/*"),
            Route::path("renew"),
            Route::path("renew/*"),
            Route::path("leases/revoke"),
            Route::path("leases/revoke/*"),
            Route::path("revoke"),
            Route::path("revoke/*"),
            // The bare forms reach the handler too, which refuses an empty prefix.
            Route::path("leases/revoke-prefix").sudo(),
            Route::path("leases/revoke-prefix/*").sudo(),
            Route::path("revoke-prefix").sudo(),
            Route::path("revoke-prefix/*").sudo(),
            Route::path("leases/revoke-force").sudo(),
            Route::path("leases/revoke-force/*").sudo(),
            Route::path("revoke-force").sudo(),
            Route::path("revoke-force/*").sudo(),
            Route::path("leases/failing").sudo(),
            // Just-in-time approvals (approvals/).
            Route::path("control-group/config").sudo(),
            Route::path("control-group/rules").sudo(),
            Route::path("control-group/rules/*").sudo(),
            Route::path("control-group/request"),
            Route::path("control-group/request/:id"),
            Route::path("control-group/request/:id/:action"),
            Route::path("control-group/authorize"),
            Route::path("control-group/authorize/*"),
        ]
    }
    const CLOSED: [Route; 57] = table(Route::path("metrics"));
    const OPEN: [Route; 57] = table(Route::path("metrics").unauthenticated());
    if open_metrics { &OPEN } else { &CLOSED }
}

#[async_trait]
impl Backend for SysBackend {
    fn routes(&self) -> Routes<'_> {
        let open = self
            .inner
            .upgrade()
            .is_some_and(|i| i.config.unauthenticated_metrics_access);
        Routes::Table(if open { ROUTES_OPEN_METRICS } else { ROUTES })
    }

    async fn handle(&self, req: &BackendRequest<'_>) -> Result<Option<Response>, CoreError> {
        let inner = crate::upgrade(&self.inner)?;
        let op = req.operation;
        let write = matches!(op, Operation::Update | Operation::Create);
        let p = req.dispatch_path();
        match (p, op) {
            ("health", Operation::Read) => Ok(Some(health(&inner, req.data).await?)),
            ("ha-status", Operation::Read) => Ok(Some(ha_status(&inner).await?)),
            ("seal-status", Operation::Read) => Ok(Some(Response::raw(200, seal_status(&inner)))),
            ("init", Operation::Read) => Ok(Some(Response::raw(200, json!({"initialized": true})))),
            ("leader", Operation::Read) => Ok(Some(leader(&inner).await?)),
            ("mounts", Operation::Read) => {
                Ok(Some(Response::data(mount_map(&inner, MountTable::Secret))))
            }
            ("auth", Operation::Read) => {
                Ok(Some(Response::data(mount_map(&inner, MountTable::Auth))))
            }
            ("policy", Operation::Read | Operation::List) | ("policies/acl", Operation::List) => {
                let names = inner.policies.names();
                if p == "policy" {
                    Ok(Some(Response::data(
                        json!({"keys": names, "policies": names}),
                    )))
                } else {
                    Ok(Some(Response::keys(names)))
                }
            }
            ("capabilities-self", _) if write => {
                let c = req.caller.ok_or(CoreError::PermissionDenied)?;
                Ok(Some(capabilities(&c.acl, req.data)?))
            }
            ("capabilities", _) if write => {
                let t = fields::string(req.data, "token")?
                    .ok_or_else(|| CoreError::invalid("missing required field \"token\""))?;
                let (_, e, _) = inner
                    .tokens
                    .lookup(&t)
                    .await?
                    .ok_or_else(|| CoreError::invalid("invalid token"))?;
                Ok(Some(capabilities(
                    &inner.policies.acl(&e.policies),
                    req.data,
                )?))
            }
            ("capabilities-accessor", _) if write => {
                let a = fields::string(req.data, "accessor")?
                    .ok_or_else(|| CoreError::invalid("missing required field \"accessor\""))?;
                let (_, e, _) = inner
                    .tokens
                    .lookup_accessor(&a)
                    .await?
                    .ok_or_else(|| CoreError::invalid("invalid accessor"))?;
                Ok(Some(capabilities(
                    &inner.policies.acl(&e.policies),
                    req.data,
                )?))
            }
            ("metrics", Operation::Read) => {
                Ok(Some(crate::metrics::render(&inner, req.data).await?))
            }
            ("leaks/scan", _) if write => Ok(Some(
                crate::leaks::scan(&inner, req.data, req.caller).await?,
            )),
            ("containment/lock", _) if write => Ok(Some(
                crate::containment::lock(&inner, req.data, req.caller).await?,
            )),
            ("containment/unlock", _) if write => Ok(Some(
                crate::containment::unlock(&inner, req.data, req.caller).await?,
            )),
            ("containment/agents", Operation::List | Operation::Read) => {
                Ok(Some(crate::agents::list(&inner, req.caller).await?))
            }
            ("containment/locks", Operation::List | Operation::Read) => {
                Ok(Some(crate::containment::locks(&inner).await?))
            }
            ("audit", Operation::Read) => {
                let mut m = Map::new();
                for d in inner.audit.list() {
                    m.insert(d.path.clone(), audit_json(&d));
                }
                Ok(Some(Response::data(Value::Object(m))))
            }
            _ => self.handle_param(&inner, req, p).await,
        }
    }
}

impl SysBackend {
    async fn handle_param(
        &self,
        inner: &Arc<Inner>,
        req: &BackendRequest<'_>,
        p: &str,
    ) -> Result<Option<Response>, CoreError> {
        let op = req.operation;
        let write = matches!(op, Operation::Update | Operation::Create);
        if let Some(r) = crate::sys_leases::handle(inner, req, p).await {
            return r;
        }
        if let Some(r) = crate::approvals::handle(inner, req, p).await {
            return r;
        }
        if let Some(c) = match_route("mounts/*", p) {
            let (path, tune) = split_tune(c[0]);
            return mount_op(inner, req, MountTable::Secret, path, tune).await;
        }
        if let Some(c) = match_route("auth/*", p) {
            let (path, tune) = split_tune(c[0]);
            return mount_op(inner, req, MountTable::Auth, path, tune).await;
        }
        if let Some(c) =
            match_route("policy/:name", p).or_else(|| match_route("policies/acl/:name", p))
        {
            let name = crate::policy_store::normalise_name(c[0])?;
            let legacy = p.starts_with("policy/");
            return match op {
                Operation::Read => Ok(inner.policies.get(&name).map(|pol| {
                    if legacy {
                        Response::data(json!({"name": pol.name, "rules": pol.text}))
                    } else {
                        Response::data(json!({"name": pol.name, "policy": pol.text}))
                    }
                })),
                Operation::Delete => {
                    inner.policies.delete(&name).await?;
                    Ok(None)
                }
                _ if write => {
                    let text = match fields::string(req.data, "policy")? {
                        Some(t) => t,
                        None => fields::string(req.data, "rules")?.unwrap_or_default(),
                    };
                    inner.policies.put(&name, &text).await?;
                    Ok(None)
                }
                _ => Err(CoreError::UnsupportedOperation),
            };
        }
        if let Some(c) = match_route("audit/*", p) {
            let path = c[0];
            if path.is_empty() {
                return Err(CoreError::invalid("missing audit device path"));
            }
            return match op {
                Operation::Delete => {
                    audit_log::disable_device(&inner.storage, &inner.audit, path).await?;
                    Ok(None)
                }
                _ if write => {
                    let mut body = req.data.clone();
                    body.insert("path".into(), Value::String(path.to_owned()));
                    let cfg: DeviceConfig =
                        serde_json::from_value(Value::Object(body)).map_err(|e| {
                            CoreError::invalid(format!("invalid audit device configuration: {e}"))
                        })?;
                    audit_log::enable_device(&inner.storage, &inner.audit, &*inner.clock, cfg)
                        .await?;
                    Ok(None)
                }
                _ => Err(CoreError::UnsupportedOperation),
            };
        }
        if let Some(c) = match_route("containment/jobs/:id", p) {
            return match op {
                Operation::Read => crate::containment::job(inner, c[0]).await,
                _ => Err(CoreError::UnsupportedOperation),
            };
        }
        if let Some(c) = match_route("audit-hash/*", p) {
            if !write {
                return Err(CoreError::UnsupportedOperation);
            }
            let input = fields::string(req.data, "input")?
                .ok_or_else(|| CoreError::invalid("missing required field \"input\""))?;
            let path = format!("{}/", c[0].trim_matches('/'));
            return match inner.audit.hash(&path, &input) {
                Some(h) => Ok(Some(Response::data(json!({"hash": h})))),
                None => Err(CoreError::invalid(format!("unknown audit device {path:?}"))),
            };
        }
        if let Some(c) = match_route("internal/ui/mounts/*", p) {
            let caller = req.caller.ok_or(CoreError::PermissionDenied)?;
            let router = inner.router();
            let Some((m, _)) = router.route(c[0]) else {
                return Err(CoreError::PermissionDenied);
            };
            let prefix = m.entry.route_prefix();
            // As Vault: any capability on any rule under the mount (a read-only
            // `secret/data/agent/*` included) shows the token the mount's type, so
            // clients can tell KV v2 from v1.
            if !caller.acl.grants_anything_under(&prefix) {
                return Err(CoreError::PermissionDenied);
            }
            let mut d = mount_json(&m.entry);
            d["path"] = json!(m.entry.path);
            return Ok(Some(Response::data(d)));
        }
        // A path served above, asked with an operation it does not support: 405, as Vault.
        if KNOWN_PATHS.contains(&p) {
            return Err(CoreError::UnsupportedOperation);
        }
        Err(CoreError::UnknownPath(format!("sys/{p}")))
    }
}

/// The fixed paths `handle` serves (for some operation).
const KNOWN_PATHS: &[&str] = &[
    "health",
    "ha-status",
    "metrics",
    "seal-status",
    "init",
    "leader",
    "mounts",
    "auth",
    "policy",
    "policies/acl",
    "capabilities-self",
    "capabilities",
    "capabilities-accessor",
    "audit",
    "containment/lock",
    "containment/unlock",
    "containment/locks",
    "containment/agents",
];

fn split_tune(rest: &str) -> (&str, bool) {
    match rest.trim_end_matches('/').strip_suffix("/tune") {
        Some(p) => (p, true),
        None => (rest.trim_end_matches('/'), false),
    }
}

/// How long `sys/health` waits for the storage to answer.
const HEALTH_STORAGE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);

async fn health(inner: &Inner, q: &Map<String, Value>) -> Result<Response, CoreError> {
    let code = match fields::integer(q, "activecode")? {
        Some(c) if (100..600).contains(&c) => u16::try_from(c).unwrap_or(200),
        Some(_) => return Err(CoreError::invalid("activecode must be an HTTP status code")),
        None => 200,
    };
    // Every server is active (no standbys); one that cannot reach its storage cannot
    // serve, and says so with 503 so a load balancer takes it out.
    let reachable = matches!(
        tokio::time::timeout(HEALTH_STORAGE_TIMEOUT, inner.storage.ping()).await,
        Ok(Ok(()))
    );
    let code = if reachable { code } else { 503 };
    let now = time::OffsetDateTime::from(inner.clock.now());
    Ok(Response::raw(
        code,
        json!({
            "initialized": true,
            "sealed": false,
            "standby": false,
            "performance_standby": false,
            "replication_performance_mode": "disabled",
            "replication_dr_mode": "disabled",
            "server_time_utc": now.unix_timestamp(),
            "version": VERSION,
            "cluster_name": inner.config.cluster_name,
            "cluster_id": inner.cluster_id,
            "storage_type": inner.storage.kind(),
            "storage_reachable": reachable,
        }),
    ))
}

/// The background duties every server runs, each split between the servers by claims
/// in the shared storage (so each item is done by one server).
const DUTIES: &[(&str, &str)] = &[
    (
        "lease_expiry",
        "expired leases revoked; each due lease claimed by one server (FOR UPDATE SKIP LOCKED, 30 s claim)",
    ),
    (
        "lease_revocation_retries",
        "failed revocations retried with backoff; claimed like expiry",
    ),
    (
        "dead_server_recovery",
        "pending issuances of a server silent for 5 s marked for revocation",
    ),
    (
        "token_expiry",
        "expired tokens deleted; each deletion reported by the one server whose DELETE took the row",
    ),
    (
        "jit_sweep",
        "closed and expired access requests swept; atomic per request",
    ),
];

/// `GET sys/leader`, Vault's shape. Every server sharing a storage is active (no
/// forwarding, no standby): each answers `is_self: true` with its own address.
async fn leader(inner: &Inner) -> Result<Response, CoreError> {
    let shared = inner.storage.shared();
    let address = if shared {
        inner
            .storage
            .servers()
            .await?
            .into_iter()
            .find(|s| s.this_server)
            .map(|s| s.address)
            .unwrap_or_default()
    } else {
        String::new()
    };
    Ok(Response::raw(
        200,
        json!({
            "ha_enabled": shared,
            "is_self": true,
            "active_time": "0001-01-01T00:00:00Z",
            "leader_address": address,
            "leader_cluster_address": "",
            "performance_standby": false,
            "performance_standby_last_remote_wal": 0,
        }),
    ))
}

/// `GET sys/ha-status`: the servers sharing the storage (name, address, last
/// heartbeat, version) and which run each background duty.
async fn ha_status(inner: &Inner) -> Result<Response, CoreError> {
    let servers = inner.storage.servers().await?;
    let shared = !servers.is_empty();
    let alive: Vec<&str> = servers
        .iter()
        .filter(|s| s.alive)
        .map(|s| s.name.as_str())
        .collect();
    let nodes: Vec<Value> = servers
        .iter()
        .map(|s| {
            json!({
                "id": s.id,
                "hostname": s.name,
                "api_address": s.address,
                "version": s.version,
                "last_echo": leash_types::rfc3339(s.last_heartbeat),
                "last_heartbeat_unix": s.last_heartbeat,
                "alive": s.alive,
                "active_node": true,
                "this_node": s.this_server,
            })
        })
        .collect();
    let duties: Vec<Value> = DUTIES
        .iter()
        .map(|(name, how)| {
            json!({
                "name": name,
                "servers": if shared { json!(alive) } else { json!(["this server"]) },
                "how": how,
            })
        })
        .collect();
    Ok(Response::data(json!({
        "ha_enabled": shared,
        "cluster_name": inner.config.cluster_name,
        "storage_type": inner.storage.kind(),
        "nodes": nodes,
        "duties": duties,
    })))
}

fn seal_status(inner: &Inner) -> Value {
    json!({
        "type": "shamir",
        "initialized": true,
        "sealed": false,
        "t": 1,
        "n": 1,
        "progress": 0,
        "nonce": "",
        "version": VERSION,
        "build_date": "",
        "migration": false,
        "cluster_name": inner.config.cluster_name,
        "cluster_id": inner.cluster_id,
        "recovery_seal": false,
        "storage_type": inner.storage.kind(),
    })
}

/// One entry of `sys/mounts` or `sys/auth`, with every field Vault documents there
/// (vaultrs and node-vault deserialize them): auth entries' `config` carries
/// `token_type`, and a secrets mount's `options` is always an object.
fn mount_json(m: &MountEntry) -> Value {
    let auth = m.table == MountTable::Auth;
    let mut config = json!({
        "default_lease_ttl": m.config.default_lease_ttl,
        "max_lease_ttl": m.config.max_lease_ttl,
        "force_no_cache": false,
    });
    if auth {
        config["token_type"] = json!("default-service");
    }
    let options = if m.options.is_empty() && auth {
        Value::Null
    } else {
        json!(m.options)
    };
    json!({
        "type": m.kind,
        "description": m.description,
        "accessor": m.accessor,
        "uuid": m.uuid,
        "config": config,
        "options": options,
        "deprecation_status": "supported",
        "local": m.local,
        "seal_wrap": false,
        "external_entropy_access": false,
        "plugin_version": "",
        "running_plugin_version": format!("v{VERSION}+builtin.leash"),
        "running_sha256": "",
    })
}

fn mount_map(inner: &Inner, table: MountTable) -> Value {
    let mut m = Map::new();
    for e in inner.router().entries(table) {
        m.insert(e.path.clone(), mount_json(&e));
    }
    Value::Object(m)
}

fn audit_json(d: &DeviceConfig) -> Value {
    json!({"type": d.kind, "description": d.description, "options": d.options, "local": d.local, "path": d.path})
}

fn capabilities(acl: &leash_policy::Acl, data: &Map<String, Value>) -> Result<Response, CoreError> {
    let mut paths = fields::string_list(data, "paths")?.unwrap_or_default();
    if let Some(p) = fields::string(data, "path")? {
        paths.push(p);
    }
    if paths.is_empty() {
        return Err(CoreError::invalid("missing required field \"paths\""));
    }
    let mut out = Map::new();
    let mut all: Vec<&'static str> = Vec::new();
    for path in &paths {
        let clean = path.trim_start_matches('/');
        let names = acl.capability_names(clean);
        for n in &names {
            if !all.contains(n) {
                all.push(n);
            }
        }
        out.insert(path.clone(), json!(names));
    }
    if paths.len() == 1 {
        out.insert("capabilities".into(), json!(all));
    }
    Ok(Response::data(Value::Object(out)))
}

/// Reserved mount paths nobody may take.
const RESERVED: &[&str] = &["sys/", "auth/", "cubbyhole/", "identity/", "v1/"];

fn validate_mount_path(path: &str) -> Result<String, CoreError> {
    let p = format!("{}/", path.trim_matches('/'));
    if p == "/" {
        return Err(CoreError::invalid("missing mount path"));
    }
    if p.len() > 128 || p.split('/').any(|s| s == "." || s == "..") || p.contains("//") {
        return Err(CoreError::invalid(format!("invalid mount path {path:?}")));
    }
    if !p
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'/' | b'-' | b'_' | b'.'))
    {
        return Err(CoreError::invalid(format!(
            "invalid mount path {path:?}: use letters, digits, '/', '-', '_', '.'"
        )));
    }
    Ok(p)
}

async fn mount_op(
    inner: &Arc<Inner>,
    req: &BackendRequest<'_>,
    table: MountTable,
    path: &str,
    tune: bool,
) -> Result<Option<Response>, CoreError> {
    let path = validate_mount_path(path)?;
    let op = req.operation;
    let write = matches!(op, Operation::Update | Operation::Create);
    let router = inner.router();
    let existing = router.get(table, &path).map(|m| Arc::clone(&m.entry));
    if tune {
        let Some(entry) = existing else {
            return Err(CoreError::invalid(format!("no mount at {path}")));
        };
        return match op {
            Operation::Read => Ok(Some(Response::data(json!({
                "default_lease_ttl": effective(entry.config.default_lease_ttl, inner.config.token_limits.default_ttl.as_secs()),
                "max_lease_ttl": effective(entry.config.max_lease_ttl, inner.config.token_limits.max_ttl.as_secs()),
                "description": entry.description,
                "force_no_cache": false,
                "options": entry.options,
            })))),
            _ if write => {
                let mut new = (*entry).clone();
                apply_config(&mut new, req.data)?;
                if let Some(d) = fields::string(req.data, "description")? {
                    new.description = d;
                }
                change_mounts(inner, move |t| {
                    for m in &mut t.mounts {
                        if m.table == table && m.path == path {
                            *m = new.clone();
                        }
                    }
                    Ok(())
                })
                .await?;
                Ok(None)
            }
            _ => Err(CoreError::UnsupportedOperation),
        };
    }
    match op {
        Operation::Read => Ok(existing.map(|e| Response::data(mount_json(&e)))),
        Operation::Delete => {
            let Some(entry) = existing else {
                return Ok(None);
            };
            if matches!(
                entry.mount_kind(),
                Some(MountKind::System | MountKind::Token)
            ) {
                return Err(CoreError::invalid(format!(
                    "cannot unmount {:?}",
                    entry.route_prefix()
                )));
            }
            // As in Vault, disabling an engine revokes what it issued first; a mount
            // whose credentials cannot all be revoked stays, so none is orphaned.
            let prefix = entry.route_prefix();
            let ids = inner.storage.lease_ids_with_prefix(&prefix).await?;
            if !ids.is_empty() {
                let outcome = crate::leases::revoke_ids(inner, &ids).await?;
                if let Some((id, err)) = outcome.failed.first() {
                    return Err(CoreError::invalid(format!(
                        "cannot disable {prefix}: {} lease(s) could not be revoked (first: {id}: {err}); they will be retried. Try again later, or drop them with sys/leases/revoke-force/{prefix}",
                        outcome.failed.len()
                    )));
                }
            }
            let gone = path.clone();
            change_mounts(inner, move |t| {
                t.mounts.retain(|m| !(m.table == table && m.path == gone));
                Ok(())
            })
            .await?;
            inner.storage.delete_prefix(&entry.storage_ns(), "").await?;
            Ok(None)
        }
        _ if write => {
            let mut kind = fields::string(req.data, "type")?.unwrap_or_default();
            if kind.is_empty() {
                return Err(CoreError::invalid("missing required field \"type\""));
            }
            let mut options: BTreeMap<String, String> =
                fields::string_map(req.data, "options")?.unwrap_or_default();
            if kind == "kv-v2" {
                kind = "kv".into();
                options.insert("version".into(), "2".into());
            }
            if kind == "kv" {
                match options.get("version").map(String::as_str) {
                    None | Some("1") | Some("2") | Some("") => {}
                    Some(v) => {
                        return Err(CoreError::invalid(format!(
                            "unsupported kv version {v:?}: use 1 or 2"
                        )));
                    }
                }
            }
            if table == MountTable::Secret && RESERVED.iter().any(|r| path.starts_with(r)) {
                return Err(CoreError::invalid(format!(
                    "cannot mount at reserved path {path:?}"
                )));
            }
            if table == MountTable::Auth && kind == "token" {
                return Err(CoreError::invalid(
                    "token credential backends cannot be instantiated",
                ));
            }
            // Singletons (Vault's `singletonMounts`): only the built-in `sys/` exists.
            if kind == "system" {
                return Err(CoreError::invalid(format!(
                    "mount type of {kind:?} is not mountable"
                )));
            }
            let desc = fields::string(req.data, "description")?.unwrap_or_default();
            let mut entry = new_mount_entry(&path, &kind, table, &desc, options);
            entry.local = fields::boolean(req.data, "local")?.unwrap_or(false);
            if let Some(Value::Object(cfg)) = req.data.get("config") {
                apply_config(&mut entry, cfg)?;
            }
            // Build the backend first so an unknown type is refused before anything is stored.
            let core = Core(Arc::clone(inner));
            core.backend_for(&entry)?;
            change_mounts(inner, move |t| {
                let prefix = entry.route_prefix();
                if let Some(clash) = t.mounts.iter().find(|m| {
                    let mp = m.route_prefix();
                    mp.starts_with(&prefix) || prefix.starts_with(&mp)
                }) {
                    return Err(CoreError::invalid(format!(
                        "path is already in use at {}",
                        clash.route_prefix()
                    )));
                }
                t.mounts.push(entry);
                Ok(())
            })
            .await?;
            Ok(None)
        }
        _ => Err(CoreError::UnsupportedOperation),
    }
}

fn effective(v: u64, default: u64) -> u64 {
    if v == 0 { default } else { v }
}

fn apply_config(entry: &mut MountEntry, cfg: &Map<String, Value>) -> Result<(), CoreError> {
    if let Some(d) = fields::duration(cfg, "default_lease_ttl")? {
        entry.config.default_lease_ttl = d.as_secs();
    }
    if let Some(d) = fields::duration(cfg, "max_lease_ttl")? {
        entry.config.max_lease_ttl = d.as_secs();
    }
    let (d, m) = (entry.config.default_lease_ttl, entry.config.max_lease_ttl);
    if d > 0 && m > 0 && d > m {
        return Err(CoreError::invalid(
            "default_lease_ttl cannot be greater than max_lease_ttl",
        ));
    }
    Ok(())
}

/// Applies a change to the persisted mount tables and swaps in a new router.
///
/// The change is one atomic read-modify-write of the stored table (`Storage::modify`,
/// a row lock on PostgreSQL): two servers mounting at the same time both land, and a
/// path clash is checked against the table as it is in storage, not as this server last
/// saw it. `mount_lock` only orders this server's own changes.
async fn change_mounts(
    inner: &Arc<Inner>,
    f: impl FnOnce(&mut MountTables) -> Result<(), CoreError> + Send + 'static,
) -> Result<(), CoreError> {
    let _guard = inner.mount_lock.lock().await;
    let core = Core(Arc::clone(inner));
    let validator = core.clone();
    let written: Arc<std::sync::Mutex<Option<MountTables>>> = Arc::default();
    let slot = Arc::clone(&written);
    let res = inner
        .storage
        .modify(
            SYS_NS,
            "mounts",
            Box::new(move |cur| {
                let mut tables: MountTables = match cur {
                    Some(v) => serde_json::from_slice(v).map_err(|e| {
                        CoreError::internal(format!("mount table is unreadable: {e}"))
                    })?,
                    None => MountTables::default(),
                };
                f(&mut tables)?;
                // Validate every backend before persisting.
                for m in &tables.mounts {
                    validator.backend_for(m)?;
                }
                let bytes =
                    serde_json::to_vec(&tables).map_err(|e| CoreError::internal(e.to_string()))?;
                if let Ok(mut s) = slot.lock() {
                    *s = Some(tables);
                }
                Ok(Some(bytes))
            }),
        )
        .await;
    match res {
        Ok(_) => {}
        Err(leash_storage::StorageError::Rejected(r)) => {
            return Err(match r.downcast::<CoreError>() {
                Ok(e) => *e,
                Err(other) => CoreError::internal(other.to_string()),
            });
        }
        Err(e) => return Err(e.into()),
    }
    let tables = written
        .lock()
        .ok()
        .and_then(|mut s| s.take())
        .ok_or_else(|| CoreError::internal("mount table change produced nothing"))?;
    core.install_router(&tables.mounts)
}

#[cfg(test)]
mod route_tests {
    use leash_backend::Routes;

    use super::{ROUTES, ROUTES_OPEN_METRICS};

    #[test]
    fn root_protected_paths_are_sudo_in_every_spelling() {
        let t = Routes::Table(ROUTES);
        for p in [
            "capabilities",
            "capabilities-accessor",
            "audit",
            "audit/",
            "audit/file",
            "audit-hash/file",
            "auth/userpass",
            "auth/userpass/tune",
            "leaks/scan",
            "containment/lock",
            "containment/unlock",
            "containment/locks",
            "containment/jobs/x",
            "leases/lookup/",
            "leases/lookup/database/creds/",
            "leases/revoke-prefix/database",
            "leases/revoke-force/database",
            "revoke-prefix/x",
            "revoke-force/x",
            "leases/failing",
            "leases/failing/",
            "control-group/config",
            "control-group/rules",
            "control-group/rules/",
            "control-group/rules/r1",
        ] {
            assert!(t.is_sudo(p), "{p} must need sudo");
        }
        for p in [
            "health",
            "policy/x",
            "leases/lookup",
            "leases/renew",
            "capabilities-self",
            "auth",
            "mounts/secret",
        ] {
            assert!(!t.is_sudo(p), "{p} must not need sudo");
        }
    }

    #[test]
    fn only_health_style_paths_are_unauthenticated() {
        let t = Routes::Table(ROUTES);
        assert!(t.is_unauthenticated("health"));
        assert!(t.is_unauthenticated("seal-status"));
        assert!(!t.is_unauthenticated("metrics"));
        assert!(Routes::Table(ROUTES_OPEN_METRICS).is_unauthenticated("metrics"));
        assert!(!t.is_unauthenticated("health/x"));
        assert!(!t.is_unauthenticated("policy/x"));
    }
}
