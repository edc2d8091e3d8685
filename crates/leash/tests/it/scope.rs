//! Inline scopes on child tokens (issue 17, part 1): a child's effective ACL is its
//! parent's effective ACL ∩ its scope, live, down any depth; a scope can never widen.

use leash_testkit::TestServer;
use serde_json::{Value, json};

use crate::error;

const PARENT: &str = r#"
path "secret/data/agents/*" { capabilities = ["create", "read", "update"] }
path "auth/token/create"    { capabilities = ["update"] }
"#;

async fn secret(srv: &TestServer, name: &str) {
    let (s, b) = srv
        .root(
            "POST",
            &format!("secret/data/agents/{name}"),
            Some(json!({"data": {"k": name}})),
        )
        .await;
    assert_eq!(s, 200, "{b}");
}

async fn child(srv: &TestServer, parent: &str, body: Value) -> (String, Value) {
    let (s, b) = srv
        .call("POST", "auth/token/create", Some(parent), Some(body))
        .await;
    assert_eq!(s, 200, "{b}");
    (b["auth"]["client_token"].as_str().unwrap().to_owned(), b)
}

async fn status(srv: &TestServer, tok: &str, method: &str, path: &str) -> u16 {
    let body = (method != "GET").then(|| json!({"data": {"k": "v"}}));
    srv.call(method, path, Some(tok), body).await.0
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scoped_child_can_do_only_what_both_allow_and_shrinks_with_its_parent() {
    let srv = TestServer::start().await;
    srv.write_policy("orchestrator", PARENT).await;
    for n in ["a/x", "b/x"] {
        secret(&srv, n).await;
    }
    let parent = srv.token_with(&["orchestrator"]).await;
    let scope = r#"
path "secret/data/agents/a/*" { capabilities = ["read", "update", "sudo"] }
path "sys/*"                  { capabilities = ["sudo", "update", "read"] }
path "database/*"             { capabilities = ["read"] }
path "auth/token/create"      { capabilities = ["update"] }
"#;
    let (tok, b) = child(
        &srv,
        &parent,
        json!({"policies": ["orchestrator"], "scope": scope, "ttl": "5m"}),
    )
    .await;
    // The scope's database/* rule grants nothing: the parent has nothing there.
    let warnings = b["warnings"].to_string();
    assert!(warnings.contains("database/*"), "{b}");
    assert!(b["auth"]["lease_duration"].as_u64().unwrap() <= 300);

    assert_eq!(
        status(&srv, &tok, "GET", "secret/data/agents/a/x").await,
        200
    );
    assert_eq!(
        status(&srv, &tok, "POST", "secret/data/agents/a/x").await,
        200
    );
    assert_eq!(
        status(&srv, &tok, "GET", "secret/data/agents/b/x").await,
        403
    );
    assert_eq!(status(&srv, &tok, "PUT", "sys/policy/mine").await, 403);
    assert_eq!(
        status(&srv, &tok, "GET", "sys/policy/orchestrator").await,
        403
    );

    // It says what it is.
    let (s, b) = srv
        .call("GET", "auth/token/lookup-self", Some(&tok), None)
        .await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["data"]["scope"], scope);
    assert_eq!(b["data"]["scope_hash"].as_str().unwrap().len(), 32);
    let (_, b) = srv
        .call(
            "POST",
            "sys/capabilities-self",
            Some(&tok),
            Some(json!({"paths": ["secret/data/agents/a/x", "secret/data/agents/b/x", "sys/policy/x"]})),
        )
        .await;
    assert_eq!(
        b["data"]["secret/data/agents/a/x"],
        json!(["read", "update"]),
        "{b}"
    );
    assert_eq!(b["data"]["secret/data/agents/b/x"], json!(["deny"]), "{b}");
    assert_eq!(b["data"]["sys/policy/x"], json!(["deny"]), "{b}");

    // A grandchild is bounded by both scopes.
    let (grand, _) = child(
        &srv,
        &tok,
        json!({"policies": ["orchestrator"],
               "scope": r#"path "secret/data/agents/*" { capabilities = ["read"] }"#}),
    )
    .await;
    assert_eq!(
        status(&srv, &grand, "GET", "secret/data/agents/a/x").await,
        200
    );
    assert_eq!(
        status(&srv, &grand, "GET", "secret/data/agents/b/x").await,
        403
    );
    assert_eq!(
        status(&srv, &grand, "POST", "secret/data/agents/a/x").await,
        403
    );

    // Live: the parent's policy shrinks, and both descendants shrink at once.
    srv.write_policy(
        "orchestrator",
        r#"path "secret/data/agents/b/*" { capabilities = ["read"] }
path "auth/token/create" { capabilities = ["update"] }"#,
    )
    .await;
    assert_eq!(
        status(&srv, &tok, "GET", "secret/data/agents/a/x").await,
        403
    );
    assert_eq!(
        status(&srv, &grand, "GET", "secret/data/agents/a/x").await,
        403
    );

    // A revoked parent takes its scoped descendants with it.
    let (s, _) = srv
        .call("POST", "auth/token/revoke-self", Some(&parent), None)
        .await;
    assert_eq!(s, 204);
    assert_eq!(
        status(&srv, &grand, "GET", "secret/data/agents/b/x").await,
        403
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scope_through_a_token_role_cannot_exceed_the_parent() {
    let srv = TestServer::start().await;
    srv.write_policy(
        "small",
        r#"path "secret/data/agents/a/*" { capabilities = ["read"] }
path "auth/token/create/*" { capabilities = ["update"] }"#,
    )
    .await;
    srv.write_policy(
        "big",
        r#"path "secret/data/*" { capabilities = ["read", "update"] }"#,
    )
    .await;
    for n in ["a/x", "b/x"] {
        secret(&srv, n).await;
    }
    // A role that hands out a policy the parent does not hold.
    let (s, _) = srv
        .root(
            "POST",
            "auth/token/roles/wide",
            Some(json!({"allowed_policies": ["big"]})),
        )
        .await;
    assert_eq!(s, 204);
    let parent = srv.token_with(&["small"]).await;
    let (s, b) = srv
        .call(
            "POST",
            "auth/token/create/wide",
            Some(&parent),
            Some(json!({"scope": r#"path "secret/*" { capabilities = ["read", "update", "sudo"] }"#})),
        )
        .await;
    assert_eq!(s, 200, "{b}");
    let tok = b["auth"]["client_token"].as_str().unwrap().to_owned();
    assert_eq!(
        status(&srv, &tok, "GET", "secret/data/agents/a/x").await,
        200
    );
    assert_eq!(
        status(&srv, &tok, "GET", "secret/data/agents/b/x").await,
        403
    );
    assert_eq!(
        status(&srv, &tok, "POST", "secret/data/agents/a/x").await,
        403
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_scopes_are_refused_and_the_audit_names_the_delegation() {
    let srv = TestServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("audit.log");
    let (s, _) = srv
        .root(
            "PUT",
            "sys/audit/file",
            Some(json!({"type": "file", "options": {"file_path": log}})),
        )
        .await;
    assert_eq!(s, 204);
    srv.write_policy("orchestrator", PARENT).await;
    secret(&srv, "a/x").await;
    let parent = srv.token_with(&["orchestrator"]).await;
    for bad in [
        json!("path \"a\" { capabilities = "),
        json!(42),
        json!(["x"]),
    ] {
        let (s, b) = srv
            .call(
                "POST",
                "auth/token/create",
                Some(&parent),
                Some(json!({"scope": bad})),
            )
            .await;
        assert_eq!(s, 400, "{bad}: {b}");
        assert!(error(&b).contains("scope"), "{b}");
    }
    // JSON works as well as HCL.
    let (tok, _) = child(
        &srv,
        &parent,
        json!({"scope": {"path": {"secret/data/agents/a/*": {"capabilities": ["read"]}}}}),
    )
    .await;
    assert_eq!(
        status(&srv, &tok, "GET", "secret/data/agents/a/x").await,
        200
    );
    let text = std::fs::read_to_string(&log).unwrap();
    let last: Value = serde_json::from_str(text.lines().last().unwrap()).unwrap();
    assert_eq!(last["request"]["path"], "secret/data/agents/a/x");
    assert_eq!(
        last["auth"]["scope_hash"].as_str().unwrap().len(),
        32,
        "{last}"
    );
    let chain = last["auth"]["delegation_chain"].as_array().unwrap();
    assert_eq!(chain.len(), 1, "{last}");
    assert!(
        chain[0].as_str().unwrap().starts_with("hmac-sha256:"),
        "{last}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_login_can_ask_for_a_narrower_token() {
    let srv = TestServer::start().await;
    let (s, _) = srv
        .root(
            "POST",
            "sys/auth/userpass",
            Some(json!({"type": "userpass"})),
        )
        .await;
    assert_eq!(s, 204);
    srv.write_policy("orchestrator", PARENT).await;
    for n in ["a/x", "b/x"] {
        secret(&srv, n).await;
    }
    let (s, _) = srv
        .root(
            "POST",
            "auth/userpass/users/orch",
            Some(json!({"password": "pw-123456", "token_policies": "orchestrator"})),
        )
        .await;
    assert_eq!(s, 204);
    let (s, b) = srv
        .call(
            "POST",
            "auth/userpass/login/orch",
            None,
            Some(json!({"password": "pw-123456",
                        "scope": r#"path "secret/data/agents/b/*" { capabilities = ["read"] }"#})),
        )
        .await;
    assert_eq!(s, 200, "{b}");
    let tok = b["auth"]["client_token"].as_str().unwrap().to_owned();
    assert_eq!(
        status(&srv, &tok, "GET", "secret/data/agents/b/x").await,
        200
    );
    assert_eq!(
        status(&srv, &tok, "GET", "secret/data/agents/a/x").await,
        403
    );
}
