//! Just-in-time access in the core: the approval gate of the pipeline, the
//! `sys/control-group/*` API, the grant window's leases, the sweeper, audit entries and
//! notifications. The state machine, rules and webhook delivery are in `leash_approval`.
//!
//! * **Gate.** A request the ACL allows but whose rule has a `control_group` passes only
//!   with an open grant bound to the same token for the same path and operation; one use
//!   of the grant is spent atomically. Otherwise 403 with how to ask.
//! * **Grant window.** The backend gets the grant on its request: a lease begun under it is capped
//!   to end with the window (renewals too: its max expiry is the window's end) and is
//!   recorded on the request before the credential exists, so closing the window (its end,
//!   or `complete`) revokes everything issued under it.
//! * **Sweeper** (every tick of the token expiry worker): pending requests past their
//!   lifetime expire, undecided ones are escalated, windows that ended are closed.
//! * **Storage** (namespace `sys/control-group`, sealed like everything): `req/<id>` the
//!   request; `tok/<token hash>/<id>` binds grants to tokens; `pending/<id>` and
//!   `open/<id>` index what the sweeper watches; `closed/<unix time>/<id>` what it
//!   deletes after 30 days; `config`; `rule/<name>`.
//! * **Audit.** Every step is an entry `{"type": "approval", "event": "approval.<step>"}`
//!   with the request id and the trace id of the request that created it; accessors and
//!   lease ids are HMAC'd per device. A step whose entry cannot be written fails (the
//!   sweeper retries on its next tick).

mod api;
mod audit;
mod gate;
mod store;
mod sweep;

use std::time::Duration;

use leash_approval::{ApprovalError, Notifier};
use leash_backend::{Caller, CoreError};
use leash_types::Operation;

pub(crate) use api::handle;
pub(crate) use gate::{Ledger, gate, granted, refund};
pub(crate) use store::pending_stats;
pub(crate) use sweep::{contain, sweep};

/// Storage namespace.
const NS: &str = "sys/control-group";
/// Longest grant an agent may ask for (one day).
const MAX_MINUTES: u64 = 1440;

/// An open grant a request runs under: the pipeline passes it to the backend on the
/// request (`BackendRequest::grant`), and the lease book caps leases to its window.
pub(crate) type Grant = leash_backend::GrantWindow;

/// How long a decided, expired or completed request is kept (the audit trail keeps its
/// history for as long as the audit files are retained).
const RETENTION_SECS: i64 = 30 * 86_400;
/// How often old requests are looked for.
const PRUNE_EVERY_SECS: i64 = 60;

/// Per-core state: the webhook notifier.
pub(crate) struct Approvals {
    notifier: Notifier,
    last_prune: std::sync::atomic::AtomicI64,
}

impl Approvals {
    /// Fails when the webhook client cannot be built (the server then refuses to start).
    pub(crate) fn new() -> Result<Approvals, CoreError> {
        Ok(Approvals {
            notifier: Notifier::start(Duration::from_secs(1)).map_err(err)?,
            last_prune: std::sync::atomic::AtomicI64::new(0),
        })
    }
}

fn err(e: ApprovalError) -> CoreError {
    match e {
        ApprovalError::Invalid(m) => CoreError::InvalidRequest(m),
        ApprovalError::Forbidden(m) => CoreError::Forbidden(m),
        ApprovalError::Setup(m) => CoreError::internal(m),
    }
}

fn op_of(s: &str) -> Operation {
    match s {
        "create" => Operation::Create,
        "update" => Operation::Update,
        "patch" => Operation::Patch,
        "delete" => Operation::Delete,
        "list" => Operation::List,
        _ => Operation::Read,
    }
}

fn hash_hex(c: &Caller) -> String {
    hex::encode(c.hash.0)
}
