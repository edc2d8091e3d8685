//! Tests of [`super::postgres`] against the real PostgreSQL at `LEASH_TEST_POSTGRES_URL`
//! (default `postgresql://postgres@127.0.0.1:5432/postgres`; a superuser, trust auth).
//! Each test makes its own database and roles, named with a random tag, and drops them at
//! the end. When PostgreSQL is unreachable a test prints `SKIPPED: <why>` to stderr and
//! passes — unless `CI=true`, where it fails.
//!
//! SCRAM: trust auth on 127.0.0.1 would accept any password, so logging in proves
//! nothing about the verifier. Instead the tests check that `pg_authid.rolpassword`
//! holds exactly the verifier leash computed (PostgreSQL stores it unchanged), that
//! verifiers PostgreSQL computes itself from a plaintext match leash's derivation, and
//! (in `scram::tests`) that tokio-postgres' SCRAM client completes an exchange against
//! leash's verifier with the right password only.

use std::sync::Arc;

use leash_types::{Clock as _, ExposeSecret, SecretString, SystemClock, random};
use time::OffsetDateTime;
use tokio::task::JoinSet;
use tokio_postgres::{Client, NoTls};

use super::scram::tests::matches as verifier_matches;
use super::*;

const ISSUE_ROLE: [&str; 2] = [
    "CREATE ROLE \"{{name}}\" WITH LOGIN PASSWORD '{{password}}' VALID UNTIL '{{expiration}}';",
    "GRANT SELECT ON ALL TABLES IN SCHEMA public TO \"{{name}}\";",
];

/// The admin connection's URL (`LEASH_TEST_POSTGRES_URL`).
pub(super) fn admin_url() -> String {
    std::env::var("LEASH_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgresql://postgres@127.0.0.1:5432/postgres".to_owned())
}

/// `host:port` of the test server, from [`admin_url`].
pub(super) fn host_port() -> String {
    let c: tokio_postgres::Config = admin_url()
        .parse()
        .expect("LEASH_TEST_POSTGRES_URL is a PostgreSQL URL");
    let host = match c.get_hosts().first() {
        Some(tokio_postgres::config::Host::Tcp(h)) => h.clone(),
        _ => "127.0.0.1".to_owned(),
    };
    format!("{host}:{}", c.get_ports().first().copied().unwrap_or(5432))
}

/// Whether a missing database must fail the test (`CI=true`) rather than skip it.
pub(super) fn in_ci() -> bool {
    ci_value_means_ci(std::env::var("CI").ok().as_deref())
}

/// Says on the real stderr (not the test harness's captured one, so it shows even for
/// a passing test) that the test skipped, and why.
pub(super) fn skipped(why: &str) {
    use std::io::Write as _;
    let _ = writeln!(std::io::stderr(), "SKIPPED: {why}");
}

fn ci_value_means_ci(v: Option<&str>) -> bool {
    v.is_some_and(|v| !matches!(v.trim().to_ascii_lowercase().as_str(), "" | "0" | "false"))
}

#[test]
fn ci_true_turns_a_skip_into_a_failure() {
    assert!(ci_value_means_ci(Some("true")));
    assert!(ci_value_means_ci(Some("1")));
    assert!(!ci_value_means_ci(None));
    assert!(!ci_value_means_ci(Some("false")));
    assert!(!ci_value_means_ci(Some("")));
}

async fn connect(conn: &str) -> Result<Client, tokio_postgres::Error> {
    let (client, connection) = tokio_postgres::connect(conn, NoTls).await?;
    tokio::spawn(async move {
        let _ = connection.await;
    });
    Ok(client)
}

/// A fresh database with tables in `public` and in schema `other`, and a name prefix
/// for every role the test makes.
struct TestDb {
    admin: Client,
    db: Client,
    name: String,
    /// Display name for generated usernames; every role the test makes starts with
    /// `v-<tag>-`.
    tag: String,
}

impl TestDb {
    async fn new() -> Option<TestDb> {
        let admin = match connect(&admin_url()).await {
            Ok(c) => c,
            Err(e) if !in_ci() => {
                skipped(&format!(
                    "PostgreSQL at {} (LEASH_TEST_POSTGRES_URL) unreachable: {e}",
                    host_port()
                ));
                return None;
            }
            Err(e) => panic!(
                "PostgreSQL at {} unreachable under CI=true: {e}",
                host_port()
            ),
        };
        let tag = format!("lt{}", random::base62(6).to_ascii_lowercase());
        let name = format!("leash_test_{tag}");
        admin
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .await
            .unwrap();
        let mut db_config: tokio_postgres::Config = admin_url().parse().unwrap();
        db_config.dbname(&name);
        let (db, connection) = db_config.connect(NoTls).await.unwrap();
        tokio::spawn(async move {
            let _ = connection.await;
        });
        db.batch_execute(
            "CREATE TABLE public.t1 (x int); INSERT INTO public.t1 VALUES (1);
             CREATE TABLE public.t2 (y text);
             CREATE SCHEMA other; CREATE TABLE other.secret (z int);
             INSERT INTO other.secret VALUES (42);",
        )
        .await
        .unwrap();
        Some(TestDb {
            admin,
            db,
            name,
            tag,
        })
    }

    fn prefix(&self) -> String {
        format!("v-{}-", self.tag)
    }

    fn username(&self) -> String {
        generate_username(&self.tag, "ro", 63)
    }

    fn config(&self) -> PgConfig {
        PgConfig::new(
            format!(
                "postgresql://{{{{username}}}}:{{{{password}}}}@{}/{}?sslmode=disable",
                host_port(),
                self.name
            ),
            "postgres",
            SecretString::from("root-pw-unused-under-trust".to_owned()),
        )
    }

    async fn target(&self) -> PgTarget {
        PgTarget::connect(self.config()).await.unwrap()
    }

    async fn login(&self, user: &str, password: &SecretString) -> Client {
        connect(&format!(
            "postgresql://{user}:{}@{}/{}?sslmode=disable",
            password.expose_secret(),
            host_port(),
            self.name
        ))
        .await
        .unwrap()
    }

    async fn role_exists(&self, user: &str) -> bool {
        self.admin
            .query_opt("SELECT 1 FROM pg_roles WHERE rolname = $1", &[&user])
            .await
            .unwrap()
            .is_some()
    }

    /// Drops the database and every role whose name starts with the test's prefix.
    async fn cleanup(self) {
        let like = format!("{}%", self.prefix());
        drop(self.db);
        self.admin
            .batch_execute(&format!(
                "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                self.name
            ))
            .await
            .unwrap();
        let rows = self
            .admin
            .query(
                "SELECT rolname FROM pg_roles WHERE rolname LIKE $1",
                &[&like],
            )
            .await
            .unwrap();
        for row in rows {
            let role: String = row.get(0);
            self.admin
                .batch_execute(&format!(
                    "DROP ROLE IF EXISTS {}",
                    postgres::quote_ident(&role)
                ))
                .await
                .unwrap();
        }
    }
}

fn statements(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| (*s).to_owned()).collect()
}

fn issue_vars(user: &str, password: &SecretString) -> Vars {
    Vars::new(user)
        .with_password(SecretString::from(password.expose_secret().to_owned()))
        .with_expiration(OffsetDateTime::from(SystemClock.now()) + time::Duration::hours(1))
}

async fn sqlstate_of(client: &Client, sql: &str) -> String {
    let e = client.batch_execute(sql).await.unwrap_err();
    e.as_db_error().unwrap().code().code().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue_role_can_select_public_and_nothing_else() {
    let Some(t) = TestDb::new().await else { return };
    let target = t.target().await;
    let user = t.username();
    let password = generate_password();
    target
        .create_user(&statements(&ISSUE_ROLE), &issue_vars(&user, &password))
        .await
        .unwrap();

    // The database holds leash's SCRAM verifier, never the plaintext.
    let stored: String = t
        .admin
        .query_one(
            "SELECT rolpassword FROM pg_authid WHERE rolname = $1",
            &[&user],
        )
        .await
        .unwrap()
        .get(0);
    assert!(stored.starts_with("SCRAM-SHA-256$4096:"), "{stored}");
    assert!(!stored.contains(password.expose_secret()));
    assert!(verifier_matches(&stored, password.expose_secret()));
    assert!(!verifier_matches(&stored, "Wrong-password-1"));

    let me = t.login(&user, &password).await;
    let who: String = me
        .query_one("SELECT current_user::text", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(who, user);
    let x: i32 = me
        .query_one("SELECT x FROM public.t1", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(x, 1);
    me.query("SELECT y FROM public.t2", &[]).await.unwrap();
    assert_eq!(
        sqlstate_of(&me, "INSERT INTO public.t1 VALUES (2)").await,
        "42501"
    );
    assert_eq!(
        sqlstate_of(&me, "CREATE TABLE public.mine (x int)").await,
        "42501"
    );
    assert_eq!(
        sqlstate_of(&me, "SELECT z FROM other.secret").await,
        "42501"
    );
    drop(me);

    target.revoke_user(&user, &[]).await.unwrap();
    assert!(!t.role_exists(&user).await);
    t.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_stores_leash_verifier_and_agrees_with_its_own() {
    let Some(t) = TestDb::new().await else { return };
    // A verifier in PASSWORD is stored as it is.
    let user = t.username();
    let verifier = scram_sha256_verifier("Some-Password-1", 17).unwrap();
    let sql = render(
        "CREATE ROLE \"{{name}}\" WITH LOGIN PASSWORD '{{password}}'",
        &Vars::new(&user).with_password(SecretString::from(verifier.clone())),
    )
    .unwrap();
    t.admin.batch_execute(&sql).await.unwrap();
    let stored: String = t
        .admin
        .query_one(
            "SELECT rolpassword FROM pg_authid WHERE rolname = $1",
            &[&user],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(stored, verifier);

    // With plaintext passwords PostgreSQL hashes them itself (password_encryption =
    // scram-sha-256); leash's derivation matches what it computed.
    let mut config = t.config();
    config.password_authentication = PasswordAuthentication::Password;
    let target = PgTarget::connect(config).await.unwrap();
    let user2 = t.username();
    let password = generate_password();
    target
        .create_user(&statements(&ISSUE_ROLE), &issue_vars(&user2, &password))
        .await
        .unwrap();
    let stored: String = t
        .admin
        .query_one(
            "SELECT rolpassword FROM pg_authid WHERE rolname = $1",
            &[&user2],
        )
        .await
        .unwrap()
        .get(0);
    assert!(
        verifier_matches(&stored, password.expose_secret()),
        "{stored}"
    );
    target.revoke_user(&user, &[]).await.unwrap();
    target.revoke_user(&user2, &[]).await.unwrap();
    t.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sixteen_concurrent_issuances_all_succeed_and_log_in() {
    let Some(t) = TestDb::new().await else { return };
    // More tables make concurrent GRANT … ON ALL TABLES collide more.
    for i in 3..12 {
        t.db.batch_execute(&format!("CREATE TABLE public.t{i} (x int)"))
            .await
            .unwrap();
    }
    let mut config = t.config();
    config.max_open_connections = 16;
    let target = Arc::new(PgTarget::connect(config).await.unwrap());
    // The issue's role as one string holding both statements.
    let role = vec![ISSUE_ROLE.join(" ")];
    let mut set = JoinSet::new();
    for _ in 0..16 {
        let target = Arc::clone(&target);
        let role = role.clone();
        let user = t.username();
        set.spawn(async move {
            let password = generate_password();
            target
                .create_user(&role, &issue_vars(&user, &password))
                .await
                .map(|()| (user, password))
        });
    }
    let mut issued = Vec::new();
    while let Some(r) = set.join_next().await {
        issued.push(r.unwrap().unwrap());
    }
    assert_eq!(issued.len(), 16);
    eprintln!(
        "transactions retried after transient conflicts so far: {}",
        postgres::RETRIES.load(std::sync::atomic::Ordering::Relaxed)
    );
    for (user, password) in &issued {
        let me = t.login(user, password).await;
        let x: i32 = me.query_one("SELECT x FROM t1", &[]).await.unwrap().get(0);
        assert_eq!(x, 1);
        me.query("SELECT x FROM t11", &[]).await.unwrap();
    }
    // Concurrent revocations (DROP OWNED on the same tables) go through the retry too.
    let mut set = JoinSet::new();
    for (user, _) in issued.clone() {
        let target = Arc::clone(&target);
        set.spawn(async move { target.revoke_user(&user, &[]).await });
    }
    while let Some(r) = set.join_next().await {
        r.unwrap().unwrap();
    }
    for (user, _) in &issued {
        assert!(!t.role_exists(user).await, "{user} survived revocation");
    }
    t.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoke_ends_open_sessions_and_tolerates_missing_roles() {
    let Some(t) = TestDb::new().await else { return };
    let target = t.target().await;
    let user = t.username();
    let password = generate_password();
    target
        .create_user(&statements(&ISSUE_ROLE), &issue_vars(&user, &password))
        .await
        .unwrap();
    let me = t.login(&user, &password).await;
    me.query("SELECT 1", &[]).await.unwrap();

    target.revoke_user(&user, &[]).await.unwrap();
    assert!(me.query("SELECT 1", &[]).await.is_err(), "session survived");
    assert!(!t.role_exists(&user).await);

    // Already gone, never existed: both count as revoked.
    target.revoke_user(&user, &[]).await.unwrap();
    target
        .revoke_user(&format!("{}never-existed", t.prefix()), &[])
        .await
        .unwrap();
    // Custom statements for a missing role: with or without IF EXISTS, revoked.
    target
        .revoke_user(&user, &statements(&["DROP ROLE IF EXISTS \"{{name}}\";"]))
        .await
        .unwrap();
    target
        .revoke_user(&user, &statements(&["DROP ROLE \"{{name}}\";"]))
        .await
        .unwrap();
    t.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn default_revocation_drops_a_role_with_objects_grants_and_groups() {
    let Some(t) = TestDb::new().await else { return };
    let target = t.target().await;
    let user = t.username();
    let password = generate_password();
    target
        .create_user(
            &statements(&["CREATE ROLE \"{{name}}\" WITH LOGIN PASSWORD '{{password}}';"]),
            &issue_vars(&user, &password),
        )
        .await
        .unwrap();
    let group = format!("{}group", t.prefix());
    let (u, g, db) = (
        postgres::quote_ident(&user),
        postgres::quote_ident(&group),
        &t.name,
    );
    t.db.batch_execute(&format!(
        "CREATE ROLE {g} NOLOGIN; GRANT {g} TO {u};
         CREATE TABLE public.owned (x int); ALTER TABLE public.owned OWNER TO {u};
         CREATE SEQUENCE public.s1; GRANT USAGE, SELECT ON SEQUENCE public.s1 TO {u};
         CREATE FUNCTION public.f1() RETURNS int LANGUAGE sql AS 'SELECT 1';
         GRANT EXECUTE ON FUNCTION public.f1() TO {u};
         GRANT USAGE ON SCHEMA other TO {u};
         GRANT CONNECT, TEMPORARY ON DATABASE {db} TO {u};"
    ))
    .await
    .unwrap();
    // What leaves orphans behind with a plain DROP ROLE:
    assert_eq!(sqlstate_of(&t.db, &format!("DROP ROLE {u}")).await, "2BP01");

    target.revoke_user(&user, &[]).await.unwrap();
    assert!(!t.role_exists(&user).await);
    let owner: String = t
        .db
        .query_one(
            "SELECT tableowner::text FROM pg_tables WHERE schemaname = 'public' AND tablename = 'owned'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(owner, "postgres", "owned objects go to the revoking user");
    assert!(t.role_exists(&group).await, "the group role itself stays");
    t.cleanup().await;
}

async fn valid_until(admin: &Client, user: &str) -> i64 {
    admin
        .query_one(
            "SELECT extract(epoch FROM rolvaliduntil)::bigint FROM pg_roles WHERE rolname = $1",
            &[&user],
        )
        .await
        .unwrap()
        .get(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn renew_moves_valid_until() {
    let Some(t) = TestDb::new().await else { return };
    let target = t.target().await;
    let user = t.username();
    let password = generate_password();
    target
        .create_user(&statements(&ISSUE_ROLE), &issue_vars(&user, &password))
        .await
        .unwrap();
    let first = valid_until(&t.admin, &user).await;
    let later = OffsetDateTime::from(SystemClock.now()) + time::Duration::hours(5);
    target
        .renew_user(&[], &Vars::new(&user).with_expiration(later))
        .await
        .unwrap();
    let second = valid_until(&t.admin, &user).await;
    assert_eq!(second, later.unix_timestamp());
    assert!(second > first + 3 * 3600);
    // Renewal without an expiration cannot render the default statement.
    assert!(matches!(
        target.renew_user(&[], &Vars::new(&user)).await,
        Err(DbError::MissingValue { name: "expiration" })
    ));
    target.revoke_user(&user, &[]).await.unwrap();
    t.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_name_the_statement_and_never_the_password() {
    let Some(t) = TestDb::new().await else { return };
    let mut config = t.config();
    config.password_authentication = PasswordAuthentication::Password;
    let target = PgTarget::connect(config).await.unwrap();
    let user = t.username();
    let password = generate_password();
    let pw = password.expose_secret().to_owned();

    // Second statement fails: the whole transaction is rolled back.
    let e = target
        .create_user(
            &statements(&[
                ISSUE_ROLE[0],
                "GRANT SELECT ON public.missing TO \"{{name}}\";",
            ]),
            &issue_vars(&user, &password),
        )
        .await
        .unwrap_err();
    assert!(matches!(&e, DbError::Statement { index: 1, .. }), "{e:?}");
    assert_eq!(e.sqlstate(), Some("42P01"));
    assert!(!t.role_exists(&user).await, "partial creation left a role");

    // A syntax error whose server message quotes the password.
    let e = target
        .create_user(
            &statements(&["CREATE ROLE \"{{name}}\" PASSWORD {{password}} x"]),
            &issue_vars(&user, &password),
        )
        .await
        .unwrap_err();
    assert_eq!(e.sqlstate(), Some("42601"), "{e}");
    for shown in [e.to_string(), format!("{e:?}")] {
        assert!(!shown.contains(&pw), "password leaked: {shown}");
    }

    // No statements, bad connections.
    assert!(matches!(
        target.create_user(&[], &issue_vars(&user, &password)).await,
        Err(DbError::NoStatements { .. })
    ));
    let mut bad = t.config();
    bad.connection_url = format!(
        "postgresql://{{{{username}}}}:{{{{password}}}}@{}/leash_no_such_db",
        host_port()
    );
    let e = PgTarget::connect(bad).await.unwrap_err();
    assert!(matches!(e, DbError::Connect { .. }), "{e:?}");
    assert!(!e.to_string().contains("root-pw"), "{e}");
    let mut bad = t.config();
    bad.connection_url = "postgresql://{{username}}:{{password}}@127.0.0.1:notaport/x".to_owned();
    let e = PgTarget::connect(bad).await.unwrap_err();
    assert!(matches!(e, DbError::InvalidConnectionUrl { .. }), "{e:?}");
    assert!(!e.to_string().contains("root-pw"), "{e}");
    assert!(!format!("{target:?}").contains("root-pw"));
    t.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batch_revocation_drops_every_role_and_ends_their_sessions() {
    let Some(t) = TestDb::new().await else { return };
    let target = t.target().await;
    let mut batch = Vec::new();
    let mut sessions = Vec::new();
    for i in 0..20 {
        let user = t.username();
        let password = generate_password();
        target
            .create_user(
                &statements(&[
                    "CREATE ROLE \"{{name}}\" WITH LOGIN PASSWORD '{{password}}' VALID UNTIL '{{expiration}}';",
                    "GRANT SELECT ON ALL TABLES IN SCHEMA public TO \"{{name}}\";",
                ]),
                &issue_vars(&user, &password),
            )
            .await
            .unwrap();
        if i < 3 {
            sessions.push(t.login(&user, &password).await);
        }
        // Every other lease has custom statements; the rest use the default.
        let custom = if i % 2 == 0 {
            statements(&["DROP ROLE IF EXISTS \"{{name}}\";"])
        } else {
            Vec::new()
        };
        batch.push((user, custom));
    }
    // One that never existed (an intent whose creation never ran) is revoked too.
    batch.push((format!("{}never", t.prefix()), Vec::new()));
    let results = target.revoke_users(&batch).await;
    assert_eq!(results.len(), batch.len());
    assert!(results.iter().all(Result::is_ok), "{results:?}");
    for (user, _) in &batch {
        assert!(!t.role_exists(user).await, "{user} survived");
    }
    for s in sessions {
        assert!(
            s.simple_query("SELECT 1").await.is_err(),
            "a revoked role's session must be ended"
        );
    }
    t.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batch_revocation_isolates_a_failing_statement() {
    let Some(t) = TestDb::new().await else { return };
    let target = t.target().await;
    let mut batch = Vec::new();
    for i in 0..4 {
        let user = t.username();
        target
            .create_user(
                &statements(&["CREATE ROLE \"{{name}}\" WITH LOGIN PASSWORD '{{password}}';"]),
                &issue_vars(&user, &generate_password()),
            )
            .await
            .unwrap();
        let custom = if i == 2 {
            statements(&["DROP ROLE \"{{name}}\"; SELECT no_such_function();"])
        } else {
            Vec::new()
        };
        batch.push((user, custom));
    }
    let results = target.revoke_users(&batch).await;
    for (i, r) in results.iter().enumerate() {
        assert_eq!(r.is_err(), i == 2, "{i}: {r:?}");
    }
    assert!(!t.role_exists(&batch[0].0).await);
    assert!(!t.role_exists(&batch[3].0).await);
    assert!(
        t.role_exists(&batch[2].0).await,
        "its transaction rolled back"
    );
    t.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn root_rotation_stores_a_new_verifier() {
    let Some(t) = TestDb::new().await else { return };
    let admin_user = format!("{}admin", t.prefix());
    t.admin
        .batch_execute(&format!(
            "CREATE ROLE {} WITH LOGIN CREATEROLE PASSWORD 'initial-pw'",
            postgres::quote_ident(&admin_user)
        ))
        .await
        .unwrap();
    let before: String = t
        .admin
        .query_one(
            "SELECT rolpassword FROM pg_authid WHERE rolname = $1",
            &[&admin_user],
        )
        .await
        .unwrap()
        .get(0);
    let mut config = t.config();
    config.username = admin_user.clone();
    config.password = SecretString::from("initial-pw".to_owned());
    let target = PgTarget::connect(config).await.unwrap();
    let new_password = generate_password();
    target
        .rotate_root(&admin_user, &[], &new_password)
        .await
        .unwrap();
    let after: String = t
        .admin
        .query_one(
            "SELECT rolpassword FROM pg_authid WHERE rolname = $1",
            &[&admin_user],
        )
        .await
        .unwrap()
        .get(0);
    assert_ne!(before, after);
    assert!(after.starts_with("SCRAM-SHA-256$"), "{after}");
    assert!(!after.contains(new_password.expose_secret()));
    t.cleanup().await;
}
