//! The proxy's `/metrics` (Prometheus text) and its `agent.credential.used` events.
//!
//! leash's lifecycle events are written by the server's audit pipeline; the proxy is a
//! client of the server and there is no endpoint for a client to append to the audit
//! log. So each forwarded request is reported by the proxy itself: one JSON line per use
//! on its log (target `leash_proxy::events`, level info, on stderr) in the shape of the
//! audit's lifecycle event, and counted in `leash_proxy_requests_total`.
//!
//! The event lines are written off the request path: [`used`] queues the use (its time
//! taken then) for a writer thread, which builds the JSON and logs the queued lines in
//! batches (it pauses [`EVENT_BATCH_PAUSE`] after each batch). Building and writing the
//! line on the request path cost the one-thread proxy about a quarter of its CPU per
//! forwarded request (`PROXY_LOG=info scripts/bench-proxy`). [`flush_events`] writes
//! what is queued (at shutdown). A full queue writes the line on the caller's thread, so
//! no use goes unreported.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::mpsc::{Receiver, SyncSender, TrySendError, sync_channel};
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

/// Latency buckets, seconds.
const BUCKETS: [f64; 12] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0, 5.0, 30.0,
];

#[derive(Default)]
struct Histogram {
    counts: [u64; BUCKETS.len()],
    sum: f64,
    count: u64,
}

#[derive(Default)]
struct Inner {
    /// By upstream, then status.
    requests: BTreeMap<String, BTreeMap<u16, u64>>,
    latency: BTreeMap<String, Histogram>,
    denied: BTreeMap<String, u64>,
    redactions: BTreeMap<String, u64>,
    pg_sessions: u64,
    pg_refused: u64,
    pg_active: i64,
}

/// The counters.
#[derive(Default)]
pub struct Metrics {
    inner: Mutex<Inner>,
}

/// One use of a credential, as reported in the event line.
pub struct Use<'a> {
    /// `http` or `postgres`.
    pub kind: &'a str,
    /// Upstream name (HTTP) or address (PostgreSQL).
    pub upstream: &'a str,
    /// The lease the credential came from (empty for KV secrets).
    pub lease_id: &'a str,
    /// HTTP method (HTTP only).
    pub method: &'a str,
    /// Request path below the upstream prefix, without the query (HTTP only).
    pub path: &'a str,
    /// Response status (HTTP only).
    pub status: u16,
    /// The trace id of the agent's `traceparent`, or empty.
    pub trace_id: &'a str,
}

impl Metrics {
    fn with<R>(&self, f: impl FnOnce(&mut Inner) -> R) -> R {
        let mut g = match self.inner.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        f(&mut g)
    }

    /// A response from (or on behalf of) `upstream`.
    pub fn request(&self, upstream: &str, status: u16, latency: Option<Duration>) {
        self.with(|m| {
            // Looked up by reference first: the names are allocated once per upstream
            // and status, not once per request.
            if !m.requests.contains_key(upstream) {
                m.requests.insert(upstream.to_owned(), BTreeMap::new());
            }
            if let Some(by_status) = m.requests.get_mut(upstream) {
                *by_status.entry(status).or_default() += 1;
            }
            if let Some(l) = latency {
                let s = l.as_secs_f64();
                if !m.latency.contains_key(upstream) {
                    m.latency.insert(upstream.to_owned(), Histogram::default());
                }
                let Some(h) = m.latency.get_mut(upstream) else {
                    return;
                };
                for (i, b) in BUCKETS.iter().enumerate() {
                    if s <= *b {
                        h.counts[i] += 1;
                    }
                }
                h.sum += s;
                h.count += 1;
            }
        });
    }

    /// A request refused by the upstream's `allow` rules.
    pub fn denied(&self, upstream: &str) {
        self.with(|m| *m.denied.entry(upstream.to_owned()).or_default() += 1);
    }

    /// Credentials replaced with `[REDACTED]` in a response.
    pub fn redacted(&self, upstream: &str, n: u64) {
        self.with(|m| *m.redactions.entry(upstream.to_owned()).or_default() += n);
    }

    /// A PostgreSQL session started (`true`) or ended (`false`).
    pub fn pg_session(&self, start: bool) {
        self.with(|m| {
            if start {
                m.pg_sessions += 1;
                m.pg_active += 1;
            } else {
                m.pg_active -= 1;
            }
        });
    }

    /// A PostgreSQL client refused (no credential, bad local password, upstream error).
    pub fn pg_refused(&self) {
        self.with(|m| m.pg_refused += 1);
    }

    /// Prometheus text.
    pub fn render(&self) -> String {
        self.with(|m| {
            let mut o = String::new();
            o.push_str("# HELP leash_proxy_requests_total Requests answered, by upstream and status.\n# TYPE leash_proxy_requests_total counter\n");
            for (u, by_status) in &m.requests {
                for (s, n) in by_status {
                    let _ = writeln!(o, "leash_proxy_requests_total{{upstream=\"{u}\",status=\"{s}\"}} {n}");
                }
            }
            o.push_str("# HELP leash_proxy_request_duration_seconds Time to the upstream's response headers.\n# TYPE leash_proxy_request_duration_seconds histogram\n");
            for (u, h) in &m.latency {
                for (i, b) in BUCKETS.iter().enumerate() {
                    let _ = writeln!(
                        o,
                        "leash_proxy_request_duration_seconds_bucket{{upstream=\"{u}\",le=\"{b}\"}} {}",
                        h.counts[i]
                    );
                }
                let _ = writeln!(o, "leash_proxy_request_duration_seconds_bucket{{upstream=\"{u}\",le=\"+Inf\"}} {}", h.count);
                let _ = writeln!(o, "leash_proxy_request_duration_seconds_sum{{upstream=\"{u}\"}} {}", h.sum);
                let _ = writeln!(o, "leash_proxy_request_duration_seconds_count{{upstream=\"{u}\"}} {}", h.count);
            }
            o.push_str("# HELP leash_proxy_denied_total Requests refused by an upstream's allow rules.\n# TYPE leash_proxy_denied_total counter\n");
            for (u, n) in &m.denied {
                let _ = writeln!(o, "leash_proxy_denied_total{{upstream=\"{u}\"}} {n}");
            }
            o.push_str("# HELP leash_proxy_redactions_total Credentials replaced with [REDACTED] in responses.\n# TYPE leash_proxy_redactions_total counter\n");
            for (u, n) in &m.redactions {
                let _ = writeln!(o, "leash_proxy_redactions_total{{upstream=\"{u}\"}} {n}");
            }
            let _ = writeln!(o, "# TYPE leash_proxy_pg_sessions_total counter\nleash_proxy_pg_sessions_total {}", m.pg_sessions);
            let _ = writeln!(o, "# TYPE leash_proxy_pg_sessions_active gauge\nleash_proxy_pg_sessions_active {}", m.pg_active);
            let _ = writeln!(o, "# TYPE leash_proxy_pg_refused_total counter\nleash_proxy_pg_refused_total {}", m.pg_refused);
            o
        })
    }
}

/// Uses queued for the event writer before [`used`] writes on the caller's thread.
const EVENT_QUEUE: usize = 8192;

/// How long the event writer waits after writing a batch, so that a busy proxy hands it
/// many uses per wake-up (and the request path seldom has to wake it).
pub const EVENT_BATCH_PAUSE: Duration = Duration::from_millis(2);

/// One use, owned, as queued for the writer.
struct Record {
    kind: &'static str,
    unix_time: i64,
    upstream: String,
    lease_id: String,
    method: String,
    path: String,
    status: u16,
    trace_id: String,
}

enum Queued {
    Use(Box<Record>),
    /// Write everything queued before this, then answer.
    Flush(std::sync::mpsc::Sender<()>),
}

fn kind(k: &str) -> &'static str {
    match k {
        "http" => "http",
        "postgres" => "postgres",
        _ => "other",
    }
}

fn write_event(r: &Record) {
    let ev = serde_json::json!({
        "type": "lifecycle",
        "event": "agent.credential.used",
        "unix_time": r.unix_time,
        "lease_id": r.lease_id,
        "trace_id": r.trace_id,
        "action_context": {
            "initiator": format!("leash-proxy/{}", r.kind),
            "upstream": r.upstream,
            "method": r.method,
            "path": r.path,
            "status": r.status,
        },
    });
    tracing::info!(target: "leash_proxy::events", "{ev}");
}

fn writer_loop(rx: Receiver<Queued>) {
    while let Ok(first) = rx.recv() {
        let mut next = Some(first);
        while let Some(q) = next.take().or_else(|| rx.try_recv().ok()) {
            match q {
                Queued::Use(r) => write_event(&r),
                Queued::Flush(done) => {
                    let _ = done.send(());
                }
            }
        }
        std::thread::sleep(EVENT_BATCH_PAUSE);
    }
}

/// The writer's queue; `None` if its thread could not be started (lines are then
/// written on the caller's thread).
fn queue() -> Option<&'static SyncSender<Queued>> {
    static TX: OnceLock<Option<SyncSender<Queued>>> = OnceLock::new();
    TX.get_or_init(|| {
        let (tx, rx) = sync_channel(EVENT_QUEUE);
        match std::thread::Builder::new()
            .name("leash-proxy-events".into())
            .spawn(move || writer_loop(rx))
        {
            Ok(_) => Some(tx),
            Err(e) => {
                tracing::warn!(error = %e, "no event writer thread; event lines are written inline");
                None
            }
        }
    })
    .as_ref()
}

/// Reports one use: the `agent.credential.used` event line, written by the event writer
/// thread (see the module's documentation).
pub fn used(u: &Use<'_>) {
    if !tracing::enabled!(target: "leash_proxy::events", tracing::Level::INFO) {
        return;
    }
    let r = Box::new(Record {
        kind: kind(u.kind),
        unix_time: leash_types::Clock::unix(&leash_types::SystemClock),
        upstream: u.upstream.to_owned(),
        lease_id: u.lease_id.to_owned(),
        method: u.method.to_owned(),
        path: u.path.to_owned(),
        status: u.status,
        trace_id: u.trace_id.to_owned(),
    });
    match queue() {
        Some(tx) => match tx.try_send(Queued::Use(r)) {
            Ok(()) => {}
            Err(
                TrySendError::Full(Queued::Use(r)) | TrySendError::Disconnected(Queued::Use(r)),
            ) => {
                write_event(&r);
            }
            Err(_) => {}
        },
        None => write_event(&r),
    }
}

/// Writes the queued event lines; returns when they are written (or after `wait`).
pub fn flush_events(wait: Duration) {
    let Some(tx) = queue() else {
        return;
    };
    let (done_tx, done_rx) = std::sync::mpsc::channel();
    if tx.send(Queued::Flush(done_tx)).is_ok() {
        let _ = done_rx.recv_timeout(wait);
    }
}

/// The trace id of a W3C `traceparent` (`00-<32 hex>-<16 hex>-<2 hex>`), if valid.
pub fn trace_id(traceparent: Option<&str>) -> Option<&str> {
    let t = traceparent?.trim();
    let parts: Vec<&str> = t.split('-').collect();
    let hex = |s: &str, n: usize| {
        s.len() == n && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
    };
    match parts.as_slice() {
        [v, id, span, flags]
            if hex(v, 2)
                && hex(id, 32)
                && hex(span, 16)
                && hex(flags, 2)
                && id.bytes().any(|b| b != b'0') =>
        {
            Some(id)
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn traceparent_ids() {
        let id = "4bf92f3577b34da6a3ce929d0e0e4736";
        assert_eq!(
            trace_id(Some(&format!("00-{id}-00f067aa0ba902b7-01"))),
            Some(id)
        );
        assert_eq!(
            trace_id(Some(
                "00-00000000000000000000000000000000-00f067aa0ba902b7-01"
            )),
            None
        );
        assert_eq!(trace_id(Some("garbage")), None);
        assert_eq!(trace_id(None), None);
    }

    #[test]
    fn renders_counters_and_histograms() {
        let m = Metrics::default();
        m.request("github", 200, Some(Duration::from_millis(2)));
        m.request("github", 403, None);
        m.denied("github");
        let t = m.render();
        assert!(t.contains("leash_proxy_requests_total{upstream=\"github\",status=\"200\"} 1"));
        assert!(t.contains("leash_proxy_requests_total{upstream=\"github\",status=\"403\"} 1"));
        assert!(t.contains(
            "leash_proxy_request_duration_seconds_bucket{upstream=\"github\",le=\"0.0025\"} 1"
        ));
        assert!(t.contains(
            "leash_proxy_request_duration_seconds_bucket{upstream=\"github\",le=\"0.001\"} 0"
        ));
        assert!(t.contains("leash_proxy_denied_total{upstream=\"github\"} 1"));
    }
}
