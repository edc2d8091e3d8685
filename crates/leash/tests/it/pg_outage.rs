//! The real outage: PostgreSQL itself is stopped while leases expire, then started
//! again, and every credential is revoked. It stops the server every other test uses,
//! so it is `#[ignore]`d and `scripts/test` runs it on its own after the main suite
//! (`cargo test -p leash --test it -- --ignored --test-threads=1 real_postgres_outage`).
//! The parallel-safe variant cuts a TCP forwarder instead (`database.rs`).

use std::process::Command;
use std::time::Duration;

use leash_testkit::TestServer;
use serde_json::json;

use crate::database::PgScratch;
use crate::eventually;

/// Runs `pg_ctlcluster <version> main <action>` for every installed cluster.
fn pg_ctl(action: &str) -> bool {
    let Ok(versions) = std::fs::read_dir("/etc/postgresql") else {
        return false;
    };
    let mut ok = true;
    for v in versions.flatten() {
        let status = Command::new("pg_ctlcluster")
            .args(["--skip-systemctl-redirect"])
            .arg(v.file_name())
            .args(["main", action])
            .args(if action == "stop" {
                &["-m", "fast"][..]
            } else {
                &[][..]
            })
            .status();
        ok &= status.is_ok_and(|s| s.success());
    }
    ok
}

/// Starts PostgreSQL again if the test ends (panics) while it is stopped.
struct Restart {
    armed: bool,
}

impl Drop for Restart {
    fn drop(&mut self) {
        if self.armed {
            pg_ctl("start");
        }
    }
}

async fn pg_up() -> bool {
    tokio_postgres::connect(&crate::database::pg_admin_url(), tokio_postgres::NoTls)
        .await
        .is_ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "stops the shared PostgreSQL; scripts/test runs it alone"]
async fn real_postgres_outage_leases_expire_then_all_are_revoked() {
    if Command::new("pg_ctlcluster")
        .arg("--help")
        .output()
        .is_err()
    {
        assert!(
            std::env::var_os("CI").is_none(),
            "pg_ctlcluster is needed under CI"
        );
        eprintln!("skipped: pg_ctlcluster is not available");
        return;
    }
    let srv = TestServer::start().await;
    let pg = PgScratch::new().await;
    pg.setup(&srv, "database", json!({"default_ttl": 3, "max_ttl": 60}))
        .await;
    let mut users = Vec::new();
    for _ in 0..5 {
        let (s, b) = srv
            .root("GET", &format!("database/creds/{}", pg.role), None)
            .await;
        assert_eq!(s, 200, "{b}");
        users.push(b["data"]["username"].as_str().unwrap().to_owned());
    }

    let mut restart = Restart { armed: true };
    assert!(pg_ctl("stop"), "could not stop PostgreSQL");
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

    assert!(pg_ctl("start"), "could not start PostgreSQL");
    restart.armed = false;
    eventually("PostgreSQL is back", Duration::from_secs(60), pg_up).await;
    let pg = pg.reconnect().await;
    eventually(
        "every credential is revoked once PostgreSQL is back",
        Duration::from_secs(60),
        || async { pg.our_roles().await.is_empty() && srv.core_lease_count().await == 0 },
    )
    .await;
    for u in &users {
        assert!(!pg.role_exists(u).await);
    }
    pg.cleanup().await;
}
