//! The writer thread, its savepoints, the WAL checkpointer and connection tuning.

use std::path::Path;
use std::sync::mpsc;

use rusqlite::Connection;

use super::{Completion, Job, MAX_BATCH, io};
use crate::StorageError;

/// Page cache of the writer connection, in KiB: token and lease tables are written at
/// random keys, and a cache that holds their hot pages turns page reads into memory hits.
pub(super) const WRITER_CACHE_KIB: i64 = 64 * 1024;
/// Page cache of each read connection, in KiB.
pub(super) const READER_CACHE_KIB: i64 = 16 * 1024;
/// Memory-mapped I/O window: reads come straight from the OS page cache, without a
/// copy per page.
pub(super) const MMAP_BYTES: i64 = 256 * 1024 * 1024;

pub(super) fn tune(c: &Connection, cache_kib: i64) -> Result<(), StorageError> {
    c.pragma_update(None, "cache_size", -cache_kib)
        .map_err(io)?;
    c.pragma_update(None, "mmap_size", MMAP_BYTES).map_err(io)?;
    Ok(())
}

/// How often the checkpointer copies the WAL into the database.
pub(super) const CHECKPOINT_EVERY: std::time::Duration = std::time::Duration::from_millis(250);
/// WAL length (in 4 KiB frames, so 64 MiB) past which the checkpointer rewinds the log.
pub(super) const RESTART_FRAMES: i64 = 16_384;

/// Copies committed WAL frames into the database file beside the writer.
///
/// Every round runs a `PASSIVE` checkpoint, which never blocks the writer or readers.
/// Under a steady stream of commits a passive checkpoint never catches up completely,
/// so the log would never be rewound and would grow without bound; once it passes
/// [`RESTART_FRAMES`], a `RESTART` checkpoint briefly holds new commits back while it
/// copies the few frames the passive rounds left, and the next commit starts the log
/// from the beginning. Stops when told to or when its channel closes.
pub(super) fn checkpoint_loop(path: &Path, stop: &mpsc::Receiver<()>) {
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

pub(super) fn in_savepoint<T>(
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

pub(super) fn writer_loop(conn: Connection, rx: mpsc::Receiver<Job>) {
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
