//! The hash chain of file devices: verification catches removed, reordered and edited
//! entries; the chain continues across restarts and rotations, and rotation under
//! concurrent writes loses no entry.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use leash_audit::chain::{self, Report};
use leash_audit::rotate::device_files;

use crate::{broker, device, entry, file_device, json_lines, key};

fn verify(path: &Path) -> Report {
    let files = chain::discover(&[path.to_path_buf()]).unwrap();
    chain::verify_files(&files).unwrap()
}

async fn write_lines(file: &Path, n: usize) {
    let b = broker();
    b.enable(file_device("a", file), key(), None).await.unwrap();
    for _ in 0..n {
        b.log(&entry("hvs.x")).await.unwrap();
    }
    assert!(b.disable("a/").await);
}

fn rewrite(file: &Path, f: impl FnOnce(&mut Vec<String>)) {
    let text = std::fs::read_to_string(file).unwrap();
    let mut lines: Vec<String> = text.lines().map(str::to_owned).collect();
    f(&mut lines);
    std::fs::write(file, lines.join("\n") + "\n").unwrap();
}

#[tokio::test]
async fn an_untouched_log_verifies_and_lines_stay_json() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("audit.log");
    write_lines(&file, 5).await;
    let lines = json_lines(&file);
    assert_eq!(lines.len(), 5);
    assert!(lines[0]["chain_genesis"]["nonce"].as_str().unwrap().len() == 64);
    assert_eq!(lines[0]["type"], "request");
    assert!(lines[1].get("chain_genesis").is_none());
    assert!(
        lines[4]["prev_hash"]
            .as_str()
            .unwrap()
            .starts_with("sha256:")
    );
    let r = verify(&file);
    assert_eq!(r.tamper, None);
    assert_eq!(r.lines, 5);
    assert_eq!(r.restarts.len(), 1);
}

#[tokio::test]
async fn a_removed_entry_is_found() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("audit.log");
    write_lines(&file, 5).await;
    rewrite(&file, |l| {
        l.remove(2);
    });
    let t = verify(&file).tamper.unwrap();
    assert_eq!((t.file, t.line), (file, 3));
    assert!(t.reason.contains("does not match"), "{}", t.reason);
}

#[tokio::test]
async fn reordered_entries_are_found() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("audit.log");
    write_lines(&file, 5).await;
    rewrite(&file, |l| l.swap(2, 3));
    let t = verify(&file).tamper.unwrap();
    assert_eq!(t.line, 3);
}

#[tokio::test]
async fn an_edited_entry_is_found() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("audit.log");
    write_lines(&file, 5).await;
    rewrite(&file, |l| {
        l[1] = l[1].replace("secret/data/x", "secret/data/y")
    });
    let t = verify(&file).tamper.unwrap();
    // The edited line 2 no longer hashes to what line 3 recorded.
    assert_eq!(t.line, 3);
    // A genesis line copied into the middle of a file is caught too.
    let file = dir.path().join("other.log");
    write_lines(&file, 5).await;
    rewrite(&file, |l| {
        let first = l[0].clone();
        l[3] = first;
    });
    let t = verify(&file).tamper.unwrap();
    assert_eq!(t.line, 4);
    assert!(t.reason.contains("middle of a file"), "{}", t.reason);
}

#[tokio::test]
async fn the_chain_continues_across_restarts_and_restarts_on_a_missing_file() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("audit.log");
    write_lines(&file, 3).await;
    write_lines(&file, 3).await;
    let r = verify(&file);
    assert_eq!((r.tamper, r.lines, r.restarts.len()), (None, 6, 1));
    // A log truncated to empty starts a new, recorded chain.
    std::fs::write(&file, b"").unwrap();
    write_lines(&file, 2).await;
    let lines = json_lines(&file);
    assert_eq!(
        lines[0]["chain_genesis"]["reason"],
        "the file was empty when the device opened it"
    );
    assert_eq!(verify(&file).tamper, None);
}

fn rotating(file: &Path, bytes: &str, compress: &str) -> leash_audit::DeviceConfig {
    device(
        "a",
        &[
            ("file_path", &file.display().to_string()),
            ("rotate_bytes", bytes),
            ("rotate_compress", compress),
        ],
    )
}

/// Waits until no rotated file is left uncompressed.
async fn compressed(file: &Path) {
    for _ in 0..500 {
        let files = device_files(file).unwrap();
        let pending = files[..files.len() - 1]
            .iter()
            .any(|p| p.extension().is_none_or(|e| e != "gz"));
        let tmp = std::fs::read_dir(file.parent().unwrap())
            .unwrap()
            .any(|e| e.unwrap().file_name().to_string_lossy().ends_with(".tmp"));
        if !pending && !tmp {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("rotated files were not compressed");
}

#[tokio::test]
async fn the_chain_crosses_rotations_and_a_missing_rotated_file_is_found() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("audit.log");
    let b = broker();
    b.enable(rotating(&file, "600", "false"), key(), None)
        .await
        .unwrap();
    for _ in 0..12 {
        b.log(&entry("hvs.x")).await.unwrap();
    }
    assert!(b.disable("a/").await);
    let files = device_files(&file).unwrap();
    assert!(files.len() >= 3, "{files:?}");
    // Rotated files alone, the base path, or the directory: all the same walk.
    let r = verify(dir.path());
    assert_eq!((r.tamper, r.lines, r.restarts.len()), (None, 12, 1));
    assert_eq!(r.files, files);
    assert_eq!(verify(&file).lines, 12);
    // Only the oldest file starts a chain: verifying from a later one is refused.
    assert!(verify(&files[1]).tamper.is_some());
    // A deleted middle file breaks the chain at the next file's first line.
    std::fs::remove_file(&files[1]).unwrap();
    let t = verify(&file).tamper.unwrap();
    assert_eq!((t.file, t.line), (files[2].clone(), 1));
}

#[tokio::test]
async fn rotation_under_concurrent_writes_loses_no_entry() {
    const TASKS: usize = 8;
    const PER_TASK: usize = 150;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("audit.log");
    let b = Arc::new(broker());
    b.enable(rotating(&file, "2000", "true"), key(), None)
        .await
        .unwrap();
    let mut tasks = Vec::new();
    for _ in 0..TASKS {
        let b = b.clone();
        tasks.push(tokio::spawn(async move {
            for _ in 0..PER_TASK {
                b.log(&entry("hvs.x")).await.unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    assert_eq!(b.stats()[0].entries, (TASKS * PER_TASK) as u64);
    assert!(b.disable("a/").await);
    // Readable while compression runs, and after.
    let during = verify(&file);
    assert_eq!(
        (during.tamper, during.lines),
        (None, (TASKS * PER_TASK) as u64)
    );
    compressed(&file).await;
    let r = verify(&file);
    assert_eq!(r.tamper, None);
    assert_eq!(r.lines, (TASKS * PER_TASK) as u64);
    assert_eq!(r.restarts.len(), 1);
    assert!(r.files.len() > 10, "{:?}", r.files);
    assert!(r.files[0].to_string_lossy().ends_with(".gz"));
}

#[tokio::test]
async fn retention_zero_keeps_and_bad_options_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("audit.log");
    let b = broker();
    let bad = device(
        "a",
        &[
            ("file_path", &file.display().to_string()),
            ("rotate_interval", "often"),
        ],
    );
    let err = b.enable(bad, key(), None).await.unwrap_err();
    assert!(err.to_string().contains("rotate_interval"), "{err}");
}
