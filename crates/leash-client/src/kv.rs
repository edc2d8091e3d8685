//! Typed helpers for KV version 2 mounts (`<mount>/data/<path>`, `<mount>/metadata/…`).
//!
//! `mount` is the mount path without slashes (`secret`); `path` is relative to it.

use serde_json::{Map, Value, json};

use crate::types::{KvSecret, KvVersionMetadata, decode};
use crate::{Client, ClientError};

/// `<mount>/<kind>/<path>` with stray slashes removed.
pub fn kv2_path(mount: &str, kind: &str, path: &str) -> String {
    let mount = mount.trim_matches('/');
    let path = path.trim_start_matches('/');
    format!("{mount}/{kind}/{path}")
}

impl Client {
    /// Writes a new version of a KV v2 secret.
    pub async fn kv2_put(
        &self,
        mount: &str,
        path: &str,
        data: &Map<String, Value>,
    ) -> Result<KvVersionMetadata, ClientError> {
        let body = self
            .write(&kv2_path(mount, "data", path), &json!({ "data": data }))
            .await?;
        match body.and_then(|mut b| b.get_mut("data").map(Value::take)) {
            Some(meta) if !meta.is_null() => decode(meta, "kv put metadata"),
            _ => Ok(KvVersionMetadata::default()),
        }
    }

    /// Reads the latest version of a KV v2 secret; `None` if there is none.
    pub async fn kv2_get(&self, mount: &str, path: &str) -> Result<Option<KvSecret>, ClientError> {
        let Some(mut body) = self.read(&kv2_path(mount, "data", path)).await? else {
            return Ok(None);
        };
        match body.get_mut("data").map(Value::take) {
            Some(data) if !data.is_null() => decode(data, "kv get").map(Some),
            _ => Ok(None),
        }
    }

    /// Soft-deletes the latest version of a KV v2 secret.
    pub async fn kv2_delete(&self, mount: &str, path: &str) -> Result<(), ClientError> {
        self.delete(&kv2_path(mount, "data", path)).await.map(drop)
    }

    /// Keys under a KV v2 folder (sub-folders end in `/`); empty if there are none.
    pub async fn kv2_list(&self, mount: &str, path: &str) -> Result<Vec<String>, ClientError> {
        let body = self.list(&kv2_path(mount, "metadata", path)).await?;
        Ok(body.as_ref().map(list_keys).unwrap_or_default())
    }
}

/// `data.keys` of a LIST answer.
pub fn list_keys(body: &Value) -> Vec<String> {
    body.get("data")
        .and_then(|d| d.get("keys"))
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|v| v.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kv2_paths() {
        assert_eq!(
            kv2_path("secret", "data", "bench/item"),
            "secret/data/bench/item"
        );
        assert_eq!(
            kv2_path("/secret/", "metadata", "/a/"),
            "secret/metadata/a/"
        );
        assert_eq!(kv2_path("secret", "metadata", ""), "secret/metadata/");
    }

    #[test]
    fn list_keys_reads_data_keys() {
        assert_eq!(
            list_keys(&json!({"data": {"keys": ["a", "b/"]}})),
            vec!["a", "b/"]
        );
        assert!(list_keys(&json!({"data": null})).is_empty());
    }
}
