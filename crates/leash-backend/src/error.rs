//! The core's one error type. Each variant says whose fault it is; the HTTP crate maps
//! them to status codes in one exhaustive match. Messages are safe to show to the caller:
//! they never contain secrets, and internal causes are logged, not returned.

use leash_storage::StorageError;

/// Why a request failed.
#[derive(Debug, thiserror::Error)]
pub enum CoreError {
    /// Missing, invalid, expired or revoked token, or an ACL denial. Deliberately says
    /// nothing about which.
    #[error("permission denied")]
    PermissionDenied,
    /// A request to an authenticated path without a usable token: none presented
    /// (`presented: false`), or one that is unknown, expired, revoked, used up or
    /// bound elsewhere (`presented: true`; which of those is never said). Audited and
    /// shown as "permission denied", with the reason as Vault's second error string.
    #[error("permission denied")]
    InvalidToken {
        /// Whether the request carried a token at all.
        presented: bool,
    },
    /// A login or check refused with a reason the caller may see (which check failed,
    /// never the credential): 403 with the message.
    #[error("{0}")]
    Forbidden(String),
    /// The policy grants the path only with a human approval (a `control_group`), and
    /// the caller holds none. The message says how to ask for one.
    #[error("{0}")]
    ApprovalRequired(String),
    /// The caller sent something invalid; the message says what.
    #[error("{0}")]
    InvalidRequest(String),
    /// Nothing at this path (read of a missing key, empty list).
    #[error("not found")]
    NotFound,
    /// No backend handles this path.
    #[error("no handler for route {0:?}; route entry not found")]
    UnknownPath(String),
    /// The path exists but does not support this operation.
    #[error("unsupported operation")]
    UnsupportedOperation,
    /// Audit fail-closed: no enabled device recorded the entry.
    #[error("no audit backend succeeded in logging the request")]
    AuditFailed,
    /// A system leash depends on (a target database) failed or could not be reached;
    /// the message says which and why, without secrets.
    #[error("{0}")]
    Upstream(String),
    /// Too many requests (rate limits, quotas).
    #[error("{0}")]
    RateLimited(String),
    /// A bug or an environment failure; details are in the log only.
    #[error("internal error")]
    Internal(String),
    /// Storage failed.
    #[error("internal error")]
    Storage(#[from] StorageError),
}

impl CoreError {
    /// Shorthand for [`CoreError::InvalidRequest`].
    pub fn invalid(msg: impl Into<String>) -> CoreError {
        CoreError::InvalidRequest(msg.into())
    }

    /// Whether the storage could not be reached (the answer is 503: nothing changed,
    /// retry later).
    pub fn is_storage_unavailable(&self) -> bool {
        matches!(self, CoreError::Storage(StorageError::Unavailable(_)))
    }

    /// Shorthand for [`CoreError::Internal`].
    pub fn internal(msg: impl Into<String>) -> CoreError {
        CoreError::Internal(msg.into())
    }
}
