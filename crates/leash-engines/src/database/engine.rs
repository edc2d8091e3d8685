//! The database secrets engine: Vault's `database/` paths over the plugin layer.
//!
//! * `config/:name` — a connection (`plugin_name`, `connection_url`, `username`,
//!   `password`, `allowed_roles`, `verify_connection`, `max_open_connections`,
//!   `password_authentication`, `scram_iterations`, `root_rotation_statements`). Reads
//!   never return the password. `rotate-root/:name` and `reset/:name`.
//! * `roles/:name` — `db_name`, `creation_statements`, `revocation_statements`,
//!   `rollback_statements`, `renew_statements`, `default_ttl`, `max_ttl`.
//! * `creds/:role` — a new credential under a lease, intent first (see
//!   [`leash_backend::lease`]): the lease is persisted before the role exists in the
//!   target, so no crash can leave a role nobody will revoke.
//!
//! Leases carry what revocation needs (database, username, revocation and renewal
//! statements) so deleting or changing a role never orphans credentials already issued.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use base64::Engine as _;
use leash_backend::{
    Backend, BackendRequest, CoreError, IssuanceCaps, LeaseInfo, LeaseRecord, LeaseRegistry,
    LeaseRequest, MountEntry, Response, fields, match_route, store,
};
use leash_storage::Storage;
use leash_types::{ExposeSecret, Operation, SecretString};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use time::OffsetDateTime;

use super::mysql::{MySqlConfig, MySqlTarget};
use super::narrowing::{self, Dialect, Narrowing};
use super::postgres::{PasswordAuthentication, PgConfig, PgTarget};
use super::template::{Vars, render};
use super::{DbError, generate_password, generate_username, scram};

/// The plugins leash speaks, by Vault's names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Plugin {
    Postgres,
    /// MySQL / MariaDB with the given username length limit.
    MySql(usize),
}

impl Plugin {
    fn parse(name: &str) -> Result<Plugin, CoreError> {
        Ok(match name {
            "postgresql-database-plugin" => Plugin::Postgres,
            "mysql-database-plugin" | "mysql-aurora-database-plugin" => Plugin::MySql(32),
            "mysql-rds-database-plugin" | "mysql-legacy-database-plugin" => Plugin::MySql(16),
            _ => {
                return Err(CoreError::invalid(
                    "unsupported plugin_name; leash supports postgresql-database-plugin, mysql-database-plugin, mysql-aurora-database-plugin, mysql-rds-database-plugin and mysql-legacy-database-plugin",
                ));
            }
        })
    }

    fn max_username(self) -> usize {
        match self {
            Plugin::Postgres => 63,
            Plugin::MySql(n) => n,
        }
    }
}

/// A stored connection. No `Debug`: it holds the root password.
#[derive(Serialize, Deserialize, Clone)]
struct DbConfig {
    plugin_name: String,
    connection_url: String,
    username: String,
    #[serde(with = "leash_types::secret::serde_str")]
    password: SecretString,
    /// Written before a root rotation changes the database and cleared after it is
    /// stored, so a crash in between cannot lose the root password.
    #[serde(default, with = "leash_types::secret::serde_opt_str")]
    pending_password: Option<SecretString>,
    allowed_roles: Vec<String>,
    verify_connection: bool,
    max_open_connections: usize,
    #[serde(default)]
    max_idle_connections: u64,
    #[serde(default)]
    max_connection_lifetime: u64,
    /// `scram-sha-256` (default) or `password`; PostgreSQL only.
    password_authentication: String,
    scram_iterations: u32,
    #[serde(default)]
    root_rotation_statements: Vec<String>,
    /// Whether the core's session observer watches this database's sessions of
    /// leash-made users (`pg_stat_activity`, `PROCESSLIST`). Off by default.
    #[serde(default)]
    observe_sessions: bool,
    /// Whether the root password may be sent when the server asks for it in cleartext
    /// (PostgreSQL `AuthenticationCleartextPassword`, MySQL `mysql_clear_password`).
    #[serde(default)]
    allow_cleartext_password: bool,
}

impl DbConfig {
    fn allows(&self, role: &str) -> bool {
        self.allowed_roles.iter().any(|a| {
            a == "*" || a == role || a.strip_suffix('*').is_some_and(|p| role.starts_with(p))
        })
    }
}

/// A stored role.
#[derive(Serialize, Deserialize, Clone, Debug)]
struct DbRole {
    db_name: String,
    creation_statements: Vec<String>,
    #[serde(default)]
    revocation_statements: Vec<String>,
    #[serde(default)]
    rollback_statements: Vec<String>,
    #[serde(default)]
    renew_statements: Vec<String>,
    /// Seconds; 0 = the mount's default.
    default_ttl: u64,
    /// Seconds; 0 = the mount's maximum.
    max_ttl: u64,
    /// What a request may narrow the credential to (`{{grants}}` in the statements).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    narrowing: Option<Narrowing>,
    /// Most live leases of this role one entity may hold (0: no cap).
    #[serde(default)]
    max_live_leases_per_entity: u64,
    /// Most leases of this role one entity may be issued per minute (0: no cap).
    #[serde(default)]
    max_issuance_per_minute_per_entity: u64,
    /// A second request by the same token gets the live lease's credential again.
    #[serde(default)]
    reuse_lease_for_same_token: bool,
}

/// The credential of a live lease, kept for `reuse_lease_for_same_token` (sealed at
/// rest like every engine entry; deleted when the lease is revoked). No `Debug`.
#[derive(Serialize, Deserialize)]
struct Reusable {
    lease_id: String,
    username: String,
    password: String,
}

impl Drop for Reusable {
    fn drop(&mut self) {
        use zeroize::Zeroize as _;
        self.password.zeroize();
    }
}

/// What a lease remembers (no secret).
#[derive(Serialize, Deserialize)]
struct LeaseData {
    db_name: String,
    role: String,
    username: String,
    #[serde(default)]
    revocation_statements: Vec<String>,
    #[serde(default)]
    renew_statements: Vec<String>,
    /// The narrowed scope (`SELECT on public.t1`), when the request narrowed it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    scope: Option<String>,
    /// Its credential is kept for `reuse_lease_for_same_token` (deleted at revocation).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    reusable: bool,
}

/// A live connection to one configured database.
/// (Held behind an `Arc`, so the size difference between variants costs nothing.)
#[allow(clippy::large_enum_variant)]
enum Target {
    Pg(PgTarget),
    My(MySqlTarget),
}

impl Target {
    async fn create_user(&self, statements: &[String], vars: &Vars) -> Result<(), DbError> {
        match self {
            Target::Pg(t) => t.create_user(statements, vars).await,
            Target::My(t) => t.create_user(statements, vars).await,
        }
    }

    async fn renew_user(&self, statements: &[String], vars: &Vars) -> Result<(), DbError> {
        match self {
            Target::Pg(t) => t.renew_user(statements, vars).await,
            Target::My(t) => t.renew_user(statements, vars).await,
        }
    }

    async fn revoke_user(&self, user: &str, statements: &[String]) -> Result<(), DbError> {
        match self {
            Target::Pg(t) => t.revoke_user(user, statements).await,
            Target::My(t) => t.revoke_user(user, statements).await,
        }
    }

    async fn revoke_users(&self, batch: &[(String, Vec<String>)]) -> Vec<Result<(), DbError>> {
        match self {
            Target::Pg(t) => t.revoke_users(batch).await,
            Target::My(t) => t.revoke_users(batch).await,
        }
    }

    async fn table_exists(&self, schema: &str, table: &str) -> Result<bool, DbError> {
        match self {
            Target::Pg(t) => t.table_exists(schema, table).await,
            Target::My(t) => t.table_exists(schema, table).await,
        }
    }

    async fn rotate_root(
        &self,
        username: &str,
        statements: &[String],
        password: &SecretString,
    ) -> Result<(), DbError> {
        match self {
            Target::Pg(t) => t.rotate_root(username, statements, password).await,
            Target::My(t) => t.rotate_root(statements, password).await,
        }
    }
}

async fn connect(config: &DbConfig, password: &SecretString) -> Result<Target, DbError> {
    let password = SecretString::from(password.expose_secret().to_owned());
    match Plugin::parse(&config.plugin_name) {
        Ok(Plugin::Postgres) => {
            let mut c = PgConfig::new(&config.connection_url, &config.username, password);
            c.max_open_connections = config.max_open_connections;
            c.allow_cleartext_password = config.allow_cleartext_password;
            c.password_authentication = if config.password_authentication == "password" {
                PasswordAuthentication::Password
            } else {
                PasswordAuthentication::ScramSha256 {
                    iterations: config.scram_iterations,
                }
            };
            Ok(Target::Pg(PgTarget::connect(c).await?))
        }
        Ok(Plugin::MySql(_)) => {
            let mut c = MySqlConfig::new(&config.connection_url, &config.username, password);
            c.max_open_connections = config.max_open_connections;
            c.allow_cleartext_password = config.allow_cleartext_password;
            Ok(Target::My(MySqlTarget::connect(c).await?))
        }
        Err(e) => Err(DbError::InvalidConnectionUrl {
            reason: e.to_string(),
        }),
    }
}

/// The sessions of leash-made users (names starting with `v-`) on every connection of
/// the `database` mount whose storage namespace is `ns` that has `observe_sessions` on:
/// `(connection name, sessions)`. Each poll opens its own short-lived connection, so the
/// observer never competes with issuance for the engine's pool. A connection that cannot
/// be reached is logged and skipped.
pub async fn observe_sessions(
    storage: &Arc<dyn Storage>,
    ns: &str,
) -> Result<Vec<(String, Vec<super::Session>)>, CoreError> {
    let mut out = Vec::new();
    for key in storage.list(ns, "config/").await? {
        let Some(config) = store::load_json::<DbConfig>(&**storage, ns, &key).await? else {
            continue;
        };
        if !config.observe_sessions {
            continue;
        }
        let name = key.trim_start_matches("config/").to_owned();
        let sessions = match connect(&config, &config.password).await {
            Ok(Target::Pg(t)) => t.sessions("v-").await,
            Ok(Target::My(t)) => t.sessions("v-").await,
            Err(e) => Err(e),
        };
        match sessions {
            Ok(s) => out.push((name, s)),
            Err(e) => {
                tracing::warn!(database = %name, error = %e, "session observer could not list sessions")
            }
        }
    }
    Ok(out)
}

/// The engine serving one `database` mount.
pub struct DatabaseBackend {
    ns: String,
    storage: Arc<dyn Storage>,
    leases: Arc<dyn LeaseRegistry>,
    targets: Mutex<HashMap<String, Arc<Target>>>,
    /// Serialises configuration changes (write, rotate-root, reset, delete) per mount.
    config_lock: tokio::sync::Mutex<()>,
}

/// A database engine for `mount`. Time comes from the lease registry (expirations are
/// the core's), so the engine needs no clock of its own.
pub fn new_backend(
    mount: &MountEntry,
    storage: Arc<dyn Storage>,
    leases: Arc<dyn LeaseRegistry>,
) -> Arc<dyn Backend> {
    Arc::new(DatabaseBackend {
        ns: mount.storage_ns(),
        storage,
        leases,
        targets: Mutex::new(HashMap::new()),
        config_lock: tokio::sync::Mutex::new(()),
    })
}

/// A database error as a client (and the audit log) may see it: what failed and the
/// server's code, with every quoted value of the driver's or server's message (user
/// names, role names, database names, literals: `role "v-…" already exists`, `Access
/// denied for user 'root'@'10.0.0.5'`) replaced by `"…"`. The whole message goes to the
/// server log only.
fn public_error(e: &DbError) -> String {
    let text = e.to_string();
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if matches!(c, '"' | '\'' | '`') {
            // Skip to the matching close quote; an unmatched quote hides the rest.
            for d in chars.by_ref() {
                if d == c {
                    break;
                }
            }
            out.push(c);
            out.push('…');
            out.push(c);
        } else {
            out.push(c);
        }
    }
    out
}

fn upstream(db: &str, e: &DbError) -> CoreError {
    tracing::warn!(database = %db, error = %e, "database operation failed");
    CoreError::Upstream(format!("database {db:?}: {}", public_error(e)))
}

fn check_name(kind: &str, name: &str) -> Result<(), CoreError> {
    if name.is_empty()
        || name.len() > 128
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
    {
        return Err(CoreError::invalid(format!(
            "invalid {kind} name {name:?}: use 1-128 characters of A-Z, a-z, 0-9, '-', '_', '.'"
        )));
    }
    Ok(())
}

/// A statement list field as Vault accepts it: a JSON array of strings, or one string
/// (itself possibly a JSON array, or base64 of either). Not split on commas: SQL has
/// commas.
fn statements(data: &Map<String, Value>, field: &str) -> Result<Option<Vec<String>>, CoreError> {
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
fn check_templates(
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
fn grants_on_objects(statement: &str) -> bool {
    let upper = statement.to_ascii_uppercase();
    upper.split(';').any(|s| {
        let s = s.trim_start();
        s.starts_with("GRANT")
            && s.contains(" ON ")
            && s.contains(" TO ")
            && (s.contains("{{NAME}}") || s.contains("{{ NAME }}") || s.contains("{{USERNAME}}"))
    })
}

const GRANT_WARNING: &str = "creation_statements grant privileges on tables to each credential directly: every live credential adds an entry to each table's ACL, revocation is slow, and PostgreSQL refuses further grants at ~2 400 live credentials per table (\"row is too big\"). Grant membership in a pre-made group role instead (CREATE ROLE \"{{name}}\" ... IN ROLE agent_readonly); see docs/database.md";

const CONFIG_FIELDS: &[&str] = &[
    "plugin_name",
    "connection_url",
    "username",
    "password",
    "allowed_roles",
    "verify_connection",
    "max_open_connections",
    "max_idle_connections",
    "max_connection_lifetime",
    "password_authentication",
    "scram_iterations",
    "root_rotation_statements",
    "plugin_version",
    "password_policy",
    "observe_sessions",
    "allow_cleartext_password",
];

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
];

/// Whether a connection-string key names a password (`password`, `pwd`,
/// `sslpassword`, `passwd`, …), in any case and percent-encoding.
fn is_password_key(key: &str) -> bool {
    let key = percent_encoding::percent_decode_str(key.trim())
        .decode_utf8_lossy()
        .to_ascii_lowercase();
    key.contains("password") || key.contains("passwd") || key == "pwd" || key == "pass"
}

/// Whether `s` is a libpq keyword/value string (`host=db password='x y' …`) rather than
/// a URL or a Go DSN: it starts with a keyword followed by `=`.
fn is_keyword_string(s: &str) -> bool {
    let t = s.trim_start();
    let key_len = t
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .unwrap_or(t.len());
    key_len > 0 && t[key_len..].trim_start().starts_with('=')
}

const REDACTED: &str = "[redacted]";

/// A libpq keyword/value string with the value of every password-like keyword
/// replaced (quoted values with `\'` and `\\` escapes included).
fn redact_keywords(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    loop {
        let trimmed = rest.trim_start();
        out.push_str(&rest[..rest.len() - trimmed.len()]);
        rest = trimmed;
        if rest.is_empty() {
            return out;
        }
        let Some(eq) = rest.find('=') else {
            out.push_str(rest);
            return out;
        };
        let key = &rest[..eq];
        out.push_str(&rest[..=eq]);
        rest = &rest[eq + 1..];
        let spaces = rest.len() - rest.trim_start().len();
        out.push_str(&rest[..spaces]);
        rest = &rest[spaces..];
        // The value: quoted up to the closing unescaped quote, else up to whitespace.
        let end = if rest.starts_with('\'') {
            let mut escaped = false;
            let mut end = rest.len();
            for (i, c) in rest.char_indices().skip(1) {
                match c {
                    _ if escaped => escaped = false,
                    '\\' => escaped = true,
                    '\'' => {
                        end = i + 1;
                        break;
                    }
                    _ => {}
                }
            }
            end
        } else {
            rest.find(char::is_whitespace).unwrap_or(rest.len())
        };
        let value = &rest[..end];
        if is_password_key(key) && value != "{{password}}" && value != "'{{password}}'" {
            out.push_str(REDACTED);
        } else {
            out.push_str(value);
        }
        rest = &rest[end..];
    }
}

/// `connection_url` with every literal password replaced, placeholders kept as
/// written: the URL's or Go DSN's user-info password (between `:` and `@`), the value of
/// any password-like query parameter (`?password=`, `&pwd=`, `sslpassword=`), and in a
/// libpq keyword/value string the value of any password-like keyword.
fn redact_url(url: &str) -> String {
    if !url.contains("://") && is_keyword_string(url) {
        return redact_keywords(url);
    }
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (url, None),
    };
    let mut out = redact_userinfo(base);
    if let Some(q) = query {
        out.push('?');
        let (q, fragment) = match q.split_once('#') {
            Some((q, f)) => (q, Some(f)),
            None => (q, None),
        };
        let pairs: Vec<String> = q
            .split('&')
            .map(|pair| match pair.split_once('=') {
                Some((k, v)) if is_password_key(k) && v != "{{password}}" => {
                    format!("{k}={REDACTED}")
                }
                _ => pair.to_owned(),
            })
            .collect();
        out.push_str(&pairs.join("&"));
        if let Some(f) = fragment {
            out.push('#');
            out.push_str(f);
        }
    }
    out
}

fn redact_userinfo(url: &str) -> String {
    let Some(at) = url.rfind('@') else {
        return url.to_owned();
    };
    let start = url.find("://").map_or(0, |i| i + 3);
    if at < start {
        return url.to_owned();
    }
    let userinfo = &url[start..at];
    match userinfo.split_once(':') {
        Some((_, pw)) if pw != "{{password}}" && !pw.is_empty() => {
            format!(
                "{}{}:{REDACTED}{}",
                &url[..start],
                &userinfo[..userinfo.len() - pw.len() - 1],
                &url[at..]
            )
        }
        _ => url.to_owned(),
    }
}

impl DatabaseBackend {
    async fn load<T: DeserializeOwned>(&self, key: &str) -> Result<Option<T>, CoreError> {
        store::load_json(&*self.storage, &self.ns, key).await
    }

    async fn save<T: Serialize>(&self, key: &str, v: &T) -> Result<(), CoreError> {
        store::save_json(&*self.storage, &self.ns, key, v).await
    }

    fn cached(&self, name: &str) -> Option<Arc<Target>> {
        self.targets.lock().ok().and_then(|m| m.get(name).cloned())
    }

    fn forget(&self, name: &str) {
        if let Ok(mut m) = self.targets.lock() {
            m.remove(name);
        }
    }

    fn remember(&self, name: &str, t: Arc<Target>) -> Arc<Target> {
        match self.targets.lock() {
            Ok(mut m) => Arc::clone(m.entry(name.to_owned()).or_insert(t)),
            Err(_) => t,
        }
    }

    /// The live connection for config `name`, opened from storage when needed.
    async fn target(&self, name: &str) -> Result<Arc<Target>, CoreError> {
        if let Some(t) = self.cached(name) {
            return Ok(t);
        }
        let config: DbConfig = self.load(&format!("config/{name}")).await?.ok_or_else(|| {
            CoreError::Upstream(format!(
                "database {name:?}: its configuration no longer exists"
            ))
        })?;
        let t = match connect(&config, &config.password).await {
            Ok(t) => t,
            Err(first) => match &config.pending_password {
                // A root rotation was interrupted after the database changed: the new
                // password works, the old one does not. Finish the rotation.
                Some(pending) => {
                    let t = connect(&config, pending)
                        .await
                        .map_err(|_| upstream(name, &first))?;
                    let _guard = self.config_lock.lock().await;
                    let mut fixed = config.clone();
                    fixed.password = SecretString::from(pending.expose_secret().to_owned());
                    fixed.pending_password = None;
                    self.save(&format!("config/{name}"), &fixed).await?;
                    t
                }
                None => return Err(upstream(name, &first)),
            },
        };
        Ok(self.remember(name, Arc::new(t)))
    }

    async fn write_config(
        &self,
        name: &str,
        data: &Map<String, Value>,
    ) -> Result<Option<Response>, CoreError> {
        let _guard = self.config_lock.lock().await;
        let key = format!("config/{name}");
        let existing: Option<DbConfig> = self.load(&key).await?;
        let plugin_name = match (fields::string(data, "plugin_name")?, &existing) {
            (Some(p), _) if !p.is_empty() => p,
            (_, Some(e)) => e.plugin_name.clone(),
            _ => return Err(CoreError::invalid("missing required field \"plugin_name\"")),
        };
        let plugin = Plugin::parse(&plugin_name)?;
        let connection_url = match (fields::string(data, "connection_url")?, &existing) {
            (Some(u), _) if !u.is_empty() => u,
            (_, Some(e)) => e.connection_url.clone(),
            _ => {
                return Err(CoreError::invalid(
                    "missing required field \"connection_url\"",
                ));
            }
        };
        let username = match (fields::string(data, "username")?, &existing) {
            (Some(u), _) => u,
            (None, Some(e)) => e.username.clone(),
            (None, None) => String::new(),
        };
        let allow_cleartext_password = match fields::boolean(data, "allow_cleartext_password")? {
            Some(v) => v,
            None => existing
                .as_ref()
                .is_some_and(|e| e.allow_cleartext_password),
        };
        let password = match (fields::string(data, "password")?, &existing) {
            (Some(p), _) => SecretString::from(p),
            (None, Some(e)) => {
                // The stored password only ever goes where it was sent with: a write
                // that points the connection elsewhere (another host, port, database,
                // user or plugin) or lets it travel in cleartext must carry it again, or
                // a token that may update but not read the config could make leash hand
                // the password to a server of its choosing.
                let moved = e.plugin_name != plugin_name
                    || e.connection_url != connection_url
                    || e.username != username
                    || (allow_cleartext_password && !e.allow_cleartext_password);
                if moved && !e.password.expose_secret().is_empty() {
                    return Err(CoreError::invalid(
                        "missing required field \"password\": it must be given again when plugin_name, connection_url, username or allow_cleartext_password changes",
                    ));
                }
                SecretString::from(e.password.expose_secret().to_owned())
            }
            (None, None) => SecretString::from(String::new()),
        };
        let allowed_roles = match fields::string_list(data, "allowed_roles")? {
            Some(l) => l,
            None => existing
                .as_ref()
                .map(|e| e.allowed_roles.clone())
                .unwrap_or_default(),
        };
        let verify_connection = fields::boolean(data, "verify_connection")?.unwrap_or(true);
        let observe_sessions = match fields::boolean(data, "observe_sessions")? {
            Some(v) => v,
            None => existing.as_ref().is_some_and(|e| e.observe_sessions),
        };
        let max_open_connections = match fields::integer(data, "max_open_connections")? {
            Some(n) if (1..=1000).contains(&n) => usize::try_from(n).unwrap_or(4),
            Some(_) => {
                return Err(CoreError::invalid(
                    "max_open_connections must be between 1 and 1000",
                ));
            }
            None => existing.as_ref().map_or(4, |e| e.max_open_connections),
        };
        let max_idle_connections = match fields::integer(data, "max_idle_connections")? {
            Some(n) if n >= 0 => u64::try_from(n).unwrap_or(0),
            Some(_) => {
                return Err(CoreError::invalid(
                    "max_idle_connections must not be negative",
                ));
            }
            None => existing.as_ref().map_or(0, |e| e.max_idle_connections),
        };
        let max_connection_lifetime = match fields::duration(data, "max_connection_lifetime")? {
            Some(d) => d.as_secs(),
            None => existing.as_ref().map_or(0, |e| e.max_connection_lifetime),
        };
        let password_authentication = match fields::string(data, "password_authentication")? {
            Some(p) if p == "password" || p == "scram-sha-256" => p,
            Some(p) if p.is_empty() => "scram-sha-256".to_owned(),
            Some(_) => {
                return Err(CoreError::invalid(
                    "password_authentication must be \"scram-sha-256\" or \"password\"",
                ));
            }
            None => existing.as_ref().map_or_else(
                || "scram-sha-256".to_owned(),
                |e| e.password_authentication.clone(),
            ),
        };
        if password_authentication != "scram-sha-256"
            && plugin != Plugin::Postgres
            && data.contains_key("password_authentication")
        {
            return Err(CoreError::invalid(
                "password_authentication applies to postgresql-database-plugin only",
            ));
        }
        let scram_iterations = match fields::integer(data, "scram_iterations")? {
            Some(n) if (1..=10_000_000).contains(&n) => u32::try_from(n).unwrap_or(4096),
            Some(_) => {
                return Err(CoreError::invalid(
                    "scram_iterations must be between 1 and 10000000",
                ));
            }
            None => existing
                .as_ref()
                .map_or(scram::DEFAULT_ITERATIONS, |e| e.scram_iterations),
        };
        let root_rotation_statements = match statements(data, "root_rotation_statements")? {
            Some(l) => l,
            None => existing
                .as_ref()
                .map(|e| e.root_rotation_statements.clone())
                .unwrap_or_default(),
        };
        check_templates(
            "root_rotation_statements",
            &root_rotation_statements,
            true,
            false,
        )?;
        let config = DbConfig {
            plugin_name,
            connection_url,
            username,
            password,
            pending_password: None,
            allowed_roles,
            verify_connection,
            max_open_connections,
            max_idle_connections,
            max_connection_lifetime,
            password_authentication,
            scram_iterations,
            root_rotation_statements,
            observe_sessions,
            allow_cleartext_password,
        };
        let target = if verify_connection {
            let t = connect(&config, &config.password).await.map_err(|e| {
                tracing::warn!(database = %name, error = %e, "database connection check failed");
                CoreError::invalid(format!(
                    "error creating database object: {}",
                    public_error(&e)
                ))
            })?;
            Some(Arc::new(t))
        } else {
            None
        };
        self.save(&key, &config).await?;
        self.forget(name);
        if let Some(t) = target {
            self.remember(name, t);
        }
        let mut warnings: Vec<String> = fields::ignored_warning(data, CONFIG_FIELDS)
            .into_iter()
            .collect();
        if redact_url(&config.connection_url) != config.connection_url {
            warnings.push(
                "Password found in connection_url: use {{username}} and {{password}} placeholders with the username and password fields, so reads never show it and rotate-root can replace it".into(),
            );
        }
        if config.allowed_roles.is_empty() {
            warnings.push(
                "allowed_roles is empty: no role may use this connection until it is set".into(),
            );
        }
        Ok(Response::warnings_only(warnings))
    }

    fn config_json(c: &DbConfig) -> Value {
        let mut details = json!({
            "connection_url": redact_url(&c.connection_url),
            "username": c.username,
            "max_open_connections": c.max_open_connections,
            "max_idle_connections": c.max_idle_connections,
            "max_connection_lifetime": format!("{}s", c.max_connection_lifetime),
            "allow_cleartext_password": c.allow_cleartext_password,
        });
        if c.plugin_name == "postgresql-database-plugin" {
            details["password_authentication"] = json!(c.password_authentication);
            details["scram_iterations"] = json!(c.scram_iterations);
        }
        json!({
            "plugin_name": c.plugin_name,
            "plugin_version": "",
            "connection_details": details,
            "allowed_roles": c.allowed_roles,
            "root_credentials_rotate_statements": c.root_rotation_statements,
            "password_policy": "",
            "verify_connection": c.verify_connection,
            "observe_sessions": c.observe_sessions,
        })
    }

    async fn write_role(
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
        if creation_statements.is_empty() {
            return Err(CoreError::invalid(
                "missing required field \"creation_statements\"",
            ));
        }
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
        let role = DbRole {
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

    async fn read_role(&self, name: &str) -> Result<Option<Response>, CoreError> {
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

    async fn issue(
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
        let reuse_key = match (role.reuse_lease_for_same_token, req.caller, &narrowed) {
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

    async fn rotate_root(&self, name: &str) -> Result<Option<Response>, CoreError> {
        let _guard = self.config_lock.lock().await;
        let key = format!("config/{name}");
        let mut config: DbConfig = self.load(&key).await?.ok_or_else(|| {
            CoreError::invalid(format!("no database configuration named {name:?}"))
        })?;
        if config.username.is_empty() {
            return Err(CoreError::invalid(
                "cannot rotate the root credential: the configuration has no username",
            ));
        }
        let target = match self.cached(name) {
            Some(t) => t,
            None => Arc::new(
                connect(&config, &config.password)
                    .await
                    .map_err(|e| upstream(name, &e))?,
            ),
        };
        let new_password = generate_password();
        // Intent first: the new password is stored before the database changes.
        config.pending_password = Some(SecretString::from(new_password.expose_secret().to_owned()));
        self.save(&key, &config).await?;
        if let Err(e) = target
            .rotate_root(
                &config.username,
                &config.root_rotation_statements,
                &new_password,
            )
            .await
        {
            config.pending_password = None;
            self.save(&key, &config).await?;
            return Err(upstream(name, &e));
        }
        config.password = new_password;
        config.pending_password = None;
        self.save(&key, &config).await?;
        self.forget(name);
        // New connections use the new password from now on; check it works.
        let fresh = connect(&config, &config.password)
            .await
            .map_err(|e| upstream(name, &e))?;
        self.remember(name, Arc::new(fresh));
        Ok(None)
    }
}

#[async_trait]
impl Backend for DatabaseBackend {
    /// A connection configuration changed elsewhere: its open connection (made with the
    /// old settings or password) is dropped and re-made from storage on next use.
    fn storage_changed(&self, key: Option<&str>) {
        match key.map(|k| k.strip_prefix("config/")) {
            Some(Some(name)) => self.forget(name),
            Some(None) => {}
            None => {
                if let Ok(mut m) = self.targets.lock() {
                    m.clear();
                }
            }
        }
    }

    async fn exists(&self, req: &BackendRequest<'_>) -> Result<Option<bool>, CoreError> {
        let key = if let Some(c) = match_route("config/:name", req.path) {
            format!("config/{}", c[0])
        } else if let Some(c) = match_route("roles/:name", req.path) {
            format!("role/{}", c[0])
        } else {
            return Ok(None);
        };
        Ok(Some(self.storage.get(&self.ns, &key).await?.is_some()))
    }

    async fn handle(&self, req: &BackendRequest<'_>) -> Result<Option<Response>, CoreError> {
        let op = req.operation;
        let write = matches!(op, Operation::Create | Operation::Update);
        let path = req.path;
        if path == "config" || path == "config/" {
            return match op {
                Operation::List | Operation::Read => {
                    let keys: Vec<String> = self
                        .storage
                        .list(&self.ns, "config/")
                        .await?
                        .into_iter()
                        .map(|k| k["config/".len()..].to_owned())
                        .collect();
                    if keys.is_empty() {
                        Ok(None)
                    } else {
                        Ok(Some(Response::keys(keys)))
                    }
                }
                _ => Err(CoreError::UnsupportedOperation),
            };
        }
        if path == "roles" || path == "roles/" {
            return match op {
                Operation::List | Operation::Read => {
                    let keys: Vec<String> = self
                        .storage
                        .list(&self.ns, "role/")
                        .await?
                        .into_iter()
                        .map(|k| k["role/".len()..].to_owned())
                        .collect();
                    if keys.is_empty() {
                        Ok(None)
                    } else {
                        Ok(Some(Response::keys(keys)))
                    }
                }
                _ => Err(CoreError::UnsupportedOperation),
            };
        }
        if let Some(c) = match_route("config/:name", path) {
            let name = c[0];
            check_name("database", name)?;
            return match op {
                Operation::Read => Ok(self
                    .load::<DbConfig>(&format!("config/{name}"))
                    .await?
                    .map(|c| Response::data(Self::config_json(&c)))),
                Operation::Delete => {
                    let _guard = self.config_lock.lock().await;
                    self.storage
                        .delete(&self.ns, &format!("config/{name}"))
                        .await?;
                    self.forget(name);
                    Ok(None)
                }
                _ if write => self.write_config(name, req.data).await,
                _ => Err(CoreError::UnsupportedOperation),
            };
        }
        if let Some(c) = match_route("roles/:name", path) {
            let name = c[0];
            check_name("role", name)?;
            return match op {
                Operation::Read => self.read_role(name).await,
                Operation::Delete => {
                    self.storage
                        .delete(&self.ns, &format!("role/{name}"))
                        .await?;
                    Ok(None)
                }
                _ if write => self.write_role(name, req.data).await,
                _ => Err(CoreError::UnsupportedOperation),
            };
        }
        if let Some(c) = match_route("creds/:name", path) {
            check_name("role", c[0])?;
            return match op {
                // POST carries narrowing parameters in a body (GET in the query).
                Operation::Read | Operation::Update | Operation::Create => {
                    self.issue(req, c[0]).await
                }
                _ => Err(CoreError::UnsupportedOperation),
            };
        }
        if let Some(c) = match_route("rotate-root/:name", path) {
            check_name("database", c[0])?;
            return match op {
                _ if write => self.rotate_root(c[0]).await,
                _ => Err(CoreError::UnsupportedOperation),
            };
        }
        if let Some(c) = match_route("reset/:name", path) {
            let name = c[0];
            check_name("database", name)?;
            if !write {
                return Err(CoreError::UnsupportedOperation);
            }
            let _guard = self.config_lock.lock().await;
            if self
                .storage
                .get(&self.ns, &format!("config/{name}"))
                .await?
                .is_none()
            {
                return Err(CoreError::invalid(format!(
                    "no database configuration named {name:?}"
                )));
            }
            self.forget(name);
            drop(_guard);
            self.target(name).await?;
            return Ok(None);
        }
        Err(CoreError::UnknownPath(format!(
            "{}{}",
            req.mount.route_prefix(),
            path
        )))
    }

    async fn renew_lease(&self, lease: &LeaseRecord) -> Result<(), CoreError> {
        let data: LeaseData = serde_json::from_value(lease.internal.clone())
            .map_err(|e| CoreError::internal(format!("lease data is unreadable: {e}")))?;
        let target = self.target(&data.db_name).await?;
        let expiration = OffsetDateTime::from_unix_timestamp(lease.expire_at)
            .map_err(|e| CoreError::internal(e.to_string()))?;
        target
            .renew_user(
                &data.renew_statements,
                &Vars::new(data.username).with_expiration(expiration),
            )
            .await
            .map_err(|e| upstream(&data.db_name, &e))
    }

    async fn revoke_leases(&self, leases: &[LeaseRecord]) -> Vec<Result<(), CoreError>> {
        let mut out: Vec<Option<Result<(), CoreError>>> = leases.iter().map(|_| None).collect();
        // Group by database, keeping each lease's position.
        let mut groups: HashMap<String, Vec<(usize, String, Vec<String>)>> = HashMap::new();
        for (i, l) in leases.iter().enumerate() {
            match serde_json::from_value::<LeaseData>(l.internal.clone()) {
                Ok(d) => groups.entry(d.db_name).or_default().push((
                    i,
                    d.username,
                    d.revocation_statements,
                )),
                Err(e) => {
                    out[i] = Some(Err(CoreError::internal(format!(
                        "lease data is unreadable: {e}"
                    ))));
                }
            }
        }
        for (db, items) in groups {
            match self.target(&db).await {
                Ok(target) => {
                    let batch: Vec<(String, Vec<String>)> = items
                        .iter()
                        .map(|(_, u, s)| (u.clone(), s.clone()))
                        .collect();
                    let results = if batch.len() == 1 {
                        vec![target.revoke_user(&batch[0].0, &batch[0].1).await]
                    } else {
                        target.revoke_users(&batch).await
                    };
                    for ((i, _, _), r) in items.iter().zip(results) {
                        out[*i] = Some(r.map_err(|e| upstream(&db, &e)));
                    }
                }
                Err(e) => {
                    let msg = e.to_string();
                    for (i, _, _) in &items {
                        out[*i] = Some(Err(CoreError::Upstream(msg.clone())));
                    }
                }
            }
        }
        // Revoked credentials are no longer handed out again.
        for (l, r) in leases.iter().zip(&out) {
            let reusable = l.internal.get("reusable").and_then(Value::as_bool) == Some(true);
            if reusable && matches!(r, Some(Ok(()))) {
                let idx = format!("reuse-lease/{}", l.id);
                if let Ok(Some(key)) = self.load::<String>(&idx).await {
                    let _ = self.storage.delete(&self.ns, &key).await;
                    let _ = self.storage.delete(&self.ns, &idx).await;
                }
            }
        }
        out.into_iter()
            .map(|r| r.unwrap_or_else(|| Err(CoreError::internal("lease was not revoked"))))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data(v: Value) -> Map<String, Value> {
        match v {
            Value::Object(m) => m,
            _ => Map::new(),
        }
    }

    #[test]
    fn statement_fields_take_every_vault_form() {
        let d = data(json!({
            "a": ["CREATE ROLE \"{{name}}\";", " GRANT x TO \"{{name}}\"; ", ""],
            "b": "CREATE USER '{{name}}'@'%' IDENTIFIED BY '{{password}}'; GRANT SELECT, INSERT ON db.* TO '{{name}}'@'%';",
            "c": "[\"one;\", \"two;\"]",
            "d": base64::engine::general_purpose::STANDARD.encode("DROP ROLE \"{{name}}\";"),
            "e": "",
            "f": 3,
        }));
        assert_eq!(statements(&d, "a").unwrap().unwrap().len(), 2);
        let b = statements(&d, "b").unwrap().unwrap();
        assert_eq!(b.len(), 1, "never split on commas");
        assert_eq!(
            statements(&d, "c").unwrap().unwrap(),
            vec!["one;".to_owned(), "two;".to_owned()]
        );
        assert_eq!(
            statements(&d, "d").unwrap().unwrap(),
            vec!["DROP ROLE \"{{name}}\";".to_owned()]
        );
        assert!(statements(&d, "e").unwrap().unwrap().is_empty());
        assert!(statements(&d, "f").is_err());
        assert!(statements(&d, "missing").unwrap().is_none());
    }

    #[test]
    fn templates_are_checked_per_operation() {
        let ok = vec![
            "CREATE ROLE \"{{name}}\" PASSWORD '{{password}}' VALID UNTIL '{{expiration}}';"
                .to_owned(),
        ];
        check_templates("creation_statements", &ok, true, true).unwrap();
        let e = check_templates("revocation_statements", &ok, false, false).unwrap_err();
        assert!(e.to_string().contains("revocation_statements[0]"), "{e}");
        assert!(e.to_string().contains("{{password}}"), "{e}");
        let bad = vec!["x".to_owned(), "GRANT {{role}} TO \"{{name}}\"".to_owned()];
        let e = check_templates("creation_statements", &bad, true, true).unwrap_err();
        assert!(
            e.to_string().contains("creation_statements[1]") && e.to_string().contains("{{role}}"),
            "{e}"
        );
    }

    #[test]
    fn direct_table_grants_are_spotted() {
        assert!(grants_on_objects(
            "GRANT SELECT ON ALL TABLES IN SCHEMA public TO \"{{name}}\";"
        ));
        assert!(grants_on_objects(
            "CREATE ROLE \"{{name}}\"; grant select on t1 to \"{{name}}\";"
        ));
        assert!(!grants_on_objects(
            "CREATE ROLE \"{{name}}\" WITH LOGIN PASSWORD '{{password}}' IN ROLE agent_readonly;"
        ));
        assert!(!grants_on_objects("GRANT agent_readonly TO \"{{name}}\";"));
    }

    #[test]
    fn urls_lose_literal_passwords_only() {
        assert_eq!(
            redact_url("postgresql://{{username}}:{{password}}@db:5432/x"),
            "postgresql://{{username}}:{{password}}@db:5432/x"
        );
        assert_eq!(
            redact_url("postgresql://root:hunter2@db:5432/x"),
            "postgresql://root:[redacted]@db:5432/x"
        );
        assert_eq!(
            redact_url("{{username}}:{{password}}@tcp(127.0.0.1:3306)/"),
            "{{username}}:{{password}}@tcp(127.0.0.1:3306)/"
        );
        assert_eq!(
            redact_url("root:pw@tcp(127.0.0.1:3306)/"),
            "root:[redacted]@tcp(127.0.0.1:3306)/"
        );
    }

    #[test]
    fn driver_errors_lose_quoted_values() {
        let cases = [
            (
                DbError::Connect {
                    message: "db error: FATAL: password authentication failed for user \"postgres\"".into(),
                },
                "cannot connect to database: db error: FATAL: password authentication failed for user \"…\"",
            ),
            (
                DbError::Connect {
                    message: "ERROR 1045 (28000): Access denied for user 'root'@'10.1.2.3' (using password: YES)".into(),
                },
                "cannot connect to database: ERROR 1045 (28000): Access denied for user '…'@'…' (using password: YES)",
            ),
            (
                DbError::Statement {
                    index: 1,
                    sqlstate: "42710".into(),
                    message: "role \"v-token-ro-abc\" already exists".into(),
                },
                "statement 1 failed: 42710: role \"…\" already exists",
            ),
            (
                DbError::Connect {
                    message: "Connection refused (os error 111)".into(),
                },
                "cannot connect to database: Connection refused (os error 111)",
            ),
            (
                DbError::Connect {
                    message: "unterminated \"secret".into(),
                },
                "cannot connect to database: unterminated \"…\"",
            ),
        ];
        for (e, want) in cases {
            assert_eq!(public_error(&e), want);
        }
    }

    #[test]
    fn keyword_strings_and_query_parameters_lose_passwords() {
        let cases = [
            (
                "host=db password=hunter2 user=root",
                "host=db password=[redacted] user=root",
            ),
            ("host=db PASSWORD=hunter2", "host=db PASSWORD=[redacted]"),
            (
                "host=db password = hunter2 dbname=x",
                "host=db password = [redacted] dbname=x",
            ),
            ("password='hunter 2' host=db", "password=[redacted] host=db"),
            (
                r"host=db password='it\'s a\\ secret' user=u",
                "host=db password=[redacted] user=u",
            ),
            (
                "host=db sslpassword=k3y pwd=x Pwd=y",
                "host=db sslpassword=[redacted] pwd=[redacted] Pwd=[redacted]",
            ),
            (
                "host=db password={{password}} user={{username}}",
                "host=db password={{password}} user={{username}}",
            ),
            (
                "host=db password='{{password}}'",
                "host=db password='{{password}}'",
            ),
            (
                "postgresql://db/x?password=hunter2&sslmode=disable",
                "postgresql://db/x?password=[redacted]&sslmode=disable",
            ),
            (
                "postgresql://db/x?sslmode=disable&PassWord=hunter2",
                "postgresql://db/x?sslmode=disable&PassWord=[redacted]",
            ),
            (
                "postgresql://db/x?pass%77ord=hunter2",
                "postgresql://db/x?pass%77ord=[redacted]",
            ),
            (
                "postgresql://u:pw@db/x?sslpassword=k&a=b",
                "postgresql://u:[redacted]@db/x?sslpassword=[redacted]&a=b",
            ),
            (
                "postgresql://db/x?password={{password}}",
                "postgresql://db/x?password={{password}}",
            ),
            (
                "mysql://u@h:3306/db?password=hunter2",
                "mysql://u@h:3306/db?password=[redacted]",
            ),
            (
                "u@tcp(h:3306)/db?pwd=hunter2&x=1",
                "u@tcp(h:3306)/db?pwd=[redacted]&x=1",
            ),
            (
                "u:pw@tcp(h:3306)/db?passwd=z",
                "u:[redacted]@tcp(h:3306)/db?passwd=[redacted]",
            ),
        ];
        for (url, want) in cases {
            let got = redact_url(url);
            assert_eq!(got, want, "{url}");
            assert!(!got.contains("hunter") && !got.contains("secret"), "{got}");
        }
    }

    #[test]
    fn allowed_roles_match_exact_star_and_prefix_globs() {
        let mut c = DbConfig {
            plugin_name: "postgresql-database-plugin".into(),
            connection_url: String::new(),
            username: String::new(),
            password: SecretString::from(String::new()),
            pending_password: None,
            allowed_roles: vec!["ro".into(), "agent-*".into()],
            verify_connection: true,
            max_open_connections: 4,
            max_idle_connections: 0,
            max_connection_lifetime: 0,
            password_authentication: "scram-sha-256".into(),
            scram_iterations: 4096,
            root_rotation_statements: Vec::new(),
            observe_sessions: false,
            allow_cleartext_password: false,
        };
        assert!(c.allows("ro") && c.allows("agent-x") && !c.allows("rw"));
        c.allowed_roles = vec!["*".into()];
        assert!(c.allows("anything"));
        c.allowed_roles.clear();
        assert!(!c.allows("ro"));
    }
}
