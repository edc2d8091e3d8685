//! `metadata/` and `config`: key settings, listing, pruning, mount configuration.

use std::time::Duration;

use leash_backend::{CoreError, ResponseKind};
use leash_types::Operation::{Delete, List, Patch, Read, Update};
use serde_json::{Value, json};

use super::{put, v2};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metadata_read_write_and_delete() {
    let f = v2();
    put(&f, "app/db", json!({"u": "x"})).await;
    f.clock.advance(Duration::from_secs(5));
    put(&f, "app/db", json!({"u": "y"})).await;
    let meta = f.ok(Read, "metadata/app/db", json!({})).await;
    assert_eq!(meta["current_version"], 2);
    assert_eq!(meta["oldest_version"], 0);
    assert_eq!(meta["max_versions"], 0);
    assert_eq!(meta["cas_required"], false);
    assert_eq!(meta["delete_version_after"], "0s");
    assert_eq!(meta["custom_metadata"], Value::Null);
    assert_eq!(meta["created_time"], meta["versions"]["1"]["created_time"]);
    assert_eq!(meta["updated_time"], meta["versions"]["2"]["created_time"]);
    assert_ne!(meta["created_time"], meta["updated_time"]);
    assert_eq!(meta["versions"]["2"]["deletion_time"], "");

    let none = f
        .call(
            Update,
            "metadata/app/db",
            json!({"max_versions": 5, "delete_version_after": "1h", "custom_metadata": {"owner": "team-a"}}),
        )
        .await
        .unwrap();
    assert!(none.is_none());
    let meta = f.ok(Read, "metadata/app/db", json!({})).await;
    assert_eq!(meta["max_versions"], 5);
    assert_eq!(meta["delete_version_after"], "1h0m0s");
    assert_eq!(meta["custom_metadata"], json!({"owner": "team-a"}));
    // custom_metadata shows up in data reads and writes too.
    let w = put(&f, "app/db", json!({"u": "z"})).await;
    assert_eq!(w["custom_metadata"], json!({"owner": "team-a"}));

    // Metadata can exist before any version.
    f.call(Update, "metadata/pre", json!({"max_versions": 2}))
        .await
        .unwrap();
    assert_eq!(
        f.ok(Read, "metadata/pre", json!({})).await["current_version"],
        0
    );
    assert!(f.call(Read, "data/pre", json!({})).await.unwrap().is_none());
    // A write with no known field changes nothing (and creates nothing).
    f.call(Update, "metadata/empty", json!({"other": 1}))
        .await
        .unwrap();
    assert!(
        f.call(Read, "metadata/empty", json!({}))
            .await
            .unwrap()
            .is_none()
    );

    // Delete removes every version and the metadata.
    assert!(
        f.call(Delete, "metadata/app/db", json!({}))
            .await
            .unwrap()
            .is_none()
    );
    assert!(
        f.call(Read, "metadata/app/db", json!({}))
            .await
            .unwrap()
            .is_none()
    );
    assert!(
        f.call(Read, "data/app/db", json!({"version": 1}))
            .await
            .unwrap()
            .is_none()
    );
    assert_eq!(f.exists("data/app/db").await, Some(false));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metadata_patch_merges_custom_metadata() {
    let f = v2();
    assert!(matches!(
        f.call(Patch, "metadata/none", json!({"max_versions": 1}))
            .await,
        Err(CoreError::NotFound)
    ));
    f.call(
        Update,
        "metadata/p",
        json!({"custom_metadata": {"a": "1", "b": "2"}}),
    )
    .await
    .unwrap();
    f.call(
        Patch,
        "metadata/p",
        json!({"custom_metadata": {"a": null, "c": "3"}, "cas_required": true}),
    )
    .await
    .unwrap();
    let meta = f.ok(Read, "metadata/p", json!({})).await;
    assert_eq!(meta["custom_metadata"], json!({"b": "2", "c": "3"}));
    assert_eq!(meta["cas_required"], true);
    // A plain write replaces custom_metadata as a whole.
    f.call(Update, "metadata/p", json!({"custom_metadata": {"z": "9"}}))
        .await
        .unwrap();
    assert_eq!(
        f.ok(Read, "metadata/p", json!({})).await["custom_metadata"],
        json!({"z": "9"})
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_shows_immediate_children() {
    let f = v2();
    for name in ["a", "b/c", "b/d/e", "b/f", "bb"] {
        put(&f, name, json!({"k": "v"})).await;
    }
    f.call(Update, "metadata/m/only", json!({"max_versions": 1}))
        .await
        .unwrap();
    assert_eq!(
        f.ok(List, "metadata/", json!({})).await,
        json!({"keys": ["a", "b/", "bb", "m/"]})
    );
    assert_eq!(
        f.ok(List, "metadata/b/", json!({})).await,
        json!({"keys": ["c", "d/", "f"]})
    );
    assert_eq!(
        f.ok(List, "metadata/b/d", json!({})).await,
        json!({"keys": ["e"]})
    );
    assert_eq!(f.ok(List, "metadata", json!({})).await["keys"][0], "a");
    assert!(
        f.call(List, "metadata/zzz/", json!({}))
            .await
            .unwrap()
            .is_none()
    );
    // The mount config is not a secret and never listed.
    f.call(Update, "config", json!({"max_versions": 3}))
        .await
        .unwrap();
    assert_eq!(
        f.ok(List, "metadata/", json!({})).await["keys"]
            .as_array()
            .unwrap()
            .len(),
        4
    );
    // Vault has no LIST on data/.
    let resp = f.call(List, "data/", json!({})).await.unwrap().unwrap();
    assert_eq!(resp.kind, ResponseKind::EnvelopeWithStatus(404));
    assert!(resp.warnings[0].contains("vault kv list"));
    assert!(matches!(
        f.call(List, "data/a", json!({})).await,
        Err(CoreError::UnsupportedOperation)
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn old_versions_beyond_max_versions_are_dropped() {
    let f = v2();
    f.call(Update, "config", json!({"max_versions": 3}))
        .await
        .unwrap();
    for i in 1..=5 {
        put(&f, "p", json!({ "i": i })).await;
    }
    let meta = f.ok(Read, "metadata/p", json!({})).await;
    assert_eq!(meta["current_version"], 5);
    assert_eq!(meta["oldest_version"], 3);
    let kept: Vec<&String> = meta["versions"].as_object().unwrap().keys().collect();
    assert_eq!(kept, ["3", "4", "5"]);
    assert!(
        f.call(Read, "data/p", json!({"version": 2}))
            .await
            .unwrap()
            .is_none()
    );
    assert_eq!(
        f.ok(Read, "data/p", json!({"version": 3})).await["data"],
        json!({"i": 3})
    );

    // Default (max_versions 0): 10 kept.
    f.call(Update, "config", json!({"max_versions": 0}))
        .await
        .unwrap();
    for i in 1..=12 {
        put(&f, "q", json!({ "i": i })).await;
    }
    let meta = f.ok(Read, "metadata/q", json!({})).await;
    assert_eq!(meta["versions"].as_object().unwrap().len(), 10);
    assert_eq!(meta["oldest_version"], 3);

    // A key's own max_versions can raise the mount's limit, never lower it (Vault ≥ 0.26).
    f.call(Update, "config", json!({"max_versions": 2}))
        .await
        .unwrap();
    f.call(Update, "metadata/r", json!({"max_versions": 4}))
        .await
        .unwrap();
    for i in 1..=6 {
        put(&f, "r", json!({ "i": i })).await;
    }
    let meta = f.ok(Read, "metadata/r", json!({})).await;
    assert_eq!(meta["versions"].as_object().unwrap().len(), 4);
    assert_eq!(meta["max_versions"], 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn config_defaults_and_writes() {
    let f = v2();
    assert_eq!(
        f.ok(Read, "config", json!({})).await,
        json!({"max_versions": 0, "cas_required": false, "delete_version_after": "0s"})
    );
    // hvac's configure() sends max_versions and delete_version_after "0s".
    f.call(
        Update,
        "config",
        json!({"max_versions": 10, "delete_version_after": "0s", "cas_required": "true"}),
    )
    .await
    .unwrap();
    assert_eq!(
        f.ok(Read, "config", json!({})).await,
        json!({"max_versions": 10, "cas_required": true, "delete_version_after": "0s"})
    );
    assert!(matches!(
        f.call(Delete, "config", json!({})).await,
        Err(CoreError::UnsupportedOperation)
    ));
    assert!(
        f.invalid(Update, "config", json!({"max_versions": -1}))
            .await
            .contains("max_versions")
    );
    assert!(
        f.invalid(Update, "config", json!({"cas_required": "maybe"}))
            .await
            .contains("cas_required")
    );
    assert_eq!(f.exists("config").await, None);
}
