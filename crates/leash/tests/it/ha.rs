//! Several servers on one PostgreSQL (`storage "postgresql"`): three real `leash
//! server` processes share a fresh database created for the test in the local
//! PostgreSQL (dropped afterwards), and every server answers every request.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::database::{PgScratch, pg_admin_url, pg_connect, pg_db_conn};
use crate::eventually;

/// One `leash server` process.
pub(crate) struct Server {
    child: Child,
    pub(crate) url: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A fresh database in the shared PostgreSQL and the configuration of servers on it.
pub(crate) struct Cluster {
    pub(crate) dir: tempfile::TempDir,
    admin_url: String,
    pub(crate) db: String,
    pub(crate) servers: Vec<Server>,
    pub(crate) root: String,
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for s in &mut self.servers {
            let _ = s.child.kill();
            let _ = s.child.wait();
        }
        let (db, admin_url) = (self.db.clone(), self.admin_url.clone());
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async {
                let Ok((admin, conn)) =
                    tokio_postgres::connect(&admin_url, tokio_postgres::NoTls).await
                else {
                    return;
                };
                tokio::spawn(conn);
                let _ = admin
                    .batch_execute(&format!("DROP DATABASE IF EXISTS {db} WITH (FORCE)"))
                    .await;
            });
        })
        .join();
    }
}

/// Writes the configuration of a server on database `db` into `dir` (one per server,
/// sharing the key file and the audit directory).
fn write_config(dir: &Path, conn: &str, n: usize) -> PathBuf {
    let cfg = dir.join(format!("server{n}.hcl"));
    std::fs::write(
        &cfg,
        format!(
            r#"
storage "postgresql" {{
  connection_url = "{url}"
  table          = "leash_store"
  ha_enabled     = "true"
  max_parallel   = "8"
}}
listener "tcp" {{
  address     = "127.0.0.1:0"
  tls_disable = true
}}
seal "file" {{ path = "{key}" }}
cluster_name = "it"
"#,
            url = conn,
            key = dir.join("leash.key").display()
        ),
    )
    .unwrap();
    cfg
}

/// Starts one server; returns it and the root token if it printed one.
pub(crate) fn start(cfg: &Path) -> (Server, Option<String>) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_leash"))
        .args(["server", "--config"])
        .arg(cfg)
        .env("LEASH_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut lines = BufReader::new(stdout).lines();
    let (mut url, mut root) = (None, None);
    // The banner ends with the version line, then the root token when there is one.
    loop {
        let Some(line) = lines.next() else {
            panic!("server exited before it was ready")
        };
        let line = line.unwrap();
        if let Some(a) = line.split("Listening on:").nth(1) {
            url = Some(a.trim().to_owned());
        }
        if let Some(t) = line.strip_prefix("Root Token:") {
            root = Some(t.trim().to_owned());
        }
        if url.is_some() && line.contains("Version:") {
            break;
        }
    }
    // The root token, if any, follows the version line at once.
    let mut rest = Vec::new();
    let deadline = Instant::now() + Duration::from_millis(300);
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    std::thread::spawn(move || {
        for l in lines.map_while(Result::ok) {
            let _ = tx.send(l);
        }
    });
    while Instant::now() < deadline {
        if let Ok(l) = rx.recv_timeout(Duration::from_millis(50)) {
            rest.push(l);
        }
    }
    for l in rest {
        if let Some(t) = l.strip_prefix("Root Token:") {
            root = Some(t.trim().to_owned());
        }
    }
    std::thread::spawn(move || for _ in rx {});
    (
        Server {
            child,
            url: url.unwrap(),
        },
        root,
    )
}

impl Cluster {
    /// A fresh database in the shared PostgreSQL and `n` servers on it, started together.
    pub(crate) async fn start(n: usize) -> Cluster {
        Cluster::start_on(n, &pg_admin_url()).await
    }

    /// The same on the PostgreSQL at `admin_url`.
    pub(crate) async fn start_on(n: usize, admin_url: &str) -> Cluster {
        let admin = pg_connect(admin_url).await;
        let db = format!(
            "leash_ha_{}",
            leash_types::random::base62(8).to_ascii_lowercase()
        );
        admin
            .batch_execute(&format!("CREATE DATABASE {db}"))
            .await
            .unwrap();
        let dir = tempfile::tempdir().unwrap();
        // The key file is made once, then copied to every server (as an operator would).
        let key = leash_storage::Keyring::generate_master();
        let encoded = {
            use base64::Engine;
            base64::engine::general_purpose::STANDARD.encode(key.expose())
        };
        let key_path = dir.path().join("leash.key");
        std::fs::write(&key_path, format!("{encoded}\n")).unwrap();
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&key_path, std::fs::Permissions::from_mode(0o600)).unwrap();
        }
        let parsed: tokio_postgres::Config = admin_url.parse().unwrap();
        let host = match parsed.get_hosts().first() {
            Some(tokio_postgres::config::Host::Tcp(h)) => h.clone(),
            _ => "127.0.0.1".to_owned(),
        };
        let conn = format!(
            "host={host} port={} user={} dbname={db}",
            parsed.get_ports().first().copied().unwrap_or(5432),
            parsed.get_user().unwrap_or("postgres")
        );
        let cfgs: Vec<PathBuf> = (0..n).map(|i| write_config(dir.path(), &conn, i)).collect();
        let mut cluster = Cluster {
            dir,
            admin_url: admin_url.to_owned(),
            db,
            servers: Vec::new(),
            root: String::new(),
        };
        let started: Vec<(Server, Option<String>)> = std::thread::scope(|s| {
            let hs: Vec<_> = cfgs.iter().map(|c| s.spawn(move || start(c))).collect();
            hs.into_iter().map(|h| h.join().unwrap()).collect()
        });
        let mut roots = Vec::new();
        for (srv, root) in started {
            roots.extend(root);
            cluster.servers.push(srv);
        }
        assert_eq!(
            roots.len(),
            1,
            "exactly one of the servers started together initialises and prints a root token"
        );
        cluster.root = roots.pop().unwrap();
        cluster
    }

    pub(crate) fn config(&self, n: usize) -> PathBuf {
        self.dir.path().join(format!("server{n}.hcl"))
    }
}

pub(crate) async fn call(
    http: &reqwest::Client,
    url: &str,
    token: &str,
    method: &str,
    path: &str,
    body: Option<Value>,
) -> (u16, Value) {
    let m = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
    let mut rb = http
        .request(m, format!("{url}/v1/{path}"))
        .header("X-Vault-Token", token);
    if let Some(b) = body {
        rb = rb.json(&b);
    }
    let r = rb.send().await.unwrap();
    let s = r.status().as_u16();
    (s, r.json::<Value>().await.unwrap_or(Value::Null))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_made_on_one_server_works_on_all_and_its_revocation_is_seen_within_100ms() {
    let c = Cluster::start(3).await;
    let http = reqwest::Client::new();
    let (a, b, cc) = (&c.servers[0].url, &c.servers[1].url, &c.servers[2].url);
    let (s, body) = call(
        &http,
        a,
        &c.root,
        "POST",
        "auth/token/create",
        Some(json!({"policies": ["default"]})),
    )
    .await;
    assert_eq!(s, 200, "{body}");
    let tok = body["auth"]["client_token"].as_str().unwrap().to_owned();
    for url in [a, b, cc] {
        // Twice: the second answer comes from the server's token cache.
        for _ in 0..2 {
            let (s, body) = call(&http, url, &tok, "GET", "auth/token/lookup-self", None).await;
            assert_eq!(s, 200, "token made on A works on {url}: {body}");
        }
    }
    let (s, body) = call(
        &http,
        a,
        &c.root,
        "POST",
        "auth/token/revoke",
        Some(json!({"token": tok})),
    )
    .await;
    assert_eq!(s, 204, "{body}");
    let revoked_at = Instant::now();
    for url in [b, cc] {
        loop {
            let (s, _) = call(&http, url, &tok, "GET", "auth/token/lookup-self", None).await;
            if s == 403 {
                break;
            }
            assert!(
                revoked_at.elapsed() < Duration::from_millis(100),
                "a token revoked on A is still accepted by {url} after 100 ms"
            );
        }
    }
    assert!(revoked_at.elapsed() < Duration::from_millis(100));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn policy_and_mount_changes_made_on_one_server_take_effect_on_the_others() {
    let c = Cluster::start(3).await;
    let http = reqwest::Client::new();
    let (a, b, cc) = (&c.servers[0].url, &c.servers[1].url, &c.servers[2].url);
    let (s, body) = call(
        &http,
        a,
        &c.root,
        "POST",
        "sys/mounts/kv",
        Some(json!({"type": "kv", "options": {"version": "1"}})),
    )
    .await;
    assert_eq!(s, 204, "{body}");
    let (s, body) = call(&http, a, &c.root, "PUT", "sys/policy/reader", Some(json!({"policy": "path \"kv/*\" { capabilities = [\"read\", \"create\", \"update\"] }"}))).await;
    assert_eq!(s, 204, "{body}");
    let (s, body) = call(
        &http,
        a,
        &c.root,
        "POST",
        "auth/token/create",
        Some(json!({"policies": ["reader"]})),
    )
    .await;
    assert_eq!(s, 200, "{body}");
    let tok = body["auth"]["client_token"].as_str().unwrap().to_owned();
    // The mount made on A serves on B; the policy written on A allows on C.
    let (s, body) = call(&http, b, &tok, "PUT", "kv/x", Some(json!({"v": "1"}))).await;
    assert_eq!(s, 204, "mount made on A serves on B: {body}");
    let (s, body) = call(&http, cc, &tok, "GET", "kv/x", None).await;
    assert_eq!(s, 200, "{body}");
    assert_eq!(body["data"]["v"], "1");
    // The policy narrowed on A: C refuses at once.
    let (s, body) = call(
        &http,
        a,
        &c.root,
        "PUT",
        "sys/policy/reader",
        Some(json!({"policy": "path \"kv/other\" { capabilities = [\"read\"] }"})),
    )
    .await;
    assert_eq!(s, 204, "{body}");
    eventually(
        "the narrowed policy is enforced on C",
        Duration::from_secs(2),
        || async { call(&http, cc, &tok, "GET", "kv/x", None).await.0 == 403 },
    )
    .await;
    // The mount removed on A: B no longer serves it.
    let (s, body) = call(&http, a, &c.root, "DELETE", "sys/mounts/kv", None).await;
    assert_eq!(s, 204, "{body}");
    eventually(
        "the unmounted path is gone on B",
        Duration::from_secs(2),
        || async {
            let (_, body) = call(&http, b, &c.root, "GET", "sys/mounts", None).await;
            body["data"].get("kv/").is_none()
        },
    )
    .await;
    // An audit device enabled on A is enabled on B (its requests are recorded).
    let log = c.dir.path().join("audit.log");
    let (s, body) = call(
        &http,
        a,
        &c.root,
        "PUT",
        "sys/audit/file",
        Some(json!({"type": "file", "options": {"file_path": log.display().to_string()}})),
    )
    .await;
    assert_eq!(s, 204, "{body}");
    eventually(
        "the audit device is enabled on B",
        Duration::from_secs(2),
        || async {
            let (_, body) = call(&http, b, &c.root, "GET", "sys/audit", None).await;
            body["data"].get("file/").is_some()
        },
    )
    .await;
    // Mounts enabled at the same time on different servers all land (the mount table
    // is changed atomically in storage, not overwritten by the last writer) ...
    let mut tasks = Vec::new();
    for i in 0..12 {
        let (http, url, root) = (http.clone(), c.servers[i % 3].url.clone(), c.root.clone());
        tasks.push(tokio::spawn(async move {
            let path = format!("sys/mounts/kv{i}");
            call(
                &http,
                &url,
                &root,
                "POST",
                &path,
                Some(json!({"type": "kv"})),
            )
            .await
        }));
    }
    for t in tasks {
        let (s, body) = t.await.unwrap();
        assert_eq!(s, 204, "{body}");
    }
    eventually(
        "every mount enabled at once is listed on C",
        Duration::from_secs(2),
        || async {
            let (_, body) = call(&http, cc, &c.root, "GET", "sys/mounts", None).await;
            (0..12).all(|i| body["data"].get(format!("kv{i}/")).is_some())
        },
    )
    .await;
    // ... and the same path enabled on two servers at once lands once.
    let (x, y) = tokio::join!(
        call(
            &http,
            a,
            &c.root,
            "POST",
            "sys/mounts/twice",
            Some(json!({"type": "kv"}))
        ),
        call(
            &http,
            b,
            &c.root,
            "POST",
            "sys/mounts/twice",
            Some(json!({"type": "kv"}))
        ),
    );
    let mut statuses = [x.0, y.0];
    statuses.sort();
    assert_eq!(statuses, [204, 400], "{x:?} {y:?}");
    let refused = if x.0 == 400 { &x.1 } else { &y.1 };
    assert!(refused.to_string().contains("already in use"), "{refused}");
    // Every server is active: sys/leader says so, with its own address.
    for srv in &c.servers {
        let (s, body) = call(&http, &srv.url, "", "GET", "sys/leader", None).await;
        assert_eq!(s, 200, "{body}");
        assert_eq!(body["ha_enabled"], true, "{body}");
        assert_eq!(body["is_self"], true, "{body}");
        assert!(
            !body["leader_address"]
                .as_str()
                .unwrap_or_default()
                .is_empty(),
            "{body}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_concurrent_requests_with_a_three_use_token_spread_over_three_servers_three_succeed()
{
    let c = Cluster::start(3).await;
    let http = reqwest::Client::new();
    let (s, body) = call(
        &http,
        &c.servers[0].url,
        &c.root,
        "POST",
        "auth/token/create",
        Some(json!({"policies": ["default"], "num_uses": 3})),
    )
    .await;
    assert_eq!(s, 200, "{body}");
    let tok = body["auth"]["client_token"].as_str().unwrap().to_owned();
    let mut tasks = Vec::new();
    for i in 0..50 {
        let (http, url, tok) = (http.clone(), c.servers[i % 3].url.clone(), tok.clone());
        tasks.push(tokio::spawn(async move {
            call(&http, &url, &tok, "GET", "auth/token/lookup-self", None)
                .await
                .0
        }));
    }
    let mut ok = 0;
    for t in tasks {
        match t.await.unwrap() {
            200 => ok += 1,
            403 => {}
            other => panic!("unexpected status {other}"),
        }
    }
    assert_eq!(
        ok, 3,
        "exactly num_uses requests succeed across the servers"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn servers_started_together_initialise_once_and_a_wrong_key_is_refused() {
    let c = Cluster::start(3).await;
    let http = reqwest::Client::new();
    // Every server lists the others, alive, in sys/ha-status; health says not standby.
    for s in &c.servers {
        let (st, body) = call(&http, &s.url, "", "GET", "sys/health", None).await;
        assert_eq!(st, 200, "{body}");
        assert_eq!(body["standby"], false, "{body}");
        assert_eq!(body["storage_reachable"], true, "{body}");
        assert_eq!(body["storage_type"], "postgresql", "{body}");
    }
    let (st, body) = call(
        &http,
        &c.servers[1].url,
        &c.root,
        "GET",
        "sys/ha-status",
        None,
    )
    .await;
    assert_eq!(st, 200, "{body}");
    let nodes = body["data"]["nodes"].as_array().unwrap();
    assert_eq!(nodes.len(), 3, "{body}");
    let mut addrs: Vec<String> = nodes
        .iter()
        .map(|n| {
            assert_eq!(n["alive"], true, "{n}");
            assert!(n["last_heartbeat_unix"].as_i64().unwrap() > 0, "{n}");
            assert!(!n["version"].as_str().unwrap().is_empty(), "{n}");
            format!("http://{}", n["api_address"].as_str().unwrap())
        })
        .collect();
    addrs.sort();
    let mut urls: Vec<String> = c.servers.iter().map(|s| s.url.clone()).collect();
    urls.sort();
    assert_eq!(addrs, urls, "ha-status lists every server by address");
    assert_eq!(
        nodes.iter().filter(|n| n["this_node"] == true).count(),
        1,
        "{body}"
    );
    let duty = body["data"]["duties"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["name"] == "lease_expiry")
        .unwrap();
    assert_eq!(duty["servers"].as_array().unwrap().len(), 3, "{duty}");
    let r = http
        .get(format!(
            "{}/v1/sys/metrics?format=prometheus",
            c.servers[2].url
        ))
        .header("X-Vault-Token", &c.root)
        .send()
        .await
        .unwrap();
    let text = r.text().await.unwrap();
    for m in [
        "leash_ha_heartbeats_total",
        "leash_ha_claimed_items_total",
        "leash_storage_duration_seconds_bucket",
    ] {
        assert!(text.contains(m), "metrics lack {m}");
    }
    // A server with another key refuses to start and registers nothing.
    let admin = pg_connect(&pg_db_conn(&c.db)).await;
    let servers_before: i64 = admin
        .query_one("SELECT COUNT(*) FROM leash_store_servers", &[])
        .await
        .unwrap()
        .get(0);
    let wrong = c.dir.path().join("wrong.hcl");
    let text = std::fs::read_to_string(c.config(0))
        .unwrap()
        .replace("leash.key", "other.key");
    std::fs::write(&wrong, text).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_leash"))
        .args(["server", "--config"])
        .arg(&wrong)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("does not match"), "{err}");
    assert!(
        !c.dir.path().join("other.key").exists(),
        "the key made for the refused start is not left behind"
    );
    let servers_after: i64 = admin
        .query_one("SELECT COUNT(*) FROM leash_store_servers", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(servers_before, servers_after, "a wrong key writes nothing");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pg_dump_of_the_leash_database_holds_no_token_password_or_secret() {
    let c = Cluster::start(2).await;
    let http = reqwest::Client::new();
    let (a, b) = (&c.servers[0].url, &c.servers[1].url);
    let (s, body) = call(
        &http,
        a,
        &c.root,
        "POST",
        "sys/mounts/kv",
        Some(json!({"type": "kv", "options": {"version": "2"}})),
    )
    .await;
    assert_eq!(s, 204, "{body}");
    let secret = format!("s3cret-{}", leash_types::random::base62(20));
    let (s, body) = call(
        &http,
        b,
        &c.root,
        "POST",
        "kv/data/app",
        Some(json!({"data": {"password": secret}})),
    )
    .await;
    assert_eq!(s, 200, "{body}");
    let (s, body) = call(
        &http,
        a,
        &c.root,
        "POST",
        "auth/token/create",
        Some(json!({"policies": ["default"]})),
    )
    .await;
    assert_eq!(s, 200, "{body}");
    let tok = body["auth"]["client_token"].as_str().unwrap().to_owned();
    let accessor = body["auth"]["accessor"].as_str().unwrap().to_owned();
    let cfg: tokio_postgres::Config = pg_admin_url().parse().unwrap();
    let hp = crate::database::pg_host_port();
    let (host, port) = hp.rsplit_once(':').unwrap();
    let dump = Command::new("pg_dump")
        .args([
            "-h",
            host,
            "-p",
            port,
            "-U",
            cfg.get_user().unwrap_or("postgres"),
            &c.db,
        ])
        .output()
        .unwrap();
    assert!(
        dump.status.success(),
        "{}",
        String::from_utf8_lossy(&dump.stderr)
    );
    let text = String::from_utf8_lossy(&dump.stdout);
    assert!(
        text.contains("leash_store_tokens"),
        "the dump holds the tables"
    );
    for (what, v) in [
        ("root token", c.root.as_str()),
        ("token", tok.as_str()),
        ("accessor", accessor.as_str()),
        ("secret", secret.as_str()),
    ] {
        assert!(!text.contains(v), "pg_dump shows a {what} in clear");
    }
}

/// How many leases the mass-expiry test issues: 10 000 as the issue asks, or
/// `LEASH_TEST_MASS_LEASES` (e.g. a quick local run).
fn mass_leases() -> usize {
    std::env::var("LEASH_TEST_MASS_LEASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000)
}

/// Sends `n` requests made by `req(i)` with `workers` concurrent clients, request `i`
/// to server `i % 3`; returns the answers in order, asserting each status is 200/204.
async fn spread<F>(c: &Cluster, n: usize, workers: usize, req: F) -> Vec<Value>
where
    F: Fn(usize) -> (&'static str, String, Option<Value>) + Send + Sync + 'static,
{
    let req = std::sync::Arc::new(req);
    let next = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let urls: Vec<String> = c.servers.iter().map(|s| s.url.clone()).collect();
    let mut tasks = Vec::new();
    for _ in 0..workers {
        let (req, next, urls, root) = (req.clone(), next.clone(), urls.clone(), c.root.clone());
        tasks.push(tokio::spawn(async move {
            let http = reqwest::Client::new();
            let mut out = Vec::new();
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if i >= n {
                    return out;
                }
                let (method, path, body) = req(i);
                let (s, b) = call(&http, &urls[i % urls.len()], &root, method, &path, body).await;
                assert!(s == 200 || s == 204, "{method} {path}: {s} {b}");
                out.push((i, b));
            }
        }));
    }
    let mut all = Vec::with_capacity(n);
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    all.sort_by_key(|(i, _)| *i);
    all.into_iter().map(|(_, b)| b).collect()
}

/// The sum of a counter over the servers' `/v1/sys/metrics` (Prometheus text), per server.
async fn metric_per_server(c: &Cluster, name: &str) -> Vec<f64> {
    let http = reqwest::Client::new();
    let mut out = Vec::new();
    for s in &c.servers {
        let text = http
            .get(format!("{}/v1/sys/metrics?format=prometheus", s.url))
            .header("X-Vault-Token", &c.root)
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        out.push(
            text.lines()
                .filter(|l| l.starts_with(name))
                .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
                .sum(),
        );
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leases_expiring_together_are_each_revoked_once_across_three_servers() {
    let n = mass_leases();
    let c = Cluster::start(3).await;
    let http = reqwest::Client::new();
    let a = &c.servers[0].url;
    let log = c.dir.path().join("audit.log");
    let (s, body) = call(
        &http,
        a,
        &c.root,
        "PUT",
        "sys/audit/file",
        Some(json!({"type": "file", "options": {"file_path": log.display().to_string()}})),
    )
    .await;
    assert_eq!(s, 204, "{body}");
    let pg = PgScratch::new().await;
    let (s, body) = call(
        &http,
        a,
        &c.root,
        "POST",
        "sys/mounts/database",
        Some(json!({"type": "database"})),
    )
    .await;
    assert_eq!(s, 204, "{body}");
    // PostgreSQL hashes the passwords itself (`password`): issuing 10 000 credentials
    // then costs the test little besides the CREATE ROLE statements.
    let (s, body) = call(
        &http,
        a,
        &c.root,
        "POST",
        "database/config/pg",
        Some(json!({
            "plugin_name": "postgresql-database-plugin",
            "connection_url": pg.url(),
            "username": "postgres", "password": "unused", "allowed_roles": "*",
            "password_authentication": "password",
        })),
    )
    .await;
    assert_eq!(s, 204, "{body}");
    let (s, body) = call(
        &http,
        a,
        &c.root,
        "POST",
        &format!("database/roles/{}", pg.role),
        Some(json!({
            "db_name": "pg",
            "creation_statements": ["CREATE ROLE \"{{name}}\" WITH LOGIN PASSWORD '{{password}}';"],
            "renew_statements": [],
            "revocation_statements": ["DROP ROLE IF EXISTS \"{{name}}\";"],
            "default_ttl": "10m", "max_ttl": "1h",
        })),
    )
    .await;
    assert!(s == 200 || s == 204, "{body}");
    // Issued through all three servers.
    let started = Instant::now();
    let role = pg.role.clone();
    let ids: Vec<String> = spread(&c, n, 12, move |_| {
        ("GET", format!("database/creds/{role}"), None)
    })
    .await
    .iter()
    .map(|b| b["lease_id"].as_str().unwrap().to_owned())
    .collect();
    assert_eq!(ids.len(), n);
    let issuing = started.elapsed();
    eprintln!("issued {n} database credentials in {issuing:?}");
    async fn roles(pg: &PgScratch) -> i64 {
        pg.admin
            .query_one(
                "SELECT COUNT(*) FROM pg_roles WHERE rolname LIKE '%' || $1 || '%'",
                &[&pg.role],
            )
            .await
            .unwrap()
            .get::<_, i64>(0)
    }
    assert_eq!(roles(&pg).await, n as i64, "one role per credential");
    // Renewed (through all three servers) so that every lease ends in the same second:
    // each renewal asks for what is left until that second.
    let now = || u64::try_from(leash_types::Clock::unix(&leash_types::SystemClock)).unwrap();
    let at = now() + 5 + issuing.as_secs() / 2;
    let renew_ids = std::sync::Arc::new(ids.clone());
    spread(&c, n, 12, move |i| {
        let left = at.saturating_sub(now()).max(1);
        (
            "PUT",
            "sys/leases/renew".to_owned(),
            Some(json!({"lease_id": renew_ids[i], "increment": left})),
        )
    })
    .await;
    let claimed_before = metric_per_server(&c, "leash_ha_claimed_items_total").await;
    eprintln!(
        "renewed {n} leases to end at {at}; {}s left",
        at.saturating_sub(now())
    );
    assert_eq!(
        roles(&pg).await,
        n as i64,
        "nothing ended before its second"
    );
    eventually(
        "every lease expired and its role dropped",
        Duration::from_secs(180),
        || async { roles(&pg).await == 0 },
    )
    .await;
    eprintln!(
        "all {n} roles dropped {}s after the expiry second",
        now().saturating_sub(at)
    );
    // One lifecycle end per lease, in the union of what the servers wrote.
    eventually("every expiry audited", Duration::from_secs(30), || async {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        text.lines()
            .filter(|l| l.contains("agent.credential.expired"))
            .count()
            >= n
    })
    .await;
    let text = std::fs::read_to_string(&log).unwrap();
    let mut ends = std::collections::HashMap::<String, usize>::new();
    for l in text.lines() {
        let v: Value = serde_json::from_str(l).unwrap();
        let kind = v["event"].as_str().unwrap_or_default();
        if kind == "agent.credential.expired" || kind == "agent.credential.revoked" {
            let id = v["lease_id"].as_str().unwrap_or_default().to_owned();
            *ends.entry(id).or_default() += 1;
        }
    }
    for id in &ids {
        assert_eq!(
            ends.get(id).copied().unwrap_or(0),
            1,
            "lease {id} ended exactly once"
        );
    }
    assert_eq!(ends.len(), n, "no other lease ended");
    // The work was split: at least two servers claimed expired leases (a server claims
    // up to 2 048 at a time, so a smaller run may be taken by one).
    let after = metric_per_server(&c, "leash_ha_claimed_items_total").await;
    let shares: Vec<f64> = after
        .iter()
        .zip(&claimed_before)
        .map(|(a, b)| a - b)
        .collect();
    eprintln!("leases claimed per server: {shares:?}");
    if n > 2 * 2_048 {
        assert!(
            shares.iter().filter(|x| **x > 0.0).count() >= 2,
            "expiry was shared between the servers: {shares:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_killed_while_issuing_leaves_no_orphan_role_its_pending_issuances_are_revoked_by_a_survivor()
 {
    let c = Cluster::start(2).await;
    let http = reqwest::Client::new();
    let (a, b) = (c.servers[0].url.clone(), c.servers[1].url.clone());
    let pg = PgScratch::new().await;
    let (s, body) = call(
        &http,
        &a,
        &c.root,
        "POST",
        "sys/mounts/database",
        Some(json!({"type": "database"})),
    )
    .await;
    assert_eq!(s, 204, "{body}");
    let (s, body) = call(
        &http,
        &a,
        &c.root,
        "POST",
        "database/config/pg",
        Some(json!({
            "plugin_name": "postgresql-database-plugin",
            "connection_url": pg.url(),
            "username": "postgres", "password": "unused", "allowed_roles": "*",
        })),
    )
    .await;
    assert_eq!(s, 204, "{body}");
    let (s, body) = call(&http, &a, &c.root, "POST", &format!("database/roles/{}", pg.role), Some(json!({
        "db_name": "pg",
        "creation_statements": ["CREATE ROLE \"{{name}}\" WITH LOGIN PASSWORD '{{password}}' VALID UNTIL '{{expiration}}';"],
        "revocation_statements": ["DROP ROLE IF EXISTS \"{{name}}\";"],
        "default_ttl": "1h", "max_ttl": "1h",
    }))).await;
    assert!(s == 200 || s == 204, "{body}");
    // Load on both servers; B's clients must see no error when A dies.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut on_b = Vec::new();
    for _ in 0..2 {
        let (http, url, root, role, stop) = (
            http.clone(),
            b.clone(),
            c.root.clone(),
            pg.role.clone(),
            stop.clone(),
        );
        on_b.push(tokio::spawn(async move {
            let mut errors = 0;
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                let (s, _) = call(
                    &http,
                    &url,
                    &root,
                    "GET",
                    &format!("database/creds/{role}"),
                    None,
                )
                .await;
                if s != 200 {
                    errors += 1;
                }
            }
            errors
        }));
    }
    let mut on_a = Vec::new();
    for _ in 0..3 {
        let (http, url, root, role) = (http.clone(), a.clone(), c.root.clone(), pg.role.clone());
        on_a.push(tokio::spawn(async move {
            loop {
                let r = http
                    .get(format!("{url}/v1/database/creds/{role}"))
                    .header("X-Vault-Token", &root)
                    .send()
                    .await;
                if r.is_err() {
                    return;
                }
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(700)).await;
    let mut c = c;
    c.servers[0].child.kill().unwrap(); // SIGKILL
    c.servers[0].child.wait().unwrap();
    for t in on_a {
        t.await.unwrap();
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    for t in on_b {
        assert_eq!(t.await.unwrap(), 0, "the survivor's clients saw no error");
    }
    // Every role in the target belongs to a lease leash knows: nothing pending remains
    // once the survivor recovered the dead server's intents (within seconds).
    let admin = pg_connect(&pg_db_conn(&c.db)).await;
    eventually(
        "the dead server's pending issuances are recovered",
        Duration::from_secs(20),
        || async {
            admin
                .query_one(
                    "SELECT COUNT(*) FROM leash_store_leases WHERE state = 0",
                    &[],
                )
                .await
                .unwrap()
                .get::<_, i64>(0)
                == 0
        },
    )
    .await;
    let b = &c.servers[1].url;
    let (s, body) = call(
        &http,
        b,
        &c.root,
        "LIST",
        &format!("sys/leases/lookup/database/creds/{}/", pg.role),
        None,
    )
    .await;
    assert_eq!(s, 200, "{body}");
    let known: std::collections::HashSet<String> = body["data"]["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k.as_str().unwrap().to_owned())
        .collect();
    assert!(!known.is_empty());
    // Revoke everything: then no role may remain (no orphan).
    let (s, body) = call(
        &http,
        b,
        &c.root,
        "PUT",
        "sys/leases/revoke-prefix/database/creds",
        None,
    )
    .await;
    assert!(s == 204 || s == 200, "{body}");
    eventually(
        "no role remains after every lease is revoked",
        Duration::from_secs(30),
        || async {
            pg.admin
                .query_one(
                    "SELECT COUNT(*) FROM pg_roles WHERE rolname LIKE '%' || $1 || '%'",
                    &[&pg.role],
                )
                .await
                .unwrap()
                .get::<_, i64>(0)
                == 0
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgresql_restart_fails_closed_with_503_then_every_server_reconnects_and_nothing_acknowledged_is_lost()
 {
    let Some(bin) = crate::pg_outage::pg_bindir() else {
        assert!(
            std::env::var_os("CI").is_none(),
            "PostgreSQL's server binaries (/usr/lib/postgresql/*/bin/initdb) are needed under CI"
        );
        eprintln!("skipped: no /usr/lib/postgresql/*/bin/initdb");
        return;
    };
    // A private PostgreSQL: the shared one is never stopped.
    let pg = tokio::task::block_in_place(|| crate::pg_outage::PrivatePg::init(bin));
    assert!(
        tokio::task::block_in_place(|| pg.start()),
        "private cluster start"
    );
    let c = Cluster::start_on(2, &pg.url()).await;
    let http = reqwest::Client::new();
    let (a, b) = (c.servers[0].url.clone(), c.servers[1].url.clone());
    let (s, body) = call(
        &http,
        &a,
        &c.root,
        "POST",
        "sys/mounts/kv",
        Some(json!({"type": "kv", "options": {"version": "1"}})),
    )
    .await;
    assert_eq!(s, 204, "{body}");
    let (s, body) = call(
        &http,
        &a,
        &c.root,
        "PUT",
        "kv/before",
        Some(json!({"v": "kept"})),
    )
    .await;
    assert_eq!(s, 204, "{body}");
    let (s, body) = call(
        &http,
        &b,
        &c.root,
        "POST",
        "auth/token/create",
        Some(json!({"policies": ["default"]})),
    )
    .await;
    assert_eq!(s, 200, "{body}");
    let tok = body["auth"]["client_token"].as_str().unwrap().to_owned();

    assert!(
        tokio::task::block_in_place(|| pg.stop()),
        "private cluster stop"
    );
    for url in [&a, &b] {
        let (s, body) = call(
            &http,
            url,
            &c.root,
            "PUT",
            "kv/during",
            Some(json!({"v": "x"})),
        )
        .await;
        assert_eq!(s, 503, "a write during the outage fails closed: {body}");
        assert!(
            crate::error(&body).contains("storage is unavailable"),
            "{body}"
        );
        let (s, body) = call(
            &http,
            url,
            &c.root,
            "POST",
            "auth/token/create",
            Some(json!({"policies": ["default"]})),
        )
        .await;
        assert_eq!(s, 503, "no token is minted during the outage: {body}");
        let r = http
            .get(format!("{url}/v1/sys/health"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 503, "health tells the load balancer");
    }
    // Stopped for 10 s, as an operator's restart or a failover might take.
    tokio::time::sleep(Duration::from_secs(10)).await;
    assert!(
        tokio::task::block_in_place(|| pg.start()),
        "private cluster restart"
    );

    for url in [&a, &b] {
        eventually(
            "the server reconnects by itself",
            Duration::from_secs(30),
            || async { call(&http, url, &c.root, "GET", "kv/before", None).await.0 == 200 },
        )
        .await;
        let (s, body) = call(&http, url, &c.root, "GET", "kv/before", None).await;
        assert_eq!((s, &body["data"]["v"]), (200, &json!("kept")), "{body}");
        let (s, _) = call(&http, url, &c.root, "GET", "kv/during", None).await;
        assert_eq!(s, 404, "the refused write left nothing");
        let (s, body) = call(&http, url, &tok, "GET", "auth/token/lookup-self", None).await;
        assert_eq!(
            s, 200,
            "the token made before the outage still works: {body}"
        );
    }
    // Revocation is seen across servers again (the notification channel is back).
    let (s, body) = call(
        &http,
        &a,
        &c.root,
        "POST",
        "auth/token/revoke",
        Some(json!({"token": tok})),
    )
    .await;
    assert_eq!(s, 204, "{body}");
    eventually(
        "revocation seen on B after the restart",
        Duration::from_secs(2),
        || async {
            call(&http, &b, &tok, "GET", "auth/token/lookup-self", None)
                .await
                .0
                == 403
        },
    )
    .await;
    drop(c);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_single_use_jit_grant_is_spent_once_across_three_servers() {
    let c = Cluster::start(3).await;
    let http = reqwest::Client::new();
    let a = c.servers[0].url.clone();
    let (s, body) = call(
        &http,
        &a,
        &c.root,
        "POST",
        "sys/mounts/kv",
        Some(json!({"type": "kv", "options": {"version": "1"}})),
    )
    .await;
    assert_eq!(s, 204, "{body}");
    let (s, body) = call(
        &http,
        &a,
        &c.root,
        "PUT",
        "kv/prod",
        Some(json!({"v": "1"})),
    )
    .await;
    assert_eq!(s, 204, "{body}");
    let policy = r#"
path "kv/prod" {
  capabilities = ["read"]
  control_group = {
    ttl = "1h"
    factor "dba" {
      identity {
        group_names = ["dba"]
        approvals   = 1
      }
    }
  }
}
"#;
    let (s, body) = call(
        &http,
        &a,
        &c.root,
        "PUT",
        "sys/policy/agent",
        Some(json!({"policy": policy})),
    )
    .await;
    assert_eq!(s, 204, "{body}");
    // A rule approves one-use reads at once (the grant is made on A).
    let (s, body) = call(
        &http,
        &a,
        &c.root,
        "POST",
        "sys/control-group/rules/one-read",
        Some(json!({
            "path": "kv/*", "operations": ["read"], "max_duration_minutes": 15, "uses": 1,
            "description": "one read",
        })),
    )
    .await;
    assert_eq!(s, 204, "{body}");
    let (s, body) = call(
        &http,
        &a,
        &c.root,
        "POST",
        "auth/token/create",
        Some(json!({"policies": ["agent"], "display_name": "agent-7"})),
    )
    .await;
    assert_eq!(s, 200, "{body}");
    let agent = body["auth"]["client_token"].as_str().unwrap().to_owned();
    let (s, body) = call(
        &http,
        &a,
        &agent,
        "POST",
        "sys/control-group/request",
        Some(json!({
            "agent_id": "agent-7", "operation": "read", "target_resource": "kv/prod",
            "justification": "one read across the cluster", "requested_duration_minutes": 10,
            "timestamp": "2026-11-29T10:00:00Z",
        })),
    )
    .await;
    assert_eq!(s, 200, "{body}");
    assert_eq!(body["approved"], true, "{body}");
    // 30 concurrent reads spread over the three servers: the grant is spent once.
    let mut tasks = Vec::new();
    for i in 0..30 {
        let (http, url, tok) = (http.clone(), c.servers[i % 3].url.clone(), agent.clone());
        tasks.push(tokio::spawn(async move {
            call(&http, &url, &tok, "GET", "kv/prod", None).await.0
        }));
    }
    let mut ok = 0;
    for t in tasks {
        match t.await.unwrap() {
            200 => ok += 1,
            403 => {}
            other => panic!("unexpected status {other}"),
        }
    }
    assert_eq!(
        ok, 1,
        "a single-use grant is spent exactly once across the servers"
    );
}

/// A database in the shared PostgreSQL, dropped when the test ends.
struct ScratchDb(String);

impl ScratchDb {
    async fn new() -> ScratchDb {
        let name = format!(
            "leash_mig_{}",
            leash_types::random::base62(8).to_ascii_lowercase()
        );
        let admin = pg_connect(&pg_admin_url()).await;
        admin
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .await
            .unwrap();
        ScratchDb(name)
    }
}

impl Drop for ScratchDb {
    fn drop(&mut self) {
        let db = self.0.clone();
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async {
                let admin = pg_connect(&pg_admin_url()).await;
                let _ = admin
                    .batch_execute(&format!("DROP DATABASE IF EXISTS {db} WITH (FORCE)"))
                    .await;
            });
        })
        .join();
    }
}

fn migrate(cfg: &Path, force: bool) -> std::process::Output {
    let mut c = Command::new(env!("CARGO_BIN_EXE_leash"));
    c.args(["operator", "migrate", "-config"]).arg(cfg);
    if force {
        c.arg("--force");
    }
    c.output().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operator_migrate_copies_sqlite_to_postgresql_and_back_and_old_tokens_keep_working() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let key = d.join("leash.key");
    let listener = "listener \"tcp\" {\n  address = \"127.0.0.1:0\"\n  tls_disable = true\n}\n";
    let seal = format!("seal \"file\" {{ path = \"{}\" }}\n", key.display());
    let sqlite_cfg = |name: &str| {
        let p = d.join(format!("{name}.hcl"));
        std::fs::write(
            &p,
            format!(
                "storage \"sqlite\" {{ path = \"{}\" }}\n{listener}{seal}",
                d.join(name).display()
            ),
        )
        .unwrap();
        p
    };
    let http = reqwest::Client::new();
    // A single SQLite server with a token, a mount and a secret.
    let (srv, root) = start(&sqlite_cfg("data"));
    let root = root.expect("root token on first start");
    let (s, body) = call(
        &http,
        &srv.url,
        &root,
        "POST",
        "sys/mounts/kv",
        Some(json!({"type": "kv", "options": {"version": "1"}})),
    )
    .await;
    assert_eq!(s, 204, "{body}");
    let (s, body) = call(
        &http,
        &srv.url,
        &root,
        "PUT",
        "kv/app",
        Some(json!({"v": "from sqlite"})),
    )
    .await;
    assert_eq!(s, 204, "{body}");
    let (s, body) = call(
        &http,
        &srv.url,
        &root,
        "POST",
        "auth/token/create",
        Some(json!({"policies": ["default"]})),
    )
    .await;
    assert_eq!(s, 200, "{body}");
    let tok = body["auth"]["client_token"].as_str().unwrap().to_owned();
    drop(srv);

    // SQLite → PostgreSQL.
    let db = ScratchDb::new().await;
    let pg_block = format!(
        "\"postgresql\" {{ connection_url = \"{}\" }}\n",
        pg_db_conn(&db.0)
    );
    let to_pg = d.join("to-pg.hcl");
    std::fs::write(
        &to_pg,
        format!(
            "storage_source \"sqlite\" {{ path = \"{}\" }}\nstorage_destination {pg_block}{seal}",
            d.join("data").display()
        ),
    )
    .unwrap();
    let out = migrate(&to_pg, false);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(
        err.contains("100%") && err.contains("copied"),
        "progress on stderr: {err}"
    );
    let out = migrate(&to_pg, false);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "a non-empty destination is refused");
    assert!(
        err.contains("already holds leash data") && err.contains("--force"),
        "{err}"
    );
    assert!(
        migrate(&to_pg, true).status.success(),
        "--force copies over it"
    );

    let pg_cfg = d.join("pg.hcl");
    std::fs::write(&pg_cfg, format!("storage {pg_block}{listener}{seal}")).unwrap();
    let (srv, root2) = start(&pg_cfg);
    assert!(
        root2.is_none(),
        "the migrated store is initialised: no new root token"
    );
    for t in [&root, &tok] {
        let (s, body) = call(&http, &srv.url, t, "GET", "auth/token/lookup-self", None).await;
        assert_eq!(s, 200, "an old token works on PostgreSQL: {body}");
    }
    let (s, body) = call(&http, &srv.url, &root, "GET", "kv/app", None).await;
    assert_eq!(
        (s, &body["data"]["v"]),
        (200, &json!("from sqlite")),
        "{body}"
    );
    let (s, body) = call(
        &http,
        &srv.url,
        &root,
        "PUT",
        "kv/app",
        Some(json!({"v": "from postgresql"})),
    )
    .await;
    assert_eq!(s, 204, "{body}");
    drop(srv);

    // PostgreSQL → a new SQLite data directory.
    let back = d.join("back.hcl");
    std::fs::write(
        &back,
        format!(
            "storage_source {pg_block}storage_destination \"sqlite\" {{ path = \"{}\" }}\n{seal}",
            d.join("data2").display()
        ),
    )
    .unwrap();
    let out = migrate(&back, false);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (srv, root3) = start(&sqlite_cfg("data2"));
    assert!(root3.is_none());
    let (s, body) = call(&http, &srv.url, &tok, "GET", "auth/token/lookup-self", None).await;
    assert_eq!(s, 200, "the old token works after the round trip: {body}");
    let (s, body) = call(&http, &srv.url, &root, "GET", "kv/app", None).await;
    assert_eq!(
        (s, &body["data"]["v"]),
        (200, &json!("from postgresql")),
        "{body}"
    );
}
