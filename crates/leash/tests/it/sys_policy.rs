//! `sys/policy`, `sys/policies/acl`, `sys/capabilities-self`: policy CRUD and list
//! shapes, HCL errors, the built-ins, and policies behaving as written (the seed policy
//! of issue 2, Vault's precedence, parameter constraints).

use leash_testkit::TestServer;
use serde_json::{Value, json};

use crate::{SEED_POLICY, error, sorted};

/// `sys/capabilities-self` for one path, as the token sees it.
async fn caps(srv: &TestServer, token: &str, path: &str) -> Vec<String> {
    let (s, b) = srv
        .call(
            "POST",
            "sys/capabilities-self",
            Some(token),
            Some(json!({ "paths": [path] })),
        )
        .await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["data"][path], b["data"]["capabilities"], "{b}");
    sorted(&b["data"][path])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seed_policy_allows_exactly_what_it_says() {
    let srv = TestServer::start().await;
    srv.write_policy("agent", SEED_POLICY).await;
    let (s, b) = srv
        .root(
            "POST",
            "secret/data/agents/config/x",
            Some(json!({"data": {"model": "small"}})),
        )
        .await;
    assert_eq!(s, 200, "{b}");
    let (s, _) = srv
        .root(
            "POST",
            "secret/data/other",
            Some(json!({"data": {"k": "v"}})),
        )
        .await;
    assert_eq!(s, 200);
    let t = srv.token_with(&["agent"]).await;

    let (s, b) = srv
        .call("GET", "secret/data/agents/config/x", Some(&t), None)
        .await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["data"]["data"]["model"], "small");

    let (s, b) = srv
        .call(
            "POST",
            "secret/data/agents/config/x",
            Some(&t),
            Some(json!({"data": {"model": "huge"}})),
        )
        .await;
    assert_eq!(s, 403, "{b}");
    assert_eq!(b, json!({"errors": ["permission denied"]}));
    let (s, b) = srv
        .call(
            "POST",
            "secret/data/agents/config/new",
            Some(&t),
            Some(json!({"data": {"a": "b"}})),
        )
        .await;
    assert_eq!(s, 403, "creating under the read-only prefix: {b}");
    let (s, _) = srv.call("GET", "secret/data/other", Some(&t), None).await;
    assert_eq!(s, 403);
    let (s, _) = srv
        .call("DELETE", "secret/data/agents/config/x", Some(&t), None)
        .await;
    assert_eq!(s, 403);
    let (s, _) = srv.call("LIST", "secret/metadata/", Some(&t), None).await;
    assert_eq!(s, 403);

    // From the default policy, which `path "*"` does not override.
    let (s, b) = srv
        .call("GET", "auth/token/lookup-self", Some(&t), None)
        .await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(sorted(&b["data"]["policies"]), ["agent", "default"]);
    let (s, b) = srv
        .call("POST", "auth/token/renew-self", Some(&t), Some(json!({})))
        .await;
    assert_eq!(s, 200, "{b}");
    assert!(b["auth"]["lease_duration"].as_u64().unwrap() > 0, "{b}");

    for (m, p) in [
        ("GET", "sys/policy"),
        ("PUT", "sys/policy/agent"),
        ("GET", "sys/mounts"),
        ("GET", "sys/audit"),
        ("POST", "auth/token/create"),
    ] {
        let (s, b) = srv.call(m, p, Some(&t), Some(json!({"policy": "x"}))).await;
        assert_eq!(s, 403, "{m} {p}: {b}");
    }
    // Still readable after all those denials (nothing was spent or changed).
    let (s, _) = srv
        .call("GET", "secret/data/agents/config/x", Some(&t), None)
        .await;
    assert_eq!(s, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seed_policy_capabilities_per_path() {
    let srv = TestServer::start().await;
    srv.write_policy("agent", SEED_POLICY).await;
    let t = srv.token_with(&["agent"]).await;
    for (path, want) in [
        ("database/creds/agent-readonly", vec!["read"]),
        ("secret/data/agents/config/x", vec!["read"]),
        ("secret/data/agents/config/a/b", vec!["read"]),
        ("auth/token/renew-self", vec!["update"]),
        ("auth/token/lookup-self", vec!["read"]),
        ("sys/capabilities-self", vec!["update"]),
        ("secret/data/other", vec!["deny"]),
        ("secret/data/agents/config", vec!["deny"]),
        ("database/creds/agent-admin", vec!["deny"]),
        ("sys/policy", vec!["deny"]),
    ] {
        assert_eq!(caps(&srv, &t, path).await, want, "{path}");
    }

    // Several paths at once: one key per path, no "capabilities" key, top-level copy.
    let (s, b) = srv
        .call(
            "POST",
            "sys/capabilities-self",
            Some(&t),
            Some(json!({"paths": ["secret/data/agents/config/x", "secret/data/other"]})),
        )
        .await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["data"]["secret/data/agents/config/x"], json!(["read"]));
    assert_eq!(b["data"]["secret/data/other"], json!(["deny"]));
    assert_eq!(
        b["secret/data/other"],
        json!(["deny"]),
        "top-level copy: {b}"
    );

    // Root sees "root".
    assert_eq!(
        caps(&srv, &srv.root_token, "anything/at/all").await,
        ["root"]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sys_policy_crud_and_list_shapes() {
    let srv = TestServer::start().await;
    let hcl = "path \"secret/data/a/*\" {\n  capabilities = [\"read\"]\n}\n";
    let (s, b) = srv
        .root("PUT", "sys/policy/Reader", Some(json!({ "policy": hcl })))
        .await;
    assert_eq!(s, 204, "{b}");
    assert_eq!(b, Value::Null, "204 has no body");

    // Names are lower-cased; the text comes back verbatim; data is copied to the top.
    let (s, b) = srv.root("GET", "sys/policy/reader", None).await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["data"]["name"], "reader");
    assert_eq!(b["data"]["rules"], hcl);
    assert_eq!(b["name"], "reader");
    assert_eq!(b["rules"], hcl);

    let (s, b) = srv.root("GET", "sys/policy", None).await;
    assert_eq!(s, 200, "{b}");
    for key in ["keys", "policies"] {
        let names = sorted(&b["data"][key]);
        assert_eq!(names, ["default", "reader", "root"], "{key}: {b}");
        assert_eq!(b[key], b["data"][key], "top-level copy of {key}");
    }
    let (s, b) = srv.root("LIST", "sys/policy", None).await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(sorted(&b["data"]["keys"]), ["default", "reader", "root"]);

    // The legacy `rules` field is accepted.
    let (s, b) = srv
        .root("PUT", "sys/policy/legacy", Some(json!({ "rules": hcl })))
        .await;
    assert_eq!(s, 204, "{b}");

    // JSON policies load too.
    let json_policy = json!({"path": {"secret/data/j/*": {"capabilities": ["read", "list"]}}});
    let (s, b) = srv
        .root(
            "PUT",
            "sys/policy/jsonpol",
            Some(json!({ "policy": json_policy.to_string() })),
        )
        .await;
    assert_eq!(s, 204, "{b}");
    let t = srv.token_with(&["jsonpol"]).await;
    let (s, b) = srv
        .call(
            "POST",
            "sys/capabilities-self",
            Some(&t),
            Some(json!({"paths": ["secret/data/j/x"]})),
        )
        .await;
    assert_eq!(s, 200);
    assert_eq!(b["data"]["capabilities"], json!(["list", "read"]));

    let (s, b) = srv.root("DELETE", "sys/policy/reader", None).await;
    assert_eq!(s, 204, "{b}");
    let (s, b) = srv.root("GET", "sys/policy/reader", None).await;
    assert_eq!(s, 404);
    assert_eq!(
        b,
        json!({"errors": ["no value found at sys/policy/reader"]})
    );
    // Deleting what does not exist succeeds, as in Vault.
    let (s, _) = srv.root("DELETE", "sys/policy/reader", None).await;
    assert_eq!(s, 204);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn policies_acl_crud_and_list_shapes() {
    let srv = TestServer::start().await;
    let hcl = r#"path "secret/data/b" { capabilities = ["read"] }"#;
    let (s, b) = srv
        .root(
            "PUT",
            "sys/policies/acl/beta",
            Some(json!({ "policy": hcl })),
        )
        .await;
    assert_eq!(s, 204, "{b}");
    let (s, b) = srv.root("GET", "sys/policies/acl/beta", None).await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["data"], json!({"name": "beta", "policy": hcl}));
    assert!(b.get("policy").is_none(), "no top-level copy here: {b}");

    let (s, b) = srv.root("LIST", "sys/policies/acl", None).await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(sorted(&b["data"]["keys"]), ["beta", "default", "root"]);
    assert!(b.get("keys").is_none(), "no top-level copy here: {b}");
    let (s, b) = srv.root("GET", "sys/policies/acl?list=true", None).await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(sorted(&b["data"]["keys"]), ["beta", "default", "root"]);

    // Both APIs see the same policies.
    let (s, b) = srv.root("GET", "sys/policy/beta", None).await;
    assert_eq!(s, 200);
    assert_eq!(b["rules"], hcl);

    let (s, _) = srv.root("DELETE", "sys/policies/acl/beta", None).await;
    assert_eq!(s, 204);
    let (s, b) = srv.root("GET", "sys/policies/acl/beta", None).await;
    assert_eq!(s, 404, "{b}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_hcl_is_a_400_naming_the_line_and_stores_nothing() {
    let srv = TestServer::start().await;
    for (text, line) in [
        // Unclosed list: a syntax error.
        ("path \"secret/*\" {\n  capabilities = [\"read\"\n}\n", None),
        // An unknown capability on line 3.
        (
            "# comment\npath \"secret/*\" {\n  capabilities = [\"reed\"]\n}\n",
            Some(3),
        ),
        // An unknown key on line 2.
        (
            "path \"secret/*\" {\n  capabilitez = [\"read\"]\n}\n",
            Some(2),
        ),
    ] {
        for path in ["sys/policy/broken", "sys/policies/acl/broken"] {
            let (s, b) = srv.root("PUT", path, Some(json!({ "policy": text }))).await;
            assert_eq!(s, 400, "{text:?}: {b}");
            let msg = error(&b);
            assert!(msg.contains("line"), "{msg}");
            if let Some(l) = line {
                assert!(msg.contains(&format!("line {l}")), "{msg}");
            }
            let (s, _) = srv.root("GET", "sys/policy/broken", None).await;
            assert_eq!(s, 404, "nothing stored after {text:?}");
        }
    }
    // An empty policy is refused too.
    let (s, b) = srv
        .root("PUT", "sys/policy/empty", Some(json!({ "policy": "" })))
        .await;
    assert_eq!(s, 400, "{b}");
    // Names that could smuggle a path are refused.
    let (s, b) = srv
        .root(
            "PUT",
            "sys/policy/a%20b",
            Some(json!({ "policy": SEED_POLICY })),
        )
        .await;
    assert_eq!(s, 400, "{b}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn root_is_immutable_and_default_undeletable() {
    let srv = TestServer::start().await;
    let (s, b) = srv
        .root(
            "PUT",
            "sys/policy/root",
            Some(json!({ "policy": SEED_POLICY })),
        )
        .await;
    assert_eq!(s, 400, "{b}");
    assert!(error(&b).contains("root"), "{b}");
    let (s, b) = srv.root("DELETE", "sys/policy/root", None).await;
    assert_eq!(s, 400, "{b}");
    let (s, b) = srv.root("DELETE", "sys/policies/acl/root", None).await;
    assert_eq!(s, 400, "{b}");
    let (s, b) = srv.root("DELETE", "sys/policy/default", None).await;
    assert_eq!(s, 400, "{b}");
    assert!(error(&b).contains("default"), "{b}");
    let (s, b) = srv.root("DELETE", "sys/policies/acl/default", None).await;
    assert_eq!(s, 400, "{b}");
    let (s, b) = srv.root("GET", "sys/policy/default", None).await;
    assert_eq!(s, 200, "{b}");
    assert!(
        b["rules"]
            .as_str()
            .unwrap()
            .contains("auth/token/lookup-self"),
        "{b}"
    );
    // A token without root stays without root: "root" in a policy list is refused.
    let t = srv.token_with(&["default"]).await;
    let (s, b) = srv
        .call(
            "POST",
            "auth/token/create",
            Some(&t),
            Some(json!({"policies": ["root"]})),
        )
        .await;
    assert_eq!(s, 403, "default cannot create tokens at all: {b}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn precedence_most_specific_rule_wins() {
    let srv = TestServer::start().await;
    srv.write_policy(
        "prec",
        r#"
path "secret/data/*"            { capabilities = ["create", "read", "update"] }
path "secret/data/ro/*"         { capabilities = ["read"] }
path "secret/data/private/*"    { capabilities = ["deny"] }
path "secret/data/exact/*"      { capabilities = ["read"] }
path "secret/data/exact/one"    { capabilities = ["deny"] }
path "secret/data/+/config"     { capabilities = ["read", "update", "create"] }
path "secret/data/team/*"       { capabilities = ["deny"] }
path "secret/data/plus/+/leaf"  { capabilities = ["read"] }
path "secret/data/plus/a/*"     { capabilities = ["update"] }
"#,
    )
    .await;
    let t = srv.token_with(&["prec"]).await;
    for (path, want) in [
        // Broad glob.
        ("secret/data/anything", vec!["create", "read", "update"]),
        // A longer glob takes rights away (rules with different paths never merge).
        ("secret/data/ro/x", vec!["read"]),
        ("secret/data/private/x", vec!["deny"]),
        // An exact rule beats any glob.
        ("secret/data/exact/one", vec!["deny"]),
        ("secret/data/exact/two", vec!["read"]),
        // `+` matches one segment; a wildcard that occurs later is more specific.
        ("secret/data/svc/config", vec!["create", "read", "update"]),
        ("secret/data/team/config", vec!["deny"]),
        ("secret/data/plus/b/leaf", vec!["read"]),
        ("secret/data/plus/a/leaf", vec!["update"]),
        // `+` never spans two segments: falls back to the broad glob.
        ("secret/data/x/y/config", vec!["create", "read", "update"]),
    ] {
        assert_eq!(caps(&srv, &t, path).await, want, "{path}");
    }
    // And the decisions hold for real requests, not only for capabilities-self.
    let put = |p: &'static str| {
        let t = t.clone();
        let srv = &srv;
        async move {
            srv.call("POST", p, Some(&t), Some(json!({"data": {"k": "v"}})))
                .await
                .0
        }
    };
    assert_eq!(put("secret/data/anything").await, 200);
    assert_eq!(put("secret/data/ro/x").await, 403);
    assert_eq!(put("secret/data/private/x").await, 403);
    assert_eq!(put("secret/data/svc/config").await, 200);
    assert_eq!(put("secret/data/team/config").await, 403);
    let (s, _) = srv
        .call("GET", "secret/data/svc/config", Some(&t), None)
        .await;
    assert_eq!(s, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn identical_paths_merge_across_policies_and_deny_wins() {
    let srv = TestServer::start().await;
    srv.write_policy("r", r#"path "secret/data/m/*" { capabilities = ["read"] }"#)
        .await;
    srv.write_policy(
        "w",
        r#"path "secret/data/m/*" { capabilities = ["create", "update"] }"#,
    )
    .await;
    srv.write_policy("d", r#"path "secret/data/m/*" { capabilities = ["deny"] }"#)
        .await;
    let rw = srv.token_with(&["r", "w"]).await;
    assert_eq!(
        caps(&srv, &rw, "secret/data/m/x").await,
        ["create", "read", "update"]
    );
    let rwd = srv.token_with(&["r", "w", "d"]).await;
    assert_eq!(caps(&srv, &rwd, "secret/data/m/x").await, ["deny"]);
    let (s, _) = srv.call("GET", "secret/data/m/x", Some(&rwd), None).await;
    assert_eq!(s, 403);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn policy_changes_apply_to_live_tokens() {
    let srv = TestServer::start().await;
    srv.write_policy(
        "p",
        r#"path "secret/data/live" { capabilities = ["read"] }"#,
    )
    .await;
    srv.root(
        "POST",
        "secret/data/live",
        Some(json!({"data": {"a": "b"}})),
    )
    .await;
    let t = srv.token_with(&["p"]).await;
    let (s, _) = srv.call("GET", "secret/data/live", Some(&t), None).await;
    assert_eq!(s, 200);
    srv.write_policy(
        "p",
        r#"path "secret/data/other" { capabilities = ["read"] }"#,
    )
    .await;
    let (s, _) = srv.call("GET", "secret/data/live", Some(&t), None).await;
    assert_eq!(s, 403, "the rewritten policy applies at once");
    let (s, _) = srv.root("DELETE", "sys/policy/p", None).await;
    assert_eq!(s, 204);
    // A token whose policy is gone keeps only `default`.
    assert_eq!(caps(&srv, &t, "secret/data/other").await, ["deny"]);
    let (s, _) = srv
        .call("GET", "auth/token/lookup-self", Some(&t), None)
        .await;
    assert_eq!(s, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn allowed_denied_and_required_parameters() {
    let srv = TestServer::start().await;
    let (s, b) = srv
        .root("POST", "sys/mounts/kv1", Some(json!({"type": "kv"})))
        .await;
    assert_eq!(s, 204, "{b}");
    srv.write_policy(
        "params",
        r#"
path "kv1/allowed" {
  capabilities = ["create", "update"]
  allowed_parameters = {
    "color" = ["red", "blue"]
    "size"  = []
  }
}
path "kv1/denied" {
  capabilities = ["create", "update"]
  denied_parameters = {
    "secret" = []
    "color"  = ["green"]
  }
}
path "kv1/required" {
  capabilities = ["create", "update"]
  required_parameters = ["owner"]
}
"#,
    )
    .await;
    let t = srv.token_with(&["params"]).await;
    let write = |path: &'static str, body: Value| {
        let t = t.clone();
        let srv = &srv;
        async move { srv.call("POST", path, Some(&t), Some(body)).await }
    };
    for (path, body, want) in [
        ("kv1/allowed", json!({"color": "red", "size": "9"}), 204),
        ("kv1/allowed", json!({"color": "blue"}), 204),
        ("kv1/allowed", json!({"color": "green"}), 403),
        ("kv1/allowed", json!({"shape": "round"}), 403),
        ("kv1/allowed", json!({"size": "any value at all"}), 204),
        ("kv1/denied", json!({"anything": "else"}), 204),
        ("kv1/denied", json!({"secret": "x"}), 403),
        ("kv1/denied", json!({"color": "green"}), 403),
        ("kv1/denied", json!({"color": "red"}), 204),
        ("kv1/required", json!({"x": "y"}), 403),
        ("kv1/required", json!({"owner": "me", "x": "y"}), 204),
    ] {
        let (s, b) = write(path, body.clone()).await;
        assert_eq!(s, want, "{path} {body}: {b}");
        if want == 403 {
            assert_eq!(b, json!({"errors": ["permission denied"]}));
        }
    }
    // A denied write changed nothing.
    let (s, b) = srv.root("GET", "kv1/denied", None).await;
    assert_eq!(s, 200);
    assert_eq!(b["data"], json!({"color": "red"}));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn capabilities_of_another_token_need_sudo() {
    let srv = TestServer::start().await;
    srv.write_policy("agent", SEED_POLICY).await;
    let agent = srv.token_with(&["agent"]).await;
    let (s, b) = srv
        .root(
            "POST",
            "sys/capabilities",
            Some(json!({"token": agent, "paths": ["secret/data/agents/config/a", "sys/mounts"]})),
        )
        .await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["data"]["secret/data/agents/config/a"], json!(["read"]));
    assert_eq!(b["data"]["sys/mounts"], json!(["deny"]));
    assert_eq!(b["sys/mounts"], json!(["deny"]), "top-level copy");
    // The agent may ask about itself, not about others.
    let (s, _) = srv
        .call(
            "POST",
            "sys/capabilities",
            Some(&agent),
            Some(json!({"token": agent, "paths": ["x"]})),
        )
        .await;
    assert_eq!(s, 403);
    // Paths are case-sensitive in policies too.
    assert_eq!(
        caps(&srv, &agent, "secret/data/AGENTS/config/x").await,
        ["deny"]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_last_policy_write_wins_under_concurrent_requests() {
    let srv = TestServer::start().await;
    srv.root(
        "POST",
        "secret/data/live",
        Some(json!({"data": {"a": "b"}})),
    )
    .await;
    let allow = r#"path "secret/data/live" { capabilities = ["read"] }"#;
    let deny = r#"path "secret/data/other" { capabilities = ["read"] }"#;
    srv.write_policy("flip", allow).await;
    let t = srv.token_with(&["flip"]).await;
    let stop = std::sync::atomic::AtomicBool::new(false);
    let reader = async {
        while !stop.load(std::sync::atomic::Ordering::SeqCst) {
            let (s, _) = srv.call("GET", "secret/data/live", Some(&t), None).await;
            assert!(s == 200 || s == 403, "{s}");
        }
    };
    let writer = async {
        for i in 0..40 {
            srv.write_policy("flip", if i % 2 == 0 { deny } else { allow })
                .await;
        }
        srv.write_policy("flip", deny).await;
        stop.store(true, std::sync::atomic::Ordering::SeqCst);
    };
    tokio::join!(reader, writer);
    // A compiled ACL from an older text must not outlive the last write.
    for _ in 0..5 {
        let (s, _) = srv.call("GET", "secret/data/live", Some(&t), None).await;
        assert_eq!(s, 403);
    }
}

/// A `control_group` path is never served without an approval: until the approval gate
/// exists the answer is a 403 that says an approval is required (regression: the
/// policy used to grant the path as if the stanza were not there).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn control_group_paths_need_an_approval() {
    let srv = TestServer::start().await;
    let (s, _) = srv
        .root(
            "POST",
            "secret/data/prod/db",
            Some(json!({"data": {"k": "v"}})),
        )
        .await;
    assert_eq!(s, 200);
    srv.write_policy(
        "guarded",
        r#"
        path "secret/data/prod/*" {
          capabilities = ["read"]
          control_group = {
            ttl = "15m"
            factor "dba" {
              identity {
                group_names = ["dba"]
                approvals   = 1
              }
            }
          }
        }
        path "secret/data/dev/*" { capabilities = ["read"] }
        "#,
    )
    .await;
    let t = srv.token_with(&["guarded"]).await;
    let (s, b) = srv.call("GET", "secret/data/prod/db", Some(&t), None).await;
    assert_eq!(s, 403, "{b}");
    let msgs = error(&b);
    assert!(msgs.contains("requires an approval"), "{b}");
    assert!(!b.to_string().contains("\"v\""), "no data leaves: {b}");
    let (s, _) = srv
        .call("GET", "secret/data/dev/none", Some(&t), None)
        .await;
    assert_eq!(s, 404, "uncontrolled paths of the same policy still work");
}
