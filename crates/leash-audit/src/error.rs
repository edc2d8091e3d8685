//! The audit crate's one error type.
//!
//! Each variant says whose fault it is: the operator's configuration ([`InvalidConfig`],
//! [`AlreadyEnabled`]), the environment the device lives in ([`Open`]), or every enabled
//! device at once while logging ([`AllDevicesFailed`]). Messages name the option key, the
//! mount path or the file path that caused them. They never contain an audit entry, nor
//! anything an entry was built from: entries hold HMACs of secrets and request details
//! that must stay in the audit trail.
//!
//! [`InvalidConfig`]: AuditError::InvalidConfig
//! [`AlreadyEnabled`]: AuditError::AlreadyEnabled
//! [`Open`]: AuditError::Open
//! [`AllDevicesFailed`]: AuditError::AllDevicesFailed

/// Why enabling a device or logging an entry failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuditError {
    /// The device configuration is wrong (unknown type, unknown option key, bad value);
    /// the message names the key and what is expected, never the value given. The caller's fault: a 400.
    #[error("invalid audit device configuration: {0}")]
    InvalidConfig(String),

    /// An enabled device already uses this mount path, or a path that contains it or is
    /// contained by it (as Vault refuses `file/` next to `file/x/`). A 400.
    #[error("audit device path already in use: {0}")]
    AlreadyEnabled(String),

    /// The device could not be opened (missing parent directory, permissions, timeout).
    /// `path` is the file the device writes to; `reason` says what went wrong.
    #[error("cannot open audit device file {path:?}: {reason}")]
    Open {
        /// The file path (the `file_path` option).
        path: String,
        /// What went wrong, with the OS error when there is one.
        reason: String,
    },

    /// No enabled device recorded the entry within the deadline. The request must fail
    /// (DESIGN invariant 3); the core answers 500 "no audit backend succeeded in logging
    /// the request". Each device's failure was logged with its OS error.
    #[error("no audit device succeeded in logging the entry ({attempted} attempted)")]
    AllDevicesFailed {
        /// How many devices were tried.
        attempted: usize,
    },
}
