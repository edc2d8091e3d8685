//! Row conversions and small helpers shared by the `Storage` impl.

use super::*;

pub(super) fn entry_location(ns: &str, key: &str) -> String {
    format!("entries/{ns}/{key}")
}

pub(super) fn token_location(hash: &KeyedHash) -> String {
    format!("tokens/{}", hex::encode(hash.0))
}

pub(super) fn lease_location(id: &str) -> String {
    format!("leases/{id}")
}

pub(super) fn hash_from(v: Vec<u8>) -> Result<KeyedHash, StorageError> {
    <[u8; 32]>::try_from(v.as_slice())
        .map(KeyedHash)
        .map_err(|_| StorageError::Corrupt("token hash has the wrong length".into()))
}

pub(super) fn token_from_row(
    k: &Keyring,
    r: &tokio_postgres::Row,
) -> Result<StoredToken, StorageError> {
    let hash = hash_from(r.get(0))?;
    let sealed: Vec<u8> = r.get(5);
    let entry = k.open(&token_location(&hash), &sealed)?;
    Ok(StoredToken {
        hash,
        accessor_hash: hash_from(r.get(1))?,
        parent: r.get::<_, Option<Vec<u8>>>(2).map(hash_from).transpose()?,
        expire_at: r.get(3),
        uses_left: r.get(4),
        entry,
    })
}

pub(super) fn lease_from_row(
    k: &Keyring,
    r: &tokio_postgres::Row,
) -> Result<StoredLease, StorageError> {
    let id: String = r.get(0);
    let code: i16 = r.get(5);
    let state = LeaseState::from_code(i64::from(code))
        .ok_or_else(|| StorageError::Corrupt(format!("lease {id} has an unknown state {code}")))?;
    let attempts: i32 = r.get(6);
    let attempts = u32::try_from(attempts)
        .map_err(|_| StorageError::Corrupt(format!("lease {id} has an invalid attempt count")))?;
    let sealed: Vec<u8> = r.get(9);
    let entry = k.open(&lease_location(&id), &sealed)?;
    Ok(StoredLease {
        token: r.get::<_, Option<Vec<u8>>>(1).map(hash_from).transpose()?,
        issue_time: r.get(2),
        expire_at: r.get(3),
        max_expire_at: r.get(4),
        state,
        attempts,
        next_attempt_at: r.get(7),
        last_error: r.get(8),
        entry,
        id,
    })
}

pub(super) fn state_code(s: LeaseState) -> i16 {
    i16::try_from(s.code()).unwrap_or(i16::MAX)
}

pub(super) fn limit(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

pub(super) fn prefix_upper_bound(prefix: &str) -> Option<String> {
    let mut chars: Vec<char> = prefix.chars().collect();
    while let Some(c) = chars.pop() {
        if let Some(next) = char::from_u32(c as u32 + 1) {
            chars.push(next);
            return Some(chars.into_iter().collect());
        }
    }
    None
}

/// `WHERE` clause and parameters selecting `col` starting with `prefix` (as `$first`…).
pub(super) fn prefix_range(col: &str, prefix: &str, first: usize) -> (String, Vec<String>) {
    match prefix_upper_bound(prefix) {
        Some(upper) => (
            format!("{col} >= ${first} AND {col} < ${}", first + 1),
            vec![prefix.to_owned(), upper],
        ),
        None => (format!("{col} >= ${first}"), vec![prefix.to_owned()]),
    }
}

pub(super) fn u64_of(n: i64) -> u64 {
    u64::try_from(n).unwrap_or(0)
}
