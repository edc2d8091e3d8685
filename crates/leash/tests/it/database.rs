//! `database/` against the real PostgreSQL and MariaDB of this machine, and the lease
//! lifecycle of what it issues (`sys/leases/*`, expiry, token cascade, target outage).
//!
//! Each test makes its own database (or schema objects) and role names, and drops
//! every role that starts with its prefix at the end, so tests run in parallel.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use leash_testkit::TestServer;
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_postgres::{Client, NoTls};

use crate::{client_token, create_token, error, eventually};

const ISSUE_ROLE_CREATION: [&str; 2] = [
    "CREATE ROLE \"{{name}}\" WITH LOGIN PASSWORD '{{password}}' VALID UNTIL '{{expiration}}';",
    "GRANT SELECT ON ALL TABLES IN SCHEMA public TO \"{{name}}\";",
];

pub(crate) fn pg_admin_url() -> String {
    std::env::var("LEASH_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgresql://postgres@127.0.0.1:5432/postgres".into())
}

/// `host:port` of the test PostgreSQL (from `LEASH_TEST_POSTGRES_URL`), for URLs the
/// tests build.
pub(crate) fn pg_host_port() -> String {
    let c: tokio_postgres::Config = pg_admin_url()
        .parse()
        .expect("LEASH_TEST_POSTGRES_URL is a PostgreSQL URL");
    let host = match c.get_hosts().first() {
        Some(tokio_postgres::config::Host::Tcp(h)) => h.clone(),
        _ => "127.0.0.1".to_owned(),
    };
    format!("{host}:{}", c.get_ports().first().copied().unwrap_or(5432))
}

/// `key=value` connection string to database `name` as the admin user.
pub(crate) fn pg_db_conn(name: &str) -> String {
    let c: tokio_postgres::Config = pg_admin_url().parse().unwrap();
    let hp = pg_host_port();
    let (host, port) = hp.rsplit_once(':').unwrap();
    format!(
        "host={host} port={port} user={} dbname={name}",
        c.get_user().unwrap_or("postgres")
    )
}

pub(crate) async fn pg_connect(url: &str) -> Client {
    let (client, conn) = tokio_postgres::connect(url, NoTls)
        .await
        .unwrap_or_else(|e| panic!("PostgreSQL at {url} is needed for this test: {e}"));
    tokio::spawn(async move {
        let _ = conn.await;
    });
    client
}

/// A scratch PostgreSQL database with `public.t1` (readable), `public.t2` and
/// `other.secret`, and a unique role name whose credentials all start with
/// `v-<display>-<role>-`.
pub(crate) struct PgScratch {
    pub(crate) admin: Client,
    pub(crate) db: Client,
    pub(crate) name: String,
    pub(crate) role: String,
}

impl PgScratch {
    pub(crate) async fn new() -> PgScratch {
        let admin = pg_connect(&pg_admin_url()).await;
        let tag = leash_types::random::base62(6).to_ascii_lowercase();
        let name = format!("leash_it_{tag}");
        admin
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .await
            .unwrap();
        let db = pg_connect(&pg_db_conn(&name)).await;
        db.batch_execute(
            "CREATE TABLE public.t1 (x int); INSERT INTO public.t1 VALUES (1);
             CREATE TABLE public.t2 (y text);
             CREATE SCHEMA other; CREATE TABLE other.secret (z int);",
        )
        .await
        .unwrap();
        PgScratch {
            admin,
            db,
            name,
            role: format!("r{}", &tag[..6]),
        }
    }

    /// The same scratch database over new connections (after a server restart).
    pub(crate) async fn reconnect(self) -> PgScratch {
        let admin = pg_connect(&pg_admin_url()).await;
        let db = pg_connect(&pg_db_conn(&self.name)).await;
        PgScratch {
            admin,
            db,
            name: self.name,
            role: self.role,
        }
    }

    pub(crate) fn url(&self) -> String {
        format!(
            "postgresql://{{{{username}}}}:{{{{password}}}}@{}/{}?sslmode=disable",
            pg_host_port(),
            self.name
        )
    }

    /// Mounts `database/` (at `mount`), configures `pg` and the issue's role.
    pub(crate) async fn setup(&self, srv: &TestServer, mount: &str, extra_role: Value) {
        let (s, b) = srv
            .root(
                "POST",
                &format!("sys/mounts/{mount}"),
                Some(json!({"type": "database"})),
            )
            .await;
        assert_eq!(s, 204, "{b}");
        self.configure(srv, mount, &self.url()).await;
        let mut role = json!({
            "db_name": "pg",
            "creation_statements": ISSUE_ROLE_CREATION,
            "revocation_statements": ["DROP ROLE IF EXISTS \"{{name}}\";"],
            "default_ttl": "15m",
            "max_ttl": "1h",
        });
        for (k, v) in extra_role.as_object().unwrap() {
            role[k] = v.clone();
        }
        let (s, b) = srv
            .root("POST", &format!("{mount}/roles/{}", self.role), Some(role))
            .await;
        assert!(s == 204 || s == 200, "{b}");
    }

    pub(crate) async fn configure(&self, srv: &TestServer, mount: &str, url: &str) {
        let (s, b) = srv
            .root(
                "POST",
                &format!("{mount}/config/pg"),
                Some(json!({
                    "plugin_name": "postgresql-database-plugin",
                    "connection_url": url,
                    "username": "postgres",
                    "password": "root-password-not-checked-under-trust",
                    "allowed_roles": "*",
                })),
            )
            .await;
        assert_eq!(s, 204, "{b}");
    }

    pub(crate) async fn role_exists(&self, user: &str) -> bool {
        self.admin
            .query_opt("SELECT 1 FROM pg_roles WHERE rolname = $1", &[&user])
            .await
            .unwrap()
            .is_some()
    }

    /// Roles in the cluster made for this test's role.
    pub(crate) async fn our_roles(&self) -> Vec<String> {
        let like = format!("v-%-{}-%", self.role);
        self.admin
            .query(
                "SELECT rolname::text FROM pg_roles WHERE rolname LIKE $1",
                &[&like],
            )
            .await
            .unwrap()
            .iter()
            .map(|r| r.get(0))
            .collect()
    }

    pub(crate) async fn login(&self, user: &str, password: &str) -> Client {
        pg_connect(&format!(
            "postgresql://{user}:{password}@{}/{}?sslmode=disable",
            pg_host_port(),
            self.name
        ))
        .await
    }

    pub(crate) async fn cleanup(self) {
        drop(self.db);
        self.admin
            .batch_execute(&format!(
                "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                self.name
            ))
            .await
            .unwrap();
        let like = format!("v-%-{}-%", self.role);
        for r in self
            .admin
            .query(
                "SELECT rolname::text FROM pg_roles WHERE rolname LIKE $1",
                &[&like],
            )
            .await
            .unwrap()
        {
            let role: String = r.get(0);
            let _ = self
                .admin
                .batch_execute(&format!("DROP ROLE IF EXISTS \"{role}\""))
                .await;
        }
    }
}

fn creds(b: &Value) -> (String, String, String) {
    (
        b["lease_id"].as_str().unwrap().to_owned(),
        b["data"]["username"].as_str().unwrap().to_owned(),
        b["data"]["password"].as_str().unwrap().to_owned(),
    )
}

async fn sqlstate(c: &Client, sql: &str) -> String {
    let e = c.batch_execute(sql).await.unwrap_err();
    e.as_db_error()
        .map(|d| d.code().code().to_owned())
        .unwrap_or_else(|| e.to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issued_postgres_credential_reads_public_and_nothing_else() {
    let srv = TestServer::start().await;
    let pg = PgScratch::new().await;
    pg.setup(&srv, "database", json!({})).await;
    srv.write_policy(
        "agent",
        &format!(
            r#"path "database/creds/{}" {{ capabilities = ["read"] }}"#,
            pg.role
        ),
    )
    .await;
    let agent = srv.token_with(&["agent"]).await;

    let (s, b) = srv
        .call(
            "GET",
            &format!("database/creds/{}", pg.role),
            Some(&agent),
            None,
        )
        .await;
    assert_eq!(s, 200, "{b}");
    let (lease_id, user, password) = creds(&b);
    assert!(
        lease_id.starts_with(&format!("database/creds/{}/", pg.role)),
        "{lease_id}"
    );
    assert_eq!(b["lease_duration"], 900);
    assert_eq!(b["renewable"], true);
    assert!(
        user.len() <= 63 && user.starts_with("v-token-") && user.contains(&pg.role),
        "{user}"
    );
    assert!(password.len() >= 20);

    let c = pg.login(&user, &password).await;
    let n: i32 = c
        .query_one("SELECT x FROM public.t1", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 1);
    assert_eq!(
        sqlstate(&c, "INSERT INTO public.t1 VALUES (2)").await,
        "42501"
    );
    assert_eq!(
        sqlstate(&c, "CREATE TABLE public.mine (x int)").await,
        "42501"
    );
    assert_eq!(sqlstate(&c, "SELECT * FROM other.secret").await, "42501");

    // The lease is visible and carries the role's TTL.
    let (s, b) = srv
        .root(
            "PUT",
            "sys/leases/lookup",
            Some(json!({"lease_id": lease_id})),
        )
        .await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["data"]["id"], lease_id.as_str());
    assert_eq!(b["data"]["renewable"], true);
    assert_eq!(b["data"]["state"], "active");
    let ttl = b["data"]["ttl"].as_i64().unwrap();
    assert!((890..=900).contains(&ttl), "{ttl}");
    let (s, b) = srv
        .root(
            "LIST",
            &format!("sys/leases/lookup/database/creds/{}/", pg.role),
            None,
        )
        .await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(
        b["data"]["keys"],
        json!([lease_id.rsplit('/').next().unwrap()])
    );
    let (s, b) = srv.root("LIST", "sys/leases/lookup/database/", None).await;
    assert_eq!((s, &b["data"]["keys"]), (200, &json!(["creds/"])), "{b}");
    // Listing needs sudo: the agent may not enumerate leases.
    let (s, _) = srv
        .call("LIST", "sys/leases/lookup/database/", Some(&agent), None)
        .await;
    assert_eq!(s, 403);

    // Revocation ends the open session and drops the role.
    let (s, b) = srv
        .root(
            "PUT",
            "sys/leases/revoke",
            Some(json!({"lease_id": lease_id})),
        )
        .await;
    assert_eq!(s, 204, "{b}");
    assert!(!pg.role_exists(&user).await);
    assert!(
        c.simple_query("SELECT 1").await.is_err(),
        "session must be ended"
    );
    let (s, b) = srv
        .root(
            "PUT",
            "sys/leases/lookup",
            Some(json!({"lease_id": lease_id})),
        )
        .await;
    assert_eq!((s, error(&b)), (400, "invalid lease".to_owned()));
    pg.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sixteen_concurrent_issuances_all_succeed() {
    let srv = Arc::new(TestServer::start().await);
    let pg = PgScratch::new().await;
    pg.setup(&srv, "database", json!({})).await;
    let mut tasks = Vec::new();
    for _ in 0..16 {
        let srv = Arc::clone(&srv);
        let path = format!("database/creds/{}", pg.role);
        tasks.push(tokio::spawn(
            async move { srv.root("GET", &path, None).await },
        ));
    }
    let mut users = std::collections::HashSet::new();
    for t in tasks {
        let (s, b) = t.await.unwrap();
        assert_eq!(s, 200, "{b}");
        users.insert(creds(&b).1);
    }
    assert_eq!(users.len(), 16);
    assert_eq!(pg.our_roles().await.len(), 16);
    let (s, b) = srv
        .root(
            "PUT",
            &format!("sys/leases/revoke-prefix/database/creds/{}", pg.role),
            None,
        )
        .await;
    assert_eq!(s, 204, "{b}");
    assert!(pg.our_roles().await.is_empty());
    pg.cleanup().await;
}

async fn valid_until(pg: &PgScratch, user: &str) -> i64 {
    pg.admin
        .query_one(
            "SELECT extract(epoch FROM rolvaliduntil)::bigint FROM pg_roles WHERE rolname = $1",
            &[&user],
        )
        .await
        .unwrap()
        .get(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn renew_moves_valid_until_and_stops_at_max_ttl() {
    let srv = TestServer::start().await;
    let pg = PgScratch::new().await;
    pg.setup(
        &srv,
        "database",
        json!({"default_ttl": 60, "max_ttl": "2m"}),
    )
    .await;
    let (s, b) = srv
        .root("GET", &format!("database/creds/{}", pg.role), None)
        .await;
    assert_eq!(s, 200, "{b}");
    let (lease_id, user, _) = creds(&b);
    assert_eq!(b["lease_duration"], 60);
    let before = valid_until(&pg, &user).await;

    let (s, b) = srv
        .root(
            "PUT",
            "sys/leases/renew",
            Some(json!({"lease_id": lease_id, "increment": 90})),
        )
        .await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["lease_id"], lease_id.as_str());
    let d = b["lease_duration"].as_i64().unwrap();
    assert!((88..=90).contains(&d), "{b}");
    assert!(
        valid_until(&pg, &user).await >= before + 25,
        "VALID UNTIL moved"
    );

    // Past max_ttl: capped, with Vault's warning.
    let (s, b) = srv
        .root(
            "PUT",
            "sys/leases/renew",
            Some(json!({"lease_id": lease_id, "increment": "1h"})),
        )
        .await;
    assert_eq!(s, 200, "{b}");
    let d = b["lease_duration"].as_i64().unwrap();
    assert!((110..=120).contains(&d), "{b}");
    assert!(
        b["warnings"][0].as_str().unwrap().contains("max_ttl"),
        "{b}"
    );

    let (s, b) = srv
        .root(
            "PUT",
            "sys/leases/renew",
            Some(json!({"lease_id": "database/creds/nope/x"})),
        )
        .await;
    assert_eq!((s, error(&b)), (400, "lease not found".to_owned()));
    srv.root("PUT", &format!("sys/leases/revoke/{lease_id}"), None)
        .await;
    assert!(!pg.role_exists(&user).await);
    pg.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_lease_is_revoked_with_its_open_session() {
    let srv = TestServer::start().await;
    let pg = PgScratch::new().await;
    pg.setup(&srv, "database", json!({"default_ttl": 2, "max_ttl": 10}))
        .await;
    let (s, b) = srv
        .root("GET", &format!("database/creds/{}", pg.role), None)
        .await;
    assert_eq!(s, 200, "{b}");
    let (lease_id, user, password) = creds(&b);
    let c = pg.login(&user, &password).await;
    c.simple_query("SELECT 1").await.unwrap();
    eventually(
        "the expired credential is dropped",
        Duration::from_secs(20),
        || async { !pg.role_exists(&user).await },
    )
    .await;
    assert!(
        c.simple_query("SELECT 1").await.is_err(),
        "session must be ended"
    );
    // The role is dropped first, then the lease record deleted: wait for both.
    eventually(
        "the lease is gone once revoked",
        Duration::from_secs(10),
        || async {
            let (s, _) = srv
                .root(
                    "PUT",
                    "sys/leases/lookup",
                    Some(json!({"lease_id": lease_id})),
                )
                .await;
            s == 400
        },
    )
    .await;
    pg.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoking_a_token_revokes_the_leases_of_its_whole_tree() {
    let srv = TestServer::start().await;
    let pg = PgScratch::new().await;
    pg.setup(&srv, "database", json!({})).await;
    srv.write_policy(
        "agent",
        &format!(
            r#"path "database/creds/{}" {{ capabilities = ["read"] }}
path "auth/token/create" {{ capabilities = ["update"] }}"#,
            pg.role
        ),
    )
    .await;
    let parent = client_token(&create_token(&srv, json!({"policies": ["agent"]})).await);
    let (s, b) = srv
        .call(
            "POST",
            "auth/token/create",
            Some(&parent),
            Some(json!({"policies": ["agent"]})),
        )
        .await;
    assert_eq!(s, 200, "{b}");
    let child = client_token(&b["auth"]);
    let mut users = Vec::new();
    for t in [&parent, &child] {
        let (s, b) = srv
            .call("GET", &format!("database/creds/{}", pg.role), Some(t), None)
            .await;
        assert_eq!(s, 200, "{b}");
        users.push(creds(&b).1);
    }
    let (s, b) = srv
        .root("POST", "auth/token/revoke", Some(json!({"token": parent})))
        .await;
    assert_eq!(s, 204, "{b}");
    eventually(
        "the tree's credentials are dropped",
        Duration::from_secs(15),
        || async { pg.our_roles().await.is_empty() },
    )
    .await;
    assert_eq!(srv.core_lease_count().await, 0);
    pg.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lease_never_outlives_its_token() {
    let srv = TestServer::start().await;
    let pg = PgScratch::new().await;
    pg.setup(&srv, "database", json!({})).await;
    let short =
        client_token(&create_token(&srv, json!({"policies": ["root"], "ttl": "30s"})).await);
    let (s, b) = srv
        .call(
            "GET",
            &format!("database/creds/{}", pg.role),
            Some(&short),
            None,
        )
        .await;
    assert_eq!(s, 200, "{b}");
    let d = b["lease_duration"].as_i64().unwrap();
    assert!((28..=30).contains(&d), "capped by the token's 30s: {b}");
    let (s, b) = srv
        .call(
            "PUT",
            "sys/leases/renew",
            Some(&short),
            Some(json!({"lease_id": b["lease_id"], "increment": "1h"})),
        )
        .await;
    assert_eq!(s, 200, "{b}");
    assert!(b["lease_duration"].as_i64().unwrap() <= 30, "{b}");
    srv.root(
        "PUT",
        &format!("sys/leases/revoke-prefix/database/creds/{}", pg.role),
        None,
    )
    .await;
    pg.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_definitions_are_refused_with_clear_messages() {
    let srv = TestServer::start().await;
    let pg = PgScratch::new().await;
    pg.setup(&srv, "database", json!({})).await;
    let role = |extra: Value| {
        let mut r = json!({
            "db_name": "pg",
            "creation_statements": ISSUE_ROLE_CREATION,
            "default_ttl": "15m", "max_ttl": "1h",
        });
        for (k, v) in extra.as_object().unwrap() {
            r[k] = v.clone();
        }
        r
    };
    for (body, want) in [
        (role(json!({"db_name": "nope"})), "unknown db_name \"nope\""),
        (
            role(json!({"creation_statements": ["CREATE ROLE \"{{name}}\" {{nope}};"]})),
            "creation_statements[0]: unknown placeholder {{nope}}",
        ),
        (
            role(json!({"creation_statements": ["CREATE ROLE \"{{name}}\" {{name"]})),
            "creation_statements[0]: unterminated placeholder",
        ),
        (
            role(
                json!({"revocation_statements": ["ALTER ROLE \"{{name}}\" PASSWORD '{{password}}'"]}),
            ),
            "{{password}} is not available in revocation_statements",
        ),
        (
            role(json!({"default_ttl": "2h"})),
            "default_ttl (7200s) cannot be greater than max_ttl (3600s)",
        ),
        (
            role(json!({"default_ttl": "15 minutes"})),
            "invalid value for field \"default_ttl\"",
        ),
        (
            json!({"db_name": "pg"}),
            "missing required field \"creation_statements\"",
        ),
        (
            json!({"creation_statements": ISSUE_ROLE_CREATION}),
            "missing required field \"db_name\"",
        ),
    ] {
        let (s, b) = srv
            .root("POST", "database/roles/bad", Some(body.clone()))
            .await;
        assert_eq!(s, 400, "{body} -> {b}");
        assert!(error(&b).contains(want), "{body}: {b}");
    }
    let (s, _) = srv.root("GET", "database/roles/bad", None).await;
    assert_eq!(s, 404, "nothing stored");

    // Connections: the driver's reason, never the password.
    let (s, b) = srv
        .root(
            "POST",
            "database/config/down",
            Some(json!({
                "plugin_name": "postgresql-database-plugin",
                "connection_url": "postgresql://{{username}}:{{password}}@127.0.0.1:1/x",
                "username": "postgres", "password": "s3cret-root-pw", "allowed_roles": "*",
            })),
        )
        .await;
    assert_eq!(s, 400, "{b}");
    let e = error(&b);
    assert!(
        e.contains("error creating database object") && e.contains("Connection refused"),
        "the driver's reason: {e}"
    );
    assert!(!b.to_string().contains("s3cret-root-pw"), "{b}");
    let (s, b) = srv
        .root(
            "POST",
            "database/config/x",
            Some(json!({"plugin_name": "oracle-database-plugin", "connection_url": "x"})),
        )
        .await;
    assert_eq!(s, 400);
    assert!(error(&b).contains("unsupported plugin_name"), "{b}");
    let (s, b) = srv
        .root(
            "POST",
            "database/config/x",
            Some(json!({"plugin_name": "postgresql-database-plugin"})),
        )
        .await;
    assert_eq!(
        (s, error(&b)),
        (400, "missing required field \"connection_url\"".to_owned())
    );
    // A role the connection does not allow.
    let (s, b) = srv
        .root(
            "POST",
            "database/config/pg",
            Some(json!({"allowed_roles": ["someone-else"]})),
        )
        .await;
    assert_eq!(s, 204, "{b}");
    let (s, b) = srv
        .root("GET", &format!("database/creds/{}", pg.role), None)
        .await;
    assert_eq!(s, 400);
    assert!(error(&b).contains("is not an allowed role"), "{b}");
    let (s, b) = srv.root("GET", "database/creds/missing", None).await;
    assert_eq!((s, error(&b)), (400, "unknown role: missing".to_owned()));
    pg.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn config_and_role_reads_follow_vault_and_hide_the_password() {
    let srv = TestServer::start().await;
    let pg = PgScratch::new().await;
    pg.setup(&srv, "db", json!({})).await;
    let (s, b) = srv.root("GET", "db/config/pg", None).await;
    assert_eq!(s, 200, "{b}");
    let d = &b["data"];
    assert_eq!(d["plugin_name"], "postgresql-database-plugin");
    assert_eq!(d["connection_details"]["username"], "postgres");
    assert_eq!(d["connection_details"]["connection_url"], pg.url().as_str());
    assert_eq!(
        d["connection_details"]["password_authentication"],
        "scram-sha-256"
    );
    assert_eq!(d["allowed_roles"], json!(["*"]));
    assert!(!b.to_string().contains("root-password-not-checked"), "{b}");
    let (s, b) = srv.root("LIST", "db/config", None).await;
    assert_eq!((s, &b["data"]["keys"]), (200, &json!(["pg"])));

    let (s, b) = srv
        .root("GET", &format!("db/roles/{}", pg.role), None)
        .await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["data"]["db_name"], "pg");
    assert_eq!(b["data"]["creation_statements"], json!(ISSUE_ROLE_CREATION));
    assert_eq!(b["data"]["default_ttl"], 900);
    assert_eq!(b["data"]["max_ttl"], 3600);
    assert!(
        b["warnings"][0].as_str().unwrap().contains("group role"),
        "direct table grants draw the scaling warning: {b}"
    );
    let (s, b) = srv.root("LIST", "db/roles", None).await;
    assert_eq!((s, &b["data"]["keys"]), (200, &json!([pg.role])));

    // The group-role pattern draws no warning, and its credentials work.
    let group = format!("{}_readers", pg.role);
    pg.admin
        .batch_execute(&format!("CREATE ROLE {group} NOLOGIN"))
        .await
        .unwrap();
    pg.db
        .batch_execute(&format!(
            "GRANT SELECT ON ALL TABLES IN SCHEMA public TO {group}"
        ))
        .await
        .unwrap();
    let (s, b) = srv
        .root("POST", &format!("db/roles/{}g", pg.role), Some(json!({
            "db_name": "pg",
            "creation_statements": format!("CREATE ROLE \"{{{{name}}}}\" WITH LOGIN PASSWORD '{{{{password}}}}' VALID UNTIL '{{{{expiration}}}}' IN ROLE {group};"),
        })))
        .await;
    assert_eq!(s, 204, "{b}");
    let (s, b) = srv
        .root("GET", &format!("db/roles/{}g", pg.role), None)
        .await;
    assert_eq!((s, &b["warnings"]), (200, &Value::Null), "{b}");
    let (s, b) = srv
        .root("GET", &format!("db/creds/{}g", pg.role), None)
        .await;
    assert_eq!(s, 200, "{b}");
    let (_, user, password) = creds(&b);
    let c = pg.login(&user, &password).await;
    c.query_one("SELECT x FROM public.t1", &[]).await.unwrap();
    // Disabling the mount revokes what it issued.
    let (s, b) = srv.root("DELETE", "sys/mounts/db", None).await;
    assert_eq!(s, 204, "{b}");
    assert!(!pg.role_exists(&user).await);
    assert_eq!(srv.core_lease_count().await, 0);
    pg.admin
        .batch_execute(&format!("DROP ROLE {group}"))
        .await
        .ok();
    pg.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotate_root_and_reset_keep_the_connection_working() {
    let srv = TestServer::start().await;
    let pg = PgScratch::new().await;
    let admin_user = format!("v-x-{}-admin", pg.role);
    pg.admin
        .batch_execute(&format!("CREATE ROLE \"{admin_user}\" WITH LOGIN CREATEROLE PASSWORD 'initial'; GRANT ALL ON DATABASE {} TO \"{admin_user}\"", pg.name))
        .await
        .unwrap();
    pg.db
        .batch_execute(&format!(
            "GRANT SELECT ON ALL TABLES IN SCHEMA public TO \"{admin_user}\" WITH GRANT OPTION"
        ))
        .await
        .unwrap();
    srv.root(
        "POST",
        "sys/mounts/database",
        Some(json!({"type": "database"})),
    )
    .await;
    let (s, b) = srv
        .root(
            "POST",
            "database/config/pg",
            Some(json!({
                "plugin_name": "postgresql-database-plugin",
                "connection_url": pg.url(),
                "username": admin_user, "password": "initial", "allowed_roles": "*",
            })),
        )
        .await;
    assert_eq!(s, 204, "{b}");
    let before = stored_password(&pg, &admin_user).await;
    let (s, b) = srv.root("POST", "database/rotate-root/pg", None).await;
    assert_eq!(s, 204, "{b}");
    let after = stored_password(&pg, &admin_user).await;
    assert_ne!(before, after, "the root password changed");
    assert!(after.starts_with("SCRAM-SHA-256$"));
    let (s, b) = srv.root("POST", "database/reset/pg", None).await;
    assert_eq!(s, 204, "{b}");
    let (s, b) = srv.root("POST", "database/reset/missing", None).await;
    assert_eq!(s, 400, "{b}");
    let (s, b) = srv
        .root("POST", &format!("database/roles/{}", pg.role), Some(json!({
            "db_name": "pg",
            "creation_statements": "CREATE ROLE \"{{name}}\" WITH LOGIN PASSWORD '{{password}}';",
        })))
        .await;
    assert_eq!(s, 204, "{b}");
    let (s, b) = srv
        .root("GET", &format!("database/creds/{}", pg.role), None)
        .await;
    assert_eq!(s, 200, "issuing still works after rotation: {b}");
    let (s, b) = srv
        .root(
            "PUT",
            &format!("sys/leases/revoke-prefix/database/creds/{}", pg.role),
            None,
        )
        .await;
    assert_eq!(s, 204, "a CREATEROLE (not superuser) root revokes too: {b}");
    assert_eq!(
        pg.our_roles().await,
        vec![admin_user],
        "only the root user is left"
    );
    pg.cleanup().await;
}

async fn stored_password(pg: &PgScratch, user: &str) -> String {
    pg.admin
        .query_one(
            "SELECT rolpassword FROM pg_authid WHERE rolname = $1",
            &[&user],
        )
        .await
        .unwrap()
        .get(0)
}

/// A TCP forwarder to PostgreSQL that can be taken down (existing connections cut,
/// new ones refused) and brought back: a target outage without stopping the server
/// other tests share.
pub(crate) struct Outage {
    pub(crate) addr: std::net::SocketAddr,
    up: Arc<AtomicBool>,
    conns: Arc<std::sync::Mutex<Vec<JoinHandle<()>>>>,
    _task: JoinHandle<()>,
}

impl Outage {
    pub(crate) async fn start(target: &str) -> Outage {
        let target = target.to_owned();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let up = Arc::new(AtomicBool::new(true));
        let conns: Arc<std::sync::Mutex<Vec<JoinHandle<()>>>> = Arc::default();
        let (u, c) = (Arc::clone(&up), Arc::clone(&conns));
        let task = tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                if !u.load(Ordering::SeqCst) {
                    drop(inbound);
                    continue;
                }
                let target = target.clone();
                let h = tokio::spawn(async move {
                    if let Ok(mut out) = tokio::net::TcpStream::connect(target.as_str()).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut out).await;
                    }
                });
                c.lock().unwrap().push(h);
            }
        });
        Outage {
            addr,
            up,
            conns,
            _task: task,
        }
    }

    pub(crate) fn down(&self) {
        self.up.store(false, Ordering::SeqCst);
        for h in self.conns.lock().unwrap().drain(..) {
            h.abort();
        }
    }

    pub(crate) fn up(&self) {
        self.up.store(true, Ordering::SeqCst);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revocation_survives_a_target_outage_and_never_drops_a_lease() {
    let srv = TestServer::start().await;
    let pg = PgScratch::new().await;
    let proxy = Outage::start(&pg_host_port()).await;
    let log = srv.dir.join("audit.log");
    let (s, b) = srv
        .root(
            "PUT",
            "sys/audit/file",
            Some(json!({"type": "file", "options": {"file_path": log.display().to_string()}})),
        )
        .await;
    assert_eq!(s, 204, "{b}");
    pg.setup(&srv, "database", json!({"default_ttl": 2, "max_ttl": 60}))
        .await;
    pg.configure(
        &srv,
        "database",
        &format!(
            "postgresql://{{{{username}}}}:{{{{password}}}}@{}/{}?sslmode=disable&connect_timeout=2",
            proxy.addr, pg.name
        ),
    )
    .await;
    let mut users = Vec::new();
    for _ in 0..5 {
        let (s, b) = srv
            .root("GET", &format!("database/creds/{}", pg.role), None)
            .await;
        assert_eq!(s, 200, "{b}");
        users.push(creds(&b).1);
    }
    proxy.down();
    // The leases expire while the target is unreachable: each revocation fails, is
    // recorded with its error, and the lease stays.
    eventually(
        "every lease is listed as failing",
        Duration::from_secs(20),
        || async {
            let (s, b) = srv.root("GET", "sys/leases/failing", None).await;
            s == 200 && b["data"]["count"] == 5
        },
    )
    .await;
    let (_, b) = srv.root("GET", "sys/leases/failing", None).await;
    let first = &b["data"]["leases"][0];
    assert!(first["attempts"].as_u64().unwrap() >= 1, "{b}");
    assert_eq!(first["state"], "revoking");
    let err = first["last_error"].as_str().unwrap();
    assert!(err.contains("database \"pg\""), "{err}");
    assert!(!b.to_string().contains("root-password-not-checked"), "{b}");
    let (s, b) = srv
        .root(
            "PUT",
            "sys/leases/lookup",
            Some(json!({"lease_id": first["lease_id"]})),
        )
        .await;
    assert_eq!(s, 200, "{b}");
    assert!(b["data"]["last_error"].is_string() && b["data"]["next_attempt_time"].is_string());
    for u in &users {
        assert!(
            pg.role_exists(u).await,
            "still there while the target is down"
        );
    }
    // Each failure is audited, without secrets.
    let audit = std::fs::read_to_string(&log).unwrap();
    let failures: Vec<Value> = audit
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .filter(|e| e["event"] == "revocation-failed")
        .collect();
    assert!(failures.len() >= 5, "{audit}");
    assert!(
        failures[0]["error"]
            .as_str()
            .unwrap()
            .contains("database \"pg\"")
    );
    assert!(
        failures[0]["lease_id"]
            .as_str()
            .unwrap()
            .starts_with("database/creds/")
    );
    assert!(!audit.contains("root-password-not-checked"));
    // The agent cannot renew a lease that is being revoked.
    let (s, b) = srv
        .root(
            "PUT",
            "sys/leases/renew",
            Some(json!({"lease_id": first["lease_id"]})),
        )
        .await;
    assert_eq!(s, 400, "{b}");

    proxy.up();
    eventually(
        "every credential is revoked once the target is back",
        Duration::from_secs(40),
        || async { pg.our_roles().await.is_empty() },
    )
    .await;
    eventually("no lease is left", Duration::from_secs(10), || async {
        srv.core_lease_count().await == 0
    })
    .await;
    let audit = std::fs::read_to_string(&log).unwrap();
    assert!(
        audit.contains("\"event\":\"agent.credential.revoked\""),
        "the revocations are audited"
    );
    pg.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoke_force_drops_records_loudly_and_needs_sudo() {
    let srv = TestServer::start().await;
    let pg = PgScratch::new().await;
    let log = srv.dir.join("audit.log");
    srv.root(
        "PUT",
        "sys/audit/file",
        Some(json!({"type": "file", "options": {"file_path": log.display().to_string()}})),
    )
    .await;
    pg.setup(&srv, "database", json!({})).await;
    let (s, b) = srv
        .root("GET", &format!("database/creds/{}", pg.role), None)
        .await;
    assert_eq!(s, 200, "{b}");
    let (_, user, _) = creds(&b);
    srv.write_policy(
        "ops",
        r#"path "sys/leases/*" { capabilities = ["update", "read", "list"] }"#,
    )
    .await;
    let ops = srv.token_with(&["ops"]).await;
    let (s, _) = srv
        .call("PUT", "sys/leases/revoke-force/database/", Some(&ops), None)
        .await;
    assert_eq!(s, 403, "revoke-force needs sudo");
    for path in [
        "sys/leases/lookup",
        "sys/leases/lookup/",
        "sys/leases/lookup/database/",
    ] {
        let (s, _) = srv.call("LIST", path, Some(&ops), None).await;
        assert_eq!(s, 403, "listing leases ({path}) needs sudo");
    }
    let (s, b) = srv.root("LIST", "sys/leases/lookup", None).await;
    assert_eq!((s, &b["data"]["keys"]), (200, &json!(["database/"])), "{b}");
    let (s, b) = srv
        .root("PUT", "sys/leases/revoke-force/database/", None)
        .await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["data"]["dropped"], 1);
    assert!(
        b["warnings"][0]
            .as_str()
            .unwrap()
            .contains("without revoking"),
        "{b}"
    );
    assert_eq!(srv.core_lease_count().await, 0);
    assert!(pg.role_exists(&user).await, "the target was not touched");
    let audit = std::fs::read_to_string(&log).unwrap();
    assert!(audit.contains("\"event\":\"force-revoked\""), "{audit}");
    let (s, b) = srv.root("PUT", "sys/leases/revoke-prefix/", None).await;
    assert_eq!(s, 400, "an empty prefix would be every lease: {b}");
    pg.cleanup().await;
}

/// A fake PostgreSQL server that asks every client for its password in cleartext
/// (`AuthenticationCleartextPassword`) and keeps every byte sent after the startup
/// message: what a token holder who can repoint `connection_url` would run.
struct CleartextFake {
    addr: std::net::SocketAddr,
    connections: Arc<std::sync::atomic::AtomicUsize>,
    received: Arc<std::sync::Mutex<Vec<u8>>>,
    task: JoinHandle<()>,
}

impl CleartextFake {
    async fn start() -> CleartextFake {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let connections = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let received = Arc::new(std::sync::Mutex::new(Vec::new()));
        let (c, r) = (Arc::clone(&connections), Arc::clone(&received));
        let task = tokio::spawn(async move {
            loop {
                let Ok((mut sock, _)) = listener.accept().await else {
                    return;
                };
                c.fetch_add(1, Ordering::SeqCst);
                let r = Arc::clone(&r);
                tokio::spawn(async move {
                    // Startup message (answering an SSLRequest with 'N' first).
                    loop {
                        let mut len = [0u8; 4];
                        if sock.read_exact(&mut len).await.is_err() {
                            return;
                        }
                        let mut body = vec![0u8; u32::from_be_bytes(len) as usize - 4];
                        if sock.read_exact(&mut body).await.is_err() {
                            return;
                        }
                        if body[..4] == 80_877_103u32.to_be_bytes() {
                            let _ = sock.write_all(b"N").await;
                            continue;
                        }
                        break;
                    }
                    let _ = sock.write_all(&[b'R', 0, 0, 0, 8, 0, 0, 0, 3]).await;
                    let mut buf = [0u8; 512];
                    while let Ok(Ok(n)) =
                        tokio::time::timeout(Duration::from_secs(2), sock.read(&mut buf)).await
                    {
                        if n == 0 {
                            return;
                        }
                        r.lock().unwrap().extend_from_slice(&buf[..n]);
                    }
                });
            }
        });
        CleartextFake {
            addr,
            connections,
            received,
            task,
        }
    }

    fn url(&self) -> String {
        format!(
            "postgresql://{{{{username}}}}:{{{{password}}}}@{}/x?sslmode=disable",
            self.addr
        )
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_stored_password_never_follows_the_connection_to_a_new_server() {
    let srv = TestServer::start().await;
    let pg = PgScratch::new().await;
    pg.setup(&srv, "db", json!({})).await;
    let fake = CleartextFake::start().await;
    srv.write_policy(
        "db-update",
        r#"path "db/config/*" { capabilities = ["update"] }"#,
    )
    .await;
    let token = srv.token_with(&["db-update"]).await;

    // A writer without the password cannot point the connection anywhere new.
    for change in [
        json!({"connection_url": fake.url()}),
        json!({"connection_url": pg.url().replace("127.0.0.1", "localhost")}),
        json!({"connection_url": pg.url().replace(&pg.name, "postgres")}),
        json!({"username": "someone_else"}),
        json!({"plugin_name": "mysql-database-plugin", "connection_url": format!("{{{{username}}}}:{{{{password}}}}@tcp({})/", fake.addr)}),
        json!({"allow_cleartext_password": true}),
    ] {
        let (s, b) = srv
            .call("POST", "db/config/pg", Some(&token), Some(change.clone()))
            .await;
        assert_eq!(s, 400, "{change}: {b}");
        let e = error(&b);
        assert!(e.contains("\"password\""), "{change}: {e}");
        assert!(!e.contains("root-password"), "{e}");
    }
    assert_eq!(fake.connections.load(Ordering::SeqCst), 0);
    // Settings that keep the endpoint need no password; the connection still works.
    let (s, b) = srv
        .call(
            "POST",
            "db/config/pg",
            Some(&token),
            Some(json!({"max_open_connections": 3})),
        )
        .await;
    assert_eq!(s, 204, "{b}");
    let (s, b) = srv.root("GET", "db/config/pg", None).await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(
        b["data"]["connection_details"]["connection_url"],
        pg.url().as_str()
    );
    assert_eq!(
        b["data"]["connection_details"]["allow_cleartext_password"],
        false
    );
    let (s, b) = srv
        .root("GET", &format!("db/creds/{}", pg.role), None)
        .await;
    assert_eq!(s, 200, "{b}");

    // Even with the password given, a server asking for it in cleartext never gets it.
    let (s, b) = srv
        .root(
            "POST",
            "db/config/pg",
            Some(json!({"connection_url": fake.url(), "password": "fresh-root-secret"})),
        )
        .await;
    assert_eq!(s, 400, "{b}");
    assert!(error(&b).contains("cleartext"), "{b}");
    assert!(!b.to_string().contains("fresh-root-secret"), "{b}");
    assert_eq!(fake.connections.load(Ordering::SeqCst), 1);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let got = String::from_utf8_lossy(&fake.received.lock().unwrap()).into_owned();
    assert!(!got.contains("fresh-root-secret"), "{got:?}");
    assert!(
        !got.starts_with('p'),
        "a password message was sent: {got:?}"
    );

    // Only when the configuration says so (and the fake is real enough to receive it).
    let (s, b) = srv
        .root(
            "POST",
            "db/config/pg",
            Some(json!({
                "connection_url": fake.url(),
                "password": "fresh-root-secret",
                "allow_cleartext_password": true,
            })),
        )
        .await;
    assert_eq!(s, 400, "the fake never completes a login: {b}");
    eventually(
        "the fake receives the cleartext password",
        Duration::from_secs(5),
        || {
            let got = fake.received.lock().unwrap().clone();
            async move { String::from_utf8_lossy(&got).contains("fresh-root-secret") }
        },
    )
    .await;
    fake.task.abort();
    pg.cleanup().await;
}
