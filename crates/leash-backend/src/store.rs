//! JSON records in a backend's storage namespace: what every engine and auth method
//! keeps (configurations, roles, users). Values are sealed by the storage barrier like
//! every value; a record that cannot be decoded is an internal error naming its key
//! (never its contents).

use std::sync::Arc;

use leash_storage::{Keyring, Modify, Plain, Storage, StorageError};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::error::CoreError;
use crate::mount::MountEntry;

/// Reads and decodes the record `key` of namespace `ns`.
pub async fn load_json<T: DeserializeOwned>(
    storage: &dyn Storage,
    ns: &str,
    key: &str,
) -> Result<Option<T>, CoreError> {
    match storage.get(ns, key).await? {
        None => Ok(None),
        Some(raw) => serde_json::from_slice(raw.as_slice())
            .map(Some)
            .map_err(|e| CoreError::internal(format!("stored {key} is unreadable: {e}"))),
    }
}

/// Encodes and writes the record `key` of namespace `ns`.
pub async fn save_json<T: Serialize>(
    storage: &dyn Storage,
    ns: &str,
    key: &str,
    value: &T,
) -> Result<(), CoreError> {
    let bytes = serde_json::to_vec(value).map_err(|e| CoreError::internal(e.to_string()))?;
    storage.put(ns, key, bytes).await?;
    Ok(())
}

/// The error of a storage `modify` whose callback refused the change: a [`CoreError`]
/// the callback returned comes back as it was (typed: 403, 400, …); any other refusal's
/// message is the caller's fault (400); anything else is storage's.
pub fn refused_or_storage(e: StorageError) -> CoreError {
    match e {
        StorageError::Rejected(r) => match r.downcast::<CoreError>() {
            Ok(core) => *core,
            Err(other) => CoreError::InvalidRequest(other.to_string()),
        },
        other => CoreError::Storage(other),
    }
}

/// A backend's storage: its own namespace (`mount/<uuid>`) of the server's storage and
/// nothing else. The core hands each engine and auth method one of these instead of the
/// whole [`Storage`], so no backend can read or write the token table, the lease table
/// or another mount's entries.
#[derive(Clone)]
pub struct MountStorage {
    storage: Arc<dyn Storage>,
    ns: Arc<str>,
}

impl std::fmt::Debug for MountStorage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MountStorage")
            .field("ns", &self.ns)
            .finish_non_exhaustive()
    }
}

impl MountStorage {
    /// The namespace of `mount` in `storage`.
    pub fn new(storage: Arc<dyn Storage>, mount: &MountEntry) -> MountStorage {
        MountStorage {
            storage,
            ns: mount.storage_ns().into(),
        }
    }

    /// The namespace this handle is bound to.
    pub fn namespace(&self) -> &str {
        &self.ns
    }

    /// The keyring storage seals with (to hash secrets the backend must compare).
    pub fn keyring(&self) -> &Keyring {
        self.storage.keyring()
    }

    /// Reads one entry.
    pub async fn get(&self, key: &str) -> Result<Option<Plain>, StorageError> {
        self.storage.get(&self.ns, key).await
    }

    /// Writes (creates or replaces) one entry.
    pub async fn put(&self, key: &str, value: Vec<u8>) -> Result<(), StorageError> {
        self.storage.put(&self.ns, key, value).await
    }

    /// Deletes one entry; returns whether it existed.
    pub async fn delete(&self, key: &str) -> Result<bool, StorageError> {
        self.storage.delete(&self.ns, key).await
    }

    /// All keys starting with `prefix`, sorted.
    pub async fn list(&self, prefix: &str) -> Result<Vec<String>, StorageError> {
        self.storage.list(&self.ns, prefix).await
    }

    /// Deletes every key starting with `prefix`; returns how many.
    pub async fn delete_prefix(&self, prefix: &str) -> Result<u64, StorageError> {
        self.storage.delete_prefix(&self.ns, prefix).await
    }

    /// Atomic read-modify-write of one entry.
    pub async fn modify(&self, key: &str, f: Modify) -> Result<Option<Plain>, StorageError> {
        self.storage.modify(&self.ns, key, f).await
    }

    /// Reads and decodes the record `key`.
    pub async fn load_json<T: DeserializeOwned>(&self, key: &str) -> Result<Option<T>, CoreError> {
        load_json(&*self.storage, &self.ns, key).await
    }

    /// Encodes and writes the record `key`.
    pub async fn save_json<T: Serialize>(&self, key: &str, value: &T) -> Result<(), CoreError> {
        save_json(&*self.storage, &self.ns, key, value).await
    }
}
