//! `data/`, `delete/`, `undelete/`, `destroy/`: versions, check-and-set, soft delete, destroy, patch.

use std::sync::Arc;
use std::time::Duration;

use leash_backend::{CoreError, ResponseKind};
use leash_types::Operation::{Delete, Patch, Read, Update};
use serde_json::{Value, json};

use super::{is_rfc3339_utc, put, read_gone, v2};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn write_then_read_returns_data_and_version_metadata() {
    let f = v2();
    let written = put(&f, "agents/config", json!({"model": "m1", "retries": 3})).await;
    assert_eq!(written["version"], 1);
    assert_eq!(written["deletion_time"], "");
    assert_eq!(written["destroyed"], false);
    assert_eq!(written["custom_metadata"], Value::Null);
    assert!(is_rfc3339_utc(written["created_time"].as_str().unwrap()));

    let read = f.ok(Read, "data/agents/config", json!({})).await;
    assert_eq!(read["data"], json!({"model": "m1", "retries": 3}));
    assert_eq!(read["metadata"], written);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_write_is_a_new_version_and_old_ones_stay_readable() {
    let f = v2();
    put(&f, "s", json!({"v": 1})).await;
    f.clock.advance(Duration::from_secs(1));
    assert_eq!(put(&f, "s", json!({"v": 2})).await["version"], 2);
    assert_eq!(
        f.ok(Read, "data/s", json!({})).await["data"],
        json!({"v": 2})
    );
    // `?version=` arrives as a string from the query, or as a number.
    let v1 = f.ok(Read, "data/s", json!({"version": "1"})).await;
    assert_eq!(v1["data"], json!({"v": 1}));
    assert_eq!(v1["metadata"]["version"], 1);
    assert_eq!(
        f.ok(Read, "data/s", json!({"version": 2})).await["data"],
        json!({"v": 2})
    );
    // 0 means latest, as in Vault.
    assert_eq!(
        f.ok(Read, "data/s", json!({"version": "0"})).await["data"],
        json!({"v": 2})
    );
    // Missing versions and keys are plain "nothing here" (404 {"errors":[]}).
    assert!(
        f.call(Read, "data/s", json!({"version": 9}))
            .await
            .unwrap()
            .is_none()
    );
    assert!(
        f.call(Read, "data/nope", json!({}))
            .await
            .unwrap()
            .is_none()
    );
    assert!(
        f.invalid(Read, "data/s", json!({"version": "x"}))
            .await
            .contains("version")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_and_set() {
    let f = v2();
    // cas 0: only if the key does not exist yet.
    let w = f
        .ok(
            Update,
            "data/c",
            json!({"data": {"a": 1}, "options": {"cas": 0}}),
        )
        .await;
    assert_eq!(w["version"], 1);
    assert_eq!(
        f.invalid(
            Update,
            "data/c",
            json!({"data": {"a": 2}, "options": {"cas": 0}})
        )
        .await,
        "check-and-set parameter did not match the current version"
    );
    // Matching cas succeeds (as a number or a string), stale cas fails.
    let w = f
        .ok(
            Update,
            "data/c",
            json!({"data": {"a": 2}, "options": {"cas": 1}}),
        )
        .await;
    assert_eq!(w["version"], 2);
    f.ok(
        Update,
        "data/c",
        json!({"data": {"a": 3}, "options": {"cas": "2"}}),
    )
    .await;
    assert_eq!(
        f.invalid(
            Update,
            "data/c",
            json!({"data": {"a": 4}, "options": {"cas": 2}})
        )
        .await,
        "check-and-set parameter did not match the current version"
    );
    assert_eq!(
        f.invalid(
            Update,
            "data/c",
            json!({"data": {"a": 4}, "options": {"cas": "two"}})
        )
        .await,
        "error parsing check-and-set parameter"
    );
    // hvac sends `options: {}` without cas: an ordinary write.
    f.ok(Update, "data/c", json!({"data": {"a": 5}, "options": {}}))
        .await;
    assert_eq!(
        f.ok(Read, "data/c", json!({})).await["data"],
        json!({"a": 5})
    );
    assert_eq!(
        f.ok(Read, "data/c", json!({})).await["metadata"]["version"],
        4
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cas_required_by_the_mount_or_the_key() {
    let f = v2();
    put(&f, "k", json!({"a": 1})).await;
    f.call(Update, "metadata/k", json!({"cas_required": true}))
        .await
        .unwrap();
    assert_eq!(
        f.invalid(Update, "data/k", json!({"data": {"a": 2}})).await,
        "check-and-set parameter required for this call"
    );
    f.ok(
        Update,
        "data/k",
        json!({"data": {"a": 2}, "options": {"cas": 1}}),
    )
    .await;
    // Other keys are free until the mount requires it.
    put(&f, "other", json!({"a": 1})).await;
    f.call(Update, "config", json!({"cas_required": true}))
        .await
        .unwrap();
    assert_eq!(
        f.invalid(Update, "data/other", json!({"data": {"a": 2}}))
            .await,
        "check-and-set parameter required for this call"
    );
    assert_eq!(
        f.invalid(Update, "data/new", json!({"data": {"a": 2}}))
            .await,
        "check-and-set parameter required for this call"
    );
    f.ok(
        Update,
        "data/new",
        json!({"data": {"a": 2}, "options": {"cas": 0}}),
    )
    .await;
    // Turning it off on a key while the mount mandates it is a warning, not an error.
    let resp = f
        .call(Update, "metadata/k", json!({"cas_required": false}))
        .await
        .unwrap()
        .expect("a warning");
    assert!(resp.warnings[0].contains("mandated by backend config"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_writes_with_the_same_cas_have_exactly_one_winner() {
    let f = Arc::new(v2());
    put(&f, "race", json!({"n": 0})).await;
    let mut tasks = Vec::new();
    for i in 0..16 {
        let f = Arc::clone(&f);
        tasks.push(tokio::spawn(async move {
            f.call(
                Update,
                "data/race",
                json!({"data": {"n": i}, "options": {"cas": 1}}),
            )
            .await
        }));
    }
    let mut won = 0;
    let mut lost = 0;
    for t in tasks {
        match t.await.unwrap() {
            Ok(Some(_)) => won += 1,
            Err(CoreError::InvalidRequest(msg)) => {
                assert_eq!(
                    msg,
                    "check-and-set parameter did not match the current version"
                );
                lost += 1;
            }
            other => panic!("unexpected outcome: {:?}", other.map(|r| r.map(|r| r.kind))),
        }
    }
    assert_eq!((won, lost), (1, 15));
    let meta = f.ok(Read, "metadata/race", json!({})).await;
    assert_eq!(meta["current_version"], 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn soft_delete_answers_404_with_metadata_and_undelete_restores() {
    let f = v2();
    put(&f, "d", json!({"secret": "s3cr3t"})).await;
    assert!(f.call(Delete, "data/d", json!({})).await.unwrap().is_none());

    let gone = read_gone(&f, "data/d", json!({})).await;
    assert_eq!(gone["data"], Value::Null);
    assert_ne!(gone["metadata"]["deletion_time"], "");
    assert_eq!(gone["metadata"]["destroyed"], false);
    assert_eq!(gone["metadata"]["version"], 1);
    // Deleting again changes nothing.
    f.call(Delete, "data/d", json!({})).await.unwrap();
    // Still "exists": a create-only policy cannot write over it.
    assert_eq!(f.exists("data/d").await, Some(true));

    f.call(Update, "undelete/d", json!({"versions": [1]}))
        .await
        .unwrap();
    let back = f.ok(Read, "data/d", json!({})).await;
    assert_eq!(back["data"], json!({"secret": "s3cr3t"}));
    assert_eq!(back["metadata"]["deletion_time"], "");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_and_undelete_named_versions() {
    let f = v2();
    for i in 1..=3 {
        put(&f, "m", json!({ "i": i })).await;
    }
    f.call(Update, "delete/m", json!({"versions": [1, 2, 7]}))
        .await
        .unwrap();
    read_gone(&f, "data/m", json!({"version": 1})).await;
    read_gone(&f, "data/m", json!({"version": 2})).await;
    assert_eq!(
        f.ok(Read, "data/m", json!({})).await["data"],
        json!({"i": 3})
    );
    // Comma-separated strings work too (Vault's TypeCommaIntSlice).
    f.call(Update, "undelete/m", json!({"versions": "1,2"}))
        .await
        .unwrap();
    assert_eq!(
        f.ok(Read, "data/m", json!({"version": 1})).await["data"],
        json!({"i": 1})
    );
    // Unknown keys are fine (204), as in Vault.
    assert!(
        f.call(Update, "delete/nope", json!({"versions": [1]}))
            .await
            .unwrap()
            .is_none()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn destroy_wipes_the_data_for_good() {
    let f = v2();
    put(&f, "x", json!({"password": "p1"})).await;
    put(&f, "x", json!({"password": "p2"})).await;
    f.call(Update, "destroy/x", json!({"versions": [1]}))
        .await
        .unwrap();
    let gone = read_gone(&f, "data/x", json!({"version": 1})).await;
    assert_eq!(gone["data"], Value::Null);
    assert_eq!(gone["metadata"]["destroyed"], true);
    // Undelete cannot bring it back.
    f.call(Update, "undelete/x", json!({"versions": [1]}))
        .await
        .unwrap();
    read_gone(&f, "data/x", json!({"version": 1})).await;
    // The stored document no longer holds the value.
    let raw = f
        .storage
        .get(&f.mount.storage_ns(), "kv/x")
        .await
        .unwrap()
        .unwrap();
    let text = String::from_utf8(raw.to_vec()).unwrap();
    assert!(!text.contains("p1"));
    assert!(text.contains("p2"));
    let meta = f.ok(Read, "metadata/x", json!({})).await;
    assert_eq!(meta["versions"]["1"]["destroyed"], true);
    assert_eq!(meta["versions"]["2"]["destroyed"], false);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn patch_merges_into_the_latest_version() {
    let f = v2();
    assert!(matches!(
        f.call(Patch, "data/none", json!({"data": {"a": 1}})).await,
        Err(CoreError::NotFound)
    ));
    put(
        &f,
        "pt",
        json!({"a": 1, "b": {"c": 2, "d": 3}, "gone": true}),
    )
    .await;
    let w = f
        .ok(
            Patch,
            "data/pt",
            json!({"data": {"a": 9, "b": {"d": null}, "gone": null, "new": "x"}}),
        )
        .await;
    assert_eq!(w["version"], 2);
    assert_eq!(
        f.ok(Read, "data/pt", json!({})).await["data"],
        json!({"a": 9, "b": {"c": 2}, "new": "x"})
    );
    // Patch honours cas.
    assert_eq!(
        f.invalid(
            Patch,
            "data/pt",
            json!({"data": {"a": 1}, "options": {"cas": 1}})
        )
        .await,
        "check-and-set parameter did not match the current version"
    );
    assert_eq!(
        f.invalid(Patch, "data/pt", json!({})).await,
        "no data provided"
    );
    // Patching a deleted latest version is a 404 that carries its metadata.
    f.call(Delete, "data/pt", json!({})).await.unwrap();
    let resp = f
        .call(Patch, "data/pt", json!({"data": {"a": 2}}))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(resp.kind, ResponseKind::EnvelopeWithStatus(404));
    assert_ne!(resp.data.unwrap()["deletion_time"], "");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_version_after_soft_deletes_on_schedule() {
    let f = v2();
    f.call(Update, "config", json!({"delete_version_after": "1m"}))
        .await
        .unwrap();
    let w = put(&f, "t", json!({"a": 1})).await;
    assert_ne!(w["deletion_time"], "");
    assert_eq!(
        f.ok(Read, "data/t", json!({})).await["data"],
        json!({"a": 1})
    );
    f.clock.advance(Duration::from_secs(61));
    read_gone(&f, "data/t", json!({})).await;
    // Disabled mount-wide with a negative duration.
    f.call(Update, "config", json!({"delete_version_after": "-1s"}))
        .await
        .unwrap();
    assert_eq!(
        f.ok(Read, "config", json!({})).await["delete_version_after"],
        "-1s"
    );
    assert_eq!(put(&f, "t", json!({"a": 2})).await["deletion_time"], "");
}
