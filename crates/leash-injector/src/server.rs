//! The webhook's HTTPS server: `POST /mutate` (AdmissionReview in, AdmissionReview
//! out), `GET /healthz`. TLS through rustls (ring); the certificate and key files are
//! checked every [`RELOAD_INTERVAL`] and reloaded when they change (cert-manager and
//! Kubernetes Secret volumes rotate them in place), the old pair kept if the new one
//! does not load.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

use crate::{InjectorError, Outcome, Settings, review};

/// How often the certificate and key files are checked for changes.
pub const RELOAD_INTERVAL: Duration = Duration::from_secs(2);
/// Largest AdmissionReview accepted (the API server's objects are at most ~3 MiB).
pub const MAX_BODY: usize = 8 << 20;

/// Certificate and key files.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    /// PEM certificate chain.
    pub cert: PathBuf,
    /// PEM private key.
    pub key: PathBuf,
}

fn load(files: &TlsFiles) -> Result<Arc<CertifiedKey>, InjectorError> {
    let read = |p: &Path| {
        std::fs::read(p)
            .map_err(|e| InjectorError::Tls(format!("cannot read {}: {e}", p.display())))
    };
    let cert_pem = read(&files.cert)?;
    let key_pem = read(&files.key)?;
    let certs = rustls_pemfile::certs(&mut cert_pem.as_slice())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| InjectorError::Tls(format!("{}: {e}", files.cert.display())))?;
    if certs.is_empty() {
        return Err(InjectorError::Tls(format!(
            "{} holds no PEM certificate",
            files.cert.display()
        )));
    }
    let key = rustls_pemfile::private_key(&mut key_pem.as_slice())
        .map_err(|e| InjectorError::Tls(format!("{}: {e}", files.key.display())))?
        .ok_or_else(|| {
            InjectorError::Tls(format!("{} holds no PEM private key", files.key.display()))
        })?;
    let provider = rustls::crypto::ring::default_provider();
    let signing = provider
        .key_provider
        .load_private_key(key)
        .map_err(|e| InjectorError::Tls(format!("{}: {e}", files.key.display())))?;
    let ck = CertifiedKey::new(certs, signing);
    ck.keys_match().map_err(|e| {
        InjectorError::Tls(format!("certificate and key do not work together: {e}"))
    })?;
    Ok(Arc::new(ck))
}

/// The current certificate, swapped by the reload task.
#[derive(Debug)]
struct Reloading {
    current: RwLock<Arc<CertifiedKey>>,
}

impl ResolvesServerCert for Reloading {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.current.read().ok().map(|c| Arc::clone(&c))
    }
}

/// (mtime, length) of both files, to notice a change.
fn stamp(files: &TlsFiles) -> Option<(SystemTime, u64, SystemTime, u64)> {
    let c = std::fs::metadata(&files.cert).ok()?;
    let k = std::fs::metadata(&files.key).ok()?;
    Some((c.modified().ok()?, c.len(), k.modified().ok()?, k.len()))
}

/// Checks the TLS files without serving.
pub fn check_tls(files: &TlsFiles) -> Result<(), InjectorError> {
    load(files).map(|_| ())
}

/// Serves until `shutdown` resolves.
pub async fn serve(
    listener: TcpListener,
    files: TlsFiles,
    settings: Arc<Settings>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), InjectorError> {
    let resolver = Arc::new(Reloading {
        current: RwLock::new(load(&files)?),
    });
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| InjectorError::Tls(e.to_string()))?
        .with_no_client_auth()
        .with_cert_resolver(resolver.clone());
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let acceptor = TlsAcceptor::from(Arc::new(config));

    let reload = {
        let files = files.clone();
        let resolver = Arc::clone(&resolver);
        tokio::spawn(async move {
            let mut last = stamp(&files);
            loop {
                tokio::time::sleep(RELOAD_INTERVAL).await;
                let now = stamp(&files);
                if now.is_none() || now == last {
                    continue;
                }
                match load(&files) {
                    Ok(ck) => {
                        if let Ok(mut cur) = resolver.current.write() {
                            *cur = ck;
                        }
                        last = now;
                        tracing::info!(cert = %files.cert.display(), "TLS certificate reloaded");
                    }
                    // Half-written files: keep the old pair and try again next time.
                    Err(e) => tracing::warn!(error = %e, "TLS certificate not reloaded"),
                }
            }
        })
    };

    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        shutdown.await;
        let _ = stop_tx.send(true);
    });
    let mut stop = stop_rx.clone();
    let mut conns = tokio::task::JoinSet::new();
    loop {
        let (stream, peer) = tokio::select! {
            _ = stop.changed() => break,
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let acceptor = acceptor.clone();
        let settings = Arc::clone(&settings);
        let mut conn_stop = stop_rx.clone();
        conns.spawn(async move {
            let tls = match tokio::time::timeout(Duration::from_secs(10), acceptor.accept(stream)).await {
                Ok(Ok(s)) => s,
                Ok(Err(e)) => {
                    tracing::debug!(%peer, error = %e, "TLS handshake failed");
                    return;
                }
                Err(_) => return,
            };
            let svc = hyper::service::service_fn(move |req| {
                let settings = Arc::clone(&settings);
                async move { Ok::<_, std::convert::Infallible>(handle(req, &settings).await) }
            });
            let conn = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(tls), svc);
            tokio::pin!(conn);
            tokio::select! {
                _ = conn.as_mut() => {}
                _ = conn_stop.changed() => { conn.as_mut().graceful_shutdown(); let _ = conn.await; }
            }
        });
        while conns.try_join_next().is_some() {}
    }
    reload.abort();
    while conns.join_next().await.is_some() {}
    Ok(())
}

fn json_response(status: StatusCode, body: &serde_json::Value) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body.to_string())));
    *r.status_mut() = status;
    r.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/json"),
    );
    r
}

async fn handle(req: Request<Incoming>, settings: &Settings) -> Response<Full<Bytes>> {
    let path = req.uri().path().to_owned();
    match (req.method().clone(), path.as_str()) {
        (Method::GET, "/healthz") => {
            json_response(StatusCode::OK, &serde_json::json!({"status": "ok"}))
        }
        (Method::POST, "/mutate") => {
            let body = match Limited::new(req.into_body(), MAX_BODY).collect().await {
                Ok(b) => b.to_bytes(),
                Err(_) => {
                    return json_response(
                        StatusCode::PAYLOAD_TOO_LARGE,
                        &serde_json::json!({"errors": ["the request body is too large or broken"]}),
                    );
                }
            };
            match review(&body, settings) {
                Ok((resp, outcome)) => {
                    log_outcome(&resp, &outcome);
                    json_response(StatusCode::OK, &resp)
                }
                Err(e) => {
                    tracing::warn!(error = %e, "bad admission request");
                    json_response(
                        StatusCode::BAD_REQUEST,
                        &serde_json::json!({"errors": [e.to_string()]}),
                    )
                }
            }
        }
        (_, "/healthz" | "/mutate") => json_response(
            StatusCode::METHOD_NOT_ALLOWED,
            &serde_json::json!({"errors": ["method not allowed"]}),
        ),
        _ => json_response(
            StatusCode::NOT_FOUND,
            &serde_json::json!({"errors": ["not found"]}),
        ),
    }
}

fn log_outcome(resp: &serde_json::Value, outcome: &Outcome) {
    let uid = resp
        .pointer("/response/uid")
        .and_then(serde_json::Value::as_str)
        .unwrap_or("");
    match outcome {
        Outcome::Unchanged(why) => tracing::debug!(uid, why, "pod admitted unchanged"),
        Outcome::Patched(n) => tracing::info!(uid, operations = n, "pod injected"),
        Outcome::Denied(d) => {
            tracing::warn!(uid, annotation = %d.annotation, reason = %d.reason, "pod denied")
        }
    }
}
