//! The database secrets engine: Vault's `database/` paths over the plugin layer.
//!
//! * `config/:name` — a connection (`plugin_name`, `connection_url`, `username`,
//!   `password`, `allowed_roles`, `verify_connection`, `max_open_connections`,
//!   `password_authentication`, `scram_iterations`, `root_rotation_statements`, and TLS:
//!   `tls_ca`, `tls_certificate`/`private_key` or `tls_certificate_key`,
//!   `tls_server_name`, `tls_skip_verify`, over the URL's `sslmode`/`tls=`). Reads
//!   never return the password or a private key. `rotate-root/:name` and `reset/:name`.
//! * `roles/:name` — `db_name`, `creation_statements`, `revocation_statements`,
//!   `rollback_statements`, `renew_statements`, `default_ttl`, `max_ttl`.
//! * `creds/:role` — a new credential under a lease, intent first (see
//!   [`leash_backend::lease`]): the lease is persisted before the role exists in the
//!   target, so no crash can leave a role nobody will revoke.
//!
//! Leases carry what revocation needs (database, username, revocation and renewal
//! statements) so deleting or changing a role never orphans credentials already issued.
//!
//! Layout: [`config`] (connections and root rotation), [`roles`] (roles and statement
//! fields), [`target`] (live connections to the databases), [`issue`] (credentials under
//! leases), [`routes`] (the `Backend` implementation: paths, renewal, revocation),
//! [`redact`] (passwords out of connection URLs).

mod config;
mod hooks;
mod issue;
mod redact;
mod roles;
mod routes;
mod target;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use leash_backend::{Backend, CoreError, LeaseRegistry, MountStorage};
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::DbError;
use target::Target;

/// The engine serving one `database` mount.
pub struct DatabaseBackend {
    store: MountStorage,
    leases: Arc<dyn LeaseRegistry>,
    targets: Mutex<HashMap<String, Arc<Target>>>,
    /// Serialises configuration changes (write, rotate-root, reset, delete) per mount.
    config_lock: tokio::sync::Mutex<()>,
}

/// A database engine storing in `store` (its mount's namespace). Time comes from the lease registry (expirations are
/// the core's), so the engine needs no clock of its own.
pub fn new_backend(store: MountStorage, leases: Arc<dyn LeaseRegistry>) -> Arc<dyn Backend> {
    Arc::new(DatabaseBackend {
        store,
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

impl DatabaseBackend {
    async fn load<T: DeserializeOwned>(&self, key: &str) -> Result<Option<T>, CoreError> {
        self.store.load_json(key).await
    }

    async fn save<T: Serialize>(&self, key: &str, v: &T) -> Result<(), CoreError> {
        self.store.save_json(key, v).await
    }
}

#[cfg(test)]
mod tests;
