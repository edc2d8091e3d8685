//! Enabling, listing, hashing, disabling; options that change what is written.

use leash_audit::{AuditError, DeviceStats};
use leash_types::SecretBytes;

use crate::{broker, device, entry, file_device, json_lines, key};

#[tokio::test]
async fn no_devices_means_nothing_to_fail() {
    let b = broker();
    assert!(b.is_empty());
    assert!(b.log(&entry("hvs.token")).await.is_ok());
}

#[tokio::test]
async fn entries_are_hashed_with_the_device_key() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("audit.log");
    let b = broker();
    b.enable(
        file_device("file", &file),
        SecretBytes::new(b"k1".to_vec()),
        None,
    )
    .await
    .unwrap();
    assert!(!b.is_empty());
    b.log(&entry("hvs.secret")).await.unwrap();

    let lines = json_lines(&file);
    assert_eq!(lines.len(), 1);
    let expected = b.hash("file/", "hvs.secret").unwrap();
    assert!(expected.starts_with("hmac-sha256:"));
    assert_eq!(lines[0]["auth"]["client_token"], expected);
    assert_eq!(
        lines[0]["auth"]["policies"][0],
        b.hash("file", "default").unwrap()
    );
    assert!(
        !std::fs::read_to_string(&file)
            .unwrap()
            .contains("hvs.secret")
    );
    assert_eq!(
        b.stats(),
        vec![DeviceStats {
            path: "file/".into(),
            entries: 1,
            syncs: 1,
            failures: 0,
            up: true,
        }]
    );
}

#[tokio::test]
async fn each_device_has_its_own_key() {
    let dir = tempfile::tempdir().unwrap();
    let (fa, fb) = (dir.path().join("a.log"), dir.path().join("b.log"));
    let b = broker();
    b.enable(file_device("a", &fa), key(), None).await.unwrap();
    b.enable(file_device("b", &fb), key(), None).await.unwrap();
    b.log(&entry("hvs.secret")).await.unwrap();
    let (la, lb) = (json_lines(&fa), json_lines(&fb));
    assert_eq!(
        la[0]["auth"]["client_token"],
        b.hash("a/", "hvs.secret").unwrap()
    );
    assert_eq!(
        lb[0]["auth"]["client_token"],
        b.hash("b/", "hvs.secret").unwrap()
    );
    assert_ne!(la[0]["auth"]["client_token"], lb[0]["auth"]["client_token"]);
    assert_eq!(b.hash("c/", "x"), None);
}

#[tokio::test]
async fn list_is_sorted_and_shows_the_config_as_given() {
    let dir = tempfile::tempdir().unwrap();
    let b = broker();
    for name in ["zeta", "alpha", "mid"] {
        let mut cfg = file_device(name, &dir.path().join(format!("{name}.log")));
        cfg.description = format!("{name} log");
        b.enable(cfg, key(), None).await.unwrap();
    }
    let list = b.list();
    let paths: Vec<_> = list.iter().map(|d| d.path.as_str()).collect();
    assert_eq!(paths, ["alpha/", "mid/", "zeta/"]);
    assert_eq!(list[0].description, "alpha log");
    assert_eq!(list[0].kind, "file");
    assert!(list[0].options["file_path"].ends_with("alpha.log"));
    let stats_paths: Vec<_> = b.stats().into_iter().map(|s| s.path).collect();
    assert_eq!(stats_paths, ["alpha/", "mid/", "zeta/"]);
}

#[tokio::test]
async fn overlapping_paths_are_already_enabled() {
    let dir = tempfile::tempdir().unwrap();
    let b = broker();
    b.enable(file_device("file", &dir.path().join("1.log")), key(), None)
        .await
        .unwrap();
    for clash in ["file", "/file/", "file/nested"] {
        let err = b
            .enable(file_device(clash, &dir.path().join("2.log")), key(), None)
            .await
            .unwrap_err();
        assert!(
            matches!(err, AuditError::AlreadyEnabled(_)),
            "{clash}: {err}"
        );
        assert!(err.to_string().contains("file/"), "{err}");
    }
    // Overlap is by segment: "files/" does not overlap "file/".
    b.enable(file_device("files", &dir.path().join("3.log")), key(), None)
        .await
        .unwrap();
    assert_eq!(b.list().len(), 2);
}

#[tokio::test]
async fn log_raw_writes_clear_values_only_on_that_device() {
    let dir = tempfile::tempdir().unwrap();
    let (raw, hashed) = (dir.path().join("raw.log"), dir.path().join("hashed.log"));
    let b = broker();
    let cfg = device(
        "raw",
        &[
            ("file_path", &raw.display().to_string()),
            ("log_raw", "true"),
        ],
    );
    b.enable(cfg, key(), None).await.unwrap();
    b.enable(file_device("hashed", &hashed), key(), None)
        .await
        .unwrap();
    b.log(&entry("hvs.clear")).await.unwrap();
    assert_eq!(json_lines(&raw)[0]["auth"]["client_token"], "hvs.clear");
    assert_eq!(
        json_lines(&hashed)[0]["auth"]["client_token"],
        b.hash("hashed/", "hvs.clear").unwrap()
    );
}

#[tokio::test]
async fn per_device_options_reach_the_builder() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("a.log");
    let b = broker();
    let cfg = device(
        "a",
        &[
            ("file_path", &file.display().to_string()),
            ("hmac_accessor", "false"),
            ("elide_list_responses", "true"),
        ],
    );
    b.enable(cfg, key(), None).await.unwrap();
    assert_eq!(b.hmac_accessor("a/"), Some(false));
    assert_eq!(b.hmac_accessor("nope/"), None);
    let build = |h: &leash_audit::Hasher, _raw: bool| serde_json::json!({ "hmac_accessor": h.hmac_accessor(), "elide": h.elide_list_responses() });
    b.log(&build).await.unwrap();
    // The hash chain's fields (tested in `chain`) come after the entry's own.
    let mut first = json_lines(&file)[0].clone();
    let fields = first.as_object_mut().unwrap();
    fields.remove("prev_hash");
    fields.remove("chain_genesis");
    assert_eq!(
        first,
        serde_json::json!({"hmac_accessor": false, "elide": true})
    );
}

#[tokio::test]
async fn invalid_configs_are_rejected_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let fp = dir.path().join("a.log").display().to_string();
    let b = broker();
    let cases: Vec<(leash_audit::DeviceConfig, &str)> = vec![
        (
            device("a", &[("file_path", &fp), ("colour", "red")]),
            "\"colour\"",
        ),
        (
            device("a", &[("file_path", &fp), ("format", "jsonx")]),
            "not supported",
        ),
        (
            device("a", &[("file_path", &fp), ("log_raw", "maybe")]),
            "\"log_raw\"",
        ),
        (
            device("a", &[("file_path", &fp), ("mode", "0999")]),
            "\"mode\"",
        ),
        (device("a", &[("log_raw", "true")]), "\"file_path\""),
        (
            leash_audit::DeviceConfig {
                kind: "syslog".into(),
                ..device("a", &[("file_path", &fp)])
            },
            "\"syslog\"",
        ),
        (device("..", &[("file_path", &fp)]), "\"..\""),
    ];
    for (cfg, needle) in cases {
        match b.enable(cfg, key(), None).await {
            Err(AuditError::InvalidConfig(m)) => assert!(m.contains(needle), "{m} lacks {needle}"),
            other => panic!("expected InvalidConfig containing {needle}, got {other:?}"),
        }
    }
    assert!(b.is_empty());
    assert!(
        !dir.path().join("a.log").exists(),
        "a rejected config created its file"
    );
}

#[tokio::test]
async fn disable_flushes_and_then_logging_needs_no_device() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("audit.log");
    let b = broker();
    b.enable(file_device("f", &file), key(), None)
        .await
        .unwrap();
    b.log(&entry("t")).await.unwrap();
    assert!(b.disable("f/").await);
    assert!(!b.disable("f/").await);
    assert!(b.is_empty());
    assert!(b.log(&entry("t")).await.is_ok());
    assert_eq!(json_lines(&file).len(), 1);
    // The path can be enabled again, with a new key.
    b.enable(file_device("f", &file), key(), None)
        .await
        .unwrap();
    b.log(&entry("t")).await.unwrap();
    assert_eq!(json_lines(&file).len(), 2);
}
