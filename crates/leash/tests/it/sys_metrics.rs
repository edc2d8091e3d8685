//! `sys/metrics`: failed logins per role, token gauges per role, denials per entity and
//! lease gauges, in Prometheus text and JSON; `unauthenticated_metrics_access`.

use std::collections::HashMap;

use leash_core::CoreConfig;
use leash_testkit::{Options, TestServer};
use leash_types::{Clock as _, SystemClock};
use serde_json::json;

/// `name{labels}` → value of every sample in a Prometheus text body.
fn samples(text: &str) -> HashMap<String, f64> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|l| {
            let (k, v) = l.rsplit_once(' ').unwrap();
            (k.to_owned(), v.parse().unwrap())
        })
        .collect()
}

async fn prometheus(srv: &TestServer, token: Option<&str>) -> (u16, String) {
    let mut r =
        reqwest::Client::new().get(format!("{}/v1/sys/metrics?format=prometheus", srv.url()));
    if let Some(t) = token {
        r = r.header("X-Vault-Token", t);
    }
    let r = r.send().await.unwrap();
    (r.status().as_u16(), r.text().await.unwrap())
}

fn now() -> f64 {
    SystemClock
        .now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as f64
}

/// Label names of a sample key `name{a="x",b="y"}`: (name, [a, b]).
fn shape(key: &str) -> (String, Vec<String>) {
    let Some((name, rest)) = key.split_once('{') else {
        return (key.to_owned(), Vec::new());
    };
    let labels = rest
        .trim_end_matches('}')
        .split("\",")
        .filter(|l| !l.is_empty())
        .map(|l| l.split_once('=').unwrap().0.to_owned())
        .collect();
    (name.to_owned(), labels)
}

/// Every input series of deploy/prometheus/tests.yml has the name and label names of a
/// series leash exports.
fn shipped_rule_tests_match(exported: &HashMap<String, f64>) {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../deploy/prometheus/tests.yml"
    );
    let yml = std::fs::read_to_string(path).unwrap();
    let shapes: Vec<_> = exported.keys().map(|k| shape(k)).collect();
    let mut n = 0;
    for line in yml.lines() {
        let Some(series) = line.trim().strip_prefix("- series: '") else {
            continue;
        };
        // Anomalies need a live database session; observer.rs checks that family.
        if series.starts_with("leash_credential_anomalies_total") {
            continue;
        }
        let want = shape(series.trim_end_matches('\''));
        assert!(
            shapes.contains(&want),
            "tests.yml series {series} is not shaped like an exported one: {shapes:?}"
        );
        n += 1;
    }
    assert!(n >= 5, "tests.yml has input series");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_gauges_and_denials_are_exported_per_role_and_entity() {
    let srv = TestServer::start().await;
    let (s, b) = srv
        .root(
            "POST",
            "sys/auth/userpass",
            Some(json!({"type": "userpass"})),
        )
        .await;
    assert_eq!(s, 204, "{b}");
    for (name, ttl) in [("ai-agent-1", "30m"), ("ai-agent-2", "10m")] {
        let (s, b) = srv
            .root(
                "POST",
                &format!("auth/userpass/users/{name}"),
                Some(json!({"password": "correct horse battery", "token_policies": "default", "token_ttl": ttl})),
            )
            .await;
        assert_eq!(s, 204, "{b}");
    }
    let mut tokens = HashMap::new();
    for name in ["ai-agent-1", "ai-agent-1", "ai-agent-2"] {
        let (s, b) = srv
            .call(
                "POST",
                &format!("auth/userpass/login/{name}"),
                None,
                Some(json!({"password": "correct horse battery"})),
            )
            .await;
        assert_eq!(s, 200, "{b}");
        tokens.insert(name, b["auth"]["client_token"].as_str().unwrap().to_owned());
    }
    // A token role.
    let (s, b) = srv
        .root(
            "POST",
            "auth/token/roles/ci-runner",
            Some(json!({"allowed_policies": "default"})),
        )
        .await;
    assert_eq!(s, 204, "{b}");
    let (s, b) = srv
        .root(
            "POST",
            "auth/token/create/ci-runner",
            Some(json!({"ttl": "5m"})),
        )
        .await;
    assert_eq!(s, 200, "{b}");
    // Denials: three for agent 1, one without a token.
    for _ in 0..3 {
        let (s, _) = srv
            .call("GET", "sys/mounts", Some(&tokens["ai-agent-1"]), None)
            .await;
        assert_eq!(s, 403);
    }
    let (s, _) = srv.call("GET", "sys/mounts", None, None).await;
    assert_eq!(s, 403);

    let (s, _) = srv
        .call(
            "POST",
            "auth/userpass/login/ai-agent-1",
            None,
            Some(json!({"password": "wrong"})),
        )
        .await;
    assert_eq!(s, 400);

    // An audit device, so its health series are exported too.
    let log = srv.dir.join("audit.log");
    let (s, b) = srv
        .root(
            "PUT",
            "sys/audit/file",
            Some(json!({"type": "file", "options": {"file_path": log.display().to_string()}})),
        )
        .await;
    assert_eq!(s, 204, "{b}");

    let (s, text) = prometheus(&srv, Some(&srv.root_token)).await;
    assert_eq!(s, 200, "{text}");
    let m = samples(&text);
    shipped_rule_tests_match(&m);
    let get = |k: &str| *m.get(k).unwrap_or_else(|| panic!("no {k} in\n{text}"));
    let created = get("vault_token_creation_time{role=\"ai-agent-1\"}");
    assert!((now() - created).abs() < 60.0, "{created}");
    let ttl1 = get("vault_token_ttl{role=\"ai-agent-1\"}");
    assert!((1700.0..=1800.0).contains(&ttl1), "{ttl1}");
    let ttl2 = get("vault_token_ttl{role=\"ai-agent-2\"}");
    assert!((500.0..=600.0).contains(&ttl2), "{ttl2}");
    let ttl3 = get("vault_token_ttl{role=\"ci-runner\"}");
    assert!((200.0..=300.0).contains(&ttl3), "{ttl3}");
    assert_eq!(
        get("vault_audit_log_request_failure{auth_entity_id=\"ai-agent-1\"}"),
        3.0
    );
    assert_eq!(
        get("vault_audit_log_request_failure{auth_entity_id=\"\"}"),
        1.0
    );
    assert_eq!(get("leash_tokens_issued_total{role=\"ai-agent-1\"}"), 2.0);
    assert_eq!(get("leash_tokens_issued_total{role=\"ci-runner\"}"), 1.0);
    assert_eq!(get("leash_tokens_untracked_total"), 0.0);
    assert!(text.contains("# TYPE vault_token_ttl gauge\n"), "{text}");
    assert!(
        text.contains("# TYPE vault_audit_log_request_failure counter\n"),
        "{text}"
    );
    assert!(
        !text.contains("vault_token_creation_time{role=\"\"}"),
        "tokens without a role stay out of the gauges: {text}"
    );

    // Revoking agent 2's only token ends its gauges and counts the revocation.
    let (s, b) = srv
        .call(
            "POST",
            "auth/token/revoke-self",
            Some(&tokens["ai-agent-2"]),
            None,
        )
        .await;
    assert_eq!(s, 204, "{b}");
    let (_, text) = prometheus(&srv, Some(&srv.root_token)).await;
    let m = samples(&text);
    assert!(
        !m.contains_key("vault_token_ttl{role=\"ai-agent-2\"}"),
        "{text}"
    );
    assert!(
        !m.contains_key("vault_token_creation_time{role=\"ai-agent-2\"}"),
        "{text}"
    );
    assert_eq!(
        m.get("leash_tokens_revoked_total{role=\"ai-agent-2\",reason=\"revoked\"}"),
        Some(&1.0),
        "{text}"
    );

    let (s, b) = srv.root("GET", "sys/metrics", None).await;
    assert_eq!(s, 200, "{b}");
    assert!(
        b["data"]["request_failures"]
            .as_array()
            .unwrap()
            .contains(&json!({"auth_entity_id": "ai-agent-1", "count": 3})),
        "{b}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unauthenticated_metrics_access_opens_only_metrics() {
    let closed = TestServer::start().await;
    let (s, _) = prometheus(&closed, None).await;
    assert_eq!(s, 403, "metrics need a token by default");

    let open = TestServer::start_with(Options {
        config: CoreConfig {
            dev: true,
            unauthenticated_metrics_access: true,
            ..CoreConfig::default()
        },
        ..Options::default()
    })
    .await;
    let (s, text) = prometheus(&open, None).await;
    assert_eq!(s, 200, "{text}");
    assert!(text.contains("\nleash_leases 0\n"), "{text}");
    let (s, _) = open.call("GET", "sys/mounts", None, None).await;
    assert_eq!(s, 403, "only sys/metrics opens");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_logins_are_counted_per_role_and_exported() {
    let srv = TestServer::start().await;
    let (s, b) = srv
        .root(
            "POST",
            "sys/auth/userpass",
            Some(json!({"type": "userpass"})),
        )
        .await;
    assert_eq!(s, 204, "{b}");
    let (s, b) = srv
        .root(
            "POST",
            "auth/userpass/users/alice",
            Some(json!({"password": "correct horse battery", "token_policies": "default"})),
        )
        .await;
    assert_eq!(s, 204, "{b}");
    for _ in 0..2 {
        let (s, _) = srv
            .call(
                "POST",
                "auth/userpass/login/alice",
                None,
                Some(json!({"password": "wrong"})),
            )
            .await;
        assert_eq!(s, 400);
    }
    let (s, _) = srv
        .call(
            "POST",
            "auth/userpass/login/alice",
            None,
            Some(json!({"password": "correct horse battery"})),
        )
        .await;
    assert_eq!(s, 200, "a success is not counted");

    let r = reqwest::Client::new()
        .get(format!("{}/v1/sys/metrics?format=prometheus", srv.url()))
        .header("X-Vault-Token", &srv.root_token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(
        r.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain; version=0.0.4")
    );
    let text = r.text().await.unwrap();
    assert!(
        text.contains("leash_login_failures_total{mount=\"auth/userpass/\",role=\"alice\"} 2\n"),
        "{text}"
    );
    assert!(text.contains("\nleash_leases 0\n"), "{text}");
    assert!(
        text.contains("\nleash_lease_revocations_failing 0\n"),
        "{text}"
    );

    let (s, b) = srv.root("GET", "sys/metrics", None).await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(
        b["data"]["login_failures"],
        json!([{"mount": "auth/userpass/", "role": "alice", "count": 2}])
    );
    let (s, _) = srv.root("GET", "sys/metrics?format=xml", None).await;
    assert_eq!(s, 400);
    let nobody = srv.token_with(&["default"]).await;
    let (s, _) = srv.call("GET", "sys/metrics", Some(&nobody), None).await;
    assert_eq!(s, 403, "metrics need read on sys/metrics");
}
