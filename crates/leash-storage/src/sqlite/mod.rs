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

use rusqlite::{Connection, OpenFlags, OptionalExtension, params};
use tokio::sync::oneshot;

use crate::StorageError;
use crate::barrier::Keyring;

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

mod rows;
mod store;
mod writer;

use writer::{
    READER_CACHE_KIB, WRITER_CACHE_KIB, checkpoint_loop, in_savepoint, tune, writer_loop,
};

#[cfg(test)]
mod tests;
