//! The `Backend` implementation: Vault's `database/` paths, lease renewal and
//! revocation (grouped per connection).

use std::collections::{BTreeSet, HashMap};

use async_trait::async_trait;
use leash_backend::{
    Backend, BackendRequest, Canary, CoreError, LeaseRecord, ObservedSession, Response, match_route,
};
use leash_types::Operation;
use serde_json::Value;
use time::OffsetDateTime;

use super::config::DbConfig;
use super::hooks;
use super::issue::LeaseData;
use super::{DatabaseBackend, check_name, upstream};
use crate::database::template::Vars;

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

    async fn observe_sessions(&self) -> Result<Option<Vec<ObservedSession>>, CoreError> {
        self.sessions_to_observe().await
    }

    fn credential_identity<'a>(&self, internal: &'a Value) -> Option<&'a str> {
        hooks::credential_identity(internal)
    }

    fn leak_candidates(&self, text: &str) -> BTreeSet<String> {
        hooks::leak_candidates(text)
    }

    fn lease_role<'p>(&self, path: &'p str) -> &'p str {
        hooks::lease_role(path)
    }

    fn canary(&self, internal: &Value) -> Option<Canary> {
        hooks::canary(internal)
    }

    async fn exists(&self, req: &BackendRequest<'_>) -> Result<Option<bool>, CoreError> {
        let key = if let Some(c) = match_route("config/:name", req.path) {
            format!("config/{}", c[0])
        } else if let Some(c) = match_route("roles/:name", req.path) {
            format!("role/{}", c[0])
        } else {
            return Ok(None);
        };
        Ok(Some(self.store.get(&key).await?.is_some()))
    }

    async fn handle(&self, req: &BackendRequest<'_>) -> Result<Option<Response>, CoreError> {
        let op = req.operation;
        let write = matches!(op, Operation::Create | Operation::Update);
        let path = req.path;
        if path == "config" || path == "config/" {
            return match op {
                Operation::List | Operation::Read => {
                    let keys: Vec<String> = self
                        .store
                        .list("config/")
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
                        .store
                        .list("role/")
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
                    self.store.delete(&format!("config/{name}")).await?;
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
                    self.store.delete(&format!("role/{name}")).await?;
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
            if self.store.get(&format!("config/{name}")).await?.is_none() {
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
                    let _ = self.store.delete(&key).await;
                    let _ = self.store.delete(&idx).await;
                }
            }
        }
        out.into_iter()
            .map(|r| r.unwrap_or_else(|| Err(CoreError::internal("lease was not revoked"))))
            .collect()
    }
}
