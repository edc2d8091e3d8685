//! The storage conformance suite: behaviour every [`Storage`] backend must show, one
//! public async function per check, each run on a fresh, empty store. A backend's tests
//! declare one `#[tokio::test]` per check with [`conformance_tests!`](crate::conformance_tests)
//! (the SQLite backend does so in this crate; the PostgreSQL backend will use the same
//! macro). Available to other crates with the `testing` feature.

// Test-support code: a failed expectation should panic with its location, like a test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::{KeyedHash, LeaseState, Storage, StorageError, StoredLease, StoredToken, TokenUse};
use zeroize::Zeroizing;

/// Declares one `#[tokio::test]` per conformance check. `$open` is an async fn returning
/// `(guard, store)`: a fresh, empty store and whatever must live as long as it (e.g. its
/// temporary directory). The calling crate needs `tokio` with its `macros` feature.
///
/// ```ignore
/// async fn open_fresh() -> (tempfile::TempDir, MyStorage) { … }
/// mod conformance {
///     leash_storage::conformance_tests!(super::open_fresh);
/// }
/// ```
#[macro_export]
macro_rules! conformance_tests {
    ($open:path) => {
        $crate::conformance_tests!(@checks $open;
            entries, modify, tokens, tokens_live_pages, token_tree, token_uses, leases,
            leases_due, lease_failures_and_prefixes, lease_token_cascade, lease_batches);
    };
    (@checks $open:path; $($check:ident),+) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $check() {
                let (_guard, store) = $open().await;
                $crate::conformance::$check(&store).await;
            }
        )+
    };
}

fn token(
    s: &dyn Storage,
    id: &str,
    parent: Option<&str>,
    expire_at: Option<i64>,
    uses: Option<i64>,
) -> StoredToken {
    let k = s.keyring();
    StoredToken {
        hash: k.token_hash(id),
        accessor_hash: k.token_hash(&format!("acc-{id}")),
        parent: parent.map(|p| k.token_hash(p)),
        expire_at,
        uses_left: uses,
        entry: Zeroizing::new(format!("entry of {id}").into_bytes()),
    }
}

/// Plain entries: get, put, overwrite, list by prefix (sorted), delete, delete by prefix; namespaces are separate.
pub async fn entries(s: &dyn Storage) {
    assert!(s.get("kv", "a").await.unwrap().is_none());
    s.put("kv", "a", b"1".to_vec()).await.unwrap();
    s.put("kv", "a/b", b"2".to_vec()).await.unwrap();
    s.put("kv", "a/c", b"3".to_vec()).await.unwrap();
    s.put("kv", "b", b"4".to_vec()).await.unwrap();
    s.put("other", "a/x", b"5".to_vec()).await.unwrap();
    assert_eq!(s.get("kv", "a").await.unwrap().unwrap().as_slice(), b"1");
    assert_eq!(s.list("kv", "a/").await.unwrap(), vec!["a/b", "a/c"]);
    assert_eq!(
        s.list("kv", "").await.unwrap(),
        vec!["a", "a/b", "a/c", "b"]
    );
    s.put("kv", "a", b"changed".to_vec()).await.unwrap();
    assert_eq!(
        s.get("kv", "a").await.unwrap().unwrap().as_slice(),
        b"changed"
    );
    assert!(s.delete("kv", "b").await.unwrap());
    assert!(!s.delete("kv", "b").await.unwrap());
    assert_eq!(s.delete_prefix("kv", "a/").await.unwrap(), 2);
    assert_eq!(s.list("kv", "").await.unwrap(), vec!["a"]);
    assert_eq!(
        s.list("other", "").await.unwrap(),
        vec!["a/x"],
        "namespaces are separate"
    );
    assert_eq!(s.namespaces().await.unwrap(), vec!["kv", "other"]);
}

/// Read-modify-write of one entry (`modify`) sees the current value and stores the result atomically.
pub async fn modify(s: &dyn Storage) {
    let v = s
        .modify(
            "m",
            "k",
            Box::new(|cur| {
                assert!(cur.is_none());
                Ok(Some(b"1".to_vec()))
            }),
        )
        .await
        .unwrap();
    assert_eq!(v.unwrap().as_slice(), b"1");
    let e = s
        .modify("m", "k", Box::new(|_| Err("cas mismatch".into())))
        .await
        .unwrap_err();
    assert!(matches!(e, StorageError::Rejected(ref m) if m.to_string() == "cas mismatch"));
    assert_eq!(
        s.get("m", "k").await.unwrap().unwrap().as_slice(),
        b"1",
        "rejected change left it alone"
    );
    // Concurrent increments are serialised.
    let mut tasks = Vec::new();
    for _ in 0..50 {
        tasks.push(s.modify(
            "m",
            "k",
            Box::new(|cur| {
                let n: u64 = std::str::from_utf8(cur.unwrap_or(b"0"))
                    .unwrap()
                    .parse()
                    .unwrap();
                Ok(Some((n + 1).to_string().into_bytes()))
            }),
        ));
    }
    for t in tasks {
        t.await.unwrap();
    }
    assert_eq!(s.get("m", "k").await.unwrap().unwrap().as_slice(), b"51");
    assert!(
        s.modify("m", "k", Box::new(|_| Ok(None)))
            .await
            .unwrap()
            .is_none()
    );
    assert!(s.get("m", "k").await.unwrap().is_none());
}

/// Tokens by keyed hash: insert (a duplicate is a conflict), look up by hash and by
/// accessor hash, update.
pub async fn tokens(s: &dyn Storage) {
    let t = token(s, "t1", None, Some(100), None);
    s.token_insert(t.clone()).await.unwrap();
    let e = s.token_insert(t.clone()).await.unwrap_err();
    assert!(matches!(e, StorageError::Conflict(_)), "{e}");
    let got = s.token_get(t.hash).await.unwrap().unwrap();
    assert_eq!(got.entry.as_slice(), b"entry of t1");
    assert_eq!(got.expire_at, Some(100));
    let by_acc = s.token_by_accessor(t.accessor_hash).await.unwrap().unwrap();
    assert!(by_acc.hash.ct_eq(&t.hash));
    assert!(
        s.token_update(t.hash, Some(200), b"renewed".to_vec())
            .await
            .unwrap()
    );
    let got = s.token_get(t.hash).await.unwrap().unwrap();
    assert_eq!(
        (got.expire_at, got.entry.as_slice()),
        (Some(200), b"renewed".as_slice())
    );
    s.token_insert(token(s, "t2", None, Some(50), None))
        .await
        .unwrap();
    s.token_insert(token(s, "t3", None, None, None))
        .await
        .unwrap();
    let expired = s.tokens_expired(150, 10).await.unwrap();
    assert_eq!(expired, vec![s.keyring().token_hash("t2")]);
    assert_eq!(s.token_count().await.unwrap(), 3);
    for id in ["t1", "t2", "t3"] {
        let h = s.keyring().token_hash(id);
        assert_eq!(s.token_delete_tree(h, false, 0).await.unwrap().len(), 1);
    }
    assert!(s.token_get(t.hash).await.unwrap().is_none());
    assert!(!s.token_update(t.hash, None, vec![]).await.unwrap());
}

/// A walk over the live tokens, page by page, in hash order, skipping expired ones.
pub async fn tokens_live_pages(s: &dyn Storage) {
    let names: Vec<String> = (0..7).map(|i| format!("live-{i}")).collect();
    for (i, n) in names.iter().enumerate() {
        // Three expire at 100 (gone at 150), the others later or never.
        let exp = match i % 3 {
            0 => Some(100),
            1 => Some(1000),
            _ => None,
        };
        s.token_insert(token(s, n, None, exp, None)).await.unwrap();
    }
    let mut seen = Vec::new();
    let mut after = None;
    loop {
        let page = s.tokens_live_page(150, after, 2).await.unwrap();
        assert!(page.len() <= 2);
        let Some(last) = page.last() else { break };
        after = Some(last.hash);
        seen.extend(page);
    }
    let mut want: Vec<KeyedHash> = names
        .iter()
        .enumerate()
        .filter(|(i, _)| i % 3 != 0)
        .map(|(_, n)| s.keyring().token_hash(n))
        .collect();
    want.sort_by_key(|a| a.0);
    let got: Vec<KeyedHash> = seen.iter().map(|t| t.hash).collect();
    assert_eq!(got.len(), want.len());
    assert!(
        got.iter().zip(&want).all(|(a, b)| a.ct_eq(b)),
        "hash order, live only"
    );
    for t in &seen {
        assert!(
            t.entry.as_slice().starts_with(b"entry of live-"),
            "unsealed"
        );
    }
    assert!(s.tokens_live_page(150, None, 0).await.unwrap().is_empty());
    for n in &names {
        s.token_delete_tree(s.keyring().token_hash(n), false, 0)
            .await
            .unwrap();
    }
}

/// Token parents and children: revoking a token revokes its descendants.
pub async fn token_tree(s: &dyn Storage) {
    // root -> a -> b -> c ; root -> d
    for (id, parent) in [
        ("root", None),
        ("a", Some("root")),
        ("b", Some("a")),
        ("c", Some("b")),
        ("d", Some("root")),
    ] {
        s.token_insert(token(s, id, parent, None, None))
            .await
            .unwrap();
    }
    let k = s.keyring();
    let gone = s
        .token_delete_tree(k.token_hash("a"), false, 0)
        .await
        .unwrap();
    let ids: Vec<_> = gone.iter().map(|t| t.hash).collect();
    assert_eq!(
        ids,
        vec![k.token_hash("a"), k.token_hash("b"), k.token_hash("c")],
        "parent first"
    );
    assert!(s.token_get(k.token_hash("d")).await.unwrap().is_some());
    // Orphaning: revoking root with orphan_children keeps d, as an orphan.
    let gone = s
        .token_delete_tree(k.token_hash("root"), true, 0)
        .await
        .unwrap();
    assert_eq!(gone.len(), 1);
    let d = s.token_get(k.token_hash("d")).await.unwrap().unwrap();
    assert!(d.parent.is_none());
    s.token_delete_tree(k.token_hash("d"), false, 0)
        .await
        .unwrap();
    assert!(
        s.token_delete_tree(k.token_hash("nope"), false, 0)
            .await
            .unwrap()
            .is_empty()
    );
}

/// Limited-use tokens: each use is counted once, the last one consumes the token.
pub async fn token_uses(s: &dyn Storage) {
    s.token_insert(token(s, "u", None, None, Some(2)))
        .await
        .unwrap();
    s.token_insert(token(s, "unl", None, None, None))
        .await
        .unwrap();
    let k = s.keyring();
    assert_eq!(
        s.token_use(k.token_hash("u")).await.unwrap(),
        TokenUse::Remaining(1)
    );
    assert_eq!(
        s.token_use(k.token_hash("u")).await.unwrap(),
        TokenUse::Remaining(0)
    );
    assert_eq!(
        s.token_use(k.token_hash("u")).await.unwrap(),
        TokenUse::Exhausted
    );
    assert_eq!(
        s.token_use(k.token_hash("unl")).await.unwrap(),
        TokenUse::Unlimited
    );
    assert_eq!(
        s.token_use(k.token_hash("missing")).await.unwrap(),
        TokenUse::Exhausted
    );
    s.token_delete_tree(k.token_hash("u"), false, 0)
        .await
        .unwrap();
    s.token_delete_tree(k.token_hash("unl"), false, 0)
        .await
        .unwrap();
}

fn lease(
    s: &dyn Storage,
    id: &str,
    token: Option<&str>,
    expire_at: i64,
    state: LeaseState,
) -> StoredLease {
    StoredLease {
        id: id.to_owned(),
        token: token.map(|t| s.keyring().token_hash(t)),
        issue_time: 10,
        expire_at,
        max_expire_at: expire_at + 1000,
        state,
        attempts: 0,
        next_attempt_at: 0,
        last_error: None,
        entry: Zeroizing::new(format!("entry of {id}").into_bytes()),
    }
}

fn ids(leases: &[StoredLease]) -> Vec<&str> {
    leases.iter().map(|l| l.id.as_str()).collect()
}

async fn delete_all_leases(s: &dyn Storage) {
    for id in s.lease_ids_with_prefix("").await.unwrap() {
        assert!(s.lease_delete(&id).await.unwrap());
    }
    assert_eq!(s.lease_count().await.unwrap(), 0);
}

/// Leases: insert, read, state changes and deletion.
pub async fn leases(s: &dyn Storage) {
    assert_eq!(s.lease_count().await.unwrap(), 0);
    let id = "database/creds/ro/abc";
    assert!(s.lease_get(id).await.unwrap().is_none());
    s.lease_insert(lease(s, id, None, 100, LeaseState::Pending))
        .await
        .unwrap();
    let e = s
        .lease_insert(lease(s, id, None, 999, LeaseState::Active))
        .await
        .unwrap_err();
    assert!(matches!(e, StorageError::Conflict(_)), "{e}");
    let got = s.lease_get(id).await.unwrap().unwrap();
    assert_eq!(got.id, id);
    assert_eq!(
        (got.issue_time, got.expire_at, got.max_expire_at, got.state),
        (10, 100, 1100, LeaseState::Pending),
        "the conflicting insert changed nothing"
    );
    assert_eq!((got.attempts, got.next_attempt_at), (0, 0));
    assert!(got.token.is_none() && got.last_error.is_none());
    assert_eq!(got.entry.as_slice(), b"entry of database/creds/ro/abc");

    // Activate with a new entry, then renew keeping the entry.
    assert!(
        s.lease_update(id, LeaseState::Active, 200, Some(b"created".to_vec()))
            .await
            .unwrap()
    );
    assert!(
        s.lease_update(id, LeaseState::Active, 300, None)
            .await
            .unwrap()
    );
    let got = s.lease_get(id).await.unwrap().unwrap();
    assert_eq!(
        (got.state, got.expire_at, got.entry.as_slice()),
        (LeaseState::Active, 300, b"created".as_slice())
    );
    assert_eq!(got.max_expire_at, 1100, "max expiry is fixed at issue");

    // Revoking is sticky.
    assert!(
        s.lease_update(id, LeaseState::Revoking, 300, None)
            .await
            .unwrap()
    );
    for back in [LeaseState::Active, LeaseState::Pending] {
        let e = s.lease_update(id, back, 400, None).await.unwrap_err();
        assert!(matches!(e, StorageError::Rejected(_)), "{e}");
    }
    let got = s.lease_get(id).await.unwrap().unwrap();
    assert_eq!((got.state, got.expire_at), (LeaseState::Revoking, 300));
    assert!(
        s.lease_update(id, LeaseState::Revoking, 250, None)
            .await
            .unwrap()
    );
    assert_eq!(s.lease_count().await.unwrap(), 1);

    assert!(
        !s.lease_update("missing", LeaseState::Active, 1, None)
            .await
            .unwrap()
    );
    assert!(s.lease_delete(id).await.unwrap());
    assert!(!s.lease_delete(id).await.unwrap());
    assert!(s.lease_get(id).await.unwrap().is_none());
    assert_eq!(s.lease_count().await.unwrap(), 0);
}

/// Due leases: which are returned (expired, pending past their time, backing off) and in
/// what order.
pub async fn leases_due(s: &dyn Storage) {
    for (id, exp, state) in [
        ("l/expired-100", 100, LeaseState::Active),
        ("l/expired-50", 50, LeaseState::Active),
        ("l/pending-80", 80, LeaseState::Pending),
        ("l/pending-300", 300, LeaseState::Pending),
        ("l/live-400", 400, LeaseState::Active),
        ("l/revoking-500", 500, LeaseState::Active),
        ("l/backoff-90", 90, LeaseState::Active),
        ("l/tie-100", 100, LeaseState::Active),
    ] {
        s.lease_insert(lease(s, id, None, exp, state))
            .await
            .unwrap();
    }
    // Asked to revoke before its expiry.
    assert!(
        s.lease_update("l/revoking-500", LeaseState::Revoking, 500, None)
            .await
            .unwrap()
    );
    // A failed revocation waits for its next attempt.
    assert!(
        s.lease_record_failure("l/backoff-90", 1, 250, "connection refused")
            .await
            .unwrap()
    );

    assert_eq!(
        ids(&s.leases_due(40, 100).await.unwrap()),
        vec!["l/revoking-500"],
        "nothing expired yet; a revoking lease is due at once"
    );
    let due = s.leases_due(200, 100).await.unwrap();
    assert_eq!(
        ids(&due),
        vec![
            "l/expired-50",
            "l/pending-80",
            "l/expired-100",
            "l/tie-100",
            "l/revoking-500"
        ],
        "expired (pending included) or revoking, earliest expiry first, backoff respected"
    );
    assert_eq!(due[1].state, LeaseState::Pending);
    assert_eq!(due[0].entry.as_slice(), b"entry of l/expired-50");
    assert_eq!(
        ids(&s.leases_due(200, 2).await.unwrap()),
        vec!["l/expired-50", "l/pending-80"],
        "limit"
    );
    assert_eq!(
        ids(&s.leases_due(250, 100).await.unwrap()),
        vec![
            "l/expired-50",
            "l/pending-80",
            "l/backoff-90",
            "l/expired-100",
            "l/tie-100",
            "l/revoking-500"
        ],
        "retried once its next attempt is due"
    );
    assert_eq!(
        ids(&s.leases_due(600, 100).await.unwrap()),
        vec![
            "l/expired-50",
            "l/pending-80",
            "l/backoff-90",
            "l/expired-100",
            "l/tie-100",
            "l/pending-300",
            "l/live-400",
            "l/revoking-500"
        ],
        "a revoking lease past its expiry is listed once"
    );
    // Limit smaller than the expired set still reaches revoking leases in order.
    assert!(
        s.lease_update("l/live-400", LeaseState::Revoking, 400, None)
            .await
            .unwrap()
    );
    assert_eq!(
        ids(&s.leases_due(350, 1).await.unwrap()),
        vec!["l/expired-50"]
    );
    assert!(s.lease_delete("l/expired-50").await.unwrap());
    assert!(s.lease_delete("l/pending-80").await.unwrap());
    assert!(s.lease_delete("l/backoff-90").await.unwrap());
    assert!(s.lease_delete("l/expired-100").await.unwrap());
    assert!(s.lease_delete("l/tie-100").await.unwrap());
    assert!(s.lease_delete("l/pending-300").await.unwrap());
    assert_eq!(
        ids(&s.leases_due(350, 10).await.unwrap()),
        vec!["l/live-400", "l/revoking-500"],
        "revoking leases are due before their expiry"
    );
    delete_all_leases(s).await;
}

/// Failed revocations and their back-off; leases by id prefix (`database/creds/ro/`
/// matches neither `rox` nor `databasex`).
pub async fn lease_failures_and_prefixes(s: &dyn Storage) {
    for id in [
        "database/creds/rw/1",
        "database/creds/ro/2",
        "database/creds/ro/1",
        "database/creds/rox/1",
        "databasex/creds/ro/1",
        "aws/creds/x/1",
    ] {
        s.lease_insert(lease(s, id, None, 100, LeaseState::Active))
            .await
            .unwrap();
    }
    assert_eq!(
        s.lease_ids_with_prefix("database/creds/ro/").await.unwrap(),
        vec!["database/creds/ro/1", "database/creds/ro/2"]
    );
    assert_eq!(
        s.lease_ids_with_prefix("database/").await.unwrap(),
        vec![
            "database/creds/ro/1",
            "database/creds/ro/2",
            "database/creds/rox/1",
            "database/creds/rw/1"
        ]
    );
    assert_eq!(s.lease_ids_with_prefix("").await.unwrap().len(), 6);
    assert!(s.lease_ids_with_prefix("nope/").await.unwrap().is_empty());
    assert_eq!(s.lease_count().await.unwrap(), 6);

    assert!(s.leases_failing(10).await.unwrap().is_empty());
    assert_eq!(s.leases_failing_count().await.unwrap(), 0);
    assert!(
        s.lease_record_failure("database/creds/ro/1", 1, 130, "connection refused")
            .await
            .unwrap()
    );
    assert!(
        s.lease_record_failure("database/creds/rw/1", 1, 130, "timeout")
            .await
            .unwrap()
    );
    assert!(
        s.lease_record_failure("database/creds/rw/1", 2, 160, "role is in use")
            .await
            .unwrap()
    );
    assert!(!s.lease_record_failure("missing", 1, 1, "x").await.unwrap());
    let failing = s.leases_failing(10).await.unwrap();
    assert_eq!(
        ids(&failing),
        vec!["database/creds/rw/1", "database/creds/ro/1"],
        "most attempts first"
    );
    assert_eq!(
        (
            failing[0].attempts,
            failing[0].next_attempt_at,
            failing[0].last_error.as_deref()
        ),
        (2, 160, Some("role is in use"))
    );
    assert_eq!(failing[0].entry.as_slice(), b"entry of database/creds/rw/1");
    assert_eq!(s.leases_failing(1).await.unwrap().len(), 1);
    assert_eq!(s.leases_failing_count().await.unwrap(), 2);
    let got = s.lease_get("database/creds/ro/1").await.unwrap().unwrap();
    assert_eq!(
        (got.attempts, got.last_error.as_deref(), got.state),
        (1, Some("connection refused"), LeaseState::Active),
        "recording a failure changes nothing else"
    );
    delete_all_leases(s).await;
}

/// Revoking a token marks its leases (and its descendants') for revocation.
pub async fn lease_token_cascade(s: &dyn Storage) {
    // root -> a -> b ; root -> c ; x (unrelated)
    for (id, parent) in [
        ("croot", None),
        ("ca", Some("croot")),
        ("cb", Some("ca")),
        ("cc", Some("croot")),
        ("cx", None),
    ] {
        s.token_insert(token(s, id, parent, None, None))
            .await
            .unwrap();
    }
    for (id, tok, exp) in [
        ("db/root", Some("croot"), 1000),
        ("db/a1", Some("ca"), 1000),
        ("db/a2", Some("ca"), 100),
        ("db/b", Some("cb"), 1000),
        ("db/c", Some("cc"), 1000),
        ("db/x", Some("cx"), 1000),
        ("db/none", None, 1000),
    ] {
        s.lease_insert(lease(s, id, tok, exp, LeaseState::Active))
            .await
            .unwrap();
    }
    s.lease_insert(lease(
        s,
        "db/b-pending",
        Some("cb"),
        1000,
        LeaseState::Pending,
    ))
    .await
    .unwrap();
    let k = s.keyring();
    let state = |l: &StoredLease| (l.state, l.expire_at);

    let gone = s
        .token_delete_tree(k.token_hash("ca"), false, 500)
        .await
        .unwrap();
    assert_eq!(gone.len(), 2);
    for (id, want) in [
        ("db/a1", (LeaseState::Revoking, 500)),
        ("db/a2", (LeaseState::Revoking, 100)),
        ("db/b", (LeaseState::Revoking, 500)),
        ("db/b-pending", (LeaseState::Revoking, 500)),
        ("db/root", (LeaseState::Active, 1000)),
        ("db/c", (LeaseState::Active, 1000)),
        ("db/x", (LeaseState::Active, 1000)),
        ("db/none", (LeaseState::Active, 1000)),
    ] {
        let l = s.lease_get(id).await.unwrap().unwrap();
        assert_eq!(state(&l), want, "{id}");
    }
    assert_eq!(
        s.lease_count().await.unwrap(),
        8,
        "the cascade marks leases, never deletes them"
    );
    assert_eq!(
        ids(&s.leases_due(500, 100).await.unwrap()),
        vec!["db/a2", "db/a1", "db/b", "db/b-pending"]
    );
    // A lease cannot be issued to a revoked token, nor revived by a racing renewal.
    let e = s
        .lease_insert(lease(s, "db/late", Some("cb"), 1000, LeaseState::Pending))
        .await
        .unwrap_err();
    assert!(matches!(e, StorageError::Rejected(_)), "{e}");
    assert!(s.lease_get("db/late").await.unwrap().is_none());
    let e = s
        .lease_update("db/a1", LeaseState::Active, 2000, None)
        .await
        .unwrap_err();
    assert!(matches!(e, StorageError::Rejected(_)), "{e}");

    // Orphan mode: only the root's own leases.
    let gone = s
        .token_delete_tree(k.token_hash("croot"), true, 600)
        .await
        .unwrap();
    assert_eq!(gone.len(), 1);
    for (id, want) in [
        ("db/root", (LeaseState::Revoking, 600)),
        ("db/c", (LeaseState::Active, 1000)),
        ("db/x", (LeaseState::Active, 1000)),
        ("db/a1", (LeaseState::Revoking, 500)),
    ] {
        let l = s.lease_get(id).await.unwrap().unwrap();
        assert_eq!(state(&l), want, "{id}");
    }
    // The orphaned child's leases still die with it.
    s.token_delete_tree(k.token_hash("cc"), false, 700)
        .await
        .unwrap();
    let l = s.lease_get("db/c").await.unwrap().unwrap();
    assert_eq!(state(&l), (LeaseState::Revoking, 700));
    s.token_delete_tree(k.token_hash("cx"), false, 0)
        .await
        .unwrap();
    delete_all_leases(s).await;
    assert_eq!(s.token_count().await.unwrap(), 0);
}

/// Batch operations on leases (pending ones abandoned at once, and the like).
pub async fn lease_batches(s: &dyn Storage) {
    for (id, state) in [
        ("db/p1", LeaseState::Pending),
        ("db/p2", LeaseState::Pending),
        ("db/a1", LeaseState::Active),
        ("db/a2", LeaseState::Active),
        ("db/a3", LeaseState::Active),
    ] {
        s.lease_insert(lease(s, id, None, 1000, state))
            .await
            .unwrap();
    }
    assert_eq!(s.leases_abandon_pending(50).await.unwrap(), 2);
    for id in ["db/p1", "db/p2"] {
        let l = s.lease_get(id).await.unwrap().unwrap();
        assert_eq!((l.state, l.expire_at), (LeaseState::Revoking, 50), "{id}");
    }
    assert_eq!(
        s.lease_get("db/a1").await.unwrap().unwrap().state,
        LeaseState::Active,
        "active leases are not abandoned"
    );
    assert_eq!(s.leases_abandon_pending(50).await.unwrap(), 0);

    let marked = s
        .leases_mark_revoking(&["db/a1".into(), "db/a2".into(), "db/missing".into()], 60)
        .await
        .unwrap();
    assert_eq!(marked, 2);
    let a2 = s.lease_get("db/a2").await.unwrap().unwrap();
    assert_eq!((a2.state, a2.expire_at), (LeaseState::Revoking, 60));
    assert_eq!(
        s.lease_get("db/a3").await.unwrap().unwrap().state,
        LeaseState::Active
    );
    assert_eq!(
        ids(&s.leases_due(60, 10).await.unwrap()),
        vec!["db/p1", "db/p2", "db/a1", "db/a2"]
    );

    let gone = s
        .leases_delete(&["db/p1".into(), "db/a1".into(), "db/nope".into()])
        .await
        .unwrap();
    assert_eq!(gone, 2);
    assert!(s.lease_get("db/p1").await.unwrap().is_none());
    assert_eq!(s.lease_count().await.unwrap(), 3);

    // A revocation done now claims what exists (marking it as leases_mark_revoking does).
    let mut claimed = s
        .leases_claim_revoking(&["db/a3".into(), "db/gone".into(), "db/a2".into()], 70)
        .await
        .unwrap();
    claimed.sort();
    assert_eq!(claimed, vec!["db/a2", "db/a3"]);
    let a3 = s.lease_get("db/a3").await.unwrap().unwrap();
    assert_eq!((a3.state, a3.expire_at), (LeaseState::Revoking, 70));
    delete_all_leases(s).await;
}
