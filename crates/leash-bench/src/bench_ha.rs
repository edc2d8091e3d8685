//! `leash-bench bench-ha`: the PostgreSQL storage backend against baselines measured in
//! the same run, in-process (no HTTP, so the numbers are the storage's and the core's):
//!
//! * durable token creation through one core on PostgreSQL vs the same number of raw
//!   single-row `INSERT`s (autocommit: `INSERT; COMMIT`) over a pool of the same size;
//! * policy-checked KV reads through a core on PostgreSQL vs the same core on SQLite;
//! * mass expiry: due leases claimed and deleted by three stores on one table at once
//!   vs one store alone (the claim protocol's throughput; engine revocation excluded).
//!
//! Prints ratios, never absolute targets. Everything lives in scratch tables of the
//! database given (`--pg-url`), dropped at the end.

use std::sync::Arc;
use std::time::{Duration, Instant};

use leash_core::{Core, CoreConfig, Request};
use leash_storage::{
    Keyring, LeaseState, PgConfig, PgStorage, SqliteStorage, Storage, StoredLease,
};
use leash_types::{Operation, SecretString, SystemClock};
use serde_json::{Map, Value, json};

/// Options of `bench-ha`.
#[derive(clap::Args, Debug)]
pub(crate) struct BenchHaArgs {
    /// PostgreSQL to use (scratch tables are created and dropped in it).
    #[arg(
        long = "pg-url",
        env = "LEASH_TEST_POSTGRES_URL",
        default_value = "postgresql://postgres@127.0.0.1:5432/postgres"
    )]
    pg_url: String,
    /// Tokens created (and raw rows inserted for the baseline).
    #[arg(long, default_value_t = 20_000)]
    tokens: usize,
    /// KV reads per backend.
    #[arg(long, default_value_t = 20000)]
    reads: usize,
    /// Leases expiring together.
    #[arg(long, default_value_t = 10000)]
    leases: usize,
    /// Concurrent workers, and the pool size.
    #[arg(long, default_value_t = 16)]
    concurrency: usize,
}

type Error = String;

fn scratch() -> String {
    format!(
        "bench_{}",
        &leash_types::random::uuid_v4().replace('-', "")[..12]
    )
}

fn pg_config(url: &str, table: &str, pool: usize) -> PgConfig {
    PgConfig {
        connection_url: SecretString::from(url.to_owned()),
        table: table.to_owned(),
        max_parallel: pool,
        ha_enabled: true,
        tls: Vec::new(),
    }
}

fn me() -> leash_storage::postgres::ServerIdentity {
    leash_storage::postgres::ServerIdentity {
        name: "bench".into(),
        address: String::new(),
        version: leash_core::VERSION.to_owned(),
    }
}

fn req(op: Operation, path: &str, token: &SecretString, body: Value) -> Request {
    let mut r = Request::new(op, path);
    r.token = Some(token.clone());
    if let Value::Object(m) = body {
        r.data = m;
    } else {
        r.data = Map::new();
    }
    r
}

async fn open_core(storage: Arc<dyn Storage>, root: &SecretString) -> Result<Core, Error> {
    let opened = Core::open(
        storage,
        Arc::new(SystemClock),
        CoreConfig {
            dev: true,
            ..CoreConfig::default()
        },
        Some(root.clone()),
    )
    .await
    .map_err(|e| format!("opening the core: {e}"))?;
    Ok(opened.core)
}

/// CPU time so far, in clock ticks (`/proc`, Linux): this process's (user + system), and
/// the machine's busy and total time over all CPUs. `None` where `/proc` is not there.
fn cpu_ticks() -> Option<(u64, u64, u64)> {
    let own = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the command name (which may hold spaces, inside parentheses):
    // state is field 3, utime 14 and stime 15.
    let after = own.rsplit_once(')')?.1;
    let f: Vec<&str> = after.split_whitespace().collect();
    let own = f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?;
    let all = std::fs::read_to_string("/proc/stat").ok()?;
    let cpu: Vec<u64> = all
        .lines()
        .next()?
        .split_whitespace()
        .skip(1)
        .filter_map(|v| v.parse().ok())
        .collect();
    let total: u64 = cpu.iter().sum();
    // idle and iowait
    let idle = cpu.get(3)? + cpu.get(4).copied().unwrap_or(0);
    Some((own, total - idle, total))
}

/// What a round cost: this process's CPU per operation (µs) and how busy the machine
/// was (share of all its CPUs).
fn cpu_cost(before: Option<(u64, u64, u64)>, n: usize) -> Option<(f64, f64)> {
    let (o0, b0, t0) = before?;
    let (o1, b1, t1) = cpu_ticks()?;
    // /proc counts in USER_HZ, 100 on Linux.
    let per_op = (o1 - o0) as f64 * 10_000.0 / n as f64;
    let busy = (b1 - b0) as f64 / (t1 - t0).max(1) as f64;
    Some((per_op, busy))
}

/// Runs `n` operations on `workers` tasks; returns operations per second.
async fn rate<F, Fut>(n: usize, workers: usize, f: F) -> Result<f64, Error>
where
    F: Fn(usize) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = Result<(), Error>> + Send,
{
    let f = Arc::new(f);
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let start = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..workers {
        let (f, next) = (Arc::clone(&f), Arc::clone(&next));
        tasks.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if i >= n {
                    return Ok::<(), Error>(());
                }
                f(i).await?;
            }
        }));
    }
    for t in tasks {
        t.await.map_err(|e| e.to_string())??;
    }
    Ok(n as f64 / start.elapsed().as_secs_f64())
}

async fn token_creation(a: &BenchHaArgs, table: &str) -> Result<(f64, f64, f64), Error> {
    let root = SecretString::from(
        leash_types::TokenValue::generate(leash_types::TokenKind::Service)
            .expose()
            .to_owned(),
    );
    let store = PgStorage::open(
        &pg_config(&a.pg_url, table, a.concurrency),
        Keyring::from_master(&Keyring::generate_master()).map_err(|e| e.to_string())?,
        me(),
    )
    .await
    .map_err(|e| e.to_string())?;
    let pool = store.pool().clone();
    let store = Arc::new(store);
    let core = open_core(Arc::clone(&store) as Arc<dyn Storage>, &root).await?;
    // Two baselines, each the same number of single-row INSERTs, each its own
    // transaction, over a pool of the same size: into a table shaped like the token
    // table (its columns, unique keys and partial indexes: what storing a token costs
    // PostgreSQL at the least), and into a minimal two-column table. Rounds alternate
    // (leash, shaped, minimal) so that checkpoints and vacuum fall on all of them; the
    // median round of each is reported. A short unmeasured round comes first: it opens
    // the pool's connections (TLS handshakes) and prepares the statements, which would
    // otherwise all be charged to leash, the first in every round.
    let shaped = format!("{table}_raw_shaped");
    let minimal = format!("{table}_raw");
    pool.get()
        .await
        .map_err(|e| e.to_string())?
        .batch_execute(&format!(
            "CREATE TABLE {shaped} (
                 hash BYTEA PRIMARY KEY, accessor_hash BYTEA NOT NULL UNIQUE, parent BYTEA,
                 expire_at BIGINT, uses_left BIGINT, entry BYTEA NOT NULL);
             CREATE INDEX {shaped}_parent ON {shaped}(parent) WHERE parent IS NOT NULL;
             CREATE INDEX {shaped}_expire ON {shaped}(expire_at) WHERE expire_at IS NOT NULL;
             CREATE TABLE {minimal} (k BYTEA PRIMARY KEY, v BYTEA NOT NULL)"
        ))
        .await
        .map_err(|e| e.to_string())?;
    let parent = leash_types::random::bytes::<32>().to_vec();
    // The baseline's entries are as long as leash's sealed token entries, measured
    // after the unmeasured first round (400 bytes until then).
    let entry_len = Arc::new(std::sync::atomic::AtomicUsize::new(400));
    let mut rounds: [Vec<f64>; 3] = Default::default();
    let mut ops = 0.0;
    for round in 0..4 {
        let warm_up = round == 0;
        let n = if warm_up {
            a.concurrency * 20
        } else {
            a.tokens
        };
        let before = store.ha_stats().map_or(0, |h| h.latency_count);
        let cpu = cpu_ticks();
        let leash = {
            let (core, root) = (core.clone(), root.clone());
            rate(n, a.concurrency, move |_| {
                let (core, root) = (core.clone(), root.clone());
                async move {
                    let r = core
                        .handle(req(
                            Operation::Update,
                            "auth/token/create",
                            &root,
                            json!({"policies": ["default"]}),
                        ))
                        .await
                        .map_err(|e| e.to_string())?;
                    if r.auth.is_none() {
                        return Err("token create returned no auth".into());
                    }
                    Ok(())
                }
            })
            .await?
        };
        ops = (store.ha_stats().map_or(0, |h| h.latency_count) - before) as f64 / n as f64;
        let leash_cpu = cpu_cost(cpu, n);
        if warm_up {
            let measured: i32 = pool
                .get()
                .await
                .map_err(|e| e.to_string())?
                .query_one(
                    &format!("SELECT COALESCE(avg(length(entry)), 400)::int FROM {table}_tokens"),
                    &[],
                )
                .await
                .map_err(|e| e.to_string())?
                .get(0);
            let measured = usize::try_from(measured).unwrap_or(400);
            entry_len.store(measured, std::sync::atomic::Ordering::Relaxed);
            eprintln!("  leash's sealed token entries: {measured} bytes (the baseline's too)");
        }
        let cpu = cpu_ticks();
        let shaped_rate = {
            let (pool, t, parent) = (pool.clone(), shaped.clone(), parent.clone());
            let len = entry_len.load(std::sync::atomic::Ordering::Relaxed);
            rate(n, a.concurrency, move |i| {
                let (pool, t, parent) = (pool.clone(), t.clone(), parent.clone());
                async move {
                    let c = pool.get().await.map_err(|e| e.to_string())?;
                    let st = c
                        .prepare_cached(&format!(
                            "INSERT INTO {t} (hash, accessor_hash, parent, expire_at, uses_left, entry)
                             VALUES ($1, $2, $3, $4, NULL, $5)"
                        ))
                        .await
                        .map_err(|e| e.to_string())?;
                    let h = leash_types::random::bytes::<32>().to_vec();
                    let acc = leash_types::random::bytes::<32>().to_vec();
                    let exp = 2_000_000_000_i64 + i64::try_from(i).unwrap_or(0);
                    let v = vec![u8::try_from(i % 251).unwrap_or(0); len];
                    c.execute(&st, &[&h, &acc, &parent, &exp, &v])
                        .await
                        .map_err(|e| e.to_string())?;
                    Ok(())
                }
            })
            .await?
        };
        let shaped_cpu = cpu_cost(cpu, n);
        let minimal_rate = {
            let (pool, t) = (pool.clone(), minimal.clone());
            let len = entry_len.load(std::sync::atomic::Ordering::Relaxed);
            rate(n, a.concurrency, move |i| {
                let (pool, t) = (pool.clone(), t.clone());
                async move {
                    let c = pool.get().await.map_err(|e| e.to_string())?;
                    let st = c
                        .prepare_cached(&format!("INSERT INTO {t} (k, v) VALUES ($1, $2)"))
                        .await
                        .map_err(|e| e.to_string())?;
                    let k = leash_types::random::bytes::<32>().to_vec();
                    let v = vec![u8::try_from(i % 251).unwrap_or(0); len];
                    c.execute(&st, &[&k, &v]).await.map_err(|e| e.to_string())?;
                    Ok(())
                }
            })
            .await?
        };
        if warm_up {
            continue;
        }
        eprintln!(
            "  round: leash {leash:.0}/s, token-shaped INSERT {shaped_rate:.0}/s, minimal INSERT {minimal_rate:.0}/s"
        );
        if let (Some((l_us, l_busy)), Some((s_us, s_busy))) = (leash_cpu, shaped_cpu) {
            eprintln!(
                "         this process's CPU per operation: leash {l_us:.1} µs, token-shaped INSERT {s_us:.1} µs; machine busy {:.0} % / {:.0} %",
                l_busy * 100.0,
                s_busy * 100.0
            );
        }
        rounds[0].push(leash);
        rounds[1].push(shaped_rate);
        rounds[2].push(minimal_rate);
    }
    println!("  storage operations per token creation: {ops:.2}");
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let [mut l, mut sh, mut mi] = rounds;
    let (leash, raw, raw_min) = (median(&mut l), median(&mut sh), median(&mut mi));
    drop(core);
    Ok((leash, raw, raw_min))
}

async fn kv_reads(a: &BenchHaArgs, table: &str) -> Result<(f64, f64), Error> {
    let root = SecretString::from(
        leash_types::TokenValue::generate(leash_types::TokenKind::Service)
            .expose()
            .to_owned(),
    );
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let key = Keyring::generate_master();
    let sqlite: Arc<dyn Storage> = {
        let (p, k) = (
            dir.path().to_path_buf(),
            Keyring::from_master(&key).map_err(|e| e.to_string())?,
        );
        Arc::new(
            tokio::task::spawn_blocking(move || SqliteStorage::open(&p, k))
                .await
                .map_err(|e| e.to_string())?
                .map_err(|e| e.to_string())?,
        )
    };
    let pg: Arc<dyn Storage> = Arc::new(
        PgStorage::open(
            &pg_config(&a.pg_url, table, a.concurrency),
            Keyring::from_master(&key).map_err(|e| e.to_string())?,
            me(),
        )
        .await
        .map_err(|e| e.to_string())?,
    );
    let mut rates = Vec::new();
    for storage in [pg, sqlite] {
        let core = open_core(storage, &root).await?;
        for (op, path, body) in [
            (
                Operation::Update,
                "sys/mounts/kv",
                json!({"type": "kv", "options": {"version": "1"}}),
            ),
            (
                Operation::Update,
                "sys/policy/reader",
                json!({"policy": "path \"kv/*\" { capabilities = [\"read\"] }"}),
            ),
            (Operation::Update, "kv/app", json!({"v": "x".repeat(200)})),
        ] {
            core.handle(req(op, path, &root, body))
                .await
                .map_err(|e| format!("{path}: {e}"))?;
        }
        let r = core
            .handle(req(
                Operation::Update,
                "auth/token/create",
                &root,
                json!({"policies": ["reader"]}),
            ))
            .await
            .map_err(|e| e.to_string())?;
        let tok = SecretString::from(
            r.auth
                .map(|a| leash_types::ExposeSecret::expose_secret(&a.client_token).to_owned())
                .ok_or("no token")?,
        );
        let c2 = core.clone();
        rates.push(
            rate(a.reads, a.concurrency, move |_| {
                let (core, tok) = (c2.clone(), tok.clone());
                async move {
                    core.handle(req(Operation::Read, "kv/app", &tok, Value::Null))
                        .await
                        .map_err(|e| e.to_string())?;
                    Ok(())
                }
            })
            .await?,
        );
    }
    Ok((rates[0], rates[1]))
}

async fn fill_leases(s: &Arc<PgStorage>, n: usize) -> Result<(), Error> {
    let s = Arc::clone(s);
    rate(n, 8, move |i| {
        let s = Arc::clone(&s);
        async move {
            s.lease_insert(StoredLease {
                id: format!("database/creds/bench/{i:08}"),
                token: None,
                issue_time: 0,
                expire_at: 1,
                max_expire_at: 1,
                state: LeaseState::Active,
                attempts: 0,
                next_attempt_at: 0,
                last_error: None,
                entry: leash_storage::Plain::new(b"{}".to_vec()),
            })
            .await
            .map_err(|e| e.to_string())
        }
    })
    .await
    .map(|_| ())
}

/// Drains every due lease with `stores` working at once; returns leases per second and
/// how many each store took.
async fn drain(stores: &[Arc<PgStorage>], n: usize) -> Result<(f64, Vec<usize>), Error> {
    let start = Instant::now();
    let mut tasks = Vec::new();
    for s in stores {
        let s = Arc::clone(s);
        tasks.push(tokio::spawn(async move {
            let mut took = 0usize;
            loop {
                let due = s.leases_due(10, 2048).await.map_err(|e| e.to_string())?;
                if due.is_empty() {
                    return Ok::<usize, Error>(took);
                }
                let ids: Vec<String> = due.into_iter().map(|l| l.id).collect();
                took += ids.len();
                s.leases_delete(&ids).await.map_err(|e| e.to_string())?;
            }
        }));
    }
    let mut split = Vec::new();
    for t in tasks {
        split.push(t.await.map_err(|e| e.to_string())??);
    }
    let total: usize = split.iter().sum();
    if total != n {
        return Err(format!(
            "{total} leases drained, {n} expected: a lease was handed out twice or lost"
        ));
    }
    Ok((n as f64 / start.elapsed().as_secs_f64(), split))
}

async fn mass_expiry(a: &BenchHaArgs, table: &str) -> Result<(f64, f64, Vec<usize>), Error> {
    let key = Keyring::generate_master();
    let mut stores = Vec::new();
    for _ in 0..3 {
        stores.push(Arc::new(
            PgStorage::open(
                &pg_config(&a.pg_url, table, a.concurrency),
                Keyring::from_master(&key).map_err(|e| e.to_string())?,
                me(),
            )
            .await
            .map_err(|e| e.to_string())?,
        ));
    }
    fill_leases(&stores[0], a.leases).await?;
    let (one, _) = drain(&stores[..1], a.leases).await?;
    fill_leases(&stores[0], a.leases).await?;
    let (three, split) = drain(&stores, a.leases).await?;
    Ok((one, three, split))
}

pub(crate) fn run(a: BenchHaArgs) -> std::process::ExitCode {
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("Error: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let tables = [scratch(), scratch(), scratch()];
    let result = rt.block_on(async {
        let (leash, raw, raw_min) = token_creation(&a, &tables[0]).await?;
        println!(
            "durable token creation ({} tokens, {} workers, pool {}, median of 3 alternating rounds)",
            a.tokens, a.concurrency, a.concurrency
        );
        println!("  leash on PostgreSQL      {leash:10.0} tokens/s");
        println!("  raw INSERT;COMMIT        {raw:10.0} rows/s   (token-table shape: same columns and indexes)");
        println!("  ratio                    {:10.2}", leash / raw);
        println!("  raw INSERT;COMMIT        {raw_min:10.0} rows/s   (minimal two-column table, for reference)");
        println!("  ratio to minimal         {:10.2}", leash / raw_min);
        let (pg, sqlite) = kv_reads(&a, &tables[1]).await?;
        println!(
            "policy-checked KV reads ({} reads, {} workers)",
            a.reads, a.concurrency
        );
        println!("  leash on PostgreSQL      {pg:10.0} reads/s");
        println!("  leash on SQLite          {sqlite:10.0} reads/s");
        println!("  ratio                    {:10.2}", pg / sqlite);
        let (one, three, split) = mass_expiry(&a, &tables[2]).await?;
        println!(
            "mass expiry: claim + delete ({} leases due at once)",
            a.leases
        );
        println!("  one store                {one:10.0} leases/s");
        println!("  three stores             {three:10.0} leases/s  (split {split:?})");
        println!("  ratio                    {:10.2}", three / one);
        tokio::time::sleep(Duration::from_millis(10)).await;
        Ok::<(), Error>(())
    });
    rt.block_on(async {
        for t in &tables {
            if let Err(e) = PgStorage::drop_schema(&a.pg_url, t).await {
                eprintln!("warning: scratch tables {t}_* were not dropped: {e}");
            }
            if let Ok(pool) = leash_storage::postgres::connect(&a.pg_url, 1)
                && let Ok(c) = pool.get().await
            {
                let _ = c
                    .batch_execute(&format!("DROP TABLE IF EXISTS {t}_raw, {t}_raw_shaped"))
                    .await;
            }
        }
    });
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("Error: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
