//! `database/` with `mysql-database-plugin` against the real MariaDB of this machine,
//! configured as Vault users write it (a Go DSN connection URL).

use std::time::Duration;

use leash_testkit::TestServer;
use mysql_async::prelude::Queryable;
use mysql_async::{Conn, Opts, OptsBuilder};
use serde_json::json;

use crate::{error, eventually};

pub(crate) fn base() -> Opts {
    let url = std::env::var("LEASH_TEST_MYSQL_URL")
        .unwrap_or_else(|_| "mysql://root@127.0.0.1:3306/test".into());
    Opts::from_url(&url).unwrap()
}

async fn admin_conn() -> Conn {
    Conn::new(OptsBuilder::from_opts(base()).prefer_socket(false))
        .await
        .unwrap_or_else(|e| panic!("MariaDB at LEASH_TEST_MYSQL_URL is needed for this test: {e}"))
}

async fn login(user: &str, password: &str, db: &str) -> Result<Conn, mysql_async::Error> {
    let b = base();
    Conn::new(
        OptsBuilder::default()
            .ip_or_hostname(b.ip_or_hostname().to_owned())
            .tcp_port(b.tcp_port())
            .user(Some(user))
            .pass(Some(password))
            .db_name(Some(db))
            .prefer_socket(false),
    )
    .await
}

async fn user_exists(admin: &mut Conn, user: &str) -> bool {
    let n: Option<i64> = admin
        .exec_first("SELECT COUNT(*) FROM mysql.user WHERE User = ?", (user,))
        .await
        .unwrap();
    n.unwrap_or(0) > 0
}

fn server_code(e: &mysql_async::Error) -> u16 {
    match e {
        mysql_async::Error::Server(s) => s.code,
        other => panic!("not a server error: {other}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mariadb_credentials_work_expire_and_are_revoked() {
    let srv = TestServer::start().await;
    let mut admin = admin_conn().await;
    let tag = leash_types::random::base62(6).to_ascii_lowercase();
    let db = format!("leash_it_{tag}");
    for q in [
        format!("CREATE DATABASE `{db}`"),
        format!("CREATE TABLE `{db}`.t1 (x int)"),
        format!("INSERT INTO `{db}`.t1 VALUES (7)"),
    ] {
        admin.query_drop(q).await.unwrap();
    }
    let b = base();
    let (s, body) = srv
        .root(
            "POST",
            "sys/mounts/mysql",
            Some(json!({"type": "database"})),
        )
        .await;
    assert_eq!(s, 204, "{body}");
    let (s, body) = srv
        .root("POST", "mysql/config/maria", Some(json!({
            "plugin_name": "mysql-database-plugin",
            "connection_url": format!("{{{{username}}}}:{{{{password}}}}@tcp({}:{})/", b.ip_or_hostname(), b.tcp_port()),
            "username": b.user().unwrap_or("root"),
            "password": b.pass().unwrap_or_default(),
            "allowed_roles": ["ro"],
        })))
        .await;
    assert_eq!(s, 204, "{body}");
    let (s, body) = srv.root("GET", "mysql/config/maria", None).await;
    assert_eq!(s, 200);
    assert!(
        body["data"]["connection_details"]
            .get("password_authentication")
            .is_none(),
        "{body}"
    );
    let (s, body) = srv
        .root("POST", "mysql/roles/ro", Some(json!({
            "db_name": "maria",
            "creation_statements": format!("CREATE USER '{{{{name}}}}'@'%' IDENTIFIED BY '{{{{password}}}}'; GRANT SELECT ON `{db}`.* TO '{{{{name}}}}'@'%';"),
            "default_ttl": 3, "max_ttl": "1m",
        })))
        .await;
    assert_eq!(s, 204, "{body}");
    // password_authentication is PostgreSQL's.
    let (s, body) = srv
        .root(
            "POST",
            "mysql/config/maria",
            Some(json!({"password_authentication": "password"})),
        )
        .await;
    assert_eq!(s, 400, "{body}");

    // Issue two: one revoked by hand, one left to expire with a session open.
    let mut issued: Vec<(String, String, String)> = Vec::new();
    for _ in 0..2 {
        let (s, body) = srv.root("GET", "mysql/creds/ro", None).await;
        assert_eq!(s, 200, "{body}");
        let user = body["data"]["username"].as_str().unwrap().to_owned();
        assert!(user.len() <= 32 && user.starts_with("v-root-ro-"), "{user}");
        assert_eq!(body["lease_duration"], 3);
        issued.push((
            body["lease_id"].as_str().unwrap().to_owned(),
            user,
            body["data"]["password"].as_str().unwrap().to_owned(),
        ));
    }
    let (lease, user, password) = &issued[0];
    let mut c = login(user, password, &db).await.unwrap();
    let x: Option<i32> = c.query_first("SELECT x FROM t1").await.unwrap();
    assert_eq!(x, Some(7));
    let e = c.query_drop("INSERT INTO t1 VALUES (1)").await.unwrap_err();
    assert_eq!(server_code(&e), 1142, "INSERT command denied");
    let (s, body) = srv
        .root("PUT", &format!("sys/leases/revoke/{lease}"), None)
        .await;
    assert_eq!(s, 204, "{body}");
    assert!(!user_exists(&mut admin, user).await);
    assert!(
        c.query_drop("SELECT 1").await.is_err(),
        "its session was killed"
    );
    assert!(login(user, password, &db).await.is_err());

    let (_, user2, password2) = &issued[1];
    let mut c2 = login(user2, password2, &db).await.unwrap();
    c2.query_drop("SELECT 1").await.unwrap();
    eventually(
        "the expired MariaDB user is dropped",
        Duration::from_secs(20),
        || {
            let u = user2.clone();
            async move {
                let mut a = admin_conn().await;
                !user_exists(&mut a, &u).await
            }
        },
    )
    .await;
    assert!(
        c2.query_drop("SELECT 1").await.is_err(),
        "its session was killed"
    );

    // A role the connection does not allow is refused.
    let (s, body) = srv
        .root(
            "POST",
            "mysql/roles/other",
            Some(json!({
                "db_name": "maria",
                "creation_statements": "CREATE USER '{{name}}'@'%' IDENTIFIED BY '{{password}}';",
            })),
        )
        .await;
    assert_eq!(s, 200, "stored with a warning: {body}");
    assert!(
        body["warnings"][0]
            .as_str()
            .unwrap()
            .contains("allowed_roles"),
        "{body}"
    );
    let (s, body) = srv.root("GET", "mysql/creds/other", None).await;
    assert_eq!(s, 400);
    assert!(error(&body).contains("is not an allowed role"));
    admin
        .query_drop(format!("DROP DATABASE `{db}`"))
        .await
        .unwrap();
}

/// A crash between the two writes of a root rotation (the database already has the new
/// password, the stored configuration still the old one) is finished by the next
/// connection: the pending password, recorded before the database changed, is tried and
/// promoted. Without a working pending password the connection fails with the driver's
/// reason, never the password.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_interrupted_root_rotation_is_completed_on_reconnect() {
    let srv = TestServer::start().await;
    let mut admin = admin_conn().await;
    let tag = leash_types::random::base62(6).to_ascii_lowercase();
    let user = format!("leash_rot_{tag}");
    for q in [
        format!("CREATE USER '{user}'@'%' IDENTIFIED BY 'old-root-pw'"),
        format!("GRANT ALL ON *.* TO '{user}'@'%' WITH GRANT OPTION"),
    ] {
        admin.query_drop(q).await.unwrap();
    }
    let b = base();
    srv.root("POST", "sys/mounts/db", Some(json!({"type": "database"})))
        .await;
    let (s, body) = srv
        .root(
            "POST",
            "db/config/maria",
            Some(json!({
                "plugin_name": "mysql-database-plugin",
                "connection_url": format!("{{{{username}}}}:{{{{password}}}}@tcp({}:{})/", b.ip_or_hostname(), b.tcp_port()),
                "username": user, "password": "old-root-pw", "allowed_roles": "*",
            })),
        )
        .await;
    assert_eq!(s, 204, "{body}");

    // The crash: the database got the new password, storage recorded it only as pending.
    admin
        .query_drop(format!(
            "ALTER USER '{user}'@'%' IDENTIFIED BY 'new-root-pw'"
        ))
        .await
        .unwrap();
    let (_, mounts) = srv.root("GET", "sys/mounts", None).await;
    let ns = format!("mount/{}", mounts["data"]["db/"]["uuid"].as_str().unwrap());
    let stored = |v: serde_json::Value| serde_json::to_vec(&v).unwrap();
    let raw = srv.storage.get(&ns, "config/maria").await.unwrap().unwrap();
    let mut config: serde_json::Value = serde_json::from_slice(raw.as_slice()).unwrap();
    config["pending_password"] = json!("wrong-too");
    srv.storage
        .put(&ns, "config/maria", stored(config.clone()))
        .await
        .unwrap();
    let (s, body) = srv.root("POST", "db/reset/maria", None).await;
    assert_eq!(s, 502, "neither password works: {body}");
    let text = body.to_string();
    assert!(text.contains("Access denied"), "{text}");
    assert!(
        !text.contains("old-root-pw") && !text.contains("wrong-too"),
        "{text}"
    );

    config["pending_password"] = json!("new-root-pw");
    srv.storage
        .put(&ns, "config/maria", stored(config))
        .await
        .unwrap();
    let (s, body) = srv.root("POST", "db/reset/maria", None).await;
    assert_eq!(s, 204, "the pending password is tried and promoted: {body}");
    let raw = srv.storage.get(&ns, "config/maria").await.unwrap().unwrap();
    let config: serde_json::Value = serde_json::from_slice(raw.as_slice()).unwrap();
    assert_eq!(config["password"], "new-root-pw");
    assert!(config["pending_password"].is_null(), "{config}");
    assert!(
        !srv.root("GET", "db/config/maria", None)
            .await
            .1
            .to_string()
            .contains("new-root-pw")
    );

    admin
        .query_drop(format!("DROP USER '{user}'@'%'"))
        .await
        .unwrap();
}
