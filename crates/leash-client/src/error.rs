//! [`ClientError`]: what can go wrong talking to the server, split by whose fault it is.
//!
//! Messages never contain the token: requests are described by method and path only,
//! and server error bodies (`{"errors":[…]}`) carry no secrets by the server's own rule.

use std::fmt::Write as _;

/// A failed call.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The server answered with an error status. `errors` is its `{"errors":[…]}` list
    /// (empty for a bare 404), or the body text when the body was not JSON.
    #[error("Error: {status}: {}", errors.join("; "))]
    Api {
        /// HTTP status code.
        status: u16,
        /// The server's error messages.
        errors: Vec<String>,
    },
    /// The request did not get an answer: connection refused, TLS failure, timeout.
    #[error("{}", transport_message(.0))]
    Transport(reqwest::Error),
    /// The server answered, but not in the expected shape.
    #[error("unexpected response from server: {0}")]
    Decode(String),
    /// Local configuration is unusable (bad address, unreadable CA file, bad variable).
    #[error("{0}")]
    Config(String),
}

impl ClientError {
    /// The HTTP status, for an [`ClientError::Api`] error.
    pub fn status(&self) -> Option<u16> {
        match self {
            ClientError::Api { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// Builds the error for a non-success response from its decoded JSON body.
    pub fn from_response_body(status: u16, body: Option<&serde_json::Value>) -> ClientError {
        ClientError::Api {
            status,
            errors: errors_of(body),
        }
    }
}

/// The `errors` list of a Vault error body; non-string entries are rendered as JSON.
pub(crate) fn errors_of(body: Option<&serde_json::Value>) -> Vec<String> {
    let Some(list) = body
        .and_then(|b| b.get("errors"))
        .and_then(|e| e.as_array())
    else {
        return Vec::new();
    };
    list.iter()
        .map(|e| match e {
            serde_json::Value::String(s) => s.clone(),
            other => other.to_string(),
        })
        .collect()
}

/// reqwest's own `Display` hides the cause ("error sending request"); show the chain.
fn transport_message(e: &reqwest::Error) -> String {
    let mut msg = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        let _ = write!(msg, ": {s}");
        source = s.source();
    }
    msg
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn api_error_display_joins_messages() {
        let e = ClientError::from_response_body(
            400,
            Some(&json!({"errors": ["bad policy", "line 3"]})),
        );
        assert_eq!(e.to_string(), "Error: 400: bad policy; line 3");
        assert_eq!(e.status(), Some(400));
    }

    #[test]
    fn missing_or_odd_errors_lists_decode_gracefully() {
        assert!(errors_of(None).is_empty());
        assert!(errors_of(Some(&json!({}))).is_empty());
        assert!(errors_of(Some(&json!({"errors": "nope"}))).is_empty());
        assert_eq!(
            errors_of(Some(&json!({"errors": [1, "x"]}))),
            vec!["1", "x"]
        );
    }
}
