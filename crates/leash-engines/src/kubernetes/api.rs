//! The calls the `kubernetes` secrets engine makes to a cluster's API server: a
//! TokenRequest for a service account, creating the service account, Role/ClusterRole
//! and binding of a generated credential, and deleting them again.
//!
//! Every call authenticates with the engine's own service-account JWT as a bearer token
//! and speaks the API's JSON. A deletion of something already gone (404) is a success:
//! revocation is "revoke if exists". Not here: leases, roles, HTTP paths of leash.

use std::time::Duration;

use leash_types::{ExposeSecret, SecretString};
use serde_json::{Value, json};

use crate::https::{self, ApiError};

/// How long one API call may take.
pub(crate) const TIMEOUT: Duration = Duration::from_secs(10);

/// A connection to one API server.
pub(crate) struct Cluster {
    pub(crate) host: String,
    pub(crate) jwt: SecretString,
    pub(crate) client: reqwest::Client,
}

/// An object the engine makes for a credential: its kind (for messages) and the API
/// path that creates it (the collection) and deletes it (`<collection>/<name>`).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub(crate) struct Object {
    pub(crate) kind: String,
    pub(crate) collection: String,
    pub(crate) name: String,
}

impl Object {
    fn path(&self) -> String {
        format!("{}/{}", self.collection, self.name)
    }
}

const RBAC: &str = "/apis/rbac.authorization.k8s.io/v1";

/// The ServiceAccount `name` in `ns`.
pub(crate) fn service_account(ns: &str, name: &str) -> Object {
    Object {
        kind: "ServiceAccount".into(),
        collection: format!("/api/v1/namespaces/{ns}/serviceaccounts"),
        name: name.to_owned(),
    }
}

/// A Role in `ns`, or a ClusterRole when `ns` is `None`.
pub(crate) fn role(ns: Option<&str>, name: &str) -> Object {
    match ns {
        Some(ns) => Object {
            kind: "Role".into(),
            collection: format!("{RBAC}/namespaces/{ns}/roles"),
            name: name.to_owned(),
        },
        None => Object {
            kind: "ClusterRole".into(),
            collection: format!("{RBAC}/clusterroles"),
            name: name.to_owned(),
        },
    }
}

/// A RoleBinding in `ns`, or a ClusterRoleBinding when `ns` is `None`.
pub(crate) fn binding(ns: Option<&str>, name: &str) -> Object {
    match ns {
        Some(ns) => Object {
            kind: "RoleBinding".into(),
            collection: format!("{RBAC}/namespaces/{ns}/rolebindings"),
            name: name.to_owned(),
        },
        None => Object {
            kind: "ClusterRoleBinding".into(),
            collection: format!("{RBAC}/clusterrolebindings"),
            name: name.to_owned(),
        },
    }
}

/// The Kubernetes `Status` reason of an error answer, else its first bytes as text.
fn reason(body: &[u8]) -> String {
    match serde_json::from_slice::<Value>(body) {
        Ok(v) => v
            .get("message")
            .and_then(Value::as_str)
            .map(str::to_owned)
            .or_else(|| v.get("reason").and_then(Value::as_str).map(str::to_owned))
            .unwrap_or_default(),
        Err(_) => String::from_utf8_lossy(&body[..body.len().min(200)]).into_owned(),
    }
}

/// A minted service-account token.
pub(crate) struct Minted {
    pub(crate) token: SecretString,
}

impl Cluster {
    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.host)
    }

    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<(u16, Vec<u8>), ApiError> {
        let mut req = self
            .client
            .request(method, self.url(path))
            .bearer_auth(self.jwt.expose_secret())
            .header(reqwest::header::ACCEPT, "application/json");
        if let Some(b) = body {
            req = req.json(b);
        }
        https::send(req).await
    }

    /// Creates the object `o` with the body `manifest` (its `metadata.name` is set).
    pub(crate) async fn create(&self, o: &Object, mut manifest: Value) -> Result<(), ApiError> {
        manifest["metadata"]["name"] = json!(o.name);
        let (status, body) = self
            .call(reqwest::Method::POST, &o.collection, Some(&manifest))
            .await?;
        if (200..300).contains(&status) {
            Ok(())
        } else {
            Err(ApiError::Status {
                status,
                reason: format!("creating {} {:?}: {}", o.kind, o.name, reason(&body)),
            })
        }
    }

    /// Deletes `o`; gone already counts as deleted.
    pub(crate) async fn delete(&self, o: &Object) -> Result<(), ApiError> {
        let (status, body) = self.call(reqwest::Method::DELETE, &o.path(), None).await?;
        if (200..300).contains(&status) || status == 404 {
            Ok(())
        } else {
            Err(ApiError::Status {
                status,
                reason: format!("deleting {} {:?}: {}", o.kind, o.name, reason(&body)),
            })
        }
    }

    /// A TokenRequest for service account `sa` of `ns`.
    pub(crate) async fn token(
        &self,
        ns: &str,
        sa: &str,
        expiration_seconds: u64,
        audiences: &[String],
    ) -> Result<Minted, ApiError> {
        let mut spec = json!({"expirationSeconds": expiration_seconds});
        if !audiences.is_empty() {
            spec["audiences"] = json!(audiences);
        }
        let request = json!({
            "apiVersion": "authentication.k8s.io/v1",
            "kind": "TokenRequest",
            "spec": spec,
        });
        let path = format!("/api/v1/namespaces/{ns}/serviceaccounts/{sa}/token");
        let (status, body) = self
            .call(reqwest::Method::POST, &path, Some(&request))
            .await?;
        if !(200..300).contains(&status) {
            return Err(ApiError::Status {
                status,
                reason: format!("TokenRequest for {ns}/{sa}: {}", reason(&body)),
            });
        }
        let v: Value = serde_json::from_slice(&body)
            .map_err(|e| ApiError::Decode(format!("TokenRequest answer: {e}")))?;
        let token = v
            .pointer("/status/token")
            .and_then(Value::as_str)
            .filter(|t| !t.is_empty())
            .ok_or_else(|| ApiError::Decode("TokenRequest answer has no status.token".into()))?;
        Ok(Minted {
            token: SecretString::from(token.to_owned()),
        })
    }
}
