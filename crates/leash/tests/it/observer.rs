//! The database session observer against the real PostgreSQL: a credential used from
//! the address its agent called leash from is `used` (once per session); one used from
//! elsewhere is also an `anomaly`, counted in `leash_credential_anomalies_total`.
//!
//! PostgreSQL here listens on 127.0.0.1 only (and trusts only 127.0.0.1), so the second
//! address is on leash's side: one agent calls leash from 127.0.0.2 (a client socket
//! bound there; all of 127/8 is loopback), then uses its credential from 127.0.0.1.

use std::path::Path;
use std::time::Duration;

use leash_testkit::TestServer;
use serde_json::{Value, json};

use crate::database::PgScratch;
use crate::eventually;

fn events(log: &Path) -> Vec<Value> {
    std::fs::read_to_string(log)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .filter(|v| v["type"] == "lifecycle")
        .collect()
}

fn of(evs: &[Value], lease: &str, event: &str) -> Vec<Value> {
    evs.iter()
        .filter(|e| e["lease_id"] == lease && e["event"] == event)
        .cloned()
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_are_logged_once_and_a_foreign_address_is_an_anomaly() {
    let srv = TestServer::start().await;
    let log = srv.dir.join("audit.log");
    let (s, b) = srv
        .root(
            "PUT",
            "sys/audit/file",
            Some(json!({"type": "file", "options": {"file_path": log.display().to_string()}})),
        )
        .await;
    assert_eq!(s, 204, "{b}");
    let pg = PgScratch::new().await;
    pg.setup(&srv, "database", json!({})).await;
    let (s, b) = srv
        .root(
            "POST",
            "database/config/pg",
            Some(json!({
                "plugin_name": "postgresql-database-plugin",
                "connection_url": pg.url(),
                "username": "postgres",
                "password": "root-password-not-checked-under-trust",
                "allowed_roles": "*",
                "observe_sessions": true,
            })),
        )
        .await;
    assert_eq!(s, 204, "{b}");
    let (s, b) = srv.root("GET", "database/config/pg", None).await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["data"]["observe_sessions"], true, "{b}");

    // Agent A calls leash from 127.0.0.1, agent B from 127.0.0.2.
    let creds = format!("database/creds/{}", pg.role);
    let (s, a) = srv.root("GET", &creds, None).await;
    assert_eq!(s, 200, "{a}");
    let from_2 = reqwest::Client::builder()
        .local_address(Some("127.0.0.2".parse().unwrap()))
        .build()
        .unwrap();
    let r = from_2
        .get(format!("{}/v1/{creds}", srv.url()))
        .header("X-Vault-Token", &srv.root_token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let b: Value = r.json().await.unwrap();
    let lease = |v: &Value| v["lease_id"].as_str().unwrap().to_owned();
    let (lease_a, lease_b) = (lease(&a), lease(&b));
    let login = |v: &Value| {
        (
            v["data"]["username"].as_str().unwrap().to_owned(),
            v["data"]["password"].as_str().unwrap().to_owned(),
        )
    };
    let ((ua, pa), (ub, pb)) = (login(&a), login(&b));

    // Both use their credential from 127.0.0.1, and keep the session open.
    let ca = pg.login(&ua, &pa).await;
    ca.simple_query("SELECT 1").await.unwrap();
    let cb = pg.login(&ub, &pb).await;
    cb.simple_query("SELECT 1").await.unwrap();
    eventually(
        "both sessions observed",
        Duration::from_secs(60),
        || async {
            let evs = events(&log);
            !of(&evs, &lease_a, "agent.credential.used").is_empty()
                && !of(&evs, &lease_b, "agent.credential.anomaly").is_empty()
        },
    )
    .await;

    // A second session of A: logged once more, and the first one was not logged again
    // in the polls between.
    let ca2 = pg.login(&ua, &pa).await;
    ca2.simple_query("SELECT 1").await.unwrap();
    eventually(
        "the second session observed",
        Duration::from_secs(60),
        || async { of(&events(&log), &lease_a, "agent.credential.used").len() >= 2 },
    )
    .await;
    let evs = events(&log);
    let used_a = of(&evs, &lease_a, "agent.credential.used");
    assert_eq!(used_a.len(), 2, "one per session: {used_a:#?}");
    assert!(of(&evs, &lease_a, "agent.credential.anomaly").is_empty());
    let ctx = &used_a[0]["action_context"];
    assert_eq!(ctx["initiator"], "session-observer", "{ctx}");
    assert_eq!(ctx["client_address"], "127.0.0.1");
    assert_eq!(ctx["agent_address"], "127.0.0.1");
    assert_eq!(ctx["database"], "pg");
    assert_eq!(used_a[0]["credential_scope"]["role"], pg.role.as_str());
    assert_eq!(
        ctx["first_use"], used_a[1]["action_context"]["first_use"],
        "first use is the lease's"
    );
    assert_ne!(
        ctx["session_id"], used_a[1]["action_context"]["session_id"],
        "two sessions"
    );
    let anomaly = of(&evs, &lease_b, "agent.credential.anomaly");
    assert_eq!(anomaly.len(), 1, "{anomaly:#?}");
    assert_eq!(anomaly[0]["action_context"]["agent_address"], "127.0.0.2");
    assert_eq!(anomaly[0]["action_context"]["client_address"], "127.0.0.1");
    assert_eq!(of(&evs, &lease_b, "agent.credential.used").len(), 1);

    let r = reqwest::Client::new()
        .get(format!("{}/v1/sys/metrics?format=prometheus", srv.url()))
        .header("X-Vault-Token", &srv.root_token)
        .send()
        .await
        .unwrap();
    let text = r.text().await.unwrap();
    let want = format!(
        "leash_credential_anomalies_total{{engine=\"database/\",role=\"{}\"}} 1",
        pg.role
    );
    assert!(text.lines().any(|l| l == want), "{text}");
    // The alert-rule tests use series shaped like this one.
    let yml = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../deploy/prometheus/tests.yml"
    ))
    .unwrap();
    let label_names = |series: &str| -> Vec<String> {
        let inner = series.split_once('{').unwrap().1.trim_end_matches('}');
        inner
            .split("\",")
            .map(|l| l.split_once('=').unwrap().0.to_owned())
            .collect()
    };
    let mut n = 0;
    for line in yml.lines() {
        let Some(series) = line
            .trim()
            .strip_prefix("- series: '")
            .filter(|s| s.starts_with("leash_credential_anomalies_total{"))
        else {
            continue;
        };
        assert_eq!(
            label_names(series.trim_end_matches('\'')),
            label_names(want.rsplit_once(' ').unwrap().0)
        );
        n += 1;
    }
    assert!(n >= 1, "tests.yml tests the anomaly alert");
    drop((ca, ca2, cb));
    pg.cleanup().await;
}

/// The same against the real MariaDB (`information_schema.PROCESSLIST`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mariadb_sessions_are_observed_too() {
    use mysql_async::prelude::Queryable;

    let srv = TestServer::start().await;
    let log = srv.dir.join("audit.log");
    let (s, b) = srv
        .root(
            "PUT",
            "sys/audit/file",
            Some(json!({"type": "file", "options": {"file_path": log.display().to_string()}})),
        )
        .await;
    assert_eq!(s, 204, "{b}");
    let (s, b) = srv
        .root(
            "POST",
            "sys/mounts/mysql",
            Some(json!({"type": "database"})),
        )
        .await;
    assert_eq!(s, 204, "{b}");
    let (s, b) = srv
        .root(
            "POST",
            "mysql/config/maria",
            Some(json!({
                "plugin_name": "mysql-database-plugin",
                "connection_url": format!(
                    "{{{{username}}}}:{{{{password}}}}@tcp({}:{})/",
                    crate::database_mysql::base().ip_or_hostname(),
                    crate::database_mysql::base().tcp_port()
                ),
                "username": "root",
                "password": "",
                "allowed_roles": ["obs"],
                "observe_sessions": true,
            })),
        )
        .await;
    assert_eq!(s, 204, "{b}");
    let (s, b) = srv
        .root(
            "POST",
            "mysql/roles/obs",
            Some(json!({
                "db_name": "maria",
                "creation_statements": "CREATE USER '{{name}}'@'%' IDENTIFIED BY '{{password}}';",
                "default_ttl": "10m",
            })),
        )
        .await;
    assert_eq!(s, 204, "{b}");
    // Issued to an agent calling from 127.0.0.2, used from 127.0.0.1.
    let from_2 = reqwest::Client::builder()
        .local_address(Some("127.0.0.2".parse().unwrap()))
        .build()
        .unwrap();
    let r = from_2
        .get(format!("{}/v1/mysql/creds/obs", srv.url()))
        .header("X-Vault-Token", &srv.root_token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let b: Value = r.json().await.unwrap();
    let lease = b["lease_id"].as_str().unwrap().to_owned();
    let mut c = mysql_async::Conn::new(
        mysql_async::OptsBuilder::default()
            .ip_or_hostname(crate::database_mysql::base().ip_or_hostname())
            .tcp_port(crate::database_mysql::base().tcp_port())
            .user(Some(b["data"]["username"].as_str().unwrap()))
            .pass(Some(b["data"]["password"].as_str().unwrap()))
            .prefer_socket(false),
    )
    .await
    .unwrap();
    c.query_drop("SELECT 1").await.unwrap();
    eventually("the session observed", Duration::from_secs(60), || async {
        !of(&events(&log), &lease, "agent.credential.anomaly").is_empty()
    })
    .await;
    let evs = events(&log);
    let used = of(&evs, &lease, "agent.credential.used");
    assert_eq!(used.len(), 1, "{used:#?}");
    assert_eq!(used[0]["action_context"]["client_address"], "127.0.0.1");
    assert_eq!(used[0]["action_context"]["agent_address"], "127.0.0.2");
    assert_eq!(used[0]["action_context"]["database"], "maria");
    drop(c);
    // Revoking drops the user.
    let (s, b) = srv
        .root("PUT", "sys/leases/revoke", Some(json!({"lease_id": lease})))
        .await;
    assert_eq!(s, 204, "{b}");
}
