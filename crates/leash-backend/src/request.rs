//! Requests into and responses out of the core pipeline, free of HTTP types.
//!
//! A [`Request`] is what the HTTP layer parsed: operation, normalised path, JSON data,
//! the presented token (as a secret) and the peer address. A [`Response`] is what the
//! pipeline answers; the HTTP layer wraps it in Vault's envelope.

use std::net::SocketAddr;

use leash_types::{Operation, SecretString};
use serde_json::{Map, Value};

/// One API request. `Debug` shows the data's keys only: values may be secrets.
pub struct Request {
    /// Unique id, echoed as `request_id`.
    pub id: String,
    /// What the caller wants; `Update` for POST/PUT until the existence check decides
    /// between create and update.
    pub operation: Operation,
    /// Path below `/v1/`, without leading slash (a trailing slash is kept for lists).
    pub path: String,
    /// JSON body for writes; query parameters for reads and lists.
    pub data: Map<String, Value>,
    /// The presented token, if any.
    pub token: Option<SecretString>,
    /// The real peer address (never taken from forwarded-for headers).
    pub remote_addr: Option<SocketAddr>,
    /// The task's trace id: the trace-id of a W3C `traceparent` header, else a valid
    /// `X-Request-Id`, else generated (32 lowercase hex digits). Carried by every
    /// lifecycle audit event this request causes.
    pub trace_id: String,
}

impl Request {
    /// A request with no body, token or peer.
    pub fn new(operation: Operation, path: impl Into<String>) -> Request {
        Request {
            id: leash_types::random::uuid_v4(),
            operation,
            path: path.into(),
            data: Map::new(),
            token: None,
            remote_addr: None,
            trace_id: Request::new_trace_id(),
        }
    }

    /// A fresh trace id shaped as a W3C trace-id: 32 lowercase hex digits, not all zero.
    pub fn new_trace_id() -> String {
        let mut b = leash_types::random::bytes::<16>();
        if b.iter().all(|x| *x == 0) {
            b[15] = 1;
        }
        b.iter().map(|x| format!("{x:02x}")).collect()
    }
}

/// A secret lease attached to a response (dynamic credentials).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseInfo {
    /// Lease id, e.g. `database/creds/ro/abc`.
    pub lease_id: String,
    /// Whether it can be renewed.
    pub renewable: bool,
    /// TTL in whole seconds.
    pub lease_duration: u64,
}

/// The `auth` block of login and token-create responses.
#[derive(Debug)]
pub struct AuthInfo {
    /// The new token; shown to its owner once.
    pub client_token: SecretString,
    /// Its accessor.
    pub accessor: String,
    /// Effective policies (including `default`).
    pub policies: Vec<String>,
    /// Policies attached to the token itself.
    pub token_policies: Vec<String>,
    /// Metadata.
    pub metadata: std::collections::BTreeMap<String, String>,
    /// The token's display name (for events; not part of Vault's `auth` block).
    pub display_name: String,
    /// TTL in seconds.
    pub lease_duration: u64,
    /// Whether the token can be renewed.
    pub renewable: bool,
    /// Identity entity id ("" when none).
    pub entity_id: String,
    /// `service`.
    pub token_type: String,
    /// Whether the token has no parent.
    pub orphan: bool,
    /// Uses allowed (0 = unlimited).
    pub num_uses: i64,
}

/// How the HTTP layer should answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResponseKind {
    /// Vault's JSON envelope with 200.
    Envelope,
    /// The `data` object alone, as plain JSON (sys/health, sys/seal-status…), with the
    /// given status.
    Raw(u16),
    /// The envelope, but with this (non-200) status: e.g. 404 for a soft-deleted KV
    /// version, whose body still carries metadata.
    EnvelopeWithStatus(u16),
    /// Plain text (`data` is a JSON string), e.g. Prometheus' exposition format.
    Text(u16),
    /// The envelope with every key of `data` also at the top level, taking precedence
    /// over the envelope's own (`request_id` of a control-group request is the access
    /// request's id, which is what agents poll with).
    EnvelopeTopLevel,
}

/// A successful answer. `Debug` shows the data's keys only: values may be secrets.
pub struct Response {
    /// The `data` object.
    pub data: Option<Value>,
    /// The lease, for dynamic secrets.
    pub secret: Option<LeaseInfo>,
    /// The auth block, for logins and token creation.
    pub auth: Option<AuthInfo>,
    /// Warnings for the caller.
    pub warnings: Vec<String>,
    /// How to answer.
    pub kind: ResponseKind,
    /// A successful login: the core mints the token and fills `auth` from it.
    pub login: Option<Box<crate::login::LoginGrant>>,
}

impl Response {
    /// A successful login granting `grant`; the core mints the token.
    pub fn login(grant: crate::login::LoginGrant) -> Response {
        Response {
            data: None,
            secret: None,
            auth: None,
            warnings: Vec::new(),
            kind: ResponseKind::Envelope,
            login: Some(Box::new(grant)),
        }
    }

    /// A 200 envelope with `data`.
    pub fn data(data: Value) -> Response {
        Response {
            data: Some(data),
            secret: None,
            auth: None,
            warnings: Vec::new(),
            kind: ResponseKind::Envelope,
            login: None,
        }
    }

    /// Plain JSON (not an envelope) with a status.
    pub fn raw(status: u16, body: Value) -> Response {
        Response {
            data: Some(body),
            secret: None,
            auth: None,
            warnings: Vec::new(),
            kind: ResponseKind::Raw(status),
            login: None,
        }
    }

    /// No data, only warnings: `None` (a 204) when there are none, else a 200 envelope
    /// carrying them.
    pub fn warnings_only(warnings: Vec<String>) -> Option<Response> {
        if warnings.is_empty() {
            return None;
        }
        let mut r = Response::data(serde_json::Value::Null);
        r.data = None;
        r.warnings = warnings;
        Some(r)
    }

    /// A list response: `{"keys": [...]}`; the caller turns an empty list into 404.
    pub fn keys(keys: Vec<String>) -> Response {
        Response::data(serde_json::json!({ "keys": keys }))
    }

    /// Adds a warning.
    pub fn with_warning(mut self, w: impl Into<String>) -> Response {
        self.warnings.push(w.into());
        self
    }
}

/// The keys of a JSON object (or the value's type), never its values.
fn shape(v: Option<&Value>) -> String {
    match v {
        None => "None".to_owned(),
        Some(Value::Object(m)) => {
            format!("{{{}}}", m.keys().cloned().collect::<Vec<_>>().join(", "))
        }
        Some(Value::Array(a)) => format!("[{} items]", a.len()),
        Some(Value::Null) => "null".to_owned(),
        Some(_) => "<scalar>".to_owned(),
    }
}

impl std::fmt::Debug for Request {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Request")
            .field("id", &self.id)
            .field("operation", &self.operation)
            .field("path", &self.path)
            .field(
                "data",
                &format_args!(
                    "{{{}}}",
                    self.data.keys().cloned().collect::<Vec<_>>().join(", ")
                ),
            )
            .field("token", &self.token.as_ref().map(|_| "[REDACTED]"))
            .field("remote_addr", &self.remote_addr)
            .field("trace_id", &self.trace_id)
            .finish()
    }
}

impl std::fmt::Debug for Response {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Response")
            .field("data", &format_args!("{}", shape(self.data.as_ref())))
            .field("secret", &self.secret)
            .field("auth", &self.auth)
            .field("warnings", &self.warnings)
            .field("kind", &self.kind)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_prints_values() {
        let mut r = Request::new(leash_types::Operation::Update, "secret/data/x");
        r.data
            .insert("password".into(), Value::String("hunter2-value".into()));
        r.token = Some(SecretString::from("tok-secret-value".to_owned()));
        let d = format!("{r:?}");
        assert!(
            d.contains("password") && !d.contains("hunter2") && !d.contains("tok-secret"),
            "{d}"
        );
        let resp = Response::data(serde_json::json!({"password": "hunter2-value"}));
        let d = format!("{resp:?}");
        assert!(d.contains("password") && !d.contains("hunter2"), "{d}");
    }
}
