//! TLS to the databases: the database engine against a private PostgreSQL cluster and a
//! private MariaDB server, each started by the test with a certificate the test makes
//! (`openssl`, see `auth_jwt::support`) and accepting only TLS on TCP. The machine's
//! shared servers are never touched. Without the server binaries the tests are skipped
//! (with the reason printed), except under CI where that is a failure.

use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::Duration;

use leash_testkit::TestServer;
use serde_json::{Value, json};

use crate::auth_jwt::support::pki;
use crate::eventually;
use crate::pg_outage::{PrivatePg, free_port, is_root, pg_bindir, text};

fn skip(reason: &str) {
    assert!(
        std::env::var_os("CI").is_none(),
        "{reason} (needed under CI)"
    );
    eprintln!("skipped: {reason}");
}

/// Writes `contents` to `dir/name`, 0600, owned by `postgres` when the cluster runs as
/// that user (PostgreSQL refuses a key file others can read).
fn write_private(dir: &Path, name: &str, contents: &str, chown_postgres: bool) -> PathBuf {
    use std::os::unix::fs::PermissionsExt as _;
    let path = dir.join(name);
    std::fs::write(&path, contents).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    if chown_postgres {
        let ok = Command::new("chown")
            .args(["postgres:", &path.display().to_string()])
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "chown {}", path.display());
    }
    path
}

/// Runs `openssl` in `dir`.
fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap();
    assert!(out.status.success(), "openssl {args:?}: {}", text(&out));
}

/// A CA for client certificates and a client certificate for the PostgreSQL user
/// `postgres` it signed: `(ca_pem, cert_pem, key_pem)`.
fn client_pki(dir: &Path) -> (String, String, String) {
    let ec = ["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256"];
    openssl(dir, &[&["genpkey"][..], &ec, &["-out", "cca.key"]].concat());
    std::fs::write(
        dir.join("cca.cnf"),
        "[req]\ndistinguished_name = dn\nprompt = no\nx509_extensions = v3_ca\n\
         [dn]\nCN = leash test client CA\n\
         [v3_ca]\nbasicConstraints = critical, CA:TRUE\nkeyUsage = critical, keyCertSign, cRLSign\n\
         subjectKeyIdentifier = hash\n",
    )
    .unwrap();
    openssl(
        dir,
        &[
            "req", "-x509", "-new", "-key", "cca.key", "-config", "cca.cnf", "-days", "2", "-out",
            "cca.pem",
        ],
    );
    openssl(
        dir,
        &[&["genpkey"][..], &ec, &["-out", "client.key"]].concat(),
    );
    openssl(
        dir,
        &[
            "req",
            "-new",
            "-key",
            "client.key",
            "-subj",
            "/CN=postgres",
            "-out",
            "client.csr",
        ],
    );
    std::fs::write(
        dir.join("client.ext"),
        "basicConstraints = CA:FALSE\nkeyUsage = critical, digitalSignature\nextendedKeyUsage = clientAuth\n",
    )
    .unwrap();
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            "client.csr",
            "-CA",
            "cca.pem",
            "-CAkey",
            "cca.key",
            "-CAcreateserial",
            "-days",
            "2",
            "-extfile",
            "client.ext",
            "-out",
            "client.pem",
        ],
    );
    let read = |f: &str| std::fs::read_to_string(dir.join(f)).unwrap();
    (read("cca.pem"), read("client.pem"), read("client.key"))
}

async fn write_config(srv: &TestServer, name: &str, body: Value) -> (u16, Value) {
    srv.root("POST", &format!("database/config/{name}"), Some(body))
        .await
}

/// Connections of the cluster over TCP, and how many of them are TLS.
async fn tcp_sessions(admin: &tokio_postgres::Client) -> (i64, i64) {
    let row = admin
        .query_one(
            "SELECT count(*), count(*) FILTER (WHERE s.ssl) \
             FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid) \
             WHERE a.client_addr IS NOT NULL",
            &[],
        )
        .await
        .unwrap();
    (row.get(0), row.get(1))
}

/// A private PostgreSQL cluster that takes TLS only on TCP (`hba_tcp`: `pg_hba.conf`
/// lines, each `hostssl`), with the certificate `pki().server` (for 127.0.0.1 and
/// localhost) and, when given, `client_ca` (PEM) for `cert` logins; its Unix socket
/// stays open for the test's own admin connection, returned with it. `None` (the reason
/// printed, a failure under CI) without PostgreSQL's server binaries or `openssl`.
pub(crate) async fn tls_only_pg(
    hba_tcp: &str,
    client_ca: Option<&str>,
) -> Option<(PrivatePg, tokio_postgres::Client)> {
    let Some(bin) = pg_bindir() else {
        skip("no /usr/lib/postgresql/*/bin/initdb (apt-get install postgresql)");
        return None;
    };
    if Command::new("openssl").arg("version").output().is_err() {
        skip("no openssl command to make the test certificates");
        return None;
    }
    let pki = pki();
    let pg = tokio::task::block_in_place(|| PrivatePg::init(bin));
    let dir = pg.dir.path();
    let cert = write_private(dir, "server.crt", &pki.server.cert_pem, pg.as_postgres);
    let key = write_private(dir, "server.key", &pki.server.key_pem, pg.as_postgres);
    std::fs::write(
        pg.data().join("pg_hba.conf"),
        format!("local all all trust\n{hba_tcp}"),
    )
    .unwrap();
    let mut ssl = format!(
        "-c ssl=on -c ssl_cert_file={} -c ssl_key_file={}",
        cert.display(),
        key.display(),
    );
    if let Some(ca) = client_ca {
        let file = write_private(dir, "client-ca.pem", ca, pg.as_postgres);
        ssl.push_str(&format!(" -c ssl_ca_file={}", file.display()));
    }
    assert!(
        tokio::task::block_in_place(|| pg.start_with(&ssl)),
        "could not start the private cluster with ssl=on"
    );
    let admin_url = format!(
        "host={} port={} user=postgres dbname=postgres",
        dir.display(),
        pg.port
    );
    let connect_admin = || async {
        let (c, conn) = tokio_postgres::connect(&admin_url, tokio_postgres::NoTls)
            .await
            .ok()?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        Some(c)
    };
    eventually(
        "the private cluster accepts connections",
        Duration::from_secs(30),
        || async { connect_admin().await.is_some() },
    )
    .await;
    let admin = connect_admin().await.unwrap();
    Some((pg, admin))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_tls_modes_against_a_tls_only_cluster() {
    let pki_dir = tempfile::tempdir().unwrap();
    if Command::new("openssl").arg("version").output().is_err() {
        return skip("no openssl command to make the test certificates");
    }
    let (client_ca, client_cert, client_key) =
        tokio::task::block_in_place(|| client_pki(pki_dir.path()));
    // TCP only with TLS; the Unix socket (the test's own admin connection) stays open.
    // Database `certdb` takes a client certificate instead of a password.
    let Some((pg, admin)) = tls_only_pg(
        "hostssl certdb all 127.0.0.1/32 cert\nhostssl all all 127.0.0.1/32 trust\n",
        Some(&client_ca),
    )
    .await
    else {
        return;
    };
    let pki = pki();
    let dir = pg.dir.path();

    let srv = TestServer::start().await;
    let (s, b) = srv
        .root(
            "POST",
            "sys/mounts/database",
            Some(json!({"type": "database"})),
        )
        .await;
    assert_eq!(s, 204, "{b}");
    let url = |query: &str| {
        format!(
            "postgresql://{{{{username}}}}:{{{{password}}}}@127.0.0.1:{}/postgres{query}",
            pg.port
        )
    };
    let base = |connection_url: String| {
        json!({
            "plugin_name": "postgresql-database-plugin",
            "connection_url": connection_url,
            "username": "postgres",
            "password": "not-checked-under-trust",
            "allowed_roles": "*",
        })
    };

    // verify-full with the right CA, given as the tls_ca field: credentials over TLS.
    let mut body = base(url("?sslmode=verify-full"));
    body["tls_ca"] = json!(pki.ca_pem);
    let (s, b) = write_config(&srv, "full", body).await;
    assert_eq!(s, 204, "verify-full with the right CA: {b}");
    let (s, b) = srv
        .root(
            "POST",
            "database/roles/tls",
            Some(json!({
                "db_name": "full",
                "creation_statements": [
                    "CREATE ROLE \"{{name}}\" WITH LOGIN PASSWORD '{{password}}' VALID UNTIL '{{expiration}}';"
                ],
                "default_ttl": 300,
            })),
        )
        .await;
    assert!(s == 204 || s == 200, "{b}");
    let (s, b) = srv.root("GET", "database/creds/tls", None).await;
    assert_eq!(s, 200, "credentials over verify-full: {b}");
    let user = b["data"]["username"].as_str().unwrap().to_owned();
    let exists = admin
        .query_one("SELECT count(*) FROM pg_roles WHERE rolname = $1", &[&user])
        .await
        .unwrap()
        .get::<_, i64>(0);
    assert_eq!(exists, 1, "the role was made");
    let (tcp, tls) = tcp_sessions(&admin).await;
    assert!(
        tcp > 0 && tcp == tls,
        "the server saw TLS only: {tls} of {tcp}"
    );
    // The read shows the TLS settings, not the password.
    let (s, b) = srv.root("GET", "database/config/full", None).await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["data"]["connection_details"]["tls_ca"], json!(pki.ca_pem));

    // The same with the CA as a file named in the URL (libpq's sslrootcert).
    let ca_file = write_private(dir, "ca.pem", &pki.ca_pem, false);
    let (s, b) = write_config(
        &srv,
        "full-url",
        base(url(&format!(
            "?sslmode=verify-full&sslrootcert={}",
            ca_file.display()
        ))),
    )
    .await;
    assert_eq!(s, 204, "sslrootcert in the URL: {b}");

    // A wrong CA is refused, and the message says it is the CA.
    let mut body = base(url("?sslmode=verify-full"));
    body["tls_ca"] = json!(pki.rogue_ca_pem);
    let (s, b) = write_config(&srv, "wrong-ca", body).await;
    assert_eq!(s, 400, "{b}");
    let msg = b.to_string();
    assert!(
        msg.contains("not signed by the CA") && msg.contains("UnknownIssuer"),
        "the error names the CA problem: {msg}"
    );
    let mut body = base(url("?sslmode=verify-ca"));
    body["tls_ca"] = json!(pki.rogue_ca_pem);
    let (s, b) = write_config(&srv, "wrong-ca", body).await;
    assert_eq!(s, 400, "verify-ca checks the chain too: {b}");

    // verify-ca checks the chain only; verify-full also the name.
    let mut body = base(url("?sslmode=verify-ca"));
    body["tls_ca"] = json!(pki.ca_pem);
    body["tls_server_name"] = json!("db.example.org");
    let (s, b) = write_config(&srv, "ca-only", body.clone()).await;
    assert_eq!(s, 204, "verify-ca ignores the name: {b}");
    body["connection_url"] = json!(url("?sslmode=verify-full"));
    let (s, b) = write_config(&srv, "name", body).await;
    assert_eq!(s, 400, "{b}");
    assert!(
        b.to_string().contains("does not name the host"),
        "the error names the name problem: {b}"
    );

    // require without a CA: encrypted, not verified.
    let (s, b) = write_config(&srv, "require", base(url("?sslmode=require"))).await;
    assert_eq!(s, 204, "require without a CA: {b}");
    // prefer (libpq's default, nothing in the URL) uses TLS when offered.
    let (s, b) = write_config(&srv, "prefer", base(url(""))).await;
    assert_eq!(s, 204, "prefer: {b}");

    // disable against a server that takes TLS only: refused, clearly.
    let (s, b) = write_config(&srv, "plain", base(url("?sslmode=disable"))).await;
    assert_eq!(s, 400, "{b}");
    assert!(
        b.to_string().contains("no encryption"),
        "the error says the connection was not encrypted: {b}"
    );
    let (tcp, tls) = tcp_sessions(&admin).await;
    assert_eq!(tcp, tls, "no plain TCP session was left open");

    // A client certificate (tls_certificate + private_key) logs in where pg_hba says
    // `cert`; without it the server refuses.
    admin.batch_execute("CREATE DATABASE certdb").await.unwrap();
    let cert_url = format!(
        "postgresql://{{{{username}}}}@127.0.0.1:{}/certdb?sslmode=verify-full",
        pg.port
    );
    let mut body = base(cert_url.clone());
    body["tls_ca"] = json!(pki.ca_pem);
    let (s, b) = write_config(&srv, "no-client-cert", body.clone()).await;
    assert_eq!(s, 400, "pg_hba cert without a client certificate: {b}");
    body["tls_certificate"] = json!(client_cert);
    body["private_key"] = json!(client_key);
    let (s, b) = write_config(&srv, "client-cert", body).await;
    assert_eq!(s, 204, "login with the client certificate: {b}");
    let (s, b) = srv.root("GET", "database/config/client-cert", None).await;
    assert_eq!(s, 200, "{b}");
    assert!(
        !b.to_string().contains("PRIVATE KEY"),
        "the private key is never returned: {b}"
    );
    tokio::task::block_in_place(|| pg.stop());
}

/// A private MariaDB server in a temporary directory, TLS only on TCP; killed on drop.
struct PrivateMariaDb {
    dir: tempfile::TempDir,
    port: u16,
    child: Child,
}

impl PrivateMariaDb {
    fn socket(&self) -> PathBuf {
        self.dir.path().join("mysqld.sock")
    }

    /// Runs SQL as root over the Unix socket (socket authentication), with the
    /// `mariadb` client.
    fn sql(&self, sql: &str) -> String {
        let out = Command::new("mariadb")
            .arg(format!("--socket={}", self.socket().display()))
            .args(["-uroot", "-N", "-B", "-e", sql])
            .output()
            .unwrap();
        assert!(out.status.success(), "mariadb -e {sql:?}: {}", text(&out));
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }

    fn ssl_accepts(&self) -> u64 {
        self.sql("SHOW GLOBAL STATUS LIKE 'Ssl_accepts'")
            .split_whitespace()
            .nth(1)
            .and_then(|n| n.parse().ok())
            .unwrap_or(0)
    }
}

impl Drop for PrivateMariaDb {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_mariadb(dir: tempfile::TempDir) -> PrivateMariaDb {
    let pki = pki();
    let d = dir.path();
    let cert = write_private(d, "server.crt", &pki.server.cert_pem, false);
    let key = write_private(d, "server.key", &pki.server.key_pem, false);
    let data = d.join("data");
    let user = if is_root() { "root" } else { "" };
    let mut install = Command::new("mariadb-install-db");
    install
        .arg("--no-defaults")
        .arg(format!("--datadir={}", data.display()))
        .args(["--auth-root-authentication-method=socket", "--skip-test-db"]);
    if !user.is_empty() {
        install.arg(format!("--user={user}"));
    }
    let out = install.output().unwrap();
    assert!(out.status.success(), "mariadb-install-db: {}", text(&out));
    let port = free_port();
    let mut cmd = Command::new("mariadbd");
    cmd.arg("--no-defaults")
        .arg(format!("--datadir={}", data.display()))
        .arg(format!("--socket={}", d.join("mysqld.sock").display()))
        .arg(format!("--pid-file={}", d.join("mysqld.pid").display()))
        .arg(format!("--port={port}"))
        .args(["--bind-address=127.0.0.1", "--skip-name-resolve"])
        .arg(format!("--ssl-cert={}", cert.display()))
        .arg(format!("--ssl-key={}", key.display()))
        .arg("--require-secure-transport=ON")
        .arg(format!("--log-error={}", d.join("error.log").display()))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    if !user.is_empty() {
        cmd.arg(format!("--user={user}"));
    }
    let child = cmd.spawn().unwrap();
    PrivateMariaDb { dir, port, child }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mariadb_tls_modes_against_a_tls_only_server() {
    for exe in ["mariadbd", "mariadb-install-db", "mariadb", "openssl"] {
        let found = Command::new("sh")
            .args(["-c", &format!("command -v {exe}")])
            .output()
            .is_ok_and(|o| o.status.success());
        if !found {
            return skip(&format!("no {exe} binary (apt-get install mariadb-server)"));
        }
    }
    let pki = pki();
    let db = tokio::task::block_in_place(|| start_mariadb(tempfile::tempdir().unwrap()));
    let socket = db.socket();
    eventually(
        "the private MariaDB accepts connections",
        Duration::from_secs(60),
        || async { socket.exists() },
    )
    .await;
    tokio::task::block_in_place(|| {
        db.sql(
            "CREATE USER 'leash'@'%' IDENTIFIED BY 'leash-test-root'; \
             GRANT ALL PRIVILEGES ON *.* TO 'leash'@'%' WITH GRANT OPTION;",
        )
    });

    let srv = TestServer::start().await;
    let (s, b) = srv
        .root(
            "POST",
            "sys/mounts/database",
            Some(json!({"type": "database"})),
        )
        .await;
    assert_eq!(s, 204, "{b}");
    let dsn = |query: &str| {
        format!(
            "{{{{username}}}}:{{{{password}}}}@tcp(127.0.0.1:{})/{query}",
            db.port
        )
    };
    let base = |connection_url: String| {
        json!({
            "plugin_name": "mysql-database-plugin",
            "connection_url": connection_url,
            "username": "leash",
            "password": "leash-test-root",
            "allowed_roles": "*",
        })
    };

    // tls=true with the right CA (Vault's tls_ca): credentials over TLS.
    let before = tokio::task::block_in_place(|| db.ssl_accepts());
    let mut body = base(dsn("?tls=true"));
    body["tls_ca"] = json!(pki.ca_pem);
    let (s, b) = write_config(&srv, "full", body).await;
    assert_eq!(s, 204, "tls=true with the right CA: {b}");
    let (s, b) = srv
        .root(
            "POST",
            "database/roles/tls",
            Some(json!({
                "db_name": "full",
                "creation_statements": "CREATE USER '{{name}}'@'%' IDENTIFIED BY '{{password}}';",
                "default_ttl": 300,
            })),
        )
        .await;
    assert!(s == 204 || s == 200, "{b}");
    let (s, b) = srv.root("GET", "database/creds/tls", None).await;
    assert_eq!(s, 200, "credentials over TLS: {b}");
    let user = b["data"]["username"].as_str().unwrap().to_owned();
    let made = tokio::task::block_in_place(|| {
        db.sql(&format!(
            "SELECT count(*) FROM mysql.user WHERE User = '{user}'"
        ))
    });
    assert_eq!(made, "1", "the user was made");
    let after = tokio::task::block_in_place(|| db.ssl_accepts());
    assert!(
        after > before,
        "the server accepted TLS ({before} → {after})"
    );

    // A CA given without tls= in the DSN means verification too (as in Vault).
    let mut body = base(dsn(""));
    body["tls_ca"] = json!(pki.ca_pem);
    let (s, b) = write_config(&srv, "ca-field", body).await;
    assert_eq!(s, 204, "{b}");

    // A wrong CA is refused, naming the CA problem.
    let mut body = base(dsn("?tls=true"));
    body["tls_ca"] = json!(pki.rogue_ca_pem);
    let (s, b) = write_config(&srv, "wrong-ca", body).await;
    assert_eq!(s, 400, "{b}");
    let msg = b.to_string();
    assert!(
        msg.contains("not signed by the CA") && msg.contains("UnknownIssuer"),
        "the error names the CA problem: {msg}"
    );

    // skip-verify (libpq's require): encrypted without a CA.
    let (s, b) = write_config(&srv, "require", base(dsn("?tls=skip-verify"))).await;
    assert_eq!(s, 204, "tls=skip-verify: {b}");
    // preferred: TLS when the server offers it.
    let (s, b) = write_config(&srv, "prefer", base(dsn("?tls=preferred"))).await;
    assert_eq!(s, 204, "tls=preferred: {b}");

    // No TLS against a server that requires it: refused, clearly.
    let (s, b) = write_config(&srv, "plain", base(dsn("?tls=false"))).await;
    assert_eq!(s, 400, "{b}");
    assert!(
        b.to_string().contains("does not use TLS"),
        "the error says the connection was not encrypted: {b}"
    );
}
