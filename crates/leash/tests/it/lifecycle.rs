//! Credential lifecycle events (`agent.credential.*`) in the file audit device: a
//! scripted agent session under one W3C trace, expiry vs revocation and their reasons,
//! the `X-Request-Id` fallback and the generated trace id echoed to the client.

use std::path::Path;
use std::time::Duration;

use leash_testkit::TestServer;
use serde_json::{Value, json};

use crate::database::PgScratch;
use crate::{Raw, eventually, raw};

const TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const TRACEPARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

/// One request with extra headers (and the token, if any).
async fn call(
    srv: &TestServer,
    method: &str,
    path: &str,
    token: Option<&str>,
    headers: &[(&str, &str)],
    body: Option<Value>,
) -> Raw {
    let mut h: Vec<(&str, &str)> = headers.to_vec();
    if let Some(t) = token {
        h.push(("X-Vault-Token", t));
    }
    let body = body.map(|b| b.to_string()).unwrap_or_default();
    if !body.is_empty() {
        h.push(("Content-Type", "application/json"));
    }
    raw(
        srv.addr,
        method,
        &format!("/v1/{path}"),
        &h,
        body.as_bytes(),
    )
    .await
}

async fn enable_file_audit(srv: &TestServer) -> std::path::PathBuf {
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

/// Every line of the audit file, parsed.
fn lines(log: &Path) -> Vec<Value> {
    std::fs::read_to_string(log)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// The lifecycle events of the audit file, in order.
fn events(log: &Path) -> Vec<Value> {
    lines(log)
        .into_iter()
        .filter(|v| v["type"] == "lifecycle")
        .collect()
}

/// `YYYY-MM-DDTHH:MM:SS[.frac]Z`.
fn is_rfc3339_utc(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() >= 20
        && s.ends_with('Z')
        && b[4] == b'-'
        && b[7] == b'-'
        && b[10] == b'T'
        && b[13] == b':'
        && b[16] == b':'
        && [0, 1, 2, 3, 5, 6, 8, 9, 11, 12, 14, 15, 17, 18]
            .iter()
            .all(|i| b[*i].is_ascii_digit())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_session_yields_the_full_ordered_event_set_under_one_trace() {
    let srv = TestServer::start().await;
    let log = enable_file_audit(&srv).await;
    let pg = PgScratch::new().await;
    pg.setup(&srv, "database", json!({})).await;
    srv.write_policy(
        "agent",
        &format!(
            r#"path "database/creds/{}" {{ capabilities = ["read"] }}
path "sys/leases/renew" {{ capabilities = ["update"] }}
path "sys/leases/revoke" {{ capabilities = ["update"] }}
path "auth/token/renew-self" {{ capabilities = ["update"] }}
path "auth/token/revoke-self" {{ capabilities = ["update"] }}"#,
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
    let (s, b) = srv
        .root(
            "POST",
            "auth/userpass/users/ai-agent",
            Some(json!({"password": "agent-password-123", "policies": "agent"})),
        )
        .await;
    assert!(s == 204 || s == 200, "{b}");
    let tp: &[(&str, &str)] = &[("traceparent", TRACEPARENT)];

    // Login.
    let r = call(
        &srv,
        "POST",
        "auth/userpass/login/ai-agent",
        None,
        tp,
        Some(json!({"password": "agent-password-123"})),
    )
    .await;
    assert_eq!(r.status, 200, "{:?}", r.json());
    assert_eq!(r.header("x-leash-trace-id"), Some(TRACE));
    let auth = r.json()["auth"].clone();
    let token = auth["client_token"].as_str().unwrap().to_owned();
    let accessor = auth["accessor"].as_str().unwrap().to_owned();
    let entity = auth["entity_id"].as_str().unwrap().to_owned();
    assert!(!entity.is_empty());

    // Issue.
    let r = call(
        &srv,
        "GET",
        &format!("database/creds/{}", pg.role),
        Some(&token),
        tp,
        None,
    )
    .await;
    assert_eq!(r.status, 200, "{:?}", r.json());
    assert_eq!(r.header("x-leash-trace-id"), Some(TRACE));
    let b = r.json();
    let lease_id = b["lease_id"].as_str().unwrap().to_owned();
    let user = b["data"]["username"].as_str().unwrap().to_owned();
    let password = b["data"]["password"].as_str().unwrap().to_owned();

    // Use (in the target: leash does not see it; the token's uses are its requests).
    let c = pg.login(&user, &password).await;
    c.simple_query("SELECT 1").await.unwrap();
    drop(c);

    // Renew, revoke the credential, give the token up.
    let r = call(
        &srv,
        "PUT",
        "sys/leases/renew",
        Some(&token),
        tp,
        Some(json!({"lease_id": lease_id, "increment": "10m"})),
    )
    .await;
    assert_eq!(r.status, 200, "{:?}", r.json());
    let r = call(
        &srv,
        "POST",
        "auth/token/renew-self",
        Some(&token),
        tp,
        Some(json!({"increment": "30m"})),
    )
    .await;
    assert_eq!(r.status, 200, "{:?}", r.json());
    let r = call(
        &srv,
        "PUT",
        "sys/leases/revoke",
        Some(&token),
        tp,
        Some(json!({"lease_id": lease_id})),
    )
    .await;
    assert_eq!(r.status, 204);
    let r = call(
        &srv,
        "POST",
        "auth/token/revoke-self",
        Some(&token),
        tp,
        None,
    )
    .await;
    assert_eq!(r.status, 204);

    let all = events(&log);
    let mine: Vec<&Value> = all.iter().filter(|e| e["trace_id"] == TRACE).collect();
    let got: Vec<(String, String, Option<String>)> = mine
        .iter()
        .map(|e| {
            (
                e["event"].as_str().unwrap().to_owned(),
                e["credential_type"].as_str().unwrap().to_owned(),
                e["reason"].as_str().map(str::to_owned),
            )
        })
        .collect();
    let ev = |e: &str, t: &str, r: Option<&str>| {
        (
            format!("agent.credential.{e}"),
            t.to_owned(),
            r.map(str::to_owned),
        )
    };
    assert_eq!(
        got,
        vec![
            ev("issued", "token", None),
            ev("used", "token", None),
            ev("issued", "database", None),
            ev("used", "token", None),
            ev("renewed", "database", None),
            ev("used", "token", None),
            ev("renewed", "token", None),
            ev("used", "token", None),
            ev("revoked", "database", Some("operator")),
            ev("used", "token", None),
            ev("revoked", "token", Some("task completed")),
        ],
        "{all:#?}"
    );
    for e in &mine {
        assert!(is_rfc3339_utc(e["timestamp"].as_str().unwrap()), "{e}");
        assert_eq!(e["agent_id"], entity.as_str(), "{e}");
        // The readable name beside the stable id: the user name it logged in as.
        assert_eq!(e["agent_name"], "ai-agent", "{e}");
        assert_eq!(e["entity_id"], entity.as_str(), "{e}");
        let acc = e["accessor"].as_str().unwrap();
        assert!(acc.starts_with("hmac-sha256:"), "accessor is HMAC'd: {e}");
        assert!(e["ttl_seconds"].is_u64(), "{e}");
        assert!(e["action_context"]["request_id"].is_string(), "{e}");
        assert_eq!(e["action_context"]["trace_id"], TRACE, "{e}");
    }
    // One accessor (the agent's token) throughout.
    assert!(
        mine.windows(2)
            .all(|w| w[0]["accessor"] == w[1]["accessor"])
    );
    let db: Vec<&&Value> = mine
        .iter()
        .filter(|e| e["credential_type"] == "database")
        .collect();
    for e in &db {
        assert_eq!(e["lease_id"], lease_id.as_str(), "{e}");
        assert_eq!(
            e["credential_scope"],
            json!({"role": pg.role, "db": "pg"}),
            "{e}"
        );
    }
    assert_eq!(db[0]["ttl_seconds"], 900);
    assert_eq!(db[1]["ttl_seconds"], 600);
    assert_eq!(db[1]["action_context"]["path"], "sys/leases/renew");
    assert_eq!(
        mine[0]["credential_scope"]["policies"],
        json!(["agent", "default"])
    );
    assert_eq!(mine[7]["ttl_seconds"], 1800, "{}", mine[7]);
    // Request and response entries carry the trace and agent too.
    let entries: Vec<Value> = lines(&log)
        .into_iter()
        .filter(|v| v["type"] == "request" || v["type"] == "response")
        .filter(|v| v["trace_id"] == TRACE)
        .collect();
    assert!(entries.len() >= 10, "{entries:#?}");
    assert!(
        entries
            .iter()
            .filter(|v| v["auth"]["accessor"].is_string())
            .all(|v| v["agent_id"] == entity.as_str()),
        "{entries:#?}"
    );

    // `leash audit query --agent` takes the name or the id alike.
    for who in ["ai-agent", entity.as_str()] {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_leash"))
            .args(["audit", "query", "--format", "json", "--agent", who])
            .arg(&log)
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        let found: Vec<Value> = String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(|l| serde_json::from_str(&l[l.find('{').unwrap()..]).unwrap())
            .collect();
        let lifecycle = found.iter().filter(|v| v["type"] == "lifecycle").count();
        assert_eq!(lifecycle, mine.len(), "--agent {who}: {found:#?}");
        assert!(
            found.iter().any(|v| v["type"] == "request"),
            "--agent {who}: request entries too"
        );
    }

    // Nothing secret in the audit file.
    let text = std::fs::read_to_string(&log).unwrap();
    for secret in [
        &token,
        &password,
        &accessor,
        &"agent-password-123".to_owned(),
    ] {
        assert!(
            !text.contains(secret.as_str()),
            "{secret} leaked into the audit log"
        );
    }
    pg.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expiry_and_token_revocation_are_told_apart_and_trace_ids_fall_back() {
    let srv = TestServer::start().await;
    let log = enable_file_audit(&srv).await;
    let pg = PgScratch::new().await;
    pg.setup(&srv, "database", json!({"default_ttl": 2, "max_ttl": 10}))
        .await;
    let creds_path = format!("database/creds/{}", pg.role);

    // X-Request-Id is the trace id when there is no (valid) traceparent.
    let r = call(
        &srv,
        "GET",
        &creds_path,
        Some(&srv.root_token),
        &[
            ("X-Request-Id", "task-42.step-1"),
            ("traceparent", "garbage"),
        ],
        None,
    )
    .await;
    assert_eq!(r.status, 200, "{:?}", r.json());
    assert_eq!(r.header("x-leash-trace-id"), Some("task-42.step-1"));
    let expiring = r.json()["lease_id"].as_str().unwrap().to_owned();

    // Without either, one is generated and echoed. (A second mount whose leases live
    // long enough to be revoked with their token rather than expire.)
    pg.setup(&srv, "db2", json!({"default_ttl": 300, "max_ttl": 600}))
        .await;
    srv.write_policy(
        "agent",
        &format!(
            r#"path "db2/creds/{}" {{ capabilities = ["read"] }}"#,
            pg.role
        ),
    )
    .await;
    let agent = srv.token_with(&["agent"]).await;
    let r = call(
        &srv,
        "GET",
        &format!("db2/creds/{}", pg.role),
        Some(&agent),
        &[],
        None,
    )
    .await;
    assert_eq!(r.status, 200, "{:?}", r.json());
    let generated = r.header("x-leash-trace-id").unwrap().to_owned();
    assert_eq!(generated.len(), 32, "{generated}");
    assert!(generated.bytes().all(|b| b.is_ascii_hexdigit()));
    let cascaded = r.json()["lease_id"].as_str().unwrap().to_owned();
    // An operator revokes the agent's token; its lease goes with it.
    let (s, b) = srv
        .root("POST", "auth/token/revoke", Some(json!({"token": agent})))
        .await;
    assert_eq!(s, 204, "{b}");

    let find = |id: &str| {
        events(&log)
            .into_iter()
            .find(|e| e["lease_id"] == id && e["event"] != "agent.credential.issued")
    };
    eventually("both leases end", Duration::from_secs(30), || async {
        find(&expiring).is_some() && find(&cascaded).is_some()
    })
    .await;
    let exp = find(&expiring).unwrap();
    assert_eq!(exp["event"], "agent.credential.expired", "{exp}");
    assert_eq!(exp["reason"], "lease expired", "{exp}");
    assert_eq!(
        exp["trace_id"], "task-42.step-1",
        "the issuing trace: {exp}"
    );
    assert_eq!(exp["action_context"]["initiator"], "expiry-worker", "{exp}");
    assert_eq!(exp["ttl_seconds"], 0);
    let rev = find(&cascaded).unwrap();
    assert_eq!(rev["event"], "agent.credential.revoked", "{rev}");
    assert_eq!(rev["reason"], "token revoked", "{rev}");
    assert_eq!(rev["trace_id"], generated.as_str(), "{rev}");

    let all = events(&log);
    let tok = all
        .iter()
        .find(|e| e["event"] == "agent.credential.revoked" && e["credential_type"] == "token")
        .unwrap();
    assert_eq!(tok["reason"], "operator", "{tok}");
    // A token without an entity is known by its (HMAC'd) accessor.
    assert_eq!(tok["entity_id"], "");
    assert_eq!(tok["agent_id"], tok["accessor"]);
    assert!(
        tok["agent_id"]
            .as_str()
            .unwrap()
            .starts_with("hmac-sha256:")
    );
    let issued: Vec<&Value> = all
        .iter()
        .filter(|e| e["event"] == "agent.credential.issued" && e["credential_type"] == "database")
        .collect();
    assert_eq!(issued.len(), 2);
    assert_eq!(issued[0]["trace_id"], "task-42.step-1");
    assert_eq!(issued[0]["ttl_seconds"], 2);
    assert_eq!(issued[1]["trace_id"], generated.as_str());
    assert_eq!(issued[1]["ttl_seconds"], 300);
    assert!(!std::fs::read_to_string(&log).unwrap().contains(&agent));
    pg.cleanup().await;
}

/// Many revocations of one lease at once (and the worker, which sees a marked lease as
/// due at once) revoke it once: one `revoked` event, with the operator's reason.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_revocations_of_one_lease_log_one_revoked_event() {
    let srv = TestServer::start().await;
    let log = enable_file_audit(&srv).await;
    let pg = PgScratch::new().await;
    pg.setup(&srv, "database", json!({})).await;
    for _ in 0..5 {
        let (s, b) = srv
            .root("GET", &format!("database/creds/{}", pg.role), None)
            .await;
        assert_eq!(s, 200, "{b}");
        let lease = b["lease_id"].as_str().unwrap().to_owned();
        let user = b["data"]["username"].as_str().unwrap().to_owned();
        let mut tasks = Vec::new();
        for _ in 0..6 {
            let url = format!("{}/v1/sys/leases/revoke", srv.url());
            let (token, lease) = (srv.root_token.clone(), lease.clone());
            tasks.push(tokio::spawn(async move {
                let r = reqwest::Client::new()
                    .put(url)
                    .header("X-Vault-Token", token)
                    .json(&json!({ "lease_id": lease }))
                    .send()
                    .await
                    .unwrap();
                let status = r.status().as_u16();
                (status, r.text().await.unwrap())
            }));
        }
        for t in tasks {
            let (status, body) = t.await.unwrap();
            assert_eq!(status, 204, "{body}");
        }
        assert!(!pg.role_exists(&user).await);
        // Let the worker have its tick too.
        tokio::time::sleep(Duration::from_millis(600)).await;
        let revoked: Vec<Value> = events(&log)
            .into_iter()
            .filter(|e| e["lease_id"] == lease.as_str() && e["event"] != "agent.credential.issued")
            .collect();
        assert_eq!(revoked.len(), 1, "{revoked:?}");
        assert_eq!(revoked[0]["event"], "agent.credential.revoked");
        assert_eq!(revoked[0]["reason"], "operator");
    }
    pg.cleanup().await;
}
