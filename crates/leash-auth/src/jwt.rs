//! The `jwt` auth method (also mounted as type `oidc`): workload identity tokens — a CI
//! job's OIDC token, any issuer that publishes a JWKS — exchanged for leash tokens.
//!
//! Paths (Vault's):
//! * `config` — key source and issuer ([`config`]); reads return no secret.
//! * `role/:name`, `LIST role/` — bindings and token fields ([`role`]).
//! * `login` `{role, jwt}` (no token needed) — checks, in this order: the role exists;
//!   the token parses; its signature verifies with a configured key and an allowed
//!   algorithm (an unknown `kid` refetches the JWKS, throttled — [`keys`]); `exp`
//!   (required), `nbf`, `iat`; `iss` against `bound_issuer` (or the discovered issuer);
//!   `aud` against `bound_audiences` (a token with an `aud` needs the role to bind one);
//!   `bound_subject`; `bound_claims`; the `user_claim`. Then it grants the role's token
//!   fields with metadata `role` plus the `claim_mappings`, display name
//!   `jwt-<user>`, and the user claim as identity alias.
//!
//! Every refusal is a 400 naming the failed check, never containing the token. Not
//! supported: Vault's OIDC browser flow (`role_type = "oidc"`, `oidc/auth_url`,
//! `oidc/callback`), which answer with a message saying so.

mod config;
mod keys;
mod role;

use std::collections::BTreeMap;
use std::sync::Arc;

use async_trait::async_trait;
use leash_backend::{
    Backend, BackendRequest, CoreError, MountStorage, Response, Route, Routes, fields, match_route,
};

use leash_types::{Clock, Operation};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use self::config::{JwtConfig, KeySource};
use self::keys::{KeyCache, Remote};
use self::role::JwtRole;
use crate::verify::{FetchError, JwtError, UnverifiedJwt};

/// The method serving one `jwt` (or `oidc`) mount.
pub struct JwtBackend {
    store: MountStorage,
    clock: Arc<dyn Clock>,
    keys: KeyCache,
}

/// The `jwt` auth method, storing in `store` (its mount's namespace).
pub fn new_backend(store: MountStorage, clock: Arc<dyn Clock>) -> Arc<dyn Backend> {
    Arc::new(JwtBackend {
        store,
        clock,
        keys: KeyCache::default(),
    })
}

const OIDC_FLOW: &str = "the OIDC browser login flow is not supported by leash: log in with the token itself at auth/<mount>/login {role, jwt}";

impl JwtBackend {
    async fn load<T: DeserializeOwned>(&self, key: &str) -> Result<Option<T>, CoreError> {
        self.store.load_json(key).await
    }

    async fn save<T: Serialize>(&self, key: &str, v: &T) -> Result<(), CoreError> {
        self.store.save_json(key, v).await
    }

    async fn write_config(
        &self,
        data: &serde_json::Map<String, Value>,
    ) -> Result<Option<Response>, CoreError> {
        let (cfg, warnings) = JwtConfig::from_write(data)?;
        let now = self.clock.unix();
        match cfg.source()? {
            KeySource::Static(_) => self.keys.clear().await,
            KeySource::Jwks { url, ca_pem } => {
                let remote = Remote {
                    discovery: false,
                    url: &url,
                    ca_pem: &ca_pem,
                };
                self.keys
                    .prime(&remote, now)
                    .await
                    .map_err(|e| CoreError::invalid(format!("error checking jwks_url: {e}")))?;
            }
            KeySource::Discovery { url, ca_pem } => {
                let remote = Remote {
                    discovery: true,
                    url: &url,
                    ca_pem: &ca_pem,
                };
                self.keys.prime(&remote, now).await.map_err(|e| {
                    CoreError::invalid(format!("error checking oidc_discovery_url: {e}"))
                })?;
            }
        }
        self.save("config", &cfg).await?;
        Ok(Response::warnings_only(warnings))
    }

    async fn write_role(
        &self,
        name: &str,
        data: &serde_json::Map<String, Value>,
    ) -> Result<Option<Response>, CoreError> {
        let key = format!("role/{name}");
        let mut role: JwtRole = self.load(&key).await?.unwrap_or_default();
        let warnings = role.update(data)?;
        self.save(&key, &role).await?;
        Ok(Response::warnings_only(warnings))
    }

    /// Verifies the signature, refetching remote keys once (throttled) when the token
    /// names a key id the cache does not have. Returns the claims and the discovered
    /// issuer, if any.
    async fn verify_signature(
        &self,
        cfg: &JwtConfig,
        jwt: &UnverifiedJwt<'_>,
    ) -> Result<(crate::verify::Claims, Option<String>), CoreError> {
        let algs = cfg.algorithms()?;
        let (discovery, url, ca_pem) = match cfg.source()? {
            KeySource::Static(keys) => {
                return jwt
                    .verify(&keys, &algs)
                    .map(|c| (c, None))
                    .map_err(|e| crate::verify::refused(&e));
            }
            KeySource::Jwks { url, ca_pem } => (false, url, ca_pem),
            KeySource::Discovery { url, ca_pem } => (true, url, ca_pem),
        };
        let remote = Remote {
            discovery,
            url: &url,
            ca_pem: &ca_pem,
        };
        let now = self.clock.unix();
        let fetch_failed = |e: FetchError| {
            tracing::warn!(url = %url, error = %e, "fetching the issuer's keys failed");
            CoreError::Forbidden(format!("cannot fetch the issuer's keys: {e}"))
        };
        let set = self
            .keys
            .current(&remote, now)
            .await
            .map_err(fetch_failed)?;
        match jwt.verify(&set.keys, &algs) {
            Ok(c) => Ok((c, set.issuer)),
            Err(JwtError::UnknownKeyId) => {
                match self
                    .keys
                    .refetch(&remote, now)
                    .await
                    .map_err(fetch_failed)?
                {
                    Some(fresh) => jwt
                        .verify(&fresh.keys, &algs)
                        .map(|c| (c, fresh.issuer))
                        .map_err(|e| crate::verify::refused(&e)),
                    None => Err(crate::verify::refused(&JwtError::UnknownKeyId)),
                }
            }
            Err(e) => Err(crate::verify::refused(&e)),
        }
    }

    async fn login(&self, req: &BackendRequest<'_>) -> Result<Option<Response>, CoreError> {
        let cfg: Option<JwtConfig> = self.load("config").await?;
        let role_name = match fields::string(req.data, "role")? {
            Some(r) if !r.is_empty() => r,
            _ => match cfg.as_ref().map(|c| c.default_role.clone()) {
                Some(d) if !d.is_empty() => d,
                _ => return Err(CoreError::invalid("missing role")),
            },
        };
        let token = match req.data.get("jwt") {
            Some(Value::String(t)) if !t.trim().is_empty() => t.as_str(),
            Some(Value::String(_)) | None | Some(Value::Null) => {
                return Err(CoreError::invalid("missing jwt"));
            }
            Some(_) => return Err(CoreError::invalid("invalid jwt: expected a string")),
        };
        if crate::check_role_name(&role_name).is_err() {
            return Err(CoreError::invalid("invalid role name"));
        }
        let Some(role): Option<JwtRole> = self.load(&format!("role/{role_name}")).await? else {
            return Err(CoreError::invalid("invalid role name"));
        };
        let Some(cfg) = cfg else {
            return Err(CoreError::invalid(
                "could not load configuration: write auth/<mount>/config first",
            ));
        };
        let jwt = UnverifiedJwt::parse(token).map_err(|e| crate::verify::refused(&e))?;
        let (claims, discovered_issuer) = self.verify_signature(&cfg, &jwt).await?;
        claims
            .check_times(&role.time_rules(self.clock.unix()))
            .map_err(|e| crate::verify::refused(&e))?;
        let issuer = if cfg.bound_issuer.is_empty() {
            discovered_issuer
        } else {
            Some(cfg.bound_issuer.clone())
        };
        if let Some(iss) = issuer {
            claims
                .check_issuer(&iss)
                .map_err(|e| crate::verify::refused(&e))?;
        }
        claims
            .check_audience(&role.bound_audiences, true)
            .map_err(|e| crate::verify::refused(&e))?;
        role.check_bindings(&claims)?;
        let user = role.user(&claims)?;
        let mut metadata: BTreeMap<String, String> = role.mapped_metadata(&claims)?;
        metadata.insert("role".to_owned(), role_name.clone());
        let mut grant = role.token.grant(format!("jwt-{user}"), user, metadata);
        grant.role = Some(role_name);
        Ok(Some(Response::login(grant)))
    }
}

#[async_trait]
impl Backend for JwtBackend {
    async fn exists(&self, req: &BackendRequest<'_>) -> Result<Option<bool>, CoreError> {
        crate::config_or_role_exists(&self.store, req.path).await
    }

    async fn handle(&self, req: &BackendRequest<'_>) -> Result<Option<Response>, CoreError> {
        let op = req.operation;
        let write = matches!(op, Operation::Create | Operation::Update);
        let path = req.dispatch_path();
        if path == "login" {
            return match op {
                _ if write => self.login(req).await,
                _ => Err(CoreError::UnsupportedOperation),
            };
        }
        if path == "config" {
            return match op {
                Operation::Read => Ok(self
                    .load::<JwtConfig>("config")
                    .await?
                    .map(|c| Response::data(c.to_json()))),
                _ if write => self.write_config(req.data).await,
                _ => Err(CoreError::UnsupportedOperation),
            };
        }
        if path == "role" {
            return match op {
                Operation::List => crate::list_roles(&self.store).await,
                _ => Err(CoreError::UnsupportedOperation),
            };
        }
        if let Some(c) = match_route("role/:name", path) {
            let name = c[0];
            crate::check_role_name(name)?;
            let key = format!("role/{name}");
            return match op {
                Operation::Read => Ok(self
                    .load::<JwtRole>(&key)
                    .await?
                    .map(|r| Response::data(r.to_json()))),
                Operation::Delete => {
                    self.store.delete(&key).await?;
                    Ok(None)
                }
                _ if write => self.write_role(name, req.data).await,
                _ => Err(CoreError::UnsupportedOperation),
            };
        }
        if path == "oidc/auth_url" || path == "oidc/callback" {
            return Err(CoreError::invalid(OIDC_FLOW));
        }
        Err(CoreError::UnknownPath(format!(
            "{}{}",
            req.mount.route_prefix(),
            path
        )))
    }

    fn routes(&self) -> Routes<'_> {
        const ROUTES: &[Route] = &[
            Route::path("login").unauthenticated(),
            Route::path("oidc/auth_url").unauthenticated(),
            Route::path("oidc/callback").unauthenticated(),
            Route::path("config"),
            Route::path("role"),
            Route::path("role/:name"),
        ];
        Routes::Table(ROUTES)
    }
}

#[cfg(test)]
mod tests;
