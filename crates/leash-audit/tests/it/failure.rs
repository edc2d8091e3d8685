//! Fail closed: devices that cannot write (ENOSPC, a full filesystem) or hang (a FIFO
//! nobody reads) make `log` fail, never hang; one healthy device is enough.

use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use leash_audit::{AuditError, Broker};

use crate::{broker, device, entry, file_device, json_lines, key};

/// Linux's O_NONBLOCK (0o4000 on x86_64 and aarch64): opening a FIFO's read end with it
/// does not wait for a writer.
const O_NONBLOCK: i32 = 0o4000;

#[tokio::test]
async fn dev_full_fails_closed() {
    let b = broker();
    b.enable(device("full", &[("file_path", "/dev/full")]), key(), None)
        .await
        .unwrap();
    for _ in 0..2 {
        match b.log(&entry("hvs.secret")).await {
            Err(e @ AuditError::AllDevicesFailed { attempted: 1 }) => {
                assert!(!e.to_string().contains("hvs.secret"));
            }
            other => panic!("expected AllDevicesFailed, got {other:?}"),
        }
    }
    let s = &b.stats()[0];
    assert_eq!((s.entries, s.failures), (0, 2));
}

#[tokio::test]
async fn one_healthy_device_is_enough() {
    let dir = tempfile::tempdir().unwrap();
    let healthy = dir.path().join("audit.log");
    let b = broker();
    b.enable(device("full", &[("file_path", "/dev/full")]), key(), None)
        .await
        .unwrap();
    b.enable(file_device("healthy", &healthy), key(), None)
        .await
        .unwrap();
    b.log(&entry("hvs.secret")).await.unwrap();
    let lines = json_lines(&healthy);
    assert_eq!(lines.len(), 1);
    assert_eq!(
        lines[0]["auth"]["client_token"],
        b.hash("healthy/", "hvs.secret").unwrap()
    );
    let stats = b.stats();
    assert_eq!((stats[0].path.as_str(), stats[0].failures), ("full/", 1));
    assert_eq!((stats[1].path.as_str(), stats[1].entries), ("healthy/", 1));

    // And when the healthy one goes away, the broken one alone fails closed again.
    assert!(b.disable("healthy").await);
    assert!(matches!(
        b.log(&entry("hvs.secret")).await,
        Err(AuditError::AllDevicesFailed { attempted: 1 })
    ));
}

/// A 64 KiB tmpfs mounted on a temp dir; unmounted on drop.
struct SmallTmpfs {
    dir: tempfile::TempDir,
}

impl SmallTmpfs {
    /// `None` (with a note) when not root or when mounting is not allowed here.
    fn mount() -> Option<SmallTmpfs> {
        let uid = Command::new("id").arg("-u").output().ok()?;
        if String::from_utf8_lossy(&uid.stdout).trim() != "0" {
            eprintln!("note: not root; skipping the full-tmpfs test");
            return None;
        }
        let dir = tempfile::tempdir().ok()?;
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", "size=64k", "tmpfs"])
            .arg(dir.path())
            .output()
            .ok()?;
        if !out.status.success() {
            eprintln!(
                "note: mount -t tmpfs failed ({}); skipping the full-tmpfs test",
                String::from_utf8_lossy(&out.stderr).trim()
            );
            return None;
        }
        Some(SmallTmpfs { dir })
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for SmallTmpfs {
    fn drop(&mut self) {
        let ok = Command::new("umount")
            .arg(self.dir.path())
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            let _ = Command::new("umount")
                .arg("-l")
                .arg(self.dir.path())
                .status();
        }
    }
}

#[tokio::test]
async fn full_filesystem_fails_closed() {
    let Some(fs) = SmallTmpfs::mount() else {
        return;
    };
    let log = fs.path().join("audit.log");
    let b = broker();
    b.enable(file_device("tmpfs", &log), key(), None)
        .await
        .unwrap();
    // Fill the filesystem.
    let filler = fs.path().join("filler");
    let mut f = std::fs::File::create(&filler).unwrap();
    let chunk = vec![0u8; 4096];
    loop {
        use std::io::Write;
        if let Err(e) = f.write_all(&chunk) {
            assert_eq!(e.raw_os_error(), Some(28), "expected ENOSPC, got {e}");
            break;
        }
    }
    drop(f);
    let big = "y".repeat(8192);
    let build = move |_: &leash_audit::Hasher, _: bool| serde_json::json!({ "pad": big });
    assert!(matches!(
        b.log(&build).await,
        Err(AuditError::AllDevicesFailed { attempted: 1 })
    ));
    assert_eq!(b.stats()[0].failures, 1);

    // Space comes back: the device recovers, and a torn line does not swallow the entry.
    std::fs::remove_file(&filler).unwrap();
    b.log(&entry("t")).await.unwrap();
    let text = std::fs::read_to_string(&log).unwrap();
    let last = text.lines().last().unwrap();
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(last).unwrap()["type"],
        "request"
    );
    // The hash chain goes on from the bytes that really reached the file: the torn line
    // if the failed write left one, else the genesis was not spent and starts here.
    let lines: Vec<&str> = text.lines().collect();
    if lines.len() == 1 {
        assert!(last.contains("\"chain_genesis\":{"), "{last}");
    } else {
        let before_last = lines[lines.len() - 2];
        let expected = format!(
            "\"prev_hash\":\"sha256:{}\"}}",
            hex::encode(<sha2::Sha256 as sha2::Digest>::digest(before_last))
        );
        assert!(last.ends_with(&expected), "{last}");
    }
    assert!(b.disable("tmpfs/").await);
    drop(b);
}

fn mkfifo(dir: &Path) -> PathBuf {
    let fifo = dir.join("audit.fifo");
    let status = Command::new("mkfifo").arg(&fifo).status().unwrap();
    assert!(status.success(), "mkfifo failed");
    fifo
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hung_device_never_hangs_callers() {
    let dir = tempfile::tempdir().unwrap();
    let fifo = mkfifo(dir.path());
    // The read end stays open and is never read: writes block once the pipe (64 KiB) fills.
    let reader = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(O_NONBLOCK)
        .open(&fifo)
        .unwrap();
    let deadline = Duration::from_millis(200);
    let b = Broker::new(deadline);
    b.enable(file_device("fifo", &fifo), key(), None)
        .await
        .unwrap();
    let big = "z".repeat(8 * 1024);
    let build = move |_: &leash_audit::Hasher, _: bool| serde_json::json!({ "pad": big });

    let mut failures = 0;
    let mut calls = 0;
    while failures < 5 {
        calls += 1;
        assert!(calls < 100, "the pipe never filled");
        let t = Instant::now();
        let r = b.log(&build).await;
        let took = t.elapsed();
        assert!(took < Duration::from_secs(2), "log took {took:?}");
        match r {
            Ok(()) => assert_eq!(failures, 0, "a stuck device recovered by itself"),
            Err(AuditError::AllDevicesFailed { attempted: 1 }) => {
                failures += 1;
                assert!(took >= deadline, "failed before the deadline: {took:?}");
            }
            Err(e) => panic!("unexpected error {e}"),
        }
    }
    assert!(b.stats()[0].failures >= 5);

    // A healthy device next to the hung one keeps requests succeeding, within ~deadline.
    let healthy = dir.path().join("healthy.log");
    b.enable(file_device("healthy", &healthy), key(), None)
        .await
        .unwrap();
    let t = Instant::now();
    b.log(&build).await.unwrap();
    assert!(t.elapsed() < Duration::from_secs(2));
    assert_eq!(json_lines(&healthy).len(), 1);

    // Closing the reader unsticks the writer (EPIPE), so disabling finishes promptly.
    drop(reader);
    let t = Instant::now();
    assert!(b.disable("fifo/").await);
    assert!(t.elapsed() < Duration::from_secs(2));
}
