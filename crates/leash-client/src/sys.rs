//! Typed helpers for `sys/`: health, seal status, ACL policies, and the mount preflight
//! that tells KV v1 from v2.

use serde_json::{Value, json};

use crate::types::{Health, KvMount, SealStatus, decode};
use crate::{Client, ClientError};

/// Statuses `sys/health` uses to describe a server that is up but not active; they are
/// answers, not errors.
pub const HEALTH_STATUSES: [u16; 6] = [200, 429, 472, 473, 501, 503];

impl Client {
    /// `GET sys/health`. Accepts every status Vault uses to report state (standby,
    /// sealed, uninitialised); [`Health::status`] holds it.
    pub async fn health(&self) -> Result<Health, ClientError> {
        let resp = self.request("GET", "sys/health", None).await?;
        if !HEALTH_STATUSES.contains(&resp.status) {
            return Err(ClientError::from_response_body(
                resp.status,
                resp.body.as_ref(),
            ));
        }
        let body = resp
            .body
            .ok_or_else(|| ClientError::Decode("sys/health: empty body".into()))?;
        let mut health: Health = decode(body, "sys/health")?;
        health.status = resp.status;
        Ok(health)
    }

    /// `GET sys/seal-status`.
    pub async fn seal_status(&self) -> Result<SealStatus, ClientError> {
        let body = self
            .read("sys/seal-status")
            .await?
            .ok_or_else(|| ClientError::Decode("sys/seal-status: no body".into()))?;
        decode(body, "sys/seal-status")
    }

    /// Writes (creates or replaces) an ACL policy from HCL or JSON text.
    pub async fn policy_write(&self, name: &str, policy: &str) -> Result<(), ClientError> {
        self.write(&format!("sys/policy/{name}"), &json!({ "policy": policy }))
            .await
            .map(drop)
    }

    /// The text of a policy, `None` if there is no such policy.
    pub async fn policy_read(&self, name: &str) -> Result<Option<String>, ClientError> {
        let Some(body) = self.read(&format!("sys/policy/{name}")).await? else {
            return Ok(None);
        };
        let rules = policy_text(&body)
            .ok_or_else(|| ClientError::Decode(format!("sys/policy/{name}: no rules")))?;
        Ok(Some(rules.to_owned()))
    }

    /// Names of all ACL policies.
    pub async fn policy_list(&self) -> Result<Vec<String>, ClientError> {
        let body = self.read("sys/policy").await?.unwrap_or(Value::Null);
        Ok(policy_names(&body))
    }

    /// Deletes a policy (deleting a missing policy succeeds).
    pub async fn policy_delete(&self, name: &str) -> Result<(), ClientError> {
        self.delete(&format!("sys/policy/{name}")).await.map(drop)
    }

    /// Which KV mount holds `path` and its version, from
    /// `GET sys/internal/ui/mounts/<path>`. `Ok(None)` when the mount is not a KV mount.
    pub async fn kv_mount(&self, path: &str) -> Result<Option<KvMount>, ClientError> {
        let path = path.trim_matches('/');
        let body = self
            .read(&format!("sys/internal/ui/mounts/{path}"))
            .await?
            .ok_or_else(|| ClientError::Decode(format!("no mount holds {path}")))?;
        Ok(kv_mount_of(&body))
    }
}

/// The rules of a `GET sys/policy/<name>` answer: `rules` (or `policy`), at the top
/// level or under `data`.
pub fn policy_text(body: &Value) -> Option<&str> {
    ["rules", "policy"].iter().find_map(|k| {
        body.get(*k)
            .or_else(|| body.get("data").and_then(|d| d.get(*k)))
            .and_then(Value::as_str)
    })
}

/// Policy names from `GET sys/policy`: `keys` or `policies`, top level or under `data`.
pub fn policy_names(body: &Value) -> Vec<String> {
    let lists = [body, body.get("data").unwrap_or(&Value::Null)];
    lists
        .iter()
        .flat_map(|b| ["keys", "policies"].map(|k| b.get(k)))
        .flatten()
        .find_map(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|v| v.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

/// Interprets a `sys/internal/ui/mounts/<path>` answer.
pub(crate) fn kv_mount_of(body: &Value) -> Option<KvMount> {
    let data = body.get("data")?;
    let mount_type = data.get("type").and_then(Value::as_str)?;
    let mount = data.get("path").and_then(Value::as_str)?;
    let mut mount = mount.trim_start_matches('/').to_owned();
    if !mount.ends_with('/') {
        mount.push('/');
    }
    let version = data
        .get("options")
        .and_then(|o| o.get("version"))
        .and_then(|v| match v {
            Value::String(s) => s.parse::<u8>().ok(),
            Value::Number(n) => n.as_u64().and_then(|n| u8::try_from(n).ok()),
            _ => None,
        });
    match (mount_type, version) {
        ("kv-v2", _) | ("kv", Some(2)) => Some(KvMount { mount, version: 2 }),
        ("kv", _) | ("generic", _) => Some(KvMount { mount, version: 1 }),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policy_names_from_any_shape() {
        assert_eq!(policy_names(&json!({"keys": ["a", "b"]})), vec!["a", "b"]);
        assert_eq!(policy_names(&json!({"policies": ["a"]})), vec!["a"]);
        assert_eq!(policy_names(&json!({"data": {"keys": ["x"]}})), vec!["x"]);
        assert!(policy_names(&Value::Null).is_empty());
    }

    #[test]
    fn policy_text_from_any_shape() {
        let read =
            json!({"name": "p", "rules": "path \"a\" {}", "data": {"rules": "path \"a\" {}"}});
        assert_eq!(policy_text(&read), Some("path \"a\" {}"));
        assert_eq!(policy_text(&json!({"data": {"policy": "x"}})), Some("x"));
        assert_eq!(policy_text(&json!({"name": "p"})), None);
    }

    #[test]
    fn kv_mount_detection() {
        let v2 = json!({"data": {"path": "secret/", "type": "kv", "options": {"version": "2"}}});
        assert_eq!(
            kv_mount_of(&v2),
            Some(KvMount {
                mount: "secret/".into(),
                version: 2
            })
        );
        let v1 = json!({"data": {"path": "kv", "type": "kv", "options": null}});
        assert_eq!(
            kv_mount_of(&v1),
            Some(KvMount {
                mount: "kv/".into(),
                version: 1
            })
        );
        let db = json!({"data": {"path": "database/", "type": "database"}});
        assert_eq!(kv_mount_of(&db), None);
        assert_eq!(kv_mount_of(&json!({})), None);
    }
}
