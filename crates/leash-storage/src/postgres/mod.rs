//! The `postgresql` storage backend: several leash servers on one PostgreSQL database.
//!
//! Same data model and the same barrier as the SQLite backend: every value and token
//! entry is sealed by the keyring before it leaves the process, tokens and accessors are
//! indexed by keyed hashes only. PostgreSQL adds what several servers need:
//!
//! * **Durability and atomicity per row.** Every write is one autocommitted statement or
//!   one short transaction; a caller hears `Ok` after `COMMIT` returned. Token uses are
//!   spent with one `UPDATE … WHERE uses_left > 0 RETURNING`, read-modify-writes run
//!   under a transaction-scoped advisory lock on their key, and subtree deletion deletes
//!   with `RETURNING`, so two servers revoking the same tree report each token once.
//! * **Change notification.** Triggers `pg_notify` every change of an entry and every
//!   update or deletion of a token, on the channel `<table>_changes`; each server
//!   `LISTEN`s on a dedicated connection and republishes them as [`Change`]s. When that
//!   connection drops, it reconnects and publishes [`Change::Flush`].
//! * **Claims.** [`Storage::leases_due`] claims what it returns (`FOR UPDATE SKIP
//!   LOCKED`, a claim owner and a 30-second claim deadline), so each due lease goes to
//!   one server; a dead server's claims lapse and are taken over.
//! * **Heartbeats.** Each server upserts its row in `<table>_servers` every second (with
//!   database time); a server silent for [`DEAD_AFTER_SECS`] is dead, and its pending
//!   issuance intents are marked for revocation by a survivor.
//! * **Migrations.** Versioned, applied once under `pg_advisory_lock` when several
//!   servers start together; the key is checked before anything is written.
//!
//! Connections go through [`connect`] (pool) and `connect_listener` — the only two
//! places that choose the transport: TLS through rustls (`leash-dbtls`), with libpq's
//! `sslmode` (`disable`, `prefer` — the default —, `require`, `verify-ca`,
//! `verify-full`), `sslrootcert`, `sslcert` and `sslkey` read from `connection_url`
//! (URL query or key=value form). `verify-ca`/`verify-full` run with the driver's
//! `require` and leash's verifier; a first connection that fails (a wrong CA, a server
//! without TLS, `pg_hba.conf`) makes [`PgStorage::open`] fail saying why.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use tokio::sync::broadcast;
use tokio_postgres::error::SqlState;
use tokio_postgres::types::ToSql;

use crate::barrier::{KeyedHash, Keyring};
use crate::{
    Change, HaStats, LeaseState, Modify, Plain, ServerInfo, Storage, StorageError, StoredLease,
    StoredToken, TokenUse,
};

mod cache;
mod connection;
mod heartbeat;
mod migrate;
mod notify;
mod rows;
mod sql;
mod stats;
mod storage;
#[cfg(test)]
mod tests;

use cache::EntryCache;
pub use connection::connect;
use connection::*;
use heartbeat::*;
use migrate::*;
use notify::*;
use rows::*;
use sql::*;
use stats::*;

const KEYCHECK_PLAINTEXT: &[u8] = b"leash keycheck v1";
const KEYCHECK_LOCATION: &str = "meta/keycheck";
/// Seconds without a heartbeat after which a server counts as dead.
pub const DEAD_AFTER_SECS: i64 = 5;
/// How often a server heartbeats.
const HEARTBEAT_EVERY: Duration = Duration::from_secs(1);
/// How long a lease claim holds before another server may take the lease over.
const CLAIM_SECS: i64 = 30;
/// Advisory-lock class of schema migrations (first key of the two-key form).
const LOCK_MIGRATE: i32 = 0x6c65_0001;
/// Advisory-lock class of read-modify-writes of one entry.
const LOCK_MODIFY: i32 = 0x6c65_0002;

/// Settings of the `postgresql` storage backend (`storage "postgresql" { … }`).
#[derive(Clone)]
pub struct PgConfig {
    /// libpq-style URL or key=value string; holds the password, never printed.
    pub connection_url: leash_types::SecretString,
    /// Table name (prefix of the backend's tables); `[a-z_][a-z0-9_]*`, at most 40.
    pub table: String,
    /// Connection pool size.
    pub max_parallel: usize,
    /// libpq's TLS keys given as keys of the block (`sslmode`, `sslrootcert`, `sslcert`,
    /// `sslkey`), in order; they win over the same keys in `connection_url`.
    pub tls: Vec<(String, String)>,
    /// Whether several servers may share the database (heartbeats, claims and change
    /// notifications run either way; the flag is kept for Vault's configuration shape).
    pub ha_enabled: bool,
}

impl std::fmt::Debug for PgConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgConfig")
            .field("table", &self.table)
            .field("max_parallel", &self.max_parallel)
            .field("tls", &self.tls)
            .field("ha_enabled", &self.ha_enabled)
            .finish_non_exhaustive()
    }
}

/// Default `table`.
pub const DEFAULT_TABLE: &str = "leash_store";
/// Default `max_parallel`.
pub const DEFAULT_MAX_PARALLEL: usize = 16;

/// Checks a `table` value: a plain lower-case SQL identifier, short enough for the
/// suffixes the backend adds.
pub fn valid_table_name(t: &str) -> bool {
    let mut chars = t.chars();
    matches!(chars.next(), Some('a'..='z' | '_'))
        && chars.all(|c| matches!(c, 'a'..='z' | '0'..='9' | '_'))
        && t.len() <= 40
}

struct Shared {
    stats: Stats,
    keyring: Keyring,
    pool: Pool,
    sql: Sql,
    /// This process's id in the servers table and in claims.
    server_id: String,
    changes: broadcast::Sender<Change>,
    /// Hot entries, invalidated by change notifications.
    cache: EntryCache,
}

/// PostgreSQL storage (see the module documentation).
pub struct PgStorage {
    shared: Arc<Shared>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Drop for PgStorage {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// How this server presents itself in `sys/ha-status`.
#[derive(Debug, Clone)]
pub struct ServerIdentity {
    /// Name (host name unless configured).
    pub name: String,
    /// Address it serves on.
    pub address: String,
    /// leash version.
    pub version: String,
}

impl PgStorage {
    /// Connects, checks the key (a database initialised with another key is refused with
    /// [`StorageError::WrongKey`] before anything is written), applies pending schema
    /// migrations under an advisory lock, registers this server and starts its
    /// heartbeat and change listener.
    pub async fn open(
        cfg: &PgConfig,
        keyring: Keyring,
        me: ServerIdentity,
    ) -> Result<PgStorage, StorageError> {
        use leash_types::ExposeSecret;
        if !valid_table_name(&cfg.table) {
            return Err(StorageError::InvalidConfig(
                "table must be a lower-case SQL identifier ([a-z_][a-z0-9_]*, at most 40 characters)".into(),
            ));
        }
        let target = parse_url(cfg.connection_url.expose_secret(), &cfg.tls)?;
        let pool = connect_to(&target, cfg.max_parallel)?;
        let sql = Sql::new(&cfg.table);
        migrate(&pool, &target, &sql, &keyring).await?;
        let (changes, _) = broadcast::channel(4096);
        let shared = Arc::new(Shared {
            stats: Stats::default(),
            keyring,
            pool,
            sql,
            server_id: leash_types::random::uuid_v4(),
            changes,
            cache: EntryCache::default(),
        });
        heartbeat_once(&shared, &me).await?;
        let mut tasks = Vec::new();
        {
            let s = Arc::clone(&shared);
            tasks.push(tokio::spawn(async move {
                let mut tick = tokio::time::interval(HEARTBEAT_EVERY);
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                loop {
                    tick.tick().await;
                    match heartbeat_once(&s, &me).await {
                        Ok(()) => s.stats.heartbeats.fetch_add(1, Ordering::Relaxed),
                        Err(e) => {
                            tracing::warn!(error = %e, "storage: heartbeat failed; will retry");
                            s.stats.heartbeat_failures.fetch_add(1, Ordering::Relaxed)
                        }
                    };
                }
            }));
        }
        {
            let s = Arc::clone(&shared);
            let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
            tasks.push(tokio::spawn(listen_loop(s, target, ready_tx)));
            // Serve only once changes are heard: a cache filled before would miss them.
            match tokio::time::timeout(Duration::from_secs(10), ready_rx).await {
                Ok(Ok(())) => {}
                _ => {
                    for t in &tasks {
                        t.abort();
                    }
                    return Err(StorageError::Unavailable(
                        "cannot listen for changes on PostgreSQL".into(),
                    ));
                }
            }
        }
        Ok(PgStorage { shared, tasks })
    }

    /// This server's id (in `sys/ha-status` and in lease claims).
    pub fn server_id(&self) -> &str {
        &self.shared.server_id
    }

    /// The pool (benchmarks compare against raw statements over it).
    pub fn pool(&self) -> &Pool {
        &self.shared.pool
    }

    /// Deletes every table, function and row of the backend (tests and `operator
    /// migrate --force` of an emptied destination only).
    pub async fn drop_schema(url: &str, table: &str) -> Result<(), StorageError> {
        if !valid_table_name(table) {
            return Err(StorageError::InvalidConfig("invalid table name".into()));
        }
        let target = parse_url(url, &[])?;
        let pool = connect_to(&target, 1)?;
        let c = pool.get().await.map_err(first_connect_err(&target.tls))?;
        let s = Sql::new(table);
        c.batch_execute(&format!(
            "DROP TABLE IF EXISTS {}, {}, {}, {}, {}, {} CASCADE; DROP FUNCTION IF EXISTS {}_notify() CASCADE; DROP FUNCTION IF EXISTS {}_notify() CASCADE;",
            s.meta, s.entries, s.tokens, s.leases, s.servers, s.migrations, s.entries, s.tokens
        ))
        .await
        .map_err(pg("drop schema"))
    }

    async fn client(&self) -> Result<Timed<'_>, StorageError> {
        let start = std::time::Instant::now();
        let obj = self.shared.pool.get().await.map_err(pool_err)?;
        Ok(Timed {
            obj,
            start,
            stats: &self.shared.stats,
        })
    }

    fn sql(&self) -> &Sql {
        &self.shared.sql
    }
}
