//! Storage for leash: the [`Storage`] trait the rest of the server is written against,
//! the SQLite backend (the embedded default), and the barrier that encrypts every stored
//! value.
//!
//! Invariants every backend keeps (and the conformance tests check):
//! * a write that returned `Ok` is durable (fsync'd) — concurrent writes share syncs
//!   (group commit), so durability does not cost a sync per request;
//! * every value is sealed by the [`barrier::Keyring`] before it reaches the database,
//!   bound to its location; tokens and accessors are indexed only by keyed hashes;
//! * opening a data directory with the wrong key fails with [`StorageError::WrongKey`]
//!   and changes nothing.
//!
//! What it is not: it knows nothing of token semantics, policies or HTTP. Callers hand it
//! opaque (plaintext) bytes plus the few plain columns that need an index.
#![forbid(unsafe_code)]

pub mod barrier;
#[cfg(any(test, feature = "testing"))]
pub mod conformance;
pub mod postgres;
mod sqlite;

use async_trait::async_trait;
pub use barrier::{KeyedHash, Keyring};
pub use postgres::{PgConfig, PgStorage};
pub use sqlite::{DB_FILE, SqliteStorage};
use zeroize::Zeroizing;

/// Why a storage operation failed. Messages never contain stored values; the cause of
/// an environment failure is kept as the error's `source`.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    /// The key does not open this data directory.
    #[error(
        "the encryption key does not match this data directory (it was initialised with another key); nothing was changed"
    )]
    WrongKey,
    /// The key material itself is unusable.
    #[error("invalid encryption key: {0}")]
    InvalidKey(String),
    /// Encryption or decryption failed (AES-GCM reports no cause: a wrong key, a moved
    /// or altered ciphertext).
    #[error("{0}")]
    Crypto(String),
    /// The stored data is not what this version of leash wrote.
    #[error("storage is corrupt: {0}")]
    Corrupt(String),
    /// A uniqueness rule was violated (the record already exists).
    #[error("already exists: {0}")]
    Conflict(String),
    /// The database failed while doing `op`.
    #[error("storage I/O failed: {op}: {source}")]
    Database {
        /// What was being done.
        op: &'static str,
        /// The database's error.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// A file or the operating system failed (opening, creating, permissions, threads).
    #[error("storage I/O failed: {what}: {source}")]
    File {
        /// What was being done, and on which file.
        what: String,
        /// The operating system's error.
        #[source]
        source: std::io::Error,
    },
    /// The database cannot be reached right now (connection refused, reset or timed
    /// out); the request changed nothing it reported, and may be retried.
    #[error("storage is unavailable: {0}")]
    Unavailable(String),
    /// The storage configuration is unusable (names the setting, never its value).
    #[error("invalid storage configuration: {0}")]
    InvalidConfig(String),
    /// The storage has been shut down.
    #[error("storage is closed")]
    Closed,
    /// A read-modify-write callback refused the change; carries the callback's own
    /// error, which the caller can downcast to its type.
    #[error("{0}")]
    Rejected(#[source] Rejection),
}

/// Why a [`Modify`] callback refused a change: any error type of the caller's (a plain
/// message converts too: `Err("…".into())`).
pub type Rejection = Box<dyn std::error::Error + Send + Sync>;

impl StorageError {
    /// The database failed while doing `op`.
    pub fn database(
        op: &'static str,
        source: impl Into<Box<dyn std::error::Error + Send + Sync>>,
    ) -> StorageError {
        StorageError::Database {
            op,
            source: source.into(),
        }
    }

    /// A file or OS operation failed.
    pub fn file(what: impl Into<String>, source: std::io::Error) -> StorageError {
        StorageError::File {
            what: what.into(),
            source,
        }
    }

    /// The message of a [`StorageError::Rejected`] (for callers that only need the text).
    pub fn rejection_message(&self) -> Option<String> {
        match self {
            StorageError::Rejected(r) => Some(r.to_string()),
            _ => None,
        }
    }
}

/// Plaintext bytes handed back by storage; zeroized when dropped.
pub type Plain = Zeroizing<Vec<u8>>;

/// A token as storage sees it: indexed columns plus the opaque entry.
#[derive(Clone)]
pub struct StoredToken {
    /// Keyed hash of the token value (primary key).
    pub hash: KeyedHash,
    /// Keyed hash of the token's accessor.
    pub accessor_hash: KeyedHash,
    /// Keyed hash of the parent token, if not an orphan.
    pub parent: Option<KeyedHash>,
    /// Unix seconds at which the token expires; `None` never (root tokens).
    pub expire_at: Option<i64>,
    /// Uses left; `None` for unlimited.
    pub uses_left: Option<i64>,
    /// The serialized token entry (plaintext here; sealed in storage).
    pub entry: Plain,
}

impl std::fmt::Debug for StoredToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoredToken")
            .field("hash", &self.hash)
            .field("parent", &self.parent)
            .field("expire_at", &self.expire_at)
            .field("uses_left", &self.uses_left)
            .finish_non_exhaustive()
    }
}

/// The outcome of spending one use of a token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenUse {
    /// The token has unlimited uses.
    Unlimited,
    /// One use was spent; this many remain (0 means this was the last one).
    Remaining(i64),
    /// The token had no uses left (or no longer exists).
    Exhausted,
}

/// Where a lease is in its life.
///
/// Stored as a small integer; the numbering is part of the on-disk format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LeaseState {
    /// Intent recorded before the credential is created in the target (invariant 1).
    /// Due once `expire_at` passes: a crash between intent and creation leaves one, and
    /// the expiry worker must revoke the credential if it exists.
    Pending,
    /// The credential exists and is in use.
    Active,
    /// Must be revoked now (expired, owning token revoked, or asked). Sticky: a lease
    /// in this state never goes back to `Pending` or `Active`; it is deleted only after
    /// the target confirms the revocation.
    Revoking,
}

impl LeaseState {
    /// The state's stored code.
    pub fn code(self) -> i64 {
        match self {
            LeaseState::Pending => 0,
            LeaseState::Active => 1,
            LeaseState::Revoking => 2,
        }
    }

    /// The state for a stored code; `None` for a code this version does not know.
    pub fn from_code(code: i64) -> Option<LeaseState> {
        match code {
            0 => Some(LeaseState::Pending),
            1 => Some(LeaseState::Active),
            2 => Some(LeaseState::Revoking),
            _ => None,
        }
    }

    /// Lower-case name, for operators and audit.
    pub fn as_str(self) -> &'static str {
        match self {
            LeaseState::Pending => "pending",
            LeaseState::Active => "active",
            LeaseState::Revoking => "revoking",
        }
    }
}

/// A lease as storage sees it: indexed columns plus the opaque, sealed entry.
#[derive(Clone)]
pub struct StoredLease {
    /// The lease id, e.g. `database/creds/readonly/<random>` (primary key).
    pub id: String,
    /// Keyed hash of the owning token; the lease dies with it (see
    /// [`Storage::token_delete_tree`]).
    pub token: Option<KeyedHash>,
    /// Unix seconds at which the lease was issued.
    pub issue_time: i64,
    /// Unix seconds at which the lease expires.
    pub expire_at: i64,
    /// Unix seconds past which the lease can never be renewed.
    pub max_expire_at: i64,
    /// Where the lease is in its life.
    pub state: LeaseState,
    /// Failed revocation attempts so far.
    pub attempts: u32,
    /// Unix seconds before which the expiry worker does not retry.
    pub next_attempt_at: i64,
    /// The last revocation error (the caller guarantees it holds no secret).
    pub last_error: Option<String>,
    /// Engine-internal data (username, statements…); sealed at rest, bound to the id.
    pub entry: Plain,
}

impl std::fmt::Debug for StoredLease {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoredLease")
            .field("id", &self.id)
            .field("token", &self.token)
            .field("issue_time", &self.issue_time)
            .field("expire_at", &self.expire_at)
            .field("max_expire_at", &self.max_expire_at)
            .field("state", &self.state)
            .field("attempts", &self.attempts)
            .field("next_attempt_at", &self.next_attempt_at)
            .field("last_error", &self.last_error)
            .finish_non_exhaustive()
    }
}

/// A change another server (or this one) made to shared storage, pushed to every server
/// so it can drop what it cached ([`Storage::changes`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// The entry `(ns, key)` was written or deleted.
    Entry {
        /// Its namespace.
        ns: String,
        /// Its key.
        key: String,
    },
    /// The token with this keyed hash was changed or deleted.
    Token(KeyedHash),
    /// Anything may have changed (the notification channel dropped and was re-opened,
    /// or notifications were lost): drop every cache.
    Flush,
}

/// A server sharing the storage, as its heartbeat row says ([`Storage::servers`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerInfo {
    /// Random id of the server process (new at each start).
    pub id: String,
    /// The server's name (its host name unless configured).
    pub name: String,
    /// The address it serves on.
    pub address: String,
    /// Its leash version.
    pub version: String,
    /// Unix seconds of its last heartbeat (database time).
    pub last_heartbeat: i64,
    /// Whether the heartbeat is recent enough for the server to count as alive.
    pub alive: bool,
    /// Whether this row is the server asking.
    pub this_server: bool,
}

/// Counters of a storage shared by several servers (`leash_ha_*` metrics), per server.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct HaStats {
    /// Heartbeats written.
    pub heartbeats: u64,
    /// Heartbeats that failed.
    pub heartbeat_failures: u64,
    /// Claim batches taken (`leases_due` calls that claimed at least one lease).
    pub claim_batches: u64,
    /// Leases claimed in all batches.
    pub claimed: u64,
    /// Change notifications received.
    pub notifications: u64,
    /// Times the notification connection was re-opened (each flushed the caches).
    pub reconnects: u64,
    /// Storage operation latency: cumulative counts per upper bound in seconds, as a
    /// Prometheus histogram has them (the last bound is `+Inf`).
    pub latency_buckets: Vec<(f64, u64)>,
    /// Sum of the latencies, in seconds.
    pub latency_sum: f64,
    /// Number of operations timed.
    pub latency_count: u64,
}

/// Decides the new value in [`Storage::modify`]: `Ok(Some(v))` writes `v`, `Ok(None)`
/// deletes, `Err(e)` leaves the record unchanged and fails with `Rejected(e)`.
pub type Modify = Box<dyn FnOnce(Option<&[u8]>) -> Result<Option<Vec<u8>>, Rejection> + Send>;

/// Everything the server stores. Namespaced entries (`ns`, `key`) hold policies, mounts,
/// KV data and engine configuration; tokens have their own indexed table.
#[async_trait]
pub trait Storage: Send + Sync + 'static {
    /// The keyring this storage seals with (used by callers to hash presented tokens).
    fn keyring(&self) -> &Keyring;

    /// Changes made through any server sharing this storage, if the storage is shared
    /// (`None` for storage only this process opens: its own writes invalidate its
    /// caches directly). A lagging receiver must treat the lag as [`Change::Flush`].
    fn changes(&self) -> Option<tokio::sync::broadcast::Receiver<Change>> {
        None
    }

    /// Whether other servers may share this storage (its changes are pushed through
    /// [`Storage::changes`]); cheap, called per request.
    fn shared(&self) -> bool {
        false
    }

    /// The servers sharing this storage (empty for storage only this process opens).
    async fn servers(&self) -> Result<Vec<ServerInfo>, StorageError> {
        Ok(Vec::new())
    }

    /// Which backend this is (`sqlite`, `postgresql`), for `sys/seal-status` and health.
    fn kind(&self) -> &'static str;

    /// Per-server counters of shared storage (`None` for storage only this process
    /// opens).
    fn ha_stats(&self) -> Option<HaStats> {
        None
    }

    /// Whether the storage answers right now (a cheap round trip).
    async fn ping(&self) -> Result<(), StorageError> {
        Ok(())
    }

    /// Reads one entry.
    async fn get(&self, ns: &str, key: &str) -> Result<Option<Plain>, StorageError>;
    /// [`Storage::get`] from the store itself, never from a cache of this process: for
    /// reads that must see what another server wrote a moment ago, before its change
    /// notification arrives (read-through on a miss). Same as `get` where nothing is
    /// cached.
    async fn get_fresh(&self, ns: &str, key: &str) -> Result<Option<Plain>, StorageError> {
        self.get(ns, key).await
    }
    /// Writes (creates or replaces) one entry.
    async fn put(&self, ns: &str, key: &str, value: Vec<u8>) -> Result<(), StorageError>;
    /// Deletes one entry; returns whether it existed.
    async fn delete(&self, ns: &str, key: &str) -> Result<bool, StorageError>;
    /// All keys in `ns` starting with `prefix`, sorted.
    async fn list(&self, ns: &str, prefix: &str) -> Result<Vec<String>, StorageError>;
    /// Every namespace holding at least one entry, sorted (for copying a whole store).
    async fn namespaces(&self) -> Result<Vec<String>, StorageError>;
    /// Deletes every key in `ns` starting with `prefix`; returns how many.
    async fn delete_prefix(&self, ns: &str, prefix: &str) -> Result<u64, StorageError>;
    /// Atomic read-modify-write of one entry; returns the value written (or `None` if
    /// deleted/absent).
    async fn modify(&self, ns: &str, key: &str, f: Modify) -> Result<Option<Plain>, StorageError>;

    /// Inserts a new token; `Conflict` if its hash or accessor exists.
    async fn token_insert(&self, token: StoredToken) -> Result<(), StorageError>;
    /// Looks a token up by the keyed hash of its value.
    async fn token_get(&self, hash: KeyedHash) -> Result<Option<StoredToken>, StorageError>;
    /// Looks a token up by the keyed hash of its accessor.
    async fn token_by_accessor(
        &self,
        accessor_hash: KeyedHash,
    ) -> Result<Option<StoredToken>, StorageError>;
    /// Replaces a token's expiry and entry; returns whether it exists.
    async fn token_update(
        &self,
        hash: KeyedHash,
        expire_at: Option<i64>,
        entry: Vec<u8>,
    ) -> Result<bool, StorageError>;
    /// Spends one use of a token (atomic).
    async fn token_use(&self, hash: KeyedHash) -> Result<TokenUse, StorageError>;
    /// Deletes a token and, unless `orphan_children`, its whole subtree (children of
    /// children…); with `orphan_children` the direct children become orphans. Returns the
    /// deleted tokens, root of the tree first.
    ///
    /// In the same transaction, every lease owned by a deleted token is marked
    /// [`LeaseState::Revoking`] with `expire_at = min(expire_at, now)` (never deleted:
    /// the credential must be revoked in its target first). With `orphan_children` only
    /// the token's own leases are marked.
    async fn token_delete_tree(
        &self,
        hash: KeyedHash,
        orphan_children: bool,
        now: i64,
    ) -> Result<Vec<StoredToken>, StorageError>;
    /// Tokens whose expiry is at or before `now`, at most `limit`.
    async fn tokens_expired(&self, now: i64, limit: usize) -> Result<Vec<KeyedHash>, StorageError>;
    /// Number of stored tokens.
    async fn token_count(&self) -> Result<u64, StorageError>;
    /// Tokens not expired at `now` (no expiry, or expiring after `now`), in hash order,
    /// starting after `after` (exclusive), at most `limit`: one page of a walk over the
    /// live tokens (the core rebuilds its token gauges with it at start-up). Walks the
    /// primary-key index; each returned entry is unsealed.
    async fn tokens_live_page(
        &self,
        now: i64,
        after: Option<KeyedHash>,
        limit: usize,
    ) -> Result<Vec<StoredToken>, StorageError>;

    /// Inserts a new lease; `Conflict` if its id exists. A lease whose owning token no
    /// longer exists is refused with `Rejected` (checked atomically with
    /// [`Storage::token_delete_tree`], so no lease escapes its token's revocation).
    async fn lease_insert(&self, lease: StoredLease) -> Result<(), StorageError>;
    /// Reads one lease.
    async fn lease_get(&self, id: &str) -> Result<Option<StoredLease>, StorageError>;
    /// Sets a lease's state and expiry, and its entry when `entry` is `Some` (renew,
    /// activate, mark revoking). Returns whether the lease exists. A `Revoking` lease
    /// cannot be moved back to `Pending` or `Active`: that is `Rejected` and changes
    /// nothing.
    async fn lease_update(
        &self,
        id: &str,
        state: LeaseState,
        expire_at: i64,
        entry: Option<Vec<u8>>,
    ) -> Result<bool, StorageError>;
    /// Deletes a lease (after its credential was revoked in the target); returns whether
    /// it existed.
    async fn lease_delete(&self, id: &str) -> Result<bool, StorageError>;
    /// Leases to revoke now, at most `limit`, earliest `expire_at` first (then by id):
    /// those with `expire_at <= now` (whatever their state, `Pending` included) or in
    /// state `Revoking`, whose `next_attempt_at <= now`.
    async fn leases_due(&self, now: i64, limit: usize) -> Result<Vec<StoredLease>, StorageError>;
    /// Records a failed revocation: sets `attempts`, `next_attempt_at` and `last_error`.
    /// Returns whether the lease exists.
    async fn lease_record_failure(
        &self,
        id: &str,
        attempts: u32,
        next_attempt_at: i64,
        error: &str,
    ) -> Result<bool, StorageError>;
    /// Ids of every lease starting with `prefix`, sorted.
    async fn lease_ids_with_prefix(&self, prefix: &str) -> Result<Vec<String>, StorageError>;
    /// Leases whose revocation has failed at least once, at most `limit`, most attempts
    /// first (then by id).
    async fn leases_failing(&self, limit: usize) -> Result<Vec<StoredLease>, StorageError>;
    /// Number of stored leases.
    async fn lease_count(&self) -> Result<u64, StorageError>;
    /// Number of leases whose revocation has failed at least once (counted through the
    /// index of failing leases, without reading them).
    async fn leases_failing_count(&self) -> Result<u64, StorageError>;
    /// Deletes every lease in `ids` (one transaction); returns how many existed.
    async fn leases_delete(&self, ids: &[String]) -> Result<u64, StorageError>;
    /// Marks every lease in `ids` [`LeaseState::Revoking`], due at `now` at the latest
    /// (`expire_at = min(expire_at, now)`), in one transaction; returns how many existed.
    async fn leases_mark_revoking(&self, ids: &[String], now: i64) -> Result<u64, StorageError>;
    /// [`Storage::leases_mark_revoking`] for a revocation this server does now: marks
    /// and claims the leases of `ids` no other server is revoking (claims as
    /// [`Storage::leases_due`] takes them, so the expiry worker of another server skips
    /// them), in one statement; returns the ids claimed. Absent leases and leases another
    /// server claimed are left out.
    async fn leases_claim_revoking(
        &self,
        ids: &[String],
        now: i64,
    ) -> Result<Vec<String>, StorageError>;
    /// Marks every [`LeaseState::Pending`] lease `Revoking`, due at `now` at the latest.
    /// Called once at startup: an intent still pending then belongs to an issuance the
    /// previous process never finished, so its credential (if any) must go. Uses an
    /// index of pending leases only, so its cost does not grow with the lease count.
    async fn leases_abandon_pending(&self, now: i64) -> Result<u64, StorageError>;
}
