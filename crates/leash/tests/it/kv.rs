//! KV through HTTP: version 2 at `secret/` (versions, check-and-set, soft delete,
//! undelete, destroy, metadata, lists) and a version 1 mount enabled over `sys/mounts`.

use leash_testkit::TestServer;
use serde_json::{Value, json};

use crate::{error, raw};

fn keys(b: &Value) -> Vec<String> {
    b["data"]["keys"]
        .as_array()
        .unwrap_or_else(|| panic!("no keys in {b}"))
        .iter()
        .map(|k| k.as_str().unwrap().to_owned())
        .collect()
}

async fn put(srv: &TestServer, name: &str, body: Value) -> (u16, Value) {
    srv.root("POST", &format!("secret/data/{name}"), Some(body))
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kv2_write_read_and_versions() {
    let srv = TestServer::start().await;
    let (s, b) = put(
        &srv,
        "app",
        json!({"data": {"user": "bob", "password": "pw-1"}}),
    )
    .await;
    assert_eq!(s, 200, "{b}");
    let d = &b["data"];
    assert_eq!(d["version"], 1);
    assert_eq!(d["deletion_time"], "");
    assert_eq!(d["destroyed"], false);
    assert!(
        d["created_time"].as_str().is_some_and(|t| t.ends_with('Z')),
        "{d}"
    );
    assert!(d.get("custom_metadata").is_some(), "{d}");

    let (s, b) = put(
        &srv,
        "app",
        json!({"data": {"user": "bob", "password": "pw-2"}}),
    )
    .await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["data"]["version"], 2);

    let (s, b) = srv.root("GET", "secret/data/app", None).await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(
        b["data"]["data"],
        json!({"user": "bob", "password": "pw-2"})
    );
    let m = &b["data"]["metadata"];
    assert_eq!(m["version"], 2);
    assert_eq!(m["deletion_time"], "");
    assert_eq!(m["destroyed"], false);
    assert!(m["created_time"].is_string());
    assert_eq!(b["lease_duration"], 0);
    assert_eq!(b["lease_id"], "");

    let (s, b) = srv.root("GET", "secret/data/app?version=1", None).await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["data"]["data"]["password"], "pw-1");
    assert_eq!(b["data"]["metadata"]["version"], 1);

    let (s, b) = srv.root("GET", "secret/data/app?version=9", None).await;
    assert_eq!(s, 404, "{b}");
    let (s, b) = srv.root("GET", "secret/data/missing", None).await;
    assert_eq!(s, 404);
    assert_eq!(
        b,
        json!({"errors": ["no value found at secret/data/missing"]})
    );

    // Bad input changes nothing.
    let (s, b) = put(&srv, "app", json!({"nodata": 1})).await;
    assert_eq!(s, 400, "{b}");
    let (s, b) = put(&srv, "app", json!({"data": "not an object"})).await;
    assert_eq!(s, 400, "{b}");
    let (_, b) = srv.root("GET", "secret/data/app", None).await;
    assert_eq!(b["data"]["metadata"]["version"], 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kv2_check_and_set() {
    let srv = TestServer::start().await;
    // cas 0: only if absent.
    let (s, b) = put(
        &srv,
        "c",
        json!({"data": {"a": "1"}, "options": {"cas": 0}}),
    )
    .await;
    assert_eq!(s, 200, "{b}");
    let (s, b) = put(
        &srv,
        "c",
        json!({"data": {"a": "2"}, "options": {"cas": 0}}),
    )
    .await;
    assert_eq!(s, 400, "{b}");
    assert!(error(&b).contains("check-and-set"), "{b}");
    let (s, b) = put(
        &srv,
        "c",
        json!({"data": {"a": "2"}, "options": {"cas": 1}}),
    )
    .await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["data"]["version"], 2);
    // A stale cas loses.
    let (s, b) = put(
        &srv,
        "c",
        json!({"data": {"a": "3"}, "options": {"cas": 1}}),
    )
    .await;
    assert_eq!(s, 400, "{b}");
    let (_, b) = srv.root("GET", "secret/data/c", None).await;
    assert_eq!(b["data"]["data"]["a"], "2");

    // Two writers with the same cas: exactly one wins.
    let body = json!({"data": {"a": "race"}, "options": {"cas": 2}});
    let (r1, r2) = tokio::join!(put(&srv, "c", body.clone()), put(&srv, "c", body));
    let mut statuses = [r1.0, r2.0];
    statuses.sort_unstable();
    assert_eq!(statuses, [200, 400]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kv2_soft_delete_undelete_destroy() {
    let srv = TestServer::start().await;
    for v in ["one", "two", "three"] {
        let (s, _) = put(&srv, "d", json!({"data": {"v": v}})).await;
        assert_eq!(s, 200);
    }
    let (s, b) = srv.root("DELETE", "secret/data/d", None).await;
    assert_eq!(s, 204, "{b}");
    assert_eq!(b, Value::Null);

    // A soft-deleted version: 404 whose body is a full envelope (hvac reads it).
    let r = raw(
        srv.addr,
        "GET",
        "/v1/secret/data/d",
        &[("X-Vault-Token", &srv.root_token)],
        b"",
    )
    .await;
    assert_eq!(r.status, 404);
    assert_eq!(r.header("content-type"), Some("application/json"));
    let b = r.json();
    assert_eq!(b["data"]["data"], Value::Null, "{b}");
    let m = &b["data"]["metadata"];
    assert!(
        m["deletion_time"].as_str().is_some_and(|t| !t.is_empty()),
        "{b}"
    );
    assert_eq!(m["version"], 3);
    assert_eq!(m["destroyed"], false);
    assert!(!b.to_string().contains("three"), "no deleted data: {b}");

    // Older versions are still there.
    let (s, b) = srv.root("GET", "secret/data/d?version=2", None).await;
    assert_eq!(s, 200);
    assert_eq!(b["data"]["data"]["v"], "two");

    let (s, b) = srv
        .root("POST", "secret/undelete/d", Some(json!({"versions": [3]})))
        .await;
    assert_eq!(s, 204, "{b}");
    let (s, b) = srv.root("GET", "secret/data/d", None).await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["data"]["data"]["v"], "three");

    let (s, _) = srv
        .root("POST", "secret/delete/d", Some(json!({"versions": [2]})))
        .await;
    assert_eq!(s, 204);
    let (s, _) = srv.root("GET", "secret/data/d?version=2", None).await;
    assert_eq!(s, 404);

    let (s, _) = srv
        .root("POST", "secret/destroy/d", Some(json!({"versions": [1]})))
        .await;
    assert_eq!(s, 204);
    let (s, b) = srv.root("GET", "secret/data/d?version=1", None).await;
    assert_eq!(s, 404, "{b}");
    assert_eq!(b["data"]["metadata"]["destroyed"], true, "{b}");
    // Destroyed cannot be undeleted.
    srv.root("POST", "secret/undelete/d", Some(json!({"versions": [1]})))
        .await;
    let (s, _) = srv.root("GET", "secret/data/d?version=1", None).await;
    assert_eq!(s, 404);

    let (s, b) = srv.root("POST", "secret/delete/d", Some(json!({}))).await;
    assert_eq!(s, 400, "versions are required: {b}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kv2_metadata_and_lists() {
    let srv = TestServer::start().await;
    for name in ["app", "dir/x", "dir/y", "dir/sub/z"] {
        let (s, b) = put(&srv, name, json!({"data": {"k": "v"}})).await;
        assert_eq!(s, 200, "{name}: {b}");
    }
    put(&srv, "app", json!({"data": {"k": "v2"}})).await;

    let (s, b) = srv.root("GET", "secret/metadata/app", None).await;
    assert_eq!(s, 200, "{b}");
    let d = &b["data"];
    assert_eq!(d["current_version"], 2);
    // As Vault: 0 until old versions are trimmed by max_versions.
    assert_eq!(d["oldest_version"], 0);
    assert!(
        d["versions"]["1"].is_object() && d["versions"]["2"].is_object(),
        "{d}"
    );
    for k in [
        "max_versions",
        "cas_required",
        "created_time",
        "updated_time",
        "delete_version_after",
    ] {
        assert!(d.get(k).is_some(), "metadata lacks {k}: {d}");
    }
    assert!(
        !b.to_string().contains("\"v2\""),
        "metadata holds no secret data"
    );

    let (s, b) = srv.root("LIST", "secret/metadata/", None).await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(keys(&b), ["app", "dir/"]);
    let (s, b) = srv.root("GET", "secret/metadata?list=true", None).await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(keys(&b), ["app", "dir/"]);
    let (s, b) = srv.root("LIST", "secret/metadata/dir", None).await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(keys(&b), ["sub/", "x", "y"]);
    let (s, b) = srv
        .root("GET", "secret/metadata/dir/?list=true", None)
        .await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(keys(&b), ["sub/", "x", "y"]);
    let (s, b) = srv.root("LIST", "secret/metadata/nothing-here", None).await;
    assert_eq!(s, 404, "{b}");
    assert_eq!(
        b,
        json!({"errors": ["no keys found under secret/metadata/nothing-here/"]})
    );

    // Deleting metadata deletes every version.
    let (s, _) = srv.root("DELETE", "secret/metadata/app", None).await;
    assert_eq!(s, 204);
    let (s, b) = srv.root("GET", "secret/data/app", None).await;
    assert_eq!(s, 404);
    assert_eq!(b, json!({"errors": ["no value found at secret/data/app"]}));
    let (s, b) = srv.root("LIST", "secret/metadata", None).await;
    assert_eq!(s, 200);
    assert_eq!(keys(&b), ["dir/"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kv2_patch_needs_merge_patch_and_merges() {
    let srv = TestServer::start().await;
    put(&srv, "p", json!({"data": {"a": "1", "b": "2"}})).await;
    let body = br#"{"data": {"b": null, "c": "3"}}"#;
    let r = raw(
        srv.addr,
        "PATCH",
        "/v1/secret/data/p",
        &[
            ("X-Vault-Token", &srv.root_token),
            ("Content-Type", "application/json"),
        ],
        body,
    )
    .await;
    assert_eq!(r.status, 415);
    let r = raw(
        srv.addr,
        "PATCH",
        "/v1/secret/data/p",
        &[
            ("X-Vault-Token", &srv.root_token),
            ("Content-Type", "application/merge-patch+json"),
        ],
        body,
    )
    .await;
    assert_eq!(r.status, 200, "{:?}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.json()["data"]["version"], 2);
    let (_, b) = srv.root("GET", "secret/data/p", None).await;
    assert_eq!(b["data"]["data"], json!({"a": "1", "c": "3"}));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kv2_unknown_subpaths_are_404() {
    let srv = TestServer::start().await;
    let (s, b) = srv.root("GET", "secret/nonsense/x", None).await;
    assert_eq!(s, 404, "{b}");
    assert!(
        b["warnings"][0]
            .as_str()
            .is_some_and(|w| w.starts_with("Invalid path for a versioned K/V secrets engine")),
        "{b}"
    );
    let (s, b) = srv.root("GET", "secret/data", None).await;
    assert_eq!(s, 404, "{b}");
    let (s, b) = srv.root("GET", "secret/data/", None).await;
    assert_eq!(s, 404, "{b}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kv1_mount_via_sys_mounts() {
    let srv = TestServer::start().await;
    let (s, b) = srv
        .root(
            "POST",
            "sys/mounts/kv1",
            Some(json!({"type": "kv", "options": {"version": "1"}})),
        )
        .await;
    assert_eq!(s, 204, "{b}");
    let (s, b) = srv
        .root("PUT", "kv1/app/config", Some(json!({"a": "b", "n": 1})))
        .await;
    assert_eq!(s, 204, "{b}");
    let (s, b) = srv.root("GET", "kv1/app/config", None).await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["data"], json!({"a": "b", "n": 1}));
    // No history: a write replaces the whole value.
    srv.root("POST", "kv1/app/config", Some(json!({"c": "d"})))
        .await;
    let (_, b) = srv.root("GET", "kv1/app/config", None).await;
    assert_eq!(b["data"], json!({"c": "d"}));
    srv.root("POST", "kv1/app/other", Some(json!({"x": "y"})))
        .await;
    srv.root("POST", "kv1/top", Some(json!({"x": "y"}))).await;

    let (s, b) = srv.root("LIST", "kv1/", None).await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(keys(&b), ["app/", "top"]);
    let (s, b) = srv.root("GET", "kv1/app?list=true", None).await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(keys(&b), ["config", "other"]);

    let (s, _) = srv.root("DELETE", "kv1/app/config", None).await;
    assert_eq!(s, 204);
    let (s, b) = srv.root("GET", "kv1/app/config", None).await;
    assert_eq!(s, 404);
    assert_eq!(b, json!({"errors": ["no value found at kv1/app/config"]}));
    let (s, b) = srv.root("PUT", "kv1/empty", Some(json!({}))).await;
    assert_eq!(s, 400, "{b}");

    // create vs update is decided by whether the key exists.
    srv.write_policy(
        "creator",
        r#"path "kv1/*" { capabilities = ["create", "read"] }"#,
    )
    .await;
    let t = srv.token_with(&["creator"]).await;
    let (s, b) = srv
        .call("POST", "kv1/fresh", Some(&t), Some(json!({"a": "1"})))
        .await;
    assert_eq!(s, 204, "{b}");
    let (s, b) = srv
        .call("POST", "kv1/fresh", Some(&t), Some(json!({"a": "2"})))
        .await;
    assert_eq!(s, 403, "overwriting needs update: {b}");
    let (_, b) = srv.root("GET", "kv1/fresh", None).await;
    assert_eq!(b["data"]["a"], "1");
}
