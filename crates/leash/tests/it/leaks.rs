//! Leak response (`sys/leaks/scan`, `leash scan`) and the token lifecycle events of the
//! expiry worker: a leaked token or database credential is revoked at once with
//! `agent.credential.leaked` then `revoked` (reason `leak`); a token that expires gets
//! `expired`, and children revoked with a parent get `revoked` (reason `parent revoked`).

use std::path::{Path, PathBuf};
use std::time::Duration;

use leash_testkit::TestServer;
use serde_json::{Value, json};

use crate::database::PgScratch;
use crate::{create_token, eventually};

async fn enable_file_audit(srv: &TestServer) -> PathBuf {
    let log = srv.dir.join("audit.log");
    let (s, b) = srv
        .root(
            "PUT",
            "sys/audit/file",
            Some(json!({"type": "file", "options": {"file_path": log.display().to_string()}})),
        )
        .await;
    assert_eq!(s, 204, "{b}");
    log
}

fn events(log: &Path) -> Vec<Value> {
    std::fs::read_to_string(log)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .filter(|v| v["type"] == "lifecycle")
        .collect()
}

async fn prometheus(srv: &TestServer) -> String {
    let r = reqwest::Client::new()
        .get(format!("{}/v1/sys/metrics?format=prometheus", srv.url()))
        .header("X-Vault-Token", &srv.root_token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    r.text().await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leaked_token_is_found_revoked_and_audited_without_echoing_it() {
    let srv = TestServer::start().await;
    let log = enable_file_audit(&srv).await;
    srv.write_policy(
        "agent",
        r#"path "secret/data/*" { capabilities = ["read"] }
path "auth/token/create" { capabilities = ["update"] }"#,
    )
    .await;
    let auth = create_token(&srv, json!({"policies": ["agent"], "ttl": "1h"})).await;
    let leaked = auth["client_token"].as_str().unwrap().to_owned();
    let accessor = auth["accessor"].as_str().unwrap().to_owned();
    // A child of the leaked token goes with it.
    let (s, b) = srv
        .call(
            "POST",
            "auth/token/create",
            Some(&leaked),
            Some(json!({"policies": ["agent"]})),
        )
        .await;
    assert_eq!(s, 200, "{b}");
    let child = b["auth"]["client_token"].as_str().unwrap().to_owned();

    // A token that scans without sudo on sys/leaks/scan is refused.
    let (s, _) = srv
        .call(
            "PUT",
            "sys/leaks/scan",
            Some(&leaked),
            Some(json!({"text": "nothing"})),
        )
        .await;
    assert_eq!(s, 403);

    let text = format!("2026-11-29 agent log: export VAULT_TOKEN={leaked}\nthen retried");
    let (s, b) = srv
        .root("PUT", "sys/leaks/scan", Some(json!({"text": text})))
        .await;
    assert_eq!(s, 200, "{b}");
    let found = b["data"]["found"].as_array().unwrap();
    assert_eq!(found.len(), 1, "{b}");
    assert_eq!(found[0]["kind"], "token");
    assert_eq!(found[0]["revoked"], true);
    let hmac = srv
        .root(
            "PUT",
            "sys/audit-hash/file",
            Some(json!({"input": accessor})),
        )
        .await
        .1["data"]["hash"]
        .clone();
    assert_eq!(
        found[0]["accessor"], hmac,
        "the accessor as the audit log has it"
    );
    assert!(
        !b.to_string().contains(&leaked),
        "the answer echoes the token"
    );
    assert!(
        !b.to_string().contains(&accessor),
        "the answer shows the accessor"
    );

    // The token and its child are dead.
    for t in [&leaked, &child] {
        let (s, _) = srv
            .call("GET", "auth/token/lookup-self", Some(t), None)
            .await;
        assert_eq!(s, 403);
    }
    // Scanning again finds nothing live.
    let (s, b) = srv
        .root("PUT", "sys/leaks/scan", Some(json!({"text": text})))
        .await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["data"]["found"], json!([]));
    assert_eq!(b["data"]["not_live"]["tokens"], 1);

    let evs = events(&log);
    let kinds: Vec<(String, Option<String>)> = evs
        .iter()
        .filter(|e| e["accessor"] == hmac || e["event"] == "agent.credential.revoked")
        .filter(|e| e["action_context"]["path"] == "sys/leaks/scan")
        .map(|e| {
            (
                e["event"].as_str().unwrap().to_owned(),
                e["reason"].as_str().map(str::to_owned),
            )
        })
        .collect();
    assert_eq!(
        kinds,
        vec![
            (
                "agent.credential.leaked".to_owned(),
                Some("leak".to_owned())
            ),
            (
                "agent.credential.revoked".to_owned(),
                Some("leak".to_owned())
            ),
            (
                "agent.credential.revoked".to_owned(),
                Some("parent revoked".to_owned())
            ),
        ],
        "{evs:#?}"
    );
    let audit = std::fs::read_to_string(&log).unwrap();
    assert!(!audit.contains(&leaked));
    assert!(
        prometheus(&srv)
            .await
            .lines()
            .any(|l| l == "leash_leaks_detected_total{kind=\"token\"} 1")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leaked_database_username_revokes_its_lease_and_the_cli_exits_1() {
    let srv = TestServer::start().await;
    let log = enable_file_audit(&srv).await;
    let pg = PgScratch::new().await;
    pg.setup(&srv, "database", json!({})).await;
    let (s, b) = srv
        .root("GET", &format!("database/creds/{}", pg.role), None)
        .await;
    assert_eq!(s, 200, "{b}");
    let lease_id = b["lease_id"].as_str().unwrap().to_owned();
    let user = b["data"]["username"].as_str().unwrap().to_owned();
    let password = b["data"]["password"].as_str().unwrap().to_owned();
    assert!(pg.role_exists(&user).await);

    // `leash scan FILE` against the server: exit 1, the lease id shown, no secret.
    let file = srv.dir.join("transcript.txt");
    std::fs::write(
        &file,
        format!("psql: connecting as {user} with password {password}\n"),
    )
    .unwrap();
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_leash"))
        .args(["scan", file.to_str().unwrap(), "--address", &srv.url()])
        .env("LEASH_TOKEN", &srv.root_token)
        .env_remove("VAULT_TOKEN")
        .env_remove("VAULT_ADDR")
        .env("HOME", &srv.dir)
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stdout}\n{stderr}");
    assert!(stdout.contains(&lease_id), "{stdout}");
    assert!(
        stdout.contains("database") && stdout.contains("yes"),
        "{stdout}"
    );
    assert!(!stdout.contains(&password) && !stderr.contains(&password));

    // The role is gone from PostgreSQL and the lease from leash.
    eventually(
        "the leaked role is dropped",
        Duration::from_secs(30),
        || async { !pg.role_exists(&user).await },
    )
    .await;
    let (s, _) = srv
        .root(
            "PUT",
            "sys/leases/lookup",
            Some(json!({"lease_id": lease_id})),
        )
        .await;
    assert_eq!(s, 400);
    let evs: Vec<Value> = events(&log)
        .into_iter()
        .filter(|e| e["lease_id"] == lease_id.as_str())
        .collect();
    let kinds: Vec<&str> = evs.iter().map(|e| e["event"].as_str().unwrap()).collect();
    // (The lease worker may pick a lease marked for revocation up at the same moment
    // and log a second `revoked`; the leak's own comes first.)
    assert_eq!(
        kinds[..3],
        [
            "agent.credential.issued",
            "agent.credential.leaked",
            "agent.credential.revoked"
        ],
        "{evs:#?}"
    );
    assert!(
        evs.iter()
            .any(|e| e["event"] == "agent.credential.revoked" && e["reason"] == "leak"),
        "{evs:#?}"
    );
    // Nothing live the second time: exit 0.
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_leash"))
        .args(["scan", "-", "--address", &srv.url()])
        .env("LEASH_TOKEN", &srv.root_token)
        .env_remove("VAULT_TOKEN")
        .env_remove("VAULT_ADDR")
        .env("HOME", &srv.dir)
        .stdin(std::process::Stdio::from(
            std::fs::File::open(&file).unwrap(),
        ))
        .output()
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert!(
        prometheus(&srv)
            .await
            .lines()
            .any(|l| l == "leash_leaks_detected_total{kind=\"database\"} 1")
    );
    pg.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_tokens_get_expired_and_their_children_parent_revoked() {
    let srv = TestServer::start().await;
    let log = enable_file_audit(&srv).await;
    srv.write_policy(
        "parent",
        r#"path "auth/token/create" { capabilities = ["update"] }"#,
    )
    .await;
    let parent = create_token(&srv, json!({"policies": ["parent"], "ttl": "2s"})).await;
    let parent_token = parent["client_token"].as_str().unwrap().to_owned();
    let (s, b) = srv
        .call(
            "POST",
            "auth/token/create",
            Some(&parent_token),
            Some(json!({"ttl": "1h"})),
        )
        .await;
    assert_eq!(s, 200, "{b}");
    let child_accessor = b["auth"]["accessor"].as_str().unwrap().to_owned();
    let hash = |a: &str| {
        let srv = &srv;
        let a = a.to_owned();
        async move {
            srv.root("PUT", "sys/audit-hash/file", Some(json!({"input": a})))
                .await
                .1["data"]["hash"]
                .as_str()
                .unwrap()
                .to_owned()
        }
    };
    let (ph, ch) = (
        hash(parent["accessor"].as_str().unwrap()).await,
        hash(&child_accessor).await,
    );
    let ended = |acc: &str| {
        events(&log).into_iter().find(|e| {
            e["accessor"] == acc
                && (e["event"] == "agent.credential.expired"
                    || e["event"] == "agent.credential.revoked")
        })
    };
    eventually("the parent expires", Duration::from_secs(30), || async {
        ended(&ph).is_some() && ended(&ch).is_some()
    })
    .await;
    let p = ended(&ph).unwrap();
    assert_eq!(p["event"], "agent.credential.expired", "{p}");
    assert_eq!(p["reason"], "lease expired");
    assert_eq!(p["credential_type"], "token");
    assert_eq!(p["action_context"]["initiator"], "expiry-worker");
    let c = ended(&ch).unwrap();
    assert_eq!(c["event"], "agent.credential.revoked", "{c}");
    assert_eq!(c["reason"], "parent revoked");
    assert_eq!(c["trace_id"], p["trace_id"], "one expiry, one trace");

    // An explicit revocation: the children get `parent revoked` too.
    let parent = create_token(&srv, json!({"policies": ["parent"]})).await;
    let pt = parent["client_token"].as_str().unwrap().to_owned();
    let (_, b) = srv
        .call("POST", "auth/token/create", Some(&pt), Some(json!({})))
        .await;
    let ch = hash(b["auth"]["accessor"].as_str().unwrap()).await;
    let (s, _) = srv
        .root("POST", "auth/token/revoke", Some(json!({"token": pt})))
        .await;
    assert_eq!(s, 204);
    let c = ended(&ch).unwrap();
    assert_eq!(c["event"], "agent.credential.revoked", "{c}");
    assert_eq!(c["reason"], "parent revoked");
    assert_eq!(c["action_context"]["path"], "auth/token/revoke");
}
