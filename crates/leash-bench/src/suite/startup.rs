//! The suite's start-up figures (time and RSS with many live leases, in a child
//! process) and that child, `suite-startup-probe`.

use std::path::PathBuf;
use std::process::{ExitCode, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use leash_client::SecretString;
use leash_types::{ExposeSecret, SecretBytes, SystemClock};
use serde_json::json;
use tokio::io::AsyncWriteExt as _;

use super::{Goal, Plan, SuiteRow, tempdir};
use crate::bench_leases::{self, Server};

// ---------------------------------------------------------------------------------------
// Start-up with many live leases
// ---------------------------------------------------------------------------------------

/// What the start-up probe (a child process) reports.
#[derive(Debug, serde::Deserialize)]
pub(super) struct ProbeReport {
    pub(super) startup_ms: f64,
    pub(super) rss_kib: u64,
}

pub(super) async fn startup_part(plan: &Plan) -> Vec<SuiteRow> {
    let n = plan.startup_leases;
    let mut found: Vec<Option<ProbeReport>> = Vec::new();
    for count in [0, n] {
        match startup_once(count).await {
            Ok(r) => {
                eprintln!(
                    "startup: {count} leases: {:.1} ms, RSS {:.1} MiB",
                    r.startup_ms,
                    r.rss_kib as f64 / 1024.0
                );
                found.push(Some(r));
            }
            Err(e) => {
                eprintln!("startup: {count} leases: not measured: {e}");
                found.push(None);
            }
        }
    }
    let (zero, many) = (&found[0], &found[1]);
    let secs = |r: &Option<ProbeReport>| r.as_ref().map(|r| r.startup_ms / 1e3);
    let mib = |r: &Option<ProbeReport>| r.as_ref().map(|r| r.rss_kib as f64 / 1024.0);
    vec![
        SuiteRow {
            figure: format!("start-up with {n} live leases vs none (s)"),
            value: secs(many),
            baseline: secs(zero),
            goal: Goal::ValueAtMost(2.0, "s"),
            unit: "s",
        },
        SuiteRow {
            figure: format!("start-up RSS growth with {n} live leases (MiB)"),
            value: match (mib(many), mib(zero)) {
                (Some(m), Some(z)) => Some(m - z),
                _ => None,
            },
            baseline: mib(zero),
            goal: Goal::ValueAtMost(64.0, "MiB"),
            unit: "MiB",
        },
    ]
}

/// Prepares a data directory with `n` live leases, then starts a server on it in a
/// child process (this binary's hidden `suite-startup-probe`) and returns its report.
pub(super) async fn startup_once(n: u32) -> Result<ProbeReport, String> {
    let dir = tempdir("startup")?;
    let key = leash_storage::Keyring::generate_master();
    let root = SecretString::from(format!("suite-root-{}", leash_types::random::base62(24)));
    bench_leases::prepare_data_dir(dir.path(), &key, &root, n)
        .await
        .map_err(bench_leases::error_text)?;
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let mut child = tokio::process::Command::new(exe)
        .arg("suite-startup-probe")
        .arg("--dir")
        .arg(dir.path())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| format!("starting the probe: {e}"))?;
    let mut input = hex(key.expose());
    input.push('\n');
    input.push_str(root.expose_secret());
    input.push('\n');
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(input.as_bytes())
            .await
            .map_err(|e| format!("talking to the probe: {e}"))?;
    }
    let out = tokio::time::timeout(Duration::from_secs(300), child.wait_with_output())
        .await
        .map_err(|_| "the probe did not finish within 300 s".to_owned())?
        .map_err(|e| e.to_string())?;
    if !out.status.success() {
        return Err(format!("the probe failed ({})", out.status));
    }
    serde_json::from_slice(&out.stdout).map_err(|e| format!("the probe's report: {e}"))
}

pub(super) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

pub(super) fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

/// Options of the hidden start-up probe.
#[derive(clap::Args, Debug)]
pub(crate) struct ProbeArgs {
    /// Data directory prepared by the suite; the key and root token come on stdin.
    #[arg(long)]
    pub(super) dir: PathBuf,
}

/// The child side of the start-up figure: reads the key and root token from stdin, starts
/// a server on `--dir`, waits for the first `sys/health` 200, prints the time and its
/// own RSS as JSON.
pub(crate) fn probe(args: ProbeArgs) -> ExitCode {
    let mut key = String::new();
    let mut root = String::new();
    let stdin = std::io::stdin();
    if stdin.read_line(&mut key).is_err() || stdin.read_line(&mut root).is_err() {
        eprintln!("Error: the probe reads the key and the root token on stdin");
        return ExitCode::from(1);
    }
    let Some(key) = unhex(key.trim()).map(SecretBytes::new) else {
        eprintln!("Error: the key is not hex");
        return ExitCode::from(1);
    };
    let root = SecretString::from(root.trim().to_owned());
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("Error: starting the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    let outcome = runtime.block_on(async {
        let start = Instant::now();
        let server = Server::launch(&args.dir, &key, Arc::new(SystemClock), &root).await?;
        bench_leases::first_health(server.addr).await?;
        let elapsed = start.elapsed();
        let rss = proc_status_kib(None, "VmRSS").unwrap_or(0);
        let storage = server.stop().await;
        drop(storage);
        Ok::<_, bench_leases::Error>((elapsed, rss))
    });
    match outcome {
        Ok((elapsed, rss)) => {
            println!(
                "{}",
                json!({"startup_ms": elapsed.as_secs_f64() * 1e3, "rss_kib": rss})
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("Error: {}", bench_leases::error_text(e));
            ExitCode::from(1)
        }
    }
}

/// A `kB` field of `/proc/<pid>/status` (`None`: this process).
pub(super) fn proc_status_kib(pid: Option<u32>, field: &str) -> Option<u64> {
    let path = match pid {
        Some(p) => format!("/proc/{p}/status"),
        None => "/proc/self/status".into(),
    };
    let text = std::fs::read_to_string(path).ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_round_trips() {
        assert_eq!(unhex(&hex(&[0, 1, 254, 255])), Some(vec![0, 1, 254, 255]));
        assert_eq!(unhex("abc"), None);
        assert_eq!(unhex("zz"), None);
    }
}
