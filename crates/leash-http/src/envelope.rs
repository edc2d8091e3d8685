//! Vault's response shapes: the JSON envelope, plain JSON for health-style endpoints,
//! `{"errors": [...]}` errors, and the one table from [`CoreError`] to status code.
//!
//! Details clients depend on: `Content-Type: application/json` exactly; 204 with no
//! body when there is nothing to say; a missing or bad token is 403, never 401; a
//! not-found read is 404 (with one error string saying what was not found; Vault's
//! is empty).

use axum::body::Body;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::Response as HttpResponse;
use leash_core::{AuthInfo, CoreError, Response, ResponseKind};
use leash_types::{ExposeSecret, Operation};
use serde_json::{Map, Value, json};

/// `sys/` paths whose `data` keys Vault also copies to the top level.
const SYS_INJECT: &[&str] = &[
    "sys/audit",
    "sys/auth",
    "sys/capabilities",
    "sys/mounts",
    "sys/policy",
    "sys/wrapping/wrap",
    "sys/remount",
    "sys/rotate",
    "sys/key-status",
    "sys/ha-status",
];

fn injects(path: &str) -> bool {
    SYS_INJECT.iter().any(|p| path.starts_with(p))
}

/// A JSON response with the exact content type.
pub fn json_response(status: StatusCode, body: &Value) -> HttpResponse {
    let bytes = serde_json::to_vec(body).unwrap_or_else(|_| b"{}".to_vec());
    let mut r = HttpResponse::new(Body::from(bytes));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    r
}

/// An empty 204.
pub fn no_content() -> HttpResponse {
    let mut r = HttpResponse::new(Body::empty());
    *r.status_mut() = StatusCode::NO_CONTENT;
    r
}

/// `{"errors": [msg…]}` with a status.
pub fn errors(status: StatusCode, msgs: &[&str]) -> HttpResponse {
    json_response(status, &json!({ "errors": msgs }))
}

fn auth_json(a: &AuthInfo) -> Value {
    let mut v = json!({
        "client_token": a.client_token.expose_secret(),
        "accessor": a.accessor,
        "policies": a.policies,
        "token_policies": a.token_policies,
        "metadata": if a.metadata.is_empty() { Value::Null } else { json!(a.metadata) },
        "lease_duration": a.lease_duration,
        "renewable": a.renewable,
        "entity_id": a.entity_id,
        "token_type": a.token_type,
        "orphan": a.orphan,
        "mfa_requirement": null,
        "num_uses": a.num_uses,
    });
    if a.token_policies.is_empty()
        && let Some(o) = v.as_object_mut()
    {
        o.remove("token_policies");
    }
    v
}

/// Turns a core response into HTTP.
pub fn success(path: &str, request_id: &str, resp: Response) -> HttpResponse {
    let status = match resp.kind {
        ResponseKind::Raw(code) => {
            let code = StatusCode::from_u16(code).unwrap_or(StatusCode::OK);
            return json_response(code, &resp.data.unwrap_or(Value::Null));
        }
        ResponseKind::Text(code) => {
            let text = match resp.data {
                Some(Value::String(s)) => s,
                _ => String::new(),
            };
            let mut r = HttpResponse::new(Body::from(text));
            *r.status_mut() = StatusCode::from_u16(code).unwrap_or(StatusCode::OK);
            r.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
            );
            return r;
        }
        ResponseKind::Envelope | ResponseKind::EnvelopeTopLevel => StatusCode::OK,
        ResponseKind::EnvelopeWithStatus(code) => {
            StatusCode::from_u16(code).unwrap_or(StatusCode::OK)
        }
    };
    if status == StatusCode::OK
        && resp.data.is_none()
        && resp.auth.is_none()
        && resp.secret.is_none()
        && resp.warnings.is_empty()
    {
        return no_content();
    }
    let (lease_id, renewable, lease_duration) = match &resp.secret {
        Some(s) => (s.lease_id.clone(), s.renewable, s.lease_duration),
        None => (String::new(), false, 0),
    };
    let mut body = Map::new();
    body.insert("request_id".into(), json!(request_id));
    body.insert("lease_id".into(), json!(lease_id));
    body.insert("renewable".into(), json!(renewable));
    body.insert("lease_duration".into(), json!(lease_duration));
    body.insert("data".into(), resp.data.clone().unwrap_or(Value::Null));
    body.insert("wrap_info".into(), Value::Null);
    body.insert(
        "warnings".into(),
        if resp.warnings.is_empty() {
            Value::Null
        } else {
            json!(resp.warnings)
        },
    );
    body.insert(
        "auth".into(),
        resp.auth.as_ref().map(auth_json).unwrap_or(Value::Null),
    );
    body.insert("mount_type".into(), json!(""));
    if injects(path)
        && let Some(Value::Object(d)) = &resp.data
    {
        for (k, v) in d {
            body.entry(k.clone()).or_insert_with(|| v.clone());
        }
    }
    if resp.kind == ResponseKind::EnvelopeTopLevel
        && let Some(Value::Object(d)) = &resp.data
    {
        for (k, v) in d {
            body.insert(k.clone(), v.clone());
        }
    }
    json_response(status, &Value::Object(body))
}

/// [`error_response`] for a request to `path`: a 404 says what was not found (Vault
/// answers `{"errors": []}`; clients read a 404 as "nothing there" either way).
pub fn error_response_at(path: &str, operation: Operation, err: &CoreError) -> HttpResponse {
    match err {
        CoreError::NotFound => {
            let path = path.trim_end_matches('/');
            let what = match operation {
                Operation::List => format!("no keys found under {path}/"),
                Operation::Read => format!("no value found at {path}"),
                _ => format!("nothing found at {path}"),
            };
            errors(StatusCode::NOT_FOUND, &[&what])
        }
        CoreError::UnknownPath(p) if p.trim_end_matches('/') == path.trim_end_matches('/') => {
            // No mount or route serves the path at all (a mistyped mount, say).
            errors(
                StatusCode::NOT_FOUND,
                &[
                    &err.to_string(),
                    &format!(
                        "nothing is mounted at or serves {path} (GET /v1/sys/mounts lists the mounts)"
                    ),
                ],
            )
        }
        _ => error_response(err),
    }
}

/// The one table from core errors to HTTP. 5xx bodies never carry the cause; it is
/// logged here instead.
pub fn error_response(err: &CoreError) -> HttpResponse {
    match err {
        CoreError::PermissionDenied => errors(StatusCode::FORBIDDEN, &["permission denied"]),
        // The same for a token that is unknown, expired or revoked: nothing says which.
        CoreError::InvalidToken { presented: false } => errors(
            StatusCode::FORBIDDEN,
            &["permission denied", "no token presented"],
        ),
        CoreError::InvalidToken { presented: true } => errors(
            StatusCode::FORBIDDEN,
            &["permission denied", "token is not valid"],
        ),
        CoreError::ApprovalRequired(m) => errors(StatusCode::FORBIDDEN, &["permission denied", m]),
        CoreError::Forbidden(m) => errors(StatusCode::FORBIDDEN, &["permission denied", m]),
        CoreError::InvalidRequest(m) => errors(StatusCode::BAD_REQUEST, &[m]),
        CoreError::NotFound => errors(StatusCode::NOT_FOUND, &[]),
        CoreError::UnknownPath(_) => errors(StatusCode::NOT_FOUND, &[&err.to_string()]),
        CoreError::UnsupportedOperation => {
            errors(StatusCode::METHOD_NOT_ALLOWED, &["unsupported operation"])
        }
        CoreError::AuditFailed => errors(StatusCode::INTERNAL_SERVER_ERROR, &[&err.to_string()]),
        CoreError::RateLimited(m) => errors(StatusCode::TOO_MANY_REQUESTS, &[m]),
        CoreError::Upstream(m) => errors(StatusCode::BAD_GATEWAY, &[m]),
        CoreError::Internal(cause) => {
            tracing::error!(%cause, "internal error");
            errors(StatusCode::INTERNAL_SERVER_ERROR, &["internal error"])
        }
        CoreError::Storage(cause) if err.is_storage_unavailable() => {
            tracing::error!(%cause, "storage unavailable");
            errors(
                StatusCode::SERVICE_UNAVAILABLE,
                &[
                    "storage is unavailable: the database cannot be reached; nothing was changed, retry later",
                ],
            )
        }
        CoreError::Storage(cause) => {
            tracing::error!(%cause, "storage error");
            errors(StatusCode::INTERNAL_SERVER_ERROR, &["internal error"])
        }
    }
}
