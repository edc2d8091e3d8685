//! Unit tests of the `jwt` method: role and configuration rules, and logins against
//! PEM keys through the backend (the JWKS path is covered by the integration tests).

use std::collections::BTreeMap;
use std::sync::Arc;

use jsonwebtoken::Algorithm;
use leash_backend::{Backend, BackendRequest, CoreError, MountEntry, MountTable, Response};
use leash_storage::{Keyring, SqliteStorage, Storage};
use leash_types::{Clock, ManualClock, Operation};
use serde_json::{Map, Value, json};

use super::config::JwtConfig;
use super::role::JwtRole;
use crate::verify::testkeys;

fn obj(v: Value) -> Map<String, Value> {
    v.as_object().cloned().unwrap()
}

fn msg(e: CoreError) -> String {
    e.to_string()
}

#[test]
fn a_role_must_bind_something_and_be_of_type_jwt() {
    let mut r = JwtRole::default();
    let e = msg(r
        .clone()
        .update(&obj(json!({"user_claim": "sub"})))
        .unwrap_err());
    assert!(e.contains("at least one bound constraint"), "{e}");
    let e = msg(r
        .clone()
        .update(&obj(json!({"role_type": "oidc", "bound_subject": "x"})))
        .unwrap_err());
    assert!(e.contains("not supported"), "{e}");
    let e = msg(r
        .clone()
        .update(&obj(json!({"user_claim": "", "bound_subject": "x"})))
        .unwrap_err());
    assert!(e.contains("user_claim"), "{e}");
    let w = r
        .update(&obj(json!({
            "role_type": "jwt", "bound_audiences": "a,b", "allowed_redirect_uris": [],
            "verbose_oidc_logging": false, "colour": "blue", "token_policies": ["ci"],
        })))
        .unwrap();
    assert_eq!(
        w,
        vec!["Endpoint ignored these unrecognized parameters: [colour]"]
    );
    assert_eq!(r.user_claim, "sub");
    assert_eq!(r.bound_audiences, vec!["a", "b"]);
    assert_eq!(r.token.token_policies, vec!["ci"]);
    assert_eq!(r.token.token_type, "default");
    // A partial update keeps the rest.
    r.update(&obj(json!({"bound_subject": "repo:x"}))).unwrap();
    assert_eq!(r.bound_audiences, vec!["a", "b"]);
    let e = msg(r
        .update(&obj(json!({"claim_mappings": {"a": "role"}})))
        .unwrap_err());
    assert!(e.contains("reserved"), "{e}");
}

#[test]
fn leeways_take_seconds_durations_and_minus_one() {
    let mut r = JwtRole {
        bound_subject: "x".into(),
        ..JwtRole::default()
    };
    let d = r.time_rules(0);
    assert_eq!((d.skew, d.exp_leeway, d.nbf_leeway), (60, 150, 150));
    r.update(&obj(
        json!({"clock_skew_leeway": -1, "expiration_leeway": "2m", "not_before_leeway": "-1"}),
    ))
    .unwrap();
    let d = r.time_rules(0);
    assert_eq!((d.skew, d.exp_leeway, d.nbf_leeway), (0, 120, 0));
    assert!(r.update(&obj(json!({"clock_skew_leeway": -2}))).is_err());
    assert!(r.update(&obj(json!({"clock_skew_leeway": [1]}))).is_err());
}

fn claims(v: Value) -> crate::verify::Claims {
    // Claims are only made by verification: sign and verify.
    let k = testkeys::rsa();
    let t = testkeys::sign(Algorithm::RS256, &k.private_pem, None, &v);
    let keys = crate::verify::public_keys_from_pem(&k.public_pem).unwrap();
    crate::verify::UnverifiedJwt::parse(&t)
        .unwrap()
        .verify(&keys, &[Algorithm::RS256])
        .unwrap()
}

#[test]
fn bound_claims_match_exactly_or_by_glob_and_lists_intersect() {
    let mut r = JwtRole::default();
    r.update(&obj(json!({"bound_claims": {
        "repository": "acme/agents",
        "ref": ["refs/heads/main", "refs/tags/v*"],
        "/nested/env": "prod",
    }})))
    .unwrap();
    let good =
        json!({"repository": "acme/agents", "ref": "refs/heads/main", "nested": {"env": "prod"}});
    r.check_bindings(&claims(good.clone())).unwrap();
    let tag =
        json!({"repository": "acme/agents", "ref": "refs/tags/v1", "nested": {"env": "prod"}});
    let e = msg(r.check_bindings(&claims(tag.clone())).unwrap_err());
    assert!(e.contains("\"ref\" does not match"), "{e}");
    r.update(&obj(json!({"bound_claims_type": "glob"})))
        .unwrap();
    r.check_bindings(&claims(tag)).unwrap();
    // A list claim matches when any element does.
    let groups = json!({"repository": ["x", "acme/agents"], "ref": "refs/heads/main", "nested": {"env": "prod"}});
    r.check_bindings(&claims(groups)).unwrap();
    let missing = json!({"repository": "acme/agents", "ref": "refs/heads/main"});
    let e = msg(r.check_bindings(&claims(missing)).unwrap_err());
    assert!(e.contains("\"/nested/env\" is missing"), "{e}");
    // Exact mode takes `*` literally.
    let mut exact = JwtRole::default();
    exact
        .update(&obj(json!({"bound_claims": {"repository": "acme/*"}})))
        .unwrap();
    assert!(exact.check_bindings(&claims(good)).is_err());
    assert!(
        JwtRole::default()
            .update(&obj(json!({"bound_claims": {"a": {"b": 1}}})))
            .is_err()
    );
    assert!(
        JwtRole::default()
            .update(&obj(json!({"bound_claims": {"a": []}})))
            .is_err()
    );
}

#[test]
fn user_claim_subject_and_mappings() {
    let mut r = JwtRole::default();
    r.update(&obj(json!({
        "bound_subject": "repo:acme/agents:ref:refs/heads/main",
        "user_claim": "/job/id", "user_claim_json_pointer": true,
        "claim_mappings": {"repository": "repo", "run": "run_number", "/job/name": "job"},
    })))
    .unwrap();
    let c = claims(json!({
        "sub": "repo:acme/agents:ref:refs/heads/main", "repository": "acme/agents",
        "run": 42, "job": {"id": "j-1", "name": "build"},
    }));
    r.check_bindings(&c).unwrap();
    assert_eq!(r.user(&c).unwrap(), "j-1");
    assert_eq!(
        r.mapped_metadata(&c).unwrap(),
        BTreeMap::from([
            ("job".to_owned(), "build".to_owned()),
            ("repo".to_owned(), "acme/agents".to_owned()),
            ("run_number".to_owned(), "42".to_owned()),
        ])
    );
    let e = msg(r
        .check_bindings(&claims(json!({"sub": "repo:other"})))
        .unwrap_err());
    assert!(e.contains("bound_subject"), "{e}");
    let e = msg(r.user(&claims(json!({"job": {}}))).unwrap_err());
    assert!(e.contains("not found"), "{e}");
    let e = msg(r.user(&claims(json!({"job": {"id": ["a"]}}))).unwrap_err());
    assert!(e.contains("not a non-empty string"), "{e}");
    let e = msg(r
        .mapped_metadata(&claims(json!({"repository": {"a": 1}})))
        .unwrap_err());
    assert!(e.contains("claim_mappings"), "{e}");
}

#[test]
fn configuration_is_checked() {
    let rsa = testkeys::rsa();
    let pem = json!([rsa.public_pem]);
    for (bad, want) in [
        (json!({}), "exactly one of"),
        (
            json!({"jwt_validation_pubkeys": pem, "jwks_url": "https://x"}),
            "exactly one of",
        ),
        (
            json!({"jwt_validation_pubkeys": [rsa.private_pem]}),
            "private key",
        ),
        (
            json!({"jwt_validation_pubkeys": ["junk"]}),
            "jwt_validation_pubkeys[0]",
        ),
        (
            json!({"jwt_validation_pubkeys": pem, "jwt_supported_algs": ["none"]}),
            "none",
        ),
        (
            json!({"jwt_validation_pubkeys": pem, "jwt_supported_algs": ["HS256"]}),
            "HMAC",
        ),
        (
            json!({"jwt_validation_pubkeys": pem, "jwks_ca_pem": rsa.cert_pem}),
            "only used with jwks_url",
        ),
        (json!({"jwks_url": "ftp://x"}), "http or https"),
        (json!({"jwks_url": "https://user:pw@x"}), "credentials"),
        (
            json!({"jwks_url": "https://x", "jwks_ca_pem": "junk"}),
            "jwks_ca_pem",
        ),
    ] {
        let e = msg(JwtConfig::from_write(&obj(bad.clone())).unwrap_err());
        assert!(e.contains(want), "{bad}: {e}");
        assert!(!e.contains("BEGIN"), "{e}");
    }
    let (c, w) = JwtConfig::from_write(&obj(json!({
        "jwt_validation_pubkeys": pem, "oidc_client_secret": "s3cret", "bound_issuer": "https://i",
    })))
    .unwrap();
    assert!(w.iter().any(|w| w.contains("oidc_client_secret")), "{w:?}");
    let read = c.to_json().to_string();
    assert!(!read.contains("s3cret"), "{read}");
    assert_eq!(c.to_json()["jwt_supported_algs"], json!(["RS256", "ES256"]));
    // An EC key with RSA-only algorithms is accepted, with a warning.
    let (_, w) = JwtConfig::from_write(&obj(json!({
        "jwt_validation_pubkeys": [testkeys::ec().public_pem], "jwt_supported_algs": "RS256",
        "bound_issuer": "https://i",
    })))
    .unwrap();
    assert!(
        w.iter().any(|w| w.contains("every login will fail")),
        "{w:?}"
    );
}

struct Fixture {
    backend: Arc<dyn Backend>,
    mount: MountEntry,
    clock: ManualClock,
    _dir: tempfile::TempDir,
}

fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let keyring = Keyring::from_master(&Keyring::generate_master()).unwrap();
    let storage: Arc<dyn Storage> = Arc::new(SqliteStorage::open(dir.path(), keyring).unwrap());
    let mount = MountEntry {
        path: "jwt/".into(),
        kind: "jwt".into(),
        description: String::new(),
        accessor: "auth_jwt_1".into(),
        uuid: "u-jwt".into(),
        config: Default::default(),
        options: Default::default(),
        local: false,
        table: MountTable::Auth,
    };
    let clock = ManualClock::new();
    let backend = super::new_backend(
        leash_backend::MountStorage::new(storage, &mount),
        Arc::new(clock.clone()),
    );
    Fixture {
        backend,
        mount,
        clock,
        _dir: dir,
    }
}

impl Fixture {
    async fn call(
        &self,
        op: Operation,
        path: &str,
        data: Value,
    ) -> Result<Option<Response>, CoreError> {
        let data = obj(data);
        let req = BackendRequest {
            id: "r",
            operation: op,
            path,
            data: &data,
            mount: &self.mount,
            caller: None,
            remote_addr: None,
            token: None,
            grant: None,
        };
        self.backend.handle(&req).await
    }
}

#[tokio::test]
async fn login_with_pem_keys_grants_the_role() {
    let f = fixture();
    let rsa = testkeys::rsa();
    f.call(
        Operation::Update,
        "config",
        json!({"jwt_validation_pubkeys": [rsa.public_pem], "bound_issuer": "https://ci.test"}),
    )
    .await
    .unwrap();
    f.call(
        Operation::Update,
        "role/ci",
        json!({"bound_audiences": ["leash"], "user_claim": "sub", "token_policies": "ci",
               "token_ttl": "10m", "claim_mappings": {"repository": "repo"}}),
    )
    .await
    .unwrap();
    assert!(f.backend.routes().is_unauthenticated("login"));
    assert!(!f.backend.routes().is_unauthenticated("role/ci"));
    let now = f.clock.unix();
    let good = json!({"iss": "https://ci.test", "aud": "leash", "sub": "job-7",
                      "repository": "acme/agents", "iat": now, "exp": now + 300});
    let t = testkeys::sign(Algorithm::RS256, &rsa.private_pem, None, &good);
    let r = f
        .call(Operation::Update, "login", json!({"role": "ci", "jwt": t}))
        .await
        .unwrap()
        .unwrap();
    let g = r.login.unwrap();
    assert_eq!(g.policies, vec!["ci"]);
    assert_eq!(g.ttl, Some(std::time::Duration::from_secs(600)));
    assert_eq!(g.display_name, "jwt-job-7");
    assert_eq!(g.alias, "job-7");
    assert_eq!(g.role.as_deref(), Some("ci"));
    assert_eq!(
        g.metadata.get("repo").map(String::as_str),
        Some("acme/agents")
    );
    assert_eq!(g.metadata.get("role").map(String::as_str), Some("ci"));

    // Time moves on: the same token expires (after the default leeways).
    f.clock
        .advance(std::time::Duration::from_secs(300 + 150 + 60));
    let e = msg(f
        .call(Operation::Update, "login", json!({"role": "ci", "jwt": t}))
        .await
        .unwrap_err());
    assert_eq!(e, "token has expired (exp)");

    let e = msg(f
        .call(
            Operation::Update,
            "login",
            json!({"role": "nope", "jwt": t}),
        )
        .await
        .unwrap_err());
    assert_eq!(e, "invalid role name");
    let e = msg(f
        .call(Operation::Update, "login", json!({"role": "ci"}))
        .await
        .unwrap_err());
    assert_eq!(e, "missing jwt");
    let e = msg(f
        .call(Operation::Update, "oidc/auth_url", json!({}))
        .await
        .unwrap_err());
    assert!(e.contains("not supported"), "{e}");
}
