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
//! No TLS yet (`tls=true` in a Go DSN is refused rather than silently ignored).

use std::fmt;
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::Duration;

use leash_types::secret::scrub;
use leash_types::{ExposeSecret, SecretString};
use mysql_async::prelude::Queryable;
use mysql_async::{Conn, Opts, OptsBuilder, Params, Pool, PoolConstraints, PoolOpts, Value};
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, percent_decode_str, utf8_percent_encode};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::DbError;
use super::template::{Vars, render};

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

/// Characters left as they are when a username or password goes into a `mysql://` URL.
const USERINFO: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// Parameters of Go's MySQL driver that only tune that driver; accepted and ignored, so
/// a DSN written for Vault works unchanged.
const GO_DRIVER_PARAMS: &[&str] = &[
    "allowAllFiles",
    "allowFallbackToPlaintext",
    "allowNativePasswords",
    "allowOldPasswords",
    "charset",
    "checkConnLiveness",
    "clientFoundRows",
    "collation",
    "columnsWithAlias",
    "connectionAttributes",
    "interpolateParams",
    "loc",
    "maxAllowedPacket",
    "multiStatements",
    "parseTime",
    "readTimeout",
    "rejectReadOnly",
    "serverPubKey",
    "timeTruncate",
    "timeout",
    "writeTimeout",
];

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

/// `url` with its user part (everything before the last `@`, after any `scheme://`)
/// hidden: it may hold a literal password.
fn redact_url(url: &str) -> String {
    let start = url.find("://").map_or(0, |s| s + 3);
    match url.rfind('@') {
        Some(at) if at >= start => format!("{}[redacted]{}", &url[..start], &url[at..]),
        _ => url.to_owned(),
    }
}

/// (`"<code>/<SQLSTATE>"`, message) of a driver error, scrubbed. Errors that are not the
/// server's (connection lost, protocol) have an empty code.
fn parts(e: &mysql_async::Error, secrets: &[&str]) -> (String, String) {
    match e {
        mysql_async::Error::Server(s) => (
            format!("{}/{}", s.code, s.state),
            scrub(&s.message, secrets),
        ),
        other => (String::new(), scrub(&super::error_chain(other), secrets)),
    }
}

fn db_error(operation: &'static str, e: &mysql_async::Error, secrets: &[&str]) -> DbError {
    let (sqlstate, message) = parts(e, secrets);
    DbError::Database {
        operation,
        sqlstate,
        message,
    }
}

fn statement_error(index: usize, e: &mysql_async::Error, secrets: &[&str]) -> DbError {
    let (sqlstate, message) = parts(e, secrets);
    DbError::Statement {
        index,
        sqlstate,
        message,
    }
}

fn connect_error(e: &mysql_async::Error, secrets: &[&str]) -> DbError {
    let message = match e {
        mysql_async::Error::Server(s) => format!("ERROR {} ({}): {}", s.code, s.state, s.message),
        other => super::error_chain(other),
    };
    DbError::Connect {
        message: scrub(&message, secrets),
    }
}

fn server_code(e: &mysql_async::Error) -> Option<u16> {
    match e {
        mysql_async::Error::Server(s) => Some(s.code),
        _ => None,
    }
}

/// The MySQL server error code of `e` (e.g. `1396`), when the server reported one. This
/// module stores it in the `sqlstate` field as `"<code>/<SQLSTATE>"`.
pub fn server_error_code(e: &DbError) -> Option<u16> {
    let (code, _) = e.sqlstate()?.split_once('/')?;
    code.parse().ok()
}

/// A copy of `e`, for reporting one failure against every user of a batch. Variants this
/// module does not produce at that point are carried by their message.
fn duplicate(e: &DbError) -> DbError {
    match e {
        DbError::Connect { message } => DbError::Connect {
            message: message.clone(),
        },
        DbError::Statement {
            index,
            sqlstate,
            message,
        } => DbError::Statement {
            index: *index,
            sqlstate: sqlstate.clone(),
            message: message.clone(),
        },
        DbError::Database {
            operation,
            sqlstate,
            message,
        } => DbError::Database {
            operation,
            sqlstate: sqlstate.clone(),
            message: message.clone(),
        },
        other => DbError::Database {
            operation: "revocation",
            sqlstate: String::new(),
            message: other.to_string(),
        },
    }
}

/// `s` as a MySQL string literal (`'…'`, inner quotes doubled). A backslash is refused:
/// whether it escapes depends on the server's `sql_mode`, so leash cannot quote it
/// reliably (leash's own usernames never contain one).
fn quote_literal(s: &str) -> Result<String, DbError> {
    if s.contains('\\') || s.contains('\0') {
        return Err(DbError::Database {
            operation: "quoting an account name",
            sqlstate: String::new(),
            message: "user or host name contains a backslash or NUL; use custom statements"
                .to_owned(),
        });
    }
    Ok(format!("'{}'", s.replace('\'', "''")))
}

/// `template` with `{{username}}` and `{{password}}` replaced in one pass (a value that
/// itself contains a placeholder is not substituted again).
fn substitute(template: &str, username: &str, password: &str) -> String {
    let mut out = String::with_capacity(template.len() + 64);
    let mut rest = template;
    while let Some(open) = rest.find("{{") {
        out.push_str(&rest[..open]);
        let after = &rest[open..];
        if let Some(tail) = after.strip_prefix("{{username}}") {
            out.push_str(username);
            rest = tail;
        } else if let Some(tail) = after.strip_prefix("{{password}}") {
            out.push_str(password);
            rest = tail;
        } else {
            out.push_str("{{");
            rest = &after[2..];
        }
    }
    out.push_str(rest);
    out
}

fn invalid(reason: impl Into<String>) -> DbError {
    DbError::InvalidConnectionUrl {
        reason: reason.into(),
    }
}

/// Percent-decodes `s` as Go's `url.QueryUnescape` does (`+` is a space).
fn query_unescape(s: &str) -> Result<String, DbError> {
    percent_decode_str(&s.replace('+', " "))
        .decode_utf8()
        .map(|c| c.into_owned())
        .map_err(|_| invalid("a parameter value is not valid percent-encoded UTF-8"))
}

/// `[host]:port`, `host:port`, `host` or a bare IPv6 address, as Go's driver accepts in
/// `tcp(…)`; the port defaults to 3306.
fn split_host_port(addr: &str) -> Result<(String, u16), DbError> {
    const DEFAULT_PORT: u16 = 3306;
    let parse_port = |p: &str| {
        p.parse::<u16>()
            .map_err(|_| invalid("the port in tcp(…) is not a number from 0 to 65535"))
    };
    if let Some(bracketed) = addr.strip_prefix('[') {
        let Some((host, rest)) = bracketed.split_once(']') else {
            return Err(invalid("missing `]` after an IPv6 address"));
        };
        return match rest {
            "" => Ok((host.to_owned(), DEFAULT_PORT)),
            _ => match rest.strip_prefix(':') {
                Some(port) => Ok((host.to_owned(), parse_port(port)?)),
                None => Err(invalid("unexpected text after `]` in tcp(…)")),
            },
        };
    }
    match addr.split_once(':') {
        // More than one colon and no brackets: a bare IPv6 address.
        Some((_, rest)) if rest.contains(':') => Ok((addr.to_owned(), DEFAULT_PORT)),
        Some((host, port)) => Ok((host.to_owned(), parse_port(port)?)),
        None => Ok((addr.to_owned(), DEFAULT_PORT)),
    }
}

/// Options for a Go DSN `[user[:password]@][net[(addr)]]/dbname[?param=value&…]`,
/// parsed the way Go's MySQL driver does (the last `/` ends the address, the last `@`
/// before it ends the user part, the first `:` in that splits user from password), so
/// a literal password may contain `@`, `:` and `?`.
fn go_dsn_opts(dsn: &str, username: &str, password: &str) -> Result<OptsBuilder, DbError> {
    let Some(slash) = dsn.rfind('/') else {
        return Err(invalid(
            "expected a Go DSN `user:password@tcp(host:port)/dbname` or a mysql:// URL \
             (missing the `/` before the database name)",
        ));
    };
    let (head, tail) = (&dsn[..slash], &dsn[slash + 1..]);
    let (userinfo, address) = match head.rfind('@') {
        Some(at) => (Some(&head[..at]), &head[at + 1..]),
        None => (None, head),
    };
    let mut builder = OptsBuilder::default().prefer_socket(false);
    builder = match userinfo {
        Some(info) => {
            let (user, pass) = match info.split_once(':') {
                Some((u, p)) => (u, Some(p)),
                None => (info, None),
            };
            builder
                .user(Some(substitute(user, username, password)))
                .pass(pass.map(|p| substitute(p, username, password)))
        }
        None => with_config_user(builder, username, password),
    };
    let (net, addr) = match address.split_once('(') {
        Some((net, rest)) => match rest.strip_suffix(')') {
            Some(addr) => (net, addr),
            None => return Err(invalid("missing `)` after the address")),
        },
        None => (address, ""),
    };
    builder = match net {
        "" | "tcp" | "tcp4" | "tcp6" => {
            let (host, port) = if addr.is_empty() {
                ("127.0.0.1".to_owned(), 3306)
            } else {
                split_host_port(addr)?
            };
            builder.ip_or_hostname(host).tcp_port(port)
        }
        "unix" => builder.socket(Some(if addr.is_empty() {
            "/tmp/mysql.sock"
        } else {
            addr
        })),
        _ => {
            return Err(invalid(
                "unsupported network: use tcp(host:port) or unix(path)",
            ));
        }
    };
    let (db, query) = match tail.split_once('?') {
        Some((db, query)) => (db, Some(query)),
        None => (tail, None),
    };
    if !db.is_empty() {
        let db = percent_decode_str(db)
            .decode_utf8()
            .map_err(|_| invalid("the database name is not valid percent-encoded UTF-8"))?;
        builder = builder.db_name(Some(db.into_owned()));
    }
    let mut system_vars = Vec::new();
    for pair in query
        .unwrap_or_default()
        .split('&')
        .filter(|p| !p.is_empty())
    {
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        let value = query_unescape(value)?;
        match name {
            "tls" => match value.as_str() {
                "" | "false" | "preferred" => {}
                _ => return Err(invalid("TLS is not supported yet; use tls=false")),
            },
            "allowCleartextPasswords" => {
                builder = builder.enable_cleartext_plugin(matches!(value.as_str(), "true" | "1"));
            }
            n if GO_DRIVER_PARAMS.contains(&n) => {}
            // Go's driver sets any other parameter as a session system variable.
            n if !n.is_empty()
                && n.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
                && !n.as_bytes()[0].is_ascii_digit() =>
            {
                system_vars.push(format!("{n}={value}"));
            }
            _ => return Err(invalid("a parameter name is not a valid identifier")),
        }
    }
    if !system_vars.is_empty() {
        // `setup` runs on every new connection and again after a pooled connection is
        // reset, so the variables hold for every statement leash sends.
        builder = builder.setup(vec![format!("SET {}", system_vars.join(", "))]);
    }
    Ok(builder)
}

/// Uses the configured username and password when the connection URL names no user.
fn with_config_user(builder: OptsBuilder, username: &str, password: &str) -> OptsBuilder {
    if username.is_empty() {
        return builder;
    }
    builder
        .user(Some(username))
        .pass((!password.is_empty()).then(|| password.to_owned()))
}

/// Connection options for `config` (see [`MySqlConfig::connection_url`]). Errors never
/// repeat the URL or the password.
pub fn connection_opts(config: &MySqlConfig) -> Result<Opts, DbError> {
    let url = config.connection_url.trim();
    if url.is_empty() {
        return Err(invalid("connection_url is empty"));
    }
    let password = config.password.expose_secret();
    let scheme = url.find("://").map(|i| &url[..i]).filter(|s| {
        s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"+-.".contains(&b))
    });
    let builder = match scheme {
        Some("mysql") => {
            let user = utf8_percent_encode(&config.username, USERINFO).to_string();
            let pass = utf8_percent_encode(password, USERINFO).to_string();
            let url = substitute(url, &user, &pass);
            let opts = Opts::from_url(&url)
                .map_err(|e| invalid(scrub(&e.to_string(), &[password, &pass])))?;
            let has_user = opts.user().is_some();
            let explicit_socket_choice = url.contains("prefer_socket=");
            let mut builder = OptsBuilder::from_opts(opts);
            if !explicit_socket_choice {
                // Connect where the URL says; mysql_async would otherwise switch to the
                // server's unix socket on loopback, possibly as a different account.
                builder = builder.prefer_socket(false);
            }
            if has_user {
                builder
            } else {
                with_config_user(builder, &config.username, password)
            }
        }
        Some(_) => {
            return Err(invalid(
                "unsupported scheme: use mysql://… or a Go DSN user:password@tcp(host:port)/db",
            ));
        }
        None => go_dsn_opts(url, &config.username, password)?,
    };
    let max = config.max_open_connections.max(1);
    let Some(constraints) = PoolConstraints::new(0, max) else {
        return Err(invalid("max_open_connections is out of range"));
    };
    let pool_opts = PoolOpts::new()
        .with_constraints(constraints)
        .with_inactive_connection_ttl(IDLE_TTL);
    Ok(Opts::from(
        builder
            .enable_cleartext_plugin(config.allow_cleartext_password)
            .pool_opts(pool_opts),
    ))
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

impl MySqlTarget {
    /// Parses `config.connection_url` (substituting `{{username}}` and `{{password}}`)
    /// and opens one connection to check it works (Vault's `verify_connection`); that
    /// connection stays in the pool. Errors say why, without the URL or password.
    pub async fn connect(config: MySqlConfig) -> Result<MySqlTarget, DbError> {
        let opts = connection_opts(&config)?;
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
        drop(target.checkout().await?);
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
    use super::*;

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
