//! `auth/jwt/*` (also mounted as type `oidc`): configuration, roles, and logins with
//! real signed JWTs — against PEM keys, a JWKS served over HTTPS from a pinned CA (with
//! key rotation), plain HTTP, and OIDC discovery — plus every hostile token of issue 4,
//! each refused with 400 naming the failed check and never echoing the token.

pub(crate) mod support;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use jsonwebtoken::Algorithm;
use leash_testkit::{Options, TestServer};
use leash_types::ManualClock;
use serde_json::{Value, json};

use self::support::{
    FakeServer, Reply, assert_refused, enable, login, now, pki, sign, unsigned, write,
};
use crate::{error, sorted};

const ISS: &str = "https://ci.example.test";

fn claims(sub: &str) -> Value {
    let t = now();
    json!({
        "iss": ISS, "aud": ["leash"], "sub": sub,
        "repository": "acme/agents", "ref": "refs/heads/main", "run_id": 4711,
        "iat": t, "nbf": t, "exp": t + 300,
    })
}

fn good_token(sub: &str) -> String {
    sign(Algorithm::RS256, &pki().rsa.private_pem, None, &claims(sub))
}

/// The `ci` role every login test uses.
fn ci_role() -> Value {
    json!({
        "role_type": "jwt",
        "user_claim": "sub",
        "bound_audiences": ["leash"],
        "bound_claims_type": "glob",
        "bound_claims": {"repository": "acme/*", "ref": ["refs/heads/main", "refs/tags/v*"]},
        "claim_mappings": {"repository": "repo", "run_id": "run"},
        "token_policies": ["ci-read", "deploy"],
        "token_ttl": "10m",
        "token_max_ttl": "20m",
    })
}

/// A server with `auth/jwt` configured with PEM keys (RSA and EC) and the `ci` role.
async fn pem_server() -> TestServer {
    let srv = TestServer::start().await;
    enable(&srv, "jwt", "jwt").await;
    write(
        &srv,
        "auth/jwt/config",
        json!({
            "jwt_validation_pubkeys": [pki().rsa.public_pem, pki().ec.public_pem],
            "bound_issuer": ISS,
        }),
    )
    .await;
    write(&srv, "auth/jwt/role/ci", ci_role()).await;
    srv
}

#[tokio::test]
async fn jwt_login_grants_exactly_the_roles_policies_and_ttls() {
    let srv = pem_server().await;
    let (s, b) = login(&srv, "jwt", "ci", &good_token("job-1")).await;
    assert_eq!(s, 200, "{b}");
    let auth = &b["auth"];
    assert_eq!(
        sorted(&auth["policies"]),
        vec!["ci-read", "default", "deploy"]
    );
    assert_eq!(
        sorted(&auth["token_policies"]),
        vec!["ci-read", "default", "deploy"]
    );
    assert_eq!(auth["lease_duration"], 600);
    assert_eq!(auth["renewable"], true);
    assert_eq!(auth["orphan"], true);
    assert_eq!(
        auth["metadata"],
        json!({"role": "ci", "repo": "acme/agents", "run": "4711"})
    );
    let entity = auth["entity_id"].as_str().unwrap().to_owned();
    assert_eq!(entity.len(), 36, "{entity}");

    let token = auth["client_token"].as_str().unwrap();
    let (s, me) = srv
        .call("GET", "auth/token/lookup-self", Some(token), None)
        .await;
    assert_eq!(s, 200, "{me}");
    assert_eq!(me["data"]["display_name"], "jwt-job-1");
    assert_eq!(me["data"]["explicit_max_ttl"], 1200);
    assert_eq!(me["data"]["path"], "auth/jwt/login");
    assert_eq!(me["data"]["entity_id"], entity.as_str());

    // The same identity gets the same entity id at every login; another gets another.
    let (_, again) = login(&srv, "jwt", "ci", &good_token("job-1")).await;
    assert_eq!(again["auth"]["entity_id"], entity.as_str());
    let (_, other) = login(&srv, "jwt", "ci", &good_token("job-2")).await;
    assert_ne!(other["auth"]["entity_id"], entity.as_str());
    assert_ne!(other["auth"]["client_token"], auth["client_token"]);

    // ES256 tokens verify with the EC key.
    let es = sign(
        Algorithm::ES256,
        &pki().ec.private_pem,
        None,
        &claims("job-3"),
    );
    let (s, b) = login(&srv, "jwt", "ci", &es).await;
    assert_eq!(s, 200, "{b}");
}

#[tokio::test]
async fn jwt_config_and_roles_read_list_and_refuse_what_leash_does_not_do() {
    let srv = pem_server().await;
    let (s, c) = srv.root("GET", "auth/jwt/config", None).await;
    assert_eq!(s, 200, "{c}");
    assert_eq!(c["data"]["bound_issuer"], ISS);
    assert_eq!(c["data"]["jwt_supported_algs"], json!(["RS256", "ES256"]));
    assert_eq!(
        c["data"]["jwt_validation_pubkeys"]
            .as_array()
            .unwrap()
            .len(),
        2
    );

    let (s, r) = srv.root("GET", "auth/jwt/role/ci", None).await;
    assert_eq!(s, 200, "{r}");
    assert_eq!(r["data"]["role_type"], "jwt");
    assert_eq!(r["data"]["bound_audiences"], json!(["leash"]));
    assert_eq!(r["data"]["token_ttl"], 600);
    assert_eq!(r["data"]["bound_claims"]["repository"], "acme/*");
    let (s, l) = srv.root("LIST", "auth/jwt/role", None).await;
    assert_eq!((s, l["data"]["keys"].clone()), (200, json!(["ci"])), "{l}");

    let (s, b) = srv
        .root(
            "POST",
            "auth/jwt/role/browser",
            Some(
                json!({"role_type": "oidc", "bound_audiences": "x", "user_claim": "sub",
                        "allowed_redirect_uris": ["http://localhost/cb"]}),
            ),
        )
        .await;
    assert_eq!(s, 400, "{b}");
    assert!(error(&b).contains("role_type \"oidc\""), "{b}");
    let (s, b) = srv
        .root(
            "POST",
            "auth/jwt/role/open",
            Some(json!({"user_claim": "sub"})),
        )
        .await;
    assert_eq!(s, 400, "{b}");
    assert!(error(&b).contains("at least one bound constraint"), "{b}");
    for bad in [
        json!({"jwt_validation_pubkeys": [pki().rsa.public_pem], "jwt_supported_algs": ["none"]}),
        json!({"jwt_validation_pubkeys": [pki().rsa.public_pem], "jwt_supported_algs": ["HS256"]}),
        json!({"jwt_validation_pubkeys": [pki().rsa.private_pem]}),
    ] {
        let (s, b) = srv.root("POST", "auth/jwt/config", Some(bad)).await;
        assert_eq!(s, 400, "{b}");
        assert!(!b.to_string().contains("PRIVATE"), "{b}");
    }

    let (s, _) = srv.root("DELETE", "auth/jwt/role/ci", None).await;
    assert_eq!(s, 204);
    let (s, _) = srv.root("GET", "auth/jwt/role/ci", None).await;
    assert_eq!(s, 404);
    assert_refused(&srv, "jwt", "ci", &good_token("job-1"), "invalid role name").await;
}

#[tokio::test]
async fn jwt_unknown_role_is_refused() {
    let srv = pem_server().await;
    assert_refused(
        &srv,
        "jwt",
        "nope",
        &good_token("job-1"),
        "invalid role name",
    )
    .await;
}

#[tokio::test]
async fn jwt_malformed_token_is_refused() {
    let srv = pem_server().await;
    for bad in ["not-a-jwt", "a.b.c", "eyJhbGciOiJSUzI1NiJ9.e30", "...."] {
        let (s, b) = login(&srv, "jwt", "ci", bad).await;
        assert_eq!(s, 403, "{b}");
        assert!(error(&b).contains("malformed JWT"), "{b}");
    }
    let good = good_token("job-1");
    let cut = &good[..good.len() - 10];
    assert_refused(&srv, "jwt", "ci", cut, "invalid JWT signature").await;
}

#[tokio::test]
async fn jwt_alg_none_is_refused() {
    let srv = pem_server().await;
    let t = unsigned(&json!({"alg": "none", "typ": "JWT"}), &claims("job-1"));
    assert_refused(
        &srv,
        "jwt",
        "ci",
        &t,
        "JWT algorithm \"none\" is not allowed",
    )
    .await;
}

#[tokio::test]
async fn jwt_hs256_signed_with_the_rsa_public_key_is_refused() {
    let srv = pem_server().await;
    // Algorithm confusion: HMAC keyed with the RSA public key everyone knows.
    let t = sign(
        Algorithm::HS256,
        &pki().rsa.public_pem,
        None,
        &claims("job-1"),
    );
    assert_refused(
        &srv,
        "jwt",
        "ci",
        &t,
        "JWT algorithm \"HS256\" is not allowed",
    )
    .await;
}

#[tokio::test]
async fn jwt_signed_by_an_unknown_key_is_refused() {
    let srv = pem_server().await;
    let t = sign(
        Algorithm::RS256,
        &pki().rsa2.private_pem,
        None,
        &claims("job-1"),
    );
    assert_refused(&srv, "jwt", "ci", &t, "invalid JWT signature").await;
}

#[tokio::test]
async fn jwt_expired_token_is_refused() {
    let srv = pem_server().await;
    let mut c = claims("job-1");
    c["iat"] = json!(now() - 7200);
    c["nbf"] = json!(now() - 7200);
    c["exp"] = json!(now() - 3600);
    let t = sign(Algorithm::RS256, &pki().rsa.private_pem, None, &c);
    assert_refused(&srv, "jwt", "ci", &t, "token has expired").await;
    // No exp at all.
    let mut c = claims("job-1");
    c.as_object_mut().unwrap().remove("exp");
    let t = sign(Algorithm::RS256, &pki().rsa.private_pem, None, &c);
    assert_refused(&srv, "jwt", "ci", &t, "token has no expiry").await;
}

#[tokio::test]
async fn jwt_not_yet_valid_token_is_refused() {
    let srv = pem_server().await;
    let mut c = claims("job-1");
    c["nbf"] = json!(now() + 3600);
    c["exp"] = json!(now() + 7200);
    let t = sign(Algorithm::RS256, &pki().rsa.private_pem, None, &c);
    assert_refused(&srv, "jwt", "ci", &t, "token is not yet valid").await;
    let mut c = claims("job-1");
    c["iat"] = json!(now() + 3600);
    let t = sign(Algorithm::RS256, &pki().rsa.private_pem, None, &c);
    assert_refused(&srv, "jwt", "ci", &t, "issued in the future").await;
}

#[tokio::test]
async fn jwt_wrong_issuer_is_refused() {
    let srv = pem_server().await;
    let mut c = claims("job-1");
    c["iss"] = json!("https://evil.example.test");
    let t = sign(Algorithm::RS256, &pki().rsa.private_pem, None, &c);
    assert_refused(&srv, "jwt", "ci", &t, "issuer mismatch").await;
}

#[tokio::test]
async fn jwt_wrong_audience_is_refused() {
    let srv = pem_server().await;
    let mut c = claims("job-1");
    c["aud"] = json!(["some-other-service"]);
    let t = sign(Algorithm::RS256, &pki().rsa.private_pem, None, &c);
    assert_refused(&srv, "jwt", "ci", &t, "invalid audience").await;
    // No audience at all, while the role binds one.
    c.as_object_mut().unwrap().remove("aud");
    let t = sign(Algorithm::RS256, &pki().rsa.private_pem, None, &c);
    assert_refused(&srv, "jwt", "ci", &t, "invalid audience").await;
    // A token with an audience, and a role that binds none (Vault's rule).
    write(
        &srv,
        "auth/jwt/role/subject-only",
        json!({"bound_subject": "job-1", "user_claim": "sub"}),
    )
    .await;
    assert_refused(
        &srv,
        "jwt",
        "subject-only",
        &good_token("job-1"),
        "role binds no audiences",
    )
    .await;
}

#[tokio::test]
async fn jwt_bound_subject_and_claims_are_enforced() {
    let srv = pem_server().await;
    let mut c = claims("job-1");
    c["repository"] = json!("evil/agents");
    let t = sign(Algorithm::RS256, &pki().rsa.private_pem, None, &c);
    assert_refused(&srv, "jwt", "ci", &t, "claim \"repository\" does not match").await;
    let mut c = claims("job-1");
    c["ref"] = json!("refs/heads/feature");
    let t = sign(Algorithm::RS256, &pki().rsa.private_pem, None, &c);
    assert_refused(&srv, "jwt", "ci", &t, "claim \"ref\" does not match").await;
    write(
        &srv,
        "auth/jwt/role/one-job",
        json!({"bound_subject": "job-9", "bound_audiences": "leash", "user_claim": "sub"}),
    )
    .await;
    assert_refused(
        &srv,
        "jwt",
        "one-job",
        &good_token("job-1"),
        "bound_subject",
    )
    .await;
    let (s, b) = login(&srv, "jwt", "one-job", &good_token("job-9")).await;
    assert_eq!(s, 200, "{b}");
}

/// A JWKS endpoint whose key set the test can change, counting fetches.
fn jwks_handler(keys: Arc<Mutex<Value>>) -> impl Fn(&support::Seen) -> Reply + Send + Sync {
    move |r| {
        if r.path == "/keys" {
            Reply::Json(200, keys.lock().unwrap().clone())
        } else {
            Reply::Json(404, json!({"error": "not found"}))
        }
    }
}

fn jwk(key: &support::Key, kid: &str) -> Value {
    let mut j = key.jwk.clone();
    j["kid"] = json!(kid);
    j
}

#[tokio::test]
async fn jwt_jwks_over_pinned_https_follows_key_rotation_with_a_throttled_refetch() {
    let clock = ManualClock::new();
    let srv = TestServer::start_with(Options {
        clock: Arc::new(clock.clone()),
        ..Options::default()
    })
    .await;
    let keys = Arc::new(Mutex::new(json!({"keys": [jwk(&pki().rsa, "k1")]})));
    let jwks = FakeServer::start(Some(&pki().server), jwks_handler(Arc::clone(&keys))).await;
    enable(&srv, "jwt", "jwt").await;
    write(
        &srv,
        "auth/jwt/config",
        json!({"jwks_url": format!("{}/keys", jwks.url()), "jwks_ca_pem": pki().ca_pem,
               "bound_issuer": ISS}),
    )
    .await;
    write(&srv, "auth/jwt/role/ci", ci_role()).await;
    let fetches = || jwks.requests().len();
    assert_eq!(fetches(), 1, "the configuration write checks the URL");

    let k1 = sign(
        Algorithm::RS256,
        &pki().rsa.private_pem,
        Some("k1"),
        &claims("job-1"),
    );
    let (s, b) = login(&srv, "jwt", "ci", &k1).await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(fetches(), 1, "cached keys are used");

    // The issuer rotates to k2. Right after a fetch, an unknown kid does not refetch.
    *keys.lock().unwrap() = json!({"keys": [jwk(&pki().rsa2, "k2"), jwk(&pki().rsa, "k1")]});
    let k2 = sign(
        Algorithm::RS256,
        &pki().rsa2.private_pem,
        Some("k2"),
        &claims("job-1"),
    );
    assert_refused(
        &srv,
        "jwt",
        "ci",
        &k2,
        "no configured key matches the JWT's key id",
    )
    .await;
    assert_eq!(fetches(), 1);
    // A few seconds later it does, and the new key works.
    clock.advance(Duration::from_secs(6));
    let (s, b) = login(&srv, "jwt", "ci", &k2).await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(fetches(), 2);
    // Made-up key ids cannot make leash hammer the issuer.
    for i in 0..5 {
        let t = sign(
            Algorithm::RS256,
            &pki().rsa.private_pem,
            Some(&format!("x{i}")),
            &claims("job-1"),
        );
        assert_refused(&srv, "jwt", "ci", &t, "key id").await;
    }
    assert_eq!(fetches(), 2);
    // A kid'd key is only used for its own kid.
    let wrong = sign(
        Algorithm::RS256,
        &pki().rsa.private_pem,
        Some("k2"),
        &claims("job-1"),
    );
    assert_refused(&srv, "jwt", "ci", &wrong, "invalid JWT signature").await;
    let r = &jwks.requests()[0];
    assert_eq!((r.method.as_str(), r.path.as_str()), ("GET", "/keys"));
}

#[tokio::test]
async fn jwt_jwks_server_with_a_certificate_from_another_ca_is_refused() {
    let srv = TestServer::start().await;
    enable(&srv, "jwt", "jwt").await;
    let keys = Arc::new(Mutex::new(json!({"keys": [jwk(&pki().rsa, "k1")]})));
    let rogue = FakeServer::start(Some(&pki().rogue_server), jwks_handler(keys)).await;
    let (s, b) = srv
        .root(
            "POST",
            "auth/jwt/config",
            Some(json!({"jwks_url": format!("{}/keys", rogue.url()), "jwks_ca_pem": pki().ca_pem})),
        )
        .await;
    assert_eq!(s, 400, "{b}");
    let e = error(&b);
    assert!(e.starts_with("error checking jwks_url:"), "{e}");
    assert!(e.contains("certificate"), "the TLS failure is named: {e}");
    assert!(
        rogue.requests().is_empty(),
        "no request reached the rogue server"
    );
}

#[tokio::test]
async fn jwt_jwks_over_plain_http_works_with_a_warning() {
    let srv = TestServer::start().await;
    enable(&srv, "jwt", "jwt").await;
    let keys = Arc::new(Mutex::new(json!({"keys": [jwk(&pki().ec, "e1")]})));
    let jwks = FakeServer::start(None, jwks_handler(keys)).await;
    let b = write(
        &srv,
        "auth/jwt/config",
        json!({"jwks_url": format!("{}/keys", jwks.url()), "bound_issuer": ISS}),
    )
    .await;
    assert!(b["warnings"].to_string().contains("plain http"), "{b}");
    write(&srv, "auth/jwt/role/ci", ci_role()).await;
    let t = sign(
        Algorithm::ES256,
        &pki().ec.private_pem,
        Some("e1"),
        &claims("job-1"),
    );
    let (s, b) = login(&srv, "jwt", "ci", &t).await;
    assert_eq!(s, 200, "{b}");
    // An unreachable JWKS is a clear error at configuration time.
    drop(jwks);
    let (s, b) = srv
        .root(
            "POST",
            "auth/jwt/config",
            Some(json!({"jwks_url": "http://127.0.0.1:9/keys"})),
        )
        .await;
    assert_eq!(s, 400, "{b}");
    assert!(error(&b).starts_with("error checking jwks_url"), "{b}");
}

#[tokio::test]
async fn jwt_oidc_discovery_finds_the_keys_and_requires_its_issuer() {
    let srv = TestServer::start().await;
    // The discovery document names its own URL as issuer; the handler learns it late.
    let base = Arc::new(Mutex::new(String::new()));
    let b2 = Arc::clone(&base);
    let idp = FakeServer::start(Some(&pki().server), move |r| {
        let base = b2.lock().unwrap().clone();
        match r.path.as_str() {
            "/.well-known/openid-configuration" => Reply::Json(
                200,
                json!({"issuer": base, "jwks_uri": format!("{base}/jwks"),
                       "id_token_signing_alg_values_supported": ["RS256"]}),
            ),
            "/jwks" => Reply::Json(200, json!({"keys": [jwk(&pki().rsa, "d1")]})),
            _ => Reply::Json(404, json!({})),
        }
    })
    .await;
    *base.lock().unwrap() = idp.url();
    enable(&srv, "oidc", "oidc").await;
    write(
        &srv,
        "auth/oidc/config",
        json!({"oidc_discovery_url": idp.url(), "oidc_discovery_ca_pem": pki().ca_pem}),
    )
    .await;
    write(&srv, "auth/oidc/role/ci", ci_role()).await;
    let mut c = claims("job-1");
    c["iss"] = json!(idp.url());
    let t = sign(Algorithm::RS256, &pki().rsa.private_pem, Some("d1"), &c);
    let (s, b) = login(&srv, "oidc", "ci", &t).await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["auth"]["metadata"]["role"], "ci");
    // Without bound_issuer, the discovered issuer is required.
    let t = sign(
        Algorithm::RS256,
        &pki().rsa.private_pem,
        Some("d1"),
        &claims("job-1"),
    );
    assert_refused(&srv, "oidc", "ci", &t, "issuer mismatch").await;
    // The browser flow is not offered.
    let (s, b) = srv
        .call(
            "POST",
            "auth/oidc/oidc/auth_url",
            None,
            Some(json!({"role": "ci"})),
        )
        .await;
    assert_eq!(s, 400, "{b}");
    assert!(error(&b).contains("not supported"), "{b}");
}

#[tokio::test]
async fn jwt_logins_are_audited_without_the_token() {
    let srv = pem_server().await;
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
    let good = good_token("job-1");
    let (s, _) = login(&srv, "jwt", "ci", &good).await;
    assert_eq!(s, 200);
    let mut expired = claims("job-1");
    expired["exp"] = json!(now() - 3600);
    let bad = sign(Algorithm::RS256, &pki().rsa.private_pem, None, &expired);
    assert_refused(&srv, "jwt", "ci", &bad, "token has expired").await;
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(text.contains("auth/jwt/login"), "{text}");
    assert!(
        text.contains("token has expired"),
        "the refusal is audited: {text}"
    );
    for t in [&good, &bad] {
        for part in t.split('.').skip(1) {
            assert!(!text.contains(part), "a token part is in the audit log");
        }
    }
}
