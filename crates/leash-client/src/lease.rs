//! Typed helpers for leases (`sys/leases/*`) and for logins (`auth/<mount>/login`),
//! used by the sidecar agent. Lease ids and login credentials travel in request bodies.

use serde::Deserialize;
use serde_json::{Value, json};

use crate::types::{Auth, Secret, decode};
use crate::{Client, ClientError};

/// The answer to `sys/leases/renew`.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default)]
pub struct LeaseRenewal {
    /// The lease renewed.
    pub lease_id: String,
    /// Its new TTL in seconds (may be less than asked when capped by its max TTL).
    pub lease_duration: u64,
    /// Whether it can be renewed again.
    pub renewable: bool,
    /// Warnings (e.g. the TTL was capped).
    pub warnings: Option<Vec<String>>,
}

/// `data` of `sys/leases/lookup`.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default)]
pub struct LeaseInfo {
    /// Lease id.
    pub id: String,
    /// Remaining TTL, seconds.
    pub ttl: u64,
    /// Whether it can be renewed.
    pub renewable: bool,
    /// RFC 3339 expiry.
    pub expire_time: Option<String>,
    /// RFC 3339 hard end (leash extension: the lease's max TTL).
    pub max_expire_time: Option<String>,
    /// `pending`, `active`, `revoking` (leash extension).
    pub state: Option<String>,
}

impl Client {
    /// Renews a lease, asking for `increment` seconds if given.
    pub async fn lease_renew(
        &self,
        lease_id: &str,
        increment: Option<u64>,
    ) -> Result<LeaseRenewal, ClientError> {
        let mut body = json!({ "lease_id": lease_id });
        if let Some(i) = increment {
            body["increment"] = json!(i);
        }
        let out = self.write("sys/leases/renew", &body).await?;
        decode(
            out.ok_or_else(|| ClientError::Decode("empty answer to a lease renewal".into()))?,
            "lease renewal",
        )
    }

    /// Revokes a lease (and the credential it holds).
    pub async fn lease_revoke(&self, lease_id: &str) -> Result<(), ClientError> {
        self.write("sys/leases/revoke", &json!({ "lease_id": lease_id }))
            .await
            .map(drop)
    }

    /// Looks up a lease.
    pub async fn lease_lookup(&self, lease_id: &str) -> Result<LeaseInfo, ClientError> {
        let body = self
            .write("sys/leases/lookup", &json!({ "lease_id": lease_id }))
            .await?;
        let data = body
            .and_then(|mut b| b.get_mut("data").map(Value::take))
            .filter(|d| !d.is_null())
            .ok_or_else(|| ClientError::Decode("lease lookup: response has no data".into()))?;
        decode(data, "lease lookup data")
    }

    /// Logs in at `auth/<mount>/login` (or any login path) with `body`; returns the
    /// `auth` block.
    pub async fn login(&self, path: &str, body: &Value) -> Result<Auth, ClientError> {
        let out = self
            .write(path, body)
            .await?
            .ok_or_else(|| ClientError::Decode("empty answer to a login".into()))?;
        Secret::from_body(out)?
            .auth
            .ok_or_else(|| ClientError::Decode("login answer has no auth block".into()))
    }

    /// Reads (`params` empty) or writes (`params` given) a path and decodes the
    /// envelope: how templates' `secret` calls fetch.
    pub async fn fetch_secret(
        &self,
        path: &str,
        params: &serde_json::Map<String, Value>,
    ) -> Result<Option<Secret>, ClientError> {
        let body = if params.is_empty() {
            self.read(path).await?
        } else {
            self.write(path, &Value::Object(params.clone())).await?
        };
        body.map(Secret::from_body).transpose()
    }
}
