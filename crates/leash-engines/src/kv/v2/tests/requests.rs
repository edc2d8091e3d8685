//! Request handling across endpoints: existence checks, bad input, unknown paths, isolation.

use std::sync::Arc;

use leash_backend::{CoreError, ResponseKind};
use leash_types::Operation::{Create, Delete, List, Read, Update};
use serde_json::json;

use super::super::super::new_backend;
use super::super::super::testutil::{call, mount};
use super::{put, v2};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn existence_check_follows_vault() {
    let f = v2();
    assert_eq!(f.exists("data/e").await, Some(false));
    assert_eq!(f.exists("metadata/e").await, Some(false));
    put(&f, "e", json!({"a": 1})).await;
    assert_eq!(f.exists("data/e").await, Some(true));
    assert_eq!(f.exists("metadata/e").await, Some(true));
    assert_eq!(f.exists("delete/e").await, None);
    assert_eq!(f.exists("destroy/e").await, None);
    f.call(Update, "metadata/only-meta", json!({"max_versions": 2}))
        .await
        .unwrap();
    assert_eq!(f.exists("data/only-meta").await, Some(true));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_is_a_400_and_changes_nothing() {
    let f = v2();
    assert_eq!(
        f.invalid(Update, "data/b", json!({})).await,
        "no data provided"
    );
    assert_eq!(
        f.invalid(Update, "data/b", json!({"data": null})).await,
        "no data provided"
    );
    assert!(
        f.invalid(Update, "data/b", json!({"data": "s3cr3t-value"}))
            .await
            .starts_with("no data provided")
    );
    assert!(
        f.invalid(Update, "data/", json!({"data": {"a": 1}}))
            .await
            .starts_with("missing path")
    );
    f.invalid(Update, "data/dir/", json!({"data": {"a": 1}}))
        .await;
    f.invalid(Update, "data/a//b", json!({"data": {"a": 1}}))
        .await;
    f.invalid(Update, "data/../b", json!({"data": {"a": 1}}))
        .await;
    assert!(
        f.invalid(Update, "metadata/", json!({"max_versions": 1}))
            .await
            .starts_with("missing path")
    );
    f.invalid(
        Update,
        "data/b",
        json!({"data": {"a": 1}, "options": "cas=1"}),
    )
    .await;
    assert_eq!(
        f.invalid(Update, "delete/b", json!({})).await,
        "No version number provided"
    );
    assert_eq!(
        f.invalid(Update, "undelete/b", json!({"versions": []}))
            .await,
        "No version number provided"
    );
    assert_eq!(
        f.invalid(Update, "destroy/b", json!({"versions": []}))
            .await,
        "no version number provided"
    );
    f.invalid(Update, "destroy/b", json!({"versions": ["one"]}))
        .await;
    f.invalid(Update, "metadata/b", json!({"max_versions": "many"}))
        .await;
    f.invalid(Update, "metadata/b", json!({"delete_version_after": "-5m"}))
        .await;
    assert!(
        f.invalid(Update, "metadata/b", json!({"custom_metadata": {"k": ""}}))
            .await
            .contains("custom_metadata validation failed")
    );
    // None of it left anything behind.
    assert!(
        f.call(List, "metadata/", json!({}))
            .await
            .unwrap()
            .is_none()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_never_echo_secret_values() {
    let f = v2();
    put(&f, "s", json!({"password": "hunter2-very-secret"})).await;
    let bodies = [
        json!({"data": "hunter2-very-secret"}),
        json!({"data": {"password": "hunter2-very-secret"}, "options": {"cas": 7}}),
        json!({"data": {"password": "hunter2-very-secret"}, "options": {"cas": "hunter2-very-secret"}}),
    ];
    for body in bodies {
        let msg = f.invalid(Update, "data/s", body).await;
        assert!(!msg.contains("hunter2"), "{msg}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_paths_and_operations_answer_like_vault() {
    let f = v2();
    for path in ["foo/bar", "foo", "", "config/x", "subkeys/a"] {
        let resp = f.call(Read, path, json!({})).await.unwrap().unwrap();
        assert_eq!(resp.kind, ResponseKind::EnvelopeWithStatus(404), "{path}");
        assert!(
            resp.warnings[0].starts_with("Invalid path for a versioned K/V"),
            "{path}"
        );
        assert!(resp.data.is_none());
    }
    let resp = f
        .call(Update, "foo/bar", json!({"a": 1}))
        .await
        .unwrap()
        .unwrap();
    assert!(resp.warnings[0].contains("'vault kv put'"));
    let resp = f.call(Read, "data", json!({})).await.unwrap().unwrap();
    assert_eq!(resp.kind, ResponseKind::EnvelopeWithStatus(404));
    assert!(resp.warnings[0].starts_with("Non-listing operations on the root"));
    for (op, path) in [
        (Read, "delete/x"),
        (Delete, "destroy/x"),
        (List, "undelete/x"),
    ] {
        assert!(matches!(
            f.call(op, path, json!({})).await,
            Err(CoreError::UnsupportedOperation)
        ));
    }
    assert!(matches!(
        f.call(Create, "config", json!({"max_versions": 2})).await,
        Ok(None)
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mounts_do_not_share_storage() {
    let f = v2();
    put(&f, "shared-name", json!({"a": 1})).await;
    let other = mount("other/", "another-uuid", Some("2"));
    let backend = new_backend(
        &other,
        leash_backend::MountStorage::new(Arc::clone(&f.storage), &other),
        Arc::new(f.clock.clone()),
    );
    assert!(
        call(
            backend.as_ref(),
            &other,
            Read,
            "data/shared-name",
            json!({})
        )
        .await
        .unwrap()
        .is_none()
    );
    let ns = f.mount.storage_ns();
    assert_eq!(
        f.storage.list(&ns, "").await.unwrap(),
        vec!["kv/shared-name"]
    );
}
