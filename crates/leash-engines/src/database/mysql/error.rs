//! `mysql_async` errors → [`DbError`], with every secret scrubbed and MySQL's error code kept.

use leash_types::secret::scrub;

use crate::database::DbError;

/// `url` with its user part (everything before the last `@`, after any `scheme://`)
/// hidden: it may hold a literal password.
pub(super) fn redact_url(url: &str) -> String {
    let start = url.find("://").map_or(0, |s| s + 3);
    match url.rfind('@') {
        Some(at) if at >= start => format!("{}[redacted]{}", &url[..start], &url[at..]),
        _ => url.to_owned(),
    }
}

/// (`"<code>/<SQLSTATE>"`, message) of a driver error, scrubbed. Errors that are not the
/// server's (connection lost, protocol) have an empty code.
pub(super) fn parts(e: &mysql_async::Error, secrets: &[&str]) -> (String, String) {
    match e {
        mysql_async::Error::Server(s) => (
            format!("{}/{}", s.code, s.state),
            scrub(&s.message, secrets),
        ),
        other => (
            String::new(),
            scrub(&crate::database::error_chain(other), secrets),
        ),
    }
}

pub(super) fn db_error(
    operation: &'static str,
    e: &mysql_async::Error,
    secrets: &[&str],
) -> DbError {
    let (sqlstate, message) = parts(e, secrets);
    DbError::Database {
        operation,
        sqlstate,
        message,
    }
}

pub(super) fn statement_error(index: usize, e: &mysql_async::Error, secrets: &[&str]) -> DbError {
    let (sqlstate, message) = parts(e, secrets);
    DbError::Statement {
        index,
        sqlstate,
        message,
    }
}

pub(super) fn connect_error(e: &mysql_async::Error, secrets: &[&str]) -> DbError {
    let message = match e {
        mysql_async::Error::Server(s) => format!("ERROR {} ({}): {}", s.code, s.state, s.message),
        other => crate::database::error_chain(other),
    };
    let message = if message.contains("certificate") {
        leash_dbtls::describe_tls_failure(&message)
    } else {
        message
    };
    DbError::Connect {
        message: scrub(&message, secrets),
    }
}

pub(super) fn server_code(e: &mysql_async::Error) -> Option<u16> {
    match e {
        mysql_async::Error::Server(s) => Some(s.code),
        _ => None,
    }
}

/// The MySQL server error code of `e` (e.g. `1396`), when the server reported one. This
/// module stores it in the `sqlstate` field as `"<code>/<SQLSTATE>"`.
pub fn server_error_code(e: &DbError) -> Option<u16> {
    let (code, _) = e.sqlstate()?.split_once('/')?;
    code.parse().ok()
}

/// A copy of `e`, for reporting one failure against every user of a batch. Variants this
/// module does not produce at that point are carried by their message.
pub(super) fn duplicate(e: &DbError) -> DbError {
    match e {
        DbError::Connect { message } => DbError::Connect {
            message: message.clone(),
        },
        DbError::Statement {
            index,
            sqlstate,
            message,
        } => DbError::Statement {
            index: *index,
            sqlstate: sqlstate.clone(),
            message: message.clone(),
        },
        DbError::Database {
            operation,
            sqlstate,
            message,
        } => DbError::Database {
            operation,
            sqlstate: sqlstate.clone(),
            message: message.clone(),
        },
        other => DbError::Database {
            operation: "revocation",
            sqlstate: String::new(),
            message: other.to_string(),
        },
    }
}
