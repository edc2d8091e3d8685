//! What a KV v2 mount stores, and the pure rules that change it.
//!
//! One [`SecretDoc`] per secret holds its metadata and every kept version; the mount's
//! [`KvConfig`] is a separate small document. Everything here is synchronous and takes
//! the time as a parameter, so it runs inside [`leash_storage::Storage::modify`] and is
//! tested without a clock. The rules are Vault's (`vault-plugin-secrets-kv`):
//! `AddVersion`'s sliding window, `deletionTime`, `validateCheckAndSetOption`.
//!
//! Neither [`SecretDoc`] nor [`Version`] implements `Debug`: they hold secret values.

use std::collections::BTreeMap;

use leash_backend::CoreError;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use super::super::fields::go_duration;
use super::super::rfc3339_nano;

/// Versions kept per secret when neither the mount nor the key says otherwise.
pub(super) const DEFAULT_MAX_VERSIONS: u64 = 10;

/// The mount-wide settings (`<mount>/config`).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub(super) struct KvConfig {
    /// Versions to keep per key; 0 means [`DEFAULT_MAX_VERSIONS`].
    #[serde(default)]
    pub(super) max_versions: u64,
    /// Whether every write must carry `options.cas`.
    #[serde(default)]
    pub(super) cas_required: bool,
    /// Seconds after which a new version is soft-deleted: 0 unset, negative disables
    /// `delete_version_after` on every key.
    #[serde(default)]
    pub(super) delete_version_after: i64,
}

impl KvConfig {
    /// The `config` read answer.
    pub(super) fn to_json(&self) -> Value {
        json!({
            "max_versions": self.max_versions,
            "cas_required": self.cas_required,
            "delete_version_after": go_duration(self.delete_version_after),
        })
    }
}

/// One version of a secret.
#[derive(Serialize, Deserialize)]
pub(super) struct Version {
    /// Unix nanoseconds of its creation.
    pub(super) created_time: i64,
    /// Unix nanoseconds from which it counts as deleted (may lie in the future when
    /// `delete_version_after` set it).
    #[serde(default)]
    pub(super) deletion_time: Option<i64>,
    /// Whether its data was wiped for good.
    #[serde(default)]
    pub(super) destroyed: bool,
    /// The secret data; `None` once destroyed.
    #[serde(default)]
    pub(super) data: Option<Map<String, Value>>,
}

impl Version {
    /// Whether it is soft-deleted at `now`.
    pub(super) fn is_deleted(&self, now: i64) -> bool {
        self.deletion_time.is_some_and(|t| t <= now)
    }

    /// Whether reads may return its data at `now`.
    pub(super) fn is_live(&self, now: i64) -> bool {
        !self.destroyed && !self.is_deleted(now)
    }
}

/// A secret: its metadata and the versions kept.
#[derive(Serialize, Deserialize, Default)]
pub(super) struct SecretDoc {
    /// Unix nanoseconds of the first version (or of the metadata write that created it).
    #[serde(default)]
    pub(super) created_time: Option<i64>,
    /// Unix nanoseconds of the latest version.
    #[serde(default)]
    pub(super) updated_time: Option<i64>,
    /// The latest version number (0 before the first write).
    #[serde(default)]
    pub(super) current_version: u64,
    /// Vault's `oldest_version`: 0 until the window first slides.
    #[serde(default)]
    pub(super) oldest_version: u64,
    /// Per-key `max_versions` (0 = the mount's).
    #[serde(default)]
    pub(super) max_versions: u64,
    /// Per-key `cas_required`.
    #[serde(default)]
    pub(super) cas_required: bool,
    /// Per-key `delete_version_after`, in seconds (0 = unset).
    #[serde(default)]
    pub(super) delete_version_after: u64,
    /// User metadata; `None` when never set (or set empty), printed as `null`.
    #[serde(default)]
    pub(super) custom_metadata: Option<BTreeMap<String, String>>,
    /// Kept versions by number.
    #[serde(default)]
    pub(super) versions: BTreeMap<u64, Version>,
}

impl SecretDoc {
    /// A document created by a metadata write, before any version exists.
    pub(super) fn empty_at(now: i64) -> SecretDoc {
        SecretDoc {
            created_time: Some(now),
            updated_time: Some(now),
            ..SecretDoc::default()
        }
    }

    /// Decodes a stored document.
    pub(super) fn decode(raw: &[u8]) -> Result<SecretDoc, CoreError> {
        serde_json::from_slice(raw)
            .map_err(|_| CoreError::internal("kv v2: a stored secret document is corrupt"))
    }

    /// Encodes it for storage.
    pub(super) fn encode(&self) -> Result<Vec<u8>, CoreError> {
        serde_json::to_vec(self)
            .map_err(|_| CoreError::internal("kv v2: a secret document could not be encoded"))
    }

    /// The effective number of versions kept: the larger of the key's and the mount's
    /// setting (Vault ≥ 0.26 takes the maximum), 10 when both are 0.
    fn max_kept(&self, config: &KvConfig) -> u64 {
        match self.max_versions.max(config.max_versions) {
            0 => DEFAULT_MAX_VERSIONS,
            n => n,
        }
    }

    /// When a version created (or undeleted) at `base` is soft-deleted by
    /// `delete_version_after`: the smaller non-zero of the mount's and the key's setting.
    pub(super) fn scheduled_deletion(&self, base: i64, config: &KvConfig) -> Option<i64> {
        if config.delete_version_after < 0 {
            return None;
        }
        let mount = u64::try_from(config.delete_version_after).unwrap_or(0);
        let secs = match (mount, self.delete_version_after) {
            (0, 0) => return None,
            (0, k) => k,
            (m, 0) => m,
            (m, k) => m.min(k),
        };
        let nanos = i64::try_from(secs.saturating_mul(1_000_000_000)).unwrap_or(i64::MAX);
        Some(base.saturating_add(nanos))
    }

    /// Enforces check-and-set: a given `cas` must equal the current version (0 = "only
    /// if the key has no version yet"); without one, the write is refused when the
    /// mount or the key requires cas.
    pub(super) fn check_cas(&self, cas: Option<i64>, config: &KvConfig) -> Result<(), CoreError> {
        match cas {
            Some(cas) if u64::try_from(cas).ok() == Some(self.current_version) => Ok(()),
            Some(_) => Err(CoreError::invalid(
                "check-and-set parameter did not match the current version",
            )),
            None if config.cas_required || self.cas_required => Err(CoreError::invalid(
                "check-and-set parameter required for this call",
            )),
            None => Ok(()),
        }
    }

    /// Adds a version holding `data`, created at `now`, and slides the window of kept
    /// versions (dropping the oldest ones for good). Returns the new version number.
    pub(super) fn add_version(
        &mut self,
        data: Map<String, Value>,
        now: i64,
        config: &KvConfig,
    ) -> u64 {
        let deletion_time = self.scheduled_deletion(now, config);
        self.current_version += 1;
        self.versions.insert(
            self.current_version,
            Version {
                created_time: now,
                deletion_time,
                destroyed: false,
                data: Some(data),
            },
        );
        self.updated_time = Some(now);
        self.created_time.get_or_insert(now);

        let max = self.max_kept(config);
        if self.current_version - self.oldest_version >= max {
            let drop_through = self.current_version - max;
            self.versions.retain(|&v, _| v > drop_through);
            self.oldest_version = drop_through + 1;
        }
        self.current_version
    }

    /// The per-version metadata Vault returns from `data/` reads and writes.
    pub(super) fn version_json(&self, number: u64, version: &Version) -> Value {
        json!({
            "created_time": rfc3339_nano(version.created_time),
            "custom_metadata": self.custom_metadata,
            "deletion_time": version.deletion_time.map(rfc3339_nano).unwrap_or_default(),
            "destroyed": version.destroyed,
            "version": number,
        })
    }

    /// The `metadata/` read answer.
    pub(super) fn metadata_json(&self) -> Value {
        let versions: Map<String, Value> = self
            .versions
            .iter()
            .map(|(n, v)| {
                (
                    n.to_string(),
                    json!({
                        "created_time": rfc3339_nano(v.created_time),
                        "deletion_time": v.deletion_time.map(rfc3339_nano).unwrap_or_default(),
                        "destroyed": v.destroyed,
                    }),
                )
            })
            .collect();
        json!({
            "cas_required": self.cas_required,
            "created_time": self.created_time.map(rfc3339_nano).unwrap_or_default(),
            "current_version": self.current_version,
            "custom_metadata": self.custom_metadata,
            "delete_version_after": go_duration(i64::try_from(self.delete_version_after).unwrap_or(i64::MAX)),
            "max_versions": self.max_versions,
            "oldest_version": self.oldest_version,
            "updated_time": self.updated_time.map(rfc3339_nano).unwrap_or_default(),
            "versions": versions,
        })
    }
}

/// Applies an RFC 7386 JSON merge patch: `null` removes a key, an object merges into an
/// object (recursively), anything else replaces.
pub(super) fn merge_patch(target: &mut Map<String, Value>, patch: &Map<String, Value>) {
    for (key, value) in patch {
        match value {
            Value::Null => {
                target.remove(key);
            }
            Value::Object(inner) => {
                let slot = target
                    .entry(key.clone())
                    .or_insert_with(|| Value::Object(Map::new()));
                if !slot.is_object() {
                    *slot = Value::Object(Map::new());
                }
                if let Value::Object(t) = slot {
                    merge_patch(t, inner);
                }
            }
            other => {
                target.insert(key.clone(), other.clone());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data(v: Value) -> Map<String, Value> {
        match v {
            Value::Object(m) => m,
            _ => panic!("not an object"),
        }
    }

    #[test]
    fn window_slides_like_vault() {
        let config = KvConfig {
            max_versions: 3,
            ..KvConfig::default()
        };
        let mut doc = SecretDoc::default();
        for i in 1..=2 {
            doc.add_version(data(json!({"i": i})), i, &config);
        }
        assert_eq!(doc.oldest_version, 0);
        doc.add_version(data(json!({"i": 3})), 3, &config);
        assert_eq!(doc.oldest_version, 1);
        assert_eq!(
            doc.versions.keys().copied().collect::<Vec<_>>(),
            vec![1, 2, 3]
        );
        doc.add_version(data(json!({"i": 4})), 4, &config);
        doc.add_version(data(json!({"i": 5})), 5, &config);
        assert_eq!(doc.oldest_version, 3);
        assert_eq!(
            doc.versions.keys().copied().collect::<Vec<_>>(),
            vec![3, 4, 5]
        );
        // Lowering the limit drops more than one at once.
        let config = KvConfig {
            max_versions: 1,
            ..config
        };
        doc.add_version(data(json!({"i": 6})), 6, &config);
        assert_eq!(doc.versions.keys().copied().collect::<Vec<_>>(), vec![6]);
        assert_eq!(doc.oldest_version, 6);
        assert_eq!(doc.created_time, Some(1));
        assert_eq!(doc.updated_time, Some(6));
    }

    #[test]
    fn key_max_versions_can_only_raise_the_mount_setting() {
        let config = KvConfig {
            max_versions: 2,
            ..KvConfig::default()
        };
        let mut doc = SecretDoc {
            max_versions: 4,
            ..SecretDoc::default()
        };
        for i in 1..=6 {
            doc.add_version(Map::new(), i, &config);
        }
        assert_eq!(doc.versions.len(), 4);
    }

    #[test]
    fn deletion_is_scheduled_by_the_smaller_setting() {
        let mut config = KvConfig::default();
        let mut doc = SecretDoc::default();
        assert_eq!(doc.scheduled_deletion(0, &config), None);
        config.delete_version_after = 60;
        assert_eq!(doc.scheduled_deletion(0, &config), Some(60_000_000_000));
        doc.delete_version_after = 30;
        assert_eq!(doc.scheduled_deletion(0, &config), Some(30_000_000_000));
        config.delete_version_after = 0;
        assert_eq!(doc.scheduled_deletion(5, &config), Some(30_000_000_005));
        config.delete_version_after = -1;
        assert_eq!(doc.scheduled_deletion(0, &config), None);
    }

    #[test]
    fn merge_patch_follows_rfc_7386() {
        let mut target = data(json!({"a": "b", "c": {"d": "e", "f": "g"}, "x": 1}));
        merge_patch(
            &mut target,
            &data(json!({"a": "z", "c": {"f": null, "h": 2}, "x": null, "n": {"m": null}})),
        );
        assert_eq!(
            Value::Object(target),
            json!({"a": "z", "c": {"d": "e", "h": 2}, "n": {}})
        );
    }
}
