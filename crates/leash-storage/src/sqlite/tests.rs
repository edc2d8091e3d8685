use super::*;
use crate::barrier::Keyring;
use leash_types::SecretBytes;

fn master() -> SecretBytes {
    Keyring::generate_master()
}

fn copy(k: &SecretBytes) -> SecretBytes {
    SecretBytes::new(k.expose().to_vec())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance_suite() {
    let dir = tempfile::tempdir().unwrap();
    let s = SqliteStorage::open(dir.path(), Keyring::from_master(&master()).unwrap()).unwrap();
    crate::conformance::run_all(&s).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_keeps_data_and_wrong_key_is_refused_without_changes() {
    let dir = tempfile::tempdir().unwrap();
    let key = master();
    {
        let s =
            SqliteStorage::open(dir.path(), Keyring::from_master(&copy(&key)).unwrap()).unwrap();
        s.put("kv", "x", b"persisted".to_vec()).await.unwrap();
    }
    let db = dir.path().join(DB_FILE);
    let before = std::fs::read(&db).unwrap();
    let e = SqliteStorage::open(dir.path(), Keyring::from_master(&master()).unwrap())
        .err()
        .unwrap();
    assert!(matches!(e, StorageError::WrongKey));
    assert!(e.to_string().contains("does not match"), "{e}");
    assert_eq!(
        std::fs::read(&db).unwrap(),
        before,
        "a wrong key changes nothing"
    );

    let s = SqliteStorage::open(dir.path(), Keyring::from_master(&key).unwrap()).unwrap();
    assert_eq!(
        s.get("kv", "x").await.unwrap().unwrap().as_slice(),
        b"persisted"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn values_and_tokens_are_not_stored_in_clear() {
    let dir = tempfile::tempdir().unwrap();
    let s = SqliteStorage::open(dir.path(), Keyring::from_master(&master()).unwrap()).unwrap();
    s.put("kv", "k", b"very-secret-value-123".to_vec())
        .await
        .unwrap();
    let tok = "lsh.thisIsTheTokenValueItself000000000";
    s.token_insert(StoredToken {
        hash: s.keyring().token_hash(tok),
        accessor_hash: s.keyring().token_hash("acc"),
        parent: None,
        expire_at: None,
        uses_left: None,
        entry: Plain::new(b"{\"display_name\":\"very-secret-meta\"}".to_vec()),
    })
    .await
    .unwrap();
    drop(s);
    let mut raw = std::fs::read(dir.path().join(DB_FILE)).unwrap();
    if let Ok(wal) = std::fs::read(dir.path().join(format!("{DB_FILE}-wal"))) {
        raw.extend(wal);
    }
    for needle in [&b"very-secret"[..], tok.as_bytes()] {
        assert!(
            !raw.windows(needle.len()).any(|w| w == needle),
            "found {:?} in clear",
            String::from_utf8_lossy(needle)
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_writes_all_land() {
    let dir = tempfile::tempdir().unwrap();
    let s = Arc::new(
        SqliteStorage::open(dir.path(), Keyring::from_master(&master()).unwrap()).unwrap(),
    );
    let mut set = tokio::task::JoinSet::new();
    for i in 0..400 {
        let s = Arc::clone(&s);
        set.spawn(async move { s.put("kv", &format!("k{i:04}"), vec![1]).await });
    }
    while let Some(r) = set.join_next().await {
        r.unwrap().unwrap();
    }
    assert_eq!(s.list("kv", "k").await.unwrap().len(), 400);
}

#[test]
fn prefix_bound() {
    assert_eq!(prefix_upper_bound("a/").as_deref(), Some("a0"));
    assert_eq!(prefix_upper_bound("").as_deref(), None);
}
