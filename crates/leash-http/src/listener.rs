//! Serving the app on a TCP listener, in clear or with TLS (rustls, ring provider).
//!
//! Every connection is HTTP/1.1 with keep-alive and `TCP_NODELAY`; the real peer
//! address is attached to each request (never a forwarded-for header). Shutdown stops
//! accepting and lets in-flight requests finish.
//!
//! Slow clients cannot hold connections ([`Limits`]): a request head (and, with TLS, the
//! handshake) must arrive within `header_read_timeout` of its first byte (of the
//! connection, for the first request); a request body must be read within
//! `read_timeout` of the head; a keep-alive connection with no request in flight closes
//! after `idle_timeout` without traffic; and at most `max_connections` are open at once
//! (one more is accepted and closed at once, with a warning).

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::extract::ConnectInfo;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpListener;
use tokio::time::Instant;
use tokio_rustls::TlsAcceptor;
use tower::ServiceExt;

/// Certificate and key files for TLS.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    /// PEM certificate chain.
    pub cert: PathBuf,
    /// PEM private key.
    pub key: PathBuf,
}

/// Why the listener could not start.
#[derive(Debug, thiserror::Error)]
pub enum ListenError {
    /// TLS material could not be loaded.
    #[error("TLS: {0}")]
    Tls(String),
    /// Socket error.
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

fn load_tls(files: &TlsFiles) -> Result<TlsAcceptor, ListenError> {
    let read = |p: &PathBuf| {
        std::fs::read(p).map_err(|e| ListenError::Tls(format!("cannot read {}: {e}", p.display())))
    };
    let cert_pem = read(&files.cert)?;
    let key_pem = read(&files.key)?;
    let certs = rustls_pemfile::certs(&mut cert_pem.as_slice())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| ListenError::Tls(format!("{}: {e}", files.cert.display())))?;
    if certs.is_empty() {
        return Err(ListenError::Tls(format!(
            "{} holds no PEM certificate",
            files.cert.display()
        )));
    }
    let key = rustls_pemfile::private_key(&mut key_pem.as_slice())
        .map_err(|e| ListenError::Tls(format!("{}: {e}", files.key.display())))?
        .ok_or_else(|| {
            ListenError::Tls(format!("{} holds no PEM private key", files.key.display()))
        })?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| ListenError::Tls(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| ListenError::Tls(format!("certificate and key do not work together: {e}")))?;
    Ok(TlsAcceptor::from(Arc::new(config)))
}

/// Checks TLS files without serving (for start-up validation).
pub fn check_tls(files: &TlsFiles) -> Result<(), ListenError> {
    load_tls(files).map(|_| ())
}

/// How long clients may take, and how many may be connected (the `listener "tcp"`
/// keys `http_read_header_timeout`, `http_read_timeout`, `http_idle_timeout` and
/// `max_connections`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// From a request's first byte (a connection's start, for its first request) to its
    /// complete head, TLS handshake included. Default 10 s.
    pub header_read_timeout: Duration,
    /// From a request's head to the end of its body. Default 30 s.
    pub read_timeout: Duration,
    /// A keep-alive connection with no request in flight and no traffic is closed after
    /// this. Default 5 min.
    pub idle_timeout: Duration,
    /// Connections open at once; past it a new one is closed at once. Default 4096.
    pub max_connections: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            header_read_timeout: Duration::from_secs(10),
            read_timeout: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(300),
            max_connections: 4096,
        }
    }
}

/// No request head pending.
const NONE: u64 = u64::MAX;

/// What a connection's watchdog knows about it (times in ms since the connection began).
struct ConnState {
    start: Instant,
    /// Last time bytes came in or went out.
    last_io: AtomicU64,
    /// When the first byte of a request whose head is not complete arrived, or [`NONE`].
    head_since: AtomicU64,
    /// Requests handed to the app and not answered yet.
    in_flight: AtomicUsize,
    /// A body read timed out: close the connection.
    kill: AtomicBool,
}

impl ConnState {
    fn new() -> ConnState {
        ConnState {
            start: Instant::now(),
            last_io: AtomicU64::new(0),
            // The first request's head is due from the connection's start.
            head_since: AtomicU64::new(0),
            in_flight: AtomicUsize::new(0),
            kill: AtomicBool::new(false),
        }
    }

    fn now(&self) -> u64 {
        u64::try_from(self.start.elapsed().as_millis()).unwrap_or(NONE - 1)
    }

    fn on_read(&self) {
        let now = self.now();
        self.last_io.store(now, Ordering::Relaxed);
        if self.in_flight.load(Ordering::Acquire) == 0 {
            let _ =
                self.head_since
                    .compare_exchange(NONE, now, Ordering::AcqRel, Ordering::Relaxed);
        }
    }

    /// Why the connection must close now, if it must.
    fn expired(&self, limits: &Limits) -> Option<&'static str> {
        let now = self.now();
        let ms = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(NONE - 1);
        if self.kill.load(Ordering::Acquire) {
            return Some("request body not received within http_read_timeout");
        }
        let head = self.head_since.load(Ordering::Acquire);
        if head != NONE && now.saturating_sub(head) >= ms(limits.header_read_timeout) {
            return Some("request head not received within http_read_header_timeout");
        }
        if head == NONE
            && self.in_flight.load(Ordering::Acquire) == 0
            && now.saturating_sub(self.last_io.load(Ordering::Relaxed)) >= ms(limits.idle_timeout)
        {
            return Some("idle for http_idle_timeout");
        }
        None
    }
}

/// A socket whose traffic is reported to its [`ConnState`].
struct Watched<S> {
    inner: S,
    state: Arc<ConnState>,
}

impl<S: AsyncRead + Unpin> AsyncRead for Watched<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let r = Pin::new(&mut this.inner).poll_read(cx, buf);
        if matches!(r, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            this.state.on_read();
        }
        r
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Watched<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.inner).poll_write(cx, buf);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            this.state
                .last_io
                .store(this.state.now(), Ordering::Relaxed);
        }
        r
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

/// A request body that fails once its deadline passes (and marks the connection for
/// closing), so a client trickling a body cannot hold a handler and a connection.
struct TimedBody {
    inner: hyper::body::Incoming,
    sleep: Pin<Box<tokio::time::Sleep>>,
    state: Arc<ConnState>,
}

impl hyper::body::Body for TimedBody {
    type Data = bytes::Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<hyper::body::Frame<Self::Data>, Self::Error>>> {
        let this = self.get_mut();
        if let Poll::Ready(r) = Pin::new(&mut this.inner).poll_frame(cx) {
            return Poll::Ready(r.map(|f| f.map_err(Into::into)));
        }
        if this.sleep.as_mut().poll(cx).is_ready() {
            this.state.kill.store(true, Ordering::Release);
            return Poll::Ready(Some(Err(
                "request body not received within http_read_timeout".into(),
            )));
        }
        Poll::Pending
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.inner.size_hint()
    }
}

/// Counts a request as in flight until its answer is ready.
struct InFlight(Arc<ConnState>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.last_io.store(self.0.now(), Ordering::Relaxed);
        self.0.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Serves `app` until `shutdown` resolves, with the default [`Limits`].
pub async fn serve(
    listener: TcpListener,
    app: Router,
    tls: Option<TlsFiles>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ListenError> {
    serve_with(listener, app, tls, Limits::default(), shutdown).await
}

/// Serves `app` until `shutdown` resolves, holding clients to `limits`.
pub async fn serve_with(
    listener: TcpListener,
    app: Router,
    tls: Option<TlsFiles>,
    limits: Limits,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ListenError> {
    let acceptor = tls.as_ref().map(load_tls).transpose()?;
    let slots = Arc::new(tokio::sync::Semaphore::new(limits.max_connections.max(1)));
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
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let Ok(slot) = Arc::clone(&slots).try_acquire_owned() else {
            tracing::warn!(%peer, max_connections = limits.max_connections, "connection refused: max_connections reached");
            drop(stream);
            continue;
        };
        let _ = stream.set_nodelay(true);
        let app = app.clone();
        let acceptor = acceptor.clone();
        let mut conn_stop = stop_rx.clone();
        conns.spawn(async move {
            let _slot = slot;
            let state = Arc::new(ConnState::new());
            let svc_state = Arc::clone(&state);
            let svc = tower::service_fn(move |r: axum::http::Request<hyper::body::Incoming>| {
                let state = Arc::clone(&svc_state);
                let app = app.clone();
                async move {
                    state.in_flight.fetch_add(1, Ordering::AcqRel);
                    state.head_since.store(NONE, Ordering::Release);
                    let _in_flight = InFlight(Arc::clone(&state));
                    let (mut parts, body) = r.into_parts();
                    parts.extensions.insert(ConnectInfo::<SocketAddr>(peer));
                    let body = axum::body::Body::new(TimedBody {
                        inner: body,
                        sleep: Box::pin(tokio::time::sleep(limits.read_timeout)),
                        state: Arc::clone(&state),
                    });
                    app.oneshot(axum::http::Request::from_parts(parts, body)).await
                }
            });
            let svc = TowerToHyperService::new(svc);
            let mut builder = hyper::server::conn::http1::Builder::new();
            // Head timing is the watchdog's (hyper's own would also cut idle keep-alive
            // connections at the head timeout).
            builder.timer(hyper_util::rt::TokioTimer::new());
            builder.header_read_timeout(None);
            let tick = (limits
                .header_read_timeout
                .min(limits.read_timeout)
                .min(limits.idle_timeout)
                / 4)
            .clamp(Duration::from_millis(10), Duration::from_secs(1));
            let watchdog = {
                let state = Arc::clone(&state);
                async move {
                    let mut every = tokio::time::interval(tick);
                    loop {
                        every.tick().await;
                        if let Some(why) = state.expired(&limits) {
                            return why;
                        }
                    }
                }
            };
            tokio::pin!(watchdog);
            let io = Watched {
                inner: stream,
                state: Arc::clone(&state),
            };
            match acceptor {
                Some(acc) => {
                    let tls = tokio::select! {
                        r = acc.accept(io) => match r {
                            Ok(s) => s,
                            Err(e) => {
                                tracing::debug!(%peer, error = %e, "TLS handshake failed");
                                return;
                            }
                        },
                        why = watchdog.as_mut() => {
                            tracing::debug!(%peer, reason = why, "connection closed");
                            return;
                        }
                    };
                    let conn = builder.serve_connection(TokioIo::new(tls), svc);
                    tokio::pin!(conn);
                    tokio::select! {
                        _ = conn.as_mut() => {}
                        why = watchdog.as_mut() => tracing::debug!(%peer, reason = why, "connection closed"),
                        _ = conn_stop.changed() => { conn.as_mut().graceful_shutdown(); let _ = conn.await; }
                    }
                }
                None => {
                    let conn = builder.serve_connection(TokioIo::new(io), svc);
                    tokio::pin!(conn);
                    tokio::select! {
                        _ = conn.as_mut() => {}
                        why = watchdog.as_mut() => tracing::debug!(%peer, reason = why, "connection closed"),
                        _ = conn_stop.changed() => { conn.as_mut().graceful_shutdown(); let _ = conn.await; }
                    }
                }
            }
        });
        // Reap finished connections so the set does not grow without bound.
        while conns.try_join_next().is_some() {}
    }
    let _ = TokioExecutor::new();
    while conns.join_next().await.is_some() {}
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpStream;

    /// A server with `limits` answering `GET /` and echoing the body of `POST /echo`.
    async fn server(limits: Limits) -> (SocketAddr, tokio::sync::oneshot::Sender<()>) {
        let app = Router::new()
            .route("/", axum::routing::get(|| async { "ok" }))
            .route(
                "/echo",
                axum::routing::post(|b: bytes::Bytes| async move { b }),
            );
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(serve_with(listener, app, None, limits, async move {
            let _ = rx.await;
        }));
        (addr, tx)
    }

    fn short() -> Limits {
        Limits {
            header_read_timeout: Duration::from_millis(300),
            read_timeout: Duration::from_millis(300),
            idle_timeout: Duration::from_millis(600),
            max_connections: 16,
        }
    }

    /// Reads until the server closes the connection (or 5 s pass): what came, and when.
    async fn until_closed(s: &mut TcpStream) -> (String, Duration) {
        let t = Instant::now();
        let mut out = Vec::new();
        let mut buf = [0u8; 1024];
        loop {
            match tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf)).await {
                Ok(Ok(0)) | Ok(Err(_)) => break,
                Ok(Ok(n)) => out.extend_from_slice(&buf[..n]),
                Err(_) => panic!("the server kept the connection open for 5 s"),
            }
        }
        (String::from_utf8_lossy(&out).into_owned(), t.elapsed())
    }

    async fn request(s: &mut TcpStream, req: &str) -> String {
        s.write_all(req.as_bytes()).await.unwrap();
        let mut buf = [0u8; 1024];
        let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf))
            .await
            .unwrap()
            .unwrap();
        String::from_utf8_lossy(&buf[..n]).into_owned()
    }

    #[tokio::test]
    async fn a_slow_request_head_is_cut_off_at_the_header_timeout() {
        let (addr, _stop) = server(short()).await;
        // Half a request line, then nothing.
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(b"GET / HT").await.unwrap();
        let (_, took) = until_closed(&mut s).await;
        assert!(took < Duration::from_secs(2), "{took:?}");
        // Headers trickled one byte at a time: the clock runs from the first byte.
        let mut s = TcpStream::connect(addr).await.unwrap();
        let t = Instant::now();
        let closed = async {
            for b in b"GET / HTTP/1.1\r\nHost: x\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaa" {
                if s.write_all(&[*b]).await.is_err() {
                    return true;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            false
        };
        let _ = closed.await;
        let (got, _) = until_closed(&mut s).await;
        assert!(!got.contains("200 OK"), "{got}");
        assert!(t.elapsed() < Duration::from_secs(3), "{:?}", t.elapsed());
        // A connection that never sends anything is closed too.
        let mut s = TcpStream::connect(addr).await.unwrap();
        let (_, took) = until_closed(&mut s).await;
        assert!(took < Duration::from_secs(2), "{took:?}");
    }

    #[tokio::test]
    async fn a_slow_body_is_cut_off_at_the_read_timeout() {
        let (addr, _stop) = server(short()).await;
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n0123456789")
            .await
            .unwrap();
        let (got, took) = until_closed(&mut s).await;
        assert!(!got.contains("200 OK"), "{got}");
        assert!(took < Duration::from_secs(2), "{took:?}");
        // A body sent in time is served.
        let mut s = TcpStream::connect(addr).await.unwrap();
        let got = request(
            &mut s,
            "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello",
        )
        .await;
        assert!(
            got.starts_with("HTTP/1.1 200") && got.ends_with("hello"),
            "{got}"
        );
    }

    #[tokio::test]
    async fn keep_alive_connections_live_until_the_idle_timeout() {
        let (addr, _stop) = server(short()).await;
        let mut s = TcpStream::connect(addr).await.unwrap();
        let req = "GET / HTTP/1.1\r\nHost: x\r\n\r\n";
        assert!(request(&mut s, req).await.starts_with("HTTP/1.1 200"));
        // Idle longer than the head timeout but shorter than the idle timeout: still open.
        tokio::time::sleep(Duration::from_millis(400)).await;
        assert!(request(&mut s, req).await.starts_with("HTTP/1.1 200"));
        let (_, took) = until_closed(&mut s).await;
        assert!(
            took >= Duration::from_millis(500) && took < Duration::from_secs(2),
            "{took:?}"
        );
    }

    #[tokio::test]
    async fn connections_past_max_connections_are_closed_at_once() {
        let (addr, _stop) = server(Limits {
            max_connections: 2,
            header_read_timeout: Duration::from_secs(5),
            idle_timeout: Duration::from_secs(5),
            ..Limits::default()
        })
        .await;
        let mut a = TcpStream::connect(addr).await.unwrap();
        let _b = TcpStream::connect(addr).await.unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
        let mut c = TcpStream::connect(addr).await.unwrap();
        let (_, took) = until_closed(&mut c).await;
        assert!(took < Duration::from_secs(1), "{took:?}");
        // The first two still work; once one closes, a new one is served.
        let req = "GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
        assert!(request(&mut a, req).await.starts_with("HTTP/1.1 200"));
        drop(a);
        tokio::time::sleep(Duration::from_millis(100)).await;
        let mut d = TcpStream::connect(addr).await.unwrap();
        assert!(request(&mut d, req).await.starts_with("HTTP/1.1 200"));
    }
}
