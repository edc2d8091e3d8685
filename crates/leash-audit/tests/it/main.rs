//! Integration tests of leash-audit through its public API, on real files, FIFOs and
//! (when root) a full tmpfs. One binary; modules follow the crate's nouns.

// This whole binary is test code, helpers included (clippy.toml allows unwrap/expect only
// inside `#[test]` functions, not in their helpers).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod broker;
mod chain;
mod failure;
mod file_device;
mod query;
mod socket;
mod throughput;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use leash_audit::{Broker, DeviceConfig, Hasher};
use leash_types::SecretBytes;
use serde_json::{Value, json};

/// A `file` device at `path` with `options`.
pub(crate) fn device(path: &str, options: &[(&str, &str)]) -> DeviceConfig {
    DeviceConfig {
        path: path.to_owned(),
        kind: "file".to_owned(),
        description: String::new(),
        options: options
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect::<BTreeMap<_, _>>(),
        local: false,
    }
}

/// A `file` device writing to `file`.
pub(crate) fn file_device(path: &str, file: &Path) -> DeviceConfig {
    device(path, &[("file_path", &file.display().to_string())])
}

pub(crate) fn key() -> SecretBytes {
    SecretBytes::random(32)
}

pub(crate) fn broker() -> Broker {
    Broker::new(Duration::from_secs(5))
}

/// An entry builder as the core writes one: the token hashed unless `log_raw`.
pub(crate) fn entry(token: &'static str) -> impl Fn(&Hasher, bool) -> Value + Send + Sync {
    move |h: &Hasher, raw: bool| {
        let mut auth = json!({ "client_token": token, "policies": ["default"] });
        if !raw {
            leash_audit::hash_strings(&mut auth, h);
        }
        json!({ "type": "request", "auth": auth, "request": { "path": "secret/data/x" } })
    }
}

/// Every line of `file`, parsed as JSON.
pub(crate) fn json_lines(file: &Path) -> Vec<Value> {
    std::fs::read_to_string(file)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("bad line {l:?}: {e}")))
        .collect()
}
