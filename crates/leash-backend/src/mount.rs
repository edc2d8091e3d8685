//! Mount entries: where a backend is mounted and how it is tuned. The routing table that
//! maps paths to mounts lives in the core.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Tunable settings of a mount (seconds; 0 = system default).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct MountConfig {
    /// Default lease TTL in seconds.
    #[serde(default)]
    pub default_lease_ttl: u64,
    /// Maximum lease TTL in seconds.
    #[serde(default)]
    pub max_lease_ttl: u64,
}

/// Which table a mount belongs to.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Hash)]
#[serde(rename_all = "lowercase")]
pub enum MountTable {
    /// Secrets engines.
    Secret,
    /// Auth methods (routed under `auth/`).
    Auth,
}

/// The backends leash can mount, per table (`kubernetes` is an auth method here).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MountKind {
    /// `sys/`.
    System,
    /// `identity/`.
    Identity,
    /// Key/value secrets, versions 1 and 2.
    Kv,
    /// Dynamic database credentials.
    Database,
    /// `auth/token/`.
    Token,
    /// Username and password logins.
    Userpass,
    /// AppRole logins.
    AppRole,
    /// JWT logins (also mounted as `oidc`).
    Jwt,
    /// Kubernetes service-account logins.
    KubernetesAuth,
}

impl MountKind {
    /// The kind a mount of `kind` in `table` is; `None` for a type leash does not have.
    pub fn parse(table: MountTable, kind: &str) -> Option<MountKind> {
        Some(match (table, kind) {
            (MountTable::Secret, "system") => MountKind::System,
            (MountTable::Secret, "identity") => MountKind::Identity,
            (MountTable::Secret, "kv") => MountKind::Kv,
            (MountTable::Secret, "database") => MountKind::Database,
            (MountTable::Auth, "token") => MountKind::Token,
            (MountTable::Auth, "userpass") => MountKind::Userpass,
            (MountTable::Auth, "approle") => MountKind::AppRole,
            (MountTable::Auth, "jwt" | "oidc") => MountKind::Jwt,
            (MountTable::Auth, "kubernetes") => MountKind::KubernetesAuth,
            _ => return None,
        })
    }
}

/// One mounted backend.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct MountEntry {
    /// Mount path with trailing slash, e.g. `secret/` (auth mounts without `auth/`).
    pub path: String,
    /// Backend type, e.g. `kv`, `database`, `token`, `approle`.
    #[serde(rename = "type")]
    pub kind: String,
    /// Free text.
    #[serde(default)]
    pub description: String,
    /// Stable accessor (`kv_1a2b3c4d`).
    pub accessor: String,
    /// Stable internal id; storage namespaces of the backend hang off it.
    pub uuid: String,
    /// Tunables.
    #[serde(default)]
    pub config: MountConfig,
    /// Backend options (e.g. `version = "2"` for kv).
    #[serde(default)]
    pub options: BTreeMap<String, String>,
    /// Replication flag (kept for Vault compatibility).
    #[serde(default)]
    pub local: bool,
    /// Which table.
    pub table: MountTable,
}

impl MountEntry {
    /// The full routing prefix: `secret/` or `auth/approle/`.
    pub fn route_prefix(&self) -> String {
        match self.table {
            MountTable::Secret => self.path.clone(),
            MountTable::Auth => format!("auth/{}", self.path),
        }
    }

    /// The storage namespace reserved for this mount's backend.
    pub fn storage_ns(&self) -> String {
        format!("mount/{}", self.uuid)
    }

    /// Which backend this is; `None` for a type this build does not know.
    pub fn mount_kind(&self) -> Option<MountKind> {
        MountKind::parse(self.table, &self.kind)
    }

    /// KV version of a `kv` mount (1 unless `options.version == "2"`).
    pub fn kv_version(&self) -> u8 {
        if self.options.get("version").map(String::as_str) == Some("2") {
            2
        } else {
            1
        }
    }
}
