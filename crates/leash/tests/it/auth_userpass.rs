//! `auth/userpass/*` over HTTP: users as Vault clients manage them, logins that yield
//! exactly the user's policies and TTLs with a stable entity id, one answer for a
//! wrong password and an unknown user, and passwords that exist only as Argon2id
//! hashes (never in reads, audit entries or storage).

use leash_testkit::TestServer;
use serde_json::{Value, json};

use crate::{error, sorted};

const INVALID: &str = "invalid username or password";

const APPROVER_POLICY: &str = r#"
path "sys/control-group/*" { capabilities = ["read", "update"] }
path "auth/token/create"   { capabilities = ["update"] }
"#;

async fn enable(srv: &TestServer, path: &str) {
    let (s, b) = srv
        .root(
            "POST",
            &format!("sys/auth/{path}"),
            Some(json!({"type": "userpass", "description": "approvers"})),
        )
        .await;
    assert_eq!(s, 204, "enable userpass at {path}: {b}");
}

async fn user(srv: &TestServer, mount: &str, name: &str, body: Value) {
    let (s, b) = srv
        .root("POST", &format!("auth/{mount}/users/{name}"), Some(body))
        .await;
    assert_eq!(s, 204, "user write: {b}");
}

async fn login(srv: &TestServer, mount: &str, name: &str, password: &str) -> (u16, Value) {
    srv.call(
        "POST",
        &format!("auth/{mount}/login/{name}"),
        None,
        Some(json!({ "password": password })),
    )
    .await
}

async fn login_ok(srv: &TestServer, mount: &str, name: &str, password: &str) -> Value {
    let (s, b) = login(srv, mount, name, password).await;
    assert_eq!(s, 200, "login {name}: {b}");
    b["auth"].clone()
}

async fn lookup_self(srv: &TestServer, token: &str) -> Value {
    let (s, b) = srv
        .call("GET", "auth/token/lookup-self", Some(token), None)
        .await;
    assert_eq!(s, 200, "lookup-self: {b}");
    b["data"].clone()
}

fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack
        .windows(needle.len())
        .any(|w| w == needle.as_bytes())
}

#[tokio::test]
async fn userpass_users_crud_and_reads_never_return_the_password() {
    let srv = TestServer::start().await;
    enable(&srv, "userpass").await;
    let (_, b) = srv.root("GET", "sys/auth", None).await;
    assert_eq!(b["data"]["userpass/"]["type"], "userpass");

    user(
        &srv,
        "userpass",
        "Alice",
        json!({"password": "correct horse battery", "token_policies": "approver", "token_ttl": "30m"}),
    )
    .await;
    user(
        &srv,
        "userpass",
        "bob",
        json!({"password": "bob-pw", "policies": ["approver"]}),
    )
    .await;
    let (s, b) = srv.root("GET", "auth/userpass/users/alice", None).await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["data"]["token_policies"], json!(["approver"]));
    assert_eq!(b["data"]["policies"], json!(["approver"]));
    assert_eq!(b["data"]["token_ttl"], 1800);
    assert_eq!(b["data"]["token_type"], "default");
    let text = b.to_string();
    assert!(
        !text.contains("correct horse") && !text.contains("argon2") && !text.contains("password"),
        "{text}"
    );
    let (s, b) = srv.root("LIST", "auth/userpass/users", None).await;
    assert_eq!(
        (s, b["data"]["keys"].clone()),
        (200, json!(["alice", "bob"]))
    );

    // Password and policy changes.
    let (s, b) = srv
        .root(
            "POST",
            "auth/userpass/users/alice/password",
            Some(json!({"password": "a new passphrase"})),
        )
        .await;
    assert_eq!(s, 204, "{b}");
    let (s, b) = login(&srv, "userpass", "alice", "correct horse battery").await;
    assert_eq!((s, error(&b)), (400, INVALID.to_owned()));
    let (s, b) = srv
        .root(
            "POST",
            "auth/userpass/users/alice/policies",
            Some(json!({"token_policies": ["approver", "auditor"]})),
        )
        .await;
    assert_eq!(s, 204, "{b}");
    let auth = login_ok(&srv, "userpass", "alice", "a new passphrase").await;
    assert_eq!(
        sorted(&auth["token_policies"]),
        vec!["approver", "auditor", "default"]
    );

    // Delete: gone from reads, lists and logins.
    let (s, _) = srv.root("DELETE", "auth/userpass/users/alice", None).await;
    assert_eq!(s, 204);
    let (s, _) = srv.root("GET", "auth/userpass/users/alice", None).await;
    assert_eq!(s, 404);
    let (_, b) = srv.root("LIST", "auth/userpass/users", None).await;
    assert_eq!(b["data"]["keys"], json!(["bob"]));
    let (s, b) = login(&srv, "userpass", "alice", "a new passphrase").await;
    assert_eq!((s, error(&b)), (400, INVALID.to_owned()));
}

#[tokio::test]
async fn userpass_login_yields_exactly_the_users_policies_and_ttls() {
    let srv = TestServer::start().await;
    srv.write_policy("approver", APPROVER_POLICY).await;
    enable(&srv, "userpass").await;
    user(
        &srv,
        "userpass",
        "alice",
        json!({"password": "pw-alice", "token_policies": "approver", "token_ttl": "30m", "token_max_ttl": "2h"}),
    )
    .await;
    let (s, b) = login(&srv, "userpass", "alice", "pw-alice").await;
    assert_eq!(s, 200, "{b}");
    let auth = &b["auth"];
    assert_eq!(sorted(&auth["policies"]), vec!["approver", "default"]);
    assert_eq!(auth["lease_duration"], 1800);
    assert_eq!(auth["orphan"], true);
    assert_eq!(auth["metadata"]["username"], "alice");
    assert!(!b.to_string().contains("pw-alice"));
    let token = auth["client_token"].as_str().unwrap();
    let d = lookup_self(&srv, token).await;
    assert_eq!(sorted(&d["policies"]), vec!["approver", "default"]);
    assert_eq!(d["creation_ttl"], 1800);
    assert_eq!(d["explicit_max_ttl"], 7200);
    assert_eq!(d["display_name"], "userpass-alice");
    assert_eq!(d["meta"]["username"], "alice");
    assert_eq!(d["path"], "auth/userpass/login/alice");
    assert_eq!(d["entity_id"], auth["entity_id"]);
    // User names are case-insensitive, as in Vault.
    let again = login_ok(&srv, "userpass", "ALICE", "pw-alice").await;
    assert_eq!(again["metadata"]["username"], "alice");
}

#[tokio::test]
async fn userpass_entity_ids_are_stable_per_user_and_inherited_by_children() {
    let srv = TestServer::start().await;
    srv.write_policy("approver", APPROVER_POLICY).await;
    enable(&srv, "userpass").await;
    enable(&srv, "people").await;
    for mount in ["userpass", "people"] {
        user(
            &srv,
            mount,
            "alice",
            json!({"password": "pw-a", "token_policies": "approver"}),
        )
        .await;
    }
    user(
        &srv,
        "userpass",
        "bob",
        json!({"password": "pw-b", "token_policies": "approver"}),
    )
    .await;
    let a1 = login_ok(&srv, "userpass", "alice", "pw-a").await;
    let a2 = login_ok(&srv, "userpass", "alice", "pw-a").await;
    let b = login_ok(&srv, "userpass", "bob", "pw-b").await;
    let elsewhere = login_ok(&srv, "people", "alice", "pw-a").await;
    assert!(a1["entity_id"].as_str().is_some_and(|e| e.len() == 36));
    assert_eq!(a1["entity_id"], a2["entity_id"]);
    assert_ne!(a1["entity_id"], b["entity_id"]);
    assert_ne!(
        a1["entity_id"], elsewhere["entity_id"],
        "another mount, another identity"
    );

    let (s, c) = srv
        .call(
            "POST",
            "auth/token/create",
            a1["client_token"].as_str(),
            Some(json!({"policies": ["approver"]})),
        )
        .await;
    assert_eq!(s, 200, "{c}");
    let child = lookup_self(&srv, c["auth"]["client_token"].as_str().unwrap()).await;
    assert_eq!(child["entity_id"], a1["entity_id"]);
}

#[tokio::test]
async fn userpass_wrong_password_and_unknown_user_get_the_same_answer() {
    let srv = TestServer::start().await;
    enable(&srv, "userpass").await;
    user(&srv, "userpass", "alice", json!({"password": "pw-alice"})).await;
    let (s1, wrong) = login(&srv, "userpass", "alice", "pw-bob").await;
    let (s2, unknown) = login(&srv, "userpass", "mallory", "pw-alice").await;
    assert_eq!((s1, s2), (400, 400));
    assert_eq!(wrong, unknown);
    assert_eq!(error(&wrong), INVALID);
    // Failures are counted per user (the core's login-failure metric).
    let failures = srv.core.login_failures();
    assert!(
        failures.contains(&(("auth/userpass/".to_owned(), "alice".to_owned()), 1)),
        "{failures:?}"
    );
    let (s, b) = srv
        .call("POST", "auth/userpass/login/alice", None, Some(json!({})))
        .await;
    assert_eq!((s, error(&b)), (400, "missing password".to_owned()));
    let (s, b) = srv
        .call(
            "POST",
            "auth/userpass/login/alice",
            None,
            Some(json!({"password": ["pw-alice"]})),
        )
        .await;
    assert_eq!(s, 400, "{b}");
    assert!(error(&b).contains("password"), "{b}");
    let long = "p".repeat(5000);
    let (s, b) = login(&srv, "userpass", "alice", &long).await;
    assert_eq!((s, error(&b)), (400, INVALID.to_owned()));
}

#[tokio::test]
async fn userpass_bad_input_gets_a_clear_400_and_changes_nothing() {
    let srv = TestServer::start().await;
    enable(&srv, "userpass").await;
    for (path, body, want) in [
        (
            "users/carol",
            json!({}),
            "missing required field \"password\"",
        ),
        ("users/carol", json!({"password": ""}), "must not be empty"),
        ("users/carol", json!({"password": 12}), "expected a string"),
        (
            "users/carol",
            json!({"password": "x".repeat(2000)}),
            "longer than 1024",
        ),
        (
            "users/carol",
            json!({"password": "p", "token_ttl": "2h", "token_max_ttl": "1h"}),
            "token_ttl",
        ),
        (
            "users/carol",
            json!({"password": "p", "token_bound_cidrs": "1.2.3.4/99"}),
            "token_bound_cidrs",
        ),
        (
            "users/-carol",
            json!({"password": "p"}),
            "invalid user name",
        ),
        (
            "users/carol%20x",
            json!({"password": "p"}),
            "invalid user name",
        ),
        (
            "users/nobody/password",
            json!({"password": "p"}),
            "no user named",
        ),
        (
            "users/nobody/policies",
            json!({"policies": "p"}),
            "no user named",
        ),
    ] {
        let (s, b) = srv
            .root("POST", &format!("auth/userpass/{path}"), Some(body.clone()))
            .await;
        assert_eq!(s, 400, "{path} {body}: {b}");
        assert!(error(&b).contains(want), "{path} {body}: {b}");
    }
    let (s, _) = srv.root("LIST", "auth/userpass/users", None).await;
    assert_eq!(s, 404, "a refused write created a user");
    // Managing users needs a token; logging in does not.
    let (s, _) = srv
        .call(
            "POST",
            "auth/userpass/users/eve",
            None,
            Some(json!({"password": "p"})),
        )
        .await;
    assert_eq!(s, 403);
}

#[tokio::test]
async fn userpass_passwords_never_reach_the_audit_log_or_storage_in_clear() {
    let srv = TestServer::start().await;
    let log = srv.dir.join("audit-userpass.log");
    let (s, b) = srv
        .root(
            "PUT",
            "sys/audit/file",
            Some(json!({"type": "file", "options": {"file_path": log.display().to_string()}})),
        )
        .await;
    assert_eq!(s, 204, "{b}");
    enable(&srv, "userpass").await;
    let first = "first-password-for-the-audit-test";
    let second = "second-password-for-the-audit-test";
    let wrong = "wrong-password-for-the-audit-test";
    user(&srv, "userpass", "alice", json!({"password": first})).await;
    login_ok(&srv, "userpass", "alice", first).await;
    let (s, _) = login(&srv, "userpass", "alice", wrong).await;
    assert_eq!(s, 400);
    let (s, _) = srv
        .root(
            "POST",
            "auth/userpass/users/alice/password",
            Some(json!({ "password": second })),
        )
        .await;
    assert_eq!(s, 204);
    login_ok(&srv, "userpass", "alice", second).await;

    let audit = std::fs::read(&log).unwrap();
    assert!(
        contains(&audit, "auth/userpass/login/alice"),
        "logins are audited"
    );
    for pw in [first, second, wrong] {
        assert!(
            !contains(&audit, pw),
            "a password is in the audit log in clear"
        );
    }
    let (_, b) = srv.root("GET", "sys/auth", None).await;
    let ns = format!("mount/{}", b["data"]["userpass/"]["uuid"].as_str().unwrap());
    let keys = srv.storage.list(&ns, "").await.unwrap();
    assert_eq!(keys, vec!["user/alice".to_owned()]);
    let v = srv.storage.get(&ns, &keys[0]).await.unwrap().unwrap();
    assert!(
        contains(&v, "$argon2id$v=19$"),
        "stored as an Argon2id PHC string"
    );
    for pw in [first, second] {
        assert!(!contains(&v, pw), "a password is stored in clear");
    }
}
