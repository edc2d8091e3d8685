//! `leash server --config FILE`: Vault-shaped HCL (or JSON), parsed into a typed,
//! validated configuration. Unknown keys are errors that name the key; Vault keys that
//! mean nothing here (`disable_mlock`, `ui`, `api_addr`, `cluster_addr`) are accepted
//! and ignored so existing files load.
//!
//! ```hcl
//! storage "sqlite" { path = "./data" }
//! listener "tcp" {
//!   address       = "127.0.0.1:8200"
//!   tls_cert_file = "/etc/leash/cert.pem"
//!   tls_key_file  = "/etc/leash/key.pem"
//! }
//! seal "file" { path = "./leash.key" }   # created with mode 0600 on first start
//! default_lease_ttl = "1h"
//! max_lease_ttl     = "24h"
//! ```

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{Map, Value};

/// A loaded server configuration.
#[derive(Debug, Clone)]
pub(crate) struct ServerConfig {
    /// The SQLite data directory (unused with `storage "postgresql"`).
    pub(crate) storage_path: PathBuf,
    /// `storage "postgresql" { … }`: several servers on one PostgreSQL database.
    pub(crate) postgres: Option<leash_storage::PgConfig>,
    pub(crate) address: SocketAddr,
    pub(crate) tls: Option<leash_http::TlsFiles>,
    pub(crate) max_request_size: usize,
    pub(crate) key_file: Option<PathBuf>,
    pub(crate) default_ttl: Duration,
    pub(crate) max_ttl: Duration,
    pub(crate) cluster_name: String,
    pub(crate) log_level: Option<String>,
    pub(crate) audit_deadline: Duration,
    /// `telemetry { unauthenticated_metrics_access = true }` (top level, or in the
    /// listener as Vault has it): `sys/metrics` needs no token.
    pub(crate) unauthenticated_metrics_access: bool,
    /// `audit_dir`: directories audit file devices may write in (empty: anywhere).
    pub(crate) audit_dirs: Vec<PathBuf>,
    /// The listener's `http_read_header_timeout`, `http_read_timeout`,
    /// `http_idle_timeout` and `max_connections`.
    pub(crate) http_limits: leash_http::Limits,
}

/// A configuration problem, with the key at fault.
#[derive(Debug, thiserror::Error)]
#[error("{file}: {message}")]
pub(crate) struct ConfigError {
    file: String,
    message: String,
}

const TOP_KEYS: &[&str] = &[
    "storage",
    "listener",
    "seal",
    "default_lease_ttl",
    "max_lease_ttl",
    "cluster_name",
    "log_level",
    "audit_deadline",
    "audit_dir",
    "telemetry",
    "disable_mlock",
    "ui",
    "api_addr",
    "cluster_addr",
    "disable_cache",
    "pid_file",
];

fn object<'a>(
    v: &'a Value,
    what: &str,
    err: &dyn Fn(String) -> ConfigError,
) -> Result<&'a Map<String, Value>, ConfigError> {
    v.as_object()
        .ok_or_else(|| err(format!("{what} must be a block")))
}

fn only_keys(
    m: &Map<String, Value>,
    allowed: &[&str],
    what: &str,
    err: &dyn Fn(String) -> ConfigError,
) -> Result<(), ConfigError> {
    for k in m.keys() {
        if !allowed.contains(&k.as_str()) {
            return Err(err(format!(
                "unknown key {k:?} in {what} (allowed: {})",
                allowed.join(", ")
            )));
        }
    }
    Ok(())
}

fn string(
    m: &Map<String, Value>,
    key: &str,
    err: &dyn Fn(String) -> ConfigError,
) -> Result<Option<String>, ConfigError> {
    match m.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(Value::Number(n)) => Ok(Some(n.to_string())),
        Some(_) => Err(err(format!("{key} must be a string"))),
    }
}

fn boolean(
    m: &Map<String, Value>,
    key: &str,
    err: &dyn Fn(String) -> ConfigError,
) -> Result<bool, ConfigError> {
    match m.get(key) {
        None | Some(Value::Null) => Ok(false),
        Some(Value::Bool(b)) => Ok(*b),
        Some(Value::String(s)) if s == "true" || s == "1" => Ok(true),
        Some(Value::String(s)) if s == "false" || s == "0" => Ok(false),
        Some(_) => Err(err(format!("{key} must be true or false"))),
    }
}

fn duration(
    m: &Map<String, Value>,
    key: &str,
    default: Duration,
    err: &dyn Fn(String) -> ConfigError,
) -> Result<Duration, ConfigError> {
    match string(m, key, err)? {
        None => Ok(default),
        Some(s) => leash_types::parse_duration(&s).map_err(|e| err(format!("{key}: {e}"))),
    }
}

/// Reads and validates a configuration file. Relative paths are taken relative to the
/// file's directory.
pub(crate) fn load(path: &Path) -> Result<ServerConfig, ConfigError> {
    let file = path.display().to_string();
    let err = |message: String| ConfigError {
        file: file.clone(),
        message,
    };
    let text = std::fs::read_to_string(path).map_err(|e| err(format!("cannot read: {e}")))?;
    let base = path.parent().map(Path::to_path_buf).unwrap_or_default();
    parse(&text, &base, &err)
}

/// A labelled block: `storage "sqlite" { … }` → `("sqlite", {…})`.
type Block<'a> = (&'a str, &'a Map<String, Value>);

fn labelled<'a>(
    top: &'a Map<String, Value>,
    key: &str,
    err: &dyn Fn(String) -> ConfigError,
) -> Result<Option<Block<'a>>, ConfigError> {
    let Some(v) = top.get(key) else {
        return Ok(None);
    };
    let m = object(v, key, err)?;
    if m.len() != 1 {
        return Err(err(format!(
            "exactly one {key} block is supported, e.g. {key} \"…\" {{ … }}"
        )));
    }
    let (label, body) = m
        .iter()
        .next()
        .ok_or_else(|| err(format!("empty {key} block")))?;
    Ok(Some((
        label.as_str(),
        object(body, &format!("{key} \"{label}\""), err)?,
    )))
}

pub(crate) fn parse(
    text: &str,
    base: &Path,
    err: &dyn Fn(String) -> ConfigError,
) -> Result<ServerConfig, ConfigError> {
    let v = leash_hcl::parse_to_json(text).map_err(|e| err(e.to_string()))?;
    let top = object(&v, "the file", err)?;
    only_keys(top, TOP_KEYS, "the top level", err)?;
    let rel = |p: String| {
        let p = PathBuf::from(p);
        if p.is_absolute() { p } else { base.join(p) }
    };

    let (kind, storage) = labelled(top, "storage", err)?.ok_or_else(|| {
        err("a storage block is required: storage \"sqlite\" { path = \"./data\" }".into())
    })?;
    let (storage_path, postgres) = match storage_choice(kind, storage, "storage", &rel, err)? {
        Store::Sqlite(path) => (path, None),
        Store::Postgres(pg) => (PathBuf::new(), Some(pg)),
    };

    let (lkind, listener) = labelled(top, "listener", err)?.ok_or_else(|| {
        err(
            "a listener block is required: listener \"tcp\" { address = \"127.0.0.1:8200\" }"
                .into(),
        )
    })?;
    if lkind != "tcp" {
        return Err(err(format!(
            "unsupported listener {lkind:?} (supported: tcp)"
        )));
    }
    only_keys(
        listener,
        &[
            "address",
            "tls_disable",
            "tls_cert_file",
            "tls_key_file",
            "max_request_size",
            "telemetry",
            "cluster_address",
            "http_read_header_timeout",
            "http_read_timeout",
            "http_idle_timeout",
            "max_connections",
        ],
        "listener \"tcp\"",
        err,
    )?;
    let address: SocketAddr = string(listener, "address", err)?
        .unwrap_or_else(|| "127.0.0.1:8200".into())
        .parse()
        .map_err(|_| err("listener address must be IP:PORT, e.g. 127.0.0.1:8200".into()))?;
    let tls_disable = boolean(listener, "tls_disable", err)?;
    let cert = string(listener, "tls_cert_file", err)?;
    let key = string(listener, "tls_key_file", err)?;
    let tls = match (tls_disable, cert, key) {
        (true, _, _) => None,
        (false, Some(c), Some(k)) => Some(leash_http::TlsFiles {
            cert: rel(c),
            key: rel(k),
        }),
        (false, _, _) => {
            return Err(err(
                "the listener needs tls_cert_file and tls_key_file, or tls_disable = true (traffic then travels in clear)".into(),
            ));
        }
    };
    let max_request_size = match listener.get("max_request_size") {
        None => 1024 * 1024,
        Some(Value::Number(n)) => n
            .as_u64()
            .and_then(|n| usize::try_from(n).ok())
            .filter(|n| *n > 0)
            .ok_or_else(|| err("max_request_size must be a positive number of bytes".into()))?,
        Some(_) => return Err(err("max_request_size must be a number of bytes".into())),
    };

    let defaults = leash_http::Limits::default();
    let positive = |key: &str, default: Duration| -> Result<Duration, ConfigError> {
        let d = duration(listener, key, default, err)?;
        if d.is_zero() {
            return Err(err(format!("{key} must be greater than 0")));
        }
        Ok(d)
    };
    let http_limits = leash_http::Limits {
        header_read_timeout: positive("http_read_header_timeout", defaults.header_read_timeout)?,
        read_timeout: positive("http_read_timeout", defaults.read_timeout)?,
        idle_timeout: positive("http_idle_timeout", defaults.idle_timeout)?,
        max_connections: match listener.get("max_connections") {
            None => defaults.max_connections,
            Some(Value::Number(n)) => n
                .as_u64()
                .and_then(|n| usize::try_from(n).ok())
                .filter(|n| *n > 0)
                .ok_or_else(|| err("max_connections must be a positive number".into()))?,
            Some(_) => return Err(err("max_connections must be a number".into())),
        },
    };

    let audit_dirs = match top.get("audit_dir") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::String(d)) => vec![d.clone()],
        Some(Value::Array(list)) => list
            .iter()
            .map(|v| {
                v.as_str()
                    .map(str::to_owned)
                    .ok_or_else(|| err("audit_dir must be a path or a list of paths".into()))
            })
            .collect::<Result<_, _>>()?,
        Some(_) => return Err(err("audit_dir must be a path or a list of paths".into())),
    }
    .into_iter()
    .map(|d| {
        if d.is_empty() {
            return Err(err("audit_dir must not be empty".into()));
        }
        Ok(rel(d))
    })
    .collect::<Result<Vec<_>, _>>()?;

    let key_file = match labelled(top, "seal", err)? {
        None => None,
        Some(("file", seal)) => {
            only_keys(seal, &["path"], "seal \"file\"", err)?;
            Some(rel(string(seal, "path", err)?
                .ok_or_else(|| err("seal \"file\" needs a path".into()))?))
        }
        Some((other, _)) => {
            return Err(err(format!("unsupported seal {other:?} (supported: file)")));
        }
    };

    let unauthenticated_metrics_access = telemetry(top, err)? || telemetry(listener, err)?;

    let default_ttl = duration(top, "default_lease_ttl", Duration::from_secs(3600), err)?;
    let max_ttl = duration(top, "max_lease_ttl", Duration::from_secs(24 * 3600), err)?;
    if default_ttl > max_ttl {
        return Err(err(
            "default_lease_ttl cannot be greater than max_lease_ttl".into(),
        ));
    }
    Ok(ServerConfig {
        storage_path,
        postgres,
        address,
        tls,
        max_request_size,
        key_file,
        default_ttl,
        max_ttl,
        cluster_name: string(top, "cluster_name", err)?.unwrap_or_else(|| "leash-cluster".into()),
        log_level: string(top, "log_level", err)?,
        audit_deadline: {
            let d = duration(top, "audit_deadline", Duration::from_secs(5), err)?;
            if d < Duration::from_secs(1) {
                return Err(err("audit_deadline must be at least 1s (a shorter one makes healthy devices look failed)".into()));
            }
            d
        },
        unauthenticated_metrics_access,
        audit_dirs,
        http_limits,
    })
}

/// A storage block: `sqlite` with its data directory, or `postgresql`.
#[derive(Debug, Clone)]
pub(crate) enum Store {
    Sqlite(PathBuf),
    Postgres(leash_storage::PgConfig),
}

fn storage_choice(
    kind: &str,
    block: &Map<String, Value>,
    what: &str,
    rel: &dyn Fn(String) -> PathBuf,
    err: &dyn Fn(String) -> ConfigError,
) -> Result<Store, ConfigError> {
    match kind {
        "sqlite" => {
            only_keys(block, &["path"], &format!("{what} \"sqlite\""), err)?;
            let path = rel(string(block, "path", err)?
                .ok_or_else(|| err(format!("{what} \"sqlite\" needs a path")))?);
            Ok(Store::Sqlite(path))
        }
        "postgresql" => Ok(Store::Postgres(postgres_block(block, err)?)),
        _ => Err(err(format!(
            "unsupported storage backend {kind:?} (supported: sqlite, postgresql)"
        ))),
    }
}

/// `leash operator migrate --config FILE`: Vault's shape, a `storage_source` and a
/// `storage_destination` block, and the key (`seal "file"` or `LEASH_SEAL_KEY`).
#[derive(Debug, Clone)]
pub(crate) struct MigrateConfig {
    pub(crate) source: Store,
    pub(crate) destination: Store,
    pub(crate) key_file: Option<PathBuf>,
}

/// Reads and validates a migration configuration file.
pub(crate) fn load_migrate(path: &Path) -> Result<MigrateConfig, ConfigError> {
    let file = path.display().to_string();
    let err = |message: String| ConfigError {
        file: file.clone(),
        message,
    };
    let text = std::fs::read_to_string(path).map_err(|e| err(format!("cannot read: {e}")))?;
    let base = path.parent().map(Path::to_path_buf).unwrap_or_default();
    parse_migrate(&text, &base, &err)
}

pub(crate) fn parse_migrate(
    text: &str,
    base: &Path,
    err: &dyn Fn(String) -> ConfigError,
) -> Result<MigrateConfig, ConfigError> {
    let v = leash_hcl::parse_to_json(text).map_err(|e| err(e.to_string()))?;
    let top = object(&v, "the file", err)?;
    only_keys(
        top,
        &["storage_source", "storage_destination", "seal", "log_level"],
        "the top level",
        err,
    )?;
    let rel = |p: String| {
        let p = PathBuf::from(p);
        if p.is_absolute() { p } else { base.join(p) }
    };
    let side = |key: &str| -> Result<Store, ConfigError> {
        let (kind, block) = labelled(top, key, err)?.ok_or_else(|| {
            err(format!(
                "a {key} block is required, e.g. {key} \"sqlite\" {{ path = \"./data\" }}"
            ))
        })?;
        storage_choice(kind, block, key, &rel, err)
    };
    let source = side("storage_source")?;
    let destination = side("storage_destination")?;
    let key_file = match labelled(top, "seal", err)? {
        None => None,
        Some(("file", seal)) => {
            only_keys(seal, &["path"], "seal \"file\"", err)?;
            Some(rel(string(seal, "path", err)?
                .ok_or_else(|| err("seal \"file\" needs a path".into()))?))
        }
        Some((other, _)) => {
            return Err(err(format!("unsupported seal {other:?} (supported: file)")));
        }
    };
    Ok(MigrateConfig {
        source,
        destination,
        key_file,
    })
}

/// The environment variable that may carry the PostgreSQL `connection_url`.
pub(crate) const PG_URL_ENV: &str = "LEASH_PG_URL";

/// `storage "postgresql" { connection_url, table, ha_enabled, max_parallel }`, with
/// Vault's spellings: values may be strings (`"64"`, `"true"`) or numbers and booleans;
/// and libpq's TLS keys (`sslmode`, `sslrootcert`, `sslcert`, `sslkey`), which win over
/// the same keys in `connection_url` (checked when the storage opens).
fn postgres_block(
    m: &Map<String, Value>,
    err: &dyn Fn(String) -> ConfigError,
) -> Result<leash_storage::PgConfig, ConfigError> {
    const WHAT: &str = "storage \"postgresql\"";
    only_keys(
        m,
        &[
            "connection_url",
            "table",
            "ha_enabled",
            "max_parallel",
            "sslmode",
            "sslrootcert",
            "sslcert",
            "sslkey",
        ],
        WHAT,
        err,
    )?;
    let mut tls = Vec::new();
    for key in ["sslmode", "sslrootcert", "sslcert", "sslkey"] {
        if let Some(v) = string(m, key, err)? {
            tls.push((key.to_owned(), v));
        }
    }
    let url = match string(m, "connection_url", err)? {
        Some(u) => u,
        None => std::env::var(PG_URL_ENV).map_err(|_| {
            err(format!(
                "{WHAT} needs connection_url (or the environment variable {PG_URL_ENV})"
            ))
        })?,
    };
    if url.trim().is_empty() {
        return Err(err("connection_url must not be empty".into()));
    }
    let table = string(m, "table", err)?
        .unwrap_or_else(|| leash_storage::postgres::DEFAULT_TABLE.to_owned());
    if !leash_storage::postgres::valid_table_name(&table) {
        return Err(err(
            "table must be a lower-case SQL identifier ([a-z_][a-z0-9_]*, at most 40 characters)"
                .into(),
        ));
    }
    let max_parallel = match string(m, "max_parallel", err)? {
        None => leash_storage::postgres::DEFAULT_MAX_PARALLEL,
        Some(v) => v
            .trim()
            .parse::<usize>()
            .ok()
            .filter(|n| (1..=10_000).contains(n))
            .ok_or_else(|| {
                err("max_parallel must be a number of connections from 1 to 10000".into())
            })?,
    };
    let ha_enabled = match m.get("ha_enabled") {
        None | Some(Value::Null) => true,
        _ => boolean(m, "ha_enabled", err)?,
    };
    Ok(leash_storage::PgConfig {
        connection_url: leash_types::SecretString::from(url),
        table,
        max_parallel,
        ha_enabled,
        tls,
    })
}

/// `unauthenticated_metrics_access` of the `telemetry` block in `m` (other telemetry
/// keys, such as Vault's statsd settings, are accepted and ignored).
fn telemetry(
    m: &Map<String, Value>,
    err: &dyn Fn(String) -> ConfigError,
) -> Result<bool, ConfigError> {
    let blocks: Vec<&Value> = match m.get("telemetry") {
        None | Some(Value::Null) => return Ok(false),
        Some(Value::Array(a)) => a.iter().collect(),
        Some(v) => vec![v],
    };
    let mut open = false;
    for b in blocks {
        open |= boolean(
            object(b, "telemetry", err)?,
            "unauthenticated_metrics_access",
            err,
        )?;
    }
    Ok(open)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(text: &str) -> Result<ServerConfig, String> {
        let err = |message: String| ConfigError {
            file: "t.hcl".into(),
            message,
        };
        parse(text, Path::new("/etc/leash"), &err).map_err(|e| e.to_string())
    }

    #[test]
    fn vault_shaped_file_loads() {
        let c = p(r#"
            storage "sqlite" { path = "./data" }
            listener "tcp" {
              address = "127.0.0.1:8201"
              tls_disable = true
            }
            seal "file" { path = "leash.key" }
            disable_mlock = true
            ui = true
            default_lease_ttl = "30m"
        "#)
        .unwrap();
        assert_eq!(c.storage_path, PathBuf::from("/etc/leash/./data"));
        assert_eq!(c.address.port(), 8201);
        assert!(c.tls.is_none());
        assert_eq!(c.key_file, Some(PathBuf::from("/etc/leash/leash.key")));
        assert_eq!(c.default_ttl, Duration::from_secs(1800));
        assert!(!c.unauthenticated_metrics_access);
    }

    #[test]
    fn telemetry_opens_metrics() {
        let base = "storage \"sqlite\" { path = \"d\" }\nlistener \"tcp\" { tls_disable = true }\n";
        let c = p(&format!(
            "{base}telemetry {{\n unauthenticated_metrics_access = true\n statsd_address = \"x:1\"\n}}"
        ))
        .unwrap();
        assert!(c.unauthenticated_metrics_access);
        let c = p(&format!(
            "{base}telemetry {{\n unauthenticated_metrics_access = false\n}}"
        ))
        .unwrap();
        assert!(!c.unauthenticated_metrics_access);
        let e = p(&format!(
            "{base}telemetry {{\n unauthenticated_metrics_access = 3\n}}"
        ))
        .unwrap_err();
        assert!(e.contains("unauthenticated_metrics_access"), "{e}");
    }

    #[test]
    fn audit_dir_and_http_limits_load() {
        let base = "storage \"sqlite\" { path = \"d\" }\n";
        let c = p(&format!("{base}listener \"tcp\" {{ tls_disable = true }}")).unwrap();
        assert!(c.audit_dirs.is_empty());
        assert_eq!(c.http_limits, leash_http::Limits::default());
        assert_eq!(c.http_limits.header_read_timeout, Duration::from_secs(10));
        assert_eq!(c.http_limits.read_timeout, Duration::from_secs(30));
        assert_eq!(c.http_limits.idle_timeout, Duration::from_secs(300));
        assert_eq!(c.http_limits.max_connections, 4096);
        let c = p(&format!(
            "{base}listener \"tcp\" {{\n tls_disable = true\n http_read_header_timeout = \"2s\"\n http_read_timeout = \"1m\"\n http_idle_timeout = \"90s\"\n max_connections = 64\n}}\naudit_dir = \"/var/log/leash\""
        ))
        .unwrap();
        assert_eq!(
            c.http_limits,
            leash_http::Limits {
                header_read_timeout: Duration::from_secs(2),
                read_timeout: Duration::from_secs(60),
                idle_timeout: Duration::from_secs(90),
                max_connections: 64,
            }
        );
        assert_eq!(c.audit_dirs, vec![PathBuf::from("/var/log/leash")]);
        let c = p(&format!(
            "{base}listener \"tcp\" {{ tls_disable = true }}\naudit_dir = [\"/a\", \"logs\"]"
        ))
        .unwrap();
        assert_eq!(
            c.audit_dirs,
            vec![PathBuf::from("/a"), PathBuf::from("/etc/leash/logs")]
        );
        for (extra, needle) in [
            ("audit_dir = 3", "audit_dir"),
            ("audit_dir = \"\"", "audit_dir"),
        ] {
            let e = p(&format!(
                "{base}listener \"tcp\" {{ tls_disable = true }}\n{extra}"
            ))
            .unwrap_err();
            assert!(e.contains(needle), "{extra}: {e}");
        }
        for (key, value, needle) in [
            ("http_read_header_timeout", "\"0s\"", "greater than 0"),
            ("http_read_timeout", "\"soon\"", "http_read_timeout"),
            ("max_connections", "0", "max_connections"),
            ("max_connections", "\"many\"", "max_connections"),
        ] {
            let e = p(&format!(
                "{base}listener \"tcp\" {{\n tls_disable = true\n {key} = {value}\n}}"
            ))
            .unwrap_err();
            assert!(e.contains(needle), "{key}: {e}");
            assert!(!e.contains("soon") && !e.contains("many"), "{e}");
        }
    }

    #[test]
    fn mistakes_are_named() {
        let base = "storage \"sqlite\" { path = \"d\" }\n";
        assert!(
            p(&format!(
                "{base}listener \"tcp\" {{ address = \"x\" tls_disable = true }}"
            ))
            .unwrap_err()
            .contains("IP:PORT")
        );
        assert!(
            p(&format!(
                "{base}listener \"tcp\" {{ address = \"127.0.0.1:1\" }}"
            ))
            .unwrap_err()
            .contains("tls_cert_file")
        );
        assert!(
            p(&format!(
                "{base}listener \"tcp\" {{ tls_disable = true }}\nfoo = 1"
            ))
            .unwrap_err()
            .contains("unknown key \"foo\"")
        );
        assert!(
            p("storage \"raft\" { path = \"d\" }")
                .unwrap_err()
                .contains("unsupported storage")
        );
        assert!(
            p("listener \"tcp\" { tls_disable = true }")
                .unwrap_err()
                .contains("storage block is required")
        );
        assert!(p("storage \"sqlite\" {").unwrap_err().contains("line"));
        assert!(
            p(&format!(
                "{base}listener \"tcp\" {{ tls_disable = true }}\naudit_deadline = \"500ms\""
            ))
            .unwrap_err()
            .contains("at least 1s")
        );
    }

    #[test]
    fn postgresql_storage_takes_vaults_keys_as_strings_or_values() {
        let l = "listener \"tcp\" { tls_disable = true }\n";
        let c = p(&format!(
            "storage \"postgresql\" {{\n connection_url = \"postgresql://u@h/db\"\n table = \"leash_store\"\n ha_enabled = \"true\"\n max_parallel = \"64\"\n}}\n{l}"
        ))
        .unwrap();
        let pg = c.postgres.unwrap();
        assert_eq!(
            (pg.table.as_str(), pg.max_parallel, pg.ha_enabled),
            ("leash_store", 64, true)
        );
        let c = p(&format!(
            "storage \"postgresql\" {{\n connection_url = \"postgresql://u@h/db\"\n ha_enabled = false\n max_parallel = 8\n}}\n{l}"
        ))
        .unwrap();
        let pg = c.postgres.unwrap();
        assert_eq!(
            (pg.table.as_str(), pg.max_parallel, pg.ha_enabled),
            ("leash_store", 8, false)
        );
        let c = p(&format!(
            "storage \"postgresql\" {{\n connection_url = \"postgresql://u@h/db\"\n sslmode = \"verify-full\"\n sslrootcert = \"/etc/leash/db-ca.pem\"\n}}\n{l}"
        ))
        .unwrap();
        assert_eq!(
            c.postgres.unwrap().tls,
            vec![
                ("sslmode".to_owned(), "verify-full".to_owned()),
                ("sslrootcert".to_owned(), "/etc/leash/db-ca.pem".to_owned())
            ]
        );
        for (bad, key) in [
            ("max_parallel = \"many\"", "max_parallel"),
            ("max_parallel = 0", "max_parallel"),
            ("table = \"Bad-Name\"", "table"),
            ("ha_enabled = \"perhaps\"", "ha_enabled"),
            ("path = \"d\"", "\"path\""),
        ] {
            let e = p(&format!(
                "storage \"postgresql\" {{\n connection_url = \"postgresql://u:pw@h/db\"\n {bad}\n}}\n{l}"
            ))
            .unwrap_err();
            assert!(e.contains(key), "{bad}: {e}");
            assert!(!e.contains("pw@"), "{e}");
        }
    }
}
