//! Storage seen from outside: a restart on the same directory and key keeps every
//! token, policy, mount, secret, role and audit device; the wrong key never gets a
//! server started and leaves the data directory byte for byte as it was.

use std::collections::BTreeMap;
use std::path::Path;

use leash_storage::{Keyring, SqliteStorage, StorageError};
use leash_testkit::{Options, TestServer};
use leash_types::SecretBytes;
use serde_json::json;

fn snapshot(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| {
            let p = e.unwrap().path();
            (p.display().to_string(), std::fs::read(&p).unwrap())
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_keeps_everything() {
    let srv = TestServer::start().await;
    let root = srv.root_token.clone();
    let audit_dir = tempfile::tempdir().unwrap();
    let log = audit_dir.path().join("audit.log");
    let (s, _) = srv
        .root(
            "PUT",
            "sys/audit/file",
            Some(json!({"type": "file", "options": {"file_path": log.display().to_string()}})),
        )
        .await;
    assert_eq!(s, 204);
    srv.write_policy(
        "reader",
        r#"path "secret/data/*" { capabilities = ["read"] }"#,
    )
    .await;
    let (s, _) = srv
        .root(
            "POST",
            "secret/data/cfg",
            Some(json!({"data": {"model": "m1"}})),
        )
        .await;
    assert_eq!(s, 200);
    srv.root(
        "POST",
        "secret/data/cfg",
        Some(json!({"data": {"model": "m2"}})),
    )
    .await;
    let (s, _) = srv
        .root(
            "POST",
            "sys/mounts/kv1",
            Some(json!({"type": "kv", "description": "v1 here"})),
        )
        .await;
    assert_eq!(s, 204);
    let (s, _) = srv.root("PUT", "kv1/k", Some(json!({"v": "1"}))).await;
    assert_eq!(s, 204);
    let (s, _) = srv
        .root(
            "POST",
            "auth/token/roles/r",
            Some(json!({"allowed_policies": ["reader"]})),
        )
        .await;
    assert_eq!(s, 204);
    let (s, b) = srv
        .root(
            "POST",
            "auth/token/create",
            Some(json!({"policies": ["reader"], "meta": {"a": "b"}, "ttl": "2h"})),
        )
        .await;
    assert_eq!(s, 200);
    let token = b["auth"]["client_token"].as_str().unwrap().to_owned();
    let accessor = b["auth"]["accessor"].as_str().unwrap().to_owned();
    let (_, h) = srv
        .root("POST", "sys/audit-hash/file", Some(json!({"input": token})))
        .await;
    let hash_before = h["data"]["hash"].clone();

    let (guard, dir, key) = srv.stop().await;
    let srv = TestServer::start_with(Options {
        dir: Some(dir),
        key: Some(key),
        ..Options::default()
    })
    .await;

    // The old root token and the agent token both still work.
    let (s, b) = srv
        .call("GET", "auth/token/lookup-self", Some(&root), None)
        .await;
    assert_eq!(s, 200, "{b}");
    let (s, b) = srv
        .call("GET", "auth/token/lookup-self", Some(&token), None)
        .await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["data"]["accessor"], accessor.as_str());
    assert_eq!(b["data"]["meta"], json!({"a": "b"}));
    let ttl = b["data"]["ttl"].as_u64().unwrap();
    assert!(ttl > 3600 && ttl <= 7200, "{b}");
    // Policy, KV v2 with its history, KV v1 mount with its data, role.
    let (s, b) = srv.call("GET", "secret/data/cfg", Some(&token), None).await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["data"]["data"]["model"], "m2");
    assert_eq!(b["data"]["metadata"]["version"], 2);
    let (_, b) = srv
        .call("GET", "secret/data/cfg?version=1", Some(&token), None)
        .await;
    assert_eq!(b["data"]["data"]["model"], "m1");
    let (s, _) = srv.call("GET", "kv1/k", Some(&token), None).await;
    assert_eq!(s, 403, "the policy still says what it said");
    let (_, b) = srv.call("GET", "sys/mounts", Some(&root), None).await;
    assert_eq!(b["data"]["kv1/"]["description"], "v1 here");
    assert_eq!(b["data"]["secret/"]["options"]["version"], "2");
    let (s, b) = srv.call("GET", "kv1/k", Some(&root), None).await;
    assert_eq!(s, 200);
    assert_eq!(b["data"], json!({"v": "1"}));
    let (s, b) = srv
        .call("GET", "auth/token/roles/r", Some(&root), None)
        .await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["data"]["allowed_policies"], json!(["reader"]));
    // The audit device is back, with the same key, writing to the same file.
    let (_, b) = srv.call("GET", "sys/audit", Some(&root), None).await;
    assert_eq!(b["data"]["file/"]["type"], "file", "{b}");
    let (_, h) = srv
        .call(
            "POST",
            "sys/audit-hash/file",
            Some(&root),
            Some(json!({"input": token})),
        )
        .await;
    assert_eq!(h["data"]["hash"], hash_before);
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(
        text.lines()
            .last()
            .unwrap()
            .contains(hash_before.as_str().unwrap())
    );
    drop(srv);
    drop(guard);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_wrong_key_changes_nothing() {
    let srv = TestServer::start().await;
    srv.write_policy("p", r#"path "secret/*" { capabilities = ["read"] }"#)
        .await;
    let t = srv.token_with(&["p"]).await;
    let (guard, dir, key) = srv.stop().await;
    let before = snapshot(&dir);
    // A clean stop checkpoints the WAL: the database is one file again.
    let names: Vec<&str> = before
        .keys()
        .map(|k| k.rsplit('/').next().unwrap())
        .collect();
    assert_eq!(names, ["leash.db"]);

    let wrong = Keyring::generate_master();
    assert_ne!(wrong.expose(), key.as_slice());
    let keyring = Keyring::from_master(&wrong).unwrap();
    match SqliteStorage::open(&dir, keyring) {
        Ok(_) => panic!("storage opened with the wrong key"),
        Err(e) => {
            assert!(matches!(e, StorageError::WrongKey), "{e}");
            let msg = e.to_string();
            assert!(msg.contains("does not match"), "{msg}");
            assert!(!msg.contains(&hex_of(&key)), "the message holds no key");
        }
    }
    assert_same(&before, &snapshot(&dir));

    // The right key still opens it, with everything in place.
    let srv = TestServer::start_with(Options {
        dir: Some(dir),
        key: Some(key),
        ..Options::default()
    })
    .await;
    let (s, _) = srv
        .call("GET", "auth/token/lookup-self", Some(&t), None)
        .await;
    assert_eq!(s, 200);
    drop(srv);
    drop(guard);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_malformed_key_is_refused() {
    let srv = TestServer::start().await;
    let (guard, dir, _key) = srv.stop().await;
    let before = snapshot(&dir);
    for bad in [Vec::new(), vec![7u8; 5]] {
        if let Ok(k) = Keyring::from_master(&SecretBytes::new(bad)) {
            assert!(SqliteStorage::open(&dir, k).is_err());
        }
    }
    assert_same(&before, &snapshot(&dir));
    drop(guard);
}

/// Compares two snapshots, naming the files that differ (not dumping their bytes).
fn assert_same(before: &BTreeMap<String, Vec<u8>>, after: &BTreeMap<String, Vec<u8>>) {
    let names = |m: &BTreeMap<String, Vec<u8>>| m.keys().cloned().collect::<Vec<_>>();
    assert_eq!(names(before), names(after), "files were added or removed");
    for (name, bytes) in before {
        assert!(
            after[name] == *bytes,
            "{name} changed ({} -> {} bytes)",
            bytes.len(),
            after[name].len()
        );
    }
}

fn hex_of(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_audit_device_that_cannot_reopen_does_not_fail_open() {
    let srv = TestServer::start().await;
    let audit_dir = tempfile::tempdir().unwrap();
    let sub = audit_dir.path().join("logs");
    std::fs::create_dir(&sub).unwrap();
    let log = sub.join("audit.log");
    let (s, _) = srv
        .root(
            "PUT",
            "sys/audit/file",
            Some(json!({"type": "file", "options": {"file_path": log.display().to_string()}})),
        )
        .await;
    assert_eq!(s, 204);
    let (s, _) = srv
        .root("POST", "secret/data/s", Some(json!({"data": {"k": "v"}})))
        .await;
    assert_eq!(s, 200);
    let root = srv.root_token.clone();
    let (guard, dir, key) = srv.stop().await;
    // The log's directory is gone while the server is down.
    std::fs::remove_dir_all(&sub).unwrap();

    let core = leash_core::Core::open(
        std::sync::Arc::new(
            SqliteStorage::open(
                &dir,
                Keyring::from_master(&SecretBytes::new(key.clone())).unwrap(),
            )
            .unwrap(),
        ),
        std::sync::Arc::new(leash_types::SystemClock),
        leash_core::CoreConfig::default(),
        None,
    )
    .await;
    match core {
        // Refusing to start (as Vault does) is fail-closed.
        Err(e) => assert!(e.to_string().contains("audit") || !e.to_string().is_empty()),
        Ok(opened) => {
            // Starting is acceptable only if requests then fail closed.
            let mut req = leash_core::Request::new(leash_types::Operation::Read, "secret/data/s");
            req.token = Some(leash_types::SecretString::from(root.clone()));
            let r = opened.core.handle(req).await;
            assert!(
                matches!(r, Err(leash_core::CoreError::AuditFailed)),
                "the configured audit device is missing, yet the request was served unaudited"
            );
        }
    }
    drop(guard);
}

/// A first start that crashed after writing the mount table but before recording that
/// storage is initialised must not add the built-in mounts twice on the next start
/// (regression: the table then held `sys/` and `token/` twice).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_interrupted_first_start_does_not_duplicate_builtin_mounts() {
    use leash_storage::Storage;
    let srv = TestServer::start().await;
    let (guard, dir, key) = srv.stop().await;
    {
        // Simulate the crash: forget that initialisation finished.
        let storage = SqliteStorage::open(
            &dir,
            Keyring::from_master(&SecretBytes::new(key.clone())).unwrap(),
        )
        .unwrap();
        assert!(storage.delete("sys/core", "initialized").await.unwrap());
    }
    let srv = TestServer::start_with(Options {
        dir: Some(dir.clone()),
        key: Some(key.clone()),
        ..Options::default()
    })
    .await;
    let (s, b) = srv.root("GET", "sys/mounts", None).await;
    assert_eq!(s, 200, "{b}");
    let (_g, dir, key) = srv.stop().await;
    let storage =
        SqliteStorage::open(&dir, Keyring::from_master(&SecretBytes::new(key)).unwrap()).unwrap();
    let raw = storage.get("sys/core", "mounts").await.unwrap().unwrap();
    let table: serde_json::Value = serde_json::from_slice(&raw).unwrap();
    let paths: Vec<String> = table["mounts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            format!(
                "{}:{}",
                m["table"].as_str().unwrap(),
                m["path"].as_str().unwrap()
            )
        })
        .collect();
    let mut unique = paths.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(paths.len(), unique.len(), "duplicate mounts: {paths:?}");
    drop(guard);
}
