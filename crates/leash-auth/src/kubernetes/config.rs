//! `auth/kubernetes/config`: how to reach the cluster (`kubernetes_host`, its CA in
//! `kubernetes_ca_cert`, the reviewer's `token_reviewer_jwt`) or, for offline
//! validation, the service-account signing keys (`pem_keys`) and `issuer`.
//!
//! A write replaces the whole configuration (Vault's behaviour): a field not given is
//! unset — in particular `token_reviewer_jwt` is never carried over to a new host.
//! `token_reviewer_jwt` is a secret: held as a [`SecretString`], sealed in storage like
//! every value, never returned (a read says only `token_reviewer_jwt_set`).

use std::path::Path;

use leash_backend::{CoreError, fields};
use leash_types::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use crate::verify::{self, PublicKey};

/// Where a pod finds its own service account's CA and token (used unless
/// `disable_local_ca_jwt`, when leash itself runs in the cluster).
const LOCAL_DIR: &str = "/var/run/secrets/kubernetes.io/serviceaccount";
/// Largest local CA or token file read.
const MAX_LOCAL_FILE: u64 = 256 * 1024;

/// The stored configuration. No `Debug`: it holds the reviewer JWT.
#[derive(Clone, Serialize, Deserialize)]
pub(crate) struct KubeConfig {
    /// Base URL of the API server, without a trailing slash ("" when offline only).
    #[serde(default)]
    pub(crate) kubernetes_host: String,
    #[serde(default)]
    pub(crate) kubernetes_ca_cert: String,
    /// A plain string in (sealed) storage, a secret in memory.
    #[serde(default, with = "leash_types::secret::serde_opt_str")]
    pub(crate) token_reviewer_jwt: Option<SecretString>,
    #[serde(default)]
    pub(crate) pem_keys: Vec<String>,
    #[serde(default)]
    pub(crate) issuer: String,
    #[serde(default)]
    pub(crate) disable_iss_validation: bool,
    #[serde(default)]
    pub(crate) disable_local_ca_jwt: bool,
}

const CONFIG_FIELDS: &[&str] = &[
    "kubernetes_host",
    "kubernetes_ca_cert",
    "token_reviewer_jwt",
    "pem_keys",
    "issuer",
    "disable_iss_validation",
    "disable_local_ca_jwt",
    "use_annotations_as_alias_metadata",
];

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

/// A list of PEM texts: a JSON list, or one string.
fn pem_list(data: &Map<String, Value>, field: &str) -> Result<Vec<String>, CoreError> {
    let bad = || {
        CoreError::invalid(format!(
            "invalid value for field {field:?}: expected a list of PEM strings"
        ))
    };
    match data.get(field) {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::String(s)) if s.trim().is_empty() => Ok(Vec::new()),
        Some(Value::String(s)) => Ok(vec![s.clone()]),
        Some(Value::Array(items)) => items
            .iter()
            .filter(|v| v.as_str().is_none_or(|s| !s.trim().is_empty()))
            .map(|v| v.as_str().map(str::to_owned).ok_or_else(bad))
            .collect(),
        Some(_) => Err(bad()),
    }
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

impl KubeConfig {
    /// Parses and checks a write (a whole new configuration), with warnings.
    pub(crate) fn from_write(
        data: &Map<String, Value>,
    ) -> Result<(KubeConfig, Vec<String>), CoreError> {
        let s = |f: &str| -> Result<String, CoreError> {
            Ok(fields::string(data, f)?
                .unwrap_or_default()
                .trim()
                .to_owned())
        };
        let pem_keys = pem_list(data, "pem_keys")?;
        let host = s("kubernetes_host")?;
        let kubernetes_host = if host.is_empty() {
            if pem_keys.is_empty() {
                return Err(CoreError::invalid(
                    "missing kubernetes_host (needed for the TokenReview API unless pem_keys are given)",
                ));
            }
            String::new()
        } else {
            normalise_host(&host)?
        };
        let kubernetes_ca_cert = s("kubernetes_ca_cert")?;
        if !kubernetes_ca_cert.is_empty() {
            verify::certificates_from_pem(&kubernetes_ca_cert)
                .map_err(|e| CoreError::invalid(format!("invalid kubernetes_ca_cert: {e}")))?;
        }
        let token_reviewer_jwt = match data.get("token_reviewer_jwt") {
            None | Some(Value::Null) => None,
            Some(Value::String(t)) if t.trim().is_empty() => None,
            Some(Value::String(t)) => Some(SecretString::from(t.trim().to_owned())),
            Some(_) => {
                return Err(CoreError::invalid(
                    "invalid value for field \"token_reviewer_jwt\": expected a string",
                ));
            }
        };
        let cfg = KubeConfig {
            kubernetes_host,
            kubernetes_ca_cert,
            token_reviewer_jwt,
            pem_keys,
            issuer: s("issuer")?,
            disable_iss_validation: fields::boolean(data, "disable_iss_validation")?
                .unwrap_or(false),
            disable_local_ca_jwt: fields::boolean(data, "disable_local_ca_jwt")?.unwrap_or(false),
        };
        cfg.public_keys()?;
        let mut warnings: Vec<String> = fields::ignored_warning(data, CONFIG_FIELDS)
            .into_iter()
            .collect();
        if cfg.pem_keys.is_empty() {
            if cfg.kubernetes_host.starts_with("http://") {
                warnings.push(
                    "kubernetes_host uses plain http: service-account tokens and the reviewer JWT travel unencrypted; use https with kubernetes_ca_cert"
                        .to_owned(),
                );
            } else if cfg.kubernetes_ca_cert.is_empty() {
                warnings.push(
                    "kubernetes_ca_cert is not set: the API server's certificate is checked against the public web roots (or the pod's own CA when leash runs in the cluster); pin the cluster CA"
                        .to_owned(),
                );
            }
        } else {
            warnings.push(
                "pem_keys are set: tokens are validated offline, so a deleted service account or pod is not noticed until its token expires"
                    .to_owned(),
            );
        }
        Ok((cfg, warnings))
    }

    /// The keys of `pem_keys`.
    pub(crate) fn public_keys(&self) -> Result<Vec<PublicKey>, CoreError> {
        let mut keys = Vec::new();
        for (i, pem) in self.pem_keys.iter().enumerate() {
            keys.extend(
                verify::public_keys_from_pem(pem)
                    .map_err(|e| CoreError::invalid(format!("invalid pem_keys[{i}]: {e}")))?,
            );
        }
        Ok(keys)
    }

    /// The CA to trust for the API server: the configured one, else the pod's own
    /// (unless `disable_local_ca_jwt`), else none (the public roots).
    pub(crate) async fn ca_pem(&self) -> Option<String> {
        if !self.kubernetes_ca_cert.is_empty() {
            return Some(self.kubernetes_ca_cert.clone());
        }
        if self.disable_local_ca_jwt {
            return None;
        }
        read_local("ca.crt").await
    }

    /// The reviewer JWT: the configured one, else the pod's own (unless
    /// `disable_local_ca_jwt`), else none (the caller's token reviews itself).
    pub(crate) async fn reviewer_jwt(&self) -> Option<SecretString> {
        if let Some(t) = &self.token_reviewer_jwt {
            return Some(SecretString::from(t.expose_secret().to_owned()));
        }
        if self.disable_local_ca_jwt {
            return None;
        }
        read_local("token").await.map(SecretString::from)
    }

    /// The configuration as a read returns it: never the reviewer JWT.
    pub(crate) fn to_json(&self) -> Value {
        json!({
            "kubernetes_host": self.kubernetes_host,
            "kubernetes_ca_cert": self.kubernetes_ca_cert,
            "pem_keys": self.pem_keys,
            "issuer": self.issuer,
            "disable_iss_validation": self.disable_iss_validation,
            "disable_local_ca_jwt": self.disable_local_ca_jwt,
            "token_reviewer_jwt_set": self.token_reviewer_jwt.is_some(),
        })
    }
}
