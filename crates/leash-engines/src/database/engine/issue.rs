//! `creds/:role`: a new credential under a lease, intent first, or the token's live one
//! again for roles with `reuse_lease_for_same_token`.

use std::time::Duration;

use leash_backend::{BackendRequest, CoreError, IssuanceCaps, LeaseInfo, LeaseRequest, Response};
use leash_types::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use serde_json::json;
use time::OffsetDateTime;

use super::config::{DbConfig, Plugin};
use super::roles::{DbRole, canary_default_statements};
use super::target::Target;
use super::{DatabaseBackend, upstream};
use crate::database::narrowing::{self, Dialect};
use crate::database::template::Vars;
use crate::database::{generate_password, generate_username};

/// The credential of a live lease, kept for `reuse_lease_for_same_token` (sealed at
/// rest like every engine entry; deleted when the lease is revoked). No `Debug`.
#[derive(Serialize, Deserialize)]
pub(super) struct Reusable {
    pub(super) lease_id: String,
    pub(super) username: String,
    pub(super) password: String,
}

impl Drop for Reusable {
    fn drop(&mut self) {
        use zeroize::Zeroize as _;
        self.password.zeroize();
    }
}

/// What a lease remembers (no secret).
#[derive(Serialize, Deserialize)]
pub(super) struct LeaseData {
    pub(super) db_name: String,
    pub(super) role: String,
    pub(super) username: String,
    #[serde(default)]
    pub(super) revocation_statements: Vec<String>,
    #[serde(default)]
    pub(super) renew_statements: Vec<String>,
    /// The narrowed scope (`SELECT on public.t1`), when the request narrowed it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) scope: Option<String>,
    /// Its credential is kept for `reuse_lease_for_same_token` (deleted at revocation).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub(super) reusable: bool,
    /// A canary credential (leash's records are the only place that says so).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub(super) canary: bool,
    /// On a trip, contain the identity it was issued to.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub(super) contain_on_trip: bool,
}

impl DatabaseBackend {
    pub(super) async fn issue(
        &self,
        req: &BackendRequest<'_>,
        role_name: &str,
    ) -> Result<Option<Response>, CoreError> {
        let role: DbRole = self
            .load(&format!("role/{role_name}"))
            .await?
            .ok_or_else(|| CoreError::invalid(format!("unknown role: {role_name}")))?;
        let config: DbConfig = self
            .load(&format!("config/{}", role.db_name))
            .await?
            .ok_or_else(|| {
                CoreError::invalid(format!(
                    "role {role_name:?} uses database {:?}, which is not configured",
                    role.db_name
                ))
            })?;
        if !config.allows(role_name) {
            return Err(CoreError::invalid(format!(
                "{role_name:?} is not an allowed role of database {:?} (allowed_roles)",
                role.db_name
            )));
        }
        let plugin = Plugin::parse(&config.plugin_name)?;
        let dialect = match plugin {
            Plugin::Postgres => Dialect::Postgres,
            Plugin::MySql(_) => Dialect::MySql,
        };
        // Narrowing is checked completely — names, the role's set, the catalogue —
        // before the lease or the user exists.
        let narrowed = match &role.narrowing {
            Some(n) => Some((n, n.narrow(req.data)?)),
            None if req.data.contains_key("tables") || req.data.contains_key("privileges") => {
                return Err(CoreError::invalid(format!(
                    "role {role_name:?} has no narrowing: tables and privileges cannot be asked for"
                )));
            }
            None => None,
        };
        // The same token asking again for this role: its live credential, not a new user.
        let reuse_key = match (
            role.reuse_lease_for_same_token && !role.canary,
            req.caller,
            &narrowed,
        ) {
            (true, Some(c), None) => Some(format!(
                "reuse/{}/{role_name}",
                c.hash
                    .0
                    .iter()
                    .map(|b| format!("{b:02x}"))
                    .collect::<String>()
            )),
            _ => None,
        };
        if let Some(key) = &reuse_key
            && let Some(r) = self.load::<Reusable>(key).await?
            && let Some(ttl) = self.leases.live_for_caller(req, &r.lease_id).await?
        {
            tracing::debug!(role = role_name, "reusing the token's live credential");
            let mut resp = Response::data(json!({
                "username": r.username,
                "password": r.password,
            }));
            resp.secret = Some(LeaseInfo {
                lease_id: r.lease_id.clone(),
                renewable: true,
                lease_duration: ttl,
            });
            return Ok(Some(resp));
        }
        let target = self.target(&role.db_name).await?;
        if let Some((_, nr)) = &narrowed {
            for (i, (schema, table)) in nr.tables.iter().enumerate() {
                if !target
                    .table_exists(schema, table)
                    .await
                    .map_err(|e| upstream(&role.db_name, &e))?
                {
                    return Err(CoreError::invalid(format!(
                        "tables[{i}] ({schema}.{table}): no such table in database {:?}",
                        role.db_name
                    )));
                }
            }
        }
        let creation_statements = match &narrowed {
            Some((n, nr)) => narrowing::expand(&role.creation_statements, &n.grants(nr, dialect)),
            None if role.canary && role.canary_statements.is_empty() => {
                canary_default_statements(dialect)
            }
            None if role.canary => role.canary_statements.clone(),
            None => role.creation_statements.clone(),
        };
        let display = req
            .caller
            .map(|c| c.entry.display_name.as_str())
            .unwrap_or("token");
        let username = generate_username(display, role_name, plugin.max_username());
        let password = generate_password();
        let internal = LeaseData {
            db_name: role.db_name.clone(),
            role: role_name.to_owned(),
            username: username.clone(),
            revocation_statements: role.revocation_statements.clone(),
            renew_statements: role.renew_statements.clone(),
            scope: narrowed.as_ref().map(|(n, nr)| n.describe(nr)),
            reusable: reuse_key.is_some(),
            canary: role.canary,
            contain_on_trip: role.contain_on_trip,
        };
        let pending = self
            .leases
            .begin(
                req,
                LeaseRequest {
                    path: format!("creds/{role_name}"),
                    ttl: Duration::from_secs(role.default_ttl),
                    max_ttl: Duration::from_secs(role.max_ttl),
                    renewable: true,
                    internal: serde_json::to_value(&internal)
                        .map_err(|e| CoreError::internal(e.to_string()))?,
                    caps: IssuanceCaps {
                        max_live_per_entity: role.max_live_leases_per_entity,
                        max_per_minute_per_entity: role.max_issuance_per_minute_per_entity,
                    },
                },
            )
            .await?;
        let expiration = OffsetDateTime::from_unix_timestamp(pending.expire_at)
            .map_err(|e| CoreError::internal(e.to_string()))?;
        let vars = Vars::new(username.clone())
            .with_password(SecretString::from(password.expose_secret().to_owned()))
            .with_expiration(expiration);
        if let Err(e) = target.create_user(&creation_statements, &vars).await {
            if let Target::My(t) = &*target
                && !role.rollback_statements.is_empty()
            {
                // MySQL DDL commits statement by statement (PostgreSQL rolled the whole
                // transaction back): undo what may have been made.
                if let Err(re) = t.revoke_user(&username, &role.rollback_statements).await {
                    tracing::warn!(error = %re, "rollback statements failed");
                }
            }
            // Whatever half-exists is revoked by the worker.
            self.leases.abandon(&pending).await?;
            return Err(upstream(&role.db_name, &e));
        }
        if let Err(e) = self.leases.activate(&pending).await {
            self.leases.abandon(&pending).await?;
            return Err(e);
        }
        if let Some(key) = &reuse_key {
            let rec = Reusable {
                lease_id: pending.id.clone(),
                username: username.clone(),
                password: password.expose_secret().to_owned(),
            };
            // Best effort: without the record the next request makes a new user.
            if let Err(e) = self.save(key, &rec).await {
                tracing::warn!(error = %e, "could not record the credential for reuse");
            } else if let Err(e) = self.save(&format!("reuse-lease/{}", pending.id), key).await {
                tracing::warn!(error = %e, "could not index the reusable credential");
            }
        }
        let mut r = Response::data(json!({
            "username": username,
            "password": password.expose_secret(),
        }));
        r.secret = Some(LeaseInfo {
            lease_id: pending.id,
            renewable: true,
            lease_duration: pending.ttl,
        });
        Ok(Some(r))
    }
}
