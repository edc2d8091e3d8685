//! Typed helpers for the token store (`auth/token/*`).
//!
//! Every helper returns the decoded [`Auth`] or [`TokenInfo`]; a token passed as an
//! argument travels only in a request body, never in a URL (where proxies log it).

use secrecy::{ExposeSecret, SecretString};
use serde_json::{Value, json};

use crate::types::{Auth, Secret, TokenCreateRequest, TokenInfo, decode};
use crate::{Client, ClientError};

impl Client {
    /// Creates a token (a child of this client's token unless `req.orphan`).
    pub async fn token_create(&self, req: &TokenCreateRequest) -> Result<Auth, ClientError> {
        let body = self.write(&req.path(), &req.body()).await?;
        auth_of(body)
    }

    /// Looks up this client's own token.
    pub async fn token_lookup_self(&self) -> Result<TokenInfo, ClientError> {
        let body = self.read("auth/token/lookup-self").await?;
        info_of(body)
    }

    /// Looks up another token.
    pub async fn token_lookup(&self, token: &SecretString) -> Result<TokenInfo, ClientError> {
        let body = self
            .write(
                "auth/token/lookup",
                &json!({ "token": token.expose_secret() }),
            )
            .await?;
        info_of(body)
    }

    /// Looks up a token by its accessor (the answer's `id` is empty).
    pub async fn token_lookup_accessor(&self, accessor: &str) -> Result<TokenInfo, ClientError> {
        let body = self
            .write(
                "auth/token/lookup-accessor",
                &json!({ "accessor": accessor }),
            )
            .await?;
        info_of(body)
    }

    /// Renews this client's own token, asking for `increment` seconds if given.
    pub async fn token_renew_self(&self, increment: Option<u64>) -> Result<Auth, ClientError> {
        let body = match increment {
            Some(i) => json!({ "increment": i }),
            None => json!({}),
        };
        auth_of(self.write("auth/token/renew-self", &body).await?)
    }

    /// Renews another token.
    pub async fn token_renew(
        &self,
        token: &SecretString,
        increment: Option<u64>,
    ) -> Result<Auth, ClientError> {
        let mut body = json!({ "token": token.expose_secret() });
        if let Some(i) = increment {
            body["increment"] = json!(i);
        }
        auth_of(self.write("auth/token/renew", &body).await?)
    }

    /// Revokes this client's own token and its children.
    pub async fn token_revoke_self(&self) -> Result<(), ClientError> {
        self.write("auth/token/revoke-self", &json!({}))
            .await
            .map(drop)
    }

    /// Revokes another token and its children.
    pub async fn token_revoke(&self, token: &SecretString) -> Result<(), ClientError> {
        self.write(
            "auth/token/revoke",
            &json!({ "token": token.expose_secret() }),
        )
        .await
        .map(drop)
    }

    /// Revokes a token but not its children, which become orphans (needs sudo).
    pub async fn token_revoke_orphan(&self, token: &SecretString) -> Result<(), ClientError> {
        self.write(
            "auth/token/revoke-orphan",
            &json!({ "token": token.expose_secret() }),
        )
        .await
        .map(drop)
    }

    /// Revokes the token with this accessor and its children.
    pub async fn token_revoke_accessor(&self, accessor: &str) -> Result<(), ClientError> {
        self.write(
            "auth/token/revoke-accessor",
            &json!({ "accessor": accessor }),
        )
        .await
        .map(drop)
    }
}

fn auth_of(body: Option<Value>) -> Result<Auth, ClientError> {
    let body = body.ok_or_else(|| ClientError::Decode("empty body, expected auth".into()))?;
    Secret::from_body(body)?
        .auth
        .ok_or_else(|| ClientError::Decode("response has no auth block".into()))
}

fn info_of(body: Option<Value>) -> Result<TokenInfo, ClientError> {
    let data = body
        .and_then(|mut b| b.get_mut("data").map(Value::take))
        .filter(|d| !d.is_null())
        .ok_or_else(|| ClientError::Decode("response has no data".into()))?;
    decode(data, "token lookup data")
}
