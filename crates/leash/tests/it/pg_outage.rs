//! The real outage: PostgreSQL itself is stopped while leases expire, then started
//! again, and every credential is revoked. The test runs its own private cluster
//! (`initdb` into a temporary directory, its own free port, `pg_ctl start/stop`), so the
//! machine's PostgreSQL — a developer's databases — is never touched, and it runs with
//! the rest of the suite. As root, the cluster runs as the `postgres` user (PostgreSQL
//! refuses to run as root). Without PostgreSQL's server binaries it is skipped, except
//! in CI where that is a failure. The TCP-forwarder variant is in `database.rs`.

use std::path::PathBuf;
use std::process::{Command, Output};
use std::time::Duration;

use leash_testkit::TestServer;
use serde_json::json;
use tokio_postgres::NoTls;

use crate::eventually;

/// The newest `/usr/lib/postgresql/<version>/bin` holding `initdb` and `pg_ctl`.
pub(crate) fn pg_bindir() -> Option<PathBuf> {
    let mut dirs: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .flatten()
        .filter_map(|e| {
            let v: u32 = e.file_name().to_str()?.parse().ok()?;
            let bin = e.path().join("bin");
            (bin.join("initdb").is_file() && bin.join("pg_ctl").is_file()).then_some((v, bin))
        })
        .collect();
    dirs.sort();
    dirs.pop().map(|(_, b)| b)
}

pub(crate) fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

pub(crate) fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A private PostgreSQL cluster in a temporary directory; stopped when dropped.
pub(crate) struct PrivatePg {
    bin: PathBuf,
    pub(crate) dir: tempfile::TempDir,
    pub(crate) port: u16,
    pub(crate) as_postgres: bool,
}

impl PrivatePg {
    pub(crate) fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// Runs a PostgreSQL program (as `postgres` when we are root).
    pub(crate) fn run(&self, program: &str, args: &[&str]) -> Output {
        let exe = self.bin.join(program);
        let mut c = if self.as_postgres {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(&exe);
            c
        } else {
            Command::new(&exe)
        };
        c.args(args).output().unwrap()
    }

    pub(crate) fn init(bin: PathBuf) -> PrivatePg {
        let dir = tempfile::tempdir().unwrap();
        let as_postgres = is_root();
        if as_postgres {
            let ok = Command::new("chown")
                .args(["postgres:", &dir.path().display().to_string()])
                .status()
                .is_ok_and(|s| s.success());
            assert!(ok, "chown of the cluster directory to postgres failed");
        }
        let pg = PrivatePg {
            bin,
            dir,
            port: free_port(),
            as_postgres,
        };
        let data = pg.data().display().to_string();
        let out = pg.run(
            "initdb",
            &[
                "-D",
                &data,
                "-U",
                "postgres",
                "--auth=trust",
                "-E",
                "UTF8",
                "--no-sync",
            ],
        );
        assert!(out.status.success(), "initdb: {}", text(&out));
        pg
    }

    pub(crate) fn start(&self) -> bool {
        self.start_with("")
    }

    /// Starts the cluster with extra `-c` settings (e.g. `-c ssl=on`).
    pub(crate) fn start_with(&self, extra: &str) -> bool {
        let data = self.data().display().to_string();
        let log = self.dir.path().join("pg.log").display().to_string();
        let opts = format!(
            "-c port={} -c listen_addresses=127.0.0.1 -c unix_socket_directories={} -c fsync=off {extra}",
            self.port,
            self.dir.path().display()
        );
        let out = self.run(
            "pg_ctl",
            &[
                "-D", &data, "-l", &log, "-o", &opts, "-w", "-t", "60", "start",
            ],
        );
        if !out.status.success() {
            eprintln!("pg_ctl start: {}", text(&out));
            eprintln!("{}", std::fs::read_to_string(&log).unwrap_or_default());
        }
        out.status.success()
    }

    pub(crate) fn stop(&self) -> bool {
        let data = self.data().display().to_string();
        let out = self.run("pg_ctl", &["-D", &data, "-m", "fast", "-w", "stop"]);
        out.status.success()
    }

    pub(crate) fn url(&self) -> String {
        format!("postgresql://postgres@127.0.0.1:{}/postgres", self.port)
    }

    async fn connect(&self) -> tokio_postgres::Client {
        let (client, conn) = tokio_postgres::connect(&self.url(), NoTls).await.unwrap();
        tokio::spawn(async move {
            let _ = conn.await;
        });
        client
    }

    async fn up(&self) -> bool {
        tokio_postgres::connect(&self.url(), NoTls).await.is_ok()
    }
}

impl Drop for PrivatePg {
    fn drop(&mut self) {
        let data = self.data();
        if data.join("postmaster.pid").exists() {
            let _ = self.run(
                "pg_ctl",
                &["-D", &data.display().to_string(), "-m", "immediate", "stop"],
            );
        }
    }
}

pub(crate) fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

async fn roles_like(c: &tokio_postgres::Client, like: &str) -> Vec<String> {
    c.query(
        "SELECT rolname::text FROM pg_roles WHERE rolname LIKE $1",
        &[&like],
    )
    .await
    .unwrap()
    .iter()
    .map(|r| r.get(0))
    .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_postgres_outage_leases_expire_then_all_are_revoked() {
    let Some(bin) = pg_bindir() else {
        assert!(
            std::env::var_os("CI").is_none(),
            "PostgreSQL's server binaries (/usr/lib/postgresql/*/bin/initdb) are needed under CI"
        );
        eprintln!("skipped: no /usr/lib/postgresql/*/bin/initdb (apt-get install postgresql)");
        return;
    };
    let pg = tokio::task::block_in_place(|| PrivatePg::init(bin));
    assert!(
        tokio::task::block_in_place(|| pg.start()),
        "could not start the private cluster"
    );
    eventually(
        "the private cluster accepts connections",
        Duration::from_secs(30),
        || pg.up(),
    )
    .await;

    let srv = TestServer::start().await;
    let (s, b) = srv
        .root(
            "POST",
            "sys/mounts/database",
            Some(json!({"type": "database"})),
        )
        .await;
    assert_eq!(s, 204, "{b}");
    let (s, b) = srv
        .root(
            "POST",
            "database/config/pg",
            Some(json!({
                "plugin_name": "postgresql-database-plugin",
                "connection_url": format!(
                    "postgresql://{{{{username}}}}:{{{{password}}}}@127.0.0.1:{}/postgres?sslmode=disable",
                    pg.port
                ),
                "username": "postgres",
                "password": "not-checked-under-trust",
                "allowed_roles": "*",
            })),
        )
        .await;
    assert_eq!(s, 204, "{b}");
    let (s, b) = srv
        .root(
            "POST",
            "database/roles/outage",
            Some(json!({
                "db_name": "pg",
                "creation_statements": [
                    "CREATE ROLE \"{{name}}\" WITH LOGIN PASSWORD '{{password}}' VALID UNTIL '{{expiration}}';"
                ],
                "revocation_statements": ["DROP ROLE IF EXISTS \"{{name}}\";"],
                "default_ttl": 3,
                "max_ttl": 60,
            })),
        )
        .await;
    assert!(s == 204 || s == 200, "{b}");
    let mut users = Vec::new();
    for _ in 0..5 {
        let (s, b) = srv.root("GET", "database/creds/outage", None).await;
        assert_eq!(s, 200, "{b}");
        users.push(b["data"]["username"].as_str().unwrap().to_owned());
    }
    let admin = pg.connect().await;
    assert_eq!(roles_like(&admin, "v-%").await.len(), 5);
    drop(admin);

    assert!(
        tokio::task::block_in_place(|| pg.stop()),
        "could not stop the private cluster"
    );
    eventually(
        "the leases expire and every revocation fails",
        Duration::from_secs(30),
        || async {
            let (s, b) = srv.root("GET", "sys/leases/failing", None).await;
            s == 200 && b["data"]["count"] == 5
        },
    )
    .await;
    assert_eq!(srv.core_lease_count().await, 5, "no lease is dropped");

    assert!(
        tokio::task::block_in_place(|| pg.start()),
        "could not start the private cluster again"
    );
    eventually("PostgreSQL is back", Duration::from_secs(60), || pg.up()).await;
    let admin = pg.connect().await;
    eventually(
        "every credential is revoked once PostgreSQL is back",
        Duration::from_secs(60),
        || async {
            roles_like(&admin, "v-%").await.is_empty() && srv.core_lease_count().await == 0
        },
    )
    .await;
    for u in &users {
        assert!(roles_like(&admin, u).await.is_empty(), "{u} survived");
    }
}
