//! Request-time narrowing of database credentials (issue 17, part 2), against the real
//! PostgreSQL and MariaDB: a request names tables and privileges inside the role's
//! `narrowing`, and the user it gets holds exactly those; anything else is a 400 before
//! any user exists.

use leash_testkit::TestServer;
use mysql_async::prelude::Queryable;
use mysql_async::{Conn, OptsBuilder};
use serde_json::{Value, json};

use crate::database::PgScratch;
use crate::error;

const CREATE: &str =
    r#"CREATE ROLE "{{name}}" WITH LOGIN PASSWORD '{{password}}' VALID UNTIL '{{expiration}}';"#;

async fn pg_setup(srv: &TestServer, pg: &PgScratch) {
    let (s, b) = srv
        .root(
            "POST",
            "sys/mounts/database",
            Some(json!({"type": "database"})),
        )
        .await;
    assert_eq!(s, 204, "{b}");
    pg.configure(srv, "database", &pg.url()).await;
    let (s, b) = srv
        .root(
            "POST",
            "database/roles/reader",
            Some(json!({
                "db_name": "pg",
                "narrowing": {"schemas": ["public"], "tables": ["*"], "privileges": ["SELECT", "INSERT"]},
                "creation_statements": [CREATE, "{{grants}}"],
                "default_ttl": "10m",
            })),
        )
        .await;
    assert_eq!(s, 204, "{b}");
}

async fn sqlstate(c: &tokio_postgres::Client, sql: &str) -> String {
    match c.batch_execute(sql).await {
        Ok(()) => "ok".to_owned(),
        Err(e) => e.code().map(|c| c.code().to_owned()).unwrap_or_default(),
    }
}

/// Users of role `role` in the whole (shared) cluster: only a role name no other test
/// uses gives a count that concurrent tests cannot change.
async fn user_count(pg: &PgScratch, role: &str) -> usize {
    pg.admin
        .query(
            "SELECT 1 FROM pg_roles WHERE rolname LIKE $1",
            &[&format!("v-%-{role}-%")],
        )
        .await
        .unwrap()
        .len()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_postgres_credential_holds_exactly_the_tables_asked_for() {
    let pg = PgScratch::new().await;
    let srv = TestServer::start().await;
    pg_setup(&srv, &pg).await;

    let (s, b) = srv
        .root(
            "GET",
            "database/creds/reader?tables=public.t1&privileges=SELECT",
            None,
        )
        .await;
    assert_eq!(s, 200, "{b}");
    let user = b["data"]["username"].as_str().unwrap().to_owned();
    let password = b["data"]["password"].as_str().unwrap().to_owned();
    let lease = b["lease_id"].as_str().unwrap().to_owned();
    let c = pg.login(&user, &password).await;
    assert_eq!(sqlstate(&c, "SELECT * FROM public.t1").await, "ok");
    assert_eq!(sqlstate(&c, "SELECT * FROM public.t2").await, "42501");
    assert_eq!(
        sqlstate(&c, "INSERT INTO public.t1 VALUES (2)").await,
        "42501"
    );
    assert_eq!(sqlstate(&c, "SELECT * FROM other.secret").await, "42501");
    // The lease records the narrowed scope.
    let (s, b) = srv
        .root("PUT", "sys/leases/lookup", Some(json!({"lease_id": lease})))
        .await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["data"]["scope"], "SELECT on public.t1");

    // POST with a body works the same; no parameters grant the role's whole set.
    let (s, b) = srv
        .root(
            "POST",
            "database/creds/reader",
            Some(json!({"tables": ["public.t1", "t2"], "privileges": ["select"]})),
        )
        .await;
    assert_eq!(s, 200, "{b}");
    let c = pg
        .login(
            b["data"]["username"].as_str().unwrap(),
            b["data"]["password"].as_str().unwrap(),
        )
        .await;
    assert_eq!(sqlstate(&c, "SELECT * FROM public.t2").await, "ok");
    let (s, b) = srv.root("GET", "database/creds/reader", None).await;
    assert_eq!(s, 200, "{b}");
    let c = pg
        .login(
            b["data"]["username"].as_str().unwrap(),
            b["data"]["password"].as_str().unwrap(),
        )
        .await;
    assert_eq!(sqlstate(&c, "INSERT INTO public.t1 VALUES (3)").await, "ok");
    assert_eq!(sqlstate(&c, "DELETE FROM public.t1").await, "42501");
    drop(srv);
    pg.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_or_unknown_tables_are_refused_before_any_user_exists() {
    let pg = PgScratch::new().await;
    let srv = TestServer::start().await;
    pg_setup(&srv, &pg).await;
    // This test's own role (the other tests issue `reader` credentials meanwhile).
    let (s, b) = srv
        .root(
            "POST",
            "database/roles/hostile",
            Some(json!({
                "db_name": "pg",
                "narrowing": {"schemas": ["public"], "tables": ["*"], "privileges": ["SELECT", "INSERT"]},
                "creation_statements": [CREATE, "{{grants}}"],
                "default_ttl": "10m",
            })),
        )
        .await;
    assert_eq!(s, 204, "{b}");
    let before = user_count(&pg, "hostile").await;
    let many: Vec<String> = (0..10_000).map(|i| format!("public.t{i}")).collect();
    let cases: Vec<(Value, &str)> = vec![
        (
            json!({"tables": "public.t1; DROP TABLE public.t2"}),
            "tables[0]",
        ),
        (json!({"tables": ["public.\"t1\""]}), "tables[0]"),
        (json!({"tables": ["public.t1'--"]}), "tables[0]"),
        (json!({"tables": ["pg_catalog.pg_authid"]}), "tables[0]"),
        (json!({"tables": ["other.secret"]}), "tables[0]"),
        (
            json!({"tables": ["public.t1", "public.nosuch"]}),
            "tables[1]",
        ),
        (json!({"tables": many}), "tables"),
        (
            json!({"tables": "public.t1", "privileges": "DELETE"}),
            "privileges[0]",
        ),
        (
            json!({"tables": "public.t1", "privileges": "SELECT; DROP"}),
            "privileges[0]",
        ),
    ];
    for (body, named) in cases {
        let (s, b) = srv
            .root("POST", "database/creds/hostile", Some(body.clone()))
            .await;
        assert_eq!(s, 400, "{body}: {b}");
        assert!(error(&b).contains(named), "{body}: {b}");
    }
    assert_eq!(
        user_count(&pg, "hostile").await,
        before,
        "no role was created"
    );
    assert_eq!(srv.core_lease_count().await, 0, "no lease either");
    // The table survived.
    assert!(pg.db.query("SELECT * FROM public.t2", &[]).await.is_ok());
    // A role without narrowing refuses the parameters; {{grants}} needs narrowing.
    let (s, b) = srv
        .root(
            "POST",
            "database/roles/plain",
            Some(json!({"db_name": "pg", "creation_statements": [CREATE, "{{grants}}"]})),
        )
        .await;
    assert_eq!(s, 400, "{b}");
    let (s, b) = srv
        .root(
            "POST",
            "database/roles/reader2",
            Some(json!({"db_name": "pg", "creation_statements": [CREATE],
                        "narrowing": {"schemas": ["public"], "privileges": ["SELECT"]}})),
        )
        .await;
    assert_eq!(s, 400, "{b}");
    drop(srv);
    pg.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_policy_can_pin_what_an_agent_may_ask_for() {
    let pg = PgScratch::new().await;
    let srv = TestServer::start().await;
    pg_setup(&srv, &pg).await;
    srv.write_policy(
        "metrics-agent",
        r#"path "database/creds/reader" {
  capabilities = ["read"]
  allowed_parameters = {
    "tables"     = ["public.t1"]
    "privileges" = ["SELECT"]
  }
}"#,
    )
    .await;
    let tok = srv.token_with(&["metrics-agent"]).await;
    let (s, b) = srv
        .call(
            "GET",
            "database/creds/reader?tables=public.t1&privileges=SELECT",
            Some(&tok),
            None,
        )
        .await;
    assert_eq!(s, 200, "{b}");
    for q in [
        "tables=public.t2&privileges=SELECT",
        "tables=public.t1&privileges=INSERT",
    ] {
        let (s, b) = srv
            .call(
                "GET",
                &format!("database/creds/reader?{q}"),
                Some(&tok),
                None,
            )
            .await;
        assert_eq!(s, 403, "{q}: {b}");
    }
    drop(srv);
    pg.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mariadb_credential_holds_exactly_the_tables_asked_for() {
    let b = crate::database_mysql::base();
    let mut admin = Conn::new(OptsBuilder::from_opts(b.clone()).prefer_socket(false))
        .await
        .unwrap_or_else(|e| panic!("MariaDB at LEASH_TEST_MYSQL_URL is needed: {e}"));
    let tag = leash_types::random::base62(6).to_ascii_lowercase();
    let db = format!("leash_nr_{tag}");
    for q in [
        format!("CREATE DATABASE `{db}`"),
        format!("CREATE TABLE `{db}`.t1 (x int)"),
        format!("CREATE TABLE `{db}`.t2 (y int)"),
        format!("INSERT INTO `{db}`.t1 VALUES (7)"),
    ] {
        admin.query_drop(q).await.unwrap();
    }
    let srv = TestServer::start().await;
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
            "allowed_roles": "*",
        })))
        .await;
    assert_eq!(s, 204, "{body}");
    let (s, body) = srv
        .root("POST", "mysql/roles/reader", Some(json!({
            "db_name": "maria",
            "narrowing": {"schemas": [db], "tables": ["*"], "privileges": ["SELECT", "INSERT"]},
            "creation_statements": ["CREATE USER '{{name}}'@'%' IDENTIFIED BY '{{password}}';", "{{grants}}"],
        })))
        .await;
    assert_eq!(s, 204, "{body}");
    let (s, body) = srv
        .root(
            "GET",
            &format!("mysql/creds/reader?tables={db}.t1&privileges=SELECT"),
            None,
        )
        .await;
    assert_eq!(s, 200, "{body}");
    let user = body["data"]["username"].as_str().unwrap().to_owned();
    let password = body["data"]["password"].as_str().unwrap().to_owned();
    let mut c = Conn::new(
        OptsBuilder::default()
            .ip_or_hostname(b.ip_or_hostname().to_owned())
            .tcp_port(b.tcp_port())
            .user(Some(user.clone()))
            .pass(Some(password))
            .db_name(Some(db.clone()))
            .prefer_socket(false),
    )
    .await
    .unwrap();
    let x: Option<i32> = c.query_first("SELECT x FROM t1").await.unwrap();
    assert_eq!(x, Some(7));
    assert!(
        c.query_drop("SELECT y FROM t2").await.is_err(),
        "t2 is not granted"
    );
    assert!(
        c.query_drop("INSERT INTO t1 VALUES (1)").await.is_err(),
        "INSERT is not granted"
    );
    drop(c);
    let (s, body) = srv
        .root(
            "GET",
            &format!("mysql/creds/reader?tables={db}.nosuch"),
            None,
        )
        .await;
    assert_eq!(s, 400, "{body}");
    let (s, body) = srv
        .root("GET", "mysql/creds/reader?tables=mysql.user", None)
        .await;
    assert_eq!(s, 400, "{body}");
    let (s, _) = srv
        .root("PUT", "sys/leases/revoke-prefix/mysql/", None)
        .await;
    assert_eq!(s, 204);
    admin
        .query_drop(format!("DROP DATABASE `{db}`"))
        .await
        .unwrap();
}
