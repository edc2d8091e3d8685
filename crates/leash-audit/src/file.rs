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
//! The writer thread also keeps the device's hash chain (see `chain`): it appends
//! `"prev_hash"` (and on a genesis line `"chain_genesis"`) to each line as it batches
//! it, continues from the file's last line when it opens the file, and puts the chain
//! back where the file really ends after a failed write. It rotates regular files between
//! batches (see `rotate`); a failed rotation fails the batch, like a failed write.
//!
//! Not here: building or hashing entries (the broker and the core), choosing devices.

use std::fs::{File, OpenOptions, Permissions};
use std::io::{self, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::{Duration, SystemTime};

use leash_types::{Clock as _, SystemClock};
use tokio::sync::oneshot;

use crate::chain;
use crate::error::AuditError;
use crate::rotate::{self, Rotation};
use crate::stats::Counters;

/// Lines a device queues before [`Writer::submit`] fails at once.
pub(crate) const QUEUE_CAPACITY: usize = 1024;
/// At most this many lines share one write and one `fsync`.
pub(crate) const MAX_BATCH_ENTRIES: usize = 1024;
/// A batch stops taking lines once it holds this many bytes.
pub(crate) const MAX_BATCH_BYTES: usize = 4 << 20;
/// The mode a file is created with when the `mode` option is `0000` ("leave it alone").
const CREATE_MODE_WHEN_UNSET: u32 = 0o600;

/// The outcome of writing one line: `Ok` once written and synced (sent, for a socket).
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
pub(crate) struct Job {
    pub(crate) line: Vec<u8>,
    /// Whether the caller waits for the line to be synced (else only written: its
    /// durability then rides on the next synced line, which the writer orders after it).
    pub(crate) sync: bool,
    pub(crate) reply: oneshot::Sender<WriteResult>,
}

/// The caller's side of a device's writer thread.
pub(crate) struct Writer {
    /// `None` once closing: no new lines are accepted.
    tx: RwLock<Option<SyncSender<Job>>>,
    /// Fires when the thread has written everything queued and closed the file.
    done: Mutex<Option<oneshot::Receiver<()>>>,
}

impl Writer {
    /// A writer over a thread that another device kind started (the socket device):
    /// `tx` feeds it, `done` fires when it has ended.
    pub(crate) fn from_parts(tx: SyncSender<Job>, done: oneshot::Receiver<()>) -> Writer {
        Writer {
            tx: RwLock::new(Some(tx)),
            done: Mutex::new(Some(done)),
        }
    }

    /// Starts the writer thread and waits (at most `deadline`) for it to open `dest`.
    /// Opening happens on that thread, off the async executor; if it does not finish in
    /// time the thread closes whatever it opens later and ends.
    pub(crate) async fn start(
        name: &str,
        dest: Destination,
        mode: u32,
        rotation: Rotation,
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
                match open(&thread_dest, mode).and_then(|out| {
                    let chain = ChainState::at_open(&out)?;
                    Ok((out, chain))
                }) {
                    Err(reason) => {
                        let _ = ready_tx.send(Err(reason));
                    }
                    Ok((out, chain)) => {
                        if let Output::File { path, .. } = &out
                            && let Err(e) = rotate::apply_retention(path, rotation.retention)
                        {
                            tracing::warn!(device = %path.display(), error = %e, "audit retention could not delete old rotated files");
                        }
                        // If the broker gave up waiting, `out` is dropped (closed) here.
                        if ready_tx.send(Ok(())).is_ok() {
                            run(out, chain, &rotation, mode, &rx, &counters);
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
        path: PathBuf,
        /// Bytes in the file (for rotation by size).
        size: u64,
        /// When the file was created or opened (for rotation by age).
        opened: SystemTime,
        /// Whether `open` created the file (it did not exist).
        created: bool,
        /// Set when a rotation renamed the file but could not open the new one.
        renamed: bool,
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
    // Create the file only if it is new (so "did we create it" has no race with another
    // process); otherwise open what is there.
    let (file, existed) = match OpenOptions::new()
        .append(true)
        .create_new(true)
        .mode(create_mode)
        .open(path)
    {
        Ok(f) => (f, false),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => (
            OpenOptions::new()
                .append(true)
                .open(path)
                .map_err(|e| describe_open_error(path, &e))?,
            true,
        ),
        Err(e) => return Err(describe_open_error(path, &e)),
    };
    let meta = file.metadata().map_err(|e| e.to_string())?;
    let regular = meta.is_file();
    let current = meta.permissions().mode() & 0o7777;
    // A new file's creation mode went through the umask: set the exact mode. An
    // existing file is never loosened (an audit device must not be a way to make any
    // file the server can open world-writable): only bits `mode` lacks are removed.
    let wanted = if existed { current & mode } else { mode };
    if mode != 0 && regular && current != wanted {
        file.set_permissions(Permissions::from_mode(wanted))
            .map_err(|e| format!("cannot set mode {wanted:04o}: {e}"))?;
    }
    let opened = if existed {
        meta.created().unwrap_or_else(|_| SystemClock.now())
    } else {
        SystemClock.now()
    };
    Ok(Output::File {
        file,
        sync: regular,
        path: path.clone(),
        size: meta.len(),
        opened,
        created: !existed,
        renamed: false,
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
            Output::File { file, size, .. } => {
                let (n, r) = write_counting(file, buf);
                *size += n as u64;
                (n, r)
            }
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
            Output::File {
                file, sync: true, ..
            } => {
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
pub(crate) fn write_counting(w: &mut impl Write, buf: &[u8]) -> (usize, io::Result<()>) {
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

/// The chain position of a device: the hash of its last line, and whether the next line
/// starts a chain (and why).
struct ChainState {
    head: [u8; 32],
    /// `Some(reason)`: the next line is a genesis line.
    genesis: Option<&'static str>,
    /// Whether the destination ends at a line boundary (false after a torn write).
    ends_clean: bool,
}

impl ChainState {
    /// Where the chain stands in a freshly opened destination: after the file's last line,
    /// or at a new genesis for a missing or empty file, a FIFO, a device or stdout.
    fn at_open(out: &Output) -> Result<ChainState, String> {
        let genesis = |reason| ChainState {
            head: [0; 32],
            genesis: Some(reason),
            ends_clean: true,
        };
        match out {
            Output::File {
                path,
                sync: true,
                created,
                ..
            } => {
                let mut reader = File::open(path).map_err(|e| {
                    format!("cannot read the last line to continue the hash chain: {e}")
                })?;
                match chain::read_last_line(&mut reader).map_err(|e| {
                    format!("cannot read the last line to continue the hash chain: {e}")
                })? {
                    None if *created => Ok(genesis("new file: the file did not exist")),
                    None => Ok(genesis("the file was empty when the device opened it")),
                    Some((last, ends_clean)) => Ok(ChainState {
                        head: chain::line_hash(&last),
                        genesis: None,
                        ends_clean,
                    }),
                }
            }
            _ => Ok(genesis(
                "stream destination (FIFO, device or stdout): a chain starts at each open",
            )),
        }
    }
}

/// A fresh 32-byte genesis nonce, in hex.
pub(crate) fn genesis_nonce() -> io::Result<String> {
    let mut nonce = [0u8; 32];
    getrandom::fill(&mut nonce)
        .map_err(|e| io::Error::other(format!("no randomness for the chain genesis: {e}")))?;
    Ok(hex::encode(nonce))
}

impl Output {
    /// Whether the file is due for rotation under `rot`.
    fn rotation_due(&self, rot: &Rotation) -> bool {
        match self {
            Output::File {
                sync: true,
                size,
                opened,
                renamed,
                ..
            } => {
                *renamed
                    || (rot.bytes > 0 && *size >= rot.bytes)
                    || (!rot.interval.is_zero()
                        && opened.elapsed().is_ok_and(|age| age >= rot.interval))
            }
            _ => false,
        }
    }

    /// Rotates: sync, rename to `<file>.<stamp>`, sync the directory, open a new file.
    /// On error the caller fails the batch; a rename already done is not repeated.
    fn rotate(&mut self, rot: &Rotation, mode: u32) -> io::Result<()> {
        let Output::File {
            file,
            path,
            renamed,
            ..
        } = self
        else {
            return Ok(());
        };
        let path = path.clone();
        if !*renamed {
            file.sync_all()?;
            let rotated = rotate::rename_current(&path)?;
            *renamed = true;
            if rot.compress {
                let spawned = std::thread::Builder::new()
                    .name("audit gzip".to_owned())
                    .spawn(move || {
                        if let Err(e) = rotate::compress(&rotated) {
                            tracing::warn!(file = %rotated.display(), error = %e, "could not compress a rotated audit file; it stays uncompressed");
                        }
                    });
                if let Err(e) = spawned {
                    tracing::warn!(error = %e, "could not start compressing a rotated audit file; it stays uncompressed");
                }
            }
        }
        let new = open(&Destination::File(path.clone()), mode).map_err(io::Error::other)?;
        rotate::sync_dir(&path)?;
        *self = new;
        if let Err(e) = rotate::apply_retention(&path, rot.retention) {
            tracing::warn!(device = %path.display(), error = %e, "audit retention could not delete old rotated files");
        }
        Ok(())
    }
}

/// The writer thread's loop: batch, chain, write, sync, reply — until every sender is
/// gone and the queue is empty. Rotation happens here, between batches.
fn run(
    mut out: Output,
    mut chain: ChainState,
    rotation: &Rotation,
    mode: u32,
    rx: &Receiver<Job>,
    counters: &Counters,
) {
    let mut buf: Vec<u8> = Vec::new();
    let mut written_only: Vec<oneshot::Sender<WriteResult>> = Vec::new();
    let mut synced: Vec<oneshot::Sender<WriteResult>> = Vec::new();
    // (start, end, hash) of each line in `buf`, newline excluded.
    let mut spans: Vec<(usize, usize, [u8; 32])> = Vec::new();
    while let Ok(first) = rx.recv() {
        buf.clear();
        spans.clear();
        let (head_before, genesis_before) = (chain.head, chain.genesis);
        let rotated = if out.rotation_due(rotation) {
            let r = out.rotate(rotation, mode).map_err(Arc::new);
            if r.is_ok() {
                // A torn last line stays in the rotated file; the new file starts clean.
                chain.ends_clean = true;
            }
            r
        } else {
            Ok(())
        };
        if !chain.ends_clean {
            buf.push(b'\n');
        }
        // Hash chain: this thread is the single ordering point of the device, so each
        // line gets the hash of the line before it here.
        let mut take = |job: Job, buf: &mut Vec<u8>| {
            let content = job.line.strip_suffix(b"\n").unwrap_or(&job.line);
            let Some(body) = content.strip_suffix(b"}") else {
                let _ = job.reply.send(Err(Arc::new(io::Error::new(
                    io::ErrorKind::InvalidData,
                    "an audit entry must be a JSON object",
                ))));
                return false;
            };
            let nonce = match chain.genesis {
                Some(reason) => match genesis_nonce() {
                    Ok(nonce) => {
                        chain.head = chain::genesis_hash(&nonce);
                        Some((nonce, reason))
                    }
                    Err(e) => {
                        let _ = job.reply.send(Err(Arc::new(e)));
                        return false;
                    }
                },
                None => None,
            };
            let start = buf.len();
            chain::append_fields(
                body,
                buf,
                nonce.as_ref().map(|(n, r)| (n.as_str(), *r)),
                &chain.head,
            );
            chain.genesis = None;
            chain.head = chain::line_hash(&buf[start..]);
            spans.push((start, buf.len(), chain.head));
            buf.push(b'\n');
            if job.sync {
                synced.push(job.reply)
            } else {
                written_only.push(job.reply)
            }
            true
        };
        let mut n = usize::from(take(first, &mut buf));
        let mut taken = 1;
        while taken < MAX_BATCH_ENTRIES && buf.len() < MAX_BATCH_BYTES {
            match rx.try_recv() {
                Ok(job) => {
                    taken += 1;
                    n += usize::from(take(job, &mut buf));
                }
                Err(_) => break,
            }
        }

        let (written, result) = match rotated {
            Err(e) => (0, Err(e)),
            Ok(()) if spans.is_empty() => (0, Ok(())),
            Ok(()) => {
                let (written, result) = out.write_batch(&buf);
                (written, result.map_err(Arc::new))
            }
        };
        if written < buf.len() {
            // Put the chain where the destination really ends.
            chain.head = head_before;
            chain.genesis = genesis_before;
            for (start, end, hash) in &spans {
                if *end <= written {
                    chain.head = *hash;
                    chain.genesis = None;
                } else if *start < written {
                    chain.head = chain::line_hash(&buf[*start..written]);
                    chain.genesis = None;
                }
            }
            if written > 0 {
                chain.ends_clean = buf[written - 1] == b'\n';
            }
        } else if written > 0 {
            chain.ends_clean = true;
        }
        // Lines that only needed writing are answered now; the rest once synced.
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
        counters.set_up(result.is_ok());
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
    fn an_existing_file_is_never_loosened_only_tightened() {
        let dir = tempfile::tempdir().unwrap();
        let mode_of = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o7777;
        let path = dir.path().join("existing");
        std::fs::write(&path, b"").unwrap();
        std::fs::set_permissions(&path, Permissions::from_mode(0o600)).unwrap();
        drop(open(&Destination::File(path.clone()), 0o666).unwrap());
        assert_eq!(
            mode_of(&path),
            0o600,
            "0666 must not loosen an existing 0600 file"
        );
        std::fs::set_permissions(&path, Permissions::from_mode(0o644)).unwrap();
        drop(open(&Destination::File(path.clone()), 0o600).unwrap());
        assert_eq!(mode_of(&path), 0o600, "tightened");
        std::fs::set_permissions(&path, Permissions::from_mode(0o604)).unwrap();
        drop(open(&Destination::File(path.clone()), 0o640).unwrap());
        assert_eq!(mode_of(&path), 0o600, "only the bits both allow");
        drop(open(&Destination::File(path.clone()), 0).unwrap());
        assert_eq!(mode_of(&path), 0o600, "0000 leaves it alone");
        // A file the device creates gets the exact mode asked for.
        let new = dir.path().join("new");
        drop(open(&Destination::File(new.clone()), 0o640).unwrap());
        assert_eq!(mode_of(&new), 0o640);
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
            Rotation::OFF,
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
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(
            text.starts_with("{\"a\":1,\"chain_genesis\":{\"nonce\":\""),
            "{text}"
        );
        assert!(
            text.ends_with("\"}\n") && text.contains(",\"prev_hash\":\"sha256:"),
            "{text}"
        );
        assert_eq!(counters.snapshot("t/").entries, 1);
    }
}
