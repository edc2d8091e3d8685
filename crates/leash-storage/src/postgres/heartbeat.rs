//! Heartbeats: this server's row in `<table>_servers`.

use super::*;

pub(super) async fn heartbeat_once(s: &Shared, me: &ServerIdentity) -> Result<(), StorageError> {
    let c = s.pool.get().await.map_err(pool_err)?;
    let sv = &s.sql.servers;
    c.execute(
        &format!(
            "INSERT INTO {sv} (id, name, address, version) VALUES ($1, $2, $3, $4)
             ON CONFLICT (id) DO UPDATE SET heartbeat_at = now()"
        ),
        &[&s.server_id, &me.name, &me.address, &me.version],
    )
    .await
    .map_err(pg("heartbeat"))?;
    // A dead server's issuance intents: its credentials (if created) must go. Marked
    // for revocation here; whichever server claims them next revokes them.
    let n = c
        .execute(
            &format!(
                "UPDATE {l} SET state = 2, expire_at = LEAST(expire_at, extract(epoch from now())::bigint)
                 WHERE state = 0 AND owner IS DISTINCT FROM $1 AND NOT EXISTS (
                   SELECT 1 FROM {sv} WHERE {sv}.id = {l}.owner
                   AND {sv}.heartbeat_at > now() - make_interval(secs => $2))",
                l = s.sql.leases
            ),
            &[&s.server_id, &(DEAD_AFTER_SECS as f64)],
        )
        .await
        .map_err(pg("heartbeat"))?;
    if n > 0 {
        tracing::warn!(
            leases = n,
            "storage: pending issuances of a dead server marked for revocation"
        );
    }
    // Rows of servers gone for an hour are forgotten.
    c.execute(
        &format!("DELETE FROM {sv} WHERE heartbeat_at < now() - interval '1 hour'"),
        &[],
    )
    .await
    .map_err(pg("heartbeat"))?;
    Ok(())
}
