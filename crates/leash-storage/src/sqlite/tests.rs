use super::rows::{
    MARK_TOKEN_LEASES_REVOKING, lease_location, leases_due_sql, leases_failing_sql,
    prefix_upper_bound,
};
use super::*;
use crate::barrier::Keyring;
use crate::{LeaseState, Plain, Storage, StoredLease, StoredToken};
use leash_types::SecretBytes;

fn master() -> SecretBytes {
    Keyring::generate_master()
}

fn copy(k: &SecretBytes) -> SecretBytes {
    SecretBytes::new(k.expose().to_vec())
}

/// A fresh, empty store in its own temporary directory.
async fn open_fresh() -> (tempfile::TempDir, SqliteStorage) {
    let dir = tempfile::tempdir().unwrap();
    let s = SqliteStorage::open(dir.path(), Keyring::from_master(&master()).unwrap()).unwrap();
    (dir, s)
}

/// The conformance suite, one test per check.
mod conformance {
    crate::conformance_tests!(super::open_fresh);
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
    // Made at run time: no token-shaped literal is committed.
    let value = leash_types::TokenValue::generate(leash_types::TokenKind::Service);
    let tok = value.expose();
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
    s.lease_insert(StoredLease {
        id: "database/creds/ro/lease1".into(),
        token: None,
        issue_time: 1,
        expire_at: 2,
        max_expire_at: 3,
        state: LeaseState::Pending,
        attempts: 0,
        next_attempt_at: 0,
        last_error: None,
        entry: Plain::new(b"{\"username\":\"very-secret-username\"}".to_vec()),
    })
    .await
    .unwrap();
    assert!(
        s.lease_update(
            "database/creds/ro/lease1",
            LeaseState::Active,
            5,
            Some(b"{\"password\":\"very-secret-password\"}".to_vec()),
        )
        .await
        .unwrap()
    );
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

#[test]
fn lease_entries_are_bound_to_their_id() {
    let k = Keyring::from_master(&master()).unwrap();
    let sealed = k.seal(&lease_location("db/a"), b"x").unwrap();
    assert!(k.open(&lease_location("db/b"), &sealed).is_err());
    assert_eq!(
        k.open(&lease_location("db/a"), &sealed).unwrap().as_slice(),
        b"x"
    );
}

/// Startup does not read leases: with 100 000 stored, `open` succeeds even when every
/// lease row is unreadable (a load-all would have failed), and the leases are only
/// looked at when asked for. No timing assertion: the guarantee is that `open` runs
/// no query on the `leases` table (beyond `CREATE … IF NOT EXISTS`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_does_not_read_leases() {
    const N: usize = 100_000;
    let dir = tempfile::tempdir().unwrap();
    let key = master();
    {
        let s = Arc::new(
            SqliteStorage::open(dir.path(), Keyring::from_master(&copy(&key)).unwrap()).unwrap(),
        );
        for batch in 0..N / 1000 {
            let mut set = tokio::task::JoinSet::new();
            for i in batch * 1000..(batch + 1) * 1000 {
                let s = Arc::clone(&s);
                set.spawn(async move {
                    s.lease_insert(StoredLease {
                        id: format!("database/creds/ro/{i:06}"),
                        token: None,
                        issue_time: 0,
                        expire_at: 1_000 + i64::try_from(i).unwrap(),
                        max_expire_at: 1_000_000,
                        state: LeaseState::Active,
                        attempts: 0,
                        next_attempt_at: 0,
                        last_error: None,
                        entry: Plain::new(b"{}".to_vec()),
                    })
                    .await
                });
            }
            while let Some(r) = set.join_next().await {
                r.unwrap().unwrap();
            }
        }
        assert_eq!(s.lease_count().await.unwrap(), N as u64);
    }
    // Make every lease row unreadable behind the storage's back.
    {
        let c = Connection::open(dir.path().join(DB_FILE)).unwrap();
        let n = c
            .execute("UPDATE leases SET state = 99, entry = x'00'", [])
            .unwrap();
        assert_eq!(n, N);
    }
    let s = SqliteStorage::open(dir.path(), Keyring::from_master(&key).unwrap()).unwrap();
    assert_eq!(s.lease_count().await.unwrap(), N as u64);
    assert_eq!(
        s.lease_ids_with_prefix("database/creds/ro/00000")
            .await
            .unwrap()
            .len(),
        10
    );
    let e = s.lease_get("database/creds/ro/000001").await.unwrap_err();
    assert!(matches!(e, StorageError::Corrupt(_)), "{e}");
}

fn query_plan(c: &Connection, sql: &str, p: impl rusqlite::Params) -> String {
    let plan: Vec<String> = c
        .prepare(&format!("EXPLAIN QUERY PLAN {sql}"))
        .unwrap()
        .query_map(p, |r| r.get::<_, String>(3))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    plan.join("\n")
}

/// The lease queries walk their indexes, never the whole table.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lease_queries_use_their_indexes() {
    // The SQL spells the revoking state as 2 (partial indexes need a literal).
    assert_eq!(LeaseState::Revoking.code(), 2);
    for st in [
        LeaseState::Pending,
        LeaseState::Active,
        LeaseState::Revoking,
    ] {
        assert_eq!(LeaseState::from_code(st.code()), Some(st));
    }
    let dir = tempfile::tempdir().unwrap();
    let s = SqliteStorage::open(dir.path(), Keyring::from_master(&master()).unwrap()).unwrap();
    assert!(s.leases_due(0, 10).await.unwrap().is_empty());
    let c = Connection::open(dir.path().join(DB_FILE)).unwrap();

    let plan = query_plan(&c, &leases_due_sql(), params![0, 10]);
    assert!(
        plan.contains("SEARCH leases USING INDEX leases_expire"),
        "{plan}"
    );
    assert!(
        plan.contains("SEARCH leases USING INDEX leases_revoking"),
        "{plan}"
    );
    assert!(!plan.contains("SCAN leases"), "{plan}");

    let plan = query_plan(&c, MARK_TOKEN_LEASES_REVOKING, params![vec![0u8; 32], 0]);
    assert!(plan.contains("USING INDEX leases_token"), "{plan}");

    let plan = query_plan(&c, &leases_failing_sql(), params![10]);
    assert!(plan.contains("USING INDEX leases_failing"), "{plan}");
}
