//! The suite's agent figures: idle RSS with three templates renewing, of the small
//! `leash-agent` binary (when it is next to leash-bench) with the all-in-one
//! `leash agent` as the baseline; of `leash agent` alone otherwise.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::http::start_leash;
use super::startup::proc_status_kib;
use super::{Goal, Plan, SuiteArgs, SuiteRow, tempdir};
use crate::bench_leases::{self};

// ---------------------------------------------------------------------------------------
// leash agent idle memory
// ---------------------------------------------------------------------------------------

pub(super) async fn agent_part(
    args: &SuiteArgs,
    plan: &Plan,
    servers: &tokio::runtime::Handle,
) -> Vec<SuiteRow> {
    // The small `leash-agent` binary is the figure when it was built; the all-in-one
    // `leash agent` is measured too and shown as the baseline, so both are in the table.
    let mut measured: Vec<(&str, Option<AgentMemory>)> = Vec::new();
    for agent in agent_binaries() {
        let m = match agent_measure(args, plan, servers, &agent).await {
            Ok(m) => {
                eprintln!("agent ({}): {m}", agent.label);
                Some(m)
            }
            Err(e) => {
                eprintln!("agent ({}): not measured: {e}", agent.label);
                None
            }
        };
        measured.push((agent.label, m));
    }
    let small = measured.iter().find(|(l, _)| *l == SMALL).map(|(_, m)| *m);
    let big = measured
        .iter()
        .find(|(l, _)| *l == BIG)
        .and_then(|(_, m)| *m);
    // Without a small binary the figure is the big one's, with no baseline.
    let (value, baseline, which) = match small {
        Some(m) => (m, big, SMALL),
        None => (big, None, BIG),
    };
    vec![
        SuiteRow {
            figure: format!("{which} idle RSS, 3 templates renewing (MiB)"),
            value: value.map(|m| m.rss),
            baseline: baseline.map(|m| m.rss),
            goal: Goal::ValueAtMost(8.0, "MiB"),
            unit: "MiB",
        },
        SuiteRow {
            figure: format!("{which} own anonymous memory (RssAnon, MiB)"),
            value: value.map(|m| m.anon),
            baseline: baseline.map(|m| m.anon),
            goal: Goal::ValueAtMost(2.0, "MiB"),
            unit: "MiB",
        },
    ]
}

/// The small binary's label.
const SMALL: &str = "leash-agent";
/// The all-in-one binary's label.
const BIG: &str = "leash agent";

/// One agent binary to measure: how to start it.
struct AgentBinary {
    label: &'static str,
    path: PathBuf,
    /// Arguments before `-config FILE`.
    prefix: &'static [&'static str],
}

/// The agents to measure: `leash-agent` (when built) and `leash agent`.
fn agent_binaries() -> Vec<AgentBinary> {
    let mut out = Vec::new();
    if let Some(path) = sibling_binary("leash-agent") {
        out.push(AgentBinary {
            label: SMALL,
            path,
            prefix: &[],
        });
    } else {
        eprintln!(
            "agent: no `leash-agent` next to leash-bench (cargo build --release -p leash-agent); \
             measuring `leash agent` only"
        );
    }
    match leash_binary() {
        Ok(path) => out.push(AgentBinary {
            label: BIG,
            path,
            prefix: &["agent"],
        }),
        Err(e) => eprintln!("agent: {e}"),
    }
    out
}

/// What the suite reads of an idle agent's memory.
#[derive(Debug, Clone, Copy)]
struct AgentMemory {
    /// VmRSS, MiB.
    rss: f64,
    /// RssAnon (the process's own anonymous pages, copy-on-write ones included), MiB.
    anon: f64,
    /// RssFile, MiB: pages of the binary and the libraries.
    file: f64,
    /// `Private_Dirty` and `Anonymous` of /proc/PID/smaps_rollup, MiB.
    private_dirty: Option<f64>,
    anonymous: Option<f64>,
    threads: Option<u64>,
}

impl std::fmt::Display for AgentMemory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let opt = |v: Option<f64>| v.map_or_else(|| "-".to_owned(), |v| format!("{v:.2}"));
        write!(
            f,
            "VmRSS {:.2} MiB (RssAnon {:.2}, RssFile {:.2}); smaps_rollup Private_Dirty {} MiB, \
             Anonymous {} MiB; {} thread(s)",
            self.rss,
            self.anon,
            self.file,
            opt(self.private_dirty),
            opt(self.anonymous),
            self.threads
                .map_or_else(|| "?".to_owned(), |t| t.to_string()),
        )
    }
}

impl AgentMemory {
    fn of(pid: u32) -> Result<AgentMemory, String> {
        let mib = |field: &str| {
            proc_status_kib(Some(pid), field)
                .map(|k| k as f64 / 1024.0)
                .ok_or(format!("no {field} in /proc/{pid}/status"))
        };
        let rollup = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).ok();
        let rollup_mib = |field: &str| {
            rollup.as_deref().and_then(|t| {
                t.lines()
                    .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
                    .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
                    .map(|k| k as f64 / 1024.0)
            })
        };
        Ok(AgentMemory {
            rss: mib("VmRSS")?,
            anon: mib("RssAnon")?,
            file: mib("RssFile")?,
            private_dirty: rollup_mib("Private_Dirty"),
            anonymous: rollup_mib("Anonymous"),
            threads: proc_status_kib(Some(pid), "Threads"),
        })
    }
}

/// `name` next to this binary, if it is there.
fn sibling_binary(name: &str) -> Option<PathBuf> {
    let me = std::env::current_exe().ok()?;
    me.parent()
        .map(|d| d.join(format!("{name}{}", std::env::consts::EXE_SUFFIX)))
        .filter(|p| p.is_file())
}

/// The `leash` binary next to this one.
pub(super) fn leash_binary() -> Result<PathBuf, String> {
    sibling_binary("leash").ok_or_else(|| {
        "no `leash` binary next to leash-bench (cargo build --release -p leash)".to_owned()
    })
}

async fn agent_measure(
    args: &SuiteArgs,
    plan: &Plan,
    servers: &tokio::runtime::Handle,
    agent: &AgentBinary,
) -> Result<AgentMemory, String> {
    let bin = &agent.path;
    let dir = tempdir("agent")?;
    let (server, client, _root) = start_leash(servers, &dir.path().join("data")).await?;
    let db = bench_leases::ScratchDb::create(&args.postgres)
        .await
        .map_err(bench_leases::error_text)?;
    let outcome = async {
        let role = format!("ag{}", db.tag());
        let call = |method: &'static str, path: String, body: Value| {
            let client = client.clone();
            async move {
                let r = client
                    .request(method, &path, Some(&body))
                    .await
                    .map_err(|e| format!("{method} {path}: {e}"))?;
                if r.is_success() {
                    Ok(r.body)
                } else {
                    Err(format!("{method} {path}: HTTP {}: {}", r.status, r.errors().join("; ")))
                }
            }
        };
        call("POST", "sys/mounts/database".into(), json!({"type": "database"})).await?;
        call("POST", "database/config/pg".into(), db.leash_config()).await?;
        call(
            "POST",
            format!("database/roles/{role}"),
            json!({
                "db_name": "pg",
                "creation_statements": ["CREATE ROLE \"{{name}}\" WITH LOGIN PASSWORD '{{password}}' VALID UNTIL '{{expiration}}';"],
                "default_ttl": "15s",
                "max_ttl": "1h",
            }),
        )
        .await?;
        call(
            "POST",
            "secret/data/agents/config/app".into(),
            json!({"data": {"model": "small", "max_tokens": 512}}),
        )
        .await?;
        call(
            "PUT",
            "sys/policy/suite-agent".into(),
            json!({"policy": format!("path \"database/creds/{role}\" {{ capabilities = [\"read\"] }}\npath \"secret/data/agents/*\" {{ capabilities = [\"read\"] }}\npath \"sys/leases/revoke\" {{ capabilities = [\"update\"] }}\n")}),
        )
        .await?;
        let token = call(
            "POST",
            "auth/token/create".into(),
            json!({"policies": ["suite-agent"], "ttl": "1h"}),
        )
        .await?
        .and_then(|b| b.pointer("/auth/client_token").and_then(Value::as_str).map(str::to_owned))
        .ok_or("auth/token/create returned no token")?;
        let work = dir.path();
        let token_file = work.join("token");
        write_private(&token_file, token.as_bytes())?;
        let hcl = agent_config(server.addr, work, &token_file, &role);
        std::fs::write(work.join("agent.hcl"), hcl).map_err(|e| e.to_string())?;
        let mut child = tokio::process::Command::new(bin)
            .args(agent.prefix)
            .arg("-config")
            .arg(work.join("agent.hcl"))
            .env("LEASH_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| format!("starting {}: {e}", bin.display()))?;
        let pid = child.id().ok_or("the agent exited at once")?;
        let measured = async {
            let files = ["db.json", "db.env", "config.json"].map(|f| work.join(f));
            let deadline = Instant::now() + Duration::from_secs(30);
            while !files.iter().all(|f| f.metadata().is_ok_and(|m| m.len() > 0)) {
                if Instant::now() > deadline {
                    return Err("the agent did not render its three templates within 30 s".to_owned());
                }
                if let Ok(Some(status)) = child.try_wait() {
                    return Err(format!("the agent exited ({status})"));
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            eprintln!("agent: templates rendered; idling {}s", plan.agent_idle.as_secs());
            tokio::time::sleep(plan.agent_idle).await;
            AgentMemory::of(pid)
        }
        .await;
        // SIGTERM: the agent revokes its leases on the way out.
        let _ = tokio::process::Command::new("kill")
            .arg("-TERM")
            .arg(pid.to_string())
            .status()
            .await;
        if tokio::time::timeout(Duration::from_secs(10), child.wait()).await.is_err() {
            let _ = child.kill().await;
        }
        let _ = call(
            "PUT",
            "sys/leases/revoke-prefix/database/creds/".into(),
            json!({}),
        )
        .await;
        measured
    }
    .await;
    let storage = server.stop().await;
    drop(storage);
    db.drop_all().await;
    outcome
}

pub(super) fn write_private(path: &Path, bytes: &[u8]) -> Result<(), String> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let mut f = std::fs::OpenOptions::new()
        .create_new(true)
        .write(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| e.to_string())?;
    f.write_all(bytes).map_err(|e| e.to_string())
}

pub(super) fn agent_config(
    addr: std::net::SocketAddr,
    work: &Path,
    token_file: &Path,
    role: &str,
) -> String {
    let w = work.display();
    format!(
        r#"vault {{ address = "http://{addr}" }}
auto_auth {{
  method "token_file" {{ config = {{ token_file_path = "{token}" }} }}
}}
template {{
  destination = "{w}/db.json"
  contents = <<EOT
{{{{- with secret "database/creds/{role}" -}}}}
{{
  "username": "{{{{ .Data.username }}}}",
  "password": "{{{{ .Data.password }}}}",
  "ttl_seconds": {{{{ .Data.lease_duration }}}}
}}
{{{{- end -}}}}
EOT
}}
template {{
  destination = "{w}/db.env"
  contents = <<EOT
{{{{ with secret "database/creds/{role}" }}}}PGUSER={{{{ .Data.username }}}}
PGPASSWORD={{{{ .Data.password }}}}
{{{{ end }}}}
EOT
}}
template {{
  destination = "{w}/config.json"
  contents = "{{{{ with secret \"secret/data/agents/config/app\" }}}}{{{{ .Data.data | toJSONPretty }}}}{{{{ end }}}}"
}}
"#,
        token = token_file.display()
    )
}
