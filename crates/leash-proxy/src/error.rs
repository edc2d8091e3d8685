//! [`ProxyError`]: why the proxy cannot start or had to stop.

/// An error of the proxy.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    /// The configuration is invalid; the message names the key, never a secret.
    #[error("proxy configuration: {0}")]
    Config(String),
    /// The agent part (login, secrets, renewal) failed.
    #[error(transparent)]
    Agent(#[from] leash_agent::AgentError),
    /// A listener could not be opened, or a file read.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The cause.
        source: std::io::Error,
    },
    /// TLS setup failed (a bad `ca_cert`).
    #[error("tls: {0}")]
    Tls(String),
}

pub(crate) fn cfg(msg: impl Into<String>) -> ProxyError {
    ProxyError::Config(msg.into())
}
