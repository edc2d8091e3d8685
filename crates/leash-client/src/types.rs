//! Typed request and response bodies of the Vault API subset the typed helpers use.
//!
//! Deserialization is lenient (missing fields take defaults, unknown fields are
//! ignored) so that a newer server does not break an older client. Tokens are
//! [`SecretString`]; types that may hold secret data (KV values, database credentials)
//! implement `Debug` by hand and print only key names.

use std::collections::BTreeMap;

use secrecy::SecretString;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::ClientError;

fn is_false(b: &bool) -> bool {
    !*b
}

/// Body of `auth/token/create` (and `create-orphan`, `create/<role>`).
#[derive(Clone, Debug, Default, Serialize, PartialEq, Eq)]
pub struct TokenCreateRequest {
    /// Policies of the new token (`default` is added unless `no_default_policy`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub policies: Vec<String>,
    /// Metadata attached to the token.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub meta: BTreeMap<String, String>,
    /// Do not attach the `default` policy.
    #[serde(skip_serializing_if = "is_false")]
    pub no_default_policy: bool,
    /// Whether the token may be renewed (server default: true).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub renewable: Option<bool>,
    /// Initial TTL (`"1h"`, `"900"`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ttl: Option<String>,
    /// Hard cap on the token's lifetime, renewals included.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub explicit_max_ttl: Option<String>,
    /// Makes a periodic token renewable by this period indefinitely.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub period: Option<String>,
    /// Human-readable name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub display_name: Option<String>,
    /// Number of uses before the token is revoked (0 = unlimited).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub num_uses: Option<u64>,
    /// Token type (`service`).
    #[serde(rename = "type", skip_serializing_if = "Option::is_none")]
    pub token_type: Option<String>,
    /// An inline scope (a policy in HCL or JSON): the new token can do only what both
    /// this scope and the creating token allow.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scope: Option<String>,
    /// Create through this token role (`auth/token/create/<role>`); not in the body.
    #[serde(skip)]
    pub role: Option<String>,
    /// Create an orphan (`auth/token/create-orphan`); not in the body.
    #[serde(skip)]
    pub orphan: bool,
}

impl TokenCreateRequest {
    /// The API path this request goes to.
    pub fn path(&self) -> String {
        match (&self.role, self.orphan) {
            (Some(role), _) => format!("auth/token/create/{role}"),
            (None, true) => "auth/token/create-orphan".to_owned(),
            (None, false) => "auth/token/create".to_owned(),
        }
    }

    /// The JSON body.
    pub fn body(&self) -> Value {
        serde_json::to_value(self).unwrap_or_else(|_| Value::Object(Map::new()))
    }
}

/// The `auth` block of a login, token-create or renew response.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default)]
pub struct Auth {
    /// The token.
    pub client_token: SecretString,
    /// Its accessor.
    pub accessor: String,
    /// All policies.
    pub policies: Vec<String>,
    /// Policies attached to the token itself.
    pub token_policies: Vec<String>,
    /// Policies coming from the identity.
    pub identity_policies: Vec<String>,
    /// Metadata.
    pub metadata: Option<BTreeMap<String, String>>,
    /// TTL in seconds.
    pub lease_duration: u64,
    /// Whether it can be renewed.
    pub renewable: bool,
    /// Identity entity.
    pub entity_id: String,
    /// `service` or `batch`.
    pub token_type: String,
    /// Whether it has no parent.
    pub orphan: bool,
    /// Remaining uses (0 = unlimited).
    pub num_uses: u64,
}

/// The standard response envelope.
///
/// `Debug` prints the names of `data`'s keys, not their values.
#[derive(Clone, Default, Deserialize)]
#[serde(default)]
pub struct Secret {
    /// Server-assigned request id.
    pub request_id: String,
    /// Lease id, if the data is leased (`""` otherwise).
    pub lease_id: String,
    /// Lease TTL in seconds.
    pub lease_duration: u64,
    /// Whether the lease can be renewed.
    pub renewable: bool,
    /// The response data.
    pub data: Option<Map<String, Value>>,
    /// Warnings from the server.
    pub warnings: Option<Vec<String>>,
    /// Auth block (logins, token creation, renewal).
    pub auth: Option<Auth>,
    /// Response-wrapping information.
    pub wrap_info: Option<Value>,
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Secret")
            .field("request_id", &self.request_id)
            .field("lease_id", &self.lease_id)
            .field("lease_duration", &self.lease_duration)
            .field("renewable", &self.renewable)
            .field(
                "data_keys",
                &self.data.as_ref().map(|d| d.keys().collect::<Vec<_>>()),
            )
            .field("warnings", &self.warnings)
            .field("auth", &self.auth)
            .finish_non_exhaustive()
    }
}

impl Secret {
    /// Decodes an envelope from a response body.
    pub fn from_body(body: Value) -> Result<Secret, ClientError> {
        decode(body, "response envelope")
    }
}

/// `data` of `auth/token/lookup[-self|-accessor]`.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default)]
pub struct TokenInfo {
    /// The token itself (empty for a lookup by accessor).
    pub id: SecretString,
    /// Accessor.
    pub accessor: String,
    /// Unix seconds of creation.
    pub creation_time: i64,
    /// TTL at creation, seconds.
    pub creation_ttl: u64,
    /// Display name.
    pub display_name: String,
    /// Identity entity.
    pub entity_id: String,
    /// RFC 3339 expiry time, `None` for a token that never expires.
    pub expire_time: Option<String>,
    /// Hard lifetime cap, seconds (0 = none).
    pub explicit_max_ttl: u64,
    /// RFC 3339 issue time.
    pub issue_time: Option<String>,
    /// Metadata.
    pub meta: Option<BTreeMap<String, String>>,
    /// Remaining uses (0 = unlimited).
    pub num_uses: u64,
    /// Whether it has no parent.
    pub orphan: bool,
    /// Creation path (`auth/token/create`).
    pub path: String,
    /// Policies.
    pub policies: Vec<String>,
    /// Whether it can be renewed.
    pub renewable: bool,
    /// Remaining TTL, seconds.
    pub ttl: u64,
    /// Period, seconds, for periodic tokens.
    pub period: Option<u64>,
    /// Role it was created through.
    pub role: Option<String>,
    /// `service` or `batch`.
    #[serde(rename = "type")]
    pub token_type: String,
}

/// Body of `sys/health` (not an envelope).
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(default)]
pub struct Health {
    /// HTTP status the server answered with (200 active, 429 standby, 503 sealed, …).
    #[serde(skip)]
    pub status: u16,
    /// Whether the server is initialised.
    pub initialized: bool,
    /// Whether it is sealed.
    pub sealed: bool,
    /// Whether it is a standby.
    pub standby: bool,
    /// Whether it is a performance standby.
    pub performance_standby: bool,
    /// Server time, Unix seconds.
    pub server_time_utc: i64,
    /// Server version.
    pub version: String,
    /// Cluster name.
    pub cluster_name: String,
    /// Cluster id.
    pub cluster_id: String,
}

/// Body of `sys/seal-status` (not an envelope).
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(default)]
pub struct SealStatus {
    /// Seal type (`shamir`, …).
    #[serde(rename = "type")]
    pub seal_type: String,
    /// Whether the server is initialised.
    pub initialized: bool,
    /// Whether it is sealed.
    pub sealed: bool,
    /// Key shares.
    pub n: u64,
    /// Threshold.
    pub t: u64,
    /// Unseal progress.
    pub progress: u64,
    /// Server version.
    pub version: String,
    /// Storage backend.
    pub storage_type: Option<String>,
    /// Cluster name.
    pub cluster_name: Option<String>,
    /// Cluster id.
    pub cluster_id: Option<String>,
}

/// Metadata of one KV v2 version (`data` of a put, `data.metadata` of a get).
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(default)]
pub struct KvVersionMetadata {
    /// RFC 3339 creation time.
    pub created_time: String,
    /// Custom metadata.
    pub custom_metadata: Option<BTreeMap<String, String>>,
    /// RFC 3339 deletion time, `""` when not deleted.
    pub deletion_time: String,
    /// Whether the version is destroyed.
    pub destroyed: bool,
    /// Version number.
    pub version: u64,
}

/// A KV v2 secret: its data and version metadata. `Debug` prints key names only.
#[derive(Clone, Default, Deserialize)]
#[serde(default)]
pub struct KvSecret {
    /// The key/value data; `None` for a deleted or destroyed version.
    pub data: Option<Map<String, Value>>,
    /// Version metadata.
    pub metadata: KvVersionMetadata,
}

impl std::fmt::Debug for KvSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KvSecret")
            .field(
                "data_keys",
                &self.data.as_ref().map(|d| d.keys().collect::<Vec<_>>()),
            )
            .field("metadata", &self.metadata)
            .finish()
    }
}

/// What `sys/internal/ui/mounts/<path>` says about the mount holding a path.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KvMount {
    /// Mount path with a trailing slash (`secret/`).
    pub mount: String,
    /// KV version, 1 or 2.
    pub version: u8,
}

/// Decodes a JSON value into `T`, naming `what` in the error.
pub(crate) fn decode<T: serde::de::DeserializeOwned>(
    v: Value,
    what: &str,
) -> Result<T, ClientError> {
    serde_json::from_value(v).map_err(|e| ClientError::Decode(format!("{what}: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use secrecy::ExposeSecret;
    use serde_json::json;

    #[test]
    fn token_create_request_serialises_only_what_is_set() {
        let r = TokenCreateRequest::default();
        assert_eq!(r.body(), json!({}));
        assert_eq!(r.path(), "auth/token/create");
        let r = TokenCreateRequest {
            policies: vec!["bench".into()],
            ttl: Some("1h".into()),
            no_default_policy: true,
            renewable: Some(false),
            num_uses: Some(3),
            token_type: Some("service".into()),
            meta: BTreeMap::from([("agent".into(), "a1".into())]),
            orphan: true,
            ..Default::default()
        };
        assert_eq!(
            r.body(),
            json!({"policies": ["bench"], "ttl": "1h", "no_default_policy": true,
                   "renewable": false, "num_uses": 3, "type": "service",
                   "meta": {"agent": "a1"}})
        );
        assert_eq!(r.path(), "auth/token/create-orphan");
        let r = TokenCreateRequest {
            role: Some("ci".into()),
            orphan: true,
            ..Default::default()
        };
        assert_eq!(r.path(), "auth/token/create/ci");
    }

    #[test]
    fn envelope_with_auth_decodes_and_hides_secrets() {
        let s = Secret::from_body(json!({
            "request_id": "r1", "lease_id": "", "renewable": false, "lease_duration": 0,
            "data": {"password": "pw-secret"}, "wrap_info": null, "warnings": null,
            "auth": {"client_token": "lsh.tok", "accessor": "acc", "policies": ["default"],
                     "token_policies": ["default"], "metadata": null,
                     "lease_duration": 3600, "renewable": true, "entity_id": "",
                     "token_type": "service", "orphan": false, "mfa_requirement": null,
                     "num_uses": 0}
        }))
        .unwrap();
        let auth = s.auth.as_ref().unwrap();
        assert_eq!(auth.client_token.expose_secret(), "lsh.tok");
        assert_eq!(auth.lease_duration, 3600);
        let dbg = format!("{s:?}");
        assert!(
            !dbg.contains("lsh.tok") && !dbg.contains("pw-secret"),
            "{dbg}"
        );
        assert!(dbg.contains("password"));
    }

    #[test]
    fn lenient_decoding_of_partial_bodies() {
        let info: TokenInfo =
            decode(json!({"ttl": 5, "policies": ["a"], "extra": 1}), "t").unwrap();
        assert_eq!(info.ttl, 5);
        assert!(info.expire_time.is_none());
        assert!(matches!(
            decode::<TokenInfo>(json!({"ttl": "x"}), "t"),
            Err(ClientError::Decode(_))
        ));
    }
}
