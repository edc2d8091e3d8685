//! Tests of [`super::mysql`]: connection-string parsing, and the real MySQL/MariaDB at
//! `LEASH_TEST_MYSQL_URL` (default `mysql://root@127.0.0.1:3306/test`). Each database
//! test makes its own database and users, named with a random tag (usernames start with
//! `v-<tag>-`, the admin user of the rotation test is `ladm_<tag>`), and drops them at
//! the end. When the server is unreachable a test prints `SKIPPED: <why>` to stderr and
//! passes — unless `CI=true`, where it fails.

use std::sync::Arc;
use std::time::Duration;

use leash_types::{Clock as _, ExposeSecret, SecretString, SystemClock, random};
use mysql_async::prelude::Queryable;
use mysql_async::{Conn, Opts, OptsBuilder};
use time::OffsetDateTime;
use tokio::task::JoinSet;

use super::mysql::{
    MAX_USERNAME_LEN, MySqlConfig, MySqlTarget, VAULT_DEFAULT_REVOCATION, connection_opts,
    server_error_code,
};
use super::*;

fn base_url() -> String {
    std::env::var("LEASH_TEST_MYSQL_URL")
        .unwrap_or_else(|_| "mysql://root@127.0.0.1:3306/test".to_owned())
}

fn secret(s: &str) -> SecretString {
    SecretString::from(s.to_owned())
}

fn opts(url: &str, user: &str, password: &str) -> Result<Opts, DbError> {
    connection_opts(&MySqlConfig::new(url, user, secret(password)))
}

fn code(e: &mysql_async::Error) -> Option<u16> {
    match e {
        mysql_async::Error::Server(s) => Some(s.code),
        _ => None,
    }
}

/// Creation statements: one list element holding two `;`-separated statements.
fn issue(db: &str) -> Vec<String> {
    vec![format!(
        "CREATE USER '{{{{name}}}}'@'%' IDENTIFIED BY '{{{{password}}}}'; \
         GRANT SELECT ON `{db}`.* TO '{{{{name}}}}'@'%';"
    )]
}

fn vars(name: &str, password: &SecretString) -> Vars {
    Vars::new(name)
        .with_password(password.clone())
        .with_expiration(OffsetDateTime::from(SystemClock.now()) + time::Duration::minutes(15))
}

/// A fresh database with a table, and a name tag for every user the test makes.
struct TestDb {
    admin: Conn,
    base: Opts,
    db: String,
    /// Display name for generated usernames: every user the test makes starts with
    /// `v-<tag>-`.
    tag: String,
}

impl TestDb {
    async fn new() -> Option<TestDb> {
        let base = Opts::from_url(&base_url()).expect("LEASH_TEST_MYSQL_URL is a mysql:// URL");
        let admin_opts = OptsBuilder::from_opts(base.clone()).prefer_socket(false);
        let mut admin = match Conn::new(admin_opts).await {
            Ok(c) => c,
            Err(e) if !super::postgres_tests::in_ci() => {
                super::postgres_tests::skipped(&format!(
                    "MySQL/MariaDB at LEASH_TEST_MYSQL_URL ({}) unreachable: {e}",
                    base_url()
                ));
                return None;
            }
            Err(e) => panic!("MySQL/MariaDB unreachable under CI=true: {e}"),
        };
        let tag = random::base62(4).to_ascii_lowercase();
        let db = format!("leash_test_{tag}");
        for q in [
            format!("CREATE DATABASE `{db}`"),
            format!("CREATE TABLE `{db}`.t1 (x int)"),
            format!("INSERT INTO `{db}`.t1 VALUES (1)"),
            format!("CREATE TABLE `{db}`.t2 (y text)"),
        ] {
            admin.query_drop(q).await.unwrap();
        }
        Some(TestDb {
            admin,
            base,
            db,
            tag,
        })
    }

    fn host(&self) -> String {
        self.base.ip_or_hostname().to_owned()
    }

    fn port(&self) -> u16 {
        self.base.tcp_port()
    }

    /// The root configuration, as a URL with placeholders (so substitution runs).
    fn config(&self) -> MySqlConfig {
        MySqlConfig::new(
            format!(
                "mysql://{{{{username}}}}:{{{{password}}}}@{}:{}/{}",
                self.host(),
                self.port(),
                self.db
            ),
            self.base.user().unwrap_or("root"),
            secret(self.base.pass().unwrap_or_default()),
        )
    }

    async fn target(&self) -> MySqlTarget {
        MySqlTarget::connect(self.config()).await.unwrap()
    }

    fn username(&self, role: &str) -> String {
        generate_username(&self.tag, role, MAX_USERNAME_LEN)
    }

    async fn login(&self, user: &str, password: &str) -> Result<Conn, mysql_async::Error> {
        Conn::new(
            OptsBuilder::default()
                .ip_or_hostname(self.host())
                .tcp_port(self.port())
                .user(Some(user))
                .pass(Some(password))
                .db_name(Some(&self.db))
                .prefer_socket(false),
        )
        .await
    }

    async fn hosts_of(&mut self, user: &str) -> Vec<String> {
        self.admin
            .exec("SELECT Host FROM mysql.user WHERE User = ?", (user,))
            .await
            .unwrap()
    }

    async fn sessions_of(&mut self, user: &str) -> usize {
        let n: Option<u64> = self
            .admin
            .exec_first(
                "SELECT COUNT(*) FROM information_schema.PROCESSLIST WHERE USER = ?",
                (user,),
            )
            .await
            .unwrap();
        n.unwrap_or_default() as usize
    }

    /// Waits up to 5 s for `user` to have no session left (a killed thread takes a
    /// moment to leave the process list).
    async fn wait_no_sessions(&mut self, user: &str) -> usize {
        for _ in 0..50 {
            if self.sessions_of(user).await == 0 {
                return 0;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        self.sessions_of(user).await
    }

    async fn cleanup(mut self) {
        let accounts: Vec<(String, String)> = self
            .admin
            .exec(
                "SELECT User, Host FROM mysql.user WHERE User LIKE ? OR User LIKE ?",
                (format!("v-{}-%", self.tag), format!("ladm\\_{}%", self.tag)),
            )
            .await
            .unwrap();
        for (user, host) in accounts {
            self.admin
                .query_drop(format!("DROP USER IF EXISTS '{user}'@'{host}'"))
                .await
                .unwrap();
        }
        self.admin
            .query_drop(format!("DROP DATABASE IF EXISTS `{}`", self.db))
            .await
            .unwrap();
        let _ = self.admin.disconnect().await;
    }
}

/// Asserts `e`'s text (both `Display` and `Debug`) does not contain `secret`.
fn assert_scrubbed(e: &DbError, secret: &str) {
    let text = format!("{e} / {e:?}");
    assert!(!text.contains(secret), "secret leaked: {text}");
}

#[test]
fn go_dsn_parsing() {
    // Vault's documented form; the password holds every character a DSN uses.
    let pw = "p@ss:w/rd?x&y=z";
    let o = opts(
        "{{username}}:{{password}}@tcp(127.0.0.1:3306)/",
        "vault",
        pw,
    )
    .unwrap();
    assert_eq!(o.user(), Some("vault"));
    assert_eq!(o.pass(), Some(pw));
    assert_eq!(o.ip_or_hostname(), "127.0.0.1");
    assert_eq!(o.tcp_port(), 3306);
    assert_eq!(o.db_name(), None);
    assert_eq!(o.socket(), None);
    assert!(!o.prefer_socket());
    assert_eq!(o.pool_opts().constraints().max(), 4);

    let o = opts(
        "{{username}}:{{password}}@tcp(db.example.com:3307)/app%2Dx?parseTime=true&charset=utf8mb4&tls=false",
        "vault",
        "pw",
    )
    .unwrap();
    assert_eq!(o.ip_or_hostname(), "db.example.com");
    assert_eq!(o.tcp_port(), 3307);
    assert_eq!(o.db_name(), Some("app-x"));
    assert!(o.setup().is_empty());

    // Literal credentials; like Go's driver, the last `@` ends the user part and the
    // first `:` splits it.
    let o = opts("admin:lit@eral:pw@tcp([::1])/x", "", "").unwrap();
    assert_eq!(o.user(), Some("admin"));
    assert_eq!(o.pass(), Some("lit@eral:pw"));
    assert_eq!(o.ip_or_hostname(), "::1");
    assert_eq!(o.tcp_port(), 3306);
    let o = opts("u@tcp([::1]:3310)/x", "", "").unwrap();
    assert_eq!((o.user(), o.pass(), o.tcp_port()), (Some("u"), None, 3310));
    let o = opts("u:p@tcp(db)/x", "", "").unwrap();
    assert_eq!((o.ip_or_hostname(), o.tcp_port()), ("db", 3306));

    let o = opts(
        "{{username}}:{{password}}@unix(/run/mysqld/mysqld.sock)/d",
        "vault",
        "pw",
    )
    .unwrap();
    assert_eq!(o.socket(), Some("/run/mysqld/mysqld.sock"));
    assert_eq!(o.db_name(), Some("d"));

    // No user part: the configured username and password are used.
    let o = opts("tcp(h:1)/", "vault", "pw").unwrap();
    assert_eq!((o.user(), o.pass()), (Some("vault"), Some("pw")));
    assert_eq!((o.ip_or_hostname(), o.tcp_port()), ("h", 1));
    let o = opts("/", "vault", "").unwrap();
    assert_eq!((o.user(), o.pass()), (Some("vault"), None));
    assert_eq!((o.ip_or_hostname(), o.tcp_port()), ("127.0.0.1", 3306));

    // Other parameters are session variables, as in Go's driver.
    let o = opts(
        "u@tcp(h)/?sql_mode=%27ANSI_QUOTES%27&time_zone=%27%2B00:00%27&allowCleartextPasswords=true",
        "",
        "",
    )
    .unwrap();
    assert_eq!(
        o.setup(),
        ["SET sql_mode='ANSI_QUOTES', time_zone='+00:00'".to_owned()]
    );
    // The URL cannot turn on mysql_clear_password: only allow_cleartext_password can.
    assert!(!o.enable_cleartext_plugin());
    for url in [
        "mysql://u@h/?enable_cleartext_plugin=true",
        "u@tcp(h)/?allowCleartextPasswords=1",
    ] {
        assert!(
            !opts(url, "", "").unwrap().enable_cleartext_plugin(),
            "{url}"
        );
        let mut c = MySqlConfig::new(url, "", secret(""));
        c.allow_cleartext_password = true;
        assert!(
            connection_opts(&c).unwrap().enable_cleartext_plugin(),
            "{url}"
        );
    }

    let mut config = MySqlConfig::new("{{username}}@tcp(h)/", "vault", secret(""));
    config.max_open_connections = 7;
    assert_eq!(
        connection_opts(&config)
            .unwrap()
            .pool_opts()
            .constraints()
            .max(),
        7
    );
}

#[test]
fn go_dsn_tls_values_map_to_ssl_options() {
    let ssl = |url: &str| opts(url, "vault", "pw").unwrap().ssl_opts().cloned();
    assert!(ssl("u:p@tcp(h)/").is_none());
    assert!(ssl("u:p@tcp(h)/?tls=false").is_none());
    let s = ssl("u:p@tcp(h)/?tls=skip-verify").unwrap();
    assert!(s.accept_invalid_certs());
    let s = ssl("u:p@tcp(h)/?tls=preferred").unwrap();
    assert!(s.accept_invalid_certs());
    let s = ssl("u:p@tcp(h)/?tls=true").unwrap();
    assert!(!s.accept_invalid_certs() && !s.disable_built_in_roots());
    // A CA given as a field: verified against it only, even without tls= in the DSN.
    let mut c = MySqlConfig::new("u:p@tcp(h)/", "vault", secret("pw"));
    c.tls.root_cert = Some(leash_dbtls::Pem::Inline(
        "-----BEGIN CERTIFICATE-----".into(),
    ));
    c.tls.server_name = Some("db.internal".into());
    let o = connection_opts(&c).unwrap();
    let s = o.ssl_opts().unwrap();
    assert!(!s.accept_invalid_certs() && s.disable_built_in_roots());
    assert_eq!(s.tls_hostname_override(), Some("db.internal"));
    assert_eq!(s.root_certs().len(), 1);
}

#[test]
fn bad_connection_urls_are_rejected_without_secrets() {
    for (url, why) in [
        ("", "empty"),
        ("u:secretpw@tcp(h)", "`/`"),
        ("u:secretpw@tcp(h:99999)/", "port"),
        ("u:secretpw@tcp(h:1/", "`)`"),
        ("u:secretpw@tcp([::1)/", "`]`"),
        ("u:secretpw@tcp(h)/?tls=custom", "tls=true"),
        ("u:secretpw@pipe(x)/", "network"),
        ("u:secretpw@tcp(h)/?bad-name=1", "identifier"),
        ("postgres://u:secretpw@h/db", "scheme"),
        ("mysql://u:secretpw@h:99999/", ""),
        (
            "mysql://{{username}}:{{password}}@h/db?nonsense=1",
            "nonsense",
        ),
    ] {
        let e = opts(url, "vault", "secretpw").unwrap_err();
        assert!(
            matches!(&e, DbError::InvalidConnectionUrl { reason } if reason.contains(why)),
            "{url}: {e}"
        );
        assert_scrubbed(&e, "secretpw");
    }
}

#[test]
fn mysql_url_parsing() {
    let pw = "p@ss/w:rd%?#&";
    let o = opts(
        "mysql://{{username}}:{{password}}@127.0.0.1:3307/db",
        "ro ot",
        pw,
    )
    .unwrap();
    assert_eq!(o.user(), Some("ro ot"));
    assert_eq!(o.pass(), Some(pw));
    assert_eq!(o.ip_or_hostname(), "127.0.0.1");
    assert_eq!(o.tcp_port(), 3307);
    assert_eq!(o.db_name(), Some("db"));
    assert!(!o.prefer_socket());
    // The URL's own pool size gives way to max_open_connections.
    let o = opts("mysql://127.0.0.1/db?pool_max=50", "vault", "pw").unwrap();
    assert_eq!((o.user(), o.pass()), (Some("vault"), Some("pw")));
    assert_eq!(o.pool_opts().constraints().max(), 4);
    let o = opts("mysql://127.0.0.1/db?prefer_socket=true", "vault", "pw").unwrap();
    assert!(o.prefer_socket());
}

#[test]
fn config_debug_hides_secrets() {
    for url in [
        "root:literal-pw@tcp(db:3306)/x",
        "mysql://root:literal-pw@db:3306/x",
    ] {
        let c = MySqlConfig::new(url, "root", secret("root-pw"));
        let d = format!("{c:?}");
        assert!(!d.contains("literal-pw") && !d.contains("root-pw"), "{d}");
        assert!(d.contains("db:3306"), "{d}");
    }
}

#[tokio::test]
async fn issue_login_and_privileges() {
    let Some(mut t) = TestDb::new().await else {
        return;
    };
    let target = t.target().await;
    let debug = format!("{target:?}");
    assert!(debug.contains(&t.db), "{debug}");

    let name = t.username("ro");
    assert!(name.len() <= MAX_USERNAME_LEN);
    let password = generate_password();
    target
        .create_user(&issue(&t.db), &vars(&name, &password))
        .await
        .unwrap();
    assert_eq!(t.hosts_of(&name).await, ["%"]);

    let mut c = t.login(&name, password.expose_secret()).await.unwrap();
    let x: Option<i32> = c
        .query_first(format!("SELECT x FROM `{}`.t1", t.db))
        .await
        .unwrap();
    assert_eq!(x, Some(1));
    let e = c
        .query_drop(format!("INSERT INTO `{}`.t1 VALUES (2)", t.db))
        .await
        .unwrap_err();
    assert_eq!(code(&e), Some(1142), "{e}"); // ER_TABLEACCESS_DENIED_ERROR
    let e = c
        .query_drop(format!("CREATE TABLE `{}`.t3 (z int)", t.db))
        .await
        .unwrap_err();
    assert_eq!(code(&e), Some(1142), "{e}");
    let e = t.login(&name, "Wrong-Passw0rd").await.unwrap_err();
    assert_eq!(code(&e), Some(1045), "{e}"); // ER_ACCESS_DENIED_ERROR

    // Renewal: nothing to do by default; custom statements run.
    target
        .renew_user(&[], &vars(&name, &password))
        .await
        .unwrap();
    target
        .renew_user(
            &[format!(
                "GRANT INSERT ON `{}`.t2 TO '{{{{name}}}}'@'%'",
                t.db
            )],
            &vars(&name, &password),
        )
        .await
        .unwrap();
    c.query_drop(format!("INSERT INTO `{}`.t2 VALUES ('renewed')", t.db))
        .await
        .unwrap();
    drop(c);

    target.revoke_user(&name, &[]).await.unwrap();
    assert!(t.hosts_of(&name).await.is_empty());
    t.cleanup().await;
}

#[tokio::test]
async fn statement_errors_are_indexed_and_scrubbed() {
    let Some(mut t) = TestDb::new().await else {
        return;
    };
    let target = t.target().await;

    // The password lands in MySQL's syntax error ("… near '<password>'"): scrubbed.
    let name = t.username("bad");
    let password = generate_password();
    let e = target
        .create_user(
            &["CREATE USER '{{name}}'@'%' IDENTIFIED BY {{password}} x".to_owned()],
            &vars(&name, &password),
        )
        .await
        .unwrap_err();
    assert!(matches!(&e, DbError::Statement { index: 0, .. }), "{e:?}");
    assert_eq!(server_error_code(&e), Some(1064), "{e}"); // ER_PARSE_ERROR
    assert_eq!(e.sqlstate(), Some("1064/42000"));
    assert_scrubbed(&e, password.expose_secret());
    assert!(e.to_string().contains("[redacted]"), "{e}");

    // The second piece of the first element fails: index 1. Not atomic: the user stays
    // until revoked.
    let e = target
        .create_user(
            &["CREATE USER '{{name}}'@'%' IDENTIFIED BY '{{password}}'; \
                 GRANT SELECT ON no_such_db_leash.nope TO '{{name}}'@'%'"
                .to_owned()],
            &vars(&name, &password),
        )
        .await
        .unwrap_err();
    assert!(matches!(&e, DbError::Statement { index: 1, .. }), "{e:?}");
    assert_scrubbed(&e, password.expose_secret());
    assert_eq!(t.hosts_of(&name).await, ["%"]);
    target.revoke_user(&name, &[]).await.unwrap();
    assert!(t.hosts_of(&name).await.is_empty());

    // Operator mistakes caught before anything runs.
    let e = target
        .create_user(
            &["GRANT {{role}} TO '{{name}}'".to_owned()],
            &vars(&name, &password),
        )
        .await
        .unwrap_err();
    assert!(matches!(e, DbError::UnknownPlaceholder { .. }), "{e:?}");
    for empty in [vec![], vec![" ; ;".to_owned()]] {
        let e = target
            .create_user(&empty, &vars(&name, &password))
            .await
            .unwrap_err();
        assert!(matches!(e, DbError::NoStatements { .. }), "{e:?}");
    }
    let e = target
        .revoke_user(&name, &["DROP USER '{{password}}'".to_owned()])
        .await
        .unwrap_err();
    assert!(
        matches!(e, DbError::MissingValue { name: "password" }),
        "{e:?}"
    );
    t.cleanup().await;
}

#[tokio::test]
async fn revoke_kills_sessions_and_drops_every_host() {
    let Some(mut t) = TestDb::new().await else {
        return;
    };
    let target = t.target().await;
    let name = t.username("ro");
    let password = generate_password();
    // The same name at two hosts: the default revocation drops both.
    let mut statements = issue(&t.db);
    statements.push("CREATE USER '{{name}}'@'localhost' IDENTIFIED BY '{{password}}'".to_owned());
    target
        .create_user(&statements, &vars(&name, &password))
        .await
        .unwrap();
    let mut hosts = t.hosts_of(&name).await;
    hosts.sort();
    assert_eq!(hosts, ["%", "localhost"]);

    let mut s1 = t.login(&name, password.expose_secret()).await.unwrap();
    let mut s2 = t.login(&name, password.expose_secret()).await.unwrap();
    s1.query_drop("SELECT 1").await.unwrap();
    assert_eq!(t.sessions_of(&name).await, 2);

    target.revoke_user(&name, &[]).await.unwrap();

    assert!(
        s1.query_drop("SELECT 1").await.is_err(),
        "session 1 survived"
    );
    assert!(
        s2.query_drop("SELECT 1").await.is_err(),
        "session 2 survived"
    );
    assert_eq!(t.wait_no_sessions(&name).await, 0);
    assert!(t.hosts_of(&name).await.is_empty());
    // MariaDB answers 1698 rather than 1045 for a user that does not exist.
    let e = t.login(&name, password.expose_secret()).await.unwrap_err();
    assert!(matches!(code(&e), Some(1045 | 1698)), "{e}");
    // Revoking again is fine.
    target.revoke_user(&name, &[]).await.unwrap();
    t.cleanup().await;
}

#[tokio::test]
async fn revoking_a_missing_user_succeeds() {
    let Some(mut t) = TestDb::new().await else {
        return;
    };
    let target = t.target().await;
    let ghost = t.username("ghost");
    target.revoke_user(&ghost, &[]).await.unwrap();
    // Vault's default statements fail for a missing user (REVOKE: 1141/1269,
    // DROP USER: 1396); the user is gone, so that counts as revoked.
    target
        .revoke_user(&ghost, &[VAULT_DEFAULT_REVOCATION.to_owned()])
        .await
        .unwrap();

    // The same kind of error while the user still exists is a failure.
    let name = t.username("ro");
    let password = generate_password();
    target
        .create_user(&issue(&t.db), &vars(&name, &password))
        .await
        .unwrap();
    let e = target
        .revoke_user(&name, &["DROP USER '{{name}}'@'nohost.invalid'".to_owned()])
        .await
        .unwrap_err();
    assert!(matches!(&e, DbError::Statement { index: 0, .. }), "{e:?}");
    assert_eq!(server_error_code(&e), Some(1396), "{e}");
    assert_eq!(t.hosts_of(&name).await, ["%"]);
    // Vault's default statements work on a real user.
    target
        .revoke_user(&name, &[VAULT_DEFAULT_REVOCATION.to_owned()])
        .await
        .unwrap();
    assert!(t.hosts_of(&name).await.is_empty());
    t.cleanup().await;
}

#[tokio::test]
async fn revoke_users_batch() {
    let Some(mut t) = TestDb::new().await else {
        return;
    };
    let target = t.target().await;
    let password = generate_password();
    let mut names = Vec::new();
    for _ in 0..20 {
        let name = t.username("ro");
        target
            .create_user(&issue(&t.db), &vars(&name, &password))
            .await
            .unwrap();
        names.push(name);
    }
    let mut sessions = Vec::new();
    for name in names.iter().step_by(4) {
        sessions.push(t.login(name, password.expose_secret()).await.unwrap());
    }
    let stubborn = t.username("st");
    target
        .create_user(&issue(&t.db), &vars(&stubborn, &password))
        .await
        .unwrap();

    let mut batch: Vec<(String, Vec<String>)> =
        names.iter().map(|n| (n.clone(), Vec::new())).collect();
    batch.push((t.username("ghost"), Vec::new()));
    batch.push((stubborn.clone(), vec!["SELEC 1".to_owned()]));
    batch.push((
        stubborn.clone(),
        vec!["DROP USER '{{password}}'".to_owned()],
    ));
    let results = target.revoke_users(&batch).await;

    assert_eq!(results.len(), batch.len());
    for (i, r) in results[..21].iter().enumerate() {
        assert!(r.is_ok(), "{i}: {r:?}");
    }
    let e = results[21].as_ref().unwrap_err();
    assert_eq!(server_error_code(e), Some(1064), "{e}");
    assert!(matches!(
        results[22],
        Err(DbError::MissingValue { name: "password" })
    ));
    for mut s in sessions {
        assert!(
            s.query_drop("SELECT 1").await.is_err(),
            "a session survived"
        );
    }
    for name in &names {
        assert!(t.hosts_of(name).await.is_empty(), "{name} survived");
        assert_eq!(t.wait_no_sessions(name).await, 0);
    }
    assert_eq!(t.hosts_of(&stubborn).await, ["%"]);
    assert!(target.revoke_users(&[]).await.is_empty());
    t.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_creates_all_succeed() {
    let Some(mut t) = TestDb::new().await else {
        return;
    };
    let target = Arc::new(t.target().await);
    let mut set = JoinSet::new();
    for _ in 0..16 {
        let target = Arc::clone(&target);
        let name = t.username("cc");
        let statements = issue(&t.db);
        set.spawn(async move {
            let password = generate_password();
            target
                .create_user(&statements, &vars(&name, &password))
                .await
                .map(|()| name)
        });
    }
    let mut names = Vec::new();
    while let Some(joined) = set.join_next().await {
        names.push(joined.unwrap().unwrap());
    }
    assert_eq!(names.len(), 16);
    for name in &names {
        assert_eq!(t.hosts_of(name).await, ["%"], "{name}");
    }
    let batch: Vec<(String, Vec<String>)> = names.iter().map(|n| (n.clone(), Vec::new())).collect();
    for r in target.revoke_users(&batch).await {
        r.unwrap();
    }
    for name in &names {
        assert!(t.hosts_of(name).await.is_empty());
    }
    t.cleanup().await;
}

#[tokio::test]
async fn rotate_root_on_a_dedicated_admin() {
    let Some(mut t) = TestDb::new().await else {
        return;
    };
    // An admin at a specific host rather than '%': Vault's '%' default would fail
    // (1396), leash alters the account CURRENT_USER() names.
    let admin = format!("ladm_{}", t.tag);
    let admin_host = if t.host() == "127.0.0.1" {
        "127.0.0.1"
    } else {
        "%"
    };
    let initial = generate_password();
    t.admin
        .query_drop(format!(
            "CREATE USER '{admin}'@'{admin_host}' IDENTIFIED BY '{}'",
            initial.expose_secret()
        ))
        .await
        .unwrap();
    t.admin
        .query_drop(format!(
            "GRANT ALL ON *.* TO '{admin}'@'{admin_host}' WITH GRANT OPTION"
        ))
        .await
        .unwrap();

    // Vault's Go DSN form.
    let config = MySqlConfig::new(
        format!(
            "{{{{username}}}}:{{{{password}}}}@tcp({}:{})/{}",
            t.host(),
            t.port(),
            t.db
        ),
        admin.as_str(),
        initial.clone(),
    );
    let target = MySqlTarget::connect(config).await.unwrap();
    let debug = format!("{target:?}");
    assert!(!debug.contains(initial.expose_secret()), "{debug}");

    let rotated = generate_password();
    target.rotate_root(&[], &rotated).await.unwrap();
    let e = t.login(&admin, initial.expose_secret()).await.unwrap_err();
    assert_eq!(code(&e), Some(1045), "old password still works: {e}");
    let mut c = t.login(&admin, rotated.expose_secret()).await.unwrap();
    let who: Option<String> = c.query_first("SELECT CURRENT_USER()").await.unwrap();
    assert_eq!(who, Some(format!("{admin}@{admin_host}")));
    drop(c);

    // The target goes on working, on fresh connections too.
    target.reset().await.unwrap();
    let name = t.username("ro");
    let password = generate_password();
    target
        .create_user(&issue(&t.db), &vars(&name, &password))
        .await
        .unwrap();
    t.login(&name, password.expose_secret()).await.unwrap();
    target.revoke_user(&name, &[]).await.unwrap();

    // Custom statements, with {{username}} and {{password}}.
    let again = generate_password();
    target
        .rotate_root(
            &[format!(
                "ALTER USER '{{{{username}}}}'@'{admin_host}' IDENTIFIED BY '{{{{password}}}}'"
            )],
            &again,
        )
        .await
        .unwrap();
    assert!(t.login(&admin, rotated.expose_secret()).await.is_err());
    t.login(&admin, again.expose_secret()).await.unwrap();
    target.reset().await.unwrap();
    target
        .create_user(&issue(&t.db), &vars(&name, &password))
        .await
        .unwrap();
    target.revoke_user(&name, &[]).await.unwrap();

    // A failing rotation changes nothing and reports no password.
    let failed = generate_password();
    let e = target
        .rotate_root(
            &["ALTER USER nobody_here IDENTIFIED BY '{{password}}'".to_owned()],
            &failed,
        )
        .await
        .unwrap_err();
    assert_scrubbed(&e, failed.expose_secret());
    assert_scrubbed(&e, again.expose_secret());
    target.reset().await.unwrap();
    t.login(&admin, again.expose_secret()).await.unwrap();
    t.cleanup().await;
}

#[tokio::test]
async fn rotate_root_refuses_another_account() {
    let Some(t) = TestDb::new().await else {
        return;
    };
    // The URL logs in as the test's root, but the configured username differs.
    let mut config = t.config();
    config.connection_url = base_url();
    config.username = "someone_else".to_owned();
    let target = MySqlTarget::connect(config).await.unwrap();
    let e = target
        .rotate_root(&[], &generate_password())
        .await
        .unwrap_err();
    assert!(
        matches!(
            &e,
            DbError::Database {
                operation: "rotate root",
                ..
            }
        ),
        "{e:?}"
    );
    t.cleanup().await;
}

#[tokio::test]
async fn bad_connections_fail_with_the_reason_and_no_password() {
    let Some(mut t) = TestDb::new().await else {
        return;
    };
    let name = format!("v-{}-bad", t.tag);
    let right = generate_password();
    t.admin
        .query_drop(format!(
            "CREATE USER '{name}'@'%' IDENTIFIED BY '{}'",
            right.expose_secret()
        ))
        .await
        .unwrap();
    let wrong = "Wr0ng-Passw0rd-zzz";

    // Nothing listens on port 1.
    let e = MySqlTarget::connect(MySqlConfig::new(
        format!("{{{{username}}}}:{{{{password}}}}@tcp({}:1)/", t.host()),
        name.as_str(),
        secret(wrong),
    ))
    .await
    .unwrap_err();
    assert!(
        matches!(&e, DbError::Connect { message } if !message.is_empty()),
        "{e:?}"
    );
    assert_scrubbed(&e, wrong);

    // Wrong password, in the config and literally in a URL.
    for (url, password) in [
        (
            format!(
                "{{{{username}}}}:{{{{password}}}}@tcp({}:{})/",
                t.host(),
                t.port()
            ),
            wrong,
        ),
        (
            format!("mysql://{name}:{wrong}@{}:{}/", t.host(), t.port()),
            "",
        ),
    ] {
        let e = MySqlTarget::connect(MySqlConfig::new(url, name.as_str(), secret(password)))
            .await
            .unwrap_err();
        assert!(
            matches!(&e, DbError::Connect { message } if message.contains("1045") && message.contains("Access denied")),
            "{e:?}"
        );
        assert_scrubbed(&e, wrong);
    }
    // The right one works.
    let target = MySqlTarget::connect(MySqlConfig::new(
        format!(
            "{{{{username}}}}:{{{{password}}}}@tcp({}:{})/",
            t.host(),
            t.port()
        ),
        name.as_str(),
        right,
    ))
    .await
    .unwrap();
    target.reset().await.unwrap();
    t.cleanup().await;
}

/// Compile-time check: every operation's future can be spawned or held across an axum
/// handler (`Send`), so the engine can call the target from any task.
#[allow(dead_code)]
fn futures_are_send(target: &MySqlTarget, vars: &Vars, password: &SecretString) {
    fn is_send<T: Send>(_: T) {}
    is_send(MySqlTarget::connect(MySqlConfig::new("/", "u", secret(""))));
    is_send(target.create_user(&[], vars));
    is_send(target.renew_user(&[], vars));
    is_send(target.revoke_user("u", &[]));
    is_send(target.revoke_users(&[]));
    is_send(target.rotate_root(&[], password));
    is_send(target.reset());
}
