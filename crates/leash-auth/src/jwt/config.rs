//! `auth/jwt/config`: where the issuer's keys come from, and which issuer and algorithms
//! are accepted. Exactly one key source: `jwt_validation_pubkeys` (PEM, offline),
//! `jwks_url` (+ `jwks_ca_pem`) or `oidc_discovery_url` (+ `oidc_discovery_ca_pem`).
//! A write replaces the whole configuration (as Vault's does) after checking it, which
//! for a URL means fetching the keys once. Nothing here is secret: the OIDC client
//! secret of Vault's browser flow is not accepted, so no read can return one.

use jsonwebtoken::Algorithm;
use leash_backend::{CoreError, fields};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use crate::verify::{self, PublicKey};

/// The stored configuration.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub(crate) struct JwtConfig {
    #[serde(default)]
    pub(crate) oidc_discovery_url: String,
    #[serde(default)]
    pub(crate) oidc_discovery_ca_pem: String,
    #[serde(default)]
    pub(crate) jwks_url: String,
    #[serde(default)]
    pub(crate) jwks_ca_pem: String,
    #[serde(default)]
    pub(crate) jwt_validation_pubkeys: Vec<String>,
    #[serde(default)]
    pub(crate) bound_issuer: String,
    /// Algorithm names, validated (never `none` or `HS*`).
    #[serde(default)]
    pub(crate) jwt_supported_algs: Vec<String>,
    #[serde(default)]
    pub(crate) default_role: String,
}

/// Algorithms accepted when `jwt_supported_algs` is empty.
pub(crate) const DEFAULT_ALGS: &[Algorithm] = &[Algorithm::RS256, Algorithm::ES256];

/// Fields a config write reads.
pub(crate) const CONFIG_FIELDS: &[&str] = &[
    "oidc_discovery_url",
    "oidc_discovery_ca_pem",
    "jwks_url",
    "jwks_ca_pem",
    "jwt_validation_pubkeys",
    "bound_issuer",
    "jwt_supported_algs",
    "default_role",
];

/// Vault fields of the OIDC browser flow: accepted (hvac sends some), never stored.
const OIDC_FLOW_FIELDS: &[&str] = &[
    "oidc_client_id",
    "oidc_client_secret",
    "oidc_response_mode",
    "oidc_response_types",
    "provider_config",
    "namespace_in_state",
    "jwks_pairs",
];

/// Where keys come from, as a login needs it.
pub(crate) enum KeySource {
    /// PEM keys from the configuration.
    Static(Vec<PublicKey>),
    /// A JWKS fetched from `url`, trusting `ca_pem` only when set.
    Jwks { url: String, ca_pem: String },
    /// OIDC discovery at `url`, then its `jwks_uri`.
    Discovery { url: String, ca_pem: String },
}

fn check_url(field: &str, url: &str) -> Result<(), CoreError> {
    let parsed = reqwest::Url::parse(url)
        .map_err(|e| CoreError::invalid(format!("invalid {field}: {e}")))?;
    if !matches!(parsed.scheme(), "https" | "http") || parsed.host_str().is_none() {
        return Err(CoreError::invalid(format!(
            "invalid {field}: expected an http or https URL"
        )));
    }
    if !parsed.username().is_empty() || parsed.password().is_some() {
        return Err(CoreError::invalid(format!(
            "invalid {field}: credentials in the URL are not allowed"
        )));
    }
    Ok(())
}

impl JwtConfig {
    /// Parses and checks a write (a whole new configuration), with warnings.
    pub(crate) fn from_write(
        data: &Map<String, Value>,
    ) -> Result<(JwtConfig, Vec<String>), CoreError> {
        let s = |f: &str| -> Result<String, CoreError> {
            Ok(fields::string(data, f)?
                .unwrap_or_default()
                .trim()
                .to_owned())
        };
        let cfg = JwtConfig {
            oidc_discovery_url: s("oidc_discovery_url")?,
            oidc_discovery_ca_pem: s("oidc_discovery_ca_pem")?,
            jwks_url: s("jwks_url")?,
            jwks_ca_pem: s("jwks_ca_pem")?,
            jwt_validation_pubkeys: pem_list(data, "jwt_validation_pubkeys")?,
            bound_issuer: s("bound_issuer")?,
            jwt_supported_algs: fields::string_list(data, "jwt_supported_algs")?
                .unwrap_or_default(),
            default_role: s("default_role")?,
        };
        let sources = [
            !cfg.jwt_validation_pubkeys.is_empty(),
            !cfg.jwks_url.is_empty(),
            !cfg.oidc_discovery_url.is_empty(),
        ];
        if sources.iter().filter(|b| **b).count() != 1 {
            return Err(CoreError::invalid(
                "exactly one of jwt_validation_pubkeys, jwks_url or oidc_discovery_url must be set",
            ));
        }
        if !cfg.jwks_ca_pem.is_empty() && cfg.jwks_url.is_empty() {
            return Err(CoreError::invalid("jwks_ca_pem is only used with jwks_url"));
        }
        if !cfg.oidc_discovery_ca_pem.is_empty() && cfg.oidc_discovery_url.is_empty() {
            return Err(CoreError::invalid(
                "oidc_discovery_ca_pem is only used with oidc_discovery_url",
            ));
        }
        for (field, pem) in [
            ("jwks_ca_pem", &cfg.jwks_ca_pem),
            ("oidc_discovery_ca_pem", &cfg.oidc_discovery_ca_pem),
        ] {
            if !pem.is_empty() {
                verify::certificates_from_pem(pem)
                    .map_err(|e| CoreError::invalid(format!("invalid {field}: {e}")))?;
            }
        }
        if !cfg.jwks_url.is_empty() {
            check_url("jwks_url", &cfg.jwks_url)?;
        }
        if !cfg.oidc_discovery_url.is_empty() {
            check_url("oidc_discovery_url", &cfg.oidc_discovery_url)?;
        }
        let algs = cfg.algorithms()?;
        let mut warnings = Vec::new();
        if !cfg.jwt_validation_pubkeys.is_empty() {
            let keys = cfg.static_keys()?;
            let usable = keys.iter().any(|k| {
                algs.iter()
                    .any(|a| verify::family_of(*a) == Some(k.family()))
            });
            if !usable {
                warnings.push(
                    "no key in jwt_validation_pubkeys can verify any of jwt_supported_algs: every login will fail"
                        .to_owned(),
                );
            }
        }
        if cfg.jwks_url.starts_with("http://") || cfg.oidc_discovery_url.starts_with("http://") {
            warnings.push(
                "the key URL uses plain http: whoever can change the answer in transit can sign tokens leash accepts; use https"
                    .to_owned(),
            );
        }
        if cfg.bound_issuer.is_empty() && cfg.oidc_discovery_url.is_empty() {
            warnings
                .push("bound_issuer is not set: the iss claim of tokens is not checked".to_owned());
        }
        let mut known: Vec<&str> = CONFIG_FIELDS.to_vec();
        known.extend_from_slice(OIDC_FLOW_FIELDS);
        if let Some(w) = fields::ignored_warning(data, &known) {
            warnings.push(w);
        }
        let flow: Vec<&str> = OIDC_FLOW_FIELDS
            .iter()
            .copied()
            .filter(|f| data.get(*f).is_some_and(is_set))
            .collect();
        if !flow.is_empty() {
            warnings.push(format!(
                "ignored (and not stored) fields of the OIDC browser flow, which leash does not support: [{}]",
                flow.join(" ")
            ));
        }
        Ok((cfg, warnings))
    }

    /// The algorithms tokens may be signed with.
    pub(crate) fn algorithms(&self) -> Result<Vec<Algorithm>, CoreError> {
        if self.jwt_supported_algs.is_empty() {
            return Ok(DEFAULT_ALGS.to_vec());
        }
        self.jwt_supported_algs
            .iter()
            .map(|a| {
                verify::parse_algorithm(a)
                    .map_err(|e| CoreError::invalid(format!("invalid jwt_supported_algs: {e}")))
            })
            .collect()
    }

    /// The PEM keys of `jwt_validation_pubkeys`.
    pub(crate) fn static_keys(&self) -> Result<Vec<PublicKey>, CoreError> {
        let mut keys = Vec::new();
        for (i, pem) in self.jwt_validation_pubkeys.iter().enumerate() {
            let k = verify::public_keys_from_pem(pem).map_err(|e| {
                CoreError::invalid(format!("invalid jwt_validation_pubkeys[{i}]: {e}"))
            })?;
            keys.extend(k);
        }
        Ok(keys)
    }

    /// Where a login finds its keys.
    pub(crate) fn source(&self) -> Result<KeySource, CoreError> {
        if !self.jwt_validation_pubkeys.is_empty() {
            Ok(KeySource::Static(self.static_keys()?))
        } else if !self.jwks_url.is_empty() {
            Ok(KeySource::Jwks {
                url: self.jwks_url.clone(),
                ca_pem: self.jwks_ca_pem.clone(),
            })
        } else {
            Ok(KeySource::Discovery {
                url: self.oidc_discovery_url.clone(),
                ca_pem: self.oidc_discovery_ca_pem.clone(),
            })
        }
    }

    /// The configuration as a read returns it.
    pub(crate) fn to_json(&self) -> Value {
        let algs: Vec<String> = if self.jwt_supported_algs.is_empty() {
            DEFAULT_ALGS
                .iter()
                .map(|a| verify::algorithm_name(*a).to_owned())
                .collect()
        } else {
            self.jwt_supported_algs.clone()
        };
        json!({
            "oidc_discovery_url": self.oidc_discovery_url,
            "oidc_discovery_ca_pem": self.oidc_discovery_ca_pem,
            "jwks_url": self.jwks_url,
            "jwks_ca_pem": self.jwks_ca_pem,
            "jwt_validation_pubkeys": self.jwt_validation_pubkeys,
            "bound_issuer": self.bound_issuer,
            "jwt_supported_algs": algs,
            "default_role": self.default_role,
            "oidc_client_id": "",
            "oidc_response_mode": "",
            "oidc_response_types": [],
            "provider_config": {},
            "namespace_in_state": false,
        })
    }
}

fn is_set(v: &Value) -> bool {
    match v {
        Value::Null => false,
        Value::String(s) => !s.is_empty(),
        Value::Array(a) => !a.is_empty(),
        Value::Object(o) => !o.is_empty(),
        Value::Bool(b) => *b,
        Value::Number(_) => true,
    }
}

/// A list of PEM texts: a JSON list, or one string (PEMs contain no commas, but a
/// string may hold several blocks).
fn pem_list(data: &Map<String, Value>, field: &str) -> Result<Vec<String>, CoreError> {
    match data.get(field) {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::String(s)) if s.trim().is_empty() => Ok(Vec::new()),
        Some(Value::String(s)) => Ok(vec![s.clone()]),
        Some(Value::Array(items)) => items
            .iter()
            .filter(|v| v.as_str().is_none_or(|s| !s.trim().is_empty()))
            .map(|v| {
                v.as_str().map(str::to_owned).ok_or_else(|| {
                    CoreError::invalid(format!(
                        "invalid value for field {field:?}: expected a list of PEM strings"
                    ))
                })
            })
            .collect(),
        Some(_) => Err(CoreError::invalid(format!(
            "invalid value for field {field:?}: expected a list of PEM strings"
        ))),
    }
}
