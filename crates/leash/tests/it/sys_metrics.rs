//! `sys/metrics`: failed logins per role and lease gauges, in Prometheus text and JSON.

use leash_testkit::TestServer;
use serde_json::json;

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
