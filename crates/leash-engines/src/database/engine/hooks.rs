//! What the core learns of this engine's credentials through the [`Backend`] hooks,
//! without knowing the engine: the sessions its users have open (session observer),
//! how its credentials show in leaked text (leak response), the role label of its
//! leases (metrics) and which of its credentials are canaries.
//!
//! [`Backend`]: leash_backend::Backend

use std::collections::BTreeSet;

use leash_backend::{Canary, CoreError, ObservedSession};
use serde_json::Value;

use super::DatabaseBackend;
use super::config::DbConfig;
use super::roles::DbRole;
use super::target::{Target, connect};

/// Every username leash generates starts with this.
const USER_PREFIX: &str = "v-";
/// The shortest generated username (`v-` + parts + 20 random characters).
const MIN_USERNAME: usize = 24;

impl DatabaseBackend {
    /// The sessions of leash-made users on every connection of this mount that has
    /// `observe_sessions` on or serves a canary role; `None` when no connection does. Each poll opens its own
    /// short-lived connection, so the observer never competes with issuance for the
    /// engine's pool. A connection that cannot be reached is logged and skipped.
    pub(super) async fn sessions_to_observe(
        &self,
    ) -> Result<Option<Vec<ObservedSession>>, CoreError> {
        let mut out = Vec::new();
        let mut observed = false;
        // A connection serving a canary role is observed whatever its configuration
        // says: a login with a canary credential must be seen.
        let mut canaries = std::collections::HashSet::new();
        for key in self.store.list("role/").await? {
            if let Some(role) = self.store.load_json::<DbRole>(&key).await?
                && role.canary
            {
                canaries.insert(role.db_name);
            }
        }
        for key in self.store.list("config/").await? {
            let Some(config) = self.store.load_json::<DbConfig>(&key).await? else {
                continue;
            };
            let name = key.trim_start_matches("config/");
            if !config.observe_sessions && !canaries.contains(name) {
                continue;
            }
            observed = true;
            let sessions = match connect(&config, &config.password).await {
                Ok(Target::Pg(t)) => t.sessions(USER_PREFIX).await,
                Ok(Target::My(t)) => t.sessions(USER_PREFIX).await,
                Err(e) => Err(e),
            };
            match sessions {
                Ok(s) => out.extend(s.into_iter().map(|s| ObservedSession {
                    target: name.to_owned(),
                    id: s.id,
                    identity: s.username,
                    client_addr: s.client_addr,
                })),
                Err(e) => {
                    tracing::warn!(database = %name, error = %e, "session observer could not list sessions");
                }
            }
        }
        Ok(observed.then_some(out))
    }
}

/// Whether a lease's credential is a canary (its lease data says so, and only it).
pub(super) fn canary(internal: &Value) -> Option<Canary> {
    let flag = |k: &str| internal.get(k).and_then(Value::as_bool) == Some(true);
    flag("canary").then(|| Canary {
        contain_on_trip: flag("contain_on_trip"),
    })
}

/// The database user of a lease (what its sessions and leaked text show).
pub(super) fn credential_identity(internal: &Value) -> Option<&str> {
    internal.get("username").and_then(Value::as_str)
}

/// Username candidates in `text`: words of `[a-z0-9_-]` that start with `v-` and are
/// long enough to be generated ones.
pub(super) fn leak_candidates(text: &str) -> BTreeSet<String> {
    text.split(|c: char| !(c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-'))
        .filter(|w| w.starts_with(USER_PREFIX) && w.len() >= MIN_USERNAME)
        .map(str::to_owned)
        .collect()
}

/// The role of the lease at `path` (`creds/<role>/<random>`; `""` for any other path).
pub(super) fn lease_role(path: &str) -> &str {
    path.strip_prefix("creds/")
        .and_then(|r| r.split('/').next())
        .unwrap_or("")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usernames_are_generated_looking_words() {
        let text = "FATAL: password authentication failed for user \"v-approle-ro-abcdefghij0123456789-1700000000\" \
                    v-short vault v-x";
        let found = leak_candidates(text);
        assert_eq!(
            found.into_iter().collect::<Vec<_>>(),
            vec!["v-approle-ro-abcdefghij0123456789-1700000000".to_owned()]
        );
    }

    #[test]
    fn the_role_label_is_the_segment_after_creds() {
        assert_eq!(lease_role("creds/readonly/abc"), "readonly");
        assert_eq!(lease_role("static-creds/x/abc"), "");
        assert_eq!(
            credential_identity(&serde_json::json!({"username": "v-x"})),
            Some("v-x")
        );
        assert_eq!(credential_identity(&serde_json::json!({})), None);
    }
}
