//! The `socket` audit device through `sys/audit`, with a real TCP receiver in the test:
//! entries arrive as JSON lines with the hash chain; enabling with an unreachable peer is
//! refused; as the only device with its peer down, requests fail closed (500, no secret
//! leaves); a file device beside it keeps requests going; buffered entries arrive when
//! the peer is back; `leash_audit_device_up` follows the device.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use leash_core::CoreConfig;
use leash_testkit::{Options, TestServer};
use serde_json::{Value, json};
use tokio::io::AsyncReadExt;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use crate::eventually;

/// A log pipeline listening on 127.0.0.1: keeps every line it receives.
struct Peer {
    addr: SocketAddr,
    lines: Arc<Mutex<Vec<String>>>,
    stop: tokio::sync::oneshot::Sender<()>,
    task: JoinHandle<()>,
}

impl Peer {
    async fn start(port: u16, lines: Arc<Mutex<Vec<String>>>) -> Peer {
        let listener = TcpListener::bind(("127.0.0.1", port)).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let keep = lines.clone();
        let (stop, mut stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            let mut conns = tokio::task::JoinSet::new();
            loop {
                let accepted = tokio::select! {
                    _ = &mut stopped => break,
                    a = listener.accept() => a,
                };
                let Ok((mut s, _)) = accepted else {
                    break;
                };
                let keep = keep.clone();
                conns.spawn(async move {
                    let mut partial = Vec::new();
                    let mut chunk = [0u8; 8192];
                    while let Ok(n) = s.read(&mut chunk).await {
                        if n == 0 {
                            break;
                        }
                        partial.extend_from_slice(&chunk[..n]);
                        while let Some(p) = partial.iter().position(|b| *b == b'\n') {
                            let line: Vec<u8> = partial.drain(..=p).collect();
                            keep.lock()
                                .unwrap()
                                .push(String::from_utf8_lossy(&line[..p]).into_owned());
                        }
                    }
                });
            }
            // Every connection is closed before `stop` returns.
            conns.shutdown().await;
        });
        Peer {
            addr,
            lines,
            stop,
            task,
        }
    }

    /// Stops listening and closes every connection.
    async fn stop(self) -> Arc<Mutex<Vec<String>>> {
        let _ = self.stop.send(());
        self.task.await.unwrap();
        self.lines
    }

    fn lines(&self) -> Vec<Value> {
        self.lines
            .lock()
            .unwrap()
            .iter()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }
}

async fn enable_socket(srv: &TestServer, addr: SocketAddr) -> (u16, Value) {
    srv.root(
        "PUT",
        "sys/audit/net",
        Some(json!({"type": "socket", "options": {"address": addr.to_string(), "socket_type": "tcp"}})),
    )
    .await
}

async fn metric(srv: &TestServer, series: &str) -> Option<String> {
    let r = reqwest::Client::new()
        .get(format!("{}/v1/sys/metrics?format=prometheus", srv.url()))
        .header("X-Vault-Token", &srv.root_token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let text = r.text().await.unwrap();
    text.lines()
        .find(|l| l.starts_with(series))
        .and_then(|l| l.rsplit(' ').next())
        .map(str::to_owned)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn entries_arrive_over_tcp_and_the_device_fails_closed_when_its_peer_is_down() {
    let srv = TestServer::start_with(Options {
        config: CoreConfig {
            dev: true,
            audit_deadline: Duration::from_millis(1500),
            ..CoreConfig::default()
        },
        ..Options::default()
    })
    .await;
    let peer = Peer::start(0, Arc::new(Mutex::new(Vec::new()))).await;
    let (s, b) = enable_socket(&srv, peer.addr).await;
    assert_eq!(s, 204, "{b}");
    let (s, b) = srv.root("GET", "sys/audit", None).await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["data"]["net/"]["type"], "socket", "{b}");

    let (s, b) = srv
        .root(
            "POST",
            "secret/data/agents/a1",
            Some(json!({"data": {"password": "hunter2-very-secret"}})),
        )
        .await;
    assert_eq!(s, 200, "{b}");
    eventually("entries arrive", Duration::from_secs(30), || async {
        peer.lines()
            .iter()
            .any(|l| l["type"] == "response" && l["request"]["path"] == "secret/data/agents/a1")
    })
    .await;
    let lines = peer.lines();
    assert_eq!(lines[0]["type"], "audit_device_enabled", "{lines:#?}");
    assert!(lines[0]["chain_genesis"].is_object());
    assert!(lines.iter().all(|l| l["prev_hash"].is_string()));
    let text = peer.lines.lock().unwrap().join("\n");
    assert!(!text.contains("hunter2-very-secret"));
    assert!(!text.contains(&srv.root_token));
    assert_eq!(
        metric(&srv, "leash_audit_device_up{path=\"net/\"}")
            .await
            .as_deref(),
        Some("1")
    );

    // The peer goes away: the only device cannot record, so the read fails closed.
    let port = peer.addr.port();
    let record = peer.stop().await;
    let mut refused = None;
    for _ in 0..3 {
        let (s, b) = srv.root("GET", "secret/data/agents/a1", None).await;
        if s == 500 {
            refused = Some(b);
            break;
        }
    }
    let b = refused.expect("a read succeeded with the only audit device down");
    assert!(!b.to_string().contains("hunter2-very-secret"), "{b}");
    assert!(
        b["errors"][0].as_str().unwrap_or("").contains("audit"),
        "{b}"
    );

    // The peer comes back on the same port: what was buffered arrives, in order, with
    // the chain unbroken from the first line.
    let before = record.lock().unwrap().len();
    let peer = Peer::start(port, record).await;
    eventually(
        "buffered entries arrive",
        Duration::from_secs(30),
        || async {
            peer.lines()
                .iter()
                .skip(before)
                .any(|l| l["request"]["path"] == "secret/data/agents/a1")
        },
    )
    .await;
    let (s, b) = srv.root("GET", "secret/data/agents/a1", None).await;
    assert_eq!(s, 200, "{b}");
    let file = srv.dir.join("received.log");
    std::fs::write(&file, peer.lines.lock().unwrap().join("\n") + "\n").unwrap();
    let report = leash_audit::chain::verify_files(&[file]).unwrap();
    assert_eq!(report.tamper, None, "{report:?}");
    assert_eq!(report.restarts.len(), 1);
    assert_eq!(
        metric(&srv, "leash_audit_device_up{path=\"net/\"}")
            .await
            .as_deref(),
        Some("1")
    );

    // With a file device beside it, requests go on while the peer is down.
    let log = srv.dir.join("audit.log");
    let (s, b) = srv
        .root(
            "PUT",
            "sys/audit/file",
            Some(json!({"type": "file", "options": {"file_path": log.display().to_string()}})),
        )
        .await;
    assert_eq!(s, 204, "{b}");
    drop(peer.stop().await);
    let (s, b) = srv.root("GET", "secret/data/agents/a1", None).await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["data"]["data"]["password"], "hunter2-very-secret");
    assert_eq!(
        metric(&srv, "leash_audit_device_up{path=\"net/\"}")
            .await
            .as_deref(),
        Some("0")
    );
    let failures: u64 = metric(&srv, "leash_audit_device_failures_total{path=\"net/\"}")
        .await
        .unwrap()
        .parse()
        .unwrap();
    assert!(failures >= 2, "{failures}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enabling_a_socket_device_whose_peer_is_unreachable_is_refused() {
    let srv = TestServer::start().await;
    let free = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let (s, b) = enable_socket(&srv, free).await;
    assert_eq!(s, 400, "{b}");
    let msg = b["errors"][0].as_str().unwrap();
    assert!(msg.contains("cannot connect"), "{msg}");
    let (s, b) = srv.root("GET", "sys/audit", None).await;
    assert_eq!(s, 200);
    assert!(b["data"].get("net/").is_none(), "{b}");

    let (s, b) = srv
        .root(
            "PUT",
            "sys/audit/net",
            Some(json!({"type": "socket", "options": {"address": "127.0.0.1:9", "socket_type": "udp"}})),
        )
        .await;
    assert_eq!(s, 400, "{b}");
    assert!(b["errors"][0].as_str().unwrap().contains("udp"), "{b}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_restarts_with_its_socket_peer_down_and_catches_up() {
    let srv = TestServer::start().await;
    let peer = Peer::start(0, Arc::new(Mutex::new(Vec::new()))).await;
    let port = peer.addr.port();
    let (s, b) = enable_socket(&srv, peer.addr).await;
    assert_eq!(s, 204, "{b}");
    let log = srv.dir.join("audit.log");
    let (s, b) = srv
        .root(
            "PUT",
            "sys/audit/file",
            Some(json!({"type": "file", "options": {"file_path": log.display().to_string()}})),
        )
        .await;
    assert_eq!(s, 204, "{b}");
    let record = peer.stop().await;
    let root = srv.root_token.clone();
    let (_tmp, dir, key) = srv.stop().await;

    // The peer is down at start-up: the server starts anyway (the file device records),
    // the socket device buffers.
    let srv = TestServer::start_with(Options {
        dir: Some(dir),
        key: Some(key),
        root_token: Some(root),
        ..Options::default()
    })
    .await;
    let (s, b) = srv
        .root("POST", "secret/data/x", Some(json!({"data": {"k": "v"}})))
        .await;
    assert_eq!(s, 200, "{b}");
    let peer = Peer::start(port, record).await;
    eventually(
        "the restarted device delivers",
        Duration::from_secs(30),
        || async {
            peer.lines()
                .iter()
                .any(|l| l["request"]["path"] == "secret/data/x")
        },
    )
    .await;
    let (_t, _d, _k) = srv.stop().await;
    drop(_tmp);
}
