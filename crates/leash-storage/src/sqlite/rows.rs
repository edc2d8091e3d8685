//! Record locations, row decoding and the SQL shared by the storage methods.

use rusqlite::{Connection, params};

use super::io;
use crate::barrier::{KeyedHash, Keyring};
use crate::{LeaseState, StorageError, StoredLease, StoredToken};

pub(super) fn entry_location(ns: &str, key: &str) -> String {
    format!("entries/{ns}/{key}")
}

pub(super) fn token_location(hash: &KeyedHash) -> String {
    format!("tokens/{}", hex::encode(hash.0))
}

pub(super) fn hash_from(v: Vec<u8>) -> Result<KeyedHash, StorageError> {
    <[u8; 32]>::try_from(v.as_slice())
        .map(KeyedHash)
        .map_err(|_| StorageError::Corrupt("token hash has the wrong length".into()))
}

pub(super) type TokenRow = (
    Vec<u8>,
    Vec<u8>,
    Option<Vec<u8>>,
    Option<i64>,
    Option<i64>,
    Vec<u8>,
);

pub(super) fn token_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<TokenRow> {
    Ok((
        r.get(0)?,
        r.get(1)?,
        r.get(2)?,
        r.get(3)?,
        r.get(4)?,
        r.get(5)?,
    ))
}

pub(super) fn token_from_row(k: &Keyring, row: TokenRow) -> Result<StoredToken, StorageError> {
    let (hash, acc, parent, expire_at, uses_left, sealed) = row;
    let hash = hash_from(hash)?;
    let entry = k.open(&token_location(&hash), &sealed)?;
    Ok(StoredToken {
        hash,
        accessor_hash: hash_from(acc)?,
        parent: parent.map(hash_from).transpose()?,
        expire_at,
        uses_left,
        entry,
    })
}

pub(super) const TOKEN_COLUMNS: &str = "hash, accessor_hash, parent, expire_at, uses_left, entry";

pub(super) fn lease_location(id: &str) -> String {
    format!("leases/{id}")
}

pub(super) const LEASE_COLUMNS: &str = "id, token, issue_time, expire_at, max_expire_at, state, attempts, next_attempt_at, last_error, entry";

/// A lease row as read, before its entry is opened.
pub(super) struct LeaseRow {
    id: String,
    token: Option<Vec<u8>>,
    issue_time: i64,
    expire_at: i64,
    max_expire_at: i64,
    state: i64,
    attempts: i64,
    next_attempt_at: i64,
    last_error: Option<String>,
    entry: Vec<u8>,
}

pub(super) fn lease_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<LeaseRow> {
    Ok(LeaseRow {
        id: r.get(0)?,
        token: r.get(1)?,
        issue_time: r.get(2)?,
        expire_at: r.get(3)?,
        max_expire_at: r.get(4)?,
        state: r.get(5)?,
        attempts: r.get(6)?,
        next_attempt_at: r.get(7)?,
        last_error: r.get(8)?,
        entry: r.get(9)?,
    })
}

pub(super) fn lease_from_row(k: &Keyring, row: LeaseRow) -> Result<StoredLease, StorageError> {
    let state = LeaseState::from_code(row.state).ok_or_else(|| {
        StorageError::Corrupt(format!(
            "lease {} has an unknown state {}",
            row.id, row.state
        ))
    })?;
    let attempts = u32::try_from(row.attempts).map_err(|_| {
        StorageError::Corrupt(format!("lease {} has an invalid attempt count", row.id))
    })?;
    let entry = k.open(&lease_location(&row.id), &row.entry)?;
    Ok(StoredLease {
        token: row.token.map(hash_from).transpose()?,
        issue_time: row.issue_time,
        expire_at: row.expire_at,
        max_expire_at: row.max_expire_at,
        state,
        attempts,
        next_attempt_at: row.next_attempt_at,
        last_error: row.last_error,
        entry,
        id: row.id,
    })
}

/// Leases due at `?1`, at most `?2`: two ordered, limited index scans (expired;
/// revoking but not yet expired — disjoint), merged. The retry time is in both indexes,
/// so leases waiting for their next attempt are skipped without reading their rows.
pub(super) fn leases_due_sql() -> String {
    format!(
        "SELECT {LEASE_COLUMNS} FROM (
           SELECT * FROM (SELECT {LEASE_COLUMNS} FROM leases INDEXED BY leases_expire
             WHERE expire_at <= ?1 AND next_attempt_at <= ?1
             ORDER BY expire_at, id LIMIT ?2)
           UNION ALL
           SELECT * FROM (SELECT {LEASE_COLUMNS} FROM leases INDEXED BY leases_revoking
             WHERE state = 2 AND expire_at > ?1 AND next_attempt_at <= ?1
             ORDER BY expire_at, id LIMIT ?2)
         ) ORDER BY expire_at, id LIMIT ?2"
    )
}

/// Leases failing their revocation, at most `?1`, from the partial `leases_failing` index.
pub(super) fn leases_failing_sql() -> String {
    format!(
        "SELECT {LEASE_COLUMNS} FROM leases WHERE attempts > 0 ORDER BY attempts DESC, id LIMIT ?1"
    )
}

/// Marks the leases of token `?1` for revocation, due at `?2` at the latest.
pub(super) const MARK_TOKEN_LEASES_REVOKING: &str =
    "UPDATE leases SET state = 2, expire_at = MIN(expire_at, ?2) WHERE token = ?1";

/// Runs a lease query and opens every row.
pub(super) fn query_leases(
    c: &Connection,
    k: &Keyring,
    sql: &str,
    params: impl rusqlite::Params,
) -> Result<Vec<StoredLease>, StorageError> {
    let mut st = c.prepare_cached(sql).map_err(io)?;
    let rows = st.query_map(params, lease_row).map_err(io)?;
    let mut out = Vec::new();
    for r in rows {
        out.push(lease_from_row(k, r.map_err(io)?)?);
    }
    Ok(out)
}

pub(super) fn prefix_upper_bound(prefix: &str) -> Option<String> {
    // The smallest string greater than every string starting with `prefix`.
    let mut chars: Vec<char> = prefix.chars().collect();
    while let Some(c) = chars.pop() {
        if let Some(next) = char::from_u32(c as u32 + 1) {
            chars.push(next);
            return Some(chars.into_iter().collect());
        }
    }
    None
}

pub(super) fn list_keys(
    c: &Connection,
    ns: &str,
    prefix: &str,
) -> Result<Vec<String>, StorageError> {
    let mut out = Vec::new();
    match prefix_upper_bound(prefix) {
        Some(upper) => {
            let mut st = c
                .prepare_cached(
                    "SELECT key FROM entries WHERE ns = ?1 AND key >= ?2 AND key < ?3 ORDER BY key",
                )
                .map_err(io)?;
            let rows = st
                .query_map(params![ns, prefix, upper], |r| r.get::<_, String>(0))
                .map_err(io)?;
            for r in rows {
                out.push(r.map_err(io)?);
            }
        }
        None => {
            let mut st = c
                .prepare_cached("SELECT key FROM entries WHERE ns = ?1 AND key >= ?2 ORDER BY key")
                .map_err(io)?;
            let rows = st
                .query_map(params![ns, prefix], |r| r.get::<_, String>(0))
                .map_err(io)?;
            for r in rows {
                out.push(r.map_err(io)?);
            }
        }
    }
    Ok(out)
}
