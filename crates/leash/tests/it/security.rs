//! Regression tests for the escalation paths an outside review found (issue 12): a login
//! that mints root, path spellings that skip the ACL or `sudo`, audit amplification, the
//! login rate limit under concurrency, renewing other tokens' leases, CIDR-bound tokens
//! creating unbound children. Each boundary is tried with several spellings.

use leash_testkit::TestServer;
use serde_json::{Value, json};

use crate::error;

/// The spellings of `root` an attacker may try, as a JSON list or comma string.
fn root_spellings() -> Vec<Value> {
    vec![
        json!(["root"]),
        json!(["Root"]),
        json!(["root "]),
        json!([" ROOT"]),
        json!(["default", "root"]),
        json!("default,root"),
        json!("default, Root "),
    ]
}

/// A token that may manage users, roles and groups of every auth method, and nothing
/// with `sudo`: a careless administrator's helper, or a compromised provisioning agent.
async fn provisioner(srv: &TestServer) -> String {
    srv.write_policy(
        "provisioner",
        r#"
path "auth/userpass/users/*"  { capabilities = ["create", "update", "read"] }
path "auth/approle/role/*"    { capabilities = ["create", "update", "read"] }
path "auth/jwt/role/*"        { capabilities = ["create", "update", "read"] }
path "auth/kubernetes/role/*" { capabilities = ["create", "update", "read"] }
path "auth/token/roles/*"     { capabilities = ["create", "update", "read"] }
path "auth/token/create"      { capabilities = ["update"] }
path "auth/token/create/*"    { capabilities = ["update"] }
path "identity/group*"        { capabilities = ["create", "update", "read"] }
"#,
    )
    .await;
    srv.token_with(&["provisioner"]).await
}

async fn enable_auth(srv: &TestServer, path: &str, kind: &str) {
    let (s, b) = srv
        .root(
            "POST",
            &format!("sys/auth/{path}"),
            Some(json!({"type": kind})),
        )
        .await;
    assert_eq!(s, 204, "{b}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_role_user_or_group_can_hand_out_root_whatever_the_spelling() {
    let srv = TestServer::start().await;
    for (p, k) in [
        ("userpass", "userpass"),
        ("approle", "approle"),
        ("jwt", "jwt"),
        ("kubernetes", "kubernetes"),
    ] {
        enable_auth(&srv, p, k).await;
    }
    let tok = provisioner(&srv).await;
    for spelling in root_spellings() {
        for field in ["token_policies", "policies"] {
            let writes = [
                (
                    "auth/userpass/users/mallory",
                    json!({"password": "pw-123456", field: spelling}),
                ),
                ("auth/approle/role/mallory", json!({ field: spelling })),
                (
                    "auth/jwt/role/mallory",
                    json!({"role_type": "jwt", "user_claim": "sub",
                           "bound_audiences": ["leash"], field: spelling}),
                ),
                (
                    "auth/kubernetes/role/mallory",
                    json!({"bound_service_account_names": ["a"],
                           "bound_service_account_namespaces": ["b"], field: spelling}),
                ),
            ];
            for (path, body) in writes {
                let (s, b) = srv.call("POST", path, Some(&tok), Some(body)).await;
                assert_eq!(s, 400, "{path} {field}={spelling}: {b}");
                assert!(error(&b).contains("root"), "{path}: {b}");
                // Root itself cannot write such a role either: auth methods never mint root.
                let (s, b) = srv
                    .root(
                        "POST",
                        path,
                        Some(json!({"password": "pw-123456", field: spelling,
                        "role_type": "jwt", "user_claim": "sub", "bound_audiences": ["leash"],
                        "bound_service_account_names": ["a"],
                        "bound_service_account_namespaces": ["b"]})),
                    )
                    .await;
                assert_eq!(s, 400, "root writing {path} {field}={spelling}: {b}");
            }
        }
        let (s, b) = srv
            .call(
                "POST",
                "auth/token/roles/mallory",
                Some(&tok),
                Some(json!({"allowed_policies": spelling})),
            )
            .await;
        assert_eq!(s, 400, "token role allowed_policies={spelling}: {b}");
        let (s, b) = srv
            .call(
                "POST",
                "identity/group",
                Some(&tok),
                Some(json!({"name": "evil", "policies": spelling})),
            )
            .await;
        assert_eq!(s, 400, "group policies={spelling}: {b}");
        // A non-root token cannot ask for root directly, however spelled.
        let (s, b) = srv
            .call(
                "POST",
                "auth/token/create",
                Some(&tok),
                Some(json!({"policies": spelling})),
            )
            .await;
        assert_eq!(s, 400, "token create policies={spelling}: {b}");
    }
    // The user that does get created holds what it was given, and its login expires.
    let (s, b) = srv
        .call(
            "POST",
            "auth/userpass/users/alice",
            Some(&tok),
            Some(json!({"password": "pw-123456", "token_policies": "default"})),
        )
        .await;
    assert_eq!(s, 204, "{b}");
    let (s, b) = srv
        .call(
            "POST",
            "auth/userpass/login/alice",
            None,
            Some(json!({"password": "pw-123456"})),
        )
        .await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["auth"]["policies"], json!(["default"]));
    assert!(b["auth"]["lease_duration"].as_u64().unwrap() > 0, "{b}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_a_root_token_creates_a_root_token() {
    let srv = TestServer::start().await;
    // A sudo (but not root) token may create orphans, never root ones.
    srv.write_policy(
        "tokenadmin",
        r#"path "auth/token/*" { capabilities = ["create", "update", "sudo"] }"#,
    )
    .await;
    let admin = srv.token_with(&["tokenadmin"]).await;
    for path in ["auth/token/create", "auth/token/create-orphan"] {
        for spelling in root_spellings() {
            let (s, b) = srv
                .call(
                    "POST",
                    path,
                    Some(&admin),
                    Some(json!({"policies": spelling})),
                )
                .await;
            assert_eq!(s, 400, "{path} {spelling}: {b}");
        }
    }
    // A token role whose policies include root cannot be written...
    let (s, b) = srv
        .root(
            "POST",
            "auth/token/roles/ops",
            Some(json!({"allowed_policies": ["Root"]})),
        )
        .await;
    assert_eq!(s, 400, "{b}");
    // ...and root still creates root children (the one legitimate path).
    let (s, b) = srv
        .root(
            "POST",
            "auth/token/create",
            Some(json!({"policies": ["root"], "ttl": "10m"})),
        )
        .await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["auth"]["policies"], json!(["root"]));
}

/// A token allowed everything under a directory but denied one exact path in it.
async fn token_denied_one_path(srv: &TestServer, allow: &str, deny: &str, caps: &str) -> String {
    let name = format!("deny-{}", deny.replace('/', "-"));
    srv.write_policy(
        &name,
        &format!(
            "path \"{allow}\" {{ capabilities = [{caps}] }}\npath \"{deny}\" {{ capabilities = [\"deny\"] }}\n"
        ),
    )
    .await;
    srv.token_with(&[&name]).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_exact_deny_holds_whatever_the_spelling_of_the_path() {
    let srv = TestServer::start().await;
    let (s, b) = srv
        .root(
            "POST",
            "sys/mounts/database",
            Some(json!({"type": "database"})),
        )
        .await;
    assert_eq!(s, 204, "{b}");
    enable_auth(&srv, "userpass", "userpass").await;
    srv.write_policy("mine", r#"path "secret/*" { capabilities = ["read"] }"#)
        .await;
    let (s, _) = srv
        .root(
            "POST",
            "secret/data/blocked",
            Some(json!({"data": {"k": "v"}})),
        )
        .await;
    assert_eq!(s, 200);

    let cases: &[(&str, &str, &str, &str, &[&str])] = &[
        (
            "database/creds/*",
            "database/creds/rw",
            r#""read""#,
            "GET",
            &["database/creds/rw/", "database/creds/rw"],
        ),
        (
            "secret/data/*",
            "secret/data/blocked",
            r#""read""#,
            "GET",
            &["secret/data/blocked/", "secret/data/blocked"],
        ),
        (
            "sys/policy/*",
            "sys/policy/mine",
            r#""create", "update""#,
            "PUT",
            &[
                "sys/policy/mine/",
                "sys/policy/MINE",
                "sys/policy/Mine/",
                "sys/policies/acl/mine",
            ],
        ),
        (
            "auth/token/create/*",
            "auth/token/create/ops",
            r#""update""#,
            "POST",
            &["auth/token/create/ops/", "auth/token/create/OPS"],
        ),
        (
            "auth/userpass/users/*",
            "auth/userpass/users/admin",
            r#""create", "update""#,
            "POST",
            &[
                "auth/userpass/users/admin/",
                "auth/userpass/users/Admin",
                "auth/userpass/users/ADMIN/",
            ],
        ),
    ];
    let (s, _) = srv
        .root(
            "POST",
            "auth/token/roles/ops",
            Some(json!({"allowed_policies": ["default"]})),
        )
        .await;
    assert_eq!(s, 204);
    for (allow, deny, caps, method, spellings) in cases {
        let tok = token_denied_one_path(&srv, allow, deny, caps).await;
        for p in *spellings {
            let body = json!({"policy": r#"path "*" { capabilities = ["sudo", "read"] }"#,
                              "password": "pw-123456", "data": {}});
            let (s, b) = srv.call(method, p, Some(&tok), Some(body)).await;
            assert_eq!(s, 403, "{method} {p} with {deny} denied: {b}");
        }
    }
    // The policy was never rewritten.
    let (_, b) = srv.root("GET", "sys/policy/mine", None).await;
    assert!(
        !b["data"]["rules"].as_str().unwrap().contains("sudo"),
        "{b}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_exact_control_group_holds_with_a_trailing_slash() {
    let srv = TestServer::start().await;
    let (s, b) = srv
        .root(
            "POST",
            "sys/mounts/database",
            Some(json!({"type": "database"})),
        )
        .await;
    assert_eq!(s, 204, "{b}");
    srv.write_policy(
        "gated",
        r#"
path "database/creds/rw" {
  capabilities = ["read"]
  control_group = {
    factor "dba" {
      identity {
        group_names = ["dba"]
        approvals   = 1
      }
    }
  }
}
path "database/creds/*" { capabilities = ["read"] }
"#,
    )
    .await;
    let tok = srv.token_with(&["gated"]).await;
    for p in ["database/creds/rw", "database/creds/rw/"] {
        let (s, b) = srv.call("GET", p, Some(&tok), None).await;
        assert_eq!(s, 403, "{p}: {b}");
        assert!(
            error(&b).to_lowercase().contains("approv"),
            "{p}: the answer says an approval is needed: {b}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn root_protected_paths_need_sudo_however_spelled() {
    let srv = TestServer::start().await;
    srv.write_policy(
        "almost",
        r#"
path "sys/*"        { capabilities = ["create", "read", "update", "delete", "list"] }
path "auth/token/*" { capabilities = ["create", "read", "update", "delete", "list"] }
"#,
    )
    .await;
    let tok = srv.token_with(&["almost"]).await;
    let root = srv.root_token.clone();
    let cases: &[(&str, &str, Value)] = &[
        (
            "POST",
            "sys/capabilities",
            json!({"token": root, "paths": ["sys"]}),
        ),
        (
            "POST",
            "sys/capabilities/",
            json!({"token": root, "paths": ["sys"]}),
        ),
        (
            "POST",
            "sys/capabilities-accessor",
            json!({"accessor": "x", "paths": ["sys"]}),
        ),
        (
            "POST",
            "sys/capabilities-accessor/",
            json!({"accessor": "x", "paths": ["sys"]}),
        ),
        ("GET", "sys/leases/failing", Value::Null),
        ("GET", "sys/leases/failing/", Value::Null),
        ("LIST", "sys/leases/lookup/", Value::Null),
        ("LIST", "sys/leases/lookup", Value::Null),
        ("LIST", "sys/leases/lookup/database/", Value::Null),
        ("POST", "sys/leases/revoke-prefix/database/", Value::Null),
        ("POST", "sys/leases/revoke-force/database", Value::Null),
        ("POST", "sys/revoke-prefix/database/", Value::Null),
        (
            "POST",
            "sys/control-group/config",
            json!({"webhook_url": "http://127.0.0.1:9/x"}),
        ),
        (
            "POST",
            "sys/control-group/config/",
            json!({"webhook_url": "http://127.0.0.1:9/x"}),
        ),
        ("LIST", "sys/control-group/rules/", Value::Null),
        (
            "POST",
            "sys/control-group/rules/r1/",
            json!({"path": "x/*"}),
        ),
        ("POST", "sys/leaks/scan", json!({"text": "x"})),
        ("POST", "sys/leaks/scan/", json!({"text": "x"})),
        ("GET", "sys/audit", Value::Null),
        ("GET", "sys/audit/", Value::Null),
        (
            "PUT",
            "sys/audit/file/",
            json!({"type": "file", "options": {"file_path": "/tmp/x"}}),
        ),
        ("POST", "sys/audit-hash/file/", json!({"input": "x"})),
        ("POST", "sys/auth/evil/", json!({"type": "userpass"})),
        ("POST", "auth/token/revoke-orphan", json!({"token": "x"})),
        ("POST", "auth/token/revoke-orphan/", json!({"token": "x"})),
        ("LIST", "auth/token/accessors/", Value::Null),
        ("LIST", "auth/token/accessors", Value::Null),
        // The kill switch: nobody without sudo may lock (revoke everything an agent
        // holds) or unlock, whatever the spelling.
        (
            "PUT",
            "sys/containment/lock",
            json!({"accessor": "x", "reason": "r"}),
        ),
        (
            "PUT",
            "sys/containment/lock/",
            json!({"accessor": "x", "reason": "r"}),
        ),
        ("PUT", "sys/containment/unlock/", json!({"entity_id": "x"})),
        ("LIST", "sys/containment/locks/", Value::Null),
        ("LIST", "sys/containment/locks", Value::Null),
        ("GET", "sys/containment/jobs/x/", Value::Null),
    ];
    for (method, path, body) in cases {
        let body = (!body.is_null()).then(|| body.clone());
        let (s, b) = srv.call(method, path, Some(&tok), body).await;
        assert_eq!(s, 403, "{method} {path} without sudo: {b}");
    }
    // The webhook was not redirected.
    let (_, b) = srv.root("GET", "sys/control-group/config", None).await;
    assert!(!b.to_string().contains("127.0.0.1:9"), "{b}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_name_with_white_space_is_refused_and_audited() {
    let srv = TestServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("audit.log");
    let (s, b) = srv
        .root(
            "PUT",
            "sys/audit/file",
            Some(json!({"type": "file", "options": {"file_path": log}})),
        )
        .await;
    assert_eq!(s, 204, "{b}");
    enable_auth(&srv, "userpass", "userpass").await;
    let (s, b) = srv
        .root(
            "POST",
            "auth/userpass/users/admin%20",
            Some(json!({"password": "pw-123456", "token_policies": "default"})),
        )
        .await;
    assert_eq!(s, 400, "{b}");
    let text = std::fs::read_to_string(&log).unwrap();
    let last: Value = serde_json::from_str(text.lines().last().unwrap()).unwrap();
    assert_eq!(
        last["request"]["path"], "auth/userpass/users/admin ",
        "{last}"
    );
    assert!(
        last["error"].as_str().unwrap().contains("white space"),
        "{last}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn anonymous_and_oversized_requests_cannot_inflate_the_audit_log() {
    let srv = TestServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("audit.log");
    let (s, b) = srv
        .root(
            "PUT",
            "sys/audit/file",
            Some(json!({"type": "file", "options": {"file_path": log}})),
        )
        .await;
    assert_eq!(s, 204, "{b}");
    // ~800 KB of one-character strings: every one would become a 77-byte HMAC.
    let many: Vec<&str> = vec!["a"; 150_000];
    let body = json!({"data": {"x": many}});
    let before = std::fs::metadata(&log).unwrap().len();
    let (s, _) = srv
        .call(
            "POST",
            "secret/data/x",
            Some("lsh.bogus-token"),
            Some(body.clone()),
        )
        .await;
    assert_eq!(s, 403);
    let (s, _) = srv
        .call("POST", "secret/data/x", None, Some(body.clone()))
        .await;
    assert_eq!(s, 403);
    let grown = std::fs::metadata(&log).unwrap().len() - before;
    assert!(grown < 8 * 1024, "two refused requests wrote {grown} bytes");
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(
        text.contains("leash_omitted"),
        "the body is replaced by a marker"
    );

    // A denied request with a valid token records no body either.
    srv.write_policy(
        "nothing",
        r#"path "secret/data/other" { capabilities = ["read"] }"#,
    )
    .await;
    let tok = srv.token_with(&["nothing"]).await;
    let before = std::fs::metadata(&log).unwrap().len();
    let (s, _) = srv
        .call("POST", "secret/data/x", Some(&tok), Some(body.clone()))
        .await;
    assert_eq!(s, 403);
    let grown = std::fs::metadata(&log).unwrap().len() - before;
    assert!(grown < 8 * 1024, "a denied request wrote {grown} bytes");

    // An allowed request is recorded, but no entry exceeds the per-entry bound. (~800 KB
    // in 10 000 strings, ~770 KB once each is HMAC'd: over the bound, while hashing
    // 150 000 values in a debug build on a busy machine could outlast the audit
    // deadline, which is not what this checks.)
    let long = "a".repeat(80);
    let body = json!({"data": {"x": vec![long.as_str(); 10_000]}});
    let before = std::fs::metadata(&log).unwrap().len();
    let (s, b) = srv.root("POST", "secret/data/x", Some(body)).await;
    assert_eq!(s, 200, "{b}");
    let text = std::fs::read_to_string(&log).unwrap();
    let tail = &text.as_bytes()[before as usize..];
    for line in tail.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
        assert!(line.len() < 300 * 1024, "an entry of {} bytes", line.len());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_wrong_passwords_cannot_overshoot_the_login_limit() {
    let srv = TestServer::start().await;
    enable_auth(&srv, "userpass", "userpass").await;
    let (s, _) = srv
        .root(
            "POST",
            "auth/userpass/users/alice",
            Some(json!({"password": "right-password", "token_policies": "default"})),
        )
        .await;
    assert_eq!(s, 204);
    let mut tasks = Vec::new();
    let url = srv.url();
    for _ in 0..120 {
        let url = url.clone();
        tasks.push(tokio::spawn(async move {
            reqwest::Client::new()
                .post(format!("{url}/v1/auth/userpass/login/alice"))
                .json(&json!({"password": "wrong"}))
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }));
    }
    let mut checked = 0;
    let mut limited = 0;
    for t in tasks {
        match t.await.unwrap() {
            429 => limited += 1,
            _ => checked += 1,
        }
    }
    assert!(
        checked <= 20,
        "{checked} wrong passwords were checked (limit 20/min), {limited} refused"
    );
    assert_eq!(checked + limited, 120);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cidr_bound_token_cannot_create_an_unbound_child() {
    let srv = TestServer::start().await;
    srv.write_policy(
        "creator",
        r#"path "auth/token/*" { capabilities = ["create", "update", "read", "sudo"] }"#,
    )
    .await;
    let (s, b) = srv
        .root(
            "POST",
            "auth/token/roles/bound",
            Some(json!({"allowed_policies": ["creator"], "token_bound_cidrs": ["127.0.0.0/8"]})),
        )
        .await;
    assert_eq!(s, 204, "{b}");
    let (s, b) = srv
        .root(
            "POST",
            "auth/token/create/bound",
            Some(json!({"policies": ["creator"]})),
        )
        .await;
    assert_eq!(s, 200, "{b}");
    let parent = b["auth"]["client_token"].as_str().unwrap().to_owned();
    for path in ["auth/token/create", "auth/token/create-orphan"] {
        let (s, b) = srv
            .call(
                "POST",
                path,
                Some(&parent),
                Some(json!({"policies": ["creator"]})),
            )
            .await;
        assert_eq!(s, 200, "{path}: {b}");
        let child = b["auth"]["client_token"].as_str().unwrap();
        let (s, b) = srv
            .call("GET", "auth/token/lookup-self", Some(child), None)
            .await;
        assert_eq!(s, 200, "{b}");
        assert_eq!(
            b["data"]["bound_cidrs"],
            json!(["127.0.0.0/8"]),
            "{path}: {b}"
        );
    }
    // A role binding the child elsewhere is refused for a bound creator.
    let (s, _) = srv
        .root(
            "POST",
            "auth/token/roles/wide",
            Some(json!({"allowed_policies": ["creator"], "token_bound_cidrs": ["0.0.0.0/0"]})),
        )
        .await;
    assert_eq!(s, 204);
    let (s, b) = srv
        .call(
            "POST",
            "auth/token/create/wide",
            Some(&parent),
            Some(json!({})),
        )
        .await;
    assert_eq!(s, 400, "{b}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_renews_and_looks_up_only_leases_of_its_own_tree() {
    let pg = crate::database::PgScratch::new().await;
    let srv = TestServer::start().await;
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
    // The default policy grants sys/leases/renew and sys/leases/lookup to everyone.
    let owner = srv.token_with(&["agent"]).await;
    let other = srv.token_with(&["agent"]).await;
    let (s, b) = srv
        .call(
            "GET",
            &format!("database/creds/{}", pg.role),
            Some(&owner),
            None,
        )
        .await;
    assert_eq!(s, 200, "{b}");
    let lease = b["lease_id"].as_str().unwrap().to_owned();
    let renew = json!({"lease_id": lease, "increment": "1s"});
    let (s, b) = srv
        .call("PUT", "sys/leases/renew", Some(&other), Some(renew.clone()))
        .await;
    assert_eq!(
        s, 400,
        "another tree's token may not shorten the lease: {b}"
    );
    assert_eq!(error(&b), "lease not found", "{b}");
    // The other spellings are refused too (by policy, or as not found).
    let (s, b) = srv
        .call("PUT", "sys/renew", Some(&other), Some(renew.clone()))
        .await;
    assert!(s == 400 || s == 403, "{b}");
    let (s, b) = srv
        .call(
            "PUT",
            &format!("sys/leases/renew/{lease}"),
            Some(&other),
            Some(json!({"increment": "1s"})),
        )
        .await;
    assert!(s == 400 || s == 403, "{b}");
    let (s, b) = srv
        .call(
            "PUT",
            "sys/leases/lookup",
            Some(&other),
            Some(json!({"lease_id": lease})),
        )
        .await;
    assert_eq!(s, 400, "{b}");
    // The lease kept its TTL.
    let (s, b) = srv
        .root("PUT", "sys/leases/lookup", Some(json!({"lease_id": lease})))
        .await;
    assert_eq!(s, 200, "{b}");
    assert!(b["data"]["ttl"].as_i64().unwrap() > 60, "{b}");
    // Its owner, and a parent of its owner, may.
    let (s, b) = srv
        .call(
            "PUT",
            "sys/leases/lookup",
            Some(&owner),
            Some(json!({"lease_id": lease})),
        )
        .await;
    assert_eq!(s, 200, "{b}");
    let (s, b) = srv
        .call(
            "PUT",
            "sys/leases/renew",
            Some(&owner),
            Some(json!({"lease_id": lease, "increment": "10m"})),
        )
        .await;
    assert_eq!(s, 200, "{b}");
    let (s, b) = srv
        .root(
            "PUT",
            "sys/leases/renew",
            Some(json!({"lease_id": lease, "increment": "10m"})),
        )
        .await;
    assert_eq!(s, 200, "root (sudo) may: {b}");
    drop(srv);
    pg.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agents_list_and_ha_status_are_closed_to_a_default_token_in_every_spelling() {
    // Both name every live agent or server: a low-privilege agent token must not read
    // them, whatever the spelling of the path.
    let srv = TestServer::start().await;
    let tok = srv.token_with(&["default"]).await;
    let cases = [
        ("LIST", "sys/containment/agents"),
        ("LIST", "sys/containment/agents/"),
        ("GET", "sys/containment/agents"),
        ("GET", "sys/containment/agents/"),
        ("LIST", "sys//containment/agents"),
        ("LIST", "SYS/containment/agents"),
        ("LIST", "sys/Containment/Agents"),
        ("GET", "sys/ha-status"),
        ("GET", "sys/ha-status/"),
        ("GET", "sys//ha-status"),
        ("GET", "sys/HA-status"),
    ];
    for (method, path) in cases {
        let (s, b) = srv.call(method, path, Some(&tok), None).await;
        assert!(
            matches!(s, 400 | 403 | 404 | 405),
            "{method} {path} with a default token: {s} {b}"
        );
        assert!(
            !b.to_string().contains("entity_id") && !b.to_string().contains("heartbeat"),
            "{method} {path} leaked: {b}"
        );
    }
    // Root reads both (the spellings above were refused, not broken).
    let (s, b) = srv.root("GET", "sys/ha-status", None).await;
    assert_eq!(s, 200, "{b}");
    let (s, b) = srv.root("LIST", "sys/containment/agents", None).await;
    assert!(matches!(s, 200 | 404), "{b}");
}
