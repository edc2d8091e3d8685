//! Who is calling: the token entry as stored, and the compiled ACL of its policies.

use std::collections::BTreeMap;
use std::sync::Arc;

use leash_policy::Acl;
use leash_storage::KeyedHash;
use serde::{Deserialize, Serialize};

/// A token's stored properties. The token value itself is never part of it: storage
/// indexes the entry by the token's keyed hash.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct TokenEntry {
    /// The accessor (a handle that can look up or revoke the token, not use it).
    pub accessor: String,
    /// Policies attached to the token (including `default` unless left out).
    pub policies: Vec<String>,
    /// Metadata (`meta`).
    #[serde(default)]
    pub meta: BTreeMap<String, String>,
    /// Display name (`token-…` for token-store tokens).
    pub display_name: String,
    /// The path that created it (`auth/token/create`, `auth/approle/login`).
    pub path: String,
    /// Unix seconds of creation.
    pub creation_time: i64,
    /// TTL at creation, in seconds (0 = none, root tokens).
    pub creation_ttl: u64,
    /// Explicit max TTL in seconds (0 = none).
    #[serde(default)]
    pub explicit_max_ttl: u64,
    /// Period in seconds (0 = not periodic).
    #[serde(default)]
    pub period: u64,
    /// Uses allowed at creation (0 = unlimited).
    #[serde(default)]
    pub num_uses: i64,
    /// Whether it may be renewed.
    pub renewable: bool,
    /// Whether it has no parent.
    pub orphan: bool,
    /// Token role it was created against.
    #[serde(default)]
    pub role: Option<String>,
    /// Identity entity ("" when none).
    #[serde(default)]
    pub entity_id: String,
    /// CIDRs the token may be used from (empty = anywhere).
    #[serde(default)]
    pub bound_cidrs: Vec<String>,
    /// Unix seconds at which it expires (`None` = never).
    pub expire_time: Option<i64>,
    /// Unix seconds it may never be renewed past (`None` = no cap).
    #[serde(default)]
    pub max_expire_time: Option<i64>,
    /// Unix seconds of the last renewal.
    #[serde(default)]
    pub last_renewal: Option<i64>,
    /// The parent's accessor (`None` for orphans); recorded for the delegation chain.
    #[serde(default)]
    pub parent_accessor: Option<String>,
    /// The auth role its metrics count it under (the login role, else the token role),
    /// kept so the token gauges can be rebuilt after a restart. Not shown to clients.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metrics_role: Option<String>,
    /// The inline scope the token was created with (a policy in HCL or JSON): its
    /// effective ACL is its policies ∩ this scope ∩ its parent's effective ACL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope: Option<String>,
    /// The token or one of its ancestors has a scope: its effective ACL is computed over
    /// the delegation chain at each request (live: a parent that shrinks shrinks it).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub scoped: bool,
    /// The trace id of the request that created it ("" for tokens created before it was
    /// recorded, or outside a request): the kill switch finds everything one task was
    /// issued by it. Not shown to clients.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub trace_id: String,
    /// A canary token (`auth/token/create` with `canary = true`): it authenticates
    /// nothing, and presenting it trips the canary. Not shown to clients.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub canary: bool,
    /// For a canary: run the kill switch on the identity it was issued to when it trips.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub contain_on_trip: bool,
}

impl TokenEntry {
    /// Whether the token holds the root policy.
    pub fn is_root(&self) -> bool {
        self.policies.iter().any(|p| p == "root")
    }
}

/// An authenticated caller.
#[derive(Clone)]
pub struct Caller {
    /// Its token entry.
    pub entry: TokenEntry,
    /// Keyed hash of its token.
    pub hash: KeyedHash,
    /// The compiled ACL of its policies.
    pub acl: Arc<Acl>,
    /// Uses left after this request (`None` = unlimited). `Some(0)` means the token is
    /// revoked once this request finishes.
    pub uses_left: Option<i64>,
    /// For a scoped token: the accessors of the ancestors whose ACLs bound it, nearest
    /// first (the delegation chain a reviewer needs). Empty otherwise.
    pub chain: Vec<String>,
}

impl std::fmt::Debug for Caller {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Caller")
            .field("entry", &self.entry)
            .finish_non_exhaustive()
    }
}
