//! `auth/kubernetes/*`: configuration, roles, and logins with real service-account
//! JWTs — validated by a local HTTPS server speaking the TokenReview API (request and
//! answers as Kubernetes defines them, including its refusals, a hang, and a
//! certificate from a CA leash does not pin), or offline against `pem_keys` with both
//! legacy and projected claims. Every hostile case of issue 4 is refused with 400
//! naming the failed check, never echoing a token.

use std::sync::Arc;

use jsonwebtoken::Algorithm;
use leash_testkit::TestServer;
use serde_json::{Value, json};

use crate::auth_jwt::support::{
    FakeServer, Reply, Seen, assert_refused, enable, login, now, pki, sign, unsigned, write,
};
use crate::{error, sorted};

const REVIEWER_JWT: &str = "reviewer-jwt-value-0123456789abcdef";
const UID: &str = "6f1c3a52-8f0e-4bde-9c7e-1f2b3c4d5e6f";
const K8S_ISS: &str = "https://kubernetes.default.svc.cluster.local";

/// A projected (bound) service-account token's claims.
fn projected(ns: &str, name: &str) -> Value {
    let t = now();
    json!({
        "aud": ["leash"], "iss": K8S_ISS, "sub": format!("system:serviceaccount:{ns}:{name}"),
        "iat": t, "nbf": t, "exp": t + 600,
        "kubernetes.io": {
            "namespace": ns,
            "pod": {"name": format!("{name}-7d9f-abcde"), "uid": "pod-uid-1"},
            "serviceaccount": {"name": name, "uid": UID},
        },
    })
}

/// A legacy (secret-based) service-account token's claims, with an expiry added
/// (offline validation refuses tokens without one).
fn legacy(ns: &str, name: &str) -> Value {
    json!({
        "iss": "kubernetes/serviceaccount",
        "kubernetes.io/serviceaccount/namespace": ns,
        "kubernetes.io/serviceaccount/secret.name": format!("{name}-token-x7k2p"),
        "kubernetes.io/serviceaccount/service-account.name": name,
        "kubernetes.io/serviceaccount/service-account.uid": UID,
        "sub": format!("system:serviceaccount:{ns}:{name}"),
        "exp": now() + 600,
    })
}

fn sa_token(claims: &Value) -> String {
    sign(Algorithm::RS256, &pki().rsa.private_pem, None, claims)
}

fn agents_role() -> Value {
    json!({
        "bound_service_account_names": ["summariser", "planner"],
        "bound_service_account_namespaces": ["agents-*"],
        "audience": "leash",
        "token_policies": ["agent-read", "agent-db"],
        "token_ttl": "15m",
        "token_max_ttl": "1h",
    })
}

/// A TokenReview answer as the API server gives it for an accepted token.
fn accepted(ns: &str, name: &str, token: &str) -> Value {
    json!({
        "kind": "TokenReview",
        "apiVersion": "authentication.k8s.io/v1",
        "metadata": {"creationTimestamp": null},
        "spec": {"token": token, "audiences": ["leash"]},
        "status": {
            "authenticated": true,
            "user": {
                "username": format!("system:serviceaccount:{ns}:{name}"),
                "uid": UID,
                "groups": ["system:serviceaccounts", format!("system:serviceaccounts:{ns}"), "system:authenticated"],
                "extra": {"authentication.kubernetes.io/pod-name": [format!("{name}-7d9f-abcde")]},
            },
            "audiences": ["leash"],
        },
    })
}

/// A fake API server: accepts the review of tokens it recognises (by the service
/// account their claims name), says "not authenticated" for others.
fn api_server_handler(r: &Seen) -> Reply {
    if r.method != "POST" || r.path != "/apis/authentication.k8s.io/v1/tokenreviews" {
        return Reply::Json(
            404,
            json!({"kind": "Status", "apiVersion": "v1", "status": "Failure",
                                        "message": "the server could not find the requested resource",
                                        "reason": "NotFound", "code": 404}),
        );
    }
    if r.header("authorization") != Some(&format!("Bearer {REVIEWER_JWT}")) {
        return Reply::Json(
            401,
            json!({"kind": "Status", "apiVersion": "v1", "metadata": {},
                                        "status": "Failure", "message": "Unauthorized",
                                        "reason": "Unauthorized", "code": 401}),
        );
    }
    let body = r.json();
    let token = body["spec"]["token"].as_str().unwrap_or("").to_owned();
    let payload = token.split('.').nth(1).unwrap_or("");
    use base64::Engine as _;
    let claims: Value = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or(Value::Null);
    let ns = claims["kubernetes.io"]["namespace"].as_str().unwrap_or("");
    let name = claims["kubernetes.io"]["serviceaccount"]["name"]
        .as_str()
        .unwrap_or("");
    if claims["revoked"] == true || ns.is_empty() {
        return Reply::Json(
            201,
            json!({
                "kind": "TokenReview", "apiVersion": "authentication.k8s.io/v1",
                "metadata": {"creationTimestamp": null},
                "spec": {"token": token},
                "status": {"user": {}, "error": format!("[invalid bearer token, token {token} has been invalidated]")},
            }),
        );
    }
    Reply::Json(201, accepted(ns, name, &token))
}

/// A server with `auth/kubernetes` pointed at `api` (pinned CA, reviewer JWT) and the
/// `agents` role.
async fn review_server(api: &FakeServer) -> TestServer {
    let srv = TestServer::start().await;
    enable(&srv, "kubernetes", "kubernetes").await;
    write(
        &srv,
        "auth/kubernetes/config",
        json!({"kubernetes_host": api.url(), "kubernetes_ca_cert": pki().ca_pem,
               "token_reviewer_jwt": REVIEWER_JWT, "disable_local_ca_jwt": true}),
    )
    .await;
    write(&srv, "auth/kubernetes/role/agents", agents_role()).await;
    srv
}

/// A server with `auth/kubernetes` validating offline with `pem_keys`.
async fn offline_server() -> TestServer {
    let srv = TestServer::start().await;
    enable(&srv, "kubernetes", "kubernetes").await;
    write(
        &srv,
        "auth/kubernetes/config",
        json!({"kubernetes_host": "https://127.0.0.1:1", "pem_keys": [pki().rsa.public_pem, pki().ec.public_pem],
               "issuer": K8S_ISS, "disable_local_ca_jwt": true}),
    )
    .await;
    let mut role = agents_role();
    role["bound_service_account_namespaces"] = json!(["agents-*", "legacy"]);
    write(&srv, "auth/kubernetes/role/agents", role).await;
    srv
}

#[tokio::test]
async fn k8s_tokenreview_login_grants_exactly_the_role_and_speaks_the_wire_format() {
    let api = FakeServer::start(Some(&pki().server), api_server_handler).await;
    let srv = review_server(&api).await;
    let jwt = sa_token(&projected("agents-prod", "summariser"));
    let (s, b) = login(&srv, "kubernetes", "agents", &jwt).await;
    assert_eq!(s, 200, "{b}");
    let auth = &b["auth"];
    assert_eq!(
        sorted(&auth["policies"]),
        vec!["agent-db", "agent-read", "default"]
    );
    assert_eq!(
        sorted(&auth["token_policies"]),
        vec!["agent-db", "agent-read", "default"]
    );
    assert_eq!(auth["lease_duration"], 900);
    assert_eq!(auth["orphan"], true);
    assert_eq!(
        auth["metadata"],
        json!({"role": "agents", "service_account_name": "summariser",
               "service_account_namespace": "agents-prod", "service_account_uid": UID,
               "service_account_secret_name": ""})
    );
    let token = auth["client_token"].as_str().unwrap();
    let (_, me) = srv
        .call("GET", "auth/token/lookup-self", Some(token), None)
        .await;
    assert_eq!(
        me["data"]["display_name"],
        "kubernetes-agents-prod-summariser"
    );
    assert_eq!(me["data"]["explicit_max_ttl"], 3600);

    // The request, as Kubernetes defines it.
    let reqs = api.requests();
    assert_eq!(reqs.len(), 1);
    let r = &reqs[0];
    assert_eq!(r.method, "POST");
    assert_eq!(r.path, "/apis/authentication.k8s.io/v1/tokenreviews");
    assert_eq!(
        r.header("authorization"),
        Some(format!("Bearer {REVIEWER_JWT}").as_str())
    );
    assert!(
        r.header("content-type")
            .unwrap()
            .starts_with("application/json")
    );
    assert_eq!(
        r.json(),
        json!({"apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview",
               "spec": {"token": jwt, "audiences": ["leash"]}})
    );

    // Stable entity id per service account (its uid).
    let entity = auth["entity_id"].as_str().unwrap().to_owned();
    let (_, again) = login(
        &srv,
        "kubernetes",
        "agents",
        &sa_token(&projected("agents-prod", "summariser")),
    )
    .await;
    assert_eq!(again["auth"]["entity_id"], entity.as_str());
}

#[tokio::test]
async fn k8s_config_and_roles_never_return_the_reviewer_jwt() {
    let api = FakeServer::start(Some(&pki().server), api_server_handler).await;
    let srv = review_server(&api).await;
    let (s, c) = srv.root("GET", "auth/kubernetes/config", None).await;
    assert_eq!(s, 200, "{c}");
    assert!(!c.to_string().contains(REVIEWER_JWT), "{c}");
    assert_eq!(c["data"]["token_reviewer_jwt_set"], true);
    assert_eq!(c["data"]["kubernetes_host"], api.url());
    assert_eq!(c["data"]["kubernetes_ca_cert"], pki().ca_pem.trim());
    let (s, r) = srv.root("GET", "auth/kubernetes/role/agents", None).await;
    assert_eq!(s, 200, "{r}");
    assert_eq!(
        r["data"]["bound_service_account_namespaces"],
        json!(["agents-*"])
    );
    assert_eq!(r["data"]["alias_name_source"], "serviceaccount_uid");
    assert_eq!(r["data"]["token_ttl"], 900);
    assert_eq!(r["data"]["policies"], json!(["agent-read", "agent-db"]));
    let (s, l) = srv.root("LIST", "auth/kubernetes/role", None).await;
    assert_eq!((s, l["data"]["keys"].clone()), (200, json!(["agents"])));
    for (bad, want) in [
        (
            json!({"bound_service_account_names": ["a"]}),
            "bound_service_account_namespaces is required",
        ),
        (
            json!({"bound_service_account_names": "*", "bound_service_account_namespaces": "*"}),
            "can not both be",
        ),
        (
            json!({"bound_service_account_names": ["*", "a"], "bound_service_account_namespaces": "x"}),
            "cannot be mixed",
        ),
        (
            json!({"bound_service_account_names": "a", "bound_service_account_namespaces": "x", "alias_name_source": "pod"}),
            "alias_name_source",
        ),
    ] {
        let (s, b) = srv
            .root("POST", "auth/kubernetes/role/bad", Some(bad))
            .await;
        assert_eq!(s, 400, "{b}");
        assert!(error(&b).contains(want), "{b}");
    }
    let (s, b) = srv
        .root(
            "POST",
            "auth/kubernetes/config",
            Some(json!({"kubernetes_host": "https://x", "kubernetes_ca_cert": "junk"})),
        )
        .await;
    assert_eq!(s, 400, "{b}");
    assert!(error(&b).contains("kubernetes_ca_cert"), "{b}");
    // A role without an audience is accepted with a warning.
    let b = write(
        &srv,
        "auth/kubernetes/role/any-aud",
        json!({"bound_service_account_names": "a", "bound_service_account_namespaces": "x"}),
    )
    .await;
    assert!(
        b["warnings"].to_string().contains("audience is not set"),
        "{b}"
    );
}

#[tokio::test]
async fn k8s_unknown_role_is_refused() {
    let api = FakeServer::start(Some(&pki().server), api_server_handler).await;
    let srv = review_server(&api).await;
    let jwt = sa_token(&projected("agents-prod", "summariser"));
    assert_refused(&srv, "kubernetes", "nope", &jwt, "invalid role name").await;
    assert!(api.requests().is_empty());
}

#[tokio::test]
async fn k8s_tokenreview_unauthenticated_is_refused() {
    let api = FakeServer::start(Some(&pki().server), api_server_handler).await;
    let srv = review_server(&api).await;
    let mut c = projected("agents-prod", "summariser");
    c["revoked"] = json!(true);
    let jwt = sa_token(&c);
    // The server's message quotes the token; leash's answer must not.
    assert_refused(
        &srv,
        "kubernetes",
        "agents",
        &jwt,
        "TokenReview: not authenticated",
    )
    .await;
    let (_, b) = login(&srv, "kubernetes", "agents", &jwt).await;
    assert!(error(&b).contains("[redacted] has been invalidated"), "{b}");
}

#[tokio::test]
async fn k8s_tokenreview_refusing_the_reviewer_is_a_named_failure() {
    let api = FakeServer::start(Some(&pki().server), api_server_handler).await;
    let srv = review_server(&api).await;
    write(
        &srv,
        "auth/kubernetes/config",
        json!({"kubernetes_host": api.url(), "kubernetes_ca_cert": pki().ca_pem,
               "token_reviewer_jwt": "a-wrong-reviewer-jwt-value", "disable_local_ca_jwt": true}),
    )
    .await;
    let jwt = sa_token(&projected("agents-prod", "summariser"));
    assert_refused(
        &srv,
        "kubernetes",
        "agents",
        &jwt,
        "TokenReview request failed",
    )
    .await;
    let (_, b) = login(&srv, "kubernetes", "agents", &jwt).await;
    let e = error(&b);
    assert!(e.contains("401 Unauthorized"), "{e}");
    assert!(!e.contains("a-wrong-reviewer"), "{e}");
}

#[tokio::test]
async fn k8s_without_a_reviewer_jwt_the_callers_token_reviews_itself() {
    let jwt = sa_token(&projected("agents-prod", "planner"));
    let expected = format!("Bearer {jwt}");
    let api = FakeServer::start(Some(&pki().server), move |r| {
        if r.header("authorization") == Some(expected.as_str()) {
            let token = r.json()["spec"]["token"].as_str().unwrap().to_owned();
            Reply::Json(201, accepted("agents-prod", "planner", &token))
        } else {
            Reply::Json(401, json!({"kind": "Status", "status": "Failure", "reason": "Unauthorized", "code": 401}))
        }
    })
    .await;
    let srv = TestServer::start().await;
    enable(&srv, "kubernetes", "kubernetes").await;
    write(
        &srv,
        "auth/kubernetes/config",
        json!({"kubernetes_host": api.url(), "kubernetes_ca_cert": pki().ca_pem, "disable_local_ca_jwt": true}),
    )
    .await;
    write(&srv, "auth/kubernetes/role/agents", agents_role()).await;
    let (s, b) = login(&srv, "kubernetes", "agents", &jwt).await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["auth"]["metadata"]["service_account_name"], "planner");
}

#[tokio::test]
async fn k8s_tokenreview_timeout_is_refused() {
    let api = FakeServer::start(Some(&pki().server), |_| Reply::Hang).await;
    let srv = review_server(&api).await;
    let jwt = sa_token(&projected("agents-prod", "summariser"));
    let started = std::time::Instant::now();
    assert_refused(
        &srv,
        "kubernetes",
        "agents",
        &jwt,
        "TokenReview request failed: timed out",
    )
    .await;
    let took = started.elapsed();
    assert!(
        took < std::time::Duration::from_secs(30),
        "bounded: {took:?}"
    );
}

#[tokio::test]
async fn k8s_tokenreview_server_certificate_from_another_ca_is_refused() {
    let api = FakeServer::start(Some(&pki().rogue_server), api_server_handler).await;
    let srv = review_server(&api).await;
    let jwt = sa_token(&projected("agents-prod", "summariser"));
    assert_refused(
        &srv,
        "kubernetes",
        "agents",
        &jwt,
        "TokenReview request failed",
    )
    .await;
    let (_, b) = login(&srv, "kubernetes", "agents", &jwt).await;
    assert!(
        error(&b).contains("certificate"),
        "the TLS failure is named: {b}"
    );
    assert!(
        api.requests().is_empty(),
        "neither token reached the unpinned server"
    );
}

#[tokio::test]
async fn k8s_service_account_not_bound_is_refused() {
    let api = FakeServer::start(Some(&pki().server), api_server_handler).await;
    let srv = review_server(&api).await;
    let jwt = sa_token(&projected("agents-prod", "intruder"));
    assert_refused(
        &srv,
        "kubernetes",
        "agents",
        &jwt,
        "service account name not authorized",
    )
    .await;
}

#[tokio::test]
async fn k8s_namespace_not_bound_is_refused() {
    let api = FakeServer::start(Some(&pki().server), api_server_handler).await;
    let srv = review_server(&api).await;
    // `agents-*` is a prefix glob: `agents` itself and `kube-system` are outside it.
    for ns in ["kube-system", "agents", "xagents-prod"] {
        let jwt = sa_token(&projected(ns, "summariser"));
        assert_refused(
            &srv,
            "kubernetes",
            "agents",
            &jwt,
            "namespace not authorized",
        )
        .await;
    }
}

#[tokio::test]
async fn k8s_tokenreview_identity_must_match_the_tokens_claims() {
    // A (misbehaving) API server vouches for another account than the token names.
    let api = FakeServer::start(Some(&pki().server), |r| {
        let token = r.json()["spec"]["token"].as_str().unwrap_or("").to_owned();
        Reply::Json(201, accepted("agents-prod", "planner", &token))
    })
    .await;
    let srv = review_server(&api).await;
    let jwt = sa_token(&projected("agents-prod", "summariser"));
    assert_refused(
        &srv,
        "kubernetes",
        "agents",
        &jwt,
        "does not match the token's claims",
    )
    .await;
}

#[tokio::test]
async fn k8s_offline_legacy_and_projected_claims_both_log_in() {
    let srv = offline_server().await;
    let (s, b) = login(
        &srv,
        "kubernetes",
        "agents",
        &sa_token(&projected("agents-dev", "planner")),
    )
    .await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(
        b["auth"]["metadata"]["service_account_namespace"],
        "agents-dev"
    );
    assert_eq!(b["auth"]["metadata"]["service_account_secret_name"], "");
    let projected_entity = b["auth"]["entity_id"].clone();

    // Legacy tokens carry no audience; a role without one accepts them.
    write(
        &srv,
        "auth/kubernetes/role/legacy",
        json!({"bound_service_account_names": "planner", "bound_service_account_namespaces": "legacy",
               "token_policies": "old"}),
    )
    .await;
    write(
        &srv,
        "auth/kubernetes/config",
        json!({"pem_keys": [pki().rsa.public_pem, pki().ec.public_pem], "disable_local_ca_jwt": true}),
    )
    .await;
    let (s, b) = login(
        &srv,
        "kubernetes",
        "legacy",
        &sa_token(&legacy("legacy", "planner")),
    )
    .await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(
        b["auth"]["metadata"],
        json!({"role": "legacy", "service_account_name": "planner",
               "service_account_namespace": "legacy", "service_account_uid": UID,
               "service_account_secret_name": "planner-token-x7k2p"})
    );
    assert_eq!(sorted(&b["auth"]["policies"]), vec!["default", "old"]);
    // The same uid on the same mount is the same entity.
    assert_eq!(b["auth"]["entity_id"], projected_entity);

    // ES256-signed tokens verify with the EC key.
    let es = sign(
        Algorithm::ES256,
        &pki().ec.private_pem,
        None,
        &projected("agents-dev", "planner"),
    );
    let (s, b) = login(&srv, "kubernetes", "agents", &es).await;
    assert_eq!(s, 200, "{b}");

    // alias_name_source = serviceaccount_name: the entity follows ns/name.
    write(
        &srv,
        "auth/kubernetes/role/agents",
        json!({"alias_name_source": "serviceaccount_name"}),
    )
    .await;
    let (_, b2) = login(&srv, "kubernetes", "agents", &es).await;
    assert_ne!(b2["auth"]["entity_id"], projected_entity);
}

#[tokio::test]
async fn k8s_offline_malformed_token_is_refused() {
    let srv = offline_server().await;
    for bad in ["not-a-jwt", "a.b", "x.y.z"] {
        let (s, b) = login(&srv, "kubernetes", "agents", bad).await;
        assert_eq!(s, 403, "{b}");
        assert!(error(&b).contains("malformed JWT"), "{b}");
    }
    // A signed token that is not a service account's.
    let mut c = projected("agents-dev", "planner");
    c.as_object_mut().unwrap().remove("kubernetes.io");
    assert_refused(
        &srv,
        "kubernetes",
        "agents",
        &sa_token(&c),
        "not a Kubernetes service-account token",
    )
    .await;
    // Claims that contradict each other.
    let mut c = projected("agents-dev", "planner");
    c["sub"] = json!("system:serviceaccount:agents-dev:admin");
    assert_refused(&srv, "kubernetes", "agents", &sa_token(&c), "sub claim").await;
}

#[tokio::test]
async fn k8s_offline_alg_none_is_refused() {
    let srv = offline_server().await;
    let t = unsigned(&json!({"alg": "none"}), &projected("agents-dev", "planner"));
    assert_refused(
        &srv,
        "kubernetes",
        "agents",
        &t,
        "JWT algorithm \"none\" is not allowed",
    )
    .await;
}

#[tokio::test]
async fn k8s_offline_hs256_signed_with_the_rsa_public_key_is_refused() {
    let srv = offline_server().await;
    let t = sign(
        Algorithm::HS256,
        &pki().rsa.public_pem,
        None,
        &projected("agents-dev", "planner"),
    );
    assert_refused(
        &srv,
        "kubernetes",
        "agents",
        &t,
        "JWT algorithm \"HS256\" is not allowed",
    )
    .await;
    let t = sign(
        Algorithm::RS256,
        &pki().rsa2.private_pem,
        None,
        &projected("agents-dev", "planner"),
    );
    assert_refused(&srv, "kubernetes", "agents", &t, "invalid JWT signature").await;
}

#[tokio::test]
async fn k8s_offline_expired_token_is_refused() {
    let srv = offline_server().await;
    let mut c = projected("agents-dev", "planner");
    c["iat"] = json!(now() - 7200);
    c["nbf"] = json!(now() - 7200);
    c["exp"] = json!(now() - 3600);
    assert_refused(
        &srv,
        "kubernetes",
        "agents",
        &sa_token(&c),
        "token has expired",
    )
    .await;
    // A legacy token without exp cannot be checked for revocation offline.
    let mut c = legacy("agents-dev", "planner");
    c.as_object_mut().unwrap().remove("exp");
    c["aud"] = json!("leash");
    assert_refused(
        &srv,
        "kubernetes",
        "agents",
        &sa_token(&c),
        "token has no expiry",
    )
    .await;
}

#[tokio::test]
async fn k8s_offline_not_yet_valid_token_is_refused() {
    let srv = offline_server().await;
    let mut c = projected("agents-dev", "planner");
    c["nbf"] = json!(now() + 3600);
    c["exp"] = json!(now() + 7200);
    assert_refused(
        &srv,
        "kubernetes",
        "agents",
        &sa_token(&c),
        "token is not yet valid",
    )
    .await;
}

#[tokio::test]
async fn k8s_offline_wrong_issuer_is_refused() {
    let srv = offline_server().await;
    let mut c = projected("agents-dev", "planner");
    c["iss"] = json!("https://other-cluster.example");
    assert_refused(
        &srv,
        "kubernetes",
        "agents",
        &sa_token(&c),
        "issuer mismatch",
    )
    .await;
}

#[tokio::test]
async fn k8s_offline_wrong_audience_is_refused() {
    let srv = offline_server().await;
    let mut c = projected("agents-dev", "planner");
    c["aud"] = json!(["https://kubernetes.default.svc"]);
    assert_refused(
        &srv,
        "kubernetes",
        "agents",
        &sa_token(&c),
        "invalid audience",
    )
    .await;
}

#[tokio::test]
async fn k8s_offline_unbound_account_and_namespace_are_refused() {
    let srv = offline_server().await;
    let t = sa_token(&projected("agents-dev", "intruder"));
    assert_refused(
        &srv,
        "kubernetes",
        "agents",
        &t,
        "service account name not authorized",
    )
    .await;
    let t = sa_token(&projected("default", "planner"));
    assert_refused(&srv, "kubernetes", "agents", &t, "namespace not authorized").await;
}

#[tokio::test]
async fn k8s_repeated_failures_from_one_source_are_rate_limited() {
    let srv = Arc::new(offline_server().await);
    let bad = sign(
        Algorithm::RS256,
        &pki().rsa2.private_pem,
        None,
        &projected("agents-dev", "planner"),
    );
    let mut statuses = Vec::new();
    for _ in 0..22 {
        let (s, _) = login(&srv, "kubernetes", "agents", &bad).await;
        statuses.push(s);
    }
    assert_eq!(statuses[0], 403);
    assert_eq!(*statuses.last().unwrap(), 429, "{statuses:?}");
    // Even a good token from this source waits out the window.
    let (s, b) = login(
        &srv,
        "kubernetes",
        "agents",
        &sa_token(&projected("agents-dev", "planner")),
    )
    .await;
    assert_eq!(s, 429, "{b}");
}
