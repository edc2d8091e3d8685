//! The HTTP rules every Vault client relies on: the envelope, exact content type, 204s,
//! and the 4xx answers for bad input (oversized or malformed bodies, path tricks,
//! unknown paths and methods, PATCH without merge-patch). Bad input changes nothing.

use leash_testkit::TestServer;
use serde_json::{Value, json};

use crate::{Raw, error, raw};

async fn send(srv: &TestServer, method: &str, target: &str, body: &[u8]) -> Raw {
    raw(
        srv.addr,
        method,
        target,
        &[
            ("X-Vault-Token", &srv.root_token),
            ("X-Vault-Request", "true"),
        ],
        body,
    )
    .await
}

fn assert_json_error(r: &Raw, status: u16) -> String {
    assert_eq!(r.status, status, "{:?}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.header("content-type"), Some("application/json"));
    let b = r.json();
    assert!(b["errors"].is_array(), "{b}");
    if status == 404 {
        return String::new();
    }
    error(&b)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn success_is_the_full_envelope_with_the_exact_content_type() {
    let srv = TestServer::start().await;
    let r = send(&srv, "PUT", "/v1/secret/data/x", br#"{"data": {"a": "b"}}"#).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-type"), Some("application/json"));
    let b = r.json();
    for k in [
        "request_id",
        "lease_id",
        "renewable",
        "lease_duration",
        "data",
        "wrap_info",
        "warnings",
        "auth",
    ] {
        assert!(b.get(k).is_some(), "envelope lacks {k}: {b}");
    }
    assert_eq!(b["wrap_info"], Value::Null);
    assert_eq!(b["auth"], Value::Null);
    assert_eq!(b["warnings"], Value::Null);
    // PUT and POST are the same operation.
    let r = send(
        &srv,
        "POST",
        "/v1/secret/data/x",
        br#"{"data": {"a": "c"}}"#,
    )
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["data"]["version"], 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_with_nothing_to_say_are_204_with_no_body() {
    let srv = TestServer::start().await;
    let r = send(
        &srv,
        "PUT",
        "/v1/sys/policy/p",
        br#"{"policy": "path \"a\" { capabilities = [\"read\"] }"}"#,
    )
    .await;
    assert_eq!(r.status, 204);
    assert!(r.body.is_empty(), "{:?}", String::from_utf8_lossy(&r.body));
    let r = send(&srv, "DELETE", "/v1/sys/policy/p", b"").await;
    assert_eq!(r.status, 204);
    assert!(r.body.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_bodies_are_413() {
    let srv = TestServer::start().await;
    let big = format!(r#"{{"data": {{"a": "{}"}}}}"#, "x".repeat(1024 * 1024 + 10));
    let r = send(&srv, "PUT", "/v1/secret/data/big", big.as_bytes()).await;
    let msg = assert_json_error(&r, 413);
    assert!(msg.contains("limit"), "{msg}");
    let (s, _) = srv.root("GET", "secret/data/big", None).await;
    assert_eq!(s, 404, "nothing stored");
    // Just under the limit is fine.
    let ok = format!(r#"{{"data": {{"a": "{}"}}}}"#, "x".repeat(1000 * 1000));
    let r = send(&srv, "PUT", "/v1/secret/data/big", ok.as_bytes()).await;
    assert_eq!(r.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_json_is_400_saying_where() {
    let srv = TestServer::start().await;
    let r = send(&srv, "PUT", "/v1/secret/data/j", br#"{"data": {"a": 1,,}}"#).await;
    let msg = assert_json_error(&r, 400);
    assert!(msg.contains("line 1"), "{msg}");
    assert!(msg.contains("column"), "{msg}");
    let r = send(
        &srv,
        "PUT",
        "/v1/secret/data/j",
        b"{\n  \"data\": {\n    \"a\": \n}",
    )
    .await;
    let msg = assert_json_error(&r, 400);
    assert!(msg.contains("line 4"), "{msg}");
    let r = send(&srv, "PUT", "/v1/secret/data/j", br#"{"data": "#).await;
    assert_json_error(&r, 400);
    for body in [&b"[1, 2]"[..], b"\"a string\"", b"42", b"null"] {
        let r = send(&srv, "PUT", "/v1/secret/data/j", body).await;
        let msg = assert_json_error(&r, 400);
        assert!(msg.contains("object"), "{msg}");
    }
    let (s, _) = srv.root("GET", "secret/data/j", None).await;
    assert_eq!(s, 404, "nothing stored");
    // An empty body is an empty object (many clients send none on POST).
    let r = send(&srv, "POST", "/v1/auth/token/renew-self", b"").await;
    assert_eq!(r.status, 200, "{:?}", String::from_utf8_lossy(&r.body));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn path_tricks_are_400() {
    let srv = TestServer::start().await;
    srv.root("PUT", "secret/data/x", Some(json!({"data": {"a": "b"}})))
        .await;
    for target in [
        "/v1/secret/../sys/policy/x",
        "/v1/secret/data/../../sys/mounts",
        "/v1/secret/./data/x",
        "/v1/secret//data/x",
        "/v1//secret/data/x",
        "/v1/secret/data%2Fx",
        "/v1/secret%2fdata/x",
        "/v1/secret/%2e%2e/sys/mounts",
        "/v1/secret/data/a%00b",
        "/v1/secret/data/a%5Cb",
        "/v1/secret/data/a%0Ab",
        "/v1/secret/data/%ff",
    ] {
        for method in ["GET", "PUT", "DELETE", "LIST"] {
            let r = send(&srv, method, target, br#"{"data": {"a": "z"}}"#).await;
            let msg = assert_json_error(&r, 400);
            assert!(msg.contains("path"), "{method} {target}: {msg}");
        }
    }
    let (_, b) = srv.root("GET", "secret/data/x", None).await;
    assert_eq!(b["data"]["data"]["a"], "b", "nothing changed");
    // Path tricks are refused before authentication: no token needed to get the 400.
    let r = raw(srv.addr, "GET", "/v1/secret/../sys/mounts", &[], b"").await;
    assert_eq!(r.status, 400);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_paths_are_404_and_unknown_methods_405() {
    let srv = TestServer::start().await;
    for target in [
        "/v1/nomount/x",
        "/v1/sys/no-such-endpoint",
        "/v1/auth/nomethod/login",
        "/v2/sys/health",
        "/",
    ] {
        let r = send(&srv, "GET", target, b"").await;
        assert_json_error(&r, 404);
    }
    for method in ["FOO", "TRACE", "CONNECT2"] {
        let r = send(&srv, method, "/v1/secret/data/x", b"").await;
        assert_json_error(&r, 405);
    }
    // A known path that does not support the operation.
    let r = send(&srv, "GET", "/v1/auth/token/create", b"").await;
    assert_json_error(&r, 405);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn patch_needs_the_merge_patch_content_type() {
    let srv = TestServer::start().await;
    srv.root("PUT", "secret/data/p", Some(json!({"data": {"a": "b"}})))
        .await;
    for ct in [None, Some("application/json"), Some("text/plain")] {
        let mut headers = vec![("X-Vault-Token", srv.root_token.as_str())];
        if let Some(ct) = ct {
            headers.push(("Content-Type", ct));
        }
        let r = raw(
            srv.addr,
            "PATCH",
            "/v1/secret/data/p",
            &headers,
            br#"{"data": {"a": "c"}}"#,
        )
        .await;
        let msg = assert_json_error(&r, 415);
        assert!(msg.contains("merge-patch"), "{msg}");
    }
    let (_, b) = srv.root("GET", "secret/data/p", None).await;
    assert_eq!(b["data"]["data"]["a"], "b");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_carry_the_exact_content_type() {
    let srv = TestServer::start().await;
    let r = raw(srv.addr, "GET", "/v1/secret/data/x", &[], b"").await;
    assert_json_error(&r, 403);
    assert_eq!(
        r.json(),
        json!({"errors": ["permission denied", "no token presented"]})
    );
    let r = send(&srv, "GET", "/v1/secret/data/missing", b"").await;
    assert_json_error(&r, 404);
    assert_eq!(
        r.json(),
        json!({"errors": ["no value found at secret/data/missing"]})
    );
    let r = send(&srv, "PUT", "/v1/secret/data/x", b"{").await;
    assert_json_error(&r, 400);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unsupported_operations_on_known_sys_paths_are_405() {
    let srv = TestServer::start().await;
    for (method, path) in [
        ("POST", "/v1/sys/health"),
        ("DELETE", "/v1/sys/health"),
        ("POST", "/v1/sys/seal-status"),
        ("DELETE", "/v1/sys/policy"),
        ("GET", "/v1/sys/policies/acl"),
        ("GET", "/v1/sys/capabilities-self"),
    ] {
        let r = send(&srv, method, path, b"").await;
        assert_json_error(&r, 405);
    }
    // Paths are case-sensitive, as in Vault: a different case is another (unknown) path.
    let r = send(&srv, "GET", "/v1/SYS/mounts", b"").await;
    assert_json_error(&r, 404);
    let r = send(&srv, "GET", "/v1/Secret/data/x", b"").await;
    assert_json_error(&r, 404);
}

fn leash_cli(srv: &TestServer, token: Option<&str>, args: &[&str]) -> (i32, String) {
    let mut c = std::process::Command::new(env!("CARGO_BIN_EXE_leash"));
    c.args(args)
        .env("LEASH_ADDR", srv.url())
        .env_remove("LEASH_TOKEN")
        .env_remove("VAULT_ADDR")
        .env_remove("VAULT_TOKEN")
        .env("HOME", srv.dir.as_os_str());
    if let Some(t) = token {
        c.env("LEASH_TOKEN", t);
    }
    let out = c.output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr),
    )
}

/// The hints a new user needs: a missing mount is named as such, a missing key says
/// where, and a refused token says why (without telling unknown from expired).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_errors_say_what_was_not_found_and_why_a_token_was_refused() {
    let srv = TestServer::start().await;
    let root = srv.root_token.clone();
    let s = &srv;
    let (code, out) =
        tokio::task::block_in_place(|| leash_cli(s, Some(&root), &["kv", "get", "nosuchmount/x"]));
    assert_ne!(code, 0, "{out}");
    assert!(
        out.contains("no secrets engine is mounted at nosuchmount/"),
        "{out}"
    );
    let (code, out) =
        tokio::task::block_in_place(|| leash_cli(s, Some(&root), &["kv", "get", "secret/missing"]));
    assert_ne!(code, 0, "{out}");
    assert!(
        out.contains("No value found at secret/data/missing"),
        "{out}"
    );
    assert!(!out.contains("mounted"), "{out}");
    let (code, out) = tokio::task::block_in_place(|| {
        leash_cli(s, Some("lsh.not-a-token"), &["kv", "get", "secret/x"])
    });
    assert_ne!(code, 0, "{out}");
    assert!(
        out.contains("permission denied") && out.contains("token is not valid"),
        "{out}"
    );
    let (code, out) =
        tokio::task::block_in_place(|| leash_cli(s, None, &["kv", "get", "secret/x"]));
    assert_ne!(code, 0, "{out}");
    assert!(out.contains("no token presented"), "{out}");
}

/// A value pasted into the wrong field (here a token-looking secret) is refused with a
/// message naming the field; the value appears neither in the answer nor in the audit
/// log.
#[tokio::test]
async fn rejected_values_are_never_echoed() {
    // Made at run time, shaped like a Vault token a user might paste by mistake.
    let pasted = format!("hvs.{}", leash_types::random::base62(24));
    let pasted = pasted.as_str();
    let srv = TestServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("audit.log");
    let (s, b) = srv
        .root(
            "PUT",
            "sys/audit/file",
            Some(json!({"type": "file", "options": {"file_path": log.display().to_string()}})),
        )
        .await;
    assert_eq!(s, 204, "{b}");
    let (s, b) = srv
        .root("POST", "sys/mounts/db", Some(json!({"type": "database"})))
        .await;
    assert_eq!(s, 204, "{b}");
    for (method, path, body, field) in [
        ("POST", "auth/token/create", json!({"ttl": pasted}), "ttl"),
        (
            "POST",
            "secret/config",
            json!({"delete_version_after": pasted}),
            "delete_version_after",
        ),
        ("POST", "sys/mounts/x", json!({"type": pasted}), "type"),
        (
            "POST",
            "db/config/pg",
            json!({"plugin_name": "postgresql-database-plugin", "connection_url": "postgresql://h/d",
                   "password_authentication": pasted, "verify_connection": false}),
            "password_authentication",
        ),
        (
            "POST",
            "db/config/pg",
            json!({"plugin_name": pasted, "connection_url": "postgresql://h/d"}),
            "plugin_name",
        ),
        (
            "POST",
            "sys/control-group/config",
            json!({"escalation_url": format!("ftp://hooks.example/{pasted}")}),
            "escalation_url",
        ),
        (
            "PUT",
            "sys/audit/bad",
            json!({"type": "file", "options": {"file_path": "discard", "mode": pasted}}),
            "mode",
        ),
    ] {
        let (s, b) = srv.root(method, path, Some(body)).await;
        assert_eq!(s, 400, "{path}: {b}");
        let e = error(&b);
        assert!(!e.contains(pasted), "{path} echoes the value: {e}");
        assert!(
            e.contains(field) || (field == "type" && e.contains("secrets engine type")),
            "{path}: {e}"
        );
    }
    let audit = std::fs::read_to_string(&log).unwrap();
    for line in audit.lines() {
        let v: Value = serde_json::from_str(line).unwrap();
        assert!(
            !v["error"].as_str().unwrap_or("").contains(pasted),
            "{line}"
        );
    }
}
