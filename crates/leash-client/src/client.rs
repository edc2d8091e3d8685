//! [`Client`]: one HTTP connection pool to one server, with one (optional) token.
//!
//! [`Client::request`] is the single place that talks HTTP: it adds `/v1/`, the
//! `X-Vault-Token` and `X-Vault-Request` headers, sends JSON, and decodes the answer into
//! an [`ApiResponse`] whatever its status, so tests can assert on 4xx answers. The
//! generic helpers ([`Client::read`], [`Client::write`], [`Client::list`],
//! [`Client::delete`]) follow the Vault CLI's conventions: a 404 from a read or list is
//! `Ok(None)`, any other error status is [`ClientError::Api`].
//!
//! Not here: retries, token renewal, caching. Those belong to the agent.

use std::time::Duration;

use reqwest::Method;
use reqwest::header::{HeaderMap, HeaderValue};
use secrecy::{ExposeSecret, SecretString};
use serde_json::Value;

use crate::{ClientConfig, ClientError};

/// Header carrying the token.
pub const TOKEN_HEADER: &str = "X-Vault-Token";
/// Header hvac and the Vault CLI send on every request (a CSRF guard on the server).
pub const REQUEST_HEADER: &str = "X-Vault-Request";

/// Longest error body text kept from a non-JSON error response.
const MAX_ERROR_TEXT: usize = 2048;

/// A client for one server. Cheap to clone: clones share the connection pool.
#[derive(Clone, Debug)]
pub struct Client {
    http: reqwest::Client,
    /// `address` without a trailing slash.
    address: String,
    token: Option<SecretString>,
}

/// A decoded answer, whatever its status.
///
/// `Debug` prints only the status: the body may hold secrets (a created token, database
/// credentials).
#[derive(Clone)]
pub struct ApiResponse {
    /// HTTP status code.
    pub status: u16,
    /// The JSON body; `None` when the body was empty (204).
    pub body: Option<Value>,
}

impl std::fmt::Debug for ApiResponse {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiResponse")
            .field("status", &self.status)
            .field("body", &self.body.as_ref().map(|_| "[REDACTED]"))
            .finish()
    }
}

impl ApiResponse {
    /// Whether the status is 2xx.
    pub fn is_success(&self) -> bool {
        (200..300).contains(&self.status)
    }

    /// The body of a 2xx answer, or the [`ClientError::Api`] of any other.
    pub fn into_result(self) -> Result<Option<Value>, ClientError> {
        if self.is_success() {
            Ok(self.body)
        } else {
            Err(ClientError::from_response_body(
                self.status,
                self.body.as_ref(),
            ))
        }
    }

    /// The server's error messages (empty for a success or a bare 404).
    pub fn errors(&self) -> Vec<String> {
        crate::error::errors_of(self.body.as_ref())
    }
}

impl Client {
    /// Builds a client. Fails on an address that is not `http[s]://…` or an unreadable
    /// CA file.
    pub fn new(config: ClientConfig) -> Result<Client, ClientError> {
        let address = config.address.trim_end_matches('/').to_owned();
        let url = reqwest::Url::parse(&address)
            .map_err(|e| ClientError::Config(format!("invalid address {address:?}: {e}")))?;
        if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
            return Err(ClientError::Config(format!(
                "invalid address {address:?}: expected http://host:port or https://host:port"
            )));
        }
        let mut headers = HeaderMap::new();
        headers.insert(REQUEST_HEADER, HeaderValue::from_static("true"));
        let mut builder = reqwest::Client::builder()
            .use_rustls_tls()
            .default_headers(headers)
            .timeout(config.timeout)
            .connect_timeout(config.timeout.min(Duration::from_secs(10)))
            .user_agent(concat!("leash-client/", env!("CARGO_PKG_VERSION")));
        if let Some(path) = &config.ca_cert {
            let pem = std::fs::read(path).map_err(|e| {
                ClientError::Config(format!("reading CA certificate {}: {e}", path.display()))
            })?;
            let certs = reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| {
                ClientError::Config(format!("parsing CA certificate {}: {e}", path.display()))
            })?;
            if certs.is_empty() {
                return Err(ClientError::Config(format!(
                    "no certificate found in {}",
                    path.display()
                )));
            }
            for cert in certs {
                builder = builder.add_root_certificate(cert);
            }
        }
        if config.tls_skip_verify {
            builder = builder.danger_accept_invalid_certs(true);
        }
        let http = builder
            .build()
            .map_err(|e| ClientError::Config(format!("building HTTP client: {e}")))?;
        Ok(Client {
            http,
            address,
            token: config.token,
        })
    }

    /// The server address this client talks to.
    pub fn address(&self) -> &str {
        &self.address
    }

    /// The token sent with each request.
    pub fn token(&self) -> Option<&SecretString> {
        self.token.as_ref()
    }

    /// Replaces the token.
    pub fn set_token(&mut self, token: Option<SecretString>) {
        self.token = token;
    }

    /// A client sharing this one's connections but sending `token`.
    pub fn with_token(&self, token: SecretString) -> Client {
        Client {
            http: self.http.clone(),
            address: self.address.clone(),
            token: Some(token),
        }
    }

    /// The full URL of an API path (`sys/health` → `http://…/v1/sys/health`).
    pub fn url(&self, path: &str) -> String {
        format!("{}/v1/{}", self.address, path.trim_start_matches('/'))
    }

    /// Sends one request. `method` is any HTTP method name, `LIST` included; `path` is
    /// the API path without `/v1/` (a query string may follow). Returns the decoded
    /// answer whatever its status; fails on transport errors and on a body that is
    /// not JSON (as [`ClientError::Api`] with the body text if the status was an error,
    /// [`ClientError::Decode`] otherwise).
    pub async fn request(
        &self,
        method: &str,
        path: &str,
        body: Option<&Value>,
    ) -> Result<ApiResponse, ClientError> {
        let method = Method::from_bytes(method.as_bytes())
            .map_err(|_| ClientError::Config(format!("invalid HTTP method {method:?}")))?;
        let mut req = self.http.request(method, self.url(path));
        if let Some(token) = &self.token {
            let mut value = HeaderValue::from_str(token.expose_secret()).map_err(|_| {
                ClientError::Config("token contains characters not allowed in a header".into())
            })?;
            value.set_sensitive(true);
            req = req.header(TOKEN_HEADER, value);
        }
        if let Some(body) = body {
            req = req.json(body);
        }
        let resp = req.send().await.map_err(ClientError::Transport)?;
        let status = resp.status().as_u16();
        let bytes = resp.bytes().await.map_err(ClientError::Transport)?;
        decode_body(status, &bytes)
    }

    /// `GET path`. A 404 is `Ok(None)` unless its body carries data (a soft-deleted KV
    /// version, which the Vault client also returns).
    pub async fn read(&self, path: &str) -> Result<Option<Value>, ClientError> {
        let resp = self.request("GET", path, None).await?;
        if resp.status == 404 {
            return Ok(resp
                .body
                .filter(|b| b.get("data").is_some_and(|d| !d.is_null())));
        }
        resp.into_result()
    }

    /// `PUT path` with a JSON body (Vault treats PUT and POST alike). `Ok(None)` for 204.
    pub async fn write(&self, path: &str, body: &Value) -> Result<Option<Value>, ClientError> {
        self.request("PUT", path, Some(body)).await?.into_result()
    }

    /// `LIST path`. A 404 (nothing there) is `Ok(None)`.
    pub async fn list(&self, path: &str) -> Result<Option<Value>, ClientError> {
        let resp = self.request("LIST", path, None).await?;
        if resp.status == 404 {
            return Ok(None);
        }
        resp.into_result()
    }

    /// `DELETE path`. `Ok(None)` for 204.
    pub async fn delete(&self, path: &str) -> Result<Option<Value>, ClientError> {
        self.request("DELETE", path, None).await?.into_result()
    }
}

/// Decodes a response body: empty → `None`, JSON → `Some`, anything else → an error.
fn decode_body(status: u16, bytes: &[u8]) -> Result<ApiResponse, ClientError> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(ApiResponse { status, body: None });
    }
    match serde_json::from_slice::<Value>(bytes) {
        Ok(v) => Ok(ApiResponse {
            status,
            body: Some(v),
        }),
        Err(e) => {
            if (200..300).contains(&status) {
                Err(ClientError::Decode(format!(
                    "status {status}: body is not JSON: {e}"
                )))
            } else {
                let text = String::from_utf8_lossy(&bytes[..bytes.len().min(MAX_ERROR_TEXT)]);
                Err(ClientError::Api {
                    status,
                    errors: vec![text.trim().to_owned()],
                })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_decode_by_content() {
        let r = decode_body(204, b"").unwrap();
        assert_eq!((r.status, r.body), (204, None));
        let r = decode_body(404, b"{\"errors\":[]}").unwrap();
        assert!(r.errors().is_empty());
        assert!(matches!(
            r.into_result(),
            Err(ClientError::Api { status: 404, errors }) if errors.is_empty()
        ));
        let e = decode_body(502, b"Bad Gateway\n").unwrap_err();
        assert!(
            matches!(e, ClientError::Api { status: 502, ref errors } if errors == &["Bad Gateway"])
        );
        assert!(matches!(
            decode_body(200, b"<html>"),
            Err(ClientError::Decode(_))
        ));
    }

    #[test]
    fn rejects_addresses_that_are_not_http() {
        for bad in ["127.0.0.1:8200", "ftp://x", "http://", ""] {
            assert!(
                matches!(
                    Client::new(ClientConfig::new(bad)),
                    Err(ClientError::Config(_))
                ),
                "{bad}"
            );
        }
        let c = Client::new(ClientConfig::new("http://127.0.0.1:8200/")).unwrap();
        assert_eq!(c.url("/sys/health"), "http://127.0.0.1:8200/v1/sys/health");
    }

    #[test]
    fn debug_hides_token_and_body() {
        let c = Client::new(ClientConfig::new("http://h").with_token("lsh.secret".into())).unwrap();
        assert!(!format!("{c:?}").contains("lsh.secret"));
        let r = ApiResponse {
            status: 200,
            body: Some(serde_json::json!({"auth": {"client_token": "lsh.secret"}})),
        };
        assert!(!format!("{r:?}").contains("lsh.secret"));
    }
}
