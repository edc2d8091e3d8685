//! Typed async client for leash's Vault-compatible HTTP API.
//!
//! Used by the `leash` CLI, the sidecar agent and the integration tests. It speaks the
//! Vault wire format (`/v1/` paths, `X-Vault-Token`, `{"errors":[…]}` bodies), so it
//! works against Vault as well.
//!
//! * [`ClientConfig`] says where and as whom; [`ClientConfig::from_env`] resolves it from
//!   `LEASH_*`/`VAULT_*` variables through an injected lookup and `~/.leash-token`.
//! * [`Client::request`] sends any method (`LIST` included) and returns the status and
//!   JSON body whatever the status; [`Client::read`]/[`write`](Client::write)/
//!   [`list`](Client::list)/[`delete`](Client::delete) follow Vault CLI semantics
//!   (404 on read or list is `Ok(None)`).
//! * Typed helpers for tokens, policies, KV v2 and health return decoded types.
//!
//! Invariants: tokens are held as [`SecretString`] and sent only in the `X-Vault-Token`
//! header (marked sensitive) or in request bodies, never in URLs; no type here prints a
//! token or secret data through `Debug`. Not here: retries, renewal loops, caching.
#![forbid(unsafe_code)]

mod client;
pub mod config;
mod error;
mod kv;
mod lease;
mod sys;
mod token;
mod types;

pub use client::{ApiResponse, Client, REQUEST_HEADER, TOKEN_HEADER};
pub use config::ClientConfig;
pub use error::ClientError;
pub use kv::{kv2_path, list_keys};
pub use lease::{LeaseInfo, LeaseRenewal};
pub use secrecy::{ExposeSecret, SecretString};
pub use sys::{HEALTH_STATUSES, policy_names, policy_text};
pub use types::{
    Auth, Health, KvMount, KvSecret, KvVersionMetadata, SealStatus, Secret, TokenCreateRequest,
    TokenInfo,
};
