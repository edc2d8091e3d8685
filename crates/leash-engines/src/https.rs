//! The HTTP client the cloud engines (`kubernetes`, `aws`) call their APIs with, and the
//! one error type of those calls.
//!
//! Bounded (a whole exchange within a timeout, answers within a size limit), no
//! redirects (a bearer token or a signed request must not follow one), and, when a CA is
//! pinned, TLS that trusts **only** that CA. Errors carry the API's status and reason,
//! never a request body, a token or a signature.

use std::time::Duration;

/// Largest API answer read.
pub(crate) const MAX_BODY: usize = 4 * 1024 * 1024;

/// Why a call to a cloud API failed. Messages are safe to show: no credential, no body
/// leash sent.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ApiError {
    /// The client could not be built (an unusable pinned CA).
    #[error("{0}")]
    Setup(String),
    /// The API could not be reached, or the exchange broke or timed out.
    #[error("cannot reach the API: {0}")]
    Transport(String),
    /// The API answered with an error status; `reason` is its own error text.
    #[error("{status}: {reason}")]
    Status {
        /// The HTTP status.
        status: u16,
        /// The API's error code and message (Kubernetes `Status.message`, AWS
        /// `Error/Code` and `Error/Message`).
        reason: String,
    },
    /// The API answered with something leash cannot read.
    #[error("unreadable answer: {0}")]
    Decode(String),
}

/// The certificates of a PEM text (a CA bundle), at least one.
fn certificates_from_pem(
    pem: &str,
) -> Result<Vec<rustls::pki_types::CertificateDer<'static>>, ApiError> {
    let mut reader = std::io::BufReader::new(pem.as_bytes());
    let certs = rustls_pemfile::certs(&mut reader)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| ApiError::Setup(format!("cannot read the PEM certificates: {e}")))?;
    if certs.is_empty() {
        return Err(ApiError::Setup(
            "no PEM certificate found (expected a CERTIFICATE block)".to_owned(),
        ));
    }
    Ok(certs)
}

/// A client: the whole exchange bounded by `timeout`, no redirects, and with `ca_pem`
/// TLS trusting only those certificates.
pub(crate) fn client(ca_pem: Option<&str>, timeout: Duration) -> Result<reqwest::Client, ApiError> {
    let mut builder = reqwest::Client::builder()
        .timeout(timeout)
        .connect_timeout(timeout.min(Duration::from_secs(5)))
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("leash/", env!("CARGO_PKG_VERSION")));
    if let Some(pem) = ca_pem.filter(|p| !p.trim().is_empty()) {
        let mut roots = rustls::RootCertStore::empty();
        for cert in certificates_from_pem(pem)? {
            roots
                .add(cert)
                .map_err(|e| ApiError::Setup(format!("unusable CA certificate: {e}")))?;
        }
        let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
        let tls = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| ApiError::Setup(format!("TLS setup failed: {e}")))?
            .with_root_certificates(roots)
            .with_no_client_auth();
        builder = builder.use_preconfigured_tls(tls);
    }
    builder
        .build()
        .map_err(|e| ApiError::Setup(format!("HTTP client setup failed: {}", describe(&e))))
}

/// Checks that a PEM text holds usable CA certificates (for configuration writes).
pub(crate) fn check_ca(pem: &str) -> Result<(), ApiError> {
    certificates_from_pem(pem).map(|_| ())
}

/// Why an exchange failed, from the innermost cause, without the URL.
pub(crate) fn describe(e: &reqwest::Error) -> String {
    if e.is_timeout() {
        return "timed out".to_owned();
    }
    let mut deepest: &dyn std::error::Error = e;
    while let Some(next) = deepest.source() {
        deepest = next;
    }
    let inner = deepest.to_string();
    if e.is_connect() {
        format!("cannot connect: {inner}")
    } else {
        inner
    }
}

/// Sends a request and reads its answer (status, body of at most [`MAX_BODY`] bytes).
pub(crate) async fn send(req: reqwest::RequestBuilder) -> Result<(u16, Vec<u8>), ApiError> {
    let mut resp = req
        .send()
        .await
        .map_err(|e| ApiError::Transport(describe(&e)))?;
    let status = resp.status().as_u16();
    let mut body = Vec::new();
    loop {
        match resp.chunk().await {
            Ok(Some(chunk)) => {
                if body.len() + chunk.len() > MAX_BODY {
                    return Err(ApiError::Decode(format!(
                        "the answer is larger than {MAX_BODY} bytes"
                    )));
                }
                body.extend_from_slice(&chunk);
            }
            Ok(None) => return Ok((status, body)),
            Err(e) => return Err(ApiError::Transport(describe(&e))),
        }
    }
}
