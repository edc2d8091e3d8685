//! The kill switch (`sys/containment/*`, `leash contain`) against the real server and
//! PostgreSQL: one call revokes every token, lease and just-in-time request of an agent,
//! locks its identity (logins refused with 403 "locked: <reason>" until unlocked, across
//! a restart), and audits it; `sys/leaks/scan` with `contain = true` does the same to the
//! leaking identity.

use std::path::{Path, PathBuf};
use std::time::Duration;

use leash_testkit::{Options, TestServer};
use serde_json::{Value, json};

use crate::database::PgScratch;
use crate::eventually;

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

fn audit(log: &Path) -> Vec<Value> {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
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

/// A server with a database mount, a userpass mount and users whose policy may read
/// credentials of the test role and create child tokens.
async fn setup(users: &[&str]) -> (TestServer, PgScratch, PathBuf) {
    let srv = TestServer::start().await;
    let log = enable_file_audit(&srv).await;
    let pg = PgScratch::new().await;
    pg.setup(&srv, "database", json!({})).await;
    srv.write_policy(
        "agent",
        &format!(
            r#"path "database/creds/{}" {{ capabilities = ["read"] }}
path "auth/token/create" {{ capabilities = ["update"] }}"#,
            pg.role
        ),
    )
    .await;
    let (s, b) = srv
        .root(
            "POST",
            "sys/auth/userpass",
            Some(json!({"type": "userpass"})),
        )
        .await;
    assert_eq!(s, 204, "{b}");
    for u in users {
        let (s, b) = srv
            .root(
                "POST",
                &format!("auth/userpass/users/{u}"),
                Some(json!({"password": format!("{u}-passphrase"), "token_policies": "agent"})),
            )
            .await;
        assert_eq!(s, 204, "{b}");
    }
    (srv, pg, log)
}

async fn login(srv: &TestServer, user: &str) -> (u16, Value) {
    srv.call(
        "POST",
        &format!("auth/userpass/login/{user}"),
        None,
        Some(json!({"password": format!("{user}-passphrase")})),
    )
    .await
}

async fn login_ok(srv: &TestServer, user: &str) -> Value {
    let (s, b) = login(srv, user).await;
    assert_eq!(s, 200, "{b}");
    b["auth"].clone()
}

/// A database credential for `token`: (lease id, username).
async fn creds(srv: &TestServer, pg: &PgScratch, token: &str) -> (String, String) {
    let (s, b) = srv
        .call(
            "GET",
            &format!("database/creds/{}", pg.role),
            Some(token),
            None,
        )
        .await;
    assert_eq!(s, 200, "{b}");
    (
        b["lease_id"].as_str().unwrap().to_owned(),
        b["data"]["username"].as_str().unwrap().to_owned(),
    )
}

async fn alive(srv: &TestServer, token: &str) -> bool {
    srv.call("GET", "auth/token/lookup-self", Some(token), None)
        .await
        .0
        == 200
}

fn token(auth: &Value) -> String {
    auth["client_token"].as_str().unwrap().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn locking_an_entity_ends_everything_it_holds_refuses_its_logins_and_survives_a_restart() {
    let (srv, pg, log) = setup(&["alice", "bob"]).await;
    // Alice: three logins, a child token, two database credentials per token.
    let mut alice_tokens = Vec::new();
    for _ in 0..3 {
        alice_tokens.push(token(&login_ok(&srv, "alice").await));
    }
    let entity = login_ok(&srv, "alice").await["entity_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let (s, b) = srv
        .call(
            "POST",
            "auth/token/create",
            Some(&alice_tokens[0]),
            Some(json!({"policies": ["agent"]})),
        )
        .await;
    assert_eq!(s, 200, "{b}");
    alice_tokens.push(b["auth"]["client_token"].as_str().unwrap().to_owned());
    let mut alice_leases = Vec::new();
    for t in &alice_tokens {
        for _ in 0..2 {
            alice_leases.push(creds(&srv, &pg, t).await);
        }
    }
    // Bob is another agent: untouched.
    let bob = token(&login_ok(&srv, "bob").await);
    let (_, bob_user) = creds(&srv, &pg, &bob).await;
    // Alice has a session open with one of her credentials.
    let (s, b) = srv
        .call(
            "GET",
            &format!("database/creds/{}", pg.role),
            Some(&alice_tokens[1]),
            None,
        )
        .await;
    assert_eq!(s, 200, "{b}");
    let session_user = b["data"]["username"].as_str().unwrap().to_owned();
    let session = pg
        .login(&session_user, b["data"]["password"].as_str().unwrap())
        .await;
    alice_leases.push((b["lease_id"].as_str().unwrap().to_owned(), session_user));

    // Without sudo on sys/containment/lock: refused.
    let (s, _) = srv
        .call(
            "PUT",
            "sys/containment/lock",
            Some(&bob),
            Some(json!({"entity_id": entity, "reason": "x"})),
        )
        .await;
    assert_eq!(s, 403);
    // A selector and a reason are required; one selector only.
    for body in [
        json!({"entity_id": entity}),
        json!({"reason": "x"}),
        json!({"entity_id": entity, "trace_id": "t", "reason": "x"}),
    ] {
        let (s, b) = srv.root("PUT", "sys/containment/lock", Some(body)).await;
        assert_eq!(s, 400, "{b}");
    }

    let (s, b) = srv
        .root(
            "PUT",
            "sys/containment/lock",
            Some(json!({"entity_id": entity, "reason": "prompt injection in ticket 4711"})),
        )
        .await;
    assert_eq!(s, 200, "{b}");
    let d = &b["data"];
    assert_eq!(d["locked"], true, "{b}");
    // Four logins (one only to read the entity id) and the child token.
    assert_eq!(d["revoked"]["tokens"], 5, "{b}");
    assert_eq!(d["revoked"]["leases"], alice_leases.len(), "{b}");
    assert_eq!(d["leases_retrying"], 0, "{b}");

    // When the call answered, everything was already dead: no waiting.
    for t in &alice_tokens {
        assert!(
            !alive(&srv, t).await,
            "a token of the contained agent works"
        );
    }
    for (_, user) in &alice_leases {
        assert!(!pg.role_exists(user).await, "{user} still exists");
    }
    assert!(
        session.simple_query("SELECT 1").await.is_err(),
        "the contained agent's database session is alive"
    );
    assert!(alive(&srv, &bob).await);
    assert!(pg.role_exists(&bob_user).await);

    // New logins of the entity are refused with the reason.
    let (s, b) = login(&srv, "alice").await;
    assert_eq!(s, 403, "{b}");
    assert!(
        b.to_string()
            .contains("locked: prompt injection in ticket 4711"),
        "{b}"
    );
    login_ok(&srv, "bob").await;

    // Listed.
    let (s, b) = srv.root("LIST", "sys/containment/locks", None).await;
    assert_eq!(s, 200, "{b}");
    let key = format!("entity/{entity}");
    assert_eq!(b["data"]["keys"], json!([key]), "{b}");
    assert_eq!(
        b["data"]["key_info"][&key]["reason"],
        "prompt injection in ticket 4711"
    );

    // Audit: one revoked event per credential with reason `contained`, one
    // `containment.locked`.
    let entries = audit(&log);
    for (lease, _) in &alice_leases {
        assert!(
            entries
                .iter()
                .any(|e| e["event"] == "agent.credential.revoked"
                    && e["lease_id"] == lease.as_str()
                    && e["reason"] == "contained"),
            "no contained event for {lease}"
        );
    }
    let token_events = entries
        .iter()
        .filter(|e| {
            e["event"] == "agent.credential.revoked"
                && e["credential_type"] == "token"
                && e["reason"] == "contained"
        })
        .count();
    assert_eq!(token_events, 5);
    let locked: Vec<&Value> = entries
        .iter()
        .filter(|e| e["type"] == "containment" && e["event"] == "containment.locked")
        .collect();
    assert_eq!(locked.len(), 1, "{locked:#?}");
    assert_eq!(locked[0]["selector"]["entity_id"], entity.as_str());
    assert_eq!(locked[0]["detail"]["counts"]["tokens"], 5);
    assert!(
        prometheus(&srv)
            .await
            .lines()
            .any(|l| l == "leash_containment_actions_total{action=\"lock\"} 1")
    );

    // The lock survives a restart.
    let root = srv.root_token.clone();
    let (tmp, dir, key_bytes) = srv.stop().await;
    let srv = TestServer::start_with(Options {
        dir: Some(dir),
        key: Some(key_bytes),
        root_token: Some(root),
        ..Options::default()
    })
    .await;
    let (s, b) = login(&srv, "alice").await;
    assert_eq!(s, 403, "{b}");
    // Until unlocked.
    let (s, b) = srv
        .root(
            "PUT",
            "sys/containment/unlock",
            Some(json!({"entity_id": entity})),
        )
        .await;
    assert_eq!(s, 200, "{b}");
    login_ok(&srv, "alice").await;
    let (s, b) = srv.root("LIST", "sys/containment/locks", None).await;
    assert!(s == 404 || b["data"]["keys"] == json!([]), "{s} {b}");
    // Unlocking what is not locked says so.
    let (s, _) = srv
        .root(
            "PUT",
            "sys/containment/unlock",
            Some(json!({"entity_id": entity})),
        )
        .await;
    assert_eq!(s, 400);
    drop(tmp);
    pg.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn locking_a_login_role_asynchronously_and_unlocking_it() {
    let (srv, pg, _log) = setup(&["carol", "dave"]).await;
    let carol = token(&login_ok(&srv, "carol").await);
    let (_, carol_user) = creds(&srv, &pg, &carol).await;
    let dave = token(&login_ok(&srv, "dave").await);

    let (s, b) = srv
        .root(
            "PUT",
            "sys/containment/lock",
            Some(json!({
                "role": {"mount": "userpass", "role": "carol"},
                "reason": "poisoned tool",
                "async": true,
            })),
        )
        .await;
    assert_eq!(s, 202, "{b}");
    let job = b["data"]["job_id"].as_str().unwrap().to_owned();
    eventually("the job is done", Duration::from_secs(30), || async {
        let (s, b) = srv
            .root("GET", &format!("sys/containment/jobs/{job}"), None)
            .await;
        assert_eq!(s, 200, "{b}");
        b["data"]["status"] == "done"
    })
    .await;
    let (_, b) = srv
        .root("GET", &format!("sys/containment/jobs/{job}"), None)
        .await;
    assert_eq!(b["data"]["result"]["revoked"]["tokens"], 1, "{b}");
    assert_eq!(b["data"]["result"]["revoked"]["leases"], 1, "{b}");
    assert!(!alive(&srv, &carol).await);
    assert!(!pg.role_exists(&carol_user).await);
    assert!(alive(&srv, &dave).await, "another role is untouched");
    let (s, b) = login(&srv, "carol").await;
    assert_eq!(s, 403, "{b}");
    assert!(b.to_string().contains("locked: poisoned tool"), "{b}");
    login_ok(&srv, "dave").await;

    let (s, b) = srv.root("LIST", "sys/containment/locks", None).await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["data"]["keys"], json!(["role/userpass/carol"]), "{b}");
    // The role spelled as `mount/role`.
    let (s, b) = srv
        .root(
            "PUT",
            "sys/containment/unlock",
            Some(json!({"role": "auth/userpass/carol"})),
        )
        .await;
    assert_eq!(s, 200, "{b}");
    login_ok(&srv, "carol").await;
    pg.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_accessor_or_a_trace_id_revokes_without_locking() {
    let (srv, pg, log) = setup(&["erin"]).await;
    // A token tree by accessor.
    let auth = login_ok(&srv, "erin").await;
    let t1 = token(&auth);
    let (_, u1) = creds(&srv, &pg, &t1).await;
    let (s, b) = srv
        .root(
            "PUT",
            "sys/containment/lock",
            Some(json!({"accessor": auth["accessor"], "reason": "suspicious"})),
        )
        .await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["data"]["locked"], false);
    assert_eq!(b["data"]["revoked"]["tokens"], 1, "{b}");
    assert_eq!(b["data"]["revoked"]["leases"], 1, "{b}");
    assert!(!alive(&srv, &t1).await);
    assert!(!pg.role_exists(&u1).await);
    // No lock: the agent may log in again.
    let t2 = token(&login_ok(&srv, "erin").await);
    let (s, _) = srv
        .root(
            "PUT",
            "sys/containment/unlock",
            Some(json!({"accessor": auth["accessor"]})),
        )
        .await;
    assert_eq!(s, 400);

    // Everything issued under one trace id: the credential asked for in that task only.
    let trace = "task-7f3a9c";
    let resp = reqwest::Client::new()
        .get(format!("{}/v1/database/creds/{}", srv.url(), pg.role))
        .header("X-Vault-Token", &t2)
        .header("X-Request-Id", trace)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    let b: Value = resp.json().await.unwrap();
    let traced_user = b["data"]["username"].as_str().unwrap().to_owned();
    let (_, other_user) = creds(&srv, &pg, &t2).await;
    let (s, b) = srv
        .root(
            "PUT",
            "sys/containment/lock",
            Some(json!({"trace_id": trace, "reason": "task went rogue"})),
        )
        .await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["data"]["revoked"]["leases"], 1, "{b}");
    assert_eq!(b["data"]["revoked"]["tokens"], 0, "{b}");
    assert!(!pg.role_exists(&traced_user).await);
    assert!(pg.role_exists(&other_user).await);
    assert!(alive(&srv, &t2).await);
    // The audit never shows the accessor in clear.
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(!text.contains(auth["accessor"].as_str().unwrap()));
    assert!(
        prometheus(&srv)
            .await
            .lines()
            .any(|l| l == "leash_containment_actions_total{action=\"revoke\"} 2")
    );
    pg.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leak_scan_with_contain_locks_the_leaking_identity() {
    let (srv, pg, _log) = setup(&["frank"]).await;
    let leaked = token(&login_ok(&srv, "frank").await);
    let other = token(&login_ok(&srv, "frank").await);
    let (_, user) = creds(&srv, &pg, &other).await;
    let text = format!("agent transcript: VAULT_TOKEN={leaked}");
    // Without `contain`, only the leaked token goes.
    let (s, b) = srv
        .root("PUT", "sys/leaks/scan", Some(json!({"text": text})))
        .await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["data"]["contained"], json!([]));
    assert!(alive(&srv, &other).await);

    let leaked = token(&login_ok(&srv, "frank").await);
    let text = format!("agent transcript: VAULT_TOKEN={leaked}");
    let (s, b) = srv
        .root(
            "PUT",
            "sys/leaks/scan",
            Some(json!({"text": text, "contain": true})),
        )
        .await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["data"]["live"], 1, "{b}");
    let c = &b["data"]["contained"][0];
    assert_eq!(c["locked"], true, "{b}");
    assert_eq!(c["revoked"]["tokens"], 1, "{b}");
    assert_eq!(c["revoked"]["leases"], 1, "{b}");
    assert!(!alive(&srv, &other).await);
    assert!(!pg.role_exists(&user).await);
    let (s, b) = login(&srv, "frank").await;
    assert_eq!(s, 403, "{b}");
    assert!(b.to_string().contains("locked: leak"), "{b}");
    pg.cleanup().await;
}

async fn cli(srv: &TestServer, args: &[&str]) -> (Option<i32>, String, String) {
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_leash"))
        .args(args)
        .args(["--address", &srv.url()])
        .env("LEASH_TOKEN", &srv.root_token)
        .env_remove("VAULT_TOKEN")
        .env_remove("VAULT_ADDR")
        .env("HOME", &srv.dir)
        .output()
        .await
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leash_contain_locks_lists_and_unlocks() {
    let (srv, pg, _log) = setup(&["gina"]).await;
    let auth = login_ok(&srv, "gina").await;
    let t = token(&auth);
    let (_, user) = creds(&srv, &pg, &t).await;

    // --agents: what there is to contain, and with which selector.
    let (code, out, err) = cli(&srv, &["contain", "--agents"]).await;
    assert_eq!(code, Some(0), "{out}\n{err}");
    let line = out
        .lines()
        .find(|l| l.contains("gina"))
        .unwrap_or_else(|| panic!("{out}"));
    assert!(
        line.contains(&format!("--entity {}", auth["entity_id"].as_str().unwrap()))
            && line.contains("userpass/gina"),
        "{line}"
    );

    let (code, _, err) = cli(&srv, &["contain", "--role", "userpass/gina"]).await;
    assert_eq!(code, Some(1), "a reason is required: {err}");
    assert!(err.contains("--reason"), "{err}");

    let (code, out, err) = cli(
        &srv,
        &[
            "contain",
            "--role",
            "userpass/gina",
            "--reason",
            "harvested .env",
        ],
    )
    .await;
    assert_eq!(code, Some(0), "{out}\n{err}");
    assert!(
        out.contains("tokens_revoked") && out.contains("leases_revoked"),
        "{out}"
    );
    assert!(!alive(&srv, &t).await);
    assert!(!pg.role_exists(&user).await);
    let (s, b) = login(&srv, "gina").await;
    assert_eq!(s, 403, "{b}");

    let (code, out, err) = cli(&srv, &["contain", "--list"]).await;
    assert_eq!(code, Some(0), "{err}");
    assert!(
        out.contains("role/userpass/gina") && out.contains("harvested .env"),
        "{out}"
    );

    let (code, out, err) = cli(&srv, &["contain", "--unlock", "--role", "userpass/gina"]).await;
    assert_eq!(code, Some(0), "{out}\n{err}");
    login_ok(&srv, "gina").await;
    let (code, out, _) = cli(&srv, &["contain", "--list"]).await;
    assert_eq!(code, Some(0));
    assert!(out.contains("No locks."), "{out}");
    pg.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn containment_ends_pending_and_approved_jit_requests() {
    let (srv, pg, log) = setup(&["hank", "ivy"]).await;
    srv.write_policy(
        "jit",
        &format!(
            r#"path "database/creds/{}" {{
  capabilities = ["read"]
  control_group = {{
    ttl = "1h"
    factor "dba" {{
      identity {{
        group_names = ["dba"]
        approvals   = 1
      }}
    }}
  }}
}}"#,
            pg.role
        ),
    )
    .await;
    let (s, b) = srv
        .root(
            "POST",
            "auth/userpass/users/hank",
            Some(json!({"password": "hank-passphrase", "token_policies": "jit"})),
        )
        .await;
    assert_eq!(s, 204, "{b}");
    let ivy = login_ok(&srv, "ivy").await;
    let (s, b) = srv
        .root(
            "POST",
            "identity/group",
            Some(json!({"name": "dba", "member_entity_ids": [ivy["entity_id"]]})),
        )
        .await;
    assert_eq!(s, 200, "{b}");
    let hank_auth = login_ok(&srv, "hank").await;
    let hank = token(&hank_auth);
    let entity = hank_auth["entity_id"].as_str().unwrap().to_owned();
    let ask = || async {
        let (s, b) = srv
            .call(
                "POST",
                "sys/control-group/request",
                Some(&hank),
                Some(json!({
                    "agent_id": "hank",
                    "operation": "read",
                    "target_resource": format!("database/creds/{}", pg.role),
                    "justification": "nightly report",
                    "requested_duration_minutes": 30,
                })),
            )
            .await;
        assert_eq!(s, 200, "{b}");
        b["request_id"].as_str().unwrap().to_owned()
    };
    let pending = ask().await;
    let approved = ask().await;
    let (s, b) = srv
        .call(
            "POST",
            &format!("sys/control-group/request/{approved}/approve"),
            Some(&token(&ivy)),
            Some(json!({"comment": "ok"})),
        )
        .await;
    assert_eq!(s, 200, "{b}");
    let (_, user) = creds(&srv, &pg, &hank).await;

    let (s, b) = srv
        .root(
            "PUT",
            "sys/containment/lock",
            Some(json!({"entity_id": entity, "reason": "exfiltration attempt"})),
        )
        .await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["data"]["revoked"]["approvals"], 2, "{b}");
    assert!(!pg.role_exists(&user).await);
    let status = |id: String| {
        let srv = &srv;
        async move {
            let (s, b) = srv
                .root("GET", &format!("sys/control-group/request/{id}"), None)
                .await;
            assert_eq!(s, 200, "{b}");
            b["data"]["status"].as_str().unwrap_or_default().to_owned()
        }
    };
    assert_eq!(status(pending.clone()).await, "expired");
    assert_eq!(status(approved.clone()).await, "completed");
    // A contained request can no longer be approved.
    let (s, b) = srv
        .call(
            "POST",
            &format!("sys/control-group/request/{pending}/approve"),
            Some(&token(&ivy)),
            Some(json!({"comment": "ok"})),
        )
        .await;
    assert_ne!(s, 200, "{b}");
    let steps: Vec<String> = audit(&log)
        .into_iter()
        .filter(|e| e["type"] == "approval" && e["request_id"] == pending.as_str())
        .map(|e| e["event"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        steps[steps.len() - 2..],
        ["approval.expired", "approval.refused"],
        "{steps:?}"
    );
    pg.cleanup().await;
}

/// The exposure-window benchmark (not a timed test: run it on demand with
/// `scripts/bench-containment`): an agent holds 50 tokens and 50 database leases, each
/// with a live session; measures from the lock call until no token of the agent
/// authenticates and no session of its database users is alive.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "benchmark: run with scripts/bench-containment"]
async fn bench_containment_exposure_window() {
    const N: usize = 50;
    let (srv, pg, _log) = setup(&["agent"]).await;
    let mut tokens = Vec::new();
    let mut users = Vec::new();
    let mut sessions = Vec::new();
    let mut entity = String::new();
    for _ in 0..N {
        let auth = login_ok(&srv, "agent").await;
        entity = auth["entity_id"].as_str().unwrap().to_owned();
        let t = token(&auth);
        let (s, b) = srv
            .call(
                "GET",
                &format!("database/creds/{}", pg.role),
                Some(&t),
                None,
            )
            .await;
        assert_eq!(s, 200, "{b}");
        let user = b["data"]["username"].as_str().unwrap().to_owned();
        sessions.push(
            pg.login(&user, b["data"]["password"].as_str().unwrap())
                .await,
        );
        users.push(user);
        tokens.push(t);
    }
    let live_sessions = || async {
        pg.admin
            .query_one(
                "SELECT count(*) FROM pg_stat_activity WHERE usename = ANY($1)",
                &[&users],
            )
            .await
            .unwrap()
            .get::<_, i64>(0)
    };
    assert_eq!(live_sessions().await, N as i64);
    let started = std::time::Instant::now();
    let (s, b) = srv
        .root(
            "PUT",
            "sys/containment/lock",
            Some(json!({"entity_id": entity, "reason": "benchmark"})),
        )
        .await;
    let answered = started.elapsed();
    assert_eq!(s, 200, "{b}");
    loop {
        let mut any_alive = false;
        for t in &tokens {
            if alive(&srv, t).await {
                any_alive = true;
                break;
            }
        }
        if !any_alive && live_sessions().await == 0 {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "never contained"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let window = started.elapsed();
    println!(
        "containment exposure window: {N} tokens, {N} leases with live sessions: lock call answered in {} ms, contained (no token authenticates, no session alive) after {} ms; revoked {}",
        answered.as_millis(),
        window.as_millis(),
        b["data"]["revoked"]
    );
    drop(sessions);
    pg.cleanup().await;
}

/// Issuance caps of a database role: past `max_live_leases_per_entity` or
/// `max_issuance_per_minute_per_entity` a request is refused with 429 naming the cap and
/// the count (never queued), and `leash_issuance_refused_total{reason}` counts it. Other
/// entities have their own budget.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn database_roles_cap_live_leases_and_issuance_per_entity() {
    let (srv, pg, _log) = setup(&["ivan", "judy"]).await;
    let (s, b) = srv
        .root(
            "POST",
            &format!("database/roles/{}", pg.role),
            Some(json!({"max_live_leases_per_entity": 2})),
        )
        .await;
    assert!(s == 204 || s == 200, "{b}");
    let (_, b) = srv
        .root("GET", &format!("database/roles/{}", pg.role), None)
        .await;
    assert_eq!(b["data"]["max_live_leases_per_entity"], 2, "{b}");
    // A crash-looping pod: a fresh login each time, same entity.
    let mut leases = Vec::new();
    for _ in 0..2 {
        let t = token(&login_ok(&srv, "ivan").await);
        leases.push(creds(&srv, &pg, &t).await.0);
    }
    let t = token(&login_ok(&srv, "ivan").await);
    let (s, b) = srv
        .call(
            "GET",
            &format!("database/creds/{}", pg.role),
            Some(&t),
            None,
        )
        .await;
    assert_eq!(s, 429, "{b}");
    let msg = b.to_string();
    assert!(
        msg.contains("max_live_leases_per_entity") && msg.contains("holds 2 live leases"),
        "{msg}"
    );
    assert_eq!(pg.our_roles().await.len(), 2, "no third user was made");
    // Another entity is not affected.
    let judy = token(&login_ok(&srv, "judy").await);
    creds(&srv, &pg, &judy).await;
    // Giving one back makes room.
    let (s, b) = srv
        .root(
            "PUT",
            "sys/leases/revoke",
            Some(json!({"lease_id": leases[0]})),
        )
        .await;
    assert_eq!(s, 204, "{b}");
    creds(&srv, &pg, &t).await;

    // Per minute: the third issuance within a minute is refused, live or not.
    let (s, b) = srv
        .root(
            "POST",
            &format!("database/roles/{}", pg.role),
            Some(json!({"max_live_leases_per_entity": 0, "max_issuance_per_minute_per_entity": 2})),
        )
        .await;
    assert!(s == 204 || s == 200, "{b}");
    let judy2 = token(&login_ok(&srv, "judy").await);
    for _ in 0..2 {
        let (lease, _) = creds(&srv, &pg, &judy2).await;
        srv.root("PUT", "sys/leases/revoke", Some(json!({"lease_id": lease})))
            .await;
    }
    let (s, b) = srv
        .call(
            "GET",
            &format!("database/creds/{}", pg.role),
            Some(&judy2),
            None,
        )
        .await;
    assert_eq!(s, 429, "{b}");
    assert!(
        b.to_string()
            .contains("max_issuance_per_minute_per_entity of database/creds/"),
        "{b}"
    );
    let metrics = prometheus(&srv).await;
    for reason in [
        "max_live_leases_per_entity",
        "max_issuance_per_minute_per_entity",
    ] {
        assert!(
            metrics
                .lines()
                .any(|l| l == format!("leash_issuance_refused_total{{reason=\"{reason}\"}} 1")),
            "{reason}: {metrics}"
        );
    }
    pg.cleanup().await;
}

/// A token role's `max_live_tokens_per_entity`: the entity's third live token of the
/// role is refused with 429 naming the cap and the count.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_roles_cap_live_tokens_per_entity() {
    let srv = TestServer::start().await;
    srv.write_policy(
        "minter",
        r#"path "auth/token/create/capped" { capabilities = ["update"] }"#,
    )
    .await;
    let (s, b) = srv
        .root(
            "POST",
            "auth/token/roles/capped",
            Some(json!({"allowed_policies": ["default"], "max_live_tokens_per_entity": 2})),
        )
        .await;
    assert_eq!(s, 204, "{b}");
    let (_, b) = srv.root("GET", "auth/token/roles/capped", None).await;
    assert_eq!(b["data"]["max_live_tokens_per_entity"], 2, "{b}");
    let (s, b) = srv
        .root(
            "POST",
            "sys/auth/userpass",
            Some(json!({"type": "userpass"})),
        )
        .await;
    assert_eq!(s, 204, "{b}");
    for u in ["kim", "lou"] {
        let (s, b) = srv
            .root(
                "POST",
                &format!("auth/userpass/users/{u}"),
                Some(json!({"password": format!("{u}-passphrase"), "token_policies": "minter"})),
            )
            .await;
        assert_eq!(s, 204, "{b}");
    }
    let mint = |t: String| {
        let srv = &srv;
        async move {
            srv.call(
                "POST",
                "auth/token/create/capped",
                Some(&t),
                Some(json!({})),
            )
            .await
        }
    };
    let kim = token(&login_ok(&srv, "kim").await);
    let mut children = Vec::new();
    for _ in 0..2 {
        let (s, b) = mint(kim.clone()).await;
        assert_eq!(s, 200, "{b}");
        children.push(b["auth"]["client_token"].as_str().unwrap().to_owned());
    }
    // Another login of the same entity shares the budget.
    let kim2 = token(&login_ok(&srv, "kim").await);
    let (s, b) = mint(kim2.clone()).await;
    assert_eq!(s, 429, "{b}");
    assert!(
        b.to_string()
            .contains("max_live_tokens_per_entity of token role \\\"capped\\\" is 2: this entity holds 2 live tokens"),
        "{b}"
    );
    let lou = token(&login_ok(&srv, "lou").await);
    let (s, b) = mint(lou).await;
    assert_eq!(s, 200, "another entity: {b}");
    let (s, _) = srv
        .call("POST", "auth/token/revoke-self", Some(&children[0]), None)
        .await;
    assert_eq!(s, 204);
    let (s, b) = mint(kim2).await;
    assert_eq!(s, 200, "{b}");
    assert!(
        prometheus(&srv)
            .await
            .lines()
            .any(|l| l == "leash_issuance_refused_total{reason=\"max_live_tokens_per_entity\"} 1")
    );
}

/// Auth roles (here a userpass user) cap logins per identity: live tokens through the
/// role (`max_live_leases_per_entity`) and logins per minute
/// (`max_issuance_per_minute_per_entity`) — a crash-looping pod cannot pile up tokens.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_roles_cap_logins_per_entity() {
    let srv = TestServer::start().await;
    let (s, b) = srv
        .root(
            "POST",
            "sys/auth/userpass",
            Some(json!({"type": "userpass"})),
        )
        .await;
    assert_eq!(s, 204, "{b}");
    let (s, b) = srv
        .root(
            "POST",
            "auth/userpass/users/pod",
            Some(json!({"password": "pod-passphrase", "max_live_leases_per_entity": 2})),
        )
        .await;
    assert_eq!(s, 204, "{b}");
    let (_, b) = srv.root("GET", "auth/userpass/users/pod", None).await;
    assert_eq!(b["data"]["max_live_leases_per_entity"], 2, "{b}");
    let first = token(&login_ok(&srv, "pod").await);
    login_ok(&srv, "pod").await;
    let (s, b) = login(&srv, "pod").await;
    assert_eq!(s, 429, "{b}");
    assert!(
        b.to_string()
            .contains("max_live_leases_per_entity of role \\\"pod\\\" of auth/userpass/ is 2: this entity holds 2 live tokens"),
        "{b}"
    );
    let (s, _) = srv
        .call("POST", "auth/token/revoke-self", Some(&first), None)
        .await;
    assert_eq!(s, 204);
    login_ok(&srv, "pod").await;

    // Per minute.
    let (s, b) = srv
        .root(
            "POST",
            "auth/userpass/users/pod",
            Some(json!({"max_live_leases_per_entity": 0, "max_issuance_per_minute_per_entity": 1})),
        )
        .await;
    assert_eq!(s, 204, "{b}");
    login_ok(&srv, "pod").await;
    let (s, b) = login(&srv, "pod").await;
    assert_eq!(s, 429, "{b}");
    assert!(
        b.to_string()
            .contains("logged in 1 times in the last minute"),
        "{b}"
    );
    let metrics = prometheus(&srv).await;
    for reason in [
        "max_live_leases_per_entity",
        "max_issuance_per_minute_per_entity",
    ] {
        assert!(
            metrics
                .lines()
                .any(|l| l == format!("leash_issuance_refused_total{{reason=\"{reason}\"}} 1")),
            "{reason}"
        );
    }
}

/// `reuse_lease_for_same_token`: a second request by the same token for the same role
/// gets the live lease's credential (same username and password, the remaining TTL),
/// not a new database user; another token gets its own; once the lease is revoked the
/// next request makes a new user.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reuse_lease_for_same_token_returns_the_live_credential() {
    let (srv, pg, _log) = setup(&["mia"]).await;
    let (s, b) = srv
        .root(
            "POST",
            &format!("database/roles/{}", pg.role),
            Some(json!({"reuse_lease_for_same_token": true})),
        )
        .await;
    assert!(s == 204 || s == 200, "{b}");
    let t = token(&login_ok(&srv, "mia").await);
    let get = |t: String| {
        let srv = &srv;
        let path = format!("database/creds/{}", pg.role);
        async move {
            let (s, b) = srv.call("GET", &path, Some(&t), None).await;
            assert_eq!(s, 200, "{b}");
            b
        }
    };
    let first = get(t.clone()).await;
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let mut again = Value::Null;
    for _ in 0..20 {
        again = get(t.clone()).await;
    }
    assert_eq!(again["lease_id"], first["lease_id"]);
    assert_eq!(again["data"]["username"], first["data"]["username"]);
    assert_eq!(again["data"]["password"], first["data"]["password"]);
    assert!(
        again["lease_duration"].as_u64().unwrap() < first["lease_duration"].as_u64().unwrap(),
        "the remaining TTL: {again}"
    );
    assert_eq!(
        pg.our_roles().await.len(),
        1,
        "21 requests, one database user"
    );
    // Another token of the same entity gets its own.
    let other = get(token(&login_ok(&srv, "mia").await)).await;
    assert_ne!(other["data"]["username"], first["data"]["username"]);
    // Revoked: the next request makes a new user.
    let (s, b) = srv
        .root(
            "PUT",
            "sys/leases/revoke",
            Some(json!({"lease_id": first["lease_id"]})),
        )
        .await;
    assert_eq!(s, 204, "{b}");
    let fresh = get(t).await;
    assert_ne!(fresh["data"]["username"], first["data"]["username"]);
    pg.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agents_list_shows_each_identity_with_its_tokens_leases_last_use_and_traces() {
    let (srv, pg, _log) = setup(&["gina"]).await;
    let auth = login_ok(&srv, "gina").await;
    let t = token(&auth);
    let entity = auth["entity_id"].as_str().unwrap().to_owned();
    let (lease, _) = creds(&srv, &pg, &t).await;
    // A request of the agent under a trace id of its task.
    let trace = "4bf92f3577b34da6a3ce929d0e0e4736";
    let r = reqwest::Client::new()
        .get(format!("{}/v1/auth/token/lookup-self", srv.url()))
        .header("X-Vault-Token", &t)
        .header("traceparent", format!("00-{trace}-00f067aa0ba902b7-01"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    // A token without an entity (made by root) is an agent of its own tree.
    let (s, ad_hoc) = srv
        .root(
            "POST",
            "auth/token/create",
            Some(json!({"policies": ["agent"], "ttl": "10m"})),
        )
        .await;
    assert_eq!(s, 200, "{ad_hoc}");
    let ad_hoc_accessor = ad_hoc["auth"]["accessor"].as_str().unwrap().to_owned();

    let (s, b) = srv.root("LIST", "sys/containment/agents", None).await;
    assert_eq!(s, 200, "{b}");
    let row = &b["data"]["key_info"][format!("entity/{entity}")];
    assert_eq!(row["name"], "gina", "{b}");
    assert_eq!(row["roles"], json!(["userpass/gina"]), "{b}");
    assert_eq!(row["tokens"], 1, "{b}");
    assert_eq!(row["leases"], json!([lease]), "{b}");
    assert!(row["last_use"].is_string(), "{b}");
    assert!(
        row["trace_ids"]
            .as_array()
            .unwrap()
            .iter()
            .any(|x| x == trace),
        "{b}"
    );
    assert_eq!(row["selector"], json!({"entity_id": entity}));
    assert_eq!(row["locks"], true);
    let tree = &b["data"]["key_info"][format!("accessor/{ad_hoc_accessor}")];
    assert_eq!(tree["tokens"], 1, "{b}");
    assert_eq!(tree["selector"], json!({"accessor": ad_hoc_accessor}));
    assert_eq!(tree["locks"], false);
    // Root tokens are not agents.
    assert!(
        b["data"]["key_info"]
            .as_object()
            .unwrap()
            .values()
            .all(|v| v["name"] != "root"),
        "{b}"
    );

    // Reading the list needs read (not sudo) there; the agent's own policy has none.
    let (s, _) = srv
        .call("LIST", "sys/containment/agents", Some(&t), None)
        .await;
    assert_eq!(s, 403);
    srv.write_policy(
        "viewer",
        r#"path "sys/containment/agents" { capabilities = ["read", "list"] }"#,
    )
    .await;
    let (s, v) = srv
        .root(
            "POST",
            "auth/token/create",
            Some(json!({"policies": ["viewer"], "ttl": "10m"})),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    let viewer = token(&v["auth"]);
    let (s, b) = srv
        .call("LIST", "sys/containment/agents", Some(&viewer), None)
        .await;
    assert_eq!(s, 200, "{b}");
    // ...and the lock itself stays sudo.
    let (s, _) = srv
        .call(
            "PUT",
            "sys/containment/lock",
            Some(&viewer),
            Some(json!({"entity_id": entity, "reason": "x"})),
        )
        .await;
    assert_eq!(s, 403);
    assert!(alive(&srv, &t).await);
    pg.cleanup().await;
}
