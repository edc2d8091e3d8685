//! The storage conformance suite: behaviour every [`Storage`] backend must show. Each
//! backend's tests call [`run_all`] with a fresh, empty store; the SQLite backend runs
//! it in this crate, the PostgreSQL backend will run the same functions.

// Test-support code: a failed expectation should panic with its location, like a test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::{Storage, StorageError, StoredToken, TokenUse};
use zeroize::Zeroizing;

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

/// Runs every check against `s`, which must be empty.
pub async fn run_all(s: &dyn Storage) {
    entries(s).await;
    modify(s).await;
    tokens(s).await;
    token_tree(s).await;
    token_uses(s).await;
}

async fn entries(s: &dyn Storage) {
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
}

async fn modify(s: &dyn Storage) {
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
    assert!(matches!(e, StorageError::Rejected(ref m) if m == "cas mismatch"));
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

async fn tokens(s: &dyn Storage) {
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
        assert_eq!(s.token_delete_tree(h, false).await.unwrap().len(), 1);
    }
    assert!(s.token_get(t.hash).await.unwrap().is_none());
    assert!(!s.token_update(t.hash, None, vec![]).await.unwrap());
}

async fn token_tree(s: &dyn Storage) {
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
    let gone = s.token_delete_tree(k.token_hash("a"), false).await.unwrap();
    let ids: Vec<_> = gone.iter().map(|t| t.hash).collect();
    assert_eq!(
        ids,
        vec![k.token_hash("a"), k.token_hash("b"), k.token_hash("c")],
        "parent first"
    );
    assert!(s.token_get(k.token_hash("d")).await.unwrap().is_some());
    // Orphaning: revoking root with orphan_children keeps d, as an orphan.
    let gone = s
        .token_delete_tree(k.token_hash("root"), true)
        .await
        .unwrap();
    assert_eq!(gone.len(), 1);
    let d = s.token_get(k.token_hash("d")).await.unwrap().unwrap();
    assert!(d.parent.is_none());
    s.token_delete_tree(k.token_hash("d"), false).await.unwrap();
    assert!(
        s.token_delete_tree(k.token_hash("nope"), false)
            .await
            .unwrap()
            .is_empty()
    );
}

async fn token_uses(s: &dyn Storage) {
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
    s.token_delete_tree(k.token_hash("u"), false).await.unwrap();
    s.token_delete_tree(k.token_hash("unl"), false)
        .await
        .unwrap();
}
