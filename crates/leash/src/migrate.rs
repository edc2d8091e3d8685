//! `leash operator migrate --config migrate.hcl`: copies a whole store between backends
//! (SQLite → PostgreSQL and back), Vault's shape:
//!
//! ```hcl
//! storage_source "sqlite" { path = "/var/lib/leash" }
//! storage_destination "postgresql" { connection_url = "postgresql://…/leash" }
//! seal "file" { path = "/etc/leash/leash.key" }   # or LEASH_SEAL_KEY
//! ```
//!
//! Offline: stop the servers first. Entries, live tokens and leases are read through the
//! source's barrier and written through the destination's with the same key, so tokens
//! keep working. A destination that already holds data is refused unless `--force`.

use std::io::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use leash_storage::{Keyring, LeaseState, PgStorage, SqliteStorage, Storage, StorageError};
use leash_types::Clock as _;

use crate::config::{self, Store};

/// Options of `leash operator migrate`.
#[derive(clap::Args, Debug)]
pub(crate) struct MigrateArgs {
    /// Migration configuration: `storage_source` and `storage_destination` blocks and the
    /// key (`seal "file"`, or LEASH_SEAL_KEY).
    #[arg(long = "config")]
    config: PathBuf,
    /// Copy into a destination that already holds data (its entries are overwritten;
    /// tokens and leases it already has are kept).
    #[arg(long = "force")]
    force: bool,
}

/// `leash operator …`.
#[derive(clap::Subcommand, Debug)]
pub(crate) enum OperatorCommand {
    /// Copy all data from one storage backend to another (offline; Vault's `operator
    /// migrate`): SQLite to PostgreSQL and back.
    Migrate(MigrateArgs),
}

pub(crate) fn run(cmd: OperatorCommand) -> ExitCode {
    let OperatorCommand::Migrate(args) = cmd;
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("Error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(migrate(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("Error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn keyring(cfg: &config::MigrateConfig) -> Result<Keyring, String> {
    let key = if let Ok(v) = std::env::var("LEASH_SEAL_KEY") {
        leash_storage::barrier::decode_key(v.trim(), "LEASH_SEAL_KEY").map_err(|e| e.to_string())?
    } else {
        let Some(path) = &cfg.key_file else {
            return Err(
                "no storage key: add seal \"file\" { path = \"…\" } (the key the source was created with), or set LEASH_SEAL_KEY".into(),
            );
        };
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read the key file {}: {e}", path.display()))?;
        leash_storage::barrier::decode_key(text.trim(), &path.display().to_string())
            .map_err(|e| e.to_string())?
    };
    Keyring::from_master(&key).map_err(|e| e.to_string())
}

async fn open(store: &Store, keyring: Keyring, source: bool) -> Result<Arc<dyn Storage>, String> {
    match store {
        Store::Sqlite(dir) => {
            if source && !dir.join(leash_storage::DB_FILE).exists() {
                return Err(format!(
                    "the source {} holds no leash data ({} is missing)",
                    dir.display(),
                    leash_storage::DB_FILE
                ));
            }
            let d = dir.clone();
            let s = tokio::task::spawn_blocking(move || SqliteStorage::open(&d, keyring))
                .await
                .map_err(|e| e.to_string())?
                .map_err(|e| format!("{e} ({})", dir.display()))?;
            Ok(Arc::new(s))
        }
        Store::Postgres(pg) => {
            let me = leash_storage::postgres::ServerIdentity {
                name: "leash operator migrate".into(),
                address: String::new(),
                version: leash_core::VERSION.to_owned(),
            };
            let s = PgStorage::open(pg, keyring, me)
                .await
                .map_err(|e| format!("{e} (PostgreSQL, table {})", pg.table))?;
            Ok(Arc::new(s))
        }
    }
}

/// A progress bar on stderr, redrawn at each whole percent.
struct Progress {
    total: u64,
    done: u64,
    shown: Option<u64>,
}

impl Progress {
    fn step(&mut self, what: &str) {
        self.done += 1;
        let pct = (self.done * 100).checked_div(self.total).unwrap_or(100);
        if self.shown != Some(pct) || self.done == self.total {
            self.shown = Some(pct);
            let filled = usize::try_from(pct / 5).unwrap_or(20);
            let _ = write!(
                std::io::stderr(),
                "\r[{}{}] {pct:3}% {}/{} {what:<8}",
                "#".repeat(filled),
                "-".repeat(20 - filled.min(20)),
                self.done,
                self.total
            );
        }
    }
}

async fn migrate(args: MigrateArgs) -> Result<(), String> {
    let cfg = config::load_migrate(&args.config).map_err(|e| e.to_string())?;
    let keyring_src = keyring(&cfg)?;
    let keyring_dst = keyring(&cfg)?;
    let src = open(&cfg.source, keyring_src, true).await?;
    let dst = open(&cfg.destination, keyring_dst, false).await?;
    let err = |e: StorageError| e.to_string();

    let dst_has = !dst.namespaces().await.map_err(err)?.is_empty()
        || dst.token_count().await.map_err(err)? > 0
        || dst.lease_count().await.map_err(err)? > 0;
    if dst_has && !args.force {
        return Err("the destination already holds leash data; refusing to mix two stores (give --force to copy over it)".into());
    }

    let now = leash_types::SystemClock.unix();
    let namespaces = src.namespaces().await.map_err(err)?;
    let mut keys = Vec::new();
    for ns in &namespaces {
        for k in src.list(ns, "").await.map_err(err)? {
            keys.push((ns.clone(), k));
        }
    }
    let lease_ids = src.lease_ids_with_prefix("").await.map_err(err)?;
    let tokens_total = src.token_count().await.map_err(err)?;
    let mut p = Progress {
        total: keys.len() as u64 + tokens_total + lease_ids.len() as u64,
        done: 0,
        shown: None,
    };
    eprintln!(
        "==> copying {} entries, up to {tokens_total} tokens and {} leases",
        keys.len(),
        lease_ids.len()
    );

    for (ns, k) in &keys {
        if let Some(v) = src.get(ns, k).await.map_err(err)? {
            dst.put(ns, k, v.to_vec()).await.map_err(err)?;
        }
        p.step("entries");
    }
    let (mut tokens, mut skipped) = (0u64, 0u64);
    let mut after = None;
    loop {
        let page = src.tokens_live_page(now, after, 500).await.map_err(err)?;
        let Some(last) = page.last() else { break };
        after = Some(last.hash);
        for t in page {
            match dst.token_insert(t).await {
                Ok(()) => tokens += 1,
                Err(StorageError::Conflict(_)) => skipped += 1,
                Err(e) => return Err(e.to_string()),
            }
            p.step("tokens");
        }
    }
    let mut leases = 0u64;
    for id in &lease_ids {
        if let Some(mut l) = src.lease_get(id).await.map_err(err)? {
            let owner_live = match l.token {
                Some(h) => dst.token_get(h).await.map_err(err)?.is_some(),
                None => true,
            };
            if !owner_live {
                // Its token has expired: the credential must go, at the first start.
                l.token = None;
                l.state = LeaseState::Revoking;
                l.expire_at = l.expire_at.min(now);
            }
            match dst.lease_insert(l).await {
                Ok(()) => leases += 1,
                Err(StorageError::Conflict(_)) => skipped += 1,
                Err(e) => return Err(e.to_string()),
            }
        }
        p.step("leases");
    }
    // Expired tokens are not copied: the bar ends at what was there to copy.
    p.total = p.done;
    p.done = p.done.saturating_sub(1);
    p.step("done");
    eprintln!();
    eprintln!(
        "==> copied {} entries, {tokens} tokens, {leases} leases{}",
        keys.len(),
        if skipped > 0 {
            format!(" ({skipped} already in the destination, kept)")
        } else {
            String::new()
        }
    );
    Ok(())
}
