//! The HTTP client for keys and the Kubernetes API: bounded, no redirects, optionally trusting only a pinned CA.

use std::time::Duration;

use super::{FetchError, KeyError};

/// The certificates of a PEM text (a CA bundle), at least one.
pub fn certificates_from_pem(
    pem: &str,
) -> Result<Vec<rustls::pki_types::CertificateDer<'static>>, KeyError> {
    let mut reader = std::io::BufReader::new(pem.as_bytes());
    let certs = rustls_pemfile::certs(&mut reader)
        .collect::<Result<Vec<_>, _>>()
        .map_err(KeyError::Certificates)?;
    if certs.is_empty() {
        return Err(KeyError::NoCertificate);
    }
    Ok(certs)
}

/// An HTTP client for fetching keys and calling the Kubernetes API: the whole request
/// bounded by `timeout`, no redirects (a bearer token must not follow one), and, when
/// `ca_pem` is given, TLS that trusts **only** those certificates (the system's roots are
/// not consulted), so a server certificate from any other CA is refused.
pub fn http_client(ca_pem: Option<&str>, timeout: Duration) -> Result<reqwest::Client, KeyError> {
    let mut builder = reqwest::Client::builder()
        .timeout(timeout)
        .connect_timeout(timeout.min(Duration::from_secs(5)))
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("leash/", env!("CARGO_PKG_VERSION")));
    if let Some(pem) = ca_pem.filter(|p| !p.trim().is_empty()) {
        let mut roots = rustls::RootCertStore::empty();
        for cert in certificates_from_pem(pem)? {
            roots.add(cert).map_err(KeyError::CaCertificate)?;
        }
        let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
        let tls = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(KeyError::Tls)?
            .with_root_certificates(roots)
            .with_no_client_auth();
        builder = builder.use_preconfigured_tls(tls);
    }
    builder.build().map_err(KeyError::Client)
}

/// Why an HTTP exchange failed, from the innermost cause (e.g. `invalid peer
/// certificate: UnknownIssuer`), without the URL.
pub fn describe_http_error(e: &reqwest::Error) -> String {
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

/// Reads a response body of at most `limit` bytes.
pub async fn read_body(mut resp: reqwest::Response, limit: usize) -> Result<Vec<u8>, FetchError> {
    let mut body = Vec::new();
    loop {
        match resp.chunk().await {
            Ok(Some(chunk)) => {
                if body.len() + chunk.len() > limit {
                    return Err(FetchError::TooLarge(limit));
                }
                body.extend_from_slice(&chunk);
            }
            Ok(None) => return Ok(body),
            Err(e) => return Err(FetchError::Http(e)),
        }
    }
}
