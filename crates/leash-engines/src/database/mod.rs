//! Database secrets engine, plugin layer: what leash does *inside* a target database to
//! mint, renew and revoke a dynamic credential.
//!
//! * [`template`] — Vault's statement templating (`{{name}}`, `{{password}}`, …).
//! * [`credentials`] — usernames and passwords leash generates.
//! * [`scram`] — SCRAM-SHA-256 verifiers, so a plaintext password never reaches the
//!   database's logs or statement statistics.
//! * [`postgres`] — a PostgreSQL target: run creation / renewal / revocation statements.
//!
//! Not here: HTTP paths, role and connection configuration storage, leases. Those belong
//! to the engine built on top of this layer.
//!
//! Invariant: no error, `Debug` or `Display` output of this module contains a password
//! or a statement with a password substituted into it.

pub mod credentials;
pub mod engine;
pub mod mysql;
mod narrowing;
mod pg_stream;
pub mod postgres;
pub mod scram;
pub mod template;

pub use credentials::{generate_password, generate_username};
pub use postgres::{PasswordAuthentication, PgConfig, PgTarget};
pub use scram::scram_sha256_verifier;
pub use template::{Vars, render};

/// A session of a database user, as the target reports it (for the session observer).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Session {
    /// The database user.
    pub username: String,
    /// The client's IP address; `None` for a Unix-socket session.
    pub client_addr: Option<std::net::IpAddr>,
    /// The server's id of the session (PostgreSQL backend pid, MySQL connection id).
    pub id: String,
}

/// What went wrong in the plugin layer. Messages never carry a password: statements are
/// identified by their index, and server messages are scrubbed of the secrets that were
/// substituted into the statement.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    /// A statement template names a placeholder leash does not know (operator's fault).
    #[error("unknown placeholder {{{{{name}}}}} in statement template")]
    UnknownPlaceholder {
        /// The placeholder's name, as written between the braces.
        name: String,
    },
    /// An operation that needs statements got none (e.g. a role without
    /// `creation_statements`).
    #[error("no {operation} statements given")]
    NoStatements {
        /// Which kind.
        operation: &'static str,
    },
    /// A `{{` without its closing `}}` (operator's fault).
    #[error("unterminated placeholder at byte {offset} of statement template")]
    UnterminatedPlaceholder {
        /// Byte offset of the opening `{{`.
        offset: usize,
    },
    /// A template uses a placeholder this operation has no value for (e.g. `{{password}}`
    /// in a revocation statement).
    #[error("placeholder {{{{{name}}}}} has no value in this operation")]
    MissingValue {
        /// The placeholder's name.
        name: &'static str,
    },
    /// The connection URL could not be used (operator's fault). The URL itself is not
    /// repeated, since it carries the password.
    #[error("invalid connection_url: {reason}")]
    InvalidConnectionUrl {
        /// Why, without the URL.
        reason: String,
    },
    /// A password cannot be turned into a SCRAM verifier leash can vouch for.
    #[error("cannot compute SCRAM verifier: {reason}")]
    Scram {
        /// Why.
        reason: &'static str,
    },
    /// Could not reach or log in to the database.
    #[error("cannot connect to database: {message}")]
    Connect {
        /// The driver's or server's reason.
        message: String,
    },
    /// Statement number `index` (0-based, in the order given) failed in the database.
    #[error("statement {index} failed: {sqlstate}: {message}")]
    Statement {
        /// 0-based index of the statement in the list given.
        index: usize,
        /// PostgreSQL SQLSTATE (e.g. `42501`), or empty when the failure was not the
        /// server's (connection lost).
        sqlstate: String,
        /// The server's message, scrubbed of substituted secrets.
        message: String,
    },
    /// A query leash runs itself (transaction control, session termination, catalogue
    /// lookups) failed.
    #[error("{operation} failed: {sqlstate}: {message}")]
    Database {
        /// What leash was doing.
        operation: &'static str,
        /// PostgreSQL SQLSTATE, or empty.
        sqlstate: String,
        /// The server's message.
        message: String,
    },
    /// A transient conflict (serialization failure, deadlock, concurrent catalogue update)
    /// persisted through every retry.
    #[error("gave up after {attempts} attempts: {last}")]
    RetriesExhausted {
        /// How many times the transaction ran.
        attempts: u32,
        /// The last attempt's error.
        last: Box<DbError>,
    },
}

/// An error and its causes as one line (`a: b: c`), skipping a cause whose text the
/// line already holds (drivers often repeat their source in their own message).
pub(crate) fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let text = c.to_string();
        if !text.is_empty() && !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        cur = c.source();
    }
    out
}

impl DbError {
    /// The PostgreSQL SQLSTATE, when the database reported one.
    pub fn sqlstate(&self) -> Option<&str> {
        match self {
            DbError::Statement { sqlstate, .. } | DbError::Database { sqlstate, .. }
                if !sqlstate.is_empty() =>
            {
                Some(sqlstate)
            }
            DbError::RetriesExhausted { last, .. } => last.sqlstate(),
            _ => None,
        }
    }
}

#[cfg(test)]
mod postgres_tests;

#[cfg(test)]
mod mysql_tests;
