//! The contract between the leash core and every backend (secrets engines such as KV
//! and database, auth methods such as token, AppRole and Kubernetes): the request a
//! backend sees, the response it returns, the one error enum, mount entries and the
//! [`Backend`] trait.
//!
//! Backends depend on this crate, never on each other or on the core; the core wires
//! them together. Nothing here knows HTTP.
#![forbid(unsafe_code)]

pub mod backend;
pub mod caller;
pub mod error;
pub mod fields;
pub mod lease;
pub mod login;
pub mod mount;
pub mod request;
pub mod routes;
pub mod store;

pub use backend::{Backend, BackendRequest, Canary, GrantWindow, ObservedSession, match_route};
pub use caller::{Caller, TokenEntry};
pub use error::CoreError;
pub use lease::{IssuanceCaps, LeaseRecord, LeaseRegistry, LeaseRequest, PendingLease};
pub use login::{LoginGrant, TOKEN_FIELDS, TokenParams};
pub use mount::{MountConfig, MountEntry, MountKind, MountTable};
pub use request::{AuthInfo, LeaseInfo, Request, Response, ResponseKind};
pub use routes::{Route, Routes, canonical_request_path};
pub use store::MountStorage;
