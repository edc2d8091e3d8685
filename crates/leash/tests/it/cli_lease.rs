//! `leash read database/creds/…` and `leash lease …` against a real server and the real
//! PostgreSQL: the CLI path an operator (or a shell-scripted agent) takes.

use std::process::Command;

use leash_testkit::TestServer;
use serde_json::{Value, json};

use crate::database::PgScratch;

fn leash(srv: &TestServer, args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_leash"))
        .args(args)
        .env("LEASH_ADDR", srv.url())
        .env("LEASH_TOKEN", &srv.root_token)
        .env_remove("VAULT_ADDR")
        .env_remove("VAULT_TOKEN")
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_issues_looks_up_renews_and_revokes() {
    let srv = TestServer::start().await;
    let pg = PgScratch::new().await;
    pg.setup(
        &srv,
        "database",
        json!({"default_ttl": "10m", "max_ttl": "1h"}),
    )
    .await;
    let creds_path = format!("database/creds/{}", pg.role);
    let srv_ref = &srv;
    let (code, out, err) =
        tokio::task::block_in_place(|| leash(srv_ref, &["read", "-format=json", &creds_path]));
    assert_eq!(code, 0, "{err}");
    let b: Value = serde_json::from_str(&out).unwrap();
    let lease = b["lease_id"].as_str().unwrap().to_owned();
    let user = b["data"]["username"].as_str().unwrap().to_owned();
    assert!(pg.role_exists(&user).await);

    let (code, out, err) = tokio::task::block_in_place(|| {
        leash(srv_ref, &["lease", "lookup", "-field=state", &lease])
    });
    assert_eq!((code, out.trim()), (0, "active"), "{err}");
    let (code, out, err) = tokio::task::block_in_place(|| {
        leash(
            srv_ref,
            &["lease", "renew", "-increment=5m", "-format=json", &lease],
        )
    });
    assert_eq!(code, 0, "{err}");
    let b: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(b["lease_duration"], 300);
    let (code, out, err) =
        tokio::task::block_in_place(|| leash(srv_ref, &["lease", "revoke", &lease]));
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("Success"), "{out}");
    assert!(!pg.role_exists(&user).await);
    let (code, _, err) =
        tokio::task::block_in_place(|| leash(srv_ref, &["lease", "lookup", &lease]));
    assert_eq!(code, 2);
    assert!(err.contains("invalid lease"), "{err}");
    let (code, out, err) = tokio::task::block_in_place(|| leash(srv_ref, &["lease", "failing"]));
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("No lease is failing"), "{out}");
    pg.cleanup().await;
}
