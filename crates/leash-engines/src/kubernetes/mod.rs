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
mod names;

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

    fn http(&self, ca: Option<String>) -> Result<reqwest::Client, CoreError> {
        if let Ok(guard) = self.client.lock()
            && let Some((have, c)) = guard.as_ref()
            && *have == ca
        {
            return Ok(c.clone());
        }
        let c = https::client(ca.as_deref(), api::TIMEOUT).map_err(|e| upstream(&e))?;
        if let Ok(mut guard) = self.client.lock() {
            *guard = Some((ca, c.clone()));
        }
        Ok(c)
    }

    /// The API server as configured now (the local CA and JWT filling gaps unless
    /// `disable_local_ca_jwt`).
    async fn cluster(&self) -> Result<Cluster, CoreError> {
        let cfg: KubeConfig = self.load("config").await?.ok_or_else(|| {
            CoreError::Upstream("kubernetes: the engine is not configured (config)".into())
        })?;
        let ca = if !cfg.kubernetes_ca_cert.trim().is_empty() {
            Some(cfg.kubernetes_ca_cert.clone())
        } else if cfg.disable_local_ca_jwt {
            None
        } else {
            read_local("ca.crt").await
        };
        let jwt = match &cfg.service_account_jwt {
            Some(j) => SecretString::from(j.expose_secret().to_owned()),
            None if !cfg.disable_local_ca_jwt => match read_local("token").await {
                Some(t) => SecretString::from(t),
                None => {
                    return Err(CoreError::Upstream(
                        "kubernetes: no service_account_jwt configured and no local service-account token".into(),
                    ));
                }
            },
            None => {
                return Err(CoreError::Upstream(
                    "kubernetes: no service_account_jwt configured".into(),
                ));
            }
        };
        Ok(Cluster {
            host: cfg.kubernetes_host.clone(),
            jwt,
            client: self.http(ca)?,
        })
    }

    async fn write_config(&self, data: &Map<String, Value>) -> Result<Option<Response>, CoreError> {
        let existing: Option<KubeConfig> = self.load("config").await?;
        let host = match (fields::string(data, "kubernetes_host")?, &existing) {
            (Some(h), _) if !h.trim().is_empty() => normalise_host(&h)?,
            (_, Some(e)) => e.kubernetes_host.clone(),
            _ => {
                return Err(CoreError::invalid(
                    "missing required field \"kubernetes_host\"",
                ));
            }
        };
        let ca = match (fields::string(data, "kubernetes_ca_cert")?, &existing) {
            (Some(c), _) => c,
            (None, Some(e)) => e.kubernetes_ca_cert.clone(),
            (None, None) => String::new(),
        };
        if !ca.trim().is_empty() {
            https::check_ca(&ca)
                .map_err(|e| CoreError::invalid(format!("invalid kubernetes_ca_cert: {e}")))?;
        }
        let disable_local_ca_jwt = match fields::boolean(data, "disable_local_ca_jwt")? {
            Some(b) => b,
            None => existing.as_ref().is_some_and(|e| e.disable_local_ca_jwt),
        };
        let jwt = match (fields::string(data, "service_account_jwt")?, &existing) {
            (Some(j), _) if !j.trim().is_empty() => Some(SecretString::from(j.trim().to_owned())),
            (Some(_), _) => None,
            (None, Some(e)) => {
                // The stored JWT only goes to the host it was given for.
                if e.kubernetes_host != host && e.service_account_jwt.is_some() {
                    return Err(CoreError::invalid(
                        "missing required field \"service_account_jwt\": it must be given again when kubernetes_host changes",
                    ));
                }
                e.service_account_jwt
                    .as_ref()
                    .map(|j| SecretString::from(j.expose_secret().to_owned()))
            }
            (None, None) => None,
        };
        let cfg = KubeConfig {
            kubernetes_host: host,
            kubernetes_ca_cert: ca,
            service_account_jwt: jwt,
            disable_local_ca_jwt,
        };
        let mut warnings: Vec<String> = fields::ignored_warning(data, CONFIG_FIELDS)
            .into_iter()
            .collect();
        if cfg.service_account_jwt.is_none() && cfg.disable_local_ca_jwt {
            warnings.push("no service_account_jwt and disable_local_ca_jwt is set: issuing credentials will fail until a JWT is configured".into());
        }
        if cfg.kubernetes_host.starts_with("http://") {
            warnings.push("kubernetes_host is plain http: the service-account JWT and the tokens travel unencrypted".into());
        }
        self.save("config", &cfg).await?;
        Ok(Response::warnings_only(warnings))
    }

    async fn write_role(
        &self,
        name: &str,
        data: &Map<String, Value>,
    ) -> Result<Option<Response>, CoreError> {
        let key = format!("role/{name}");
        let existing: Option<KubeRole> = self.load(&key).await?;
        let str_or = |field: &str, old: Option<&String>| -> Result<String, CoreError> {
            Ok(match fields::string(data, field)? {
                Some(s) => s.trim().to_owned(),
                None => old.cloned().unwrap_or_default(),
            })
        };
        let allowed = match fields::string_list(data, "allowed_kubernetes_namespaces")? {
            Some(l) => l,
            None => existing
                .as_ref()
                .map(|e| e.allowed_kubernetes_namespaces.clone())
                .unwrap_or_default(),
        };
        if allowed.is_empty() {
            return Err(CoreError::invalid(
                "missing required field \"allowed_kubernetes_namespaces\" (a list of namespaces, or [\"*\"])",
            ));
        }
        for (i, n) in allowed.iter().enumerate() {
            if n != "*" && !is_k8s_name(n, 63) {
                return Err(CoreError::invalid(format!(
                    "allowed_kubernetes_namespaces[{i}] is not a namespace name (or \"*\")"
                )));
            }
        }
        if data.contains_key("allowed_kubernetes_namespace_selector") {
            return Err(CoreError::invalid(
                "allowed_kubernetes_namespace_selector is not supported: list the namespaces in allowed_kubernetes_namespaces",
            ));
        }
        let sa = str_or(
            "service_account_name",
            existing.as_ref().map(|e| &e.service_account_name),
        )?;
        let kr = str_or(
            "kubernetes_role_name",
            existing.as_ref().map(|e| &e.kubernetes_role_name),
        )?;
        let rules = str_or(
            "generated_role_rules",
            existing.as_ref().map(|e| &e.generated_role_rules),
        )?;
        let set = [!sa.is_empty(), !kr.is_empty(), !rules.is_empty()]
            .iter()
            .filter(|b| **b)
            .count();
        if set != 1 {
            return Err(CoreError::invalid(
                "give exactly one of \"service_account_name\", \"kubernetes_role_name\" or \"generated_role_rules\"",
            ));
        }
        if !sa.is_empty() && !is_k8s_name(&sa, 253) {
            return Err(CoreError::invalid(
                "service_account_name is not a Kubernetes name",
            ));
        }
        if !kr.is_empty() && !is_k8s_name(&kr, 253) {
            return Err(CoreError::invalid(
                "kubernetes_role_name is not a Kubernetes name",
            ));
        }
        if !rules.is_empty() {
            parse_rules(&rules)?;
        }
        let role_type = match fields::string(data, "kubernetes_role_type")? {
            Some(t) if t.eq_ignore_ascii_case("role") || t.is_empty() => "Role".to_owned(),
            Some(t) if t.eq_ignore_ascii_case("clusterrole") => "ClusterRole".to_owned(),
            Some(_) => {
                return Err(CoreError::invalid(
                    "kubernetes_role_type must be \"Role\" or \"ClusterRole\"",
                ));
            }
            None => existing
                .as_ref()
                .map_or_else(|| "Role".to_owned(), |e| e.kubernetes_role_type.clone()),
        };
        let default_ttl = match fields::duration(data, "token_default_ttl")? {
            Some(d) => d.as_secs(),
            None => existing.as_ref().map_or(0, |e| e.token_default_ttl),
        };
        let max_ttl = match fields::duration(data, "token_max_ttl")? {
            Some(d) => d.as_secs(),
            None => existing.as_ref().map_or(0, |e| e.token_max_ttl),
        };
        if max_ttl > 0 && default_ttl > max_ttl {
            return Err(CoreError::invalid(format!(
                "token_default_ttl ({default_ttl}s) cannot be greater than token_max_ttl ({max_ttl}s)"
            )));
        }
        let audiences = match fields::string_list(data, "token_default_audiences")? {
            Some(l) => l,
            None => existing
                .as_ref()
                .map(|e| e.token_default_audiences.clone())
                .unwrap_or_default(),
        };
        let name_template = str_or("name_template", existing.as_ref().map(|e| &e.name_template))?;
        if !name_template.is_empty() {
            names::render(
                &name_template,
                &names::Vars {
                    display_name: "check",
                    role_name: name,
                    unix_time: 0,
                },
            )?;
        }
        let extra_labels = match fields::string_map(data, "extra_labels")? {
            Some(m) => m,
            None => existing
                .as_ref()
                .map(|e| e.extra_labels.clone())
                .unwrap_or_default(),
        };
        let extra_annotations = match fields::string_map(data, "extra_annotations")? {
            Some(m) => m,
            None => existing
                .as_ref()
                .map(|e| e.extra_annotations.clone())
                .unwrap_or_default(),
        };
        let role = KubeRole {
            allowed_kubernetes_namespaces: allowed,
            service_account_name: sa,
            kubernetes_role_name: kr,
            kubernetes_role_type: role_type,
            generated_role_rules: rules,
            token_default_ttl: default_ttl,
            token_max_ttl: max_ttl,
            token_default_audiences: audiences,
            name_template,
            extra_labels,
            extra_annotations,
        };
        self.save(&key, &role).await?;
        let mut warnings: Vec<String> = fields::ignored_warning(data, ROLE_FIELDS)
            .into_iter()
            .collect();
        if !role.service_account_name.is_empty() {
            warnings.push("tokens of an existing service account cannot be revoked before they expire: revoking the lease ends leash's record, not the token; prefer kubernetes_role_name or generated_role_rules, whose service account is deleted at revocation".into());
        }
        Ok(Response::warnings_only(warnings))
    }

    fn role_json(r: &KubeRole) -> Value {
        json!({
            "allowed_kubernetes_namespaces": r.allowed_kubernetes_namespaces,
            "allowed_kubernetes_namespace_selector": "",
            "service_account_name": r.service_account_name,
            "kubernetes_role_name": r.kubernetes_role_name,
            "kubernetes_role_type": r.kubernetes_role_type,
            "generated_role_rules": r.generated_role_rules,
            "token_default_ttl": r.token_default_ttl,
            "token_max_ttl": r.token_max_ttl,
            "token_default_audiences": r.token_default_audiences,
            "name_template": r.name_template,
            "extra_labels": r.extra_labels,
            "extra_annotations": r.extra_annotations,
        })
    }

    async fn issue(
        &self,
        req: &BackendRequest<'_>,
        role_name: &str,
    ) -> Result<Option<Response>, CoreError> {
        let role: KubeRole = self
            .load(&format!("role/{role_name}"))
            .await?
            .ok_or_else(|| CoreError::invalid(format!("unknown role: {role_name}")))?;
        let ns = fields::string(req.data, "kubernetes_namespace")?
            .map(|s| s.trim().to_owned())
            .filter(|s| !s.is_empty())
            .ok_or_else(|| CoreError::invalid("missing required field \"kubernetes_namespace\""))?;
        if !is_k8s_name(&ns, 63) {
            return Err(CoreError::invalid(
                "kubernetes_namespace is not a namespace name",
            ));
        }
        if !role
            .allowed_kubernetes_namespaces
            .iter()
            .any(|a| a == "*" || *a == ns)
        {
            return Err(CoreError::invalid(format!(
                "kubernetes_namespace {ns:?} is not in the role's allowed_kubernetes_namespaces"
            )));
        }
        let cluster_binding = fields::boolean(req.data, "cluster_role_binding")?.unwrap_or(false);
        if cluster_binding && role.kubernetes_role_type != "ClusterRole" {
            return Err(CoreError::invalid(
                "cluster_role_binding needs a role whose kubernetes_role_type is \"ClusterRole\"",
            ));
        }
        if cluster_binding && !role.service_account_name.is_empty() {
            return Err(CoreError::invalid(
                "cluster_role_binding applies to roles with kubernetes_role_name or generated_role_rules",
            ));
        }
        let ttl = fields::duration(req.data, "ttl")?.map_or(0, |d| d.as_secs());
        if role.token_max_ttl > 0 && ttl > role.token_max_ttl {
            return Err(CoreError::invalid(format!(
                "ttl ({ttl}s) is greater than the role's token_max_ttl ({}s)",
                role.token_max_ttl
            )));
        }
        let audiences = match fields::string_list(req.data, "audiences")? {
            Some(l) if !l.is_empty() => l,
            _ => role.token_default_audiences.clone(),
        };
        let cluster = self.cluster().await?;

        // What will exist: names first, so the lease can name everything to delete.
        let display = req
            .caller
            .map(|c| c.entry.display_name.as_str())
            .unwrap_or("token");
        let generated = role.service_account_name.is_empty();
        let mut objects: Vec<(Object, Value)> = Vec::new();
        let sa_name = if generated {
            let template = if role.name_template.is_empty() {
                names::DEFAULT_TEMPLATE
            } else {
                &role.name_template
            };
            let name = names::render(
                template,
                &names::Vars {
                    display_name: display,
                    role_name,
                    unix_time: SystemClock.unix(),
                },
            )?;
            if name.is_empty() {
                return Err(CoreError::invalid("name_template renders an empty name"));
            }
            name
        } else {
            role.service_account_name.clone()
        };
        let mut labels: Map<String, Value> = role
            .extra_labels
            .iter()
            .map(|(k, v)| (k.clone(), json!(v)))
            .collect();
        labels.insert("app.kubernetes.io/managed-by".into(), json!("leash"));
        labels.insert(
            "app.kubernetes.io/created-by".into(),
            json!("leash-kubernetes-secrets"),
        );
        let metadata = json!({"labels": labels, "annotations": role.extra_annotations});
        let cluster_role = role.kubernetes_role_type == "ClusterRole";
        if generated {
            let (role_ref_kind, role_ref_name) = if role.generated_role_rules.is_empty() {
                (
                    role.kubernetes_role_type.clone(),
                    role.kubernetes_role_name.clone(),
                )
            } else {
                let rules = parse_rules(&role.generated_role_rules)?;
                let o = api::role((!cluster_role).then_some(ns.as_str()), &sa_name);
                let kind = o.kind.clone();
                objects.push((
                    o,
                    json!({
                        "apiVersion": "rbac.authorization.k8s.io/v1",
                        "kind": kind,
                        "metadata": metadata,
                        "rules": rules,
                    }),
                ));
                (kind, sa_name.clone())
            };
            objects.push((
                api::service_account(&ns, &sa_name),
                json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": metadata}),
            ));
            let b = api::binding((!cluster_binding).then_some(ns.as_str()), &sa_name);
            let kind = b.kind.clone();
            objects.push((
                b,
                json!({
                    "apiVersion": "rbac.authorization.k8s.io/v1",
                    "kind": kind,
                    "metadata": metadata,
                    "roleRef": {
                        "apiGroup": "rbac.authorization.k8s.io",
                        "kind": role_ref_kind,
                        "name": role_ref_name,
                    },
                    "subjects": [{"kind": "ServiceAccount", "name": sa_name, "namespace": ns}],
                }),
            ));
        }
        let internal = LeaseData {
            role: role_name.to_owned(),
            namespace: ns.clone(),
            service_account_name: sa_name.clone(),
            objects: objects.iter().map(|(o, _)| o.clone()).collect(),
            irrevocable: !generated,
        };
        let pending = self
            .leases
            .begin(
                req,
                LeaseRequest {
                    path: format!("creds/{role_name}"),
                    ttl: Duration::from_secs(if ttl > 0 { ttl } else { role.token_default_ttl }),
                    max_ttl: Duration::from_secs(role.token_max_ttl),
                    renewable: false,
                    internal: serde_json::to_value(&internal)
                        .map_err(|e| CoreError::internal(e.to_string()))?,
                    caps: Default::default(),
                },
            )
            .await?;
        let made = async {
            for (o, manifest) in &objects {
                cluster.create(o, manifest.clone()).await?;
            }
            cluster
                .token(
                    &ns,
                    &sa_name,
                    pending.ttl.max(MIN_TOKEN_SECONDS),
                    &audiences,
                )
                .await
        }
        .await;
        let minted = match made {
            Ok(m) => m,
            Err(e) => {
                // Whatever was made is deleted by the worker.
                self.leases.abandon(&pending).await?;
                return Err(upstream(&e));
            }
        };
        if let Err(e) = self.leases.activate(&pending).await {
            self.leases.abandon(&pending).await?;
            return Err(e);
        }
        let mut r = Response::data(json!({
            "service_account_name": sa_name,
            "service_account_namespace": ns,
            "service_account_token": minted.token.expose_secret(),
        }));
        r.secret = Some(LeaseInfo {
            lease_id: pending.id,
            renewable: false,
            lease_duration: pending.ttl,
        });
        if pending.ttl < MIN_TOKEN_SECONDS {
            r = r.with_warning(if generated {
                format!("the token was requested for {MIN_TOKEN_SECONDS}s (the API server's minimum); its service account is deleted when the {}s lease ends, which ends the token", pending.ttl)
            } else {
                format!("the token was requested for {MIN_TOKEN_SECONDS}s (the API server's minimum) and outlives its {}s lease: tokens of an existing service account cannot be revoked", pending.ttl)
            });
        }
        Ok(Some(r))
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
