//! `leash server`: open storage, open the core, serve the API.
//!
//! `--dev` runs with a temporary data directory and an ephemeral key, unsealed, with
//! `secret/` mounted as KV v2 and a root token printed — like `vault server -dev`, and
//! just as unsuitable for anything real (it says so, loudly).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use leash_core::{Core, CoreConfig, TokenLimits};
use leash_storage::{Keyring, SqliteStorage, Storage};
use leash_types::{ExposeSecret, SecretBytes, SecretString, SystemClock};

use crate::config::{self, ServerConfig};

/// Options of `leash server`.
#[derive(clap::Args, Debug)]
pub(crate) struct ServerArgs {
    /// Development mode: temporary storage, ephemeral key, root token printed.
    #[arg(long = "dev")]
    dev: bool,
    /// Dev mode: use this value as the root token (Vault's -dev-root-token-id).
    #[arg(
        long = "dev-root-token-id",
        env = "LEASH_DEV_ROOT_TOKEN_ID",
        requires = "dev"
    )]
    dev_root_token_id: Option<String>,
    /// Dev mode: address to listen on (Vault's -dev-listen-address); port 0 picks one.
    #[arg(
        long = "dev-listen-address",
        default_value = "127.0.0.1:8200",
        requires = "dev"
    )]
    dev_listen_address: String,
    /// Path to a configuration file (HCL or JSON).
    #[arg(long = "config", conflicts_with = "dev")]
    config: Option<PathBuf>,
}

/// The environment variable that may carry the storage key (base64 or hex) instead of
/// a key file.
const KEY_ENV: &str = "LEASH_SEAL_KEY";

pub(crate) fn run(args: ServerArgs) -> ExitCode {
    let cfg = if args.dev {
        match dev_config(&args) {
            Ok(c) => c,
            Err(e) => return fail(&e),
        }
    } else {
        let Some(path) = &args.config else {
            return fail(
                "give --dev for a development server, or --config FILE (see docs/configuration.md)",
            );
        };
        match config::load(path) {
            Ok(c) => c,
            Err(e) => return fail(&e.to_string()),
        }
    };
    init_tracing(cfg.log_level.as_deref());
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => return fail(&format!("cannot start the async runtime: {e}")),
    };
    match rt.block_on(serve(cfg, args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail(&e),
    }
}

fn fail(msg: &str) -> ExitCode {
    eprintln!("Error: {msg}");
    ExitCode::FAILURE
}

fn init_tracing(level: Option<&str>) {
    let filter = std::env::var("LEASH_LOG")
        .ok()
        .or_else(|| level.map(str::to_owned))
        .unwrap_or_else(|| "info".into());
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
        .with_writer(std::io::stderr)
        .try_init();
}

fn dev_config(args: &ServerArgs) -> Result<ServerConfig, String> {
    let address: SocketAddr = args.dev_listen_address.parse().map_err(|_| {
        format!(
            "--dev-listen-address {:?} is not IP:PORT",
            args.dev_listen_address
        )
    })?;
    Ok(ServerConfig {
        storage_path: PathBuf::new(),
        postgres: None,
        address,
        tls: None,
        max_request_size: 1024 * 1024,
        key_file: None,
        default_ttl: std::time::Duration::from_secs(3600),
        max_ttl: std::time::Duration::from_secs(24 * 3600),
        cluster_name: "leash-dev".into(),
        log_level: None,
        audit_deadline: std::time::Duration::from_secs(5),
        unauthenticated_metrics_access: false,
        audit_dirs: Vec::new(),
        http_limits: leash_http::Limits::default(),
    })
}

fn load_key(cfg: &ServerConfig) -> Result<(SecretBytes, bool), String> {
    if let Ok(v) = std::env::var(KEY_ENV) {
        let key =
            leash_storage::barrier::decode_key(v.trim(), KEY_ENV).map_err(|e| e.to_string())?;
        return Ok((key, false));
    }
    let Some(path) = &cfg.key_file else {
        return Err(format!(
            "no storage key configured: add seal \"file\" {{ path = \"./leash.key\" }} to the configuration \
             (the file is created with mode 0600 on first start), or set {KEY_ENV}"
        ));
    };
    // A new key only makes sense for new storage: next to an initialised data directory
    // a missing key file is a wrong path, and a fresh key would open nothing.
    if !path.exists()
        && cfg.postgres.is_none()
        && cfg.storage_path.join(leash_storage::DB_FILE).exists()
    {
        return Err(format!(
            "the key file {} does not exist, but {} already holds data: point seal \"file\" at the key it was created with",
            path.display(),
            cfg.storage_path.display()
        ));
    }
    leash_storage::barrier::load_or_create_key_file(path).map_err(|e| e.to_string())
}

async fn serve(cfg: ServerConfig, args: ServerArgs) -> Result<(), String> {
    let shutdown = shutdown_signal()?;
    let dev = args.dev;
    let mut _dev_dir = None;
    let mut created_key = None;
    let (storage_path, key) = if dev {
        let dir = tempfile::Builder::new()
            .prefix("leash-dev-")
            .tempdir()
            .map_err(|e| format!("cannot create a temporary directory: {e}"))?;
        let path = dir.path().to_path_buf();
        _dev_dir = Some(dir);
        (path, Keyring::generate_master())
    } else {
        let (key, created) = load_key(&cfg)?;
        if let (true, Some(p)) = (created, &cfg.key_file) {
            created_key = Some(p.clone());
            eprintln!(
                "==> Created a new storage key at {} (mode 0600). Back it up: without it the data cannot be read.",
                p.display()
            );
        }
        (cfg.storage_path.clone(), key)
    };
    if let Some(tls) = &cfg.tls {
        leash_http::check_tls(tls).map_err(|e| e.to_string())?;
    }
    let keyring = Keyring::from_master(&key).map_err(|e| e.to_string())?;
    drop(key);
    // Bound first: the address is part of this server's entry in `sys/ha-status`.
    let listener = tokio::net::TcpListener::bind(cfg.address)
        .await
        .map_err(|e| format!("cannot listen on {}: {e}", cfg.address))?;
    let local = listener.local_addr().map_err(|e| e.to_string())?;
    let storage: Arc<dyn Storage> = match &cfg.postgres {
        None => {
            let path = storage_path.clone();
            let storage = tokio::task::spawn_blocking(move || SqliteStorage::open(&path, keyring))
                .await
                .map_err(|e| e.to_string())?
                .map_err(|e| format!("{} ({})", e, storage_path.display()))?;
            Arc::new(storage)
        }
        Some(pg) => {
            let me = leash_storage::postgres::ServerIdentity {
                name: server_name(local),
                address: local.to_string(),
                version: leash_core::VERSION.to_owned(),
            };
            match leash_storage::PgStorage::open(pg, keyring, me).await {
                Ok(s) => Arc::new(s),
                Err(e) => {
                    // A key made just now for a database initialised with another one
                    // is useless: leave nothing behind.
                    if let (leash_storage::StorageError::WrongKey, Some(p)) = (&e, &created_key) {
                        let _ = std::fs::remove_file(p);
                    }
                    return Err(format!("{e} (PostgreSQL storage, table {})", pg.table));
                }
            }
        }
    };

    let core_cfg = CoreConfig {
        token_limits: TokenLimits {
            default_ttl: cfg.default_ttl,
            max_ttl: cfg.max_ttl,
        },
        audit_deadline: cfg.audit_deadline,
        cluster_name: cfg.cluster_name.clone(),
        dev,
        unauthenticated_metrics_access: cfg.unauthenticated_metrics_access,
        audit_dirs: cfg.audit_dirs.clone(),
    };
    let dev_token = if dev {
        Some(SecretString::from(
            args.dev_root_token_id.clone().unwrap_or_else(|| {
                leash_types::TokenValue::generate(leash_types::TokenKind::Service)
                    .expose()
                    .to_owned()
            }),
        ))
    } else {
        None
    };
    let opened = Core::open(storage, Arc::new(SystemClock), core_cfg, dev_token)
        .await
        .map_err(|e| match e {
            leash_core::CoreError::Internal(m) => m,
            other => other.to_string(),
        })?;
    let core = opened.core;

    let scheme = if cfg.tls.is_some() { "https" } else { "http" };
    let addr = format!("{scheme}://{local}");
    print_banner(
        &addr,
        dev,
        &storage_label(dev, &cfg),
        opened.root_token.as_ref(),
    );

    tracing::info!(
        address = %addr,
        "ready: requests are recorded by the audit devices (sys/audit); this log has start-up, shutdown, warnings and errors"
    );
    let background = core.start_background();
    let app = leash_http::app(
        core,
        leash_http::HttpConfig {
            max_body: cfg.max_request_size,
        },
    );
    let result =
        leash_http::serve_with(listener, app, cfg.tls.clone(), cfg.http_limits, shutdown).await;
    background.shutdown().await;
    eprintln!("==> leash server stopped");
    result.map_err(|e| e.to_string())
}

/// This server's name in `sys/ha-status`: the host name and the port it serves on.
fn server_name(local: SocketAddr) -> String {
    let host = std::env::var("HOSTNAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/proc/sys/kernel/hostname").ok())
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "leash".to_owned());
    format!("{host}:{}", local.port())
}

fn storage_label(dev: bool, cfg: &ServerConfig) -> String {
    if let Some(pg) = &cfg.postgres {
        return format!(
            "postgresql (table {}, pool of {})",
            pg.table, pg.max_parallel
        );
    }
    if dev {
        "sqlite (temporary directory, deleted on exit)".into()
    } else {
        format!("sqlite at {}", cfg.storage_path.display())
    }
}

fn print_banner(addr: &str, dev: bool, storage: &str, root: Option<&SecretString>) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    let _ = writeln!(
        out,
        "==> leash server started! Log data will stream in below (on stderr; LEASH_LOG=debug adds a line per request):\n"
    );
    let _ = writeln!(out, "          Listening on: {addr}");
    let _ = writeln!(out, "               Storage: {storage}");
    let _ = writeln!(
        out,
        "               Version: leash v{}\n",
        leash_core::VERSION
    );
    if dev {
        let _ = writeln!(
            out,
            "WARNING! dev mode is enabled! In this mode, leash runs entirely from a temporary"
        );
        let _ = writeln!(
            out,
            "directory with an ephemeral key, starts unsealed with a root token, and every"
        );
        let _ = writeln!(
            out,
            "secret is lost when it stops. Do not run dev mode in production.\n"
        );
        let _ = writeln!(
            out,
            "You may need to set the following environment variables:\n"
        );
        let _ = writeln!(
            out,
            "    $ export LEASH_ADDR='{addr}'   # or VAULT_ADDR for Vault clients\n"
        );
    }
    if let Some(t) = root {
        let _ = writeln!(out, "Root Token: {}\n", t.expose_secret());
        if !dev {
            let _ = writeln!(
                out,
                "This root token is shown once and never stored in clear. Keep it safe, or revoke it"
            );
            let _ = writeln!(out, "after creating narrower tokens and policies.\n");
        }
    }
    let _ = out.flush();
}

/// Registers SIGTERM and SIGINT handlers now and returns a future that resolves on
/// the first of them. Registering before the server announces itself means a signal
/// sent right after start-up still shuts it down cleanly (storage closed, WAL
/// checkpointed) instead of killing the process.
fn shutdown_signal() -> Result<impl std::future::Future<Output = ()> + Send + 'static, String> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term =
        signal(SignalKind::terminate()).map_err(|e| format!("cannot handle SIGTERM: {e}"))?;
    let mut int =
        signal(SignalKind::interrupt()).map_err(|e| format!("cannot handle SIGINT: {e}"))?;
    Ok(async move {
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
    })
}
