//! The HTTP client for keys and the Kubernetes API: bounded, no redirects, optionally trusting only a pinned CA.

use std::time::Duration;

/// The certificates of a PEM text (a CA bundle), at least one.
pub fn certificates_from_pem(
    pem: &str,
) -> Result<Vec<rustls::pki_types::CertificateDer<'static>>, String> {
    let mut reader = std::io::BufReader::new(pem.as_bytes());
    let certs = rustls_pemfile::certs(&mut reader)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("cannot read the PEM certificates: {e}"))?;
    if certs.is_empty() {
        return Err("no PEM certificate found (expected a CERTIFICATE block)".to_owned());
    }
    Ok(certs)
}

/// An HTTP client for fetching keys and calling the Kubernetes API: the whole request
/// bounded by `timeout`, no redirects (a bearer token must not follow one), and, when
/// `ca_pem` is given, TLS that trusts **only** those certificates (the system's roots are
/// not consulted), so a server certificate from any other CA is refused.
pub fn http_client(ca_pem: Option<&str>, timeout: Duration) -> Result<reqwest::Client, String> {
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
                .map_err(|e| format!("unusable CA certificate: {e}"))?;
        }
        let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
        let tls = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| format!("TLS setup failed: {e}"))?
            .with_root_certificates(roots)
            .with_no_client_auth();
        builder = builder.use_preconfigured_tls(tls);
    }
    builder
        .build()
        .map_err(|e| format!("HTTP client setup failed: {}", describe_http_error(&e)))
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
pub async fn read_body(mut resp: reqwest::Response, limit: usize) -> Result<Vec<u8>, String> {
    let mut body = Vec::new();
    loop {
        match resp.chunk().await {
            Ok(Some(chunk)) => {
                if body.len() + chunk.len() > limit {
                    return Err(format!("the answer is larger than {limit} bytes"));
                }
                body.extend_from_slice(&chunk);
            }
            Ok(None) => return Ok(body),
            Err(e) => return Err(describe_http_error(&e)),
        }
    }
}
