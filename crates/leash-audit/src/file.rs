//! The file audit device's writer: one thread per device, group commit, `fsync`.
//!
//! Callers [`Writer::submit`] a finished line and get a reply channel; submitting never
//! blocks (the queue is bounded and a full queue is an immediate failure), so a device
//! whose writes hang — a full FIFO, a dead NFS server — can never hang a request: the
//! broker waits for the reply with a deadline and counts the device as failed.
//!
//! The writer thread takes the first queued line, drains whatever else is queued (up to
//! [`MAX_BATCH_ENTRIES`] lines or [`MAX_BATCH_BYTES`]), writes the batch, calls
//! `sync_data` once, and replies to every caller in the batch with the same outcome.
//! Concurrent requests thus share one `fsync` (group commit). A line is acknowledged only
//! after it was written *and* synced, which is what fail-closed auditing needs (FIFOs and
//! device nodes cannot be synced: for them, written is acknowledged; stdout is flushed).
//!
//! Invariants: lines reach the file in the order the thread dequeued them — the writer
//! thread is the single ordering point of a device; a failed write that left a partial
//! line is followed by a newline before the next batch, so one torn line never swallows
//! the next entry; errors carry the OS error only, never the line.
//!
//! Not here: building or hashing entries (the broker and the core), choosing devices.

use std::fs::{File, OpenOptions, Permissions};
use std::io::{self, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::Duration;

use tokio::sync::oneshot;

use crate::error::AuditError;
use crate::stats::Counters;

/// Lines a device queues before [`Writer::submit`] fails at once.
pub(crate) const QUEUE_CAPACITY: usize = 1024;
/// At most this many lines share one write and one `fsync`.
pub(crate) const MAX_BATCH_ENTRIES: usize = 1024;
/// A batch stops taking lines once it holds this many bytes.
pub(crate) const MAX_BATCH_BYTES: usize = 4 << 20;
/// The mode a file is created with when the `mode` option is `0000` ("leave it alone").
const CREATE_MODE_WHEN_UNSET: u32 = 0o600;

/// The outcome of writing one line: `Ok` once written and synced.
pub(crate) type WriteResult = Result<(), Arc<io::Error>>;

/// Where a writer thread writes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Destination {
    /// A path opened for append: a regular file, a FIFO, a device node.
    File(PathBuf),
    /// The process's standard output (flushed, never synced).
    Stdout,
}

impl Destination {
    fn display(&self) -> String {
        match self {
            Destination::File(p) => p.display().to_string(),
            Destination::Stdout => "stdout".to_owned(),
        }
    }
}

/// Why a line could not even be queued.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum SubmitError {
    /// The queue is full: the writer is stuck or far behind.
    QueueFull,
    /// The device is closing or its thread has ended.
    Closed,
}

impl std::fmt::Display for SubmitError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            SubmitError::QueueFull => "queue full (device stuck or too slow)",
            SubmitError::Closed => "device closed",
        })
    }
}

/// One queued line and where to send its outcome.
struct Job {
    line: Vec<u8>,
    /// Whether the caller waits for the line to be synced (else only written: its
    /// durability then rides on the next synced line, which the writer orders after it).
    sync: bool,
    reply: oneshot::Sender<WriteResult>,
}

/// The caller's side of a device's writer thread.
pub(crate) struct Writer {
    /// `None` once closing: no new lines are accepted.
    tx: RwLock<Option<SyncSender<Job>>>,
    /// Fires when the thread has written everything queued and closed the file.
    done: Mutex<Option<oneshot::Receiver<()>>>,
}

impl Writer {
    /// Starts the writer thread and waits (at most `deadline`) for it to open `dest`.
    /// Opening happens on that thread, off the async executor; if it does not finish in
    /// time the thread closes whatever it opens later and ends.
    pub(crate) async fn start(
        name: &str,
        dest: Destination,
        mode: u32,
        capacity: usize,
        deadline: Duration,
        counters: Arc<Counters>,
    ) -> Result<Writer, AuditError> {
        let open_error = |reason: String| AuditError::Open {
            path: dest.display(),
            reason,
        };
        let (tx, rx) = mpsc::sync_channel::<Job>(capacity.max(1));
        let (ready_tx, ready_rx) = oneshot::channel::<Result<(), String>>();
        let (done_tx, done_rx) = oneshot::channel::<()>();
        let thread_dest = dest.clone();
        std::thread::Builder::new()
            .name(format!("audit {name}"))
            .spawn(move || {
                match open(&thread_dest, mode) {
                    Err(reason) => {
                        let _ = ready_tx.send(Err(reason));
                    }
                    Ok(out) => {
                        // If the broker gave up waiting, `out` is dropped (closed) here.
                        if ready_tx.send(Ok(())).is_ok() {
                            run(out, &rx, &counters);
                        }
                    }
                }
                let _ = done_tx.send(());
            })
            .map_err(|e| open_error(format!("cannot start the writer thread: {e}")))?;

        match tokio::time::timeout(deadline, ready_rx).await {
            Ok(Ok(Ok(()))) => Ok(Writer {
                tx: RwLock::new(Some(tx)),
                done: Mutex::new(Some(done_rx)),
            }),
            Ok(Ok(Err(reason))) => Err(open_error(reason)),
            Ok(Err(_)) => Err(open_error(
                "the writer thread ended before opening".to_owned(),
            )),
            Err(_) => Err(open_error(format!(
                "opening did not finish within {} ms",
                deadline.as_millis()
            ))),
        }
    }

    /// Queues `line` without blocking; the receiver yields the outcome once the line is
    /// written and synced (or failed).
    pub(crate) fn submit(
        &self,
        line: Vec<u8>,
        sync: bool,
    ) -> Result<oneshot::Receiver<WriteResult>, SubmitError> {
        let guard = self.tx.read().unwrap_or_else(PoisonError::into_inner);
        let Some(tx) = guard.as_ref() else {
            return Err(SubmitError::Closed);
        };
        let (reply, outcome) = oneshot::channel();
        match tx.try_send(Job { line, sync, reply }) {
            Ok(()) => Ok(outcome),
            Err(TrySendError::Full(_)) => Err(SubmitError::QueueFull),
            Err(TrySendError::Disconnected(_)) => Err(SubmitError::Closed),
        }
    }

    /// Stops accepting lines, lets the thread write what is queued, sync and close the
    /// file. Waits at most `deadline`; returns whether the thread finished in time (if not,
    /// it finishes on its own once its stuck write returns).
    pub(crate) async fn close(&self, deadline: Duration) -> bool {
        let sender = self
            .tx
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        drop(sender);
        let done = self
            .done
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        match done {
            Some(done) => tokio::time::timeout(deadline, done).await.is_ok(),
            None => true,
        }
    }
}

/// An open destination.
enum Output {
    /// `sync` is true for regular files only: FIFOs and device nodes have no stable
    /// storage behind them (`fdatasync` fails with `EINVAL` on a pipe).
    File {
        file: File,
        sync: bool,
    },
    Stdout(io::Stdout),
}

/// Opens `dest` for append, creating a missing file with `mode` (0 = leave the mode
/// alone). An existing regular file is set to `mode` too, as Vault does, so an audit log
/// never stays world-readable; FIFOs and device nodes are not touched, nor synced.
fn open(dest: &Destination, mode: u32) -> Result<Output, String> {
    let path = match dest {
        Destination::Stdout => return Ok(Output::Stdout(io::stdout())),
        Destination::File(path) => path,
    };
    let create_mode = if mode == 0 {
        CREATE_MODE_WHEN_UNSET
    } else {
        mode
    };
    let file = OpenOptions::new()
        .append(true)
        .create(true)
        .mode(create_mode)
        .open(path)
        .map_err(|e| describe_open_error(path, &e))?;
    let meta = file.metadata().map_err(|e| e.to_string())?;
    let regular = meta.is_file();
    // The creation mode went through the umask; set the exact mode on the open file.
    if mode != 0 && regular && meta.permissions().mode() & 0o7777 != mode {
        file.set_permissions(Permissions::from_mode(mode))
            .map_err(|e| format!("cannot set mode {mode:04o}: {e}"))?;
    }
    Ok(Output::File {
        file,
        sync: regular,
    })
}

fn describe_open_error(path: &Path, e: &io::Error) -> String {
    if e.kind() == io::ErrorKind::NotFound
        && let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty())
        && !parent.is_dir()
    {
        return format!("parent directory {} does not exist", parent.display());
    }
    e.to_string()
}

impl Output {
    /// Writes `buf` whole and makes it durable (files) or flushes it (stdout). Returns
    /// how many bytes reached the destination, even on error, so the caller knows
    /// whether a partial line was left behind.
    fn write_batch(&mut self, buf: &[u8]) -> (usize, io::Result<()>) {
        match self {
            Output::File { file, .. } => write_counting(file, buf),
            Output::Stdout(out) => {
                let mut out = out.lock();
                let (written, result) = write_counting(&mut out, buf);
                (written, result.and_then(|()| out.flush()))
            }
        }
    }

    /// Makes what was written durable (regular files only; a FIFO or device cannot be
    /// synced, and stdout was flushed).
    fn sync(&mut self, counters: &Counters) -> io::Result<()> {
        match self {
            Output::File { file, sync: true } => {
                let r = file.sync_data();
                if r.is_ok() {
                    counters.add_sync();
                }
                r
            }
            _ => Ok(()),
        }
    }
}

/// `write_all` that reports how far it got.
fn write_counting(w: &mut impl Write, buf: &[u8]) -> (usize, io::Result<()>) {
    let mut written = 0;
    while written < buf.len() {
        match w.write(&buf[written..]) {
            Ok(0) => return (written, Err(io::ErrorKind::WriteZero.into())),
            Ok(n) => written += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return (written, Err(e)),
        }
    }
    (written, Ok(()))
}

/// The writer thread's loop: batch, write, sync, reply — until every sender is gone and
/// the queue is empty.
fn run(mut out: Output, rx: &Receiver<Job>, counters: &Counters) {
    let mut buf: Vec<u8> = Vec::new();
    let mut written_only: Vec<oneshot::Sender<WriteResult>> = Vec::new();
    let mut synced: Vec<oneshot::Sender<WriteResult>> = Vec::new();
    // Whether the destination ends at a line boundary (false after a torn write).
    let mut ends_clean = true;
    while let Ok(first) = rx.recv() {
        buf.clear();
        if !ends_clean {
            buf.push(b'\n');
        }
        let mut take = |job: Job, buf: &mut Vec<u8>| {
            buf.extend_from_slice(&job.line);
            if job.sync {
                synced.push(job.reply)
            } else {
                written_only.push(job.reply)
            }
        };
        take(first, &mut buf);
        let mut n = 1;
        while n < MAX_BATCH_ENTRIES && buf.len() < MAX_BATCH_BYTES {
            match rx.try_recv() {
                Ok(job) => {
                    take(job, &mut buf);
                    n += 1;
                }
                Err(_) => break,
            }
        }

        // Hash chain hook (tamper-evident audit): this thread is the single ordering
        // point of the device, so this is where each line will get the hash of the line
        // before it (kept in a variable of this loop, seeded from the file's last line at
        // open) and where the new chain head will be recorded once the batch is synced.

        let (written, result) = out.write_batch(&buf);
        if written > 0 {
            ends_clean = buf[written - 1] == b'\n';
        }
        // Lines that only needed writing are answered now; the rest once synced.
        let result = result.map_err(Arc::new);
        for reply in written_only.drain(..) {
            // A caller that gave up waiting has dropped its receiver; nothing to tell it.
            let _ = reply.send(result.clone());
        }
        let result = match result {
            Ok(()) if !synced.is_empty() => out.sync(counters).map_err(Arc::new),
            other => other,
        };
        if result.is_ok() {
            counters.add_entries(n as u64);
        }
        for reply in synced.drain(..) {
            let _ = reply.send(result.clone());
        }
        buf.shrink_to(MAX_BATCH_BYTES);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn write_counting_reports_partial_writes() {
        struct Short(usize);
        impl Write for Short {
            fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
                if self.0 == 0 {
                    return Err(io::Error::from_raw_os_error(28)); // ENOSPC
                }
                let n = buf.len().min(self.0);
                self.0 -= n;
                Ok(n)
            }
            fn flush(&mut self) -> io::Result<()> {
                Ok(())
            }
        }
        let (n, r) = write_counting(&mut Short(5), b"0123456789");
        assert_eq!(n, 5);
        assert_eq!(r.unwrap_err().raw_os_error(), Some(28));
        let (n, r) = write_counting(&mut Short(100), b"0123456789");
        assert_eq!(n, 10);
        assert!(r.is_ok());
    }

    #[test]
    fn missing_parent_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("nope").join("audit.log");
        let Err(reason) = open(&Destination::File(path), 0o600) else {
            panic!("opened a file in a missing directory")
        };
        assert!(
            reason.contains("parent directory") && reason.contains("nope"),
            "{reason}"
        );
    }

    #[tokio::test]
    async fn submit_after_close_fails_and_close_flushes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.log");
        let counters = Arc::new(Counters::default());
        let w = Writer::start(
            "t/",
            Destination::File(path.clone()),
            0o600,
            8,
            Duration::from_secs(5),
            counters.clone(),
        )
        .await
        .unwrap();
        let rx = w.submit(b"{\"a\":1}\n".to_vec(), true).unwrap();
        assert!(w.close(Duration::from_secs(5)).await);
        assert!(rx.await.unwrap().is_ok());
        assert_eq!(
            w.submit(b"x\n".to_vec(), true).unwrap_err(),
            SubmitError::Closed
        );
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "{\"a\":1}\n");
        assert_eq!(counters.snapshot("t/").entries, 1);
    }
}
