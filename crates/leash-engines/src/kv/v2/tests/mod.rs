//! KV v2 against the real SQLite storage: Vault's semantics end to end.

mod data;
mod metadata;
mod requests;

use leash_backend::ResponseKind;
use leash_types::Operation::{Read, Update};
use serde_json::{Value, json};

use super::super::testutil::{Fixture, fixture};

fn v2() -> Fixture {
    fixture(Some("2"))
}

async fn put(f: &Fixture, name: &str, data: Value) -> Value {
    f.ok(Update, &format!("data/{name}"), json!({ "data": data }))
        .await
}

/// A read that must answer 404 with a body (deleted or destroyed version).
async fn read_gone(f: &Fixture, path: &str, query: Value) -> Value {
    let resp = f
        .call(Read, path, query)
        .await
        .unwrap()
        .expect("a 404 response with a body");
    assert_eq!(resp.kind, ResponseKind::EnvelopeWithStatus(404));
    resp.data.expect("a body")
}

fn is_rfc3339_utc(s: &str) -> bool {
    s.len() >= 20 && s.ends_with('Z') && s.as_bytes()[10] == b'T'
}
