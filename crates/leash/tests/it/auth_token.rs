//! `auth/token/*`: creation and its limits, the parent/child tree, lookup, renewal and
//! revocation here; roles (with bound CIDRs), expiry, and what presented credentials
//! look like (bad tokens, bearer, storage) in the submodules.

mod credentials;
mod expiry;
mod roles;

use leash_testkit::TestServer;
use serde_json::{Value, json};

use crate::{client_token, create_token, error, sorted};

const CREATOR: &str = r#"
path "auth/token/create"        { capabilities = ["update"] }
path "auth/token/create-orphan" { capabilities = ["update"] }
path "secret/data/creator/*"    { capabilities = ["read"] }
"#;

const CREATOR_SUDO: &str = r#"
path "auth/token/create" { capabilities = ["update", "sudo"] }
"#;

fn secs(v: &Value) -> u64 {
    v.as_u64()
        .unwrap_or_else(|| panic!("not a number of seconds: {v}"))
}

async fn lookup_self(srv: &TestServer, t: &str) -> (u16, Value) {
    srv.call("GET", "auth/token/lookup-self", Some(t), None)
        .await
}

/// Whether a token is live, asked as its holder would.
async fn alive(srv: &TestServer, t: &str) -> bool {
    match lookup_self(srv, t).await {
        (200, _) => true,
        (403, b) => {
            assert_eq!(
                b,
                json!({"errors": ["permission denied", "token is not valid"]})
            );
            false
        }
        (s, b) => panic!("lookup-self answered {s}: {b}"),
    }
}

/// Creates a token with `parent` as the caller.
async fn create_as(srv: &TestServer, parent: &str, path: &str, body: Value) -> (u16, Value) {
    srv.call("POST", path, Some(parent), Some(body)).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_answers_vaults_auth_block() {
    let srv = TestServer::start().await;
    srv.write_policy("p1", CREATOR).await;
    let (s, b) = srv
        .root(
            "POST",
            "auth/token/create",
            Some(json!({
                "policies": ["p1"],
                "ttl": "1h",
                "meta": {"agent": "a1", "task": "t-9"},
                "display_name": "worker",
            })),
        )
        .await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["data"], Value::Null);
    assert_eq!(b["warnings"], Value::Null, "{b}");
    assert_eq!(b["lease_id"], "");
    assert!(b["request_id"].as_str().is_some_and(|r| !r.is_empty()));
    let a = &b["auth"];
    let t = client_token(a);
    assert!(t.starts_with("lsh."), "{t}");
    assert_eq!(
        leash_types::token::recognise(&t),
        Some(leash_types::TokenKind::Service)
    );
    assert!(
        a["accessor"]
            .as_str()
            .is_some_and(|x| !x.is_empty() && x != t)
    );
    assert_eq!(sorted(&a["policies"]), ["default", "p1"]);
    assert_eq!(sorted(&a["token_policies"]), ["default", "p1"]);
    assert_eq!(a["metadata"], json!({"agent": "a1", "task": "t-9"}));
    assert!((3590..=3600).contains(&secs(&a["lease_duration"])), "{a}");
    assert_eq!(a["renewable"], true);
    assert_eq!(a["entity_id"], "");
    assert_eq!(a["token_type"], "service");
    assert_eq!(a["orphan"], false);
    assert_eq!(a["num_uses"], 0);

    let (s, l) = lookup_self(&srv, &t).await;
    assert_eq!(s, 200, "{l}");
    let d = &l["data"];
    assert_eq!(d["id"], t.as_str());
    assert_eq!(d["accessor"], a["accessor"]);
    assert_eq!(d["display_name"], "token-worker");
    assert_eq!(d["meta"], json!({"agent": "a1", "task": "t-9"}));
    assert_eq!(sorted(&d["policies"]), ["default", "p1"]);
    assert_eq!(d["path"], "auth/token/create");
    assert_eq!(d["creation_ttl"], 3600);
    assert!((3590..=3600).contains(&secs(&d["ttl"])), "{d}");
    assert_eq!(d["explicit_max_ttl"], 0);
    assert_eq!(d["num_uses"], 0);
    assert_eq!(d["orphan"], false);
    assert_eq!(d["renewable"], true);
    assert_eq!(d["type"], "service");
    assert_eq!(d["entity_id"], "");
    assert!(d["creation_time"].as_i64().unwrap() > 1_600_000_000);
    assert!(
        d["expire_time"].as_str().is_some_and(|e| e.ends_with('Z')),
        "{d}"
    );
    assert!(d["issue_time"].as_str().is_some(), "{d}");
    // The lookup-self answer is not a sys/ path: no top-level copy.
    assert!(l.get("accessor").is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn explicit_max_ttl_caps_the_ttl_with_a_warning() {
    let srv = TestServer::start().await;
    let (s, b) = srv
        .root(
            "POST",
            "auth/token/create",
            Some(json!({"ttl": "2h", "explicit_max_ttl": "1h", "policies": ["default"]})),
        )
        .await;
    assert_eq!(s, 200, "{b}");
    assert!(secs(&b["auth"]["lease_duration"]) <= 3600, "{b}");
    let w = b["warnings"]
        .as_array()
        .unwrap_or_else(|| panic!("no warning: {b}"));
    assert!(!w.is_empty());
    let t = client_token(&b["auth"]);
    let (_, l) = lookup_self(&srv, &t).await;
    assert_eq!(l["data"]["explicit_max_ttl"], 3600);
    assert!(secs(&l["data"]["ttl"]) <= 3600);

    // The system max (24h by default) caps every token, root's children included.
    let (s, b) = srv
        .root(
            "POST",
            "auth/token/create",
            Some(json!({"ttl": "48h", "policies": ["default"]})),
        )
        .await;
    assert_eq!(s, 200, "{b}");
    assert!(secs(&b["auth"]["lease_duration"]) <= 86400, "{b}");
    assert!(
        b["warnings"].as_array().is_some_and(|w| !w.is_empty()),
        "{b}"
    );
    let t = client_token(&b["auth"]);
    let (s, r) = srv
        .call(
            "POST",
            "auth/token/renew-self",
            Some(&t),
            Some(json!({"increment": "72h"})),
        )
        .await;
    assert_eq!(s, 200, "{r}");
    assert!(secs(&r["auth"]["lease_duration"]) <= 86400, "{r}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn num_uses_count_down_and_the_token_dies_at_zero() {
    let srv = TestServer::start().await;
    let a = create_token(&srv, json!({"num_uses": 3, "policies": ["default"]})).await;
    assert_eq!(a["num_uses"], 3);
    let t = client_token(&a);
    // Each request spends one use; lookup reports what is left after this one (as Vault).
    let (s, b) = lookup_self(&srv, &t).await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["data"]["num_uses"], 2, "{b}");
    let (s, b) = lookup_self(&srv, &t).await;
    assert_eq!(s, 200);
    assert_eq!(b["data"]["num_uses"], 1, "{b}");
    // The last use still succeeds…
    let (s, _) = lookup_self(&srv, &t).await;
    assert_eq!(s, 200);
    // …and then the token is gone, for its holder and for root.
    assert!(!alive(&srv, &t).await);
    let (s, b) = srv
        .root("POST", "auth/token/lookup", Some(json!({"token": t})))
        .await;
    assert_eq!(s, 403, "{b}");
    let (s, b) = srv
        .root(
            "POST",
            "auth/token/lookup-accessor",
            Some(json!({"accessor": a["accessor"]})),
        )
        .await;
    assert_eq!(s, 400, "{b}");

    // A denied request spends nothing (the ACL check comes first).
    let a = create_token(&srv, json!({"num_uses": 1, "policies": ["default"]})).await;
    let t = client_token(&a);
    let (s, _) = srv.call("GET", "sys/policy", Some(&t), None).await;
    assert_eq!(s, 403);
    assert!(alive(&srv, &t).await, "the one use is still there");
    assert!(!alive(&srv, &t).await);

    // A use-limited token cannot have children.
    srv.write_policy("creator", CREATOR).await;
    let a = create_token(&srv, json!({"num_uses": 5, "policies": ["creator"]})).await;
    let (s, b) = create_as(&srv, &client_token(&a), "auth/token/create", json!({})).await;
    assert_eq!(s, 400, "{b}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_default_policy_leaves_default_out() {
    let srv = TestServer::start().await;
    srv.write_policy("p1", CREATOR).await;
    let a = create_token(&srv, json!({"policies": ["p1"], "no_default_policy": true})).await;
    assert_eq!(sorted(&a["policies"]), ["p1"]);
    let t = client_token(&a);
    // Without `default` it may not even look itself up.
    let (s, _) = lookup_self(&srv, &t).await;
    assert_eq!(s, 403);
    let (s, b) = srv
        .root("POST", "auth/token/lookup", Some(json!({"token": t})))
        .await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(sorted(&b["data"]["policies"]), ["p1"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn custom_ids_need_root() {
    let srv = TestServer::start().await;
    srv.write_policy("creator", CREATOR).await;
    let a = create_token(
        &srv,
        json!({"id": "my-chosen-token-id", "policies": ["creator"]}),
    )
    .await;
    assert_eq!(a["client_token"], "my-chosen-token-id");
    assert!(alive(&srv, "my-chosen-token-id").await);
    let (s, b) = create_as(
        &srv,
        "my-chosen-token-id",
        "auth/token/create",
        json!({"id": "another-chosen-id"}),
    )
    .await;
    assert_eq!(s, 400, "{b}");
    // The same id twice is refused.
    let (s, b) = srv
        .root(
            "POST",
            "auth/token/create",
            Some(json!({"id": "my-chosen-token-id"})),
        )
        .await;
    assert_eq!(s, 400, "{b}");
    // An id that wears leash's prefix without a valid checksum could never be used
    // (every presented copy is refused offline): it is refused at creation. Made at run
    // time from a real token with its last checksum character changed.
    let real = leash_types::TokenValue::generate(leash_types::TokenKind::Service);
    let mut bad_checksum = real.expose().to_owned();
    let last = bad_checksum.pop().unwrap();
    bad_checksum.push(if last == 'A' { 'B' } else { 'A' });
    let (s, b) = srv
        .root(
            "POST",
            "auth/token/create",
            Some(json!({"id": bad_checksum})),
        )
        .await;
    assert_eq!(s, 400, "{b}");
    assert!(error(&b).contains("checksum"), "{b}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn period_and_no_parent_need_sudo() {
    let srv = TestServer::start().await;
    srv.write_policy("creator", CREATOR).await;
    srv.write_policy("creator-sudo", CREATOR_SUDO).await;
    let plain = srv.token_with(&["creator"]).await;
    let (s, b) = create_as(&srv, &plain, "auth/token/create", json!({"period": "1h"})).await;
    assert_eq!(s, 400, "{b}");
    assert!(error(&b).contains("sudo"), "{b}");
    let (s, b) = create_as(
        &srv,
        &plain,
        "auth/token/create",
        json!({"no_parent": true}),
    )
    .await;
    assert_eq!(s, 400, "{b}");

    let sudo = srv.token_with(&["creator-sudo"]).await;
    let (s, b) = create_as(&srv, &sudo, "auth/token/create", json!({"period": "1h"})).await;
    assert_eq!(s, 200, "{b}");
    let (s, b) = create_as(&srv, &sudo, "auth/token/create", json!({"no_parent": true})).await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["auth"]["orphan"], true);
    let (s, b) = srv
        .root(
            "POST",
            "auth/token/create",
            Some(json!({"period": "30m", "policies": ["default"]})),
        )
        .await;
    assert_eq!(s, 200, "{b}");
    assert!(
        (1790..=1800).contains(&secs(&b["auth"]["lease_duration"])),
        "{b}"
    );
    let t = client_token(&b["auth"]);
    let (_, l) = lookup_self(&srv, &t).await;
    assert_eq!(l["data"]["period"], 1800, "{l}");
    // Renewing a periodic token resets it to the period, whatever the increment.
    let (s, r) = srv
        .call(
            "POST",
            "auth/token/renew-self",
            Some(&t),
            Some(json!({"increment": "5h"})),
        )
        .await;
    assert_eq!(s, 200, "{r}");
    assert!(
        (1790..=1800).contains(&secs(&r["auth"]["lease_duration"])),
        "{r}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_orphan_has_no_parent() {
    let srv = TestServer::start().await;
    srv.write_policy("creator", CREATOR).await;
    let parent = srv.token_with(&["creator"]).await;
    let (s, b) = create_as(&srv, &parent, "auth/token/create-orphan", json!({})).await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["auth"]["orphan"], true);
    let orphan = client_token(&b["auth"]);
    let (s, b) = create_as(&srv, &parent, "auth/token/create", json!({})).await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["auth"]["orphan"], false);
    let child = client_token(&b["auth"]);
    let (s, _) = srv
        .root("POST", "auth/token/revoke", Some(json!({"token": parent})))
        .await;
    assert_eq!(s, 204);
    assert!(alive(&srv, &orphan).await, "an orphan outlives its creator");
    assert!(!alive(&srv, &child).await, "a child does not");
    let (_, l) = lookup_self(&srv, &orphan).await;
    assert_eq!(l["data"]["orphan"], true);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn child_policies_must_be_a_subset_of_the_parents() {
    let srv = TestServer::start().await;
    srv.write_policy("creator", CREATOR).await;
    srv.write_policy("creator-sudo", CREATOR_SUDO).await;
    srv.write_policy(
        "other",
        r#"path "secret/data/*" { capabilities = ["read"] }"#,
    )
    .await;
    let parent = srv.token_with(&["creator"]).await;
    let (s, b) = create_as(
        &srv,
        &parent,
        "auth/token/create",
        json!({"policies": ["other"]}),
    )
    .await;
    assert_eq!(s, 400, "{b}");
    assert_eq!(error(&b), "child policies must be subset of parent");
    let (s, b) = create_as(
        &srv,
        &parent,
        "auth/token/create",
        json!({"policies": ["creator", "other"]}),
    )
    .await;
    assert_eq!(s, 400, "{b}");
    let (s, b) = create_as(
        &srv,
        &parent,
        "auth/token/create",
        json!({"policies": ["creator"]}),
    )
    .await;
    assert_eq!(s, 200, "{b}");
    // No policies: the parent's.
    let (s, b) = create_as(&srv, &parent, "auth/token/create", json!({})).await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(sorted(&b["auth"]["policies"]), ["creator", "default"]);
    // Fewer policies is fine.
    let (s, b) = create_as(
        &srv,
        &parent,
        "auth/token/create",
        json!({"policies": ["default"]}),
    )
    .await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(sorted(&b["auth"]["policies"]), ["default"]);
    // Root only from root.
    let (s, b) = create_as(
        &srv,
        &parent,
        "auth/token/create",
        json!({"policies": ["root"]}),
    )
    .await;
    assert_eq!(s, 400, "{b}");
    // sudo on the create path lifts the subset rule.
    let sudo = srv.token_with(&["creator-sudo"]).await;
    let (s, b) = create_as(
        &srv,
        &sudo,
        "auth/token/create",
        json!({"policies": ["other"]}),
    )
    .await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(sorted(&b["auth"]["policies"]), ["default", "other"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn child_ttl_is_capped_by_the_parents_remaining_life() {
    let srv = TestServer::start().await;
    srv.write_policy("creator", CREATOR).await;
    let parent = create_token(&srv, json!({"policies": ["creator"], "ttl": "60s"})).await;
    let (s, b) = create_as(
        &srv,
        &client_token(&parent),
        "auth/token/create",
        json!({"ttl": "1h"}),
    )
    .await;
    assert_eq!(s, 200, "{b}");
    assert!(secs(&b["auth"]["lease_duration"]) <= 60, "{b}");
    assert!(
        b["warnings"].as_array().is_some_and(|w| !w.is_empty()),
        "{b}"
    );
    // Renewal cannot take the child past its parent either.
    let child = client_token(&b["auth"]);
    let (s, r) = srv
        .call(
            "POST",
            "auth/token/renew-self",
            Some(&child),
            Some(json!({"increment": "2h"})),
        )
        .await;
    assert_eq!(s, 200, "{r}");
    assert!(secs(&r["auth"]["lease_duration"]) <= 60, "{r}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoking_a_parent_revokes_the_subtree() {
    let srv = TestServer::start().await;
    srv.write_policy("creator", CREATOR).await;
    let a = srv.token_with(&["creator"]).await;
    let (_, b) = create_as(&srv, &a, "auth/token/create", json!({})).await;
    let b_tok = client_token(&b["auth"]);
    let (_, c) = create_as(&srv, &b_tok, "auth/token/create", json!({})).await;
    let c_tok = client_token(&c["auth"]);
    let (_, c2) = create_as(&srv, &b_tok, "auth/token/create", json!({})).await;
    let c2_tok = client_token(&c2["auth"]);
    let sibling = srv.token_with(&["creator"]).await;
    for t in [&a, &b_tok, &c_tok, &c2_tok] {
        assert!(alive(&srv, t).await);
    }
    let (s, r) = srv
        .call("POST", "auth/token/revoke-self", Some(&a), Some(json!({})))
        .await;
    assert_eq!(s, 204, "{r}");
    for t in [&a, &b_tok, &c_tok, &c2_tok] {
        assert!(!alive(&srv, t).await, "subtree member still alive");
    }
    assert!(
        alive(&srv, &sibling).await,
        "an unrelated token is untouched"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoke_orphan_keeps_the_children() {
    let srv = TestServer::start().await;
    srv.write_policy("creator", CREATOR).await;
    let a = srv.token_with(&["creator"]).await;
    let (_, b) = create_as(&srv, &a, "auth/token/create", json!({})).await;
    let b_tok = client_token(&b["auth"]);
    let (_, c) = create_as(&srv, &b_tok, "auth/token/create", json!({})).await;
    let c_tok = client_token(&c["auth"]);
    // revoke-orphan needs sudo.
    let (s, _) = srv
        .call(
            "POST",
            "auth/token/revoke-orphan",
            Some(&a),
            Some(json!({"token": b_tok})),
        )
        .await;
    assert_eq!(s, 403);
    let (s, r) = srv
        .root(
            "POST",
            "auth/token/revoke-orphan",
            Some(json!({"token": a})),
        )
        .await;
    assert_eq!(s, 204, "{r}");
    assert!(!alive(&srv, &a).await);
    assert!(alive(&srv, &b_tok).await, "the child survives");
    assert!(alive(&srv, &c_tok).await, "the grandchild survives");
    let (_, l) = lookup_self(&srv, &b_tok).await;
    assert_eq!(l["data"]["orphan"], true, "the child is now an orphan: {l}");
    // The grandchild still hangs off the child.
    let (s, _) = srv
        .root("POST", "auth/token/revoke", Some(json!({"token": b_tok})))
        .await;
    assert_eq!(s, 204);
    assert!(!alive(&srv, &c_tok).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lookup_lookup_self_and_lookup_accessor() {
    let srv = TestServer::start().await;
    let a = create_token(&srv, json!({"policies": ["default"], "meta": {"k": "v"}})).await;
    let t = client_token(&a);
    let acc = a["accessor"].as_str().unwrap().to_owned();

    let (s, b) = srv
        .root("POST", "auth/token/lookup", Some(json!({"token": t})))
        .await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["data"]["id"], t.as_str());
    assert_eq!(b["data"]["accessor"], acc.as_str());

    let (s, b) = lookup_self(&srv, &t).await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["data"]["id"], t.as_str());

    let (s, b) = srv
        .root(
            "POST",
            "auth/token/lookup-accessor",
            Some(json!({"accessor": acc})),
        )
        .await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["data"]["id"], "", "an accessor never reveals the token");
    assert_eq!(b["data"]["accessor"], acc.as_str());
    assert_eq!(b["data"]["meta"], json!({"k": "v"}));

    // Unknown token: 403; unknown accessor: 400; missing field: 400.
    let (s, b) = srv
        .root(
            "POST",
            "auth/token/lookup",
            Some(json!({"token": "no-such-token-anywhere"})),
        )
        .await;
    assert_eq!(s, 403, "{b}");
    let (s, b) = srv
        .root(
            "POST",
            "auth/token/lookup-accessor",
            Some(json!({"accessor": "nope"})),
        )
        .await;
    assert_eq!(s, 400, "{b}");
    let (s, b) = srv.root("POST", "auth/token/lookup", Some(json!({}))).await;
    assert_eq!(s, 400, "{b}");
    // Looking up other tokens needs a policy for it.
    let (s, _) = srv
        .call(
            "POST",
            "auth/token/lookup",
            Some(&t),
            Some(json!({"token": srv.root_token})),
        )
        .await;
    assert_eq!(s, 403);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn renewal_never_passes_the_explicit_max() {
    let srv = TestServer::start().await;
    let a = create_token(
        &srv,
        json!({"policies": ["default"], "ttl": "10m", "explicit_max_ttl": "30m"}),
    )
    .await;
    let t = client_token(&a);
    let acc = a["accessor"].as_str().unwrap().to_owned();

    let (s, b) = srv
        .root(
            "POST",
            "auth/token/renew",
            Some(json!({"token": t, "increment": "20m"})),
        )
        .await;
    assert_eq!(s, 200, "{b}");
    let d = secs(&b["auth"]["lease_duration"]);
    assert!((1190..=1200).contains(&d), "{b}");
    assert_eq!(b["warnings"], Value::Null, "{b}");

    let (s, b) = srv
        .call(
            "POST",
            "auth/token/renew-self",
            Some(&t),
            Some(json!({"increment": "1h"})),
        )
        .await;
    assert_eq!(s, 200, "{b}");
    let d = secs(&b["auth"]["lease_duration"]);
    assert!(
        (1790..=1800).contains(&d),
        "capped at the explicit max: {b}"
    );
    assert!(
        b["warnings"].as_array().is_some_and(|w| !w.is_empty()),
        "{b}"
    );
    assert_eq!(b["auth"]["client_token"], t.as_str());

    let (s, b) = srv
        .root(
            "POST",
            "auth/token/renew-accessor",
            Some(json!({"accessor": acc, "increment": "2h"})),
        )
        .await;
    assert_eq!(s, 200, "{b}");
    assert!(secs(&b["auth"]["lease_duration"]) <= 1800, "{b}");
    assert_eq!(
        b["auth"]["client_token"], "",
        "renew-accessor never returns the token"
    );
    assert_eq!(b["auth"]["accessor"], acc.as_str());

    let (_, l) = lookup_self(&srv, &t).await;
    assert!(secs(&l["data"]["ttl"]) <= 1800, "{l}");
    assert!(l["data"]["last_renewal_time"].as_i64().is_some(), "{l}");

    // A token made non-renewable cannot be renewed.
    let a = create_token(&srv, json!({"policies": ["default"], "renewable": false})).await;
    assert_eq!(a["renewable"], false);
    let (s, b) = srv
        .call(
            "POST",
            "auth/token/renew-self",
            Some(&client_token(&a)),
            Some(json!({})),
        )
        .await;
    assert_eq!(s, 400, "{b}");
    // Renewing an unknown token or accessor is a 400.
    let (s, b) = srv
        .root(
            "POST",
            "auth/token/renew",
            Some(json!({"token": "no-such-token-x"})),
        )
        .await;
    assert_eq!(s, 400, "{b}");
    let (s, b) = srv
        .root(
            "POST",
            "auth/token/renew-accessor",
            Some(json!({"accessor": "nope"})),
        )
        .await;
    assert_eq!(s, 400, "{b}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoke_revoke_self_and_revoke_accessor() {
    let srv = TestServer::start().await;
    let t1 = srv.token_with(&["default"]).await;
    let (s, b) = srv
        .root("POST", "auth/token/revoke", Some(json!({"token": t1})))
        .await;
    assert_eq!(s, 204, "{b}");
    assert_eq!(b, Value::Null);
    assert!(!alive(&srv, &t1).await);

    let t2 = srv.token_with(&["default"]).await;
    let (s, _) = srv
        .call("POST", "auth/token/revoke-self", Some(&t2), None)
        .await;
    assert_eq!(s, 204);
    assert!(!alive(&srv, &t2).await);

    let a = create_token(&srv, json!({"policies": ["default"]})).await;
    let (s, _) = srv
        .root(
            "POST",
            "auth/token/revoke-accessor",
            Some(json!({"accessor": a["accessor"]})),
        )
        .await;
    assert_eq!(s, 204);
    assert!(!alive(&srv, &client_token(&a)).await);
    let (s, b) = srv
        .root(
            "POST",
            "auth/token/revoke-accessor",
            Some(json!({"accessor": a["accessor"]})),
        )
        .await;
    assert_eq!(s, 400, "the accessor is gone too: {b}");

    // A token with only `default` cannot revoke others.
    let t3 = srv.token_with(&["default"]).await;
    let t4 = srv.token_with(&["default"]).await;
    let (s, _) = srv
        .call(
            "POST",
            "auth/token/revoke",
            Some(&t3),
            Some(json!({"token": t4})),
        )
        .await;
    assert_eq!(s, 403);
    assert!(alive(&srv, &t4).await);
}
