//! The embedded SQLite backend (WAL, `synchronous = FULL`).
//!
//! One writer thread owns the only write connection and commits in groups: it takes the
//! first queued job, drains whatever else queued up meanwhile (up to [`MAX_BATCH`]), runs
//! each job in its own savepoint (so one failing job cannot undo the others), commits
//! once — one fsync of the WAL for the whole batch — and only then answers every caller.
//! A caller therefore never hears `Ok` before its write is on disk, and concurrent
//! callers share syncs.
//!
//! Reads go to a small pool of read-only connections on blocking threads; WAL lets them
//! run beside the writer and see every committed batch.
//!
//! Values are sealed by the keyring before they reach SQLite (in the caller's thread,
//! keeping the writer lean); only `modify` and `token_delete_tree` open values inside the
//! writer, because they must read and write atomically.
//!
//! Leases are rows indexed by expiry: `open` never reads the `leases` table (beyond
//! creating it), so startup takes the same time with 10 or 10 million leases.

use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use rusqlite::{Connection, OpenFlags, OptionalExtension, params};
use tokio::sync::oneshot;

use crate::barrier::{KeyedHash, Keyring};
use crate::{LeaseState, Modify, Plain, Storage, StorageError, StoredLease, StoredToken, TokenUse};

/// Most jobs committed in one transaction.
const MAX_BATCH: usize = 512;
/// Idle read connections kept open.
const MAX_IDLE_READERS: usize = 16;
/// Name of the database file inside the data directory.
pub const DB_FILE: &str = "leash.db";
const KEYCHECK_PLAINTEXT: &[u8] = b"leash keycheck v1";
const KEYCHECK_LOCATION: &str = "meta/keycheck";

type Completion = Box<dyn FnOnce(Result<(), String>) + Send>;
type Job = Box<dyn FnOnce(&Connection) -> Completion + Send>;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value BLOB NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS entries (
    ns TEXT NOT NULL, key TEXT NOT NULL, value BLOB NOT NULL,
    PRIMARY KEY (ns, key)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS tokens (
    hash BLOB PRIMARY KEY,
    accessor_hash BLOB NOT NULL UNIQUE,
    parent BLOB,
    expire_at INTEGER,
    uses_left INTEGER,
    entry BLOB NOT NULL) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS tokens_parent ON tokens(parent) WHERE parent IS NOT NULL;
CREATE INDEX IF NOT EXISTS tokens_expire ON tokens(expire_at) WHERE expire_at IS NOT NULL;
CREATE TABLE IF NOT EXISTS leases (
    id TEXT PRIMARY KEY,
    token BLOB,
    issue_time INTEGER NOT NULL,
    expire_at INTEGER NOT NULL,
    max_expire_at INTEGER NOT NULL,
    state INTEGER NOT NULL,
    attempts INTEGER NOT NULL,
    next_attempt_at INTEGER NOT NULL,
    last_error TEXT,
    entry BLOB NOT NULL) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS leases_expire ON leases(expire_at, id, next_attempt_at);
CREATE INDEX IF NOT EXISTS leases_revoking ON leases(expire_at, id, next_attempt_at) WHERE state = 2;
CREATE INDEX IF NOT EXISTS leases_token ON leases(token) WHERE token IS NOT NULL;
CREATE INDEX IF NOT EXISTS leases_failing ON leases(attempts) WHERE attempts > 0;
CREATE INDEX IF NOT EXISTS leases_pending ON leases(id) WHERE state = 0;
";

fn io(e: rusqlite::Error) -> StorageError {
    match e {
        rusqlite::Error::SqliteFailure(f, _)
            if f.code == rusqlite::ErrorCode::ConstraintViolation =>
        {
            StorageError::Conflict("a record with the same identity exists".into())
        }
        other => StorageError::database("sqlite", other),
    }
}

struct ReaderPool {
    path: PathBuf,
    idle: Mutex<Vec<Connection>>,
}

impl ReaderPool {
    fn take(&self) -> Result<Connection, StorageError> {
        if let Some(c) = self.idle.lock().map_err(|_| StorageError::Closed)?.pop() {
            return Ok(c);
        }
        let c = Connection::open_with_flags(
            &self.path,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(io)?;
        c.busy_timeout(std::time::Duration::from_secs(5))
            .map_err(io)?;
        tune(&c, READER_CACHE_KIB)?;
        Ok(c)
    }

    fn give(&self, c: Connection) {
        if let Ok(mut idle) = self.idle.lock()
            && idle.len() < MAX_IDLE_READERS
        {
            idle.push(c);
        }
    }
}

/// SQLite storage in a data directory.
pub struct SqliteStorage {
    keyring: Arc<Keyring>,
    jobs: Option<mpsc::Sender<Job>>,
    writer: Option<std::thread::JoinHandle<()>>,
    checkpointer: Option<(mpsc::Sender<()>, std::thread::JoinHandle<()>)>,
    readers: Arc<ReaderPool>,
}

impl Drop for SqliteStorage {
    /// Stops the writer after the jobs already queued, and waits for it so the database
    /// is closed (and its WAL checkpointed) when the storage is gone.
    fn drop(&mut self) {
        // Readers close first: SQLite checkpoints and removes the WAL only when the last
        // connection to close is a writable one.
        if let Ok(mut idle) = self.readers.idle.lock() {
            idle.clear();
        }
        if let Some((stop, t)) = self.checkpointer.take() {
            let _ = stop.send(());
            let _ = t.join();
        }
        self.jobs.take();
        if let Some(w) = self.writer.take() {
            let _ = w.join();
        }
    }
}

impl SqliteStorage {
    /// Opens (or initialises) the database in `dir` with `keyring`. A data directory
    /// initialised with another key is refused with [`StorageError::WrongKey`] before
    /// anything is written.
    pub fn open(dir: &Path, keyring: Keyring) -> Result<SqliteStorage, StorageError> {
        // A new data directory is private to the server's user (0700); an existing one
        // keeps the mode its operator gave it.
        use std::os::unix::fs::DirBuilderExt;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|e| {
                StorageError::file(format!("cannot create data directory {}", dir.display()), e)
            })?;
        let path = dir.join(DB_FILE);
        // Check the key before changing anything (not even a checkpoint of the WAL).
        let has_meta = check_key(&path, &keyring)?;
        let conn = Connection::open(&path).map_err(|e| StorageError::database("open", e))?;
        if !has_meta {
            // SQLite gives its -wal and -shm files the database file's mode.
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).map_err(
                |e| StorageError::file(format!("cannot restrict {}", path.display()), e),
            )?;
        }
        conn.busy_timeout(std::time::Duration::from_secs(5))
            .map_err(io)?;

        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(io)?;
        conn.pragma_update(None, "synchronous", "FULL")
            .map_err(io)?;
        conn.pragma_update(None, "cache_size", -WRITER_CACHE_KIB)
            .map_err(io)?;
        // The writer never checkpoints: a checkpoint copies and fsyncs many pages, and
        // commits queued behind it would stall for its whole length. A checkpointer
        // thread does it beside the writer instead (see `checkpoint_loop`).
        conn.pragma_update(None, "wal_autocheckpoint", 0)
            .map_err(io)?;
        conn.execute_batch(SCHEMA).map_err(io)?;
        if !has_meta {
            let sealed = keyring.seal(KEYCHECK_LOCATION, KEYCHECK_PLAINTEXT)?;
            conn.execute(
                "INSERT INTO meta (key, value) VALUES ('keycheck', ?1)",
                params![sealed],
            )
            .map_err(io)?;
        }

        let (tx, rx) = mpsc::channel::<Job>();
        let writer = std::thread::Builder::new()
            .name("leash-sqlite-writer".into())
            .spawn(move || writer_loop(conn, rx))
            .map_err(|e| StorageError::file("cannot start the storage writer thread", e))?;

        let (stop_tx, stop_rx) = mpsc::channel::<()>();
        let ckpt_path = path.clone();
        let checkpointer = std::thread::Builder::new()
            .name("leash-sqlite-checkpoint".into())
            .spawn(move || checkpoint_loop(&ckpt_path, &stop_rx))
            .map_err(|e| StorageError::file("cannot start the checkpointer thread", e))?;

        Ok(SqliteStorage {
            keyring: Arc::new(keyring),
            jobs: Some(tx),
            writer: Some(writer),
            checkpointer: Some((stop_tx, checkpointer)),
            readers: Arc::new(ReaderPool {
                path,
                idle: Mutex::new(Vec::new()),
            }),
        })
    }

    async fn write<T, F>(&self, f: F) -> Result<T, StorageError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection, &Keyring) -> Result<T, StorageError> + Send + 'static,
    {
        let (tx, rx) = oneshot::channel::<Result<T, StorageError>>();
        let keyring = Arc::clone(&self.keyring);
        let job: Job = Box::new(move |conn: &Connection| {
            let result = in_savepoint(conn, |c| f(c, &keyring));
            Box::new(move |commit: Result<(), String>| {
                let outcome = match commit {
                    Ok(()) => result,
                    Err(e) => Err(StorageError::database("commit", e)),
                };
                let _ = tx.send(outcome);
            })
        });
        self.jobs
            .as_ref()
            .ok_or(StorageError::Closed)?
            .send(job)
            .map_err(|_| StorageError::Closed)?;
        rx.await.map_err(|_| StorageError::Closed)?
    }

    /// Runs a read on a pooled read-only connection, on the calling task's thread.
    ///
    /// Reads are point lookups and short range scans over memory-mapped, mostly cached
    /// pages (tens of microseconds), so they run inline: handing each one to a blocking
    /// thread cost more in thread switches than the read itself. The rare read that must
    /// touch the disk briefly holds one runtime worker.
    async fn read<T, F>(&self, f: F) -> Result<T, StorageError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection, &Keyring) -> Result<T, StorageError> + Send + 'static,
    {
        let conn = self.readers.take()?;
        let r = f(&conn, &self.keyring);
        self.readers.give(conn);
        r
    }
}

/// Reads the key check record without changing a byte of the data directory: the
/// connection is read-only (so closing it never checkpoints the WAL into the database),
/// and `immutable` when there is no WAL to read through (so not even `-wal`/`-shm` files
/// are created). Returns whether the database is initialised; an initialised database
/// whose record the key does not open is [`StorageError::WrongKey`].
fn check_key(path: &Path, keyring: &Keyring) -> Result<bool, StorageError> {
    if !path.exists() {
        return Ok(false);
    }
    let flags = OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let wal = path.with_file_name(format!("{DB_FILE}-wal"));
    let opened = match path.to_str() {
        Some(p) if !wal.exists() => {
            // SQLite URI filenames: `%`, `?` and `#` must be escaped.
            let escaped = p
                .replace('%', "%25")
                .replace('?', "%3f")
                .replace('#', "%23");
            Connection::open_with_flags(
                format!("file:{escaped}?mode=ro&immutable=1"),
                flags | OpenFlags::SQLITE_OPEN_URI,
            )
        }
        _ => Connection::open_with_flags(path, flags),
    };
    let conn = opened.map_err(|e| StorageError::database("open", e))?;
    conn.busy_timeout(std::time::Duration::from_secs(5))
        .map_err(io)?;
    let has_meta = conn
        .query_row(
            "SELECT 1 FROM sqlite_master WHERE type='table' AND name='meta'",
            [],
            |_| Ok(()),
        )
        .optional()
        .map_err(io)?
        .is_some();
    if !has_meta {
        return Ok(false);
    }
    let check: Option<Vec<u8>> = conn
        .query_row("SELECT value FROM meta WHERE key='keycheck'", [], |r| {
            r.get(0)
        })
        .optional()
        .map_err(io)?;
    match check {
        Some(v) => match keyring.open(KEYCHECK_LOCATION, &v) {
            Ok(p) if p.as_slice() == KEYCHECK_PLAINTEXT => Ok(true),
            _ => Err(StorageError::WrongKey),
        },
        None => Err(StorageError::Corrupt(format!(
            "{} has no key check record",
            path.display()
        ))),
    }
}

/// Page cache of the writer connection, in KiB: token and lease tables are written at
/// random keys, and a cache that holds their hot pages turns page reads into memory hits.
const WRITER_CACHE_KIB: i64 = 64 * 1024;
/// Page cache of each read connection, in KiB.
const READER_CACHE_KIB: i64 = 16 * 1024;
/// Memory-mapped I/O window: reads come straight from the OS page cache, without a
/// copy per page.
const MMAP_BYTES: i64 = 256 * 1024 * 1024;

fn tune(c: &Connection, cache_kib: i64) -> Result<(), StorageError> {
    c.pragma_update(None, "cache_size", -cache_kib)
        .map_err(io)?;
    c.pragma_update(None, "mmap_size", MMAP_BYTES).map_err(io)?;
    Ok(())
}

/// How often the checkpointer copies the WAL into the database.
const CHECKPOINT_EVERY: std::time::Duration = std::time::Duration::from_millis(250);
/// WAL length (in 4 KiB frames, so 64 MiB) past which the checkpointer rewinds the log.
const RESTART_FRAMES: i64 = 16_384;

/// Copies committed WAL frames into the database file beside the writer.
///
/// Every round runs a `PASSIVE` checkpoint, which never blocks the writer or readers.
/// Under a steady stream of commits a passive checkpoint never catches up completely,
/// so the log would never be rewound and would grow without bound; once it passes
/// [`RESTART_FRAMES`], a `RESTART` checkpoint briefly holds new commits back while it
/// copies the few frames the passive rounds left, and the next commit starts the log
/// from the beginning. Stops when told to or when its channel closes.
fn checkpoint_loop(path: &Path, stop: &mpsc::Receiver<()>) {
    let conn = match Connection::open(path) {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %e, "storage: checkpointer cannot open the database; the WAL will only be checkpointed at shutdown");
            return;
        }
    };
    let _ = conn.busy_timeout(std::time::Duration::from_secs(5));
    let checkpoint = |mode: &str| -> rusqlite::Result<(i64, i64, i64)> {
        conn.query_row(&format!("PRAGMA wal_checkpoint({mode})"), [], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?))
        })
    };
    loop {
        match stop.recv_timeout(CHECKPOINT_EVERY) {
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            _ => return,
        }
        match checkpoint("PASSIVE") {
            Ok((_, log_frames, _)) if log_frames > RESTART_FRAMES => {
                if let Err(e) = checkpoint("RESTART") {
                    tracing::warn!(error = %e, "storage: WAL restart failed; will retry");
                }
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "storage: checkpoint failed; will retry"),
        }
    }
}

fn in_savepoint<T>(
    conn: &Connection,
    f: impl FnOnce(&Connection) -> Result<T, StorageError>,
) -> Result<T, StorageError> {
    conn.execute_batch("SAVEPOINT job").map_err(io)?;
    let r = f(conn);
    let end = if r.is_ok() {
        "RELEASE job"
    } else {
        "ROLLBACK TO job; RELEASE job"
    };
    match conn.execute_batch(end) {
        Ok(()) => r,
        Err(e) => Err(io(e)),
    }
}

fn writer_loop(conn: Connection, rx: mpsc::Receiver<Job>) {
    while let Ok(first) = rx.recv() {
        if let Err(e) = conn.execute_batch("BEGIN IMMEDIATE") {
            tracing::error!(error = %e, "storage: cannot begin a transaction");
            drop(first); // the caller sees "the storage writer stopped"
            continue;
        }
        let mut done: Vec<Completion> = Vec::with_capacity(16);
        done.push(first(&conn));
        while done.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(job) => done.push(job(&conn)),
                Err(_) => break,
            }
        }
        let commit = conn.execute_batch("COMMIT").map_err(|e| e.to_string());
        if let Err(e) = &commit {
            tracing::error!(error = %e, batch = done.len(), "storage: commit failed");
            let _ = conn.execute_batch("ROLLBACK");
        }
        for c in done {
            c(commit.clone());
        }
    }
}

fn entry_location(ns: &str, key: &str) -> String {
    format!("entries/{ns}/{key}")
}

fn token_location(hash: &KeyedHash) -> String {
    format!("tokens/{}", hex::encode(hash.0))
}

fn hash_from(v: Vec<u8>) -> Result<KeyedHash, StorageError> {
    <[u8; 32]>::try_from(v.as_slice())
        .map(KeyedHash)
        .map_err(|_| StorageError::Corrupt("token hash has the wrong length".into()))
}

type TokenRow = (
    Vec<u8>,
    Vec<u8>,
    Option<Vec<u8>>,
    Option<i64>,
    Option<i64>,
    Vec<u8>,
);

fn token_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<TokenRow> {
    Ok((
        r.get(0)?,
        r.get(1)?,
        r.get(2)?,
        r.get(3)?,
        r.get(4)?,
        r.get(5)?,
    ))
}

fn token_from_row(k: &Keyring, row: TokenRow) -> Result<StoredToken, StorageError> {
    let (hash, acc, parent, expire_at, uses_left, sealed) = row;
    let hash = hash_from(hash)?;
    let entry = k.open(&token_location(&hash), &sealed)?;
    Ok(StoredToken {
        hash,
        accessor_hash: hash_from(acc)?,
        parent: parent.map(hash_from).transpose()?,
        expire_at,
        uses_left,
        entry,
    })
}

const TOKEN_COLUMNS: &str = "hash, accessor_hash, parent, expire_at, uses_left, entry";

fn lease_location(id: &str) -> String {
    format!("leases/{id}")
}

const LEASE_COLUMNS: &str = "id, token, issue_time, expire_at, max_expire_at, state, attempts, next_attempt_at, last_error, entry";

/// A lease row as read, before its entry is opened.
struct LeaseRow {
    id: String,
    token: Option<Vec<u8>>,
    issue_time: i64,
    expire_at: i64,
    max_expire_at: i64,
    state: i64,
    attempts: i64,
    next_attempt_at: i64,
    last_error: Option<String>,
    entry: Vec<u8>,
}

fn lease_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<LeaseRow> {
    Ok(LeaseRow {
        id: r.get(0)?,
        token: r.get(1)?,
        issue_time: r.get(2)?,
        expire_at: r.get(3)?,
        max_expire_at: r.get(4)?,
        state: r.get(5)?,
        attempts: r.get(6)?,
        next_attempt_at: r.get(7)?,
        last_error: r.get(8)?,
        entry: r.get(9)?,
    })
}

fn lease_from_row(k: &Keyring, row: LeaseRow) -> Result<StoredLease, StorageError> {
    let state = LeaseState::from_code(row.state).ok_or_else(|| {
        StorageError::Corrupt(format!(
            "lease {} has an unknown state {}",
            row.id, row.state
        ))
    })?;
    let attempts = u32::try_from(row.attempts).map_err(|_| {
        StorageError::Corrupt(format!("lease {} has an invalid attempt count", row.id))
    })?;
    let entry = k.open(&lease_location(&row.id), &row.entry)?;
    Ok(StoredLease {
        token: row.token.map(hash_from).transpose()?,
        issue_time: row.issue_time,
        expire_at: row.expire_at,
        max_expire_at: row.max_expire_at,
        state,
        attempts,
        next_attempt_at: row.next_attempt_at,
        last_error: row.last_error,
        entry,
        id: row.id,
    })
}

/// Leases due at `?1`, at most `?2`: two ordered, limited index scans (expired;
/// revoking but not yet expired — disjoint), merged. The retry time is in both indexes,
/// so leases waiting for their next attempt are skipped without reading their rows.
fn leases_due_sql() -> String {
    format!(
        "SELECT {LEASE_COLUMNS} FROM (
           SELECT * FROM (SELECT {LEASE_COLUMNS} FROM leases INDEXED BY leases_expire
             WHERE expire_at <= ?1 AND next_attempt_at <= ?1
             ORDER BY expire_at, id LIMIT ?2)
           UNION ALL
           SELECT * FROM (SELECT {LEASE_COLUMNS} FROM leases INDEXED BY leases_revoking
             WHERE state = 2 AND expire_at > ?1 AND next_attempt_at <= ?1
             ORDER BY expire_at, id LIMIT ?2)
         ) ORDER BY expire_at, id LIMIT ?2"
    )
}

/// Leases failing their revocation, at most `?1`, from the partial `leases_failing` index.
fn leases_failing_sql() -> String {
    format!(
        "SELECT {LEASE_COLUMNS} FROM leases WHERE attempts > 0 ORDER BY attempts DESC, id LIMIT ?1"
    )
}

/// Marks the leases of token `?1` for revocation, due at `?2` at the latest.
const MARK_TOKEN_LEASES_REVOKING: &str =
    "UPDATE leases SET state = 2, expire_at = MIN(expire_at, ?2) WHERE token = ?1";

/// Runs a lease query and opens every row.
fn query_leases(
    c: &Connection,
    k: &Keyring,
    sql: &str,
    params: impl rusqlite::Params,
) -> Result<Vec<StoredLease>, StorageError> {
    let mut st = c.prepare_cached(sql).map_err(io)?;
    let rows = st.query_map(params, lease_row).map_err(io)?;
    let mut out = Vec::new();
    for r in rows {
        out.push(lease_from_row(k, r.map_err(io)?)?);
    }
    Ok(out)
}

fn prefix_upper_bound(prefix: &str) -> Option<String> {
    // The smallest string greater than every string starting with `prefix`.
    let mut chars: Vec<char> = prefix.chars().collect();
    while let Some(c) = chars.pop() {
        if let Some(next) = char::from_u32(c as u32 + 1) {
            chars.push(next);
            return Some(chars.into_iter().collect());
        }
    }
    None
}

fn list_keys(c: &Connection, ns: &str, prefix: &str) -> Result<Vec<String>, StorageError> {
    let mut out = Vec::new();
    match prefix_upper_bound(prefix) {
        Some(upper) => {
            let mut st = c
                .prepare_cached(
                    "SELECT key FROM entries WHERE ns = ?1 AND key >= ?2 AND key < ?3 ORDER BY key",
                )
                .map_err(io)?;
            let rows = st
                .query_map(params![ns, prefix, upper], |r| r.get::<_, String>(0))
                .map_err(io)?;
            for r in rows {
                out.push(r.map_err(io)?);
            }
        }
        None => {
            let mut st = c
                .prepare_cached("SELECT key FROM entries WHERE ns = ?1 AND key >= ?2 ORDER BY key")
                .map_err(io)?;
            let rows = st
                .query_map(params![ns, prefix], |r| r.get::<_, String>(0))
                .map_err(io)?;
            for r in rows {
                out.push(r.map_err(io)?);
            }
        }
    }
    Ok(out)
}

#[async_trait]
impl Storage for SqliteStorage {
    fn keyring(&self) -> &Keyring {
        &self.keyring
    }

    fn kind(&self) -> &'static str {
        "sqlite"
    }

    async fn get(&self, ns: &str, key: &str) -> Result<Option<Plain>, StorageError> {
        let (ns, key) = (ns.to_owned(), key.to_owned());
        self.read(move |c, k| {
            let v: Option<Vec<u8>> = c
                .prepare_cached("SELECT value FROM entries WHERE ns = ?1 AND key = ?2")
                .map_err(io)?
                .query_row(params![ns, key], |r| r.get(0))
                .optional()
                .map_err(io)?;
            v.map(|v| k.open(&entry_location(&ns, &key), &v))
                .transpose()
        })
        .await
    }

    async fn put(&self, ns: &str, key: &str, value: Vec<u8>) -> Result<(), StorageError> {
        let sealed = self.keyring.seal(&entry_location(ns, key), &value)?;
        drop(Plain::new(value));
        let (ns, key) = (ns.to_owned(), key.to_owned());
        self.write(move |c, _| {
            c.prepare_cached("INSERT OR REPLACE INTO entries (ns, key, value) VALUES (?1, ?2, ?3)")
                .map_err(io)?
                .execute(params![ns, key, sealed])
                .map_err(io)?;
            Ok(())
        })
        .await
    }

    async fn delete(&self, ns: &str, key: &str) -> Result<bool, StorageError> {
        let (ns, key) = (ns.to_owned(), key.to_owned());
        self.write(move |c, _| {
            let n = c
                .prepare_cached("DELETE FROM entries WHERE ns = ?1 AND key = ?2")
                .map_err(io)?
                .execute(params![ns, key])
                .map_err(io)?;
            Ok(n > 0)
        })
        .await
    }

    async fn list(&self, ns: &str, prefix: &str) -> Result<Vec<String>, StorageError> {
        let (ns, prefix) = (ns.to_owned(), prefix.to_owned());
        self.read(move |c, _| list_keys(c, &ns, &prefix)).await
    }

    async fn namespaces(&self) -> Result<Vec<String>, StorageError> {
        self.read(|c, _| {
            let mut st = c
                .prepare_cached("SELECT DISTINCT ns FROM entries ORDER BY ns")
                .map_err(io)?;
            let rows = st.query_map([], |r| r.get::<_, String>(0)).map_err(io)?;
            let mut out = Vec::new();
            for r in rows {
                out.push(r.map_err(io)?);
            }
            Ok(out)
        })
        .await
    }

    async fn delete_prefix(&self, ns: &str, prefix: &str) -> Result<u64, StorageError> {
        let (ns, prefix) = (ns.to_owned(), prefix.to_owned());
        self.write(move |c, _| {
            let keys = list_keys(c, &ns, &prefix)?;
            let mut st = c
                .prepare_cached("DELETE FROM entries WHERE ns = ?1 AND key = ?2")
                .map_err(io)?;
            for k in &keys {
                st.execute(params![ns, k]).map_err(io)?;
            }
            Ok(keys.len() as u64)
        })
        .await
    }

    async fn modify(&self, ns: &str, key: &str, f: Modify) -> Result<Option<Plain>, StorageError> {
        let (ns, key) = (ns.to_owned(), key.to_owned());
        self.write(move |c, k| {
            let loc = entry_location(&ns, &key);
            let current: Option<Vec<u8>> = c
                .prepare_cached("SELECT value FROM entries WHERE ns = ?1 AND key = ?2")
                .map_err(io)?
                .query_row(params![ns, key], |r| r.get(0))
                .optional()
                .map_err(io)?;
            let plain = current.map(|v| k.open(&loc, &v)).transpose()?;
            match f(plain.as_deref().map(Vec::as_slice)).map_err(StorageError::Rejected)? {
                Some(new) => {
                    let sealed = k.seal(&loc, &new)?;
                    c.prepare_cached(
                        "INSERT OR REPLACE INTO entries (ns, key, value) VALUES (?1, ?2, ?3)",
                    )
                    .map_err(io)?
                    .execute(params![ns, key, sealed])
                    .map_err(io)?;
                    Ok(Some(Plain::new(new)))
                }
                None => {
                    c.prepare_cached("DELETE FROM entries WHERE ns = ?1 AND key = ?2")
                        .map_err(io)?
                        .execute(params![ns, key])
                        .map_err(io)?;
                    Ok(None)
                }
            }
        })
        .await
    }

    async fn token_insert(&self, t: StoredToken) -> Result<(), StorageError> {
        let sealed = self.keyring.seal(&token_location(&t.hash), &t.entry)?;
        self.write(move |c, _| {
            c.prepare_cached(
                "INSERT INTO tokens (hash, accessor_hash, parent, expire_at, uses_left, entry) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            )
            .map_err(io)?
            .execute(params![
                t.hash.0.as_slice(),
                t.accessor_hash.0.as_slice(),
                t.parent.map(|p| p.0.to_vec()),
                t.expire_at,
                t.uses_left,
                sealed
            ])
            .map_err(io)?;
            Ok(())
        })
        .await
    }

    async fn token_get(&self, hash: KeyedHash) -> Result<Option<StoredToken>, StorageError> {
        self.read(move |c, k| {
            let row = c
                .prepare_cached(&format!(
                    "SELECT {TOKEN_COLUMNS} FROM tokens WHERE hash = ?1"
                ))
                .map_err(io)?
                .query_row(params![hash.0.as_slice()], token_row)
                .optional()
                .map_err(io)?;
            row.map(|r| token_from_row(k, r)).transpose()
        })
        .await
    }

    async fn token_by_accessor(
        &self,
        accessor_hash: KeyedHash,
    ) -> Result<Option<StoredToken>, StorageError> {
        self.read(move |c, k| {
            let row = c
                .prepare_cached(&format!(
                    "SELECT {TOKEN_COLUMNS} FROM tokens WHERE accessor_hash = ?1"
                ))
                .map_err(io)?
                .query_row(params![accessor_hash.0.as_slice()], token_row)
                .optional()
                .map_err(io)?;
            row.map(|r| token_from_row(k, r)).transpose()
        })
        .await
    }

    async fn token_update(
        &self,
        hash: KeyedHash,
        expire_at: Option<i64>,
        entry: Vec<u8>,
    ) -> Result<bool, StorageError> {
        let sealed = self.keyring.seal(&token_location(&hash), &entry)?;
        drop(Plain::new(entry));
        self.write(move |c, _| {
            let n = c
                .prepare_cached("UPDATE tokens SET expire_at = ?2, entry = ?3 WHERE hash = ?1")
                .map_err(io)?
                .execute(params![hash.0.as_slice(), expire_at, sealed])
                .map_err(io)?;
            Ok(n > 0)
        })
        .await
    }

    async fn token_use(&self, hash: KeyedHash) -> Result<TokenUse, StorageError> {
        self.write(move |c, _| {
            let left: Option<Option<i64>> = c
                .prepare_cached(
                    "UPDATE tokens SET uses_left = uses_left - 1 WHERE hash = ?1 AND uses_left > 0 RETURNING uses_left",
                )
                .map_err(io)?
                .query_row(params![hash.0.as_slice()], |r| r.get(0))
                .optional()
                .map_err(io)?;
            if let Some(Some(n)) = left {
                return Ok(TokenUse::Remaining(n));
            }
            let current: Option<Option<i64>> = c
                .prepare_cached("SELECT uses_left FROM tokens WHERE hash = ?1")
                .map_err(io)?
                .query_row(params![hash.0.as_slice()], |r| r.get(0))
                .optional()
                .map_err(io)?;
            Ok(match current {
                Some(None) => TokenUse::Unlimited,
                _ => TokenUse::Exhausted,
            })
        })
        .await
    }

    async fn token_delete_tree(
        &self,
        hash: KeyedHash,
        orphan_children: bool,
        now: i64,
    ) -> Result<Vec<StoredToken>, StorageError> {
        self.write(move |c, k| {
            let rows: Vec<TokenRow> = if orphan_children {
                c.prepare_cached("UPDATE tokens SET parent = NULL WHERE parent = ?1")
                    .map_err(io)?
                    .execute(params![hash.0.as_slice()])
                    .map_err(io)?;
                let mut st = c
                    .prepare_cached(&format!(
                        "SELECT {TOKEN_COLUMNS} FROM tokens WHERE hash = ?1"
                    ))
                    .map_err(io)?;
                let r = st
                    .query_map(params![hash.0.as_slice()], token_row)
                    .map_err(io)?;
                r.collect::<Result<_, _>>().map_err(io)?
            } else {
                let mut st = c
                    .prepare_cached(&format!(
                        "WITH RECURSIVE sub(h, depth) AS (
                           SELECT hash, 0 FROM tokens WHERE hash = ?1
                           UNION ALL
                           SELECT t.hash, sub.depth + 1 FROM tokens t JOIN sub ON t.parent = sub.h
                         )
                         SELECT {} FROM tokens JOIN sub ON tokens.hash = sub.h ORDER BY sub.depth",
                        TOKEN_COLUMNS
                            .split(", ")
                            .map(|col| format!("tokens.{col}"))
                            .collect::<Vec<_>>()
                            .join(", ")
                    ))
                    .map_err(io)?;
                let r = st
                    .query_map(params![hash.0.as_slice()], token_row)
                    .map_err(io)?;
                r.collect::<Result<_, _>>().map_err(io)?
            };
            let mut del = c
                .prepare_cached("DELETE FROM tokens WHERE hash = ?1")
                .map_err(io)?;
            // The leases die with their token: marked (never deleted) in this same
            // transaction, so none outlives the revocation unnoticed.
            let mut mark = c.prepare_cached(MARK_TOKEN_LEASES_REVOKING).map_err(io)?;
            let mut out = Vec::with_capacity(rows.len());
            for row in rows {
                del.execute(params![row.0.as_slice()]).map_err(io)?;
                mark.execute(params![row.0.as_slice(), now]).map_err(io)?;
                out.push(token_from_row(k, row)?);
            }
            Ok(out)
        })
        .await
    }

    async fn tokens_expired(&self, now: i64, limit: usize) -> Result<Vec<KeyedHash>, StorageError> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.read(move |c, _| {
            let mut st = c
                .prepare_cached(
                    "SELECT hash FROM tokens WHERE expire_at IS NOT NULL AND expire_at <= ?1 ORDER BY expire_at LIMIT ?2",
                )
                .map_err(io)?;
            let rows = st.query_map(params![now, limit], |r| r.get::<_, Vec<u8>>(0)).map_err(io)?;
            let mut out = Vec::new();
            for r in rows {
                out.push(hash_from(r.map_err(io)?)?);
            }
            Ok(out)
        })
        .await
    }

    async fn tokens_live_page(
        &self,
        now: i64,
        after: Option<KeyedHash>,
        limit: usize,
    ) -> Result<Vec<StoredToken>, StorageError> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        // The empty blob sorts before every hash.
        let after: Vec<u8> = after.map(|h| h.0.to_vec()).unwrap_or_default();
        self.read(move |c, k| {
            let mut st = c
                .prepare_cached(&format!(
                    "SELECT {TOKEN_COLUMNS} FROM tokens WHERE hash > ?1 \
                     AND (expire_at IS NULL OR expire_at > ?2) ORDER BY hash LIMIT ?3"
                ))
                .map_err(io)?;
            let rows = st
                .query_map(params![after.as_slice(), now, limit], token_row)
                .map_err(io)?;
            let mut out = Vec::new();
            for r in rows {
                out.push(token_from_row(k, r.map_err(io)?)?);
            }
            Ok(out)
        })
        .await
    }

    async fn token_count(&self) -> Result<u64, StorageError> {
        self.read(|c, _| {
            let n: i64 = c
                .query_row("SELECT COUNT(*) FROM tokens", [], |r| r.get(0))
                .map_err(io)?;
            Ok(u64::try_from(n).unwrap_or(0))
        })
        .await
    }

    async fn lease_insert(&self, l: StoredLease) -> Result<(), StorageError> {
        let sealed = self.keyring.seal(&lease_location(&l.id), &l.entry)?;
        self.write(move |c, _| {
            if let Some(t) = &l.token {
                let live = c
                    .prepare_cached("SELECT 1 FROM tokens WHERE hash = ?1")
                    .map_err(io)?
                    .query_row(params![t.0.as_slice()], |_| Ok(()))
                    .optional()
                    .map_err(io)?
                    .is_some();
                if !live {
                    return Err(StorageError::Rejected(
                        "the token that would own this lease has been revoked".into(),
                    ));
                }
            }
            c.prepare_cached(&format!(
                "INSERT INTO leases ({LEASE_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)"
            ))
            .map_err(io)?
            .execute(params![
                l.id,
                l.token.map(|t| t.0.to_vec()),
                l.issue_time,
                l.expire_at,
                l.max_expire_at,
                l.state.code(),
                i64::from(l.attempts),
                l.next_attempt_at,
                l.last_error,
                sealed
            ])
            .map_err(io)?;
            Ok(())
        })
        .await
    }

    async fn lease_get(&self, id: &str) -> Result<Option<StoredLease>, StorageError> {
        let id = id.to_owned();
        self.read(move |c, k| {
            let row = c
                .prepare_cached(&format!("SELECT {LEASE_COLUMNS} FROM leases WHERE id = ?1"))
                .map_err(io)?
                .query_row(params![id], lease_row)
                .optional()
                .map_err(io)?;
            row.map(|r| lease_from_row(k, r)).transpose()
        })
        .await
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
                let s = self.keyring.seal(&lease_location(id), &e)?;
                drop(Plain::new(e));
                Some(s)
            }
            None => None,
        };
        let id = id.to_owned();
        self.write(move |c, _| {
            let current: Option<i64> = c
                .prepare_cached("SELECT state FROM leases WHERE id = ?1")
                .map_err(io)?
                .query_row(params![id], |r| r.get(0))
                .optional()
                .map_err(io)?;
            let Some(current) = current else {
                return Ok(false);
            };
            if current == LeaseState::Revoking.code() && state != LeaseState::Revoking {
                return Err(StorageError::Rejected(
                    format!(
                        "lease {id} is being revoked and cannot become {}",
                        state.as_str()
                    )
                    .into(),
                ));
            }
            c.prepare_cached(
                "UPDATE leases SET state = ?2, expire_at = ?3, entry = COALESCE(?4, entry) WHERE id = ?1",
            )
            .map_err(io)?
            .execute(params![id, state.code(), expire_at, sealed])
            .map_err(io)?;
            Ok(true)
        })
        .await
    }

    async fn lease_delete(&self, id: &str) -> Result<bool, StorageError> {
        let id = id.to_owned();
        self.write(move |c, _| {
            let n = c
                .prepare_cached("DELETE FROM leases WHERE id = ?1")
                .map_err(io)?
                .execute(params![id])
                .map_err(io)?;
            Ok(n > 0)
        })
        .await
    }

    async fn leases_due(&self, now: i64, limit: usize) -> Result<Vec<StoredLease>, StorageError> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let sql = leases_due_sql();
        self.read(move |c, k| query_leases(c, k, &sql, params![now, limit]))
            .await
    }

    async fn lease_record_failure(
        &self,
        id: &str,
        attempts: u32,
        next_attempt_at: i64,
        error: &str,
    ) -> Result<bool, StorageError> {
        let (id, error) = (id.to_owned(), error.to_owned());
        self.write(move |c, _| {
            let n = c
                .prepare_cached(
                    "UPDATE leases SET attempts = ?2, next_attempt_at = ?3, last_error = ?4 WHERE id = ?1",
                )
                .map_err(io)?
                .execute(params![id, i64::from(attempts), next_attempt_at, error])
                .map_err(io)?;
            Ok(n > 0)
        })
        .await
    }

    async fn lease_ids_with_prefix(&self, prefix: &str) -> Result<Vec<String>, StorageError> {
        let prefix = prefix.to_owned();
        self.read(move |c, _| {
            let mut out = Vec::new();
            let mut push = |rows: rusqlite::MappedRows<'_, _>| -> Result<(), StorageError> {
                for r in rows {
                    out.push(r.map_err(io)?);
                }
                Ok(())
            };
            let id = |r: &rusqlite::Row<'_>| r.get::<_, String>(0);
            match prefix_upper_bound(&prefix) {
                Some(upper) => {
                    let mut st = c
                        .prepare_cached(
                            "SELECT id FROM leases WHERE id >= ?1 AND id < ?2 ORDER BY id",
                        )
                        .map_err(io)?;
                    push(st.query_map(params![prefix, upper], id).map_err(io)?)?;
                }
                None => {
                    let mut st = c
                        .prepare_cached("SELECT id FROM leases WHERE id >= ?1 ORDER BY id")
                        .map_err(io)?;
                    push(st.query_map(params![prefix], id).map_err(io)?)?;
                }
            }
            Ok(out)
        })
        .await
    }

    async fn leases_failing(&self, limit: usize) -> Result<Vec<StoredLease>, StorageError> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let sql = leases_failing_sql();
        self.read(move |c, k| query_leases(c, k, &sql, params![limit]))
            .await
    }

    async fn leases_delete(&self, ids: &[String]) -> Result<u64, StorageError> {
        let ids = ids.to_vec();
        self.write(move |c, _| {
            let mut st = c
                .prepare_cached("DELETE FROM leases WHERE id = ?1")
                .map_err(io)?;
            let mut n = 0u64;
            for id in &ids {
                n += u64::try_from(st.execute(params![id]).map_err(io)?).unwrap_or(0);
            }
            Ok(n)
        })
        .await
    }

    async fn leases_mark_revoking(&self, ids: &[String], now: i64) -> Result<u64, StorageError> {
        let ids = ids.to_vec();
        self.write(move |c, _| {
            let mut st = c
                .prepare_cached(
                    "UPDATE leases SET state = 2, expire_at = MIN(expire_at, ?2) WHERE id = ?1",
                )
                .map_err(io)?;
            let mut n = 0u64;
            for id in &ids {
                n += u64::try_from(st.execute(params![id, now]).map_err(io)?).unwrap_or(0);
            }
            Ok(n)
        })
        .await
    }

    async fn leases_abandon_pending(&self, now: i64) -> Result<u64, StorageError> {
        self.write(move |c, _| {
            let n = c
                .prepare_cached(
                    "UPDATE leases INDEXED BY leases_pending \
                     SET state = 2, expire_at = MIN(expire_at, ?1) WHERE state = 0",
                )
                .map_err(io)?
                .execute(params![now])
                .map_err(io)?;
            Ok(u64::try_from(n).unwrap_or(0))
        })
        .await
    }

    async fn leases_failing_count(&self) -> Result<u64, StorageError> {
        self.read(|c, _| {
            let n: i64 = c
                .query_row(
                    "SELECT COUNT(*) FROM leases INDEXED BY leases_failing WHERE attempts > 0",
                    [],
                    |r| r.get(0),
                )
                .map_err(io)?;
            Ok(u64::try_from(n).unwrap_or(0))
        })
        .await
    }

    async fn lease_count(&self) -> Result<u64, StorageError> {
        self.read(|c, _| {
            let n: i64 = c
                .query_row("SELECT COUNT(*) FROM leases", [], |r| r.get(0))
                .map_err(io)?;
            Ok(u64::try_from(n).unwrap_or(0))
        })
        .await
    }
}

#[cfg(test)]
mod tests;
