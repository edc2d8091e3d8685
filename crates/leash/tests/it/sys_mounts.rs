//! `sys/mounts` and `sys/auth`: list shapes (with Vault's top-level copy), enable,
//! disable, tune, and the refusals (reserved and overlapping paths, unknown types).

use leash_testkit::TestServer;
use serde_json::{Value, json};

use crate::error;

fn mount_paths(b: &Value) -> Vec<String> {
    let mut v: Vec<String> = b["data"].as_object().unwrap().keys().cloned().collect();
    v.sort();
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mounts_list_shape() {
    let srv = TestServer::start().await;
    let (s, b) = srv.root("GET", "sys/mounts", None).await;
    assert_eq!(s, 200, "{b}");
    let secret = &b["data"]["secret/"];
    assert_eq!(secret["type"], "kv", "{b}");
    assert_eq!(secret["options"]["version"], "2");
    assert!(
        secret["accessor"]
            .as_str()
            .is_some_and(|a| a.starts_with("kv_")),
        "{secret}"
    );
    assert!(secret["uuid"].is_string());
    assert!(secret["config"]["default_lease_ttl"].is_u64());
    assert!(secret["config"]["max_lease_ttl"].is_u64());
    assert_eq!(secret["local"], false);
    assert_eq!(secret["seal_wrap"], false);
    assert!(secret["description"].is_string());
    assert_eq!(b["data"]["sys/"]["type"], "system");
    // Vault's HTTPSysInjector: data keys also at the top level.
    assert_eq!(b["secret/"], b["data"]["secret/"]);
    assert_eq!(b["sys/"], b["data"]["sys/"]);
    assert!(b["request_id"].is_string());

    let (s, b) = srv.root("GET", "sys/auth", None).await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["data"]["token/"]["type"], "token");
    assert_eq!(b["token/"], b["data"]["token/"]);
    assert_eq!(mount_paths(&b), ["token/"]);

    // Reading the mount table is not for everyone.
    let t = srv.token_with(&["default"]).await;
    let (s, _) = srv.call("GET", "sys/mounts", Some(&t), None).await;
    assert_eq!(s, 403);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enable_tune_and_disable_a_mount() {
    let srv = TestServer::start().await;
    let (s, b) = srv
        .root(
            "POST",
            "sys/mounts/team/kv",
            Some(json!({
                "type": "kv-v2",
                "description": "team secrets",
                "config": {"default_lease_ttl": "1h", "max_lease_ttl": "2h"},
            })),
        )
        .await;
    assert_eq!(s, 204, "{b}");
    let (_, b) = srv.root("GET", "sys/mounts", None).await;
    let m = &b["data"]["team/kv/"];
    assert_eq!(m["type"], "kv", "{b}");
    assert_eq!(m["options"]["version"], "2");
    assert_eq!(m["description"], "team secrets");
    assert_eq!(m["config"]["default_lease_ttl"], 3600);
    assert_eq!(m["config"]["max_lease_ttl"], 7200);

    // The new mount serves requests.
    let (s, b) = srv
        .root("POST", "team/kv/data/x", Some(json!({"data": {"a": "b"}})))
        .await;
    assert_eq!(s, 200, "{b}");

    let (s, b) = srv.root("GET", "sys/mounts/team/kv/tune", None).await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["data"]["default_lease_ttl"], 3600);
    assert_eq!(b["data"]["max_lease_ttl"], 7200);
    let (s, b) = srv
        .root(
            "POST",
            "sys/mounts/team/kv/tune",
            Some(json!({"max_lease_ttl": "3h", "description": "tuned"})),
        )
        .await;
    assert_eq!(s, 204, "{b}");
    let (_, b) = srv.root("GET", "sys/mounts/team/kv/tune", None).await;
    assert_eq!(b["data"]["max_lease_ttl"], 10800);
    assert_eq!(b["data"]["description"], "tuned");
    let (s, b) = srv
        .root(
            "POST",
            "sys/mounts/team/kv/tune",
            Some(json!({"default_lease_ttl": "5h"})),
        )
        .await;
    assert_eq!(s, 400, "default above max: {b}");
    let (_, b) = srv.root("GET", "sys/mounts/team/kv/tune", None).await;
    assert_eq!(
        b["data"]["default_lease_ttl"], 3600,
        "a refused tune changes nothing"
    );
    let (s, b) = srv.root("GET", "sys/mounts/nowhere/tune", None).await;
    assert_eq!(s, 400, "{b}");

    // The secret engine keeps serving after a tune.
    let (s, _) = srv.root("GET", "team/kv/data/x", None).await;
    assert_eq!(s, 200);

    let (s, b) = srv.root("DELETE", "sys/mounts/team/kv", None).await;
    assert_eq!(s, 204, "{b}");
    let (_, b) = srv.root("GET", "sys/mounts", None).await;
    assert!(b["data"].get("team/kv/").is_none(), "{b}");
    let (s, _) = srv.root("GET", "team/kv/data/x", None).await;
    assert_eq!(s, 404);
    // Its data went with it: a new mount at the same path starts empty.
    let (s, _) = srv
        .root("POST", "sys/mounts/team/kv", Some(json!({"type": "kv-v2"})))
        .await;
    assert_eq!(s, 204);
    let (s, b) = srv.root("GET", "team/kv/data/x", None).await;
    assert_eq!(s, 404, "{b}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reserved_overlapping_and_unknown_mounts_are_refused() {
    let srv = TestServer::start().await;
    let (s, _) = srv
        .root("POST", "sys/mounts/team/kv", Some(json!({"type": "kv"})))
        .await;
    assert_eq!(s, 204);
    let (_, before) = srv.root("GET", "sys/mounts", None).await;
    for (path, body) in [
        ("sys/mounts/sys", json!({"type": "kv"})),
        ("sys/mounts/sys/x", json!({"type": "kv"})),
        ("sys/mounts/auth", json!({"type": "kv"})),
        ("sys/mounts/auth/x", json!({"type": "kv"})),
        ("sys/mounts/cubbyhole", json!({"type": "kv"})),
        ("sys/mounts/identity", json!({"type": "kv"})),
        // Already in use, or nested in / around a mount.
        ("sys/mounts/secret", json!({"type": "kv"})),
        ("sys/mounts/secret/sub", json!({"type": "kv"})),
        ("sys/mounts/team", json!({"type": "kv"})),
        ("sys/mounts/team/kv/deeper", json!({"type": "kv"})),
        // Unknown or missing type, bad options.
        ("sys/mounts/x1", json!({"type": "no-such-engine"})),
        ("sys/mounts/x2", json!({})),
        (
            "sys/mounts/x3",
            json!({"type": "kv", "options": {"version": "7"}}),
        ),
        ("sys/mounts/x4", json!({"type": "system"})),
        ("sys/mounts/x5", json!({"type": "token"})),
    ] {
        let (s, b) = srv.root("POST", path, Some(body.clone())).await;
        assert_eq!(s, 400, "{path} {body}: {b}");
        assert!(!error(&b).is_empty(), "a 400 says why: {b}");
    }
    let (_, after) = srv.root("GET", "sys/mounts", None).await;
    assert_eq!(
        mount_paths(&before),
        mount_paths(&after),
        "nothing was mounted"
    );

    // Built-in mounts cannot go.
    let (s, b) = srv.root("DELETE", "sys/mounts/sys", None).await;
    assert_eq!(s, 400, "{b}");
    let (s, b) = srv.root("DELETE", "sys/auth/token", None).await;
    assert_eq!(s, 400, "{b}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_table_enable_refusals() {
    let srv = TestServer::start().await;
    for (path, body) in [
        ("sys/auth/mytoken", json!({"type": "token"})),
        ("sys/auth/weird", json!({"type": "no-such-method"})),
        ("sys/auth/token", json!({"type": "token"})),
        ("sys/auth/nothing", json!({})),
    ] {
        let (s, b) = srv.root("POST", path, Some(body.clone())).await;
        assert_eq!(s, 400, "{path} {body}: {b}");
    }
    let (_, b) = srv.root("GET", "sys/auth", None).await;
    assert_eq!(mount_paths(&b), ["token/"]);
    let (s, b) = srv.root("GET", "sys/auth/token/tune", None).await;
    assert_eq!(s, 200, "{b}");
    assert!(
        b["data"]["max_lease_ttl"].as_u64().is_some_and(|v| v > 0),
        "{b}"
    );
    // Enabling auth methods needs sudo.
    srv.write_policy(
        "mounts",
        r#"path "sys/auth/*" { capabilities = ["create", "update", "read"] }"#,
    )
    .await;
    let t = srv.token_with(&["mounts"]).await;
    let (s, _) = srv
        .call("POST", "sys/auth/x", Some(&t), Some(json!({"type": "kv"})))
        .await;
    assert_eq!(s, 403);
}
