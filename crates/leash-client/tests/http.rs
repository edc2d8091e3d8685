//! The client against a tiny HTTP/1.1 server on a real loopback socket: requests are
//! recorded, answers are scripted. Checks what goes over the wire and how answers and
//! error bodies are decoded.

// Test helpers outside `#[test]` fns panic on setup failure by design.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::{Arc, Mutex};

use leash_client::{Client, ClientConfig, ClientError, ExposeSecret, TokenCreateRequest};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// One request as the server saw it.
#[derive(Debug, Clone)]
struct Seen {
    method: String,
    target: String,
    headers: Vec<(String, String)>,
    body: String,
}

impl Seen {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
    fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap()
    }
}

/// Serves `answers` in order, one per connection (`Connection: close`), and records
/// what it was sent.
async fn serve(answers: Vec<(u16, &'static str)>) -> (String, Arc<Mutex<Vec<Seen>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = format!("http://{}", listener.local_addr().unwrap());
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = seen.clone();
    tokio::spawn(async move {
        for (status, body) in answers {
            let (mut sock, _) = listener.accept().await.unwrap();
            let mut buf = Vec::new();
            let mut chunk = [0u8; 4096];
            let head_end = loop {
                let n = sock.read(&mut chunk).await.unwrap();
                assert!(n > 0, "client closed before sending a request");
                buf.extend_from_slice(&chunk[..n]);
                if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                    break i + 4;
                }
            };
            let head = String::from_utf8(buf[..head_end].to_vec()).unwrap();
            let mut lines = head.split("\r\n");
            let mut first = lines.next().unwrap().split(' ');
            let (method, target) = (
                first.next().unwrap().to_owned(),
                first.next().unwrap().to_owned(),
            );
            let headers: Vec<(String, String)> = lines
                .filter_map(|l| l.split_once(':'))
                .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
                .collect();
            let len: usize = headers
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
                .map_or(0, |(_, v)| v.parse().unwrap());
            while buf.len() < head_end + len {
                let n = sock.read(&mut chunk).await.unwrap();
                buf.extend_from_slice(&chunk[..n]);
            }
            let req_body = String::from_utf8(buf[head_end..head_end + len].to_vec()).unwrap();
            log.lock().unwrap().push(Seen {
                method,
                target,
                headers,
                body: req_body,
            });
            let ctype = if body_is_json(body) {
                "application/json"
            } else {
                "text/plain"
            };
            let resp = format!(
                "HTTP/1.1 {status} X\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            sock.write_all(resp.as_bytes()).await.unwrap();
            sock.shutdown().await.ok();
        }
    });
    (addr, seen)
}

fn body_is_json(s: &str) -> bool {
    serde_json::from_str::<Value>(s).is_ok()
}

fn client(addr: &str, token: Option<&str>) -> Client {
    let mut cfg = ClientConfig::new(addr);
    cfg.token = token.map(|t| t.to_owned().into());
    Client::new(cfg).unwrap()
}

#[tokio::test]
async fn sends_vault_headers_and_list_verb() {
    let (addr, seen) = serve(vec![(200, r#"{"data":{"keys":["a","b/"]}}"#)]).await;
    let c = client(&addr, Some("lsh.tok"));
    let keys = c.kv2_list("secret", "agents/").await.unwrap();
    assert_eq!(keys, vec!["a", "b/"]);
    let s = seen.lock().unwrap()[0].clone();
    assert_eq!(s.method, "LIST");
    assert_eq!(s.target, "/v1/secret/metadata/agents/");
    assert_eq!(s.header("x-vault-token"), Some("lsh.tok"));
    assert_eq!(s.header("x-vault-request"), Some("true"));
}

#[tokio::test]
async fn no_token_header_without_a_token() {
    let (addr, seen) = serve(vec![(
        200,
        r#"{"initialized":true,"sealed":false,"standby":false,"version":"0.1.0"}"#,
    )])
    .await;
    let h = client(&addr, None).health().await.unwrap();
    assert_eq!(
        (h.status, h.sealed, h.version.as_str()),
        (200, false, "0.1.0")
    );
    assert_eq!(seen.lock().unwrap()[0].header("x-vault-token"), None);
}

#[tokio::test]
async fn error_bodies_decode_into_api_errors() {
    let (addr, _) = serve(vec![
        (
            400,
            r#"{"errors":["failed to parse policy","line 3: unexpected token"]}"#,
        ),
        (403, r#"{"errors":["permission denied"]}"#),
    ])
    .await;
    let c = client(&addr, Some("t"));
    let e = c.policy_write("x", "path {").await.unwrap_err();
    match &e {
        ClientError::Api { status, errors } => {
            assert_eq!(*status, 400);
            assert_eq!(
                errors,
                &["failed to parse policy", "line 3: unexpected token"]
            );
        }
        other => panic!("unexpected {other:?}"),
    }
    assert_eq!(
        e.to_string(),
        "Error: 400: failed to parse policy; line 3: unexpected token"
    );
    let e = c.read("sys/mounts").await.unwrap_err();
    assert_eq!(e.status(), Some(403));
    assert_eq!(e.to_string(), "Error: 403: permission denied");
}

#[tokio::test]
async fn raw_request_returns_error_statuses_as_answers() {
    let (addr, _) = serve(vec![(403, r#"{"errors":["permission denied"]}"#)]).await;
    let r = client(&addr, Some("t"))
        .request("GET", "secret/data/x", None)
        .await
        .unwrap();
    assert_eq!(r.status, 403);
    assert_eq!(r.errors(), vec!["permission denied"]);
}

#[tokio::test]
async fn read_and_list_of_missing_paths_are_none() {
    let (addr, _) = serve(vec![
        (404, r#"{"errors":[]}"#),
        (404, r#"{"errors":[]}"#),
        (404, ""),
    ])
    .await;
    let c = client(&addr, Some("t"));
    assert!(c.read("secret/data/missing").await.unwrap().is_none());
    assert!(c.list("secret/metadata/").await.unwrap().is_none());
    assert!(c.policy_read("nope").await.unwrap().is_none());
}

#[tokio::test]
async fn soft_deleted_kv_version_is_returned_by_read() {
    let deleted =
        r#"{"data":{"data":null,"metadata":{"deletion_time":"2024-01-01T00:00:00Z","version":2}}}"#;
    let (addr, _) = serve(vec![(404, deleted), (404, deleted)]).await;
    let c = client(&addr, Some("t"));
    let body = c.read("secret/data/x").await.unwrap().unwrap();
    assert_eq!(body["data"]["metadata"]["version"], 2);
    assert!(
        c.kv2_get("secret", "x")
            .await
            .unwrap()
            .unwrap()
            .data
            .is_none()
    );
}

#[tokio::test]
async fn non_json_error_bodies_keep_their_text() {
    let (addr, _) = serve(vec![(502, "upstream went away")]).await;
    let e = client(&addr, Some("t"))
        .read("sys/health")
        .await
        .unwrap_err();
    assert!(
        matches!(e, ClientError::Api { status: 502, ref errors } if errors == &["upstream went away"])
    );
}

#[tokio::test]
async fn health_accepts_sealed_and_standby_codes() {
    let (addr, _) = serve(vec![
        (503, r#"{"initialized":true,"sealed":true}"#),
        (429, r#"{"initialized":true,"sealed":false,"standby":true}"#),
        (500, r#"{"errors":["internal error"]}"#),
    ])
    .await;
    let c = client(&addr, None);
    let h = c.health().await.unwrap();
    assert!(h.sealed && h.status == 503);
    let h = c.health().await.unwrap();
    assert!(h.standby && h.status == 429);
    assert_eq!(c.health().await.unwrap_err().status(), Some(500));
}

#[tokio::test]
async fn token_create_sends_the_request_and_decodes_auth() {
    let answer = r#"{"request_id":"r","lease_id":"","renewable":false,"lease_duration":0,"data":null,
        "wrap_info":null,"warnings":null,"auth":{"client_token":"lsh.child","accessor":"acc1",
        "policies":["bench","default"],"token_policies":["bench","default"],"metadata":{"k":"v"},
        "lease_duration":3600,"renewable":true,"entity_id":"","token_type":"service","orphan":false,
        "num_uses":0}}"#;
    let (addr, seen) = serve(vec![(200, answer)]).await;
    let req = TokenCreateRequest {
        policies: vec!["bench".into()],
        ttl: Some("1h".into()),
        ..Default::default()
    };
    let auth = client(&addr, Some("root"))
        .token_create(&req)
        .await
        .unwrap();
    assert_eq!(auth.client_token.expose_secret(), "lsh.child");
    assert_eq!(auth.accessor, "acc1");
    assert_eq!(auth.lease_duration, 3600);
    let s = seen.lock().unwrap()[0].clone();
    assert_eq!(
        (s.method.as_str(), s.target.as_str()),
        ("PUT", "/v1/auth/token/create")
    );
    assert_eq!(s.json(), json!({"policies": ["bench"], "ttl": "1h"}));
    assert!(
        s.header("content-type")
            .unwrap()
            .starts_with("application/json")
    );
}

#[tokio::test]
async fn token_lookup_sends_the_token_in_the_body_not_the_url() {
    let (addr, seen) = serve(vec![(
        200,
        r#"{"data":{"id":"lsh.other","ttl":60,"policies":["default"]}}"#,
    )])
    .await;
    let info = client(&addr, Some("root"))
        .token_lookup(&"lsh.other".to_owned().into())
        .await
        .unwrap();
    assert_eq!(info.ttl, 60);
    let s = seen.lock().unwrap()[0].clone();
    assert_eq!(s.target, "/v1/auth/token/lookup");
    assert_eq!(s.json(), json!({"token": "lsh.other"}));
}

#[tokio::test]
async fn connection_refused_is_a_transport_error() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = format!("http://{}", listener.local_addr().unwrap());
    drop(listener);
    let e = client(&addr, None).health().await.unwrap_err();
    assert!(matches!(e, ClientError::Transport(_)), "{e:?}");
}
