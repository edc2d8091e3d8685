//! KV v2 settings: per-key metadata (`metadata/:name` writes and patches) and the
//! mount configuration (`config`), with Vault's field rules and `custom_metadata`
//! validation (at most 64 keys, keys up to 128 and values up to 512 bytes, printable).

use std::collections::BTreeMap;

use leash_backend::{CoreError, Response, ResponseKind};
use leash_storage::Modify;
use serde_json::{Map, Value};

use super::super::fields::{boolean, duration_secs, field, uint};
use super::super::validate_name;
use super::model::{KvConfig, SecretDoc};
use super::{CONFIG_KEY, Change, KvV2};

const MAX_CUSTOM_METADATA_KEYS: usize = 64;
const MAX_CUSTOM_METADATA_KEY_LEN: usize = 128;
const MAX_CUSTOM_METADATA_VALUE_LEN: usize = 512;
const CUSTOM_METADATA_ERROR_PREFIX: &str = "custom_metadata validation failed";
const CAS_REQUIRED_WARNING: &str =
    "\"cas_required\" set to false, but is mandated by backend config. This value will be ignored.";

/// The settings a metadata write or patch carries.
struct MetadataFields {
    max_versions: Option<u64>,
    cas_required: Option<bool>,
    delete_version_after: Option<u64>,
    /// `None` values (patch only) remove the key.
    custom_metadata: Option<BTreeMap<String, Option<String>>>,
    patch: bool,
}

impl MetadataFields {
    fn parse(data: &Map<String, Value>, patch: bool) -> Result<MetadataFields, CoreError> {
        let delete_version_after = field(data, "delete_version_after")
            .map(|v| duration_secs("delete_version_after", v, false))
            .transpose()?
            .map(|secs| u64::try_from(secs).unwrap_or(0));
        Ok(MetadataFields {
            max_versions: field(data, "max_versions")
                .map(|v| uint("max_versions", v))
                .transpose()?,
            cas_required: field(data, "cas_required")
                .map(|v| boolean("cas_required", v))
                .transpose()?,
            delete_version_after,
            custom_metadata: field(data, "custom_metadata")
                .map(|v| parse_custom_metadata(v, patch))
                .transpose()?,
            patch,
        })
    }

    fn is_empty(&self) -> bool {
        self.max_versions.is_none()
            && self.cas_required.is_none()
            && self.delete_version_after.is_none()
            && self.custom_metadata.is_none()
    }

    fn apply(self, doc: &mut SecretDoc) -> Result<(), CoreError> {
        if let Some(v) = self.max_versions {
            doc.max_versions = v;
        }
        if let Some(v) = self.cas_required {
            doc.cas_required = v;
        }
        if let Some(v) = self.delete_version_after {
            doc.delete_version_after = v;
        }
        if let Some(changes) = self.custom_metadata {
            let mut merged = if self.patch {
                doc.custom_metadata.take().unwrap_or_default()
            } else {
                BTreeMap::new()
            };
            for (key, value) in changes {
                match value {
                    Some(value) => merged.insert(key, value),
                    None => merged.remove(&key),
                };
            }
            validate_custom_metadata(&merged)?;
            doc.custom_metadata = (!merged.is_empty()).then_some(merged);
        }
        Ok(())
    }
}

impl KvV2 {
    /// `POST metadata/:name` (creates the metadata if needed) and `PATCH metadata/:name`
    /// (the key must exist; `custom_metadata` is merged, `null` removing a key).
    pub(super) async fn write_metadata(
        &self,
        name: &str,
        data: &Map<String, Value>,
        patch: bool,
    ) -> Result<Option<Response>, CoreError> {
        validate_name(name)?;
        let fields = MetadataFields::parse(data, patch)?;
        if fields.is_empty() && !patch {
            return Ok(None);
        }
        let config = self.config().await?;
        let warning = (fields.cas_required == Some(false) && config.cas_required)
            .then_some(CAS_REQUIRED_WARNING);
        let now = self.now();
        self.mutate(name, move |doc| {
            let mut doc = match doc {
                Some(doc) => doc,
                None if patch => return Err(CoreError::NotFound),
                None => SecretDoc::empty_at(now),
            };
            fields.apply(&mut doc)?;
            Ok(Change::Write(doc, ()))
        })
        .await?;
        Ok(warning.map(|w| Response {
            data: None,
            secret: None,
            auth: None,
            warnings: vec![w.to_owned()],
            kind: ResponseKind::Envelope,
            login: None,
        }))
    }

    /// `POST config`.
    pub(super) async fn write_config(
        &self,
        data: &Map<String, Value>,
    ) -> Result<Option<Response>, CoreError> {
        let max_versions = field(data, "max_versions")
            .map(|v| uint("max_versions", v))
            .transpose()?;
        let cas_required = field(data, "cas_required")
            .map(|v| boolean("cas_required", v))
            .transpose()?;
        let delete_version_after = field(data, "delete_version_after")
            .map(|v| duration_secs("delete_version_after", v, true))
            .transpose()?;
        if max_versions.is_none() && cas_required.is_none() && delete_version_after.is_none() {
            return Ok(None);
        }
        let modify: Modify = Box::new(move |current| {
            let mut config: KvConfig = match current {
                Some(raw) => serde_json::from_slice(raw)
                    .map_err(|_| "kv v2: the stored mount config is corrupt".to_owned())?,
                None => KvConfig::default(),
            };
            if let Some(v) = max_versions {
                config.max_versions = v;
            }
            if let Some(v) = cas_required {
                config.cas_required = v;
            }
            if let Some(v) = delete_version_after {
                // Any negative value disables it mount-wide; Vault stores it as -1s.
                config.delete_version_after = v.max(-1);
            }
            serde_json::to_vec(&config)
                .map(Some)
                .map_err(|_| "kv v2: the mount config could not be encoded".into())
        });
        self.store.modify(CONFIG_KEY, modify).await?;
        Ok(None)
    }
}

/// `custom_metadata` as a string map, decoding scalars weakly as Vault does. With
/// `patch`, a `null` value means "remove this key".
fn parse_custom_metadata(
    v: &Value,
    patch: bool,
) -> Result<BTreeMap<String, Option<String>>, CoreError> {
    let Value::Object(entries) = v else {
        return Err(CoreError::invalid(format!(
            "{CUSTOM_METADATA_ERROR_PREFIX}: it must be a JSON object of strings"
        )));
    };
    let mut out = BTreeMap::new();
    for (key, value) in entries {
        let value = match value {
            Value::Null if patch => None,
            Value::Null => Some(String::new()),
            Value::String(s) => Some(s.clone()),
            Value::Number(n) => Some(n.to_string()),
            Value::Bool(b) => Some(if *b { "1" } else { "0" }.to_owned()),
            Value::Array(_) | Value::Object(_) => {
                return Err(CoreError::invalid(format!(
                    "{CUSTOM_METADATA_ERROR_PREFIX}: value for key {key:?} must be a string"
                )));
            }
        };
        out.insert(key.clone(), value);
    }
    let given: BTreeMap<String, String> = out
        .iter()
        .filter_map(|(k, v)| v.clone().map(|v| (k.clone(), v)))
        .collect();
    validate_custom_metadata(&given)?;
    Ok(out)
}

/// Vault's `validateCustomMetadata`, every problem reported at once in go-multierror's
/// format.
fn validate_custom_metadata(map: &BTreeMap<String, String>) -> Result<(), CoreError> {
    let mut errors = Vec::new();
    if map.len() > MAX_CUSTOM_METADATA_KEYS {
        errors.push(format!(
            "{CUSTOM_METADATA_ERROR_PREFIX}: payload must contain at most {MAX_CUSTOM_METADATA_KEYS} keys, provided {}",
            map.len()
        ));
    } else {
        for (key, value) in map {
            if key.is_empty() || key.len() > MAX_CUSTOM_METADATA_KEY_LEN {
                errors.push(format!(
                    "{CUSTOM_METADATA_ERROR_PREFIX}: length of key {key:?} is {} but must be 0 < len(key) <= {MAX_CUSTOM_METADATA_KEY_LEN}",
                    key.len()
                ));
            }
            if value.is_empty() || value.len() > MAX_CUSTOM_METADATA_VALUE_LEN {
                errors.push(format!(
                    "{CUSTOM_METADATA_ERROR_PREFIX}: length of value for key {key:?} is {} but must be 0 < len(value) <= {MAX_CUSTOM_METADATA_VALUE_LEN}",
                    value.len()
                ));
            }
            if !printable(key) {
                errors.push(format!(
                    "{CUSTOM_METADATA_ERROR_PREFIX}: key {key:?} contains unprintable characters"
                ));
            }
            if !printable(value) {
                errors.push(format!(
                    "{CUSTOM_METADATA_ERROR_PREFIX}: value for key {key:?} contains unprintable characters"
                ));
            }
        }
    }
    match errors.len() {
        0 => Ok(()),
        1 => Err(CoreError::invalid(format!(
            "1 error occurred:\n\t* {}\n\n",
            errors[0]
        ))),
        n => Err(CoreError::invalid(format!(
            "{n} errors occurred:\n\t* {}\n\n",
            errors.join("\n\t* ")
        ))),
    }
}

/// Go's `strutil.Printable`: no control characters and no whitespace but the plain space.
fn printable(s: &str) -> bool {
    !s.chars()
        .any(|c| c.is_control() || (c.is_whitespace() && c != ' '))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn custom_metadata_is_validated_like_vault() {
        let ok = parse_custom_metadata(&json!({"team": "a", "n": 3, "b": true}), false).unwrap();
        assert_eq!(ok["n"].as_deref(), Some("3"));
        assert_eq!(ok["b"].as_deref(), Some("1"));

        let err = parse_custom_metadata(&json!({"k": ""}), false).unwrap_err();
        assert!(err.to_string().starts_with("1 error occurred:"), "{err}");
        assert!(
            err.to_string()
                .contains("length of value for key \"k\" is 0")
        );

        let long = "x".repeat(129);
        let err = parse_custom_metadata(&json!({ long: "v\u{7}" }), false).unwrap_err();
        assert!(err.to_string().starts_with("2 errors occurred:"), "{err}");

        let many: Map<String, Value> = (0..65).map(|i| (format!("k{i}"), json!("v"))).collect();
        let err = parse_custom_metadata(&Value::Object(many), false).unwrap_err();
        assert!(err.to_string().contains("at most 64 keys, provided 65"));

        assert!(parse_custom_metadata(&json!(["a"]), false).is_err());
        assert!(parse_custom_metadata(&json!({"k": {"x": 1}}), false).is_err());
        // In a patch, null removes.
        let p = parse_custom_metadata(&json!({"k": null}), true).unwrap();
        assert_eq!(p["k"], None);
    }
}
