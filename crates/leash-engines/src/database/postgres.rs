//! A PostgreSQL target: runs the creation, renewal and revocation statements of dynamic
//! credentials in one database, over a small pool of connections.
//!
//! * Each operation's statements run in **one transaction**. PostgreSQL itself fails
//!   concurrent catalogue updates (two `GRANT … ON ALL TABLES` at once raise `tuple
//!   concurrently updated` or `deadlock detected`), so a transaction that fails with
//!   `40001`, `40P01` or `XX000` "tuple concurrently updated/deleted" is retried whole, with
//!   jittered exponential backoff, up to [`MAX_ATTEMPTS`] times.
//! * Each list element is sent as one simple-protocol batch, so an element may hold
//!   several `;`-separated statements (and `$$` bodies) without leash splitting them.
//! * With [`PasswordAuthentication::ScramSha256`] (the default) `{{password}}` in creation
//!   statements becomes the SCRAM verifier, never the plaintext.
//! * Revocation first forbids new logins and ends the role's sessions, then drops it;
//!   a role that no longer exists counts as revoked.
//!
//! Scale note: per-role table grants add an ACL entry per live credential to every
//! table (PostgreSQL stops at ~2 440 per table: "row is too big"). Granting a pre-made
//! group role instead (`CREATE ROLE "{{name}}" … IN ROLE agent_readonly`) has no such
//! ceiling and is much faster to create and drop.
//!
//! Requires PostgreSQL ≥ 14 (`pg_terminate_backend(pid, timeout)`). TLS as libpq's
//! `sslmode` (`disable`, `prefer` — the default —, `require`, `verify-ca`,
//! `verify-full`) with `sslrootcert`, `sslcert`, `sslkey` in the connection string, or
//! [`PgConfig::tls`] (see `leash_dbtls`); the settings are read once per target (a
//! `reset` reads certificate files again).
//!
//! Not here: leases, retries of failed revocations over time (the lease layer's job),
//! other databases of the cluster (see [`PgTarget::revoke_user`]).

use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use leash_types::secret::scrub;
use leash_types::{ExposeSecret, SecretString, random};
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinHandle;
use tokio_postgres::{Client, NoTls};

use super::DbError;
use super::pg_stream;
use super::scram::{self, scram_sha256_verifier};
use super::template::{Vars, render};

/// How many times a transaction that hit a transient conflict runs before giving up.
pub const MAX_ATTEMPTS: u32 = 10;

/// Default renewal when a role has no `renew_statements` (Vault's default).
const DEFAULT_RENEW: &str = r#"ALTER ROLE "{{name}}" VALID UNTIL '{{expiration}}';"#;

/// How long revocation waits for the terminated sessions to exit.
const TERMINATE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// Key of the advisory lock that serialises leash's role DDL in one database ("leash"
/// in ASCII; any fixed value works as long as every leash server uses the same).
const DDL_LOCK_KEY: i64 = 0x6c_65_61_73_68;

/// Transactions retried so far in this test process (lets tests show the retry path ran).
#[cfg(test)]
pub(crate) static RETRIES: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);

/// How long opening a connection may take unless the URL says (`connect_timeout`).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Default root rotation (Vault's), rendered with the root user as `{{username}}`.
const DEFAULT_ROTATE_ROOT: &str = r#"ALTER ROLE "{{username}}" WITH PASSWORD '{{password}}';"#;

/// Vault's default `max_open_connections`.
pub const DEFAULT_MAX_OPEN_CONNECTIONS: usize = 4;

/// Characters left as they are when a username or password goes into a URL.
const USERINFO: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// What `{{password}}` becomes in creation statements (Vault's `password_authentication`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PasswordAuthentication {
    /// The plaintext password (Vault's `password`); PostgreSQL hashes it itself, but the
    /// plaintext passes through its statement logs and statistics.
    Password,
    /// A SCRAM-SHA-256 verifier computed by leash with this many iterations (Vault's
    /// `scram-sha-256`). See [`scram`] for why a low count is safe for leash's passwords.
    ScramSha256 {
        /// PBKDF2 iterations; PostgreSQL's own default is 4 096.
        iterations: u32,
    },
}

impl Default for PasswordAuthentication {
    fn default() -> Self {
        PasswordAuthentication::ScramSha256 {
            iterations: scram::DEFAULT_ITERATIONS,
        }
    }
}

/// How to reach a database, in Vault's `database/config/:name` terms.
pub struct PgConfig {
    /// `postgresql://{{username}}:{{password}}@host:5432/db?sslmode=disable`, or a
    /// `key=value` string. `{{username}}`/`{{password}}` are replaced (percent-encoded in
    /// URL form; inserted as they are in `key=value` form) by the fields below.
    pub connection_url: String,
    /// The root (management) user.
    pub username: String,
    /// The root user's password.
    pub password: SecretString,
    /// Upper bound on connections leash opens to this database.
    pub max_open_connections: usize,
    /// What `{{password}}` becomes in creation statements.
    pub password_authentication: PasswordAuthentication,
    /// Whether the root password may be sent when the server asks for it in cleartext
    /// (`AuthenticationCleartextPassword`). Off by default: such a request fails the
    /// connection before the password is written.
    pub allow_cleartext_password: bool,
    /// TLS settings given as separate fields (`tls_ca`, `tls_certificate`,
    /// `private_key`, `tls_server_name`, `tls_skip_verify`), applied over the
    /// connection string's `sslmode`, `sslrootcert`, `sslcert`, `sslkey`.
    pub tls: leash_dbtls::TlsOptions,
}

impl PgConfig {
    /// A configuration with Vault's defaults (4 connections, SCRAM verifiers).
    pub fn new(
        connection_url: impl Into<String>,
        username: impl Into<String>,
        password: SecretString,
    ) -> PgConfig {
        PgConfig {
            connection_url: connection_url.into(),
            username: username.into(),
            password,
            max_open_connections: DEFAULT_MAX_OPEN_CONNECTIONS,
            password_authentication: PasswordAuthentication::default(),
            allow_cleartext_password: false,
            tls: leash_dbtls::TlsOptions::default(),
        }
    }
}

/// `url` with whatever sits between `://` and `@` hidden (it may hold a literal password).
fn redact_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => format!("{}[redacted]{}", &url[..s + 3], &url[at..]),
        _ if url.contains("password") => "[redacted]".to_owned(),
        _ => url.to_owned(),
    }
}

impl fmt::Debug for PgConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PgConfig")
            .field("connection_url", &redact_url(&self.connection_url))
            .field("username", &self.username)
            .field("password", &"[redacted]")
            .field("max_open_connections", &self.max_open_connections)
            .field("password_authentication", &self.password_authentication)
            .field("allow_cleartext_password", &self.allow_cleartext_password)
            .finish()
    }
}

/// `s` as a PostgreSQL identifier: double-quoted, inner quotes doubled.
pub fn quote_ident(s: &str) -> String {
    format!("\"{}\"", s.replace('"', "\"\""))
}

/// (SQLSTATE, message) of a driver error, scrubbed.
fn parts(e: &tokio_postgres::Error, secrets: &[&str]) -> (String, String) {
    match e.as_db_error() {
        Some(db) => (db.code().code().to_owned(), scrub(db.message(), secrets)),
        None => (String::new(), scrub(&super::error_chain(e), secrets)),
    }
}

fn db_error(operation: &'static str, e: &tokio_postgres::Error, secrets: &[&str]) -> DbError {
    let (sqlstate, message) = parts(e, secrets);
    DbError::Database {
        operation,
        sqlstate,
        message,
    }
}

/// Is this a conflict PostgreSQL raises between concurrent catalogue updates, which a
/// fresh attempt of the same transaction resolves?
fn is_transient(e: &DbError) -> bool {
    let (DbError::Statement {
        sqlstate, message, ..
    }
    | DbError::Database {
        sqlstate, message, ..
    }) = e
    else {
        return false;
    };
    match sqlstate.as_str() {
        "40001" | "40P01" => true,
        "XX000" => {
            message.contains("tuple concurrently updated")
                || message.contains("tuple concurrently deleted")
        }
        _ => false,
    }
}

/// Sleep before attempt `attempt + 1`: half of an exponentially growing step (10 ms
/// doubling, capped at 640 ms) plus a random share of the other half.
fn backoff(attempt: u32) -> Duration {
    let step_ms = 10u64 << attempt.saturating_sub(1).min(6);
    let jitter = u64::from(u32::from_le_bytes(random::bytes::<4>())) % (step_ms / 2 + 1);
    Duration::from_millis(step_ms / 2 + jitter)
}

/// One open connection and the task that drives it; dropping it closes both.
struct Conn {
    client: Client,
    task: JoinHandle<()>,
}

impl Drop for Conn {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A connection lent out of the pool; returned to it on drop unless it broke.
struct Checkout<'a> {
    conn: Option<Conn>,
    idle: &'a Mutex<Vec<Conn>>,
    _permit: OwnedSemaphorePermit,
}

impl Checkout<'_> {
    fn client(&mut self) -> Result<&mut Client, DbError> {
        match self.conn.as_mut() {
            Some(c) => Ok(&mut c.client),
            None => Err(DbError::Connect {
                message: "connection already returned".to_owned(),
            }),
        }
    }
}

impl Drop for Checkout<'_> {
    fn drop(&mut self) {
        if let Some(conn) = self.conn.take()
            && !conn.client.is_closed()
            && let Ok(mut idle) = self.idle.lock()
        {
            idle.push(conn);
        }
    }
}

/// One PostgreSQL database leash manages credentials in.
pub struct PgTarget {
    config: tokio_postgres::Config,
    idle: Mutex<Vec<Conn>>,
    permits: Arc<Semaphore>,
    auth: PasswordAuthentication,
    /// See [`PgConfig::allow_cleartext_password`].
    allow_cleartext: bool,
    /// Kept only to scrub it out of driver error messages.
    root_password: SecretString,
    /// How new connections negotiate TLS.
    tls: leash_dbtls::pg::PgTls,
}

impl fmt::Debug for PgTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PgTarget")
            .field("hosts", &self.config.get_hosts())
            .field("ports", &self.config.get_ports())
            .field("dbname", &self.config.get_dbname())
            .field("user", &self.config.get_user())
            .field("password_authentication", &self.auth)
            .field("sslmode", &self.tls.mode())
            .finish_non_exhaustive()
    }
}

impl PgTarget {
    /// Parses `config.connection_url` (after substituting `{{username}}` and
    /// `{{password}}`) and opens one connection to check it works (Vault's
    /// `verify_connection`). Errors say why, without the URL or password.
    pub async fn connect(config: PgConfig) -> Result<PgTarget, DbError> {
        let password = config.password.expose_secret();
        let is_url = config.connection_url.starts_with("postgresql://")
            || config.connection_url.starts_with("postgres://");
        let (user, pass) = if is_url {
            (
                utf8_percent_encode(&config.username, USERINFO).to_string(),
                utf8_percent_encode(password, USERINFO).to_string(),
            )
        } else {
            (config.username.clone(), password.to_owned())
        };
        let url = config
            .connection_url
            .replace("{{username}}", &user)
            .replace("{{password}}", &pass);
        let secrets = [password, pass.as_str()];
        let tls_error = |e: leash_dbtls::DbTlsError| DbError::InvalidConnectionUrl {
            reason: scrub(&e.to_string(), &secrets),
        };
        let (url, mut tls) = leash_dbtls::split_pg_url(&url).map_err(tls_error)?;
        tls.overlay(&config.tls);
        let tls = leash_dbtls::pg::PgTls::new(&tls).map_err(tls_error)?;
        let mut pg_config: tokio_postgres::Config =
            url.parse()
                .map_err(|e: tokio_postgres::Error| DbError::InvalidConnectionUrl {
                    reason: scrub(&e.to_string(), &secrets),
                })?;
        // A target that does not answer must not hold an issuance or the expiry worker
        // for the OS's TCP timeout (minutes).
        if pg_config.get_connect_timeout().is_none() {
            pg_config.connect_timeout(CONNECT_TIMEOUT);
        }
        let target = PgTarget {
            config: pg_config,
            idle: Mutex::new(Vec::new()),
            permits: Arc::new(Semaphore::new(config.max_open_connections.max(1))),
            auth: config.password_authentication,
            allow_cleartext: config.allow_cleartext_password,
            root_password: config.password,
            tls,
        };
        // Verify now; the connection stays in the pool.
        drop(target.checkout().await?);
        Ok(target)
    }

    /// What `{{password}}` becomes in this target's creation statements.
    pub fn password_authentication(&self) -> PasswordAuthentication {
        self.auth
    }

    async fn open(&self) -> Result<Conn, DbError> {
        let timeout = self
            .config
            .get_connect_timeout()
            .copied()
            .unwrap_or(CONNECT_TIMEOUT);
        let stream = pg_stream::open(&self.config, &self.tls, self.allow_cleartext)
            .await
            .map_err(|e| DbError::Connect {
                message: scrub(&e.to_string(), &[self.root_password.expose_secret()]),
            })?;
        let (client, connection) =
            match tokio::time::timeout(timeout, self.config.connect_raw(stream, NoTls)).await {
                Ok(Ok(c)) => c,
                Ok(Err(e)) => {
                    let (_, message) = parts(&e, &[self.root_password.expose_secret()]);
                    return Err(DbError::Connect { message });
                }
                Err(_) => {
                    return Err(DbError::Connect {
                        message: "timed out logging in".to_owned(),
                    });
                }
            };
        // The connection future ends when `client` is dropped; `Conn` aborts it too.
        let task = tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(error = %e, "postgresql connection ended");
            }
        });
        Ok(Conn { client, task })
    }

    async fn checkout(&self) -> Result<Checkout<'_>, DbError> {
        let permit = Arc::clone(&self.permits)
            .acquire_owned()
            .await
            .map_err(|_| DbError::Connect {
                message: "connection pool closed".to_owned(),
            })?;
        let reused = loop {
            let next = match self.idle.lock() {
                Ok(mut idle) => idle.pop(),
                Err(_) => None,
            };
            match next {
                Some(c) if c.client.is_closed() => continue,
                other => break other,
            }
        };
        let conn = match reused {
            Some(c) => c,
            None => self.open().await?,
        };
        Ok(Checkout {
            conn: Some(conn),
            idle: &self.idle,
            _permit: permit,
        })
    }

    /// Runs `statements` (already rendered) in one transaction, once.
    async fn try_transaction(
        &self,
        statements: &[String],
        secrets: &[&str],
    ) -> Result<(), DbError> {
        let mut checkout = self.checkout().await?;
        let client = checkout.client()?;
        let tx = client
            .transaction()
            .await
            .map_err(|e| db_error("BEGIN", &e, secrets))?;
        // Serialise leash's role DDL per database. Concurrent `GRANT … ON ALL TABLES`
        // transactions fail inside PostgreSQL ("tuple concurrently updated", deadlocks:
        // ~80 % of attempts with 4 clients); retries alone can run out under load. A
        // transaction-scoped advisory lock makes them queue instead, across every leash
        // server sharing the database, and is released at COMMIT/ROLLBACK. Retries stay
        // as the backstop for conflicts with DDL that leash does not run.
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&DDL_LOCK_KEY])
            .await
            .map_err(|e| db_error("pg_advisory_xact_lock", &e, secrets))?;
        for (index, statement) in statements.iter().enumerate() {
            tx.batch_execute(statement).await.map_err(|e| {
                let (sqlstate, message) = parts(&e, secrets);
                DbError::Statement {
                    index,
                    sqlstate,
                    message,
                }
            })?;
        }
        tx.commit()
            .await
            .map_err(|e| db_error("COMMIT", &e, secrets))
    }

    /// Runs `statements` in one transaction, retrying the whole transaction on
    /// transient conflicts. `secrets` are scrubbed from any error message.
    async fn transaction(&self, statements: &[String], secrets: &[&str]) -> Result<(), DbError> {
        let mut attempt = 1;
        loop {
            match self.try_transaction(statements, secrets).await {
                Ok(()) => return Ok(()),
                Err(e) if is_transient(&e) => {
                    if attempt >= MAX_ATTEMPTS {
                        return Err(DbError::RetriesExhausted {
                            attempts: attempt,
                            last: Box::new(e),
                        });
                    }
                    tracing::debug!(attempt, error = %e, "transient conflict; retrying transaction");
                    #[cfg(test)]
                    RETRIES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    tokio::time::sleep(backoff(attempt)).await;
                    attempt += 1;
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Creates the credential: renders `statements` with `vars` and runs them in one
    /// transaction. With SCRAM (the default) `{{password}}` becomes a verifier of
    /// `vars`' password. Nothing is left behind when it fails.
    pub async fn create_user(&self, statements: &[String], vars: &Vars) -> Result<(), DbError> {
        if statements.is_empty() {
            return Err(DbError::NoStatements {
                operation: "creation",
            });
        }
        let plaintext = vars
            .password()
            .map(|p| zeroize::Zeroizing::new(p.expose_secret().to_owned()));
        let verifier = match (self.auth, &plaintext) {
            (PasswordAuthentication::ScramSha256 { iterations }, Some(p)) => {
                // PBKDF2 takes ~0.5 ms at 4 096 iterations: off the async workers.
                let p = zeroize::Zeroizing::new(p.clone());
                Some(
                    tokio::task::spawn_blocking(move || scram_sha256_verifier(&p, iterations))
                        .await
                        .map_err(|_| DbError::Scram {
                            reason: "verifier computation was cancelled",
                        })??,
                )
            }
            _ => None,
        };
        let rendered = match &verifier {
            Some(v) => {
                let mut with_verifier =
                    Vars::new(vars.name()).with_password(SecretString::from(v.clone()));
                if let Some(e) = vars.expiration() {
                    with_verifier = with_verifier.with_expiration(e);
                }
                render_all(statements, &with_verifier)?
            }
            None => render_all(statements, vars)?,
        };
        let secrets = [
            plaintext.as_ref().map_or("", |p| p.as_str()),
            verifier.as_deref().unwrap_or_default(),
        ];
        self.transaction(&rendered, &secrets).await
    }

    /// Extends the credential: renders `statements` (by default
    /// `ALTER ROLE "{{name}}" VALID UNTIL '{{expiration}}'`) with `vars` and runs them in
    /// one transaction.
    pub async fn renew_user(&self, statements: &[String], vars: &Vars) -> Result<(), DbError> {
        let rendered = if statements.is_empty() {
            vec![render(DEFAULT_RENEW, vars)?]
        } else {
            render_all(statements, vars)?
        };
        let password = vars
            .password()
            .map(|p| p.expose_secret())
            .unwrap_or_default();
        self.transaction(&rendered, &[password]).await
    }

    /// Revokes the credential `username`:
    ///
    /// 1. `ALTER ROLE … NOLOGIN`, so no new session starts, then every open session of
    ///    the role is terminated (waiting up to 5 s for each to exit);
    /// 2. in one transaction: if the role exists, `REASSIGN OWNED BY` it `TO
    ///    CURRENT_USER` and `DROP OWNED BY` it (which revokes its grants on tables,
    ///    sequences, functions, schemas, this database, …; see `strip_statements`);
    ///    then `statements` rendered with `{{name}}` — or, when there are none, `DROP
    ///    ROLE IF EXISTS` (which also ends its group-role memberships). So a role's
    ///    own `DROP ROLE` statement works even when the role was granted table
    ///    privileges, which otherwise fails with `2BP01`.
    ///
    /// A role that does not exist counts as revoked. Limit: `REASSIGN`/`DROP OWNED` act
    /// on the connected database (and shared objects) only; if the role owns objects or
    /// holds privileges in another database of the cluster, `DROP ROLE` fails with
    /// `2BP01` and the caller retries after cleaning that database (one target per
    /// database, as Vault's connection is). Custom statements run even when the role is
    /// gone (they may clean up other things); if they then fail with `42704`
    /// (undefined object) and the role does not exist, that counts as revoked too.
    pub async fn revoke_user(&self, username: &str, statements: &[String]) -> Result<(), DbError> {
        let exists = self.role_exists(username).await?;
        if exists {
            self.end_sessions(username).await?;
        }
        let mut revocation = Vec::new();
        if exists {
            revocation.extend(self.strip_statements(&[username]).await?);
        }
        if !statements.is_empty() {
            revocation.extend(render_all(statements, &Vars::new(username))?);
        } else if exists {
            revocation.push(format!("DROP ROLE IF EXISTS {};", quote_ident(username)));
        } else {
            return Ok(());
        }
        match self.transaction(&revocation, &[]).await {
            // `42704` undefined_object: the role is gone (dropped meanwhile, or custom
            // statements without IF EXISTS): revoked all the same.
            Err(e) if e.sqlstate() == Some("42704") && !self.role_exists(username).await? => Ok(()),
            other => other,
        }
    }

    /// What runs before any revocation statement while the roles exist: take over
    /// what they own (`REASSIGN OWNED … TO CURRENT_USER`) and drop every privilege
    /// granted to them (`DROP OWNED`: tables, sequences, functions, schemas, the
    /// database…), so that `DROP ROLE` cannot fail on dependent privileges — the cause of
    /// roles orphaned by Vault's PostgreSQL plugin. A management user that is not a
    /// superuser first makes itself a member of the roles, which both statements need
    /// (PostgreSQL < 16 does not make a role's creator a member).
    async fn strip_statements(&self, users: &[&str]) -> Result<Vec<String>, DbError> {
        if users.is_empty() {
            return Ok(Vec::new());
        }
        let list = users
            .iter()
            .map(|u| quote_ident(u))
            .collect::<Vec<_>>()
            .join(", ");
        let mut out = Vec::new();
        if !self.is_superuser().await? {
            out.push(format!("GRANT {list} TO CURRENT_USER;"));
        }
        out.push(format!(
            "REASSIGN OWNED BY {list} TO CURRENT_USER; DROP OWNED BY {list};"
        ));
        Ok(out)
    }

    async fn is_superuser(&self) -> Result<bool, DbError> {
        let mut checkout = self.checkout().await?;
        let row = checkout
            .client()?
            .query_one(
                "SELECT rolsuper FROM pg_catalog.pg_roles WHERE rolname = current_user",
                &[],
            )
            .await
            .map_err(|e| db_error("superuser lookup", &e, &[]))?;
        row.try_get(0)
            .map_err(|e| db_error("superuser lookup", &e, &[]))
    }

    /// Revokes many credentials at once (the expiry worker's batches): one catalogue
    /// lookup, one `NOLOGIN` batch, one session sweep and **one** transaction for all
    /// revocation statements — the default revocation handles every role of the batch
    /// in three statements (`REASSIGN OWNED BY a, b, …`, `DROP OWNED BY …`,
    /// `DROP ROLE IF EXISTS …`). If the shared transaction fails, each credential is
    /// revoked on its own so one bad role cannot hold the others back. One result per
    /// input, in order.
    pub async fn revoke_users(&self, batch: &[(String, Vec<String>)]) -> Vec<Result<(), DbError>> {
        if batch.len() == 1 {
            return vec![self.revoke_user(&batch[0].0, &batch[0].1).await];
        }
        match self.try_revoke_batch(batch).await {
            Ok(()) => batch.iter().map(|_| Ok(())).collect(),
            Err(e) => {
                tracing::debug!(error = %e, size = batch.len(), "batch revocation failed; revoking one by one");
                let mut out = Vec::with_capacity(batch.len());
                for (user, statements) in batch {
                    out.push(self.revoke_user(user, statements).await);
                }
                out
            }
        }
    }

    async fn try_revoke_batch(&self, batch: &[(String, Vec<String>)]) -> Result<(), DbError> {
        let names: Vec<&str> = batch.iter().map(|(u, _)| u.as_str()).collect();
        let existing: std::collections::HashSet<String> = {
            let mut checkout = self.checkout().await?;
            let rows = checkout
                .client()?
                .query(
                    "SELECT rolname FROM pg_catalog.pg_roles WHERE rolname = ANY($1)",
                    &[&names],
                )
                .await
                .map_err(|e| db_error("role lookup", &e, &[]))?;
            rows.iter()
                .map(|r| r.try_get::<_, String>(0))
                .collect::<Result<_, _>>()
                .map_err(|e| db_error("role lookup", &e, &[]))?
        };
        let live: Vec<&str> = names
            .iter()
            .copied()
            .filter(|n| existing.contains(*n))
            .collect();
        if !live.is_empty() {
            let mut checkout = self.checkout().await?;
            let client = checkout.client()?;
            let nologin: String = live
                .iter()
                .map(|n| format!("ALTER ROLE {} NOLOGIN;", quote_ident(n)))
                .collect();
            client
                .batch_execute(&nologin)
                .await
                .map_err(|e| db_error("ALTER ROLE NOLOGIN", &e, &[]))?;
            terminate_sessions(client, &live).await?;
        }
        let mut statements = self.strip_statements(&live).await?;
        let mut defaults = Vec::new();
        for (user, custom) in batch {
            if !custom.is_empty() {
                statements.extend(render_all(custom, &Vars::new(user.as_str()))?);
            } else if existing.contains(user) {
                defaults.push(quote_ident(user));
            }
        }
        if !defaults.is_empty() {
            // DROP ROLE removes the roles' memberships in group roles itself.
            statements.push(format!("DROP ROLE IF EXISTS {};", defaults.join(", ")));
        }
        if statements.is_empty() {
            return Ok(());
        }
        self.transaction(&statements, &[]).await
    }

    /// Replaces the root user's password with `new_password` by running `statements`
    /// (default `ALTER ROLE "{{username}}" WITH PASSWORD '{{password}}'`) rendered with
    /// `username` — as a SCRAM verifier when this target uses SCRAM. Connections already
    /// open stay usable; the caller reconnects with the new password for new ones.
    pub async fn rotate_root(
        &self,
        username: &str,
        statements: &[String],
        new_password: &SecretString,
    ) -> Result<(), DbError> {
        let plaintext = new_password.expose_secret();
        let value = match self.auth {
            PasswordAuthentication::ScramSha256 { iterations } => {
                scram_sha256_verifier(plaintext, iterations)?
            }
            PasswordAuthentication::Password => plaintext.to_owned(),
        };
        let vars = Vars::new(username).with_password(SecretString::from(value.clone()));
        let rendered = if statements.is_empty() {
            vec![render(DEFAULT_ROTATE_ROOT, &vars)?]
        } else {
            render_all(statements, &vars)?
        };
        self.transaction(&rendered, &[plaintext, value.as_str()])
            .await
    }

    /// The sessions of users whose name starts with `prefix` (`pg_stat_activity`; needs
    /// `pg_read_all_stats` or superuser to see other users' client addresses).
    pub async fn sessions(&self, prefix: &str) -> Result<Vec<super::Session>, DbError> {
        let mut checkout = self.checkout().await?;
        let pattern = format!(
            "{}%",
            prefix
                .replace('\\', "\\\\")
                .replace('%', "\\%")
                .replace('_', "\\_")
        );
        let rows = checkout
            .client()?
            .query(
                "SELECT usename::text, host(client_addr), pid::bigint \
                 FROM pg_catalog.pg_stat_activity \
                 WHERE usename LIKE $1 AND pid <> pg_catalog.pg_backend_pid()",
                &[&pattern],
            )
            .await
            .map_err(|e| db_error("session listing", &e, &[]))?;
        Ok(rows
            .iter()
            .map(|r| super::Session {
                username: r.get::<_, String>(0),
                client_addr: r.get::<_, Option<String>>(1).and_then(|a| a.parse().ok()),
                id: r.get::<_, i64>(2).to_string(),
            })
            .collect())
    }

    /// Whether `schema.table` is a table or view in the connected database (a
    /// catalogue lookup with bound parameters).
    pub async fn table_exists(&self, schema: &str, table: &str) -> Result<bool, DbError> {
        let mut checkout = self.checkout().await?;
        let row = checkout
            .client()?
            .query_opt(
                "SELECT 1 FROM information_schema.tables WHERE table_schema = $1 AND table_name = $2",
                &[&schema, &table],
            )
            .await
            .map_err(|e| db_error("table lookup", &e, &[]))?;
        Ok(row.is_some())
    }

    async fn role_exists(&self, username: &str) -> Result<bool, DbError> {
        let mut checkout = self.checkout().await?;
        let row = checkout
            .client()?
            .query_opt(
                "SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = $1",
                &[&username],
            )
            .await
            .map_err(|e| db_error("role lookup", &e, &[]))?;
        Ok(row.is_some())
    }

    async fn end_sessions(&self, username: &str) -> Result<(), DbError> {
        let mut checkout = self.checkout().await?;
        let client = checkout.client()?;
        let nologin = format!("ALTER ROLE {} NOLOGIN", quote_ident(username));
        match client.batch_execute(&nologin).await {
            Ok(()) => {}
            // Gone already; nothing to log in as.
            Err(e) if e.as_db_error().map(|d| d.code().code()) == Some("42704") => {}
            Err(e) => return Err(db_error("ALTER ROLE NOLOGIN", &e, &[])),
        }
        terminate_sessions(client, &[username]).await
    }
}

/// Terminates every session of `users`: signals them all at once, then waits (up to
/// [`TERMINATE_TIMEOUT`] in all) until none is left. Waiting per session, as
/// `pg_terminate_backend(pid, timeout)` does, costs up to 100 ms per session (its poll
/// interval): 50 sessions took ~3 s, which blew the kill switch's 1 s target.
async fn terminate_sessions(
    client: &tokio_postgres::Client,
    users: &[&str],
) -> Result<(), DbError> {
    const OTHERS: &str = "FROM pg_catalog.pg_stat_activity \
         WHERE usename = ANY($1) AND pid <> pg_catalog.pg_backend_pid()";
    let err = |e: tokio_postgres::Error| db_error("terminating sessions", &e, &[]);
    let signalled = client
        .execute(
            &format!("SELECT pg_catalog.pg_terminate_backend(pid) {OTHERS}"),
            &[&users],
        )
        .await
        .map_err(err)?;
    if signalled == 0 {
        return Ok(());
    }
    let deadline = tokio::time::Instant::now() + TERMINATE_TIMEOUT;
    loop {
        let left: i64 = client
            .query_one(&format!("SELECT count(*) {OTHERS}"), &[&users])
            .await
            .and_then(|r| r.try_get(0))
            .map_err(err)?;
        if left == 0 {
            return Ok(());
        }
        if tokio::time::Instant::now() >= deadline {
            tracing::warn!(
                sessions = left,
                "terminated database sessions did not exit in time"
            );
            return Ok(());
        }
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
}

fn render_all(statements: &[String], vars: &Vars) -> Result<Vec<String>, DbError> {
    statements.iter().map(|s| render(s, vars)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting_and_scrubbing() {
        assert_eq!(quote_ident(r#"a"b"#), r#""a""b""#);
        assert_eq!(
            scrub("near \"hunter2\" and hunter2", &["hunter2", ""]),
            "near \"[redacted]\" and [redacted]"
        );
        assert_eq!(
            redact_url("postgresql://root:pw@db:5432/x"),
            "postgresql://[redacted]@db:5432/x"
        );
    }

    #[test]
    fn transient_errors_are_the_measured_ones() {
        let e = |sqlstate: &str, message: &str| DbError::Statement {
            index: 1,
            sqlstate: sqlstate.to_owned(),
            message: message.to_owned(),
        };
        assert!(is_transient(&e("40001", "could not serialize")));
        assert!(is_transient(&e("40P01", "deadlock detected")));
        assert!(is_transient(&e("XX000", "tuple concurrently updated")));
        assert!(!is_transient(&e("XX000", "cache lookup failed")));
        assert!(!is_transient(&e("42501", "permission denied")));
        assert!(backoff(1) <= Duration::from_millis(10));
        assert!(backoff(30) <= Duration::from_millis(640));
    }

    #[test]
    fn config_debug_hides_secrets() {
        let c = PgConfig::new(
            "postgresql://root:literal-pw@db/x",
            "root",
            SecretString::from("root-pw".to_owned()),
        );
        let d = format!("{c:?}");
        assert!(!d.contains("literal-pw") && !d.contains("root-pw"), "{d}");
    }
}
