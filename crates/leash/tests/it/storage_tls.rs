//! TLS to the storage database: `storage "postgresql"` against a private PostgreSQL
//! cluster that takes TLS only on TCP (`hostssl`), with a certificate the test makes at
//! run time (`db_tls::tls_only_pg`). Real `leash server` processes: `verify-full` with the
//! right CA initialises and serves, and every storage connection is TLS; `disable` and a
//! wrong CA refuse to start, saying why, never echoing the URL's password. Skipped
//! (with the reason printed) without PostgreSQL's server binaries, except under CI.

use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::json;

use crate::auth_jwt::support::pki;
use crate::db_tls::tls_only_pg;
use crate::ha::{call, start};

/// A server configuration on `connection_url` (and `extra` lines of the storage block)
/// in `dir`, sharing `dir/leash.key`.
fn config(dir: &Path, name: &str, connection_url: &str, extra: &str) -> PathBuf {
    let cfg = dir.join(format!("{name}.hcl"));
    std::fs::write(
        &cfg,
        format!(
            r#"
storage "postgresql" {{
  connection_url = "{connection_url}"
  max_parallel   = "4"
{extra}
}}
listener "tcp" {{
  address     = "127.0.0.1:0"
  tls_disable = true
}}
seal "file" {{ path = "{key}" }}
"#,
            key = dir.join("leash.key").display()
        ),
    )
    .unwrap();
    cfg
}

/// Runs `leash server` on `cfg`, which must fail to start: its output (stdout and
/// stderr).
fn refused(cfg: &Path) -> String {
    let mut child = Command::new(env!("CARGO_BIN_EXE_leash"))
        .args(["server", "--config"])
        .arg(cfg)
        .env("LEASH_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("the server with {} did not stop within 60 s", cfg.display());
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut out = String::new();
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut out)
        .unwrap();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut out)
        .unwrap();
    assert!(!status.success(), "the server started: {out}");
    out
}

/// Sessions of database `db` over TCP, and how many of them are TLS.
async fn sessions(admin: &tokio_postgres::Client, db: &str) -> (i64, i64) {
    let row = admin
        .query_one(
            "SELECT count(*), count(*) FILTER (WHERE s.ssl) \
             FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid) \
             WHERE a.client_addr IS NOT NULL AND a.datname = $1",
            &[&db],
        )
        .await
        .unwrap();
    (row.get(0), row.get(1))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgresql_storage_over_tls_verify_full_serves_and_bad_tls_refuses_to_start() {
    let Some((pg, admin)) = tls_only_pg("hostssl all all 127.0.0.1/32 trust\n", None).await else {
        return;
    };
    admin
        .batch_execute("CREATE DATABASE leash_tls")
        .await
        .unwrap();
    let pki = pki();
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca.pem");
    std::fs::write(&ca, &pki.ca_pem).unwrap();
    let rogue_ca = dir.path().join("rogue-ca.pem");
    std::fs::write(&rogue_ca, &pki.rogue_ca_pem).unwrap();
    // The cluster trusts every TLS login; the password is there to prove it is never
    // echoed.
    let password = format!("pw-{}", leash_types::random::base62(12));
    let url = |query: String| {
        format!(
            "postgresql://postgres:{password}@127.0.0.1:{}/leash_tls?{query}",
            pg.port
        )
    };

    // verify-full with the right CA: the first server initialises and serves.
    let cfg = config(
        dir.path(),
        "full",
        &url(format!("sslmode=verify-full&sslrootcert={}", ca.display())),
        "",
    );
    let (srv, root) = tokio::task::block_in_place(|| start(&cfg));
    let root = root.expect("the first server initialises and prints a root token");
    let http = reqwest::Client::new();
    let (s, b) = call(
        &http,
        &srv.url,
        &root,
        "POST",
        "auth/token/create",
        Some(json!({"policies": ["default"]})),
    )
    .await;
    assert_eq!(s, 200, "{b}");
    let tok = b["auth"]["client_token"].as_str().unwrap().to_owned();
    let (s, b) = call(&http, &srv.url, &tok, "GET", "auth/token/lookup-self", None).await;
    assert_eq!(s, 200, "the token made works: {b}");
    let (s, b) = call(
        &http,
        &srv.url,
        &root,
        "POST",
        "sys/mounts/kv",
        Some(json!({"type": "kv", "options": {"version": "1"}})),
    )
    .await;
    assert_eq!(s, 204, "{b}");
    let (s, b) = call(
        &http,
        &srv.url,
        &root,
        "PUT",
        "kv/app",
        Some(json!({"v": "1"})),
    )
    .await;
    assert_eq!(s, 204, "{b}");
    let (s, b) = call(&http, &srv.url, &root, "GET", "kv/app", None).await;
    assert_eq!((s, &b["data"]["v"]), (200, &json!("1")), "{b}");
    let (tcp, tls) = sessions(&admin, "leash_tls").await;
    assert!(
        tcp >= 2 && tcp == tls,
        "the pool and the notification connection are TLS: {tls} of {tcp}"
    );

    // The key=value form, with the TLS keys as keys of the block: a second server joins.
    let cfg = config(
        dir.path(),
        "keys",
        &format!(
            "host=127.0.0.1 port={} user=postgres password={password} dbname=leash_tls sslmode=disable",
            pg.port
        ),
        &format!(
            "  sslmode     = \"verify-full\"\n  sslrootcert = \"{}\"",
            ca.display()
        ),
    );
    let (srv2, root2) = tokio::task::block_in_place(|| start(&cfg));
    assert!(
        root2.is_none(),
        "the second server joins, initialising nothing"
    );
    let (s, b) = call(&http, &srv2.url, &root, "GET", "kv/app", None).await;
    assert_eq!((s, &b["data"]["v"]), (200, &json!("1")), "{b}");
    drop((srv, srv2));

    // sslmode=disable against a server taking TLS only: refused, saying so.
    let out = tokio::task::block_in_place(|| {
        refused(&config(
            dir.path(),
            "plain",
            &url("sslmode=disable".into()),
            "",
        ))
    });
    assert!(
        out.contains("no encryption") && out.contains("sslmode=verify-full"),
        "the message says the server wants TLS: {out}"
    );
    assert!(
        !out.contains(&password),
        "the password is never echoed: {out}"
    );

    // verify-full with a wrong CA: refused, naming the certificate problem.
    let out = tokio::task::block_in_place(|| {
        refused(&config(
            dir.path(),
            "rogue",
            &url(format!(
                "sslmode=verify-full&sslrootcert={}",
                rogue_ca.display()
            )),
            "",
        ))
    });
    assert!(
        out.contains("not signed by the CA") && out.contains("UnknownIssuer"),
        "the message names the CA problem: {out}"
    );
    assert!(
        !out.contains(&password),
        "the password is never echoed: {out}"
    );

    // A CA file that is not there: refused, naming the key and the file.
    let out = tokio::task::block_in_place(|| {
        refused(&config(
            dir.path(),
            "missing",
            &url("sslmode=verify-full&sslrootcert=/nonexistent/ca.pem".into()),
            "",
        ))
    });
    assert!(
        out.contains("sslrootcert") && out.contains("/nonexistent/ca.pem"),
        "{out}"
    );
    assert!(
        !out.contains(&password),
        "the password is never echoed: {out}"
    );
    tokio::task::block_in_place(|| pg.stop());
}
