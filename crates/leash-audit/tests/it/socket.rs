//! The socket device against a real TCP receiver in the test: entries arrive one per
//! line with the hash chain; while the peer is down entries are buffered (and, as the
//! only device, fail closed), and are delivered in order when it is back.

use std::io::{ErrorKind, Read};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use leash_audit::{AuditError, Broker, chain};
use serde_json::Value;

use crate::{device, entry, file_device, json_lines, key};

/// A log pipeline: accepts connections on 127.0.0.1 and keeps every line received.
pub(crate) struct Peer {
    pub(crate) port: u16,
    lines: Arc<Mutex<Vec<String>>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Peer {
    /// Listens on `port` (0: any free port).
    pub(crate) fn start(port: u16) -> Peer {
        Peer::start_keeping(port, Arc::new(Mutex::new(Vec::new())))
    }

    /// Listens on `port`, appending to `lines` (to continue a stopped peer's record).
    pub(crate) fn start_keeping(port: u16, lines: Arc<Mutex<Vec<String>>>) -> Peer {
        let listener = TcpListener::bind(("127.0.0.1", port)).unwrap();
        listener.set_nonblocking(true).unwrap();
        let port = listener.local_addr().unwrap().port();
        let stop = Arc::new(AtomicBool::new(false));
        let (t_lines, t_stop) = (lines.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            let mut conns: Vec<(TcpStream, Vec<u8>)> = Vec::new();
            let mut chunk = [0u8; 8192];
            while !t_stop.load(Ordering::SeqCst) {
                if let Ok((s, _)) = listener.accept() {
                    s.set_nonblocking(true).unwrap();
                    conns.push((s, Vec::new()));
                }
                for (s, partial) in &mut conns {
                    loop {
                        match s.read(&mut chunk) {
                            Ok(0) => break,
                            Ok(n) => partial.extend_from_slice(&chunk[..n]),
                            Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                            Err(_) => break,
                        }
                    }
                    while let Some(p) = partial.iter().position(|b| *b == b'\n') {
                        let line: Vec<u8> = partial.drain(..=p).collect();
                        t_lines
                            .lock()
                            .unwrap()
                            .push(String::from_utf8(line[..line.len() - 1].to_vec()).unwrap());
                    }
                }
                std::thread::sleep(Duration::from_millis(5));
            }
            // Dropping the connections and the listener: the peer is down.
        });
        Peer {
            port,
            lines,
            stop,
            thread: Some(thread),
        }
    }

    pub(crate) fn address(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Closes every connection and stops listening; returns the lines received.
    pub(crate) fn stop(mut self) -> Arc<Mutex<Vec<String>>> {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            t.join().unwrap();
        }
        self.lines.clone()
    }

    pub(crate) fn lines(&self) -> Vec<String> {
        self.lines.lock().unwrap().clone()
    }

    /// Waits (generously) until at least `n` lines arrived.
    pub(crate) fn wait_for(&self, n: usize) -> Vec<String> {
        let until = Instant::now() + Duration::from_secs(30);
        loop {
            let lines = self.lines();
            if lines.len() >= n {
                return lines;
            }
            assert!(
                Instant::now() < until,
                "only {} of {n} lines arrived",
                lines.len()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn socket_device(path: &str, address: &str) -> leash_audit::DeviceConfig {
    let mut d = device(path, &[("address", address)]);
    d.kind = "socket".to_owned();
    d
}

/// Writes `lines` to a file and verifies their chain.
fn verify(lines: &[String], dir: &Path) -> chain::Report {
    let file = dir.join("received.log");
    std::fs::write(&file, lines.join("\n") + "\n").unwrap();
    chain::verify_files(&[file]).unwrap()
}

fn tagged(n: u64) -> impl Fn(&leash_audit::Hasher, bool) -> Value + Send + Sync {
    move |_: &leash_audit::Hasher, _: bool| serde_json::json!({ "type": "request", "n": n })
}

fn numbers(lines: &[String]) -> Vec<u64> {
    lines
        .iter()
        .map(|l| {
            serde_json::from_str::<Value>(l).unwrap()["n"]
                .as_u64()
                .unwrap()
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn entries_arrive_one_per_line_hashed_and_chained() {
    let dir = tempfile::tempdir().unwrap();
    let peer = Peer::start(0);
    let b = Broker::new(Duration::from_secs(10));
    b.enable(socket_device("net", &peer.address()), key(), None)
        .await
        .unwrap();
    for _ in 0..3 {
        b.log(&entry("hvs.secret")).await.unwrap();
    }
    let lines = peer.wait_for(3);
    assert_eq!(lines.len(), 3);
    let first: Value = serde_json::from_str(&lines[0]).unwrap();
    assert_eq!(
        first["auth"]["client_token"],
        b.hash("net/", "hvs.secret").unwrap()
    );
    assert!(first.get("chain_genesis").is_some(), "{first}");
    assert!(!lines.concat().contains("hvs.secret"));
    let report = verify(&lines, dir.path());
    assert_eq!((report.lines, report.tamper), (3, None));
    let s = &b.stats()[0];
    assert_eq!((s.entries, s.failures, s.up), (3, 0, true));
    assert!(b.disable("net").await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enabling_with_an_unreachable_peer_is_refused() {
    // A port that was free a moment ago and has no listener now.
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let b = Broker::new(Duration::from_secs(5));
    let probe = tagged(0);
    let err = b
        .enable(
            socket_device("net", &format!("127.0.0.1:{port}")),
            key(),
            Some(&probe),
        )
        .await
        .unwrap_err();
    match &err {
        AuditError::Open { path, reason } => {
            assert!(path.contains(&port.to_string()), "{path}");
            assert!(reason.contains("cannot connect"), "{reason}");
        }
        other => panic!("expected Open, got {other:?}"),
    }
    assert!(b.list().is_empty());

    // Bad options are refused before any connection is tried.
    let mut bad = socket_device("net", "nowhere");
    bad.options.insert("socket_type".into(), "udp".into());
    assert!(matches!(
        b.enable(bad, key(), Some(&probe)).await,
        Err(AuditError::InvalidConfig(_))
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peer_down_then_up_gets_the_buffered_entries_in_order_with_the_chain_intact() {
    let dir = tempfile::tempdir().unwrap();
    let peer = Peer::start(0);
    let port = peer.port;
    // Short deadline: while the peer is down, each entry fails closed quickly.
    let b = Broker::new(Duration::from_millis(500));
    b.enable(socket_device("net", &peer.address()), key(), None)
        .await
        .unwrap();
    for n in 0..2 {
        b.log(&tagged(n)).await.unwrap();
    }
    peer.wait_for(2);
    let record = peer.stop();

    // The only device, its peer down: every entry fails closed, and is kept.
    let until = Instant::now() + Duration::from_secs(30);
    for n in 2..5 {
        let r = b.log(&tagged(n)).await;
        assert!(
            matches!(r, Err(AuditError::AllDevicesFailed { attempted: 1 })),
            "entry {n}: {r:?}"
        );
    }
    while b.stats()[0].up {
        assert!(
            Instant::now() < until,
            "the device never noticed its peer left"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(b.stats()[0].failures >= 3);

    // The peer comes back on the same port: the three buffered entries arrive first, in
    // order, then new ones; the chain runs unbroken across both connections.
    let peer = Peer::start_keeping(port, record);
    let lines = peer.wait_for(5);
    b.log(&tagged(5)).await.unwrap();
    let lines = if lines.len() < 6 {
        peer.wait_for(6)
    } else {
        lines
    };
    assert_eq!(numbers(&lines), vec![0, 1, 2, 3, 4, 5]);
    let report = verify(&lines, dir.path());
    assert_eq!(report.tamper, None, "{report:?}");
    assert_eq!(report.restarts.len(), 1, "one genesis, at the start");
    assert!(b.stats()[0].up);
    assert!(b.disable("net").await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_device_beside_a_down_socket_keeps_requests_going_and_the_buffer_is_bounded() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("audit.log");
    let peer = Peer::start(0);
    let b = Broker::new(Duration::from_millis(300));
    let mut net = socket_device("net", &peer.address());
    net.options.insert("buffer_size".into(), "3".into());
    b.enable(net, key(), None).await.unwrap();
    b.enable(file_device("file", &file), key(), None)
        .await
        .unwrap();
    b.log(&tagged(0)).await.unwrap();
    peer.wait_for(1);
    drop(peer.stop());

    for n in 1..=6 {
        b.log(&tagged(n)).await.unwrap();
    }
    assert_eq!(
        json_lines(&file).len(),
        7,
        "the file device took every entry"
    );
    let net = b.stats().into_iter().find(|s| s.path == "net/").unwrap();
    assert!(!net.up);
    // Past the buffer of three, entries failed at once on the socket device.
    assert!(net.failures >= 6, "{net:?}");
    assert!(b.disable("net").await);
}
