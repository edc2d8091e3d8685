//! JSON records in a backend's storage namespace: what every engine and auth method
//! keeps (configurations, roles, users). Values are sealed by the storage barrier like
//! every value; a record that cannot be decoded is an internal error naming its key
//! (never its contents).

use leash_storage::{Storage, StorageError};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::error::CoreError;

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
