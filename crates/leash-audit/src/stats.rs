//! Per-device counters: what each audit device wrote, how often it synced, how often it
//! failed a caller.
//!
//! Counters are plain relaxed atomics shared between a device's writer thread and the
//! callers of [`Broker::log`](crate::Broker::log); a snapshot is a [`DeviceStats`]. They
//! feed metrics and alerting (`vault_audit_log_request_failure`) and show group commit at
//! work (`syncs < entries` under concurrency).
//!
//! Not here: exporting metrics (the core does), per-entry detail of any kind.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

/// A snapshot of one device's counters.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeviceStats {
    /// Mount path of the device, e.g. `file/`.
    pub path: String,
    /// Entries the device wrote (and synced, for files). An entry whose caller gave up
    /// waiting is still counted here if the device writes it later.
    pub entries: u64,
    /// `fsync`s (`sync_data`) performed; with group commit one sync covers a batch.
    pub syncs: u64,
    /// Entries this device failed to record for a caller: write or sync error, deadline
    /// passed, queue full, or device gone.
    pub failures: u64,
    /// Whether the device is working: its last write succeeded (and a socket device is
    /// connected to its peer). Exported as `leash_audit_device_up`.
    pub up: bool,
}

/// The live counters behind a [`DeviceStats`].
#[derive(Debug, Default)]
pub(crate) struct Counters {
    entries: AtomicU64,
    syncs: AtomicU64,
    failures: AtomicU64,
    /// Cleared by a failed write or a lost connection, set by a successful write.
    down: AtomicBool,
}

impl Counters {
    pub(crate) fn add_entries(&self, n: u64) {
        self.entries.fetch_add(n, Ordering::Relaxed);
    }

    pub(crate) fn add_sync(&self) {
        self.syncs.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn add_failure(&self) {
        self.failures.fetch_add(1, Ordering::Relaxed);
    }

    /// Records whether the device works (see [`DeviceStats::up`]).
    pub(crate) fn set_up(&self, up: bool) {
        self.down.store(!up, Ordering::Relaxed);
    }

    pub(crate) fn snapshot(&self, path: &str) -> DeviceStats {
        DeviceStats {
            path: path.to_owned(),
            entries: self.entries.load(Ordering::Relaxed),
            syncs: self.syncs.load(Ordering::Relaxed),
            failures: self.failures.load(Ordering::Relaxed),
            up: !self.down.load(Ordering::Relaxed),
        }
    }
}
