//! KV version 2: versioned secrets with Vault's paths, fields and messages.
//!
//! | path | operations |
//! | --- | --- |
//! | `config` | read, write (`max_versions`, `cas_required`, `delete_version_after`) |
//! | `data/:name` | read (`?version=N`), write (`data`, `options.cas`), patch, delete (latest) |
//! | `metadata/:name` | read, write, patch, delete (everything), list (`metadata/:folder/`) |
//! | `delete/:name`, `undelete/:name`, `destroy/:name` | write (`versions`) |
//!
//! Anything else answers 404 with Vault's warning ("Invalid path for a versioned K/V
//! secrets engine…"), and an operation a path does not support is
//! [`CoreError::UnsupportedOperation`] (405), as Vault does.
//!
//! Each secret is one [`model::SecretDoc`] changed atomically through
//! [`Storage::modify`]; the decision (check-and-set above all) is made inside the
//! read-modify-write, so two writers with the same `cas` cannot both win.

mod metadata;
mod model;
#[cfg(test)]
mod tests;

use std::sync::Arc;
use std::sync::mpsc;

use async_trait::async_trait;
use leash_backend::{Backend, BackendRequest, CoreError, MountStorage, Response, ResponseKind};
use leash_storage::{Modify, StorageError};
use leash_types::{Clock, Operation};
use serde_json::{Map, Value, json};

use super::fields::{field, int, uint};
use super::{list_children, list_folder, secret_key, unix_nanos, validate_name};
use model::{KvConfig, SecretDoc, merge_patch};

/// Storage key of the mount configuration (outside the secret prefix).
const CONFIG_KEY: &str = "config";

/// Vault's warning for non-list operations on `data`, `metadata`, … themselves.
const ROOT_WARNING: &str =
    "Non-listing operations on the root of a K/V v2 mount are not supported.";

/// The backend of one KV v2 mount.
pub(super) struct KvV2 {
    store: MountStorage,
    clock: Arc<dyn Clock>,
}

/// Which endpoint a path names.
enum Route<'a> {
    Config,
    Data(&'a str),
    Metadata(&'a str),
    Versions(VersionAction, &'a str),
    /// `data`, `metadata`, `delete`, `undelete`, `destroy` without a name.
    Root,
    Invalid,
}

/// What `delete/`, `undelete/` and `destroy/` do to the listed versions.
#[derive(Clone, Copy, PartialEq, Eq)]
enum VersionAction {
    Delete,
    Undelete,
    Destroy,
}

fn route(path: &str) -> Route<'_> {
    match path.split_once('/') {
        None => match path {
            "config" => Route::Config,
            "data" | "metadata" | "delete" | "undelete" | "destroy" => Route::Root,
            _ => Route::Invalid,
        },
        Some(("data", name)) => Route::Data(name),
        Some(("metadata", name)) => Route::Metadata(name),
        Some(("delete", name)) => Route::Versions(VersionAction::Delete, name),
        Some(("undelete", name)) => Route::Versions(VersionAction::Undelete, name),
        Some(("destroy", name)) => Route::Versions(VersionAction::Destroy, name),
        Some(_) => Route::Invalid,
    }
}

/// How a read-modify-write ends.
enum Change<R> {
    /// Store the document, answer `R`.
    Write(SecretDoc, R),
    /// Change nothing, answer `R`.
    Keep(R),
}

/// Marks a read-modify-write the closure aborted on purpose; its real outcome travels
/// beside it.
const ABORTED: &str = "kv: change not applied";

impl KvV2 {
    pub(super) fn new(store: MountStorage, clock: Arc<dyn Clock>) -> KvV2 {
        KvV2 { store, clock }
    }

    fn now(&self) -> i64 {
        unix_nanos(self.clock.now())
    }

    /// The stored secret `name`, if any.
    async fn load(&self, name: &str) -> Result<Option<SecretDoc>, CoreError> {
        match self.store.get(&secret_key(name)).await? {
            Some(raw) => SecretDoc::decode(&raw).map(Some),
            None => Ok(None),
        }
    }

    /// The mount configuration (defaults until written).
    async fn config(&self) -> Result<KvConfig, CoreError> {
        match self.store.get(CONFIG_KEY).await? {
            Some(raw) => serde_json::from_slice(&raw)
                .map_err(|_| CoreError::internal("kv v2: the stored mount config is corrupt")),
            None => Ok(KvConfig::default()),
        }
    }

    /// Atomically reads, decides on and writes the secret `name`. `decide` runs inside
    /// the storage's read-modify-write (it must be quick and must not block); its error
    /// or answer is handed back unchanged.
    async fn mutate<R, F>(&self, name: &str, decide: F) -> Result<R, CoreError>
    where
        R: Send + 'static,
        F: FnOnce(Option<SecretDoc>) -> Result<Change<R>, CoreError> + Send + 'static,
    {
        let (tx, rx) = mpsc::sync_channel::<Result<R, CoreError>>(1);
        let modify: Modify = Box::new(move |current| {
            let decided = current
                .map(SecretDoc::decode)
                .transpose()
                .and_then(decide)
                .and_then(|change| match change {
                    Change::Write(doc, r) => doc.encode().map(|bytes| (Some(bytes), r)),
                    Change::Keep(r) => Ok((None, r)),
                });
            match decided {
                Ok((Some(bytes), r)) => {
                    let _ = tx.send(Ok(r));
                    Ok(Some(bytes))
                }
                Ok((None, r)) => {
                    let _ = tx.send(Ok(r));
                    Err(ABORTED.into())
                }
                Err(e) => {
                    let _ = tx.send(Err(e));
                    Err(ABORTED.into())
                }
            }
        });
        let stored = self.store.modify(&secret_key(name), modify).await;
        let outcome = rx.try_recv().ok();
        match (stored, outcome) {
            (Ok(_) | Err(StorageError::Rejected(_)), Some(outcome)) => outcome,
            (Err(e), _) => Err(e.into()),
            (Ok(_), None) => Err(CoreError::internal(
                "kv v2: storage did not run the read-modify-write",
            )),
        }
    }

    async fn read_data(
        &self,
        name: &str,
        data: &Map<String, Value>,
    ) -> Result<Option<Response>, CoreError> {
        let requested = field(data, "version")
            .map(|v| int("version", v))
            .transpose()?;
        let Some(doc) = self.load(name).await? else {
            return Ok(None);
        };
        let number = match requested.and_then(|v| u64::try_from(v).ok()) {
            Some(n) if n > 0 => n,
            _ => doc.current_version,
        };
        let Some(version) = doc.versions.get(&number) else {
            return Ok(None);
        };
        let metadata = doc.version_json(number, version);
        if !version.is_live(self.now()) {
            return Ok(Some(not_found(
                Some(json!({ "data": null, "metadata": metadata })),
                None,
            )));
        }
        let Some(secret) = &version.data else {
            return Err(CoreError::internal("kv v2: a live version has no data"));
        };
        Ok(Some(Response::data(
            json!({ "data": secret, "metadata": metadata }),
        )))
    }

    async fn write_data(
        &self,
        name: &str,
        data: &Map<String, Value>,
    ) -> Result<Option<Response>, CoreError> {
        validate_name(name)?;
        let secret = secret_data(data)?;
        let cas = cas_option(data)?;
        let config = self.config().await?;
        let now = self.now();
        let body = self
            .mutate(name, move |doc| {
                let mut doc = doc.unwrap_or_default();
                doc.check_cas(cas, &config)?;
                let number = doc.add_version(secret, now, &config);
                let body = latest_json(&doc, number)?;
                Ok(Change::Write(doc, body))
            })
            .await?;
        Ok(Some(Response::data(body)))
    }

    async fn patch_data(
        &self,
        name: &str,
        data: &Map<String, Value>,
    ) -> Result<Option<Response>, CoreError> {
        validate_name(name)?;
        let patch = secret_data(data)?;
        let cas = cas_option(data)?;
        let config = self.config().await?;
        let now = self.now();
        let (patched, body) = self
            .mutate(name, move |doc| {
                let Some(mut doc) = doc else {
                    return Err(CoreError::NotFound);
                };
                doc.check_cas(cas, &config)?;
                let current = doc.current_version;
                let Some(latest) = doc.versions.get(&current) else {
                    return Err(CoreError::NotFound);
                };
                if !latest.is_live(now) {
                    let body = doc.version_json(current, latest);
                    return Ok(Change::Keep((false, body)));
                }
                let mut merged = latest.data.clone().unwrap_or_default();
                merge_patch(&mut merged, &patch);
                let number = doc.add_version(merged, now, &config);
                let body = latest_json(&doc, number)?;
                Ok(Change::Write(doc, (true, body)))
            })
            .await?;
        if patched {
            Ok(Some(Response::data(body)))
        } else {
            Ok(Some(not_found(Some(body), None)))
        }
    }

    /// `DELETE data/:name`: soft-deletes the latest version (if it is live).
    async fn delete_latest(&self, name: &str) -> Result<Option<Response>, CoreError> {
        validate_name(name)?;
        let now = self.now();
        self.mutate(name, move |doc| {
            let Some(mut doc) = doc else {
                return Ok(Change::Keep(()));
            };
            let current = doc.current_version;
            match doc.versions.get_mut(&current) {
                Some(latest) if latest.is_live(now) => {
                    latest.deletion_time = Some(now);
                    Ok(Change::Write(doc, ()))
                }
                _ => Ok(Change::Keep(())),
            }
        })
        .await?;
        Ok(None)
    }

    /// `delete/`, `undelete/`, `destroy/` with `{versions: [...]}`.
    async fn change_versions(
        &self,
        action: VersionAction,
        name: &str,
        data: &Map<String, Value>,
    ) -> Result<Option<Response>, CoreError> {
        let versions = version_list(data)?;
        if versions.is_empty() {
            return Err(CoreError::invalid(match action {
                VersionAction::Destroy => "no version number provided",
                VersionAction::Delete | VersionAction::Undelete => "No version number provided",
            }));
        }
        validate_name(name)?;
        let config = self.config().await?;
        let now = self.now();
        self.mutate(name, move |doc| {
            let Some(mut doc) = doc else {
                return Ok(Change::Keep(()));
            };
            let rescheduled = doc.scheduled_deletion(now, &config);
            let mut changed = false;
            for number in &versions {
                let Some(version) = doc.versions.get_mut(number) else {
                    continue;
                };
                match action {
                    VersionAction::Delete if version.is_live(now) => {
                        version.deletion_time = Some(now);
                        changed = true;
                    }
                    VersionAction::Undelete if !version.destroyed => {
                        version.deletion_time = rescheduled;
                        changed = true;
                    }
                    VersionAction::Destroy if !version.destroyed => {
                        version.destroyed = true;
                        version.data = None;
                        changed = true;
                    }
                    _ => {}
                }
            }
            Ok(if changed {
                Change::Write(doc, ())
            } else {
                Change::Keep(())
            })
        })
        .await?;
        Ok(None)
    }

    async fn data(
        &self,
        op: Operation,
        name: &str,
        data: &Map<String, Value>,
    ) -> Result<Option<Response>, CoreError> {
        match op {
            Operation::Read if validate_name(name).is_ok() => self.read_data(name, data).await,
            Operation::Read => Ok(Some(invalid_path(op))),
            Operation::Create | Operation::Update => self.write_data(name, data).await,
            Operation::Patch => self.patch_data(name, data).await,
            Operation::Delete => self.delete_latest(name).await,
            // Vault: `data/x` has no list handler (405); `data/` and `data/x/` fall
            // through to the invalid-path handler, which points at `metadata/`.
            Operation::List if name.is_empty() || name.ends_with('/') => Ok(Some(invalid_path(op))),
            Operation::List => Err(CoreError::UnsupportedOperation),
        }
    }
}

#[async_trait]
impl Backend for KvV2 {
    /// Vault's existence check: a secret exists once it has metadata (a version, or a
    /// metadata write), so `create` alone cannot overwrite it. `config` and the version
    /// endpoints have no existence check in Vault (always `update`).
    async fn exists(&self, req: &BackendRequest<'_>) -> Result<Option<bool>, CoreError> {
        match route(req.path) {
            Route::Data(name) | Route::Metadata(name) if validate_name(name).is_ok() => {
                let found = self.store.get(&secret_key(name)).await?;
                Ok(Some(found.is_some()))
            }
            _ => Ok(None),
        }
    }

    async fn handle(&self, req: &BackendRequest<'_>) -> Result<Option<Response>, CoreError> {
        let op = req.operation;
        match route(req.path) {
            Route::Config => match op {
                Operation::Read => Ok(Some(Response::data(self.config().await?.to_json()))),
                Operation::Create | Operation::Update => self.write_config(req.data).await,
                _ => Err(CoreError::UnsupportedOperation),
            },
            Route::Data(name) => self.data(op, name, req.data).await,
            Route::Metadata(name) => self.metadata(op, name, req.data).await,
            Route::Versions(action, name) => match op {
                Operation::Create | Operation::Update => {
                    self.change_versions(action, name, req.data).await
                }
                _ => Err(CoreError::UnsupportedOperation),
            },
            Route::Root if op == Operation::List && req.path == "metadata" => {
                list_children(&self.store, "").await
            }
            Route::Root => Ok(Some(not_found(None, Some(ROOT_WARNING.to_owned())))),
            Route::Invalid => Ok(Some(invalid_path(op))),
        }
    }
}

impl KvV2 {
    /// `metadata/:name` in all its operations.
    async fn metadata(
        &self,
        op: Operation,
        name: &str,
        data: &Map<String, Value>,
    ) -> Result<Option<Response>, CoreError> {
        match op {
            Operation::Read if validate_name(name).is_ok() => Ok(self
                .load(name)
                .await?
                .map(|doc| Response::data(doc.metadata_json()))),
            Operation::Read => Ok(None),
            Operation::Create | Operation::Update => self.write_metadata(name, data, false).await,
            Operation::Patch => self.write_metadata(name, data, true).await,
            Operation::Delete => {
                validate_name(name)?;
                self.store.delete(&secret_key(name)).await?;
                Ok(None)
            }
            Operation::List => {
                let folder = list_folder(name)?;
                list_children(&self.store, &folder).await
            }
        }
    }
}

/// The `data` object of a write or patch.
fn secret_data(data: &Map<String, Value>) -> Result<Map<String, Value>, CoreError> {
    match field(data, "data") {
        None => Err(CoreError::invalid("no data provided")),
        Some(Value::Object(secret)) => Ok(secret.clone()),
        Some(_) => Err(CoreError::invalid(
            "no data provided: the \"data\" field must be a JSON object",
        )),
    }
}

/// `options.cas`, if given.
fn cas_option(data: &Map<String, Value>) -> Result<Option<i64>, CoreError> {
    let Some(options) = field(data, "options") else {
        return Ok(None);
    };
    let Value::Object(options) = options else {
        return Err(CoreError::invalid(
            "field \"options\" must be a JSON object",
        ));
    };
    field(options, "cas")
        .map(|v| {
            int("cas", v).map_err(|_| CoreError::invalid("error parsing check-and-set parameter"))
        })
        .transpose()
}

/// `versions` as Vault's `TypeCommaIntSlice`: a list, a comma-separated string or one number.
fn version_list(data: &Map<String, Value>) -> Result<Vec<u64>, CoreError> {
    let mut out = Vec::new();
    match field(data, "versions") {
        None => {}
        Some(Value::Array(items)) => {
            for item in items {
                out.push(uint("versions", item)?);
            }
        }
        Some(Value::String(s)) => {
            for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
                out.push(uint("versions", &Value::String(part.to_owned()))?);
            }
        }
        Some(other) => out.push(uint("versions", other)?),
    }
    Ok(out)
}

/// The version metadata of a freshly written version.
fn latest_json(doc: &SecretDoc, number: u64) -> Result<Value, CoreError> {
    doc.versions
        .get(&number)
        .map(|v| doc.version_json(number, v))
        .ok_or_else(|| CoreError::internal("kv v2: a new version was not kept"))
}

/// A 404 that still carries a body, as Vault answers for deleted versions and invalid
/// paths.
fn not_found(data: Option<Value>, warning: Option<String>) -> Response {
    Response {
        data,
        secret: None,
        auth: None,
        warnings: warning.into_iter().collect(),
        kind: ResponseKind::EnvelopeWithStatus(404),
        login: None,
    }
}

/// Vault's answer for a path no KV v2 endpoint serves.
fn invalid_path(op: Operation) -> Response {
    let sub = match op {
        Operation::Create | Operation::Update => "put",
        Operation::Patch => "patch",
        Operation::Read => "get",
        Operation::List => "list",
        Operation::Delete => "delete",
    };
    not_found(
        None,
        Some(format!(
            "Invalid path for a versioned K/V secrets engine. See the API docs for the \
             appropriate API endpoints to use. If using the Vault CLI, use 'vault kv {sub}' \
             for this operation."
        )),
    )
}
