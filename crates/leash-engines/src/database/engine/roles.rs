//! Roles (`roles/:name`): statement fields as Vault accepts them, template checks, and
//! what a read shows.

use base64::Engine as _;
use leash_backend::{CoreError, Response, fields};
use leash_types::SecretString;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use time::OffsetDateTime;

use super::DatabaseBackend;
use super::config::{DbConfig, Plugin};
use crate::database::DbError;
use crate::database::narrowing::{self, Dialect, Narrowing};
use crate::database::template::{Vars, render};

/// A stored role.
#[derive(Serialize, Deserialize, Clone, Debug)]
pub(super) struct DbRole {
    pub(super) db_name: String,
    pub(super) creation_statements: Vec<String>,
    #[serde(default)]
    pub(super) revocation_statements: Vec<String>,
    #[serde(default)]
    pub(super) rollback_statements: Vec<String>,
    #[serde(default)]
    pub(super) renew_statements: Vec<String>,
    /// Seconds; 0 = the mount's default.
    pub(super) default_ttl: u64,
    /// Seconds; 0 = the mount's maximum.
    pub(super) max_ttl: u64,
    /// What a request may narrow the credential to (`{{grants}}` in the statements).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) narrowing: Option<Narrowing>,
    /// Most live leases of this role one entity may hold (0: no cap).
    #[serde(default)]
    pub(super) max_live_leases_per_entity: u64,
    /// Most leases of this role one entity may be issued per minute (0: no cap).
    #[serde(default)]
    pub(super) max_issuance_per_minute_per_entity: u64,
    /// A second request by the same token gets the live lease's credential again.
    #[serde(default)]
    pub(super) reuse_lease_for_same_token: bool,
    /// A canary role: its credentials are real (same username pattern, a user that can
    /// log in) but made by `canary_statements` (default: a login role with no
    /// privilege), and any login with one trips the canary (the core's session observer
    /// watches its connection whatever `observe_sessions` says).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub(super) canary: bool,
    /// What makes a canary's user (empty: [`canary_default_statements`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub(super) canary_statements: Vec<String>,
    /// On a trip, run the kill switch on the identity the canary was issued to.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub(super) contain_on_trip: bool,
}

/// A canary's user when the operator gives no `canary_statements`: it can log in and
/// nothing else (no grant), and carries the lease's expiry where the dialect can.
pub(super) fn canary_default_statements(dialect: Dialect) -> Vec<String> {
    match dialect {
        Dialect::Postgres => vec![
            "CREATE ROLE \"{{name}}\" WITH LOGIN PASSWORD '{{password}}' VALID UNTIL '{{expiration}}';"
                .to_owned(),
        ],
        Dialect::MySql => vec!["CREATE USER '{{name}}'@'%' IDENTIFIED BY '{{password}}';".to_owned()],
    }
}

/// A statement list field as Vault accepts it: a JSON array of strings, or one string
/// (itself possibly a JSON array, or base64 of either). Not split on commas: SQL has
/// commas.
pub(super) fn statements(
    data: &Map<String, Value>,
    field: &str,
) -> Result<Option<Vec<String>>, CoreError> {
    fn from_str(s: &str, depth: u8) -> Result<Vec<String>, CoreError> {
        let t = s.trim();
        if t.is_empty() {
            return Ok(Vec::new());
        }
        if t.starts_with('[')
            && let Ok(list) = serde_json::from_str::<Vec<String>>(t)
        {
            return Ok(list
                .into_iter()
                .map(|s| s.trim().to_owned())
                .filter(|s| !s.is_empty())
                .collect());
        }
        if depth == 0
            && !t.contains(char::is_whitespace)
            && let Ok(bytes) = base64::engine::general_purpose::STANDARD.decode(t)
            && let Ok(text) = String::from_utf8(bytes)
        {
            return from_str(&text, 1);
        }
        Ok(vec![t.to_owned()])
    }
    match data.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => from_str(s, 0).map(Some),
        Some(Value::Array(items)) => items
            .iter()
            .map(|v| match v {
                Value::String(s) => Ok(s.trim().to_owned()),
                _ => Err(CoreError::invalid(format!(
                    "invalid value for field {field:?}: expected a list of strings"
                ))),
            })
            .filter(|r| r.as_ref().map_or(true, |s| !s.is_empty()))
            .collect::<Result<Vec<_>, _>>()
            .map(Some),
        Some(_) => Err(CoreError::invalid(format!(
            "invalid value for field {field:?}: expected a string or a list of strings"
        ))),
    }
}

/// Checks that every statement renders with the placeholders its operation provides.
pub(super) fn check_templates(
    field: &str,
    list: &[String],
    password: bool,
    expiration: bool,
) -> Result<(), CoreError> {
    let mut vars = Vars::new("v-check");
    if password {
        vars = vars.with_password(SecretString::from("check".to_owned()));
    }
    if expiration {
        vars = vars.with_expiration(OffsetDateTime::UNIX_EPOCH);
    }
    for (i, s) in list.iter().enumerate() {
        render(s, &vars).map_err(|e| {
            let e = match e {
                DbError::MissingValue { name } => {
                    format!("placeholder {{{{{name}}}}} is not available in {field}")
                }
                other => other.to_string(),
            };
            CoreError::invalid(format!("{field}[{i}]: {e}"))
        })?;
    }
    Ok(())
}

/// Whether a PostgreSQL creation statement grants privileges on objects (tables…) to
/// the new role directly, rather than membership in a group role.
pub(super) fn grants_on_objects(statement: &str) -> bool {
    let upper = statement.to_ascii_uppercase();
    upper.split(';').any(|s| {
        let s = s.trim_start();
        s.starts_with("GRANT")
            && s.contains(" ON ")
            && s.contains(" TO ")
            && (s.contains("{{NAME}}") || s.contains("{{ NAME }}") || s.contains("{{USERNAME}}"))
    })
}

pub(super) const GRANT_WARNING: &str = "creation_statements grant privileges on tables to each credential directly: every live credential adds an entry to each table's ACL, revocation is slow, and PostgreSQL refuses further grants at ~2 400 live credentials per table (\"row is too big\"). Grant membership in a pre-made group role instead (CREATE ROLE \"{{name}}\" ... IN ROLE agent_readonly); see docs/database.md";

const ROLE_FIELDS: &[&str] = &[
    "db_name",
    "creation_statements",
    "narrowing",
    "revocation_statements",
    "rollback_statements",
    "renew_statements",
    "default_ttl",
    "max_ttl",
    "credential_type",
    "max_live_leases_per_entity",
    "max_issuance_per_minute_per_entity",
    "reuse_lease_for_same_token",
    "canary",
    "canary_statements",
    "contain_on_trip",
];

impl DatabaseBackend {
    pub(super) async fn write_role(
        &self,
        name: &str,
        data: &Map<String, Value>,
    ) -> Result<Option<Response>, CoreError> {
        let key = format!("role/{name}");
        let existing: Option<DbRole> = self.load(&key).await?;
        let db_name = match (fields::string(data, "db_name")?, &existing) {
            (Some(d), _) if !d.is_empty() => d,
            (_, Some(e)) => e.db_name.clone(),
            _ => return Err(CoreError::invalid("missing required field \"db_name\"")),
        };
        let config: DbConfig = self
            .load(&format!("config/{db_name}"))
            .await?
            .ok_or_else(|| {
                CoreError::invalid(format!(
                    "unknown db_name {db_name:?}: configure it first at database/config/{db_name}"
                ))
            })?;
        let pick = |field: &str, old: Option<&Vec<String>>| -> Result<Vec<String>, CoreError> {
            Ok(match statements(data, field)? {
                Some(l) => l,
                None => old.cloned().unwrap_or_default(),
            })
        };
        let creation_statements = pick(
            "creation_statements",
            existing.as_ref().map(|e| &e.creation_statements),
        )?;
        let canary = match fields::boolean(data, "canary")? {
            Some(b) => b,
            None => existing.as_ref().is_some_and(|e| e.canary),
        };
        let canary_statements = pick(
            "canary_statements",
            existing.as_ref().map(|e| &e.canary_statements),
        )?;
        let contain_on_trip = match fields::boolean(data, "contain_on_trip")? {
            Some(b) => b,
            None => existing.as_ref().is_some_and(|e| e.contain_on_trip),
        };
        if !canary && (!canary_statements.is_empty() || contain_on_trip) {
            return Err(CoreError::invalid(
                "canary_statements and contain_on_trip need \"canary\": true",
            ));
        }
        if creation_statements.is_empty() && !canary {
            return Err(CoreError::invalid(
                "missing required field \"creation_statements\"",
            ));
        }
        check_templates("canary_statements", &canary_statements, true, true)?;
        let revocation_statements = pick(
            "revocation_statements",
            existing.as_ref().map(|e| &e.revocation_statements),
        )?;
        let rollback_statements = pick(
            "rollback_statements",
            existing.as_ref().map(|e| &e.rollback_statements),
        )?;
        let renew_statements = pick(
            "renew_statements",
            existing.as_ref().map(|e| &e.renew_statements),
        )?;
        let dialect = match Plugin::parse(&config.plugin_name)? {
            Plugin::Postgres => Dialect::Postgres,
            Plugin::MySql(_) => Dialect::MySql,
        };
        let narrowing = match data.get("narrowing") {
            None => existing.as_ref().and_then(|e| e.narrowing.clone()),
            Some(Value::Null) => None,
            Some(v) => Some(Narrowing::parse(v, dialect)?),
        };
        let has_grants = creation_statements
            .iter()
            .any(|s| s.trim() == narrowing::GRANTS_PLACEHOLDER);
        match (&narrowing, has_grants) {
            (Some(_), false) => {
                return Err(CoreError::invalid(
                    "creation_statements: a role with narrowing needs a \"{{grants}}\" statement where leash puts the GRANTs",
                ));
            }
            (None, true) => {
                return Err(CoreError::invalid(
                    "creation_statements: \"{{grants}}\" needs the role's narrowing (schemas, tables, privileges)",
                ));
            }
            _ => {}
        }
        let plain: Vec<String> = creation_statements
            .iter()
            .filter(|s| s.trim() != narrowing::GRANTS_PLACEHOLDER)
            .cloned()
            .collect();
        check_templates("creation_statements", &plain, true, true)?;
        check_templates(
            "revocation_statements",
            &revocation_statements,
            false,
            false,
        )?;
        check_templates("rollback_statements", &rollback_statements, false, false)?;
        check_templates("renew_statements", &renew_statements, false, true)?;
        let default_ttl = match fields::duration(data, "default_ttl")? {
            Some(d) => d.as_secs(),
            None => existing.as_ref().map_or(0, |e| e.default_ttl),
        };
        let max_ttl = match fields::duration(data, "max_ttl")? {
            Some(d) => d.as_secs(),
            None => existing.as_ref().map_or(0, |e| e.max_ttl),
        };
        if max_ttl > 0 && default_ttl > max_ttl {
            return Err(CoreError::invalid(format!(
                "default_ttl ({default_ttl}s) cannot be greater than max_ttl ({max_ttl}s)"
            )));
        }
        if let Some(t) = fields::string(data, "credential_type")?
            && !t.is_empty()
            && t != "password"
        {
            return Err(CoreError::invalid(
                "credential_type is not supported: leash issues \"password\" credentials",
            ));
        }
        let cap = |field: &str, old: u64| -> Result<u64, CoreError> {
            match fields::integer(data, field)? {
                Some(n) if n < 0 => Err(CoreError::invalid(format!(
                    "{field} must be 0 (no cap) or more"
                ))),
                Some(n) => Ok(u64::try_from(n).unwrap_or(0)),
                None => Ok(old),
            }
        };
        let max_live_leases_per_entity = cap(
            "max_live_leases_per_entity",
            existing
                .as_ref()
                .map_or(0, |e| e.max_live_leases_per_entity),
        )?;
        let max_issuance_per_minute_per_entity = cap(
            "max_issuance_per_minute_per_entity",
            existing
                .as_ref()
                .map_or(0, |e| e.max_issuance_per_minute_per_entity),
        )?;
        let reuse_lease_for_same_token = match fields::boolean(data, "reuse_lease_for_same_token")?
        {
            Some(b) => b,
            None => existing
                .as_ref()
                .is_some_and(|e| e.reuse_lease_for_same_token),
        };
        if canary && narrowing.is_some() {
            return Err(CoreError::invalid(
                "narrowing: a canary role makes its own user (canary_statements); it cannot be narrowed",
            ));
        }
        let role = DbRole {
            canary,
            canary_statements,
            contain_on_trip,
            reuse_lease_for_same_token,
            db_name,
            creation_statements,
            revocation_statements,
            rollback_statements,
            renew_statements,
            default_ttl,
            max_ttl,
            narrowing,
            max_live_leases_per_entity,
            max_issuance_per_minute_per_entity,
        };
        self.save(&key, &role).await?;
        let mut warnings = Vec::new();
        if let Some(w) = fields::ignored_warning(data, ROLE_FIELDS) {
            warnings.push(w);
        }
        if !config.allows(name) {
            warnings.push(format!(
                "role {name:?} is not in allowed_roles of database/config/{}: issuing credentials will fail until it is",
                role.db_name
            ));
        }
        if config.plugin_name == "postgresql-database-plugin"
            && role
                .creation_statements
                .iter()
                .any(|s| grants_on_objects(s))
        {
            warnings.push(GRANT_WARNING.to_owned());
        }
        Ok(Response::warnings_only(warnings))
    }

    pub(super) async fn read_role(&self, name: &str) -> Result<Option<Response>, CoreError> {
        let Some(role): Option<DbRole> = self.load(&format!("role/{name}")).await? else {
            return Ok(None);
        };
        let mut r = Response::data(json!({
            "db_name": role.db_name,
            "creation_statements": role.creation_statements,
            "revocation_statements": role.revocation_statements,
            "rollback_statements": role.rollback_statements,
            "renew_statements": role.renew_statements,
            "default_ttl": role.default_ttl,
            "max_ttl": role.max_ttl,
            "credential_type": "password",
            "credential_config": {},
            "max_live_leases_per_entity": role.max_live_leases_per_entity,
            "max_issuance_per_minute_per_entity": role.max_issuance_per_minute_per_entity,
            "reuse_lease_for_same_token": role.reuse_lease_for_same_token,
            "canary": role.canary,
            "canary_statements": role.canary_statements,
            "contain_on_trip": role.contain_on_trip,
        }));
        if let (Some(n), Some(d)) = (&role.narrowing, r.data.as_mut()) {
            d["narrowing"] = json!(n);
        }
        let is_pg = self
            .load::<DbConfig>(&format!("config/{}", role.db_name))
            .await?
            .is_some_and(|c| c.plugin_name == "postgresql-database-plugin");
        if is_pg
            && role
                .creation_statements
                .iter()
                .any(|s| grants_on_objects(s))
        {
            r = r.with_warning(GRANT_WARNING);
        }
        Ok(Some(r))
    }
}
