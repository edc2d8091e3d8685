//! The file device: file modes, append, prefix, special paths, group commit.

use std::os::unix::fs::PermissionsExt;
use std::sync::Arc;

use leash_audit::AuditError;

use crate::{broker, device, entry, file_device, json_lines, key};

#[tokio::test]
async fn prefix_goes_before_the_json() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("audit.log");
    let b = broker();
    let cfg = device(
        "p",
        &[
            ("file_path", &file.display().to_string()),
            ("prefix", "@cee: "),
        ],
    );
    b.enable(cfg, key(), None).await.unwrap();
    b.log(&entry("hvs.t")).await.unwrap();
    b.log(&entry("hvs.t")).await.unwrap();
    let text = std::fs::read_to_string(&file).unwrap();
    let lines: Vec<_> = text.lines().collect();
    assert_eq!(lines.len(), 2);
    for line in lines {
        let json = line.strip_prefix("@cee: ").expect("prefix");
        let v: serde_json::Value = serde_json::from_str(json).unwrap();
        assert_eq!(v["type"], "request");
    }
}

#[tokio::test]
async fn missing_parent_directory_is_a_clear_open_error() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("missing").join("audit.log");
    let b = broker();
    match b.enable(file_device("a", &file), key(), None).await {
        Err(AuditError::Open { path, reason }) => {
            assert_eq!(path, file.display().to_string());
            assert!(
                reason.contains("parent directory") && reason.contains("missing"),
                "{reason}"
            );
        }
        other => panic!("expected Open error, got {other:?}"),
    }
    assert!(b.is_empty());
}

#[tokio::test]
async fn file_mode_is_applied() {
    let dir = tempfile::tempdir().unwrap();
    let default = dir.path().join("default.log");
    let custom = dir.path().join("custom.log");
    let existing = dir.path().join("existing.log");
    std::fs::write(&existing, b"").unwrap();
    std::fs::set_permissions(&existing, std::fs::Permissions::from_mode(0o644)).unwrap();
    let b = broker();
    b.enable(file_device("d", &default), key(), None)
        .await
        .unwrap();
    let cfg = device(
        "c",
        &[
            ("file_path", &custom.display().to_string()),
            ("mode", "0640"),
        ],
    );
    b.enable(cfg, key(), None).await.unwrap();
    b.enable(file_device("e", &existing), key(), None)
        .await
        .unwrap();
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o7777;
    assert_eq!(mode(&default), 0o600);
    assert_eq!(mode(&custom), 0o640);
    assert_eq!(
        mode(&existing),
        0o600,
        "an existing audit log is narrowed to the mode"
    );
}

#[tokio::test]
async fn appends_to_an_existing_file() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("audit.log");
    std::fs::write(&file, "{\"old\":true}\n").unwrap();
    let b = broker();
    b.enable(file_device("f", &file), key(), None)
        .await
        .unwrap();
    b.log(&entry("t")).await.unwrap();
    let lines = json_lines(&file);
    assert_eq!(lines.len(), 2);
    assert_eq!(lines[0]["old"], true);
}

#[tokio::test]
async fn discard_always_succeeds() {
    let b = broker();
    b.enable(device("d", &[("file_path", "discard")]), key(), None)
        .await
        .unwrap();
    for _ in 0..3 {
        b.log(&entry("t")).await.unwrap();
    }
    assert_eq!(b.stats()[0].entries, 3);
    assert_eq!(b.stats()[0].syncs, 0);
}

#[tokio::test]
async fn stdout_device_writes_without_fsync() {
    let b = broker();
    b.enable(device("out", &[("file_path", "stdout")]), key(), None)
        .await
        .unwrap();
    b.log(&entry("t")).await.unwrap();
    let s = &b.stats()[0];
    assert_eq!((s.entries, s.syncs, s.failures), (1, 0, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn group_commit_shares_fsyncs_between_concurrent_requests() {
    const N: usize = 200;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("audit.log");
    let b = Arc::new(broker());
    b.enable(file_device("file", &file), key(), None)
        .await
        .unwrap();
    let barrier = Arc::new(tokio::sync::Barrier::new(N));
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..N {
        let (b, barrier) = (b.clone(), barrier.clone());
        tasks.spawn(async move {
            barrier.wait().await;
            let build = move |h: &leash_audit::Hasher, _: bool| {
                serde_json::json!({ "i": i, "token": h.hmac("hvs.secret") })
            };
            b.log(&build).await
        });
    }
    while let Some(r) = tasks.join_next().await {
        r.unwrap().unwrap();
    }
    let lines = json_lines(&file);
    assert_eq!(lines.len(), N);
    let mut seen: Vec<u64> = lines.iter().map(|l| l["i"].as_u64().unwrap()).collect();
    seen.sort_unstable();
    assert_eq!(seen, (0..N as u64).collect::<Vec<_>>());
    let s = &b.stats()[0];
    assert_eq!(s.entries, N as u64);
    assert_eq!(s.failures, 0);
    assert!(s.syncs >= 1 && s.syncs < N as u64, "syncs = {}", s.syncs);
    eprintln!("group commit: {N} entries, {} fsyncs", s.syncs);
}

/// A written-only entry (a read's request entry) costs no sync of its own; the synced
/// entry after it makes both durable, and the file keeps their order.
#[tokio::test]
async fn written_only_entries_ride_on_the_next_sync() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("audit.log");
    let b = broker();
    b.enable(file_device("w", &file), key(), None)
        .await
        .unwrap();
    b.log_written(&entry("first")).await.unwrap();
    let after_written = b.stats()[0].syncs;
    assert_eq!(
        after_written, 0,
        "a written-only entry does not sync by itself"
    );
    b.log(&entry("second")).await.unwrap();
    assert_eq!(b.stats()[0].syncs, 1);
    let lines = json_lines(&file);
    assert_eq!(lines.len(), 2);
}

/// A written-only entry still fails closed when the device cannot write.
#[tokio::test]
async fn written_only_entries_fail_closed_too() {
    let b = broker();
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("a.fifo");
    assert!(
        std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap()
            .success()
    );
    use std::os::unix::fs::OpenOptionsExt;
    // O_NONBLOCK (0o4000 on Linux) so opening the read end does not wait for a writer.
    let reader = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(0o4000)
        .open(&fifo)
        .unwrap();
    b.enable(file_device("f", &fifo), key(), None)
        .await
        .unwrap();
    drop(reader); // every later write fails with EPIPE
    assert!(matches!(
        b.log_written(&entry("x")).await,
        Err(AuditError::AllDevicesFailed { .. })
    ));
}
