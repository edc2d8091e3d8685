//! The HTTP layer: parse a request into a [`leash_core::Request`], call the core, wrap
//! the answer in Vault's envelope. Thin on purpose: no authorization, audit or business
//! logic lives here (see `leash-core`).
//!
//! Everything a Vault client depends on is decided here, once: the path rules
//! ([`path`]), the verb mapping, the envelope and the sys/ top-level copy
//! ([`envelope`]), and the single error → status table ([`envelope::error_response`]).
#![forbid(unsafe_code)]

pub mod envelope;
mod handler;
pub mod listener;
pub mod path;
mod ui;

pub use handler::{HttpConfig, app};
pub use listener::{Limits, ListenError, TlsFiles, check_tls, serve, serve_with};
