//! `pg::connect` (what the PostgreSQL storage backend calls) against the machine's
//! PostgreSQL (`LEASH_TEST_POSTGRES_URL`; read-only queries about the test's own
//! session). Skipped when the variable is not set, except under CI. The TLS-only
//! private cluster with certificates and wrong CAs is exercised through the database
//! engine in `crates/leash/tests/it/db_tls.rs`.

#![allow(clippy::unwrap_used)]

use leash_dbtls::pg;

fn url() -> Option<String> {
    match std::env::var("LEASH_TEST_POSTGRES_URL") {
        Ok(u) => Some(u),
        Err(_) => {
            assert!(
                std::env::var_os("CI").is_none(),
                "LEASH_TEST_POSTGRES_URL is needed under CI"
            );
            eprintln!("skipped: LEASH_TEST_POSTGRES_URL is not set");
            None
        }
    }
}

fn with(url: &str, query: &str) -> String {
    let sep = if url.contains('?') { '&' } else { '?' };
    format!("{url}{sep}{query}")
}

async fn own_session_is_tls(url: &str, overrides: &[(&str, &str)]) -> bool {
    let (client, conn) = pg::connect(url, overrides).await.unwrap();
    let task = tokio::spawn(conn);
    let row = client
        .query_one(
            "SELECT coalesce((SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()), false)",
            &[],
        )
        .await
        .unwrap();
    drop(client);
    let _ = task.await;
    row.get(0)
}

#[tokio::test]
async fn sslmode_decides_whether_the_session_is_encrypted() {
    let Some(url) = url() else { return };
    let (client, conn) = pg::connect(&url, &[]).await.unwrap();
    let task = tokio::spawn(conn);
    let server_ssl: String = client.query_one("SHOW ssl", &[]).await.unwrap().get(0);
    drop(client);
    let _ = task.await;
    assert!(!own_session_is_tls(&with(&url, "sslmode=disable"), &[]).await);
    assert!(!own_session_is_tls(&url, &[("sslmode", "disable")]).await);
    if server_ssl == "on" {
        assert!(own_session_is_tls(&with(&url, "sslmode=require"), &[]).await);
        // A field-style override wins over the URL.
        assert!(
            own_session_is_tls(&with(&url, "sslmode=disable"), &[("sslmode", "require")]).await
        );
        // prefer (the default) takes TLS when offered.
        assert!(own_session_is_tls(&url, &[]).await);
    } else {
        let e = pg::connect(&with(&url, "sslmode=require"), &[])
            .await
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("does not accept TLS"), "{e}");
    }
}
