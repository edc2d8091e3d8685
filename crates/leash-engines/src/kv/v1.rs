//! KV version 1: one JSON object per path, written and read as-is, no history.
//!
//! `GET <path>` answers the stored object (or nothing → 404); `POST`/`PUT` stores the
//! body (a non-empty object); `DELETE` removes it; `LIST <folder>/` names the folder's
//! immediate children. The existence check tells `create` from `update`, so a policy
//! with only `create` can add new paths but not overwrite existing ones.

use async_trait::async_trait;
use leash_backend::{Backend, BackendRequest, CoreError, MountStorage, Response};

use leash_types::Operation;
use serde_json::{Map, Value};

use super::{list_children, list_folder, secret_key, validate_name};

/// The backend of one KV v1 mount.
pub(super) struct KvV1 {
    store: MountStorage,
}

impl KvV1 {
    pub(super) fn new(store: MountStorage) -> KvV1 {
        KvV1 { store }
    }

    async fn read(&self, path: &str) -> Result<Option<Response>, CoreError> {
        if validate_name(path).is_err() {
            return Ok(None);
        }
        let Some(raw) = self.store.get(&secret_key(path)).await? else {
            return Ok(None);
        };
        let value: Map<String, Value> = serde_json::from_slice(&raw)
            .map_err(|_| CoreError::internal("kv v1: a stored value is not a JSON object"))?;
        Ok(Some(Response::data(Value::Object(value))))
    }

    async fn write(&self, path: &str, data: &Map<String, Value>) -> Result<(), CoreError> {
        validate_name(path)?;
        if data.is_empty() {
            return Err(CoreError::invalid("missing data fields"));
        }
        let bytes = serde_json::to_vec(data)
            .map_err(|_| CoreError::internal("kv v1: request data could not be encoded"))?;
        self.store.put(&secret_key(path), bytes).await?;
        Ok(())
    }
}

#[async_trait]
impl Backend for KvV1 {
    async fn exists(&self, req: &BackendRequest<'_>) -> Result<Option<bool>, CoreError> {
        if validate_name(req.path).is_err() {
            return Ok(None);
        }
        let found = self.store.get(&secret_key(req.path)).await?;
        Ok(Some(found.is_some()))
    }

    async fn handle(&self, req: &BackendRequest<'_>) -> Result<Option<Response>, CoreError> {
        match req.operation {
            Operation::Read => self.read(req.path).await,
            Operation::Create | Operation::Update => {
                self.write(req.path, req.data).await.map(|()| None)
            }
            Operation::Delete => {
                validate_name(req.path)?;
                self.store.delete(&secret_key(req.path)).await?;
                Ok(None)
            }
            Operation::List => {
                let folder = list_folder(req.path)?;
                list_children(&self.store, &folder).await
            }
            Operation::Patch => Err(CoreError::UnsupportedOperation),
        }
    }
}

#[cfg(test)]
mod tests {
    use leash_types::Operation::{Create, Delete, List, Patch, Read, Update};
    use serde_json::json;

    use super::super::testutil::fixture;
    use leash_backend::CoreError;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn crud_round_trip() {
        let f = fixture(None);
        assert!(f.call(Read, "app/db", json!({})).await.unwrap().is_none());
        let body = json!({"user": "u", "password": "hunter2", "port": 5432, "tags": ["a"]});
        assert!(
            f.call(Create, "app/db", body.clone())
                .await
                .unwrap()
                .is_none()
        );
        assert_eq!(f.ok(Read, "app/db", json!({})).await, body);

        // A write replaces the whole object.
        f.call(Update, "app/db", json!({"user": "v"}))
            .await
            .unwrap();
        assert_eq!(f.ok(Read, "app/db", json!({})).await, json!({"user": "v"}));

        assert!(f.call(Delete, "app/db", json!({})).await.unwrap().is_none());
        assert!(f.call(Read, "app/db", json!({})).await.unwrap().is_none());
        // Deleting what is not there is fine (204).
        assert!(f.call(Delete, "app/db", json!({})).await.unwrap().is_none());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn list_names_immediate_children_and_folders() {
        let f = fixture(None);
        for p in ["a", "b/c", "b/d/e", "b/f", "bb"] {
            f.call(Update, p, json!({"k": "v"})).await.unwrap();
        }
        assert_eq!(
            f.ok(List, "", json!({})).await,
            json!({"keys": ["a", "b/", "bb"]})
        );
        assert_eq!(
            f.ok(List, "b/", json!({})).await,
            json!({"keys": ["c", "d/", "f"]})
        );
        // Without the trailing slash too (clients differ).
        assert_eq!(f.ok(List, "b/d", json!({})).await, json!({"keys": ["e"]}));
        assert!(f.call(List, "nothing/", json!({})).await.unwrap().is_none());
        assert!(f.call(List, "a/", json!({})).await.unwrap().is_none());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn existence_check_tells_create_from_update() {
        let f = fixture(None);
        assert_eq!(f.exists("x/y").await, Some(false));
        f.call(Create, "x/y", json!({"k": 1})).await.unwrap();
        assert_eq!(f.exists("x/y").await, Some(true));
        assert_eq!(f.exists("x").await, Some(false));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn bad_input_is_refused() {
        let f = fixture(None);
        assert_eq!(
            f.invalid(Update, "x", json!({})).await,
            "missing data fields"
        );
        assert!(
            f.invalid(Update, "", json!({"k": 1}))
                .await
                .starts_with("missing path")
        );
        f.invalid(Update, "a//b", json!({"k": 1})).await;
        f.invalid(Update, "a/../b", json!({"k": 1})).await;
        f.invalid(Update, "dir/", json!({"k": 1})).await;
        assert!(matches!(
            f.call(Patch, "x", json!({"k": 1})).await,
            Err(CoreError::UnsupportedOperation)
        ));
        // Nothing was written by any of them.
        assert!(f.call(List, "", json!({})).await.unwrap().is_none());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn values_live_in_the_mount_namespace_only() {
        let f = fixture(None);
        f.call(Update, "k", json!({"v": 1})).await.unwrap();
        let ns = f.mount.storage_ns();
        assert_eq!(f.storage.list(&ns, "").await.unwrap(), vec!["kv/k"]);
        let other = super::super::testutil::mount("other/", "other-uuid", None);
        assert!(
            f.storage
                .list(&other.storage_ns(), "")
                .await
                .unwrap()
                .is_empty()
        );
    }
}
