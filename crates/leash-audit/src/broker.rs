//! The audit broker: the set of enabled devices, and fail-closed logging to all of them.
//!
//! [`Broker::log`] builds the entry once per device (each device has its own HMAC key and
//! its own `log_raw`), serialises it to one JSON line (after the device's `prefix`), hands
//! the lines to every device at once and waits for them with one shared deadline. It is
//! `Ok` only if at least one device durably recorded the entry; otherwise the request must
//! fail (DESIGN invariant 3). A device that hangs cannot hang callers: queueing never
//! blocks, and waiting is bounded by the deadline.
//!
//! Invariants: no lock is held across an `.await`; enable and disable never leave a
//! half-registered device; failures are logged with the device path and the OS error,
//! never with the entry.
//!
//! Not here: what an entry contains (the core's closure builds it), persisting the audit
//! table or device keys across restarts (the core re-enables devices at startup).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use leash_types::SecretBytes;
use serde_json::Value;

use crate::config::{
    self, DeviceConfig, FileOptions, KIND_FILE, KIND_SOCKET, SocketOptions, Target,
};
use crate::error::AuditError;
use crate::file::{self, Destination, Writer};
use crate::hash::Hasher;
use crate::socket;
use crate::stats::{Counters, DeviceStats};

/// The per-entry write deadline the core uses unless configured otherwise.
pub const DEFAULT_DEADLINE: Duration = Duration::from_secs(5);

/// An audit entry, rendered once per device as one JSON object: with the device's
/// [`Hasher`], and whether the device logs raw (unhashed) entries.
///
/// Any `Fn(&Hasher, bool) -> serde_json::Value` closure is an entry; the core
/// implements it on borrowed structs to write JSON directly, without building a
/// `Value` tree for every request.
pub trait Entry: Send + Sync {
    /// Appends the entry's JSON (no newline) to `out`.
    fn write_json(
        &self,
        hasher: &Hasher,
        log_raw: bool,
        out: &mut Vec<u8>,
    ) -> serde_json::Result<()>;
}

impl<F> Entry for F
where
    F: Fn(&Hasher, bool) -> Value + Send + Sync,
{
    fn write_json(
        &self,
        hasher: &Hasher,
        log_raw: bool,
        out: &mut Vec<u8>,
    ) -> serde_json::Result<()> {
        serde_json::to_writer(out, &self(hasher, log_raw))
    }
}

/// What [`Broker::log`] takes: an [`Entry`].
pub type BuildEntry<'a> = dyn Entry + 'a;

/// The enabled audit devices. `Send + Sync`; share it in an `Arc`.
pub struct Broker {
    deadline: Duration,
    queue_capacity: usize,
    /// Directories file devices may write in (the server's `audit_dir`); empty = any.
    allowed_dirs: Vec<PathBuf>,
    devices: RwLock<BTreeMap<String, Arc<Device>>>,
}

/// One enabled device.
struct Device {
    config: DeviceConfig,
    log_raw: bool,
    prefix: Vec<u8>,
    hasher: Hasher,
    sink: Sink,
    counters: Arc<Counters>,
}

/// The options every device kind shares, and the kind's own.
struct Common {
    log_raw: bool,
    hmac_accessor: bool,
    elide_list_responses: bool,
    prefix: String,
    kind: Kind,
}

enum Kind {
    File(FileOptions),
    Socket(SocketOptions),
}

enum Sink {
    /// `file_path = "discard"`: every entry succeeds, nothing is written.
    Discard,
    /// A file, stdout or a socket, behind its writer thread.
    Writer(Writer),
}

/// What happened when a line was offered to a device.
enum Offer {
    Recorded,
    Pending(tokio::sync::oneshot::Receiver<file::WriteResult>),
    Failed(String),
}

impl Broker {
    /// A broker with no devices; `deadline` bounds each entry's write (and each device's
    /// open and close).
    pub fn new(deadline: Duration) -> Broker {
        Broker::with_queue_capacity(deadline, file::QUEUE_CAPACITY)
    }

    /// As [`Broker::new`], with each device queueing at most `queue_capacity` lines.
    pub(crate) fn with_queue_capacity(deadline: Duration, queue_capacity: usize) -> Broker {
        Broker {
            deadline,
            queue_capacity,
            allowed_dirs: Vec::new(),
            devices: RwLock::new(BTreeMap::new()),
        }
    }

    /// This broker, with file devices restricted to files under `dirs` (the server's
    /// `audit_dir`): a `file_path` elsewhere, with `..`, or reaching outside through a
    /// symbolic link is refused when the device is enabled (and when it is re-enabled at
    /// start-up). Empty: no restriction.
    pub fn with_allowed_dirs(mut self, dirs: Vec<PathBuf>) -> Broker {
        self.allowed_dirs = dirs;
        self
    }

    /// Validates `cfg` and opens the device (on its own thread, bounded by the deadline).
    /// `cfg.path` is normalised (`file` → `file/`). A path that is already enabled, or
    /// that contains or is contained by an enabled path, is [`AuditError::AlreadyEnabled`].
    ///
    /// With `probe`, the entry it builds is written and synced through the new device
    /// before the device is accepted, so a device that cannot write (a full disk,
    /// `/dev/full`) is refused at enable time instead of failing every later request. A
    /// socket device with `probe` must reach its peer; without one (re-enabling at
    /// start-up) it starts disconnected, buffers and connects in the background.
    pub async fn enable(
        &self,
        cfg: DeviceConfig,
        key: SecretBytes,
        probe: Option<&BuildEntry<'_>>,
    ) -> Result<(), AuditError> {
        let path = config::normalize_path(&cfg.path)?;
        let common = match cfg.kind.as_str() {
            KIND_FILE => {
                let o = FileOptions::parse(&cfg.options)?;
                Common {
                    log_raw: o.log_raw,
                    hmac_accessor: o.hmac_accessor,
                    elide_list_responses: o.elide_list_responses,
                    prefix: o.prefix.clone(),
                    kind: Kind::File(o),
                }
            }
            KIND_SOCKET => {
                let o = SocketOptions::parse(&cfg.options)?;
                Common {
                    log_raw: o.log_raw,
                    hmac_accessor: o.hmac_accessor,
                    elide_list_responses: o.elide_list_responses,
                    prefix: o.prefix.clone(),
                    kind: Kind::Socket(o),
                }
            }
            other => {
                return Err(AuditError::InvalidConfig(format!(
                    "audit device type {other:?} is not supported; supported: {KIND_FILE:?}, {KIND_SOCKET:?}"
                )));
            }
        };
        if let Some(existing) = conflict(&self.read(), &path) {
            return Err(AuditError::AlreadyEnabled(already_in_use(&path, &existing)));
        }

        let counters = Arc::new(Counters::default());
        let sink = match common.kind {
            Kind::File(opts) => {
                let dest = match opts.target {
                    Target::Discard => None,
                    Target::Stdout => Some(Destination::Stdout),
                    Target::File(p) => Some(Destination::File(config::allowed_file(
                        &p,
                        &self.allowed_dirs,
                    )?)),
                };
                match dest {
                    None => Sink::Discard,
                    Some(dest) => Sink::Writer(
                        Writer::start(
                            &path,
                            dest,
                            opts.mode,
                            opts.rotation.clone(),
                            self.queue_capacity,
                            self.deadline,
                            counters.clone(),
                        )
                        .await?,
                    ),
                }
            }
            Kind::Socket(opts) => Sink::Writer(
                socket::start(
                    &path,
                    &opts,
                    self.queue_capacity,
                    self.deadline,
                    probe.is_some(),
                    counters.clone(),
                )
                .await?,
            ),
        };
        let device = Arc::new(Device {
            config: DeviceConfig {
                path: path.clone(),
                ..cfg
            },
            log_raw: common.log_raw,
            prefix: common.prefix.into_bytes(),
            hasher: Hasher::new(key)
                .with_options(common.hmac_accessor, common.elide_list_responses),
            sink,
            counters,
        });

        if let Some(probe) = probe {
            let outcome = match device.offer(probe, true) {
                Offer::Recorded => Ok(()),
                Offer::Failed(reason) => Err(reason),
                Offer::Pending(rx) => match tokio::time::timeout(self.deadline, rx).await {
                    Ok(Ok(Ok(()))) => Ok(()),
                    Ok(Ok(Err(e))) => Err(e.to_string()),
                    Ok(Err(_)) => Err("writer thread ended".to_owned()),
                    Err(_) => Err(format!(
                        "not written within the deadline of {} ms",
                        self.deadline.as_millis()
                    )),
                },
            };
            if let Err(reason) = outcome {
                device.close(self.deadline).await;
                return Err(AuditError::Open {
                    path: device.config.path.clone(),
                    reason: format!("test write failed: {reason}"),
                });
            }
        }

        // Another enable may have taken the path while this one was opening.
        let lost_race = {
            let mut devices = self.write();
            match conflict(&devices, &path) {
                Some(existing) => Some(existing),
                None => {
                    devices.insert(path.clone(), device.clone());
                    None
                }
            }
        };
        match lost_race {
            None => Ok(()),
            Some(existing) => {
                device.close(self.deadline).await;
                Err(AuditError::AlreadyEnabled(already_in_use(&path, &existing)))
            }
        }
    }

    /// Disables the device at `path`: no new entries go to it, what it has queued is
    /// written and synced, and its file is closed (waiting at most the deadline). Returns
    /// whether a device was enabled there.
    pub async fn disable(&self, path: &str) -> bool {
        let Ok(path) = config::normalize_path(path) else {
            return false;
        };
        let removed = self.write().remove(&path);
        match removed {
            Some(device) => {
                device.close(self.deadline).await;
                true
            }
            None => false,
        }
    }

    /// The enabled devices, sorted by path.
    pub fn list(&self) -> Vec<DeviceConfig> {
        self.read().values().map(|d| d.config.clone()).collect()
    }

    /// `hmac-sha256:…` of `input` under the key of the device at `path`
    /// (`sys/audit-hash/:path`); `None` if no device is enabled there.
    pub fn hash(&self, path: &str, input: &str) -> Option<String> {
        let path = config::normalize_path(path).ok()?;
        self.read().get(&path).map(|d| d.hasher.hmac(input))
    }

    /// The `hmac_accessor` option of the device at `path` (the builder passed to
    /// [`Broker::log`] also sees it as [`Hasher::hmac_accessor`]).
    pub fn hmac_accessor(&self, path: &str) -> Option<bool> {
        let path = config::normalize_path(path).ok()?;
        self.read().get(&path).map(|d| d.hasher.hmac_accessor())
    }

    /// Whether no device is enabled (then [`Broker::log`] succeeds without writing).
    pub fn is_empty(&self) -> bool {
        self.read().is_empty()
    }

    /// The per-entry deadline.
    pub fn deadline(&self) -> Duration {
        self.deadline
    }

    /// Records one entry on every enabled device; fails closed.
    ///
    /// `build(hasher, log_raw)` is called once per device and must return the entry with
    /// secrets hashed by `hasher` unless `log_raw` is true. `Ok` if no device is enabled,
    /// or if at least one device wrote and synced the line before the deadline;
    /// otherwise [`AuditError::AllDevicesFailed`], and the request must fail.
    pub async fn log(&self, build: &BuildEntry<'_>) -> Result<(), AuditError> {
        self.record(build, true).await
    }

    /// Like [`Broker::log`], but `Ok` once at least one device has *written* the line,
    /// without waiting for it to be synced. For entries that precede a synced one on
    /// the same devices (the request entry of a read, whose response entry follows):
    /// each device writes in order, so syncing the later line makes this one durable
    /// too, before any answer leaves the server.
    pub async fn log_written(&self, build: &BuildEntry<'_>) -> Result<(), AuditError> {
        self.record(build, false).await
    }

    async fn record(&self, build: &BuildEntry<'_>, sync: bool) -> Result<(), AuditError> {
        let devices: Vec<Arc<Device>> = self.read().values().cloned().collect();
        if devices.is_empty() {
            return Ok(());
        }
        let until = tokio::time::Instant::now() + self.deadline;

        // Offer the line to every device before waiting on any: they write concurrently.
        let mut recorded = 0usize;
        let mut pending = Vec::with_capacity(devices.len());
        for device in &devices {
            match device.offer(build, sync) {
                Offer::Recorded => recorded += 1,
                Offer::Pending(outcome) => pending.push((device, outcome)),
                Offer::Failed(reason) => device.failed(&reason),
            }
        }
        for (device, outcome) in pending {
            match tokio::time::timeout_at(until, outcome).await {
                Ok(Ok(Ok(()))) => recorded += 1,
                Ok(Ok(Err(e))) => device.failed(&e.to_string()),
                Ok(Err(_)) => device.failed("writer thread ended"),
                Err(_) => device.failed(&format!(
                    "not written within the deadline of {} ms",
                    self.deadline.as_millis()
                )),
            }
        }

        if recorded > 0 {
            Ok(())
        } else {
            Err(AuditError::AllDevicesFailed {
                attempted: devices.len(),
            })
        }
    }

    /// Counters of every enabled device, sorted by path.
    pub fn stats(&self) -> Vec<DeviceStats> {
        self.read()
            .values()
            .map(|d| d.counters.snapshot(&d.config.path))
            .collect()
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, BTreeMap<String, Arc<Device>>> {
        // Nothing panics while holding this lock; if something did, the map is still whole.
        self.devices.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, BTreeMap<String, Arc<Device>>> {
        self.devices.write().unwrap_or_else(PoisonError::into_inner)
    }
}

impl std::fmt::Debug for Broker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Broker")
            .field("deadline", &self.deadline)
            .field("devices", &self.read().keys().collect::<Vec<_>>())
            .finish()
    }
}

impl Device {
    /// Builds this device's line and queues it.
    fn offer(&self, build: &BuildEntry<'_>, sync: bool) -> Offer {
        let mut line = self.prefix.clone();
        line.reserve(2048);
        if let Err(e) = build.write_json(&self.hasher, self.log_raw, &mut line) {
            // Only a map with non-string keys fails here; the error names the category,
            // never the entry.
            return Offer::Failed(format!("cannot serialise entry: {:?}", e.classify()));
        }
        line.push(b'\n');
        match &self.sink {
            Sink::Discard => {
                self.counters.add_entries(1);
                Offer::Recorded
            }
            Sink::Writer(writer) => match writer.submit(line, sync) {
                Ok(outcome) => Offer::Pending(outcome),
                Err(e) => Offer::Failed(e.to_string()),
            },
        }
    }

    fn failed(&self, reason: &str) {
        self.counters.add_failure();
        self.counters.set_up(false);
        tracing::warn!(
            device = %self.config.path,
            error = %reason,
            "audit device failed to record an entry"
        );
    }

    async fn close(&self, deadline: Duration) {
        if let Sink::Writer(writer) = &self.sink
            && !writer.close(deadline).await
        {
            tracing::warn!(
                device = %self.config.path,
                "audit device did not finish writing within the deadline; it closes when its stuck write returns"
            );
        }
    }
}

/// The enabled path that `path` overlaps (equal, or one a prefix of the other), if any.
fn conflict(devices: &BTreeMap<String, Arc<Device>>, path: &str) -> Option<String> {
    devices
        .keys()
        .find(|existing| existing.starts_with(path) || path.starts_with(existing.as_str()))
        .cloned()
}

fn already_in_use(path: &str, existing: &str) -> String {
    if path == existing {
        format!("{path:?}")
    } else {
        format!("{path:?} overlaps enabled device {existing:?}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::OpenOptionsExt;
    use std::time::Instant;

    /// Linux's O_NONBLOCK (0o4000 on x86_64 and aarch64), so opening a FIFO's read end
    /// does not wait for a writer.
    const O_NONBLOCK: i32 = 0o4000;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn full_queue_fails_at_once_instead_of_waiting() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("fifo");
        let status = std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap();
        assert!(status.success());
        let reader = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(O_NONBLOCK)
            .open(&fifo)
            .unwrap();

        let deadline = Duration::from_millis(1000);
        let broker = Broker::with_queue_capacity(deadline, 1);
        let cfg = DeviceConfig {
            path: "fifo/".into(),
            kind: "file".into(),
            description: String::new(),
            options: [("file_path".to_owned(), fifo.display().to_string())].into(),
            local: false,
        };
        broker
            .enable(cfg, SecretBytes::random(32), None)
            .await
            .unwrap();
        let big = "x".repeat(16 * 1024);
        let build = move |_: &Hasher, _: bool| serde_json::json!({ "pad": big });

        // Fill the pipe until the writer thread is stuck in a write (the first failure).
        let mut stuck = false;
        for _ in 0..64 {
            if broker.log(&build).await.is_err() {
                stuck = true;
                break;
            }
        }
        assert!(stuck, "the pipe never filled");
        // The one-line queue: this entry waits there for the deadline.
        assert!(broker.log(&build).await.is_err());
        // Now the queue is full: failures are immediate, not a deadline each.
        for _ in 0..10 {
            let t = Instant::now();
            assert!(matches!(
                broker.log(&build).await,
                Err(AuditError::AllDevicesFailed { attempted: 1 })
            ));
            assert!(t.elapsed() < deadline / 2, "took {:?}", t.elapsed());
        }
        assert!(broker.stats()[0].failures >= 12);

        // Closing the read end unsticks the writer (EPIPE), so disable finishes in time.
        drop(reader);
        assert!(broker.disable("fifo/").await);
    }
}
