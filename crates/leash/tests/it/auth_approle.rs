//! `auth/approle/*` over HTTP: roles, role IDs and secret IDs as Vault clients use
//! them; logins that yield exactly the role's policies, TTLs, metadata and a stable
//! entity id; and the hostile cases — replayed, expired, CIDR-bound and concurrently
//! spent secret IDs, bad input, repeated failures (429) — with no secret ID ever in the
//! audit log or in storage in clear.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use leash_testkit::{Options, TestServer};
use leash_types::ManualClock;
use serde_json::{Value, json};

use crate::{error, sorted};

const INVALID: &str = "invalid role or secret ID";
const USED_UP: &str = "secret ID has no uses left";
const EXPIRED: &str = "secret ID has expired";

const AGENT_POLICY: &str = r#"
path "secret/data/agents/*" { capabilities = ["read"] }
path "auth/token/create"    { capabilities = ["update"] }
"#;

async fn enable(srv: &TestServer, path: &str) {
    let (s, b) = srv
        .root(
            "POST",
            &format!("sys/auth/{path}"),
            Some(json!({"type": "approle"})),
        )
        .await;
    assert_eq!(s, 204, "enable approle at {path}: {b}");
}

/// Writes a role (asserting 204) and returns its role ID.
async fn role(srv: &TestServer, mount: &str, name: &str, body: Value) -> String {
    let (s, b) = srv
        .root("POST", &format!("auth/{mount}/role/{name}"), Some(body))
        .await;
    assert_eq!(s, 204, "role write: {b}");
    let (s, b) = srv
        .root("GET", &format!("auth/{mount}/role/{name}/role-id"), None)
        .await;
    assert_eq!(s, 200, "role-id: {b}");
    b["data"]["role_id"].as_str().unwrap().to_owned()
}

/// Generates a secret ID; returns the whole `data`.
async fn secret(srv: &TestServer, mount: &str, name: &str, body: Value) -> Value {
    let (s, b) = srv
        .root(
            "POST",
            &format!("auth/{mount}/role/{name}/secret-id"),
            Some(body),
        )
        .await;
    assert_eq!(s, 200, "secret-id: {b}");
    b["data"].clone()
}

fn sid(d: &Value) -> &str {
    d["secret_id"].as_str().unwrap()
}

async fn login(srv: &TestServer, mount: &str, role_id: &str, secret_id: &str) -> (u16, Value) {
    srv.call(
        "POST",
        &format!("auth/{mount}/login"),
        None,
        Some(json!({"role_id": role_id, "secret_id": secret_id})),
    )
    .await
}

/// A login that must succeed; returns `auth`.
async fn login_ok(srv: &TestServer, mount: &str, role_id: &str, secret_id: &str) -> Value {
    let (s, b) = login(srv, mount, role_id, secret_id).await;
    assert_eq!(s, 200, "login: {b}");
    b["auth"].clone()
}

async fn lookup_self(srv: &TestServer, token: &str) -> Value {
    let (s, b) = srv
        .call("GET", "auth/token/lookup-self", Some(token), None)
        .await;
    assert_eq!(s, 200, "lookup-self: {b}");
    b["data"].clone()
}

/// A login sent from `local` (another loopback address): the server sees that peer.
async fn login_from(srv: &TestServer, local: &str, role_id: &str, secret_id: &str) -> (u16, Value) {
    let ip: IpAddr = local.parse().unwrap();
    let client = reqwest::Client::builder()
        .local_address(ip)
        .build()
        .unwrap();
    let resp = client
        .post(format!("{}/v1/auth/approle/login", srv.url()))
        .json(&json!({"role_id": role_id, "secret_id": secret_id}))
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

fn text_contains(haystack: &[u8], needle: &str) -> bool {
    haystack
        .windows(needle.len())
        .any(|w| w == needle.as_bytes())
}

#[tokio::test]
async fn approle_roles_and_secret_ids_crud_and_reads_never_return_secrets() {
    let srv = TestServer::start().await;
    enable(&srv, "approle").await;
    let (s, b) = srv.root("GET", "sys/auth", None).await;
    assert_eq!(s, 200);
    assert_eq!(b["data"]["approle/"]["type"], "approle");

    let role_id = role(
        &srv,
        "approle",
        "summariser",
        json!({
            "token_policies": ["agent"],
            "token_ttl": "15m",
            "token_max_ttl": "1h",
            "secret_id_ttl": "10m",
            "secret_id_num_uses": 5,
            "secret_id_bound_cidrs": ["127.0.0.0/8"],
        }),
    )
    .await;
    let (s, b) = srv.root("GET", "auth/approle/role/summariser", None).await;
    assert_eq!(s, 200, "{b}");
    let d = &b["data"];
    assert_eq!(d["token_policies"], json!(["agent"]));
    assert_eq!(d["policies"], json!(["agent"]));
    assert_eq!(d["token_ttl"], 900);
    assert_eq!(d["token_max_ttl"], 3600);
    assert_eq!(d["secret_id_ttl"], 600);
    assert_eq!(d["secret_id_num_uses"], 5);
    assert_eq!(d["bind_secret_id"], true);
    assert_eq!(d["secret_id_bound_cidrs"], json!(["127.0.0.0/8"]));
    assert_eq!(d["token_type"], "default");
    assert!(
        !b.to_string().contains(&role_id),
        "role read shows the role ID"
    );

    let (s, b) = srv.root("LIST", "auth/approle/role", None).await;
    assert_eq!((s, b["data"]["keys"].clone()), (200, json!(["summariser"])));

    let issued = secret(
        &srv,
        "approle",
        "summariser",
        json!({"metadata": "{\"agent\": \"a-1\"}"}),
    )
    .await;
    assert_eq!(issued["secret_id_ttl"], 600);
    assert_eq!(issued["secret_id_num_uses"], 5);
    let accessor = issued["secret_id_accessor"].as_str().unwrap();
    let (s, b) = srv
        .root("LIST", "auth/approle/role/summariser/secret-id", None)
        .await;
    assert_eq!((s, b["data"]["keys"].clone()), (200, json!([accessor])));

    let (s, b) = srv
        .root(
            "POST",
            "auth/approle/role/summariser/secret-id/lookup",
            Some(json!({"secret_id": sid(&issued)})),
        )
        .await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["data"]["secret_id_accessor"], accessor);
    assert_eq!(b["data"]["metadata"], json!({"agent": "a-1"}));
    assert_eq!(b["data"]["cidr_list"], json!(["127.0.0.0/8"]));
    assert!(
        !b.to_string().contains(sid(&issued)),
        "lookup shows the secret ID"
    );
    let (s, b) = srv
        .root(
            "POST",
            "auth/approle/role/summariser/secret-id-accessor/lookup",
            Some(json!({"secret_id_accessor": accessor})),
        )
        .await;
    assert_eq!(s, 200, "{b}");
    assert!(!b.to_string().contains(sid(&issued)));

    // Destroy by accessor; the secret ID no longer logs in.
    let (s, b) = srv
        .root(
            "POST",
            "auth/approle/role/summariser/secret-id-accessor/destroy",
            Some(json!({"secret_id_accessor": accessor})),
        )
        .await;
    assert_eq!(s, 204, "{b}");
    let (s, b) = login(&srv, "approle", &role_id, sid(&issued)).await;
    assert_eq!((s, error(&b)), (400, INVALID.to_owned()));

    // Deleting the role deletes its secret IDs.
    let issued = secret(&srv, "approle", "summariser", json!({})).await;
    login_ok(&srv, "approle", &role_id, sid(&issued)).await;
    let (s, _) = srv
        .root("DELETE", "auth/approle/role/summariser", None)
        .await;
    assert_eq!(s, 204);
    let (s, _) = srv.root("GET", "auth/approle/role/summariser", None).await;
    assert_eq!(s, 404);
    let (s, _) = srv.root("LIST", "auth/approle/role", None).await;
    assert_eq!(s, 404);
    let (s, b) = login(&srv, "approle", &role_id, sid(&issued)).await;
    assert_eq!((s, error(&b)), (400, INVALID.to_owned()));
}

#[tokio::test]
async fn approle_login_yields_exactly_the_roles_policies_ttls_and_metadata() {
    let srv = TestServer::start().await;
    srv.write_policy("agent", AGENT_POLICY).await;
    enable(&srv, "approle").await;
    let role_id = role(
        &srv,
        "approle",
        "summariser",
        json!({"token_policies": "agent", "token_ttl": "15m", "token_max_ttl": "1h", "token_num_uses": 7}),
    )
    .await;
    let issued = secret(&srv, "approle", "summariser", json!({})).await;
    let (s, b) = login(&srv, "approle", &role_id, sid(&issued)).await;
    assert_eq!(s, 200, "{b}");
    let auth = &b["auth"];
    assert_eq!(sorted(&auth["policies"]), vec!["agent", "default"]);
    assert_eq!(sorted(&auth["token_policies"]), vec!["agent", "default"]);
    assert_eq!(auth["lease_duration"], 900);
    assert_eq!(auth["renewable"], true);
    assert_eq!(auth["orphan"], true);
    assert_eq!(auth["num_uses"], 7);
    assert_eq!(auth["token_type"], "service");
    assert_eq!(auth["metadata"]["role_name"], "summariser");
    assert!(auth["entity_id"].as_str().is_some_and(|e| e.len() == 36));
    assert!(
        !b.to_string().contains(sid(&issued)),
        "the login answer echoes the secret ID"
    );

    let token = auth["client_token"].as_str().unwrap();
    let d = lookup_self(&srv, token).await;
    assert_eq!(sorted(&d["policies"]), vec!["agent", "default"]);
    assert_eq!(d["creation_ttl"], 900);
    assert!(
        d["ttl"].as_u64().is_some_and(|t| t > 850 && t <= 900),
        "{d}"
    );
    assert_eq!(d["explicit_max_ttl"], 3600);
    assert_eq!(d["display_name"], "approle");
    assert_eq!(d["path"], "auth/approle/login");
    assert_eq!(d["orphan"], true);
    assert_eq!(d["meta"]["role_name"], "summariser");
    assert_eq!(d["entity_id"], auth["entity_id"]);
    // The policy is all it may do.
    let (s, _) = srv
        .call("GET", "secret/data/other/x", Some(token), None)
        .await;
    assert_eq!(s, 403);
}

#[tokio::test]
async fn approle_entity_ids_are_stable_per_identity_and_inherited_by_children() {
    let srv = TestServer::start().await;
    srv.write_policy("agent", AGENT_POLICY).await;
    enable(&srv, "approle").await;
    enable(&srv, "approle2").await;
    let a = role(&srv, "approle", "a", json!({"token_policies": "agent"})).await;
    let b = role(&srv, "approle", "b", json!({"token_policies": "agent"})).await;
    let s1 = secret(&srv, "approle", "a", json!({})).await;
    let s2 = secret(&srv, "approle", "a", json!({})).await;
    let sb = secret(&srv, "approle", "b", json!({})).await;
    let first = login_ok(&srv, "approle", &a, sid(&s1)).await;
    let again = login_ok(&srv, "approle", &a, sid(&s2)).await;
    let other = login_ok(&srv, "approle", &b, sid(&sb)).await;
    assert_eq!(
        first["entity_id"], again["entity_id"],
        "same identity, same id"
    );
    assert_ne!(first["entity_id"], other["entity_id"]);
    assert_ne!(first["client_token"], again["client_token"]);

    // The same role ID on another mount is another identity.
    let a2 = role(&srv, "approle2", "a", json!({"role_id": a.clone()})).await;
    assert_eq!(a2, a);
    let s3 = secret(&srv, "approle2", "a", json!({})).await;
    let elsewhere = login_ok(&srv, "approle2", &a, sid(&s3)).await;
    assert_ne!(first["entity_id"], elsewhere["entity_id"]);

    // A child of the login token carries its entity.
    let parent = first["client_token"].as_str().unwrap();
    let (s, c) = srv
        .call(
            "POST",
            "auth/token/create",
            Some(parent),
            Some(json!({"policies": ["agent"], "ttl": "5m"})),
        )
        .await;
    assert_eq!(s, 200, "{c}");
    assert_eq!(c["auth"]["entity_id"], first["entity_id"]);
    let child = lookup_self(&srv, c["auth"]["client_token"].as_str().unwrap()).await;
    assert_eq!(child["entity_id"], first["entity_id"]);
}

#[tokio::test]
async fn approle_replayed_secret_id_is_refused() {
    let srv = TestServer::start().await;
    enable(&srv, "approle").await;
    let role_id = role(&srv, "approle", "r", json!({"secret_id_num_uses": 1})).await;
    let issued = secret(&srv, "approle", "r", json!({})).await;
    assert_eq!(issued["secret_id_num_uses"], 1);
    login_ok(&srv, "approle", &role_id, sid(&issued)).await;
    let (s, b) = login(&srv, "approle", &role_id, sid(&issued)).await;
    assert_eq!((s, error(&b)), (400, USED_UP.to_owned()));
    assert!(!b.to_string().contains(sid(&issued)));
    // Used up, it is no longer listed.
    let (s, _) = srv
        .root("LIST", "auth/approle/role/r/secret-id", None)
        .await;
    assert_eq!(s, 404);
}

#[tokio::test]
async fn approle_expired_secret_id_is_refused() {
    let clock = ManualClock::new();
    let srv = TestServer::start_with(Options {
        clock: Arc::new(clock.clone()),
        ..Options::default()
    })
    .await;
    enable(&srv, "approle").await;
    let role_id = role(&srv, "approle", "r", json!({})).await;
    let short = secret(&srv, "approle", "r", json!({"ttl": "1s"})).await;
    assert_eq!(short["secret_id_ttl"], 1);
    let long = secret(&srv, "approle", "r", json!({})).await;
    clock.advance(Duration::from_secs(2));
    let (s, b) = login(&srv, "approle", &role_id, sid(&short)).await;
    assert_eq!((s, error(&b)), (400, EXPIRED.to_owned()));
    // Without a TTL a secret ID does not expire.
    login_ok(&srv, "approle", &role_id, sid(&long)).await;
}

#[tokio::test]
async fn approle_cidr_bound_secret_ids_are_enforced_on_the_real_peer() {
    let srv = TestServer::start().await;
    enable(&srv, "approle").await;
    let role_id = role(&srv, "approle", "r", json!({})).await;
    let far = secret(&srv, "approle", "r", json!({"cidr_list": ["10.0.0.0/8"]})).await;
    let near = secret(&srv, "approle", "r", json!({"cidr_list": "127.0.0.0/8"})).await;
    let (s, b) = login(&srv, "approle", &role_id, sid(&far)).await;
    assert_eq!(s, 400, "{b}");
    assert_eq!(
        error(&b),
        "source address 127.0.0.1 is not allowed by the secret ID's CIDR list"
    );
    login_ok(&srv, "approle", &role_id, sid(&near)).await;

    // Forwarded-for headers do not move the peer.
    let resp = reqwest::Client::new()
        .post(format!("{}/v1/auth/approle/login", srv.url()))
        .header("X-Forwarded-For", "10.1.2.3")
        .header("X-Real-IP", "10.1.2.3")
        .json(&json!({"role_id": role_id, "secret_id": sid(&far)}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 400);

    // A secret ID bound to one loopback address: refused from another, accepted from it.
    let one = secret(&srv, "approle", "r", json!({"cidr_list": "127.0.0.2/32"})).await;
    let (s, b) = login(&srv, "approle", &role_id, sid(&one)).await;
    assert_eq!(s, 400, "{b}");
    let (s, b) = login_from(&srv, "127.0.0.2", &role_id, sid(&one)).await;
    assert_eq!(s, 200, "{b}");

    // The role's secret_id_bound_cidrs bind every login through it.
    let bound = role(
        &srv,
        "approle",
        "bound",
        json!({"secret_id_bound_cidrs": "10.0.0.0/8"}),
    )
    .await;
    let (s, b) = srv
        .root(
            "POST",
            "auth/approle/role/bound/secret-id",
            Some(json!({"cidr_list": "127.0.0.0/8"})),
        )
        .await;
    assert_eq!(s, 400, "{b}");
    assert!(error(&b).contains("subset"), "{b}");
    let issued = secret(&srv, "approle", "bound", json!({})).await;
    let (s, b) = login(&srv, "approle", &bound, sid(&issued)).await;
    assert_eq!(s, 400, "{b}");
    assert!(error(&b).contains("127.0.0.1"), "{b}");
}

#[tokio::test]
async fn approle_token_bound_cidrs_are_carried_to_the_token() {
    let srv = TestServer::start().await;
    enable(&srv, "approle").await;
    let here = role(
        &srv,
        "approle",
        "here",
        json!({"token_bound_cidrs": ["127.0.0.1/32"]}),
    )
    .await;
    let issued = secret(&srv, "approle", "here", json!({})).await;
    let auth = login_ok(&srv, "approle", &here, sid(&issued)).await;
    let d = lookup_self(&srv, auth["client_token"].as_str().unwrap()).await;
    assert_eq!(d["bound_cidrs"], json!(["127.0.0.1/32"]));

    let there = role(
        &srv,
        "approle",
        "there",
        json!({"token_bound_cidrs": "10.0.0.0/8"}),
    )
    .await;
    let issued = secret(&srv, "approle", "there", json!({})).await;
    let auth = login_ok(&srv, "approle", &there, sid(&issued)).await;
    let (s, _) = srv
        .call(
            "GET",
            "auth/token/lookup-self",
            auth["client_token"].as_str(),
            None,
        )
        .await;
    assert_eq!(s, 403, "a token bound to 10.0.0.0/8 works from 127.0.0.1");
}

#[tokio::test]
async fn approle_concurrent_logins_spend_a_single_use_once() {
    let srv = TestServer::start().await;
    enable(&srv, "approle").await;
    let role_id = role(&srv, "approle", "r", json!({})).await;
    // Two rounds of eight: the 14 refusals stay under the failed-login limit (20).
    for _ in 0..2 {
        let issued = secret(&srv, "approle", "r", json!({"num_uses": 1})).await;
        let body = json!({"role_id": role_id, "secret_id": sid(&issued)});
        let url = format!("{}/v1/auth/approle/login", srv.url());
        let client = reqwest::Client::new();
        let tasks: Vec<_> = (0..8)
            .map(|_| {
                let (client, url, body) = (client.clone(), url.clone(), body.clone());
                tokio::spawn(async move {
                    let r = client.post(url).json(&body).send().await.unwrap();
                    let status = r.status().as_u16();
                    (status, r.json::<Value>().await.unwrap())
                })
            })
            .collect();
        let mut ok = 0;
        for t in tasks {
            let (s, b) = t.await.unwrap();
            match s {
                200 => ok += 1,
                400 => assert_eq!(error(&b), USED_UP),
                other => panic!("unexpected {other}: {b}"),
            }
        }
        assert_eq!(ok, 1, "exactly one concurrent login may spend the only use");
    }
}

#[tokio::test]
async fn approle_repeated_failures_from_one_source_are_rate_limited() {
    let srv = TestServer::start().await;
    enable(&srv, "approle").await;
    let role_id = role(&srv, "approle", "r", json!({})).await;
    let issued = secret(&srv, "approle", "r", json!({})).await;
    for i in 0..20 {
        let (s, b) = login(&srv, "approle", &role_id, "wrong-secret-id").await;
        assert_eq!((s, error(&b)), (400, INVALID.to_owned()), "attempt {i}");
    }
    let (s, b) = login(&srv, "approle", &role_id, "wrong-secret-id").await;
    assert_eq!(s, 429, "21st failure: {b}");
    assert!(error(&b).contains("too many failed logins"), "{b}");
    // Even the right secret ID waits: the source is limited, not the credential.
    let (s, _) = login(&srv, "approle", &role_id, sid(&issued)).await;
    assert_eq!(s, 429);
    // Another agent (another address) is not locked out.
    let (s, b) = login_from(&srv, "127.0.0.3", &role_id, sid(&issued)).await;
    assert_eq!(s, 200, "{b}");
}

#[tokio::test]
async fn approle_secret_ids_never_reach_the_audit_log_or_storage_in_clear() {
    let srv = TestServer::start().await;
    let log = srv.dir.join("audit-approle.log");
    let (s, b) = srv
        .root(
            "PUT",
            "sys/audit/file",
            Some(json!({"type": "file", "options": {"file_path": log.display().to_string()}})),
        )
        .await;
    assert_eq!(s, 204, "{b}");
    enable(&srv, "approle").await;
    let role_id = role(&srv, "approle", "r", json!({"secret_id_num_uses": 2})).await;
    let issued = secret(&srv, "approle", "r", json!({})).await;
    let custom = "custom-secret-id-for-the-audit-test";
    let (s, b) = srv
        .root(
            "POST",
            "auth/approle/role/r/custom-secret-id",
            Some(json!({"secret_id": custom})),
        )
        .await;
    assert_eq!(s, 200, "{b}");
    let auth = login_ok(&srv, "approle", &role_id, sid(&issued)).await;
    login_ok(&srv, "approle", &role_id, custom).await;
    let (s, _) = login(&srv, "approle", &role_id, "a-wrong-secret-id-value").await;
    assert_eq!(s, 400);
    let (s, _) = srv
        .root(
            "POST",
            "auth/approle/role/r/secret-id/lookup",
            Some(json!({"secret_id": sid(&issued)})),
        )
        .await;
    assert_eq!(s, 200);
    let token = auth["client_token"].as_str().unwrap();
    lookup_self(&srv, token).await;

    let audit = std::fs::read(&log).unwrap();
    for secret in [
        sid(&issued),
        custom,
        "a-wrong-secret-id-value",
        role_id.as_str(),
        token,
    ] {
        assert!(
            !text_contains(&audit, secret),
            "{secret:?} is in the audit log in clear"
        );
    }
    // The token's requests are audited with its entity.
    let text = String::from_utf8(audit).unwrap();
    let entity = auth["entity_id"].as_str().unwrap();
    assert!(
        text.lines().any(|l| {
            let e: Value = serde_json::from_str(l).unwrap();
            e["request"]["path"] == "auth/token/lookup-self" && e["auth"]["entity_id"] == entity
        }),
        "no audit entry of the login token carries its entity id"
    );

    // Storage: no secret ID in any key or value, only keyed hashes.
    let (_, b) = srv.root("GET", "sys/auth", None).await;
    let ns = format!("mount/{}", b["data"]["approle/"]["uuid"].as_str().unwrap());
    let keys = srv.storage.list(&ns, "").await.unwrap();
    let secret_keys: Vec<&String> = keys
        .iter()
        .filter(|k| k.starts_with("secret_id/"))
        .collect();
    assert_eq!(secret_keys.len(), 2, "{keys:?}");
    for k in &secret_keys {
        let hash = k.rsplit('/').next().unwrap();
        assert!(
            hash.len() == 64 && hash.chars().all(|c| c.is_ascii_hexdigit()),
            "{k}"
        );
    }
    for k in &keys {
        let v = srv.storage.get(&ns, k).await.unwrap().unwrap();
        for secret in [sid(&issued), custom] {
            assert!(
                !k.contains(secret) && !text_contains(&v, secret),
                "{k} holds a secret ID"
            );
        }
        assert!(!k.contains(&role_id), "{k} holds the role ID");
    }
}

#[tokio::test]
async fn approle_bad_input_gets_a_clear_400_and_changes_nothing() {
    let srv = TestServer::start().await;
    enable(&srv, "approle").await;
    for (body, want) in [
        (
            json!({"secret_id_num_uses": -1}),
            "secret_id_num_uses cannot be negative",
        ),
        (
            json!({"secret_id_bound_cidrs": ["10.0.0.0/33"]}),
            "secret_id_bound_cidrs",
        ),
        (
            json!({"token_bound_cidrs": "not-a-cidr"}),
            "token_bound_cidrs",
        ),
        (json!({"secret_id_ttl": "soon"}), "secret_id_ttl"),
        (json!({"bind_secret_id": false}), "at least one constraint"),
        (json!({"token_type": "batch"}), "token_type"),
        (json!({"token_policies": {"a": 1}}), "token_policies"),
    ] {
        let (s, b) = srv
            .root("POST", "auth/approle/role/r", Some(body.clone()))
            .await;
        assert_eq!(s, 400, "{body}: {b}");
        assert!(error(&b).contains(want), "{body}: {b}");
    }
    let (s, _) = srv.root("LIST", "auth/approle/role", None).await;
    assert_eq!(s, 404, "a refused write created a role");

    let role_id = role(&srv, "approle", "r", json!({"secret_id_num_uses": 2})).await;
    for (body, want) in [
        (json!({"metadata": "{not json"}), "metadata"),
        (json!({"metadata": "{\"k\": 1}"}), "metadata"),
        (json!({"cidr_list": "300.0.0.1/8"}), "cidr_list"),
        (json!({"num_uses": -1}), "num_uses cannot be negative"),
        (json!({"num_uses": 5}), "num_uses"),
        (json!({"ttl": "never"}), "ttl"),
    ] {
        let (s, b) = srv
            .root("POST", "auth/approle/role/r/secret-id", Some(body.clone()))
            .await;
        assert_eq!(s, 400, "{body}: {b}");
        assert!(error(&b).contains(want), "{body}: {b}");
    }
    let (s, _) = srv
        .root("LIST", "auth/approle/role/r/secret-id", None)
        .await;
    assert_eq!(s, 404, "a refused generation stored a secret ID");
    let (s, b) = srv
        .root("POST", "auth/approle/role/nope/secret-id", Some(json!({})))
        .await;
    assert_eq!(
        (s, error(&b)),
        (400, "role \"nope\" does not exist".to_owned())
    );

    // Logins: missing fields, wrong types, oversized values, unknown role IDs.
    let long = "s".repeat(4096);
    for (body, want) in [
        (json!({}), "missing role_id"),
        (json!({"role_id": role_id}), "missing secret_id"),
        (json!({"role_id": "unknown-role-id"}), "missing secret_id"),
        (json!({"role_id": ["x"], "secret_id": "y"}), "role_id"),
        (
            json!({"role_id": role_id, "secret_id": long}),
            "secret_id is longer than",
        ),
        (
            json!({"role_id": "unknown-role-id", "secret_id": "y"}),
            INVALID,
        ),
    ] {
        let (s, b) = srv
            .call("POST", "auth/approle/login", None, Some(body.clone()))
            .await;
        assert_eq!(s, 400, "{body}: {b}");
        assert!(error(&b).contains(want), "{body}: {b}");
        assert!(!error(&b).contains("sss"), "the secret is echoed: {b}");
    }
    // Logins need no token; everything else does.
    let (s, _) = srv
        .call("GET", "auth/approle/role/r/role-id", None, None)
        .await;
    assert_eq!(s, 403);
}
