//! The `kubernetes` auth method: a pod's service-account token exchanged for a leash
//! token whose policies come from the role binding that service account.
//!
//! Paths (Vault's):
//! * `config` — the cluster ([`config`]); `token_reviewer_jwt` is never returned.
//! * `role/:name`, `LIST role/` — bound names and namespaces, audience, alias source and
//!   token fields ([`role`]).
//! * `login` `{role, jwt}` (no token needed). In order: the role exists; the token
//!   parses as a JWT; then either
//!   - **offline**, when `pem_keys` are configured: the signature (RS256/384/512,
//!     ES256/384) with one of them, `exp` (required), `nbf`, `iat`, `iss` when `issuer`
//!     is set (and `disable_iss_validation` is not), `aud` when the role names an
//!     `audience`, and the service account from the legacy or projected claims
//!     ([`claims`]); or
//!   - the **TokenReview API** ([`review`]), asking for the role's audience, with the
//!     reviewer JWT (else the pod's own, else the caller's token) as bearer; the
//!     reviewed identity must agree with what the token's claims say;
//!
//!   then the service-account name and namespace against the role's globs. The grant:
//!   display name `kubernetes-<ns>-<name>`, metadata `role`, `service_account_name`,
//!   `service_account_namespace`, `service_account_uid`, `service_account_secret_name`,
//!   alias the service account's uid (or `ns/name` with `alias_name_source =
//!   serviceaccount_name`).
//!
//! Every refusal is a 400 naming the failed check, never containing a token.

mod claims;
mod config;
mod review;
mod role;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use jsonwebtoken::Algorithm;
use leash_backend::{
    Backend, BackendRequest, CoreError, MountStorage, Response, Route, Routes, fields, match_route,
};

use leash_types::{Clock, Operation, SecretString};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use self::claims::ServiceAccount;
use self::config::KubeConfig;
use self::review::ReviewError;
use self::role::KubeRole;
use crate::verify::{JwtError, TimeRules, UnverifiedJwt};

/// Algorithms Kubernetes signs service-account tokens with (RSA or ECDSA keys).
const OFFLINE_ALGS: &[Algorithm] = &[
    Algorithm::RS256,
    Algorithm::RS384,
    Algorithm::RS512,
    Algorithm::ES256,
    Algorithm::ES384,
];
/// Clock skew allowed on offline time checks (seconds).
const SKEW: i64 = 60;

/// The method serving one `kubernetes` mount.
pub struct KubernetesBackend {
    store: MountStorage,
    clock: Arc<dyn Clock>,
    /// The TokenReview client for the CA it was built with (rebuilt when it changes).
    client: Mutex<Option<(Option<String>, reqwest::Client)>>,
}

/// The `kubernetes` auth method, storing in `store` (its mount's namespace).
pub fn new_backend(store: MountStorage, clock: Arc<dyn Clock>) -> Arc<dyn Backend> {
    Arc::new(KubernetesBackend {
        store,
        clock,
        client: Mutex::new(None),
    })
}

impl KubernetesBackend {
    async fn load<T: DeserializeOwned>(&self, key: &str) -> Result<Option<T>, CoreError> {
        self.store.load_json(key).await
    }

    async fn save<T: Serialize>(&self, key: &str, v: &T) -> Result<(), CoreError> {
        self.store.save_json(key, v).await
    }

    /// The TokenReview client trusting `ca` (only).
    fn client(&self, ca: Option<String>) -> Result<reqwest::Client, CoreError> {
        if let Ok(guard) = self.client.lock()
            && let Some((have, c)) = guard.as_ref()
            && *have == ca
        {
            return Ok(c.clone());
        }
        let c = crate::verify::http_client(ca.as_deref(), review::TIMEOUT)
            .map_err(|e| CoreError::Forbidden(format!("TokenReview request failed: {e}")))?;
        if let Ok(mut guard) = self.client.lock() {
            *guard = Some((ca, c.clone()));
        }
        Ok(c)
    }

    /// Offline validation against `pem_keys`.
    fn offline(
        &self,
        cfg: &KubeConfig,
        role: &KubeRole,
        jwt: &UnverifiedJwt<'_>,
    ) -> Result<ServiceAccount, CoreError> {
        let keys = cfg.public_keys()?;
        let claims = jwt
            .verify(&keys, OFFLINE_ALGS)
            .map_err(|e| crate::verify::refused(&e))?;
        claims
            .check_times(&TimeRules {
                now: self.clock.unix(),
                exp_leeway: 0,
                nbf_leeway: 0,
                skew: SKEW,
                require_exp: true,
            })
            .map_err(|e| crate::verify::refused(&e))?;
        if !cfg.issuer.is_empty() && !cfg.disable_iss_validation {
            claims
                .check_issuer(&cfg.issuer)
                .map_err(|e| crate::verify::refused(&e))?;
        }
        if !role.audience.is_empty() {
            claims
                .check_audience(std::slice::from_ref(&role.audience), false)
                .map_err(|e| crate::verify::refused(&e))?;
        }
        claims::service_account(claims.as_map()).map_err(|e| CoreError::Forbidden(e.to_owned()))
    }

    /// Validation by the cluster's TokenReview API.
    async fn token_review(
        &self,
        cfg: &KubeConfig,
        role: &KubeRole,
        token: &str,
        jwt: &UnverifiedJwt<'_>,
    ) -> Result<ServiceAccount, CoreError> {
        if cfg.kubernetes_host.is_empty() {
            return Err(CoreError::Forbidden(
                "TokenReview request failed: kubernetes_host is not configured".to_owned(),
            ));
        }
        let client = self.client(cfg.ca_pem().await)?;
        let bearer = match cfg.reviewer_jwt().await {
            Some(t) => t,
            None => SecretString::from(token.trim().to_owned()),
        };
        let audience = (!role.audience.is_empty()).then_some(role.audience.as_str());
        let reviewed = review::review(
            &client,
            &cfg.kubernetes_host,
            &bearer,
            token.trim(),
            audience,
        )
        .await
        .map_err(|e: ReviewError| {
            if let ReviewError::Failed(reason) = &e {
                // For operators: the cluster is unreachable or refuses the reviewer.
                tracing::warn!(host = %cfg.kubernetes_host, %reason, "TokenReview request failed");
            }
            CoreError::Forbidden(e.to_string())
        })?;
        if let Some(a) = audience
            && !reviewed.audiences.iter().any(|r| r == a)
        {
            return Err(crate::verify::refused(&JwtError::Audience));
        }
        // What the token says (unverified) must be what the API server vouched for.
        let claimed = claims::service_account(jwt.unverified_claims()).ok();
        if let Some(c) = &claimed
            && (c.namespace != reviewed.namespace
                || c.name != reviewed.name
                || (!c.uid.is_empty() && !reviewed.uid.is_empty() && c.uid != reviewed.uid))
        {
            return Err(CoreError::Forbidden(
                "TokenReview: the reviewed service account does not match the token's claims"
                    .to_owned(),
            ));
        }
        Ok(ServiceAccount {
            uid: if reviewed.uid.is_empty() {
                claimed.as_ref().map(|c| c.uid.clone()).unwrap_or_default()
            } else {
                reviewed.uid
            },
            secret_name: claimed.map(|c| c.secret_name).unwrap_or_default(),
            namespace: reviewed.namespace,
            name: reviewed.name,
        })
    }

    async fn login(&self, req: &BackendRequest<'_>) -> Result<Option<Response>, CoreError> {
        let role_name = match fields::string(req.data, "role")? {
            Some(r) if !r.is_empty() => r,
            _ => return Err(CoreError::invalid("missing role")),
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
        let Some(role): Option<KubeRole> = self.load(&format!("role/{role_name}")).await? else {
            return Err(CoreError::invalid("invalid role name"));
        };
        let Some(cfg): Option<KubeConfig> = self.load("config").await? else {
            return Err(CoreError::invalid(
                "could not load backend configuration: write auth/<mount>/config first",
            ));
        };
        let jwt = UnverifiedJwt::parse(token).map_err(|e| crate::verify::refused(&e))?;
        let sa = if cfg.pem_keys.is_empty() {
            self.token_review(&cfg, &role, token, &jwt).await?
        } else {
            self.offline(&cfg, &role, &jwt)?
        };
        role.check_bound(&sa.namespace, &sa.name)?;
        let alias = if role.alias_name_source == "serviceaccount_name" {
            format!("{}/{}", sa.namespace, sa.name)
        } else if sa.uid.is_empty() {
            return Err(CoreError::Forbidden(
                "the service account's uid is unknown: use alias_name_source \"serviceaccount_name\""
                    .to_owned(),
            ));
        } else {
            sa.uid.clone()
        };
        let metadata = BTreeMap::from([
            ("role".to_owned(), role_name.clone()),
            ("service_account_name".to_owned(), sa.name.clone()),
            ("service_account_namespace".to_owned(), sa.namespace.clone()),
            ("service_account_uid".to_owned(), sa.uid.clone()),
            (
                "service_account_secret_name".to_owned(),
                sa.secret_name.clone(),
            ),
        ]);
        let mut grant = role.token.grant(
            format!("kubernetes-{}-{}", sa.namespace, sa.name),
            alias,
            metadata,
        );
        grant.role = Some(role_name);
        Ok(Some(Response::login(grant)))
    }
}

#[async_trait]
impl Backend for KubernetesBackend {
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
                    .load::<KubeConfig>("config")
                    .await?
                    .map(|c| Response::data(c.to_json()))),
                _ if write => {
                    let (cfg, warnings) = KubeConfig::from_write(req.data)?;
                    self.save("config", &cfg).await?;
                    Ok(Response::warnings_only(warnings))
                }
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
                    .load::<KubeRole>(&key)
                    .await?
                    .map(|r| Response::data(r.to_json()))),
                Operation::Delete => {
                    self.store.delete(&key).await?;
                    Ok(None)
                }
                _ if write => {
                    let mut role: KubeRole = self.load(&key).await?.unwrap_or_default();
                    let warnings = role.update(req.data)?;
                    self.save(&key, &role).await?;
                    Ok(Response::warnings_only(warnings))
                }
                _ => Err(CoreError::UnsupportedOperation),
            };
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
            Route::path("config"),
            Route::path("role"),
            Route::path("role/:name"),
        ];
        Routes::Table(ROUTES)
    }
}

#[cfg(test)]
mod tests;
