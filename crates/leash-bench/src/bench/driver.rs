//! The load generator's inner loop: one task per keep-alive HTTP/1.1 connection, sending
//! one prepared request back to back (closed loop) or on a schedule (open loop).
//!
//! Latency runs from the moment a request was *due*: in open loop that is its scheduled
//! time, so queueing behind a slow server is counted (no coordinated omission). Only
//! requests due inside the measured window count. Every request is bounded by the end
//! of the run plus a grace period, so a hung server cannot keep the benchmark alive.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use hyper::client::conn::http1::SendRequest;
use hyper::header::{CONTENT_TYPE, HOST, HeaderValue};
use hyper::{Method, Request};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio::time::Instant;

/// How late a paced wake-up may be and still count as timer granularity (tokio's timer
/// wheel ticks every millisecond).
const TIMER_SLACK: Duration = Duration::from_millis(2);

use leash_client::{ExposeSecret, SecretString};

use super::histogram::Histogram;
use super::{BenchError, failed};

/// How long requests still in flight at the end of a scenario may take to finish.
const GRACE: Duration = Duration::from_secs(5);
/// Pause after a failed connection attempt, so a dead server is not hammered.
const RECONNECT_PAUSE: Duration = Duration::from_millis(50);
/// Longest error body kept for the report.
const MAX_ERROR_BODY: usize = 512;

/// Where to connect: the resolved socket address and the `Host` header value.
#[derive(Debug, Clone)]
pub(crate) struct Target {
    pub(crate) addr: SocketAddr,
    pub(crate) host: HeaderValue,
}

/// One request, ready to be sent many times.
#[derive(Debug)]
pub(crate) struct RequestSpec {
    pub(crate) method: Method,
    pub(crate) path: String,
    /// `X-Vault-Token`, marked sensitive; `None`: sent without a token.
    pub(crate) token: Option<HeaderValue>,
    pub(crate) body: Option<Bytes>,
}

/// The `X-Vault-Token` header for `token`, marked sensitive so it is never logged.
pub(crate) fn token_header(token: &SecretString) -> Result<HeaderValue, BenchError> {
    let mut v = HeaderValue::from_str(token.expose_secret())
        .map_err(|_| failed("token contains characters not allowed in a header"))?;
    v.set_sensitive(true);
    Ok(v)
}

/// The shared schedule of one scenario run.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Schedule {
    pub(crate) start: Instant,
    pub(crate) measure_from: Instant,
    pub(crate) end: Instant,
    /// Time between two sends of one connection, in open loop.
    pub(crate) interval: Option<Duration>,
}

/// What one connection saw.
#[derive(Debug)]
pub(crate) struct Stats {
    pub(crate) latencies: Histogram,
    pub(crate) requests: u64,
    pub(crate) errors: u64,
    pub(crate) first_error: Option<String>,
}

impl Stats {
    pub(crate) fn new() -> Stats {
        Stats {
            latencies: Histogram::new(),
            requests: 0,
            errors: 0,
            first_error: None,
        }
    }

    pub(crate) fn error(&mut self, what: String) {
        self.errors += 1;
        if self.first_error.is_none() {
            self.first_error = Some(what);
        }
    }

    pub(crate) fn merge(&mut self, other: Stats) {
        self.latencies.merge(&other.latencies);
        self.requests += other.requests;
        self.errors += other.errors;
        if self.first_error.is_none() {
            self.first_error = other.first_error;
        }
    }
}

/// A live keep-alive connection; dropping it stops its driver task.
struct Conn {
    sender: SendRequest<Full<Bytes>>,
    driver: tokio::task::JoinHandle<()>,
}

impl Drop for Conn {
    fn drop(&mut self) {
        self.driver.abort();
    }
}

async fn connect(target: &Target) -> Result<Conn, String> {
    let stream = TcpStream::connect(target.addr)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    stream
        .set_nodelay(true)
        .map_err(|e| format!("connect: {e}"))?;
    let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| format!("handshake: {e}"))?;
    // Owned by `Conn` and aborted with it; a connection error surfaces on the sender.
    let driver = tokio::spawn(async move {
        let _ = connection.await;
    });
    Ok(Conn { sender, driver })
}

/// Sends one request and reads the whole answer: status, and the body if not 2xx.
async fn send_one(
    conn: &mut Conn,
    spec: &RequestSpec,
    target: &Target,
) -> Result<(u16, Option<Bytes>), String> {
    let mut builder = Request::builder()
        .method(spec.method.clone())
        .uri(spec.path.as_str())
        .header(HOST, target.host.clone())
        .header("x-vault-request", "true");
    if let Some(token) = &spec.token {
        builder = builder.header("x-vault-token", token.clone());
    }
    if spec.body.is_some() {
        builder = builder.header(CONTENT_TYPE, "application/json");
    }
    let req = builder
        .body(Full::new(spec.body.clone().unwrap_or_default()))
        .map_err(|e| format!("building request: {e}"))?;
    conn.sender
        .ready()
        .await
        .map_err(|e| format!("connection: {e}"))?;
    let resp = conn
        .sender
        .send_request(req)
        .await
        .map_err(|e| format!("request: {e}"))?;
    let status = resp.status().as_u16();
    let body = resp
        .into_body()
        .collect()
        .await
        .map_err(|e| format!("reading body: {e}"))?
        .to_bytes();
    Ok((status, (!(200..300).contains(&status)).then_some(body)))
}

/// One request on a fresh connection (closed afterwards): its status.
pub(crate) async fn request_once(target: &Target, spec: &RequestSpec) -> Result<u16, String> {
    let mut conn = connect(target).await?;
    send_one(&mut conn, spec, target).await.map(|(s, _)| s)
}

/// One connection's loop: send until the schedule ends, recording measured requests.
pub(crate) async fn drive(
    index: u32,
    spec: Arc<RequestSpec>,
    target: Target,
    sched: Schedule,
    rate: Option<f64>,
) -> Stats {
    let mut stats = Stats::new();
    let mut conn: Option<Conn> = None;
    // In open loop, connections are staggered so the aggregate rate is smooth.
    let offset = rate.map_or(Duration::ZERO, |r| {
        Duration::from_secs_f64(f64::from(index) / r)
    });
    let mut sent: u32 = 0;
    loop {
        let due = match sched.interval {
            Some(iv) => sched.start + offset + iv.saturating_mul(sent),
            None => Instant::now(),
        };
        if due >= sched.end {
            break;
        }
        // The latency clock starts when the request was due, so time spent waiting behind
        // a slow response counts (no coordinated omission). Tokio's timer fires on
        // millisecond ticks, though, so a wake-up up to TIMER_SLACK late is the pacer's
        // jitter, not the server's doing: then the clock starts at the wake-up.
        let mut origin = due;
        if sched.interval.is_some() {
            tokio::time::sleep_until(due).await;
            let woke = Instant::now();
            if woke.saturating_duration_since(due) <= TIMER_SLACK {
                origin = woke;
            }
        }
        sent = sent.saturating_add(1);
        let measured = due >= sched.measure_from;
        if conn.as_ref().is_some_and(|c| c.sender.is_closed()) {
            conn = None;
        }
        let c = match &mut conn {
            Some(c) => c,
            None => match connect(&target).await {
                Ok(c) => conn.insert(c),
                Err(e) => {
                    if measured {
                        stats.requests += 1;
                        stats.error(e);
                    }
                    tokio::time::sleep(RECONNECT_PAUSE).await;
                    continue;
                }
            },
        };
        let result = tokio::time::timeout_at(sched.end + GRACE, send_one(c, &spec, &target)).await;
        let done = Instant::now();
        match result {
            Ok(Ok((status, error_body))) => {
                if measured {
                    stats.requests += 1;
                    stats
                        .latencies
                        .record(done.saturating_duration_since(origin));
                    if let Some(body) = error_body {
                        stats.error(describe_error(status, &body));
                    }
                }
            }
            Ok(Err(e)) => {
                conn = None;
                if measured {
                    stats.requests += 1;
                    stats.error(e);
                }
            }
            Err(_) => {
                if measured {
                    stats.requests += 1;
                    stats.error("timed out at the end of the run".into());
                }
                break;
            }
        }
    }
    stats
}

fn describe_error(status: u16, body: &[u8]) -> String {
    let text = String::from_utf8_lossy(&body[..body.len().min(MAX_ERROR_BODY)]);
    format!("HTTP {status}: {}", text.trim())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A tiny keep-alive HTTP/1.1 server on a real socket that answers `status` to
    /// everything; checks the driver loop end to end.
    async fn serve_forever(status: u16) -> Target {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            loop {
                let (mut sock, _) = listener.accept().await.unwrap();
                tokio::spawn(async move {
                    let mut buf = Vec::new();
                    let mut chunk = [0u8; 4096];
                    loop {
                        let Ok(n) = sock.read(&mut chunk).await else {
                            return;
                        };
                        if n == 0 {
                            return;
                        }
                        buf.extend_from_slice(&chunk[..n]);
                        while let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                            buf.drain(..i + 4);
                            let body = if status == 200 {
                                "{}"
                            } else {
                                "{\"errors\":[\"nope\"]}"
                            };
                            let resp = format!(
                                "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
                                body.len()
                            );
                            if sock.write_all(resp.as_bytes()).await.is_err() {
                                return;
                            }
                        }
                    }
                });
            }
        });
        Target {
            addr,
            host: HeaderValue::from_str(&addr.to_string()).unwrap(),
        }
    }

    fn spec() -> Arc<RequestSpec> {
        Arc::new(RequestSpec {
            method: Method::GET,
            path: "/v1/auth/token/lookup-self".into(),
            token: Some(token_header(&SecretString::from("lsh.x")).unwrap()),
            body: None,
        })
    }

    #[tokio::test]
    async fn closed_loop_counts_requests_and_errors() {
        let target = serve_forever(200).await;
        let start = Instant::now();
        let sched = Schedule {
            start,
            measure_from: start + Duration::from_millis(50),
            end: start + Duration::from_millis(250),
            interval: None,
        };
        let stats = drive(0, spec(), target, sched, None).await;
        assert!(stats.requests > 10, "{stats:?}");
        assert_eq!(stats.errors, 0);
        assert_eq!(stats.latencies.len(), stats.requests);

        let target = serve_forever(403).await;
        let stats = drive(0, spec(), target, sched_from_now(), None).await;
        assert_eq!(stats.errors, stats.requests);
        assert!(stats.first_error.unwrap().contains("HTTP 403"));
    }

    fn sched_from_now() -> Schedule {
        let start = Instant::now();
        Schedule {
            start,
            measure_from: start,
            end: start + Duration::from_millis(100),
            interval: None,
        }
    }

    #[tokio::test]
    async fn open_loop_keeps_to_the_rate() {
        let target = serve_forever(200).await;
        let start = Instant::now();
        // 200 req/s on one connection for 0.5 s: about 100 requests, never many more.
        let sched = Schedule {
            start,
            measure_from: start,
            end: start + Duration::from_millis(500),
            interval: Some(Duration::from_millis(5)),
        };
        let stats = drive(0, spec(), target, sched, Some(200.0)).await;
        assert!((90..=101).contains(&stats.requests), "{}", stats.requests);
    }

    #[tokio::test]
    async fn a_dead_server_is_reported_not_hammered() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        drop(listener);
        let target = Target {
            addr,
            host: HeaderValue::from_static("x"),
        };
        let stats = drive(0, spec(), target, sched_from_now(), None).await;
        assert!(stats.errors >= 1 && stats.errors <= 3, "{stats:?}");
        assert!(stats.first_error.unwrap().starts_with("connect"));
    }
}
