//! The `kubernetes` secrets engine: Vault's `kubernetes/` paths, handing out
//! service-account tokens under leases.
//!
//! * `config` — how to reach the API server (`kubernetes_host`, `kubernetes_ca_cert`,
//!   `service_account_jwt`, `disable_local_ca_jwt`). Reads never return the JWT.
//! * `roles/:name` — `allowed_kubernetes_namespaces` and exactly one of
//!   `service_account_name` (tokens for an existing service account),
//!   `kubernetes_role_name` (a new service account bound to an existing Role or
//!   ClusterRole) or `generated_role_rules` (a new Role/ClusterRole with those rules, a
//!   service account and the binding); `kubernetes_role_type`, `token_default_ttl`,
//!   `token_max_ttl`, `token_default_audiences`, `name_template`, `extra_labels`,
//!   `extra_annotations`.
//! * `creds/:name` — `kubernetes_namespace`, `ttl`, `audiences`, `cluster_role_binding`:
//!   the lease is persisted (intent first) naming every object the credential will
//!   create; then the objects are created and a TokenRequest asks for a token whose
//!   `expirationSeconds` is the lease's TTL. Revocation deletes the objects (binding,
//!   service account, role), "if they exist", and is retried like every lease.
//!
//! Not here: the API calls themselves ([`api`]) and name templates ([`names`]).
//! A token of an *existing* service account cannot be revoked before it expires
//! (Kubernetes has no such call): its lease says so, and its TTL is all that bounds it.

mod api;
mod issue;
mod names;
mod settings;

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use leash_backend::{
    Backend, BackendRequest, CoreError, LeaseInfo, LeaseRecord, LeaseRegistry, LeaseRequest,
    MountStorage, Response, Route, Routes, fields, match_route,
};
use leash_types::{Clock as _, ExposeSecret, Operation, SecretString, SystemClock};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use std::collections::BTreeMap;

use crate::https::{self, ApiError};
use api::{Cluster, Object};

/// Where a pod finds its own service account's CA and token (used unless
/// `disable_local_ca_jwt`, when leash runs in the cluster it manages).
const LOCAL_DIR: &str = "/var/run/secrets/kubernetes.io/serviceaccount";
/// Largest local CA or token file read.
const MAX_LOCAL_FILE: u64 = 256 * 1024;
/// The shortest `expirationSeconds` the API server accepts (10 minutes).
pub const MIN_TOKEN_SECONDS: u64 = 600;

/// The stored configuration. No `Debug`: it holds the engine's service-account JWT.
#[derive(Clone, Serialize, Deserialize)]
struct KubeConfig {
    kubernetes_host: String,
    #[serde(default)]
    kubernetes_ca_cert: String,
    #[serde(default, with = "leash_types::secret::serde_opt_str")]
    service_account_jwt: Option<SecretString>,
    #[serde(default)]
    disable_local_ca_jwt: bool,
}

const CONFIG_FIELDS: &[&str] = &[
    "kubernetes_host",
    "kubernetes_ca_cert",
    "service_account_jwt",
    "disable_local_ca_jwt",
];

/// A stored role.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct KubeRole {
    allowed_kubernetes_namespaces: Vec<String>,
    #[serde(default)]
    service_account_name: String,
    #[serde(default)]
    kubernetes_role_name: String,
    /// `Role` or `ClusterRole`.
    kubernetes_role_type: String,
    /// The rules as given (JSON: `{"rules": [...]}` or the list itself).
    #[serde(default)]
    generated_role_rules: String,
    token_default_ttl: u64,
    token_max_ttl: u64,
    #[serde(default)]
    token_default_audiences: Vec<String>,
    #[serde(default)]
    name_template: String,
    #[serde(default)]
    extra_labels: BTreeMap<String, String>,
    #[serde(default)]
    extra_annotations: BTreeMap<String, String>,
}

const ROLE_FIELDS: &[&str] = &[
    "allowed_kubernetes_namespaces",
    "allowed_kubernetes_namespace_selector",
    "service_account_name",
    "kubernetes_role_name",
    "kubernetes_role_type",
    "generated_role_rules",
    "token_default_ttl",
    "token_max_ttl",
    "token_default_audiences",
    "name_template",
    "extra_labels",
    "extra_annotations",
];

/// What a lease remembers (no secret): the objects to delete at revocation, in the
/// order they were created.
#[derive(Serialize, Deserialize)]
struct LeaseData {
    role: String,
    namespace: String,
    service_account_name: String,
    #[serde(default)]
    objects: Vec<Object>,
    /// The token cannot be revoked before it expires (an existing service account).
    #[serde(default)]
    irrevocable: bool,
}

/// The engine serving one `kubernetes` mount.
pub struct KubernetesSecrets {
    store: MountStorage,
    leases: Arc<dyn LeaseRegistry>,
    /// The HTTP client for the CA it was built with (rebuilt when it changes).
    client: Mutex<Option<(Option<String>, reqwest::Client)>>,
}

/// A `kubernetes` secrets engine for `mount`.
pub fn new_backend(store: MountStorage, leases: Arc<dyn LeaseRegistry>) -> Arc<dyn Backend> {
    Arc::new(KubernetesSecrets {
        store,
        leases,
        client: Mutex::new(None),
    })
}

fn upstream(e: &ApiError) -> CoreError {
    tracing::warn!(error = %e, "kubernetes API call failed");
    CoreError::Upstream(format!("kubernetes: {e}"))
}

fn check_name(kind: &str, name: &str) -> Result<(), CoreError> {
    if name.is_empty()
        || name.len() > 128
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
    {
        return Err(CoreError::invalid(format!(
            "invalid {kind} name: use 1-128 characters of A-Z, a-z, 0-9, '-', '_', '.'"
        )));
    }
    Ok(())
}

/// Whether `s` is a valid Kubernetes name (DNS-1123 subdomain; for namespaces a label).
fn is_k8s_name(s: &str, max: usize) -> bool {
    !s.is_empty()
        && s.len() <= max
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
        && s.bytes().next().is_some_and(|b| b.is_ascii_alphanumeric())
        && s.bytes().last().is_some_and(|b| b.is_ascii_alphanumeric())
}

async fn read_local(name: &str) -> Option<String> {
    let path = Path::new(LOCAL_DIR).join(name);
    let meta = tokio::fs::metadata(&path).await.ok()?;
    if !meta.is_file() || meta.len() > MAX_LOCAL_FILE {
        return None;
    }
    tokio::fs::read_to_string(&path)
        .await
        .ok()
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
}

/// `https://` + host when no scheme is given; no credentials, query or fragment.
fn normalise_host(raw: &str) -> Result<String, CoreError> {
    let raw = raw.trim();
    let with_scheme = if raw.contains("://") {
        raw.to_owned()
    } else {
        format!("https://{raw}")
    };
    let url = reqwest::Url::parse(&with_scheme)
        .map_err(|e| CoreError::invalid(format!("invalid kubernetes_host: {e}")))?;
    if !matches!(url.scheme(), "https" | "http") || url.host_str().is_none() {
        return Err(CoreError::invalid(
            "invalid kubernetes_host: expected a host, host:port, or an http(s) URL",
        ));
    }
    if !url.username().is_empty()
        || url.password().is_some()
        || url.query().is_some()
        || url.fragment().is_some()
    {
        return Err(CoreError::invalid(
            "invalid kubernetes_host: credentials, query or fragment are not allowed",
        ));
    }
    Ok(url.as_str().trim_end_matches('/').to_owned())
}

/// The rules of `generated_role_rules`: JSON, `{"rules": [...]}` or the list itself,
/// each rule an object with a non-empty `verbs` list.
fn parse_rules(text: &str) -> Result<Value, CoreError> {
    let bad = |why: &str| CoreError::invalid(format!("generated_role_rules: {why}"));
    let v: Value = serde_json::from_str(text.trim())
        .map_err(|_| bad("expected JSON: {\"rules\": [{\"apiGroups\": [\"\"], \"resources\": [\"pods\"], \"verbs\": [\"get\"]}]}"))?;
    let rules = match v {
        Value::Object(mut o) => o.remove("rules").unwrap_or(Value::Null),
        other => other,
    };
    let Value::Array(list) = &rules else {
        return Err(bad("expected a \"rules\" list"));
    };
    if list.is_empty() {
        return Err(bad("the \"rules\" list is empty"));
    }
    for (i, r) in list.iter().enumerate() {
        let verbs = r.get("verbs").and_then(Value::as_array);
        if !verbs.is_some_and(|v| !v.is_empty() && v.iter().all(Value::is_string)) {
            return Err(bad(&format!("rules[{i}] needs a non-empty \"verbs\" list")));
        }
    }
    Ok(rules)
}

impl KubernetesSecrets {
    async fn load<T: DeserializeOwned>(&self, key: &str) -> Result<Option<T>, CoreError> {
        self.store.load_json(key).await
    }

    async fn save<T: Serialize>(&self, key: &str, v: &T) -> Result<(), CoreError> {
        self.store.save_json(key, v).await
    }
}

#[async_trait]
impl Backend for KubernetesSecrets {
    async fn exists(&self, req: &BackendRequest<'_>) -> Result<Option<bool>, CoreError> {
        let key = if req.path == "config" {
            "config".to_owned()
        } else if let Some(c) = match_route("roles/:name", req.path) {
            format!("role/{}", c[0])
        } else {
            return Ok(None);
        };
        Ok(Some(self.store.get(&key).await?.is_some()))
    }

    fn routes(&self) -> Routes<'_> {
        const ROUTES: &[Route] = &[
            Route::path("config"),
            Route::path("roles"),
            Route::path("roles/:name"),
            Route::path("creds/:name"),
        ];
        Routes::Table(ROUTES)
    }

    async fn handle(&self, req: &BackendRequest<'_>) -> Result<Option<Response>, CoreError> {
        let op = req.operation;
        let write = matches!(op, Operation::Create | Operation::Update);
        let path = req.dispatch_path();
        if path == "config" {
            return match op {
                Operation::Read => Ok(self.load::<KubeConfig>("config").await?.map(|c| {
                    Response::data(json!({
                        "kubernetes_host": c.kubernetes_host,
                        "kubernetes_ca_cert": c.kubernetes_ca_cert,
                        "disable_local_ca_jwt": c.disable_local_ca_jwt,
                        "service_account_jwt_set": c.service_account_jwt.is_some(),
                    }))
                })),
                Operation::Delete => {
                    self.store.delete("config").await?;
                    Ok(None)
                }
                _ if write => self.write_config(req.data).await,
                _ => Err(CoreError::UnsupportedOperation),
            };
        }
        if path == "roles" {
            return match op {
                Operation::List | Operation::Read => {
                    let keys: Vec<String> = self
                        .store
                        .list("role/")
                        .await?
                        .into_iter()
                        .map(|k| k["role/".len()..].to_owned())
                        .collect();
                    Ok((!keys.is_empty()).then(|| Response::keys(keys)))
                }
                _ => Err(CoreError::UnsupportedOperation),
            };
        }
        if let Some(c) = match_route("roles/:name", path) {
            let name = c[0];
            check_name("role", name)?;
            return match op {
                Operation::Read => Ok(self
                    .load::<KubeRole>(&format!("role/{name}"))
                    .await?
                    .map(|r| Response::data(Self::role_json(&r)))),
                Operation::Delete => {
                    self.store.delete(&format!("role/{name}")).await?;
                    Ok(None)
                }
                _ if write => self.write_role(name, req.data).await,
                _ => Err(CoreError::UnsupportedOperation),
            };
        }
        if let Some(c) = match_route("creds/:name", path) {
            check_name("role", c[0])?;
            return match op {
                Operation::Update | Operation::Create => self.issue(req, c[0]).await,
                _ => Err(CoreError::UnsupportedOperation),
            };
        }
        Err(CoreError::UnknownPath(format!(
            "{}{}",
            req.mount.route_prefix(),
            path
        )))
    }

    fn lease_role<'p>(&self, path: &'p str) -> &'p str {
        path.strip_prefix("creds/")
            .and_then(|r| r.split('/').next())
            .unwrap_or("")
    }

    async fn revoke_leases(&self, leases: &[LeaseRecord]) -> Vec<Result<(), CoreError>> {
        let datas: Vec<Result<LeaseData, CoreError>> = leases
            .iter()
            .map(|l| {
                serde_json::from_value::<LeaseData>(l.internal.clone())
                    .map_err(|e| CoreError::internal(format!("lease data is unreadable: {e}")))
            })
            .collect();
        let needs_cluster = datas
            .iter()
            .any(|d| d.as_ref().is_ok_and(|d| !d.objects.is_empty()));
        let cluster = if needs_cluster {
            Some(self.cluster().await)
        } else {
            None
        };
        let mut out = Vec::with_capacity(leases.len());
        for d in datas {
            let d = match d {
                Ok(d) => d,
                Err(e) => {
                    out.push(Err(e));
                    continue;
                }
            };
            if d.objects.is_empty() {
                out.push(Ok(()));
                continue;
            }
            let c = match &cluster {
                Some(Ok(c)) => c,
                Some(Err(e)) => {
                    out.push(Err(CoreError::Upstream(e.to_string())));
                    continue;
                }
                None => {
                    out.push(Err(CoreError::internal("no cluster")));
                    continue;
                }
            };
            // The binding first (permissions end at once), then the account, then the
            // role.
            let mut result = Ok(());
            for o in d.objects.iter().rev() {
                if let Err(e) = c.delete(o).await {
                    result = Err(upstream(&e));
                    break;
                }
            }
            out.push(result);
        }
        out
    }
}
