//! Live connections to the configured databases: one pool per connection, opened from
//! storage when first needed, finishing an interrupted root rotation on the way.

use std::sync::Arc;

use leash_backend::CoreError;
use leash_types::{ExposeSecret, SecretString};

use super::config::{DbConfig, Plugin};
use super::{DatabaseBackend, upstream};
use crate::database::DbError;
use crate::database::mysql::{MySqlConfig, MySqlTarget};
use crate::database::postgres::{PasswordAuthentication, PgConfig, PgTarget};
use crate::database::template::Vars;

/// A live connection to one configured database.
/// (Held behind an `Arc`, so the size difference between variants costs nothing.)
#[allow(clippy::large_enum_variant)]
pub(super) enum Target {
    Pg(PgTarget),
    My(MySqlTarget),
}

impl Target {
    pub(super) async fn create_user(
        &self,
        statements: &[String],
        vars: &Vars,
    ) -> Result<(), DbError> {
        match self {
            Target::Pg(t) => t.create_user(statements, vars).await,
            Target::My(t) => t.create_user(statements, vars).await,
        }
    }

    pub(super) async fn renew_user(
        &self,
        statements: &[String],
        vars: &Vars,
    ) -> Result<(), DbError> {
        match self {
            Target::Pg(t) => t.renew_user(statements, vars).await,
            Target::My(t) => t.renew_user(statements, vars).await,
        }
    }

    pub(super) async fn revoke_user(
        &self,
        user: &str,
        statements: &[String],
    ) -> Result<(), DbError> {
        match self {
            Target::Pg(t) => t.revoke_user(user, statements).await,
            Target::My(t) => t.revoke_user(user, statements).await,
        }
    }

    pub(super) async fn revoke_users(
        &self,
        batch: &[(String, Vec<String>)],
    ) -> Vec<Result<(), DbError>> {
        match self {
            Target::Pg(t) => t.revoke_users(batch).await,
            Target::My(t) => t.revoke_users(batch).await,
        }
    }

    pub(super) async fn table_exists(&self, schema: &str, table: &str) -> Result<bool, DbError> {
        match self {
            Target::Pg(t) => t.table_exists(schema, table).await,
            Target::My(t) => t.table_exists(schema, table).await,
        }
    }

    pub(super) async fn rotate_root(
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

pub(super) async fn connect(config: &DbConfig, password: &SecretString) -> Result<Target, DbError> {
    let password = SecretString::from(password.expose_secret().to_owned());
    match Plugin::parse(&config.plugin_name) {
        Ok(Plugin::Postgres) => {
            let mut c = PgConfig::new(&config.connection_url, &config.username, password);
            c.max_open_connections = config.max_open_connections;
            c.allow_cleartext_password = config.allow_cleartext_password;
            c.tls = config.tls_fields(Plugin::Postgres);
            c.password_authentication = if config.password_authentication == "password" {
                PasswordAuthentication::Password
            } else {
                PasswordAuthentication::ScramSha256 {
                    iterations: config.scram_iterations,
                }
            };
            Ok(Target::Pg(PgTarget::connect(c).await?))
        }
        Ok(plugin @ Plugin::MySql(_)) => {
            let mut c = MySqlConfig::new(&config.connection_url, &config.username, password);
            c.max_open_connections = config.max_open_connections;
            c.allow_cleartext_password = config.allow_cleartext_password;
            c.tls = config.tls_fields(plugin);
            Ok(Target::My(MySqlTarget::connect(c).await?))
        }
        Err(e) => Err(DbError::InvalidConnectionUrl {
            reason: e.to_string(),
        }),
    }
}

impl DatabaseBackend {
    pub(super) fn cached(&self, name: &str) -> Option<Arc<Target>> {
        self.targets.lock().ok().and_then(|m| m.get(name).cloned())
    }

    pub(super) fn forget(&self, name: &str) {
        if let Ok(mut m) = self.targets.lock() {
            m.remove(name);
        }
    }

    pub(super) fn remember(&self, name: &str, t: Arc<Target>) -> Arc<Target> {
        match self.targets.lock() {
            Ok(mut m) => Arc::clone(m.entry(name.to_owned()).or_insert(t)),
            Err(_) => t,
        }
    }

    /// The live connection for config `name`, opened from storage when needed.
    pub(super) async fn target(&self, name: &str) -> Result<Arc<Target>, CoreError> {
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
}
