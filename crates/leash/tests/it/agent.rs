//! `leash agent` against the real server and the real PostgreSQL, with TTLs of a few
//! seconds. The agent is the real `leash` binary run as a child process; the test talks
//! to the server over HTTP and to PostgreSQL directly, and asserts what a user notices:
//! files appear with working credentials, stay valid, rotate, get revoked.

pub(crate) mod support;

use std::time::Duration;

use serde_json::{Value, json};

use crate::eventually;
use support::{Fixture, read_json, sigterm};

const LONG: Duration = Duration::from_secs(90);

/// Files appear (0600, valid JSON with the real TTL) and their credentials connect;
/// renewal keeps the same user valid past its first TTL; at max TTL the file rotates to
/// a new user and the old role is dropped after the grace period; a Python reader that
/// reloads on mtime change never sees half a file; /healthz and /metrics answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn renews_then_rotates_at_max_ttl_and_readers_never_see_half_a_file() {
    let fx = Fixture::new("4s", "14s").await;
    let health = support::free_port();
    let cfg = fx.config(&format!("health_address = \"127.0.0.1:{health}\""), &[]);
    // Every render runs the template's command; one that fails is logged, not fatal.
    let text = std::fs::read_to_string(&cfg).unwrap().replacen(
        "  destination =",
        &format!(
            "  command = \"echo rendered >> {}/command.log; exit 3\"\n  destination =",
            fx.dir.path().display()
        ),
        1,
    );
    std::fs::write(&cfg, text).unwrap();
    let reader = fx.python_reader();
    let mut agent = fx.spawn(&["agent", "--config", cfg.to_str().unwrap()]);

    let db = fx.dir.path().join("db.json");
    eventually("the credential file", LONG, || async { db.exists() }).await;
    use std::os::unix::fs::PermissionsExt as _;
    assert_eq!(
        std::fs::metadata(&db).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let first = read_json(&db);
    let user1 = first["username"].as_str().unwrap().to_owned();
    assert_eq!(first["ttl_seconds"], 4, "{first}");
    fx.pg
        .login(&user1, first["password"].as_str().unwrap())
        .await
        .simple_query("SELECT 1")
        .await
        .unwrap();
    let (s, b) = support::http_get(health, "/healthz").await;
    assert_eq!(s, 200, "{b}");

    // Renewal: well past the first TTL, the same user still connects.
    let issued = std::time::Instant::now();
    eventually("the lease to be renewed", LONG, || async {
        let (_, m) = support::http_get(health, "/metrics").await;
        m.lines()
            .any(|l| l.starts_with("leash_agent_renewals_total ") && !l.ends_with(" 0"))
    })
    .await;
    while issued.elapsed() < Duration::from_secs(5) {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let now = read_json(&db);
    if now["username"] == user1.as_str() {
        fx.pg
            .login(&user1, first["password"].as_str().unwrap())
            .await
            .simple_query("SELECT 1")
            .await
            .unwrap();
    }

    // Rotation at max TTL: a new user in the file, the old role dropped after the grace.
    eventually("the file to rotate to a new user", LONG, || async {
        read_json_opt(&db).is_some_and(|v| v["username"] != user1.as_str())
    })
    .await;
    let second = read_json(&db);
    let user2 = second["username"].as_str().unwrap().to_owned();
    fx.pg
        .login(&user2, second["password"].as_str().unwrap())
        .await
        .simple_query("SELECT 1")
        .await
        .unwrap();
    eventually("the old role to be dropped", LONG, || async {
        !fx.pg.role_exists(&user1).await
    })
    .await;
    let (_, m) = support::http_get(health, "/metrics").await;
    assert!(
        m.contains("leash_agent_credential_expiry_seconds{secret=\"database/creds/"),
        "{m}"
    );
    let rotations: u64 = m
        .lines()
        .find_map(|l| l.strip_prefix("leash_agent_rotations_total "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0);
    assert!(rotations >= 1, "{m}");
    // The template's `command` ran after each render (first one and the rotation).
    let ran = std::fs::read_to_string(fx.dir.path().join("command.log")).unwrap_or_default();
    assert!(ran.lines().count() >= 2, "command runs: {ran:?}");

    let report = reader.finish().await;
    assert_eq!(report["bad"], 0, "the reader saw a partial file: {report}");
    assert!(report["users"].as_u64().unwrap() >= 2, "{report}");

    sigterm(&agent);
    let code = support::wait_exit(&mut agent).await;
    assert_eq!(code, Some(0), "{}", fx.log());
    fx.cleanup().await;
}

fn read_json_opt(p: &std::path::Path) -> Option<Value> {
    serde_json::from_slice(&std::fs::read(p).ok()?).ok()
}

/// SIGTERM revokes: the lease is gone, the database role dropped, the token revoked,
/// and the agent exits 0.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_revokes_leases_and_token() {
    let fx = Fixture::new("30s", "1h").await;
    let cfg = fx.config("", &[]);
    let mut agent = fx.spawn(&["agent", "--config", cfg.to_str().unwrap()]);
    let db = fx.dir.path().join("db.json");
    eventually("the credential file", LONG, || async { db.exists() }).await;
    let creds = read_json(&db);
    let user = creds["username"].as_str().unwrap().to_owned();
    // The lease cache is written after the files it rendered: wait for it too.
    let cache_file = fx.dir.path().join("cache.json");
    eventually("the lease cache", LONG, || async {
        cache_file.exists()
            && std::fs::read(&cache_file)
                .ok()
                .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
                .is_some_and(|v| v["secrets"].as_object().is_some_and(|m| !m.is_empty()))
    })
    .await;
    let cache = read_json(&cache_file);
    let lease_id = cache["secrets"]
        .as_object()
        .unwrap()
        .values()
        .next()
        .unwrap()["lease_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let token = std::fs::read_to_string(fx.dir.path().join("token")).unwrap();
    let (s, _) = fx
        .srv
        .call("GET", "auth/token/lookup-self", Some(&token), None)
        .await;
    assert_eq!(s, 200);

    sigterm(&agent);
    assert_eq!(
        support::wait_exit(&mut agent).await,
        Some(0),
        "{}",
        fx.log()
    );
    let (s, b) = fx
        .srv
        .root(
            "PUT",
            "sys/leases/lookup",
            Some(json!({"lease_id": lease_id})),
        )
        .await;
    assert_eq!(s, 400, "lease still there: {b}");
    eventually("the role to be dropped", LONG, || async {
        !fx.pg.role_exists(&user).await
    })
    .await;
    let (s, _) = fx
        .srv
        .call("GET", "auth/token/lookup-self", Some(&token), None)
        .await;
    assert_eq!(s, 403, "token still valid");
    assert!(!fx.dir.path().join("cache.json").exists());
    fx.cleanup().await;
}

/// `exit_after_auth` renders once and exits 0 keeping the lease; the next agent (the
/// sidecar after an init container) reuses it from the cache: no second database user.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exit_after_auth_then_restart_reuses_the_cached_lease() {
    let fx = Fixture::new("30s", "1h").await;
    // A KV v2 secret rendered beside the database credential (`.Data.data`).
    let (st, b) = fx
        .srv
        .root(
            "POST",
            "secret/data/agents/config/app",
            Some(json!({"data": {"model": "small", "max_tokens": 512}})),
        )
        .await;
    assert_eq!(st, 200, "{b}");
    let kv = fx.dir.path().join("config.json");
    let kv_template = format!(
        "template {{\n  destination = \"{}\"\n  contents = \"{{{{ with secret \\\"secret/data/agents/config/app\\\" }}}}{{{{ .Data.data | toJSON }}}}{{{{ end }}}}\"\n}}",
        kv.display()
    );
    let once = fx.config(&format!("exit_after_auth = true\n{kv_template}"), &[]);
    let mut init = fx.spawn(&["agent", "--config", once.to_str().unwrap()]);
    assert_eq!(support::wait_exit(&mut init).await, Some(0), "{}", fx.log());
    let db = fx.dir.path().join("db.json");
    let user = read_json(&db)["username"].as_str().unwrap().to_owned();
    assert!(fx.pg.role_exists(&user).await);
    assert_eq!(read_json(&kv), json!({"model": "small", "max_tokens": 512}));

    let cfg = fx.config("", &[]);
    let mut agent = fx.spawn(&["agent", "--config", cfg.to_str().unwrap()]);
    eventually("the sidecar to adopt the cache", LONG, || async {
        fx.log().contains("reusing a cached lease")
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(read_json(&db)["username"], user.as_str());
    assert_eq!(
        fx.pg.our_roles().await,
        vec![user.clone()],
        "a second user was minted"
    );
    sigterm(&agent);
    assert_eq!(
        support::wait_exit(&mut agent).await,
        Some(0),
        "{}",
        fx.log()
    );
    eventually("the role to be dropped", LONG, || async {
        !fx.pg.role_exists(&user).await
    })
    .await;
    fx.cleanup().await;
}

/// A key missing from the data is an error that names the key and the template; no
/// file is written.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_key_fails_naming_the_key_and_template() {
    let fx = Fixture::new("30s", "1h").await;
    let role = fx.pg.role.clone();
    let bad = fx.dir.path().join("bad.json");
    let cfg = fx.config_with(
        "",
        &format!(
            "{{{{ with secret \"database/creds/{role}\" }}}}{{{{ .Data.usernmae }}}}{{{{ end }}}}"
        ),
        &bad,
    );
    let mut agent = fx.spawn(&["agent", "--config", cfg.to_str().unwrap()]);
    let code = support::wait_exit(&mut agent).await;
    assert_ne!(code, Some(0));
    let log = fx.log();
    assert!(
        log.contains("usernmae") && log.contains("bad.json"),
        "{log}"
    );
    assert!(!bad.exists());
    fx.cleanup().await;
}

/// Exec mode: the child gets the credentials in its environment, is restarted with new
/// ones on rotation, and its exit code passes through.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exec_mode_restarts_the_child_with_new_env_and_passes_its_exit_code() {
    let fx = Fixture::new("3s", "7s").await;
    let role = fx.pg.role.clone();
    let env = format!(
        "env_template \"DB_USER\" {{ contents = \"{{{{ with secret \\\"database/creds/{role}\\\" }}}}{{{{ .Data.username }}}}{{{{ end }}}}\" }}\n\
         env_template \"DB_PASSWORD\" {{ contents = \"{{{{ with secret \\\"database/creds/{role}\\\" }}}}{{{{ .Data.password }}}}{{{{ end }}}}\" }}"
    );
    let cfg = fx.config(&env, &[]);
    let seen = fx.dir.path().join("seen.txt");
    let script = format!("echo \"$DB_USER\" >> {}; exec sleep 600", seen.display());
    let mut agent = fx.spawn(&[
        "agent",
        "exec",
        "--config",
        cfg.to_str().unwrap(),
        "--",
        "/bin/sh",
        "-c",
        &script,
    ]);
    eventually("the child to start with credentials", LONG, || async {
        std::fs::read_to_string(&seen).is_ok_and(|s| s.lines().any(|l| l.starts_with("v-")))
    })
    .await;
    let until = std::time::Instant::now() + LONG;
    loop {
        let s = std::fs::read_to_string(&seen).unwrap_or_default();
        let mut users: Vec<&str> = s.lines().collect();
        users.dedup();
        if users.len() >= 2 {
            break;
        }
        assert!(
            std::time::Instant::now() < until,
            "the child was not restarted with a new user; seen {s:?}; log:\n{}",
            fx.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let s = std::fs::read_to_string(&seen).unwrap();
    assert!(s.lines().all(|l| l.starts_with("v-")), "{s}");
    sigterm(&agent);
    // The child was stopped by SIGTERM: its status (128 + 15) passes through.
    assert_eq!(
        support::wait_exit(&mut agent).await,
        Some(143),
        "{}",
        fx.log()
    );

    let mut agent = fx.spawn(&[
        "agent",
        "exec",
        "--config",
        cfg.to_str().unwrap(),
        "--",
        "/bin/sh",
        "-c",
        "test -n \"$DB_PASSWORD\" && exit 7",
    ]);
    assert_eq!(
        support::wait_exit(&mut agent).await,
        Some(7),
        "{}",
        fx.log()
    );
    eventually("every role to be dropped", LONG, || async {
        fx.pg.our_roles().await.is_empty()
    })
    .await;
    fx.cleanup().await;
}

/// The server stops mid-run and comes back on the same data: the agent retries with
/// backoff, then serves working credentials again and reports healthy.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_restart_mid_run_the_agent_recovers() {
    let fx = Fixture::new("6s", "1h").await;
    let proxy = support::Proxy::start(fx.srv.addr).await;
    let health = support::free_port();
    let cfg = fx.config_at(
        &proxy.url(),
        &format!("health_address = \"127.0.0.1:{health}\""),
    );
    let mut agent = fx.spawn(&["agent", "--config", cfg.to_str().unwrap()]);
    let db = fx.dir.path().join("db.json");
    eventually("the credential file", LONG, || async { db.exists() }).await;

    let Fixture {
        srv,
        pg,
        dir,
        log_path,
        method,
    } = fx;
    let root = srv.root_token.clone();
    let (guard, data_dir, key) = srv.stop().await;
    eventually("a failed call to be seen", LONG, || async {
        let (_, m) = support::http_get(health, "/metrics").await;
        m.lines()
            .any(|l| l.starts_with("leash_agent_failures_total ") && !l.ends_with(" 0"))
    })
    .await;
    let srv = leash_testkit::TestServer::start_with(leash_testkit::Options {
        dir: Some(data_dir),
        key: Some(key),
        root_token: Some(root),
        ..Default::default()
    })
    .await;
    proxy.retarget(srv.addr);
    let pg = pg.reconnect().await;
    let fx = Fixture {
        srv,
        pg,
        dir,
        log_path,
        method,
    };
    eventually(
        "the agent to be healthy with working credentials",
        LONG,
        || async {
            let (s, _) = support::http_get(health, "/healthz").await;
            if s != 200 {
                return false;
            }
            let Some(v) = read_json_opt(&db) else {
                return false;
            };
            let (u, p) = (
                v["username"].as_str().unwrap(),
                v["password"].as_str().unwrap(),
            );
            support::pg_can_login(&fx.pg, u, p).await
        },
    )
    .await;
    sigterm(&agent);
    assert_eq!(
        support::wait_exit(&mut agent).await,
        Some(0),
        "{}",
        fx.log()
    );
    drop(guard);
    fx.cleanup().await;
}

/// The agent's own token reaches its max TTL: the agent logs in again before it ends,
/// re-issues the credential under the new token (a lease dies with its token), and the
/// file keeps working credentials past the first token's end.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_token_nearing_its_max_ttl_is_replaced_and_credentials_reissued() {
    let fx = Fixture::with_token_ttls("1m", "1h", "4s", "10s").await;
    let health = support::free_port();
    let cfg = fx.config(&format!("health_address = \"127.0.0.1:{health}\""), &[]);
    let started = std::time::Instant::now();
    let mut agent = fx.spawn(&["agent", "--config", cfg.to_str().unwrap()]);
    let db = fx.dir.path().join("db.json");
    eventually("the credential file", LONG, || async { db.exists() }).await;
    let first_token = std::fs::read_to_string(fx.dir.path().join("token")).unwrap();
    eventually("a second login", LONG, || async {
        let (_, m) = support::http_get(health, "/metrics").await;
        m.lines()
            .any(|l| l.starts_with("leash_agent_reauths_total ") && !l.ends_with(" 0"))
    })
    .await;
    // Past the first token's max TTL, the file holds credentials that work.
    while started.elapsed() < Duration::from_secs(13) {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let (s, _) = fx
        .srv
        .call("GET", "auth/token/lookup-self", Some(&first_token), None)
        .await;
    assert_eq!(s, 403, "the first token should be gone");
    eventually("working credentials and a healthy agent", LONG, || async {
        let (s, _) = support::http_get(health, "/healthz").await;
        let Some(v) = read_json_opt(&db) else {
            return false;
        };
        let (u, p) = (
            v["username"].as_str().unwrap(),
            v["password"].as_str().unwrap(),
        );
        s == 200 && support::pg_can_login(&fx.pg, u, p).await
    })
    .await;
    sigterm(&agent);
    assert_eq!(
        support::wait_exit(&mut agent).await,
        Some(0),
        "{}",
        fx.log()
    );
    fx.cleanup().await;
}

/// With `exit_on_retry_failure`, an unreachable server makes the agent give up after
/// `num_retries` attempts with a non-zero exit code and the last error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exit_on_retry_failure_gives_up_after_the_configured_attempts() {
    let fx = Fixture::new("1m", "1h").await;
    let dead = format!("http://127.0.0.1:{}", support::free_port());
    let cfg = fx.config_retry(
        &dead,
        "num_retries = 2  backoff = \"1s\"  max_backoff = \"1s\"",
        "template_config { exit_on_retry_failure = true }",
    );
    let mut agent = fx.spawn(&["agent", "--config", cfg.to_str().unwrap()]);
    let code = support::wait_exit(&mut agent).await;
    assert_eq!(code, Some(1), "{}", fx.log());
    let log = fx.log();
    assert!(log.contains("giving up after 3 failed attempts"), "{log}");
    fx.cleanup().await;
}

/// The `jwt` auto-auth method: the agent logs in with a JWT read from a file.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jwt_auto_auth_logs_in_with_the_token_file() {
    use crate::auth_jwt::support::{now, pki, sign};
    let mut fx = Fixture::new("30s", "1h").await;
    let (s, b) = fx
        .srv
        .root("POST", "sys/auth/jwt", Some(json!({"type": "jwt"})))
        .await;
    assert_eq!(s, 204, "{b}");
    let (s, b) = fx
        .srv
        .root(
            "POST",
            "auth/jwt/config",
            Some(json!({"jwt_validation_pubkeys": [pki().rsa.public_pem],
                        "bound_issuer": "https://ci.example.test"})),
        )
        .await;
    assert_eq!(s, 204, "{b}");
    let (s, b) = fx
        .srv
        .root(
            "POST",
            "auth/jwt/role/agent",
            Some(json!({"role_type": "jwt", "user_claim": "sub",
                        "bound_audiences": ["leash"], "token_policies": ["agent"],
                        "token_ttl": "10m"})),
        )
        .await;
    assert_eq!(s, 204, "{b}");
    let t = now();
    let jwt = sign(
        jsonwebtoken::Algorithm::RS256,
        &pki().rsa.private_pem,
        None,
        &json!({"iss": "https://ci.example.test", "aud": ["leash"], "sub": "agent-7",
                "iat": t, "nbf": t, "exp": t + 300}),
    );
    std::fs::write(fx.dir.path().join("jwt"), jwt).unwrap();
    fx.method = r#"method "jwt" { config = { role = "agent", path = "{d}/jwt" } }"#.to_owned();
    let cfg = fx.config("exit_after_auth = true\nrevoke_on_exit = false", &[]);
    let mut agent = fx.spawn(&["agent", "--config", cfg.to_str().unwrap()]);
    assert_eq!(
        support::wait_exit(&mut agent).await,
        Some(0),
        "{}",
        fx.log()
    );
    let v = read_json(&fx.dir.path().join("db.json"));
    let (u, p) = (
        v["username"].as_str().unwrap(),
        v["password"].as_str().unwrap(),
    );
    assert!(support::pg_can_login(&fx.pg, u, p).await);
    // The token came from the JWT login.
    let token = std::fs::read_to_string(fx.dir.path().join("token")).unwrap();
    let (s, me) = fx
        .srv
        .call("GET", "auth/token/lookup-self", Some(&token), None)
        .await;
    assert_eq!(s, 200, "{me}");
    assert_eq!(me["data"]["path"], "auth/jwt/login");
    fx.cleanup().await;
}

/// The `token_file` method: no login, the token in the file is used as it is.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_file_auto_auth_uses_the_token_as_is() {
    let mut fx = Fixture::new("30s", "1h").await;
    let token = fx.srv.token_with(&["agent"]).await;
    std::fs::write(fx.dir.path().join("given-token"), format!("{token}\n")).unwrap();
    fx.method =
        r#"method "token_file" { config = { token_file_path = "{d}/given-token" } }"#.to_owned();
    let cfg = fx.config("", &[]);
    let mut agent = fx.spawn(&["agent", "--config", cfg.to_str().unwrap()]);
    let db = fx.dir.path().join("db.json");
    eventually("the credential file", LONG, || async { db.exists() }).await;
    let v = read_json(&db);
    let user = v["username"].as_str().unwrap().to_owned();
    assert!(support::pg_can_login(&fx.pg, &user, v["password"].as_str().unwrap()).await);
    sigterm(&agent);
    assert_eq!(
        support::wait_exit(&mut agent).await,
        Some(0),
        "{}",
        fx.log()
    );
    // Revoke on exit covers a token the agent did not mint, too.
    let (s, _) = fx
        .srv
        .call("GET", "auth/token/lookup-self", Some(&token), None)
        .await;
    assert_eq!(s, 403);
    eventually("the role to be dropped", LONG, || async {
        !fx.pg.role_exists(&user).await
    })
    .await;
    fx.cleanup().await;
}

/// The `kubernetes` auto-auth method: the agent logs in with the service-account token
/// file (validated offline here, with the cluster's signing key).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubernetes_auto_auth_logs_in_with_the_service_account_token() {
    use crate::auth_jwt::support::{now, pki, sign};
    let mut fx = Fixture::new("30s", "1h").await;
    let iss = "https://kubernetes.default.svc.cluster.local";
    let (s, b) = fx
        .srv
        .root(
            "POST",
            "sys/auth/kubernetes",
            Some(json!({"type": "kubernetes"})),
        )
        .await;
    assert_eq!(s, 204, "{b}");
    let (s, b) = fx
        .srv
        .root(
            "POST",
            "auth/kubernetes/config",
            Some(json!({"kubernetes_host": "https://127.0.0.1:1",
                        "pem_keys": [pki().rsa.public_pem], "issuer": iss,
                        "disable_local_ca_jwt": true})),
        )
        .await;
    assert!(s == 200 || s == 204, "{b}"); // 200: with a warning about offline validation
    let (s, b) = fx
        .srv
        .root(
            "POST",
            "auth/kubernetes/role/summariser",
            Some(json!({"bound_service_account_names": ["summariser"],
                        "bound_service_account_namespaces": ["agents"],
                        "audience": "leash", "token_policies": ["agent"],
                        "token_ttl": "15m"})),
        )
        .await;
    assert_eq!(s, 204, "{b}");
    let t = now();
    let sa = sign(
        jsonwebtoken::Algorithm::RS256,
        &pki().rsa.private_pem,
        None,
        &json!({"aud": ["leash"], "iss": iss, "sub": "system:serviceaccount:agents:summariser",
                "iat": t, "nbf": t, "exp": t + 600,
                "kubernetes.io": {"namespace": "agents",
                                  "pod": {"name": "summariser-1", "uid": "pod-uid-1"},
                                  "serviceaccount": {"name": "summariser", "uid": "sa-uid-1"}}}),
    );
    std::fs::write(fx.dir.path().join("sa-token"), sa).unwrap();
    fx.method =
        r#"method "kubernetes" { config = { role = "summariser", token_path = "{d}/sa-token" } }"#
            .to_owned();
    let cfg = fx.config("exit_after_auth = true", &[]);
    let mut agent = fx.spawn(&["agent", "--config", cfg.to_str().unwrap()]);
    assert_eq!(
        support::wait_exit(&mut agent).await,
        Some(0),
        "{}",
        fx.log()
    );
    let v = read_json(&fx.dir.path().join("db.json"));
    let (u, p) = (
        v["username"].as_str().unwrap(),
        v["password"].as_str().unwrap(),
    );
    assert!(support::pg_can_login(&fx.pg, u, p).await);
    let token = std::fs::read_to_string(fx.dir.path().join("token")).unwrap();
    let (s, me) = fx
        .srv
        .call("GET", "auth/token/lookup-self", Some(&token), None)
        .await;
    assert_eq!(s, 200, "{me}");
    assert_eq!(me["data"]["path"], "auth/kubernetes/login");
    fx.cleanup().await;
}

/// Exec mode redacts the child's stdout and stderr: the password it prints (in one
/// write or split across two), and the agent's token, become `[REDACTED:<kind>]`; other
/// bytes (non-UTF-8 included) pass unchanged; the leaked credential is revoked and
/// re-issued (the child restarted with the new one), the leaked token replaced.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exec_mode_redacts_the_childs_output_and_reissues_what_leaked() {
    let fx = Fixture::new("5m", "10m").await;
    let role = fx.pg.role.clone();
    let env = format!(
        "env_template \"DB_USER\" {{ contents = \"{{{{ with secret \\\"database/creds/{role}\\\" }}}}{{{{ .Data.username }}}}{{{{ end }}}}\" }}\n\
         env_template \"DB_PASSWORD\" {{ contents = \"{{{{ with secret \\\"database/creds/{role}\\\" }}}}{{{{ .Data.password }}}}{{{{ end }}}}\" }}"
    );
    // The child is not restarted when its credential is re-issued, so it prints all of
    // its output whatever the agent does meanwhile.
    let cfg = fx.config(
        &format!("{env}\nexec {{ restart_on_secret_changes = \"never\" }}"),
        &[],
    );
    let d = fx.dir.path().display().to_string();
    // Print the password whole, split over two writes 200 ms apart (with no newline in
    // between), on stderr, the agent's token, and some binary.
    let script = format!(
        "printf 'user=%s pw=%s\\n' \"$DB_USER\" \"$DB_PASSWORD\"; \
           printf 'half=%s' \"$(printf %s \"$DB_PASSWORD\" | cut -c1-6)\"; sleep 0.2; \
           printf '%s end\\n' \"$(printf %s \"$DB_PASSWORD\" | cut -c7-)\"; \
           printf 'err=%s\\n' \"$DB_PASSWORD\" >&2; \
           printf 'tok=%s\\n' \"$(cat {d}/token)\"; \
           printf '\\377\\376 binary\\n'; \
           printf '%s\\n' \"$DB_PASSWORD\" > {d}/leaked; cp {d}/token {d}/leaked-token; \
           echo \"$DB_USER\" > {d}/seen; exec sleep 600"
    );
    let out_path = fx.dir.path().join("child-stdout");
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&fx.log_path)
        .unwrap();
    let mut agent = support::agent_command(&[
        "agent",
        "exec",
        "--config",
        cfg.to_str().unwrap(),
        "--",
        "/bin/sh",
        "-c",
        &script,
    ])
    .env("LEASH_LOG", "info,leash_agent=debug")
    .stdout(std::fs::File::create(&out_path).unwrap())
    .stderr(log)
    .kill_on_drop(true)
    .spawn()
    .unwrap();
    let seen = fx.dir.path().join("seen");
    eventually("the child to print everything", LONG, || async {
        seen.exists()
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let users: Vec<String> = std::fs::read_to_string(&seen)
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect();
    let password = std::fs::read_to_string(fx.dir.path().join("leaked"))
        .unwrap()
        .trim()
        .to_owned();
    let token = std::fs::read_to_string(fx.dir.path().join("leaked-token"))
        .unwrap()
        .trim()
        .to_owned();
    let out = std::fs::read(&out_path).unwrap();
    let text = String::from_utf8_lossy(&out);
    assert!(!text.contains(&password), "the password passed: {text}");
    assert!(!text.contains(&token), "the token passed: {text}");
    assert!(
        text.contains(&format!("user={} pw=[REDACTED:password]\n", users[0])),
        "{text}"
    );
    assert!(text.contains("half=[REDACTED:password] end\n"), "{text}");
    assert!(text.contains("tok=[REDACTED:token]\n"), "{text}");
    assert!(
        out.windows(9).any(|w| w == b"\xff\xfe binary"),
        "binary output is kept: {text}"
    );
    let log_text = fx.log();
    assert!(log_text.contains("err=[REDACTED:password]"), "{log_text}");
    assert!(!log_text.contains(&password), "the password reached stderr");
    // The leaked credential is dead: its role is dropped; the leaked token is revoked.
    eventually("the leaked role to be dropped", LONG, || async {
        !fx.pg.role_exists(&users[0]).await
    })
    .await;
    eventually("the leaked token to be revoked", LONG, || async {
        fx.srv
            .call("GET", "auth/token/lookup-self", Some(&token), None)
            .await
            .0
            == 403
    })
    .await;
    // A new credential was issued in its place (and again under the new token); the
    // replaced ones are dropped.
    assert!(
        fx.log().matches("credential issued").count() >= 2,
        "{}",
        fx.log()
    );
    eventually("one live role", LONG, || async {
        fx.pg.our_roles().await.len() == 1
    })
    .await;
    sigterm(&agent);
    support::wait_exit(&mut agent).await;
    fx.cleanup().await;
}
