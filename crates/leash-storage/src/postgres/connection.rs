//! Connections: the pool, the listener connection, and PostgreSQL error mapping.

use leash_dbtls::DbTlsError;
use leash_dbtls::pg::PgTls;

use super::*;

pub(super) fn pg(op: &'static str) -> impl Fn(tokio_postgres::Error) -> StorageError {
    move |e| {
        if e.code() == Some(&SqlState::UNIQUE_VIOLATION) {
            return StorageError::Conflict("a record with the same identity exists".into());
        }
        let io = std::error::Error::source(&e).is_some_and(|s| s.is::<std::io::Error>());
        let down = matches!(
            e.code(),
            Some(c) if *c == SqlState::ADMIN_SHUTDOWN || *c == SqlState::CRASH_SHUTDOWN
                || *c == SqlState::CANNOT_CONNECT_NOW
        );
        if e.is_closed() || io || down {
            // The connection failed (refused, reset, closed) or the server is stopping.
            return StorageError::Unavailable(format!("PostgreSQL connection failed ({op})"));
        }
        StorageError::database(op, e)
    }
}

pub(super) fn pool_err(e: deadpool_postgres::PoolError) -> StorageError {
    tracing::debug!(error = %e, "storage: cannot get a PostgreSQL connection");
    StorageError::Unavailable("cannot reach PostgreSQL".into())
}

/// Where and how to connect: the driver's configuration (TLS keywords taken out, its
/// `sslmode` set) and the rustls connector (libpq's `sslmode`, `sslrootcert`, `sslcert`,
/// `sslkey`; certificate files read once, when the URL is parsed).
#[derive(Clone)]
pub(super) struct Target {
    pub(super) config: tokio_postgres::Config,
    pub(super) tls: PgTls,
}

/// Parses `connection_url`, with `tls` (libpq TLS keys given apart) over its own.
/// Errors name the setting at fault, never echo the URL (it holds the password).
pub(super) fn parse_url(url: &str, tls: &[(String, String)]) -> Result<Target, StorageError> {
    let overrides: Vec<(&str, &str)> = tls.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    match leash_dbtls::driver_config(url, &overrides) {
        Ok((config, tls)) => Ok(Target { config, tls }),
        // The driver's own parse error may quote the string: not repeated.
        Err(DbTlsError::Postgres(_)) => Err(StorageError::InvalidConfig(
            "connection_url is not a valid PostgreSQL URL or key=value string".into(),
        )),
        // Names the key (and a file's path), never a value of the URL's.
        Err(e) => Err(StorageError::InvalidConfig(e.to_string())),
    }
}

/// Why a first connection failed, in words an operator can act on: a TLS problem (the
/// certificate, a server without TLS), or the server's refusal (`pg_hba.conf`, the
/// password); otherwise the driver's text (never the URL, so never the password).
pub(super) fn describe_connect_failure(e: &tokio_postgres::Error, tls: &PgTls) -> String {
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        if let Some(t) = s.downcast_ref::<DbTlsError>() {
            return format!("TLS to PostgreSQL failed: {t}");
        }
        source = s.source();
    }
    if let Some(db) = e.as_db_error() {
        let hint = if db.message().contains("no encryption") {
            " (the server takes TLS connections only: set sslmode=verify-full and sslrootcert in connection_url)"
        } else {
            ""
        };
        return format!(
            "PostgreSQL refused the connection: {} ({}){hint}",
            db.message(),
            db.code().code()
        );
    }
    let text = e.to_string();
    if text.contains("server does not support TLS") {
        return format!(
            "TLS to PostgreSQL failed: {}",
            DbTlsError::ServerRefusedTls {
                mode: tls.mode().as_str()
            }
        );
    }
    format!("cannot reach PostgreSQL: {text}")
}

/// [`pool_err`] for the first connection of [`PgStorage::open`]: the reason in full
/// (see [`describe_connect_failure`]), so a server that cannot start says why.
pub(super) fn first_connect_err(
    tls: &PgTls,
) -> impl Fn(deadpool_postgres::PoolError) -> StorageError {
    move |e| match &e {
        deadpool_postgres::PoolError::Backend(pg) => {
            StorageError::Unavailable(describe_connect_failure(pg, tls))
        }
        _ => pool_err(e),
    }
}

/// Opens a pool of at most `pool_size` connections to `url` (connections are made on
/// demand). The one place the pool's transport is chosen.
pub fn connect(url: &str, pool_size: usize) -> Result<Pool, StorageError> {
    connect_to(&parse_url(url, &[])?, pool_size)
}

/// [`connect`] with the URL parsed.
pub(super) fn connect_to(target: &Target, pool_size: usize) -> Result<Pool, StorageError> {
    let mgr = Manager::from_config(
        target.config.clone(),
        target.tls.clone(),
        ManagerConfig {
            recycling_method: RecyclingMethod::Fast,
        },
    );
    Pool::builder(mgr)
        .max_size(pool_size.max(1))
        .runtime(Runtime::Tokio1)
        .create_timeout(Some(Duration::from_secs(5)))
        .wait_timeout(Some(Duration::from_secs(10)))
        .build()
        .map_err(|e| StorageError::InvalidConfig(format!("cannot build the connection pool: {e}")))
}

/// One connection outside the pool (for `LISTEN`): the client and a channel of its
/// notifications, closed when the connection ends.
pub(super) async fn connect_listener(
    target: &Target,
) -> Result<
    (
        tokio_postgres::Client,
        tokio::sync::mpsc::UnboundedReceiver<tokio_postgres::Notification>,
    ),
    StorageError,
> {
    let (client, mut conn) = target
        .config
        .connect(target.tls.clone())
        .await
        .map_err(|e| StorageError::Unavailable(describe_connect_failure(&e, &target.tls)))?;
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        loop {
            match std::future::poll_fn(|cx| conn.poll_message(cx)).await {
                Some(Ok(tokio_postgres::AsyncMessage::Notification(n))) => {
                    if tx.send(n).is_err() {
                        return;
                    }
                }
                Some(Ok(_)) => {}
                Some(Err(e)) => {
                    tracing::warn!(error = %e, "storage: the PostgreSQL notification connection failed");
                    return;
                }
                None => return,
            }
        }
    });
    Ok((client, rx))
}
