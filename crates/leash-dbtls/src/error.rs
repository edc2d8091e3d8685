//! What can go wrong setting up TLS to a database, and how a handshake failure is put
//! into words an operator can act on.

use std::path::PathBuf;

/// A TLS setup or handshake failure. Messages never carry a private key or a password.
#[derive(Debug, thiserror::Error)]
pub enum DbTlsError {
    /// A TLS setting has a value leash cannot use (operator's fault).
    #[error("invalid {key}: {reason}")]
    Invalid {
        /// The setting (`sslmode`, `sslrootcert`, `tls_ca`, …).
        key: &'static str,
        /// Why.
        reason: String,
    },
    /// A certificate or key file could not be read.
    #[error("cannot read {key} file {path:?}: {source}")]
    ReadFile {
        /// The setting naming the file.
        key: &'static str,
        /// The file.
        path: PathBuf,
        /// The OS's reason.
        #[source]
        source: std::io::Error,
    },
    /// The server does not speak TLS, and the mode requires it.
    #[error(
        "the server does not accept TLS connections, and sslmode={mode} requires TLS (use sslmode=prefer or disable only if the network is trusted)"
    )]
    ServerRefusedTls {
        /// The mode in force.
        mode: &'static str,
    },
    /// The TLS handshake failed (see [`describe_tls_failure`]).
    #[error("TLS handshake with {host} failed: {message}")]
    Handshake {
        /// The host as leash verified it.
        host: String,
        /// What went wrong, in words.
        message: String,
    },
    /// The network failed (connect, read, write).
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// The PostgreSQL driver failed after the TLS layer was set up.
    #[error("{0}")]
    Postgres(#[from] tokio_postgres::Error),
}

/// A handshake failure (the text rustls or a driver gives) in words that say whose
/// certificate is wrong and how: an unknown CA, a name mismatch, an expired
/// certificate.
pub fn describe_tls_failure(text: &str) -> String {
    let hint = if text.contains("UnknownIssuer") {
        Some(
            "the certificate of the server is not signed by the CA leash was given (sslrootcert / tls_ca): a wrong CA, or a server certificate from another CA",
        )
    } else if text.contains("not valid for name") || text.contains("NotValidForName") {
        Some(
            "the certificate of the server does not name the host leash connected to (sslmode=verify-full checks it; connect by a name in the certificate, or set tls_server_name)",
        )
    } else if text.contains("Expired") || text.contains("expired") {
        Some("the certificate of the server has expired (or is used before its start date)")
    } else if text.contains("CertificateRequired") || text.contains("certificate required") {
        Some("the server requires a client certificate (sslcert and sslkey)")
    } else {
        None
    };
    match hint {
        Some(h) => format!("{h} ({text})"),
        None => text.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_issuer_names_the_ca_problem() {
        let m = describe_tls_failure("invalid peer certificate: UnknownIssuer");
        assert!(m.contains("not signed by the CA"), "{m}");
        // Clients see messages with quoted parts masked: no quote in the hint.
        assert!(!m.contains('\'') && !m.contains('"'), "{m}");
        assert!(m.contains("UnknownIssuer"));
        assert_eq!(describe_tls_failure("other"), "other");
    }
}
