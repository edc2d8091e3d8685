//! `sys/health`, `sys/seal-status`, `sys/init`: plain JSON (no envelope), no token
//! needed, Vault's field names and status codes.

use leash_testkit::TestServer;

use crate::raw;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_is_plain_json_with_vaults_fields() {
    let srv = TestServer::start().await;
    let r = raw(srv.addr, "GET", "/v1/sys/health", &[], b"").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-type"), Some("application/json"));
    let b = r.json();
    assert_eq!(b["initialized"], true);
    assert_eq!(b["sealed"], false);
    assert_eq!(b["standby"], false);
    assert_eq!(b["performance_standby"], false);
    assert_eq!(b["replication_performance_mode"], "disabled");
    assert_eq!(b["replication_dr_mode"], "disabled");
    assert!(
        b["server_time_utc"].as_i64().unwrap() > 1_600_000_000,
        "{b}"
    );
    assert!(b["version"].as_str().is_some_and(|v| !v.is_empty()), "{b}");
    assert!(
        b["cluster_name"].as_str().is_some_and(|v| !v.is_empty()),
        "{b}"
    );
    assert!(
        b["cluster_id"].as_str().is_some_and(|v| !v.is_empty()),
        "{b}"
    );
    assert!(
        b.get("request_id").is_none(),
        "health is not an envelope: {b}"
    );
    assert!(b.get("data").is_none(), "health is not an envelope: {b}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_needs_no_token_and_ignores_a_bad_one() {
    let srv = TestServer::start().await;
    let (s, _) = srv.call("GET", "sys/health", None, None).await;
    assert_eq!(s, 200);
    let (s, b) = srv
        .call("GET", "sys/health", Some("not-a-token-at-all"), None)
        .await;
    assert_eq!(s, 200, "{b}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn head_health_has_the_status_and_no_body() {
    let srv = TestServer::start().await;
    let r = raw(srv.addr, "HEAD", "/v1/sys/health", &[], b"").await;
    assert_eq!(r.status, 200);
    assert!(r.body.is_empty(), "{:?}", String::from_utf8_lossy(&r.body));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_activecode_sets_the_status() {
    let srv = TestServer::start().await;
    let (s, b) = srv
        .call("GET", "sys/health?activecode=299", None, None)
        .await;
    assert_eq!(s, 299, "{b}");
    assert_eq!(b["sealed"], false);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seal_status_and_init_answer_as_vault() {
    let srv = TestServer::start().await;
    let (s, b) = srv.call("GET", "sys/seal-status", None, None).await;
    assert_eq!(s, 200, "{b}");
    for k in [
        "type",
        "initialized",
        "sealed",
        "t",
        "n",
        "progress",
        "nonce",
        "version",
        "cluster_name",
        "cluster_id",
        "storage_type",
    ] {
        assert!(b.get(k).is_some(), "seal-status lacks {k}: {b}");
    }
    assert_eq!(b["sealed"], false);
    let (s, b) = srv.call("GET", "sys/init", None, None).await;
    assert_eq!(s, 200);
    assert_eq!(b, serde_json::json!({"initialized": true}));
}
