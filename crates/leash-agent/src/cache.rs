//! The lease cache: a 0600 JSON file holding the agent's token and, per secret, its
//! lease and data. A restarted agent (or the sidecar after an init container) adopts a
//! still-valid token and leases from it instead of logging in again and minting a
//! second database user. It is written atomically after every change and removed when
//! the agent revokes everything on exit.
//!
//! The file holds secrets in clear, like the rendered files beside it: protect it the
//! same way (mode 0600, a memory-backed volume in Kubernetes).

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use leash_client::{ExposeSecret, SecretString};
use leash_types::{Clock as _, SystemClock};
use serde::Deserialize;
use serde_json::{Map, Value, json};
use zeroize::Zeroizing;

use crate::AgentError;
use crate::files::write_atomic;

/// Format version of the file.
const VERSION: u64 = 1;

/// Secret data (a `secret` answer's `data`). `Debug` prints key names only.
#[derive(Clone, Default, Deserialize)]
#[serde(transparent)]
pub struct SecretData(pub Map<String, Value>);

impl std::fmt::Debug for SecretData {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_set().entries(self.0.keys()).finish()
    }
}

/// One cached secret.
#[derive(Debug, Clone, Deserialize)]
pub struct CachedSecret {
    /// Lease id (`""` for secrets without a lease).
    pub lease_id: String,
    /// TTL it was issued with, seconds.
    pub lease_duration: u64,
    /// Whether it can be renewed.
    pub renewable: bool,
    /// The data.
    pub data: SecretData,
}

/// The whole file.
#[derive(Debug, Deserialize)]
pub struct Cache {
    /// Format version.
    pub version: u64,
    /// The agent's token.
    pub token: SecretString,
    /// Secrets by [`SecretRequest::key`](crate::template::SecretRequest::key).
    pub secrets: BTreeMap<String, CachedSecret>,
}

impl Cache {
    /// Reads the cache; `None` if there is none or it is unreadable (logged).
    pub fn load(path: &Path) -> Option<Cache> {
        let bytes = Zeroizing::new(std::fs::read(path).ok()?);
        match serde_json::from_slice::<Cache>(&bytes) {
            Ok(c) if c.version == VERSION => Some(c),
            Ok(_) => {
                tracing::warn!(path = %path.display(), "lease cache of another version; ignored");
                None
            }
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "lease cache unreadable; ignored");
                None
            }
        }
    }

    /// Writes the cache (0600, atomically).
    pub fn save(
        path: &Path,
        token: &SecretString,
        secrets: &BTreeMap<String, CachedSecret>,
    ) -> Result<(), AgentError> {
        let mut m = Map::new();
        for (k, s) in secrets {
            m.insert(
                k.clone(),
                json!({"lease_id": s.lease_id, "lease_duration": s.lease_duration,
                       "renewable": s.renewable, "data": Value::Object(s.data.0.clone())}),
            );
        }
        let v = json!({"version": VERSION, "token": token.expose_secret(), "secrets": m,
                       "written_at": unix(SystemClock.now())});
        let text = Zeroizing::new(v.to_string());
        write_atomic(path, text.as_bytes(), 0o600)
    }
}

/// Unix seconds of a time.
pub fn unix(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
        .as_secs()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt as _;

    #[test]
    fn round_trip_is_0600_and_debug_hides_data() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("cache.json");
        let mut secrets = BTreeMap::new();
        let data = json!({"username": "u1", "password": "pw-hidden"});
        secrets.insert(
            "database/creds/ro".to_owned(),
            CachedSecret {
                lease_id: "database/creds/ro/abc".into(),
                lease_duration: 60,
                renewable: true,
                data: SecretData(data.as_object().unwrap().clone()),
            },
        );
        Cache::save(&p, &SecretString::from("lsh.tok".to_owned()), &secrets).unwrap();
        assert_eq!(
            std::fs::metadata(&p).unwrap().permissions().mode() & 0o777,
            0o600
        );
        let c = Cache::load(&p).unwrap();
        assert_eq!(c.token.expose_secret(), "lsh.tok");
        assert_eq!(c.secrets["database/creds/ro"].data.0["username"], "u1");
        let dbg = format!("{c:?}");
        assert!(
            !dbg.contains("pw-hidden") && !dbg.contains("lsh.tok"),
            "{dbg}"
        );
        std::fs::write(&p, "not json").unwrap();
        assert!(Cache::load(&p).is_none());
    }
}
