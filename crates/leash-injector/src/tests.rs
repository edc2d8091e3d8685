//! Unit tests: AdmissionReview in, AdmissionReview out, through [`review`].

use base64::Engine as _;
use serde_json::{Value, json};

use crate::{LabelRequirement, Settings, default_resources, parse_label_selector, review};

fn settings() -> Settings {
    Settings {
        leash_addr: "https://leash.leash.svc:8200".into(),
        agent_image: "leash:test".into(),
        ca_bundle_pem: None,
        resources: default_resources(),
        run_as_user: 65532,
        namespaces: Vec::new(),
        label_selector: Vec::new(),
    }
}

fn pod(extra: &[(&str, &str)]) -> Value {
    let mut ann = json!({
        "vault.hashicorp.com/agent-inject": "true",
        "vault.hashicorp.com/role": "ai-agent-role",
        "vault.hashicorp.com/agent-inject-secret-db-creds": "database/creds/agent-readonly",
    });
    for (k, v) in extra {
        ann[format!("vault.hashicorp.com/{k}")] = json!(v);
    }
    json!({"apiVersion": "v1", "kind": "Pod",
           "metadata": {"namespace": "ai-agents", "labels": {"app": "ai-agent"}, "annotations": ann},
           "spec": {"containers": [{"name": "agent", "image": "app"}]}})
}

fn send(pod: Value, s: &Settings) -> Value {
    let body = json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
        "request": {"uid": "u-1", "kind": {"group": "", "version": "v1", "kind": "Pod"},
                    "namespace": "ai-agents", "operation": "CREATE", "object": pod}});
    let (v, _) = review(body.to_string().as_bytes(), s).unwrap();
    assert_eq!(v["response"]["uid"], "u-1");
    v["response"].clone()
}

fn ops(resp: &Value) -> Vec<Value> {
    let b = base64::engine::general_purpose::STANDARD
        .decode(resp["patch"].as_str().unwrap())
        .unwrap();
    serde_json::from_slice(&b).unwrap()
}

#[test]
fn injects_volumes_mount_init_and_sidecar() {
    let r = send(pod(&[]), &settings());
    assert_eq!(r["allowed"], true);
    assert_eq!(r["patchType"], "JSONPatch");
    let ops = ops(&r);
    let paths: Vec<&str> = ops.iter().map(|o| o["path"].as_str().unwrap()).collect();
    assert!(paths.contains(&"/spec/volumes"), "{paths:?}");
    assert!(
        paths.contains(&"/spec/containers/0/volumeMounts"),
        "{paths:?}"
    );
    assert!(paths.contains(&"/spec/initContainers"), "{paths:?}");
    assert!(paths.contains(&"/spec/containers/-"), "{paths:?}");
    assert!(paths.contains(&"/metadata/annotations/vault.hashicorp.com~1agent-inject-status"));
}

#[test]
fn malformed_values_deny_naming_the_annotation() {
    for (k, v) in [
        ("agent-inject-perms-db-creds", "999"),
        ("agent-requests-cpu", "lots"),
        ("agent-inject-template-db-creds", "{{ with secret \"a\" }}"),
        ("agent-inject", "yes"),
        ("agent-run-as-user", "0"),
    ] {
        let r = send(pod(&[(k, v)]), &settings());
        assert_eq!(r["allowed"], false, "{k}");
        let msg = r["status"]["message"].as_str().unwrap();
        assert!(msg.contains(&format!("vault.hashicorp.com/{k}")), "{msg}");
        assert!(r.get("patch").is_none());
    }
}

#[test]
fn left_alone_without_inject_or_when_injected() {
    let r = send(pod(&[("agent-inject", "false")]), &settings());
    assert_eq!(r, json!({"uid": "u-1", "allowed": true}));
    let r = send(pod(&[("agent-inject-status", "injected")]), &settings());
    assert_eq!(r, json!({"uid": "u-1", "allowed": true}));
}

#[test]
fn unknown_keys_warn() {
    let r = send(pod(&[("agent-inject-token", "true")]), &settings());
    assert_eq!(r["allowed"], true);
    assert!(
        r["warnings"][0]
            .as_str()
            .unwrap()
            .contains("agent-inject-token")
    );
}

#[test]
fn selectors_limit_injection() {
    let mut s = settings();
    s.namespaces = vec!["team-*".into()];
    assert!(send(pod(&[]), &s).get("patch").is_none());
    s.namespaces = vec!["ai-*".into()];
    s.label_selector = parse_label_selector("app=ai-agent,!skip").unwrap();
    assert!(send(pod(&[]), &s).get("patch").is_some());
    s.label_selector = vec![LabelRequirement::Equals("app".into(), "other".into())];
    assert!(send(pod(&[]), &s).get("patch").is_none());
    assert!(parse_label_selector("a=b,c!=d,e,!f").unwrap().len() == 4);
    assert!(parse_label_selector("a b").is_err());
}

#[test]
fn ca_bundle_goes_through_a_downward_api_volume() {
    let mut s = settings();
    s.ca_bundle_pem = Some("-----BEGIN CERTIFICATE-----\nx\n-----END CERTIFICATE-----\n".into());
    let text = serde_json::to_string(&ops(&send(pod(&[]), &s))).unwrap();
    assert!(text.contains("metadata.annotations['leash.dev/ca-bundle']"));
    assert!(text.contains("/var/run/secrets/leash/ca/ca.pem"));
    assert!(text.contains("leash.dev~1ca-bundle"));
}

#[test]
fn not_a_review_is_an_error() {
    for body in [
        &b"nope"[..],
        br#"{"kind":"Pod"}"#,
        br#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{}}"#,
    ] {
        assert!(review(body, &settings()).is_err());
    }
}

fn with_proxy(config: &str) -> Value {
    let mut p = pod(&[]);
    p["metadata"]["annotations"]["leash.dev/proxy-config"] = json!(config);
    p
}

const PROXY: &str = r#"
proxy "http" {
  listen = "127.0.0.1:8700"
  upstream "github" {
    url    = "https://api.github.com"
    secret = "secret/data/agents/github"
    header "Authorization" { value = "Bearer {{ .Data.data.token }}" }
    allow { methods = ["GET"], paths = ["/repos/acme/*"] }
  }
}
"#;

#[test]
fn a_proxy_config_annotation_adds_a_proxy_sidecar() {
    let r = send(with_proxy(PROXY), &settings());
    assert_eq!(r["allowed"], true, "{r}");
    let ops = ops(&r);
    let sidecars: Vec<&Value> = ops
        .iter()
        .filter(|o| o["path"] == "/spec/containers/-")
        .map(|o| &o["value"])
        .collect();
    let proxy = sidecars
        .iter()
        .find(|c| c["name"] == "leash-proxy")
        .expect("a leash-proxy sidecar");
    assert_eq!(
        proxy["args"],
        json!(["proxy", "--config-env", "LEASH_PROXY_CONFIG"])
    );
    assert_eq!(proxy["securityContext"]["readOnlyRootFilesystem"], true);
    let cfg: Value = serde_json::from_str(proxy["env"][0]["value"].as_str().unwrap()).unwrap();
    assert_eq!(cfg["template"], json!([]));
    assert!(cfg["proxy"].is_array() || cfg["proxy"].is_object(), "{cfg}");
    assert_eq!(
        cfg["auto_auth"]["method"]["kubernetes"]["config"]["role"],
        "ai-agent-role"
    );
    // The proxy never mounts the rendered files, and holds no credential in its spec.
    let mounts = proxy["volumeMounts"].to_string();
    assert!(!mounts.contains("vault-secrets"), "{mounts}");
    assert!(sidecars.iter().any(|c| c["name"] == "leash-agent"));
}

#[test]
fn a_bad_proxy_config_denies_the_pod_naming_the_annotation() {
    for bad in [
        "proxy \"http\" { listen = ",
        "vault { address = \"http://x\" }",
        "proxy \"smtp\" { listen = \"127.0.0.1:25\" }",
        "proxy \"http\" { listen = \"0.0.0.0:8700\" upstream \"a\" { url = \"http://a\" secret = \"secret/data/a\" } }",
    ] {
        let r = send(with_proxy(bad), &settings());
        assert_eq!(r["allowed"], false, "{bad}: {r}");
        let msg = r["status"]["message"].as_str().unwrap_or_default();
        assert!(msg.contains("proxy-config"), "{bad}: {msg}");
    }
}
