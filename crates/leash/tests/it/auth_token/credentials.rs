//! Presented credentials: `Authorization: Bearer`, bad tokens that all look the same,
//! and tokens kept only as keyed hashes on disk.

use std::path::Path;

use leash_testkit::TestServer;
use leash_types::{TokenKind, TokenValue};
use serde_json::json;

use crate::{client_token, create_token, raw};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn authorization_bearer_works_like_x_vault_token() {
    let srv = TestServer::start().await;
    let t = srv.token_with(&["default"]).await;
    let bearer = format!("Bearer {t}");
    let r = raw(
        srv.addr,
        "GET",
        "/v1/auth/token/lookup-self",
        &[("Authorization", &bearer)],
        b"",
    )
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["data"]["id"], t.as_str());
    let r = raw(
        srv.addr,
        "GET",
        "/v1/auth/token/lookup-self",
        &[("Authorization", "Bearer not-a-real-token")],
        b"",
    )
    .await;
    assert_eq!(r.status, 403);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_tokens_all_look_the_same() {
    let srv = TestServer::start().await;
    let revoked = srv.token_with(&["default"]).await;
    srv.root("POST", "auth/token/revoke", Some(json!({"token": revoked})))
        .await;
    let unknown_but_well_formed = TokenValue::generate(TokenKind::Service).expose().to_owned();
    let mut bad_checksum = srv.token_with(&["default"]).await;
    let last = bad_checksum.pop().unwrap();
    bad_checksum.push(if last == 'a' { 'b' } else { 'a' });
    let long = "x".repeat(4000);
    // The reason is Vault's second error string: none presented, or not valid — and
    // "not valid" reads the same whether the token is unknown, malformed or revoked.
    let none = json!({"errors": ["permission denied", "no token presented"]});
    let want = json!({"errors": ["permission denied", "token is not valid"]});
    let (s, b) = srv.call("GET", "auth/token/lookup-self", None, None).await;
    assert_eq!((s, &b), (403, &none), "missing token");
    for bad in [
        "garbage",
        "lsh.short",
        unknown_but_well_formed.as_str(),
        bad_checksum.as_str(),
        revoked.as_str(),
        long.as_str(),
    ] {
        for path in [
            "auth/token/lookup-self",
            "secret/data/x",
            "sys/mounts",
            "no/such/mount",
        ] {
            let (s, b) = srv.call("GET", path, Some(bad), None).await;
            assert_eq!((s, &b), (403, &want), "{path} with {:.20}…", bad);
        }
    }
    // Never 401 (hvac's is_authenticated depends on it), even with a malformed header.
    let r = raw(
        srv.addr,
        "GET",
        "/v1/auth/token/lookup-self",
        &[("Authorization", "Basic dXNlcjpwYXNz")],
        b"",
    )
    .await;
    assert_eq!(r.status, 403);
    assert_eq!(r.json(), none, "a Basic header is no Vault token");
}

fn files_containing(dir: &Path, needle: &[u8]) -> Vec<String> {
    let mut hits = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else if let Ok(bytes) = std::fs::read(&p)
                && bytes.windows(needle.len()).any(|w| w == needle)
            {
                hits.push(p.display().to_string());
            }
        }
    }
    hits
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_are_stored_only_as_keyed_hashes() {
    let srv = TestServer::start().await;
    let a = create_token(
        &srv,
        json!({"policies": ["default"], "meta": {"note": "findable-meta-value"}}),
    )
    .await;
    let t = client_token(&a);
    let acc = a["accessor"].as_str().unwrap().to_owned();
    let custom = create_token(&srv, json!({"id": "custom-token-value-0123456789"})).await;
    assert_eq!(custom["client_token"], "custom-token-value-0123456789");
    // Something is stored at all (the scan would prove nothing otherwise).
    let total: u64 = std::fs::read_dir(&srv.dir)
        .unwrap()
        .map(|e| e.unwrap().metadata().unwrap().len())
        .sum();
    assert!(total > 0);
    for needle in [
        t.as_str(),
        acc.as_str(),
        "custom-token-value-0123456789",
        srv.root_token.as_str(),
        "findable-meta-value",
    ] {
        let hits = files_containing(&srv.dir, needle.as_bytes());
        assert!(hits.is_empty(), "{needle:.12}… found in {hits:?}");
    }
}
