//! The conformance suite and the PostgreSQL-only behaviour, against the PostgreSQL
//! named by `LEASH_TEST_POSTGRES_URL` (default: the local one), each test in its own
//! fresh set of tables, dropped afterwards.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use super::*;
use leash_types::{SecretBytes, SecretString};

pub(crate) fn test_url() -> Option<String> {
    Some(
        std::env::var("LEASH_TEST_POSTGRES_URL")
            .unwrap_or_else(|_| "postgresql://postgres@127.0.0.1:5432/postgres".to_owned()),
    )
}

/// Drops the test's tables when the test ends.
pub(crate) struct Scratch {
    url: String,
    table: String,
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let (url, table) = (self.url.clone(), self.table.clone());
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            let _ = rt.block_on(PgStorage::drop_schema(&url, &table));
        })
        .join();
    }
}

/// A fresh scratch table name, and the guard that drops its tables.
fn scratch(url: &str) -> (Scratch, String) {
    let table = format!(
        "t_{}",
        leash_types::random::uuid_v4().replace('-', "")[..16].to_owned()
    );
    let guard = Scratch {
        url: url.to_owned(),
        table: table.clone(),
    };
    (guard, table)
}

/// Opens a store on `table` sealed with `key` (a server of that cluster).
async fn open_with(url: &str, table: &str, key: &SecretBytes) -> Result<PgStorage, StorageError> {
    PgStorage::open(&cfg(url, table), Keyring::from_master(&copy(key))?, me()).await
}

fn cfg(url: &str, table: &str) -> PgConfig {
    PgConfig {
        connection_url: SecretString::from(url.to_owned()),
        table: table.to_owned(),
        max_parallel: 8,
        ha_enabled: true,
        tls: Vec::new(),
    }
}

fn me() -> ServerIdentity {
    ServerIdentity {
        name: "test".into(),
        address: "127.0.0.1:0".into(),
        version: "test".into(),
    }
}

fn copy(k: &SecretBytes) -> SecretBytes {
    SecretBytes::new(k.expose().to_vec())
}

/// Two stores on one fresh scratch table with the same key: two servers. The guard
/// drops the table.
async fn two_servers(url: &str) -> (Scratch, PgStorage, PgStorage) {
    let (g, table) = scratch(url);
    let key = Keyring::generate_master();
    let a = open_with(url, &table, &key).await.unwrap();
    let b = open_with(url, &table, &key).await.unwrap();
    (g, a, b)
}

/// An active lease that expired at 10.
fn due_lease(id: &str) -> StoredLease {
    StoredLease {
        id: id.to_owned(),
        token: None,
        issue_time: 0,
        expire_at: 10,
        max_expire_at: 10,
        state: LeaseState::Active,
        attempts: 0,
        next_attempt_at: 0,
        last_error: None,
        entry: Plain::new(b"{}".to_vec()),
    }
}

/// A fresh, empty store in its own tables.
async fn open_fresh() -> (Scratch, PgStorage) {
    let url = test_url().unwrap();
    let (guard, table) = scratch(&url);
    let s = open_with(&url, &table, &Keyring::generate_master())
        .await
        .unwrap();
    (guard, s)
}

/// The conformance suite, one test per check.
mod conformance {
    crate::conformance_tests!(super::open_fresh);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_key_is_refused_and_writes_nothing() {
    let Some(url) = test_url() else { return };
    let (_g, table) = scratch(&url);
    let key = Keyring::generate_master();
    {
        let s = open_with(&url, &table, &key).await.unwrap();
        s.put("kv", "x", b"kept".to_vec()).await.unwrap();
    }
    let pool = connect(&url, 1).unwrap();
    let c = pool.get().await.unwrap();
    let q = format!("SELECT COUNT(*) FROM {table}_servers");
    let servers_before: i64 = c.query_one(&q, &[]).await.unwrap().get(0);
    let e = open_with(&url, &table, &Keyring::generate_master())
        .await
        .err()
        .unwrap();
    assert!(matches!(e, StorageError::WrongKey), "{e}");
    assert_eq!(
        c.query_one(&q, &[]).await.unwrap().get::<_, i64>(0),
        servers_before,
        "a wrong key registers nothing"
    );
    let s = open_with(&url, &table, &key).await.unwrap();
    assert_eq!(s.get("kv", "x").await.unwrap().unwrap().as_slice(), b"kept");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn servers_starting_together_migrate_once_and_hear_each_other() {
    let Some(url) = test_url() else { return };
    let (_g, table) = scratch(&url);
    let key = Keyring::generate_master();
    let mut opens = Vec::new();
    for _ in 0..3 {
        let (url, table, k) = (url.clone(), table.clone(), copy(&key));
        opens.push(tokio::spawn(
            async move { open_with(&url, &table, &k).await },
        ));
    }
    let mut stores = Vec::new();
    for o in opens {
        stores.push(o.await.unwrap().unwrap());
    }
    let c = stores[0].pool().get().await.unwrap();
    let n: i64 = c
        .query_one(&format!("SELECT COUNT(*) FROM {table}_migrations"), &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 1, "each migration applied once");
    assert_eq!(stores[0].servers().await.unwrap().len(), 3);

    let mut rx = stores[1].changes().unwrap();
    stores[0]
        .put("sys/policy", "p", b"x".to_vec())
        .await
        .unwrap();
    let got = tokio::time::timeout(Duration::from_secs(2), rx.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        got,
        Change::Entry {
            ns: "sys/policy".into(),
            key: "p".into()
        }
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_due_lease_is_claimed_by_one_server() {
    let Some(url) = test_url() else { return };
    let (_g, a, b) = two_servers(&url).await;
    for i in 0..100 {
        a.lease_insert(due_lease(&format!("db/creds/r/{i:03}")))
            .await
            .unwrap();
    }
    let (x, y) = tokio::join!(a.leases_due(20, 60), b.leases_due(20, 60));
    let (x, y) = (x.unwrap(), y.unwrap());
    assert_eq!(x.len() + y.len(), 100, "every due lease handed out");
    let mut ids: Vec<_> = x.iter().chain(y.iter()).map(|l| l.id.clone()).collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 100, "no lease handed to both servers");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revocation_on_one_server_and_the_expiry_worker_of_another_never_share_a_lease() {
    let Some(url) = test_url() else { return };
    let (_g, a, b) = two_servers(&url).await;
    let mut all = Vec::new();
    for i in 0..100 {
        let id = format!("db/creds/r/{i:03}");
        a.lease_insert(due_lease(&id)).await.unwrap();
        all.push(id);
    }
    // A's worker takes due leases while B revokes all of them by request.
    let (x, y) = tokio::join!(a.leases_due(20, 60), b.leases_claim_revoking(&all, 20));
    let (x, y) = (x.unwrap(), y.unwrap());
    assert_eq!(x.len() + y.len(), 100, "every lease claimed by one of them");
    let mut ids: Vec<_> = x.iter().map(|l| l.id.clone()).chain(y.clone()).collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 100, "no lease claimed by both servers");
    // Once claimed, the other server's worker leaves them alone; the claimer may retake.
    assert!(
        a.leases_due(20, 200)
            .await
            .unwrap()
            .iter()
            .all(|l| !y.contains(&l.id))
    );
    let again = b.leases_claim_revoking(&y, 20).await.unwrap();
    assert_eq!(again.len(), y.len(), "a server may re-claim its own leases");
    let theirs: Vec<String> = x.iter().map(|l| l.id.clone()).collect();
    assert!(
        b.leases_claim_revoking(&theirs, 20)
            .await
            .unwrap()
            .is_empty(),
        "a lease another server's worker is revoking is not claimed"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_entry_cached_on_one_server_is_replaced_within_100ms_of_a_write_on_another() {
    let Some(url) = test_url() else { return };
    let (_g, a, b) = two_servers(&url).await;
    // B caches an absence and a value.
    assert!(b.get("kv", "gone-soon").await.unwrap().is_none());
    a.put("kv", "k", b"one".to_vec()).await.unwrap();
    assert_eq!(b.get("kv", "k").await.unwrap().unwrap().as_slice(), b"one");
    assert_eq!(b.get("kv", "k").await.unwrap().unwrap().as_slice(), b"one");
    // Written on A: B serves the new value, and the new entry, within 100 ms.
    a.put("kv", "k", b"two".to_vec()).await.unwrap();
    a.put("kv", "gone-soon", b"here".to_vec()).await.unwrap();
    let start = std::time::Instant::now();
    loop {
        let v = b.get("kv", "k").await.unwrap();
        let w = b.get("kv", "gone-soon").await.unwrap();
        if v.as_deref().map(Vec::as_slice) == Some(b"two".as_slice()) && w.is_some() {
            break;
        }
        assert!(
            start.elapsed() < std::time::Duration::from_millis(100),
            "B still serves the old value after 100 ms"
        );
        tokio::time::sleep(std::time::Duration::from_millis(2)).await;
    }
    // Deleted on A: gone on B; B's own writes are read back at once.
    a.delete_prefix("kv", "").await.unwrap();
    let start = std::time::Instant::now();
    while b.get("kv", "k").await.unwrap().is_some() {
        assert!(start.elapsed() < std::time::Duration::from_millis(100));
        tokio::time::sleep(std::time::Duration::from_millis(2)).await;
    }
    b.put("kv", "mine", b"1".to_vec()).await.unwrap();
    assert_eq!(b.get("kv", "mine").await.unwrap().unwrap().as_slice(), b"1");
    b.put("kv", "mine", b"2".to_vec()).await.unwrap();
    assert_eq!(b.get("kv", "mine").await.unwrap().unwrap().as_slice(), b"2");
}

/// `test_url()` with `query` added to its query string.
fn with_query(url: &str, query: &str) -> String {
    let sep = if url.contains('?') { '&' } else { '?' };
    format!("{url}{sep}{query}")
}

/// Whether the pool's connection to `url` is TLS, as the server sees it.
async fn pool_is_tls(url: &str) -> Result<bool, StorageError> {
    let target = parse_url(url, &[])?;
    let pool = connect_to(&target, 1)?;
    let c = pool.get().await.map_err(first_connect_err(&target.tls))?;
    Ok(c.query_one(
        "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
        &[],
    )
    .await
    .map_err(pg("ssl"))?
    .get(0))
}

#[tokio::test]
async fn sslmode_in_the_url_decides_the_transport() {
    let Some(url) = test_url() else { return };
    let plain = pool_is_tls(&with_query(&url, "sslmode=disable"))
        .await
        .unwrap();
    assert!(!plain, "sslmode=disable is plain TCP");
    let pool = connect(&with_query(&url, "sslmode=disable"), 1).unwrap();
    let server_tls: String = pool
        .get()
        .await
        .unwrap()
        .query_one("SHOW ssl", &[])
        .await
        .unwrap()
        .get(0);
    if server_tls == "on" {
        assert!(
            pool_is_tls(&with_query(&url, "sslmode=require"))
                .await
                .unwrap()
        );
        // prefer, libpq's default, takes TLS when offered.
        assert!(pool_is_tls(&url).await.unwrap());
    } else {
        let e = pool_is_tls(&with_query(&url, "sslmode=require"))
            .await
            .unwrap_err()
            .to_string();
        assert!(e.contains("does not accept TLS"), "{e}");
        assert!(
            !pool_is_tls(&url).await.unwrap(),
            "prefer falls back to plain"
        );
    }
}

#[tokio::test]
async fn bad_tls_settings_refuse_to_open_naming_the_key_never_the_password() {
    let url = "postgresql://leash:hunter2-secret@127.0.0.1:1/leash";
    for (query, key) in [
        ("sslmode=verify-full", "sslrootcert"),
        (
            "sslmode=verify-ca&sslrootcert=/nonexistent/ca.pem",
            "/nonexistent/ca.pem",
        ),
        ("sslmode=allow", "sslmode"),
        ("sslcrl=/x", "sslcrl"),
    ] {
        let e = open_with(
            &with_query(url, query),
            "t_tls",
            &Keyring::generate_master(),
        )
        .await
        .err()
        .unwrap();
        assert!(matches!(e, StorageError::InvalidConfig(_)), "{query}: {e}");
        let e = e.to_string();
        assert!(e.contains(key), "{query}: {e}");
        assert!(!e.contains("hunter2"), "{query}: {e}");
    }
    // A key given apart wins over the URL's.
    let mut c = cfg(&with_query(url, "sslmode=disable"), "t_tls");
    c.tls = vec![("sslmode".into(), "verify-full".into())];
    let e = PgStorage::open(
        &c,
        Keyring::from_master(&Keyring::generate_master()).unwrap(),
        me(),
    )
    .await
    .err()
    .unwrap()
    .to_string();
    assert!(e.contains("needs the CA"), "{e}");
}
