//! `proxy "http"`: `http://<listen>/<upstream>/<path>` → the upstream's `url` + path,
//! with the agent's credential headers removed and the rendered ones added.
//!
//! Per request: find the upstream (404 naming the known ones), check `allow` (403 with
//! a JSON reason, nothing forwarded), take the upstream's current credentials (503
//! before the first fetch), strip hop-by-hop and credential headers, add the rendered
//! ones, forward with `Accept-Encoding: identity` (so the response can be scanned),
//! stream both bodies, and replace the injected credential in the response (headers and
//! body) with `[REDACTED]`. `GET /metrics` and `GET /healthz` are the proxy's own.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt as _, Full};
use hyper::body::Incoming;
use hyper::header::{self, HeaderMap, HeaderName, HeaderValue};
use hyper::{Method, Request, Response, StatusCode, Uri};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};

use crate::ProxyError;
use crate::config::{HttpProxy, Upstream};
use crate::creds::Current;
use crate::metrics::{self, Metrics, Use};
use crate::redact::{REDACTED, RedactedBody, Redactor};

type Body = UnsyncBoxBody<Bytes, hyper::Error>;
type UpClient = Client<hyper_rustls::HttpsConnector<HttpConnector>, Incoming>;

/// Headers that carry credentials; never forwarded from the agent. (Parsed names: a
/// `&str` would be parsed again on every removal, on every request.)
static CREDENTIAL_HEADERS: [HeaderName; 7] = [
    HeaderName::from_static("authorization"),
    HeaderName::from_static("proxy-authorization"),
    HeaderName::from_static("cookie"),
    HeaderName::from_static("x-api-key"),
    HeaderName::from_static("api-key"),
    HeaderName::from_static("x-auth-token"),
    HeaderName::from_static("private-token"),
];

/// Answers of a known length up to this size are read whole, scanned and sent with a
/// `Content-Length`; longer ones, and those without a length (SSE), stream.
const WHOLE_BODY_LIMIT: u64 = 64 * 1024;

/// Hop-by-hop headers (RFC 9110 §7.6.1), never forwarded either way.
static HOP_BY_HOP: [HeaderName; 8] = [
    HeaderName::from_static("connection"),
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    HeaderName::from_static("te"),
    HeaderName::from_static("trailer"),
    HeaderName::from_static("transfer-encoding"),
    HeaderName::from_static("upgrade"),
    HeaderName::from_static("proxy-authenticate"),
];

struct UpstreamRt {
    cfg: Upstream,
    client: UpClient,
    slots: Arc<Semaphore>,
    base_path: String,
}

/// Shared by every connection.
pub(crate) struct State {
    upstreams: BTreeMap<String, UpstreamRt>,
    creds: watch::Receiver<Arc<Current>>,
    metrics: Arc<Metrics>,
}

/// Builds the rustls client configuration: the built-in (Mozilla) roots, or `ca_cert`.
pub(crate) fn tls_config(
    ca_cert: Option<&std::path::Path>,
) -> Result<rustls::ClientConfig, ProxyError> {
    let mut roots = rustls::RootCertStore::empty();
    match ca_cert {
        Some(p) => {
            let pem = std::fs::read(p).map_err(|e| ProxyError::Io {
                what: format!("ca_cert {}", p.display()),
                source: e,
            })?;
            let mut n = 0;
            for c in rustls_pemfile::certs(&mut pem.as_slice()) {
                let c = c.map_err(|e| ProxyError::Tls(format!("ca_cert {}: {e}", p.display())))?;
                roots
                    .add(c)
                    .map_err(|e| ProxyError::Tls(format!("ca_cert {}: {e}", p.display())))?;
                n += 1;
            }
            if n == 0 {
                return Err(ProxyError::Tls(format!(
                    "ca_cert {}: no certificate found",
                    p.display()
                )));
            }
        }
        None => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    Ok(rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| ProxyError::Tls(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth())
}

impl State {
    pub(crate) fn new(
        cfg: &HttpProxy,
        upstreams: Vec<Upstream>,
        creds: watch::Receiver<Arc<Current>>,
        metrics: Arc<Metrics>,
    ) -> Result<State, ProxyError> {
        let _ = cfg;
        let mut map = BTreeMap::new();
        for u in upstreams {
            let mut http = HttpConnector::new();
            http.enforce_http(false);
            http.set_connect_timeout(Some(u.connect_timeout));
            http.set_nodelay(true);
            let tls = tls_config(u.ca_cert.as_deref())?;
            let conn = hyper_rustls::HttpsConnectorBuilder::new()
                .with_tls_config(tls)
                .https_or_http()
                .enable_http1()
                .wrap_connector(http);
            let client = Client::builder(TokioExecutor::new())
                .pool_idle_timeout(Duration::from_secs(60))
                .pool_max_idle_per_host(u.max_connections)
                .pool_timer(TokioTimer::new())
                .build(conn);
            let base_path = u.url.path().trim_end_matches('/').to_owned();
            map.insert(
                u.name.clone(),
                UpstreamRt {
                    slots: Arc::new(Semaphore::new(u.max_connections)),
                    client,
                    base_path,
                    cfg: u,
                },
            );
        }
        Ok(State {
            upstreams: map,
            creds,
            metrics,
        })
    }
}

/// Accepts connections until the task is dropped.
pub(crate) async fn serve(listener: TcpListener, state: Arc<State>, max_connections: usize) {
    let slots = Arc::new(Semaphore::new(max_connections));
    loop {
        let Ok(permit) = slots.clone().acquire_owned().await else {
            return;
        };
        let (stream, peer) = match listener.accept().await {
            Ok(x) => x,
            Err(e) => {
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let state = state.clone();
        tokio::spawn(async move {
            let svc = hyper::service::service_fn(move |req| {
                let state = state.clone();
                async move { Ok::<_, Infallible>(handle(&state, req, peer).await) }
            });
            let r = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(Duration::from_secs(30))
                .keep_alive(true)
                .serve_connection(TokioIo::new(stream), svc)
                .await;
            if let Err(e) = r {
                tracing::debug!(error = %e, "client connection ended");
            }
            drop(permit);
        });
    }
}

fn full(b: impl Into<Bytes>) -> Body {
    Full::new(b.into())
        .map_err(|never: Infallible| match never {})
        .boxed_unsync()
}

fn json(status: StatusCode, v: serde_json::Value) -> Response<Body> {
    let mut r = Response::new(full(v.to_string()));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    r
}

/// Why a path is refused before any rule is checked: dot segments and encoded
/// separators could make a path look allowed while the upstream resolves it elsewhere.
fn unsafe_path(path: &str) -> bool {
    let lower = path.to_ascii_lowercase();
    if lower.contains("%2f") || lower.contains("%5c") || path.contains('\\') {
        return true;
    }
    path.split('/').any(|seg| {
        let d = percent_encoding::percent_decode_str(seg).decode_utf8_lossy();
        d == "." || d == ".."
    })
}

async fn handle(state: &State, req: Request<Incoming>, _peer: SocketAddr) -> Response<Body> {
    let path = req.uri().path().to_owned();
    let trimmed = path.trim_start_matches('/');
    let (name, rest) = match trimmed.split_once('/') {
        Some((n, r)) => (n, format!("/{r}")),
        None => (trimmed, "/".to_owned()),
    };
    if req.method() == Method::GET && (path == "/metrics" || path == "/healthz") {
        return own_endpoint(state, &path);
    }
    let Some(up) = state.upstreams.get(name) else {
        let known: Vec<&String> = state.upstreams.keys().collect();
        return json(
            StatusCode::NOT_FOUND,
            serde_json::json!({
                "error": format!("unknown upstream {name:?}; known upstreams: {}",
                    known.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(", ")),
                "upstreams": known,
            }),
        );
    };
    let m = &state.metrics;
    if unsafe_path(&rest) {
        m.request(name, 400, None);
        return json(
            StatusCode::BAD_REQUEST,
            serde_json::json!({"error": "the path has dot segments or encoded separators", "upstream": name}),
        );
    }
    // A standard method is an enum: cloned without allocating.
    let method = req.method().clone();
    let method = method.as_str();
    if !up.cfg.allow.is_empty() && !up.cfg.allow.iter().any(|r| r.allows(method, &rest)) {
        m.denied(name);
        m.request(name, 403, None);
        tracing::info!(upstream = name, method = %method, path = %rest, "denied by the allow rules");
        return json(
            StatusCode::FORBIDDEN,
            serde_json::json!({
                "error": format!("{method} {rest} is not allowed for upstream {name:?}"),
                "upstream": name,
                "method": method,
                "path": rest,
            }),
        );
    }
    // The credentials as of now: a rotation after this point does not touch this request.
    let creds = state.creds.borrow().http.get(name).cloned();
    let Some(creds) = creds else {
        m.request(name, 503, None);
        return json(
            StatusCode::SERVICE_UNAVAILABLE,
            serde_json::json!({"error": format!("the credential for upstream {name:?} is not available yet"), "upstream": name}),
        );
    };
    let trace = metrics::trace_id(
        req.headers()
            .get("traceparent")
            .and_then(|v| v.to_str().ok()),
    )
    .unwrap_or_default()
    .to_owned();

    let started = Instant::now();
    // A free slot is taken at once; only a full upstream arms a timer to wait for one.
    let permit = match up.slots.clone().try_acquire_owned() {
        Ok(p) => Ok(p),
        Err(_) => tokio::time::timeout(up.cfg.timeout, up.slots.clone().acquire_owned())
            .await
            .map_err(|_| ())
            .and_then(|r| r.map_err(|_| ())),
    };
    let permit = match permit {
        Ok(p) => p,
        Err(()) => {
            m.request(name, 503, None);
            return json(
                StatusCode::SERVICE_UNAVAILABLE,
                serde_json::json!({"error": format!("too many requests in flight to upstream {name:?}"), "upstream": name}),
            );
        }
    };

    let (mut parts, body) = req.into_parts();
    let pq = match parts.uri.query() {
        Some(q) => format!("{}{}?{q}", up.base_path, rest),
        None => format!("{}{}", up.base_path, rest),
    };
    let mut uri = Uri::builder();
    if let (Some(s), Some(a)) = (up.cfg.url.scheme(), up.cfg.url.authority()) {
        uri = uri.scheme(s.clone()).authority(a.clone());
    }
    let uri = match uri.path_and_query(pq).build() {
        Ok(u) => u,
        Err(_) => {
            m.request(name, 400, None);
            return json(
                StatusCode::BAD_REQUEST,
                serde_json::json!({"error": "bad path"}),
            );
        }
    };
    strip(&mut parts.headers);
    for h in &CREDENTIAL_HEADERS {
        parts.headers.remove(h);
    }
    parts.headers.remove(header::HOST);
    for (h, v) in &creds.headers {
        parts.headers.remove(h);
        parts.headers.append(h.clone(), v.clone());
    }
    parts.headers.insert(
        header::ACCEPT_ENCODING,
        HeaderValue::from_static("identity"),
    );
    parts.uri = uri;
    parts.version = hyper::Version::HTTP_11;
    let is_head = parts.method == Method::HEAD;
    let out = Request::from_parts(parts, body);

    let resp = match tokio::time::timeout(up.cfg.timeout, up.client.request(out)).await {
        Ok(Ok(r)) => r,
        Ok(Err(e)) => {
            tracing::warn!(upstream = name, error = %e, "upstream request failed");
            m.request(name, 502, Some(started.elapsed()));
            return json(
                StatusCode::BAD_GATEWAY,
                serde_json::json!({"error": format!("upstream {name:?} could not be reached: {}", error_chain(&e)), "upstream": name}),
            );
        }
        Err(_) => {
            m.request(name, 504, Some(started.elapsed()));
            return json(
                StatusCode::GATEWAY_TIMEOUT,
                serde_json::json!({"error": format!("upstream {name:?} did not answer within {:?}", up.cfg.timeout), "upstream": name}),
            );
        }
    };
    let status = resp.status();
    m.request(name, status.as_u16(), Some(started.elapsed()));
    metrics::used(&Use {
        kind: "http",
        upstream: name,
        lease_id: &creds.lease_id,
        method,
        path: &rest,
        status: status.as_u16(),
        trace_id: &trace,
    });
    let (mut rparts, rbody) = resp.into_parts();
    strip(&mut rparts.headers);
    let mut header_hits = 0;
    for v in rparts.headers.values_mut() {
        let b = v.as_bytes();
        // A value shorter than a needle cannot hold it (most response headers).
        if creds
            .needles
            .iter()
            .any(|n| b.len() >= n.len() && memchr::memmem::find(b, n).is_some())
        {
            *v = HeaderValue::from_bytes(REDACTED).unwrap_or_else(|_| HeaderValue::from_static(""));
            header_hits += 1;
        }
    }
    if header_hits > 0 {
        m.redacted(name, header_hits);
    }
    let has_body = !is_head
        && status != StatusCode::NO_CONTENT
        && status != StatusCode::NOT_MODIFIED
        && !status.is_informational();
    let encoded = rparts
        .headers
        .get(header::CONTENT_ENCODING)
        .is_some_and(|v| !v.as_bytes().eq_ignore_ascii_case(b"identity"));
    if has_body && encoded {
        // Asked for `identity`, the upstream compressed anyway: the answer cannot be
        // scanned for the credential, so it is not passed on.
        tracing::warn!(
            upstream = name,
            "upstream compressed its answer; refused (cannot be scanned)"
        );
        m.request(name, 502, None);
        return json(
            StatusCode::BAD_GATEWAY,
            serde_json::json!({"error": format!("upstream {name:?} compressed its answer (Content-Encoding) although asked not to; leash cannot scan it for the credential"), "upstream": name}),
        );
    }
    let small = rparts
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
        .is_some_and(|n| n <= WHOLE_BODY_LIMIT);
    if has_body && small {
        // A small answer of known length (most API calls): read whole, scanned in one
        // pass, and sent with its (possibly new) length in one write — no chunked
        // framing, no streaming state. Bounded by WHOLE_BODY_LIMIT and the timeout.
        let body = match tokio::time::timeout(up.cfg.timeout, rbody.collect()).await {
            Ok(Ok(b)) => b.to_bytes(),
            Ok(Err(e)) => {
                tracing::warn!(upstream = name, error = %e, "upstream body failed");
                return json(
                    StatusCode::BAD_GATEWAY,
                    serde_json::json!({"error": format!("upstream {name:?} broke off its answer: {}", error_chain(&e)), "upstream": name}),
                );
            }
            Err(_) => {
                return json(
                    StatusCode::GATEWAY_TIMEOUT,
                    serde_json::json!({"error": format!("upstream {name:?} did not finish its answer within {:?}", up.cfg.timeout), "upstream": name}),
                );
            }
        };
        drop(permit);
        let mut redactor = Redactor::new(creds.needles.clone());
        let out = redactor.feed_bytes(body, true);
        if redactor.found > 0 {
            m.redacted(name, redactor.found);
        }
        rparts
            .headers
            .insert(header::CONTENT_LENGTH, HeaderValue::from(out.len()));
        return Response::from_parts(rparts, full(out));
    }
    if has_body {
        // Redaction may change the length: the body goes out chunked.
        rparts.headers.remove(header::CONTENT_LENGTH);
    }
    let metrics = state.metrics.clone();
    let uname = name.to_owned();
    let body = RedactedBody::new(
        rbody,
        creds.needles.clone(),
        permit,
        Some(Box::new(move |n| metrics.redacted(&uname, n))),
    );
    Response::from_parts(rparts, body.boxed_unsync())
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

/// Removes hop-by-hop headers, including those the `Connection` header names.
fn strip(h: &mut HeaderMap) {
    let named: Vec<HeaderName> = h
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|n| HeaderName::from_bytes(n.trim().as_bytes()).ok())
        .collect();
    for n in named {
        h.remove(n);
    }
    for n in &HOP_BY_HOP {
        h.remove(n);
    }
}

fn own_endpoint(state: &State, path: &str) -> Response<Body> {
    if path == "/metrics" {
        let mut r = Response::new(full(state.metrics.render()));
        r.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; version=0.0.4"),
        );
        return r;
    }
    let cur = state.creds.borrow().clone();
    let missing: Vec<&String> = state
        .upstreams
        .keys()
        .filter(|k| !cur.http.contains_key(*k))
        .collect();
    if missing.is_empty() {
        json(StatusCode::OK, serde_json::json!({"status": "ok"}))
    } else {
        json(
            StatusCode::SERVICE_UNAVAILABLE,
            serde_json::json!({"status": "unhealthy", "reason": "credentials not yet available", "upstreams": missing}),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dot_segments_and_encoded_separators_are_refused() {
        assert!(unsafe_path("/repos/acme/../../orgs"));
        assert!(unsafe_path("/repos/acme/%2e%2e/x"));
        assert!(unsafe_path("/repos/acme%2Fx"));
        assert!(unsafe_path("/a/./b"));
        assert!(!unsafe_path("/repos/acme/app/issues"));
        assert!(!unsafe_path("/a/b..c"));
    }
}
