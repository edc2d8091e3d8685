//! Connections: the pool, the listener connection, and PostgreSQL error mapping.

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

/// The transport of every connection (TLS is chosen here).
pub(super) fn tls() -> tokio_postgres::NoTls {
    tokio_postgres::NoTls
}

pub(super) fn parse_url(url: &str) -> Result<tokio_postgres::Config, StorageError> {
    url.parse::<tokio_postgres::Config>().map_err(|_| {
        StorageError::InvalidConfig(
            "connection_url is not a valid PostgreSQL URL or key=value string".into(),
        )
    })
}

/// Opens a pool of at most `pool_size` connections to `url` (connections are made on
/// demand). The one place the pool's transport is chosen.
pub fn connect(url: &str, pool_size: usize) -> Result<Pool, StorageError> {
    let cfg = parse_url(url)?;
    let mgr = Manager::from_config(
        cfg,
        tls(),
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
    url: &str,
) -> Result<
    (
        tokio_postgres::Client,
        tokio::sync::mpsc::UnboundedReceiver<tokio_postgres::Notification>,
    ),
    StorageError,
> {
    let cfg = parse_url(url)?;
    let (client, mut conn) = cfg.connect(tls()).await.map_err(pg("listen connect"))?;
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
