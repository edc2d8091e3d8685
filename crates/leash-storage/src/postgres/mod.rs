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
//! places that choose the transport (`NoTls` today).

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

#[cfg(test)]
mod tests;

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
    /// Whether several servers may share the database (heartbeats, claims and change
    /// notifications run either way; the flag is kept for Vault's configuration shape).
    pub ha_enabled: bool,
}

impl std::fmt::Debug for PgConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgConfig")
            .field("table", &self.table)
            .field("max_parallel", &self.max_parallel)
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

fn pg(op: &'static str) -> impl Fn(tokio_postgres::Error) -> StorageError {
    move |e| {
        if e.code() == Some(&SqlState::UNIQUE_VIOLATION) {
            return StorageError::Conflict("a record with the same identity exists".into());
        }
        let io = std::error::Error::source(&e).is_some_and(|s| s.is::<std::io::Error>());
        let down = matches!(
            e.code(),
            Some(c) if *c == SqlState::ADMIN_SHUTDOWN || *c == SqlState::CRASH_SHUTDOWN
                || *c == SqlState::CANNOT_CONNECT_NOW
        );
        if e.is_closed() || io || down {
            // The connection failed (refused, reset, closed) or the server is stopping.
            return StorageError::Unavailable(format!("PostgreSQL connection failed ({op})"));
        }
        StorageError::database(op, e)
    }
}

fn pool_err(e: deadpool_postgres::PoolError) -> StorageError {
    tracing::debug!(error = %e, "storage: cannot get a PostgreSQL connection");
    StorageError::Unavailable("cannot reach PostgreSQL".into())
}

/// The transport of every connection (TLS is chosen here).
fn tls() -> tokio_postgres::NoTls {
    tokio_postgres::NoTls
}

fn parse_url(url: &str) -> Result<tokio_postgres::Config, StorageError> {
    url.parse::<tokio_postgres::Config>().map_err(|_| {
        StorageError::InvalidConfig(
            "connection_url is not a valid PostgreSQL URL or key=value string".into(),
        )
    })
}

/// Opens a pool of at most `pool_size` connections to `url` (connections are made on
/// demand). The one place the pool's transport is chosen.
pub fn connect(url: &str, pool_size: usize) -> Result<Pool, StorageError> {
    let cfg = parse_url(url)?;
    let mgr = Manager::from_config(
        cfg,
        tls(),
        ManagerConfig {
            recycling_method: RecyclingMethod::Fast,
        },
    );
    Pool::builder(mgr)
        .max_size(pool_size.max(1))
        .runtime(Runtime::Tokio1)
        .create_timeout(Some(Duration::from_secs(5)))
        .wait_timeout(Some(Duration::from_secs(10)))
        .build()
        .map_err(|e| StorageError::InvalidConfig(format!("cannot build the connection pool: {e}")))
}

/// One connection outside the pool (for `LISTEN`): the client and a channel of its
/// notifications, closed when the connection ends.
async fn connect_listener(
    url: &str,
) -> Result<
    (
        tokio_postgres::Client,
        tokio::sync::mpsc::UnboundedReceiver<tokio_postgres::Notification>,
    ),
    StorageError,
> {
    let cfg = parse_url(url)?;
    let (client, mut conn) = cfg.connect(tls()).await.map_err(pg("listen connect"))?;
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        loop {
            match std::future::poll_fn(|cx| conn.poll_message(cx)).await {
                Some(Ok(tokio_postgres::AsyncMessage::Notification(n))) => {
                    if tx.send(n).is_err() {
                        return;
                    }
                }
                Some(Ok(_)) => {}
                Some(Err(e)) => {
                    tracing::warn!(error = %e, "storage: the PostgreSQL notification connection failed");
                    return;
                }
                None => return,
            }
        }
    });
    Ok((client, rx))
}

/// Table names and the SQL that uses them.
struct Sql {
    meta: String,
    entries: String,
    tokens: String,
    leases: String,
    servers: String,
    migrations: String,
    channel: String,
}

impl Sql {
    fn new(t: &str) -> Sql {
        Sql {
            meta: format!("{t}_meta"),
            entries: t.to_owned(),
            tokens: format!("{t}_tokens"),
            leases: format!("{t}_leases"),
            servers: format!("{t}_servers"),
            migrations: format!("{t}_migrations"),
            channel: format!("{t}_changes"),
        }
    }

    /// Versioned migrations, in order; each runs in its own transaction once.
    fn migrations(&self) -> Vec<String> {
        let Sql {
            meta,
            entries: e,
            tokens: tk,
            leases: l,
            servers: sv,
            channel: ch,
            ..
        } = self;
        vec![format!(
            r#"
CREATE TABLE {meta} (key TEXT COLLATE "C" PRIMARY KEY, value BYTEA NOT NULL);
CREATE TABLE {e} (
    ns TEXT COLLATE "C" NOT NULL, key TEXT COLLATE "C" NOT NULL, value BYTEA NOT NULL,
    PRIMARY KEY (ns, key));
CREATE TABLE {tk} (
    hash BYTEA PRIMARY KEY,
    accessor_hash BYTEA NOT NULL UNIQUE,
    parent BYTEA,
    expire_at BIGINT,
    uses_left BIGINT,
    entry BYTEA NOT NULL);
CREATE INDEX {tk}_parent ON {tk}(parent) WHERE parent IS NOT NULL;
CREATE INDEX {tk}_expire ON {tk}(expire_at) WHERE expire_at IS NOT NULL;
CREATE TABLE {l} (
    id TEXT COLLATE "C" PRIMARY KEY,
    token BYTEA,
    issue_time BIGINT NOT NULL,
    expire_at BIGINT NOT NULL,
    max_expire_at BIGINT NOT NULL,
    state SMALLINT NOT NULL,
    attempts INTEGER NOT NULL,
    next_attempt_at BIGINT NOT NULL,
    last_error TEXT,
    entry BYTEA NOT NULL,
    owner TEXT,
    claim_owner TEXT,
    claim_until TIMESTAMPTZ);
CREATE INDEX {l}_expire ON {l}(expire_at, id);
CREATE INDEX {l}_revoking ON {l}(expire_at, id) WHERE state = 2;
CREATE INDEX {l}_token ON {l}(token) WHERE token IS NOT NULL;
CREATE INDEX {l}_failing ON {l}(attempts) WHERE attempts > 0;
CREATE INDEX {l}_pending ON {l}(owner) WHERE state = 0;
CREATE TABLE {sv} (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    address TEXT NOT NULL,
    version TEXT NOT NULL,
    started_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    heartbeat_at TIMESTAMPTZ NOT NULL DEFAULT now());
CREATE FUNCTION {e}_notify() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE p TEXT;
BEGIN
  IF TG_OP = 'DELETE' THEN p := 'e' || OLD.ns || chr(31) || OLD.key;
  ELSE p := 'e' || NEW.ns || chr(31) || NEW.key; END IF;
  IF octet_length(p) > 7000 THEN p := 'f'; END IF;
  PERFORM pg_notify('{ch}', p);
  RETURN NULL;
END $$;
CREATE TRIGGER {e}_notify AFTER INSERT OR UPDATE OR DELETE ON {e}
    FOR EACH ROW EXECUTE FUNCTION {e}_notify();
CREATE FUNCTION {tk}_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  PERFORM pg_notify('{ch}', 't' || encode(OLD.hash, 'hex'));
  RETURN NULL;
END $$;
CREATE TRIGGER {tk}_notify AFTER UPDATE OF parent, expire_at, entry OR DELETE ON {tk}
    FOR EACH ROW EXECUTE FUNCTION {tk}_notify();
"#
        )]
    }
}

/// Upper bounds (seconds) of the storage latency histogram.
const LATENCY_BOUNDS: [f64; 12] = [
    0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0,
];

#[derive(Default)]
struct Stats {
    heartbeats: AtomicU64,
    heartbeat_failures: AtomicU64,
    claim_batches: AtomicU64,
    claimed: AtomicU64,
    notifications: AtomicU64,
    reconnects: AtomicU64,
    /// One counter per bound, plus `+Inf`.
    buckets: [AtomicU64; LATENCY_BOUNDS.len() + 1],
    sum_micros: AtomicU64,
    count: AtomicU64,
}

impl Stats {
    fn observe(&self, d: Duration) {
        let secs = d.as_secs_f64();
        let i = LATENCY_BOUNDS
            .iter()
            .position(|b| secs <= *b)
            .unwrap_or(LATENCY_BOUNDS.len());
        self.buckets[i].fetch_add(1, Ordering::Relaxed);
        self.sum_micros.fetch_add(
            u64::try_from(d.as_micros()).unwrap_or(u64::MAX),
            Ordering::Relaxed,
        );
        self.count.fetch_add(1, Ordering::Relaxed);
    }

    fn snapshot(&self) -> HaStats {
        let mut cumulative = 0;
        let mut latency_buckets = Vec::with_capacity(LATENCY_BOUNDS.len() + 1);
        for (i, b) in self.buckets.iter().enumerate() {
            cumulative += b.load(Ordering::Relaxed);
            let bound = LATENCY_BOUNDS.get(i).copied().unwrap_or(f64::INFINITY);
            latency_buckets.push((bound, cumulative));
        }
        HaStats {
            heartbeats: self.heartbeats.load(Ordering::Relaxed),
            heartbeat_failures: self.heartbeat_failures.load(Ordering::Relaxed),
            claim_batches: self.claim_batches.load(Ordering::Relaxed),
            claimed: self.claimed.load(Ordering::Relaxed),
            notifications: self.notifications.load(Ordering::Relaxed),
            reconnects: self.reconnects.load(Ordering::Relaxed),
            latency_buckets,
            latency_sum: self.sum_micros.load(Ordering::Relaxed) as f64 / 1e6,
            latency_count: self.count.load(Ordering::Relaxed),
        }
    }
}

/// A pooled connection that times the operation it serves (from asking the pool to
/// giving the connection back) into the latency histogram.
struct Timed<'a> {
    obj: deadpool_postgres::Object,
    start: std::time::Instant,
    stats: &'a Stats,
}

impl std::ops::Deref for Timed<'_> {
    type Target = deadpool_postgres::Object;
    fn deref(&self) -> &Self::Target {
        &self.obj
    }
}

impl std::ops::DerefMut for Timed<'_> {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.obj
    }
}

impl Drop for Timed<'_> {
    fn drop(&mut self) {
        self.stats.observe(self.start.elapsed());
    }
}

struct Shared {
    stats: Stats,
    keyring: Keyring,
    pool: Pool,
    sql: Sql,
    /// This process's id in the servers table and in claims.
    server_id: String,
    changes: broadcast::Sender<Change>,
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
        let url = cfg.connection_url.expose_secret().to_owned();
        let pool = connect(&url, cfg.max_parallel)?;
        let sql = Sql::new(&cfg.table);
        migrate(&pool, &sql, &keyring).await?;
        let (changes, _) = broadcast::channel(4096);
        let shared = Arc::new(Shared {
            stats: Stats::default(),
            keyring,
            pool,
            sql,
            server_id: leash_types::random::uuid_v4(),
            changes,
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
            tasks.push(tokio::spawn(listen_loop(s, url, ready_tx)));
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
        let pool = connect(url, 1)?;
        let c = pool.get().await.map_err(pool_err)?;
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

/// Checks the key, then applies the migrations not yet applied, under a session-level
/// advisory lock (servers starting together wait for the first).
async fn migrate(pool: &Pool, sql: &Sql, keyring: &Keyring) -> Result<(), StorageError> {
    let mut c = pool.get().await.map_err(pool_err)?;
    let lock_key = format!("leash:{}", sql.entries);
    c.execute(
        "SELECT pg_advisory_lock($1, hashtext($2))",
        &[&LOCK_MIGRATE, &lock_key],
    )
    .await
    .map_err(pg("lock"))?;
    let r = migrate_locked(&mut c, sql, keyring).await;
    let unlocked = c
        .execute(
            "SELECT pg_advisory_unlock($1, hashtext($2))",
            &[&LOCK_MIGRATE, &lock_key],
        )
        .await
        .map_err(pg("unlock"));
    r?;
    unlocked.map(|_| ())
}

async fn migrate_locked(
    c: &mut deadpool_postgres::Object,
    sql: &Sql,
    keyring: &Keyring,
) -> Result<(), StorageError> {
    // The key first: a wrong key must change nothing.
    let has_meta: bool = c
        .query_one("SELECT to_regclass($1) IS NOT NULL", &[&sql.meta])
        .await
        .map_err(pg("inspect"))?
        .get(0);
    let mut keycheck_present = false;
    if has_meta {
        let row = c
            .query_opt(
                &format!("SELECT value FROM {} WHERE key = 'keycheck'", sql.meta),
                &[],
            )
            .await
            .map_err(pg("read keycheck"))?;
        if let Some(row) = row {
            let v: Vec<u8> = row.get(0);
            match keyring.open(KEYCHECK_LOCATION, &v) {
                Ok(p) if p.as_slice() == KEYCHECK_PLAINTEXT => keycheck_present = true,
                _ => return Err(StorageError::WrongKey),
            }
        }
    }
    c.batch_execute(&format!(
        "CREATE TABLE IF NOT EXISTS {} (version INTEGER PRIMARY KEY, applied_at TIMESTAMPTZ NOT NULL DEFAULT now())",
        sql.migrations
    ))
    .await
    .map_err(pg("migrate"))?;
    let applied: i32 = c
        .query_one(
            &format!("SELECT COALESCE(MAX(version), 0) FROM {}", sql.migrations),
            &[],
        )
        .await
        .map_err(pg("migrate"))?
        .get(0);
    for (i, m) in sql.migrations().iter().enumerate() {
        let version = i32::try_from(i + 1).unwrap_or(i32::MAX);
        if version <= applied {
            continue;
        }
        let tx = c.transaction().await.map_err(pg("migrate"))?;
        tx.batch_execute(m).await.map_err(pg("migrate"))?;
        tx.execute(
            &format!("INSERT INTO {} (version) VALUES ($1)", sql.migrations),
            &[&version],
        )
        .await
        .map_err(pg("migrate"))?;
        tx.commit().await.map_err(pg("migrate"))?;
        tracing::info!(version, "storage: applied PostgreSQL schema migration");
    }
    if !keycheck_present {
        let sealed = keyring.seal(KEYCHECK_LOCATION, KEYCHECK_PLAINTEXT)?;
        c.execute(
            &format!(
                "INSERT INTO {} (key, value) VALUES ('keycheck', $1) ON CONFLICT (key) DO NOTHING",
                sql.meta
            ),
            &[&sealed],
        )
        .await
        .map_err(pg("write keycheck"))?;
    }
    Ok(())
}

async fn heartbeat_once(s: &Shared, me: &ServerIdentity) -> Result<(), StorageError> {
    let c = s.pool.get().await.map_err(pool_err)?;
    let sv = &s.sql.servers;
    c.execute(
        &format!(
            "INSERT INTO {sv} (id, name, address, version) VALUES ($1, $2, $3, $4)
             ON CONFLICT (id) DO UPDATE SET heartbeat_at = now()"
        ),
        &[&s.server_id, &me.name, &me.address, &me.version],
    )
    .await
    .map_err(pg("heartbeat"))?;
    // A dead server's issuance intents: its credentials (if created) must go. Marked
    // for revocation here; whichever server claims them next revokes them.
    let n = c
        .execute(
            &format!(
                "UPDATE {l} SET state = 2, expire_at = LEAST(expire_at, extract(epoch from now())::bigint)
                 WHERE state = 0 AND owner IS DISTINCT FROM $1 AND NOT EXISTS (
                   SELECT 1 FROM {sv} WHERE {sv}.id = {l}.owner
                   AND {sv}.heartbeat_at > now() - make_interval(secs => $2))",
                l = s.sql.leases
            ),
            &[&s.server_id, &(DEAD_AFTER_SECS as f64)],
        )
        .await
        .map_err(pg("heartbeat"))?;
    if n > 0 {
        tracing::warn!(
            leases = n,
            "storage: pending issuances of a dead server marked for revocation"
        );
    }
    // Rows of servers gone for an hour are forgotten.
    c.execute(
        &format!("DELETE FROM {sv} WHERE heartbeat_at < now() - interval '1 hour'"),
        &[],
    )
    .await
    .map_err(pg("heartbeat"))?;
    Ok(())
}

/// Listens for changes; on a dropped connection reconnects (backing off to 1 s) and
/// publishes [`Change::Flush`], since changes may have been missed meanwhile.
async fn listen_loop(s: Arc<Shared>, url: String, ready: tokio::sync::oneshot::Sender<()>) {
    let mut ready = Some(ready);
    let mut backoff = Duration::from_millis(50);
    loop {
        match connect_listener(&url).await {
            Ok((client, mut rx)) => {
                match client
                    .batch_execute(&format!("LISTEN {}", s.sql.channel))
                    .await
                {
                    Ok(()) => {
                        backoff = Duration::from_millis(50);
                        if let Some(r) = ready.take() {
                            let _ = r.send(());
                        } else {
                            tracing::info!(
                                "storage: change notifications restored; caches flushed"
                            );
                            let _ = s.changes.send(Change::Flush);
                        }
                        while let Some(n) = rx.recv().await {
                            s.stats.notifications.fetch_add(1, Ordering::Relaxed);
                            if let Some(c) = parse_change(n.payload()) {
                                let _ = s.changes.send(c);
                            }
                        }
                        // Lost: nothing cached may be trusted until we listen again.
                        let _ = s.changes.send(Change::Flush);
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "storage: LISTEN failed; will retry");
                    }
                }
            }
            Err(e) => {
                tracing::debug!(error = %e, "storage: notification connection failed; will retry");
            }
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(1));
    }
}

fn parse_change(p: &str) -> Option<Change> {
    let (kind, rest) = p.split_at_checked(1)?;
    match kind {
        "e" => {
            let (ns, key) = rest.split_once('\u{1f}')?;
            Some(Change::Entry {
                ns: ns.to_owned(),
                key: key.to_owned(),
            })
        }
        "t" => {
            let bytes = hex::decode(rest).ok()?;
            Some(Change::Token(KeyedHash(bytes.try_into().ok()?)))
        }
        _ => Some(Change::Flush),
    }
}

fn entry_location(ns: &str, key: &str) -> String {
    format!("entries/{ns}/{key}")
}

fn token_location(hash: &KeyedHash) -> String {
    format!("tokens/{}", hex::encode(hash.0))
}

fn lease_location(id: &str) -> String {
    format!("leases/{id}")
}

fn hash_from(v: Vec<u8>) -> Result<KeyedHash, StorageError> {
    <[u8; 32]>::try_from(v.as_slice())
        .map(KeyedHash)
        .map_err(|_| StorageError::Corrupt("token hash has the wrong length".into()))
}

const TOKEN_COLUMNS: &str = "hash, accessor_hash, parent, expire_at, uses_left, entry";
const LEASE_COLUMNS: &str = "id, token, issue_time, expire_at, max_expire_at, state, attempts, next_attempt_at, last_error, entry";

fn token_from_row(k: &Keyring, r: &tokio_postgres::Row) -> Result<StoredToken, StorageError> {
    let hash = hash_from(r.get(0))?;
    let sealed: Vec<u8> = r.get(5);
    let entry = k.open(&token_location(&hash), &sealed)?;
    Ok(StoredToken {
        hash,
        accessor_hash: hash_from(r.get(1))?,
        parent: r.get::<_, Option<Vec<u8>>>(2).map(hash_from).transpose()?,
        expire_at: r.get(3),
        uses_left: r.get(4),
        entry,
    })
}

fn lease_from_row(k: &Keyring, r: &tokio_postgres::Row) -> Result<StoredLease, StorageError> {
    let id: String = r.get(0);
    let code: i16 = r.get(5);
    let state = LeaseState::from_code(i64::from(code))
        .ok_or_else(|| StorageError::Corrupt(format!("lease {id} has an unknown state {code}")))?;
    let attempts: i32 = r.get(6);
    let attempts = u32::try_from(attempts)
        .map_err(|_| StorageError::Corrupt(format!("lease {id} has an invalid attempt count")))?;
    let sealed: Vec<u8> = r.get(9);
    let entry = k.open(&lease_location(&id), &sealed)?;
    Ok(StoredLease {
        token: r.get::<_, Option<Vec<u8>>>(1).map(hash_from).transpose()?,
        issue_time: r.get(2),
        expire_at: r.get(3),
        max_expire_at: r.get(4),
        state,
        attempts,
        next_attempt_at: r.get(7),
        last_error: r.get(8),
        entry,
        id,
    })
}

fn state_code(s: LeaseState) -> i16 {
    i16::try_from(s.code()).unwrap_or(i16::MAX)
}

fn limit(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

fn prefix_upper_bound(prefix: &str) -> Option<String> {
    let mut chars: Vec<char> = prefix.chars().collect();
    while let Some(c) = chars.pop() {
        if let Some(next) = char::from_u32(c as u32 + 1) {
            chars.push(next);
            return Some(chars.into_iter().collect());
        }
    }
    None
}

/// `WHERE` clause and parameters selecting `col` starting with `prefix` (as `$first`…).
fn prefix_range(col: &str, prefix: &str, first: usize) -> (String, Vec<String>) {
    match prefix_upper_bound(prefix) {
        Some(upper) => (
            format!("{col} >= ${first} AND {col} < ${}", first + 1),
            vec![prefix.to_owned(), upper],
        ),
        None => (format!("{col} >= ${first}"), vec![prefix.to_owned()]),
    }
}

fn u64_of(n: i64) -> u64 {
    u64::try_from(n).unwrap_or(0)
}

#[async_trait]
impl Storage for PgStorage {
    fn keyring(&self) -> &Keyring {
        &self.shared.keyring
    }

    fn kind(&self) -> &'static str {
        "postgresql"
    }

    fn ha_stats(&self) -> Option<HaStats> {
        Some(self.shared.stats.snapshot())
    }

    fn shared(&self) -> bool {
        true
    }

    fn changes(&self) -> Option<broadcast::Receiver<Change>> {
        Some(self.shared.changes.subscribe())
    }

    async fn servers(&self) -> Result<Vec<ServerInfo>, StorageError> {
        let c = self.client().await?;
        let rows = c
            .query(
                &format!(
                    "SELECT id, name, address, version, extract(epoch from heartbeat_at)::bigint,
                            heartbeat_at > now() - make_interval(secs => $1)
                     FROM {} ORDER BY started_at, id",
                    self.sql().servers
                ),
                &[&(DEAD_AFTER_SECS as f64)],
            )
            .await
            .map_err(pg("servers"))?;
        Ok(rows
            .iter()
            .map(|r| {
                let id: String = r.get(0);
                ServerInfo {
                    this_server: id == self.shared.server_id,
                    id,
                    name: r.get(1),
                    address: r.get(2),
                    version: r.get(3),
                    last_heartbeat: r.get(4),
                    alive: r.get(5),
                }
            })
            .collect())
    }

    async fn ping(&self) -> Result<(), StorageError> {
        let c = self.client().await?;
        c.simple_query("SELECT 1").await.map_err(pg("ping"))?;
        Ok(())
    }

    async fn get(&self, ns: &str, key: &str) -> Result<Option<Plain>, StorageError> {
        let c = self.client().await?;
        let st = c
            .prepare_cached(&format!(
                "SELECT value FROM {} WHERE ns = $1 AND key = $2",
                self.sql().entries
            ))
            .await
            .map_err(pg("get"))?;
        let row = c.query_opt(&st, &[&ns, &key]).await.map_err(pg("get"))?;
        row.map(|r| {
            let v: Vec<u8> = r.get(0);
            self.keyring().open(&entry_location(ns, key), &v)
        })
        .transpose()
    }

    async fn put(&self, ns: &str, key: &str, value: Vec<u8>) -> Result<(), StorageError> {
        let sealed = self.keyring().seal(&entry_location(ns, key), &value)?;
        drop(Plain::new(value));
        let c = self.client().await?;
        let st = c
            .prepare_cached(&format!(
                "INSERT INTO {} (ns, key, value) VALUES ($1, $2, $3)
                 ON CONFLICT (ns, key) DO UPDATE SET value = EXCLUDED.value",
                self.sql().entries
            ))
            .await
            .map_err(pg("put"))?;
        c.execute(&st, &[&ns, &key, &sealed])
            .await
            .map_err(pg("put"))?;
        Ok(())
    }

    async fn delete(&self, ns: &str, key: &str) -> Result<bool, StorageError> {
        let c = self.client().await?;
        let st = c
            .prepare_cached(&format!(
                "DELETE FROM {} WHERE ns = $1 AND key = $2",
                self.sql().entries
            ))
            .await
            .map_err(pg("delete"))?;
        Ok(c.execute(&st, &[&ns, &key]).await.map_err(pg("delete"))? > 0)
    }

    async fn list(&self, ns: &str, prefix: &str) -> Result<Vec<String>, StorageError> {
        let c = self.client().await?;
        let (cond, args) = prefix_range("key", prefix, 2);
        let st = c
            .prepare_cached(&format!(
                "SELECT key FROM {} WHERE ns = $1 AND {cond} ORDER BY key",
                self.sql().entries
            ))
            .await
            .map_err(pg("list"))?;
        let mut params: Vec<&(dyn ToSql + Sync)> = vec![&ns];
        for a in &args {
            params.push(a);
        }
        let rows = c.query(&st, &params).await.map_err(pg("list"))?;
        Ok(rows.iter().map(|r| r.get(0)).collect())
    }

    async fn namespaces(&self) -> Result<Vec<String>, StorageError> {
        let c = self.client().await?;
        let rows = c
            .query(
                &format!("SELECT DISTINCT ns FROM {} ORDER BY ns", self.sql().entries),
                &[],
            )
            .await
            .map_err(pg("namespaces"))?;
        Ok(rows.iter().map(|r| r.get(0)).collect())
    }

    async fn delete_prefix(&self, ns: &str, prefix: &str) -> Result<u64, StorageError> {
        let c = self.client().await?;
        let (cond, args) = prefix_range("key", prefix, 2);
        let st = c
            .prepare_cached(&format!(
                "DELETE FROM {} WHERE ns = $1 AND {cond}",
                self.sql().entries
            ))
            .await
            .map_err(pg("delete prefix"))?;
        let mut params: Vec<&(dyn ToSql + Sync)> = vec![&ns];
        for a in &args {
            params.push(a);
        }
        c.execute(&st, &params).await.map_err(pg("delete prefix"))
    }

    async fn modify(&self, ns: &str, key: &str, f: Modify) -> Result<Option<Plain>, StorageError> {
        let mut c = self.client().await?;
        let t = &self.sql().entries;
        let tx = c.transaction().await.map_err(pg("modify"))?;
        let lock_key = format!("{ns}\u{1f}{key}");
        tx.execute(
            "SELECT pg_advisory_xact_lock($1, hashtext($2))",
            &[&LOCK_MODIFY, &lock_key],
        )
        .await
        .map_err(pg("modify"))?;
        let loc = entry_location(ns, key);
        let current = tx
            .query_opt(
                &format!("SELECT value FROM {t} WHERE ns = $1 AND key = $2"),
                &[&ns, &key],
            )
            .await
            .map_err(pg("modify"))?;
        let plain = current
            .map(|r| self.keyring().open(&loc, &r.get::<_, Vec<u8>>(0)))
            .transpose()?;
        let out = match f(plain.as_deref().map(Vec::as_slice)).map_err(StorageError::Rejected)? {
            Some(new) => {
                let sealed = self.keyring().seal(&loc, &new)?;
                tx.execute(
                    &format!(
                        "INSERT INTO {t} (ns, key, value) VALUES ($1, $2, $3)
                         ON CONFLICT (ns, key) DO UPDATE SET value = EXCLUDED.value"
                    ),
                    &[&ns, &key, &sealed],
                )
                .await
                .map_err(pg("modify"))?;
                Some(Plain::new(new))
            }
            None => {
                tx.execute(
                    &format!("DELETE FROM {t} WHERE ns = $1 AND key = $2"),
                    &[&ns, &key],
                )
                .await
                .map_err(pg("modify"))?;
                None
            }
        };
        tx.commit().await.map_err(pg("modify"))?;
        Ok(out)
    }

    async fn token_insert(&self, t: StoredToken) -> Result<(), StorageError> {
        let sealed = self.keyring().seal(&token_location(&t.hash), &t.entry)?;
        let c = self.client().await?;
        let st = c
            .prepare_cached(&format!(
                "INSERT INTO {} ({TOKEN_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6)",
                self.sql().tokens
            ))
            .await
            .map_err(pg("token insert"))?;
        let parent = t.parent.map(|p| p.0.to_vec());
        c.execute(
            &st,
            &[
                &t.hash.0.as_slice(),
                &t.accessor_hash.0.as_slice(),
                &parent,
                &t.expire_at,
                &t.uses_left,
                &sealed,
            ],
        )
        .await
        .map_err(pg("token insert"))?;
        Ok(())
    }

    async fn token_get(&self, hash: KeyedHash) -> Result<Option<StoredToken>, StorageError> {
        let c = self.client().await?;
        let st = c
            .prepare_cached(&format!(
                "SELECT {TOKEN_COLUMNS} FROM {} WHERE hash = $1",
                self.sql().tokens
            ))
            .await
            .map_err(pg("token get"))?;
        let row = c
            .query_opt(&st, &[&hash.0.as_slice()])
            .await
            .map_err(pg("token get"))?;
        row.map(|r| token_from_row(self.keyring(), &r)).transpose()
    }

    async fn token_by_accessor(
        &self,
        accessor_hash: KeyedHash,
    ) -> Result<Option<StoredToken>, StorageError> {
        let c = self.client().await?;
        let st = c
            .prepare_cached(&format!(
                "SELECT {TOKEN_COLUMNS} FROM {} WHERE accessor_hash = $1",
                self.sql().tokens
            ))
            .await
            .map_err(pg("token get"))?;
        let row = c
            .query_opt(&st, &[&accessor_hash.0.as_slice()])
            .await
            .map_err(pg("token get"))?;
        row.map(|r| token_from_row(self.keyring(), &r)).transpose()
    }

    async fn token_update(
        &self,
        hash: KeyedHash,
        expire_at: Option<i64>,
        entry: Vec<u8>,
    ) -> Result<bool, StorageError> {
        let sealed = self.keyring().seal(&token_location(&hash), &entry)?;
        drop(Plain::new(entry));
        let c = self.client().await?;
        let st = c
            .prepare_cached(&format!(
                "UPDATE {} SET expire_at = $2, entry = $3 WHERE hash = $1",
                self.sql().tokens
            ))
            .await
            .map_err(pg("token update"))?;
        Ok(c.execute(&st, &[&hash.0.as_slice(), &expire_at, &sealed])
            .await
            .map_err(pg("token update"))?
            > 0)
    }

    async fn token_use(&self, hash: KeyedHash) -> Result<TokenUse, StorageError> {
        let c = self.client().await?;
        let tk = &self.sql().tokens;
        // One statement: spend a use if there is one, and say what the row held.
        let st = c
            .prepare_cached(&format!(
                "WITH spent AS (
                   UPDATE {tk} SET uses_left = uses_left - 1
                   WHERE hash = $1 AND uses_left > 0 RETURNING uses_left)
                 SELECT (SELECT uses_left FROM spent), EXISTS (SELECT 1 FROM spent),
                        (SELECT uses_left IS NULL FROM {tk} WHERE hash = $1)"
            ))
            .await
            .map_err(pg("token use"))?;
        let row = c
            .query_one(&st, &[&hash.0.as_slice()])
            .await
            .map_err(pg("token use"))?;
        let left: Option<i64> = row.get(0);
        let spent: bool = row.get(1);
        let unlimited: Option<bool> = row.get(2);
        Ok(match (spent, left, unlimited) {
            (true, Some(n), _) => TokenUse::Remaining(n),
            (false, _, Some(true)) => TokenUse::Unlimited,
            _ => TokenUse::Exhausted,
        })
    }

    async fn token_delete_tree(
        &self,
        hash: KeyedHash,
        orphan_children: bool,
        now: i64,
    ) -> Result<Vec<StoredToken>, StorageError> {
        let mut c = self.client().await?;
        let (tk, l) = (&self.sql().tokens, &self.sql().leases);
        let tx = c.transaction().await.map_err(pg("token revoke"))?;
        let h = hash.0.as_slice();
        let rows = if orphan_children {
            tx.execute(
                &format!("UPDATE {tk} SET parent = NULL WHERE parent = $1"),
                &[&h],
            )
            .await
            .map_err(pg("token revoke"))?;
            tx.query(
                &format!("DELETE FROM {tk} WHERE hash = $1 RETURNING {TOKEN_COLUMNS}, 0"),
                &[&h],
            )
            .await
            .map_err(pg("token revoke"))?
        } else {
            tx.query(
                &format!(
                    "WITH RECURSIVE sub(h, depth) AS (
                       SELECT hash, 0 FROM {tk} WHERE hash = $1
                       UNION ALL
                       SELECT t.hash, sub.depth + 1 FROM {tk} t JOIN sub ON t.parent = sub.h
                     )
                     DELETE FROM {tk} USING sub WHERE {tk}.hash = sub.h
                     RETURNING {}, sub.depth",
                    TOKEN_COLUMNS
                        .split(", ")
                        .map(|col| format!("{tk}.{col}"))
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
                &[&h],
            )
            .await
            .map_err(pg("token revoke"))?
        };
        let mut out = Vec::with_capacity(rows.len());
        let mut deleted: Vec<Vec<u8>> = Vec::with_capacity(rows.len());
        for r in &rows {
            let depth: i32 = r.get(6);
            deleted.push(r.get(0));
            out.push((depth, token_from_row(self.keyring(), r)?));
        }
        if !deleted.is_empty() {
            // The leases die with their tokens, in this same transaction.
            tx.execute(
                &format!(
                    "UPDATE {l} SET state = 2, expire_at = LEAST(expire_at, $2) WHERE token = ANY($1)"
                ),
                &[&deleted, &now],
            )
            .await
            .map_err(pg("token revoke"))?;
        }
        tx.commit().await.map_err(pg("token revoke"))?;
        out.sort_by_key(|(d, _)| *d);
        Ok(out.into_iter().map(|(_, t)| t).collect())
    }

    async fn tokens_expired(&self, now: i64, n: usize) -> Result<Vec<KeyedHash>, StorageError> {
        let c = self.client().await?;
        let st = c
            .prepare_cached(&format!(
                "SELECT hash FROM {} WHERE expire_at IS NOT NULL AND expire_at <= $1 ORDER BY expire_at LIMIT $2",
                self.sql().tokens
            ))
            .await
            .map_err(pg("tokens expired"))?;
        let rows = c
            .query(&st, &[&now, &limit(n)])
            .await
            .map_err(pg("tokens expired"))?;
        rows.into_iter().map(|r| hash_from(r.get(0))).collect()
    }

    async fn token_count(&self) -> Result<u64, StorageError> {
        let c = self.client().await?;
        let n: i64 = c
            .query_one(&format!("SELECT COUNT(*) FROM {}", self.sql().tokens), &[])
            .await
            .map_err(pg("count"))?
            .get(0);
        Ok(u64_of(n))
    }

    async fn tokens_live_page(
        &self,
        now: i64,
        after: Option<KeyedHash>,
        n: usize,
    ) -> Result<Vec<StoredToken>, StorageError> {
        let after: Vec<u8> = after.map(|h| h.0.to_vec()).unwrap_or_default();
        let c = self.client().await?;
        let st = c
            .prepare_cached(&format!(
                "SELECT {TOKEN_COLUMNS} FROM {} WHERE hash > $1
                 AND (expire_at IS NULL OR expire_at > $2) ORDER BY hash LIMIT $3",
                self.sql().tokens
            ))
            .await
            .map_err(pg("tokens page"))?;
        let rows = c
            .query(&st, &[&after, &now, &limit(n)])
            .await
            .map_err(pg("tokens page"))?;
        rows.iter()
            .map(|r| token_from_row(self.keyring(), r))
            .collect()
    }

    async fn lease_insert(&self, l: StoredLease) -> Result<(), StorageError> {
        let sealed = self.keyring().seal(&lease_location(&l.id), &l.entry)?;
        let mut c = self.client().await?;
        let (tk, lt) = (&self.sql().tokens, &self.sql().leases);
        let tx = c.transaction().await.map_err(pg("lease insert"))?;
        let token = l.token.map(|t| t.0.to_vec());
        if let Some(t) = &token {
            // Locks the token row against a concurrent revocation until commit.
            let live = tx
                .query_opt(
                    &format!("SELECT 1 FROM {tk} WHERE hash = $1 FOR KEY SHARE"),
                    &[t],
                )
                .await
                .map_err(pg("lease insert"))?
                .is_some();
            if !live {
                return Err(StorageError::Rejected(
                    "the token that would own this lease has been revoked".into(),
                ));
            }
        }
        let attempts = i32::try_from(l.attempts).unwrap_or(i32::MAX);
        tx.execute(
            &format!(
                "INSERT INTO {lt} ({LEASE_COLUMNS}, owner) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)"
            ),
            &[
                &l.id,
                &token,
                &l.issue_time,
                &l.expire_at,
                &l.max_expire_at,
                &state_code(l.state),
                &attempts,
                &l.next_attempt_at,
                &l.last_error,
                &sealed,
                &self.shared.server_id,
            ],
        )
        .await
        .map_err(pg("lease insert"))?;
        tx.commit().await.map_err(pg("lease insert"))?;
        Ok(())
    }

    async fn lease_get(&self, id: &str) -> Result<Option<StoredLease>, StorageError> {
        let c = self.client().await?;
        let st = c
            .prepare_cached(&format!(
                "SELECT {LEASE_COLUMNS} FROM {} WHERE id = $1",
                self.sql().leases
            ))
            .await
            .map_err(pg("lease get"))?;
        let row = c.query_opt(&st, &[&id]).await.map_err(pg("lease get"))?;
        row.map(|r| lease_from_row(self.keyring(), &r)).transpose()
    }

    async fn lease_update(
        &self,
        id: &str,
        state: LeaseState,
        expire_at: i64,
        entry: Option<Vec<u8>>,
    ) -> Result<bool, StorageError> {
        let sealed = match entry {
            Some(e) => {
                let s = self.keyring().seal(&lease_location(id), &e)?;
                drop(Plain::new(e));
                Some(s)
            }
            None => None,
        };
        let c = self.client().await?;
        let l = &self.sql().leases;
        // One statement: the state rule is checked on the locked row.
        let st = c
            .prepare_cached(&format!(
                "WITH cur AS (SELECT state FROM {l} WHERE id = $1 FOR UPDATE),
                 upd AS (UPDATE {l} SET state = $2, expire_at = $3, entry = COALESCE($4, entry)
                         WHERE id = $1 AND (state <> 2 OR $2 = 2::smallint) RETURNING 1)
                 SELECT (SELECT state FROM cur), EXISTS (SELECT 1 FROM upd)"
            ))
            .await
            .map_err(pg("lease update"))?;
        let row = c
            .query_one(&st, &[&id, &state_code(state), &expire_at, &sealed])
            .await
            .map_err(pg("lease update"))?;
        let current: Option<i16> = row.get(0);
        let updated: bool = row.get(1);
        match (current, updated) {
            (None, _) => Ok(false),
            (Some(_), true) => Ok(true),
            (Some(_), false) => Err(StorageError::Rejected(
                format!(
                    "lease {id} is being revoked and cannot become {}",
                    state.as_str()
                )
                .into(),
            )),
        }
    }

    async fn lease_delete(&self, id: &str) -> Result<bool, StorageError> {
        let c = self.client().await?;
        let st = c
            .prepare_cached(&format!("DELETE FROM {} WHERE id = $1", self.sql().leases))
            .await
            .map_err(pg("lease delete"))?;
        Ok(c.execute(&st, &[&id]).await.map_err(pg("lease delete"))? > 0)
    }

    async fn leases_due(&self, now: i64, n: usize) -> Result<Vec<StoredLease>, StorageError> {
        let c = self.client().await?;
        let l = &self.sql().leases;
        // Claims what it returns: rows locked by another server's claim are skipped, and
        // a claim lapses after CLAIM_SECS (its server died or hung).
        let st = c
            .prepare_cached(&format!(
                "UPDATE {l} SET claim_owner = $3, claim_until = now() + make_interval(secs => $4)
                 WHERE id IN (
                   SELECT id FROM {l}
                   WHERE (expire_at <= $1 OR state = 2) AND next_attempt_at <= $1
                     AND (claim_owner IS NULL OR claim_owner = $3 OR claim_until < now())
                   ORDER BY expire_at, id LIMIT $2
                   FOR UPDATE SKIP LOCKED)
                 RETURNING {LEASE_COLUMNS}"
            ))
            .await
            .map_err(pg("leases due"))?;
        let rows = c
            .query(
                &st,
                &[
                    &now,
                    &limit(n),
                    &self.shared.server_id,
                    &(CLAIM_SECS as f64),
                ],
            )
            .await
            .map_err(pg("leases due"))?;
        let mut out = rows
            .iter()
            .map(|r| lease_from_row(self.keyring(), r))
            .collect::<Result<Vec<_>, _>>()?;
        out.sort_by(|a, b| (a.expire_at, &a.id).cmp(&(b.expire_at, &b.id)));
        if !out.is_empty() {
            let st = &self.shared.stats;
            st.claim_batches.fetch_add(1, Ordering::Relaxed);
            st.claimed
                .fetch_add(u64::try_from(out.len()).unwrap_or(0), Ordering::Relaxed);
        }
        Ok(out)
    }

    async fn lease_record_failure(
        &self,
        id: &str,
        attempts: u32,
        next_attempt_at: i64,
        error: &str,
    ) -> Result<bool, StorageError> {
        let c = self.client().await?;
        // The claim is released: any server may retry when the time comes.
        let st = c
            .prepare_cached(&format!(
                "UPDATE {} SET attempts = $2, next_attempt_at = $3, last_error = $4,
                 claim_owner = NULL, claim_until = NULL WHERE id = $1",
                self.sql().leases
            ))
            .await
            .map_err(pg("lease failure"))?;
        let attempts = i32::try_from(attempts).unwrap_or(i32::MAX);
        Ok(c.execute(&st, &[&id, &attempts, &next_attempt_at, &error])
            .await
            .map_err(pg("lease failure"))?
            > 0)
    }

    async fn lease_ids_with_prefix(&self, prefix: &str) -> Result<Vec<String>, StorageError> {
        let c = self.client().await?;
        let (cond, args) = prefix_range("id", prefix, 1);
        let st = c
            .prepare_cached(&format!(
                "SELECT id FROM {} WHERE {cond} ORDER BY id",
                self.sql().leases
            ))
            .await
            .map_err(pg("lease ids"))?;
        let params: Vec<&(dyn ToSql + Sync)> =
            args.iter().map(|a| a as &(dyn ToSql + Sync)).collect();
        let rows = c.query(&st, &params).await.map_err(pg("lease ids"))?;
        Ok(rows.iter().map(|r| r.get(0)).collect())
    }

    async fn leases_failing(&self, n: usize) -> Result<Vec<StoredLease>, StorageError> {
        let c = self.client().await?;
        let st = c
            .prepare_cached(&format!(
                "SELECT {LEASE_COLUMNS} FROM {} WHERE attempts > 0 ORDER BY attempts DESC, id LIMIT $1",
                self.sql().leases
            ))
            .await
            .map_err(pg("leases failing"))?;
        let rows = c
            .query(&st, &[&limit(n)])
            .await
            .map_err(pg("leases failing"))?;
        rows.iter()
            .map(|r| lease_from_row(self.keyring(), r))
            .collect()
    }

    async fn lease_count(&self) -> Result<u64, StorageError> {
        let c = self.client().await?;
        let n: i64 = c
            .query_one(&format!("SELECT COUNT(*) FROM {}", self.sql().leases), &[])
            .await
            .map_err(pg("count"))?
            .get(0);
        Ok(u64_of(n))
    }

    async fn leases_failing_count(&self) -> Result<u64, StorageError> {
        let c = self.client().await?;
        let n: i64 = c
            .query_one(
                &format!(
                    "SELECT COUNT(*) FROM {} WHERE attempts > 0",
                    self.sql().leases
                ),
                &[],
            )
            .await
            .map_err(pg("count"))?
            .get(0);
        Ok(u64_of(n))
    }

    async fn leases_delete(&self, ids: &[String]) -> Result<u64, StorageError> {
        let c = self.client().await?;
        let st = c
            .prepare_cached(&format!(
                "DELETE FROM {} WHERE id = ANY($1)",
                self.sql().leases
            ))
            .await
            .map_err(pg("leases delete"))?;
        c.execute(&st, &[&ids]).await.map_err(pg("leases delete"))
    }

    async fn leases_mark_revoking(&self, ids: &[String], now: i64) -> Result<u64, StorageError> {
        let c = self.client().await?;
        let st = c
            .prepare_cached(&format!(
                "UPDATE {} SET state = 2, expire_at = LEAST(expire_at, $2) WHERE id = ANY($1)",
                self.sql().leases
            ))
            .await
            .map_err(pg("leases mark"))?;
        c.execute(&st, &[&ids, &now])
            .await
            .map_err(pg("leases mark"))
    }

    async fn leases_abandon_pending(&self, now: i64) -> Result<u64, StorageError> {
        // Only intents of this process (none at start) or of servers that are dead: a
        // live server's pending issuance is in flight, not abandoned.
        let c = self.client().await?;
        let (l, sv) = (&self.sql().leases, &self.sql().servers);
        c.execute(
            &format!(
                "UPDATE {l} SET state = 2, expire_at = LEAST(expire_at, $1)
                 WHERE state = 0 AND (owner IS NULL OR owner = $2 OR NOT EXISTS (
                   SELECT 1 FROM {sv} WHERE {sv}.id = {l}.owner
                   AND {sv}.heartbeat_at > now() - make_interval(secs => $3)))"
            ),
            &[&now, &self.shared.server_id, &(DEAD_AFTER_SECS as f64)],
        )
        .await
        .map_err(pg("leases abandon"))
    }
}
