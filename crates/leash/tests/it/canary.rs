//! Canary credentials against the real server and PostgreSQL: a canary database
//! credential looks like a real one and can log in (with no privilege); a login with it
//! is seen by the session observer (on for canary roles whatever the configuration
//! says) and trips it: `agent.credential.canary_tripped` with the client address,
//! `leash_canary_tripped_total`, and with `contain_on_trip` the kill switch on the
//! identity it was issued to. A canary token is refused exactly like a revoked token and
//! trips on its first presentation.

use std::path::{Path, PathBuf};
use std::time::Duration;

use leash_testkit::TestServer;
use serde_json::{Value, json};

use crate::database::PgScratch;
use crate::eventually;

fn events(log: &Path, event: &str) -> Vec<Value> {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v["event"] == event)
        .collect()
}

async fn prometheus(srv: &TestServer) -> String {
    let r = reqwest::Client::new()
        .get(format!("{}/v1/sys/metrics?format=prometheus", srv.url()))
        .header("X-Vault-Token", &srv.root_token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    r.text().await.unwrap()
}

fn tripped(metrics: &str, kind: &str) -> Option<u64> {
    let series = format!("leash_canary_tripped_total{{credential_type=\"{kind}\"}} ");
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(&series))
        .and_then(|n| n.trim().parse().ok())
}

/// A server with file audit, a database mount whose connection does *not* observe
/// sessions, the issue's role, a canary role `<role>x` (no statements given: the
/// default no-privilege login role) and userpass `user` whose policy reads both and
/// creates child tokens.
async fn setup(user: &str, canary_role: Value) -> (TestServer, PgScratch, PathBuf, String) {
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
    let canary = format!("{}x", pg.role);
    let mut role = json!({"db_name": "pg", "default_ttl": "15m", "max_ttl": "1h"});
    for (k, v) in canary_role.as_object().unwrap() {
        role[k] = v.clone();
    }
    let (s, b) = srv
        .root("POST", &format!("database/roles/{canary}"), Some(role))
        .await;
    assert!(s == 204 || s == 200, "{b}");
    srv.write_policy(
        "agent",
        r#"path "database/creds/*" { capabilities = ["read"] }
path "auth/token/create" { capabilities = ["update"] }"#,
    )
    .await;
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
            &format!("auth/userpass/users/{user}"),
            Some(json!({"password": format!("{user}-passphrase"), "token_policies": "agent"})),
        )
        .await;
    assert_eq!(s, 204, "{b}");
    (srv, pg, log, canary)
}

async fn login(srv: &TestServer, user: &str) -> (u16, Value) {
    srv.call(
        "POST",
        &format!("auth/userpass/login/{user}"),
        None,
        Some(json!({"password": format!("{user}-passphrase")})),
    )
    .await
}

async fn alive(srv: &TestServer, token: &str) -> bool {
    srv.call("GET", "auth/token/lookup-self", Some(token), None)
        .await
        .0
        == 200
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_login_with_a_canary_database_credential_trips_it_and_contains_the_agent() {
    let (srv, pg, log, canary) =
        setup("mallory", json!({"canary": true, "contain_on_trip": true})).await;
    let (s, auth) = login(&srv, "mallory").await;
    assert_eq!(s, 200, "{auth}");
    let token = auth["auth"]["client_token"].as_str().unwrap().to_owned();
    let entity = auth["auth"]["entity_id"].as_str().unwrap().to_owned();

    // A real credential and a canary one: the same shape, the same username pattern.
    let (s, real) = srv
        .call(
            "GET",
            &format!("database/creds/{}", pg.role),
            Some(&token),
            None,
        )
        .await;
    assert_eq!(s, 200, "{real}");
    let (s, bait) = srv
        .call(
            "GET",
            &format!("database/creds/{canary}"),
            Some(&token),
            None,
        )
        .await;
    assert_eq!(s, 200, "{bait}");
    let keys = |v: &Value| {
        let mut k: Vec<String> = v["data"].as_object().unwrap().keys().cloned().collect();
        k.sort();
        k
    };
    assert_eq!(keys(&real), keys(&bait));
    assert_eq!(real["lease_duration"], bait["lease_duration"]);
    assert_eq!(real["renewable"], bait["renewable"]);
    let real_user = real["data"]["username"].as_str().unwrap().to_owned();
    let bait_user = bait["data"]["username"].as_str().unwrap().to_owned();
    let bait_pass = bait["data"]["password"].as_str().unwrap().to_owned();
    assert_eq!(
        real_user.split('-').next(),
        bait_user.split('-').next(),
        "same pattern"
    );
    assert_eq!(
        real_user.split('-').count(),
        bait_user.split('-').count(),
        "v-<who>-<role>-<random>-<time>"
    );
    assert_eq!(
        real["data"]["password"].as_str().unwrap().len(),
        bait_pass.len()
    );
    let bait_lease = bait["lease_id"].as_str().unwrap().to_owned();
    // Nothing in what the API shows about the role's credential says "canary".
    let (s, look) = srv
        .root(
            "PUT",
            "sys/leases/lookup",
            Some(json!({"lease_id": bait_lease})),
        )
        .await;
    assert_eq!(s, 200, "{look}");
    assert!(!look.to_string().contains("canary"), "{look}");
    assert!(!bait.to_string().contains("canary"), "{bait}");
    assert!(pg.role_exists(&bait_user).await);
    assert_eq!(tripped(&prometheus(&srv).await, "database"), Some(0));
    // The observer is on for this connection although its configuration says no.
    let (_, cfg) = srv.root("GET", "database/config/pg", None).await;
    assert_eq!(cfg["data"]["observe_sessions"], false, "{cfg}");

    // The attacker logs in with the harvested credential: it works, and reads nothing.
    let client = pg.login(&bait_user, &bait_pass).await;
    let denied = client.simple_query("SELECT * FROM public.t1").await;
    assert!(denied.is_err(), "a canary has no privilege");
    client.simple_query("SELECT 1").await.unwrap();

    eventually("the canary trips", Duration::from_secs(60), || async {
        !events(&log, "agent.credential.canary_tripped").is_empty()
    })
    .await;
    let ev = events(&log, "agent.credential.canary_tripped");
    assert_eq!(ev.len(), 1, "{ev:#?}");
    assert_eq!(ev[0]["lease_id"], bait_lease.as_str());
    assert_eq!(ev[0]["action_context"]["client_address"], "127.0.0.1");
    assert_eq!(ev[0]["action_context"]["initiator"], "session-observer");
    assert_eq!(ev[0]["agent_id"], entity.as_str());
    assert_eq!(ev[0]["credential_type"], "database");

    // The alert's series.
    eventually("the metric", Duration::from_secs(10), || async {
        tripped(&prometheus(&srv).await, "database") == Some(1)
    })
    .await;
    // contain_on_trip: the kill switch ran on the identity it was issued to.
    eventually(
        "the agent is contained",
        Duration::from_secs(30),
        || async { !alive(&srv, &token).await && !pg.role_exists(&real_user).await },
    )
    .await;
    let (s, b) = login(&srv, "mallory").await;
    assert_eq!(s, 403, "{b}");
    assert!(
        b.to_string().contains("locked: canary credential used"),
        "{b}"
    );
    let locks = events(&log, "containment.locked");
    assert_eq!(locks.len(), 1, "{locks:#?}");
    assert_eq!(locks[0]["selector"]["entity_id"], entity.as_str());
    drop(client);
    pg.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_canary_role_needs_canary_for_its_options_and_gives_statements_its_own_way() {
    let (srv, pg, _log, canary) = setup(
        "oscar",
        json!({"canary": true, "canary_statements": [
            "CREATE ROLE \"{{name}}\" WITH LOGIN PASSWORD '{{password}}' VALID UNTIL '{{expiration}}';",
            "GRANT SELECT ON public.t2 TO \"{{name}}\";"
        ]}),
    )
    .await;
    let (s, b) = srv
        .root("GET", &format!("database/roles/{canary}"), None)
        .await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["data"]["canary"], true);
    assert_eq!(b["data"]["canary_statements"].as_array().unwrap().len(), 2);
    // The operator's statements make the user: it may read public.t2 (bait), not t1.
    let (s, bait) = srv
        .root("GET", &format!("database/creds/{canary}"), None)
        .await;
    assert_eq!(s, 200, "{bait}");
    let user = bait["data"]["username"].as_str().unwrap();
    let c = pg
        .login(user, bait["data"]["password"].as_str().unwrap())
        .await;
    c.simple_query("SELECT * FROM public.t2").await.unwrap();
    assert!(c.simple_query("SELECT * FROM public.t1").await.is_err());
    drop(c);
    // canary_statements and contain_on_trip only with canary = true.
    let (s, b) = srv
        .root(
            "POST",
            "database/roles/plain",
            Some(json!({"db_name": "pg", "creation_statements": ["SELECT 1"], "contain_on_trip": true})),
        )
        .await;
    assert_eq!(s, 400, "{b}");
    assert!(b.to_string().contains("canary"), "{b}");
    let (s, b) = srv
        .root(
            "POST",
            "database/roles/plain",
            Some(json!({"db_name": "pg"})),
        )
        .await;
    assert_eq!(s, 400, "a real role still needs creation_statements: {b}");
    pg.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_canary_token_is_refused_like_a_revoked_one_and_trips_on_first_presentation() {
    let (srv, pg, log, _) = setup("trudy", json!({"canary": true})).await;
    let (s, auth) = login(&srv, "trudy").await;
    assert_eq!(s, 200, "{auth}");
    let token = auth["auth"]["client_token"].as_str().unwrap().to_owned();
    let entity = auth["auth"]["entity_id"].as_str().unwrap().to_owned();

    // A canary token and an ordinary one, made the same way: they look alike.
    let (s, c) = srv
        .call(
            "POST",
            "auth/token/create",
            Some(&token),
            Some(json!({"canary": true, "contain_on_trip": true, "ttl": "1h"})),
        )
        .await;
    assert_eq!(s, 200, "{c}");
    let (s, o) = srv
        .call(
            "POST",
            "auth/token/create",
            Some(&token),
            Some(json!({"ttl": "1h"})),
        )
        .await;
    assert_eq!(s, 200, "{o}");
    let canary = c["auth"]["client_token"].as_str().unwrap().to_owned();
    let other = o["auth"]["client_token"].as_str().unwrap().to_owned();
    assert_eq!(canary.len(), other.len());
    assert_eq!(canary.split('.').next(), other.split('.').next());
    assert!(!c.to_string().contains("canary"), "{c}");
    // A revoked token's answer, for comparison.
    let (s, _) = srv
        .call("POST", "auth/token/revoke-self", Some(&other), None)
        .await;
    assert_eq!(s, 204);
    let revoked = srv
        .call("GET", "auth/token/lookup-self", Some(&other), None)
        .await;
    assert_eq!(tripped(&prometheus(&srv).await, "token"), Some(0));

    // Every use of the canary is refused exactly as the revoked token was.
    for path in ["auth/token/lookup-self", "database/creds/x"] {
        let presented = srv.call("GET", path, Some(&canary), None).await;
        let baseline = srv.call("GET", path, Some(&other), None).await;
        assert_eq!(presented, baseline, "{path}");
    }
    assert_eq!(
        srv.call("GET", "auth/token/lookup-self", Some(&canary), None)
            .await,
        revoked
    );

    eventually(
        "the canary token trips",
        Duration::from_secs(30),
        || async { !events(&log, "agent.credential.canary_tripped").is_empty() },
    )
    .await;
    let ev = events(&log, "agent.credential.canary_tripped");
    assert_eq!(ev.len(), 1, "first presentation only: {ev:#?}");
    assert_eq!(ev[0]["credential_type"], "token");
    assert_eq!(ev[0]["agent_id"], entity.as_str());
    assert_eq!(ev[0]["action_context"]["client_address"], "127.0.0.1");
    assert_eq!(ev[0]["action_context"]["initiator"], "token-presented");
    assert_eq!(tripped(&prometheus(&srv).await, "token"), Some(1));
    eventually(
        "the agent is contained",
        Duration::from_secs(30),
        || async { !alive(&srv, &token).await },
    )
    .await;
    let (s, b) = login(&srv, "trudy").await;
    assert_eq!(s, 403, "{b}");
    assert!(
        b.to_string().contains("locked: canary token presented"),
        "{b}"
    );
    pg.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mariadb_canary_is_a_login_without_privilege_and_trips_too() {
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
    let base = crate::database_mysql::base();
    let (s, b) = srv
        .root(
            "POST",
            "mysql/config/maria",
            Some(json!({
                "plugin_name": "mysql-database-plugin",
                "connection_url": format!(
                    "{{{{username}}}}:{{{{password}}}}@tcp({}:{})/",
                    base.ip_or_hostname(),
                    base.tcp_port()
                ),
                "username": "root",
                "password": "",
                "allowed_roles": ["bait"],
            })),
        )
        .await;
    assert_eq!(s, 204, "{b}");
    let (s, b) = srv
        .root(
            "POST",
            "mysql/roles/bait",
            Some(json!({"db_name": "maria", "canary": true, "default_ttl": "10m"})),
        )
        .await;
    assert_eq!(s, 204, "{b}");
    let (s, b) = srv.root("GET", "mysql/creds/bait", None).await;
    assert_eq!(s, 200, "{b}");
    let lease = b["lease_id"].as_str().unwrap().to_owned();
    let mut c = mysql_async::Conn::new(
        mysql_async::OptsBuilder::default()
            .ip_or_hostname(base.ip_or_hostname())
            .tcp_port(base.tcp_port())
            .user(Some(b["data"]["username"].as_str().unwrap()))
            .pass(Some(b["data"]["password"].as_str().unwrap()))
            .prefer_socket(false),
    )
    .await
    .unwrap();
    c.query_drop("SELECT 1").await.unwrap();
    assert!(
        c.query_drop("SELECT * FROM mysql.user").await.is_err(),
        "a canary has no privilege"
    );
    eventually("the canary trips", Duration::from_secs(60), || async {
        events(&log, "agent.credential.canary_tripped")
            .iter()
            .any(|e| e["lease_id"] == lease.as_str())
    })
    .await;
    let ev = events(&log, "agent.credential.canary_tripped");
    assert_eq!(ev[0]["action_context"]["database"], "maria");
    assert_eq!(tripped(&prometheus(&srv).await, "database"), Some(1));
    drop(c);
    let (s, b) = srv
        .root("PUT", "sys/leases/revoke", Some(json!({"lease_id": lease})))
        .await;
    assert_eq!(s, 204, "{b}");
}
