//! Crashes during issuance: the real binary is killed with SIGKILL at random moments
//! while agents issue credentials, again and again. After recovery every role in the
//! target belongs to a lease leash knows (and will revoke), and revoking them all
//! leaves nothing behind: intent first, so no crash can orphan a credential.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};

use crate::database::PgScratch;
use crate::eventually;

struct Proc {
    child: Child,
    url: String,
}

/// Starts `leash server --config cfg`, waits for its listener (and the root token on
/// a first start).
fn start(cfg: &Path, want_root: bool) -> (Proc, Option<String>) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_leash"))
        .args(["server", "--config"])
        .arg(cfg)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut lines = BufReader::new(stdout).lines();
    let (mut url, mut root) = (None, None);
    while url.is_none() || (want_root && root.is_none()) {
        let line = lines
            .next()
            .unwrap_or_else(|| panic!("server exited before it was ready"))
            .unwrap();
        if let Some(a) = line.split("Listening on:").nth(1) {
            url = Some(a.trim().to_owned());
        }
        if let Some(t) = line.strip_prefix("Root Token:") {
            root = Some(t.trim().to_owned());
        }
    }
    // Keep draining stdout so the server never blocks on a full pipe.
    std::thread::spawn(move || for _ in lines {});
    (
        Proc {
            child,
            url: url.unwrap(),
        },
        root,
    )
}

async fn call(
    http: &reqwest::Client,
    p: &Proc,
    token: &str,
    method: &str,
    path: &str,
    body: Option<Value>,
) -> Result<(u16, Value), reqwest::Error> {
    let m = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
    let mut rb = http
        .request(m, format!("{}/v1/{path}", p.url))
        .header("X-Vault-Token", token);
    if let Some(b) = body {
        rb = rb.json(&b);
    }
    let r = rb.send().await?;
    let s = r.status().as_u16();
    let b = r.json::<Value>().await.unwrap_or(Value::Null);
    Ok((s, b))
}

async fn lease_count(http: &reqwest::Client, p: &Proc, root: &str, role: &str) -> usize {
    let (s, b) = call(
        http,
        p,
        root,
        "LIST",
        &format!("sys/leases/lookup/database/creds/{role}/"),
        None,
    )
    .await
    .unwrap();
    match s {
        404 => 0,
        200 => b["data"]["keys"].as_array().unwrap().len(),
        _ => panic!("listing leases: {s} {b}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_during_issuance_never_orphans_a_role() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("leash.hcl");
    std::fs::write(
        &cfg,
        format!(
            "storage \"sqlite\" {{\n  path = \"{}\"\n}}\nlistener \"tcp\" {{\n  address = \"127.0.0.1:0\"\n  tls_disable = true\n}}\nseal \"file\" {{\n  path = \"{}\"\n}}\n",
            dir.path().join("data").display(),
            dir.path().join("leash.key").display()
        ),
    )
    .unwrap();
    let http = reqwest::Client::new();
    let pg = PgScratch::new().await;

    let (mut p, root) = start(&cfg, true);
    let root = root.unwrap();
    let (s, b) = call(
        &http,
        &p,
        &root,
        "POST",
        "sys/mounts/database",
        Some(json!({"type": "database"})),
    )
    .await
    .unwrap();
    assert_eq!(s, 204, "{b}");
    let (s, b) = call(
        &http,
        &p,
        &root,
        "POST",
        "database/config/pg",
        Some(json!({
            "plugin_name": "postgresql-database-plugin",
            "connection_url": pg.url(),
            "username": "postgres", "password": "unused", "allowed_roles": "*",
        })),
    )
    .await
    .unwrap();
    assert_eq!(s, 204, "{b}");
    let (s, b) = call(&http, &p, &root, "POST", &format!("database/roles/{}", pg.role), Some(json!({
        "db_name": "pg",
        "creation_statements": [
            "CREATE ROLE \"{{name}}\" WITH LOGIN PASSWORD '{{password}}' VALID UNTIL '{{expiration}}';",
            "GRANT SELECT ON ALL TABLES IN SCHEMA public TO \"{{name}}\";",
        ],
        "revocation_statements": ["DROP ROLE IF EXISTS \"{{name}}\";"],
        "default_ttl": "1h", "max_ttl": "1h",
    })))
    .await
    .unwrap();
    assert_eq!(s, 200, "stored, with the direct-grant warning: {b}");

    let mut issued = 0usize;
    for round in 0..8u64 {
        if round > 0 {
            p = start(&cfg, false).0;
        }
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let mut tasks = Vec::new();
        for _ in 0..4 {
            let (http, url, root, role, stop) = (
                http.clone(),
                p.url.clone(),
                root.clone(),
                pg.role.clone(),
                Arc::clone(&stop),
            );
            tasks.push(tokio::spawn(async move {
                let mut ok = 0usize;
                while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                    let r = http
                        .get(format!("{url}/v1/database/creds/{role}"))
                        .header("X-Vault-Token", &root)
                        .send()
                        .await;
                    match r {
                        Ok(r) if r.status().is_success() => ok += 1,
                        Ok(_) => {}
                        Err(_) => break, // the server is gone
                    }
                }
                ok
            }));
        }
        // Kill at a different moment each round: 150..~700 ms into the load.
        let delay = 150 + (leash_types::random::bytes::<2>()[0] as u64) * 2 + round * 10;
        tokio::time::sleep(Duration::from_millis(delay)).await;
        p.child.kill().unwrap(); // SIGKILL
        p.child.wait().unwrap();
        stop.store(true, std::sync::atomic::Ordering::SeqCst);
        for t in tasks {
            issued += t.await.unwrap();
        }
    }
    assert!(issued > 0, "the load issued credentials");

    // Recovery: intents the killed processes left pending are revoked; what remains in
    // PostgreSQL is exactly what leases account for.
    let (p, _) = start(&cfg, false);
    eventually(
        "every role in PostgreSQL belongs to a lease",
        Duration::from_secs(30),
        || async { pg.our_roles().await.len() == lease_count(&http, &p, &root, &pg.role).await },
    )
    .await;
    let leases = lease_count(&http, &p, &root, &pg.role).await;
    eprintln!("{issued} issuances answered, {leases} leases after 8 SIGKILLs");
    assert!(
        leases > 0 && leases <= issued + 32,
        "{leases} leases for {issued} answered issuances"
    );
    let (s, b) = call(
        &http,
        &p,
        &root,
        "PUT",
        &format!("sys/leases/revoke-prefix/database/creds/{}", pg.role),
        None,
    )
    .await
    .unwrap();
    assert_eq!(s, 204, "{b}");
    assert!(
        pg.our_roles().await.is_empty(),
        "nothing orphaned in PostgreSQL"
    );
    assert_eq!(lease_count(&http, &p, &root, &pg.role).await, 0);
    let mut p = p;
    p.child.kill().unwrap();
    p.child.wait().unwrap();
    pg.cleanup().await;
}
