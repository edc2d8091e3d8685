//! Connections (`config/:name`): what is stored, how a write is checked, what a read
//! shows, and root rotation.

use std::sync::Arc;

use leash_backend::{CoreError, Response, fields};
use leash_dbtls::{Pem, PemKey, TlsOptions};
use leash_types::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use super::redact::redact_url;
use super::roles::{check_templates, statements};
use super::target::connect;
use super::{DatabaseBackend, public_error, upstream};
use crate::database::{generate_password, scram};

/// The plugins leash speaks, by Vault's names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Plugin {
    Postgres,
    /// MySQL / MariaDB with the given username length limit.
    MySql(usize),
}

impl Plugin {
    pub(super) fn parse(name: &str) -> Result<Plugin, CoreError> {
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

    pub(super) fn max_username(self) -> usize {
        match self {
            Plugin::Postgres => 63,
            Plugin::MySql(n) => n,
        }
    }
}

/// A stored connection. No `Debug`: it holds the root password.
#[derive(Serialize, Deserialize, Clone)]
pub(super) struct DbConfig {
    pub(super) plugin_name: String,
    pub(super) connection_url: String,
    pub(super) username: String,
    #[serde(with = "leash_types::secret::serde_str")]
    pub(super) password: SecretString,
    /// Written before a root rotation changes the database and cleared after it is
    /// stored, so a crash in between cannot lose the root password.
    #[serde(default, with = "leash_types::secret::serde_opt_str")]
    pub(super) pending_password: Option<SecretString>,
    pub(super) allowed_roles: Vec<String>,
    pub(super) verify_connection: bool,
    pub(super) max_open_connections: usize,
    #[serde(default)]
    pub(super) max_idle_connections: u64,
    #[serde(default)]
    pub(super) max_connection_lifetime: u64,
    /// `scram-sha-256` (default) or `password`; PostgreSQL only.
    pub(super) password_authentication: String,
    pub(super) scram_iterations: u32,
    #[serde(default)]
    pub(super) root_rotation_statements: Vec<String>,
    /// Whether the core's session observer watches this database's sessions of
    /// leash-made users (`pg_stat_activity`, `PROCESSLIST`). Off by default.
    #[serde(default)]
    pub(super) observe_sessions: bool,
    /// Whether the root password may be sent when the server asks for it in cleartext
    /// (PostgreSQL `AuthenticationCleartextPassword`, MySQL `mysql_clear_password`).
    #[serde(default)]
    pub(super) allow_cleartext_password: bool,
    /// PEM CA certificates the server's certificate must chain to (`tls_ca`).
    #[serde(default)]
    pub(super) tls_ca: String,
    /// PEM client certificate chain (PostgreSQL `tls_certificate`).
    #[serde(default)]
    pub(super) tls_certificate: String,
    /// PEM private key of the client certificate (PostgreSQL `private_key`; MySQL
    /// `tls_certificate_key`, the key and certificate together). Never returned.
    #[serde(default, with = "leash_types::secret::serde_opt_str")]
    pub(super) private_key: Option<SecretString>,
    /// The name the server's certificate must carry, when not the host connected to.
    #[serde(default)]
    pub(super) tls_server_name: String,
    /// Encrypt but accept any server certificate.
    #[serde(default)]
    pub(super) tls_skip_verify: bool,
}

impl DbConfig {
    /// The TLS settings given as fields, to apply over the connection string's.
    pub(super) fn tls_fields(&self, plugin: Plugin) -> TlsOptions {
        let mut t = TlsOptions {
            server_name: (!self.tls_server_name.is_empty()).then(|| self.tls_server_name.clone()),
            skip_verify: self.tls_skip_verify,
            ..TlsOptions::default()
        };
        if !self.tls_ca.is_empty() {
            t.root_cert = Some(Pem::Inline(self.tls_ca.clone()));
        }
        if plugin == Plugin::Postgres && !self.tls_certificate.is_empty() {
            t.client_cert = Some(Pem::Inline(self.tls_certificate.clone()));
        }
        if let Some(k) = &self.private_key {
            t.client_key = Some(PemKey::Inline(SecretString::from(
                k.expose_secret().to_owned(),
            )));
        }
        t
    }

    pub(super) fn allows(&self, role: &str) -> bool {
        self.allowed_roles.iter().any(|a| {
            a == "*" || a == role || a.strip_suffix('*').is_some_and(|p| role.starts_with(p))
        })
    }
}

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
    "tls_ca",
    "tls_certificate",
    "private_key",
    "tls_certificate_key",
    "tls_server_name",
    "tls_skip_verify",
];

/// The TLS fields of a `config/:name` write, existing values kept where not given.
struct TlsFields {
    ca: String,
    certificate: String,
    private_key: Option<SecretString>,
    server_name: String,
    skip_verify: bool,
}

fn tls_fields(
    data: &Map<String, Value>,
    plugin: Plugin,
    existing: Option<&DbConfig>,
) -> Result<TlsFields, CoreError> {
    let pem = |field: &str, old: Option<&String>, marker: &str| -> Result<String, CoreError> {
        match fields::string(data, field)? {
            Some(v) if v.trim().is_empty() => Ok(String::new()),
            Some(v) if !v.contains(marker) => Err(CoreError::invalid(format!(
                "{field} must be PEM (a {marker} block)"
            ))),
            Some(v) => Ok(v),
            None => Ok(old.cloned().unwrap_or_default()),
        }
    };
    let ca = pem(
        "tls_ca",
        existing.map(|e| &e.tls_ca),
        "-----BEGIN CERTIFICATE-----",
    )?;
    let (key_field, wrong_field) = match plugin {
        Plugin::Postgres => ("private_key", "tls_certificate_key"),
        Plugin::MySql(_) => ("tls_certificate_key", "private_key"),
    };
    if data.contains_key(wrong_field)
        || (plugin != Plugin::Postgres && data.contains_key("tls_certificate"))
    {
        return Err(CoreError::invalid(match plugin {
            Plugin::Postgres => {
                "tls_certificate_key applies to the MySQL plugins; PostgreSQL takes tls_certificate and private_key"
            }
            Plugin::MySql(_) => {
                "private_key and tls_certificate apply to postgresql-database-plugin; MySQL takes tls_certificate_key (key and certificate in one PEM)"
            }
        }));
    }
    let certificate = pem(
        "tls_certificate",
        existing.map(|e| &e.tls_certificate),
        "-----BEGIN CERTIFICATE-----",
    )?;
    let private_key = match fields::string(data, key_field)? {
        Some(v) if v.trim().is_empty() => None,
        Some(v) if !v.contains("PRIVATE KEY-----") => {
            return Err(CoreError::invalid(format!(
                "{key_field} must be PEM (a PRIVATE KEY block)"
            )));
        }
        Some(v) => Some(SecretString::from(v)),
        None => existing
            .and_then(|e| e.private_key.as_ref())
            .map(|k| SecretString::from(k.expose_secret().to_owned())),
    };
    if plugin == Plugin::Postgres && certificate.is_empty() != private_key.is_none() {
        return Err(CoreError::invalid(
            "tls_certificate and private_key go together (a client certificate and its key)",
        ));
    }
    if let Some(k) = &private_key
        && !matches!(plugin, Plugin::Postgres)
        && !k.expose_secret().contains("-----BEGIN CERTIFICATE-----")
    {
        return Err(CoreError::invalid(
            "tls_certificate_key must hold the private key and the certificate, both PEM",
        ));
    }
    let server_name = match fields::string(data, "tls_server_name")? {
        Some(v) => v,
        None => existing
            .map(|e| e.tls_server_name.clone())
            .unwrap_or_default(),
    };
    let skip_verify = match fields::boolean(data, "tls_skip_verify")? {
        Some(v) => v,
        None => existing.is_some_and(|e| e.tls_skip_verify),
    };
    Ok(TlsFields {
        ca,
        certificate,
        private_key,
        server_name,
        skip_verify,
    })
}

impl DatabaseBackend {
    pub(super) async fn write_config(
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
        let tls = tls_fields(data, plugin, existing.as_ref())?;
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
                    || (allow_cleartext_password && !e.allow_cleartext_password)
                    || e.tls_ca != tls.ca
                    || e.tls_server_name != tls.server_name
                    || (tls.skip_verify && !e.tls_skip_verify);
                if moved && !e.password.expose_secret().is_empty() {
                    return Err(CoreError::invalid(
                        "missing required field \"password\": it must be given again when plugin_name, connection_url, username, allow_cleartext_password, tls_ca, tls_server_name or tls_skip_verify changes",
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
            tls_ca: tls.ca,
            tls_certificate: tls.certificate,
            private_key: tls.private_key,
            tls_server_name: tls.server_name,
            tls_skip_verify: tls.skip_verify,
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

    pub(super) fn config_json(c: &DbConfig) -> Value {
        let mut details = json!({
            "connection_url": redact_url(&c.connection_url),
            "username": c.username,
            "max_open_connections": c.max_open_connections,
            "max_idle_connections": c.max_idle_connections,
            "max_connection_lifetime": format!("{}s", c.max_connection_lifetime),
            "allow_cleartext_password": c.allow_cleartext_password,
            "tls_ca": c.tls_ca,
            "tls_server_name": c.tls_server_name,
            "tls_skip_verify": c.tls_skip_verify,
        });
        if c.plugin_name == "postgresql-database-plugin" {
            details["tls_certificate"] = json!(c.tls_certificate);
        }
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

    pub(super) async fn rotate_root(&self, name: &str) -> Result<Option<Response>, CoreError> {
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
