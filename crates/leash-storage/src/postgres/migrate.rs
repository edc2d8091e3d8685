//! Key check and versioned schema migrations.

use super::*;

/// Checks the key, then applies the migrations not yet applied, under a session-level
/// advisory lock (servers starting together wait for the first).
pub(super) async fn migrate(
    pool: &Pool,
    target: &Target,
    sql: &Sql,
    keyring: &Keyring,
) -> Result<(), StorageError> {
    // The first connection: a failure says why (TLS, pg_hba.conf, …).
    let mut c = pool.get().await.map_err(first_connect_err(&target.tls))?;
    let lock_key = format!("leash:{}", sql.entries);
    c.execute(
        "SELECT pg_advisory_lock($1, hashtext($2))",
        &[&LOCK_MIGRATE, &lock_key],
    )
    .await
    .map_err(pg("lock"))?;
    let r = migrate_locked(&mut c, sql, keyring).await;
    let unlocked = c
        .execute(
            "SELECT pg_advisory_unlock($1, hashtext($2))",
            &[&LOCK_MIGRATE, &lock_key],
        )
        .await
        .map_err(pg("unlock"));
    r?;
    unlocked.map(|_| ())
}

pub(super) async fn migrate_locked(
    c: &mut deadpool_postgres::Object,
    sql: &Sql,
    keyring: &Keyring,
) -> Result<(), StorageError> {
    // The key first: a wrong key must change nothing.
    let has_meta: bool = c
        .query_one("SELECT to_regclass($1) IS NOT NULL", &[&sql.meta])
        .await
        .map_err(pg("inspect"))?
        .get(0);
    let mut keycheck_present = false;
    if has_meta {
        let row = c
            .query_opt(
                &format!("SELECT value FROM {} WHERE key = 'keycheck'", sql.meta),
                &[],
            )
            .await
            .map_err(pg("read keycheck"))?;
        if let Some(row) = row {
            let v: Vec<u8> = row.get(0);
            match keyring.open(KEYCHECK_LOCATION, &v) {
                Ok(p) if p.as_slice() == KEYCHECK_PLAINTEXT => keycheck_present = true,
                _ => return Err(StorageError::WrongKey),
            }
        }
    }
    c.batch_execute(&format!(
        "CREATE TABLE IF NOT EXISTS {} (version INTEGER PRIMARY KEY, applied_at TIMESTAMPTZ NOT NULL DEFAULT now())",
        sql.migrations
    ))
    .await
    .map_err(pg("migrate"))?;
    let applied: i32 = c
        .query_one(
            &format!("SELECT COALESCE(MAX(version), 0) FROM {}", sql.migrations),
            &[],
        )
        .await
        .map_err(pg("migrate"))?
        .get(0);
    for (i, m) in sql.migrations().iter().enumerate() {
        let version = i32::try_from(i + 1).unwrap_or(i32::MAX);
        if version <= applied {
            continue;
        }
        let tx = c.transaction().await.map_err(pg("migrate"))?;
        tx.batch_execute(m).await.map_err(pg("migrate"))?;
        tx.execute(
            &format!("INSERT INTO {} (version) VALUES ($1)", sql.migrations),
            &[&version],
        )
        .await
        .map_err(pg("migrate"))?;
        tx.commit().await.map_err(pg("migrate"))?;
        tracing::info!(version, "storage: applied PostgreSQL schema migration");
    }
    if !keycheck_present {
        let sealed = keyring.seal(KEYCHECK_LOCATION, KEYCHECK_PLAINTEXT)?;
        c.execute(
            &format!(
                "INSERT INTO {} (key, value) VALUES ('keycheck', $1) ON CONFLICT (key) DO NOTHING",
                sql.meta
            ),
            &[&sealed],
        )
        .await
        .map_err(pg("write keycheck"))?;
    }
    Ok(())
}
