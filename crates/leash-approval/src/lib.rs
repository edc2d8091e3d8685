//! Just-in-time access: an agent asks for an operation a policy's `control_group` guards,
//! humans approve or deny it (M-of-N per factor, never the requester), or a pre-approval
//! rule approves it at once; the approval opens a grant window of limited minutes (and
//! uses) during which the operation is allowed.
//!
//! This crate is pure domain logic plus outbound notifications:
//! * [`model`] — [`AccessRequest`] and its transitions (`approve`, `deny`, `expire`,
//!   `use_grant`, `close`), each checked against the clock it is given;
//! * [`rules`] — [`Rule`], pre-approval of low-risk operations (path glob, operations,
//!   maximum duration, time-of-day window, uses);
//! * [`config`] — [`Config`]: pending-request lifetime, webhook and escalation settings;
//! * [`notify`] — [`Notifier`]: webhook deliveries in the background with retries and
//!   backoff, never blocking the caller; payloads a chat incoming webhook accepts.
//!
//! Not here: storage, authorization (the core checks policies and identity groups and
//! hands [`model::Approver`] in), audit entries, HTTP serving.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod config;
pub mod model;
pub mod notify;
pub mod rules;

pub use config::Config;
pub use model::{AccessRequest, Approval, Approver, Decision, Factor, Requester, Status};
pub use notify::Notifier;
pub use rules::Rule;

/// What can go wrong with an access request.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ApprovalError {
    /// The input is malformed or the request is in a state that does not allow the
    /// action (the message says which).
    #[error("{0}")]
    Invalid(String),
    /// The caller may not do this (not an approver, approving their own request).
    #[error("{0}")]
    Forbidden(String),
    /// The notifier could not be set up (its HTTP client failed to build).
    #[error("{0}")]
    Setup(String),
}

impl ApprovalError {
    pub(crate) fn invalid(m: impl Into<String>) -> ApprovalError {
        ApprovalError::Invalid(m.into())
    }
    pub(crate) fn forbidden(m: impl Into<String>) -> ApprovalError {
        ApprovalError::Forbidden(m.into())
    }
}

/// The operations a request may name, as capabilities are spelled in policies.
pub const OPERATIONS: &[&str] = &["read", "create", "update", "patch", "delete", "list"];

/// Checks an operation name (lowercased, as in policies).
pub fn check_operation(op: &str) -> Result<String, ApprovalError> {
    let op = op.trim().to_ascii_lowercase();
    if OPERATIONS.contains(&op.as_str()) {
        Ok(op)
    } else {
        Err(ApprovalError::invalid(format!(
            "unknown operation: expected one of {}",
            OPERATIONS.join(", ")
        )))
    }
}
