//! `leash proxy`: the agent uses a credential it never holds.
//!
//! A sidecar that logs in and keeps secrets fresh exactly as `leash agent` does (it *is*
//! `leash agent`, fed the proxy's secrets through [`leash_agent::RunOptions`]), and
//! attaches them on the way out:
//!
//! * [`http`]: `proxy "http"` — `http://127.0.0.1:8700/<upstream>/<path>` is checked
//!   against the upstream's `allow` rules, stripped of any credential header the agent
//!   sent, given the rendered header(s), and forwarded (rustls for `https://`), bodies
//!   streamed both ways; responses are scanned for the injected credential
//!   ([`redact`]).
//! * [`pg`]: `proxy "postgres"` — the agent connects without the real password; the
//!   proxy authenticates to PostgreSQL with the current leased credential and relays.
//! * [`metrics`]: `/metrics` (Prometheus text) and the `agent.credential.used` event
//!   lines.
//!
//! Invariants: a credential never reaches a log line, an error message or `Debug`
//! output; listeners are loopback-only unless `allow_remote = true`.
//!
//! Not here: login, renewal, rotation (leash-agent), the command line (`leash`).
#![forbid(unsafe_code)]

pub mod config;
mod creds;
mod error;
pub mod http;
pub mod metrics;
mod pg;
pub mod redact;
mod run;

pub use config::ProxyConfig;
pub use error::ProxyError;
pub use run::run;
