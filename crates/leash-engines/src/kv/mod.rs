//! The KV secrets engine, in Vault's two flavours, chosen per mount by
//! [`MountEntry::kv_version`]:
//!
//! * **version 1** ([`v1`]): one JSON object per path, no history;
//! * **version 2** ([`v2`]): versioned secrets with check-and-set, soft delete,
//!   undelete, destroy, per-key metadata and a mount-wide `config`, with Vault's paths
//!   (`data/`, `metadata/`, `delete/`, `undelete/`, `destroy/`, `config`), field names
//!   and messages, so Vault clients (hvac `client.secrets.kv.v1/v2`) work unchanged.
//!
//! Invariants:
//! * everything lives in the mount's own storage namespace ([`MountEntry::storage_ns`]);
//!   secrets under `kv/<name>`, the v2 mount configuration under `config`;
//! * a v2 secret (metadata and every kept version) is one document changed only through
//!   [`Storage::modify`], so concurrent writes (check-and-set above all) are atomic;
//! * secret values never appear in an error message, a log line or a `Debug` output:
//!   the types that hold them do not implement `Debug`;
//! * bad input is refused with a 400 that says what is wrong, before anything changes.
//!
//! What it is not: no authorization or audit (the core does both before calling in), no
//! leases (v1 reads carry no `lease_duration`), no `subkeys/` endpoint.

mod fields;
mod v1;
mod v2;

#[cfg(test)]
mod testutil;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use leash_backend::{Backend, CoreError, MountEntry, MountStorage, Response};
use leash_types::Clock;
use time::OffsetDateTime;

/// Storage key prefix of secrets (v1 values and v2 documents) inside the mount's namespace.
const SECRET_PREFIX: &str = "kv/";

/// Builds the backend serving a `kv` mount: version 2 when the mount's options say
/// `version = "2"`, version 1 otherwise. It stores under `mount.storage_ns()` only.
pub fn new_backend(
    mount: &MountEntry,
    store: MountStorage,
    clock: Arc<dyn Clock>,
) -> Arc<dyn Backend> {
    match mount.kv_version() {
        2 => Arc::new(v2::KvV2::new(store, clock)),
        _ => Arc::new(v1::KvV1::new(store)),
    }
}

/// The storage key of the secret `name`.
fn secret_key(name: &str) -> String {
    format!("{SECRET_PREFIX}{name}")
}

/// Checks a secret name taken from a request path: not empty, no leading or trailing
/// `/`, no empty, `.` or `..` segment, no control characters. The message names the
/// problem, never a value.
fn validate_name(name: &str) -> Result<(), CoreError> {
    if name.is_empty() {
        return Err(CoreError::invalid(
            "missing path: a secret name is required",
        ));
    }
    if name.ends_with('/') {
        return Err(CoreError::invalid(
            "invalid path: a secret name cannot end with '/' (that names a folder)",
        ));
    }
    if name.chars().any(char::is_control) {
        return Err(CoreError::invalid(
            "invalid path: a secret name cannot contain control characters",
        ));
    }
    if name
        .split('/')
        .any(|seg| seg.is_empty() || seg == "." || seg == "..")
    {
        return Err(CoreError::invalid(
            "invalid path: a secret name cannot contain empty, '.' or '..' segments",
        ));
    }
    Ok(())
}

/// Normalises the folder of a LIST request: `""` for the root, otherwise the folder
/// with exactly one trailing `/`.
fn list_folder(path: &str) -> Result<String, CoreError> {
    if path.is_empty() {
        return Ok(String::new());
    }
    let trimmed = path.strip_suffix('/').unwrap_or(path);
    validate_name(trimmed)?;
    Ok(format!("{trimmed}/"))
}

/// LIST of a folder: its immediate children, sub-folders with a trailing `/`, sorted;
/// `None` when there is nothing (the core answers 404, as Vault does).
async fn list_children(store: &MountStorage, folder: &str) -> Result<Option<Response>, CoreError> {
    let prefix = secret_key(folder);
    let keys = store.list(&prefix).await?;
    let mut children = BTreeSet::new();
    for key in &keys {
        let Some(rest) = key.strip_prefix(&prefix) else {
            continue;
        };
        match rest.split_once('/') {
            Some((dir, _)) => children.insert(format!("{dir}/")),
            None if !rest.is_empty() => children.insert(rest.to_owned()),
            None => false,
        };
    }
    if children.is_empty() {
        Ok(None)
    } else {
        Ok(Some(Response::keys(children.into_iter().collect())))
    }
}

/// Unix nanoseconds of a clock reading (saturating; 0 before 1970).
fn unix_nanos(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// Formats Unix nanoseconds as Go's `time.RFC3339Nano` in UTC, as Vault prints
/// timestamps: `2026-11-29T14:03:11.123456789Z`, trailing zeros of the fraction dropped
/// (and the dot with them when the fraction is zero).
fn rfc3339_nano(nanos: i64) -> String {
    let t = OffsetDateTime::from_unix_timestamp_nanos(i128::from(nanos))
        .unwrap_or(OffsetDateTime::UNIX_EPOCH);
    let mut out = format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second()
    );
    let frac = t.nanosecond();
    if frac != 0 {
        let digits = format!("{frac:09}");
        out.push('.');
        out.push_str(digits.trim_end_matches('0'));
    }
    out.push('Z');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_look_like_go_rfc3339nano() {
        assert_eq!(rfc3339_nano(0), "1970-01-01T00:00:00Z");
        assert_eq!(
            rfc3339_nano(1_795_961_391_123_456_789),
            "2026-11-29T14:09:51.123456789Z"
        );
        assert_eq!(
            rfc3339_nano(1_795_961_391_120_000_000),
            "2026-11-29T14:09:51.12Z"
        );
    }

    #[test]
    fn names_are_checked_for_path_tricks() {
        for good in ["a", "a/b", "agents/config-1", "x.y", "a b"] {
            assert!(validate_name(good).is_ok(), "{good}");
        }
        for bad in ["", "/a", "a/", "a//b", "a/../b", "./a", "..", "a\nb"] {
            assert!(
                matches!(validate_name(bad), Err(CoreError::InvalidRequest(_))),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn list_folders_are_normalised() {
        assert_eq!(list_folder("").unwrap(), "");
        assert_eq!(list_folder("a").unwrap(), "a/");
        assert_eq!(list_folder("a/b/").unwrap(), "a/b/");
        assert!(list_folder("a//").is_err());
    }
}
