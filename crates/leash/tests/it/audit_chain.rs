//! The audit hash chain end to end: a real server writes a rotating file device across a
//! restart, and `leash audit verify` reports OK (exit 0), a tampered entry (exit 2) and
//! bad arguments (exit 1); rotation options are validated with 400s.

use std::path::Path;
use std::process::Command;

use leash_testkit::{Options, TestServer};
use serde_json::json;

fn verify(args: &[&Path]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_leash"))
        .arg("audit")
        .arg("verify")
        .args(args)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

async fn traffic(srv: &TestServer, n: usize) {
    for i in 0..n {
        let (s, b) = srv
            .root(
                "POST",
                "secret/data/chain",
                Some(json!({"data": {"n": i.to_string()}})),
            )
            .await;
        assert_eq!(s, 200, "{b}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_passes_a_rotated_restarted_log_and_catches_an_edit() {
    let srv = TestServer::start().await;
    let tmp = tempfile::tempdir().unwrap();
    let log = tmp.path().join("audit.log");
    let file_path = log.display().to_string();
    for (opt, bad) in [
        ("rotate_bytes", "lots"),
        ("rotate_interval", "daily"),
        ("rotate_compress", "maybe"),
        ("retention", "forever"),
    ] {
        let (s, b) = srv
            .root(
                "PUT",
                "sys/audit/chain",
                Some(json!({"type": "file", "options": {"file_path": file_path, opt: bad}})),
            )
            .await;
        assert_eq!(s, 400, "{opt}: {b}");
        assert!(b.to_string().contains(opt), "{b}");
    }
    let (s, b) = srv
        .root(
            "PUT",
            "sys/audit/chain",
            Some(json!({"type": "file", "options": {
                "file_path": file_path, "rotate_bytes": "4096", "retention": "0"
            }})),
        )
        .await;
    assert_eq!(s, 204, "{b}");
    traffic(&srv, 10).await;
    let (guard, dir, key) = srv.stop().await;
    let srv = TestServer::start_with(Options {
        dir: Some(dir),
        key: Some(key),
        ..Options::default()
    })
    .await;
    traffic(&srv, 10).await;
    let (code, out, err) = tokio::task::block_in_place(|| verify(&[&log]));
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.starts_with("OK: "), "{out}");
    let files = leash_audit::rotate::device_files(&log).unwrap();
    assert!(files.len() > 2, "rotated: {files:?}");

    // Edit one entry of the current file: verify names the line after it and exits 2.
    // (Each request writes two entries, so one more request leaves at least two lines
    // in the current file if a rotation just happened.)
    if std::fs::read_to_string(&log).unwrap().lines().count() < 2 {
        traffic(&srv, 1).await;
    }
    let text = std::fs::read_to_string(&log).unwrap();
    let mut lines: Vec<String> = text.lines().map(str::to_owned).collect();
    assert!(lines.len() >= 2, "{text}");
    lines[0] = lines[0].replacen("\"type\":", "\"type\" :", 1);
    std::fs::write(&log, lines.join("\n") + "\n").unwrap();
    let (code, out, _) = tokio::task::block_in_place(|| verify(&[&log]));
    assert_eq!(code, 2, "{out}");
    assert!(out.contains("TAMPERED") && out.contains("line 2"), "{out}");

    // A missing file is a usage error.
    let missing = tmp.path().join("nope.log");
    let (code, _, err) = tokio::task::block_in_place(|| verify(&[&missing]));
    assert_eq!(code, 1, "{err}");
    let (code, _, err) = tokio::task::block_in_place(|| verify(&[]));
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("at least one"), "{err}");
    drop(srv);
    drop(guard);
}
