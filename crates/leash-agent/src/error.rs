//! [`AgentError`]: why the agent cannot start or had to stop, by whose fault.

use crate::template::TemplateError;

/// An error of the agent.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// The configuration file is unreadable or invalid; the message names the key.
    #[error("agent configuration: {0}")]
    Config(String),
    /// A template does not parse, or names a key its data lacks.
    #[error(transparent)]
    Template(#[from] TemplateError),
    /// Talking to the server failed (after the configured retries).
    #[error("server: {0}")]
    Server(#[from] leash_client::ClientError),
    /// Logging in failed.
    #[error("auto_auth: {0}")]
    Auth(String),
    /// A local file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The cause.
        source: std::io::Error,
    },
    /// The child process of exec mode could not be started or signalled.
    #[error("exec: {0}")]
    Exec(String),
    /// Retries ran out and `exit_on_retry_failure` is set.
    #[error("giving up after {attempts} failed attempts: {last}")]
    RetriesExhausted {
        /// How many attempts failed in a row.
        attempts: u32,
        /// The last failure.
        last: String,
    },
}

impl AgentError {
    pub(crate) fn io(path: impl AsRef<std::path::Path>, source: std::io::Error) -> AgentError {
        AgentError::Io {
            path: path.as_ref().display().to_string(),
            source,
        }
    }
}
