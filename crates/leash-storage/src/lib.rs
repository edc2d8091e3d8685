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
pub mod conformance;
mod sqlite;

use async_trait::async_trait;
pub use barrier::{KeyedHash, Keyring};
pub use sqlite::{DB_FILE, SqliteStorage};
use zeroize::Zeroizing;

/// Why a storage operation failed. Messages never contain stored values.
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
    /// Encryption or decryption failed.
    #[error("{0}")]
    Crypto(String),
    /// The stored data is not what this version of leash wrote.
    #[error("storage is corrupt: {0}")]
    Corrupt(String),
    /// A uniqueness rule was violated (the record already exists).
    #[error("already exists: {0}")]
    Conflict(String),
    /// The database or file system failed.
    #[error("storage I/O failed: {0}")]
    Io(String),
    /// The storage has been shut down.
    #[error("storage is closed")]
    Closed,
    /// A read-modify-write callback refused the change; carries its message.
    #[error("{0}")]
    Rejected(String),
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

/// Decides the new value in [`Storage::modify`]: `Ok(Some(v))` writes `v`, `Ok(None)`
/// deletes, `Err(msg)` leaves the record unchanged and fails with `Rejected(msg)`.
pub type Modify = Box<dyn FnOnce(Option<&[u8]>) -> Result<Option<Vec<u8>>, String> + Send>;

/// Everything the server stores. Namespaced entries (`ns`, `key`) hold policies, mounts,
/// KV data and engine configuration; tokens have their own indexed table.
#[async_trait]
pub trait Storage: Send + Sync + 'static {
    /// The keyring this storage seals with (used by callers to hash presented tokens).
    fn keyring(&self) -> &Keyring;

    /// Reads one entry.
    async fn get(&self, ns: &str, key: &str) -> Result<Option<Plain>, StorageError>;
    /// Writes (creates or replaces) one entry.
    async fn put(&self, ns: &str, key: &str, value: Vec<u8>) -> Result<(), StorageError>;
    /// Deletes one entry; returns whether it existed.
    async fn delete(&self, ns: &str, key: &str) -> Result<bool, StorageError>;
    /// All keys in `ns` starting with `prefix`, sorted.
    async fn list(&self, ns: &str, prefix: &str) -> Result<Vec<String>, StorageError>;
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
    async fn token_delete_tree(
        &self,
        hash: KeyedHash,
        orphan_children: bool,
    ) -> Result<Vec<StoredToken>, StorageError>;
    /// Tokens whose expiry is at or before `now`, at most `limit`.
    async fn tokens_expired(&self, now: i64, limit: usize) -> Result<Vec<KeyedHash>, StorageError>;
    /// Number of stored tokens.
    async fn token_count(&self) -> Result<u64, StorageError>;
}
