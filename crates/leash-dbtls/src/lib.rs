//! TLS to the databases leash talks to — the PostgreSQL storage backend and the database
//! secrets engine's PostgreSQL and MySQL/MariaDB connections — through rustls with the
//! `ring` provider (leash's one crypto stack).
//!
//! * [`TlsOptions`]: libpq's `sslmode` (`disable`, `prefer`, `require`, `verify-ca`,
//!   `verify-full`), `sslrootcert`, `sslcert`, `sslkey`, read from a connection URL's
//!   query string or keyword/value string ([`split_pg_url`]) or given as separate
//!   fields ([`TlsOptions::set`]).
//! * [`TlsOptions::client_config`]: the rustls client configuration with libpq's exact
//!   semantics: `require` without a root certificate encrypts without verifying,
//!   `verify-ca` checks the chain only, `verify-full` the chain and the host name, and
//!   `require` or `prefer` *with* a root certificate behave like `verify-ca`.
//! * [`pg`]: the PostgreSQL `SSLRequest` negotiation over any stream
//!   ([`pg::negotiate`]), and [`pg::connect`], which opens a `tokio_postgres` client
//!   over it.
//! * [`driver`]: [`pg::PgTls`] as `tokio_postgres`'s `MakeTlsConnect`, and
//!   [`driver_config`], for `tokio_postgres::Config::connect` and connection pools (what
//!   the PostgreSQL storage backend uses).
//!
//! Invariant: no error or `Debug` output carries a private key. Inline PEM private keys
//! are held as `SecretString`.

pub mod driver;
mod error;
mod options;
pub mod pg;
mod verify;

pub use driver::driver_config;
pub use error::{DbTlsError, describe_tls_failure};
pub use options::{Pem, PemKey, SslMode, TlsOptions, split_pg_url};
pub use pg::connect as pg_connect;
