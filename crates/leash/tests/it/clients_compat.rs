//! What unmodified Vault clients (vaultrs, node-vault, consul-template, the Vault CLI)
//! deserialize or call first: every documented `sys/auth` and `sys/mounts` field,
//! `LIST auth/token/accessors` (sudo), and `sys/internal/ui/mounts/<path>` for a
//! least-privilege token.

use leash_testkit::TestServer;
use serde_json::json;

use crate::{client_token, create_token, error};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sys_auth_and_mounts_carry_every_field_clients_deserialize() {
    let srv = TestServer::start().await;
    let (s, b) = srv
        .root(
            "POST",
            "sys/mounts/database",
            Some(json!({"type": "database", "options": {}})),
        )
        .await;
    assert_eq!(s, 204, "{b}");
    let (s, b) = srv
        .root("POST", "sys/auth/approle", Some(json!({"type": "approle"})))
        .await;
    assert_eq!(s, 204, "{b}");

    let (s, b) = srv.root("GET", "sys/auth", None).await;
    assert_eq!(s, 200, "{b}");
    for (path, e) in b["data"].as_object().unwrap() {
        // vaultrs' AuthResponse: all of these, config.token_type included.
        for f in ["accessor", "description", "type", "uuid"] {
            assert!(e[f].is_string(), "{path}: {f} in {e}");
        }
        for f in ["external_entropy_access", "local", "seal_wrap"] {
            assert!(e[f].is_boolean(), "{path}: {f} in {e}");
        }
        assert!(e["options"].is_null() || e["options"].is_object(), "{e}");
        let c = &e["config"];
        assert!(
            c["default_lease_ttl"].is_u64() && c["max_lease_ttl"].is_u64(),
            "{c}"
        );
        assert_eq!(c["force_no_cache"], false);
        assert_eq!(c["token_type"], "default-service", "{path}: {c}");
    }
    assert!(
        b["data"]["approle/"].is_object() && b["data"]["token/"].is_object(),
        "{b}"
    );

    let (s, b) = srv.root("GET", "sys/mounts", None).await;
    assert_eq!(s, 200, "{b}");
    for (path, e) in b["data"].as_object().unwrap() {
        for f in ["accessor", "description", "type", "uuid"] {
            assert!(e[f].is_string(), "{path}: {f} in {e}");
        }
        for f in ["external_entropy_access", "local", "seal_wrap"] {
            assert!(e[f].is_boolean(), "{path}: {f} in {e}");
        }
        // A secrets mount's options are an object, as Vault answers (never null).
        assert!(e["options"].is_object(), "{path}: options {e}");
        assert!(e["config"]["default_lease_ttl"].is_u64(), "{e}");
        assert_eq!(e["config"]["force_no_cache"], false);
    }
    assert_eq!(b["data"]["database/"]["options"], json!({}));
    assert_eq!(b["data"]["secret/"]["options"]["version"], "2");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_accessors_are_listed_to_sudo_only_and_paginate() {
    let srv = TestServer::start().await;
    let mut mine = Vec::new();
    for i in 0..3 {
        let a = create_token(
            &srv,
            json!({"policies": ["default"], "display_name": format!("t{i}")}),
        )
        .await;
        mine.push(a["accessor"].as_str().unwrap().to_owned());
    }
    let (s, b) = srv.root("LIST", "auth/token/accessors", None).await;
    assert_eq!(s, 200, "{b}");
    let keys: Vec<String> = serde_json::from_value(b["data"]["keys"].clone()).unwrap();
    for a in &mine {
        assert!(keys.contains(a), "{a} missing from {keys:?}");
    }
    let mut sorted = keys.clone();
    sorted.sort();
    assert_eq!(keys, sorted, "sorted");
    // GET ?list=true is the same listing.
    let (s, b2) = srv
        .root("GET", "auth/token/accessors?list=true", None)
        .await;
    assert_eq!(s, 200, "{b2}");
    assert_eq!(b2["data"]["keys"], b["data"]["keys"]);

    // Paginated: `limit` and `after`.
    let (s, p1) = srv.root("LIST", "auth/token/accessors?limit=2", None).await;
    assert_eq!(s, 200, "{p1}");
    let p1: Vec<String> = serde_json::from_value(p1["data"]["keys"].clone()).unwrap();
    assert_eq!(p1, keys[..2].to_vec());
    let (_, p2) = srv
        .root(
            "LIST",
            &format!("auth/token/accessors?after={}", p1[1]),
            None,
        )
        .await;
    let p2: Vec<String> = serde_json::from_value(p2["data"]["keys"].clone()).unwrap();
    assert_eq!(p2, keys[2..].to_vec());
    let (s, b) = srv.root("LIST", "auth/token/accessors?limit=0", None).await;
    assert_eq!(s, 400, "{b}");

    // A revoked token's accessor is gone.
    let (s, _) = srv
        .root(
            "POST",
            "auth/token/revoke-accessor",
            Some(json!({"accessor": mine[0]})),
        )
        .await;
    assert_eq!(s, 204);
    let (_, b) = srv.root("LIST", "auth/token/accessors", None).await;
    assert!(
        !b["data"]["keys"]
            .as_array()
            .unwrap()
            .contains(&json!(mine[0])),
        "{b}"
    );

    // Sudo, as in Vault: `list` alone is not enough.
    srv.write_policy(
        "lister",
        r#"path "auth/token/accessors" { capabilities = ["list"] }"#,
    )
    .await;
    let t = srv.token_with(&["lister"]).await;
    let (s, b) = srv
        .call("LIST", "auth/token/accessors", Some(&t), None)
        .await;
    assert_eq!(s, 403, "{b}");
    srv.write_policy(
        "auditor",
        r#"path "auth/token/accessors" { capabilities = ["list", "sudo"] }"#,
    )
    .await;
    let t = srv.token_with(&["auditor"]).await;
    let (s, b) = srv
        .call("LIST", "auth/token/accessors", Some(&t), None)
        .await;
    assert_eq!(s, 200, "{b}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ui_mounts_answer_any_token_with_a_grant_under_the_mount() {
    let srv = TestServer::start().await;
    srv.write_policy(
        "agent-config",
        r#"path "secret/data/agent/*" { capabilities = ["read"] }"#,
    )
    .await;
    let t = client_token(&create_token(&srv, json!({"policies": ["agent-config"]})).await);
    // What consul-template and the Vault CLI ask before reading `secret/agent/config`.
    for path in ["secret/agent/config", "secret", "secret/"] {
        let (s, b) = srv
            .call(
                "GET",
                &format!("sys/internal/ui/mounts/{path}"),
                Some(&t),
                None,
            )
            .await;
        assert_eq!(s, 200, "{path}: {b}");
        assert_eq!(b["data"]["type"], "kv");
        assert_eq!(b["data"]["options"]["version"], "2", "{b}");
        assert_eq!(b["data"]["path"], "secret/");
    }
    // Then the KV v2 read works with that same token.
    let (s, _) = srv
        .root(
            "POST",
            "secret/data/agent/config",
            Some(json!({"data": {"k": "v"}})),
        )
        .await;
    assert_eq!(s, 200);
    let (s, b) = srv
        .call("GET", "secret/data/agent/config", Some(&t), None)
        .await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["data"]["data"]["k"], "v");

    // A mount the token has nothing under stays hidden; so does one that does not exist.
    let (s, _) = srv
        .root("POST", "sys/mounts/kv", Some(json!({"type": "kv"})))
        .await;
    assert_eq!(s, 204);
    let (s, b) = srv
        .call("GET", "sys/internal/ui/mounts/kv/x", Some(&t), None)
        .await;
    assert_eq!(s, 403, "{b}");
    let (s, b) = srv
        .call("GET", "sys/internal/ui/mounts/nosuch/x", Some(&t), None)
        .await;
    assert_eq!(s, 403, "{b}");
    // A deny-only rule under the mount grants nothing.
    srv.write_policy("denier", r#"path "kv/*" { capabilities = ["deny"] }"#)
        .await;
    let d = srv.token_with(&["denier"]).await;
    let (s, b) = srv
        .call("GET", "sys/internal/ui/mounts/kv/x", Some(&d), None)
        .await;
    assert_eq!(s, 403, "{b}");
    // Without a token: refused, with the reason.
    let (s, b) = srv
        .call("GET", "sys/internal/ui/mounts/secret/x", None, None)
        .await;
    assert_eq!(s, 403, "{b}");
    let _ = error(&b);
}
