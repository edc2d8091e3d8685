//! The measurements of `bench-leases`: the raw baseline, issuance, expiry and start-up.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use leash_client::Client;
use leash_core::Core;
use leash_engines::database::postgres::quote_ident;
use leash_engines::database::{generate_password, scram_sha256_verifier};
use leash_storage::{Keyring, LeaseState, Storage, StoredLease};
use leash_types::{Clock, ExposeSecret, ManualClock, SecretBytes, SecretString, SystemClock};
use serde_json::{Value, json};
use tokio::task::JoinSet;

use super::postgres::{Pg, Scratch, pg_error, roles_with_prefix, settle};
use super::report::{Output, Row};
use super::server::{Server, call, close_storage, dev_config, first_health, open_storage};
use super::{
    BenchLeasesArgs, EXPIRE_DEADLINE, Error, INSERT_IN_FLIGHT, ISSUE_CREATION, ISSUE_REVOCATION,
    POLL, TTL, failed, tempdir,
};
use crate::bench::histogram::Histogram;

/// What the leash measurements share.
pub(super) struct Ctx<'a> {
    pub(super) args: &'a BenchLeasesArgs,
    pub(super) pg: &'a Pg,
    pub(super) s: &'a Scratch,
    /// A connection to the scratch database.
    pub(super) db: &'a tokio_postgres::Client,
    /// The in-process server, root token.
    pub(super) client: Client,
    pub(super) storage: Arc<dyn Storage>,
}

/// Measurement 1: the issue role's statements over one raw connection, with one SCRAM
/// verifier of `iterations` computed up front. Returns roles/s.
pub(super) async fn raw_baseline(
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
pub(super) struct Issued {
    pub(super) ok: u64,
    pub(super) errors: u64,
    pub(super) first_error: Option<String>,
    pub(super) elapsed: Duration,
    /// Latencies of the successful requests.
    pub(super) latencies: Histogram,
}

/// Issues `n` credentials of `role` with `concurrency` clients; progress every
/// `progress_every` credentials when given.
pub(super) async fn issue_many(
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
pub(super) async fn write_config(ctx: &Ctx<'_>, iterations: u32) -> Result<(), Error> {
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
pub(super) async fn issuance(
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
pub(super) async fn expiry(
    ctx: &Ctx<'_>,
    clock: &ManualClock,
    out: &mut Output,
) -> Result<(), Error> {
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
pub(super) const RAW_DROP_BATCH: usize = 2_048;

/// The baseline of mass expiry: `--expire` login roles in `group` created (unmeasured),
/// then dropped with `DROP ROLE a, b, …` in transactions of [`RAW_DROP_BATCH`] roles,
/// the batch leash's lease worker revokes. Returns roles dropped per second.
pub(super) async fn raw_group_drop(
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
pub(super) fn synthetic_lease(now: i64) -> StoredLease {
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
pub(super) async fn insert_leases(storage: &Arc<dyn Storage>, n: u32) -> Result<Duration, Error> {
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

/// Measurement 4: startup time with no lease and with `--startup-leases` live leases.
pub(super) async fn startup(args: &BenchLeasesArgs, out: &mut Output) -> Result<(), Error> {
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
