//! A MySQL / MariaDB target: runs the creation, renewal, revocation and root-rotation
//! statements of dynamic credentials, over a small pool of connections
//! ([`mysql_async`]'s pool, bounded by `max_open_connections`).
//!
//! Behaviour follows Vault's MySQL plugin, made more robust where it was fragile:
//!
//! * Each element of a statement list is split on `;` and every non-empty piece runs on
//!   its own, in order, on one connection (text protocol). There is **no transaction**:
//!   MySQL commits DDL (`CREATE USER`, `GRANT`) implicitly. A `;` inside a quoted literal
//!   is split too, as in Vault. Templates are split *before* rendering, so a password
//!   never changes how a statement is split.
//! * `{{password}}` is the plaintext password (MySQL has no verifier to send instead).
//! * Revocation ends the user's sessions (`KILL CONNECTION`) before *and after* running
//!   the statements, so a session opened between the first pass and `DROP USER` does not
//!   survive; a user that does not exist counts as revoked (see [`MySqlTarget::revoke_user`]).
//! * [`MySqlTarget::rotate_root`] changes the password of the account leash is logged in
//!   as, found with `CURRENT_USER()` rather than assumed to be `'root'@'%'`.
//!
//! Errors: the server's error code and SQLSTATE go into the `sqlstate` field of
//! [`DbError::Statement`] and [`DbError::Database`] as `"<code>/<SQLSTATE>"`, e.g.
//! `"1396/HY000"` (MySQL's SQLSTATE is mostly the uninformative `HY000`; the code is what
//! identifies the error). [`server_error_code`] reads the code back. Messages are scrubbed
//! of every password substituted into the statement or used to log in.
//!
//! Statement indexes in errors count the `;`-separated pieces actually sent, from 0.
//!
//! Not atomic: when creation fails half-way, the statements before the failing one stay
//! applied. The engine's lease intent record (persisted before creation) makes the expiry
//! worker revoke the username, which cleans that up.
//!
//! TLS: Go's `tls=` in the DSN (`false` — the default —, `preferred`, `skip-verify`,
//! `true`) and the fields `tls_ca`, `tls_certificate_key`, `tls_server_name`,
//! `tls_skip_verify` ([`MySqlConfig::tls`]), through `mysql_async`'s rustls support.

//!
//! Layout: `dsn` (Vault's Go DSN and URL forms → connection options), `error` (driver
//! errors → [`DbError`], scrubbed), and the target itself here.

use std::fmt;
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::Duration;

use leash_types::{ExposeSecret, SecretString};
use mysql_async::prelude::Queryable;
use mysql_async::{Conn, Opts, OptsBuilder, Params, Pool, Value};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::DbError;
use super::template::{Vars, render};

mod dsn;
mod error;

pub use dsn::connection_opts;
use dsn::quote_literal;
pub use error::server_error_code;
use error::{connect_error, db_error, duplicate, redact_url, server_code, statement_error};

/// Longest user name MySQL (5.7 and later) accepts; MariaDB accepts 80, so 32 fits both.
pub const MAX_USERNAME_LEN: usize = 32;

/// Vault's default `max_open_connections`.
pub const DEFAULT_MAX_OPEN_CONNECTIONS: usize = 4;

/// Vault's default revocation statements, for reference. leash does not run them as
/// they are: its default drops the user at every host it exists at, and a user that is
/// already gone counts as revoked (see [`MySqlTarget::revoke_user`]).
pub const VAULT_DEFAULT_REVOCATION: &str =
    "REVOKE ALL PRIVILEGES, GRANT OPTION FROM '{{name}}'@'%'; DROP USER '{{name}}'@'%'";

/// How long to wait for a connection (TCP connect, handshake, login) before giving up.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);

/// Idle pooled connections are closed after this long.
const IDLE_TTL: Duration = Duration::from_secs(300);

/// Server error codes that mean "that user (or grant) does not exist": ER_CANNOT_USER,
/// ER_NONEXISTING_GRANT, ER_NONEXISTING_TABLE_GRANT, ER_REVOKE_GRANTS,
/// ER_NONEXISTING_PROC_GRANT.
const USER_GONE_CODES: [u16; 5] = [1396, 1141, 1147, 1269, 1403];

/// ER_NO_SUCH_THREAD: the session ended before `KILL` reached it.
const ER_NO_SUCH_THREAD: u16 = 1094;

/// How many user names go into one `PROCESSLIST` lookup.
const LOOKUP_CHUNK: usize = 500;

/// How to reach a MySQL or MariaDB server, in Vault's `database/config/:name` terms.
pub struct MySqlConfig {
    /// Either a Go DSN as Vault documents it,
    /// `{{username}}:{{password}}@tcp(127.0.0.1:3306)/dbname?param=value` (also
    /// `unix(/path/to/socket)`), or a URL `mysql://{{username}}:{{password}}@host:3306/db`.
    /// `{{username}}`/`{{password}}` are replaced by the fields below (as they are in a
    /// DSN, percent-encoded in a URL). Without any user part, the fields below are used.
    pub connection_url: String,
    /// The root (management) user.
    pub username: String,
    /// The root user's password.
    pub password: SecretString,
    /// Upper bound on connections leash uses at once on this server.
    pub max_open_connections: usize,
    /// Whether the root password may be sent with the `mysql_clear_password` plugin
    /// (in cleartext). Off by default, whatever the URL's `allowCleartextPasswords` or
    /// `enable_cleartext_plugin` say: the connection's configuration decides.
    pub allow_cleartext_password: bool,
    /// TLS settings given as separate fields, applied over the DSN's `tls=`.
    pub tls: leash_dbtls::TlsOptions,
}

impl MySqlConfig {
    /// A configuration with Vault's defaults (4 connections).
    pub fn new(
        connection_url: impl Into<String>,
        username: impl Into<String>,
        password: SecretString,
    ) -> MySqlConfig {
        MySqlConfig {
            connection_url: connection_url.into(),
            username: username.into(),
            password,
            max_open_connections: DEFAULT_MAX_OPEN_CONNECTIONS,
            allow_cleartext_password: false,
            tls: leash_dbtls::TlsOptions::default(),
        }
    }
}

impl fmt::Debug for MySqlConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MySqlConfig")
            .field("connection_url", &redact_url(&self.connection_url))
            .field("username", &self.username)
            .field("password", &"[redacted]")
            .field("max_open_connections", &self.max_open_connections)
            .field("allow_cleartext_password", &self.allow_cleartext_password)
            .finish()
    }
}

/// The pool in use and the credentials it logs in with; replaced whole on rotation and
/// reset.
struct Generation {
    pool: Pool,
    opts: Opts,
    /// The root password, also inside `opts`; kept to scrub it out of error messages.
    password: SecretString,
}

/// A connection lent out of the pool, with the permit that bounds connections in use
/// across pool generations; returned to its pool on drop.
struct Checkout {
    conn: Conn,
    _permit: OwnedSemaphorePermit,
}

/// What revoking one user runs.
enum Revocation {
    /// leash's default: drop the user at every host it exists at.
    Default,
    /// The operator's statements, rendered and split.
    Custom(Vec<String>),
}

/// One MySQL or MariaDB server leash manages credentials in.
pub struct MySqlTarget {
    generation: RwLock<Generation>,
    permits: Arc<Semaphore>,
    /// The configured root username (`{{username}}` in root rotation).
    username: String,
    max_open_connections: usize,
}

impl fmt::Debug for MySqlTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let generation = self.read();
        let opts = &generation.opts;
        f.debug_struct("MySqlTarget")
            .field("host", &opts.ip_or_hostname())
            .field("port", &opts.tcp_port())
            .field("socket", &opts.socket())
            .field("db_name", &opts.db_name())
            .field("user", &opts.user())
            .field("max_open_connections", &self.max_open_connections)
            .finish_non_exhaustive()
    }
}

/// Whether `target` logs in without TLS.
fn opts_plain(target: &MySqlTarget) -> bool {
    target.read().opts.ssl_opts().is_none()
}

impl MySqlTarget {
    /// Parses `config.connection_url` (substituting `{{username}}` and `{{password}}`)
    /// and opens one connection to check it works (Vault's `verify_connection`); that
    /// connection stays in the pool. Errors say why, without the URL or password.
    pub async fn connect(config: MySqlConfig) -> Result<MySqlTarget, DbError> {
        let mut opts = connection_opts(&config)?;
        let mode = dsn::tls_mode(&config);
        if mode == leash_dbtls::SslMode::Prefer && opts.ssl_opts().is_some() {
            // `tls=preferred`: TLS if the server offers it, else plain text.
            let probe = tokio::time::timeout(CONNECT_TIMEOUT, Conn::new(opts.clone())).await;
            if let Ok(Err(mysql_async::Error::Driver(
                mysql_async::DriverError::NoClientSslFlagFromServer,
            ))) = probe
            {
                opts =
                    Opts::from(OptsBuilder::from_opts(opts).ssl_opts(None::<mysql_async::SslOpts>));
            } else if let Ok(Ok(conn)) = probe {
                let _ = conn.disconnect().await;
            }
        }
        let max = config.max_open_connections.max(1);
        let target = MySqlTarget {
            generation: RwLock::new(Generation {
                pool: Pool::new(opts.clone()),
                opts,
                password: config.password,
            }),
            permits: Arc::new(Semaphore::new(max)),
            username: config.username,
            max_open_connections: max,
        };
        match target.checkout().await {
            Ok(c) => drop(c),
            // A server that wants TLS (MariaDB `require_secure_transport`, an account
            // `REQUIRE SSL`) often answers a plain login with a bare "access denied".
            Err(DbError::Connect { message })
                if opts_plain(&target) && message.contains("1045") =>
            {
                return Err(DbError::Connect {
                    message: format!(
                        "{message} (this connection does not use TLS: if the server requires TLS, set tls=true in the DSN and tls_ca)"
                    ),
                });
            }
            Err(e) => return Err(e),
        }
        Ok(target)
    }

    fn read(&self) -> RwLockReadGuard<'_, Generation> {
        self.generation
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn write(&self) -> RwLockWriteGuard<'_, Generation> {
        self.generation
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    async fn checkout(&self) -> Result<Checkout, DbError> {
        let permit = Arc::clone(&self.permits)
            .acquire_owned()
            .await
            .map_err(|_| DbError::Connect {
                message: "connection pool closed".to_owned(),
            })?;
        let pool = self.read().pool.clone();
        let conn = match tokio::time::timeout(CONNECT_TIMEOUT, pool.get_conn()).await {
            Ok(Ok(conn)) => conn,
            Ok(Err(e)) => {
                let generation = self.read();
                let secrets = [
                    generation.password.expose_secret(),
                    generation.opts.pass().unwrap_or_default(),
                ];
                return Err(connect_error(&e, &secrets));
            }
            Err(_) => {
                return Err(DbError::Connect {
                    message: format!("timed out after {} s", CONNECT_TIMEOUT.as_secs()),
                });
            }
        };
        Ok(Checkout {
            conn,
            _permit: permit,
        })
    }

    /// Makes new connections use `opts` (and `password` for scrubbing, if given): a fresh
    /// pool replaces the current one, which closes its idle connections now and the
    /// connections in use when they come back.
    fn replace_pool(&self, opts: Opts, password: Option<SecretString>) {
        let fresh = Pool::new(opts.clone());
        let old = {
            let mut generation = self.write();
            generation.opts = opts;
            if let Some(p) = password {
                generation.password = p;
            }
            std::mem::replace(&mut generation.pool, fresh)
        };
        tokio::spawn(async move {
            if let Err(e) = old.disconnect().await {
                tracing::debug!(error = %e, "closing the previous mysql pool");
            }
        });
    }

    /// Creates the credential: renders `statements` with `vars` (each element split on
    /// `;`) and runs them in order. Not atomic: see the module documentation.
    pub async fn create_user(&self, statements: &[String], vars: &Vars) -> Result<(), DbError> {
        let rendered = render_split(statements, vars)?;
        if rendered.is_empty() {
            return Err(DbError::NoStatements {
                operation: "creation",
            });
        }
        let password = vars
            .password()
            .map(|p| p.expose_secret())
            .unwrap_or_default();
        let mut checkout = self.checkout().await?;
        run(&mut checkout.conn, &rendered, &[password]).await
    }

    /// Extends the credential. MySQL users do not expire, so without `statements` this
    /// does nothing (Vault's default); otherwise it renders and runs them.
    pub async fn renew_user(&self, statements: &[String], vars: &Vars) -> Result<(), DbError> {
        let rendered = render_split(statements, vars)?;
        if rendered.is_empty() {
            return Ok(());
        }
        let password = vars
            .password()
            .map(|p| p.expose_secret())
            .unwrap_or_default();
        let mut checkout = self.checkout().await?;
        run(&mut checkout.conn, &rendered, &[password]).await
    }

    /// The sessions of users whose name starts with `prefix` (`PROCESSLIST`; needs the
    /// `PROCESS` privilege to see other users' sessions).
    /// Whether `database.table` is a table or view (a catalogue lookup with bound
    /// parameters).
    pub async fn table_exists(&self, database: &str, table: &str) -> Result<bool, DbError> {
        let mut checkout = self.checkout().await?;
        let row: Option<u8> = checkout
            .conn
            .exec_first(
                "SELECT 1 FROM information_schema.TABLES WHERE TABLE_SCHEMA = ? AND TABLE_NAME = ?",
                (database, table),
            )
            .await
            .map_err(|e| db_error("table lookup", &e, &[]))?;
        Ok(row.is_some())
    }

    pub async fn sessions(&self, prefix: &str) -> Result<Vec<super::Session>, DbError> {
        let mut checkout = self.checkout().await?;
        let rows: Vec<(u64, String, String)> = checkout
            .conn
            .exec(
                "SELECT ID, USER, HOST FROM information_schema.PROCESSLIST \
                 WHERE ID <> CONNECTION_ID()",
                (),
            )
            .await
            .map_err(|e| db_error("session listing", &e, &[]))?;
        Ok(rows
            .into_iter()
            // The column compares case-insensitively; user names do not.
            .filter(|(_, user, _)| user.starts_with(prefix))
            .map(|(id, username, host)| super::Session {
                username,
                client_addr: parse_processlist_host(&host),
                id: id.to_string(),
            })
            .collect())
    }

    /// Revokes the credential `username`:
    ///
    /// 1. every session of the user (`information_schema.PROCESSLIST`) is killed;
    /// 2. `statements`, rendered with `{{name}}` and split on `;`, run in order — or,
    ///    when there are none, leash's default: for every host the user exists at in
    ///    `mysql.user`, `REVOKE ALL PRIVILEGES, GRANT OPTION` and `DROP USER IF EXISTS`
    ///    (a failed `REVOKE` does not stop the `DROP USER`, which removes the privileges
    ///    anyway);
    /// 3. sessions are killed once more, ending any opened between 1 and 2.
    ///
    /// A user that does not exist counts as revoked: the default does nothing for it,
    /// and a custom statement that fails with a "no such user / grant" error (1396,
    /// 1141, 1147, 1269, 1403) while no account of that name exists is skipped.
    ///
    /// Needs the `PROCESS` privilege to see other users' sessions and `SUPER` /
    /// `CONNECTION ADMIN` to kill them; without them, step 1 finds nothing or fails.
    pub async fn revoke_user(&self, username: &str, statements: &[String]) -> Result<(), DbError> {
        match self.revoke_batch(&[(username, statements)]).await.pop() {
            Some(result) => result,
            None => Ok(()),
        }
    }

    /// Revokes many credentials, as [`MySqlTarget::revoke_user`] does each, but finds
    /// the sessions of all of them in one `PROCESSLIST` query per pass. Returns one
    /// result per input, in order; one user's failure does not stop the others.
    pub async fn revoke_users(&self, batch: &[(String, Vec<String>)]) -> Vec<Result<(), DbError>> {
        let items: Vec<(&str, &[String])> = batch
            .iter()
            .map(|(name, statements)| (name.as_str(), statements.as_slice()))
            .collect();
        self.revoke_batch(&items).await
    }

    async fn revoke_batch(&self, items: &[(&str, &[String])]) -> Vec<Result<(), DbError>> {
        if items.is_empty() {
            return Vec::new();
        }
        // Render first: a bad template is that user's error and needs no connection.
        let plans: Vec<Result<Revocation, DbError>> = items
            .iter()
            .map(|(name, statements)| {
                if statements.is_empty() {
                    Ok(Revocation::Default)
                } else {
                    render_split(statements, &Vars::new(*name)).map(Revocation::Custom)
                }
            })
            .collect();
        let names: Vec<&str> = items.iter().map(|(name, _)| *name).collect();
        let mut checkout = match self.checkout().await {
            Ok(c) => Some(c),
            Err(e) => return items.iter().map(|_| Err(duplicate(&e))).collect(),
        };
        let mut kill_error = match &mut checkout {
            Some(c) => kill_sessions(&mut c.conn, &names).await.err(),
            None => None,
        };
        let mut results = Vec::with_capacity(items.len());
        for ((name, _), plan) in items.iter().zip(plans) {
            let revocation = match plan {
                Ok(r) => r,
                Err(e) => {
                    results.push(Err(e));
                    continue;
                }
            };
            let mut current = match checkout.take() {
                Some(c) => c,
                None => match self.checkout().await {
                    Ok(c) => c,
                    Err(e) => {
                        results.push(Err(e));
                        continue;
                    }
                },
            };
            let result = revoke_one(&mut current.conn, name, &revocation).await;
            // After a failure the connection may be broken; take a fresh one next time.
            if result.is_ok() {
                checkout = Some(current);
            }
            results.push(result);
        }
        if kill_error.is_none() {
            let second = match checkout.take() {
                Some(c) => Ok(c),
                None => self.checkout().await,
            };
            kill_error = match second {
                Ok(mut c) => kill_sessions(&mut c.conn, &names).await.err(),
                Err(e) => Some(e),
            };
        }
        if let Some(e) = kill_error {
            // The statements ran, but sessions may live on: report it so the caller
            // retries (revocation is idempotent).
            for result in &mut results {
                if result.is_ok() {
                    *result = Err(duplicate(&e));
                }
            }
        }
        results
    }

    /// Changes the root password to `new_password`. The account changed is the one leash
    /// is logged in as, from `CURRENT_USER()`; the default statement is
    /// `ALTER USER '{{username}}'@'<its host>' IDENTIFIED BY '{{password}}'`. Custom
    /// `statements` are rendered with `{{username}}` (the configured username) and
    /// `{{password}}`. On success every new connection logs in with the new password
    /// (idle connections are closed); connections in use finish their work first.
    ///
    /// Fails without changing anything when no username is configured, or when the
    /// server logged leash in as another account (e.g. an anonymous `''@host`).
    pub async fn rotate_root(
        &self,
        statements: &[String],
        new_password: &SecretString,
    ) -> Result<(), DbError> {
        let rotate_error = |message: String| DbError::Database {
            operation: "rotate root",
            sqlstate: String::new(),
            message,
        };
        if self.username.is_empty() {
            return Err(rotate_error(
                "no username in the connection configuration".to_owned(),
            ));
        }
        // The password in use may also be a literal in the connection URL.
        let old_password = SecretString::from(self.read().opts.pass().unwrap_or_default());
        let secrets = [new_password.expose_secret(), old_password.expose_secret()];
        let mut checkout = self.checkout().await?;
        let current: Option<String> = checkout
            .conn
            .query_first("SELECT CURRENT_USER()")
            .await
            .map_err(|e| db_error("SELECT CURRENT_USER()", &e, &secrets))?;
        let Some((user, host)) = current.as_deref().and_then(|c| c.rsplit_once('@')) else {
            return Err(rotate_error(
                "CURRENT_USER() returned no account".to_owned(),
            ));
        };
        if user != self.username {
            return Err(rotate_error(format!(
                "logged in as account '{user}'@'{host}', not as the configured user '{}'",
                self.username
            )));
        }
        let templates = if statements.is_empty() {
            vec![format!(
                "ALTER USER '{{{{username}}}}'@{} IDENTIFIED BY '{{{{password}}}}'",
                quote_literal(host)?
            )]
        } else {
            statements.to_vec()
        };
        let vars = Vars::new(self.username.as_str()).with_password(new_password.clone());
        let rendered = render_split(&templates, &vars)?;
        if rendered.is_empty() {
            return Err(DbError::NoStatements {
                operation: "root rotation",
            });
        }
        run(&mut checkout.conn, &rendered, &secrets).await?;
        drop(checkout);
        let opts = Opts::from(
            OptsBuilder::from_opts(self.read().opts.clone())
                .pass(Some(new_password.expose_secret().to_owned())),
        );
        self.replace_pool(opts, Some(new_password.clone()));
        // The server has the new password now, so this is success whatever happens
        // next; a failing check only warns (the caller must store the new password).
        if let Err(e) = self.checkout().await {
            tracing::warn!(error = %e, "root password rotated, but a new connection failed");
        }
        Ok(())
    }

    /// Closes idle connections (connections in use close when returned) and opens a
    /// fresh one to check the server is reachable (Vault's `reset`).
    pub async fn reset(&self) -> Result<(), DbError> {
        let opts = self.read().opts.clone();
        self.replace_pool(opts, None);
        drop(self.checkout().await?);
        Ok(())
    }
}

/// Every `;`-separated, non-empty piece of `templates`, rendered with `vars`.
fn render_split(templates: &[String], vars: &Vars) -> Result<Vec<String>, DbError> {
    templates
        .iter()
        .flat_map(|t| t.split(';'))
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| render(s, vars))
        .collect()
}

/// Runs `statements` in order on `conn`, stopping at the first failure.
async fn run(conn: &mut Conn, statements: &[String], secrets: &[&str]) -> Result<(), DbError> {
    for (index, statement) in statements.iter().enumerate() {
        conn.query_drop(statement.as_str())
            .await
            .map_err(|e| statement_error(index, &e, secrets))?;
    }
    Ok(())
}

/// Hosts at which an account named `username` exists.
async fn user_hosts(conn: &mut Conn, username: &str) -> Result<Vec<String>, DbError> {
    conn.exec("SELECT Host FROM mysql.user WHERE User = ?", (username,))
        .await
        .map_err(|e| db_error("account lookup", &e, &[]))
}

/// Kills every session of the users `names` (except leash's own connection). A session
/// that ended meanwhile is fine.
async fn kill_sessions(conn: &mut Conn, names: &[&str]) -> Result<(), DbError> {
    for chunk in names.chunks(LOOKUP_CHUNK) {
        let placeholders = vec!["?"; chunk.len()].join(", ");
        let query = format!(
            "SELECT ID, USER FROM information_schema.PROCESSLIST \
             WHERE USER IN ({placeholders}) AND ID <> CONNECTION_ID()"
        );
        let params = Params::Positional(chunk.iter().map(|n| Value::from(*n)).collect());
        let sessions: Vec<(u64, String)> = conn
            .exec(query, params)
            .await
            .map_err(|e| db_error("session lookup", &e, &[]))?;
        // The column compares case-insensitively; user names do not.
        for (id, _) in sessions
            .iter()
            .filter(|(_, user)| chunk.contains(&user.as_str()))
        {
            match conn.query_drop(format!("KILL CONNECTION {id}")).await {
                Ok(()) => {}
                Err(e) if server_code(&e) == Some(ER_NO_SUCH_THREAD) => {}
                Err(e) => return Err(db_error("KILL CONNECTION", &e, &[])),
            }
        }
    }
    Ok(())
}

/// The client address in a `PROCESSLIST` `HOST` (`10.0.0.5:51234`, `[::1]:51234` or
/// `::1:51234`); `None` for `localhost` (a Unix socket) and anything unparseable.
fn parse_processlist_host(host: &str) -> Option<std::net::IpAddr> {
    let addr = host.rsplit_once(':').map_or(host, |(a, _)| a);
    addr.trim_start_matches('[')
        .trim_end_matches(']')
        .parse()
        .ok()
}

/// Runs the revocation of `username` (sessions are handled by the caller).
async fn revoke_one(
    conn: &mut Conn,
    username: &str,
    revocation: &Revocation,
) -> Result<(), DbError> {
    match revocation {
        Revocation::Default => {
            let user = quote_literal(username)?;
            for (n, host) in user_hosts(conn, username).await?.iter().enumerate() {
                let account = format!("{user}@{}", quote_literal(host)?);
                let revoke = format!("REVOKE ALL PRIVILEGES, GRANT OPTION FROM {account}");
                match conn.query_drop(revoke).await {
                    Ok(()) => {}
                    Err(e @ mysql_async::Error::Server(_)) => {
                        tracing::debug!(error = %e, "REVOKE before DROP USER failed; dropping anyway");
                    }
                    Err(e) => return Err(statement_error(2 * n, &e, &[])),
                }
                conn.query_drop(format!("DROP USER IF EXISTS {account}"))
                    .await
                    .map_err(|e| statement_error(2 * n + 1, &e, &[]))?;
            }
            Ok(())
        }
        Revocation::Custom(statements) => {
            for (index, statement) in statements.iter().enumerate() {
                let Err(e) = conn.query_drop(statement.as_str()).await else {
                    continue;
                };
                let user_gone_error = server_code(&e).is_some_and(|c| USER_GONE_CODES.contains(&c));
                if !(user_gone_error && user_hosts(conn, username).await?.is_empty()) {
                    return Err(statement_error(index, &e, &[]));
                }
            }
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::dsn::substitute;
    use super::*;
    use leash_types::secret::scrub;

    #[test]
    fn helpers() {
        assert_eq!(quote_literal("it's").unwrap(), "'it''s'");
        assert!(quote_literal("a\\b").is_err());
        assert_eq!(
            substitute("{{username}}:{{password}}@{{x}}", "{{password}}", "p"),
            "{{password}}:p@{{x}}"
        );
        assert_eq!(
            scrub("near 'hunter2'", &["hunter2", ""]),
            "near '[redacted]'"
        );
        assert_eq!(
            redact_url("mysql://root:pw@db:3306/x"),
            "mysql://[redacted]@db:3306/x"
        );
        assert_eq!(
            redact_url("root:p@ss@tcp(db:3306)/x"),
            "[redacted]@tcp(db:3306)/x"
        );
        assert_eq!(redact_url("tcp(db)/x"), "tcp(db)/x");
        let e = DbError::Statement {
            index: 0,
            sqlstate: "1396/HY000".to_owned(),
            message: String::new(),
        };
        assert_eq!(server_error_code(&e), Some(1396));
        assert_eq!(server_error_code(&duplicate(&e)), Some(1396));
    }
}
