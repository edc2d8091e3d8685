//! Integration tests: one binary, a real server per test (storage in a temporary
//! directory, HTTP on 127.0.0.1:0), talked to over HTTP exactly as clients do.
//!
//! Modules mirror the URL tree; what each asserts is what a Vault client would notice:
//! status codes, bodies, Vault's field names. No test measures time: expiry tests poll
//! with a generous bound, or move a manual clock.

// Test code and its helpers panic on setup failure by design, like assertions.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod agent;
mod approvals;
mod audit_chain;
mod audit_query;
mod audit_socket;
mod auth_approle;
mod auth_jwt;
mod auth_kubernetes;
mod auth_token;
mod auth_userpass;
mod canary;
mod cli_lease;
mod clients_compat;
mod containment;
mod crash;
mod database;
mod database_mysql;
mod db_tls;
mod ha;
mod http_errors;
mod kubernetes_secrets;
mod kv;
mod leaks;
mod lifecycle;
mod metrics_restart;
mod narrowing;
mod observer;
mod pg_outage;
mod proxy;
mod scope;
mod security;
mod storage;
mod storage_tls;
mod sys_audit;
mod sys_health;
mod sys_metrics;
mod sys_mounts;
mod sys_policy;

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The seed policy of issue 2, exactly as given there.
pub(crate) const SEED_POLICY: &str = r#"path "database/creds/agent-readonly" { capabilities = ["read"] }
path "secret/data/agents/config/*"   { capabilities = ["read"] }
path "auth/token/renew-self"         { capabilities = ["update"] }
path "*"                             { capabilities = ["deny"] }
"#;

/// An HTTP response as it came off the wire.
pub(crate) struct Raw {
    pub(crate) status: u16,
    pub(crate) headers: Vec<(String, String)>,
    pub(crate) body: Vec<u8>,
}

impl Raw {
    /// The first header of that name (case-insensitive).
    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The body as JSON (panics if it is not).
    pub(crate) fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "body is not JSON ({e}): {:?}",
                String::from_utf8_lossy(&self.body)
            )
        })
    }
}

/// Sends one HTTP/1.1 request byte for byte (no URL normalisation, any method, any
/// headers) and reads the whole answer (`Connection: close`). The body is written while
/// the answer is read, so a server that answers early (413) is seen, not a reset.
pub(crate) async fn raw(
    addr: SocketAddr,
    method: &str,
    target: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Raw {
    let stream = TcpStream::connect(addr).await.unwrap();
    let (mut rd, mut wr) = stream.into_split();
    let mut head = format!(
        "{method} {target} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    let body = body.to_vec();
    let writer = tokio::spawn(async move {
        // The server may close early (413): a failed write is then expected.
        if wr.write_all(head.as_bytes()).await.is_ok() {
            let _ = wr.write_all(&body).await;
        }
        wr
    });
    let mut buf = Vec::new();
    let mut chunk = [0u8; 16 * 1024];
    loop {
        match rd.read(&mut chunk).await {
            Ok(0) => break,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            // A reset after the answer arrived (server closed with our body unread).
            Err(_) if !buf.is_empty() => break,
            Err(e) => panic!("reading the answer to {method} {target}: {e}"),
        }
    }
    drop(writer.await);
    parse_response(&buf, method == "HEAD")
}

fn parse_response(buf: &[u8], head_only: bool) -> Raw {
    let end = buf
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| panic!("no header end in {:?}", String::from_utf8_lossy(buf)));
    let head = std::str::from_utf8(&buf[..end]).unwrap();
    let mut lines = head.split("\r\n");
    let status: u16 = lines
        .next()
        .unwrap()
        .split(' ')
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
        .collect();
    let mut raw = Raw {
        status,
        headers,
        body: Vec::new(),
    };
    let rest = &buf[end + 4..];
    if head_only {
        raw.body = rest.to_vec();
    } else if raw
        .header("transfer-encoding")
        .is_some_and(|v| v.eq_ignore_ascii_case("chunked"))
    {
        raw.body = dechunk(rest);
    } else {
        raw.body = rest.to_vec();
    }
    raw
}

fn dechunk(mut b: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let i = b.windows(2).position(|w| w == b"\r\n").unwrap();
        let size = usize::from_str_radix(std::str::from_utf8(&b[..i]).unwrap().trim(), 16).unwrap();
        b = &b[i + 2..];
        if size == 0 {
            return out;
        }
        out.extend_from_slice(&b[..size]);
        b = &b[size + 2..];
    }
}

/// `{"errors": [...]}` of a body, as strings.
pub(crate) fn errors(body: &Value) -> Vec<String> {
    body["errors"]
        .as_array()
        .unwrap_or_else(|| panic!("no errors list in {body}"))
        .iter()
        .map(|e| e.as_str().unwrap().to_owned())
        .collect()
}

/// A JSON list of strings, sorted (policy lists, capability lists).
pub(crate) fn sorted(v: &Value) -> Vec<String> {
    let mut out: Vec<String> = v
        .as_array()
        .unwrap_or_else(|| panic!("not a list: {v}"))
        .iter()
        .map(|s| s.as_str().unwrap().to_owned())
        .collect();
    out.sort();
    out
}

/// The one error message of a body.
pub(crate) fn error(body: &Value) -> String {
    errors(body).join("; ")
}

/// Polls `check` every 50 ms until it holds; panics after `limit` (chosen generously:
/// this bounds a hang, it does not measure speed).
pub(crate) async fn eventually<F, Fut>(what: &str, limit: Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let until = tokio::time::Instant::now() + limit;
    loop {
        if check().await {
            return;
        }
        assert!(
            tokio::time::Instant::now() < until,
            "timed out waiting for: {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A token created by root with these creation parameters; returns the whole `auth`.
pub(crate) async fn create_token(srv: &leash_testkit::TestServer, body: Value) -> Value {
    let (s, b) = srv.root("POST", "auth/token/create", Some(body)).await;
    assert_eq!(s, 200, "token create failed: {b}");
    b["auth"].clone()
}

/// `auth.client_token` of a creation answer.
pub(crate) fn client_token(auth: &Value) -> String {
    auth["client_token"].as_str().unwrap().to_owned()
}
