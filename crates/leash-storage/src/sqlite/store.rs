//! The [`Storage`] trait methods: entries, tokens and leases.

use async_trait::async_trait;
use rusqlite::{OptionalExtension, params};

use super::rows::*;
use super::{SqliteStorage, io};
use crate::barrier::{KeyedHash, Keyring};
use crate::{LeaseState, Modify, Plain, Storage, StorageError, StoredLease, StoredToken, TokenUse};

#[async_trait]
impl Storage for SqliteStorage {
    fn keyring(&self) -> &Keyring {
        &self.keyring
    }

    fn kind(&self) -> &'static str {
        "sqlite"
    }

    async fn get(&self, ns: &str, key: &str) -> Result<Option<Plain>, StorageError> {
        let (ns, key) = (ns.to_owned(), key.to_owned());
        self.read(move |c, k| {
            let v: Option<Vec<u8>> = c
                .prepare_cached("SELECT value FROM entries WHERE ns = ?1 AND key = ?2")
                .map_err(io)?
                .query_row(params![ns, key], |r| r.get(0))
                .optional()
                .map_err(io)?;
            v.map(|v| k.open(&entry_location(&ns, &key), &v))
                .transpose()
        })
        .await
    }

    async fn put(&self, ns: &str, key: &str, value: Vec<u8>) -> Result<(), StorageError> {
        let sealed = self.keyring.seal(&entry_location(ns, key), &value)?;
        drop(Plain::new(value));
        let (ns, key) = (ns.to_owned(), key.to_owned());
        self.write(move |c, _| {
            c.prepare_cached("INSERT OR REPLACE INTO entries (ns, key, value) VALUES (?1, ?2, ?3)")
                .map_err(io)?
                .execute(params![ns, key, sealed])
                .map_err(io)?;
            Ok(())
        })
        .await
    }

    async fn delete(&self, ns: &str, key: &str) -> Result<bool, StorageError> {
        let (ns, key) = (ns.to_owned(), key.to_owned());
        self.write(move |c, _| {
            let n = c
                .prepare_cached("DELETE FROM entries WHERE ns = ?1 AND key = ?2")
                .map_err(io)?
                .execute(params![ns, key])
                .map_err(io)?;
            Ok(n > 0)
        })
        .await
    }

    async fn list(&self, ns: &str, prefix: &str) -> Result<Vec<String>, StorageError> {
        let (ns, prefix) = (ns.to_owned(), prefix.to_owned());
        self.read(move |c, _| list_keys(c, &ns, &prefix)).await
    }

    async fn namespaces(&self) -> Result<Vec<String>, StorageError> {
        self.read(|c, _| {
            let mut st = c
                .prepare_cached("SELECT DISTINCT ns FROM entries ORDER BY ns")
                .map_err(io)?;
            let rows = st.query_map([], |r| r.get::<_, String>(0)).map_err(io)?;
            let mut out = Vec::new();
            for r in rows {
                out.push(r.map_err(io)?);
            }
            Ok(out)
        })
        .await
    }

    async fn delete_prefix(&self, ns: &str, prefix: &str) -> Result<u64, StorageError> {
        let (ns, prefix) = (ns.to_owned(), prefix.to_owned());
        self.write(move |c, _| {
            let keys = list_keys(c, &ns, &prefix)?;
            let mut st = c
                .prepare_cached("DELETE FROM entries WHERE ns = ?1 AND key = ?2")
                .map_err(io)?;
            for k in &keys {
                st.execute(params![ns, k]).map_err(io)?;
            }
            Ok(keys.len() as u64)
        })
        .await
    }

    async fn modify(&self, ns: &str, key: &str, f: Modify) -> Result<Option<Plain>, StorageError> {
        let (ns, key) = (ns.to_owned(), key.to_owned());
        self.write(move |c, k| {
            let loc = entry_location(&ns, &key);
            let current: Option<Vec<u8>> = c
                .prepare_cached("SELECT value FROM entries WHERE ns = ?1 AND key = ?2")
                .map_err(io)?
                .query_row(params![ns, key], |r| r.get(0))
                .optional()
                .map_err(io)?;
            let plain = current.map(|v| k.open(&loc, &v)).transpose()?;
            match f(plain.as_deref().map(Vec::as_slice)).map_err(StorageError::Rejected)? {
                Some(new) => {
                    let sealed = k.seal(&loc, &new)?;
                    c.prepare_cached(
                        "INSERT OR REPLACE INTO entries (ns, key, value) VALUES (?1, ?2, ?3)",
                    )
                    .map_err(io)?
                    .execute(params![ns, key, sealed])
                    .map_err(io)?;
                    Ok(Some(Plain::new(new)))
                }
                None => {
                    c.prepare_cached("DELETE FROM entries WHERE ns = ?1 AND key = ?2")
                        .map_err(io)?
                        .execute(params![ns, key])
                        .map_err(io)?;
                    Ok(None)
                }
            }
        })
        .await
    }

    async fn token_insert(&self, t: StoredToken) -> Result<(), StorageError> {
        let sealed = self.keyring.seal(&token_location(&t.hash), &t.entry)?;
        self.write(move |c, _| {
            c.prepare_cached(
                "INSERT INTO tokens (hash, accessor_hash, parent, expire_at, uses_left, entry) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            )
            .map_err(io)?
            .execute(params![
                t.hash.0.as_slice(),
                t.accessor_hash.0.as_slice(),
                t.parent.map(|p| p.0.to_vec()),
                t.expire_at,
                t.uses_left,
                sealed
            ])
            .map_err(io)?;
            Ok(())
        })
        .await
    }

    async fn token_get(&self, hash: KeyedHash) -> Result<Option<StoredToken>, StorageError> {
        self.read(move |c, k| {
            let row = c
                .prepare_cached(&format!(
                    "SELECT {TOKEN_COLUMNS} FROM tokens WHERE hash = ?1"
                ))
                .map_err(io)?
                .query_row(params![hash.0.as_slice()], token_row)
                .optional()
                .map_err(io)?;
            row.map(|r| token_from_row(k, r)).transpose()
        })
        .await
    }

    async fn token_by_accessor(
        &self,
        accessor_hash: KeyedHash,
    ) -> Result<Option<StoredToken>, StorageError> {
        self.read(move |c, k| {
            let row = c
                .prepare_cached(&format!(
                    "SELECT {TOKEN_COLUMNS} FROM tokens WHERE accessor_hash = ?1"
                ))
                .map_err(io)?
                .query_row(params![accessor_hash.0.as_slice()], token_row)
                .optional()
                .map_err(io)?;
            row.map(|r| token_from_row(k, r)).transpose()
        })
        .await
    }

    async fn token_update(
        &self,
        hash: KeyedHash,
        expire_at: Option<i64>,
        entry: Vec<u8>,
    ) -> Result<bool, StorageError> {
        let sealed = self.keyring.seal(&token_location(&hash), &entry)?;
        drop(Plain::new(entry));
        self.write(move |c, _| {
            let n = c
                .prepare_cached("UPDATE tokens SET expire_at = ?2, entry = ?3 WHERE hash = ?1")
                .map_err(io)?
                .execute(params![hash.0.as_slice(), expire_at, sealed])
                .map_err(io)?;
            Ok(n > 0)
        })
        .await
    }

    async fn token_use(&self, hash: KeyedHash) -> Result<TokenUse, StorageError> {
        self.write(move |c, _| {
            let left: Option<Option<i64>> = c
                .prepare_cached(
                    "UPDATE tokens SET uses_left = uses_left - 1 WHERE hash = ?1 AND uses_left > 0 RETURNING uses_left",
                )
                .map_err(io)?
                .query_row(params![hash.0.as_slice()], |r| r.get(0))
                .optional()
                .map_err(io)?;
            if let Some(Some(n)) = left {
                return Ok(TokenUse::Remaining(n));
            }
            let current: Option<Option<i64>> = c
                .prepare_cached("SELECT uses_left FROM tokens WHERE hash = ?1")
                .map_err(io)?
                .query_row(params![hash.0.as_slice()], |r| r.get(0))
                .optional()
                .map_err(io)?;
            Ok(match current {
                Some(None) => TokenUse::Unlimited,
                _ => TokenUse::Exhausted,
            })
        })
        .await
    }

    async fn token_delete_tree(
        &self,
        hash: KeyedHash,
        orphan_children: bool,
        now: i64,
    ) -> Result<Vec<StoredToken>, StorageError> {
        self.write(move |c, k| {
            let rows: Vec<TokenRow> = if orphan_children {
                c.prepare_cached("UPDATE tokens SET parent = NULL WHERE parent = ?1")
                    .map_err(io)?
                    .execute(params![hash.0.as_slice()])
                    .map_err(io)?;
                let mut st = c
                    .prepare_cached(&format!(
                        "SELECT {TOKEN_COLUMNS} FROM tokens WHERE hash = ?1"
                    ))
                    .map_err(io)?;
                let r = st
                    .query_map(params![hash.0.as_slice()], token_row)
                    .map_err(io)?;
                r.collect::<Result<_, _>>().map_err(io)?
            } else {
                let mut st = c
                    .prepare_cached(&format!(
                        "WITH RECURSIVE sub(h, depth) AS (
                           SELECT hash, 0 FROM tokens WHERE hash = ?1
                           UNION ALL
                           SELECT t.hash, sub.depth + 1 FROM tokens t JOIN sub ON t.parent = sub.h
                         )
                         SELECT {} FROM tokens JOIN sub ON tokens.hash = sub.h ORDER BY sub.depth",
                        TOKEN_COLUMNS
                            .split(", ")
                            .map(|col| format!("tokens.{col}"))
                            .collect::<Vec<_>>()
                            .join(", ")
                    ))
                    .map_err(io)?;
                let r = st
                    .query_map(params![hash.0.as_slice()], token_row)
                    .map_err(io)?;
                r.collect::<Result<_, _>>().map_err(io)?
            };
            let mut del = c
                .prepare_cached("DELETE FROM tokens WHERE hash = ?1")
                .map_err(io)?;
            // The leases die with their token: marked (never deleted) in this same
            // transaction, so none outlives the revocation unnoticed.
            let mut mark = c.prepare_cached(MARK_TOKEN_LEASES_REVOKING).map_err(io)?;
            let mut out = Vec::with_capacity(rows.len());
            for row in rows {
                del.execute(params![row.0.as_slice()]).map_err(io)?;
                mark.execute(params![row.0.as_slice(), now]).map_err(io)?;
                out.push(token_from_row(k, row)?);
            }
            Ok(out)
        })
        .await
    }

    async fn tokens_expired(&self, now: i64, limit: usize) -> Result<Vec<KeyedHash>, StorageError> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.read(move |c, _| {
            let mut st = c
                .prepare_cached(
                    "SELECT hash FROM tokens WHERE expire_at IS NOT NULL AND expire_at <= ?1 ORDER BY expire_at LIMIT ?2",
                )
                .map_err(io)?;
            let rows = st.query_map(params![now, limit], |r| r.get::<_, Vec<u8>>(0)).map_err(io)?;
            let mut out = Vec::new();
            for r in rows {
                out.push(hash_from(r.map_err(io)?)?);
            }
            Ok(out)
        })
        .await
    }

    async fn tokens_live_page(
        &self,
        now: i64,
        after: Option<KeyedHash>,
        limit: usize,
    ) -> Result<Vec<StoredToken>, StorageError> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        // The empty blob sorts before every hash.
        let after: Vec<u8> = after.map(|h| h.0.to_vec()).unwrap_or_default();
        self.read(move |c, k| {
            let mut st = c
                .prepare_cached(&format!(
                    "SELECT {TOKEN_COLUMNS} FROM tokens WHERE hash > ?1 \
                     AND (expire_at IS NULL OR expire_at > ?2) ORDER BY hash LIMIT ?3"
                ))
                .map_err(io)?;
            let rows = st
                .query_map(params![after.as_slice(), now, limit], token_row)
                .map_err(io)?;
            let mut out = Vec::new();
            for r in rows {
                out.push(token_from_row(k, r.map_err(io)?)?);
            }
            Ok(out)
        })
        .await
    }

    async fn token_count(&self) -> Result<u64, StorageError> {
        self.read(|c, _| {
            let n: i64 = c
                .query_row("SELECT COUNT(*) FROM tokens", [], |r| r.get(0))
                .map_err(io)?;
            Ok(u64::try_from(n).unwrap_or(0))
        })
        .await
    }

    async fn lease_insert(&self, l: StoredLease) -> Result<(), StorageError> {
        let sealed = self.keyring.seal(&lease_location(&l.id), &l.entry)?;
        self.write(move |c, _| {
            if let Some(t) = &l.token {
                let live = c
                    .prepare_cached("SELECT 1 FROM tokens WHERE hash = ?1")
                    .map_err(io)?
                    .query_row(params![t.0.as_slice()], |_| Ok(()))
                    .optional()
                    .map_err(io)?
                    .is_some();
                if !live {
                    return Err(StorageError::Rejected(
                        "the token that would own this lease has been revoked".into(),
                    ));
                }
            }
            c.prepare_cached(&format!(
                "INSERT INTO leases ({LEASE_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)"
            ))
            .map_err(io)?
            .execute(params![
                l.id,
                l.token.map(|t| t.0.to_vec()),
                l.issue_time,
                l.expire_at,
                l.max_expire_at,
                l.state.code(),
                i64::from(l.attempts),
                l.next_attempt_at,
                l.last_error,
                sealed
            ])
            .map_err(io)?;
            Ok(())
        })
        .await
    }

    async fn lease_get(&self, id: &str) -> Result<Option<StoredLease>, StorageError> {
        let id = id.to_owned();
        self.read(move |c, k| {
            let row = c
                .prepare_cached(&format!("SELECT {LEASE_COLUMNS} FROM leases WHERE id = ?1"))
                .map_err(io)?
                .query_row(params![id], lease_row)
                .optional()
                .map_err(io)?;
            row.map(|r| lease_from_row(k, r)).transpose()
        })
        .await
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
                let s = self.keyring.seal(&lease_location(id), &e)?;
                drop(Plain::new(e));
                Some(s)
            }
            None => None,
        };
        let id = id.to_owned();
        self.write(move |c, _| {
            let current: Option<i64> = c
                .prepare_cached("SELECT state FROM leases WHERE id = ?1")
                .map_err(io)?
                .query_row(params![id], |r| r.get(0))
                .optional()
                .map_err(io)?;
            let Some(current) = current else {
                return Ok(false);
            };
            if current == LeaseState::Revoking.code() && state != LeaseState::Revoking {
                return Err(StorageError::Rejected(
                    format!(
                        "lease {id} is being revoked and cannot become {}",
                        state.as_str()
                    )
                    .into(),
                ));
            }
            c.prepare_cached(
                "UPDATE leases SET state = ?2, expire_at = ?3, entry = COALESCE(?4, entry) WHERE id = ?1",
            )
            .map_err(io)?
            .execute(params![id, state.code(), expire_at, sealed])
            .map_err(io)?;
            Ok(true)
        })
        .await
    }

    async fn lease_delete(&self, id: &str) -> Result<bool, StorageError> {
        let id = id.to_owned();
        self.write(move |c, _| {
            let n = c
                .prepare_cached("DELETE FROM leases WHERE id = ?1")
                .map_err(io)?
                .execute(params![id])
                .map_err(io)?;
            Ok(n > 0)
        })
        .await
    }

    async fn leases_due(&self, now: i64, limit: usize) -> Result<Vec<StoredLease>, StorageError> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let sql = leases_due_sql();
        self.read(move |c, k| query_leases(c, k, &sql, params![now, limit]))
            .await
    }

    async fn lease_record_failure(
        &self,
        id: &str,
        attempts: u32,
        next_attempt_at: i64,
        error: &str,
    ) -> Result<bool, StorageError> {
        let (id, error) = (id.to_owned(), error.to_owned());
        self.write(move |c, _| {
            let n = c
                .prepare_cached(
                    "UPDATE leases SET attempts = ?2, next_attempt_at = ?3, last_error = ?4 WHERE id = ?1",
                )
                .map_err(io)?
                .execute(params![id, i64::from(attempts), next_attempt_at, error])
                .map_err(io)?;
            Ok(n > 0)
        })
        .await
    }

    async fn lease_ids_with_prefix(&self, prefix: &str) -> Result<Vec<String>, StorageError> {
        let prefix = prefix.to_owned();
        self.read(move |c, _| {
            let mut out = Vec::new();
            let mut push = |rows: rusqlite::MappedRows<'_, _>| -> Result<(), StorageError> {
                for r in rows {
                    out.push(r.map_err(io)?);
                }
                Ok(())
            };
            let id = |r: &rusqlite::Row<'_>| r.get::<_, String>(0);
            match prefix_upper_bound(&prefix) {
                Some(upper) => {
                    let mut st = c
                        .prepare_cached(
                            "SELECT id FROM leases WHERE id >= ?1 AND id < ?2 ORDER BY id",
                        )
                        .map_err(io)?;
                    push(st.query_map(params![prefix, upper], id).map_err(io)?)?;
                }
                None => {
                    let mut st = c
                        .prepare_cached("SELECT id FROM leases WHERE id >= ?1 ORDER BY id")
                        .map_err(io)?;
                    push(st.query_map(params![prefix], id).map_err(io)?)?;
                }
            }
            Ok(out)
        })
        .await
    }

    async fn leases_failing(&self, limit: usize) -> Result<Vec<StoredLease>, StorageError> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let sql = leases_failing_sql();
        self.read(move |c, k| query_leases(c, k, &sql, params![limit]))
            .await
    }

    async fn leases_delete(&self, ids: &[String]) -> Result<u64, StorageError> {
        let ids = ids.to_vec();
        self.write(move |c, _| {
            let mut st = c
                .prepare_cached("DELETE FROM leases WHERE id = ?1")
                .map_err(io)?;
            let mut n = 0u64;
            for id in &ids {
                n += u64::try_from(st.execute(params![id]).map_err(io)?).unwrap_or(0);
            }
            Ok(n)
        })
        .await
    }

    async fn leases_mark_revoking(&self, ids: &[String], now: i64) -> Result<u64, StorageError> {
        // The same statement: on a store only this process opens, marking is claiming.
        let marked = self.leases_claim_revoking(ids, now).await?;
        Ok(u64::try_from(marked.len()).unwrap_or(u64::MAX))
    }

    async fn leases_claim_revoking(
        &self,
        ids: &[String],
        now: i64,
    ) -> Result<Vec<String>, StorageError> {
        // One process owns this file: its in-process claims are the only ones.
        let ids = ids.to_vec();
        self.write(move |c, _| {
            let mut st = c
                .prepare_cached(
                    "UPDATE leases SET state = 2, expire_at = MIN(expire_at, ?2) WHERE id = ?1",
                )
                .map_err(io)?;
            let mut out = Vec::with_capacity(ids.len());
            for id in ids {
                if st.execute(params![id, now]).map_err(io)? > 0 {
                    out.push(id);
                }
            }
            Ok(out)
        })
        .await
    }

    async fn leases_abandon_pending(&self, now: i64) -> Result<u64, StorageError> {
        self.write(move |c, _| {
            let n = c
                .prepare_cached(
                    "UPDATE leases INDEXED BY leases_pending \
                     SET state = 2, expire_at = MIN(expire_at, ?1) WHERE state = 0",
                )
                .map_err(io)?
                .execute(params![now])
                .map_err(io)?;
            Ok(u64::try_from(n).unwrap_or(0))
        })
        .await
    }

    async fn leases_failing_count(&self) -> Result<u64, StorageError> {
        self.read(|c, _| {
            let n: i64 = c
                .query_row(
                    "SELECT COUNT(*) FROM leases INDEXED BY leases_failing WHERE attempts > 0",
                    [],
                    |r| r.get(0),
                )
                .map_err(io)?;
            Ok(u64::try_from(n).unwrap_or(0))
        })
        .await
    }

    async fn lease_count(&self) -> Result<u64, StorageError> {
        self.read(|c, _| {
            let n: i64 = c
                .query_row("SELECT COUNT(*) FROM leases", [], |r| r.get(0))
                .map_err(io)?;
            Ok(u64::try_from(n).unwrap_or(0))
        })
        .await
    }
}
