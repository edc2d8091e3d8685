//! The credentials the proxy attaches, re-rendered from the agent's secrets each time
//! one changes (renewal keeps them, rotation replaces them). A request takes the
//! current set once, when it starts: a rotation never changes a request in flight.

use std::collections::BTreeMap;
use std::sync::Arc;

use hyper::header::{HeaderName, HeaderValue};
use leash_agent::SecretSnapshot;
use leash_agent::template::{RenderEnv, SecretRequest};
use serde_json::Value;
use tokio::sync::watch;
use zeroize::Zeroizing;

use crate::config::Upstream;

/// The rendered headers of one upstream, and what to scan its responses for.
pub(crate) struct UpstreamCreds {
    pub(crate) headers: Vec<(HeaderName, HeaderValue)>,
    pub(crate) needles: Arc<Vec<Zeroizing<Vec<u8>>>>,
    pub(crate) lease_id: String,
}

/// A leased login (PostgreSQL mode).
pub(crate) struct Login {
    pub(crate) username: String,
    pub(crate) password: Zeroizing<String>,
    pub(crate) lease_id: String,
}

/// Everything currently attachable, by upstream name (HTTP) or secret key (logins).
#[derive(Default)]
pub(crate) struct Current {
    pub(crate) http: BTreeMap<String, Arc<UpstreamCreds>>,
    pub(crate) logins: BTreeMap<String, Arc<Login>>,
}

/// Shortest secret value treated as a credential to redact on its own (shorter values,
/// like `true` or a port, would redact ordinary text).
const MIN_NEEDLE: usize = 6;

fn leaves<'a>(v: &'a Value, out: &mut Vec<&'a str>) {
    match v {
        Value::String(s) => out.push(s),
        Value::Array(a) => a.iter().for_each(|x| leaves(x, out)),
        Value::Object(m) => m.values().for_each(|x| leaves(x, out)),
        _ => {}
    }
}

/// Renders every upstream's headers from `snap`. An upstream whose secret is missing or
/// whose template fails is left out (its requests get 503); the error is logged by
/// name, never with the value.
pub(crate) fn render(
    upstreams: &[Upstream],
    pg: Option<&SecretRequest>,
    snap: &SecretSnapshot,
) -> Current {
    let lookup = |r: &SecretRequest| snap.0.get(&r.key()).cloned();
    let env_lookup = |k: &str| std::env::var(k).ok();
    let env = RenderEnv {
        secret: &lookup,
        env: &env_lookup,
        error_on_missing_key: true,
    };
    let mut cur = Current::default();
    'up: for u in upstreams {
        let Some(secret) = snap.0.get(&u.secret.key()) else {
            continue;
        };
        let mut headers = Vec::new();
        let mut needles: Vec<Zeroizing<Vec<u8>>> = Vec::new();
        for (name, t) in &u.headers {
            let v = match t.render(&env) {
                Ok(v) => Zeroizing::new(v),
                Err(e) => {
                    tracing::error!(upstream = %u.name, error = %e, "rendering a header failed");
                    continue 'up;
                }
            };
            let Ok(mut hv) = HeaderValue::from_str(v.trim()) else {
                tracing::error!(upstream = %u.name, header = %name, "the rendered header is not a valid header value");
                continue 'up;
            };
            hv.set_sensitive(true);
            headers.push((name.clone(), hv));
            needles.push(Zeroizing::new(v.trim().as_bytes().to_vec()));
            // The secret's own values that went into the header, so an upstream
            // echoing just the token (without "Bearer ") is caught too.
            let mut ls = Vec::new();
            if let Some(d) = secret.get("Data") {
                leaves(d, &mut ls);
            }
            for l in ls {
                if l.len() >= MIN_NEEDLE && v.contains(l) {
                    needles.push(Zeroizing::new(l.as_bytes().to_vec()));
                }
            }
        }
        needles.sort_by(|a, b| a.as_slice().cmp(b.as_slice()));
        needles.dedup_by(|a, b| a.as_slice() == b.as_slice());
        let lease_id = secret
            .get("LeaseID")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned();
        cur.http.insert(
            u.name.clone(),
            Arc::new(UpstreamCreds {
                headers,
                needles: Arc::new(needles),
                lease_id,
            }),
        );
    }
    if let Some(r) = pg
        && let Some(secret) = snap.0.get(&r.key())
    {
        let field = |k: &str| {
            secret
                .get("Data")
                .and_then(|d| d.get(k))
                .and_then(Value::as_str)
                .map(str::to_owned)
        };
        match (field("username"), field("password")) {
            (Some(username), Some(password)) => {
                cur.logins.insert(
                    r.key(),
                    Arc::new(Login {
                        username,
                        password: Zeroizing::new(password),
                        lease_id: secret
                            .get("LeaseID")
                            .and_then(Value::as_str)
                            .unwrap_or_default()
                            .to_owned(),
                    }),
                );
            }
            _ => tracing::error!(secret = %r.path, "the secret has no username and password"),
        }
    }
    cur
}

/// Keeps `out` in step with the agent's snapshots until the agent stops.
pub(crate) async fn follow(
    upstreams: Arc<Vec<Upstream>>,
    pg: Option<SecretRequest>,
    mut rx: watch::Receiver<SecretSnapshot>,
    out: watch::Sender<Arc<Current>>,
) {
    loop {
        let snap = rx.borrow_and_update().clone();
        if !snap.0.is_empty() {
            let cur = render(&upstreams, pg.as_ref(), &snap);
            let _ = out.send(Arc::new(cur));
        }
        if rx.changed().await.is_err() {
            return;
        }
    }
}
