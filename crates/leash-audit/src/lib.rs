//! Audit devices and the audit broker of leash.
//!
//! The core hands every request and response to the [`Broker`], which builds one entry per
//! enabled device (each device has its own HMAC key, so secrets in entries are keyed
//! hashes, never clear text — DESIGN invariant 4) and writes it to every device at once.
//! The broker **fails closed** (DESIGN invariant 3): [`Broker::log`] returns `Ok` only if
//! at least one device durably recorded the entry within the deadline; otherwise the
//! core must fail the request so that no secret leaves the server unaudited.
//!
//! Modules:
//! * [`hash`] — [`Hasher`] (per-device HMAC-SHA256) and [`hash_strings`] (Vault's
//!   `HashStructure`);
//! * [`config`] — [`DeviceConfig`] as Vault's `sys/audit` shows it, and option parsing;
//! * [`broker`] — [`Broker`]: enable, disable, list, log, stats;
//! * `file` — the file device: one writer thread per device, group commit, fsync, and
//!   the hash chain (computed in the writer thread, the single ordering point);
//! * [`chain`] — the chain's line format and [`chain::verify_files`];
//! * [`query`] — filtering entries across a device's files, through an index beside them;
//! * `socket` — the socket device: JSON lines over TCP or a Unix socket, with a bounded
//!   buffer, reconnection with backoff, and the same hash chain as the file device;
//! * [`rotate`] — rotation naming, compression, retention, [`rotate::device_files`];
//! * [`stats`] — [`DeviceStats`], per-device counters;
//! * [`error`] — [`AuditError`].
//!
//! Not here: the shape of audit entries (the core builds them through the closure it
//! passes to [`Broker::log`]), persistence of the audit table and of device keys (the
//! core stores them).
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod broker;
pub mod chain;
pub mod config;
pub mod error;
mod file;
pub mod hash;
pub mod query;
pub mod rotate;
mod socket;
pub mod stats;

pub use broker::{Broker, BuildEntry, DEFAULT_DEADLINE, Entry};
pub use config::DeviceConfig;
pub use error::AuditError;
pub use hash::{Hasher, hash_strings};
pub use stats::DeviceStats;

#[cfg(test)]
mod tests {
    /// The core shares one broker between request tasks.
    #[test]
    fn broker_is_send_and_sync() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<crate::Broker>();
        assert_send_sync::<crate::Hasher>();
    }
}
