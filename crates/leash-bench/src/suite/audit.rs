//! The suite's audit figure: the audit device alone against raw durable append.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use super::{Goal, Plan, SuiteArgs, SuiteRow, median, tempdir};
use leash_types::SecretBytes;
use serde_json::{Value, json};

// ---------------------------------------------------------------------------------------
// The audit device alone against raw durable append
// ---------------------------------------------------------------------------------------

/// An entry shaped like a KV read's response entry (Vault's layout, ~1.5 KB).
pub(super) fn sample_entry(h: &leash_audit::hash::Hasher, _raw: bool) -> Value {
    json!({
        "time": "2026-12-06T12:00:00.000000000Z",
        "type": "response",
        "auth": {
            "client_token": h.hmac("lsh.bench-client-token"),
            "accessor": h.hmac("bench-accessor"),
            "display_name": "token-leash-bench",
            "policies": ["bench", "default"],
            "token_policies": ["bench", "default"],
            "metadata": null,
            "entity_id": "",
            "token_type": "service",
            "token_ttl": 3600,
            "token_issue_time": "2026-12-06T11:00:00Z",
        },
        "request": {
            "id": "4b1c6a9e-7f1e-4b9a-9f7e-0a1b2c3d4e5f",
            "operation": "read",
            "mount_point": "secret/",
            "mount_type": "kv",
            "mount_accessor": "kv_0a1b2c3d",
            "client_token": h.hmac("lsh.bench-client-token"),
            "client_token_accessor": h.hmac("bench-accessor"),
            "namespace": {"id": "root"},
            "path": "secret/data/bench/item",
            "remote_address": "127.0.0.1",
            "remote_port": 40000,
            "headers": {"x-vault-request": [h.hmac("true")]},
        },
        "response": {
            "mount_point": "secret/",
            "mount_type": "kv",
            "mount_accessor": "kv_0a1b2c3d",
            "data": {
                "data": {"owner": h.hmac("bench"), "value": h.hmac("leash-bench")},
                "metadata": {
                    "created_time": h.hmac("2026-12-06T10:00:00Z"),
                    "custom_metadata": null,
                    "deletion_time": h.hmac(""),
                    "destroyed": false,
                    "version": 1,
                },
            },
        },
    })
}

pub(super) async fn audit_part(args: &SuiteArgs, plan: &Plan) -> Vec<SuiteRow> {
    let (value, baseline) = match audit_measure(args, plan).await {
        Ok(v) => v,
        Err(e) => {
            eprintln!("audit: not measured: {e}");
            (None, None)
        }
    };
    vec![SuiteRow {
        figure: "audit device alone vs raw durable append (entries/s)".into(),
        value,
        baseline,
        goal: Goal::RatioAtLeast(0.5),
        unit: "",
    }]
}

pub(super) async fn audit_measure(
    args: &SuiteArgs,
    plan: &Plan,
) -> Result<(Option<f64>, Option<f64>), String> {
    let dir = tempdir("audit")?;
    let writers = args.concurrency as usize;
    let mut device = Vec::new();
    let mut raw = Vec::new();
    for round in 1..=plan.rounds {
        let path = dir.path().join(format!("device-{round}.log"));
        eprintln!(
            "audit: round {round}/{}: the file device, {writers} writers",
            plan.rounds
        );
        let (rate, line_len) = device_rate(&path, writers, plan.audit_duration).await?;
        eprintln!("  {rate:.0} entries/s ({line_len} bytes a line)");
        device.push(rate);
        let raw_path = dir.path().join(format!("raw-{round}.log"));
        eprintln!(
            "audit: round {round}/{}: raw append, batches of {writers}",
            plan.rounds
        );
        let d = plan.audit_duration;
        let rate = tokio::task::spawn_blocking(move || raw_append(&raw_path, line_len, writers, d))
            .await
            .map_err(|e| e.to_string())??;
        eprintln!("  {rate:.0} entries/s");
        raw.push(rate);
        let _ = std::fs::remove_file(&path);
    }
    Ok((median(device), median(raw)))
}

/// Entries per second through a broker with one file device (default options), from
/// `writers` concurrent tasks; and the length of the line it wrote.
pub(super) async fn device_rate(
    path: &Path,
    writers: usize,
    duration: Duration,
) -> Result<(f64, usize), String> {
    let broker = Arc::new(leash_audit::broker::Broker::new(
        leash_audit::broker::DEFAULT_DEADLINE,
    ));
    let cfg = leash_audit::config::DeviceConfig {
        path: "file/".into(),
        kind: "file".into(),
        description: String::new(),
        options: [("file_path".to_owned(), path.display().to_string())]
            .into_iter()
            .collect(),
        local: false,
    };
    broker
        .enable(cfg, SecretBytes::random(32), None)
        .await
        .map_err(|e| format!("enabling the device: {e}"))?;
    let stop = Arc::new(AtomicBool::new(false));
    let count = Arc::new(AtomicU64::new(0));
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..writers {
        let (b, stop, count) = (Arc::clone(&broker), Arc::clone(&stop), Arc::clone(&count));
        tasks.spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                if b.log(&sample_entry).await.is_err() {
                    return Err("an entry failed");
                }
                count.fetch_add(1, Ordering::Relaxed);
            }
            Ok(())
        });
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = count.load(Ordering::Relaxed);
    let start = Instant::now();
    tokio::time::sleep(duration).await;
    let n = count.load(Ordering::Relaxed) - before;
    let secs = start.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    while let Some(r) = tasks.join_next().await {
        r.map_err(|e| e.to_string())??;
    }
    broker.disable("file/").await;
    // The line as the device wrote it (with the chain's field): the last one.
    let text = std::fs::read(path).map_err(|e| e.to_string())?;
    let line_len = text
        .split(|b| *b == b'\n')
        .rev()
        .find(|l| !l.is_empty())
        .map_or(1500, |l| l.len() + 1);
    Ok((n as f64 / secs, line_len))
}

/// Raw durable append: lines of `line_len` bytes in batches of `batch`, one `write` and
/// one `fdatasync` per batch, for `duration`. Entries per second.
pub(super) fn raw_append(
    path: &Path,
    line_len: usize,
    batch: usize,
    duration: Duration,
) -> Result<f64, String> {
    use std::io::Write as _;
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(|e| e.to_string())?;
    let mut line = vec![b'x'; line_len.max(2) - 1];
    line.push(b'\n');
    let buf: Vec<u8> = line.repeat(batch);
    let start = Instant::now();
    let mut n = 0u64;
    while start.elapsed() < duration {
        file.write_all(&buf).map_err(|e| e.to_string())?;
        file.sync_data().map_err(|e| e.to_string())?;
        n += batch as u64;
    }
    let secs = start.elapsed().as_secs_f64();
    drop(file);
    let _ = std::fs::remove_file(path);
    Ok(n as f64 / secs)
}
