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

use crate::envelope::{error_response_at, errors, success};
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

/// The axum application serving the Vault-compatible API (`/v1/*`) and the approval
/// page (`/ui/*`).
pub fn app(core: Core, cfg: HttpConfig) -> Router {
    let api = Router::new().fallback(handle).with_state(AppState {
        core: core.clone(),
        cfg,
    });
    crate::ui::routes(core).merge(api)
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

/// The response header that echoes a request's trace id, so a client can reuse it.
const TRACE_ID_HEADER: &str = "x-leash-trace-id";

/// The trace-id of a valid W3C `traceparent` (`version-traceid-parentid-flags`).
fn traceparent_trace_id(v: &str) -> Option<String> {
    let mut parts = v.trim().split('-');
    let (version, trace, parent, flags) =
        (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    let hex = |s: &str, n: usize| {
        s.len() == n
            && s.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    };
    let ok = hex(version, 2)
        && version != "ff"
        && (version != "00" || parts.next().is_none())
        && hex(trace, 32)
        && hex(parent, 16)
        && hex(flags, 2)
        && trace.bytes().any(|b| b != b'0')
        && parent.bytes().any(|b| b != b'0');
    ok.then(|| trace.to_owned())
}

/// The trace id of a request: the `traceparent` trace-id, else an `X-Request-Id` of at
/// most 128 characters from `[A-Za-z0-9._:-]` (anything else is ignored so no caller
/// can inject text into audit lines), else a generated one.
fn trace_id_from(headers: &HeaderMap) -> String {
    if let Some(t) = headers
        .get("traceparent")
        .and_then(|v| v.to_str().ok())
        .and_then(traceparent_trace_id)
    {
        return t;
    }
    if let Some(id) = headers.get("x-request-id").and_then(|v| v.to_str().ok()) {
        let id = id.trim();
        if !id.is_empty()
            && id.len() <= 128
            && id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'-'))
        {
            return id.to_owned();
        }
    }
    Request::new_trace_id()
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
    req.trace_id = trace_id_from(&headers);
    let trace_header = header::HeaderValue::from_str(&req.trace_id).ok();
    let request_id = req.id.clone();
    let logical = req.path.clone();
    let mut resp = match st.core.handle(req).await {
        Ok(r) => success(&logical, &request_id, r),
        Err(e) => error_response_at(&logical, operation, &e),
    };
    tracing::debug!(
        method = %method,
        path = %logical,
        status = resp.status().as_u16(),
        request_id = %request_id,
        "request"
    );
    if let Some(v) = trace_header {
        resp.headers_mut().insert(TRACE_ID_HEADER, v);
    }
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
    fn trace_id_from_traceparent_then_request_id_then_generated() {
        let mut h = HeaderMap::new();
        h.insert(
            "traceparent",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
                .parse()
                .unwrap(),
        );
        h.insert("x-request-id", "req-1".parse().unwrap());
        assert_eq!(trace_id_from(&h), "4bf92f3577b34da6a3ce929d0e0e4736");
        // An invalid traceparent (all-zero trace id, upper case, bad shape) is ignored.
        for bad in [
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-xx",
        ] {
            h.insert("traceparent", bad.parse().unwrap());
            assert_eq!(trace_id_from(&h), "req-1", "{bad}");
        }
        // A future version may append fields.
        h.insert(
            "traceparent",
            "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-ab"
                .parse()
                .unwrap(),
        );
        assert_eq!(trace_id_from(&h), "4bf92f3577b34da6a3ce929d0e0e4736");
        h.remove("traceparent");
        h.insert("x-request-id", "bad id\"with quotes".parse().unwrap());
        let g = trace_id_from(&h);
        assert_eq!(g.len(), 32, "{g}");
        assert!(g.bytes().all(|b| b.is_ascii_hexdigit()), "{g}");
        assert_ne!(g, trace_id_from(&HeaderMap::new()));
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
