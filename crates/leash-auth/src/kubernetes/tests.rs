//! Unit tests of the `kubernetes` method's configuration and role rules (logins are
//! covered end to end by the integration tests, against a local TokenReview server).

use leash_types::ExposeSecret;
use serde_json::{Map, Value, json};

use super::config::KubeConfig;
use super::role::KubeRole;
use crate::verify::testkeys;

fn obj(v: Value) -> Map<String, Value> {
    v.as_object().cloned().unwrap()
}

#[test]
fn hosts_are_normalised_and_checked() {
    for (given, want) in [
        ("10.0.0.1:6443", "https://10.0.0.1:6443"),
        ("https://k8s.example:443/", "https://k8s.example"),
        ("http://127.0.0.1:8080", "http://127.0.0.1:8080"),
        (
            "https://proxy.example/cluster-a/",
            "https://proxy.example/cluster-a",
        ),
    ] {
        let (c, _) = KubeConfig::from_write(&obj(json!({"kubernetes_host": given}))).unwrap();
        assert_eq!(c.kubernetes_host, want, "{given}");
    }
    for bad in ["ftp://x", "https://user:pw@x", "https://x/?a=b", "https://"] {
        assert!(
            KubeConfig::from_write(&obj(json!({"kubernetes_host": bad}))).is_err(),
            "{bad}"
        );
    }
    let e = KubeConfig::from_write(&obj(json!({})))
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("missing kubernetes_host"), "{e}");
    // Offline validation needs no host.
    KubeConfig::from_write(&obj(json!({"pem_keys": [testkeys::rsa().cert_pem]}))).unwrap();
}

#[test]
fn the_reviewer_jwt_is_kept_but_never_read_back() {
    let (c, w) = KubeConfig::from_write(&obj(json!({
        "kubernetes_host": "https://k8s.example",
        "kubernetes_ca_cert": testkeys::ec().cert_pem,
        "token_reviewer_jwt": "reviewer-secret-value",
        "pem_keys": [],
    })))
    .unwrap();
    assert_eq!(
        c.token_reviewer_jwt
            .as_ref()
            .map(|t| t.expose_secret().to_owned()),
        Some("reviewer-secret-value".to_owned())
    );
    let read = c.to_json();
    assert!(
        !read.to_string().contains("reviewer-secret-value"),
        "{read}"
    );
    assert_eq!(read["token_reviewer_jwt_set"], true);
    assert!(w.is_empty(), "{w:?}");
    let e = KubeConfig::from_write(&obj(json!({
        "kubernetes_host": "k8s", "pem_keys": [testkeys::rsa().private_pem],
    })))
    .err()
    .unwrap()
    .to_string();
    assert!(
        e.contains("pem_keys[0]") && e.contains("private key"),
        "{e}"
    );
    let (_, w) = KubeConfig::from_write(&obj(json!({"kubernetes_host": "https://k8s"}))).unwrap();
    assert!(
        w.iter()
            .any(|w| w.contains("kubernetes_ca_cert is not set")),
        "{w:?}"
    );
}

#[test]
fn roles_need_bindings_and_match_globs() {
    let mut r = KubeRole::default();
    let w = r
        .update(&obj(json!({
            "bound_service_account_names": "summariser, planner",
            "bound_service_account_namespaces": ["agents-*"],
            "policies": "a",
        })))
        .unwrap();
    assert!(w.iter().any(|w| w.contains("audience is not set")), "{w:?}");
    assert_eq!(r.alias_name_source, "serviceaccount_uid");
    assert_eq!(r.token.token_type, "default");
    r.check_bound("agents-prod", "planner").unwrap();
    let e = r
        .check_bound("agents-prod", "intruder")
        .unwrap_err()
        .to_string();
    assert_eq!(e, "service account name not authorized");
    let e = r.check_bound("agents", "planner").unwrap_err().to_string();
    assert_eq!(e, "namespace not authorized");
    // Partial update keeps the bindings.
    r.update(&obj(json!({"audience": "leash"}))).unwrap();
    assert_eq!(r.bound_service_account_names, vec!["summariser", "planner"]);
    assert!(KubeRole::default().update(&obj(json!({}))).is_err());
}
