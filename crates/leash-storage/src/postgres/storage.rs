//! The `Storage` implementation of [`PgStorage`].

use super::*;

#[async_trait]
impl Storage for PgStorage {
    fn keyring(&self) -> &Keyring {
        &self.shared.keyring
    }

    fn kind(&self) -> &'static str {
        "postgresql"
    }

    fn ha_stats(&self) -> Option<HaStats> {
        Some(self.shared.stats.snapshot())
    }

    fn shared(&self) -> bool {
        true
    }

    fn changes(&self) -> Option<broadcast::Receiver<Change>> {
        Some(self.shared.changes.subscribe())
    }

    async fn servers(&self) -> Result<Vec<ServerInfo>, StorageError> {
        let c = self.client().await?;
        let rows = c
            .query(
                &format!(
                    "SELECT id, name, address, version, extract(epoch from heartbeat_at)::bigint,
                            heartbeat_at > now() - make_interval(secs => $1)
                     FROM {} ORDER BY started_at, id",
                    self.sql().servers
                ),
                &[&(DEAD_AFTER_SECS as f64)],
            )
            .await
            .map_err(pg("servers"))?;
        Ok(rows
            .iter()
            .map(|r| {
                let id: String = r.get(0);
                ServerInfo {
                    this_server: id == self.shared.server_id,
                    id,
                    name: r.get(1),
                    address: r.get(2),
                    version: r.get(3),
                    last_heartbeat: r.get(4),
                    alive: r.get(5),
                }
            })
            .collect())
    }

    async fn ping(&self) -> Result<(), StorageError> {
        let c = self.client().await?;
        c.simple_query("SELECT 1").await.map_err(pg("ping"))?;
        Ok(())
    }

    async fn get(&self, ns: &str, key: &str) -> Result<Option<Plain>, StorageError> {
        let ticket = match self.shared.cache.get(ns, key) {
            Ok(hit) => return Ok(hit),
            Err(ticket) => ticket,
        };
        let found = self.get_uncached(ns, key).await?;
        self.shared.cache.fill(ticket, ns, key, found.as_ref());
        Ok(found)
    }

    async fn get_fresh(&self, ns: &str, key: &str) -> Result<Option<Plain>, StorageError> {
        // Evicting first also keeps any read in flight from caching an older value.
        self.shared.cache.evict(ns, key);
        self.get(ns, key).await
    }

    async fn put(&self, ns: &str, key: &str, value: Vec<u8>) -> Result<(), StorageError> {
        let r = self.put_uncached(ns, key, value).await;
        self.shared.cache.evict(ns, key);
        r
    }

    async fn delete(&self, ns: &str, key: &str) -> Result<bool, StorageError> {
        let r = self.delete_uncached(ns, key).await;
        self.shared.cache.evict(ns, key);
        r
    }

    async fn list(&self, ns: &str, prefix: &str) -> Result<Vec<String>, StorageError> {
        let c = self.client().await?;
        let (cond, args) = prefix_range("key", prefix, 2);
        let st = c
            .prepare_cached(&format!(
                "SELECT key FROM {} WHERE ns = $1 AND {cond} ORDER BY key",
                self.sql().entries
            ))
            .await
            .map_err(pg("list"))?;
        let mut params: Vec<&(dyn ToSql + Sync)> = vec![&ns];
        for a in &args {
            params.push(a);
        }
        let rows = c.query(&st, &params).await.map_err(pg("list"))?;
        Ok(rows.iter().map(|r| r.get(0)).collect())
    }

    async fn namespaces(&self) -> Result<Vec<String>, StorageError> {
        let c = self.client().await?;
        let rows = c
            .query(
                &format!("SELECT DISTINCT ns FROM {} ORDER BY ns", self.sql().entries),
                &[],
            )
            .await
            .map_err(pg("namespaces"))?;
        Ok(rows.iter().map(|r| r.get(0)).collect())
    }

    async fn delete_prefix(&self, ns: &str, prefix: &str) -> Result<u64, StorageError> {
        let c = self.client().await?;
        let (cond, args) = prefix_range("key", prefix, 2);
        let st = c
            .prepare_cached(&format!(
                "DELETE FROM {} WHERE ns = $1 AND {cond}",
                self.sql().entries
            ))
            .await
            .map_err(pg("delete prefix"))?;
        let mut params: Vec<&(dyn ToSql + Sync)> = vec![&ns];
        for a in &args {
            params.push(a);
        }
        let r = c.execute(&st, &params).await.map_err(pg("delete prefix"));
        self.shared.cache.evict_prefix(ns, prefix);
        r
    }

    async fn modify(&self, ns: &str, key: &str, f: Modify) -> Result<Option<Plain>, StorageError> {
        let r = self.modify_uncached(ns, key, f).await;
        self.shared.cache.evict(ns, key);
        r
    }

    async fn token_insert(&self, t: StoredToken) -> Result<(), StorageError> {
        let sealed = self.keyring().seal(&token_location(&t.hash), &t.entry)?;
        let c = self.client().await?;
        let st = c
            .prepare_cached(&format!(
                "INSERT INTO {} ({TOKEN_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6)",
                self.sql().tokens
            ))
            .await
            .map_err(pg("token insert"))?;
        let parent = t.parent.map(|p| p.0.to_vec());
        c.execute(
            &st,
            &[
                &t.hash.0.as_slice(),
                &t.accessor_hash.0.as_slice(),
                &parent,
                &t.expire_at,
                &t.uses_left,
                &sealed,
            ],
        )
        .await
        .map_err(pg("token insert"))?;
        Ok(())
    }

    async fn token_get(&self, hash: KeyedHash) -> Result<Option<StoredToken>, StorageError> {
        let c = self.client().await?;
        let st = c
            .prepare_cached(&format!(
                "SELECT {TOKEN_COLUMNS} FROM {} WHERE hash = $1",
                self.sql().tokens
            ))
            .await
            .map_err(pg("token get"))?;
        let row = c
            .query_opt(&st, &[&hash.0.as_slice()])
            .await
            .map_err(pg("token get"))?;
        row.map(|r| token_from_row(self.keyring(), &r)).transpose()
    }

    async fn token_by_accessor(
        &self,
        accessor_hash: KeyedHash,
    ) -> Result<Option<StoredToken>, StorageError> {
        let c = self.client().await?;
        let st = c
            .prepare_cached(&format!(
                "SELECT {TOKEN_COLUMNS} FROM {} WHERE accessor_hash = $1",
                self.sql().tokens
            ))
            .await
            .map_err(pg("token get"))?;
        let row = c
            .query_opt(&st, &[&accessor_hash.0.as_slice()])
            .await
            .map_err(pg("token get"))?;
        row.map(|r| token_from_row(self.keyring(), &r)).transpose()
    }

    async fn token_update(
        &self,
        hash: KeyedHash,
        expire_at: Option<i64>,
        entry: Vec<u8>,
    ) -> Result<bool, StorageError> {
        let sealed = self.keyring().seal(&token_location(&hash), &entry)?;
        drop(Plain::new(entry));
        let c = self.client().await?;
        let st = c
            .prepare_cached(&format!(
                "UPDATE {} SET expire_at = $2, entry = $3 WHERE hash = $1",
                self.sql().tokens
            ))
            .await
            .map_err(pg("token update"))?;
        Ok(c.execute(&st, &[&hash.0.as_slice(), &expire_at, &sealed])
            .await
            .map_err(pg("token update"))?
            > 0)
    }

    async fn token_use(&self, hash: KeyedHash) -> Result<TokenUse, StorageError> {
        let c = self.client().await?;
        let tk = &self.sql().tokens;
        // One statement: spend a use if there is one, and say what the row held.
        let st = c
            .prepare_cached(&format!(
                "WITH spent AS (
                   UPDATE {tk} SET uses_left = uses_left - 1
                   WHERE hash = $1 AND uses_left > 0 RETURNING uses_left)
                 SELECT (SELECT uses_left FROM spent), EXISTS (SELECT 1 FROM spent),
                        (SELECT uses_left IS NULL FROM {tk} WHERE hash = $1)"
            ))
            .await
            .map_err(pg("token use"))?;
        let row = c
            .query_one(&st, &[&hash.0.as_slice()])
            .await
            .map_err(pg("token use"))?;
        let left: Option<i64> = row.get(0);
        let spent: bool = row.get(1);
        let unlimited: Option<bool> = row.get(2);
        Ok(match (spent, left, unlimited) {
            (true, Some(n), _) => TokenUse::Remaining(n),
            (false, _, Some(true)) => TokenUse::Unlimited,
            _ => TokenUse::Exhausted,
        })
    }

    async fn token_delete_tree(
        &self,
        hash: KeyedHash,
        orphan_children: bool,
        now: i64,
    ) -> Result<Vec<StoredToken>, StorageError> {
        let mut c = self.client().await?;
        let (tk, l) = (&self.sql().tokens, &self.sql().leases);
        let tx = c.transaction().await.map_err(pg("token revoke"))?;
        let h = hash.0.as_slice();
        let rows = if orphan_children {
            tx.execute(
                &format!("UPDATE {tk} SET parent = NULL WHERE parent = $1"),
                &[&h],
            )
            .await
            .map_err(pg("token revoke"))?;
            tx.query(
                &format!("DELETE FROM {tk} WHERE hash = $1 RETURNING {TOKEN_COLUMNS}, 0"),
                &[&h],
            )
            .await
            .map_err(pg("token revoke"))?
        } else {
            tx.query(
                &format!(
                    "WITH RECURSIVE sub(h, depth) AS (
                       SELECT hash, 0 FROM {tk} WHERE hash = $1
                       UNION ALL
                       SELECT t.hash, sub.depth + 1 FROM {tk} t JOIN sub ON t.parent = sub.h
                     )
                     DELETE FROM {tk} USING sub WHERE {tk}.hash = sub.h
                     RETURNING {}, sub.depth",
                    TOKEN_COLUMNS
                        .split(", ")
                        .map(|col| format!("{tk}.{col}"))
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
                &[&h],
            )
            .await
            .map_err(pg("token revoke"))?
        };
        let mut out = Vec::with_capacity(rows.len());
        let mut deleted: Vec<Vec<u8>> = Vec::with_capacity(rows.len());
        for r in &rows {
            let depth: i32 = r.get(6);
            deleted.push(r.get(0));
            out.push((depth, token_from_row(self.keyring(), r)?));
        }
        if !deleted.is_empty() {
            // The leases die with their tokens, in this same transaction.
            tx.execute(
                &format!(
                    "UPDATE {l} SET state = 2, expire_at = LEAST(expire_at, $2) WHERE token = ANY($1)"
                ),
                &[&deleted, &now],
            )
            .await
            .map_err(pg("token revoke"))?;
        }
        tx.commit().await.map_err(pg("token revoke"))?;
        out.sort_by_key(|(d, _)| *d);
        Ok(out.into_iter().map(|(_, t)| t).collect())
    }

    async fn tokens_expired(&self, now: i64, n: usize) -> Result<Vec<KeyedHash>, StorageError> {
        let c = self.client().await?;
        let st = c
            .prepare_cached(&format!(
                "SELECT hash FROM {} WHERE expire_at IS NOT NULL AND expire_at <= $1 ORDER BY expire_at LIMIT $2",
                self.sql().tokens
            ))
            .await
            .map_err(pg("tokens expired"))?;
        let rows = c
            .query(&st, &[&now, &limit(n)])
            .await
            .map_err(pg("tokens expired"))?;
        rows.into_iter().map(|r| hash_from(r.get(0))).collect()
    }

    async fn token_count(&self) -> Result<u64, StorageError> {
        let c = self.client().await?;
        let n: i64 = c
            .query_one(&format!("SELECT COUNT(*) FROM {}", self.sql().tokens), &[])
            .await
            .map_err(pg("count"))?
            .get(0);
        Ok(u64_of(n))
    }

    async fn tokens_live_page(
        &self,
        now: i64,
        after: Option<KeyedHash>,
        n: usize,
    ) -> Result<Vec<StoredToken>, StorageError> {
        let after: Vec<u8> = after.map(|h| h.0.to_vec()).unwrap_or_default();
        let c = self.client().await?;
        let st = c
            .prepare_cached(&format!(
                "SELECT {TOKEN_COLUMNS} FROM {} WHERE hash > $1
                 AND (expire_at IS NULL OR expire_at > $2) ORDER BY hash LIMIT $3",
                self.sql().tokens
            ))
            .await
            .map_err(pg("tokens page"))?;
        let rows = c
            .query(&st, &[&after, &now, &limit(n)])
            .await
            .map_err(pg("tokens page"))?;
        rows.iter()
            .map(|r| token_from_row(self.keyring(), r))
            .collect()
    }

    async fn lease_insert(&self, l: StoredLease) -> Result<(), StorageError> {
        let sealed = self.keyring().seal(&lease_location(&l.id), &l.entry)?;
        let mut c = self.client().await?;
        let (tk, lt) = (&self.sql().tokens, &self.sql().leases);
        let tx = c.transaction().await.map_err(pg("lease insert"))?;
        let token = l.token.map(|t| t.0.to_vec());
        if let Some(t) = &token {
            // Locks the token row against a concurrent revocation until commit.
            let live = tx
                .query_opt(
                    &format!("SELECT 1 FROM {tk} WHERE hash = $1 FOR KEY SHARE"),
                    &[t],
                )
                .await
                .map_err(pg("lease insert"))?
                .is_some();
            if !live {
                return Err(StorageError::Rejected(
                    "the token that would own this lease has been revoked".into(),
                ));
            }
        }
        let attempts = i32::try_from(l.attempts).unwrap_or(i32::MAX);
        tx.execute(
            &format!(
                "INSERT INTO {lt} ({LEASE_COLUMNS}, owner) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)"
            ),
            &[
                &l.id,
                &token,
                &l.issue_time,
                &l.expire_at,
                &l.max_expire_at,
                &state_code(l.state),
                &attempts,
                &l.next_attempt_at,
                &l.last_error,
                &sealed,
                &self.shared.server_id,
            ],
        )
        .await
        .map_err(pg("lease insert"))?;
        tx.commit().await.map_err(pg("lease insert"))?;
        Ok(())
    }

    async fn lease_get(&self, id: &str) -> Result<Option<StoredLease>, StorageError> {
        let c = self.client().await?;
        let st = c
            .prepare_cached(&format!(
                "SELECT {LEASE_COLUMNS} FROM {} WHERE id = $1",
                self.sql().leases
            ))
            .await
            .map_err(pg("lease get"))?;
        let row = c.query_opt(&st, &[&id]).await.map_err(pg("lease get"))?;
        row.map(|r| lease_from_row(self.keyring(), &r)).transpose()
    }

    async fn lease_update(
        &self,
        id: &str,
        state: LeaseState,
        expire_at: i64,
        entry: Option<Vec<u8>>,
    ) -> Result<bool, StorageError> {
        let sealed = match entry {
            Some(e) => {
                let s = self.keyring().seal(&lease_location(id), &e)?;
                drop(Plain::new(e));
                Some(s)
            }
            None => None,
        };
        let c = self.client().await?;
        let l = &self.sql().leases;
        // One statement: the state rule is checked on the locked row.
        let st = c
            .prepare_cached(&format!(
                "WITH cur AS (SELECT state FROM {l} WHERE id = $1 FOR UPDATE),
                 upd AS (UPDATE {l} SET state = $2, expire_at = $3, entry = COALESCE($4, entry)
                         WHERE id = $1 AND (state <> 2 OR $2 = 2::smallint) RETURNING 1)
                 SELECT (SELECT state FROM cur), EXISTS (SELECT 1 FROM upd)"
            ))
            .await
            .map_err(pg("lease update"))?;
        let row = c
            .query_one(&st, &[&id, &state_code(state), &expire_at, &sealed])
            .await
            .map_err(pg("lease update"))?;
        let current: Option<i16> = row.get(0);
        let updated: bool = row.get(1);
        match (current, updated) {
            (None, _) => Ok(false),
            (Some(_), true) => Ok(true),
            (Some(_), false) => Err(StorageError::Rejected(
                format!(
                    "lease {id} is being revoked and cannot become {}",
                    state.as_str()
                )
                .into(),
            )),
        }
    }

    async fn lease_delete(&self, id: &str) -> Result<bool, StorageError> {
        let c = self.client().await?;
        let st = c
            .prepare_cached(&format!("DELETE FROM {} WHERE id = $1", self.sql().leases))
            .await
            .map_err(pg("lease delete"))?;
        Ok(c.execute(&st, &[&id]).await.map_err(pg("lease delete"))? > 0)
    }

    async fn leases_due(&self, now: i64, n: usize) -> Result<Vec<StoredLease>, StorageError> {
        let c = self.client().await?;
        let l = &self.sql().leases;
        // Claims what it returns: rows locked by another server's claim are skipped, and
        // a claim lapses after CLAIM_SECS (its server died or hung).
        let st = c
            .prepare_cached(&format!(
                "UPDATE {l} SET claim_owner = $3, claim_until = now() + make_interval(secs => $4)
                 WHERE id IN (
                   SELECT id FROM {l}
                   WHERE (expire_at <= $1 OR state = 2) AND next_attempt_at <= $1
                     AND (claim_owner IS NULL OR claim_owner = $3 OR claim_until < now())
                   ORDER BY expire_at, id LIMIT $2
                   FOR UPDATE SKIP LOCKED)
                 RETURNING {LEASE_COLUMNS}"
            ))
            .await
            .map_err(pg("leases due"))?;
        let rows = c
            .query(
                &st,
                &[
                    &now,
                    &limit(n),
                    &self.shared.server_id,
                    &(CLAIM_SECS as f64),
                ],
            )
            .await
            .map_err(pg("leases due"))?;
        let mut out = rows
            .iter()
            .map(|r| lease_from_row(self.keyring(), r))
            .collect::<Result<Vec<_>, _>>()?;
        out.sort_by(|a, b| (a.expire_at, &a.id).cmp(&(b.expire_at, &b.id)));
        if !out.is_empty() {
            let st = &self.shared.stats;
            st.claim_batches.fetch_add(1, Ordering::Relaxed);
            st.claimed
                .fetch_add(u64::try_from(out.len()).unwrap_or(0), Ordering::Relaxed);
        }
        Ok(out)
    }

    async fn lease_record_failure(
        &self,
        id: &str,
        attempts: u32,
        next_attempt_at: i64,
        error: &str,
    ) -> Result<bool, StorageError> {
        let c = self.client().await?;
        // The claim is released: any server may retry when the time comes.
        let st = c
            .prepare_cached(&format!(
                "UPDATE {} SET attempts = $2, next_attempt_at = $3, last_error = $4,
                 claim_owner = NULL, claim_until = NULL WHERE id = $1",
                self.sql().leases
            ))
            .await
            .map_err(pg("lease failure"))?;
        let attempts = i32::try_from(attempts).unwrap_or(i32::MAX);
        Ok(c.execute(&st, &[&id, &attempts, &next_attempt_at, &error])
            .await
            .map_err(pg("lease failure"))?
            > 0)
    }

    async fn lease_ids_with_prefix(&self, prefix: &str) -> Result<Vec<String>, StorageError> {
        let c = self.client().await?;
        let (cond, args) = prefix_range("id", prefix, 1);
        let st = c
            .prepare_cached(&format!(
                "SELECT id FROM {} WHERE {cond} ORDER BY id",
                self.sql().leases
            ))
            .await
            .map_err(pg("lease ids"))?;
        let params: Vec<&(dyn ToSql + Sync)> =
            args.iter().map(|a| a as &(dyn ToSql + Sync)).collect();
        let rows = c.query(&st, &params).await.map_err(pg("lease ids"))?;
        Ok(rows.iter().map(|r| r.get(0)).collect())
    }

    async fn leases_failing(&self, n: usize) -> Result<Vec<StoredLease>, StorageError> {
        let c = self.client().await?;
        let st = c
            .prepare_cached(&format!(
                "SELECT {LEASE_COLUMNS} FROM {} WHERE attempts > 0 ORDER BY attempts DESC, id LIMIT $1",
                self.sql().leases
            ))
            .await
            .map_err(pg("leases failing"))?;
        let rows = c
            .query(&st, &[&limit(n)])
            .await
            .map_err(pg("leases failing"))?;
        rows.iter()
            .map(|r| lease_from_row(self.keyring(), r))
            .collect()
    }

    async fn lease_count(&self) -> Result<u64, StorageError> {
        let c = self.client().await?;
        let n: i64 = c
            .query_one(&format!("SELECT COUNT(*) FROM {}", self.sql().leases), &[])
            .await
            .map_err(pg("count"))?
            .get(0);
        Ok(u64_of(n))
    }

    async fn leases_failing_count(&self) -> Result<u64, StorageError> {
        let c = self.client().await?;
        let n: i64 = c
            .query_one(
                &format!(
                    "SELECT COUNT(*) FROM {} WHERE attempts > 0",
                    self.sql().leases
                ),
                &[],
            )
            .await
            .map_err(pg("count"))?
            .get(0);
        Ok(u64_of(n))
    }

    async fn leases_delete(&self, ids: &[String]) -> Result<u64, StorageError> {
        let c = self.client().await?;
        let st = c
            .prepare_cached(&format!(
                "DELETE FROM {} WHERE id = ANY($1)",
                self.sql().leases
            ))
            .await
            .map_err(pg("leases delete"))?;
        c.execute(&st, &[&ids]).await.map_err(pg("leases delete"))
    }

    async fn leases_claim_revoking(
        &self,
        ids: &[String],
        now: i64,
    ) -> Result<Vec<String>, StorageError> {
        let c = self.client().await?;
        // The same claim as leases_due: a row another server claimed (and whose claim has
        // not lapsed) is left to it; concurrent claims of one row serialise on its lock
        // and the loser's WHERE no longer matches.
        let st = c
            .prepare_cached(&format!(
                "UPDATE {} SET state = 2, expire_at = LEAST(expire_at, $2),
                    claim_owner = $3, claim_until = now() + make_interval(secs => $4)
                 WHERE id = ANY($1)
                   AND (claim_owner IS NULL OR claim_owner = $3 OR claim_until < now())
                 RETURNING id",
                self.sql().leases
            ))
            .await
            .map_err(pg("leases claim"))?;
        let rows = c
            .query(
                &st,
                &[&ids, &now, &self.shared.server_id, &(CLAIM_SECS as f64)],
            )
            .await
            .map_err(pg("leases claim"))?;
        Ok(rows.iter().map(|r| r.get::<_, String>(0)).collect())
    }

    async fn leases_mark_revoking(&self, ids: &[String], now: i64) -> Result<u64, StorageError> {
        let c = self.client().await?;
        let st = c
            .prepare_cached(&format!(
                "UPDATE {} SET state = 2, expire_at = LEAST(expire_at, $2) WHERE id = ANY($1)",
                self.sql().leases
            ))
            .await
            .map_err(pg("leases mark"))?;
        c.execute(&st, &[&ids, &now])
            .await
            .map_err(pg("leases mark"))
    }

    async fn leases_abandon_pending(&self, now: i64) -> Result<u64, StorageError> {
        // Only intents of this process (none at start) or of servers that are dead: a
        // live server's pending issuance is in flight, not abandoned.
        let c = self.client().await?;
        let (l, sv) = (&self.sql().leases, &self.sql().servers);
        c.execute(
            &format!(
                "UPDATE {l} SET state = 2, expire_at = LEAST(expire_at, $1)
                 WHERE state = 0 AND (owner IS NULL OR owner = $2 OR NOT EXISTS (
                   SELECT 1 FROM {sv} WHERE {sv}.id = {l}.owner
                   AND {sv}.heartbeat_at > now() - make_interval(secs => $3)))"
            ),
            &[&now, &self.shared.server_id, &(DEAD_AFTER_SECS as f64)],
        )
        .await
        .map_err(pg("leases abandon"))
    }
}

/// The entry operations themselves (the `Storage` methods add the hot-entry cache).
impl PgStorage {
    async fn get_uncached(&self, ns: &str, key: &str) -> Result<Option<Plain>, StorageError> {
        let c = self.client().await?;
        let st = c
            .prepare_cached(&format!(
                "SELECT value FROM {} WHERE ns = $1 AND key = $2",
                self.sql().entries
            ))
            .await
            .map_err(pg("get"))?;
        let row = c.query_opt(&st, &[&ns, &key]).await.map_err(pg("get"))?;
        row.map(|r| {
            let v: Vec<u8> = r.get(0);
            self.keyring().open(&entry_location(ns, key), &v)
        })
        .transpose()
    }

    async fn put_uncached(&self, ns: &str, key: &str, value: Vec<u8>) -> Result<(), StorageError> {
        let sealed = self.keyring().seal(&entry_location(ns, key), &value)?;
        drop(Plain::new(value));
        let c = self.client().await?;
        let st = c
            .prepare_cached(&format!(
                "INSERT INTO {} (ns, key, value) VALUES ($1, $2, $3)
                 ON CONFLICT (ns, key) DO UPDATE SET value = EXCLUDED.value",
                self.sql().entries
            ))
            .await
            .map_err(pg("put"))?;
        c.execute(&st, &[&ns, &key, &sealed])
            .await
            .map_err(pg("put"))?;
        Ok(())
    }

    async fn delete_uncached(&self, ns: &str, key: &str) -> Result<bool, StorageError> {
        let c = self.client().await?;
        let st = c
            .prepare_cached(&format!(
                "DELETE FROM {} WHERE ns = $1 AND key = $2",
                self.sql().entries
            ))
            .await
            .map_err(pg("delete"))?;
        Ok(c.execute(&st, &[&ns, &key]).await.map_err(pg("delete"))? > 0)
    }

    async fn modify_uncached(
        &self,
        ns: &str,
        key: &str,
        f: Modify,
    ) -> Result<Option<Plain>, StorageError> {
        let mut c = self.client().await?;
        let t = &self.sql().entries;
        let tx = c.transaction().await.map_err(pg("modify"))?;
        let lock_key = format!("{ns}\u{1f}{key}");
        tx.execute(
            "SELECT pg_advisory_xact_lock($1, hashtext($2))",
            &[&LOCK_MODIFY, &lock_key],
        )
        .await
        .map_err(pg("modify"))?;
        let loc = entry_location(ns, key);
        let current = tx
            .query_opt(
                &format!("SELECT value FROM {t} WHERE ns = $1 AND key = $2"),
                &[&ns, &key],
            )
            .await
            .map_err(pg("modify"))?;
        let plain = current
            .map(|r| self.keyring().open(&loc, &r.get::<_, Vec<u8>>(0)))
            .transpose()?;
        let out = match f(plain.as_deref().map(Vec::as_slice)).map_err(StorageError::Rejected)? {
            Some(new) => {
                let sealed = self.keyring().seal(&loc, &new)?;
                tx.execute(
                    &format!(
                        "INSERT INTO {t} (ns, key, value) VALUES ($1, $2, $3)
                         ON CONFLICT (ns, key) DO UPDATE SET value = EXCLUDED.value"
                    ),
                    &[&ns, &key, &sealed],
                )
                .await
                .map_err(pg("modify"))?;
                Some(Plain::new(new))
            }
            None => {
                tx.execute(
                    &format!("DELETE FROM {t} WHERE ns = $1 AND key = $2"),
                    &[&ns, &key],
                )
                .await
                .map_err(pg("modify"))?;
                None
            }
        };
        tx.commit().await.map_err(pg("modify"))?;
        Ok(out)
    }
}
