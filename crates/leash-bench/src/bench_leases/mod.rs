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

mod measure;
mod postgres;
mod report;
mod server;

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use leash_engines::database::postgres::quote_ident;
use leash_storage::Keyring;
use leash_types::{ManualClock, SecretString};
use serde_json::json;

use crate::Format;
pub(crate) use measure::prepare_data_dir;
use measure::{Ctx, expiry, issuance, raw_baseline, startup};
pub(crate) use postgres::ScratchDb;
use postgres::{Pg, Scratch, cleanup, pg_error};
use report::{Output, Row};
pub(crate) use server::{Server, first_health};
use server::{call, close_storage};

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

pub(crate) fn error_text(e: Error) -> String {
    match e {
        Error::Failed(m) => m,
        Error::Interrupted => "interrupted".into(),
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::report::fmt_latency;

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
