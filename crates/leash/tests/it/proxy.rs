//! `leash proxy` against a real server, a local HTTPS upstream made by the test (a test
//! CA, recording what it receives) and the real PostgreSQL: the agent's requests carry
//! no credential and the upstream receives the right one; the agent's environment and
//! files hold none; disallowed requests are refused before anything is forwarded; an
//! echoing upstream is redacted; rotation under load fails no request; psql works
//! through the PostgreSQL proxy until the lease is revoked.

use std::path::PathBuf;
use std::time::Duration;

use serde_json::{Value, json};

use crate::agent::support::{Fixture, free_port, sigterm, wait_exit};
use crate::auth_jwt::support::{FakeServer, Reply, Seen, pki};
use crate::eventually;

const LONG: Duration = Duration::from_secs(90);

/// A proxy configuration: the fixture's login, `extra` at the top level and the
/// `proxy` blocks.
fn proxy_config(fx: &Fixture, proxy: &str, extra: &str) -> PathBuf {
    let d = fx.dir.path();
    let text = format!(
        r#"
vault {{
  address = "{address}"
  retry {{ backoff = "1s"  max_backoff = "2s" }}
}}
auto_auth {{
  {method}
}}
template_config {{ rotation_grace_period = "2s" }}
{extra}
{proxy}
"#,
        address = fx.srv.url(),
        method = fx.method.replace("{d}", &d.display().to_string()),
    );
    let p = d.join(format!("proxy-{}.hcl", leash_types::random::base62(6)));
    std::fs::write(&p, text).unwrap();
    p
}

fn write_ca(fx: &Fixture) -> PathBuf {
    let p = fx.dir.path().join("upstream-ca.pem");
    std::fs::write(&p, &pki().ca_pem).unwrap();
    p
}

async fn kv_token(fx: &Fixture, token: &str) {
    let (s, b) = fx
        .srv
        .root(
            "POST",
            "secret/data/agents/github",
            Some(json!({"data": {"token": token}})),
        )
        .await;
    assert_eq!(s, 200, "{b}");
}

/// The upstream: `/echo` answers with the Authorization header it received (an
/// upstream that echoes the credential back); everything else `{"ok": true}`.
fn echoing(seen: &Seen) -> Reply {
    if seen.path.starts_with("/api/echo") {
        Reply::Json(
            200,
            json!({"you_sent": seen.header("authorization").unwrap_or(""), "n": 1}),
        )
    } else {
        Reply::Json(200, json!({"ok": true, "path": seen.path}))
    }
}

fn children_of(pid: u32) -> Vec<u32> {
    let mut out = Vec::new();
    for t in std::fs::read_dir(format!("/proc/{pid}/task")).unwrap() {
        let p = t.unwrap().path().join("children");
        if let Ok(s) = std::fs::read_to_string(p) {
            out.extend(s.split_whitespace().filter_map(|x| x.parse::<u32>().ok()));
        }
    }
    out
}

fn used_events(log: &str) -> Vec<Value> {
    log.lines()
        .filter_map(|l| l.split_once("leash_proxy::events: ").map(|(_, j)| j))
        .filter_map(|j| serde_json::from_str::<Value>(j).ok())
        .filter(|v| v["event"] == "agent.credential.used")
        .collect()
}

/// The agent (the exec child) calls the proxy with no credential; the HTTPS upstream
/// receives the right one; the child's environment and the rendered file hold none; a
/// credential header the agent sends is not forwarded; disallowed methods and paths are
/// 403 with nothing forwarded; an unknown upstream is 404 naming the known ones; an
/// echoing upstream is redacted; the traceparent reaches the upstream and the
/// `agent.credential.used` event; /metrics counts per upstream and status.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_upstream_gets_the_credential_the_agent_never_holds() {
    let fx = Fixture::new("30s", "1h").await;
    let token = format!("ghp_{}", leash_types::random::base62(30));
    kv_token(&fx, &token).await;
    let upstream = FakeServer::start(Some(&pki().server), echoing).await;
    let ca = write_ca(&fx);
    let port = free_port();
    let rendered = fx.dir.path().join("agent-env.txt");
    let cfg = proxy_config(
        &fx,
        &format!(
            r#"proxy "http" {{
  listen = "127.0.0.1:{port}"
  upstream "github" {{
    url     = "{url}/api"
    ca_cert = "{ca}"
    secret  = "secret/data/agents/github"
    header "Authorization" {{ value = "Bearer {{{{ .Data.data.token }}}}" }}
    allow {{ methods = ["GET"], paths = ["/repos/acme/*", "/echo"] }}
  }}
}}"#,
            url = upstream.url(),
            ca = ca.display(),
        ),
        &format!(
            r#"template {{
  destination = "{dest}"
  contents    = "GITHUB_API_URL=http://127.0.0.1:{port}/github\n"
}}
env_template "GITHUB_API_URL" {{ contents = "http://127.0.0.1:{port}/github" }}
exec {{ command = ["sleep", "600"] }}"#,
            dest = rendered.display()
        ),
    );
    let mut proxy = fx.spawn(&["proxy", "--config", cfg.to_str().unwrap()]);
    let base = format!("http://127.0.0.1:{port}");
    let http = reqwest::Client::new();
    eventually("the proxy to be ready", LONG, || async {
        matches!(http.get(format!("{base}/healthz")).send().await, Ok(r) if r.status() == 200)
    })
    .await;

    // The agent's request carries no credential; the upstream gets the right one.
    let trace = "4bf92f3577b34da6a3ce929d0e0e4736";
    let r = http
        .get(format!("{base}/github/repos/acme/app/issues?state=open"))
        .header("traceparent", format!("00-{trace}-00f067aa0ba902b7-01"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["path"], "/api/repos/acme/app/issues?state=open");
    let seen = upstream.requests();
    assert_eq!(seen.len(), 1);
    assert_eq!(
        seen[0].header("authorization"),
        Some(format!("Bearer {token}").as_str())
    );
    assert_eq!(
        seen[0].header("traceparent"),
        Some(format!("00-{trace}-00f067aa0ba902b7-01").as_str())
    );

    // The exec child's environment and the rendered file hold no credential.
    let pid = proxy.id().unwrap();
    let kids = children_of(pid);
    let child = *kids.first().expect("the exec child");
    let environ = std::fs::read(format!("/proc/{child}/environ")).unwrap();
    let environ = String::from_utf8_lossy(&environ);
    assert!(
        environ.contains(&format!("GITHUB_API_URL={base}/github")),
        "{environ}"
    );
    assert!(!environ.contains(&token));
    let file = std::fs::read_to_string(&rendered).unwrap();
    assert!(!file.contains(&token) && file.contains("/github"), "{file}");

    // A credential header the agent sends is not forwarded.
    let r = http
        .get(format!("{base}/github/repos/acme/app"))
        .header("Authorization", "Bearer stolen-or-stale")
        .header("X-Api-Key", "agent-key")
        .header("Cookie", "session=1")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let last = upstream.requests().pop().unwrap();
    assert_eq!(
        last.header("authorization"),
        Some(format!("Bearer {token}").as_str())
    );
    assert!(last.header("x-api-key").is_none() && last.header("cookie").is_none());

    // Disallowed method, disallowed path, dot segments: 403/400, nothing forwarded.
    let before = upstream.requests().len();
    for (method, path, status) in [
        ("POST", "/github/repos/acme/app/issues", 403),
        ("DELETE", "/github/repos/acme/app", 403),
        ("GET", "/github/orgs/acme", 403),
        ("GET", "/github/repos/other/app", 403),
        ("GET", "/github/repos/acme/../../orgs/acme", 400),
        ("GET", "/github/repos/acme/%2e%2e/%2e%2e/orgs", 400),
    ] {
        // Sent byte for byte: an HTTP client would normalise the dot segments away.
        let addr = format!("127.0.0.1:{port}").parse().unwrap();
        let r = crate::raw(addr, method, path, &[], b"{}").await;
        assert_eq!(r.status, status, "{method} {path}");
        let v: Value = serde_json::from_slice(&r.body).unwrap();
        assert!(v["error"].as_str().unwrap().len() > 5, "{v}");
        if status == 403 {
            assert!(v["error"].as_str().unwrap().contains("not allowed"), "{v}");
        }
    }
    assert_eq!(
        upstream.requests().len(),
        before,
        "a refused request was forwarded"
    );

    // Unknown upstream: 404 naming the known ones.
    let r = http.get(format!("{base}/gitlab/x")).send().await.unwrap();
    assert_eq!(r.status(), 404);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["upstreams"], json!(["github"]));
    assert!(v["error"].as_str().unwrap().contains("github"), "{v}");

    // An upstream that echoes the credential: redacted.
    let r = http
        .get(format!("{base}/github/echo"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let text = r.text().await.unwrap();
    assert!(!text.contains(&token), "{text}");
    let v: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(v["you_sent"], "[REDACTED]", "{text}");

    // Metrics and the use events.
    let m = http
        .get(format!("{base}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        m.contains("leash_proxy_requests_total{upstream=\"github\",status=\"200\"} 3"),
        "{m}"
    );
    assert!(
        m.contains("leash_proxy_requests_total{upstream=\"github\",status=\"403\"} 4"),
        "{m}"
    );
    assert!(
        m.contains("leash_proxy_request_duration_seconds_count{upstream=\"github\"} 3"),
        "{m}"
    );
    assert!(
        m.contains("leash_proxy_redactions_total{upstream=\"github\"} 1"),
        "{m}"
    );
    // The event lines are written by the proxy's event thread, within milliseconds.
    eventually("the three use events", Duration::from_secs(10), || async {
        used_events(&fx.log()).len() >= 3
    })
    .await;
    let log = fx.log();
    assert!(!log.contains(&token), "the token reached the log");
    let evs = used_events(&log);
    assert_eq!(evs.len(), 3, "{log}");
    let first = &evs[0];
    assert_eq!(first["trace_id"], trace);
    assert_eq!(first["action_context"]["upstream"], "github");
    assert_eq!(first["action_context"]["method"], "GET");
    assert_eq!(first["action_context"]["path"], "/repos/acme/app/issues");
    assert_eq!(first["action_context"]["status"], 200);

    // SIGTERM stops the child (143: killed by the forwarded SIGTERM) and revokes.
    sigterm(&proxy);
    let code = wait_exit(&mut proxy).await;
    assert!(
        code == Some(143) || code == Some(0),
        "{code:?} {}",
        fx.log()
    );
    assert!(
        !std::path::Path::new(&format!("/proc/{child}/environ")).exists()
            || children_of(pid).is_empty()
    );
    fx.cleanup().await;
}

/// Rotation under load: 200 requests a second through the proxy while the leased
/// credential rotates three times (max TTL of a few seconds): no request fails, the
/// upstream sees every new credential, and every request carries a whole one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotation_under_load_fails_no_request() {
    let fx = Fixture::new("2s", "4s").await;
    let upstream = FakeServer::start(None, |_| Reply::Json(200, json!({"ok": true}))).await;
    let port = free_port();
    let cfg = proxy_config(
        &fx,
        &format!(
            r#"proxy "http" {{
  listen = "127.0.0.1:{port}"
  upstream "internal" {{
    url    = "{url}"
    secret = "database/creds/{role}"
    header "X-Api-Key" {{ value = "{{{{ .Data.password }}}}" }}
    header "X-User"    {{ value = "{{{{ .Data.username }}}}" }}
  }}
}}"#,
            url = upstream.url(),
            role = fx.pg.role,
        ),
        "",
    );
    let mut proxy = fx.spawn(&["proxy", "--config", cfg.to_str().unwrap()]);
    let base = format!("http://127.0.0.1:{port}");
    let http = reqwest::Client::new();
    eventually("the proxy to be ready", LONG, || async {
        matches!(http.get(format!("{base}/healthz")).send().await, Ok(r) if r.status() == 200)
    })
    .await;
    let users = || {
        let mut u: Vec<String> = upstream
            .requests()
            .iter()
            .filter_map(|s| s.header("x-user").map(str::to_owned))
            .collect();
        u.sort();
        u.dedup();
        u
    };
    // 200 requests a second (one every 5 ms, each on its own task) until the upstream
    // has seen four credentials (three rotations), for at most 60 s.
    let started = std::time::Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    let mut tick = tokio::time::interval(Duration::from_millis(5));
    let mut sent = 0u32;
    while users().len() < 4 && started.elapsed() < Duration::from_secs(60) {
        tick.tick().await;
        let (http, url) = (http.clone(), format!("{base}/internal/work/{sent}"));
        tasks.spawn(async move {
            match http.get(url).send().await {
                Ok(r) => r.status().as_u16(),
                Err(_) => 0,
            }
        });
        sent += 1;
    }
    let mut failed = 0;
    while let Some(r) = tasks.join_next().await {
        if r.unwrap() != 200 {
            failed += 1;
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    assert!(
        users().len() >= 4,
        "only {} credentials seen in {elapsed:.0}s",
        users().len()
    );
    assert_eq!(failed, 0, "{failed} of {sent} requests failed");
    assert!(
        f64::from(sent) / elapsed > 150.0,
        "the load generator fell behind: {sent} in {elapsed:.1}s"
    );
    // Every request carried a user and password (never a missing or partial header).
    for s in upstream.requests() {
        let (u, p) = (s.header("x-user").unwrap(), s.header("x-api-key").unwrap());
        assert!(u.starts_with("v-") && p.len() >= 16, "{u}");
    }
    sigterm(&proxy);
    assert_eq!(wait_exit(&mut proxy).await, Some(0), "{}", fx.log());
    fx.cleanup().await;
}

/// psql through the PostgreSQL proxy with any user name and no password runs SELECT on
/// the seed's table (the proxy logs in with the leased credential); once the lease is
/// revoked the open session is gone and a new connection is refused with a message
/// saying why.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn psql_through_the_postgres_proxy_until_the_lease_is_revoked() {
    pg_proxy_case("tls = \"disable\"", &crate::database::pg_host_port()).await;
}

/// The same over TLS to PostgreSQL (the machine's server presents its self-signed
/// `localhost` certificate, given as `ca_cert`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_proxy_speaks_tls_to_the_server() {
    let cert = "/etc/ssl/certs/ssl-cert-snakeoil.pem";
    if !std::path::Path::new(cert).exists() {
        eprintln!("skipped: no {cert}");
        return;
    }
    let port = crate::database::pg_host_port();
    let port = port.rsplit_once(':').unwrap().1;
    pg_proxy_case(
        &format!("tls = \"require\"\n  ca_cert = \"{cert}\""),
        &format!("localhost:{port}"),
    )
    .await;
}

fn psql(port: u16, db: &str, user: &str, sql: &str) -> std::process::Output {
    std::process::Command::new("psql")
        .args([
            "-h",
            "127.0.0.1",
            "-p",
            &port.to_string(),
            "-U",
            user,
            "-d",
            db,
        ])
        .args(["-X", "-A", "-t", "-w", "-c", sql])
        .env_remove("PGPASSWORD")
        .env("PGCONNECT_TIMEOUT", "20")
        .output()
        .expect("psql is needed for this test")
}

async fn pg_proxy_case(tls: &str, upstream: &str) {
    let fx = Fixture::new("1m", "1h").await;
    let port = free_port();
    let cfg = proxy_config(
        &fx,
        &format!(
            r#"proxy "postgres" {{
  listen   = "127.0.0.1:{port}"
  upstream = "{upstream}"
  secret   = "database/creds/{role}"
  {tls}
}}"#,
            role = fx.pg.role,
        ),
        "",
    );
    let mut proxy = fx.spawn(&["proxy", "--config", cfg.to_str().unwrap()]);
    let db = fx.pg.name.clone();
    eventually("psql through the proxy", LONG, || {
        let db = db.clone();
        async move {
            let o = tokio::task::spawn_blocking(move || {
                psql(port, &db, "anyone", "SELECT x FROM public.t1")
            })
            .await
            .unwrap();
            o.status.success() && String::from_utf8_lossy(&o.stdout).trim() == "1"
        }
    })
    .await;
    // The session runs as the leased user.
    let o = psql(port, &db, "anyone", "SELECT current_user");
    let user = String::from_utf8_lossy(&o.stdout).trim().to_owned();
    assert!(
        user.starts_with("v-"),
        "{user} {}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(fx.pg.role_exists(&user).await);

    // A long session through the proxy.
    let url = format!("host=127.0.0.1 port={port} user=agent dbname={db} sslmode=disable");
    let (client, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
        .await
        .unwrap();
    let conn_task = tokio::spawn(conn);
    let row = client
        .query_one("SELECT x FROM public.t1", &[])
        .await
        .unwrap();
    assert_eq!(row.get::<_, i32>(0), 1);

    // Revoke the lease (its id is in the proxy's use event, written within milliseconds).
    eventually("a use event", Duration::from_secs(10), || async {
        !used_events(&fx.log()).is_empty()
    })
    .await;
    let lease = used_events(&fx.log())
        .iter()
        .find_map(|e| {
            e["lease_id"]
                .as_str()
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
        })
        .expect("a use event with the lease id");
    let (s, b) = fx
        .srv
        .root("PUT", "sys/leases/revoke", Some(json!({"lease_id": lease})))
        .await;
    assert_eq!(s, 204, "{b}");
    eventually("the open session to end", LONG, || async {
        client.simple_query("SELECT 1").await.is_err()
    })
    .await;
    let _ = conn_task.await;
    let o = tokio::task::spawn_blocking(move || psql(port, &db, "anyone", "SELECT 1"))
        .await
        .unwrap();
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("leash proxy: PostgreSQL refused the leased credential")
            && err.contains(&lease),
        "{err}"
    );
    sigterm(&proxy);
    let _ = wait_exit(&mut proxy).await;
    fx.cleanup().await;
}

async fn read_head(s: &mut tokio::net::TcpStream) -> String {
    use tokio::io::AsyncReadExt as _;
    let mut buf = Vec::new();
    let mut b = [0u8; 4096];
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = s.read(&mut b).await.unwrap();
        assert!(n > 0, "client went away");
        buf.extend_from_slice(&b[..n]);
    }
    String::from_utf8_lossy(&buf).into_owned()
}

fn vm_hwm_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse().ok())
        .unwrap()
}

/// Bodies stream: an SSE event reaches the agent while the upstream is still holding
/// the stream open (and a later event echoing the credential is redacted); a 96 MiB
/// download passes through while the proxy's peak memory grows by far less.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sse_and_large_downloads_stream_through() {
    use tokio::io::AsyncWriteExt as _;
    let fx = Fixture::new("30s", "1h").await;
    let token = format!("ghp_{}", leash_types::random::base62(30));
    kv_token(&fx, &token).await;
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let up = l.local_addr().unwrap();
    let (release, released) = tokio::sync::oneshot::channel::<()>();
    const BIG: usize = 96 << 20;
    let server = tokio::spawn(async move {
        // 1: an SSE stream, the second event only once the test says so.
        let (mut s, _) = l.accept().await.unwrap();
        let head = read_head(&mut s).await;
        let auth = head
            .lines()
            .find_map(|l| l.strip_prefix("authorization: "))
            .unwrap_or("")
            .to_owned();
        s.write_all(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nConnection: close\r\nTransfer-Encoding: chunked\r\n\r\n")
            .await
            .unwrap();
        let ev = b"data: one\n\n";
        s.write_all(format!("{:x}\r\n", ev.len()).as_bytes())
            .await
            .unwrap();
        s.write_all(ev).await.unwrap();
        s.write_all(b"\r\n").await.unwrap();
        released.await.unwrap();
        let ev = format!("data: two {auth}\n\n");
        s.write_all(format!("{:x}\r\n{ev}\r\n0\r\n\r\n", ev.len()).as_bytes())
            .await
            .unwrap();
        drop(s);
        // 2: a large download with a Content-Length.
        let (mut s, _) = l.accept().await.unwrap();
        read_head(&mut s).await;
        s.write_all(format!("HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nConnection: close\r\nContent-Length: {BIG}\r\n\r\n").as_bytes())
            .await
            .unwrap();
        let block = vec![b'z'; 1 << 16];
        for _ in 0..BIG / block.len() {
            s.write_all(&block).await.unwrap();
        }
        drop(s);
        // 3: an answer compressed although the proxy asked for `identity`.
        let (mut s, _) = l.accept().await.unwrap();
        let head = read_head(&mut s).await;
        assert!(head.contains("accept-encoding: identity"), "{head}");
        s.write_all(b"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nConnection: close\r\nContent-Length: 4\r\n\r\nabcd")
            .await
            .unwrap();
    });
    let port = free_port();
    let cfg = proxy_config(
        &fx,
        &format!(
            r#"proxy "http" {{
  listen = "127.0.0.1:{port}"
  upstream "stream" {{
    url    = "http://{up}"
    secret = "secret/data/agents/github"
    header "Authorization" {{ value = "Bearer {{{{ .Data.data.token }}}}" }}
  }}
}}"#
        ),
        "",
    );
    let mut proxy = fx.spawn(&["proxy", "--config", cfg.to_str().unwrap()]);
    let base = format!("http://127.0.0.1:{port}");
    let http = reqwest::Client::new();
    eventually("the proxy to be ready", LONG, || async {
        matches!(http.get(format!("{base}/healthz")).send().await, Ok(r) if r.status() == 200)
    })
    .await;

    let mut r = http
        .get(format!("{base}/stream/events"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let first = tokio::time::timeout(Duration::from_secs(10), r.chunk())
        .await
        .expect("the first event did not arrive while the stream was open")
        .unwrap()
        .unwrap();
    assert_eq!(&first[..], b"data: one\n\n");
    release.send(()).unwrap();
    let mut rest = Vec::new();
    while let Some(c) = r.chunk().await.unwrap() {
        rest.extend_from_slice(&c);
    }
    let rest = String::from_utf8(rest).unwrap();
    assert_eq!(rest, "data: two [REDACTED]\n\n");

    let pid = proxy.id().unwrap();
    let before = vm_hwm_kib(pid);
    let mut r = http.get(format!("{base}/stream/big")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let mut total = 0usize;
    while let Some(c) = r.chunk().await.unwrap() {
        assert!(c.iter().all(|b| *b == b'z'));
        total += c.len();
    }
    assert_eq!(total, BIG);
    let grew = vm_hwm_kib(pid).saturating_sub(before);
    assert!(
        grew < 16 * 1024,
        "peak memory grew by {grew} KiB for a 96 MiB body"
    );
    let r = http
        .get(format!("{base}/stream/gz"))
        .header("Accept-Encoding", "gzip")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 502);
    let v: Value = r.json().await.unwrap();
    assert!(v["error"].as_str().unwrap().contains("cannot scan"), "{v}");
    server.await.unwrap();
    sigterm(&proxy);
    assert_eq!(wait_exit(&mut proxy).await, Some(0), "{}", fx.log());
    fx.cleanup().await;
}

/// `--config-env NAME` reads the configuration from the environment (what an injected
/// sidecar is given), and an unset variable is a clear error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn configuration_from_an_environment_variable() {
    let fx = Fixture::new("30s", "1h").await;
    kv_token(&fx, &format!("ghp_{}", leash_types::random::base62(30))).await;
    let port = free_port();
    let cfg = proxy_config(
        &fx,
        &format!(
            r#"proxy "http" {{
  listen = "127.0.0.1:{port}"
  upstream "github" {{
    url    = "http://127.0.0.1:9"
    secret = "secret/data/agents/github"
    header "Authorization" {{ value = "Bearer {{{{ .Data.data.token }}}}" }}
  }}
}}"#
        ),
        "",
    );
    let text = std::fs::read_to_string(&cfg).unwrap();
    let mut proxy = tokio::process::Command::new(env!("CARGO_BIN_EXE_leash"))
        .args(["proxy", "--config-env", "LEASH_PROXY_CONFIG"])
        .env("LEASH_PROXY_CONFIG", text)
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let http = reqwest::Client::new();
    eventually("the proxy to be ready", LONG, || async {
        matches!(http.get(format!("http://127.0.0.1:{port}/healthz")).send().await, Ok(r) if r.status() == 200)
    })
    .await;
    sigterm(&proxy);
    assert_eq!(wait_exit(&mut proxy).await, Some(0));
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_leash"))
        .args(["proxy", "--config-env", "LEASH_PROXY_UNSET_VARIABLE"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains("LEASH_PROXY_UNSET_VARIABLE: the variable is not set")
    );
    fx.cleanup().await;
}
