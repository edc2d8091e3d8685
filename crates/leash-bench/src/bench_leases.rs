//! `leash bench-leases`: figures for dynamic database credentials and their leases,
//! measured in-process against a real PostgreSQL.
//!
//! The command starts its own leash (SQLite storage in a temporary directory, the dev
//! configuration, HTTP on `127.0.0.1:0`, background workers running) and its own scratch
//! database `leash_bench_<tag>` with one table `public.t1`, then measures:
//!
//! 1. **raw** — the baseline: the issue role's two creation statements (`CREATE ROLE …
//!    PASSWORD '<verifier>' VALID UNTIL …` and `GRANT SELECT ON ALL TABLES …`) in one
//!    transaction per role, over one connection, with one SCRAM verifier computed up
//!    front (so the raw side pays no hashing per role).
//! 2. **issue** — the same statements issued by leash over HTTP (`GET
//!    database/creds/<role>`, `--concurrency` clients), once with the default 4 096 SCRAM
//!    iterations and once with `scram_iterations = 1`, each followed by a timed
//!    `sys/leases/revoke-prefix`.
//! 3. **expire** — `--expire` credentials of a group-role pattern, all expiring in the
//!    same second of a [`ManualClock`]; the clock jumps past it and the run measures how
//!    long the expiry worker takes until no lease and no role is left.
//! 4. **startup** — time from opening storage to the first answered `sys/health`, with no
//!    lease and with `--startup-leases` live leases in storage.
//!
//! Invariants: every PostgreSQL object it makes carries the run's random tag, and the
//! scratch database and those roles are dropped at the end — after an error or Ctrl-C
//! too. Passwords, verifiers and the `--postgres` URL's password are never printed.
//! Bounded: each flag has a ceiling, waits have deadlines.
//! Not here: MySQL, TLS to PostgreSQL, a remote leash (use `leash bench` for that).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use leash_client::{Client, ClientConfig};
use leash_core::{Core, CoreConfig};
use leash_engines::database::postgres::quote_ident;
use leash_engines::database::{generate_password, scram_sha256_verifier};
use leash_storage::{Keyring, LeaseState, SqliteStorage, Storage, StoredLease};
use leash_types::secret::scrub;
use leash_types::{Clock, ExposeSecret, ManualClock, SecretBytes, SecretString, SystemClock};
use serde_json::{Value, json};
use tokio::task::JoinSet;
use tokio_postgres::NoTls;
use tokio_postgres::config::Host;

use crate::Format;
use crate::bench::driver::{RequestSpec, Target, request_once};
use crate::bench::histogram::Histogram;
use crate::bench::report::fmt_latency;

/// `--postgres` when neither the flag nor `LEASH_TEST_POSTGRES_URL` is given.
const DEFAULT_POSTGRES: &str = "postgresql://postgres@127.0.0.1:5432/postgres";
/// Ceiling of `--issue`. Each credential of the issue's role holds a grant on `t1`, and
/// PostgreSQL refuses further grants at ~2 400 entries in one table's ACL.
const MAX_ISSUE: u32 = 2_000;
/// Ceiling of `--concurrency` (each client may hold one PostgreSQL connection of leash's
/// pool; PostgreSQL's default `max_connections` is 100).
const MAX_CONCURRENCY: u32 = 64;
/// Ceiling of `--expire`.
const MAX_EXPIRE: u32 = 100_000;
/// Ceiling of `--startup-leases`.
const MAX_STARTUP_LEASES: u32 = 2_000_000;
/// PostgreSQL's default SCRAM iteration count (leash's default too).
const DEFAULT_SCRAM_ITERATIONS: u32 = 4096;
/// The SCRAM iteration counts measured: the default, and the lowest.
const SCRAM_ITERATIONS: [u32; 2] = [DEFAULT_SCRAM_ITERATIONS, 1];
/// TTL of every credential issued here.
const TTL: Duration = Duration::from_secs(3600);
/// Lease inserts in flight while filling storage for the startup measurement.
const INSERT_IN_FLIGHT: usize = 64;
/// How often the expiry measurement looks at storage and `pg_roles`.
const POLL: Duration = Duration::from_millis(25);
/// Longest wait for the expiry worker to revoke everything.
const EXPIRE_DEADLINE: Duration = Duration::from_secs(1800);
/// Longest wait for a server's first `sys/health` answer.
const HEALTH_DEADLINE: Duration = Duration::from_secs(60);
/// Timeout of one HTTP request to the in-process server (revoke-prefix may be long).
const HTTP_TIMEOUT: Duration = Duration::from_secs(1800);
/// Random characters in the run's tag.
const TAG_LEN: usize = 4;

/// Vault's example creation statements (the issue's role): a grant per credential.
const ISSUE_CREATION: [&str; 2] = [
    "CREATE ROLE \"{{name}}\" WITH LOGIN PASSWORD '{{password}}' VALID UNTIL '{{expiration}}';",
    "GRANT SELECT ON ALL TABLES IN SCHEMA public TO \"{{name}}\";",
];
/// The issue role's revocation statement.
const ISSUE_REVOCATION: &str = "DROP ROLE IF EXISTS \"{{name}}\";";

/// One measurement of the command.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Phase {
    /// Role creation over one raw connection, the baseline.
    Raw,
    /// Issuance and revoke-prefix through leash, SCRAM 4096 and 1.
    Issue,
    /// Many leases expiring in the same second.
    Expire,
    /// Server startup with and without many live leases.
    Startup,
}

/// Options of `leash bench-leases`.
#[derive(clap::Args, Debug)]
pub(crate) struct BenchLeasesArgs {
    /// PostgreSQL to measure against, as a user that may create databases and roles.
    #[arg(
        long,
        value_name = "URL",
        env = "LEASH_TEST_POSTGRES_URL",
        hide_env_values = true,
        default_value = DEFAULT_POSTGRES,
        value_parser = parse_secret
    )]
    postgres: SecretString,
    /// Roles created by each raw baseline and credentials issued per leash run (at most
    /// 2 000: each holds a grant on `t1`, and PostgreSQL refuses grants past ~2 400
    /// entries in one table's ACL).
    #[arg(long, default_value_t = 1000,
          value_parser = clap::value_parser!(u32).range(1..=i64::from(MAX_ISSUE)))]
    issue: u32,
    /// Concurrent HTTP clients (and leash's `max_open_connections`).
    #[arg(long, default_value_t = 8,
          value_parser = clap::value_parser!(u32).range(1..=i64::from(MAX_CONCURRENCY)))]
    concurrency: u32,
    /// Credentials expiring in the same second.
    #[arg(long, default_value_t = 10_000,
          value_parser = clap::value_parser!(u32).range(1..=i64::from(MAX_EXPIRE)))]
    expire: u32,
    /// Live leases in storage for the second startup measurement.
    #[arg(long, default_value_t = 100_000,
          value_parser = clap::value_parser!(u32).range(1..=i64::from(MAX_STARTUP_LEASES)))]
    startup_leases: u32,
    /// Measurements to run, comma-separated.
    #[arg(
        long,
        value_enum,
        value_delimiter = ',',
        default_value = "raw,issue,expire,startup"
    )]
    only: Vec<Phase>,
    /// Output format of the figures (progress always goes to stderr).
    #[arg(long, value_enum, default_value_t = Format::Table)]
    format: Format,
    /// Only the default SCRAM iteration count (the suite's issuance figure).
    #[arg(skip)]
    pub(crate) default_scram_only: bool,
}

fn parse_secret(s: &str) -> Result<SecretString, std::convert::Infallible> {
    Ok(SecretString::from(s.to_owned()))
}

impl BenchLeasesArgs {
    fn runs(&self, p: Phase) -> bool {
        self.only.contains(&p)
    }

    fn scram_iterations(&self) -> &'static [u32] {
        if self.default_scram_only {
            &SCRAM_ITERATIONS[..1]
        } else {
            &SCRAM_ITERATIONS
        }
    }

    /// The options the suite runs with: `issue` credentials, `expire` expiring together,
    /// `startup_leases` for the start-up figure, only the default SCRAM count.
    pub(crate) fn for_suite(
        postgres: SecretString,
        issue: u32,
        expire: u32,
        startup_leases: u32,
        only: Vec<Phase>,
    ) -> BenchLeasesArgs {
        BenchLeasesArgs {
            postgres,
            issue,
            concurrency: 8,
            expire,
            startup_leases,
            only,
            format: Format::Json,
            default_scram_only: true,
        }
    }
}

/// Why the run stopped early.
#[derive(Debug)]
pub(crate) enum Error {
    Failed(String),
    Interrupted,
}

pub(crate) fn failed(msg: impl std::fmt::Display) -> Error {
    Error::Failed(msg.to_string())
}

/// Runs the measurements; exit 0 when all ran, 1 on bad arguments or a failure, 130 when
/// interrupted. Cleans up in every case.
pub(crate) fn run(args: BenchLeasesArgs) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("Error: starting the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    match runtime.block_on(bench(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(Error::Interrupted) => {
            eprintln!("Interrupted; cleaned up.");
            ExitCode::from(130)
        }
        Err(Error::Failed(msg)) => {
            eprintln!("Error: {msg}");
            ExitCode::from(1)
        }
    }
}

// ---------------------------------------------------------------------------------------
// Output
// ---------------------------------------------------------------------------------------

/// One line of the figures.
#[derive(Debug)]
pub(crate) struct Row {
    /// What was measured.
    pub(crate) name: String,
    /// Operations completed.
    count: u64,
    /// Operations that failed.
    pub(crate) errors: u64,
    /// Wall time of the whole measurement.
    pub(crate) elapsed: Duration,
    /// Operations per second, when a rate means something.
    pub(crate) rate: Option<f64>,
    /// Median and 99th percentile of one operation, when measured one by one.
    p50: Option<Duration>,
    p99: Option<Duration>,
    /// Rate relative to the raw baseline.
    pub(crate) vs_raw: Option<f64>,
    /// Anything worth saying next to the figure.
    note: String,
}

impl Row {
    fn new(name: impl Into<String>, count: u64, elapsed: Duration) -> Row {
        let secs = elapsed.as_secs_f64();
        Row {
            name: name.into(),
            count,
            errors: 0,
            elapsed,
            rate: (secs > 0.0).then(|| count as f64 / secs),
            p50: None,
            p99: None,
            vs_raw: None,
            note: String::new(),
        }
    }
}

/// Figures gathered so far; table rows are printed as they come.
pub(crate) struct Output {
    format: Format,
    /// Print nothing on stdout (the suite prints its own table).
    quiet: bool,
    pub(crate) rows: Vec<Row>,
    notes: Vec<String>,
    header_done: bool,
    meta: Value,
}

fn ms(d: Duration) -> f64 {
    (d.as_secs_f64() * 1e5).round() / 100.0
}

impl Output {
    fn new(format: Format) -> Output {
        Output {
            format,
            quiet: false,
            rows: Vec::new(),
            notes: Vec::new(),
            header_done: false,
            meta: Value::Null,
        }
    }

    fn header() -> String {
        format!(
            "{:<36} {:>7} {:>6} {:>9} {:>10} {:>9} {:>9} {:>7}  {}",
            "measurement", "n", "errors", "time", "per s", "p50", "p99", "vs raw", "notes"
        )
    }

    fn line(r: &Row) -> String {
        let opt = |d: Option<Duration>| d.map_or_else(|| "-".to_owned(), fmt_latency);
        format!(
            "{:<36} {:>7} {:>6} {:>9} {:>10} {:>9} {:>9} {:>7}  {}",
            r.name,
            r.count,
            r.errors,
            fmt_latency(r.elapsed),
            r.rate.map_or_else(|| "-".to_owned(), |v| format!("{v:.1}")),
            opt(r.p50),
            opt(r.p99),
            r.vs_raw
                .map_or_else(|| "-".to_owned(), |v| format!("{v:.2}x")),
            r.note
        )
    }

    fn push(&mut self, row: Row) {
        if self.format == Format::Table && !self.quiet {
            if !self.header_done {
                println!("{}", Output::header());
                self.header_done = true;
            }
            println!("{}", Output::line(&row));
        }
        self.rows.push(row);
    }

    fn note(&mut self, text: impl Into<String>) {
        self.notes.push(text.into());
    }

    fn finish(&self) {
        match self.format {
            Format::Table => {
                if !self.notes.is_empty() {
                    println!();
                    for n in &self.notes {
                        println!("* {n}");
                    }
                }
            }
            Format::Json => {
                let rows: Vec<Value> = self
                    .rows
                    .iter()
                    .map(|r| {
                        json!({
                            "measurement": r.name,
                            "count": r.count,
                            "errors": r.errors,
                            "elapsed_ms": ms(r.elapsed),
                            "per_s": r.rate.map(|v| (v * 10.0).round() / 10.0),
                            "p50_ms": r.p50.map(ms),
                            "p99_ms": r.p99.map(ms),
                            "vs_raw": r.vs_raw.map(|v| (v * 1000.0).round() / 1000.0),
                            "note": r.note,
                        })
                    })
                    .collect();
                let doc = json!({"run": self.meta, "figures": rows, "notes": self.notes});
                println!("{}", serde_json::to_string_pretty(&doc).unwrap_or_default());
            }
        }
    }
}

// ---------------------------------------------------------------------------------------
// PostgreSQL
// ---------------------------------------------------------------------------------------

/// The PostgreSQL given by `--postgres`: how to connect, and how to describe it without
/// its password.
struct Pg {
    config: tokio_postgres::Config,
    host: String,
    port: u16,
    user: String,
    password: Option<SecretString>,
}

impl Pg {
    fn parse(url: &SecretString) -> Result<Pg, Error> {
        let url = url.expose_secret();
        let config: tokio_postgres::Config = url.parse().map_err(|e: tokio_postgres::Error| {
            failed(format!(
                "invalid --postgres URL: {}",
                scrub(&e.to_string(), &[url])
            ))
        })?;
        let host = match config.get_hosts() {
            [Host::Tcp(h)] => h.clone(),
            [] => "localhost".to_owned(),
            [Host::Unix(_)] => {
                return Err(failed(
                    "--postgres: Unix-socket hosts are not supported; give a TCP host (postgresql://user@127.0.0.1:5432/postgres)",
                ));
            }
            _ => return Err(failed("--postgres: give exactly one host")),
        };
        let port = match config.get_ports() {
            [] => 5432,
            [p] => *p,
            _ => return Err(failed("--postgres: give exactly one port")),
        };
        let user = config
            .get_user()
            .map(str::to_owned)
            .ok_or_else(|| failed("--postgres: the URL names no user"))?;
        let password = match config.get_password() {
            Some(p) => Some(SecretString::from(
                String::from_utf8(p.to_vec())
                    .map_err(|_| failed("--postgres: the password is not UTF-8"))?,
            )),
            None => None,
        };
        Ok(Pg {
            config,
            host,
            port,
            user,
            password,
        })
    }

    /// `user@host:port`, for people.
    fn label(&self) -> String {
        format!("{}@{}:{}", self.user, self.host, self.port)
    }

    fn secrets(&self) -> Vec<&str> {
        self.password
            .as_ref()
            .map(|p| vec![p.expose_secret()])
            .unwrap_or_default()
    }

    /// Opens one connection, to `db` or to the URL's database.
    async fn connect(&self, db: Option<&str>) -> Result<tokio_postgres::Client, Error> {
        let mut config = self.config.clone();
        if let Some(d) = db {
            config.dbname(d);
        }
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(Duration::from_secs(10));
        }
        let (client, connection) = config.connect(NoTls).await.map_err(|e| {
            failed(format!(
                "connecting to PostgreSQL at {}: {}",
                self.label(),
                scrub(&with_causes(&e), &self.secrets())
            ))
        })?;
        tokio::spawn(async move {
            let _ = connection.await;
        });
        Ok(client)
    }

    /// leash's `connection_url` for database `db` (credentials as placeholders).
    fn leash_url(&self, db: &str) -> String {
        let host = if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        };
        let password = if self.password.is_some() {
            ":{{password}}"
        } else {
            ""
        };
        format!(
            "postgresql://{{{{username}}}}{password}@{host}:{}/{db}",
            self.port
        )
    }
}

/// `e` and its causes, `: `-separated (the driver's own text omits the cause of a
/// failed connection, e.g. "connection refused").
fn with_causes(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        let t = c.to_string();
        if !text.contains(&t) {
            text = format!("{text}: {t}");
        }
        cause = c.source();
    }
    text
}

/// A PostgreSQL error as text, with the server's message when there is one.
fn pg_error(what: &str, e: &tokio_postgres::Error) -> Error {
    match e.as_db_error() {
        Some(db) => failed(format!(
            "PostgreSQL, {what}: {} ({})",
            db.message(),
            db.code().code()
        )),
        None => failed(format!("PostgreSQL, {what}: {}", with_causes(e))),
    }
}

/// The names of one run; everything it creates in PostgreSQL carries `tag`.
#[derive(Clone, Debug)]
struct Scratch {
    tag: String,
    db: String,
}

impl Scratch {
    fn new() -> Scratch {
        const ALPHABET: &[u8; 36] = b"abcdefghijklmnopqrstuvwxyz0123456789";
        let tag: String = leash_types::random::bytes::<TAG_LEN>()
            .iter()
            .map(|b| char::from(ALPHABET[usize::from(*b) % ALPHABET.len()]))
            .collect();
        Scratch {
            db: format!("leash_bench_{tag}"),
            tag,
        }
    }

    /// A leash role name (at most 8 characters, so usernames keep all of it).
    fn leash_role(&self, suffix: &str) -> String {
        format!("{}-{suffix}", self.tag)
    }

    /// The start of every username leash issues for `leash_role` to the root token.
    fn user_prefix(leash_role: &str) -> String {
        format!("v-root-{leash_role}-")
    }

    fn raw_role(&self, iterations: u32, i: u32) -> String {
        format!("bench_raw_{}_{iterations}_{i}", self.tag)
    }

    fn group(&self) -> String {
        format!("bench_readers_{}", self.tag)
    }
}

/// Catalogues that role creation and dropping churn (roles, memberships, grants and
/// their dependencies).
const CHURNED_CATALOGS: &str =
    "pg_catalog.pg_authid, pg_catalog.pg_auth_members, pg_catalog.pg_shdepend, pg_catalog.pg_class";

/// Vacuums the catalogues the previous measurement churned, so the next one does not
/// pay for its dead rows (creating and dropping a thousand roles with grants otherwise
/// slows the next thousand by ~30 %). Unmeasured; a failure (no privilege) is a warning.
async fn settle(db: &tokio_postgres::Client) {
    if let Err(e) = db
        .batch_execute(&format!("VACUUM {CHURNED_CATALOGS}"))
        .await
    {
        eprintln!(
            "warning: VACUUM of the role catalogues failed, figures may carry the previous measurement's dead rows: {}",
            error_text(pg_error("VACUUM", &e))
        );
    }
}

/// Roles whose name starts with `prefix`.
async fn roles_with_prefix(c: &tokio_postgres::Client, prefix: &str) -> Result<i64, Error> {
    let row = c
        .query_one(
            "SELECT count(*) FROM pg_catalog.pg_roles WHERE starts_with(rolname::text, $1)",
            &[&prefix],
        )
        .await
        .map_err(|e| pg_error("counting roles", &e))?;
    row.try_get(0).map_err(|e| pg_error("counting roles", &e))
}

/// Drops the scratch database (ending its sessions) and every role of the run.
async fn cleanup(pg: &Pg, s: &Scratch) {
    let admin = match pg.connect(None).await {
        Ok(c) => c,
        Err(e) => {
            eprintln!(
                "warning: cleanup could not connect ({}); drop database {} and the roles named v-root-{}-*, bench_raw_{}_*, bench_readers_{} by hand",
                match e {
                    Error::Failed(m) => m,
                    Error::Interrupted => "interrupted".into(),
                },
                s.db,
                s.tag,
                s.tag,
                s.tag
            );
            return;
        }
    };
    // Dropping the database first removes every grant on its objects, so the roles
    // drop without DROP OWNED. FORCE ends leash's pooled sessions still open.
    if let Err(e) = admin
        .batch_execute(&format!(
            "DROP DATABASE IF EXISTS {} WITH (FORCE)",
            quote_ident(&s.db)
        ))
        .await
    {
        eprintln!(
            "warning: dropping database {}: {}",
            s.db,
            error_text(pg_error("DROP DATABASE", &e))
        );
    }
    let rows = admin
        .query(
            "SELECT rolname::text FROM pg_catalog.pg_roles \
             WHERE starts_with(rolname::text, $1) OR starts_with(rolname::text, $2) \
                OR rolname::text = $3",
            &[
                &format!("v-root-{}-", s.tag),
                &format!("bench_raw_{}_", s.tag),
                &s.group(),
            ],
        )
        .await;
    let names: Vec<String> = match rows {
        Ok(rows) => rows.iter().filter_map(|r| r.try_get(0).ok()).collect(),
        Err(e) => {
            eprintln!(
                "warning: listing the run's roles: {}",
                error_text(pg_error("pg_roles", &e))
            );
            return;
        }
    };
    // Members first, the group role last.
    let (group, members): (Vec<String>, Vec<String>) =
        names.into_iter().partition(|n| *n == s.group());
    let mut dropped = 0usize;
    for chunk in members.chunks(1000).chain(group.chunks(1)) {
        let list: Vec<String> = chunk.iter().map(|n| quote_ident(n)).collect();
        match admin
            .batch_execute(&format!("DROP ROLE IF EXISTS {}", list.join(", ")))
            .await
        {
            Ok(()) => dropped += chunk.len(),
            Err(e) => eprintln!(
                "warning: dropping roles: {}",
                error_text(pg_error("DROP ROLE", &e))
            ),
        }
    }
    eprintln!(
        "cleanup: dropped database {} and {dropped} leftover role(s)",
        s.db
    );
}

pub(crate) fn error_text(e: Error) -> String {
    match e {
        Error::Failed(m) => m,
        Error::Interrupted => "interrupted".into(),
    }
}

// ---------------------------------------------------------------------------------------
// An in-process server
// ---------------------------------------------------------------------------------------

/// A running leash: storage, core, background workers and the HTTP listener.
pub(crate) struct Server {
    pub(crate) addr: SocketAddr,
    storage: Arc<dyn Storage>,
    root: SecretString,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

fn dev_config() -> CoreConfig {
    CoreConfig {
        dev: true,
        ..CoreConfig::default()
    }
}

/// Opens (or creates) SQLite storage in `dir` off the async threads.
async fn open_storage(dir: &Path, key: &SecretBytes) -> Result<Arc<dyn Storage>, Error> {
    let keyring = Keyring::from_master(key).map_err(failed)?;
    let path = dir.to_path_buf();
    let storage = tokio::task::spawn_blocking(move || SqliteStorage::open(&path, keyring))
        .await
        .map_err(failed)?
        .map_err(|e| failed(format!("opening storage in {}: {e}", dir.display())))?;
    Ok(Arc::new(storage))
}

/// Closes storage (its writer finishes and the database is closed) off the async
/// threads; fails if something still holds it.
async fn close_storage(storage: Arc<dyn Storage>) -> Result<(), Error> {
    if Arc::strong_count(&storage) != 1 {
        return Err(failed("storage is still in use after the server stopped"));
    }
    tokio::task::spawn_blocking(move || drop(storage))
        .await
        .map_err(failed)
}

impl Server {
    /// Opens storage in `dir`, the core, its background work and the listener, in the
    /// order `leash server` does.
    pub(crate) async fn launch(
        dir: &Path,
        key: &SecretBytes,
        clock: Arc<dyn Clock>,
        root: &SecretString,
    ) -> Result<Server, Error> {
        let storage = open_storage(dir, key).await?;
        let opened = Core::open(
            Arc::clone(&storage),
            clock,
            dev_config(),
            Some(root.clone()),
        )
        .await
        .map_err(|e| failed(format!("opening the core: {e}")))?;
        let core = opened.core;
        let background = core.start_background();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .map_err(|e| failed(format!("binding 127.0.0.1:0: {e}")))?;
        let addr = listener.local_addr().map_err(failed)?;
        let app = leash_http::app(core, leash_http::HttpConfig::default());
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            let shutdown = async move {
                let _ = stop_rx.await;
            };
            if let Err(e) = leash_http::serve(listener, app, None, shutdown).await {
                eprintln!("warning: the in-process server stopped: {e}");
            }
            background.shutdown().await;
        });
        Ok(Server {
            addr,
            storage,
            root: root.clone(),
            stop: Some(stop_tx),
            task: Some(task),
        })
    }

    /// A client of this server with the root token.
    pub(crate) fn client(&self) -> Result<Client, Error> {
        let mut config =
            ClientConfig::new(format!("http://{}", self.addr)).with_token(self.root.clone());
        config.timeout = HTTP_TIMEOUT;
        Client::new(config).map_err(failed)
    }

    /// Stops the listener and the background work, and returns the storage.
    pub(crate) async fn stop(mut self) -> Arc<dyn Storage> {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.task.take() {
            let _ = t.await;
        }
        Arc::clone(&self.storage)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
    }
}

/// One `GET /v1/sys/health` on a fresh connection; the status.
async fn health(addr: SocketAddr) -> Result<u16, String> {
    let target = Target {
        addr,
        host: hyper::header::HeaderValue::from_str(&addr.to_string())
            .map_err(|e| format!("host: {e}"))?,
    };
    let spec = RequestSpec {
        method: hyper::Method::GET,
        path: "/v1/sys/health".into(),
        token: None,
        body: None,
    };
    request_once(&target, &spec).await
}

/// Waits for the first `200` from `sys/health`.
pub(crate) async fn first_health(addr: SocketAddr) -> Result<(), Error> {
    let deadline = Instant::now() + HEALTH_DEADLINE;
    let mut last = String::new();
    while Instant::now() < deadline {
        match health(addr).await {
            Ok(200) => return Ok(()),
            Ok(s) => last = format!("HTTP {s}"),
            Err(e) => last = e,
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    Err(failed(format!(
        "sys/health did not answer 200 within {}s (last: {last})",
        HEALTH_DEADLINE.as_secs()
    )))
}

/// A 2xx answer's body, or an error that says what the request was.
async fn call(
    client: &Client,
    method: &str,
    path: &str,
    body: Option<&Value>,
) -> Result<Option<Value>, Error> {
    let resp = client
        .request(method, path, body)
        .await
        .map_err(|e| failed(format!("{method} {path}: {e}")))?;
    if resp.is_success() {
        Ok(resp.body)
    } else {
        Err(failed(format!(
            "{method} {path}: HTTP {}: {}",
            resp.status,
            resp.errors().join("; ")
        )))
    }
}

// ---------------------------------------------------------------------------------------
// The run
// ---------------------------------------------------------------------------------------

/// The suite's entry: runs `args`' measurements, prints nothing on stdout, returns the
/// rows. Cleans up in every case.
pub(crate) async fn collect(args: &BenchLeasesArgs) -> Result<Vec<Row>, Error> {
    let pg = Pg::parse(&args.postgres)?;
    let mut out = Output::new(args.format);
    out.quiet = true;
    let cpus = std::thread::available_parallelism()
        .map(std::num::NonZeroUsize::get)
        .unwrap_or(0);
    let mut scratch: Option<Scratch> = None;
    let outcome = run_all(args, &pg, cpus, &mut scratch, &mut out).await;
    if let Some(s) = &scratch {
        cleanup(&pg, s).await;
    }
    outcome.map(|()| out.rows)
}

async fn bench(args: BenchLeasesArgs) -> Result<(), Error> {
    let pg = Pg::parse(&args.postgres)?;
    let mut out = Output::new(args.format);
    let cpus = std::thread::available_parallelism()
        .map(std::num::NonZeroUsize::get)
        .unwrap_or(0);
    let mut scratch: Option<Scratch> = None;
    let outcome = tokio::select! {
        r = run_all(&args, &pg, cpus, &mut scratch, &mut out) => r,
        _ = tokio::signal::ctrl_c() => Err(Error::Interrupted),
    };
    if let Some(s) = &scratch {
        cleanup(&pg, s).await;
    }
    if outcome.is_ok() || !out.rows.is_empty() {
        out.finish();
    }
    outcome
}

async fn run_all(
    args: &BenchLeasesArgs,
    pg: &Pg,
    cpus: usize,
    scratch: &mut Option<Scratch>,
    out: &mut Output,
) -> Result<(), Error> {
    let needs_pg = args.runs(Phase::Raw) || args.runs(Phase::Issue) || args.runs(Phase::Expire);
    out.meta = json!({
        "postgres": pg.label(),
        "issue": args.issue,
        "concurrency": args.concurrency,
        "expire": args.expire,
        "startup_leases": args.startup_leases,
        "cpus": cpus,
    });
    if needs_pg {
        let admin = pg.connect(None).await?;
        let version: String = admin
            .query_one("SHOW server_version_num", &[])
            .await
            .and_then(|r| r.try_get(0))
            .map_err(|e| pg_error("server version", &e))?;
        let version_num: u32 = version.trim().parse().unwrap_or(0);
        if version_num < 140_000 {
            return Err(failed(format!(
                "PostgreSQL {version} is too old: leash needs 14 or later"
            )));
        }
        let s = Scratch::new();
        admin
            .batch_execute(&format!("CREATE DATABASE {}", quote_ident(&s.db)))
            .await
            .map_err(|e| pg_error("CREATE DATABASE", &e))?;
        *scratch = Some(s.clone());
        drop(admin);
        out.meta["scratch_database"] = json!(s.db);
        out.meta["postgres_version_num"] = json!(version_num);
        eprintln!(
            "leash bench-leases: PostgreSQL {} (version {version_num}), scratch database {}; {} CPUs; --issue {} --concurrency {} --expire {} --startup-leases {}",
            pg.label(),
            s.db,
            cpus,
            args.issue,
            args.concurrency,
            args.expire,
            args.startup_leases
        );
        let mut db = pg.connect(Some(&s.db)).await?;
        db.batch_execute("CREATE TABLE public.t1 (id bigint PRIMARY KEY, v text)")
            .await
            .map_err(|e| pg_error("CREATE TABLE t1", &e))?;

        // Raw rates by SCRAM iteration count, for the "vs raw" column.
        let mut raw_rates: Vec<(u32, f64)> = Vec::new();
        if args.runs(Phase::Raw) {
            for &iterations in args.scram_iterations() {
                if let Some(r) = raw_baseline(args, &mut db, &s, iterations, out).await? {
                    raw_rates.push((iterations, r));
                }
            }
            out.note(
                "raw: the verifier is computed once, yet PostgreSQL still hashes per role: CREATE/ALTER ROLE ... PASSWORD refuses an empty password by checking the verifier against \"\" (PBKDF2 with the verifier's own iteration count). So the count costs the database, not only leash.",
            );
        }
        if args.runs(Phase::Issue) || args.runs(Phase::Expire) {
            let clock = ManualClock::new();
            let dir = tempdir()?;
            let key = Keyring::generate_master();
            let root =
                SecretString::from(format!("bench-root-{}", leash_types::random::base62(24)));
            let server = Server::launch(dir.path(), &key, Arc::new(clock.clone()), &root).await?;
            let ctx = Ctx {
                args,
                pg,
                s: &s,
                db: &db,
                client: server.client()?,
                storage: Arc::clone(&server.storage),
            };
            call(
                &ctx.client,
                "POST",
                "sys/mounts/database",
                Some(&json!({"type": "database"})),
            )
            .await?;
            if args.runs(Phase::Issue) {
                for &iterations in args.scram_iterations() {
                    let raw = raw_rates
                        .iter()
                        .find(|(i, _)| *i == iterations)
                        .map(|(_, r)| *r);
                    issuance(&ctx, iterations, raw, out).await?;
                }
                out.note(
                    "scram_iterations = 1: leash computes the SCRAM verifier itself (PBKDF2, 4 096 rounds by default) and sends only the verifier. Iterations only slow brute force of a stolen verifier; leash's passwords are >= 120-bit random, so 1 iteration protects them just as well.",
                );
                out.note(
                    "leash runs each credential's statements in one transaction holding an advisory lock (role DDL is serialised per database, across servers): concurrent clients overlap HTTP, storage and hashing, not the DDL.",
                );
            }
            if args.runs(Phase::Expire) {
                expiry(&ctx, &clock, out).await?;
            }
            drop(ctx);
            let storage = server.stop().await;
            close_storage(storage).await?;
            drop(dir);
        }
    }
    if args.runs(Phase::Startup) {
        if !needs_pg {
            eprintln!(
                "leash bench-leases: startup only; {} CPUs; --startup-leases {}",
                cpus, args.startup_leases
            );
        }
        startup(args, out).await?;
    }
    Ok(())
}

fn tempdir() -> Result<tempfile::TempDir, Error> {
    tempfile::Builder::new()
        .prefix("leash-bench-leases-")
        .tempdir()
        .map_err(|e| failed(format!("creating a temporary directory: {e}")))
}

/// What the leash measurements share.
struct Ctx<'a> {
    args: &'a BenchLeasesArgs,
    pg: &'a Pg,
    s: &'a Scratch,
    /// A connection to the scratch database.
    db: &'a tokio_postgres::Client,
    /// The in-process server, root token.
    client: Client,
    storage: Arc<dyn Storage>,
}

/// Measurement 1: the issue role's statements over one raw connection, with one SCRAM
/// verifier of `iterations` computed up front. Returns roles/s.
async fn raw_baseline(
    args: &BenchLeasesArgs,
    db: &mut tokio_postgres::Client,
    s: &Scratch,
    iterations: u32,
    out: &mut Output,
) -> Result<Option<f64>, Error> {
    let n = args.issue;
    let password = generate_password();
    let verifier = SecretString::from(
        scram_sha256_verifier(password.expose_secret(), iterations)
            .map_err(|e| failed(format!("computing a SCRAM verifier: {e}")))?,
    );
    drop(password);
    let until: String = db
        .query_one("SELECT (now() + interval '1 hour')::text", &[])
        .await
        .and_then(|r| r.try_get(0))
        .map_err(|e| pg_error("now()", &e))?;
    settle(db).await;
    eprintln!("raw: creating {n} roles over one connection (verifier of {iterations} iterations)…");
    let names: Vec<String> = (0..n).map(|i| s.raw_role(iterations, i)).collect();
    let mut latencies = Histogram::new();
    let start = Instant::now();
    for name in &names {
        let t = Instant::now();
        let q = quote_ident(name);
        let tx = db.transaction().await.map_err(|e| pg_error("BEGIN", &e))?;
        tx.batch_execute(&format!(
            "CREATE ROLE {q} WITH LOGIN PASSWORD '{}' VALID UNTIL '{until}';",
            verifier.expose_secret()
        ))
        .await
        .map_err(|e| pg_error("CREATE ROLE", &e))?;
        tx.batch_execute(&format!(
            "GRANT SELECT ON ALL TABLES IN SCHEMA public TO {q};"
        ))
        .await
        .map_err(|e| pg_error("GRANT", &e))?;
        tx.commit().await.map_err(|e| pg_error("COMMIT", &e))?;
        latencies.record(t.elapsed());
    }
    let elapsed = start.elapsed();
    let mut row = Row::new(
        format!("raw create, scram {iterations}"),
        u64::from(n),
        elapsed,
    );
    row.p50 = Some(latencies.quantile(0.5));
    row.p99 = Some(latencies.quantile(0.99));
    row.note = "1 connection, 1 tx per role (CREATE ROLE; GRANT), verifier precomputed".into();
    let rate = row.rate;
    out.push(row);

    let list: Vec<String> = names.iter().map(|n| quote_ident(n)).collect();
    let list = list.join(", ");
    let start = Instant::now();
    let tx = db.transaction().await.map_err(|e| pg_error("BEGIN", &e))?;
    tx.batch_execute(&format!("DROP OWNED BY {list}; DROP ROLE {list};"))
        .await
        .map_err(|e| pg_error("DROP OWNED/DROP ROLE", &e))?;
    tx.commit().await.map_err(|e| pg_error("COMMIT", &e))?;
    let mut row = Row::new(format!("raw drop {n}"), u64::from(n), start.elapsed());
    row.note = "1 tx: DROP OWNED BY all; DROP ROLE all".into();
    out.push(row);
    Ok(rate)
}

/// Result of issuing many credentials.
struct Issued {
    ok: u64,
    errors: u64,
    first_error: Option<String>,
    elapsed: Duration,
    /// Latencies of the successful requests.
    latencies: Histogram,
}

/// Issues `n` credentials of `role` with `concurrency` clients; progress every
/// `progress_every` credentials when given.
async fn issue_many(
    client: &Client,
    role: &str,
    n: u32,
    concurrency: u32,
    progress_every: Option<u32>,
) -> Issued {
    let next = Arc::new(AtomicU32::new(0));
    let done = Arc::new(AtomicU32::new(0));
    let path = Arc::new(format!("database/creds/{role}"));
    let start = Instant::now();
    let mut tasks = JoinSet::new();
    for _ in 0..concurrency.min(n) {
        let (client, next, done, path) = (
            client.clone(),
            Arc::clone(&next),
            Arc::clone(&done),
            Arc::clone(&path),
        );
        tasks.spawn(async move {
            let mut lat = Histogram::new();
            let mut errors = 0u64;
            let mut first_error = None;
            while next.fetch_add(1, Ordering::Relaxed) < n {
                let t = Instant::now();
                let outcome = client.request("GET", &path, None).await;
                let took = t.elapsed();
                let err = match outcome {
                    Ok(r)
                        if r.status == 200
                            && r.body
                                .as_ref()
                                .and_then(|b| b.get("lease_id"))
                                .and_then(Value::as_str)
                                .is_some_and(|id| !id.is_empty()) =>
                    {
                        None
                    }
                    Ok(r) => Some(format!("HTTP {}: {}", r.status, r.errors().join("; "))),
                    Err(e) => Some(e.to_string()),
                };
                match err {
                    None => lat.record(took),
                    Some(e) => {
                        errors += 1;
                        first_error.get_or_insert(e);
                    }
                }
                let d = done.fetch_add(1, Ordering::Relaxed) + 1;
                if let Some(every) = progress_every
                    && d.is_multiple_of(every)
                {
                    eprintln!("  issued {d}/{n} ({:.1}s)", start.elapsed().as_secs_f64());
                }
            }
            (lat, errors, first_error)
        });
    }
    let mut out = Issued {
        ok: 0,
        errors: 0,
        first_error: None,
        elapsed: Duration::ZERO,
        latencies: Histogram::new(),
    };
    while let Some(joined) = tasks.join_next().await {
        match joined {
            Ok((lat, errors, first)) => {
                out.ok += lat.len();
                out.latencies.merge(&lat);
                out.errors += errors;
                if out.first_error.is_none() {
                    out.first_error = first;
                }
            }
            Err(e) => {
                out.errors += 1;
                out.first_error
                    .get_or_insert_with(|| format!("client task failed: {e}"));
            }
        }
    }
    out.elapsed = start.elapsed();
    out
}

/// Writes config `pg` of the scratch database with `scram_iterations`.
async fn write_config(ctx: &Ctx<'_>, iterations: u32) -> Result<(), Error> {
    let password = ctx
        .pg
        .password
        .as_ref()
        .map(|p| p.expose_secret().to_owned())
        .unwrap_or_default();
    let body = json!({
        "plugin_name": "postgresql-database-plugin",
        "connection_url": ctx.pg.leash_url(&ctx.s.db),
        "username": ctx.pg.user,
        "password": password,
        "allowed_roles": "*",
        "max_open_connections": ctx.args.concurrency,
        "scram_iterations": iterations,
    });
    call(&ctx.client, "POST", "database/config/pg", Some(&body)).await?;
    Ok(())
}

/// Measurement 2: issuance through leash with `iterations`, then revoke-prefix of all
/// of it.
async fn issuance(
    ctx: &Ctx<'_>,
    iterations: u32,
    raw_rate: Option<f64>,
    out: &mut Output,
) -> Result<(), Error> {
    let n = ctx.args.issue;
    let role = ctx.s.leash_role(if iterations == 1 { "s1" } else { "s4k" });
    write_config(ctx, iterations).await?;
    let body = json!({
        "db_name": "pg",
        "creation_statements": ISSUE_CREATION,
        "revocation_statements": [ISSUE_REVOCATION],
        "default_ttl": "1h",
    });
    call(
        &ctx.client,
        "POST",
        &format!("database/roles/{role}"),
        Some(&body),
    )
    .await?;
    eprintln!(
        "issue: {n} credentials of {role} (scram_iterations {iterations}), {} clients…",
        ctx.args.concurrency
    );
    settle(ctx.db).await;
    let issued = issue_many(&ctx.client, &role, n, ctx.args.concurrency, None).await;
    if issued.ok == 0 {
        return Err(failed(format!(
            "no credential could be issued: {}",
            issued.first_error.unwrap_or_default()
        )));
    }
    let mut row = Row::new(
        format!("leash issue, scram {iterations}"),
        issued.ok,
        issued.elapsed,
    );
    row.errors = issued.errors;
    row.p50 = Some(issued.latencies.quantile(0.5));
    row.p99 = Some(issued.latencies.quantile(0.99));
    row.vs_raw = match (row.rate, raw_rate) {
        (Some(l), Some(r)) if r > 0.0 => Some(l / r),
        _ => None,
    };
    row.note = format!(
        "GET database/creds, {} clients{}",
        ctx.args.concurrency,
        issued
            .first_error
            .map(|e| format!("; first error: {e}"))
            .unwrap_or_default()
    );
    out.push(row);

    let prefix = Scratch::user_prefix(&role);
    let live = roles_with_prefix(ctx.db, &prefix).await?;
    if u64::try_from(live).unwrap_or(0) != issued.ok {
        eprintln!(
            "warning: {live} roles start with {prefix} in PostgreSQL, {} credentials were issued",
            issued.ok
        );
    }
    eprintln!("issue: revoke-prefix database/creds/{role}/ …");
    let start = Instant::now();
    call(
        &ctx.client,
        "PUT",
        &format!("sys/leases/revoke-prefix/database/creds/{role}/"),
        Some(&json!({})),
    )
    .await?;
    let elapsed = start.elapsed();
    let left_roles = roles_with_prefix(ctx.db, &prefix).await?;
    let left_leases = ctx.storage.lease_count().await.map_err(failed)?;
    let mut row = Row::new(format!("revoke-prefix {}", issued.ok), issued.ok, elapsed);
    row.note = format!("one batch; roles left {left_roles}, leases left {left_leases}");
    out.push(row);
    Ok(())
}

/// Measurement 3: `--expire` credentials expiring in the same clock second; the time
/// until the worker has revoked every one.
async fn expiry(ctx: &Ctx<'_>, clock: &ManualClock, out: &mut Output) -> Result<(), Error> {
    let n = ctx.args.expire;
    let group = ctx.s.group();
    ctx.db
        .batch_execute(&format!(
            "CREATE ROLE {g} NOLOGIN; GRANT SELECT ON public.t1 TO {g};",
            g = quote_ident(&group)
        ))
        .await
        .map_err(|e| pg_error("CREATE ROLE (group)", &e))?;
    let raw_rate = raw_group_drop(ctx, &group, out).await?;
    write_config(ctx, 1).await?;
    let role = ctx.s.leash_role("exp");
    let body = json!({
        "db_name": "pg",
        "creation_statements": [format!(
            "CREATE ROLE \"{{{{name}}}}\" WITH LOGIN PASSWORD '{{{{password}}}}' VALID UNTIL '{{{{expiration}}}}' IN ROLE {};",
            quote_ident(&group)
        )],
        "default_ttl": "1h",
    });
    call(
        &ctx.client,
        "POST",
        &format!("database/roles/{role}"),
        Some(&body),
    )
    .await?;
    eprintln!(
        "expire: issuing {n} credentials of {role} (IN ROLE {group}, scram_iterations 1), all expiring at clock second {}…",
        clock.unix() + i64::try_from(TTL.as_secs()).unwrap_or(0)
    );
    let before = ctx.storage.lease_count().await.map_err(failed)?;
    settle(ctx.db).await;
    let issued = issue_many(&ctx.client, &role, n, ctx.args.concurrency, Some(1000)).await;
    if issued.ok == 0 {
        return Err(failed(format!(
            "no credential could be issued: {}",
            issued.first_error.unwrap_or_default()
        )));
    }
    let mut row = Row::new(
        "leash issue, group role, scram 1",
        issued.ok,
        issued.elapsed,
    );
    row.errors = issued.errors;
    row.p50 = Some(issued.latencies.quantile(0.5));
    row.p99 = Some(issued.latencies.quantile(0.99));
    row.note = format!(
        "IN ROLE {group}, {} clients{}",
        ctx.args.concurrency,
        issued
            .first_error
            .map(|e| format!("; first error: {e}"))
            .unwrap_or_default()
    );
    out.push(row);
    let prefix = Scratch::user_prefix(&role);
    let leases = ctx.storage.lease_count().await.map_err(failed)?;
    let roles = roles_with_prefix(ctx.db, &prefix).await?;
    eprintln!(
        "expire: {leases} leases in storage ({before} before), {roles} roles in PostgreSQL; advancing the clock by 1h1s"
    );

    // A throwaway token: revoking it wakes the lease worker at once instead of at its
    // next tick (up to 250 ms later).
    let waker = call(
        &ctx.client,
        "POST",
        "auth/token/create",
        Some(&json!({"policies": ["default"], "ttl": "3h", "no_parent": true})),
    )
    .await?
    .and_then(|b| {
        b.get("auth")
            .and_then(|a| a.get("client_token"))
            .and_then(Value::as_str)
            .map(|t| SecretString::from(t.to_owned()))
    })
    .ok_or_else(|| failed("auth/token/create returned no token"))?;
    let waker_client = ctx.client.with_token(waker);

    let start = Instant::now();
    clock.advance(TTL + Duration::from_secs(1));
    call(
        &waker_client,
        "POST",
        "auth/token/revoke-self",
        Some(&json!({})),
    )
    .await?;
    let deadline = start + EXPIRE_DEADLINE;
    let mut next_report = start + Duration::from_secs(1);
    let (mut left_leases, mut left_roles);
    loop {
        left_leases = ctx.storage.lease_count().await.map_err(failed)?;
        left_roles = roles_with_prefix(ctx.db, &prefix).await?;
        if left_leases == 0 && left_roles == 0 {
            break;
        }
        let now = Instant::now();
        if now >= deadline {
            return Err(failed(format!(
                "expiry did not finish within {}s: {left_leases} leases and {left_roles} roles left",
                EXPIRE_DEADLINE.as_secs()
            )));
        }
        if now >= next_report {
            eprintln!(
                "  {:.1}s: {left_leases} leases, {left_roles} roles left",
                start.elapsed().as_secs_f64()
            );
            next_report += Duration::from_secs(1);
        }
        tokio::time::sleep(POLL).await;
    }
    let elapsed = start.elapsed();
    let mut row = Row::new(
        format!("expire {} in the same second", issued.ok),
        issued.ok,
        elapsed,
    );
    row.vs_raw = match (row.rate, raw_rate) {
        (Some(l), Some(r)) if r > 0.0 => Some(l / r),
        _ => None,
    };
    row.note = format!(
        "clock +1h1s -> 0 leases and 0 roles left (polled every {}ms)",
        POLL.as_millis()
    );
    out.push(row);
    Ok(())
}

/// Roles dropped per statement by the raw expiry baseline: the lease worker's batch.
const RAW_DROP_BATCH: usize = 2_048;

/// The baseline of mass expiry: `--expire` login roles in `group` created (unmeasured),
/// then dropped with `DROP ROLE a, b, …` in transactions of [`RAW_DROP_BATCH`] roles,
/// the batch leash's lease worker revokes. Returns roles dropped per second.
async fn raw_group_drop(
    ctx: &Ctx<'_>,
    group: &str,
    out: &mut Output,
) -> Result<Option<f64>, Error> {
    let n = ctx.args.expire;
    let names: Vec<String> = (0..n).map(|i| quote_ident(&ctx.s.raw_role(0, i))).collect();
    eprintln!("expire: raw baseline, creating {n} roles IN ROLE {group} (unmeasured)…");
    for chunk in names.chunks(1000) {
        let sql: String = chunk
            .iter()
            .map(|q| format!("CREATE ROLE {q} WITH LOGIN IN ROLE {};", quote_ident(group)))
            .collect();
        ctx.db
            .batch_execute(&sql)
            .await
            .map_err(|e| pg_error("CREATE ROLE (raw group member)", &e))?;
    }
    settle(ctx.db).await;
    let start = Instant::now();
    for chunk in names.chunks(RAW_DROP_BATCH) {
        ctx.db
            .batch_execute(&format!("BEGIN; DROP ROLE {}; COMMIT;", chunk.join(", ")))
            .await
            .map_err(|e| pg_error("DROP ROLE (raw batch)", &e))?;
    }
    let mut row = Row::new(
        format!("raw drop {n} group roles"),
        u64::from(n),
        start.elapsed(),
    );
    row.note = format!("DROP ROLE of {RAW_DROP_BATCH} roles per transaction");
    let rate = row.rate;
    out.push(row);
    settle(ctx.db).await;
    Ok(rate)
}

/// A lease of the shape the database engine stores, expiring in 30 days.
fn synthetic_lease(now: i64) -> StoredLease {
    let suffix = leash_types::random::base62(24);
    let id = format!("database/creds/bench/{suffix}");
    let entry = json!({
        "mount_uuid": "00000000-0000-4000-8000-000000000000",
        "mount_path": "database/",
        "path": format!("creds/bench/{suffix}"),
        "ttl": TTL.as_secs(),
        "renewable": true,
        "internal": {
            "db_name": "pg",
            "role": "bench",
            "username": format!("v-root-bench-{}", suffix.to_ascii_lowercase()),
            "revocation_statements": [],
            "renew_statements": [],
        },
    });
    let expire_at = now + 30 * 86_400;
    StoredLease {
        id,
        token: None,
        issue_time: now,
        expire_at,
        max_expire_at: expire_at,
        state: LeaseState::Active,
        attempts: 0,
        next_attempt_at: 0,
        last_error: None,
        entry: leash_storage::Plain::new(entry.to_string().into_bytes()),
    }
}

/// Fills `storage` with `n` leases, `INSERT_IN_FLIGHT` at a time.
async fn insert_leases(storage: &Arc<dyn Storage>, n: u32) -> Result<Duration, Error> {
    let now = SystemClock.unix();
    let start = Instant::now();
    let mut tasks = JoinSet::new();
    let mut spawned = 0u32;
    let mut done = 0u32;
    let every = (n / 10).max(1);
    while done < n {
        while tasks.len() < INSERT_IN_FLIGHT && spawned < n {
            let s = Arc::clone(storage);
            tasks.spawn(async move { s.lease_insert(synthetic_lease(now)).await });
            spawned += 1;
        }
        match tasks.join_next().await {
            Some(Ok(Ok(()))) => done += 1,
            Some(Ok(Err(e))) => return Err(failed(format!("inserting a lease: {e}"))),
            Some(Err(e)) => return Err(failed(format!("insert task: {e}"))),
            None => break,
        }
        if done.is_multiple_of(every) {
            eprintln!(
                "  inserted {done}/{n} leases ({:.1}s)",
                start.elapsed().as_secs_f64()
            );
        }
    }
    Ok(start.elapsed())
}

/// An initialised data directory in `dir`, as a restarted server finds it, holding `n`
/// live leases; the time their insertion took (`None` for none).
pub(crate) async fn prepare_data_dir(
    dir: &Path,
    key: &SecretBytes,
    root: &SecretString,
    n: u32,
) -> Result<Option<Duration>, Error> {
    let storage = open_storage(dir, key).await?;
    let opened = Core::open(
        Arc::clone(&storage),
        Arc::new(SystemClock),
        dev_config(),
        Some(root.clone()),
    )
    .await
    .map_err(|e| failed(format!("initialising storage: {e}")))?;
    drop(opened);
    let mut took = None;
    if n > 0 {
        eprintln!("startup: inserting {n} leases through the storage API…");
        took = Some(insert_leases(&storage, n).await?);
    }
    close_storage(storage).await?;
    Ok(took)
}

/// A scratch PostgreSQL database for the suite's agent figure, with a random tag; every
/// role whose name holds the tag is dropped with it.
pub(crate) struct ScratchDb {
    pg: Pg,
    s: Scratch,
}

impl ScratchDb {
    /// Creates database `leash_bench_<tag>` on `url`.
    pub(crate) async fn create(url: &SecretString) -> Result<ScratchDb, Error> {
        let pg = Pg::parse(url)?;
        let s = Scratch::new();
        let admin = pg.connect(None).await?;
        admin
            .batch_execute(&format!("CREATE DATABASE {}", quote_ident(&s.db)))
            .await
            .map_err(|e| pg_error("CREATE DATABASE", &e))?;
        Ok(ScratchDb { pg, s })
    }

    /// The run's random tag.
    pub(crate) fn tag(&self) -> &str {
        &self.s.tag
    }

    /// The body of `database/config/<name>` for this database.
    pub(crate) fn leash_config(&self) -> Value {
        let password = self
            .pg
            .password
            .as_ref()
            .map(|p| p.expose_secret().to_owned())
            .unwrap_or_default();
        json!({
            "plugin_name": "postgresql-database-plugin",
            "connection_url": self.pg.leash_url(&self.s.db),
            "username": self.pg.user,
            "password": password,
            "allowed_roles": "*",
        })
    }

    /// Drops the database and every role whose name holds the tag.
    pub(crate) async fn drop_all(self) {
        cleanup(&self.pg, &self.s).await;
        let Ok(admin) = self.pg.connect(None).await else {
            return;
        };
        let pattern = format!("%{}%", self.s.tag);
        if let Ok(rows) = admin
            .query(
                "SELECT rolname::text FROM pg_catalog.pg_roles WHERE rolname::text LIKE $1",
                &[&pattern],
            )
            .await
        {
            for r in rows {
                if let Ok(name) = r.try_get::<_, String>(0) {
                    let _ = admin
                        .batch_execute(&format!("DROP ROLE IF EXISTS {}", quote_ident(&name)))
                        .await;
                }
            }
        }
    }
}

/// Measurement 4: startup time with no lease and with `--startup-leases` live leases.
async fn startup(args: &BenchLeasesArgs, out: &mut Output) -> Result<(), Error> {
    for n in [0, args.startup_leases] {
        let dir = tempdir()?;
        let path: PathBuf = dir.path().to_path_buf();
        let key = Keyring::generate_master();
        let root = SecretString::from(format!("bench-root-{}", leash_types::random::base62(24)));
        if let Some(took) = prepare_data_dir(&path, &key, &root, n).await? {
            let mut row = Row::new(
                format!("insert {n} leases (storage API)"),
                u64::from(n),
                took,
            );
            row.note = format!("lease_insert, {INSERT_IN_FLIGHT} in flight, durable each");
            out.push(row);
        }
        eprintln!("startup: starting with {n} live leases…");
        let start = Instant::now();
        let server = Server::launch(&path, &key, Arc::new(SystemClock), &root).await?;
        first_health(server.addr).await?;
        let elapsed = start.elapsed();
        let count = server.storage.lease_count().await.map_err(failed)?;
        let storage = server.stop().await;
        close_storage(storage).await?;
        drop(dir);
        let mut row = Row::new(format!("startup, {n} live leases"), u64::from(n), elapsed);
        row.rate = None;
        row.note = format!(
            "open storage + core + workers + listener -> first sys/health 200 ({count} leases found)"
        );
        out.push(row);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn postgres_urls_parse_without_leaking_the_password() {
        let pg = Pg::parse(&SecretString::from(
            "postgresql://admin:s3cret@db.example:6543/postgres".to_owned(),
        ))
        .unwrap();
        assert_eq!(pg.label(), "admin@db.example:6543");
        assert_eq!(
            pg.leash_url("leash_bench_x"),
            "postgresql://{{username}}:{{password}}@db.example:6543/leash_bench_x"
        );
        let trust = Pg::parse(&SecretString::from(DEFAULT_POSTGRES.to_owned())).unwrap();
        assert_eq!(
            trust.leash_url("d"),
            "postgresql://{{username}}@127.0.0.1:5432/d"
        );
        assert!(Pg::parse(&SecretString::from("postgresql:///x?host=/tmp".to_owned())).is_err());
        let Err(Error::Failed(m)) = Pg::parse(&SecretString::from(
            "postgresql://u:pw@h:notaport/x".to_owned(),
        )) else {
            panic!("a bad port must fail");
        };
        assert!(!m.contains("pw@"), "{m}");
    }

    #[test]
    fn names_carry_the_tag_and_fit_usernames() {
        let s = Scratch::new();
        assert_eq!(s.tag.len(), TAG_LEN);
        assert!(s.db.starts_with("leash_bench_") && s.db.ends_with(&s.tag));
        for suffix in ["s4k", "s1", "exp"] {
            assert!(s.leash_role(suffix).len() <= 8);
        }
        assert!(s.raw_role(1, 7).contains(&s.tag));
        assert_eq!(s.group(), format!("bench_readers_{}", s.tag));
    }

    #[test]
    fn table_rows_line_up_with_the_header() {
        let mut r = Row::new("leash issue, scram 4096", 1000, Duration::from_millis(2500));
        r.p50 = Some(Duration::from_micros(900));
        r.p99 = Some(Duration::from_millis(12));
        r.vs_raw = Some(0.5);
        let line = Output::line(&r);
        assert_eq!(
            line.chars().count(),
            Output::header().chars().count() - "notes".len()
        );
        assert!(line.contains("400.0") && line.contains("900µs") && line.contains("0.50x"));
        assert_eq!(fmt_latency(Duration::from_millis(2500)), "2.50s");
    }
}
