//! `auth/token/roles/*` and `auth/token/create/:role`: allowed and disallowed policies,
//! orphans, explicit max TTL, and bound CIDRs checked against the real peer address.

use leash_testkit::TestServer;
use serde_json::json;

use super::{alive, lookup_self, secs, sorted};
use crate::{client_token, raw};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn roles_shape_the_tokens_they_create() {
    let srv = TestServer::start().await;
    srv.write_policy("p1", r#"path "secret/data/p1" { capabilities = ["read"] }"#)
        .await;
    srv.write_policy("p2", r#"path "secret/data/p2" { capabilities = ["read"] }"#)
        .await;
    srv.write_policy("p3", r#"path "secret/data/p3" { capabilities = ["read"] }"#)
        .await;
    let (s, b) = srv
        .root(
            "POST",
            "auth/token/roles/agents",
            Some(json!({
                "allowed_policies": ["p1", "p2"],
                "orphan": true,
                "token_explicit_max_ttl": "2h",
            })),
        )
        .await;
    assert_eq!(s, 204, "{b}");
    let (s, b) = srv.root("GET", "auth/token/roles/agents", None).await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["data"]["name"], "agents");
    assert_eq!(sorted(&b["data"]["allowed_policies"]), ["p1", "p2"]);
    assert_eq!(b["data"]["orphan"], true);
    assert_eq!(b["data"]["token_explicit_max_ttl"], 7200);
    let (s, b) = srv
        .root(
            "POST",
            "auth/token/roles/nop3",
            Some(json!({"disallowed_policies": ["p3"]})),
        )
        .await;
    assert_eq!(s, 204, "{b}");
    let (s, b) = srv.root("LIST", "auth/token/roles", None).await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(sorted(&b["data"]["keys"]), ["agents", "nop3"]);

    // Within the allowed set.
    let (s, b) = srv
        .root(
            "POST",
            "auth/token/create/agents",
            Some(json!({"policies": ["p1"]})),
        )
        .await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(sorted(&b["auth"]["policies"]), ["default", "p1"]);
    assert_eq!(b["auth"]["orphan"], true);
    let t = client_token(&b["auth"]);
    let (_, l) = lookup_self(&srv, &t).await;
    assert_eq!(l["data"]["role"], "agents");
    assert_eq!(l["data"]["path"], "auth/token/create/agents");
    assert_eq!(l["data"]["explicit_max_ttl"], 7200);
    // No policies asked: the role's allowed set.
    let (s, b) = srv
        .root("POST", "auth/token/create/agents", Some(json!({})))
        .await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(sorted(&b["auth"]["policies"]), ["default", "p1", "p2"]);
    // Outside it: refused, even for root.
    let (s, b) = srv
        .root(
            "POST",
            "auth/token/create/agents",
            Some(json!({"policies": ["p3"]})),
        )
        .await;
    assert_eq!(s, 400, "{b}");
    let (s, b) = srv
        .root(
            "POST",
            "auth/token/create/nop3",
            Some(json!({"policies": ["p3"]})),
        )
        .await;
    assert_eq!(s, 400, "{b}");
    let (s, b) = srv
        .root(
            "POST",
            "auth/token/create/nop3",
            Some(json!({"policies": ["p2"]})),
        )
        .await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["auth"]["orphan"], false);
    // The explicit max of the role caps the TTL.
    let (s, b) = srv
        .root(
            "POST",
            "auth/token/create/agents",
            Some(json!({"ttl": "5h"})),
        )
        .await;
    assert_eq!(s, 200, "{b}");
    assert!(secs(&b["auth"]["lease_duration"]) <= 7200, "{b}");
    // Unknown role.
    let (s, b) = srv
        .root("POST", "auth/token/create/nobody", Some(json!({})))
        .await;
    assert_eq!(s, 400, "{b}");

    let (s, _) = srv.root("DELETE", "auth/token/roles/nop3", None).await;
    assert_eq!(s, 204);
    let (s, _) = srv.root("GET", "auth/token/roles/nop3", None).await;
    assert_eq!(s, 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn role_bound_cidrs_are_checked_against_the_peer_address() {
    let srv = TestServer::start().await;
    for (name, cidr) in [("far", "10.0.0.0/8"), ("near", "127.0.0.1/32")] {
        let (s, b) = srv
            .root(
                "POST",
                &format!("auth/token/roles/{name}"),
                Some(json!({"token_bound_cidrs": [cidr]})),
            )
            .await;
        assert_eq!(s, 204, "{b}");
    }
    let (s, b) = srv
        .root(
            "POST",
            "auth/token/create/far",
            Some(json!({"policies": ["default"]})),
        )
        .await;
    assert_eq!(s, 200, "{b}");
    let far = client_token(&b["auth"]);
    let (s, b) = lookup_self(&srv, &far).await;
    assert_eq!(s, 403, "used from 127.0.0.1: {b}");
    assert_eq!(
        b,
        json!({"errors": ["permission denied", "token is not valid"]})
    );
    // A forwarded-for header changes nothing.
    let r = raw(
        srv.addr,
        "GET",
        "/v1/auth/token/lookup-self",
        &[("X-Vault-Token", &far), ("X-Forwarded-For", "10.1.2.3")],
        b"",
    )
    .await;
    assert_eq!(r.status, 403);
    // Root still sees it exists, with its bound CIDRs.
    let (s, b) = srv
        .root("POST", "auth/token/lookup", Some(json!({"token": far})))
        .await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["data"]["bound_cidrs"], json!(["10.0.0.0/8"]));

    let (s, b) = srv
        .root(
            "POST",
            "auth/token/create/near",
            Some(json!({"policies": ["default"]})),
        )
        .await;
    assert_eq!(s, 200, "{b}");
    let near = client_token(&b["auth"]);
    assert!(alive(&srv, &near).await);

    // A bad CIDR is refused when the role is written.
    let (s, b) = srv
        .root(
            "POST",
            "auth/token/roles/bad",
            Some(json!({"token_bound_cidrs": ["10.0.0.0/33"]})),
        )
        .await;
    assert_eq!(s, 400, "{b}");
}
