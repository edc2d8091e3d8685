//! The one axum handler: every `/v1/*` request, whatever its verb, is parsed here into a
//! core request. Input limits are enforced before the core sees anything.

use std::net::SocketAddr;

use axum::Router;
use axum::body::{Body, to_bytes};
use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderMap, Method, StatusCode, Uri, header};
use axum::response::Response as HttpResponse;
use leash_core::{Core, Request};
use leash_types::{Operation, SecretString};
use serde_json::{Map, Value};

use crate::envelope::{error_response, errors, success};
use crate::path::logical_path;

/// HTTP settings.
#[derive(Debug, Clone)]
pub struct HttpConfig {
    /// Largest accepted request body in bytes (default 1 MiB); larger → 413.
    pub max_body: usize,
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            max_body: 1024 * 1024,
        }
    }
}

#[derive(Clone)]
struct AppState {
    core: Core,
    cfg: HttpConfig,
}

/// The axum application serving the Vault-compatible API.
pub fn app(core: Core, cfg: HttpConfig) -> Router {
    Router::new()
        .fallback(handle)
        .with_state(AppState { core, cfg })
}

fn token_from(headers: &HeaderMap) -> Option<SecretString> {
    if let Some(v) = headers.get("x-vault-token").and_then(|v| v.to_str().ok())
        && !v.is_empty()
    {
        return Some(SecretString::from(v.to_owned()));
    }
    let auth = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let t = auth
        .strip_prefix("Bearer ")
        .or_else(|| auth.strip_prefix("bearer "))?
        .trim();
    (!t.is_empty()).then(|| SecretString::from(t.to_owned()))
}

fn query_map(uri: &Uri) -> Map<String, Value> {
    let mut m = Map::new();
    if let Some(q) = uri.query() {
        for (k, v) in form_urlencoded::parse(q.as_bytes()) {
            m.insert(k.into_owned(), Value::String(v.into_owned()));
        }
    }
    m
}

fn json_error_message(e: &serde_json::Error) -> String {
    format!(
        "failed to parse JSON input: {} (line {}, column {})",
        strip_position(&e.to_string()),
        e.line(),
        e.column()
    )
}

fn strip_position(msg: &str) -> &str {
    msg.find(" at line ").map_or(msg, |i| &msg[..i])
}

async fn handle(
    State(st): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Body,
) -> HttpResponse {
    let Some(raw) = uri.path().strip_prefix("/v1/") else {
        return errors(StatusCode::NOT_FOUND, &[]);
    };
    let mut path = match logical_path(raw) {
        Ok(p) => p,
        Err(e) => return errors(StatusCode::BAD_REQUEST, &[&e.to_string()]),
    };
    let mut query = query_map(&uri);
    let list_query = query
        .get("list")
        .and_then(Value::as_str)
        .is_some_and(|v| v == "true" || v == "1");
    let operation = match method.as_str() {
        "GET" | "HEAD" if list_query => Operation::List,
        "GET" | "HEAD" => Operation::Read,
        "LIST" => Operation::List,
        "POST" | "PUT" => Operation::Update,
        "DELETE" => Operation::Delete,
        "PATCH" => {
            let ct = headers
                .get(header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("");
            if !ct.starts_with("application/merge-patch+json") {
                return errors(
                    StatusCode::UNSUPPORTED_MEDIA_TYPE,
                    &["PATCH requires Content-Type: application/merge-patch+json"],
                );
            }
            Operation::Patch
        }
        _ => return errors(StatusCode::METHOD_NOT_ALLOWED, &["unsupported HTTP method"]),
    };
    if operation == Operation::List {
        query.remove("list");
        if !path.ends_with('/') {
            path.push('/');
        }
    }

    let bytes = match to_bytes(body, st.cfg.max_body).await {
        Ok(b) => b,
        Err(_) => {
            return errors(
                StatusCode::PAYLOAD_TOO_LARGE,
                &[&format!(
                    "request body is larger than the {} byte limit",
                    st.cfg.max_body
                )],
            );
        }
    };
    let mut data = if bytes.iter().all(u8::is_ascii_whitespace) {
        Map::new()
    } else {
        match serde_json::from_slice::<Value>(&bytes) {
            Ok(Value::Object(m)) => m,
            Ok(_) => {
                return errors(
                    StatusCode::BAD_REQUEST,
                    &["the request body must be a JSON object"],
                );
            }
            Err(e) => return errors(StatusCode::BAD_REQUEST, &[&json_error_message(&e)]),
        }
    };
    // Query parameters are request data for reads, lists and deletes (Vault does the same).
    if matches!(
        operation,
        Operation::Read | Operation::List | Operation::Delete
    ) {
        for (k, v) in query {
            data.entry(k).or_insert(v);
        }
    }

    let mut req = Request::new(operation, path);
    req.data = data;
    req.token = token_from(&headers);
    req.remote_addr = Some(peer);
    let request_id = req.id.clone();
    let logical = req.path.clone();
    let mut resp = match st.core.handle(req).await {
        Ok(r) => success(&logical, &request_id, r),
        Err(e) => error_response(&e),
    };
    if method == Method::HEAD {
        *resp.body_mut() = Body::empty();
    }
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_errors_say_where() {
        let e = serde_json::from_slice::<Value>(b"{\"a\": 1,,}").unwrap_err();
        let m = json_error_message(&e);
        assert!(m.starts_with("failed to parse JSON input:"), "{m}");
        assert!(m.contains("line 1, column"), "{m}");
    }

    #[test]
    fn bearer_and_vault_token_headers() {
        let mut h = HeaderMap::new();
        h.insert(header::AUTHORIZATION, "Bearer abc".parse().unwrap());
        assert!(token_from(&h).is_some());
        h.insert("x-vault-token", "".parse().unwrap());
        assert!(
            token_from(&h).is_some(),
            "empty X-Vault-Token falls back to bearer"
        );
        assert!(token_from(&HeaderMap::new()).is_none());
    }
}
