//! `/healthz` and `/metrics` on a local port: a minimal HTTP/1.1 responder (GET only,
//! one request per connection, bounded reads and a deadline), so the sidecar does not
//! carry a web framework for two read-only pages.
//!
//! `/healthz` is 200 once every template rendered, no rendered credential is past its
//! expiry and renewal is not failing again and again; 503 otherwise, with the reason.
//! `/metrics` is Prometheus text: seconds until each credential expires, renewals,
//! failures, re-authentications, rotations and renders.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime};

use leash_types::{Clock as _, SystemClock};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpListener;

/// Failures in a row after which the agent reports itself unhealthy.
pub const UNHEALTHY_AFTER_FAILURES: u32 = 3;

/// What the agent reports.
#[derive(Debug, Default, Clone)]
pub struct Status {
    /// Every template (file and environment) rendered at least once.
    pub ready: bool,
    /// Each leased credential: the secret path and when it expires.
    pub credentials: Vec<(String, SystemTime)>,
    /// Failed server calls since the last success.
    pub failures_in_a_row: u32,
    /// Lease and token renewals that succeeded.
    pub renewals: u64,
    /// Server calls that failed.
    pub failures: u64,
    /// Logins after the first.
    pub reauths: u64,
    /// Credentials re-issued (max TTL reached, lease lost).
    pub rotations: u64,
    /// Files and environments written because their content changed.
    pub renders: u64,
}

/// The status shared between the agent loop and the health server.
pub type SharedStatus = Arc<Mutex<Status>>;

/// Reads the status (a poisoned lock still holds valid counters).
pub fn snapshot(s: &SharedStatus) -> Status {
    s.lock().unwrap_or_else(PoisonError::into_inner).clone()
}

/// Updates the status.
pub fn update(s: &SharedStatus, f: impl FnOnce(&mut Status)) {
    f(&mut s.lock().unwrap_or_else(PoisonError::into_inner));
}

impl Status {
    /// `Ok` when healthy, else why not.
    pub fn health(&self, now: SystemTime) -> Result<(), String> {
        if !self.ready {
            return Err("templates not rendered yet".into());
        }
        if let Some((p, _)) = self.credentials.iter().find(|(_, exp)| *exp <= now) {
            return Err(format!("credential from {p} has expired"));
        }
        if self.failures_in_a_row >= UNHEALTHY_AFTER_FAILURES {
            return Err(format!(
                "{} server calls failed in a row",
                self.failures_in_a_row
            ));
        }
        Ok(())
    }

    /// Prometheus text exposition.
    pub fn metrics(&self, now: SystemTime) -> String {
        let mut out = String::new();
        out.push_str("# HELP leash_agent_credential_expiry_seconds Seconds until the rendered credential expires.\n# TYPE leash_agent_credential_expiry_seconds gauge\n");
        for (p, exp) in &self.credentials {
            let secs = exp
                .duration_since(now)
                .map(|d| d.as_secs_f64())
                .unwrap_or_else(|e| -e.duration().as_secs_f64());
            out.push_str(&format!(
                "leash_agent_credential_expiry_seconds{{secret=\"{}\"}} {secs:.0}\n",
                p.replace('\\', "\\\\").replace('"', "\\\"")
            ));
        }
        for (name, help, v) in [
            ("renewals_total", "Lease and token renewals.", self.renewals),
            ("failures_total", "Failed server calls.", self.failures),
            ("reauths_total", "Logins after the first.", self.reauths),
            ("rotations_total", "Credentials re-issued.", self.rotations),
            (
                "renders_total",
                "Files and environments rewritten.",
                self.renders,
            ),
        ] {
            out.push_str(&format!(
                "# HELP leash_agent_{name} {help}\n# TYPE leash_agent_{name} counter\nleash_agent_{name} {v}\n"
            ));
        }
        out.push_str(&format!(
            "# HELP leash_agent_healthy 1 when /healthz answers 200.\n# TYPE leash_agent_healthy gauge\nleash_agent_healthy {}\n",
            u8::from(self.health(now).is_ok())
        ));
        out
    }
}

/// Serves until the task is dropped or aborted.
pub async fn serve(listener: TcpListener, status: SharedStatus) {
    loop {
        let Ok((mut sock, _)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        let _ = tokio::time::timeout(Duration::from_secs(5), async {
            let mut buf = [0u8; 2048];
            let mut n = 0;
            while n < buf.len() {
                match sock.read(&mut buf[n..]).await {
                    Ok(0) | Err(_) => break,
                    Ok(k) => n += k,
                }
                if buf[..n].windows(4).any(|w| w == b"\r\n\r\n") {
                    break;
                }
            }
            let line = String::from_utf8_lossy(&buf[..n]);
            let mut parts = line.split_whitespace();
            let (method, target) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
            let path = target.split('?').next().unwrap_or("");
            let now = SystemClock.now();
            let st = snapshot(&status);
            let (code, ctype, body) = match (method, path) {
                ("GET", "/healthz") => match st.health(now) {
                    Ok(()) => (200, "application/json", "{\"status\":\"ok\"}\n".to_owned()),
                    Err(why) => (
                        503,
                        "application/json",
                        format!("{}\n", serde_json::json!({"status": "unhealthy", "reason": why})),
                    ),
                },
                ("GET", "/metrics") => (200, "text/plain; version=0.0.4", st.metrics(now)),
                ("GET", _) => (404, "text/plain", "not found\n".to_owned()),
                _ => (405, "text/plain", "method not allowed\n".to_owned()),
            };
            let reason = match code {
                200 => "OK",
                404 => "Not Found",
                405 => "Method Not Allowed",
                _ => "Service Unavailable",
            };
            let head = format!(
                "HTTP/1.1 {code} {reason}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            );
            let _ = sock.write_all(head.as_bytes()).await;
            let _ = sock.write_all(body.as_bytes()).await;
            let _ = sock.shutdown().await;
        })
        .await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn health_follows_readiness_expiry_and_failures() {
        let now = SystemClock.now();
        let mut s = Status::default();
        assert!(s.health(now).is_err());
        s.ready = true;
        s.credentials
            .push(("database/creds/ro".into(), now + Duration::from_secs(10)));
        assert!(s.health(now).is_ok());
        assert!(
            s.metrics(now)
                .contains("leash_agent_credential_expiry_seconds{secret=\"database/creds/ro\"} 10")
        );
        assert!(
            s.health(now + Duration::from_secs(11))
                .unwrap_err()
                .contains("expired")
        );
        s.failures_in_a_row = UNHEALTHY_AFTER_FAILURES;
        assert!(s.health(now).unwrap_err().contains("in a row"));
        assert!(s.metrics(now).contains("leash_agent_healthy 0"));
    }
}
