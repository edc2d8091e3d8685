//! `leash agent`: the sidecar that keeps an agent's credentials fresh on disk or in its
//! environment, so the agent process never holds a static secret or talks to leash.
//!
//! * [`config`]: Vault Agent's HCL shape (`vault`/`leash`, `auto_auth`, `template`,
//!   `template_config`, `exec`, `env_template`), checked key by key.
//! * [`template`]: Vault Agent / consul-template syntax (a hand-written subset of Go's
//!   `text/template`; see there why).
//! * [`auth`]: auto-auth (kubernetes, approle, jwt, token_file) and token file sinks.
//! * [`runner`]: the loop — renew at two thirds of the TTL, re-issue at max TTL with a
//!   grace period, retry with backoff and jitter, re-authenticate, revoke on exit.
//! * [`files`]: atomic 0600 writes. [`cache`]: the lease cache a restart reuses.
//! * [`exec`]: the child process of exec mode. [`redact`]: the filter its stdout and
//!   stderr go through. [`health`]: `/healthz` and `/metrics`.
//!
//! Invariants: secret data and tokens never reach a log line or `Debug` output; a
//! rendered file is replaced atomically, never written in place; a missing template key
//! is an error naming the key and the template, never `<no value>`.
//!
//! * [`cli`]: the command line, shared by `leash agent` and the small `leash-agent`
//!   binary (src/main.rs), which runs the agent without the rest of `leash`.
//!
//! Not here: HTTP details (leash-client).
#![forbid(unsafe_code)]

pub mod auth;
pub mod cache;
pub mod cli;
pub mod config;
mod error;
pub mod exec;
pub mod files;
pub mod health;
pub mod redact;
pub mod runner;
pub mod schedule;
pub mod template;

pub use config::AgentConfig;
pub use error::AgentError;
pub use runner::{RunOptions, SecretPublisher, SecretSnapshot, run};
